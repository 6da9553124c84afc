"""Phase timings behind configs/noisy_student_smollm2_gpu.yaml, on one GPU, in-process (no Ray).

HF generation of a SmolLM2-135M-shaped RANDOM model (it never stops early, so every sample runs to
max_new_tokens: an upper bound for the real model), SFT- and GRPO-sized train steps, log-probs,
PolicyWorker.reset and a checkpoint save. Run from the repository root:

    python benchmarks/noisy_student_phases.py SMOLLM2_DIR [small]

SMOLLM2_DIR holds SmolLM2-135M-Instruct's config.json, tokenizer files and chat template (e.g.
~/.cache/nemo_distill/models/smollm2-135m-instruct; the weights are not read). ``small`` uses 2
layers and 8 tokens (a CPU smoke run). Writes $OUT/bench.json (default /tmp/out).
Raw H200 result: benchmarks/results/noisy_student_phases_h200.json.
"""
import json, os, shutil, sys, time
sys.path.insert(0, os.getcwd())
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
import torch
from transformers import AutoConfig, AutoModelForCausalLM
small = len(sys.argv) > 2 and sys.argv[2] == "small"
src, model_dir = sys.argv[1], "/tmp/smol_random"
cfg = AutoConfig.from_pretrained(src)
if small:
    cfg.num_hidden_layers = 2
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg).save_pretrained(model_dir)
for f in ("chat_template.jinja", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(src, f), model_dir)
from nemo_distill.models.generation.hf_backend import HFGenerationWorker
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.interfaces import GenerationRequest, SamplingParams
from nemo_distill.data.arithmetic import generate_arithmetic_problems
from nemo_distill.data.processors import PromptProcessor
from nemo_distill.models.loading import load_tokenizer
tok = load_tokenizer(model_dir)
proc = PromptProcessor(tok, prompt_template=open("examples/prompts/cot.txt").read(), system_prompt=None, max_input_seq_length=256)
prompts = [proc.process(r).prompt_token_ids for r in generate_arithmetic_problems(256, split="train", seed=1)]
out = {"prompt_tokens_mean": sum(map(len, prompts)) / len(prompts), "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
T = 256 if not small else 8
gen = HFGenerationWorker(model_dir, GenerationConfig(max_batch_size=256), precision="auto")
def timed(name, n_prompts, n, tokens, temperature):
    sp = SamplingParams(temperature=temperature, max_new_tokens=tokens, n=n, seed=1)
    t0 = time.perf_counter(); res = gen.generate(GenerationRequest(prompts[:n_prompts], sp)); torch.cuda.synchronize() if torch.cuda.is_available() else None
    out[name] = {"s": round(time.perf_counter() - t0, 2), "rows": n_prompts * n, "mean_len": sum(len(s.response_token_ids) for s in res.samples) / len(res.samples)}
    print(name, out[name], flush=True)
timed("warmup", 4, 1, 8, 1.0)
timed("pseudo_chunk_32x8_256", 32, 8, T, 0.7)
timed("eval_200x1_256", 200, 1, T, 0.1)
timed("grpo_8x8_128", 8, 8, T // 2, 1.0)
timed("grpo_8x8_128_again", 8, 8, T // 2, 1.0)
del gen; torch.cuda.empty_cache() if torch.cuda.is_available() else None
from nemo_distill.models.policy.config import PolicyConfig, OptimizerConfig
from nemo_distill.models.policy.worker import PolicyWorker
from nemo_distill.algorithms.sft import SFTLoss
from nemo_distill.data.collate import build_token_batch
pol = PolicyWorker(PolicyConfig(model_name=model_dir, train_global_batch_size=64, train_micro_batch_size=32, logprob_batch_size=64,
                                max_total_sequence_length=512, optimizer=OptimizerConfig(lr=1e-5)))
def batch(rows, resp):
    b, _ = build_token_batch([prompts[i % 256] for i in range(rows)], [[5] * resp for _ in range(rows)], pad_token_id=tok.pad_token_id,
                             sample_mask=[1.0] * rows, max_total_length=512)
    return b
for name, rows, resp in (("sft_step_8x64", 8, 64), ("sft_step_8x64_again", 8, 64), ("grpo_train_64x128", 64, 128), ("grpo_train_64x128_again", 64, 128)):
    b = batch(rows, resp); t0 = time.perf_counter(); pol.train(b, SFTLoss()); torch.cuda.synchronize() if torch.cuda.is_available() else None
    out[name] = round(time.perf_counter() - t0, 3); print(name, out[name], flush=True)
b = batch(64, 128); t0 = time.perf_counter(); pol.get_logprobs(b, targets_only=True); out["grpo_logprobs_64x128"] = round(time.perf_counter() - t0, 3)
t0 = time.perf_counter(); pol.reset(); torch.cuda.synchronize() if torch.cuda.is_available() else None; out["reset"] = round(time.perf_counter() - t0, 3)
t0 = time.perf_counter(); pol.save_checkpoint("/tmp/ckpt_bench", save_optimizer=False); out["save_checkpoint"] = round(time.perf_counter() - t0, 2)
print(json.dumps(out, indent=1))
os.makedirs(os.environ.get("OUT", "/tmp/out"), exist_ok=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp/out"), "bench.json"), "w"), indent=1)
