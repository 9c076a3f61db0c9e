/* DCTCP, HPCC and TIMELY (the PowerTCP paper's comparison set): what the three struct_ops
 * CCs share. Kernel-only (included by dctcp.bpf.c, hpcc.bpf.c, timely.bpf.c).
 *
 * They trace through PowerTCP's ring buffer and event (powertcp.h `events`,
 * `struct powertcp_event`, read by testbed/bpf/cc.py into cc_trace.csv); what each CC puts
 * in p_norm, p_smooth, qlen and rtt_grad is said in docs/powertcp.md "The comparison set".
 */
#ifndef DCCS_H
#define DCCS_H

#include "powertcp.h"

/* include/net/tcp.h: not in BTF (plain #defines) */
#define TCP_CONG_NON_RESTRICTED 0x1 /* a namespace may make it its default (receivers) */
#define TCP_CONG_NEEDS_ECN 0x2      /* negotiate ECN and send ECT(0) */
#define FLAG_ECE 0x40               /* tcp_input.c: this ACK carried ECE */
#define TCP_ECN_OK 1                /* tp->ecn_flags */
#define TCP_ECN_DEMAND_CWR 4
#define DCCS_FRAC_SHIFT 16          /* fractions (α, F, U, …) × 2^16 in the trace */

/* One trace event; `last_ns` is the socket's own rate limiter. */
static __always_inline void dccs_emit(struct sock *sk, __u64 *last_ns, __u64 cwnd_fp,
				      __u64 a, __u64 b, __u32 qlen, __u64 dt, __s64 grad,
				      __u32 rtt_us, __u32 tau_us, __u64 tx_bytes, __u32 seq)
{
	struct powertcp_event *e = trace_reserve(sk, bpf_ktime_get_ns(), last_ns, tx_bytes);

	if (!e)
		return;
	e->cwnd = cwnd_fp > 0xffffffffULL ? 0xffffffff : cwnd_fp;
	e->p_norm = a > 0xffffffffULL ? 0xffffffff : a;
	e->p_smooth = b > 0xffffffffULL ? 0xffffffff : b;
	e->qlen = qlen;
	e->delta_t = dt > 0xffffffffULL ? 0xffffffff : dt;
	e->rtt_grad = grad;
	e->rtt_us = rtt_us;
	e->base_rtt_us = tau_us;
	e->old_cwnd = 0;
	e->beta = 0;
	e->seq = seq;
	e->snd_cwnd = tcp_sk(sk)->snd_cwnd;
	bpf_ringbuf_submit(e, 0);
}

#endif /* DCCS_H */
