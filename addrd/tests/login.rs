//! The login channel of a real `addrd run`, driven by an in-test
//! `AuthorityClient` over a UDP socket on loopback: logins, refusals and
//! their timing, lockouts, renewals, revocation, directory changes,
//! netmaps, the audit log, with the embedded backend on the example
//! organisation and with a real slapd.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use netns_tests::slapd::{Options, Slapd};
use netns_tests::wait_until;
use overlay_proto::authority::{
    ClientError, LoginNeededReason, MessageError, Request, RequestId, Response,
};
use overlay_proto::handshake::StaticKeypair;
use overlay_proto::lease::{EntityKind, SignedLease};
use serde_json::Value;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::terminal::{lease_of, now, Terminal};
use common::{text, Setup, DEADLINE, EXAMPLE, REFERENCE};

/// The guard's default response floor.
const FLOOR: Duration = Duration::from_secs(1);
const ALICE_PASSWORD: &str = "alice-lab-password";

/// The login tests' config edits: an audit log, lockouts after 3 refusals.
const LOGIN_EDITS: [(&str, &str); 3] = [
    ("lockout-threshold", "lockout-threshold = 3"),
    ("lockout-period", "lockout-period = 60"),
    ("# audit-log", "audit-log = \"audit.log\""),
];

impl Setup {
    /// The reference config with the test paths and [`LOGIN_EDITS`].
    fn new() -> Setup {
        Setup::with_config(REFERENCE)
    }

    fn with_config(reference: &str) -> Setup {
        Setup::with_edits(reference, &LOGIN_EDITS)
    }
}

/// Wait until the guard's delay of a refusal answered at `answered`
/// (`retry_after_secs` in the answer) has passed: until then an attempt
/// is refused without being checked.
fn wait_out_delay(answered: Instant, retry_after_secs: u32) {
    let ready = answered + Duration::from_secs(u64::from(retry_after_secs));
    wait_until(
        "the guard's delay to pass",
        DEADLINE + Duration::from_secs(u64::from(retry_after_secs)),
        || Instant::now() >= ready,
        String::new,
    );
}

/// The answer refusing a renewal for `reason`.
fn login_needed(reason: LoginNeededReason) -> Response {
    Response::LoginNeeded { reason }
}

fn encoding(response: &Response) -> Vec<u8> {
    let mut out = vec![0u8; response.buffer_len()];
    response.emit(RequestId(0), &mut out).unwrap();
    out
}

// ------------------------------------------------------------ embedded

#[test]
fn login_is_permanent_renews_and_is_revoked() {
    let setup = Setup::new();
    let authority = setup.authority();
    let daemon = setup.start_login();
    let alice_address = setup.address_of("alice");

    let mut terminal = Terminal::new(&setup, daemon.channel);
    let ok = terminal.login("alice", ALICE_PASSWORD).unwrap();
    let lease = lease_of(&ok, &authority);
    assert_eq!(lease.lease().public_key, terminal.key().0);
    assert_eq!(lease.lease().kind, EntityKind::User);
    assert_eq!(lease.lease().name, "alice");
    assert_eq!(lease.lease().address().to_string(), alice_address);
    assert!(lease.lease().is_member("staff") && lease.lease().is_member("admins"));

    // Renewal without the password.
    let renewed = terminal.renew(&lease);
    let renewed = lease_of(&renewed, &authority);
    assert!(renewed.lease().serial > lease.lease().serial);
    assert_eq!(renewed.lease().prefix, lease.lease().prefix);

    // Someone else's lease is not renewed on this key.
    let mut other = Terminal::new(&setup, daemon.channel);
    assert_eq!(
        other.renew(&lease),
        login_needed(LoginNeededReason::KeyMismatch)
    );

    let status = setup.status();
    assert_eq!(status["login"]["channel.logins"], 1, "{status}");
    assert_eq!(status["login"]["guard.accepted"], 1, "{status}");
    assert!(status["login"]["server.handshakes"].as_u64().unwrap() >= 2);

    // A login being checked (it takes at least the floor) does not hold up
    // the socket: a renewal is answered meanwhile.
    let channel = daemon.channel;
    let slow = {
        let mut stranger = Terminal::new(&setup, channel);
        std::thread::spawn(move || stranger.login("mallory", "guess").unwrap())
    };
    wait_until(
        "the second login",
        DEADLINE,
        || setup.status()["login"]["channel.logins"] == 2,
        || setup.status().to_string(),
    );
    let start = Instant::now();
    let renewed_again = terminal.renew(&renewed);
    assert!(matches!(renewed_again, Response::Renewed { .. }));
    assert!(
        start.elapsed() < FLOOR,
        "renewal took {:?}",
        start.elapsed()
    );
    assert!(
        !slow.is_finished(),
        "the login was answered before the floor"
    );
    assert!(matches!(
        slow.join().unwrap(),
        Response::LoginRefused { .. }
    ));
    daemon.stop();

    // After a restart, the same key and a new one (a new terminal) get the
    // same address; the old session still renews.
    let daemon = setup.start_login();
    let mut terminal = Terminal::with_key(&setup, daemon.channel, terminal.keypair.clone());
    let again = terminal.login_lease("alice", ALICE_PASSWORD, &authority);
    assert_eq!(again.lease().prefix, lease.lease().prefix);
    let mut fresh = Terminal::new(&setup, daemon.channel);
    let new_key = fresh.login_lease("alice", ALICE_PASSWORD, &authority);
    assert_eq!(new_key.lease().prefix, lease.lease().prefix);
    assert_eq!(new_key.lease().public_key, fresh.key().0);

    // Revoked: no renewal; a new login works.
    setup.addrd_ok(&["revoke", "alice"]);
    let revoked_by = now().unix.as_secs();
    let answer = fresh.renew(&new_key);
    assert_eq!(answer, login_needed(LoginNeededReason::Revoked));
    // The revocation covers sessions started in its second: a login in a
    // later second starts a session it does not cover.
    wait_until(
        "the clock to pass the revocation's second",
        DEADLINE,
        || now().unix.as_secs() > revoked_by,
        String::new,
    );
    let back = fresh.login_lease("alice", ALICE_PASSWORD, &authority);
    assert_eq!(back.lease().prefix, lease.lease().prefix);
    daemon.stop();

    let audit = setup.audit();
    assert!(!audit.contains(ALICE_PASSWORD), "{audit}");
    let mode = fs::metadata(setup.path("audit.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "audit log mode {mode:o}");
    let mut events: Vec<String> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    events.sort();
    let mut expected = [
        "login_accepted",
        "renewal_granted",
        "renewal_refused",
        "renewal_granted",
        "login_refused",
        "login_accepted",
        "login_accepted",
        "revoked",
        "renewal_refused",
        "login_accepted",
    ];
    expected.sort_unstable();
    assert_eq!(events, expected, "{audit}");
}

#[test]
fn refusals_look_alike_take_the_floor_and_lock_out() {
    let setup = Setup::new();
    let daemon = setup.start_login();
    let mut terminal = Terminal::new(&setup, daemon.channel);

    let timed = |terminal: &mut Terminal, user: &str, password: &str| {
        let start = Instant::now();
        let answer = terminal.login(user, password).unwrap();
        (answer, start.elapsed())
    };
    let (wrong, wrong_took) = timed(&mut terminal, "alice", "not-alices-password");
    let (unknown, unknown_took) = timed(&mut terminal, "mallory", "whatever");
    let (disabled, disabled_took) = timed(&mut terminal, "carol", "carol-lab-password");
    assert!(matches!(wrong, Response::LoginRefused { .. }), "{wrong:?}");
    assert_eq!(encoding(&wrong), encoding(&unknown));
    assert_eq!(encoding(&wrong), encoding(&disabled));
    for took in [wrong_took, unknown_took, disabled_took] {
        assert!(took >= FLOOR, "answered after {took:?}");
    }
    // An empty password cannot even be sent: the wire format forbids it.
    assert!(matches!(
        terminal.login("alice", ""),
        Err(ClientError::Encode(MessageError::BadPassword))
    ));

    // bob: growing delays, then a lockout that even his password does not
    // pass.
    let mut retries = Vec::new();
    for attempt in 0..3 {
        let answer = terminal.login("bob", "wrong").unwrap();
        let answered = Instant::now();
        let Response::LoginRefused { retry_after_secs } = answer else {
            panic!("{answer:?}")
        };
        retries.push(retry_after_secs);
        if attempt < 2 {
            wait_out_delay(answered, retry_after_secs);
        }
    }
    assert!(retries[0] < retries[1], "{retries:?}");
    assert!(retries[2] >= 60, "{retries:?}");
    let locked = terminal.login("bob", "bob-lab-password").unwrap();
    assert!(matches!(locked, Response::LoginRefused { retry_after_secs } if retry_after_secs > 1));

    let status = setup.status();
    assert_eq!(status["login"]["guard.lockouts_started"], 1, "{status}");
    daemon.stop();
    let audit = setup.audit();
    for secret in [
        "not-alices-password",
        "carol-lab-password",
        "bob-lab-password",
        "whatever",
    ] {
        assert!(!audit.contains(secret), "{audit}");
    }
    assert!(audit.contains("\"lockout_started\""), "{audit}");
    // One line per event: 3 refusals, 3 for bob, his lockout, the locked
    // attempt.
    assert_eq!(audit.lines().count(), 8, "{audit}");
}

#[test]
fn regrouped_and_disabled_users_lose_access_at_renewal() {
    let setup = Setup::new();
    let authority = setup.authority();
    let daemon = setup.start_login();
    let mut terminal = Terminal::new(&setup, daemon.channel);
    let lease = terminal.login_lease("alice", ALICE_PASSWORD, &authority);
    assert!(lease.lease().is_member("admins"));

    // alice leaves admins.
    let mut without_admin = String::new();
    let mut in_admins = false;
    for line in EXAMPLE.lines() {
        if line.starts_with("dn: ") {
            in_admins = line.starts_with("dn: cn=admins,");
        }
        if !(in_admins && line == "member: uid=alice,ou=people,dc=example,dc=org") {
            without_admin.push_str(line);
            without_admin.push('\n');
        }
    }
    assert_ne!(without_admin, EXAMPLE);
    setup.write("ldap/example-org.ldif", without_admin.as_bytes(), 0o644);
    // Log rotation: the SIGHUP also reopens the audit log.
    fs::rename(setup.path("audit.log"), setup.path("audit.log.1")).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("zone rebuilt", 1);
    let renewed = terminal.renew(&lease);
    let renewed = lease_of(&renewed, &authority);
    assert!(!renewed.lease().is_member("admins"));
    assert!(renewed.lease().is_member("staff"));

    // alice disabled.
    let disabled = without_admin.replacen(
        "dn: uid=alice,ou=people,dc=example,dc=org\n",
        "dn: uid=alice,ou=people,dc=example,dc=org\npermanetDisabled: TRUE\n",
        1,
    );
    assert_ne!(disabled, without_admin);
    setup.write("ldap/example-org.ldif", disabled.as_bytes(), 0o644);
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("zone rebuilt", 2);
    let answer = terminal.renew(&renewed);
    assert_eq!(answer, login_needed(LoginNeededReason::AccountDisabled));
    daemon.stop();
    let rotated = fs::read_to_string(setup.path("audit.log.1")).unwrap();
    assert!(rotated.contains("\"login_accepted\""), "{rotated}");
    assert_eq!(rotated.lines().count(), 1, "{rotated}");
    let audit = setup.audit();
    assert!(audit.contains("\"renewal_granted\""), "{audit}");
    assert!(audit.contains("\"reason\":\"disabled\""), "{audit}");
}

#[test]
fn netmap_lists_the_systems_a_user_may_reach() {
    let setup = Setup::new();
    let authority = setup.authority();
    let daemon = setup.start_login();
    let server_key = StaticKeypair::generate(&mut rand::rngs::OsRng).public();
    setup.write("app1.pub", format!("{server_key}\n").as_bytes(), 0o644);
    let out = setup.issue_lease(
        "app1",
        &setup.path("app1.pub"),
        &setup.path("app1.lease"),
        &["--kind", "system"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let app1 = fs::read(setup.path("app1.lease")).unwrap();

    let mut terminal = Terminal::new(&setup, daemon.channel);
    let ok = terminal.login("alice", ALICE_PASSWORD).unwrap();
    let Response::LoginOk { netmap_version, .. } = ok else {
        panic!("{ok:?}")
    };
    let page = terminal
        .ask(Request::Netmap {
            since_version: 0,
            cursor: 0,
        })
        .unwrap();
    let Response::Netmap(page) = page else {
        panic!("{page:?}")
    };
    assert_eq!(page.version, netmap_version);
    assert_eq!(page.leases.len(), 2, "{page:?}");
    assert_eq!(page.leases[1], app1);
    assert_eq!(page.next_cursor, None);
    let verified = SignedLease::verify(&page.leases[1], &authority, now().unix).unwrap();
    assert_eq!(verified.lease().name, "app1");
    // First, addrd's own lease: the home agent on the overlay, for the
    // channel's static key, at the address `status` shows.
    let own = SignedLease::verify(&page.leases[0], &authority, now().unix).unwrap();
    let own = own.lease();
    assert_eq!(own.name, "addrd");
    assert_eq!(own.kind, EntityKind::System);
    assert_eq!(own.public_key, setup.static_public().0);
    assert_eq!(
        Some(own.address().to_string().as_str()),
        setup.status()["overlay_address"].as_str()
    );
    assert_eq!(own.prefix.to_string(), "fd42:7065:726d::/64");

    // Up to date: an empty page of the same version.
    let same = terminal
        .ask(Request::Netmap {
            since_version: netmap_version,
            cursor: 0,
        })
        .unwrap();
    let Response::Netmap(same) = same else {
        panic!("{same:?}")
    };
    assert_eq!(same.version, netmap_version);
    assert!(same.leases.is_empty());

    // Junk on the channel (no authority message: the home agent's node
    // gets it) is dropped and counted; the daemon answers on.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in [&b""[..], b"\x00", &[0xff; 64], &[0u8; 3000]] {
        junk.send_to(datagram, daemon.channel).unwrap();
    }
    wait_until(
        "4 junk datagrams counted",
        DEADLINE,
        || {
            let status = setup.status();
            let count = |label: &str| status["login"][label].as_u64().unwrap_or(0);
            count("overlay.drop.malformed_datagram") == 2
                && count("overlay.drop.unknown_spi") == 1
                && count("overlay.drop.malformed_control") == 1
        },
        || setup.status().to_string(),
    );

    // A key without a session gets no netmap.
    let mut stranger = Terminal::new(&setup, daemon.channel);
    assert!(matches!(
        stranger
            .ask(Request::Netmap {
                since_version: 0,
                cursor: 0
            })
            .unwrap(),
        Response::LoginNeeded { .. }
    ));
    daemon.stop();
}

// --------------------------------------------------------------- slapd

#[test]
fn login_with_slapd_is_busy_while_it_is_down() {
    let Some(mut slapd) = Slapd::start_or_skip(
        "login_with_slapd_is_busy_while_it_is_down",
        Options::default(),
    ) else {
        return;
    };
    let setup = Setup::with_config(&common::ldap_reference(&slapd));
    let authority = setup.authority();
    let daemon = setup.start_login();
    let mut terminal = Terminal::new(&setup, daemon.channel);
    let lease = terminal.login_lease("alice", ALICE_PASSWORD, &authority);
    assert_eq!(
        lease.lease().address().to_string(),
        setup.address_of("alice")
    );
    // A revocation (in the directory) ends the session at its renewal.
    let mut other = Terminal::new(&setup, daemon.channel);
    let bob = other.login_lease("bob", "bob-lab-password", &authority);
    setup.addrd_ok(&["revoke", "bob"]);
    let answer = other.renew(&bob);
    assert_eq!(answer, login_needed(LoginNeededReason::Revoked));
    let refused = terminal.login("alice", "wrong").unwrap();
    let answered = Instant::now();
    let Response::LoginRefused { retry_after_secs } = refused else {
        panic!("{refused:?}")
    };

    slapd.stop();
    wait_out_delay(answered, retry_after_secs);
    let busy = terminal.login("alice", ALICE_PASSWORD).unwrap();
    assert!(matches!(busy, Response::ServerBusy { .. }), "{busy:?}");
    let renewal = terminal.renew(&lease);
    assert!(
        matches!(renewal, Response::ServerBusy { .. }),
        "{renewal:?}"
    );

    slapd.restart().unwrap();
    let start = Instant::now();
    loop {
        match terminal.login("alice", ALICE_PASSWORD).unwrap() {
            Response::LoginOk { .. } => break,
            Response::ServerBusy { .. } | Response::LoginRefused { .. } => {
                assert!(start.elapsed() < DEADLINE, "{}", daemon.log());
                std::thread::sleep(Duration::from_millis(200));
            }
            other => panic!("{other:?}"),
        }
    }
    daemon.stop();
    let audit = setup.audit();
    assert!(!audit.contains(ALICE_PASSWORD), "{audit}");
    assert!(audit.contains("directory_unavailable"), "{audit}");
}
