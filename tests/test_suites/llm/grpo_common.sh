#!/usr/bin/env bash
# Shared body of the GRPO recipe suites: run a recipe for STEPS steps, then check its metrics.
#   bash tests/test_suites/llm/grpo_common.sh RECIPE_NAME DEFAULT_STEPS [overrides...]
set -euo pipefail
NAME=$1; DEFAULT_STEPS=$2; shift 2
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
LOG_DIR=${LOG_DIR:-$REPO/logs/test_suites/$NAME}
STEPS=${STEPS:-$DEFAULT_STEPS}
bash "$REPO/tests/test_suites/llm/run_recipe.sh" grpo "$NAME" "$STEPS" "$LOG_DIR" "$@"
# Thresholds: every step logged, no skipped (non-finite) step, the first update's ratio is exactly 1
# up to bf16 noise, and the mean reward of the last two steps at least that of the first two.
"$PY" "$REPO/tests/check_metrics.py" "$LOG_DIR/metrics.jsonl" \
    "count('train/loss') == $STEPS" \
    "max('train/skipped_steps') == 0" \
    "max('train/grad_norm') < 1000" \
    "mean('train/reward_mean', $((STEPS - 1)), $STEPS) >= mean('train/reward_mean', 1, 2)"
