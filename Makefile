# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv at the
# repository root if it is missing and installs mloop with pinned dependencies (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MLOOP := $(VENV)/bin/mloop

.PHONY: demo test lint typecheck check lock clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

# Kubeflow Pipelines' SDK pins protobuf<7 while MLflow needs protobuf 7, so the KFP compiler gets a
# virtualenv of its own, used only by `mloop pipeline compile --target kfp` tests.
KFP_VENV ?= .venv-kfp
$(KFP_VENV)/.installed: pyproject.toml $(VENV)/.installed  # after .venv: both write src/mloop.egg-info
	test -x $(KFP_VENV)/bin/python || $(PYTHON) -m venv $(KFP_VENV)
	$(KFP_VENV)/bin/python -m pip install -q "kfp>=2.7,<3" "kfp-kubernetes>=1.4,<3" pydantic pydantic-settings pyyaml jinja2 typer rich packaging
	$(KFP_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

# Airflow and Prefect pin their own FastAPI/SQLAlchemy/pydantic ranges (Prefect's FastAPI cap clashes
# with mloop's), and the DAG and flow files that `mloop pipeline compile --target airflow|prefect`
# writes must run without mloop importable: each gets a virtualenv of its own, without mloop, used only
# by tests/integration/test_deploy_airflow.py and test_deploy_prefect.py. apache-airflow is the
# core + task SDK only; the cncf.kubernetes provider brings the KubernetesPodOperator. CI builds them
# every run: --no-compile leaves byte-compiling to the first import (about 2.5 instead of 4 minutes
# for Airflow on a busy 2-core machine).
AIRFLOW_VENV ?= .venv-airflow
$(AIRFLOW_VENV)/.installed:
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q --no-compile "apache-airflow==3.3.2" "apache-airflow-providers-cncf-kubernetes==10.25.0"
	touch $@

PREFECT_VENV ?= .venv-prefect
$(PREFECT_VENV)/.installed:
	test -x $(PREFECT_VENV)/bin/python || $(PYTHON) -m venv $(PREFECT_VENV)
	$(PREFECT_VENV)/bin/python -m pip install -q --no-compile "prefect==3.9.1"
	touch $@

# Feast pins pandas<3 (every release), prometheus_client<0.25 and redis<8 (0.66+), all below the lock
# (constraints.txt), so Feast runs in a virtualenv of its own: mloop starts its Python for the feature
# repo side (serving.feast_python; docs/features.md). Not with -c constraints.txt: its own resolution.
FEAST_VENV ?= .venv-feast
$(FEAST_VENV)/.installed: pyproject.toml
	test -x $(FEAST_VENV)/bin/python || $(PYTHON) -m venv $(FEAST_VENV)
	$(FEAST_VENV)/bin/python -m pip install -q "feast[redis]==0.67.0"
	touch $@

# DVC (through hydra-core/omegaconf) pins antlr4-python3-runtime 4.9 where the lock has 4.13, so the dvc
# command gets a virtualenv of its own: mloop runs it (training.dvc_command), never imports it; the
# data-version tests use .venv-dvc/bin/dvc (tests/integration/test_training_data_versions.py).
DVC_VENV ?= .venv-dvc
$(DVC_VENV)/.installed: pyproject.toml
	test -x $(DVC_VENV)/bin/python || $(PYTHON) -m venv $(DVC_VENV)
	$(DVC_VENV)/bin/python -m pip install -q "dvc==3.67.1"
	touch $@

demo: $(VENV)/.installed
	$(MLOOP) demo mloop-demo --with-rollback --force

# Two pytest workers, one test file each at a time (pytest-xdist --dist loadfile keeps a module's
# tests in order on one worker): most of the suite waits on subprocesses and servers, so two
# workers on two cores finish in about half the time. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2

TEST_VENVS := $(VENV)/.installed $(KFP_VENV)/.installed $(AIRFLOW_VENV)/.installed \
	$(PREFECT_VENV)/.installed $(FEAST_VENV)/.installed $(DVC_VENV)/.installed

# The virtualenvs build side by side (pip mostly waits on downloads and unpacking): on a fresh
# machine about half the time of one after another.
test:
	$(MAKE) -j4 $(TEST_VENVS)
	$(PY) -m pytest -q -p no:cacheprovider $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports --no-logo

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# lint includes the layering contracts (lint-imports); tests/unit/test_layers.py runs them in `make test`.
check: lint typecheck test

# Refresh the lock after changing dependencies in pyproject.toml.
lock: $(VENV)/.installed
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' | grep -vi '^mloop' > constraints.txt

clean:
	rm -rf $(VENV) $(KFP_VENV) $(FEAST_VENV) $(AIRFLOW_VENV) $(PREFECT_VENV) $(DVC_VENV) mloop-demo .pytest_cache
