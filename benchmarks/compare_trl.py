"""Step time and peak memory: TRL's ``DistillationTrainer`` against our distillation step, same model, batch and GPU.

    python benchmarks/compare_trl.py --steps 5 --tokenizer <dir>           # one GPU, Qwen3-0.6B shapes
    python benchmarks/compare_trl.py --device cpu --shape tiny --steps 2 \\
        --prompts 4 --micro-batch 2 --max-new-tokens 8                      # the CI smoke run

Both sides get the same random-init Qwen3-shaped student and teacher (``qwen3_shapes.py``), the
same number of prompts per optimizer step (``--prompts`` x 1 sample), the same micro-batch and the
same number of new tokens, one after the other in child processes of this one, on the same GPU:

* ours: ``examples/run_distillation.py`` with ``my-distillation-1n4g.yaml`` on one GPU (colocated),
  reverse KL on the teacher's top-k, bf16 compute (``distillation_gpu.run_case``);
* TRL (1.16: ``from trl import DistillationTrainer, DistillationConfig``): ``beta=1.0`` (reverse
  KL over the full vocabulary), fully on-policy HF generation, bf16, gradient checkpointing (its
  default), ``per_device_train_batch_size=--micro-batch``, ``gradient_accumulation_steps=prompts /
  micro-batch`` (so one generation batch = one optimizer step = ``--prompts`` prompts). Its prompts
  are ``--prompt-len`` random words of a word-level tokenizer that names every id of the 151936-row
  vocabulary, so whatever the random model samples decodes.

Prints both sides' per-step seconds (median of the steps after the first), the ratio TRL / ours,
and each side's peak GPU memory (TRL: one process holds everything; ours: per role and summed);
writes ``<out>/compare_trl.json``. Exits 1 when a side that should run fails. TRL is not a library
dependency: without it (``import trl`` fails) only our side runs, unless ``--require-trl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from distillation_gpu import run_case  # noqa: E402
from qwen3_shapes import QWEN3_VOCAB, build_qwen3_shaped  # noqa: E402

RECIPE = "my-distillation-1n4g.yaml"


def trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ TRL side (runs in a child process)
def word_level_tokenizer(out_dir: Path, vocab_size: int, *, eos_id: int, pad_id: int):
    """A fast tokenizer whose word ``w<i>`` is token ``i`` for every ``i < vocab_size``; saved to ``out_dir``.

    The special ids are spelled ``<eos>`` / ``<pad>``, not ``w<i>``: a special token is matched inside
    words, so an eos spelled ``w2`` split ``w25247`` into ``w2`` + an unknown piece (prompts of uneven
    length, then left padding; TRL's step-1 gradients were NaN with it).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = {eos_id: "<eos>", pad_id: "<pad>"} if pad_id != eos_id else {eos_id: "<eos>"}
    vocab = {special.get(i, f"w{i}"): i for i in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab, unk_token=special[pad_id]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=special[eos_id], pad_token=special[pad_id],
                                        unk_token=special[pad_id])
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def run_trl(args: argparse.Namespace) -> dict:
    """Train TRL's DistillationTrainer for ``args.steps`` optimizer steps; per-step seconds and peak memory."""
    import random

    import torch
    from datasets import Dataset
    from transformers import AutoConfig, TrainerCallback
    from trl import DistillationConfig, DistillationTrainer

    cuda = args.device == "cuda"
    if args.trl_kernels == "torch":
        # TRL picks its Triton tiles for the chunked divergence on CUDA and its torch tiles elsewhere;
        # this makes it take the torch tiles on CUDA too, to rule its kernel in or out when its numbers
        # look wrong (the NaN of docs/performance.md showed with both; the cause was our tokenizer).
        import trl.kernels.chunked_logprob as trl_tiles

        trl_tiles._TRITON_AVAILABLE = False
    config = AutoConfig.from_pretrained(args.student)
    eos_id = config.eos_token_id if isinstance(config.eos_token_id, int) else config.eos_token_id[0]
    pad_id = config.pad_token_id if config.pad_token_id is not None else eos_id
    out = Path(args.trl_out)
    tokenizer = word_level_tokenizer(out / "tokenizer", config.vocab_size, eos_id=eos_id, pad_id=pad_id)
    rng = random.Random(0)
    forbidden = {eos_id, pad_id}
    words = [i for i in range(min(config.vocab_size, 49152)) if i not in forbidden]
    prompts = [" ".join(f"w{rng.choice(words)}" for _ in range(args.prompt_len)) for _ in range(args.prompts * args.steps)]
    if args.prompts % args.micro_batch:
        raise SystemExit(f"--prompts {args.prompts} must be a multiple of --micro-batch {args.micro_batch}")
    # TRL takes the torch attribute name. auto: bf16 weights on CUDA (as the issue measured TRL), fp32 on CPU;
    # float32 on CUDA keeps fp32 weights and computes under bf16 autocast (our trainer's precision).
    dtype = args.trl_dtype if args.trl_dtype != "auto" else ("bfloat16" if cuda else "float32")
    trl_args = DistillationConfig(
        output_dir=str(out / "trainer"), per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.prompts // args.micro_batch, max_steps=args.steps, max_completion_length=args.max_new_tokens,
        beta=1.0, temperature=1.0, learning_rate=1e-6, bf16=cuda or dtype == "bfloat16", use_cpu=not cuda, gradient_checkpointing=True,
        logging_steps=1, report_to="none", save_strategy="no", seed=0, shuffle_dataset=False,
        model_init_kwargs={"dtype": dtype}, teacher_model_init_kwargs={"dtype": dtype}, dataloader_num_workers=0,
    )
    steps: list[float] = []
    grad_norms: list[float] = []  # TRL's logged gradient norm per step (a NaN makes its timings meaningless)

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            steps.append(time.perf_counter() - self.started)

        def on_log(self, *_, logs=None, **__):
            if logs and "grad_norm" in logs:
                grad_norms.append(float(logs["grad_norm"]))

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = DistillationTrainer(model=args.student, teacher_model=args.teacher, args=trl_args,
                                  train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
                                  callbacks=[StepTimer()])
    trainer.train()
    if len(steps) != args.steps:
        raise RuntimeError(f"TRL ran {len(steps)} optimizer steps, expected {args.steps}")
    import trl

    return {"side": "trl", "trl_version": trl.__version__, "step_s": steps, "kernels": args.trl_kernels, "dtype": dtype, "grad_norm": grad_norms,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "prompt_tokens": args.prompt_len, "loss_type": "reverse KL (beta=1), full vocabulary"}


# ------------------------------------------------------------------ our side
def run_ours(args: argparse.Namespace, student: str, teacher: str, out: Path) -> dict:
    placement = (["cluster.gpus_per_node=1"] if args.device == "cuda" else
                 ["cluster.gpus_per_node=0", "cluster.cpu_slots_per_node=1", "policy.generation.hf_static_cache=false"])
    m = args.micro_batch
    overrides = [*placement, f"policy.model_name={student}", f"teacher.model_name={teacher}",
                 f"policy.generation.max_new_tokens={args.max_new_tokens}", "policy.max_total_sequence_length=768",
                 "teacher.max_total_sequence_length=768", "data.max_input_seq_length=256",
                 f"distillation.num_prompts_per_step={args.prompts}", "distillation.num_generations_per_prompt=1",
                 f"policy.train_micro_batch_size={m}", f"policy.logprob_batch_size={m}", f"teacher.logprob_batch_size={2 * m}",
                 f"policy.generation.max_batch_size={args.prompts}", "~policy.tokenizer.chat_template_kwargs",
                 "env.math.use_math_verify=false", *args.ours_override]
    result = run_case("ours", RECIPE, overrides, out, args.steps)
    if "error" in result:
        return {"side": "ours", **result}
    rows = [json.loads(line) for line in (out / "ours" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    memory = {key: value for key, value in result.items() if key.startswith("memory/")}
    return {"side": "ours", "step_s": [row["timing/train/total_step_time"] for row in rows],
            "peak_gib_per_role": memory, "peak_gib": sum(memory.values()) if memory else None, "summary": result}


def steady(step_s: list[float]) -> float:
    """Median of the steps after the first (warm-up, compilation); the only step when there is one."""
    return statistics.median(step_s[1:] or step_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shape", default="qwen3-0.6b", help="a key of qwen3_shapes.QWEN3_SHAPES (tiny: CPU smoke)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=64, help="prompts per optimizer step (1 sample each)")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=128, help="TRL prompts' length in tokens")
    parser.add_argument("--out", default="results/compare_trl")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder for our models (default: the embedded SmolLM2 one)")
    parser.add_argument("--skip", choices=["ours", "trl"], default=None, help="run only the other side")
    parser.add_argument("--require-trl", action="store_true", help="fail instead of skipping TRL when it is not importable")
    parser.add_argument("--ours-override", nargs="*", default=[], help="extra config overrides for our side (KEY=VALUE)")
    parser.add_argument("--trl-dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="TRL's weights: auto (bf16 on CUDA, fp32 on CPU); float32 on CUDA trains under bf16 autocast")
    parser.add_argument("--trl-kernels", choices=["auto", "torch"], default="auto",
                        help="TRL's chunked-divergence tiles: auto (Triton on CUDA) or torch (its CPU path, on any device)")
    # internal: the TRL child process
    parser.add_argument("--trl-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--student", help=argparse.SUPPRESS)
    parser.add_argument("--teacher", help=argparse.SUPPRESS)
    parser.add_argument("--trl-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_child:
        print("TRL_RESULT " + json.dumps(run_trl(args)), flush=True)
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    student = build_qwen3_shaped(str(out / "models" / "student"), args.shape, seed=0, tokenizer_source=args.tokenizer)
    teacher = build_qwen3_shaped(str(out / "models" / "teacher"), args.shape, seed=1, tokenizer_source=args.tokenizer)
    report: dict = {"device": args.device, "shape": args.shape, "vocab": QWEN3_VOCAB, "steps": args.steps, "prompts": args.prompts,
                    "samples_per_prompt": 1, "micro_batch": args.micro_batch, "max_new_tokens": args.max_new_tokens,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    failed = []
    if args.skip != "ours":
        report["ours"] = run_ours(args, student, teacher, out)
        failed += ["ours"] if "error" in report["ours"] else []
        (out / "compare_trl.json").write_text(json.dumps(report, indent=2))
    want_trl = args.skip != "trl"
    if want_trl and not trl_available():
        if args.require_trl:
            raise SystemExit("--require-trl: `import trl` fails; install trl==1.16.0 (see benchmarks/README.md)")
        print("TRL is not importable: running our side only", flush=True)
        report["trl"] = {"side": "trl", "skipped": "trl not importable"}
        want_trl = False
    if want_trl:
        command = [sys.executable, __file__, "--trl-child", "--device", args.device, "--steps", str(args.steps),
                   "--prompts", str(args.prompts), "--micro-batch", str(args.micro_batch), "--max-new-tokens", str(args.max_new_tokens),
                   "--prompt-len", str(args.prompt_len), "--trl-kernels", args.trl_kernels, "--trl-dtype", args.trl_dtype, "--student", student, "--teacher", teacher, "--trl-out", str(out / "trl")]
        child = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        (out / "trl.log").write_text(child.stdout[-20000:] + child.stderr[-20000:])
        lines = [line for line in child.stdout.splitlines() if line.startswith("TRL_RESULT ")]
        if child.returncode != 0 or not lines:
            report["trl"] = {"side": "trl", "error": (child.stdout + child.stderr)[-2500:],
                             # TRL logs a NaN gradient norm, then samples from NaN weights (a device assert)
                             "nan_grad_norm_logged": "'grad_norm': 'nan'" in child.stdout + child.stderr}
            failed.append("trl")
        else:
            report["trl"] = json.loads(lines[-1].removeprefix("TRL_RESULT "))
    ours, trl = report.get("ours", {}), report.get("trl", {})
    for side in (ours, trl):
        if side.get("step_s"):
            side["steady_step_s"] = round(steady(side["step_s"]), 3)
    if ours.get("steady_step_s") and trl.get("steady_step_s"):
        report["trl_over_ours_step_time"] = round(trl["steady_step_s"] / ours["steady_step_s"], 3)
        if ours.get("peak_gib") and trl.get("peak_gib"):
            report["ours_over_trl_peak_memory"] = round(ours["peak_gib"] / trl["peak_gib"], 3)
    (out / "compare_trl.json").write_text(json.dumps(report, indent=2))

    print(f"{'side':<6} | steady step s | steps s | peak GiB")
    for name, side in (("ours", ours), ("trl", trl)):
        if not side:
            continue
        if "error" in side or "skipped" in side:
            print(f"{name:<6} | {side.get('skipped') or 'FAILED: ' + repr(side['error'][-300:])}")
            continue
        steps = ", ".join(f"{s:.2f}" for s in side["step_s"])
        print(f"{name:<6} | {side['steady_step_s']:.3f} | {steps} | {side.get('peak_gib')}"
              + (f" (per role: {side['peak_gib_per_role']})" if side.get("peak_gib_per_role") else ""))
    if "trl_over_ours_step_time" in report:
        print(f"TRL step / our step = {report['trl_over_ours_step_time']}x"
              + (f"; our peak (roles summed) / TRL peak = {report['ours_over_trl_peak_memory']}x" if "ours_over_trl_peak_memory" in report else ""))
    print(f"wrote {out / 'compare_trl.json'}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
