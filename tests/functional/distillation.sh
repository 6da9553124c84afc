#!/usr/bin/env bash
# Functional smoke of normal on-policy distillation on CPU: a tiny random student (hidden 64) learns
# from a tiny random teacher of another size (hidden 128, same vocabulary) for 3 steps on the same 4 prompts
# with greedy rollouts (so the data barely changes between steps); the loss must fall.
#   bash tests/functional/distillation.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
WORK=${WORK:-$(mktemp -d)}
"$PY" -m nemo_distill.models.tiny --out "$WORK/student" --hidden-size 64 --seed 0 --init-std 0.2 >/dev/null
"$PY" -m nemo_distill.models.tiny --out "$WORK/teacher" --hidden-size 128 --seed 1 --init-std 0.2 >/dev/null
"$PY" "$REPO/examples/run_distillation.py" --config "$REPO/configs/distillation_tiny_cpu.yaml" \
    policy.model_name="$WORK/student" teacher.model_name="$WORK/teacher" \
    distillation.max_num_steps=3 logger.log_dir="$WORK/logs" logger.exp_numbering=false \
    data.default.num_samples=4 data.shuffle=false policy.generation.temperature=0.0 distillation.num_generations_per_prompt=1 \
    checkpointing.checkpoint_dir="$WORK/ckpt" "$@"
"$PY" "$REPO/tests/check_metrics.py" "$WORK/logs/metrics.jsonl" \
    "count('train/loss') == 3" \
    "last('train/loss') < first('train/loss')" \
    "min('validation/accuracy') >= 0"
test -f "$WORK/ckpt/step_3/training_info.json"
echo "distillation.sh: OK ($WORK)"
