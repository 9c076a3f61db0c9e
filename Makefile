# The two commands: `make run` (set-up included) and `make test`. Run as root.
PY := .venv/bin/python
EXP ?= experiments/powertcp_incast.yaml

.PHONY: setup run test test-fast regress bench clean doctor

setup:
	@scripts/setup.sh

run: setup
	$(PY) -m testbed run $(EXP)

test: setup
	$(PY) -m pytest -q -rs

test-fast: setup
	$(PY) -m pytest -q -rs -m "not slow"

regress: setup
	$(PY) -m testbed run experiments/powertcp_incast.yaml
	$(PY) -m testbed run experiments/powertcp_fairness.yaml

bench: setup
	$(PY) bench/bringup.py
	-$(PY) bench/int_overhead.py
	-$(PY) bench/noobprobe.py
	-$(PY) bench/noobflow.py

doctor: setup
	$(PY) -m testbed doctor

clean:
	$(PY) -m testbed clean
