"""How much `pytest audits -n N` saves over one process, on the tiny world, from a cold cache.

Each run gets an empty cache directory (so every engine answer is computed), its own
report directory, and the same options; the script prints both wall times, their ratio,
and checks what the runner promises: each (view, model) computed once across the workers
(results.json's `computed`) and the same verdicts and per-item outcomes as the serial run.
Continuous values may differ in the last digits (an engine answer's batch depends on
which view asked first), so they are compared against the golden tolerance.

Usage::

    python benchmarks/bench_xdist.py            # -n 2 against one process
    python benchmarks/bench_xdist.py -n 4 -- --views tofu,novel_recall

Measured on 2 idle cores (AMD EPYC, torch 2.13.0+cpu): serial 124.6 s, `-n 2` 86.6 s (1.44x);
258 of 276 values identical, the rest within 1.7e-8, verdicts and per-item outcomes identical.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(workers: int, extra: list[str], out: Path) -> float:
    env = {**os.environ, "UNLEARN_AUDIT_CACHE": tempfile.mkdtemp(prefix="bench-xdist-cache-")}
    cmd = [sys.executable, "-m", "pytest", "audits", "-q", "-p", "no:cacheprovider", "--report-dir", str(out),
           *(["-n", str(workers)] if workers > 1 else []), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2, help="pytest-xdist workers (default 2)")
    ap.add_argument("extra", nargs="*", help="more pytest options, after --")
    args = ap.parse_args()

    from unlearn_audit.report._golden_items import item_outcomes
    from unlearn_audit.report._reference import default_tolerance

    tmp = Path(tempfile.mkdtemp(prefix="bench-xdist-"))
    serial = run(1, args.extra, tmp / "serial")
    parallel = run(args.n, args.extra, tmp / "parallel")
    print(f"serial {serial:.1f} s, -n {args.n} {parallel:.1f} s: {serial / parallel:.2f}x")

    res = {k: json.loads((tmp / k / "results.json").read_text()) for k in ("serial", "parallel")}
    twice = [k for k, c in collections.Counter((c["view"], c["model"]) for c in res["parallel"]["computed"]).items()
             if c > 1]
    print(f"computed across workers: {len(res['parallel']['computed'])}, more than once: {twice or 'none'}")
    vals = {k: {(r["model"], r["metric"]): r["value"] for r in res[k]["metrics"]} for k in res}
    moved = [m for m, v in vals["serial"].items()
             if (v is None) != (vals["parallel"].get(m) is None)
             or (v is not None and abs(v - vals["parallel"][m]) > default_tolerance(v))]
    same = sum(v == vals["parallel"].get(m) for m, v in vals["serial"].items())
    print(f"values: {same}/{len(vals['serial'])} identical, beyond the golden tolerance: {moved or 'none'}")
    verdicts = {k: {m: v["status"] for m, v in res[k]["verdicts"].items()} for k in res}
    print(f"verdicts identical: {verdicts['serial'] == verdicts['parallel']}")
    items = {}
    for k in res:
        by = collections.defaultdict(list)
        for line in (tmp / k / "items.jsonl").read_text().splitlines():
            r = json.loads(line)
            by[(r.get("view"), r.get("model"))].append(r)
        items[k] = {key: item_outcomes(recs) for key, recs in by.items()}
    print(f"per-item outcomes identical: {items['serial'] == items['parallel']}")


if __name__ == "__main__":
    main()
