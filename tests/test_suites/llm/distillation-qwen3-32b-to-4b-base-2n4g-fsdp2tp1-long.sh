#!/usr/bin/env bash
# Suite of configs/recipes/llm/distillation-qwen3-32b-to-4b-base-2n4g-fsdp2tp1-long.yaml: 10 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/common.sh" distillation-qwen3-32b-to-4b-base-2n4g-fsdp2tp1-long 10 "$@"
