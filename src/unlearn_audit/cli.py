"""The ``unlearn-audit`` console script. Each subcommand lives in ``commands/<name>.py``
with ``add_arguments(parser)`` and ``run(args) -> int``, so adding one touches no other."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> (module under unlearn_audit.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build-world": ("build_world", "Rebuild the tiny world's models (training); --ship replaces the shipped copies."),
    "world-stats": ("world_stats", "Fact recall of each tiny-world model on forget and retain authors."),
    "rescore": ("rescore", "Compute TOFU and leak numbers from stored per-item logs, no model needed."),
    "diff": ("diff", "Markdown table of what moved between two results.json files."),
    "views": ("views", "Every audit view: its module, metrics and --view-option options."),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unlearn-audit", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(f"unlearn_audit.commands.{module}")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"unlearn-audit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `unlearn-audit views | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so exit's flush is quiet
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
