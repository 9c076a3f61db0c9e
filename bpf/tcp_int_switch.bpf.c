// SPDX-License-Identifier: GPL-2.0
/* TCP-INT switch side: a tc (clsact egress, direct-action) program on every switch port.
 *
 * For each TCP packet carrying the TCP-INT option (found anywhere in the option list) it
 * applies the rule of tcp_int_defs.h / docs/tcp-int.md:
 *     if local > pkt.INTval (or nobody stamped yet): pkt.INTval = local, pkt.HopID = TTL
 *     pkt.HopLat = saturating_add(pkt.HopLat, latency through this port)
 * and fixes the TCP checksum. Local congestion is the port's REAL egress queue: the root
 * qdisc (e.g. the HTB bottleneck) read through bpf_cast_to_kern_ctx → skb->dev->qdisc;
 * utilization is bytes the root sent over the port's rate in a window; latency is the
 * backlog's drain time at that rate plus the packet's own serialization.
 * Everything else passes untouched. Per-port settings (rate, HopID override, LinkSpeed
 * code) come from the map `tcp_int_ports`, written by testbed/network/tcpint.py.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "tcp_int.h"

#define TC_ACT_UNSPEC (-1) /* pass on to the next filter (others may share the hook) */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define TCQ_F_BUILTIN 1
#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_TIMESTAMP 8
#define TCPOLEN_TIMESTAMP 10
#define TCPOLEN_TSTAMP_ALIGNED 12
#define MAX_OPT_BYTES 40
#define LINEAR_WANT 134 /* Ethernet + largest IPv4 header + largest TCP header */
#define LINEAR_MIN 54   /* Ethernet + IPv4 + TCP without options */

const volatile __u32 version = TCP_INT_VERSION_V04;
const volatile __u32 scale = TCP_INT_SCALE_PUBLIC;
const volatile __u64 util_window_ns = 1000000;
/* Tag 1 in N option-carrying packets, by the sender's TagFreqKey (v0.2: entry 15). */
const volatile __u32 tag_every_key[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

extern void *bpf_cast_to_kern_ctx(void *) __ksym;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCP_INT_MAX_PORTS);
	__type(key, struct tcp_int_port_key);
	__type(value, struct tcp_int_port);
} tcp_int_ports SEC(".maps");

struct hdr_cursor {
	void *pos;
};

/* Parsing helpers: return the next protocol / header length, or -1. */
static __always_inline int parse_eth(struct hdr_cursor *c, void *end)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > end)
		return -1;
	c->pos = eth + 1;
	return bpf_ntohs(eth->h_proto);
}

/* IPv4/IPv6 → TCP: returns the IP header's TTL / hop limit, or -1 for anything else. */
static __always_inline int parse_ip_tcp(struct hdr_cursor *c, void *end, int proto)
{
	if (proto == ETH_P_IP) {
		struct iphdr *ip = c->pos;
		int hl;

		if ((void *)(ip + 1) > end)
			return -1;
		hl = ip->ihl * 4;
		if (hl < (int)sizeof(*ip) || ip->protocol != IPPROTO_TCP)
			return -1;
		if (ip->frag_off & bpf_htons(0x1fff)) /* not the first fragment: no TCP header */
			return -1;
		c->pos = (void *)ip + hl;
		return ip->ttl;
	}
	if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = c->pos;

		if ((void *)(ip6 + 1) > end)
			return -1;
		if (ip6->nexthdr != IPPROTO_TCP) /* extension headers: not tagged here */
			return -1;
		c->pos = ip6 + 1;
		return ip6->hop_limit;
	}
	return -1;
}

/* Scanning the option list with bpf_loop: the verifier checks one step once, where an
 * open-coded loop would be explored path by path (3 branches × 40 bytes). */
struct opt_scan {
	__u8 opts[64];
	__u32 len;
	__u32 i;
	int found;
};

static long scan_step(__u32 n, struct opt_scan *s)
{
	__u32 i = s->i;
	__u8 kind, olen;

	if (i >= s->len || i >= MAX_OPT_BYTES)
		return 1;
	kind = s->opts[i & 63]; /* & 63: verifier bound within the 64-byte buffer */
	if (kind == TCPOPT_EOL)
		return 1;
	if (kind == TCPOPT_NOP) {
		s->i = i + 1;
		return 0;
	}
	if (i + 1 >= s->len)
		return 1;
	olen = s->opts[(i + 1) & 63];
	if (olen < 2)
		return 1;
	if (kind == TCP_INT_OPT_KIND && olen == TCP_INT_OPT_LEN) {
		if (i + TCP_INT_OPT_LEN <= s->len)
			s->found = i;
		return 1;
	}
	s->i = i + olen;
	return 0;
}

/* Root qdisc state of the egress device: backlog bytes and bytes sent so far. */
struct root_state {
	__u32 backlog;
	__u32 netns;
	__u32 ifindex;
	int has_counter;
	__u64 sent_bytes;
};

static __always_inline void read_root(struct __sk_buff *skb, struct root_state *r)
{
	/* Direct loads through the kernel skb (BTF pointers, CO-RE relocated): one load each,
	 * where BPF_CORE_READ costs a bpf_probe_read_kernel call per hop (7 calls, ~250 ns
	 * per packet measured with bpf_stats). */
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct net_device *dev = kskb->dev;
	struct Qdisc *q;

	r->ifindex = skb->ifindex;
	if (!dev)
		return;
	r->netns = dev->nd_net.net->ns.inum;
	q = dev->qdisc;
	if (!q)
		return;
	r->backlog = q->qstats.backlog;
	/* Lockless roots keep per-CPU counters, built-in ones (noqueue) none: count ourselves. */
	r->has_counter = !(q->flags & TCQ_F_BUILTIN) && !q->cpu_bstats;
	if (r->has_counter)
		r->sent_bytes = q->bstats.bytes.v.a.a.counter;
}

SEC("tc")
int tcp_int_switch(struct __sk_buff *skb)
{
	struct tcp_int_port_key key = {};
	struct tcp_int_port *port;
	struct root_state root = {};
	struct hdr_cursor c;
	struct tcphdr *tcp;
	void *data, *end;
	struct opt_scan scan = {.found = -1};
	__u32 tcp_off, optlen, seg_len, util = 0, ls = 0, hop_id = 0, rel, base, shift0;
	__u64 rate = 0, lat_ns = 0, sum, now, w, w_old, w_new;
	int proto, ttl, at;
	__u8 local, pkt_ival, pkt_hop, tfk, freq;
	__u32 off_ival, off_hop, off_lat;

	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	seg_len = skb->len;
	if (end - data < LINEAR_MIN && end - data < seg_len) {
		/* base headers outside the linear part (never for the local stack's TCP, whose
		 * whole header is linear): pull them in. Never pulled otherwise: a pull on a
		 * cloned skb (every TCP segment) would copy its head. Options are read with
		 * bpf_skb_load_bytes, which also reads non-linear data. */
		bpf_skb_pull_data(skb, seg_len < LINEAR_WANT ? seg_len : LINEAR_WANT);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	c.pos = data;
	proto = parse_eth(&c, end);
	if (proto < 0)
		goto out;
	ttl = parse_ip_tcp(&c, end, proto);
	if (ttl < 0)
		goto out;
	tcp = c.pos;
	if ((void *)(tcp + 1) > end)
		goto out;
	optlen = tcp->doff * 4;
	if (optlen <= sizeof(*tcp))
		goto out; /* no options: untagged */
	optlen -= sizeof(*tcp);
	if (optlen > MAX_OPT_BYTES)
		goto out;
	tcp_off = (void *)tcp - data;
	if (bpf_skb_load_bytes(skb, tcp_off + sizeof(*tcp), scan.opts, optlen) < 0)
		goto out;
	scan.len = optlen;
	/* fast paths for Linux's layout (NOP NOP TS first): TS alone = untagged; TS then
	 * the option. Anything else: scan the list. */
	if (scan.opts[0] == TCPOPT_NOP && scan.opts[1] == TCPOPT_NOP &&
	    scan.opts[2] == TCPOPT_TIMESTAMP && scan.opts[3] == TCPOLEN_TIMESTAMP &&
	    (optlen == TCPOLEN_TSTAMP_ALIGNED ||
	     (scan.opts[TCPOLEN_TSTAMP_ALIGNED] == TCP_INT_OPT_KIND &&
	      scan.opts[TCPOLEN_TSTAMP_ALIGNED + 1] == TCP_INT_OPT_LEN &&
	      optlen >= TCPOLEN_TSTAMP_ALIGNED + TCP_INT_OPT_LEN)))
		scan.found = optlen == TCPOLEN_TSTAMP_ALIGNED ? -1 : TCPOLEN_TSTAMP_ALIGNED;
	else
		bpf_loop(MAX_OPT_BYTES, scan_step, &scan, 0);
	at = scan.found;
	if (at < 0 || at > MAX_OPT_BYTES - TCP_INT_OPT_LEN) /* 2nd test: verifier bound */
		goto out;

	if (version == TCP_INT_VERSION_V02) {
		off_ival = TCP_INT_V02_OFF_INTVAL;
		off_hop = TCP_INT_V02_OFF_ID;
		off_lat = TCP_INT_V02_OFF_SWLAT;
		tfk = TCP_INT_TFK_SWITCH_DEFAULT;
	} else {
		off_ival = TCP_INT_V04_OFF_INTVAL;
		off_hop = TCP_INT_V04_OFF_HOPID;
		off_lat = TCP_INT_V04_OFF_HOPLAT;
		tfk = scan.opts[(at + TCP_INT_V04_OFF_TFK_LS) & 63] >> 4;
	}

	/* port state: rate, HopID override, utilization window */
	read_root(skb, &root);
	key.netns = root.netns;
	key.ifindex = root.ifindex;
	port = bpf_map_lookup_elem(&tcp_int_ports, &key);
	now = bpf_ktime_get_ns();
	if (port) {
		__u64 sent = root.has_counter ? root.sent_bytes : port->own_bytes + skb->len;

		if (!root.has_counter)
			port->own_bytes = sent;
		port->n_tagged++;
		port->last_backlog = root.backlog;
		rate = port->rate_bps;
		hop_id = port->hop_id;
		ls = port->ls_code;
		if (!port->win_start_ns) {
			port->win_start_ns = now;
			port->win_start_bytes = sent;
		} else if (now - port->win_start_ns >= util_window_ns && rate) {
			__u64 u = (sent - port->win_start_bytes) * 8 * 1000000000ULL /
				  (now - port->win_start_ns) * TCP_INT_UTIL_ONE / rate;

			port->util = u > TCP_INT_UTIL_ONE ? TCP_INT_UTIL_ONE : u;
			port->win_start_ns = now;
			port->win_start_bytes = sent;
		}
		util = port->util;
	}

	freq = tag_every_key[tfk & 0xf];
	if (freq > 1 && bpf_get_prandom_u32() % freq)
		goto out; /* not this one: the switch samples the packets it tags */

	/* this port's latency: drain the backlog, then serialize this packet (one segment of
	 * a GSO packet) */
	seg_len = skb->gso_segs > 1 ? skb->len / skb->gso_segs : skb->len;
	if (rate)
		lat_ns = ((__u64)root.backlog + seg_len) * 8 * 1000000000ULL / rate;
	local = tcp_int_encode(version, scale, root.backlog, util, rate);

	/* The 8-byte window [base, base+8) at an even TCP offset covers the rewritten bytes
	 * (checksum words stay aligned). Held as a big-endian u64: byte k = bits 56-8k. */
	rel = sizeof(*tcp) + at + TCP_INT_SW_FIRST;
	base = rel & ~1U;
	shift0 = (rel - base) - TCP_INT_SW_FIRST; /* window index of option byte 0, mod 8 */
	if (bpf_skb_load_bytes(skb, tcp_off + base, &w_old, 8) < 0)
		goto out;
	w = bpf_be64_to_cpu(w_old);
#define SH(off) (56 - 8 * ((shift0 + (off)) & 7))
#define GET(off) ((__u8)(w >> SH(off)))
#define PUT(off, v) (w = (w & ~(0xffULL << SH(off))) | ((__u64)(__u8)(v) << SH(off)))
	pkt_ival = GET(off_ival);
	pkt_hop = GET(off_hop);
	if (local > pkt_ival || !pkt_hop) {
		PUT(off_ival, local);
		PUT(off_hop, hop_id ? hop_id : ttl);
		if (version != TCP_INT_VERSION_V02)
			PUT(TCP_INT_V04_OFF_TFK_LS, (GET(TCP_INT_V04_OFF_TFK_LS) & 0xf0) | (ls & 0xf));
		if (port)
			port->n_stamped++;
	}
	/* HopLat: upper 24 bits of a 32-bit ns sum; add at ns resolution, saturate */
	sum = (((__u64)GET(off_lat) << 16 | (__u64)GET(off_lat + 1) << 8 | GET(off_lat + 2))
	       << TCP_INT_HOPLAT_SHIFT) + lat_ns;
	if (sum > 0xffffffffULL)
		sum = 0xffffffffULL;
	sum >>= TCP_INT_HOPLAT_SHIFT;
	PUT(off_lat, sum >> 16);
	PUT(off_lat + 1, sum >> 8);
	PUT(off_lat + 2, sum);
#undef PUT
#undef GET
#undef SH
	w_new = bpf_cpu_to_be64(w);
	if (w_new == w_old)
		goto out;
	if (bpf_skb_store_bytes(skb, tcp_off + base, &w_new, 8, 0) < 0)
		goto out;
	/* by-difference update; a no-op for CHECKSUM_PARTIAL (the NIC/GSO sums it later) */
	bpf_l4_csum_replace(skb, tcp_off + offsetof(struct tcphdr, check), 0,
			    bpf_csum_diff((__be32 *)&w_old, 8, (__be32 *)&w_new, 8, 0), 0);
out:
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
