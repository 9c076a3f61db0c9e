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

from .cc import CCParams

FRAC_SHIFT = 16  # bpf/dccs.h DCCS_FRAC_SHIFT
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
                "cc_trace_interval_us": self.trace_interval_us}
