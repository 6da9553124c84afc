"""HF generation with transformers' ``generate`` against our own token loop (``policy.generation.hf_sampler``).

    python benchmarks/generation_samplers.py --tokenizer .tok --out results/generation_samplers       # one GPU
    python benchmarks/generation_samplers.py --device cpu --shape tiny --prompts 4 --prompt-len 8 \
        --new-tokens 8 --repeats 1 --out /tmp/gs                                                  # CPU smoke
    python benchmarks/generation_samplers.py --tokenizer .tok --samplers loop loop_fused --profile --out /tmp/gs

Samplers: ``generate`` and ``loop`` as the config names them; ``loop_repeat_kv``: the loop with
HF's own ``sdpa`` attention, whose keys and values are copied per query head under a mask (what the
loop's grouped decode attention, ``generation/grouped_decode_attention.py``, avoids). The copies
happen only under ``torch.compile`` (the GPU loop): eager HF ``sdpa`` already packs one query token
per group, so on CPU ``loop`` and ``loop_repeat_kv`` run the same attention. ``loop_fused``: the loop
with ``fuse_sampling`` (the per-token sampling compiled into the decode step's graph, one replay per
token); on CPU, where the loop is eager, it runs what ``loop`` runs. ``loop_matmul`` /
``loop_matmul_fused``: the same with ``hf_decode_attention: matmul`` (grouped decode attention as two
matrix products around an fp32 softmax instead of SDPA's kernel).

``--profile``: after the timed calls, one more call per sampler under ``torch.profiler`` (CPU, plus
CUDA on GPU): ``<out>/<sampler>_ops.txt`` holds its top 30 ops by self device time (self CPU time
on CPU; on GPU then also by self CPU time), and the row gains ``profile``: per decode step the
call's wall time, the summed device (kernel) time, the summed self CPU time of its ops and the
host's time blocked in ``cuda*Synchronize`` (profiler overhead included, so only the ratios mean
much). ``device_busy`` (device / wall) near 1 with the host waiting: the GPU is the limit; the
device idle while the host never waits (``host_busy`` near 1): launches and Python are.

One random Qwen3-shaped model (``qwen3_shapes.py``), one ``HFGenerationWorker`` per sampler in this
process (``hf_static_cache=true``, so ``generate`` compiles its decode step too; bf16 on GPU, fp32 on
CPU), ``prompts`` random prompts of ``prompt_len`` tokens, temperature 1, ``new_tokens`` new tokens
each. Per sampler: the first call (compilation included), then ``repeats`` timed calls. Prints a table
and writes ``<out>/generation_samplers.json``: seconds, generated tokens/s (tokens of the responses,
prompts not counted), milliseconds per decode step (seconds / the longest response), and the peak GPU
memory of that sampler's calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from profile_step import generation_runner  # noqa: E402
from qwen3_shapes import QWEN3_SHAPES, QWEN3_VOCAB, build_qwen3_shaped  # noqa: E402

from nemo_distill.models.generation.config import GenerationConfig  # noqa: E402

SAMPLERS = ("generate", "loop", "loop_repeat_kv", "loop_fused", "loop_matmul", "loop_matmul_fused")
# The loop variants the config names: their GenerationConfig fields (the worker builds the sampler from them)
LOOP_CONFIGS = {"loop_fused": {"hf_fused_sampling": True}, "loop_matmul": {"hf_decode_attention": "matmul"},
                "loop_matmul_fused": {"hf_decode_attention": "matmul", "hf_fused_sampling": True}}


def without_grouped_decode_attention(worker) -> None:
    """``loop_repeat_kv`` (no config key: only measured): give the worker a loop sampler on HF's ``sdpa`` attention."""
    from nemo_distill.models.generation.static_decode import StaticCacheSampler

    worker._static_sampler = StaticCacheSampler(worker.model, compile_decode=worker.compiles_own_loop,
                                                grouped_decode_attention=False)


def profile_call(generate, generated: dict, sync, cuda: bool, table_path: Path) -> dict:
    """One ``generate()`` under ``torch.profiler``: writes its op table to ``table_path``; per-decode-step times in ms
    (steps: that call's longest response, from ``generated``)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:  # no shapes, stacks or memory: keep the overhead down
        started = time.perf_counter()
        generate()
        sync()
        wall = time.perf_counter() - started
    events = prof.key_averages()
    # as the table's "Self ... time total" lines: self times (a parent op and its children counted once), device
    # time from the kernel events only (a CPU op's self device time repeats the kernels it launched)
    device_us = sum(event.self_device_time_total for event in events if event.device_type != DeviceType.CPU)
    cpu_us = sum(event.self_cpu_time_total for event in events)
    # the host blocked on the GPU (the loop's "all finished?" checks, the final sync): cuda*Synchronize calls
    wait_us = sum(event.self_cpu_time_total for event in events if event.key.startswith("cuda") and event.key.endswith("Synchronize"))
    by_device = events.table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=30)
    by_cpu = events.table(sort_by="self_cpu_time_total", row_limit=30) if cuda else ""  # the host's side: launches, syncs
    table_path.write_text(by_device + ("\n\nby self CPU time:\n" + by_cpu if by_cpu else ""))
    steps = max(1, generated["longest"])
    per_step = lambda us: us / 1000 / steps  # noqa: E731
    return {"decode_steps": generated["longest"], "wall_ms_per_step": 1000 * wall / steps, "device_ms_per_step": per_step(device_us),
            "cpu_ms_per_step": per_step(cpu_us), "host_wait_ms_per_step": per_step(wait_us),
            "device_busy": device_us / 1e6 / wall if cuda else None, "host_busy": 1 - wait_us / 1e6 / wall,
            "ops_table": table_path.name}


def time_sampler(model_dir: str, sampler: str, prompts: list[list[int]], new_tokens: int, repeats: int, device: torch.device,
                 profile_dir: Path | None = None) -> dict:
    """One worker with ``hf_sampler=sampler``: its first call, then ``repeats`` timed calls; the table's row.

    ``profile_dir``: then one more call under the profiler (:func:`profile_call`), the row's ``profile``."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    config = GenerationConfig(hf_static_cache=True, hf_sampler="generate" if sampler == "generate" else "loop",
                              max_batch_size=len(prompts), temperature=1.0, max_new_tokens=new_tokens, seed=0,
                              **LOOP_CONFIGS.get(sampler, {}))
    generate, generated = generation_runner(model_dir, config, prompts, precision="bfloat16" if cuda else "float32",
                                            prepare=without_grouped_decode_attention if sampler == "loop_repeat_kv" else None)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    started = time.perf_counter()
    generate()
    sync()
    first_call = time.perf_counter() - started
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        generate()
        sync()
        seconds.append(time.perf_counter() - started)
    median = statistics.median(seconds)
    row = {"sampler": sampler, "first_call_s": first_call, "seconds": seconds, "median_s": median, "generated_tokens": generated["tokens"],
           "tokens_per_sec": generated["tokens"] / median, "ms_per_decode_step": 1000 * median / max(1, generated["longest"]),
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    if profile_dir is not None:
        row["profile"] = profile_call(generate, generated, sync, cuda, profile_dir / f"{sampler}_ops.txt")
    del generate  # the worker and its model go with it
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shape", default="qwen3-0.6b", choices=sorted(QWEN3_SHAPES))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per sampler (after the first)")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for the random model (default: the embedded one)")
    parser.add_argument("--profile", action="store_true", help="one more call per sampler under torch.profiler (see above)")
    parser.add_argument("--out", default="results/generation_samplers")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU visible; use --device cpu --shape tiny")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = build_qwen3_shaped(str(out / "models" / "policy"), args.shape, seed=0, tokenizer_source=args.tokenizer)
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, QWEN3_VOCAB, (args.prompts, args.prompt_len), generator=generator).tolist()
    device = torch.device("cuda") if args.device == "cuda" else torch.device("cpu")
    rows = [time_sampler(model_dir, sampler, prompts, args.new_tokens, args.repeats, device, out if args.profile else None)
            for sampler in args.samplers]
    setting = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "shape": args.shape,
               "batch": f"{args.prompts} prompts x {args.prompt_len} tokens, {args.new_tokens} new tokens, temperature 1",
               "torch": torch.__version__, "tokens_counted": "generated tokens (prompts not counted)"}
    print(f"setting: {json.dumps(setting)}")
    print(f"{'sampler':14} {'first call s':>12} {'median s':>9} {'tokens/s':>9} {'ms/step':>8} {'peak GiB':>9}")
    for row in rows:
        peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.2f}"
        print(f"{row['sampler']:14} {row['first_call_s']:12.1f} {row['median_s']:9.3f} {row['tokens_per_sec']:9.0f} "
              f"{row['ms_per_decode_step']:8.2f} {peak:>9}")
    for row in rows:
        if "profile" in row:
            prof = row["profile"]
            print(f"profile {row['sampler']:14} per decode step: wall {prof['wall_ms_per_step']:.3f} ms, device "
                  f"{prof['device_ms_per_step']:.3f} ms, self CPU {prof['cpu_ms_per_step']:.3f} ms, host waiting on the "
                  f"GPU {prof['host_wait_ms_per_step']:.3f} ms -> {out / prof['ops_table']}")
    (out / "generation_samplers.json").write_text(json.dumps({"setting": setting, "samplers": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
