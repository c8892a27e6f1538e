//! Names in the overlay (DESIGN §9): `NAME.users.ZONE`,
//! `NAME.apps.ZONE` and `NAME.systems.ZONE` name a user's, an
//! application's and a server system's permanent address.
//!
//! [`OverlayZone`] is the zone (config key `overlay-zone`, default
//! [`DEFAULT_ZONE`]). [`OverlayResolver`] is the seam the SOCKS5 proxy asks
//! for a name's address; it is asynchronous and object safe, so an
//! implementation may wait on the network. Two implementations are meant:
//! - [`LeaseResolver`], here now: answers from the leases this node holds
//!   (its own and its peers'), which carry each entity's short name, kind
//!   and prefix. It knows only entities this node has a lease for.
//! - an addrd resolver, with the addrd issue: sends the AAAA query to
//!   addrd's DNS server through the tunnel (from the userspace stack, to
//!   addrd's overlay address), so it knows every entity of the directory.
//!   It will implement the same trait and may fall back to a
//!   [`LeaseResolver`] while addrd is unreachable.
//!
//! Either way a name outside the zone is refused with
//! [`ResolveError::OutsideZone`] and never handed to the host's resolver:
//! asking the host's DNS would tell whoever runs it which overlay names
//! this node looks up (a leak), and its answer would not be an overlay
//! address anyway.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::RwLock;

use overlay_proto::addr::SystemVirtualNetwork;
use overlay_proto::lease::{EntityKind, Lease};
use overlay_proto::node::Node;

/// The zone when the config sets none.
pub const DEFAULT_ZONE: &str = "permanet.internal";

/// Longest DNS name (RFC 1035 §2.3.4, without the final dot).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// Why a name has no overlay address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name is not under the overlay zone (or is not a name at all):
    /// refused, never looked up elsewhere.
    #[error("outside the overlay zone")]
    OutsideZone,
    /// The name is in the zone but names no known entity.
    #[error("no such overlay name")]
    NotFound,
    /// The resolver could not answer (a DNS resolver's server did not).
    #[error("overlay resolver unavailable: {0}")]
    Unavailable(String),
}

/// The answer an [`OverlayResolver`] will give.
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Ipv6Addr, ResolveError>> + Send + 'a>>;

/// Turns an overlay name into the permanent address it names.
pub trait OverlayResolver: Send + Sync + std::fmt::Debug {
    /// The address of `name` (any case, an optional final dot).
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a>;
}

/// The overlay's DNS zone: a lowercase DNS name without the final dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayZone(String);

/// A zone that is not a usable DNS name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a DNS zone (dot-separated labels of a-z, 0-9 and '-', \
     each 1 to 63 long, not starting or ending with '-'; at most 200 in all)"
)]
pub struct BadZone(pub String);

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
            && name.split('.').all(valid_label);
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

    /// Split `name` into the entity's short name and kind:
    /// `alice.users.ZONE` is `("alice", User)`. Case-insensitive; one
    /// final dot is allowed.
    pub fn split(&self, name: &str) -> Result<(String, EntityKind), ResolveError> {
        if name.len() > MAX_NAME_LEN + 1 {
            return Err(ResolveError::OutsideZone);
        }
        let lower = name.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let inside = name
            .strip_suffix(self.0.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .ok_or(ResolveError::OutsideZone)?;
        let (entity, kind) = inside.rsplit_once('.').ok_or(ResolveError::NotFound)?;
        let kind = match kind {
            "users" => EntityKind::User,
            "apps" => EntityKind::Application,
            "systems" => EntityKind::System,
            _ => return Err(ResolveError::NotFound),
        };
        if entity.is_empty() || entity.contains('.') {
            return Err(ResolveError::NotFound);
        }
        Ok((entity.to_owned(), kind))
    }

    /// The name of an entity in this zone.
    pub fn name_of(&self, entity: &str, kind: EntityKind) -> String {
        let kind = match kind {
            EntityKind::User => "users",
            EntityKind::Application => "apps",
            EntityKind::System => "systems",
        };
        format!("{}.{kind}.{}", entity.to_ascii_lowercase(), self.0)
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

fn valid_label(label: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// The address a lease's name stands for: a user's or application's /128,
/// a system's `::1` of its system virtual network.
pub fn lease_address(lease: &Lease) -> Ipv6Addr {
    match (lease.kind, SystemVirtualNetwork::from_prefix(lease.prefix)) {
        (EntityKind::System, Ok(svn)) => svn.system_address(),
        _ => lease.prefix.addr(),
    }
}

/// An [`OverlayResolver`] answering from the leases this node holds. See
/// the module documentation.
#[derive(Debug)]
pub struct LeaseResolver {
    zone: OverlayZone,
    /// (lowercase short name, kind) → address.
    names: RwLock<HashMap<(String, EntityKind), Ipv6Addr>>,
}

impl LeaseResolver {
    /// A resolver for `zone` that knows no names yet.
    pub fn new(zone: OverlayZone) -> LeaseResolver {
        LeaseResolver {
            zone,
            names: RwLock::new(HashMap::new()),
        }
    }

    /// A resolver for `zone` that knows `node`'s own lease and its peers'.
    pub fn from_node(zone: OverlayZone, node: &Node) -> LeaseResolver {
        let resolver = LeaseResolver::new(zone);
        resolver.learn(node.local_lease().lease());
        for peer in node.peers() {
            resolver.learn(peer.lease().lease());
        }
        resolver
    }

    /// The zone answered for.
    pub fn zone(&self) -> &OverlayZone {
        &self.zone
    }

    /// Know `lease`'s name (a later lease of the same name and kind
    /// replaces it: renewals, netmap refreshes).
    pub fn learn(&self, lease: &Lease) {
        let key = (lease.name.to_ascii_lowercase(), lease.kind);
        self.names
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, lease_address(lease));
    }

    /// The address of `name`, without waiting.
    pub fn lookup(&self, name: &str) -> Result<Ipv6Addr, ResolveError> {
        let key = self.zone.split(name)?;
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied()
            .ok_or(ResolveError::NotFound)
    }
}

impl OverlayResolver for LeaseResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(std::future::ready(self.lookup(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, kind: EntityKind, prefix: &str) -> Lease {
        Lease {
            kind,
            serial: 1,
            not_before: overlay_proto::time::UnixTime::from_secs(0),
            not_after: overlay_proto::time::UnixTime::from_secs(1),
            public_key: [0; 32],
            prefix: prefix.parse().unwrap(),
            name: name.into(),
            dn: String::new(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn zones_are_checked_and_normalised() {
        assert_eq!(OverlayZone::default().as_str(), "permanet.internal");
        assert_eq!(
            OverlayZone::new("Corp.Example.").unwrap().as_str(),
            "corp.example"
        );
        assert_eq!(OverlayZone::new("x").unwrap().as_str(), "x");
        let long = ["a"; 100].join(".");
        assert_eq!(long.len(), 199);
        assert!(OverlayZone::new(&long).is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "-a.b",
            "a-.b",
            "a_b",
            "a b",
            "ä.example",
            &"a".repeat(64),
            &format!("{long}.bb"),
        ] {
            assert_eq!(OverlayZone::new(bad), Err(BadZone(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn names_split_into_entity_and_kind() {
        let zone = OverlayZone::new("corp.example").unwrap();
        type Split<'a> = Result<(&'a str, EntityKind), ResolveError>;
        let cases: &[(&str, Split<'_>)] = &[
            ("alice.users.corp.example", Ok(("alice", EntityKind::User))),
            (
                "Wiki.Apps.Corp.Example.",
                Ok(("wiki", EntityKind::Application)),
            ),
            ("db1.systems.corp.example", Ok(("db1", EntityKind::System))),
            ("alice.hosts.corp.example", Err(ResolveError::NotFound)),
            ("users.corp.example", Err(ResolveError::NotFound)),
            (".users.corp.example", Err(ResolveError::NotFound)),
            ("a.b.users.corp.example", Err(ResolveError::NotFound)),
            ("corp.example", Err(ResolveError::OutsideZone)),
            ("alice.users.xcorp.example", Err(ResolveError::OutsideZone)),
            (
                "alice.users.corp.example.org",
                Err(ResolveError::OutsideZone),
            ),
            ("example.org", Err(ResolveError::OutsideZone)),
            ("", Err(ResolveError::OutsideZone)),
        ];
        for (name, want) in cases {
            let got = zone.split(name);
            let want = want.clone().map(|(n, k)| (n.to_owned(), k));
            assert_eq!(got, want, "{name:?}");
        }
        assert_eq!(
            zone.name_of("Alice", EntityKind::User),
            "alice.users.corp.example"
        );
        assert_eq!(
            zone.split(&"a.".repeat(200)),
            Err(ResolveError::OutsideZone)
        );
    }

    #[test]
    fn lease_resolver_answers_from_known_leases() {
        let resolver = LeaseResolver::new(OverlayZone::default());
        resolver.learn(&lease("alice", EntityKind::User, "2002:102:304:1::a/128"));
        resolver.learn(&lease(
            "wiki",
            EntityKind::Application,
            "2002:b16:212c:1::80/128",
        ));
        resolver.learn(&lease("srv", EntityKind::System, "2002:b16:212c:1::/64"));
        let ip = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(
            resolver.lookup("alice.users.permanet.internal"),
            Ok(ip("2002:102:304:1::a"))
        );
        assert_eq!(
            resolver.lookup("WIKI.apps.permanet.internal."),
            Ok(ip("2002:b16:212c:1::80"))
        );
        assert_eq!(
            resolver.lookup("srv.systems.permanet.internal"),
            Ok(ip("2002:b16:212c:1::1")),
            "a system answers on ::1 of its SVN"
        );
        // The right name under the wrong kind is not found.
        assert_eq!(
            resolver.lookup("alice.apps.permanet.internal"),
            Err(ResolveError::NotFound)
        );
        assert_eq!(
            resolver.lookup("alice.users.example.org"),
            Err(ResolveError::OutsideZone)
        );
        // A renewed lease with a new address replaces the old one.
        resolver.learn(&lease("alice", EntityKind::User, "2002:102:304:1::b/128"));
        assert_eq!(
            resolver.lookup("alice.users.permanet.internal"),
            Ok(ip("2002:102:304:1::b"))
        );
    }
}
