"""Data: where problems come from and how they become tokens.

* :mod:`.records`    -- ``ProblemRecord`` (problem, gold answer, id, metadata)
* :mod:`.datasets`   -- ``DataConfig``, ``load_problems`` (JSONL, parquet, save_to_disk, built-in)
* :mod:`.tasks`      -- the built-in task registry (``arithmetic``; ``sokoban`` from environments/)
* :mod:`.arithmetic` -- the built-in seeded arithmetic word-problem task
* :mod:`.splits`     -- seeded labelled / unlabelled / test splits (noisy student), GSM8K gold answers
* :mod:`.processors` -- prompt file + system prompt + chat template -> ``ProcessedPrompt``
* :mod:`.dataloader` -- resumable seeded batches
* :mod:`.collate`    -- right-padded ``TokenBatch`` for training, left padding for generation
* :mod:`.batch`      -- ``TokenBatch``, the message sent to policy and teacher workers
"""
