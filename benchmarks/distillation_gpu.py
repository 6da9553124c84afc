"""Per-phase step time and peak memory of distillation with Qwen3-shaped random models on GPUs.

    python benchmarks/distillation_gpu.py --gpus 4 --steps 5 --out results/bench_distillation

Runs the recipes my-distillation-1n4g and my-context-self-distillation-1n4g with Qwen3-0.6B-shaped
random student and teacher, colocated (every role on every GPU, time-shared) and, with 2+ GPUs,
split (generation on GPU 0, teacher on GPU 1, trainer on the rest). Prints a table and writes ``<out>/distillation_gpu.json``. Step 1 (warm-up)
is excluded from the means. Per case: seconds and tokens/s of each phase, whole-step tokens/s/GPU
(generated tokens, and all trained tokens), train MFU (6 x params x trained tokens, against the
989 TFLOP/s bf16 dense peak of an H100/H200), peak memory per role and the bytes per token the
teacher's top-k sends to the trainer (definitions: ``step_metrics.py``); a case that fails makes the
script exit 1 after the table. ``--transports auto object_store`` runs every case with each refit
transport (``auto``: CUDA IPC when colocated, NCCL broadcast when split), in the same process.
``--device cpu --shape tiny`` runs the same cases on CPU slots (the CI smoke test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from qwen3_shapes import build_qwen3_shaped  # noqa: E402
from step_metrics import PEAK_BF16_FLOPS, PHASES, count_matmul_parameters, summarize_steps  # noqa: E402


def run_case(name: str, recipe: str, overrides: list[str], out: Path, steps: int) -> dict:
    log_dir = out / name
    command = [sys.executable, str(REPO / "examples" / "run_distillation.py"), "--config", str(REPO / "configs" / "recipes" / "llm" / recipe),
               f"distillation.max_num_steps={steps}", f"logger.log_dir={log_dir}", "logger.exp_numbering=false",
               "logger.tensorboard_enabled=false", "checkpointing.enabled=false", "distillation.val_at_end=false",
               "distillation.val_period=0", *overrides]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    (out / f"{name}.log").write_text(result.stdout[-20000:] + result.stderr[-20000:])
    if result.returncode != 0:
        return {"case": name, "error": (result.stdout + result.stderr)[-2500:]}
    try:
        return summarize_run(name, recipe, log_dir, started)
    except Exception as error:  # a run that logged something unexpected is a failed case, not a crash of the batch
        return {"case": name, "error": f"summarizing {log_dir}: {type(error).__name__}: {error}"}


def summarize_run(name: str, recipe: str, log_dir: Path, started: float) -> dict:
    """The case's row: means over steps 2.. (step 1 when it is the only one) of :func:`summarize_steps`."""
    import yaml

    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    cfg = yaml.safe_load((log_dir / "config.yaml").read_text())
    cluster, loop = cfg["cluster"], cfg["distillation"]
    total_gpus = cluster["num_nodes"] * (cluster["gpus_per_node"] or cluster["cpu_slots_per_node"])
    trainer_gpus = total_gpus if cluster["colocated"] else len(cluster["trainer_gpu_ids"])
    timed = rows[1:] or rows
    summary = {"case": name, "recipe": recipe, "steps": len(rows), "wall_s": round(time.time() - started, 1),
               "trainer_gpus": trainer_gpus, "total_gpus": total_gpus}
    figures = summarize_steps(timed, samples_per_step=loop["num_prompts_per_step"] * loop["num_generations_per_prompt"],
                              topk_k=loop["topk_logits_k"], trainer_gpus=trainer_gpus, total_gpus=total_gpus,
                              params=count_matmul_parameters(cfg["policy"]["model_name"]))
    summary.update({key: float(f"{value:.5g}") if isinstance(value, float) else value for key, value in figures.items()})
    for key in sorted({k for row in rows for k in row if k.startswith("memory/")}):
        summary[key] = round(max(row.get(key, 0.0) for row in rows), 2)
    summary["loss_first_last"] = [round(rows[0]["train/loss"], 4), round(rows[-1]["train/loss"], 4)]
    return summary


TABLE_COLUMNS = ("case", *[f"{p}_s" for p in PHASES], "generation_tokens_per_s", "teacher_tokens_per_s", "train_tokens_per_s",
                 "step_generated_tokens_per_s_per_gpu", "step_all_tokens_per_s_per_gpu", "train_mfu", "teacher_bytes_per_token")


def print_table(results: list[dict]) -> None:
    """One line per case (columns: :data:`TABLE_COLUMNS`), then its peak memory per role."""
    print(f"train_mfu = 6 x params (all but an untied input embedding) x trained tokens / train s / (trainer GPUs x {PEAK_BF16_FLOPS / 1e12:.0f} TFLOP/s bf16 dense peak); "
          "step_generated = response tokens only, step_all = prompt + response tokens trained")
    print(" | ".join(TABLE_COLUMNS))
    for result in results:
        if "error" in result:
            print(f"{result['case']} | FAILED: {result['error'][-300:]!r}")
            continue
        print(" | ".join(_cell(result.get(column)) for column in TABLE_COLUMNS))
        print("   peak GiB:", {k: v for k, v in result.items() if k.startswith("memory/")}, "loss first/last:", result.get("loss_first_last"))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="results/bench_distillation")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--only", nargs="*", default=None, help="case names to run (default: all)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded SmolLM2 one)")
    parser.add_argument("--transports", nargs="+", default=["auto"], choices=["auto", "object_store", "cuda_ipc", "broadcast"],
                        help="policy.generation.refit_transport values to run every case with (a suffix names non-auto ones)")
    parser.add_argument("--shape", default="qwen3-0.6b", help="student and teacher shape: a key of qwen3_shapes.QWEN3_SHAPES")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: --gpus CPU slots instead of GPUs (a smoke run of the same cases, with --shape tiny)")
    parser.add_argument("--variants", nargs="*", default=[], metavar="SUFFIX:KEY=VALUE[,KEY=VALUE]",
                        help="also run every case with these overrides, named <case>_<SUFFIX>, "
                             "e.g. static:policy.generation.hf_static_cache=true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    student = build_qwen3_shaped(str(out / "models" / "student"), args.shape, seed=0, tokenizer_source=args.tokenizer)
    teacher = build_qwen3_shaped(str(out / "models" / "teacher"), args.shape, seed=1, tokenizer_source=args.tokenizer)
    placement = ([f"cluster.gpus_per_node={args.gpus}"] if args.device == "cuda" else
                 ["cluster.gpus_per_node=0", f"cluster.cpu_slots_per_node={args.gpus}", "policy.generation.hf_static_cache=false"])
    common = [*placement, f"policy.generation.max_new_tokens={args.max_new_tokens}",
              "policy.max_total_sequence_length=512", "data.max_input_seq_length=256",
              "distillation.num_prompts_per_step=8", "distillation.num_generations_per_prompt=4", "policy.train_micro_batch_size=4",
              "policy.logprob_batch_size=8", "teacher.logprob_batch_size=8", "policy.generation.max_batch_size=64",
              "~policy.tokenizer.chat_template_kwargs", "env.math.use_math_verify=false"]
    models = {"my-distillation-1n4g.yaml": [f"policy.model_name={student}", f"teacher.model_name={teacher}"],
              "my-context-self-distillation-1n4g.yaml": [f"policy.model_name={student}", f"teacher.model_name={student}",
                                                          "teacher.max_total_sequence_length=768",  # the context prefix
                                                          "distillation.context_distillation.max_teacher_sequence_length=768"]}
    trainer_ids = ",".join(str(i) for i in range(2, args.gpus)) if args.gpus >= 3 else "1"
    split = ["cluster.colocated=false", "cluster.inference_gpu_ids=[0]", f"cluster.teacher_gpu_ids=[{1 if args.gpus >= 3 else 0}]",
             f"cluster.trainer_gpu_ids=[{trainer_ids}]"]
    cases = []
    for recipe, model_overrides in models.items():
        short = "distill" if recipe.startswith("my-distillation") else "context"
        placements = [("colocated", [])] + ([("split", split)] if args.gpus >= 2 else [])
        for placement, placement_overrides in placements:
            for transport in args.transports:
                suffix = "" if transport == "auto" else f"_{transport}"
                base = model_overrides + placement_overrides + [f"policy.generation.refit_transport={transport}"]
                cases.append((f"{short}_{placement}{suffix}", recipe, base))
                for variant in args.variants:
                    name, _, overrides = variant.partition(":")
                    cases.append((f"{short}_{placement}{suffix}_{name}", recipe, base + overrides.split(",")))
    results = []
    for name, recipe, overrides in cases:
        if args.only and name not in args.only:
            continue
        results.append(run_case(name, recipe, common + overrides, out, args.steps))
        print(json.dumps(results[-1])[:600], flush=True)
        (out / "distillation_gpu.json").write_text(json.dumps({"gpus": args.gpus, "steps": args.steps, "results": results}, indent=2))
    print_table(results)
    if not results or any("error" in result for result in results):
        sys.exit(1)  # fail loudly: a blind batch run must not look like it worked


if __name__ == "__main__":
    main()
