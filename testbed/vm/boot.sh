#!/bin/sh
# /sbin/testbed-init in the image: PID 1 of `python -m testbed vm run`. It mounts the
# host's control share and hands over to the init.sh found there, so changing init.sh
# needs no new image.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
# the initramfs has usually moved these into the root already
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sys /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
modprobe -a 9pnet_virtio 9p
mkdir -p /mnt/ctl
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none ctl /mnt/ctl
exec /bin/sh /mnt/ctl/init.sh
echo "testbed-init: no control share" >&2
echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger
