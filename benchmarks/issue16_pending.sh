#!/usr/bin/env bash
# Issue 16's measurements still owed to a GPU, one device call of under 10 minutes per part.
#
#   bash benchmarks/issue16_pending.sh a    # ~6.5 min: grouped decode attention; teacher / train outside Ray; trainer memory with AC
#   bash benchmarks/issue16_pending.sh b    # ~6 min: our step against TRL's in the same run (tied Qwen3-0.6B shape)
#   bash benchmarks/issue16_pending.sh c    # ~6 min: our step alone, colocated overlap_generation, then + compiled layers
#   bash benchmarks/issue16_pending.sh d    # ~8 min: decode attention SDPA vs matmul (profiled); the on-policy
#                                           #   step as the recipe sets it against TRL in the same run
#   bash benchmarks/issue16_pending.sh e    # ~6 min: train / teacher outside Ray, eager against compiled layers;
#                                           #   trainer memory with AC + windows + compiled layers
#
# Run from the repository root on the device with carry [".whl", ".tok"] (benchmarks/README.md, "Preparing
# a GPU run"). Results go under $OUT (default /tmp/issue16) without the random models' weights; after each
# measurement $OUT/issue16_<part>.tgz is rewritten, so a call cut off at its limit still returns what finished.
# SMOKE=1 runs part a on CPU at the tiny shape with $PY (tests/unit/benchmarks checks the script that way;
# TOK then names a tokenizer folder, else the embedded model's is used).
set -uo pipefail
part=${1:?usage: issue16_pending.sh a|b|c|d|e}
OUT=${OUT:-/tmp/issue16}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ "${SMOKE:-0}" = 1 ]; then
  if [ -n "${TOK:-}" ]; then TOKENIZER=(--tokenizer "$TOK"); else TOKENIZER=(); fi  # default: the embedded one
  GS_ARGS=(--device cpu --shape tiny --prompts 3 --prompt-len 8 --new-tokens 6)
  PROF_ARGS=(--device cpu --shape tiny --prompts 4 --micro-batch 2 --teacher-batch 4 --prompt-len 16 --new-tokens 8)
else
  # the device image lacks Ray and the config libraries: install the prepared wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  TOKENIZER=(--tokenizer "${TOK:-.tok}")
  GS_ARGS=()
  PROF_ARGS=()
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
                                          torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
snapshot() {
  find "$OUT" -name '*.safetensors' -delete
  tar czf "$OUT/issue16_$part.tgz" --exclude='*.tgz' -C "$OUT" . 2>/dev/null
}
quiet() { grep -v 'it/s\]'; }

case "$part" in
  a)
    # Generation target (>= 10k tokens/s at batch 64): the loop with and without grouped decode attention.
    timeout 170 $PY benchmarks/generation_samplers.py "${TOKENIZER[@]}" "${GS_ARGS[@]}" --samplers loop loop_repeat_kv \
      --repeats 1 --out "$OUT/gs" 2>&1 | quiet | tail -14
    snapshot
    # Teacher top-k (>= 200k tokens/s) and train (>= 30k tokens/s) outside Ray, prompt rows skipped.
    timeout 90 $PY benchmarks/profile_step.py "${TOKENIZER[@]}" "${PROF_ARGS[@]}" --phases teacher_topk train \
      --out "$OUT/prof" 2>&1 | quiet | grep -E '^(setting:|phase |teacher_topk |train )'
    snapshot
    # The same with fused RMSNorm kernels (student and teacher), the A/B in one run.
    timeout 90 $PY benchmarks/profile_step.py "${TOKENIZER[@]}" "${PROF_ARGS[@]}" --phases teacher_topk train \
      --out "$OUT/prof_fused_norm" --override policy.fused_rms_norm=true teacher.fused_rms_norm=true \
      2>&1 | quiet | grep -E '^(setting:|phase |teacher_topk |train )'
    snapshot
    # Trainer memory (<= 12 GiB with activation checkpointing) on the tied model, output layer in windows.
    timeout 80 $PY benchmarks/profile_step.py "${TOKENIZER[@]}" "${PROF_ARGS[@]}" --phases train --out "$OUT/prof_ac" \
      --override policy.dtensor_cfg.activation_checkpointing=true policy.train_head_chunk_rows=64 \
      2>&1 | quiet | grep -E '^(setting:|phase |train )'
    snapshot
    ;;
  b)
    # Whole step <= TRL's / 5, TRL in the same run.
    timeout 400 $PY benchmarks/compare_trl.py --steps 4 "${TOKENIZER[@]}" --require-trl --out "$OUT/ctrl" \
      2>&1 | quiet | tail -40
    snapshot
    ;;
  c)
    # Colocated overlap: step n+1's generation fills the GPU time the launch-bound training leaves idle
    # (bound ~max(generation, teacher + training) + refit). Then the same with compiled decoder layers.
    timeout 250 $PY benchmarks/compare_trl.py --steps 4 "${TOKENIZER[@]}" --skip trl --out "$OUT/ov" \
      --ours-override policy.generation.hf_sampler=loop distillation.overlap_generation=true 2>&1 | quiet | tail -20
    snapshot
    timeout 300 $PY benchmarks/compare_trl.py --steps 4 "${TOKENIZER[@]}" --skip trl --out "$OUT/ov_compiled" \
      --ours-override policy.generation.hf_sampler=loop distillation.overlap_generation=true \
      policy.compile_decoder_layers=true teacher.compile_decoder_layers=true 2>&1 | quiet | tail -20
    snapshot
    ;;
  d)
    # Generation: the loop's decode attention as SDPA (cuDNN's kernel on an H100: 40% of the step) or as
    # two matrix products (hf_decode_attention: matmul); --profile writes each one's kernel table.
    timeout 200 $PY benchmarks/generation_samplers.py "${TOKENIZER[@]}" "${GS_ARGS[@]}" \
      --samplers loop loop_matmul --repeats 2 --profile --out "$OUT/gs" 2>&1 | quiet | tail -10
    snapshot
    # The on-policy step (<= TRL's / 5) as the recipe sets it (compiled decoder layers), TRL in the same run.
    timeout 340 $PY benchmarks/compare_trl.py --steps 4 "${TOKENIZER[@]}" --require-trl --out "$OUT/ctrl" \
      2>&1 | quiet | tail -40
    snapshot
    ;;
  e)
    # Train (>= 30k tokens/s) and teacher top-k (>= 200k) outside Ray: eager, then compiled layers.
    for variant in eager compiled; do
      compile=$([ "$variant" = compiled ] && echo true || echo false)
      extra=(policy.compile_decoder_layers=$compile teacher.compile_decoder_layers=$compile)
      timeout 150 $PY benchmarks/profile_step.py "${TOKENIZER[@]}" "${PROF_ARGS[@]}" --phases teacher_topk train \
        --out "$OUT/prof_$variant" --override policy.fused_rms_norm=true teacher.fused_rms_norm=true "${extra[@]}" \
        2>&1 | quiet | grep -E '^(setting:|phase |teacher_topk |train )'
      snapshot
    done
    # Trainer memory (<= 12 GiB with activation checkpointing) with compiled layers.
    timeout 120 $PY benchmarks/profile_step.py "${TOKENIZER[@]}" "${PROF_ARGS[@]}" --phases train --out "$OUT/prof_ac_compiled" \
      --override policy.fused_rms_norm=true policy.compile_decoder_layers=true \
      policy.dtensor_cfg.activation_checkpointing=true policy.train_head_chunk_rows=64 \
      2>&1 | quiet | grep -E '^(setting:|phase |train )'
    snapshot
    ;;
  *) echo "unknown part '$part' (a to e)" >&2; exit 2 ;;
esac
ls "$OUT"
