# Fresh machine: `make demo` or `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv lint format test demo bench docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "csnotify needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Five workers: most tests wait on processes, services and timers, so five keep two cores
# busy where three left them half idle. tests/conftest.py orders the tests longest first;
# --maxschedchunk 1 hands them out one at a time in that order (by default xdist gives
# each worker a quarter of its share at once, in order: all the long tests to the first).
# Byte-code is cached (under .venv) even where PYTHONDONTWRITEBYTECODE is set: the tests
# start csnotify as a process again and again, and each compiled the package anew
# (~70 ms of CPU a listen; a quarter of the CPU of test_concurrency's racing tests).
test: lint
	env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache \
		$(BIN)/python -m pytest -q -n 5 --maxschedchunk 1 --durations=10

demo: venv
	$(BIN)/csnotify demo

bench: venv
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/pacing.py
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist *.egg-info

# Generated files that are checked in (tests fail when they are stale).
docs: venv
	$(BIN)/python -m csnotify.manpage > man/csnotify.1
	$(BIN)/csnotify completion bash > completions/csnotify.bash
	$(BIN)/csnotify completion zsh > completions/_csnotify
	$(BIN)/csnotify completion fish > completions/csnotify.fish
