//! A userspace UDP relay that impairs the path: it drops, reorders and
//! duplicates datagrams, decided by a seeded random number generator, and
//! counts what it did.
//!
//! The relay runs inside a namespace (on threads that entered it). Each
//! client source address gets its own upstream socket, connected to the
//! relay's destination: like a NAT, the destination sees the relay's
//! address as the client's endpoint, and the answers go back the way they
//! came. Both directions are impaired, each with its own generator
//! (derived from one seed), so a run is reproducible as far as the
//! packets' order of arrival is.
//!
//! Reordering holds a datagram back and sends it after the next one in
//! the same direction (or when the direction has been idle for
//! [`HOLD`]); duplication sends a datagram twice in a row. Dropping and
//! reordering never touch the contents: the relay never looks inside a
//! datagram, so nothing it receives can make it panic.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Netns;

/// Longest a reordered datagram is held when nothing follows it.
pub const HOLD: Duration = Duration::from_millis(20);
/// How often the relay's threads look at their stop flag.
const TICK: Duration = Duration::from_millis(10);
/// Largest datagram relayed (bigger ones are truncated by the kernel and
/// counted as dropped).
const MAX_DATAGRAM: usize = 65_535;

/// What the relay does to each direction, in percent of datagrams.
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Datagrams dropped.
    pub loss_percent: u32,
    /// Datagrams held back and sent after the next one.
    pub reorder_percent: u32,
    /// Datagrams sent twice.
    pub duplicate_percent: u32,
    /// The generator's seed.
    pub seed: u64,
}

/// What the relay did, both directions together.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams received from either side.
    pub received: AtomicU64,
    /// Datagrams sent on (duplicates included).
    pub forwarded: AtomicU64,
    /// Datagrams dropped on purpose.
    pub dropped: AtomicU64,
    /// Datagrams sent after a later one.
    pub reordered: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Datagrams the relay could not send (socket errors).
    pub send_errors: AtomicU64,
}

impl Counters {
    /// The counters as (name, value) pairs, for messages.
    pub fn snapshot(&self) -> [(&'static str, u64); 6] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("received", get(&self.received)),
            ("forwarded", get(&self.forwarded)),
            ("dropped", get(&self.dropped)),
            ("reordered", get(&self.reordered)),
            ("duplicated", get(&self.duplicated)),
            ("send_errors", get(&self.send_errors)),
        ]
    }
}

/// A running relay; its threads stop and its sockets close when dropped.
#[derive(Debug)]
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    counters: Arc<Counters>,
    listen: SocketAddr,
}

impl Relay {
    /// Start relaying datagrams received on `listen` (inside `ns`) to
    /// `destination`, and the answers back, impaired as `impairment` says.
    pub fn start(
        ns: &Netns,
        listen: SocketAddr,
        destination: SocketAddr,
        impairment: Impairment,
    ) -> io::Result<Relay> {
        let front = ns.run(move || UdpSocket::bind(listen))?;
        front.set_read_timeout(Some(TICK))?;
        let listen = front.local_addr()?;
        let relay = Relay {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Arc::default(),
            counters: Arc::default(),
            listen,
        };
        let stop = relay.stop.clone();
        let threads = relay.threads.clone();
        let counters = relay.counters.clone();
        let ns_path = ns.name().to_owned();
        // The front thread creates the upstream sockets, so it runs inside
        // the namespace; the back threads only use sockets made there.
        let handle = ns.spawn(move || {
            let front = Front {
                socket: front,
                destination,
                impairment,
                stop,
                threads,
                counters,
                upstreams: HashMap::new(),
            };
            if let Err(e) = front.run() {
                eprintln!("relay in {ns_path} stopped: {e}");
            }
        });
        relay.push(handle);
        Ok(relay)
    }

    /// The address the relay listens on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// What the relay did so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn push(&self, handle: JoinHandle<()>) {
        if let Ok(mut threads) = self.threads.lock() {
            threads.push(handle);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        loop {
            let next = self.threads.lock().ok().and_then(|mut t| t.pop());
            match next {
                Some(handle) => {
                    let _ = handle.join();
                }
                None => break,
            }
        }
    }
}

/// The client-facing side: one socket, one upstream socket per client.
struct Front {
    socket: UdpSocket,
    destination: SocketAddr,
    impairment: Impairment,
    stop: Arc<AtomicBool>,
    threads: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    counters: Arc<Counters>,
    upstreams: HashMap<SocketAddr, (UdpSocket, Impairer)>,
}

impl Front {
    fn run(mut self) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    let datagram = buf.get(..len).unwrap_or_default();
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                    if !self.upstreams.contains_key(&from) {
                        let upstream = self.open_upstream(from)?;
                        let seed = self.impairment.seed ^ (self.upstreams.len() as u64) << 1;
                        let impairer = Impairer::new(self.impairment, seed, &self.counters);
                        self.upstreams.insert(from, (upstream, impairer));
                    }
                    if let Some((upstream, impairer)) = self.upstreams.get_mut(&from) {
                        impairer.pass(datagram, |d| upstream.send(d).map(drop));
                    }
                }
                Err(e) if is_timeout(&e) => {
                    for (upstream, impairer) in self.upstreams.values_mut() {
                        impairer.flush_if_stale(|d| upstream.send(d).map(drop));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A socket toward the destination for the client at `client`, and
    /// the thread that carries its answers back.
    fn open_upstream(&self, client: SocketAddr) -> io::Result<UdpSocket> {
        // From the relay's own address: the destination sees the relay.
        let local = SocketAddr::new(self.socket.local_addr()?.ip(), 0);
        let upstream = UdpSocket::bind(local)?;
        upstream.connect(self.destination)?;
        upstream.set_read_timeout(Some(TICK))?;
        let back = Back {
            upstream: upstream.try_clone()?,
            front: self.socket.try_clone()?,
            client,
            stop: self.stop.clone(),
            counters: self.counters.clone(),
            impairer: Impairer::new(
                self.impairment,
                self.impairment.seed.rotate_left(32) ^ 0x9e37_79b9,
                &self.counters,
            ),
        };
        let handle = std::thread::spawn(move || back.run());
        if let Ok(mut threads) = self.threads.lock() {
            threads.push(handle);
        }
        Ok(upstream)
    }
}

/// The destination-facing side of one client.
struct Back {
    upstream: UdpSocket,
    front: UdpSocket,
    client: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    impairer: Impairer,
}

impl Back {
    fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let (front, client) = (&self.front, self.client);
        while !self.stop.load(Ordering::Relaxed) {
            match self.upstream.recv(&mut buf) {
                Ok(len) => {
                    self.counters.received.fetch_add(1, Ordering::Relaxed);
                    let datagram = buf.get(..len).unwrap_or_default();
                    self.impairer
                        .pass(datagram, |d| front.send_to(d, client).map(drop));
                }
                Err(e) if is_timeout(&e) => {
                    self.impairer
                        .flush_if_stale(|d| front.send_to(d, client).map(drop));
                }
                // ICMP errors from the destination (port unreachable while
                // it restarts) surface here: keep relaying.
                Err(_) => {}
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One direction's impairment: its generator and the datagram it holds.
struct Impairer {
    impairment: Impairment,
    rng: SplitMix64,
    held: Option<(Vec<u8>, Instant)>,
    counters: Arc<Counters>,
}

impl Impairer {
    fn new(impairment: Impairment, seed: u64, counters: &Arc<Counters>) -> Impairer {
        Impairer {
            impairment,
            rng: SplitMix64(seed),
            held: None,
            counters: counters.clone(),
        }
    }

    /// Drop, hold, duplicate or send `datagram` through `send`.
    fn pass(&mut self, datagram: &[u8], mut send: impl FnMut(&[u8]) -> io::Result<()>) {
        if self.rng.percent(self.impairment.loss_percent) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.held.is_none() && self.rng.percent(self.impairment.reorder_percent) {
            self.held = Some((datagram.to_vec(), Instant::now()));
            return;
        }
        let copies = if self.rng.percent(self.impairment.duplicate_percent) {
            self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        for _ in 0..copies {
            self.send(datagram, &mut send);
        }
        if let Some((held, _)) = self.held.take() {
            self.counters.reordered.fetch_add(1, Ordering::Relaxed);
            self.send(&held, &mut send);
        }
    }

    /// Send the held datagram if it has waited [`HOLD`].
    fn flush_if_stale(&mut self, mut send: impl FnMut(&[u8]) -> io::Result<()>) {
        if matches!(&self.held, Some((_, since)) if since.elapsed() >= HOLD) {
            if let Some((held, _)) = self.held.take() {
                self.send(&held, &mut send);
            }
        }
    }

    fn send(&self, datagram: &[u8], send: &mut impl FnMut(&[u8]) -> io::Result<()>) {
        match send(datagram) {
            Ok(()) => self.counters.forwarded.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.send_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// SplitMix64: a small, seedable, good-enough generator for choosing
/// which datagrams to impair (not for anything secret).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `true` with probability `percent` / 100.
    pub fn percent(&mut self, percent: u32) -> bool {
        percent > 0 && self.next_u64() % 100 < u64::from(percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impairer_drops_reorders_and_duplicates_at_the_asked_rates() {
        let counters = Arc::new(Counters::default());
        let impairment = Impairment {
            loss_percent: 5,
            reorder_percent: 5,
            duplicate_percent: 2,
            seed: 7,
        };
        let mut impairer = Impairer::new(impairment, 7, &counters);
        let mut out: Vec<u32> = Vec::new();
        for i in 0..10_000u32 {
            impairer.pass(&i.to_be_bytes(), |d| {
                let bytes: [u8; 4] = d.try_into().map_err(|_| io::ErrorKind::InvalidData)?;
                out.push(u32::from_be_bytes(bytes));
                Ok(())
            });
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let dropped = get(&counters.dropped);
        assert!((350..650).contains(&dropped), "dropped {dropped}");
        assert!(get(&counters.reordered) > 200);
        assert!(get(&counters.duplicated) > 100);
        let out_of_order = out.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(out_of_order > 200, "{out_of_order} out of order");
        assert_eq!(out.len() as u64, get(&counters.forwarded));
    }
}
