#!/bin/sh
# Run by the image's /sbin/testbed-init (boot.sh) from the control share: mounts what the
# testbed needs, copies the checkout from the host's read-only share, runs the host's one
# command as root, leaves its exit code in the control share and powers off.
PATH=/opt/testbed-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root LC_ALL=C.UTF-8 TERM=dumb
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# cgroup v2 where the testbed looks for it (as on the project's machines)
mount -t tmpfs cgroup /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 none /sys/fs/cgroup/unified
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs none /sys/kernel/debug 2>/dev/null
mount -t tracefs none /sys/kernel/tracing 2>/dev/null
modprobe virtio_net 2>/dev/null
mkdir -p /mnt/src /mnt/out
opts=trans=virtio,version=9p2000.L,msize=512000,cache=none
mount -t 9p -o $opts,ro src /mnt/src
mount -t 9p -o $opts out /mnt/out
hostname testbed-vm
ip link set lo up
# qemu's user-mode network (-nic user): fixed addresses, nothing on the host
if ip link set eth0 up 2>/dev/null; then
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
  echo "nameserver 10.0.2.3" > /etc/resolv.conf
fi
t_init=$(cut -d' ' -f1 /proc/uptime)
mkdir -p /root/testbed
(cd /mnt/src && tar cf - --exclude=./.venv --exclude=./.git --exclude=./results \
  --exclude=./build --exclude='*.pyc' .) | tar xf - -C /root/testbed
export PYTHONPATH=/root/testbed TESTBED_VM=1
echo "$(uname -r) init $t_init command $(cut -d' ' -f1 /proc/uptime)" > /mnt/ctl/booted
cd /root/testbed
sh /mnt/ctl/cmd
echo $? > /mnt/ctl/rc
sync
umount /mnt/out /mnt/ctl 2>/dev/null
echo 1 > /proc/sys/kernel/sysrq
echo o > /proc/sysrq-trigger
# PID 1 must not exit while the power-off runs (the kernel would panic); builtins only
while :; do :; done
