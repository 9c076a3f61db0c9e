/* PowerTCP and θ-PowerTCP: what the kernel programs and the Python side share.
 *
 * Both sides read this header: the trace event (testbed/bpf/abi.py reads
 * `struct powertcp_event` and the fixed-point shifts below) and the limits.
 * The section under __bpf__ is kernel-only: the per-socket state, the parameters
 * (`const volatile`, set by the loader before load) and the control law shared by
 * powertcp.bpf.c (INT) and theta_powertcp.bpf.c (RTT gradient).
 */
#ifndef POWERTCP_H
#define POWERTCP_H

#define POWERTCP_CWND_SHIFT 10   /* cwnd: segments × 2^10 */
#define POWERTCP_POWER_SHIFT 16  /* Γ_norm, Γ_smooth, rtt_grad: × 2^16 */
#define POWERTCP_GAMMA_SHIFT 10  /* γ: × 2^10 */
#define POWERTCP_MIN_CWND 1      /* default snd_cwnd floor, segments (parameter min_cwnd) */
/* The law's own window may go below the floor (to 1/16 segment): it then sets only the
 * pacing rate, so N flows can share a bottleneck whose BDP is below N segments (veth). */
#define POWERTCP_MIN_LAW_CWND_FP ((1 << POWERTCP_CWND_SHIFT) / 16)
#define POWERTCP_FRAME_OVERHEAD 66 /* TCP + timestamps, IPv4, Ethernet: 1448 → 1514 B */
#define POWERTCP_MIN_POWER ((1 << POWERTCP_POWER_SHIFT) / 100) /* Γ_norm floor 0.01 */
#define POWERTCP_MAX_POWER 0xffffffffULL
#define POWERTCP_RINGBUF_BYTES (1 << 20)
#define POWERTCP_NAME_MAX 16     /* TCP_CA_NAME_MAX, with the NUL */

/* One trace record per window update (at most one per trace_interval_us per socket). */
struct powertcp_event {
	__u64 time_ns;     /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 rate;        /* pacing rate set, bytes/s */
	__u64 tx_bytes;    /* bytes the hop sent during delta_t (INT; 0 for θ) */
	__u32 hash;        /* flow: the socket's hash */
	__u16 sport;       /* host order */
	__u16 dport;       /* host order */
	__u32 cwnd;        /* segments × 2^10 */
	__u32 p_norm;      /* Γ_norm × 2^16 */
	__u32 p_smooth;    /* Γ_smooth × 2^16 */
	__u32 qlen;        /* bytes queued at the most congested hop (INT; 0 for θ) */
	__u32 delta_t;     /* ns since the previous update */
	__s32 rtt_grad;    /* dRTT/dt × 2^16 (θ; 0 for INT) */
	__u32 rtt_us;      /* the RTT sample used */
	__u32 base_rtt_us; /* τ in use */
	__u32 old_cwnd;    /* cwnd_old of the law, segments × 2^10 */
	__u32 beta;        /* β in use, segments × 2^10 */
	__u32 seq;         /* this socket's update count: gaps = lost events */
	__u32 snd_cwnd;    /* the kernel's snd_cwnd when this update began, segments (after
			    * an RTO: what loss recovery left, the law not yet applied) */
};

#ifdef __bpf__
/* ------------------------------------------------------------------ kernel side */

#define TCP_INFINITE_SSTHRESH 0x7fffffff
#define USEC_PER_SEC 1000000ULL
#define NSEC_PER_USEC 1000ULL

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Parameters, set by testbed/bpf/cc.py before load (defaults = the paper's). */
const volatile __u32 gamma_fp = 922;        /* γ = 0.9 */
const volatile __u32 beta_fp = 0;           /* β in segments × 2^10; 0: host_bw·τ/flows/mss */
const volatile __u32 expected_flows = 10;
const volatile __u32 base_rtt_us = 0;       /* τ; 0: the socket's min RTT */
const volatile __u32 hop_bw_mbps = 1000;
const volatile __u32 host_bw_mbps = 1000;
const volatile __u32 trace_interval_us = 0; /* 0: every update */
/* snd_cwnd floor, segments. 1 as in the reference: N flows at their floor keep N packets
 * in flight, not 2·N. Needs receivers that ACK at once (quickack): one segment in flight
 * and a delayed ACK stall for 40 ms; 2 is for receivers with delayed ACKs. */
const volatile __u32 min_cwnd = POWERTCP_MIN_CWND;

__u64 trace_lost = 0; /* events the ring buffer had no room for (read by the loader) */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, POWERTCP_RINGBUF_BYTES);
} events SEC(".maps");

/* [0] != 0 while someone records the trace (set by the loader): no event, no reserve in
 * the ring buffer and no wake-up of the reader otherwise. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} trace_ctl SEC(".maps");

/* Per-socket state in icsk_ca_priv (104 bytes available). */
struct powertcp_ca {
	__u64 cwnd_fp;       /* our window, segments × 2^10 */
	__u64 p_smooth;      /* Γ_smooth × 2^16; 0 until the first sample */
	__u64 last_ns;       /* time of the previous window update */
	__u64 last_trace_ns;
	__u64 last_tx_bytes; /* INT: hop tx byte counter at the previous sample */
	__u32 last_qlen;     /* INT: hop queue at the previous sample */
	__u32 last_int_id;   /* INT: which telemetry sample was used last */
	__u32 old_cwnd_fp;   /* window when the data now acked was sent */
	__u32 epoch_end_seq; /* snd_nxt when old_cwnd_fp was taken */
	__u32 prev_rtt_us;   /* θ: the RTT at the previous update */
	__u32 beta_fp;       /* β used by the last update */
	__u32 updates;       /* window updates so far */
	__u32 snd_cwnd_in;   /* the kernel's snd_cwnd as the last update began */
};

static __always_inline struct tcp_sock *tcp_sk(const struct sock *sk)
{
	return (struct tcp_sock *)sk;
}

/* CONG_CONTROL(fn) { body } declares the struct_ops cong_control program `fn`; the body
 * sees (sk, ack, flag, rs). The kernel's hook is (sk, ack, flag, rs) since 6.10 and
 * (sk, rs) before: testbed.bpf.cc passes -DCONG_CONTROL_SK_RS when the running kernel's
 * BTF has the older one. There the ACKed sequence is snd_una (tcp_ack() has moved it to
 * the ACK's before calling cong_control) and no ACK flags are passed (0). */
#ifdef CONG_CONTROL_SK_RS
#define CONG_CONTROL(fn)							\
	static __always_inline void fn##_body(struct sock *sk, __u32 ack, int flag,	\
					      const struct rate_sample *rs);	\
	SEC("struct_ops/" #fn)							\
	void BPF_PROG(fn, struct sock *sk, const struct rate_sample *rs)	\
	{									\
		fn##_body(sk, tcp_sk(sk)->snd_una, 0, rs);			\
	}									\
	static __always_inline void fn##_body(struct sock *sk, __u32 ack, int flag,	\
					      const struct rate_sample *rs)
#else
#define CONG_CONTROL(fn)							\
	static __always_inline void fn##_body(struct sock *sk, __u32 ack, int flag,	\
					      const struct rate_sample *rs);	\
	SEC("struct_ops/" #fn)							\
	void BPF_PROG(fn, struct sock *sk, __u32 ack, int flag,			\
		      const struct rate_sample *rs)				\
	{									\
		fn##_body(sk, ack, flag, rs);					\
	}									\
	static __always_inline void fn##_body(struct sock *sk, __u32 ack, int flag,	\
					      const struct rate_sample *rs)
#endif

static __always_inline struct powertcp_ca *ca_of(const struct sock *sk)
{
	return (void *)((struct inet_connection_sock *)sk)->icsk_ca_priv;
}

static __always_inline int seq_after(__u32 a, __u32 b)
{
	return (__s32)(b - a) < 0;
}

/* One full-sized frame's transmission at host_bw, µs (Mb/s = bits/µs): the segment
 * plus TCP (with timestamps), IPv4 and Ethernet headers. */
static __always_inline __u32 seg_time_us(const struct sock *sk)
{
	__u32 mss = tcp_sk(sk)->mss_cache ? tcp_sk(sk)->mss_cache : 1448;

	return (mss + POWERTCP_FRAME_OVERHEAD) * 8 / (host_bw_mbps ? host_bw_mbps : 1);
}

/* τ in µs: the configured base RTT, else the path's: the socket's min RTT (else its
 * smoothed RTT) plus one full frame's transmission at host_bw. The min comes from small
 * packets (the handshake) or a lone segment, which no rate limiter of an emulated path
 * (HTB, BMv2's queue rate) holds for its transmission time — while every segment of a
 * flow that fills the link waits that long behind the one before. Without it, bw·τ is a
 * segment short of the path's BDP: at 20 Mb/s through BMv2 the min RTT is 135-250 µs,
 * one frame 605 µs, and a window capped at host_bw·min RTT (0.3 segment) can keep one
 * segment in flight at most, 85-90 % of the link (docs/bmv2.md). */
static __always_inline __u32 tau_us(const struct sock *sk)
{
	const struct tcp_sock *tp = tcp_sk(sk);
	__u32 m;

	if (base_rtt_us)
		return base_rtt_us;
	m = tp->rtt_min.s[0].v;
	if (!m || m == ~0U)
		m = tp->srtt_us >> 3;
	if (!m)
		return 1000;
	return m + seg_time_us(sk);
}

/* bytes in flight at bw_mbps during tau µs: Mb/s × µs = bits */
static __always_inline __u64 bdp_bytes(__u32 bw_mbps, __u32 tau)
{
	return (__u64)bw_mbps * tau / 8;
}

static __always_inline void set_pacing(struct sock *sk, __u64 cwnd_fp, __u32 tau)
{
	const struct tcp_sock *tp = tcp_sk(sk);
	__u64 rate = ((cwnd_fp * tp->mss_cache) >> POWERTCP_CWND_SHIFT) * USEC_PER_SEC / tau;

	if (rate > sk->sk_max_pacing_rate)
		rate = sk->sk_max_pacing_rate;
	sk->sk_pacing_rate = rate;
}

/* snd_cwnd from the law's window, floored at min_cwnd segments, within snd_cwnd_clamp;
 * rounded up while the hop is under-used (Γ_smooth ≤ 1), down otherwise. Up: the pacing
 * rate (cwnd·mss/τ) carries the law's rate and the window must not be what holds the
 * link idle — truncated, a law window of 1.4 segments kept 1 in flight, and one flow
 * could not fill a path whose round trip outlasts a segment's transmission (BMv2 at
 * 20 Mb/s: 85-90 %). Down under congestion: rounded up there too, 32 flows with windows
 * of 1-2 segments over a full FIFO retransmitted 3.8× the reference (2.5 rounds, 0.96×
 * truncated; docs/powertcp.md).
 * Called only where the law updates (and at init): between updates the kernel's own
 * changes stand — after an RTO (cwnd = in flight + 1) the window comes back at the next
 * update, not at the next ACK, which would resend a full window into the loss. */
static __always_inline void apply_cwnd(struct sock *sk)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct powertcp_ca *ca = ca_of(sk);
	__u64 up = ca->p_smooth && ca->p_smooth <= (1ULL << POWERTCP_POWER_SHIFT) ?
		   (1 << POWERTCP_CWND_SHIFT) - 1 : 0;
	__u64 segs = (ca->cwnd_fp + up) >> POWERTCP_CWND_SHIFT;
	__u32 floor = min_cwnd ? min_cwnd : 1;

	if (segs < floor)
		segs = floor;
	if (tp->snd_cwnd_clamp && segs > tp->snd_cwnd_clamp)
		segs = tp->snd_cwnd_clamp;
	tp->snd_cwnd = segs;
}

/* The window cap host_bw·τ, in segments × 2^10 (never below the law's floor). */
static __always_inline __u64 cwnd_cap_fp(const struct sock *sk, __u32 tau)
{
	__u64 mss = tcp_sk(sk)->mss_cache ? tcp_sk(sk)->mss_cache : 1;
	__u64 max_fp = (bdp_bytes(host_bw_mbps, tau) << POWERTCP_CWND_SHIFT) / mss;

	return max_fp < POWERTCP_MIN_LAW_CWND_FP ? POWERTCP_MIN_LAW_CWND_FP : max_fp;
}

static __always_inline void powertcp_reset(struct sock *sk)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct powertcp_ca *ca = ca_of(sk);
	__u64 cap = cwnd_cap_fp(sk, tau_us(sk));

	/* Start at line rate: the initial window, but no more than host_bw·τ (a 10:1 incast
	 * of 10-segment initial windows would otherwise fill a small buffer at once). */
	ca->cwnd_fp = (__u64)tp->snd_cwnd << POWERTCP_CWND_SHIFT;
	if (ca->cwnd_fp > cap)
		ca->cwnd_fp = cap;
	ca->p_smooth = 0; /* before apply_cwnd: no Γ yet, the window rounds down */
	apply_cwnd(sk);
	tp->snd_ssthresh = TCP_INFINITE_SSTHRESH;
	ca->old_cwnd_fp = ca->cwnd_fp;
	ca->epoch_end_seq = tp->snd_nxt;
	ca->p_smooth = 0;
	ca->last_ns = bpf_ktime_get_ns();
	ca->last_trace_ns = 0;
	ca->last_tx_bytes = 0;
	ca->last_qlen = 0;
	ca->last_int_id = 0;
	/* θ's first gradient against the handshake's RTT: an update one RTT after start,
	 * not a first epoch spent on a baseline. */
	ca->prev_rtt_us = tp->srtt_us >> 3;
	ca->beta_fp = 0;
	ca->updates = 0;
	/* No fq qdisc here: ask TCP for its internal pacing timer. */
	if (sk->sk_pacing_status == SK_PACING_NONE)
		sk->sk_pacing_status = SK_PACING_NEEDED;
	set_pacing(sk, ca->cwnd_fp, tau_us(sk));
}

/* Once per RTT, remember the window: the data acked next was sent under it. */
static __always_inline void track_old_cwnd(struct sock *sk, __u32 ack)
{
	struct powertcp_ca *ca = ca_of(sk);

	if (seq_after(ack, ca->epoch_end_seq)) {
		ca->old_cwnd_fp = ca->cwnd_fp;
		ca->epoch_end_seq = tcp_sk(sk)->snd_nxt;
	}
}

/* The socket's next trace event with its common fields filled, or NULL: nothing records,
 * the socket's `last_ns` is less than trace_interval_us ago, or the ring is full (counted).
 * Every eBPF CC traces through this, so one event layout and one limiter serve them all. */
static __always_inline struct powertcp_event *trace_reserve(struct sock *sk, __u64 now,
							    __u64 *last_ns, __u64 tx_bytes)
{
	struct powertcp_event *e;
	__u32 zero = 0, *on = bpf_map_lookup_elem(&trace_ctl, &zero);

	if (!on || !*on)
		return NULL;
	if (trace_interval_us && now - *last_ns < trace_interval_us * NSEC_PER_USEC)
		return NULL;
	*last_ns = now;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&trace_lost, 1);
		return NULL;
	}
	e->time_ns = now;
	e->rate = sk->sk_pacing_rate;
	e->tx_bytes = tx_bytes;
	e->hash = sk->__sk_common.skc_hash;
	e->sport = sk->__sk_common.skc_num;
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	return e;
}

static __always_inline void emit(struct sock *sk, __u64 now, __u64 p_norm, __u64 dt,
				 __u32 qlen, __u64 tx_bytes, __s64 grad, __u32 rtt, __u32 tau)
{
	struct powertcp_ca *ca = ca_of(sk);
	struct powertcp_event *e = trace_reserve(sk, now, &ca->last_trace_ns, tx_bytes);

	if (!e)
		return;
	e->cwnd = ca->cwnd_fp;
	e->p_norm = p_norm;
	e->p_smooth = ca->p_smooth;
	e->qlen = qlen;
	e->delta_t = dt > 0xffffffffULL ? 0xffffffff : dt;
	e->rtt_grad = grad;
	e->rtt_us = rtt;
	e->base_rtt_us = tau;
	e->old_cwnd = ca->old_cwnd_fp;
	e->beta = ca->beta_fp;
	e->seq = ca->updates;
	e->snd_cwnd = ca->snd_cwnd_in;
	bpf_ringbuf_submit(e, 0);
}

/* EWMA of x with weight min(dt, τ)/τ, seeded by the first sample (avg 0). */
static __always_inline __u64 ewma_tau(__u64 avg, __u64 x, __u64 dt, __u64 tau_ns)
{
	if (!avg)
		return x;
	if (dt > tau_ns)
		dt = tau_ns;
	return (avg * (tau_ns - dt) + x * dt) / tau_ns;
}

/* The control law shared by both variants, given this update's Γ_norm over dt ns:
 * Γ_smooth = EWMA(Γ_norm, weight min(dt, τ)/τ);
 * cwnd = γ·(cwnd_old/Γ_smooth + β) + (1−γ)·cwnd, in [1/16 segment, host_bw·τ],
 * snd_cwnd = max(min_cwnd, cwnd);
 * pacing = cwnd·mss/τ. Returns Γ_norm as used (after its floor). */
static __always_inline __u64 update_window(struct sock *sk, __u64 p_norm, __u64 dt, __u32 tau)
{
	struct tcp_sock *tp = tcp_sk(sk);
	struct powertcp_ca *ca = ca_of(sk);
	__u64 tau_ns = (__u64)tau * NSEC_PER_USEC;
	__u64 mss = tp->mss_cache ? tp->mss_cache : 1;
	__u64 max_fp, beta, target, cwnd;

	ca->snd_cwnd_in = tp->snd_cwnd;
	if (p_norm < POWERTCP_MIN_POWER)
		p_norm = POWERTCP_MIN_POWER;
	if (p_norm > POWERTCP_MAX_POWER)
		p_norm = POWERTCP_MAX_POWER;
	ca->p_smooth = ewma_tau(ca->p_smooth, p_norm, dt, tau_ns);
	if (!ca->p_smooth) /* for the verifier's sake of the division below, and rounding */
		ca->p_smooth = POWERTCP_MIN_POWER;

	max_fp = cwnd_cap_fp(sk, tau);
	beta = beta_fp;
	if (!beta)
		beta = (bdp_bytes(host_bw_mbps, tau) << POWERTCP_CWND_SHIFT) /
		       (expected_flows ? expected_flows : 1) / mss;

	target = (((__u64)ca->old_cwnd_fp << POWERTCP_POWER_SHIFT) / ca->p_smooth) + beta;
	cwnd = (gamma_fp * target + ((1 << POWERTCP_GAMMA_SHIFT) - gamma_fp) * ca->cwnd_fp)
	       >> POWERTCP_GAMMA_SHIFT;
	if (cwnd > max_fp)
		cwnd = max_fp;
	if (cwnd < POWERTCP_MIN_LAW_CWND_FP)
		cwnd = POWERTCP_MIN_LAW_CWND_FP;
	ca->cwnd_fp = cwnd;
	ca->beta_fp = beta;
	ca->updates++;
	apply_cwnd(sk);
	set_pacing(sk, cwnd, tau);
	return p_norm;
}

#endif /* __bpf__ */
#endif /* POWERTCP_H */
