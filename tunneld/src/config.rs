//! The daemon's configuration file: kebab-case TOML, parsed and checked.
//!
//! Loading happens in two stages. [`Config::load`] (or [`Config::parse`])
//! reads the TOML, applies defaults, resolves relative paths against the
//! config file's directory and checks everything that needs no other file:
//! ranges, role-specific keys, names, duplicate ports. The second stage
//! ([`crate::startup`]) reads the key, PSK and lease files and checks what
//! depends on them (the lease matches the key, applications lie inside the
//! lease's prefix).
//!
//! Every error names the config file, the key as a dotted path
//! (`applications[1].address`) and what is wrong. TOML syntax and type
//! errors keep the line and column the `toml` crate reports.
//!
//! The reference configs are `configs/tunneld-client.toml` and
//! `configs/tunneld-server.toml`.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv6Net;
use overlay_proto::addr::Ipv4Policy;
use overlay_proto::handshake::{KeyParseError, PublicKey};
use overlay_proto::lease::{AuthorityKey, EntityKind, LeaseError};
use overlay_proto::node::{AddPeerError, DEFAULT_PORT};
use serde::Deserialize;

use crate::names::{BadZone, OverlayZone};

/// Default overlay MTU (DESIGN §4): a 1500-byte path carries it.
pub const DEFAULT_MTU: u16 = 1380;

/// Smallest MTU accepted: IPv6's minimum link MTU.
pub const MIN_MTU: u16 = 1280;

/// Largest MTU accepted.
pub const MAX_MTU: u16 = 1500;

/// Persistent keepalive of the client role unless configured (DESIGN §6).
pub const DEFAULT_CLIENT_KEEPALIVE: Duration = Duration::from_secs(25);

/// Where the daemon listens unless configured.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT);

/// Whether this node is a terminal or a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A terminal: a user's lease, SOCKS proxy and port forwards.
    Client,
    /// A server: a system's lease, applications, accepts unknown peers
    /// that present a valid lease.
    Server,
}

impl Role {
    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How inner packets reach applications (DESIGN §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A TUN device (root or CAP_NET_ADMIN).
    Tun,
    /// A userspace TCP/IP stack inside the daemon (no privileges).
    Userspace,
}

impl Mode {
    /// The config spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Tun => "tun",
            Mode::Userspace => "userspace",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use daemon_kit::logging::LogLevel;

/// The validated configuration. Paths are absolute or relative to the
/// working directory (already resolved against the config's directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// `role`.
    pub role: Role,
    /// `listen`: the one UDP socket.
    pub listen: SocketAddr,
    /// `private-key-file`: base64 X25519 private key, mode 0600.
    pub private_key_file: PathBuf,
    /// `authority-key`: the Ed25519 key leases must be signed with.
    pub authority_key: AuthorityKey,
    /// `lease-file`: this node's signed lease (binary).
    pub lease_file: PathBuf,
    /// `psk-file`: optional base64 PSK, mode 0600.
    pub psk_file: Option<PathBuf>,
    /// `addrd`: the address authority to log in to (login issue).
    pub addrd: Option<Addrd>,
    /// `mode`.
    pub mode: Mode,
    /// `tun-name`: the TUN device's name (tun mode).
    pub tun_name: String,
    /// `mtu`: the overlay (inner) MTU.
    pub mtu: u16,
    /// `persistent-keepalive`, after the role's default.
    pub persistent_keepalive: Option<Duration>,
    /// `peers`: statically configured peers.
    pub peers: Vec<Peer>,
    /// `socks-listen` (client role).
    pub socks_listen: Option<SocketAddr>,
    /// `port-forwards` (client role).
    pub port_forwards: Vec<PortForward>,
    /// `overlay-zone`: the DNS zone of overlay names, default
    /// [`DEFAULT_ZONE`](crate::names::DEFAULT_ZONE).
    pub overlay_zone: OverlayZone,
    /// `applications` (server role).
    pub applications: Vec<Application>,
    /// `log-level`.
    pub log_level: LogLevel,
    /// `metrics-listen`: Prometheus endpoint, off unless set.
    pub metrics_listen: Option<SocketAddr>,
    /// `dangerous-esp-keylog`: where to write SA keys (decrypting captures).
    pub dangerous_esp_keylog: Option<PathBuf>,
    /// `dangerous-allow-private-ipv4`.
    pub ipv4_policy: Ipv4Policy,
}

/// `[addrd]`: where the address authority is and its pinned static key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addrd {
    /// `addrd.endpoint`.
    pub endpoint: SocketAddr,
    /// `addrd.public-key`: addrd's X25519 static key.
    pub public_key: PublicKey,
}

/// `[[peers]]`: a peer known from a lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// `peers[i].lease-file`.
    pub lease_file: PathBuf,
    /// `peers[i].endpoint`: where to send first.
    pub endpoint: Option<SocketAddr>,
    /// `peers[i].persistent-keepalive`, after the node's default.
    pub persistent_keepalive: Option<Duration>,
}

/// `[[port-forwards]]`: a local TCP or UDP port forwarded into the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    /// Local address to accept on (TCP) or bind (UDP).
    pub listen: SocketAddr,
    /// Overlay destination.
    pub to: SocketAddrV6,
    /// `protocol`: TCP (the default) or UDP.
    pub protocol: ForwardProtocol,
}

/// `port-forwards[i].protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProtocol {
    /// Each accepted TCP connection is carried to `to`.
    #[default]
    Tcp,
    /// Each local client's datagrams are relayed to `to`, replies back.
    Udp,
}

/// `[[applications]]`: a service on a permanent address (server role).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    /// Unique short name.
    pub name: String,
    /// Permanent address, inside this node's lease prefix.
    pub address: Ipv6Addr,
    /// TCP and UDP ports accepted on `address` (userspace mode; optional
    /// and unused in tun mode, where the application binds its own).
    pub ports: Vec<u16>,
    /// Local backend each flow is forwarded to (userspace mode, where it
    /// is required; optional and unused in tun mode).
    pub backend: Option<SocketAddr>,
    /// Groups allowed in; empty means anyone with a valid lease.
    pub allowed_groups: Vec<String>,
}

/// A config file could not be used: `FILE: KEY: PROBLEM` (see
/// [`daemon_kit::config`]), with this daemon's [`Problem`]s.
pub type ConfigError = daemon_kit::config::ConfigError<Problem>;

/// What is wrong with a key's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A required key is absent.
    #[error("missing (required: {0})")]
    Missing(&'static str),
    /// The key belongs to the other role.
    #[error("only valid with role = \"{allowed}\" (this config has role = \"{actual}\")")]
    WrongRole {
        /// The role the key belongs to.
        allowed: Role,
        /// The config's role.
        actual: Role,
    },
    /// The key belongs to the other mode.
    #[error("only valid with mode = \"{allowed}\" (this config has mode = \"{actual}\")")]
    WrongMode {
        /// The mode the key belongs to.
        allowed: Mode,
        /// The config's mode.
        actual: Mode,
    },
    /// Not a name Linux accepts for a network interface.
    #[error("{0:?} is not a valid interface name (1 to 15 bytes, no '/', ':', whitespace; not \".\" or \"..\")")]
    BadInterfaceName(String),
    /// A number outside its range.
    #[error("{value} is out of range {min}..={max}")]
    OutOfRange {
        /// The value given.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// A key in text form is malformed.
    #[error("{0}")]
    BadKey(KeyParseError),
    /// 32 bytes that are not a usable Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    BadAuthorityKey,
    /// An overlay destination that is not IPv6.
    #[error("{0} is not an overlay address (write \"[ipv6]:port\")")]
    NotIpv6(SocketAddr),
    /// Port 0 where a real port is needed.
    #[error("port 0 is not a usable port")]
    PortZero,
    /// An empty string or list where content is needed.
    #[error("must not be empty")]
    Empty,
    /// A name with characters outside `[a-z0-9._-]`.
    #[error("{0:?} is not a valid name (use a-z, 0-9, '.', '_' and '-', at most 63)")]
    BadName(String),
    /// An `overlay-zone` that is not a DNS name.
    #[error("{0}")]
    BadZone(BadZone),
    /// Two applications with one name.
    #[error("name {0:?} is already used by another application")]
    DuplicateName(String),
    /// Two applications (or one twice) on one address and port.
    #[error("[{address}]:{port} is already served by application {other:?}")]
    DuplicatePort {
        /// The address.
        address: Ipv6Addr,
        /// The port.
        port: u16,
        /// The application that has it first.
        other: String,
    },
    /// Two port forwards on one local address.
    #[error("{0} is already used by another port forward")]
    DuplicateListen(SocketAddr),
    /// An application address outside the node's lease.
    #[error("{address} is outside this node's prefix {prefix}")]
    OutsidePrefix {
        /// The address given.
        address: Ipv6Addr,
        /// The lease's prefix.
        prefix: Ipv6Net,
    },
    /// A referenced file could not be read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A secret file readable or writable by others.
    #[error(
        "{}: mode {mode:04o} is too open; a secret file must be 0600 or stricter (chmod 600 {})",
        path.display(),
        path.display()
    )]
    InsecureMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A secret file that is a directory, device, FIFO...
    #[error("{}: not a regular file", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// A key file whose contents are not a base64 key.
    #[error("{}: {error}", path.display())]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: KeyParseError,
    },
    /// A lease file that does not parse, verify or is outside its window.
    #[error("{}: {error}", path.display())]
    Lease {
        /// The file.
        path: PathBuf,
        /// Why.
        error: LeaseError,
    },
    /// This node's lease is for another key.
    #[error(
        "{}: the lease is for public key {lease_key}, but private-key-file holds the key of {own_key}",
        path.display()
    )]
    LeaseKeyMismatch {
        /// The lease file.
        path: PathBuf,
        /// The key in the lease.
        lease_key: PublicKey,
        /// The public half of the configured private key.
        own_key: PublicKey,
    },
    /// This node's lease is of a kind the role cannot use.
    #[error(
        "{}: a {} lease cannot be used with role = \"{role}\" (expected {expected})",
        path.display(),
        kind.as_str()
    )]
    LeaseKind {
        /// The lease file.
        path: PathBuf,
        /// The lease's kind.
        kind: EntityKind,
        /// The config's role.
        role: Role,
        /// What the role takes.
        expected: &'static str,
    },
    /// A peer lease for this node's own key.
    #[error("{}: this is a lease for this node's own key", path.display())]
    OwnLease {
        /// The lease file.
        path: PathBuf,
    },
    /// The node refused the peer.
    #[error("{}: {error}", path.display())]
    Peer {
        /// The lease file.
        path: PathBuf,
        /// Why.
        error: AddPeerError,
    },
}

impl Config {
    /// Reads and checks the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = daemon_kit::config::read(path)?;
        Config::parse(&text, path)
    }

    /// Checks config `text` as if read from `path` (which names the file in
    /// errors and anchors relative paths; it is not read).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = daemon_kit::config::parse_toml(text, path)?;
        Checker { file: path }.check(raw)
    }

    /// The directory relative paths in the config are resolved against.
    pub fn base_dir(path: &Path) -> &Path {
        daemon_kit::config::base_dir(path)
    }

    /// An error about `key` of this config.
    pub fn error(&self, key: impl Into<String>, problem: Problem) -> ConfigError {
        ConfigError::at(&self.path, key, problem)
    }
}

// ------------------------------------------------------------------- raw

/// The file as written. Everything optional so a missing key gets our
/// message (file, key, what) rather than serde's.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    role: Option<Role>,
    listen: Option<SocketAddr>,
    private_key_file: Option<PathBuf>,
    authority_key: Option<String>,
    lease_file: Option<PathBuf>,
    psk_file: Option<PathBuf>,
    addrd: Option<RawAddrd>,
    mode: Option<Mode>,
    tun_name: Option<String>,
    mtu: Option<u64>,
    persistent_keepalive: Option<u64>,
    #[serde(default)]
    peers: Vec<RawPeer>,
    socks_listen: Option<SocketAddr>,
    port_forwards: Option<Vec<RawPortForward>>,
    overlay_zone: Option<String>,
    applications: Option<Vec<RawApplication>>,
    log_level: Option<LogLevel>,
    metrics_listen: Option<SocketAddr>,
    dangerous_esp_keylog: Option<PathBuf>,
    dangerous_allow_private_ipv4: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawAddrd {
    endpoint: Option<SocketAddr>,
    public_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawPeer {
    lease_file: Option<PathBuf>,
    endpoint: Option<SocketAddr>,
    persistent_keepalive: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawPortForward {
    listen: Option<SocketAddr>,
    to: Option<SocketAddr>,
    protocol: Option<ForwardProtocol>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawApplication {
    name: Option<String>,
    address: Option<Ipv6Addr>,
    ports: Option<Vec<u64>>,
    backend: Option<SocketAddr>,
    #[serde(default)]
    allowed_groups: Vec<String>,
}

// ------------------------------------------------------------- checking

struct Checker<'a> {
    file: &'a Path,
}

impl Checker<'_> {
    fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let role = raw
            .role
            .ok_or_else(|| self.error("role", Problem::Missing("\"client\" or \"server\"")))?;
        let private_key_file = self.path(
            "private-key-file",
            raw.private_key_file,
            "path of a base64 X25519 private key file, mode 0600",
        )?;
        let authority_key = self.authority_key(raw.authority_key)?;
        let lease_file = self.path(
            "lease-file",
            raw.lease_file,
            "path of this node's signed lease",
        )?;
        let psk_file = raw.psk_file.map(|p| self.resolve(&p));
        let addrd = raw.addrd.map(|a| self.addrd(a)).transpose()?;
        let mtu = match raw.mtu {
            None => DEFAULT_MTU,
            Some(v) => self.range("mtu", v, MIN_MTU.into(), MAX_MTU.into())? as u16,
        };
        let default_keepalive = match role {
            Role::Client => Some(DEFAULT_CLIENT_KEEPALIVE),
            Role::Server => None,
        };
        let persistent_keepalive = match raw.persistent_keepalive {
            None => default_keepalive,
            Some(v) => self.keepalive("persistent-keepalive", v)?,
        };
        let peers = raw
            .peers
            .into_iter()
            .enumerate()
            .map(|(i, p)| self.peer(i, p, persistent_keepalive))
            .collect::<Result<Vec<_>, _>>()?;
        let mode = raw.mode.unwrap_or(Mode::Userspace);
        let tun_name = match raw.tun_name {
            None => crate::tun::DEFAULT_NAME.to_owned(),
            Some(name) if is_valid_interface_name(&name) => name,
            Some(name) => return Err(self.error("tun-name", Problem::BadInterfaceName(name))),
        };
        if raw.socks_listen.is_some() {
            self.role_only("socks-listen", Role::Client, role)?;
            self.mode_only("socks-listen", Mode::Userspace, mode)?;
        }
        let port_forwards = match raw.port_forwards {
            None => Vec::new(),
            Some(list) => {
                self.role_only("port-forwards", Role::Client, role)?;
                self.mode_only("port-forwards", Mode::Userspace, mode)?;
                self.port_forwards(list)?
            }
        };
        let overlay_zone = match raw.overlay_zone {
            None => OverlayZone::default(),
            Some(zone) => OverlayZone::new(&zone)
                .map_err(|e| self.error("overlay-zone", Problem::BadZone(e)))?,
        };
        let applications = match raw.applications {
            None => Vec::new(),
            Some(list) => {
                self.role_only("applications", Role::Server, role)?;
                self.applications(list, mode)?
            }
        };
        Ok(Config {
            path: self.file.to_owned(),
            role,
            listen: raw.listen.unwrap_or(DEFAULT_LISTEN),
            private_key_file,
            authority_key,
            lease_file,
            psk_file,
            addrd,
            mode,
            tun_name,
            mtu,
            persistent_keepalive,
            peers,
            socks_listen: raw.socks_listen,
            port_forwards,
            overlay_zone,
            applications,
            log_level: raw.log_level.unwrap_or(LogLevel::Info),
            metrics_listen: raw.metrics_listen,
            dangerous_esp_keylog: raw.dangerous_esp_keylog.map(|p| self.resolve(&p)),
            ipv4_policy: Ipv4Policy {
                dangerous_allow_private: raw.dangerous_allow_private_ipv4.unwrap_or(false),
            },
        })
    }

    fn error(&self, key: impl Into<String>, problem: Problem) -> ConfigError {
        ConfigError::at(self.file, key, problem)
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        Config::base_dir(self.file).join(path)
    }

    fn path(
        &self,
        key: &str,
        value: Option<PathBuf>,
        what: &'static str,
    ) -> Result<PathBuf, ConfigError> {
        match value {
            None => Err(self.error(key, Problem::Missing(what))),
            Some(p) if p.as_os_str().is_empty() => Err(self.error(key, Problem::Empty)),
            Some(p) => Ok(self.resolve(&p)),
        }
    }

    fn range(&self, key: &str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(self.error(key, Problem::OutOfRange { value, min, max }))
        }
    }

    /// Seconds; 0 turns keepalives off.
    fn keepalive(&self, key: &str, secs: u64) -> Result<Option<Duration>, ConfigError> {
        let secs = self.range(key, secs, 0, u16::MAX.into())?;
        Ok((secs != 0).then(|| Duration::from_secs(secs)))
    }

    fn role_only(&self, key: &str, allowed: Role, actual: Role) -> Result<(), ConfigError> {
        if allowed == actual {
            Ok(())
        } else {
            Err(self.error(key, Problem::WrongRole { allowed, actual }))
        }
    }

    fn mode_only(&self, key: &str, allowed: Mode, actual: Mode) -> Result<(), ConfigError> {
        if allowed == actual {
            Ok(())
        } else {
            Err(self.error(key, Problem::WrongMode { allowed, actual }))
        }
    }

    fn authority_key(&self, value: Option<String>) -> Result<AuthorityKey, ConfigError> {
        const KEY: &str = "authority-key";
        let text = value.ok_or_else(|| {
            self.error(
                KEY,
                Problem::Missing("the authority's base64 Ed25519 public key"),
            )
        })?;
        let bytes =
            PublicKey::from_str(text.trim()).map_err(|e| self.error(KEY, Problem::BadKey(e)))?;
        AuthorityKey::from_bytes(bytes.as_bytes())
            .map_err(|_| self.error(KEY, Problem::BadAuthorityKey))
    }

    fn addrd(&self, raw: RawAddrd) -> Result<Addrd, ConfigError> {
        let endpoint = raw.endpoint.ok_or_else(|| {
            self.error(
                "addrd.endpoint",
                Problem::Missing("addrd's UDP socket address"),
            )
        })?;
        let key = raw.public_key.ok_or_else(|| {
            self.error(
                "addrd.public-key",
                Problem::Missing("addrd's base64 X25519 public key"),
            )
        })?;
        let public_key = PublicKey::from_str(key.trim())
            .map_err(|e| self.error("addrd.public-key", Problem::BadKey(e)))?;
        Ok(Addrd {
            endpoint,
            public_key,
        })
    }

    fn peer(
        &self,
        i: usize,
        raw: RawPeer,
        node_keepalive: Option<Duration>,
    ) -> Result<Peer, ConfigError> {
        let key = |field: &str| format!("peers[{i}].{field}");
        let lease_file = self.path(
            &key("lease-file"),
            raw.lease_file,
            "path of the peer's signed lease",
        )?;
        let persistent_keepalive = match raw.persistent_keepalive {
            None => node_keepalive,
            Some(v) => self.keepalive(&key("persistent-keepalive"), v)?,
        };
        Ok(Peer {
            lease_file,
            endpoint: raw.endpoint,
            persistent_keepalive,
        })
    }

    fn port_forwards(&self, list: Vec<RawPortForward>) -> Result<Vec<PortForward>, ConfigError> {
        let mut out: Vec<PortForward> = Vec::with_capacity(list.len());
        for (i, raw) in list.into_iter().enumerate() {
            let key = |field: &str| format!("port-forwards[{i}].{field}");
            let listen = raw.listen.ok_or_else(|| {
                self.error(key("listen"), Problem::Missing("local socket address"))
            })?;
            let protocol = raw.protocol.unwrap_or_default();
            // A TCP and a UDP forward may share a local address.
            if out
                .iter()
                .any(|f| f.listen == listen && f.protocol == protocol)
            {
                return Err(self.error(key("listen"), Problem::DuplicateListen(listen)));
            }
            let to = match raw.to {
                None => {
                    return Err(self.error(key("to"), Problem::Missing("overlay \"[ipv6]:port\"")))
                }
                Some(SocketAddr::V6(to)) => to,
                Some(other) => return Err(self.error(key("to"), Problem::NotIpv6(other))),
            };
            if to.port() == 0 {
                return Err(self.error(key("to"), Problem::PortZero));
            }
            out.push(PortForward {
                listen,
                to,
                protocol,
            });
        }
        Ok(out)
    }

    fn applications(
        &self,
        list: Vec<RawApplication>,
        mode: Mode,
    ) -> Result<Vec<Application>, ConfigError> {
        let mut out: Vec<Application> = Vec::with_capacity(list.len());
        for (i, raw) in list.into_iter().enumerate() {
            let key = |field: &str| format!("applications[{i}].{field}");
            let name = raw
                .name
                .ok_or_else(|| self.error(key("name"), Problem::Missing("a short name")))?;
            if !is_valid_name(&name) {
                return Err(self.error(key("name"), Problem::BadName(name)));
            }
            if out.iter().any(|a| a.name == name) {
                return Err(self.error(key("name"), Problem::DuplicateName(name)));
            }
            let address = raw.address.ok_or_else(|| {
                self.error(
                    key("address"),
                    Problem::Missing("the permanent IPv6 address"),
                )
            })?;
            let raw_ports = match (raw.ports, mode) {
                (Some(ports), _) => ports,
                (None, Mode::Tun) => Vec::new(),
                (None, Mode::Userspace) => {
                    return Err(
                        self.error(key("ports"), Problem::Missing("a list of TCP/UDP ports"))
                    )
                }
            };
            if raw_ports.is_empty() && mode == Mode::Userspace {
                return Err(self.error(key("ports"), Problem::Empty));
            }
            let mut ports: Vec<u16> = Vec::with_capacity(raw_ports.len());
            for (j, port) in raw_ports.into_iter().enumerate() {
                let port_key = format!("applications[{i}].ports[{j}]");
                let port = self.range(&port_key, port, 1, u16::MAX.into())? as u16;
                let taken_by = out
                    .iter()
                    .find(|a| a.address == address && a.ports.contains(&port))
                    .map(|a| a.name.clone())
                    .or_else(|| ports.contains(&port).then(|| name.clone()));
                if let Some(other) = taken_by {
                    return Err(self.error(
                        port_key,
                        Problem::DuplicatePort {
                            address,
                            port,
                            other,
                        },
                    ));
                }
                ports.push(port);
            }
            let backend = match (raw.backend, mode) {
                (Some(backend), _) if backend.port() == 0 => {
                    return Err(self.error(key("backend"), Problem::PortZero))
                }
                (Some(backend), _) => Some(backend),
                (None, Mode::Tun) => None,
                (None, Mode::Userspace) => {
                    return Err(self.error(
                        key("backend"),
                        Problem::Missing("the local backend's socket address"),
                    ))
                }
            };
            if let Some(j) = raw.allowed_groups.iter().position(|g| g.is_empty()) {
                return Err(self.error(
                    format!("applications[{i}].allowed-groups[{j}]"),
                    Problem::Empty,
                ));
            }
            out.push(Application {
                name,
                address,
                ports,
                backend,
                allowed_groups: raw.allowed_groups,
            });
        }
        Ok(out)
    }
}

/// Application names follow lease names: `[a-z0-9._-]`, 1 to 63
/// characters, not starting with `-` or `.`.
fn is_valid_name(name: &str) -> bool {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    ok_chars && (1..=63).contains(&name.len()) && !name.starts_with(['-', '.'])
}

/// What Linux's `dev_valid_name` accepts: 1 to 15 bytes, no `/`, `:` or
/// whitespace, not `.` or `..`.
fn is_valid_interface_name(name: &str) -> bool {
    (1..=crate::tun::MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTHORITY: &str = "GpAIETEtVL5Jb7luU0Eunbry/aAYHZaFiXGWJa8/i5o=";

    fn base_client() -> String {
        format!(
            "role = \"client\"\nprivate-key-file = \"key\"\nauthority-key = \"{AUTHORITY}\"\nlease-file = \"lease.bin\"\n"
        )
    }

    fn base_server() -> String {
        base_client().replace("\"client\"", "\"server\"")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/permanet/tunneld.toml"))
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse(&base_client()).unwrap();
        assert_eq!(c.role, Role::Client);
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.mtu, DEFAULT_MTU);
        assert_eq!(c.mode, Mode::Userspace);
        assert_eq!(c.tun_name, "permanet0");
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.persistent_keepalive, Some(DEFAULT_CLIENT_KEEPALIVE));
        assert_eq!(c.private_key_file, Path::new("/etc/permanet/key"));
        assert_eq!(c.lease_file, Path::new("/etc/permanet/lease.bin"));
        assert!(!c.ipv4_policy.dangerous_allow_private);
        assert_eq!(c.metrics_listen, None);

        let s = parse(&base_server()).unwrap();
        assert_eq!(s.persistent_keepalive, None);

        let abs = parse(&base_client().replace("\"key\"", "\"/srv/k\"")).unwrap();
        assert_eq!(abs.private_key_file, Path::new("/srv/k"));

        let bare = Config::parse(&base_client(), Path::new("tunneld.toml")).unwrap();
        assert_eq!(bare.lease_file, Path::new("./lease.bin"));
    }

    #[test]
    fn full_server_parses() {
        let text = base_server()
            + r#"
listen = "[::]:4501"
mode = "tun"
mtu = 1280
persistent-keepalive = 0
log-level = "debug"
metrics-listen = "127.0.0.1:9100"
dangerous-allow-private-ipv4 = true
dangerous-esp-keylog = "keys.log"
psk-file = "psk"
[addrd]
endpoint = "192.0.2.1:4500"
public-key = "hBD7X6nORCrAx/YUDo/PqFAa0kPUTjmPmcsEFsqkCmo="
[[peers]]
lease-file = "peer.bin"
endpoint = "192.0.2.7:4500"
[[applications]]
name = "wiki"
address = "2002:c000:201:1::10"
ports = [80, 443]
backend = "127.0.0.1:8080"
allowed-groups = ["staff"]
[[applications]]
name = "ssh"
address = "2002:c000:201:1::10"
ports = [22]
backend = "127.0.0.1:22"
"#;
        let c = parse(&text).unwrap();
        assert_eq!(c.listen, "[::]:4501".parse().unwrap());
        assert_eq!(c.mode, Mode::Tun);
        assert_eq!(c.tun_name, crate::tun::DEFAULT_NAME);
        assert_eq!(c.mtu, 1280);
        assert_eq!(c.persistent_keepalive, None);
        assert_eq!(c.peers[0].persistent_keepalive, None);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert!(c.ipv4_policy.dangerous_allow_private);
        assert_eq!(
            c.dangerous_esp_keylog.as_deref(),
            Some(Path::new("/etc/permanet/keys.log"))
        );
        assert_eq!(c.psk_file.as_deref(), Some(Path::new("/etc/permanet/psk")));
        assert_eq!(
            c.addrd.unwrap().public_key.to_string(),
            "hBD7X6nORCrAx/YUDo/PqFAa0kPUTjmPmcsEFsqkCmo="
        );
        assert_eq!(c.applications.len(), 2);
        assert_eq!(c.applications[0].ports, [80, 443]);
        assert_eq!(c.applications[0].allowed_groups, ["staff"]);
        assert!(c.applications[1].allowed_groups.is_empty());
    }

    #[test]
    fn client_keys_parse() {
        let text = base_client()
            + r#"
persistent-keepalive = 10
socks-listen = "127.0.0.1:1080"
[[peers]]
lease-file = "a.bin"
[[peers]]
lease-file = "b.bin"
persistent-keepalive = 0
[[port-forwards]]
listen = "127.0.0.1:2222"
to = "[2002:c000:201:1::10]:22"
[[port-forwards]]
listen = "127.0.0.1:2222"
to = "[2002:c000:201:1::10]:9200"
protocol = "udp"
"#;
        let c = parse(&text).unwrap();
        assert_eq!(c.port_forwards[0].protocol, ForwardProtocol::Tcp);
        assert_eq!(c.port_forwards[1].protocol, ForwardProtocol::Udp);
        assert!(parse(&(text.clone() + "[[port-forwards]]\nlisten = \"127.0.0.1:1\"\nto = \"[::1]:1\"\nprotocol = \"sctp\"\n")).is_err());
        assert_eq!(c.persistent_keepalive, Some(Duration::from_secs(10)));
        assert_eq!(
            c.peers[0].persistent_keepalive,
            Some(Duration::from_secs(10))
        );
        assert_eq!(c.peers[1].persistent_keepalive, None);
        assert_eq!(c.socks_listen, Some("127.0.0.1:1080".parse().unwrap()));
        assert_eq!(c.port_forwards[0].to.port(), 22);
        assert_eq!(c.overlay_zone.as_str(), "permanet.internal");
        let c = parse(&(base_client() + "overlay-zone = \"Corp.Example.\"\n")).unwrap();
        assert_eq!(c.overlay_zone.as_str(), "corp.example");
    }

    /// Each refused value: the key named in the error, and a fragment of
    /// what is wrong. The message always starts with the file.
    #[test]
    fn key_errors_name_file_key_and_problem() {
        let client = base_client();
        let server = base_server();
        let cases: Vec<(String, &str, &str)> = vec![
            (client.replace("role = \"client\"\n", ""), "role", "missing"),
            (
                client.replace("private-key-file = \"key\"\n", ""),
                "private-key-file",
                "missing",
            ),
            (
                client.replace("lease-file = \"lease.bin\"\n", ""),
                "lease-file",
                "missing",
            ),
            (
                client.replace(AUTHORITY, "short"),
                "authority-key",
                "44 characters",
            ),
            (client.clone() + "mtu = 9000\n", "mtu", "9000 is out of range 1280..=1500"),
            (client.clone() + "mtu = 1279\n", "mtu", "out of range"),
            (
                client.clone() + "overlay-zone = \"corp..example\"\n",
                "overlay-zone",
                "\"corp..example\" is not a DNS zone",
            ),
            (
                client.clone() + "persistent-keepalive = 70000\n",
                "persistent-keepalive",
                "out of range",
            ),
            (
                server.clone() + "socks-listen = \"127.0.0.1:1080\"\n",
                "socks-listen",
                "only valid with role = \"client\" (this config has role = \"server\")",
            ),
            (
                server.clone() + "[[port-forwards]]\nlisten = \"127.0.0.1:1\"\nto = \"[::1]:1\"\n",
                "port-forwards",
                "only valid with role = \"client\"",
            ),
            (
                client.clone()
                    + "[[applications]]\nname = \"a\"\naddress = \"::1\"\nports = [1]\nbackend = \"127.0.0.1:1\"\n",
                "applications",
                "only valid with role = \"server\"",
            ),
            (
                client.clone() + "[[port-forwards]]\nlisten = \"127.0.0.1:1\"\nto = \"10.0.0.1:22\"\n",
                "port-forwards[0].to",
                "not an overlay address",
            ),
            (
                client.clone()
                    + "[[port-forwards]]\nlisten = \"127.0.0.1:1\"\nto = \"[::1]:2\"\n[[port-forwards]]\nlisten = \"127.0.0.1:1\"\nto = \"[::1]:3\"\n",
                "port-forwards[1].listen",
                "already used",
            ),
            (
                client.clone() + "mode = \"tun\"\nsocks-listen = \"127.0.0.1:1080\"\n",
                "socks-listen",
                "only valid with mode = \"userspace\" (this config has mode = \"tun\")",
            ),
            (
                client.clone()
                    + "mode = \"tun\"\n[[port-forwards]]\nlisten = \"127.0.0.1:1\"\nto = \"[::1]:1\"\n",
                "port-forwards",
                "only valid with mode = \"userspace\"",
            ),
            (
                client.clone() + "tun-name = \"a-name-too-long0\"\n",
                "tun-name",
                "not a valid interface name",
            ),
            (
                client.clone() + "tun-name = \"perma/net\"\n",
                "tun-name",
                "not a valid interface name",
            ),
            (
                client.clone() + "[[peers]]\nendpoint = \"192.0.2.1:4500\"\n",
                "peers[0].lease-file",
                "missing",
            ),
            (
                client.clone() + "[addrd]\nendpoint = \"192.0.2.1:4500\"\n",
                "addrd.public-key",
                "missing",
            ),
            (
                server.clone() + "[[applications]]\nname = \"Wiki\"\naddress = \"::1\"\nports = [1]\nbackend = \"127.0.0.1:1\"\n",
                "applications[0].name",
                "not a valid name",
            ),
            (
                server.clone()
                    + "[[applications]]\nname = \"a\"\naddress = \"::1\"\nports = [1]\nbackend = \"127.0.0.1:1\"\n[[applications]]\nname = \"a\"\naddress = \"::2\"\nports = [1]\nbackend = \"127.0.0.1:1\"\n",
                "applications[1].name",
                "already used",
            ),
            (
                server.clone()
                    + "[[applications]]\nname = \"a\"\naddress = \"::1\"\nports = [1]\nbackend = \"127.0.0.1:1\"\n[[applications]]\nname = \"b\"\naddress = \"::1\"\nports = [2, 1]\nbackend = \"127.0.0.1:1\"\n",
                "applications[1].ports[1]",
                "[::1]:1 is already served by application \"a\"",
            ),
            (
                server.clone() + "[[applications]]\nname = \"a\"\naddress = \"::1\"\nports = []\nbackend = \"127.0.0.1:1\"\n",
                "applications[0].ports",
                "must not be empty",
            ),
            (
                server.clone() + "[[applications]]\nname = \"a\"\naddress = \"::1\"\nports = [70000]\nbackend = \"127.0.0.1:1\"\n",
                "applications[0].ports[0]",
                "out of range 1..=65535",
            ),
            (
                server.clone() + "[[applications]]\nname = \"a\"\naddress = \"::1\"\nports = [1]\n",
                "applications[0].backend",
                "missing",
            ),
            (
                server.clone() + "[[applications]]\nname = \"a\"\naddress = \"::1\"\nports = [1]\nbackend = \"127.0.0.1:1\"\nallowed-groups = [\"\"]\n",
                "applications[0].allowed-groups[0]",
                "must not be empty",
            ),
        ];
        for (text, key, fragment) in cases {
            let err = parse(&text).expect_err(key);
            assert_eq!(err.key(), Some(key), "{err}");
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("/etc/permanet/tunneld.toml: {key}: ")),
                "{msg}"
            );
            assert!(msg.contains(fragment), "{key}: {msg}");
        }
    }

    #[test]
    fn tun_mode_applications_need_no_backend_or_ports() {
        let text = base_server()
            + "mode = \"tun\"\ntun-name = \"pn0\"\n[[applications]]\nname = \"wiki\"\naddress = \"::10\"\nallowed-groups = [\"staff\"]\n";
        let c = parse(&text).unwrap();
        assert_eq!(c.tun_name, "pn0");
        assert_eq!(c.applications[0].backend, None);
        assert!(c.applications[0].ports.is_empty());
        // The same in userspace mode is missing its ports, then its backend.
        let err = parse(&text.replace("\"tun\"", "\"userspace\"")).unwrap_err();
        assert_eq!(err.key(), Some("applications[0].ports"), "{err}");
        let err = parse(
            &text
                .replace("\"tun\"", "\"userspace\"")
                .replace("allowed-groups", "ports = [80]\nallowed-groups"),
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("applications[0].backend"), "{err}");
    }

    #[test]
    fn syntax_errors_keep_line_and_column() {
        let cases = [
            (base_client() + "bogus-key = 1\n", "bogus-key"),
            (base_client() + "mtu = \"big\"\n", "mtu"),
            (base_client() + "listen = \"nowhere\"\n", "listen"),
            (base_client() + "mode = \"kernel\"\n", "kernel"),
            (
                base_client() + "[[peers]]\nlease-file = \"p\"\ncolour = 1\n",
                "colour",
            ),
            (base_client() + "role = = 1\n", "role"),
        ];
        for (text, fragment) in cases {
            let err = parse(&text).unwrap_err();
            assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.starts_with("/etc/permanet/tunneld.toml: "), "{msg}");
            assert!(msg.contains("line "), "{msg}");
            assert!(msg.contains("column "), "{msg}");
            assert!(msg.contains(fragment), "{msg}");
        }
    }

    #[test]
    fn a_weak_authority_key_is_refused() {
        // The identity point (y = 1) is a small-order, weak Ed25519 key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let text = base_client().replace(AUTHORITY, &PublicKey(identity).to_string());
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key(), Some("authority-key"));
        assert!(
            matches!(err.problem(), Some(Problem::BadAuthorityKey)),
            "{err}"
        );
    }

    #[test]
    fn names() {
        for ok in ["wiki", "a", "my-app_2.v1"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "Wiki", "-a", ".a", "a b", &"a".repeat(64)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
