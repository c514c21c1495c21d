# The demo apps (apps/): serve one under brick, or compare brick and gunicorn serving it.
#   make run APP=django PORT=8001 ROOT_PATH=/django
#   make compare APP=pyramid

APP       ?= flask
PORT      ?= 8000
ROOT_PATH ?=
APP_NAMES := flask pyramid django wsgi

.PHONY: run compare app-name

app-name:
	@$(if $(filter $(APP),$(APP_NAMES)),,echo "APP must be one of: $(APP_NAMES)" >&2; exit 2)

run: install app-name ## serve APP (flask|pyramid|django|wsgi) under brick on 127.0.0.1:PORT (8000)
	cd apps/$(APP) && exec $(abspath $(PY)) -m brick $(APP)app:app --bind 127.0.0.1:$(PORT) \
		$(if $(ROOT_PATH),--root-path $(ROOT_PATH)) --access-logfile -

compare: install app-name ## serve APP under brick and gunicorn; show both answers to the same curls
	$(PY) apps/compare.py $(APP) $(if $(ROOT_PATH),--root-path $(ROOT_PATH))
