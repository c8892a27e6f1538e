//! The LDAP backend against a real slapd (netns_tests::slapd): its
//! config and directory object with test timeouts, raw ldap3 binds (as
//! the administrator edits the directory), and reading a refusal.

use std::time::Duration;

use addrd::directory::{AuthError, Entity, Password, RefusalReason};
use addrd::ldap::{LdapConfig, LdapDirectory};
use ldap3::{Ldap, LdapConnAsync};
use netns_tests::slapd::{Slapd, ADMIN_DN, ADMIN_PASSWORD, BASE_DN, SERVICE_DN};
use zeroize::Zeroizing;

/// `s` as a password.
pub fn pw(s: &str) -> Password {
    Zeroizing::new(s.to_string())
}

/// The reason of a refused login; panics on anything else.
pub fn refusal(result: Result<Entity, AuthError>) -> RefusalReason {
    match result {
        Err(AuthError::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// User names that must match nobody: wildcards, filter fragments and
/// escapes, NULs, DNs, blanks, mixed spacing and very long names.
pub fn injection_names() -> Vec<String> {
    let long = "a".repeat(10 * 1024);
    let mut names: Vec<String> = [
        "*",
        "a*",
        "*e",
        "al*",
        ")(uid=*",
        "*)(|(uid=*",
        "alice)(|(uid=*",
        "alice)(uid=*)(",
        "*)(uid=*))(|(uid=*",
        "alice\0",
        "\0",
        "al\0ice",
        "\0alice",
        "alice\0*",
        "alice\\2a",
        "\\2a",
        "\\00",
        "(uid=alice)",
        "uid=alice,ou=people,dc=example,dc=org",
        "",
        " alice",
        "alice ",
        "al ice",
        "al  ice",
        "alice\n",
        "alice\t",
        "alice bob",
        "Alice Liddell",
        "alice@example.org",
    ]
    .map(str::to_owned)
    .into();
    names.push(format!("{long}*"));
    names.push(format!("alice{}", " ".repeat(10 * 1024)));
    names.push(long);
    names
}

/// The service account's config for `slapd`: operations time out after
/// `timeout`, reconnects back off from 20 to 200 ms.
pub fn config(slapd: &Slapd, timeout: Duration) -> LdapConfig {
    let mut c = LdapConfig::new(
        slapd.url(),
        BASE_DN,
        SERVICE_DN,
        slapd.service_password_file(),
    );
    c.timeout = timeout;
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

/// The directory object over `config`.
pub fn directory(config: LdapConfig) -> LdapDirectory {
    LdapDirectory::new(config).unwrap_or_else(|e| panic!("LdapDirectory: {e}"))
}

/// A raw ldap3 connection to `url`, bound as `dn` (admin or anyone), and
/// the bind's result code.
pub async fn raw_bind(url: &str, dn: &str, password: &str) -> (Ldap, u32) {
    let (conn, mut ldap) = LdapConnAsync::new(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn.drive());
    let result = ldap
        .simple_bind(dn, password)
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    (ldap, result.rc)
}

/// A raw ldap3 connection bound as the database's root DN.
pub async fn admin(slapd: &Slapd) -> Ldap {
    let (ldap, rc) = raw_bind(&slapd.url(), ADMIN_DN, ADMIN_PASSWORD).await;
    assert_eq!(rc, 0, "bind as {ADMIN_DN}");
    ldap
}
