#!/usr/bin/env bash
# Suite of configs/recipes/llm/context-distill-sokoban-low-entropy-16k.yaml: 3 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/context_distill_common.sh" context-distill-sokoban-low-entropy-16k 3 "$@"
