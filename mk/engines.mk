# Engine environments: vLLM and Xinference cannot share one on a CPU (see shared/ENVIRONMENT.md),
# and neither may share the base .venv (their dependency trees move torch and huggingface_hub).
# Included from the Makefile after the engine set (ENGINESET_MK, written by
# forkspawn/tools/engineset.py): TORCH_VERSION, VLLM_PACKAGE, VLLM_VERSION, XINFERENCE_VERSION,
# XINFERENCE_VLLM (Xinference's vLLM engine: vLLM's GPU build beside it on a GPU, nothing on a
# CPU) and ENGINE_DROP come from there, ENGINE_PYTHON from the Makefile. `make engines` builds both; each is
# rebuilt from scratch when the engine set or this file changes. Override them to build a version
# matrix, e.g.
#   make .venv-xinference/.done XINFERENCE_VERSION=1.4.0 VLLM_VERSION=0.8.1 TORCH_VERSION=2.6.0 \
#     ENGINE_EXTRA_PINS="fastapi==0.115.12"
# (see mk/ASV-MATRIX.md for the versions that reproduce the 1.3.1.post1 / 1.4.0 regression).

ENGINE_EXTRA_PINS ?=

.PHONY: engines
engines: .venv-vllm/.done .venv-xinference/.done

# `make bench` runs asv once per PYTHON:BENCH-REGEX pair (benchmarks/engines.py).
# The vLLM regexes must not overlap (VllmServe classes would run twice); the recipe's shell
# unescapes \( \| \).
ASV_JOBS += .venv-vllm/bin/python:^engines\.Vllm\(Startup\|Phases\|Memory\|Throughput\) \
            .venv-xinference/bin/python:^engines\.Xinference
# `vllm serve` takes two to three minutes to answer on 2 cores: measured there with SERVE=1 only;
# on a GPU always, as the offline path does.
ifneq ($(SERVE)$(filter gpu,$(ENGINE_SET)),)
ASV_JOBS += .venv-vllm/bin/python:^engines\.VllmServe
endif

# `.done` is touched last, so an interrupted build never looks complete (venvs cannot be renamed:
# their scripts hold absolute paths).
.venv-vllm/.done: mk/engines.mk pyproject.toml $(ENGINESET_MK)
	rm -rf .venv-vllm
	$(ENGINE_PYTHON) -m venv .venv-vllm
	.venv-vllm/bin/pip install -q torch==$(TORCH_VERSION) $(VLLM_PACKAGE)==$(VLLM_VERSION) ray $(ENGINE_EXTRA_PINS)
	-.venv-vllm/bin/pip uninstall -y -q $(ENGINE_DROP)
	.venv-vllm/bin/pip install -q asv_runner nvidia-ml-py
	.venv-vllm/bin/pip install -q --no-deps -e .
	.venv-vllm/bin/python -c "import vllm, forkspawn.engines.vllm as a; r = a.unavailable(); assert r is None, r"
	touch $@

.venv-xinference/.done: mk/engines.mk pyproject.toml $(ENGINESET_MK)
	rm -rf .venv-xinference
	$(ENGINE_PYTHON) -m venv .venv-xinference
	.venv-xinference/bin/pip install -q torch==$(TORCH_VERSION) $(XINFERENCE_VLLM) xinference==$(XINFERENCE_VERSION) \
	  $(ENGINE_EXTRA_PINS)
	-.venv-xinference/bin/pip uninstall -y -q $(ENGINE_DROP)
	.venv-xinference/bin/pip install -q asv_runner nvidia-ml-py
	.venv-xinference/bin/pip install -q --no-deps -e .
	.venv-xinference/bin/python -c "import xinference, forkspawn.engines.xinference as a; r = a.unavailable(); assert r is None, r"
	$(if $(XINFERENCE_VLLM),.venv-xinference/bin/python -c "import vllm")
	touch $@
