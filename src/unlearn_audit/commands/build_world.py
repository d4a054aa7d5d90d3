"""``unlearn-audit build-world``: build (or find in the cache) every tiny-world model."""

from __future__ import annotations

import time
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where models are cached (default: $UNLEARN_AUDIT_CACHE or ~/.cache/unlearn-audit)")


def run(args) -> int:
    from unlearn_audit.world import build_world

    t = time.time()
    paths = build_world(args.cache_dir)
    for name, path in paths.items():
        print(f"{name:10s} {path}")
    print(f"done in {time.time() - t:.1f}s")
    return 0
