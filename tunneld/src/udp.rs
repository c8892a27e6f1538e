//! Batched UDP for the data plane: many datagrams per system call.
//!
//! A per-packet `recv_from`/`send_to` spends more time in system calls than
//! the tunnel spends sealing and opening (DESIGN §16). [`BatchSocket`] wraps
//! the daemon's one tokio [`UdpSocket`] with [`quinn_udp`], which holds the
//! unsafe socket code:
//! - receive: `recvmmsg` fills up to [`RECV_BATCH`] slots of a
//!   [`RecvBatch`] per call, and with UDP GRO each slot may hold many
//!   datagrams of one sender coalesced by the kernel;
//! - send: the tunnel queues its datagrams in a [`TransmitQueue`] while it
//!   handles a batch of input, then [`BatchSocket::send`] flushes them: each
//!   run of equal-sized datagrams to one destination leaves in one
//!   `sendmsg` with UDP GSO (`UDP_SEGMENT`), anything else one `sendmsg`
//!   each. When the send buffer is full it waits for writability instead of
//!   dropping; when the kernel or the driver refuses GSO (EIO), quinn-udp
//!   turns it off and the batch is sent again datagram by datagram;
//! - large socket buffers ([`SOCKET_BUFFER`]), forced past the
//!   `net.core.[rw]mem_max` limits when the process may (`CAP_NET_ADMIN`).
//!
//! Both batch types allocate their buffers once; nothing here allocates or
//! locks per datagram.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use rustix::net::sockopt;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, info};

/// Slots one receive call fills (`recvmmsg`): quinn-udp's batch size.
pub const RECV_BATCH: usize = quinn_udp::BATCH_SIZE;

/// Bytes of one receive slot: the largest UDP payload, which is also the
/// most UDP GRO coalesces into one slot.
const RECV_SLOT: usize = 65_535;

/// Size asked for each socket buffer. The kernel doubles it for its own
/// bookkeeping; without `CAP_NET_ADMIN` it is capped at
/// `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Largest payload of one GSO send: the segments of one `sendmsg` form one
/// UDP "super-datagram" whose length must fit the 16-bit length fields.
const GSO_MAX_BYTES: usize = 65_000;

/// The daemon's UDP socket, receiving and sending in batches.
#[derive(Debug)]
pub struct BatchSocket {
    socket: UdpSocket,
    state: UdpSocketState,
}

/// What one [`BatchSocket::send`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub datagrams: u64,
    /// Datagrams refused with an error (dropped).
    pub failed: u64,
}

impl BatchSocket {
    /// Prepares `socket` for batched I/O: GRO on where the kernel has it,
    /// large buffers (the sizes obtained are logged).
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        // quinn-udp asks for IP(V6)_PMTUDISC_PROBE (no fragmentation, what
        // QUIC wants). The tunnel keeps the kernel's default instead: an
        // outer IPv4 datagram above the path MTU is fragmented, not
        // refused. (On an IPv6 socket quinn-udp also sets IPV6_DONTFRAG,
        // which no safe wrapper clears: IPv6 outer datagrams above the path
        // MTU fail and count as send errors. Endpoints are IPv4 today.)
        if socket.local_addr()?.is_ipv4() {
            sockopt::set_ip_mtu_discover(&socket, sockopt::Ipv4PathMtuDiscovery::WANT)?;
        } else {
            sockopt::set_ipv6_mtu_discover(&socket, sockopt::Ipv6PathMtuDiscovery::WANT)?;
            // IPv4-mapped traffic of a dual-stack socket.
            if !sockopt::ipv6_v6only(&socket)? {
                sockopt::set_ip_mtu_discover(&socket, sockopt::Ipv4PathMtuDiscovery::WANT)?;
            }
        }
        let (receive, send) = enlarge_buffers(&socket);
        info!(
            receive_buffer = receive,
            send_buffer = send,
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "UDP socket ready for batched I/O"
        );
        Ok(BatchSocket { socket, state })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Wait until a receive may find datagrams. Cancel safe.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Receive what is waiting into `batch`, without waiting: the number of
    /// slots filled, or `WouldBlock` when there was nothing after all.
    pub fn try_recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.filled = 0;
        let mut slots = batch.buf.chunks_mut(RECV_SLOT);
        let mut bufs: [IoSliceMut<'_>; RECV_BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
        let filled = self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut bufs, &mut batch.meta)
        })?;
        batch.filled = filled.min(RECV_BATCH);
        Ok(batch.filled)
    }

    /// Send every datagram in `queue`, in order, waiting for the socket to
    /// take them; then empty the queue.
    pub async fn send(&self, queue: &mut TransmitQueue) -> Sent {
        let mut sent = Sent::default();
        let (mut at, mut offset) = (0, 0);
        while let Some(run) = queue.run_at(at, offset, self.state.max_gso_segments()) {
            (at, offset) = (run.next, run.next_offset);
            let transmit = Transmit {
                destination: run.destination,
                ecn: None,
                contents: run.contents,
                segment_size: (run.count > 1).then_some(run.segment_size),
                src_ip: None,
            };
            match self.send_one(&transmit).await {
                Ok(()) => sent.datagrams += run.count as u64,
                // quinn-udp turned GSO off after this error: send the run
                // again one datagram at a time.
                Err(_) if run.count > 1 && self.state.max_gso_segments() == 1 => {
                    for datagram in run.contents.chunks(run.segment_size.max(1)) {
                        let single = Transmit {
                            contents: datagram,
                            segment_size: None,
                            ..transmit.clone()
                        };
                        match self.send_one(&single).await {
                            Ok(()) => sent.datagrams += 1,
                            Err(error) => {
                                sent.failed += 1;
                                debug!(%error, destination = %run.destination, "UDP send failed");
                            }
                        }
                    }
                }
                Err(error) => {
                    sent.failed += run.count as u64;
                    debug!(%error, destination = %run.destination, datagrams = run.count, "UDP send failed");
                }
            }
        }
        queue.clear();
        sent
    }

    /// One `sendmsg`, waiting while the send buffer is full.
    async fn send_one(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.socket
            .async_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), transmit)
            })
            .await
    }
}

/// Ask for [`SOCKET_BUFFER`]-sized buffers, forced if permitted, and return
/// the sizes the kernel reports (0 where it would not say).
fn enlarge_buffers(socket: &UdpSocket) -> (usize, usize) {
    if sockopt::set_socket_recv_buffer_size_force(socket, SOCKET_BUFFER).is_err() {
        if let Err(error) = sockopt::set_socket_recv_buffer_size(socket, SOCKET_BUFFER) {
            debug!(%error, "could not enlarge the UDP receive buffer");
        }
    }
    if sockopt::set_socket_send_buffer_size_force(socket, SOCKET_BUFFER).is_err() {
        if let Err(error) = sockopt::set_socket_send_buffer_size(socket, SOCKET_BUFFER) {
            debug!(%error, "could not enlarge the UDP send buffer");
        }
    }
    (
        sockopt::socket_recv_buffer_size(socket).unwrap_or(0),
        sockopt::socket_send_buffer_size(socket).unwrap_or(0),
    )
}

/// Buffers for one batch of received datagrams, allocated once.
#[derive(Debug, Default)]
pub struct RecvBatch {
    /// [`RECV_BATCH`] slots of [`RECV_SLOT`] bytes.
    buf: Vec<u8>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl RecvBatch {
    /// Room for [`RECV_BATCH`] slots.
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0; RECV_BATCH * RECV_SLOT],
            meta: vec![RecvMeta::default(); RECV_BATCH],
            filled: 0,
        }
    }

    /// Each datagram of the last receive, in arrival order: its sender and
    /// its bytes, to be decrypted in place. A GRO slot is split at its
    /// stride (the last datagram of a slot may be shorter).
    pub fn datagrams(&mut self) -> impl Iterator<Item = (SocketAddr, &mut [u8])> + '_ {
        let filled = self.filled;
        self.buf
            .chunks_mut(RECV_SLOT)
            .zip(self.meta.iter())
            .take(filled)
            .flat_map(|(slot, meta)| {
                let len = meta.len.min(slot.len());
                let stride = if meta.stride == 0 { len } else { meta.stride };
                let addr = meta.addr;
                slot.get_mut(..len)
                    .unwrap_or_default()
                    .chunks_mut(stride.max(1))
                    .map(move |datagram| (addr, datagram))
            })
    }
}

/// Datagrams waiting to be sent, packed back to back in one buffer
/// allocated once, in the order they were queued.
#[derive(Debug)]
pub struct TransmitQueue {
    buf: Vec<u8>,
    /// Bytes of `buf` in use: the datagrams, back to back.
    used: usize,
    /// Each datagram's destination and length, in order.
    entries: Vec<(SocketAddr, usize)>,
    max_entries: usize,
}

/// Consecutive datagrams of a [`TransmitQueue`] that one `sendmsg` sends.
#[derive(Debug, PartialEq, Eq)]
struct Run<'q> {
    destination: SocketAddr,
    /// The datagrams, back to back.
    contents: &'q [u8],
    /// Length of each datagram but the last, which may be shorter.
    segment_size: usize,
    /// Number of datagrams.
    count: usize,
    /// Index of the entry after the run.
    next: usize,
    /// Where in the buffer that entry starts.
    next_offset: usize,
}

impl TransmitQueue {
    /// A queue of up to `max_entries` datagrams and `bytes` bytes.
    pub fn new(max_entries: usize, bytes: usize) -> Self {
        TransmitQueue {
            buf: vec![0; bytes],
            used: 0,
            entries: Vec::with_capacity(max_entries),
            max_entries,
        }
    }

    /// Whether the queue holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether one more datagram of up to `len` bytes fits.
    pub fn has_room(&self, len: usize) -> bool {
        self.entries.len() < self.max_entries && self.buf.len() - self.used >= len
    }

    /// The free space after the queued datagrams, for the caller to write
    /// the next one into and then [`TransmitQueue::commit`] it. Check
    /// [`TransmitQueue::has_room`] first.
    pub fn free_space(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.used..).unwrap_or_default()
    }

    /// Queue the `len` bytes just written at the start of
    /// [`TransmitQueue::free_space`] for `destination`. Returns false (and
    /// queues nothing) if they do not fit.
    pub fn commit(&mut self, len: usize, destination: SocketAddr) -> bool {
        if self.entries.len() >= self.max_entries || self.buf.len() - self.used < len {
            return false;
        }
        self.entries.push((destination, len));
        self.used += len;
        true
    }

    /// Copy `datagram` into the queue. Returns false if it does not fit.
    pub fn push(&mut self, datagram: &[u8], destination: SocketAddr) -> bool {
        if !self.has_room(datagram.len()) {
            return false;
        }
        match self.free_space().get_mut(..datagram.len()) {
            Some(slot) => slot.copy_from_slice(datagram),
            None => return false,
        }
        self.commit(datagram.len(), destination)
    }

    /// Forget every queued datagram.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.used = 0;
    }

    /// The run of datagrams starting at entry `start`, at byte `offset`,
    /// that one send can carry: the same destination, the same length (the
    /// last may be shorter, and ends the run), at most `max_segments` of
    /// them and [`GSO_MAX_BYTES`] in all. `None` past the last entry.
    fn run_at(&self, start: usize, offset: usize, max_segments: usize) -> Option<Run<'_>> {
        let &(destination, segment_size) = self.entries.get(start)?;
        let mut total = segment_size;
        let mut count = 1;
        for &(next_destination, len) in self.entries.iter().skip(start + 1) {
            if count >= max_segments
                || next_destination != destination
                || len > segment_size
                || len == 0
                || total + len > GSO_MAX_BYTES
            {
                break;
            }
            total += len;
            count += 1;
            if len < segment_size {
                break;
            }
        }
        Some(Run {
            destination,
            contents: self.buf.get(offset..offset + total)?,
            segment_size,
            count,
            next: start + count,
            next_offset: offset + total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Queue datagrams of the given (port, length), each filled with its
    /// index, and return the runs a send with `max_segments` would make, as
    /// (port, segment size, count, first byte of each datagram).
    fn runs(datagrams: &[(u16, usize)], max_segments: usize) -> Vec<(u16, usize, usize, Vec<u8>)> {
        let mut queue = TransmitQueue::new(64, 256 * 1024);
        for (i, &(port, len)) in datagrams.iter().enumerate() {
            assert!(queue.push(&vec![i as u8; len], addr(port)));
        }
        let mut out = Vec::new();
        let (mut at, mut offset) = (0, 0);
        while let Some(run) = queue.run_at(at, offset, max_segments) {
            let firsts = run
                .contents
                .chunks(run.segment_size)
                .map(|d| d[0])
                .collect();
            out.push((run.destination.port(), run.segment_size, run.count, firsts));
            (at, offset) = (run.next, run.next_offset);
        }
        out
    }

    #[test]
    fn equal_datagrams_to_one_destination_make_one_run() {
        assert_eq!(
            runs(&[(1, 1400), (1, 1400), (1, 1400)], 64),
            vec![(1, 1400, 3, vec![0, 1, 2])]
        );
    }

    #[test]
    fn a_shorter_datagram_ends_a_run_a_longer_one_starts_the_next() {
        assert_eq!(
            runs(&[(1, 1400), (1, 1400), (1, 100), (1, 1400), (1, 1500)], 64),
            vec![
                (1, 1400, 3, vec![0, 1, 2]),
                (1, 1400, 1, vec![3]),
                (1, 1500, 1, vec![4])
            ]
        );
    }

    #[test]
    fn another_destination_starts_a_run_and_order_is_kept() {
        assert_eq!(
            runs(&[(1, 100), (2, 100), (2, 100), (1, 100)], 64),
            vec![
                (1, 100, 1, vec![0]),
                (2, 100, 2, vec![1, 2]),
                (1, 100, 1, vec![3])
            ]
        );
    }

    #[test]
    fn runs_respect_the_segment_limit_and_the_gso_size_limit() {
        assert_eq!(
            runs(&[(1, 10); 5], 2),
            vec![
                (1, 10, 2, vec![0, 1]),
                (1, 10, 2, vec![2, 3]),
                (1, 10, 1, vec![4])
            ]
        );
        // Without GSO every datagram is its own run.
        assert_eq!(runs(&[(1, 10); 3], 1).len(), 3);
        // 1500-byte datagrams: 43 fit in GSO_MAX_BYTES.
        let big = runs(&[(1, 1500); 50], 64);
        assert_eq!(big.len(), 2);
        assert_eq!(big[0].2, GSO_MAX_BYTES / 1500);
        assert_eq!(big[0].2 + big[1].2, 50);
    }

    #[test]
    fn the_queue_refuses_what_does_not_fit_and_clears() {
        let mut queue = TransmitQueue::new(2, 100);
        assert!(queue.is_empty());
        assert!(!queue.push(&[0; 101], addr(1)));
        assert!(queue.push(&[0; 60], addr(1)));
        assert!(!queue.has_room(41));
        assert!(queue.has_room(40));
        assert_eq!(queue.free_space().len(), 40);
        assert!(!queue.commit(41, addr(1)));
        assert!(queue.commit(40, addr(1)));
        // Count limit.
        let mut queue2 = TransmitQueue::new(1, 100);
        assert!(queue2.push(&[0; 1], addr(1)));
        assert!(!queue2.push(&[0; 1], addr(1)));
        queue.clear();
        assert!(queue.is_empty());
        assert_eq!(queue.free_space().len(), 100);
        assert_eq!(queue.run_at(0, 0, 64), None);
    }

    /// Receive from `socket` until `count` datagrams have arrived (each
    /// wait bounded), returning each one's sender and bytes, and the number
    /// of receive slots they came in.
    async fn receive(socket: &BatchSocket, count: usize) -> (Vec<(SocketAddr, Vec<u8>)>, usize) {
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        let mut slots = 0;
        while got.len() < count {
            tokio::time::timeout(std::time::Duration::from_secs(10), socket.readable())
                .await
                .expect("datagrams within 10 s")
                .unwrap();
            match socket.try_recv(&mut batch) {
                Ok(filled) => {
                    slots += filled;
                    got.extend(batch.datagrams().map(|(a, d)| (a, d.to_vec())));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("receive failed: {e}"),
            }
        }
        (got, slots)
    }

    #[tokio::test]
    async fn a_queue_arrives_whole_and_in_order() {
        let a = BatchSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let b = BatchSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // 100 equal datagrams (GSO runs), a shorter one, 5 of another size.
        let mut sizes = vec![1_200; 100];
        sizes.push(300);
        sizes.extend([900; 5]);
        let mut queue = TransmitQueue::new(128, 256 * 1024);
        let datagram =
            |i: usize, len: usize| -> Vec<u8> { (0..len).map(|j| (i * 7 + j) as u8).collect() };
        for (i, &len) in sizes.iter().enumerate() {
            assert!(queue.push(&datagram(i, len), b_addr));
        }
        let sent = a.send(&mut queue).await;
        assert_eq!(
            sent,
            Sent {
                datagrams: sizes.len() as u64,
                failed: 0
            }
        );
        assert!(queue.is_empty());
        let (got, slots) = receive(&b, sizes.len()).await;
        assert_eq!(got.len(), sizes.len());
        // Where the kernel has UDP GSO and GRO, loopback hands the GSO
        // sends over whole: fewer slots than datagrams.
        if a.state.max_gso_segments() > 1 && b.state.gro_segments() > 1 {
            assert!(
                slots < sizes.len(),
                "{slots} slots for {} datagrams",
                sizes.len()
            );
        }
        for (i, (from, bytes)) in got.iter().enumerate() {
            assert_eq!(*from, a_addr);
            assert_eq!(*bytes, datagram(i, sizes[i]), "datagram {i}");
        }
    }

    #[tokio::test]
    async fn sockets_keep_the_kernels_fragmentation_default() {
        let v4 = BatchSocket::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()).unwrap();
        assert_eq!(
            sockopt::ip_mtu_discover(&v4.socket).unwrap(),
            sockopt::Ipv4PathMtuDiscovery::WANT
        );
        let Ok(v6) = UdpSocket::bind("[::]:0").await else {
            eprintln!("skipped the IPv6 half: no IPv6 on this machine");
            return;
        };
        let v6 = BatchSocket::new(v6).unwrap();
        assert_eq!(
            sockopt::ipv6_mtu_discover(&v6.socket).unwrap(),
            sockopt::Ipv6PathMtuDiscovery::WANT
        );
    }

    #[test]
    fn received_slots_split_at_their_stride() {
        let mut batch = RecvBatch::new();
        let meta = |len, stride, port| {
            let mut m = RecvMeta::default();
            m.addr = addr(port);
            m.len = len;
            m.stride = stride;
            m
        };
        // Slot 0: one 100-byte datagram. Slot 1: GRO, 3 × 50 + 20.
        batch.meta[0] = meta(100, 100, 1);
        batch.meta[1] = meta(170, 50, 2);
        // A slot past `filled` is ignored.
        batch.meta[2] = meta(10, 10, 3);
        batch.filled = 2;
        let got: Vec<(u16, usize)> = batch
            .datagrams()
            .map(|(a, d)| (a.port(), d.len()))
            .collect();
        assert_eq!(got, vec![(1, 100), (2, 50), (2, 50), (2, 50), (2, 20)]);
        // A length past the slot is cut to the slot; stride 0 is one datagram.
        batch.meta[0] = meta(RECV_SLOT + 5, 0, 1);
        batch.filled = 1;
        let got: Vec<usize> = batch.datagrams().map(|(_, d)| d.len()).collect();
        assert_eq!(got, vec![RECV_SLOT]);
    }
}
