#!/usr/bin/env bash
# Functional smoke of GRPO on CPU: a tiny random student (hidden 64), 3 steps, 4 prompts x 4 samples,
# two optimizer updates per step (minibatches of 8), with the seed-002 reward mix switched on through
# student_tau (an entropy bonus) so advantages are non-zero even though a random model never answers right.
#   bash tests/functional/grpo.sh [overrides...]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
WORK=${WORK:-$(mktemp -d)}
"$PY" -m nemo_distill.models.tiny --out "$WORK/student" --hidden-size 64 --seed 0 --init-std 0.2 >/dev/null
"$PY" "$REPO/examples/run_grpo.py" --config "$REPO/configs/grpo_tiny_cpu.yaml" \
    policy.model_name="$WORK/student" policy.train_global_batch_size=8 \
    grpo.max_num_steps=3 logger.log_dir="$WORK/logs" logger.exp_numbering=false \
    grpo.context_distillation.student_tau=0.1 checkpointing.checkpoint_dir="$WORK/ckpt" "$@"
"$PY" "$REPO/tests/check_metrics.py" "$WORK/logs/metrics.jsonl" \
    "count('train/loss') == 3" \
    "min('train/ratio_mean') > 0.5" \
    "max('train/combined_advantage') > 0" \
    "max('train/skipped_steps') == 0" \
    "min('validation/accuracy') >= 0"
test -f "$WORK/ckpt/step_3/training_info.json"
echo "grpo.sh: OK ($WORK)"
