/* TIMELY (SIGCOMM'15) as a struct_ops CC: rate control on the RTT gradient, paced.
 *
 * Once per RTT (the ACK passes the snd_nxt of the previous update), on the ACK's RTT
 * sample (the kernel's, rate_sample.rtt_us):
 *   rtt_diff = (1 − α)·rtt_diff + α·(rtt − prev_rtt);  g = rtt_diff / min_rtt (min_rtt = τ)
 *   rtt < T_low:   rate += δ
 *   rtt > T_high:  rate ·= 1 − β·(1 − T_high/rtt)
 *   g ≤ 0:         rate += N·δ, N = 5 after hai_after gradients ≤ 0 in a row (HAI), else 1
 *   else:          rate ·= 1 − β·g   (g capped at 1)
 * rate within [min_rate, host_bw]; sk_pacing_rate = rate (TCP's internal pacing); the
 * window only bounds what is in flight: 2·rate·max(rtt, τ) + 2 segments.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "dccs.h"

#ifndef CC_NAME
#define CC_NAME "timely"
#endif

#define ONE (1LL << DCCS_FRAC_SHIFT)

const volatile __u32 t_low_us = 500;
const volatile __u32 t_high_us = 5000;
const volatile __u64 delta_Bps = 125000;     /* δ, bytes/s (1 Mb/s) */
const volatile __u32 beta_fp16 = 52429;      /* β × 2^16 (0.8) */
const volatile __u32 alpha_fp16 = 57344;     /* EWMA weight × 2^16 (0.875) */
const volatile __u32 hai_after = 5;
const volatile __u32 hai_n = 5;
const volatile __u64 min_rate_Bps = 125000;  /* 1 Mb/s */

struct timely_ca {
	__u64 rate;          /* bytes/s */
	__s64 rtt_diff;      /* µs × 2^16 */
	__u64 last_ns;
	__u64 last_trace_ns;
	__u32 prev_rtt;      /* µs */
	__u32 epoch_end;
	__u32 neg;           /* gradients ≤ 0 in a row */
	__u32 updates;
};

static __always_inline struct timely_ca *tca(const struct sock *sk)
{
	return (void *)((struct inet_connection_sock *)sk)->icsk_ca_priv;
}

static __always_inline __u64 max_rate(void)
{
	return (__u64)host_bw_mbps * (USEC_PER_SEC / 8);
}

static __always_inline void timely_apply(struct sock *sk, __u64 rate, __u32 rtt, __u32 tau)
{
	struct tcp_sock *tp = tcp_sk(sk);
	__u64 mss = tp->mss_cache ? tp->mss_cache : 1;
	__u64 t = rtt > tau ? rtt : tau;
	__u64 segs = 2 * rate * t / USEC_PER_SEC / mss + 2;

	sk->sk_pacing_rate = rate < sk->sk_max_pacing_rate ? rate : sk->sk_max_pacing_rate;
	tp->snd_cwnd = segs > 0xffff ? 0xffff : segs;
}

SEC("struct_ops/timely_init")
void BPF_PROG(timely_init, struct sock *sk)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct timely_ca *ca = tca(sk);

	ca->rate = max_rate(); /* start at line rate */
	ca->rtt_diff = 0;
	ca->last_ns = bpf_ktime_get_ns();
	ca->last_trace_ns = 0;
	ca->prev_rtt = tp->srtt_us >> 3;
	ca->epoch_end = tp->snd_nxt;
	ca->neg = 0;
	ca->updates = 0;
	tp->snd_ssthresh = TCP_INFINITE_SSTHRESH;
	if (sk->sk_pacing_status == SK_PACING_NONE)
		sk->sk_pacing_status = SK_PACING_NEEDED;
	timely_apply(sk, ca->rate, ca->prev_rtt, tau_us(sk));
}

CONG_CONTROL(timely_cong_control)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct timely_ca *ca = tca(sk);
	__u32 tau = tau_us(sk);
	__s64 rtt = rs->rtt_us, diff, g;
	__u64 rate = ca->rate, now, cut;

	if (rtt <= 0 || !seq_after(ack, ca->epoch_end))
		return;
	now = bpf_ktime_get_ns();
	if (!ca->prev_rtt)
		ca->prev_rtt = rtt;
	diff = (rtt - (__s64)ca->prev_rtt) * ONE;
	/* EWMA with signed values: BPF shifts arithmetically, but has no signed division */
	ca->rtt_diff = ((ONE - alpha_fp16) * ca->rtt_diff + (__s64)alpha_fp16 * diff)
		       >> DCCS_FRAC_SHIFT;
	if (ca->rtt_diff >= 0)
		g = (__u64)ca->rtt_diff / tau;
	else
		g = -(__s64)((__u64)(-ca->rtt_diff) / tau);
	if (g <= 0)
		ca->neg++;
	else
		ca->neg = 0;
	if (rtt < t_low_us) {
		rate += delta_Bps;
	} else if (rtt > t_high_us) {
		/* 1 − β·(1 − T_high/rtt) */
		cut = (__u64)beta_fp16 * (ONE - ((__u64)t_high_us << DCCS_FRAC_SHIFT) / rtt)
		      >> DCCS_FRAC_SHIFT;
		rate = rate * (ONE - cut) >> DCCS_FRAC_SHIFT;
	} else if (g <= 0) {
		rate += (ca->neg >= hai_after ? hai_n : 1) * delta_Bps;
	} else {
		if (g > ONE)
			g = ONE;
		rate = rate * (ONE - ((__u64)beta_fp16 * g >> DCCS_FRAC_SHIFT)) >> DCCS_FRAC_SHIFT;
	}
	if (rate > max_rate())
		rate = max_rate();
	if (rate < min_rate_Bps)
		rate = min_rate_Bps;
	ca->rate = rate;
	ca->updates++;
	timely_apply(sk, rate, rtt, tau);
	dccs_emit(sk, &ca->last_trace_ns, (__u64)tp->snd_cwnd << POWERTCP_CWND_SHIFT,
		  (rate << DCCS_FRAC_SHIFT) / (max_rate() ? max_rate() : 1), 0, 0,
		  now - ca->last_ns, g, rtt, tau, 0, ca->updates);
	ca->prev_rtt = rtt;
	ca->last_ns = now;
	ca->epoch_end = tp->snd_nxt;
}

SEC("struct_ops/timely_ssthresh")
__u32 BPF_PROG(timely_ssthresh, struct sock *sk)
{
	return TCP_INFINITE_SSTHRESH; /* rate-based: the law sets the rate */
}

SEC("struct_ops/timely_undo_cwnd")
__u32 BPF_PROG(timely_undo_cwnd, struct sock *sk)
{
	return tcp_sk(sk)->snd_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops timely = {
	.init = (void *)timely_init,
	.cong_control = (void *)timely_cong_control,
	.ssthresh = (void *)timely_ssthresh,
	.undo_cwnd = (void *)timely_undo_cwnd,
	.name = CC_NAME,
};
