"""Our own tensor-parallel workload: a Llama-style decoder on torch.distributed.

Megatron-style sharding: q/k/v and gate/up are column-parallel (each rank holds whole heads
or a slice of the intermediate size), o and down are row-parallel and end in an all-reduce.
Embedding, norms and the LM head are replicated, so every rank computes the same logits and
greedy tokens. Weights are a Hugging Face Llama checkpoint (config.json + safetensors): random
from a seed for the presets, or any local Llama-style checkpoint. Each rank reads only its shard.

Imports torch at module level: only workers import this module (a `bare` parent must not).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import safe_open

from .checkpoint import SEED, ModelSpec


class _Shards:
    """Read only this rank's slice of each tensor from the safetensors files."""

    def __init__(self, path: Path, dtype: torch.dtype, device: torch.device):
        self.files = {}
        for f in sorted(path.glob("*.safetensors")):
            handle = safe_open(str(f), framework="pt")
            for key in handle.keys():
                self.files[key] = handle
        self.dtype, self.device = dtype, device

    def get(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        sl = self.files[name].get_slice(name)
        t = sl[rows or slice(None)] if cols is None else sl[rows or slice(None), cols]
        return t.to(device=self.device, dtype=self.dtype)


class TPDecoder:
    """The ranks' shard of the decoder, with a static KV cache and greedy decoding."""

    def __init__(self, path: Path, rank: int, world: int, device: torch.device, dtype: torch.dtype):
        spec = ModelSpec.from_hf(path)
        if spec.num_attention_heads % world or spec.num_key_value_heads % world or spec.intermediate_size % world:
            raise ValueError(f"tensor-parallel size {world} does not divide the model's heads ({spec.num_attention_heads}, "
                             f"kv {spec.num_key_value_heads}) and intermediate size ({spec.intermediate_size})")
        self.spec, self.world, self.device, self.dtype = spec, world, device, dtype
        hd = spec.head_dim
        self.heads, self.kv_heads = spec.num_attention_heads // world, spec.num_key_value_heads // world
        q, kv, inter = self.heads * hd, self.kv_heads * hd, spec.intermediate_size // world
        qs, kvs, ins = slice(rank * q, (rank + 1) * q), slice(rank * kv, (rank + 1) * kv), slice(rank * inter, (rank + 1) * inter)
        r = _Shards(path, dtype, device)
        self.embed = r.get("model.embed_tokens.weight")
        self.norm = r.get("model.norm.weight")
        self.lm_head = self.embed if spec.tie_word_embeddings else r.get("lm_head.weight")
        self.split_qkv = [q, kv, kv]
        self.layers = []
        for n in range(spec.num_hidden_layers):
            p = f"model.layers.{n}."
            # q/k/v and gate/up are fused into one matrix each: decoding is launch-bound at
            # batch 1, and one wide product costs one kernel instead of three (or two).
            self.layers.append({
                "ln1": r.get(p + "input_layernorm.weight"),
                "ln2": r.get(p + "post_attention_layernorm.weight"),
                "qkv": torch.cat([r.get(p + "self_attn.q_proj.weight", qs), r.get(p + "self_attn.k_proj.weight", kvs),
                                  r.get(p + "self_attn.v_proj.weight", kvs)]),
                "o": r.get(p + "self_attn.o_proj.weight", None, qs),
                "gate_up": torch.cat([r.get(p + "mlp.gate_proj.weight", ins), r.get(p + "mlp.up_proj.weight", ins)]),
                "down": r.get(p + "mlp.down_proj.weight", None, ins),
            })
        inv = 1.0 / (spec.rope_theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        ang = torch.outer(torch.arange(spec.max_position_embeddings, device=device, dtype=torch.float32), inv)
        self.cos, self.sin = torch.cat([ang, ang], -1).cos().to(dtype), torch.cat([ang, ang], -1).sin().to(dtype)
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] = []

    def weight_bytes(self) -> int:
        ts = [self.embed, self.norm] + ([] if self.lm_head is self.embed else [self.lm_head])
        ts += [t for layer in self.layers for t in layer.values()]
        return sum(t.numel() * t.element_size() for t in ts)

    def reset_cache(self, batch: int, max_len: int) -> None:
        shape = (batch, self.kv_heads, max_len, self.spec.head_dim)
        self.cache = [(torch.zeros(shape, device=self.device, dtype=self.dtype),
                       torch.zeros(shape, device=self.device, dtype=self.dtype)) for _ in self.layers]
        self.key_pos = torch.arange(max_len, device=self.device)

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, w.shape, w, self.spec.rms_norm_eps)

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(x)
        return x

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits of the last position; writes keys and values for positions pos.. into the cache.

        `pos` is a one-element tensor on the device and attention always spans the whole cache
        (masked), so a decode step has static shapes and can be captured in a CUDA graph.
        """
        b, t = tokens.shape
        hd = self.spec.head_dim
        positions = pos + self.key_pos[:t]
        mask = self.key_pos[None, :] <= positions[:, None]  # causal, over the static cache
        cos, sin = self.cos.index_select(0, positions), self.sin.index_select(0, positions)
        x = F.embedding(tokens, self.embed)
        for layer, (kc, vc) in zip(self.layers, self.cache):
            q, k, v = (self._rms(x, layer["ln1"]) @ layer["qkv"].T).split(self.split_qkv, -1)
            q = q.view(b, t, self.heads, hd).transpose(1, 2)
            k = k.view(b, t, self.kv_heads, hd).transpose(1, 2)
            v = v.view(b, t, self.kv_heads, hd).transpose(1, 2)
            kc.index_copy_(2, positions, self._rope(k, cos, sin))
            vc.index_copy_(2, positions, v)
            attn = F.scaled_dot_product_attention(self._rope(q, cos, sin), kc, vc, attn_mask=mask,
                                                  enable_gqa=self.heads != self.kv_heads)
            x = x + self._reduce(attn.transpose(1, 2).reshape(b, t, -1) @ layer["o"].T)
            gate, up = (self._rms(x, layer["ln2"]) @ layer["gate_up"].T).chunk(2, -1)
            x = x + self._reduce((F.silu(gate) * up) @ layer["down"].T)
        return self._rms(x[:, -1], self.norm) @ self.lm_head.T

    def prompt(self, batch: int, length: int, seed: int = SEED) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, self.spec.vocab_size, (batch, length), generator=g).to(self.device)

    @torch.inference_mode()
    def generate(self, prompt: torch.Tensor, steps: int) -> list[list[int]]:
        """Greedy decoding: prefill the prompt, then `steps` tokens (the first comes from prefill)."""
        step = self.decoder(prompt, steps, use_graph=False)
        out = [step.tokens.clone()]
        for _ in range(steps - 1):
            step()
            out.append(step.tokens.clone())
        return torch.cat(out, 1).tolist()

    @torch.inference_mode()
    def decoder(self, prompt: torch.Tensor, steps: int, use_graph: bool) -> "Decoder":
        """Prefill `prompt`; the returned callable then decodes one greedy token per call.

        With `use_graph` (CUDA only) each call replays a CUDA graph of the whole step, so the
        steady state measures the GPU rather than Python and kernel-launch overhead.
        """
        b, p = prompt.shape
        warm = 2 if use_graph else 0  # eager steps before capture: allocator and library set-up
        self.reset_cache(b, p + warm + steps + 1)
        zero = torch.zeros(1, dtype=torch.long, device=self.device)
        tokens = self.forward(prompt, zero).argmax(-1, keepdim=True)
        pos = zero + p

        def step() -> None:
            with torch.inference_mode():
                tokens.copy_(self.forward(tokens, pos).argmax(-1, keepdim=True))
                pos.add_(1)

        if not use_graph:
            return Decoder(step, tokens)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(warm):
                step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records the step; it runs on replay
            step()
        return Decoder(graph.replay, tokens)


class Decoder:
    """One greedy decode step per call; `tokens` holds the latest token of each sequence."""

    def __init__(self, step, tokens: torch.Tensor):
        self.step, self.tokens = step, tokens

    def __call__(self) -> None:
        self.step()


def dtype_for(spec_dtype: str, device: str) -> torch.dtype:
    """bf16 weights run in bf16 on GPUs; on CPUs everything runs in float32 (bf16 is emulated there)."""
    return getattr(torch, spec_dtype) if device == "cuda" else torch.float32
