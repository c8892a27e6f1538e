//! The authority channel (terminal ↔ addrd) over the deterministic simulated
//! network: login, renewal and a paged netmap under loss, duplication,
//! reordering and delay; exactly-once execution; replays; a wrong pinned
//! key; the password never in clear on the wire; timeouts on a fake clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::any::Any;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use overlay_proto::authority::{
    fill_netmap_page, AuthorityClient, AuthorityDrop, AuthorityServer, ClientConfig, ClientError,
    ClientTimers, LoginNeededReason, Password, Request, RequestId, Response, TARGET_DATAGRAM_LEN,
    TARGET_RECORD_LEN,
};
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{EntityKind, Lease, LeaseAuthority, SignedLease};
use overlay_proto::node::Transmit;
use overlay_proto::sim::{Endpoint, EndpointId, LinkConditions, Simulation};
use overlay_proto::time::{Now, UnixTime};
use overlay_proto::wire::{self, MessageType};

const T0: u64 = 1_800_000_000;
const PASSWORD: &[u8] = b"correct horse battery staple";

fn client_addr() -> SocketAddr {
    "44.55.66.77:40000".parse().unwrap()
}

fn server_addr() -> SocketAddr {
    "11.22.33.44:4500".parse().unwrap()
}

/// The terminal: the client plus the answers it got.
#[derive(Debug)]
struct Terminal {
    client: AuthorityClient,
    answers: Vec<(RequestId, Result<Response, ClientError>)>,
}

impl Terminal {
    fn collect(&mut self) {
        while let Some(answer) = self.client.poll_response() {
            self.answers.push(answer);
        }
    }

    fn answer(&self, id: RequestId) -> Option<&Result<Response, ClientError>> {
        self.answers.iter().find(|(i, _)| *i == id).map(|(_, a)| a)
    }
}

impl Endpoint for Terminal {
    fn handle_datagram(&mut self, now: Now, src: SocketAddr, datagram: &mut [u8]) {
        self.client.handle_datagram(now, src, datagram);
        self.collect();
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.client.poll_transmit()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Now) {
        self.client.handle_timeout(now);
        self.collect();
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A miniature addrd: one user, a netmap of many leases.
#[derive(Debug)]
struct Addrd {
    server: AuthorityServer,
    keys: StaticKeypair,
    authority: LeaseAuthority,
    netmap: Vec<Vec<u8>>,
    executed: Vec<(PublicKey, RequestId, &'static str)>,
    /// Answers to throw away after sending (simulating their loss on the
    /// way back), so the client must retransmit.
    lose_answers: usize,
    /// Execute later (a slow directory): requests wait in `deferred`.
    defer: bool,
    /// Answer everything with this instead (a buggy addrd).
    answer_with: Option<Response>,
    deferred: Vec<overlay_proto::authority::Incoming>,
}

impl Addrd {
    fn lease_for(&self, key: PublicKey, serial: u64, now: UnixTime) -> Vec<u8> {
        let lease = Lease {
            kind: EntityKind::User,
            serial,
            not_before: now,
            not_after: now.saturating_add(Duration::from_secs(3600)),
            public_key: key.0,
            prefix: "2002:b16:2c21:8000::1/128".parse().unwrap(),
            name: "alice".into(),
            dn: "uid=alice,ou=people,dc=example,dc=org".into(),
            groups: vec!["staff".into()],
        };
        self.authority.sign(&lease).unwrap().into_bytes()
    }

    fn execute(&mut self, now: Now, key: PublicKey, request: Request) -> Response {
        if let Some(answer) = &self.answer_with {
            return answer.clone();
        }
        match request {
            Request::Login { user, password } => {
                if user == "alice" && password == Password::from_slice(PASSWORD) {
                    Response::LoginOk {
                        lease: self.lease_for(key, 1, now.unix),
                        netmap_version: 7,
                    }
                } else {
                    Response::LoginRefused {
                        retry_after_secs: 5,
                    }
                }
            }
            Request::Renew { lease } => {
                match SignedLease::verify(&lease, &self.authority.public_key(), now.unix) {
                    Ok(held) if held.lease().public_key == key.0 => Response::Renewed {
                        lease: self.lease_for(key, held.lease().serial + 1, now.unix),
                    },
                    Ok(_) => Response::LoginNeeded {
                        reason: LoginNeededReason::KeyMismatch,
                    },
                    Err(_) => Response::LoginNeeded {
                        reason: LoginNeededReason::LeaseExpired,
                    },
                }
            }
            Request::Netmap { cursor, .. } => {
                let start = usize::try_from(cursor).unwrap().min(self.netmap.len());
                let (mut page, took, _) =
                    fill_netmap_page(7, &self.netmap[start..], &[], TARGET_RECORD_LEN);
                let next = start + took;
                page.next_cursor = (next < self.netmap.len()).then_some(next as u64);
                Response::Netmap(page)
            }
            Request::WhereIs { .. } => Response::NotBound,
        }
    }
}

impl Addrd {
    fn finish_deferred(&mut self, now: Now) {
        self.defer = false;
        for incoming in std::mem::take(&mut self.deferred) {
            let response = self.execute(now, incoming.client_key, incoming.request);
            self.server
                .respond(now, incoming.session, incoming.request_id, response)
                .unwrap();
        }
    }
}

impl Endpoint for Addrd {
    fn handle_datagram(&mut self, now: Now, src: SocketAddr, datagram: &mut [u8]) {
        let Some(incoming) = self.server.handle_datagram(now, src, datagram) else {
            return;
        };
        self.executed.push((
            incoming.client_key,
            incoming.request_id,
            incoming.request.kind_name(),
        ));
        if self.defer {
            self.deferred.push(incoming);
            return;
        }
        let response = self.execute(now, incoming.client_key, incoming.request);
        self.server
            .respond(now, incoming.session, incoming.request_id, response)
            .unwrap();
        if self.lose_answers > 0 {
            self.lose_answers -= 1;
            let lost = self.server.poll_transmit();
            assert!(lost.is_some());
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.server.poll_transmit()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Now) {
        self.server.handle_timeout(now);
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

struct World {
    sim: Simulation,
    terminal: EndpointId,
    addrd: EndpointId,
    authority: LeaseAuthority,
}

fn world(seed: u64, link: LinkConditions, pinned: Option<PublicKey>, leases: usize) -> World {
    let mut sim = Simulation::new(seed, UnixTime::from_secs(T0), link);
    sim.capture = Some(Vec::new());
    let authority = LeaseAuthority::from_seed([9; 32]);
    let server_keys = StaticKeypair::from_private(sim.seed());
    let server_key = server_keys.public();
    let client_keys = StaticKeypair::from_private(sim.seed());
    let mut addrd = Addrd {
        server: AuthorityServer::new(server_keys.clone(), None, sim.seed()),
        keys: server_keys,
        authority: LeaseAuthority::from_seed([9; 32]),
        netmap: Vec::new(),
        executed: Vec::new(),
        lose_answers: 0,
        defer: false,
        deferred: Vec::new(),
        answer_with: None,
    };
    for i in 0..leases {
        let key = StaticKeypair::from_private([i as u8 + 1; 32]).public();
        addrd
            .netmap
            .push(addrd.lease_for(key, i as u64, sim.now().unix));
    }
    let config = ClientConfig {
        keypair: client_keys,
        server_key: pinned.unwrap_or(server_key),
        server: server_addr(),
        psk: None,
        timers: ClientTimers::default(),
    };
    let client = AuthorityClient::new(config, sim.seed(), sim.now());
    let terminal = sim.add_endpoint(
        "terminal",
        Box::new(Terminal {
            client,
            answers: Vec::new(),
        }),
        client_addr(),
    );
    let addrd = sim.add_endpoint("addrd", Box::new(addrd), server_addr());
    World {
        sim,
        terminal,
        addrd,
        authority,
    }
}

fn lossy() -> LinkConditions {
    LinkConditions {
        loss: 0.2,
        duplicate: 0.2,
        reorder: 0.2,
        delay: Duration::from_millis(30),
        reorder_delay: Duration::from_millis(80),
    }
}

impl World {
    fn send(&mut self, request: Request) -> RequestId {
        self.sim
            .with_endpoint(self.terminal, |t: &mut Terminal, now| {
                t.client.send(now, request)
            })
            .unwrap()
    }

    /// Runs until request `id` is answered (or 40 s pass).
    fn wait(&mut self, id: RequestId) -> Result<Response, ClientError> {
        let terminal = self.terminal;
        let deadline = self.sim.now().instant + Duration::from_secs(40);
        loop {
            let answer = self
                .sim
                .with_endpoint(terminal, |t: &mut Terminal, _| t.answer(id).cloned())
                .unwrap();
            if let Some(answer) = answer {
                return answer;
            }
            assert!(
                self.sim.now().instant < deadline,
                "no answer to {id} within 40 s"
            );
            self.sim.run_for(Duration::from_millis(10));
        }
    }

    fn terminal<R>(&mut self, f: impl FnOnce(&mut Terminal) -> R) -> R {
        self.sim
            .with_endpoint(self.terminal, |t: &mut Terminal, _| f(t))
            .unwrap()
    }

    fn addrd<R>(&mut self, f: impl FnOnce(&mut Addrd) -> R) -> R {
        self.sim
            .with_endpoint(self.addrd, |a: &mut Addrd, _| f(a))
            .unwrap()
    }

    fn login(&mut self, password: &[u8]) -> Result<Response, ClientError> {
        let id = self.send(Request::Login {
            user: "alice".into(),
            password: Password::from_slice(password),
        });
        self.wait(id)
    }

    fn captured(&self) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        self.sim.capture.clone().unwrap()
    }

    fn client_key(&mut self) -> PublicKey {
        // The key the lease was issued for: take it from the executed list.
        self.addrd(|a| a.executed[0].0)
    }
}

fn lease_of(response: &Response) -> Vec<u8> {
    match response {
        Response::LoginOk { lease, .. } | Response::Renewed { lease } => lease.clone(),
        other => panic!("no lease in {other:?}"),
    }
}

#[test]
fn login_renew_and_paged_netmap_under_loss_duplication_and_reordering() {
    for seed in 1..=5 {
        let mut w = world(seed, lossy(), None, 60);
        let now = w.sim.now().unix;
        let ok = w.login(PASSWORD).unwrap();
        let lease = lease_of(&ok);
        let verified = SignedLease::verify(&lease, &w.authority.public_key(), now).unwrap();
        assert_eq!(verified.lease().serial, 1);
        let Response::LoginOk { netmap_version, .. } = ok else {
            panic!()
        };
        assert_eq!(netmap_version, 7);

        let id = w.send(Request::Renew { lease });
        let renewed = lease_of(&w.wait(id).unwrap());
        let verified = SignedLease::verify(&renewed, &w.authority.public_key(), now).unwrap();
        assert_eq!(verified.lease().serial, 2);
        assert_eq!(PublicKey(verified.lease().public_key), w.client_key());

        let mut cursor = 0;
        let mut leases = Vec::new();
        let mut pages = 0;
        loop {
            let id = w.send(Request::Netmap {
                since_version: 0,
                cursor,
            });
            let Response::Netmap(page) = w.wait(id).unwrap() else {
                panic!("not a netmap")
            };
            pages += 1;
            leases.extend(page.leases);
            match page.next_cursor {
                Some(next) => cursor = next,
                None => break,
            }
        }
        let expected = w.addrd(|a| a.netmap.clone());
        assert_eq!(leases, expected, "seed {seed}");
        assert!(
            pages >= 10,
            "60 leases of ~230 bytes need many pages: {pages}"
        );

        // Every request executed exactly once, whatever the network did.
        let executed = w.addrd(|a| a.executed.clone());
        let unique: HashSet<_> = executed.iter().map(|(k, id, _)| (*k, *id)).collect();
        assert_eq!(unique.len(), executed.len(), "seed {seed}: {executed:?}");
        assert_eq!(executed.len(), 2 + pages, "seed {seed}");
        // Every datagram within the target size (no lease here is large).
        for (_, _, bytes) in w.captured() {
            assert!(bytes.len() <= TARGET_DATAGRAM_LEN, "{} bytes", bytes.len());
        }
        assert!(w.sim.stats.lost > 0 && w.sim.stats.duplicated > 0 && w.sim.stats.reordered > 0);
    }
}

#[test]
fn a_wrong_password_is_refused_and_the_password_never_travels_in_clear() {
    let mut w = world(11, LinkConditions::PERFECT, None, 0);
    let refused = w.login(b"wrong password!").unwrap();
    assert_eq!(
        refused,
        Response::LoginRefused {
            retry_after_secs: 5
        }
    );
    w.login(PASSWORD).unwrap();
    let captured = w.captured();
    assert!(captured.len() >= 4);
    for (_, _, bytes) in &captured {
        for secret in [PASSWORD, b"wrong password!".as_slice(), b"alice".as_slice()] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "secret in clear on the wire"
            );
        }
    }
    // The login data message went after the handshake: the first datagram
    // the client sent is the initiation.
    let first = &captured[0].2;
    assert_eq!(
        wire::ControlPacket::new_checked(&first[..])
            .unwrap()
            .message_type(),
        MessageType::AuthorityInitiation
    );
}

#[test]
fn a_lost_answer_is_resent_from_the_cache_not_executed_twice() {
    let mut w = world(12, LinkConditions::PERFECT, None, 0);
    w.addrd(|a| a.lose_answers = 1);
    let ok = w.login(PASSWORD).unwrap();
    assert!(matches!(ok, Response::LoginOk { .. }));
    let executed = w.addrd(|a| a.executed.len());
    assert_eq!(executed, 1);
    let duplicates = w.addrd(|a| a.server.counters().duplicates_answered);
    assert_eq!(duplicates, 1);
    let retransmissions = w.terminal(|t| t.client.counters().retransmissions);
    assert_eq!(retransmissions, 1);
}

#[test]
fn a_request_still_executing_is_not_started_again() {
    let mut w = world(19, LinkConditions::PERFECT, None, 0);
    w.addrd(|a| a.defer = true);
    let id = w.send(Request::Login {
        user: "alice".into(),
        password: Password::from_slice(PASSWORD),
    });
    // The directory is slow: 5 s, during which the client retransmits.
    w.sim.run_for(Duration::from_secs(5));
    assert_eq!(w.addrd(|a| a.executed.len()), 1);
    let in_progress = w.addrd(|a| a.server.counters().drops(AuthorityDrop::RequestInProgress));
    assert!(in_progress >= 2, "{in_progress}");
    w.sim
        .with_endpoint(w.addrd, |a: &mut Addrd, now| a.finish_deferred(now))
        .unwrap();
    assert!(matches!(w.wait(id).unwrap(), Response::LoginOk { .. }));
    assert_eq!(w.addrd(|a| a.executed.len()), 1);
}

#[test]
fn a_replayed_data_message_is_dropped_and_counted() {
    let mut w = world(13, LinkConditions::PERFECT, None, 0);
    w.login(PASSWORD).unwrap();
    let data: Vec<_> = w
        .captured()
        .into_iter()
        .filter(|(from, _, bytes)| {
            *from == client_addr()
                && wire::ControlPacket::new_checked(&bytes[..])
                    .is_ok_and(|p| p.message_type() == MessageType::AuthorityData)
        })
        .collect();
    assert_eq!(data.len(), 1);
    let (from, to, bytes) = data[0].clone();
    w.sim.inject(from, to, bytes.clone());
    w.sim.run_for(Duration::from_millis(100));
    assert_eq!(
        w.addrd(|a| a.server.counters().drops(AuthorityDrop::ReplayDuplicate)),
        1
    );
    assert_eq!(w.addrd(|a| a.executed.len()), 1);
    // A replayed initiation is refused too (its timestamp is not newer).
    let initiation = w.captured()[0].clone();
    w.sim.inject(initiation.0, initiation.1, initiation.2);
    w.sim.run_for(Duration::from_millis(100));
    assert_eq!(
        w.addrd(|a| a.server.counters().drops(AuthorityDrop::ReplayedInitiation)),
        1
    );
    // A tampered copy does not authenticate.
    let mut tampered = bytes;
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    tampered[19] = tampered[19].wrapping_add(100); // a fresh counter
    w.sim.inject(from, to, tampered);
    w.sim.run_for(Duration::from_millis(100));
    assert_eq!(
        w.addrd(|a| a.server.counters().drops(AuthorityDrop::DecryptFailed)),
        1
    );
}

#[test]
fn a_wrong_pinned_key_never_completes_and_times_out() {
    let wrong = StaticKeypair::from_private([0x77; 32]).public();
    let mut w = world(14, LinkConditions::PERFECT, Some(wrong), 0);
    let start = w.sim.now().instant;
    let id = w.send(Request::Login {
        user: "alice".into(),
        password: Password::from_slice(PASSWORD),
    });
    let answer = w.wait(id);
    assert_eq!(answer, Err(ClientError::Timeout(Duration::from_secs(30))));
    let took = w.sim.now().instant - start;
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(31),
        "{took:?}"
    );
    assert!(!w.terminal(|t| t.client.is_established()));
    let (bad_mac1, handshakes) = w.addrd(|a| {
        (
            a.server.counters().drops(AuthorityDrop::BadMac1),
            a.server.counters().handshakes,
        )
    });
    assert_eq!(handshakes, 0);
    // 1 s doubling to 8 s with up to 25 % jitter: sends near 0, 1, 3, 7,
    // 15, 23 s.
    assert!((5..=7).contains(&bad_mac1), "{bad_mac1} initiations");
    assert!(w.addrd(|a| a.executed.is_empty()));
}

#[test]
fn an_unreachable_server_times_out_on_the_fake_clock_and_the_client_goes_idle() {
    let mut w = world(15, LinkConditions::PERFECT, None, 0);
    w.sim.link.loss = 1.0;
    let id = w.send(Request::Netmap {
        since_version: 0,
        cursor: 0,
    });
    assert_eq!(
        w.wait(id),
        Err(ClientError::Timeout(Duration::from_secs(30)))
    );
    w.sim.run_for(Duration::from_secs(10));
    assert_eq!(w.terminal(|t| t.client.poll_timeout()), None);
    assert_eq!(w.terminal(|t| t.client.counters().timeouts), 1);
    // The network comes back: the next request works.
    w.sim.link.loss = 0.0;
    assert!(matches!(
        w.login(PASSWORD).unwrap(),
        Response::LoginOk { .. }
    ));
}

#[test]
fn an_old_session_is_replaced_by_a_new_handshake() {
    let mut w = world(16, LinkConditions::PERFECT, None, 0);
    let lease = lease_of(&w.login(PASSWORD).unwrap());
    assert_eq!(w.terminal(|t| t.client.counters().handshakes), 1);
    w.sim.run_for(Duration::from_secs(130));
    let id = w.send(Request::Renew {
        lease: lease.clone(),
    });
    w.wait(id).unwrap();
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.terminal(|t| t.client.counters().handshakes), 2);
    // Long idle: the session is past its use, the next request handshakes.
    w.sim.run_for(Duration::from_secs(400));
    let id = w.send(Request::Renew { lease });
    assert!(matches!(w.wait(id).unwrap(), Response::Renewed { .. }));
    assert_eq!(w.terminal(|t| t.client.counters().handshakes), 3);
    // The server forgot the expired sessions.
    assert!(w.addrd(|a| a.server.sessions()) <= 2);
}

#[test]
fn under_load_the_server_asks_for_a_cookie_first() {
    let mut w = world(17, LinkConditions::PERFECT, None, 0);
    w.addrd(|a| a.server.set_under_load(true));
    assert!(matches!(
        w.login(PASSWORD).unwrap(),
        Response::LoginOk { .. }
    ));
    let (cookies, required) = w.addrd(|a| {
        (
            a.server.counters().cookie_replies_sent,
            a.server.counters().drops(AuthorityDrop::CookieRequired),
        )
    });
    assert_eq!((cookies, required), (1, 1));
}

#[test]
fn a_large_lease_fits_within_the_documented_bound() {
    use overlay_proto::authority::MAX_DATA_LEN;
    let mut w = world(18, LinkConditions::PERFECT, None, 0);
    w.login(PASSWORD).unwrap();
    // A lease near the 2048-byte limit, renewed: carried in one datagram
    // over the 1400-byte target, within MAX_DATA_LEN.
    let key = w.client_key();
    let big = w.addrd(|a| {
        let lease = Lease {
            kind: EntityKind::User,
            serial: 1,
            not_before: UnixTime::from_secs(T0),
            not_after: UnixTime::from_secs(T0 + 3600),
            public_key: key.0,
            prefix: "2002:b16:2c21:8000::1/128".parse().unwrap(),
            name: "alice".into(),
            dn: "uid=alice,ou=people,dc=example,dc=org".into(),
            groups: (0..20)
                .map(|i| format!("group-with-a-long-name-{i:03}-{}", "x".repeat(40)))
                .collect(),
        };
        a.authority.sign(&lease).unwrap().into_bytes()
    });
    assert!(big.len() > TARGET_DATAGRAM_LEN, "{}", big.len());
    let id = w.send(Request::Renew { lease: big });
    w.wait(id).unwrap();
    let largest = w.captured().iter().map(|(_, _, b)| b.len()).max().unwrap();
    assert!(
        largest > TARGET_DATAGRAM_LEN && largest <= MAX_DATA_LEN,
        "{largest}"
    );
}

#[test]
fn a_restarted_addrd_is_found_again_through_a_new_handshake() {
    let mut w = world(20, LinkConditions::PERFECT, None, 0);
    let lease = lease_of(&w.login(PASSWORD).unwrap());
    // addrd restarts: same key, no sessions, no caches.
    w.addrd(|a| a.server = AuthorityServer::new(a.keys.clone(), None, [42; 32]));
    w.sim.run_for(Duration::from_secs(2));
    let id = w.send(Request::Renew { lease });
    assert!(matches!(w.wait(id).unwrap(), Response::Renewed { .. }));
    assert!(w.addrd(|a| a.server.counters().drops(AuthorityDrop::UnknownSession)) >= 1);
    assert_eq!(w.terminal(|t| t.client.counters().handshakes), 2);
    assert_eq!(w.addrd(|a| a.executed.len()), 2);
}

/// Moves every datagram between `client` and `server` until both are quiet;
/// returns the requests the server saw.
fn pump(
    clients: &mut [(&mut AuthorityClient, SocketAddr, Now)],
    server: &mut AuthorityServer,
    now: Now,
) -> Vec<overlay_proto::authority::Incoming> {
    let mut incoming = Vec::new();
    loop {
        let mut moved = false;
        for (client, addr, _) in clients.iter_mut() {
            while let Some(t) = client.poll_transmit() {
                moved = true;
                let mut bytes = t.contents;
                incoming.extend(server.handle_datagram(now, *addr, &mut bytes));
            }
        }
        while let Some(t) = server.poll_transmit() {
            moved = true;
            let (client, _, client_now) = clients
                .iter_mut()
                .find(|(_, a, _)| *a == t.destination)
                .unwrap();
            let mut bytes = t.contents;
            client.handle_datagram(*client_now, server_addr(), &mut bytes);
        }
        if !moved {
            return incoming;
        }
    }
}

fn direct_client(seed: u8, server_key: PublicKey, now: Now) -> AuthorityClient {
    let config = ClientConfig {
        keypair: StaticKeypair::from_private([seed; 32]),
        server_key,
        server: server_addr(),
        psk: None,
        timers: ClientTimers::default(),
    };
    AuthorityClient::new(config, [seed; 32], now)
}

fn netmap_request() -> Request {
    Request::Netmap {
        since_version: 0,
        cursor: 0,
    }
}

#[test]
fn sessions_are_bounded_and_the_oldest_is_evicted() {
    let now = Now {
        instant: Instant::now(),
        unix: UnixTime::from_secs(T0),
    };
    let keys = StaticKeypair::from_private([0x40; 32]);
    let mut config = overlay_proto::authority::ServerConfig::new(keys.clone(), None);
    config.max_sessions = 2;
    let mut server = AuthorityServer::with_config(config, [1; 32]);
    let mut clients: Vec<AuthorityClient> = (1..=3)
        .map(|i| direct_client(i, keys.public(), now))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(now, netmap_request());
        let addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 4500));
        let seen = pump(&mut [(client, addr, now)], &mut server, now);
        assert_eq!(seen.len(), 1);
    }
    assert_eq!(server.sessions(), 2);
    assert_eq!(server.counters().sessions_evicted, 1);
    // The evicted client's next request lands on an unknown session.
    let first = &mut clients[0];
    first.send(now, netmap_request());
    let seen = pump(
        &mut [(first, SocketAddr::from(([10, 0, 0, 1], 4500)), now)],
        &mut server,
        now,
    );
    assert!(seen.is_empty());
    assert_eq!(server.counters().drops(AuthorityDrop::UnknownSession), 1);
}

#[test]
fn a_first_initiation_from_a_wrong_clock_is_refused() {
    let now = Now {
        instant: Instant::now(),
        unix: UnixTime::from_secs(T0),
    };
    let keys = StaticKeypair::from_private([0x41; 32]);
    let mut server = AuthorityServer::new(keys.clone(), None, [1; 32]);
    // The terminal's clock is an hour behind.
    let behind = Now {
        unix: UnixTime::from_secs(T0 - 3600),
        ..now
    };
    let mut client = direct_client(5, keys.public(), behind);
    client.send(behind, netmap_request());
    let seen = pump(
        &mut [(&mut client, SocketAddr::from(([10, 0, 0, 5], 4500)), behind)],
        &mut server,
        now,
    );
    assert!(seen.is_empty());
    assert_eq!(server.counters().drops(AuthorityDrop::StaleInitiation), 1);
    assert_eq!(server.sessions(), 0);
}

#[test]
fn tunnel_messages_and_garbage_are_counted_not_processed() {
    let now = Now {
        instant: Instant::now(),
        unix: UnixTime::from_secs(T0),
    };
    let keys = StaticKeypair::from_private([0x42; 32]);
    let mut server = AuthorityServer::new(keys.clone(), None, [1; 32]);
    let mut client = direct_client(6, keys.public(), now);
    let src = SocketAddr::from(([10, 0, 0, 6], 4500));
    // A tunnel initiation (type 0x01).
    let mut tunnel = vec![0, 0, 0, 0, 0x01, 0, 0, 0, 0, 0, 0x10, 0];
    tunnel.extend_from_slice(&[0x5a; 64]);
    assert!(server
        .handle_datagram(now, src, &mut tunnel.clone())
        .is_none());
    client.handle_datagram(now, server_addr(), &mut tunnel);
    // Garbage and a truncated data message.
    assert!(server
        .handle_datagram(now, src, &mut [0xde, 0xad])
        .is_none());
    let mut short = vec![0, 0, 0, 0, 0x07, 0, 0, 0, 0, 0, 0x10, 0];
    assert!(server.handle_datagram(now, src, &mut short).is_none());
    // An initiation to the server from the client's side (wrong direction).
    client.send(now, netmap_request());
    let mut initiation = client.poll_transmit().unwrap().contents;
    client.handle_datagram(now, server_addr(), &mut initiation);
    assert_eq!(
        server.counters().drops(AuthorityDrop::UnexpectedMessage)
            + server.counters().drops(AuthorityDrop::Malformed),
        3
    );
    assert_eq!(client.counters().drops(AuthorityDrop::UnexpectedMessage), 2);
    assert_eq!(server.sessions(), 0);
}

#[test]
fn an_answer_of_the_wrong_kind_is_a_typed_error() {
    let mut w = world(21, LinkConditions::PERFECT, None, 0);
    w.addrd(|a| {
        a.answer_with = Some(Response::Renewed {
            lease: vec![1, 2, 3],
        })
    });
    assert_eq!(
        w.login(PASSWORD),
        Err(ClientError::UnexpectedResponse {
            request: "login",
            response: "renewed"
        })
    );
    w.addrd(|a| {
        a.answer_with = Some(Response::ServerBusy {
            retry_after_secs: 3,
        })
    });
    assert_eq!(
        w.login(PASSWORD),
        Ok(Response::ServerBusy {
            retry_after_secs: 3
        })
    );
}

#[test]
fn client_records_are_bounded() {
    let now = Now {
        instant: Instant::now(),
        unix: UnixTime::from_secs(T0),
    };
    let keys = StaticKeypair::from_private([0x43; 32]);
    let mut config = overlay_proto::authority::ServerConfig::new(keys.clone(), None);
    config.max_clients = 1;
    let mut server = AuthorityServer::with_config(config, [1; 32]);
    let mut first = direct_client(7, keys.public(), now);
    let mut second = direct_client(8, keys.public(), now);
    first.send(now, netmap_request());
    let seen = pump(
        &mut [(&mut first, SocketAddr::from(([10, 0, 0, 7], 4500)), now)],
        &mut server,
        now,
    );
    assert_eq!(seen.len(), 1);
    second.send(now, netmap_request());
    let seen = pump(
        &mut [(&mut second, SocketAddr::from(([10, 0, 0, 8], 4500)), now)],
        &mut server,
        now,
    );
    assert!(seen.is_empty());
    assert_eq!(server.counters().drops(AuthorityDrop::TooManyClients), 1);
    // Once the first client's record has aged out, there is room again.
    let later = Now {
        instant: now.instant + Duration::from_secs(200),
        unix: now.unix.saturating_add(Duration::from_secs(200)),
    };
    server.handle_timeout(later);
    let mut third = direct_client(9, keys.public(), later);
    third.send(later, netmap_request());
    let seen = pump(
        &mut [(&mut third, SocketAddr::from(([10, 0, 0, 9], 4500)), later)],
        &mut server,
        later,
    );
    assert_eq!(seen.len(), 1);
}
