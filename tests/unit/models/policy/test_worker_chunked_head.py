"""PolicyWorker scoring with the chunked output embedding (tp = cp = 1) equals its full-logits path
(``chunked_head = False``): top-k values/ids and log-probs, fp32, chunk sizes 1, 3 and > T, for a
FSDP2 + LoRA student and a plain frozen teacher (one CPU rank, gloo, no Ray). Also
``device_memory_info`` (what ``cluster.offload: auto`` reads) on CPU."""

from __future__ import annotations

import torch

from nemo_distill.models.policy.config import DTensorConfig, TeacherConfig
from policy_spawn import make_batch, run_ranks
from worker_scenarios import make_config

CHUNKS = (1, 3, 64)  # the batch has 12 rows: 64 is one chunk


def _score_both_ways(worker, batch, k: int, temperature: float) -> dict:
    out = {}
    for chunk in CHUNKS:
        worker.cfg.logprob_chunk_size = chunk
        for chunked in (True, False):
            worker.chunked_head = chunked
            topk = worker.get_topk_logits(batch, k, temperature=temperature)
            out[(chunk, chunked)] = (topk.values, topk.indices, worker.get_logprobs(batch, temperature=temperature))
            if chunked:  # the self-check passed: no fallback to full logits happened
                out.setdefault("fell_back", []).append(not worker.chunked_head)
    return out


def score_student_and_teacher(rank: int, model_dir: str, batch) -> dict:
    from nemo_distill.models.policy.worker import PolicyWorker

    student = PolicyWorker(make_config(model_dir, lora=True, precision="float32"))
    assert student.cfg.dtensor_cfg.enabled and student.lora_enabled  # FSDP2 root unit + peft wrapper
    teacher_cfg = TeacherConfig(model_name=model_dir, precision="float32", logprob_batch_size=3,
                                dtensor_cfg=DTensorConfig(enabled=False))
    teacher = PolicyWorker(teacher_cfg, trainable=False)
    lora_elements = sum(p.numel() for p in student.trainable_parameters())
    memory = {"student": student.device_memory_info(), "teacher": teacher.device_memory_info(), "lora_elements": lora_elements}
    return {"memory": memory, "student": _score_both_ways(student, batch, k=4, temperature=0.7),
            "teacher": _score_both_ways(teacher, batch, k=4, temperature=1.0)}


def test_chunked_head_scoring_equals_full_logits(tiny_model_dir):
    batch = make_batch(batch_size=4, seq_len=12, seed=3)
    result = run_ranks(score_student_and_teacher, 1, tiny_model_dir, batch)[0]
    memory = result["memory"]  # LoRA: only the adapters train; two fp32 moments per trainable element
    assert memory["lora_elements"] > 0
    assert memory["student"] == {"free_bytes": 0, "total_bytes": 0, "optimizer_bytes": 2 * 4 * memory["lora_elements"]}
    assert memory["teacher"] == {"free_bytes": 0, "total_bytes": 0, "optimizer_bytes": 0}  # frozen: no optimizer
    for role in ("student", "teacher"):
        assert not any(result[role]["fell_back"]), role
        for chunk in CHUNKS:
            values, indices, logprobs = result[role][(chunk, True)]
            ref_values, ref_indices, ref_logprobs = result[role][(chunk, False)]
            assert values.shape == (4, 12, 4) and logprobs.shape == (4, 12)
            assert torch.equal(indices, ref_indices), (role, chunk)
            torch.testing.assert_close(values, ref_values, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(logprobs, ref_logprobs, rtol=1e-5, atol=1e-5)
            assert not logprobs[:, 0].any() and not logprobs[batch.attention_mask == 0].any()

