// SPDX-License-Identifier: GPL-2.0
/* Test fault: tc egress program that drops the first pure SYN (IPv4, no IP options)
 * leaving the interface and lets everything else through — a handshake whose first SYN
 * is lost, so the kernel retransmits it after its 1 s initial RTO. Built with
 * -DSYN_DROP_ALL it drops every SYN: a flow that never connects.
 * tc filter add dev IF egress bpf da obj syn_drop.o sec tc
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

__u32 dropped = 0;

SEC("tc")
int syn_drop(struct __sk_buff *skb)
{
	__u8 b[34 + 20];        /* Ethernet + IPv4 (IHL 5) + TCP */

	if (skb->protocol != bpf_htons(0x0800))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, 0, b, sizeof(b)))
		return TC_ACT_OK;
	if (b[14] != 0x45 || b[23] != 6)
		return TC_ACT_OK;
	if ((b[34 + 13] & 0x12) != 0x02)   /* SYN without ACK */
		return TC_ACT_OK;
#ifndef SYN_DROP_ALL
	if (dropped)
		return TC_ACT_OK;
#endif
	dropped = 1;            /* SYNs of one host: no two CPUs race here in the test */
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
