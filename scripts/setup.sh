#!/usr/bin/env bash
# One idempotent set-up step for testbed, as root, on Debian 12.
# Installs the Debian packages, links kernel headers for bcc when the running kernel
# ships none, makes a venv that sees the system's bcc and mininet, installs testbed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${TESTBED_VENV:-$here/.venv}

if [ "$(id -u)" != 0 ]; then echo "setup.sh: run as root (namespaces and BPF need it)" >&2; exit 2; fi

pkgs=(mininet bridge-utils iproute2 iperf3 iputils-ping traceroute tcpdump tshark
      python3-bpfcc bpfcc-tools clang llvm libbpf-dev bpftool linux-headers-amd64
      python3-venv python3-dev ethtool procps make gcc libelf-dev zlib1g-dev pkg-config)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bcc compiles against /lib/modules/$(uname -r)/build. Kernels built outside Debian
# ship no headers; Debian's generic headers work for tc/XDP programs.
mod=/lib/modules/$(uname -r)
if [ ! -e "$mod/build" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
  if [ -n "$hdr" ]; then
    mkdir -p "$mod"
    ln -sfn "$hdr" "$mod/build"
    ln -sfn "$hdr" "$mod/source"
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip >/dev/null
"$venv/bin/pip" install -q -e "$here[dev]"
echo "setup: ok ($venv)"
