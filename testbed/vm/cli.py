"""`python -m testbed vm build|run|box|status`: the stock-kernel VM from the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from . import image as vmimage

EPILOG = """examples:
  python -m testbed vm build                       # once; cached until the recipe changes
  python -m testbed vm run -- tc qdisc add dev lo root netem delay 10ms
  python -m testbed vm run --kernel backports -- python -m pytest -q tests/test_cc.py
  python -m testbed vm run --out /tmp/o -- python -m testbed run experiments/x.yaml --out /mnt/out
  python -m testbed run experiments/noob_n1_wan.yaml --vm
  python -m testbed vm box                          # a Vagrant box (libvirt) of the image
"""


def add_vm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default="stable", metavar="|".join(vmimage.KERNELS),
                   help="stable: Debian 12's 6.1; backports: bookworm-backports' 6.12")
    p.add_argument("--memory", type=int, default=2560, metavar="MB")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--accel", default="auto", help="auto (KVM where it works), kvm, tcg")
    p.add_argument("--timeout", type=float, default=None, metavar="S")
    p.add_argument("--icount", type=int, default=None, metavar="SHIFT",
                   help="TCG: guest time = executed instructions x 2^SHIFT ns, not the "
                        "host's clock (timing unaffected by host load; runs slower)")


def options(a, out: Path | None = None):
    from .qemu import VmOptions
    return VmOptions(kernel=a.kernel, memory_mb=a.memory, cpus=a.cpus, out=out,
                     timeout=a.timeout, accel=a.accel, icount=a.icount)


def _build(a) -> int:
    vmimage.check_kernel(a.kernel)
    img = vmimage.build(force=a.force, log=lambda s: print(s, file=sys.stderr, flush=True))
    for k in vmimage.KERNELS:
        print(f"{k:9} {img.release(k)}")
    print(f"image: {img.disk}")
    return 0


def _run(a) -> int:
    from . import qemu
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        raise ConfigError("no command: vm run [options] -- COMMAND …", key="vm run")
    return qemu.run(cmd, options(a, Path(a.out) if a.out else None))


def _box(a) -> int:
    from . import box
    path = box.make(Path(a.out) if a.out else None, a.kernel,
                    log=lambda s: print(s, file=sys.stderr, flush=True))
    print(path)
    return 0


def _status(a) -> int:
    img = vmimage.current()
    print(f"recipe {vmimage.recipe_hash()}: "
          f"{'built' if img.complete() else 'not built'} ({img.dir})")
    if img.complete():
        for k in vmimage.KERNELS:
            print(f"  {k:9} {img.release(k)}")
    return 0


def add_parser(sub) -> None:
    vm = sub.add_parser("vm", help="a stock-kernel qemu VM (netem, AQMs, dctcp, 6.1/6.12)",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    vsub = vm.add_subparsers(dest="vm_command", required=True, metavar="VM_COMMAND")
    p = vsub.add_parser("build", help="build the image (cached; rebuilt when the recipe changes)")
    p.add_argument("--kernel", default="stable", metavar="|".join(vmimage.KERNELS),
                   help="the image carries both kernels; this checks the choice")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(fn=_build)
    p = vsub.add_parser("run", help="boot the image and run one command as root in it")
    add_vm_options(p)
    p.add_argument("--out", help="host folder shared read-write as /mnt/out")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=_run)
    p = vsub.add_parser("box", help="package the image as a Vagrant box (libvirt provider)")
    p.add_argument("--kernel", default="stable", metavar="|".join(vmimage.KERNELS))
    p.add_argument("--out", help="box file (default: next to the image)")
    p.set_defaults(fn=_box)
    p = vsub.add_parser("status", help="the image for this recipe: built or not, kernels")
    p.set_defaults(fn=_status)
