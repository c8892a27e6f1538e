//! `tunneld` command line. Every subcommand returns an [`Outcome`] or an
//! error; [`main`] is the one place that maps them to exit codes:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | error (bad config, unreadable key, TUN device not permitted, no daemon running) |
//! | 2 | usage error (from clap) |

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::net::SocketAddrV6;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use overlay_proto::handshake::StaticKeypair;
use rand::rngs::OsRng;
use rand::RngCore;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use overlay_proto::addr::SystemVirtualNetwork;
use tokio::net::TcpListener;
use tunneld::access::AccessPolicy;
use tunneld::config::{Config, LogLevel, Mode, Role};
use tunneld::control::{self, ControlSocket, Report};
use tunneld::dataplane::{ChannelPort, InnerPort, Stopped, Tunnel};
use tunneld::keylog::KeyLog;
use tunneld::tun::{DevicePlan, TunPort};
use tunneld::userspace::{
    serve_application, serve_application_udp, serve_socks, StackConfig, StackHandle, UserspaceStack,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, socket } => run(&config, &socket),
        Command::CheckConfig { file } => Ok(check_config(&file)),
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::Status { json, socket } => Ok(status(&socket, json)),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
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
    init_logging(config.log_level);
    let prepared = startup::prepare_config(config, startup::now(), os_seed()?)?;
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
    runtime.block_on(serve(prepared, socket))
}

/// Run the mode, the data plane and the control socket until SIGTERM or
/// SIGINT.
async fn serve(prepared: startup::Prepared, socket: &Path) -> anyhow::Result<Outcome> {
    let startup::Prepared { config, node, .. } = prepared;
    let signals = Signals {
        terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
    };
    // The control socket first: it is what tells a second daemon on the
    // same socket to stop before it takes any other resource.
    let control = ControlSocket::bind(socket).await?;
    match config.mode {
        Mode::Userspace => {
            let (port, channels) = ChannelPort::new(PORT_QUEUE);
            let stack = start_userspace(&config, &node, channels).await?;
            let result = serve_tunnel(&config, node, port, control, signals).await;
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
            serve_tunnel(&config, node, port, control, signals).await
        }
    }
}

/// The signals that stop the daemon.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

/// Run the data plane over `port` and serve the control socket until a
/// signal, or until the data plane stops by itself.
async fn serve_tunnel<P: InnerPort + 'static>(
    config: &Config,
    node: overlay_proto::node::Node,
    port: P,
    control: ControlSocket,
    signals: Signals,
) -> anyhow::Result<Outcome> {
    let Signals {
        mut terminate,
        mut interrupt,
    } = signals;
    let (tunnel, handle) = Tunnel::bind(node, config.listen, port)
        .await
        .with_context(|| format!("binding UDP socket {}", config.listen))?;
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
    let identity = Arc::new(control::Identity::new(config, tunnel.node(), listen));
    let mut tunnel = tokio::spawn(tunnel.run());
    info!(%listen, socket = %control.path().display(), "data plane running, control socket listening");
    let stopped_early = tokio::select! {
        () = control.serve(handle.clone(), identity) => None,
        _ = terminate.recv() => { info!("SIGTERM: shutting down"); None }
        _ = interrupt.recv() => { info!("SIGINT: shutting down"); None }
        result = &mut tunnel => Some(result),
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

/// Start the userspace IPv6 stack on the tunnel's port and what it serves:
/// the SOCKS5 proxy (client role) or each application's ports, forwarded
/// to its backend, TCP and UDP, with a PROXY v2 header (server role).
async fn start_userspace(
    config: &Config,
    node: &overlay_proto::node::Node,
    channels: tunneld::dataplane::PortChannels,
) -> anyhow::Result<StackHandle> {
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
    match config.role {
        Role::Client => {
            if let Some(socks) = config.socks_listen {
                let listener = TcpListener::bind(socks)
                    .await
                    .with_context(|| format!("binding the SOCKS5 listener {socks}"))?;
                tokio::spawn(log_exit(
                    "SOCKS5 proxy",
                    serve_socks(listener, handle.clone()),
                ));
            }
            if !config.port_forwards.is_empty() {
                warn!("port-forwards are not served yet (issue #3)");
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
    Ok(handle)
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
    writeln!(stream, "{}", control::STATUS_REQUEST).map_err(io_error)?;
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

fn init_logging(level: LogLevel) {
    tracing_subscriber::fmt()
        .with_max_level(level.to_tracing())
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

fn os_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut seed)
        .context("reading randomness from the OS")?;
    Ok(seed)
}
