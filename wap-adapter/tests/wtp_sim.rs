//! The WTP responder driven by a minimal test initiator written here, on a
//! fake clock with a loss-free in-memory link the test controls (it drops,
//! duplicates and reorders packets by hand): classes 0/1/2, TID
//! verification, duplicates, lost Acks and Results, segmentation with a
//! Negative Ack, reassembly, timeouts, aborts and the memory bounds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use wap_adapter::wtp::pdu::{
    decode_datagram, Abort, Ack, Invoke, NegativeAck, Pdu, ResultPdu, Segment, Tpi,
    OPTION_MAX_GROUP_SIZE,
};
use wap_adapter::wtp::{
    AbortReason, ProviderAbortReason, Responder, TransactionClass, TxId, WtpConfig, WtpError,
    WtpEvent,
};

const DIR: u16 = 0x8000;

/// The test initiator: one peer of a responder, on a fake clock.
struct Sim {
    responder: Responder,
    now: Instant,
    peer: SocketAddr,
}

impl Sim {
    fn new() -> Self {
        Self::with(WtpConfig::default())
    }

    fn with(config: WtpConfig) -> Self {
        Self {
            responder: Responder::new(config),
            now: Instant::now(),
            peer: SocketAddr::from((Ipv4Addr::new(10, 0, 0, 7), 40_000)),
        }
    }

    fn send(&mut self, pdu: Pdu) {
        let bytes = pdu.encode().unwrap();
        self.responder.handle_datagram(self.now, self.peer, &bytes);
    }

    /// Everything the responder sent since the last call, decoded.
    fn sent(&mut self) -> Vec<Pdu> {
        let mut out = Vec::new();
        while let Some(t) = self.responder.poll_transmit() {
            assert_eq!(t.destination, self.peer);
            out.extend(decode_datagram(&t.contents).unwrap());
        }
        out
    }

    fn events(&mut self) -> Vec<WtpEvent> {
        std::iter::from_fn(|| self.responder.poll_event()).collect()
    }

    /// Advance the clock by `d`, running the timers due.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.responder.handle_timeout(self.now);
    }

    /// The one invoke event, its transaction.
    fn invoked(&mut self, class: TransactionClass, data: &[u8]) -> TxId {
        let events = self.events();
        match events.as_slice() {
            [WtpEvent::Invoke {
                tx,
                class: c,
                user_data,
                ..
            }] if *c == class && user_data == data => *tx,
            other => panic!(
                "expected one {class:?} invoke of {} octets, got {other:?}",
                data.len()
            ),
        }
    }

    /// A class 1/2 invoke of a fresh peer: through the TID verification.
    fn first_invoke(&mut self, tid: u16, class: TransactionClass, data: &[u8]) -> TxId {
        self.send(invoke(tid, class, data));
        assert_eq!(self.sent(), vec![ack_pdu(tid | DIR, true, false, None)]);
        assert!(self.events().is_empty(), "held until TIDok");
        self.send(ack_pdu(tid, true, false, None));
        self.invoked(class, data)
    }
}

fn invoke(tid: u16, class: TransactionClass, data: &[u8]) -> Pdu {
    Pdu::Invoke(Invoke {
        tid,
        gtr: false,
        ttr: true,
        rid: false,
        version: 0,
        tid_new: false,
        user_ack: false,
        class,
        tpis: vec![],
        user_data: data.to_vec(),
    })
}

fn with_rid(pdu: Pdu) -> Pdu {
    match pdu {
        Pdu::Invoke(mut i) => {
            i.rid = true;
            Pdu::Invoke(i)
        }
        Pdu::SegmentedInvoke(mut s) => {
            s.rid = true;
            Pdu::SegmentedInvoke(s)
        }
        other => other,
    }
}

fn ack_pdu(tid: u16, tid_verify: bool, rid: bool, psn: Option<u8>) -> Pdu {
    Pdu::Ack(Ack {
        tid,
        tid_verify,
        rid,
        tpis: psn.map(Tpi::PacketSequenceNumber).into_iter().collect(),
    })
}

fn result_pdu(tid: u16, rid: bool, data: &[u8]) -> Pdu {
    Pdu::Result(ResultPdu {
        tid: tid | DIR,
        gtr: true,
        ttr: true,
        rid,
        tpis: vec![],
        user_data: data.to_vec(),
    })
}

fn segment(tid: u16, psn: u8, gtr: bool, ttr: bool, data: &[u8]) -> Pdu {
    Pdu::SegmentedInvoke(Segment {
        tid,
        gtr,
        ttr,
        rid: false,
        psn,
        tpis: vec![],
        user_data: data.to_vec(),
    })
}

fn abort_pdu(tid: u16, reason: AbortReason) -> Pdu {
    Pdu::Abort(Abort {
        tid,
        reason,
        tpis: vec![],
    })
}

/// (psn, gtr, ttr, rid, data) of a result packet.
fn result_packet(pdu: &Pdu) -> (u8, bool, bool, bool, Vec<u8>) {
    match pdu {
        Pdu::Result(r) => (0, r.gtr, r.ttr, r.rid, r.user_data.clone()),
        Pdu::SegmentedResult(s) => (s.psn, s.gtr, s.ttr, s.rid, s.user_data.clone()),
        other => panic!("not a result packet: {other:?}"),
    }
}

#[test]
fn class0_is_delivered_without_state_or_tid_verification() {
    let mut sim = Sim::new();
    sim.send(invoke(9, TransactionClass::Class0, b"disconnect"));
    sim.invoked(TransactionClass::Class0, b"disconnect");
    assert!(sim.sent().is_empty());
    assert_eq!(sim.responder.transactions(), 0);
    assert_eq!(sim.responder.poll_timeout(), None);
    assert_eq!(sim.responder.counters().class0_delivered, 1);
}

#[test]
fn class2_with_tid_verification_result_and_ack() {
    let mut sim = Sim::new();
    let tx = sim.first_invoke(1, TransactionClass::Class2, b"get /");
    assert_eq!((tx.tid(), tx.peer()), (1, sim.peer));
    sim.responder
        .send_result(sim.now, tx, b"reply".to_vec())
        .unwrap();
    assert_eq!(sim.sent(), vec![result_pdu(1, false, b"reply")]);
    assert_eq!(
        sim.responder.send_result(sim.now, tx, b"again".to_vec()),
        Err(WtpError::WrongState("a result"))
    );
    sim.send(ack_pdu(1, false, false, None));
    assert_eq!(sim.events(), vec![WtpEvent::ResultAcknowledged { tx }]);
    assert_eq!(sim.responder.transactions(), 0);
    let c = sim.responder.counters();
    assert_eq!(
        (c.tid_verifications, c.tid_verified, c.results_acknowledged),
        (1, 1, 1)
    );
    // The next TID is newer than the cached one: no verification.
    sim.send(invoke(2, TransactionClass::Class2, b"next"));
    sim.invoked(TransactionClass::Class2, b"next");
    assert!(sim.sent().is_empty());
    // An old TID (a late duplicate of a finished transaction) is verified again.
    sim.send(invoke(1, TransactionClass::Class2, b"old"));
    assert_eq!(sim.sent(), vec![ack_pdu(1 | DIR, true, false, None)]);
    assert!(sim.events().is_empty());
    // The initiator has no such transaction: it aborts; nothing is delivered.
    sim.send(abort_pdu(
        1,
        AbortReason::Provider(ProviderAbortReason::InvalidTid),
    ));
    assert!(sim.events().is_empty());
    assert_eq!(sim.responder.counters().tid_verification_failed, 1);
}

#[test]
fn tid_new_flag_resets_the_cache_and_verifies() {
    let mut sim = Sim::new();
    let tx = sim.first_invoke(100, TransactionClass::Class2, b"a");
    sim.responder.send_result(sim.now, tx, vec![]).unwrap();
    sim.send(ack_pdu(100, false, false, None));
    assert_eq!(sim.events(), vec![WtpEvent::ResultAcknowledged { tx }]);
    // A restarted client: TID 0 with TIDnew.
    let Pdu::Invoke(mut i) = invoke(0, TransactionClass::Class2, b"b") else {
        unreachable!()
    };
    i.tid_new = true;
    sim.sent();
    sim.send(Pdu::Invoke(i));
    assert_eq!(sim.sent(), vec![ack_pdu(DIR, true, false, None)]);
    sim.send(ack_pdu(0, true, false, None));
    sim.invoked(TransactionClass::Class2, b"b");
    // TID 1 is now newer than the cache (0): no verification.
    sim.send(invoke(1, TransactionClass::Class2, b"c"));
    sim.invoked(TransactionClass::Class2, b"c");
}

#[test]
fn tid_verification_times_out_and_duplicates_get_tidve_again() {
    let mut sim = Sim::new();
    sim.send(invoke(5, TransactionClass::Class2, b"x"));
    assert_eq!(sim.sent(), vec![ack_pdu(5 | DIR, true, false, None)]);
    sim.send(with_rid(invoke(5, TransactionClass::Class2, b"x")));
    assert_eq!(sim.sent(), vec![ack_pdu(5 | DIR, true, true, None)]);
    sim.advance(Duration::from_secs(11));
    assert_eq!(sim.responder.transactions(), 0);
    assert_eq!(sim.responder.counters().tid_verification_failed, 1);
    assert!(sim.events().is_empty());
}

#[test]
fn hold_on_ack_then_duplicate_invoke_answered_from_state() {
    let mut sim = Sim::new();
    let tx = sim.first_invoke(3, TransactionClass::Class2, b"slow");
    // Timer A: no result after the hold-on delay, so a hold-on Ack.
    sim.advance(Duration::from_millis(400));
    assert!(sim.sent().is_empty());
    sim.advance(Duration::from_millis(100));
    assert_eq!(sim.sent(), vec![ack_pdu(3 | DIR, false, false, None)]);
    // The initiator retransmits its invoke (its copy of the Ack was lost): Ack again, not re-delivered.
    sim.send(with_rid(invoke(3, TransactionClass::Class2, b"slow")));
    assert_eq!(sim.sent(), vec![ack_pdu(3 | DIR, false, true, None)]);
    assert!(sim.events().is_empty());
    assert_eq!(sim.responder.counters().duplicate_invokes, 1);
    sim.responder
        .send_result(sim.now, tx, b"r".to_vec())
        .unwrap();
    assert_eq!(sim.sent(), vec![result_pdu(3, false, b"r")]);
    // A duplicate while the result is out is ignored: the result retransmission answers it.
    sim.send(with_rid(invoke(3, TransactionClass::Class2, b"slow")));
    assert!(sim.sent().is_empty());
}

#[test]
fn user_ack_invoke_gets_its_ack_before_the_result() {
    // A POST client (fakewap) waits for the Ack of its invoke before it accepts any Result.
    let mut sim = Sim::new();
    let tx = sim.first_invoke(8, TransactionClass::Class2, b"");
    sim.responder.send_result(sim.now, tx, vec![]).unwrap();
    assert_eq!(
        sim.sent(),
        vec![result_pdu(8, false, b"")],
        "no U/P: no Ack first"
    );
    sim.send(ack_pdu(8, false, false, None));
    sim.events();

    let Pdu::Invoke(mut i) = invoke(9, TransactionClass::Class2, b"post") else {
        unreachable!()
    };
    i.user_ack = true;
    sim.send(Pdu::Invoke(i));
    let events = sim.events();
    let [WtpEvent::Invoke {
        tx, user_ack: true, ..
    }] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    sim.responder
        .send_result(sim.now, *tx, b"ok".to_vec())
        .unwrap();
    assert_eq!(
        sim.sent(),
        vec![
            ack_pdu(9 | DIR, false, false, None),
            result_pdu(9, false, b"ok")
        ]
    );
    // fakewap answers every Ack with TIDok: ignored, the result stays in flight.
    sim.send(ack_pdu(9, true, false, None));
    assert!(sim.events().is_empty());
    assert_eq!(sim.responder.counters().stray_acks, 1);
    sim.send(ack_pdu(9, false, false, None));
    assert_eq!(sim.events(), vec![WtpEvent::ResultAcknowledged { tx: *tx }]);
}

#[test]
fn lost_result_is_retransmitted_then_aborted_after_max_retries() {
    let mut sim = Sim::new();
    let tx = sim.first_invoke(4, TransactionClass::Class2, b"q");
    sim.responder
        .send_result(sim.now, tx, b"answer".to_vec())
        .unwrap();
    assert_eq!(sim.sent(), vec![result_pdu(4, false, b"answer")]);
    // Result lost: timer R resends it with RID, then the Ack ends it.
    assert_eq!(
        sim.responder.poll_timeout(),
        Some(sim.now + Duration::from_secs(2))
    );
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.sent(), vec![result_pdu(4, true, b"answer")]);
    sim.send(ack_pdu(4, false, false, None));
    assert_eq!(sim.events(), vec![WtpEvent::ResultAcknowledged { tx }]);

    // Never acknowledged: 4 retransmissions, then Abort NORESPONSE.
    sim.send(invoke(5, TransactionClass::Class2, b"q2"));
    let tx = sim.invoked(TransactionClass::Class2, b"q2");
    sim.responder
        .send_result(sim.now, tx, b"a2".to_vec())
        .unwrap();
    sim.sent();
    for _ in 0..4 {
        sim.advance(Duration::from_secs(2));
        assert_eq!(sim.sent(), vec![result_pdu(5, true, b"a2")]);
    }
    sim.advance(Duration::from_secs(2));
    let reason = AbortReason::Provider(ProviderAbortReason::NoResponse);
    assert_eq!(sim.sent(), vec![abort_pdu(5 | DIR, reason)]);
    assert_eq!(sim.events(), vec![WtpEvent::Aborted { tx, reason }]);
    assert_eq!(sim.responder.transactions(), 0);
    let c = sim.responder.counters();
    assert_eq!((c.retransmissions, c.no_response), (5, 1));
}

#[test]
fn class1_acks_answers_duplicates_until_timer_w() {
    let mut sim = Sim::new();
    sim.first_invoke(6, TransactionClass::Class1, b"push");
    assert_eq!(sim.sent(), vec![ack_pdu(6 | DIR, false, false, None)]);
    sim.send(with_rid(invoke(6, TransactionClass::Class1, b"push")));
    assert_eq!(sim.sent(), vec![ack_pdu(6 | DIR, false, true, None)]);
    assert!(sim.events().is_empty());
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.responder.transactions(), 0);

    // With U/P: the Ack waits for the user's acknowledgement.
    let Pdu::Invoke(mut i) = invoke(7, TransactionClass::Class1, b"uack") else {
        unreachable!()
    };
    i.user_ack = true;
    sim.send(Pdu::Invoke(i));
    let tx = sim.invoked(TransactionClass::Class1, b"uack");
    assert!(sim.sent().is_empty());
    assert_eq!(
        sim.responder.send_result(sim.now, tx, vec![]),
        Err(WtpError::NoResultForClass(TransactionClass::Class1))
    );
    sim.responder.acknowledge(sim.now, tx).unwrap();
    assert_eq!(sim.sent(), vec![ack_pdu(7 | DIR, false, false, None)]);
}

#[test]
fn class0_disconnect_reusing_an_old_tid_is_delivered() {
    let mut sim = Sim::new();
    let tx = sim.first_invoke(10, TransactionClass::Class2, b"get");
    sim.responder
        .send_result(sim.now, tx, b"page".to_vec())
        .unwrap();
    sim.sent();
    // While the class 2 transaction with TID 10 is still waiting for its Ack.
    sim.send(invoke(10, TransactionClass::Class0, b"disconnect-1"));
    sim.invoked(TransactionClass::Class0, b"disconnect-1");
    sim.send(ack_pdu(10, false, false, None));
    assert_eq!(sim.events(), vec![WtpEvent::ResultAcknowledged { tx }]);
    // And after it: the TID is "old" but class 0 is never verified.
    sim.send(invoke(10, TransactionClass::Class0, b"disconnect-2"));
    sim.invoked(TransactionClass::Class0, b"disconnect-2");
    assert!(sim.sent().is_empty());
    // Even concatenated after the Ack, as fakewap -s sends them.
    let tx = {
        sim.send(invoke(11, TransactionClass::Class2, b"get2"));
        sim.invoked(TransactionClass::Class2, b"get2")
    };
    sim.responder
        .send_result(sim.now, tx, b"p".to_vec())
        .unwrap();
    sim.sent();
    let datagram = wap_adapter::wtp::pdu::encode_concatenated(&[
        ack_pdu(11, false, false, None),
        invoke(11, TransactionClass::Class0, b"\x05"),
    ])
    .unwrap();
    sim.responder.handle_datagram(sim.now, sim.peer, &datagram);
    let events = sim.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], WtpEvent::ResultAcknowledged { tx });
    assert!(
        matches!(&events[1], WtpEvent::Invoke { class: TransactionClass::Class0, user_data, .. } if user_data == b"\x05")
    );
}

#[test]
fn ten_kilobyte_result_segmented_with_a_drop_nack_and_reordering() {
    let mut sim = Sim::new();
    let body: Vec<u8> = (0..10_240u32).map(|i| (i % 251) as u8).collect();
    let tx = sim.first_invoke(20, TransactionClass::Class2, b"big");
    sim.responder
        .send_result(sim.now, tx, body.clone())
        .unwrap();
    // 10240 / 1400 = 8 packets, groups of 4: [0..3] [4..7].
    let group: Vec<_> = sim.sent().iter().map(result_packet).collect();
    assert_eq!(
        group
            .iter()
            .map(|p| (p.0, p.1, p.2, p.3))
            .collect::<Vec<_>>(),
        vec![
            (0, false, false, false),
            (1, false, false, false),
            (2, false, false, false),
            (3, true, false, false)
        ]
    );
    let mut received: Vec<Option<Vec<u8>>> = vec![None; 8];
    // Packet 2 is lost: the initiator sees the group trailer and asks for it.
    for p in group.iter().filter(|p| p.0 != 2) {
        received[usize::from(p.0)] = Some(p.4.clone());
    }
    sim.send(Pdu::NegativeAck(NegativeAck {
        tid: 20,
        rid: false,
        missing: vec![2],
        tpis: vec![],
    }));
    let resent: Vec<_> = sim.sent().iter().map(result_packet).collect();
    assert_eq!(resent.len(), 1, "exactly the missing packet");
    assert_eq!((resent[0].0, resent[0].3), (2, true));
    received[2] = Some(resent[0].4.clone());
    // No second group before the first is acknowledged.
    assert!(sim.sent().is_empty());
    sim.send(ack_pdu(20, false, false, Some(3)));
    let mut second: Vec<_> = sim.sent().iter().map(result_packet).collect();
    assert_eq!(
        second.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    assert!(second[3].2, "TTR on the last packet");
    // Delivered in reverse order: the initiator reassembles by PSN.
    second.reverse();
    for p in second {
        received[usize::from(p.0)] = Some(p.4);
    }
    // A stale Ack of the first group changes nothing.
    sim.send(ack_pdu(20, false, true, Some(3)));
    assert!(sim.events().is_empty());
    sim.send(ack_pdu(20, false, false, Some(7)));
    assert_eq!(sim.events(), vec![WtpEvent::ResultAcknowledged { tx }]);
    let reassembled: Vec<u8> = received.into_iter().flat_map(Option::unwrap).collect();
    assert_eq!(reassembled, body);
    let c = sim.responder.counters();
    assert_eq!(
        (c.result_packets_sent, c.retransmissions, c.nacks_received),
        (8, 1, 1)
    );
}

#[test]
fn lost_group_trailer_is_resent_by_timer_r() {
    let mut sim = Sim::new();
    sim.responder.set_peer_segment_size(sim.peer, 10);
    let tx = sim.first_invoke(21, TransactionClass::Class2, b"g");
    sim.responder.send_result(sim.now, tx, vec![1; 35]).unwrap();
    assert_eq!(sim.sent().len(), 4);
    sim.advance(Duration::from_secs(2));
    let resent: Vec<_> = sim.sent().iter().map(result_packet).collect();
    assert_eq!(
        resent.iter().map(|p| (p.0, p.2, p.3)).collect::<Vec<_>>(),
        vec![(3, true, true)]
    );
    sim.send(ack_pdu(21, false, false, Some(3)));
    assert_eq!(sim.events(), vec![WtpEvent::ResultAcknowledged { tx }]);
}

#[test]
fn client_max_group_size_option_limits_groups() {
    let mut sim = Sim::new();
    sim.responder.set_peer_segment_size(sim.peer, 100);
    sim.send(invoke(30, TransactionClass::Class2, b"warm"));
    sim.sent();
    sim.send(ack_pdu(30, true, false, None));
    sim.events();
    let Pdu::Invoke(mut i) = invoke(31, TransactionClass::Class2, b"x") else {
        unreachable!()
    };
    i.tpis = vec![Tpi::uint_option(OPTION_MAX_GROUP_SIZE, 250)];
    sim.send(Pdu::Invoke(i));
    let tx = sim.invoked(TransactionClass::Class2, b"x");
    sim.responder
        .send_result(sim.now, tx, vec![0; 500])
        .unwrap();
    assert_eq!(
        sim.sent().len(),
        2,
        "250 octets per group: 2 packets of 100"
    );
}

#[test]
fn segmented_invoke_reassembled_with_nack_and_reordering() {
    let mut sim = Sim::new();
    let Pdu::Invoke(mut first) = invoke(40, TransactionClass::Class2, b"AA") else {
        unreachable!()
    };
    first.gtr = true;
    first.ttr = false;
    sim.send(Pdu::Invoke(first));
    // TID verification first; the group Ack follows TIDok.
    assert_eq!(sim.sent(), vec![ack_pdu(40 | DIR, true, false, None)]);
    sim.send(ack_pdu(40, true, false, None));
    assert_eq!(sim.sent(), vec![ack_pdu(40 | DIR, false, false, Some(0))]);
    // Group [1..3]; packet 2 lost.
    sim.send(segment(40, 1, false, false, b"BB"));
    sim.send(segment(40, 3, true, false, b"DD"));
    assert_eq!(
        sim.sent(),
        vec![Pdu::NegativeAck(NegativeAck {
            tid: 40 | DIR,
            rid: false,
            missing: vec![2],
            tpis: vec![]
        })]
    );
    sim.send(segment(40, 2, false, false, b"CC"));
    assert_eq!(sim.sent(), vec![ack_pdu(40 | DIR, false, false, Some(3))]);
    // The initiator lost that Ack and resends the trailer: Ack again.
    sim.send(with_rid(segment(40, 3, true, false, b"DD")));
    assert_eq!(sim.sent(), vec![ack_pdu(40 | DIR, false, true, Some(3))]);
    // Last group reordered: TTR first; 4 missing, then the Nack timer repeats the Nack.
    sim.send(segment(40, 5, false, true, b"FF"));
    assert_eq!(sim.sent().len(), 1);
    sim.advance(Duration::from_secs(1));
    assert_eq!(
        sim.sent(),
        vec![Pdu::NegativeAck(NegativeAck {
            tid: 40 | DIR,
            rid: true,
            missing: vec![4],
            tpis: vec![]
        })]
    );
    assert!(sim.events().is_empty());
    sim.send(segment(40, 4, false, false, b"EE"));
    let tx = sim.invoked(TransactionClass::Class2, b"AABBCCDDEEFF");
    // The Result acknowledges the last group.
    sim.responder
        .send_result(sim.now, tx, b"ok".to_vec())
        .unwrap();
    assert_eq!(sim.sent(), vec![result_pdu(40, false, b"ok")]);
}

#[test]
fn segmented_invoke_bounds_are_enforced_and_counted() {
    let mut sim = Sim::with(WtpConfig {
        max_message_size: 10,
        max_groups: 2,
        verify_unknown_peers: false,
        ..WtpConfig::default()
    });
    let Pdu::Invoke(mut first) = invoke(1, TransactionClass::Class2, &[0; 6]) else {
        unreachable!()
    };
    first.gtr = true;
    first.ttr = false;
    sim.send(Pdu::Invoke(first.clone()));
    assert_eq!(sim.sent(), vec![ack_pdu(1 | DIR, false, false, Some(0))]);
    sim.send(segment(1, 1, false, true, &[0; 6]));
    let too_large = AbortReason::Provider(ProviderAbortReason::MessageTooLarge);
    assert_eq!(sim.sent(), vec![abort_pdu(1 | DIR, too_large)]);
    assert_eq!(sim.responder.transactions(), 0);
    assert_eq!(sim.responder.counters().refused_too_large, 1);

    first.tid = 2;
    first.user_data = vec![];
    sim.send(Pdu::Invoke(first));
    sim.sent();
    sim.send(segment(2, 1, true, false, b""));
    assert_eq!(sim.sent(), vec![abort_pdu(2 | DIR, too_large)]);
    assert_eq!(sim.responder.counters().refused_too_many_groups, 1);

    // Never completed, nothing to ask for (the trailer never came): dropped
    // after the reassembly timeout, not after the Nack retries.
    let Pdu::Invoke(mut lone) = invoke(3, TransactionClass::Class2, b"") else {
        unreachable!()
    };
    lone.ttr = false;
    sim.send(Pdu::Invoke(lone));
    for _ in 0..29 {
        sim.advance(Duration::from_secs(1));
    }
    assert!(sim.sent().is_empty());
    assert_eq!(sim.responder.transactions(), 1);
    sim.advance(Duration::from_secs(1));
    let no_response = AbortReason::Provider(ProviderAbortReason::NoResponse);
    assert_eq!(sim.sent(), vec![abort_pdu(3 | DIR, no_response)]);
    assert_eq!(sim.responder.transactions(), 0);

    // A gap the initiator never fills: Nacked 4 times more, then aborted.
    let Pdu::Invoke(mut gap) = invoke(4, TransactionClass::Class2, b"") else {
        unreachable!()
    };
    gap.ttr = false;
    sim.send(Pdu::Invoke(gap));
    sim.send(segment(4, 2, false, true, b""));
    assert_eq!(sim.sent().len(), 1, "Nack of packet 1");
    for _ in 0..4 {
        sim.advance(Duration::from_secs(1));
        assert!(
            matches!(sim.sent().as_slice(), [Pdu::NegativeAck(n)] if n.missing == [1] && n.rid)
        );
    }
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.sent(), vec![abort_pdu(4 | DIR, no_response)]);
    assert!(sim.events().is_empty());
}

#[test]
fn transaction_limits_per_peer_and_total() {
    let mut sim = Sim::with(WtpConfig {
        max_transactions_per_peer: 2,
        max_transactions: 3,
        verify_unknown_peers: false,
        ..WtpConfig::default()
    });
    for tid in 1..=2 {
        sim.send(invoke(tid, TransactionClass::Class2, b""));
    }
    sim.send(invoke(3, TransactionClass::Class2, b""));
    let busy = AbortReason::Provider(ProviderAbortReason::CapTempExceeded);
    assert_eq!(sim.sent(), vec![abort_pdu(3 | DIR, busy)]);
    assert_eq!(sim.responder.counters().refused_peer_limit, 1);
    sim.peer = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 8), 1));
    sim.send(invoke(1, TransactionClass::Class2, b""));
    sim.send(invoke(2, TransactionClass::Class2, b""));
    assert_eq!(sim.sent(), vec![abort_pdu(2 | DIR, busy)]);
    assert_eq!(sim.responder.counters().refused_total_limit, 1);
    assert_eq!(sim.responder.transactions(), 3);
    assert_eq!(sim.events().len(), 3);
    // Class 0 takes no slot.
    sim.send(invoke(9, TransactionClass::Class0, b"d"));
    sim.invoked(TransactionClass::Class0, b"d");
}

#[test]
fn aborts_from_either_side() {
    let mut sim = Sim::new();
    let tx = sim.first_invoke(50, TransactionClass::Class2, b"a");
    let user = AbortReason::User(0xe5);
    sim.send(abort_pdu(50, user));
    assert_eq!(sim.events(), vec![WtpEvent::Aborted { tx, reason: user }]);
    assert_eq!(
        sim.responder.send_result(sim.now, tx, vec![]),
        Err(WtpError::UnknownTransaction)
    );
    sim.send(invoke(51, TransactionClass::Class2, b"b"));
    let tx = sim.invoked(TransactionClass::Class2, b"b");
    sim.responder.abort(sim.now, tx, 0xe0).unwrap();
    assert_eq!(
        sim.sent(),
        vec![abort_pdu(51 | DIR, AbortReason::User(0xe0))]
    );
    assert_eq!(
        sim.responder.abort(sim.now, tx, 0xe0),
        Err(WtpError::UnknownTransaction)
    );
    // A stale TxId for a reused TID is refused.
    sim.send(with_rid(invoke(51, TransactionClass::Class2, b"b")));
    sim.sent();
    assert_eq!(
        sim.responder.send_result(sim.now, tx, vec![]),
        Err(WtpError::UnknownTransaction)
    );
}

#[test]
fn slow_user_is_aborted_after_the_result_timeout() {
    let mut sim = Sim::with(WtpConfig {
        result_timeout: Duration::from_secs(5),
        ..WtpConfig::default()
    });
    let tx = sim.first_invoke(60, TransactionClass::Class2, b"a");
    sim.advance(Duration::from_millis(500));
    assert_eq!(sim.sent(), vec![ack_pdu(60 | DIR, false, false, None)]);
    sim.advance(Duration::from_millis(4500));
    let reason = AbortReason::Provider(ProviderAbortReason::NoResponse);
    assert_eq!(sim.sent(), vec![abort_pdu(60 | DIR, reason)]);
    assert_eq!(sim.events(), vec![WtpEvent::Aborted { tx, reason }]);
    assert_eq!(sim.responder.counters().result_timeouts, 1);
}

#[test]
fn version_and_malformed_input() {
    let mut sim = Sim::new();
    let Pdu::Invoke(mut i) = invoke(70, TransactionClass::Class2, b"") else {
        unreachable!()
    };
    i.version = 1;
    sim.send(Pdu::Invoke(i));
    let version = AbortReason::Provider(ProviderAbortReason::WtpVersionOne);
    assert_eq!(sim.sent(), vec![abort_pdu(70 | DIR, version)]);
    for bad in [
        &[][..],
        &[0x0a, 0x00],
        &[0x0a, 0, 1, 0x03],
        &[0x78, 0, 0],
        &[0x00, 0x09, 0x18],
    ] {
        sim.responder.handle_datagram(sim.now, sim.peer, bad);
    }
    assert_eq!(sim.responder.counters().malformed, 5);
    // Responder-direction PDUs and Results from an initiator are not for us.
    sim.send(ack_pdu(70 | DIR, false, false, None));
    sim.send(result_pdu(70, false, b""));
    assert_eq!(sim.responder.counters().unexpected_pdus, 2);
    assert!(sim.sent().is_empty() && sim.events().is_empty());
}
