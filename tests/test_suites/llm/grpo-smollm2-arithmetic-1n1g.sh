#!/usr/bin/env bash
# Suite of configs/recipes/llm/grpo-smollm2-arithmetic-1n1g.yaml: 20 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/grpo_common.sh" grpo-smollm2-arithmetic-1n1g 20 "$@"
