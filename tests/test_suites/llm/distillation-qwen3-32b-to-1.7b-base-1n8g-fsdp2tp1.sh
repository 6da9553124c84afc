#!/usr/bin/env bash
# Suite of configs/recipes/llm/distillation-qwen3-32b-to-1.7b-base-1n8g-fsdp2tp1.yaml: 10 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/common.sh" distillation-qwen3-32b-to-1.7b-base-1n8g-fsdp2tp1 10 "$@"
