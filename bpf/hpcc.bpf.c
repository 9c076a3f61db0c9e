/* HPCC (SIGCOMM'19) as a struct_ops CC, fed by TCP-INT: the same per-socket telemetry
 * PowerTCP reads (map tcp_int_state: the most congested hop's queue, its tx byte count,
 * the time of the echo).
 *
 * Per fresh telemetry sample (tcp_int_state.seq moved), with T = τ and B the hop's rate:
 *   txRate = Δtx_bytes / Δt
 *   u      = min(qlen, previous qlen) / (B·T) + txRate / B      normalized inflight
 *   U      = (1 − Δt'/T)·U + (Δt'/T)·u,  Δt' = min(Δt, T)
 *   if U ≥ η or incStage ≥ maxStage:  W = W_c / (U/η) + W_AI
 *   else:                             W = W_c + W_AI
 *   once per RTT (the ACK passes the snd_nxt of the last reference update): W_c = W, and
 *   incStage = 0 after a multiplicative step, + 1 after an additive one
 *   W within [1/16 segment, host_bw·T]; pacing R = W/T; snd_cwnd = max(min_cwnd, W).
 * TCP-INT carries one hop (the most congested by its INTval), not HPCC's per-hop list:
 * u is that hop's, and a sample whose hop differs from the previous one only rebases
 * (its counters are another hop's). See docs/powertcp.md "The comparison set".
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "dccs.h"
#include "tcp_int.h"

#ifndef CC_NAME
#define CC_NAME "hpcc"
#endif

const volatile __u32 eta_fp = 62259;     /* η × 2^16 (0.95) */
const volatile __u32 max_stage = 5;
const volatile __u32 w_ai_fp = 0;        /* W_AI, segments × 2^10; 0: W_init·(1−η)/N */
const volatile __u32 hpcc_min_cwnd = 1;

TCP_INT_STATE_MAP;

struct hpcc_ca {
	__u64 w_fp;          /* W, segments × 2^10 */
	__u64 wc_fp;         /* W_c, the reference window */
	__u64 u_fp;          /* U × 2^16 (0 until the first sample) */
	__u64 last_ts;       /* the previous sample's echo time */
	__u64 last_tx;       /* … its tx byte count */
	__u64 last_trace_ns;
	__u32 last_qlen;
	__u32 last_seq;      /* tcp_int_state.seq used last */
	__u32 last_hop;
	__u32 update_seq;    /* W_c is updated when the ACK passes this */
	__u32 inc_stage;
	__u32 updates;
};

static __always_inline struct hpcc_ca *hca(const struct sock *sk)
{
	return (void *)((struct inet_connection_sock *)sk)->icsk_ca_priv;
}

static __always_inline void hpcc_apply(struct sock *sk, __u64 w_fp, __u32 tau)
{
	struct tcp_sock *tp = tcp_sk(sk);
	__u64 segs = w_fp >> POWERTCP_CWND_SHIFT;
	__u64 rate = ((w_fp * tp->mss_cache) >> POWERTCP_CWND_SHIFT) * USEC_PER_SEC / tau;

	tp->snd_cwnd = segs < hpcc_min_cwnd ? hpcc_min_cwnd : segs;
	if (rate > sk->sk_max_pacing_rate)
		rate = sk->sk_max_pacing_rate;
	sk->sk_pacing_rate = rate;
}

SEC("struct_ops/hpcc_init")
void BPF_PROG(hpcc_init, struct sock *sk)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct hpcc_ca *ca = hca(sk);
	__u32 tau = tau_us(sk);

	/* W_init = host_bw·T: start at line rate */
	ca->w_fp = cwnd_cap_fp(sk, tau);
	ca->wc_fp = ca->w_fp;
	ca->u_fp = 0;
	ca->last_ts = 0;
	ca->last_tx = 0;
	ca->last_trace_ns = 0;
	ca->last_qlen = 0;
	ca->last_seq = 0;
	ca->last_hop = 0;
	ca->update_seq = tp->snd_nxt;
	ca->inc_stage = 0;
	ca->updates = 0;
	tp->snd_ssthresh = TCP_INFINITE_SSTHRESH;
	if (sk->sk_pacing_status == SK_PACING_NONE)
		sk->sk_pacing_status = SK_PACING_NEEDED;
	hpcc_apply(sk, ca->w_fp, tau);
}

CONG_CONTROL(hpcc_cong_control)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct hpcc_ca *ca = hca(sk);
	struct tcp_int_state *st;
	__u32 tau = tau_us(sk), bw, qlen, qmin, hop;
	__u64 tau_ns = (__u64)tau * NSEC_PER_USEC, dt, dtx, bdp, bw_Bps, u, w, w_ai, max_fp;
	int update_wc;

	st = bpf_sk_storage_get(&tcp_int_state, sk, NULL, 0);
	if (!st || st->seq == ca->last_seq)
		return; /* no fresh telemetry: the window stands */
	qlen = st->qdepth_bytes;
	hop = st->hop_id;
	dt = st->ts_ns - ca->last_ts;
	dtx = st->tx_bytes - ca->last_tx;
	if (!ca->last_seq || hop != ca->last_hop || (__s64)dt <= 0) {
		/* first sample, another hop, or a clock step: a baseline only */
		ca->last_seq = st->seq;
		ca->last_ts = st->ts_ns;
		ca->last_tx = st->tx_bytes;
		ca->last_qlen = qlen;
		ca->last_hop = hop;
		return;
	}
	bw = hop_bw_mbps ? hop_bw_mbps : (st->link_mbps ? st->link_mbps : host_bw_mbps);
	bw_Bps = (__u64)bw * (USEC_PER_SEC / 8);
	bdp = bdp_bytes(bw, tau);
	if (!bdp)
		bdp = 1;
	qmin = qlen < ca->last_qlen ? qlen : ca->last_qlen;
	u = ((__u64)qmin << DCCS_FRAC_SHIFT) / bdp +
	    ((dtx * 1000000000ULL / dt) << DCCS_FRAC_SHIFT) / bw_Bps;
	ca->u_fp = ewma_tau(ca->u_fp, u, dt, tau_ns);
	if (!ca->u_fp)
		ca->u_fp = 1;

	max_fp = cwnd_cap_fp(sk, tau);
	w_ai = w_ai_fp;
	if (!w_ai)
		w_ai = max_fp * ((1 << DCCS_FRAC_SHIFT) - eta_fp) / (expected_flows ? expected_flows : 1)
		       >> DCCS_FRAC_SHIFT;
	update_wc = seq_after(ack, ca->update_seq);
	if (ca->u_fp >= eta_fp || ca->inc_stage >= max_stage) {
		w = ca->wc_fp * eta_fp / ca->u_fp + w_ai;
		if (update_wc)
			ca->inc_stage = 0;
	} else {
		w = ca->wc_fp + w_ai;
		if (update_wc)
			ca->inc_stage++;
	}
	if (w > max_fp)
		w = max_fp;
	if (w < POWERTCP_MIN_LAW_CWND_FP)
		w = POWERTCP_MIN_LAW_CWND_FP;
	ca->w_fp = w;
	if (update_wc) {
		ca->wc_fp = w;
		ca->update_seq = tp->snd_nxt;
	}
	ca->updates++;
	hpcc_apply(sk, w, tau);
	dccs_emit(sk, &ca->last_trace_ns, w, u, ca->u_fp, qlen, st->ts_ns - ca->last_ts, 0,
		  rs->rtt_us > 0 ? rs->rtt_us : 0, tau, dtx, ca->updates);
	ca->last_seq = st->seq;
	ca->last_ts = st->ts_ns;
	ca->last_tx = st->tx_bytes;
	ca->last_qlen = qlen;
}

SEC("struct_ops/hpcc_ssthresh")
__u32 BPF_PROG(hpcc_ssthresh, struct sock *sk)
{
	return TCP_INFINITE_SSTHRESH; /* no slow start: the law sets the window */
}

SEC("struct_ops/hpcc_undo_cwnd")
__u32 BPF_PROG(hpcc_undo_cwnd, struct sock *sk)
{
	return tcp_sk(sk)->snd_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops hpcc = {
	.init = (void *)hpcc_init,
	.cong_control = (void *)hpcc_cong_control,
	.ssthresh = (void *)hpcc_ssthresh,
	.undo_cwnd = (void *)hpcc_undo_cwnd,
	.name = CC_NAME,
};
