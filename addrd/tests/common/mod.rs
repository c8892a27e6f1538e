//! What addrd's integration tests that run the `addrd` binary share: a
//! [`Setup`] (a temp directory with the reference config pointed at test
//! paths and loopback ports, the example LDIF and fresh keys from `addrd
//! genkey`) and a running [`Daemon`] to wait on, signal and stop; and
//! [`ldap`], the LDAP backend's helpers for the tests against slapd. A
//! test binary includes this module with `#[allow(dead_code)]`: each uses
//! only part of it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

pub mod ldap;
pub mod terminal;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netns_tests::slapd::{Slapd, BASE_DN, SERVICE_DN};
use netns_tests::wait_until;
use overlay_proto::handshake::PublicKey;
use overlay_proto::lease::AuthorityKey;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_addrd");
/// The reference config, `configs/addrd.toml`.
pub const REFERENCE: &str = include_str!("../../../configs/addrd.toml");
/// The example organisation, `configs/ldap/example-org.ldif`.
pub const EXAMPLE: &str = include_str!("../../../configs/ldap/example-org.ldif");
/// How long any wait on the daemon may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// `bytes` as UTF-8 text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The reference config switched to the LDAP backend of `slapd` (the
/// service account, a 5 s timeout).
pub fn ldap_reference(slapd: &Slapd) -> String {
    let directory = format!(
        "[directory]\nbackend = \"ldap\"\nurl = \"{}\"\nbind-dn = \"{SERVICE_DN}\"\n\
         bind-password-file = \"{}\"\nbase-dn = \"{BASE_DN}\"\ntimeout = 5\n",
        slapd.url(),
        slapd.service_password_file().display()
    );
    let reference = REFERENCE.split("[directory]").next().unwrap();
    format!("{reference}{directory}")
}

/// A directory with a config made from a reference (the control socket
/// in the directory, every `listen` on a free loopback port, and each
/// line starting with one of `edits`' prefixes replaced by its line), the
/// example LDIF where the config expects it, and three fresh key files
/// made by `addrd genkey`.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// From `reference` with the test paths and `edits` (prefix, line).
    pub fn with_edits(reference: &str, edits: &[(&str, &str)]) -> Setup {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        let socket = setup.path("run/addrd.sock");
        let config: String = reference
            .lines()
            .map(|l| {
                if l.starts_with("control-socket") {
                    format!("control-socket = \"{}\"\n", socket.display())
                } else if l.starts_with("listen = \"") {
                    "listen = \"127.0.0.1:0\"\n".to_owned()
                } else if l.starts_with("listen = [") {
                    "listen = [\"127.0.0.1:0\"]\n".to_owned()
                } else if let Some((_, line)) = edits.iter().find(|(p, _)| l.starts_with(p)) {
                    format!("{line}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        setup.write("addrd.toml", config.as_bytes(), 0o644);
        setup.write("ldap/example-org.ldif", EXAMPLE.as_bytes(), 0o644);
        for key in ["addrd.key", "authority.key", "allocation.key"] {
            let out = setup.addrd(&["genkey"], b"");
            assert!(out.status.success());
            setup.write(key, &out.stdout, 0o600);
        }
        setup
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The config file.
    pub fn config(&self) -> PathBuf {
        self.path("addrd.toml")
    }

    /// Write `bytes` to `name` (parents made) with permissions `mode`.
    pub fn write(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Run `addrd ARGS --config CONFIG` with `stdin`.
    pub fn addrd(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `addrd ARGS --config CONFIG` with no input, which must succeed.
    pub fn addrd_ok(&self, args: &[&str]) -> Output {
        let out = self.addrd(args, b"");
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    }

    /// `addrd issue-lease NAME --public-key-file KEY --out OUT EXTRA...`.
    pub fn issue_lease(&self, name: &str, key: &Path, out: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "issue-lease",
            name,
            "--public-key-file",
            key.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.addrd(&args, b"")
    }

    /// The authority key, from `addrd authority-key`.
    pub fn authority(&self) -> AuthorityKey {
        let out = self.addrd_ok(&["authority-key"]);
        let key = PublicKey::from_str(text(&out.stdout).trim()).unwrap();
        AuthorityKey::from_bytes(&key.0).unwrap()
    }

    /// `addrd run` on this directory, once it logs "addrd running".
    pub fn start(&self) -> Daemon {
        Daemon::start(self)
    }
}

/// A running `addrd run`; killed (by PID) and reaped on drop if still
/// running.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Spawn `addrd run` on `setup` and wait for "addrd running".
    pub fn start(setup: &Setup) -> Daemon {
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(setup.config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let daemon = Daemon { child, log };
        daemon.wait_for_log("addrd running", 1);
        daemon
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until `needle` appears `count` times in the log.
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        wait_until(
            &format!("{needle:?} (x{count}) in the log"),
            DEADLINE,
            || self.log().matches(needle).count() >= count,
            || self.log(),
        );
    }

    /// Send `signal` to the daemon (by PID).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGTERM and wait for a clean exit; the whole log.
    pub fn stop(mut self) -> String {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let log = Arc::clone(&self.log);
        let mut status = None;
        wait_until(
            "addrd to exit after SIGTERM",
            DEADLINE,
            || {
                status = self.child.try_wait().unwrap();
                status.is_some()
            },
            || format!("still running:\n{}", log.lock().unwrap()),
        );
        let status = status.unwrap();
        assert!(status.success(), "{status}:\n{}", self.log());
        // The reader thread sees EOF once the process is gone.
        let end = std::time::Instant::now() + DEADLINE;
        while !self.log().contains("addrd stopped") && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
