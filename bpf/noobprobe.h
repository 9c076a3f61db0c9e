/* noobprobe.h — the one definition of noobprobe's kernel/user interface.
 *
 * Read by bpf/noobprobe.bcc.c (#include) and by testbed/instruments/noobprobe.py, which
 * takes its constants from the #defines below (parsed by testbed/bpf/abi.py) and its ctypes structs from the
 * maps' own declarations (bcc builds them from these structs). Fixed-width types only;
 * every struct is padded explicitly so kernel and user side agree byte for byte.
 *
 * Addresses are 16 bytes: IPv6 as is, IPv4 in the first 4 bytes (rest zero) with
 * family = 4. Times are bpf_ktime_get_ns (CLOCK_MONOTONIC).
 */
#ifndef NOOBPROBE_H
#define NOOBPROBE_H

/* Limits. Each can be overridden with -DNAME=value (bcc cflags). */
#ifndef NP_MAX_DESTS
#define NP_MAX_DESTS 256        /* (source, destination) pairs probed, all hosts together */
#endif
#ifndef NP_MAX_HOSTS
#define NP_MAX_HOSTS 64         /* probing hosts (interfaces) served by one loaded object */
#endif
#ifndef NP_MAX_OUTSTANDING
#define NP_MAX_OUTSTANDING 16384 /* probes sent and not yet answered (LRU) */
#endif
#ifndef NP_RESULT_SLOTS
#define NP_RESULT_SLOTS 4096    /* per-CPU ring of answered probes */
#endif
#define NP_MAX_HOPS 31          /* TTLs probed: 1..NP_MAX_HOPS; also an index mask (2^n-1) */

/* skb->mark values of the packets noobprobe sends through the tc hook a second time:
 * the copy bpf_clone_redirect re-injects (the app's own packet) and the probe, which is
 * redirected once rewritten so that the qdisc charges its real length (the device's
 * qdisc length was taken before the hook: a 64 KB GSO packet's, for a 54-byte probe).
 * The first tc program passes packets carrying either, restoring the app's mark from
 * np_mark_stash, so neither is ever cloned again. The marks never leave the host. */
#ifndef NP_CLONE_MARK
#define NP_CLONE_MARK 0x4e0bc10eU
#endif
#ifndef NP_PROBE_MARK
#define NP_PROBE_MARK 0x4e0bc10fU
#endif

/* Tail-call slots. */
#define NP_TC_V4   0
#define NP_TC_V6   1
#define NP_TC_TCP  2
#define NP_TC_UDP  3
#define NP_TC_ICMP 4
#define NP_TC_SLOTS 5
#define NP_XDP_V4  0
#define NP_XDP_V6  1
#define NP_XDP_SLOTS 2

/* skb->cb words handed from the IP program to the protocol program (cb lives in the
 * skb for the whole tc run, tail calls included). cb[NP_CB_ID] = dest id + 1. */
#define NP_CB_ID   0
#define NP_CB_TTL  1
#define NP_CB_SEQ  2
#define NP_CB_L3   3            /* (family << 16) | l4 offset from the Ethernet header */

/* A silent hop (no answer in this or the previous epoch of NP_RETRY_ROUNDS rounds) is
 * probed only in every NP_RETRY_ROUNDS-th round, after the first NP_LEARN_ROUNDS rounds. */
#ifndef NP_LEARN_ROUNDS
#define NP_LEARN_ROUNDS 3
#endif
#ifndef NP_RETRY_ROUNDS
#define NP_RETRY_ROUNDS 16
#endif

/* Counters (per-CPU array np_stats). */
#define NP_ST_EGRESS      0     /* IP packets seen on egress (not clones) */
#define NP_ST_CLONE_SEEN  1     /* re-injected app copies seen and passed */
#define NP_ST_DEST        2     /* egress packets to a probed destination */
#define NP_ST_RATE_GLOBAL 3     /* probe due by destination, refused by the host's budget */
#define NP_ST_RATE_HOP    4     /* destination due but no hop due */
#define NP_ST_PROBES      5     /* probes sent */
#define NP_ST_CLONE_FAIL  6     /* bpf_clone_redirect failed (app packet passed untouched) */
#define NP_ST_REWRITE_FAIL 7    /* rewrite of the probe copy failed (copy dropped) */
#define NP_ST_ICMP_TE     8     /* time-exceeded seen in XDP */
#define NP_ST_MATCHED     9     /* ... matched to an outstanding probe */
#define NP_ST_HOPS_LEARNT 10    /* hop-count estimates updated */
#define NP_ST_NOHOPS      11    /* destination packet while hop count still unknown */
#define NP_ST_PROBE_SEEN  12    /* redirected probes seen and passed */
#define NP_ST_MAX         13

/* Per-host settings and global budget (np_hosts, indexed by host id). */
struct np_host {
	__u64 global_interval_ns;   /* at most one probe per interval from this host */
	__u64 hop_interval_ns;      /* at most one probe per interval to each hop of a dest */
	__u64 last_probe_ns;        /* global budget: time of the last probe */
	__u32 pass_icmp;            /* 1: matched time-exceeded goes on to the stack */
	__u32 active;               /* 0: host slot unused, its destinations are ignored */
};

/* np_dests key: one (source, destination) address pair. */
struct np_dest_key {
	__u8  src[16];
	__u8  dst[16];
	__u32 family;               /* 4 or 6 */
};

/* np_dstate value, indexed by dest id. */
struct np_dest_state {
	__u64 last_probe_ns;            /* per-destination claim: one CPU probes at a time */
	__u64 hops_update_ns;           /* when `hops` was last re-inferred */
	__u64 hop_last_ns[NP_MAX_HOPS + 1]; /* per-hop budget: last probe to each TTL */
	__u64 responded;                /* bit h: hop h answered in this retry epoch */
	__u64 responded_prev;           /* ... in the previous one (a hop that stops
	                                   answering is dropped after two epochs) */
	__u32 next_seq;
	__u32 host;                     /* host id (np_hosts index) */
	__u32 round;                    /* completed rounds over the hops */
	__u8  hops;                     /* estimated distance to dest (0: not yet known) */
	__u8  next_hop;                 /* next TTL to try */
	__u8  fixed_hops;               /* 1: `hops` set by the user, not inferred */
	__u8  pad[1];
};

/* np_outstanding key: a probe as the quoted header in time-exceeded identifies it. */
struct np_probe_key {
	__u32 dest;
	__u32 seq;                  /* wire sequence: TCP seq (32 bits), IPv4 UDP: IP id,
	                               IPv6 UDP: first payload word, ICMP echo: echo seq */
	__u32 proto;
};

struct np_probe {
	__u64 send_ns;
	__u32 origseq;              /* the app packet's own TCP seq / IP id / echo seq */
	__u16 sport;                /* host order; ICMP: echo id */
	__u16 dport;
	__u16 ipid;                 /* IPv4 id of the probe (0 for IPv6) */
	__u8  ttl;
	__u8  pad;
	__u32 send_cpu;
};

/* One answered probe (np_results, per-CPU ring; np_head counts writes per CPU). */
struct np_result {
	__u64 send_ns;
	__u64 recv_ns;
	__u32 seq;
	__u32 origseq;
	__u32 dest;
	__u32 recv_cpu;
	__u8  responder[16];
	__u16 sport;
	__u16 dport;
	__u16 outipid;
	__u16 inipid;               /* IPv4 id of the time-exceeded message */
	__u8  outttl;
	__u8  recvttl;              /* TTL / hop limit of the time-exceeded message */
	__u8  proto;
	__u8  family;
};

#endif /* NOOBPROBE_H */
