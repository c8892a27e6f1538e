//! `addrd` command line. Every subcommand returns an [`Outcome`] or an
//! error; [`main`] is the one place that maps them to exit codes:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success (`check-login`: accepted) |
//! | 1 | error (bad config, unreadable key, directory down, no daemon running), or the answer is "no" (`check-login`: refused; `show`: no such entity) |
//! | 2 | usage error (from clap) |
//!
//! Admin commands that read or change the daemon's state (`users`,
//! `show`, `revoke`, `issue-lease`, `check-login`) ask the running daemon through its
//! control socket; when none answers they open the directory and the state
//! file themselves (redb lets only one process open them).

use std::io::{self, IsTerminal, Read, Write};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use addrd::alloc::Allocator;
use addrd::audit::{AuditEvent, AuditLog};
use addrd::backend::Backend;
use addrd::bindings::{BindingCache, BindingCacheConfig};
use addrd::channel::{LoginChannel, Overlay};
use addrd::config::{Config, DirectoryConfig, LogLevel};
use addrd::control::{self, ClientError, Context, EntityReport, Response};
use addrd::directory::{AuthError, Directory, Password};
use addrd::dns::{DnsServer, ZoneConfig, ZoneHandle};
use addrd::guard::GuardConfig;
use addrd::homeagent::{HomeAgent, HomeAgentConfig};
use addrd::issuer::{IssuePolicy, Issuer};
use addrd::keys;
use addrd::revocations::{LdapRevocations, Revocations};
use addrd::service::Service;
use addrd::state::State;
use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::{Parser, Subcommand, ValueEnum};
use daemon_kit::logging::{init as init_logging, LogLevelHandle};
use overlay_proto::lease::{EntityKind, SignedLease};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};
use zeroize::Zeroizing;

/// Default config file.
const DEFAULT_CONFIG: &str = "/etc/permanet/addrd.toml";

/// Longest password read from stdin.
const MAX_PASSWORD_LEN: u64 = 4096;

/// How often the running daemon reads the whole directory again (new
/// entities get addresses and DNS names without a SIGHUP).
const REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// How soon a directory that could not be read is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// permanet address authority: directory, permanent addresses, leases, DNS.
#[derive(Debug, Parser)]
#[command(name = "addrd", version, about, long_about = None)]
struct Cli {
    /// Config file (TOML).
    #[arg(long, short, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Run,
    /// List every user, application and system.
    Users {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show one entity, by name or by address.
    Show {
        /// A name (any kind) or an IPv6 address.
        #[arg(value_name = "NAME|ADDRESS")]
        what: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show the running daemon's binding cache (home agent).
    Bindings {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show the running daemon's state (JSON).
    Status,
    /// Refuse further renewals of an entity's current sessions, at once.
    Revoke {
        /// The entity's name.
        name: String,
        /// Its kind.
        #[arg(long, value_enum, default_value = "user")]
        kind: Kind,
    },
    /// Check a user's password (read from stdin); prints "accepted" or "refused".
    CheckLogin {
        /// The user name.
        user: String,
    },
    /// Print the authority's public key (base64), for tunneld's authority-key.
    AuthorityKey,
    /// Print a new random 32-byte key in base64 (authority seed, channel
    /// key or allocation key): `umask 077; addrd genkey > authority.key`.
    Genkey,
    /// Sign a lease for an entity's public key (a server's first lease).
    IssueLease {
        /// The entity's name.
        name: String,
        /// Its kind.
        #[arg(long, value_enum, default_value = "system")]
        kind: Kind,
        /// File holding the entity's X25519 public key (base64), e.g. from
        /// `tunneld pubkey < server.key`.
        #[arg(long, value_name = "FILE")]
        public_key_file: PathBuf,
        /// Where to write the signed lease (binary).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Lifetime in seconds (default: the config's lease-lifetime; at
        /// most 604800). Until the server renews over the login channel,
        /// its lease file must be replaced before it ends.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=604_800))]
        lifetime: Option<u64>,
    },
}

/// An entity kind on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    User,
    Application,
    System,
}

impl Kind {
    fn entity_kind(self) -> EntityKind {
        match self {
            Kind::User => EntityKind::User,
            Kind::Application => EntityKind::Application,
            Kind::System => EntityKind::System,
        }
    }
}

/// How a subcommand that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Done.
    Success,
    /// Done, but the answer is "no"; already printed.
    Failure,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config;
    let result = match cli.command {
        Command::Run => run(&config),
        Command::Genkey => genkey(),
        Command::AuthorityKey => authority_key(&config),
        other => block_on(command(&config, other)),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Err(e) => {
            eprintln!("addrd: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn block_on<T>(future: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(future)
}

async fn command(path: &Path, command: Command) -> anyhow::Result<Outcome> {
    let config = Config::load(path)?;
    match command {
        Command::Users { json } => {
            let entities = entities(&config).await?;
            print_entities(&entities, json)
        }
        Command::Show { what, json } => {
            let entities = entities(&config).await?;
            let found = find(&entities, &what);
            if found.is_empty() {
                eprintln!("addrd: no user, application or system named or addressed {what:?}");
                return Ok(Outcome::Failure);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                for (i, entity) in found.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    print_entity(entity);
                }
            }
            Ok(Outcome::Success)
        }
        Command::Bindings { json } => {
            match control::request(&config.control_socket, "bindings").await {
                Ok(Response::Bindings { bindings }) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&bindings)?);
                    } else if bindings.is_empty() {
                        println!("no bindings");
                    } else {
                        for b in bindings {
                            println!(
                                "{}\t{}\t{}\tseq {}\tupdated {}s ago\texpires in {}s",
                                b.address, b.name, b.endpoint, b.sequence, b.age, b.expires_in
                            );
                        }
                    }
                    Ok(Outcome::Success)
                }
                Ok(other) => unexpected(other),
                Err(ClientError::NotRunning(socket)) => {
                    eprintln!(
                    "addrd: daemon not running (no answer on {}); the binding cache exists only in a running addrd",
                    socket.display()
                );
                    Ok(Outcome::Failure)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Status => match control::request(&config.control_socket, "status").await {
            Ok(Response::Status(status)) => {
                println!("{}", serde_json::to_string_pretty(&status)?);
                Ok(Outcome::Success)
            }
            Ok(other) => unexpected(other),
            Err(ClientError::NotRunning(socket)) => {
                eprintln!(
                    "addrd: daemon not running (no answer on {})",
                    socket.display()
                );
                Ok(Outcome::Failure)
            }
            Err(e) => Err(e.into()),
        },
        Command::Revoke { name, kind } => revoke(&config, kind.entity_kind(), &name).await,
        Command::CheckLogin { user } => check_login(&config, &user).await,
        Command::IssueLease {
            name,
            kind,
            public_key_file,
            out,
            lifetime,
        } => {
            let lifetime = lifetime.map(Duration::from_secs);
            issue_lease(
                &config,
                kind.entity_kind(),
                &name,
                &public_key_file,
                &out,
                lifetime,
            )
            .await
        }
        Command::Run | Command::Genkey | Command::AuthorityKey => {
            bail!("internal: command dispatched twice")
        }
    }
}

fn unexpected(response: Response) -> anyhow::Result<Outcome> {
    match response {
        Response::Error { message } => bail!("the daemon refused: {message}"),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
}

// --------------------------------------------------------- local access

/// The service over the configured directory, opened by this process
/// (no daemon running).
async fn open_service(config: &Config) -> anyhow::Result<Service<Backend>> {
    let authority = keys::read_authority_file(&config.authority_key_file)
        .with_context(|| config.path.display().to_string())?;
    let allocation = keys::read_allocation_key_file(&config.allocation_key_file)
        .with_context(|| config.path.display().to_string())?;
    let (backend, report) = Backend::open(&config.directory)
        .await
        .with_context(|| format!("{}: opening the directory", config.path.display()))?;
    if let Some(report) = report {
        for skipped in &report.skipped {
            warn!(%skipped, "directory entry skipped");
        }
    }
    let state = State::open(&config.state_file).context("opening the state file")?;
    let revocations = match &config.directory {
        DirectoryConfig::Embedded { .. } => Revocations::Local(state.clone()),
        DirectoryConfig::Ldap(ldap) => Revocations::Ldap(Arc::new(
            LdapRevocations::new(ldap)
                .with_context(|| format!("{}: directory", config.path.display()))?,
        )),
    };
    let allocator = Allocator::new(config.plan, allocation, config.ipv4_policy);
    let issuer = Issuer::new(
        authority,
        allocator,
        IssuePolicy {
            lifetime: config.lease_lifetime,
            max_session_age: config.max_session_age,
        },
        state,
    )
    .context("reading the state file")?;
    Ok(Service::new(backend, issuer, revocations))
}

async fn entities(config: &Config) -> anyhow::Result<Vec<EntityReport>> {
    match control::request(&config.control_socket, "users").await {
        Ok(Response::Entities { entities }) => return Ok(entities),
        Ok(other) => {
            unexpected(other)?;
        }
        Err(ClientError::NotRunning(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let service = open_service(config).await?;
    let entities = service.refresh().await.context("reading the directory")?;
    let revoked = service.revocations().all().await?;
    Ok(control::entity_reports(&entities, &revoked))
}

fn find<'a>(entities: &'a [EntityReport], what: &str) -> Vec<&'a EntityReport> {
    if let Ok(address) = what.parse::<Ipv6Addr>() {
        let exact: Vec<_> = entities
            .iter()
            .filter(|e| e.address.as_deref().and_then(|a| a.parse().ok()) == Some(address))
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        // An address inside a system's SVN (not an application's).
        return entities
            .iter()
            .filter(|e| e.kind == "system")
            .filter(|e| {
                e.address
                    .as_deref()
                    .and_then(|a| a.parse::<Ipv6Addr>().ok())
                    .and_then(|a| ipnet::Ipv6Net::new(a, 64).ok())
                    .is_some_and(|net| net.trunc().contains(&address))
            })
            .collect();
    }
    entities
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(what))
        .collect()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

fn print_entities(entities: &[EntityReport], json: bool) -> anyhow::Result<Outcome> {
    if json {
        println!("{}", serde_json::to_string_pretty(entities)?);
        return Ok(Outcome::Success);
    }
    let rows: Vec<[String; 5]> = entities
        .iter()
        .map(|e| {
            let groups = if e.kind == "application" {
                format!("allowed:{}", list(&e.allowed_groups))
            } else {
                list(&e.groups)
            };
            [
                e.name.clone(),
                e.kind.clone(),
                e.address.clone().unwrap_or_else(|| "-".to_owned()),
                groups,
                if e.disabled { "disabled" } else { "-" }.to_owned(),
            ]
        })
        .collect();
    let header = ["NAME", "KIND", "ADDRESS", "GROUPS", "DISABLED"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = io::stdout().lock();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(Outcome::Success)
}

fn print_entity(e: &EntityReport) {
    println!("name:     {}", e.name);
    println!("kind:     {}", e.kind);
    println!("dn:       {}", e.dn);
    println!(
        "address:  {}",
        e.address.as_deref().unwrap_or("(not assigned)")
    );
    match e.kind.as_str() {
        "application" => {
            println!("system:   {}", e.system.as_deref().unwrap_or("-"));
            println!("allowed:  {}", list(&e.allowed_groups));
        }
        _ => println!("groups:   {}", list(&e.groups)),
    }
    println!("disabled: {}", if e.disabled { "yes" } else { "no" });
    if let Some(at) = e.revoked_at {
        println!("revoked:  at {at} (Unix time); sessions started before are not renewed");
    }
}

async fn revoke(config: &Config, kind: EntityKind, name: &str) -> anyhow::Result<Outcome> {
    let request = format!("revoke {} {name}", kind.as_str());
    if name.split_ascii_whitespace().count() != 1 {
        bail!("{name:?} is not a name");
    }
    match control::request(&config.control_socket, &request).await {
        Ok(Response::Done) => {
            println!(
                "revoked {} {name}: its sessions will not be renewed",
                kind.as_str()
            );
            return Ok(Outcome::Success);
        }
        Ok(other) => return unexpected(other),
        Err(ClientError::NotRunning(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let service = open_service(config).await?;
    service.revoke(kind, name, control::now()).await?;
    // No daemon: the audit log is this command's to write.
    let audit = match &config.audit_log {
        Some(path) => {
            AuditLog::open(path).with_context(|| format!("audit-log {}", path.display()))?
        }
        None => AuditLog::tracing_only(),
    };
    audit.record(
        std::time::SystemTime::now(),
        &AuditEvent::Revoked {
            kind,
            user: name,
            key: None,
        },
    );
    println!(
        "revoked {} {name}: its sessions will not be renewed",
        kind.as_str()
    );
    Ok(Outcome::Success)
}

async fn check_login(config: &Config, user: &str) -> anyhow::Result<Outcome> {
    let password = read_password()?;
    if user.contains(['\n', '\0']) {
        // Not a name any directory holds; the answer is the same as for
        // an unknown user.
        return Ok(login_outcome(false));
    }
    // Through a running daemon (it holds the embedded store): the user and
    // the password go in the request's body, never on its first line.
    let mut body = Zeroizing::new(Vec::with_capacity(user.len() + password.len() + 2));
    body.extend_from_slice(user.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(password.as_bytes());
    body.push(b'\n');
    match control::request_with_body(&config.control_socket, "check-login", &body).await {
        Ok(Response::Login { accepted }) => return Ok(login_outcome(accepted)),
        Ok(other) => return unexpected(other),
        Err(ClientError::NotRunning(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let (backend, _) = Backend::open(&config.directory)
        .await
        .with_context(|| format!("{}: opening the directory", config.path.display()))?;
    match backend.authenticate(user, &password).await {
        Ok(_) => Ok(login_outcome(true)),
        Err(AuthError::Refused { .. }) => Ok(login_outcome(false)),
        Err(e) => Err(e.into()),
    }
}

fn login_outcome(accepted: bool) -> Outcome {
    if accepted {
        println!("accepted");
        Outcome::Success
    } else {
        println!("refused");
        Outcome::Failure
    }
}

/// The password from stdin: the first line (without its line ending),
/// at most [`MAX_PASSWORD_LEN`] bytes. Never echoed, never logged.
fn read_password() -> anyhow::Result<Password> {
    if io::stdin().is_terminal() {
        eprint!("password: ");
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_PASSWORD_LEN as usize + 1));
    io::stdin()
        .lock()
        .take(MAX_PASSWORD_LEN + 1)
        .read_to_end(&mut bytes)
        .context("reading the password from stdin")?;
    if bytes.len() as u64 > MAX_PASSWORD_LEN {
        bail!("password on stdin is longer than {MAX_PASSWORD_LEN} bytes");
    }
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).context("the password is not UTF-8")?;
    Ok(Password::new(text.to_owned()))
}

async fn issue_lease(
    config: &Config,
    kind: EntityKind,
    name: &str,
    public_key_file: &Path,
    out: &Path,
    lifetime: Option<Duration>,
) -> anyhow::Result<Outcome> {
    let key = keys::read_public_key_file(public_key_file)?;
    if name.split_ascii_whitespace().count() != 1 {
        bail!("{name:?} is not a name");
    }
    let mut request = format!("issue-lease {} {name} {key}", kind.as_str());
    if let Some(lifetime) = lifetime {
        request.push_str(&format!(" {}", lifetime.as_secs()));
    }
    let bytes = match control::request(&config.control_socket, &request).await {
        Ok(Response::Lease { lease }) => base64::engine::general_purpose::STANDARD
            .decode(lease)
            .context("the daemon's lease is not base64")?,
        Ok(other) => return unexpected(other),
        Err(ClientError::NotRunning(_)) => {
            let service = open_service(config).await?;
            service
                .issue_for(kind, name, key, control::now(), lifetime)
                .await?
                .into_bytes()
        }
        Err(e) => return Err(e.into()),
    };
    // Check what is written is what was asked for.
    let authority = keys::read_authority_file(&config.authority_key_file)?.public_key();
    let signed = SignedLease::verify(&bytes, &authority, control::now())
        .context("the issued lease does not verify")?;
    write_file(out, &bytes)?;
    let lease = signed.lease();
    println!(
        "wrote the {} lease of {} ({}, serial {}, valid until Unix time {}) to {}",
        lease.kind.as_str(),
        lease.name,
        lease.prefix,
        lease.serial,
        lease.not_after.as_secs(),
        out.display()
    );
    Ok(Outcome::Success)
}

/// Write `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half a lease.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = name.to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn genkey() -> anyhow::Result<Outcome> {
    let text = keys::generate_key();
    let mut out = io::stdout().lock();
    writeln!(out, "{}", *text).context("writing the key to stdout")?;
    out.flush().context("writing the key to stdout")?;
    Ok(Outcome::Success)
}

fn authority_key(path: &Path) -> anyhow::Result<Outcome> {
    let config = Config::load(path)?;
    let authority = keys::read_authority_file(&config.authority_key_file)
        .with_context(|| format!("{}: authority-key-file", config.path.display()))?;
    println!("{}", keys::authority_public_text(&authority));
    Ok(Outcome::Success)
}

// ----------------------------------------------------------------- run

fn run(path: &Path) -> anyhow::Result<Outcome> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            init_logging(LogLevel::Info);
            return Err(e.into());
        }
    };
    let log_level = init_logging(config.log_level);
    if config.ipv4_policy.dangerous_allow_private {
        warn!("dangerous-allow-private-ipv4 is set: 6to4 prefixes may embed private IPv4 addresses (labs only)");
    }
    block_on(serve(config, log_level))
}

/// addrd's node on the overlay (DESIGN §6, §9): its own lease on the
/// infrastructure subnet, the binding cache it feeds, the zone it answers.
fn home_agent(
    config: &Config,
    service: &Service<Backend>,
    static_key: &overlay_proto::handshake::StaticKeypair,
    bindings: &Arc<Mutex<BindingCache>>,
    zone: &ZoneHandle,
) -> anyhow::Result<Overlay> {
    let prefix = config
        .plan
        .overlay()
        .subnet(overlay_proto::addr::INFRASTRUCTURE_SUBNET_ID);
    let issuer = service.issuer();
    let lease = issuer.authority_lease(static_key.public(), prefix, control::now())?;
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let home = HomeAgent::new(
        HomeAgentConfig {
            keypair: static_key.clone(),
            authority: issuer.authority_key(),
            lease,
            ipv4_policy: config.ipv4_policy,
        },
        Arc::clone(bindings),
        seed,
    );
    info!(address = %home.address(), "home agent on the overlay");
    Ok(Overlay {
        home,
        zone: Some(zone.clone()),
        prefix,
    })
}

/// Everything the running daemon owns.
struct Daemon {
    config: Config,
    service: Arc<Service<Backend>>,
    zone: Option<ZoneHandle>,
    log_level: Option<LogLevelHandle>,
    audit: Arc<AuditLog>,
}

async fn serve(config: Config, log_level: Option<LogLevelHandle>) -> anyhow::Result<Outcome> {
    let file = config.path.display().to_string();
    let static_key = keys::read_static_key_file(&config.static_key_file)
        .with_context(|| format!("{file}: static-key-file"))?;
    let mut signals = Signals {
        terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
        hangup: signal(SignalKind::hangup()).context("installing a SIGHUP handler")?,
    };
    // The control socket first: it is what tells a second daemon with the
    // same config to stop before it touches the store.
    let control = control::bind(&config.control_socket).await?;
    let service = Arc::new(open_service(&config).await?);
    info!(
        backend = service.directory().name(),
        authority = %keys::authority_public_text_of(&service.issuer().authority_key()),
        "directory open"
    );
    assign_all(&service).await;
    // A directory that cannot be read now (an LDAP server down) is retried
    // every RETRY_INTERVAL; addrd starts with an empty zone meanwhile.
    let (entities, mut next_refresh) = match service.refresh().await {
        Ok(entities) => (entities, REFRESH_INTERVAL),
        Err(e) => {
            error!(error = %e, retry_in = ?RETRY_INTERVAL, "reading the directory failed; starting with an empty zone");
            (Arc::new(Vec::new()), RETRY_INTERVAL)
        }
    };
    let zone_config = ZoneConfig {
        zone: config.dns.zone.clone(),
        reverse_prefixes: vec![config.plan.overlay().net()],
        nameserver: Some(config.plan.authority_address()),
        ttl: config.dns.ttl,
    };
    let serial = u32::try_from(control::now().as_secs()).unwrap_or(u32::MAX);
    let (zone, _) =
        ZoneHandle::new(zone_config, &entities, serial).with_context(|| format!("{file}: dns"))?;
    let dns = if config.dns.listen.is_empty() {
        None
    } else {
        Some(
            DnsServer::bind(zone.clone(), &config.dns.listen)
                .await
                .with_context(|| format!("{file}: dns.listen"))?,
        )
    };
    let bindings = Arc::new(Mutex::new(BindingCache::new(BindingCacheConfig::default())));
    let audit = Arc::new(match &config.audit_log {
        Some(path) => AuditLog::open(path).with_context(|| format!("{file}: audit-log"))?,
        None => AuditLog::tracing_only(),
    });
    let guard = GuardConfig {
        lockout_threshold: config.login.lockout_threshold,
        lockout_period: config.login.lockout_period,
        max_lockout_period: GuardConfig::default()
            .max_lockout_period
            .max(config.login.lockout_period),
        ..GuardConfig::default()
    };
    let overlay = home_agent(&config, &service, &static_key, &bindings, &zone)
        .with_context(|| format!("{file}: issuing addrd's own lease"))?;
    let channel = LoginChannel::bind(
        config.listen,
        static_key.clone(),
        guard,
        Arc::clone(&service),
        Arc::clone(&audit),
        Some(overlay),
    )
    .await
    .with_context(|| format!("{file}: listen"))?;
    let channel_addr = channel
        .local_addr()
        .with_context(|| format!("{file}: listen"))?;
    let channel_handle = channel.handle();
    let channel_task = tokio::spawn(channel.serve());
    let context = Arc::new(Context {
        service: Arc::clone(&service),
        bindings,
        zone: Some(zone.clone()),
        static_public_key: static_key.public(),
        listen: channel_addr.to_string(),
        dns_listen: dns
            .as_ref()
            .map(|d| d.local_addrs().iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        started: Instant::now(),
        bad_requests: AtomicU64::new(0),
        login: Some(channel_handle),
        audit: Some(Arc::clone(&audit)),
    });
    let mut daemon = Daemon {
        config,
        service,
        zone: Some(zone),
        log_level,
        audit,
    };
    info!(
        entities = entities.len(),
        dns = ?context.dns_listen,
        login = %channel_addr,
        control = %control.path().display(),
        "addrd running"
    );
    {
        let served = control::serve(&control, Arc::clone(&context));
        tokio::pin!(served);
        loop {
            tokio::select! {
                _ = &mut served => {}
                _ = signals.terminate.recv() => { info!("SIGTERM: stopping"); break; }
                _ = signals.interrupt.recv() => { info!("SIGINT: stopping"); break; }
                _ = signals.hangup.recv() => next_refresh = daemon.reload().await,
                _ = tokio::time::sleep(next_refresh) => next_refresh = daemon.rebuild().await,
            }
        }
    }
    channel_task.abort();
    if let Some(dns) = dns {
        if let Err(e) = dns.shutdown().await {
            warn!(error = %e, "DNS shutdown");
        }
    }
    drop(control);
    info!("addrd stopped");
    Ok(Outcome::Success)
}

struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Daemon {
    /// SIGHUP: the audit log reopened, the log level from the config file,
    /// the embedded LDIF, then addresses and the zone. Other keys need a
    /// restart.
    async fn reload(&mut self) -> Duration {
        info!("SIGHUP: reloading");
        // After log rotation: lines go to a new file at the same path.
        if let Err(e) = self.audit.reopen() {
            error!(error = %e, "audit log not reopened; writing to the old file");
        }
        match Config::load(&self.config.path) {
            Ok(new) => {
                if let Some(handle) = &self.log_level {
                    if let Err(e) = handle.set(new.log_level) {
                        warn!(error = %e, "could not change the log level");
                    }
                }
                if new != self.config {
                    let mut restart_only = new.clone();
                    restart_only.log_level = self.config.log_level;
                    if restart_only != self.config {
                        warn!("config keys other than log-level changed; they take effect at the next restart");
                    }
                }
                self.config.log_level = new.log_level;
            }
            Err(e) => error!(error = %e, "config reload refused; keeping the running config"),
        }
        match self.service.directory().reload().await {
            Ok(Some(report)) => info!(
                users = report.users,
                applications = report.applications,
                systems = report.systems,
                skipped = report.skipped.len(),
                "directory reloaded"
            ),
            Ok(None) => {}
            Err(e) => error!(error = %e, "directory reload refused; keeping the loaded data"),
        }
        self.rebuild().await
    }

    /// Assign missing addresses, read the directory, rebuild the zone.
    /// Returns when to do it again: soon if the directory failed.
    async fn rebuild(&mut self) -> Duration {
        assign_all(&self.service).await;
        match self.service.refresh().await {
            Ok(entities) => {
                if let Some(zone) = &self.zone {
                    let report = zone.replace(&entities);
                    info!(
                        serial = zone.serial(),
                        published = report.published,
                        "zone rebuilt"
                    );
                }
                REFRESH_INTERVAL
            }
            Err(e) => {
                error!(error = %e, retry_in = ?RETRY_INTERVAL, "reading the directory failed; keeping the zone");
                RETRY_INTERVAL
            }
        }
    }
}

/// Give every entity without one its address (systems, applications,
/// then users); failures are logged per entity.
async fn assign_all(service: &Service<Backend>) {
    match service
        .issuer()
        .allocator()
        .assign_all(service.directory())
        .await
    {
        Ok(failures) => {
            for (dn, e) in failures {
                error!(%dn, error = %e, "no address assigned");
            }
        }
        Err(e) => error!(error = %e, "assigning addresses: the directory failed"),
    }
}
