//! `tunneld login` and `tunneld run` with `[addrd]`, against a fake addrd
//! (the real authority channel server on loopback, answering from a state
//! the test sets: [`common::addrd`]).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use netns_tests::{authority, unix_now, wait_until};
use overlay_proto::handshake::StaticKeypair;
use overlay_proto::lease::{EntityKind, SignedLease};
use overlay_proto::time::UnixTime;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::addrd::FakeAddrd;
use common::daemon::{silent_peer, text, tunneld, Setup, BIN, SERVER_PREFIX, TIMEOUT};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

/// A netmap of `n` system leases (keys `[0x70 + i; 32]`, prefixes
/// `2002:b16:212c:1i::/64`); their public keys.
fn netmap(n: u8) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut leases = Vec::new();
    let mut keys = Vec::new();
    for i in 0..n {
        let key = StaticKeypair::from_private([0x70 + i; 32]).public();
        let prefix = format!("2002:b16:212c:1{i}::/64");
        leases.push(netns_tests::lease(
            EntityKind::System,
            &prefix,
            key,
            &format!("srv{i}"),
            &["staff"],
        ));
        keys.push(key.to_string());
    }
    assert_ne!(SERVER_PREFIX, "2002:b16:212c:10::/64");
    (leases, keys)
}

/// A client directory without a lease, its config pinning `addrd`.
fn client(seed: u8, addrd: &FakeAddrd) -> Setup {
    let setup = Setup::new(seed);
    let config = setup.client_config(&addrd.config_table(), &[]);
    setup.write("tunneld.toml", config.as_bytes(), 0o644);
    setup
}

/// `tunneld login --password-stdin` for `setup` with `password` on stdin.
fn login(setup: &Setup, user: &str, password: &str, extra: &[&str]) -> std::process::Output {
    let config = setup.path("tunneld.toml");
    let socket = setup.path("tunneld.sock");
    let mut args = vec![
        "login",
        "--config",
        config.to_str().unwrap(),
        "--user",
        user,
        "--password-stdin",
        "--socket",
        socket.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    tunneld(&args, format!("{password}\n").as_bytes())
}

fn verify(path: &Path) -> SignedLease {
    let bytes = std::fs::read(path).unwrap();
    SignedLease::verify(
        &bytes,
        &authority().public_key(),
        UnixTime::from_secs(unix_now()),
    )
    .unwrap()
}

/// Every file under `dir` (recursively) must not contain `needle`.
fn assert_nowhere(dir: &Path, needle: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_nowhere(&path, needle);
        } else if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the password is in {}",
                path.display()
            );
        }
    }
}

#[test]
fn login_writes_a_verified_lease_and_netmap_and_run_starts_with_them() {
    let addrd = FakeAddrd::start(0x60, USER, PASSWORD.as_bytes());
    let (leases, keys) = netmap(2);
    addrd.state().netmap = leases;
    let setup = client(0x61, &addrd);

    // The password goes to stdin: while login waits for it, neither its
    // argv nor its environment holds it.
    let config = setup.path("tunneld.toml");
    let mut child = Command::new(BIN)
        .args(["login", "--user", USER, "--password-stdin", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(setup.path("tunneld.sock"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let proc_dir = format!("/proc/{}", child.id());
    // Once the child runs tunneld (not the forked test binary any more).
    let mut cmdline = Vec::new();
    wait_until(
        "login's argv in /proc",
        TIMEOUT,
        || {
            cmdline = std::fs::read(format!("{proc_dir}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("--password-stdin")
        },
        || format!("/proc/{}/cmdline", child.id()),
    );
    let environ = std::fs::read(format!("{proc_dir}/environ")).unwrap();
    assert!(!environ.is_empty());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for bytes in [&cmdline, &environ] {
        assert!(!bytes
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes()));
    }
    assert!(stdout.contains("logged in as alice"), "{stdout}");
    assert!(stdout.contains("2 peer lease(s)"), "{stdout}");
    assert!(stdout.contains("no daemon running"), "{stdout}");

    // The lease verifies, is for this node's key, and is public (0644).
    let lease_path = setup.path("tunneld.lease");
    let lease = verify(&lease_path);
    assert_eq!(lease.lease().public_key, setup.keypair.public().0);
    assert_eq!(lease.lease().serial, 1);
    let mode = std::fs::metadata(&lease_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    // The netmap cache: length-prefixed leases, both verified.
    let cache = std::fs::read(setup.path("tunneld.lease.netmap")).unwrap();
    let first = usize::from(u16::from_be_bytes([cache[0], cache[1]]));
    assert!(cache.len() > 2 + first + 2);
    assert_eq!(addrd.state().requests, ["login", "netmap", "netmap"]);

    // The daemon starts on that lease, with the netmap's peers.
    let mut daemon = setup.start(&std::fs::read_to_string(&config).unwrap());
    let status = daemon.status();
    assert_eq!(status["lease"]["serial"], 1);
    let peers: Vec<String> = status["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["public_key"].as_str().unwrap().to_owned())
        .collect();
    for key in &keys {
        assert!(peers.contains(key), "{peers:?}");
    }
    assert!(status.get("login_needed").is_none());
    daemon.stop();
    assert_nowhere(setup.path("").as_path(), PASSWORD.as_bytes());
}

#[test]
fn a_refused_login_prints_the_refusal_and_writes_nothing() {
    let addrd = FakeAddrd::start(0x62, USER, PASSWORD.as_bytes());
    let setup = client(0x63, &addrd);
    let out = login(&setup, USER, "wrong password", &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("login refused"), "{stderr}");
    assert!(stderr.contains("try again in 7 s"), "{stderr}");
    assert!(!setup.path("tunneld.lease").exists());
    assert!(!setup.path("tunneld.lease.netmap").exists());
    // An unknown user gets the same answer.
    let out = login(&setup, "mallory", PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_nowhere(setup.path("").as_path(), b"wrong password");
}

#[test]
fn an_unreachable_addrd_times_out_naming_the_pinned_key() {
    // Nobody answers there.
    let (_silent, endpoint) = silent_peer();
    let setup = Setup::new(0x64);
    let pinned = StaticKeypair::from_private([0x65; 32]).public();
    let config = setup.client_config(
        &format!("\n[addrd]\nendpoint = \"{endpoint}\"\npublic-key = \"{pinned}\"\n"),
        &[],
    );
    setup.write("tunneld.toml", config.as_bytes(), 0o644);
    let started = std::time::Instant::now();
    let out = login(&setup, USER, PASSWORD, &["--timeout", "2"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(started.elapsed() < TIMEOUT);
    assert!(stderr.contains("did not answer within 2 s"), "{stderr}");
    assert!(stderr.contains(&pinned.to_string()), "{stderr}");
    assert!(!setup.path("tunneld.lease").exists());
}

#[test]
fn a_wrong_pinned_addrd_key_never_completes_the_handshake() {
    let addrd = FakeAddrd::start(0x66, USER, PASSWORD.as_bytes());
    let setup = Setup::new(0x67);
    let wrong = StaticKeypair::from_private([0x68; 32]).public();
    let config = setup.client_config(
        &format!(
            "\n[addrd]\nendpoint = \"{}\"\npublic-key = \"{wrong}\"\n",
            addrd.endpoint
        ),
        &[],
    );
    setup.write("tunneld.toml", config.as_bytes(), 0o644);
    let out = login(&setup, USER, PASSWORD, &["--timeout", "2"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&wrong.to_string()), "{stderr}");
    // The password was never sent: no request reached the fake.
    assert!(addrd.state().requests.is_empty());
}

#[test]
fn a_running_daemon_renews_through_addrd_and_adds_the_netmap_peers() {
    let addrd = FakeAddrd::start(0x69, USER, PASSWORD.as_bytes());
    {
        let mut state = addrd.state();
        // Past its renewal time at once: the daemon renews right away.
        state.login_lifetime = 3;
        state.netmap = netmap(1).0;
    }
    let setup = client(0x6a, &addrd);
    let out = login(&setup, USER, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A peer that joins after the login: the renewal's netmap brings it.
    // The first is also configured with its own keepalive, which the
    // netmap must not replace.
    let (leases, keys) = netmap(2);
    setup.write("srv0.lease", &leases[0], 0o644);
    addrd.state().netmap = leases;
    let config = setup.client_config(
        &format!(
            "{}
[[peers]]
lease-file = \"srv0.lease\"
persistent-keepalive = 7
",
            addrd.config_table()
        ),
        &[],
    );
    let mut daemon = setup.start(&config);
    let status = daemon.wait_for_status("the lease renewed through addrd", |s| {
        s["lease"]["serial"].as_u64().unwrap() >= 2 && s["peers"].as_array().unwrap().len() == 2
    });
    let peers = status["peers"].to_string();
    for key in &keys {
        assert!(peers.contains(key), "{peers}");
    }
    for peer in status["peers"].as_array().unwrap() {
        let keepalive = &peer["persistent_keepalive"];
        if peer["public_key"] == keys[0].as_str() {
            assert_eq!(keepalive, 7, "{peer}");
        } else {
            assert_ne!(keepalive, 7, "{peer}");
        }
    }
    assert!(status["lease"]["not_after"].as_u64().unwrap() > unix_now() + 3000);
    // The renewed lease and netmap were saved for the next start.
    let saved = setup.path("tunneld.lease");
    wait_until(
        "the renewed lease on disk",
        TIMEOUT,
        || verify(&saved).lease().serial >= 2,
        || daemon.log(),
    );
    assert!(addrd.state().requests.contains(&"renew"));
    assert!(daemon.log().contains("lease renewed"), "{}", daemon.log());
    daemon.stop();
}

#[test]
fn login_needed_shows_in_status_and_a_new_login_reaches_the_running_daemon() {
    let addrd = FakeAddrd::start(0x6b, USER, PASSWORD.as_bytes());
    {
        let mut state = addrd.state();
        state.login_lifetime = 3;
        state.login_needed = true;
    }
    let setup = client(0x6c, &addrd);
    let out = login(&setup, USER, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut daemon = setup.start(&std::fs::read_to_string(setup.path("tunneld.toml")).unwrap());
    let status = daemon.wait_for_status("login needed in status", |s| {
        s.get("login_needed").is_some()
    });
    assert_eq!(status["login_needed"], "Revoked");
    let human = tunneld(&["status", "--socket", daemon.socket_str()], b"");
    assert!(
        text(&human.stdout).contains("login needed"),
        "{}",
        text(&human.stdout)
    );

    // The user logs in again while the daemon runs: login asks it to
    // reload, it takes the new lease, and renewals work again.
    addrd.state().login_needed = false;
    let out = login(&setup, USER, PASSWORD, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("is reloading"), "{stdout}");
    let status = daemon.wait_for_status("login needed cleared", |s| {
        s.get("login_needed").is_none() && s["lease"]["serial"].as_u64().unwrap() >= 3
    });
    assert!(status["reload"]["applied"].as_u64().unwrap() >= 1);
    daemon.stop();
    assert_nowhere(setup.path("").as_path(), PASSWORD.as_bytes());
}

#[test]
fn run_before_login_says_to_log_in() {
    let addrd = FakeAddrd::start(0x6d, USER, PASSWORD.as_bytes());
    let setup = client(0x6e, &addrd);
    let mut daemon = setup.spawn(&std::fs::read_to_string(setup.path("tunneld.toml")).unwrap());
    assert_eq!(daemon.wait_exit().code(), Some(1));
    let log = daemon.log();
    assert!(
        log.contains("lease-file") && log.contains("tunneld login --config"),
        "{log}"
    );
}

#[test]
fn a_lease_for_another_key_is_refused_and_not_written() {
    let addrd = FakeAddrd::start(0x6f, USER, PASSWORD.as_bytes());
    let other = StaticKeypair::from_private([0x5f; 32]).public();
    addrd.state().lease_key = Some(other);
    let setup = client(0x5e, &addrd);
    let out = login(&setup, USER, PASSWORD, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is for public key") && stderr.contains(&other.to_string()),
        "{stderr}"
    );
    assert!(!setup.path("tunneld.lease").exists());
    assert!(!setup.path("tunneld.lease.netmap").exists());
}

#[test]
fn a_peer_the_netmap_no_longer_lists_is_removed() {
    let addrd = FakeAddrd::start(0x5d, USER, PASSWORD.as_bytes());
    let (leases, keys) = netmap(2);
    {
        let mut state = addrd.state();
        state.login_lifetime = 3;
        state.netmap = leases.clone();
    }
    let setup = client(0x5c, &addrd);
    let out = login(&setup, USER, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // srv0 leaves before the daemon's first renewal.
    addrd.state().netmap = vec![leases[1].clone()];
    let mut daemon = setup.start(&std::fs::read_to_string(setup.path("tunneld.toml")).unwrap());
    // Both were in the node from the cache at start-up.
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("peers added from the netmap cache") && l.contains("peers=2")),
        "{log}"
    );
    let status = daemon.wait_for_status("srv0 removed by the renewal's netmap", |s| {
        s["lease"]["serial"].as_u64().unwrap() >= 2 && s["peers"].as_array().unwrap().len() == 1
    });
    assert_eq!(status["peers"][0]["public_key"], keys[1].as_str());
    daemon.stop();
}
