//! Two peers over a lossy simulated link: handshake, traffic, rekeys, a NAT
//! rebinding and a forged packet, with a readable trace and the final
//! counters.
//!
//! ```text
//! cargo run -p overlay-proto --example sim [-- --seed N --loss 0.1 --minutes 6]
//! ```

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use overlay_proto::counters::Counters;
use overlay_proto::lease::{EntityKind, LeaseAuthority};
use overlay_proto::node::{Node, NodeConfig};
use overlay_proto::session::PeerConfig;
use overlay_proto::sim::{
    ipv6_packet, issue_identity, IdentitySpec, LinkConditions, SendOutcome, Simulation,
};
use overlay_proto::time::UnixTime;

const DAY: Duration = Duration::from_secs(24 * 3600);

struct Args {
    seed: u64,
    loss: f64,
    minutes: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: 1,
        loss: 0.10,
        minutes: 6,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seed" => args.seed = value.parse().map_err(|e| format!("--seed: {e}"))?,
            "--loss" => args.loss = value.parse().map_err(|e| format!("--loss: {e}"))?,
            "--minutes" => args.minutes = value.parse().map_err(|e| format!("--minutes: {e}"))?,
            other => {
                return Err(format!(
                    "unknown option {other} (expected --seed, --loss, --minutes)"
                ))
            }
        }
    }
    if !(0.0..1.0).contains(&args.loss) {
        return Err("--loss must be in [0, 1)".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("sim: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let link = LinkConditions {
        loss: args.loss,
        duplicate: 0.02,
        reorder: 0.05,
        delay: Duration::from_millis(20),
        reorder_delay: Duration::from_millis(30),
    };
    let t0 = UnixTime::from_secs(1_800_000_000);
    let mut sim = Simulation::new(args.seed, t0, link);
    sim.trace = Some(Vec::new());

    // The authority (addrd) signs a lease for a user and for a server whose
    // system virtual network lives in the 6to4 prefix of its IPv4 address.
    let authority = LeaseAuthority::from_seed([7; 32]);
    let issued = UnixTime::from_secs(t0.as_secs() - 60);
    let server_net = "2002:b16:212c:1::/64".parse()?;
    let (server_key, server_lease) = issue_identity(
        &authority,
        [2; 32],
        &IdentitySpec {
            name: "app-server",
            kind: EntityKind::System,
            prefix: server_net,
            groups: &[],
            valid_from: issued,
            serial: 1,
            lifetime: DAY,
        },
    );
    let user_net = "2002:102:304:1::a/128".parse()?;
    let (user_key, user_lease) = issue_identity(
        &authority,
        [1; 32],
        &IdentitySpec {
            name: "alice",
            kind: EntityKind::User,
            prefix: user_net,
            groups: &["staff"],
            valid_from: issued,
            serial: 1,
            lifetime: DAY,
        },
    );

    let mut server_config =
        NodeConfig::new(server_key, authority.public_key(), server_lease.clone());
    server_config.accept_unknown_peers = true;
    let server = Node::new(server_config, sim.seed());
    let mut user = Node::new(
        NodeConfig::new(user_key, authority.public_key(), user_lease),
        sim.seed(),
    );
    let server_peer = user.add_peer(
        server_lease,
        PeerConfig {
            persistent_keepalive: Some(Duration::from_secs(25)),
            ..PeerConfig::default()
        },
        sim.now().instant,
    )?;
    let alice = sim.add_host("alice", user, "44.55.66.77:40000".parse()?);
    let server_addr: SocketAddr = "11.22.33.44:4500".parse()?;
    let server = sim.add_host("server", server, server_addr);

    let user_ip: Ipv6Addr = "2002:102:304:1::a".parse()?;
    let app_ip: Ipv6Addr = "2002:b16:212c:1::80".parse()?;

    println!(
        "permanet protocol simulation (seed {}, {:.0}% loss, {} simulated minutes)",
        args.seed,
        args.loss * 100.0,
        args.minutes
    );
    println!("alice (user, {user_ip}) talks to an application at {app_ip};");
    println!("the server's UDP endpoint {server_addr} is derived from the 6to4 address alone.\n");

    let mut printed = 0;
    let mut sent = [0u64; 2];
    let total = Duration::from_secs(args.minutes * 60);
    let mut next_move = Duration::from_secs(200);
    let mut forged_at = Some(Duration::from_secs(250));
    while sim.elapsed() < total {
        let t = sim.elapsed();
        let up = ipv6_packet(
            user_ip,
            app_ip,
            format!("request at {:.1}s", t.as_secs_f64()).as_bytes(),
        );
        if sim.send(alice, server_peer, &up)
            != SendOutcome::Dropped(overlay_proto::counters::DropReason::NoSuchPeer)
        {
            sent[0] += 1;
        }
        let key = *sim.host(alice).node.public_key();
        if let Some(user_peer) = sim.host(server).node.peer_by_key(&key) {
            let down = ipv6_packet(
                app_ip,
                user_ip,
                format!("response at {:.1}s", t.as_secs_f64()).as_bytes(),
            );
            sim.send(server, user_peer, &down);
            sent[1] += 1;
        }
        if t >= next_move {
            sim.rebind(alice, "44.55.66.77:51515".parse()?);
            next_move = Duration::MAX;
        }
        if forged_at.is_some_and(|f| t >= f) {
            forged_at = None;
            let forged = ipv6_packet("2002:102:304:1::b".parse()?, app_ip, b"I am bob, really");
            sim.send(alice, server_peer, &forged);
        }
        sim.run_for(Duration::from_millis(100));
        printed = flush_trace(&sim, printed, t < Duration::from_secs(1));
    }
    sim.run_for(Duration::from_secs(1));
    flush_trace(&sim, printed, false);

    println!("\n--- after {} simulated seconds", sim.elapsed().as_secs());
    println!(
        "network: {} datagrams sent, {} lost, {} duplicated, {} reordered",
        sim.stats.sent, sim.stats.lost, sim.stats.duplicated, sim.stats.reordered
    );
    for (host, sent) in [(alice, sent[0]), (server, sent[1])] {
        let h = sim.host(host);
        println!(
            "\n{}: sent {sent} packets, received {} packets",
            h.name,
            h.inbox.len()
        );
        for p in h.node.peers() {
            let s = p.stats();
            println!(
                "  peer {} ({}) at {}: {} handshakes, rx {} B / tx {} B",
                p.id().0,
                p.lease().lease().name,
                p.endpoint().map_or("-".into(), |e| e.to_string()),
                s.handshakes,
                s.rx_bytes,
                s.tx_bytes
            );
            for sa in p.security_associations(sim.now().instant) {
                println!(
                    "    SA {:?}: in {:#010x} out {:#010x}, age {}s, {} sent",
                    sa.role,
                    sa.inbound_spi,
                    sa.outbound_spi,
                    sa.age.as_secs(),
                    sa.packets_sent
                );
            }
        }
        print_counters(h.node.counters());
    }
    Ok(())
}

/// Print new trace lines; ESP data lines only while `verbose` (the first
/// second), so the rest of the trace shows handshakes, events and drops
/// (duplicates the network made and the replay window refused are only
/// counted).
fn flush_trace(sim: &Simulation, from: usize, verbose: bool) -> usize {
    let Some(trace) = sim.trace.as_ref() else {
        return from;
    };
    for line in trace.iter().skip(from) {
        let data = line.what.contains("ESP spi")
            || line.what.contains("...lost")
            || line.what.contains("esp_replay_duplicate");
        if verbose || !data {
            println!("{line}");
        }
    }
    trace.len()
}

fn print_counters(c: &Counters) {
    println!(
        "  handshakes {}, initiations sent {}, packets in {} / out {}, keepalives in {} / out {}, endpoint changes {}",
        c.handshakes_completed,
        c.initiations_sent,
        c.packets_received,
        c.packets_sent,
        c.keepalives_received,
        c.keepalives_sent,
        c.endpoint_changes
    );
    let drops: Vec<String> = c
        .iter_drops()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    println!(
        "  drops: {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    );
}
