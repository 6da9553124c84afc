"""Algorithms: each a readable loop over shared numerics. A map of what lives where:

Shared numerics (pure torch / Python; no Ray, no torch.distributed):

* :mod:`.loss_functions`             -- top-k KL (NeMo-RL semantics: forward / reverse / mixed,
  ``zero_outside_topk``), SFT NLL, PPO-clipped surrogate, chunked ``log p(token)``; every loss is
  divided by a caller-given (global) token count
* :mod:`.advantages`                 -- seed 002's full-reward (sequence-level) and token-level
  context-distillation advantages, the ``kl_only_incorrect`` gate, GRPO / Dr. GRPO
* :mod:`.context_distillation_utils` -- ``<think>`` trace extraction, teacher-prefix template
  checks, teacher inputs (truncation, drop reasons), teacher -> student row alignment,
  ``context_distillation_*`` metrics
* :mod:`.pseudo_labels`              -- consensus pseudo-labels: K samples per prompt, majority vote,
  agreement, confidence filter, accuracy vs hidden gold, agreement histogram, JSONL
* :mod:`.noisy_student`              -- the noisy-student study's config, run plan, per-condition
  training sets and step budgets (re-exports the vote: ``pseudo_label``, ``consensus_label``)
* :mod:`.noisy_student_report`       -- the study's report: accuracy + Wilson CI, McNemar / z-tests, PNGs

Loops and their glue:

* :mod:`.rollouts`                   -- prompts -> samples -> rewards -> ``TokenBatch``
* :mod:`.context_teacher`            -- rollouts -> context teacher batch -> aligned top-k
* :mod:`.distillation_config`        -- typed config of run_distillation.py and cross-section checks
* :mod:`.distillation_loss`          -- the trainer-facing top-k distillation loss
* :mod:`.distillation`               -- the distillation loop: setup -> train -> cleanup
* :mod:`.noisy_student_pipeline`     -- the noisy-student study end to end on one cluster (runs the SFT and
  GRPO loops per condition after ``PolicyWorkerGroup.reset``; resumable phases, report)

To add an algorithm: a ``<name>_config.py`` composing the section dataclasses, a loss object with
``__call__(logits, batch, *, counts: StepCounts)`` built from :mod:`.loss_functions`, and a
``<name>.py`` loop reusing ``rollouts``. One algorithm never imports another's loop.
"""
