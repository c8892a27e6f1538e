//! Operating a running `tunneld`: the Prometheus endpoint, SIGHUP reloads,
//! lease renewal from files and the control socket's `peer` request. Each test starts real daemon processes
//! on loopback and talks to them as an operator would (signals, `tunneld
//! status --json`, HTTP).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use netns_tests::{unix_now, wait_until};

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::daemon::{
    free_tcp_addr, silent_peer, socks_connect, text, tunneld, Daemon, Pair, Setup, CLIENT_PREFIX,
    SERVER_PREFIX, TIMEOUT,
};

const OTHER_PREFIX: &str = "2002:b16:212c:3::/64";

/// One HTTP/1.1 exchange; returns the status code and the body.
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    // The server may reset an oversized request; what was read counts.
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8(response).unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// A parsed exposition: family types, and samples by name and sorted
/// labels.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Exposition {
    /// The one sample `name{labels}`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        *self
            .samples
            .get(&(name.to_owned(), labels.clone()))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

/// Parse the OpenMetrics / Prometheus text format strictly enough to catch
/// a malformed document: every line is a comment of a known kind or a
/// sample `name{k="v",...} value` of a declared family, label values
/// escaped, and the document ends with `# EOF`.
fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition::default();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "line after # EOF: {line:?}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let family = parts.next().expect("comment without a family");
            assert!(valid_name(family), "bad family name {family:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("TYPE without a type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "info",
                            "histogram",
                            "summary",
                            "unknown"
                        ]
                        .contains(&t),
                        "{line}"
                    );
                    out.types.insert(family.to_owned(), t.to_owned());
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("sample without a value: {line:?}"),
        };
        assert!(valid_name(name), "bad metric name {name:?}");
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            parse_labels(rest)
        } else {
            (Vec::new(), rest)
        };
        let value: f64 = value.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
        let family = out
            .types
            .keys()
            .find(|f| {
                name == f.as_str()
                    || ["_total", "_info", "_created"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(f.as_str()))
            })
            .unwrap_or_else(|| panic!("sample {name} of no declared family"));
        assert!(!family.is_empty());
        let key = (name.to_owned(), labels);
        assert!(
            out.samples.insert(key, value).is_none(),
            "duplicate sample {line}"
        );
    }
    assert!(saw_eof, "no # EOF");
    out
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `k="v",k2="v2"} value` → sorted labels and the value text.
fn parse_labels(mut rest: &str) -> (Vec<(String, String)>, &str) {
    let mut labels = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            labels.sort();
            return (labels, after);
        }
        let (key, after) = rest.split_once("=\"").expect("label without =\"");
        assert!(valid_name(key), "bad label name {key:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("dangling escape").1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// A peer's counters, in `status --json` and as `tunneld_peer_NAME_total`.
const PEER_COUNTERS: [&str; 5] = [
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "handshakes",
];

fn counter(status: &serde_json::Value, group: &str, name: &str) -> f64 {
    status[group][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{group}.{name} missing")) as f64
}

#[test]
fn metrics_match_status_and_parse_as_prometheus_text() {
    let setup = Setup::client(0x44);
    // The peer's endpoint: a loopback socket that never answers, so the
    // daemon keeps sending initiations there.
    let (_peer_socket, peer_endpoint) = silent_peer();
    let peer_key = setup.write_peer_lease("server.lease", 0x55, SERVER_PREFIX);
    let metrics = free_tcp_addr();
    let config = setup.client_config(
        // A keepalive due in a second starts the first handshake.
        &format!("metrics-listen = \"{metrics}\"\npersistent-keepalive = 1"),
        &[("server.lease", peer_endpoint)],
    );
    let mut daemon = setup.start(&config);
    assert!(daemon.log().contains("metrics endpoint listening"));

    // Traffic: an initiation out, and a forged datagram in.
    daemon.wait_for_status("an initiation to be sent", |s| {
        counter(s, "dataplane", "datagrams_sent") > 0.0
    });
    let port = daemon.status()["interface"]["listen_port"]
        .as_u64()
        .unwrap();
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    forger
        .send_to(&[0x07; 48], ("127.0.0.1", u16::try_from(port).unwrap()))
        .unwrap();
    let before = daemon.wait_for_status("the forged datagram to be dropped", |s| {
        s["drops"]
            .as_object()
            .unwrap()
            .values()
            .any(|n| n.as_u64() != Some(0))
    });

    let (code, body) = get(metrics, "/metrics");
    assert_eq!(code, 200, "{body}");
    let after = daemon.status();
    let m = parse_exposition(&body);
    assert_eq!(m.types["tunneld_drops"], "counter");
    assert_eq!(m.types["tunneld_peer_security_associations"], "gauge");
    assert_eq!(
        m.value(
            "tunneld_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );

    // Counters only grow: status before <= scrape <= status after.
    for (group, prefix) in [
        ("dataplane", "dataplane"),
        ("counters", "node"),
        ("userspace", "stack"),
    ] {
        let names = after[group].as_object().unwrap();
        assert!(names.len() >= 9, "{group}: {names:?}");
        for name in names.keys() {
            let scraped = m.value(&format!("tunneld_{prefix}_{name}_total"), &[]);
            let (lo, hi) = (counter(&before, group, name), counter(&after, group, name));
            assert!(
                lo <= scraped && scraped <= hi,
                "{group}.{name}: {lo} <= {scraped} <= {hi}"
            );
        }
    }
    assert!(m.value("tunneld_dataplane_datagrams_sent_total", &[]) > 0.0);
    assert!(m.value("tunneld_dataplane_datagrams_received_total", &[]) >= 1.0);
    // Every drop reason, by its label; the forged one counted.
    let drops = after["drops"].as_object().unwrap();
    let mut dropped = 0.0;
    for (reason, n) in drops {
        let scraped = m.value("tunneld_drops_total", &[("reason", reason)]);
        assert_eq!(scraped, n.as_u64().unwrap() as f64, "{reason}");
        dropped += scraped;
    }
    assert!(dropped >= 1.0);
    // The peer, by name and key.
    let key = peer_key.to_string();
    let peer = [("peer", "srv"), ("public_key", key.as_str())];
    let status_peer = &after["peers"][0];
    for name in PEER_COUNTERS {
        assert_eq!(
            m.value(&format!("tunneld_peer_{name}_total"), &peer),
            status_peer[name].as_u64().unwrap() as f64,
            "{name}"
        );
    }
    assert_eq!(m.value("tunneld_peer_security_associations", &peer), 0.0);
    assert_eq!(m.value("tunneld_peers", &[]), 1.0);
    assert_eq!(m.value("tunneld_metrics_peers_omitted", &[]), 0.0);
    assert_eq!(
        m.value("tunneld_reloads_total", &[("result", "failed")]),
        0.0
    );
    assert_eq!(m.value("tunneld_lease_serial", &[]), 1.0);

    // Other paths and methods, and bounded requests.
    assert_eq!(get(metrics, "/").0, 404);
    assert_eq!(get(metrics, "/metrics/x").0, 404);
    let post =
        b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(http(metrics, post).0, 405);
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (code, _) = http(metrics, huge.as_bytes());
    assert_ne!(code, 200, "a 64 KiB request head was served");
    // Still serving after that.
    assert_eq!(get(metrics, "/metrics").0, 200);

    daemon.stop();
}

#[test]
fn metrics_of_an_established_tunnel_show_its_peer_and_security_association() {
    let metrics = free_tcp_addr();
    let mut pair = Pair::start(
        0x61,
        "",
        &format!("metrics-listen = \"{metrics}\"\npersistent-keepalive = 1"),
    );
    let daemon = &mut pair.client_daemon;
    let before = daemon.wait_for_status("a handshake", |s| {
        let peer = &s["peers"][0];
        peer["security_associations"]
            .as_array()
            .is_some_and(|sas| !sas.is_empty())
            && peer["latest_handshake"].is_u64()
    });
    let (code, body) = get(metrics, "/metrics");
    assert_eq!(code, 200);
    let after = daemon.status();
    let m = parse_exposition(&body);

    let key = pair.server.keypair.public().to_string();
    let peer = [("peer", "node"), ("public_key", key.as_str())];
    for name in PEER_COUNTERS {
        let scraped = m.value(&format!("tunneld_peer_{name}_total"), &peer);
        let lo = before["peers"][0][name].as_u64().unwrap() as f64;
        let hi = after["peers"][0][name].as_u64().unwrap() as f64;
        assert!(
            lo <= scraped && scraped <= hi,
            "{name}: {lo} <= {scraped} <= {hi}"
        );
    }
    assert!(m.value("tunneld_peer_handshakes_total", &peer) >= 1.0);
    let sas = m.value("tunneld_peer_security_associations", &peer);
    assert!(sas >= 1.0, "{sas}");
    let age = m.value("tunneld_peer_last_handshake_age_seconds", &peer);
    let handshake = after["peers"][0]["latest_handshake"].as_u64().unwrap();
    let bound = after["now"].as_u64().unwrap() - handshake + 1;
    assert!((0.0..=bound as f64).contains(&age), "{age} vs {bound}");
    assert!(m.value("tunneld_node_handshakes_completed_total", &[]) >= 1.0);
    assert!(m.value("tunneld_dataplane_datagrams_received_total", &[]) >= 1.0);

    pair.stop();
}

#[test]
fn a_silent_metrics_client_is_disconnected() {
    let setup = Setup::client(0x4c);
    let metrics = free_tcp_addr();
    let config = setup.client_config(&format!("metrics-listen = \"{metrics}\""), &[]);
    let mut daemon = setup.start(&config);
    let started = Instant::now();
    let mut silent = TcpStream::connect(metrics).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    // Half a request head, then nothing.
    silent.write_all(b"GET /metr").unwrap();
    let mut buf = [0u8; 512];
    let closed = match silent.read(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "the connection stayed open");
    let waited = started.elapsed();
    // The header timeout is 5 s.
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    // One request per connection: the server closes after answering.
    let mut conn = TcpStream::connect(metrics).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"));
    daemon.stop();
}

#[test]
fn a_metrics_listener_that_cannot_bind_is_a_startup_error() {
    let setup = Setup::client(0x45);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = setup.client_config(&format!("metrics-listen = \"{addr}\""), &[]);
    let mut daemon = setup.spawn(&config);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains(&format!("metrics-listen = \"{addr}\"")),
        "{log}"
    );
}

#[test]
fn sighup_renews_the_lease_and_changes_the_log_level() {
    let setup = Setup::client(0x46);
    let info = setup.client_config("log-level = \"info\"", &[]);
    let mut daemon = setup.start(&info);
    let status = daemon.status();
    assert_eq!(status["lease"]["serial"], 1);
    let expires = status["lease"]["not_after"].as_u64().unwrap();

    // Same config, renewed lease file.
    setup.write_client_lease(2, 7200);
    let status = daemon.reload(&setup, &info);
    assert_eq!(status["reload"]["applied"], 1, "{status}");
    assert_eq!(status["lease"]["serial"], 2);
    assert!(status["lease"]["not_after"].as_u64().unwrap() >= expires + 3600);
    assert!(!daemon.log().contains("reload details"), "{}", daemon.log());

    // log-level = "debug": the reload's own debug line now shows.
    let debug = setup.client_config("log-level = \"debug\"", &[]);
    let status = daemon.reload(&setup, &debug);
    assert_eq!(status["reload"]["applied"], 2, "{status}");
    daemon.wait_for_log("reload details");

    daemon.stop();
}

#[test]
fn sighup_keeps_the_running_config_when_the_new_one_is_invalid_or_needs_a_restart() {
    let setup = Setup::client(0x47);
    let (_peer_socket, endpoint) = silent_peer();
    let first = setup.write_peer_lease("a.lease", 0x55, SERVER_PREFIX);
    let second = setup.write_peer_lease("b.lease", 0x56, OTHER_PREFIX);
    let one_peer = setup.client_config("", &[("a.lease", endpoint)]);
    let mut daemon = setup.start(&one_peer);
    let keys = |s: &serde_json::Value| -> Vec<String> {
        s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["public_key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(keys(&daemon.status()), [first.to_string()]);
    assert_eq!(daemon.status()["peers"][0]["persistent_keepalive"], 25);

    // Not TOML: refused, counted, named; the daemon runs on unchanged.
    let status = daemon.reload(&setup, "role = \n");
    assert_eq!(status["reload"]["failed"], 1, "{status}");
    let error = status["reload"]["last_error"].as_str().unwrap();
    assert!(error.contains("tunneld.toml"), "{error}");
    assert_eq!(keys(&status), [first.to_string()]);
    assert!(daemon.log().contains("reload refused"));

    // A peer lease that does not verify: refused, naming the key.
    setup.write("bad.lease", b"not a lease", 0o644);
    let bad = setup.client_config("", &[("a.lease", endpoint), ("bad.lease", endpoint)]);
    let status = daemon.reload(&setup, &bad);
    assert_eq!(status["reload"]["failed"], 2, "{status}");
    let error = status["reload"]["last_error"].as_str().unwrap();
    assert!(error.contains("peers[1].lease-file"), "{error}");
    assert_eq!(keys(&status), [first.to_string()]);

    // A key only a restart applies: refused, naming it.
    let mtu = setup.client_config("mtu = 1300", &[("a.lease", endpoint)]);
    let status = daemon.reload(&setup, &mtu);
    assert_eq!(status["reload"]["failed"], 3, "{status}");
    let error = status["reload"]["last_error"].as_str().unwrap();
    assert!(
        error.contains("mtu") && error.contains("restart"),
        "{error}"
    );

    // A valid change: a peer added, keepalives changed, then the first
    // peer removed.
    let two = setup.client_config(
        "persistent-keepalive = 7",
        &[("a.lease", endpoint), ("b.lease", endpoint)],
    );
    let status = daemon.reload(&setup, &two);
    assert_eq!(status["reload"]["applied"], 1, "{status}");
    assert_eq!(status["reload"]["last_error"], serde_json::Value::Null);
    let mut expected = vec![first.to_string(), second.to_string()];
    let mut got = keys(&status);
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    for peer in status["peers"].as_array().unwrap() {
        assert_eq!(peer["persistent_keepalive"], 7, "{peer}");
    }
    let only_second = setup.client_config("", &[("b.lease", endpoint)]);
    let status = daemon.reload(&setup, &only_second);
    assert_eq!(status["reload"]["applied"], 2, "{status}");
    assert_eq!(keys(&status), [second.to_string()]);

    // The failures show in the human status too while they are the last.
    let status = daemon.reload(&setup, "role = \n");
    assert_eq!(status["reload"]["failed"], 4);
    let out = tunneld(&["status", "--socket", daemon.socket_str()], b"");
    let human = text(&out.stdout);
    assert!(
        human.contains("last reload failed (2 applied, 4 failed)"),
        "{human}"
    );

    daemon.stop();
}

/// A client daemon without peers on a lease (serial 1) of `lifetime`
/// seconds; the lease's end as the daemon reports it.
fn client_on_lease(seed: u8, lifetime: u64) -> (Setup, Daemon, u64) {
    let setup = Setup::new(seed);
    setup.write_client_lease(1, lifetime);
    let daemon = setup.start(&setup.client_config("", &[]));
    let end = daemon.status()["lease"]["not_after"].as_u64().unwrap();
    (setup, daemon, end)
}

#[test]
fn a_lease_file_renewed_by_another_tool_keeps_the_daemon_running_past_the_first_lease() {
    // A lease that ends in 3 s: already past its renewal time, inside its
    // warning window.
    let (setup, mut daemon, first_end) = client_on_lease(0x48, 3);
    // The file has nothing newer yet: the daemon says so, loudly.
    daemon.wait_for_log("EXPIRES SOON AND WAS NOT RENEWED");
    assert_eq!(daemon.status()["lease"]["serial"], 1);

    // Another tool renews the file; no signal is sent.
    setup.write_client_lease(2, 3600);
    let status = daemon.wait_for_status("the renewed lease", |s| s["lease"]["serial"] == 2);
    assert!(status["lease"]["not_after"].as_u64().unwrap() > first_end + 3000);
    assert!(daemon.log().contains("lease renewed"), "{}", daemon.log());
    // Renewals are not SIGHUP reloads.
    assert_eq!(status["reload"]["applied"], 0);

    // Past the first lease's end the daemon runs on the renewed one.
    wait_until(
        "the first lease's end",
        TIMEOUT,
        || unix_now() > first_end,
        String::new,
    );
    assert_eq!(daemon.status()["lease"]["serial"], 2);
    assert!(!daemon.log().contains("HAS EXPIRED"), "{}", daemon.log());
    daemon.stop();
}

#[test]
fn an_unrenewed_lease_is_reported_as_expired() {
    let (_setup, mut daemon, end) = client_on_lease(0x49, 2);
    daemon.wait_for_log("THIS NODE'S LEASE HAS EXPIRED");
    assert!(unix_now() >= end);
    // Still running and answering, on the lease it had.
    assert_eq!(daemon.status()["lease"]["serial"], 1);
    daemon.stop();
}

#[test]
fn sighup_changes_who_may_reach_an_application() {
    const APP: &str = "2002:b16:212c:2::80";
    // The backend: skips the PROXY v2 header (52 bytes for TCP over
    // IPv6), echoes 5 bytes.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = backend.accept() {
            let mut buf = [0u8; 57];
            if conn.read_exact(&mut buf).is_ok() {
                let _ = conn.write_all(&buf[52..]);
            }
        }
    });

    let application = |groups: &str| {
        format!(
            "\n[[applications]]\nname = \"echo\"\naddress = \"{APP}\"\nports = [8080]\n\
             backend = \"{backend_addr}\"\nallowed-groups = [\"{groups}\"]"
        )
    };
    let socks = free_tcp_addr();
    let mut pair = Pair::start(
        0x71,
        &application("admins"),
        &format!("socks-listen = \"{socks}\""),
    );

    // The client's lease has group "staff": refused while only "admins"
    // may reach the application. The attempt is abandoned once the server
    // counted it (the client's connect would only time out).
    let mut attempt = TcpStream::connect(socks).unwrap();
    let mut request = vec![5, 1, 0, 5, 1, 0, 4];
    request.extend_from_slice(&APP.parse::<std::net::Ipv6Addr>().unwrap().octets());
    request.extend_from_slice(&8080u16.to_be_bytes());
    attempt.write_all(&request).unwrap();
    let status = pair
        .server_daemon
        .wait_for_status("the SYN to be prohibited", |s| {
            s["dataplane"]["prohibited"].as_u64() > Some(0)
        });
    assert!(
        status["dataplane"]["icmp_sent"].as_u64() > Some(0),
        "{status}"
    );
    assert_eq!(status["reload"]["applied"], 0);
    drop(attempt);

    // Let "staff" in; the next CONNECT reaches the backend.
    let staff = pair.server_config(&application("staff"));
    let status = pair.server_daemon.reload(&pair.server, &staff);
    assert_eq!(status["reload"]["applied"], 1, "{status}");
    let (mut conn, reply) = socks_connect(socks, APP, 8080);
    assert_eq!(reply[1], 0, "{}", pair.client_daemon.log());
    conn.write_all(b"hello").unwrap();
    let mut echo = [0u8; 5];
    conn.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello");

    pair.stop();
}

/// One control-socket request line; the JSON answer.
fn control(socket: &std::path::Path, request: &str) -> serde_json::Value {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    writeln!(stream, "{request}").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

#[test]
fn the_peer_request_answers_with_the_verified_lease_that_holds_the_address() {
    let mut pair = Pair::start(0x75, "", "persistent-keepalive = 1");
    let server = &mut pair.server_daemon;
    server.wait_for_status("the client's handshake", |s| {
        s["peers"].as_array().is_some_and(|p| !p.is_empty())
    });
    let user = CLIENT_PREFIX.trim_end_matches("/128");
    let answer = control(server.socket(), &format!("peer {user}"));
    let lease = &answer["lease"];
    assert_eq!(lease["name"], "node", "{answer}");
    assert_eq!(lease["kind"], "user", "{answer}");
    assert_eq!(lease["address"], CLIENT_PREFIX, "{answer}");
    assert_eq!(lease["groups"], serde_json::json!(["staff"]), "{answer}");
    let now = unix_now();
    let not_after = lease["not_after"].as_u64().unwrap();
    let not_before = lease["not_before"].as_u64().unwrap();
    assert!(not_before <= now && now < not_after, "{answer}");

    // An address no peer's lease holds, and one of the server's own.
    for address in ["2002:b16:212c:1::1235", "2002:b16:212c:2::10"] {
        let answer = control(server.socket(), &format!("peer {address}"));
        assert_eq!(answer, serde_json::json!({ "unknown": address }));
    }
    for bad in ["peer", "peer 192.0.2.1", "peer 2002::1 extra"] {
        let answer = control(server.socket(), bad);
        assert!(answer["error"].is_string(), "{bad}: {answer}");
    }
    pair.stop();
}
