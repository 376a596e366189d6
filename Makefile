# helix-e2e. `make e2e` runs the streaming suite (simulator by default) and writes reports/latest;
# `make test` runs every test, `make test-fast` the inner loop. They set up what they need (.venv,
# packages, OpenSSH's sshd).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TARGET ?=
PYTEST_ARGS ?=
SOAK_RUNS ?= 20
FUZZ_EXAMPLES ?= 100000

.PHONY: e2e test test-fast setup sshd docker debs bench fuzz soak-clean clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP) sshd docker debs

# The simulator's guest runs a real OpenSSH sshd. Install it when missing and we can (Debian, root).
sshd:
	@if command -v sshd >/dev/null 2>&1 || test -x /usr/sbin/sshd; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing openssh-server (the simulator's guest runs a real sshd)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server) >/dev/null; \
	else echo "error: OpenSSH's sshd is required by the simulator: install openssh-server (Debian/Ubuntu) or use macOS's /usr/sbin/sshd" >&2; exit 1; fi

# tests/test_real_docker.py proves the docker-py code against a real engine (a private dockerd).
# Install docker.io and a static busybox when missing and we can (Debian, root); else it skips.
docker:
	@if command -v dockerd >/dev/null 2>&1 && { ! command -v dpkg >/dev/null 2>&1 || dpkg -s busybox-static >/dev/null 2>&1; }; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing docker.io and busybox-static (tests/test_real_docker.py runs a private dockerd)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    docker.io busybox-static) >/dev/null 2>&1 || echo "note: docker.io not installed; tests/test_real_docker.py will skip"; \
	fi

# Real components the tests use when present: ffmpeg (bench/ reference), Debian's chromium (the report
# rendered in a real browser) and qemu-system-arm (a real qemu-system-aarch64 for the Helix.app provider).
# Installed as root with apt when missing; elsewhere the tests that need one skip and say why.
DEBS := ffmpeg:ffmpeg chromium:chromium qemu-system-aarch64:qemu-system-arm
debs:
	@missing=""; for pair in $(DEBS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing$$missing (bench reference, browser tests, real QEMU)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) \
	    >/dev/null 2>&1 || echo "note: could not install$$missing; the tests that need them will skip"; \
	else echo "note:$$missing missing (not root with apt); the tests that need them will skip"; fi

# After each run (pass or fail), reports/history.html shows every run kept under reports/ side by side.
e2e: setup
	status=0; $(PY) -m pytest -m streaming tests/streaming $(if $(TARGET),--target $(TARGET)) \
	  --html=reports/latest/report.html --self-contained-html --junitxml=reports/latest/junit.xml $(PYTEST_ARGS) \
	  || status=$$?; \
	$(VENV)/bin/helix-e2e history reports --html reports/history.html || echo "note: reports/history.html not updated"; \
	exit $$status

# Every phase has its own deadline; pytest-timeout's session timeout is only a backstop.
test: setup
	$(PY) -m pytest -q -p no:cacheprovider --session-timeout 900 $(PYTEST_ARGS)

# The inner loop (under 2 minutes on 2 cores): the unit tests, the simulator's components and the
# direct driver tests, on two xdist workers (a module's tests stay on one worker: they share its
# simulator), with few Hypothesis examples (tests/conftest.py's `fast` profile) and without the
# benchmark smoke run. The xdist controller writes a report dir: a throwaway one, not reports/.
FAST_PATHS := tests/unit tests/sim tests/drivers tests/test_import_contract.py
FAST_DESELECT := tests/unit/test_analyze_acceptance.py::test_bench_quick_prints_one_complete_table
FAST_FUZZ_EXAMPLES ?= 25
test-fast: setup
	@reports=$$(mktemp -d -t helix-e2e-test-fast.XXXXXX); trap 'rm -rf "$$reports"' EXIT; \
	HELIX_E2E_FUZZ_EXAMPLES=$(FAST_FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider --session-timeout 300 -n 2 --dist loadscope \
	  --hypothesis-profile fast --report-dir "$$reports" $(foreach t,$(FAST_DESELECT),--deselect $(t)) \
	  $(FAST_PATHS) $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

# Bad input at depth: FUZZ_EXAMPLES (100k) inputs per parser; `make test` runs a few thousand in all.
fuzz: setup
	HELIX_E2E_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/unit/test_fuzz.py $(PYTEST_ARGS)

# No false alarms: SOAK_RUNS (20) consecutive clean simulator runs with short streams must all pass.
soak-clean: setup
	@for i in $$(seq 1 $(SOAK_RUNS)); do echo "== clean run $$i/$(SOAK_RUNS)"; \
	  $(PY) -m pytest -q -p no:cacheprovider -m streaming tests/streaming --stream-duration 4 $(PYTEST_ARGS) || exit 1; done

clean:
	rm -rf reports/latest reports/2* .pytest_cache
