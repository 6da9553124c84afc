"""Tiny random causal LMs built from configs, for tests and CPU smoke runs.

They share the embedded SmolLM2 tokenizer (a real BPE tokenizer with a chat template), so
prompts, chat formatting and stop strings behave as with a real model; only the weights are
random. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nemo_distill.models.loading import EMBEDDED_MODEL_NAME, load_tokenizer

TINY_ARCHITECTURES = ("qwen3", "llama")


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: str = "qwen3",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
    tokenizer_source: str = EMBEDDED_MODEL_NAME,
    vocab_size: int | None = None,
    head_dim: int | None = None,
    initializer_range: float = 0.02,
    tie_word_embeddings: bool = False,
) -> str:
    """Write a random ``arch`` model plus tokenizer to ``out_dir``; return the folder path.

    The vocabulary is the tokenizer's, so two tiny models of different sizes built here can
    be student and teacher of each other. ``vocab_size`` may be larger (to copy a real model's
    shape, e.g. Qwen3's 151936); the extra rows are never produced by the tokenizer.
    A larger ``initializer_range`` gives peaked next-token distributions (stable greedy outputs),
    which functional tests use so that a few training steps see nearly the same rollouts.
    ``tie_word_embeddings``: the output layer shares the input embedding's weight (as in SmolLM2 and
    Qwen3 up to 4B).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

    if arch not in TINY_ARCHITECTURES:
        raise ValueError(f"tiny model arch '{arch}' is not one of {TINY_ARCHITECTURES}")
    tokenizer = load_tokenizer(tokenizer_source)
    common = dict(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=2048,
        initializer_range=initializer_range,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch == "qwen3":
        config = Qwen3Config(head_dim=head_dim or hidden_size // num_attention_heads, **common)
    else:
        config = LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out_dir)
    return str(out_dir)


def main(argv: list[str] | None = None) -> None:
    """``python -m nemo_distill.models.tiny --out DIR [--arch qwen3] [--hidden-size 64] [--seed 0]``."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a tiny random causal LM (real SmolLM2 tokenizer) to a folder.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--arch", default="qwen3", choices=TINY_ARCHITECTURES)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-std", type=float, default=0.02, help="initializer_range (larger: peakier outputs)")
    args = parser.parse_args(argv)
    path = build_tiny_model(
        args.out, arch=args.arch, hidden_size=args.hidden_size, num_layers=args.num_layers,
        intermediate_size=2 * args.hidden_size, seed=args.seed, initializer_range=args.init_std,
    )
    print(path)


if __name__ == "__main__":
    main()
