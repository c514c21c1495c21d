# Hardening: fuzzing the HTTP parser and soaking the server (docs/reliability.md).
# Included by the top Makefile, which defines PYTHON, PY and VENV. Neither target is part of
# `make test`; atheris is installed on demand into its own virtualenv, never into $(VENV).

FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 600
FUZZ_VENV    ?= build/fuzz-venv
FUZZ_PY      := $(FUZZ_VENV)/bin/python
FUZZ_DIR     := build/fuzz

.PHONY: fuzz soak

$(FUZZ_VENV)/.installed:
	$(PYTHON) -m venv $(FUZZ_VENV)
	$(FUZZ_PY) -m pip install --disable-pip-version-check -q atheris
	touch $@

fuzz: $(FUZZ_VENV)/.installed ## fuzz the HTTP parser with atheris for FUZZ_SECONDS (default 60)
	mkdir -p $(FUZZ_DIR)/corpus
	PYTHONPATH=server/src $(FUZZ_PY) tests/stress/fuzz_parser.py $(FUZZ_DIR)/corpus \
		-max_total_time=$(FUZZ_SECONDS) -artifact_prefix=$(FUZZ_DIR)/ -print_final_stats=1 $(FUZZ_ARGS)

soak: install ## mixed load on brick for SOAK_SECONDS (default 600); fails on errors or growth
	$(PY) tests/stress/soak.py --seconds $(SOAK_SECONDS) $(SOAK_ARGS)
