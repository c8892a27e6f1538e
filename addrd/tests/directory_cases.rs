//! The directory cases of issue #4, each written once and run against both
//! backends: a real OpenLDAP slapd loaded with `configs/ldap/example-org.ldif`
//! (netns_tests::slapd, which allows anonymous binds with a DN, so a missing
//! empty-password check fails here) and the embedded directory over the same
//! file. Each case is an async fn generic over a [`Backend`] (the directory
//! plus what an administrator does to it: change a group, disable or delete
//! an entry, add entries, restart); [`both!`] makes a `ldap` and an
//! `embedded` test of it.
//!
//! Tests that need both backends at once compare them: `entities()` of the
//! two must be equal, addresses included, for the example organisation and
//! for entries spelled in mixed case.
//!
//! Without slapd installed (and not root) the LDAP tests report "skipped:
//! slapd not installed" and return.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use addrd::alloc::{AllocError, AllocationKey, Allocator, CandidateSpace};
use addrd::directory::{AuthError, Directory, Entity, RefusalReason, Reservation};
use addrd::embedded::EmbeddedDirectory;
use addrd::ldap::LdapDirectory;
use ldap3::{Mod, Scope};
use netns_tests::slapd::{Options, Slapd, ADMIN_DN, BASE_DN};
use overlay_proto::addr::{AddressPlan, Ipv4Policy, OverlayPrefix, DEFAULT_USER_SUBNET_ID};
use overlay_proto::lease::EntityKind;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::ldap::{admin, pw, refusal};

const ALICE: &str = "uid=alice,ou=people,dc=example,dc=org";
const BOB: &str = "uid=bob,ou=people,dc=example,dc=org";
const STAFF: &str = "cn=staff,ou=groups,dc=example,dc=org";
const STUDENTS: &str = "cn=students,ou=groups,dc=example,dc=org";

/// The example organisation's users and their passwords.
const PASSWORDS: [(&str, &str); 4] = [
    ("alice", "alice-lab-password"),
    ("bob", "bob-lab-password"),
    ("carol", "carol-lab-password"),
    ("dave", "dave-lab-password"),
];

fn example_ldif() -> PathBuf {
    netns_tests::slapd::configs_dir().join("example-org.ldif")
}

/// A directory backend under test, and what an administrator does to it.
trait Backend: Sized {
    /// The directory.
    type Dir: Directory + Clone + Send + Sync + 'static;

    /// A fresh backend loaded with the example organisation; `None` when
    /// skipped (reported). `bulk`: tuned for thousands of writes (slapd
    /// does not flush to disk at each).
    async fn start(test: &str, bulk: bool) -> Option<Self>;

    /// The directory object.
    fn dir(&self) -> &Self::Dir;

    /// Drop the directory object and make a new one over the same data
    /// (addrd restarted). No clone of the old one may be alive.
    async fn reopen(&mut self);

    /// Add `member` to the group `group` (DN).
    async fn add_member(&mut self, group: &str, member: &str);

    /// Remove `member` from the group `group` (DN).
    async fn remove_member(&mut self, group: &str, member: &str);

    /// Set or clear `permanetDisabled` on `dn`.
    async fn set_disabled(&mut self, dn: &str, disabled: bool);

    /// Delete the entry `dn` (and, like refint would, its group
    /// memberships).
    async fn delete(&mut self, dn: &str);

    /// Add the entries of `ldif` (records separated by blank lines).
    async fn add_entries(&mut self, ldif: &str);

    /// A second directory object over the same data, as another addrd
    /// replica has: for LDAP its own service connection; the embedded
    /// store is one process's, so there it is a second handle in the same
    /// process.
    fn replica(&self) -> Self::Dir;

    /// Every address reservation (the tombstones): address → holder DN,
    /// read past the directory object.
    async fn reservations(&self) -> BTreeMap<Ipv6Addr, String>;
}

/// The LDAP backend over a private slapd.
struct LdapBackend {
    slapd: Slapd,
    dir: LdapDirectory,
}

fn ldap_directory(slapd: &Slapd) -> LdapDirectory {
    common::ldap::directory(common::ldap::config(slapd, Duration::from_secs(10)))
}

impl LdapBackend {
    async fn modify(&self, dn: &str, mods: Vec<Mod<&str>>) {
        let mut admin = admin(&self.slapd).await;
        let result = admin
            .modify(dn, mods)
            .await
            .unwrap_or_else(|e| panic!("modify {dn}: {e}"));
        assert_eq!(result.rc, 0, "modify {dn}: {}", result.text);
        let _ = admin.unbind().await;
    }

    /// `ldapadd` of a file, as an administrator loads entries.
    fn ldapadd(&self, file: &Path) {
        let admin_password = self.slapd.dir().join("admin.password");
        let out = Command::new("ldapadd")
            .arg("-x")
            .arg("-H")
            .arg(self.slapd.url())
            .arg("-D")
            .arg(ADMIN_DN)
            .arg("-y")
            .arg(&admin_password)
            .arg("-f")
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("ldapadd: {e}"));
        assert!(
            out.status.success(),
            "ldapadd: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Backend for LdapBackend {
    type Dir = LdapDirectory;

    async fn start(test: &str, bulk: bool) -> Option<Self> {
        let options = Options {
            no_sync: bulk,
            ..Options::default()
        };
        let slapd = Slapd::start_or_skip(test, options)?;
        let dir = ldap_directory(&slapd);
        Some(LdapBackend { slapd, dir })
    }

    fn dir(&self) -> &LdapDirectory {
        &self.dir
    }

    async fn reopen(&mut self) {
        self.dir = ldap_directory(&self.slapd);
    }

    async fn add_member(&mut self, group: &str, member: &str) {
        self.modify(group, vec![Mod::Add("member", HashSet::from([member]))])
            .await;
    }

    async fn remove_member(&mut self, group: &str, member: &str) {
        self.modify(group, vec![Mod::Delete("member", HashSet::from([member]))])
            .await;
    }

    async fn set_disabled(&mut self, dn: &str, disabled: bool) {
        let value = if disabled { "TRUE" } else { "FALSE" };
        self.modify(
            dn,
            vec![Mod::Replace("permanetDisabled", HashSet::from([value]))],
        )
        .await;
    }

    async fn delete(&mut self, dn: &str) {
        let mut admin = admin(&self.slapd).await;
        // Its memberships first (no refint overlay here).
        let (groups, _) = admin
            .search(
                &format!("ou=groups,{BASE_DN}"),
                Scope::Subtree,
                &format!("(member={})", ldap3::ldap_escape(dn)),
                vec!["cn"],
            )
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("search groups: {e}"));
        for group in groups {
            let group = ldap3::SearchEntry::construct(group).dn;
            self.remove_member(&group, dn).await;
        }
        let result = admin
            .delete(dn)
            .await
            .unwrap_or_else(|e| panic!("delete {dn}: {e}"));
        assert_eq!(result.rc, 0, "delete {dn}: {}", result.text);
        let _ = admin.unbind().await;
    }

    async fn add_entries(&mut self, ldif: &str) {
        let file = self.slapd.dir().join("extra.ldif");
        std::fs::write(&file, ldif).unwrap_or_else(|e| panic!("write: {e}"));
        self.ldapadd(&file);
        let _ = std::fs::remove_file(&file);
    }

    fn replica(&self) -> LdapDirectory {
        ldap_directory(&self.slapd)
    }

    async fn reservations(&self) -> BTreeMap<Ipv6Addr, String> {
        let mut admin = admin(&self.slapd).await;
        let (entries, _) = admin
            .search(
                &format!("ou=addresses,{BASE_DN}"),
                Scope::OneLevel,
                "(objectClass=permanetReservation)",
                vec!["permanetAddress", "permanetHolder"],
            )
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("search reservations: {e}"));
        let mut all = BTreeMap::new();
        for entry in entries {
            let entry = ldap3::SearchEntry::construct(entry);
            let one = |attr: &str| match entry.attrs.get(attr).map(Vec::as_slice) {
                Some([v]) => v.clone(),
                other => panic!("{}: {attr} {other:?}", entry.dn),
            };
            let address: Ipv6Addr = one("permanetAddress")
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}", entry.dn));
            assert!(all.insert(address, one("permanetHolder")).is_none());
        }
        let _ = admin.unbind().await;
        all
    }
}

/// The embedded backend over a copy of the example LDIF that the test
/// edits (and reloads) as an administrator edits the file (and sends
/// SIGHUP).
struct EmbeddedBackend {
    tmp: tempfile::TempDir,
    /// The LDIF's records, in file order.
    records: Vec<String>,
    dir: Option<EmbeddedDirectory>,
}

impl EmbeddedBackend {
    fn ldif_path(&self) -> PathBuf {
        self.tmp.path().join("directory.ldif")
    }

    fn store_path(&self) -> PathBuf {
        self.tmp.path().join("addresses.redb")
    }

    async fn open(&self) -> EmbeddedDirectory {
        let (dir, report) = EmbeddedDirectory::open(&self.ldif_path(), &self.store_path())
            .await
            .unwrap_or_else(|e| panic!("open: {e}"));
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        dir
    }

    /// Write the records and reload, as on SIGHUP.
    async fn write_and_reload(&mut self) {
        std::fs::write(self.ldif_path(), self.records.join("\n\n") + "\n")
            .unwrap_or_else(|e| panic!("write LDIF: {e}"));
        let report = self
            .dir()
            .reload()
            .await
            .unwrap_or_else(|e| panic!("reload: {e}"));
        // Skipped entries are logged by the directory; the cases check
        // what is visible.
        for skipped in report.skipped {
            eprintln!("embedded: skipped {skipped}");
        }
    }

    fn record_mut(&mut self, dn: &str) -> &mut String {
        let head = format!("dn: {dn}\n");
        self.records
            .iter_mut()
            .find(|r| r.starts_with(&head) || r.contains(&format!("\n{head}")))
            .unwrap_or_else(|| panic!("no record {dn}"))
    }
}

/// An LDIF text as records (blank-line separated, comments kept).
fn records(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|r| r.trim_matches('\n').to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

impl Backend for EmbeddedBackend {
    type Dir = EmbeddedDirectory;

    async fn start(_test: &str, _bulk: bool) -> Option<Self> {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let text = std::fs::read_to_string(example_ldif()).unwrap_or_else(|e| panic!("{e}"));
        let mut backend = EmbeddedBackend {
            tmp,
            records: records(&text),
            dir: None,
        };
        std::fs::write(backend.ldif_path(), &text).unwrap_or_else(|e| panic!("{e}"));
        backend.dir = Some(backend.open().await);
        Some(backend)
    }

    fn dir(&self) -> &EmbeddedDirectory {
        self.dir
            .as_ref()
            .unwrap_or_else(|| panic!("directory not open"))
    }

    async fn reopen(&mut self) {
        // The store is one process's at a time: close it first.
        drop(self.dir.take());
        self.dir = Some(self.open().await);
    }

    async fn add_member(&mut self, group: &str, member: &str) {
        self.record_mut(group)
            .push_str(&format!("\nmember: {member}"));
        self.write_and_reload().await;
    }

    async fn remove_member(&mut self, group: &str, member: &str) {
        let line = format!("member: {member}");
        let record = self.record_mut(group);
        *record = record
            .lines()
            .filter(|l| *l != line)
            .collect::<Vec<_>>()
            .join("\n");
        self.write_and_reload().await;
    }

    async fn set_disabled(&mut self, dn: &str, disabled: bool) {
        let record = self.record_mut(dn);
        let mut lines: Vec<&str> = record
            .lines()
            .filter(|l| !l.starts_with("permanetDisabled:"))
            .collect();
        let line = format!(
            "permanetDisabled: {}",
            if disabled { "TRUE" } else { "FALSE" }
        );
        lines.push(&line);
        *record = lines.join("\n");
        self.write_and_reload().await;
    }

    async fn delete(&mut self, dn: &str) {
        let head = format!("dn: {dn}\n");
        let member = format!("member: {dn}");
        self.records.retain(|r| !r.starts_with(&head));
        for r in &mut self.records {
            if r.contains(&member) {
                *r = r
                    .lines()
                    .filter(|l| *l != member)
                    .collect::<Vec<_>>()
                    .join("\n");
            }
        }
        self.write_and_reload().await;
    }

    async fn add_entries(&mut self, ldif: &str) {
        self.records.extend(records(ldif));
        self.write_and_reload().await;
    }

    fn replica(&self) -> EmbeddedDirectory {
        self.dir().clone()
    }

    async fn reservations(&self) -> BTreeMap<Ipv6Addr, String> {
        let store = self.dir().store();
        let all = store.reservations().unwrap_or_else(|e| panic!("{e}"));
        all.into_iter().collect()
    }
}

/// `ldap` and `embedded` tests of the generic case `$case`.
macro_rules! both {
    ($($case:ident $(: $bulk:ident)?),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ldap() {
                let test = concat!(stringify!($case), "::ldap");
                let bulk = false $(|| stringify!($bulk) == "bulk")?;
                if let Some(backend) = LdapBackend::start(test, bulk).await {
                    super::$case(backend).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let test = concat!(stringify!($case), "::embedded");
                let bulk = false $(|| stringify!($bulk) == "bulk")?;
                if let Some(backend) = EmbeddedBackend::start(test, bulk).await {
                    super::$case(backend).await;
                }
            }
        }
    )*};
}

both!(
    good_login,
    wrong_password,
    empty_password,
    unknown_user,
    filter_injection,
    disabled_user,
    group_change_seen_by_the_next_lookup,
    lookup_by_kind,
    addresses_assigned_and_kept,
    deleted_entity_address_never_reassigned,
    ten_thousand_entities_keep_their_addresses: bulk,
    replicas_allocating_concurrently_never_collide: bulk,
);

async fn login<B: Backend>(b: &B, user: &str, password: &str) -> Result<Entity, AuthError> {
    b.dir().authenticate(user, &pw(password)).await
}

async fn lookup<B: Backend>(b: &B, kind: EntityKind, name: &str) -> Option<Entity> {
    b.dir()
        .lookup(kind, name)
        .await
        .unwrap_or_else(|e| panic!("lookup {kind:?} {name:?}: {e}"))
}

async fn good_login<B: Backend>(b: B) {
    let alice = login(&b, "alice", "alice-lab-password")
        .await
        .unwrap_or_else(|e| panic!("alice: {e:?}"));
    assert_eq!(alice.dn, ALICE);
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.kind, EntityKind::User);
    assert_eq!(alice.groups, ["admins", "staff"]);
    assert!(!alice.disabled);
    assert_eq!(alice.address, None);
    assert!(alice.allowed_groups.is_empty());
    assert_eq!((alice.system, alice.public_ipv4), (None, None));
    let bob = login(&b, "bob", "bob-lab-password")
        .await
        .unwrap_or_else(|e| panic!("bob: {e:?}"));
    assert_eq!(
        (bob.dn.as_str(), bob.groups.as_slice()),
        (BOB, &["students".to_string()][..])
    );
    // dave's hash is {ARGON2}.
    let dave = login(&b, "dave", "dave-lab-password")
        .await
        .unwrap_or_else(|e| panic!("dave: {e:?}"));
    assert_eq!(dave.name, "dave");
    assert_eq!(dave.groups, ["students"]);
}

async fn wrong_password<B: Backend>(b: B) {
    for (user, password) in [
        ("alice", "bob-lab-password"),
        ("alice", "alice-lab-passwordx"),
        ("alice", "ALICE-LAB-PASSWORD"),
        ("alice", "alice-lab-passwor"),
        ("alice", " alice-lab-password"),
        ("dave", "alice-lab-password"),
        ("bob", "\0"),
    ] {
        assert_eq!(
            refusal(login(&b, user, password).await),
            RefusalReason::WrongPassword,
            "{user} with {password:?}"
        );
    }
}

async fn empty_password<B: Backend>(b: B) {
    for user in ["alice", "carol", "nobody", ""] {
        assert_eq!(
            refusal(login(&b, user, "").await),
            RefusalReason::EmptyPassword,
            "{user:?}"
        );
    }
}

async fn unknown_user<B: Backend>(b: B) {
    for (user, password) in [
        ("mallory", "alice-lab-password"),
        ("alicia", "alice-lab-password"),
        // The service account and the structure are not users.
        ("addrd", "addrd-lab-password"),
        ("admin", "permanet-test-admin"),
        ("people", "x"),
        // Applications and systems are not users either.
        ("wiki", "x"),
        ("app1", "x"),
    ] {
        assert_eq!(
            refusal(login(&b, user, password).await),
            RefusalReason::UnknownUser,
            "{user}"
        );
        assert_eq!(lookup(&b, EntityKind::User, user).await, None, "{user}");
    }
}

async fn filter_injection<B: Backend>(b: B) {
    for name in common::ldap::injection_names() {
        let name = name.as_str();
        let shown = name.get(..40).unwrap_or(name);
        // Every known password: none may let a wildcard or a filter
        // fragment match someone.
        for (_, password) in PASSWORDS {
            let result = login(&b, name, password).await;
            assert!(
                matches!(result, Err(AuthError::Refused { .. })),
                "{shown:?} with {password}: {result:?}"
            );
        }
        for kind in [
            EntityKind::User,
            EntityKind::Application,
            EntityKind::System,
        ] {
            assert_eq!(lookup(&b, kind, name).await, None, "{kind:?} {shown:?}");
        }
    }
    // Case variants name the same user (uid matching ignores case) and
    // only that user.
    for name in ["ALICE", "Alice", "aLiCe"] {
        let alice = login(&b, name, "alice-lab-password")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!((alice.dn.as_str(), alice.name.as_str()), (ALICE, "alice"));
        for (user, password) in PASSWORDS.iter().skip(1) {
            assert_eq!(
                refusal(login(&b, name, password).await),
                RefusalReason::WrongPassword,
                "{name} with {user}'s password"
            );
        }
        let found = lookup(&b, EntityKind::User, name).await;
        assert_eq!(found.map(|e| e.dn), Some(ALICE.to_string()), "{name}");
    }
    let wiki = lookup(&b, EntityKind::Application, "WiKi").await;
    assert_eq!(wiki.map(|e| e.name), Some("wiki".to_string()));
    // The real names still work.
    assert!(login(&b, "alice", "alice-lab-password").await.is_ok());
}

async fn disabled_user<B: Backend>(b: B) {
    assert_eq!(
        refusal(login(&b, "carol", "carol-lab-password").await),
        RefusalReason::Disabled
    );
    // The flag is looked at only after the password was right.
    assert_eq!(
        refusal(login(&b, "carol", "alice-lab-password").await),
        RefusalReason::WrongPassword
    );
    let carol = lookup(&b, EntityKind::User, "carol").await;
    let carol = carol.unwrap_or_else(|| panic!("carol"));
    assert!(carol.disabled);
    assert_eq!(carol.groups, ["staff"]);
}

/// The renewal path: what the directory says now, not at login.
async fn group_change_seen_by_the_next_lookup<B: Backend>(mut b: B) {
    let groups = |e: Option<Entity>| e.unwrap_or_else(|| panic!("bob gone")).groups;
    assert_eq!(
        groups(lookup(&b, EntityKind::User, "bob").await),
        ["students"]
    );
    b.add_member(STAFF, BOB).await;
    assert_eq!(
        groups(lookup(&b, EntityKind::User, "bob").await),
        ["staff", "students"]
    );
    b.remove_member(STUDENTS, BOB).await;
    assert_eq!(groups(lookup(&b, EntityKind::User, "bob").await), ["staff"]);
    let bob = login(&b, "bob", "bob-lab-password").await;
    assert_eq!(bob.map(|e| e.groups).ok(), Some(vec!["staff".to_string()]));
    // Who may reach an application follows too: wiki is staff's.
    let wiki = lookup(&b, EntityKind::Application, "wiki").await;
    assert_eq!(wiki.map(|w| w.allowed_groups), Some(vec!["staff".into()]));

    // Disabled: the next lookup says so, logins are refused.
    b.set_disabled(BOB, true).await;
    let bob = lookup(&b, EntityKind::User, "bob").await;
    assert_eq!(bob.map(|e| e.disabled), Some(true));
    assert_eq!(
        refusal(login(&b, "bob", "bob-lab-password").await),
        RefusalReason::Disabled
    );
    b.set_disabled(BOB, false).await;
    assert!(login(&b, "bob", "bob-lab-password").await.is_ok());

    // Removed: gone for lookups and logins.
    b.delete(BOB).await;
    assert_eq!(lookup(&b, EntityKind::User, "bob").await, None);
    assert_eq!(
        refusal(login(&b, "bob", "bob-lab-password").await),
        RefusalReason::UnknownUser
    );
    let staff: Vec<String> = entities(b.dir())
        .await
        .into_iter()
        .filter(|e| e.groups.iter().any(|g| g == "staff"))
        .map(|e| e.name)
        .collect();
    assert_eq!(staff, ["alice", "carol"]);
}

async fn lookup_by_kind<B: Backend>(b: B) {
    let all = entities(b.dir()).await;
    assert_eq!(all.len(), 8);
    for entity in &all {
        let found = lookup(&b, entity.kind, &entity.name).await;
        assert_eq!(
            found.as_ref(),
            Some(entity),
            "{:?} {}",
            entity.kind,
            entity.name
        );
        // Kinds are kept apart.
        for other in [
            EntityKind::User,
            EntityKind::Application,
            EntityKind::System,
        ] {
            if other != entity.kind {
                assert_eq!(
                    lookup(&b, other, &entity.name).await,
                    None,
                    "{} as {other:?}",
                    entity.name
                );
            }
        }
    }
    let wiki = lookup(&b, EntityKind::Application, "wiki").await;
    let wiki = wiki.unwrap_or_else(|| panic!("wiki"));
    assert_eq!(wiki.system.as_deref(), Some("app1"));
    assert_eq!(wiki.allowed_groups, ["staff"]);
    let app1 = lookup(&b, EntityKind::System, "app1").await;
    let app1 = app1.unwrap_or_else(|| panic!("app1"));
    assert_eq!(app1.public_ipv4, Some([11, 22, 33, 44].into()));
    for (kind, name) in [
        (EntityKind::User, "nobody"),
        (EntityKind::Application, "nothing"),
        (EntityKind::System, "nowhere"),
    ] {
        assert_eq!(lookup(&b, kind, name).await, None);
    }
}

/// Every entity, sorted by kind then name.
async fn entities<D: Directory>(dir: &D) -> Vec<Entity> {
    let mut all = dir
        .entities()
        .await
        .unwrap_or_else(|e| panic!("entities: {e}"));
    all.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
    all
}

fn plan() -> AddressPlan {
    AddressPlan::new(
        OverlayPrefix::ula_from_global_id([1, 2, 3, 4, 5]),
        DEFAULT_USER_SUBNET_ID,
    )
    .unwrap_or_else(|e| panic!("plan: {e}"))
}

fn allocator() -> Allocator {
    Allocator::new(
        plan(),
        AllocationKey::from_bytes([9; 32]),
        Ipv4Policy::default(),
    )
}

/// Assign every entity; no failure allowed.
async fn assign_all<D: Directory>(allocator: &Allocator, dir: &D) {
    let failures = allocator
        .assign_all(dir)
        .await
        .unwrap_or_else(|e| panic!("assign_all: {e}"));
    assert!(failures.is_empty(), "{failures:?}");
}

/// The addresses of `all` by DN; each entity has one and no two share.
fn addresses(all: &[Entity]) -> BTreeMap<String, Ipv6Addr> {
    let mut by_address: HashMap<Ipv6Addr, &str> = HashMap::new();
    let mut by_dn = BTreeMap::new();
    for e in all {
        let address = e
            .address
            .unwrap_or_else(|| panic!("{} has no address", e.dn));
        if let Some(other) = by_address.insert(address, &e.dn) {
            panic!("{address} given to {other} and {}", e.dn);
        }
        by_dn.insert(e.dn.to_ascii_lowercase(), address);
    }
    by_dn
}

async fn addresses_assigned_and_kept<B: Backend>(mut b: B) {
    let allocator = allocator();
    assign_all(&allocator, b.dir()).await;
    let all = entities(b.dir()).await;
    let assigned = addresses(&all);
    assert_eq!(assigned.len(), 8);
    let app1 = all.iter().find(|e| e.name == "app1");
    let app1 = app1
        .and_then(|e| e.address)
        .unwrap_or_else(|| panic!("app1"));
    // app1's public IPv4 11.22.33.44 is 2002:0b16:212c::/48; its SVN is
    // the /64 of its address; the applications live in it.
    let server: ipnet::Ipv6Net = "2002:b16:212c::/48"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(server.contains(&app1), "{app1}");
    let svn = ipnet::Ipv6Net::new(app1, 64)
        .map(|n| n.trunc())
        .unwrap_or_else(|e| panic!("{e}"));
    for e in &all {
        let address = e.address.unwrap_or_else(|| panic!("{}", e.name));
        match e.kind {
            EntityKind::User => assert!(plan().user_subnet().contains(&address), "{}", e.name),
            EntityKind::Application => assert!(svn.contains(&address), "{}", e.name),
            EntityKind::System => {}
        }
    }
    // Logins and lookups see the recorded address.
    let alice = login(&b, "alice", "alice-lab-password").await;
    let alice_address = assigned.get(ALICE).copied();
    assert_eq!(alice.ok().and_then(|a| a.address), alice_address);

    // addrd restarted: the same addresses, nothing new assigned.
    b.reopen().await;
    assert_eq!(addresses(&entities(b.dir()).await), assigned);
    for e in entities(b.dir()).await {
        let again = allocator
            .assign(b.dir(), &e)
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", e.dn));
        assert!(!again.new, "{}", e.dn);
        assert_eq!(Some(again.address), e.address);
    }
    // The reservations survived: nobody else can have alice's address.
    let alice_address = alice_address.unwrap_or_else(|| panic!("alice"));
    let taken = b.dir().reserve_address(alice_address, BOB).await;
    assert_eq!(
        taken.ok(),
        Some(Reservation::Taken {
            holder: ALICE.to_string()
        })
    );
    let ours = b.dir().reserve_address(alice_address, ALICE).await;
    assert_eq!(ours.ok(), Some(Reservation::Ours));
}

/// Users `{prefix}NNNNN` for the numbers in `range`, in no group and
/// without a password.
fn users_ldif(prefix: &str, range: std::ops::Range<usize>) -> String {
    let mut s = String::new();
    for i in range {
        let uid = format!("{prefix}{i:05}");
        s.push_str(&format!(
            "dn: uid={uid},ou=people,{BASE_DN}\nobjectClass: inetOrgPerson\n\
             objectClass: permanetEntity\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\n"
        ));
    }
    s
}

/// Seven usable user identifiers (id 0, the subnet-router anycast, is
/// refused by the plan): when they are all reserved, a new user gets none
/// of them, not even a deleted user's.
async fn deleted_entity_address_never_reassigned<B: Backend>(mut b: B) {
    let allocator = allocator().with_space(CandidateSpace {
        user_ids: 8,
        max_attempts: 256,
        ..CandidateSpace::default()
    });
    let mut held = BTreeMap::new();
    for (name, _) in PASSWORDS {
        let user = lookup(&b, EntityKind::User, name).await;
        let user = user.unwrap_or_else(|| panic!("{name}"));
        let a = allocator
            .assign(b.dir(), &user)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        held.insert(a.address, user.dn);
    }
    assert_eq!(held.len(), 4);
    let bob_address = held
        .iter()
        .find(|(_, dn)| *dn == BOB)
        .map(|(a, _)| *a)
        .unwrap_or_else(|| panic!("bob"));
    b.delete(BOB).await;
    assert_eq!(lookup(&b, EntityKind::User, "bob").await, None);

    b.add_entries(&users_ldif("new", 0..4)).await;
    // A user without a password exists, and cannot log in.
    assert_eq!(
        refusal(login(&b, "new00000", "alice-lab-password").await),
        RefusalReason::WrongPassword
    );
    let mut refused = 0;
    for i in 0..4 {
        let name = format!("new{i:05}");
        let user = lookup(&b, EntityKind::User, &name).await;
        let user = user.unwrap_or_else(|| panic!("{name}"));
        match allocator.assign(b.dir(), &user).await {
            Ok(a) => {
                assert_ne!(a.address, bob_address, "{name} got bob's address");
                assert!(held.insert(a.address, user.dn).is_none(), "{name}");
            }
            Err(AllocError::Exhausted { .. }) => refused += 1,
            Err(e) => panic!("{name}: {e}"),
        }
    }
    // 7 identifiers: alice, carol, dave, bob's tombstone and three new.
    assert_eq!((held.len(), refused), (7, 1), "{held:?}");
    // The tombstone still names bob, also after a restart.
    b.reopen().await;
    let holder = b.dir().reserve_address(bob_address, ALICE).await;
    assert_eq!(
        holder.ok(),
        Some(Reservation::Taken {
            holder: BOB.to_string()
        })
    );
}

/// The "addrd restarted with 10,000 entities keeps every address".
async fn ten_thousand_entities_keep_their_addresses<B: Backend>(mut b: B) {
    const N: usize = 10_000;
    let started = Instant::now();
    b.add_entries(&users_ldif("user", 0..N)).await;
    let loaded = started.elapsed();
    let started = Instant::now();
    assign_all(&allocator(), b.dir()).await;
    let assigned_in = started.elapsed();
    let started = Instant::now();
    let before = addresses(&entities(b.dir()).await);
    let listed = started.elapsed();
    assert_eq!(before.len(), N + 8);
    b.reopen().await;
    let started = Instant::now();
    let after = addresses(&entities(b.dir()).await);
    let relisted = started.elapsed();
    assert!(before == after, "addresses changed across the restart");
    eprintln!(
        "{N} users: loaded {loaded:?}, assigned {assigned_in:?}, listed {listed:?}, \
         listed after restart {relisted:?}"
    );
}

/// Entries spelled in mixed case: names, group names, allowed groups, a
/// system named in other case than its `cn`, member DNs in other case
/// than the entries', an application with two `cn`s, a user with two
/// passwords, a disabled system; entries whose names
/// cannot be lease names or DNS labels; a user and a group outside
/// `ou=people` and `ou=groups` (where the LDAP backend does not look).
const MIXED_CASE: &str = "\
dn: uid=Erin,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: permanetEntity
uid: Erin
cn: Erin Example
sn: Example
userPassword: {SSHA}BO54xDHwIWdnsOmCcCegyTraMWzpeXP4
userPassword: {SSHA}qP3cSQWutfRVU6+3KDJGJWJ6XGqeSgl/

dn: cn=Ops,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: Ops
member: UID=erin,ou=people,dc=example,dc=org
member: uid=ALICE,ou=People,dc=example,dc=org
member: cn=wiki,ou=applications,dc=example,dc=org
member: cn=app1,ou=systems,dc=example,dc=org

dn: cn=Backup,ou=systems,dc=example,dc=org
objectClass: permanetSystem
cn: Backup
permanetDisabled: TRUE

dn: cn=Vault,ou=applications,dc=example,dc=org
objectClass: permanetApplication
cn: Vault
cn: Password Vault
permanetSystem: BACKUP
permanetAllowedGroup: OPS
permanetAllowedGroup: Staff

dn: uid=frank smith,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: frank smith
cn: Frank Smith
sn: Smith

dn: cn=web.site,ou=applications,dc=example,dc=org
objectClass: permanetApplication
cn: web.site
permanetSystem: app1
permanetAllowedGroup: staff

dn: uid=backup-agent,ou=services,dc=example,dc=org
objectClass: inetOrgPerson
uid: backup-agent
cn: Backup Agent
sn: Agent
userPassword: {SSHA}BO54xDHwIWdnsOmCcCegyTraMWzpeXP4

dn: cn=outsiders,ou=services,dc=example,dc=org
objectClass: groupOfNames
cn: outsiders
member: uid=alice,ou=people,dc=example,dc=org
";

/// The same directory through both backends is the same list of
/// entities: names, kinds, groups, allowed groups, systems, public IPv4s,
/// disabled flags, DNs — and, once the same allocator assigned them, the
/// same addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_list_the_same_entities() {
    compare_backends("both_backends_list_the_same_entities", false).await;
}

/// The same with slapd's memberof overlay: LDAP groups come from
/// `memberOf` (group DNs) instead of the groups' `member` lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_list_the_same_entities_with_member_of() {
    compare_backends("both_backends_list_the_same_entities_with_member_of", true).await;
}

async fn compare_backends(test: &str, memberof: bool) {
    let options = Options {
        memberof,
        ..Options::default()
    };
    let Some(slapd) = Slapd::start_or_skip(test, options) else {
        return;
    };
    let dir = ldap_directory(&slapd);
    let mut ldap = LdapBackend { slapd, dir };
    let Some(mut embedded) = EmbeddedBackend::start(test, false).await else {
        return;
    };
    let example = entities(ldap.dir()).await;
    assert_eq!(example.len(), 8);
    assert_eq!(example, entities(embedded.dir()).await);

    ldap.add_entries(MIXED_CASE).await;
    embedded.add_entries(MIXED_CASE).await;
    let from_ldap = entities(ldap.dir()).await;
    let from_embedded = entities(embedded.dir()).await;
    assert_eq!(from_ldap, from_embedded);
    // The canonical forms (see `Entity`): names and group names
    // lowercased, the invalid names skipped.
    let names: Vec<&str> = from_ldap.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "alice", "bob", "carol", "dave", "erin", "grades", "vault", "wap-news", "wiki", "app1",
            "backup"
        ]
    );
    let erin = from_ldap.iter().find(|e| e.name == "erin");
    assert_eq!(
        erin.map(|e| e.groups.clone()),
        Some(vec!["ops".to_string()])
    );
    let vault = from_ldap.iter().find(|e| e.name == "vault");
    let vault = vault.unwrap_or_else(|| panic!("vault"));
    assert_eq!(vault.allowed_groups, ["ops", "staff"]);
    assert_eq!(vault.system.as_deref(), Some("backup"));
    // Applications and systems can be group members too.
    for name in ["wiki", "app1"] {
        let e = from_ldap.iter().find(|e| e.name == name);
        assert_eq!(
            e.map(|e| e.groups.clone()),
            Some(vec!["ops".into()]),
            "{name}"
        );
    }
    let backup = from_ldap.iter().find(|e| e.name == "backup");
    assert_eq!(backup.map(|e| e.disabled), Some(true));
    for b in [&from_ldap, &from_embedded] {
        let alice = b.iter().find(|e| e.name == "alice");
        assert_eq!(
            alice.map(|e| e.groups.clone()),
            Some(vec!["admins".into(), "ops".into(), "staff".into()])
        );
    }
    // Outside ou=people and ou=groups: no user, no group, on both.
    for dir in [
        login(&ldap, "backup-agent", "alice-lab-password").await,
        login(&embedded, "backup-agent", "alice-lab-password").await,
    ] {
        assert_eq!(refusal(dir), RefusalReason::UnknownUser);
    }
    // Two passwords (alice's and bob's hashes): either logs erin in.
    for password in ["alice-lab-password", "bob-lab-password"] {
        let a = login(&ldap, "erin", password).await;
        let b = login(&embedded, "erin", password).await;
        let erin = Some("uid=Erin,ou=people,dc=example,dc=org".to_string());
        assert_eq!(a.map(|e| e.dn).ok(), erin, "ldap, {password}");
        assert_eq!(b.map(|e| e.dn).ok(), erin, "embedded, {password}");
    }
    assert_eq!(
        refusal(login(&embedded, "erin", "dave-lab-password").await),
        refusal(login(&ldap, "erin", "dave-lab-password").await)
    );
    // Logins and lookups by another case give the same entity.
    for (dir_ldap, dir_embedded) in [(ldap.dir(), embedded.dir())] {
        let a = dir_ldap
            .authenticate("ERIN", &pw("alice-lab-password"))
            .await;
        let b = dir_embedded
            .authenticate("ERIN", &pw("alice-lab-password"))
            .await;
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("{e:?}")),
            b.unwrap_or_else(|e| panic!("{e:?}")),
        );
        assert_eq!(a, b);
        let a = dir_ldap.lookup(EntityKind::Application, "VAULT").await.ok();
        let b = dir_embedded
            .lookup(EntityKind::Application, "VAULT")
            .await
            .ok();
        assert_eq!(a, b);
        assert!(a.flatten().is_some());
    }

    let allocator = allocator();
    assign_all(&allocator, ldap.dir()).await;
    assign_all(&allocator, embedded.dir()).await;
    let from_ldap = entities(ldap.dir()).await;
    assert_eq!(from_ldap, entities(embedded.dir()).await);
    assert_eq!(addresses(&from_ldap).len(), 11);
}

/// The issue's "two addrd processes allocating concurrently never
/// collide": two replicas (two directory objects; for LDAP two service
/// connections) each assign an overlapping part of 2,000 users, four at a
/// time each, all at once, from a candidate space small enough (4,096
/// identifiers) that different users' candidates collide hundreds of
/// times. Afterwards, read past the directory objects: every user's
/// recorded address is reserved for that user, no address is recorded
/// twice, there is no reservation without its user, and both replicas
/// told each user of the overlap the same address.
async fn replicas_allocating_concurrently_never_collide<B: Backend>(mut b: B) {
    const N: usize = 2_000;
    b.add_entries(&users_ldif("user", 0..N)).await;
    let allocator = allocator().with_space(CandidateSpace {
        user_ids: 4096,
        max_attempts: 256,
        ..CandidateSpace::default()
    });
    let users: Vec<Entity> = entities(b.dir())
        .await
        .into_iter()
        .filter(|e| e.name.starts_with("user"))
        .collect();
    assert_eq!(users.len(), N);
    let started = Instant::now();
    let shares = [
        (b.dir().clone(), users[..N * 3 / 4].to_vec()),
        (b.replica(), users[N / 4..].to_vec()),
    ];
    let mut replicas = tokio::task::JoinSet::new();
    for (dir, share) in shares {
        let allocator = allocator.clone();
        replicas.spawn(async move {
            // Four workers per replica, each taking every fourth user.
            let mut workers = tokio::task::JoinSet::new();
            for w in 0..4 {
                let (dir, allocator) = (dir.clone(), allocator.clone());
                let mine: Vec<Entity> = share.iter().skip(w).step_by(4).cloned().collect();
                workers.spawn(async move {
                    let mut got = Vec::new();
                    for user in mine {
                        let a = allocator
                            .assign(&dir, &user)
                            .await
                            .unwrap_or_else(|e| panic!("{}: {e}", user.dn));
                        got.push((user.dn, a));
                    }
                    got
                });
            }
            let mut got = Vec::new();
            while let Some(part) = workers.join_next().await {
                got.extend(part.unwrap_or_else(|e| panic!("worker: {e}")));
            }
            got
        });
    }
    let mut told: HashMap<String, Ipv6Addr> = HashMap::new();
    let mut retries = 0;
    while let Some(got) = replicas.join_next().await {
        for (dn, a) in got.unwrap_or_else(|e| panic!("replica: {e}")) {
            retries += a.attempts.saturating_sub(1);
            if let Some(other) = told.insert(dn.clone(), a.address) {
                assert_eq!(other, a.address, "{dn}: the replicas disagree");
            }
        }
    }
    let took = started.elapsed();
    assert_eq!(told.len(), N);
    // The contention really happened.
    assert!(retries > 100, "only {retries} collisions");

    let mut now = entities(b.dir()).await;
    now.retain(|e| e.name.starts_with("user"));
    let recorded = addresses(&now);
    let reservations = b.reservations().await;
    for (dn, address) in &told {
        assert_eq!(
            recorded.get(&dn.to_ascii_lowercase()),
            Some(address),
            "{dn}"
        );
        let holder = reservations.get(address).map(|h| h.to_ascii_lowercase());
        assert_eq!(holder, Some(dn.to_ascii_lowercase()), "{address}");
    }
    assert_eq!(reservations.len(), N, "a reservation without its user");
    eprintln!("{N} users by two replicas: {took:?}, {retries} collisions retried");
}
