"""`python -m testbed run EXP.yaml --vm`: the experiment runs in the stock-kernel VM, its
results bundle lands on the host (the bundle's folder is the guest's /mnt/out).

The experiment is validated here first, leaving out what depends on the kernel (netem,
AQMs, dctcp: the guest checks those), so bad input fails before any VM starts.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .. import results
from ..errors import ConfigError
from . import image as vmimage
from .qemu import VmOptions, preflight, run


def run_experiment(file: str, sets: list[str], out: str | None, resume: bool, quiet: bool,
                   opts: VmOptions) -> int:
    from ..preflight import load_experiment

    preflight(opts)
    plan = load_experiment(file, sets, check_kernel=False)
    spec = plan.experiment.vm
    if (opts.icount is None and opts.accel != "kvm" and not isinstance(spec, bool)
            and spec.icount is not None):
        opts.icount = spec.icount   # --icount on the command line wins
    path = Path(file).resolve()
    try:
        rel = path.relative_to(vmimage.REPO)
    except ValueError:
        raise ConfigError("--vm runs experiments of this checkout (the guest sees only "
                          f"{vmimage.REPO}): copy the file under experiments/", file) from None
    run_dir = results.latest_run_dir(plan.experiment.name) if resume and out is None else None
    run_dir = run_dir or results.new_run_dir(plan.experiment.name, Path(out) if out else None)
    argv = ["python", "-m", "testbed", "run", str(rel), "--out", "/mnt/out"]
    for s in sets:
        argv += ["--set", s]
    argv += ["--resume"] * resume + ["-q"] * quiet
    opts.out = run_dir
    rc = run(argv, opts)
    print(f"results: {run_dir}")
    return rc
