"""`python -m testbed vm box`: the image as a Vagrant box for the libvirt provider.

The box holds the disk (qcow2), the chosen kernel and initrd (booted directly: the image
has no boot loader), a key pair made at build time for the `vagrant` user, and a
Vagrantfile with the settings that boot it: kernel/initrd/cmd_line, driver qemu (no KVM
needed), no management network (qemu's user-mode NIC and an ssh port forward instead).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import MissingFeature
from . import image as vmimage

BOX_VAGRANTFILE = """\
# Settings of the testbed stock-kernel box (python -m testbed vm box); a project's
# Vagrantfile may override any of them.
Vagrant.configure("2") do |config|
  config.ssh.private_key_path = File.expand_path("vagrant_key", __dir__)
  config.ssh.username = "vagrant"
  config.ssh.insert_key = false
  config.vm.provider "libvirt" do |lv|
    lv.driver = "qemu"
    lv.cpu_mode = "custom"
    lv.cpu_model = "qemu64"
    lv.kernel = File.expand_path("vmlinuz", __dir__)
    lv.initrd = File.expand_path("initrd", __dir__)
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
    lv.disk_bus = "virtio"
    lv.mgmt_attach = false
    lv.qemu_use_session = false
  end
end
"""


def make(out: Path | None, kernel: str = "stable", log=print) -> Path:
    vmimage.check_kernel(kernel)
    if not shutil.which("qemu-img"):
        raise MissingFeature("qemu-img not found", "apt-get install qemu-utils")
    img = vmimage.current()
    if not img.complete():
        img = vmimage.build(log=log)
    out = out or img.dir / f"testbed-{kernel}.box"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="testbed-box-", dir=out.parent) as t:
        d = Path(t)
        log("vm box: compressing the disk")
        subprocess.run(["nice", "-n", "19", "qemu-img", "convert", "-c", "-O", "qcow2",
                        str(img.disk), str(d / "box.img")], check=True)
        vk, vi = img.kernel(kernel)
        shutil.copy(vk, d / "vmlinuz")
        shutil.copy(vi, d / "initrd")
        shutil.copy(img.ssh_key, d / "vagrant_key")
        size = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(img.disk)],
                                         capture_output=True, text=True, check=True).stdout)
        gb = -(-size["virtual-size"] // 2**30)
        (d / "metadata.json").write_text(json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": gb}))
        (d / "Vagrantfile").write_text(BOX_VAGRANTFILE)
        tmp = out.with_suffix(".partial")
        with tarfile.open(tmp, "w") as tar:  # box.img is compressed already
            for f in ("metadata.json", "Vagrantfile", "box.img", "vmlinuz", "initrd",
                      "vagrant_key"):
                tar.add(d / f, arcname=f)
        tmp.rename(out)
    log(f"vm box: {out} (kernel {img.release(kernel)}); "
        f"vagrant box add --name testbed-stock {out}")
    return out
