//! What the tests of the login channel and the home agent share: a
//! [`Terminal`] (an `AuthorityClient` over a UDP socket on loopback), the
//! [`LoginDaemon`] (a running `addrd run` and its login channel) and the
//! [`Setup`] helpers that read the daemon's keys and status.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use overlay_proto::authority::{
    AuthorityClient, ClientConfig, ClientError, ClientTimers, Password, Request, Response,
};
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{AuthorityKey, SignedLease};
use overlay_proto::time::{Now, UnixTime};
use serde_json::Value;

use super::{text, Daemon, Setup, DEADLINE};

impl Setup {
    pub fn static_public(&self) -> PublicKey {
        let private =
            PublicKey::from_str(text(&fs::read(self.path("addrd.key")).unwrap()).trim()).unwrap();
        StaticKeypair::from_private(private.0).public()
    }

    pub fn status(&self) -> Value {
        let out = self.addrd_ok(&["status"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn address_of(&self, name: &str) -> String {
        let out = self.addrd_ok(&["show", name, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["address"].as_str().unwrap().to_owned()
    }

    pub fn audit(&self) -> String {
        fs::read_to_string(self.path("audit.log")).unwrap_or_default()
    }

    /// `addrd run`, and the login channel it bound.
    pub fn start_login(&self) -> LoginDaemon {
        let daemon = self.start();
        let channel = self.status()["listen"].as_str().unwrap().parse().unwrap();
        LoginDaemon { daemon, channel }
    }
}

/// A running `addrd run` and its login channel.
pub struct LoginDaemon {
    /// The daemon.
    pub daemon: Daemon,
    /// Its login channel.
    pub channel: SocketAddr,
}

/// The common daemon's log, waits and signals.
impl std::ops::Deref for LoginDaemon {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl LoginDaemon {
    /// SIGTERM and wait for a clean exit.
    pub fn stop(self) {
        self.daemon.stop();
    }
}

pub fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: UnixTime::from_duration(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap(),
        ),
    }
}

/// A terminal: an `AuthorityClient` over a UDP socket on loopback.
pub struct Terminal {
    /// The authority-channel client.
    pub client: AuthorityClient,
    /// Its socket.
    pub socket: UdpSocket,
    /// Its key pair.
    pub keypair: StaticKeypair,
}

impl Terminal {
    pub fn new(setup: &Setup, server: SocketAddr) -> Terminal {
        Terminal::with_key(
            setup,
            server,
            StaticKeypair::generate(&mut rand::rngs::OsRng),
        )
    }

    pub fn with_key(setup: &Setup, server: SocketAddr, keypair: StaticKeypair) -> Terminal {
        let config = ClientConfig {
            keypair: keypair.clone(),
            server_key: setup.static_public(),
            server,
            psk: None,
            timers: ClientTimers::default(),
        };
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Terminal {
            client: AuthorityClient::new(config, seed, now()),
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
            keypair,
        }
    }

    pub fn key(&self) -> PublicKey {
        self.keypair.public()
    }

    /// Send `request` and drive the client until its answer.
    pub fn ask(&mut self, request: Request) -> Result<Response, ClientError> {
        let id = self.client.send(now(), request);
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            while let Some(t) = self.client.poll_transmit() {
                self.socket.send_to(&t.contents, t.destination).unwrap();
            }
            while let Some((rid, answer)) = self.client.poll_response() {
                if rid == id {
                    return answer;
                }
            }
            assert!(start.elapsed() < DEADLINE, "no answer");
            self.socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            if let Ok((len, src)) = self.socket.recv_from(&mut buf) {
                self.client.handle_datagram(now(), src, &mut buf[..len]);
            }
            self.client.handle_timeout(now());
        }
    }

    pub fn login(&mut self, user: &str, password: &str) -> Result<Response, ClientError> {
        self.ask(Request::Login {
            user: user.to_owned(),
            password: Password::from_slice(password.as_bytes()),
        })
    }

    /// Log in as `user`; the lease of the answer, signed by `authority`.
    pub fn login_lease(
        &mut self,
        user: &str,
        password: &str,
        authority: &AuthorityKey,
    ) -> SignedLease {
        lease_of(&self.login(user, password).unwrap(), authority)
    }

    /// Ask to renew `lease`; the answer.
    pub fn renew(&mut self, lease: &SignedLease) -> Response {
        self.ask(Request::Renew {
            lease: lease.as_bytes().to_vec(),
        })
        .unwrap()
    }
}

/// The verified lease of a `LoginOk` or `Renewed` answer.
pub fn lease_of(response: &Response, authority: &AuthorityKey) -> SignedLease {
    let bytes = match response {
        Response::LoginOk { lease, .. } | Response::Renewed { lease } => lease,
        other => panic!("no lease in {other:?}"),
    };
    SignedLease::verify(bytes, authority, now().unix).unwrap()
}
