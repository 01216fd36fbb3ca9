# The two commands of the README: `make demo` and `make test`. Both set up .venv first:
# `make demo` with what the pipeline needs, `make test` adds the test tools (the `dev` extra).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.14.1 / torchvision 0.29.1 are what this project is tested with; override on
# platforms where another build is wanted, e.g. make demo TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# extras installed with the pipeline, e.g. make demo EXTRAS=s3 for a data lake on S3 (pyproject.toml)
EXTRAS ?=
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup setup-dev demo ablation test ui check-defs benchmark clean-lake chromium postgresql

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	touch $@

# the test tools (pytest, playwright, moto, dagster-k8s, dagster-postgres): the demo needs none of them
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The instance's settings live in config/: a dagster.yaml in the project folder would be taken
# for an instance that is not used (Dagster warns at start-up).
$(DAGSTER_HOME)/dagster.yaml: config/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp config/dagster.yaml $@

# the browser the web UI tests drive (Debian's package; root installs it, others are told how)
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) || \
	  echo "make test: could not install chromium (run 'apt-get install chromium' as root); the web UI tests will fail"

# the PostgreSQL server the end-to-end test keeps its Dagster runs in (Debian's package, as chromium)
postgresql:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get install -y -q postgresql >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null)) || \
	  echo "make test: could not install postgresql (run 'apt-get install postgresql' as root); the end-to-end tests will fail"

demo: setup $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m cardio_assets.run

# the conditioning ablation (label only vs label + attributes), on the lake `make demo` made
ablation: setup $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m cardio_assets.run --ablation

test: setup-dev chromium postgresql
	$(PY) -m pytest -q

ui: setup $(DAGSTER_HOME)/dagster.yaml
	@echo "Dagster instance (runs, schedules): $(DAGSTER_HOME); data lake: $${CARDIO_DATA_LAKE:-data_lake}"
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

check-defs: setup
	$(VENV)/bin/dg check defs

benchmark: setup
	$(PY) benchmarks/preprocess.py --out bench_out/preprocess --patients 200 --workers 2

clean-lake:
	rm -rf data_lake/* $(DAGSTER_HOME)
