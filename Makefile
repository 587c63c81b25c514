# Every target sets up what it needs: a fresh clone runs `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PGDIR ?= .pgdata
NAME ?=
FILE ?=

.PHONY: install test lint typecheck bench demo db-up db-down migrate rollback status create validate seed dump restore clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src
	$(BIN)/mypy --strict src/asyncmig

typecheck: lint

test: install lint
	$(BIN)/python -m pytest

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

# pg_dump must be at least as new as the server: with the embedded server, use its own.
PGBIN = $${ASYNCMIG_PG_BINDIR:-$$($(BIN)/python -c 'from asyncmig._pgserver import find_bindir; print(find_bindir())')}

dump: install
	ASYNCMIG_PG_BINDIR="$(PGBIN)" $(BIN)/asyncmig --database-url "$(DBURL)" dump

restore: install
	@test -n "$(FILE)" || (echo "usage: make restore FILE=backup_20261126_120000.sql" && exit 2)
	ASYNCMIG_PG_BINDIR="$(PGBIN)" $(BIN)/asyncmig --database-url "$(DBURL)" restore "$(FILE)"

clean:
	rm -rf $(VENV) $(PGDIR) .mypy_cache .ruff_cache
