"""Profile the model phases of a distillation step outside Ray: generation, the teacher's top-k, the train step.

    python benchmarks/profile_step.py --tokenizer .tok --out results/profile_step           # one GPU
    python benchmarks/profile_step.py --device cpu --shape tiny --prompts 4 --micro-batch 2 \
        --teacher-batch 4 --prompt-len 16 --new-tokens 8 --out /tmp/profile                  # CPU smoke

Builds Qwen3-shaped random student and teacher (``qwen3_shapes.py``), the recipe's policy and teacher
sections (default ``my-distillation-1n4g.yaml``: FSDP2 student with fp32 master weights and bf16
compute, bf16 teacher), and one batch of ``prompts`` rows of ``prompt_len + new_tokens`` random
tokens whose last ``new_tokens`` are the loss targets (the shape of issue 16's benchmark: 64 x
(128 + 256), micro-batch 16). Each phase runs once to warm up, then once timed, then once under
``torch.profiler``. Per phase the script prints and writes to ``<out>/profile_step.json``: seconds,
tokens/s, the peak memory the phase added above what was allocated before it, the profiler's top
operators by device time (``<out>/<phase>_ops.txt``) and by host time (``<out>/<phase>_cpu_ops.txt``),
and on a GPU the summed kernel seconds (``device_kernel_s``; well under the seconds: the host sets the
pace); ``--sync-report`` (GPU) also lists where each phase made the host wait for the device. The roles live in one process here, so the added peak is
the phase's own increment; the total peak (``peak_total_gib``) is everything allocated in the process
(for ``train``: the student's weights, gradients and AdamW states plus the teacher's bf16 weights).

Which tokens a tokens/s counts: ``teacher_topk`` and ``train`` count all ``prompts x (prompt_len +
new_tokens)`` tokens they read (the output layer runs on the ``new_tokens`` rows only, as in the
distillation loop: ``targets_only``, ``TokenBatch.first_target_row``); ``generation`` (the recipe's ``policy.generation`` section, the HF
backend, ``max_new_tokens = new_tokens``, one sample per random prompt) counts the tokens it
generated, and also reports milliseconds per decode step (seconds / the longest response).
``--phases`` picks a subset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from qwen3_shapes import QWEN3_VOCAB, build_qwen3_shaped  # noqa: E402
from single_rank import single_rank_env  # noqa: E402
from step_metrics import PEAK_BF16_FLOPS, count_matmul_parameters  # noqa: E402

from nemo_distill.algorithms.distillation_config import DistillationMasterConfig  # noqa: E402
from nemo_distill.algorithms.distillation_loss import TEACHER_TOPK_INDICES, TEACHER_TOPK_LOGITS, TopkDistillationLoss  # noqa: E402
from nemo_distill.config.cli import parse_command_line  # noqa: E402
from nemo_distill.models.policy.interfaces import TokenBatch  # noqa: E402


def _single_rank_env() -> None:
    """A one-rank process group for the workers (they call ``init_process_group`` themselves)."""
    for key, value in single_rank_env().items():
        os.environ.setdefault(key, value)


def random_batch(prompts: int, prompt_len: int, new_tokens: int, vocab_size: int, seed: int = 0) -> TokenBatch:
    """``[prompts, prompt_len + new_tokens]`` random ids; only the last ``new_tokens`` are loss targets."""
    generator = torch.Generator().manual_seed(seed)
    seq_len = prompt_len + new_tokens
    input_ids = torch.randint(0, vocab_size, (prompts, seq_len), generator=generator)
    attention_mask = torch.ones(prompts, seq_len, dtype=torch.long)
    loss_mask = attention_mask.clone()
    loss_mask[:, :prompt_len] = 0
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=torch.ones(prompts))


def profile_phase(name: str, run, device: torch.device, out: Path, row_limit: int = 25, *, sync_report: bool = False) -> dict:
    """Warm up once, then time and profile one call of ``run()``; the phase's row of the table.

    Besides the seconds: ``device_kernel_s``, the profiled call's kernel and copy times summed (GPU only;
    kernels on different streams may overlap, and the profiler slows the host, so this is a rough
    figure: well under ``seconds`` means the host, not the device, sets the pace), the top operators by device
    time (``<name>_ops.txt``) and by host time (``<name>_cpu_ops.txt``), and with ``sync_report`` the
    places where the host waited for the device (``torch.cuda.set_sync_debug_mode``), most frequent first.
    """
    run()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    before = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run()
    sync()
    seconds = time.perf_counter() - started
    peak_added = (torch.cuda.max_memory_allocated() - before) / 2**30 if device.type == "cuda" else None
    peak_total = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    with torch.profiler.profile(activities=activities, profile_memory=False) as prof:
        run()
        sync()
    averages = prof.key_averages()
    sort_by = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = averages.table(sort_by=sort_by, row_limit=row_limit, max_name_column_width=60)
    (out / f"{name}_ops.txt").write_text(table)
    (out / f"{name}_cpu_ops.txt").write_text(averages.table(sort_by="self_cpu_time_total", row_limit=row_limit,
                                                            max_name_column_width=60))
    row = {"phase": name, "seconds": seconds, "peak_added_gib": peak_added, "peak_total_gib": peak_total,
           "ops_file": f"{name}_ops.txt", "ops_table": table}
    if device.type == "cuda":
        # kernels and copies are events of their own (device type CUDA); the host ops that launched them
        # carry the same time again, so only the former are summed (as the table's "Self CUDA time total")
        row["device_kernel_s"] = sum(event.self_device_time_total for event in averages
                                     if event.device_type == torch.autograd.DeviceType.CUDA) / 1e6
    if sync_report and device.type == "cuda":
        row["host_waits"] = host_waits(run)
        sync()
    return row


def host_waits(run) -> list[list]:
    """``[[count, where], ...]``: every call in ``run()`` that made the host wait for the device, grouped by
    the innermost frames of nemo_distill / transformers code that led to it, most frequent first."""
    import collections
    import traceback
    import warnings

    places: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [frame for frame in traceback.extract_stack()[:-1]
                  if "nemo_distill" in frame.filename or "transformers" in frame.filename]
        places[" <- ".join(f"{Path(frame.filename).name}:{frame.lineno}" for frame in reversed(frames[-3:])) or filename] += 1

    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = shown
    return [[count, where] for where, count in places.most_common(20)]


PHASES = ("generation", "teacher_topk", "train")


def generation_runner(model_dir: str, generation_cfg, prompts: list[list[int]], *, precision: str, tokenizer_cfg=None,
                      prepare=None):
    """``(run, stats)``: ``run()`` samples one response per prompt with an ``HFGenerationWorker`` built from
    ``generation_cfg`` (its sampling settings too; ``prepare(worker)``, when given, runs once before the
    first call); ``stats`` holds the last call's generated-token count and longest response. The worker
    lives as long as ``run``."""
    from nemo_distill.models.generation.hf_backend import HFGenerationWorker
    from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams

    worker = HFGenerationWorker(model_dir, generation_cfg, precision=precision, tokenizer_cfg=tokenizer_cfg)
    if prepare is not None:
        prepare(worker)
    request = GenerationRequest(prompt_token_ids=prompts, sampling=SamplingParams.from_config(generation_cfg, n=1))
    stats = {"tokens": 0, "longest": 0}

    def run() -> None:
        lengths = [len(sample.response_token_ids) for sample in worker.generate(request).samples]
        stats.update(tokens=sum(lengths), longest=max(lengths))

    return run, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shape", default="qwen3-0.6b", help="a key of qwen3_shapes.QWEN3_SHAPES (tiny: CPU smoke)")
    parser.add_argument("--recipe", default="configs/recipes/llm/my-distillation-1n4g.yaml")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=16, help="policy.train_micro_batch_size")
    parser.add_argument("--teacher-batch", type=int, default=32, help="teacher.logprob_batch_size")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded SmolLM2 one)")
    parser.add_argument("--override", nargs="*", default=[], help="extra config overrides (KEY=VALUE)")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES), help="which phases to profile")
    parser.add_argument("--sync-report", action="store_true",
                        help="GPU: also list where each phase made the host wait for the device")
    parser.add_argument("--out", default="results/profile_step")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible; use --device cpu --shape tiny")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    student_dir = build_qwen3_shaped(str(out / "models" / "student"), args.shape, seed=0, tokenizer_source=args.tokenizer)
    teacher_dir = build_qwen3_shaped(str(out / "models" / "teacher"), args.shape, seed=1, tokenizer_source=args.tokenizer)
    seq_len = args.prompt_len + args.new_tokens
    overrides = [f"policy.model_name={student_dir}", f"teacher.model_name={teacher_dir}",
                 f"policy.train_micro_batch_size={args.micro_batch}", f"policy.train_global_batch_size={args.prompts}",
                 f"teacher.logprob_batch_size={args.teacher_batch}", f"policy.max_total_sequence_length={seq_len}",
                 "env.math.use_math_verify=false", *args.override]
    if args.device == "cpu":
        overrides += ["cluster.gpus_per_node=0", "policy.precision=float32", "teacher.precision=float32"]
    cfg = parse_command_line(["--config", str(REPO / args.recipe), *overrides], DistillationMasterConfig,
                             default_config=str(REPO / args.recipe), description="profile_step").config
    _single_rank_env()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from nemo_distill.models.policy.worker import PolicyWorker

    batch = random_batch(args.prompts, args.prompt_len, args.new_tokens, QWEN3_VOCAB)
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    tokens = args.prompts * seq_len
    params = count_matmul_parameters(student_dir)
    k = cfg.distillation.topk_logits_k
    rows, workers = [], []
    if "generation" in args.phases:  # first: the policy workers' memory is not yet allocated
        generation_cfg = replace(cfg.policy.generation, max_new_tokens=args.new_tokens,
                                 max_batch_size=max(cfg.policy.generation.max_batch_size, args.prompts))
        generate, generated = generation_runner(student_dir, generation_cfg, batch.input_ids[:, : args.prompt_len].tolist(),
                                                precision=cfg.policy.precision, tokenizer_cfg=cfg.policy.tokenizer)
        row = profile_phase("generation", generate, device, out)
        row.update(tokens_per_sec=generated["tokens"] / row["seconds"], generated_tokens=generated["tokens"],
                   decode_step_ms=1000 * row["seconds"] / max(1, generated["longest"]))
        rows.append(row)
    if "teacher_topk" in args.phases or "train" in args.phases:
        teacher = PolicyWorker(cfg.teacher, trainable=False)
        workers.append(teacher)
    if "teacher_topk" in args.phases:
        # as the distillation loop asks: the prompt's rows skip the output layer
        rows.append(profile_phase("teacher_topk", lambda: teacher.get_topk_logits(batch, k, targets_only=True), device, out,
                                   sync_report=args.sync_report))
        rows[-1]["tokens_per_sec"] = tokens / rows[-1]["seconds"]
    if "train" in args.phases:
        topk = teacher.get_topk_logits(batch, k, targets_only=True)
        train_batch = TokenBatch(input_ids=batch.input_ids, attention_mask=batch.attention_mask, loss_mask=batch.loss_mask,
                                 sample_mask=batch.sample_mask,
                                 extras={TEACHER_TOPK_LOGITS: topk.values, TEACHER_TOPK_INDICES: topk.indices})
        loss_fn = TopkDistillationLoss(cfg.loss_fn.kl_type, cfg.loss_fn.mixed_kl_weight, cfg.loss_fn.zero_outside_topk)
        student = PolicyWorker(cfg.policy, total_steps=10)
        workers.append(student)
        rows.append(profile_phase("train", lambda: student.train(train_batch, loss_fn), device, out,
                                   sync_report=args.sync_report))
        rows[-1]["tokens_per_sec"] = tokens / rows[-1]["seconds"]
        rows[-1]["mfu"] = 6 * params * tokens / rows[-1]["seconds"] / PEAK_BF16_FLOPS
    setting = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "shape": args.shape, "params": params,
               "batch": f"{args.prompts} x ({args.prompt_len} + {args.new_tokens}) tokens", "micro_batch": args.micro_batch,
               "teacher_batch": args.teacher_batch, "topk": k, "recipe": args.recipe, "overrides": args.override,
               "tokens_counted": "generation: generated tokens; teacher_topk, train: all prompt + response tokens of the batch"}
    print(f"setting: {json.dumps(setting)}")
    print(f"{'phase':14} {'seconds':>8} {'kernel s':>8} {'tokens/s':>10} {'peak +GiB':>10} {'peak GiB':>9} {'MFU':>6} {'ms/decode step':>15}")
    for row in rows:
        peak = "-" if row["peak_added_gib"] is None else f"{row['peak_added_gib']:.2f}"
        total = "-" if row["peak_total_gib"] is None else f"{row['peak_total_gib']:.2f}"
        mfu = f"{row['mfu']:.1%}" if "mfu" in row else ""
        step_ms = f"{row['decode_step_ms']:.2f}" if "decode_step_ms" in row else ""
        kernel = f"{row['device_kernel_s']:.3f}" if "device_kernel_s" in row else "-"
        print(f"{row['phase']:14} {row['seconds']:8.3f} {kernel:>8} {row['tokens_per_sec']:10.0f} {peak:>10} {total:>9} {mfu:>6} {step_ms:>15}")
    for row in rows:
        for count, where in row.get("host_waits", []):
            print(f"host wait x{count:<4} {row['phase']}: {where}")
    for row in rows:
        print(f"\n== {row['phase']}: top operators ({row['ops_file']})\n{row.pop('ops_table')}")
    (out / "profile_step.json").write_text(json.dumps({"setting": setting, "phases": rows}, indent=2))
    for worker in workers:
        worker.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
