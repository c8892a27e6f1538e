//! Data-plane throughput of two tunnels over UDP on 127.0.0.1, in one
//! process: how many inner packets per second the client's [`Tunnel`]
//! seals and sends and the server's receives, opens and delivers.
//!
//! ```text
//! cargo run --release -p tunneld --example loopback_throughput -- [SECONDS] [PACKET_LEN]
//! ```
//!
//! Each tunnel runs on its own thread with a current-thread tokio runtime,
//! as the daemon does. A producer on the client's thread pushes inner IPv6
//! packets of `PACKET_LEN` bytes (default 1400) into the client's port as
//! fast as the port accepts them, for `SECONDS` (default 5); a consumer on
//! the server's thread counts what comes out of the server's port. The
//! figures are inner packets and inner bytes delivered, what was lost on
//! the way (UDP datagrams the kernel dropped, a full server port) and the
//! CPU time the whole process used per delivered packet, which says more
//! than the rate on a machine shared with other work. The
//! ports are [`ChannelPort`]s, so each packet also costs a `Vec` on each
//! side: the same for every version of the data plane this compares.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark program

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/node.rs"]
#[allow(dead_code)]
mod common;

use common::{client_addr, server_addr, ClientSpec};
use overlay_proto::sim::ipv6_packet;
use tokio::net::UdpSocket;
use tunneld::dataplane::{ChannelPort, Status, Tunnel};

/// Capacity of each port channel, as the daemon's userspace mode uses.
const PORT_QUEUE: usize = 1024;

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(5, |s| s.parse().expect("SECONDS"));
    let packet_len: usize = args.next().map_or(1400, |s| s.parse().expect("PACKET_LEN"));
    assert!(packet_len >= 48, "PACKET_LEN below an IPv6 + UDP header");

    let client_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client_socket.set_nonblocking(true).unwrap();
    server_socket.set_nonblocking(true).unwrap();
    let server_udp: SocketAddr = server_socket.local_addr().unwrap();
    let (client_node, server_node) = common::nodes(ClientSpec::default(), server_udp);
    let (client_port, client_io) = ChannelPort::new(PORT_QUEUE);
    let (server_port, server_io) = ChannelPort::new(PORT_QUEUE);

    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let packet = ipv6_packet(client_addr(), server_addr(), &vec![0x5a; packet_len - 48]);

    // The server: its tunnel and the consumer counting delivered packets.
    let server_delivered = Arc::clone(&delivered);
    let (server_stop, mut server_stopped) = tokio::sync::watch::channel(false);
    let server = std::thread::spawn(move || {
        runtime().block_on(async move {
            let socket = UdpSocket::from_std(server_socket).unwrap();
            let (tunnel, handle) = Tunnel::new(server_node, socket, server_port).unwrap();
            let task = tokio::spawn(tunnel.run());
            let mut inbound = server_io.inbound;
            let _outbound = server_io.outbound;
            loop {
                tokio::select! {
                    packet = inbound.recv() => match packet {
                        Some(_) => server_delivered.fetch_add(1, Ordering::Relaxed),
                        None => break,
                    },
                    _ = server_stopped.changed() => break,
                };
            }
            let status = handle.status().await;
            handle.shutdown();
            drop(task.await);
            status
        })
    });

    // The client: its tunnel and the producer. One packet first, for the
    // handshake, then the timed run.
    let client_stop = Arc::clone(&stop);
    let client_delivered = Arc::clone(&delivered);
    let client = std::thread::spawn(move || {
        runtime().block_on(async move {
            let socket = UdpSocket::from_std(client_socket).unwrap();
            let (tunnel, handle) = Tunnel::new(client_node, socket, client_port).unwrap();
            let task = tokio::spawn(tunnel.run());
            let outbound = client_io.outbound;
            let _inbound = client_io.inbound;
            outbound.send(packet.clone()).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while client_delivered.load(Ordering::Relaxed) == 0 {
                assert!(Instant::now() < deadline, "no handshake within 10 s");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            client_delivered.store(0, Ordering::Relaxed);
            let started = Instant::now();
            let mut sent = 0u64;
            while !client_stop.load(Ordering::Relaxed) {
                outbound.send(packet.clone()).await.unwrap();
                sent += 1;
            }
            let elapsed = started.elapsed();
            // Let the last packets through before the counters are read.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let status = handle.status().await;
            handle.shutdown();
            drop(task.await);
            (sent, elapsed, status)
        })
    });

    let cpu_before = cpu_seconds();
    std::thread::sleep(Duration::from_secs(seconds) + Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let (sent, elapsed, client_status) = client.join().unwrap();
    let received = delivered.load(Ordering::Relaxed);
    let cpu = cpu_seconds() - cpu_before;
    server_stop.send_replace(true);
    let server_status = server.join().unwrap();

    let secs = elapsed.as_secs_f64();
    let gbits = received as f64 * packet_len as f64 * 8.0 / secs / 1e9;
    let lost = sent.saturating_sub(received);
    println!(
        "packet {packet_len} B, {secs:.2} s: sent {sent}, delivered {received} \
         ({:.0} packets/s, {gbits:.2} Gbit/s of inner bytes), lost {lost} ({:.2} %)",
        received as f64 / secs,
        lost as f64 * 100.0 / sent.max(1) as f64,
    );
    println!(
        "CPU (user + system, whole process): {cpu:.2} s, {:.0} ns per delivered packet",
        cpu * 1e9 / received.max(1) as f64
    );
    print_counters("client", client_status.as_ref());
    print_counters("server", server_status.as_ref());
}

/// User and system CPU time of this process so far, from `/proc/self/stat`
/// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn print_counters(side: &str, status: Option<&Status>) {
    let Some(status) = status else {
        println!("{side}: no status");
        return;
    };
    let d = &status.dataplane;
    println!(
        "{side}: datagrams sent {} received {}, send errors {}, receive errors {}, \
         deliver errors {}, node drops {}",
        d.datagrams_sent,
        d.datagrams_received,
        d.send_errors,
        d.recv_errors,
        d.deliver_errors,
        status.node.total_drops(),
    );
}
