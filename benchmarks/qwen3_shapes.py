"""Random models with the shapes of real Qwen3 checkpoints (weights can't be downloaded here).

Vocabulary rows follow the real model (151936); the tokenizer is the embedded SmolLM2 one, so
prompts only use its first 49152 ids. The output layer shares the input embedding's weight, as in
the real Qwen3-0.6B and 1.7B (``tie_word_embeddings: true``): 0.60 B parameters for qwen3-0.6b.
Until 2026-12-05 these models had an untied output layer (0.75 B parameters, 2.3 GiB more fp32
weights + gradients + AdamW moments in the trainer); the results of that date and before used it.
"""

from __future__ import annotations

from nemo_distill.models.tiny import build_tiny_model

QWEN3_SHAPES = {
    # name: (hidden, layers, heads, kv_heads, intermediate, head_dim)
    "qwen3-0.6b": (1024, 28, 16, 8, 3072, 128),
    "qwen3-1.7b": (2048, 28, 16, 8, 6144, 128),
    "tiny": (64, 2, 4, 4, 128, 16),  # CPU smoke runs of the benchmark scripts
}
QWEN3_VOCAB = 151936


def build_qwen3_shaped(out_dir: str, name: str, *, seed: int = 0, tokenizer_source: str | None = None) -> str:
    hidden, layers, heads, kv_heads, intermediate, head_dim = QWEN3_SHAPES[name]
    return build_tiny_model(out_dir, arch="qwen3", hidden_size=hidden, num_layers=layers, num_attention_heads=heads,
                            num_key_value_heads=kv_heads, intermediate_size=intermediate, head_dim=head_dim,
                            vocab_size=QWEN3_VOCAB, seed=seed, tie_word_embeddings=True, **({"tokenizer_source": tokenizer_source} if tokenizer_source else {}))
