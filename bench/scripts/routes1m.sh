#!/usr/bin/env bash
# The engine with 1,000,000 routes (issue 12's acceptance, docs/PERFORMANCE.md
# "Control plane: 1,000,000 routes"): dut holds 1,000,000 random /24 routes
# via sink, loaded with `ip -batch`. Prints the engine's start-up time
# (process start to its `started` event) and resident memory (VmRSS 5 s
# after start, pings flowing; VmHWM), then checks that a ping goes through
# the engine (its ForwDatagrams grows, the kernel's does not) and that
# traceroute shows the same hops through the engine as through the kernel
# router. Exit status 1 when a check fails, 2 when it cannot run.
#
#   cargo build --release -p xdpip && bench/scripts/routes1m.sh [target/release/xdpip]
#
# Needs root, iproute2, iputils-ping, traceroute, bc and python3.
set -euo pipefail
XDPIP=${1:-target/release/xdpip}
[ -x "$XDPIP" ] || { echo "routes1m: no $XDPIP (cargo build --release -p xdpip)" >&2; exit 2; }
for t in ip ping traceroute nstat bc python3; do
    command -v "$t" >/dev/null || { echo "routes1m: $t is missing" >&2; exit 2; }
done
. "$(dirname "$0")/topology.sh"
topology

routes_batch "$WORK/routes.batch" 1000000
t0=$(date +%s.%N)
ip -n $D -batch "$WORK/routes.batch"
t1=$(date +%s.%N)
echo "routes in dut: $(ip -n $D route show | wc -l) (ip -batch took $(echo "$t1 - $t0" | bc) s)"

# The kernel router first: its traceroute is the reference.
ip netns exec $G ping -c 1 -W 2 -q 198.18.7.1 >/dev/null
hops() { ip netns exec $G traceroute -n -q 1 -w 2 198.18.7.1 | tail -n +2 | awk '{print $1, $2}'; }
kernel_hops=$(hops)

start=$(date +%s.%N)
start_engine
up=$(date +%s.%N)
echo "start-up (process start to started event): $(echo "$up - $start" | bc) s"
ip netns exec $G ping -i 0.05 -c 100 -q 198.18.7.1 >/dev/null &
PING=$!
sleep 5
rss=$(awk '/VmRSS/ {print $2}' /proc/$ENGINE/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$ENGINE/status)
wait $PING || true
echo "resident memory 5 s after start: VmRSS $rss kB ($(awk "BEGIN {printf \"%.1f\", $rss * 1024 / 1e6}") MB), VmHWM $hwm kB"

kfwd() { ip netns exec $D nstat -az IpForwDatagrams | awk '/IpForwDatagrams/ {print $2}'; }
efwd() { "$XDPIP" stats --socket "$WORK/ctl" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mib"]["ForwDatagrams"])'; }
fail=0
before_k=$(kfwd) before_e=$(efwd)
if ip netns exec $G ping -c 5 -i 0.2 -W 2 -q 198.18.7.1 >/dev/null; then
    echo "ping 198.18.7.1 through the engine: ok"
else
    echo "ping 198.18.7.1 through the engine: FAILED"; fail=1
fi
e=$(($(efwd) - before_e)) k=$(($(kfwd) - before_k))
echo "forwarded by the engine: $e, by the kernel: $k"
[ "$e" -ge 10 ] || { echo "the engine did not forward the pings"; fail=1; }

engine_hops=$(hops)
echo "traceroute through the kernel: $(echo $kernel_hops)"
echo "traceroute through the engine: $(echo $engine_hops)"
[ "$kernel_hops" = "$engine_hops" ] || { echo "traceroute differs"; fail=1; }
if [ $fail = 0 ]; then echo "routes1m: all checks passed"; else echo "routes1m: FAILED"; fi
exit $fail
