// SPDX-License-Identifier: GPL-2.0
/* TCP-INT host side: a sockops program attached to the experiment's cgroups.
 *
 * - ACTIVE/PASSIVE_ESTABLISHED: enable the header-option callbacks (SYN/SYN-ACK carry none).
 * - HDR_OPT_LEN_CB: reserve the 12-byte option on 1 in `tag_every` data segments (wire
 *   segments: a send is tagged whole) and on any segment owing an echo; always for the
 *   kernel's MSS estimate (worst case), so a tagged segment never exceeds the MTU.
 * - WRITE_HDR_OPT_CB: write INTval 0 (switches fill it) and the echo of the last value
 *   received from the peer.
 * - PARSE_HDR_OPT_CB: keep the received value for echo; decode the echoed one (our data
 *   path's most congested hop) into tcp_int_state for the congestion controller, and send
 *   a trace event.
 * Layout and scale are `const volatile` settings chosen by the run (testbed/network/tcpint.py).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "tcp_int.h"

#define TCPHDR_SYN 0x02

const volatile __u32 version = TCP_INT_VERSION_V04;
const volatile __u32 scale = TCP_INT_SCALE_PUBLIC;
const volatile __u32 tag_every = 1;     /* option on 1 in N data segments */
const volatile __u32 dynamic_tagging = 0; /* 1: TagFreqKey from the flow's state */
const volatile __u32 echo = 1;          /* echo received telemetry back to the sender */
const volatile __u32 hop_mbps = 0;      /* link speed when the LinkSpeed code is unknown */
const volatile __u32 trace = 1;         /* ring-buffer events on each echo */

TCP_INT_STATE_MAP;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, TCP_INT_EVENTS_BYTES);
} tcp_int_events SEC(".maps");

/* Events the ring buffer had no room for: reported by the reader, not silently lost. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tcp_int_lost SEC(".maps");

static __always_inline struct tcp_int_state *get_state(struct bpf_sock_ops *skops, int create)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk) /* verifier: skops->sk may be NULL */
		return NULL;
	return bpf_sk_storage_get(&tcp_int_state, sk, NULL,
				  create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

static __always_inline __u8 tag_freq_key(struct bpf_sock_ops *skops, struct tcp_int_state *st)
{
	if (!dynamic_tagging)
		return TCP_INT_TFK_SWITCH_DEFAULT;
	if (skops->packets_out < 1)
		return TCP_INT_TFK_APPLIMITED;
	if (st->qdepth_bytes > TCP_INT_CONG_QDEPTH_THRESH)
		return TCP_INT_TFK_CONGESTED;
	return TCP_INT_TFK_UNCONGESTED;
}

static __always_inline void on_hdr_opt_len(struct bpf_sock_ops *skops)
{
	struct tcp_int_state *st;
	int tag = 0;

	if (skops->args[0] == BPF_WRITE_HDR_TCP_CURRENT_MSS) {
		/* MSS estimate: room for the option on every segment, tagged or not */
		bpf_reserve_hdr_opt(skops, TCP_INT_OPT_LEN, 0);
		return;
	}
	if (skops->skb_tcp_flags & TCPHDR_SYN)
		return;
	st = get_state(skops, 1);
	if (!st)
		return;
	st->tx_segs = 0;
	if (skops->skb_len > 0) { /* data (pure ACKs have no payload) */
		__u32 n = tag_every ? tag_every : 1;
		__u32 mss = skops->mss_cache ? skops->mss_cache : 1;

		/* TCP hands down whole sends (GSO, even with gso off on the device, kernel
		 * ≥ 6.x), cut into wire segments after this callback, each carrying the option:
		 * count wire segments, and tag a send when the tagged share has fallen below
		 * 1 in n. Counting sends instead tagged 4-7 % of the wire at 1 in 16, in runs. */
		st->tx_segs = (skops->skb_len + mss - 1) / mss;
		st->n_seg += st->tx_segs;
		if ((__u64)st->n_tagged * n < st->n_seg)
			tag = 1;
	}
	if (echo && st->pending_ecr)
		tag = 1;
	st->tx_this = tag && bpf_reserve_hdr_opt(skops, TCP_INT_OPT_LEN, 0) == 0;
}

static __always_inline void on_write_hdr_opt(struct bpf_sock_ops *skops)
{
	struct tcp_int_state *st = get_state(skops, 0);
	__u8 o[TCP_INT_OPT_LEN] = {};
	int fresh;

	if (!st || !st->tx_this)
		return;
	st->tx_this = 0;
	fresh = echo && st->pending_ecr;
	o[0] = TCP_INT_OPT_KIND;
	o[1] = TCP_INT_OPT_LEN;
	if (version == TCP_INT_VERSION_V02) {
		if (fresh) {
			o[TCP_INT_V02_OFF_INTVALECR] = st->rx_intval;
			o[TCP_INT_V02_OFF_IDECR] = st->rx_hopid;
			tcp_int_put24(&o[TCP_INT_V02_OFF_SWLATECR], st->rx_hoplat);
		}
	} else {
		o[TCP_INT_V04_OFF_TFK_LS] = tag_freq_key(skops, st) << 4;
		if (fresh) {
			__u32 idx = 0;
			__u16 ecr = tcp_int_hoplat_to_ecr(st->rx_hoplat);

			if (st->rx_hopid && st->rx_hopid <= TCP_INT_TTL_INIT)
				idx = TCP_INT_TTL_INIT - st->rx_hopid;
			if (idx > TCP_INT_MAX_HOPS)
				idx = TCP_INT_MAX_HOPS;
			o[TCP_INT_V04_OFF_INTVALECR] = st->rx_intval;
			o[TCP_INT_V04_OFF_LS_IDECR] = (idx << 4) | (st->rx_ls & 0xf);
			/* little endian: what the public tool writes from host order on x86 */
			o[TCP_INT_V04_OFF_HOPLATECR] = ecr & 0xff;
			o[TCP_INT_V04_OFF_HOPLATECR + 1] = ecr >> 8;
		}
	}
	if (bpf_store_hdr_opt(skops, o, sizeof(o), 0) == 0) {
		st->n_tx++;
		st->n_tagged += st->tx_segs;
		if (fresh)
			st->pending_ecr = 0;
	}
}

static __always_inline void send_event(struct bpf_sock_ops *skops, struct tcp_int_state *st)
{
	struct tcp_int_event *e;

	e = bpf_ringbuf_reserve(&tcp_int_events, sizeof(*e), 0);
	if (!e) {
		__u32 k = 0;
		__u64 *lost = bpf_map_lookup_elem(&tcp_int_lost, &k);

		if (lost)
			*lost += 1;
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = st->ts_ns;
	e->family = skops->family;
	if (skops->family == 2 /* AF_INET */) {
		*(__u32 *)e->saddr = skops->local_ip4;
		*(__u32 *)e->daddr = skops->remote_ip4;
	} else {
		/* constant indexes: the verifier refuses a moved ctx pointer */
		((__u32 *)e->saddr)[0] = skops->local_ip6[0];
		((__u32 *)e->saddr)[1] = skops->local_ip6[1];
		((__u32 *)e->saddr)[2] = skops->local_ip6[2];
		((__u32 *)e->saddr)[3] = skops->local_ip6[3];
		((__u32 *)e->daddr)[0] = skops->remote_ip6[0];
		((__u32 *)e->daddr)[1] = skops->remote_ip6[1];
		((__u32 *)e->daddr)[2] = skops->remote_ip6[2];
		((__u32 *)e->daddr)[3] = skops->remote_ip6[3];
	}
	e->sport = skops->local_port;
	e->dport = bpf_ntohl(skops->remote_port);
	e->intval = st->intval;
	e->hop_id = st->hop_id;
	e->qdepth_bytes = st->qdepth_bytes;
	e->util = st->util;
	e->hoplat_ns = st->hoplat_ns;
	e->link_mbps = st->link_mbps;
	e->srtt_us = skops->srtt_us >> 3;
	e->snd_cwnd = skops->snd_cwnd;
	e->mss = skops->mss_cache;
	e->total_retrans = skops->total_retrans;
	e->bytes_acked = skops->bytes_acked;
	bpf_ringbuf_submit(e, 0);
}

/* PARSE_HDR_OPT_CB: did the received segment carry data? skb_data is its TCP header. */
static __always_inline int rx_has_data(struct bpf_sock_ops *skops)
{
	struct tcphdr *th = skops->skb_data;

	if ((void *)(th + 1) > skops->skb_data_end)
		return 1; /* cannot tell: treat as data */
	return skops->skb_len > th->doff * 4;
}

static __always_inline void on_parse_hdr_opt(struct bpf_sock_ops *skops)
{
	struct tcp_int_state *st;
	__u8 o[TCP_INT_OPT_LEN] = {};
	__u32 intval, idx, ls, lat_ns;
	__u64 now, dt;

	o[0] = TCP_INT_OPT_KIND; /* search key for bpf_load_hdr_opt */
	if (bpf_load_hdr_opt(skops, o, sizeof(o), 0) != TCP_INT_OPT_LEN)
		return;
	st = get_state(skops, 1);
	if (!st)
		return;
	st->n_rx++;

	/* 1. forward path: what switches wrote into the peer's data segment, to echo back.
	 * Not a pure ACK's: the ACK path's telemetry is of no use to the data's sender, and
	 * echoing it tagged our next data segment, whose echo tagged the next ACK, and so
	 * on: with 1-in-N tagging the chains piled up until nearly every segment carried
	 * the option (96 % of data segments at 1 in 16, test_tag_every_n_tags_…[echo]). */
	if (!rx_has_data(skops)) {
		/* nothing to echo */
	} else if (version == TCP_INT_VERSION_V02) {
		if (o[TCP_INT_V02_OFF_ID]) {
			st->rx_intval = o[TCP_INT_V02_OFF_INTVAL];
			st->rx_hopid = o[TCP_INT_V02_OFF_ID];
			st->rx_hoplat = tcp_int_get24(&o[TCP_INT_V02_OFF_SWLAT]);
			st->rx_ls = 0;
			st->pending_ecr = 1;
		}
	} else if (o[TCP_INT_V04_OFF_HOPID]) {
		st->rx_intval = o[TCP_INT_V04_OFF_INTVAL];
		st->rx_hopid = o[TCP_INT_V04_OFF_HOPID];
		st->rx_hoplat = tcp_int_get24(&o[TCP_INT_V04_OFF_HOPLAT]);
		st->rx_ls = o[TCP_INT_V04_OFF_TFK_LS] & 0xf;
		st->pending_ecr = 1;
	}

	/* 2. echo: our own data path's most congested hop, as the peer saw it */
	if (version == TCP_INT_VERSION_V02) {
		__u8 id = o[TCP_INT_V02_OFF_IDECR];

		if (!id)
			return;
		idx = id <= TCP_INT_TTL_INIT ? TCP_INT_TTL_INIT - id : 0;
		intval = o[TCP_INT_V02_OFF_INTVALECR];
		ls = 0;
		lat_ns = tcp_int_get24(&o[TCP_INT_V02_OFF_SWLATECR]) << TCP_INT_HOPLAT_SHIFT;
	} else {
		idx = o[TCP_INT_V04_OFF_LS_IDECR] >> 4;
		if (!idx)
			return;
		intval = o[TCP_INT_V04_OFF_INTVALECR];
		ls = o[TCP_INT_V04_OFF_LS_IDECR] & 0xf;
		lat_ns = tcp_int_ecr_to_ns(o[TCP_INT_V04_OFF_HOPLATECR] |
					   (o[TCP_INT_V04_OFF_HOPLATECR + 1] << 8));
	}
	now = bpf_ktime_get_ns();
	dt = st->ts_ns ? now - st->ts_ns : 0;
	st->intval = intval;
	st->hop_id = idx;
	st->ls_code = ls;
	st->link_mbps = tcp_int_ls_mbps(ls, scale);
	if (!st->link_mbps)
		st->link_mbps = hop_mbps;
	st->qdepth_bytes = tcp_int_decode_qdepth(intval, scale);
	st->util = tcp_int_decode_util(intval, version, scale, st->link_mbps);
	st->hoplat_ns = lat_ns;
	/* bytes the hop sent since the last sample: util * Mb/s * dt(ns) / 8000 */
	st->tx_bytes += (__u64)st->util * st->link_mbps * dt / TCP_INT_UTIL_ONE / 8000;
	st->ts_ns = now;
	st->seq++;
	st->n_echo++;
	if (trace)
		send_event(skops, st);
}

SEC("sockops")
int tcp_int_host(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (get_state(skops, 1))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						  BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG |
						  BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		on_hdr_opt_len(skops);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		on_write_hdr_opt(skops);
		break;
	case BPF_SOCK_OPS_PARSE_HDR_OPT_CB:
		on_parse_hdr_opt(skops);
		break;
	}
	return 1;
}

char _license[] SEC("license") = "GPL";
