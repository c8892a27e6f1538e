//! addrd's configuration file: kebab-case TOML, parsed and checked.
//!
//! [`Config::load`] (or [`Config::parse`]) reads the TOML, applies the
//! defaults, resolves relative paths against the config file's directory
//! and checks everything that needs no other file. The secret files it
//! names (authority seed, channel key, allocation key, LDAP service
//! password) are read later, by [`crate::keys`] and the LDAP backend, each
//! refused unless it is a regular file of mode 0600 or stricter.
//!
//! Every error names the config file, the key as a dotted path
//! (`directory.bind-dn`) and what is wrong; TOML syntax and type errors keep
//! the line and column the `toml` crate reports. The reference config is
//! `configs/addrd.toml`, which says which keys SIGHUP reloads.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use overlay_proto::addr::{AddrError, AddressPlan, Ipv4Policy, OverlayPrefix};
use overlay_proto::handshake::KeyParseError;
use serde::Deserialize;

use crate::dns::{BadZone, OverlayZone};
use crate::ldap::LdapConfig;

/// The login channel's UDP port unless configured.
pub const DEFAULT_PORT: u16 = 4500;

/// Where the login channel listens unless configured.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 4500);

/// Default control socket of the running daemon.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/permanet/addrd.sock";

/// Lease lifetime unless configured (DESIGN §6: one hour).
pub const DEFAULT_LEASE_LIFETIME: Duration = Duration::from_secs(3600);

/// Longest a session is renewed without the password unless configured.
pub const DEFAULT_MAX_SESSION_AGE: Duration = Duration::from_secs(12 * 3600);

/// Shortest lease lifetime accepted (renewal happens before expiry; below
/// a minute the clients would do little else).
pub const MIN_LEASE_LIFETIME: Duration = Duration::from_secs(60);

/// Longest lease lifetime accepted: a revoked or disabled user keeps a
/// lease at most this long.
pub const MAX_LEASE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest session age accepted.
pub const MAX_SESSION_AGE_LIMIT: Duration = Duration::from_secs(90 * 24 * 3600);

/// Bound on LDAP operations unless configured.
pub const DEFAULT_LDAP_TIMEOUT: Duration = Duration::from_secs(5);

pub use daemon_kit::logging::LogLevel;

/// The validated configuration. Paths are absolute or relative to the
/// working directory (already resolved against the config's directory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// `log-level`.
    pub log_level: LogLevel,
    /// `listen`: the login channel's UDP socket.
    pub listen: SocketAddr,
    /// `control-socket`: the running daemon's Unix control socket.
    pub control_socket: PathBuf,
    /// `static-key-file`: the channel's X25519 private key (base64, 0600).
    pub static_key_file: PathBuf,
    /// `authority-key-file`: the Ed25519 lease-signing seed (base64, 0600).
    pub authority_key_file: PathBuf,
    /// `allocation-key-file`: the allocator's hash key (base64, 0600).
    pub allocation_key_file: PathBuf,
    /// `state-file`: the redb file of the lease book, revocations and the
    /// serial high-water mark.
    pub state_file: PathBuf,
    /// `audit-log`: where audit lines go, if anywhere.
    pub audit_log: Option<PathBuf>,
    /// `lease-lifetime`.
    pub lease_lifetime: Duration,
    /// `max-session-age`.
    pub max_session_age: Duration,
    /// `dangerous-allow-private-ipv4`.
    pub ipv4_policy: Ipv4Policy,
    /// `[address-plan]`.
    pub plan: AddressPlan,
    /// `[dns]`.
    pub dns: Dns,
    /// `[directory]`.
    pub directory: DirectoryConfig,
    /// `[login]`: lockouts of the login channel.
    pub login: LoginLimits,
}

/// `[login]`: how repeated refusals lock a user out of password logins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// `lockout-threshold`: consecutive refusals that lock a user out
    /// (default 10; 0: never).
    pub lockout_threshold: u32,
    /// `lockout-period`: the first lockout's length (default 900 s, 1 s to
    /// 24 h); each further one in a row is twice as long, at most 24 h.
    pub lockout_period: Duration,
}

/// `[dns]`: the overlay zone and where it is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    /// `dns.zone`.
    pub zone: OverlayZone,
    /// `dns.listen`: UDP+TCP addresses (empty: no DNS served).
    pub listen: Vec<SocketAddr>,
    /// `dns.ttl`, seconds.
    pub ttl: u32,
}

/// `[directory]`: which backend and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryConfig {
    /// `backend = "embedded"`.
    Embedded {
        /// `directory.ldif-file`.
        ldif_file: PathBuf,
        /// `directory.store-file`: the redb address store.
        store_file: PathBuf,
    },
    /// `backend = "ldap"`.
    Ldap(LdapConfig),
}

impl DirectoryConfig {
    /// The config spelling of the backend.
    pub fn backend(&self) -> &'static str {
        match self {
            DirectoryConfig::Embedded { .. } => "embedded",
            DirectoryConfig::Ldap(_) => "ldap",
        }
    }
}

/// A config file could not be used: `FILE: KEY: PROBLEM` (see
/// [`daemon_kit::config`]), with this daemon's [`Problem`]s.
pub type ConfigError = daemon_kit::config::ConfigError<Problem>;

/// What is wrong with a key's value (or a file it names).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A required key is absent.
    #[error("missing (required: {0})")]
    Missing(&'static str),
    /// A key that belongs to the other backend.
    #[error("only valid with backend = \"{0}\"")]
    WrongBackend(&'static str),
    /// Two keys that exclude each other.
    #[error("cannot be used together with {0}")]
    Conflicts(&'static str),
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
    /// An empty string where content is needed.
    #[error("must not be empty")]
    Empty,
    /// The address plan refuses the value.
    #[error("{0}")]
    Plan(AddrError),
    /// A `dns.zone` that is not a DNS name.
    #[error("{0}")]
    BadZone(BadZone),
    /// An LDAP URL that is not `ldap://` or `ldaps://`.
    #[error("{0:?}: expected ldap://host[:port] or ldaps://host[:port]")]
    BadUrl(String),
    /// A session age shorter than a lease.
    #[error("{age} s is shorter than lease-lifetime ({lifetime} s)")]
    SessionShorterThanLease {
        /// `max-session-age`.
        age: u64,
        /// `lease-lifetime`.
        lifetime: u64,
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
    log_level: Option<LogLevel>,
    listen: Option<SocketAddr>,
    control_socket: Option<PathBuf>,
    static_key_file: Option<PathBuf>,
    authority_key_file: Option<PathBuf>,
    allocation_key_file: Option<PathBuf>,
    state_file: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    lease_lifetime: Option<u64>,
    max_session_age: Option<u64>,
    dangerous_allow_private_ipv4: Option<bool>,
    address_plan: Option<RawPlan>,
    dns: Option<RawDns>,
    directory: Option<RawDirectory>,
    login: Option<RawLogin>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawLogin {
    lockout_threshold: Option<u32>,
    lockout_period: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawPlan {
    overlay_prefix: Option<String>,
    home_ipv4: Option<Ipv4Addr>,
    user_subnet_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawDns {
    zone: Option<String>,
    listen: Option<Vec<SocketAddr>>,
    ttl: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawDirectory {
    backend: Option<Backend>,
    ldif_file: Option<PathBuf>,
    store_file: Option<PathBuf>,
    url: Option<String>,
    starttls: Option<bool>,
    ca_file: Option<PathBuf>,
    bind_dn: Option<String>,
    bind_password_file: Option<PathBuf>,
    base_dn: Option<String>,
    timeout: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Backend {
    Embedded,
    Ldap,
}

// ------------------------------------------------------------- checking

struct Checker<'a> {
    file: &'a Path,
}

impl Checker<'_> {
    fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let ipv4_policy = Ipv4Policy {
            dangerous_allow_private: raw.dangerous_allow_private_ipv4.unwrap_or(false),
        };
        let lease_lifetime = self.seconds(
            "lease-lifetime",
            raw.lease_lifetime,
            DEFAULT_LEASE_LIFETIME,
            MIN_LEASE_LIFETIME,
            MAX_LEASE_LIFETIME,
        )?;
        let max_session_age = self.seconds(
            "max-session-age",
            raw.max_session_age,
            DEFAULT_MAX_SESSION_AGE,
            MIN_LEASE_LIFETIME,
            MAX_SESSION_AGE_LIMIT,
        )?;
        if max_session_age < lease_lifetime {
            return Err(self.error(
                "max-session-age",
                Problem::SessionShorterThanLease {
                    age: max_session_age.as_secs(),
                    lifetime: lease_lifetime.as_secs(),
                },
            ));
        }
        let plan = self.plan(raw.address_plan, ipv4_policy)?;
        let dns = self.dns(raw.dns)?;
        let directory = self.directory(raw.directory)?;
        let raw_login = raw.login.unwrap_or(RawLogin {
            lockout_threshold: None,
            lockout_period: None,
        });
        let login = LoginLimits {
            lockout_threshold: raw_login.lockout_threshold.unwrap_or(10),
            lockout_period: self.seconds(
                "login.lockout-period",
                raw_login.lockout_period,
                Duration::from_secs(900),
                Duration::from_secs(1),
                Duration::from_secs(24 * 3600),
            )?,
        };
        Ok(Config {
            login,
            path: self.file.to_owned(),
            log_level: raw.log_level.unwrap_or(LogLevel::Info),
            listen: raw.listen.unwrap_or(DEFAULT_LISTEN),
            control_socket: raw
                .control_socket
                .map(|p| self.resolve(p))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET)),
            static_key_file: self.required_path(
                "static-key-file",
                raw.static_key_file,
                "the login channel's X25519 private key file",
            )?,
            authority_key_file: self.required_path(
                "authority-key-file",
                raw.authority_key_file,
                "the lease authority's Ed25519 seed file",
            )?,
            allocation_key_file: self.required_path(
                "allocation-key-file",
                raw.allocation_key_file,
                "the address allocation key file",
            )?,
            state_file: self.required_path(
                "state-file",
                raw.state_file,
                "where addrd keeps its lease book and revocations",
            )?,
            audit_log: raw.audit_log.map(|p| self.resolve(p)),
            lease_lifetime,
            max_session_age,
            ipv4_policy,
            plan,
            dns,
            directory,
        })
    }

    fn error(&self, key: impl Into<String>, problem: Problem) -> ConfigError {
        ConfigError::at(self.file, key, problem)
    }

    fn resolve(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            path
        } else {
            Config::base_dir(self.file).join(path)
        }
    }

    fn required_path(
        &self,
        key: &str,
        value: Option<PathBuf>,
        what: &'static str,
    ) -> Result<PathBuf, ConfigError> {
        let path = value.ok_or_else(|| self.error(key, Problem::Missing(what)))?;
        if path.as_os_str().is_empty() {
            return Err(self.error(key, Problem::Empty));
        }
        Ok(self.resolve(path))
    }

    fn seconds(
        &self,
        key: &str,
        value: Option<u64>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        if value < min.as_secs() || value > max.as_secs() {
            return Err(self.error(
                key,
                Problem::OutOfRange {
                    value,
                    min: min.as_secs(),
                    max: max.as_secs(),
                },
            ));
        }
        Ok(Duration::from_secs(value))
    }

    fn plan(&self, raw: Option<RawPlan>, policy: Ipv4Policy) -> Result<AddressPlan, ConfigError> {
        let raw = raw.ok_or_else(|| {
            self.error(
                "address-plan",
                Problem::Missing("a table with overlay-prefix or home-ipv4"),
            )
        })?;
        let overlay = match (raw.overlay_prefix, raw.home_ipv4) {
            (Some(_), Some(_)) => {
                return Err(self.error(
                    "address-plan.home-ipv4",
                    Problem::Conflicts("address-plan.overlay-prefix"),
                ))
            }
            (None, None) => {
                return Err(self.error(
                    "address-plan.overlay-prefix",
                    Problem::Missing(
                        "a ULA /48 (fdXX:XXXX:XXXX::/48), or home-ipv4 for its 6to4 /48",
                    ),
                ))
            }
            (Some(text), None) => OverlayPrefix::parse_with_policy(&text, policy)
                .map_err(|e| self.error("address-plan.overlay-prefix", Problem::Plan(e)))?,
            (None, Some(ipv4)) => OverlayPrefix::six_to_four(ipv4, policy)
                .map_err(|e| self.error("address-plan.home-ipv4", Problem::Plan(e)))?,
        };
        let subnet = match raw.user_subnet_id {
            None => overlay_proto::addr::DEFAULT_USER_SUBNET_ID,
            Some(id) => u16::try_from(id).map_err(|_| {
                self.error(
                    "address-plan.user-subnet-id",
                    Problem::OutOfRange {
                        value: id,
                        min: 1,
                        max: u64::from(u16::MAX),
                    },
                )
            })?,
        };
        AddressPlan::new(overlay, subnet)
            .map_err(|e| self.error("address-plan.user-subnet-id", Problem::Plan(e)))
    }

    fn dns(&self, raw: Option<RawDns>) -> Result<Dns, ConfigError> {
        let raw = raw.unwrap_or(RawDns {
            zone: None,
            listen: None,
            ttl: None,
        });
        let zone = match raw.zone {
            None => OverlayZone::default(),
            Some(text) => {
                OverlayZone::new(&text).map_err(|e| self.error("dns.zone", Problem::BadZone(e)))?
            }
        };
        let ttl = match raw.ttl {
            None => crate::dns::DEFAULT_TTL,
            Some(ttl) if (1..=86_400).contains(&ttl) => ttl as u32,
            Some(value) => {
                return Err(self.error(
                    "dns.ttl",
                    Problem::OutOfRange {
                        value,
                        min: 1,
                        max: 86_400,
                    },
                ))
            }
        };
        Ok(Dns {
            zone,
            listen: raw.listen.unwrap_or_default(),
            ttl,
        })
    }

    fn directory(&self, raw: Option<RawDirectory>) -> Result<DirectoryConfig, ConfigError> {
        let raw = raw.ok_or_else(|| {
            self.error(
                "directory",
                Problem::Missing("a table with backend = \"embedded\" or \"ldap\""),
            )
        })?;
        match raw.backend.unwrap_or(Backend::Embedded) {
            Backend::Embedded => {
                let ldap_keys = [
                    ("directory.url", raw.url.is_some()),
                    ("directory.starttls", raw.starttls.is_some()),
                    ("directory.ca-file", raw.ca_file.is_some()),
                    ("directory.bind-dn", raw.bind_dn.is_some()),
                    (
                        "directory.bind-password-file",
                        raw.bind_password_file.is_some(),
                    ),
                    ("directory.base-dn", raw.base_dn.is_some()),
                    ("directory.timeout", raw.timeout.is_some()),
                ];
                if let Some((key, _)) = ldap_keys.iter().find(|(_, set)| *set) {
                    return Err(self.error(*key, Problem::WrongBackend("ldap")));
                }
                Ok(DirectoryConfig::Embedded {
                    ldif_file: self.required_path(
                        "directory.ldif-file",
                        raw.ldif_file,
                        "the organisation's LDIF file",
                    )?,
                    store_file: self.required_path(
                        "directory.store-file",
                        raw.store_file,
                        "the redb address store",
                    )?,
                })
            }
            Backend::Ldap => {
                if raw.ldif_file.is_some() {
                    return Err(
                        self.error("directory.ldif-file", Problem::WrongBackend("embedded"))
                    );
                }
                if raw.store_file.is_some() {
                    return Err(
                        self.error("directory.store-file", Problem::WrongBackend("embedded"))
                    );
                }
                let url = self.text(
                    "directory.url",
                    raw.url,
                    "ldap://host[:port] or ldaps://host[:port]",
                )?;
                let lower = url.to_ascii_lowercase();
                let rest = lower
                    .strip_prefix("ldap://")
                    .or_else(|| lower.strip_prefix("ldaps://"));
                if rest.is_none_or(|r| r.trim_end_matches('/').is_empty()) {
                    return Err(self.error("directory.url", Problem::BadUrl(url)));
                }
                let starttls = raw.starttls.unwrap_or(false);
                if starttls && lower.starts_with("ldaps://") {
                    return Err(self.error(
                        "directory.starttls",
                        Problem::Conflicts("an ldaps:// url (already TLS)"),
                    ));
                }
                let base_dn = self.text(
                    "directory.base-dn",
                    raw.base_dn,
                    "the organisation's base DN",
                )?;
                let bind_dn =
                    self.text("directory.bind-dn", raw.bind_dn, "the service account's DN")?;
                let password = self.required_path(
                    "directory.bind-password-file",
                    raw.bind_password_file,
                    "the service account's password file (mode 0600)",
                )?;
                let mut ldap = LdapConfig::new(url, base_dn, bind_dn, password);
                ldap.starttls = starttls;
                ldap.ca_file = raw.ca_file.map(|p| self.resolve(p));
                ldap.timeout = self.seconds(
                    "directory.timeout",
                    raw.timeout,
                    DEFAULT_LDAP_TIMEOUT,
                    Duration::from_secs(1),
                    Duration::from_secs(300),
                )?;
                Ok(DirectoryConfig::Ldap(ldap))
            }
        }
    }

    fn text(
        &self,
        key: &str,
        value: Option<String>,
        what: &'static str,
    ) -> Result<String, ConfigError> {
        let text = value.ok_or_else(|| self.error(key, Problem::Missing(what)))?;
        if text.trim().is_empty() {
            return Err(self.error(key, Problem::Empty));
        }
        Ok(text.trim().to_owned())
    }
}

#[cfg(test)]
mod tests;
