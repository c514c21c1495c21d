# brick: the WSGI server, its four demo apps and the compose stack.
# `make` (or `make help`) lists the targets.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
APP_REQS := $(wildcard apps/*/requirements.txt)

.DEFAULT_GOAL := help
.PHONY: help install test unit functional lint fmt clean test-prep

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: server/pyproject.toml requirements/dev.txt $(APP_REQS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip
	$(PIP) install -e ./server -r requirements/dev.txt $(addprefix -r ,$(APP_REQS))
	touch $@

install: $(VENV)/.installed ## create .venv with the server, the frameworks and the dev tools

# Steps other makefiles (mk/*.mk) add before the test run, e.g. building images.
test-prep:: install

test: test-prep ## run every test: unit, functional, and e2e when a Docker engine is reachable
	$(PY) -m pytest $(PYTEST_ARGS)

unit: install ## unit tests only (no sockets)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

functional: install ## functional tests only (real sockets on 127.0.0.1)
	$(PY) -m pytest tests/functional $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy --strict on server/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict server/src/brick

fmt: install ## format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk
