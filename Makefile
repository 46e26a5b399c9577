# The targets here are exactly what the README and CI run.
# The venv's interpreter: python3.11 when it runs here (pybullet 3.2.7 has wheels up to CPython
# 3.11 only), else python3; `make PYTHON=/path/to/python` chooses. Expanded only when the venv
# is created.
PYTHON ?= $(or $(shell for p in python3.11 python3; do "$$p" -c "" 2>/dev/null && { command -v "$$p"; break; }; done),python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
LOG := $(VENV)/install.log
# On failure: the log's tail, then where the whole log is.
LOG_TAIL = { tail -n 40 $(LOG); echo "make: $(1) failed; the whole log is $(LOG)"; exit 1; }
EXTRAS ?= sim,train,edge,ray,dev,bench
PYTEST_ARGS ?= -m "not slow and not gui and not hardware" -n 2

.PHONY: demo test test-all lint format bench bench-train bench-edge bench-edge-slow bench-trust c-controller browser clean

# pip's output (setuptools' editable-install warning box included) goes to $(LOG): one line
# per step here, the log's tail on failure.
# setup.py builds the compiled edge hot path (cffi, optional: pure Python without a compiler)
$(STAMP): pyproject.toml constraints.txt setup.py factoryfloor/edge_runtime/_fastpath.c
	@test -x $(PY) || { \
		ver=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
			|| { echo "make: cannot run $(PYTHON); pass PYTHON=/path/to/python3.11"; exit 1; }; \
		case $$ver in 3.[0-9] | 3.1[01]) ;; *) \
			echo "note: Python $$ver is newer than 3.11, the newest with pybullet wheels: pip"; \
			echo "  will compile pybullet from its ~80 MB source, which needs gcc, g++ and the"; \
			echo "  Python headers (Debian: python3-dev) and takes several minutes. To skip"; \
			echo "  that, install python3.11 and run make again (or pass PYTHON=python3.11)."; \
		esac; \
		echo "creating $(VENV) with $(PYTHON) (Python $$ver)"; \
		$(PYTHON) -m venv $(VENV) || exit 1; }
	@echo "upgrading pip (log: $(LOG))"
	@$(PIP) install --upgrade pip >$(LOG) 2>&1 || $(call LOG_TAIL,upgrading pip)
	@echo "installing factoryfloor[$(EXTRAS)] in editable mode (log: $(LOG))"
	@$(PIP) install -c constraints.txt -e ".[$(EXTRAS)]" >>$(LOG) 2>&1 \
		|| $(call LOG_TAIL,installing factoryfloor)
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/factoryfloor demo --out out/demo

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	FACTORYFLOOR_REQUIRE_BROWSER=1 $(PY) -m pytest $(PYTEST_ARGS)

# Debian's chromium for the live view's browser test, installed when missing
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser test"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

test-all: $(STAMP)
	$(PY) -m pytest -n 2

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy factoryfloor/robots factoryfloor/edge_runtime

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) benchmarks/sim_throughput.py --out bench_results/sim_throughput.json

bench-train: $(STAMP)
	$(PY) benchmarks/train_reach_check.py --out bench_results/train_reach_check.json

bench-edge: $(STAMP)
	$(PY) benchmarks/edge_latency.py --rt-priority 80 --pin --out bench_results/edge_latency.json

# the same on a slower machine: three busy neighbour pairs beside it (benchmarks/edge_slowdown.py)
bench-edge-slow: $(STAMP)
	$(PY) benchmarks/edge_latency.py --rt-priority 80 --pin --hog 3 \
		--out bench_results/edge_latency_slow.json

# signed bundles: export/load/serve signed vs unsigned, and 1,200 corrupted bundles loaded
bench-trust: $(STAMP)
	$(PY) benchmarks/bundle_trust.py --out bench_results/bundle_trust.json

c-controller: $(STAMP)
	$(PY) examples/c_controller/build.py build/ffep_controller

clean:
	rm -rf $(VENV) build dist *.egg-info out bench_results
