#!/usr/bin/env bash
# Suite of configs/recipes/llm/my-context-self-distillation-1n4g.yaml: 5 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/common.sh" my-context-self-distillation-1n4g 5 "$@"
