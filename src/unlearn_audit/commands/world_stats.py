"""``unlearn-audit world-stats``: fact recall of each model of a built-in world on forget and retain authors."""

from __future__ import annotations

import json
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where models are cached (default: $UNLEARN_AUDIT_CACHE or ~/.cache/unlearn-audit)")
    p.add_argument("--world", choices=("tiny", "smol"), default="tiny", help="which built-in world")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    from tabulate import tabulate
    from transformers.utils import logging as hf_logging

    from unlearn_audit.world._stats import world_stats

    hf_logging.disable_progress_bar()  # six tiny loads in a second: their bars only hide the table
    stats = world_stats(args.cache_dir, world=args.world)
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    rows = [(name, f"{s['forget']:.1%}", f"{s['retain']:.1%}") for name, s in stats.items()]
    print(tabulate(rows, headers=["model", "fact recall: forget authors", "fact recall: retain authors"],
                   tablefmt="github"))
    return 0
