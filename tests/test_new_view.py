"""A new view needs no edit of the engine, the plugin or the report: it is defined in a
test module alone, and its numbers and extras reach report.md and results.json."""

from __future__ import annotations

import json

import pytest

from test_plugin import ISOLATED

CONFTEST = '''
from unlearn_audit.model.mock import MockModel, mock_context


def pytest_unlearn_audit_context(config, audit_config, tiny_world):
    return mock_context(audit_config, {"cand": MockModel("candidate")})
'''

AUDIT_MODULE = '''
from unlearn_audit.views import Metric, View, ViewResult, register_view


@register_view
class AnswerLength(View):
    """Mean answer length in words over the forget items (a toy view for this test)."""

    name = "answer_length"
    metrics = ("answer_length.mean_words",)

    def run(self, ctx, model):
        items = ctx.forget_items()
        words = [len(it.answer.split()) for it in items]
        metric = Metric("answer_length.mean_words", sum(words) / len(words), n=len(words),
                        extra={"per_item": words})
        return ViewResult(self.name, model, [metric], records=[{"item": i, "words": w} for i, w in enumerate(words)])


def test_answer_length(audit, model):
    audit.check("answer_length", model)
'''


def test_a_view_defined_in_a_test_module_reaches_the_report(pytester: pytest.Pytester):
    rows = [{"question": f"q{i}?", "answer": " ".join(["word"] * (i + 2)), "paraphrased_question": "p?",
             "paraphrased_answer": "p.", "perturbed_answer": ["x.", "y."]} for i in range(3)]
    data = pytester.mkdir("data")
    (data / "forget10_perturbed.json").write_text(json.dumps(rows))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_audits=AUDIT_MODULE)
    ref = pytester.mkdir("reference_results")
    (ref / "gates.yaml").write_text("schema_version: 1\ngates: []\n")

    result = pytester.runpytest(*ISOLATED, "--model", "cand", "--dataset", str(data))
    result.assert_outcomes(passed=1)

    out = json.loads((pytester.path / "audit-report" / "results.json").read_text())
    row = next(r for r in out["metrics"] if r["metric"] == "answer_length.mean_words")
    assert (row["model"], row["view"], row["value"], row["n"]) == ("cand", "answer_length", 3.0, 3)
    assert row["extra"] == {"per_item": [2, 3, 4]}
    md = (pytester.path / "audit-report" / "report.md").read_text()
    assert "## answer_length" in md and "answer_length.mean_words" in md
    assert "per_item = [2, 3, 4]" in md
    items = (pytester.path / "audit-report" / "items.jsonl").read_text().splitlines()
    assert [json.loads(line)["words"] for line in items] == [2, 3, 4]
