"""Derived figures of a distillation run's ``metrics.jsonl`` (shared by the benchmark scripts).

Every figure says what it counts:

* ``generated_tokens``: response tokens sampled per step (``mean_gen_tokens_per_sample`` x samples).
* ``trained_tokens``: non-padding tokens (prompt + response) through the trainer's forward/backward
  per step, from ``train/trained_tokens_per_sec_per_gpu`` x trainer GPUs x the training phase's
  seconds (the phase also holds Ray's call overhead, so this is a slight overestimate).
* ``train_mfu``: ``6 x params x trained_tokens / training seconds / (trainer GPUs x peak)``, with
  ``params`` the student's parameters that multiply (:func:`count_matmul_parameters`: all of them
  but an untied input embedding, a table lookup) and ``peak`` the dense bf16 peak of an H100/H200
  SXM, :data:`PEAK_BF16_FLOPS` (989 TFLOP/s). Until 2026-12-05 every parameter was counted, which
  for the then untied Qwen3-0.6B-shaped benchmark model (0.75 B against 0.60 B) overstated MFU 1.26x.
* ``teacher_bytes_per_token``: bytes the teacher's top-k sends to the trainer per sequence position,
  ``k x (4 + 4)`` (fp32 values and int32 ids; padding positions are sent too).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

PEAK_BF16_FLOPS = 989e12  # H100 / H200 SXM dense bf16 (no sparsity)
PHASES = ("refit", "generation", "teacher_topk", "policy_training", "total_step_time")
TOPK_BYTES_PER_ENTRY = 4 + 4  # fp32 value + int32 token id


def tensor_sizes(model_dir: str | Path) -> dict[str, int]:
    """``{tensor name: elements}`` of every tensor in a HF folder's ``*.safetensors`` (read from the headers only)."""
    sizes: dict[str, int] = {}
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}: cannot count the parameters for MFU")
    for path in files:
        with path.open("rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                sizes[name] = count
    return sizes


def count_parameters(model_dir: str | Path) -> int:
    """Every stored parameter (a tied output layer is stored once, with the input embedding)."""
    return sum(tensor_sizes(model_dir).values())


def count_matmul_parameters(model_dir: str | Path) -> int:
    """The parameters a token's forward multiplies: all but the input embedding when the output layer
    has its own weight (``lm_head.weight`` stored); with tied weights the one matrix is the output layer."""
    sizes = tensor_sizes(model_dir)
    untied = any(name.endswith("lm_head.weight") for name in sizes)
    lookup = sum(count for name, count in sizes.items() if name.endswith("embed_tokens.weight")) if untied else 0
    return sum(sizes.values()) - lookup


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_steps(rows: list[dict], *, samples_per_step: int, topk_k: int, trainer_gpus: int, total_gpus: int,
                    params: int, peak_flops: float = PEAK_BF16_FLOPS) -> dict:
    """Means over ``rows`` (one dict per step; pass the steps after warm-up) of the figures in the module docstring."""
    if not rows:
        raise ValueError("no steps to summarize (did the run log metrics.jsonl?)")
    out: dict = {}
    for phase in PHASES:
        out[f"{phase}_s"] = _mean([row[f"timing/train/{phase}"] for row in rows if f"timing/train/{phase}" in row])
    offload = sorted({key for row in rows for key in row if key.startswith("timing/train/offload/")})
    for key in offload:
        out[key.removeprefix("timing/train/") + "_s"] = _mean([row[key] for row in rows if key in row])
    generated = _mean([row["train/mean_gen_tokens_per_sample"] * samples_per_step for row in rows])
    trained = _mean([row["train/trained_tokens_per_sec_per_gpu"] * trainer_gpus * row["timing/train/policy_training"] for row in rows])
    step_s, train_s = out["total_step_time_s"], out["policy_training_s"]
    # With overlap_generation, timing/train/generation is only the driver's wait; the sampling's own
    # time (in the background) is generation_overlapped, which is what a generation rate must use.
    overlapped = _mean([row["timing/train/generation_overlapped"] for row in rows if "timing/train/generation_overlapped" in row])
    generation_s = overlapped if overlapped else out.get("generation_s")
    out.update(
        generated_tokens=generated,
        trained_tokens=trained,
        generation_overlapped_s=overlapped,
        generation_tokens_per_s=generated / generation_s if generation_s else None,
        teacher_tokens_per_s=trained / out["teacher_topk_s"] if out.get("teacher_topk_s") else None,
        train_tokens_per_s=trained / train_s,
        step_generated_tokens_per_s_per_gpu=generated / step_s / total_gpus,
        step_all_tokens_per_s_per_gpu=trained / step_s / total_gpus,
        train_mfu=6 * params * trained / train_s / (trainer_gpus * peak_flops),
        mfu_peak_flops=peak_flops,
        params=params,
        teacher_bytes_per_token=topk_k * TOPK_BYTES_PER_ENTRY,
    )
    return out
