# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 are what this project is tested with; override on
# platforms where another build is wanted, e.g. make demo TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup demo test ui check-defs benchmark clean-lake

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

demo: setup $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m cardio_assets.run

test: setup
	$(PY) -m pytest -q

ui: setup $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

check-defs: setup
	$(VENV)/bin/dg check defs

benchmark: setup
	$(PY) benchmarks/preprocess.py --out bench_out/preprocess --patients 200 --workers 2

clean-lake:
	rm -rf data_lake/* $(DAGSTER_HOME)
