//! From LDIF entries to the embedded directory's in-memory data, by the
//! directory vocabulary (`configs/ldap/permanet.schema`): users are
//! `inetOrgPerson` entries below `ou=people`, applications
//! `permanetApplication` below `ou=applications`, systems `permanetSystem`
//! below `ou=systems`, groups `groupOfNames` below `ou=groups`,
//! reservations `permanetReservation` anywhere; other entries (the
//! `dc=`/`ou=` scaffolding) are ignored. An entry that breaks the
//! vocabulary is skipped whole, with a [`DirectoryError::BadEntry`] naming
//! its DN. Names and groups take the canonical forms
//! [`Entity`] documents, so that this backend and the LDAP one give the
//! same entities for the same entries.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use overlay_proto::lease::EntityKind;

use crate::directory::{canonical_group, canonical_name, DirectoryError, Entity};
use crate::ldif::{normalize_dn, LdifEntry};
use crate::password::{PasswordError, PasswordHash};

/// The directory as loaded from one LDIF file.
#[derive(Debug, Default)]
pub(super) struct DirectoryData {
    /// Users by lowercased `uid`.
    pub(super) users: HashMap<String, User>,
    /// Applications by lowercased `cn`.
    pub(super) applications: HashMap<String, Entity>,
    /// Systems by lowercased `cn`.
    pub(super) systems: HashMap<String, Entity>,
    /// Number of groups.
    pub(super) groups: usize,
    /// `permanetReservation` entries: address → holder DN.
    pub(super) reservations: Vec<(Ipv6Addr, String)>,
    /// Users whose `userPassword` cannot be verified (an unsupported
    /// scheme, a malformed hash): they exist but cannot log in.
    pub(super) unusable_passwords: Vec<(String, PasswordError)>,
    /// What unknown users' logins are verified against ([`dummy_for`]; not
    /// set by [`build`]).
    pub(super) dummy: Option<PasswordHash>,
}

/// A user and its password hash.
#[derive(Debug)]
pub(super) struct User {
    pub(super) entity: Entity,
    /// The usable `userPassword` values; empty when there is none (absent
    /// or unsupported scheme): every login is refused.
    pub(super) password: Vec<PasswordHash>,
}

impl DirectoryData {
    /// Every entity, in a fixed order (kind, then name).
    pub(super) fn entities(&self) -> impl Iterator<Item = &Entity> {
        let mut all: Vec<&Entity> = self
            .users
            .values()
            .map(|u| &u.entity)
            .chain(self.applications.values())
            .chain(self.systems.values())
            .collect();
        all.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
        all.into_iter()
    }

    /// The map holding entities of `kind` other than users.
    pub(super) fn by_kind(&self, kind: EntityKind) -> Option<&HashMap<String, Entity>> {
        match kind {
            EntityKind::Application => Some(&self.applications),
            EntityKind::System => Some(&self.systems),
            EntityKind::User => None,
        }
    }
}

/// What kind of entry an LDIF record is.
enum Class {
    User,
    Application,
    System,
    Group,
    Reservation,
    Other,
}

fn classify(entry: &LdifEntry) -> Result<Class, String> {
    let classes = [
        ("inetOrgPerson", Class::User),
        ("permanetApplication", Class::Application),
        ("permanetSystem", Class::System),
        ("groupOfNames", Class::Group),
        ("permanetReservation", Class::Reservation),
    ];
    let mut found = classes
        .into_iter()
        .filter(|(name, _)| entry.has_object_class(name));
    let (name, class) = match (found.next(), found.next()) {
        (None, _) => return Ok(Class::Other),
        (Some(one), None) => one,
        (Some((a, _)), Some((b, _))) => return Err(format!("is both {a} and {b}")),
    };
    // Where the LDAP backend looks for each kind (a subtree search under
    // `ou=<subtree>,<base>`): an entry elsewhere would be a user (or
    // application, system, group) here and nobody there. Reservations
    // count wherever they are: a tombstone too many never hurts.
    let subtree = match class {
        Class::User => "people",
        Class::Application => "applications",
        Class::System => "systems",
        Class::Group => "groups",
        Class::Reservation | Class::Other => return Ok(class),
    };
    if !below_ou(&entry.dn, subtree) {
        return Err(format!(
            "a {name} entry outside ou={subtree}: the LDAP backend would not see it \
             either; move it under ou={subtree}"
        ));
    }
    Ok(class)
}

/// Whether one of `dn`'s ancestors' RDNs (not its own) is `ou=<ou>`.
fn below_ou(dn: &str, ou: &str) -> bool {
    let normalized = normalize_dn(dn);
    let wanted = format!("ou={ou}");
    let mut rdns = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in normalized.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' => {
                current.push(c);
                escaped = true;
            }
            ',' => rdns.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    rdns.push(current);
    rdns.iter().skip(1).any(|rdn| *rdn == wanted)
}

/// Build the directory from parsed entries. Returns the data and the
/// entries skipped, each as a [`DirectoryError::BadEntry`].
pub(super) fn build(entries: &[LdifEntry]) -> (DirectoryData, Vec<DirectoryError>) {
    let mut skipped = Vec::new();
    let mut bad = |entry: &LdifEntry, problem: String| {
        skipped.push(DirectoryError::BadEntry {
            dn: entry.dn.clone(),
            problem: format!("{problem} (line {})", entry.line),
        });
    };

    // Pass 1: unique DNs and classes; groups and their members.
    let mut seen = HashSet::new();
    let mut classified = Vec::new();
    let mut group_names: HashMap<String, String> = HashMap::new();
    let mut member_groups: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut groups = 0;
    for entry in entries {
        if !seen.insert(normalize_dn(&entry.dn)) {
            bad(entry, "duplicate entry".to_owned());
            continue;
        }
        let class = match classify(entry) {
            Ok(class) => class,
            Err(problem) => {
                bad(entry, problem);
                continue;
            }
        };
        if let Class::Group = class {
            match group(entry) {
                Ok((name, members)) => {
                    groups += 1;
                    for member in members {
                        member_groups
                            .entry(member)
                            .or_default()
                            .insert(name.clone());
                    }
                    group_names.insert(normalize_dn(&entry.dn), name);
                }
                Err(problem) => bad(entry, problem),
            }
            continue;
        }
        classified.push((entry, class));
    }

    // Pass 2: entities and reservations.
    let mut data = DirectoryData {
        groups,
        ..DirectoryData::default()
    };
    for (entry, class) in classified {
        let result = match class {
            Class::User => user(entry, &member_groups, &group_names).map(|(user, problem)| {
                let dn = user.entity.dn.clone();
                let inserted =
                    insert_unique(&mut data.users, user.entity.name.clone(), user, |u| {
                        &u.entity.dn
                    });
                if let (Ok(()), Some(problem)) = (&inserted, problem) {
                    data.unusable_passwords.push((dn, problem));
                }
                inserted
            }),
            Class::Application => groups_of(entry, &member_groups, &group_names)
                .and_then(|groups| application(entry, groups))
                .map(|app| insert_unique(&mut data.applications, app.name.clone(), app, |e| &e.dn)),
            Class::System => groups_of(entry, &member_groups, &group_names)
                .and_then(|groups| system(entry, groups))
                .map(|system| {
                    insert_unique(&mut data.systems, system.name.clone(), system, |e| &e.dn)
                }),
            Class::Reservation => reservation(entry).map(|r| {
                data.reservations.push(r);
                Ok(())
            }),
            Class::Group | Class::Other => Ok(Ok(())),
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(problem)) | Err(problem) => bad(entry, problem),
        }
    }
    (data, skipped)
}

/// Insert unless the name is taken; the error names the holder.
fn insert_unique<T>(
    map: &mut HashMap<String, T>,
    key: String,
    value: T,
    dn: impl Fn(&T) -> &String,
) -> Result<(), String> {
    if let Some(existing) = map.get(&key) {
        return Err(format!("name {key:?} already used by {}", dn(existing)));
    }
    map.insert(key, value);
    Ok(())
}

/// The most common stored hash's cost class, re-hashed with a random
/// password: an unknown user's login then costs what a wrong password
/// costs for most users. (A directory that mixes schemes cannot hide
/// which scheme a user's hash uses; moving everyone to `{ARGON2}` closes
/// that gap.)
pub(super) fn dummy_for(data: &DirectoryData) -> Option<PasswordHash> {
    let mut classes: HashMap<String, (usize, &PasswordHash)> = HashMap::new();
    for user in data.users.values() {
        for hash in &user.password {
            let key = hash.cost_class();
            classes.entry(key).or_insert((0, hash)).0 += 1;
        }
    }
    // On a tie, the costlier scheme (Argon2): an unknown user then never
    // answers faster than the modern hashes do.
    let rank = |(class, (count, hash)): &(String, (usize, &PasswordHash))| {
        (*count, hash.scheme() == "{ARGON2}", class.clone())
    };
    let (_, (_, common)) = classes.into_iter().max_by_key(rank)?;
    common.dummy_like().ok()
}

fn group(entry: &LdifEntry) -> Result<(String, Vec<String>), String> {
    let name = group_name(entry)?;
    let members = entry
        .text_values("member")
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(normalize_dn)
        .collect();
    Ok((name, members))
}

/// The `cn` of a group, canonical ([`canonical_group`]): its RDN's value
/// when `cn` has several values.
fn group_name(entry: &LdifEntry) -> Result<String, String> {
    let values = entry.text_values("cn").map_err(|e| e.to_string())?;
    let name = match values.as_slice() {
        [] => return Err("no cn".to_owned()),
        [one] => (*one).to_owned(),
        _ => rdn_value(&entry.dn, "cn").ok_or("several cn values and no cn RDN")?,
    };
    canonical_group(&name).ok_or_else(|| format!("cn {name:?} is not a valid group name"))
}

/// The value of the first RDN if its attribute is `attribute`.
fn rdn_value(dn: &str, attribute: &str) -> Option<String> {
    let normalized = normalize_dn(dn);
    let first = normalized.split(',').next()?;
    let (name, value) = first.split_once('=')?;
    (name == attribute && !value.contains('\\')).then(|| value.to_owned())
}

/// A short name (`uid`, application or system `cn`, `permanetSystem`) in
/// canonical form ([`canonical_name`]): a lease name and a DNS label. When
/// the attribute has several values, the one the RDN uses (as the LDAP
/// backend does).
fn short_name(entry: &LdifEntry, attribute: &str) -> Result<String, String> {
    let values = entry.text_values(attribute).map_err(|e| e.to_string())?;
    let value = match values.as_slice() {
        [] => return Err(format!("no {attribute}")),
        [one] => (*one).to_owned(),
        many => rdn_value(&entry.dn, attribute)
            .filter(|rdn| many.iter().any(|v| v.trim().eq_ignore_ascii_case(rdn)))
            .ok_or_else(|| format!("{attribute} has several values, none of them the RDN's"))?,
    };
    canonical_name(&value).ok_or_else(|| {
        format!("{attribute} {value:?} is not a valid name (a DNS label: a-z, 0-9, - and _)")
    })
}

/// `permanetDisabled` (users, applications and systems may carry it).
fn disabled(entry: &LdifEntry) -> Result<bool, String> {
    match entry
        .single_text("permanetDisabled")
        .map_err(|e| e.to_string())?
        .map(str::trim)
    {
        None | Some("FALSE") => Ok(false),
        Some("TRUE") => Ok(true),
        Some(other) => Err(format!("permanetDisabled {other:?} is not TRUE or FALSE")),
    }
}

fn address(entry: &LdifEntry) -> Result<Option<Ipv6Addr>, String> {
    entry
        .single_text("permanetAddress")
        .map_err(|e| e.to_string())?
        .map(|text| {
            text.trim()
                .parse()
                .map_err(|_| format!("permanetAddress {text:?} is not an IPv6 address"))
        })
        .transpose()
}

fn user(
    entry: &LdifEntry,
    member_groups: &HashMap<String, BTreeSet<String>>,
    group_names: &HashMap<String, String>,
) -> Result<(User, Option<PasswordError>), String> {
    let name = short_name(entry, "uid")?;
    let mut problem = None;
    let disabled = disabled(entry)?;
    let address = address(entry)?;
    // Every usable `userPassword` value (an LDAP server accepts a bind
    // with any of them). The user exists (DNS, netmaps) even when none is
    // usable, but cannot log in; the load report says why.
    let mut password = Vec::new();
    for value in entry
        .text_values("userPassword")
        .map_err(|e| e.to_string())?
    {
        match PasswordHash::parse(value) {
            Ok(hash) => password.push(hash),
            Err(e) => {
                problem.get_or_insert(e);
            }
        }
    }
    let groups = groups_of(entry, member_groups, group_names)?;
    let user = User {
        entity: Entity {
            dn: entry.dn.clone(),
            name,
            kind: EntityKind::User,
            groups,
            disabled,
            address,
            allowed_groups: Vec::new(),
            system: None,
            public_ipv4: None,
        },
        password,
    };
    Ok((user, problem))
}

/// The groups `entry` is a member of (by `member` on the groups, and by
/// `memberOf` on the entry), canonical and sorted. Users, applications and
/// systems alike, as the LDAP backend reads them.
fn groups_of(
    entry: &LdifEntry,
    member_groups: &HashMap<String, BTreeSet<String>>,
    group_names: &HashMap<String, String>,
) -> Result<Vec<String>, String> {
    let dn = normalize_dn(&entry.dn);
    let mut groups: BTreeSet<String> = member_groups.get(&dn).cloned().unwrap_or_default();
    // `memberOf` values below `ou=groups` only, as the LDAP backend reads
    // them; others (no group of ours) are ignored there and here.
    for group_dn in entry.text_values("memberOf").map_err(|e| e.to_string())? {
        if !below_ou(group_dn, "groups") {
            continue;
        }
        let group_dn = normalize_dn(group_dn);
        let name = group_names
            .get(&group_dn)
            .cloned()
            .or_else(|| rdn_value(&group_dn, "cn").and_then(|g| canonical_group(&g)));
        groups.extend(name);
    }
    Ok(groups.into_iter().collect())
}

fn application(entry: &LdifEntry, groups: Vec<String>) -> Result<Entity, String> {
    let name = short_name(entry, "cn")?;
    let system = short_name(entry, "permanetSystem")?;
    let mut allowed_groups: Vec<String> = entry
        .text_values("permanetAllowedGroup")
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|g| {
            canonical_group(g)
                .ok_or_else(|| format!("permanetAllowedGroup {g:?} is not a valid group name"))
        })
        .collect::<Result<_, String>>()?;
    allowed_groups.sort();
    allowed_groups.dedup();
    Ok(Entity {
        dn: entry.dn.clone(),
        name,
        kind: EntityKind::Application,
        groups,
        disabled: disabled(entry)?,
        address: address(entry)?,
        allowed_groups,
        system: Some(system),
        public_ipv4: None,
    })
}

fn system(entry: &LdifEntry, groups: Vec<String>) -> Result<Entity, String> {
    let name = short_name(entry, "cn")?;
    let public_ipv4 = entry
        .single_text("permanetPublicIPv4")
        .map_err(|e| e.to_string())?
        .map(|text| {
            text.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("permanetPublicIPv4 {text:?} is not an IPv4 address"))
        })
        .transpose()?;
    Ok(Entity {
        dn: entry.dn.clone(),
        name,
        kind: EntityKind::System,
        groups,
        disabled: disabled(entry)?,
        address: address(entry)?,
        allowed_groups: Vec::new(),
        system: None,
        public_ipv4,
    })
}

fn reservation(entry: &LdifEntry) -> Result<(Ipv6Addr, String), String> {
    let address = address(entry)?.ok_or("no permanetAddress")?;
    let holder = entry
        .single_text("permanetHolder")
        .map_err(|e| e.to_string())?
        .ok_or("no permanetHolder")?;
    Ok((address, holder.trim().to_owned()))
}
