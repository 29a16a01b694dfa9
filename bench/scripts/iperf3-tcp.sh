#!/usr/bin/env bash
# TCP through the engine as a new user tries it (issue 15's acceptance,
# docs/USER_GUIDE.md "Containers and pods"): gen ⇄ dut ⇄ sink on veth with
# the default offloads, `iperf3 -c` from gen to an `iperf3 -s` in sink,
# through the kernel router, through the kernel router with an XDP program
# that passes every frame attached to dut's interfaces, and through
# `xdpip run -i eth0 -i eth1` (no tuning flag), taking turns ROUNDS times.
# Prints each run's rate and retransmits, the medians, the ratios to the
# kernel router, and the TCP/UDP checksum errors sink's kernel counted
# (nstat).
#
# The middle system isolates what attaching any XDP program to a veth
# costs TCP: veth then turns off the software GSO of its peer
# (veth_fix_features), so gen's stack segments every 64 KiB burst into
# MTU-sized frames before they cross the veth, where without XDP the
# kernel router forwards them whole. Exit status 1 when sink
# counted a checksum error, when a run moved no byte, or when the engine
# did not forward the traffic; 2 when it cannot run.
#
#   cargo build --release -p xdpip && bench/scripts/iperf3-tcp.sh [target/release/xdpip] [SECONDS] [ROUNDS]
#
# Needs root, iproute2, iperf3, nstat and python3.
set -euo pipefail
XDPIP=${1:-target/release/xdpip}
SECS=${2:-5}
ROUNDS=${3:-3}
[ -x "$XDPIP" ] || { echo "iperf3-tcp: no $XDPIP (cargo build --release -p xdpip)" >&2; exit 2; }
for t in ip iperf3 nstat python3 clang; do
    command -v "$t" >/dev/null || { echo "iperf3-tcp: $t is missing" >&2; exit 2; }
done
. "$(dirname "$0")/topology.sh"
topology

ip netns exec $K iperf3 -s -D -I "$WORK/iperf3.pid" >/dev/null
trap 'kill $(cat "$WORK/iperf3.pid" 2>/dev/null) 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 50); do
    ip netns exec $K ss -ltn | grep -q ':5201 ' && break
    sleep 0.1
done
ip netns exec $G ping -c 1 -W 2 -q 10.2.0.2 >/dev/null

cat > "$WORK/pass.bpf.c" <<'C'
#include <linux/bpf.h>
__attribute__((section("xdp"), used)) int pass(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] __attribute__((section("license"), used)) = "GPL";
C
clang -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu -c "$WORK/pass.bpf.c" -o "$WORK/pass.bpf.o"
xdp_pass() {
    local i
    for i in eth0 eth1; do ip -n $D link set dev $i xdp "$@"; done
}

csum_errors() {
    ip netns exec $K nstat -az TcpInCsumErrors UdpInCsumErrors \
        | awk '/CsumErrors/ {s += $2} END {print s + 0}'
}
# One run: prints "Mbit/s retransmits".
run() {
    ip netns exec $G iperf3 -c 10.2.0.2 -t "$SECS" --json \
        | python3 -c 'import json,sys
r = json.load(sys.stdin)
e = r["end"]
print("%.1f %d" % (e["sum_received"]["bits_per_second"] / 1e6, e["sum_sent"].get("retransmits", 0)))'
}
efwd() { "$XDPIP" stats --socket "$WORK/ctl" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mib"]["ForwDatagrams"])'; }

errors0=$(csum_errors)
kernel=() pass=() engine=() fail=0
for r in $(seq "$ROUNDS"); do
    set -- $(run)
    echo "round $r kernel router:            $1 Mbit/s, $2 retransmits"
    kernel+=("$1")
    xdp_pass obj "$WORK/pass.bpf.o" sec xdp
    set -- $(run)
    xdp_pass off
    echo "round $r kernel router + XDP_PASS: $1 Mbit/s, $2 retransmits"
    pass+=("$1")
    start_engine
    before=$(efwd)
    set -- $(run)
    fwd=$(($(efwd) - before))
    stop_engine
    echo "round $r xdpip:                    $1 Mbit/s, $2 retransmits ($fwd frames forwarded by the engine)"
    engine+=("$1")
    [ "$fwd" -gt 1000 ] || { echo "the engine did not forward the stream"; fail=1; }
done
errors=$(($(csum_errors) - errors0))
python3 - "${kernel[*]}" "${pass[*]}" "${engine[*]}" <<'PY'
import statistics, sys
k, p, e = (statistics.median(float(x) for x in a.split()) for a in sys.argv[1:4])
print(f"median Mbit/s: kernel router {k:.1f}, kernel router + XDP_PASS {p:.1f}, xdpip {e:.1f}")
print(f"ratios: xdpip / kernel router {e / k:.3f}, xdpip / kernel router + XDP_PASS {e / p:.3f}, "
      f"kernel router + XDP_PASS / kernel router {p / k:.3f}")
PY
echo "checksum errors counted by sink (TcpInCsumErrors + UdpInCsumErrors): $errors"
[ "$errors" = 0 ] || fail=1
for x in "${kernel[@]}" "${pass[@]}" "${engine[@]}"; do
    [ "${x%.*}" -gt 0 ] || { echo "a run moved nothing"; fail=1; }
done
if [ $fail = 0 ]; then echo "iperf3-tcp: all checks passed"; else echo "iperf3-tcp: FAILED"; fi
exit $fail
