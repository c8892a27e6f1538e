#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use super::*;
use crate::alloc::AllocationKey;
use crate::embedded::EmbeddedDirectory;
use overlay_proto::addr::{AddressPlan, Ipv4Policy, OverlayPrefix, DEFAULT_USER_SUBNET_ID};

const EXAMPLE: &str = include_str!("../../../configs/ldap/example-org.ldif");

/// A second system (on the home prefix) whose only application only
/// admins may reach.
const EXTRA: &str = "
dn: cn=lab2,ou=systems,dc=example,dc=org
objectClass: permanetSystem
cn: lab2

dn: cn=secret,ou=applications,dc=example,dc=org
objectClass: permanetApplication
cn: secret
permanetSystem: lab2
permanetAllowedGroup: admins
";

const HOUR: Duration = Duration::from_secs(3600);
const NOW: u64 = 1_800_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    directory: EmbeddedDirectory,
    issuer: Issuer,
    state_path: std::path::PathBuf,
}

fn plan() -> AddressPlan {
    AddressPlan::new(
        OverlayPrefix::ula_from_global_id([1, 2, 3, 4, 5]),
        DEFAULT_USER_SUBNET_ID,
    )
    .unwrap()
}

fn issuer(state: State) -> Issuer {
    let allocator = Allocator::new(
        plan(),
        AllocationKey::from_bytes([9; 32]),
        Ipv4Policy::default(),
    );
    Issuer::new(
        LeaseAuthority::from_seed([3; 32]),
        allocator,
        IssuePolicy {
            lifetime: HOUR,
            max_session_age: 12 * HOUR,
        },
        state,
    )
    .unwrap()
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("org.ldif");
    std::fs::write(&ldif, format!("{EXAMPLE}{EXTRA}")).unwrap();
    let (directory, report) = EmbeddedDirectory::open(&ldif, &dir.path().join("a.redb"))
        .await
        .unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let state_path = dir.path().join("state.redb");
    let issuer = issuer(State::open(&state_path).unwrap());
    Fixture {
        _dir: dir,
        directory,
        issuer,
        state_path,
    }
}

async fn entity(f: &Fixture, kind: EntityKind, name: &str) -> Entity {
    f.directory.lookup(kind, name).await.unwrap().unwrap()
}

fn at(secs: u64) -> UnixTime {
    UnixTime::from_secs(secs)
}

async fn issue(f: &Fixture, e: &Entity, start: u64, now: u64) -> Result<SignedLease, IssueError> {
    f.issuer
        .issue(&f.directory, e, PublicKey([0x55; 32]), at(start), at(now))
        .await
}

#[tokio::test]
async fn each_kind_gets_its_prefix() {
    let f = fixture().await;
    let alice = entity(&f, EntityKind::User, "alice").await;
    assert_eq!(alice.address, None);
    let lease = issue(&f, &alice, NOW, NOW).await.unwrap();
    let l = lease.lease();
    assert_eq!(l.kind, EntityKind::User);
    assert_eq!(l.prefix.prefix_len(), 128);
    assert!(plan().user_subnet().contains(&l.prefix.addr()));
    assert_eq!(l.name, "alice");
    assert_eq!(l.dn, alice.dn);
    assert_eq!(l.groups, vec!["admins".to_owned(), "staff".to_owned()]);
    assert_eq!(l.public_key, [0x55; 32]);
    // The address was assigned and recorded: the next lookup has it.
    let again = entity(&f, EntityKind::User, "alice").await;
    assert_eq!(again.address, Some(l.prefix.addr()));

    let app1 = entity(&f, EntityKind::System, "app1").await;
    let wiki = entity(&f, EntityKind::Application, "wiki").await;
    let wiki_lease = issue(&f, &wiki, NOW, NOW).await.unwrap();
    let app1 = entity(&f, EntityKind::System, "app1")
        .await
        .address
        .or(app1.address);
    let app1_lease = issue(&f, &entity(&f, EntityKind::System, "app1").await, NOW, NOW)
        .await
        .unwrap();
    let svn = app1_lease.lease().prefix;
    assert_eq!(svn.prefix_len(), 64);
    assert_eq!(svn.network().segments()[..3], [0x2002, 0x0b16, 0x212c]);
    assert_eq!(app1, Some(system_address(svn)));
    assert_eq!(wiki_lease.lease().prefix.prefix_len(), 128);
    assert!(svn.contains(&wiki_lease.lease().prefix.addr()));
    // Verifies with the authority's key.
    SignedLease::verify(
        app1_lease.as_bytes(),
        &f.issuer.authority_key(),
        at(NOW + 10),
    )
    .unwrap();
}

#[tokio::test]
async fn lifetime_is_capped_by_the_session_age() {
    let f = fixture().await;
    let bob = entity(&f, EntityKind::User, "bob").await;
    let fresh = issue(&f, &bob, NOW, NOW).await.unwrap();
    assert_eq!(fresh.lease().not_before, at(NOW));
    assert_eq!(fresh.lease().not_after, at(NOW + 3600));
    // Session started 11.5 h ago: half an hour left.
    let start = NOW - 11 * 3600 - 1800;
    let capped = issue(&f, &bob, start, NOW).await.unwrap();
    assert_eq!(capped.lease().not_after, at(start + 12 * 3600));
    assert_eq!(capped.lease().not_after, at(NOW + 1800));
    // At (or past) the maximum age: no lease.
    for start in [NOW - 12 * 3600, NOW - 13 * 3600] {
        let err = issue(&f, &bob, start, NOW).await.unwrap_err();
        assert!(matches!(err, IssueError::SessionExpired { .. }), "{err}");
    }
    // A system has no maximum session age; a longer lifetime is honoured.
    let app1 = entity(&f, EntityKind::System, "app1").await;
    let old = issue(&f, &app1, NOW - 30 * 24 * 3600, NOW).await.unwrap();
    assert_eq!(old.lease().not_after, at(NOW + 3600));
    let week = f
        .issuer
        .issue_for(
            &f.directory,
            &app1,
            PublicKey([0x55; 32]),
            at(NOW),
            at(NOW),
            7 * 24 * HOUR,
        )
        .await
        .unwrap();
    assert_eq!(week.lease().not_after, at(NOW + 7 * 24 * 3600));
}

#[tokio::test]
async fn serials_strictly_increase_across_restarts_and_clock_steps() {
    let f = fixture().await;
    let bob = entity(&f, EntityKind::User, "bob").await;
    let mut last = 0;
    for i in 0..50 {
        // Same second, many leases: still strictly increasing.
        let serial = issue(&f, &bob, NOW, NOW + i / 10)
            .await
            .unwrap()
            .lease()
            .serial;
        assert!(serial > last, "{serial} after {last}");
        last = serial;
    }
    assert!(last >= (NOW * 1000) << 16);
    let Fixture {
        _dir,
        directory,
        issuer: old,
        state_path,
    } = f;
    drop(old);
    // Restarted with the clock an hour back: still above.
    let f = Fixture {
        issuer: issuer(State::open(&state_path).unwrap()),
        _dir,
        directory,
        state_path,
    };
    let serial = issue(&f, &bob, NOW - 3600, NOW - 3600)
        .await
        .unwrap()
        .lease()
        .serial;
    assert!(serial > last);
    // The time part takes over once the clock passes the high-water mark.
    let later = issue(&f, &bob, NOW, NOW + 60).await.unwrap().lease().serial;
    assert_eq!(later, ((NOW + 60) * 1000) << 16);
}

#[tokio::test]
async fn netmap_has_the_systems_the_users_groups_reach() {
    let f = fixture().await;
    let entities = |f: &Fixture| {
        let d = f.directory.clone();
        async move { d.entities().await.unwrap() }
    };
    // Servers obtained their leases.
    for name in ["app1", "lab2"] {
        let system = entity(&f, EntityKind::System, name).await;
        issue(&f, &system, NOW, NOW).await.unwrap();
    }
    let all = entities(&f).await;
    let alice = entity(&f, EntityKind::User, "alice").await;
    let bob = entity(&f, EntityKind::User, "bob").await;
    let names = |netmap: &Netmap| {
        netmap
            .leases
            .iter()
            .map(|l| l.lease().name.clone())
            .collect::<Vec<_>>()
    };
    let netmap = f.issuer.netmap(&alice, &all, at(NOW + 5)).unwrap();
    assert_eq!(names(&netmap), ["app1", "lab2"]);
    assert_eq!(netmap.authority, f.issuer.authority_key());
    assert_eq!(
        names(&f.issuer.netmap(&bob, &all, at(NOW + 5)).unwrap()),
        ["app1"]
    );
    // Expired server leases are left out.
    assert!(f
        .issuer
        .netmap(&alice, &all, at(NOW + 7200))
        .unwrap()
        .leases
        .is_empty());
}

/// DESIGN §2: an address is never given to another entity. An address
/// written on an entry by hand (as an LDAP administrator could) is checked
/// against the reservations before any lease carries it.
#[tokio::test]
async fn a_hand_set_address_another_entity_holds_is_never_leased() {
    let f = fixture().await;
    let alice = entity(&f, EntityKind::User, "alice").await;
    let alices = issue(&f, &alice, NOW, NOW).await.unwrap();
    let taken = alices.lease().address();

    // bob's entry now carries alice's address.
    let mut bob = entity(&f, EntityKind::User, "bob").await;
    bob.address = Some(taken);
    match issue(&f, &bob, NOW, NOW).await {
        Err(IssueError::Alloc(AllocError::Conflict {
            address, holder, ..
        })) => {
            assert_eq!(address, taken);
            assert_eq!(normalize_dn(&holder), normalize_dn(&alice.dn));
        }
        other => panic!("bob got alice's address: {other:?}"),
    }

    // An address nobody reserved, set by hand: leased, and reserved for
    // that entity from then on.
    let fresh: std::net::Ipv6Addr = "fd01:203:405:1::4242".parse().unwrap();
    let mut dave = entity(&f, EntityKind::User, "dave").await;
    dave.address = Some(fresh);
    let daves = issue(&f, &dave, NOW, NOW).await.unwrap();
    assert_eq!(daves.lease().address(), fresh);
    bob.address = Some(fresh);
    assert!(matches!(
        issue(&f, &bob, NOW, NOW).await,
        Err(IssueError::Alloc(AllocError::Conflict { .. }))
    ));
}
