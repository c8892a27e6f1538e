//! Shared by the tests that run kannel's fakewap (Debian package
//! kannel-extras): where it is, whether it is there, and a guard that
//! kills it (or any child) if a test fails before it exits.
#![allow(dead_code)]

use std::path::Path;
use std::process::Child;

pub const FAKEWAP: &str = "/usr/lib/kannel/test/fakewap";

/// Whether fakewap is installed; prints the skip line for `test` if not.
pub fn have_fakewap(test: &str) -> bool {
    if Path::new(FAKEWAP).exists() {
        true
    } else {
        netns_tests::skip(
            test,
            &format!("{FAKEWAP} not installed (Debian package kannel-extras)"),
        );
        false
    }
}

/// A child process (fakewap, a daemon), killed and reaped when the test
/// ends (also when it fails) unless it exited.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
