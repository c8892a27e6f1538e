//! The LDAP directory backend ([`LdapDirectory`]): the organisation lives
//! in an LDAP server (OpenLDAP, 389-DS, Active Directory…) with the
//! permanet schema (`configs/ldap/`), and addrd talks to it with `ldap3`.
//!
//! - **Service connection.** One connection bound as the service account
//!   (password read from a file) carries searches and writes. It is
//!   reopened when it breaks, with a back-off between failed attempts;
//!   every operation is bounded by the configured timeout.
//! - **Logins.** The name is checked (non-empty, at most 256 bytes, no
//!   control characters) and an empty password refused *before* any
//!   request: an empty-password simple bind is an anonymous bind, which
//!   servers allowing `bind_anon_dn` report as a success. The user is then
//!   searched with the name escaped (`(&(objectClass=inetOrgPerson)(uid=…))`
//!   under `ou=people`; exactly one match, whose `uid` is the name up to
//!   case — the server would also ignore surrounding spaces), and the
//!   password checked by a
//!   simple bind as the found DN on a separate, short-lived connection. An
//!   unknown user takes the same path: the bind is made to a DN that does
//!   not exist, so both cost one search and one bind. The disabled flag is
//!   looked at only after the password was right.
//! - **Groups.** From `memberOf` on the entry where the server keeps it
//!   (values under `ou=groups`), otherwise by searching `groupOfNames` with
//!   `member=<DN>`.
//! - **Addresses.** [`Directory::reserve_address`] adds
//!   `permanetAddress=<address>,ou=addresses,<base>`; `entryAlreadyExists`
//!   means another replica (or an earlier attempt) got there first, and the
//!   holder read back tells which. [`Directory::record_address`] replaces
//!   `permanetAddress` on the entity's entry.
//!
//! The subtrees are fixed below the base DN: `ou=people`, `ou=groups`,
//! `ou=applications`, `ou=systems`, `ou=addresses`.

mod conn;
mod entry;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::future::Future;
use std::io::Read as _;
use std::net::Ipv6Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{ldap_escape, Ldap, LdapError, Mod, Scope, SearchOptions};
use overlay_proto::lease::EntityKind;
use zeroize::Zeroizing;

use crate::directory::{
    AuthError, Directory, DirectoryError, Entity, Password, RefusalReason, Reservation,
};
use conn::{directory_error, is_connection_error, Connector, ServiceConnection};
pub use entry::MAX_NAME_LEN;
use entry::{entity, first_rdn_value, is_below, normalize_dn, valid_name, RawEntry, ENTITY_ATTRS};

/// Where and how to reach the LDAP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (not with `ldaps://`).
    pub starttls: bool,
    /// PEM file with the CA certificate(s) that sign the server's
    /// certificate, for ldaps and StartTLS. `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The service account's DN.
    pub bind_dn: String,
    /// File holding the service account's password (one line; a trailing
    /// newline is ignored). Must not be readable by group or others.
    pub bind_password_file: PathBuf,
    /// The organisation's base DN, e.g. `dc=example,dc=org`.
    pub base_dn: String,
    /// Bound on every directory operation, connecting included.
    pub timeout: Duration,
    /// First delay before reconnecting after a failed attempt; doubles up
    /// to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest delay between reconnection attempts.
    pub backoff_max: Duration,
}

impl LdapConfig {
    /// A configuration with the default timeout (5 s) and back-off
    /// (250 ms doubling to 30 s), no StartTLS and the system's CA roots.
    pub fn new(
        url: impl Into<String>,
        base_dn: impl Into<String>,
        bind_dn: impl Into<String>,
        bind_password_file: impl Into<PathBuf>,
    ) -> LdapConfig {
        LdapConfig {
            url: url.into(),
            starttls: false,
            ca_file: None,
            bind_dn: bind_dn.into(),
            bind_password_file: bind_password_file.into(),
            base_dn: base_dn.into(),
            timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The LDAP configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdapConfigError {
    /// The URL is not `ldap://` or `ldaps://` with a host.
    #[error("LDAP url {0:?}: expected ldap://host[:port] or ldaps://host[:port]")]
    Url(String),
    /// StartTLS was asked for on an `ldaps://` URL.
    #[error("starttls is for ldap:// URLs; {0} is already TLS")]
    StartTlsOnLdaps(String),
    /// A DN setting is empty.
    #[error("{0} is empty")]
    EmptyDn(&'static str),
    /// The password file could not be read.
    #[error("service password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The password file is readable by group or others.
    #[error("service password file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    PasswordFileMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The password file is empty (an empty password would make the
    /// service bind anonymous).
    #[error("service password file {0} is empty")]
    EmptyPassword(PathBuf),
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {problem}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),
}

/// The LDAP backend. Cheap to clone (the state is shared); safe to use
/// from many tasks. See the module documentation.
#[derive(Clone, Debug)]
pub struct LdapDirectory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: Connector,
    service: ServiceConnection,
    timeout: Duration,
    people: String,
    groups: String,
    applications: String,
    systems: String,
    addresses: String,
    /// Where the password of an unknown user is tried, so that an unknown
    /// user costs a bind like a wrong password does.
    absent_dn: String,
}

/// Entries fetched per page when listing every entity.
const PAGE_SIZE: i32 = 500;

impl LdapDirectory {
    /// Check the configuration and read the service password. Does not
    /// connect: the first operation does (and a down server is then an
    /// [`DirectoryError::Connection`], retried with back-off).
    pub fn new(config: LdapConfig) -> Result<LdapDirectory, LdapConfigError> {
        let tls_url = check_url(&config.url)?;
        if tls_url && config.starttls {
            return Err(LdapConfigError::StartTlsOnLdaps(config.url.clone()));
        }
        if config.base_dn.trim().is_empty() {
            return Err(LdapConfigError::EmptyDn("base DN"));
        }
        if config.bind_dn.trim().is_empty() {
            return Err(LdapConfigError::EmptyDn("bind DN"));
        }
        let password = read_password_file(&config.bind_password_file)?;
        let tls = config
            .ca_file
            .as_deref()
            .map(tls_config)
            .transpose()?
            .map(Arc::new);
        if !tls_url && !config.starttls {
            tracing::warn!(url = %config.url, "LDAP without TLS: passwords cross the network in clear unless it is loopback");
        }
        let connector = Connector::new(config.url.clone(), config.starttls, tls, config.timeout);
        let base = config.base_dn.trim();
        let service = ServiceConnection::new(
            connector.clone(),
            config.bind_dn.clone(),
            password,
            config.backoff_min,
            config.backoff_max.max(config.backoff_min),
        );
        Ok(LdapDirectory {
            inner: Arc::new(Inner {
                connector,
                service,
                timeout: config.timeout,
                people: format!("ou=people,{base}"),
                groups: format!("ou=groups,{base}"),
                applications: format!("ou=applications,{base}"),
                systems: format!("ou=systems,{base}"),
                addresses: format!("ou=addresses,{base}"),
                absent_dn: format!("uid=permanet-absent-user,ou=people,{base}"),
            }),
        })
    }

    /// Run `op` on the service connection within the timeout. A
    /// connection that turns out to be broken is dropped; if it was an old
    /// one (the server restarted since), `op` is tried once more on a new
    /// connection. `op` must be safe to repeat.
    async fn with_service<T, F, Fut>(&self, op: F) -> Result<T, DirectoryError>
    where
        F: Fn(Ldap) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T, LdapError>> + Send,
        T: Send,
    {
        let service = &self.inner.service;
        // The connection in use, so a timeout can drop it: a connection
        // that stopped answering (a half-open TCP connection after a
        // network failure) would otherwise time out every operation.
        let in_use = AtomicU64::new(0);
        let attempt = async {
            loop {
                let lease = service.get().await?;
                in_use.store(lease.generation, Ordering::Relaxed);
                match op(lease.ldap).await {
                    Ok(v) => return Ok(v),
                    Err(e) if is_connection_error(&e) => {
                        service.broken(lease.generation).await;
                        if lease.fresh {
                            return Err(directory_error(e));
                        }
                        tracing::info!(error = %e, "LDAP connection was stale; retrying on a new one");
                    }
                    Err(e) => return Err(directory_error(e)),
                }
            }
        };
        match tokio::time::timeout(self.inner.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                let generation = in_use.load(Ordering::Relaxed);
                if generation != 0 {
                    service.broken(generation).await;
                }
                Err(DirectoryError::Timeout(self.inner.timeout))
            }
        }
    }

    /// Search `base` (subtree) with `filter` for at most `sizelimit`
    /// entries (a small number), all entries decoded.
    async fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        sizelimit: i32,
    ) -> Result<Vec<RawEntry>, DirectoryError> {
        let (entries, rc, text) = self
            .with_service(|mut ldap| async move {
                let result = ldap
                    .with_search_options(SearchOptions::new().sizelimit(sizelimit))
                    .search(base, Scope::Subtree, filter, attrs.to_vec())
                    .await?;
                Ok((result.0, result.1.rc, result.1.text))
            })
            .await?;
        // 4: sizeLimitExceeded, with the entries up to the limit asked
        // for (callers ask for 2 to tell one match from several).
        if rc != 0 && rc != 4 && rc != 32 {
            return Err(DirectoryError::Operation(format!(
                "search {base} {filter}: rc {rc} {text}"
            )));
        }
        entries.into_iter().map(RawEntry::decode).collect()
    }

    /// Search `base` (subtree) page by page (RFC 2696), for listings that
    /// may exceed the server's size limit.
    async fn search_all(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<RawEntry>, DirectoryError> {
        let entries = self
            .with_service(|mut ldap| async move {
                let adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> = vec![
                    Box::new(EntriesOnly::new()),
                    Box::new(PagedResults::new(PAGE_SIZE)),
                ];
                let mut stream = ldap
                    .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs.to_vec())
                    .await?;
                let mut entries = Vec::new();
                while let Some(entry) = stream.next().await? {
                    entries.push(entry);
                }
                let result = stream.finish().await;
                Ok((entries, result))
            })
            .await?;
        let (entries, result) = entries;
        match result.rc {
            0 | 32 => {}
            4 => {
                return Err(DirectoryError::Operation(format!(
                    "listing {base}: the server's size limit cut it short after {} entries; \
                     lift it for the service account (OpenLDAP: olcLimits \
                     size=unlimited, or size.prtotal=unlimited)",
                    entries.len()
                )))
            }
            rc => {
                return Err(DirectoryError::Operation(format!(
                    "listing {base} {filter}: rc {rc} {}",
                    result.text
                )))
            }
        }
        entries.into_iter().map(RawEntry::decode).collect()
    }

    /// The one user entry named `user` (already checked with
    /// [`valid_name`]); `None` when there is none, or several.
    async fn find_user(&self, user: &str) -> Result<Option<RawEntry>, DirectoryError> {
        let filter = format!("(&(objectClass=inetOrgPerson)(uid={}))", ldap_escape(user));
        let mut found = self
            .search(&self.inner.people, &filter, &ENTITY_ATTRS, 2)
            .await?;
        found.retain(|e| names_match(e, "uid", user));
        if found.len() > 1 {
            tracing::warn!(uid = %user, "several users match one uid; refusing the login");
            return Ok(None);
        }
        Ok(found.pop())
    }

    /// Check `password` with a simple bind as `dn` on a connection of its
    /// own. `Ok(false)`: refused.
    async fn check_password(&self, dn: &str, password: &str) -> Result<bool, DirectoryError> {
        let attempt = async {
            let mut ldap = self.inner.connector.open().await?;
            let result = ldap
                .simple_bind(dn, password)
                .await
                .map_err(directory_error)?;
            let _ = ldap.unbind().await;
            match result.rc {
                0 => Ok(true),
                // invalidCredentials, inappropriateAuthentication,
                // insufficientAccess, unwillingToPerform (locked accounts).
                48..=50 | 53 => Ok(false),
                rc => Err(DirectoryError::Operation(format!(
                    "bind: rc {rc} {}",
                    result.text
                ))),
            }
        };
        match tokio::time::timeout(self.inner.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(DirectoryError::Timeout(self.inner.timeout)),
        }
    }

    /// The `cn`s of the groups `entry` is a member of.
    async fn groups_of(&self, entry: &RawEntry) -> Result<Vec<String>, DirectoryError> {
        if let Some(groups) = self.groups_from_member_of(entry) {
            return Ok(groups);
        }
        let filter = format!(
            "(&(objectClass=groupOfNames)(member={}))",
            ldap_escape(entry.dn.as_str())
        );
        let groups = self
            .search_all(&self.inner.groups, &filter, &["cn"])
            .await?;
        Ok(groups.iter().filter_map(group_name).collect())
    }

    /// Groups from `memberOf` (only values under `ou=groups`), if the
    /// entry has any.
    fn groups_from_member_of(&self, entry: &RawEntry) -> Option<Vec<String>> {
        let member_of = entry.values("memberOf");
        if member_of.is_empty() {
            return None;
        }
        Some(
            member_of
                .iter()
                .filter(|dn| is_below(dn, &self.inner.groups))
                .filter_map(|dn| first_rdn_value(dn, "cn"))
                .collect(),
        )
    }

    fn subtree(&self, kind: EntityKind) -> (&str, &'static str) {
        match kind {
            EntityKind::User => (&self.inner.people, "(objectClass=inetOrgPerson)"),
            EntityKind::Application => (
                &self.inner.applications,
                "(objectClass=permanetApplication)",
            ),
            EntityKind::System => (&self.inner.systems, "(objectClass=permanetSystem)"),
        }
    }

    /// DN of the reservation entry of `address`.
    fn reservation_dn(&self, address: Ipv6Addr) -> String {
        format!("permanetAddress={address},{}", self.inner.addresses)
    }
}

impl Directory for LdapDirectory {
    async fn authenticate(&self, user: &str, password: &Password) -> Result<Entity, AuthError> {
        let refused = |reason| AuthError::Refused { reason };
        if password.is_empty() {
            return Err(refused(RefusalReason::EmptyPassword));
        }
        if !valid_name(user) {
            return Err(refused(RefusalReason::UnknownUser));
        }
        let found = self.find_user(user).await.map_err(AuthError::Unavailable)?;
        let dn = found
            .as_ref()
            .map_or(self.inner.absent_dn.as_str(), |e| e.dn.as_str());
        let accepted = self
            .check_password(dn, password)
            .await
            .map_err(AuthError::Unavailable)?;
        let Some(found) = found else {
            return Err(refused(RefusalReason::UnknownUser));
        };
        if !accepted {
            return Err(refused(RefusalReason::WrongPassword));
        }
        let groups = self
            .groups_of(&found)
            .await
            .map_err(AuthError::Unavailable)?;
        let user = entity(EntityKind::User, &found, groups).map_err(AuthError::Unavailable)?;
        if user.disabled {
            return Err(refused(RefusalReason::Disabled));
        }
        Ok(user)
    }

    async fn lookup(&self, kind: EntityKind, name: &str) -> Result<Option<Entity>, DirectoryError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let (base, class) = self.subtree(kind);
        let name_attr = if kind == EntityKind::User {
            "uid"
        } else {
            "cn"
        };
        let filter = format!("(&{class}({name_attr}={}))", ldap_escape(name));
        let mut found = self.search(base, &filter, &ENTITY_ATTRS, 2).await?;
        found.retain(|e| names_match(e, name_attr, name));
        if found.len() > 1 {
            return Err(DirectoryError::BadEntry {
                dn: base.to_string(),
                problem: format!("several entries with {name_attr}={name}"),
            });
        }
        let Some(raw) = found.pop() else {
            return Ok(None);
        };
        let groups = self.groups_of(&raw).await?;
        entity(kind, &raw, groups).map(Some)
    }

    async fn entities(&self) -> Result<Vec<Entity>, DirectoryError> {
        // Every group once, rather than one search per entity.
        let groups = self
            .search_all(
                &self.inner.groups,
                "(objectClass=groupOfNames)",
                &["cn", "member"],
            )
            .await?;
        let mut member_groups: HashMap<String, Vec<String>> = HashMap::new();
        for group in &groups {
            let Some(name) = group_name(group) else {
                continue;
            };
            for member in group.values("member") {
                member_groups
                    .entry(normalize_dn(member))
                    .or_default()
                    .push(name.clone());
            }
        }
        let mut all = Vec::new();
        for kind in [
            EntityKind::User,
            EntityKind::Application,
            EntityKind::System,
        ] {
            let (base, class) = self.subtree(kind);
            for raw in self.search_all(base, class, &ENTITY_ATTRS).await? {
                let groups = self.groups_from_member_of(&raw).unwrap_or_else(|| {
                    member_groups
                        .get(&normalize_dn(&raw.dn))
                        .cloned()
                        .unwrap_or_default()
                });
                match entity(kind, &raw, groups) {
                    Ok(e) => all.push(e),
                    Err(e) => tracing::warn!(error = %e, "skipping malformed directory entry"),
                }
            }
        }
        Ok(all)
    }

    async fn reserve_address(
        &self,
        address: Ipv6Addr,
        dn: &str,
    ) -> Result<Reservation, DirectoryError> {
        let entry_dn = self.reservation_dn(address);
        let text = address.to_string();
        let result = self
            .with_service(|mut ldap| {
                let attrs = vec![
                    ("objectClass", HashSet::from(["permanetReservation"])),
                    ("permanetAddress", HashSet::from([text.as_str()])),
                    ("permanetHolder", HashSet::from([dn])),
                ];
                let entry_dn = entry_dn.as_str();
                async move { ldap.add(entry_dn, attrs).await }
            })
            .await?;
        match result.rc {
            0 => return Ok(Reservation::Created),
            68 => {} // entryAlreadyExists
            rc => {
                return Err(DirectoryError::Operation(format!(
                    "reserve {address}: add {entry_dn}: rc {rc} {}",
                    result.text
                )))
            }
        }
        let holder = self.holder(&entry_dn).await?;
        if normalize_dn(&holder) == normalize_dn(dn) {
            Ok(Reservation::Ours)
        } else {
            Ok(Reservation::Taken { holder })
        }
    }

    async fn record_address(&self, dn: &str, address: Ipv6Addr) -> Result<(), DirectoryError> {
        let text = address.to_string();
        let replace = || Mod::Replace("permanetAddress", HashSet::from([text.as_str()]));
        let result = self
            .with_service(|mut ldap| {
                let mods = vec![replace()];
                async move { ldap.modify(dn, mods).await }
            })
            .await?;
        let result = if result.rc == 65 {
            // objectClassViolation: a user entry without the auxiliary
            // class; add it in the same modification.
            self.with_service(|mut ldap| {
                let mods = vec![
                    Mod::Add("objectClass", HashSet::from(["permanetEntity"])),
                    replace(),
                ];
                async move { ldap.modify(dn, mods).await }
            })
            .await?
        } else {
            result
        };
        match result.rc {
            0 => Ok(()),
            rc => Err(DirectoryError::Operation(format!(
                "record {address} on {dn}: rc {rc} {}{}",
                result.text,
                if rc == 50 {
                    " (the service account needs write access to permanetAddress, \
                     and to objectClass for entries without permanetEntity)"
                } else {
                    ""
                }
            ))),
        }
    }
}

impl LdapDirectory {
    /// The `permanetHolder` of the reservation entry `entry_dn`.
    async fn holder(&self, entry_dn: &str) -> Result<String, DirectoryError> {
        let (entries, rc, text) = self
            .with_service(|mut ldap| async move {
                let result = ldap
                    .search(
                        entry_dn,
                        Scope::Base,
                        "(objectClass=permanetReservation)",
                        vec!["permanetHolder"],
                    )
                    .await?;
                Ok((result.0, result.1.rc, result.1.text))
            })
            .await?;
        if rc != 0 {
            return Err(DirectoryError::Operation(format!(
                "read reservation {entry_dn}: rc {rc} {text}"
            )));
        }
        let entry = entries
            .into_iter()
            .next()
            .map(RawEntry::decode)
            .transpose()?
            .ok_or_else(|| DirectoryError::BadEntry {
                dn: entry_dn.to_string(),
                problem: "exists but cannot be read (is it a permanetReservation?)".into(),
            })?;
        entry
            .single("permanetHolder")?
            .map(str::to_string)
            .ok_or_else(|| entry.bad("no permanetHolder".into()))
    }
}

/// Whether `entry` has `name` as a value of `attr`, up to case. The
/// server's matching rule (caseIgnoreMatch) also ignores leading, trailing
/// and repeated spaces, so `" alice"` would find alice: such near misses
/// are not the same name and are treated as unknown.
fn names_match(entry: &RawEntry, attr: &str, name: &str) -> bool {
    entry
        .values(attr)
        .iter()
        .any(|v| v == name || v.to_lowercase() == name.to_lowercase())
}

/// A group's `cn` (its RDN value when it has several).
fn group_name(group: &RawEntry) -> Option<String> {
    match group.values("cn") {
        [one] => Some(one.clone()),
        _ => first_rdn_value(&group.dn, "cn"),
    }
}

/// Check the URL's scheme and host; `true` for `ldaps://`.
fn check_url(url: &str) -> Result<bool, LdapConfigError> {
    let bad = || LdapConfigError::Url(url.to_string());
    let (tls, rest) = if let Some(rest) = url.strip_prefix("ldaps://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ldap://") {
        (false, rest)
    } else {
        return Err(bad());
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(bad());
    }
    Ok(tls)
}

/// Read the service password: owner-only file, one line.
fn read_password_file(path: &Path) -> Result<Password, LdapConfigError> {
    let io = |source| LdapConfigError::PasswordFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LdapConfigError::PasswordFileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(io)?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(LdapConfigError::EmptyPassword(path.to_path_buf()));
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// A rustls client configuration trusting the certificates in `ca_file`.
fn tls_config(ca_file: &Path) -> Result<rustls::ClientConfig, LdapConfigError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    let ca_error = |problem: String| LdapConfigError::CaFile {
        path: ca_file.to_path_buf(),
        problem,
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
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LdapConfigError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password_file(mode: u32, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("pw");
        fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"));
        (dir, path)
    }

    fn config(url: &str, pw: &Path) -> LdapConfig {
        LdapConfig::new(url, "dc=example,dc=org", "cn=addrd,dc=example,dc=org", pw)
    }

    #[test]
    fn configuration_is_checked() {
        let (_d, pw) = password_file(0o600, "secret\n");
        assert!(LdapDirectory::new(config("ldap://127.0.0.1:389", &pw)).is_ok());
        assert!(LdapDirectory::new(config("ldaps://ldap.example.org", &pw)).is_ok());
        for bad in ["http://x", "ldap://", "ldap://:389", "ldapi:///"] {
            assert!(
                matches!(
                    LdapDirectory::new(config(bad, &pw)),
                    Err(LdapConfigError::Url(_))
                ),
                "{bad}"
            );
        }
        let mut c = config("ldaps://x", &pw);
        c.starttls = true;
        assert!(matches!(
            LdapDirectory::new(c),
            Err(LdapConfigError::StartTlsOnLdaps(_))
        ));
        let mut c = config("ldap://x", &pw);
        c.base_dn = " ".into();
        assert!(matches!(
            LdapDirectory::new(c),
            Err(LdapConfigError::EmptyDn(_))
        ));
    }

    #[test]
    fn debug_output_has_no_password() {
        let (_d, pw) = password_file(0o600, "hunter2-service-secret");
        let dir = LdapDirectory::new(config("ldap://x", &pw)).unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{dir:?}");
        assert!(shown.contains("cn=addrd"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn password_file_rules() {
        let (_d, pw) = password_file(0o640, "secret");
        assert!(matches!(
            LdapDirectory::new(config("ldap://x", &pw)),
            Err(LdapConfigError::PasswordFileMode { mode: 0o640, .. })
        ));
        let (_d, pw) = password_file(0o600, "\n");
        assert!(matches!(
            LdapDirectory::new(config("ldap://x", &pw)),
            Err(LdapConfigError::EmptyPassword(_))
        ));
        let (_d, pw) = password_file(0o600, "s3cret\r\n");
        assert_eq!(
            read_password_file(&pw)
                .map(|p| p.to_string())
                .ok()
                .as_deref(),
            Some("s3cret")
        );
        assert!(matches!(
            LdapDirectory::new(config("ldap://x", Path::new("/nonexistent/pw"))),
            Err(LdapConfigError::PasswordFile { .. })
        ));
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let (_d, pw) = password_file(0o600, "secret");
        let (_c, ca) = password_file(0o644, "not a certificate\n");
        let mut c = config("ldaps://x", &pw);
        c.ca_file = Some(ca);
        assert!(matches!(
            LdapDirectory::new(c),
            Err(LdapConfigError::CaFile { .. })
        ));
    }

    /// A server that is not there: a clear connection error, fast, and
    /// the next attempt waits for the back-off.
    #[tokio::test]
    async fn unreachable_server_is_a_connection_error() {
        let (_d, pw) = password_file(0o600, "secret");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut c = config(&format!("ldap://127.0.0.1:{port}"), &pw);
        c.backoff_min = Duration::from_secs(60);
        let dir = LdapDirectory::new(c).unwrap_or_else(|e| panic!("{e}"));
        let first = dir.lookup(EntityKind::User, "alice").await;
        assert!(
            matches!(first, Err(DirectoryError::Connection(_))),
            "{first:?}"
        );
        match dir.lookup(EntityKind::User, "alice").await {
            Err(DirectoryError::Connection(m)) => assert!(m.contains("next attempt in"), "{m}"),
            other => panic!("{other:?}"),
        }
        let login = dir
            .authenticate("alice", &Zeroizing::new("pw".to_string()))
            .await;
        assert!(matches!(login, Err(AuthError::Unavailable(_))), "{login:?}");
    }
}
