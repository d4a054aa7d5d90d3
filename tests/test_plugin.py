"""End-to-end tests of the pytest plugin, on fake views and fake models (no model loads).

Each test writes a small project with ``pytester``: a conftest that implements the plugin's
``pytest_unlearn_audit_context`` hook (returning a context whose views report numbers from
``fake_values.json``), an audit test module, and ``reference_results/``. Then it runs a
whole pytest session in process and reads the exit code, the output and the report.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from unlearn_audit.model.mock import MockBackend, MockModel
from unlearn_audit.plugin import plan_models
from unlearn_audit.report import PlannedModel
from unlearn_audit.report._reference import default_tolerance

CONFTEST = '''
"""Fake audit world: views and models from fake_values.json (see tests/test_plugin.py)."""
import json
from pathlib import Path

from unlearn_audit.context import ModelUnusable
from unlearn_audit.model.mock import MockModel, mock_context
from unlearn_audit.views import _base
from unlearn_audit.views._base import Metric, View, ViewResult

SPEC = json.loads((Path(__file__).parent / "fake_values.json").read_text())


def _metric(name, v):
    if isinstance(v, dict):
        return Metric(name, v.get("value"), reason=v.get("reason", ""))
    if v is None:
        return Metric(name, None, reason="bitsandbytes is not installed")
    return Metric(name, v, ci=(max(0.0, v - 0.01), v + 0.01), n=100, excluded=2,
                  by_family={"birthplace": v, "genre": v / 2})


def _view(view_name, table):
    class FakeView(View):
        name = view_name
        metrics = tuple(sorted({m for t in table.values() if isinstance(t, dict) for m in t}))

        def run(self, ctx, model):
            entry = table.get(model, {})
            if entry == "raise":
                raise RuntimeError(f"{view_name} broke on {model}")
            if entry == "unusable":
                raise ModelUnusable(f"{model} failed the sanity check run before any view: the model does not answer")
            metrics = [_metric(k, v) for k, v in entry.items()]
            records = [{"item": i, "prompt": f"q{i}", "leak": i % 2 == 0} for i in range(3)]
            return ViewResult(view_name, model, metrics, records=records)

    return FakeView


for _name, _table in SPEC["views"].items():
    _base._REGISTRY[_name] = _view(_name, _table)


def pytest_unlearn_audit_context(config, audit_config, tiny_world):
    # The package's mock backend: fake views never call it, and nothing loads.
    return mock_context(audit_config, {m: MockModel(role) for m, role in SPEC["models"].items()})
'''

GATES = """\
schema_version: 1
gates:
  - metric: novel_recall.leak_rate
    op: "<="
    value: 0.30
    rationale: "greedy answers may leak at most 30% of items"
  - metric: tofu.model_utility
    op: ">="
    relative_to: full
    factor: 0.8
    rationale: "keep 80% of TOFU-full's utility"
"""
PROBE_GATE = """\
  - metric: masked_probe.top1_last_layer
    op: "<="
    relative_to: retain
    offset: 0.2
    rationale: "probe at most 20 points above retain"
"""

MODELS = {"npo": "candidate", "laundered": "candidate", "full": "full"}
VIEWS = {
    "novel_recall": {
        "npo": {"novel_recall.leak_rate": 0.05, "novel_recall.uncorrected_rate": 0.2},
        "laundered": {"novel_recall.leak_rate": 0.41, "novel_recall.uncorrected_rate": 0.5},
        "full": {"novel_recall.leak_rate": 0.6, "novel_recall.uncorrected_rate": 0.7},
    },
    "tofu": {
        "npo": {"tofu.model_utility": 0.5, "tofu.forget_quality": 0.3},
        "laundered": {"tofu.model_utility": 0.55, "tofu.forget_quality": 0.001},
        "full": {"tofu.model_utility": 0.6, "tofu.forget_quality": 1e-9},
    },
}
AUDIT_TESTS = """
def test_novel_recall(audit, model):
    audit.check("novel_recall", model)


def test_tofu(audit, model):
    audit.check("tofu", model)
"""


# The inner sessions load only this plugin: pytester re-imports (and re-rewrites) every
# other installed plugin on each in-process run, which costs seconds per run.
ISOLATED = ("-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:anyio", "-p", "no:cacheprovider")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*ISOLATED, *args)


def make_project(
    pytester: pytest.Pytester,
    *,
    views: dict | None = None,
    models: dict | None = None,
    gates: str = GATES,
    expected: dict | None = None,
    golden: dict | None = None,
    tests: str = AUDIT_TESTS,
) -> None:
    pytester.makeconftest(CONFTEST)
    (pytester.path / "fake_values.json").write_text(
        json.dumps({"models": models or MODELS, "views": views or VIEWS})
    )
    pytester.makepyfile(test_audits=tests)
    ref = pytester.path / "reference_results"
    (ref / "tiny_world").mkdir(parents=True)
    (ref / "gates.yaml").write_text(gates)
    exp = {"schema_version": 1, "models": expected or {}}
    (ref / "tiny_world" / "expected_verdicts.yaml").write_text(json.dumps(exp))
    (ref / "tiny_world" / "golden.json").write_text(json.dumps(golden or {}))


def results(pytester: pytest.Pytester, report_dir: str = "audit-report") -> dict:
    return json.loads((pytester.path / report_dir / "results.json").read_text())


def report_md(pytester: pytest.Pytester) -> str:
    return (pytester.path / "audit-report" / "report.md").read_text()


def row(data: dict, model: str, metric: str) -> dict:
    (found,) = [r for r in data["metrics"] if r["model"] == model and r["metric"] == metric]
    return found


# --- real-model mode: the gates decide ----------------------------------------------------------
def test_gate_breach_fails_the_test_and_the_verdict(pytester):
    make_project(pytester)
    result = run(pytester, "--model", "npo", "--model", "laundered", "--full-model", "full")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines([
        "*novel_recall.leak_rate 0.41 > 0.3 (reference_results/gates.yaml: greedy answers may leak at most 30% of items)*",
    ])
    md = report_md(pytester)
    assert "- **laundered**: **FAIL**" in md
    assert "- **npo**: **PASS**" in md
    assert "reference_results/gates.yaml" in md
    assert "41.00%" in md  # rates as percentages
    data = results(pytester)
    r = row(data, "laundered", "novel_recall.leak_rate")
    assert r["outcome"] == "fail"
    assert r["threshold"] == {"op": "<=", "value": 0.3, "source": "reference_results/gates.yaml"}
    # relative gate: 0.8 x full's 0.6 = 0.48; npo's 0.5 passes
    mu = row(data, "npo", "tofu.model_utility")
    assert mu["outcome"] == "pass" and mu["threshold"]["value"] == pytest.approx(0.48)
    assert "full measured 0.6" in mu["reason"]
    result.stdout.fnmatch_lines(["*unlearn-audit*", "*report: *report.md", "*laundered: FAIL"])


def test_results_json_has_the_contract_shape(pytester):
    make_project(pytester, gates=GATES + PROBE_GATE)
    run(pytester, "--model", "npo", "--model", "laundered", "--full-model", "full")
    data = results(pytester)
    assert set(data) == {"schema_version", "package_version", "created", "config", "models", "metrics",
                         "verdicts", "computed", "warnings", "not_run"}
    assert data["verdicts"]["laundered"]["status"] == "FAIL" and data["verdicts"]["full"]["status"] == "REFERENCE"
    assert data["schema_version"] == 1
    assert data["models"]["npo"] == {"source": "mock:npo", "role": "candidate",
                                     "fingerprint": MockBackend("npo", MockModel()).fingerprint}
    assert data["models"]["full"]["role"] == "full"
    assert data["config"]["forget_split"] == "forget10" and data["config"]["mode"] == "models"
    keys = {"model", "view", "metric", "value", "ci", "n", "excluded", "by_family", "threshold",
            "paper", "outcome", "reason", "extra", "skip"}
    for r in data["metrics"]:
        assert set(r) == keys
        assert r["outcome"] in {"pass", "fail", "info", "skipped", "error"}
    r = row(data, "npo", "novel_recall.leak_rate")
    assert r["value"] == 0.05 and r["n"] == 100 and r["excluded"] == 2
    assert r["ci"] == pytest.approx([0.04, 0.06]) and r["by_family"] == {"birthplace": 0.05, "genre": 0.025}
    assert row(data, "full", "novel_recall.leak_rate")["outcome"] == "info"  # no gates on references
    # the masked_probe gate's view never ran: a skipped row, and no PASS for anyone
    skipped = row(data, "npo", "masked_probe.top1_last_layer")
    assert skipped["outcome"] == "skipped" and "did not run" in skipped["reason"]
    # candidates first, then references; views in views.md order
    models = [r["model"] for r in data["metrics"]]
    assert models.index("full") > max(i for i, m in enumerate(models) if m in ("npo", "laundered"))
    items = (pytester.path / "audit-report" / "items.jsonl").read_text().splitlines()
    assert len(items) == 3 * 2 * 3  # 3 records x 2 views x 3 models
    assert json.loads(items[0]).keys() >= {"model", "view", "item", "prompt"}


def test_two_identical_runs_write_identical_results(pytester):
    make_project(pytester)
    args = ("--model", "npo", "--model", "laundered", "--full-model", "full")
    run(pytester, *args, "--report-dir", "one")
    run(pytester, *args, "--report-dir", "two")
    one, two = results(pytester, "one"), results(pytester, "two")
    for d in (one, two):
        d.pop("created")
        d["config"].pop("report_dir")
    assert one == two
    assert (pytester.path / "one" / "items.jsonl").read_text() == (pytester.path / "two" / "items.jsonl").read_text()


def test_a_view_that_raises_is_an_error_and_the_verdict_incomplete(pytester):
    views = {**VIEWS, "tofu": {**VIEWS["tofu"], "npo": "raise"}}
    make_project(pytester, views=views)
    result = run(pytester, "--model", "npo", "--model", "laundered", "--full-model", "full")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*RuntimeError: tofu broke on npo*"])
    assert "- **npo**: **INCOMPLETE**" in report_md(pytester)
    data = results(pytester)
    errors = [r for r in data["metrics"] if r["model"] == "npo" and r["view"] == "tofu"]
    assert errors and all(r["outcome"] == "error" for r in errors)
    assert "tofu broke on npo" in errors[0]["reason"]


def test_a_reference_that_fails_the_sanity_check_errors_the_gates_relative_to_it(pytester):
    views = {**VIEWS, "tofu": {**VIEWS["tofu"], "full": "unusable"}}
    make_project(pytester, views=views, models={"npo": "candidate", "full": "full"})
    result = run(pytester, "--model", "npo", "--full-model", "full")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "*threshold needs full (full)'s tofu.model_utility: error: ModelUnusable: full failed the sanity check*",
        "*full failed the sanity check run before any view: the model does not answer*",
    ])
    data = results(pytester)
    assert row(data, "npo", "tofu.model_utility")["outcome"] == "error"
    assert row(data, "full", "tofu.model_utility")["outcome"] == "error"


def test_all_metrics_skipped_skips_the_test_partial_skips_are_rows(pytester):
    views = {
        "novel_recall": {m: {"novel_recall.leak_rate": None} for m in MODELS},
        "tofu": {m: {"tofu.model_utility": 0.6, "tofu.forget_quality": None} for m in MODELS},
    }
    make_project(pytester, views=views)
    result = run(pytester, "--model", "npo", "--model", "laundered", "--full-model", "full", "-rs")
    result.assert_outcomes(passed=3, skipped=3)
    result.stdout.fnmatch_lines(["*bitsandbytes is not installed*"])
    data = results(pytester)
    assert row(data, "npo", "tofu.forget_quality")["outcome"] == "skipped"
    assert row(data, "npo", "novel_recall.leak_rate")["threshold"]["value"] == 0.3
    assert "- **npo**: **INCOMPLETE**" in report_md(pytester)


def test_relative_gate_without_its_reference_is_skipped_not_incomplete(pytester):
    models = {"npo": "candidate"}
    views = {
        "novel_recall": {"npo": {"novel_recall.leak_rate": 0.05}},
        "tofu": {"npo": {"tofu.model_utility": 0.5}},
        "masked_probe": {"npo": {"masked_probe.top1_last_layer": 0.4}},
    }
    tests = AUDIT_TESTS + "\n\ndef test_masked_probe(audit, model):\n    audit.check('masked_probe', model)\n"
    make_project(pytester, views=views, models=models, tests=tests, gates=GATES + PROBE_GATE)
    result = run(pytester, "--model", "npo")
    assert result.ret == pytest.ExitCode.OK
    r = row(results(pytester), "npo", "tofu.model_utility")
    assert r["outcome"] == "skipped" and r["reason"].startswith("missing reference")
    assert "- **npo**: **PASS**" in report_md(pytester)


def test_an_incomplete_verdict_fails_the_run_unless_allowed(pytester):
    """issue 12, case 4: a skipped gate made the verdict INCOMPLETE, yet pytest exited 0."""
    views = {**VIEWS, "novel_recall": {**VIEWS["novel_recall"], "npo": {"novel_recall.leak_rate": {
        "value": None, "reason": "needs two forget authors; --limit 4 leaves one"}}}}
    make_project(pytester, views=views, models={"npo": "candidate", "full": "full"})
    args = ("--model", "npo", "--full-model", "full")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, skipped=1)  # no test failed: the verdict fails the run
    result.stdout.fnmatch_lines([
        "*unlearn-audit*",
        "*npo: INCOMPLETE (1 number(s) skipped: novel_recall.leak_rate)",
        "*gate novel_recall.leak_rate did not run (skipped): needs two forget authors; --limit 4 leaves one",
        "*the run fails: an INCOMPLETE audit is not a pass*pass --allow-incomplete*",
    ])
    md = report_md(pytester)
    assert "- **npo**: **INCOMPLETE**" in md
    assert "  - gate `novel_recall.leak_rate` did not run (skipped): needs two forget authors" in md
    verdict = results(pytester)["verdicts"]["npo"]
    assert verdict["status"] == "INCOMPLETE"
    assert verdict["not_run"] == [{"metric": "novel_recall.leak_rate", "outcome": "skipped",
                                   "reason": "needs two forget authors; --limit 4 leaves one"}]

    allowed = run(pytester, *args, "--allow-incomplete")
    assert allowed.ret == pytest.ExitCode.OK
    assert "the run fails" not in allowed.stdout.str()
    assert results(pytester)["config"]["allow_incomplete"] is True
    pytester.makeini("[pytest]\naudit_allow_incomplete = true\n")
    assert run(pytester, *args).ret == pytest.ExitCode.OK


def test_views_option_deselects_other_views(pytester):
    make_project(pytester)
    result = run(pytester, "--model", "npo", "--full-model", "full", "--views", "tofu")
    result.assert_outcomes(passed=3, deselected=3)
    data = results(pytester)
    assert {r["view"] for r in data["metrics"] if r["outcome"] != "skipped"} == {"tofu"}
    gate = row(data, "npo", "novel_recall.leak_rate")
    assert gate["outcome"] == "skipped" and "not selected" in gate["reason"]


# --- usage errors: exit code 4, with the file, key or option named --------------------------------
def test_malformed_gates_file_is_a_usage_error_naming_file_and_key(pytester):
    make_project(pytester, gates=GATES.replace('op: "<="\n    value: 0.30', 'op: "=<"\n    value: 0.30'))
    result = run(pytester, "--model", "npo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*reference_results/gates.yaml: gates[[]0[]].op: unknown operator '=<'*"])


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ("gates:\n  - metric: novel_recall.leak_rat3!\n    op: '<='\n    value: 1\n    rationale: x\n",
         "*gates[[]0[]].metric: unknown metric*"),
        ("gates:\n  - metric: tofu.model_utility\n    op: '>='\n    relative_to: fulll\n    rationale: x\n",
         "*gates[[]0[]].relative_to: unknown reference 'fulll'*"),
        ("gates: [\n", "*reference_results/gates.yaml: not valid YAML*"),
        # issue 12, case 2: this used to exit 0 with "passed", the leak rate an ungated info row
        ("gates:\n  - metric: novel_recall.leak_rat\n    op: '<='\n    value: 0.1\n    rationale: x\n",
         "*reference_results/gates.yaml: gates[[]0[]].metric: unknown metric 'novel_recall.leak_rat'*"
         "Did you mean 'novel_recall.leak_rate'?*"),
    ],
)
def test_other_gate_file_problems_are_usage_errors(pytester, gates, message):
    make_project(pytester, gates=gates)
    result = run(pytester, "--model", "npo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_unknown_view_is_a_usage_error_with_a_suggestion(pytester):
    make_project(pytester)
    result = run(pytester, "--views", "novel_recal")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--views: unknown view 'novel_recal'. Did you mean novel_recall?*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "abc"], "*--limit: expected a positive whole number of items, got 'abc'*"),
        (["--limit", "0"], "*--limit: expected a positive whole number of items, got '0'*"),
        (["--leak-threshold", "1.5"], "*--leak-threshold: expected a fraction in (0, 1], got '1.5'*"),
        (["--prompt-format", "chta"], "*--prompt-format: expected one of chat, plain, got 'chta'. Did you mean chat?*"),
        (["--device", "gpu"], "*--device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'*"),
        (["--batch-size", "-2"], "*--batch-size: expected a positive whole number or 'auto'*"),
        (["--compat", "openunlearning"],
         "*--compat: expected one of none, open-unlearning, got 'openunlearning'*"),
        (["--compat", "none", "--compat-openunlearning-mask"],
         "*--compat none contradicts --compat-openunlearning-mask*"),
        (["--update-golden", "--model", "x/y"], "*--update-golden: golden values exist only for the tiny world*"),
    ],
)
def test_bad_option_values_are_usage_errors(pytester, args, message):
    make_project(pytester)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_options_can_be_pinned_in_the_ini_file(pytester):
    make_project(pytester)
    pytester.makeini("[pytest]\naudit_limit = 7\naudit_model = npo\naudit_report_dir = pinned\n")
    run(pytester, "--full-model", "full")
    data = results(pytester, "pinned")
    assert data["config"]["limit"] == 7 and data["config"]["mode"] == "models"


def test_compat_mode_from_option_ini_or_deprecated_alias(pytester):
    make_project(pytester)
    run(pytester, "--model", "npo", "--report-dir", "default")
    assert results(pytester, "default")["config"]["compat"] == "none"
    run(pytester, "--model", "npo", "--compat-openunlearning-mask", "--report-dir", "alias")
    assert results(pytester, "alias")["config"]["compat"] == "open-unlearning"
    pytester.makeini("[pytest]\naudit_compat = open-unlearning\n")
    run(pytester, "--model", "npo", "--report-dir", "ini")
    assert results(pytester, "ini")["config"]["compat"] == "open-unlearning"


def test_bad_ini_value_names_the_ini_key(pytester):
    make_project(pytester)
    pytester.makeini("[pytest]\naudit_samples = many\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--samples (from *, key audit_samples): expected a positive whole number*"])


def test_plugin_is_inert_without_audit_tests(pytester):
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "audit-report").exists()
    assert "report:" not in result.stdout.str()


# --- tiny world: demo verdicts and golden values -------------------------------------------------------
TINY_MODELS = {"npo": "candidate", "laundered": "candidate", "full": "full"}


def test_tiny_world_passes_when_verdicts_match_expectations(pytester):
    make_project(pytester, models=TINY_MODELS, expected={"laundered": {"novel_recall.leak_rate": "fail"}})
    result = run(pytester)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.assert_outcomes(passed=6)
    md = report_md(pytester)
    assert "- **laundered**: **FAIL**" in md  # the report keeps the gate's own verdict
    assert results(pytester)["config"]["mode"] == "tiny_world"


def test_tiny_world_fails_naming_the_gate_whose_verdict_differs(pytester):
    make_project(pytester, models=TINY_MODELS, expected={"npo": {"novel_recall.leak_rate": "fail"}})
    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines([
        "*npo: gate novel_recall.leak_rate was expected to FAIL (reference_results/tiny_world/"
        "expected_verdicts.yaml) but measured PASS*",
        "*laundered: gate novel_recall.leak_rate was expected to PASS*but measured FAIL*",
    ])


def test_expectations_naming_an_unknown_gate_are_a_usage_error(pytester):
    make_project(pytester, models=TINY_MODELS, expected={"npo": {"novel_recall.uncorrected_rate": "fail"}})
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*expected_verdicts.yaml: models.npo.novel_recall.uncorrected_rate: no gate*"])


def test_golden_mismatch_fails_and_update_golden_rewrites(pytester):
    expected = {"laundered": {"novel_recall.leak_rate": "fail"}}
    golden = {"novel_recall.leak_rate": {"npo": {"value": 0.04, "tol": 0.001},
                                         "gone": {"value": 0.5, "tol": 0.001}}}
    make_project(pytester, models=TINY_MODELS, expected=expected, golden=golden)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines([
        "*novel_recall.leak_rate on npo moved from 0.04 to 0.05 (tolerance 0.001*",
        "*golden: * new value(s) without a golden entry*",
        "*golden: 1 unused entr*novel_recall.leak_rate[[]gone[]]*",
    ])

    result = run(pytester, "--update-golden")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*golden: wrote 12 value(s) to reference_results/tiny_world/golden.json*",
                                 "*kept*novel_recall.leak_rate[[]gone[]]*"])
    written = json.loads((pytester.path / "reference_results" / "tiny_world" / "golden.json").read_text())
    # the tolerance follows the measured cross-CPU policy, not what the file held before
    assert written["novel_recall.leak_rate"]["npo"] == {"value": 0.05, "tol": default_tolerance(0.05)}
    assert written["tofu.model_utility"]["full"]["value"] == 0.6
    assert written["_config"]["dataset"] == "<tiny world fixtures>"

    result = run(pytester)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "new value" not in result.stdout.str()


def test_golden_values_are_not_compared_under_other_settings(pytester):
    make_project(pytester, models=TINY_MODELS, expected={"laundered": {"novel_recall.leak_rate": "fail"}})
    assert run(pytester, "--update-golden").ret == pytest.ExitCode.OK
    golden = pytester.path / "reference_results" / "tiny_world" / "golden.json"
    data = json.loads(golden.read_text())
    data["novel_recall.leak_rate"]["npo"]["value"] = 0.2
    golden.write_text(json.dumps(data))
    result = run(pytester, "--limit", "5")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*golden: not compared (run settings differ*limit (golden None, run 5)*"])


# --- model labels ----------------------------------------------------------------------------------------
def test_model_labels_from_sources(tmp_path):
    adapter = tmp_path / "runs" / "a" / "checkpoint-500"
    other = tmp_path / "runs" / "b" / "checkpoint-500"
    adapter.mkdir(parents=True)
    other.mkdir(parents=True)
    plan = plan_models([
        ("candidate", "Naahraf27/npo_llama-3.2-3b"),
        ("candidate", str(adapter) + "/"),
        ("candidate", str(other)),
        ("candidate", "mine=org/model"),
        ("full", "open-unlearning/tofu_Llama-3.2-3B-Instruct_full"),
    ])
    assert [p.label for p in plan] == [
        "npo_llama-3.2-3b", "a-checkpoint-500", "b-checkpoint-500", "mine", "tofu_Llama-3.2-3B-Instruct_full",
    ]
    assert plan[3] == PlannedModel("mine", "candidate", "org/model")
    assert plan[4].role == "full"


def test_duplicate_hub_tails_get_numbered():
    plan = plan_models([("candidate", "model"), ("candidate", "model")])
    assert [p.label for p in plan] == ["model", "model-2"]
    with pytest.raises(pytest.UsageError, match="used twice"):
        plan_models([("candidate", "x=a/b"), ("candidate", "x=c/d")])


def test_audit_modules_exist_for_every_view():
    from unlearn_audit.report import KNOWN_VIEWS

    audits = Path(__file__).resolve().parents[1] / "audits"
    for view in KNOWN_VIEWS:
        text = textwrap.dedent((audits / f"test_{view}.py").read_text())
        assert f'audit.check("{view}", model)' in text


def test_every_option_has_an_ini_key_and_a_help_ending_with_its_default(pytester):
    from unlearn_audit._plugin.options import OPTIONS as _OPTIONS

    result = run(pytester, "--help")
    out = result.stdout.str()
    assert "unlearn-audit: audit an unlearned model:" in out
    for opt in _OPTIONS:
        assert opt.help.endswith(")") and "(default: " in opt.help, opt.name
        assert f"--{opt.name}" in out
        assert f"{opt.dest} " in out or f"{opt.dest}(" in out  # listed among the ini keys


def test_junitxml_gets_plain_metric_properties_not_the_payload(pytester):
    make_project(pytester, models={"npo": "candidate", "full": "full"})
    result = run(pytester, "--model", "npo", "--full-model", "full", "-m", "audit", "--junitxml", "junit.xml",
                 "-o", "junit_family=legacy")  # xunit2, the default, has no properties
    result.assert_outcomes(passed=4)  # `-m audit` selects the audit tests: the marker is automatic
    xml = (pytester.path / "junit.xml").read_text()
    assert '<property name="novel_recall.leak_rate" value="0.05"' in xml
    assert 'name="unlearn_audit"' not in xml


# --- nothing computed is lost: SIGTERM, an interrupt at the first test, a dead xdist worker ---------
SIGNALLING_CONFTEST = CONFTEST.replace(
    '            if entry == "raise":',
    '            if entry in ("SIGTERM", "SIGINT"):\n'
    '                import os, signal\n'
    # A background CI step inherits SIGINT ignored and Python keeps it so: restore the
    # default handler first (SIGTERM is left as the plugin set it).
    '                if entry == "SIGINT":\n'
    '                    signal.signal(signal.SIGINT, signal.default_int_handler)\n'
    '                os.kill(os.getpid(), getattr(signal, entry))  # what Ctrl-C or a CI timeout sends\n'
    '            if entry == "die":\n'
    '                import os\n'
    '                os._exit(1)  # the process vanishes (OOM killer, segfault): no report, no teardown\n'
    '            if entry == "raise":',
)


def _pairs_section(md: str) -> str:
    return md[md.index("## Not run"):]


def _signalling_project(pytester: pytest.Pytester, **acts: str) -> None:
    """The fake world, where ``view__model="SIGTERM" | "SIGINT" | "die"`` makes that test
    signal its own process or vanish (see :data:`SIGNALLING_CONFTEST`)."""
    views = json.loads(json.dumps(VIEWS))
    for pair, act in acts.items():
        view, model = pair.split("__")
        views[view][model] = act
    make_project(pytester, views=views)
    pytester.makeconftest(SIGNALLING_CONFTEST)


def test_sigterm_writes_the_partial_report_as_sigint_does(pytester):
    _signalling_project(pytester, tofu__laundered="SIGTERM")
    # A real process: SIGTERM's default action would end it (and this session) at once.
    result = pytester.runpytest_subprocess(*ISOLATED, "--model", "npo", "--model", "laundered",
                                           "--full-model", "full", timeout=300)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    md = report_md(pytester)
    section = _pairs_section(md)
    assert "the run was interrupted (SIGINT or SIGTERM" in section
    for pair in ("tofu · laundered", "novel_recall · full", "tofu · full"):
        assert f"- {pair}" in section
    assert "- novel_recall · npo" not in section  # what ran before the signal is kept
    data = results(pytester)
    assert row(data, "npo", "novel_recall.leak_rate")["value"] == 0.05
    assert {(p["view"], p["model"]) for p in data["not_run"]} == {("tofu", "laundered"), ("novel_recall", "full"),
                                                                  ("tofu", "full")}


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_interrupt_during_the_first_test_still_leaves_a_report(pytester, sig):
    _signalling_project(pytester, novel_recall__npo=sig)  # the first test of the session
    result = pytester.runpytest_subprocess(*ISOLATED, "--model", "npo", "--model", "laundered",
                                           "--full-model", "full", timeout=300)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    md = report_md(pytester)
    section = _pairs_section(md)
    for view in ("novel_recall", "tofu"):
        for model in ("npo", "laundered", "full"):
            assert f"- {view} · {model}" in section
    data = results(pytester)
    assert data["metrics"] == [] or all(r["value"] is None for r in data["metrics"])
    assert {v["status"] for v in data["verdicts"].values()} == {"INCOMPLETE"}


def test_a_dead_xdist_workers_pairs_are_listed_as_not_run_and_the_verdict_is_incomplete(pytester):
    _signalling_project(pytester, novel_recall__npo="die", tofu__npo="die")
    # No --model: the tiny world's mode, where a model is known only from what reported.
    result = run(pytester, "-n", "2")
    out = result.stdout.str()
    assert result.ret != pytest.ExitCode.OK, out
    md = report_md(pytester)
    (npo,) = [line for line in md.splitlines() if line.startswith("- **npo**")]
    assert "**INCOMPLETE**" in npo and "did not run: tofu, novel_recall (worker gw" in npo, npo
    section = _pairs_section(md)
    assert "- novel_recall · npo" in section and "- tofu · npo" in section
    assert "died" in section
    data = results(pytester)
    assert data["verdicts"]["npo"]["status"] == "INCOMPLETE"
    dead = {(p["view"], p["model"]): p["reason"] for p in data["not_run"]}
    assert set(dead) == {("novel_recall", "npo"), ("tofu", "npo")}
    assert all(r.startswith("worker gw") and "died" in r for r in dead.values()), dead
    assert data["verdicts"]["laundered"]["status"] == "FAIL"  # the other models' numbers are all there
