"""Run utilities, free of Ray and torch.distributed so they can be used and tested anywhere.

* :mod:`.logger`     -- ``LoggerConfig``, ``Logger`` (stdout line, append-only ``metrics.jsonl``,
                        TensorBoard, W&B), ``resolve_experiment_dir`` (``log_dir/exp_NNN``), ``read_metrics``
* :mod:`.timer`      -- ``Timer``: named phase timers -> ``timing/...`` metrics
* :mod:`.checkpoint` -- ``CheckpointingConfig``, ``CheckpointManager``: atomic ``step_N/`` folders,
                        resume from the latest, top-k retention by a metric
* :mod:`.plot`       -- ``plot_metric_curves``: PNG curves from ``metrics.jsonl``
* :mod:`.progress`   -- ``progress_bar``: tqdm on stderr that stays out of CI logs
* :mod:`.stats`      -- Wilson interval, exact McNemar, two-proportion z-test (statsmodels)
"""
