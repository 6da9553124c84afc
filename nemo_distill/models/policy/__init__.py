"""Policy and teacher models on a (dp, cp, tp) DTensor mesh: training, scoring, checkpoints, weight export.

* :mod:`.config`           -- ``policy:`` / ``teacher:`` sections (DTensor, LoRA, optimizer, scheduler)
* :mod:`.interfaces`       -- messages: ``LossFunction`` protocol, ``TrainMetrics``, ``TopkLogits``, ``RankInfo``
* :mod:`.worker`           -- ``PolicyWorker``: one rank; train / get_logprobs / get_topk_logits / checkpoint / export
* :mod:`.group`            -- ``PolicyWorkerGroup``: the driver's typed handle (Ray actors, dp sharding)
* :mod:`.parallel`         -- device mesh, tensor-parallel plan, FSDP2 wrapping
* :mod:`.vocab_parallel`   -- vocabulary-sharded logits: gather for losses, distributed top-k
* :mod:`.context_parallel` -- load-balanced sequence sharding, position ids, cross-rank reductions (GPU ring attention)
* :mod:`.collectives`      -- autograd-aware gathers for replicated losses, float all-reduces
* :mod:`.grad_norm`        -- global gradient norm / clipping across device meshes
* :mod:`.lr_schedule`      -- warmup + constant / cosine learning-rate multiplier
* :mod:`.lora`             -- peft wrapping, name mapping, merging, adapter files
* :mod:`.weights`          -- streaming full HF-named weights out of the shards (refit, ``model/`` folder)
* :mod:`.checkpointing`    -- checkpoint layout, save / load (DCP + HF folder + adapter + RNG)
* :mod:`.device_memory`    -- offload / onload of weights and AdamW moments, memory figures (colocation)

Every ``PolicyWorker`` method is a collective: all ranks of a group call it together.
"""
