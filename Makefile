# Two entry points: `make demo` and `make test`. Each installs what it needs
# first (Debian packages when missing, then a virtualenv from requirements.lock).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := mariadb-server mariadb-backup mariadb-client postgresql zstd util-linux nodejs npm
# Binaries whose absence means the Debian packages above must be installed.
NEEDED_BINARIES := mariadbd mariadb-install-db mariadb-dump mariadb zstd setpriv node npm
# Servers the tests start on loopback that come from npm (Azurite), pinned by tools/package-lock.json.
TOOLS := tools/node_modules/.installed

.PHONY: demo test lint deps system-deps venv test-tools bench-source-impact clean

demo: deps
	$(BIN)/catchup demo

test: deps test-tools
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: deps
	$(BIN)/ruff check .

deps: system-deps venv

system-deps:
	@missing=""; for b in $(NEEDED_BINARIES); do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	ls /usr/lib/postgresql/*/bin/pg_basebackup >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

venv: $(VENV)/.installed

test-tools: system-deps $(TOOLS)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium (the status page test loads it headless)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

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
bench-source-impact: deps
	@command -v mydumper >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends mydumper; }
	$(BIN)/python bench/source_impact.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info tools/node_modules
