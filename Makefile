# Two commands (README): `make bench` measures this machine, `make test` runs the tests.
# Environments are built once and reused; delete .venv* to rebuild them.

PYTHON ?= python3
# The local CPU wheel on machines without a GPU; on a GPU box pass the CUDA build you use,
# e.g. `make bench TORCH=torch==2.11.0` (or TORCH= to keep what the base Python has).
TORCH ?= torch==2.13.0
PROFILE ?= default
VENV := .venv
BIN := $(VENV)/bin
RESULTS := .asv/results
PROGRESS := .asv/progress.log

export FORKSPAWN_PROFILE := $(PROFILE)

.PHONY: bench test quick clean browser

$(BIN)/.done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH) -e '.[dev]'
	touch $@

# Engine environments (mk/engines.mk) add `PYTHON:BENCH-REGEX` pairs to ASV_JOBS and targets to `engines`.
ASV_JOBS := $(BIN)/python:^torch_tp
-include mk/engines.mk
engines:

# Measure every configuration of this machine through asv, publish asv's HTML, write the report.
bench: $(BIN)/.done engines
	@mkdir -p .asv && : > $(PROGRESS)
	@tail -n 0 -F $(PROGRESS) 2>/dev/null & trap "kill $$! 2>/dev/null" EXIT; \
	  machine=$$($(BIN)/forkspawn machine --asv) && commit=$$(git rev-parse HEAD) && \
	  for job in $(ASV_JOBS); do \
	    FORKSPAWN_PROGRESS=$(CURDIR)/$(PROGRESS) $(BIN)/asv run --machine $$machine --launch-method spawn \
	      --set-commit-hash $$commit -E existing:$${job%%:*} --bench "$${job#*:}" || exit 1; \
	  done
	$(BIN)/asv publish -q
	$(BIN)/python -m analysis report $(RESULTS) -o .asv/report
	@echo "asv HTML: $(CURDIR)/.asv/html/index.html (open it, or: $(BIN)/asv preview)"
	@echo "report:   $(CURDIR)/.asv/report/index.html"

quick:
	$(MAKE) bench PROFILE=quick

test: $(BIN)/.done engines browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The report test opens pages in a real headless browser.
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

clean:
	rm -rf .asv $(VENV) .venv-*
