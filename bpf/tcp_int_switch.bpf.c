// SPDX-License-Identifier: GPL-2.0
/* TCP-INT switch side: a tc (clsact egress, direct-action) program on every switch port.
 *
 * For each TCP packet carrying the TCP-INT option (found anywhere in the option list) it
 * applies the rule of tcp_int_defs.h / docs/tcp-int.md:
 *     if local > pkt.INTval (or nobody stamped yet): pkt.INTval = local, pkt.HopID = TTL
 *     pkt.HopLat = saturating_add(pkt.HopLat, latency through this port)
 * and fixes the TCP checksum. Local congestion is the port's REAL egress queue: the root
 * qdisc (e.g. the HTB bottleneck), skb->dev->qdisc as common/egress_qdisc.h reads it;
 * utilization is bytes the root sent over the port's rate in a window; latency is the
 * backlog's drain time at that rate plus the packet's own serialization.
 * Everything else passes untouched. Per-port settings (rate, HopID override, LinkSpeed
 * code) come from the map `tcp_int_ports`, written by testbed/network/tcpint.py.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "common/parse.h"
#include "common/egress_qdisc.h"
#include "tcp_int.h"

#define TC_ACT_UNSPEC (-1) /* pass on to the next filter (others may share the hook) */
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCP_INT_MAX_PORTS);
	__type(key, struct tcp_int_port_key);
	__type(value, struct tcp_int_port);
} tcp_int_ports SEC(".maps");

/* The TCP header of an IPv4/IPv6 TCP packet (a first fragment, no IPv6 extension
 * headers: those are not tagged), or NULL; *ttl = the IP TTL / hop limit. */
static __always_inline struct tcphdr *parse_tcp_packet(struct cursor *c, int *ttl)
{
	struct tcphdr *tcp;
	int proto;

	if (!parse_eth(c, &proto))
		return NULL;
	if (proto == ETH_P_IP) {
		struct iphdr *ip = parse_ipv4(c);

		if (!ip || ip->protocol != IPPROTO_TCP || !ipv4_has_l4(ip))
			return NULL;
		*ttl = ip->ttl;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = parse_ipv6(c);

		if (!ip6 || ip6->nexthdr != IPPROTO_TCP)
			return NULL;
		*ttl = ip6->hop_limit;
	} else {
		return NULL;
	}
	tcp = c->pos;
	if ((void *)(tcp + 1) > c->end)
		return NULL;
	return tcp;
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

/* The packet's TCP-INT option: its offset in the option list (copied to scan->opts), or
 * -1 when there is none. */
static __always_inline int find_option(struct __sk_buff *skb, struct tcphdr *tcp,
				       __u32 tcp_off, struct opt_scan *scan)
{
	__u32 optlen = tcp->doff * 4;

	if (optlen <= sizeof(*tcp))
		return -1; /* no options: untagged */
	optlen -= sizeof(*tcp);
	if (optlen > MAX_OPT_BYTES)
		return -1;
	if (bpf_skb_load_bytes(skb, tcp_off + sizeof(*tcp), scan->opts, optlen) < 0)
		return -1;
	scan->len = optlen;
	/* fast paths for Linux's layout (NOP NOP TS first): TS alone = untagged; TS then
	 * the option. Anything else: scan the list. */
	if (scan->opts[0] == TCPOPT_NOP && scan->opts[1] == TCPOPT_NOP &&
	    scan->opts[2] == TCPOPT_TIMESTAMP && scan->opts[3] == TCPOLEN_TIMESTAMP &&
	    (optlen == TCPOLEN_TSTAMP_ALIGNED ||
	     (scan->opts[TCPOLEN_TSTAMP_ALIGNED] == TCP_INT_OPT_KIND &&
	      scan->opts[TCPOLEN_TSTAMP_ALIGNED + 1] == TCP_INT_OPT_LEN &&
	      optlen >= TCPOLEN_TSTAMP_ALIGNED + TCP_INT_OPT_LEN)))
		scan->found = optlen == TCPOLEN_TSTAMP_ALIGNED ? -1 : TCPOLEN_TSTAMP_ALIGNED;
	else
		bpf_loop(MAX_OPT_BYTES, scan_step, scan, 0);
	return scan->found;
}

/* Where the fields this hop writes stand in the option, by version. */
struct opt_fields {
	__u32 ival, hop, lat;
	__u8 tfk;
};

static __always_inline void option_fields(struct opt_scan *scan, int at, struct opt_fields *f)
{
	if (version == TCP_INT_VERSION_V02) {
		f->ival = TCP_INT_V02_OFF_INTVAL;
		f->hop = TCP_INT_V02_OFF_ID;
		f->lat = TCP_INT_V02_OFF_SWLAT;
		f->tfk = TCP_INT_TFK_SWITCH_DEFAULT;
	} else {
		f->ival = TCP_INT_V04_OFF_INTVAL;
		f->hop = TCP_INT_V04_OFF_HOPID;
		f->lat = TCP_INT_V04_OFF_HOPLAT;
		f->tfk = scan->opts[(at + TCP_INT_V04_OFF_TFK_LS) & 63] >> 4;
	}
}

/* The egress port's settings and state, its utilization window advanced by this packet;
 * NULL for a port without settings (stamped with zero rate, HopID = TTL). */
static __always_inline struct tcp_int_port *port_update(struct __sk_buff *skb,
							 struct egress_qdisc *root)
{
	struct tcp_int_port_key key = {};
	struct tcp_int_port *port;
	__u64 now, sent;

	egress_qdisc(skb, root, EGRESS_BACKLOG | EGRESS_SENT);
	key.netns = root->netns;
	key.ifindex = skb->ifindex;
	port = bpf_map_lookup_elem(&tcp_int_ports, &key);
	if (!port)
		return NULL;
	now = bpf_ktime_get_ns();
	sent = root->has_counter ? root->sent_bytes : port->own_bytes + skb->len;
	if (!root->has_counter)
		port->own_bytes = sent;
	port->n_tagged++;
	port->last_backlog = root->backlog;
	if (!port->win_start_ns) {
		port->win_start_ns = now;
		port->win_start_bytes = sent;
	} else if (now - port->win_start_ns >= util_window_ns && port->rate_bps) {
		__u64 u = (sent - port->win_start_bytes) * 8 * 1000000000ULL /
			  (now - port->win_start_ns) * TCP_INT_UTIL_ONE / port->rate_bps;

		port->util = u > TCP_INT_UTIL_ONE ? TCP_INT_UTIL_ONE : u;
		port->win_start_ns = now;
		port->win_start_bytes = sent;
	}
	return port;
}

/* What this hop contributes to the option. */
struct hop_stamp {
	__u8 local;   /* this port's INTval */
	__u8 hop_id;  /* HopID written with it */
	__u8 ls;      /* LinkSpeed code (v0.4) */
	__u64 lat_ns; /* latency through this port */
};

/* Apply the rule to the option at TCP offset `rel` in place: the 8-byte window
 * [base, base+8) at an even TCP offset covers the rewritten bytes (checksum words stay
 * aligned), held as a big-endian u64 (byte k = bits 56-8k); the checksum is fixed by
 * difference. Returns 1 when this hop's INTval won. */
static __always_inline int stamp_option(struct __sk_buff *skb, __u32 tcp_off, __u32 rel,
					struct opt_fields *f, struct hop_stamp *h)
{
	__u32 base = rel & ~1U;
	__u32 shift0 = (rel - base) - TCP_INT_SW_FIRST; /* window index of option byte 0, mod 8 */
	__u64 w, w_old, w_new, sum;
	int won = 0;

	if (bpf_skb_load_bytes(skb, tcp_off + base, &w_old, 8) < 0)
		return 0;
	w = bpf_be64_to_cpu(w_old);
#define SH(off) (56 - 8 * ((shift0 + (off)) & 7))
#define GET(off) ((__u8)(w >> SH(off)))
#define PUT(off, v) (w = (w & ~(0xffULL << SH(off))) | ((__u64)(__u8)(v) << SH(off)))
	if (h->local > GET(f->ival) || !GET(f->hop)) {
		PUT(f->ival, h->local);
		PUT(f->hop, h->hop_id);
		if (version != TCP_INT_VERSION_V02)
			PUT(TCP_INT_V04_OFF_TFK_LS, (GET(TCP_INT_V04_OFF_TFK_LS) & 0xf0) | (h->ls & 0xf));
		won = 1;
	}
	/* HopLat: upper 24 bits of a 32-bit ns sum; add at ns resolution, saturate */
	sum = (((__u64)GET(f->lat) << 16 | (__u64)GET(f->lat + 1) << 8 | GET(f->lat + 2))
	       << TCP_INT_HOPLAT_SHIFT) + h->lat_ns;
	if (sum > 0xffffffffULL)
		sum = 0xffffffffULL;
	sum >>= TCP_INT_HOPLAT_SHIFT;
	PUT(f->lat, sum >> 16);
	PUT(f->lat + 1, sum >> 8);
	PUT(f->lat + 2, sum);
#undef PUT
#undef GET
#undef SH
	w_new = bpf_cpu_to_be64(w);
	if (w_new == w_old)
		return won;
	if (bpf_skb_store_bytes(skb, tcp_off + base, &w_new, 8, 0) < 0)
		return won;
	/* by-difference update; a no-op for CHECKSUM_PARTIAL (the NIC/GSO sums it later) */
	bpf_l4_csum_replace(skb, tcp_off + offsetof(struct tcphdr, check), 0,
			    bpf_csum_diff((__be32 *)&w_old, 8, (__be32 *)&w_new, 8, 0), 0);
	return won;
}

SEC("tc")
int tcp_int_switch(struct __sk_buff *skb)
{
	struct opt_scan scan = {.found = -1};
	struct egress_qdisc root = {};
	struct opt_fields f;
	struct hop_stamp h = {};
	struct tcp_int_port *port;
	struct tcphdr *tcp;
	struct cursor c;
	void *data;
	__u32 tcp_off, seg_len, util = 0;
	__u64 rate = 0;
	int ttl, at;
	__u8 freq;

	data = (void *)(long)skb->data;
	c.end = (void *)(long)skb->data_end;
	seg_len = skb->len;
	if (c.end - data < LINEAR_MIN && c.end - data < seg_len) {
		/* base headers outside the linear part (never for the local stack's TCP, whose
		 * whole header is linear): pull them in. Never pulled otherwise: a pull on a
		 * cloned skb (every TCP segment) would copy its head. Options are read with
		 * bpf_skb_load_bytes, which also reads non-linear data. */
		bpf_skb_pull_data(skb, seg_len < LINEAR_WANT ? seg_len : LINEAR_WANT);
		data = (void *)(long)skb->data;
		c.end = (void *)(long)skb->data_end;
	}
	c.pos = data;
	tcp = parse_tcp_packet(&c, &ttl);
	if (!tcp)
		goto out;
	tcp_off = (void *)tcp - data;
	at = find_option(skb, tcp, tcp_off, &scan);
	if (at < 0 || at > MAX_OPT_BYTES - TCP_INT_OPT_LEN) /* 2nd test: verifier bound */
		goto out;
	option_fields(&scan, at, &f);

	port = port_update(skb, &root);
	if (port) {
		rate = port->rate_bps;
		h.hop_id = port->hop_id;
		h.ls = port->ls_code;
		util = port->util;
	}
	if (!h.hop_id)
		h.hop_id = ttl;

	freq = tag_every_key[f.tfk & 0xf];
	if (freq > 1 && bpf_get_prandom_u32() % freq)
		goto out; /* not this one: the switch samples the packets it tags */

	/* this port's latency: drain the backlog, then serialize this packet (one segment of
	 * a GSO packet) */
	seg_len = skb->gso_segs > 1 ? skb->len / skb->gso_segs : skb->len;
	if (rate)
		h.lat_ns = ((__u64)root.backlog + seg_len) * 8 * 1000000000ULL / rate;
	h.local = tcp_int_encode(version, scale, root.backlog, util, rate);
	if (stamp_option(skb, tcp_off, sizeof(*tcp) + at + TCP_INT_SW_FIRST, &f, &h) && port)
		port->n_stamped++;
out:
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
