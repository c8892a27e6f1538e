//! Entry points of the WTP fuzz targets (`fuzz/fuzz_targets/wtp_*.rs`),
//! shared with the test that replays the committed corpus: arbitrary
//! octets must decode to a PDU or a typed error, and must never panic the
//! responder, whatever state its transactions are in.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::pdu::{decode_datagram, Pdu};
use super::responder::{Responder, WtpConfig, WtpEvent};

/// Decode `data` as a datagram; re-encode what decodes and decode it again.
pub fn wtp_decode(data: &[u8]) {
    if let Ok(pdus) = decode_datagram(data) {
        for pdu in pdus {
            if let Ok(bytes) = pdu.encode() {
                assert_eq!(
                    Pdu::decode(&bytes).ok(),
                    Some(pdu),
                    "re-encoded PDU decodes differently"
                );
            }
        }
    }
}

/// Feed `data`, split into datagrams at each 0xFF octet, to one
/// responder from two peers, answering every class 2 invoke and advancing
/// the clock between datagrams so every timer runs.
pub fn wtp_responder(data: &[u8]) {
    let config = WtpConfig {
        segment_size: 16,
        max_message_size: 1024,
        max_transactions: 8,
        max_transactions_per_peer: 4,
        ..WtpConfig::default()
    };
    let mut responder = Responder::new(config);
    let peers = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, 1000)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 1001)),
    ];
    let mut now = Instant::now();
    for (i, datagram) in data.split(|b| *b == 0xff).enumerate() {
        let peer = peers.get(i % 2).copied().unwrap_or(peers[0]);
        responder.handle_datagram(now, peer, datagram);
        while let Some(event) = responder.poll_event() {
            if let WtpEvent::Invoke { tx, user_data, .. } = event {
                let _ = responder.send_result(now, tx, user_data.repeat(3));
            }
        }
        while responder.poll_transmit().is_some() {}
        now += Duration::from_millis(u64::from(datagram.first().copied().unwrap_or(0)) * 40);
        responder.handle_timeout(now);
    }
}
