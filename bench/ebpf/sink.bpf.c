// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * The XDP side of `xdpip-bench sink`.
 *
 * sink_count: counts the generator's frames (IPv4 UDP to the sink's port,
 *   and IPv4 UDP fragments other than the first) in a per-CPU counter and
 *   drops them; everything else (ARP above all: the router must keep
 *   resolving the sink) goes to the kernel.
 * sink_xsk: the same frames go to the AF_XDP socket of their rx queue
 *   (`xsks`), where the sink reads sequence numbers and timestamps.
 * xdp_pass: passes everything; attached where a veth needs any XDP program
 *   (XDP_REDIRECT into a veth works only when its peer has one).
 *
 * Built by bench/build.rs with clang -target bpf; the layout of `config`
 * and `counters` is mirrored in bench/src/ebpf.rs.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 256

/* Counter slots of `counters`; keep in sync with bench/src/ebpf.rs. */
enum {
	C_PACKETS = 0,	/* frames taken (counted and dropped, or redirected) */
	C_BYTES,	/* their bytes, Ethernet header included */
	C_NO_SOCKET,	/* sink_xsk: no socket on the rx queue, dropped */
	C_MAX,
};

struct sink_config {
	__be16 port;	/* UDP destination port of the generator's traffic */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sink_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

static __always_inline void add(__u32 slot, __u64 v)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &slot);

	if (c)
		*c += v; /* per-CPU slot: no atomic needed */
}

/* Is this a frame of the generator? */
static __always_inline int ours(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	struct udphdr *udp;
	struct sink_config *cfg;
	__u32 zero = 0;

	if ((void *)(iph + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if (iph->protocol != IPPROTO_UDP || iph->ihl < 5)
		return 0;
	/* A fragment other than the first carries no UDP header. */
	if (iph->frag_off & bpf_htons(0x1fff))
		return 1;
	udp = (void *)iph + iph->ihl * 4;
	if ((void *)(udp + 1) > data_end)
		return 0;
	cfg = bpf_map_lookup_elem(&config, &zero);
	return cfg && udp->dest == cfg->port;
}

SEC("xdp")
int sink_count(struct xdp_md *ctx)
{
	if (!ours(ctx))
		return XDP_PASS;
	add(C_PACKETS, 1);
	add(C_BYTES, ctx->data_end - ctx->data);
	return XDP_DROP;
}

SEC("xdp")
int sink_xsk(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	int action;

	if (!ours(ctx))
		return XDP_PASS;
	action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_DROP);
	if (action == XDP_REDIRECT) {
		add(C_PACKETS, 1);
		add(C_BYTES, len);
	} else {
		add(C_NO_SOCKET, 1);
	}
	return action;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
