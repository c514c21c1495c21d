# The side-by-side benchmark (bench/): brick against gunicorn, granian and waitress.
# bench/README.md explains the method. Included by the top Makefile, which defines PYTHON,
# APP_REQS and the rest.
#   make bench                         every app, every server, 3 x 5 s runs each (about 20 min)
#   make bench BENCH_QUICK=1           a smoke run of about a minute
#   make bench BENCH_APPS=wsgi BENCH_SERVERS=brick,granian BENCH_DURATION=10
#   make profile APP=django PROFILER=py-spy
#   make count APP=wsgi BENCH_ARGS=--close   instructions per request (callgrind)
#   make count APP=django BENCH_ARGS="--server floor"   the same for bench/floor.py

# Its own virtualenv, so granian, waitress and py-spy stay out of .venv; every server the
# benchmark starts runs on this one interpreter, with the server and the apps installed here.
BENCH_VENV ?= bench/.venv
BENCH_PY   := $(BENCH_VENV)/bin/python
BENCH_PIP  := $(BENCH_PY) -m pip --disable-pip-version-check -q
BENCH_ARGS ?=
PROFILER   ?= cprofile
# `make profile` profiles the bare WSGI app unless APP is given (apps.mk defaults APP to flask).
PROFILE_APP := $(if $(filter command line environment,$(origin APP)),$(APP),wsgi)

.PHONY: bench bench-install bench-readme bench-stack bench-tools count profile

$(BENCH_VENV)/.installed: server/pyproject.toml bench/requirements.txt $(APP_REQS)
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PIP) install -U pip
	$(BENCH_PIP) install -e ./server -r bench/requirements.txt $(addprefix -r ,$(APP_REQS))
	touch $@

# wrk and taskset, from Debian packages when they are missing and we may install them.
bench-tools:
	@command -v wrk >/dev/null && command -v taskset >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq wrk util-linux; \
		else \
			echo "bench needs wrk and taskset: apt-get install wrk util-linux" >&2; exit 1; \
		fi; }

bench-install: $(BENCH_VENV)/.installed bench-tools ## create bench/.venv: brick, the apps, gunicorn, granian, waitress, py-spy

bench: bench-install ## brick vs gunicorn/granian/waitress on every app; CPU µs/request (BENCH_QUICK=1: ~1 min)
	$(BENCH_PY) -m bench run $(BENCH_ARGS)

bench-readme: ## put bench/results/latest.json's figures in the README's Performance section
	$(PYTHON) -m bench readme

bench-stack: bench-install ## the same comparison through nginx in the compose stack (start it with make up)
	$(BENCH_PY) -m bench stack $(BENCH_ARGS)

count: bench-install ## instructions per request of brick serving APP, under callgrind (repeatable)
	$(BENCH_PY) -m bench count --app $(PROFILE_APP) $(BENCH_ARGS)

profile: bench-install ## profile brick serving APP (default wsgi) under wrk; top functions (PROFILER=py-spy)
	$(BENCH_PY) -m bench profile --app $(PROFILE_APP) --profiler $(PROFILER) $(BENCH_ARGS)
