use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use overlay_proto::addr::{OverlayPrefix, DEFAULT_USER_SUBNET_ID};

use super::*;
use crate::embedded::EmbeddedDirectory;

fn plan() -> AddressPlan {
    AddressPlan::new(
        OverlayPrefix::ula_from_global_id([0x12, 0x34, 0x56, 0x78, 0x9a]),
        DEFAULT_USER_SUBNET_ID,
    )
    .unwrap()
}

fn allocator(key: u8) -> Allocator {
    Allocator::new(
        plan(),
        AllocationKey::from_bytes([key; 32]),
        Ipv4Policy::default(),
    )
}

fn user_dn(i: usize) -> String {
    format!("uid=u{i:05},ou=people,dc=example,dc=org")
}

/// An organisation with `users` users, a system with its own public IPv4
/// and one under the home prefix, and an application on each.
fn org(users: impl IntoIterator<Item = usize>) -> String {
    let mut ldif = String::from(
        "\
dn: cn=app1,ou=systems,dc=example,dc=org
objectClass: permanetSystem
cn: app1
permanetPublicIPv4: 1.2.3.4

dn: cn=home1,ou=systems,dc=example,dc=org
objectClass: permanetSystem
cn: home1

dn: cn=wiki,ou=applications,dc=example,dc=org
objectClass: permanetApplication
cn: wiki
permanetSystem: app1
permanetAllowedGroup: staff

dn: cn=mail,ou=applications,dc=example,dc=org
objectClass: permanetApplication
cn: mail
permanetSystem: home1
permanetAllowedGroup: staff
",
    );
    for i in users {
        write!(
            ldif,
            "\ndn: {}\nobjectClass: inetOrgPerson\nobjectClass: permanetEntity\nuid: u{i:05}\ncn: U\nsn: U\n",
            user_dn(i)
        )
        .unwrap();
    }
    ldif
}

async fn open(dir: &Path, ldif: &str) -> EmbeddedDirectory {
    let path = dir.join("directory.ldif");
    std::fs::write(&path, ldif).unwrap();
    let (directory, report) = EmbeddedDirectory::open(&path, &dir.join("addresses.redb"))
        .await
        .unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    directory
}

async fn addresses(directory: &EmbeddedDirectory) -> BTreeMap<String, Ipv6Addr> {
    directory
        .entities()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.address.map(|a| (e.dn, a)))
        .collect()
}

async fn user(directory: &EmbeddedDirectory, i: usize) -> Entity {
    directory
        .lookup(EntityKind::User, &format!("u{i:05}"))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn assignment_is_deterministic_and_lands_in_the_right_prefix() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let ldif = org(0..20);
    let (da, db, dc) = (
        open(a.path(), &ldif).await,
        open(b.path(), &ldif).await,
        open(c.path(), &ldif).await,
    );
    for (directory, key) in [(&da, 1), (&db, 1), (&dc, 2)] {
        assert!(allocator(key)
            .assign_all(directory)
            .await
            .unwrap()
            .is_empty());
    }
    let (first, second, other_key) = (
        addresses(&da).await,
        addresses(&db).await,
        addresses(&dc).await,
    );
    assert_eq!(first.len(), 24);
    assert_eq!(first, second, "same key, same directory: same addresses");
    assert_ne!(first, other_key, "another key: other addresses");
    let distinct: HashSet<_> = first.values().collect();
    assert_eq!(distinct.len(), first.len());

    let plan = plan();
    for i in 0..20 {
        assert!(plan.user_subnet().contains(&first[&user_dn(i)]));
    }
    let app1 = first["cn=app1,ou=systems,dc=example,dc=org"];
    let home1 = first["cn=home1,ou=systems,dc=example,dc=org"];
    let wiki = first["cn=wiki,ou=applications,dc=example,dc=org"];
    let mail = first["cn=mail,ou=applications,dc=example,dc=org"];
    // app1's SVN is in its own 6to4 prefix 2002:0102:0304::/48, ::1.
    assert_eq!(app1.segments()[..3], [0x2002, 0x0102, 0x0304]);
    assert_eq!(app1.segments()[4..], [0, 0, 0, 1]);
    assert_ne!(app1.segments()[3], 0);
    // home1's SVN is under the home /48, neither subnet 0 nor the users'.
    assert!(plan.overlay().contains(&home1));
    assert!(![0, DEFAULT_USER_SUBNET_ID].contains(&home1.segments()[3]));
    assert_eq!(home1.segments()[4..], [0, 0, 0, 1]);
    // Applications live in their system's SVN.
    assert_eq!(wiki.segments()[..4], app1.segments()[..4]);
    assert_eq!(mail.segments()[..4], home1.segments()[..4]);
    assert!(u128::from(wiki) & 0xffff_ffff_ffff_ffff > 1);

    // Assigning again confirms, it does not move anything.
    let again = allocator(1).assign(&da, &user(&da, 3).await).await.unwrap();
    assert_eq!((again.address, again.new), (first[&user_dn(3)], false));
}

#[tokio::test]
async fn a_taken_candidate_moves_on_to_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let directory = open(dir.path(), &org(0..1)).await;
    let allocator = allocator(1);
    let u0 = user(&directory, 0).await;
    let first = allocator.candidate(&u0, None, 0).unwrap().unwrap();
    let second = allocator.candidate(&u0, None, 1).unwrap().unwrap();
    assert_ne!(first, second);
    let squatter = "uid=squatter,ou=people,dc=example,dc=org";
    assert_eq!(
        directory.reserve_address(first, squatter).await.unwrap(),
        Reservation::Created
    );
    let assigned = allocator.assign(&directory, &u0).await.unwrap();
    assert_eq!(
        assigned,
        Assignment {
            address: second,
            new: true,
            attempts: 2
        }
    );
    assert_eq!(user(&directory, 0).await.address, Some(second));
}

#[tokio::test]
async fn a_full_space_is_a_typed_error_and_nothing_is_shared() {
    let dir = tempfile::tempdir().unwrap();
    let directory = open(dir.path(), &org(0..4)).await;
    // Interface ids 0..4, of which 0 is the subnet-router anycast address:
    // room for three users.
    let tiny = allocator(1).with_space(CandidateSpace {
        user_ids: 4,
        max_attempts: 64,
        ..CandidateSpace::default()
    });
    let failures = tiny.assign_all(&directory).await.unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(matches!(
        &failures[0].1,
        AllocError::Exhausted { attempts: 64, .. }
    ));
    let assigned = addresses(&directory).await;
    let users: HashSet<Ipv6Addr> = (0..4)
        .filter_map(|i| assigned.get(&user_dn(i)).copied())
        .collect();
    let expected: HashSet<Ipv6Addr> = (1..4).map(|i| plan().user_address(i).unwrap()).collect();
    assert_eq!(users, expected);
}

#[tokio::test]
async fn a_deleted_entitys_address_is_never_given_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let directory = open(dir.path(), &org([0])).await;
    // One usable interface id (1).
    let tiny = allocator(1).with_space(CandidateSpace {
        user_ids: 2,
        max_attempts: 32,
        ..CandidateSpace::default()
    });
    let u0 = tiny
        .assign(&directory, &user(&directory, 0).await)
        .await
        .unwrap();
    assert_eq!(u0.address, plan().user_address(1).unwrap());
    // u00000 is deleted from the directory, u00001 added.
    std::fs::write(dir.path().join("directory.ldif"), org([1])).unwrap();
    directory.reload().await.unwrap();
    assert!(directory
        .lookup(EntityKind::User, "u00000")
        .await
        .unwrap()
        .is_none());
    let error = tiny
        .assign(&directory, &user(&directory, 1).await)
        .await
        .unwrap_err();
    assert!(matches!(error, AllocError::Exhausted { .. }), "{error}");
    assert_eq!(
        directory.store().holder(u0.address).unwrap(),
        Some(user_dn(0))
    );
    // The whole space minus the tombstone is still handed out.
    let roomy = allocator(1).with_space(CandidateSpace {
        user_ids: 3,
        max_attempts: 32,
        ..CandidateSpace::default()
    });
    let u1 = roomy
        .assign(&directory, &user(&directory, 1).await)
        .await
        .unwrap();
    assert_eq!(u1.address, plan().user_address(2).unwrap());
}

#[tokio::test]
async fn an_address_held_by_another_dn_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let directory = open(dir.path(), &org(0..2)).await;
    let allocator = allocator(1);
    let u0 = allocator
        .assign(&directory, &user(&directory, 0).await)
        .await
        .unwrap();
    let mut copied = user(&directory, 1).await;
    copied.address = Some(u0.address);
    let error = allocator.assign(&directory, &copied).await.unwrap_err();
    assert!(
        matches!(&error, AllocError::Conflict { holder, .. } if *holder == user_dn(0)),
        "{error}"
    );
}

#[tokio::test]
async fn a_refused_public_ipv4_or_a_missing_system_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let ldif = org(0..0).replace("1.2.3.4", "10.1.2.3")
        + "
dn: cn=orphan,ou=applications,dc=example,dc=org
objectClass: permanetApplication
cn: orphan
permanetSystem: nowhere
";
    let directory = open(dir.path(), &ldif).await;
    let failures = allocator(1).assign_all(&directory).await.unwrap();
    let by_dn: BTreeMap<_, _> = failures.into_iter().collect();
    assert!(matches!(
        by_dn["cn=app1,ou=systems,dc=example,dc=org"],
        AllocError::Plan {
            error: AddrError::Ipv4NotUsable { .. },
            ..
        }
    ));
    assert!(matches!(
        by_dn["cn=wiki,ou=applications,dc=example,dc=org"],
        AllocError::Plan { .. }
    ));
    assert!(matches!(
        by_dn["cn=orphan,ou=applications,dc=example,dc=org"],
        AllocError::NoSystem { .. }
    ));
    assert_eq!(by_dn.len(), 3, "home1 and mail are assigned");
}

/// Issue #4: "addrd restarted with 10,000 entities keeps every address".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_entities_keep_every_address_across_a_restart() {
    const USERS: usize = 10_000 - 4;
    let dir = tempfile::tempdir().unwrap();
    let ldif = org(0..USERS);
    let start = Instant::now();
    let directory = open(dir.path(), &ldif).await;
    let loaded = start.elapsed();
    let start = Instant::now();
    let failures = allocator(7).assign_all(&directory).await.unwrap();
    let assigned_in = start.elapsed();
    assert!(failures.is_empty(), "{failures:?}");
    let before = addresses(&directory).await;
    assert_eq!(before.len(), 10_000);
    let distinct: HashSet<_> = before.values().collect();
    assert_eq!(distinct.len(), 10_000);
    drop(directory);

    let start = Instant::now();
    let directory = open(dir.path(), &ldif).await;
    let reopened = start.elapsed();
    let after = addresses(&directory).await;
    assert_eq!(before, after);
    // Nothing new is reserved when everything is assigned.
    let start = Instant::now();
    assert!(allocator(7)
        .assign_all(&directory)
        .await
        .unwrap()
        .is_empty());
    let confirmed_in = start.elapsed();
    assert_eq!(directory.store().reservations().unwrap().len(), 10_000);
    println!(
        "10,000 entities: LDIF loaded in {loaded:?}, assigned in {assigned_in:?}, \
         reopened in {reopened:?}, re-run in {confirmed_in:?}"
    );
}

/// Issue #4: "two addrd processes allocating concurrently never collide",
/// here two tasks on one store, in opposite orders, in a space small
/// enough that candidates collide often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_allocations_never_collide() {
    const USERS: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let directory = open(dir.path(), &org(0..USERS)).await;
    let tiny = allocator(3).with_space(CandidateSpace {
        user_ids: 600,
        ..CandidateSpace::default()
    });
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(user(&directory, i).await);
    }
    let run = |reverse: bool| {
        let (directory, tiny, mut users) = (directory.clone(), tiny.clone(), users.clone());
        tokio::spawn(async move {
            if reverse {
                users.reverse();
            }
            let mut got = BTreeMap::new();
            let mut retries = 0;
            for user in &users {
                let assignment = tiny.assign(&directory, user).await.unwrap();
                retries += assignment.attempts.saturating_sub(1);
                got.insert(user.dn.clone(), assignment.address);
            }
            (got, retries)
        })
    };
    let (forward, backward) = (run(false), run(true));
    let ((forward, retries_f), (backward, retries_b)) =
        (forward.await.unwrap(), backward.await.unwrap());
    assert_eq!(forward, backward, "both tasks agree on every address");
    let distinct: HashSet<_> = forward.values().collect();
    assert_eq!(distinct.len(), USERS);
    for (dn, address) in &forward {
        assert_eq!(
            directory.store().holder(*address).unwrap().as_ref(),
            Some(dn)
        );
    }
    assert!(retries_f + retries_b > 0, "the space forced collisions");
    println!("{USERS} users, two tasks: {retries_f} + {retries_b} retried candidates");
}
