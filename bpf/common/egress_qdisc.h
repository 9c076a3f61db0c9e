/* The egress device's root qdisc as a tc (clsact egress) program finds it: what the queue
 * holds before this packet is enqueued, for the TCP-INT switch and the ECN marker.
 *
 * A tc program's context is the kernel's struct sk_buff behind the __sk_buff view. From
 * 6.2 the kfunc bpf_cast_to_kern_ctx types it, and the fields are direct loads. Built with
 * -DEGRESS_QDISC_PROBE_READ (kernels before 6.2), the same fields are read with
 * bpf_probe_read_kernel (CO-RE, one call per field) from the context's address: the same
 * values at the same moment, at a cost per packet (bench/int_overhead.py: int-1-probe against int-1).
 * Passing the context's address to a helper needs CAP_PERFMON (root), as every program
 * of the testbed does.
 */
#ifndef TESTBED_COMMON_EGRESS_QDISC_H
#define TESTBED_COMMON_EGRESS_QDISC_H

#include <bpf/bpf_core_read.h>

#define EGRESS_TCQ_F_BUILTIN 1
/* what egress_qdisc() reads beyond the namespace (a constant: unread fields cost nothing) */
#define EGRESS_BACKLOG 1
#define EGRESS_QLEN 2
#define EGRESS_SENT 4

struct egress_qdisc {
	__u32 netns;       /* inode of the device's network namespace (0: no device) */
	__u32 backlog;     /* bytes queued at the root */
	__u32 qlen;        /* packets queued at the root */
	int has_counter;   /* the root counts bytes sent (not noqueue, not per-CPU stats) */
	__u64 sent_bytes;  /* bytes the root has sent (with has_counter) */
};

#ifndef EGRESS_QDISC_PROBE_READ
extern void *bpf_cast_to_kern_ctx(void *) __ksym;

static __always_inline void egress_qdisc(struct __sk_buff *skb, struct egress_qdisc *e,
					 int want)
{
	/* direct loads through BTF pointers (CO-RE relocated): one load each */
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	struct net_device *dev = kskb->dev;
	struct Qdisc *q;

	if (!dev)
		return;
	e->netns = dev->nd_net.net->ns.inum;
	q = dev->qdisc;
	if (!q)
		return;
	if (want & EGRESS_BACKLOG)
		e->backlog = q->qstats.backlog;
	if (want & EGRESS_QLEN)
		e->qlen = q->q.qlen;
	if (!(want & EGRESS_SENT))
		return;
	/* lockless roots keep per-CPU counters, built-in ones (noqueue) none */
	e->has_counter = !(q->flags & EGRESS_TCQ_F_BUILTIN) && !q->cpu_bstats;
	if (e->has_counter)
		e->sent_bytes = q->bstats.bytes.v.a.a.counter;
}
#else
static __always_inline void egress_qdisc(struct __sk_buff *skb, struct egress_qdisc *e,
					 int want)
{
	struct sk_buff *kskb = (void *)skb;
	struct net_device *dev = BPF_CORE_READ(kskb, dev);
	struct Qdisc *q;

	if (!dev)
		return;
	e->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	q = BPF_CORE_READ(dev, qdisc);
	if (!q)
		return;
	if (want & EGRESS_BACKLOG)
		e->backlog = BPF_CORE_READ(q, qstats.backlog);
	if (want & EGRESS_QLEN)
		e->qlen = BPF_CORE_READ(q, q.qlen);
	if (!(want & EGRESS_SENT))
		return;
	e->has_counter = !(BPF_CORE_READ(q, flags) & EGRESS_TCQ_F_BUILTIN) &&
			 !BPF_CORE_READ(q, cpu_bstats);
	if (e->has_counter)
		e->sent_bytes = BPF_CORE_READ(q, bstats.bytes.v.a.a.counter);
}
#endif

#endif /* TESTBED_COMMON_EGRESS_QDISC_H */
