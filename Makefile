# continuity-agent — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= deploy/examples/demo.yml
PYTEST_ARGS ?=

.PHONY: lock audit run test test-fast lint typecheck bench soak docs system-deps venv clean check-config deb

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when the project metadata or the lock changes. Every dependency (runtime, test, bench)
# comes from requirements.lock, pinned with hashes; the project itself is installed without deps.
$(VENV)/.installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Re-pin after changing dependencies in pyproject.toml (needs the package index).
lock: $(BIN)/python
	$(BIN)/pip install -q pip-tools
	$(BIN)/pip-compile -q --generate-hashes --allow-unsafe --extra test --extra bench --strip-extras \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host -o requirements.lock pyproject.toml
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/python deploy/tools/licences.py

# Known vulnerabilities in the lock (says plainly what could not be checked offline), licences current.
audit: venv
	$(BIN)/python deploy/tools/audit_deps.py
	$(BIN)/python deploy/tools/licences.py --check

venv: $(VENV)/.installed

system-deps:
	./.ci/install-system-deps

run: venv
	@echo "make run: the command is $(CURDIR)/$(BIN)/continuity-agent (or: . $(BIN)/activate); status page http://127.0.0.1:9072/"
	$(BIN)/continuity-agent run --config $(CONFIG)

check-config: venv
	$(BIN)/continuity-agent check-config $(CONFIG)

lint: venv
	$(BIN)/ruff check agent collectors tests bench grafana deploy/tools

typecheck: venv
	$(BIN)/mypy

docs: venv
	$(BIN)/python -m agent.docs > docs/metrics.md
	$(BIN)/python -m agent.docs config > docs/configuration.md

test: venv system-deps lint typecheck audit
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# Without the slow suites (soaks, shaped links, the 50-target run).
test-fast: venv system-deps
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

bench: venv system-deps
	$(BIN)/python -m bench.run

# 200 mixed targets, half blackholed or hanging, 10 minutes; curves in docs/soak.png (needs root).
soak: venv system-deps
	$(BIN)/python -m bench.soak --minutes 10

# The Debian package: dist/continuity-agent_<version>_<arch>.deb (docs/deployment.md). Debian's python3,
# dpkg-deb and fakeroot; the bundled virtual environment comes from requirements.lock with hashes.
DEB_OUT ?= dist
deb: system-deps
	/usr/bin/python3 deploy/tools/build_deb.py --out $(DEB_OUT)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
