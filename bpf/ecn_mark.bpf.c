// SPDX-License-Identifier: GPL-2.0
/* ECN marking on a switch port: a tc (clsact egress, direct-action) program.
 *
 * At the egress hook a packet has not been queued yet: the root qdisc's backlog
 * (skb->dev->qdisc, read by common/egress_qdisc.h as the TCP-INT switch reads it) is the queue
 * this packet finds. The rule of ecn_mark.h marks CE with bpf_skb_ecn_set_ce (IPv4 with
 * its header checksum, IPv6); per-port thresholds and counters are in `ecn_ports`.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common/parse.h"  /* the EtherTypes */
#include "common/egress_qdisc.h"
#include "ecn_mark.h"

#define TC_ACT_UNSPEC (-1) /* pass on to the next filter (TCP-INT may share the hook) */
#define INET_ECN_MASK 3

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ECN_MARK_MAX_PORTS);
	__type(key, struct ecn_port_key);
	__type(value, struct ecn_port);
} ecn_ports SEC(".maps");

/* The ECN field of an IPv4/IPv6 packet, or -1 for anything else. */
static __always_inline int ecn_field(struct __sk_buff *skb)
{
	__u8 b[2];

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + 1, b, 1) < 0) /* TOS */
			return -1;
		return b[0] & INET_ECN_MASK;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		/* traffic class: low nibble of byte 0, high nibble of byte 1 */
		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), b, 2) < 0)
			return -1;
		return (b[1] >> 4) & INET_ECN_MASK;
	}
	return -1;
}

SEC("tc")
int ecn_mark(struct __sk_buff *skb)
{
	struct egress_qdisc root = {};
	struct ecn_port_key key = {};
	struct ecn_port *port;
	__u64 found;
	int ecn;

	egress_qdisc(skb, &root, EGRESS_BACKLOG | EGRESS_QLEN);
	if (!root.netns)
		return TC_ACT_UNSPEC;
	key.netns = root.netns;
	key.ifindex = skb->ifindex;
	port = bpf_map_lookup_elem(&ecn_ports, &key);
	if (!port)
		return TC_ACT_UNSPEC;
	ecn = ecn_field(skb);
	if (ecn < 0)
		return TC_ACT_UNSPEC;
	found = port->unit == ECN_MARK_UNIT_PACKETS ? root.qlen : root.backlog;
	port->last_q = found;
	__sync_fetch_and_add(&port->ip_pkts, 1);
	if (ecn)
		__sync_fetch_and_add(&port->ect_pkts, 1);
	if (found <= port->min)
		return TC_ACT_UNSPEC;
	__sync_fetch_and_add(&port->over_pkts, 1);
	if (found <= port->max && port->max > port->min) {
		/* the ramp: mark with p_max · (q − min) / (max − min) */
		__u64 p = (__u64)port->p_max * (found - port->min) / (port->max - port->min);

		if ((bpf_get_prandom_u32() & (ECN_MARK_P_ONE - 1)) >= p)
			return TC_ACT_UNSPEC;
	}
	if (!ecn) {
		__sync_fetch_and_add(&port->not_ect_over, 1);
		return TC_ACT_UNSPEC;
	}
	if (ecn != INET_ECN_MASK && bpf_skb_ecn_set_ce(skb))
		__sync_fetch_and_add(&port->marked_pkts, 1);
	return TC_ACT_UNSPEC;
}

char _license[] SEC("license") = "GPL";
