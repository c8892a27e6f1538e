//! `tunneld` command line. Every subcommand returns an [`Outcome`] or an
//! error; [`main`] is the one place that maps them to exit codes:
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | error (bad config, unreadable key, no daemon running) |
//! | 2 | usage error (from clap) |
//! | 3 | not implemented yet (the data plane, status over the socket) |

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use overlay_proto::handshake::StaticKeypair;
use rand::rngs::OsRng;
use rand::RngCore;
use tracing::{info, warn};
use tunneld::config::{Config, LogLevel};
use tunneld::{keys, startup};
use zeroize::Zeroizing;

/// Default path of the daemon's control socket.
const DEFAULT_SOCKET: &str = "/run/permanet/tunneld.sock";

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
    /// The feature is not written yet; already printed.
    NotImplemented,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { file } => Ok(check_config(&file)),
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::Status { json, socket } => Ok(status(&socket, json)),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Ok(Outcome::NotImplemented) => ExitCode::from(3),
        Err(e) => {
            eprintln!("tunneld: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &Path) -> anyhow::Result<Outcome> {
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
    eprintln!(
        "tunneld: configuration, keys and leases are valid, but the data plane is not implemented yet (issue #3); exiting"
    );
    Ok(Outcome::NotImplemented)
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
    let running = socket.exists();
    let message = if running {
        format!(
            "tunneld status: control socket {} exists, but status over the control socket is not implemented yet",
            socket.display()
        )
    } else {
        format!(
            "tunneld status: no daemon running (control socket {} not found)",
            socket.display()
        )
    };
    if json {
        let value = serde_json::json!({
            "socket_found": running,
            "socket": socket.display().to_string(),
            "error": message,
        });
        println!("{value}");
    } else {
        eprintln!("{message}");
    }
    if running {
        Outcome::NotImplemented
    } else {
        Outcome::Failure
    }
}

fn init_logging(level: LogLevel) {
    tracing_subscriber::fmt()
        .with_max_level(level.to_tracing())
        .with_writer(io::stderr)
        .init();
}

fn os_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut seed)
        .context("reading randomness from the OS")?;
    Ok(seed)
}
