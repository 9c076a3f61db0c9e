/* DCTCP (RFC 8257) as a struct_ops CC: ECN marks from the switches (ecn_mark) scale the
 * window cut by the fraction of marked bytes.
 *
 * Sender, per ACK (cong_control): bytes newly delivered count into this window's total,
 * and into its marked total when the ACK carries ECE. The first ECE of a window cuts
 * cwnd ← cwnd·(1 − α/2) (at most once per window); when the window ends (snd_una passes
 * the snd_nxt it started at): α ← (1 − g)·α + g·F, F = marked / total. Otherwise Reno
 * growth (slow start, then +1 segment per window; the kernel's tcp_reno_cong_avoid). In
 * loss recovery the window stays at ssthresh = cwnd·(1 − α/2) (halving at α = 1).
 *
 * Receiver (cwnd_event): the exact CE state is echoed — ECE on the ACKs of CE-marked data
 * only. When the CE state flips, a pending delayed ACK is sent first with the old state
 * (bpf_tcp_send_ack), so the sender counts marked bytes, not RTTs. RFC 3168's receiver
 * instead holds ECE until CWR: the receiving socket must run this CC too (the runner makes
 * it the receiving host's default; TCP_CONG_NON_RESTRICTED allows that in a namespace).
 * Flags: TCP_CONG_NEEDS_ECN — the socket negotiates ECN and sends ECT(0) whatever
 * net.ipv4.tcp_ecn says.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "dccs.h"

#ifdef CONG_CONTROL_SK_RS
#error "DCTCP reads FLAG_ECE from the ACK flags of the 6.10+ cong_control hook"
#endif

#ifndef CC_NAME
#define CC_NAME "dctcp"
#endif

#define ALPHA_ONE 1024U /* α × 2^10 */

const volatile __u32 g_fp = 64;           /* g × 2^10 (1/16) */
const volatile __u32 alpha_init = 1024;   /* α at start, × 2^10 (1: cautious, as Linux) */
const volatile __u32 dctcp_min_cwnd = 2;

extern void tcp_reno_cong_avoid(struct sock *sk, __u32 ack, __u32 acked) __ksym;

struct dctcp_ca {
	__u64 win_bytes;     /* bytes delivered in this window */
	__u64 win_marked;    /* of those, acked with ECE */
	__u64 last_trace_ns;
	__u64 win_start_ns;
	__u32 alpha;         /* × 2^10 */
	__u32 win_end;       /* the window ends when snd_una passes this */
	__u32 cut;           /* the window's cut is done */
	__u32 prior_rcv_nxt; /* receiver: rcv_nxt when the CE state last changed */
	__u32 ce_state;      /* receiver: the last data segment was CE */
	__u32 windows;
	__u32 last_f;        /* F of the last window, × 2^16 */
};

static __always_inline struct dctcp_ca *dca(const struct sock *sk)
{
	return (void *)((struct inet_connection_sock *)sk)->icsk_ca_priv;
}

static __always_inline __u32 cut_window(const struct tcp_sock *tp, __u32 alpha)
{
	__u32 c = tp->snd_cwnd - (__u32)(((__u64)tp->snd_cwnd * alpha) >> 11);

	return c < dctcp_min_cwnd ? dctcp_min_cwnd : c;
}

SEC("struct_ops/dctcp_init")
void BPF_PROG(dctcp_init, struct sock *sk)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct dctcp_ca *ca = dca(sk);

	ca->win_bytes = 0;
	ca->win_marked = 0;
	ca->last_trace_ns = 0;
	ca->win_start_ns = bpf_ktime_get_ns();
	ca->alpha = alpha_init > ALPHA_ONE ? ALPHA_ONE : alpha_init;
	ca->win_end = tp->snd_nxt;
	ca->cut = 0;
	ca->prior_rcv_nxt = tp->rcv_nxt;
	ca->ce_state = 0;
	ca->windows = 0;
	ca->last_f = 0;
}

CONG_CONTROL(dctcp_cong_control)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct dctcp_ca *ca = dca(sk);
	__u8 state = ((struct inet_connection_sock *)sk)->icsk_ca_state;
	__u32 acked = rs->acked_sacked > 0 ? rs->acked_sacked : 0;
	__u64 bytes = (__u64)acked * tp->mss_cache, now;
	int ece = flag & FLAG_ECE;

	ca->win_bytes += bytes;
	if (ece)
		ca->win_marked += bytes;
	if (ece && !ca->cut && state < TCP_CA_Recovery) {
		tp->snd_cwnd = cut_window(tp, ca->alpha);
		tp->snd_ssthresh = tp->snd_cwnd;
		ca->cut = 1;
	}
	if (!seq_after(ca->win_end, tp->snd_una)) {
		/* the window is over: α from its marked fraction */
		__u64 f = ca->win_bytes ? (ca->win_marked << 10) / ca->win_bytes : 0;

		if (f > ALPHA_ONE)
			f = ALPHA_ONE;
		ca->alpha = (ca->alpha * (ALPHA_ONE - g_fp) + (__u32)f * g_fp) >> 10;
		ca->last_f = f << (DCCS_FRAC_SHIFT - 10);
		now = bpf_ktime_get_ns();
		ca->windows++;
		dccs_emit(sk, &ca->last_trace_ns, (__u64)tp->snd_cwnd << POWERTCP_CWND_SHIFT,
			  ca->last_f, (__u64)ca->alpha << (DCCS_FRAC_SHIFT - 10), 0,
			  now - ca->win_start_ns, 0, rs->rtt_us > 0 ? rs->rtt_us : 0, 0,
			  ca->win_marked, ca->windows);
		ca->win_start_ns = now;
		ca->win_bytes = 0;
		ca->win_marked = 0;
		ca->win_end = tp->snd_nxt;
		ca->cut = 0;
	}
	if (state >= TCP_CA_Recovery) {
		/* loss: hold at ssthresh (set by dctcp_ssthresh on entry), no growth */
		if (state == TCP_CA_Recovery && tp->snd_cwnd > tp->snd_ssthresh)
			tp->snd_cwnd = tp->snd_ssthresh;
		if (state == TCP_CA_Loss && acked)
			tcp_reno_cong_avoid(sk, ack, acked); /* slow start back to ssthresh */
		return;
	}
	if (!ece && acked)
		tcp_reno_cong_avoid(sk, ack, acked);
}

/* On loss and on CWR entry: the window after the cut (the kernel's own CWR entry on ECE
 * leaves the window to cong_control above). */
SEC("struct_ops/dctcp_ssthresh")
__u32 BPF_PROG(dctcp_ssthresh, struct sock *sk)
{
	return cut_window(tcp_sk(sk), dca(sk)->alpha);
}

SEC("struct_ops/dctcp_undo_cwnd")
__u32 BPF_PROG(dctcp_undo_cwnd, struct sock *sk)
{
	return tcp_sk(sk)->snd_cwnd;
}

static __always_inline void demand_cwr(struct tcp_sock *tp, __u32 ce)
{
	if (ce)
		tp->ecn_flags |= TCP_ECN_DEMAND_CWR; /* the next ACK carries ECE */
	else
		tp->ecn_flags &= ~TCP_ECN_DEMAND_CWR;
}

/* Receiver: echo the CE state of every data segment (RFC 8257 §3.2). */
SEC("struct_ops/dctcp_cwnd_event")
void BPF_PROG(dctcp_cwnd_event, struct sock *sk, enum tcp_ca_event ev)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct tcp_sock *tp = tcp_sk(sk);
	struct dctcp_ca *ca = dca(sk);
	__u32 ce;

	if (ev != CA_EVENT_ECN_IS_CE && ev != CA_EVENT_ECN_NO_CE)
		return;
	ce = ev == CA_EVENT_ECN_IS_CE;
	if (ca->ce_state != ce) {
		/* The ACK owed for the data before this segment reports the old state. */
		if (icsk->icsk_ack.pending & ICSK_ACK_TIMER) {
			demand_cwr(tp, ca->ce_state);
			bpf_tcp_send_ack(sk, ca->prior_rcv_nxt);
		}
		icsk->icsk_ack.pending |= ICSK_ACK_NOW;
	}
	ca->prior_rcv_nxt = tp->rcv_nxt;
	ca->ce_state = ce;
	demand_cwr(tp, ce);
}

SEC(".struct_ops")
struct tcp_congestion_ops dctcp = {
	.init = (void *)dctcp_init,
	.cong_control = (void *)dctcp_cong_control,
	.ssthresh = (void *)dctcp_ssthresh,
	.undo_cwnd = (void *)dctcp_undo_cwnd,
	.cwnd_event = (void *)dctcp_cwnd_event,
	.flags = TCP_CONG_NEEDS_ECN | TCP_CONG_NON_RESTRICTED,
	.name = CC_NAME,
};
