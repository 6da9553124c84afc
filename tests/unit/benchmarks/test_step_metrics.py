"""The benchmark figures (tokens/s, MFU, bytes per token) against hand-computed values."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from step_metrics import count_matmul_parameters, count_parameters, summarize_steps  # noqa: E402


def _row(gen_tokens_per_sample: float, trained_tps: float, train_s: float, step_s: float) -> dict:
    return {"train/mean_gen_tokens_per_sample": gen_tokens_per_sample, "train/trained_tokens_per_sec_per_gpu": trained_tps,
            "timing/train/policy_training": train_s, "timing/train/total_step_time": step_s, "timing/train/generation": 2.0,
            "timing/train/teacher_topk": 1.0, "timing/train/refit": 0.5, "timing/train/offload/teacher_to_gpu": 0.25}


def test_summary_figures_by_hand():
    # 64 samples x 200 generated tokens = 12800 per step; 2 trainer GPUs x 10k tok/s x 2 s = 40k trained tokens
    rows = [_row(200.0, 10_000.0, 2.0, 8.0), _row(200.0, 10_000.0, 2.0, 8.0)]
    out = summarize_steps(rows, samples_per_step=64, topk_k=64, trainer_gpus=2, total_gpus=4, params=600_000_000, peak_flops=1e15)
    assert out["generated_tokens"] == 12_800 and out["trained_tokens"] == 40_000
    assert out["generation_tokens_per_s"] == 6_400  # 12800 / 2 s
    assert out["teacher_tokens_per_s"] == 40_000  # 40000 / 1 s
    assert out["train_tokens_per_s"] == 20_000
    assert out["step_generated_tokens_per_s_per_gpu"] == 400  # 12800 / 8 s / 4 GPUs
    assert out["step_all_tokens_per_s_per_gpu"] == 1_250
    assert out["train_mfu"] == pytest.approx(6 * 600e6 * 40_000 / 2.0 / (2 * 1e15))  # 0.036
    assert out["teacher_bytes_per_token"] == 64 * 8  # fp32 value + int32 id per top-k entry
    assert out["offload/teacher_to_gpu_s"] == 0.25

    assert out["generation_overlapped_s"] is None


def test_overlapped_generation_rate_uses_the_background_time():
    # overlap_generation: the driver waited 0.5 s, the sampling itself took 4 s -> 12800 / 4 s
    rows = [{**_row(200.0, 10_000.0, 2.0, 8.0), "timing/train/generation": 0.5, "timing/train/generation_overlapped": 4.0}]
    out = summarize_steps(rows, samples_per_step=64, topk_k=64, trainer_gpus=2, total_gpus=4, params=600_000_000, peak_flops=1e15)
    assert out["generation_s"] == 0.5 and out["generation_overlapped_s"] == 4.0
    assert out["generation_tokens_per_s"] == 3_200


def test_count_parameters_reads_safetensors_headers(tmp_path):
    header = json.dumps({"__metadata__": {}, "a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
                         "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(68))
    assert count_parameters(tmp_path) == 17
    with pytest.raises(FileNotFoundError, match="safetensors"):
        count_parameters(tmp_path / "missing")


def _write_header(folder: Path, shapes: dict[str, list[int]]) -> None:
    entries, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * (shape[0] * (shape[1] if len(shape) > 1 else 1))
        entries[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header = json.dumps(entries).encode()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(offset))


def test_matmul_parameters_leave_out_an_untied_input_embedding(tmp_path):
    layer = {"model.layers.0.mlp.up_proj.weight": [8, 4], "model.norm.weight": [4]}
    _write_header(tmp_path / "untied", {"model.embed_tokens.weight": [10, 4], "lm_head.weight": [10, 4], **layer})
    _write_header(tmp_path / "tied", {"model.embed_tokens.weight": [10, 4], **layer})  # HF stores a tied head once
    assert count_parameters(tmp_path / "untied") == 40 + 40 + 32 + 4
    assert count_matmul_parameters(tmp_path / "untied") == 40 + 32 + 4  # the lookup table multiplies nothing
    assert count_matmul_parameters(tmp_path / "tied") == count_parameters(tmp_path / "tied") == 40 + 32 + 4
