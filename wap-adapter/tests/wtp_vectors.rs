//! The WTP decoder on datagrams captured from an independent
//! implementation, kannel's `fakewap` (see `tests/wtp_fakewap.rs`, run with
//! `PERMANET_WTP_CAPTURE`): every field pinned, every vector re-encoded to
//! the same octets, and a captured exchange replayed into the responder.
//! Runs without fakewap installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use wap_adapter::wtp::pdu::{decode_datagram, Pdu, Tpi, OPTION_MAX_GROUP_SIZE};
use wap_adapter::wtp::{Responder, TransactionClass, WtpConfig, WtpEvent};

fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/wtp")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The one PDU of a vector, checked to re-encode to the same octets.
fn pdu(name: &str) -> Pdu {
    let bytes = vector(name);
    let mut pdus = decode_datagram(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(pdus.len(), 1, "{name}");
    let pdu = pdus.remove(0);
    assert_eq!(
        pdu.encode().unwrap(),
        bytes,
        "{name} re-encodes to the captured octets"
    );
    pdu
}

#[test]
fn connect_and_get_invokes() {
    let Pdu::Invoke(connect) = pdu("connect_invoke_class2.bin") else {
        panic!("not an Invoke")
    };
    assert_eq!(connect.tid, 1, "initiator direction bit clear");
    assert!(
        !connect.gtr && connect.ttr && !connect.rid,
        "0x0a: Invoke, TTR only"
    );
    assert_eq!(connect.version, 0);
    assert!(!connect.tid_new && connect.user_ack);
    assert_eq!(connect.class, TransactionClass::Class2);
    assert!(connect.tpis.is_empty());
    // WSP Connect: type 0x01, version 1.0, capabilities (client/server SDU size).
    assert_eq!(&connect.user_data[..4], &[0x01, 0x10, 0x0a, 0x0b]);

    let Pdu::Invoke(get) = pdu("get_invoke_class2.bin") else {
        panic!("not an Invoke")
    };
    assert_eq!((get.tid, get.class), (2, TransactionClass::Class2));
    assert_eq!(get.user_data[0], 0x40, "WSP Get");
    assert!(get.user_data.ends_with(b"http://app.example/hello"));
}

#[test]
fn tid_new_invoke() {
    let Pdu::Invoke(get) = pdu("get_invoke_tid_new.bin") else {
        panic!("not an Invoke")
    };
    assert!(get.tid_new && get.user_ack, "0x32: TIDnew, U/P, class 2");
    assert_eq!(
        (get.tid, get.class, get.version),
        (2, TransactionClass::Class2, 0)
    );
}

#[test]
fn disconnect_is_a_class0_invoke_reusing_the_get_tid() {
    let Pdu::Invoke(disconnect) = pdu("disconnect_invoke_class0_old_tid.bin") else {
        panic!("not an Invoke")
    };
    assert_eq!(disconnect.tid, 2, "the Get's TID");
    assert_eq!(disconnect.class, TransactionClass::Class0);
    assert_eq!(
        disconnect.user_data,
        vec![0x05, 0x01],
        "WSP Disconnect, session 1"
    );
}

#[test]
fn acks() {
    let Pdu::Ack(tidok) = pdu("ack_tidok.bin") else {
        panic!("not an Ack")
    };
    assert!(tidok.tid_verify && !tidok.rid && tidok.tpis.is_empty());
    assert_eq!(tidok.tid, 1);
    let Pdu::Ack(ack) = pdu("ack.bin") else {
        panic!("not an Ack")
    };
    assert!(!ack.tid_verify && ack.psn().is_none());
    let Pdu::Ack(group) = pdu("group_ack_psn3.bin") else {
        panic!("not an Ack")
    };
    assert_eq!((group.tid, group.psn()), (2, Some(3)));
    assert_eq!(group.tpis, vec![Tpi::PacketSequenceNumber(3)]);
}

#[test]
fn negative_ack() {
    let Pdu::NegativeAck(nack) = pdu("negative_ack_psn2.bin") else {
        panic!("not a Negative Ack")
    };
    assert_eq!(
        (nack.tid, nack.rid, nack.missing.as_slice()),
        (2, false, &[2u8][..])
    );
}

#[test]
fn post_invokes_with_option_tpi_and_segments() {
    let Pdu::Invoke(single) = pdu("post_invoke_max_group_size.bin") else {
        panic!("not an Invoke")
    };
    assert!(!single.gtr && single.ttr, "fits in one packet");
    assert_eq!(single.tpis.len(), 1);
    assert_eq!(
        single.tpis[0].option_uint(OPTION_MAX_GROUP_SIZE),
        Some(4200)
    );
    assert_eq!(single.user_data[0], 0x60, "WSP Post");

    let Pdu::Invoke(first) = pdu("post_invoke_first_segment_gtr.bin") else {
        panic!("not an Invoke")
    };
    assert!(first.gtr && !first.ttr, "packet 0 is a group of its own");
    assert_eq!(first.tpis[0].option_uint(OPTION_MAX_GROUP_SIZE), Some(4200));

    let segments = [
        ("segmented_invoke_psn1.bin", 1, false, false, 1200),
        ("segmented_invoke_psn3_gtr.bin", 3, true, false, 1200),
        ("segmented_invoke_psn6_ttr.bin", 6, false, true, 300),
    ];
    for (name, psn, gtr, ttr, len) in segments {
        let Pdu::SegmentedInvoke(s) = pdu(name) else {
            panic!("{name}: not a Segmented Invoke")
        };
        assert_eq!(
            (s.tid, s.psn, s.gtr, s.ttr, s.rid, s.user_data.len()),
            (2, psn, gtr, ttr, false, len),
            "{name}"
        );
    }
}

#[test]
fn captured_exchange_replayed_into_the_responder() {
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 50_000));
    let now = Instant::now();
    let mut responder = Responder::new(WtpConfig::default());
    responder.handle_datagram(now, peer, &vector("connect_invoke_class2.bin"));
    // TID verification of a peer not in the cache: Ack with TIDve, TID 1 | direction bit.
    assert_eq!(
        responder.poll_transmit().unwrap().contents,
        vec![0x1c, 0x80, 0x01]
    );
    assert!(responder.poll_event().is_none());
    responder.handle_datagram(now, peer, &vector("ack_tidok.bin"));
    let Some(WtpEvent::Invoke { tx, user_data, .. }) = responder.poll_event() else {
        panic!("Connect not delivered after TIDok")
    };
    assert_eq!(user_data[0], 0x01);
    responder
        .send_result(now, tx, vec![0x02, 0x01, 0x00, 0x00])
        .unwrap();
    // U/P was set: Ack, then the Result (0x16: GTR+TTR) carrying the ConnectReply.
    assert_eq!(
        responder.poll_transmit().unwrap().contents,
        vec![0x18, 0x80, 0x01]
    );
    assert_eq!(
        responder.poll_transmit().unwrap().contents,
        vec![0x16, 0x80, 0x01, 0x02, 0x01, 0x00, 0x00]
    );
    responder.handle_datagram(now, peer, &vector("ack.bin"));
    assert_eq!(
        responder.poll_event(),
        Some(WtpEvent::ResultAcknowledged { tx })
    );
    responder.handle_datagram(now, peer, &vector("get_invoke_class2.bin"));
    assert!(matches!(
        responder.poll_event(),
        Some(WtpEvent::Invoke {
            class: TransactionClass::Class2,
            ..
        })
    ));
    responder.handle_datagram(now, peer, &vector("disconnect_invoke_class0_old_tid.bin"));
    assert!(matches!(
        responder.poll_event(),
        Some(WtpEvent::Invoke { class: TransactionClass::Class0, user_data, .. }) if user_data == [0x05, 0x01]
    ));
    assert_eq!(responder.counters().malformed, 0);
}
