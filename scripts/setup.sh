#!/usr/bin/env bash
# One idempotent set-up step for testbed, as root, on Debian 12.
# Installs the Debian packages, links kernel headers for bcc when the running kernel
# ships none, makes a venv that sees the system's bcc and mininet, installs testbed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${TESTBED_VENV:-$here/.venv}

if [ "$(id -u)" != 0 ]; then echo "setup.sh: run as root (namespaces and BPF need it)" >&2; exit 2; fi

pkgs=(mininet bridge-utils iproute2 iperf3 iputils-ping traceroute tcpdump tshark
      python3-bpfcc bpfcc-tools clang llvm libbpf-dev
      python3-venv python3-dev ethtool procps make gcc libelf-dev zlib1g-dev pkg-config)
. /etc/os-release
case "${ID:-debian}" in
  # Ubuntu (the Vagrant VM): its kernel has headers; bpftool comes with linux-tools
  ubuntu) pkgs+=("linux-headers-$(uname -r)" linux-tools-common "linux-tools-$(uname -r)") ;;
  # chromium renders report.html in the tests (Ubuntu ships it only as a snap: skipped there);
  # qemu + debootstrap: the stock-kernel VM (python -m testbed vm; the -m stock_kernel tier)
  *) pkgs+=(bpftool linux-headers-amd64 chromium qemu-system-x86 qemu-utils debootstrap
            e2fsprogs openssh-client) ;;
esac
# Slurm (the `--executor slurm` client; the test suite starts its own one-node cluster
# from these daemons, by hand): installed without starting the distribution's services.
slurm_pkgs=(slurm-client slurmctld slurmd munge)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
slurm_missing=()
for p in "${slurm_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || slurm_missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ] || [ ${#slurm_missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ${#slurm_missing[@]} -gt 0 ]; then
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then  # no daemon started by the install (the tests start theirs)
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${slurm_missing[@]}" >/dev/null
  if [ -n "$(trap -p EXIT)" ]; then rm -f "$policy"; trap - EXIT; fi
fi

# bcc compiles against /lib/modules/$(uname -r)/{build,source}. Kernels built outside
# Debian ship no headers; Debian's generic headers work for tc/XDP programs: `build` is
# the arch tree (generated headers), `source` the -common tree (include/linux/kconfig.h).
# Links we made earlier (into /usr/src/linux-headers-*) are refreshed; others are kept.
mod=/lib/modules/$(uname -r)
ours() { [ ! -e "$1" ] || { [ -L "$1" ] && readlink "$1" | grep -q '^/usr/src/linux-headers-'; }; }
if ours "$mod/build" && ours "$mod/source"; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
  if [ -n "$hdr" ] && [ -d "${hdr%-amd64}-common" ]; then
    mkdir -p "$mod"
    ln -sfn "$hdr" "$mod/build"
    ln -sfn "${hdr%-amd64}-common" "$mod/source"
  fi
fi

# Pinned BPF objects (TCP-INT's programs and maps) live in bpffs.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi

if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
# pip only when the dependencies changed (make run / make test call this every time)
stamp="$venv/.testbed-deps"
want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log="$venv/pip-install.log"
  if ! { "$venv/bin/pip" install --upgrade pip && "$venv/bin/pip" install -e "$here[dev]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "setup: pip install failed (full log: $log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "setup: ok ($venv)"
