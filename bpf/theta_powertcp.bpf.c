/* θ-PowerTCP: PowerTCP's control law driven by the RTT gradient (no telemetry).
 *
 * Once per RTT: grad = (rtt − prev_rtt)/Δt, Γ_norm = (1 + grad)·rtt/τ, then the
 * shared window/pacing update of powertcp.h. Registered as a struct_ops
 * tcp_congestion_ops whose name comes from -DCC_NAME (unique per run).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "powertcp.h"

#ifndef CC_NAME
#define CC_NAME "theta_powertcp"
#endif

SEC("struct_ops/theta_init")
void BPF_PROG(theta_init, struct sock *sk)
{
	powertcp_reset(sk);
}

CONG_CONTROL(theta_cong_control)
{
	struct powertcp_ca *ca = ca_of(sk);
	__u32 tau = tau_us(sk);
	__u64 now, dt, p_norm;
	__s64 rtt, grad, factor;

	/* Once per RTT: the first ACK beyond the snd_nxt of the previous update. Not at
	 * that snd_nxt itself (the reference's gate): with 1-segment windows that is every
	 * ACK, and 10 flows oscillated into a queue p99 of 43-45 packets (11-14 with this
	 * gate; docs/powertcp.md). Between updates snd_cwnd stays as the last update (or
	 * loss recovery) left it. */
	if (!seq_after(ack, ca->epoch_end_seq))
		return;
	rtt = rs->rtt_us;
	if (rtt <= 0) /* no sample on this ACK (e.g. only retransmitted data acked) */
		rtt = tcp_sk(sk)->srtt_us >> 3;
	if (rtt <= 0)
		return;
	now = bpf_ktime_get_ns();
	dt = now - ca->last_ns;
	if (!ca->prev_rtt_us || !dt) {
		ca->prev_rtt_us = rtt;
		ca->last_ns = now;
		track_old_cwnd(sk, ack);
		return;
	}
	/* BPF has no signed division: divide the magnitude, then restore the sign. */
	if (rtt >= ca->prev_rtt_us)
		grad = (((__u64)rtt - ca->prev_rtt_us) * NSEC_PER_USEC << POWERTCP_POWER_SHIFT) / dt;
	else
		grad = -(__s64)((((__u64)ca->prev_rtt_us - rtt) * NSEC_PER_USEC
				 << POWERTCP_POWER_SHIFT) / dt);
	factor = (1LL << POWERTCP_POWER_SHIFT) + grad; /* (1 + grad), i.e. 1 − |grad| if < 0 */
	if (factor < 0)
		factor = 0;
	if (factor > (1LL << 32))
		factor = 1LL << 32;
	p_norm = (__u64)factor * rtt / tau;

	p_norm = update_window(sk, p_norm, dt, tau);
	emit(sk, now, p_norm, dt, 0, 0, grad, rtt, tau);
	ca->prev_rtt_us = rtt;
	ca->last_ns = now;
	track_old_cwnd(sk, ack);
}

SEC("struct_ops/theta_ssthresh")
__u32 BPF_PROG(theta_ssthresh, struct sock *sk)
{
	return TCP_INFINITE_SSTHRESH; /* no slow start: the law sets the window */
}

SEC("struct_ops/theta_undo_cwnd")
__u32 BPF_PROG(theta_undo_cwnd, struct sock *sk)
{
	return tcp_sk(sk)->snd_cwnd;
}

SEC(".struct_ops")
struct tcp_congestion_ops theta_powertcp = {
	.init = (void *)theta_init,
	.cong_control = (void *)theta_cong_control,
	.ssthresh = (void *)theta_ssthresh,
	.undo_cwnd = (void *)theta_undo_cwnd,
	.name = CC_NAME,
};
