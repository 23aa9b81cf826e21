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
$(KFP_VENV)/.installed: pyproject.toml
	test -x $(KFP_VENV)/bin/python || $(PYTHON) -m venv $(KFP_VENV)
	$(KFP_VENV)/bin/python -m pip install -q "kfp>=2.7,<3" "kfp-kubernetes>=1.4,<3" pydantic pydantic-settings pyyaml jinja2 typer rich packaging
	$(KFP_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(MLOOP) demo mloop-demo --with-rollback --force

# Two pytest workers, one test file each at a time (pytest-xdist --dist loadfile keeps a module's
# tests in order on one worker): most of the suite waits on subprocesses and servers, so two
# workers on two cores finish in about half the time. PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2

test: $(VENV)/.installed $(KFP_VENV)/.installed
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
	rm -rf $(VENV) $(KFP_VENV) mloop-demo .pytest_cache
