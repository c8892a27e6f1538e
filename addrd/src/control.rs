//! The control socket: how the admin commands reach a running addrd.
//!
//! The daemon listens on a Unix stream socket (`control-socket`, default
//! `/run/permanet/addrd.sock`, mode 0600, in a directory it creates with
//! mode 0700). A client writes one request line and reads one JSON
//! document back, then the daemon closes the connection. Requests:
//!
//! | request | answer |
//! |---------|--------|
//! | `status` | [`Response::Status`] |
//! | `users` | [`Response::Entities`]: every user, application and system |
//! | `bindings` | [`Response::Bindings`]: the home agent's binding cache |
//! | `revoke KIND NAME` | [`Response::Done`] once the revocation is durable |
//! | `check-login`, then the user and the password on one line each | [`Response::Login`] |
//! | `issue-lease KIND NAME PUBLIC-KEY [SECONDS]` | [`Response::Lease`] (base64 bytes) |
//!
//! Every failure is [`Response::Error`] with a message. The daemon is the
//! only process that may open its state file and embedded store (redb
//! locks them), so the admin commands ask it through this socket while it
//! runs, and open the files themselves only when it does not.
//!
//! [`ControlSocket::bind`] replaces a stale socket file (one nobody
//! answers on) and refuses to steal a live one; dropping the
//! [`ControlSocket`] removes the file.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use overlay_proto::handshake::PublicKey;
use overlay_proto::lease::EntityKind;
use overlay_proto::time::UnixTime;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::info;
use zeroize::Zeroizing;

use crate::backend::Backend;
use crate::bindings::BindingCache;
use crate::config::MAX_LEASE_LIFETIME;
use crate::directory::{AuthError, Directory, Entity, Password};
use crate::dns::ZoneHandle;
use crate::service::Service;
use crate::state::revocation_key;

/// Longest request line accepted, newline included.
const MAX_REQUEST: u64 = 512;

/// Longest request accepted: the line and a body (`check-login`'s user
/// and password lines).
const MAX_REQUEST_TOTAL: u64 = 64 << 10;

/// Longest answer a client reads.
const MAX_RESPONSE: u64 = 64 << 20;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client waits for the daemon's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One directory entity, as `addrd users` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityReport {
    /// Short name.
    pub name: String,
    /// `user`, `application` or `system`.
    pub kind: String,
    /// The permanent address, if assigned.
    pub address: Option<String>,
    /// Groups (users) by `cn`.
    pub groups: Vec<String>,
    /// Disabled in the directory.
    pub disabled: bool,
    /// The entry's DN.
    pub dn: String,
    /// Applications: who may reach it.
    pub allowed_groups: Vec<String>,
    /// Applications: the system hosting it.
    pub system: Option<String>,
    /// When it was last revoked (Unix seconds), if ever.
    pub revoked_at: Option<u64>,
}

/// The running daemon's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Unix seconds when answered.
    pub now: u64,
    /// Seconds since start.
    pub uptime: u64,
    /// `embedded` or `ldap`.
    pub backend: String,
    /// Entities in the current snapshot.
    pub entities: usize,
    /// The authority's public key (base64).
    pub authority_key: String,
    /// The login channel's static public key (base64).
    pub static_public_key: String,
    /// The login channel's bound UDP address.
    pub listen: String,
    /// DNS addresses served (local ports; the overlay address serves DNS
    /// too, through the home agent).
    pub dns_listen: Vec<String>,
    /// addrd's overlay address (the home agent's), when it runs.
    #[serde(default)]
    pub overlay_address: Option<String>,
    /// The zone's SOA serial.
    pub zone_serial: Option<u32>,
    /// Bindings in the cache.
    pub bindings: usize,
    /// Control requests refused as malformed.
    pub bad_requests: u64,
    /// The login channel's counters (`channel.*`, `server.*`, `guard.*`,
    /// `audit.*`); empty when it is not served.
    #[serde(default)]
    pub login: std::collections::BTreeMap<String, u64>,
}

/// One binding, as `addrd bindings` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingReport {
    /// The permanent address.
    pub address: String,
    /// The lease's name.
    pub name: String,
    /// Where it is now.
    pub endpoint: String,
    /// Sequence of the last update.
    pub sequence: u64,
    /// Seconds since the last update.
    pub age: u64,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// An answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Response {
    /// `status`.
    Status(StatusReport),
    /// `users`.
    Entities {
        /// Users, applications, systems.
        entities: Vec<EntityReport>,
    },
    /// `bindings`.
    Bindings {
        /// The cache's bindings, by address.
        bindings: Vec<BindingReport>,
    },
    /// A signed lease.
    Lease {
        /// Standard base64 of the signed bytes.
        lease: String,
    },
    /// `check-login`: whether the password was accepted (never why not).
    Login {
        /// Accepted.
        accepted: bool,
    },
    /// Done.
    Done,
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

pub use daemon_kit::control::{BindError, ControlSocket};

/// A request to the daemon failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nobody listens there.
    #[error("addrd is not running (no answer on {})", .0.display())]
    NotRunning(PathBuf),
    /// The exchange failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The answer was not a response.
    #[error("{}: unreadable answer: {message}", path.display())]
    BadAnswer {
        /// The socket.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// What the control socket answers from.
#[derive(Debug)]
pub struct Context {
    /// The service (directory, issuer, state).
    pub service: Arc<Service<Backend>>,
    /// The home agent's binding cache.
    pub bindings: Arc<Mutex<BindingCache>>,
    /// The zone being served, if DNS is on.
    pub zone: Option<ZoneHandle>,
    /// The login channel's static public key.
    pub static_public_key: PublicKey,
    /// The login channel's bound address.
    pub listen: String,
    /// DNS addresses actually bound.
    pub dns_listen: Vec<String>,
    /// When the daemon started.
    pub started: Instant,
    /// Requests refused as malformed (unknown, too long, not UTF-8).
    pub bad_requests: AtomicU64,
    /// The login channel, when served.
    pub login: Option<crate::channel::ChannelHandle>,
    /// Where revocations are audited (`None`: the daemon's log only).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
}

/// Bind addrd's control socket at `path` (see [`ControlSocket::bind`]:
/// a second addrd with the same config is refused).
pub async fn bind(path: &Path) -> Result<ControlSocket, BindError> {
    ControlSocket::bind(path, "addrd").await
}

/// Answer requests on `socket` until the future is dropped; one task per
/// connection.
pub async fn serve(socket: &ControlSocket, context: Arc<Context>) {
    socket
        .serve(|stream| {
            let context = Arc::clone(&context);
            async move { answer(stream, &context).await }
        })
        .await;
}

async fn answer(stream: UnixStream, context: &Context) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    // The whole request (the client half-closes after it), in a buffer
    // that is wiped: `check-login` carries a password on its second line.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_REQUEST_TOTAL as usize + 1));
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        read.take(MAX_REQUEST_TOTAL + 1).read_to_end(&mut bytes),
    )
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    if bytes.is_empty() {
        // Closed without a request (a probe that the daemon is up).
        return Ok(());
    }
    let (line, body) = match bytes.iter().position(|&b| b == b'\n') {
        Some(end) => (
            bytes.get(..end).unwrap_or_default(),
            bytes.get(end + 1..).unwrap_or_default(),
        ),
        None => (bytes.as_slice(), &[][..]),
    };
    let response = if bytes.len() as u64 > MAX_REQUEST_TOTAL || line.len() as u64 > MAX_REQUEST {
        context.bad_requests.fetch_add(1, Ordering::Relaxed);
        error("request too long")
    } else {
        match std::str::from_utf8(line) {
            Ok(line) => respond(line.trim_end(), body, context).await,
            Err(_) => {
                context.bad_requests.fetch_add(1, Ordering::Relaxed);
                error("request is not UTF-8")
            }
        }
    };
    let mut text = serde_json::to_string(&response).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

fn error(message: impl ToString) -> Response {
    Response::Error {
        message: message.to_string(),
    }
}

async fn respond(line: &str, body: &[u8], context: &Context) -> Response {
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let service = &context.service;
    match words.as_slice() {
        ["status"] => Response::Status(status(context)),
        ["users"] => match service.refresh().await {
            Ok(entities) => match service.revocations().all().await {
                Ok(revoked) => Response::Entities {
                    entities: entity_reports(&entities, &revoked),
                },
                Err(e) => error(e),
            },
            Err(e) => error(e),
        },
        ["bindings"] => Response::Bindings {
            bindings: binding_reports(context),
        },
        ["revoke", kind, name] => {
            let Some(kind) = parse_kind(kind) else {
                return error(format!("unknown kind {kind:?}"));
            };
            match service.revoke(kind, name, now()).await {
                Ok(()) => {
                    info!(kind = kind.as_str(), %name, "revoked (control socket)");
                    if let Some(audit) = &context.audit {
                        audit.record(
                            std::time::SystemTime::now(),
                            &crate::audit::AuditEvent::Revoked {
                                kind,
                                user: name,
                                key: None,
                            },
                        );
                    }
                    Response::Done
                }
                Err(e) => error(e),
            }
        }
        ["issue-lease", kind, name, key, rest @ ..] if rest.len() <= 1 => {
            let Some(kind) = parse_kind(kind) else {
                return error(format!("unknown kind {kind:?}"));
            };
            let key = match PublicKey::from_str(key) {
                Ok(key) => key,
                Err(e) => return error(e),
            };
            let lifetime = match rest.first().map(|s| s.parse::<u64>()) {
                None => None,
                Some(Ok(secs)) if secs > 0 && secs <= MAX_LEASE_LIFETIME.as_secs() => {
                    Some(Duration::from_secs(secs))
                }
                Some(_) => {
                    return error(format!(
                        "lifetime must be 1 to {} seconds",
                        MAX_LEASE_LIFETIME.as_secs()
                    ))
                }
            };
            match service.issue_for(kind, name, key, now(), lifetime).await {
                Ok(lease) => {
                    info!(kind = kind.as_str(), %name, serial = lease.lease().serial, "lease issued (control socket)");
                    Response::Lease {
                        lease: base64::engine::general_purpose::STANDARD.encode(lease.as_bytes()),
                    }
                }
                Err(e) => error(e),
            }
        }
        ["check-login"] => {
            let mut lines = body.split(|&b| b == b'\n');
            let (Some(user), Some(password)) = (lines.next(), lines.next()) else {
                return error("check-login: expected the user and the password on two lines");
            };
            let (Ok(user), Ok(password)) =
                (std::str::from_utf8(user), std::str::from_utf8(password))
            else {
                return Response::Login { accepted: false };
            };
            let password = Password::new(password.to_owned());
            match service.directory().authenticate(user, &password).await {
                Ok(_) => Response::Login { accepted: true },
                Err(AuthError::Refused { .. }) => Response::Login { accepted: false },
                Err(e) => error(e),
            }
        }
        _ => {
            context.bad_requests.fetch_add(1, Ordering::Relaxed);
            error(format!("unknown request {:?}", truncate(line)))
        }
    }
}

fn truncate(line: &str) -> String {
    line.chars().take(64).collect()
}

fn status(context: &Context) -> StatusReport {
    let issuer = context.service.issuer();
    StatusReport {
        now: now().as_secs(),
        uptime: context.started.elapsed().as_secs(),
        backend: context.service.directory().name().to_owned(),
        entities: context.service.snapshot().len(),
        authority_key: PublicKey(issuer.authority_key().to_bytes()).to_string(),
        static_public_key: context.static_public_key.to_string(),
        listen: context.listen.clone(),
        dns_listen: context.dns_listen.clone(),
        overlay_address: context
            .login
            .as_ref()
            .and_then(crate::channel::ChannelHandle::overlay_address)
            .map(|a| a.to_string()),
        zone_serial: context.zone.as_ref().map(ZoneHandle::serial),
        bindings: context
            .bindings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len(),
        bad_requests: context.bad_requests.load(Ordering::Relaxed),
        login: context
            .login
            .as_ref()
            .map(crate::channel::ChannelHandle::counters)
            .unwrap_or_default(),
    }
}

fn binding_reports(context: &Context) -> Vec<BindingReport> {
    let now = Instant::now();
    let cache = context
        .bindings
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    cache
        .iter(now)
        .map(|b| BindingReport {
            address: b.address.to_string(),
            name: b.lease.lease().name.clone(),
            endpoint: b.endpoint.to_string(),
            sequence: b.sequence,
            age: b.age(now).as_secs(),
            expires_in: b.remaining(now).as_secs(),
        })
        .collect()
}

/// `user`, `application` (or `app`), `system`.
pub fn parse_kind(text: &str) -> Option<EntityKind> {
    match text {
        "user" => Some(EntityKind::User),
        "application" | "app" => Some(EntityKind::Application),
        "system" => Some(EntityKind::System),
        _ => None,
    }
}

/// The reports of `entities`, with their revocation times from
/// `revocations` (by `kind:name`).
pub fn entity_reports(
    entities: &[Entity],
    revocations: &std::collections::HashMap<String, u64>,
) -> Vec<EntityReport> {
    entities
        .iter()
        .map(|e| EntityReport {
            name: e.name.clone(),
            kind: e.kind.as_str().to_owned(),
            address: e.address.map(|a| a.to_string()),
            groups: e.groups.clone(),
            disabled: e.disabled,
            dn: e.dn.clone(),
            allowed_groups: e.allowed_groups.clone(),
            system: e.system.clone(),
            revoked_at: revocations.get(&revocation_key(e.kind, &e.name)).copied(),
        })
        .collect()
}

/// The current wall-clock time.
pub fn now() -> UnixTime {
    UnixTime::from_duration(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Send `request` to the daemon at `path` and read its answer.
pub async fn request(path: &Path, request: &str) -> Result<Response, ClientError> {
    request_with_body(path, request, b"").await
}

/// Send `request`, then `body` (e.g. a password line), to the daemon at
/// `path` and read its answer.
pub async fn request_with_body(
    path: &Path,
    request: &str,
    body: &[u8],
) -> Result<Response, ClientError> {
    let io_error = |source| ClientError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = match UnixStream::connect(path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(path.to_owned()))
        }
        Err(e) => return Err(io_error(e)),
    };
    let exchange = async {
        let mut out = Zeroizing::new(Vec::with_capacity(request.len() + 1 + body.len()));
        out.extend_from_slice(request.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(body);
        stream.write_all(&out).await?;
        stream.shutdown().await?;
        let mut text = String::new();
        (&mut stream)
            .take(MAX_RESPONSE)
            .read_to_string(&mut text)
            .await?;
        Ok::<_, io::Error>(text)
    };
    let text = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| io_error(io::Error::from(io::ErrorKind::TimedOut)))?
        .map_err(io_error)?;
    serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
