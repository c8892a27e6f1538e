//! `wap-adapter` command line: `run --config FILE` serves every configured
//! application; `check-config FILE` checks a config and exits (0 valid, 1
//! not, with the file, key and problem on stderr).
//!
//! Signals while running: SIGTERM or SIGINT stop accepting, let running
//! requests finish (at most `server::http::DRAIN_TIMEOUT`) and exit 0;
//! SIGHUP re-reads the config and applies `log-level` and every
//! application's `allowed-groups`, and empties the identity cache; any
//! other change, or an invalid file, is refused and logged, and the daemon
//! keeps its running config. The counters are logged at exit.

use std::io::{self, IsTerminal as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload as log_reload, Registry};

use wap_adapter::adapter::Adapter;
use wap_adapter::config::{Config, LogLevel};
use wap_adapter::identity::Resolver;
use wap_adapter::server::http::HttpServer;
use wap_adapter::server::wap::{WapCounters, WapServer, WapSettings};
use wap_adapter::server::ServerCounters;

type LogLevelHandle = log_reload::Handle<LevelFilter, Registry>;

#[derive(Parser)]
#[command(
    name = "wap-adapter",
    version,
    about = "HTTP and WAP front for permanet applications"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every application of the config until SIGTERM.
    Run {
        /// The config file (see configs/wap-adapter.toml).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit.
    CheckConfig {
        /// The config file.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            error!("{error:#}");
            eprintln!("wap-adapter: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn check_config(path: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: valid ({} application{})",
                path.display(),
                config.applications.len(),
                if config.applications.len() == 1 {
                    ""
                } else {
                    "s"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::from(1))
        }
    }
}

fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let log_level = init_logging(config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config, log_level))?;
    Ok(ExitCode::SUCCESS)
}

/// One application while it runs.
struct Running {
    adapter: Arc<Adapter>,
    counters: Arc<ServerCounters>,
    wap: Arc<WapCounters>,
}

async fn serve(mut config: Config, log_level: Option<LogLevelHandle>) -> anyhow::Result<()> {
    let resolver = Arc::new(Resolver::new(&config.identity));
    let (stop, stopped) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut running = Vec::new();
    for app in &config.applications {
        let adapter = Arc::new(Adapter::new(app, config.limits, Arc::clone(&resolver)));
        let counters = Arc::new(ServerCounters::default());
        let address = app.listeners.http();
        let server = HttpServer::bind(
            address,
            app.listeners.proxied(),
            Arc::clone(&adapter),
            config.limits,
            Arc::clone(&counters),
        )
        .await
        .with_context(|| format!("application {}: HTTP listener {address}", app.name))?;
        info!(application = %app.name, %address, backend = ?app.backend, allowed_groups = ?app.allowed_groups, "application ready");
        servers.spawn(server.serve(stopped.clone()));
        let wap = Arc::new(WapCounters::default());
        let wap_server = WapServer::bind(
            app.listeners,
            Arc::clone(&adapter),
            WapSettings::new(app, config.limits),
            Arc::clone(&counters),
            Arc::clone(&wap),
        )
        .await
        .with_context(|| format!("application {}: WAP listeners", app.name))?;
        servers.spawn(wap_server.serve(stopped.clone()));
        running.push(Running {
            adapter,
            counters,
            wap,
        });
    }
    info!(applications = running.len(), "wap-adapter running");

    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                match reload(&config, &running, &resolver, log_level.as_ref()) {
                    Ok(new) => {
                        info!(path = %new.path.display(), "config reloaded");
                        config = new;
                    }
                    Err(error) => warn!("reload refused, keeping the running config: {error:#}"),
                }
            }
        }
    }
    info!("stopping: draining connections");
    stop.send_replace(true);
    while servers.join_next().await.is_some() {}
    for app in &running {
        let counters: Vec<String> = app
            .adapter
            .counters()
            .into_iter()
            .chain(app.counters.labelled())
            .chain(app.wap.labelled())
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        info!(application = %app.adapter.name(), counters = %counters.join(" "), "stopped");
    }
    let identity: Vec<String> = resolver
        .counters()
        .into_iter()
        .map(|c| format!("{}={}", c.name, c.value))
        .collect();
    info!(counters = %identity.join(" "), "identity");
    Ok(())
}

/// SIGHUP: the new config if only reloadable keys changed, applied.
fn reload(
    config: &Config,
    running: &[Running],
    resolver: &Resolver,
    log_level: Option<&LogLevelHandle>,
) -> anyhow::Result<Config> {
    let new = Config::load(&config.path)?;
    config.reloadable_change(&new)?;
    if let Some(handle) = log_level {
        handle
            .modify(|filter| *filter = LevelFilter::from_level(new.log_level.to_tracing()))
            .context("changing the log level")?;
    }
    for (app, new_app) in running.iter().zip(&new.applications) {
        app.adapter
            .set_allowed_groups(new_app.allowed_groups.clone());
    }
    resolver.flush();
    Ok(new)
}

/// Log to stderr at `level`; the handle changes the level later (SIGHUP).
fn init_logging(level: LogLevel) -> Option<LogLevelHandle> {
    let (filter, handle) = log_reload::Layer::new(LevelFilter::from_level(level.to_tracing()));
    let output = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .ok()
        .map(|()| handle)
}
