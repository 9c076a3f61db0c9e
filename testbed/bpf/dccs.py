"""The PowerTCP paper's comparison set as eBPF CCs (bpf/dctcp.bpf.c, bpf/hpcc.bpf.c,
bpf/timely.bpf.c): their parameters (config.models DctcpParams, HpccParams,
TimelyParams) as the programs' `const volatile` values; their registry entries are in
testbed/bpf/cc.py.
"""
from __future__ import annotations

from ..config.models import DctcpParams, HpccParams, TimelyParams  # noqa: F401
from . import abi

FRAC_SHIFT = abi.defines("dccs.h", "DCCS_")["DCCS_FRAC_SHIFT"]  # fractions in the trace


def dctcp_rodata(p: DctcpParams) -> dict[str, int]:
    return {"g_fp": max(1, round(p.g * 1024)),
            "alpha_init": round(p.alpha_init * 1024),
            "dctcp_min_cwnd": p.min_cwnd,
            "trace_interval_us": p.trace_interval_us}


def hpcc_rodata(p: HpccParams) -> dict[str, int]:
    return {"eta_fp": round(p.eta * (1 << FRAC_SHIFT)),
            "max_stage": p.max_stage,
            "w_ai_fp": round(p.w_ai * 1024) if p.w_ai else 0,
            "expected_flows": p.expected_flows,
            "base_rtt_us": p.base_rtt_us,
            "host_bw_mbps": p.host_bw_mbps,
            "hop_bw_mbps": p.hop_bw_mbps,
            "hpcc_min_cwnd": p.min_cwnd,
            "trace_interval_us": p.trace_interval_us}


def timely_rodata(p: TimelyParams) -> dict[str, int]:
    return {"t_low_us": p.t_low_us, "t_high_us": p.t_high_us,
            "delta_Bps": round(p.delta_mbps * 125000),
            "beta_fp16": round(p.beta * (1 << FRAC_SHIFT)),
            "alpha_fp16": round(p.alpha * (1 << FRAC_SHIFT)),
            "hai_after": p.hai_after, "hai_n": p.hai_n,
            "base_rtt_us": p.base_rtt_us, "host_bw_mbps": p.host_bw_mbps,
            "min_rate_Bps": round(p.min_rate_mbps * 125000),
            "trace_interval_us": p.trace_interval_us}
