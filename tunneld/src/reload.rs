//! Changes a running daemon takes without a restart: SIGHUP and lease
//! renewal.
//!
//! A reload has two halves. [`plan`] runs outside the data plane: it
//! compares the running config with the re-read one, refuses a change to
//! any key that needs a restart (naming it), reads and verifies every
//! lease file through [`startup::load_identity`] (so a reload checks
//! exactly what a start checks), and returns a [`ChangeSet`]. The data
//! plane then applies the change set between two packets
//! ([`crate::dataplane::TunnelHandle::update`] → [`apply`]): the node gets
//! its renewed lease, peers are updated, added or removed, persistent
//! keepalives change, and the server's [`AccessPolicy`] is replaced.
//! [`apply`] checks everything before it changes anything, so a change set
//! is applied whole or not at all. Lease sources ([`crate::leases`]) send
//! their renewals through the same path.
//!
//! What reloads (the `reload:` notes in `configs/*.toml` say the same):
//! `log-level` (applied by the binary's log filter), `lease-file` (same
//! key and prefix), `persistent-keepalive`, `peers` (added, removed,
//! renewed leases, keepalive; an existing peer's `endpoint` needs a
//! restart), `applications[i].allowed-groups`. Every other key needs a
//! restart; [`ReloadError::RestartNeeded`] names the first one changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use overlay_proto::handshake::PublicKey;
use overlay_proto::lease::SignedLease;
use overlay_proto::node::{AddPeerError, Node};
use overlay_proto::session::PeerConfig;
use overlay_proto::time::UnixTime;
use tracing::info;

use crate::access::AccessPolicy;
use crate::config::{Config, ConfigError, Role};
use crate::startup;

/// What the running daemon was configured with: what a reload compares
/// against.
#[derive(Clone, Debug)]
pub struct Running {
    /// The config last applied.
    pub config: Config,
    /// The peers that config names, by key, with their configured
    /// endpoint.
    pub peers: BTreeMap<PublicKey, Option<SocketAddr>>,
    /// This node's lease prefix (the userspace stack holds its addresses).
    pub prefix: ipnet::Ipv6Net,
}

impl Running {
    /// The state of a daemon just started: `prepared.peers` are the
    /// handles of `prepared.config.peers`, in order.
    pub fn new(prepared: &startup::Prepared) -> Self {
        let node = &prepared.node;
        let peers = prepared
            .peers
            .iter()
            .zip(&prepared.config.peers)
            .filter_map(|(id, peer)| Some((*node.peer(*id)?.public_key(), peer.endpoint)))
            .collect();
        Running {
            config: prepared.config.clone(),
            peers,
            prefix: node.local_lease().lease().prefix,
        }
    }
}

/// A change to the running data plane.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet {
    /// This node's renewed lease.
    pub local_lease: Option<SignedLease>,
    /// Peers to add, or to update (same key): their verified leases and,
    /// from a config, their settings.
    pub peers: Vec<PeerUpdate>,
    /// Peers to remove, by key.
    pub remove: Vec<PublicKey>,
    /// The server's new access policy.
    pub access: Option<AccessPolicy>,
}

/// One peer in a [`ChangeSet`].
#[derive(Clone, Debug)]
pub struct PeerUpdate {
    /// Its verified lease.
    pub lease: SignedLease,
    /// Its settings from the config. `None` makes this a renewal (a lease
    /// source's netmap refresh): it keeps the peer's settings and is
    /// skipped for a peer the node does not hold. Either way a lease older
    /// than the one held is skipped (a peer may have brought a newer one in
    /// a handshake); one for another prefix is refused.
    pub settings: Option<PeerSettings>,
}

/// A peer's settings from `[[peers]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSettings {
    /// `peers[i].endpoint`, used when the peer is added.
    pub endpoint: Option<SocketAddr>,
    /// `peers[i].persistent-keepalive` after the node's default.
    pub persistent_keepalive: Option<Duration>,
}

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// This node's lease was replaced.
    pub local_lease: bool,
    /// Peers added.
    pub added: usize,
    /// Peers given a new lease or keepalive.
    pub updated: usize,
    /// Peers removed.
    pub removed: usize,
    /// The access policy was replaced.
    pub access: bool,
}

/// Why a reload was not applied. The daemon keeps running as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The new config, or a file it names, is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new config changes a key that only a restart applies.
    #[error("{file}: {key}: changed, but only a restart applies it (kept the running value)")]
    RestartNeeded {
        /// The config file.
        file: String,
        /// The key, as written in the file.
        key: String,
    },
    /// The data plane refused the change.
    #[error("{key}: {error}")]
    Refused {
        /// What was refused (`lease-file`, a peer's public key).
        key: String,
        /// Why.
        error: AddPeerError,
    },
    /// The data plane has stopped.
    #[error("the data plane has stopped")]
    Stopped,
}

/// Reloads seen by the data plane, for `status` and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reloads applied.
    pub applied: u64,
    /// Reloads refused (invalid config, restart-only key, refused change).
    pub failed: u64,
    /// Why the last reload failed, if it did (cleared by a success).
    pub last_error: Option<String>,
}

impl ReloadStatus {
    /// Count one reload's result.
    pub fn record(&mut self, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.applied += 1;
                self.last_error = None;
            }
            Err(error) => {
                self.failed += 1;
                self.last_error = Some(error);
            }
        }
    }
}

/// The change from `running` to the config `new`, with every file it
/// names read and verified at `now`, and what will be running once it is
/// applied. Refuses restart-only changes.
pub fn plan(
    running: &Running,
    new: &Config,
    now: UnixTime,
) -> Result<(ChangeSet, Running), ReloadError> {
    restart_only_changes(&running.config, new)?;
    let identity = startup::load_identity(new, now)?;
    let restart = |key: &str| ReloadError::RestartNeeded {
        file: new.path.display().to_string(),
        key: key.to_owned(),
    };
    if identity.lease.lease().prefix != running.prefix {
        return Err(restart("lease-file (the new lease has another prefix)"));
    }
    let mut next = BTreeMap::new();
    let mut peers = Vec::with_capacity(identity.peers.len());
    for (i, (lease, config)) in identity.peers.into_iter().enumerate() {
        let key = PublicKey(lease.lease().public_key);
        if let Some(endpoint) = running.peers.get(&key) {
            if *endpoint != config.endpoint {
                return Err(restart(&format!("peers[{i}].endpoint")));
            }
        }
        next.insert(key, config.endpoint);
        peers.push(PeerUpdate {
            lease,
            settings: Some(PeerSettings {
                endpoint: config.endpoint,
                persistent_keepalive: config.persistent_keepalive,
            }),
        });
    }
    let remove = running
        .peers
        .keys()
        .filter(|k| !next.contains_key(*k))
        .copied()
        .collect();
    let access =
        (new.role == Role::Server).then(|| AccessPolicy::from_applications(&new.applications));
    let change = ChangeSet {
        local_lease: Some(identity.lease),
        peers,
        remove,
        access,
    };
    let running = Running {
        config: new.clone(),
        peers: next,
        prefix: running.prefix,
    };
    Ok((change, running))
}

/// The first key whose change only a restart applies.
fn restart_only_changes(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let restart = |key: &str| {
        Err(ReloadError::RestartNeeded {
            file: new.path.display().to_string(),
            key: key.to_owned(),
        })
    };
    let same_apps = old.applications.len() == new.applications.len()
        && old
            .applications
            .iter()
            .zip(&new.applications)
            .all(|(a, b)| {
                a.name == b.name
                    && a.address == b.address
                    && a.ports == b.ports
                    && a.backend == b.backend
            });
    let checks: [(&str, bool); 16] = [
        ("role", old.role == new.role),
        ("listen", old.listen == new.listen),
        (
            "private-key-file",
            old.private_key_file == new.private_key_file,
        ),
        ("authority-key", old.authority_key == new.authority_key),
        ("psk-file", old.psk_file == new.psk_file),
        ("addrd", old.addrd == new.addrd),
        ("mode", old.mode == new.mode),
        ("tun-name", old.tun_name == new.tun_name),
        ("mtu", old.mtu == new.mtu),
        ("socks-listen", old.socks_listen == new.socks_listen),
        ("port-forwards", old.port_forwards == new.port_forwards),
        ("overlay-zone", old.overlay_zone == new.overlay_zone),
        ("applications", same_apps),
        ("metrics-listen", old.metrics_listen == new.metrics_listen),
        (
            "dangerous-esp-keylog",
            old.dangerous_esp_keylog == new.dangerous_esp_keylog,
        ),
        (
            "dangerous-allow-private-ipv4",
            old.ipv4_policy == new.ipv4_policy,
        ),
    ];
    match checks.iter().find(|(_, same)| !same) {
        Some((key, _)) => restart(key),
        None => Ok(()),
    }
}

/// Apply `change` to the node and the access policy, whole or not at all.
pub fn apply(
    node: &mut Node,
    access: &mut AccessPolicy,
    change: ChangeSet,
    now: Instant,
) -> Result<Applied, ReloadError> {
    check(node, &change)?;
    let mut applied = Applied::default();
    for key in &change.remove {
        if let Some(id) = node.peer_by_key(key) {
            if node.remove_peer(id) {
                applied.removed += 1;
                info!(peer = id.0, public_key = %key, "peer removed by reload");
            }
        }
    }
    if let Some(lease) = change.local_lease {
        if lease != *node.local_lease() {
            info!(
                serial = lease.lease().serial,
                not_after = lease.lease().not_after.as_secs(),
                "own lease renewed"
            );
            node.set_local_lease(lease);
            applied.local_lease = true;
        }
    }
    for update in change.peers {
        let key = PublicKey(update.lease.lease().public_key);
        let refused = |error| ReloadError::Refused {
            key: format!("peer {key}"),
            error,
        };
        match node.peer_by_key(&key) {
            Some(id) => {
                let mut changed = false;
                let held = node.peer(id).map(|p| p.lease().clone());
                // An older lease than held (the peer brought a newer one in
                // a handshake) is skipped, not an error.
                let older = held
                    .as_ref()
                    .is_some_and(|h| update.lease.lease().serial < h.lease().serial);
                if held.as_ref() != Some(&update.lease) && !older {
                    node.update_peer_lease(id, update.lease, now)
                        .map_err(refused)?;
                    changed = true;
                }
                if let Some(settings) = update.settings {
                    let current = node.peer(id).and_then(|p| p.persistent_keepalive());
                    let wanted = settings
                        .persistent_keepalive
                        .map(|d| d.max(overlay_proto::session::MIN_PERSISTENT_KEEPALIVE));
                    if current != wanted {
                        node.set_persistent_keepalive(id, wanted, now);
                        changed = true;
                    }
                }
                if changed {
                    applied.updated += 1;
                }
            }
            None => {
                // A renewal for a peer the node does not hold: nothing to do.
                let Some(settings) = update.settings else {
                    continue;
                };
                let config = PeerConfig {
                    psk: None,
                    endpoint: settings.endpoint,
                    persistent_keepalive: settings.persistent_keepalive,
                };
                let id = node.add_peer(update.lease, config, now).map_err(refused)?;
                info!(peer = id.0, public_key = %key, "peer added by reload");
                applied.added += 1;
            }
        }
    }
    if let Some(policy) = change.access {
        if policy != *access {
            *access = policy;
            applied.access = true;
        }
    }
    Ok(applied)
}

/// Everything [`apply`] would refuse, checked before it changes anything.
fn check(node: &Node, change: &ChangeSet) -> Result<(), ReloadError> {
    if let Some(lease) = &change.local_lease {
        let (new, old) = (lease.lease(), node.local_lease().lease());
        if new.public_key != old.public_key || new.prefix != old.prefix || new.serial < old.serial {
            return Err(ReloadError::Refused {
                key: "lease-file".to_owned(),
                error: AddPeerError::LeaseMismatch,
            });
        }
    }
    let removed: BTreeSet<_> = change.remove.iter().collect();
    for update in &change.peers {
        let lease = update.lease.lease();
        let key = PublicKey(lease.public_key);
        let refused = |error| ReloadError::Refused {
            key: format!("peer {key}"),
            error,
        };
        match node.peer_by_key(&key).and_then(|id| node.peer(id)) {
            Some(peer) => {
                let old = peer.lease().lease();
                if lease.prefix != old.prefix {
                    return Err(refused(AddPeerError::LeaseMismatch));
                }
            }
            None if update.settings.is_none() => {}
            None => {
                let owner = node
                    .route(&lease.prefix.addr())
                    .and_then(|id| node.peer(id))
                    .filter(|p| p.lease().lease().prefix == lease.prefix);
                if let Some(owner) = owner {
                    if !removed.contains(owner.public_key()) {
                        return Err(refused(AddPeerError::PrefixTaken(lease.prefix)));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
