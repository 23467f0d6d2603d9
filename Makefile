# Two entry points: `make demo` and `make test`. Each installs what it needs
# first (Debian packages when missing, then a virtualenv from requirements.lock).

PYTHON ?= python3
VENV   ?= .venv
# The demo's engines: mariadb, mysql, postgres or mixed (the three in turn).
ENGINE ?= mariadb
BIN    := $(VENV)/bin
# BINARY=PACKAGE: a Debian package is installed only when its binary is missing
# (tools/install-missing), so a machine that has a tool from elsewhere, such as
# Node.js from NodeSource with its own npm, is left as it is.
DEMO_PACKAGES := mariadbd=mariadb-server mariadb-install-db=mariadb-server \
  mariadb=mariadb-client mariadb-dump=mariadb-client \
  '/usr/lib/postgresql/*/bin/postgres=postgresql' \
  '/usr/lib/postgresql/*/bin/pg_basebackup=postgresql' zstd=zstd setpriv=util-linux
# The tests also start Azurite (Node.js) and load the status page in Chromium.
TEST_PACKAGES := node=nodejs npm=npm chromium=chromium
# Servers the tests start on loopback that come from npm (Azurite), pinned by tools/package-lock.json.
TOOLS := tools/node_modules/.installed

.PHONY: demo test lint deps system-deps mysql venv test-tools bench-source-impact bench-dedup bench-archive clean

demo: deps $(if $(filter mysql mixed,$(ENGINE)),mysql)
	$(BIN)/catchup demo --engine $(ENGINE)

test: deps mysql test-tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: deps
	$(BIN)/ruff check .

deps: system-deps venv

system-deps:
	@sh tools/install-missing $(DEMO_PACKAGES)

venv: $(VENV)/.installed

# Debian 12 has no MySQL server: a private one from Debian unstable, unpacked under
# .cache/mysql without touching the system (tools/install-mysql); once, then cached.
mysql:
	@sh tools/install-mysql

test-tools: system-deps
	@sh tools/install-missing $(TEST_PACKAGES)
	@$(MAKE) --no-print-directory $(TOOLS)

$(TOOLS): tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	touch $@

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# What a backup costs the source, against mariadb-dump, mydumper and mariadb-backup
# (docs/benchmarks.md); about 15 minutes at the default 2 GB.
bench-source-impact: deps mysql
	@sh tools/install-missing mydumper=mydumper mariadb-backup=mariadb-backup
	$(BIN)/python bench/source_impact.py $(ARGS)

# Repository format 3: new stored bytes per cycle, backup and restore speed, storage over
# 14 cycles against format 2 and a mariadb-backup chain (docs/benchmarks.md); ~45 minutes.
bench-dedup: deps
	@sh tools/install-missing mariadb-backup=mariadb-backup
	$(BIN)/python bench/dedup.py $(ARGS)

# The log archive: lag, source CPU against an idle replica, source bytes of a cycle
# from the archive, point-in-time restore against the manual way; about 12 minutes.
bench-archive: deps
	$(BIN)/python bench/archive.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info tools/node_modules .cache/mysql
