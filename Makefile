# Two commands: `make demo` runs the main job on the embedded default data, `make test` runs the test suite.
# Each creates or updates the project-local virtual environment (.venv) first; the update is skipped
# when pyproject.toml has not changed since the last install.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
STAMP  := $(VENV)/.xcore-installed
TEST_STAMP := $(VENV)/.xcore-test-installed
export PIP_DISABLE_PIP_VERSION_CHECK=1

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench venv chromium

venv: $(TEST_STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	# torch and torchvision first: on this machine pip takes both from local disk
	$(VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/python -m pip install -q -e .
	touch $(STAMP)

# the test-only dependencies (peer libraries, pytest, Playwright, ruff): installed by `make test`, not `make demo`
$(TEST_STAMP): $(STAMP)
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(VENV)/bin/xai demo

# the HTML report's browser test drives Debian's Chromium (installed once, from the package registry)
chromium:
	command -v chromium >/dev/null 2>&1 || $(SUDO) apt-get install -y -q chromium >/dev/null \
		|| { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium >/dev/null; }

# The integration tests on three workers (tests/conftest.py): the engine tests (real Ray nodes, Prefect servers,
# killed drivers; mostly waiting on processes) one after another on one of them, beside the other modules, the
# longest first, one module per unit of work (the ground-truth trainings, one thread each, run side by side).
test: $(TEST_STAMP) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q tests/unit
	$(VENV)/bin/python -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder --durations=40 tests/integration

bench: $(TEST_STAMP)
	$(VENV)/bin/python -m pip install -q -e '.[bench]'
	$(VENV)/bin/python benchmarks/deletion_insertion.py
	$(VENV)/bin/python benchmarks/explainers.py --models demo --threads 1 --clock cpu
	$(VENV)/bin/python benchmarks/video.py --batch 2
