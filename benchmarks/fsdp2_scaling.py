"""FSDP2 data-parallel scaling of the policy train step, and tensor-parallel correctness (Qwen3-shaped random model).

    python benchmarks/fsdp2_scaling.py --gpus 1 2 4 --tp --tokenizer DIR --out results/bench_fsdp2

For each GPU count N, N processes (torch.multiprocessing, NCCL) build a ``PolicyWorker`` and run a
warm-up and ``--steps`` timed optimizer steps on the same global batch; with ``--tp`` also TP=N
for each N > 1. Before training, every run scores the first two sequences: the largest
|log-prob difference| against the 1-GPU TP=1 run is the correctness column (same precision on
both sides; bf16 by default on GPU, so expect ~1e-2, and ~1e-5 with ``--precision float32``).
Prints a table (step time, tokens/s, peak memory per GPU) and writes ``fsdp2_scaling.json``.
``--device cpu --shape tiny`` runs the same code on gloo (the CI smoke test).
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

from single_rank import free_port  # noqa: E402

SCORED_SEQUENCES = 2


@dataclass
class NextTokenLoss:
    """Cross-entropy on target tokens, normalised by the global token count."""

    def __call__(self, logits, batch, *, counts):
        from nemo_distill.algorithms.loss_functions import nll_loss

        rows = batch.valid_target_tokens()[:, 1:]
        return nll_loss(logits[:, :-1], batch.input_ids[:, 1:], rows, normalizer=counts.tokens), {}


def _rank_main(rank: int, world: int, tp: int, args: argparse.Namespace, model_dir: str, port: int, queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    on_gpu = args.device == "cuda"
    if on_gpu:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)
    from nemo_distill.data.batch import TokenBatch
    from nemo_distill.models.policy.config import DTensorConfig, PolicyConfig
    from nemo_distill.models.policy.worker import PolicyWorker

    cfg = PolicyConfig(model_name=model_dir, precision=args.precision, train_global_batch_size=args.global_batch,
                       train_micro_batch_size=min(4, args.global_batch), dtensor_cfg=DTensorConfig(tensor_parallel_size=tp))
    worker = PolicyWorker(cfg)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (args.global_batch, args.seq_len), generator=generator)
    batch = TokenBatch(ids, torch.ones_like(ids), torch.ones(args.global_batch, args.seq_len), torch.ones(args.global_batch))
    info = worker.get_rank_info()
    shard = batch.shard(info.dp_size)[info.dp_rank]
    scored = batch.shard(args.global_batch // SCORED_SEQUENCES)[0]  # the first sequences, on every rank
    logprobs = worker.get_logprobs(scored)
    worker.train(shard, NextTokenLoss())  # warm-up
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    losses = [worker.train(shard, NextTokenLoss()).loss for _ in range(args.steps)]
    if on_gpu:
        torch.cuda.synchronize()
    step_time = (time.perf_counter() - started) / args.steps
    if rank == 0:
        queue.put({"gpus": world, "tp": tp, "step_time_s": round(step_time, 3),
                   "tokens_per_s": round(args.global_batch * args.seq_len / step_time),
                   "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
                   "losses": losses, "logprobs": logprobs.tolist()})
        queue.close()
        queue.join_thread()  # the result is flushed to the parent before this process leaves
    worker.shutdown()
    os._exit(0)  # skip C++ static destructors: a gloo thread alive at exit can abort a finished run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="world sizes to run (processes on CPU)")
    parser.add_argument("--tp", action="store_true", help="also run tensor parallel TP=N for each N > 1")
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--shape", default="qwen3-0.6b", help="a key of qwen3_shapes.QWEN3_SHAPES")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded SmolLM2 one)")
    parser.add_argument("--out", default="results/bench_fsdp2")
    args = parser.parse_args()
    if args.global_batch % SCORED_SEQUENCES or any(args.global_batch % n for n in args.gpus):
        parser.error(f"--global-batch {args.global_batch} must be a multiple of {SCORED_SEQUENCES} and of every --gpus value")
    from qwen3_shapes import build_qwen3_shaped

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = build_qwen3_shaped(str(out / args.shape), args.shape, tokenizer_source=args.tokenizer)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # workers pick their device from what they see
    context = mp.get_context("spawn")
    results = []
    runs = [(n, 1) for n in args.gpus] + ([(n, n) for n in args.gpus if n > 1] if args.tp else [])
    for world, tp in runs:
        queue = context.Queue()
        mp.start_processes(_rank_main, args=(world, tp, args, model_dir, free_port(), queue), nprocs=world, join=True,
                           start_method="spawn")
        results.append(queue.get())
    reference = next((r for r in results if r["gpus"] == 1 and r["tp"] == 1), None)
    print("gpus | tp | step_time_s | tokens_per_s | peak_memory_gib | speedup_vs_1gpu | max_logprob_diff_vs_1gpu")
    for r in results:
        r["speedup_vs_1gpu"] = round(reference["step_time_s"] / r["step_time_s"], 2) if reference else None
        r["max_logprob_diff_vs_1gpu"] = (
            float((torch.tensor(r["logprobs"]) - torch.tensor(reference["logprobs"])).abs().max()) if reference else None
        )
        print(f"{r['gpus']} | {r['tp']} | {r['step_time_s']} | {r['tokens_per_s']} | {r['peak_memory_gib']} | "
              f"{r['speedup_vs_1gpu']} | {r['max_logprob_diff_vs_1gpu']}")
    (out / "fsdp2_scaling.json").write_text(json.dumps(
        {"args": vars(args), "results": [{k: v for k, v in r.items() if k != "logprobs"} for r in results]}, indent=2))


if __name__ == "__main__":
    main()
