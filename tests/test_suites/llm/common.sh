#!/usr/bin/env bash
# Shared body of the recipe suites: run a recipe for STEPS steps, then check its metrics.
#   source-free use: bash tests/test_suites/llm/common.sh RECIPE_NAME DEFAULT_STEPS [overrides...]
set -euo pipefail
NAME=$1; DEFAULT_STEPS=$2; shift 2
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
LOG_DIR=${LOG_DIR:-$REPO/logs/test_suites/$NAME}
STEPS=${STEPS:-$DEFAULT_STEPS}
bash "$REPO/tests/test_suites/llm/run_recipe.sh" distillation "$NAME" "$STEPS" "$LOG_DIR" "$@"
# Thresholds: every step logged, finite loss and gradients, and the loss of the last two steps
# no higher than that of the first two (5% slack for on-policy noise).
"$PY" "$REPO/tests/check_metrics.py" "$LOG_DIR/metrics.jsonl" \
    "count('train/loss') == $STEPS" \
    "max('train/loss') < 20" \
    "max('train/grad_norm') < 1000" \
    "mean('train/loss', $((STEPS - 1)), $STEPS) <= mean('train/loss', 1, 2) * 1.05"
