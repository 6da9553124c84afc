#!/usr/bin/env bash
# Suite of configs/recipes/llm/context-distill-sokoban-a3-task1.0-kl0.001.yaml: 3 steps (STEPS=N to change), then metric thresholds.
exec bash "$(dirname "$0")/context_distill_common.sh" context-distill-sokoban-a3-task1.0-kl0.001 3 "$@"
