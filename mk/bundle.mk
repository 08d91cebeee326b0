# The offline engine bundle (docs/offline-bundle.md): on a connected machine
# `make bundle` writes vLLM, Xinference and asv, resolved together for the GPU box's Python and
# platform, as xz parts of PART_MB MiB plus manifest.json into BUNDLE_DIR; on the box
# `make bench OFFLINE=1` (or `make offline-env OFFLINE=1`) installs them. Included from the Makefile.

BUNDLE_DIR ?= .bundle
PY_TARGET ?= 3.12
# The newest manylinux tag the box runs; the older ones are implied. 2_31, not 2_28: llguidance
# 1.7 (vLLM's structured output) ships manylinux_2_31 wheels only, and ran on the box.
PLATFORM ?= manylinux_2_31_x86_64
# 0.26.0 pins torch==2.11.0, the box's own build (0.27 and later pin newer torches).
VLLM_GPU_VERSION ?= 0.26.0
XINFERENCE_VERSION ?= 4.1.0
# Each device call carries at most 64 MiB, the working tree included (about 16 MiB with the
# committed reports: parts of 44 MiB leave room for it to grow).
PART_MB ?= 40
# What the box's image already has (from the device KINDS.md): left out of the bundle.
BOX ?= mk/box-cuda.txt
# Directories of wheels already downloaded (e.g. the 300 MB vLLM wheel), searched before PyPI.
BUNDLE_FIND_LINKS ?=

.PHONY: bundle
bundle: $(BIN)/.done
	$(BIN)/python -m forkspawn.tools.bundle build --out $(BUNDLE_DIR) --python-version $(PY_TARGET) \
	  --platform $(PLATFORM) --engine vllm==$(VLLM_GPU_VERSION) --require xinference==$(XINFERENCE_VERSION) \
	  --require asv --require asv_runner --box $(BOX) --part-mb $(PART_MB) \
	  $(addprefix --find-links ,$(BUNDLE_FIND_LINKS))
