# tuner: two commands do everything on a fresh Debian 12 machine (as root):
#   make demo   install what is missing, then run the main job
#   make test   install what is missing, then pass the whole test suite
VENV   := .venv
TUNER  := $(VENV)/bin/tuner
PYTEST := $(VENV)/bin/pytest

.PHONY: setup demo test lint clean help

help:
	@echo "make demo   set up (idempotent) and run the main job"
	@echo "make test   set up (idempotent) and run the test suite"
	@echo "make lint   ruff over the code"
	@echo "make clean  remove the virtual environment and caches"

setup:
	@scripts/setup.sh

demo: setup
	@$(TUNER) doctor > /tmp/tuner-doctor.txt || { cat /tmp/tuner-doctor.txt; exit 1; }
	$(TUNER) experiment run experiments/default.toml --out results/default

test: setup
	$(PYTEST) -q -n 2 --dist loadgroup --no-loadscope-reorder

lint: setup
	$(VENV)/bin/ruff check tuner tests
	$(VENV)/bin/ruff format --check tuner tests

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info results
