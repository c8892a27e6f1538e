//! The whole system in network namespaces (issue #6): real addrd on a
//! real OpenLDAP slapd, a real application server and mobile terminals
//! running tunneld in TUN mode, two carriers' NATs, an impairing relay.
//! The topology is `netns_tests::topology` (picture there and in
//! docs/architecture.md); each test builds its own and tears it down by
//! its guards, also when it fails.
//!
//! Needs root (namespaces, TUN devices, nft) and the `tunneld` and `addrd`
//! binaries built next to this test (`cargo build -p tunneld -p addrd`);
//! otherwise each test reports itself skipped and passes. So do the tests
//! that need wap-adapter, tshark, or kannel's fakewap and socat, without
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netns_tests::relay::Impairment;
use netns_tests::topology::{
    hex, http_get, http_post, http_request, ok, Binaries, CarrierId, Dir, Fetched, Options,
    Progress, World, ALICE_PASSWORD, HTTP_PORT, MARKER,
};
use netns_tests::{skip, skip_unless_root, wait_until, Process, Signal, DEADLINE};
use sha2::{Digest, Sha256};

/// Root and the binaries, or `None` after reporting the test skipped.
fn prerequisites(test: &str) -> Option<Binaries> {
    if skip_unless_root(test) {
        return None;
    }
    Binaries::find_or_skip(test)
}

/// As `prerequisites`, and the wap-adapter built.
fn wap_adapter_prerequisites(test: &str) -> Option<Binaries> {
    let bins = prerequisites(test)?;
    if bins.wap_adapter.is_none() {
        skip(
            test,
            "wap-adapter is not built (cargo build -p wap-adapter)",
        );
        return None;
    }
    Some(bins)
}

/// A world `name` with the wap-adapter in front of the applications,
/// alice (staff) tunnelled on a mobile of carrier A and bob (not staff) on
/// one of carrier B: the world, alice's mobile, her permanent address and
/// bob's mobile.
fn wap_adapter_world(name: &str, bins: &Binaries) -> (World, usize, Ipv6Addr, usize) {
    let mut world = World::start(
        name,
        bins,
        Options {
            wap_adapter: true,
            ..Options::default()
        },
    );
    let a = world.add_mobile(CarrierId::A);
    let alice = connect_alice(&mut world, a);
    let b = world.add_mobile(CarrierId::B);
    ok(
        world.mobiles[b].node.login("bob", "bob-lab-password"),
        "tunneld login (bob)",
    );
    world.mobiles[b].node.start();
    (world, a, alice, b)
}

/// Log mobile `index` in as alice and start its tunneld; returns the
/// permanent address its daemon runs on.
fn connect_alice(world: &mut World, index: usize) -> Ipv6Addr {
    let out = world.mobiles[index].node.login("alice", ALICE_PASSWORD);
    ok(out, "tunneld login (alice)");
    world.mobiles[index].node.start();
    let status = world.mobiles[index].node.status();
    let addresses = status["interface"]["addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("no addresses: {status}"));
    assert_eq!(addresses.len(), 1, "{status}");
    let address = addresses[0].as_str().unwrap();
    address
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{address}: {e}"))
}

/// GET `len` pseudo-random bytes from the wiki through mobile `index` and
/// check them against what the backend sent.
fn download(world: &World, index: usize, len: u64, seed: u64) -> Fetched {
    let path = format!("/bytes/{len}/{seed}");
    let handle = http_get(
        &world.mobiles[index].node.ns,
        world.wiki,
        HTTP_PORT,
        &path,
        Arc::default(),
    );
    let fetched = world
        .join(handle, "download")
        .unwrap_or_else(|e| panic!("download {path}: {e}\n{}", world.logs()));
    verify_download(world, &path, &fetched, len);
    fetched
}

/// The fetched body is the one the backend sent, whole.
fn verify_download(world: &World, path: &str, fetched: &Fetched, len: u64) {
    assert_eq!(fetched.status, "HTTP/1.0 200 OK");
    assert_eq!(fetched.bytes, len, "{path}: short body\n{}", world.logs());
    let served = world.backend.as_ref().unwrap().served();
    let record = served
        .iter()
        .find(|s| s.request.contains(path))
        .unwrap_or_else(|| panic!("the backend did not serve {path}: {served:?}"));
    assert_eq!(record.bytes, len);
    assert_eq!(
        fetched.sha256, record.sha256,
        "{path}: SHA-256 differs from what the backend sent"
    );
}

/// The backend saw `peer` as the client of the request for `path`.
fn assert_client_was(world: &World, path: &str, peer: Ipv6Addr) {
    let served = world.backend.as_ref().unwrap().served();
    let record = served.iter().find(|s| s.request.contains(path)).unwrap();
    assert_eq!(record.peer.ip(), std::net::IpAddr::V6(peer), "{record:?}");
}

/// The endpoint (as a string) of addrd's binding of alice, if any.
fn alice_binding(world: &World) -> Option<String> {
    world
        .home
        .binding_of("alice")
        .and_then(|b| b["endpoint"].as_str().map(str::to_owned))
}

/// A DNS AAAA query for `name` to addrd's overlay address from mobile
/// `index`, through the tunnel; the answer's bytes, or `None` without one
/// within a second.
fn overlay_dns(world: &World, index: usize, name: &str) -> Option<Vec<u8>> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        query.push(u8::try_from(label.len()).unwrap());
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 28, 0, 1]);
    let server = SocketAddr::V6(SocketAddrV6::new(world.addrd_overlay, 53, 0, 0));
    world.mobiles[index].node.ns.run(move || {
        let socket = UdpSocket::bind("[::]:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        socket.send_to(&query, server).ok()?;
        let mut buf = [0u8; 1500];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    })
}

/// The server's report of the peer named `name`.
fn server_peer(world: &World, name: &str) -> Option<serde_json::Value> {
    let status = world.app.status();
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Scenario 1: login through real LDAP; the permanent address is the
/// same from a new terminal with a new key, and after addrd restarts.
#[test]
fn login_through_ldap_keeps_the_permanent_address() {
    let test = "login_through_ldap_keeps_the_permanent_address";
    let Some(bins) = prerequisites(test) else {
        return;
    };
    let started = Instant::now();
    let mut world = World::start("login", &bins, Options::default());

    // A wrong password is refused by the directory.
    let first = world.add_mobile(CarrierId::A);
    let refused = world.mobiles[first]
        .node
        .login("alice", "not-alice's-password");
    assert!(!refused.status.success(), "a wrong password logged in");
    // The refusal starts alice's first delay (the login guard): the next
    // attempt may come once the time it names has passed.
    let answered = Instant::now();
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    let retry_after: u64 = stderr
        .split("try again in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("no retry time in the refusal: {stderr}"));
    let ready = answered + Duration::from_secs(retry_after);
    netns_tests::wait_until(
        "the login guard's delay after the wrong password",
        Duration::from_secs(retry_after + 5),
        || Instant::now() >= ready,
        String::new,
    );

    let alice = connect_alice(&mut world, first);
    assert_eq!(alice, world.home.address_of("alice"));
    let prefix = &world.home.addrd_json(&["status"])["overlay_address"];
    assert!(
        prefix.as_str().unwrap().starts_with("2002:b01:2:"),
        "addrd's /48 is the 6to4 prefix of 11.1.0.2: {prefix}"
    );
    download(&world, first, 100_000, 1);
    assert_client_was(&world, "/bytes/100000/1", alice);
    let first_key = world.mobiles[first].node.status()["interface"]["public_key"].clone();

    // Log out (the terminal goes away), then a new terminal with a new
    // key on the other carrier.
    world.mobiles[first].node.stop();
    let second = world.add_mobile(CarrierId::B);
    assert_eq!(connect_alice(&mut world, second), alice);
    let second_key = world.mobiles[second].node.status()["interface"]["public_key"].clone();
    assert_ne!(first_key, second_key, "a new terminal has a new key");
    download(&world, second, 100_000, 2);
    assert_client_was(&world, "/bytes/100000/2", alice);
    world.mobiles[second].node.stop();

    // addrd restarts: the address lives in the directory.
    world.home.stop_addrd();
    world.home.start_addrd();
    let third = world.add_mobile(CarrierId::A);
    assert_eq!(connect_alice(&mut world, third), alice);
    download(&world, third, 100_000, 3);
    assert_client_was(&world, "/bytes/100000/3", alice);

    // Administrators see it on alice's entry.
    let slapd = world.home.slapd.as_ref().unwrap();
    let search = world
        .home
        .ns
        .command("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-H",
            &slapd.url(),
            "-D",
            netns_tests::slapd::ADMIN_DN,
            "-w",
            netns_tests::slapd::ADMIN_PASSWORD,
            "-b",
            "uid=alice,ou=people,dc=example,dc=org",
            "permanetAddress",
        ])
        .output()
        .unwrap();
    let entry = String::from_utf8_lossy(&search.stdout);
    assert!(
        entry.contains(&format!("permanetAddress: {alice}")),
        "alice's entry: {entry}"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

/// Scenario 3: a 50 MB download continues while the terminal moves from
/// carrier A to carrier B; the server and the home agent follow it.
#[test]
fn roaming_between_carriers_keeps_a_download_going() {
    let test = "roaming_between_carriers_keeps_a_download_going";
    let Some(bins) = prerequisites(test) else {
        return;
    };
    let started = Instant::now();
    let mut world = World::start("roam", &bins, Options::default());
    let m = world.add_mobile(CarrierId::A);
    connect_alice(&mut world, m);
    let carrier_a = format!("{}:", world.carriers[0].public);
    let carrier_b = format!("{}:", world.carriers[1].public);
    world.wait("addrd's binding of alice at carrier A", || {
        overlay_dns(&world, m, "alice.users.permanet.internal").is_some()
            && alice_binding(&world).is_some_and(|e| e.starts_with(&carrier_a))
    });

    const LEN: u64 = 50 * 1024 * 1024;
    let path = format!("/bytes/{LEN}/42");
    // The reader pauses at 10 MB (the connection stalls, its window
    // full), and is let go just before the move: the move happens while
    // the data flows, with 40 MB still to come.
    let progress = Arc::new(Progress::default());
    progress.hold_at.store(10 * 1024 * 1024, Ordering::Relaxed);
    let handle = http_get(
        &world.mobiles[m].node.ns,
        world.wiki,
        HTTP_PORT,
        &path,
        progress.clone(),
    );
    world.wait("10 MB of the download", || {
        progress.received.load(Ordering::Relaxed) >= 10 * 1024 * 1024 || handle.is_finished()
    });
    assert!(server_peer(&world, "alice").unwrap()["endpoint"]
        .as_str()
        .unwrap()
        .starts_with(&carrier_a));
    progress.hold_at.store(u64::MAX, Ordering::Relaxed);
    world.mobiles[m].roam_to(CarrierId::B);
    let at_switch = progress.received.load(Ordering::Relaxed);
    assert!(
        at_switch < LEN - 20 * 1024 * 1024,
        "the move came too late: {at_switch} bytes already"
    );

    let fetched = world
        .join(handle, "the download")
        .unwrap_or_else(|e| panic!("the download broke (reset?): {e}\n{}", world.logs()));
    verify_download(&world, &path, &fetched, LEN);
    let peer = server_peer(&world, "alice").unwrap();
    assert!(
        peer["endpoint"].as_str().unwrap().starts_with(&carrier_b),
        "the server follows alice to carrier B: {peer}"
    );
    // The home agent's binding follows her too, once she talks to addrd
    // (its DNS, through the tunnel) from carrier B.
    world.wait("addrd's binding of alice at carrier B", || {
        overlay_dns(&world, m, "alice.users.permanet.internal").is_some()
            && alice_binding(&world).is_some_and(|e| e.starts_with(&carrier_b))
    });
    eprintln!(
        "{test}: moved at {at_switch} bytes; {:?}",
        started.elapsed()
    );
}

/// Scenario 4 (spoofing): a compromised terminal that sends packets with
/// another user's inner source address gets them dropped and counted;
/// none reaches the application.
#[test]
fn spoofed_inner_sources_are_dropped_and_counted() {
    let test = "spoofed_inner_sources_are_dropped_and_counted";
    let Some(bins) = prerequisites(test) else {
        return;
    };
    let started = Instant::now();
    let mut world = World::start("spoof", &bins, Options::default());
    let m = world.add_mobile(CarrierId::A);
    let alice = connect_alice(&mut world, m);
    let bob = world.home.address_of("bob");
    // Root on alice's terminal: bob's address on its loopback, so the
    // kernel sends with it as the source through alice's tunnel.
    world.mobiles[m].node.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{bob}/128"),
        "dev",
        "lo",
        "nodad",
    ]);
    let wiki = world.wiki;
    let receiver = world
        .app
        .ns
        .run(move || UdpSocket::bind(SocketAddrV6::new(wiki, 9999, 0, 0)))
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    const SPOOFED: u64 = 20;
    world.mobiles[m].node.ns.run(move || {
        let destination = SocketAddrV6::new(wiki, 9999, 0, 0);
        let spoofer = UdpSocket::bind(SocketAddrV6::new(bob, 0, 0, 0)).unwrap();
        let honest = UdpSocket::bind(SocketAddrV6::new(alice, 0, 0, 0)).unwrap();
        for i in 0..SPOOFED {
            spoofer
                .send_to(format!("spoofed {i}").as_bytes(), destination)
                .unwrap();
        }
        for i in 0..5 {
            honest
                .send_to(format!("honest {i}").as_bytes(), destination)
                .unwrap();
        }
    });
    let mut from_alice = 0;
    let mut from_others = Vec::new();
    let mut buf = [0u8; 1500];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut counted = 0;
    while Instant::now() < deadline {
        if let Ok((n, from)) = receiver.recv_from(&mut buf) {
            if from.ip() == std::net::IpAddr::V6(alice) {
                from_alice += 1;
            } else {
                from_others.push((from, String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
        counted = server_peer(&world, "alice")
            .and_then(|p| p["spoofed_sources"].as_u64())
            .unwrap_or(0);
        if from_alice == 5 && counted >= SPOOFED {
            break;
        }
    }
    // Whatever was in flight has arrived or been dropped by now.
    while let Ok((n, from)) = receiver.recv_from(&mut buf) {
        if from.ip() != std::net::IpAddr::V6(alice) {
            from_others.push((from, String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    assert!(from_others.is_empty(), "delivered: {from_others:?}");
    assert_eq!(from_alice, 5, "alice's own datagrams\n{}", world.logs());
    assert_eq!(counted, SPOOFED, "{}", world.logs());
    let status = world.app.status();
    assert!(
        status["drops"]["spoofed_source"].as_u64().unwrap_or(0) >= SPOOFED,
        "server drops: {}",
        status["drops"]
    );

    // The same toward addrd's overlay address (its DNS): addrd's home
    // agent drops and counts them, and answers none.
    let addrd_counter = |name: &str| {
        world.home.addrd_json(&["status"])["login"][name]
            .as_u64()
            .unwrap_or(0)
    };
    let answered_before = addrd_counter("homeagent.dns_answers");
    let overlay = world.addrd_overlay;
    world.mobiles[m].node.ns.run(move || {
        let spoofer = UdpSocket::bind(SocketAddrV6::new(bob, 0, 0, 0)).unwrap();
        for i in 0..SPOOFED {
            let mut query = vec![0, i as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            query.extend_from_slice(
                b"\x05alice\x05users\x08permanet\x08internal\x00\x00\x1c\x00\x01",
            );
            spoofer
                .send_to(&query, SocketAddrV6::new(overlay, 53, 0, 0))
                .unwrap();
        }
    });
    world.wait("addrd to count the spoofed queries", || {
        addrd_counter("overlay.drop.spoofed_source") >= SPOOFED
    });
    assert_eq!(addrd_counter("overlay.drop.spoofed_source"), SPOOFED);
    assert_eq!(
        addrd_counter("homeagent.dns_answers"),
        answered_before,
        "addrd answered a spoofed query"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

/// Scenario 2 (HTTP half) and scenario 4 (access control half): HTTP
/// from terminals behind NAT to applications on their permanent
/// addresses through wap-adapter's HTTP front. The backend receives the
/// verified identity (never the client's forged header); a user outside
/// an application's group gets HTTP 403 from the adapter, or ICMPv6
/// "administratively prohibited" from the tunnel, and the backend sees
/// nothing.
#[test]
fn http_through_the_wap_adapter_with_identity_and_access_control() {
    let test = "http_through_the_wap_adapter_with_identity_and_access_control";
    let Some(bins) = wap_adapter_prerequisites(test) else {
        return;
    };
    let started = Instant::now();
    let (world, a, alice, b) = wap_adapter_world("http", &bins);

    // alice (staff) reads the wiki; her forged identity header is dropped.
    let head = "GET /bytes/5000/11 HTTP/1.1\r\nHost: wiki\r\n\
                X-Permanet-User: mallory\r\nConnection: close\r\n\r\n"
        .to_owned();
    let handle = http_request(
        &world.mobiles[a].node.ns,
        world.wiki,
        HTTP_PORT,
        head,
        Arc::default(),
    );
    let fetched = world.join(handle, "alice's request").unwrap();
    assert!(
        fetched.status.starts_with("HTTP/1.") && fetched.status.contains(" 200 "),
        "{fetched:?}\n{}",
        world.logs()
    );
    assert_eq!(fetched.bytes, 5000);
    let served = world.backend.as_ref().unwrap().served();
    assert_eq!(served.len(), 1, "{served:?}");
    let headers = served[0].headers.join("\n").to_ascii_lowercase();
    assert!(headers.contains("x-permanet-user: alice"), "{headers}");
    assert!(
        headers.contains(&format!("x-permanet-address: {alice}")),
        "{headers}"
    );
    assert!(
        !headers.contains("mallory"),
        "a forged header reached the backend: {headers}"
    );

    // bob (students): grades' adapter admits staff only: 403, no backend.
    let handle = http_get(
        &world.mobiles[b].node.ns,
        world.grades,
        HTTP_PORT,
        "/bytes/10/12",
        Arc::default(),
    );
    let refused = world.join(handle, "bob's request").unwrap();
    assert!(refused.status.contains(" 403"), "{refused:?}");
    // The wiki is staff-only at the tunnel: bob's connection attempt is
    // answered with ICMPv6 "administratively prohibited" at once.
    let wiki = world.wiki;
    let attempt = world.mobiles[b].node.ns.run(move || {
        let t = Instant::now();
        let result = std::net::TcpStream::connect_timeout(
            &SocketAddr::V6(SocketAddrV6::new(wiki, HTTP_PORT, 0, 0)),
            Duration::from_secs(20),
        );
        (result.map(drop), t.elapsed())
    });
    let (result, took) = attempt;
    let error = result.expect_err("bob connected to the staff-only wiki");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::PermissionDenied,
        "ICMPv6 administratively prohibited is EACCES: {error}"
    );
    assert!(
        took < Duration::from_secs(10),
        "refused only after {took:?}"
    );
    let status = world.app.status();
    assert!(
        status["dataplane"]["prohibited"].as_u64().unwrap_or(0) >= 1,
        "{}",
        status["dataplane"]
    );
    assert_eq!(
        world.backend.as_ref().unwrap().served().len(),
        1,
        "the backend saw bob"
    );
    eprintln!("{test}: {:?}", started.elapsed());
}

/// kannel's WAP client simulator (Debian package `kannel-extras`).
const FAKEWAP: &str = "/usr/lib/kannel/test/fakewap";

/// What one fakewap run reported (its log) and wrote (the reply's body).
struct FakewapRun {
    status: ExitStatus,
    log: String,
    output: Vec<u8>,
}

impl FakewapRun {
    /// Replies fakewap reported with HTTP status `status` (it prints the
    /// HTTP form of the WSP status: 0x43 is 403): a 200 as `Received WSP
    /// Reply with status code 200OK`, anything else as a warning.
    fn replies(&self, status: &str) -> usize {
        self.log
            .matches(&format!("Received WSP Reply with status code {status}"))
            .count()
            + self
                .log
                .matches(&format!("received reply with status {status}"))
                .count()
    }

    fn assert_complete(&self, what: &str) {
        assert!(
            self.status.success() && self.log.contains("fakewap: complete."),
            "{what}: fakewap failed ({}):\n{}",
            self.status,
            self.log
        );
    }
}

/// Run fakewap on mobile `index` against the WAP front at
/// `[address]:port` (9200: WSP connectionless, 9201: WSP over WTP), with
/// `args` and `url`. fakewap speaks IPv4 only, so it talks to a socat on
/// the terminal's loopback that carries each datagram as UDP over IPv6 to
/// the application's permanent address — through the terminal's TUN
/// device and its tunnel, from the terminal's own permanent address — and
/// the answers back. Both are killed (by PID) when this returns or fails.
fn fakewap_through_socat(
    world: &World,
    index: usize,
    address: Ipv6Addr,
    port: u16,
    args: &[&str],
    url: &str,
) -> FakewapRun {
    let ns = &world.mobiles[index].node.ns;
    let dir = Dir::new();
    let mut command = ns.command("socat");
    command.args([
        "-d".to_owned(),
        "-d".to_owned(),
        format!("UDP4-LISTEN:{port},bind=127.0.0.1,reuseaddr"),
        format!("UDP6:[{address}]:{port}"),
    ]);
    let mut socat = Process::start("socat", command, dir.path("socat.log"));
    socat.wait_for_log("listening on");
    let mut command = ns.command(FAKEWAP);
    command
        .args([
            "-g",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            "0",
            "-D",
            "1",
        ])
        .arg("-w")
        .arg(dir.path("reply.out"))
        .args(args)
        .arg(url);
    let mut fakewap = Process::start("fakewap", command, dir.path("fakewap.log"));
    let mut status = None;
    wait_until(
        &format!("fakewap {args:?} {url} to finish"),
        DEADLINE,
        || {
            status = fakewap.try_wait();
            status.is_some()
        },
        || {
            let log = std::fs::read_to_string(dir.path("fakewap.log")).unwrap_or_default();
            format!("--- fakewap ---\n{log}\n{}\n{}", socat.log(), world.logs())
        },
    );
    drop(socat);
    FakewapRun {
        status: status.unwrap(),
        log: std::fs::read_to_string(dir.path("fakewap.log")).unwrap_or_default(),
        output: std::fs::read(dir.path("reply.out")).unwrap_or_default(),
    }
}

/// The counters wap-adapter logged at exit for `application`.
fn adapter_counters(log: &str, application: &str) -> HashMap<String, u64> {
    let line = log
        .lines()
        .find(|l| {
            l.contains("stopped")
                && l.contains(&format!("application={application}"))
                && l.contains("counters=")
        })
        .unwrap_or_else(|| panic!("no counters logged for {application}:\n{log}"));
    line.split_whitespace()
        .map(|t| t.trim_start_matches("counters="))
        .filter_map(|t| t.split_once('='))
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Scenario 2 (WAP half) and scenario 4 (access control on WAP): kannel's
/// independent WAP client simulator on terminals behind the carriers' NATs
/// reaches applications on their permanent addresses through wap-adapter's
/// WAP front (TUN mode: bound directly on the applications' addresses):
/// a connectionless GET, a connection-oriented GET and a POST, with the
/// verified identity at the backend. A user outside an application's
/// groups gets WSP 0x43 (403) from the adapter on both layers where only
/// the adapter restricts it (grades), and ICMPv6 "administratively
/// prohibited" from the tunnel where the tunnel does (the wiki); the
/// backend sees nothing of him.
#[test]
fn wap_through_the_simulator_with_identity_and_access_control() {
    let test = "wap_through_the_simulator_with_identity_and_access_control";
    let Some(bins) = wap_adapter_prerequisites(test) else {
        return;
    };
    if !Path::new(FAKEWAP).is_file() {
        skip(
            test,
            &format!("{FAKEWAP} is not installed (apt-get install kannel-extras)"),
        );
        return;
    }
    if !Path::new("/usr/bin/socat").is_file() {
        skip(test, "socat is not installed (apt-get install socat)");
        return;
    }
    let started = Instant::now();
    let (mut world, a, alice, b) = wap_adapter_world("wap", &bins);
    let wiki = world.wiki;
    let url = |path: &str| format!("http://wiki.apps.permanet.internal{path}");

    // The backend's record of `path`: alice's identity from the server's
    // tunneld (the adapter reached it from its own loopback address), and
    // the body fakewap wrote is the one the backend sent.
    let check = |path: &str| {
        let served = world.backend.as_ref().unwrap().served();
        let record = served
            .iter()
            .find(|s| s.request.contains(path))
            .unwrap_or_else(|| panic!("the backend did not serve {path}: {served:?}"));
        let headers = record.headers.join("\n").to_ascii_lowercase();
        assert!(headers.contains("x-permanet-user: alice"), "{headers}");
        assert!(
            headers.contains(&format!("x-permanet-address: {alice}")),
            "{headers}"
        );
        assert!(headers.contains("x-permanet-groups: "), "{headers}");
        record.clone()
    };

    // WSP connectionless (UDP 9200).
    let path = "/bytes/600/21";
    let run = fakewap_through_socat(&world, a, wiki, 9200, &["-M", "0"], &url(path));
    run.assert_complete("connectionless GET");
    assert_eq!(run.replies("200"), 1, "{}", run.log);
    let record = check(path);
    assert_eq!(run.output.len(), 600, "{}", run.log);
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&run.output)), record.sha256);

    // WSP over WTP (UDP 9201): Connect, Get, Disconnect.
    let path = "/bytes/1000/22";
    let run = fakewap_through_socat(&world, a, wiki, 9201, &["-M", "1"], &url(path));
    run.assert_complete("connection-oriented GET");
    assert_eq!(run.replies("200"), 1, "{}", run.log);
    let record = check(path);
    assert_eq!(run.output.len(), 1000, "{}", run.log);
    assert_eq!(<[u8; 32]>::from(Sha256::digest(&run.output)), record.sha256);

    // A POST over WTP: the backend answers the body's SHA-256.
    let dir = Dir::new();
    let content = b"name=alice&note=through+permanet\n".repeat(12);
    let input = dir.write("post.txt", &content, 0o644);
    let input = input.to_string_lossy().into_owned();
    let run = fakewap_through_socat(
        &world,
        a,
        wiki,
        9201,
        &["-M", "1", "-P", &input, "-C", "text"],
        &url("/sha256"),
    );
    run.assert_complete("connection-oriented POST");
    assert_eq!(run.replies("200"), 1, "{}", run.log);
    assert_eq!(
        String::from_utf8_lossy(&run.output),
        hex(&Sha256::digest(&content)),
        "the backend's SHA-256 of the posted body"
    );
    let record = check("/sha256");
    assert_eq!(record.bytes, content.len() as u64);
    assert_eq!(world.backend.as_ref().unwrap().served().len(), 3);

    // bob (students) asks grades, staff-only in the adapter (the tunnel
    // lets him through): WSP 0x43 on both layers, the backend untouched.
    let grades = world.grades;
    for (mode, port) in [("0", 9200), ("1", 9201)] {
        let run = fakewap_through_socat(
            &world,
            b,
            grades,
            port,
            &["-M", mode, "-F"],
            "http://grades.apps.permanet.internal/bytes/10/23",
        );
        // fakewap prints the HTTP form of the WSP status: 0x43 is 403.
        assert_eq!(run.replies("403"), 1, "mode {mode}: {}", run.log);
        assert_eq!(run.replies("200"), 0, "mode {mode}: {}", run.log);
    }
    // The wiki is staff-only at the tunnel itself: bob's WSP Get to it is
    // answered with ICMPv6 "administratively prohibited" by the server's
    // tunneld (a connected UDP socket reports EACCES), counted there, and
    // never reaches the adapter.
    let prohibited = |world: &World| {
        world.app.status()["dataplane"]["prohibited"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = prohibited(&world);
    let refused = world.mobiles[b].node.ns.run(move || {
        let socket = UdpSocket::bind("[::]:0").unwrap();
        socket.connect(SocketAddrV6::new(wiki, 9200, 0, 0)).unwrap();
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        // WSP connectionless Get (TID 1) of "/".
        socket.send(&[0x01, 0x40, 0x01, b'/']).unwrap();
        socket.recv(&mut [0u8; 1500])
    });
    let error = refused.expect_err("bob's WSP Get to the staff-only wiki was answered");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::PermissionDenied,
        "ICMPv6 administratively prohibited is EACCES: {error}"
    );
    assert!(prohibited(&world) > before, "{}", world.app.status());
    assert_eq!(
        world.backend.as_ref().unwrap().served().len(),
        3,
        "the backend saw bob"
    );

    // wap-adapter's own account, logged at exit: three sessions on the
    // wiki, one on grades, bob's two requests refused by group.
    let mut adapter = world.wap_adapter.take().unwrap();
    let status = adapter.stop(Signal::SIGTERM);
    let log = adapter.log();
    assert!(
        status.success(),
        "wap-adapter after SIGTERM: {status}\n{log}"
    );
    let wiki_counters = adapter_counters(&log, "wiki");
    let grades_counters = adapter_counters(&log, "grades");
    assert_eq!(wiki_counters["wap_sessions_opened"], 2, "{wiki_counters:?}");
    assert_eq!(wiki_counters["wap_sessions_disconnected"], 2);
    assert_eq!(wiki_counters["wap_malformed"], 0, "{wiki_counters:?}");
    assert_eq!(
        wiki_counters["wap_requests"], 3,
        "bob's datagram never arrived"
    );
    assert_eq!(grades_counters["forbidden_group"], 2, "{grades_counters:?}");
    assert_eq!(grades_counters["wap_sessions_opened"], 1);
    eprintln!("{test}: {:?}", started.elapsed());
}

/// Scenario 5: 5 % loss, reordering and duplication on the path (the
/// relay, both directions): transfers both ways complete and verify.
#[test]
fn transfers_survive_loss_reordering_and_duplication() {
    let test = "transfers_survive_loss_reordering_and_duplication";
    let Some(bins) = prerequisites(test) else {
        return;
    };
    let started = Instant::now();
    let impairment = Impairment {
        loss_percent: 5,
        reorder_percent: 5,
        duplicate_percent: 2,
        seed: 0x5eed,
    };
    let mut world = World::start(
        "lossy",
        &bins,
        Options {
            relay: Some(impairment),
            ..Options::default()
        },
    );
    let m = world.add_mobile(CarrierId::A);
    connect_alice(&mut world, m);
    download(&world, m, 16 * 1024 * 1024, 5);
    let upload = http_post(
        &world.mobiles[m].node.ns,
        world.wiki,
        HTTP_PORT,
        8 * 1024 * 1024,
        6,
    );
    let (answer, sent) = world
        .join(upload, "the upload")
        .unwrap_or_else(|e| panic!("the upload: {e}\n{}", world.logs()));
    assert_eq!(answer.status, "HTTP/1.0 200 OK");
    assert_eq!(
        String::from_utf8_lossy(&answer.head),
        netns_tests::topology::hex(&sent),
        "the server's SHA-256 of the upload"
    );
    // The path really was impaired, and the tunnel really went through it.
    let relay = world.relay.as_ref().unwrap();
    let counters = relay.counters();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    assert!(get(&counters.forwarded) > 3000, "{:?}", counters.snapshot());
    assert!(get(&counters.dropped) > 100, "{:?}", counters.snapshot());
    assert!(get(&counters.reordered) > 100, "{:?}", counters.snapshot());
    assert!(get(&counters.duplicated) > 20, "{:?}", counters.snapshot());
    let peer = server_peer(&world, "alice").unwrap();
    assert!(
        peer["endpoint"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", netns_tests::topology::RELAY_V4)),
        "the server reaches alice through the relay: {peer}"
    );
    // Duplicates are refused by the anti-replay window, and counted.
    let duplicates = |status: serde_json::Value| {
        status["drops"]["esp_replay_duplicate"]
            .as_u64()
            .unwrap_or(0)
    };
    let refused = duplicates(world.app.status()) + duplicates(world.mobiles[m].node.status());
    assert!(refused > 0, "no duplicate refused\n{}", world.logs());
    eprintln!(
        "{test}: relay {:?}; {:?}",
        counters.snapshot(),
        started.elapsed()
    );
}

/// Scenario 6: with the directory down, existing tunnels keep working and
/// new logins fail with a clear error; they work again once it is back.
#[test]
fn ldap_down_keeps_tunnels_and_refuses_logins_until_it_returns() {
    let test = "ldap_down_keeps_tunnels_and_refuses_logins_until_it_returns";
    let Some(bins) = prerequisites(test) else {
        return;
    };
    let started = Instant::now();
    let mut world = World::start("ldapdown", &bins, Options::default());
    let first = world.add_mobile(CarrierId::A);
    let alice = connect_alice(&mut world, first);

    world.home.stop_ldap();
    download(&world, first, 5 * 1024 * 1024, 7);
    let second = world.add_mobile(CarrierId::B);
    let refused = world.mobiles[second].node.login("alice", ALICE_PASSWORD);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "logged in without a directory");
    assert!(
        stderr.contains("directory is unreachable"),
        "the error says why: {stderr}"
    );
    assert!(
        !stderr.contains("refused"),
        "not a refusal that looks like a wrong password: {stderr}"
    );

    world.home.restart_ldap();
    let mut attempts = 0;
    world.wait("a login once the directory is back", || {
        attempts += 1;
        world.mobiles[second]
            .node
            .login("alice", ALICE_PASSWORD)
            .status
            .success()
    });
    world.mobiles[second].node.start();
    download(&world, second, 1024 * 1024, 8);
    assert_client_was(&world, "/bytes/1048576/8", alice);
    eprintln!(
        "{test}: {attempts} login attempt(s) after the restart; {:?}",
        started.elapsed()
    );
}

/// Scenario 7: on the internet router the traffic is UDP-encapsulated
/// ESP on port 4500 and the plaintext never appears; on the server's TUN
/// device (the control) it does.
#[test]
fn on_the_wire_only_esp_and_no_plaintext() {
    let test = "on_the_wire_only_esp_and_no_plaintext";
    let Some(bins) = prerequisites(test) else {
        return;
    };
    if !std::path::Path::new("/usr/bin/tshark").is_file() {
        skip(test, "tshark is not installed (apt-get install tshark)");
        return;
    }
    let started = Instant::now();
    let mut world = World::start("wire", &bins, Options::default());
    let m = world.add_mobile(CarrierId::A);
    connect_alice(&mut world, m);
    // Something first, so the capture holds a running tunnel, not only
    // its handshake.
    download(&world, m, 10_000, 9);

    let dir = netns_tests::topology::Dir::new();
    let capture = |ns: &netns_tests::Netns, device: &str, file: &str, buffer_mib: &str| {
        let mut command = ns.command("tshark");
        command
            .args(["-n", "-B", buffer_mib, "-i", device, "-w"])
            .arg(dir.path(file));
        let mut process = Process::start(
            &format!("tshark on {device}"),
            command,
            dir.path(&format!("{file}.log")),
        );
        process.wait_for_log("Capturing on");
        process
    };
    // On the wire a 64 MiB capture buffer: with the default 2 MiB a busy
    // machine drops frames, and the byte count below must see them all.
    let mut wire = capture(&world.inet, "app", "wire.pcapng", "64");
    let mut tun = capture(&world.app.ns, "permanet0", "tun.pcapng", "2");
    const LEN: u64 = 2 * 1024 * 1024;
    let path = format!("/marker/{LEN}/0");
    let handle = http_get(
        &world.mobiles[m].node.ns,
        world.wiki,
        HTTP_PORT,
        &path,
        Arc::default(),
    );
    let fetched = world.join(handle, "the marker download").unwrap();
    assert_eq!(fetched.bytes, LEN);
    assert!(fetched.head.starts_with(MARKER));
    for tshark in [&mut wire, &mut tun] {
        tshark.stop(Signal::SIGTERM);
    }

    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let wire_bytes = std::fs::read(dir.path("wire.pcapng")).unwrap();
    let tun_bytes = std::fs::read(dir.path("tun.pcapng")).unwrap();
    assert!(
        contains(&tun_bytes, MARKER),
        "the control capture on the TUN device shows the plaintext"
    );
    assert!(
        !contains(&wire_bytes, &MARKER[..12]),
        "plaintext on the wire"
    );

    let fields = std::process::Command::new("tshark")
        .args(["-n", "-r"])
        .arg(dir.path("wire.pcapng"))
        .args([
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-e",
            "frame.protocols",
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "esp.spi",
            "-e",
            "frame.len",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&fields.stdout);
    let mut esp = 0;
    let mut bytes = 0u64;
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 5, "tshark line {line:?}");
        let protocols = cols[0];
        // The link's own IPv4 ARP and IPv6 neighbour discovery / MLD.
        if protocols == "eth:ethertype:arp"
            || (protocols.starts_with("eth:ethertype:ipv6:") && protocols.ends_with("icmpv6"))
        {
            continue;
        }
        assert!(
            protocols.starts_with("eth:ethertype:ip:udp"),
            "not UDP over IPv4: {line}"
        );
        assert!(
            cols[1] == "4500" || cols[2] == "4500",
            "not on port 4500: {line}"
        );
        if protocols.ends_with(":esp") {
            let spi = cols[3].trim_start_matches("0x");
            let spi = u32::from_str_radix(spi, 16).unwrap_or(0);
            assert!(spi >= 256, "ESP with SPI {spi}: {line}");
            esp += 1;
            bytes += cols[4].parse::<u64>().unwrap_or(0);
        }
    }
    // tunneld sends with UDP GSO: one captured frame may be a batch of
    // datagrams (tshark decodes the first); the bytes count them all.
    assert!(
        esp >= 20 && bytes > LEN,
        "{esp} ESP packets, {bytes} bytes on the wire:\n{}",
        &text[..text.len().min(2000)]
    );
    eprintln!("{test}: {esp} ESP packets; {:?}", started.elapsed());
}
