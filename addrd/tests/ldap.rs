//! The LDAP backend against a real OpenLDAP slapd (netns_tests::slapd):
//! the example organisation, a server that allows anonymous binds with a
//! DN (so a missing empty-password check fails here), the memberof
//! overlay on and off, the server stopped and restarted, replicas racing
//! for addresses, and TLS (StartTLS and ldaps with a test CA).
//!
//! Without slapd installed (and not root) every test here reports
//! "skipped: slapd not installed" and returns.

use std::collections::HashSet;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use addrd::directory::{AuthError, Directory, DirectoryError, Entity, RefusalReason, Reservation};
use addrd::ldap::{LdapConfig, LdapDirectory};
use ldap3::{Mod, Scope};
use netns_tests::slapd::{Options, Slapd, BASE_DN, SERVICE_DN};
use overlay_proto::lease::EntityKind;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::ldap::{admin, pw, raw_bind, refusal};

const ALICE: &str = "uid=alice,ou=people,dc=example,dc=org";
const BOB: &str = "uid=bob,ou=people,dc=example,dc=org";

fn start(test: &str, options: Options) -> Option<Slapd> {
    Slapd::start_or_skip(test, options)
}

fn config(slapd: &Slapd) -> LdapConfig {
    common::ldap::config(slapd, Duration::from_secs(5))
}

fn directory(slapd: &Slapd) -> LdapDirectory {
    common::ldap::directory(config(slapd))
}

/// Log in to `dir` as `user`.
async fn login(dir: &LdapDirectory, user: &str, password: &str) -> Result<Entity, AuthError> {
    dir.authenticate(user, &pw(password)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_login_with_groups_from_member_attributes() {
    let Some(slapd) = start(
        "good_login_with_groups_from_member_attributes",
        Options::default(),
    ) else {
        return;
    };
    let dir = directory(&slapd);
    let alice = login(&dir, "alice", "alice-lab-password")
        .await
        .unwrap_or_else(|e| panic!("alice: {e:?}"));
    assert_eq!(alice.dn, ALICE);
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.kind, EntityKind::User);
    assert_eq!(alice.groups, ["admins", "staff"]);
    assert!(!alice.disabled);
    assert_eq!(alice.address, None);
    // {ARGON2} hash (slapd's argon2 module).
    let dave = login(&dir, "dave", "dave-lab-password")
        .await
        .unwrap_or_else(|e| panic!("dave: {e:?}"));
    assert_eq!(dave.groups, ["students"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_login_with_groups_from_member_of() {
    let options = Options {
        memberof: true,
        ..Options::default()
    };
    let Some(slapd) = start("good_login_with_groups_from_member_of", options) else {
        return;
    };
    // The overlay really keeps memberOf here (else this test would only
    // repeat the one above).
    let mut admin = admin(&slapd).await;
    let (entries, _) = admin
        .search(ALICE, Scope::Base, "(objectClass=*)", vec!["memberOf"])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("search: {e}"));
    assert_eq!(entries.len(), 1);
    let dir = directory(&slapd);
    let alice = login(&dir, "alice", "alice-lab-password")
        .await
        .unwrap_or_else(|e| panic!("alice: {e:?}"));
    assert_eq!(alice.groups, ["admins", "staff"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_unknown_and_disabled_are_refused() {
    let Some(slapd) = start("wrong_unknown_and_disabled_are_refused", Options::default()) else {
        return;
    };
    let dir = directory(&slapd);
    assert_eq!(
        refusal(login(&dir, "alice", "bob-lab-password").await),
        RefusalReason::WrongPassword
    );
    assert_eq!(
        refusal(login(&dir, "mallory", "alice-lab-password").await),
        RefusalReason::UnknownUser
    );
    // carol is disabled: refused with the right password, and a wrong
    // password is just a wrong password.
    assert_eq!(
        refusal(login(&dir, "carol", "carol-lab-password").await),
        RefusalReason::Disabled
    );
    assert_eq!(
        refusal(login(&dir, "carol", "nope").await),
        RefusalReason::WrongPassword
    );
    let carol = dir
        .lookup(EntityKind::User, "carol")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("carol not found"));
    assert!(carol.disabled);
    // The client-facing message never says which.
    let a = login(&dir, "alice", "x").await.err().map(|e| e.to_string());
    let b = login(&dir, "nobody", "x")
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(a, b);
}

/// The server accepts a simple bind with a DN and an empty password (an
/// anonymous bind): the backend must refuse it itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_password_refused_although_the_server_would_accept_it() {
    let Some(slapd) = start(
        "empty_password_refused_although_the_server_would_accept_it",
        Options::default(),
    ) else {
        return;
    };
    let (_ldap, rc) = raw_bind(&slapd.url(), ALICE, "").await;
    assert_eq!(rc, 0, "the harness must allow bind_anon_dn");
    let (_ldap, rc) = raw_bind(&slapd.url(), ALICE, "wrong").await;
    assert_eq!(rc, 49, "a wrong password must fail");
    let dir = directory(&slapd);
    assert_eq!(
        refusal(login(&dir, "alice", "").await),
        RefusalReason::EmptyPassword
    );
    assert_eq!(
        refusal(login(&dir, "nobody", "").await),
        RefusalReason::EmptyPassword
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_injection_is_refused() {
    let Some(slapd) = start("filter_injection_is_refused", Options::default()) else {
        return;
    };
    let dir = directory(&slapd);
    for name in common::ldap::injection_names() {
        let name = name.as_str();
        // Every known password: none may let a wildcard or a filter
        // fragment match someone.
        for password in [
            "alice-lab-password",
            "bob-lab-password",
            "dave-lab-password",
        ] {
            let result = dir.authenticate(name, &pw(password)).await;
            assert!(
                matches!(result, Err(AuthError::Refused { .. })),
                "{:?} with {password}: {result:?}",
                name.get(..40).unwrap_or(name)
            );
        }
        for kind in [
            EntityKind::User,
            EntityKind::Application,
            EntityKind::System,
        ] {
            let found = dir
                .lookup(kind, name)
                .await
                .unwrap_or_else(|e| panic!("lookup {:?}: {e}", name.get(..40)));
            assert_eq!(found, None, "lookup {:?}", name.get(..40));
        }
    }
    // The escaping is the only thing between these names and a match:
    // the real names still work.
    assert!(login(&dir, "alice", "alice-lab-password").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_change_is_seen_by_the_next_lookup() {
    for memberof in [false, true] {
        let options = Options {
            memberof,
            ..Options::default()
        };
        let Some(slapd) = start("group_change_is_seen_by_the_next_lookup", options) else {
            return;
        };
        let dir = directory(&slapd);
        let bob = |dir: LdapDirectory| async move {
            dir.lookup(EntityKind::User, "bob")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("bob not found"))
        };
        assert_eq!(
            bob(dir.clone()).await.groups,
            ["students"],
            "memberof {memberof}"
        );
        let mut admin = admin(&slapd).await;
        let staff = format!("cn=staff,ou=groups,{BASE_DN}");
        let students = format!("cn=students,ou=groups,{BASE_DN}");
        let rc = admin
            .modify(&staff, vec![Mod::Add("member", HashSet::from([BOB]))])
            .await
            .map(|r| r.rc);
        assert_eq!(rc.ok(), Some(0));
        assert_eq!(
            bob(dir.clone()).await.groups,
            ["staff", "students"],
            "memberof {memberof}"
        );
        let rc = admin
            .modify(&students, vec![Mod::Delete("member", HashSet::from([BOB]))])
            .await
            .map(|r| r.rc);
        assert_eq!(rc.ok(), Some(0));
        assert_eq!(
            bob(dir.clone()).await.groups,
            ["staff"],
            "memberof {memberof}"
        );
        let bob_login = login(&dir, "bob", "bob-lab-password")
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(bob_login.groups, ["staff"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_systems_and_the_whole_directory() {
    let Some(slapd) = start(
        "applications_systems_and_the_whole_directory",
        Options::default(),
    ) else {
        return;
    };
    let dir = directory(&slapd);
    let wiki = dir
        .lookup(EntityKind::Application, "wiki")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no wiki"));
    assert_eq!(wiki.allowed_groups, ["staff"]);
    assert_eq!(wiki.system.as_deref(), Some("app1"));
    let grades = dir
        .lookup(EntityKind::Application, "grades")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no grades"));
    assert_eq!(grades.allowed_groups, ["staff", "students"]);
    let app1 = dir
        .lookup(EntityKind::System, "app1")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no app1"));
    assert_eq!(
        app1.public_ipv4,
        Some("11.22.33.44".parse().unwrap_or_else(|e| panic!("{e}")))
    );
    // Kinds are kept apart: an application is not a user or a system.
    assert_eq!(dir.lookup(EntityKind::User, "wiki").await.ok(), Some(None));
    assert_eq!(
        dir.lookup(EntityKind::System, "wiki").await.ok(),
        Some(None)
    );

    let mut all = dir.entities().await.unwrap_or_else(|e| panic!("{e}"));
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<_> = all.iter().map(|e| (e.name.as_str(), e.kind)).collect();
    assert_eq!(
        names,
        [
            ("alice", EntityKind::User),
            ("app1", EntityKind::System),
            ("bob", EntityKind::User),
            ("carol", EntityKind::User),
            ("dave", EntityKind::User),
            ("grades", EntityKind::Application),
            ("wap-news", EntityKind::Application),
            ("wiki", EntityKind::Application),
        ]
    );
    let alice = all.iter().find(|e| e.name == "alice");
    assert_eq!(
        alice.map(|a| a.groups.clone()),
        Some(vec!["admins".into(), "staff".into()])
    );

    // A malformed entry is skipped by the listing and named by a lookup.
    let mut admin = admin(&slapd).await;
    let rc = admin
        .modify(
            &format!("cn=wiki,ou=applications,{BASE_DN}"),
            vec![Mod::Replace(
                "permanetAddress",
                HashSet::from(["not-an-address"]),
            )],
        )
        .await
        .map(|r| r.rc);
    assert_eq!(rc.ok(), Some(0));
    let all = dir.entities().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 7);
    match dir.lookup(EntityKind::Application, "wiki").await {
        Err(DirectoryError::BadEntry { dn, problem }) => {
            assert!(dn.starts_with("cn=wiki"), "{dn}");
            assert!(problem.contains("permanetAddress"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

/// Poll `f` until it returns `Some`, or panic at the deadline.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stopped_then_restarted() {
    let Some(mut slapd) = start("server_stopped_then_restarted", Options::default()) else {
        return;
    };
    let dir = directory(&slapd);
    assert!(login(&dir, "alice", "alice-lab-password").await.is_ok());

    slapd.stop();
    let started = Instant::now();
    match login(&dir, "alice", "alice-lab-password").await {
        Err(AuthError::Unavailable(DirectoryError::Connection(m))) => {
            assert!(m.contains("127.0.0.1") || !m.is_empty(), "{m}")
        }
        other => panic!("login with the server down: {other:?}"),
    }
    match dir.lookup(EntityKind::User, "alice").await {
        Err(DirectoryError::Connection(_)) => {}
        other => panic!("lookup with the server down: {other:?}"),
    }
    match dir.reserve_address(Ipv6Addr::LOCALHOST, ALICE).await {
        Err(DirectoryError::Connection(_)) => {}
        other => panic!("reserve with the server down: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a down server must fail fast, took {:?}",
        started.elapsed()
    );

    slapd.restart().unwrap_or_else(|e| panic!("restart: {e}"));
    // The same directory object recovers (after its back-off).
    let alice = eventually("login after restart", Duration::from_secs(10), || {
        let dir = dir.clone();
        async move { login(&dir, "alice", "alice-lab-password").await.ok() }
    })
    .await;
    assert_eq!(alice.groups, ["admins", "staff"]);
    assert!(dir.lookup(EntityKind::User, "bob").await.is_ok());
}

/// The server restarted while addrd was idle, between two logins: the
/// service connection addrd holds is dead, but the next login (and
/// lookup, and reservation) succeeds at the first try on a new one, with
/// no error and no back-off wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarted_between_logins_is_not_noticed() {
    let Some(mut slapd) = start(
        "server_restarted_between_logins_is_not_noticed",
        Options::default(),
    ) else {
        return;
    };
    let dir = directory(&slapd);
    assert!(login(&dir, "alice", "alice-lab-password").await.is_ok());
    for round in 0..3 {
        slapd.restart().unwrap_or_else(|e| panic!("restart: {e}"));
        let started = Instant::now();
        let alice = login(&dir, "alice", "alice-lab-password").await;
        assert_eq!(
            alice.map(|a| a.groups).ok(),
            Some(vec!["admins".to_string(), "staff".to_string()]),
            "round {round}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "round {round}: {:?}",
            started.elapsed()
        );
        slapd.restart().unwrap_or_else(|e| panic!("restart: {e}"));
        let bob = dir.lookup(EntityKind::User, "bob").await;
        assert_eq!(bob.ok().flatten().map(|b| b.dn), Some(BOB.to_string()));
        slapd.restart().unwrap_or_else(|e| panic!("restart: {e}"));
        let address = Ipv6Addr::from(0x2002_0b16_212c_0001_u128 << 64 | (round + 1));
        let reserved = dir.reserve_address(address, ALICE).await;
        assert_eq!(reserved.ok(), Some(Reservation::Created), "round {round}");
    }
}

/// slapd's port, for a relay in front of it.
fn port_of(slapd: &Slapd) -> u16 {
    slapd
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0)
}

/// `config(slapd)` through a relay on loopback `port`.
fn config_via(slapd: &Slapd, port: u16) -> LdapConfig {
    let mut c = config(slapd);
    c.url = format!("ldap://127.0.0.1:{port}");
    c
}

/// A relay's listener on a free loopback port, and the port.
async fn relay_listener() -> (tokio::net::TcpListener, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    (listener, port)
}

/// A relay's task, aborted when the relay is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A TCP relay to slapd that can stop taking new connections (accepted and
/// closed at once, as a server going down) while those it holds go on.
struct GateRelay {
    port: u16,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Held for its drop.
    _task: AbortOnDrop,
}

impl GateRelay {
    async fn start(target: u16) -> GateRelay {
        let (listener, port) = relay_listener().await;
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = closed.clone();
        let task = AbortOnDrop(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if gate.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
        GateRelay {
            port,
            closed,
            _task: task,
        }
    }

    fn close(&self, closed: bool) {
        self.closed
            .store(closed, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The server goes away in the middle of a login: the search (on the
/// service connection) worked, the password bind (on a new connection)
/// finds nobody. The login is `Unavailable`, never `Refused` (a wrong
/// password must not be claimed when the password was not checked), and
/// the same directory object logs in again once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_between_search_and_bind_is_unavailable() {
    let Some(slapd) = start(
        "server_gone_between_search_and_bind_is_unavailable",
        Options::default(),
    ) else {
        return;
    };
    let relay = GateRelay::start(port_of(&slapd)).await;
    let dir = common::ldap::directory(config_via(&slapd, relay.port));
    // The service connection is open.
    assert!(dir.lookup(EntityKind::User, "alice").await.is_ok());
    relay.close(true);
    for password in ["alice-lab-password", "wrong"] {
        match dir.authenticate("alice", &pw(password)).await {
            Err(AuthError::Unavailable(DirectoryError::Connection(_))) => {}
            other => panic!("{password}: {other:?}"),
        }
    }
    // An unknown user takes the same path, and the same answer.
    match login(&dir, "mallory", "x").await {
        Err(AuthError::Unavailable(_)) => {}
        other => panic!("mallory: {other:?}"),
    }
    // Lookups (renewals) still work on the connection already open.
    assert!(dir.lookup(EntityKind::User, "bob").await.is_ok());
    relay.close(false);
    let alice = login(&dir, "alice", "alice-lab-password").await;
    assert_eq!(alice.map(|a| a.dn).ok(), Some(ALICE.to_string()));
}

/// Two replicas (two directory objects, two service connections) race to
/// reserve the same addresses: exactly one wins each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_for_an_address_never_both_win() {
    let Some(slapd) = start(
        "replicas_racing_for_an_address_never_both_win",
        Options::default(),
    ) else {
        return;
    };
    let a = directory(&slapd);
    let b = directory(&slapd);
    let base: u128 = "2002:c633:640a:1::"
        .parse::<Ipv6Addr>()
        .map(u128::from)
        .unwrap_or(0);
    let rounds = 200u128;
    let mut wins = [0u32; 2];
    for i in 1..=rounds {
        let address = Ipv6Addr::from(base + i);
        let (ra, rb) = tokio::join!(
            a.reserve_address(address, ALICE),
            b.reserve_address(address, BOB)
        );
        let ra = ra.unwrap_or_else(|e| panic!("a: {e}"));
        let rb = rb.unwrap_or_else(|e| panic!("b: {e}"));
        match (&ra, &rb) {
            (Reservation::Created, Reservation::Taken { holder }) => {
                assert_eq!(holder, ALICE);
                wins[0] += 1;
            }
            (Reservation::Taken { holder }, Reservation::Created) => {
                assert_eq!(holder, BOB);
                wins[1] += 1;
            }
            other => panic!("round {i}: {other:?}"),
        }
    }
    assert_eq!(u128::from(wins[0] + wins[1]), rounds);
    // The same entity through both replicas: one creates, the other finds
    // it is its own.
    let address = Ipv6Addr::from(base + rounds + 1);
    let (ra, rb) = tokio::join!(
        a.reserve_address(address, ALICE),
        b.reserve_address(address, ALICE)
    );
    let mut got = [ra.ok(), rb.ok()];
    got.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(got, [Some(Reservation::Created), Some(Reservation::Ours)]);
    // Holder DNs compare as DNs, not as strings.
    assert_eq!(
        a.reserve_address(address, "UID=alice, ou=People,dc=example,dc=org")
            .await
            .ok(),
        Some(Reservation::Ours)
    );

    // Reservations are tombstones: the service account cannot remove one.
    let (mut svc, rc) = raw_bind(
        &slapd.url(),
        SERVICE_DN,
        netns_tests::slapd::SERVICE_PASSWORD,
    )
    .await;
    assert_eq!(rc, 0);
    let rc = svc
        .delete(&format!("permanetAddress={address},ou=addresses,{BASE_DN}"))
        .await
        .map(|r| r.rc);
    assert_eq!(rc.ok(), Some(50), "insufficientAccess");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_address_is_on_the_entry() {
    let Some(slapd) = start("recorded_address_is_on_the_entry", Options::default()) else {
        return;
    };
    let dir = directory(&slapd);
    let address: Ipv6Addr = "2002:C633:640A:0:0:0:0:2A"
        .parse()
        .unwrap_or(Ipv6Addr::UNSPECIFIED);
    assert_eq!(
        dir.reserve_address(address, ALICE).await.ok(),
        Some(Reservation::Created)
    );
    dir.record_address(ALICE, address)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    dir.record_address(ALICE, address)
        .await
        .unwrap_or_else(|e| panic!("idempotent: {e}"));
    // An administrator sees it, in canonical RFC 5952 form.
    let mut admin = admin(&slapd).await;
    let (entries, _) = admin
        .search(
            &format!("ou=people,{BASE_DN}"),
            Scope::Subtree,
            "(permanetAddress=2002:c633:640a::2a)",
            vec!["permanetAddress"],
        )
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("search: {e}"));
    let entries: Vec<_> = entries
        .into_iter()
        .map(ldap3::SearchEntry::construct)
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].dn, ALICE);
    assert_eq!(
        entries[0].attrs.get("permanetAddress"),
        Some(&vec!["2002:c633:640a::2a".to_string()])
    );
    let alice = dir.lookup(EntityKind::User, "alice").await.ok().flatten();
    assert_eq!(alice.and_then(|a| a.address), Some(address));

    // Applications and systems carry it in their own class.
    let wiki = format!("cn=wiki,ou=applications,{BASE_DN}");
    let wiki_address: Ipv6Addr = "2002:c633:640a:1::2"
        .parse()
        .unwrap_or(Ipv6Addr::UNSPECIFIED);
    dir.record_address(&wiki, wiki_address)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let wiki = dir
        .lookup(EntityKind::Application, "wiki")
        .await
        .ok()
        .flatten();
    assert_eq!(wiki.and_then(|w| w.address), Some(wiki_address));

    // A user entry without the auxiliary class gets it added (the admin
    // creates one the way an existing directory would have it).
    let erin = format!("uid=erin,ou=people,{BASE_DN}");
    let rc = admin
        .add(
            &erin,
            vec![
                ("objectClass", HashSet::from(["inetOrgPerson"])),
                ("uid", HashSet::from(["erin"])),
                ("cn", HashSet::from(["Erin"])),
                ("sn", HashSet::from(["Erin"])),
            ],
        )
        .await
        .map(|r| r.rc);
    assert_eq!(rc.ok(), Some(0));
    let erin_address: Ipv6Addr = "2002:c633:640a::2b"
        .parse()
        .unwrap_or(Ipv6Addr::UNSPECIFIED);
    // The service account may not write objectClass in the harness's
    // rules: a clear error naming the access it lacks.
    match dir.record_address(&erin, erin_address).await {
        Err(DirectoryError::Operation(m)) => assert!(m.contains("objectClass"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// StartTLS and ldaps with the test CA; a client trusting another CA is
/// refused with a connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_ldaps_with_a_ca_file() {
    let options = Options {
        tls: true,
        ..Options::default()
    };
    let Some(slapd) = start("starttls_and_ldaps_with_a_ca_file", options) else {
        return;
    };
    let ca = slapd.ca_file();
    let ldaps = slapd.ldaps_url().unwrap_or_default();

    let mut starttls = config(&slapd);
    starttls.starttls = true;
    starttls.ca_file = ca.clone();
    let mut over_ldaps = config(&slapd);
    over_ldaps.url = ldaps.clone();
    over_ldaps.ca_file = ca.clone();
    for (what, c) in [("StartTLS", starttls), ("ldaps", over_ldaps)] {
        let dir = LdapDirectory::new(c).unwrap_or_else(|e| panic!("{what}: {e}"));
        let alice = login(&dir, "alice", "alice-lab-password")
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(alice.groups, ["admins", "staff"], "{what}");
        assert_eq!(
            refusal(login(&dir, "alice", "wrong").await),
            RefusalReason::WrongPassword,
            "{what}"
        );
    }

    // Another CA: the server's certificate is not trusted.
    let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let other_ca = other.path().join("other-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&other_ca, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    for starttls in [true, false] {
        let mut c = config(&slapd);
        if starttls {
            c.starttls = true;
        } else {
            c.url = ldaps.clone();
        }
        c.ca_file = Some(other_ca.clone());
        let dir = LdapDirectory::new(c).unwrap_or_else(|e| panic!("{e}"));
        match dir.lookup(EntityKind::User, "alice").await {
            Err(DirectoryError::Connection(m)) => {
                assert!(
                    m.to_lowercase().contains("certificate") || m.contains("rustls"),
                    "{m}"
                )
            }
            other => panic!("untrusted server accepted (starttls {starttls}): {other:?}"),
        }
        match login(&dir, "alice", "alice-lab-password").await {
            Err(AuthError::Unavailable(_)) => {}
            other => panic!("login through an untrusted server: {other:?}"),
        }
    }
}

/// More entities than slapd's size limit (500), which the harness lifts
/// for the service account's *paged* searches only (`size.prtotal`, as
/// configs/ldap/README.md says): the listing pages through them all, and
/// a plain search would have been cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_past_the_size_limit() {
    let Some(slapd) = start("listing_pages_past_the_size_limit", Options::default()) else {
        return;
    };
    let mut admin = admin(&slapd).await;
    let extra = 700;
    for i in 0..extra {
        let uid = format!("user{i:04}");
        let rc = admin
            .add(
                &format!("uid={uid},ou=people,{BASE_DN}"),
                vec![
                    (
                        "objectClass",
                        HashSet::from(["inetOrgPerson", "permanetEntity"]),
                    ),
                    ("uid", HashSet::from([uid.as_str()])),
                    ("cn", HashSet::from([uid.as_str()])),
                    ("sn", HashSet::from([uid.as_str()])),
                ],
            )
            .await
            .map(|r| r.rc);
        assert_eq!(rc.ok(), Some(0), "{uid}");
    }
    let (mut svc, rc) = raw_bind(
        &slapd.url(),
        SERVICE_DN,
        netns_tests::slapd::SERVICE_PASSWORD,
    )
    .await;
    assert_eq!(rc, 0);
    let plain = svc
        .search(
            &format!("ou=people,{BASE_DN}"),
            Scope::Subtree,
            "(uid=*)",
            vec!["uid"],
        )
        .await
        .map(|r| r.1.rc);
    assert_eq!(
        plain.ok(),
        Some(4),
        "a plain search must hit the size limit"
    );
    let dir = directory(&slapd);
    let all = dir.entities().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 8 + extra);
}

/// A server that accepts the connection and never answers: every
/// operation ends with a timeout error at the configured bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, "secret").unwrap_or_else(|e| panic!("{e}"));
    let mut perms = std::fs::metadata(&pw_file)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&pw_file, perms).unwrap_or_else(|e| panic!("{e}"));
    let mut c = LdapConfig::new(
        format!("ldap://127.0.0.1:{port}"),
        BASE_DN,
        SERVICE_DN,
        &pw_file,
    );
    c.timeout = Duration::from_millis(300);
    let ldap = LdapDirectory::new(c).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    match ldap.lookup(EntityKind::User, "alice").await {
        Err(DirectoryError::Timeout(t)) => assert_eq!(t, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
    match login(&ldap, "alice", "alice-lab-password").await {
        Err(AuthError::Unavailable(DirectoryError::Timeout(_) | DirectoryError::Connection(_))) => {
        }
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

/// An unknown user costs what a wrong password costs: one search, then a
/// bind (to a DN that does not exist) on a connection of its own. Checked
/// in slapd's operation log rather than with a stopwatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_takes_the_wrong_password_path() {
    let options = Options {
        stats_log: true,
        ..Options::default()
    };
    let Some(slapd) = start("unknown_user_takes_the_wrong_password_path", options) else {
        return;
    };
    let dir = directory(&slapd);
    // Open the service connection first, so only the logins are counted.
    assert!(dir.lookup(EntityKind::User, "bob").await.is_ok());
    let ops = |log: &str| {
        let binds = log.matches(" BIND dn=").count();
        let searches = log.matches(" SRCH base=").count();
        (binds, searches)
    };
    let before = ops(&slapd.log());
    assert_eq!(
        refusal(login(&dir, "alice", "wrong").await),
        RefusalReason::WrongPassword
    );
    let wrong = ops(&slapd.log());
    assert_eq!(
        refusal(login(&dir, "mallory", "wrong").await),
        RefusalReason::UnknownUser
    );
    let unknown = ops(&slapd.log());
    let cost = |a: (usize, usize), b: (usize, usize)| (b.0 - a.0, b.1 - a.1);
    assert_eq!(
        cost(before, wrong),
        (1, 1),
        "wrong password: one bind, one search"
    );
    assert_eq!(
        cost(wrong, unknown),
        (1, 1),
        "unknown user: one bind, one search"
    );
    assert!(slapd
        .log()
        .contains("BIND dn=\"uid=permanet-absent-user,ou=people,dc=example,dc=org\""));
    // An empty password and a malformed name cost nothing at all.
    let _ = login(&dir, "alice", "").await;
    let _ = login(&dir, "al\0ice", "x").await;
    assert_eq!(ops(&slapd.log()), unknown);
}

/// A TCP relay to slapd whose existing connections can be frozen (kept
/// open, nothing forwarded: a half-open connection after a network
/// failure) while new ones still go through.
struct FreezingRelay {
    port: u16,
    freeze: std::sync::Arc<tokio::sync::Notify>,
    /// Held for its drop.
    _task: AbortOnDrop,
}

impl FreezingRelay {
    async fn start(target: u16) -> FreezingRelay {
        let (listener, port) = relay_listener().await;
        let freeze = std::sync::Arc::new(tokio::sync::Notify::new());
        let frozen = freeze.clone();
        let task = AbortOnDrop(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = frozen.notified() => {
                            // Hold both ends open, forward nothing.
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        }));
        FreezingRelay {
            port,
            freeze,
            _task: task,
        }
    }
}

/// After a timeout the connection that stopped answering is dropped, and
/// the next operation opens a new one instead of timing out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_stops_answering_is_replaced() {
    let Some(slapd) = start(
        "a_connection_that_stops_answering_is_replaced",
        Options::default(),
    ) else {
        return;
    };
    let relay = FreezingRelay::start(port_of(&slapd)).await;
    let mut c = config_via(&slapd, relay.port);
    c.timeout = Duration::from_millis(500);
    let dir = LdapDirectory::new(c).unwrap_or_else(|e| panic!("{e}"));
    assert!(dir.lookup(EntityKind::User, "alice").await.is_ok());
    relay.freeze.notify_waiters();
    match dir.lookup(EntityKind::User, "alice").await {
        Err(DirectoryError::Timeout(_)) => {}
        other => panic!("frozen connection: {other:?}"),
    }
    let alice = dir.lookup(EntityKind::User, "alice").await;
    assert!(matches!(alice, Ok(Some(_))), "after the timeout: {alice:?}");
}

/// Two entries with one uid: nobody logs in under it (the password
/// matches one of them, but which one is meant is unknown), and a lookup
/// names the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_uid_is_refused() {
    let Some(slapd) = start("an_ambiguous_uid_is_refused", Options::default()) else {
        return;
    };
    let mut admin = admin(&slapd).await;
    let extra = format!("ou=extra,ou=people,{BASE_DN}");
    let rc = admin
        .add(
            &extra,
            vec![
                ("objectClass", HashSet::from(["organizationalUnit"])),
                ("ou", HashSet::from(["extra"])),
            ],
        )
        .await
        .map(|r| r.rc);
    assert_eq!(rc.ok(), Some(0));
    let dir = directory(&slapd);
    assert!(login(&dir, "alice", "alice-lab-password").await.is_ok());
    let rc = admin
        .add(
            &format!("uid=alice,{extra}"),
            vec![
                ("objectClass", HashSet::from(["inetOrgPerson"])),
                ("uid", HashSet::from(["alice"])),
                ("cn", HashSet::from(["Other Alice"])),
                ("sn", HashSet::from(["Alice"])),
                ("userPassword", HashSet::from(["alice-lab-password"])),
            ],
        )
        .await
        .map(|r| r.rc);
    assert_eq!(rc.ok(), Some(0));
    assert_eq!(
        refusal(login(&dir, "alice", "alice-lab-password").await),
        RefusalReason::UnknownUser
    );
    match dir.lookup(EntityKind::User, "alice").await {
        Err(DirectoryError::BadEntry { problem, .. }) => {
            assert!(problem.contains("several"), "{problem}")
        }
        other => panic!("{other:?}"),
    }
}
