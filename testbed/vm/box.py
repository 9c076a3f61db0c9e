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
from .qemu import CPU

BOX_VAGRANTFILE = """\
# Settings of the testbed stock-kernel box (python -m testbed vm box); a project's
# Vagrantfile may override any of them.
#
# Network: qemu's user-mode network only (no libvirt network, bridge or tap on the host).
# vagrant-libvirt finds a VM's address through a libvirt network's DHCP leases or the
# qemu guest agent; without a management network only the agent is left (the image runs
# it). The VM has two user-mode NICs: eth0, the one libvirt knows (the agent reports its
# address, 10.0.2.15), and eth1 (10.0.3.0/24), added on qemu's command line for what
# libvirt 9's user NIC lacks: the forward of 127.0.0.1:TESTBED_SSH_PORT (default 2222)
# to the guest's sshd, which vagrant reaches through config.ssh.host/port.
SSH_PORT = Integer(ENV.fetch("TESTBED_SSH_PORT", "2222"))
Vagrant.configure("2") do |config|
  config.ssh.private_key_path = File.expand_path("vagrant_key", __dir__)
  config.ssh.username = "vagrant"
  config.ssh.insert_key = false
  config.ssh.host = "127.0.0.1"
  config.ssh.port = SSH_PORT
  # systemd's boot under software emulation (no KVM): minutes, not seconds
  config.vm.boot_timeout = 1800
  # libvirt's <interface type='user'> (vagrant-libvirt renders a public_network of type
  # "user" as one); DHCP in the guest already runs on it
  config.vm.network :public_network, type: "user", auto_config: false
  config.vm.provider "libvirt" do |lv|
    lv.driver = "qemu"
    lv.cpu_mode = "custom"
    lv.cpu_model = "qemu64"
    # the x86-64-v2 features `vm run` gives its qemu64 (the venv's numpy/pyarrow wheels
    # die with SIGILL on bare qemu64)
@CPU_FEATURES@
    lv.kernel = File.expand_path("vmlinuz", __dir__)
    lv.initrd = File.expand_path("initrd", __dir__)
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
    lv.disk_bus = "virtio"
    lv.mgmt_attach = false
    lv.qemu_use_agent = true
    lv.qemu_use_session = false
    lv.graphics_type = "none"
    lv.qemuargs value: "-netdev"
    lv.qemuargs value: "user,id=testbed-ssh,net=10.0.3.0/24,hostfwd=tcp:127.0.0.1:#{SSH_PORT}-:22"
    lv.qemuargs value: "-device"
    lv.qemuargs value: "virtio-net-pci,netdev=testbed-ssh,bus=pci.0,addr=0x1e"
  end
end
"""


def box_vagrantfile() -> str:
    model, *features = CPU.split(",")
    assert model == "qemu64" and all(f.startswith("+") for f in features), CPU
    lines = [f'    lv.cpu_feature name: "{f[1:].replace("-", "_")}", policy: "require"'
             for f in features]
    return BOX_VAGRANTFILE.replace("@CPU_FEATURES@", "\n".join(lines))


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
        subprocess.run(["nice", "-n", "19", "qemu-img", "convert", "-f", "raw", "-c", "-O", "qcow2",
                        str(img.disk), str(d / "box.img")], check=True)
        vk, vi = img.kernel(kernel)
        shutil.copy(vk, d / "vmlinuz")
        shutil.copy(vi, d / "initrd")
        shutil.copy(img.ssh_key, d / "vagrant_key")
        (d / "vagrant_key").chmod(0o600)
        # vagrant's net-ssh (7.0 in Debian 12) cannot read an RSA key in OpenSSH's own
        # format under OpenSSL 3 ("rsa#set_key= is incompatible with OpenSSL 3.0": every
        # login is an "Authentication failure"); the same key in PEM it reads
        subprocess.run(["ssh-keygen", "-q", "-p", "-m", "PEM", "-N", "", "-P", "", "-f",
                        str(d / "vagrant_key")], check=True, capture_output=True)
        size = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(img.disk)],
                                         capture_output=True, text=True, check=True).stdout)
        gb = -(-size["virtual-size"] // 2**30)
        (d / "metadata.json").write_text(json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": gb}))
        (d / "Vagrantfile").write_text(box_vagrantfile())
        tmp = out.with_suffix(".partial")
        with tarfile.open(tmp, "w") as tar:  # box.img is compressed already
            for f in ("metadata.json", "Vagrantfile", "box.img", "vmlinuz", "initrd",
                      "vagrant_key"):
                tar.add(d / f, arcname=f)
        tmp.rename(out)
    log(f"vm box: {out} (kernel {img.release(kernel)}); "
        f"vagrant box add --name testbed-stock {out}")
    return out
