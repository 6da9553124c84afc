"""Algorithms: each a readable loop over shared pieces.

* :mod:`.loss_functions`             -- top-k KL (NeMo-RL semantics), NLL, PPO-clipped surrogate
* :mod:`.advantages`                 -- full-reward / token-level context-distillation advantages, GRPO
* :mod:`.context_distillation_utils` -- ``<think>`` traces, teacher prefixes, row alignment, metrics
* :mod:`.rollouts`                   -- prompts -> samples -> rewards -> ``TokenBatch``
* :mod:`.context_teacher`            -- rollouts -> context teacher batch -> aligned top-k
* :mod:`.distillation_config`        -- typed config of run_distillation.py and cross-section checks
* :mod:`.distillation_loss`          -- the trainer-facing top-k distillation loss
* :mod:`.distillation`               -- the distillation loop: setup -> train -> cleanup
* :mod:`.noisy_student`              -- consensus pseudo-labels

To add an algorithm: a ``<name>_config.py`` composing the section dataclasses, a loss object with
``__call__(logits, batch, *, global_valid_tokens)``, and a ``<name>.py`` loop reusing ``rollouts``.
One algorithm never imports another's loop.
"""
