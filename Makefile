# The targets here are exactly what the README and CI run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
EXTRAS ?= sim,train,edge,ray,dev,bench
PYTEST_ARGS ?= -m "not slow and not gui and not hardware" -n 2

.PHONY: demo test test-all lint format bench bench-train bench-edge c-controller browser clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

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

c-controller: $(STAMP)
	$(PY) examples/c_controller/build.py build/ffep_controller

clean:
	rm -rf $(VENV) build dist *.egg-info out bench_results
