//! tunneld's end of the authority channel to addrd: the driver that runs
//! an [`AuthorityClient`] over its own UDP socket, the three exchanges
//! (login, renewal, netmap) with every lease verified, and the files
//! `tunneld login` leaves for the daemon.
//!
//! [`AddrdClient`] owns a UDP socket bound to an ephemeral port (not the
//! tunnel's `listen` socket, so `login` works while the daemon runs) and
//! drives the sans-IO client until the answer to one request arrives or
//! [`ClientTimers::request_timeout`] passes. A request that never saw a
//! completed handshake fails with [`AddrdError::Unreachable`], which names
//! the pinned key: a wrong `addrd.public-key` and an unreachable addrd look
//! the same from here (addrd answers no initiation it cannot decrypt).
//!
//! Every lease addrd returns is verified with `authority-key` like a lease
//! file; this node's lease must also be for this node's key. A compromised
//! channel can therefore withhold leases but never forge one.
//!
//! Files (DESIGN §6): `lease-file` gets the signed lease (binary, mode
//! 0644: a lease is public, it is shown to every peer in each handshake);
//! the netmap cache [`netmap_cache_path`] (`lease-file` + `.netmap`, mode
//! 0644) holds the peers' signed leases as a sequence of
//! `length u16 big-endian | signed lease` records, nothing else. Both are
//! written to a temporary file in the same directory, synced, and renamed
//! over the old one, so a reader sees the old or the new file, never half.

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use overlay_proto::authority::{
    AuthorityClient, ClientConfig, ClientError, ClientTimers, ErrorCode, LoginNeededReason,
    Password, Removed, Request, Response,
};
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{AuthorityKey, LeaseError, SignedLease, MAX_LEASE_LEN};
use overlay_proto::time::UnixTime;
use tokio::net::UdpSocket;

use crate::config::Addrd;
use crate::startup;

/// Largest datagram the channel sends (a data message carrying one large
/// lease), with room to spare.
const RECV_BUF_LEN: usize = 4096;

/// Most netmap pages one fetch reads before it gives up (a misbehaving
/// addrd cannot keep a client paging forever).
const MAX_NETMAP_PAGES: usize = 4096;

/// How many times a netmap fetch restarts when the netmap changes version
/// between pages.
const NETMAP_RESTARTS: usize = 3;

/// Why an exchange with addrd gave no usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddrdError {
    /// The local UDP socket could not be opened or used.
    #[error("UDP socket for addrd: {0}")]
    Io(#[from] std::io::Error),
    /// No handshake completed within the request timeout.
    #[error(
        "addrd at {endpoint} did not answer within {} s: it is unreachable, or its static key \
         is not the pinned addrd.public-key {key}",
        timeout.as_secs()
    )]
    Unreachable {
        /// `addrd.endpoint`.
        endpoint: SocketAddr,
        /// `addrd.public-key`.
        key: PublicKey,
        /// The request timeout.
        timeout: Duration,
    },
    /// The handshake completed but the request was not answered in time.
    #[error("addrd at {endpoint} accepted the handshake but did not answer within {} s", timeout.as_secs())]
    NoAnswer {
        /// `addrd.endpoint`.
        endpoint: SocketAddr,
        /// The request timeout.
        timeout: Duration,
    },
    /// The request could not be made or the answer made no sense.
    #[error("authority channel: {0}")]
    Channel(ClientError),
    /// Login refused (wrong user or password, disabled account, or too
    /// many attempts: addrd does not say which).
    #[error("login refused: wrong user name or password, account not allowed, or too many attempts; try again in {retry_after_secs} s")]
    Refused {
        /// Seconds before another attempt can succeed.
        retry_after_secs: u32,
    },
    /// addrd will not renew: `tunneld login` again.
    #[error("login needed ({}): run `tunneld login`", reason_text(*reason))]
    LoginNeeded {
        /// Why.
        reason: LoginNeededReason,
    },
    /// addrd is overloaded: it answers so when it cannot ask its
    /// directory (LDAP down), never for a wrong password.
    #[error(
        "addrd is busy (its directory is unreachable or overloaded); \
         try again in {retry_after_secs} s"
    )]
    Busy {
        /// Seconds to wait.
        retry_after_secs: u32,
    },
    /// addrd answered with an error.
    #[error("addrd error: {}", error_text(*code))]
    Server {
        /// Its code.
        code: ErrorCode,
    },
    /// addrd answered with something that does not answer the request.
    #[error("addrd answered a {request} request with {response}")]
    Unexpected {
        /// The request kind.
        request: &'static str,
        /// The answer kind.
        response: &'static str,
    },
    /// The lease addrd returned does not verify with `authority-key`.
    #[error("the lease addrd returned does not verify with authority-key: {0}")]
    BadLease(LeaseError),
    /// The lease addrd returned is for another key.
    #[error("the lease addrd returned is for public key {lease_key}, not this node's {own_key}")]
    WrongKey {
        /// The key in the lease.
        lease_key: PublicKey,
        /// This node's key.
        own_key: PublicKey,
    },
    /// The netmap kept changing, or had too many pages.
    #[error("netmap: {0}")]
    Netmap(&'static str),
}

fn reason_text(reason: LoginNeededReason) -> String {
    match reason {
        LoginNeededReason::LeaseExpired => "the lease expired or is unknown to addrd".to_owned(),
        LoginNeededReason::SessionTooOld => "the login session reached its maximum age".to_owned(),
        LoginNeededReason::AccountDisabled => "the account is disabled or removed".to_owned(),
        LoginNeededReason::Revoked => "this key was revoked".to_owned(),
        LoginNeededReason::KeyMismatch => "the lease is for another key".to_owned(),
        LoginNeededReason::Other(code) => format!("reason code {code}"),
    }
}

fn error_text(code: ErrorCode) -> String {
    match code {
        ErrorCode::BadRequest => "bad request".to_owned(),
        ErrorCode::Unsupported => "request not supported".to_owned(),
        ErrorCode::DirectoryUnavailable => "directory unavailable, try again later".to_owned(),
        ErrorCode::Internal => "internal error".to_owned(),
        ErrorCode::NotAuthorized => "not authorized to ask this".to_owned(),
        ErrorCode::Other(code) => format!("code {code}"),
    }
}

/// Where addrd's home agent last saw an entity (`WhereIs`).
#[derive(Clone, Debug)]
pub struct Whereabouts {
    /// The UDP endpoint it was seen at on the authenticated path.
    pub endpoint: SocketAddr,
    /// The binding's sequence number.
    pub sequence: u64,
    /// How long the binding stays valid without a newer observation.
    pub expires_in: Duration,
    /// The entity's lease, verified with `authority-key`.
    pub lease: SignedLease,
}

/// The peers' leases of one netmap fetch.
#[derive(Clone, Debug, Default)]
pub struct Netmap {
    /// The netmap version.
    pub version: u64,
    /// Peer leases that verified (this node's own entry left out).
    pub leases: Vec<SignedLease>,
    /// Keys the netmap removes.
    pub removed: Vec<PublicKey>,
    /// Entries that did not verify, and why.
    pub problems: Vec<String>,
}

/// The client end of the authority channel over its own UDP socket. See
/// the module documentation.
pub struct AddrdClient {
    client: AuthorityClient,
    socket: UdpSocket,
    endpoint: SocketAddr,
    server_key: PublicKey,
    own_key: PublicKey,
    timeout: Duration,
}

impl std::fmt::Debug for AddrdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddrdClient")
            .field("endpoint", &self.endpoint)
            .field("server_key", &self.server_key)
            .finish_non_exhaustive()
    }
}

impl AddrdClient {
    /// A client for the addrd `addrd` names, logging in as `keypair`, with
    /// its own UDP socket on an ephemeral port. `seed` feeds request ids
    /// and session ids.
    pub async fn bind(
        addrd: &Addrd,
        keypair: StaticKeypair,
        timers: ClientTimers,
        seed: [u8; 32],
    ) -> Result<Self, AddrdError> {
        let local: SocketAddr = if addrd.endpoint.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local).await?;
        let own_key = keypair.public();
        let config = ClientConfig {
            keypair,
            server_key: addrd.public_key,
            server: addrd.endpoint,
            psk: None,
            timers,
        };
        Ok(AddrdClient {
            client: AuthorityClient::new(config, seed, startup::now()),
            socket,
            endpoint: addrd.endpoint,
            server_key: addrd.public_key,
            own_key,
            timeout: timers.request_timeout,
        })
    }

    /// This node's public key (the login identity).
    pub fn own_key(&self) -> PublicKey {
        self.own_key
    }

    /// The addrd this client talks to (`[addrd]`).
    pub fn addrd(&self) -> Addrd {
        Addrd {
            endpoint: self.endpoint,
            public_key: self.server_key,
        }
    }

    /// Sends `request` and waits for its answer (or its timeout).
    pub async fn request(&mut self, request: Request) -> Result<Response, AddrdError> {
        let id = self.client.send(startup::now(), request);
        let mut buf = vec![0u8; RECV_BUF_LEN];
        loop {
            while let Some(transmit) = self.client.poll_transmit() {
                // A send error (no route, for example) is like a lost
                // datagram: the client retransmits and times out.
                let _ = self
                    .socket
                    .send_to(&transmit.contents, transmit.destination)
                    .await;
            }
            while let Some((answered, result)) = self.client.poll_response() {
                if answered != id {
                    continue;
                }
                return match result {
                    Ok(response) => Ok(response),
                    Err(ClientError::Timeout(timeout)) if !self.client.is_established() => {
                        Err(AddrdError::Unreachable {
                            endpoint: self.endpoint,
                            key: self.server_key,
                            timeout,
                        })
                    }
                    Err(ClientError::Timeout(timeout)) => Err(AddrdError::NoAnswer {
                        endpoint: self.endpoint,
                        timeout,
                    }),
                    Err(e) => Err(AddrdError::Channel(e)),
                };
            }
            let wake = self
                .client
                .poll_timeout()
                .unwrap_or_else(|| std::time::Instant::now() + self.timeout);
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    match received {
                        Ok((len, src)) => {
                            if let Some(datagram) = buf.get_mut(..len) {
                                self.client.handle_datagram(startup::now(), src, datagram);
                            }
                        }
                        // ICMP port unreachable surfaces here on Linux:
                        // keep waiting, the timeout decides.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    self.client.handle_timeout(startup::now());
                }
            }
        }
    }

    /// Logs in as `user` and returns the verified lease for this node's
    /// key, and the netmap version addrd announced.
    pub async fn login(
        &mut self,
        user: &str,
        password: Password,
        authority: &AuthorityKey,
    ) -> Result<(SignedLease, u64), AddrdError> {
        let request = Request::Login {
            user: user.to_owned(),
            password,
        };
        match self.request(request).await? {
            Response::LoginOk {
                lease,
                netmap_version,
            } => Ok((self.own_lease(&lease, authority)?, netmap_version)),
            Response::LoginRefused { retry_after_secs } => {
                Err(AddrdError::Refused { retry_after_secs })
            }
            other => Err(unexpected("login", &other)),
        }
    }

    /// Renews `held` (no password) and returns the new verified lease.
    pub async fn renew(
        &mut self,
        held: &SignedLease,
        authority: &AuthorityKey,
    ) -> Result<SignedLease, AddrdError> {
        let request = Request::Renew {
            lease: held.as_bytes().to_vec(),
        };
        match self.request(request).await? {
            Response::Renewed { lease } => self.own_lease(&lease, authority),
            other => Err(unexpected("renew", &other)),
        }
    }

    /// Asks where `address` is (servers only: `held` is this node's own
    /// lease, a system's or an application's). `None`: addrd has no
    /// binding for it. The located lease is verified and must hold
    /// `address`.
    pub async fn where_is(
        &mut self,
        held: &SignedLease,
        address: Ipv6Addr,
        authority: &AuthorityKey,
    ) -> Result<Option<Whereabouts>, AddrdError> {
        let request = Request::WhereIs {
            lease: held.as_bytes().to_vec(),
            address,
        };
        match self.request(request).await? {
            Response::Location(location) => {
                let lease = SignedLease::verify(&location.lease, authority, startup::now().unix)
                    .map_err(AddrdError::BadLease)?;
                if !lease.lease().contains_source(&address) {
                    return Err(AddrdError::Unexpected {
                        request: "where_is",
                        response: "location of another address",
                    });
                }
                Ok(Some(Whereabouts {
                    endpoint: location.endpoint,
                    sequence: location.sequence,
                    expires_in: Duration::from_secs(u64::from(location.expires_in_secs)),
                    lease,
                }))
            }
            Response::NotBound => Ok(None),
            other => Err(unexpected("where_is", &other)),
        }
    }

    /// Fetches the whole netmap, page by page, verifying every lease.
    pub async fn netmap(&mut self, authority: &AuthorityKey) -> Result<Netmap, AddrdError> {
        'restart: for _ in 0..NETMAP_RESTARTS {
            let mut netmap = Netmap::default();
            let mut cursor = 0;
            for page_number in 0..MAX_NETMAP_PAGES {
                let request = Request::Netmap {
                    since_version: 0,
                    cursor,
                };
                let page = match self.request(request).await? {
                    Response::Netmap(page) => page,
                    other => return Err(unexpected("netmap", &other)),
                };
                if page_number == 0 {
                    netmap.version = page.version;
                } else if page.version != netmap.version {
                    continue 'restart;
                }
                let now = startup::now().unix;
                for bytes in &page.leases {
                    match SignedLease::verify(bytes, authority, now) {
                        Ok(lease) if PublicKey(lease.lease().public_key) == self.own_key => {}
                        Ok(lease) => netmap.leases.push(lease),
                        Err(e) => netmap.problems.push(format!("netmap lease: {e}")),
                    }
                }
                for removed in &page.removed {
                    if let Removed::Key(key) = removed {
                        netmap.removed.push(*key);
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = next,
                    None => return Ok(netmap),
                }
            }
            return Err(AddrdError::Netmap("more pages than a netmap may have"));
        }
        Err(AddrdError::Netmap(
            "the netmap kept changing while it was read",
        ))
    }

    fn own_lease(&self, bytes: &[u8], authority: &AuthorityKey) -> Result<SignedLease, AddrdError> {
        let lease = SignedLease::verify(bytes, authority, startup::now().unix)
            .map_err(AddrdError::BadLease)?;
        let lease_key = PublicKey(lease.lease().public_key);
        if lease_key != self.own_key {
            return Err(AddrdError::WrongKey {
                lease_key,
                own_key: self.own_key,
            });
        }
        Ok(lease)
    }
}

/// The typed error of an answer that is not the expected one.
fn unexpected(request: &'static str, response: &Response) -> AddrdError {
    match response {
        Response::LoginNeeded { reason } => AddrdError::LoginNeeded { reason: *reason },
        Response::ServerBusy { retry_after_secs } => AddrdError::Busy {
            retry_after_secs: *retry_after_secs,
        },
        Response::Error { code } => AddrdError::Server { code: *code },
        other => AddrdError::Unexpected {
            request,
            response: other.kind_name(),
        },
    }
}

/// Where the netmap cache of the node whose lease is at `lease_file` is:
/// the same path with `.netmap` appended.
pub fn netmap_cache_path(lease_file: &Path) -> PathBuf {
    let mut path = lease_file.as_os_str().to_owned();
    path.push(".netmap");
    PathBuf::from(path)
}

/// Writes `lease` to `path` atomically, mode 0644.
pub fn write_lease_file(path: &Path, lease: &SignedLease) -> std::io::Result<()> {
    write_atomically(path, lease.as_bytes())
}

/// Writes the netmap cache (see the module documentation) atomically,
/// mode 0644.
pub fn write_netmap_cache(path: &Path, leases: &[SignedLease]) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    for lease in leases {
        let encoded = lease.as_bytes();
        let len = u16::try_from(encoded.len())
            .map_err(|_| std::io::Error::other("lease longer than 65535 bytes"))?;
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(encoded);
    }
    write_atomically(path, &bytes)
}

/// Why the netmap cache could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetmapCacheError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not a sequence of length-prefixed leases.
    #[error("{path}: truncated or corrupt at byte {offset}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where.
        offset: usize,
    },
}

/// Most bytes a netmap cache may have (65,536 peers of the largest lease).
const MAX_NETMAP_CACHE_LEN: u64 = 65_536 * (2 + MAX_LEASE_LEN as u64);

/// Reads the netmap cache at `path`: the leases that verify at `now`, and
/// a problem line for each that does not. A missing file is an empty
/// netmap.
pub fn read_netmap_cache(
    path: &Path,
    authority: &AuthorityKey,
    now: UnixTime,
) -> Result<(Vec<SignedLease>, Vec<String>), NetmapCacheError> {
    use std::io::Read as _;
    let io_error = |error| NetmapCacheError::Io {
        path: path.to_owned(),
        error,
    };
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(file) => file
            .take(MAX_NETMAP_CACHE_LEN)
            .read_to_end(&mut bytes)
            .map_err(io_error)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_error(e)),
    };
    let mut leases = Vec::new();
    let mut problems = Vec::new();
    let mut rest = bytes.as_slice();
    let mut offset = 0;
    while !rest.is_empty() {
        let corrupt = || NetmapCacheError::Corrupt {
            path: path.to_owned(),
            offset,
        };
        let (len, tail) = rest.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let len = usize::from(u16::from_be_bytes(*len));
        let lease = tail.get(..len).ok_or_else(corrupt)?;
        match SignedLease::verify(lease, authority, now) {
            Ok(lease) => leases.push(lease),
            Err(e) => problems.push(format!("{}: lease at byte {offset}: {e}", path.display())),
        }
        rest = tail.get(len..).unwrap_or_default();
        offset += 2 + len;
    }
    Ok((leases, problems))
}

/// Write `bytes` to a temporary file next to `path`, sync it, rename it
/// over `path`, mode 0644.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file path"))?
        .to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    let temp = path.with_file_name(name);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmap_cache_path_appends() {
        assert_eq!(
            netmap_cache_path(Path::new("/var/lib/permanet/lease")),
            PathBuf::from("/var/lib/permanet/lease.netmap")
        );
    }

    #[test]
    fn corrupt_netmap_cache_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease.netmap");
        let key = overlay_proto::lease::LeaseAuthority::from_seed([7; 32]).public_key();
        for bytes in [&[0u8][..], &[0, 5, 1, 2][..]] {
            std::fs::write(&path, bytes).unwrap();
            let err = read_netmap_cache(&path, &key, UnixTime::EPOCH).unwrap_err();
            assert!(
                matches!(err, NetmapCacheError::Corrupt { offset: 0, .. }),
                "{err}"
            );
        }
        std::fs::write(&path, [0u8, 3, 1, 2, 3]).unwrap();
        let (leases, problems) = read_netmap_cache(&path, &key, UnixTime::EPOCH).unwrap();
        assert!(leases.is_empty());
        assert_eq!(problems.len(), 1);
        let missing = dir.path().join("none");
        assert!(read_netmap_cache(&missing, &key, UnixTime::EPOCH)
            .unwrap()
            .0
            .is_empty());
    }
}
