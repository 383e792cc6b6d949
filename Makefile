# Two entry points for a fresh machine (see README):
#   make demo   -> installs into .venv, builds llama.cpp, runs the offline demo, writes reports/summary.html
#   make test   -> installs missing system packages (tools/system-deps.sh, as root), then into .venv, and runs
#                  ruff, snakefmt --check, snakemake --lint and pytest (unit, the demo end to end, Slurm, headless Chromium)
PYTHON ?= python3
VENV   ?= .venv
CORES  ?= $(shell nproc 2>/dev/null || echo 2)
BIN    := $(VENV)/bin

.PHONY: demo test install lint system-deps clean-results
install: $(VENV)/.installed

system-deps:
	bash tools/system-deps.sh

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
	  f"ggufbench needs Python 3.11 or newer (Snakemake 9 does); $(PYTHON) is {sys.version.split()[0]}. " \
	  "Run: make PYTHON=python3.11 (or python3.12, python3.13)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(BIN)/snakemake --cores $(CORES) reports/summary.html

lint: install
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/snakemake --lint --configfile config/demo.yaml
	$(BIN)/snakemake --lint --configfile config/config.yaml
	$(BIN)/snakemake --lint --configfile config/config.yaml config/kld-sharded.yaml

test: system-deps lint
	$(BIN)/pytest -v -rs --durations=40

clean-results:
	rm -rf results reports logs benchmarks
