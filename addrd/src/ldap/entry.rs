//! Directory entries as the LDAP backend reads them: search results
//! decoded without panicking, names checked before they go near a
//! filter, DNs compared and taken apart, and entries turned into
//! [`Entity`] values (or a [`DirectoryError::BadEntry`] naming the DN).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ldap3::ResultEntry;
use overlay_proto::lease::EntityKind;

use crate::directory::{canonical_group, canonical_name, DirectoryError, Entity};

/// The longest entity name (in bytes) that is looked up at all.
pub const MAX_NAME_LEN: usize = 256;

/// The attributes the backend reads from people, applications and systems.
pub const ENTITY_ATTRS: [&str; 9] = [
    "objectClass",
    "uid",
    "cn",
    "memberOf",
    "permanetAddress",
    "permanetDisabled",
    "permanetSystem",
    "permanetAllowedGroup",
    "permanetPublicIPv4",
];

/// One entry of a search result: its DN and its textual attributes, keyed
/// by lowercased attribute name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawEntry {
    /// The DN as the server spelled it.
    pub dn: String,
    /// Attribute (lowercase) → values.
    pub attrs: HashMap<String, Vec<String>>,
}

impl RawEntry {
    /// Decode a search result entry. Unlike `ldap3::SearchEntry::construct`
    /// this never panics on what a server sent: a malformed entry is an
    /// error. Values that are not UTF-8 are dropped (no attribute the
    /// backend reads is binary).
    pub fn decode(entry: ResultEntry) -> Result<RawEntry, DirectoryError> {
        let bad = |what: &str| DirectoryError::Operation(format!("malformed search entry: {what}"));
        let mut parts = entry
            .0
            .match_id(4)
            .and_then(|t| t.expect_constructed())
            .ok_or_else(|| bad("not a SearchResultEntry"))?
            .into_iter();
        let dn = parts
            .next()
            .and_then(|t| t.expect_primitive())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| bad("DN"))?;
        let list = parts
            .next()
            .and_then(|t| t.expect_constructed())
            .ok_or_else(|| bad("attribute list"))?;
        let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
        for partial in list {
            let mut pa = partial
                .expect_constructed()
                .ok_or_else(|| bad("attribute"))?
                .into_iter();
            let name = pa
                .next()
                .and_then(|t| t.expect_primitive())
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| bad("attribute type"))?;
            let values = pa
                .next()
                .and_then(|t| t.expect_constructed())
                .ok_or_else(|| bad("attribute values"))?;
            let slot = attrs.entry(name.to_ascii_lowercase()).or_default();
            for v in values {
                if let Some(s) = v.expect_primitive().and_then(|b| String::from_utf8(b).ok()) {
                    slot.push(s);
                }
            }
        }
        Ok(RawEntry { dn, attrs })
    }

    /// All values of `attr` (any case), empty if absent.
    pub fn values(&self, attr: &str) -> &[String] {
        self.attrs
            .get(&attr.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The single value of `attr`; an error if it has several.
    pub fn single(&self, attr: &str) -> Result<Option<&str>, DirectoryError> {
        match self.values(attr) {
            [] => Ok(None),
            [one] => Ok(Some(one.as_str())),
            many => Err(self.bad(format!("{attr} has {} values, expected one", many.len()))),
        }
    }

    /// A [`DirectoryError::BadEntry`] for this entry.
    pub fn bad(&self, problem: String) -> DirectoryError {
        DirectoryError::BadEntry {
            dn: self.dn.clone(),
            problem,
        }
    }
}

/// Whether `name` may be looked up: non-empty, at most [`MAX_NAME_LEN`]
/// bytes, no NUL or other control character. Anything else is refused
/// before a request is made (escaping alone would make it safe; refusing
/// keeps junk out of the server's logs and bounds the work).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

/// Build the [`Entity`] of `kind` from `entry`, in the canonical forms
/// [`Entity`] documents. `groups` are the group `cn`s as the directory
/// spells them (the caller resolves `memberOf` or searches the groups);
/// invalid ones are dropped.
pub fn entity(
    kind: EntityKind,
    entry: &RawEntry,
    groups: Vec<String>,
) -> Result<Entity, DirectoryError> {
    let mut groups: Vec<String> = groups
        .iter()
        .filter_map(|g| {
            let canonical = canonical_group(g);
            if canonical.is_none() {
                tracing::warn!(dn = %entry.dn, group = %g, "ignoring a group with an invalid name");
            }
            canonical
        })
        .collect();
    let name_attr = match kind {
        EntityKind::User => "uid",
        EntityKind::Application | EntityKind::System => "cn",
    };
    let name = name_value(entry, name_attr)?;
    let disabled = match entry.single("permanetDisabled")? {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("TRUE") => true,
        Some(v) if v.eq_ignore_ascii_case("FALSE") => false,
        Some(v) => return Err(entry.bad(format!("permanetDisabled is {v:?}, not TRUE or FALSE"))),
    };
    let address = entry
        .single("permanetAddress")?
        .map(|v| {
            v.trim()
                .parse::<Ipv6Addr>()
                .map_err(|_| entry.bad(format!("permanetAddress {v:?} is not an IPv6 address")))
        })
        .transpose()?;
    groups.sort();
    groups.dedup();
    let mut e = Entity {
        dn: entry.dn.clone(),
        name,
        kind,
        groups,
        disabled,
        address,
        allowed_groups: Vec::new(),
        system: None,
        public_ipv4: None,
    };
    match kind {
        EntityKind::User => {}
        EntityKind::Application => {
            let system = entry
                .single("permanetSystem")?
                .ok_or_else(|| entry.bad("no permanetSystem".into()))?;
            let system = canonical_name(system).ok_or_else(|| {
                entry.bad(format!("permanetSystem {system:?} is not a valid name"))
            })?;
            e.system = Some(system);
            let mut allowed = entry
                .values("permanetAllowedGroup")
                .iter()
                .map(|g| {
                    canonical_group(g).ok_or_else(|| {
                        entry.bad(format!(
                            "permanetAllowedGroup {g:?} is not a valid group name"
                        ))
                    })
                })
                .collect::<Result<Vec<String>, DirectoryError>>()?;
            allowed.sort();
            allowed.dedup();
            e.allowed_groups = allowed;
        }
        EntityKind::System => {
            e.public_ipv4 = entry
                .single("permanetPublicIPv4")?
                .map(|v| {
                    v.trim().parse::<Ipv4Addr>().map_err(|_| {
                        entry.bad(format!("permanetPublicIPv4 {v:?} is not an IPv4 address"))
                    })
                })
                .transpose()?;
        }
    }
    Ok(e)
}

/// The entity's short name: one value of `attr`, in canonical form
/// ([`canonical_name`]). A `cn` with several values (allowed by the
/// schema) must have exactly one that is the RDN's; the backend takes the
/// RDN value then.
fn name_value(entry: &RawEntry, attr: &str) -> Result<String, DirectoryError> {
    let values = entry.values(attr);
    let name = match values {
        [] => return Err(entry.bad(format!("no {attr}"))),
        [one] => one.clone(),
        _ => match first_rdn_value(&entry.dn, attr) {
            Some(v) if values.iter().any(|x| x.eq_ignore_ascii_case(&v)) => v,
            _ => return Err(entry.bad(format!("{attr} has several values"))),
        },
    };
    canonical_name(&name).ok_or_else(|| {
        entry.bad(format!(
            "{attr} {name:?} is not a valid name (a DNS label: a-z, 0-9, - and _)"
        ))
    })
}

/// A DN in a form fit for comparing: attribute types and values
/// lowercased, spaces around separators dropped. (Not a full RFC 4514
/// normalisation, which needs the schema; enough for the DNs a directory
/// hands back for its own entries.)
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut escaped = false;
    for c in dn.trim().chars() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                out.push(c);
                escaped = true;
            }
            ',' | '=' | '+' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(c);
            }
            ' ' if out.ends_with([',', '=', '+']) => {}
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Whether `dn` is strictly below `base` (both compared normalised).
pub fn is_below(dn: &str, base: &str) -> bool {
    let dn = normalize_dn(dn);
    let base = normalize_dn(base);
    dn.len() > base.len() + 1
        && dn.ends_with(&base)
        && dn.as_bytes().get(dn.len() - base.len() - 1) == Some(&b',')
}

/// The value of the first RDN of `dn` if its attribute type is `attr` and
/// it is single-valued, with RFC 4514 escapes undone: `cn=staff,ou=groups,…`
/// → `staff`. `None` for anything else.
pub fn first_rdn_value(dn: &str, attr: &str) -> Option<String> {
    let (ty, rest) = dn.trim_start().split_once('=')?;
    if !ty.trim().eq_ignore_ascii_case(attr) {
        return None;
    }
    let mut value = Vec::new();
    let mut bytes = rest.trim_start().bytes();
    while let Some(b) = bytes.next() {
        match b {
            b',' => break,
            b'+' => return None,
            b'\\' => {
                let first = bytes.next()?;
                if first.is_ascii_hexdigit() {
                    let second = bytes.next()?;
                    let hex = [first, second];
                    let text = std::str::from_utf8(&hex).ok()?;
                    value.push(u8::from_str_radix(text, 16).ok()?);
                } else {
                    value.push(first);
                }
            }
            _ => value.push(b),
        }
    }
    let value = String::from_utf8(value).ok()?;
    let value = value.trim_end().to_string();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refused_before_any_request() {
        assert!(valid_name("alice"));
        assert!(valid_name("*)(uid=*"), "escaped, not refused");
        assert!(!valid_name(""));
        assert!(!valid_name("al\0ice"));
        assert!(!valid_name("al\nice"));
        assert!(!valid_name("a\u{7f}"));
        assert!(!valid_name(&"a".repeat(MAX_NAME_LEN + 1)));
        assert!(valid_name(&"a".repeat(MAX_NAME_LEN)));
    }

    #[test]
    fn dns_compare_and_split() {
        assert_eq!(
            normalize_dn("UID=Alice, OU=People ,dc=Example,dc=org"),
            "uid=alice,ou=people,dc=example,dc=org"
        );
        assert!(is_below(
            "cn=staff,ou=groups,dc=example,dc=org",
            "ou=groups,dc=example,dc=org"
        ));
        assert!(!is_below(
            "ou=groups,dc=example,dc=org",
            "ou=groups,dc=example,dc=org"
        ));
        assert!(!is_below(
            "cn=x,ou=xgroups,dc=example,dc=org",
            "ou=groups,dc=example,dc=org"
        ));
        assert_eq!(
            first_rdn_value("cn=staff,ou=groups,dc=example,dc=org", "cn").as_deref(),
            Some("staff")
        );
        assert_eq!(
            first_rdn_value("cn=a\\,b\\2Bc,ou=groups", "cn").as_deref(),
            Some("a,b+c")
        );
        assert_eq!(first_rdn_value("cn=a+uid=b,ou=groups", "cn"), None);
        assert_eq!(first_rdn_value("uid=a,ou=groups", "cn"), None);
        assert_eq!(first_rdn_value("cn=\\", "cn"), None);
    }

    fn raw(dn: &str, attrs: &[(&str, &str)]) -> RawEntry {
        let mut e = RawEntry {
            dn: dn.into(),
            attrs: HashMap::new(),
        };
        for (a, v) in attrs {
            e.attrs
                .entry(a.to_ascii_lowercase())
                .or_default()
                .push((*v).into());
        }
        e
    }

    #[test]
    fn bad_entries_name_their_dn() {
        let e = raw(
            "uid=x,ou=people",
            &[("uid", "x"), ("permanetAddress", "nope")],
        );
        match entity(EntityKind::User, &e, vec![]) {
            Err(DirectoryError::BadEntry { dn, problem }) => {
                assert_eq!(dn, "uid=x,ou=people");
                assert!(problem.contains("permanetAddress"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        let e = raw("cn=w,ou=applications", &[("cn", "w")]);
        assert!(entity(EntityKind::Application, &e, vec![]).is_err());
        let e = raw(
            "uid=x,ou=people",
            &[("uid", "x"), ("permanetDisabled", "maybe")],
        );
        assert!(entity(EntityKind::User, &e, vec![]).is_err());
        let e = raw(
            "cn=s,ou=systems",
            &[("cn", "s"), ("permanetPublicIPv4", "300.1.1.1")],
        );
        assert!(entity(EntityKind::System, &e, vec![]).is_err());
    }

    #[test]
    fn application_fields() {
        let e = raw(
            "cn=grades,ou=applications",
            &[
                ("cn", "grades"),
                ("permanetSystem", "app1"),
                ("permanetAllowedGroup", "students"),
                ("permanetAllowedGroup", "staff"),
                ("permanetAddress", "2002:c633:640a:1::2"),
            ],
        );
        let a = entity(EntityKind::Application, &e, vec![]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.name, "grades");
        assert_eq!(a.system.as_deref(), Some("app1"));
        assert_eq!(a.allowed_groups, ["staff", "students"]);
        assert_eq!(a.address, "2002:c633:640a:1::2".parse().ok());
    }
}
