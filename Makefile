# The two set-up commands are `make run` and `make test`; both install into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install postgres run test check lint typecheck fuzz bench bench-reports loadtest preflight chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/gateway demo

# The backend's ledger tests start a real PostgreSQL 15 (initdb/pg_ctl as the postgres user).
postgres:
	@test -x /usr/local/bin/initdb || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		(apt-get update -q && apt-get install -y -q postgresql)

# pytest's exit 5 (no tests collected) is a failure, never a silent pass.
test: install postgres
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
		if [ $$rc -eq 5 ]; then echo 'pytest collected no tests' >&2; exit 1; fi; exit $$rc

check: lint typecheck test

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

loadtest: install
	$(BIN)/python -m loadtests.run $(LOADTEST_ARGS)

preflight: install
	$(BIN)/gateway preflight $(or $(CAMPAIGN),config/demo-campaign.toml)

bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Every backend report timed over HTTP on a SQLite ledger of 1,000,000 claims (minutes: the
# ledger is built through the ingest code); writes bench/last-reports.json.
bench-reports: install
	$(BIN)/python -m bench.reports $(BENCH_REPORTS_ARGS)

# The chaos suite at full scale, each scenario bounded and the whole stopped after 10 minutes;
# prints the table and writes chaos/last.json. The scaled-down subset runs in `make test`.
chaos: install
	timeout 600 $(BIN)/python -m chaos.run $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
