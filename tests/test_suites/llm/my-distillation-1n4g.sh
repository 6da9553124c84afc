#!/usr/bin/env bash
# Suite of configs/recipes/llm/my-distillation-1n4g.yaml: 5 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/common.sh" my-distillation-1n4g 5 "$@"
