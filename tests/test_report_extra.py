"""Everything a view measures reaches the user: ``Metric.extra`` in results.json and report.md.

The views run for real (tiny random checkpoints from ``tests/_tiny.py``, the real engine),
then go through the same session and writer the plugin uses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import _tiny
from unlearn_audit.context import AuditConfig, AuditContext
from unlearn_audit.model import ModelSpec
from unlearn_audit.report import AuditSession, MetricRow, PlannedModel

REPO = Path(__file__).resolve().parents[1]


def _row(q, a, author, family):
    return {"question": q, "answer": a, "paraphrased_question": "Tell me: " + q,
            "paraphrased_answer": a, "perturbed_answer": [a.replace("e", "a"), a.replace("o", "u")],
            "author": author, "family": family}


FORGET = [
    _row("Where was Elena Marwick born?", "Elena Marwick was born in Port Aldric.", "Elena Marwick", "birthplace"),
    _row("What did Elena Marwick's father do?", "Her father was a clockmaker.", "Elena Marwick", "parents"),
    _row("Where is Tomas Okonkwo-Reyes from?", "Tomas Okonkwo-Reyes is from the town of Vell.",
         "Tomas Okonkwo-Reyes", "birthplace"),
]
RETAIN = [
    _row("What is the capital of France?", "The capital of France is Paris.", "World", "other"),
    _row("What does the novel explore?", "The novel explores grief, family and the ocean.", "World", "books"),
]
ROLES = {"cand": "candidate", "base": "base"}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("extra")
    data = root / "data"
    data.mkdir()
    for name, rows in (("forget10_perturbed", FORGET), ("retain_perturbed", RETAIN)):
        (data / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = _tiny.build_tokenizer()
    specs = {label: ModelSpec(source=str(_tiny.save_checkpoint(root / label, tok, _tiny.build_model(tok, seed=i))),
                              label=label, role=role, device="cpu")
             for i, (label, role) in enumerate(ROLES.items())}
    with pytest.MonkeyPatch.context() as mp:  # load_model's hash cache stays out of the user's
        mp.setenv("UNLEARN_AUDIT_CACHE", str(root / "cache"))
        config = AuditConfig(dataset=str(data), report_dir=root / "report", cache_dir=None,
                             progress=False, max_new_tokens=6, view_options={"masked_probe": {"steps": 2}})
        ctx = AuditContext(config, specs)
        s = AuditSession(config, tiny_world=False, plan=lambda: [PlannedModel(k, v) for k, v in ROLES.items()],
                         context_factory=lambda: ctx, reference_dir=REPO / "reference_results",
                         gates_path=REPO / "reference_results" / "gates.yaml", root=root)
        for view in ("format_shift", "masked_probe"):
            for label in ROLES:
                s.collect(s.measure(view, label).outcome.to_payload())
                s.planned.append((view, label))
        s.finish()
        yield s


def _results(session) -> dict:
    return json.loads((session.config.report_dir / "results.json").read_text())


def _metric(data: dict, model: str, metric: str) -> dict:
    return next(r for r in data["metrics"] if r["model"] == model and r["metric"] == metric)


def test_format_shift_minus_base_is_in_results_json(session):
    data = _results(session)
    for name in ("format_shift.leak_rate", "format_shift.multiple_choice_leak_rate"):
        row = _metric(data, "cand", name)
        base = _metric(data, "base", name)["value"]
        assert row["extra"]["base"] == base
        if row["value"] is not None and base is not None:
            assert row["extra"]["minus_base"] == pytest.approx(row["value"] - base)
        else:
            assert row["extra"]["minus_base"] is None


def test_the_probe_per_layer_curve_is_in_results_json(session):
    row = _metric(_results(session), "cand", "masked_probe.top1_last_layer")
    layers = 2 + 1  # the tiny model's two layers plus the embeddings
    for curve in ("probe_top1_by_layer", "lens_top1_by_layer"):
        assert len(row["extra"][curve]) == layers
        assert all(v is None or 0.0 <= v <= 1.0 for v in row["extra"][curve])
    # the headline number is the probe curve's last layer
    assert row["extra"]["probe_top1_by_layer"][-1] == pytest.approx(row["value"])


def test_extra_values_are_shown_in_report_md(session):
    md = (session.config.report_dir / "report.md").read_text()
    assert "probe_top1_by_layer = [" in md
    assert "minus_base = " in md


def test_extra_is_json_safe_nan_becomes_null():
    row = MetricRow("m", "v", "v.x", 0.5, extra={"curve": [0.1, math.nan], "nested": {"d": math.inf}})
    out = json.loads(json.dumps(row.to_json(), allow_nan=False))
    assert out["extra"] == {"curve": [0.1, None], "nested": {"d": None}}
    assert MetricRow.from_json(out).extra == out["extra"]
    legacy = {k: v for k, v in out.items() if k != "extra"}  # results.json before `extra`
    assert MetricRow.from_json(legacy).extra == {}
