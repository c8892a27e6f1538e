//! The embedded directory's address store: a redb file that keeps, for
//! ever, which address is reserved by which DN (the reservations, which
//! double as tombstones) and which address is recorded on which DN (the
//! records).
//!
//! [`AddressStore::reserve`] is the create-if-absent write the allocator
//! relies on: one write transaction reads the reservation and inserts it
//! only if absent, and redb serialises write transactions, so two tasks
//! racing for one address cannot both be told [`Reservation::Created`].
//! Every commit is durable (fsync) before the call returns, so an address
//! handed out survives a crash or restart. Reservations are never removed:
//! there is no API for it.
//!
//! DNs are compared in their normalised form ([`crate::ldif::normalize_dn`]);
//! the holder is stored as first written, for display.
//!
//! The calls block on disk I/O; async callers run them on a blocking
//! thread (the embedded directory does).

use std::fs::OpenOptions;
use std::net::Ipv6Addr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable as _, TableDefinition};

use crate::directory::Reservation;
use crate::ldif::normalize_dn;

/// Address (as a `u128`) → holder DN as first written. Never deleted.
const RESERVATIONS: TableDefinition<u128, &str> = TableDefinition::new("reservations");

/// Normalised DN → recorded address.
const RECORDS: TableDefinition<&str, u128> = TableDefinition::new("records");

/// The address store. Cheap to clone (one shared database handle).
#[derive(Clone)]
pub struct AddressStore {
    db: Arc<redb::Database>,
    path: PathBuf,
}

impl std::fmt::Debug for AddressStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The address store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file could not be created or opened.
    #[error("{path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// redb refused (corrupt file, already open in another process, disk
    /// full...).
    #[error("{0}")]
    Database(String),
    /// `record` for an address that is not reserved for that DN.
    #[error("{address} is not reserved for {dn} (holder: {holder:?})")]
    NotReserved {
        /// The address.
        address: Ipv6Addr,
        /// The DN that asked.
        dn: String,
        /// Who holds it, if anyone.
        holder: Option<String>,
    },
}

fn db_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(error.into().to_string())
}

impl AddressStore {
    /// Open the store at `path`, creating it (mode 0600) if absent. Fails
    /// if another process has it open.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_private_database(path).map_err(|e| match e {
            PrivateDatabaseError::Open(source) => StoreError::Open {
                path: path.to_owned(),
                source,
            },
            PrivateDatabaseError::Database(e) => {
                StoreError::Database(format!("{}: {e}", path.display()))
            }
        })?;
        // Create both tables so read transactions always find them.
        let tx = db.begin_write().map_err(db_error)?;
        tx.open_table(RESERVATIONS).map_err(db_error)?;
        tx.open_table(RECORDS).map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(AddressStore {
            db: Arc::new(db),
            path: path.to_owned(),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reserve `address` for `dn` unless it is reserved already: one write
    /// transaction, durable before it returns.
    pub fn reserve(&self, address: Ipv6Addr, dn: &str) -> Result<Reservation, StoreError> {
        let key = u128::from(address);
        // The common case for an assigned entity: already reserved, and a
        // read transaction does not wait for other writers.
        if let Some(holder) = self.holder(address)? {
            return Ok(classify(&holder, dn));
        }
        let tx = self.db.begin_write().map_err(db_error)?;
        let outcome = {
            let mut table = tx.open_table(RESERVATIONS).map_err(db_error)?;
            let existing = table
                .get(key)
                .map_err(db_error)?
                .map(|holder| holder.value().to_owned());
            match existing {
                Some(holder) => classify(&holder, dn),
                None => {
                    table.insert(key, dn).map_err(db_error)?;
                    Reservation::Created
                }
            }
        };
        tx.commit().map_err(db_error)?;
        Ok(outcome)
    }

    /// Record `address` on `dn`. The address must be reserved for `dn`.
    /// Idempotent; a new address replaces the old record (the old one
    /// stays reserved).
    pub fn record(&self, dn: &str, address: Ipv6Addr) -> Result<(), StoreError> {
        let normalized = normalize_dn(dn);
        let key = u128::from(address);
        let tx = self.db.begin_write().map_err(db_error)?;
        {
            let reservations = tx.open_table(RESERVATIONS).map_err(db_error)?;
            let holder = reservations
                .get(key)
                .map_err(db_error)?
                .map(|holder| holder.value().to_owned());
            if holder.as_deref().map(normalize_dn).as_deref() != Some(normalized.as_str()) {
                return Err(StoreError::NotReserved {
                    address,
                    dn: dn.to_owned(),
                    holder,
                });
            }
            let mut records = tx.open_table(RECORDS).map_err(db_error)?;
            records.insert(normalized.as_str(), key).map_err(db_error)?;
        }
        tx.commit().map_err(db_error)?;
        Ok(())
    }

    /// The address recorded on `dn`, if any.
    pub fn recorded(&self, dn: &str) -> Result<Option<Ipv6Addr>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(RECORDS).map_err(db_error)?;
        let found = table
            .get(normalize_dn(dn).as_str())
            .map_err(db_error)?
            .map(|v| Ipv6Addr::from(v.value()));
        Ok(found)
    }

    /// Who holds `address`, if it is reserved.
    pub fn holder(&self, address: Ipv6Addr) -> Result<Option<String>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(RESERVATIONS).map_err(db_error)?;
        let found = table
            .get(u128::from(address))
            .map_err(db_error)?
            .map(|v| v.value().to_owned());
        Ok(found)
    }

    /// Every record: normalised DN → address.
    pub fn records(&self) -> Result<Vec<(String, Ipv6Addr)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(RECORDS).map_err(db_error)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (dn, address) = row.map_err(db_error)?;
            out.push((dn.value().to_owned(), Ipv6Addr::from(address.value())));
        }
        Ok(out)
    }

    /// Every reservation: address → holder DN, in address order.
    pub fn reservations(&self) -> Result<Vec<(Ipv6Addr, String)>, StoreError> {
        let tx = self.db.begin_read().map_err(db_error)?;
        let table = tx.open_table(RESERVATIONS).map_err(db_error)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (address, holder) = row.map_err(db_error)?;
            out.push((Ipv6Addr::from(address.value()), holder.value().to_owned()));
        }
        Ok(out)
    }
}

fn classify(holder: &str, dn: &str) -> Reservation {
    if normalize_dn(holder) == normalize_dn(dn) {
        Reservation::Ours
    } else {
        Reservation::Taken {
            holder: holder.to_owned(),
        }
    }
}

/// Why [`open_private_database`] failed.
#[derive(Debug)]
pub(crate) enum PrivateDatabaseError {
    /// The file could not be created or opened.
    Open(std::io::Error),
    /// redb refused it (another process holds it, or it is not a redb file).
    Database(redb::DatabaseError),
}

/// Opens the redb file at `path`, creating it with mode 0600 if absent
/// (the address store and the daemon's state file both hold it).
pub(crate) fn open_private_database(path: &Path) -> Result<redb::Database, PrivateDatabaseError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(PrivateDatabaseError::Open)?;
    redb::Builder::new()
        .create_file(file)
        .map_err(PrivateDatabaseError::Database)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const ALICE: &str = "uid=alice,ou=people,dc=example,dc=org";
    const BOB: &str = "uid=bob,ou=people,dc=example,dc=org";

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn reservations_are_create_if_absent_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addresses.redb");
        let a = addr("2002:c000:204:1::10");
        {
            let store = AddressStore::open(&path).unwrap();
            assert_eq!(store.reserve(a, ALICE).unwrap(), Reservation::Created);
            assert_eq!(
                store
                    .reserve(a, "UID=Alice, ou=people,dc=example,dc=org")
                    .unwrap(),
                Reservation::Ours
            );
            assert_eq!(
                store.reserve(a, BOB).unwrap(),
                Reservation::Taken {
                    holder: ALICE.to_owned()
                }
            );
            store.record(ALICE, a).unwrap();
            store.record(ALICE, a).unwrap();
            assert!(matches!(
                store.record(BOB, a),
                Err(StoreError::NotReserved { .. })
            ));
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let store = AddressStore::open(&path).unwrap();
        assert_eq!(store.recorded(ALICE).unwrap(), Some(a));
        assert_eq!(store.recorded(BOB).unwrap(), None);
        assert_eq!(store.holder(a).unwrap().as_deref(), Some(ALICE));
        assert_eq!(
            store.reserve(a, BOB).unwrap(),
            Reservation::Taken {
                holder: ALICE.to_owned()
            }
        );
        assert_eq!(store.records().unwrap().len(), 1);
        assert_eq!(store.reservations().unwrap().len(), 1);
    }

    #[test]
    fn a_second_process_handle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("addresses.redb");
        let _store = AddressStore::open(&path).unwrap();
        assert!(AddressStore::open(&path).is_err());
    }

    #[test]
    fn racing_reservations_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = AddressStore::open(&dir.path().join("a.redb")).unwrap();
        let a = addr("fd00::42");
        let winners: Vec<Reservation> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    scope.spawn(move || store.reserve(a, &format!("cn=e{i},dc=x")).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created = winners
            .iter()
            .filter(|r| **r == Reservation::Created)
            .count();
        assert_eq!(created, 1, "{winners:?}");
    }
}
