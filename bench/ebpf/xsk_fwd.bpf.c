// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * xsk_fwd: the XDP side of `xdpip-bench xsk-forward`, the AF_XDP floor.
 * Every IPv4 frame arriving on a served interface goes to the AF_XDP
 * socket of its (interface, rx queue), slot port * MAX_QUEUES + queue of
 * `xsks`, as the engine's steer program does it; everything else (ARP)
 * goes to the kernel, which keeps resolving the neighbours.
 *
 * Built by bench/build.rs with clang -target bpf.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 256
#define MAX_PORTS 4

/* ifindex -> port number. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_PORTS * MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

SEC("xdp")
int xsk_fwd(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *port;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	port = bpf_map_lookup_elem(&ports, &ifindex);
	if (!port || ctx->rx_queue_index >= MAX_QUEUES)
		return XDP_PASS;
	return bpf_redirect_map(&xsks, *port * MAX_QUEUES + ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual MIT/GPL";
