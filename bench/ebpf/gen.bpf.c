// SPDX-License-Identifier: MIT OR GPL-2.0
/*
 * gen_live: the program `xdpip-bench gen --mode live` runs with
 * BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES (kernel 5.18+). The kernel
 * runs it on frames of its own page pool and transmits each frame it
 * returns XDP_TX for out of the interface given as ingress_ifindex.
 *
 * Those pages come back to the pool after a trip through the receivers,
 * which may have rewritten them (a router decrements the TTL and rewrites
 * the MAC addresses in place), so every run writes the whole header again
 * from the template in `gen_cfg`, then the flow's source port and address,
 * the sequence number and the transmit timestamp (CLOCK_MONOTONIC, as
 * bpf_ktime_get_ns reads it).
 *
 * The layout of `gen_cfg` is mirrored in bench/src/ebpf.rs.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Ethernet + IPv4 (no options) + UDP. */
#define HDR_LEN 42
/* Sequence number and timestamp at the start of the UDP payload. */
#define STAMP_LEN 16

struct gen_config {
	__u8 hdr[HDR_LEN];	/* the frame's headers, checksums for flow 0 */
	__u16 sport;		/* source port of flow 0 (host order) */
	__u32 saddr;		/* source address of flow 0 (host order) */
	__u32 flows;		/* flow f: source port sport + f */
	__u32 addrs;		/* and source address saddr + f % addrs */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} gen_cfg SEC(".maps");

/* Frames built so far (one CPU runs the program: no atomics). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

static __always_inline __u16 fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

SEC("xdp")
int gen_live(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	struct udphdr *udp = data + sizeof(struct ethhdr) + sizeof(struct iphdr);
	__u8 *stamp = data + HDR_LEN;
	struct gen_config *cfg;
	__u32 zero = 0, flow;
	__u64 *seqp, seq, now;

	if ((void *)(stamp + STAMP_LEN) > data_end)
		return XDP_ABORTED;
	cfg = bpf_map_lookup_elem(&gen_cfg, &zero);
	seqp = bpf_map_lookup_elem(&gen_seq, &zero);
	if (!cfg || !seqp || cfg->flows == 0 || cfg->addrs == 0)
		return XDP_ABORTED;
	seq = *seqp;
	*seqp = seq + 1;

	__builtin_memcpy(data, cfg->hdr, HDR_LEN);
	flow = seq % cfg->flows;
	udp->source = bpf_htons((__u16)(cfg->sport + flow));
	if (cfg->addrs > 1) {
		__u32 old = cfg->saddr;
		__u32 new = old + flow % cfg->addrs;
		__u32 sum = (__u16)~bpf_ntohs(iph->check);

		/* RFC 1624: HC' = ~(~HC + ~m + m'), over 16-bit words in
		 * host order. */
		sum += (__u16)~(old >> 16) + (__u16)~(old & 0xffff);
		sum += (new >> 16) + (new & 0xffff);
		iph->saddr = bpf_htonl(new);
		iph->check = bpf_htons((__u16)~fold(sum));
	}
	now = bpf_ktime_get_ns();
	seq = bpf_cpu_to_be64(seq);
	now = bpf_cpu_to_be64(now);
	__builtin_memcpy(stamp, &seq, 8);
	__builtin_memcpy(stamp + 8, &now, 8);
	return XDP_TX;
}

char _license[] SEC("license") = "Dual MIT/GPL";
