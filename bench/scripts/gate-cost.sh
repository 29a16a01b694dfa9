#!/usr/bin/env bash
# What the XDP program's FIB gate (`xdpip run --fib-gate off|neigh|full`)
# costs per packet, measured without traffic generator noise: the engine's
# own XDP program, attached by `xdpip run` in dut, runs on one 64-byte UDP
# frame from gen to sink through BPF_PROG_TEST_RUN (`bpftool prog run`,
# REPEAT times) with dut's eth0 as the ingress interface, so that
# bpf_fib_lookup() sees dut's tables. The kernel reports the mean time per
# run; each gate is measured ROUNDS times, interleaved, with ROUTES routes
# in dut (default 3: the connected ones and 198.18.7.0/24).
#
#   bench/scripts/gate-cost.sh [ROUTES] [target/release/xdpip]
#
# Needs root, iproute2, bpftool, python3.
set -euo pipefail
ROUTES=${1:-3}
XDPIP=${2:-target/release/xdpip}
REPEAT=${REPEAT:-2000000}
ROUNDS=${ROUNDS:-5}
[ -x "$XDPIP" ] || { echo "gate-cost: no $XDPIP (cargo build --release -p xdpip)" >&2; exit 2; }
for t in ip bpftool python3; do
    command -v "$t" >/dev/null || { echo "gate-cost: $t is missing" >&2; exit 2; }
done
. "$(dirname "$0")/topology.sh"
topology
if [ "$ROUTES" -gt 3 ]; then
    routes_batch "$WORK/routes.batch" $((ROUTES - 2))
    ip -n $D -batch "$WORK/routes.batch"
else
    ip -n $D route add 198.18.7.0/24 via 10.2.0.2
fi
# Resolves sink in dut's neighbour table, as under traffic.
ip netns exec $G ping -c 2 -W 2 -q 198.18.7.1 >/dev/null

mac=$(ip -n $D -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
ifindex=$(ip -n $D -j link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])')
python3 - "$WORK" "$mac" "$ifindex" <<'PY'
import struct, sys
work, mac, ifindex = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), int(sys.argv[3])
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
payload = bytes(64 - 14 - 20 - 8)
udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                           bytes([10, 1, 0, 1]), bytes([198, 18, 7, 1])))
ip[10:12] = struct.pack("!H", csum(bytes(ip)))
frame = mac + bytes.fromhex("020000000001") + b"\x08\x00" + bytes(ip) + udp
open(work + "/frame", "wb").write(frame)
# struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
open(work + "/ctx", "wb").write(struct.pack("<6I", 0, len(frame), 0, ifindex, 0, 0))
PY

declare -A ns
for round in $(seq "$ROUNDS"); do
    for gate in off neigh full; do
        start_engine --fib-gate $gate
        id=$(ip -n $D -j -d link show eth0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"]["prog"]["id"])')
        out=$(ip netns exec $D bpftool prog run id "$id" data_in "$WORK/frame" ctx_in "$WORK/ctx" repeat "$REPEAT")
        t=$(echo "$out" | sed -n 's/.*duration (average): \([0-9]*\)ns.*/\1/p')
        rv=$(echo "$out" | sed -n 's/.*Return value: \([0-9]*\).*/\1/p')
        # 4 is XDP_REDIRECT: the frame goes to the engine.
        [ "$rv" = 4 ] || { echo "gate $gate: the program returned $rv, not XDP_REDIRECT: $out" >&2; exit 1; }
        ns[$gate]="${ns[$gate]:-} $t"
        stop_engine
    done
done
echo "XDP program per 64-byte forwarded frame, ns (BPF_PROG_TEST_RUN mean of $REPEAT runs; $ROUNDS rounds), $ROUTES routes in dut:"
for gate in off neigh full; do
    echo "  --fib-gate $gate:${ns[$gate]}  median $(echo ${ns[$gate]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done
