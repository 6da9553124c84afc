"""Generation: student rollouts.

* :mod:`.config`       -- ``GenerationConfig`` (``policy.generation``), ``VllmConfig``
* :mod:`.interfaces`   -- ``SamplingParams``, ``GenerationRequest``, ``GeneratedSample``, ``GenerationOutput``
* :mod:`.hf_backend`   -- ``HFGenerationWorker`` (transformers ``generate``; CPU and GPU)
* :mod:`.vllm_backend` -- ``VllmGenerationWorker`` (optional ``vllm`` extra; GPU)
* :mod:`.refit`        -- bucketed weight transfer policy -> generation
* :mod:`.group`        -- ``GenerationWorkerGroup`` on the ``inference`` slots
"""
