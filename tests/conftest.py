"""Shared test fixtures. Tests run as root on a real kernel: namespaces, qdiscs, BPF."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# tests/guest run inside the stock-kernel VM only (tests/test_stock_kernel.py boots it)
collect_ignore = [] if os.environ.get("TESTBED_VM") == "1" else ["guest"]


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (network namespaces, qdiscs, BPF)")
        for item in items:
            if "needs_root" in item.keywords:
                item.add_marker(skip)


def run_cli(*args: str, timeout: float = 120, cwd: Path = REPO, **kw) -> subprocess.CompletedProcess:
    """`python -m testbed ARGS`, as a user would run it."""
    return subprocess.run([PY, "-m", "testbed", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, **kw)


@pytest.fixture
def cli():
    """cli(*args) runs `python -m testbed ARGS` as a user would."""
    return run_cli


@pytest.fixture
def write(tmp_path):
    """write(name, text) → path of a file in a fresh directory."""
    def _w(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p
    return _w
