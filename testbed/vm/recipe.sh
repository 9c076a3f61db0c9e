#!/bin/sh
# The image's set-up, run inside its chroot by `python -m testbed vm build`.
# Arguments: MIRROR SUITE SECURITY_MIRROR (the host's own apt sources, read at build time).
# Everything the guest needs comes from Debian's packages; the project's Python
# dependencies from wheels the host downloaded, into /opt/testbed-venv (it sees Debian's
# bcc and mininet).
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
mirror=$1 suite=$2 security=$3
{
  echo "deb $mirror $suite main"
  echo "deb $mirror $suite-updates main"
  echo "deb $mirror $suite-backports main"
  [ -z "$security" ] || echo "deb $security $suite-security main"
} > /etc/apt/sources.list
# no daemons start inside the chroot
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
# dpkg without fsync (a crash only loses this build) and without documentation, manual
# pages and translations (nothing in the guest reads them): less to write, a smaller disk
echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/testbed-unsafe-io
printf '%s\n' 'path-exclude=/usr/share/doc/*' 'path-exclude=/usr/share/man/*' \
  'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/locale/*' \
  'path-include=/usr/share/locale/locale.alias' > /etc/dpkg/dpkg.cfg.d/testbed-nodoc
# one initramfs per kernel, made once at the end: each kernel install and each package
# with an initramfs hook would otherwise regenerate them (three generations)
dpkg-divert --local --rename --divert /usr/sbin/update-initramfs.real \
  --add /usr/sbin/update-initramfs >/dev/null
ln -sf /bin/true /usr/sbin/update-initramfs
echo 'Acquire::Languages "none";' > /etc/apt/apt.conf.d/99testbed-nolang
apt-get update -qq
inst() { apt-get install -y -q --no-install-recommends "$@"; }

# Two kernels, each with its headers (bcc compiles against them): the suite's ("stable")
# and the backports one; the first is kept when the metapackage moves to the second.
# With them, in the same transaction, the project's set-up (scripts/setup.sh's Debian
# packages less the build tools: the guest builds nothing but BPF) and what a booted VM
# needs: the qemu guest agent, from which alone vagrant-libvirt learns the address of a VM
# without a libvirt network (ours: user-mode NICs only; it starts when its virtio port
# appears).
inst linux-image-amd64 linux-headers-amd64 initramfs-tools zstd \
  systemd-sysv udev kmod iproute2 iputils-ping iperf3 ethtool procps traceroute \
  tcpdump bridge-utils mininet python3 python3-venv python3-bpfcc bpfcc-tools \
  clang bpftool libc6-dev python3-yaml python3-pyelftools \
  ca-certificates openssh-server sudo rsync iptables qemu-guest-agent
stable=$(ls /lib/modules | sort -V | tail -n1)
apt-mark manual "linux-image-$stable" "linux-headers-$stable" >/dev/null
# The project's Python dependencies (wheels fetched by the host's own pip: its index,
# proxy and certificates; no network set-up needed in here) install while apt brings the
# backports kernel: the venv only needs python3.
python3 -m venv --system-site-packages /opt/testbed-venv
/opt/testbed-venv/bin/pip install -q --no-cache-dir --no-index \
  --find-links /tmp/testbed-wheels -r /tmp/testbed-deps > /tmp/testbed-pip.log 2>&1 &
pip=$!
# The backports kernel's build tools moved libbpf1/libelf1 to backports: libbpf-dev (the
# BPF headers) must come from there too.
inst -t "$suite-backports" linux-image-amd64 linux-headers-amd64 \
  "libbpf-dev/$suite-backports" "libelf-dev/$suite-backports"
backports=$(ls /lib/modules | sort -V | tail -n1)
[ "$backports" != "$stable" ] || { echo "recipe: no backports kernel in $suite-backports" >&2; exit 1; }
echo "stable=$stable" > /boot/testbed-kernels
echo "backports=$backports" >> /boot/testbed-kernels
wait $pip || { cat /tmp/testbed-pip.log >&2; exit 1; }

# The initramfs only has to find the root disk (virtio, ext4): the listed modules, not
# "most" (smaller, made faster, unpacked faster at each boot under TCG)
rm /usr/sbin/update-initramfs
dpkg-divert --local --rename --remove /usr/sbin/update-initramfs >/dev/null
sed -i 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf
printf '%s\n' virtio_pci virtio_blk virtio_net virtio_rng ext4 crc32c_generic >> /etc/initramfs-tools/modules
update-initramfs -c -k "$stable" &
init1=$!
update-initramfs -c -k "$backports"
wait $init1

# a booted (Vagrant) VM: DHCP on its NIC, a vagrant user with its own key
mkdir -p /etc/systemd/network
printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' > /etc/systemd/network/80-dhcp.network
systemctl enable systemd-networkd ssh >/dev/null 2>&1
echo testbed-vm > /etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 testbed-vm\n' > /etc/hosts
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > /etc/fstab
id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/vagrant
install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 600 -o vagrant -g vagrant /tmp/testbed-vagrant.pub /home/vagrant/.ssh/authorized_keys
passwd -l root >/dev/null
rm -f /usr/sbin/policy-rc.d
# no `apt-get clean`: the archives are the host's package cache (bind-mounted), kept for
# the next build
rm -rf /var/lib/apt/lists/* /tmp/testbed-pip.log /tmp/testbed-deps /tmp/testbed-vagrant.pub /tmp/testbed-wheels
