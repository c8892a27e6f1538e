//! The embedded directory loads `configs/ldap/example-org.ldif` unchanged
//! (the same file slapd loads) and logs its users in with the passwords
//! documented at the top of the file.

use std::path::Path;

use addrd::alloc::{AllocationKey, Allocator};
use addrd::directory::{AuthError, Directory, Password, RefusalReason};
use addrd::embedded::EmbeddedDirectory;
use overlay_proto::addr::{AddressPlan, Ipv4Policy, OverlayPrefix, DEFAULT_USER_SUBNET_ID};
use overlay_proto::lease::EntityKind;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/ldap/example-org.ldif")
}

fn refusal(result: Result<addrd::directory::Entity, AuthError>) -> RefusalReason {
    match result {
        Err(AuthError::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn the_example_organisation_loads_unchanged_and_alice_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let (directory, report) =
        EmbeddedDirectory::open(&example(), &dir.path().join("addresses.redb"))
            .await
            .unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(
        (
            report.users,
            report.groups,
            report.applications,
            report.systems
        ),
        (4, 3, 3, 1)
    );

    let alice = directory
        .authenticate("alice", &Password::new("alice-lab-password".to_owned()))
        .await
        .unwrap();
    assert_eq!(alice.dn, "uid=alice,ou=people,dc=example,dc=org");
    assert_eq!(alice.kind, EntityKind::User);
    assert_eq!(alice.groups, ["admins", "staff"]);
    // dave's hash is {ARGON2}.
    let dave = directory
        .authenticate("dave", &Password::new("dave-lab-password".to_owned()))
        .await
        .unwrap();
    assert_eq!(dave.groups, ["students"]);
    let password = |s: &str| Password::new(s.to_owned());
    assert_eq!(
        refusal(
            directory
                .authenticate("alice", &password("bob-lab-password"))
                .await
        ),
        RefusalReason::WrongPassword
    );
    assert_eq!(
        refusal(
            directory
                .authenticate("carol", &password("carol-lab-password"))
                .await
        ),
        RefusalReason::Disabled
    );
    assert_eq!(
        refusal(directory.authenticate("alice", &password("")).await),
        RefusalReason::EmptyPassword
    );
    // The service account is not a user.
    assert_eq!(
        refusal(
            directory
                .authenticate("addrd", &password("addrd-lab-password"))
                .await
        ),
        RefusalReason::UnknownUser
    );

    let grades = directory
        .lookup(EntityKind::Application, "grades")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grades.allowed_groups, ["staff", "students"]);
    assert_eq!(grades.system.as_deref(), Some("app1"));
    let app1 = directory
        .lookup(EntityKind::System, "app1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app1.public_ipv4, Some("11.22.33.44".parse().unwrap()));
}

#[tokio::test]
async fn the_example_users_get_addresses_that_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("addresses.redb");
    let plan = AddressPlan::new(
        OverlayPrefix::ula_from_global_id([1, 2, 3, 4, 5]),
        DEFAULT_USER_SUBNET_ID,
    )
    .unwrap();
    let allocator = Allocator::new(
        plan,
        AllocationKey::from_bytes([9; 32]),
        Ipv4Policy::default(),
    );
    let mut assigned = Vec::new();
    {
        let (directory, _) = EmbeddedDirectory::open(&example(), &store).await.unwrap();
        for name in ["alice", "bob", "carol", "dave"] {
            let user = directory
                .lookup(EntityKind::User, name)
                .await
                .unwrap()
                .unwrap();
            let assignment = allocator.assign(&directory, &user).await.unwrap();
            assert!(plan.user_subnet().contains(&assignment.address));
            assigned.push(assignment.address);
        }
    }
    let (directory, _) = EmbeddedDirectory::open(&example(), &store).await.unwrap();
    let alice = directory
        .authenticate("alice", &Password::new("alice-lab-password".to_owned()))
        .await
        .unwrap();
    assert_eq!(alice.address, Some(assigned[0]));
}

#[tokio::test]
async fn the_example_applications_live_in_their_servers_6to4_network() {
    let dir = tempfile::tempdir().unwrap();
    let (directory, _) = EmbeddedDirectory::open(&example(), &dir.path().join("a.redb"))
        .await
        .unwrap();
    let plan = AddressPlan::new(
        OverlayPrefix::ula_from_global_id([1, 2, 3, 4, 5]),
        DEFAULT_USER_SUBNET_ID,
    )
    .unwrap();
    let allocator = Allocator::new(
        plan,
        AllocationKey::from_bytes([9; 32]),
        Ipv4Policy::default(),
    );
    // app1's public IPv4 11.22.33.44 is 2002:0b16:212c::/48.
    let server: ipnet::Ipv6Net = "2002:b16:212c::/48".parse().unwrap();
    let system = directory
        .lookup(EntityKind::System, "app1")
        .await
        .unwrap()
        .unwrap();
    let system = allocator.assign(&directory, &system).await.unwrap();
    assert!(server.contains(&system.address), "{}", system.address);
    let svn = ipnet::Ipv6Net::new(system.address, 64).unwrap().trunc();
    for name in ["wiki", "grades", "wap-news"] {
        let app = directory
            .lookup(EntityKind::Application, name)
            .await
            .unwrap()
            .unwrap();
        let assigned = allocator.assign(&directory, &app).await.unwrap();
        assert!(
            svn.contains(&assigned.address),
            "{name}: {}",
            assigned.address
        );
        assert_ne!(assigned.address, system.address, "{name}");
    }
}
