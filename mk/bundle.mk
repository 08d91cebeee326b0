# The offline engine bundle (docs/offline-bundle.md): on a connected machine
# `make bundle BOX=box.json` writes vLLM, Xinference and asv, resolved together for the box that
# BOX describes, as xz parts of PART_MB MiB plus manifest.json into BUNDLE_DIR; on the box
# `make bench OFFLINE=1` (or `make offline-env OFFLINE=1`) installs them. Included from the Makefile.

BUNDLE_DIR ?= .bundle
# The box: `python3 -m forkspawn.tools.bundle describe -o box.json` run there (its Python, newest
# manylinux tag, torch and CUDA, driver, packages). The bundle leaves out what the box has and takes
# the vLLM that pins the box's torch (the pin of forkspawn/tools/engineset.py where it does, else
# the newest release of its table that does, else the pin with its torch carried). mk/box-cuda.json
# is the GPU boxes' image (Python 3.12.3, torch 2.11.0+cu130): vLLM 0.26.0.
BOX ?= mk/box-cuda.json
# What BOX says, overridden: the Python (3.12), the newest manylinux tag, the vLLM release.
PY_TARGET ?=
PLATFORM ?=
VLLM_GPU_VERSION ?=
# Each device call carries at most 64 MiB, the working tree included (27 MiB with the committed
# reports; tests/test_bundle.py keeps a part and the tree inside it).
PART_MB ?= 36
# Directories of wheels already downloaded (e.g. the 300 MB vLLM wheel), searched before PyPI.
BUNDLE_FIND_LINKS ?=

.PHONY: bundle
bundle: $(BIN)/.done
	$(BIN)/python -m forkspawn.tools.bundle build --out $(BUNDLE_DIR) --box $(BOX) \
	  $(if $(PY_TARGET),--python-version $(PY_TARGET)) $(if $(PLATFORM),--platform $(PLATFORM)) \
	  $(if $(VLLM_GPU_VERSION),--engine vllm==$(VLLM_GPU_VERSION)) --require xinference==$(XINFERENCE_VERSION) \
	  --require asv --require asv_runner --part-mb $(PART_MB) $(addprefix --find-links ,$(BUNDLE_FIND_LINKS))
