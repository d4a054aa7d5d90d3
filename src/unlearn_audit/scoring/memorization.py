"""Exact memorisation and extraction strength: teacher-forced greedy agreement with the gold answer.

Pure functions on two token-id lists: the gold answer's tokens and, at each of their
positions, the model's most likely next token given the prompt and the gold tokens before
it (``TokenScores.top_ids``, one teacher-forced pass). Both follow open-unlearning
(``src/evals/metrics/memorization.py``), which scores the answer's tokens without the
closing end-of-turn token (its ``tokenwise_vocab_logprobs`` drops the last label).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["exact_memorization", "extraction_strength"]


def _check(predicted: Sequence[int], target: Sequence[int]) -> None:
    if len(predicted) != len(target):
        raise ValueError(
            f"one prediction per gold token is needed; got {len(predicted)} predictions for "
            f"{len(target)} tokens"
        )


def exact_memorization(predicted: Sequence[int], target: Sequence[int]) -> float:
    """Exact memorisation (EM): the share of answer tokens the model predicts greedily.

    Definition: ``(1/n) * sum_t [argmax_z p(z | x, y_<t) == y_t]`` over the ``n`` gold
    answer tokens, teacher-forced.

    Source: Tirumala et al. 2022, "Memorization Without Overfitting" (exact memorisation);
    open-unlearning ``src/evals/metrics/memorization.py`` (``exact_memorization``).

    Returns:
        EM in [0, 1]; ``nan`` for an empty answer (open-unlearning: ``None``, dropped).
    """
    _check(predicted, target)
    if not target:
        return math.nan
    return sum(int(p) == int(t) for p, t in zip(predicted, target, strict=True)) / len(target)


def extraction_strength(predicted: Sequence[int], target: Sequence[int]) -> float:
    """Extraction strength (ES): how short a gold prefix makes the model say the rest.

    Definition: ``1 - k / n`` with ``k`` the smallest index such that the model's greedy
    predictions of tokens ``k..n-1`` (teacher-forced on the gold tokens before each) all
    equal the gold tokens; 1 when the whole answer is reproduced from the question alone.
    When no suffix matches (the last token is mispredicted) open-unlearning's loop ends at
    ``k = n - 1`` and so gives ``1 / n``; we return the same, so the numbers agree with
    theirs (the paper's definition would give 0 there; see docs/differences.md).

    Source: Wang et al. 2025, "Towards Effective Evaluations and Comparisons for LLM
    Unlearning Methods" (ICLR; extraction strength); open-unlearning
    ``src/evals/metrics/memorization.py`` (``extraction_strength``).

    Returns:
        ES in (0, 1]; 0 for an empty answer (open-unlearning's value there).
    """
    _check(predicted, target)
    n = len(target)
    if n == 0:
        return 0.0
    # The smallest k whose suffix matches: walk back from the end while tokens agree.
    first = n
    while first > 0 and int(predicted[first - 1]) == int(target[first - 1]):
        first -= 1
    k = min(first, n - 1)  # no matching suffix: open-unlearning's loop stops at n - 1
    return 1 - k / n
