//! A fake addrd for tests that do not depend on the real one: the
//! authority channel's real server ([`AuthorityServer`]) on a loopback UDP
//! socket, in a thread, answering from a [`FakeState`] the test controls.
//! Leases are signed by the test authority ([`netns_tests::authority`]),
//! so they verify with the configs [`super::daemon::Setup`] writes. The
//! thread stops and the socket closes when the [`FakeAddrd`] is dropped,
//! also when the test fails.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use netns_tests::LeaseSpec;
use overlay_proto::authority::{
    fill_netmap_page, AuthorityServer, Incoming, LoginNeededReason, Request, Response,
};
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::EntityKind;
use tunneld::startup;

use super::daemon::CLIENT_PREFIX;

/// What the fake answers, changed by the test while it runs.
#[derive(Debug)]
pub struct FakeState {
    /// The one user that may log in.
    pub user: String,
    /// Its password.
    pub password: Vec<u8>,
    /// Lifetime (seconds from now) of a lease issued by a login.
    pub login_lifetime: u64,
    /// Lifetime of a lease issued by a renewal.
    pub renew_lifetime: u64,
    /// Serial of the last lease issued.
    pub serial: u64,
    /// Answer renewals with `LoginNeeded { Revoked }`.
    pub login_needed: bool,
    /// The netmap: encoded signed leases.
    pub netmap: Vec<Vec<u8>>,
    /// The netmap version.
    pub netmap_version: u64,
    /// Kinds of the requests executed, in order.
    pub requests: Vec<&'static str>,
    /// Issue leases for this key instead of the client's (a broken or
    /// compromised addrd).
    pub lease_key: Option<PublicKey>,
}

/// A running fake addrd. See the module documentation.
pub struct FakeAddrd {
    /// Where it listens.
    pub endpoint: SocketAddr,
    /// Its static public key (what `[addrd].public-key` pins).
    pub public_key: PublicKey,
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Netmap pages are filled to this many bytes, so that a netmap of two
/// leases takes two pages (paging is exercised).
const PAGE_BUDGET: usize = 400;

impl FakeAddrd {
    /// Starts a fake whose static key is `[seed; 32]`, letting `user` in
    /// with `password`; logins issue leases for [`CLIENT_PREFIX`].
    pub fn start(seed: u8, user: &str, password: &[u8]) -> Self {
        let keypair = StaticKeypair::from_private([seed; 32]);
        let public_key = keypair.public();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let endpoint = socket.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState {
            user: user.to_owned(),
            password: password.to_vec(),
            login_lifetime: 3600,
            renew_lifetime: 3600,
            serial: 0,
            login_needed: false,
            netmap: Vec::new(),
            netmap_version: 1,
            requests: Vec::new(),
            lease_key: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || serve(socket, keypair, seed, &state, &stop))
        };
        FakeAddrd {
            endpoint,
            public_key,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The state, to read or change.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `[addrd]` table pinning this fake.
    pub fn config_table(&self) -> String {
        format!(
            "\n[addrd]\nendpoint = \"{}\"\npublic-key = \"{}\"\n",
            self.endpoint, self.public_key
        )
    }
}

impl Drop for FakeAddrd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    socket: UdpSocket,
    keypair: StaticKeypair,
    seed: u8,
    state: &Mutex<FakeState>,
    stop: &AtomicBool,
) {
    let mut server = AuthorityServer::new(keypair, None, [seed ^ 0x55; 32]);
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((len, src)) = socket.recv_from(&mut buf) {
            let now = startup::now();
            if let Some(incoming) = server.handle_datagram(now, src, &mut buf[..len]) {
                let response = {
                    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                    answer(&mut state, &incoming)
                };
                server
                    .respond(now, incoming.session, incoming.request_id, response)
                    .unwrap();
            }
        }
        let now = startup::now();
        if server.poll_timeout().is_some_and(|t| t <= now.instant) {
            server.handle_timeout(now);
        }
        while let Some(transmit) = server.poll_transmit() {
            let _ = socket.send_to(&transmit.contents, transmit.destination);
        }
    }
}

fn answer(state: &mut FakeState, incoming: &Incoming) -> Response {
    state.requests.push(incoming.request.kind_name());
    match &incoming.request {
        Request::Login { user, password } => {
            if *user == state.user && password.expose() == state.password.as_slice() {
                state.serial += 1;
                let key = state.lease_key.unwrap_or(incoming.client_key);
                Response::LoginOk {
                    lease: issue(key, state.serial, state.login_lifetime),
                    netmap_version: state.netmap_version,
                }
            } else {
                Response::LoginRefused {
                    retry_after_secs: 7,
                }
            }
        }
        Request::Renew { .. } if state.login_needed => Response::LoginNeeded {
            reason: LoginNeededReason::Revoked,
        },
        Request::Renew { .. } => {
            state.serial += 1;
            Response::Renewed {
                lease: issue(incoming.client_key, state.serial, state.renew_lifetime),
            }
        }
        Request::Netmap { cursor, .. } => {
            let start = usize::try_from(*cursor).unwrap().min(state.netmap.len());
            let rest = &state.netmap[start..];
            let (mut page, took, _) =
                fill_netmap_page(state.netmap_version, rest, &[], PAGE_BUDGET);
            if took < rest.len() {
                page.next_cursor = Some((start + took) as u64);
            }
            Response::Netmap(page)
        }
        Request::WhereIs { .. } => Response::NotBound,
    }
}

/// A user lease for `key` on [`CLIENT_PREFIX`].
fn issue(key: PublicKey, serial: u64, lifetime: u64) -> Vec<u8> {
    LeaseSpec {
        kind: EntityKind::User,
        prefix: CLIENT_PREFIX,
        key,
        name: "node",
        groups: &["staff"],
        serial,
        lifetime,
    }
    .sign()
}
