"""Run utilities: ``logger`` (stdout, metrics.jsonl, TensorBoard, W&B), ``timer`` (named phase
timers), ``checkpoint`` (atomic step_N/ with top-k retention), ``plot`` (PNG curves),
``progress`` (tqdm bars that stay out of CI logs)."""
