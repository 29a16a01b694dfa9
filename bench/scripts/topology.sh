# Sourced by the scripts of bench/scripts: gen ⇄ dut ⇄ sink on veth with
# the default offloads, as bench/testbed builds it, in namespaces named
# with this shell's pid; they and $WORK go away when the script exits.
# gen 10.1.0.1 -- 10.1.0.2 dut 10.2.0.1 -- 10.2.0.2 sink; sink also has
# 198.18.7.1/32 on lo, which dut reaches through 198.18.7.0/24 via sink.
# `routes_batch FILE N` writes N random /24 routes via sink for `ip -batch`
# (198.18.7.0/24 among them).

S=$$
G=xb-gen-$S D=xb-dut-$S K=xb-sink-$S
WORK=$(mktemp -d)
ENGINE=
cleanup() {
    if [ -n "$ENGINE" ]; then kill "$ENGINE" 2>/dev/null && wait "$ENGINE" 2>/dev/null; fi
    for n in $G $D $K; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

topology() {
    for n in $G $D $K; do ip netns add "$n"; done
    ip link add name eth0 netns $G type veth peer name eth0 netns $D
    ip link add name eth1 netns $D type veth peer name eth0 netns $K
    ip -n $G addr add 10.1.0.1/24 dev eth0
    ip -n $D addr add 10.1.0.2/24 dev eth0
    ip -n $D addr add 10.2.0.1/24 dev eth1
    ip -n $K addr add 10.2.0.2/24 dev eth0
    ip -n $K addr add 198.18.7.1/32 dev lo
    local x
    for x in "$G eth0" "$D eth0" "$D eth1" "$K eth0" "$G lo" "$D lo" "$K lo"; do
        set -- $x
        ip -n "$1" link set "$2" up
    done
    ip -n $G route add default via 10.1.0.2
    ip -n $K route add default via 10.2.0.1
    ip netns exec $D sysctl -qw net.ipv4.ip_forward=1
}

routes_batch() {
    python3 - "$1" "$2" <<'PY'
import random, sys
random.seed(1)
n = int(sys.argv[2])
seen = {(198 << 16) | (18 << 8) | 7}
out = ["route add 198.18.7.0/24 via 10.2.0.2"]
while len(out) < n:
    p = random.randrange(1 << 24)
    if p in seen or (p >> 16) in (10, 127) or (p >> 20) >= 0xe0:
        continue
    seen.add(p)
    out.append(f"route add {p >> 16}.{(p >> 8) & 255}.{p & 255}.0/24 via 10.2.0.2")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
}

# Starts `xdpip run --json -i eth0 -i eth1 "$@"` in dut, control socket
# $WORK/ctl; returns once it says started.
start_engine() {
    rm -f "$WORK/events"
    ip netns exec $D "$XDPIP" run --json -i eth0 -i eth1 --socket "$WORK/ctl" "$@" \
        >"$WORK/events" 2>"$WORK/stderr" &
    ENGINE=$!
    until grep -q '"started"' "$WORK/events" 2>/dev/null; do
        if ! kill -0 $ENGINE 2>/dev/null; then
            cat "$WORK/stderr" >&2
            echo "the engine exited" >&2
            exit 1
        fi
        sleep 0.02
    done
}

stop_engine() {
    kill "$ENGINE" && wait "$ENGINE" || true
    ENGINE=
}
