//! End-to-end tests in Linux network namespaces (real daemons, TUN devices,
//! LDAP, NAT). The namespace tests arrive with the daemons (issue #6); what
//! is here already are the fixtures they and other crates' tests share:
//! [`slapd`], a private OpenLDAP server with the permanet schema and the
//! example organisation.

pub mod slapd;

/// Whether the tests run as root (effective uid 0), read from
/// `/proc/self/status` (no unsafe code). Namespace and package-dependent
/// tests skip with a message when not root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Report a test as skipped and why. The line goes straight to the
/// process's stderr, past the test harness's output capture, so that
/// `scripts/test-all.sh` counts it: the test itself then returns and
/// counts as passed in cargo's own summary, and the script moves it from
/// passed to skipped (it counts lines containing `permanet-test-skipped:`).
pub fn skip(test: &str, reason: &str) {
    use std::io::Write as _;
    // One write of one line: not interleaved with other tests' lines.
    let line = format!("\npermanet-test-skipped: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
