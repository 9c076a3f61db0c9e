/* flowacct.h — the one definition of the wire flow accounting's kernel/user interface.
 *
 * Read by bpf/flowacct.bpf.c (#include) and by testbed/bpf/flowacct.py, which parses the
 * #defines and the two structs below (fixed-width fields, explicit padding: kernel and
 * user side agree byte for byte).
 */
#ifndef FLOWACCT_H
#define FLOWACCT_H

#define FA_MAX_CONNS 16384      /* (connection, direction) records per point */
#define FA_DIR_IN 0             /* cgroup_skb/ingress: what a host's sockets received */
#define FA_DIR_OUT 1            /* cgroup_skb/egress: what a host's sockets sent (SYNs) */
/* A connection "starts" with the segment that takes it past this many payload bytes:
 * iperf3 opens each data connection with a 37-byte cookie before its test runs. */
#define FA_START_BYTES 64

/* A TCP connection in one direction, as the packet names it. IPv4 addresses in the
 * first 4 bytes (the rest 0); ports in host byte order. */
struct fa_key {
	__u8  saddr[16];
	__u8  daddr[16];
	__u16 sport;
	__u16 dport;
	__u8  family;           /* 4 or 6 */
	__u8  dir;              /* FA_DIR_IN / FA_DIR_OUT */
	__u16 pad;              /* always 0: hash keys compare every byte */
};

/* Times: bpf_ktime_get_ns (CLOCK_MONOTONIC). Payload bytes only (no headers). */
struct fa_rec {
	__u32 lock;             /* struct bpf_spin_lock on the kernel side */
	__u32 syns;             /* segments with SYN set (SYN or SYN-ACK), retransmits too */
	__u64 syn_first_ns;
	__u64 syn_last_ns;
	__u64 data_first_ns;    /* first segment carrying payload (egress: the first sent) */
	__u64 start_ns;         /* the segment that took the connection past FA_START_BYTES */
	__u64 data_last_ns;     /* last segment that brought new payload */
	__u64 bytes;            /* unique payload bytes: sequence space covered */
	__u64 fin_ns;           /* first FIN */
	__u32 isn;              /* sequence number of the SYN (valid if have_isn) */
	__u32 hi;               /* highest sequence number received + 1 (valid if have_hi) */
	__u32 segs;             /* segments with payload */
	__u32 dup_segs;         /* of which brought nothing new (retransmits, duplicates) */
	__u32 rsts;             /* segments with RST set */
	__u8  have_isn;
	__u8  have_hi;
	__u16 pad;
};

#endif
