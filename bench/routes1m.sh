#!/usr/bin/env bash
# The engine with 1,000,000 routes (issue 12's acceptance, docs/PERFORMANCE.md
# "Control plane: 1,000,000 routes"): gen ⇄ dut ⇄ sink on veth with the
# default offloads; dut holds 1,000,000 random /24 routes via sink, loaded
# with `ip -batch`. It prints the engine's start-up time (process start to
# its `started` event) and resident memory (VmRSS 5 s after start, pings
# flowing; VmHWM), then checks that a ping goes through the engine (its
# ForwDatagrams grows, the kernel's does not) and that traceroute shows the
# same hops through the engine as through the kernel router. Exit status 1
# when a check fails.
#
#   cargo build --release -p xdpip && bench/routes1m.sh [target/release/xdpip]
#
# Needs root, iproute2, iputils-ping, traceroute and python3.
set -euo pipefail
XDPIP=${1:-target/release/xdpip}
[ -x "$XDPIP" ] || { echo "routes1m: no $XDPIP (cargo build --release -p xdpip)" >&2; exit 2; }
for t in ip ping traceroute python3; do
    command -v "$t" >/dev/null || { echo "routes1m: $t is missing" >&2; exit 2; }
done

S=$$
G=r1m-gen-$S D=r1m-dut-$S K=r1m-sink-$S
WORK=$(mktemp -d)
ENGINE=
cleanup() {
    [ -n "$ENGINE" ] && kill "$ENGINE" 2>/dev/null && wait "$ENGINE" 2>/dev/null || true
    for n in $G $D $K; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for n in $G $D $K; do ip netns add "$n"; done
ip link add name eth0 netns $G type veth peer name eth0 netns $D
ip link add name eth1 netns $D type veth peer name eth0 netns $K
ip -n $G addr add 10.1.0.1/24 dev eth0
ip -n $D addr add 10.1.0.2/24 dev eth0
ip -n $D addr add 10.2.0.1/24 dev eth1
ip -n $K addr add 10.2.0.2/24 dev eth0
# The destination of the ping: an address of sink that only one of the
# million routes reaches.
ip -n $K addr add 198.18.7.1/32 dev lo
for x in "$G eth0" "$D eth0" "$D eth1" "$K eth0" "$G lo" "$D lo" "$K lo"; do
    set -- $x
    ip -n "$1" link set "$2" up
done
ip -n $G route add default via 10.1.0.2
ip -n $K route add default via 10.2.0.1
ip netns exec $D sysctl -qw net.ipv4.ip_forward=1

python3 - "$WORK/routes.batch" <<'EOF'
import random, sys
random.seed(1)
seen = {(198 << 16) | (18 << 8) | 7}
out = ["route add 198.18.7.0/24 via 10.2.0.2"]
while len(out) < 1_000_000:
    p = random.randrange(1 << 24)
    if p in seen or (p >> 16) in (10, 127) or (p >> 20) >= 0xe0:
        continue
    seen.add(p)
    out.append(f"route add {p >> 16}.{(p >> 8) & 255}.{p & 255}.0/24 via 10.2.0.2")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF
t0=$(date +%s.%N)
ip -n $D -batch "$WORK/routes.batch"
t1=$(date +%s.%N)
routes=$(ip -n $D route show | wc -l)
echo "routes in dut: $routes (ip -batch took $(echo "$t1 - $t0" | bc) s)"

# The kernel router first: its traceroute is the reference.
ip netns exec $G ping -c 1 -W 2 -q 198.18.7.1 >/dev/null
kernel_hops=$(ip netns exec $G traceroute -n -q 1 -w 2 198.18.7.1 | tail -n +2 | awk '{print $1, $2}')

kfwd() { ip netns exec $D nstat -az IpForwDatagrams | awk '/IpForwDatagrams/ {print $2}'; }
start=$(date +%s.%N)
ip netns exec $D "$XDPIP" run --json -i eth0 -i eth1 --socket "$WORK/ctl" >"$WORK/events" 2>"$WORK/stderr" &
ENGINE=$!
until grep -q '"started"' "$WORK/events" 2>/dev/null; do
    kill -0 $ENGINE 2>/dev/null || { cat "$WORK/stderr" >&2; echo "routes1m: the engine exited" >&2; exit 1; }
    sleep 0.02
done
up=$(date +%s.%N)
echo "start-up (process start to started event): $(echo "$up - $start" | bc) s"
ip netns exec $G ping -i 0.05 -c 100 -q 198.18.7.1 >/dev/null &
PING=$!
sleep 5
rss=$(awk '/VmRSS/ {print $2}' /proc/$ENGINE/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$ENGINE/status)
wait $PING || true
echo "resident memory 5 s after start: VmRSS $((rss / 1024)) MiB ($rss kB), VmHWM $((hwm / 1024)) MiB"

fail=0
before_k=$(kfwd)
before_e=$("$XDPIP" stats --socket "$WORK/ctl" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mib"]["ForwDatagrams"])')
if ip netns exec $G ping -c 5 -i 0.2 -W 2 -q 198.18.7.1 >/dev/null; then
    echo "ping 198.18.7.1 through the engine: ok"
else
    echo "ping 198.18.7.1 through the engine: FAILED"; fail=1
fi
after_e=$("$XDPIP" stats --socket "$WORK/ctl" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mib"]["ForwDatagrams"])')
after_k=$(kfwd)
echo "forwarded by the engine: $((after_e - before_e)), by the kernel: $((after_k - before_k))"
[ $((after_e - before_e)) -ge 10 ] || { echo "the engine did not forward the pings"; fail=1; }

engine_hops=$(ip netns exec $G traceroute -n -q 1 -w 2 198.18.7.1 | tail -n +2 | awk '{print $1, $2}')
echo "traceroute through the kernel: $(echo $kernel_hops)"
echo "traceroute through the engine: $(echo $engine_hops)"
[ "$kernel_hops" = "$engine_hops" ] || { echo "traceroute differs"; fail=1; }
[ $fail = 0 ] && echo "routes1m: all checks passed" || echo "routes1m: FAILED"
exit $fail
