//! The configured directory: one of the two backends behind one type.
//!
//! [`Directory`] returns `impl Future`, so it is not dyn-compatible; the
//! daemon holds a [`Backend`] instead, an enum that implements
//! [`Directory`] by delegating to the backend it holds.

use std::net::Ipv6Addr;

use overlay_proto::lease::EntityKind;

use crate::config::DirectoryConfig;
use crate::directory::{AuthError, Directory, DirectoryError, Entity, Password, Reservation};
use crate::embedded::{EmbeddedDirectory, EmbeddedError, LoadReport};
use crate::ldap::{LdapConfigError, LdapDirectory};

/// The daemon's directory. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Backend {
    /// An LDAP server.
    Ldap(LdapDirectory),
    /// The embedded LDIF directory.
    Embedded(EmbeddedDirectory),
}

/// The directory could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The LDAP settings or the service password file.
    #[error(transparent)]
    Ldap(#[from] LdapConfigError),
    /// The LDIF file or the address store.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
}

impl Backend {
    /// Open the configured directory. The LDAP backend does not connect
    /// here (its first operation does); the embedded one loads the LDIF
    /// and opens its store, and returns what the load found.
    pub async fn open(
        config: &DirectoryConfig,
    ) -> Result<(Backend, Option<LoadReport>), OpenError> {
        match config {
            DirectoryConfig::Ldap(ldap) => {
                Ok((Backend::Ldap(LdapDirectory::new(ldap.clone())?), None))
            }
            DirectoryConfig::Embedded {
                ldif_file,
                store_file,
            } => {
                let (directory, report) = EmbeddedDirectory::open(ldif_file, store_file).await?;
                Ok((Backend::Embedded(directory), Some(report)))
            }
        }
    }

    /// Read the LDIF again (embedded backend; SIGHUP). `Ok(None)` for
    /// LDAP, which is always read fresh.
    pub async fn reload(&self) -> Result<Option<LoadReport>, EmbeddedError> {
        match self {
            Backend::Ldap(_) => Ok(None),
            Backend::Embedded(directory) => directory.reload().await.map(Some),
        }
    }

    /// `"ldap"` or `"embedded"`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Ldap(_) => "ldap",
            Backend::Embedded(_) => "embedded",
        }
    }
}

impl Directory for Backend {
    async fn authenticate(&self, user: &str, password: &Password) -> Result<Entity, AuthError> {
        match self {
            Backend::Ldap(d) => d.authenticate(user, password).await,
            Backend::Embedded(d) => d.authenticate(user, password).await,
        }
    }

    async fn lookup(&self, kind: EntityKind, name: &str) -> Result<Option<Entity>, DirectoryError> {
        match self {
            Backend::Ldap(d) => d.lookup(kind, name).await,
            Backend::Embedded(d) => d.lookup(kind, name).await,
        }
    }

    async fn entities(&self) -> Result<Vec<Entity>, DirectoryError> {
        match self {
            Backend::Ldap(d) => d.entities().await,
            Backend::Embedded(d) => d.entities().await,
        }
    }

    async fn reserve_address(
        &self,
        address: Ipv6Addr,
        dn: &str,
    ) -> Result<Reservation, DirectoryError> {
        match self {
            Backend::Ldap(d) => d.reserve_address(address, dn).await,
            Backend::Embedded(d) => d.reserve_address(address, dn).await,
        }
    }

    async fn record_address(&self, dn: &str, address: Ipv6Addr) -> Result<(), DirectoryError> {
        match self {
            Backend::Ldap(d) => d.record_address(dn, address).await,
            Backend::Embedded(d) => d.record_address(dn, address).await,
        }
    }
}
