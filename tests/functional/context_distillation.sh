#!/usr/bin/env bash
# Functional smoke of context self-distillation on CPU with a tiny random model: the teacher is the
# frozen initial student reading the prefix template; 3 steps on the same 4 prompts with greedy rollouts
# (so the data barely changes between steps and the KL must fall) and the
# context_distillation_* metrics must be logged.
#   bash tests/functional/context_distillation.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
WORK=${WORK:-$(mktemp -d)}
"$PY" -m nemo_distill.models.tiny --out "$WORK/model" --hidden-size 64 --seed 0 --init-std 0.2 >/dev/null
"$PY" "$REPO/examples/run_distillation.py" --config "$REPO/configs/distillation_tiny_cpu.yaml" \
    policy.model_name="$WORK/model" teacher.model_name="$WORK/model" \
    distillation.context_distillation.enabled=true loss_fn.kl_type=reverse \
    distillation.max_num_steps=3 logger.log_dir="$WORK/logs" logger.exp_numbering=false \
    data.default.num_samples=4 data.shuffle=false policy.generation.temperature=0.0 distillation.num_generations_per_prompt=1 \
    checkpointing.enabled=false "$@"
"$PY" "$REPO/tests/check_metrics.py" "$WORK/logs/metrics.jsonl" \
    "count('train/loss') == 3" \
    "last('train/loss') < first('train/loss')" \
    "count('train/context_distillation_trace_coverage') == 3" \
    "max('train/context_distillation_valid_samples') > 0"
echo "context_distillation.sh: OK ($WORK)"
