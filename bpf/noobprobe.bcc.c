/* noobprobe.bcc.c — in-band per-hop latency probes cloned from the application's packets.
 *
 * Egress (tc clsact, direct action), chained by tail calls through np_tc_progs:
 *   np_tc_entry  passes our own second passes (NP_CLONE_MARK / NP_PROBE_MARK, app's mark
 *                restored), jumps on the EtherType to
 *   np_tc_v4 / np_tc_v6  look the (src, dst) pair up in np_dests, check the host's global
 *                budget and the destination's per-hop budget, pick the TTL; if a probe is
 *                due they put id/TTL/seq/offsets into skb->cb and jump to
 *   np_tc_tcp / np_tc_udp / np_tc_icmp  which re-inject the app packet untouched with
 *                bpf_clone_redirect (same ifindex, egress) and turn the remaining copy into
 *                the probe: truncated to L3 + minimal L4 header, TTL/hop limit set,
 *                sequence written, checksums recomputed, recorded in np_outstanding, and
 *                redirected to the same egress (so the qdisc sees its real length).
 * Ingress (XDP), chained through np_xdp_progs:
 *   np_xdp_entry → np_xdp_v4 / np_xdp_v6  match ICMP/ICMPv6 time-exceeded to outstanding
 *                probes by the quoted (src, dst) and sequence, append a sample to the
 *                per-CPU ring np_results and drop the message (pass: host setting); any
 *                other packet from a destination refreshes its hop-count estimate.
 *
 * Sequence carriers (survive in the quote of every router that quotes 8 bytes of L4,
 * except IPv6 UDP which relies on ICMPv6 quoting as much as fits 1280 bytes):
 * TCP th_seq; IPv4 UDP IP id; IPv6 UDP a 4-byte payload word; ICMP echo seq.
 * Settings live in np_hosts (runtime) so one compiled object serves every host of a run.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>
#include "common/parse.h"
#include "noobprobe.h"

#define ETH_LEN 14
#define IP_MF_OFFSET 0x3fff     /* MF flag | fragment offset (host order) */
#define TCP_SYN 0x02
#define TCP_RST 0x04

BPF_ARRAY(np_hosts, struct np_host, NP_MAX_HOSTS);
BPF_HASH(np_dests, struct np_dest_key, u32, NP_MAX_DESTS);
BPF_ARRAY(np_dstate, struct np_dest_state, NP_MAX_DESTS);
BPF_TABLE("lru_hash", struct np_probe_key, struct np_probe, np_outstanding, NP_MAX_OUTSTANDING);
BPF_PERCPU_ARRAY(np_results, struct np_result, NP_RESULT_SLOTS);
BPF_PERCPU_ARRAY(np_head, u64, 1);
BPF_PERCPU_ARRAY(np_stats, u64, NP_ST_MAX);
/* The app's skb->mark while one of our marks stands in for it: set just before a
 * redirect, read back by np_tc_entry in the nested pass on the same CPU. */
BPF_PERCPU_ARRAY(np_mark_stash, u32, 1);
BPF_PROG_ARRAY(np_tc_progs, NP_TC_SLOTS);
BPF_PROG_ARRAY(np_xdp_progs, NP_XDP_SLOTS);

/* ---- helpers --------------------------------------------------------------------- */

static __always_inline void st_inc(u32 i)
{
	u64 *v = np_stats.lookup(&i);
	if (v)
		(*v)++;         /* per-CPU slot: no other writer */
}

/* The EtherType (host order) after the Ethernet header, or -1. */
static __always_inline int np_ethertype(struct cursor *c)
{
	int proto;

	return parse_eth(c, &proto) ? proto : -1;
}

static __always_inline u16 csum_fold32(u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (u16)s;
}

/* Ones'-complement sum of the TCP/UDP/ICMPv6 pseudo header (unfolded; 0 for ICMPv4). */
static __always_inline u32 pseudo_sum(struct __sk_buff *skb, u32 fam, u32 proto, u32 l4len)
{
	if (fam == 4) {
		struct { __be32 s, d; u8 z, p; __be16 len; } ph = {};
		if (proto == IPPROTO_ICMP)
			return 0;
		if (bpf_skb_load_bytes(skb, ETH_LEN + 12, &ph.s, 8))
			return 0;
		ph.p = proto;
		ph.len = bpf_htons(l4len);
		return (u32)bpf_csum_diff(NULL, 0, (void *)&ph, sizeof(ph), 0);
	} else {
		struct { u8 s[16], d[16]; __be32 len; u8 z[3], nh; } ph = {};
		if (bpf_skb_load_bytes(skb, ETH_LEN + 8, &ph.s, 32))
			return 0;
		ph.len = bpf_htonl(l4len);
		ph.nh = proto;
		return (u32)bpf_csum_diff(NULL, 0, (void *)&ph, sizeof(ph), 0);
	}
}

static __always_inline void np_stash_mark(struct __sk_buff *skb)
{
	u32 zero = 0, *slot = np_mark_stash.lookup(&zero);
	if (slot)
		*slot = skb->mark;
}

/* Re-inject the app's packet untouched, marked so np_tc_entry lets it pass. */
static __always_inline int np_clone(struct __sk_buff *skb)
{
	u32 mark = skb->mark;
	np_stash_mark(skb);
	skb->mark = NP_CLONE_MARK;
	long r = bpf_clone_redirect(skb, skb->ifindex, 0);
	skb->mark = mark;       /* the remaining copy (the probe) keeps the app's mark */
	if (r) {
		st_inc(NP_ST_CLONE_FAIL);
		return -1;
	}
	return 0;
}

/* Send the rewritten probe through the device's egress again instead of letting it go
 * on: the qdisc would charge it the length of the packet it was cut from. */
static __always_inline int np_send(struct __sk_buff *skb)
{
	np_stash_mark(skb);
	skb->mark = NP_PROBE_MARK;
	return bpf_redirect(skb->ifindex, 0);
}

/* Truncate the probe to l4off + l4len and rewrite the L3 header: length, TTL/hop limit,
 * IPv4 id (if set_id) and IPv4 header checksum. */
static __always_inline int np_rewrite_l3(struct __sk_buff *skb, u32 fam, u32 l4off,
					 u32 l4len, u32 ttl, int set_id, u16 id)
{
	if (bpf_skb_change_tail(skb, l4off + l4len, 0))
		return -1;
	if (fam == 4) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_LEN, &ip, sizeof(ip)))
			return -1;
		__be16 old_len = ip.tot_len, new_len = bpf_htons(l4off - ETH_LEN + l4len);
		u16 old_tp = *(u16 *)&ip.ttl;   /* TTL and protocol share one 16-bit word */
		ip.ttl = ttl;
		u16 new_tp = *(u16 *)&ip.ttl;
		if (bpf_l3_csum_replace(skb, ETH_LEN + offsetof(struct iphdr, check),
					old_len, new_len, 2) ||
		    bpf_l3_csum_replace(skb, ETH_LEN + offsetof(struct iphdr, check),
					old_tp, new_tp, 2))
			return -1;
		if (set_id) {
			__be16 nid = bpf_htons(id);
			if (bpf_l3_csum_replace(skb, ETH_LEN + offsetof(struct iphdr, check),
						ip.id, nid, 2) ||
			    bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct iphdr, id),
						&nid, 2, 0))
				return -1;
		}
		if (bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct iphdr, tot_len),
					&new_len, 2, 0) ||
		    bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct iphdr, ttl), &ip.ttl, 1, 0))
			return -1;
	} else {
		__be16 plen = bpf_htons(l4len);
		u8 hl = ttl;
		if (bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct ipv6hdr, payload_len),
					&plen, 2, 0) ||
		    bpf_skb_store_bytes(skb, ETH_LEN + offsetof(struct ipv6hdr, hop_limit),
					&hl, 1, 0))
			return -1;
	}
	return 0;
}

/* Write the L4 header `hdr` (len bytes, a multiple of 4) with its checksum at `coff`.
 * The app packet's checksum tells the mode: if it equals the folded pseudo-header sum of
 * its original length, the skb is CHECKSUM_PARTIAL (the NIC/stack finalises it later), so
 * the probe gets the pseudo-header sum of its new length; otherwise the checksum is
 * computed in full here. `zero_ok`: an IPv4 UDP checksum of 0 means none, keep it. */
static __always_inline int np_write_l4(struct __sk_buff *skb, u32 fam, u32 proto, u32 l4off,
				       u8 *hdr, u32 len, u32 coff, u16 orig_check,
				       u32 orig_l4len, int zero_ok)
{
	u16 check = 0;
	if (!(zero_ok && orig_check == 0)) {
		u32 pnew = pseudo_sum(skb, fam, proto, len);
		int partial = proto != IPPROTO_ICMP &&
			orig_check == csum_fold32(pseudo_sum(skb, fam, proto, orig_l4len));
		if (partial) {
			check = csum_fold32(pnew);
		} else {
			*(u16 *)(hdr + coff) = 0;
			s64 s = bpf_csum_diff(NULL, 0, (void *)hdr, len, pnew);
			check = ~csum_fold32((u32)s);
			if (proto == IPPROTO_UDP && check == 0)
				check = 0xffff;
		}
	}
	*(u16 *)(hdr + coff) = check;
	return bpf_skb_store_bytes(skb, l4off, hdr, len, 0) ? -1 : 0;
}

static __always_inline void np_record(struct __sk_buff *skb, u32 id, u32 wire, u32 proto,
				      u32 origseq, u16 sport, u16 dport, u16 ipid, u32 ttl)
{
	struct np_probe_key k = {.dest = id, .seq = wire, .proto = proto};
	struct np_probe p = {};
	p.send_ns = bpf_ktime_get_ns();
	p.origseq = origseq;
	p.sport = sport;
	p.dport = dport;
	p.ipid = ipid;
	p.ttl = ttl;
	p.send_cpu = bpf_get_smp_processor_id();
	np_outstanding.update(&k, &p);
	st_inc(NP_ST_PROBES);
}

/* A hop as an index into hop_last_ns. The mask is a no-op after the callers' bound
 * checks, but clang would index with an unchecked copy of the register (verifier): the
 * empty asm hides the value so the mask stays. */
static __always_inline u32 np_idx(u32 hop)
{
	asm volatile("" : "+r"(hop));
	return hop & NP_MAX_HOPS;
}

static __always_inline u32 np_ctz64(u64 v)
{
	u32 n = 0;
	if (!(v & 0xffffffffULL)) { n += 32; v >>= 32; }
	if (!(v & 0xffff)) { n += 16; v >>= 16; }
	if (!(v & 0xff)) { n += 8; v >>= 8; }
	if (!(v & 0xf)) { n += 4; v >>= 4; }
	if (!(v & 0x3)) { n += 2; v >>= 2; }
	if (!(v & 0x1)) n += 1;
	return n;
}

/* Hops to probe in `round`: those that answered in this or the previous epoch, except
 * in the first rounds and every NP_RETRY_ROUNDS-th round, when every hop is tried. */
static __always_inline u64 np_mask(struct np_dest_state *st, u32 round, u64 all)
{
	if (round > NP_LEARN_ROUNDS && (round % NP_RETRY_ROUNDS) != 0)
		return all & (st->responded | st->responded_prev);
	return all;
}

/* Is a probe to dest `id` due now? If so claim it and return TTL and sequence. */
static __always_inline int np_choose(u32 id, u32 *ttl, u32 *seq)
{
	struct np_dest_state *st = np_dstate.lookup(&id);
	if (!st)
		return -1;
	u32 hid = st->host;
	struct np_host *h = np_hosts.lookup(&hid);
	if (!h || !h->active)
		return -1;
	if (st->hops < 2) {     /* hop count unknown, or no router in between */
		st_inc(NP_ST_NOHOPS);
		return -1;
	}
	u32 maxh = st->hops - 1;
	if (maxh > NP_MAX_HOPS)
		maxh = NP_MAX_HOPS;
	u64 now = bpf_ktime_get_ns();
	u64 last = st->last_probe_ns;
	if (now - last < h->hop_interval_ns / maxh)
		return -1;
	u64 glast = h->last_probe_ns;
	if (now - glast < h->global_interval_ns) {
		st_inc(NP_ST_RATE_GLOBAL);
		return -1;
	}
	/* One CPU wins the destination; the others let their packets go unprobed. */
	if (__sync_val_compare_and_swap(&st->last_probe_ns, last, now) != last)
		return -1;

	/* Round robin over the hops that answer (all hops in the first rounds and in every
	 * NP_RETRY_ROUNDS-th round): the next set bit of `mask` at or after next_hop. */
	u32 hop = st->next_hop, round = st->round;
	u64 all = (2ULL << maxh) - 2;           /* bits 1..maxh */
	u64 m = 0;
	if (hop >= 1 && hop <= maxh)
		m = np_mask(st, round, all) & ~((1ULL << hop) - 1);
	if (!m) {
		round++;
		if (round % NP_RETRY_ROUNDS == 0) {     /* a new epoch: age the answers */
			st->responded_prev = st->responded;
			st->responded = 0;      /* a reply racing this is counted next time */
		}
		m = np_mask(st, round, all);
	}
	if (!m) {                               /* no hop answers: wait for a retry round */
		st->round = round;
		st->next_hop = 0;
		st_inc(NP_ST_RATE_HOP);
		return -1;
	}
	hop = np_ctz64(m);
	if (hop > NP_MAX_HOPS)                  /* verifier */
		return -1;
	if (now - st->hop_last_ns[np_idx(hop)] < h->hop_interval_ns) {
		st_inc(NP_ST_RATE_HOP);         /* least recently probed hop not due: none is */
		return -1;
	}
	if (__sync_val_compare_and_swap(&h->last_probe_ns, glast, now) != glast) {
		st_inc(NP_ST_RATE_GLOBAL);
		return -1;
	}
	st->hop_last_ns[np_idx(hop)] = now;
	st->round = round;
	st->next_hop = hop + 1;
	*ttl = hop;
	*seq = st->next_seq++;
	return 0;
}

/* Common tail of np_tc_v4/v6: can this L4 packet be probed, and is a probe due? */
static __always_inline void np_dispatch(struct __sk_buff *skb, u32 id, u32 fam, u32 proto,
					u32 l4off)
{
	u32 slot;
	u8 b[2];
	if (proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, l4off + 13, b, 1) || (b[0] & (TCP_SYN | TCP_RST)))
			return;
		slot = NP_TC_TCP;
	} else if (proto == IPPROTO_UDP) {
		slot = NP_TC_UDP;
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		/* only echo requests: other ICMP has no sequence to carry */
		if (bpf_skb_load_bytes(skb, l4off, b, 1) || b[0] != (fam == 4 ? 8 : 128))
			return;
		slot = NP_TC_ICMP;
	} else {
		return;
	}
	u32 ttl, seq;
	if (np_choose(id, &ttl, &seq))
		return;
	skb->cb[NP_CB_ID] = id + 1;
	skb->cb[NP_CB_TTL] = ttl;
	skb->cb[NP_CB_SEQ] = seq;
	skb->cb[NP_CB_L3] = (fam << 16) | l4off;
	np_tc_progs.call(skb, slot);
}

/* ---- egress programs --------------------------------------------------------------- */

int np_tc_entry(struct __sk_buff *skb)
{
	if (skb->mark == NP_CLONE_MARK || skb->mark == NP_PROBE_MARK) {
		u32 zero = 0, *app_mark = np_mark_stash.lookup(&zero);
		st_inc(skb->mark == NP_CLONE_MARK ? NP_ST_CLONE_SEEN : NP_ST_PROBE_SEEN);
		skb->mark = app_mark ? *app_mark : 0;
		goto out;
	}
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		st_inc(NP_ST_EGRESS);
		np_tc_progs.call(skb, NP_TC_V4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		st_inc(NP_ST_EGRESS);
		np_tc_progs.call(skb, NP_TC_V6);
	}
out:
	return TC_ACT_OK;
}

int np_tc_v4(struct __sk_buff *skb)
{
	struct cursor c = {(void *)(long)skb->data, (void *)(long)skb->data_end};
	struct np_dest_key k = {};
	struct iphdr *ip;
	if (np_ethertype(&c) != ETH_P_IP || !(ip = parse_ipv4(&c)))
		goto out;
	if (ip->frag_off & bpf_htons(IP_MF_OFFSET))   /* fragments carry no L4 header */
		goto out;
	__builtin_memcpy(k.src, &ip->saddr, 4);
	__builtin_memcpy(k.dst, &ip->daddr, 4);
	k.family = 4;
	u32 *id = np_dests.lookup(&k);
	if (!id)
		goto out;
	st_inc(NP_ST_DEST);
	np_dispatch(skb, *id, 4, ip->protocol, ETH_LEN + ip->ihl * 4);
out:
	return TC_ACT_OK;
}

int np_tc_v6(struct __sk_buff *skb)
{
	struct cursor c = {(void *)(long)skb->data, (void *)(long)skb->data_end};
	struct np_dest_key k = {};
	struct ipv6hdr *ip6;
	if (np_ethertype(&c) != ETH_P_IPV6 || !(ip6 = parse_ipv6(&c)))
		goto out;
	__builtin_memcpy(k.src, &ip6->saddr, 16);
	__builtin_memcpy(k.dst, &ip6->daddr, 16);
	k.family = 6;
	u32 *id = np_dests.lookup(&k);
	if (!id)
		goto out;
	st_inc(NP_ST_DEST);
	/* extension headers are not walked: only TCP/UDP/ICMPv6 right after the header */
	np_dispatch(skb, *id, 6, ip6->nexthdr, ETH_LEN + sizeof(*ip6));
out:
	return TC_ACT_OK;
}

/* cb → (id, ttl, seq, fam, l4off); -1 if the IP program did not hand over a probe. */
static __always_inline int np_cb(struct __sk_buff *skb, u32 *id, u32 *ttl, u32 *seq,
				 u32 *fam, u32 *l4off)
{
	u32 id1 = skb->cb[NP_CB_ID];
	if (!id1)
		return -1;
	*id = id1 - 1;
	*ttl = skb->cb[NP_CB_TTL];
	*seq = skb->cb[NP_CB_SEQ];
	*fam = skb->cb[NP_CB_L3] >> 16;
	*l4off = skb->cb[NP_CB_L3] & 0xffff;
	skb->cb[NP_CB_ID] = 0;
	if (*l4off > ETH_LEN + 60)      /* verifier: bounds the offsets below */
		return -1;
	return 0;
}

static __always_inline u32 np_l4len(struct __sk_buff *skb, u32 fam, u32 l4off)
{
	__be16 v;
	if (fam == 4) {
		if (bpf_skb_load_bytes(skb, ETH_LEN + 2, &v, 2))
			return 0;
		return bpf_ntohs(v) - (l4off - ETH_LEN);
	}
	if (bpf_skb_load_bytes(skb, ETH_LEN + 4, &v, 2))
		return 0;
	return bpf_ntohs(v);
}

int np_tc_tcp(struct __sk_buff *skb)
{
	u32 id, ttl, seq, fam, l4off;
	u8 th[20];
	if (np_cb(skb, &id, &ttl, &seq, &fam, &l4off) ||
	    bpf_skb_load_bytes(skb, l4off, th, sizeof(th)))
		goto out;
	u32 orig_l4len = np_l4len(skb, fam, l4off);
	u16 orig_check = *(u16 *)(th + 16);
	u32 origseq = bpf_ntohl(*(__be32 *)(th + 4));
	u16 sport = bpf_ntohs(*(__be16 *)th), dport = bpf_ntohs(*(__be16 *)(th + 2));
	u16 ipid = 0;
	if (fam == 4) {
		__be16 v;
		if (bpf_skb_load_bytes(skb, ETH_LEN + 4, &v, 2) == 0)
			ipid = bpf_ntohs(v);
	}
	if (np_clone(skb))
		goto out;       /* the app packet is still this skb: pass it as it is */
	*(__be32 *)(th + 4) = bpf_htonl(seq);
	th[12] = 0x50 | (th[12] & 0x0f);       /* data offset 5: options cut */
	if (np_rewrite_l3(skb, fam, l4off, sizeof(th), ttl, 0, 0) ||
	    np_write_l4(skb, fam, IPPROTO_TCP, l4off, th, sizeof(th), 16, orig_check,
			orig_l4len, 0)) {
		st_inc(NP_ST_REWRITE_FAIL);
		return TC_ACT_SHOT;     /* half-rewritten copy: never send it */
	}
	np_record(skb, id, seq, IPPROTO_TCP, origseq, sport, dport, ipid, ttl);
	return np_send(skb);
out:
	return TC_ACT_OK;
}

int np_tc_udp(struct __sk_buff *skb)
{
	u32 id, ttl, seq, fam, l4off;
	u8 uh[12] = {};
	if (np_cb(skb, &id, &ttl, &seq, &fam, &l4off) || bpf_skb_load_bytes(skb, l4off, uh, 8))
		goto out;
	u32 orig_l4len = np_l4len(skb, fam, l4off);
	u16 orig_check = *(u16 *)(uh + 6);
	u16 sport = bpf_ntohs(*(__be16 *)uh), dport = bpf_ntohs(*(__be16 *)(uh + 2));
	u32 origseq = 0, wire = seq;
	if (fam == 4) {
		__be16 v;
		if (bpf_skb_load_bytes(skb, ETH_LEN + 4, &v, 2) == 0)
			origseq = bpf_ntohs(v);
		wire = seq & 0xffff;    /* carried in the IPv4 id, inside every quote */
	}
	if (np_clone(skb))
		goto out;
	*(__be16 *)(uh + 4) = bpf_htons(12);
	*(__be32 *)(uh + 8) = bpf_htonl(seq);
	if (np_rewrite_l3(skb, fam, l4off, sizeof(uh), ttl, fam == 4, wire) ||
	    np_write_l4(skb, fam, IPPROTO_UDP, l4off, uh, sizeof(uh), 6, orig_check,
			orig_l4len, fam == 4)) {
		st_inc(NP_ST_REWRITE_FAIL);
		return TC_ACT_SHOT;
	}
	np_record(skb, id, wire, IPPROTO_UDP, origseq, sport, dport, fam == 4 ? wire : 0, ttl);
	return np_send(skb);
out:
	return TC_ACT_OK;
}

int np_tc_icmp(struct __sk_buff *skb)
{
	u32 id, ttl, seq, fam, l4off;
	u8 ih[8];
	if (np_cb(skb, &id, &ttl, &seq, &fam, &l4off) || bpf_skb_load_bytes(skb, l4off, ih, 8))
		goto out;
	u32 orig_l4len = np_l4len(skb, fam, l4off);
	u32 proto = fam == 4 ? IPPROTO_ICMP : IPPROTO_ICMPV6;
	u16 orig_check = *(u16 *)(ih + 2);
	u16 echo_id = bpf_ntohs(*(__be16 *)(ih + 4));
	u32 origseq = bpf_ntohs(*(__be16 *)(ih + 6));
	u16 ipid = 0;
	if (fam == 4) {
		__be16 v;
		if (bpf_skb_load_bytes(skb, ETH_LEN + 4, &v, 2) == 0)
			ipid = bpf_ntohs(v);
	}
	u32 wire = seq & 0xffff;
	if (np_clone(skb))
		goto out;
	*(__be16 *)(ih + 6) = bpf_htons(wire);
	if (np_rewrite_l3(skb, fam, l4off, sizeof(ih), ttl, 0, 0) ||
	    np_write_l4(skb, fam, proto, l4off, ih, sizeof(ih), 2, orig_check, orig_l4len, 0)) {
		st_inc(NP_ST_REWRITE_FAIL);
		return TC_ACT_SHOT;
	}
	np_record(skb, id, wire, proto, origseq, echo_id, 0, ipid, ttl);
	return np_send(skb);
out:
	return TC_ACT_OK;
}

/* ---- ingress programs -------------------------------------------------------------- */

/* Re-infer the destination's distance from a packet it sent (at most once a second),
 * assuming an initial TTL of 32, 64, 128 or 255. */
static __always_inline void np_learn(u32 id, u32 ttl)
{
	struct np_dest_state *st = np_dstate.lookup(&id);
	if (!st || st->fixed_hops || ttl == 0)
		return;
	u64 now = bpf_ktime_get_ns();
	if (st->hops && now - st->hops_update_ns < 1000000000ULL)
		return;
	u32 init = ttl <= 32 ? 32 : ttl <= 64 ? 64 : ttl <= 128 ? 128 : 255;
	st->hops = init - ttl + 1;
	st->hops_update_ns = now;
	st_inc(NP_ST_HOPS_LEARNT);
}

/* A time-exceeded quoting probe (id, wire, proto): append the sample, clear the probe.
 * Returns the XDP action. */
static __always_inline int np_match(u32 id, u32 wire, u32 proto, u32 fam, void *responder,
				    u32 rlen, u32 recvttl, u16 inipid)
{
	u64 now = bpf_ktime_get_ns();
	struct np_probe_key k = {.dest = id, .seq = wire, .proto = proto};
	struct np_probe *p = np_outstanding.lookup(&k);
	if (!p)
		return XDP_PASS;        /* not ours (or already given up on): the stack decides */
	st_inc(NP_ST_MATCHED);
	u32 zero = 0;
	u64 *head = np_head.lookup(&zero);
	if (head) {
		u32 slot = *head % NP_RESULT_SLOTS;
		struct np_result *r = np_results.lookup(&slot);
		if (r) {
			r->send_ns = p->send_ns;
			r->recv_ns = now;
			r->seq = wire;
			r->origseq = p->origseq;
			r->dest = id;
			r->recv_cpu = bpf_get_smp_processor_id();
			__builtin_memset(r->responder, 0, 16);
			if (rlen == 4)
				__builtin_memcpy(r->responder, responder, 4);
			else
				__builtin_memcpy(r->responder, responder, 16);
			r->sport = p->sport;
			r->dport = p->dport;
			r->outipid = p->ipid;
			r->inipid = inipid;
			r->outttl = p->ttl;
			r->recvttl = recvttl;
			r->proto = proto;
			r->family = fam;
			*head += 1;     /* after the slot is complete: the reader trusts slots < head */
		}
	}
	u32 hop = p->ttl;
	np_outstanding.delete(&k);
	struct np_dest_state *st = np_dstate.lookup(&id);
	int act = XDP_DROP;
	if (st) {
		if (hop <= NP_MAX_HOPS)
			__sync_fetch_and_or(&st->responded, 1ULL << hop);
		u32 hid = st->host;
		struct np_host *h = np_hosts.lookup(&hid);
		if (h && h->pass_icmp)
			act = XDP_PASS;
	}
	return act;
}

int np_xdp_entry(struct xdp_md *ctx)
{
	struct cursor c = {(void *)(long)ctx->data, (void *)(long)ctx->data_end};
	int proto = np_ethertype(&c);
	if (proto == ETH_P_IP)
		np_xdp_progs.call(ctx, NP_XDP_V4);
	else if (proto == ETH_P_IPV6)
		np_xdp_progs.call(ctx, NP_XDP_V6);
	return XDP_PASS;
}

int np_xdp_v4(struct xdp_md *ctx)
{
	struct cursor c = {(void *)(long)ctx->data, (void *)(long)ctx->data_end};
	struct np_dest_key k = {};
	struct iphdr *ip, *in;
	int act = XDP_PASS;
	if (np_ethertype(&c) != ETH_P_IP || !(ip = parse_ipv4(&c)))
		goto out;
	k.family = 4;
	if (ip->protocol == IPPROTO_ICMP) {
		u8 *icmp = c.pos;
		if (icmp + 8 > (u8 *)c.end)
			goto out;
		if (icmp[0] == 11 && icmp[1] == 0) {    /* time exceeded in transit */
			st_inc(NP_ST_ICMP_TE);
			c.pos = icmp + 8;
			if (!(in = parse_ipv4(&c)))
				goto out;
			u8 *l4 = c.pos;
			if (l4 + 8 > (u8 *)c.end)       /* RFC 792: 8 bytes of L4 quoted */
				goto out;
			__builtin_memcpy(k.src, &in->saddr, 4);
			__builtin_memcpy(k.dst, &in->daddr, 4);
			u32 *id = np_dests.lookup(&k);
			if (!id)
				goto out;
			u32 wire;
			if (in->protocol == IPPROTO_TCP)
				wire = bpf_ntohl(*(__be32 *)(l4 + 4));
			else if (in->protocol == IPPROTO_UDP)
				wire = bpf_ntohs(in->id);
			else if (in->protocol == IPPROTO_ICMP)
				wire = bpf_ntohs(*(__be16 *)(l4 + 6));
			else
				goto out;
			act = np_match(*id, wire, in->protocol, 4, &ip->saddr, 4, ip->ttl,
				       bpf_ntohs(ip->id));
			goto out;
		}
	}
	/* a packet from a destination to us: refresh the hop estimate */
	__builtin_memcpy(k.src, &ip->daddr, 4);
	__builtin_memcpy(k.dst, &ip->saddr, 4);
	u32 *id = np_dests.lookup(&k);
	if (id)
		np_learn(*id, ip->ttl);
out:
	return act;
}

int np_xdp_v6(struct xdp_md *ctx)
{
	struct cursor c = {(void *)(long)ctx->data, (void *)(long)ctx->data_end};
	struct np_dest_key k = {};
	struct ipv6hdr *ip6, *in;
	int act = XDP_PASS;
	if (np_ethertype(&c) != ETH_P_IPV6 || !(ip6 = parse_ipv6(&c)))
		goto out;
	k.family = 6;
	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		u8 *icmp = c.pos;
		if (icmp + 8 > (u8 *)c.end)
			goto out;
		if (icmp[0] == 3 && icmp[1] == 0) {     /* hop limit exceeded in transit */
			st_inc(NP_ST_ICMP_TE);
			c.pos = icmp + 8;
			if (!(in = parse_ipv6(&c)))
				goto out;
			u8 *l4 = c.pos;
			if (l4 + 8 > (u8 *)c.end)
				goto out;
			__builtin_memcpy(k.src, &in->saddr, 16);
			__builtin_memcpy(k.dst, &in->daddr, 16);
			u32 *id = np_dests.lookup(&k);
			if (!id)
				goto out;
			u32 wire;
			if (in->nexthdr == IPPROTO_TCP)
				wire = bpf_ntohl(*(__be32 *)(l4 + 4));
			else if (in->nexthdr == IPPROTO_UDP && l4 + 12 <= (u8 *)c.end)
				wire = bpf_ntohl(*(__be32 *)(l4 + 8));  /* the payload word */
			else if (in->nexthdr == IPPROTO_ICMPV6)
				wire = bpf_ntohs(*(__be16 *)(l4 + 6));
			else
				goto out;
			act = np_match(*id, wire, in->nexthdr, 6, &ip6->saddr, 16,
				       ip6->hop_limit, 0);
			goto out;
		}
	}
	__builtin_memcpy(k.src, &ip6->daddr, 16);
	__builtin_memcpy(k.dst, &ip6->saddr, 16);
	u32 *id = np_dests.lookup(&k);
	if (id)
		np_learn(*id, ip6->hop_limit);
out:
	return act;
}
