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
HEADWATER := $(VENV)/bin/headwater
CLUSTER_DIR ?= .headwater

.PHONY: run test soak bench bench-profile bench-peers lint setup zookeeper netns-tools clean \
	cluster-up cluster-down kerberos-dev kdc

setup: $(STAMP) zookeeper

$(STAMP): pyproject.toml | kerberos-dev
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

# MIT Kerberos' headers (Debian's libkrb5-dev, `krb5-config`) and a C compiler: the gssapi
# package (SASL GSSAPI, the `gssapi` extra, which the test extra includes) has no Linux
# wheel and builds against them (and the interpreter's own Python.h).
kerberos-dev:
	@missing=""; command -v krb5-config >/dev/null || missing="libkrb5-dev"; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages, to build the gssapi package)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && \
	         $$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	fi
	@command -v krb5-config >/dev/null && command -v gcc >/dev/null \
	  || { echo "apt-get install libkrb5-dev gcc" >&2; exit 1; }
	@$(PYTHON) -c 'import os, sysconfig, sys; \
	  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	  || { echo "$(PYTHON) has no Python.h to build the gssapi package against:" \
	       "install its headers (Debian's python3-dev for /usr/bin/python3)" >&2; exit 1; }

# A KDC's programs for the GSSAPI tests, which run a private one of their own
# (tests/kdc.py): Debian's krb5-kdc and krb5-admin-server unpacked into $(KDC_ROOT), not
# installed (installing them would enable their system services and write
# /etc/krb5.conf), with the libraries they link installed.
KDC_ROOT := $(VENV)/kdc
KDC_LIBS := libgssrpc4 libkadm5srv-mit12 libkdb5-10 libverto1 libverto-libev1 libss2
kdc:
	@if [ ! -x $(KDC_ROOT)/usr/sbin/krb5kdc ] || [ ! -x $(KDC_ROOT)/usr/sbin/kadmin.local ]; then \
	  echo "unpacking a Kerberos KDC for the GSSAPI tests into $(KDC_ROOT)" \
	       "(Debian krb5-kdc, krb5-admin-server)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends $(KDC_LIBS) >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && \
	         $$SUDO apt-get install -y -q --no-install-recommends $(KDC_LIBS) >/dev/null; }; \
	  debs=$$(mktemp -d); \
	  ( cd $$debs && apt-get download -q krb5-kdc krb5-admin-server >/dev/null 2>&1 ) \
	    || { $$SUDO apt-get update -q >/dev/null && \
	         ( cd $$debs && apt-get download -q krb5-kdc krb5-admin-server >/dev/null 2>&1 ); }; \
	  for deb in $$debs/*.deb; do dpkg -x $$deb $(KDC_ROOT); done; rm -rf $$debs; \
	fi
	@test -x $(KDC_ROOT)/usr/sbin/krb5kdc && test -x $(KDC_ROOT)/usr/sbin/kadmin.local \
	  || { echo "could not unpack krb5-kdc and krb5-admin-server into $(KDC_ROOT)" >&2; exit 1; }

# iproute2 (`ip`): the partition fault tests put each broker in a network namespace of its
# own and cut the links between them (tests/faults/network.py); without it they are skipped.
netns-tools:
	@if ! PATH="$$PATH:/usr/sbin:/sbin" command -v ip >/dev/null; then \
	  echo "installing iproute2 (Debian package)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends iproute2 >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && \
	         $$SUDO apt-get install -y -q --no-install-recommends iproute2 >/dev/null; } \
	    || echo "could not install iproute2: the partition fault tests are skipped" >&2; \
	fi

# A local 3-broker cluster (private ZooKeeper, brokers on free loopback ports, data and
# logs in $(CLUSTER_DIR)/) that keeps running after make returns; idempotent.
run: cluster-up

cluster-up: setup
	@$(HEADWATER) cluster up --dir $(CLUSTER_DIR)

cluster-down:
	@if [ ! -f $(CLUSTER_DIR)/cluster.json ]; then \
	  echo "no cluster is recorded in $(CLUSTER_DIR)"; \
	elif [ -x $(HEADWATER) ]; then \
	  $(HEADWATER) cluster down --dir $(CLUSTER_DIR); \
	else \
	  echo "a cluster is recorded in $(CLUSTER_DIR) but $(HEADWATER) is missing:" \
	       "run 'make setup cluster-down'" >&2; exit 1; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# The unit and component tests (CPU-bound, in-process) run on both cores (pytest-xdist).
# The integration tests, which start real ZooKeeper and broker processes and mostly wait
# on them (a quarter of a core, one at a time), run two modules at a time, each on its
# own ZooKeeper: half the wall time. The fault tests, which time pauses, kills and cuts
# against session timeouts, one at a time. PYTEST_ARGS runs what it names, one at a time.
test: setup lint netns-tools kdc
ifeq ($(strip $(PYTEST_ARGS)),)
	$(PY) -m pytest -n 2 tests/unit tests/component
	$(PY) -m pytest -n 2 --dist loadfile tests/integration
	$(PY) -m pytest tests/faults
else
	$(PY) -m pytest $(PYTEST_ARGS)
endif

# The soak (tests/soak): a seeded random nemesis (kill -9, SIGSTOP, controlled shutdown,
# ZooKeeper paused, two brokers at once, network partitions where the brokers can run in
# namespaces of their own: root and iproute2) against three real brokers under load for
# SOAK_S seconds, then what a user checks: nothing acknowledged lost or doubled, nothing
# read that is not in the log, every replica the same. SOAK_SEED replays a run's faults.
# Not part of `make test` (minutes of wall time); run it after replication changes.
SOAK_S ?= 300
SOAK_SEED ?=
soak: setup netns-tools
	HEADWATER_SOAK_S=$(SOAK_S) HEADWATER_SOAK_SEED=$(SOAK_SEED) $(PY) -m pytest -s tests/soak

# The comparison (bench/compare): Headwater beside Redis Streams and NATS JetStream. Their
# servers come from Debian's packages; the bench runs its own on free loopback ports (never
# the packages' system services); a peer that cannot be installed shows as n/a.
# Their Python clients and matplotlib are the `bench` extra, installed here only.
# `make bench QUICK=1` (or BENCH_QUICK=1) is a smoke run with small counts.
BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_PEERS := redis-server nats-server
QUICK ?= $(BENCH_QUICK)

$(BENCH_STAMP): $(STAMP)
	@if $(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'; then \
	  touch $(BENCH_STAMP); \
	else \
	  echo "could not install the bench extra: the peers it serves and the chart are n/a" >&2; \
	fi

bench-peers:
	@missing=""; for bin in $(BENCH_PEERS); do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$bin >/dev/null || missing="$$missing $$bin"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (Debian packages)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && \
	         $$SUDO apt-get install -y -q --no-install-recommends $$missing >/dev/null; } \
	    || echo "could not install$$missing: the bench reports it as n/a" >&2; \
	fi

bench: setup bench-peers $(BENCH_STAMP)
	BENCH_QUICK=$(QUICK) $(PY) -m bench

# Where the time goes: the matrix's Headwater workloads under py-spy (a test extra),
# flame graphs and top functions per process in bench/results/profiles/.
bench-profile: setup $(BENCH_STAMP)
	BENCH_QUICK=$(QUICK) $(PY) -m bench profile

# Stops the local cluster first (its brokers run from .venv), then removes its data too.
clean: cluster-down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
	rm -rf $(CLUSTER_DIR)
