#!/usr/bin/env bash
# Suite of configs/recipes/llm/context-distill-sokoban-equal-weights-16k.yaml: 3 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/context_distill_common.sh" context-distill-sokoban-equal-weights-16k 3 "$@"
