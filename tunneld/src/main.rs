//! `tunneld` command line. Every subcommand returns an [`Outcome`] or an
//! error; [`main`] is the one place that maps them to exit codes:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | error (bad config, unreadable key, TUN device not permitted, no daemon running) |
//! | 2 | usage error (from clap) |
//! | 3 | `login`: refused by addrd (wrong user or password, not allowed, too many attempts) |
//! | 4 | `login`: addrd unreachable or not answering (timeout; also a wrong pinned `addrd.public-key`) |

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::SocketAddrV6;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use daemon_kit::logging::{init as init_logging, LogLevelHandle};
use overlay_proto::handshake::StaticKeypair;
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

use overlay_proto::addr::SystemVirtualNetwork;
use overlay_proto::authority::{ClientTimers, Password};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tunneld::access::AccessPolicy;
use tunneld::addrd::{self, AddrdClient, AddrdError};
use tunneld::config::{Config, ForwardProtocol, LogLevel, Mode, Role};
use tunneld::control::{self, ControlSocket, Report};
use tunneld::dataplane::{ChannelPort, InnerPort, Stopped, Tunnel, TunnelHandle, UpdateSource};
use tunneld::keylog::KeyLog;
use tunneld::leases::{self, AddrdLeaseSource, FileLeaseSource, LeaseFiles, RenewalPolicy};
use tunneld::metrics::{MetricsServer, MetricsSource};
use tunneld::names::LeaseResolver;
use tunneld::reload::{self, ReloadError, Running};
use tunneld::tun::{DevicePlan, TunPort};
use tunneld::userspace::{
    serve_application, serve_application_udp, serve_port_forward, serve_socks,
    serve_udp_port_forward, StackConfig, StackHandle, UserspaceStack,
};
use tunneld::{keys, startup};
use zeroize::Zeroizing;

/// Default path of the daemon's control socket.
const DEFAULT_SOCKET: &str = "/run/permanet/tunneld.sock";

/// Packets each direction of the inner-packet port holds.
const PORT_QUEUE: usize = 256;

/// How long `tunneld status` waits for the daemon's answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// permanet tunnel daemon.
#[derive(Debug, Parser)]
#[command(name = "tunneld", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Config file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The control socket to create.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Check a config file and the key and lease files it names.
    CheckConfig {
        /// Config file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a new base64 X25519 private key (like `wg genkey`).
    Genkey,
    /// Read a base64 private key on stdin, print its public key (like `wg pubkey`).
    Pubkey,
    /// Log in to addrd: get this node's lease and netmap, and have a
    /// running daemon pick them up.
    Login {
        /// Config file (TOML) with an `[addrd]` table.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Directory user name (asked on the terminal if not given).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Read the password from stdin (one line) instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
        /// Give up after this many seconds without an answer from addrd.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
        /// The running daemon's control socket (asked to reload).
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Ask addrd's home agent where an entity is (servers: the node's lease
    /// must be a system's or an application's).
    WhereIs {
        /// Config file (TOML) with an `[addrd]` table and this node's lease.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// The permanent address looked up.
        #[arg(value_name = "ADDRESS")]
        address: std::net::Ipv6Addr,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Give up after this many seconds without an answer from addrd.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout: u64,
    },
    /// Show the running daemon's state.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

/// How a subcommand that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Done.
    Success,
    /// Done, but the answer is "no" (e.g. no daemon running); already printed.
    Failure,
    /// addrd refused the login; already printed.
    Refused,
    /// addrd did not answer in time; already printed.
    Unreachable,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, socket } => run(&config, &socket),
        Command::CheckConfig { file } => Ok(check_config(&file)),
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::WhereIs {
            config,
            address,
            json,
            timeout,
        } => where_is(&config, address, json, Duration::from_secs(timeout.max(1))),
        Command::Login {
            config,
            user,
            password_stdin,
            timeout,
            socket,
        } => login(&LoginArgs {
            config,
            user,
            password_stdin,
            timeout: Duration::from_secs(timeout.max(1)),
            socket,
        }),
        Command::Status { json, socket } => Ok(status(&socket, json)),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Ok(Outcome::Refused) => ExitCode::from(3),
        Ok(Outcome::Unreachable) => ExitCode::from(4),
        Err(e) => {
            eprintln!("tunneld: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &Path, socket: &Path) -> anyhow::Result<Outcome> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            init_logging(LogLevel::Info);
            return Err(e.into());
        }
    };
    let log_level = init_logging(config.log_level);
    let login_hint = config.addrd.is_some().then(|| {
        format!(
            "with [addrd], `tunneld login --config {}` gets a new lease",
            config.path.display()
        )
    });
    let prepared = match startup::prepare_config(config, startup::now(), os_seed()?) {
        Ok(prepared) => prepared,
        Err(e) => match login_hint {
            Some(hint) => anyhow::bail!("{e}\n{hint}"),
            None => return Err(e.into()),
        },
    };
    info!("{}", startup::summary(&prepared));
    if let Some(keylog) = &prepared.config.dangerous_esp_keylog {
        warn!(
            "DANGER: dangerous-esp-keylog is set: the keys of every SA will be written to {}; \
             anyone who can read it can decrypt this node's traffic. Never use this in production.",
            keylog.display()
        );
    }
    if prepared.config.ipv4_policy.dangerous_allow_private {
        warn!("dangerous-allow-private-ipv4 is set: 6to4 addresses may map to private IPv4 addresses (labs only)");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(serve(prepared, socket, log_level))
}

/// Run the mode, the data plane and the control socket until SIGTERM or
/// SIGINT; reload the config on SIGHUP.
async fn serve(
    prepared: startup::Prepared,
    socket: &Path,
    log_level: Option<LogLevelHandle>,
) -> anyhow::Result<Outcome> {
    let running = Running::new(&prepared);
    let startup::Prepared {
        config, mut node, ..
    } = prepared;
    let mut netmap_peers = Vec::new();
    if config.addrd.is_some() {
        // The netmap `tunneld login` (or the last refresh) cached: the
        // peers are in the node before the names resolver reads it.
        let (change, problems) =
            leases::netmap_cache_change(&config, *node.public_key(), startup::now().unix);
        for problem in problems {
            warn!("netmap cache: {problem}");
        }
        netmap_peers = change
            .peers
            .iter()
            .filter(|update| update.settings.is_some())
            .map(|update| overlay_proto::handshake::PublicKey(update.lease.lease().public_key))
            .collect();
        let mut unused = AccessPolicy::default();
        match reload::apply(&mut node, &mut unused, change, std::time::Instant::now()) {
            Ok(applied) => info!(peers = applied.added, "peers added from the netmap cache"),
            Err(e) => warn!("netmap cache not used: {e}"),
        }
    }
    let signals = Signals {
        terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
        hangup: signal(SignalKind::hangup()).context("installing a SIGHUP handler")?,
    };
    // The control socket first: it is what tells a second daemon on the
    // same socket to stop before it takes any other resource.
    let control = control::bind(socket).await?;
    let mut daemon = Daemon {
        control,
        signals,
        running,
        log_level,
        resolver: None,
        netmap_peers,
    };
    match config.mode {
        Mode::Userspace => {
            let (port, channels) = ChannelPort::new(PORT_QUEUE);
            let (stack, resolver) = start_userspace(&config, &node, channels).await?;
            daemon.resolver = resolver;
            let result = daemon.serve_tunnel(node, port, Some(stack.clone())).await;
            stack.shutdown();
            result
        }
        Mode::Tun => {
            for (i, app) in config.applications.iter().enumerate() {
                if app.backend.is_some() || !app.ports.is_empty() {
                    warn!(application = %app.name, "applications[{i}]: backend and ports are not used in tun mode (the application listens on its permanent address itself)");
                }
            }
            let plan = DevicePlan::new(&config, &node);
            // Dropped with the tunnel: the kernel then deletes the device,
            // its addresses and its routes.
            let port = TunPort::open(&plan).await?;
            daemon.serve_tunnel(node, port, None).await
        }
    }
}

/// The signals the daemon answers.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

/// What a running daemon holds besides its data plane.
struct Daemon {
    control: ControlSocket,
    signals: Signals,
    /// The config running now (SIGHUP replaces it).
    running: Running,
    log_level: Option<LogLevelHandle>,
    /// The SOCKS5 proxy's names resolver (userspace client), which learns
    /// addrd's netmap.
    resolver: Option<Arc<LeaseResolver>>,
    /// With `[addrd]`: the peers added from the netmap cache at start-up.
    netmap_peers: Vec<overlay_proto::handshake::PublicKey>,
}

impl Daemon {
    /// Run the data plane over `port` (with the userspace `stack` behind
    /// it, if any), serve the control socket and the metrics endpoint,
    /// renew leases and answer signals, until a stopping signal or until
    /// the data plane stops by itself.
    async fn serve_tunnel<P: InnerPort + 'static>(
        self,
        node: overlay_proto::node::Node,
        port: P,
        stack: Option<StackHandle>,
    ) -> anyhow::Result<Outcome> {
        let Daemon {
            control,
            signals:
                Signals {
                    mut terminate,
                    mut interrupt,
                    mut hangup,
                },
            mut running,
            log_level,
            resolver,
            netmap_peers,
        } = self;
        let config = running.config.clone();
        let own_key = *node.public_key();
        let own_lease = node.local_lease().clone();
        let (lease_files, lease_files_rx) = watch::channel(LeaseFiles::of(&config, own_key));
        let (configured, configured_rx) =
            watch::channel(running.peers.keys().copied().collect::<Vec<_>>());
        let (tunnel, handle) = Tunnel::bind(node, config.listen, port)
            .await
            .with_context(|| format!("binding UDP socket {}", config.listen))?;
        let tunnel = tunnel.with_mtu(config.mtu);
        let tunnel = match config.role {
            Role::Server => {
                tunnel.with_access_policy(AccessPolicy::from_applications(&config.applications))
            }
            Role::Client => tunnel,
        };
        let tunnel = match &config.dangerous_esp_keylog {
            Some(path) => tunnel.with_key_log(KeyLog::open(path)?),
            None => tunnel,
        };
        let listen = tunnel
            .local_addr()
            .context("reading the UDP socket address")?;
        let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(1);
        let identity =
            control::Identity::new(&config, tunnel.node(), listen).with_reload(reload_tx);
        let identity = match &stack {
            Some(stack) => identity.with_userspace(stack.clone()),
            None => identity,
        };
        // Renewal: through addrd, or by re-reading the lease files, before
        // the lease runs out.
        let identity = match &config.addrd {
            Some(addrd) => {
                let keypair = keys::read_private_key_file(&config.private_key_file)
                    .map_err(|p| config.error("private-key-file", p))?;
                let client = AddrdClient::bind(addrd, keypair, ClientTimers::default(), os_seed()?)
                    .await
                    .with_context(|| {
                        format!("opening a UDP socket for addrd at {}", addrd.endpoint)
                    })?;
                let source = AddrdLeaseSource::new(
                    client,
                    config.authority_key,
                    own_lease.clone(),
                    config.lease_file.clone(),
                )
                .with_resolver(resolver.clone())
                .with_configured_peers(configured_rx)
                .with_netmap_peers(netmap_peers);
                let identity = identity.with_login_needed(source.login_needed());
                info!(endpoint = %addrd.endpoint, "leases renewed through addrd");
                tokio::spawn(leases::maintain(
                    source,
                    handle.clone(),
                    own_lease.clone(),
                    RenewalPolicy::default(),
                    OsRng.next_u64(),
                ));
                identity
            }
            None => {
                tokio::spawn(leases::maintain(
                    FileLeaseSource::new(lease_files_rx),
                    handle.clone(),
                    own_lease.clone(),
                    RenewalPolicy::default(),
                    OsRng.next_u64(),
                ));
                identity
            }
        };
        let identity = Arc::new(identity);
        let metrics = match config.metrics_listen {
            Some(addr) => Some(MetricsServer::bind(addr).await?),
            None => None,
        };
        let mut tunnel = tokio::spawn(tunnel.run());
        if let Some(metrics) = metrics {
            let addr = metrics
                .local_addr()
                .context("reading the metrics socket address")?;
            info!(%addr, "metrics endpoint listening on /metrics");
            let source = MetricsSource::new(handle.clone(), stack.clone());
            tokio::spawn(metrics.serve(source));
        }
        info!(%listen, socket = %control.path().display(), "data plane running, control socket listening");
        let stopped_early = {
            let serving = control::serve(&control, handle.clone(), identity);
            tokio::pin!(serving);
            loop {
                tokio::select! {
                    () = &mut serving => break None,
                    _ = terminate.recv() => { info!("SIGTERM: shutting down"); break None }
                    _ = interrupt.recv() => { info!("SIGINT: shutting down"); break None }
                    _ = hangup.recv() => {
                        if reload_config(&mut running, &handle, log_level.as_ref(), own_key, resolver.as_deref()).await {
                            lease_files.send_replace(LeaseFiles::of(&running.config, own_key));
                            configured.send_replace(running.peers.keys().copied().collect());
                        }
                    }
                    Some(()) = reload_rx.recv() => {
                        info!("reload requested on the control socket");
                        if reload_config(&mut running, &handle, log_level.as_ref(), own_key, resolver.as_deref()).await {
                            lease_files.send_replace(LeaseFiles::of(&running.config, own_key));
                            configured.send_replace(running.peers.keys().copied().collect());
                        }
                    }
                    result = &mut tunnel => break Some(result),
                }
            }
        };
        let result = match stopped_early {
            Some(result) => result,
            None => {
                handle.shutdown();
                tunnel.await
            }
        };
        drop(control);
        let (_node, stopped) = result.context("the data plane task failed")?;
        info!(?stopped, "tunneld stopped");
        if stopped == Stopped::PortClosed {
            // Nobody asked: the TUN device or the userspace stack went away.
            anyhow::bail!("the data plane stopped: its {} side closed", config.mode);
        }
        Ok(Outcome::Success)
    }
}

/// SIGHUP: re-read the config and apply what can change at runtime
/// ([`reload`]); on any error keep running as before, log it and count it.
/// Returns whether the new config is now running.
async fn reload_config(
    running: &mut Running,
    handle: &TunnelHandle,
    log_level: Option<&LogLevelHandle>,
    own_key: overlay_proto::handshake::PublicKey,
    resolver: Option<&LeaseResolver>,
) -> bool {
    let path = running.config.path.clone();
    info!(config = %path.display(), "SIGHUP: reloading the config");
    let planned = Config::load(&path)
        .map_err(ReloadError::from)
        .and_then(|new| {
            let (change, next) = reload::plan(running, &new, startup::now().unix)?;
            Ok((new, change, next))
        });
    let (new, change, next) = match planned {
        Ok(planned) => planned,
        Err(e) => {
            error!("reload refused, still running the previous config: {e}");
            handle.reload_failed(e.to_string()).await;
            return false;
        }
    };
    match handle.update(change, UpdateSource::Reload).await {
        Ok(applied) => {
            if new.log_level != running.config.log_level {
                if let Some(handle) = log_level {
                    if let Err(e) = handle.set(new.log_level) {
                        warn!("log-level not changed: {e}");
                    }
                }
            }
            info!(
                log_level = ?new.log_level,
                own_lease_renewed = applied.local_lease,
                peers_added = applied.added,
                peers_updated = applied.updated,
                peers_removed = applied.removed,
                access_policy_changed = applied.access,
                "config reloaded"
            );
            // Shows at debug level only: after a reload to `debug`, it is
            // the first line the new level lets through.
            debug!(?applied, "reload details");
            *running = next;
            if running.config.addrd.is_some() {
                reload_netmap_cache(&running.config, own_key, handle, resolver).await;
            }
            true
        }
        Err(e) => {
            // Counted by the data plane.
            error!("reload refused, still running the previous config: {e}");
            false
        }
    }
}

/// With `[addrd]`, a reload also takes the netmap cache `tunneld login`
/// wrote: its peers are added or renewed, and their names learnt.
async fn reload_netmap_cache(
    config: &Config,
    own_key: overlay_proto::handshake::PublicKey,
    handle: &TunnelHandle,
    resolver: Option<&LeaseResolver>,
) {
    let (change, problems) = leases::netmap_cache_change(config, own_key, startup::now().unix);
    for problem in problems {
        warn!("netmap cache: {problem}");
    }
    if let Some(resolver) = resolver {
        for update in &change.peers {
            resolver.learn(update.lease.lease());
        }
    }
    match handle.update(change, UpdateSource::Reload).await {
        Ok(applied) => info!(
            peers_added = applied.added,
            peers_updated = applied.updated,
            "netmap cache applied"
        ),
        Err(e) => warn!("netmap cache not applied: {e}"),
    }
}

/// Start the userspace IPv6 stack on the tunnel's port and what it serves:
/// the SOCKS5 proxy and the port forwards (client role) or each
/// application's ports, forwarded to its backend, TCP and UDP, with a PROXY
/// v2 header (server role).
async fn start_userspace(
    config: &Config,
    node: &overlay_proto::node::Node,
    channels: tunneld::dataplane::PortChannels,
) -> anyhow::Result<(StackHandle, Option<Arc<LeaseResolver>>)> {
    let prefix = node.local_lease().lease().prefix;
    // A user or application owns a /128; a system answers on `::1` of its
    // system virtual network.
    let address = match SystemVirtualNetwork::from_prefix(prefix) {
        Ok(svn) => svn.system_address(),
        Err(_) => prefix.addr(),
    };
    let mut stack_config = StackConfig::new(address, prefix);
    stack_config.mtu = config.mtu;
    let (stack, handle) = UserspaceStack::new(stack_config, channels);
    tokio::spawn(stack.run());
    let mut names = None;
    match config.role {
        Role::Client => {
            if let Some(socks) = config.socks_listen {
                let listener = TcpListener::bind(socks)
                    .await
                    .with_context(|| format!("binding the SOCKS5 listener {socks}"))?;
                // The leases this node holds name what it can reach; with
                // `[addrd]` it also learns each netmap's, and asks addrd's
                // DNS through the tunnel for the names no lease gives.
                let leases = Arc::new(LeaseResolver::from_node(config.overlay_zone.clone(), node));
                names = Some(Arc::clone(&leases));
                let resolver: Arc<dyn tunneld::names::OverlayResolver> = match &config.addrd {
                    Some(addrd) => {
                        info!(zone = %config.overlay_zone, "SOCKS5 resolves overlay names from known leases, then addrd's DNS");
                        Arc::new(tunneld::userspace::OverlayDnsResolver::new(
                            leases,
                            handle.clone(),
                            addrd.public_key,
                        ))
                    }
                    None => {
                        info!(zone = %config.overlay_zone, "SOCKS5 resolves overlay names from known leases");
                        leases
                    }
                };
                tokio::spawn(log_exit(
                    "SOCKS5 proxy",
                    serve_socks(listener, handle.clone(), resolver),
                ));
            }
            for forward in &config.port_forwards {
                match forward.protocol {
                    ForwardProtocol::Tcp => {
                        let listener =
                            TcpListener::bind(forward.listen).await.with_context(|| {
                                format!("binding the port-forward listener {}", forward.listen)
                            })?;
                        let served = serve_port_forward(listener, handle.clone(), forward.to);
                        tokio::spawn(log_exit("port forward", served));
                    }
                    ForwardProtocol::Udp => {
                        let socket = UdpSocket::bind(forward.listen).await.with_context(|| {
                            format!("binding the UDP port-forward socket {}", forward.listen)
                        })?;
                        let served = serve_udp_port_forward(socket, handle.clone(), forward.to);
                        tokio::spawn(log_exit("UDP port forward", served));
                    }
                }
            }
        }
        Role::Server => {
            for app in &config.applications {
                // The config requires a backend in userspace mode.
                let Some(backend) = app.backend else {
                    warn!(application = %app.name, "no backend: not served");
                    continue;
                };
                for port in &app.ports {
                    let address = SocketAddrV6::new(app.address, *port, 0, 0);
                    let served = serve_application(handle.clone(), address, backend);
                    tokio::spawn(log_exit("application", served));
                    let served = serve_application_udp(handle.clone(), address, backend);
                    tokio::spawn(log_exit("UDP application", served));
                }
                info!(application = %app.name, address = %app.address, ports = ?app.ports, %backend, allowed_groups = ?app.allowed_groups, "serving");
            }
        }
    }
    Ok((handle, names))
}

/// Log why a serving task ended.
async fn log_exit(what: &'static str, task: impl std::future::Future<Output = io::Result<()>>) {
    if let Err(e) = task.await {
        warn!(error = %e, "{what} stopped");
    }
}

fn check_config(path: &Path) -> Outcome {
    let seed = match os_seed() {
        Ok(seed) => seed,
        Err(e) => {
            eprintln!("tunneld: {e:#}");
            return Outcome::Failure;
        }
    };
    match startup::prepare(path, startup::now(), seed) {
        Ok(prepared) => {
            println!("ok: {}: {}", path.display(), startup::summary(&prepared));
            Outcome::Success
        }
        Err(e) => {
            eprintln!("{e}");
            Outcome::Failure
        }
    }
}

fn genkey() -> anyhow::Result<Outcome> {
    let keypair = StaticKeypair::generate(&mut OsRng);
    let text = keys::encode_private_key(&keypair);
    let mut out = io::stdout().lock();
    writeln!(out, "{}", *text).context("writing the key to stdout")?;
    out.flush().context("writing the key to stdout")?;
    Ok(Outcome::Success)
}

fn pubkey() -> anyhow::Result<Outcome> {
    let mut input = Zeroizing::new(Vec::with_capacity(keys::MAX_SECRET_FILE_LEN as usize + 1));
    io::stdin()
        .lock()
        .take(keys::MAX_SECRET_FILE_LEN + 1)
        .read_to_end(&mut input)
        .context("reading the private key from stdin")?;
    let text = std::str::from_utf8(&input)
        .map_err(|_| anyhow::anyhow!("the private key on stdin is not base64 text"))?;
    let keypair = keys::parse_private_key(text)
        .map_err(|e| anyhow::anyhow!("invalid private key on stdin: {e}"))?;
    println!("{}", keypair.public());
    Ok(Outcome::Success)
}

/// `tunneld login`'s arguments.
struct LoginArgs {
    config: PathBuf,
    user: Option<String>,
    password_stdin: bool,
    timeout: Duration,
    socket: PathBuf,
}

/// Longest password accepted (the authority channel's limit).
const MAX_PASSWORD_LEN: usize = 1024;

/// Log in to addrd: read the password (terminal with echo off, or stdin),
/// get and verify this node's lease, write it to `lease-file` and the
/// netmap to its cache, then ask a running daemon to reload.
/// A current-thread runtime, and a client of `addrd` bound in it, for the
/// one-shot commands (`login`, `where-is`). The client is `Err` when its
/// socket cannot be bound (reported with the request's other errors).
fn one_shot_client(
    addrd: &tunneld::config::Addrd,
    keypair: overlay_proto::handshake::StaticKeypair,
    timeout: Duration,
) -> anyhow::Result<(tokio::runtime::Runtime, Result<AddrdClient, AddrdError>)> {
    let timers = ClientTimers {
        request_timeout: timeout,
        ..ClientTimers::default()
    };
    let seed = os_seed()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let client = runtime.block_on(AddrdClient::bind(addrd, keypair, timers, seed));
    Ok((runtime, client))
}

/// `tunneld where-is`: one `WhereIs` to addrd with this node's key and
/// lease; prints the endpoint, the binding's age and the located lease.
fn where_is(
    path: &Path,
    address: std::net::Ipv6Addr,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let config = Config::load(path)?;
    let Some(addrd) = config.addrd.clone() else {
        anyhow::bail!(
            "{}: no [addrd] table: where-is needs addrd's endpoint and public-key",
            config.path.display()
        );
    };
    let keypair = keys::read_private_key_file(&config.private_key_file)
        .map_err(|p| config.error("private-key-file", p))?;
    let held = startup::read_lease_file(
        &config.authority_key,
        &config.lease_file,
        startup::now().unix,
    )
    .map_err(|p| config.error("lease-file", p))?;
    let (runtime, client) = one_shot_client(&addrd, keypair, timeout)?;
    let answer = runtime.block_on(async {
        client?
            .where_is(&held, address, &config.authority_key)
            .await
    });
    let found = match answer {
        Ok(found) => found,
        Err(e @ (AddrdError::Unreachable { .. } | AddrdError::NoAnswer { .. })) => {
            eprintln!("tunneld where-is: {e}");
            return Ok(Outcome::Unreachable);
        }
        Err(e) => anyhow::bail!("where-is failed: {e}"),
    };
    let Some(found) = found else {
        if json {
            println!(
                "{}",
                serde_json::json!({ "address": address.to_string(), "bound": false })
            );
        } else {
            println!("{address}: no binding (not seen lately)");
        }
        return Ok(Outcome::Failure);
    };
    let l = found.lease.lease();
    if json {
        let report = serde_json::json!({
            "address": address.to_string(),
            "bound": true,
            "endpoint": found.endpoint.to_string(),
            "sequence": found.sequence,
            "expires_in": found.expires_in.as_secs(),
            "name": l.name,
            "kind": l.kind.as_str(),
            "groups": l.groups,
            "public_key": overlay_proto::handshake::PublicKey(l.public_key).to_string(),
            "lease_serial": l.serial,
        });
        println!("{report}");
    } else {
        println!(
            "{address}: {} ({}) at {}, binding {} expires in {} s, lease serial {}",
            l.name,
            l.kind.as_str(),
            found.endpoint,
            found.sequence,
            found.expires_in.as_secs(),
            l.serial
        );
    }
    Ok(Outcome::Success)
}

fn login(args: &LoginArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(&args.config)?;
    let Some(addrd) = config.addrd.clone() else {
        anyhow::bail!(
            "{}: no [addrd] table: login needs addrd's endpoint and public-key",
            config.path.display()
        );
    };
    let keypair = keys::read_private_key_file(&config.private_key_file)
        .map_err(|p| config.error("private-key-file", p))?;
    let user = match &args.user {
        Some(user) => user.clone(),
        None if args.password_stdin => {
            anyhow::bail!("--user is required with --password-stdin")
        }
        None => prompt_user()?,
    };
    let password = if args.password_stdin {
        read_password_stdin()?
    } else {
        let typed = Zeroizing::new(
            rpassword::prompt_password(format!("Password for {user}: "))
                .context("reading the password from the terminal")?,
        );
        Zeroizing::new(typed.as_bytes().to_vec())
    };
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    if password.len() > MAX_PASSWORD_LEN {
        anyhow::bail!("password longer than {MAX_PASSWORD_LEN} bytes");
    }
    let password = Password::new(password);
    let (runtime, client) = one_shot_client(&addrd, keypair, args.timeout)?;
    let exchanged = runtime.block_on(async {
        let mut client = client?;
        let (lease, _version) = client.login(&user, password, &config.authority_key).await?;
        let netmap = client.netmap(&config.authority_key).await;
        Ok::<_, AddrdError>((lease, netmap))
    });
    let (lease, netmap) = match exchanged {
        Ok(done) => done,
        Err(e @ AddrdError::Refused { .. }) => {
            eprintln!("tunneld login: {e}");
            return Ok(Outcome::Refused);
        }
        Err(e @ (AddrdError::Unreachable { .. } | AddrdError::NoAnswer { .. })) => {
            eprintln!("tunneld login: {e}");
            return Ok(Outcome::Unreachable);
        }
        Err(e) => anyhow::bail!("login failed: {e}"),
    };
    addrd::write_lease_file(&config.lease_file, &lease)
        .with_context(|| format!("writing the lease to {}", config.lease_file.display()))?;
    let l = lease.lease();
    println!(
        "logged in as {user}: lease serial {} for {} ({}), valid until unix time {}, written to {}",
        l.serial,
        l.prefix,
        l.name,
        l.not_after.as_secs(),
        config.lease_file.display()
    );
    let cache = addrd::netmap_cache_path(&config.lease_file);
    match netmap {
        Ok(netmap) => {
            for problem in &netmap.problems {
                eprintln!("warning: {problem}");
            }
            addrd::write_netmap_cache(&cache, &netmap.leases)
                .with_context(|| format!("writing the netmap to {}", cache.display()))?;
            println!(
                "netmap version {}: {} peer lease(s) written to {}",
                netmap.version,
                netmap.leases.len(),
                cache.display()
            );
        }
        Err(e) => eprintln!(
            "warning: the netmap could not be fetched ({e}); the daemon fetches it at its next renewal"
        ),
    }
    match control_request(&args.socket, control::RELOAD_REQUEST) {
        Ok(answer) if answer.contains("\"requested\"") => {
            println!(
                "the running daemon ({}) is reloading",
                args.socket.display()
            );
        }
        Ok(answer) => eprintln!(
            "warning: the daemon on {} did not reload: {}; send it SIGHUP",
            args.socket.display(),
            answer.trim_end()
        ),
        Err(e) => println!("{e}; `tunneld run` will use the new lease"),
    }
    Ok(Outcome::Success)
}

/// Ask the user name on the terminal.
fn prompt_user() -> anyhow::Result<String> {
    if !io::stdin().is_terminal() {
        anyhow::bail!("--user is required when stdin is not a terminal");
    }
    eprint!("User: ");
    io::stderr().flush().context("writing the prompt")?;
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the user name")?;
    let user = line.trim().to_owned();
    if user.is_empty() {
        anyhow::bail!("empty user name");
    }
    Ok(user)
}

/// The password from stdin: its first line, without the line ending.
fn read_password_stdin() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut input = Zeroizing::new(Vec::with_capacity(MAX_PASSWORD_LEN + 2));
    io::stdin()
        .lock()
        .take(MAX_PASSWORD_LEN as u64 + 3)
        .read_to_end(&mut input)
        .context("reading the password from stdin")?;
    let end = input
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(input.len());
    let mut line = input.get(..end).unwrap_or_default();
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    Ok(Zeroizing::new(line.to_vec()))
}

fn status(socket: &Path, json: bool) -> Outcome {
    let answer = match query(socket) {
        Ok(answer) => answer,
        Err(e) => {
            let message = format!("tunneld status: {e}");
            if json {
                let value = serde_json::json!({
                    "socket_found": socket.exists(),
                    "socket": socket.display().to_string(),
                    "error": message,
                });
                println!("{value}");
            } else {
                eprintln!("{message}");
            }
            return Outcome::Failure;
        }
    };
    let report = match serde_json::from_str::<Report>(&answer) {
        Ok(report) => report,
        Err(_) => {
            // An error document from the daemon, or garbage.
            let error = serde_json::from_str::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "unreadable answer from the daemon".to_owned());
            if json {
                println!("{}", answer.trim_end());
            } else {
                eprintln!("tunneld status: {error}");
            }
            return Outcome::Failure;
        }
    };
    if json {
        println!("{}", answer.trim_end());
    } else {
        print!("{}", report.human());
    }
    Outcome::Success
}

/// Send `status` over the control socket and read the one-line answer.
fn query(socket: &Path) -> Result<String, String> {
    control_request(socket, control::STATUS_REQUEST)
}

/// Send `request` over the control socket and read the one-line answer.
fn control_request(socket: &Path, request: &str) -> Result<String, String> {
    let not_running = |why: &dyn std::fmt::Display| {
        format!(
            "no daemon running (control socket {} {why})",
            socket.display()
        )
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_running(&"not found")),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(not_running(&"refuses connections"))
        }
        Err(e) => return Err(format!("control socket {}: {e}", socket.display())),
    };
    let io_error = |e: io::Error| format!("control socket {}: {e}", socket.display());
    stream
        .set_read_timeout(Some(STATUS_TIMEOUT))
        .map_err(io_error)?;
    stream
        .set_write_timeout(Some(STATUS_TIMEOUT))
        .map_err(io_error)?;
    writeln!(stream, "{request}").map_err(io_error)?;
    let mut answer = String::new();
    io::BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(io_error)?;
    if answer.is_empty() {
        return Err(format!(
            "control socket {}: the daemon closed the connection without answering",
            socket.display()
        ));
    }
    Ok(answer)
}

fn os_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut seed)
        .context("reading randomness from the OS")?;
    Ok(seed)
}
