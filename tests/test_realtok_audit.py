"""End to end: ``pytest audits --model`` on Llama-3.2-shaped models with the real tokenizer.

The candidate and its full and retain references are small models with Llama-3.2's real
tokenizer, chat template and generation config (see :mod:`unlearn_audit.realtok`), briefly
fine-tuned so they answer in words. Every view must run and the report must be written;
gate verdicts on such models mean nothing, so only errors fail this test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.realtok

REPO = Path(__file__).resolve().parents[1]
VIEWS = ("tofu", "novel_recall", "format_shift", "best_of_n", "chain_of_clues", "masked_probe",
         "likelihood", "rtt", "quantization", "privacy")
LLAMA_PROMPT_START = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 10 Apr 2025\n\n"
    "You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
)
LLAMA_PROMPT_END = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"


def _two_author_dataset(dest: Path) -> Path:
    """The tiny world's files, with a forget split of two items from each of two authors.

    Four items keep every view cheap, and two authors let the retrain-to-test view split
    them into halves (the first four rows of the real split are all one author's).
    """
    src = REPO / "fixtures" / "tiny_world"
    dest.mkdir()
    for f in src.glob("*.json"):
        shutil.copy2(f, dest / f.name)
    for name in ("forget10.json", "forget10_perturbed.json"):
        rows = [json.loads(line) for line in (src / name).read_text(encoding="utf-8").splitlines()]
        authors = list(dict.fromkeys(r["author"] for r in rows))[:2]
        kept = [r for a in authors for r in [r for r in rows if r["author"] == a][:2]]
        (dest / name).write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    return dest


def test_audit_runs_every_view_on_llama_shaped_models(realtok_llama_tuned, tmp_path):
    models = realtok_llama_tuned
    report = tmp_path / "report"
    dataset = _two_author_dataset(tmp_path / "data")
    cmd = [
        sys.executable, "-m", "pytest", str(REPO / "audits"), "-q", "-p", "no:cacheprovider",
        "--rootdir", str(REPO),
        "--model", f"candidate={models['candidate']}",
        "--full-model", str(models["full"]), "--retain-model", str(models["retain"]),
        "--dataset", str(dataset),
        "--limit", "4", "--samples", "2", "--max-new-tokens", "24", "--device", "cpu",
        "--report-dir", str(report),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
    tail = done.stdout[-4000:] + done.stderr[-2000:]
    # 0: every gate passed; 1: some gate failed. Anything else (an error, a usage error,
    # an internal error) means the audit did not run.
    assert done.returncode in (0, 1), tail
    assert " error" not in done.stdout.splitlines()[-1], tail

    results = json.loads((report / "results.json").read_text())
    assert (report / "report.md").is_file()
    ran = {m["view"] for m in results["metrics"] if m["model"] == "candidate"}
    assert ran == set(VIEWS), tail
    # Every view runs; the one allowance is quantization on a machine whose bitsandbytes
    # cannot quantize (a property of the machine, reported as skipped with that reason).
    # A reference may skip a number that needs another reference this run lacks (retain's
    # own reference attack needs a base model); the candidate skips nothing.
    not_run = [(m["model"], m["metric"], m["outcome"], m.get("reason")) for m in results["metrics"]
               if m["outcome"] == "error" or (m["outcome"] == "skipped" and not (
                   m["view"] == "quantization" and "bitsandbytes" in (m.get("reason") or ""))
                   and not (m["model"] != "candidate" and "other than the audited one" in (m.get("reason") or ""))
                   # --limit 4: too few items for a KS p-value (scoring.tofu.FORGET_QUALITY_MIN_ITEMS)
                   and not (m["metric"] == "tofu.forget_quality"
                            and "forget quality not measured" in (m.get("reason") or "")))]
    assert not_run == []

    records = [json.loads(line) for line in (report / "items.jsonl").open(encoding="utf-8")]
    asked = [r for r in records if r.get("view") == "novel_recall"]
    assert asked, "no novel_recall records in items.jsonl"
    # The exact prompt the Llama-3.2-Instruct seed checkpoints are asked with.
    for r in asked:
        assert r["rendered_prompt"] == LLAMA_PROMPT_START + r["prompt"] + LLAMA_PROMPT_END
