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
	@test -f $(PGDIR)/port && echo "already running: $$($(BIN)/python -m asyncmig._pgserver dsn $(PGDIR))" || \
	  $(BIN)/python -m asyncmig._pgserver start $(PGDIR)
	@echo "export DATABASE_URL=$$($(BIN)/python -m asyncmig._pgserver dsn $(PGDIR))"

db-down: install
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

dump: install
	$(BIN)/asyncmig --database-url "$(DBURL)" dump

restore: install
	@test -n "$(FILE)" || (echo "usage: make restore FILE=backup_20261126_120000.sql" && exit 2)
	$(BIN)/asyncmig --database-url "$(DBURL)" restore "$(FILE)"

clean:
	rm -rf $(VENV) $(PGDIR) .mypy_cache .ruff_cache
