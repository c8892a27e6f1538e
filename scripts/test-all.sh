#!/usr/bin/env bash
# The whole permanet test suite, as the README's second command and CI run it.
#
#   formatting, clippy (warnings are errors), every unit, integration and
#   deterministic-simulation test, the fuzz-corpus replays, a type check of
#   the fuzz targets, and, as root, the network-namespace tests.
#
# As root it first installs the Debian packages the tests need (set
# PERMANET_NO_APT=1 to skip that). Without root the namespace tests skip
# with a message saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" = 0 ] && [ -z "${PERMANET_NO_APT:-}" ]; then
    # iproute2: namespaces, veth, addresses; iputils-ping: ping -6 through
    # the TUN-mode tunnels (tunneld/tests/netns.rs); slapd and ldap-utils:
    # the LDAP backend's tests run a private slapd (netns-tests/src/slapd.rs)
    # on a random localhost port; nftables: the carriers' NAT and tshark:
    # the on-the-wire capture in the system tests (netns-tests/tests/system.rs);
    # kannel-extras: fakewap, the WAP client simulator, and socat: its IPv4 to
    # IPv6 bridge into the overlay (the WAP scenario there); chromium: the
    # headless browser of netns-tests/tests/browser.rs.
    packages=(iproute2 iputils-ping slapd ldap-utils kannel kannel-extras libwbxml2-utils libxml2-utils nftables tshark socat chromium)
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "type-check the fuzz targets"
cargo check --manifest-path fuzz/Cargo.toml --locked --quiet

step "cargo test (unit, integration, simulation, corpus replays, namespace tests)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
# A test that skips itself at run time (no root, slapd missing) returns and
# counts as passed in cargo's line; it also prints one line containing
# `permanet-test-skipped:` (netns_tests::skip), which moves it to skipped.
awk '/^test result:/ { for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     /permanet-test-skipped:/ { k++ }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p - k, f, s + k }' "$log"
exit "$status"
