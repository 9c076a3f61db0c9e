/* TCP-INT: structs and helpers shared by the switch (tcp_int_switch.bpf.c), the host
 * (tcp_int_host.bpf.c) and any congestion controller reading the telemetry (PowerTCP).
 *
 * Wire constants live in tcp_int_defs.h (plain #defines, also read by P4 and Python).
 * The Python side (testbed/network/tcpint.py) parses the structs below to decode maps and
 * events: fixed-width members only, laid out without implicit padding.
 *
 * Contract with the congestion controller: the per-socket telemetry is the SK_STORAGE map
 * named `tcp_int_state` (declare it with TCP_INT_STATE_MAP), pinned by the run at
 * <pin_dir>/tcp_int_state; a CC object calls BpfObject.reuse_map("tcp_int_state", fd)
 * before load and reads it with bpf_sk_storage_get(&tcp_int_state, sk, NULL, 0).
 */
#ifndef TCP_INT_H
#define TCP_INT_H

#include "tcp_int_defs.h"

/* Per-socket TCP-INT state (SK_STORAGE value). Two roles per socket:
 * - as a SENDER, what the peer echoed back: the most congested hop of our data path,
 *   decoded (this is what the CC reads);
 * - as a RECEIVER, the last option received on the peer's data, to echo on our next segment.
 */
struct tcp_int_state {
	__u64 ts_ns;        /* bpf_ktime_get_ns() of the latest echo carrying telemetry */
	__u64 tx_bytes;     /* estimated bytes sent by the hop so far: += util * link * dt */
	__u32 seq;          /* +1 per echo carrying telemetry (a fresh sample) */
	__u32 qdepth_bytes; /* queue of the most congested hop, bytes (0: not queueing) */
	__u32 util;         /* its utilization, TCP_INT_UTIL_ONE = 100 % (queueing: 100 %) */
	__u32 link_mbps;    /* its link speed: LinkSpeed code, else the configured hop_mbps */
	__u32 hoplat_ns;    /* sum of per-hop latencies on the data path, ns */
	__u8 intval;        /* raw echoed INTval */
	__u8 hop_id;        /* hop index from the sender, 1..15 (0: no switch stamped) */
	__u8 ls_code;       /* raw echoed LinkSpeed code */
	__u8 pending_ecr;   /* receiver: an echo is due */
	__u8 rx_intval;     /* receiver: last INTval received */
	__u8 rx_hopid;      /* receiver: last HopID received (raw TTL) */
	__u8 rx_ls;         /* receiver: last LinkSpeed received */
	__u8 tx_this;       /* HDR_OPT_LEN reserved the option for the segment being built */
	__u32 rx_hoplat;    /* receiver: last HopLat received (raw 24 bits, 256 ns units) */
	__u32 n_tx;         /* options written */
	__u32 n_rx;         /* options parsed */
	__u32 n_echo;       /* echoes carrying telemetry */
	__u32 n_seg;        /* data segments handed down, counted on the wire (1-in-N tagging) */
	__u32 n_tagged;     /* of those, segments that carried the option */
	__u32 tx_segs;      /* wire segments of the send being built (HDR_OPT_LEN → WRITE) */
};

/* One INT trace record (ring buffer `tcp_int_events`), sent when an echo is parsed. */
struct tcp_int_event {
	__u64 ts_ns;
	__u8 saddr[16];     /* IPv4 in the first 4 bytes, network order */
	__u8 daddr[16];
	__u16 family;
	__u16 sport;        /* host order */
	__u16 dport;        /* host order */
	__u8 intval;
	__u8 hop_id;
	__u32 qdepth_bytes;
	__u32 util;
	__u32 hoplat_ns;
	__u32 link_mbps;
	__u32 srtt_us;
	__u32 snd_cwnd;     /* segments */
	__u32 mss;
	__u32 total_retrans;
	__u64 bytes_acked;
};

/* Switch egress port: key and per-port state (map `tcp_int_ports`). Ifindexes repeat
 * across namespaces, so the key carries the port's netns inode number. */
struct tcp_int_port_key {
	__u32 netns;        /* inode of the port's network namespace */
	__u32 ifindex;
};

struct tcp_int_port {
	/* set by Python before traffic */
	__u64 rate_bps;     /* the port's bottleneck rate; 0 = unknown (no util, no latency) */
	__u32 hop_id;       /* HopID written by this port; 0 = the packet's IP TTL (routers) */
	__u32 ls_code;      /* LinkSpeed code of this port */
	/* kept by the program */
	__u64 win_start_ns;
	__u64 win_start_bytes;
	__u64 own_bytes;    /* bytes seen at this hook (for roots without a byte counter) */
	__u64 n_stamped;    /* tagged packets where this port won the max */
	__u64 n_tagged;     /* tagged packets seen */
	__u32 util;         /* last full window's utilization, TCP_INT_UTIL_ONE = 100 % */
	__u32 last_backlog; /* root qdisc backlog at the last tagged packet, bytes */
};

#define TCP_INT_STATE_MAP_NAME "tcp_int_state"

#ifdef __bpf__
/* The per-socket map, declared identically in every object that uses it (SK_STORAGE maps
 * must have max_entries 0 and BPF_F_NO_PREALLOC: one value per socket, made on demand). */
#define TCP_INT_STATE_MAP                                                          \
	struct {                                                                   \
		__uint(type, BPF_MAP_TYPE_SK_STORAGE);                             \
		__uint(map_flags, BPF_F_NO_PREALLOC);                              \
		__type(key, int);                                                  \
		__type(value, struct tcp_int_state);                               \
	} tcp_int_state SEC(".maps")

static __always_inline __u32 tcp_int_qdepth_shift(__u32 scale)
{
	return scale == TCP_INT_SCALE_FINE ? TCP_INT_QDEPTH_SHIFT_FINE
					   : TCP_INT_QDEPTH_SHIFT_PUBLIC;
}

/* Mb/s of a LinkSpeed code (fine codes 8-15 only count when the scale is fine). */
static __always_inline __u32 tcp_int_ls_mbps(__u32 code, __u32 scale)
{
	switch (code) {
	case 1: return TCP_INT_LS_MBPS_1;
	case 2: return TCP_INT_LS_MBPS_2;
	case 3: return TCP_INT_LS_MBPS_3;
	case 4: return TCP_INT_LS_MBPS_4;
	case 5: return TCP_INT_LS_MBPS_5;
	case 6: return TCP_INT_LS_MBPS_6;
	case 7: return TCP_INT_LS_MBPS_7;
	}
	if (scale != TCP_INT_SCALE_FINE)
		return 0;
	switch (code) {
	case 8: return TCP_INT_LS_MBPS_8;
	case 9: return TCP_INT_LS_MBPS_9;
	case 10: return TCP_INT_LS_MBPS_10;
	case 11: return TCP_INT_LS_MBPS_11;
	case 12: return TCP_INT_LS_MBPS_12;
	case 13: return TCP_INT_LS_MBPS_13;
	case 14: return TCP_INT_LS_MBPS_14;
	case 15: return TCP_INT_LS_MBPS_15;
	}
	return 0;
}

/* Local congestion of a hop as an INTval: the queue when there is one (a queue means the
 * link is fully used), else how much of the link is used. */
static __always_inline __u8 tcp_int_encode(__u32 version, __u32 scale, __u32 backlog,
					   __u32 util, __u64 rate_bps)
{
	__u64 q, low;

	if (backlog) {
		q = backlog >> tcp_int_qdepth_shift(scale);
		if (q > TCP_INT_INTVAL_LOW_MAX)
			q = TCP_INT_INTVAL_LOW_MAX;
		return TCP_INT_INTVAL_QDEPTH | q;
	}
	if (util > TCP_INT_UTIL_ONE)
		util = TCP_INT_UTIL_ONE;
	if (version == TCP_INT_VERSION_V02) {
		low = (util * 100 / TCP_INT_UTIL_ONE) >>
		      (scale == TCP_INT_SCALE_FINE ? TCP_INT_V02_UTIL_SHIFT_FINE
						   : TCP_INT_V02_UTIL_SHIFT_PUBLIC);
	} else if (scale == TCP_INT_SCALE_FINE) {
		low = util * TCP_INT_V04_FINE_UTIL_FULL / TCP_INT_UTIL_ONE;
	} else {
		/* available Gb/s: rate * (1 - util) */
		__u64 avail_mbps = rate_bps / 1000000 * (TCP_INT_UTIL_ONE - util) / TCP_INT_UTIL_ONE;
		__u64 avail = avail_mbps / TCP_INT_V04_AVAILBW_UNIT_MBPS;

		if (avail > TCP_INT_INTVAL_LOW_MAX)
			avail = TCP_INT_INTVAL_LOW_MAX;
		low = TCP_INT_INTVAL_LOW_MAX - avail;
	}
	if (low > TCP_INT_INTVAL_LOW_MAX)
		low = TCP_INT_INTVAL_LOW_MAX;
	return low;
}

static __always_inline __u32 tcp_int_decode_qdepth(__u8 ival, __u32 scale)
{
	if (ival < TCP_INT_INTVAL_QDEPTH)
		return 0;
	return (__u32)(ival & TCP_INT_INTVAL_LOW_MAX) << tcp_int_qdepth_shift(scale);
}

/* Utilization (TCP_INT_UTIL_ONE = 100 %) from an INTval; link_mbps needed for public v0.4
 * (available bandwidth): unknown link → 0. */
static __always_inline __u32 tcp_int_decode_util(__u8 ival, __u32 version, __u32 scale,
						 __u32 link_mbps)
{
	__u64 u;

	if (ival >= TCP_INT_INTVAL_QDEPTH)
		return TCP_INT_UTIL_ONE;
	if (version == TCP_INT_VERSION_V02) {
		u = ((__u64)ival << (scale == TCP_INT_SCALE_FINE ? TCP_INT_V02_UTIL_SHIFT_FINE
								 : TCP_INT_V02_UTIL_SHIFT_PUBLIC))
		    * TCP_INT_UTIL_ONE / 100;
	} else if (scale == TCP_INT_SCALE_FINE) {
		u = (__u64)ival * TCP_INT_UTIL_ONE / TCP_INT_V04_FINE_UTIL_FULL;
	} else {
		__u64 avail = (__u64)(TCP_INT_INTVAL_LOW_MAX - ival) * TCP_INT_V04_AVAILBW_UNIT_MBPS;

		if (!link_mbps)
			return 0;
		u = avail >= link_mbps ? 0 : (link_mbps - avail) * TCP_INT_UTIL_ONE / link_mbps;
	}
	return u > TCP_INT_UTIL_ONE ? TCP_INT_UTIL_ONE : u;
}

/* v0.4 HopLatEcr: 16 bits; HopLat wider than 15 bits is sent as (HopLat >> 8) | 0x8000. */
static __always_inline __u16 tcp_int_hoplat_to_ecr(__u32 hoplat)
{
	if (hoplat > TCP_INT_V04_HOPLATECR_NARROW_MAX)
		return (hoplat >> TCP_INT_HOPLAT_SHIFT) | TCP_INT_V04_HOPLATECR_WIDE;
	return hoplat;
}

/* HopLatEcr to nanoseconds. */
static __always_inline __u32 tcp_int_ecr_to_ns(__u16 ecr)
{
	if (ecr & TCP_INT_V04_HOPLATECR_WIDE)
		return (__u32)(ecr & TCP_INT_V04_HOPLATECR_NARROW_MAX) << (2 * TCP_INT_HOPLAT_SHIFT);
	return (__u32)ecr << TCP_INT_HOPLAT_SHIFT;
}

static __always_inline __u32 tcp_int_get24(const __u8 *p)
{
	return ((__u32)p[0] << 16) | ((__u32)p[1] << 8) | p[2];
}

static __always_inline void tcp_int_put24(__u8 *p, __u32 v)
{
	p[0] = v >> 16;
	p[1] = v >> 8;
	p[2] = v;
}
#endif /* __bpf__ */

#endif /* TCP_INT_H */
