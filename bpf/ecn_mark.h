/* ECN marking at a switch's egress: what the tc program (ecn_mark.bpf.c) and the Python
 * side (testbed/network/ecn.py, which parses these structs) share.
 *
 * Rule, on the queue an arriving packet finds at the port's root qdisc (the HTB
 * bottleneck): q > max → CE; min < q ≤ max → CE with probability p·(q − min)/(max − min);
 * else nothing. DCTCP's step at K is min = max = K. q is bytes or packets (`unit`).
 * Only ECT packets are marked (bpf_skb_ecn_set_ce); Not-ECT ones pass and are counted.
 */
#ifndef ECN_MARK_H
#define ECN_MARK_H

#define ECN_MARK_UNIT_BYTES 0
#define ECN_MARK_UNIT_PACKETS 1
#define ECN_MARK_P_ONE 65536        /* probability 1.0 in `p_max` */
#define ECN_MARK_MAX_PORTS 4096

/* Ifindexes repeat across namespaces: the key carries the port's netns inode. */
struct ecn_port_key {
	__u32 netns;
	__u32 ifindex;
};

struct ecn_port {
	/* set by Python before traffic */
	__u32 min;          /* threshold(s) in `unit` */
	__u32 max;
	__u32 p_max;        /* marking probability at max, ECN_MARK_P_ONE = 1 */
	__u32 unit;         /* ECN_MARK_UNIT_* */
	/* kept by the program (atomic adds: any CPU may transmit) */
	__u64 ip_pkts;      /* IPv4/IPv6 packets seen */
	__u64 ect_pkts;     /* of those, ECN-capable (ECT(0), ECT(1)) or already CE */
	__u64 over_pkts;    /* packets that found the queue above min */
	__u64 marked_pkts;  /* CE set by us */
	__u64 not_ect_over; /* Not-ECT packets the rule would have marked: passed unmarked */
	__u64 last_q;       /* the queue (unit) the last packet found */
};

#endif /* ECN_MARK_H */
