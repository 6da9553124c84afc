#!/usr/bin/env bash
# Suite of configs/recipes/llm/context-distill-facts-smollm2-1n1g.yaml: 5 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/context_distill_common.sh" context-distill-facts-smollm2-1n1g 5 "$@"
