//! Shared by the tests that check decks against the WML 1.3 DTD
//! (`tests/dtd/wml13.dtd`) with xmllint, where it is installed.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

const XMLLINT: &str = "/usr/bin/xmllint";

/// xmllint's verdict on `deck` (written into `dir`) against the WML 1.3
/// DTD: its complaints if invalid; `None` without xmllint.
pub fn xmllint_valid(dir: &Path, deck: &str) -> Option<Result<(), String>> {
    if !Path::new(XMLLINT).exists() {
        return None;
    }
    let file = dir.join("deck.wml");
    std::fs::write(&file, deck).unwrap();
    let dtd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dtd/wml13.dtd");
    let out = Command::new(XMLLINT)
        .args(["--nonet", "--noout", "--dtdvalid"])
        .arg(dtd)
        .arg(&file)
        .output()
        .unwrap();
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}
