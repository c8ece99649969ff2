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
# busy where three left them half idle (tests/conftest.py hands out the longest first).
# Byte-code is cached (under .venv) even where PYTHONDONTWRITEBYTECODE is set: the suite
# starts csnotify as a process over a thousand times, and compiling its modules each
# time was about a quarter of the suite's CPU.
test: lint
	env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=$(abspath $(VENV))/pycache \
		$(BIN)/python -m pytest -q -n 5 --durations=10

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
