"""The tofu view's per-item records, read back without a model: rescoring and TOFU's logs.

The tofu view (:mod:`unlearn_audit.views.tofu`) keeps one record per item of its four
splits: the gold, paraphrased and perturbed answers' mean NLLs, the truth ratio, the
greedy answer and its ROUGE scores. This module holds what the records are for once the
model is gone:

* :func:`splits_from_records` turns them back into one
  :class:`~unlearn_audit.scoring.tofu.SplitScores` per split, so
  ``tofu_numbers(splits_from_records(records), R)`` gives every TOFU number;
* :func:`forget_truth_ratios` gives a model's forget-set truth ratios, the reference
  sample of forget quality;
* :func:`write_legacy_logs` writes them as TOFU's legacy per-item logs, which
  ``unlearn-audit rescore`` reads back (:mod:`unlearn_audit.scoring.logs`).

:data:`PARAPHRASED_TRUE_SIDE` (the splits whose truth ratio takes the paraphrased answer
as its "true" side) is shared with the view, which builds its records by it. The view
computes its own numbers through these same functions, so a rescore reproduces them
exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_audit.scoring.logs import LEGACY_FILES, perturbed_count
from unlearn_audit.scoring.tofu import Generation, SplitScores

__all__ = [
    "PARAPHRASED_TRUE_SIDE",
    "forget_truth_ratios",
    "splits_from_records",
    "uneven_perturbed",
    "write_legacy_logs",
]

#: Splits whose truth ratio takes the paraphrased answer as its "true" side (TOFU
#: ``base_answer_key: paraphrased_answer``); the real-world sets use the gold answer.
PARAPHRASED_TRUE_SIDE: frozenset[str] = frozenset({"forget", "retain"})


def _nan(x: float | None) -> float:
    """A record's number as a float: ``None`` (missing) becomes ``nan``."""
    return math.nan if x is None else float(x)


def splits_from_records(records: Iterable[Mapping[str, Any]]) -> dict[str, SplitScores]:
    """Per-split :class:`SplitScores` from the tofu view's per-item records (no model).

    The inverse of the view's scoring: ``tofu_numbers(splits_from_records(records), R)``
    gives every TOFU number. Missing values (``None``) become ``nan`` and drop out of the
    means. On forget and retain the paraphrased losses are kept even when all are missing
    (their truth ratio is then skipped, not silently taken from the gold answer); on the
    real-world sets the gold answer is the true side. A split's perturbed-answer count is
    the one most of its items have (:func:`uneven_perturbed`); an item with another count
    gets ``nan`` for all of them, so it is excluded (and counted) from the truth ratio and
    the normalised probability rather than scored on other terms. (Taking the largest count
    instead let one item with an extra answer drop every other item.)

    Args:
        records: the tofu view's records (``ViewResult.records``), any order of splits.

    Returns:
        Split name -> scores, for the splits the records hold, items in record order.
    """
    out = {}
    for split, (k, recs) in _by_split(records).items():
        pert = None
        if k:
            pert = []
            for r in recs:
                row = [_nan(x) for x in r.get("perturbed_mean_nll") or ()]
                pert.append(row if len(row) == k else [math.nan] * k)
        out[split] = SplitScores(
            gt_mean_nll=[_nan(r.get("gt_mean_nll")) for r in recs],
            paraphrased_mean_nll=(
                [_nan(r.get("paraphrased_mean_nll")) for r in recs]
                if split in PARAPHRASED_TRUE_SIDE
                else None
            ),
            perturbed_mean_nll=pert,
            rougeL_recall=[_nan(r.get("rougeL_recall")) for r in recs],
            rouge1_recall=[_nan(r.get("rouge1_recall")) for r in recs],
            generations=tuple(
                Generation(
                    str(r["uid"]), r.get("question", ""), r.get("generation", ""), r.get("gold", "")
                )
                for r in recs
            ),
            index=tuple(str(r["uid"]) for r in recs),
            source=f"tofu records ({split})",
        )
    return out


def _by_split(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, list[Mapping[str, Any]]]]:
    """Split -> (its perturbed-answer count, :func:`~unlearn_audit.scoring.logs.perturbed_count`;
    its records in order)."""
    by_split: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        by_split.setdefault(rec["split"], []).append(rec)
    return {split: (perturbed_count(len(r.get("perturbed_mean_nll") or ()) for r in recs), recs)
            for split, recs in by_split.items()}


def uneven_perturbed(records: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, list[Mapping[str, Any]]]]:
    """Per split, its perturbed-answer count and the records whose count differs.

    Those records are left out of the truth ratio, the normalised probability and forget
    quality (:func:`splits_from_records`); the tofu view states them in its warnings. Only
    splits with such records are returned.
    """
    out = {}
    for split, (k, recs) in _by_split(records).items():
        odd = [r for r in recs if len(r.get("perturbed_mean_nll") or ()) != k]
        if k and odd:
            out[split] = (k, odd)
    return out


def forget_truth_ratios(
    records: Iterable[Mapping[str, Any]], compat: str = "none"
) -> np.ndarray | None:
    """The per-item forget-set truth ratios ``R`` in a model's records (``None`` if none).

    What forget quality compares: pass the retain model's to
    :func:`~unlearn_audit.scoring.tofu.tofu_numbers` as
    ``retain_forget_truth_ratios`` (computed with the same ``compat``).
    """
    forget = splits_from_records(r for r in records if r.get("split") == "forget").get("forget")
    return None if forget is None else forget.truth_ratios(compat)


def write_legacy_logs(records: Iterable[Mapping[str, Any]], directory: str | Path) -> Path:
    """Write the records as TOFU's legacy per-item eval logs, for ``unlearn-audit rescore``.

    One file per split present (``eval_log_forget.json``, ``eval_log.json``,
    ``eval_real_author_wo_options.json``, ``eval_real_world_wo_options.json``), each
    ``field -> {item index -> value}`` with TOFU's field names: ``avg_gt_loss``,
    ``avg_paraphrased_loss`` (the gold answer's loss on the real-world sets, as TOFU's
    ``base_answer_key: answer`` writes it), ``average_perturb_loss``, ``truth_ratio``,
    ``rougeL_recall``, ``rouge1_recall`` and ``generated_text`` (``[question, greedy
    answer, gold]``; TOFU stores the rendered prompt where we store the question).
    Missing values are written as ``null``.

    Args:
        records: the tofu view's records.
        directory: where to write (created if needed).

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        by_split.setdefault(rec["split"], []).append(rec)
    for split, recs in by_split.items():
        fields: dict[str, dict[str, Any]] = {
            name: {}
            for name in (
                "avg_gt_loss",
                "avg_paraphrased_loss",
                "average_perturb_loss",
                "truth_ratio",
                "rougeL_recall",
                "rouge1_recall",
                "generated_text",
            )
        }
        for r in recs:
            i = str(r["index"])
            fields["avg_gt_loss"][i] = r["gt_mean_nll"]
            fields["avg_paraphrased_loss"][i] = (
                r["paraphrased_mean_nll"] if split in PARAPHRASED_TRUE_SIDE else r["gt_mean_nll"]
            )
            fields["average_perturb_loss"][i] = list(r["perturbed_mean_nll"])
            fields["truth_ratio"][i] = r["truth_ratio"]
            fields["rougeL_recall"][i] = r["rougeL_recall"]
            fields["rouge1_recall"][i] = r["rouge1_recall"]
            fields["generated_text"][i] = [r["question"], r["generation"], r["gold"]]
        with open(directory / LEGACY_FILES[split], "w", encoding="utf-8") as f:
            json.dump(fields, f, indent=1)
    return directory
