"""``unlearn-audit diff OLD.json NEW.json``: what moved between two audit runs, as markdown.

Prints a table of every (model, metric) whose value moved by more than ``--tolerance``
or whose outcome changed (old, new, delta, outcome change), then the number unchanged and
the metrics added or removed. ``--exit-code`` makes it usable as a CI check: a number on
one side and NaN on the other is a change; NaN on both sides is listed, not a change. A
malformed file is a one-line error naming the file and the entry (exit 2).
"""

from __future__ import annotations

import argparse
import math
import sys

from unlearn_audit.report._diff import diff_results, load_results, render_diff

__all__ = ["add_arguments", "run"]


def _tolerance(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
    # `not >= 0` refuses NaN too (a NaN tolerance made every change "unchanged"); an
    # infinite one would hide every move
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {raw!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``diff``'s arguments on its subparser."""
    parser.add_argument("old", metavar="OLD.json", help="results.json of the earlier run")
    parser.add_argument("new", metavar="NEW.json", help="results.json of the later run")
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=0.0,
        help="absolute change a value may make and still count as unchanged, in the metric's "
        "own units (fractions for rates) (default: 0)",
    )
    parser.add_argument(
        "--exit-code",
        action="store_true",
        help="exit with status 1 when anything moved, was added or was removed (default: off)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the diff; 0, or 1 with ``--exit-code`` when something changed."""
    diff = diff_results(load_results(args.old), load_results(args.new), args.tolerance)
    sys.stdout.write(render_diff(diff, args.old, args.new))
    changed = bool(diff.moved or diff.added or diff.removed)
    return 1 if (args.exit_code and changed) else 0
