// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * steer: the XDP program of xdpip.
 *
 * It decides, for every frame received on an interface the engine serves,
 * whether the engine (through the AF_XDP socket of this rx queue) or the
 * kernel (XDP_PASS) takes it. The kernel keeps everything the engine does not
 * claim: ARP, IPv6, VLAN-tagged frames, traffic to local addresses on
 * unclaimed ports, multicast and broadcast, and - depending on the gate
 * mode - packets whose next hop the kernel has not resolved (it resolves
 * and queues them) or everything its FIB cannot forward as is.
 *
 * Built by engine/build.rs with clang -target bpf; the engine loads it with
 * aya. The layout of every map value is mirrored in engine/src/ebpf.rs.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif

/* The socket of (port, queue) sits at port * MAX_QUEUES + queue in `xsks`. */
#define MAX_PORTS 32
#define MAX_QUEUES 256

/* Verdict counters, one slot each in the per-CPU array `counters`.
 * Keep in sync with `Verdict` in engine/src/ebpf.rs. */
enum verdict {
	V_PASS_NOT_IPV4 = 0,	/* ARP, IPv6, LLDP, ...: kernel */
	V_PASS_VLAN,		/* 802.1Q/802.1ad tagged: VLAN devices are the kernel's */
	V_PASS_MALFORMED,	/* truncated or bad version/IHL: kernel drops, counts InHdrErrors */
	V_PASS_LOCAL,		/* to a local address, port not claimed */
	V_PASS_MULTICAST,	/* multicast or limited broadcast */
	V_PASS_FORWARDING_OFF,	/* forwarding disabled in the engine's config */
	V_PASS_TTL,		/* TTL <= 1: kernel sends ICMP time exceeded */
	V_PASS_OPTIONS,		/* IP options: kernel updates RR/TS, source routes */
	V_PASS_NO_ROUTE,	/* blackhole/unreachable/prohibit/no route: kernel answers */
	V_PASS_NO_NEIGH,	/* next hop unresolved: kernel resolves (ARP) */
	V_PASS_FRAG_NEEDED,	/* larger than the egress MTU (full gate), or than an MTU
				 * the engine has not followed yet: kernel fragments or answers */
	V_PASS_FWD_DISABLED,	/* forwarding disabled on the ingress device (sysctl) */
	V_PASS_FOREIGN_EGRESS,	/* egress device is not served by the engine */
	V_REDIRECT_FORWARD,	/* to the engine, to be forwarded */
	V_REDIRECT_LOCAL,	/* to the engine, claimed local traffic */
	V_PASS_NO_SOCKET,	/* no AF_XDP socket on this queue: kernel */
	V_PASS_FILTER,		/* a filter hook it passes is the kernel's */
	V_MAX,
};

/* Engine configuration, slot 0 of `config`. */
struct config {
	__u32 forwarding;	/* 1: forward IPv4 through the engine */
	__u32 fib_gate;		/* enum gate */
	__u32 local_frags;	/* 1: fragments to local addresses to the engine */
	__u32 mtu_check_above;	/* GATE_OFF: longer packets still get the MTU
				 * check of GATE_NEIGH */
};

/* What the kernel's FIB decides before the engine sees a packet.
 * Keep in sync with `GateMode` in engine/src/ebpf.rs. */
enum gate {
	GATE_OFF = 0,		/* the engine decides everything */
	GATE_NEIGH = 1,		/* unresolved next hops, forwarding off: kernel */
	GATE_FULL = 2,		/* anything bpf_fib_lookup cannot forward: kernel */
};

/* A claimed (protocol, port) pair; port 0 claims the whole protocol. For
 * ICMP the "port" is 0x100 | message type (0x108: echo requests), never 0. */
struct claim_key {
	__u8 protocol;
	__u8 pad;
	__be16 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_PORTS * MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Multicast groups engine sockets joined: UDP to them goes to the engine
 * (IGMP itself stays with the kernel, which speaks it for those joins). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __be32);
	__type(value, __u32);
} mcast_groups SEC(".maps");

/* Local and broadcast addresses of the namespace (the kernel's local table). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __be32);
	__type(value, __u32);
} local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct claim_key);
	__type(value, __u32);
} claimed SEC(".maps");

/* Interfaces the engine serves: ifindex -> port number. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

/* The MTU of each port in the engine's current snapshot, by port number
 * (0 until the control thread first publishes). While the kernel's MTU of
 * an egress differs from it (an `ip link set mtu` the engine has not
 * followed yet), a packet larger than the kernel's goes to the kernel,
 * which fragments or answers with the MTU of the moment: veth drops a
 * frame over its MTU without a trace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} port_mtu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, V_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Hooks of the host's packet filter whose traffic the kernel must judge
 * (rules the engine cannot compile, legacy iptables): bit 1 << NF_INET_*.
 * Written by the engine's filter thread (engine/src/filter/watch.rs). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} filter_hooks SEC(".maps");

#define HOOK_PRE (1 << 0)
#define HOOK_IN (1 << 1)
#define HOOK_FWD (1 << 2)
#define HOOK_POST (1 << 4)

/* True when a hook the packet passes is the kernel's: prerouting and
 * input for local delivery; prerouting, forward and postrouting for
 * forwarding. (What the engine sends passes output and postrouting; it
 * hands those packets to the kernel itself.) */
static __always_inline int filter_to_kernel(int local)
{
	__u32 zero = 0;
	__u32 *hooks = bpf_map_lookup_elem(&filter_hooks, &zero);

	if (!hooks || !*hooks)
		return 0;
	return *hooks & (local ? HOOK_PRE | HOOK_IN : HOOK_PRE | HOOK_FWD | HOOK_POST);
}

static __always_inline int count(__u32 v, int action)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &v);

	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
	return action;
}

static __always_inline int to_engine(struct xdp_md *ctx, __u32 v)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *port = bpf_map_lookup_elem(&ports, &ifindex);
	int action;

	if (filter_to_kernel(v == V_REDIRECT_LOCAL))
		return count(V_PASS_FILTER, XDP_PASS);
	if (!port || ctx->rx_queue_index >= MAX_QUEUES)
		return count(V_PASS_NO_SOCKET, XDP_PASS);
	action = bpf_redirect_map(&xsks, *port * MAX_QUEUES + ctx->rx_queue_index, XDP_PASS);

	if (action == XDP_REDIRECT)
		return count(v, action);
	return count(V_PASS_NO_SOCKET, XDP_PASS);
}

/* Claimed when (protocol, destination port) - (ICMP, type) for ICMP - or
 * (protocol, any port) is in `claimed`. Fragments stay with the kernel:
 * only the first carries the port, and the engine does not reassemble
 * local traffic yet, so claiming some fragments of a datagram would lose
 * it for both. */
static __always_inline int is_claimed(struct iphdr *iph, void *l4, void *data_end)
{
	struct claim_key key = { .protocol = iph->protocol };

	if (iph->frag_off & bpf_htons(0x3fff))
		return 0;
	if (iph->protocol == IPPROTO_UDP || iph->protocol == IPPROTO_TCP) {
		__be16 *ports = l4;

		if ((void *)(ports + 2) > data_end)
			return 0;
		key.port = ports[1];
		if (bpf_map_lookup_elem(&claimed, &key))
			return 1;
		key.port = 0;
	} else if (iph->protocol == IPPROTO_ICMP) {
		__u8 *type = l4;

		if ((void *)(type + 1) > data_end)
			return 0;
		if (*type == 3 || *type == 11 || *type == 12) {
			/* An error about a datagram an engine socket sent: the
			 * quoted header (without options) and its UDP source
			 * port say whose it is. */
			struct iphdr *inner = l4 + 8;
			__be16 *iports = l4 + 8 + sizeof(*inner);

			if ((void *)(iports + 2) > data_end)
				return 0;
			if (inner->ihl != 5 || inner->protocol != IPPROTO_UDP)
				return 0;
			key.protocol = IPPROTO_UDP;
			key.port = iports[0];
			return bpf_map_lookup_elem(&claimed, &key) != NULL;
		}
		key.port = bpf_htons(0x100 | *type);
		if (bpf_map_lookup_elem(&claimed, &key))
			return 1;
		key.port = 0;
	}
	return bpf_map_lookup_elem(&claimed, &key) != NULL;
}

/* bpf_fib_lookup() of the packet from the ingress interface; a non-zero
 * tot_len asks for the kernel's MTU check (FRAG_NEEDED, the MTU in
 * mtu_result, before the egress is filled in). */
static __always_inline int fib_lookup(struct xdp_md *ctx, struct iphdr *iph,
				      struct bpf_fib_lookup *fib, __u16 tot_len)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->tos = iph->tos;
	fib->l4_protocol = iph->protocol;
	fib->tot_len = tot_len;
	fib->ipv4_src = iph->saddr;
	fib->ipv4_dst = iph->daddr;
	fib->ifindex = ctx->ingress_ifindex;
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

static __always_inline int fib_verdict(int rc)
{
	switch (rc) {
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return V_PASS_NO_NEIGH;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		return V_PASS_FRAG_NEEDED;
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		return V_PASS_FWD_DISABLED;
	default:
		return V_PASS_NO_ROUTE;
	}
}

SEC("xdp")
int xdpip_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	struct config *cfg;
	struct iphdr *iph;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return count(V_PASS_NOT_IPV4, XDP_PASS);
	proto = eth->h_proto;
	iph = (void *)(eth + 1);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		/* One tag is parsed so that tagged IPv4 is recognised; the
		 * VLAN devices on top of this interface are the kernel's. */
		__be16 *inner = (void *)(eth + 1);

		if ((void *)(inner + 2) > data_end)
			return count(V_PASS_MALFORMED, XDP_PASS);
		return count(inner[1] == bpf_htons(ETH_P_IP) ? V_PASS_VLAN : V_PASS_NOT_IPV4,
			     XDP_PASS);
	}
	if (proto != bpf_htons(ETH_P_IP))
		return count(V_PASS_NOT_IPV4, XDP_PASS);

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return count(V_PASS_FORWARDING_OFF, XDP_PASS);

	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
		return count(V_PASS_MALFORMED, XDP_PASS);
	/* No pointer arithmetic with the variable header length: a loader
	 * with CAP_BPF but not CAP_PERFMON may not do it (Spectre v1
	 * hardening). Whether the options are all there is for the engine or
	 * the kernel to check. */

	if (bpf_map_lookup_elem(&local_addrs, &iph->daddr)) {
		/* A fragment carries no port (but the first): while engine
		 * sockets exist, the engine reassembles all local fragments and
		 * hands the kernel back what is not for it. */
		if ((iph->frag_off & bpf_htons(0x3fff)) && cfg->local_frags)
			return to_engine(ctx, V_REDIRECT_LOCAL);
		/* Ports are read after a plain header only: a packet with options
		 * to a local address stays with the kernel. */
		if (iph->ihl == 5 && is_claimed(iph, (void *)(iph + 1), data_end))
			return to_engine(ctx, V_REDIRECT_LOCAL);
		return count(V_PASS_LOCAL, XDP_PASS);
	}
	/* 224.0.0.0/4 and 255.255.255.255 */
	if ((iph->daddr & bpf_htonl(0xf0000000)) == bpf_htonl(0xe0000000) ||
	    iph->daddr == bpf_htonl(0xffffffff)) {
		/* UDP to a group an engine socket joined; fragments too, as
		 * for local addresses (the engine hands back what is not its). */
		if (iph->protocol == IPPROTO_UDP &&
		    bpf_map_lookup_elem(&mcast_groups, &iph->daddr))
			return to_engine(ctx, V_REDIRECT_LOCAL);
		return count(V_PASS_MULTICAST, XDP_PASS);
	}

	if (!cfg->forwarding)
		return count(V_PASS_FORWARDING_OFF, XDP_PASS);
	if (cfg->fib_gate == GATE_FULL) {
		/* The kernel handles options and TTL expiry in this mode. */
		if (iph->ihl != 5)
			return count(V_PASS_OPTIONS, XDP_PASS);
		if (iph->ttl <= 1)
			return count(V_PASS_TTL, XDP_PASS);
	}

	/* Without the gate, packets longer than mtu_check_above (576 with
	 * --fib-gate auto) still get its MTU check, so that an MTU lowered
	 * in the kernel loses nothing before the engine follows it; short
	 * packets, the costly ones per byte, skip bpf_fib_lookup. */
	if (cfg->fib_gate != GATE_OFF || bpf_ntohs(iph->tot_len) > cfg->mtu_check_above) {
		struct bpf_fib_lookup fib;
		__u32 mtu = 0;
		__u32 *port;
		int rc;

		/* With the MTU check: the full gate leaves every oversize
		 * packet to the kernel; the neighbour gate only those whose
		 * egress MTU the engine does not know yet (port_mtu), found
		 * by a second lookup for the egress (FRAG_NEEDED has none). */
		rc = fib_lookup(ctx, iph, &fib, bpf_ntohs(iph->tot_len));
		if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED && cfg->fib_gate != GATE_FULL) {
			mtu = fib.mtu_result;
			rc = fib_lookup(ctx, iph, &fib, 0);
		}
		if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
			port = bpf_map_lookup_elem(&ports, &fib.ifindex);
			if (!port)
				return count(V_PASS_FOREIGN_EGRESS, XDP_PASS);
			if (mtu) {
				__u32 *known = bpf_map_lookup_elem(&port_mtu, port);

				if (!known || *known != mtu)
					return count(V_PASS_FRAG_NEEDED, XDP_PASS);
			}
		} else if (cfg->fib_gate == GATE_FULL || rc == BPF_FIB_LKUP_RET_NO_NEIGH ||
			   rc == BPF_FIB_LKUP_RET_FWD_DISABLED) {
			return count(fib_verdict(rc), XDP_PASS);
		}
	}
	return to_engine(ctx, V_REDIRECT_FORWARD);
}

char _license[] SEC("license") = "Dual MIT/GPL";
