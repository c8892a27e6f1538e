//! Writes the files two TUN-mode tunnelds need for `bench/tunnel-throughput.sh`:
//! a fresh lease authority, a server and a client, each with its private
//! key (mode 0600, created that way), its signed lease and its config.
//!
//! ```text
//! bench_identities DIR SERVER_IPV4 CLIENT_IPV4 MTU
//! ```
//!
//! `DIR/server/` gets `tunneld.key`, `tunneld.lease` and `tunneld.toml`
//! (role server, listening on `SERVER_IPV4:4500`, system network
//! `2002:WWXX:YYZZ:2::/64` in the 6to4 prefix of `SERVER_IPV4`);
//! `DIR/client/` the same plus `server.lease` (role client, a user address
//! `…:1::1234/128` of the same /48, the server as its peer). It prints the
//! two overlay addresses, server first. The authority's private key only
//! ever lives in this process; the leases are valid for a day.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark helper

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{EntityKind, Lease, LeaseAuthority};
use overlay_proto::time::UnixTime;
use tunneld::keys;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, server_v4, client_v4, mtu] = args.as_slice() else {
        eprintln!("usage: bench_identities DIR SERVER_IPV4 CLIENT_IPV4 MTU");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let server_v4: Ipv4Addr = server_v4.parse().expect("SERVER_IPV4");
    let client_v4: Ipv4Addr = client_v4.parse().expect("CLIENT_IPV4");
    let mtu: u16 = mtu.parse().expect("MTU");

    let [a, b, c, d] = server_v4.octets();
    let site = [
        0x2002,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    ];
    let address =
        |subnet: u16, host: u16| Ipv6Addr::new(site[0], site[1], site[2], subnet, 0, 0, 0, host);
    let system = address(2, 1);
    let user = address(1, 0x1234);
    let svn = format!("{}/64", address(2, 0));

    let authority = LeaseAuthority::from_seed(rand::random());
    let authority_key = PublicKey(authority.public_key().to_bytes());
    let server_key = StaticKeypair::from_private(rand::random());
    let client_key = StaticKeypair::from_private(rand::random());
    let server_lease = lease(&authority, EntityKind::System, &svn, &server_key, "server");
    let client_lease = lease(
        &authority,
        EntityKind::User,
        &format!("{user}/128"),
        &client_key,
        "bench",
    );

    let common = |role: &str, listen: Ipv4Addr| {
        format!(
            "role = \"{role}\"\nlisten = \"{listen}:4500\"\nmode = \"tun\"\nmtu = {mtu}\n\
             private-key-file = \"tunneld.key\"\nlease-file = \"tunneld.lease\"\n\
             authority-key = \"{authority_key}\"\nlog-level = \"info\"\n\
             dangerous-allow-private-ipv4 = true\n"
        )
    };
    let server_dir = dir.join("server");
    write_node(
        &server_dir,
        &server_key,
        &server_lease,
        &common("server", server_v4),
    );
    let client_dir = dir.join("client");
    let client_config = format!(
        "{}\n[[peers]]\nlease-file = \"server.lease\"\nendpoint = \"{server_v4}:4500\"\n",
        common("client", client_v4)
    );
    write_node(&client_dir, &client_key, &client_lease, &client_config);
    write(&client_dir.join("server.lease"), &server_lease, 0o644);
    println!("{system} {user}");
}

/// A lease for `key`, signed by `authority`, valid from a minute ago for a
/// day.
fn lease(
    authority: &LeaseAuthority,
    kind: EntityKind,
    prefix: &str,
    key: &StaticKeypair,
    name: &str,
) -> Vec<u8> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let lease = Lease {
        kind,
        serial: 1,
        not_before: UnixTime::from_secs(now.as_secs() - 60),
        not_after: UnixTime::from_secs((now + Duration::from_secs(24 * 3600)).as_secs()),
        public_key: key.public().0,
        prefix: prefix.parse().unwrap(),
        name: name.to_owned(),
        dn: format!("cn={name},dc=bench,dc=invalid"),
        groups: Vec::new(),
    };
    authority.sign(&lease).unwrap().into_bytes()
}

/// A node's directory (0700), private key (0600), lease and config.
fn write_node(dir: &Path, key: &StaticKeypair, lease: &[u8], config: &str) {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .unwrap();
    let private = keys::encode_private_key(key);
    write(&dir.join("tunneld.key"), private.as_bytes(), 0o600);
    write(&dir.join("tunneld.lease"), lease, 0o644);
    write(&dir.join("tunneld.toml"), config.as_bytes(), 0o644);
}

/// Create `path` with permission bits `mode` (never wider first) and write
/// `bytes`.
fn write(path: &Path, bytes: &[u8], mode: u32) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    file.write_all(bytes).unwrap();
}
