//! wap-adapter's configuration file: kebab-case TOML, parsed and checked.
//!
//! [`Config::load`] (or [`Config::parse`]) reads the TOML, applies the
//! defaults, resolves relative paths against the config file's directory and
//! checks every value. Every error names the config file, the key as a
//! dotted path (`applications[0].backend.url`) and what is wrong; TOML syntax
//! and type errors keep the line and column the `toml` crate reports. The
//! reference config is `configs/wap-adapter.toml`, which says which keys
//! SIGHUP reloads ([`Config::reloadable_change`] decides).
//!
//! Each application is served in one of two ways, matching tunneld's modes
//! (DESIGN §10):
//! - TUN mode ([`Listeners::Direct`]): the permanent address is on the host;
//!   wap-adapter binds HTTP (`[address]:80`), WSP connectionless
//!   (`[address]:9200`) and WTP (`[address]:9201`) itself and the socket peer
//!   is the overlay source.
//! - Userspace mode ([`Listeners::Proxied`]): tunneld forwards every TCP and
//!   UDP flow of the application to one local backend address, each flow
//!   (TCP) or datagram (UDP) prefixed with a PROXY protocol v2 header naming
//!   the overlay source and destination. wap-adapter listens there on TCP
//!   (HTTP) and UDP (WAP; the header's destination port, 9200 or 9201, says
//!   which WAP layer the datagram is for).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

/// Default control socket of the local tunneld (tunneld's own default).
pub const DEFAULT_TUNNELD_SOCKET: &str = "/run/permanet/tunneld.sock";

/// HTTP port on the permanent address (TUN mode).
pub const HTTP_PORT: u16 = 80;

/// WSP connectionless port (WAP-230-WSP, WAP-259-WDP).
pub const WSP_CONNECTIONLESS_PORT: u16 = 9200;

/// WSP over WTP (connection-oriented) port.
pub const WTP_PORT: u16 = 9201;

/// Default SDU size offered to WAP clients (bytes).
pub const DEFAULT_SDU_SIZE: u32 = 1400;

/// Longest accepted application name.
const MAX_NAME: usize = 63;

pub use daemon_kit::logging::LogLevel;

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file this was read from.
    pub path: PathBuf,
    /// `log-level`.
    pub log_level: LogLevel,
    /// `[identity]`.
    pub identity: IdentityConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[[applications]]`, in file order.
    pub applications: Vec<Application>,
}

/// Where request sources are resolved to users (`[identity]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `tunneld-socket`: the local tunneld's control socket, asked `peer
    /// <address>` for the verified lease that holds a source address.
    pub tunneld_socket: PathBuf,
    /// `timeout`: how long one question to tunneld may take.
    pub timeout: Duration,
}

/// Bounds on requests and backends (`[limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `max-header-bytes`: a request head (HTTP) larger than this is
    /// refused; also the bound on a CGI response's header block.
    pub max_header_bytes: usize,
    /// `max-body-bytes`: request and response bodies larger than this are
    /// refused (413 / 502).
    pub max_body_bytes: usize,
    /// `header-timeout`: time a client has to send a request head, and
    /// tunneld's PROXY header on a proxied listener.
    pub header_timeout: Duration,
    /// `connect-timeout`: time to connect to a reverse-proxy backend.
    pub connect_timeout: Duration,
    /// `backend-timeout`: time a backend (HTTP or CGI) has to answer in
    /// full; past it the request gets 504 (a CGI program is killed).
    pub backend_timeout: Duration,
    /// `max-connections`: HTTP connections served at once per application
    /// (and so CGI programs running at once); more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            backend_timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// One application (`[[applications]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    /// `name`: unique, `[a-z0-9._-]`, at most 63 characters.
    pub name: String,
    /// `address`: the application's permanent overlay address.
    pub address: Ipv6Addr,
    /// Where it listens (see the module docs).
    pub listeners: Listeners,
    /// `backend`.
    pub backend: Backend,
    /// `allowed-groups`: lease groups let in (any one suffices); empty =
    /// anyone with a valid lease.
    pub allowed_groups: Vec<String>,
    /// `[applications.conversions]`.
    pub conversions: Conversions,
    /// `sdu-size`: largest WTP SDU offered to clients, and the compiled size
    /// a converted card must fit in.
    pub sdu_size: u32,
}

/// An application's listening sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listeners {
    /// TUN mode: the overlay source is the socket peer.
    Direct {
        /// `http-listen`, default `[address]:80`.
        http: SocketAddr,
        /// `wsp-listen`, default `[address]:9200`.
        wsp: SocketAddr,
        /// `wtp-listen`, default `[address]:9201`.
        wtp: SocketAddr,
    },
    /// Userspace mode (`proxy-protocol-listen`, tunneld's `backend` for this
    /// application): TCP (HTTP) and UDP (WAP) on one loopback address, every
    /// connection and datagram starting with a PROXY protocol v2 header.
    Proxied {
        /// The TCP and UDP address.
        listen: SocketAddr,
    },
}

/// What requests are handed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `url`: a reverse proxy to an `http://` URL; the request path is
    /// appended to the URL's path.
    Http {
        /// The URL as written.
        url: Uri,
    },
    /// `cgi`: a CGI program (RFC 3875) run per request.
    Cgi {
        /// The program.
        program: PathBuf,
        /// `working-dir`, default the program's directory.
        working_dir: PathBuf,
    },
}

/// Content conversions an application allows (`[applications.conversions]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conversions {
    /// `html2wml`: HTML from the backend becomes WML for WAP clients.
    pub html2wml: bool,
    /// `wml2html`: WML from the backend becomes HTML for browsers.
    pub wml2html: bool,
    /// `wbxml`: WML is compiled to WBXML (WMLC) for clients that accept it.
    pub wbxml: bool,
}

impl Default for Conversions {
    fn default() -> Self {
        Conversions {
            html2wml: true,
            wml2html: true,
            wbxml: true,
        }
    }
}

/// A config file could not be used: `FILE: KEY: PROBLEM` (see
/// [`daemon_kit::config`]), with this daemon's [`Problem`]s.
pub type ConfigError = daemon_kit::config::ConfigError<Problem>;

/// What is wrong with a key's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A required key is absent.
    #[error("missing (required: {0})")]
    Missing(&'static str),
    /// Two keys that exclude each other.
    #[error("cannot be used together with {0}")]
    Conflicts(&'static str),
    /// A number outside its range.
    #[error("{value} is outside {min}..={max}")]
    OutOfRange {
        /// The value given.
        value: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// An application name with characters outside `[a-z0-9._-]`, empty or
    /// too long.
    #[error("{0:?} is not a name ([a-z0-9._-], 1 to 63 characters)")]
    BadName(String),
    /// Two applications with one name, address or listening address.
    #[error("{0} is used twice")]
    Duplicate(String),
    /// Not an overlay address (unspecified, loopback, multicast, IPv4-mapped).
    #[error("{0} is not a permanent overlay address")]
    NotOverlayAddress(Ipv6Addr),
    /// A direct listener not on the application's address.
    #[error("{listen} is not on the application's address {address}")]
    NotOnAddress {
        /// The listening address.
        listen: SocketAddr,
        /// The application's address.
        address: Ipv6Addr,
    },
    /// A PROXY protocol listener must be on loopback: whoever can connect
    /// to it can claim any overlay source.
    #[error("{0} is not a loopback address (anyone reaching it could claim any overlay source)")]
    NotLoopback(SocketAddr),
    /// A port of 0 where a fixed one is needed.
    #[error("{0}: port 0 is not a listening port")]
    PortZero(SocketAddr),
    /// A backend URL that is not `http://host[:port]/path`.
    #[error("{url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A CGI program path that is not absolute after resolution.
    #[error("{0}: not a file")]
    NotAFile(PathBuf),
    /// An empty group name.
    #[error("empty group name")]
    EmptyGroup,
}

/// A SIGHUP reload that needs a restart.
#[derive(Debug, thiserror::Error)]
#[error("{key}: changed; restart wap-adapter to apply it")]
pub struct RestartNeeded {
    /// The first key that changed and does not reload.
    pub key: String,
}

impl Config {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = daemon_kit::config::read(path)?;
        Config::parse(&text, path)
    }

    /// Check `text` as the contents of `path` (relative paths in it are
    /// resolved against `path`'s directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = daemon_kit::config::parse_toml(text, path)?;
        let base = path.parent().unwrap_or(Path::new(""));
        let key_error = |key: String, problem| ConfigError::at(path, key, problem);
        let identity = raw.identity.unwrap_or_default();
        let identity = IdentityConfig {
            tunneld_socket: base.join(
                identity
                    .tunneld_socket
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_TUNNELD_SOCKET)),
            ),
            timeout: seconds(identity.timeout, 5, 1, 60)
                .map_err(|p| key_error("identity.timeout".into(), p))?,
        };
        let limits = limits(raw.limits.unwrap_or_default())
            .map_err(|(key, p)| key_error(format!("limits.{key}"), p))?;
        if raw.applications.is_empty() {
            return Err(key_error(
                "applications".into(),
                Problem::Missing("at least one [[applications]] table"),
            ));
        }
        let mut applications = Vec::with_capacity(raw.applications.len());
        let mut seen = HashSet::new();
        for (i, app) in raw.applications.into_iter().enumerate() {
            let app = application(app, base)
                .map_err(|(key, p)| key_error(format!("applications[{i}].{key}"), p))?;
            let mut unique = vec![
                format!("name {}", app.name),
                format!("address {}", app.address),
            ];
            unique.extend(
                app.listeners
                    .addresses()
                    .map(|a| format!("listening address {a}")),
            );
            for item in unique {
                if !seen.insert(item.clone()) {
                    return Err(key_error(
                        format!("applications[{i}]"),
                        Problem::Duplicate(item),
                    ));
                }
            }
            applications.push(app);
        }
        Ok(Config {
            path: path.to_owned(),
            log_level: raw.log_level.unwrap_or(LogLevel::Info),
            identity,
            limits,
            applications,
        })
    }

    /// The application named `name`.
    pub fn application(&self, name: &str) -> Option<&Application> {
        self.applications.iter().find(|a| a.name == name)
    }

    /// Whether `new` differs from `self` only in keys SIGHUP reloads
    /// (`log-level` and each application's `allowed-groups`); the first
    /// other changed key otherwise.
    pub fn reloadable_change(&self, new: &Config) -> Result<(), RestartNeeded> {
        let restart = |key: &str| RestartNeeded {
            key: key.to_owned(),
        };
        if self.identity != new.identity {
            return Err(restart("identity"));
        }
        if self.limits != new.limits {
            return Err(restart("limits"));
        }
        if self.applications.len() != new.applications.len() {
            return Err(restart("applications"));
        }
        for (i, (old, new)) in self.applications.iter().zip(&new.applications).enumerate() {
            let same = Application {
                allowed_groups: new.allowed_groups.clone(),
                ..old.clone()
            };
            if &same != new {
                return Err(restart(&format!("applications[{i}]")));
            }
        }
        Ok(())
    }
}

impl Listeners {
    /// Every address listened on (TCP and UDP).
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> {
        let list = match *self {
            Listeners::Direct { http, wsp, wtp } => vec![http, wsp, wtp],
            Listeners::Proxied { listen } => vec![listen],
        };
        list.into_iter()
    }

    /// Whether connections and datagrams carry a PROXY v2 header.
    pub fn proxied(&self) -> bool {
        matches!(self, Listeners::Proxied { .. })
    }

    /// Where HTTP is served (TCP).
    pub fn http(&self) -> SocketAddr {
        match *self {
            Listeners::Direct { http, .. } => http,
            Listeners::Proxied { listen } => listen,
        }
    }
}

fn limits(raw: RawLimits) -> Result<Limits, (&'static str, Problem)> {
    let d = Limits::default();
    let count = |value: Option<u64>, default: usize, min: u64, max: u64, key| match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => {
            usize::try_from(v).map_err(|_| (key, Problem::OutOfRange { value: v, min, max }))
        }
        Some(v) => Err((key, Problem::OutOfRange { value: v, min, max })),
    };
    Ok(Limits {
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        max_header_bytes: count(
            raw.max_header_bytes,
            d.max_header_bytes,
            8192,
            1 << 20,
            "max-header-bytes",
        )?,
        max_body_bytes: count(
            raw.max_body_bytes,
            d.max_body_bytes,
            1024,
            1 << 30,
            "max-body-bytes",
        )?,
        header_timeout: seconds(raw.header_timeout, 10, 1, 300)
            .map_err(|p| ("header-timeout", p))?,
        connect_timeout: seconds(raw.connect_timeout, 5, 1, 300)
            .map_err(|p| ("connect-timeout", p))?,
        backend_timeout: seconds(raw.backend_timeout, 30, 1, 3600)
            .map_err(|p| ("backend-timeout", p))?,
        max_connections: count(
            raw.max_connections,
            d.max_connections,
            1,
            65_536,
            "max-connections",
        )?,
    })
}

fn seconds(value: Option<u64>, default: u64, min: u64, max: u64) -> Result<Duration, Problem> {
    let value = value.unwrap_or(default);
    if !(min..=max).contains(&value) {
        return Err(Problem::OutOfRange { value, min, max });
    }
    Ok(Duration::from_secs(value))
}

fn application(
    mut raw: RawApplication,
    base: &Path,
) -> Result<Application, (&'static str, Problem)> {
    let name = raw
        .name
        .take()
        .ok_or(("name", Problem::Missing("a name")))?;
    let good_name = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if !good_name {
        return Err(("name", Problem::BadName(name)));
    }
    let address = raw
        .address
        .ok_or(("address", Problem::Missing("the permanent IPv6 address")))?;
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.to_ipv4_mapped().is_some()
    {
        return Err(("address", Problem::NotOverlayAddress(address)));
    }
    let listeners = listeners(&raw, address)?;
    let backend = backend(raw.backend, base)?;
    if raw.allowed_groups.iter().any(String::is_empty) {
        return Err(("allowed-groups", Problem::EmptyGroup));
    }
    let sdu_size = match raw.sdu_size {
        None => DEFAULT_SDU_SIZE,
        Some(v) if (576..=65_535).contains(&v) => v,
        Some(v) => {
            return Err((
                "sdu-size",
                Problem::OutOfRange {
                    value: v.into(),
                    min: 576,
                    max: 65_535,
                },
            ))
        }
    };
    let conversions = raw.conversions.unwrap_or_default();
    let d = Conversions::default();
    Ok(Application {
        name,
        address,
        listeners,
        backend,
        allowed_groups: raw.allowed_groups,
        conversions: Conversions {
            html2wml: conversions.html2wml.unwrap_or(d.html2wml),
            wml2html: conversions.wml2html.unwrap_or(d.wml2html),
            wbxml: conversions.wbxml.unwrap_or(d.wbxml),
        },
        sdu_size,
    })
}

fn listeners(
    raw: &RawApplication,
    address: Ipv6Addr,
) -> Result<Listeners, (&'static str, Problem)> {
    if let Some(listen) = raw.proxy_protocol_listen {
        for (key, given) in [
            ("http-listen", raw.http_listen),
            ("wsp-listen", raw.wsp_listen),
            ("wtp-listen", raw.wtp_listen),
        ] {
            if given.is_some() {
                return Err((key, Problem::Conflicts("proxy-protocol-listen")));
            }
        }
        if !listen.ip().is_loopback() {
            return Err(("proxy-protocol-listen", Problem::NotLoopback(listen)));
        }
        if listen.port() == 0 {
            return Err(("proxy-protocol-listen", Problem::PortZero(listen)));
        }
        return Ok(Listeners::Proxied { listen });
    }
    let on_address = |key, given: Option<SocketAddr>, port| {
        let listen = given.unwrap_or(SocketAddr::V6(SocketAddrV6::new(address, port, 0, 0)));
        if listen.ip() != IpAddr::V6(address) {
            return Err((key, Problem::NotOnAddress { listen, address }));
        }
        Ok(listen)
    };
    Ok(Listeners::Direct {
        http: on_address("http-listen", raw.http_listen, HTTP_PORT)?,
        wsp: on_address("wsp-listen", raw.wsp_listen, WSP_CONNECTIONLESS_PORT)?,
        wtp: on_address("wtp-listen", raw.wtp_listen, WTP_PORT)?,
    })
}

fn backend(raw: Option<RawBackend>, base: &Path) -> Result<Backend, (&'static str, Problem)> {
    let raw = raw.ok_or(("backend", Problem::Missing("url or cgi")))?;
    match (raw.url, raw.cgi) {
        (Some(_), Some(_)) => Err(("backend.cgi", Problem::Conflicts("backend.url"))),
        (None, None) => Err(("backend", Problem::Missing("url or cgi"))),
        (Some(url), None) => {
            if raw.working_dir.is_some() {
                return Err(("backend.working-dir", Problem::Conflicts("backend.url")));
            }
            let bad = |why| {
                (
                    "backend.url",
                    Problem::BadUrl {
                        url: url.clone(),
                        why,
                    },
                )
            };
            let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
            if uri.scheme_str() != Some("http") {
                return Err(bad("only http:// backends are supported"));
            }
            if uri.host().is_none_or(str::is_empty) {
                return Err(bad("no host"));
            }
            if uri.query().is_some() {
                return Err(bad("a backend URL has no query"));
            }
            Ok(Backend::Http { url: uri })
        }
        (None, Some(cgi)) => {
            let program = base.join(cgi);
            if program.file_name().is_none() {
                return Err(("backend.cgi", Problem::NotAFile(program)));
            }
            let working_dir = match raw.working_dir {
                Some(dir) => base.join(dir),
                None => program.parent().map(Path::to_owned).unwrap_or_default(),
            };
            Ok(Backend::Cgi {
                program,
                working_dir,
            })
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    log_level: Option<LogLevel>,
    identity: Option<RawIdentity>,
    limits: Option<RawLimits>,
    #[serde(default)]
    applications: Vec<RawApplication>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawIdentity {
    tunneld_socket: Option<PathBuf>,
    timeout: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<u64>,
    max_body_bytes: Option<u64>,
    header_timeout: Option<u64>,
    connect_timeout: Option<u64>,
    backend_timeout: Option<u64>,
    max_connections: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawApplication {
    name: Option<String>,
    address: Option<Ipv6Addr>,
    http_listen: Option<SocketAddr>,
    wsp_listen: Option<SocketAddr>,
    wtp_listen: Option<SocketAddr>,
    proxy_protocol_listen: Option<SocketAddr>,
    backend: Option<RawBackend>,
    #[serde(default)]
    allowed_groups: Vec<String>,
    conversions: Option<RawConversions>,
    sdu_size: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawBackend {
    url: Option<String>,
    cgi: Option<PathBuf>,
    working_dir: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConversions {
    html2wml: Option<bool>,
    wml2html: Option<bool>,
    wbxml: Option<bool>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MINIMAL: &str = r#"
[[applications]]
name = "wiki"
address = "2002:b16:212c:2::10"
backend.url = "http://127.0.0.1:8080/"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/permanet/wap-adapter.toml"))
    }

    fn problem(text: &str) -> (String, Problem) {
        let error = parse(text).unwrap_err();
        (
            error.key().unwrap().to_owned(),
            error.problem().unwrap().clone(),
        )
    }

    #[test]
    fn defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(
            config.identity.tunneld_socket,
            Path::new(DEFAULT_TUNNELD_SOCKET)
        );
        assert_eq!(config.limits, Limits::default());
        let app = &config.applications[0];
        let on = |port| format!("[2002:b16:212c:2::10]:{port}").parse().unwrap();
        assert_eq!(
            app.listeners,
            Listeners::Direct {
                http: on(80),
                wsp: on(9200),
                wtp: on(9201)
            }
        );
        assert_eq!(app.sdu_size, 1400);
        assert_eq!(app.conversions, Conversions::default());
        assert!(app.allowed_groups.is_empty());
    }

    #[test]
    fn the_reference_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/wap-adapter.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.applications.len(), 2);
        assert!(config.applications[1].listeners.proxied());
        assert!(matches!(
            config.applications[1].backend,
            Backend::Cgi { .. }
        ));
    }

    #[test]
    fn cgi_paths_resolve_against_the_config_directory() {
        let text = MINIMAL.replace(
            "backend.url = \"http://127.0.0.1:8080/\"",
            "backend.cgi = \"cgi/app\"",
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.applications[0].backend,
            Backend::Cgi {
                program: "/etc/permanet/cgi/app".into(),
                working_dir: "/etc/permanet/cgi".into()
            }
        );
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let cases: &[(&str, &str, &str)] = &[
            ("name = \"wiki\"", "name = \"Wiki!\"", "applications[0].name"),
            ("2002:b16:212c:2::10\"", "::1\"", "applications[0].address"),
            (
                "backend.url = \"http://127.0.0.1:8080/\"",
                "backend.url = \"https://x/\"",
                "applications[0].backend.url",
            ),
            (
                "backend.url = \"http://127.0.0.1:8080/\"",
                "backend = { url = \"http://x/\", cgi = \"/p\" }",
                "applications[0].backend.cgi",
            ),
            (
                "backend.url",
                "proxy-protocol-listen = \"192.0.2.1:8080\"\nbackend.url",
                "applications[0].proxy-protocol-listen",
            ),
            (
                "backend.url",
                "http-listen = \"[2002:b16:212c:2::11]:80\"\nbackend.url",
                "applications[0].http-listen",
            ),
            (
                "backend.url",
                "proxy-protocol-listen = \"127.0.0.1:8080\"\nhttp-listen = \"[::1]:80\"\nbackend.url",
                "applications[0].http-listen",
            ),
            ("backend.url", "sdu-size = 100\nbackend.url", "applications[0].sdu-size"),
            ("backend.url", "allowed-groups = [\"\"]\nbackend.url", "applications[0].allowed-groups"),
        ];
        for (from, to, key) in cases {
            let text = MINIMAL.replace(from, to);
            let error = parse(&text).unwrap_err();
            assert_eq!(error.key(), Some(*key), "{to}: {error}");
            assert!(
                error
                    .to_string()
                    .starts_with("/etc/permanet/wap-adapter.toml: "),
                "{error}"
            );
        }
        let (key, p) = problem(&format!("[limits]\nbackend-timeout = 0\n{MINIMAL}"));
        assert_eq!(key, "limits.backend-timeout");
        assert_eq!(
            p,
            Problem::OutOfRange {
                value: 0,
                min: 1,
                max: 3600
            }
        );
        let (key, p) = problem(&format!("{MINIMAL}{}", MINIMAL.replace("::10", "::11")));
        assert_eq!(key, "applications[1]");
        assert_eq!(p, Problem::Duplicate("name wiki".into()));
        let (key, _) = problem("log-level = \"info\"\n");
        assert_eq!(key, "applications");
        let syntax = parse(&format!("{MINIMAL}colour = 1\n")).unwrap_err();
        assert!(matches!(syntax, ConfigError::Syntax { .. }), "{syntax}");
    }

    #[test]
    fn only_log_level_and_allowed_groups_reload() {
        let old = parse(MINIMAL).unwrap();
        let groups =
            parse(&MINIMAL.replace("backend.url", "allowed-groups = [\"staff\"]\nbackend.url"))
                .unwrap();
        let level = parse(&format!("log-level = \"debug\"\n{MINIMAL}")).unwrap();
        assert!(old.reloadable_change(&groups).is_ok());
        assert!(old.reloadable_change(&level).is_ok());
        let moved = parse(&MINIMAL.replace("8080", "8081")).unwrap();
        assert_eq!(
            old.reloadable_change(&moved).unwrap_err().key,
            "applications[0]"
        );
    }
}
