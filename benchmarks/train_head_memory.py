"""CPU peak memory and step time of one training micro-batch with ``policy.train_head_chunk_rows`` off vs on.

    python benchmarks/train_head_memory.py --out /tmp/train_head            # vocab 151936, 4 x 256, fp32
    python benchmarks/train_head_memory.py --rows 0 32 128 --losses sft --vocab 32768

A tiny Qwen3 (hidden 64, 2 layers, untied head) with a large vocabulary, so the output layer
dominates the memory of a step, as it does for Qwen3-0.6B (V = 151936, H = 1024) at long micro-batches.
Each (loss, rows) setting runs in a fresh process (one CPU rank, gloo, FSDP2, fp32): a small warm-up
micro-batch initialises everything, then the peak is ``ru_maxrss`` after forward+backward of one
``micro_batch x seq_len`` micro-batch minus the high-water mark before it (glibc is told to mmap
every block over 64 KiB, so freed tensors leave the resident set and the mark tracks live memory).
Step time: the median of 3 full ``train()`` steps (forward, backward, AdamW) of the same batch, wall
seconds and this process's CPU seconds (all threads; less sensitive to other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from single_rank import single_rank_env  # noqa: E402


def _batch(loss: str, size: int, seq_len: int, vocab: int):
    from nemo_distill.algorithms.distillation_loss import TEACHER_TOPK_INDICES, TEACHER_TOPK_LOGITS, TopkDistillationLoss
    from nemo_distill.algorithms.grpo_loss import ADVANTAGES, OLD_LOGPROBS, GRPOLoss
    from nemo_distill.algorithms.sft import SFTLoss
    from nemo_distill.data.batch import TokenBatch

    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (size, seq_len), generator=generator)
    attention_mask = torch.ones(size, seq_len, dtype=torch.long)
    loss_mask = attention_mask.clone()
    loss_mask[:, : seq_len // 8] = 0  # the "prompt"
    plain = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=torch.ones(size))
    if loss == "sft":
        return plain, SFTLoss()
    if loss == "grpo":
        # Random old log-probs near log(1/V): scoring them with get_logprobs would set the high-water mark first.
        old = -torch.log(torch.tensor(float(vocab))) + 0.1 * torch.randn(size, seq_len, generator=generator)
        extras = {ADVANTAGES: torch.randn(size, generator=generator), OLD_LOGPROBS: old}
        return TokenBatch(input_ids, attention_mask, loss_mask, plain.sample_mask, extras), GRPOLoss(loss_type="grpo")
    values, indices = torch.randn(size, seq_len, 64, generator=generator).sort(dim=-1, descending=True).values, \
        torch.randint(0, vocab, (size, seq_len, 64), generator=generator)
    extras = {TEACHER_TOPK_LOGITS: values, TEACHER_TOPK_INDICES: indices}
    return TokenBatch(input_ids, attention_mask, loss_mask, plain.sample_mask, extras), TopkDistillationLoss(kl_type="forward")


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(model_dir: str, loss: str, rows: int, size: int, seq_len: int) -> dict:
    """One setting, in this process: peak MiB added by one micro-batch's forward+backward, and step seconds."""
    os.environ.update(single_rank_env())
    from nemo_distill.models.policy.config import OptimizerConfig, PolicyConfig
    from nemo_distill.models.policy.worker import PolicyWorker

    cfg = PolicyConfig(model_name=model_dir, precision="float32", train_global_batch_size=size, train_micro_batch_size=size,
                       train_head_chunk_rows=rows, optimizer=OptimizerConfig(lr=1e-5))
    worker = PolicyWorker(cfg)
    vocab = int(worker.model.config.vocab_size)
    warm, warm_loss = _batch(loss, size, 16, vocab)
    worker.train(warm, warm_loss)  # allocates gradients and AdamW moments; the mark is now small
    batch, loss_fn = _batch(loss, size, seq_len, vocab)
    worker.optimizer.zero_grad(set_to_none=False)  # keep the gradient buffers: they are not the step's peak
    before = _max_rss_mib()
    loss_sum, _, _ = worker._accumulate_gradients(batch, loss_fn)
    peak_added = _max_rss_mib() - before
    times, cpu_times = [], []
    for _ in range(3):
        started, cpu_started = time.perf_counter(), time.process_time()
        worker.train(batch, loss_fn)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    worker.shutdown()
    return {"loss": loss, "rows": rows, "peak_added_mib": round(peak_added, 1), "step_seconds": round(statistics.median(times), 3),
            "step_cpu_seconds": round(statistics.median(cpu_times), 3),
            "loss_value": loss_sum, "windowed": bool(rows) and worker.chunked_head}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 32, 128], help="policy.train_head_chunk_rows values (0: off)")
    parser.add_argument("--losses", nargs="+", default=["sft", "grpo", "distill"], choices=["sft", "grpo", "distill"])
    parser.add_argument("--out", default="results/train_head_memory")
    parser.add_argument("--one", nargs=3, metavar=("MODEL_DIR", "LOSS", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        model_dir, loss, rows = args.one
        print(json.dumps(measure(model_dir, loss, int(rows), args.micro_batch, args.seq_len)))
        return 0
    from nemo_distill.models.tiny import build_tiny_model

    out = Path(args.out)
    model_dir = str(out / "model")
    if not (out / "model" / "config.json").exists():
        build_tiny_model(model_dir, arch="qwen3", vocab_size=args.vocab, seed=0)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "CUDA_VISIBLE_DEVICES": ""}
    results = []
    for loss in args.losses:
        for rows in args.rows:
            command = [sys.executable, __file__, "--one", model_dir, loss, str(rows), "--micro-batch", str(args.micro_batch),
                       "--seq-len", str(args.seq_len)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    setting = {"vocab": args.vocab, "hidden": 64, "layers": 2, "micro_batch": f"{args.micro_batch} x {args.seq_len}",
               "precision": "float32", "device": "cpu", "threads": torch.get_num_threads()}
    print(f"setting: {json.dumps(setting)}")
    print(f"{'loss':8} {'rows':>5} {'peak +MiB':>10} {'step s':>7} {'step CPU s':>10}")
    for row in results:
        print(f"{row['loss']:8} {row['rows'] or 'off':>5} {row['peak_added_mib']:10.0f} {row['step_seconds']:7.2f} "
              f"{row['step_cpu_seconds']:10.2f}")
    (out / "train_head_memory.json").write_text(json.dumps({"setting": setting, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
