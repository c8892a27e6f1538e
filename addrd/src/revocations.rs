//! Where `addrd revoke` is kept, so that every addrd sees it at the next
//! renewal: with the embedded backend in the state file ([`State`]); with
//! LDAP in the directory itself, so every replica sees it.
//!
//! LDAP: one entry per revoked entity, `cn=KIND:NAME,ou=revocations,BASE`
//! (object class `applicationProcess` from the core schema: no schema
//! change), its `description` the Unix time (seconds) of the latest
//! revocation. The service account needs add and write below
//! `ou=revocations` (configs/ldap/README.md). A missing `ou=revocations`
//! reads as "nothing revoked"; revoking then fails with the server's
//! error, which names it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{dn_escape, Ldap, LdapConnAsync, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};
use overlay_proto::lease::EntityKind;
use zeroize::Zeroizing;

use crate::config::Problem;
use crate::directory::DirectoryError;
use crate::keys::read_secret_file;
use crate::ldap::LdapConfig;
use crate::state::{revocation_key, State, StateError};

/// LDAP result code: no such object.
const NO_SUCH_OBJECT: u32 = 32;
/// LDAP result code: entry already exists.
const ALREADY_EXISTS: u32 = 68;

/// The revocation list of the configured backend.
#[derive(Clone, Debug)]
pub enum Revocations {
    /// In the state file (embedded backend).
    Local(State),
    /// In the LDAP directory.
    Ldap(Arc<LdapRevocations>),
}

/// Reading or writing revocations failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// The directory.
    #[error("revocations in the directory: {0}")]
    Directory(#[from] DirectoryError),
}

impl Revocations {
    /// Record a revocation of `kind` `name` at `at` (Unix seconds).
    pub async fn revoke(
        &self,
        kind: EntityKind,
        name: &str,
        at: u64,
    ) -> Result<(), RevocationError> {
        match self {
            Revocations::Local(state) => Ok(state.revoke(kind, name, at)?),
            Revocations::Ldap(ldap) => Ok(ldap.revoke(kind, name, at).await?),
        }
    }

    /// When `kind` `name` was last revoked, if ever.
    pub async fn revoked_at(
        &self,
        kind: EntityKind,
        name: &str,
    ) -> Result<Option<u64>, RevocationError> {
        match self {
            Revocations::Local(state) => Ok(state.revoked_at(kind, name)?),
            Revocations::Ldap(ldap) => Ok(ldap.revoked_at(kind, name).await?),
        }
    }

    /// Every revocation, by `kind:name`.
    pub async fn all(&self) -> Result<HashMap<String, u64>, RevocationError> {
        match self {
            Revocations::Local(state) => Ok(state.revocations()?.into_iter().collect()),
            Revocations::Ldap(ldap) => Ok(ldap.all().await?),
        }
    }
}

/// Revocation entries under `ou=revocations`.
pub struct LdapRevocations {
    url: String,
    settings: LdapConnSettings,
    bind_dn: String,
    password: Zeroizing<String>,
    base: String,
    timeout: Duration,
}

impl std::fmt::Debug for LdapRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapRevocations")
            .field("url", &self.url)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl LdapRevocations {
    /// For the directory of `config`, bound as its service account (the
    /// password file read now, 0600 checked), TLS as configured.
    pub fn new(config: &LdapConfig) -> Result<LdapRevocations, Problem> {
        let password = read_secret_file(&config.bind_password_file)?;
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout)
            .set_starttls(config.starttls);
        if let Some(ca_file) = &config.ca_file {
            settings = settings.set_config(Arc::new(tls_config(ca_file)?));
        }
        Ok(LdapRevocations {
            url: config.url.clone(),
            settings,
            bind_dn: config.bind_dn.clone(),
            password,
            base: format!("ou=revocations,{}", config.base_dn.trim()),
            timeout: config.timeout,
        })
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let (conn, mut ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.url)
            .await
            .map_err(|e| DirectoryError::Connection(format!("{}: {e}", self.url)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        ldap.with_timeout(self.timeout)
            .simple_bind(&self.bind_dn, &self.password)
            .await
            .and_then(|r| r.success())
            .map_err(|e| DirectoryError::ServiceBind(e.to_string()))?;
        Ok(ldap)
    }

    /// Add or update the entity's revocation entry.
    pub async fn revoke(
        &self,
        kind: EntityKind,
        name: &str,
        at: u64,
    ) -> Result<(), DirectoryError> {
        let mut ldap = self.connect().await?;
        let cn = revocation_key(kind, name);
        let dn = format!("cn={},{}", dn_escape(&cn), self.base);
        let at_text = at.to_string();
        let added = ldap
            .with_timeout(self.timeout)
            .add(
                &dn,
                vec![
                    ("objectClass", ["applicationProcess"].into()),
                    ("cn", [cn.as_str()].into()),
                    ("description", [at_text.as_str()].into()),
                ],
            )
            .await
            .map_err(operation)?;
        let result = if added.rc == ALREADY_EXISTS {
            ldap.with_timeout(self.timeout)
                .modify(
                    &dn,
                    vec![Mod::Replace("description", [at_text.as_str()].into())],
                )
                .await
                .map_err(operation)?
                .success()
                .map(drop)
        } else {
            added.success().map(drop)
        };
        let _ = ldap.unbind().await;
        result.map_err(|e| DirectoryError::Operation(format!("{dn}: {e}")))
    }

    /// The entity's revocation time, if it has an entry (one base search).
    pub async fn revoked_at(
        &self,
        kind: EntityKind,
        name: &str,
    ) -> Result<Option<u64>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let dn = format!("cn={},{}", dn_escape(revocation_key(kind, name)), self.base);
        let result = ldap
            .with_timeout(self.timeout)
            .search(
                &dn,
                Scope::Base,
                "(objectClass=applicationProcess)",
                vec!["description"],
            )
            .await
            .map_err(operation)?;
        let _ = ldap.unbind().await;
        if result.1.rc == NO_SUCH_OBJECT {
            return Ok(None);
        }
        let (entries, _) = result
            .success()
            .map_err(|e| DirectoryError::Operation(format!("{dn}: {e}")))?;
        let at = entries.into_iter().next().and_then(|entry| {
            SearchEntry::construct(entry)
                .attrs
                .get("description")
                .and_then(|v| v.first())
                .and_then(|d| d.trim().parse::<u64>().ok())
        });
        Ok(at)
    }

    /// Every revocation entry, by `kind:name`. Entries whose description
    /// is not a number are skipped and logged.
    pub async fn all(&self) -> Result<HashMap<String, u64>, DirectoryError> {
        let mut ldap = self.connect().await?;
        let result = ldap
            .with_timeout(self.timeout)
            .search(
                &self.base,
                Scope::OneLevel,
                "(objectClass=applicationProcess)",
                vec!["cn", "description"],
            )
            .await
            .map_err(operation)?;
        let _ = ldap.unbind().await;
        let mut out = HashMap::new();
        if result.1.rc == NO_SUCH_OBJECT {
            return Ok(out);
        }
        let (entries, _) = result
            .success()
            .map_err(|e| DirectoryError::Operation(format!("{}: {e}", self.base)))?;
        for entry in entries {
            let entry = SearchEntry::construct(entry);
            let cn = entry.attrs.get("cn").and_then(|v| v.first());
            let at = entry
                .attrs
                .get("description")
                .and_then(|v| v.first())
                .and_then(|d| d.trim().parse::<u64>().ok());
            match (cn, at) {
                (Some(cn), Some(at)) => {
                    out.insert(cn.to_lowercase(), at);
                }
                _ => {
                    tracing::warn!(dn = %entry.dn, "revocation entry without a cn and a numeric description; ignored")
                }
            }
        }
        Ok(out)
    }
}

fn operation(e: LdapError) -> DirectoryError {
    match e {
        LdapError::Timeout { .. } => DirectoryError::Operation(format!("timed out: {e}")),
        other => DirectoryError::Connection(other.to_string()),
    }
}

fn tls_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, Problem> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    let ca_error = |problem: String| Problem::Io {
        path: ca_file.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, problem),
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_error(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| ca_error(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ca_error(format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_error(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}
