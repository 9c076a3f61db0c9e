// SPDX-License-Identifier: GPL-2.0
/* flowacct — every TCP connection of the experiment's hosts, from the packets themselves.
 *
 * cgroup_skb programs on each host's cgroup (the run's processes live there, so every
 * socket a flow opens is seen):
 * - ingress: SYN / SYN-ACK arrivals (count, first and last), and the payload the host
 *   received — first and last segment with new data, unique bytes by sequence number
 *   (retransmitted and duplicate segments are counted apart, never twice), first FIN.
 * - egress: SYNs and SYN-ACKs the host sent, retransmits included, and when the first
 *   data segment left (how far apart an incast's senders really started).
 * Pure ACKs return at once. Every packet is let through (return 1).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common/parse.h"  /* the EtherTypes */
#include "flowacct.h"

#define FA_TCP 6
#define FA_FIN 0x01
#define FA_SYN 0x02
#define FA_RST 0x04

struct fa_val {                 /* struct fa_rec with the kernel's lock type */
	struct bpf_spin_lock lock;
	__u32 syns;
	__u64 syn_first_ns;
	__u64 syn_last_ns;
	__u64 data_first_ns;
	__u64 start_ns;
	__u64 data_last_ns;
	__u64 bytes;
	__u64 fin_ns;
	__u32 isn;
	__u32 hi;
	__u32 segs;
	__u32 dup_segs;
	__u32 rsts;
	__u8  have_isn;
	__u8  have_hi;
	__u16 pad;
};
_Static_assert(sizeof(struct fa_val) == sizeof(struct fa_rec), "fa_rec layout");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FA_MAX_CONNS);
	__type(key, struct fa_key);
	__type(value, struct fa_val);
} fa_conns SEC(".maps");

/* Records the table had no room for: reported, never silently missing. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fa_full SEC(".maps");

static __always_inline int parse(struct __sk_buff *skb, struct fa_key *k, __u32 *seq,
				 __u8 *flags, __u32 *len)
{
	__u32 l4;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		if (ip.protocol != FA_TCP || (ip.frag_off & bpf_htons(0x1fff)))
			return -1;
		l4 = ip.ihl * 4;
		k->family = 4;
		__builtin_memcpy(k->saddr, &ip.saddr, 4);
		__builtin_memcpy(k->daddr, &ip.daddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		if (ip6.nexthdr != FA_TCP)   /* extension headers: not our flows */
			return -1;
		l4 = sizeof(ip6);
		k->family = 6;
		__builtin_memcpy(k->saddr, &ip6.saddr, 16);
		__builtin_memcpy(k->daddr, &ip6.daddr, 16);
	} else {
		return -1;
	}
	struct tcphdr th;
	__u8 raw[20];

	if (bpf_skb_load_bytes(skb, l4, raw, sizeof(raw)))
		return -1;
	__builtin_memcpy(&th, raw, sizeof(raw));
	__u32 hlen = l4 + (raw[12] >> 4) * 4;

	if (skb->len < hlen)
		return -1;
	*len = skb->len - hlen;       /* skb->len: from the network header on */
	*flags = raw[13];
	*seq = bpf_ntohl(th.seq);
	k->sport = bpf_ntohs(th.source);
	k->dport = bpf_ntohs(th.dest);
	return 0;
}

static __always_inline struct fa_val *record(struct fa_key *k)
{
	struct fa_val *v = bpf_map_lookup_elem(&fa_conns, k);

	if (v)
		return v;
	struct fa_val zero = {};

	/* EEXIST: another CPU made it first; E2BIG: the table is full (counted below) */
	bpf_map_update_elem(&fa_conns, k, &zero, BPF_NOEXIST);
	v = bpf_map_lookup_elem(&fa_conns, k);
	if (!v) {
		__u32 z = 0;
		__u64 *n = bpf_map_lookup_elem(&fa_full, &z);

		if (n)
			*n += 1;
	}
	return v;
}

static __always_inline int account(struct __sk_buff *skb, __u8 dir)
{
	struct fa_key k = {};
	__u32 seq = 0, len = 0;
	__u8 flags = 0;

	if (parse(skb, &k, &seq, &flags, &len))
		return 1;
	if (!(flags & (FA_SYN | FA_FIN | FA_RST)) && len == 0)
		return 1;               /* a pure ACK: nothing to record */
	k.dir = dir;
	if (dir == FA_DIR_OUT && !(flags & (FA_SYN | FA_FIN | FA_RST))) {
		/* data we send: only when the first segment left (no lock, no new record) */
		struct fa_val *o = bpf_map_lookup_elem(&fa_conns, &k);

		if (o && !o->data_first_ns)
			o->data_first_ns = bpf_ktime_get_ns();
		return 1;
	}
	struct fa_val *v = record(&k);

	if (!v)
		return 1;
	__u64 now = bpf_ktime_get_ns();

	bpf_spin_lock(&v->lock);
	if (flags & FA_SYN) {
		v->syns++;
		if (!v->syn_first_ns)
			v->syn_first_ns = now;
		v->syn_last_ns = now;
		if (!v->have_isn) {
			v->isn = seq;
			v->have_isn = 1;
		}
	}
	if (flags & FA_RST)
		v->rsts++;
	if (dir == FA_DIR_IN && len && !(flags & FA_SYN)) {
		__u32 end = seq + len;

		v->segs++;
		if (!v->data_first_ns)
			v->data_first_ns = now;
		if (!v->have_hi) {      /* data starts after the SYN's sequence number */
			v->hi = v->have_isn ? v->isn + 1 : seq;
			v->have_hi = 1;
		}
		if ((__s32)(end - v->hi) > 0) {
			v->bytes += end - v->hi;
			v->hi = end;
			v->data_last_ns = now;
			if (!v->start_ns && v->bytes > FA_START_BYTES)
				v->start_ns = now;
		} else {
			v->dup_segs++;
		}
	}
	if ((flags & FA_FIN) && dir == FA_DIR_IN && !v->fin_ns)
		v->fin_ns = now;
	bpf_spin_unlock(&v->lock);
	return 1;
}

SEC("cgroup_skb/ingress")
int fa_ingress(struct __sk_buff *skb)
{
	return account(skb, FA_DIR_IN);
}

SEC("cgroup_skb/egress")
int fa_egress(struct __sk_buff *skb)
{
	return account(skb, FA_DIR_OUT);
}

char LICENSE[] SEC("license") = "GPL";
