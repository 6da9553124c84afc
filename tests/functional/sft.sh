#!/usr/bin/env bash
# Functional smoke of SFT on CPU: a tiny random model (hidden 64) learns the built-in arithmetic task's
# worked answers for 6 steps; the validation loss must fall, and a resumed run continues from step 6.
#   bash tests/functional/sft.sh [overrides...]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
WORK=${WORK:-$(mktemp -d)}
"$PY" -m nemo_distill.models.tiny --out "$WORK/student" --hidden-size 64 --seed 0 --init-std 0.2 >/dev/null
ARGS=(policy.model_name="$WORK/student" logger.log_dir="$WORK/logs" logger.exp_numbering=false
      checkpointing.checkpoint_dir="$WORK/ckpt" "$@")
"$PY" "$REPO/examples/run_sft.py" --config "$REPO/configs/sft_tiny_cpu.yaml" "${ARGS[@]}"
"$PY" "$REPO/tests/check_metrics.py" "$WORK/logs/metrics.jsonl" \
    "count('train/loss') == 6" \
    "last('validation/loss') < first('validation/loss')"
test -f "$WORK/ckpt/step_6/training_info.json"
# The same run extended (max_num_steps is an allowed change): resumes at step 7, logs in the same dir.
"$PY" "$REPO/examples/run_sft.py" --config "$REPO/configs/sft_tiny_cpu.yaml" "${ARGS[@]}" sft.max_num_steps=7 | tee "$WORK/resume.log"
grep -q "continuing at step 7" "$WORK/resume.log"
"$PY" "$REPO/tests/check_metrics.py" "$WORK/logs/metrics.jsonl" "count('train/loss') == 7"
echo "sft.sh: OK ($WORK)"
