"""Teacher scoring of context-distillation batches with and without running the shared context once.

    python benchmarks/teacher_shared_prefix.py --out results/teacher_shared_prefix               # one GPU, Qwen3-0.6B shape
    python benchmarks/teacher_shared_prefix.py --device cpu --model smollm2-135m-instruct --samples 32 \
        --context-len 190 --prompt-len 40 --response-len 16 --teacher-batch 8 --out /tmp/tsp    # the facts demo's shape
    python benchmarks/teacher_shared_prefix.py --device cpu --shape tiny --samples 4 --context-len 24 \
        --prompt-len 4 --response-len 4 --teacher-batch 2 --out /tmp/tsp                        # CPU smoke

A context-distillation teacher reads ``context + prompt + response`` for every sample, and the context
is the same for all of them. One frozen teacher ``PolicyWorker`` (one rank, no Ray) scores one batch of
``samples`` rows of ``context_len`` shared random tokens followed by ``prompt_len + response_len``
random tokens of each row's own, twice: with ``teacher.logprob_shared_prefix_min_tokens=0`` (every row's
full sequence) and with it at 1 (the context runs once per micro-batch, the rest against its repeated
KV cache; ``head_scoring.score_with_shared_prefix``). Each mode is warmed up once, then timed.
Prints a table and writes ``<out>/teacher_shared_prefix.json``: seconds, tokens/s (all
``samples x (context + prompt + response)`` tokens scored), token positions the model computed,
peak memory added (GPU), and the largest difference of the two modes' log-probs. ``--targets-only``
scores as the training loops do: the loss mask covers the response only and ``get_logprobs(...,
targets_only=True)`` may skip the context's and the prompt's rows in the output layer (the difference
is then taken over the response's columns).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from qwen3_shapes import QWEN3_SHAPES, build_qwen3_shaped  # noqa: E402
from single_rank import single_rank_env  # noqa: E402

from nemo_distill.data.batch import TokenBatch  # noqa: E402
from nemo_distill.models.policy.config import DTensorConfig, TeacherConfig  # noqa: E402


def context_batch(samples: int, context_len: int, own_len: int, vocab_size: int, seed: int = 0,
                  response_len: int | None = None) -> TokenBatch:
    """``[samples, context_len + own_len]`` random ids whose first ``context_len`` are the same in every row;
    the loss mask covers every token, or the last ``response_len`` when given."""
    generator = torch.Generator().manual_seed(seed)
    context = torch.randint(0, vocab_size, (1, context_len), generator=generator)
    own = torch.randint(0, vocab_size, (samples, own_len), generator=generator)
    input_ids = torch.cat([context.expand(samples, -1), own], dim=1)
    attention_mask = torch.ones_like(input_ids)
    loss_mask = attention_mask.clone()
    if response_len is not None:
        loss_mask[:, : input_ids.shape[1] - response_len] = 0
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=torch.ones(samples))


def time_scoring(worker, batch: TokenBatch, repeats: int, targets_only: bool = False) -> tuple[torch.Tensor, float, float | None, int]:
    """``(log-probs, seconds per call, peak GiB added or None, token positions per call)`` after one warm-up call."""
    cuda = worker.device.type == "cuda"
    embed = worker.model.get_input_embeddings()
    worker.get_logprobs(batch, targets_only=targets_only)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else 0
    positions: list[int] = []
    hook = embed.register_forward_hook(lambda module, args, output: positions.append(args[0].numel()))
    started = time.perf_counter()
    try:
        for _ in range(repeats):
            logprobs = worker.get_logprobs(batch, targets_only=targets_only)
        if cuda:
            torch.cuda.synchronize()
    finally:
        hook.remove()
    seconds = (time.perf_counter() - started) / repeats
    peak = (torch.cuda.max_memory_allocated() - before) / 2**30 if cuda else None
    return logprobs, seconds, peak, sum(positions) // repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shape", default="qwen3-0.6b", choices=sorted(QWEN3_SHAPES), help="random Qwen3-shaped teacher")
    parser.add_argument("--model", default=None, help="score with this model instead (HF folder or smollm2-135m-instruct)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--context-len", type=int, default=1024, help="tokens every row shares")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=256)
    parser.add_argument("--teacher-batch", type=int, default=16, help="teacher.logprob_batch_size")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per mode (after one warm-up)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for the random model (default: the embedded one)")
    parser.add_argument("--targets-only", action="store_true",
                        help="loss mask on the response only, scored with targets_only=True as the loops do")
    parser.add_argument("--out", default="results/teacher_shared_prefix")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible; use --device cpu")
    if args.context_len < 1 or args.prompt_len + args.response_len < 1:
        raise SystemExit("--context-len must be >= 1 and --prompt-len + --response-len >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = args.model or build_qwen3_shaped(str(out / "models" / "teacher"), args.shape, seed=1, tokenizer_source=args.tokenizer)
    for key, value in single_rank_env().items():
        os.environ.setdefault(key, value)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from nemo_distill.models.policy.worker import PolicyWorker

    seq_len = args.context_len + args.prompt_len + args.response_len
    cfg = TeacherConfig(model_name=model, precision=args.precision, max_total_sequence_length=seq_len,
                        logprob_batch_size=args.teacher_batch, dtensor_cfg=DTensorConfig(enabled=False))
    teacher = PolicyWorker(cfg, trainable=False)
    vocab_size = int(teacher.model.get_input_embeddings().weight.shape[0])
    batch = context_batch(args.samples, args.context_len, args.prompt_len + args.response_len, vocab_size,
                          response_len=args.response_len if args.targets_only else None)
    rows, scores = [], {}
    for mode, min_tokens in (("full", 0), ("shared_prefix", 1)):
        cfg.logprob_shared_prefix_min_tokens = min_tokens
        scores[mode], seconds, peak, positions = time_scoring(teacher, batch, args.repeats, args.targets_only)
        rows.append({"mode": mode, "seconds": seconds, "tokens_per_sec": args.samples * seq_len / seconds,
                     "positions_computed": positions, "peak_added_gib": peak})
    compared = batch.loss_mask.bool()  # every column, or the response's with --targets-only
    max_diff = float((scores["full"] - scores["shared_prefix"])[compared].abs().max())
    setting = {"device": torch.cuda.get_device_name() if teacher.device.type == "cuda" else "cpu",
               "model": args.model or f"random {args.shape}", "precision": str(teacher.compute_dtype).replace("torch.", ""),
               "batch": f"{args.samples} x ({args.context_len} shared + {args.prompt_len} + {args.response_len}) tokens",
               "teacher_batch": args.teacher_batch, "repeats": args.repeats, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "targets_only": args.targets_only,
               "tokens_counted": "all tokens of the batch (context included)"}
    print(f"setting: {json.dumps(setting)}")
    print(f"{'mode':14} {'seconds':>8} {'tokens/s':>10} {'positions':>10} {'peak +GiB':>10}")
    for row in rows:
        peak = "-" if row["peak_added_gib"] is None else f"{row['peak_added_gib']:.2f}"
        print(f"{row['mode']:14} {row['seconds']:8.3f} {row['tokens_per_sec']:10.0f} {row['positions_computed']:10d} {peak:>10}")
    speedup = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"speed-up {speedup:.2f}x; largest log-prob difference between the modes {max_diff:.2e}")
    report = {"setting": setting, "modes": rows, "speedup": speedup, "max_abs_logprob_diff": max_diff}
    (out / "teacher_shared_prefix.json").write_text(json.dumps(report, indent=2))
    teacher.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
