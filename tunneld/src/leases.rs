//! Where this node's lease and its netmap (its peers' leases) come from,
//! and keeping them fresh.
//!
//! A [`LeaseSource`] answers one question, [`LeaseSource::fetch`]: "the
//! current lease of this node and of its peers". Two sources exist:
//! - [`FileLeaseSource`]: the files the config names (`lease-file`,
//!   `peers[i].lease-file`), re-read and verified on every fetch, so an
//!   external tool that rewrites the files keeps the daemon running past
//!   its first lease's expiry;
//! - [`AddrdLeaseSource`]: renewal and netmap refresh through addrd, after
//!   `tunneld login` wrote the first lease. `docs/architecture.md`
//!   ("Leases from addrd") is its design.
//!
//! [`maintain`] drives a source for a running daemon: it asks for a
//! renewal at [`RenewalPolicy::renew_at`] of the lease's lifetime (with
//! jitter, so a fleet issued at the same moment does not renew at the same
//! moment), retries with exponential backoff while the source fails or has
//! nothing newer, warns loudly once the lease is within
//! [`RenewalPolicy::warn_within`] of its end, and reports the expiry (the
//! node itself stops using an expired lease: handshakes are refused with
//! `local_lease_unusable`). Each renewal reaches the node the way a SIGHUP
//! reload does: a [`ChangeSet`] applied by the data plane between packets
//! ([`TunnelHandle::update`]).
//!
//! When to try is decided by [`RenewalSchedule`], a small state machine
//! without a clock (time comes in as an argument), so its tests run on a
//! fake clock.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use overlay_proto::authority::LoginNeededReason;

use overlay_proto::handshake::PublicKey;
use overlay_proto::lease::{AuthorityKey, Lease, SignedLease};
use overlay_proto::time::UnixTime;
use rand::Rng;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::addrd::{self, AddrdClient, AddrdError};
use crate::config::{Addrd, Config, Problem};
use crate::dataplane::{TunnelHandle, UpdateSource};
use crate::names::LeaseResolver;
use crate::reload::{ChangeSet, PeerSettings, PeerUpdate, ReloadError};
use crate::startup;

/// Leases as a source has them now.
#[derive(Clone, Debug)]
pub struct LeaseSet {
    /// This node's lease, verified.
    pub own: SignedLease,
    /// Its peers' leases, verified (the netmap).
    pub peers: Vec<SignedLease>,
    /// Peers the source no longer lists (an authoritative netmap, as
    /// addrd's will be): removed from the node. Lease files never remove
    /// a peer (SIGHUP does).
    pub removed: Vec<PublicKey>,
    /// Peer leases that could not be used this time, and why (logged; the
    /// node keeps the lease it holds until it expires).
    pub problems: Vec<String>,
    /// Peers the node should hold (addrd's netmap): added with these
    /// settings ([`netmap_peer_settings`]) if it does not hold them,
    /// renewed if it does. `peers` only renews (lease files: a peer is
    /// added by SIGHUP).
    pub new_peers: Vec<(SignedLease, PeerSettings)>,
}

/// Why a fetch gave no usable lease for this node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseSourceError {
    /// This node's lease file could not be read or verified.
    #[error("lease-file: {0}")]
    File(Problem),
    /// The lease is for another key.
    #[error(
        "lease-file: {path}: the lease is for public key {lease_key}, not this node's {own_key}"
    )]
    WrongKey {
        /// The file.
        path: PathBuf,
        /// The key in the lease.
        lease_key: PublicKey,
        /// This node's key.
        own_key: PublicKey,
    },
    /// addrd could not be asked, or gave no usable answer.
    #[error("addrd: {0}")]
    Addrd(AddrdError),
    /// addrd will not renew the lease: a user must run `tunneld login`.
    #[error("login needed: addrd will not renew this lease ({reason:?}); run `tunneld login`")]
    LoginNeeded {
        /// addrd's reason.
        reason: LoginNeededReason,
    },
}

/// Where this node's lease and its netmap come from. See the module
/// documentation.
pub trait LeaseSource: Send {
    /// The current leases, verified at `now`. Called at start-up and for
    /// each renewal and netmap refresh.
    fn fetch(
        &mut self,
        now: UnixTime,
    ) -> impl Future<Output = Result<LeaseSet, LeaseSourceError>> + Send;

    /// What to call it in logs ("lease files", "addrd").
    fn name(&self) -> &'static str;
}

/// The lease files a config names: what [`FileLeaseSource`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFiles {
    /// `authority-key`.
    pub authority: AuthorityKey,
    /// This node's static key: the lease must be for it.
    pub own_key: PublicKey,
    /// `lease-file`.
    pub own: PathBuf,
    /// `peers[i].lease-file`.
    pub peers: Vec<PathBuf>,
}

impl LeaseFiles {
    /// The files `config` names, for the node whose key is `own_key`.
    pub fn of(config: &Config, own_key: PublicKey) -> Self {
        LeaseFiles {
            authority: config.authority_key,
            own_key,
            own: config.lease_file.clone(),
            peers: config.peers.iter().map(|p| p.lease_file.clone()).collect(),
        }
    }
}

/// Leases from the files the config names, re-read on every fetch. The
/// daemon publishes the paths through a `watch` channel so that a SIGHUP
/// that changes them redirects renewals too.
#[derive(Debug)]
pub struct FileLeaseSource {
    files: watch::Receiver<LeaseFiles>,
}

impl FileLeaseSource {
    /// A source reading the files `files` holds at each fetch.
    pub fn new(files: watch::Receiver<LeaseFiles>) -> Self {
        FileLeaseSource { files }
    }
}

impl LeaseSource for FileLeaseSource {
    async fn fetch(&mut self, now: UnixTime) -> Result<LeaseSet, LeaseSourceError> {
        let files = self.files.borrow().clone();
        let own = startup::read_lease_file(&files.authority, &files.own, now)
            .map_err(LeaseSourceError::File)?;
        let lease_key = PublicKey(own.lease().public_key);
        if lease_key != files.own_key {
            return Err(LeaseSourceError::WrongKey {
                path: files.own.clone(),
                lease_key,
                own_key: files.own_key,
            });
        }
        let mut peers = Vec::with_capacity(files.peers.len());
        let mut problems = Vec::new();
        for (i, path) in files.peers.iter().enumerate() {
            match startup::read_lease_file(&files.authority, path, now) {
                Ok(lease) => peers.push(lease),
                Err(problem) => problems.push(format!("peers[{i}].lease-file: {problem}")),
            }
        }
        Ok(LeaseSet {
            own,
            peers,
            removed: Vec::new(),
            problems,
            new_peers: Vec::new(),
        })
    }

    fn name(&self) -> &'static str {
        "lease files"
    }
}

/// Leases from addrd: renewal (`Renew`, no password) then the netmap
/// (`Netmap` pages), every lease verified with `authority-key`. The lease
/// `tunneld login` wrote is where it starts; each renewed lease and each
/// netmap is written back to `lease-file` and its netmap cache
/// ([`crate::addrd`]), so a restarted daemon starts from the newest. A
/// `LoginNeeded` answer is [`LeaseSourceError::LoginNeeded`], published on
/// [`AddrdLeaseSource::login_needed`] for `status`. Peers in the netmap are
/// added to the node ([`LeaseSet::adds_peers`]) and taught to the names
/// resolver, if one is given.
#[derive(Debug)]
pub struct AddrdLeaseSource {
    client: AddrdClient,
    authority: AuthorityKey,
    held: SignedLease,
    lease_file: PathBuf,
    resolver: Option<Arc<LeaseResolver>>,
    login_needed: watch::Sender<Option<LoginNeededReason>>,
    /// Keys of the `[[peers]]` the config names: their settings are the
    /// config's, so the netmap only renews their leases.
    configured: watch::Receiver<Vec<PublicKey>>,
    /// Keys of the peers the last netmap (or the cache read at start-up)
    /// listed: one missing from the next full netmap is removed.
    netmap_keys: Vec<PublicKey>,
}

impl AddrdLeaseSource {
    /// A source renewing `held` (the lease read from `lease_file` at
    /// start-up) through `client`.
    pub fn new(
        client: AddrdClient,
        authority: AuthorityKey,
        held: SignedLease,
        lease_file: PathBuf,
    ) -> Self {
        AddrdLeaseSource {
            client,
            authority,
            held,
            lease_file,
            resolver: None,
            login_needed: watch::channel(None).0,
            configured: watch::channel(Vec::new()).1,
            netmap_keys: Vec::new(),
        }
    }

    /// The peers the node took from the netmap cache at start-up: those
    /// the first netmap no longer lists are removed.
    pub fn with_netmap_peers(mut self, keys: Vec<PublicKey>) -> Self {
        self.netmap_keys = keys;
        self
    }

    /// The keys of the configured `[[peers]]`, kept current by the daemon
    /// across reloads: the netmap renews their leases but never replaces
    /// their settings.
    pub fn with_configured_peers(mut self, configured: watch::Receiver<Vec<PublicKey>>) -> Self {
        self.configured = configured;
        self
    }

    /// Teach every netmap peer's name to `resolver`.
    pub fn with_resolver(mut self, resolver: Option<Arc<LeaseResolver>>) -> Self {
        self.resolver = resolver;
        self
    }

    /// `Some(reason)` while addrd refuses to renew until a new login.
    pub fn login_needed(&self) -> watch::Receiver<Option<LoginNeededReason>> {
        self.login_needed.subscribe()
    }
}

impl LeaseSource for AddrdLeaseSource {
    async fn fetch(&mut self, _now: UnixTime) -> Result<LeaseSet, LeaseSourceError> {
        // A `tunneld login` since the last fetch wrote a newer lease: renew
        // that one (the held one may be the reason addrd said LoginNeeded).
        if let Ok(on_disk) =
            startup::read_lease_file(&self.authority, &self.lease_file, startup::now().unix)
        {
            if on_disk.lease().public_key == self.held.lease().public_key
                && is_renewal(self.held.lease(), on_disk.lease())
            {
                self.held = on_disk;
            }
        }
        let own = match self.client.renew(&self.held, &self.authority).await {
            Ok(lease) => lease,
            Err(AddrdError::LoginNeeded { reason }) => {
                self.login_needed.send_replace(Some(reason));
                return Err(LeaseSourceError::LoginNeeded { reason });
            }
            Err(e) => return Err(LeaseSourceError::Addrd(e)),
        };
        self.login_needed.send_replace(None);
        let mut problems = Vec::new();
        if let Err(e) = addrd::write_lease_file(&self.lease_file, &own) {
            problems.push(format!(
                "renewed lease not saved to {}: {e}",
                self.lease_file.display()
            ));
        }
        self.held = own.clone();
        let netmap = self
            .client
            .netmap(&self.authority)
            .await
            .map_err(LeaseSourceError::Addrd)?;
        problems.extend(netmap.problems);
        let cache = addrd::netmap_cache_path(&self.lease_file);
        if let Err(e) = addrd::write_netmap_cache(&cache, &netmap.leases) {
            problems.push(format!("netmap not saved to {}: {e}", cache.display()));
        }
        if let Some(resolver) = &self.resolver {
            resolver.learn(own.lease());
            for lease in &netmap.leases {
                resolver.learn(lease.lease());
            }
        }
        let configured = self.configured.borrow().clone();
        let listed: Vec<PublicKey> = netmap
            .leases
            .iter()
            .map(|lease| PublicKey(lease.lease().public_key))
            .collect();
        // The netmap is the whole list (fetched from version 0): a peer it
        // brought before and no longer lists is gone, unless configured.
        let mut removed = netmap.removed;
        removed.extend(
            self.netmap_keys
                .iter()
                .filter(|key| !listed.contains(key) && !configured.contains(key)),
        );
        removed.retain(|key| !configured.contains(key));
        removed.sort_unstable_by_key(|key| *key.as_bytes());
        removed.dedup();
        self.netmap_keys = listed;
        let (peers, new_peers): (Vec<SignedLease>, Vec<SignedLease>) = netmap
            .leases
            .into_iter()
            .partition(|lease| configured.contains(&PublicKey(lease.lease().public_key)));
        let addrd = self.client.addrd();
        let new_peers = new_peers
            .into_iter()
            .map(|lease| {
                let settings = netmap_peer_settings(&lease, Some(&addrd));
                (lease, settings)
            })
            .collect();
        Ok(LeaseSet {
            own,
            peers,
            removed,
            problems,
            new_peers,
        })
    }

    fn name(&self) -> &'static str {
        "addrd"
    }
}

/// The change that gives the node the peers of the netmap cache `tunneld
/// login` (or the daemon's last netmap refresh) wrote next to `lease-file`:
/// each verified lease is added, or renews the peer the node holds. A lease
/// of this node's key is left out; one of a statically configured peer
/// (`[[peers]]`, whose settings SIGHUP owns) only renews it. Returns the change and a line
/// per lease or file that could not be used.
pub fn netmap_cache_change(
    config: &Config,
    own_key: PublicKey,
    now: UnixTime,
) -> (ChangeSet, Vec<String>) {
    let path = addrd::netmap_cache_path(&config.lease_file);
    let (leases, mut problems) = match addrd::read_netmap_cache(&path, &config.authority_key, now) {
        Ok(read) => read,
        Err(e) => (Vec::new(), vec![e.to_string()]),
    };
    let mut configured = Vec::with_capacity(config.peers.len());
    for peer in &config.peers {
        match startup::read_lease_file(&config.authority_key, &peer.lease_file, now) {
            Ok(lease) => configured.push(lease.lease().public_key),
            Err(problem) => problems.push(problem.to_string()),
        }
    }
    let peers = leases
        .into_iter()
        .filter(|lease| lease.lease().public_key != *own_key.as_bytes())
        .map(|lease| {
            // A configured peer keeps its settings: its lease is renewed.
            let settings = (!configured.contains(&lease.lease().public_key))
                .then(|| netmap_peer_settings(&lease, config.addrd.as_ref()));
            PeerUpdate { lease, settings }
        })
        .collect();
    let change = ChangeSet {
        peers,
        ..ChangeSet::default()
    };
    (change, problems)
}

/// The settings of a peer a netmap adds. addrd's home agent (the lease of
/// addrd's pinned static key, which every user's netmap carries first) is
/// reached at `addrd.endpoint` with the client keepalive (25 s): the
/// keepalives keep this node's binding in addrd's cache and its NAT
/// mapping alive, and addrd's overlay address answers DNS. Any other peer
/// gets no endpoint (its 6to4 address gives it) and the node's default
/// keepalive.
pub fn netmap_peer_settings(lease: &SignedLease, addrd: Option<&Addrd>) -> PeerSettings {
    match addrd {
        Some(addrd) if lease.lease().public_key == *addrd.public_key.as_bytes() => PeerSettings {
            endpoint: Some(addrd.endpoint),
            persistent_keepalive: Some(crate::config::DEFAULT_CLIENT_KEEPALIVE),
        },
        _ => PeerSettings {
            endpoint: None,
            persistent_keepalive: None,
        },
    }
}

/// When to renew, how to retry, when to warn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenewalPolicy {
    /// Renew at this fraction of the lease's lifetime (0..1).
    pub renew_at: f64,
    /// Spread of the renewal time, as a fraction of the lifetime (the
    /// renewal falls uniformly in `renew_at ± jitter`).
    pub jitter: f64,
    /// First retry after a failed or fruitless renewal.
    pub retry_initial: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// Warn on every failed renewal once the lease ends within this
    /// fraction of its lifetime.
    pub warn_within: f64,
}

impl Default for RenewalPolicy {
    /// Renew at half the lifetime ± 10 %, retry from 1 s doubling up to
    /// 60 s, warn in the last 20 % (12 minutes of a one-hour lease).
    fn default() -> Self {
        RenewalPolicy {
            renew_at: 0.5,
            jitter: 0.1,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            warn_within: 0.2,
        }
    }
}

/// How pressing a failed renewal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// Time enough left.
    Calm,
    /// The lease ends within the warning window: `remaining` is left.
    ExpiresSoon {
        /// Time until the lease's `not_after`.
        remaining: Duration,
    },
    /// The lease has ended: the node cannot use it any more.
    Expired,
}

/// When to try the next renewal. See the module documentation.
#[derive(Clone, Debug)]
pub struct RenewalSchedule {
    policy: RenewalPolicy,
    /// Failed or fruitless attempts since the last renewal.
    failures: u32,
    next: UnixTime,
}

impl RenewalSchedule {
    /// The schedule for a node holding `lease`.
    pub fn new(policy: RenewalPolicy, lease: &Lease, rng: &mut impl Rng) -> Self {
        let mut schedule = RenewalSchedule {
            policy,
            failures: 0,
            next: UnixTime::EPOCH,
        };
        schedule.next = schedule.renewal_time(lease, rng);
        schedule
    }

    /// When the next attempt is due.
    pub fn next_attempt(&self) -> UnixTime {
        self.next
    }

    /// Failed or fruitless attempts since the last renewal.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A newer lease arrived: the next renewal is due in its lifetime.
    pub fn renewed(&mut self, lease: &Lease, rng: &mut impl Rng) {
        self.failures = 0;
        self.next = self.renewal_time(lease, rng);
    }

    /// An attempt at `now` failed or found nothing newer than `held`:
    /// retry after the backoff (never later than the lease's end, so the
    /// expiry is noticed on time) and say how pressing it is.
    pub fn failed(&mut self, held: &Lease, now: UnixTime, rng: &mut impl Rng) -> Urgency {
        let exponent = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let backoff = self
            .policy
            .retry_initial
            .saturating_mul(1 << exponent)
            .min(self.policy.retry_max);
        // Up to a quarter more, so retries of many nodes spread out.
        let backoff = backoff + backoff.mul_f64(rng.gen_range(0.0..0.25));
        let retry = now.saturating_add(backoff);
        if now >= held.not_after {
            self.next = retry;
            return Urgency::Expired;
        }
        self.next = retry.min(held.not_after);
        let remaining = held.not_after.as_duration() - now.as_duration();
        let window = lifetime(held).mul_f64(self.policy.warn_within.clamp(0.0, 1.0));
        if remaining <= window {
            Urgency::ExpiresSoon { remaining }
        } else {
            Urgency::Calm
        }
    }

    fn renewal_time(&self, lease: &Lease, rng: &mut impl Rng) -> UnixTime {
        let p = &self.policy;
        let jitter = p.jitter.clamp(0.0, 0.5);
        let low = (p.renew_at - jitter).clamp(0.0, 1.0);
        let high = (p.renew_at + jitter).clamp(low, 1.0);
        let fraction = if high > low {
            rng.gen_range(low..high)
        } else {
            low
        };
        lease
            .not_before
            .saturating_add(lifetime(lease).mul_f64(fraction))
    }
}

/// A lease's validity period.
fn lifetime(lease: &Lease) -> Duration {
    lease
        .not_after
        .as_duration()
        .saturating_sub(lease.not_before.as_duration())
}

/// Whether `new` renews `held`: same key and prefix, and it lasts longer
/// (or, at equal end, has a higher serial).
fn is_renewal(held: &Lease, new: &Lease) -> bool {
    new.public_key == held.public_key
        && new.prefix == held.prefix
        && new.serial >= held.serial
        && (new.not_after > held.not_after
            || (new.not_after == held.not_after && new.serial > held.serial))
}

/// Keep the running node's leases fresh from `source` until the tunnel
/// stops. `held` is the lease the node started with; `seed` feeds the
/// jitter.
pub async fn maintain<S: LeaseSource>(
    mut source: S,
    handle: TunnelHandle,
    held: SignedLease,
    policy: RenewalPolicy,
    seed: u64,
) {
    use rand::SeedableRng;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut held = held;
    let mut schedule = RenewalSchedule::new(policy, held.lease(), &mut rng);
    loop {
        let now = startup::now().unix;
        let wait = schedule
            .next_attempt()
            .as_duration()
            .saturating_sub(now.as_duration());
        tokio::time::sleep(wait).await;
        let now = startup::now().unix;
        let fetched = source.fetch(now).await;
        let outcome = match fetched {
            Ok(set) => {
                for problem in &set.problems {
                    warn!(source = source.name(), "netmap refresh: {problem}");
                }
                match refresh_peers(&handle, set.peers, set.new_peers, set.removed).await {
                    Err(ReloadError::Stopped) => return,
                    Err(e) => warn!(source = source.name(), "netmap refresh refused: {e}"),
                    Ok(_) => {}
                }
                if is_renewal(held.lease(), set.own.lease()) {
                    let change = ChangeSet {
                        local_lease: Some(set.own.clone()),
                        ..ChangeSet::default()
                    };
                    match handle.update(change, UpdateSource::Leases).await {
                        Ok(_) => Ok(set.own),
                        Err(ReloadError::Stopped) => return,
                        Err(e) => Err(e.to_string()),
                    }
                } else {
                    Err(format!(
                        "no newer lease yet (held: serial {}, valid until unix time {})",
                        held.lease().serial,
                        held.lease().not_after.as_secs()
                    ))
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(lease) => {
                info!(
                    source = source.name(),
                    serial = lease.lease().serial,
                    not_after = lease.lease().not_after.as_secs(),
                    "lease renewed"
                );
                schedule.renewed(lease.lease(), &mut rng);
                held = lease;
            }
            Err(why) => {
                let urgency = schedule.failed(held.lease(), now, &mut rng);
                let retry = schedule
                    .next_attempt()
                    .as_secs()
                    .saturating_sub(now.as_secs());
                match urgency {
                    Urgency::Calm => {
                        info!(
                            source = source.name(),
                            retry_in_secs = retry,
                            "lease not renewed yet: {why}"
                        );
                    }
                    Urgency::ExpiresSoon { remaining } => warn!(
                        source = source.name(),
                        expires_in_secs = remaining.as_secs(),
                        retry_in_secs = retry,
                        "THIS NODE'S LEASE EXPIRES SOON AND WAS NOT RENEWED: {why}"
                    ),
                    Urgency::Expired => error!(
                        source = source.name(),
                        retry_in_secs = retry,
                        "THIS NODE'S LEASE HAS EXPIRED: no new tunnel can be set up until it \
                         is renewed: {why}"
                    ),
                }
            }
        }
    }
}

/// Give known peers their refreshed leases, add or renew `new_peers`, and
/// remove the ones the source dropped. A lease in `peers` never adds a
/// peer: a renewal for a peer the node does not hold is skipped
/// ([`PeerUpdate::settings`]); one in `new_peers` is added with its
/// settings.
async fn refresh_peers(
    handle: &TunnelHandle,
    peers: Vec<SignedLease>,
    new_peers: Vec<(SignedLease, PeerSettings)>,
    removed: Vec<PublicKey>,
) -> Result<crate::reload::Applied, ReloadError> {
    if peers.is_empty() && new_peers.is_empty() && removed.is_empty() {
        return Ok(crate::reload::Applied::default());
    }
    let renewals = peers.into_iter().map(|lease| PeerUpdate {
        lease,
        settings: None,
    });
    let additions = new_peers.into_iter().map(|(lease, settings)| PeerUpdate {
        lease,
        settings: Some(settings),
    });
    let change = ChangeSet {
        peers: renewals.chain(additions).collect(),
        remove: removed,
        ..ChangeSet::default()
    };
    handle.update(change, UpdateSource::Leases).await
}

#[cfg(test)]
mod tests;
