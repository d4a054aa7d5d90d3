"""A view's own options: declared as typed fields, reached from the command line and the ini
file without any edit to the plugin, checked before anything runs."""

from __future__ import annotations

import json

import pytest

from test_plugin import ISOLATED
from unlearn_audit.context import AuditConfig
from unlearn_audit.views import view_class
from unlearn_audit.views._options import (
    Option,
    ViewOptionError,
    parse_entries,
    resolve,
    values_of,
)


@pytest.mark.parametrize(("opt", "raw", "value"), [
    (Option("n", int, 1, "h"), "7", 7),
    (Option("n", int, 1, "h"), 7.0, 7),
    (Option("x", float, 1.0, "h"), "1e-3", 1e-3),
    (Option("b", bool, False, "h"), "Yes", True),
    (Option("b", bool, True, "h"), "off", False),
    (Option("b", bool, True, "h"), False, False),
    (Option("k", str, "a", "h", choices=("a", "b")), " b ", "b"),
])
def test_an_option_parses_text_into_its_type(opt, raw, value):
    assert opt.parse(raw) == value and type(opt.parse(raw)) is type(value)


@pytest.mark.parametrize(("opt", "raw", "words"), [
    (Option("n", int, 1, "h"), "2.5", "expected a whole number, got '2.5'"),
    (Option("n", int, 1, "h"), 2.5, "expected a whole number"),
    (Option("x", float, 1.0, "h", check=lambda v: v > 0, expect="a number > 0"), "0", "expected a number > 0"),
    (Option("b", bool, False, "h"), "maybe", "expected true or false"),
    (Option("k", str, "lstsq", "h", choices=("lstsq", "tuned")), "tunde", "Did you mean tuned?"),
])
def test_a_bad_value_says_what_was_expected(opt, raw, words):
    with pytest.raises(ViewOptionError, match=words.replace("?", r"\?").replace(".", r"\.")):
        opt.parse(raw)


@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "1e400", float("inf"), float("nan")])
def test_a_float_option_refuses_values_that_are_not_finite(raw):
    # inf passed "> 0" (masked_probe.lr=inf trained on nan) and nan failed it with no word why.
    plain = Option("x", float, 1.0, "h")
    positive = Option("lr", float, None, "h", check=lambda v: v > 0, expect="a number > 0")
    with pytest.raises(ViewOptionError, match=rf"^expected a finite number, got {raw!r}$"):
        plain.parse(raw)
    with pytest.raises(ViewOptionError, match=rf"^expected a finite number > 0, got {raw!r}$"):
        positive.parse(raw)
    with pytest.raises(ViewOptionError, match=r"^masked_probe\.lr: expected a finite number > 0, got "):
        resolve({"masked_probe": {"lr": raw}}, view_class)


def test_entries_must_name_a_view_and_an_option():
    assert parse_entries(["rtt.epochs=5", "rtt.epochs=6", "masked_probe.kind = tuned"]) == {
        "rtt": {"epochs": "6"}, "masked_probe": {"kind": "tuned"}}
    for bad in ("epochs=5", "rtt.epochs", ".epochs=1", "rtt.=1"):
        with pytest.raises(ViewOptionError, match="VIEW.OPTION=VALUE"):
            parse_entries([bad])


def test_the_built_in_views_declare_their_knobs_and_resolve_checks_them():
    assert resolve({"masked_probe": {"steps": "50", "kind": "tuned"}, "rtt": {"lora": "false"}}, view_class) == {
        "masked_probe": {"steps": 50, "kind": "tuned"}, "rtt": {"lora": "false"}}
    with pytest.raises(ViewOptionError, match=r"no option 'step'\. Did you mean masked_probe\.steps"):
        resolve({"masked_probe": {"step": "5"}}, view_class)
    with pytest.raises(ViewOptionError, match=r"masked_probe\.steps: expected a whole number >= 0, got '-1'"):
        resolve({"masked_probe": {"steps": "-1"}}, view_class)
    with pytest.raises(ViewOptionError, match="Unknown view 'masked_prob'. Did you mean masked_probe"):
        resolve({"masked_prob": {"steps": "5"}}, view_class)


def test_a_view_reads_the_value_set_or_its_default():
    from unlearn_audit.views.masked_probe import ProbeSettings
    from unlearn_audit.views.rtt import RttBudget

    assert ProbeSettings.from_config(AuditConfig()).kind == "lstsq"
    restricted = ProbeSettings.from_config(AuditConfig(view_options={"masked_probe": {"kind": "restricted"}}))
    assert (restricted.kind, restricted.lr) == ("restricted", 1e-2)  # lr's default follows the kind
    budget = RttBudget.from_config(AuditConfig(view_options={"rtt": {"epochs": 5, "lora": "true"}}), 10)
    assert (budget.epochs, budget.lora, budget.lr) == (5, True, 1e-3)
    opts = (Option("n", int, 3, "h"), Option("x", float, 0.5, "h"))
    assert values_of(AuditConfig(), "v", opts) == {"n": 3, "x": 0.5}
    assert values_of(AuditConfig(view_options={"v": {"n": "4"}}), "v", opts) == {"n": 4, "x": 0.5}
    with pytest.raises(ViewOptionError, match=r"the v view has no option 'y'"):  # a typo from Python too
        values_of(AuditConfig(view_options={"v": {"y": 1}}), "v", opts)


CONFTEST = '''
from unlearn_audit.model.mock import MockModel, mock_context


def pytest_unlearn_audit_context(config, audit_config, tiny_world):
    return mock_context(audit_config, {"cand": MockModel("candidate")})
'''

AUDIT_MODULE = '''
from unlearn_audit.views import Metric, View, ViewResult, register_view
from unlearn_audit.views._options import Option


@register_view
class Knobs(View):
    name = "knobs"
    metrics = ("knobs.scaled",)
    options = (Option("factor", float, 1.0, "what the number is multiplied by"),
               Option("twice", bool, False, "double it as well"))

    def run(self, ctx, model):
        value = 0.25 * self.option(ctx, "factor") * (2 if self.option(ctx, "twice") else 1)
        return ViewResult(self.name, model, [Metric("knobs.scaled", value)])


def test_knobs(audit, model):
    audit.check("knobs", model)
'''


def _project(pytester: pytest.Pytester, ini: str = "") -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_audits=AUDIT_MODULE)
    ref = pytester.mkdir("reference_results")
    (ref / "gates.yaml").write_text("schema_version: 1\ngates: []\n")
    if ini:
        pytester.makeini(ini)


def _value(pytester: pytest.Pytester) -> tuple[float, dict]:
    out = json.loads((pytester.path / "audit-report" / "results.json").read_text())
    row = next(r for r in out["metrics"] if r["metric"] == "knobs.scaled")
    return row["value"], out["config"]["view_options"]


def test_a_view_option_reaches_the_view_from_the_command_line_and_the_ini_file(pytester):
    _project(pytester, "[pytest]\naudit_view_option =\n    knobs.factor=3\n    knobs.twice=yes\n")
    pytester.runpytest(*ISOLATED, "--model=cand=mock").assert_outcomes(passed=1)
    assert _value(pytester) == (1.5, {"knobs": {"factor": 3.0, "twice": True}})
    # The command line wins over the ini file.
    pytester.runpytest(*ISOLATED, "--model=cand=mock", "--view-option", "knobs.factor=2").assert_outcomes(passed=1)
    assert _value(pytester) == (0.5, {"knobs": {"factor": 2.0}})


def test_a_bad_view_option_stops_the_run_before_anything_runs(pytester):
    _project(pytester)
    result = pytester.runpytest(*ISOLATED, "--model=cand=mock", "--view-option", "knobs.facter=2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--view-option: the knobs view has no option 'facter'. Did you mean knobs.factor?*"])
    result = pytester.runpytest(*ISOLATED, "--model=cand=mock", "--view-option", "knobs.factor=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--view-option: knobs.factor: expected a number, got 'lots'*"])
    # inf parses as a float but is no setting: refused before anything runs, like a typo.
    result = pytester.runpytest(*ISOLATED, "--model=cand=mock", "--view-option", "knobs.factor=inf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--view-option: knobs.factor: expected a finite number, got 'inf'*"])


def test_the_views_command_lists_each_view_with_its_options(capsys):
    from unlearn_audit.cli import main

    assert main(["views", "--json"]) == 0
    views = {v["view"]: v for v in json.loads(capsys.readouterr().out)}
    assert views["masked_probe"]["module"].endswith("views/masked_probe.py")
    assert {o["name"] for o in views["rtt"]["options"]} == {"epochs", "lr", "batch_size", "lora", "lora_from_params"}
    assert "tofu.forget_quality" in views["tofu"]["metrics"]
    assert main(["views"]) == 0
    assert "masked_probe.kind" in capsys.readouterr().out


def test_the_views_command_stops_quietly_when_its_reader_leaves():
    import subprocess
    import sys

    # `unlearn-audit views | head -1`: the table is longer than what the reader takes.
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from unlearn_audit.cli import main; sys.exit(main(['views']))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err
