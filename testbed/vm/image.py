"""The stock-kernel VM image: built from Debian's packages with `debootstrap`, cached under
the user's cache directory and rebuilt only when its recipe changes.

The image holds two kernels (KERNELS): the suite's own and bookworm-backports'; `vm run
--kernel` picks which one qemu boots directly (-kernel/-initrd), so one build serves both.
Mirrors are the host's own apt sources, read at build time.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, MissingFeature, RunError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SUITE = "bookworm"
KERNELS = ("stable", "backports")
# ext4 in a sparse raw file (~2 GB used, room for a run's files): qemu opens it with
# snapshot=on, so no qcow2 conversion is needed (`vm box` compresses one for Vagrant)
IMAGE_SIZE = "6G"
NEED_FREE_GB = 6             # rootfs + image while building
HOST_TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs",
              "qemu-img": "qemu-utils", "unshare": "util-linux", "ssh-keygen": "openssh-client"}
# Python packages the guest's venv gets from PyPI besides Debian's (bmv2 extras: no
# BMv2 in the VM)
EXTRA_PY = ("pytest>=7",)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "testbed" / "vm"


@dataclass(frozen=True)
class Image:
    """A built image: disk, and per kernel choice its kernel and initrd."""
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "disk.raw"

    def kernel(self, choice: str) -> tuple[Path, Path]:
        return self.dir / f"vmlinuz-{choice}", self.dir / f"initrd-{choice}"

    def release(self, choice: str) -> str:
        return (self.dir / f"release-{choice}").read_text().strip()

    @property
    def ssh_key(self) -> Path:
        return self.dir / "vagrant_key"

    def complete(self) -> bool:
        return (self.dir / "done").exists()


def python_deps() -> list[str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(meta["project"]["dependencies"]) + list(EXTRA_PY)


def recipe_hash() -> str:
    """Changes whenever what goes into the image does (recipe, boot stub, Python deps)."""
    h = hashlib.sha256()
    for f in ("recipe.sh", "boot.sh"):
        h.update((HERE / f).read_bytes())
    h.update("\n".join(python_deps()).encode())
    h.update(SUITE.encode())
    h.update(Image(Path()).disk.name.encode())   # the disk's format
    return h.hexdigest()[:16]


def current() -> Image:
    return Image(cache_dir() / recipe_hash())


def check_kernel(choice: str) -> None:
    if choice not in KERNELS:
        raise ConfigError(f"unknown kernel {choice!r}: choose one of {', '.join(KERNELS)}",
                          key="--kernel")


def host_mirrors() -> tuple[str, str]:
    """(main mirror, security mirror) from this host's apt sources (deb822 or one-line)."""
    texts = []
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if f.suffix in (".list", ".sources") or f.name == "sources.list":
            try:
                texts.append(f.read_text())
            except OSError:
                pass
    main = security = ""
    for text in texts:
        # deb822 stanzas, then one-line entries
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites:
                for s in suites.group(1).split():
                    if s == SUITE and not main:
                        main = uris.group(1)
                    if s == f"{SUITE}-security" and not security:
                        security = uris.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if m.group(2) == SUITE and not main:
                main = m.group(1)
            if m.group(2) == f"{SUITE}-security" and not security:
                security = m.group(1)
    if not main:
        raise MissingFeature(f"no Debian {SUITE} mirror in this host's apt sources "
                             "(/etc/apt/sources.list*)",
                             f"add a `deb <mirror> {SUITE} main` line")
    return main, security


def preflight_build() -> None:
    """Everything a build needs, checked before anything is made (exit 2 otherwise)."""
    if os.geteuid() != 0:
        raise MissingFeature("vm build needs root (debootstrap, chroot)", "run it as root")
    missing = [f"{t} (Debian: {p})" for t, p in HOST_TOOLS.items() if not shutil.which(t)]
    if missing:
        raise MissingFeature("vm build needs " + ", ".join(missing),
                             "scripts/setup.sh installs them (or apt-get install them)")
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(d).free / 1e9
    if free < NEED_FREE_GB:
        raise MissingFeature(f"{free:.1f} GB free under {d}; a build needs {NEED_FREE_GB} GB",
                             "free space there or set XDG_CACHE_HOME to a larger disk")
    host_mirrors()


def wheels_dir() -> Path:
    return cache_dir() / "wheels"


def _wheels_cmd(req: Path) -> list[str]:
    """The guest's Python wheels, downloaded by the host's pip so its index, proxy and
    certificates apply (the guest's Python is Debian 12's 3.11 on x86_64)."""
    plat = [a for p in ("manylinux2014_x86_64", "manylinux_2_17_x86_64",
                        "manylinux_2_28_x86_64", "any") for a in ("--platform", p)]
    return [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
            "--python-version", "3.11", *plat, "-d", str(wheels_dir()), "-r", str(req)]


def _nice(cmd: list[str]) -> list[str]:
    # the machine is shared: builds run at the lowest priority
    return ["nice", "-n", "19", *cmd]


def build(force: bool = False, log=print) -> Image:
    """The image for the current recipe; built (3–5 min) unless cached."""
    img = current()
    if img.complete() and not force:
        return img
    preflight_build()
    mirror, security = host_mirrors()
    for old in cache_dir().glob("*.build-*"):   # builds whose process is gone
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    tmp = img.dir.with_name(img.dir.name + f".build-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    root = tmp / "root"
    debs = cache_dir() / "debs"        # downloaded packages, kept between builds
    debs.mkdir(exist_ok=True)
    t0 = time.monotonic()
    logf = tmp / "build.log"
    try:
        with open(logf, "w") as out:
            def step(what: str, cmd: list[str]) -> None:
                log(f"vm build: {what} ({time.monotonic() - t0:.0f} s)")
                out.write(f"$ {' '.join(cmd)}\n")
                out.flush()
                env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} \
                    if cmd[0] == "unshare" else None
                r = subprocess.run(_nice(cmd), stdout=out, stderr=subprocess.STDOUT, env=env)
                if r.returncode:
                    raise RunError(f"vm build: {what} failed (exit {r.returncode}); "
                                   f"log: {logf}")

            # the wheels download while debootstrap runs (both mostly wait on the network)
            (tmp / "deps.txt").write_text("\n".join(python_deps()) + "\n")
            wheels_log = tmp / "wheels.log"
            with open(wheels_log, "w") as wl:
                wheels = subprocess.Popen(_nice(_wheels_cmd(tmp / "deps.txt")), stdout=wl,
                                          stderr=subprocess.STDOUT)
            try:
                step(f"debootstrap {SUITE} from {mirror}",
                     ["debootstrap", "--variant=minbase", f"--cache-dir={debs}",
                      "--include=ca-certificates", SUITE, str(root), mirror])
            finally:
                if wheels.poll() is None and sys.exc_info()[0] is not None:
                    wheels.kill()
                rc = wheels.wait()
            out.write(wheels_log.read_text())
            if rc:
                raise RunError(f"vm build: Python wheels (the host's pip) failed (exit {rc}); "
                               f"log: {logf}")
            shutil.copy(tmp / "deps.txt", root / "tmp/testbed-deps")
            shutil.copytree(wheels_dir(), root / "tmp/testbed-wheels")
            subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "",
                            "-C", "testbed-vm", "-f", str(tmp / "vagrant_key")], check=True)
            shutil.copy(tmp / "vagrant_key.pub", root / "tmp/testbed-vagrant.pub")
            shutil.copy(HERE / "recipe.sh", root / "tmp/testbed-recipe.sh")
            shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
            # the chroot's mounts live in a private mount namespace: they vanish with it,
            # whatever way the build ends
            inner = (f"mount -t proc proc {root}/proc && mount -t sysfs sys {root}/sys && "
                     f"mount --rbind /dev {root}/dev && "
                     f"mount --bind {debs} {root}/var/cache/apt/archives && "
                     f"chroot {root} /bin/sh /tmp/testbed-recipe.sh "
                     f"'{mirror}' {SUITE} '{security}'")
            step("packages (kernels, bcc, mininet, clang, Python deps)",
                 ["unshare", "--mount", "--propagation", "private", "--fork",
                  "sh", "-c", inner])
            (root / "tmp/testbed-recipe.sh").unlink()
            shutil.copy(HERE / "boot.sh", root / "sbin/testbed-init")
            os.chmod(root / "sbin/testbed-init", 0o755)
            kernels = dict(line.split("=", 1) for line in
                           (root / "boot/testbed-kernels").read_text().split())
            for choice in KERNELS:
                rel = kernels[choice]
                shutil.copy(root / f"boot/vmlinuz-{rel}", tmp / f"vmlinuz-{choice}")
                shutil.copy(root / f"boot/initrd.img-{rel}", tmp / f"initrd-{choice}")
                (tmp / f"release-{choice}").write_text(rel + "\n")
            raw = tmp / "disk.raw"
            step("ext4 image", ["mkfs.ext4", "-q", "-F", "-L", "testbed", "-d", str(root),
                                str(raw), IMAGE_SIZE])
            shutil.rmtree(root)
        (tmp / "done").write_text(f"{time.monotonic() - t0:.0f} s\n")
        if img.dir.exists():
            shutil.rmtree(img.dir)
        tmp.rename(img.dir)
    except BaseException:
        # a failed or interrupted build leaves its log, never a half image
        shutil.rmtree(root, ignore_errors=True)
        for f in tmp.glob("disk.*"):
            f.unlink()
        raise
    # older recipes' images are dropped: one image per user
    for old in cache_dir().iterdir():
        if old.is_dir() and old.name not in (img.dir.name, "debs", "wheels") and \
                ".build-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    log(f"vm build: done in {time.monotonic() - t0:.0f} s → {img.dir}")
    return img
