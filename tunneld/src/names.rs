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
//! - [`OverlayDnsResolver`](crate::userspace::OverlayDnsResolver), with
//!   `[addrd]`: a [`LeaseResolver`] first, then the AAAA query to addrd's
//!   DNS through the tunnel (from the userspace stack, to addrd's overlay
//!   address), so it knows every entity of the directory.
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

use overlay_proto::handshake::PublicKey;
use overlay_proto::lease::{EntityKind, Lease};
use overlay_proto::names::NameError;
use overlay_proto::node::Node;

pub use overlay_proto::names::{BadZone, OverlayZone, DEFAULT_ZONE};

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

impl From<NameError> for ResolveError {
    fn from(error: NameError) -> ResolveError {
        match error {
            NameError::OutsideZone => ResolveError::OutsideZone,
            _ => ResolveError::NotFound,
        }
    }
}

/// An [`OverlayResolver`] answering from the leases this node holds. See
/// the module documentation.
#[derive(Debug)]
pub struct LeaseResolver {
    zone: OverlayZone,
    /// (lowercase short name, kind) → address.
    names: RwLock<HashMap<(String, EntityKind), Ipv6Addr>>,
    /// Static public key → address (addrd's overlay address is the one of
    /// the lease with its pinned key).
    keys: RwLock<HashMap<[u8; 32], Ipv6Addr>>,
}

impl LeaseResolver {
    /// A resolver for `zone` that knows no names yet.
    pub fn new(zone: OverlayZone) -> LeaseResolver {
        LeaseResolver {
            zone,
            names: RwLock::new(HashMap::new()),
            keys: RwLock::new(HashMap::new()),
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
            .insert(key, lease.address());
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(lease.public_key, lease.address());
    }

    /// The address of the entity whose lease (the latest learned) carries
    /// `key`.
    pub fn address_of_key(&self, key: &PublicKey) -> Option<Ipv6Addr> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key.as_bytes())
            .copied()
    }

    /// The address of `name`, without waiting.
    pub fn lookup(&self, name: &str) -> Result<Ipv6Addr, ResolveError> {
        let key = self.zone.split(name).map_err(ResolveError::from)?;
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
    fn addrd_is_found_by_its_key_and_follows_its_latest_lease() {
        let resolver = LeaseResolver::new(OverlayZone::default());
        let addrd_key = PublicKey([9; 32]);
        assert_eq!(resolver.address_of_key(&addrd_key), None);
        let mut addrd = lease("addrd", EntityKind::System, "fd42:7065:726d::/64");
        addrd.public_key = addrd_key.0;
        resolver.learn(&addrd);
        resolver.learn(&lease("alice", EntityKind::User, "fd42:7065:726d:1::a/128"));
        assert_eq!(
            resolver.address_of_key(&addrd_key),
            Some("fd42:7065:726d::1".parse().unwrap())
        );
        addrd.prefix = "fd42:7065:726e::/64".parse().unwrap();
        resolver.learn(&addrd);
        assert_eq!(
            resolver.address_of_key(&addrd_key),
            Some("fd42:7065:726e::1".parse().unwrap())
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
