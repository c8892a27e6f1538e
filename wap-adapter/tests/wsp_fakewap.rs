//! WSP PDUs against Kannel's WAP client simulator `fakewap`.
//!
//! `committed_vectors` (always runs): the datagrams fakewap sent, committed
//! under tests/vectors/wsp/fakewap/ (see the README there), decode to the
//! expected PDUs, headers, URIs and capabilities, and our encoder writes
//! each PDU back byte for byte.
//!
//! `fakewap_live` (needs /usr/lib/kannel/test/fakewap, else skipped): runs
//! fakewap against a loopback UDP socket, answers it with PDUs from our
//! encoder (ConnectReply with negotiated capabilities, Reply), checks that
//! it still sends exactly the committed octets, and that it accepts our
//! answers (it exits 0 only after a Reply with status 200).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod fakewap_common;

use fakewap_common::{have_fakewap, ChildGuard, FAKEWAP};
use wap_adapter::wsp::capabilities::{negotiate, Capabilities, ServerLimits};
use wap_adapter::wsp::pdu::{self, DecodedPdu, Method, Mode, Pdu};
use wap_adapter::wsp::{status, EncodingVersion, Headers};

const POST_BODY: &[u8] = b"name=permanet&x=%24\n";
const BODY: &[u8] = b"<wml><card><p>hi</p></card></wml>";

fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/wsp/fakewap")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex::decode(text.trim()).unwrap()
}

/// WTP PDU type of a datagram (1 Invoke, 2 Result, 3 Ack).
fn wtp_type(datagram: &[u8]) -> u8 {
    (datagram[0] >> 3) & 0x0f
}

/// The TID of a WTP PDU.
fn wtp_tid(datagram: &[u8]) -> u16 {
    (u16::from(datagram[1] & 0x7f) << 8) | u16::from(datagram[2])
}

/// The user data (the WSP PDU) of a WTP Invoke: after the 4-octet header
/// and the TPIs (present while the CON bit is set).
fn wtp_user_data(datagram: &[u8]) -> &[u8] {
    assert_eq!(wtp_type(datagram), 1, "not an Invoke: {datagram:02x?}");
    let mut con = datagram[0] & 0x80 != 0;
    let mut i = 4;
    while con {
        let tpi = datagram[i];
        con = tpi & 0x80 != 0;
        i += 1 + if tpi & 0x04 != 0 {
            usize::from(datagram[i + 1]) + 1
        } else {
            usize::from(tpi & 0x03)
        };
    }
    &datagram[i..]
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

/// Decode, compare with `expected` (every header decoded), and re-encode:
/// the decoded PDU and our octets for it.
fn decode_and_encode(bytes: &[u8], mode: Mode, expected: &Pdu) -> (DecodedPdu, Vec<u8>) {
    let decoded = pdu::decode(bytes, mode).unwrap();
    assert_eq!(&decoded.pdu, expected);
    assert!(
        decoded.header_errors.is_empty(),
        "{:?}",
        decoded.header_errors
    );
    let again = pdu::encode(&decoded.pdu, decoded.tid, EncodingVersion::V1_2).unwrap();
    (decoded, again)
}

/// Decode, compare with `expected`, and re-encode to the same octets.
fn check(bytes: &[u8], mode: Mode, expected: &Pdu) -> DecodedPdu {
    let (decoded, again) = decode_and_encode(bytes, mode, expected);
    assert_eq!(again, bytes, "re-encoding {expected:?}");
    decoded
}

/// For fakewap's Posts, whose encoding is not canonical: it writes the
/// content type `text/plain` as text where the canonical encoding is its
/// well-known code 0x83 (Table 40). Decode, compare with `expected`; our
/// re-encoding must be the fakewap octets with that one substitution, and
/// decode to the same PDU.
fn check_post(bytes: &[u8], mode: Mode, expected: &Pdu) {
    let (decoded, again) = decode_and_encode(bytes, mode, expected);
    let text = b"text/plain\0";
    let at = bytes.windows(text.len()).position(|w| w == text).unwrap();
    let mut canonical = bytes[..at].to_vec();
    canonical.push(0x83);
    canonical.extend_from_slice(&bytes[at + text.len()..]);
    // The HeadersLen uintvar (one octet here) shrinks by the 10 octets saved.
    let headers_len_at = canonical.iter().position(|&b| b == 0x60).unwrap() + 2;
    canonical[headers_len_at] -= 10;
    assert_eq!(again, canonical);
    assert_eq!(pdu::decode(&again, mode).unwrap(), decoded);
}

fn connect(user_agent: &str) -> Pdu {
    Pdu::Connect {
        version: 0x10,
        capabilities: Capabilities {
            client_sdu_size: Some(1 << 20),
            server_sdu_size: Some(1 << 20),
            ..Capabilities::default()
        },
        headers: headers(&[("Accept", "*/*"), ("User-Agent", user_agent)]),
    }
}

#[test]
fn committed_vectors() {
    let cl_get = check(
        &vector("cl-get-1.hex"),
        Mode::Connectionless,
        &Pdu::Get {
            method: Method::Get,
            uri: "http://127.0.0.1/hello.wml".into(),
            headers: headers(&[("Accept", "*/*")]),
        },
    );
    assert_eq!(cl_get.tid, Some(1));

    check_post(
        &vector("cl-post-1.hex"),
        Mode::Connectionless,
        &Pdu::Post {
            method: Method::Post,
            uri: "http://127.0.0.1/cgi?x=1".into(),
            content_type: "text/plain".into(),
            headers: headers(&[
                ("User-Agent", "fakewap"),
                ("Content-Length", "20"),
                ("Accept", "*/*"),
            ]),
            data: POST_BODY.to_vec(),
        },
    );

    for (scenario, user_agent) in [("co-get", "fakewap"), ("co-post", "Nokia7110/1.0 (04.94)")] {
        let connect_bytes = vector(&format!("{scenario}-1.hex"));
        let decoded = check(
            wtp_user_data(&connect_bytes),
            Mode::Connection,
            &connect(user_agent),
        );
        assert_eq!(decoded.tid, None);
        let Pdu::Connect { capabilities, .. } = decoded.pdu else {
            unreachable!()
        };
        assert_eq!(capabilities.effective_client_sdu_size(), 1 << 20);
        for ack in [2, 4] {
            assert_eq!(wtp_type(&vector(&format!("{scenario}-{ack}.hex"))), 3);
        }
        check(
            wtp_user_data(&vector(&format!("{scenario}-5.hex"))),
            Mode::Connection,
            &Pdu::Disconnect { session_id: 5 },
        );
    }
    check(
        wtp_user_data(&vector("co-get-3.hex")),
        Mode::Connection,
        &Pdu::Get {
            method: Method::Get,
            uri: "http://127.0.0.1/hello.wml".into(),
            headers: Headers::new(),
        },
    );
    check_post(
        wtp_user_data(&vector("co-post-3.hex")),
        Mode::Connection,
        &Pdu::Post {
            method: Method::Post,
            uri: "http://127.0.0.1/form".into(),
            content_type: "text/plain".into(),
            headers: headers(&[
                ("User-Agent", "Nokia7110/1.0 (04.94)"),
                ("Content-Length", "20"),
                ("Accept", "*/*"),
            ]),
            data: POST_BODY.to_vec(),
        },
    );
}

/// Removes the POST body file.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Our Reply: 200, WML, from our encoder.
fn reply(tid: Option<u8>) -> Vec<u8> {
    let reply = Pdu::Reply {
        status: status::http_to_wsp(200),
        content_type: "text/vnd.wap.wml; charset=utf-8".into(),
        headers: headers(&[("Content-Length", &BODY.len().to_string())]),
        data: BODY.to_vec(),
    };
    pdu::encode(&reply, tid, EncodingVersion::V1_2).unwrap()
}

/// Run one scenario; returns the datagrams fakewap sent.
fn run(scenario: &str, args: &[&str], url: &str, post_file: &Path) -> Vec<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = socket.local_addr().unwrap().port().to_string();
    let mut command = Command::new(FAKEWAP);
    command.args(["-g", "127.0.0.1", "-p", &port]);
    for arg in args {
        command.arg(if *arg == "POSTFILE" {
            post_file.as_os_str()
        } else {
            arg.as_ref()
        });
    }
    command.arg(url).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = ChildGuard(command.spawn().unwrap());
    let mut received = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let (len, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) => panic!(
                "{scenario}: no datagram from fakewap after {} ({e})",
                received.len()
            ),
        };
        let datagram = buf[..len].to_vec();
        received.push(datagram.clone());
        if scenario.starts_with("cl-") {
            socket.send_to(&reply(Some(datagram[0])), from).unwrap();
            break;
        }
        if wtp_type(&datagram) != 1 {
            continue;
        }
        let tid = wtp_tid(&datagram);
        let result_header = [0x16, 0x80 | (tid >> 8) as u8, tid as u8];
        let decoded = pdu::decode(wtp_user_data(&datagram), Mode::Connection).unwrap();
        let answer = match decoded.pdu {
            Pdu::Disconnect { .. } => break,
            Pdu::Connect { capabilities, .. } => {
                let granted = negotiate(&capabilities, &ServerLimits::default());
                let connect_reply = Pdu::ConnectReply {
                    session_id: 5,
                    capabilities: granted,
                    headers: Headers::new(),
                };
                pdu::encode(&connect_reply, None, EncodingVersion::V1_2).unwrap()
            }
            Pdu::Post { .. } => {
                // fakewap takes a POST's Result only after an Ack of its Invoke.
                socket
                    .send_to(&[0x18, 0x80 | (tid >> 8) as u8, tid as u8], from)
                    .unwrap();
                reply(None)
            }
            _ => reply(None),
        };
        socket
            .send_to(&[&result_header[..], &answer].concat(), from)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: fakewap did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "{scenario}: fakewap failed ({status}): it did not accept our answers"
    );
    received
}

#[test]
fn fakewap_live() {
    if !have_fakewap("fakewap_live") {
        return;
    }
    let post_file =
        TempFile(std::env::temp_dir().join(format!("permanet-wsp-post-{}", std::process::id())));
    std::fs::write(&post_file.0, POST_BODY).unwrap();
    let scenarios: &[(&str, &[&str], &str, usize)] = &[
        ("cl-get", &["-M", "0"], "http://127.0.0.1/hello.wml", 1),
        (
            "cl-post",
            &["-M", "0", "-P", "POSTFILE", "-C", "text"],
            "http://127.0.0.1/cgi?x=1",
            1,
        ),
        ("co-get", &["-M", "1"], "http://127.0.0.1/hello.wml", 5),
        (
            "co-post",
            &["-M", "1", "-P", "POSTFILE", "-A", "Nokia7110/1.0 (04.94)"],
            "http://127.0.0.1/form",
            5,
        ),
    ];
    for &(scenario, args, url, count) in scenarios {
        let received = run(scenario, args, url, &post_file.0);
        // The final Ack of a connectionless exchange never comes; connection
        // mode ends with the Disconnect.
        assert_eq!(received.len(), count, "{scenario}");
        for (i, datagram) in received.iter().enumerate() {
            let name = format!("{scenario}-{}.hex", i + 1);
            assert_eq!(
                datagram,
                &vector(&name),
                "{name}: fakewap sent other octets than committed"
            );
        }
    }
}
