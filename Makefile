# Headwater: every target does its own set-up (virtualenv in .venv, editable install,
# ZooKeeper from Debian's package). `make run` and `make test` work on a fresh clone.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ZOOKEEPER_JAR := /usr/share/java/zookeeper.jar
PYTEST_ARGS ?=

.PHONY: run test bench lint setup zookeeper clean

setup: $(STAMP) zookeeper

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# Debian's `zookeeper` package (3.8): we only need its jars; brokers and tests start a
# private ZooKeeper from them with their own config (DESIGN.md "ZooKeeper").
zookeeper:
	@if [ ! -f $(ZOOKEEPER_JAR) ]; then \
	  echo "installing ZooKeeper (Debian package 'zookeeper')"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends zookeeper >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && \
	         $$SUDO apt-get install -y -q --no-install-recommends zookeeper >/dev/null; }; \
	fi
	@test -f $(ZOOKEEPER_JAR) || { echo "ZooKeeper is missing: apt-get install zookeeper" >&2; exit 1; }

run: setup
	@$(PY) -m client.cli --version
	@echo
	@echo "Set-up is done: .venv holds Headwater, ZooKeeper's jars are in /usr/share/java."
	@echo "The broker daemons and 'headwater cluster up' arrive with issue 4; today the"
	@echo "wire protocol and the record format are here. Try:"
	@echo "  make test    # the test suite"
	@echo "  make bench   # record encode/decode and batch validation throughput"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
