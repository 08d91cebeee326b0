"""Checkpoints: the presets, the cache they are generated into, and validation of local paths.

torch is imported only to generate weights, so a caller that merely resolves an existing
checkpoint (the outer `measure` process, asv's benchmark process) stays light.
"""

from __future__ import annotations

import json
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
}
SEED = 20261125


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


def write_checkpoint(path: Path, spec: ModelSpec, seed: int) -> None:
    """A Hugging Face LlamaForCausalLM checkpoint with random weights from `seed`."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, spec.torch_dtype)
    h, i, hd = spec.hidden_size, spec.intermediate_size, spec.head_dim
    kv = spec.num_key_value_heads * hd

    def rand(*shape: int) -> "torch.Tensor":
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype)

    w = {"model.embed_tokens.weight": rand(spec.vocab_size, h), "model.norm.weight": torch.ones(h, dtype=dtype)}
    for n in range(spec.num_hidden_layers):
        p = f"model.layers.{n}."
        w.update({
            p + "input_layernorm.weight": torch.ones(h, dtype=dtype),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=dtype),
            p + "self_attn.q_proj.weight": rand(h, h),
            p + "self_attn.k_proj.weight": rand(kv, h),
            p + "self_attn.v_proj.weight": rand(kv, h),
            p + "self_attn.o_proj.weight": rand(h, h),
            p + "mlp.gate_proj.weight": rand(i, h),
            p + "mlp.up_proj.weight": rand(i, h),
            p + "mlp.down_proj.weight": rand(h, i),
        })
    if not spec.tie_word_embeddings:
        w["lm_head.weight"] = rand(spec.vocab_size, h)
    save_file(w, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        **asdict(spec),
    }
    (path / "config.json").write_text(json.dumps(config, indent=1))
    write_tokenizer(path, spec.vocab_size)  # engines (vLLM, Xinference) need one; our own workload does not


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
