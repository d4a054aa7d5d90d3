"""``unlearn-audit rescore LOGDIR``: every TOFU number from stored per-item logs, no model.

Reads TOFU's legacy per-item logs or open-unlearning's ``TOFU_EVAL.json`` (see
:mod:`unlearn_audit.scoring.logs`), recomputes forget quality (with ``--retain-logs``),
model utility and its nine components, and the forget-set numbers, and prints them as a
table or, with ``--json``, as one JSON object ``metric name -> value`` (``null`` when
skipped; the reason goes to stderr).

``--compat`` picks the formulas: ``auto`` (the default) follows whoever wrote the logs, so
open-unlearning's ``TOFU_EVAL.json`` is rescored with open-unlearning's formulas, epsilons
included, and gives the numbers of its ``TOFU_SUMMARY.json``; TOFU's legacy logs get
TOFU's. ``none`` or ``open-unlearning`` force one convention for both the candidate and
the retain logs. Novel-recall leak rates are added from the saved
forget-set generations once :mod:`unlearn_audit.scoring.novel` provides
``rescore_generations``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unlearn_audit.scoring.logs import (
    EvalLogs,
    match_retain_truth_ratios,
    read_logs,
    read_retain_truth_ratios,
)
from unlearn_audit.scoring.tofu import COMPAT_MODES, TofuNumber, check_compat, tofu_numbers

__all__ = ["NOVEL_KEYS", "add_arguments", "compat_for", "rescore", "run"]

#: The novel-recall numbers taken from ``scoring.novel.rescore_generations`` when it exists.
NOVEL_KEYS: tuple[str, ...] = ("novel_recall.leak_rate", "novel_recall.uncorrected_rate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``rescore``'s arguments on its subparser."""
    parser.add_argument(
        "logdir",
        metavar="LOGDIR",
        help="the candidate's stored eval logs: a TOFU legacy log directory "
        "(eval_log_forget.json, eval_log.json, eval_real_author_wo_options.json, "
        "eval_real_world_wo_options.json) or open-unlearning's TOFU_EVAL.json (file or directory)",
    )
    parser.add_argument(
        "--retain-logs",
        metavar="DIR",
        default=None,
        help="the retain model's stored eval logs (either format), the reference sample of "
        "forget quality (default: none, so forget quality is reported as skipped)",
    )
    parser.add_argument(
        "--compat",
        choices=("auto", *COMPAT_MODES),
        default="auto",
        help="whose formulas to use: auto follows the logs' producer (open-unlearning's "
        "TOFU_EVAL.json -> open-unlearning, with its 1e-10 epsilons; TOFU legacy logs -> "
        "none, TOFU's exact forms); or force one (default: auto)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object, metric name -> value, instead of a table (default: table)",
    )


def compat_for(logs: EvalLogs, compat: str = "auto") -> str:
    """The conventions to rescore ``logs`` with: ``compat``, or for ``auto`` its producer's."""
    if compat == "auto":
        return "open-unlearning" if logs.format == "open_unlearning" else "none"
    return check_compat(compat)


def rescore(
    logdir: str | Path, retain_logs: str | Path | None = None, compat: str = "auto"
) -> tuple[EvalLogs, dict[str, TofuNumber]]:
    """Read the logs and compute every number ``rescore`` prints.

    Args:
        logdir: the candidate's stored logs (any format :func:`read_logs` accepts).
        retain_logs: the retain model's stored logs, for forget quality; ``None`` skips it.
        compat: ``auto`` (the candidate logs' producer's formulas, see :func:`compat_for`),
            ``none`` or ``open-unlearning``.

    Returns:
        The candidate's logs and metric name -> :class:`TofuNumber` (TOFU numbers, then
        the novel-recall leak rates when the scorer is available).
    """
    logs = read_logs(logdir)
    mode = compat_for(logs, compat)
    retain_r = None
    if retain_logs is not None:
        forget = logs.splits.get("forget")
        if forget is not None and forget.generations:
            # Matched by question, as the tofu view does: retain logs of another dataset or
            # split are refused instead of compared.
            prompts = [g.prompt for g in forget.generations]
            retain_r = match_retain_truth_ratios(retain_logs, prompts, mode).truth_ratios
        else:  # nothing to match on: the logs' own order, as TOFU compares them
            retain_r = read_retain_truth_ratios(retain_logs, mode)
    numbers = tofu_numbers(logs.splits, retain_r, mode)
    numbers.update(_novel_numbers(logs))
    return logs, numbers


# ----------------------------------------------------------------------------------------
# HOOK: novel-recall leak rates from saved generations.
# ``unlearn_audit.scoring.novel.rescore_generations(records) -> dict`` (owned by the
# novel-content scorer) receives the forget set's saved greedy answers as
# ``(prompt, generation, gold)`` triples and returns ``novel_recall.leak_rate`` and
# ``novel_recall.uncorrected_rate`` (numbers or None), their ``..._ci`` intervals, and the
# counts ``n``/``excluded`` (corrected scorer) and ``uncorrected_n``. Until that module
# lands, rescore reports the TOFU numbers only.
# ----------------------------------------------------------------------------------------
def _novel_numbers(logs: EvalLogs) -> dict[str, TofuNumber]:
    try:
        from unlearn_audit.scoring.novel import rescore_generations
    except ImportError as e:
        if getattr(e, "name", None) not in (None, "unlearn_audit.scoring.novel"):
            # novel.py exists but one of its own imports failed: say so, keep going.
            print(
                f"unlearn-audit rescore: note: novel-recall rescoring unavailable ({e})",
                file=sys.stderr,
            )
        return {}
    records = logs.generation_records("forget")
    if not records:
        reason = "the logs hold no saved forget-set generations"
        return {key: TofuNumber(None, 0, reason=reason) for key in NOVEL_KEYS}
    result = rescore_generations([(r["prompt"], r["generation"], r["gold"]) for r in records])
    counts = {
        "novel_recall.leak_rate": (result.get("n"), result.get("excluded", 0)),
        "novel_recall.uncorrected_rate": (result.get("uncorrected_n", result.get("n_total")), 0),
    }
    out = {}
    for key in NOVEL_KEYS:
        value = result.get(key)
        n, excluded = counts[key]
        ci = result.get(f"{key}_ci")
        note = f"95% CI [{ci[0]:.4g}, {ci[1]:.4g}]" if ci and None not in ci else ""
        if value is None:
            note = note or f"rescore_generations returned no {key}"
        out[key] = TofuNumber(
            None if value is None else float(value),
            None if n is None else int(n),
            int(excluded or 0),
            reason=note,
        )
    return out


# ----------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "skipped" if value is None else f"{value:.4g}"


def run(args: argparse.Namespace) -> int:
    """Print every rescored number; 0 on success (errors reach the CLI as exceptions)."""
    compat = getattr(args, "compat", "auto")
    logs, numbers = rescore(args.logdir, args.retain_logs, compat)
    if args.json:
        for name, num in numbers.items():
            if num.value is None:
                print(f"unlearn-audit rescore: {name} skipped: {num.reason}", file=sys.stderr)
        print(json.dumps({name: num.value for name, num in numbers.items()}, indent=2))
        return 0

    from tabulate import tabulate

    print(
        f"TOFU numbers rescored from {logs.path} ({logs.format}; splits: "
        f"{', '.join(logs.splits)}; compat: {compat_for(logs, compat)})"
    )
    if args.retain_logs is None:
        print("forget quality needs --retain-logs DIR (the retain model's stored logs)")
    else:
        print(f"forget quality against {args.retain_logs}")
    rows = [
        [name, _fmt(num.value), "" if num.n is None else num.n, num.excluded or "", num.reason]
        for name, num in numbers.items()
    ]
    print(tabulate(rows, headers=["metric", "value", "n", "excluded", "note"], tablefmt="github"))
    return 0
