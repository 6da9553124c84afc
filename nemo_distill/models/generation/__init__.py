"""Generation: student rollouts and weight refit from the policy. A map:

* :mod:`.config`       -- ``GenerationConfig`` (``policy.generation``), ``VllmConfig``
* :mod:`.interfaces`   -- messages (``SamplingParams``, ``GenerationRequest``, ``GeneratedSample``,
  ``GenerationOutput``, ``WeightUpdateStats``), ``GenerationInterface``, the log-prob convention
* :mod:`.hf_backend`   -- ``HFGenerationWorker``: transformers ``generate``, CPU and GPU
* :mod:`.vllm_backend` -- ``VllmGenerationWorker``: vLLM's public API (optional ``vllm`` extra, GPU)
* :mod:`.refit`        -- ``WeightRefitter``: policy weights -> generation workers in bounded
  buckets, through Ray's object store, CUDA IPC (colocated GPUs) or a broadcast group
* :mod:`.weight_transfer` -- the wire formats: buckets, flat-buffer layouts, IPC handles, the
  transfer process group, and ``WeightReceiver`` (the refit endpoints every backend mixes in)
* :mod:`.group`        -- ``GenerationWorkerGroup``: one worker per ``inference`` slot, prompts split
  across them, outputs merged in prompt order

A new backend: a worker class with the ``GenerationInterface`` methods, registered in
``group.GENERATION_BACKENDS`` under its ``policy.generation.backend`` name.
"""
