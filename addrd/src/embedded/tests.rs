use std::time::{Duration, Instant};

use super::*;

/// `correct horse`, by `slappasswd -h {SSHA}`.
const SSHA_CORRECT_HORSE: &str = "{SSHA}XivE4Y2U8ZX2fq9ckn7E68CRszsSesTF";
/// `correct horse`, by OpenLDAP's argon2 module.
const ARGON2_CORRECT_HORSE: &str =
    "{ARGON2}$argon2i$v=19$m=4096,t=3,p=1$aoYVY+sOrkDLZRAJr9YkXw$x7Ga0eTDlau+aDJjn3+8M30h190EKUd76WcYL9GmaLA";
/// `wonderland`, by `slappasswd -h {SSHA}`.
const SSHA_WONDERLAND: &str = "{SSHA}A2Vkid2EbgoHVEuRQiN8CZ6+FETeH9Cw";

fn fixture() -> String {
    format!(
        "\
version: 1

dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: permanetEntity
uid: alice
cn: Alice
sn: Liddell
userPassword: {SSHA_WONDERLAND}

dn: uid=dave,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: permanetEntity
uid: dave
cn: Dave
sn: Lister
userPassword: {ARGON2_CORRECT_HORSE}
memberOf: cn=admins,ou=groups,dc=example,dc=org

dn: uid=erin,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: permanetEntity
uid: Erin
cn: Erin
sn: E
userPassword:: {erin_password}

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: permanetEntity
uid: carol
cn: Carol
sn: Danvers
userPassword: {SSHA_CORRECT_HORSE}
permanetDisabled: TRUE

dn: uid=olga,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: olga
cn: Olga
sn: O
userPassword: {{CRYPT}}kXVrmhOWady.sij368ykNdbE

dn: cn=staff,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: staff
member: uid=alice,ou=people,dc=example,dc=org
member: UID=Carol, ou=people, dc=example, dc=org

dn: cn=students,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: students
member: uid=dave,ou=people,dc=example,dc=org
member: uid=erin,ou=people,dc=example,dc=org

dn: cn=app1,ou=systems,dc=example,dc=org
objectClass: permanetSystem
cn: app1
permanetPublicIPv4: 198.51.100.10

dn: cn=wiki,ou=applications,dc=example,dc=org
objectClass: permanetApplication
cn: wiki
permanetSystem: app1
permanetAllowedGroup: staff
permanetAllowedGroup: students
description: the wiki
",
        erin_password = base64::engine::general_purpose::STANDARD.encode(ARGON2_CORRECT_HORSE),
    )
}

use base64::Engine as _;

struct Fixture {
    dir: tempfile::TempDir,
    directory: EmbeddedDirectory,
    report: LoadReport,
}

impl Fixture {
    fn ldif(&self) -> PathBuf {
        self.dir.path().join("directory.ldif")
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("addresses.redb")
    }
}

async fn open(ldif: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("directory.ldif"), ldif).unwrap();
    let (directory, report) = EmbeddedDirectory::open(
        &dir.path().join("directory.ldif"),
        &dir.path().join("addresses.redb"),
    )
    .await
    .unwrap();
    Fixture {
        dir,
        directory,
        report,
    }
}

fn password(s: &str) -> Password {
    Password::new(s.to_owned())
}

async fn login(d: &EmbeddedDirectory, user: &str, pw: &str) -> Result<Entity, RefusalReason> {
    d.authenticate(user, &password(pw))
        .await
        .map_err(|e| match e {
            AuthError::Refused { reason } => reason,
            other => panic!("{other}"),
        })
}

#[tokio::test]
async fn loads_users_groups_applications_and_systems_by_the_vocabulary() {
    let f = open(&fixture()).await;
    assert_eq!(
        (
            f.report.users,
            f.report.applications,
            f.report.systems,
            f.report.groups
        ),
        (5, 1, 1, 2)
    );
    assert!(f.report.skipped.is_empty(), "{:?}", f.report.skipped);
    assert_eq!(
        f.report.unusable_passwords,
        [(
            "uid=olga,ou=people,dc=example,dc=org".to_owned(),
            PasswordError::UnsupportedScheme("{CRYPT}".to_owned())
        )]
    );
    let d = &f.directory;
    let carol = d.lookup(EntityKind::User, "carol").await.unwrap().unwrap();
    // member values are compared as DNs (case, spaces).
    assert_eq!(carol.groups, ["staff"]);
    assert!(carol.disabled);
    // memberOf where present, groups' member otherwise.
    let dave = d.lookup(EntityKind::User, "DAVE").await.unwrap().unwrap();
    assert_eq!(dave.groups, ["admins", "students"]);
    assert_eq!(dave.dn, "uid=dave,ou=people,dc=example,dc=org");
    let erin = d.lookup(EntityKind::User, "erin").await.unwrap().unwrap();
    assert_eq!(erin.name, "erin");
    let wiki = d
        .lookup(EntityKind::Application, "wiki")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wiki.allowed_groups, ["staff", "students"]);
    assert_eq!(wiki.system.as_deref(), Some("app1"));
    let app1 = d.lookup(EntityKind::System, "app1").await.unwrap().unwrap();
    assert_eq!(app1.public_ipv4, Some("198.51.100.10".parse().unwrap()));
    assert_eq!(d.lookup(EntityKind::User, "wiki").await.unwrap(), None);
    assert_eq!(d.lookup(EntityKind::System, "nobody").await.unwrap(), None);
    let names: Vec<String> = d
        .entities()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        ["alice", "carol", "dave", "erin", "olga", "wiki", "app1"]
    );
}

#[tokio::test]
async fn logins_accept_the_right_password_and_refuse_everything_else() {
    let f = open(&fixture()).await;
    let d = &f.directory;
    assert_eq!(login(d, "alice", "wonderland").await.unwrap().name, "alice");
    assert_eq!(login(d, "ALICE", "wonderland").await.unwrap().name, "alice");
    assert_eq!(
        login(d, "dave", "correct horse").await.unwrap().groups,
        ["admins", "students"]
    );
    // A base64 (`::`) userPassword.
    assert!(login(d, "erin", "correct horse").await.is_ok());
    let refusals = [
        ("alice", "wonderlanD", RefusalReason::WrongPassword),
        ("alice", "", RefusalReason::EmptyPassword),
        ("nobody", "", RefusalReason::EmptyPassword),
        ("nobody", "wonderland", RefusalReason::UnknownUser),
        ("carol", "correct horse", RefusalReason::Disabled),
        ("carol", "wrong", RefusalReason::WrongPassword),
        // {CRYPT} is not verified: the user exists but cannot log in.
        ("olga", "correct horse", RefusalReason::WrongPassword),
        ("*", "wonderland", RefusalReason::UnknownUser),
        (")(uid=*", "wonderland", RefusalReason::UnknownUser),
        ("*)(|(uid=*", "wonderland", RefusalReason::UnknownUser),
        ("alice\0", "wonderland", RefusalReason::UnknownUser),
        ("wiki", "wonderland", RefusalReason::UnknownUser),
    ];
    for (user, pw, reason) in refusals {
        assert_eq!(login(d, user, pw).await.unwrap_err(), reason, "{user:?}");
    }
    let long = "a".repeat(10 * 1024);
    assert_eq!(
        login(d, &long, "wonderland").await.unwrap_err(),
        RefusalReason::UnknownUser
    );
    assert!(d.lookup(EntityKind::User, "olga").await.unwrap().is_some());
}

/// An unknown user costs what a wrong password costs: without the dummy
/// verification the unknown user would answer in microseconds, the wrong
/// password in milliseconds (Argon2 m=4096, t=3).
#[tokio::test]
async fn unknown_users_take_as_long_as_wrong_passwords() {
    let f = open(&fixture()).await;
    let d = &f.directory;
    async fn timed(d: &EmbeddedDirectory, user: &str) -> Duration {
        let start = Instant::now();
        assert!(login(d, user, "not the password").await.is_err());
        start.elapsed()
    }
    // Interleaved, and the fastest of each: other tests and other
    // processes share the CPU, and load only ever adds time.
    timed(d, "dave").await;
    let (mut wrong, mut unknown) = (Duration::MAX, Duration::MAX);
    for _ in 0..9 {
        wrong = wrong.min(timed(d, "dave").await);
        unknown = unknown.min(timed(d, "nobody-at-all").await);
    }
    println!("fastest wrong password {wrong:?}, unknown user {unknown:?}");
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "{wrong:?} vs {unknown:?}");
}

#[tokio::test]
async fn malformed_entries_are_skipped_whole_and_named() {
    let bad = "
dn: uid=nouid,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
cn: x

dn: uid=badaddr,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: badaddr
permanetAddress: 10.0.0.1

dn: uid=dup,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice

dn: uid=flag,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: flag
permanetDisabled: yes

dn: uid=bad name,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: bad name

dn: cn=both,ou=systems,dc=example,dc=org
objectClass: permanetSystem
objectClass: permanetApplication
cn: both

dn: cn=nosys,ou=applications,dc=example,dc=org
objectClass: permanetApplication
cn: nosys

dn: cn=badv4,ou=systems,dc=example,dc=org
objectClass: permanetSystem
cn: badv4
permanetPublicIPv4: 198.51.100

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice2
";
    let f = open(&format!("{}{bad}", fixture())).await;
    let skipped: Vec<String> = f.report.skipped.iter().map(|e| e.to_string()).collect();
    for dn in [
        "uid=nouid,",
        "uid=badaddr,",
        "uid=dup,",
        "uid=flag,",
        "uid=bad name,",
        "cn=both,",
        "cn=nosys,",
        "cn=badv4,",
    ] {
        assert!(
            skipped.iter().any(|s| s.starts_with(dn)),
            "{dn} not in {skipped:#?}"
        );
    }
    assert!(skipped.iter().any(|s| s.contains("duplicate entry")));
    assert_eq!(skipped.len(), 9, "{skipped:#?}");
    assert_eq!(f.directory.counters().skipped_entries, 9);
    // The good entries are all there, the bad ones not at all.
    assert_eq!(f.report.users, 5);
    assert_eq!(f.report.systems, 1);
    let d = &f.directory;
    assert!(d
        .lookup(EntityKind::User, "badaddr")
        .await
        .unwrap()
        .is_none());
    assert!(d
        .lookup(EntityKind::User, "alice2")
        .await
        .unwrap()
        .is_none());
    assert!(login(d, "alice", "wonderland").await.is_ok());
}

#[tokio::test]
async fn reload_swaps_the_data_and_a_bad_file_keeps_the_old() {
    let f = open(&fixture()).await;
    let d = &f.directory;
    let changed = fixture()
        .replace("uid: carol", "uid: caroline")
        .replace("member: uid=alice,ou=people,dc=example,dc=org\n", "");
    std::fs::write(f.ldif(), changed).unwrap();
    let report = d.reload().await.unwrap();
    assert_eq!(report.users, 5);
    assert!(d.lookup(EntityKind::User, "carol").await.unwrap().is_none());
    assert!(d
        .lookup(EntityKind::User, "caroline")
        .await
        .unwrap()
        .is_some());
    let alice = d.lookup(EntityKind::User, "alice").await.unwrap().unwrap();
    assert!(alice.groups.is_empty(), "regrouped at reload");

    std::fs::write(f.ldif(), "dn: uid=x\nthis line has no colon\n").unwrap();
    let error = d.reload().await.unwrap_err();
    assert!(
        matches!(&error, EmbeddedError::Parse { source, .. } if source.line == 2),
        "{error}"
    );
    std::fs::remove_file(f.ldif()).unwrap();
    assert!(matches!(
        d.reload().await.unwrap_err(),
        EmbeddedError::Read { .. }
    ));
    // The last good data is still served.
    assert!(d
        .lookup(EntityKind::User, "caroline")
        .await
        .unwrap()
        .is_some());
    assert!(login(d, "alice", "wonderland").await.is_ok());
    assert_eq!(
        d.counters(),
        EmbeddedCounters {
            skipped_entries: 0,
            reloads: 1,
            failed_reloads: 2
        }
    );
}

#[tokio::test]
async fn addresses_are_reserved_recorded_and_survive_reopening() {
    let f = open(&fixture()).await;
    let d = &f.directory;
    let a: Ipv6Addr = "2002:c000:204:1::1234".parse().unwrap();
    let alice_dn = "uid=alice,ou=people,dc=example,dc=org";
    assert_eq!(
        d.reserve_address(a, alice_dn).await.unwrap(),
        Reservation::Created
    );
    assert_eq!(
        d.reserve_address(a, "uid=dave,ou=people,dc=example,dc=org")
            .await
            .unwrap(),
        Reservation::Taken {
            holder: alice_dn.to_owned()
        }
    );
    assert!(d
        .record_address("uid=dave,ou=people,dc=example,dc=org", a)
        .await
        .is_err());
    d.record_address(alice_dn, a).await.unwrap();
    assert_eq!(
        login(d, "alice", "wonderland").await.unwrap().address,
        Some(a)
    );
    let (ldif, store) = (f.ldif(), f.store());
    let _dir = f.dir;
    drop(f.directory);
    let (d, _) = EmbeddedDirectory::open(&ldif, &store).await.unwrap();
    let alice = d.lookup(EntityKind::User, "alice").await.unwrap().unwrap();
    assert_eq!(alice.address, Some(a));
    let listed = d.entities().await.unwrap();
    assert_eq!(
        listed.iter().find(|e| e.name == "alice").unwrap().address,
        Some(a)
    );
}

#[tokio::test]
async fn addresses_named_in_the_ldif_are_reserved_at_load() {
    let with_addresses = fixture()
        .replace(
            "uid: alice\n",
            "uid: alice\npermanetAddress: 2002:c000:204:1::a\n",
        )
        // dave claims the address reserved (tombstone) for a deleted user.
        .replace(
            "uid: dave\n",
            "uid: dave\npermanetAddress: 2002:c000:204:1::dead\n",
        )
        + "
dn: permanetAddress=2002:c000:204:1::dead,ou=addresses,dc=example,dc=org
objectClass: permanetReservation
permanetAddress: 2002:c000:204:1::dead
permanetHolder: uid=gone,ou=people,dc=example,dc=org
";
    let f = open(&with_addresses).await;
    let store = f.directory.store();
    let alice: Ipv6Addr = "2002:c000:204:1::a".parse().unwrap();
    let dead: Ipv6Addr = "2002:c000:204:1::dead".parse().unwrap();
    assert_eq!(
        store.holder(alice).unwrap().as_deref(),
        Some("uid=alice,ou=people,dc=example,dc=org")
    );
    assert_eq!(
        store.holder(dead).unwrap().as_deref(),
        Some("uid=gone,ou=people,dc=example,dc=org")
    );
    assert_eq!(f.report.skipped.len(), 1, "{:?}", f.report.skipped);
    assert!(f.report.skipped[0].to_string().starts_with("uid=dave,"));
    assert!(f
        .directory
        .lookup(EntityKind::User, "dave")
        .await
        .unwrap()
        .is_none());
}
