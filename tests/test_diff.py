"""``unlearn-audit diff``: what moved between two results.json files."""

from __future__ import annotations

import copy
import json

import pytest

from unlearn_audit.cli import main
from unlearn_audit.report import diff_results, render_diff


def results(*rows: tuple[str, str, float | None, str]) -> dict:
    return {
        "schema_version": 1,
        "package_version": "0.1.0",
        "created": "2025-01-01T00:00:00+00:00",
        "config": {},
        "models": {},
        "metrics": [
            {"model": m, "view": k.split(".")[0], "metric": k, "value": v, "outcome": o} for m, k, v, o in rows
        ],
    }


OLD = results(
    ("npo", "novel_recall.leak_rate", 0.0613, "pass"),
    ("npo", "tofu.forget_quality", 0.468, "pass"),
    ("npo", "rtt.recovery_delta_pp", 0.51, "info"),
    ("npo", "likelihood.avg_logprob", -3.2, "info"),
    ("npo", "quantization.int8_delta_pp", None, "skipped"),
)
NEW = results(
    ("npo", "novel_recall.leak_rate", 0.1213, "fail"),
    ("npo", "tofu.forget_quality", 0.468, "pass"),
    ("npo", "rtt.recovery_delta_pp", 0.5101, "info"),
    ("npo", "likelihood.avg_logprob", -3.2, "info"),
    ("npo", "quantization.nf4_delta_pp", 0.2, "pass"),
)


def test_diff_finds_moved_added_removed():
    d = diff_results(OLD, NEW)
    assert [(c.metric, c.old_outcome, c.new_outcome) for c in d.moved] == [
        ("novel_recall.leak_rate", "pass", "fail"),
        ("rtt.recovery_delta_pp", "info", "info"),
    ]
    assert d.moved[0].delta == pytest.approx(0.06)
    assert d.unchanged == 2
    assert d.added == [("npo", "quantization.nf4_delta_pp")]
    assert d.removed == [("npo", "quantization.int8_delta_pp")]


def test_tolerance_hides_small_moves_but_not_outcome_changes():
    d = diff_results(OLD, NEW, tolerance=0.1)
    assert [c.metric for c in d.moved] == ["novel_recall.leak_rate"]  # outcome changed
    assert d.unchanged == 3
    with pytest.raises(ValueError, match="tolerance"):
        diff_results(OLD, NEW, tolerance=-1)


def test_value_appearing_or_vanishing_counts_as_moved():
    new = copy.deepcopy(OLD)
    new["metrics"][1]["value"] = None
    (c,) = diff_results(OLD, new).moved
    assert c.metric == "tofu.forget_quality" and c.delta is None


def table_rows(md: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("|")]


def test_markdown():
    md = render_diff(diff_results(OLD, NEW), "old.json", "new.json")
    assert md.startswith("## What moved: old.json → new.json")
    rows = table_rows(md)
    assert rows[0] == ["model", "metric", "old", "new", "delta", "outcome"]
    # rates in percent and their delta in percentage points; other deltas in the metric's units
    assert rows[2] == ["npo", "novel_recall.leak_rate", "6.13%", "12.13%", "+6.00 pp", "pass → fail"]
    assert rows[3] == ["npo", "rtt.recovery_delta_pp", "+0.51 pp", "+0.51 pp", "+0.0001", "info"]
    assert "2 unchanged (tolerance 0)." in md
    assert "Added (1): npo · `quantization.nf4_delta_pp`" in md
    assert "Removed (1): npo · `quantization.int8_delta_pp`" in md
    assert "No metric moved." in render_diff(diff_results(OLD, OLD))


def test_cli(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(OLD))
    new.write_text(json.dumps(NEW))
    assert main(["diff", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "novel_recall.leak_rate" in out and "pass → fail" in out
    assert main(["diff", str(old), str(new), "--exit-code"]) == 1
    assert main(["diff", str(old), str(old), "--exit-code"]) == 0
    assert main(["diff", str(old), str(new), "--tolerance", "1", "--exit-code"]) == 1  # outcome still changed


def test_cli_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 9, "metrics": []}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(OLD))
    assert main(["diff", str(bad), str(good)]) == 2
    assert f"{bad}: schema_version 9" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "none.json"), str(good)]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    bad.write_text("{")
    assert main(["diff", str(bad), str(good)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
