"""ROUGE recall of a generation against its gold answer, exactly as TOFU scores it.

TOFU (``evaluate_util.py::eval_rouge_recall``) and open-unlearning
(``src/evals/metrics/utils.py::eval_text_similarity``) both build
``rouge_scorer.RougeScorer(['rouge1', 'rougeL'], use_stemmer=True)`` and call
``scorer.score(gold, generation)``: the gold answer is the *reference*, so the recall
is the share of the gold answer's (stemmed) unigrams / longest common subsequence that
the generation reproduces.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["rouge_recall"]


@lru_cache(maxsize=1)
def _scorer():
    # Built once and lazily: importing rouge_score pulls in nltk, which is slow.
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("ROUGE needs the rouge-score package: pip install rouge-score") from e
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_recall(generation: str, gold: str) -> dict[str, float]:
    """ROUGE-1 and ROUGE-L recall of ``generation`` with ``gold`` as the reference.

    Definition: ``rouge-score``'s ``rouge1`` and ``rougeL`` recall, Porter stemmer on,
    gold answer as reference (TOFU ``evaluate_util.py::eval_rouge_recall``; the
    ``rougeL_recall`` that open-unlearning's ``*_Q_A_ROUGE`` metrics average).

    Args:
        generation: the model's answer.
        gold: the gold answer.

    Returns:
        ``{"rouge1": recall, "rougeL": recall}``, each in [0, 1]; 0 when the gold
        answer has no tokens.
    """
    scores = _scorer().score(gold, generation)
    return {"rouge1": float(scores["rouge1"].recall), "rougeL": float(scores["rougeL"].recall)}
