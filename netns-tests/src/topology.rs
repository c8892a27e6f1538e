//! The whole system in network namespaces: a home site (addrd on a real
//! OpenLDAP slapd), an application server with its own public IPv4, an
//! "internet" router between them, two carriers that NAT their mobile
//! clients, and optionally an impairing UDP relay on the path.
//!
//! ```text
//!                      ┌──────────── inet (router) ────────────┐
//!                      │ relay 11.9.0.1:4500 (optional, lo)     │
//!                      └─┬──────────┬─────────────┬──────────┬─┘
//!            11.1.0.0/24 │          │ 11.22.33/24 │          │ 11.3.0.0/24
//!   ┌────────────────────┴─┐ ┌──────┴───────────┐ │  ┌───────┴──────────┐
//!   │ home  wan 11.1.0.2   │ │ app wan 11.22.33.44│ │  │ carrier-b        │
//!   │ addrd :4500 (6to4    │ │ tunneld server TUN │ │  │ wan 11.3.0.2     │
//!   │  /48 2002:b01:2::)   │ │ SVN 2002:b16:212c:N│ │  │ nft masquerade   │
//!   │ slapd 127.0.0.1      │ │ HTTP on wiki's addr│ │  │ lan 100.64.I.1   │
//!   └──────────────────────┘ └────────────────────┘ │  └───────┬──────────┘
//!                                       11.2.0.0/24 │          │
//!                                   ┌───────────────┴──┐       │
//!                                   │ carrier-a        │       │
//!                                   │ wan 11.2.0.2     │       │
//!                                   │ nft masquerade   │       │
//!                                   │ lan 10.0.I.1     │       │
//!                                   └────────┬─────────┘       │
//!                                  ┌─────────┴─────────────────┴─┐
//!                                  │ mobile I: wlan-a 10.0.I.2    │
//!                                  │           wlan-b 100.64.I.2  │
//!                                  │ tunneld client TUN permanet0 │
//!                                  └──────────────────────────────┘
//! ```
//!
//! The "public" addresses are from 11.0.0.0/8 so that no
//! `dangerous-allow-private-ipv4` switch is needed: inside these
//! namespaces they reach nothing else. The server is `app1` of
//! `configs/ldap/example-org.ldif`, whose `permanetPublicIPv4` is
//! 11.22.33.44: its system virtual network is in that address's 6to4
//! prefix, so clients derive its endpoint from the application's address.
//! addrd's overlay /48 is the 6to4 prefix of the home site's address
//! (DESIGN §2's default), and users' permanent addresses live there.
//!
//! Every piece is a guard: dropping a [`World`] stops its processes by PID
//! (daemons first), stops the relay and the HTTP backend threads, deletes
//! the namespaces and the temporary files — also when the test panics.

use std::fs;
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::HttpBackend;
pub use crate::http::{hex, http_get, http_post, http_request, Fetched, Progress, Served, MARKER};
use crate::relay::{Impairment, Relay};
use crate::slapd::{self, Slapd};
use crate::{run_ok, wait_until, Netns, Process, Signal, DEADLINE};

/// The home site's public IPv4: addrd's endpoint and its 6to4 /48.
pub const HOME_V4: &str = "11.1.0.2";
/// The application server's public IPv4 (`app1`'s `permanetPublicIPv4`).
pub const APP_V4: &str = "11.22.33.44";
/// The relay's address on the internet router.
pub const RELAY_V4: &str = "11.9.0.1";
/// The overlay UDP port everywhere.
pub const PORT: u16 = 4500;
/// The HTTP port of the test backend on the application's address.
pub const HTTP_PORT: u16 = 80;
/// alice's lab password (configs/ldap/example-org.ldif).
pub const ALICE_PASSWORD: &str = "alice-lab-password";

/// The permanet binaries, found next to the test executable.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `tunneld`.
    pub tunneld: PathBuf,
    /// `addrd`.
    pub addrd: PathBuf,
    /// `wap-adapter`, if built.
    pub wap_adapter: Option<PathBuf>,
}

impl Binaries {
    /// The binaries Cargo built in the test executable's target directory
    /// (`target/debug/deps/system-HASH` → `target/debug/tunneld`), or
    /// `None` after reporting `test` skipped when one is missing.
    pub fn find_or_skip(test: &str) -> Option<Binaries> {
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?.parent()?;
        let bins = Binaries {
            tunneld: dir.join("tunneld"),
            addrd: dir.join("addrd"),
            wap_adapter: Some(dir.join("wap-adapter")).filter(|p| p.is_file()),
        };
        for bin in [&bins.tunneld, &bins.addrd] {
            if !bin.is_file() {
                crate::skip(
                    test,
                    &format!(
                        "{} is not built (run `cargo build -p tunneld -p addrd` first)",
                        bin.display()
                    ),
                );
                return None;
            }
        }
        Some(bins)
    }
}

/// Make `ns` forward IPv4 between its interfaces.
fn forward(ns: &Netns) {
    let out = ns
        .command("sysctl")
        .args(["-q", "-w", "net.ipv4.ip_forward=1"])
        .output()
        .unwrap_or_else(|e| panic!("sysctl in {}: {e}", ns.name()));
    assert!(out.status.success(), "sysctl in {}: {out:?}", ns.name());
}

/// Connect `a` and `b` with a veth pair named `a_dev` in `a` and `b_dev`
/// in `b`, carrying `a_addr` and `b_addr` (with prefix length), both up.
pub fn link(a: &Netns, a_dev: &str, a_addr: &str, b: &Netns, b_dev: &str, b_addr: &str) {
    run_ok(
        "ip",
        &[
            "link",
            "add",
            a_dev,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_dev,
            "netns",
            b.name(),
        ],
    );
    for (ns, dev, addr) in [(a, a_dev, a_addr), (b, b_dev, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
    }
}

/// Run `program args` inside `ns` with `stdin`, and return its output.
pub fn run_in(ns: &Netns, program: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    if let Some(mut input) = child.stdin.take() {
        // A program that exits without reading its stdin is not an error.
        let _ = input.write_all(stdin);
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {}: {e}", program.display()))
}

/// The output's stdout, or a panic with both streams unless it succeeded.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory (removed when dropped) with helpers for files.
#[derive(Debug)]
pub struct Dir(tempfile::TempDir);

impl Dir {
    /// A new temporary directory.
    pub fn new() -> Dir {
        Dir(tempfile::Builder::new()
            .prefix("permanet-system-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temporary directory: {e}")))
    }

    /// A path inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Write `bytes` to `name` with mode `mode`.
    pub fn write(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        path
    }
}

impl Default for Dir {
    fn default() -> Self {
        Dir::new()
    }
}

/// The home site: addrd on an LDAP directory served by a private slapd
/// on the namespace's loopback.
#[derive(Debug)]
pub struct Home {
    /// The running `addrd run` (None while stopped).
    pub addrd: Option<Process>,
    /// The directory server (started inside the namespace).
    pub slapd: Option<Slapd>,
    /// The namespace.
    pub ns: Netns,
    /// addrd's config, keys, state, log.
    pub dir: Dir,
    bins: Binaries,
    starts: u32,
}

impl Home {
    fn start(tag: &str, inet: &Netns, bins: &Binaries) -> Home {
        let ns = Netns::new(&format!("{tag}-home"));
        link(
            inet,
            "home",
            "11.1.0.1/24",
            &ns,
            "wan",
            &format!("{HOME_V4}/24"),
        );
        ns.ip(&["route", "add", "default", "via", "11.1.0.1"]);
        // slapd and ldapadd run as children of a thread inside the
        // namespace: the directory listens on the home site's loopback.
        let slapd = ns.run(|| {
            Slapd::start(slapd::Options {
                no_sync: true,
                ..slapd::Options::default()
            })
        });
        let slapd = slapd.unwrap_or_else(|e| panic!("slapd in the home namespace: {e}"));
        let dir = Dir::new();
        for key in ["addrd.key", "authority.key", "allocation.key"] {
            let out = ok(run_in(&ns, &bins.addrd, &["genkey"], b""), "addrd genkey");
            dir.write(key, out.as_bytes(), 0o600);
        }
        let password = fs::read(slapd.service_password_file())
            .unwrap_or_else(|e| panic!("service password: {e}"));
        dir.write("ldap-password", &password, 0o600);
        let config = format!(
            "listen = \"{HOME_V4}:{PORT}\"\n\
             control-socket = \"{socket}\"\n\
             static-key-file = \"addrd.key\"\n\
             authority-key-file = \"authority.key\"\n\
             allocation-key-file = \"allocation.key\"\n\
             state-file = \"addrd-state.redb\"\n\
             audit-log = \"audit.log\"\n\n\
             [address-plan]\nhome-ipv4 = \"{HOME_V4}\"\n\n\
             [dns]\nlisten = []\n\n\
             [directory]\nbackend = \"ldap\"\nurl = \"{url}\"\n\
             bind-dn = \"{bind_dn}\"\nbind-password-file = \"ldap-password\"\n\
             base-dn = \"{base}\"\ntimeout = 5\n",
            socket = dir.path("run/addrd.sock").display(),
            url = slapd.url(),
            bind_dn = slapd::SERVICE_DN,
            base = slapd::BASE_DN,
        );
        dir.write("addrd.toml", config.as_bytes(), 0o644);
        let mut home = Home {
            addrd: None,
            slapd: Some(slapd),
            ns,
            dir,
            bins: bins.clone(),
            starts: 0,
        };
        home.start_addrd();
        home
    }

    /// Start `addrd run` and wait until it serves.
    pub fn start_addrd(&mut self) {
        self.starts += 1;
        let mut command = self.ns.command(&self.bins.addrd);
        command
            .arg("run")
            .arg("--config")
            .arg(self.dir.path("addrd.toml"));
        let log = self.dir.path(&format!("addrd-{}.log", self.starts));
        let mut process = Process::start("addrd", command, log);
        process.wait_for_log("addrd running");
        self.addrd = Some(process);
    }

    /// Stop addrd with SIGTERM; panics unless it exits cleanly.
    pub fn stop_addrd(&mut self) {
        if let Some(mut addrd) = self.addrd.take() {
            let status = addrd.stop(Signal::SIGTERM);
            assert!(
                status.success(),
                "addrd after SIGTERM: {status}\n{}",
                addrd.log()
            );
        }
    }

    /// Stop the directory server (keeping its data).
    pub fn stop_ldap(&mut self) {
        if let Some(slapd) = self.slapd.as_mut() {
            slapd.stop();
        }
    }

    /// Start the directory server again, inside the namespace.
    pub fn restart_ldap(&mut self) {
        let Some(mut slapd) = self.slapd.take() else {
            return;
        };
        let slapd = self.ns.run(move || {
            let result = slapd.restart();
            (slapd, result)
        });
        let (slapd, result) = slapd;
        self.slapd = Some(slapd);
        result.unwrap_or_else(|e| panic!("restarting slapd: {e}"));
    }

    /// `addrd ARGS --config …` inside the namespace.
    pub fn addrd_cmd(&self, args: &[&str]) -> Output {
        let config = self.dir.path("addrd.toml");
        let mut all = args.to_vec();
        let config = config.to_string_lossy().into_owned();
        all.extend(["--config", &config]);
        run_in(&self.ns, &self.bins.addrd, &all, b"")
    }

    /// `addrd ARGS --json`, parsed.
    pub fn addrd_json(&self, args: &[&str]) -> serde_json::Value {
        let out = ok(self.addrd_cmd(args), &format!("addrd {args:?}"));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("addrd {args:?}: {e}: {out}"))
    }

    /// The permanent address of `name` (`addrd show NAME --json`).
    pub fn address_of(&self, name: &str) -> Ipv6Addr {
        let value = self.addrd_json(&["show", name, "--json"]);
        let address = value
            .as_array()
            .and_then(|all| all.iter().find(|e| e["name"] == name))
            .and_then(|e| e["address"].as_str())
            .unwrap_or_else(|| panic!("no address for {name}: {value}"));
        Ipv6Addr::from_str(address).unwrap_or_else(|e| panic!("{address}: {e}"))
    }

    /// The home agent's binding of `name`, if any (`addrd bindings`).
    pub fn binding_of(&self, name: &str) -> Option<serde_json::Value> {
        let all = self.addrd_json(&["bindings", "--json"]);
        all.as_array()?.iter().find(|b| b["name"] == name).cloned()
    }

    /// addrd's log (every run) and slapd's tail, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.starts {
            let path = self.dir.path(&format!("addrd-{n}.log"));
            let text = fs::read_to_string(&path).unwrap_or_default();
            s.push_str(&format!("--- addrd run {n} ---\n{}\n", tail(&text, 6000)));
        }
        if let Some(slapd) = &self.slapd {
            s.push_str(&format!("--- slapd ---\n{}\n", slapd.log_tail()));
        }
        s
    }
}

/// The last `max` bytes of `text` (on a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A node running `tunneld` (server or mobile client) in TUN mode.
#[derive(Debug)]
pub struct Node {
    /// The daemon (None while stopped).
    pub daemon: Option<Process>,
    /// Its namespace.
    pub ns: Netns,
    /// Key, lease, netmap, config, control socket, logs.
    pub dir: Dir,
    name: String,
    bins: Binaries,
    starts: u32,
}

impl Node {
    fn new(name: &str, ns: Netns, bins: &Binaries) -> Node {
        let dir = Dir::new();
        let key = ok(
            run_in(&ns, &bins.tunneld, &["genkey"], b""),
            "tunneld genkey",
        );
        dir.write("tunneld.key", key.as_bytes(), 0o600);
        let public = ok(
            run_in(&ns, &bins.tunneld, &["pubkey"], key.as_bytes()),
            "tunneld pubkey",
        );
        dir.write("tunneld.pub", public.as_bytes(), 0o644);
        Node {
            daemon: None,
            ns,
            dir,
            name: name.to_owned(),
            bins: bins.clone(),
            starts: 0,
        }
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.dir.path("tunneld.toml")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path("tunneld.sock")
    }

    /// `tunneld run`, waiting until its data plane runs.
    pub fn start(&mut self) {
        self.starts += 1;
        let mut command = self.ns.command(&self.bins.tunneld);
        command
            .arg("run")
            .arg("--config")
            .arg(self.config())
            .arg("--socket")
            .arg(self.socket());
        let log = self.dir.path(&format!("tunneld-{}.log", self.starts));
        let mut process = Process::start(&format!("{} tunneld", self.name), command, log);
        process.wait_for_log("data plane running");
        self.daemon = Some(process);
    }

    /// Stop the daemon with SIGTERM.
    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let status = daemon.stop(Signal::SIGTERM);
            assert!(
                status.success(),
                "{} after SIGTERM: {status}\n{}",
                self.name,
                daemon.log()
            );
        }
    }

    /// `tunneld login --user USER --password-stdin` inside the namespace.
    pub fn login(&self, user: &str, password: &str) -> Output {
        let config = self.config().to_string_lossy().into_owned();
        let socket = self.socket().to_string_lossy().into_owned();
        run_in(
            &self.ns,
            &self.bins.tunneld,
            &[
                "login",
                "--config",
                &config,
                "--user",
                user,
                "--password-stdin",
                "--timeout",
                "20",
                "--socket",
                &socket,
            ],
            format!("{password}\n").as_bytes(),
        )
    }

    /// `tunneld status --json`.
    pub fn status(&self) -> serde_json::Value {
        let socket = self.socket().to_string_lossy().into_owned();
        let out = ok(
            run_in(
                &self.ns,
                &self.bins.tunneld,
                &["status", "--json", "--socket", &socket],
                b"",
            ),
            "tunneld status",
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("tunneld status: {e}: {out}"))
    }

    /// The daemon's log (every run) and, while it runs, its status.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.starts {
            let text =
                fs::read_to_string(self.dir.path(&format!("tunneld-{n}.log"))).unwrap_or_default();
            s.push_str(&format!(
                "--- {} tunneld run {n} ---\n{}\n",
                self.name,
                tail(&text, 6000)
            ));
        }
        if self.daemon.is_some() {
            let socket = self.socket().to_string_lossy().into_owned();
            let out = run_in(
                &self.ns,
                &self.bins.tunneld,
                &["status", "--json", "--socket", &socket],
                b"",
            );
            s.push_str(&format!(
                "--- {} status ---\n{}\n",
                self.name,
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        s
    }
}

/// A carrier: a NAT router between its mobile clients and the internet.
#[derive(Debug)]
pub struct Carrier {
    /// Its namespace.
    pub ns: Netns,
    /// Its public address (the NAT's outside).
    pub public: String,
    /// The first two octets of its clients' private subnets (`10.0`,
    /// `100.64`): client I is on `PRIVATE.I.0/24`.
    private: &'static str,
    /// The device name clients see it by.
    client_dev: &'static str,
    attached: u32,
}

impl Carrier {
    fn start(tag: &str, which: char, inet: &Netns, octet: u8, private: &'static str) -> Carrier {
        let ns = Netns::new(&format!("{tag}-car{which}"));
        let public = format!("11.{octet}.0.2");
        link(
            inet,
            &format!("car{which}"),
            &format!("11.{octet}.0.1/24"),
            &ns,
            "wan",
            &format!("{public}/24"),
        );
        ns.ip(&["route", "add", "default", "via", &format!("11.{octet}.0.1")]);
        forward(&ns);
        let rules =
            "table ip nat {\n chain postrouting {\n  type nat hook postrouting priority 100;\n  \
                     oifname \"wan\" masquerade\n }\n}\n";
        let mut nft = ns
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("nft: {e} (install nftables)"));
        if let Some(mut stdin) = nft.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .unwrap_or_else(|e| panic!("nft stdin: {e}"));
        }
        let out = nft
            .wait_with_output()
            .unwrap_or_else(|e| panic!("nft: {e}"));
        assert!(out.status.success(), "nft in {}: {out:?}", ns.name());
        Carrier {
            ns,
            public,
            private,
            client_dev: if which == 'a' { "wlan-a" } else { "wlan-b" },
            attached: 0,
        }
    }

    /// Attach `client` to this carrier; returns the carrier's gateway
    /// address on the client's link.
    fn attach(&mut self, client: &Netns) -> String {
        self.attached += 1;
        let i = self.attached;
        let gateway = format!("{}.{i}.1", self.private);
        link(
            &self.ns,
            &format!("lan{i}"),
            &format!("{gateway}/24"),
            client,
            self.client_dev,
            &format!("{}.{i}.2/24", self.private),
        );
        gateway
    }
}

/// Which carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierId {
    /// Carrier A (10.0.0.0/16 inside, 11.2.0.2 outside).
    A,
    /// Carrier B (100.64.0.0/16 inside, 11.3.0.2 outside).
    B,
}

/// A mobile terminal: a namespace attached to both carriers, a tunneld
/// client, its default route through one carrier at a time.
#[derive(Debug)]
pub struct Mobile {
    /// The tunneld client node.
    pub node: Node,
    gateways: [String; 2],
    /// The carrier its default route goes through.
    pub carrier: CarrierId,
}

impl Mobile {
    /// Send everything through `carrier` from now on, and take the
    /// other carrier's link down (out of its coverage).
    pub fn roam_to(&mut self, carrier: CarrierId) {
        let (gateway, dev, other) = match carrier {
            CarrierId::A => (&self.gateways[0], "wlan-a", "wlan-b"),
            CarrierId::B => (&self.gateways[1], "wlan-b", "wlan-a"),
        };
        self.node.ns.ip(&["link", "set", dev, "up"]);
        self.node
            .ns
            .ip(&["route", "replace", "default", "via", gateway, "dev", dev]);
        self.node.ns.ip(&["link", "set", other, "down"]);
        self.carrier = carrier;
    }
}

/// What a [`World`] has besides the fixed parts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Put an impairing relay on the internet router and make clients
    /// reach the application server through it.
    pub relay: Option<Impairment>,
    /// Serve the applications through wap-adapter's HTTP front (port 80)
    /// and WAP front (WSP on UDP 9200, WSP over WTP on 9201), all on the
    /// applications' addresses, the test backend behind them on the
    /// server's loopback, instead of the test backend directly.
    pub wap_adapter: bool,
}

/// The whole topology. Field order is drop order: the daemons' guards
/// (inside the nodes) go before the namespaces that hold them, the relay
/// and backend threads before their namespaces.
#[derive(Debug)]
pub struct World {
    /// wap-adapter, with [`Options::wap_adapter`].
    pub wap_adapter: Option<Process>,
    /// Mobile terminals, in creation order.
    pub mobiles: Vec<Mobile>,
    /// The HTTP backend on the application's address.
    pub backend: Option<HttpBackend>,
    /// The application server's tunneld.
    pub app: Node,
    /// The home site.
    pub home: Home,
    /// The relay, if asked for.
    pub relay: Option<Relay>,
    /// Carrier A and carrier B.
    pub carriers: [Carrier; 2],
    /// The internet router.
    pub inet: Netns,
    /// The binaries.
    pub bins: Binaries,
    /// The application's permanent address (`wiki`).
    pub wiki: Ipv6Addr,
    /// A second application's address (`grades`).
    pub grades: Ipv6Addr,
    /// addrd's overlay address.
    pub addrd_overlay: Ipv6Addr,
    /// The authority's public key (base64).
    pub authority: String,
    /// addrd's login-channel public key (base64).
    pub addrd_public: String,
    tag: String,
}

impl World {
    /// Build and start everything but the mobiles.
    pub fn start(tag: &str, bins: &Binaries, options: Options) -> World {
        let inet = Netns::new(&format!("{tag}-inet"));
        forward(&inet);
        let carriers = [
            Carrier::start(tag, 'a', &inet, 2, "10.0"),
            Carrier::start(tag, 'b', &inet, 3, "100.64"),
        ];
        let relay_dest = SocketAddr::from((ipv4(APP_V4), PORT));
        let relay = options.relay.map(|impairment| {
            inet.ip(&["addr", "add", &format!("{RELAY_V4}/32"), "dev", "lo"]);
            let listen = SocketAddr::from((ipv4(RELAY_V4), PORT));
            Relay::start(&inet, listen, relay_dest, impairment)
                .unwrap_or_else(|e| panic!("relay: {e}"))
        });

        let home = Home::start(tag, &inet, bins);
        let status = home.addrd_json(&["status"]);
        let overlay = status["overlay_address"]
            .as_str()
            .and_then(|a| Ipv6Addr::from_str(a).ok())
            .unwrap_or_else(|| panic!("addrd overlay address: {status}"));
        let authority = ok(home.addrd_cmd(&["authority-key"]), "addrd authority-key")
            .trim()
            .to_owned();
        let addrd_key =
            fs::read(home.dir.path("addrd.key")).unwrap_or_else(|e| panic!("addrd.key: {e}"));
        let addrd_public = ok(
            run_in(&home.ns, &bins.tunneld, &["pubkey"], &addrd_key),
            "tunneld pubkey",
        )
        .trim()
        .to_owned();

        // The application server: app1 of the example organisation.
        let app_ns = Netns::new(&format!("{tag}-app"));
        link(
            &inet,
            "app",
            "11.22.33.1/24",
            &app_ns,
            "wan",
            &format!("{APP_V4}/24"),
        );
        app_ns.ip(&["route", "add", "default", "via", "11.22.33.1"]);
        let mut app = Node::new("app1", app_ns, bins);
        let lease = app.dir.path("tunneld.lease").to_string_lossy().into_owned();
        let public = app.dir.path("tunneld.pub").to_string_lossy().into_owned();
        ok(
            home.addrd_cmd(&[
                "issue-lease",
                "app1",
                "--kind",
                "system",
                "--public-key-file",
                &public,
                "--out",
                &lease,
            ]),
            "addrd issue-lease app1",
        );
        let wiki = home.address_of("wiki");
        let grades = home.address_of("grades");
        // The tunnel lets staff reach the wiki (others get ICMPv6
        // "administratively prohibited") and anyone with a lease reach
        // grades (the application decides).
        let config = format!(
            "role = \"server\"\nlisten = \"{APP_V4}:{PORT}\"\nmode = \"tun\"\n\
             private-key-file = \"tunneld.key\"\nlease-file = \"tunneld.lease\"\n\
             authority-key = \"{authority}\"\n\n\
             [[applications]]\nname = \"wiki\"\naddress = \"{wiki}\"\n\
             allowed-groups = [\"staff\"]\n\n\
             [[applications]]\nname = \"grades\"\naddress = \"{grades}\"\n"
        );
        app.dir.write("tunneld.toml", config.as_bytes(), 0o644);
        app.start();
        let (backend, wap_adapter) = if options.wap_adapter {
            let backend = HttpBackend::start(&app.ns, SocketAddr::from(([127, 0, 0, 1], 8080)));
            (backend, Some(start_wap_adapter(&app, bins, wiki, grades)))
        } else {
            let address = SocketAddr::V6(SocketAddrV6::new(wiki, HTTP_PORT, 0, 0));
            (HttpBackend::start(&app.ns, address), None)
        };
        World {
            wap_adapter,
            grades,
            mobiles: Vec::new(),
            backend: Some(backend),
            app,
            home,
            relay,
            carriers,
            inet,
            bins: bins.clone(),
            wiki,
            addrd_overlay: overlay,
            authority,
            addrd_public,
            tag: tag.to_owned(),
        }
    }

    /// A new mobile terminal (new namespace, new key) on both carriers,
    /// routed through `carrier`, its tunneld configured but not started
    /// nor logged in. Returns its index in [`World::mobiles`].
    pub fn add_mobile(&mut self, carrier: CarrierId) -> usize {
        let index = self.mobiles.len();
        let ns = Netns::new(&format!("{}-m{index}", self.tag));
        let gateways = [self.carriers[0].attach(&ns), self.carriers[1].attach(&ns)];
        let node = Node::new(&format!("mobile{index}"), ns, &self.bins);
        let peers = match &self.relay {
            Some(relay) => {
                let lease = fs::read(self.app.dir.path("tunneld.lease"))
                    .unwrap_or_else(|e| panic!("app1's lease: {e}"));
                node.dir.write("app1.lease", &lease, 0o644);
                format!(
                    "\n[[peers]]\nlease-file = \"app1.lease\"\nendpoint = \"{}\"\n",
                    relay.listen()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "role = \"client\"\nlisten = \"0.0.0.0:{PORT}\"\nmode = \"tun\"\n\
             private-key-file = \"tunneld.key\"\nlease-file = \"tunneld.lease\"\n\
             authority-key = \"{}\"\n\n\
             [addrd]\nendpoint = \"{HOME_V4}:{PORT}\"\npublic-key = \"{}\"\n{peers}",
            self.authority, self.addrd_public
        );
        node.dir.write("tunneld.toml", config.as_bytes(), 0o644);
        let mut mobile = Mobile {
            node,
            gateways,
            carrier,
        };
        mobile.roam_to(carrier);
        self.mobiles.push(mobile);
        index
    }

    /// Every daemon's log and status, the relay's counters: the context
    /// of a failed assertion.
    pub fn logs(&self) -> String {
        let mut s = self.home.logs();
        s.push_str(&self.app.logs());
        if let Some(wap) = &self.wap_adapter {
            s.push_str(&wap.log());
        }
        for m in &self.mobiles {
            s.push_str(&m.node.logs());
        }
        if let Some(relay) = &self.relay {
            s.push_str(&format!(
                "--- relay ---\n{:?}\n",
                relay.counters().snapshot()
            ));
        }
        s
    }

    /// Wait until `what` holds, with [`DEADLINE`], the world's logs as
    /// context.
    pub fn wait(&self, what: &str, condition: impl FnMut() -> bool) {
        wait_until(what, DEADLINE, condition, || self.logs());
    }

    /// Wait for a transfer thread; the world's logs on a panic.
    pub fn join<T>(&self, handle: JoinHandle<T>, what: &str) -> T {
        let end = Instant::now() + Duration::from_secs(120);
        while !handle.is_finished() {
            assert!(
                Instant::now() < end,
                "{what} did not finish in time\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        handle
            .join()
            .unwrap_or_else(|_| panic!("{what} panicked\n{}", self.logs()))
    }
}

/// wap-adapter in the server's namespace: the HTTP and WAP fronts (the
/// default `http-listen`, `wsp-listen` and `wtp-listen`) of the wiki
/// (staff, as in the directory) and of grades (staff here: stricter than
/// the tunnel, so the adapter's own check is what refuses students), both
/// proxied to the test backend on the server's loopback, identities from
/// the server's tunneld.
fn start_wap_adapter(app: &Node, bins: &Binaries, wiki: Ipv6Addr, grades: Ipv6Addr) -> Process {
    let binary = bins
        .wap_adapter
        .as_ref()
        .unwrap_or_else(|| panic!("wap-adapter is not built (cargo build -p wap-adapter)"));
    let config = format!(
        "log-level = \"info\"\n\n[identity]\ntunneld-socket = \"{}\"\n\n\
         [[applications]]\nname = \"wiki\"\naddress = \"{wiki}\"\n\
         backend.url = \"http://127.0.0.1:8080\"\nallowed-groups = [\"staff\"]\n\n\
         [[applications]]\nname = \"grades\"\naddress = \"{grades}\"\n\
         backend.url = \"http://127.0.0.1:8080\"\nallowed-groups = [\"staff\"]\n",
        app.socket().display()
    );
    let path = app.dir.write("wap-adapter.toml", config.as_bytes(), 0o644);
    let mut command = app.ns.command(binary);
    command.arg("run").arg("--config").arg(path);
    let mut process = Process::start("wap-adapter", command, app.dir.path("wap-adapter.log"));
    process.wait_for_log("wap-adapter running");
    process
}

/// One of this module's IPv4 constants, parsed.
fn ipv4(text: &str) -> std::net::Ipv4Addr {
    text.parse()
        .unwrap_or_else(|e| panic!("IPv4 address {text}: {e}"))
}
