# continuity-agent — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= deploy/examples/demo.yml
PYTEST_ARGS ?=

.PHONY: run test test-fast lint typecheck bench soak docs system-deps venv clean check-config

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall when the project metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	./.ci/install-system-deps

run: venv
	$(BIN)/continuity-agent run --config $(CONFIG)

check-config: venv
	$(BIN)/continuity-agent check-config $(CONFIG)

lint: venv
	$(BIN)/ruff check agent collectors tests bench grafana deploy/tools

typecheck: venv
	$(BIN)/mypy

docs: venv
	$(BIN)/python -m agent.docs > docs/metrics.md

test: venv system-deps lint typecheck
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# Without the slow suites (soaks, shaped links, the 50-target run).
test-fast: venv system-deps
	$(BIN)/python -m pytest -m 'not slow' $(PYTEST_ARGS)

bench: venv system-deps
	$(BIN)/python -m bench.run

# 200 mixed targets, half blackholed or hanging, 10 minutes; curves in docs/soak.png (needs root).
soak: venv system-deps
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.soak --minutes 10

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
