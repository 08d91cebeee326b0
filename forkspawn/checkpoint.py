"""Checkpoints: the presets, the cache they are generated into, and validation of local paths.

torch is imported only to generate weights, so a caller that merely resolves an existing
checkpoint (the outer `measure` process, asv's benchmark process) stays light.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .tokenizer import TOKENIZER_FILES, has_tokenizer, write_generation_config, write_tokenizer


@dataclass(frozen=True)
class ModelSpec:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int = 512
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    torch_dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every weight of a LlamaForCausalLM of this shape, name and shape, in the order
        `write_checkpoint` draws them (norm weights are ones and draw nothing)."""
        h, i, hd = self.hidden_size, self.intermediate_size, self.head_dim
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        out = [("model.embed_tokens.weight", (self.vocab_size, h)), ("model.norm.weight", (h,))]
        for n in range(self.num_hidden_layers):
            p = f"model.layers.{n}."
            out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                    (p + "self_attn.q_proj.weight", (q, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                    (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, q)),
                    (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                    (p + "mlp.down_proj.weight", (h, i))]
        if not self.tie_word_embeddings:
            out.append(("lm_head.weight", (self.vocab_size, h)))
        return out

    def param_count(self) -> int:
        """Parameters of the model, from its config (tied embeddings counted once)."""
        return sum(math.prod(shape) for _, shape in self.tensors())

    @property
    def itemsize(self) -> int:
        return {"float32": 4, "bfloat16": 2, "float16": 2}[self.torch_dtype]

    @classmethod
    def from_hf(cls, path: Path) -> "ModelSpec":
        cfg = json.loads((path / "config.json").read_text())
        fields = cls.__dataclass_fields__
        spec = {k: cfg[k] for k in fields if k in cfg}
        spec.setdefault("num_key_value_heads", cfg["num_attention_heads"])
        return cls(**spec)


PRESETS = {
    # seconds on 2 CPU cores; about 10 MB
    "tiny": ModelSpec(512, 256, 512, 4, 4, 2, max_position_embeddings=256),
    # about 160M parameters
    "small": ModelSpec(32000, 1024, 2816, 8, 16, 8, torch_dtype="bfloat16"),
    # the shape of Llama-3.2-1B (1.24B parameters)
    "1b": ModelSpec(128256, 2048, 8192, 16, 32, 8, 2048, rope_theta=500000.0,
                    tie_word_embeddings=True, torch_dtype="bfloat16"),
    # the shape of Llama-3.1-8B (8.03B parameters, 16 GB in bf16: written in shards, see SHARD_BYTES)
    "8b": ModelSpec(128256, 4096, 14336, 32, 32, 8, 2048, rope_theta=500000.0, torch_dtype="bfloat16"),
}
SEED = 20261125
# Weights are generated and written a shard at a time, so generation holds one shard (and
# safetensors' serialized copy of it) in memory, never the model: the presets up to `1b` fit
# one file, as before; `8b` takes four.
SHARD_BYTES = 4 * 2**30


def default_cache_dir() -> Path:
    return Path(os.environ.get("FORKSPAWN_CACHE", Path.home() / ".cache" / "forkspawn")) / "models"


def resolve_checkpoint(model: str, cache_dir: Path) -> Path:
    """The checkpoint directory for a preset (generated once) or a local path (validated)."""
    if model in PRESETS:
        return ensure_preset(model, cache_dir)
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a directory with config.json")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"model {model!r} has no *.safetensors weights")
    try:
        ModelSpec.from_hf(path)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"model {model!r}: unreadable config.json ({exc})") from None
    for f in weights:
        _check_safetensors(f)
    return path


def _check_safetensors(f: Path) -> None:
    """A truncated or corrupt file fails here, in one line, instead of inside every worker.

    The format is an 8-byte little-endian header size, a JSON header with each tensor's byte
    range, then the data: the header must parse and the data must be as long as it says.
    """
    try:
        with open(f, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, OSError, MemoryError) as exc:
        raise ValueError(f"corrupt checkpoint file {f}: {exc}") from None
    if f.stat().st_size < 8 + size + end:
        raise ValueError(f"corrupt checkpoint file {f}: truncated ({f.stat().st_size} bytes, header says {8 + size + end})")


def ensure_preset(name: str, cache_dir: Path) -> Path:
    """Generate the preset's random checkpoint once; concurrent callers see a whole one or none."""
    spec = PRESETS[name]
    final = cache_dir / f"{name}-seed{SEED}"
    if (final / "config.json").exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{name}-"))
    try:
        write_checkpoint(tmp, spec, SEED)
        os.rename(tmp, final)
    except OSError:
        if not (final / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def shards(spec: ModelSpec) -> list[list[tuple[str, tuple[int, ...]]]]:
    """The spec's tensors in drawing order, cut into consecutive shards of at most SHARD_BYTES
    (a tensor larger than that gets a shard of its own)."""
    out: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in spec.tensors():
        nbytes = math.prod(shape) * spec.itemsize
        if out[-1] and size + nbytes > SHARD_BYTES:
            out.append([])
            size = 0
        out[-1].append((name, shape))
        size += nbytes
    return out


def shard_names(count: int) -> list[str]:
    """Hugging Face's file names: one `model.safetensors`, or `model-0000i-of-0000n.safetensors`."""
    return ["model.safetensors"] if count == 1 else [f"model-{i:05d}-of-{count:05d}.safetensors"
                                                     for i in range(1, count + 1)]


def hf_config(spec: ModelSpec) -> dict:
    """The checkpoint's config.json."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "bos_token_id": 1, "eos_token_id": 2, **asdict(spec)}


def plan(preset: str) -> dict:
    """What generating `preset` writes, without generating it: its config.json, parameter count,
    bytes of weights, and shards (`forkspawn model PRESET --dry-run`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    cut = shards(spec)
    sizes = [sum(math.prod(s) for _, s in shard) * spec.itemsize for shard in cut]
    return {"preset": preset, "directory": str(default_cache_dir() / f"{preset}-seed{SEED}"), "config": hf_config(spec),
            "params": spec.param_count(), "weight_bytes": sum(sizes),
            "shards": [{"file": f, "tensors": len(shard), "bytes": b} for f, shard, b in zip(shard_names(len(cut)), cut, sizes)],
            "peak_generation_bytes": max(sizes) * 2 + max(math.prod(s) for _, s in spec.tensors()) * 4}


def write_checkpoint(path: Path, spec: ModelSpec, seed: int) -> None:
    """A Hugging Face LlamaForCausalLM checkpoint with random weights from `seed`, written a shard
    at a time (with an index where there are several)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, spec.torch_dtype)

    def make(name: str, shape: tuple[int, ...]) -> "torch.Tensor":
        if name.endswith("norm.weight"):
            return torch.ones(*shape, dtype=dtype)
        return torch.randn(*shape, generator=g).mul_(0.02).to(dtype)

    cut = shards(spec)
    files = shard_names(len(cut))
    for f, shard in zip(files, cut):
        save_file({name: make(name, shape) for name, shape in shard}, str(path / f), metadata={"format": "pt"})
    if len(files) > 1:
        index = {"metadata": {"total_size": sum(math.prod(s) for _, s in spec.tensors()) * spec.itemsize},
                 "weight_map": {name: f for f, shard in zip(files, cut) for name, _ in shard}}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    (path / "config.json").write_text(json.dumps(hf_config(spec), indent=1))
    write_tokenizer(path, spec.vocab_size)  # engines (vLLM, Xinference) need one; our own workload does not


def spec_of(model: str, cache_dir: Path) -> ModelSpec | None:
    """A model's shape without generating it: a preset's, or a local checkpoint's config.json
    (None where that is unreadable)."""
    if model in PRESETS:
        return PRESETS[model]
    try:
        return ModelSpec.from_hf(Path(model).expanduser())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_tokenizer(path: Path, cache_dir: Path | None = None) -> Path:
    """Give a generated checkpoint a tokenizer if it lacks one (checkpoints made before this module).

    Only checkpoints inside our own cache are written to; a user's directory without a tokenizer
    is an error, since silently adding files to someone's model is not ours to do.
    """
    path = Path(path)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    ours = cache.resolve() in path.resolve().parents
    if has_tokenizer(path):
        if ours and not (path / "generation_config.json").exists():
            write_generation_config(path)
        return path
    if not ours:
        raise FileNotFoundError(f"model {str(path)!r} has no tokenizer ({', '.join(TOKENIZER_FILES)}); engines need one")
    spec = ModelSpec.from_hf(path)
    write_tokenizer(path, spec.vocab_size, spec.max_position_embeddings)
    return path
