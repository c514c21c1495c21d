# The container stack: nginx in front of the four apps, each on brick and on gunicorn.
# docs/stack.md explains the wiring. Included by the top Makefile, which defines PY, VENV, PIP.

COMPOSE        ?= docker compose
# Seconds `up` waits for every service to be healthy.
UP_WAIT        ?= 300
WHEELHOUSE     := docker/wheels
# The interpreter and platform of the images (python:3.11-slim-bookworm or its Debian
# stand-in), not of this machine: the wheelhouse is installed inside the images.
WHEEL_PYTHON   ?= 3.11
WHEEL_ARCH     ?= $(shell uname -m)
WHEEL_PLATFORMS ?= manylinux_2_28_$(WHEEL_ARCH) manylinux_2_17_$(WHEEL_ARCH) manylinux2014_$(WHEEL_ARCH)
# What the images install: each app's pins, and setuptools (brick's build backend).
WHEEL_REQS     := $(wildcard apps/*/requirements.txt)
DOCKER_PLUGINS := $(or $(DOCKER_CONFIG),$(HOME)/.docker)/cli-plugins

.PHONY: up down logs e2e offline-images base-images wheelhouse compose-plugin stack-prep

up: stack-prep ## build and start the stack (nginx, 4 apps on brick and on gunicorn), wait until healthy
	$(COMPOSE) up -d --build --wait --wait-timeout $(UP_WAIT)
	@echo "The stack is up: http://$$($(COMPOSE) port nginx 8080)/"

down: ## stop the stack and remove its containers, networks and volumes
	$(COMPOSE) down -v --remove-orphans

logs: ## follow the logs of every service of the stack
	$(COMPOSE) logs -f --tail=100

e2e: test-prep ## end-to-end tests of the stack through nginx (needs a Docker engine)
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

offline-images: ## make the python and nginx base images from Debian packages (no registry needed)
	docker/offline/base-images.sh build

# The base images the Dockerfiles name: kept when present, pulled when a registry answers,
# made from Debian packages otherwise.
base-images:
	docker/offline/base-images.sh ensure

wheelhouse: $(WHEELHOUSE)/.complete ## download the wheels the images install into docker/wheels/

WHEEL_DOWNLOAD = $(PIP) download --dest $(WHEELHOUSE) --only-binary=:all: \
	--implementation cp --python-version $(WHEEL_PYTHON) $(addprefix --platform ,$(WHEEL_PLATFORMS))

# One download per app, so that apps may pin different versions of a shared dependency.
$(WHEELHOUSE)/.complete: $(WHEEL_REQS) server/pyproject.toml | install
	rm -f $(WHEELHOUSE)/*.whl $@
	for reqs in $(WHEEL_REQS); do $(WHEEL_DOWNLOAD) -r $$reqs || exit 1; done
	$(WHEEL_DOWNLOAD) "setuptools>=61"
	touch $@

# `docker compose` (v2) from the dev tools, for a machine whose docker CLI lacks the plugin.
compose-plugin: install
	@docker compose version >/dev/null 2>&1 || { \
		mkdir -p $(DOCKER_PLUGINS) && \
		ln -sf $(abspath $(VENV))/bin/docker-compose $(DOCKER_PLUGINS)/docker-compose && \
		docker compose version; }

# Everything `docker compose up --build` needs that the repository alone cannot give it.
stack-prep: compose-plugin base-images wheelhouse

# `make test` runs the e2e tests when a Docker engine answers; prepare the stack for them.
test-prep::
	@if docker info >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory stack-prep; \
	else \
		echo "stack: no Docker engine reachable; the e2e tests will skip"; \
	fi
