//! The embedded directory: the default backend, no server needed. An LDIF
//! file with the same entries an LDAP server would hold (the vocabulary of
//! `configs/ldap/permanet.schema`), `{SSHA}`/`{ARGON2}` password hashes, and
//! the permanent addresses in a redb [`AddressStore`] next to it.
//!
//! The LDIF is read whole into memory ([`EmbeddedDirectory::open`]); an
//! entry that breaks the vocabulary is skipped whole, logged and counted
//! with its DN, never half-used. [`EmbeddedDirectory::reload`] (the daemon
//! calls it on SIGHUP) reads the file again and swaps the data in one
//! step; a file that cannot be read or parsed keeps the old data.
//!
//! Logins: an empty password is refused before anything else; an unknown
//! user's password is verified against a dummy hash of the same scheme and
//! cost as most users' hashes, so it takes as long as a wrong password;
//! verification runs on a blocking thread (Argon2 is CPU-heavy).
//!
//! Addresses: `permanetAddress` values in the LDIF (and
//! `permanetReservation` entries, as `slapcat` exports them) are reserved
//! in the store when the file is loaded, so the allocator never hands them
//! to anyone else; an entry whose address another DN holds is skipped.
//! Otherwise the address recorded in the store is the entity's.

mod load;

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use overlay_proto::lease::EntityKind;

use crate::directory::{
    AuthError, Directory, DirectoryError, Entity, Password, RefusalReason, Reservation,
};
use crate::ldif::{self, LdifError};
use crate::password::{PasswordError, PasswordHash};
use crate::store::{AddressStore, StoreError};

use load::DirectoryData;

/// The longest user name a login may present; longer names are unknown
/// users (after the same dummy verification).
pub const MAX_LOGIN_NAME_LEN: usize = 256;

/// The embedded directory. Cheap to clone; safe to use from many tasks.
#[derive(Clone, Debug)]
pub struct EmbeddedDirectory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ldif_path: PathBuf,
    store: AddressStore,
    data: RwLock<Arc<DirectoryData>>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    skipped_entries: AtomicU64,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
}

/// Counters of the embedded directory, for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedCounters {
    /// Entries skipped as malformed, over every load.
    pub skipped_entries: u64,
    /// Successful reloads.
    pub reloads: u64,
    /// Reloads refused (the old data kept).
    pub failed_reloads: u64,
}

/// What one load found.
#[derive(Debug)]
pub struct LoadReport {
    /// Users loaded.
    pub users: usize,
    /// Applications loaded.
    pub applications: usize,
    /// Systems loaded.
    pub systems: usize,
    /// Groups loaded.
    pub groups: usize,
    /// Entries skipped, each a [`DirectoryError::BadEntry`] naming its DN.
    pub skipped: Vec<DirectoryError>,
    /// Users loaded whose `userPassword` cannot be verified (by DN): they
    /// cannot log in until it is replaced by an `{ARGON2}` or `{SSHA}` hash.
    pub unusable_passwords: Vec<(String, PasswordError)>,
}

/// The embedded directory could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The LDIF file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The LDIF file is malformed.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        #[source]
        source: LdifError,
    },
    /// The address store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task could not run.
    #[error("load task failed: {0}")]
    Task(String),
}

impl EmbeddedDirectory {
    /// Load the LDIF at `ldif_path` and open (or create, mode 0600) the
    /// address store at `store_path`. Fails if the LDIF cannot be read or
    /// parsed; malformed entries are skipped and listed in the report.
    pub async fn open(
        ldif_path: &Path,
        store_path: &Path,
    ) -> Result<(Self, LoadReport), EmbeddedError> {
        let path = ldif_path.to_owned();
        let store_path = store_path.to_owned();
        let (store, data, report) = blocking(move || {
            let store = AddressStore::open(&store_path)?;
            let (data, report) = load_file(&path, &store)?;
            Ok::<_, EmbeddedError>((store, data, report))
        })
        .await?;
        let directory = EmbeddedDirectory {
            inner: Arc::new(Inner {
                ldif_path: ldif_path.to_owned(),
                store,
                data: RwLock::new(Arc::new(data)),
                counters: Counters::default(),
            }),
        };
        directory.count_skipped(&report);
        Ok((directory, report))
    }

    /// Read the LDIF file again and use it from now on. On error the data
    /// loaded before stays in use.
    pub async fn reload(&self) -> Result<LoadReport, EmbeddedError> {
        let path = self.inner.ldif_path.clone();
        let store = self.inner.store.clone();
        match blocking(move || load_file(&path, &store)).await {
            Ok((data, report)) => {
                *self
                    .inner
                    .data
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(data);
                self.inner.counters.reloads.fetch_add(1, Ordering::Relaxed);
                self.count_skipped(&report);
                Ok(report)
            }
            Err(error) => {
                self.inner
                    .counters
                    .failed_reloads
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "directory reload refused; keeping the loaded data");
                Err(error)
            }
        }
    }

    /// The counters.
    pub fn counters(&self) -> EmbeddedCounters {
        let c = &self.inner.counters;
        EmbeddedCounters {
            skipped_entries: c.skipped_entries.load(Ordering::Relaxed),
            reloads: c.reloads.load(Ordering::Relaxed),
            failed_reloads: c.failed_reloads.load(Ordering::Relaxed),
        }
    }

    /// The address store.
    pub fn store(&self) -> &AddressStore {
        &self.inner.store
    }

    fn count_skipped(&self, report: &LoadReport) {
        for error in &report.skipped {
            tracing::error!(%error, "directory entry skipped");
        }
        for (dn, error) in &report.unusable_passwords {
            tracing::warn!(%dn, %error, "user cannot log in: userPassword not usable");
        }
        self.inner
            .counters
            .skipped_entries
            .fetch_add(report.skipped.len() as u64, Ordering::Relaxed);
    }

    fn data(&self) -> Arc<DirectoryData> {
        Arc::clone(
            &self
                .inner
                .data
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// `entity` with the address recorded in the store when the LDIF names
    /// none.
    fn with_address(&self, mut entity: Entity) -> Result<Entity, StoreError> {
        if entity.address.is_none() {
            entity.address = self.inner.store.recorded(&entity.dn)?;
        }
        Ok(entity)
    }
}

type Loaded = (DirectoryData, LoadReport);

/// Read, parse and build; reserve the addresses the file names.
fn load_file(path: &Path, store: &AddressStore) -> Result<Loaded, EmbeddedError> {
    let bytes = std::fs::read(path).map_err(|source| EmbeddedError::Read {
        path: path.to_owned(),
        source,
    })?;
    warn_if_readable_by_others(path);
    let entries = ldif::parse(&bytes).map_err(|source| EmbeddedError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let (mut data, mut skipped) = load::build(&entries);
    data.dummy = load::dummy_for(&data);
    reserve_declared(store, &mut data, &mut skipped)?;
    let report = report(&data, skipped);
    Ok((data, report))
}

/// Check an LDIF file's text without loading it: parse, and apply the
/// directory vocabulary (what `addrd check-config` reports). Addresses are
/// not reserved.
pub fn check_ldif(bytes: &[u8]) -> Result<LoadReport, LdifError> {
    let entries = ldif::parse(bytes)?;
    let (data, skipped) = load::build(&entries);
    Ok(report(&data, skipped))
}

fn report(data: &DirectoryData, skipped: Vec<DirectoryError>) -> LoadReport {
    LoadReport {
        users: data.users.len(),
        applications: data.applications.len(),
        systems: data.systems.len(),
        groups: data.groups,
        skipped,
        unusable_passwords: data.unusable_passwords.clone(),
    }
}

/// Reserve (and record) the addresses the LDIF names, so the allocator
/// never gives them to anyone else; drop the entities whose address is
/// held by another DN.
fn reserve_declared(
    store: &AddressStore,
    data: &mut DirectoryData,
    skipped: &mut Vec<DirectoryError>,
) -> Result<(), StoreError> {
    for (address, holder) in &data.reservations {
        if let Reservation::Taken { holder: other } = store.reserve(*address, holder)? {
            skipped.push(DirectoryError::BadEntry {
                dn: format!("permanetAddress={address}"),
                problem: format!("holder {holder} but the store has {other}"),
            });
        }
    }
    let mut conflicts = Vec::new();
    let declared = data
        .users
        .values()
        .map(|u| &u.entity)
        .chain(data.applications.values())
        .chain(data.systems.values())
        .filter_map(|e| e.address.map(|a| (e.kind, e.name.clone(), e.dn.clone(), a)));
    for (kind, name, dn, address) in declared.collect::<Vec<_>>() {
        match store.reserve(address, &dn)? {
            // Read first: a reload then writes nothing for what it knows.
            Reservation::Created | Reservation::Ours => {
                if store.recorded(&dn)? != Some(address) {
                    store.record(&dn, address)?;
                }
            }
            Reservation::Taken { holder } => {
                skipped.push(DirectoryError::BadEntry {
                    dn: dn.clone(),
                    problem: format!("permanetAddress {address} is reserved for {holder}"),
                });
                conflicts.push((kind, name));
            }
        }
    }
    for (kind, name) in conflicts {
        match kind {
            EntityKind::User => {
                data.users.remove(&name);
            }
            EntityKind::Application => {
                data.applications.remove(&name);
            }
            EntityKind::System => {
                data.systems.remove(&name);
            }
        }
    }
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the directory LDIF (password hashes) is world-readable; chmod o-r it"
            );
        }
    }
}

/// Run `f` on a blocking thread.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: Send + 'static + From<JoinFailed>,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(E::from(JoinFailed(e.to_string()))))
}

/// A blocking task panicked or was cancelled.
#[derive(Debug)]
struct JoinFailed(String);

impl From<JoinFailed> for EmbeddedError {
    fn from(e: JoinFailed) -> Self {
        EmbeddedError::Task(e.0)
    }
}

impl From<JoinFailed> for DirectoryError {
    fn from(e: JoinFailed) -> Self {
        DirectoryError::Store(e.0)
    }
}

fn store_error(e: StoreError) -> DirectoryError {
    DirectoryError::Store(e.to_string())
}

/// The outcome of checking a login, before the directory's answer is
/// shaped.
enum Check {
    Accepted(Entity),
    Refused(RefusalReason),
}

impl Directory for EmbeddedDirectory {
    async fn authenticate(&self, user: &str, password: &Password) -> Result<Entity, AuthError> {
        if password.is_empty() {
            return Err(AuthError::Refused {
                reason: RefusalReason::EmptyPassword,
            });
        }
        let data = self.data();
        let name = user.to_ascii_lowercase();
        let password = password.clone();
        let check = blocking(move || {
            let found = (name.len() <= MAX_LOGIN_NAME_LEN)
                .then(|| data.users.get(&name))
                .flatten();
            // Same work whatever is found: a verification against each of
            // the user's hashes (almost always one), or against the dummy.
            let hashes: Vec<&PasswordHash> = match found {
                Some(u) if !u.password.is_empty() => u.password.iter().collect(),
                _ => data.dummy.iter().collect(),
            };
            // Every hash is tried, not up to the first match.
            let matches = hashes
                .iter()
                .fold(false, |any, h| h.verify(password.as_bytes()) | any);
            let check = match found {
                None => Check::Refused(RefusalReason::UnknownUser),
                Some(u) if u.password.is_empty() || !matches => {
                    Check::Refused(RefusalReason::WrongPassword)
                }
                Some(u) if u.entity.disabled => Check::Refused(RefusalReason::Disabled),
                Some(u) => Check::Accepted(u.entity.clone()),
            };
            Ok::<_, DirectoryError>(check)
        })
        .await
        .map_err(AuthError::Unavailable)?;
        match check {
            Check::Accepted(entity) => {
                let store = self.clone();
                blocking(move || store.with_address(entity).map_err(store_error))
                    .await
                    .map_err(AuthError::Unavailable)
            }
            Check::Refused(reason) => Err(AuthError::Refused { reason }),
        }
    }

    async fn lookup(&self, kind: EntityKind, name: &str) -> Result<Option<Entity>, DirectoryError> {
        let data = self.data();
        let name = name.to_ascii_lowercase();
        let found = match data.by_kind(kind) {
            None => data.users.get(&name).map(|u| u.entity.clone()),
            Some(map) => map.get(&name).cloned(),
        };
        let Some(entity) = found else {
            return Ok(None);
        };
        let this = self.clone();
        blocking(move || this.with_address(entity).map(Some).map_err(store_error)).await
    }

    async fn entities(&self) -> Result<Vec<Entity>, DirectoryError> {
        let data = self.data();
        let store = self.inner.store.clone();
        blocking(move || {
            let recorded: HashMap<String, Ipv6Addr> =
                store.records().map_err(store_error)?.into_iter().collect();
            Ok(data
                .entities()
                .map(|e| {
                    let mut e = e.clone();
                    if e.address.is_none() {
                        e.address = recorded.get(&ldif::normalize_dn(&e.dn)).copied();
                    }
                    e
                })
                .collect())
        })
        .await
    }

    async fn reserve_address(
        &self,
        address: Ipv6Addr,
        dn: &str,
    ) -> Result<Reservation, DirectoryError> {
        let store = self.inner.store.clone();
        let dn = dn.to_owned();
        blocking(move || store.reserve(address, &dn).map_err(store_error)).await
    }

    async fn record_address(&self, dn: &str, address: Ipv6Addr) -> Result<(), DirectoryError> {
        let store = self.inner.store.clone();
        let dn = dn.to_owned();
        blocking(move || store.record(&dn, address).map_err(store_error)).await
    }
}

#[cfg(test)]
mod tests;
