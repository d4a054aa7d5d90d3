"""Judging and writing: gates, verdicts, golden values, and the report files, on hand-made rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from unlearn_audit.context import AuditConfig, AuditContext
from unlearn_audit.report import (
    MISSING_REFERENCE,
    AuditSession,
    Gate,
    Golden,
    MetricRow,
    PlannedModel,
    RunReport,
    ViewOutcome,
    build_results,
    check_expectations,
    check_golden,
    evaluate_gate,
    format_value,
    render_markdown,
    verdicts,
    write_report,
)
from unlearn_audit.report._rows import jsonable
from unlearn_audit.report._writer import format_ci
from unlearn_audit.views._base import Metric, Plot, View, ViewResult

LEAK = Gate("novel_recall.leak_rate", "<=", "leak at most 10%", "reference_results/gates.yaml", value=0.10)
UTILITY = Gate("tofu.model_utility", ">=", "keep 80%", "reference_results/gates.yaml", relative_to="full", factor=0.8)


# --- gates --------------------------------------------------------------------------------------
def test_a_breached_gate_reads_like_an_assert():
    r = evaluate_gate(LEAK, 0.41)
    assert r.outcome == "fail"
    assert r.message == "novel_recall.leak_rate 0.41 > 0.1 (reference_results/gates.yaml: leak at most 10%)"
    assert r.threshold == {"op": "<=", "value": 0.10, "source": "reference_results/gates.yaml"}
    assert evaluate_gate(LEAK, 0.10).outcome == "pass"  # <= is inclusive
    strict = Gate("best_of_n.leak_rate", "<", "r", "g", value=0.3)
    assert " >= 0.3 " in evaluate_gate(strict, 0.3).message


def test_relative_gates():
    r = evaluate_gate(UTILITY, 0.5, reference_label="full", reference_value=0.6)
    assert r.outcome == "pass" and r.threshold["value"] == pytest.approx(0.48)
    assert "full measured 0.6" in r.reason
    r = evaluate_gate(UTILITY, 0.4, reference_label="full", reference_value=0.6)
    assert r.outcome == "fail" and r.message.startswith("tofu.model_utility 0.4 < 0.48 (reference_results/gates.yaml:")
    missing = evaluate_gate(UTILITY, 0.4)
    assert missing.outcome == "skipped" and missing.skip == MISSING_REFERENCE
    unmeasured = evaluate_gate(UTILITY, 0.4, reference_label="full", reference_problem="bitsandbytes missing",
                               reference_skip="backend_unavailable")
    assert unmeasured.outcome == "skipped" and unmeasured.skip == "backend_unavailable"
    # The reference's own number needed a model this run lacks: still an expected skip.
    chained = evaluate_gate(UTILITY, 0.4, reference_label="full", reference_problem="no retain",
                            reference_skip=MISSING_REFERENCE)
    assert chained.outcome == "skipped" and chained.skip == MISSING_REFERENCE
    broken = evaluate_gate(UTILITY, 0.4, reference_label="full", reference_problem="error: RuntimeError: boom")
    assert broken.outcome == "error" and "boom" in broken.message


def test_skipped_and_nan_values():
    assert evaluate_gate(LEAK, None).outcome == "skipped"
    nan = evaluate_gate(LEAK, math.nan)
    assert nan.outcome == "error" and "NaN" in nan.message


def test_skip_kinds_are_typed_not_read_from_the_wording():
    """The report decides from Metric.skip; a reason that merely sounds like a missing
    reference is not one, and a missing reference worded any way is."""
    from unlearn_audit.views import Metric, Skip

    assert Metric("x", None).skip is Skip.NOT_APPLICABLE  # a skip without a kind is not "expected"
    assert Metric("x", None, reason="no retain model given").skip is Skip.NOT_APPLICABLE
    assert Metric("x", None, reason="whatever", skip="missing_reference").skip is Skip.MISSING_REFERENCE
    assert Metric("x", 0.5).skip is None
    with pytest.raises(ValueError, match="cannot also be skipped"):
        Metric("x", 0.5, skip=Skip.MISSING_REFERENCE)
    assert Skip.MISSING_REFERENCE.value == MISSING_REFERENCE


def test_expectations_compare_only_decided_gates():
    gates = {"novel_recall.leak_rate": LEAK, "tofu.model_utility": UTILITY}
    rows = [
        MetricRow("laundered", "novel_recall", "novel_recall.leak_rate", 0.4, outcome="fail",
                  threshold={"op": "<=", "value": 0.1, "source": "g"}),
        MetricRow("laundered", "tofu", "tofu.model_utility", None, outcome="skipped"),
        MetricRow("laundered", "novel_recall", "novel_recall.uncorrected_rate", 0.5, outcome="info"),
    ]
    assert check_expectations("laundered", rows, {"novel_recall.leak_rate": "fail"}, gates, "exp.yaml") == []
    (problem,) = check_expectations("laundered", rows, {}, gates, "exp.yaml")
    assert problem.startswith("laundered: gate novel_recall.leak_rate was expected to PASS (exp.yaml) but measured FAIL: 0.4")


def test_golden_comparison(tmp_path):
    golden = Golden(tmp_path / "g.json", "g.json", {"novel_recall.leak_rate": {"npo": {"value": 0.05, "tol": 0.001}}})
    same = [MetricRow("npo", "novel_recall", "novel_recall.leak_rate", 0.0505)]
    assert check_golden("npo", same, golden) == ([], [])
    moved = [MetricRow("npo", "novel_recall", "novel_recall.leak_rate", 0.07),
             MetricRow("npo", "novel_recall", "novel_recall.uncorrected_rate", 0.2),
             MetricRow("npo", "novel_recall", "novel_recall.x_rate", None)]
    (msg,), new = check_golden("npo", moved, golden)
    assert "novel_recall.leak_rate on npo moved from 0.05 to 0.07 (tolerance 0.001" in msg
    assert new == ["novel_recall.uncorrected_rate"]


# --- formatting ------------------------------------------------------------------------------------
def test_formatting():
    assert format_value("novel_recall.leak_rate", 0.0613) == "6.13%"
    assert format_value("rtt.recovery_delta_pp", 0.51) == "+0.51 pp"
    assert format_value("likelihood.avg_logprob", -3.2) == "-3.2"
    assert format_value("tofu.forget_quality", None) == "—"
    assert format_ci("novel_recall.leak_rate", [0.05, 0.07]) == "[5.00, 7.00]%"
    assert format_ci("tofu.model_utility", None) == "—"


def test_jsonable_handles_numpy_and_nan():
    out = jsonable({"a": np.float32(0.5), "b": np.arange(3), "c": float("nan"), 1: (np.int64(2),), "p": Path("x")})
    assert out == {"a": 0.5, "b": [0, 1, 2], "c": None, "1": [2], "p": "x"}
    json.dumps(out)


def test_view_outcome_round_trips_through_a_payload():
    o = ViewOutcome("tofu", "npo", "candidate", "hub/npo", "sha",
                    rows=[MetricRow("npo", "tofu", "tofu.forget_quality", 0.3, ci=[0.2, 0.4], n=10)],
                    records=[{"i": 1}], plots=[{"kind": "bars", "caption": "curve", "data": {"labels": ["a"], "values": [0.5]}}],
                    golden_new=["tofu.forget_quality"])
    payload = o.to_payload()
    assert json.loads(json.dumps(payload)) == payload  # builtins only: survives xdist
    assert ViewOutcome.from_payload(payload) == o


# --- verdicts and the written report -----------------------------------------------------------------
def run_report(rows_by_model: dict[str, list[MetricRow]], roles: dict[str, str], **kw) -> RunReport:
    outcomes = []
    for model, rows in rows_by_model.items():
        by_view: dict[str, list[MetricRow]] = {}
        for r in rows:
            by_view.setdefault(r.view, []).append(r)
        for view, vr in by_view.items():
            error = vr[0].reason if vr[0].outcome == "error" else None
            outcomes.append(ViewOutcome(view, model, roles[model], f"hub/{model}", f"fp-{model}", rows=vr,
                                        records=[{"item": 0, "model_said": "x"}], error=error))
    models = {m: {"source": f"hub/{m}", "role": r, "fingerprint": f"fp-{m}"} for m, r in roles.items()}
    return RunReport("2025-01-01T00:00:00+00:00", "0.1.0", {"seed": 0}, models, outcomes, **kw)


def leak_row(model, value, outcome="pass", **kw):
    return MetricRow(model, "novel_recall", "novel_recall.leak_rate", value, ci=[0.0, 0.1], n=400, excluded=3,
                     by_family={"birthplace": value, "genre": 0.0},
                     threshold={"op": "<=", "value": 0.1, "source": "reference_results/gates.yaml"},
                     outcome=outcome, **kw)


def test_verdicts():
    roles = {"good": "candidate", "bad": "candidate", "broken": "candidate", "partial": "candidate",
             "noref": "candidate", "full": "full"}
    run = run_report(
        {
            "good": [leak_row("good", 0.05)],
            "bad": [leak_row("bad", 0.4, "fail"),
                    MetricRow("bad", "tofu", "tofu.forget_quality", None, outcome="error", reason="boom")],
            "broken": [MetricRow("broken", "tofu", "tofu", None, outcome="error", reason="RuntimeError: boom")],
            "partial": [leak_row("partial", 0.05),
                        MetricRow("partial", "quantization", "quantization.int8_delta_pp", None,
                                  outcome="skipped", reason="bitsandbytes is not installed",
                                  skip="backend_unavailable")],
            "noref": [leak_row("noref", 0.05),
                      MetricRow("noref", "tofu", "tofu.model_utility", None, outcome="skipped",
                                reason="the gate is relative to full", skip=MISSING_REFERENCE)],
            "full": [leak_row("full", 0.6, "info")],
        },
        roles,
    )
    v = verdicts(run)
    assert {m: x.status for m, x in v.items()} == {
        "good": "PASS", "bad": "FAIL", "broken": "INCOMPLETE", "partial": "INCOMPLETE", "noref": "PASS",
        "full": "REFERENCE",
    }
    assert "novel_recall.leak_rate" in v["bad"].summary and "errored: tofu" in v["bad"].summary


def test_gates_no_test_evaluated_become_skipped_rows():
    run = run_report({"npo": [leak_row("npo", 0.05)]}, {"npo": "candidate"},
                     gates={"novel_recall.leak_rate": LEAK, "tofu.model_utility": UTILITY},
                     selected_views=("novel_recall",))
    rows = run.rows()
    extra = [r for r in rows if r.metric == "tofu.model_utility"]
    assert len(extra) == 1 and extra[0].outcome == "skipped" and "not selected (--views)" in extra[0].reason
    assert verdicts(run)["npo"].status == "INCOMPLETE"


def test_markdown_report(tmp_path):
    roles = {"npo": "candidate", "full": "full"}
    run = run_report(
        {"npo": [leak_row("npo", 0.41, "fail", reason="leak at most 10%", paper=0.0613)],
         "full": [leak_row("full", 0.6, "info")]},
        roles,
    )
    md = render_markdown(run)
    lines = md.splitlines()
    assert lines[0] == "# Unlearning audit"
    assert lines[2].startswith("- **npo**: **FAIL**")  # verdicts first
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| npo")]
    assert cells[0][:9] == ["npo", "novel_recall.leak_rate", "41.00%", "[0.00, 10.00]%", "400", "3", "≤ 10.00%",
                            "reference_results/gates.yaml", "**FAIL**"]
    assert "≤ 10.00%" in md and "reference_results/gates.yaml" in md and "**FAIL**" in md
    assert "| paper" in md and "6.13%" in md
    assert "60.00%" in md  # the reference's number beside the candidate's
    assert "**novel_recall.leak_rate by family**" in md
    assert md.index("## Run configuration") < md.index("## Models") and "fp-npo" in md
    compat = "Compat mode: **{}**"
    assert compat.format(run.config.get("compat", "none")) in md  # the report names it
    run.config["compat"] = "open-unlearning"
    assert compat.format("open-unlearning") in render_markdown(run)


CURVES = {"kind": "layer_curves", "caption": "probe accuracy per layer",
          "data": {"curves": [{"label": "probe", "values": [0.1, None, 0.5]}], "title": "npo"}}


def test_write_report_files(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    roles = {"npo": "candidate", "full": "full"}
    run = run_report({"npo": [leak_row("npo", 0.05)], "full": [leak_row("full", 0.6, "info")]}, roles)
    run.outcomes[0].plots = [CURVES]
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "stale.png").write_bytes(b"old")
    paths = write_report(run, out)
    assert set(paths) == {"report.md", "results.json", "items.jsonl"}
    md = paths["report.md"].read_text()
    assert summary.read_text().strip() == md.strip()
    # The view's plot is drawn by the writer, from its data, under <view>_<model>.png.
    assert "![probe accuracy per layer (npo)](plots/novel_recall_npo.png)" in md
    assert (out / "plots" / "novel_recall_npo.png").read_bytes()[:4] == b"\x89PNG"
    assert "![leak rate by view and fact family](plots/leak_by_view_and_family.png)" in md
    # stale.png is not one the package wrote (no manifest lists it): the user's, so kept
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        ".unlearn-audit-plots.json", "leak_by_view_and_family.png", "novel_recall_npo.png", "stale.png"]
    data = json.loads(paths["results.json"].read_text())
    assert data == build_results(run)
    assert [json.loads(line)["model"] for line in paths["items.jsonl"].read_text().splitlines()] == ["npo", "full"]


def test_a_plot_that_cannot_be_drawn_is_a_note_and_costs_no_other(tmp_path):
    """An unknown kind or bad data: a note under the view's section, the others drawn."""
    run = run_report({"npo": [leak_row("npo", 0.05)]}, {"npo": "candidate"})
    run.outcomes[0].plots = [
        {"kind": "sankey", "caption": "flows", "data": {}},
        {"kind": "bars", "caption": "broken", "data": {"labels": ["a", "b"], "values": [0.5]}},
        CURVES,
    ]
    out = tmp_path / "report"
    md = write_report(run, out)["report.md"].read_text()
    assert "- npo: plot \"flows\" not drawn: no drawer for plot kind 'sankey'" in md
    assert "- npo: plot \"broken\" not drawn (ValueError: 2 labels but 1 values)" in md
    # The third plot of (novel_recall, npo) keeps its place in the file names.
    assert "![probe accuracy per layer (npo)](plots/novel_recall_npo_3.png)" in md
    assert sorted(p.name for p in (out / "plots").glob("novel_recall*")) == ["novel_recall_npo_3.png"]
    assert "Plots could not be written" not in md


def test_a_new_view_reuses_a_drawer_or_registers_its_own(tmp_path, monkeypatch):
    from unlearn_audit.report import _plots

    monkeypatch.setattr(_plots, "DRAWERS", dict(_plots.DRAWERS))

    @_plots.register_drawer("blank")
    def blank(data, path):
        path.write_bytes(b"\x89PNG " + data["text"].encode())

    run = run_report({"npo": [leak_row("npo", 0.05)]}, {"npo": "candidate"})
    run.outcomes[0].plots = [{"kind": "blank", "caption": "mine", "data": {"text": "hi"}}]
    md = write_report(run, tmp_path)["report.md"].read_text()
    assert "![mine (npo)](plots/novel_recall_npo.png)" in md
    assert (tmp_path / "plots" / "novel_recall_npo.png").read_bytes() == b"\x89PNG hi"


# --- the session on a fake context ----------------------------------------------------------------------
class _Spec:
    def __init__(self, label, role):
        self.label, self.role, self.source = label, role, f"hub/{label}"


class _FakeView(View):
    name = "novel_recall"
    metrics = ("novel_recall.leak_rate", "novel_recall.uncorrected_rate")
    values = {"npo": 0.05, "laundered": 0.41, "full": 0.6}

    def run(self, ctx, model):
        if model == "broken":
            raise RuntimeError("no GPU")
        v = self.values[model]
        return ViewResult("novel_recall", model, [Metric("novel_recall.leak_rate", v, n=10),
                                                  Metric("novel_recall.uncorrected_rate", None, reason="why")],
                          records=[{"item": 1, "score": np.float64(v)}],
                          plots=[Plot("bars", f"leak ({model})", {"labels": ["a"], "values": [np.float64(v)]})])


@pytest.fixture
def session(tmp_path, monkeypatch):
    from unlearn_audit.views import _base

    monkeypatch.setattr(_base, "_REGISTRY", {**_base._REGISTRY, "novel_recall": _FakeView})
    (tmp_path / "gates.yaml").write_text(
        "gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.3, rationale: at most 30%}\n")
    cfg = AuditConfig(report_dir=tmp_path / "out")
    specs = {m: _Spec(m, r) for m, r in {"npo": "candidate", "laundered": "candidate", "broken": "candidate",
                                         "full": "full"}.items()}
    return AuditSession(cfg, tiny_world=False, plan=lambda: [PlannedModel(s.label, s.role, s.source) for s in specs.values()],
                        context_factory=lambda: AuditContext(cfg, specs), reference_dir=tmp_path,
                        gates_path=tmp_path / "gates.yaml", root=tmp_path, package_version="0.1.0")


def test_session_measures_judges_and_writes(session):
    ok = session.measure("novel_recall", "npo")
    assert ok.failures == [] and ok.skip_reason == ""
    assert [r.outcome for r in ok.outcome.rows] == ["pass", "skipped"]
    assert ok.outcome.records == [{"item": 1, "score": 0.05}]
    # The view's plot travels as plain JSON data and nothing is drawn until the report.
    assert ok.outcome.plots == [{"kind": "bars", "caption": "leak (npo)", "data": {"labels": ["a"], "values": [0.05]}}]
    assert not Path(session.config.report_dir).exists()
    bad = session.measure("novel_recall", "laundered")
    assert bad.failures == ["novel_recall.leak_rate 0.41 > 0.3 (gates.yaml: at most 30%)"]
    ref = session.measure("novel_recall", "full")
    assert ref.failures == [] and ref.outcome.rows[0].outcome == "info"
    with pytest.raises(RuntimeError, match="no GPU"):
        session.measure("novel_recall", "broken")
    err = session.error_outcome("novel_recall", "broken", RuntimeError("no GPU"))
    assert [r.outcome for r in err.rows] == ["error", "error"] and err.error == "RuntimeError: no GPU"
    for o in (ok.outcome, bad.outcome, ref.outcome, err):
        session.collect(o.to_payload())
    written = session.finish()
    assert written["results.json"].is_file()
    assert "![leak (npo) (npo)](plots/novel_recall_npo.png)" in written["report.md"].read_text()
    assert (written["report.md"].parent / "plots" / "novel_recall_npo.png").is_file()
    assert {m: v.status for m, v in session.verdicts.items()} == {
        # uncorrected_rate was skipped for a reason other than a missing reference
        "npo": "INCOMPLETE", "laundered": "FAIL", "broken": "INCOMPLETE", "full": "INCOMPLETE"}


def test_a_views_warnings_reach_report_md_and_results_json():
    from unlearn_audit.views import ViewResult

    result = ViewResult.loads(ViewResult("tofu", "npo", [], warnings=["3 rows dropped"]).dumps())
    assert result.warnings == ["3 rows dropped"]  # survives the xdist hand-over
    run = run_report({"npo": [leak_row("npo", 0.05)]}, {"npo": "candidate"})
    run.outcomes[0].warnings.append("2 of 40 prompts were longer than the context")
    assert ViewOutcome.from_payload(run.outcomes[0].to_payload()).warnings == run.outcomes[0].warnings
    md = render_markdown(run)
    assert "**Warnings**" in md and "- npo: 2 of 40 prompts were longer than the context" in md
    assert build_results(run)["warnings"] == [
        {"view": "novel_recall", "model": "npo", "text": "2 of 40 prompts were longer than the context"}]


def test_extras_and_gate_names_cannot_end_their_code_spans():
    """Metric.extra keys and values, and metric names, are a view's text: a backtick or a
    "|" in them shows as itself, the JSON stays one code span and no link forms."""
    from markdown_it import MarkdownIt

    said = {"said": "``a`|b [x](javascript:alert(1)) <b>"}
    row = leak_row("npo", 0.05, extra={"k`|[x](y)": said, "text": "ok` <i>x</i>"})
    run = run_report({"npo": [row, MetricRow("npo", "novel_recall", "odd`metric", None, outcome="error",
                                             reason="boom")]}, {"npo": "candidate"})
    md = render_markdown(run)
    (line,) = [ln for ln in md.splitlines() if ln.startswith("- npo · `novel_recall.leak_rate`:")]
    (inline,) = [t for t in MarkdownIt("commonmark").parse(line) if t.type == "inline"]
    kinds = [c.type for c in inline.children]
    assert kinds.count("code_inline") == 2 and not {"link_open", "html_inline"} & set(kinds), kinds
    codes = [c.content for c in inline.children if c.type == "code_inline"]
    assert codes == ["novel_recall.leak_rate", json.dumps(said, separators=(",", ":"))]
    text = "".join(c.content for c in inline.children if c.type == "text")
    assert "k`|[x](y) = " in text and "text = ok` <i>x</i>" in text
    (note,) = [ln for ln in md.splitlines() if "odd" in ln and ln.startswith("- npo")]
    assert "odd\\`metric" in note and "`odd" not in note


def test_a_value_that_is_not_a_number_cannot_shift_its_row():
    """A malformed payload's value is shown as text, and its "|" cannot add a cell."""
    row = MetricRow("npo", "novel_recall", "novel_recall.leak_rate", "1|<b>2</b>", outcome="info")
    md = render_markdown(run_report({"npo": [row]}, {"npo": "candidate"}))
    (line,) = [ln for ln in md.splitlines() if ln.startswith("| npo") and "leak_rate" in ln]
    assert line.replace("\\|", "").count("|") == 10 and "1\\|&lt;b&gt;2&lt;/b&gt;" in line

# --- no PASS on nothing -------------------------------------------------------------------------------
def test_a_candidate_whose_only_gates_need_a_missing_reference_is_incomplete_not_pass():
    # the probe: a gates file whose only gate is relative to full, run without full, ended
    # "PASS: 0 gate(s) passed"
    g = evaluate_gate(UTILITY, 0.5, reference_label=None)
    row = MetricRow("npo", "tofu", "tofu.model_utility", 0.5, threshold=g.threshold, outcome=g.outcome,
                    reason=g.reason, skip=g.skip)
    run = run_report({"npo": [row]}, {"npo": "candidate"}, gates={"tofu.model_utility": UTILITY})
    v = verdicts(run)["npo"]
    assert v.status == "INCOMPLETE"
    assert v.summary.startswith("no gate could be evaluated: tofu.model_utility (missing reference: the gate is "
                                "relative to full and no full model is in this run)")
    assert v.not_run == [{"metric": "tofu.model_utility", "outcome": "skipped", "reason": g.reason}]
    # one decided gate beside it is a PASS, as before: a missing reference alone is expected
    run = run_report({"npo": [row, leak_row("npo", 0.05)]}, {"npo": "candidate"},
                     gates={"tofu.model_utility": UTILITY, "novel_recall.leak_rate": LEAK})
    assert verdicts(run)["npo"].status == "PASS"


def test_a_candidate_with_no_gate_at_all_is_incomplete_not_pass():
    run = run_report({"npo": [leak_row("npo", 0.05, "info")]}, {"npo": "candidate"}, gates={})
    v = verdicts(run)["npo"]
    assert (v.status, v.summary) == ("INCOMPLETE", "no gate could be evaluated: no gate in the gates file "
                                                   "applies to what ran")


@pytest.mark.parametrize("ref", [float("nan"), float("inf"), float("-inf")])
def test_a_relative_gate_against_a_non_finite_reference_is_an_error_not_a_verdict(ref):
    # NaN made every comparison false (a FAIL of any value); inf made `>=` a gate no value fails
    for gate in (UTILITY, Gate("tofu.model_utility", "<=", "r", "g.yaml", relative_to="full")):
        g = evaluate_gate(gate, 0.5, reference_label="full", reference_value=ref)
        assert g.outcome == "error" and "cannot be decided" in g.message and g.threshold is None


def test_the_probe_end_to_end_only_a_relative_gate_and_no_reference_fails_the_run(pytester):
    # the probe of main: this session ended "npo: PASS (0 gate(s) passed)" and exit 0
    from test_plugin import ISOLATED, MODELS, VIEWS, make_project

    gates = ("schema_version: 1\ngates:\n  - {metric: tofu.model_utility, op: '>=', relative_to: full, factor: 0.8,\n"
             "     rationale: keep 80% of full's utility}\n")
    make_project(pytester, gates=gates, models={"npo": MODELS["npo"]},
                 views={v: {"npo": t["npo"]} for v, t in VIEWS.items()})
    result = pytester.runpytest(*ISOLATED, "--model", "npo")
    out = json.loads((pytester.path / "audit-report" / "results.json").read_text())
    assert out["verdicts"]["npo"]["status"] == "INCOMPLETE", out["verdicts"]
    assert "no gate could be evaluated: tofu.model_utility (missing reference" in out["verdicts"]["npo"]["summary"]
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert pytester.runpytest(*ISOLATED, "--model", "npo", "--allow-incomplete").ret == pytest.ExitCode.OK
