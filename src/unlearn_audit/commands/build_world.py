"""``unlearn-audit build-world``: rebuild the tiny world's models (training, about 5 minutes on
2 cores), and with ``--ship`` replace the copies shipped in the repository with them."""

from __future__ import annotations

import time
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where models are cached (default: $UNLEARN_AUDIT_CACHE or ~/.cache/unlearn-audit)")
    p.add_argument("--ship", action="store_true",
                   help="copy the built models into fixtures/tiny_world/models with a sha256 manifest; "
                        "then refresh the golden values (pytest audits --update-golden)")


def run(args) -> int:
    from unlearn_audit.world import build_world, ship_world

    t = time.time()
    paths = build_world(args.cache_dir)
    for name, path in paths.items():
        print(f"{name:10s} {path}")
    print(f"done in {time.time() - t:.1f}s")
    if args.ship:
        print(f"shipped to {ship_world(paths)}")
    return 0
