#!/usr/bin/env bash
# Suite of configs/recipes/llm/context-distill-sokoban-b1-task0.0-kl1.0.yaml: 3 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/context_distill_common.sh" context-distill-sokoban-b1-task0.0-kl1.0 3 "$@"
