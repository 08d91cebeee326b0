"""What one measurement asks for, and the vocabulary of the axes.

A `Config` crosses process boundaries as JSON (outer process -> fresh parent interpreter),
so it holds plain values only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .methods import METHODS

# The engines, each an adapter module of forkspawn/engines/ (named in its table, which checks this)
ENGINES = ("torch-tp", "vllm", "vllm-serve", "xinference")
PARENT_STATES = ("bare", "torch", "device-queried", "device-initialized")
DEVICE_STATES = ("device-queried", "device-initialized")
CUDA_CHECKS = ("runtime", "nvml")  # how torch.cuda.is_available() finds devices
FORKSERVER_STATES = ("fresh", "warm")
DEVICES = ("auto", "cpu", "cuda")
STATUSES = ("ok", "error", "timeout", "skipped")


class ConfigError(ValueError):
    """Bad input: the message is one line naming the culprit and the valid choices."""


@dataclass(frozen=True)
class Config:
    engine: str = "torch-tp"
    method: str = "spawn"
    parent_state: str = "bare"
    tp: int = 1
    model: str = "tiny"  # a preset name or the path of a local Hugging Face checkpoint
    device: str = "auto"
    batches: tuple[int, ...] = (1, 16)
    warmup_steps: int = 4
    decode_steps: int = 32
    decode_windows: int = 3  # an engine's timed decode windows per batch and cold start (engines/decode.py)
    repeat: int = 3  # cold starts at most (the cap)
    # uncounted cold starts first (`Run.warmup`, the record's `warmups`): what a node pays on the
    # first start of a configuration (a cache, a page cache, a JIT) is reported apart, not as spread
    warmup_starts: int = 0
    least: int = 0  # cold starts at least before the stopping rule may end a configuration (0: repeat, fixed)
    precision: float = 0.0  # relative half-width of time to ready's 99% interval that settles it (0: never)
    timeout_s: float = 300.0  # bound on one cold start, start request to ready
    # hard bound on one cold start's whole fresh parent (start, decode, teardown), after which its
    # process group is killed and the start is a timeout; 0: 2 x timeout_s + 300
    limit_s: float = 0.0
    cuda_check: str = "runtime"
    forkserver: str = "fresh"
    cache_dir: str = ""  # where generated checkpoints live; "" = the default cache
    extra: dict = field(default_factory=dict)  # engine-specific options

    def __post_init__(self) -> None:
        _choice("engine", self.engine, ENGINES)
        _choice("method", self.method, METHODS)
        _choice("parent state", self.parent_state, PARENT_STATES)
        _choice("cuda check", self.cuda_check, CUDA_CHECKS)
        _choice("forkserver state", self.forkserver, FORKSERVER_STATES)
        _choice("device", self.device, DEVICES)
        for name in ("tp", "repeat", "decode_steps", "decode_windows"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_starts < 0:
            raise ConfigError(f"warmup_starts must be >= 0, got {self.warmup_starts}")
        if not 0 <= self.least <= self.repeat:
            raise ConfigError(f"least must be between 0 and repeat ({self.repeat}), got {self.least}")
        if not 0 <= self.precision < 1:
            raise ConfigError(f"precision must be a fraction in [0, 1), got {self.precision}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout must be positive, got {self.timeout_s}")
        if self.limit_s < 0:
            raise ConfigError(f"limit must be positive (or 0: the default), got {self.limit_s}")
        if self.forkserver == "warm" and not self.method.startswith("forkserver"):
            raise ConfigError(f"--forkserver warm applies to forkserver methods only, not {self.method!r}")
        object.__setattr__(self, "batches", tuple(int(b) for b in self.batches))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls(**json.loads(text))

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def parent_limit_s(self) -> float:
        """Seconds after which one cold start's fresh parent is killed (`limit_s`)."""
        return self.limit_s or 2 * self.timeout_s + 300

    def cache_path(self) -> Path:
        from .checkpoint import default_cache_dir

        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


def _choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
