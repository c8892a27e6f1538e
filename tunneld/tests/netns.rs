//! TUN mode end to end: two real `tunneld run` processes, a server and a
//! client, each in its own network namespace, joined by a veth pair.
//!
//! ```text
//!   netns pn<pid>-<tag>-c                       netns pn<pid>-<tag>-s
//!  ┌──────────────────────────┐                ┌──────────────────────────────┐
//!  │ permanet0                │                │ pn-server (tun-name)         │
//!  │  2002:a00:1:1::1234/128  │                │  2002:a00:1:2::1/128  system │
//!  │  2002::/16 → permanet0   │                │  2002:a00:1:2::80/128 app    │
//!  │ tunneld (client, alice)  │                │  2002::/16 → permanet0       │
//!  │ veth0 10.0.0.2/24 ───────┼── UDP 4500 ────┼─ veth0 10.0.0.1/24           │
//!  └──────────────────────────┘                │ tunneld (server)             │
//!                                              └──────────────────────────────┘
//! ```
//!
//! The server's system virtual network sits in the 6to4 prefix of its own
//! (lab-private, hence `dangerous-allow-private-ipv4`) IPv4 address; the
//! client's user address is in the same 6to4 /48. Needs root; each test
//! reports itself skipped (netns_tests::skip) and passes otherwise.
//! Every namespace, process and file is removed by a guard, also when a
//! test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::io::{Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

use netns_tests::{
    lease, skip_unless_root, veth, wait_until, Netns, NodeFiles, Process, Signal, DEADLINE,
};
use overlay_proto::lease::EntityKind;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_tunneld");

const SERVER_V4: &str = "10.0.0.1";
const CLIENT_V4: &str = "10.0.0.2";
/// The server's system virtual network: svn 2 in the 6to4 prefix of
/// 10.0.0.1.
const SVN: &str = "2002:a00:1:2::/64";
const SYSTEM: &str = "2002:a00:1:2::1";
const APP: &str = "2002:a00:1:2::80";
const APP_PORT: u16 = 7000;
/// The client's permanent address (user subnet 1 of the same /48).
const USER: &str = "2002:a00:1:1::1234";
/// The client's device: the default name (its config has no `tun-name`).
const CLIENT_DEVICE: &str = "permanet0";
/// The server's device, named by `tun-name`.
const SERVER_DEVICE: &str = "pn-server";
const MTU: u16 = 1380;

/// One server and one client daemon, running. Field order is drop order:
/// the daemons die before their namespaces are deleted, and the files go
/// last.
struct Lab {
    server: Process,
    client: Process,
    server_ns: Netns,
    client_ns: Netns,
    server_files: NodeFiles,
    client_files: NodeFiles,
}

impl Lab {
    /// Start both daemons; the client's lease has `client_groups`, the
    /// application admits `staff` only.
    fn start(tag: &str, client_groups: &[&str]) -> Lab {
        let server_ns = Netns::new(&format!("{tag}-s"));
        let client_ns = Netns::new(&format!("{tag}-c"));
        veth(
            &server_ns,
            &format!("{SERVER_V4}/24"),
            &client_ns,
            &format!("{CLIENT_V4}/24"),
        );

        let server_files = NodeFiles::new([0x61; 32], EntityKind::System, SVN, "server", &[]);
        let server_config = server_files.config(&format!(
            "role = \"server\"\nlisten = \"{SERVER_V4}:4500\"\nmode = \"tun\"\nmtu = {MTU}\n\
             tun-name = \"{SERVER_DEVICE}\"\n\
             dangerous-allow-private-ipv4 = true\n\n\
             [[applications]]\nname = \"echo\"\naddress = \"{APP}\"\n\
             allowed-groups = [\"staff\"]\n"
        ));
        let client_files = NodeFiles::new(
            [0x62; 32],
            EntityKind::User,
            &format!("{USER}/128"),
            "alice",
            client_groups,
        );
        let server_lease = lease(
            EntityKind::System,
            SVN,
            server_files.public_key(),
            "server",
            &[],
        );
        client_files.write("server.lease", &server_lease, 0o644);
        let client_config = client_files.config(&format!(
            "role = \"client\"\nlisten = \"{CLIENT_V4}:4500\"\nmode = \"tun\"\nmtu = {MTU}\n\
             dangerous-allow-private-ipv4 = true\n\n\
             [[peers]]\nlease-file = \"server.lease\"\nendpoint = \"{SERVER_V4}:4500\"\n"
        ));

        let mut server = daemon("server tunneld", &server_ns, &server_files, server_config);
        server.wait_for_log("data plane running");
        let mut client = daemon("client tunneld", &client_ns, &client_files, client_config);
        client.wait_for_log("data plane running");
        Lab {
            server,
            client,
            server_ns,
            client_ns,
            server_files,
            client_files,
        }
    }

    /// `tunneld status --json` of the server.
    fn server_status(&self) -> serde_json::Value {
        status(&self.server_files)
    }

    /// `tunneld status --json` of the client.
    fn client_status(&self) -> serde_json::Value {
        status(&self.client_files)
    }

    /// Both daemons' logs and, while they run, their status (counters,
    /// peers, SAs): the context of a failed assertion.
    fn logs(&self) -> String {
        let status = |files: &NodeFiles| {
            let socket = files.path("tunneld.sock");
            let out = netns_tests::run(
                BIN,
                &[
                    "status",
                    "--json",
                    "--socket",
                    socket.to_str().unwrap_or(""),
                ],
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let snmp = |ns: &Netns| {
            let out = ns.command("cat").arg("/proc/net/snmp6").output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            let text = text.unwrap_or_default();
            text.lines()
                .filter(|l| !l.trim_end().ends_with(" 0") && !l.trim_end().ends_with("\t0"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{}\n{}\n--- server status ---\n{}\n--- client status ---\n{}\n--- server snmp6: {}\n--- client snmp6: {}",
            self.server.log(),
            self.client.log(),
            status(&self.server_files),
            status(&self.client_files),
            snmp(&self.server_ns),
            snmp(&self.client_ns),
        )
    }
}

/// `tunneld status --json` of the daemon whose files are `files`.
fn status(files: &NodeFiles) -> serde_json::Value {
    let socket = files.path("tunneld.sock");
    let out = netns_tests::run_ok(
        BIN,
        &["status", "--json", "--socket", socket.to_str().unwrap()],
    );
    serde_json::from_str(&out).unwrap()
}

/// `tunneld run` inside `ns`, its control socket and log in the node's
/// directory.
fn daemon(name: &str, ns: &Netns, files: &NodeFiles, config: PathBuf) -> Process {
    let mut command = ns.command(BIN);
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(files.path("tunneld.sock"));
    Process::start(name, command, files.path("stderr.log"))
}

/// `ping -6` from inside `ns`: its output (stdout and stderr) and whether
/// every echo was answered.
fn ping(ns: &Netns, destination: &str, count: u32) -> (bool, String) {
    let out = ns
        .command("ping")
        .args([
            "-6",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "10",
        ])
        .arg(destination)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let all = text.contains(&format!("{count} packets transmitted, {count} received"));
    (out.status.success() && all, text)
}

/// What the device in `ns` carries: (link, addresses, routes), as `ip`
/// prints them; `None` once the device is gone.
fn device_state(ns: &Netns, device: &str) -> Option<(String, String, String)> {
    let link = ns.try_ip(&["link", "show", "dev", device]);
    if !link.status.success() {
        return None;
    }
    let addresses = ns.ip(&["-6", "addr", "show", "dev", device]);
    let routes = ns.ip(&["-6", "route", "show", "dev", device]);
    Some((
        String::from_utf8_lossy(&link.stdout).into_owned(),
        addresses,
        routes,
    ))
}

/// `device` in `ns` is up with `addresses` (each /128), MTU [`MTU`] and
/// the route of `2002::/16`.
fn assert_device(ns: &Netns, device: &str, addresses: &[&str]) {
    let (link, addrs, routes) =
        device_state(ns, device).unwrap_or_else(|| panic!("no {device} in {}", ns.name()));
    assert!(link.contains(&format!("mtu {MTU}")), "{link}");
    assert!(link.contains(",UP"), "{link}");
    for address in addresses {
        assert!(
            addrs.contains(&format!("inet6 {address}/128")),
            "{address} not in\n{addrs}"
        );
    }
    // Usable at once: a tentative address is no source, and without its
    // local route packets to it are refused as not ours.
    assert!(!addrs.contains("tentative"), "{addrs}");
    let local = ns.ip(&["-6", "route", "show", "table", "local", "dev", device]);
    for address in addresses {
        assert!(
            local.contains(&format!("local {address} ")),
            "{address} not in\n{local}"
        );
    }
    assert!(routes.contains("2002::/16"), "{routes}");
}

/// Nothing of `device` is left in `ns`: no link, no overlay address, no
/// route through it.
fn assert_device_gone(ns: &Netns, device: &str, context: impl Fn() -> String) {
    wait_until(
        &format!("{device} to disappear from {}", ns.name()),
        DEADLINE,
        || device_state(ns, device).is_none(),
        &context,
    );
    let addrs = ns.ip(&["-6", "addr", "show"]);
    assert!(!addrs.contains("2002:"), "{addrs}");
    let routes = ns.ip(&["-6", "route", "show", "table", "all"]);
    assert!(!routes.contains(device), "{routes}");
    assert!(!routes.contains("2002:"), "{routes}");
}

#[test]
fn tun_ping_reaches_the_application_and_back() {
    if skip_unless_root("tun_ping_reaches_the_application_and_back") {
        return;
    }
    let lab = Lab::start("ping", &["staff"]);
    assert_device(&lab.client_ns, CLIENT_DEVICE, &[USER]);
    assert_device(&lab.server_ns, SERVER_DEVICE, &[SYSTEM, APP]);
    for destination in [APP, SYSTEM] {
        let (ok, out) = ping(&lab.client_ns, destination, 3);
        assert!(ok, "ping {destination}:\n{out}\n{}", lab.logs());
    }
    // And the other way: the server reaches the client's permanent address.
    let (ok, out) = ping(&lab.server_ns, USER, 3);
    assert!(ok, "ping {USER}:\n{out}\n{}", lab.logs());

    let status = lab.server_status();
    assert_eq!(status["interface"]["mode"], "tun", "{status}");
    assert_eq!(status["interface"]["tun_device"], SERVER_DEVICE, "{status}");
    assert_eq!(
        lab.client_status()["interface"]["tun_device"],
        CLIENT_DEVICE
    );
    let socket = lab.server_files.path("tunneld.sock");
    let human = netns_tests::run_ok(BIN, &["status", "--socket", socket.to_str().unwrap()]);
    assert!(
        human.contains(&format!(
            "  role: server, mode: tun\n  device: {SERVER_DEVICE}\n"
        )),
        "{human}"
    );
    let peers = status["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{status}");
    assert_eq!(peers[0]["lease_prefix"], format!("{USER}/128").as_str());
    assert!(peers[0]["rx_bytes"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["dataplane"]["prohibited"], 0, "{status}");
    // Only overlay traffic entered the tunnels: no link-local chatter from
    // the kernel (router solicitations, MLD reports) counted as unroutable.
    for status in [status, lab.client_status()] {
        for counter in [
            "no_route",
            "malformed_inner",
            "deliver_errors",
            "send_errors",
        ] {
            assert_eq!(status["dataplane"][counter], 0, "{counter}: {status}");
        }
    }
    for (ns, device) in [
        (&lab.client_ns, CLIENT_DEVICE),
        (&lab.server_ns, SERVER_DEVICE),
    ] {
        let addrs = ns.ip(&["-6", "addr", "show", "dev", device]);
        assert!(!addrs.contains("fe80:"), "{addrs}");
    }
}

/// A deterministic byte stream (xorshift64*).
fn pattern(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn tun_tcp_transfer_is_intact_both_ways() {
    const LEN: usize = 16 * 1024 * 1024;
    if skip_unless_root("tun_tcp_transfer_is_intact_both_ways") {
        return;
    }
    let lab = Lab::start("tcp", &["staff"]);
    let app: SocketAddr = (APP.parse::<Ipv6Addr>().unwrap(), APP_PORT).into();

    // The application on the server: an ordinary socket on its permanent
    // address, echoing everything.
    let listener = lab.server_ns.run(move || TcpListener::bind(app).unwrap());
    let echo = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        conn.set_write_timeout(Some(DEADLINE)).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n]).unwrap();
            total += n;
        }
        conn.shutdown(Shutdown::Write).unwrap();
        (peer, total)
    });

    let data = pattern(LEN, 0x9e37_79b9_7f4a_7c15);
    let sent_digest = Sha256::digest(&data);
    let started = Instant::now();
    let (received, received_digest) = lab.client_ns.run(move || {
        let conn = TcpStream::connect(app).unwrap();
        conn.set_read_timeout(Some(DEADLINE)).unwrap();
        conn.set_write_timeout(Some(DEADLINE)).unwrap();
        let mut writer = conn.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            writer.write_all(&data).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut reader = conn;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0usize;
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            received += n;
        }
        sender.join().unwrap();
        (received, hasher.finalize())
    });
    let elapsed = started.elapsed();
    let (peer, echoed) = echo.join().unwrap();
    assert_eq!(peer.ip(), USER.parse::<Ipv6Addr>().unwrap());
    assert_eq!(echoed, LEN);
    assert_eq!(received, LEN, "{}", lab.logs());
    assert_eq!(received_digest, sent_digest);
    eprintln!(
        "{LEN} bytes each way through two TUN-mode tunnelds in {elapsed:?} ({:.1} Mbit/s each way)",
        LEN as f64 * 8.0 / elapsed.as_secs_f64() / 1e6
    );
}

#[test]
fn tun_device_addresses_and_routes_go_away_on_sigterm_and_sigint() {
    if skip_unless_root("tun_device_addresses_and_routes_go_away_on_sigterm_and_sigint") {
        return;
    }
    let mut lab = Lab::start("stop", &["staff"]);
    assert_device(&lab.server_ns, SERVER_DEVICE, &[SYSTEM, APP]);
    assert_device(&lab.client_ns, CLIENT_DEVICE, &[USER]);

    stop_cleanly(
        &mut lab.server,
        Signal::SIGTERM,
        &lab.server_ns,
        SERVER_DEVICE,
    );
    // The client's device is untouched by the server's exit.
    assert_device(&lab.client_ns, CLIENT_DEVICE, &[USER]);
    stop_cleanly(
        &mut lab.client,
        Signal::SIGINT,
        &lab.client_ns,
        CLIENT_DEVICE,
    );
}

/// Stops `daemon` with `signal`: it exits 0, saying it shuts down on that
/// signal, and its `device` in `ns` is gone.
fn stop_cleanly(daemon: &mut Process, signal: Signal, ns: &Netns, device: &str) {
    let status = daemon.stop(signal);
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    let said = format!("{signal}: shutting down");
    assert!(daemon.log().contains(&said), "{}", daemon.log());
    assert_device_gone(ns, device, || daemon.log());
}

#[test]
fn tun_device_goes_away_when_the_daemon_is_killed() {
    use std::os::unix::process::ExitStatusExt as _;
    if skip_unless_root("tun_device_goes_away_when_the_daemon_is_killed") {
        return;
    }
    let mut lab = Lab::start("kill", &["staff"]);
    assert_device(&lab.client_ns, CLIENT_DEVICE, &[USER]);
    let status = lab.client.stop(Signal::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    // The kernel closed the device's file descriptor: no cleanup code ran,
    // and still nothing is left.
    assert_device_gone(&lab.client_ns, CLIENT_DEVICE, || lab.client.log());

    // The guards leave nothing behind either: namespaces, files.
    let namespaces =
        [lab.client_ns.name(), lab.server_ns.name()].map(|n| Path::new("/run/netns").join(n));
    let dir = lab.server_files.path("");
    drop(lab);
    for path in namespaces.iter().chain([&dir]) {
        assert!(!path.exists(), "{} left behind", path.display());
    }
}

#[test]
fn tun_daemon_exits_with_an_error_when_its_device_is_deleted() {
    if skip_unless_root("tun_daemon_exits_with_an_error_when_its_device_is_deleted") {
        return;
    }
    let mut lab = Lab::start("del", &["staff"]);
    lab.client_ns.ip(&["link", "delete", "dev", CLIENT_DEVICE]);
    let status = lab.client.wait_exit("after its device was deleted");
    let log = lab.client.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("tunneld: the data plane stopped: its tun side closed"),
        "{log}"
    );
    assert_device_gone(&lab.client_ns, CLIENT_DEVICE, || lab.client.log());
}

#[test]
fn tun_client_outside_the_allowed_groups_is_prohibited() {
    if skip_unless_root("tun_client_outside_the_allowed_groups_is_prohibited") {
        return;
    }
    let lab = Lab::start("acl", &["guests"]);
    // The tunnel works for this client: the system address is no
    // application, so no group is needed.
    let (ok, out) = ping(&lab.client_ns, SYSTEM, 1);
    assert!(ok, "ping {SYSTEM}:\n{out}\n{}", lab.logs());
    // The application admits staff only.
    let (ok, out) = ping(&lab.client_ns, APP, 2);
    assert!(!ok, "{out}");
    assert!(
        out.contains("Administratively prohibited"),
        "{out}\n{}",
        lab.logs()
    );
    assert!(out.contains(&format!("From {APP}")), "{out}");
    let status = lab.server_status();
    let dataplane = &status["dataplane"];
    assert!(dataplane["prohibited"].as_u64().unwrap() >= 2, "{status}");
    assert!(dataplane["icmp_sent"].as_u64().unwrap() >= 1, "{status}");
}

#[test]
fn tun_mode_without_cap_net_admin_fails_clearly() {
    if skip_unless_root("tun_mode_without_cap_net_admin_fails_clearly") {
        return;
    }
    let ns = Netns::new("nocap");
    let files = NodeFiles::new(
        [0x63; 32],
        EntityKind::User,
        &format!("{USER}/128"),
        "bob",
        &[],
    );
    let config = files.config("role = \"client\"\nlisten = \"127.0.0.1:0\"\nmode = \"tun\"\n");
    // Root without CAP_NET_ADMIN: dropped from the bounding set, so the
    // exec'd tunneld does not get it.
    let out = ns
        .command("setpriv")
        .args(["--bounding-set=-net_admin", "--"])
        .arg(BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(files.path("tunneld.sock"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "tunneld: TUN mode needs root or CAP_NET_ADMIN (creating TUN device permanet0: "
        ),
        "{err}"
    );
    assert!(device_state(&ns, CLIENT_DEVICE).is_none());
    assert!(!files.path("tunneld.sock").exists(), "{err}");
}
