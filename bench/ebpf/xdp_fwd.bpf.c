// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * xdp_fwd: in-kernel IPv4 forwarding in XDP, the way xdp-tools' xdp-forward
 * (fib mode) and the kernel's samples/bpf/xdp_fwd do it. It is the ceiling
 * of any AF_XDP design on the same path: no copy to user space, no second
 * pass through a ring, the kernel's own FIB and neighbour table.
 *
 * For every IPv4 frame with TTL > 1 it asks the kernel's FIB
 * (bpf_fib_lookup); when the FIB resolves a next hop with a known MAC it
 * decrements the TTL (incremental checksum), rewrites the MAC addresses and
 * redirects the frame through the devmap `tx_ports` to the egress interface.
 * Everything else (ARP, unresolved neighbours, TTL expiry, no route, too big)
 * goes to the kernel with XDP_PASS.
 *
 * Built by bench/build.rs with clang -target bpf; xdpip-bench loads it with
 * aya and fills `tx_ports` with the interfaces it is attached to.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif

/* Egress interfaces, keyed by ifindex. The receiving side of a veth needs
 * an XDP program of its own for XDP_REDIRECT into it to work. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

static __always_inline void ip_decrease_ttl(struct iphdr *iph)
{
	__u32 check = (__u32)iph->check;

	check += (__u32)bpf_htons(0x0100);
	iph->check = (__sum16)(check + (check >= 0xFFFF));
	iph->ttl--;
}

SEC("xdp")
int xdp_fwd(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	struct bpf_fib_lookup fib = {};
	int rc;

	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || iph->ttl <= 1)
		return XDP_PASS;

	fib.family = AF_INET;
	fib.tos = iph->tos;
	fib.l4_protocol = iph->protocol;
	fib.tot_len = bpf_ntohs(iph->tot_len);
	fib.ipv4_src = iph->saddr;
	fib.ipv4_dst = iph->daddr;
	fib.ifindex = ctx->ingress_ifindex;

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XDP_PASS;

	ip_decrease_ttl(iph);
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return bpf_redirect_map(&tx_ports, fib.ifindex, 0);
}

char _license[] SEC("license") = "Dual MIT/GPL";
