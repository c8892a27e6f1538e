//! Shared by the tests that run a front in a thread-based world: a fake
//! tunneld control socket that answers `peer <address>` from a table.
#![allow(dead_code)]

use std::io::{BufRead, Write};
use std::net::Ipv6Addr;
use std::path::Path;

/// A fake tunneld control socket at `socket` (a thread): an address
/// `lease_of` knows gets a lease as that (user name, group), any other
/// address (or none) is unknown.
pub fn fake_tunneld(socket: &Path, lease_of: fn(Ipv6Addr) -> Option<(&'static str, &'static str)>) {
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut line = String::new();
            let _ = std::io::BufReader::new(&stream).read_line(&mut line);
            let address = line.trim_end().trim_start_matches("peer ");
            let answer = match address.parse().ok().and_then(lease_of) {
                Some((name, group)) => format!(
                    "{{\"lease\":{{\"name\":\"{name}\",\"dn\":\"uid={name}\",\"kind\":\"user\",\
                     \"address\":\"{address}/128\",\"groups\":[\"{group}\"],\"serial\":1,\
                     \"not_before\":0,\"not_after\":4000000000}}}}\n"
                ),
                None => format!("{{\"unknown\":\"{address}\"}}\n"),
            };
            let _ = (&stream).write_all(answer.as_bytes());
        }
    });
}
