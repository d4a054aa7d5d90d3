"""The sanity check every model passes before any view (issue 12, case 3).

A model that says nothing leaks nothing: a NaN-weight copy answered "" everywhere and a
random-weight model answered runs of newlines, and both passed every leak gate. Here the
same two failures are built in miniature from the tiny test checkpoint (tests/_tiny.py) and
audited through the real plugin, data and engine: every gate must be an error with the
reason, never a pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import _tiny
from unlearn_audit.model._sanity import degenerate_kind

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_world"
GATES = """\
schema_version: 1
gates:
  - metric: novel_recall.leak_rate
    op: "<="
    value: 0.10
    rationale: "greedy answers may leak at most 1 item in 10"
"""
AUDIT_TESTS = """
def test_novel_recall(audit, model):
    audit.check("novel_recall", model)
"""


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", "empty"),
        ("\n\n\n\n", "empty"),
        ("   \t ", "empty"),
        ("the the the the the", "one token repeated"),
        ("!!!!!!!!", "one token repeated"),
        ("Port Aldric.", None),
        ("I don't know.", None),  # a refusal is an answer: unlearning may refuse
        ("no no", None),  # too short to call a loop
    ],
)
def test_degenerate_answers(text, kind):
    assert degenerate_kind(text) == kind


@pytest.fixture(scope="module")
def tokenizer():
    return _tiny.build_tokenizer()


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory, tokenizer):
    """The tiny checkpoint with every weight set to NaN (issue 12's NaN copy of npo)."""
    model = _tiny.build_model(tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return _tiny.save_checkpoint(tmp_path_factory.mktemp("nan") / "model", tokenizer, model)


@pytest.fixture(scope="module")
def newline_model(tmp_path_factory, tokenizer):
    """Finite weights, yet it answers every prompt with newlines only.

    The layers add nothing to the residual stream (o_proj and down_proj are zero), every
    embedding has +1 in dimension 0 and the final norm keeps only that dimension, so the
    last hidden state is always a positive multiple of e_0; the output head scores only
    the newline token on e_0, so greedy decoding picks it at every step.
    """
    model = _tiny.build_model(tokenizer)
    (newline,) = tokenizer.encode("\n", add_special_tokens=False)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[newline, 0] = 100.0
    return _tiny.save_checkpoint(tmp_path_factory.mktemp("newline") / "model", tokenizer, model)


def _audit(pytester: pytest.Pytester, tmp_path: Path, model: Path, label: str) -> pytest.RunResult:
    ref = pytester.path / "reference_results"
    ref.mkdir()
    (ref / "gates.yaml").write_text(GATES)
    pytester.makepyfile(test_audits=AUDIT_TESTS)
    # `--opt=value`: a bare existing path among the arguments would move pytest's rootdir
    # (and with it the report) to the checkout.
    return pytester.runpytest(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark",
        f"--model={label}={model}", "--device=cpu", f"--dataset={FIXTURES}",
        "--limit=2", "--max-new-tokens=12", f"--cache-dir={tmp_path / 'cache'}",
    )


def _gate_row(pytester: pytest.Pytester, label: str) -> dict:
    data = json.loads((pytester.path / "audit-report" / "results.json").read_text())
    (row,) = [r for r in data["metrics"] if r["model"] == label and r["metric"] == "novel_recall.leak_rate"]
    return row


@pytest.fixture
def _private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "ua-cache"))


@pytest.mark.usefixtures("_private_caches")
def test_a_nan_weight_model_errors_every_gate_instead_of_passing(pytester, tmp_path, nan_model):
    result = _audit(pytester, tmp_path, nan_model, "nan")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*nan failed the sanity check run before any view: the model has non-finite weights "
        "(NaN or inf in * of * tensors, e.g. model.embed_tokens.weight*",
        "*nan: INCOMPLETE*",
    ])
    assert "non-finite log-probabilities" in result.stdout.str()
    row = _gate_row(pytester, "nan")
    assert row["outcome"] == "error" and row["value"] is None
    assert "non-finite weights" in row["reason"]


@pytest.mark.usefixtures("_private_caches")
def test_a_model_that_answers_only_newlines_errors_every_gate(pytester, tmp_path, newline_model):
    result = _audit(pytester, tmp_path, newline_model, "mute")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*mute failed the sanity check run before any view: the model does not answer: 4 of 4 "
        "greedy answers to retain questions (which every audited model should answer) are "
        "degenerate (4 empty; first answer '\\n\\n*",
    ])
    row = _gate_row(pytester, "mute")
    assert row["outcome"] == "error" and "does not answer" in row["reason"]
    assert "- **mute**: **INCOMPLETE**" in (pytester.path / "audit-report" / "report.md").read_text()


@pytest.mark.realtok
@pytest.mark.usefixtures("_private_caches")
def test_an_untrained_llama32_shaped_model_is_refused(pytester, tmp_path, realtok_llama_untrained):
    """A random-weight model with Llama-3.2's real tokenizer and chat template answers with
    runs of newlines: every gate is an error, never a pass (issue 16)."""
    result = _audit(pytester, tmp_path, realtok_llama_untrained, "random32")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*random32 failed the sanity check run before any view: the model does not answer*"])
    row = _gate_row(pytester, "random32")
    assert row["outcome"] == "error" and "does not answer" in row["reason"]
