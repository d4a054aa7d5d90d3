"""``unlearn-audit diff``: what moved between two results.json files."""

from __future__ import annotations

import copy
import json
import re

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


# --- a regression check that can fail ------------------------------------------------------------------
@pytest.mark.parametrize("tolerance", ["nan", "NaN", "inf", "-inf", "-0.1"])
def test_a_tolerance_that_would_hide_every_move_is_a_usage_error(tmp_path, capsys, tolerance):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(OLD))
    new.write_text(json.dumps(NEW))
    with pytest.raises(SystemExit) as exit_:  # argparse: a usage error, status 2
        main(["diff", str(old), str(new), "--exit-code", f"--tolerance={tolerance}"])
    assert exit_.value.code == 2
    assert "--tolerance: expected a finite number >= 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tolerance"):
        diff_results(OLD, NEW, tolerance=float(tolerance))


def test_nan_against_a_number_is_a_change_and_nan_on_both_sides_is_flagged(tmp_path):
    nan = float("nan")
    old = results(("npo", "tofu.forget_quality", 0.468, "pass"), ("npo", "likelihood.avg_logprob", nan, "error"),
                  ("npo", "rtt.recovery_delta_pp", nan, "info"), ("npo", "privacy.auc_loss", float("inf"), "info"))
    new = results(("npo", "tofu.forget_quality", nan, "pass"), ("npo", "likelihood.avg_logprob", -3.2, "error"),
                  ("npo", "rtt.recovery_delta_pp", nan, "info"), ("npo", "privacy.auc_loss", float("inf"), "info"))
    d = diff_results(old, new, tolerance=0.5)
    assert sorted(c.metric for c in d.moved) == ["likelihood.avg_logprob", "tofu.forget_quality"]
    assert d.unmeasured == [("npo", "rtt.recovery_delta_pp")] and d.unchanged == 1  # equal infinities
    md = render_diff(d)
    assert "NaN in both runs, so not compared (1): npo · `rtt.recovery_delta_pp`" in md and "1 unchanged" in md
    # through the CLI (json.dumps writes NaN literals, which json reads back)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(old))
    b.write_text(json.dumps(new))
    assert main(["diff", str(a), str(b), "--exit-code"]) == 1
    assert main(["diff", str(a), str(a), "--exit-code"]) == 0  # NaN -> NaN is not a move


def _with(entry) -> dict:
    data = copy.deepcopy(OLD)
    data["metrics"].append(entry)
    return data


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_with({"model": "npo", "metric": "best_of_n.leak_rate", "value": "0.3", "outcome": "pass"}),
         "metrics[5] (npo · best_of_n.leak_rate): value: expected a number or null, got '0.3'"),
        (_with({"model": "npo", "metric": "best_of_n.leak_rate", "value": True, "outcome": "pass"}),
         "metrics[5] (npo · best_of_n.leak_rate): value: expected a number or null, got True"),
        (_with("novel_recall.leak_rate"), "metrics[5]: expected an object {model, metric, value, outcome}, got str"),
        (_with({"model": "npo", "value": 0.1}), "metrics[5].metric: expected a non-empty string, got None"),
        (_with({"model": "npo", "metric": "best_of_n.leak_rate", "outcome": "pass"}),
         "metrics[5] (npo · best_of_n.leak_rate): 'value' missing"),
        (_with({"model": "npo", "metric": "best_of_n.leak_rate", "value": 0.1, "outcome": 1}),
         "metrics[5] (npo · best_of_n.leak_rate): outcome: expected a string, got 1"),
        (_with({"model": "npo", "metric": "tofu.forget_quality", "value": 0.9, "outcome": "pass"}),
         "metrics[5] (npo · tofu.forget_quality): the same model and metric as metrics[1]"),
        ('{"schema_version": 1, "schema_version": 1, "metrics": []}', "line 1: duplicate key 'schema_version'"),
        ("[1, 2]", "not a results.json (no 'metrics' list)"),
    ],
)
def test_a_malformed_results_file_is_a_one_line_error_naming_the_file_and_entry(tmp_path, capsys, body, message):
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_text(body if isinstance(body, str) else json.dumps(body))
    good.write_text(json.dumps(OLD))
    for args in ([str(bad), str(good)], [str(good), str(bad)]):
        assert main(["diff", *args, "--exit-code"]) == 2
        err = capsys.readouterr().err
        assert f"{bad}: {message}" in err and len(err.strip().splitlines()) == 1, err


def test_a_directory_or_binary_file_is_an_error_not_a_traceback(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(OLD))
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00\x80")
    for bad, message in ((tmp_path, "cannot be read"), (tmp_path / "bin.json", "not UTF-8 text")):
        assert main(["diff", str(bad), str(good)]) == 2
        assert f"{bad}: {message}" in capsys.readouterr().err


def test_labels_from_the_compared_files_cannot_shape_the_diffs_markdown():
    hostile = "a|b\n# injected <img src=x onerror=alert(1)>"
    old = results((hostile, "novel_recall.leak_rate", 0.1, "pass"))
    new = results((hostile, "novel_recall.leak_rate", 0.5, "fail"))
    md = render_diff(diff_results(old, new), "old.json", "new.json")
    # GFM splits cells on unescaped pipes only
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            for line in md.splitlines() if line.startswith("|")]
    assert len(rows[2]) == len(rows[0]) == 6  # the pipe did not add a column
    assert rows[2][2:4] == ["10.00%", "50.00%"]
    assert "\n# injected" not in md and "<img" not in md
