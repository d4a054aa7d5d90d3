"""Readers for stored per-item eval logs: TOFU's legacy format and open-unlearning's.

Both become one :class:`~unlearn_audit.scoring.tofu.SplitScores` per split, so every
TOFU number can be recomputed without a model (``unlearn-audit rescore``) and a
metric change can be regression-checked against old runs.

Formats (auto-detected by :func:`read_logs`):

* ``tofu_legacy`` -- what TOFU's ``evaluate_util.py`` writes: a directory holding
  ``eval_log_forget.json`` (forget), ``eval_log.json`` (retain),
  ``eval_real_author_wo_options.json`` and ``eval_real_world_wo_options.json``, each a
  dict ``field -> {item index (str) -> value}`` with the fields ``avg_gt_loss``,
  ``avg_paraphrased_loss``, ``average_perturb_loss`` (a list per item),
  ``rougeL_recall``, ``rouge1_recall``, ``truth_ratio`` and ``generated_text``
  (``[prompt, greedy answer, gold answer]``). Also accepted: TOFU's
  ``eval_log_aggregated.json`` (the four files under their file names) or one of the
  four files on its own.
* ``open_unlearning`` -- open-unlearning's ``TOFU_EVAL.json`` (a file, or a directory
  holding it): ``metric -> {"agg_value": ..., "value_by_index": {idx: {...}}}`` with
  the metric keys of ``configs/eval/tofu_metrics/*.yaml``: ``{p}_Q_A_Prob``,
  ``{p}_Q_A_PARA_Prob``, ``{p}_Q_A_PERT_Prob`` (``prob`` and ``avg_loss`` per item,
  lists for the perturbed answers), ``{p}_Q_A_ROUGE`` (``rougeL_recall``,
  ``rouge1_recall``, ``input``, ``generation``, ``ground_truth``) and
  ``forget_truth_ratio`` / ``{p}_Truth_Ratio`` (``score`` = R), for the prefixes
  ``forget``, ``retain``, ``ra`` (real authors) and ``wf`` (world facts).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_audit.scoring.tofu import SPLITS, Generation, SplitScores

__all__ = [
    "LEGACY_FILES",
    "OPEN_UNLEARNING_FILE",
    "OPEN_UNLEARNING_METRICS",
    "OPEN_UNLEARNING_PREFIXES",
    "EvalLogs",
    "LogFormatError",
    "RetainMatch",
    "detect_format",
    "match_retain_truth_ratios",
    "read_logs",
    "read_retain_truth_ratios",
]

#: split -> TOFU legacy file name.
LEGACY_FILES: dict[str, str] = {
    "forget": "eval_log_forget.json",
    "retain": "eval_log.json",
    "real_authors": "eval_real_author_wo_options.json",
    "world_facts": "eval_real_world_wo_options.json",
}
LEGACY_AGGREGATED_FILE = "eval_log_aggregated.json"
#: split -> open-unlearning metric-name prefix.
OPEN_UNLEARNING_PREFIXES: dict[str, str] = {
    "forget": "forget",
    "retain": "retain",
    "real_authors": "ra",
    "world_facts": "wf",
}
OPEN_UNLEARNING_FILE = "TOFU_EVAL.json"
#: This package's metric name -> open-unlearning's metric key (``TOFU_EVAL.json``; the
#: first five are also its ``TOFU_SUMMARY.json`` keys), for comparing the two.
OPEN_UNLEARNING_METRICS: dict[str, str] = {
    "tofu.forget_quality": "forget_quality",
    "tofu.model_utility": "model_utility",
    "tofu.forget_truth_ratio": "forget_truth_ratio",
    "tofu.forget_rouge": "forget_Q_A_ROUGE",
    "tofu.forget_prob": "forget_Q_A_Prob",
    "tofu.retain_prob": "retain_Q_A_Prob",
    "tofu.retain_rouge": "retain_Q_A_ROUGE",
    "tofu.retain_truth_ratio": "retain_Truth_Ratio",
    "tofu.real_authors_prob": "ra_Q_A_Prob_normalised",
    "tofu.real_authors_rouge": "ra_Q_A_ROUGE",
    "tofu.real_authors_truth_ratio": "ra_Truth_Ratio",
    "tofu.world_facts_prob": "wf_Q_A_Prob_normalised",
    "tofu.world_facts_rouge": "wf_Q_A_ROUGE",
    "tofu.world_facts_truth_ratio": "wf_Truth_Ratio",
}
_OU_SUMMARY_FILE = "TOFU_SUMMARY.json"
_LEGACY_FIELDS = (
    "avg_gt_loss",
    "avg_paraphrased_loss",
    "average_perturb_loss",
    "rougeL_recall",
    "rouge1_recall",
    "truth_ratio",
    "generated_text",
)
_EXPECTED = (
    f"a TOFU legacy log directory ({', '.join(LEGACY_FILES.values())}, or "
    f"{LEGACY_AGGREGATED_FILE}) or an open-unlearning {OPEN_UNLEARNING_FILE} "
    "(the file or a directory holding it)"
)


class LogFormatError(ValueError):
    """Stored eval logs that cannot be read: wrong place, unknown format or a bad field."""


@dataclass
class EvalLogs:
    """Stored eval logs of one model, per split.

    Attributes:
        path: what was read.
        format: ``"tofu_legacy"`` or ``"open_unlearning"``.
        splits: split name -> per-item scores; only the splits the logs hold.
    """

    path: Path
    format: str
    splits: dict[str, SplitScores] = field(default_factory=dict)

    def generation_records(self, split: str = "forget") -> list[dict[str, str]]:
        """The saved greedy answers of ``split`` as dicts ``index, prompt, generation, gold``
        (empty when the logs hold none), for rescoring leak rates."""
        scores = self.splits.get(split)
        return scores.generation_records() if scores is not None else []


# --------------------------------------------------------------------------- helpers


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LogFormatError(f"{path}: not valid JSON ({e})") from e


def _num(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LogFormatError(f"{where}: expected a number, got {value!r:.80}")
    return float(value)


def _num_list(value: Any, where: str) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise LogFormatError(f"{where}: expected a list of numbers, got {value!r:.80}")
    return [_num(v, where) for v in value]


def perturbed_count(counts: Iterable[int]) -> int:
    """A split's perturbed-answer count: the most common one (the larger on a tie), 0 for
    no items. Taking the largest instead let one item with an extra answer drop all others."""
    tally = Counter(counts)
    return max(tally, key=lambda c: (tally[c], c)) if tally else 0


def _even(rows: list[list[float]] | None) -> list[list[float]] | None:
    """Perturbed-answer lists of one count (:func:`perturbed_count`); an item with another
    count gets ``nan`` for all, so it drops out of the truth ratio and is counted there
    (as :func:`~unlearn_audit.scoring.tofu_records.splits_from_records` does)."""
    if not rows:
        return rows
    k = perturbed_count(len(row) for row in rows)
    return [row if len(row) == k else [math.nan] * k for row in rows]


def _aligned(per_index: Mapping[str, Any], index: tuple[str, ...], where: str) -> list[Any]:
    missing = [i for i in index if i not in per_index]
    if missing:
        raise LogFormatError(
            f"{where}: no value for item(s) {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)} of {len(index)})"
        )
    return [per_index[i] for i in index]


# --------------------------------------------------------------------------- TOFU legacy


def _legacy_split(data: Any, source: str) -> SplitScores:
    """One TOFU legacy per-split log (``field -> {index -> value}``) as SplitScores."""
    if not isinstance(data, dict):
        raise LogFormatError(
            f"{source}: expected a JSON object of fields, got {type(data).__name__}"
        )
    present = [f for f in _LEGACY_FIELDS if f in data]
    if not present:
        raise LogFormatError(
            f"{source}: none of TOFU's per-item fields ({', '.join(_LEGACY_FIELDS)}) found; "
            f"its keys are {sorted(data)[:8]}"
        )
    for f in present:
        if not isinstance(data[f], dict):
            raise LogFormatError(
                f"{source}: field {f!r} should map item index -> value, got {type(data[f]).__name__}"
            )
    index = tuple(str(k) for k in data[present[0]])

    def column(name: str, parse) -> Any:
        if name not in data:
            return None
        where = f"{source}: {name}"
        return [
            parse(v, f"{where}[{i}]")
            for i, v in zip(index, _aligned(data[name], index, where), strict=True)
        ]

    generations = None
    if "generated_text" in data:
        generations = []
        where = f"{source}: generated_text"
        for i, v in zip(index, _aligned(data["generated_text"], index, where), strict=True):
            if not (
                isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(t, str) for t in v)
            ):
                raise LogFormatError(
                    f"{where}[{i}]: expected [prompt, generation, gold], got {v!r:.80}"
                )
            generations.append(Generation(index=i, prompt=v[0], generation=v[1], gold=v[2]))

    return SplitScores(
        gt_mean_nll=column("avg_gt_loss", _num),
        paraphrased_mean_nll=column("avg_paraphrased_loss", _num),
        perturbed_mean_nll=_even(column("average_perturb_loss", _num_list)),
        rougeL_recall=column("rougeL_recall", _num),
        rouge1_recall=column("rouge1_recall", _num),
        generations=generations,
        stored_truth_ratio=column("truth_ratio", _num),
        index=index,
        source=source,
    )


def _read_legacy_dir(path: Path) -> EvalLogs:
    splits = {}
    for split, name in LEGACY_FILES.items():
        f = path / name
        if f.is_file():
            splits[split] = _legacy_split(_load_json(f), str(f))
    if not splits and (path / LEGACY_AGGREGATED_FILE).is_file():
        return _read_legacy_aggregated(
            path / LEGACY_AGGREGATED_FILE, _load_json(path / LEGACY_AGGREGATED_FILE)
        )
    return EvalLogs(path, "tofu_legacy", splits)


def _read_legacy_aggregated(path: Path, data: dict) -> EvalLogs:
    splits = {
        split: _legacy_split(data[name], f"{path}[{name}]")
        for split, name in LEGACY_FILES.items()
        if name in data
    }
    return EvalLogs(path, "tofu_legacy", splits)


# --------------------------------------------------------------------------- open-unlearning


def _ou_lookup(data: Mapping[str, Any], key: str) -> Any:
    # Exact key first; case-insensitively as a fallback (older releases spelled some
    # metric names differently, e.g. ``forget_Truth_Ratio``).
    if key in data:
        return data[key]
    lowered = {k.lower(): k for k in data}
    return data.get(lowered.get(key.lower(), ""), None)


def _ou_values(data: Mapping[str, Any], key: str, source: str) -> dict[str, Any] | None:
    entry = _ou_lookup(data, key)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("value_by_index"), dict):
        raise LogFormatError(f"{source}: metric {key!r} has no per-item 'value_by_index'")
    return {str(k): v for k, v in entry["value_by_index"].items()}


def _ou_field(item: Any, name: str, where: str) -> Any:
    if item is None:
        return None
    if not isinstance(item, dict):
        raise LogFormatError(f"{where}: expected an object with {name!r}, got {item!r:.80}")
    return item.get(name)


def _ou_mean_nll(item: Any, where: str, many: bool) -> Any:
    """``avg_loss`` of one probability entry; ``-log(prob)`` when only ``prob`` is there."""
    if item is None:
        return None
    loss = _ou_field(item, "avg_loss", where)
    if loss is None:
        prob = _ou_field(item, "prob", where)
        if prob is None:
            return None
        probs = _num_list(_as_list(prob), where) if many else [_num(prob, where)]
        with np.errstate(divide="ignore"):
            loss = [float(-np.log(p)) for p in probs]
        return loss if many else loss[0]
    return _num_list(_as_list(loss), where) if many else _num(loss, where)


def _as_list(value: Any) -> Any:
    # A perturbed-answer entry with a single option may be stored as a bare number.
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _ou_split(data: Mapping[str, Any], split: str, source: str) -> SplitScores | None:
    p = OPEN_UNLEARNING_PREFIXES[split]
    tr_key = "forget_truth_ratio" if split == "forget" else f"{p}_Truth_Ratio"
    keys = {
        "gt": f"{p}_Q_A_Prob",
        "para": f"{p}_Q_A_PARA_Prob",
        "pert": f"{p}_Q_A_PERT_Prob",
        "rouge": f"{p}_Q_A_ROUGE",
        "tr": tr_key,
    }
    values = {name: _ou_values(data, key, source) for name, key in keys.items()}
    present = [name for name, v in values.items() if v is not None]
    if not present:
        return None
    index = tuple(values[present[0]])

    def column(name: str, parse) -> Any:
        per = values[name]
        if per is None:
            return None
        where = f"{source}: {keys[name]}"
        return [
            parse(v, f"{where}[{i}]")
            for i, v in zip(index, _aligned(per, index, where), strict=True)
        ]

    gt = column("gt", lambda v, w: _num(_ou_mean_nll(v, w, many=False), w))
    para = column("para", lambda v, w: _num(_ou_mean_nll(v, w, many=False), w))
    pert = column("pert", lambda v, w: _ou_mean_nll(v, w, many=True))
    if pert is not None and any(x is None for x in pert):
        # An unscored item: nan across its perturbed answers, so it drops out of the means.
        k = max((len(x) for x in pert if x is not None), default=1)
        pert = [x if x is not None else [math.nan] * k for x in pert]
    pert = _even(pert)
    # The probabilities as stored (float32 exp(-avg_loss) in their runs): what their
    # probability and probability_w_options average, for exact rescoring.
    gt_prob = column("gt", lambda v, w: _num(_ou_field(v, "prob", w), w))
    pert_prob = column(
        "pert",
        lambda v, w: None if _ou_field(v, "prob", w) is None
        else _num_list(_as_list(_ou_field(v, "prob", w)), w),
    )
    if pert_prob is not None and any(x is None for x in pert_prob):
        pert_prob = None  # incomplete: recompute from the losses instead
    rougeL = column("rouge", lambda v, w: _num(_ou_field(v, "rougeL_recall", w), w))
    rouge1 = column("rouge", lambda v, w: _num(_ou_field(v, "rouge1_recall", w), w))
    stored_tr = column("tr", lambda v, w: _num(_ou_field(v, "score", w), w))

    generations = None
    if values["rouge"] is not None:
        gens = []
        for i, v in zip(
            index, _aligned(values["rouge"], index, f"{source}: {keys['rouge']}"), strict=True
        ):
            texts = [
                _ou_field(v, k, f"{source}: {keys['rouge']}[{i}]")
                for k in ("input", "generation", "ground_truth")
            ]
            if not all(isinstance(t, str) for t in texts):
                gens = None
                break
            gens.append(Generation(index=i, prompt=texts[0], generation=texts[1], gold=texts[2]))
        generations = gens

    return SplitScores(
        gt_mean_nll=gt,
        paraphrased_mean_nll=para,
        perturbed_mean_nll=pert,
        rougeL_recall=rougeL,
        rouge1_recall=rouge1,
        generations=generations,
        stored_truth_ratio=stored_tr,
        gt_prob=gt_prob,
        perturbed_prob=pert_prob,
        index=index,
        source=source,
    )


def _read_open_unlearning(path: Path, data: dict) -> EvalLogs:
    splits = {}
    for split in SPLITS:
        s = _ou_split(data, split, str(path))
        if s is not None:
            splits[split] = s
    if not splits:
        raise LogFormatError(
            f"{path}: an open-unlearning eval file without any TOFU per-item metric "
            "(expected keys such as forget_truth_ratio, forget_Q_A_Prob, retain_Q_A_ROUGE)"
        )
    return EvalLogs(path, "open_unlearning", splits)


# --------------------------------------------------------------------------- detection


def _is_open_unlearning(data: Any) -> bool:
    return isinstance(data, dict) and any(
        isinstance(v, dict) and ("value_by_index" in v or "agg_value" in v) for v in data.values()
    )


def _is_summary(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, (int, float)) or v is None for v in data.values())
    )


def detect_format(path: str | Path) -> str:
    """``"tofu_legacy"`` or ``"open_unlearning"`` for the logs at ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        LogFormatError: it is neither format; the message names what was expected.
    """
    return read_logs(path).format


def read_logs(path: str | Path) -> EvalLogs:
    """Read stored per-item eval logs, auto-detecting their format.

    Args:
        path: a TOFU legacy log directory, TOFU's ``eval_log_aggregated.json``, one
            legacy per-split file, an open-unlearning ``TOFU_EVAL.json`` or a
            directory holding one.

    Returns:
        The logs, one :class:`SplitScores` per split present.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        LogFormatError: neither format, invalid JSON, or a field of the wrong shape;
            the message names the file and what was expected.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory (expected {_EXPECTED})")
    if path.is_dir():
        if any(
            (path / name).is_file() for name in (*LEGACY_FILES.values(), LEGACY_AGGREGATED_FILE)
        ):
            return _read_legacy_dir(path)
        if (path / OPEN_UNLEARNING_FILE).is_file():
            return read_logs(path / OPEN_UNLEARNING_FILE)
        if (path / _OU_SUMMARY_FILE).is_file():
            raise LogFormatError(
                f"{path}: holds only open-unlearning's {_OU_SUMMARY_FILE} (aggregates, no "
                f"per-item values); rescoring needs {OPEN_UNLEARNING_FILE} from the same run"
            )
        found = sorted(p.name for p in path.iterdir())[:10]
        raise LogFormatError(
            f"{path}: no eval logs found; expected {_EXPECTED}. It holds: "
            f"{', '.join(found) if found else 'nothing'}"
        )

    data = _load_json(path)
    if isinstance(data, dict) and any(name in data for name in LEGACY_FILES.values()):
        return _read_legacy_aggregated(path, data)
    if path.name in LEGACY_FILES.values():
        split = next(s for s, name in LEGACY_FILES.items() if name == path.name)
        return EvalLogs(path, "tofu_legacy", {split: _legacy_split(data, str(path))})
    if _is_open_unlearning(data):
        return _read_open_unlearning(path, data)
    if isinstance(data, dict) and any(f in data for f in _LEGACY_FIELDS):
        raise LogFormatError(
            f"{path}: looks like one TOFU per-split log, but its name does not say which split; "
            f"name it one of {', '.join(LEGACY_FILES.values())} or pass its directory"
        )
    if _is_summary(data):
        raise LogFormatError(
            f"{path}: looks like open-unlearning's {_OU_SUMMARY_FILE} (aggregates only); "
            f"rescoring needs the per-item {OPEN_UNLEARNING_FILE}"
        )
    raise LogFormatError(f"{path}: not a recognised eval log; expected {_EXPECTED}")


def read_retain_truth_ratios(path: str | Path, compat: str = "none") -> np.ndarray:
    """The retain model's per-item forget-set truth ratios ``R`` from its stored logs.

    The reference sample of :func:`~unlearn_audit.scoring.tofu.forget_quality`
    (``--retain-logs``): recomputed from the forget-set losses when present (TOFU's
    ``get_forget_quality``), else open-unlearning's stored ``forget_truth_ratio``
    scores (what its ``ks_test`` reads).

    Args:
        path: the retain model's logs, any format :func:`read_logs` accepts.
        compat: the conventions to recompute ``R`` with (see
            :func:`~unlearn_audit.scoring.tofu.truth_ratio`).

    Returns:
        Array of ``R`` values, one per forget item.

    Raises:
        LogFormatError: the logs hold no forget-set truth ratios.
    """
    logs = read_logs(path)
    forget = logs.splits.get("forget")
    r = forget.truth_ratios(compat) if forget is not None else None
    if r is None:
        raise LogFormatError(
            f"{path}: no forget-set truth ratios (need avg_paraphrased_loss and "
            f"average_perturb_loss in {LEGACY_FILES['forget']}, or forget_truth_ratio / "
            f"forget_Q_A_PARA_Prob + forget_Q_A_PERT_Prob in {OPEN_UNLEARNING_FILE})"
        )
    return r


@dataclass(frozen=True)
class RetainMatch:
    """The retain logs' forget-set truth ratios that belong to the candidate's questions.

    Attributes:
        truth_ratios: ``R`` of each log item matched to a candidate question (each used once),
            in the candidate's order: the reference sample of forget quality.
        matched: candidate questions found in the logs.
        n_questions: the candidate's forget questions.
        n_logs: forget items in the logs.
        unmatched: the candidate's questions not found, in order.
    """

    truth_ratios: np.ndarray
    matched: int
    n_questions: int
    n_logs: int
    unmatched: tuple[str, ...]

    def note(self, path: str | Path) -> str:
        """Where the sample came from, with how the logs' items were matched."""
        return (f"retain logs {path} ({len(self.truth_ratios)} of their {self.n_logs} forget "
                f"items matched by question text)")


def _norm(text: str) -> str:
    return " ".join(text.split())


def match_retain_truth_ratios(
    path: str | Path, questions: list[str], compat: str = "none"
) -> RetainMatch:
    """The retain logs' forget-set ``R`` for the candidate's forget ``questions``.

    Stored logs carry no dataset id, so an item is matched by its question: the log
    item's prompt (TOFU's ``generated_text[0]``, the rendered ``[INST] question [/INST]``;
    open-unlearning's ``forget_Q_A_ROUGE`` ``input``) is the question itself or holds it
    (the shortest such prompt wins, each log item is used once). So logs of the whole
    split serve a candidate run with ``--limit``, and logs of another dataset or split
    are refused instead of compared ("sample sizes differ" was all it used to say).

    Raises:
        LogFormatError: the logs hold no forget-set truth ratios or no question text, or
            fewer than half of ``questions`` are in them; the message says how many
            matched, shows one that did not and the fix.
    """
    r = read_retain_truth_ratios(path, compat)
    forget = read_logs(path).splits["forget"]
    fix = ("Fix: pass the stored logs of the retain model evaluated on this forget split, or "
           "--retain-model to run the retain model instead.")
    if forget.generations is None:
        raise LogFormatError(
            f"--retain-logs {path}: the forget-set logs store no question text (TOFU's "
            f"generated_text, open-unlearning's forget_Q_A_ROUGE input), so they cannot be "
            f"checked against the candidate's {len(questions)} forget questions. {fix}"
        )
    prompts = [_norm(g.prompt) for g in forget.generations]
    exact: dict[str, list[int]] = {}
    for j, p in enumerate(prompts):
        exact.setdefault(p, []).append(j)
    used: set[int] = set()
    picked: list[int] = []
    unmatched: list[str] = []
    for q in questions:
        nq = _norm(q)
        found = exact.get(nq) or [j for j, p in enumerate(prompts) if nq and nq in p]
        if not found:
            unmatched.append(q)
            continue
        free = [j for j in found if j not in used]
        if free:  # a repeated question found once counts as found, not as a second sample
            j = min(free, key=lambda j: len(prompts[j]))
            used.add(j)
            picked.append(j)
    matched = len(questions) - len(unmatched)
    if questions and 2 * matched < len(questions):
        example = f" e.g. {unmatched[0]!r} is not in them" if unmatched else ""
        raise LogFormatError(
            f"--retain-logs {path}: only {matched} of the candidate's {len(questions)} forget "
            f"questions are among the logs' {len(prompts)} forget items;{example}. They are "
            f"not the retain model's evaluation of this dataset's forget split. {fix}"
        )
    return RetainMatch(np.asarray([r[j] for j in picked], dtype=np.float64), matched,
                       len(questions), len(prompts), tuple(unmatched))
