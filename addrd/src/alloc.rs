//! The address allocator: gives every entity its permanent address once,
//! deterministically, checked against every address ever handed out, and
//! never reuses one — over any [`Directory`].
//!
//! Candidates come from a keyed hash (BLAKE2s-MAC under the deployment's
//! [`AllocationKey`]) of the entity's kind, normalised DN and an attempt
//! counter:
//! - a user gets a /128 in the user subnet
//!   ([`AddressPlan::user_address`]), the hash as interface identifier;
//! - a system gets a system virtual network: `2002:<public IPv4>:<svn-id>::/64`
//!   when the entry has `permanetPublicIPv4`, else `<home /48>:<svn-id>::/64`
//!   ([`AddressPlan::svn`]); its address is the SVN's `::1`, which stands
//!   for the whole /64;
//! - an application gets a /128 in its system's SVN
//!   ([`SystemVirtualNetwork::application_address`]); the system is
//!   assigned first if it has no SVN yet.
//!
//! Candidates that the address plan refuses (the subnet-router anycast
//! identifier, RFC 5453 reserved identifiers, the infrastructure and user
//! subnets as SVNs) are skipped. For each remaining candidate the allocator
//! reserves it ([`Directory::reserve_address`], create-if-absent and never
//! deleted, so the reservation is also the tombstone): `Created` or `Ours`
//! → record it on the entry → done; `Taken` → next attempt. So an address
//! once reserved is never given to anyone else, two replicas (or tasks)
//! racing for one address cannot both win, and a crash between reserving
//! and recording is repaired by the next run (the same candidate comes back
//! `Ours`). The attempts are bounded: a full space is a typed error.

use std::net::Ipv6Addr;

use blake2::digest::Mac as _;
use ipnet::Ipv6Net;
use overlay_proto::addr::{AddrError, AddressPlan, Ipv4Policy, SystemVirtualNetwork};
use overlay_proto::lease::EntityKind;

use crate::directory::{Directory, DirectoryError, Entity, Reservation};
use crate::ldif::normalize_dn;

/// Domain separation for the candidate hash; a new derivation gets a new
/// label.
const CANDIDATE_LABEL: &[u8] = b"permanet address candidate v1";

/// The secret that makes the candidate sequence unguessable from a DN (so
/// addresses do not reveal who is behind them by a dictionary of DNs) and
/// identical on every replica that shares it. It must never change once
/// addresses are assigned: assigned addresses stay (they are recorded), but
/// the order of new candidates would change.
#[derive(Clone)]
pub struct AllocationKey([u8; 32]);

impl AllocationKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        AllocationKey(bytes)
    }
}

impl std::fmt::Debug for AllocationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AllocationKey(..)")
    }
}

/// How large the candidate spaces are and how many attempts an entity
/// gets. The defaults use the whole of each space; tests shrink them to
/// force collisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CandidateSpace {
    /// User interface identifiers are drawn from `0..user_ids`.
    pub user_ids: u64,
    /// Application host identifiers are drawn from `0..host_ids`.
    pub host_ids: u64,
    /// SVN subnet identifiers are drawn from `0..svn_ids` (at most 65,536).
    pub svn_ids: u32,
    /// Attempts per entity before [`AllocError::Exhausted`].
    pub max_attempts: u32,
}

impl Default for CandidateSpace {
    /// Whole spaces; 256 attempts. With 2^64 identifiers a second attempt
    /// is already rare; with 65,536 SVN ids, 256 attempts fail only when
    /// the /48 is nearly full.
    fn default() -> Self {
        CandidateSpace {
            user_ids: u64::MAX,
            host_ids: u64::MAX,
            svn_ids: 1 << 16,
            max_attempts: 256,
        }
    }
}

/// An address was assigned (or confirmed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The entity's permanent address (a system's SVN `::1`).
    pub address: Ipv6Addr,
    /// Whether it was assigned now (`false`: the entity had it already).
    pub new: bool,
    /// Candidates tried (0 when the entity had its address already).
    pub attempts: u32,
}

/// Assignment failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// The directory failed.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// No free candidate in `attempts` tries.
    #[error("{dn}: no free address after {attempts} candidates")]
    Exhausted {
        /// The entity.
        dn: String,
        /// Candidates tried.
        attempts: u32,
    },
    /// The address recorded on the entry is reserved for another DN (an
    /// administrator copied it, or a tombstone holds it).
    #[error("{dn}: its address {address} is reserved for {holder}")]
    Conflict {
        /// The entity.
        dn: String,
        /// Its recorded address.
        address: Ipv6Addr,
        /// Who holds that address.
        holder: String,
    },
    /// An application names a system the directory does not have.
    #[error("{dn}: its system {system:?} is not in the directory")]
    NoSystem {
        /// The application.
        dn: String,
        /// The system it names.
        system: String,
    },
    /// The address plan refuses the entity's prefix (a system's public
    /// IPv4 that the policy does not accept, for one).
    #[error("{dn}: {error}")]
    Plan {
        /// The entity.
        dn: String,
        /// Why.
        #[source]
        error: AddrError,
    },
}

/// The allocator. Cheap to clone; stateless (everything lives in the
/// directory), so any number of tasks or replicas may use it at once.
#[derive(Clone, Debug)]
pub struct Allocator {
    plan: AddressPlan,
    key: AllocationKey,
    policy: Ipv4Policy,
    space: CandidateSpace,
}

impl Allocator {
    /// An allocator for `plan`, whose candidates derive from `key`, and
    /// which accepts systems' public IPv4 addresses by `policy`.
    pub fn new(plan: AddressPlan, key: AllocationKey, policy: Ipv4Policy) -> Self {
        Allocator {
            plan,
            key,
            policy,
            space: CandidateSpace::default(),
        }
    }

    /// The same allocator over other candidate spaces.
    pub fn with_space(mut self, space: CandidateSpace) -> Self {
        self.space = space;
        self
    }

    /// The address plan.
    pub fn plan(&self) -> &AddressPlan {
        &self.plan
    }

    /// The address `entity` has, checked against the reservations before a
    /// lease is issued for it: an address written on an entry by hand (or
    /// copied from another entry) that another DN holds is refused
    /// ([`AllocError::Conflict`]), never leased; one nobody had reserved
    /// is reserved for the entity now. An entity without an address is
    /// assigned one ([`Allocator::assign`]).
    pub async fn confirm<D: Directory>(
        &self,
        directory: &D,
        entity: &Entity,
    ) -> Result<Ipv6Addr, AllocError> {
        let Some(address) = entity.address else {
            return Ok(self.assign(directory, entity).await?.address);
        };
        match directory.reserve_address(address, &entity.dn).await? {
            Reservation::Created | Reservation::Ours => Ok(address),
            Reservation::Taken { holder } => Err(AllocError::Conflict {
                dn: entity.dn.clone(),
                address,
                holder,
            }),
        }
    }

    /// The entity's address: the one it has (its reservation confirmed and
    /// recorded), or a new one. An application's system is assigned first
    /// when it has no SVN yet.
    pub async fn assign<D: Directory>(
        &self,
        directory: &D,
        entity: &Entity,
    ) -> Result<Assignment, AllocError> {
        let svn = match entity.kind {
            EntityKind::Application => Some(self.application_svn(directory, entity).await?),
            EntityKind::User | EntityKind::System => None,
        };
        self.assign_in(directory, entity, svn).await
    }

    /// Assign every entity of the directory that has no address yet
    /// (systems first, then applications, then users). Returns the
    /// failures; the others are assigned.
    pub async fn assign_all<D: Directory>(
        &self,
        directory: &D,
    ) -> Result<Vec<(String, AllocError)>, DirectoryError> {
        let mut entities = directory.entities().await?;
        let order = |kind| match kind {
            EntityKind::System => 0,
            EntityKind::Application => 1,
            EntityKind::User => 2,
        };
        entities.sort_by_key(|e| order(e.kind));
        let mut failures = Vec::new();
        for entity in entities.iter().filter(|e| e.address.is_none()) {
            if let Err(error) = self.assign(directory, entity).await {
                failures.push((entity.dn.clone(), error));
            }
        }
        Ok(failures)
    }

    /// The SVN of an application's system, assigning the system if needed.
    async fn application_svn<D: Directory>(
        &self,
        directory: &D,
        application: &Entity,
    ) -> Result<SystemVirtualNetwork, AllocError> {
        let no_system = || AllocError::NoSystem {
            dn: application.dn.clone(),
            system: application.system.clone().unwrap_or_default(),
        };
        let name = application.system.as_deref().ok_or_else(no_system)?;
        let system = directory
            .lookup(EntityKind::System, name)
            .await?
            .ok_or_else(no_system)?;
        let address = match system.address {
            Some(address) => address,
            None => self.assign_in(directory, &system, None).await?.address,
        };
        let prefix = Ipv6Net::new(address, 64)
            .map(|net| net.trunc())
            .map_err(|_| AllocError::Plan {
                dn: system.dn.clone(),
                error: AddrError::Parse,
            })?;
        SystemVirtualNetwork::from_prefix(prefix).map_err(|error| AllocError::Plan {
            dn: system.dn.clone(),
            error,
        })
    }

    async fn assign_in<D: Directory>(
        &self,
        directory: &D,
        entity: &Entity,
        svn: Option<SystemVirtualNetwork>,
    ) -> Result<Assignment, AllocError> {
        if let Some(address) = entity.address {
            return match directory.reserve_address(address, &entity.dn).await? {
                Reservation::Created | Reservation::Ours => {
                    directory.record_address(&entity.dn, address).await?;
                    Ok(Assignment {
                        address,
                        new: false,
                        attempts: 0,
                    })
                }
                Reservation::Taken { holder } => Err(AllocError::Conflict {
                    dn: entity.dn.clone(),
                    address,
                    holder,
                }),
            };
        }
        for attempt in 0..self.space.max_attempts {
            let Some(candidate) = self.candidate(entity, svn, attempt)? else {
                continue;
            };
            match directory.reserve_address(candidate, &entity.dn).await? {
                Reservation::Created | Reservation::Ours => {
                    directory.record_address(&entity.dn, candidate).await?;
                    return Ok(Assignment {
                        address: candidate,
                        new: true,
                        attempts: attempt + 1,
                    });
                }
                Reservation::Taken { .. } => {}
            }
        }
        Err(AllocError::Exhausted {
            dn: entity.dn.clone(),
            attempts: self.space.max_attempts,
        })
    }

    /// Candidate number `attempt` for `entity` (an application needs its
    /// system's `svn`): `None` when the plan refuses it (a reserved
    /// identifier or subnet), so the next attempt is tried.
    pub fn candidate(
        &self,
        entity: &Entity,
        svn: Option<SystemVirtualNetwork>,
        attempt: u32,
    ) -> Result<Option<Ipv6Addr>, AllocError> {
        let hash = self.hash(entity.kind, &entity.dn, attempt);
        let plan_error = |error| AllocError::Plan {
            dn: entity.dn.clone(),
            error,
        };
        match entity.kind {
            EntityKind::User => Ok(self
                .plan
                .user_address(hash % self.space.user_ids.max(1))
                .ok()),
            EntityKind::Application => {
                let svn = svn.ok_or_else(|| AllocError::NoSystem {
                    dn: entity.dn.clone(),
                    system: entity.system.clone().unwrap_or_default(),
                })?;
                Ok(svn
                    .application_address(hash % self.space.host_ids.max(1))
                    .ok())
            }
            EntityKind::System => {
                let ids = u64::from(self.space.svn_ids.clamp(1, 1 << 16));
                let svn_id = u16::try_from(hash % ids).unwrap_or(0);
                let svn = match entity.public_ipv4 {
                    Some(ipv4) => {
                        // The policy is checked first: a refused IPv4 is the
                        // entry's error, not a reason to try other ids.
                        self.policy.check(ipv4).map_err(plan_error)?;
                        SystemVirtualNetwork::on_own_ipv4(ipv4, svn_id, self.policy)
                    }
                    None => self.plan.svn(svn_id),
                };
                Ok(svn.ok().map(|svn| svn.system_address()))
            }
        }
    }

    fn hash(&self, kind: EntityKind, dn: &str, attempt: u32) -> u64 {
        let dn = normalize_dn(dn);
        let mut mac = <blake2::Blake2sMac256 as blake2::digest::KeyInit>::new((&self.key.0).into());
        mac.update(CANDIDATE_LABEL);
        mac.update(&[kind as u8]);
        mac.update(&(dn.len() as u64).to_be_bytes());
        mac.update(dn.as_bytes());
        mac.update(&attempt.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_be_bytes(first)
    }
}

#[cfg(test)]
mod tests;
