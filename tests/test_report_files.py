"""The report directory: nothing written outside it, nothing of the user's lost, never torn.

``write_report`` is called directly on a run with plots (the summary plot and a view's
plot) into a report directory in which a hostile probe planted symlinks to files outside
it; every file outside must keep its bytes and its existence. The plugin's pre-run check
is tested with ``pytester`` on the fake views of ``tests/test_plugin.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_plugin import ISOLATED, make_project
from unlearn_audit.report import MetricRow, RunReport, ViewOutcome
from unlearn_audit.report._writer import PLOTS_MANIFEST, write_report

SUMMARY = "leak_by_view_and_family.png"
VIEW_PLOT = "format_shift_npo.png"


def _run(records: int = 3, plots: bool = True) -> RunReport:
    """A run that draws the summary plot (a leak rate by family) and one view plot."""
    rows = [MetricRow("npo", "novel_recall", "novel_recall.leak_rate", 0.2, outcome="info",
                      by_family={"birthplace": 0.2, "genre": 0.1})]
    recs = [{"item": i, "prompt": f"q{i}" * 20} for i in range(records)]
    plot = {"kind": "bars", "caption": "by format", "data": {"labels": ["a", "b"], "values": [0.1, 0.3]}}
    outcomes = [
        ViewOutcome("novel_recall", "npo", "candidate", "hub/npo", "fp", rows=rows, records=recs),
        ViewOutcome("format_shift", "npo", "candidate", "hub/npo", "fp",
                    rows=[MetricRow("npo", "format_shift", "format_shift.leak_rate", 0.3, outcome="info")],
                    plots=[plot] if plots else []),
    ]
    return RunReport(created="2026-01-01T00:00:00+00:00", package_version="0", config={},
                     models={"npo": {"source": "hub/npo", "role": "candidate", "fingerprint": "fp"}},
                     outcomes=outcomes)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file under ``root`` (symlinks as their target text), by relative path."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = b"-> " + os.readlink(p).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- symlinks planted inside the report directory are never followed ---------------------------------
@pytest.mark.parametrize("manifest", ["symlink", "hostile"])
def test_planted_symlinks_leave_every_file_outside_the_report_dir_untouched(tmp_path, manifest):
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("md", "json", "jsonl", "plot", "summary", "manifest", "stale", "x.png"):
        (outside / name).write_bytes(f"outside file {name}\n".encode())
    # A manifest outside, listing names that reach outside plots/.
    (outside / "manifest").write_text(json.dumps(
        {"files": {"../x.png": None, str(outside / "stale"): None, "stale.png": None}}))
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    for link, target in (("report.md", "md"), ("results.json", "json"), ("items.jsonl", "jsonl"),
                         (f"plots/{VIEW_PLOT}", "plot"), (f"plots/{SUMMARY}", "summary"),
                         ("plots/stale.png", "stale")):
        (out / link).symlink_to(outside / target)
    (out / "x.png").write_bytes(b"the user's, beside plots/")
    if manifest == "symlink":
        (out / "plots" / PLOTS_MANIFEST).symlink_to(outside / "manifest")
    else:  # a regular manifest, hand-edited: paths outside, and a stale "plot" that is a symlink
        # whose target's hash is the one recorded
        (out / "plots" / PLOTS_MANIFEST).write_text(json.dumps({"files": {
            "../x.png": _sha(b"the user's, beside plots/"),
            str(outside / "x.png"): _sha((outside / "x.png").read_bytes()),
            "stale.png": _sha((outside / "stale").read_bytes())}}))
    before_outside = _snapshot(outside)
    before_mine = (out / "x.png").read_bytes()

    write_report(_run(), out)

    assert _snapshot(outside) == before_outside  # every byte, every file, still there
    assert (out / "x.png").read_bytes() == before_mine
    for name in ("report.md", "results.json", "items.jsonl"):  # the link replaced, not written through
        assert not (out / name).is_symlink() and (out / name).is_file()
    assert json.loads((out / "results.json").read_text())["schema_version"] == 1
    # the planted plot links are not ours: kept as they are, and the report says so
    md = (out / "report.md").read_text()
    assert (out / "plots" / VIEW_PLOT).is_symlink() and (out / "plots" / SUMMARY).is_symlink()
    assert "not drawn" in md and "plots/format_shift_npo.png" in md
    assert not list(out.glob(".unlearn-audit-staging-*"))


# --- a failed write leaves the previous report as it was ------------------------------------------------
def test_a_file_size_limit_mid_write_leaves_the_previous_report_intact(tmp_path):
    out = tmp_path / "report"
    write_report(_run(records=3), out)
    before = _snapshot(out)
    # `ulimit -f`: results.json fits, items.jsonl (about 400 kB) does not. Python ignores
    # SIGXFSZ, so the write fails with EFBIG instead of killing the process.
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_report_files import _run
        from unlearn_audit.report._writer import write_report
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            write_report(_run(records=1000), {str(out)!r})
        except OSError as e:
            print("refused:", e)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "refused:" in done.stdout, done.stdout + done.stderr
    after = _snapshot(out)
    assert after == before  # no torn file, no new results.json beside the old report.md
    assert not list(out.glob(".unlearn-audit-staging-*"))


# --- stale plots: only unchanged files this package recorded are removed ------------------------------
def test_stale_plots_are_removed_only_when_recorded_and_unchanged(tmp_path):
    out = tmp_path / "report"
    write_report(_run(), out)
    manifest = json.loads((out / "plots" / PLOTS_MANIFEST).read_text())
    assert set(manifest["files"]) == {VIEW_PLOT, SUMMARY}
    assert manifest["files"][VIEW_PLOT] == _sha((out / "plots" / VIEW_PLOT).read_bytes())
    write_report(_run(plots=False), out)  # the view plot is stale now, and unchanged: removed
    assert not (out / "plots" / VIEW_PLOT).exists()

    write_report(_run(), out)
    (out / "plots" / VIEW_PLOT).write_bytes(b"the user edited it")  # changed since: theirs now
    write_report(_run(plots=False), out)
    assert (out / "plots" / VIEW_PLOT).read_bytes() == b"the user edited it"


def test_an_old_manifest_without_hashes_lets_nothing_be_removed(tmp_path):
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "old_view_npo.png").write_bytes(b"\x89PNG listed by an older version")
    (out / "plots" / PLOTS_MANIFEST).write_text(json.dumps(["old_view_npo.png"]))
    write_report(_run(), out)
    assert (out / "plots" / "old_view_npo.png").read_bytes() == b"\x89PNG listed by an older version"
    assert (out / "plots" / VIEW_PLOT).read_bytes()[:4] == b"\x89PNG"


def test_a_users_own_file_at_a_plot_name_is_never_overwritten(tmp_path):
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / SUMMARY).write_bytes(b"my own chart")
    write_report(_run(), out)
    assert (out / "plots" / SUMMARY).read_bytes() == b"my own chart"
    md = (out / "report.md").read_text()
    assert "leak-by-view-and-family plot was not drawn" in md and "a file of yours" in md
    assert f"](plots/{SUMMARY})" not in md  # never links the user's file as ours
    assert (out / "plots" / VIEW_PLOT).read_bytes()[:4] == b"\x89PNG"  # the others are drawn


def test_the_step_summary_is_never_appended_through_a_planted_symlink(tmp_path, monkeypatch):
    outside = tmp_path / "outside.md"
    outside.write_text("outside\n")
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.md").symlink_to(outside)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(out / "summary.md"))
    with pytest.raises(OSError, match="report written to .*GITHUB_STEP_SUMMARY"):
        write_report(_run(), out)
    assert outside.read_text() == "outside\n"
    assert (out / "report.md").is_file()  # the report itself is in place


# --- the report directory is checked before anything runs ---------------------------------------------
def _project(pytester):
    make_project(pytester, models={"npo": "candidate", "full": "full"})


def _usage_error(pytester, *args) -> str:
    result = pytester.runpytest(*ISOLATED, "--model", "npo", "--full-model", "full", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    assert "[unlearn-audit]" not in result.stdout.str()  # no view ran
    return result.stderr.str()


def test_a_report_dir_that_is_a_file_is_a_usage_error_before_any_test(pytester):
    _project(pytester)
    (pytester.path / "notadir").write_text("x")
    err = _usage_error(pytester, "--report-dir", "notadir")
    assert "notadir: is a file, not a directory" in err and "--report-dir" in err
    (pytester.path / "audit-report").write_text("x")  # the default one, found at collection
    assert "audit-report: is a file, not a directory" in _usage_error(pytester)


def test_a_report_dir_with_a_plots_symlink_or_a_users_plot_is_a_usage_error(pytester, tmp_path):
    _project(pytester)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (pytester.path / "r1").mkdir()
    (pytester.path / "r1" / "plots").symlink_to(elsewhere)
    assert "plots is a symlink" in _usage_error(pytester, "--report-dir", "r1")
    (pytester.path / "audit-report" / "plots").mkdir(parents=True)
    (pytester.path / "audit-report" / "plots" / SUMMARY).write_bytes(b"my own chart")
    err = _usage_error(pytester)
    assert f"plots/{SUMMARY} is not a plot unlearn-audit wrote" in err and "move it away" in err
    assert (pytester.path / "audit-report" / "plots" / SUMMARY).read_bytes() == b"my own chart"


def test_a_report_dir_given_as_a_symlink_to_a_directory_is_followed(pytester, tmp_path):
    _project(pytester)
    real = tmp_path / "real-report"
    real.mkdir()
    (pytester.path / "link").symlink_to(real)
    result = pytester.runpytest(*ISOLATED, "--model", "npo", "--full-model", "full", "--report-dir", "link")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
    assert (real / "report.md").is_file() and (pytester.path / "link").is_symlink()
