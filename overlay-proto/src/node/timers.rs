//! Timers of a node: handshake retransmission and give-up, keepalives,
//! dead-peer detection, SA expiry, rate-limiter sweeps.

#![deny(clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use super::{Event, Node};
use crate::counters::DropReason;
use crate::session::PeerId;
use crate::time::Now;

impl Node {
    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = &self.config.timers;
        self.peers
            .values()
            .filter_map(|p| p.next_deadline(timers))
            .chain(self.next_sweep)
            .min()
    }

    /// Run every timer that is due.
    pub fn handle_timeout(&mut self, now: Now) {
        let timers = self.config.timers;
        let t = now.instant;
        if self.next_sweep.is_some_and(|s| s <= t) {
            self.rate.sweep(t);
            self.next_sweep = (!self.rate.is_empty()).then(|| t + Duration::from_secs(1));
        }
        let due: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.next_deadline(&timers).is_some_and(|d| d <= t))
            .map(|p| p.id)
            .collect();
        for id in due {
            self.peer_timeout(now, id);
        }
    }

    pub(super) fn schedule_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + Duration::from_secs(1));
        }
    }

    fn peer_timeout(&mut self, now: Now, id: PeerId) {
        let timers = self.config.timers;
        let t = now.instant;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        for spi in peer.expire_sas(t, &timers) {
            self.spis.remove(&spi);
        }
        // Packets queued behind an SA that never got confirmed (or expired)
        // must not wait forever: start the handshake they need.
        let stranded = peer.stranded_queue_due(&timers).is_some_and(|d| d <= t);
        let retry = peer
            .handshake
            .as_ref()
            .filter(|h| h.retry_at <= t)
            .map(|h| h.first_attempt);
        if stranded {
            self.start_handshake(now, id, false);
        }
        if let Some(first_attempt) = retry {
            if t.saturating_duration_since(first_attempt) >= timers.handshake_give_up {
                self.give_up_handshake(id);
            } else {
                self.start_handshake(now, id, true);
            }
        }
        if self
            .peers
            .get(&id)
            .is_some_and(|p| p.keepalive_due.is_some_and(|d| d <= t))
        {
            if let Some(peer) = self.peers.get_mut(&id) {
                peer.keepalive_due = None;
            }
            self.send_keepalive(now, id);
        }
        if let Some(peer) = self.peers.get_mut(&id) {
            if peer.new_handshake_due.is_some_and(|d| d <= t) {
                peer.new_handshake_due = None;
                if peer.handshake.is_none() {
                    self.start_handshake(now, id, false);
                }
            }
        }
        let persistent = self
            .peers
            .get(&id)
            .and_then(|p| Some((p.persistent_due?, p.config.persistent_keepalive?)));
        if let Some((due, interval)) = persistent {
            if due <= t && !self.send_keepalive(now, id) {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.persistent_due = Some(t + interval);
                    if peer.handshake.is_none() {
                        self.start_handshake(now, id, false);
                    }
                }
            }
        }
    }

    /// The handshake ran out of time: forget it and what waited for it.
    fn give_up_handshake(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(h) = peer.handshake.take() {
            self.spis.remove(&h.local_spi);
        }
        peer.new_handshake_due = None;
        let dropped = self.drop_queue(id, DropReason::HandshakeTimeout);
        self.counters.handshake_timeouts += 1;
        self.events.push_back(Event::HandshakeTimedOut {
            peer: id,
            dropped_packets: dropped,
        });
    }
}
