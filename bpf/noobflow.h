/* noobflow.h — the one definition of noobflow's kernel/user interface.
 *
 * Read by bpf/noobflow.bcc.c (#include) and by testbed/instruments/noobflow.py, which
 * takes its constants from the #defines below (parsed) and its ctypes structs from the
 * maps' own declarations (bcc builds them from these structs). Fixed-width types only;
 * every struct is padded explicitly so kernel and user side agree byte for byte.
 */
#ifndef NOOBFLOW_H
#define NOOBFLOW_H

/* Limits. Each can be overridden with -DNAME=value (bcc cflags). */
#ifndef NF_MAX_FLOWS
#define NF_MAX_FLOWS 16384      /* flows per buffer (per interval), all points together */
#endif
#ifndef NF_MAX_PREFIXES
#define NF_MAX_PREFIXES 64      /* filter: address prefixes (v4 stored v4-mapped) */
#endif
#ifndef NF_MAX_PORTS
#define NF_MAX_PORTS 64         /* filter: L4 ports */
#endif
#define NF_MAX_POINTS 16        /* attach points served by one loaded object */
#ifndef NF_POINTS
#define NF_POINTS 1             /* program copies to build: noobflow_p0 .. p(NF_POINTS-1) */
#endif

/* nf_cfg.flags: which filter parts are active (all parts must match; within a part,
 * any entry matches). No flag set: every IP packet is recorded. */
#define NF_F_PREFIX 0x1         /* src or dst in nf_prefixes */
#define NF_F_PORT   0x2         /* sport or dport in nf_ports */
#define NF_F_PROTO  0x4         /* IP protocol in nf_protos */

/* A flow, as the program sees it on one attach point. Addresses are 16 bytes: IPv6 as
 * is, IPv4 in v4-mapped form (::ffff:a.b.c.d). Ports in host byte order, 0 for
 * protocols without ports and for non-first fragments. */
struct nf_key {
	__u8  src[16];
	__u8  dst[16];
	__u16 sport;
	__u16 dport;
	__u8  proto;
	__u8  point;            /* attach point index: which program copy saw it */
	__u16 pad;              /* always 0: hash keys compare every byte */
};

/* Per-CPU accumulator of one flow in one buffer. bytes = whole frame from the
 * Ethernet header on (what the interface counters count). Times: bpf_ktime_get_ns,
 * i.e. CLOCK_MONOTONIC. */
struct nf_rec {
	__u64 packets;
	__u64 bytes;
	__u64 first_ns;
	__u64 last_ns;
	__u32 tcp_flags;        /* TCP flag byte (CWR..FIN), OR of every packet */
	__u32 pad;
};

/* nf_prefixes key (LPM trie): prefixlen counts bits of the 16-byte address, so an
 * IPv4 /24 is stored as prefixlen 96+24 of its v4-mapped address. */
struct nf_lpm_key {
	__u32 prefixlen;
	__u8  addr[16];
};

struct nf_cfg {
	__u32 flags;            /* NF_F_* */
	__u32 pad;
};

/* Per-CPU, per-point cumulative counters (never swapped, never cleared by the drain). */
struct nf_stats {
	__u64 seen_pkts;        /* every frame the program ran on */
	__u64 seen_bytes;
	__u64 recorded_pkts;    /* frames added to a flow record */
	__u64 filtered_pkts;    /* IP frames the filter left out */
	__u64 nonip_pkts;       /* frames that are not IPv4/IPv6 (ARP, ...) */
	__u64 nonip_bytes;
	__u64 lost_pkts;        /* frames whose record could not be stored (buffer full) */
};

#endif /* NOOBFLOW_H */
