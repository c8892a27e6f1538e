//! Fixtures for tests that run real permanet daemons in Linux network
//! namespaces: the namespaces themselves, veth links between them, daemon
//! processes, and the key, lease and config files a node needs.
//!
//! Every resource is a guard that removes what it made when dropped — also
//! when the test panics —: [`Netns`] deletes its namespace, [`Process`]
//! kills (SIGKILL) and reaps its child by PID, [`NodeFiles`] removes its
//! temporary directory. Names carry the test process's PID and a per-test
//! tag, so parallel tests and parallel runs do not collide.
//!
//! The tests need root (`CAP_SYS_ADMIN` for namespaces, `CAP_NET_ADMIN`
//! for the devices); [`skip_unless_root`] reports each test as skipped
//! otherwise ([`skip`]). [`slapd`] is a private OpenLDAP server with the
//! permanet schema and the example organisation, for addrd's tests and the
//! end-to-end ones. [`topology`] builds the whole system (home site with
//! addrd on slapd, application server, internet router, two NAT carriers,
//! mobile terminals) for `tests/system.rs`, with [`relay`], a UDP relay
//! that drops, reorders and duplicates. The daemons
//! themselves are binaries of other packages: each test passes the path
//! Cargo gives it (`env!("CARGO_BIN_EXE_tunneld")`).
//!
//! Nothing here sleeps for a fixed time: [`wait_until`] polls a condition
//! up to a deadline and panics, naming what it waited for, when it passes.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::kill;
pub use nix::sys::signal::Signal;
use nix::unistd::Pid;
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{EntityKind, Lease, LeaseAuthority};
use overlay_proto::time::UnixTime;

pub mod http;
pub mod relay;
pub mod slapd;
pub mod topology;

/// How long a daemon may take to start, to stop, or a condition to hold.
/// Generous: CI runs the suite on two shared cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often [`wait_until`] checks.
const POLL: Duration = Duration::from_millis(20);

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `true` (skip the test) when not root, after reporting it skipped
/// because it needs root (network namespaces).
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    skip(test, "needs root (network namespaces)");
    true
}

/// Report a test as skipped and why. The line goes straight to the
/// process's stderr, past the test harness's output capture (a skip nobody
/// sees looks like a pass), so that `scripts/test-all.sh` counts it: the
/// test itself then returns and counts as passed in cargo's own summary,
/// and the script moves it from passed to skipped (it counts lines
/// containing `permanet-test-skipped:`).
pub fn skip(test: &str, reason: &str) {
    // One write of one line: not interleaved with other tests' lines.
    let line = format!("\npermanet-test-skipped: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Poll `condition` every few milliseconds until it holds; panic naming
/// `what` (and `context()`, e.g. a daemon's log) after `deadline`.
pub fn wait_until(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let end = Instant::now() + deadline;
    while !condition() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(POLL);
    }
}

/// Run `program args` and return its output; panics if it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// Run `program args`; panics with its stderr unless it succeeds.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace `pn<pid>-<tag>` with its loopback up. `tag` must be
    /// unique among the tests of one process.
    pub fn new(tag: &str) -> Netns {
        let name = format!("pn{}-{tag}", std::process::id());
        // Left over from a crashed run of a process with the same PID.
        let _ = run("ip", &["netns", "delete", &name]);
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args`; panics unless it succeeds; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ok("ip", &all)
    }

    /// `ip -n NAME args`, whatever its outcome.
    pub fn try_ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec`, which execs it: the child's PID is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .stdin(Stdio::null());
        command
    }

    /// Run `f` on a new thread that has entered the namespace: sockets it
    /// opens live there. Returns what `f` returns; a panic in `f` panics
    /// here.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// [`Netns::run`] without waiting: the thread's handle.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let file =
                fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its devices (the veth pair too)
        // once no process is left in it; the daemons are gone by now
        // (Process guards drop first: declare them after the namespaces).
        let _ = run("ip", &["netns", "delete", &self.name]);
    }
}

/// Connect `a` and `b` with a veth pair (`veth0` in each) carrying
/// `a_addr` and `b_addr` (IPv4 with prefix length, e.g. `10.0.0.1/24`),
/// both up.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    run_ok(
        "ip",
        &[
            "link", "add", "veth0", "netns", &a.name, "type", "veth", "peer", "name", "veth0",
            "netns", &b.name,
        ],
    );
    for (ns, addr) in [(a, a_addr), (b, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", "veth0"]);
        ns.ip(&["link", "set", "veth0", "up"]);
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped unless it
/// already exited. Its stderr goes to a log file.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    log: PathBuf,
    name: String,
}

impl Process {
    /// Start `command` with stdout discarded and stderr to `log`.
    pub fn start(name: &str, mut command: Command, log: PathBuf) -> Process {
        let stderr =
            fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let child = command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process {
            child: Some(child),
            log,
            name: name.to_owned(),
        }
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- {} stderr ---\n{text}", self.name)
    }

    /// Wait until the log contains `needle`; panics if the process exits
    /// first or after [`DEADLINE`].
    pub fn wait_for_log(&mut self, needle: &str) {
        let what = format!("{:?} in the log of {}", needle, self.name);
        let log = self.log.clone();
        let end = Instant::now() + DEADLINE;
        loop {
            if fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(needle)
            {
                return;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}\n{}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The exit status, if the process has exited (reaped then).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(status) => status,
            Err(e) => panic!("waiting for {}: {e}", self.name),
        }
    }

    /// Send `signal` and wait (up to [`DEADLINE`]) for the exit status.
    pub fn stop(&mut self, signal: Signal) -> ExitStatus {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} was already reaped", self.name));
        let pid = i32::try_from(child.id()).unwrap_or_else(|_| panic!("PID out of range"));
        kill(Pid::from_raw(pid), signal)
            .unwrap_or_else(|e| panic!("{signal} to {}: {e}", self.name));
        self.wait_exit(&format!("after {signal}"))
    }

    /// Wait (up to [`DEADLINE`]) for the process to exit by itself; `why`
    /// names what should have made it exit, for the panic message.
    pub fn wait_exit(&mut self, why: &str) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {} to exit {why}\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The test authority every node's lease is signed by.
pub fn authority() -> LeaseAuthority {
    LeaseAuthority::from_seed([0x33; 32])
}

/// A node's files in a temporary directory (removed when dropped): its
/// private key (mode 0600), its lease and its peers' leases signed by
/// [`authority`], its config.
#[derive(Debug)]
pub struct NodeFiles {
    dir: tempfile::TempDir,
    keypair: StaticKeypair,
}

impl NodeFiles {
    /// A node whose static key comes from `seed`, with its private key
    /// written to `tunneld.key` (0600) and a lease for `kind`, `prefix`
    /// and `groups` to `tunneld.lease`.
    pub fn new(
        seed: [u8; 32],
        kind: EntityKind,
        prefix: &str,
        name: &str,
        groups: &[&str],
    ) -> NodeFiles {
        let dir = tempfile::Builder::new()
            .prefix("permanet-netns-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory: {e}"));
        let files = NodeFiles {
            dir,
            keypair: StaticKeypair::from_private(seed),
        };
        let key = PublicKey(*files.keypair.private_bytes()).to_string();
        files.write("tunneld.key", key.as_bytes(), 0o600);
        let lease = lease(kind, prefix, files.keypair.public(), name, groups);
        files.write("tunneld.lease", &lease, 0o644);
        files
    }

    /// The node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public()
    }

    /// A path in the node's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `bytes` to `name` with permission bits `mode`.
    pub fn write(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        path
    }

    /// Write `tunneld.toml`: `body` after the lines every node shares
    /// (key, lease and authority key).
    pub fn config(&self, body: &str) -> PathBuf {
        let authority = PublicKey(authority().public_key().to_bytes());
        let text = format!(
            "private-key-file = \"tunneld.key\"\nlease-file = \"tunneld.lease\"\n\
             authority-key = \"{authority}\"\n{body}"
        );
        self.write("tunneld.toml", text.as_bytes(), 0o644)
    }
}

/// Seconds since the Unix epoch by the real clock (the one the daemons
/// read).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_else(|e| panic!("clock before 1970: {e}"))
}

/// A lease signed by [`authority`], valid from a minute ago for an hour
/// (the daemons read the real clock), serial 1.
pub fn lease(
    kind: EntityKind,
    prefix: &str,
    key: PublicKey,
    name: &str,
    groups: &[&str],
) -> Vec<u8> {
    LeaseSpec {
        kind,
        prefix,
        key,
        name,
        groups,
        serial: 1,
        lifetime: 3600,
    }
    .sign()
}

/// What a test lease says, for tests that renew leases or let them run
/// out ([`lease`] is the common case).
#[derive(Debug, Clone, Copy)]
pub struct LeaseSpec<'a> {
    /// The entity kind.
    pub kind: EntityKind,
    /// The leased prefix, e.g. `2002:b16:212c:2::/64`.
    pub prefix: &'a str,
    /// The holder's static public key.
    pub key: PublicKey,
    /// The holder's name (its DN is `cn=NAME,dc=example,dc=org`).
    pub name: &'a str,
    /// The holder's groups.
    pub groups: &'a [&'a str],
    /// The lease's serial.
    pub serial: u64,
    /// Seconds from now until the lease ends (it starts a minute ago).
    pub lifetime: u64,
}

impl LeaseSpec<'_> {
    /// The lease signed by [`authority`].
    pub fn sign(&self) -> Vec<u8> {
        let now = unix_now();
        let lease = Lease {
            kind: self.kind,
            serial: self.serial,
            not_before: UnixTime::from_secs(now - 60),
            not_after: UnixTime::from_secs(now + self.lifetime),
            public_key: self.key.0,
            prefix: self
                .prefix
                .parse()
                .unwrap_or_else(|e| panic!("lease prefix {}: {e}", self.prefix)),
            name: self.name.to_owned(),
            dn: format!("cn={},dc=example,dc=org", self.name),
            groups: self.groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        authority()
            .sign(&lease)
            .unwrap_or_else(|e| panic!("signing the lease of {}: {e}", self.name))
            .into_bytes()
    }
}
