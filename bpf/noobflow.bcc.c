/* noobflow.bcc.c — XDP passive flow collector (bcc).
 *
 * Every frame received on an attach point is parsed (Ethernet, optional 802.1Q,
 * IPv4/IPv6 with extension headers, TCP/UDP ports), checked against a filter held in
 * maps, and added to a per-CPU flow record in the ACTIVE buffer. Always XDP_PASS.
 *
 * Double buffering and the swap protocol
 * --------------------------------------
 * nf_buf0 and nf_buf1 are per-CPU hashes (one value per CPU per flow: no locks, no
 * atomics on the fast path). nf_active is an ARRAY_OF_MAPS with one slot holding the
 * active buffer; userspace flips it by writing the other buffer's fd into the slot.
 *
 * The race: a CPU that looked up the slot just before the flip is still adding to the
 * old buffer while userspace starts draining it; its increment would be lost (read
 * before it lands, then deleted) or, if not cleared, counted in the next interval.
 * We close it with the kernel's own guarantee instead of a hand-made epoch handshake:
 * an update of an ARRAY_OF_MAPS/HASH_OF_MAPS from the bpf() syscall calls
 * synchronize_rcu() before returning (kernel/bpf/syscall.c maybe_wait_bpf_programs).
 * XDP programs run inside an RCU read-side section, so when the flip returns every
 * program run that could have seen the old buffer has finished, and every later run
 * sees the new one. The old buffer is then idle: userspace reads all of it, merges
 * the per-CPU values, and deletes every key before it can become active again.
 * A per-CPU "seen epoch" counter would need a memory barrier on each packet and a
 * timeout for idle CPUs; the grace period needs neither.
 *
 * Attach points: one loaded object serves up to NF_POINTS interfaces (in any
 * namespace) with program copies noobflow_p<N>, each stamping its index into the key,
 * so one compile per run covers every host and switch port.
 */
#include <uapi/linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "common/parse.h"
#include "noobflow.h"

#define NF_V6_EXT_MAX 4  /* extension headers walked before giving up on ports */

BPF_PERCPU_HASH(nf_buf0, struct nf_key, struct nf_rec, NF_MAX_FLOWS);
BPF_PERCPU_HASH(nf_buf1, struct nf_key, struct nf_rec, NF_MAX_FLOWS);
BPF_ARRAY_OF_MAPS(nf_active, "nf_buf0", 1);
BPF_ARRAY(nf_cfg, struct nf_cfg, 1);
BPF_LPM_TRIE(nf_prefixes, struct nf_lpm_key, u8, NF_MAX_PREFIXES);
BPF_HASH(nf_ports, u16, u8, NF_MAX_PORTS);
BPF_ARRAY(nf_protos, u8, 256);
BPF_PERCPU_ARRAY(nf_stats, struct nf_stats, NF_MAX_POINTS);

/* ---- parsing (common/parse.h's cursor): next protocol or -1 ---- */

/* The EtherType after the Ethernet header and one 802.1Q tag, or -1. */
static __always_inline int nf_parse_eth(struct cursor *c)
{
	int proto;

	if (!parse_eth(c, &proto))
		return -1;
	if (proto == ETH_P_8021Q && !parse_vlan(c, &proto))
		return -1;
	return proto;
}

/* Fills addresses (v4-mapped); returns the L4 protocol, or -1. *l4 is set to 0 when
 * the L4 header is not in this packet (non-first fragment). */
static __always_inline int nf_parse_ip4(struct cursor *c, struct nf_key *k, int *l4)
{
	struct iphdr *ip = parse_ipv4(c);

	if (!ip)
		return -1;
	k->src[10] = 0xff;
	k->src[11] = 0xff;
	k->dst[10] = 0xff;
	k->dst[11] = 0xff;
	__builtin_memcpy(&k->src[12], &ip->saddr, 4);
	__builtin_memcpy(&k->dst[12], &ip->daddr, 4);
	*l4 = ipv4_has_l4(ip);
	return ip->protocol;
}

static __always_inline int nf_parse_ip6(struct cursor *c, struct nf_key *k, int *l4)
{
	struct ipv6hdr *ip6 = parse_ipv6(c);

	if (!ip6)
		return -1;
	__builtin_memcpy(k->src, &ip6->saddr, 16);
	__builtin_memcpy(k->dst, &ip6->daddr, 16);
	int nh = ip6->nexthdr;
	*l4 = 1;
#pragma unroll
	for (int i = 0; i < NF_V6_EXT_MAX; i++) {
		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING &&
		    nh != IPPROTO_DSTOPTS && nh != IPPROTO_FRAGMENT)
			break;
		__u8 *ext = c->pos;
		if ((void *)(ext + 8) > c->end)
			return nh;
		if (nh == IPPROTO_FRAGMENT) {
			/* frag offset in bytes 2-3, upper 13 bits */
			if (((ext[2] << 8 | ext[3]) & 0xfff8) != 0)
				*l4 = 0;
			c->pos = ext + 8;
		} else {
			c->pos = ext + (ext[1] + 1) * 8;
		}
		nh = ext[0];
	}
	return nh;
}

/* Ports and TCP flags; leaves them 0 when the header is not there. */
static __always_inline void nf_parse_l4(struct cursor *c, int proto, struct nf_key *k,
					__u32 *tcp_flags)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = c->pos;
		if ((void *)(th + 1) > c->end)
			return;
		k->sport = bpf_ntohs(th->source);
		k->dport = bpf_ntohs(th->dest);
		*tcp_flags = ((__u8 *)th)[13];
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = c->pos;
		if ((void *)(uh + 1) > c->end)
			return;
		k->sport = bpf_ntohs(uh->source);
		k->dport = bpf_ntohs(uh->dest);
	}
}

/* ---- filter ---- */

static __always_inline int nf_pass_filter(struct nf_key *k)
{
	u32 zero = 0;
	struct nf_cfg *cfg = nf_cfg.lookup(&zero);
	if (!cfg) /* verifier: array lookups may fail in its eyes */
		return 1;
	__u32 flags = cfg->flags;
	if (flags & NF_F_PROTO) {
		u32 p = k->proto;
		u8 *ok = nf_protos.lookup(&p);
		if (!ok || !*ok)
			return 0;
	}
	if (flags & NF_F_PORT) {
		u16 sp = k->sport, dp = k->dport;
		if (!nf_ports.lookup(&sp) && !nf_ports.lookup(&dp))
			return 0;
	}
	if (flags & NF_F_PREFIX) {
		struct nf_lpm_key lk = {.prefixlen = 128};
		__builtin_memcpy(lk.addr, k->src, 16);
		if (!nf_prefixes.lookup(&lk)) {
			__builtin_memcpy(lk.addr, k->dst, 16);
			if (!nf_prefixes.lookup(&lk))
				return 0;
		}
	}
	return 1;
}

/* ---- the program ---- */

static __always_inline int nf_collect(struct xdp_md *ctx, u32 point)
{
	/* Whole frame, frags included: veth may hand XDP a non-linear buffer (GRO'd or
	 * copied into page-pool pages), where data_end - data is only the first part. */
	__u64 len = bpf_xdp_get_buff_len(ctx);
	struct cursor c = {(void *)(long)ctx->data, (void *)(long)ctx->data_end};
	struct nf_key key;
	__u32 tcp_flags = 0;
	int l4 = 0, proto;

	struct nf_stats *st = nf_stats.lookup(&point);
	if (!st) /* verifier: point < NF_MAX_POINTS always */
		goto out;
	st->seen_pkts++;
	st->seen_bytes += len;

	__builtin_memset(&key, 0, sizeof(key));
	key.point = point;
	proto = nf_parse_eth(&c);
	if (proto == ETH_P_IP)
		proto = nf_parse_ip4(&c, &key, &l4);
	else if (proto == ETH_P_IPV6)
		proto = nf_parse_ip6(&c, &key, &l4);
	else
		proto = -1;
	if (proto < 0) {
		st->nonip_pkts++;
		st->nonip_bytes += len;
		goto out;
	}
	key.proto = proto;
	if (l4)
		nf_parse_l4(&c, proto, &key, &tcp_flags);

	if (!nf_pass_filter(&key)) {
		st->filtered_pkts++;
		goto out;
	}

	u32 zero = 0;
	void *buf = nf_active.lookup(&zero);
	if (!buf) { /* no buffer installed: userspace not ready; count as lost */
		st->lost_pkts++;
		goto out;
	}
	__u64 now = bpf_ktime_get_ns();
	/* per-CPU value: only this CPU writes it, and XDP is not preempted mid-run */
	struct nf_rec *r = bpf_map_lookup_elem(buf, &key);
	if (r) {
		/* the key may have been created by another CPU: this CPU's slot then starts
		 * zeroed, and its first packet must set first_ns */
		if (r->packets == 0)
			r->first_ns = now;
		r->packets++;
		r->bytes += len;
		r->last_ns = now;
		r->tcp_flags |= tcp_flags;
	} else {
		struct nf_rec n = {.packets = 1, .bytes = len, .first_ns = now,
				   .last_ns = now, .tcp_flags = tcp_flags};
		/* BPF_ANY on a per-CPU hash writes only this CPU's slot, in place if another
		 * CPU inserted the key meanwhile: no lost race with concurrent inserts. */
		if (bpf_map_update_elem(buf, &key, &n, BPF_ANY) != 0) {
			st->lost_pkts++;
			goto out;
		}
	}
	st->recorded_pkts++;
out:
	return XDP_PASS;
}

#define NF_ENTRY(n) \
	int noobflow_p##n(struct xdp_md *ctx) { return nf_collect(ctx, n); }

NF_ENTRY(0)
#if NF_POINTS > 1
NF_ENTRY(1)
#endif
#if NF_POINTS > 2
NF_ENTRY(2)
#endif
#if NF_POINTS > 3
NF_ENTRY(3)
#endif
#if NF_POINTS > 4
NF_ENTRY(4)
#endif
#if NF_POINTS > 5
NF_ENTRY(5)
#endif
#if NF_POINTS > 6
NF_ENTRY(6)
#endif
#if NF_POINTS > 7
NF_ENTRY(7)
#endif
#if NF_POINTS > 8
NF_ENTRY(8)
#endif
#if NF_POINTS > 9
NF_ENTRY(9)
#endif
#if NF_POINTS > 10
NF_ENTRY(10)
#endif
#if NF_POINTS > 11
NF_ENTRY(11)
#endif
#if NF_POINTS > 12
NF_ENTRY(12)
#endif
#if NF_POINTS > 13
NF_ENTRY(13)
#endif
#if NF_POINTS > 14
NF_ENTRY(14)
#endif
#if NF_POINTS > 15
NF_ENTRY(15)
#endif
#if NF_POINTS > NF_MAX_POINTS
#error "NF_POINTS exceeds NF_MAX_POINTS"
#endif
