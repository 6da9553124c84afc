"""Policy and teacher workers.

* :mod:`.config`        -- ``PolicyConfig`` / ``TeacherConfig`` and their parallelism, LoRA, optimizer sections
* :mod:`.interfaces`    -- ``LossFunction`` protocol, ``TrainMetrics``, ``TopkLogits``
* :mod:`.parallel`      -- TP plan, FSDP2 wrapping, vocab-sharded logits, distributed top-k
* :mod:`.worker`        -- ``PolicyWorker``: train / get_logprobs / get_topk_logits / checkpoints / export
* :mod:`.checkpointing` -- HF + peft + DCP checkpoint layout
* :mod:`.group`         -- ``PolicyWorkerGroup``: the driver's typed handle (shards by data-parallel rank)
"""
