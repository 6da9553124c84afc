#!/usr/bin/env bash
# Shared body of the reward-mixed context-distillation recipe suites: run a recipe for STEPS
# steps with examples/run_grpo.py, then check its metrics.
#   bash tests/test_suites/llm/context_distill_common.sh RECIPE_NAME DEFAULT_STEPS [overrides...]
set -euo pipefail
NAME=$1; DEFAULT_STEPS=$2; shift 2
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
LOG_DIR=${LOG_DIR:-$REPO/logs/test_suites/$NAME}
STEPS=${STEPS:-$DEFAULT_STEPS}
bash "$REPO/tests/test_suites/llm/run_recipe.sh" grpo "$NAME" "$STEPS" "$LOG_DIR" "$@"
# Thresholds: every step logged, no skipped (non-finite) step, bounded gradients, on-policy first
# ratio, a task reward in [0, 1]. RL rewards are too noisy over a few steps for a trend check.
"$PY" "$REPO/tests/check_metrics.py" "$LOG_DIR/metrics.jsonl" \
    "count('train/loss') == $STEPS" \
    "max('train/skipped_steps') == 0" \
    "max('train/grad_norm') < 1000" \
    "min('train/ratio_mean') > 0.5" \
    "0 <= min('train/reward_mean') and max('train/reward_mean') <= 1"
