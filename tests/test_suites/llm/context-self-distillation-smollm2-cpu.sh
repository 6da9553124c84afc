#!/usr/bin/env bash
# Suite of configs/recipes/llm/context-self-distillation-smollm2-cpu.yaml: 5 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/common.sh" context-self-distillation-smollm2-cpu 5 "$@"
