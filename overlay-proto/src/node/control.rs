//! The control plane of a node: handshake initiation, response and cookie
//! messages, and starting handshakes.

#![deny(clippy::indexing_slicing)]

use std::net::SocketAddr;

use super::{
    allocate_spi, drop_reason_for_handshake, peer_endpoint, retry_delay, Event, Node, Transmit,
    HANDSHAKE_BUF,
};
use crate::cookie::MAC_LEN;
use crate::counters::DropReason;
use crate::handshake::{
    HandshakePayload, InitiatorHandshake, PublicKey, ResponderHandshake, SaKeys,
};
use crate::lease::SignedLease;
use crate::session::{PeerConfig, PeerId, PendingHandshake, SaKeyLog, SecurityAssociation};
use crate::time::{Now, Tai64N, UnixTime};
use crate::wire::{ControlPacket, CookieReplyRepr, InitiationRepr, MessageType, ResponseRepr};

impl Node {
    pub(super) fn handle_control(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let packet =
            ControlPacket::new_checked(datagram).map_err(|_| DropReason::MalformedControl)?;
        match packet.message_type() {
            MessageType::HandshakeInitiation => self.handle_initiation(now, src, &packet),
            MessageType::HandshakeResponse => self.handle_response(now, src, &packet),
            MessageType::CookieReply => self.handle_cookie_reply(now, datagram),
            // The driver routes these to its authority client or server.
            MessageType::AuthorityInitiation
            | MessageType::AuthorityResponse
            | MessageType::AuthorityCookieReply
            | MessageType::AuthorityData => Err(DropReason::AuthorityMessage),
        }
    }

    fn handle_initiation(
        &mut self,
        now: Now,
        src: SocketAddr,
        packet: &ControlPacket<&[u8]>,
    ) -> Result<(), DropReason> {
        let repr =
            InitiationRepr::parse(packet.as_bytes()).map_err(|_| DropReason::MalformedControl)?;
        self.check_mac1(packet, &repr.mac1)?;
        let before_mac2 = packet
            .bytes_before_mac2()
            .ok_or(DropReason::MalformedControl)?;
        // Everything below costs Diffie-Hellman work: under load only
        // sources that proved their address (a valid cookie) get it, and
        // every source is held to its rate.
        self.load.record(now.instant);
        if self.load.under_load(now.instant)
            && !self
                .cookies
                .verify_mac2(now.instant, src, before_mac2, &repr.mac2)
        {
            self.send_cookie_reply(now, src, repr.sender_spi, &repr.mac1);
            return Err(DropReason::CookieRequired);
        }
        let allowed = self.rate.allow(src.ip(), now.instant);
        self.schedule_sweep(now.instant);
        if !allowed {
            return Err(DropReason::HandshakeRateLimited);
        }
        let (responder, initiator_key, payload) =
            ResponderHandshake::read_initiation(&self.config.keypair, repr.noise, &mut self.rng)
                .map_err(|e| drop_reason_for_handshake(&e))?;
        self.ratchet_rng();
        if payload.spi != repr.sender_spi {
            return Err(DropReason::HandshakePayload);
        }
        let timers = self.config.timers;
        // A key we do not know yet must bring a recent initiation before we
        // learn (or replace) anything on its behalf.
        if !self.by_key.contains_key(&initiator_key)
            && !is_fresh(payload.timestamp, now.unix, timers.reject_after)
        {
            return Err(DropReason::StaleInitiation);
        }
        let id = self.peer_for_initiation(now, &initiator_key, &payload.lease)?;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
        match peer.last_initiation_timestamp {
            Some(last) if payload.timestamp <= last => return Err(DropReason::ReplayedInitiation),
            // First contact (or after a restart): the initiation must be
            // recent, so an old capture cannot be replayed into a fresh node.
            None if !is_fresh(payload.timestamp, now.unix, timers.reject_after) => {
                return Err(DropReason::StaleInitiation)
            }
            _ => {}
        }
        if peer.last_initiation_at.is_some_and(|at| {
            now.instant.saturating_duration_since(at) < timers.initiation_min_interval
        }) {
            return Err(DropReason::HandshakeFlood);
        }
        peer.last_initiation_timestamp = Some(payload.timestamp);
        peer.last_initiation_at = Some(now.instant);

        let local_spi = allocate_spi(&mut self.rng, &self.spis);
        let ours = HandshakePayload {
            spi: local_spi,
            timestamp: now.unix.tai64n(),
            lease: self.config.lease.as_bytes(),
        };
        let mut noise = [0u8; HANDSHAKE_BUF];
        let (noise_len, keys) = responder
            .write_response(peer.config.psk.as_ref(), &ours, &mut noise)
            .map_err(|e| drop_reason_for_handshake(&e))?;
        let response = ResponseRepr {
            sender_spi: local_spi,
            receiver_spi: payload.spi,
            noise: noise.get(..noise_len).ok_or(DropReason::BufferTooSmall)?,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let mut message = vec![0u8; response.buffer_len()];
        response
            .emit(&mut message)
            .map_err(|_| DropReason::BufferTooSmall)?;
        seal_control(&mut message, &mut peer.cookie_jar, now)?;
        let sa = SecurityAssociation::new(
            &keys,
            local_spi,
            payload.spi,
            self.config.aead,
            now.instant,
            false,
        );
        let freed = peer.install_responded(sa);
        // The endpoint only moves once the peer proves it holds the new keys
        // (its first ESP packet); a brand-new peer needs one to answer.
        let first_endpoint = peer.endpoint.is_none().then(|| {
            peer.endpoint = Some(src);
            src
        });
        for spi in freed {
            self.spis.remove(&spi);
        }
        self.spis.insert(local_spi, id);
        if let Some(to) = first_endpoint {
            self.endpoint_changed(id, None, to);
        }
        self.transmits.push_back(Transmit {
            destination: src,
            contents: message,
        });
        self.record_handshake(now, id, false, &keys, (local_spi, payload.spi));
        Ok(())
    }

    /// mac1 proves the sender knows our static public key; it is checked
    /// before anything costs more than a hash.
    fn check_mac1(
        &self,
        packet: &ControlPacket<&[u8]>,
        mac1: &[u8; MAC_LEN],
    ) -> Result<(), DropReason> {
        let covered = packet
            .bytes_before_mac1()
            .ok_or(DropReason::MalformedControl)?;
        if self.cookies.verify_mac1(covered, mac1) {
            Ok(())
        } else {
            Err(DropReason::BadMac1)
        }
    }

    /// Find the peer an initiation comes from, or learn it from its lease.
    fn peer_for_initiation(
        &mut self,
        now: Now,
        key: &PublicKey,
        lease_bytes: &[u8],
    ) -> Result<PeerId, DropReason> {
        if let Some(&id) = self.by_key.get(key) {
            let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
            if peer.lease.as_bytes() == lease_bytes {
                // The lease we hold: its signature is checked, its time is not.
                peer.lease
                    .lease()
                    .check_validity(now.unix)
                    .map_err(|_| DropReason::LeaseExpired)?;
                return Ok(id);
            }
            let lease = self.verify_peer_lease(now, key, lease_bytes)?;
            let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
            if lease.lease().prefix != peer.lease.lease().prefix
                || lease.lease().serial < peer.lease.lease().serial
            {
                return Err(DropReason::BadLease);
            }
            peer.lease = lease;
            return Ok(id);
        }
        if !self.config.accept_unknown_peers {
            return Err(DropReason::UnknownPeer);
        }
        let lease = self.verify_peer_lease(now, key, lease_bytes)?;
        let prefix = lease.lease().prefix;
        let replaced = match self.by_prefix.get(&prefix) {
            Some(&old) => {
                let old_serial = self.peers.get(&old).map_or(0, |p| p.lease.lease().serial);
                if lease.lease().serial <= old_serial {
                    return Err(DropReason::BadLease);
                }
                Some(old)
            }
            None => None,
        };
        if replaced.is_none() && self.peers.len() >= self.config.max_peers {
            return Err(DropReason::TooManyPeers);
        }
        if let Some(old) = replaced {
            self.remove_peer(old);
        }
        let config = PeerConfig {
            psk: self.config.psk.clone(),
            ..PeerConfig::default()
        };
        let id = self.insert_peer(*key, lease, config, now.instant);
        self.events.push_back(Event::PeerLearned { peer: id });
        if let Some(old) = replaced {
            self.events.push_back(Event::PeerReplaced { old, new: id });
        }
        Ok(id)
    }

    fn verify_peer_lease(
        &self,
        now: Now,
        key: &PublicKey,
        lease_bytes: &[u8],
    ) -> Result<SignedLease, DropReason> {
        let lease = SignedLease::verify(lease_bytes, &self.config.authority, now.unix)
            .map_err(|_| DropReason::BadLease)?;
        if lease.lease().public_key != key.0 {
            return Err(DropReason::LeaseKeyMismatch);
        }
        Ok(lease)
    }

    fn handle_response(
        &mut self,
        now: Now,
        src: SocketAddr,
        packet: &ControlPacket<&[u8]>,
    ) -> Result<(), DropReason> {
        let repr =
            ResponseRepr::parse(packet.as_bytes()).map_err(|_| DropReason::MalformedControl)?;
        self.check_mac1(packet, &repr.mac1)?;
        let id = *self
            .spis
            .get(&repr.receiver_spi)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        let peer = self
            .peers
            .get_mut(&id)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        let pending = peer
            .handshake
            .as_mut()
            .filter(|h| h.local_spi == repr.receiver_spi)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        // A forged or corrupted response leaves the handshake state intact,
        // so the genuine response can still complete it.
        let local_spi = pending.local_spi;
        let (payload, keys) = pending
            .state
            .finish(repr.noise)
            .map_err(|e| drop_reason_for_handshake(&e))?;
        if payload.spi != repr.sender_spi {
            return Err(DropReason::HandshakePayload);
        }
        let key = peer.public_key;
        if payload.lease != peer.lease.as_bytes() {
            let lease = self.verify_peer_lease(now, &key, &payload.lease)?;
            let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
            if lease.lease().prefix == peer.lease.lease().prefix
                && lease.lease().serial >= peer.lease.lease().serial
            {
                peer.lease = lease;
            }
        }
        let timers = self.config.timers;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
        peer.lease
            .lease()
            .check_validity(now.unix)
            .map_err(|_| DropReason::LeaseExpired)?;
        let sa = SecurityAssociation::new(
            &keys,
            local_spi,
            payload.spi,
            self.config.aead,
            now.instant,
            true,
        );
        peer.handshake = None;
        let freed = peer.install_initiated(sa);
        peer.on_received(now.instant, false, &timers);
        // The response is authenticated: it proves where the peer is.
        let from = peer.endpoint.replace(src);
        for spi in freed {
            self.spis.remove(&spi);
        }
        if from != Some(src) {
            self.endpoint_changed(id, from, src);
        }
        self.record_handshake(now, id, true, &keys, (local_spi, payload.spi));
        // Send what waited; if nothing did, a keepalive gives the responder
        // its key confirmation at once.
        if !self.flush_queue(now, id) {
            self.send_keepalive(now, id);
        }
        Ok(())
    }

    fn handle_cookie_reply(&mut self, now: Now, datagram: &[u8]) -> Result<(), DropReason> {
        let repr = CookieReplyRepr::parse(datagram).map_err(|_| DropReason::MalformedControl)?;
        let id = *self
            .spis
            .get(&repr.receiver_spi)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        let peer = self
            .peers
            .get_mut(&id)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        if peer
            .handshake
            .as_ref()
            .is_none_or(|h| h.local_spi != repr.receiver_spi)
        {
            return Err(DropReason::UnexpectedHandshakeMessage);
        }
        peer.cookie_jar
            .consume_reply(now.instant, &repr.nonce, &repr.encrypted_cookie)
            .map_err(|_| DropReason::BadCookieReply)?;
        // The reply is bound to our initiation's mac1, so only the responder
        // (or someone on the path) can make us do this: retry at once, now
        // with a mac2 the busy responder will accept.
        self.start_handshake(now, id, true);
        Ok(())
    }

    fn send_cookie_reply(
        &mut self,
        now: Now,
        src: SocketAddr,
        receiver_spi: u32,
        mac1: &[u8; MAC_LEN],
    ) {
        let body = self
            .cookies
            .make_reply(now.instant, src, mac1, &mut self.rng);
        let repr = CookieReplyRepr {
            receiver_spi,
            nonce: body.nonce,
            encrypted_cookie: body.encrypted_cookie,
        };
        let mut contents = vec![0u8; repr.buffer_len()];
        if repr.emit(&mut contents).is_ok() {
            self.counters.cookie_replies_sent += 1;
            self.transmits.push_back(Transmit {
                destination: src,
                contents,
            });
        }
    }

    /// Start (or, with `retransmit`, retry) a handshake with `id`.
    pub(super) fn start_handshake(&mut self, now: Now, id: PeerId, retransmit: bool) {
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.lease.lease().check_validity(now.unix).is_err() {
            // We can no longer vouch for who this peer is: no new keys until
            // the driver gives us a fresh lease.
            if let Some(old) = peer.handshake.take() {
                self.spis.remove(&old.local_spi);
            }
            peer.persistent_due = None;
            peer.keepalive_due = None;
            peer.new_handshake_due = None;
            if self.drop_queue(id, DropReason::LeaseExpired) == 0 {
                self.counters.record(DropReason::LeaseExpired);
            }
            self.events.push_back(Event::LeaseExpired { peer: id });
            return;
        }
        let Some(destination) = peer_endpoint(peer, &self.config) else {
            // Nowhere to send: no handshake, so nothing waits for one.
            if let Some(old) = peer.handshake.take() {
                self.spis.remove(&old.local_spi);
            }
            if self.drop_queue(id, DropReason::NoEndpoint) == 0 {
                self.counters.record(DropReason::NoEndpoint);
            }
            return;
        };
        let (first_attempt, attempts) = match (&peer.handshake, retransmit) {
            (Some(h), true) => (h.first_attempt, h.attempts),
            _ => (now.instant, 0),
        };
        if let Some(old) = peer.handshake.take() {
            self.spis.remove(&old.local_spi);
        }
        let local_spi = allocate_spi(&mut self.rng, &self.spis);
        let payload = HandshakePayload {
            spi: local_spi,
            timestamp: now.unix.tai64n(),
            lease: self.config.lease.as_bytes(),
        };
        let mut noise = [0u8; HANDSHAKE_BUF];
        let started = InitiatorHandshake::start(
            &self.config.keypair,
            &peer.public_key,
            peer.config.psk.as_ref(),
            &payload,
            &mut self.rng,
            &mut noise,
        );
        let message = started.ok().and_then(|(state, len)| {
            let initiation = InitiationRepr {
                sender_spi: local_spi,
                noise: noise.get(..len)?,
                mac1: [0; MAC_LEN],
                mac2: [0; MAC_LEN],
            };
            let mut message = vec![0u8; initiation.buffer_len()];
            initiation.emit(&mut message).ok()?;
            seal_control(&mut message, &mut peer.cookie_jar, now).ok()?;
            Some((state, message))
        });
        self.ratchet_rng();
        let Some((state, message)) = message else {
            // Nothing will complete: what waited for it goes now.
            if self.drop_queue(id, DropReason::LocalLeaseUnusable) == 0 {
                self.counters.record(DropReason::LocalLeaseUnusable);
            }
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.handshake = Some(Box::new(PendingHandshake {
            state,
            local_spi,
            first_attempt,
            retry_at: now.instant + retry_delay(&timers, attempts, &mut self.rng),
            attempts: attempts + 1,
        }));
        // Sending an initiation is not data: dead-peer detection restarts.
        peer.new_handshake_due = None;
        self.spis.insert(local_spi, id);
        self.counters.initiations_sent += 1;
        self.transmits.push_back(Transmit {
            destination,
            contents: message,
        });
    }

    /// Account for a completed handshake: counters, events, key log.
    fn record_handshake(
        &mut self,
        now: Now,
        id: PeerId,
        initiator: bool,
        keys: &SaKeys,
        (inbound_spi, outbound_spi): (u32, u32),
    ) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.stats.handshakes += 1;
            peer.last_handshake = Some(now.unix);
        }
        self.counters.handshakes_completed += 1;
        self.events.push_back(Event::HandshakeCompleted {
            peer: id,
            initiator,
        });
        if self.config.dangerous_export_keys {
            self.events.push_back(Event::SaKeys(SaKeyLog {
                peer: id,
                inbound_spi,
                outbound_spi,
                inbound: keys.inbound.clone(),
                outbound: keys.outbound.clone(),
            }));
        }
    }
}

/// Fill in an emitted handshake message's mac1 (keyed by the receiver's
/// static key) and mac2 (from a cookie the receiver gave us, if fresh).
fn seal_control(
    message: &mut [u8],
    jar: &mut crate::cookie::CookieJar,
    now: Now,
) -> Result<(), DropReason> {
    let mut packet = ControlPacket::new_checked(message).map_err(|_| DropReason::BufferTooSmall)?;
    let mac1 = jar.mac1(
        packet
            .bytes_before_mac1()
            .ok_or(DropReason::BufferTooSmall)?,
    );
    packet
        .set_mac1(&mac1)
        .map_err(|_| DropReason::BufferTooSmall)?;
    let mac2 = jar.mac2(
        now.instant,
        packet
            .bytes_before_mac2()
            .ok_or(DropReason::BufferTooSmall)?,
    );
    packet
        .set_mac2(&mac2)
        .map_err(|_| DropReason::BufferTooSmall)?;
    Ok(())
}

/// Is `timestamp` within `window` of `now`, either way?
fn is_fresh(timestamp: Tai64N, now: UnixTime, window: std::time::Duration) -> bool {
    let earliest = UnixTime::from_duration(now.as_duration().saturating_sub(window)).tai64n();
    let latest = now.saturating_add(window).tai64n();
    (earliest..=latest).contains(&timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn freshness_window_is_symmetric_and_inclusive() {
        let now = UnixTime::from_secs(1_800_000_000);
        let w = Duration::from_secs(180);
        assert!(is_fresh(now.tai64n(), now, w));
        assert!(is_fresh(
            UnixTime::from_secs(1_800_000_000 - 180).tai64n(),
            now,
            w
        ));
        assert!(is_fresh(
            UnixTime::from_secs(1_800_000_000 + 180).tai64n(),
            now,
            w
        ));
        assert!(!is_fresh(
            UnixTime::from_secs(1_800_000_000 - 181).tai64n(),
            now,
            w
        ));
        assert!(!is_fresh(
            UnixTime::from_secs(1_800_000_000 + 181).tai64n(),
            now,
            w
        ));
    }
}
