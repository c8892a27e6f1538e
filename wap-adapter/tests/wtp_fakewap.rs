//! The WTP responder against an independent WAP client: kannel's `fakewap`
//! (package kannel-extras), which speaks WTP + connection-mode WSP to UDP
//! 9201. Each test binds a UDP socket on 127.0.0.1, runs fakewap against it
//! and drives a [`Responder`] over that socket, answering with canned WSP
//! ConnectReply and Reply PDUs (written by hand here: the WSP codec is
//! another module's); fakewap must complete its transactions, and what it
//! received must be what was sent. Skipped, with a `permanet-test-skipped:`
//! line, when fakewap is not installed.
//!
//! With `PERMANET_WTP_CAPTURE=<dir>` set, the datagrams fakewap sent are
//! written there (`<test>-<n>.bin`): that is how the vectors in
//! `tests/vectors/wtp/` were captured.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod fakewap_common;

use fakewap_common::{have_fakewap, ChildGuard, FAKEWAP};
use wap_adapter::wtp::pdu::{decode_datagram, Pdu};
use wap_adapter::wtp::{Responder, TransactionClass, WtpConfig, WtpCounters, WtpEvent};

/// WSP PDU types (WAP-230-WSP §8.2.1).
const WSP_CONNECT: u8 = 0x01;
const WSP_DISCONNECT: u8 = 0x05;
const WSP_GET: u8 = 0x40;
const WSP_POST: u8 = 0x60;

fn fakewap(test: &str) -> Option<&'static Path> {
    have_fakewap(test).then(|| Path::new(FAKEWAP))
}

/// WSP ConnectReply (§8.2.2.2): session id 1, no capabilities, no headers.
fn connect_reply() -> Vec<u8> {
    vec![0x02, 0x01, 0x00, 0x00]
}

/// WSP Reply (§8.2.3.3): 200 OK, Content-Type text/plain (0x83), `body`.
fn reply(body: &[u8]) -> Vec<u8> {
    let mut pdu = vec![0x04, 0x20, 0x01, 0x83];
    pdu.extend_from_slice(body);
    pdu
}

/// What a run saw.
struct Run {
    status: ExitStatus,
    log: String,
    counters: WtpCounters,
    /// User data of every invoke handed up, with its class.
    invokes: Vec<(TransactionClass, Vec<u8>)>,
    results_acknowledged: usize,
    output: Vec<u8>,
}

/// Run fakewap with `args` (and `-w <file>`) against a responder answering
/// Gets and Posts with `body`; `drop_packet` decides which of the
/// responder's datagrams are lost (by its decoded PDU and how many times
/// that datagram was seen before).
fn run(
    test: &str,
    args: &[&str],
    body: &[u8],
    mut drop_packet: impl FnMut(&Pdu) -> bool,
) -> Option<Run> {
    let fakewap = fakewap(test)?;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output_path = dir.path().join("reply.out");
    let log_path = dir.path().join("fakewap.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(fakewap);
    command
        .args(["-g", "127.0.0.1", "-p", &port, "-i", "0", "-D", "1", "-w"])
        .arg(&output_path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut child = ChildGuard(command.spawn().unwrap());

    let mut responder = Responder::new(WtpConfig::default());
    let mut invokes = Vec::new();
    let mut results_acknowledged = 0;
    let mut captured: Vec<Vec<u8>> = Vec::new();
    let mut exited: Option<(ExitStatus, Instant)> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        assert!(
            now < deadline,
            "{test}: fakewap did not finish in 60 s: {}",
            read(&log_path)
        );
        if exited.is_none() {
            if let Some(status) = child.0.try_wait().unwrap() {
                exited = Some((status, now));
            }
        }
        // After fakewap exits, wait briefly for its last datagram (the class 0 Disconnect).
        if let Some((status, at)) = exited {
            let disconnected = invokes
                .iter()
                .any(|(_, d): &(_, Vec<u8>)| d.first() == Some(&WSP_DISCONNECT));
            if disconnected || !status.success() || now > at + Duration::from_secs(2) {
                let _ = capture(test, &captured);
                return Some(Run {
                    status,
                    log: read(&log_path),
                    counters: responder.counters().clone(),
                    invokes,
                    results_acknowledged,
                    output: std::fs::read(&output_path).unwrap_or_default(),
                });
            }
        }
        let wait = responder
            .poll_timeout()
            .map_or(Duration::from_millis(20), |t| {
                t.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        socket.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            captured.push(buf[..n].to_vec());
            responder.handle_datagram(Instant::now(), peer, &buf[..n]);
        }
        responder.handle_timeout(Instant::now());
        while let Some(event) = responder.poll_event() {
            match event {
                WtpEvent::Invoke {
                    tx,
                    class,
                    user_data,
                    ..
                } => {
                    let answer = match user_data.first() {
                        Some(&WSP_CONNECT) => Some(connect_reply()),
                        Some(&WSP_GET) | Some(&WSP_POST) => Some(reply(body)),
                        _ => None,
                    };
                    if let (Some(answer), TransactionClass::Class2) = (answer, class) {
                        responder.send_result(Instant::now(), tx, answer).unwrap();
                    }
                    invokes.push((class, user_data));
                }
                WtpEvent::ResultAcknowledged { .. } => results_acknowledged += 1,
                WtpEvent::Aborted { tx, reason } => panic!("{test}: {tx:?} aborted: {reason:?}"),
            }
        }
        while let Some(transmit) = responder.poll_transmit() {
            let pdu = decode_datagram(&transmit.contents).unwrap();
            if pdu.first().is_some_and(&mut drop_packet) {
                continue;
            }
            socket
                .send_to(&transmit.contents, transmit.destination)
                .unwrap();
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// With `PERMANET_WTP_CAPTURE` set, write fakewap's datagrams there.
fn capture(test: &str, datagrams: &[Vec<u8>]) -> std::io::Result<()> {
    let Some(dir) = std::env::var_os("PERMANET_WTP_CAPTURE").map(PathBuf::from) else {
        return Ok(());
    };
    std::fs::create_dir_all(&dir)?;
    for (i, d) in datagrams.iter().enumerate() {
        std::fs::write(dir.join(format!("{test}-{i:02}.bin")), d)?;
    }
    Ok(())
}

fn check(test: &str, run: &Run, sessions: usize) {
    assert!(
        run.status.success(),
        "{test}: fakewap failed ({}): {}",
        run.status,
        run.log
    );
    assert!(
        run.log.contains("fakewap: complete."),
        "{test}: {}",
        run.log
    );
    let replies = run
        .log
        .matches("Received WSP Reply with status code 200OK")
        .count();
    assert_eq!(replies, sessions, "{test}: {}", run.log);
    let class0: Vec<_> = run
        .invokes
        .iter()
        .filter(|(c, _)| *c == TransactionClass::Class0)
        .collect();
    assert_eq!(
        class0.len(),
        sessions,
        "{test}: one class 0 Disconnect per session"
    );
    assert!(class0
        .iter()
        .all(|(_, d)| d.first() == Some(&WSP_DISCONNECT)));
    // Connect and Get/Post per session, each result acknowledged.
    assert_eq!(
        run.results_acknowledged,
        2 * sessions,
        "{test}: {:?}",
        run.counters
    );
    assert_eq!(run.counters.malformed, 0);
    assert!(
        run.counters.tid_verified >= 1,
        "the first Connect is TID-verified"
    );
}

#[test]
fn fakewap_connection_oriented_get() {
    let test = "fakewap_connection_oriented_get";
    let Some(run) = run(
        test,
        &["-m", "2", "http://app.example/hello"],
        b"hello, fakewap",
        |_| false,
    ) else {
        return;
    };
    check(test, &run, 2);
    assert_eq!(run.output, b"hello, fakewap");
    let get = run
        .invokes
        .iter()
        .find(|(_, d)| d.first() == Some(&WSP_GET))
        .unwrap();
    assert!(get.1.ends_with(b"http://app.example/hello"));
}

#[test]
fn fakewap_ten_kilobyte_reply_segmented_with_a_lost_segment() {
    let test = "fakewap_ten_kilobyte_reply_segmented_with_a_lost_segment";
    let body: Vec<u8> = (0..10_240u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut dropped = false;
    let Some(run) = run(test, &["http://app.example/big"], &body, |pdu| match pdu {
        Pdu::SegmentedResult(s) if s.psn == 2 && !s.rid && !dropped => {
            dropped = true;
            true
        }
        _ => false,
    }) else {
        return;
    };
    check(test, &run, 1);
    assert_eq!(run.output, body, "fakewap reassembled the 10 KB reply");
    assert!(run.log.contains("Sending WTP_NACK"), "{}", run.log);
    assert_eq!(run.counters.nacks_received, 1);
    assert_eq!(run.counters.retransmissions, 1, "exactly the lost packet");
    assert_eq!(
        run.counters.result_packets_sent,
        1 + 8,
        "ConnectReply + 8 packets"
    );
}

#[test]
fn fakewap_post_small_gets_its_ack_before_the_reply() {
    let test = "fakewap_post_small_gets_its_ack_before_the_reply";
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("post.txt");
    let content: Vec<u8> = b"name=value&x=1\n".repeat(20);
    std::fs::write(&input, &content).unwrap();
    let Some(run) = run(
        test,
        &["-P", input.to_str().unwrap(), "http://app.example/form"],
        b"posted",
        |_| false,
    ) else {
        return;
    };
    check(test, &run, 1);
    assert_eq!(run.output, b"posted");
    let post = run
        .invokes
        .iter()
        .find(|(_, d)| d.first() == Some(&WSP_POST))
        .unwrap();
    assert!(post.1.ends_with(&content));
}

#[test]
fn fakewap_post_segmented_invoke_reassembled() {
    let test = "fakewap_post_segmented_invoke_reassembled";
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("post.bin");
    // fakewap sends 1200-octet segments in groups of 4: 7 packets, 2 groups after the first.
    let content: Vec<u8> = (0..7_500u32).map(|i| b'A' + (i % 23) as u8).collect();
    std::fs::write(&input, &content).unwrap();
    let Some(run) = run(
        test,
        &["-P", input.to_str().unwrap(), "http://app.example/upload"],
        b"stored",
        |_| false,
    ) else {
        return;
    };
    check(test, &run, 1);
    assert_eq!(run.output, b"stored");
    let post = run
        .invokes
        .iter()
        .find(|(_, d)| d.first() == Some(&WSP_POST))
        .unwrap();
    assert!(
        post.1.ends_with(&content),
        "the reassembled Post carries the whole file"
    );
    assert_eq!(run.counters.nacks_sent, 0);
}

#[test]
fn fakewap_lost_result_is_retransmitted() {
    let test = "fakewap_lost_result_is_retransmitted";
    let mut dropped = false;
    let Some(run) = run(
        test,
        &["http://app.example/lossy"],
        b"second time lucky",
        |pdu| match pdu {
            // The first transmission of the WSP Reply (0x04) is lost.
            Pdu::Result(r) if r.user_data.first() == Some(&0x04) && !r.rid && !dropped => {
                dropped = true;
                true
            }
            _ => false,
        },
    ) else {
        return;
    };
    check(test, &run, 1);
    assert_eq!(run.output, b"second time lucky");
    assert_eq!(
        run.counters.retransmissions, 1,
        "timer R resent the Result once"
    );
}

#[test]
fn fakewap_tid_new_forces_tid_verification() {
    let test = "fakewap_tid_new_forces_tid_verification";
    // -n sets TIDnew on every class 2 invoke: each Connect and Get is verified.
    let Some(run) = run(
        test,
        &["-n", "-m", "2", "http://app.example/new"],
        b"verified",
        |_| false,
    ) else {
        return;
    };
    check(test, &run, 2);
    assert_eq!(run.counters.tid_verifications, 4, "{:?}", run.counters);
    assert_eq!(run.counters.tid_verified, 4);
    assert_eq!(run.output, b"verified");
}
