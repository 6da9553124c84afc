"""FSDP2 data-parallel scaling of the policy train step (Qwen3-0.6B-shaped random model).

    python benchmarks/fsdp2_scaling.py --gpus 1 2 --global-batch 16 --seq-len 1024

For each GPU count N, N processes (torch.multiprocessing, NCCL) build a ``PolicyWorker`` and run
warm-up + timed optimizer steps on the same global batch; also TP=N when ``--tp`` is given.
Prints a table (step time, tokens/s, peak memory per GPU) and writes ``fsdp2_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


@dataclass
class NextTokenLoss:
    """Cross-entropy on target tokens, normalised by the global token count."""

    def __call__(self, logits, batch, *, global_valid_tokens):
        from nemo_distill.algorithms.loss_functions import nll_loss

        rows = batch.valid_target_tokens()[:, 1:]
        return nll_loss(logits[:, :-1], batch.input_ids[:, 1:], rows, normalizer=global_valid_tokens), {}


def _rank_main(rank: int, world: int, tp: int, model_dir: str, global_batch: int, seq_len: int, steps: int, port: int, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    from nemo_distill.data.batch import TokenBatch
    from nemo_distill.models.policy.config import DTensorConfig, PolicyConfig
    from nemo_distill.models.policy.worker import PolicyWorker

    cfg = PolicyConfig(model_name=model_dir, train_micro_batch_size=4, dtensor_cfg=DTensorConfig(tensor_parallel_size=tp))
    worker = PolicyWorker(cfg)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (global_batch, seq_len), generator=generator)
    batch = TokenBatch(ids, torch.ones_like(ids), torch.ones(global_batch, seq_len), torch.ones(global_batch))
    shard = batch.shard(worker.dp_size)[worker.dp_rank]
    worker.train(shard, NextTokenLoss())  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    losses = [worker.train(shard, NextTokenLoss()).loss for _ in range(steps)]
    torch.cuda.synchronize()
    step_time = (time.perf_counter() - started) / steps
    if rank == 0:
        queue.put({"gpus": world, "tp": tp, "step_time_s": round(step_time, 3), "tokens_per_s": round(global_batch * seq_len / step_time),
                   "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "losses": losses})
    torch.distributed.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tp", action="store_true", help="also run tensor parallel TP=N for each N > 1")
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="results/bench_fsdp2")
    args = parser.parse_args()
    from qwen3_shapes import build_qwen3_shaped

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = build_qwen3_shaped(str(out / "qwen3-0.6b"), "qwen3-0.6b")
    context = mp.get_context("spawn")
    results = []
    runs = [(n, 1) for n in args.gpus] + ([(n, n) for n in args.gpus if n > 1] if args.tp else [])
    for index, (world, tp) in enumerate(runs):
        queue = context.Queue()
        mp.start_processes(_rank_main, args=(world, tp, model_dir, args.global_batch, args.seq_len, args.steps, 29600 + index, queue),
                           nprocs=world, join=True, start_method="spawn")
        results.append(queue.get())
    print("gpus | tp | step_time_s | tokens_per_s | peak_memory_gib | speedup_vs_1gpu")
    base = next((r["step_time_s"] for r in results if r["gpus"] == 1 and r["tp"] == 1), None)
    for r in results:
        speedup = round(base / r["step_time_s"], 2) if base else None
        print(f"{r['gpus']} | {r['tp']} | {r['step_time_s']} | {r['tokens_per_s']} | {r['peak_memory_gib']} | {speedup}")
    (out / "fsdp2_scaling.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
