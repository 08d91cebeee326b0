"""Which model a measurement ran, and how big it is: the tidy table's `model` and `model_params`,
and the planner's rule for a model the suite did not measure.

A record names its model as a preset (`tiny`, `small`, `1b`) or a checkpoint path; its size comes
from the preset's `ModelSpec` (forkspawn.checkpoint, which imports torch only to generate weights)
or from the checkpoint's config.json where that path exists here. Parameters are counted from the
shape, tensor by tensor as `checkpoint.write_checkpoint` writes them, so no weights are read.

Extrapolation (`scale`, only with `analysis plan --extrapolate`): what grows with the weight bytes a
rank holds (bytes / TP) scales with them, everything else is held at the measured model's value:
- the time spent loading weights (the span from the phase before `weights_loaded` to it: for vLLM
  from a process's `*_imported`, so that its interpreter start and imports are held; a record
  before record/3 has no import phase, its span holds a spawned process's imports: refused);
- the GPU memory of the weights inside a rank's fixed part (weights, activations, CUDA graphs, context);
- the decode rate, inversely (a decode step reads every weight once: memory-bound at small batch).
Imports, process start, compile, CUDA graphs, KV-cache profiling and host memory are held; the
KV cache's tokens per MiB are not known for another model's layers and heads (left empty).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from forkspawn.checkpoint import PRESETS, ModelSpec

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
WEIGHTS_PHASE = "weights_loaded"  # the phase whose span grows with the weight bytes of a rank
# vLLM's process-creation phases and the phase that ends that process's interpreter start and
# imports (record/3): a weight-loading span that begins at a creation holds the imports
IMPORTED = {"engine_core_started": "engine_core_imported", "workers_started": "workers_imported"}


@dataclass(frozen=True)
class Model:
    name: str  # a preset, a path, or a parameter count as given ("8e9")
    params: float | None  # parameters (None: unknown here)
    bytes_per_param: float | None = None  # from the checkpoint's dtype (None: unknown)

    @property
    def label(self) -> str:
        """'1b (1.24e9 params)', or the name alone where the size is unknown."""
        if not self.params:
            return self.name
        size = params_text(self.params)
        return f"{size} params" if self.name == size else f"{self.name} ({size} params)"

    def weight_bytes(self, tp: int) -> float | None:
        """Bytes of weights each of `tp` ranks holds."""
        return self.params * self.bytes_per_param / tp if self.params and self.bytes_per_param else None


def params_text(params: float) -> str:
    """1.24e9, 2.62e6: three digits, no '+' or leading zero in the exponent."""
    return re.sub(r"e\+?0*(\d)", r"e\1", f"{params:.3g}")


def spec(model: str) -> ModelSpec | None:
    """The shape of a preset, or of a checkpoint path with a config.json here; None otherwise."""
    if model in PRESETS:
        return PRESETS[model]
    path = Path(model).expanduser()
    try:
        return ModelSpec.from_hf(path) if (path / "config.json").is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def param_count(s: ModelSpec) -> int:
    """Parameters of a Llama-style checkpoint of this shape (write_checkpoint's tensors)."""
    h, i, kv = s.hidden_size, s.intermediate_size, s.num_key_value_heads * s.head_dim
    layer = 2 * h + 2 * h * h + 2 * kv * h + 3 * i * h  # two norms, q/o, k/v, gate/up/down
    embeddings = s.vocab_size * h * (1 if s.tie_word_embeddings else 2)
    return embeddings + h + s.num_hidden_layers * layer


def of(model: str | None) -> Model | None:
    """The Model a record names (None for no name)."""
    if not isinstance(model, str) or not model:
        return None
    s = spec(model)
    return Model(model, float(param_count(s)), DTYPE_BYTES.get(s.torch_dtype)) if s else Model(model, None)


def parse(text: str) -> Model:
    """A model asked for on the command line: a preset, a checkpoint path, or a parameter count
    ("8e9", "70B"); ValueError with what is accepted otherwise."""
    m = re.fullmatch(r"\s*([\d.]+(?:e\d+)?)\s*([kMBT]?)\s*", text, re.IGNORECASE)
    if m and not spec(text):
        scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
        try:
            params = float(m.group(1)) * scale
        except ValueError:
            params = 0.0
        if not math.isfinite(params) or params < 1e3:
            raise ValueError(f"{text!r}: a parameter count must be at least 1e3")
        return Model(text, params)
    found = of(text)
    if found is None or found.params is None:
        raise ValueError(f"{text!r} is neither a preset ({', '.join(PRESETS)}), a checkpoint folder with "
                         "config.json, nor a parameter count such as 8e9")
    return found


def nearest(target: Model, measured: list[Model]) -> Model | None:
    """The measured model closest in size (log of parameters) to `target`."""
    sized = [m for m in measured if m.params]
    if not sized or not target.params:
        return None
    return min(sized, key=lambda m: abs(math.log(m.params / target.params)))


def scale(measured: Model, target: Model, tp: int) -> float | None:
    """The factor on what grows with a rank's weight bytes, measured -> target (same TP); a target
    of unknown dtype (a bare parameter count) is taken to have the measured model's."""
    per = target.bytes_per_param or measured.bytes_per_param
    a = measured.weight_bytes(tp)
    b = target.params * per / tp if target.params and per else None
    return b / a if a and b else None

