//! Overlay names (DESIGN §9): `NAME.users.ZONE`, `NAME.apps.ZONE` and
//! `NAME.systems.ZONE` name a user's, an application's and a server
//! system's permanent address ([`crate::lease::Lease::address`]).
//!
//! One spelling for everyone who handles names: addrd's DNS server
//! publishes them, tunneld's SOCKS5 proxy resolves them. [`OverlayZone`]
//! is the zone, checked and normalised (lowercase, no final dot); names
//! compare case-insensitively, as DNS names do.

use crate::lease::EntityKind;

/// The zone when a config sets none. `.internal` is reserved by ICANN for
/// private use, so it never collides with a public name.
pub const DEFAULT_ZONE: &str = "permanet.internal";

/// Longest DNS name (RFC 1035 §2.3.4, without the final dot).
pub const MAX_NAME_LEN: usize = 253;

/// Longest DNS label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// The overlay's DNS zone: a lowercase DNS name without the final dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OverlayZone(String);

/// A zone that is not a usable DNS name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a DNS zone (dot-separated labels of a-z, 0-9 and '-', \
     each 1 to 63 long, not starting or ending with '-'; at most 200 in all)"
)]
pub struct BadZone(pub String);

/// Why a name does not name an entity in the zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Not under the zone (or not a DNS name at all).
    #[error("outside the overlay zone")]
    OutsideZone,
    /// Under the zone, but not `NAME.users|apps|systems.ZONE`.
    #[error("not an entity name of the overlay zone")]
    NotAnEntity,
}

impl OverlayZone {
    /// Longest zone accepted: leaves room for `NAME.systems.` in a
    /// 253-byte name.
    pub const MAX_LEN: usize = 200;

    /// Check and normalise `zone` (lowercase, final dot dropped).
    pub fn new(zone: &str) -> Result<OverlayZone, BadZone> {
        let lower = zone.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let valid = !name.is_empty()
            && name.len() <= OverlayZone::MAX_LEN
            && name.split('.').all(is_valid_label);
        if valid {
            Ok(OverlayZone(name.to_owned()))
        } else {
            Err(BadZone(zone.to_owned()))
        }
    }

    /// The zone as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Split `name` into the entity's short name (lowercase) and kind:
    /// `Alice.Users.ZONE.` is `("alice", User)`. Case-insensitive; one
    /// final dot is allowed.
    pub fn split(&self, name: &str) -> Result<(String, EntityKind), NameError> {
        if name.len() > MAX_NAME_LEN + 1 {
            return Err(NameError::OutsideZone);
        }
        let lower = name.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let inside = name
            .strip_suffix(self.0.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .ok_or(NameError::OutsideZone)?;
        let (entity, kind) = inside.rsplit_once('.').ok_or(NameError::NotAnEntity)?;
        let kind = match kind {
            "users" => EntityKind::User,
            "apps" => EntityKind::Application,
            "systems" => EntityKind::System,
            _ => return Err(NameError::NotAnEntity),
        };
        if entity.is_empty() || entity.contains('.') {
            return Err(NameError::NotAnEntity);
        }
        Ok((entity.to_owned(), kind))
    }

    /// The name of an entity in this zone: `alice.users.ZONE`,
    /// `wiki.apps.ZONE`, `app1.systems.ZONE` (lowercase, no final dot).
    pub fn name_of(&self, entity: &str, kind: EntityKind) -> String {
        format!(
            "{}.{}.{}",
            entity.to_ascii_lowercase(),
            kind_label(kind),
            self.0
        )
    }
}

impl Default for OverlayZone {
    fn default() -> OverlayZone {
        OverlayZone(DEFAULT_ZONE.to_owned())
    }
}

impl std::fmt::Display for OverlayZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The label under the zone that holds each kind of entity.
pub const fn kind_label(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::User => "users",
        EntityKind::Application => "apps",
        EntityKind::System => "systems",
    }
}

/// Whether `label` is a lowercase host-name label: 1 to 63 of a-z, 0-9
/// and '-', not starting or ending with '-'.
pub fn is_valid_label(label: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_checked_and_normalised() {
        let zone = OverlayZone::new("Corp.Example.").unwrap();
        assert_eq!(zone.as_str(), "corp.example");
        assert_eq!(OverlayZone::default().as_str(), DEFAULT_ZONE);
        let too_long = format!("{}a", "a.".repeat(100));
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "é.b",
            too_long.as_str(),
        ] {
            assert_eq!(OverlayZone::new(bad), Err(BadZone(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn names_split_and_join_both_ways() {
        let zone = OverlayZone::new("permanet.internal").unwrap();
        for (name, expected) in [
            (
                "alice.users.permanet.internal",
                Ok(("alice", EntityKind::User)),
            ),
            (
                "Wiki.Apps.Permanet.Internal.",
                Ok(("wiki", EntityKind::Application)),
            ),
            (
                "app1.systems.permanet.internal",
                Ok(("app1", EntityKind::System)),
            ),
            (
                "alice.people.permanet.internal",
                Err(NameError::NotAnEntity),
            ),
            ("users.permanet.internal", Err(NameError::NotAnEntity)),
            (".users.permanet.internal", Err(NameError::NotAnEntity)),
            ("a.b.users.permanet.internal", Err(NameError::NotAnEntity)),
            ("permanet.internal", Err(NameError::OutsideZone)),
            ("alice.users.example.org", Err(NameError::OutsideZone)),
            (
                "alice.users.xpermanet.internal",
                Err(NameError::OutsideZone),
            ),
            ("", Err(NameError::OutsideZone)),
        ] {
            let got = zone.split(name);
            let expected = expected.map(|(n, k)| (n.to_owned(), k));
            assert_eq!(got, expected, "{name:?}");
            if let Ok((entity, kind)) = got {
                assert_eq!(zone.split(&zone.name_of(&entity, kind)), Ok((entity, kind)));
            }
        }
        assert_eq!(zone.split(&"a.".repeat(200)), Err(NameError::OutsideZone));
        assert_eq!(
            zone.name_of("Alice", EntityKind::User),
            "alice.users.permanet.internal"
        );
    }
}
