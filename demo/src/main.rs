//! `permanet-demo`: the whole system on loopback, in one command, no root.
//!
//! In a fresh temporary directory (mode 0700, keys 0600, removed at exit)
//! it starts addrd with the embedded directory of the example organisation
//! (`configs/ldap/example-org.ldif`), issues the server `app1`'s lease,
//! starts a server tunneld in userspace mode whose applications `wiki` (an
//! HTML app) and `wap-news` (a WML app) go to wap-adapter (proxied mode,
//! PROXY v2) in front of the demo's own static backends for
//! `demo/apps/wiki` and `demo/apps/wap-news`, logs alice in with `tunneld
//! login` (password on stdin), starts alice's client tunneld (SOCKS5 proxy
//! and a UDP port forward to wap-news's WSP port), then fetches the wiki
//! over HTTP through the SOCKS5 proxy by its overlay name, and wap-news
//! over WSP through the port forward, and prints what came back and the
//! tunnel's status. Then it waits for Ctrl-C (or, with `--once`, exits),
//! stops every daemon with SIGTERM and removes the directory.
//!
//! The daemons are the `tunneld`, `addrd` and `wap-adapter` binaries in
//! the directory of this program (the same Cargo target directory):
//! `./scripts/demo.sh` builds them all and runs the demo.

mod backend;
mod client;
mod process;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;

use process::{run_ok, run_tool, Daemon};

const ADDRD_CONFIG: &str = include_str!("../../configs/addrd.toml");
const EXAMPLE_ORG: &str = include_str!("../../configs/ldap/example-org.ldif");

/// The example user and her lab password (configs/ldap/example-org.ldif).
const USER: &str = "alice";
const PASSWORD: &str = "alice-lab-password";
/// Tests only: another password for alice, to see the login step fail.
const TEST_PASSWORD_ENV: &str = "PERMANET_DEMO_TEST_PASSWORD";

/// The example organisation's names: the server system and its two
/// applications, as addrd's overlay DNS zone names them.
const SYSTEM: &str = "app1";
const HTML_APP: &str = "wiki";
const WML_APP: &str = "wap-news";
const ZONE: &str = "apps.permanet.internal";

/// How long a daemon may take to come up, and a check to answer.
const DAEMON_DEADLINE: Duration = Duration::from_secs(20);
const TOOL_DEADLINE: Duration = Duration::from_secs(30);
const FETCH_DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Parser)]
#[command(
    name = "permanet-demo",
    about = "Run addrd, a server and a client tunneld and wap-adapter with two example \
             applications on loopback; log alice in and fetch both applications through \
             the encrypted tunnel"
)]
struct Args {
    /// Run the checks, stop everything and exit (0 when every check passed).
    #[arg(long)]
    once: bool,
    /// The example applications' directory (default: demo/apps of this
    /// source tree).
    #[arg(long, value_name = "DIR")]
    apps: Option<PathBuf>,
}

/// A step that failed: its name and why.
#[derive(Debug, thiserror::Error)]
#[error("FAILED at step \"{step}\": {error:#}")]
struct StepFailed {
    step: &'static str,
    error: anyhow::Error,
}

/// Everything the demo started, stopped and removed in [`Demo::shutdown`].
struct Demo {
    started: Instant,
    dir: tempfile::TempDir,
    daemons: Vec<Daemon>,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Demo {
    /// Run one step, printing its name, duration and outcome.
    fn step<T>(
        &mut self,
        step: &'static str,
        f: impl FnOnce(&mut Demo) -> anyhow::Result<T>,
    ) -> Result<T, StepFailed> {
        if interrupted() {
            return Err(StepFailed {
                step,
                error: anyhow!("interrupted (Ctrl-C or SIGTERM) before it began"),
            });
        }
        print!("[{:5.1} s] {step} ... ", self.elapsed());
        let _ = std::io::stdout().flush();
        let before = Instant::now();
        match f(self) {
            Ok(value) => {
                println!("ok ({} ms)", before.elapsed().as_millis());
                Ok(value)
            }
            Err(error) => {
                println!("failed");
                Err(StepFailed { step, error })
            }
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a file with `mode`, creating its directory (0700).
    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> anyhow::Result<PathBuf> {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(bytes)?;
        Ok(path)
    }

    /// Start a daemon and wait for its "running" line.
    fn daemon(
        &mut self,
        name: &'static str,
        program: &Path,
        args: &[&str],
        log: &str,
        ready: &str,
    ) -> anyhow::Result<()> {
        let mut daemon = Daemon::spawn(name, program, args, self.path(log))?;
        let waited = daemon.wait_for_log(ready, DAEMON_DEADLINE);
        self.daemons.push(daemon);
        waited
    }

    /// An error naming the first daemon that exited.
    fn check_daemons(&mut self) -> anyhow::Result<()> {
        for daemon in &mut self.daemons {
            daemon.check_alive()?;
        }
        Ok(())
    }

    /// Stop the daemons (last started first) and remove the directory.
    fn shutdown(mut self) {
        println!("\nstopping:");
        while let Some(mut daemon) = self.daemons.pop() {
            let pid = daemon.pid();
            let how = daemon.stop();
            match pid {
                Some(pid) => println!("  {} (pid {pid}): SIGTERM, {how}", daemon.name),
                None => println!("  {}: {how}", daemon.name),
            }
        }
        let dir = self.dir.path().to_path_buf();
        match self.dir.close() {
            Ok(()) => println!("removed {}", dir.display()),
            Err(error) => println!("could not remove {}: {error}", dir.display()),
        }
    }
}

/// The daemon binaries, beside this program.
#[derive(Debug)]
struct Binaries {
    tunneld: PathBuf,
    addrd: PathBuf,
    wap_adapter: PathBuf,
}

fn binaries() -> anyhow::Result<Binaries> {
    let me = std::env::current_exe().context("locating permanet-demo")?;
    let beside = |name: &str| -> anyhow::Result<PathBuf> {
        let path = me.with_file_name(name);
        if path.is_file() {
            Ok(path)
        } else {
            bail!(
                "{} is missing: build the daemons first (`cargo build --bins`, or run \
                 ./scripts/demo.sh, which does)",
                path.display()
            )
        }
    };
    Ok(Binaries {
        tunneld: beside("tunneld")?,
        addrd: beside("addrd")?,
        wap_adapter: beside("wap-adapter")?,
    })
}

fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

fn s(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))
}

/// The example organisation's addrd config on loopback.
fn addrd_config(udp: SocketAddr, socket: &Path) -> String {
    ADDRD_CONFIG
        .lines()
        .map(|line| {
            if line.starts_with("control-socket") {
                format!("control-socket = \"{}\"\n", socket.display())
            } else if line.starts_with("listen = [") {
                "listen = [\"127.0.0.1:0\"]\n".to_owned()
            } else if line.starts_with("listen = ") {
                format!("listen = \"{udp}\"\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

/// The address addrd assigned to `name` (`addrd show NAME --json`).
fn address_of(bins: &Binaries, config: &str, name: &str) -> anyhow::Result<Ipv6Addr> {
    let out = run_ok(
        &bins.addrd,
        &["show", name, "--json", "--config", config],
        b"",
        TOOL_DEADLINE,
    )?;
    let value: serde_json::Value =
        serde_json::from_str(&out).context("reading `addrd show --json`")?;
    value
        .as_array()
        .and_then(|all| all.iter().find(|e| e["name"] == name))
        .and_then(|e| e["address"].as_str())
        .ok_or_else(|| anyhow!("addrd has no address for {name}: {value}"))?
        .parse()
        .with_context(|| format!("the address of {name}"))
}

/// What the steps found, for the summary.
#[derive(Debug)]
struct Up {
    socks: SocketAddr,
    wap_forward: SocketAddr,
    wiki_forward: SocketAddr,
    wml_app: Ipv6Addr,
    client_socket: PathBuf,
    tunneld: PathBuf,
}

/// The first lines of a body, indented.
fn excerpt(body: &str, lines: usize) -> String {
    let mut out = String::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()).take(lines) {
        let line: String = line.chars().take(100).collect();
        let _ = writeln!(out, "    | {line}");
    }
    out
}

fn run(demo: &mut Demo, args: &Args) -> Result<Up, StepFailed> {
    let bins = demo.step("finding the daemon binaries", |_| binaries())?;
    let apps = args
        .apps
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("apps"));

    // addrd: the embedded directory of the example organisation.
    let addrd_udp = demo.step("writing addrd's keys and config", |demo| {
        let udp = free_udp()?;
        let socket = demo.path("home/addrd.sock");
        demo.write(
            "home/addrd.toml",
            addrd_config(udp, &socket).as_bytes(),
            0o644,
        )?;
        demo.write("home/ldap/example-org.ldif", EXAMPLE_ORG.as_bytes(), 0o644)?;
        for key in ["addrd.key", "authority.key", "allocation.key"] {
            let secret = run_ok(&bins.addrd, &["genkey"], b"", TOOL_DEADLINE)?;
            demo.write(&format!("home/{key}"), secret.as_bytes(), 0o600)?;
        }
        Ok(udp)
    })?;
    let addrd_config = demo.path("home/addrd.toml");
    let addrd_config = s(&addrd_config)
        .map_err(|error| StepFailed {
            step: "writing addrd's keys and config",
            error,
        })?
        .to_owned();
    demo.step("starting addrd (embedded directory)", |demo| {
        demo.daemon(
            "addrd",
            &bins.addrd,
            &["run", "--config", &addrd_config],
            "home/addrd.log",
            "addrd running",
        )
    })?;

    // The server: its key, its lease from addrd, the applications.
    let (authority, addrd_public, html_app, wml_app) =
        demo.step("issuing the server's lease (addrd issue-lease)", |demo| {
            let authority = run_ok(
                &bins.addrd,
                &["authority-key", "--config", &addrd_config],
                b"",
                TOOL_DEADLINE,
            )?;
            let addrd_key = std::fs::read(demo.path("home/addrd.key"))?;
            let addrd_public = run_ok(&bins.tunneld, &["pubkey"], &addrd_key, TOOL_DEADLINE)?;
            let key = run_ok(&bins.tunneld, &["genkey"], b"", TOOL_DEADLINE)?;
            demo.write("server/tunneld.key", key.as_bytes(), 0o600)?;
            let public = run_ok(&bins.tunneld, &["pubkey"], key.as_bytes(), TOOL_DEADLINE)?;
            let public = demo.write("server/tunneld.pub", public.as_bytes(), 0o644)?;
            let lease = demo.path("server/tunneld.lease");
            run_ok(
                &bins.addrd,
                &[
                    "issue-lease",
                    SYSTEM,
                    "--kind",
                    "system",
                    "--public-key-file",
                    s(&public)?,
                    "--out",
                    s(&lease)?,
                    "--config",
                    &addrd_config,
                ],
                b"",
                TOOL_DEADLINE,
            )?;
            let html_app = address_of(&bins, &addrd_config, HTML_APP)?;
            let wml_app = address_of(&bins, &addrd_config, WML_APP)?;
            Ok((
                authority.trim().to_owned(),
                addrd_public.trim().to_owned(),
                html_app,
                wml_app,
            ))
        })?;
    println!("           {SYSTEM}'s applications: {HTML_APP} = {html_app}, {WML_APP} = {wml_app}");

    let (html_backend, wml_backend) =
        demo.step("starting the example applications' backends", |_| {
            let html = backend::start(HTML_APP, apps.join(HTML_APP))?;
            let wml = backend::start(WML_APP, apps.join(WML_APP))?;
            for (name, dir) in [(HTML_APP, HTML_APP), (WML_APP, WML_APP)] {
                if !apps.join(dir).is_dir() {
                    bail!("{name}: no directory {}", apps.join(dir).display());
                }
            }
            Ok((html, wml))
        })?;

    let server_udp = demo.step("starting the server tunneld (userspace mode)", |demo| {
        let udp = free_udp()?;
        let html_adapter = free_tcp()?;
        let wml_adapter = free_tcp()?;
        let config = format!(
            "role = \"server\"\nlisten = \"{udp}\"\nprivate-key-file = \"tunneld.key\"\n\
             authority-key = \"{authority}\"\nlease-file = \"tunneld.lease\"\nmode = \"userspace\"\n\n\
             [[applications]]\nname = \"{HTML_APP}\"\naddress = \"{html_app}\"\nports = [80, 9200, 9201]\n\
             backend = \"{html_adapter}\"\nallowed-groups = [\"staff\"]\n\n\
             [[applications]]\nname = \"{WML_APP}\"\naddress = \"{wml_app}\"\nports = [80, 9200, 9201]\n\
             backend = \"{wml_adapter}\"\nallowed-groups = [\"staff\", \"students\"]\n"
        );
        let config = demo.write("server/tunneld.toml", config.as_bytes(), 0o644)?;
        let socket = demo.path("server/tunneld.sock");
        demo.daemon(
            "tunneld (server)",
            &bins.tunneld,
            &["run", "--config", s(&config)?, "--socket", s(&socket)?],
            "server/tunneld.log",
            "data plane running",
        )?;
        let adapter = format!(
            "log-level = \"info\"\n[identity]\ntunneld-socket = \"tunneld.sock\"\n\n\
             [[applications]]\nname = \"{HTML_APP}\"\naddress = \"{html_app}\"\n\
             proxy-protocol-listen = \"{html_adapter}\"\nbackend.url = \"http://{}/\"\n\
             allowed-groups = [\"staff\"]\n\n\
             [[applications]]\nname = \"{WML_APP}\"\naddress = \"{wml_app}\"\n\
             proxy-protocol-listen = \"{wml_adapter}\"\nbackend.url = \"http://{}/\"\n\
             allowed-groups = [\"staff\", \"students\"]\n",
            html_backend.address, wml_backend.address
        );
        demo.write("server/wap-adapter.toml", adapter.as_bytes(), 0o644)?;
        Ok(udp)
    })?;
    demo.step("starting wap-adapter (proxied mode)", |demo| {
        let config = demo.path("server/wap-adapter.toml");
        demo.daemon(
            "wap-adapter",
            &bins.wap_adapter,
            &["run", "--config", s(&config)?],
            "server/wap-adapter.log",
            "wap-adapter running",
        )
    })?;

    // alice's terminal: a new key, a login, then the client daemon.
    let (client_config, socks, wap_forward, wiki_forward) =
        demo.step("writing alice's terminal's key and config", |demo| {
            let key = run_ok(&bins.tunneld, &["genkey"], b"", TOOL_DEADLINE)?;
            demo.write("client/tunneld.key", key.as_bytes(), 0o600)?;
            let lease = std::fs::read(demo.path("server/tunneld.lease"))?;
            demo.write("client/server.lease", &lease, 0o644)?;
            let socks = free_tcp()?;
            let wap_forward = free_udp()?;
            let wiki_forward = free_udp()?;
            let config = format!(
                "role = \"client\"\nlisten = \"127.0.0.1:0\"\nprivate-key-file = \"tunneld.key\"\n\
                 authority-key = \"{authority}\"\nlease-file = \"tunneld.lease\"\nmode = \"userspace\"\n\
                 socks-listen = \"{socks}\"\n\n\
                 [addrd]\nendpoint = \"{addrd_udp}\"\npublic-key = \"{addrd_public}\"\n\n\
                 [[peers]]\nlease-file = \"server.lease\"\nendpoint = \"{server_udp}\"\n\n\
                 [[port-forwards]]\nlisten = \"{wap_forward}\"\nto = \"[{wml_app}]:9200\"\nprotocol = \"udp\"\n\n\
                 [[port-forwards]]\nlisten = \"{wiki_forward}\"\nto = \"[{html_app}]:9200\"\nprotocol = \"udp\"\n"
            );
            let config = demo.write("client/tunneld.toml", config.as_bytes(), 0o644)?;
            Ok((s(&config)?.to_owned(), socks, wap_forward, wiki_forward))
        })?;
    let client_socket = demo.path("client/tunneld.sock");
    demo.step(
        "logging in as alice (tunneld login, password on stdin)",
        |demo| {
            let password = std::env::var(TEST_PASSWORD_ENV).unwrap_or_else(|_| PASSWORD.to_owned());
            let out = run_tool(
                &bins.tunneld,
                &[
                    "login",
                    "--config",
                    &client_config,
                    "--user",
                    USER,
                    "--password-stdin",
                    "--timeout",
                    "20",
                    "--socket",
                    s(&client_socket)?,
                ],
                format!("{password}\n").as_bytes(),
                TOOL_DEADLINE,
            )?;
            if !out.status.success() {
                let said = [out.stderr.trim(), out.stdout.trim()]
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!(
                    "`tunneld login --user {USER}` failed ({}): {said}",
                    process::describe(out.status)
                );
            }
            demo.check_daemons()
        },
    )?;
    demo.step(
        "starting alice's tunneld (client, userspace mode)",
        |demo| {
            demo.daemon(
                "tunneld (alice)",
                &bins.tunneld,
                &[
                    "run",
                    "--config",
                    &client_config,
                    "--socket",
                    s(&client_socket)?,
                ],
                "client/tunneld.log",
                "data plane running",
            )
        },
    )?;
    let alice = demo.step("reading alice's permanent address", |_| {
        let out = run_ok(
            &bins.tunneld,
            &["status", "--json", "--socket", s(&client_socket)?],
            b"",
            TOOL_DEADLINE,
        )?;
        let status: serde_json::Value = serde_json::from_str(&out)?;
        let address = status["interface"]["addresses"][0]
            .as_str()
            .ok_or_else(|| anyhow!("no address in `tunneld status --json`: {status}"))?;
        Ok(address.trim_end_matches("/128").to_owned())
    })?;
    println!("\n  alice's permanent address: {alice}\n");

    let html_host = format!("{HTML_APP}.{ZONE}");
    let answer = demo.step(
        "fetching the HTML app over HTTP (SOCKS5, by overlay name)",
        |_| {
            let answer = client::http_get_via_socks(socks, &html_host, "/", FETCH_DEADLINE)?;
            if answer.code != 200 || !answer.body.contains("Example wiki") {
                bail!(
                    "expected 200 and the wiki's page, got {} ({}):\n{}",
                    answer.status,
                    answer.content_type,
                    excerpt(&answer.body, 8)
                );
            }
            if !answer.body.contains(&format!("Hello {USER}")) {
                bail!("the page does not greet {USER}: the identity did not reach the backend");
            }
            Ok(answer)
        },
    )?;
    println!(
        "\n  HTML app over HTTP: http://{html_host}/ -> {}\n  content type: {}\n{}",
        answer.status,
        answer.content_type,
        excerpt(&answer.body, 12)
    );

    let answer = demo.step("fetching the WML app over WSP (UDP port forward)", |_| {
        let answer = client::wsp_get(wap_forward, "/", FETCH_DEADLINE)?;
        if answer.code != 200
            || !answer.content_type.starts_with("text/vnd.wap.wml")
            || !answer.body.contains("<wml")
        {
            bail!(
                "expected 200 and a WML deck, got {} ({}):\n{}",
                answer.status,
                answer.content_type,
                excerpt(&answer.body, 8)
            );
        }
        if !answer.body.contains(&format!("Hello {USER}")) {
            bail!("the deck does not greet {USER}: the identity did not reach the backend");
        }
        Ok(answer)
    })?;
    println!(
        "\n  WML app over WSP: connectionless Get / to [{wml_app}]:9200 -> {}\n  content type: {}\n{}",
        answer.status,
        answer.content_type,
        excerpt(&answer.body, 12)
    );

    let answer = demo.step("fetching the HTML app over WSP (converted to WML)", |_| {
        let answer = client::wsp_get(wiki_forward, "/", FETCH_DEADLINE)?;
        if answer.code != 200
            || !answer.content_type.starts_with("text/vnd.wap.wml")
            || !answer.body.contains("<wml")
            || !answer.body.contains(&format!("Hello {USER}"))
        {
            bail!(
                "expected 200 and the wiki's page as WML, got {} ({}):\n{}",
                answer.status,
                answer.content_type,
                excerpt(&answer.body, 8)
            );
        }
        Ok(answer)
    })?;
    println!(
        "\n  HTML app over WSP: connectionless Get / to [{html_app}]:9200 -> {}\n  content type: {} (wap-adapter's html2wml)\n{}",
        answer.status,
        answer.content_type,
        excerpt(&answer.body, 8)
    );

    let status = demo.step("reading the tunnel status (tunneld status)", |demo| {
        demo.check_daemons()?;
        run_ok(
            &bins.tunneld,
            &["status", "--socket", s(&client_socket)?],
            b"",
            TOOL_DEADLINE,
        )
    })?;
    println!("\n  alice's tunnel (tunneld status):");
    for line in status.lines() {
        println!("    {line}");
    }
    for (name, backend) in [(HTML_APP, &html_backend), (WML_APP, &wml_backend)] {
        let c = &backend.counters;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "  {name}'s backend: {} served, {} not found, {} bad requests, {} refused (overload)",
            load(&c.served),
            load(&c.not_found),
            load(&c.bad_requests),
            load(&c.overloaded)
        );
    }
    Ok(Up {
        socks,
        wap_forward,
        wiki_forward,
        wml_app,
        client_socket,
        tunneld: bins.tunneld,
    })
}

/// Set once Ctrl-C (SIGINT) or SIGTERM arrived; steps and waits stop at
/// it, so a Ctrl-C during start-up still stops what was started.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C or SIGTERM arrived.
fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Acquire)
}

/// Handle SIGINT and SIGTERM from now on (instead of dying at once): a
/// thread sets [`INTERRUPTED`] and sends the signal's name.
fn catch_signals() -> anyhow::Result<mpsc::Receiver<&'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                loop {
                    let name = tokio::select! {
                        _ = interrupt.recv() => "Ctrl-C",
                        _ = terminate.recv() => "SIGTERM",
                    };
                    INTERRUPTED.store(true, Ordering::Release);
                    if tx.send(name).is_err() {
                        return;
                    }
                }
            });
        })?;
    Ok(rx)
}

/// Wait for Ctrl-C or SIGTERM; an error if a daemon exits first.
fn wait_for_signal(
    demo: &mut Demo,
    signals: &mpsc::Receiver<&'static str>,
) -> anyhow::Result<&'static str> {
    loop {
        match signals.recv_timeout(Duration::from_secs(1)) {
            Ok(name) => return Ok(name),
            Err(mpsc::RecvTimeoutError::Timeout) => demo.check_daemons()?,
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the signal thread ended"),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let signals = match catch_signals() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("permanet-demo: handling Ctrl-C: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let dir = match tempfile::Builder::new().prefix("permanet-demo-").tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("permanet-demo: creating a temporary directory: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "permanet demo: addrd, two tunnelds and wap-adapter on loopback, files in {}\n",
        dir.path().display()
    );
    let mut demo = Demo {
        started,
        dir,
        daemons: Vec::new(),
    };
    let up = match run(&mut demo, &args) {
        Ok(up) => up,
        Err(failed) => {
            eprintln!("\npermanet-demo: {failed}");
            demo.shutdown();
            return ExitCode::FAILURE;
        }
    };
    println!(
        "\nall checks passed: up in {:.1} s (from the start to both applications answering)",
        demo.elapsed()
    );
    if args.once {
        demo.shutdown();
        return ExitCode::SUCCESS;
    }
    println!("\nthe daemons and their logs:");
    for daemon in &demo.daemons {
        let pid = daemon.pid().map(|p| p.to_string()).unwrap_or_default();
        println!("  {} (pid {pid}): {}", daemon.name, daemon.log.display());
    }
    println!(
        "\nTry it yourself (Ctrl-C stops everything):\n  \
         curl --socks5-hostname {socks} http://{HTML_APP}.{ZONE}/\n  \
         curl --socks5-hostname {socks} http://{HTML_APP}.{ZONE}/rooms.html\n  \
         curl --socks5-hostname {socks} http://{WML_APP}.{ZONE}/          (WML, converted to HTML)\n  \
         WAP: a WSP connectionless client (e.g. kannel's fakewap) to UDP {fwd}\n       \
         (alice's UDP port forward to [{wml}]:9200), or to UDP {wiki_fwd} for the wiki as WML\n  \
         {tunneld} status --socket {sock}",
        socks = up.socks,
        fwd = up.wap_forward,
        wiki_fwd = up.wiki_forward,
        wml = up.wml_app,
        tunneld = up.tunneld.display(),
        sock = up.client_socket.display(),
    );
    let outcome = wait_for_signal(&mut demo, &signals);
    let code = match outcome {
        Ok(signal) => {
            println!("\n{signal}: stopping");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("\npermanet-demo: {error:#}");
            ExitCode::FAILURE
        }
    };
    demo.shutdown();
    code
}
