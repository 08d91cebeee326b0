# Two commands (README): `make bench` measures this machine, `make test` runs the tests.
# Environments are built once and reused; delete .venv* to rebuild them.

PYTHON ?= python3
# The engines' interpreter (.venv-vllm, .venv-xinference): checked against the pinned vLLM's
# Requires-Python before anything is built.
ENGINE_PYTHON ?= $(PYTHON)
PROFILE ?= default
VENV ?= .venv
BIN := $(VENV)/bin
RESULTS := .asv/results
PROGRESS := .asv/progress.log
# asv runs as `ENV_PYTHON:BENCHMARK_REGEX` pairs (the shell unescapes \( \| \)); mk/engines.mk
# adds the engine environments. asv runs each ENV_PYTHON as an `existing` environment named by its
# path in the project, not the machine's (`-E repo:`, forkspawn/tools/asvenv.py).
# asv exits 2 when a benchmark failed: failed configurations are results here, so that is fine.
# asv's forkserver launch: every configuration is measured in a fresh parent interpreter of its
# own (forkspawn.parent), so asv's launch method touches no measurement, and forking asv's
# benchmark processes saves an interpreter start and the suite's imports per parameter set
# (about 0.5 s each, over hundreds of them).
ASV_JOBS := $(BIN)/python:^\(torch_tp\|soak\|quality\)

export FORKSPAWN_PROFILE := $(PROFILE)

.PHONY: bench quick test browser engines engineset offline-env clean

ifdef OFFLINE
# A GPU box without a package registry: the CUDA torch of PYTHON's environment, plus the engine
# bundle (`make bundle` on a connected machine, copied to BUNDLE_DIR). A .pth file lends PYTHON's
# packages to the venv (--system-site-packages would not, if PYTHON is a venv); the bundle's own
# wheels, installed into the venv, come first on sys.path. The engines run in .venv itself.
# --without-pip: pip, setuptools and wheel are PYTHON's too (a venv's own older setuptools would
# shadow them and cannot build the editable install without a registry).
$(BIN)/.done:
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -c 'import site; print("\n".join(site.getsitepackages()))' \
	  > $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/offline-base.pth
	$(BIN)/python -m forkspawn.tools.bundle install --bundle $(BUNDLE_DIR) --venv $(VENV)
	$(BIN)/python -m pip install -q --no-index --no-deps --no-build-isolation -e .
	touch $@
# Only the environment (the tests run this): `make offline-env OFFLINE=1 BUNDLE_DIR=...`.
offline-env: $(BIN)/.done
engines: ;
# Engines first, the most valuable answers first: a short lease may end before the rest.
ASV_JOBS := $(BIN)/python:^engines\.Vllm\(Startup\|Phases\|Memory\|Throughput\) \
            $(BIN)/python:^engines\.VllmServe $(BIN)/python:^engines\.Xinference \
            $(BIN)/python:^\(torch_tp\|soak\|quality\)
else
$(BIN)/.done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH) -e '.[dev]'
	touch $@
offline-env:
	@echo "offline-env: only with OFFLINE=1 (a GPU box with the bundle in BUNDLE_DIR)" >&2; exit 2
# The engine set (forkspawn/tools/engineset.py, the one place that pins it): where nvidia-smi
# lists NVIDIA GPUs, vLLM's CUDA build with the torch it pins, Xinference over that vLLM, and that
# torch in .venv; elsewhere the CPU set. It runs with PYTHON before any venv exists and writes the
# versions as make variables into ENGINESET_MK (rewritten only when they change: the engine venvs
# are rebuilt then). ENGINE_SET=gpu|cpu, VLLM_VERSION (its torch follows), TORCH_VERSION and
# XINFERENCE_VERSION given to make are passed on. A refusal (a driver too old for the pinned torch's CUDA, a Python the
# pinned vLLM does not support) is one line, exit status 2, before anything is built.
ENGINESET_MK := .forkspawn/engineset.mk
passed = $(if $(filter command environment,$(firstword $(origin $1))),--$2 '$($1)')
ENGINESET_WHY := $(shell $(PYTHON) -m forkspawn.tools.engineset --python '$(ENGINE_PYTHON)' --write $(ENGINESET_MK) \
  $(call passed,ENGINE_SET,set) $(call passed,VLLM_VERSION,vllm) $(call passed,TORCH_VERSION,torch) \
  $(call passed,XINFERENCE_VERSION,xinference) 2>&1)
ifneq ($(.SHELLSTATUS),0)
ifneq ($(filter-out clean browser,$(or $(MAKECMDGOALS),bench)),)
$(error $(ENGINESET_WHY))
endif
endif
-include $(ENGINESET_MK)
-include mk/engines.mk
endif
# .venv's torch: the engine set's (the CPU wheel, or the CUDA build the GPU set's vLLM pins).
TORCH ?= torch==$(TORCH_VERSION)
include mk/bundle.mk

# Which engine set this run builds and measures, and why (GPUs, driver, Python, versions).
engineset:
	@echo '$(or $(ENGINESET_WHY),engine set: the offline bundle in $(BUNDLE_DIR) over the torch of $(PYTHON))'

# Measure every configuration of this machine through asv, publish asv's HTML, write the report.
# FORKSPAWN_RUN_ID=<id> resumes an interrupted run: configurations already measured are kept.
# Each job's grid is first measured most useful points first (`forkspawn prefill`), so a run cut
# short has the most answers; asv then reads the records back (FORKSPAWN_RECORDED_ONLY=1: asv
# stores what was measured and measures nothing more). The run's id is made first, so that the
# summary (`forkspawn profile`: the id, the points, their cold starts, the estimated time) shows it
# before anything is measured; FORKSPAWN_JOBS gives the run's plan (and each progress line's count
# and time left) every job's points.
bench: export FORKSPAWN_RUN_ID := $(or $(FORKSPAWN_RUN_ID),$(shell date +%s)-$(shell echo $$PPID))
bench: export FORKSPAWN_JOBS = $(subst \,,$(foreach job,$(ASV_JOBS),$(lastword $(subst :, ,$(job)))))
bench: engineset $(BIN)/.done engines
	@$(BIN)/forkspawn profile
	@mkdir -p .asv && : > $(PROGRESS)
	@$(BIN)/forkspawn leftovers > .asv/leftovers-before.txt || true  # what other runs left: not this run's
	@tail -n 0 -F $(PROGRESS) 2>/dev/null & trap "kill $$! 2>/dev/null" EXIT; \
	  machine=$$($(BIN)/forkspawn machine --asv) && commit=$$(git rev-parse HEAD) && \
	  export ASV_COMMIT=$$commit FORKSPAWN_ASV_MACHINE=$$machine FORKSPAWN_GPUS=$$($(BIN)/python -c 'from benchmarks.common import SUITE; print(SUITE.gpus)') \
	    FORKSPAWN_PROGRESS=$(CURDIR)/$(PROGRESS) && \
	  for job in $(ASV_JOBS); do \
	    $${job%%:*} -m forkspawn prefill "$${job#*:}" || exit $$?; \
	    $(BIN)/asv run --machine $$machine --launch-method forkserver \
	      --set-commit-hash $$commit -E repo:$${job%%:*} --bench "$${job#*:}"; \
	    rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 2 ] || exit $$rc; \
	  done; \
	  $(BIN)/forkspawn spent $(RESULTS) > .asv/spent.txt
	$(BIN)/asv publish
	$(BIN)/python -m forkspawn.tools.asvhtml .asv/html  # CDN scripts -> vendor/asv-html's pinned copies
	$(BIN)/forkspawn leftovers --except .asv/leftovers-before.txt
	$(BIN)/python -m analysis report $(RESULTS) -o .asv/report
	@tail -n 2 .asv/spent.txt; echo "how each configuration's cold starts ended: $(CURDIR)/.asv/spent.txt"
	@echo "asv HTML: $(CURDIR)/.asv/html/index.html (or: $(BIN)/asv preview)"
	@echo "report:   $(CURDIR)/.asv/report/index.html"

quick:
	$(MAKE) bench PROFILE=quick

# ruff first (pyproject.toml's [tool.ruff]): a lint failure is found in seconds, not after the suite.
test: engineset $(BIN)/.done engines browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The report test opens pages in a real headless browser.
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

clean:
	rm -rf .asv $(VENV) .venv-*
