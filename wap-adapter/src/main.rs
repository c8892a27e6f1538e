//! `wap-adapter` command line: `run --config FILE` serves every configured
//! application; `check-config FILE` checks a config and exits (0 valid, 1
//! not, with the file, key and problem on stderr).
//!
//! The converters, for debugging and scripting (FILE `-` reads stdin; the
//! result goes to stdout; an error goes to stderr and exits 1):
//! - `html2wml FILE [--url URL] [--sdu-size N] [--cards]`: the WML deck,
//!   split into cards that each compile (UTF-8, string table) within N
//!   bytes (default 1400), linked with `#cN`; links resolved against URL
//!   (default `http://localhost/`) and written adapter-relative. With
//!   `--cards`, one deck per card as the adapter serves them (links carry
//!   the `_card` query parameter), each deck preceded by a line
//!   `--- card N of M ---`.
//! - `compile-wml FILE [--charset utf-8|iso-8859-1] [--no-string-table]`:
//!   the WMLC bytes.
//! - `decompile FILE`: WMLC back to WML text.
//!
//! Signals while running: SIGTERM or SIGINT stop accepting, let running
//! requests finish (at most `server::http::DRAIN_TIMEOUT`) and exit 0;
//! SIGHUP re-reads the config and applies `log-level` and every
//! application's `allowed-groups`, and empties the identity cache; any
//! other change, or an invalid file, is refused and logged, and the daemon
//! keeps its running config. The counters are logged at exit.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use daemon_kit::logging::{init as init_logging, LogLevelHandle};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use wap_adapter::adapter::conversion::{WbxmlSize, CARD_PARAM};
use wap_adapter::adapter::Adapter;
use wap_adapter::config::Config;
use wap_adapter::convert::{html_to_wml, html_to_wml_cards, Html2WmlOptions, DEFAULT_SDU_SIZE};
use wap_adapter::identity::Resolver;
use wap_adapter::server::http::HttpServer;
use wap_adapter::server::wap::{WapCounters, WapServer, WapSettings};
use wap_adapter::server::ServerCounters;
use wap_adapter::wbxml::{compile_wml, decompile, Charset, CompileOptions};

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
    /// Convert an HTML page to WML (stdout).
    Html2wml {
        /// The HTML file (`-`: stdin).
        file: PathBuf,
        /// The page's URL, links are resolved against it.
        #[arg(long, default_value = "http://localhost/")]
        url: String,
        /// The compiled size (bytes) each card must fit.
        #[arg(long, default_value_t = DEFAULT_SDU_SIZE)]
        sdu_size: usize,
        /// One deck per card, as the adapter serves them, each preceded
        /// by a line `--- card N of M ---`.
        #[arg(long)]
        cards: bool,
    },
    /// Compile a WML deck to WBXML (WMLC bytes on stdout).
    CompileWml {
        /// The WML file (`-`: stdin).
        file: PathBuf,
        /// The charset of the WBXML strings.
        #[arg(long, value_enum, default_value_t = CharsetArg::Utf8)]
        charset: CharsetArg,
        /// Write every string inline (no string table).
        #[arg(long)]
        no_string_table: bool,
    },
    /// Decompile WMLC to WML text (stdout).
    Decompile {
        /// The WMLC file (`-`: stdin).
        file: PathBuf,
    },
}

/// `--charset` of `compile-wml`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum CharsetArg {
    /// UTF-8 (MIBenum 106).
    #[value(name = "utf-8")]
    Utf8,
    /// ISO-8859-1 (MIBenum 4).
    #[value(name = "iso-8859-1")]
    Iso8859_1,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Html2wml {
            file,
            url,
            sdu_size,
            cards,
        } => html2wml(&file, &url, sdu_size, cards),
        Command::CompileWml {
            file,
            charset,
            no_string_table,
        } => compile(&file, charset, !no_string_table),
        Command::Decompile { file } => decompile_file(&file),
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

/// The bytes of `file`, `-` being stdin.
fn read_input(file: &Path) -> anyhow::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::stdin().lock(), &mut bytes).context("reading stdin")?;
        Ok(bytes)
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))
    }
}

/// How errors name `file`.
fn input_name(file: &Path) -> String {
    if file == Path::new("-") {
        "stdin".to_owned()
    } else {
        file.display().to_string()
    }
}

/// Writes `bytes` to stdout.
fn write_output(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    io::Write::write_all(&mut stdout, bytes)
        .and_then(|()| io::Write::flush(&mut stdout))
        .context("writing stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn html2wml(file: &Path, url: &str, sdu_size: usize, cards: bool) -> anyhow::Result<ExitCode> {
    let html = read_input(file)?;
    let options = Html2WmlOptions::with_max_card_size(sdu_size);
    let sizer = WbxmlSize(CompileOptions::default());
    let name = input_name(file);
    if !cards {
        let wml = html_to_wml(&html, url, &options, &sizer).with_context(|| name.clone())?;
        return write_output(wml.as_bytes());
    }
    let decks = html_to_wml_cards(&html, url, CARD_PARAM, &options, &sizer)
        .with_context(|| name.clone())?;
    let mut out = String::new();
    for (number, deck) in decks.iter().enumerate() {
        out.push_str(&format!("--- card {} of {} ---\n", number + 1, decks.len()));
        out.push_str(deck);
    }
    write_output(out.as_bytes())
}

fn compile(file: &Path, charset: CharsetArg, string_table: bool) -> anyhow::Result<ExitCode> {
    let wml = read_input(file)?;
    let options = CompileOptions {
        charset: match charset {
            CharsetArg::Utf8 => Charset::Utf8,
            CharsetArg::Iso8859_1 => Charset::Iso8859_1,
        },
        string_table,
    };
    let wmlc = compile_wml(&wml, &options).with_context(|| input_name(file))?;
    write_output(&wmlc)
}

fn decompile_file(file: &Path) -> anyhow::Result<ExitCode> {
    let wmlc = read_input(file)?;
    let wml = decompile(&wmlc).with_context(|| input_name(file))?;
    write_output(wml.as_bytes())
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
            .set(new.log_level)
            .context("changing the log level")?;
    }
    for (app, new_app) in running.iter().zip(&new.applications) {
        app.adapter
            .set_allowed_groups(new_app.allowed_groups.clone());
    }
    resolver.flush();
    Ok(new)
}
