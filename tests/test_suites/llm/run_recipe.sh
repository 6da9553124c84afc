#!/usr/bin/env bash
# Run one recipe for STEPS steps into LOG_DIR (no checks): the part every *common.sh suite body shares.
#   bash tests/test_suites/llm/run_recipe.sh PROGRAM RECIPE_NAME STEPS LOG_DIR [overrides...]
# PROGRAM is distillation or grpo (examples/run_PROGRAM.py; its loop section is PROGRAM too).
set -euo pipefail
PROGRAM=$1; NAME=$2; STEPS=$3; LOG_DIR=$4; shift 4
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
rm -rf "$LOG_DIR"
"$PY" "$REPO/examples/run_$PROGRAM.py" --config "$REPO/configs/recipes/llm/$NAME.yaml" \
    "$PROGRAM.max_num_steps=$STEPS" logger.log_dir="$LOG_DIR" logger.exp_numbering=false \
    logger.wandb_enabled=false checkpointing.enabled=false "$@"
