//! From a config file to a ready [`Node`]: the second loading stage.
//!
//! [`load_identity`] reads what the config points at (private key, PSK,
//! this node's lease, the peers' leases), verifies every lease against the
//! authority key at the current time, and checks what depends on the lease
//! (it is for our key, of a kind the role can use, and the applications'
//! addresses lie inside its prefix). [`build_node`] turns the result into
//! an [`overlay_proto::node::Node`] with its peers added. [`prepare`] does
//! both after [`Config::load`]; `tunneld run` and `tunneld check-config`
//! call it, and the data plane starts from its [`Prepared`].

use std::fmt::Write as _;
use std::io::Read;
use std::path::Path;
use std::time::{Instant, SystemTime};

use overlay_proto::handshake::{Psk, PublicKey, StaticKeypair};
use overlay_proto::lease::{AuthorityKey, EntityKind, SignedLease, MAX_LEASE_LEN};
use overlay_proto::node::{Node, NodeConfig};
use overlay_proto::session::{PeerConfig, PeerId};
use overlay_proto::time::{Now, UnixTime};

use crate::config::{Config, ConfigError, Problem, Role};
use crate::keys;

/// A validated config and the node built from it, with its configured
/// peers added: what the data plane starts from.
#[derive(Debug)]
pub struct Prepared {
    /// The validated config.
    pub config: Config,
    /// The protocol endpoint.
    pub node: Node,
    /// Handles of `config.peers`, in order.
    pub peers: Vec<PeerId>,
}

/// What the config's files hold, checked.
#[derive(Debug)]
pub struct Identity {
    /// From `private-key-file`.
    pub keypair: StaticKeypair,
    /// From `lease-file`, verified.
    pub lease: SignedLease,
    /// From `psk-file`.
    pub psk: Option<Psk>,
    /// From `peers[i].lease-file`, verified, with their settings.
    pub peers: Vec<(SignedLease, PeerConfig)>,
}

/// The clocks of this machine.
pub fn now() -> Now {
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(UnixTime::from_duration)
        .unwrap_or(UnixTime::EPOCH);
    Now {
        instant: Instant::now(),
        unix,
    }
}

/// Loads the config at `path`, its key and lease files, and builds the
/// node. `seed` feeds the node's randomness (32 bytes from the OS).
pub fn prepare(path: &Path, now: Now, seed: [u8; 32]) -> Result<Prepared, ConfigError> {
    prepare_config(Config::load(path)?, now, seed)
}

/// [`prepare`] for a config already loaded.
pub fn prepare_config(config: Config, now: Now, seed: [u8; 32]) -> Result<Prepared, ConfigError> {
    let identity = load_identity(&config, now.unix)?;
    let (node, peers) = build_node(&config, identity, now.instant, seed)?;
    Ok(Prepared {
        config,
        node,
        peers,
    })
}

/// Reads and checks the files `config` points at, with leases verified at
/// `now`.
pub fn load_identity(config: &Config, now: UnixTime) -> Result<Identity, ConfigError> {
    let keypair = keys::read_private_key_file(&config.private_key_file)
        .map_err(|p| config.error("private-key-file", p))?;
    let psk = config
        .psk_file
        .as_deref()
        .map(keys::read_psk_file)
        .transpose()
        .map_err(|p| config.error("psk-file", p))?;
    let lease =
        read_lease(config, &config.lease_file, now).map_err(|p| config.error("lease-file", p))?;
    check_own_lease(config, &keypair, &lease).map_err(|p| config.error("lease-file", p))?;
    check_applications(config, &lease)?;
    let mut peers = Vec::with_capacity(config.peers.len());
    for (i, peer) in config.peers.iter().enumerate() {
        let key = format!("peers[{i}].lease-file");
        let peer_lease =
            read_lease(config, &peer.lease_file, now).map_err(|p| config.error(&key, p))?;
        if peer_lease.lease().public_key == *keypair.public().as_bytes() {
            return Err(config.error(
                key,
                Problem::OwnLease {
                    path: peer.lease_file.clone(),
                },
            ));
        }
        let peer_config = PeerConfig {
            psk: None,
            endpoint: peer.endpoint,
            persistent_keepalive: peer.persistent_keepalive,
        };
        peers.push((peer_lease, peer_config));
    }
    Ok(Identity {
        keypair,
        lease,
        psk,
        peers,
    })
}

/// The node for `config` and `identity`, with the configured peers added.
pub fn build_node(
    config: &Config,
    identity: Identity,
    now: Instant,
    seed: [u8; 32],
) -> Result<(Node, Vec<PeerId>), ConfigError> {
    let mut node_config = NodeConfig::new(identity.keypair, config.authority_key, identity.lease);
    node_config.psk = identity.psk;
    node_config.ipv4_policy = config.ipv4_policy;
    node_config.accept_unknown_peers = config.role == Role::Server;
    node_config.dangerous_export_keys = config.dangerous_esp_keylog.is_some();
    let mut node = Node::new(node_config, seed);
    let mut ids = Vec::with_capacity(identity.peers.len());
    for (i, ((lease, peer_config), peer)) in
        identity.peers.into_iter().zip(&config.peers).enumerate()
    {
        let id = node.add_peer(lease, peer_config, now).map_err(|error| {
            config.error(
                format!("peers[{i}].lease-file"),
                Problem::Peer {
                    path: peer.lease_file.clone(),
                    error,
                },
            )
        })?;
        ids.push(id);
    }
    Ok((node, ids))
}

/// One paragraph describing the prepared node, for logs and
/// `check-config`.
pub fn summary(prepared: &Prepared) -> String {
    let config = &prepared.config;
    let lease = prepared.node.local_lease().lease();
    let mut s = format!(
        "{} \"{}\" ({}) at {}, public key {}, lease serial {} valid until unix time {}; role {}, mode {}, listening on {}, mtu {}",
        lease.kind.as_str(),
        lease.name,
        lease.dn,
        lease.prefix,
        prepared.node.public_key(),
        lease.serial,
        lease.not_after.as_secs(),
        config.role,
        config.mode,
        config.listen,
        config.mtu,
    );
    match config.persistent_keepalive {
        Some(k) => {
            let _ = write!(s, ", keepalive {}s", k.as_secs());
        }
        None => s.push_str(", no keepalive"),
    }
    let _ = write!(s, "; {} configured peer(s)", prepared.peers.len());
    if config.role == Role::Server {
        let _ = write!(
            s,
            ", {} application(s), accepting any peer with a valid lease",
            config.applications.len()
        );
    } else {
        let _ = write!(s, ", {} port forward(s)", config.port_forwards.len());
        if let Some(socks) = config.socks_listen {
            let _ = write!(s, ", SOCKS5 on {socks}");
        }
    }
    if let Some(addrd) = &config.addrd {
        let _ = write!(s, "; addrd at {}", addrd.endpoint);
    }
    if let Some(metrics) = config.metrics_listen {
        let _ = write!(s, "; metrics on {metrics}");
    }
    s
}

fn read_lease(config: &Config, path: &Path, now: UnixTime) -> Result<SignedLease, Problem> {
    read_lease_file(&config.authority_key, path, now)
}

/// Reads the lease at `path` and verifies it against `authority` at `now`.
pub fn read_lease_file(
    authority: &AuthorityKey,
    path: &Path,
    now: UnixTime,
) -> Result<SignedLease, Problem> {
    let io_error = |error| Problem::Io {
        path: path.to_owned(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io_error)?
        .take(MAX_LEASE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    SignedLease::verify(&bytes, authority, now).map_err(|error| Problem::Lease {
        path: path.to_owned(),
        error,
    })
}

fn check_own_lease(
    config: &Config,
    keypair: &StaticKeypair,
    lease: &SignedLease,
) -> Result<(), Problem> {
    let lease_key = PublicKey(lease.lease().public_key);
    if lease_key != keypair.public() {
        return Err(Problem::LeaseKeyMismatch {
            path: config.lease_file.clone(),
            lease_key,
            own_key: keypair.public(),
        });
    }
    let kind = lease.lease().kind;
    let (fits, expected) = match config.role {
        Role::Client => (kind == EntityKind::User, "a user lease"),
        Role::Server => (
            matches!(kind, EntityKind::System | EntityKind::Application),
            "a system or application lease",
        ),
    };
    if fits {
        Ok(())
    } else {
        Err(Problem::LeaseKind {
            path: config.lease_file.clone(),
            kind,
            role: config.role,
            expected,
        })
    }
}

fn check_applications(config: &Config, lease: &SignedLease) -> Result<(), ConfigError> {
    let prefix = lease.lease().prefix;
    for (i, app) in config.applications.iter().enumerate() {
        if !prefix.contains(&app.address) {
            return Err(config.error(
                format!("applications[{i}].address"),
                Problem::OutsidePrefix {
                    address: app.address,
                    prefix,
                },
            ));
        }
    }
    Ok(())
}
