"""Consensus pseudo-labels: majority, ties, abstentions, k override, normalisation."""

from __future__ import annotations

import pytest

from nemo_distill.algorithms.noisy_student import PseudoLabel, consensus_label, pseudo_label


def test_consensus_label_majority_and_agreement():
    assert consensus_label(["3", "5", "3", "3"]) == ("3", 0.75)
    assert consensus_label(["7"]) == ("7", 1.0)


def test_consensus_label_ties_go_to_the_earliest_seen_answer():
    assert consensus_label(["5", "3", "3", "5"]) == ("5", 0.5)
    assert consensus_label(["3", "5", "5", "3"]) == ("3", 0.5)
    assert consensus_label([None, "9", "2"]) == ("9", pytest.approx(1 / 3))


def test_consensus_label_none_answers_abstain_but_count_in_k():
    assert consensus_label([None, "4", None, "4"]) == ("4", 0.5)
    assert consensus_label([None, None]) == (None, 0.0)
    assert consensus_label([]) == (None, 0.0)
    assert consensus_label(["", "  ", "2"]) == ("2", pytest.approx(1 / 3))


def test_consensus_label_k_override():
    # Eight samples were drawn but only three produced text: agreement is out of 8.
    assert consensus_label(["4", "4", "1"], k=8) == ("4", 0.25)
    with pytest.raises(ValueError, match="k=2"):
        consensus_label(["4", "4", "1"], k=2)
    with pytest.raises(ValueError, match="k=0"):
        consensus_label([], k=0)


def test_consensus_label_compares_normalised_answers():
    answer, agreement = consensus_label(["1,000", "1000", "$1000", "999", "1000.0"])
    assert (answer, agreement) == ("1000", 0.8)
    assert consensus_label(["**18**.", "18", "17"]) == ("18", pytest.approx(2 / 3))


def test_pseudo_label_confidence_filter():
    label = pseudo_label(["6", "6", "6", "2"])
    assert label == PseudoLabel(answer="6", votes=3, num_samples=4)
    assert label.is_confident(0.75) and not label.is_confident(0.8)
    assert not pseudo_label([None, None]).is_confident(0.0)
