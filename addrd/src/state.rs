//! addrd's own state, in a redb file (`state-file`, created mode 0600):
//!
//! - **revocations**: `kind:name` → the Unix time (seconds) of the latest
//!   `addrd revoke`. A session that started at or before that time is not
//!   renewed; a login with the password afterwards starts a new session
//!   (to keep someone out for good, disable them in the directory).
//! - **sessions**: the client's X25519 public key → when its session
//!   started and whose it is, so renewals (without the password) know
//!   the session's age across restarts.
//! - **lease book**: the latest lease issued per entity (by normalised
//!   DN), the netmaps' source for servers' leases.
//! - **serial**: the highest lease serial issued, so serials keep growing
//!   across restarts even if the clock steps back.
//!
//! The file belongs to one addrd process (redb locks it): admin commands
//! reach a running daemon through its control socket instead. Replicas
//! each keep their own state file (see `docs/architecture.md`: what that
//! means for revocations and the lease book with the LDAP backend).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use overlay_proto::lease::EntityKind;
use redb::{ReadableTable as _, TableDefinition};

use crate::ldif::normalize_dn;
use crate::store::{open_private_database, PrivateDatabaseError};

const REVOCATIONS: TableDefinition<&str, u64> = TableDefinition::new("revocations");
const SESSIONS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sessions");
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SERIAL_KEY: &str = "serial";

/// The state file. Cheap to clone.
#[derive(Clone)]
pub struct State {
    db: Arc<redb::Database>,
    path: PathBuf,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The state file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file could not be created or opened.
    #[error("{path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// redb refused (corrupt file, open in another process, disk full...).
    #[error("{path}: {message}")]
    Database {
        /// The file.
        path: PathBuf,
        /// redb's message.
        message: String,
    },
}

/// One session: whose, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The entity's kind.
    pub kind: EntityKind,
    /// The entity's name.
    pub name: String,
    /// When the password (or the admin) started it, Unix seconds.
    pub started: u64,
}

/// The key revocations are kept under.
pub fn revocation_key(kind: EntityKind, name: &str) -> String {
    format!("{}:{}", kind.as_str(), name.to_lowercase())
}

impl State {
    /// Open the state file at `path`, creating it (mode 0600) if absent.
    /// Fails if another process has it open.
    pub fn open(path: &Path) -> Result<State, StateError> {
        let db = open_private_database(path).map_err(|e| match e {
            PrivateDatabaseError::Open(source) => StateError::Open {
                path: path.to_owned(),
                source,
            },
            PrivateDatabaseError::Database(e) => StateError::Database {
                path: path.to_owned(),
                message: e.to_string(),
            },
        })?;
        let state = State {
            db: Arc::new(db),
            path: path.to_owned(),
        };
        let tx = state.db.begin_write().map_err(|e| state.error(e))?;
        tx.open_table(REVOCATIONS).map_err(|e| state.error(e))?;
        tx.open_table(SESSIONS).map_err(|e| state.error(e))?;
        tx.open_table(LEASES).map_err(|e| state.error(e))?;
        tx.open_table(META).map_err(|e| state.error(e))?;
        tx.commit().map_err(|e| state.error(e))?;
        Ok(state)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, error: impl Into<redb::Error>) -> StateError {
        StateError::Database {
            path: self.path.clone(),
            message: error.into().to_string(),
        }
    }

    /// Record a revocation of `kind:name` at `at` (Unix seconds); durable
    /// before it returns. A later revocation replaces an earlier one.
    pub fn revoke(&self, kind: EntityKind, name: &str, at: u64) -> Result<(), StateError> {
        let tx = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = tx.open_table(REVOCATIONS).map_err(|e| self.error(e))?;
            let key = revocation_key(kind, name);
            let previous = table
                .get(key.as_str())
                .map_err(|e| self.error(e))?
                .map(|v| v.value());
            table
                .insert(key.as_str(), previous.unwrap_or(0).max(at))
                .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))
    }

    /// When `kind:name` was last revoked, if ever.
    pub fn revoked_at(&self, kind: EntityKind, name: &str) -> Result<Option<u64>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = tx.open_table(REVOCATIONS).map_err(|e| self.error(e))?;
        Ok(table
            .get(revocation_key(kind, name).as_str())
            .map_err(|e| self.error(e))?
            .map(|v| v.value()))
    }

    /// Every revocation (`kind:name`, time).
    pub fn revocations(&self) -> Result<Vec<(String, u64)>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = tx.open_table(REVOCATIONS).map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.error(e))? {
            let (k, v) = row.map_err(|e| self.error(e))?;
            out.push((k.value().to_owned(), v.value()));
        }
        Ok(out)
    }

    /// Remember a session for `public_key`, replacing any earlier one.
    pub fn start_session(
        &self,
        public_key: &[u8; 32],
        session: &Session,
    ) -> Result<(), StateError> {
        let mut value = Vec::with_capacity(9 + session.name.len());
        value.extend_from_slice(&session.started.to_be_bytes());
        value.push(u8::from(session.kind));
        value.extend_from_slice(session.name.as_bytes());
        let tx = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = tx.open_table(SESSIONS).map_err(|e| self.error(e))?;
            table
                .insert(public_key, value.as_slice())
                .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))
    }

    /// The session of `public_key`, if any (an unreadable record is none).
    pub fn session(&self, public_key: &[u8; 32]) -> Result<Option<Session>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = tx.open_table(SESSIONS).map_err(|e| self.error(e))?;
        let Some(value) = table.get(public_key).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let bytes = value.value();
        let (Some(started), Some(&kind), Some(name)) =
            (bytes.get(..8), bytes.get(8), bytes.get(9..))
        else {
            return Ok(None);
        };
        let mut secs = [0u8; 8];
        secs.copy_from_slice(started);
        let (Ok(kind), Ok(name)) = (EntityKind::try_from(kind), std::str::from_utf8(name)) else {
            return Ok(None);
        };
        Ok(Some(Session {
            kind,
            name: name.to_owned(),
            started: u64::from_be_bytes(secs),
        }))
    }

    /// Forget the session of `public_key`.
    pub fn end_session(&self, public_key: &[u8; 32]) -> Result<(), StateError> {
        let tx = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = tx.open_table(SESSIONS).map_err(|e| self.error(e))?;
            table.remove(public_key).map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))
    }

    /// Record a lease just issued for `dn` (the lease book) and raise the
    /// serial high-water mark, in one durable transaction.
    pub fn record_lease(&self, dn: &str, serial: u64, lease: &[u8]) -> Result<(), StateError> {
        let tx = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut leases = tx.open_table(LEASES).map_err(|e| self.error(e))?;
            leases
                .insert(normalize_dn(dn).as_str(), lease)
                .map_err(|e| self.error(e))?;
            let mut meta = tx.open_table(META).map_err(|e| self.error(e))?;
            let high = meta
                .get(SERIAL_KEY)
                .map_err(|e| self.error(e))?
                .map(|v| v.value())
                .unwrap_or(0);
            meta.insert(SERIAL_KEY, high.max(serial))
                .map_err(|e| self.error(e))?;
        }
        tx.commit().map_err(|e| self.error(e))
    }

    /// The highest serial ever recorded (0 for a new file).
    pub fn serial_high_water(&self) -> Result<u64, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = tx.open_table(META).map_err(|e| self.error(e))?;
        Ok(table
            .get(SERIAL_KEY)
            .map_err(|e| self.error(e))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Every lease in the book (normalised DN, signed bytes).
    pub fn leases(&self) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = tx.open_table(LEASES).map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.error(e))? {
            let (k, v) = row.map_err(|e| self.error(e))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn state_survives_reopening_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let key = [7u8; 32];
        {
            let state = State::open(&path).unwrap();
            assert_eq!(state.serial_high_water().unwrap(), 0);
            state.revoke(EntityKind::User, "Alice", 100).unwrap();
            state.revoke(EntityKind::User, "alice", 50).unwrap();
            state
                .start_session(
                    &key,
                    &Session {
                        kind: EntityKind::User,
                        name: "alice".into(),
                        started: 42,
                    },
                )
                .unwrap();
            state.record_lease("UID=alice,dc=x", 9, b"lease").unwrap();
            state.record_lease("uid=bob,dc=x", 5, b"lease2").unwrap();
            // A second process (or handle) cannot open it meanwhile.
            assert!(State::open(&path).is_err());
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let state = State::open(&path).unwrap();
        assert_eq!(
            state.revoked_at(EntityKind::User, "alice").unwrap(),
            Some(100)
        );
        assert_eq!(state.revoked_at(EntityKind::System, "alice").unwrap(), None);
        assert_eq!(state.serial_high_water().unwrap(), 9);
        assert_eq!(state.session(&key).unwrap().unwrap().started, 42);
        assert_eq!(state.leases().unwrap().len(), 2);
        state.end_session(&key).unwrap();
        assert_eq!(state.session(&key).unwrap(), None);
    }
}
