"""A small local Hugging Face tokenizer for the generated checkpoints, made without downloads.

Engines (vLLM, Xinference) refuse a checkpoint without a tokenizer; our own workload does not
need one. The tokenizer is a `tokenizers` WordLevel model over a generated vocabulary of exactly
the model's `vocab_size` entries (special tokens, then `t4`, `t5`, ...), split on whitespace.
It is written as plain JSON (the documented tokenizer.json format), so writing it needs neither
`tokenizers` nor `transformers` and works from the light base environment too.
Token ids match the checkpoint's config.json: bos 1, eos 2.
"""

from __future__ import annotations

from pathlib import Path

from .atomic import write_json_atomic

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0..3; config.json says bos 1, eos 2
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # any of these means "has one"


def write_tokenizer(path: Path, vocab_size: int, max_length: int = 256) -> None:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json (and generation_config.json)."""
    if vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size must exceed {len(SPECIALS)} special tokens, got {vocab_size}")
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"t{i}": i for i in range(len(SPECIALS), vocab_size)})
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, tok in enumerate(SPECIALS)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None,
        "decoder": None,  # decode joins tokens with spaces, which is what WordLevel text needs
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "model_max_length": max_length,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    path = Path(path)
    write_generation_config(path)
    # tokenizer.json last: its presence is what `has_tokenizer` checks.
    write_json_atomic(path / "tokenizer_config.json", config)
    write_json_atomic(path / "special_tokens_map.json", specials)
    write_json_atomic(path / "tokenizer.json", tokenizer)


def write_generation_config(path: Path) -> None:
    """generation_config.json: some engine versions (Xinference 1.x with recent transformers) demand one."""
    write_json_atomic(Path(path) / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3})


def has_tokenizer(path: Path) -> bool:
    return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)


def sample_prompt(n_tokens: int, seed: int = 0, vocab_size: int = 512) -> str:
    """A prompt of exactly `n_tokens` tokens of this tokenizer (no specials), deterministic in `seed`."""
    first = len(SPECIALS)
    span = vocab_size - first
    return " ".join(f"t{first + (seed * 7919 + i * 104729) % span}" for i in range(n_tokens))
