# The two commands: `make run` (set-up included) and `make test`. Run as root.
PY := .venv/bin/python
EXP ?= experiments/powertcp_incast.yaml

.PHONY: setup run test test-vm test-vagrant test-fast regress bench clean doctor

setup:
	@scripts/setup.sh

run: setup
	$(PY) -m testbed run $(EXP)

# With the stock-kernel tier (-m stock_kernel): a qemu VM (software emulation here) built
# on first use and cached until its recipe changes (~2 min cold on a quiet machine), five
# boots (~11 min); `make test-vm` runs the tier alone.
test: setup
	$(PY) -m pytest -q -rs

test-vm: setup
	$(PY) -m pytest -q -rs -m stock_kernel

# vagrant up + destroy of the stock-kernel box (libvirt; libvirtd must run): 15-40 min
test-vagrant: setup
	$(PY) -m pytest -q -rs -s -m vagrant tests/test_vagrant.py

test-fast: setup
	$(PY) -m pytest -q -rs -m "not slow and not stock_kernel"

# 3 repetitions: claims judge the median run (one run disturbed by the shared 2-core
# machine does not decide a regression; the worst is reported beside it). The BMv2
# incast runs where BMv2 is installed, else says why it is skipped.
regress: setup
	$(PY) -m testbed run experiments/powertcp_incast.yaml --set repetitions=3
	$(PY) -m testbed run experiments/powertcp_fairness.yaml
	@if $(PY) -c "import sys; from testbed.network.backends.bmv2 import bmv2_available as a; \
	    ok, why = a(); ok or print('regress: powertcp_incast_bmv2 skipped:', why); \
	    sys.exit(0 if ok else 1)"; then \
	  $(PY) -m testbed run experiments/powertcp_incast_bmv2.yaml --set repetitions=3; fi

bench: setup
	$(PY) bench/bringup.py
	-$(PY) bench/int_overhead.py
	-$(PY) bench/noobprobe.py
	-$(PY) bench/noobflow.py
	-$(PY) bench/release_spread.py

doctor: setup
	$(PY) -m testbed doctor

clean:
	$(PY) -m testbed clean
