#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use super::*;
use crate::alloc::{AllocationKey, Allocator};
use crate::directory::RefusalReason;
use crate::embedded::EmbeddedDirectory;
use crate::issuer::IssuePolicy;
use crate::revocations::Revocations;
use crate::state::State;
use overlay_proto::addr::{AddressPlan, Ipv4Policy, OverlayPrefix, DEFAULT_USER_SUBNET_ID};
use overlay_proto::lease::LeaseAuthority;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../../configs/ldap/example-org.ldif");
const NOW: u64 = 1_800_000_000;
const ALICE_KEY: PublicKey = PublicKey([0xa1; 32]);

struct Fixture {
    dir: tempfile::TempDir,
    service: Service<EmbeddedDirectory>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("org.ldif");
    std::fs::write(&ldif, EXAMPLE).unwrap();
    let (directory, _) = EmbeddedDirectory::open(&ldif, &dir.path().join("a.redb"))
        .await
        .unwrap();
    let plan = AddressPlan::new(
        OverlayPrefix::ula_from_global_id([1, 2, 3, 4, 5]),
        DEFAULT_USER_SUBNET_ID,
    )
    .unwrap();
    let state = State::open(&dir.path().join("state.redb")).unwrap();
    let issuer = Issuer::new(
        LeaseAuthority::from_seed([3; 32]),
        Allocator::new(
            plan,
            AllocationKey::from_bytes([9; 32]),
            Ipv4Policy::default(),
        ),
        IssuePolicy {
            lifetime: Duration::from_secs(3600),
            max_session_age: Duration::from_secs(12 * 3600),
        },
        state.clone(),
    )
    .unwrap();
    let service = Service::new(directory, issuer, Revocations::Local(state));
    service.refresh().await.unwrap();
    Fixture { dir, service }
}

fn at(secs: u64) -> UnixTime {
    UnixTime::from_secs(secs)
}

fn password(text: &str) -> Password {
    Password::new(text.to_owned())
}

#[tokio::test]
async fn login_then_renew_until_the_maximum_age() {
    let f = fixture().await;
    let app1 = f
        .service
        .issue_for(
            EntityKind::System,
            "app1",
            PublicKey([0x01; 32]),
            at(NOW),
            None,
        )
        .await
        .unwrap();
    assert_eq!(app1.lease().kind, EntityKind::System);
    let grant = f
        .service
        .login("alice", &password("alice-lab-password"), ALICE_KEY, at(NOW))
        .await
        .unwrap();
    assert_eq!(grant.lease.lease().name, "alice");
    assert_eq!(grant.netmap.leases.len(), 1);
    assert_eq!(grant.netmap.leases[0].as_bytes(), app1.as_bytes());

    let renewed = f.service.renew(ALICE_KEY, at(NOW + 3000)).await.unwrap();
    assert_eq!(renewed.lease.lease().prefix, grant.lease.lease().prefix);
    assert!(renewed.lease.lease().serial > grant.lease.lease().serial);
    let err = f
        .service
        .renew(ALICE_KEY, at(NOW + 12 * 3600))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Issue(IssueError::SessionExpired { .. })),
        "{err}"
    );
    let err = f
        .service
        .renew(PublicKey([0xee; 32]), at(NOW))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::NoSession), "{err}");
}

#[tokio::test]
async fn wrong_password_and_disabled_user_are_refused() {
    let f = fixture().await;
    let err = f
        .service
        .login("alice", &password("wrong"), ALICE_KEY, at(NOW))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ServiceError::Auth(AuthError::Refused {
            reason: RefusalReason::WrongPassword
        })
    ));
    let err = f
        .service
        .login("carol", &password("carol-lab-password"), ALICE_KEY, at(NOW))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Auth(AuthError::Refused { .. })));
    // Nothing started a session.
    assert!(matches!(
        f.service.renew(ALICE_KEY, at(NOW)).await,
        Err(ServiceError::NoSession)
    ));
}

#[tokio::test]
async fn revocation_refuses_the_next_renewal_but_not_a_new_login() {
    let f = fixture().await;
    f.service
        .login("bob", &password("bob-lab-password"), ALICE_KEY, at(NOW))
        .await
        .unwrap();
    f.service
        .revoke(EntityKind::User, "bob", at(NOW + 10))
        .await
        .unwrap();
    let err = f.service.renew(ALICE_KEY, at(NOW + 20)).await.unwrap_err();
    assert!(
        matches!(err, ServiceError::Revoked(ref n) if n == "bob"),
        "{err}"
    );
    f.service
        .login(
            "bob",
            &password("bob-lab-password"),
            ALICE_KEY,
            at(NOW + 30),
        )
        .await
        .unwrap();
    f.service.renew(ALICE_KEY, at(NOW + 40)).await.unwrap();
    let err = f
        .service
        .revoke(EntityKind::User, "nobody", at(NOW))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Unknown { .. }), "{err}");
}

#[tokio::test]
async fn renewal_sees_a_disabled_user_and_new_groups() {
    let f = fixture().await;
    let grant = f
        .service
        .login("bob", &password("bob-lab-password"), ALICE_KEY, at(NOW))
        .await
        .unwrap();
    assert_eq!(grant.lease.lease().groups, ["students"]);
    // bob moves to staff.
    let ldif = EXAMPLE.replace("member: uid=bob,ou=people,dc=example,dc=org\n", "");
    let ldif = ldif.replace(
        "cn: staff\n",
        "cn: staff\nmember: uid=bob,ou=people,dc=example,dc=org\n",
    );
    std::fs::write(f.dir.path().join("org.ldif"), &ldif).unwrap();
    f.service.directory().reload().await.unwrap();
    let renewed = f.service.renew(ALICE_KEY, at(NOW + 60)).await.unwrap();
    assert_eq!(renewed.lease.lease().groups, ["staff"]);
    // bob is disabled.
    let ldif = ldif.replace("uid: bob\n", "uid: bob\npermanetDisabled: TRUE\n");
    std::fs::write(f.dir.path().join("org.ldif"), &ldif).unwrap();
    f.service.directory().reload().await.unwrap();
    let err = f.service.renew(ALICE_KEY, at(NOW + 120)).await.unwrap_err();
    assert!(matches!(err, ServiceError::Disabled(_)), "{err}");
}
