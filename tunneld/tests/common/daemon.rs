//! Running the `tunneld` binary as an operator would. A [`Setup`] is a
//! temporary directory with a node's key, its lease, its peers' leases and
//! its config, the leases signed by the test authority
//! ([`netns_tests::authority`]) and valid around the real clock (the binary
//! reads it). A [`Daemon`] is a `tunneld run` process that tests wait on
//! (polling, with a deadline), query with `tunneld status --json` and
//! signal by PID; it is killed and reaped when dropped, also when the test
//! fails. A [`Pair`] is a server daemon and a client daemon that has it as
//! its peer; [`socks_connect`] talks to a client's SOCKS5 listener.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use netns_tests::{authority, wait_until, LeaseSpec};
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::EntityKind;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tunneld");

/// How long a daemon may take to start, to stop or to show a change.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A client's lease: one user address.
pub const CLIENT_PREFIX: &str = "2002:b16:212c:1::1234/128";
/// A server's lease: its system virtual network.
pub const SERVER_PREFIX: &str = "2002:b16:212c:2::/64";

/// The groups in every lease a [`Setup`] writes.
const GROUPS: &[&str] = &["staff"];

/// Runs `tunneld args` with `stdin` on its standard input; its output.
pub fn tunneld(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// `bytes` as UTF-8 text; fails if they are not.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A free loopback TCP address (bound and released; the daemon binds it
/// next).
pub fn free_tcp_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A free loopback UDP address (bound and released; the daemon binds it
/// next).
pub fn free_udp_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A peer endpoint that never answers: a loopback UDP socket, kept bound
/// while the test holds it (so datagrams to it are taken and ignored);
/// with its address.
pub fn silent_peer() -> (std::net::UdpSocket, SocketAddr) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = socket.local_addr().unwrap();
    (socket, endpoint)
}

/// The test authority's public key as configs write it.
pub fn authority_key() -> String {
    PublicKey(authority().public_key().to_bytes()).to_string()
}

/// A directory holding a node's files. The node's private key is written
/// to `tunneld.key` (mode 0600) at once; leases and configs as the test
/// asks.
pub struct Setup {
    dir: tempfile::TempDir,
    /// The node's static key pair.
    pub keypair: StaticKeypair,
}

impl Setup {
    /// A node whose static key is `[seed; 32]`.
    pub fn new(seed: u8) -> Self {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
            keypair: StaticKeypair::from_private([seed; 32]),
        };
        let key = PublicKey(*setup.keypair.private_bytes()).to_string();
        setup.write("tunneld.key", key.as_bytes(), 0o600);
        setup
    }

    /// A client node: [`Setup::new`] with a user lease for
    /// [`CLIENT_PREFIX`] (serial 1, an hour).
    pub fn client(seed: u8) -> Self {
        let setup = Setup::new(seed);
        setup.write_client_lease(1, 3600);
        setup
    }

    /// A server node: [`Setup::new`] with a system lease for
    /// [`SERVER_PREFIX`] (serial 1, an hour).
    pub fn server(seed: u8) -> Self {
        let setup = Setup::new(seed);
        setup.write_own_lease(EntityKind::System, SERVER_PREFIX, 1, 3600);
        setup
    }

    /// `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to `name` (creating its directory) with permission
    /// bits `mode`: to a temporary file, then renamed, as a tool renewing
    /// a file should (a daemon never reads half a file).
    pub fn write(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = self.path(&format!("{name}.tmp"));
        fs::write(&tmp, bytes).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&tmp, &path).unwrap();
        path
    }

    /// This node's lease, named "node", valid from a minute ago for
    /// `lifetime` seconds, under `tunneld.lease`.
    pub fn write_own_lease(&self, kind: EntityKind, prefix: &str, serial: u64, lifetime: u64) {
        let lease = LeaseSpec {
            kind,
            prefix,
            key: self.keypair.public(),
            name: "node",
            groups: GROUPS,
            serial,
            lifetime,
        }
        .sign();
        self.write("tunneld.lease", &lease, 0o644);
    }

    /// [`Setup::write_own_lease`] for a client: a user with
    /// [`CLIENT_PREFIX`].
    pub fn write_client_lease(&self, serial: u64, lifetime: u64) {
        self.write_own_lease(EntityKind::User, CLIENT_PREFIX, serial, lifetime);
    }

    /// The lease of a peer system named "srv" whose key is `[seed; 32]`,
    /// valid for an hour, under `name`; returns the peer's public key.
    pub fn write_peer_lease(&self, name: &str, seed: u8, prefix: &str) -> PublicKey {
        let key = StaticKeypair::from_private([seed; 32]).public();
        let lease = netns_tests::lease(EntityKind::System, prefix, key, "srv", GROUPS);
        self.write(name, &lease, 0o644);
        key
    }

    /// `peer`'s own lease under `name`, as addrd would list it in the
    /// netmap.
    pub fn write_lease_of(&self, peer: &Setup, name: &str) {
        let lease = fs::read(peer.path("tunneld.lease")).unwrap();
        self.write(name, &lease, 0o644);
    }

    /// A userspace-mode config for `role` listening on `listen`, with this
    /// directory's key and lease and the test authority; `extra` follows
    /// the common keys, then a `[[peers]]` table per `(lease file,
    /// endpoint)`.
    pub fn config(
        &self,
        role: &str,
        listen: &str,
        extra: &str,
        peers: &[(&str, SocketAddr)],
    ) -> String {
        let mut config = format!(
            "role = \"{role}\"\nlisten = \"{listen}\"\nprivate-key-file = \"tunneld.key\"\n\
             authority-key = \"{}\"\nlease-file = \"tunneld.lease\"\nmode = \"userspace\"\n{extra}\n",
            authority_key()
        );
        for (lease, endpoint) in peers {
            config.push_str(&format!(
                "[[peers]]\nlease-file = \"{lease}\"\nendpoint = \"{endpoint}\"\n\n"
            ));
        }
        config
    }

    /// [`Setup::config`] for a client on an ephemeral loopback port.
    pub fn client_config(&self, extra: &str, peers: &[(&str, SocketAddr)]) -> String {
        self.config("client", "127.0.0.1:0", extra, peers)
    }

    /// Writes `config` to `tunneld.toml` and starts a daemon on it
    /// ([`Daemon::start`]) with its socket and its stderr log here.
    pub fn start(&self, config: &str) -> Daemon {
        let path = self.write("tunneld.toml", config.as_bytes(), 0o644);
        Daemon::start(&path, &self.path("tunneld.sock"), &self.path("stderr.log"))
    }

    /// [`Setup::start`] without waiting for the daemon to be ready.
    pub fn spawn(&self, config: &str) -> Daemon {
        let path = self.write("tunneld.toml", config.as_bytes(), 0o644);
        Daemon::spawn(&path, &self.path("tunneld.sock"), &self.path("stderr.log"))
    }
}

/// Two daemons on loopback: a server, and a client that has the server as
/// its one peer.
pub struct Pair {
    /// The client's daemon.
    pub client_daemon: Daemon,
    /// The server's daemon.
    pub server_daemon: Daemon,
    /// The client's files: a user lease for [`CLIENT_PREFIX`], the
    /// server's lease under `server.lease`.
    pub client: Setup,
    /// The server's files: a system lease for [`SERVER_PREFIX`].
    pub server: Setup,
    /// Where the server listens (UDP).
    pub server_udp: SocketAddr,
}

impl Pair {
    /// Starts a server (key `[seed; 32]`) on a free loopback UDP address
    /// with `server_extra` in its config, then a client (key `[seed + 1;
    /// 32]`) with `client_extra` in its config and the server as its peer;
    /// each ready ([`Daemon::start`]).
    pub fn start(seed: u8, server_extra: &str, client_extra: &str) -> Pair {
        let server = Setup::server(seed);
        let server_udp = free_udp_addr();
        let server_config = server.config("server", &server_udp.to_string(), server_extra, &[]);
        let server_daemon = server.start(&server_config);
        let client = Setup::client(seed + 1);
        client.write_lease_of(&server, "server.lease");
        let client_config = client.client_config(client_extra, &[("server.lease", server_udp)]);
        let client_daemon = client.start(&client_config);
        Pair {
            client_daemon,
            server_daemon,
            client,
            server,
            server_udp,
        }
    }

    /// The server's config with `extra` in place of what it started with.
    pub fn server_config(&self, extra: &str) -> String {
        let listen = self.server_udp.to_string();
        self.server.config("server", &listen, extra, &[])
    }

    /// Stops the client, then the server ([`Daemon::stop`]: each must
    /// exit 0).
    pub fn stop(&mut self) {
        self.client_daemon.stop();
        self.server_daemon.stop();
    }
}

/// A `tunneld run` child process; SIGKILLed and reaped if the test ends
/// before it exited.
pub struct Daemon {
    child: Option<Child>,
    stderr: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    /// Starts `tunneld run` and waits until `socket` accepts connections
    /// and the daemon says its data plane (and with it the SOCKS5 listener
    /// or the applications) is running; fails if it exits first.
    pub fn start(config: &Path, socket: &Path, stderr: &Path) -> Self {
        let mut daemon = Daemon::spawn(config, socket, stderr);
        daemon.wait_for("the data plane to run", |d| {
            let exited = d.exited();
            assert!(exited.is_none(), "daemon exited: {exited:?}\n{}", d.log());
            std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
                && d.log().contains("data plane running")
        });
        daemon
    }

    /// Starts `tunneld run --config CONFIG --socket SOCKET`, stdout
    /// discarded, stderr to `stderr`.
    pub fn spawn(config: &Path, socket: &Path, stderr: &Path) -> Self {
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            stderr: stderr.to_owned(),
            socket: socket.to_owned(),
        }
    }

    /// The control socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The control socket's path as an argument.
    pub fn socket_str(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls `ready` until it holds; fails naming `what`, with the log,
    /// after [`TIMEOUT`].
    pub fn wait_for(&mut self, what: &str, mut ready: impl FnMut(&mut Self) -> bool) {
        let stderr = self.stderr.clone();
        wait_until(
            what,
            TIMEOUT,
            || ready(self),
            || fs::read_to_string(&stderr).unwrap_or_default(),
        );
    }

    /// Polls the log until it contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str) {
        self.wait_for(&format!("{needle:?} in the log"), |d| {
            d.log().contains(needle)
        });
    }

    /// Polls `status --json` until `ready` holds on it; returns it.
    pub fn wait_for_status(
        &mut self,
        what: &str,
        mut ready: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        self.wait_for(what, |d| {
            last = d.status();
            ready(&last)
        });
        last
    }

    /// `tunneld status --json` of this daemon; fails unless it answers.
    pub fn status(&self) -> serde_json::Value {
        let out = tunneld(&["status", "--json", "--socket", self.socket_str()], b"");
        assert_eq!(out.status.code(), Some(0), "{}", self.log());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Sends `signal` to the daemon's PID.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.as_ref().unwrap().id()).unwrap();
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our
        // child, not yet reaped, so it names no other process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0);
    }

    /// Writes `config` to `setup`'s `tunneld.toml`, sends SIGHUP and waits
    /// until the daemon counted the reload (applied or failed); returns
    /// the status that counted it.
    pub fn reload(&mut self, setup: &Setup, config: &str) -> serde_json::Value {
        let done = |s: &serde_json::Value| {
            s["reload"]["applied"].as_u64().unwrap() + s["reload"]["failed"].as_u64().unwrap()
        };
        let count = done(&self.status());
        setup.write("tunneld.toml", config.as_bytes(), 0o644);
        self.signal(libc::SIGHUP);
        self.wait_for_status("the reload to be counted", |s| done(s) > count)
    }

    /// Sends SIGTERM; fails, with the log, unless the daemon exits with
    /// status 0.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit();
        assert_eq!(status.code(), Some(0), "{}", self.log());
    }

    /// Waits for the daemon to exit by itself; its exit status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        self.wait_for("the daemon to exit", |d| {
            status = d.exited();
            status.is_some()
        });
        self.child = None;
        status.unwrap()
    }

    /// The exit status, if the daemon has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A SOCKS5 no-auth greeting, then CONNECT to `host` (an IPv6 literal, or
/// else a domain name) and `port`; returns the stream (reads time out
/// after [`TIMEOUT`]) and the 22-byte reply (an IPv6 bound address).
pub fn socks_connect(socks: SocketAddr, host: &str, port: u16) -> (TcpStream, [u8; 22]) {
    let mut conn = TcpStream::connect(socks).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    conn.read_exact(&mut method).unwrap();
    assert_eq!(method, [5, 0]);
    let mut request = vec![5, 1, 0];
    match host.parse::<Ipv6Addr>() {
        Ok(address) => {
            request.push(4);
            request.extend_from_slice(&address.octets());
        }
        Err(_) => {
            request.extend_from_slice(&[3, u8::try_from(host.len()).unwrap()]);
            request.extend_from_slice(host.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    conn.write_all(&request).unwrap();
    let mut reply = [0u8; 22];
    conn.read_exact(&mut reply).unwrap();
    (conn, reply)
}
