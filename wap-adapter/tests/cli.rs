//! The `wap-adapter` command line as an operator meets it: `check-config`
//! on the reference config and on broken ones, `run` on a config whose
//! listener cannot be bound.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_wap-adapter");

fn wap_adapter(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_accepts_the_reference_config() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/wap-adapter.toml");
    let out = wap_adapter(&["check-config", reference.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with(": valid (2 applications)\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_config_names_the_file_the_key_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (config, expected) in [
        (
            "[[applications]]\nname = \"wiki\"\naddress = \"2002::10\"\nbackend.url = \"ftp://x/\"\n",
            "applications[0].backend.url: \"ftp://x/\": only http:// backends are supported",
        ),
        (
            "[[applications]]\nname = \"wiki\"\naddress = \"2002::10\"\nproxy-protocol-listen = \"0.0.0.0:8080\"\nbackend.url = \"http://x/\"\n",
            "applications[0].proxy-protocol-listen: 0.0.0.0:8080 is not a loopback address",
        ),
        ("log-level = \"loud\"\n", "unknown variant `loud`"),
    ] {
        std::fs::write(&path, config).unwrap();
        let out = wap_adapter(&["check-config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{config}");
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with(&format!("{}: ", path.display())), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    let out = wap_adapter(&["check-config", "/nonexistent/wap-adapter.toml"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn run_fails_when_a_listener_cannot_be_bound() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let path = dir.path().join("wap-adapter.toml");
    std::fs::write(
        &path,
        format!("[[applications]]\nname = \"wiki\"\naddress = \"2002::10\"\nproxy-protocol-listen = \"{address}\"\nbackend.url = \"http://127.0.0.1:1/\"\n"),
    )
    .unwrap();
    let out = wap_adapter(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("application wiki: HTTP listener {address}")),
        "{stderr}"
    );
}
