//! What addrd does for a login, a renewal and an administrator, over a
//! [`Directory`] and an [`Issuer`]: the seam between the daemon's parts.
//! The login channel ([`crate::channel`]) calls [`Service::login`] and
//! [`Service::renew`]; the control socket and the admin commands call the
//! rest.
//!
//! - **Login**: the directory checks the password
//!   ([`Directory::authenticate`]); a session starts for the client's
//!   public key (recorded in the state file); the user's lease and netmap
//!   come back.
//! - **Renewal** (no password): the session of the client's key must exist,
//!   be younger than `max-session-age` and not be revoked; the directory is
//!   asked again ([`Directory::lookup`]), so a disabled, removed or
//!   regrouped user loses access within one lease lifetime.
//! - **Revocation** ([`Service::revoke`]): recorded at once; every session
//!   of the entity that started at or before that second is refused at its
//!   next renewal.
//!
//! Rate limiting and the audit log wrap these calls (guard, audit).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use overlay_proto::handshake::PublicKey;
use overlay_proto::lease::{EntityKind, SignedLease};
use overlay_proto::time::UnixTime;

use crate::directory::{AuthError, Directory, DirectoryError, Entity, Password};
use crate::issuer::{IssueError, Issuer, Netmap};
use crate::revocations::{RevocationError, Revocations};
use crate::state::{Session, StateError};

/// A lease and the netmap that goes with it.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The entity's new lease.
    pub lease: SignedLease,
    /// What it may reach (empty for systems and applications).
    pub netmap: Netmap,
}

/// A login, renewal or admin request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The password check failed or the directory could not be asked.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Renewal for a key that has no session (never logged in, or the
    /// session was ended): log in with the password.
    #[error("no session for this key")]
    NoSession,
    /// The entity's sessions were revoked by an administrator.
    #[error("{0} was revoked; log in again")]
    Revoked(String),
    /// The entity is disabled in the directory.
    #[error("{0} is disabled")]
    Disabled(String),
    /// The entity is no longer (or was never) in the directory.
    #[error("no {kind} named {name:?} in the directory")]
    Unknown {
        /// Its kind.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The directory failed.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// No lease could be issued.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// The state file failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The revocation list could not be read or written.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
}

/// The service. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Service<D> {
    directory: D,
    issuer: Issuer,
    revocations: Revocations,
    snapshot: RwLock<Arc<Vec<Entity>>>,
}

impl<D: Directory> Service<D> {
    /// A service over `directory` issuing with `issuer`, its revocations
    /// in `revocations`. The entity snapshot is empty until
    /// [`Service::refresh`].
    pub fn new(directory: D, issuer: Issuer, revocations: Revocations) -> Self {
        Service {
            directory,
            issuer,
            revocations,
            snapshot: RwLock::new(Arc::new(Vec::new())),
        }
    }

    /// The directory.
    pub fn directory(&self) -> &D {
        &self.directory
    }

    /// The issuer.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The revocation list.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Read every entity from the directory again (DNS zone, netmaps,
    /// `addrd users`) and keep it as the snapshot.
    pub async fn refresh(&self) -> Result<Arc<Vec<Entity>>, DirectoryError> {
        let mut entities = self.directory.entities().await?;
        entities.sort_by(|a, b| (kind_order(a.kind), &a.name).cmp(&(kind_order(b.kind), &b.name)));
        let entities = Arc::new(entities);
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = entities.clone();
        Ok(entities)
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Vec<Entity>> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A login: password check, a new session for `public_key`, the
    /// user's lease and netmap.
    pub async fn login(
        &self,
        user: &str,
        password: &Password,
        public_key: PublicKey,
        now: UnixTime,
    ) -> Result<Grant, ServiceError> {
        let entity = self.directory.authenticate(user, password).await?;
        self.start(&entity, public_key, now)?;
        self.grant(&entity, public_key, now, now).await
    }

    /// A renewal for the session of `public_key`.
    pub async fn renew(&self, public_key: PublicKey, now: UnixTime) -> Result<Grant, ServiceError> {
        let session = self
            .issuer
            .state()
            .session(&public_key.0)?
            .ok_or(ServiceError::NoSession)?;
        // Through the revocation list, not the state file: with LDAP it is
        // in the directory, where every replica's `addrd revoke` lands.
        if let Some(at) = self
            .revocations
            .revoked_at(session.kind, &session.name)
            .await?
        {
            if at >= session.started {
                return Err(ServiceError::Revoked(session.name));
            }
        }
        let entity = self.current(session.kind, &session.name).await?;
        let started = UnixTime::from_secs(session.started);
        self.grant(&entity, public_key, started, now).await
    }

    /// An administrator's lease for `kind` `name` with `public_key`
    /// (`addrd issue-lease`: how a server gets its first lease), for
    /// `lifetime` (default `lease-lifetime`). Starts a session for the key,
    /// so the server can renew.
    pub async fn issue_for(
        &self,
        kind: EntityKind,
        name: &str,
        public_key: PublicKey,
        now: UnixTime,
        lifetime: Option<Duration>,
    ) -> Result<SignedLease, ServiceError> {
        let entity = self.current(kind, name).await?;
        self.start(&entity, public_key, now)?;
        let lifetime = lifetime.unwrap_or(self.issuer.policy().lifetime);
        let lease = self
            .issuer
            .issue_for(&self.directory, &entity, public_key, now, now, lifetime)
            .await?;
        Ok(lease)
    }

    /// Refuse every renewal of `kind` `name`'s sessions that started at or
    /// before `now`. The entity must exist (a typo must not look like a
    /// success).
    pub async fn revoke(
        &self,
        kind: EntityKind,
        name: &str,
        now: UnixTime,
    ) -> Result<(), ServiceError> {
        if self.directory.lookup(kind, name).await?.is_none() {
            return Err(ServiceError::Unknown {
                kind: kind.as_str(),
                name: name.to_owned(),
            });
        }
        self.revocations.revoke(kind, name, now.as_secs()).await?;
        Ok(())
    }

    /// The entity, read fresh; refused if absent or disabled.
    async fn current(&self, kind: EntityKind, name: &str) -> Result<Entity, ServiceError> {
        let entity =
            self.directory
                .lookup(kind, name)
                .await?
                .ok_or_else(|| ServiceError::Unknown {
                    kind: kind.as_str(),
                    name: name.to_owned(),
                })?;
        if entity.disabled {
            return Err(ServiceError::Disabled(entity.name));
        }
        Ok(entity)
    }

    fn start(
        &self,
        entity: &Entity,
        public_key: PublicKey,
        now: UnixTime,
    ) -> Result<(), StateError> {
        self.issuer.state().start_session(
            &public_key.0,
            &Session {
                kind: entity.kind,
                name: entity.name.clone(),
                started: now.as_secs(),
            },
        )
    }

    async fn grant(
        &self,
        entity: &Entity,
        public_key: PublicKey,
        started: UnixTime,
        now: UnixTime,
    ) -> Result<Grant, ServiceError> {
        let lease = self
            .issuer
            .issue(&self.directory, entity, public_key, started, now)
            .await?;
        let netmap = if entity.kind == EntityKind::User {
            self.issuer.netmap(entity, &self.snapshot(), now)?
        } else {
            Netmap {
                authority: self.issuer.authority_key(),
                leases: Vec::new(),
            }
        };
        Ok(Grant { lease, netmap })
    }
}

fn kind_order(kind: EntityKind) -> u8 {
    match kind {
        EntityKind::User => 0,
        EntityKind::Application => 1,
        EntityKind::System => 2,
    }
}

#[cfg(test)]
mod tests;
