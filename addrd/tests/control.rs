//! The control socket in-process: every request, malformed requests (an
//! error answer and a counter, the socket keeps answering), the socket's
//! mode, a live socket not stolen, a stale one replaced.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use addrd::alloc::{AllocationKey, Allocator};
use addrd::backend::Backend;
use addrd::bindings::{BindingCache, BindingCacheConfig};
use addrd::control::{self, BindError, Context, Response};
use addrd::embedded::EmbeddedDirectory;
use addrd::issuer::{IssuePolicy, Issuer};
use addrd::revocations::Revocations;
use addrd::service::Service;
use addrd::state::State;
use overlay_proto::addr::{AddressPlan, Ipv4Policy, OverlayPrefix, DEFAULT_USER_SUBNET_ID};
use overlay_proto::handshake::PublicKey;
use overlay_proto::lease::LeaseAuthority;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const EXAMPLE: &str = include_str!("../../configs/ldap/example-org.ldif");

struct Fixture {
    dir: tempfile::TempDir,
    context: Arc<Context>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fixture {
    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("run/addrd.sock")
    }

    async fn ask(&self, request: &str) -> Response {
        control::request(&self.socket(), request).await.unwrap()
    }

    /// Send raw bytes; the answer's text.
    async fn raw(&self, bytes: &[u8]) -> String {
        let mut stream = UnixStream::connect(self.socket()).await.unwrap();
        // The server may answer (and close) before reading everything.
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
        let mut text = String::new();
        match stream.read_to_string(&mut text).await {
            Ok(_) => text,
            // Closed by the server with our bytes unread (too long): the
            // kernel resets the connection, and the answer may be lost.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
            Err(e) => panic!("{e}"),
        }
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ldif = dir.path().join("org.ldif");
    std::fs::write(&ldif, EXAMPLE).unwrap();
    let (directory, _) = EmbeddedDirectory::open(&ldif, &dir.path().join("a.redb"))
        .await
        .unwrap();
    let state = State::open(&dir.path().join("state.redb")).unwrap();
    let plan = AddressPlan::new(
        OverlayPrefix::ula_from_global_id([1, 2, 3, 4, 5]),
        DEFAULT_USER_SUBNET_ID,
    )
    .unwrap();
    let issuer = Issuer::new(
        LeaseAuthority::from_seed([3; 32]),
        Allocator::new(
            plan,
            AllocationKey::from_bytes([9; 32]),
            Ipv4Policy::default(),
        ),
        IssuePolicy {
            lifetime: std::time::Duration::from_secs(3600),
            max_session_age: std::time::Duration::from_secs(43200),
        },
        state.clone(),
    )
    .unwrap();
    let service = Arc::new(Service::new(
        Backend::Embedded(directory),
        issuer,
        Revocations::Local(state),
    ));
    let context = Arc::new(Context {
        service,
        bindings: Arc::new(Mutex::new(BindingCache::new(BindingCacheConfig::default()))),
        zone: None,
        static_public_key: PublicKey([7; 32]),
        listen: "0.0.0.0:4500".into(),
        dns_listen: Vec::new(),
        started: Instant::now(),
        bad_requests: AtomicU64::new(0),
        login: None,
        audit: Some(Arc::new(
            addrd::audit::AuditLog::open(&dir.path().join("audit.log")).unwrap(),
        )),
    });
    let socket = control::bind(&dir.path().join("run/addrd.sock"))
        .await
        .unwrap();
    let served = Arc::clone(&context);
    let server = tokio::spawn(async move { control::serve(&socket, served).await });
    Fixture {
        dir,
        context,
        server,
    }
}

#[tokio::test]
async fn every_request_is_answered() {
    let f = fixture().await;
    let mode = std::fs::metadata(f.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(f.dir.path().join("run"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);

    let Response::Status(status) = f.ask("status").await else {
        panic!("status")
    };
    assert_eq!(status.backend, "embedded");
    assert_eq!(status.static_public_key, PublicKey([7; 32]).to_string());
    let Response::Entities { entities } = f.ask("users").await else {
        panic!("users")
    };
    assert_eq!(entities.len(), 8);
    assert_eq!(
        f.ask("bindings").await,
        Response::Bindings {
            bindings: Vec::new()
        }
    );
    assert_eq!(f.ask("revoke user bob").await, Response::Done);
    // Audited, with the kind and the name.
    let audit = std::fs::read_to_string(f.dir.path().join("audit.log")).unwrap();
    let line: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(line["event"], "revoked", "{audit}");
    assert_eq!(line["kind"], "user");
    assert_eq!(line["user"], "bob");
    let key = PublicKey([0x21; 32]).to_string();
    let Response::Lease { .. } = f.ask(&format!("issue-lease system app1 {key} 600")).await else {
        panic!("lease")
    };
    for request in [
        "revoke user nobody",
        "revoke martian bob",
        "issue-lease system app1 notakey",
        &format!("issue-lease system app1 {key} 0"),
        &format!("issue-lease system app1 {key} 9999999"),
    ] {
        let answer = f.ask(request).await;
        assert!(
            matches!(answer, Response::Error { .. }),
            "{request}: {answer:?}"
        );
    }
    let login = |user: &str, password: &str| {
        let body = format!("{user}\n{password}\n");
        let socket = f.socket();
        async move {
            control::request_with_body(&socket, "check-login", body.as_bytes())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        login("alice", "alice-lab-password").await,
        Response::Login { accepted: true }
    );
    assert_eq!(
        login("alice", "x").await,
        Response::Login { accepted: false }
    );
    assert_eq!(
        login("alice", "").await,
        Response::Login { accepted: false }
    );
}

#[tokio::test]
async fn malformed_requests_get_errors_and_are_counted() {
    let f = fixture().await;
    // Too long: refused and counted (the answer may be lost to the reset
    // the kernel sends for the unread rest).
    let answer = f.raw(&vec![b'a'; 100_000]).await;
    if !answer.is_empty() {
        let answer: Response = serde_json::from_str(&answer).unwrap();
        assert!(matches!(answer, Response::Error { .. }), "{answer:?}");
    }
    for bytes in [
        &b"hello\n"[..],
        b"\xff\xfe\n",
        &vec![b'b'; 1000],
        b"users extra words\n",
        b"check-login\nonly-a-user",
    ] {
        let answer: Response = serde_json::from_str(&f.raw(bytes).await).unwrap();
        assert!(matches!(answer, Response::Error { .. }), "{answer:?}");
    }
    // An empty connection (a probe) gets nothing and counts nothing.
    assert_eq!(f.raw(b"").await, "");
    let Response::Status(status) = f.ask("status").await else {
        panic!("status")
    };
    assert_eq!(status.bad_requests, 5);
    assert_eq!(
        f.context
            .bad_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
}

#[tokio::test]
async fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() {
    let f = fixture().await;
    let err = control::bind(&f.socket()).await.unwrap_err();
    assert!(matches!(err, BindError::InUse { .. }), "{err}");
    f.server.abort();
    // The aborted task dropped the socket (removing the file); leave a
    // stale socket file behind instead.
    let stale = f.dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let socket = control::bind(&stale).await.unwrap();
    assert!(stale.exists());
    drop(socket);
    assert!(!stale.exists());
    let file = f.dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        control::bind(&file).await.unwrap_err(),
        BindError::NotASocket(_)
    ));
}
