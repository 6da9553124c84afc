"""Noisy-student pseudo-labelling (seed 004): the consensus answer of K samples per unlabelled prompt.

The voting lives in :mod:`nemo_distill.algorithms.pseudo_labels` with the rest of the labelling
(K samples, confidence filter, accuracy, JSONL); this module re-exports it under the names
DESIGN.md's public contract gives: :func:`pseudo_label` (a typed :class:`PseudoLabel`) and its
tuple form :func:`consensus_label`.
"""

from __future__ import annotations

from nemo_distill.algorithms.pseudo_labels import PseudoLabel, consensus_label, pseudo_label

__all__ = ["PseudoLabel", "consensus_label", "pseudo_label"]
