//! Lease issuing (DESIGN §6): from a directory [`Entity`], the client's
//! X25519 public key and the time, a signed [`Lease`].
//!
//! - **Prefix** by kind: a user's and an application's /128, a system's
//!   whole /64 SVN (its recorded address is the SVN's `::1`). An entity
//!   without an address is given one by the [`Allocator`] first.
//! - **Window**: `not_before` = now. Verifiers already accept a lease up
//!   to [`CLOCK_SKEW`](overlay_proto::lease::CLOCK_SKEW) before its
//!   `not_before`, so backdating would only widen the window twice.
//!   `not_after` = now + `lease-lifetime`, but a user's never past the
//!   session's start + `max-session-age`: a session that has reached its
//!   maximum age gets no lease ([`IssueError::SessionExpired`]). Systems
//!   and applications have no password to ask again, so no maximum age.
//! - **Serial**: `max(last + 1, unix_ms << 16)`. The time part makes
//!   serials grow across restarts and across replicas without any shared
//!   counter (a renewal is issued minutes after the lease it replaces, far
//!   more than replicas' clock differences); the 16 low bits let one
//!   process issue 65,536 leases in one millisecond before the serial runs
//!   ahead of the clock, and `last + 1` keeps them strictly increasing
//!   within a process even then. The highest serial is persisted in the
//!   state file ([`State::record_lease`]), and a restarted issuer starts
//!   above it, so a clock stepped back does not reuse serials. 48 bits
//!   of milliseconds last until the year 10889.
//! - **Lease book**: every lease issued is recorded (per DN, the latest)
//!   with the serial, in the same transaction. [`Issuer::netmap`] reads it:
//!   a user's netmap is the valid leases of the systems hosting the
//!   applications the user's groups may reach.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ipnet::Ipv6Net;
use overlay_proto::handshake::PublicKey;
use overlay_proto::lease::{
    AuthorityKey, EntityKind, Lease, LeaseAuthority, LeaseError, SignedLease,
};
use overlay_proto::time::UnixTime;

use crate::alloc::{AllocError, Allocator};
use crate::directory::{Directory, Entity};
use crate::ldif::normalize_dn;
use crate::state::{State, StateError};

/// Bits of the serial below the milliseconds.
const SERIAL_COUNTER_BITS: u32 = 16;

/// How leases are issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuePolicy {
    /// `lease-lifetime`.
    pub lifetime: Duration,
    /// `max-session-age`.
    pub max_session_age: Duration,
}

/// The name in addrd's own lease ([`Issuer::authority_lease`]).
pub const AUTHORITY_NAME: &str = "addrd";

/// The DN in addrd's own lease: no directory entry, so a name no
/// directory entry has.
pub const AUTHORITY_DN: &str = "cn=addrd,permanet=authority";

/// A lease could not be issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The entity has no address and none could be assigned.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The session reached `max-session-age`: the password is needed again.
    #[error("session of {name} started {age_secs} s ago, past max-session-age")]
    SessionExpired {
        /// The entity.
        name: String,
        /// How old the session is.
        age_secs: u64,
    },
    /// The entity's recorded address does not fit its kind.
    #[error("{dn}: recorded address {address} cannot make a {kind} lease")]
    BadAddress {
        /// The entity.
        dn: String,
        /// The address.
        address: std::net::Ipv6Addr,
        /// Its kind.
        kind: &'static str,
    },
    /// The lease does not fit format v1 (too many or too long groups, a
    /// name that is not a lease name...).
    #[error("{dn}: {error}")]
    Lease {
        /// The entity.
        dn: String,
        /// Why.
        error: LeaseError,
    },
    /// The state file (lease book, serial) failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Signs leases. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Issuer {
    authority: LeaseAuthority,
    allocator: Allocator,
    policy: IssuePolicy,
    state: State,
    last_serial: Mutex<u64>,
}

/// A user's netmap: what a client needs besides its own lease.
#[derive(Clone, Debug)]
pub struct Netmap {
    /// The key every lease is signed with.
    pub authority: AuthorityKey,
    /// The valid leases of the systems the user may reach, by name.
    pub leases: Vec<SignedLease>,
}

impl Issuer {
    /// An issuer signing with `authority`, assigning missing addresses
    /// with `allocator`, recording leases in `state`.
    pub fn new(
        authority: LeaseAuthority,
        allocator: Allocator,
        policy: IssuePolicy,
        state: State,
    ) -> Result<Issuer, StateError> {
        let last = state.serial_high_water()?;
        Ok(Issuer {
            authority,
            allocator,
            policy,
            state,
            last_serial: Mutex::new(last),
        })
    }

    /// The authority's public key.
    pub fn authority_key(&self) -> AuthorityKey {
        self.authority.public_key()
    }

    /// The issuing policy.
    pub fn policy(&self) -> IssuePolicy {
        self.policy
    }

    /// The allocator.
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// The state file.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// A lease for `entity` and `public_key` at `now`, in a session that
    /// started at `session_start`, for `lease-lifetime`. Assigns the
    /// entity's address first if it has none. The lease is recorded in the
    /// lease book.
    pub async fn issue<D: Directory>(
        &self,
        directory: &D,
        entity: &Entity,
        public_key: PublicKey,
        session_start: UnixTime,
        now: UnixTime,
    ) -> Result<SignedLease, IssueError> {
        let lifetime = self.policy.lifetime;
        self.issue_for(directory, entity, public_key, session_start, now, lifetime)
            .await
    }

    /// [`Issuer::issue`] with another lifetime (`addrd issue-lease
    /// --lifetime`). A user's lease still ends with its session
    /// (`max-session-age`, the time a password is good for); systems and
    /// applications have no password, so their sessions have no maximum
    /// age (they lose their leases by being disabled, removed or revoked).
    pub async fn issue_for<D: Directory>(
        &self,
        directory: &D,
        entity: &Entity,
        public_key: PublicKey,
        session_start: UnixTime,
        now: UnixTime,
        lifetime: Duration,
    ) -> Result<SignedLease, IssueError> {
        // Never a lease for an address another entity holds (DESIGN §2),
        // whoever wrote it on the entry.
        let address = self.allocator.confirm(directory, entity).await?;
        let mut not_after = now.saturating_add(lifetime);
        if entity.kind == EntityKind::User {
            let session_end = session_start.saturating_add(self.policy.max_session_age);
            not_after = not_after.min(session_end);
        }
        if not_after.as_secs() <= now.as_secs() {
            return Err(IssueError::SessionExpired {
                name: entity.name.clone(),
                age_secs: now.as_secs().saturating_sub(session_start.as_secs()),
            });
        }
        let len = entity.kind.prefix_len();
        let prefix = Ipv6Net::new(address, len)
            .map(|net| net.trunc())
            .map_err(|_| IssueError::BadAddress {
                dn: entity.dn.clone(),
                address,
                kind: entity.kind.as_str(),
            })?;
        if entity.kind == EntityKind::System && address != system_address(prefix) {
            return Err(IssueError::BadAddress {
                dn: entity.dn.clone(),
                address,
                kind: entity.kind.as_str(),
            });
        }
        let serial = self.next_serial(now);
        let lease = Lease {
            kind: entity.kind,
            serial,
            not_before: UnixTime::from_secs(now.as_secs()),
            not_after,
            public_key: public_key.0,
            prefix,
            name: entity.name.clone(),
            dn: entity.dn.clone(),
            groups: entity.groups.clone(),
        };
        let signed = self
            .authority
            .sign(&lease)
            .map_err(|error| IssueError::Lease {
                dn: entity.dn.clone(),
                error,
            })?;
        let state = self.state.clone();
        let dn = entity.dn.clone();
        let bytes = signed.as_bytes().to_vec();
        tokio::task::spawn_blocking(move || state.record_lease(&dn, serial, &bytes))
            .await
            .map_err(|e| StateError::Database {
                path: self.state.path().to_owned(),
                message: format!("task failed: {e}"),
            })??;
        Ok(signed)
    }

    /// addrd's own lease (the home agent, [`crate::homeagent`]): a system
    /// lease named [`AUTHORITY_NAME`] on `prefix` (the overlay's
    /// infrastructure subnet, whose `::1` is addrd's overlay address) for
    /// `public_key` (the login channel's static key), for `lease-lifetime`.
    /// Not recorded in the lease book: it is not a directory entity's, and
    /// every user's netmap carries it anyway.
    pub fn authority_lease(
        &self,
        public_key: PublicKey,
        prefix: Ipv6Net,
        now: UnixTime,
    ) -> Result<SignedLease, IssueError> {
        let lease = Lease {
            kind: EntityKind::System,
            serial: self.next_serial(now),
            not_before: UnixTime::from_secs(now.as_secs()),
            not_after: now.saturating_add(self.policy.lifetime),
            public_key: public_key.0,
            prefix: prefix.trunc(),
            name: AUTHORITY_NAME.to_owned(),
            dn: AUTHORITY_DN.to_owned(),
            groups: Vec::new(),
        };
        self.authority
            .sign(&lease)
            .map_err(|error| IssueError::Lease {
                dn: AUTHORITY_DN.to_owned(),
                error,
            })
    }

    /// The next serial: strictly above every serial this issuer (or the
    /// state file) has seen, and at least the time in ms shifted left 16.
    pub fn next_serial(&self, now: UnixTime) -> u64 {
        let millis = u64::try_from(now.as_duration().as_millis()).unwrap_or(u64::MAX);
        let floor = millis.saturating_mul(1 << SERIAL_COUNTER_BITS);
        let mut last = self
            .last_serial
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let next = last.saturating_add(1).max(floor);
        *last = next;
        next
    }

    /// The netmap of `user` at `now`: the authority key and the valid
    /// leases, in the lease book, of the systems hosting an application
    /// `user`'s groups may reach. `entities` is a directory snapshot.
    pub fn netmap(
        &self,
        user: &Entity,
        entities: &[Entity],
        now: UnixTime,
    ) -> Result<Netmap, StateError> {
        let systems = reachable_systems(user, entities);
        let by_name: HashMap<&str, &Entity> = entities
            .iter()
            .filter(|e| e.kind == EntityKind::System)
            .map(|e| (e.name.as_str(), e))
            .collect();
        let wanted: HashMap<String, &str> = systems
            .iter()
            .filter_map(|name| by_name.get(name.as_str()))
            .map(|e| (normalize_dn(&e.dn), e.name.as_str()))
            .collect();
        let authority = self.authority.public_key();
        let mut leases = Vec::new();
        for (dn, bytes) in self.state.leases()? {
            if !wanted.contains_key(&dn) {
                continue;
            }
            match SignedLease::verify(&bytes, &authority, now) {
                Ok(lease) if lease.lease().kind == EntityKind::System => leases.push(lease),
                Ok(_) => {}
                Err(error) => tracing::debug!(%dn, %error, "lease book entry left out of netmap"),
            }
        }
        leases.sort_by(|a, b| a.lease().name.cmp(&b.lease().name));
        Ok(Netmap { authority, leases })
    }
}

/// A system's address: the `::1` of its /64.
fn system_address(prefix: Ipv6Net) -> std::net::Ipv6Addr {
    let base = u128::from(prefix.network());
    std::net::Ipv6Addr::from(base | u128::from(overlay_proto::addr::SYSTEM_INTERFACE_ID))
}

/// The names of the systems hosting an application whose allowed groups
/// intersect `user`'s groups.
pub fn reachable_systems(user: &Entity, entities: &[Entity]) -> BTreeSet<String> {
    entities
        .iter()
        .filter(|e| e.kind == EntityKind::Application)
        .filter(|app| {
            app.allowed_groups
                .iter()
                .any(|g| user.groups.iter().any(|u| u.eq_ignore_ascii_case(g)))
        })
        .filter_map(|app| app.system.clone())
        .collect()
}

#[cfg(test)]
mod tests;
