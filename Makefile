# `make run`: set up .venv, install, migrate, start web + worker, print the URL.
# `make test`: install and run the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PORT := $(or $(ORCHESTRATOR_PORT),8000)

.PHONY: install run test lint format clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Local use runs with DEBUG on unless told otherwise (a secret key is generated in the data dir).
run: export DEBUG ?= true
run: install
	$(BIN)/python manage.py migrate --noinput --verbosity 0
	$(BIN)/python manage.py ensure_admin
	@echo ""
	@echo "  Orchestrator is starting at http://127.0.0.1:$(PORT)/  (admin: http://127.0.0.1:$(PORT)/admin/)"
	@echo "  Stop with Ctrl-C."
	@echo ""
	PATH="$(abspath $(BIN)):$$PATH" ORCHESTRATOR_PORT=$(PORT) $(BIN)/honcho start

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var/test .pytest_cache
