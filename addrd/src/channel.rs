//! The login channel: overlay-proto's authority protocol served on addrd's
//! UDP `listen` address (DESIGN §7, issue #4).
//!
//! [`LoginChannel`] owns the UDP socket and the sans-IO
//! [`AuthorityServer`] (Noise IK with the `static-key-file` key, sessions,
//! cookies, the answer cache). The socket loop only decrypts and
//! encrypts: every [`Incoming`] request runs as its own tokio task (a
//! login may take an Argon2 check or an LDAP bind) and hands its answer
//! back to the loop, which seals and sends it.
//!
//! - **Login**: [`LoginGuard::admit`] first (a delay, lockout or busy
//!   guard answers `LoginRefused` at once); then [`Service::login`]; the
//!   outcome is recorded in the guard and written to the [`AuditLog`].
//!   Every refusal — unknown user, wrong or empty password, disabled
//!   account, guard — is the one `LoginRefused { retry_after_secs }`, and
//!   no answer to an admitted attempt leaves before
//!   [`Ticket::answer_not_before`](crate::guard::Ticket::answer_not_before)
//!   (the timing floor). A directory that cannot be asked answers
//!   `ServerBusy`: never a refusal that looks like a wrong password.
//! - **Renew**: the lease presented must carry the authority's signature
//!   and the channel's key; then [`Service::renew`] (session, revocation,
//!   maximum age, the directory read again: a disabled or removed entity
//!   gets `LoginNeeded`, a regrouped one a lease with its new groups).
//! - **Netmap**: the session's user's netmap ([`crate::issuer::Netmap`]),
//!   paged with [`fill_netmap_page`]. Its version is a hash of the leases'
//!   serials, so any change (a new, renewed or vanished lease) changes it;
//!   a client whose `since_version` is current gets an empty page, any
//!   other gets the whole netmap (no removal lists: the client replaces
//!   what it holds).
//!
//! - **WhereIs** (servers locating an entity, DESIGN §6): the asker's own
//!   lease must verify, be for the channel's key and be a system's or an
//!   application's; a user is located only for a server hosting an
//!   application the user's groups may reach (or for an application on
//!   such a server). The answer is the home agent's binding (endpoint,
//!   sequence, time left, the lease that authenticated it) or `NotBound`;
//!   anyone else gets `Error(NotAuthorized)`.
//!
//! The same socket carries the home agent ([`crate::homeagent`], when the
//! channel is given an [`Overlay`]): every datagram that is not an
//! authority message goes to addrd's own tunnel node. DNS queries that
//! arrive through it are answered from the zone in their own task; the
//! loop renews addrd's own lease at a third of its lifetime. Users'
//! netmaps carry that lease first, so a logged-in terminal reaches addrd
//! on the overlay.
//!
//! Counters of the channel, the server, the guard, the audit log and the
//! home agent are in [`ChannelHandle::counters`] (the control socket's
//! `status`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use blake2::{Blake2b512, Digest as _};
use ipnet::Ipv6Net;
use overlay_proto::authority::{
    fill_netmap_page, AuthorityServer, ErrorCode, Incoming, Location, LoginNeededReason,
    NetmapPage, Password as WirePassword, Request, Response, SessionId, TARGET_RECORD_LEN,
};
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{EntityKind, SignedLease};
use overlay_proto::time::{Now, UnixTime};
use overlay_proto::wire::{self, DatagramKind, MessageType};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use zeroize::Zeroizing;

use crate::audit::{AuditEvent, AuditLog, LoginRefusal, RenewalRefusal};
use crate::backend::Backend;
use crate::bindings::BindingCache;
use crate::directory::{AuthError, Directory as _, RefusalReason};
use crate::dns::ZoneHandle;
use crate::guard::{Admission, GuardConfig, LoginGuard, Outcome};
use crate::homeagent::{DnsQuery, HomeAgent};
use crate::issuer::{reachable_systems, IssueError, Netmap};
use crate::service::{Service, ServiceError};

/// `retry_after` of a `ServerBusy` answer when the directory is down.
pub const DIRECTORY_BUSY_RETRY: Duration = Duration::from_secs(5);

/// Largest datagram read (the channel's are at most 2148 bytes).
const RECV_BUFFER_LEN: usize = 65_536;

/// The login channel could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The UDP socket could not be bound.
    #[error("binding the login channel to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// addrd's node on the overlay, served on the channel's socket (see the
/// module documentation).
#[derive(Debug)]
pub struct Overlay {
    /// The node, bindings and host.
    pub home: HomeAgent,
    /// The zone answered on addrd's overlay address (`None`: no DNS
    /// there).
    pub zone: Option<ZoneHandle>,
    /// The prefix of addrd's own lease, renewed by the channel.
    pub prefix: Ipv6Net,
}

/// The running overlay part.
struct OverlayState {
    home: Mutex<HomeAgent>,
    bindings: Arc<Mutex<BindingCache>>,
    zone: Option<ZoneHandle>,
    prefix: Ipv6Net,
    public_key: PublicKey,
    renew_at: Mutex<Instant>,
}

/// The bound login channel. [`LoginChannel::serve`] runs it.
#[derive(Debug)]
pub struct LoginChannel {
    socket: UdpSocket,
    shared: Arc<Shared>,
}

/// A view of a running channel, for the control socket.
#[derive(Clone, Debug)]
pub struct ChannelHandle {
    shared: Arc<Shared>,
}

struct Shared {
    service: Arc<Service<Backend>>,
    server: Mutex<AuthorityServer>,
    guard: Mutex<LoginGuard>,
    audit: Arc<AuditLog>,
    counters: ChannelCounters,
    overlay: Option<OverlayState>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// What the channel itself counts.
#[derive(Debug, Default)]
struct ChannelCounters {
    datagrams: AtomicU64,
    logins: AtomicU64,
    renewals: AtomicU64,
    netmaps: AtomicU64,
    answers: AtomicU64,
    answers_unsent: AtomicU64,
    send_failures: AtomicU64,
    recv_failures: AtomicU64,
    directory_busy: AtomicU64,
    internal_errors: AtomicU64,
    where_is: AtomicU64,
    where_is_refused: AtomicU64,
    not_authority: AtomicU64,
    own_lease_renewals: AtomicU64,
    own_lease_failures: AtomicU64,
}

/// What a task hands back to the socket loop.
enum Done {
    /// An answer to an authority request.
    Answer {
        session: SessionId,
        incoming_id: overlay_proto::authority::RequestId,
        response: Response,
    },
    /// A DNS answer to send through the tunnel.
    Dns { query: DnsQuery, answer: Vec<u8> },
}

impl LoginChannel {
    /// Binds `listen` and sets up the server with `keypair`, the guard
    /// with `guard`, auditing to `audit`, and the home agent with
    /// `overlay` (`None`: authority messages only; other datagrams are
    /// counted and dropped).
    pub async fn bind(
        listen: SocketAddr,
        keypair: StaticKeypair,
        guard: GuardConfig,
        service: Arc<Service<Backend>>,
        audit: Arc<AuditLog>,
        overlay: Option<Overlay>,
    ) -> Result<LoginChannel, ChannelError> {
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|source| ChannelError::Bind {
                addr: listen,
                source,
            })?;
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let public_key = keypair.public();
        let server = AuthorityServer::new(keypair, None, seed);
        let overlay = overlay.map(|o| {
            let renew_at = own_lease_renewal(o.home.lease());
            OverlayState {
                bindings: Arc::clone(o.home.bindings()),
                home: Mutex::new(o.home),
                zone: o.zone,
                prefix: o.prefix,
                public_key,
                renew_at: Mutex::new(renew_at),
            }
        });
        Ok(LoginChannel {
            socket,
            shared: Arc::new(Shared {
                service,
                server: Mutex::new(server),
                guard: Mutex::new(LoginGuard::new(guard)),
                audit,
                counters: ChannelCounters::default(),
                overlay,
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// A handle for counters.
    pub fn handle(&self) -> ChannelHandle {
        ChannelHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until the future is dropped. Each request runs in its own
    /// task; this loop never waits for one.
    pub async fn serve(self) {
        let LoginChannel { socket, shared } = self;
        let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
        let mut buf = vec![0u8; RECV_BUFFER_LEN];
        loop {
            let deadline = [
                lock(&shared.server).poll_timeout(),
                lock(&shared.guard).poll_timeout(),
                shared
                    .overlay
                    .as_ref()
                    .and_then(|o| lock(&o.home).poll_timeout()),
                shared.overlay.as_ref().map(|o| *lock(&o.renew_at)),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep_to = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, src)) => {
                        shared.counters.datagrams.fetch_add(1, Ordering::Relaxed);
                        if let Some(datagram) = buf.get_mut(..len) {
                            shared.datagram(src, datagram, &tx);
                        }
                    }
                    Err(e) => {
                        shared.counters.recv_failures.fetch_add(1, Ordering::Relaxed);
                        debug!(error = %e, "login channel: receive failed");
                    }
                },
                Some(done) = rx.recv() => match done {
                    Done::Answer { session, incoming_id, response } => {
                        let result = lock(&shared.server).respond(now(), session, incoming_id, response);
                        match result {
                            Ok(()) => shared.counters.answers.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                debug!(error = %e, "login channel: answer not sent");
                                shared.counters.answers_unsent.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    Done::Dns { query, answer } => {
                        if let Some(overlay) = &shared.overlay {
                            lock(&overlay.home).send_dns_answer(now(), &query, &answer);
                        }
                    }
                },
                () = tokio::time::sleep_until(sleep_to.into()) => {
                    let now = now();
                    lock(&shared.server).handle_timeout(now);
                    shared.guard_timeout();
                    if let Some(overlay) = &shared.overlay {
                        lock(&overlay.home).handle_timeout(now);
                        shared.renew_own_lease(overlay, now);
                    }
                }
            }
            let mut transmits: Vec<_> = {
                let mut server = lock(&shared.server);
                std::iter::from_fn(|| server.poll_transmit()).collect()
            };
            if let Some(overlay) = &shared.overlay {
                let mut home = lock(&overlay.home);
                transmits.extend(std::iter::from_fn(|| home.poll_transmit()));
            }
            for transmit in transmits {
                if let Err(e) = socket
                    .send_to(&transmit.contents, transmit.destination)
                    .await
                {
                    shared
                        .counters
                        .send_failures
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(error = %e, to = %transmit.destination, "login channel: send failed");
                }
            }
        }
    }
}

impl ChannelHandle {
    /// Every counter of the channel, its server, the guard and the audit
    /// log, by label (`channel.*`, `server.*`, `guard.*`, `audit.*`).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let c = &self.shared.counters;
        for (label, value) in [
            ("datagrams", &c.datagrams),
            ("logins", &c.logins),
            ("renewals", &c.renewals),
            ("netmaps", &c.netmaps),
            ("answers", &c.answers),
            ("answers_unsent", &c.answers_unsent),
            ("send_failures", &c.send_failures),
            ("recv_failures", &c.recv_failures),
            ("directory_busy", &c.directory_busy),
            ("internal_errors", &c.internal_errors),
            ("where_is", &c.where_is),
            ("where_is_refused", &c.where_is_refused),
            ("not_authority", &c.not_authority),
            ("own_lease_renewals", &c.own_lease_renewals),
            ("own_lease_failures", &c.own_lease_failures),
        ] {
            out.insert(format!("channel.{label}"), value.load(Ordering::Relaxed));
        }
        {
            let server = lock(&self.shared.server);
            let s = server.counters();
            out.insert("server.sessions".into(), server.sessions() as u64);
            out.insert("server.handshakes".into(), s.handshakes);
            out.insert("server.requests".into(), s.requests);
            out.insert("server.duplicates_answered".into(), s.duplicates_answered);
            out.insert("server.cookie_replies_sent".into(), s.cookie_replies_sent);
            out.insert("server.sessions_evicted".into(), s.sessions_evicted);
            for (reason, count) in s.iter_drops() {
                out.insert(format!("server.drop.{}", reason.as_str()), count);
            }
        }
        for (label, value) in lock(&self.shared.guard).counters().labelled() {
            out.insert(format!("guard.{label}"), value);
        }
        for (label, value) in self.shared.audit.counters().labelled() {
            out.insert(format!("audit.{label}"), value);
        }
        if let Some(overlay) = &self.shared.overlay {
            out.extend(lock(&overlay.home).counters());
        }
        out
    }

    /// addrd's overlay address, when the home agent runs.
    pub fn overlay_address(&self) -> Option<std::net::Ipv6Addr> {
        let overlay = self.shared.overlay.as_ref()?;
        Some(lock(&overlay.home).address())
    }
}

impl Shared {
    /// One received datagram: an authority message to the server, anything
    /// else to the home agent.
    fn datagram(
        self: &Arc<Self>,
        src: SocketAddr,
        datagram: &mut [u8],
        tx: &mpsc::UnboundedSender<Done>,
    ) {
        if is_authority_message(datagram) {
            let incoming = lock(&self.server).handle_datagram(now(), src, datagram);
            if let Some(incoming) = incoming {
                let shared = Arc::clone(self);
                let tx = tx.clone();
                tokio::spawn(async move { shared.execute(incoming, tx).await });
            }
            return;
        }
        let Some(overlay) = &self.overlay else {
            self.counters.not_authority.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let query = lock(&overlay.home).handle_datagram(now(), src, datagram);
        if let (Some(query), Some(zone)) = (query, overlay.zone.clone()) {
            let tx = tx.clone();
            tokio::spawn(async move {
                let client = SocketAddr::V6(query.client);
                if let Some(answer) = zone.answer_udp(&query.message, client).await {
                    // The loop has stopped only when the daemon is stopping.
                    let _ = tx.send(Done::Dns { query, answer });
                }
            });
        }
    }

    /// Renew addrd's own lease when it is due (a failure is retried at
    /// the next timer).
    fn renew_own_lease(&self, overlay: &OverlayState, now: Now) {
        let mut renew_at = lock(&overlay.renew_at);
        if now.instant < *renew_at {
            return;
        }
        match self
            .service
            .issuer()
            .authority_lease(overlay.public_key, overlay.prefix, now.unix)
        {
            Ok(lease) => {
                *renew_at = own_lease_renewal(&lease);
                lock(&overlay.home).set_lease(lease);
                self.counters
                    .own_lease_renewals
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                *renew_at = now.instant + OWN_LEASE_RETRY;
                self.counters
                    .own_lease_failures
                    .fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "renewing addrd's own lease failed");
            }
        }
    }

    /// `netmap` with addrd's own lease first, for a user's netmap.
    fn with_own_lease(&self, mut netmap: Netmap, kind: EntityKind) -> Netmap {
        if kind == EntityKind::User {
            if let Some(overlay) = &self.overlay {
                netmap.leases.insert(0, lock(&overlay.home).lease().clone());
            }
        }
        netmap
    }

    async fn execute(self: Arc<Self>, incoming: Incoming, tx: mpsc::UnboundedSender<Done>) {
        let Incoming {
            session,
            client_key,
            src,
            request_id,
            request,
        } = incoming;
        let (response, not_before) = match request {
            Request::Login { user, password } => {
                self.counters.logins.fetch_add(1, Ordering::Relaxed);
                self.login(&user, &password, client_key, src.ip()).await
            }
            Request::Renew { lease } => {
                self.counters.renewals.fetch_add(1, Ordering::Relaxed);
                (self.renew(&lease, client_key, src.ip()).await, None)
            }
            Request::Netmap {
                since_version,
                cursor,
            } => {
                self.counters.netmaps.fetch_add(1, Ordering::Relaxed);
                (self.netmap(client_key, since_version, cursor).await, None)
            }
            Request::WhereIs { lease, address } => {
                self.counters.where_is.fetch_add(1, Ordering::Relaxed);
                let response = self.where_is(&lease, address, client_key);
                if matches!(
                    response,
                    Response::Error { .. } | Response::LoginNeeded { .. }
                ) {
                    self.counters
                        .where_is_refused
                        .fetch_add(1, Ordering::Relaxed);
                }
                (response, None)
            }
        };
        if let Some(at) = not_before {
            tokio::time::sleep_until(at.into()).await;
        }
        // The loop has stopped only when the daemon is stopping.
        let _ = tx.send(Done::Answer {
            session,
            incoming_id: request_id,
            response,
        });
    }

    /// A login; the answer and the instant before which it must not leave.
    async fn login(
        &self,
        user: &str,
        password: &WirePassword,
        key: PublicKey,
        source: IpAddr,
    ) -> (Response, Option<Instant>) {
        let admission = lock(&self.guard).admit(Instant::now(), user, source);
        let ticket = match admission {
            Admission::Proceed(ticket) => ticket,
            Admission::Wait {
                retry_after,
                reason,
            } => {
                self.audit.record(
                    SystemTime::now(),
                    &AuditEvent::LoginRefused {
                        user,
                        source,
                        key: Some(&key),
                        reason: reason.into(),
                        retry_after,
                    },
                );
                return (refused(retry_after), None);
            }
        };
        let not_before = ticket.answer_not_before();
        let result = match std::str::from_utf8(password.expose()) {
            Ok(text) => {
                let password = Zeroizing::new(text.to_owned());
                self.service.login(user, &password, key, unix_now()).await
            }
            // No directory holds a password that is not UTF-8.
            Err(_) => Err(ServiceError::Auth(AuthError::Refused {
                reason: RefusalReason::WrongPassword,
            })),
        };
        let outcome = match &result {
            Ok(_) => Outcome::Accepted,
            Err(ServiceError::Auth(AuthError::Refused { .. })) => Outcome::Refused,
            Err(_) => Outcome::Unavailable,
        };
        let recorded = lock(&self.guard).record(Instant::now(), ticket, outcome);
        if let Some(lockout) = recorded.lockout {
            self.audit.record(
                SystemTime::now(),
                &AuditEvent::LockoutStarted {
                    user,
                    source,
                    period: lockout.period,
                    count: lockout.count,
                },
            );
        }
        let (response, reason, retry_after) = match result {
            Ok(grant) => {
                let serial = grant.lease.lease().serial;
                self.audit.record(
                    SystemTime::now(),
                    &AuditEvent::LoginAccepted {
                        user,
                        source,
                        key: &key,
                        serial,
                    },
                );
                let netmap = self.with_own_lease(grant.netmap, grant.lease.lease().kind);
                let response = Response::LoginOk {
                    netmap_version: netmap_version(&netmap),
                    lease: grant.lease.into_bytes(),
                };
                return (response, Some(not_before));
            }
            Err(ServiceError::Auth(AuthError::Refused { reason })) => (
                refused(recorded.retry_after),
                LoginRefusal::from(reason),
                recorded.retry_after,
            ),
            Err(e) => {
                let response = self.failure(&e);
                warn!(error = %e, "login failed on addrd's side");
                (
                    response,
                    LoginRefusal::DirectoryUnavailable,
                    DIRECTORY_BUSY_RETRY,
                )
            }
        };
        self.audit.record(
            SystemTime::now(),
            &AuditEvent::LoginRefused {
                user,
                source,
                key: Some(&key),
                reason,
                retry_after,
            },
        );
        (response, Some(not_before))
    }

    /// A renewal of `lease` for the channel's `key`.
    async fn renew(&self, lease: &[u8], key: PublicKey, source: IpAddr) -> Response {
        let authority = self.service.issuer().authority_key();
        let held = match SignedLease::verify_signature_only(lease, &authority) {
            Ok(held) if held.lease().public_key == key.0 => held,
            other => {
                let reason = if other.is_ok() {
                    LoginNeededReason::KeyMismatch
                } else {
                    LoginNeededReason::LeaseExpired
                };
                let name = other
                    .as_ref()
                    .map(|l| l.lease().name.clone())
                    .unwrap_or_default();
                let serial = other.as_ref().map(|l| l.lease().serial).unwrap_or(0);
                self.audit.record(
                    SystemTime::now(),
                    &AuditEvent::RenewalRefused {
                        user: &name,
                        source,
                        key: &key,
                        serial,
                        reason: RenewalRefusal::UnknownLease,
                    },
                );
                return Response::LoginNeeded { reason };
            }
        };
        let previous_serial = held.lease().serial;
        let name = held.lease().name.as_str();
        match self.service.renew(key, unix_now()).await {
            Ok(grant) => {
                self.audit.record(
                    SystemTime::now(),
                    &AuditEvent::RenewalGranted {
                        user: name,
                        source,
                        key: &key,
                        serial: grant.lease.lease().serial,
                        previous_serial,
                    },
                );
                Response::Renewed {
                    lease: grant.lease.into_bytes(),
                }
            }
            Err(e) => {
                let refusal = match &e {
                    ServiceError::NoSession => Some((
                        RenewalRefusal::LeaseExpired,
                        LoginNeededReason::LeaseExpired,
                    )),
                    ServiceError::Revoked(_) => {
                        Some((RenewalRefusal::Revoked, LoginNeededReason::Revoked))
                    }
                    ServiceError::Disabled(_) => {
                        Some((RenewalRefusal::Disabled, LoginNeededReason::AccountDisabled))
                    }
                    ServiceError::Unknown { .. } => {
                        Some((RenewalRefusal::Removed, LoginNeededReason::AccountDisabled))
                    }
                    ServiceError::Issue(IssueError::SessionExpired { .. }) => Some((
                        RenewalRefusal::SessionTooOld,
                        LoginNeededReason::SessionTooOld,
                    )),
                    _ => None,
                };
                let (audit_reason, response) = match refusal {
                    Some((audit, reason)) => (audit, Response::LoginNeeded { reason }),
                    None => {
                        warn!(error = %e, "renewal failed on addrd's side");
                        (RenewalRefusal::DirectoryUnavailable, self.failure(&e))
                    }
                };
                self.audit.record(
                    SystemTime::now(),
                    &AuditEvent::RenewalRefused {
                        user: name,
                        source,
                        key: &key,
                        serial: previous_serial,
                        reason: audit_reason,
                    },
                );
                response
            }
        }
    }

    /// One page of the netmap of the session of `key`.
    async fn netmap(&self, key: PublicKey, since_version: u64, cursor: u64) -> Response {
        let state = self.service.issuer().state();
        let session = match state.session(&key.0) {
            Ok(Some(session)) => session,
            Ok(None) => {
                return Response::LoginNeeded {
                    reason: LoginNeededReason::LeaseExpired,
                }
            }
            Err(e) => return self.failure(&ServiceError::State(e)),
        };
        match self
            .service
            .revocations()
            .revoked_at(session.kind, &session.name)
            .await
        {
            Ok(Some(at)) if at >= session.started => {
                return Response::LoginNeeded {
                    reason: LoginNeededReason::Revoked,
                }
            }
            Ok(_) => {}
            Err(e) => return self.failure(&ServiceError::Revocation(e)),
        }
        let now = unix_now();
        let netmap = if session.kind == EntityKind::User {
            let entity = match self
                .service
                .directory()
                .lookup(session.kind, &session.name)
                .await
            {
                Ok(Some(entity)) if !entity.disabled => entity,
                Ok(_) => {
                    return Response::LoginNeeded {
                        reason: LoginNeededReason::AccountDisabled,
                    }
                }
                Err(e) => return self.failure(&ServiceError::Directory(e)),
            };
            match self
                .service
                .issuer()
                .netmap(&entity, &self.service.snapshot(), now)
            {
                Ok(netmap) => netmap,
                Err(e) => return self.failure(&ServiceError::State(e)),
            }
        } else {
            Netmap {
                authority: self.service.issuer().authority_key(),
                leases: Vec::new(),
            }
        };
        let netmap = self.with_own_lease(netmap, session.kind);
        let version = netmap_version(&netmap);
        let leases: Vec<Vec<u8>> = netmap
            .leases
            .into_iter()
            .map(SignedLease::into_bytes)
            .collect();
        netmap_page(version, &leases, since_version, cursor)
    }

    /// Where is `address`, asked by the holder of `lease` on the channel
    /// of `key`? See the module documentation for who may know.
    fn where_is(&self, lease: &[u8], address: std::net::Ipv6Addr, key: PublicKey) -> Response {
        let authority = self.service.issuer().authority_key();
        let asker = match SignedLease::verify(lease, &authority, unix_now()) {
            Ok(asker) if asker.lease().public_key == key.0 => asker,
            Ok(_) => {
                return Response::LoginNeeded {
                    reason: LoginNeededReason::KeyMismatch,
                }
            }
            Err(_) => {
                return Response::LoginNeeded {
                    reason: LoginNeededReason::LeaseExpired,
                }
            }
        };
        let not_authorized = Response::Error {
            code: ErrorCode::NotAuthorized,
        };
        let asker = asker.lease();
        if asker.kind == EntityKind::User {
            return not_authorized;
        }
        let Some(overlay) = &self.overlay else {
            return Response::NotBound;
        };
        let now = Instant::now();
        let Some(binding) = lock(&overlay.bindings).lookup(now, &address).cloned() else {
            return Response::NotBound;
        };
        let located = binding.lease.lease();
        if located.kind == EntityKind::User {
            let entities = self.service.snapshot();
            let asker_system = match asker.kind {
                EntityKind::Application => entities
                    .iter()
                    .find(|e| e.kind == EntityKind::Application && e.name == asker.name)
                    .and_then(|app| app.system.clone()),
                _ => Some(asker.name.clone()),
            };
            let user = entities
                .iter()
                .find(|e| e.kind == EntityKind::User && e.name == located.name);
            let reachable = match (user, asker_system) {
                (Some(user), Some(system)) => reachable_systems(user, &entities).contains(&system),
                _ => false,
            };
            if !reachable {
                return not_authorized;
            }
        }
        Response::Location(Location {
            endpoint: binding.endpoint,
            sequence: binding.sequence,
            expires_in_secs: secs(binding.remaining(now)),
            lease: binding.lease.as_bytes().to_vec(),
        })
    }

    /// The answer to a failure on addrd's side: busy while the directory
    /// (or the revocation list in it) cannot be asked, else an internal
    /// error.
    fn failure(&self, error: &ServiceError) -> Response {
        let directory = matches!(
            error,
            ServiceError::Auth(AuthError::Unavailable(_))
                | ServiceError::Directory(_)
                | ServiceError::Revocation(_)
        );
        if directory {
            self.counters.directory_busy.fetch_add(1, Ordering::Relaxed);
            Response::ServerBusy {
                retry_after_secs: secs(DIRECTORY_BUSY_RETRY),
            }
        } else {
            self.counters
                .internal_errors
                .fetch_add(1, Ordering::Relaxed);
            Response::Error {
                code: ErrorCode::Internal,
            }
        }
    }

    /// The guard's timers; its lockout ends go to the audit log.
    fn guard_timeout(&self) {
        let events: Vec<_> = {
            let mut guard = lock(&self.guard);
            guard.handle_timeout(Instant::now());
            std::iter::from_fn(|| guard.poll_event()).collect()
        };
        for event in &events {
            self.audit
                .record(SystemTime::now(), &AuditEvent::from(event));
        }
    }
}

/// The netmap's version: a hash of its leases' serials, never 0 (0 means
/// "none" in a request).
pub fn netmap_version(netmap: &Netmap) -> u64 {
    let mut hash = Blake2b512::new();
    hash.update(b"permanet netmap version\0");
    for lease in &netmap.leases {
        hash.update(lease.lease().serial.to_be_bytes());
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 8];
    for (b, d) in bytes.iter_mut().zip(digest.iter()) {
        *b = *d;
    }
    u64::from_be_bytes(bytes).max(1)
}

/// The page of `leases` (netmap `version`) that starts at `cursor`, for a
/// client holding `since_version`: empty when that is current, else the
/// leases from `cursor` that fit a record, with the next page's cursor.
fn netmap_page(version: u64, leases: &[Vec<u8>], since_version: u64, cursor: u64) -> Response {
    if since_version == version && cursor == 0 {
        return Response::Netmap(NetmapPage {
            version,
            ..NetmapPage::default()
        });
    }
    let Some(rest) = usize::try_from(cursor)
        .ok()
        .and_then(|start| leases.get(start..))
    else {
        return Response::Error {
            code: ErrorCode::BadRequest,
        };
    };
    let (mut page, took, _) = fill_netmap_page(version, rest, &[], TARGET_RECORD_LEN);
    if took < rest.len() {
        page.next_cursor = Some(cursor + took as u64);
    }
    Response::Netmap(page)
}

/// Whether `datagram` is an authority-channel message (types
/// `0x04..=0x07`); everything else belongs to the home agent's node.
fn is_authority_message(datagram: &[u8]) -> bool {
    matches!(wire::classify(datagram), Ok(DatagramKind::Control))
        && datagram
            .get(4)
            .and_then(|&t| MessageType::try_from(t).ok())
            .is_some_and(MessageType::is_authority)
}

/// When to renew addrd's own `lease`: at a third of its lifetime, so a
/// terminal that fetched its netmap half a lease ago still holds a valid
/// copy.
fn own_lease_renewal(lease: &SignedLease) -> Instant {
    let lease = lease.lease();
    let lifetime = lease
        .not_after
        .as_duration()
        .saturating_sub(lease.not_before.as_duration());
    Instant::now() + lifetime / 3
}

/// Wait before retrying a failed renewal of addrd's own lease.
const OWN_LEASE_RETRY: Duration = Duration::from_secs(10);

/// The one refusal answer.
fn refused(retry_after: Duration) -> Response {
    Response::LoginRefused {
        retry_after_secs: secs(retry_after),
    }
}

/// Whole seconds, rounded up, at least 1.
fn secs(d: Duration) -> u32 {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(whole.max(1)).unwrap_or(u32::MAX)
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: unix_now(),
    }
}

fn unix_now() -> UnixTime {
    crate::control::now()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn page(response: Response) -> NetmapPage {
        match response {
            Response::Netmap(page) => page,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn netmap_pages_cover_every_lease_once_within_the_target() {
        let leases: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 200]).collect();
        let mut seen = Vec::new();
        let mut cursor = 0;
        let mut pages = 0;
        loop {
            let p = page(netmap_page(7, &leases, 0, cursor));
            assert_eq!(p.version, 7);
            let mut record = vec![0u8; Response::Netmap(p.clone()).buffer_len()];
            let len = Response::Netmap(p.clone())
                .emit(overlay_proto::authority::RequestId(1), &mut record)
                .unwrap();
            assert!(len <= TARGET_RECORD_LEN, "{len}");
            seen.extend(p.leases.iter().cloned());
            pages += 1;
            match p.next_cursor {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert!(pages > 1);
        assert_eq!(seen, leases);
        // Current: an empty page; a cursor past the end: a bad request.
        assert!(page(netmap_page(7, &leases, 7, 0)).leases.is_empty());
        assert_eq!(
            netmap_page(7, &leases, 0, 41),
            Response::Error {
                code: ErrorCode::BadRequest
            }
        );
        assert_eq!(page(netmap_page(7, &leases, 0, 40)).leases.len(), 0);
        assert!(page(netmap_page(7, &[], 0, 0)).leases.is_empty());
    }

    #[test]
    fn netmap_version_follows_the_serials_and_is_never_zero() {
        let authority = overlay_proto::lease::LeaseAuthority::from_seed([3; 32]);
        let lease = |serial: u64| {
            let lease = overlay_proto::lease::Lease {
                kind: EntityKind::System,
                serial,
                not_before: UnixTime::from_secs(1),
                not_after: UnixTime::from_secs(2),
                public_key: [1; 32],
                prefix: "fd00:1:2:3::/64".parse().unwrap(),
                name: "app1".into(),
                dn: "cn=app1,ou=systems,dc=example,dc=org".into(),
                groups: Vec::new(),
            };
            authority.sign(&lease).unwrap()
        };
        let netmap = |serials: &[u64]| Netmap {
            authority: authority.public_key(),
            leases: serials.iter().map(|&s| lease(s)).collect(),
        };
        let empty = netmap_version(&netmap(&[]));
        let one = netmap_version(&netmap(&[5]));
        let renewed = netmap_version(&netmap(&[6]));
        let two = netmap_version(&netmap(&[5, 9]));
        assert_ne!(empty, 0);
        assert_eq!(one, netmap_version(&netmap(&[5])));
        assert_ne!(one, renewed);
        assert_ne!(one, two);
        assert_ne!(empty, one);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(secs(Duration::ZERO), 1);
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_millis(1001)), 2);
        assert_eq!(secs(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
