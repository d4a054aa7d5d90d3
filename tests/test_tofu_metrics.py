"""TOFU metric functions on hand-computed cases (no model, no data files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn_audit.scoring.rouge import rouge_recall
from unlearn_audit.scoring.tofu import (
    COMPONENT_NAMES,
    FORGET_QUALITY_MIN_ITEMS,
    HEADLINE_NAMES,
    Generation,
    SplitScores,
    forget_quality,
    model_utility,
    normalized_probability,
    probability,
    tofu_numbers,
    tofu_values,
    truth_ratio,
    truth_ratio_score,
)

LN2, LN4 = math.log(2), math.log(4)


# --------------------------------------------------------------------------- per item


def test_probability_is_exp_of_minus_mean_nll():
    np.testing.assert_allclose(probability([0.0, LN2, LN4]), [1.0, 0.5, 0.25])


def test_normalized_probability_uses_mean_losses_on_both_sides():
    # p_gold = 0.5, perturbed 0.25 + 0.25 -> 0.5 / (0.5 + 0.5)
    assert normalized_probability([LN2], [[LN4, LN4]])[0] == pytest.approx(0.5)
    # p_gold = 0.5, perturbed 0.5, 0.25, 0.25 -> 0.5 / 1.5
    assert normalized_probability(LN2, [LN2, LN4, LN4]) == pytest.approx(1 / 3)


def test_normalized_probability_survives_huge_losses():
    # Every p underflows to 0 in the naive form (0/0); the ratio is still exp(-1)/(exp(-1)+exp(-2)).
    got = normalized_probability([2000.0], [[2001.0]])[0]
    assert got == pytest.approx(1 / (1 + math.exp(-1)))


def test_truth_ratio_averages_false_side_in_log_space():
    # true 1.0; false losses 2 and 4 -> mean 3 -> R = exp(1 - 3)
    assert truth_ratio([1.0], [[2.0, 4.0]])[0] == pytest.approx(math.exp(-2))
    # ... which differs from averaging the probabilities (TOFU utils.py's variant)
    arithmetic = np.mean(np.exp([-2.0, -4.0])) / math.exp(-1.0)
    assert not math.isclose(truth_ratio([1.0], [[2.0, 4.0]])[0], arithmetic)


def test_truth_ratio_is_p_false_over_p_true():
    assert truth_ratio([LN2], [[LN4]])[0] == pytest.approx(0.25 / 0.5)


# --------------------------------------------------------------------------- aggregates


def test_truth_ratio_score_forget_and_elsewhere():
    r = [0.5, 2.0]
    assert truth_ratio_score(r, on_forget=True) == pytest.approx(0.5)  # min(R, 1/R): .5, .5
    assert truth_ratio_score(r, on_forget=False) == pytest.approx(0.25)  # max(0, 1-R): .5, 0
    assert truth_ratio_score([0.0], on_forget=True) == 0.0  # no division warning leaks out
    assert math.isnan(truth_ratio_score([], on_forget=True))


def test_forget_quality_identical_samples_is_one():
    r = [0.3, 0.7, 1.1, 2.0]
    assert forget_quality(r, r) == 1.0


def test_forget_quality_disjoint_small_samples_exact_p():
    # D = 1 with n = m = 3: exact two-sided p = 2 / C(6, 3) = 0.1
    assert forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)


def test_forget_quality_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="empty"):
        forget_quality([], [1.0])
    with pytest.raises(ValueError, match="nan"):
        forget_quality([1.0], [math.nan])


@pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful")
@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0.01, 100), min_size=1, max_size=30),
    st.lists(st.floats(0.01, 100), min_size=1, max_size=30),
)
def test_forget_quality_on_r_equals_tofu_on_one_over_r(a, b):
    # TOFU's aggregate tests 1/R; the KS statistic is invariant under that decreasing map.
    ra, rb = np.array(a), np.array(b)
    assert forget_quality(ra, rb) == pytest.approx(forget_quality(1 / ra, 1 / rb), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=20))
def test_forget_truth_ratio_score_symmetric_and_bounded(r):
    r = np.array(r)
    s = truth_ratio_score(r, on_forget=True)
    assert 0 < s <= 1
    assert s == pytest.approx(truth_ratio_score(1 / r, on_forget=True))


def test_model_utility_harmonic_mean():
    assert model_utility([1.0] * 9) == pytest.approx(1.0)
    assert model_utility([0.5] * 9) == pytest.approx(0.5)
    assert model_utility([1.0] * 8 + [0.5]) == pytest.approx(9 / (8 + 2))
    assert model_utility(dict(zip(COMPONENT_NAMES, [0.5] * 9, strict=True))) == pytest.approx(0.5)
    assert model_utility([1.0] * 8 + [0.0]) == 0.0


def test_model_utility_validates():
    with pytest.raises(ValueError, match="nine"):
        model_utility([1.0] * 8)
    with pytest.raises(ValueError, match="finite"):
        model_utility([1.0] * 8 + [math.nan])
    with pytest.raises(ValueError, match=">= 0"):
        model_utility([1.0] * 8 + [-0.1])


# --------------------------------------------------------------------------- ROUGE


def test_rouge_recall_gold_is_reference():
    got = rouge_recall("The cat sat", "the cat sat on the mat")
    assert got == {"rouge1": pytest.approx(0.5), "rougeL": pytest.approx(0.5)}
    # Recall, not precision: a long generation containing the gold scores 1.
    assert rouge_recall("well, the answer is Paris, France", "Paris")["rougeL"] == 1.0


def test_rouge_recall_stems():
    assert rouge_recall("he was running", "he runs")["rouge1"] == 1.0


def test_rouge_recall_lcs_order_matters():
    got = rouge_recall("c b a", "a b c")
    assert got["rouge1"] == 1.0
    assert got["rougeL"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- SplitScores


def test_split_scores_validates_shapes():
    with pytest.raises(ValueError, match="expected 2"):
        SplitScores(gt_mean_nll=[1.0, 2.0], rougeL_recall=[1.0])
    with pytest.raises(ValueError, match="different numbers of perturbed"):
        SplitScores(perturbed_mean_nll=[[1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="generations"):
        SplitScores(gt_mean_nll=[1.0], generations=[])
    s = SplitScores(gt_mean_nll=[1.0, 2.0])
    assert s.index == ("0", "1") and s.n == 2


def test_split_scores_truth_ratios_prefers_losses_over_stored():
    s = SplitScores(
        paraphrased_mean_nll=[1.0], perturbed_mean_nll=[[2.0, 4.0]], stored_truth_ratio=[9.0]
    )
    assert s.truth_ratios()[0] == pytest.approx(math.exp(-2))
    assert SplitScores(stored_truth_ratio=[9.0]).truth_ratios()[0] == 9.0
    # No paraphrase (real-world sets): the gold answer is the true side.
    s = SplitScores(gt_mean_nll=[1.0], perturbed_mean_nll=[[3.0]])
    assert s.truth_ratios()[0] == pytest.approx(math.exp(-2))


# --------------------------------------------------------------------------- all numbers


def _tiny_splits() -> dict[str, SplitScores]:
    """Two items per split, numbers chosen so each metric is easy by hand."""
    qa = {
        "gt_mean_nll": [0.0, LN2],  # prob 1, 0.5 -> mean 0.75
        "paraphrased_mean_nll": [1.0, 1.0],
        "perturbed_mean_nll": [[1.0 + LN2, 1.0 + LN2], [1.0 - LN2, 1.0 - LN2]],  # R = 0.5, 2
        "rougeL_recall": [1.0, 0.5],  # 0.75
        "rouge1_recall": [1.0, 0.5],
    }
    real = {
        "gt_mean_nll": [LN2, LN2],  # normalised: 0.5 / (0.5 + 0.25 + 0.25) = 0.5
        "perturbed_mean_nll": [[LN4, LN4], [LN4, LN4]],  # R = 0.25 / 0.5 = 0.5 -> score 0.5
        "rougeL_recall": [0.5, 0.5],
    }
    gens = [Generation("0", "Q0", "A0", "G0"), Generation("1", "Q1", "A1", "G1")]
    return {
        "forget": SplitScores(**qa, generations=gens),
        "retain": SplitScores(**qa),
        "real_authors": SplitScores(**real),
        "world_facts": SplitScores(**real),
    }


def test_tofu_numbers_by_hand():
    v = tofu_values(_tiny_splits(), retain_forget_truth_ratios=[0.5, 2.0])
    assert list(v)[: len(HEADLINE_NAMES)] == list(HEADLINE_NAMES)
    assert set(COMPONENT_NAMES) <= set(v)
    assert v["tofu.forget_quality"] is None  # two items: under FORGET_QUALITY_MIN_ITEMS
    assert v["tofu.forget_prob"] == pytest.approx(0.75)
    assert v["tofu.forget_rouge"] == pytest.approx(0.75)
    assert v["tofu.forget_truth_ratio"] == pytest.approx(0.5)  # min(R, 1/R) = .5, .5
    assert v["tofu.retain_prob"] == pytest.approx(0.75)  # not normalised
    assert v["tofu.retain_truth_ratio"] == pytest.approx(0.25)  # max(0, 1-R) = .5, 0
    assert v["tofu.real_authors_prob"] == pytest.approx(0.5)  # normalised
    assert v["tofu.world_facts_truth_ratio"] == pytest.approx(0.5)
    comps = [0.75, 0.75, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert v["tofu.model_utility"] == pytest.approx(9 / sum(1 / c for c in comps))


def test_tofu_numbers_skip_with_reasons():
    splits = _tiny_splits()
    nums = tofu_numbers(splits)  # no retain reference
    assert nums["tofu.forget_quality"].value is None
    assert "retain model" in nums["tofu.forget_quality"].reason
    del splits["world_facts"]
    nums = tofu_numbers(splits, [1.0])
    assert nums["tofu.model_utility"].value is None
    assert "tofu.world_facts_prob" in nums["tofu.model_utility"].reason
    assert nums["tofu.world_facts_rouge"].reason == "no world_facts split in the logs"
    assert "forget quality not measured: 2 candidate and 1 retain" in nums["tofu.forget_quality"].reason
    with pytest.raises(ValueError, match="unknown split"):
        tofu_numbers({"holdout": splits["forget"]})


def test_tofu_numbers_drop_missing_items():
    s = SplitScores(gt_mean_nll=[0.0, math.nan], rougeL_recall=[1.0, 0.0])
    nums = tofu_numbers({"forget": s})
    assert nums["tofu.forget_prob"].value == 1.0
    assert (nums["tofu.forget_prob"].n, nums["tofu.forget_prob"].excluded) == (1, 1)
    assert nums["tofu.forget_rouge"].value == 0.5
    assert nums["tofu.forget_truth_ratio"].value is None


@pytest.mark.parametrize(("n", "measured"), [(1, False), (3, False), (19, False), (20, True), (40, True)])
def test_forget_quality_on_too_few_items_is_withheld_not_passed(n, measured):
    # With 1 item the KS p-value is 1.0 whatever the models: a gate >= 0.05 would pass on it.
    r = np.linspace(0.2, 0.9, n)
    splits = {"forget": SplitScores(stored_truth_ratio=r)}
    far = r * 50  # a retain sample far away: a real test would say "different"
    fq = tofu_numbers(splits, far)["tofu.forget_quality"]
    if measured:
        assert fq.value == pytest.approx(forget_quality(r, far)) and fq.value < 0.05
    else:
        assert fq.value is None and fq.n == n
        assert fq.reason.startswith(f"forget quality not measured: {n} candidate and {n} retain-model")
        assert "Fix:" in fq.reason and fq.extra["min_items"] == FORGET_QUALITY_MIN_ITEMS == 20
        assert fq.extra["p_value_on_too_few_items"] == pytest.approx(forget_quality(r, far))
