"""The audit context's own bookkeeping (no model needed)."""

from __future__ import annotations

import json

import pytest

from unlearn_audit.context import AuditConfig, AuditContext
from unlearn_audit.data import DatasetError


def _rows(n: int) -> list[dict]:
    return [
        {"question": f"q{i}?", "answer": f"a{i}.", "paraphrased_question": f"pq{i}?",
         "paraphrased_answer": f"pa{i}.", "perturbed_answer": [f"x{i}.", f"y{i}."]}
        for i in range(n)
    ]


def test_the_items_cache_keeps_require_apart(tmp_path):
    # Row 3 lacks its paraphrased answer: a view that needs it must be told, even when
    # another view (chain_of_clues, without `require`) loaded the split first.
    rows = _rows(5)
    rows[3]["paraphrased_answer"] = ""
    (tmp_path / "forget10_perturbed.json").write_text(json.dumps(rows), encoding="utf-8")
    ctx = AuditContext(AuditConfig(dataset=str(tmp_path), progress=False), {})

    unchecked = ctx.items("forget10_perturbed")
    assert len(unchecked) == 5
    with pytest.raises(DatasetError, match=r"lack 'paraphrased_answer' \(first: row 3\)"):
        ctx.forget_items()


def test_the_items_cache_still_serves_one_load_per_key(tmp_path):
    (tmp_path / "forget10_perturbed.json").write_text(json.dumps(_rows(4)), encoding="utf-8")
    ctx = AuditContext(AuditConfig(dataset=str(tmp_path), limit=2, progress=False), {})
    assert ctx.forget_items() is ctx.forget_items()
    assert len(ctx.forget_items()) == 2
    assert ctx.items("forget10_perturbed") is not ctx.forget_items()  # other `require`
