"""Switch backends: how a forwarding node forwards. One interface (base.SwitchBackend).

- kernel: Linux bridge (switches) or IP forwarding (routers) in the node's namespace.
- bmv2: simple_switch_grpc running our P4 program (p4/tcp_int.p4).
"""
from __future__ import annotations

import importlib

from .base import SwitchBackend

_MODULES = {"kernel": "kernel", "bmv2": "bmv2"}


def backend_class(name: str) -> type[SwitchBackend]:
    mod = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return mod.BACKEND


def available_backends() -> dict[str, tuple[bool, str]]:
    """name → (usable here, why not). Never creates state."""
    out = {}
    for name in _MODULES:
        try:
            out[name] = backend_class(name).available()
        except (ImportError, AttributeError) as e:
            out[name] = (False, f"backend not built into this testbed ({e})")
    return out
