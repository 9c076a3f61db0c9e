/* PowerTCP: the window and pacing rate from the power of the most congested hop,
 * read per ACK from TCP-INT's per-socket telemetry (map tcp_int_state, tcp_int.h).
 *
 * Per fresh telemetry sample (tcp_int_state.seq moved):
 *   λ = max(0, Δqlen + Δtx_bytes)/Δt        bytes/s arriving at the hop
 *   Γ_norm = (λ/bw) · ((qlen + bw·τ)/(bw·τ)) i.e. λ·v/e with v = qlen + bw·τ, e = bw²·τ
 * then the shared update of powertcp.h. Between samples the window stays.
 * Registered as a struct_ops tcp_congestion_ops named by -DCC_NAME (unique per run).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "powertcp.h"
#include "tcp_int.h"

#ifndef CC_NAME
#define CC_NAME "powertcp"
#endif

TCP_INT_STATE_MAP;

SEC("struct_ops/powertcp_init")
void BPF_PROG(powertcp_init, struct sock *sk)
{
	powertcp_reset(sk);
}

/* Γ_norm × 2^16 of the hop between two telemetry samples dt ns apart. */
static __always_inline __u64 int_power(__u32 qlen, __u32 last_qlen, __u64 dtx, __u64 dt,
				       __u32 bw_mbps, __u32 tau)
{
	__u64 bw_Bps = (__u64)bw_mbps * (USEC_PER_SEC / 8);
	__u64 bdp = bdp_bytes(bw_mbps, tau);
	__s64 arrived = (__s64)qlen - (__s64)last_qlen + (__s64)dtx;
	__u64 lambda, lambda_fp, v_fp;

	if (arrived < 0)
		arrived = 0;
	if (!bdp) /* bw·τ below one byte: treat the hop as one byte deep */
		bdp = 1;
	lambda = (__u64)arrived * 1000000000ULL / dt;
	lambda_fp = (lambda << POWERTCP_POWER_SHIFT) / bw_Bps;
	v_fp = (((__u64)qlen + bdp) << POWERTCP_POWER_SHIFT) / bdp;
	return (lambda_fp * v_fp) >> POWERTCP_POWER_SHIFT;
}

CONG_CONTROL(powertcp_cong_control)
{
	struct powertcp_ca *ca = ca_of(sk);
	struct tcp_int_state *st;
	__u32 tau = tau_us(sk), bw, qlen, seq;
	__u64 now, dt, dtx, tx, p_norm, srtt_ns;

	st = bpf_sk_storage_get(&tcp_int_state, sk, NULL, 0);
	seq = st ? st->seq : 0;
	if (!st || seq == ca->last_int_id) {
		/* No fresh telemetry: no update (snd_cwnd stays as the last update or the
		 * kernel's loss recovery left it). */
		track_old_cwnd(sk, ack);
		return;
	}
	now = st->ts_ns;
	qlen = st->qdepth_bytes;
	tx = st->tx_bytes;
	bw = hop_bw_mbps ? hop_bw_mbps : (st->link_mbps ? st->link_mbps : host_bw_mbps);
	dt = now - ca->last_ns;
	dtx = tx - ca->last_tx_bytes;
	if (!ca->last_int_id || (__s64)dt <= 0) {
		/* First sample (or a clock step): a baseline, no rate yet. */
		ca->last_int_id = seq;
		ca->last_ns = now;
		ca->last_qlen = qlen;
		ca->last_tx_bytes = tx;
		track_old_cwnd(sk, ack);
		return;
	}
	srtt_ns = (__u64)(tcp_sk(sk)->srtt_us >> 3) * NSEC_PER_USEC;
	if (dt < (__u64)tau * NSEC_PER_USEC || dt < srtt_ns) {
		/* λ over at least τ: a sample's time is when its echo reached us (no switch
		 * timestamp), jittered by the host's CPU, and the queue comes in 2 KiB steps —
		 * one step over a 20 µs gap read as ±800 Mb/s, and Γ swung between its 0.01
		 * floor (window to the cap) and 16. Keep the baseline, wait for more. */
		track_old_cwnd(sk, ack);
		return;
	}
	p_norm = int_power(qlen, ca->last_qlen, dtx, dt, bw, tau);
	p_norm = update_window(sk, p_norm, dt, tau);
	emit(sk, bpf_ktime_get_ns(), p_norm, dt, qlen, dtx, 0, rs->rtt_us > 0 ? rs->rtt_us : 0,
	     tau);
	ca->last_int_id = seq;
	ca->last_ns = now;
	ca->last_qlen = qlen;
	ca->last_tx_bytes = tx;
	track_old_cwnd(sk, ack);
}

SEC("struct_ops/powertcp_ssthresh")
__u32 BPF_PROG(powertcp_ssthresh, struct sock *sk)
{
	return TCP_INFINITE_SSTHRESH; /* no slow start: the law sets the window */
}

SEC("struct_ops/powertcp_undo_cwnd")
__u32 BPF_PROG(powertcp_undo_cwnd, struct sock *sk)
{
	return tcp_sk(sk)->snd_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops powertcp = {
	.init = (void *)powertcp_init,
	.cong_control = (void *)powertcp_cong_control,
	.ssthresh = (void *)powertcp_ssthresh,
	.undo_cwnd = (void *)powertcp_undo_cwnd,
	.name = CC_NAME,
};
