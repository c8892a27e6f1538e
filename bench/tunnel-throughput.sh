#!/usr/bin/env bash
# Single-flow TCP throughput through tunneld, through boringtun and over the
# bare veth, measured in one run in the same topology (issue #3, DESIGN §15).
#
#   sudo bench/tunnel-throughput.sh [SECONDS]        (default 10)
#
#   +--------- netns A ---------+          +--------- netns B ---------+
#   | iperf3 -c                 |          | iperf3 -s                 |
#   | (a) va 10.77.0.1/24 ======|== veth ==|== vb 10.77.0.2/24   (a)   |
#   | (b) wga fd00:77:b::1 <----|-- UDP ---|--> wgb fd00:77:b::2   (b)   |
#   |     boringtun-cli         |  :51820  |     boringtun-cli         |
#   | (c) tun0 2002:a4d:1:1::a <|-- UDP ---|-> 2002:a4d:2:1::1     (c)   |
#   |     tunneld (TUN mode)    |  :4500   |     tunneld (TUN mode)    |
#   +---------------------------+          +---------------------------+
#
# Each path gets one iperf3 TCP flow A -> B for SECONDS, then the reverse
# (-R, B -> A). The script prints the receiver's Mbit/s of each run and the
# ratios tunneld/boringtun and tunneld/veth. Root only (namespaces, TUN);
# not run by CI: its figures depend on the machine.
#
# Needs: iproute2, iperf3, wg (Debian's wireguard-tools), boringtun-cli
# (`cargo install boringtun-cli`) on PATH or in $BORINGTUN, and a release
# tunneld and the helper that writes its keys, leases and configs
# (tunneld/examples/bench_identities.rs): the script builds both in release
# mode first unless TUNNELD_PREBUILT is set (then it takes $TUNNELD and
# $BENCH_IDENTITIES as they are).
#
# Cleans up on any exit: processes it started (by PID), the namespaces
# (which takes their interfaces with them) and its temporary directory.
set -euo pipefail

SECONDS_PER_RUN=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TUNNELD=${TUNNELD:-$ROOT/target/release/tunneld}
BENCH_IDENTITIES=${BENCH_IDENTITIES:-$ROOT/target/release/examples/bench_identities}
BORINGTUN=${BORINGTUN:-$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")}
MTU=1420
NS_A=ptb-a-$$
NS_B=ptb-b-$$

if [ "$(id -u)" != 0 ]; then
    echo "tunnel-throughput.sh: needs root (network namespaces, TUN devices)" >&2
    exit 2
fi
for tool in ip iperf3 wg; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
[ -x "$BORINGTUN" ] || { echo "missing: boringtun-cli (cargo install boringtun-cli)" >&2; exit 2; }

if [ -z "${TUNNELD_PREBUILT:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet -p tunneld --bin tunneld --example bench_identities)
fi
for binary in "$TUNNELD" "$BENCH_IDENTITIES"; do
    [ -x "$binary" ] || { echo "missing: $binary" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/tunnel-throughput.XXXXXX)
chmod 700 "$WORK"
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$NS_A" 2>/dev/null || true
    ip netns del "$NS_B" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_a() { ip netns exec "$NS_A" "$@"; }
in_b() { ip netns exec "$NS_B" "$@"; }

# Wait until "$@" succeeds, at most 10 s.
wait_for() {
    local i
    for i in $(seq 100); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "timed out waiting for: $*" >&2
    return 1
}

# The receiver's Mbit/s of one iperf3 run from A to server address $1
# (extra iperf3 arguments after it).
iperf() {
    local server=$1
    shift
    in_a iperf3 -c "$server" -t "$SECONDS_PER_RUN" -f m "$@" |
        awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }'
}

# User + system CPU seconds the processes $@ have used so far (all their
# threads), from /proc/PID/stat fields 14 and 15.
cpu_seconds() {
    local pid ticks=0
    for pid in "$@"; do
        ticks=$((ticks + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

# Measure one path: forward, then reverse. Sets FWD and REV (Mbit/s) and,
# given the PIDs of the path's daemons, CPU_FWD and CPU_REV: the daemons'
# CPU seconds per GB carried.
measure() {
    local server=$1 pid before after
    shift
    # Not through in_b: a backgrounded function is a subshell, and $! would
    # be its PID, not iperf3's (ip netns exec execs the command).
    ip netns exec "$NS_B" iperf3 -s -B "$server" >"$WORK/iperf3-server.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for in_b sh -c "ss -Hltn 'sport = :5201' | grep -q ."
    before=$(cpu_seconds "$@")
    FWD=$(iperf "$server")
    FWD=${FWD:-0}
    after=$(cpu_seconds "$@")
    CPU_FWD=$(per_gb "$before" "$after" "$FWD")
    REV=$(iperf "$server" -R)
    REV=${REV:-0}
    before=$(cpu_seconds "$@")
    CPU_REV=$(per_gb "$after" "$before" "$REV")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

# CPU seconds per GB: CPU seconds from $1 to $2 over a run at $3 Mbit/s.
per_gb() {
    awk -v a="$1" -v b="$2" -v r="$3" -v t="$SECONDS_PER_RUN" \
        'BEGIN { gb = r * t / 8000; if (gb > 0) printf "%.2f", (b - a) / gb; else print "n/a" }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# --- topology ---------------------------------------------------------------
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add va netns "$NS_A" type veth peer name vb netns "$NS_B"
in_a ip link set lo up
in_b ip link set lo up
in_a ip addr add 10.77.0.1/24 dev va
in_b ip addr add 10.77.0.2/24 dev vb
in_a ip link set va up
in_b ip link set vb up
wait_for in_a ping -c1 -W1 10.77.0.2

echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r)"
echo "each run: one TCP flow, ${SECONDS_PER_RUN} s; inner MTU ${MTU} for both tunnels"

# --- (a) veth -----------------------------------------------------------------
measure 10.77.0.2
VETH_FWD=$FWD VETH_REV=$REV
echo "veth:      forward ${VETH_FWD} Mbit/s, reverse ${VETH_REV} Mbit/s"

# --- (b) boringtun ------------------------------------------------------------
(umask 077 && wg genkey >"$WORK/a.key" && wg genkey >"$WORK/b.key")
A_PUB=$(wg pubkey <"$WORK/a.key")
B_PUB=$(wg pubkey <"$WORK/b.key")
wg_conf() { # own key file, peer public key, peer endpoint, peer inner address
    umask 077
    printf '[Interface]\nPrivateKey = %s\nListenPort = 51820\n\n[Peer]\nPublicKey = %s\nEndpoint = %s:51820\nAllowedIPs = %s/128\n' \
        "$(cat "$1")" "$2" "$3" "$4"
}
wg_conf "$WORK/a.key" "$B_PUB" 10.77.0.2 fd00:77:b::2 >"$WORK/wga.conf"
wg_conf "$WORK/b.key" "$A_PUB" 10.77.0.1 fd00:77:b::1 >"$WORK/wgb.conf"
BT_PIDS=()
for side in a b; do
    WG_LOG_FILE="$WORK/boringtun-$side.log" \
        ip netns exec "ptb-$side-$$" "$BORINGTUN" --foreground --disable-drop-privileges "wg$side" \
        >"$WORK/boringtun-$side.out" 2>&1 &
    PIDS+=("$!")
    BT_PIDS+=("$!")
done
wait_for in_a ip link show wga
wait_for in_b ip link show wgb
wait_for in_a wg show wga
wait_for in_b wg show wgb
in_a wg setconf wga "$WORK/wga.conf"
in_b wg setconf wgb "$WORK/wgb.conf"
in_a ip link set wga mtu "$MTU" up
in_b ip link set wgb mtu "$MTU" up
in_a ip addr add fd00:77:b::1/64 dev wga nodad
in_b ip addr add fd00:77:b::2/64 dev wgb nodad
wait_for in_a ping -6 -c1 -W1 fd00:77:b::2
measure fd00:77:b::2 "${BT_PIDS[@]}"
BT_FWD=$FWD BT_REV=$REV
echo "boringtun: forward ${BT_FWD} Mbit/s, reverse ${BT_REV} Mbit/s;" \
    "both daemons' CPU per GB carried: ${CPU_FWD} s forward, ${CPU_REV} s reverse"
kill "${BT_PIDS[@]}"
wait "${BT_PIDS[@]}" 2>/dev/null || true

# --- (c) tunneld ----------------------------------------------------------------
"$BENCH_IDENTITIES" "$WORK/tunneld" 10.77.0.2 10.77.0.1 "$MTU" >"$WORK/addresses"
read -r TD_SERVER TD_CLIENT <"$WORK/addresses"
TD_PIDS=()
tunneld_start() { # namespace, node directory
    ip netns exec "$1" "$TUNNELD" run --config "$2/tunneld.toml" --socket "$2/tunneld.sock" \
        2>"$2/stderr.log" &
    PIDS+=("$!")
    TD_PIDS+=("$!")
    wait_for grep -q "data plane running" "$2/stderr.log" || {
        cat "$2/stderr.log" >&2
        return 1
    }
}
tunneld_start "$NS_B" "$WORK/tunneld/server"
tunneld_start "$NS_A" "$WORK/tunneld/client"
wait_for in_a ping -6 -c1 -W1 "$TD_SERVER"
measure "$TD_SERVER" "${TD_PIDS[@]}"
TD_FWD=$FWD TD_REV=$REV
echo "tunneld:   forward ${TD_FWD} Mbit/s, reverse ${TD_REV} Mbit/s;" \
    "both daemons' CPU per GB carried: ${CPU_FWD} s forward, ${CPU_REV} s reverse"
sed -n 's/.*UDP socket ready for batched I\/O/  tunneld UDP socket:/p' "$WORK/tunneld/server/stderr.log"

echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "ratios (forward, reverse):"
echo "  boringtun / veth:  $(ratio "$BT_FWD" "$VETH_FWD"), $(ratio "$BT_REV" "$VETH_REV")"
echo "  tunneld / boringtun: $(ratio "$TD_FWD" "$BT_FWD"), $(ratio "$TD_REV" "$BT_REV")"
echo "  tunneld / veth:    $(ratio "$TD_FWD" "$VETH_FWD"), $(ratio "$TD_REV" "$VETH_REV")"
