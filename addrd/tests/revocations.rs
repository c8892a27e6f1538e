//! Revocations in a real slapd: what `addrd revoke` writes with the LDAP
//! backend and what a renewal reads.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use addrd::ldap::LdapConfig;
use addrd::revocations::{LdapRevocations, Revocations};
use netns_tests::slapd::{Options, Slapd, BASE_DN, SERVICE_DN};
use overlay_proto::lease::EntityKind;
use std::sync::Arc;

fn revocations(slapd: &Slapd) -> Revocations {
    let config = LdapConfig::new(
        slapd.url(),
        BASE_DN,
        SERVICE_DN,
        slapd.service_password_file(),
    );
    Revocations::Ldap(Arc::new(LdapRevocations::new(&config).unwrap()))
}

#[tokio::test]
async fn revocations_round_trip_through_slapd() {
    let Some(slapd) =
        Slapd::start_or_skip("revocations_round_trip_through_slapd", Options::default())
    else {
        return;
    };
    let list = revocations(&slapd);
    assert_eq!(
        list.revoked_at(EntityKind::User, "bob").await.unwrap(),
        None
    );
    assert!(list.all().await.unwrap().is_empty());
    list.revoke(EntityKind::User, "bob", 1_800_000_000)
        .await
        .unwrap();
    assert_eq!(
        list.revoked_at(EntityKind::User, "bob").await.unwrap(),
        Some(1_800_000_000)
    );
    // Same name, other kind: separate.
    assert_eq!(
        list.revoked_at(EntityKind::System, "bob").await.unwrap(),
        None
    );
    // A second revocation replaces the time; a second client sees it.
    list.revoke(EntityKind::User, "bob", 1_800_000_100)
        .await
        .unwrap();
    let other = revocations(&slapd);
    assert_eq!(
        other.revoked_at(EntityKind::User, "bob").await.unwrap(),
        Some(1_800_000_100)
    );
    let all = other.all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all.get("user:bob"), Some(&1_800_000_100));
}

#[tokio::test]
async fn a_stopped_server_is_an_error_not_a_missing_revocation() {
    let Some(mut slapd) = Slapd::start_or_skip(
        "a_stopped_server_is_an_error_not_a_missing_revocation",
        Options::default(),
    ) else {
        return;
    };
    let list = revocations(&slapd);
    slapd.stop();
    assert!(list.revoked_at(EntityKind::User, "bob").await.is_err());
}
