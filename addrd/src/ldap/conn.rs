//! Connections to the LDAP server: opening one (plain, ldaps or StartTLS
//! with the configured CA), and the shared service connection that is
//! bound once as the service account, reopened after it breaks, with a
//! growing delay between failed attempts so a down server is not hammered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use tokio::sync::Mutex;

use crate::directory::{DirectoryError, Password};

/// Opens connections to one server with fixed settings.
#[derive(Clone)]
pub struct Connector {
    url: String,
    settings: LdapConnSettings,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("url", &self.url).finish()
    }
}

impl Connector {
    /// `tls`: the rustls configuration for ldaps / StartTLS (`None`: the
    /// system's roots, as ldap3 loads them).
    pub fn new(
        url: String,
        starttls: bool,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Connector {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(starttls);
        if let Some(tls) = tls {
            settings = settings.set_config(tls);
        }
        Connector { url, settings }
    }

    /// Open a connection (TCP, then TLS or StartTLS if configured). Its
    /// driver runs as a tokio task that ends with the connection.
    pub async fn open(&self) -> Result<Ldap, DirectoryError> {
        let (conn, ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.url)
            .await
            .map_err(|e| DirectoryError::Connection(format!("{}: {e}", self.url)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection ended");
            }
        });
        Ok(ldap)
    }
}

/// Whether an ldap3 error means the connection is gone (as opposed to an
/// operation the server answered with an error code).
pub fn is_connection_error(e: &LdapError) -> bool {
    matches!(
        e,
        LdapError::Io { .. }
            | LdapError::OpSend { .. }
            | LdapError::ResultRecv { .. }
            | LdapError::IdScrubSend { .. }
            | LdapError::MiscSend { .. }
            | LdapError::EndOfStream
            | LdapError::Timeout { .. }
    ) || matches!(e, LdapError::LdapResult { result } if matches!(result.rc, 51 | 52 | 80))
}

/// An ldap3 error as a [`DirectoryError`].
pub fn directory_error(e: LdapError) -> DirectoryError {
    if is_connection_error(&e) {
        DirectoryError::Connection(e.to_string())
    } else {
        DirectoryError::Operation(e.to_string())
    }
}

/// The service connection: bound as the service account, shared by every
/// operation (ldap3 multiplexes requests on it), reopened on demand.
pub struct ServiceConnection {
    connector: Connector,
    bind_dn: String,
    password: Password,
    backoff_min: Duration,
    backoff_max: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for ServiceConnection {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConnection")
            .field("connector", &self.connector)
            .field("bind_dn", &self.bind_dn)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    ldap: Option<Ldap>,
    /// Counts connections opened, so a failure on an old one does not
    /// discard a newer one.
    generation: u64,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_error: String,
}

/// A handle on the current service connection.
#[derive(Debug)]
pub struct Lease {
    /// The connection (a cheap clone of the shared handle).
    pub ldap: Ldap,
    /// Which connection it is.
    pub generation: u64,
    /// Opened for this request (a failure on it is not a stale
    /// connection, so retrying on a new one is pointless).
    pub fresh: bool,
}

impl ServiceConnection {
    /// A service connection, not opened yet.
    pub fn new(
        connector: Connector,
        bind_dn: String,
        password: Password,
        backoff_min: Duration,
        backoff_max: Duration,
    ) -> ServiceConnection {
        ServiceConnection {
            connector,
            bind_dn,
            password,
            backoff_min,
            backoff_max,
            state: Mutex::new(State {
                ldap: None,
                generation: 0,
                backoff: backoff_min,
                retry_at: None,
                last_error: String::new(),
            }),
        }
    }

    /// The open connection, or a new one opened and bound now. While the
    /// back-off after a failed attempt runs, fails at once with the last
    /// error (a login is not kept waiting on a server that is down).
    pub async fn get(&self) -> Result<Lease, DirectoryError> {
        let mut state = self.state.lock().await;
        if let Some(ldap) = state.ldap.as_mut() {
            if !ldap.is_closed() {
                return Ok(Lease {
                    ldap: ldap.clone(),
                    generation: state.generation,
                    fresh: false,
                });
            }
            state.ldap = None;
        }
        if let Some(at) = state.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(DirectoryError::Connection(format!(
                    "{} (next attempt in {} ms)",
                    state.last_error,
                    (at - now).as_millis()
                )));
            }
        }
        match self.open_and_bind().await {
            Ok(ldap) => {
                state.generation += 1;
                state.backoff = self.backoff_min;
                state.retry_at = None;
                state.ldap = Some(ldap.clone());
                tracing::info!(
                    generation = state.generation,
                    "LDAP service connection open"
                );
                Ok(Lease {
                    ldap,
                    generation: state.generation,
                    fresh: true,
                })
            }
            Err(e) => {
                state.last_error = e.to_string();
                state.retry_at = Some(Instant::now() + state.backoff);
                tracing::warn!(error = %e, retry_in = ?state.backoff, "LDAP service connection failed");
                state.backoff = (state.backoff * 2).min(self.backoff_max);
                Err(e)
            }
        }
    }

    /// Drop connection `generation` after it broke (if it is still the
    /// current one); the next [`get`](Self::get) reconnects at once.
    pub async fn broken(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state.generation == generation && state.ldap.is_some() {
            tracing::warn!(generation, "LDAP service connection lost");
            state.ldap = None;
        }
    }

    async fn open_and_bind(&self) -> Result<Ldap, DirectoryError> {
        let mut ldap = self.connector.open().await?;
        let result = ldap
            .simple_bind(&self.bind_dn, &self.password)
            .await
            .map_err(directory_error)?;
        if result.rc != 0 {
            // Nothing to tidy up beyond dropping the handle.
            let _ = ldap.unbind().await;
            return Err(DirectoryError::ServiceBind(format!(
                "{}: {} (rc {})",
                self.bind_dn,
                if result.text.is_empty() {
                    "refused"
                } else {
                    &result.text
                },
                result.rc
            )));
        }
        Ok(ldap)
    }
}
