"""Parameters of the PowerTCP paper's comparison set as eBPF CCs (bpf/dctcp.bpf.c,
bpf/hpcc.bpf.c, bpf/timely.bpf.c); their registry entries are in testbed/bpf/cc.py.

Classes:
- DctcpParams: g, the initial α, the window floor.
- HpccParams: η, maxStage, W_AI (or the flows it is sized for), T, host and hop bandwidth.
- TimelyParams: T_low, T_high, δ, β, the EWMA weight α, HAI after N negative gradients,
  min RTT, host bandwidth (the initial and the largest rate), the smallest rate.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from . import abi
from .cc import CCParams

FRAC_SHIFT = abi.defines("dccs.h", "DCCS_")["DCCS_FRAC_SHIFT"]  # fractions in the trace
_TRACE = Field(0, ge=0, le=10_000_000, description="at most one trace event per flow per "
                                                   "interval; 0 = every update")


class DctcpParams(CCParams):
    """DCTCP (RFC 8257): α ← (1 − g)·α + g·F once per window; cut cwnd·(1 − α/2)."""

    g: float = Field(1 / 16, gt=0, le=1, description="EWMA gain of α")
    alpha_init: float = Field(1.0, ge=0, le=1, description="α of a new connection")
    min_cwnd: int = Field(2, ge=1, le=1000, description="window floor, segments")
    trace_interval_us: int = _TRACE

    def rodata(self) -> dict[str, int]:
        return {"g_fp": max(1, round(self.g * 1024)),
                "alpha_init": round(self.alpha_init * 1024),
                "dctcp_min_cwnd": self.min_cwnd,
                "trace_interval_us": self.trace_interval_us}


class HpccParams(CCParams):
    """HPCC over TCP-INT: η, maxStage, W_AI (or N), T, host and hop bandwidth."""

    eta: float = Field(0.95, gt=0, le=1, description="target utilization η")
    max_stage: int = Field(5, ge=0, le=1000, description="additive steps before a "
                                                         "multiplicative one (maxStage)")
    w_ai: float | None = Field(None, gt=0, le=100000,
                               description="additive increase W_AI, segments; default "
                                           "W_init·(1−η)/expected_flows")
    expected_flows: int = Field(10, ge=1, le=100000, description="N of the default W_AI")
    base_rtt_us: int = Field(0, ge=0, le=10_000_000,
                             description="T in µs; 0 = the socket's min RTT")
    host_bw_mbps: int = Field(1000, ge=1, le=1_000_000,
                              description="W_init = host_bw·T, also the window's cap")
    hop_bw_mbps: int = Field(1000, ge=0, le=1_000_000,
                             description="B of the reporting hop; 0 = its LinkSpeed code")
    min_cwnd: int = Field(1, ge=1, le=1000,
                          description="snd_cwnd floor, segments (PowerTCP's: 1, with "
                                      "receivers that ACK at once)")
    trace_interval_us: int = _TRACE

    def rodata(self) -> dict[str, int]:
        return {"eta_fp": round(self.eta * (1 << FRAC_SHIFT)),
                "max_stage": self.max_stage,
                "w_ai_fp": round(self.w_ai * 1024) if self.w_ai else 0,
                "expected_flows": self.expected_flows,
                "base_rtt_us": self.base_rtt_us,
                "host_bw_mbps": self.host_bw_mbps,
                "hop_bw_mbps": self.hop_bw_mbps,
                "hpcc_min_cwnd": self.min_cwnd,
                "trace_interval_us": self.trace_interval_us}


class TimelyParams(CCParams):
    """TIMELY: thresholds scaled to this testbed's RTTs (docs/powertcp.md)."""

    t_low_us: int = Field(500, ge=1, le=10_000_000, description="T_low: below it, += δ")
    t_high_us: int = Field(5000, ge=1, le=10_000_000,
                           description="T_high: above it, a cut by T_high/rtt")
    delta_mbps: float = Field(1.0, gt=0, le=100000, description="additive step δ, Mb/s")
    beta: float = Field(0.8, gt=0, le=1, description="multiplicative decrease β")
    alpha: float = Field(0.875, gt=0, le=1, description="EWMA weight of the RTT difference")
    hai_after: int = Field(5, ge=1, le=1000, description="gradients ≤ 0 in a row before "
                                                        "hyperactive increase")
    hai_n: int = Field(5, ge=1, le=1000, description="HAI step, in δ")
    base_rtt_us: int = Field(0, ge=0, le=10_000_000,
                             description="min RTT normalizing the gradient; 0 = the "
                                         "socket's min RTT")
    host_bw_mbps: int = Field(1000, ge=1, le=1_000_000,
                              description="the initial and the largest rate")
    min_rate_mbps: float = Field(1.0, gt=0, le=1_000_000)
    trace_interval_us: int = _TRACE

    @model_validator(mode="after")
    def _order(self) -> "TimelyParams":
        if self.t_low_us >= self.t_high_us:
            raise ValueError("t_low_us must be below t_high_us")
        return self

    def rodata(self) -> dict[str, int]:
        return {"t_low_us": self.t_low_us, "t_high_us": self.t_high_us,
                "delta_Bps": round(self.delta_mbps * 125000),
                "beta_fp16": round(self.beta * (1 << FRAC_SHIFT)),
                "alpha_fp16": round(self.alpha * (1 << FRAC_SHIFT)),
                "hai_after": self.hai_after, "hai_n": self.hai_n,
                "base_rtt_us": self.base_rtt_us, "host_bw_mbps": self.host_bw_mbps,
                "min_rate_Bps": round(self.min_rate_mbps * 125000),
                "trace_interval_us": self.trace_interval_us}
