"""The tofu view: requests it builds, numbers it reports, records it keeps.

The unit tests run the view on a hand-made four-split dataset with a fake engine whose
mean NLLs and generations are chosen so every number is known in closed form; they
check the view feeds :mod:`unlearn_audit.scoring.tofu` correctly, not the metric
definitions themselves (``test_tofu_metrics.py`` does that). The slow test runs the
tiny world and checks the orderings views.md expects.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from unlearn_audit.context import AuditConfig, AuditContext
from unlearn_audit.model._load import ModelSpec
from unlearn_audit.model._types import GenRequest, Prompt, ScoreRequest, TokenScores
from unlearn_audit.scoring.tofu import (
    COMPONENT_NAMES,
    HEADLINE_NAMES,
    model_utility,
    tofu_numbers,
)
from unlearn_audit.scoring.tofu_records import (
    forget_truth_ratios,
    splits_from_records,
    write_legacy_logs,
)
from unlearn_audit.scoring.tofu_stats import hmean_rows
from unlearn_audit.views import get_view
from unlearn_audit.views.tofu import MEMORIZATION_NAMES

LN2, LN4, LN8 = math.log(2), math.log(4), math.log(8)


# --------------------------------------------------------------------------- fakes


class FakeEngine:
    """Canned answers: continuation text -> mean NLL, question -> greedy answer."""

    def __init__(self, nll: dict[str, float], gens: dict[str, str]):
        self.nll, self.gens = nll, gens
        self.score_calls: list[list[ScoreRequest]] = []
        self.generate_calls: list[list[GenRequest]] = []

    def score(self, requests):
        requests = list(requests)
        self.score_calls.append(requests)
        # Three tokens with equal log-probabilities: the mean NLL is exactly the canned one.
        return [TokenScores(np.full(3, -self.nll[r.continuation]), [1, 2, 3], []) for r in requests]

    def generate(self, requests):
        requests = list(requests)
        self.generate_calls.append(requests)
        return [[self.gens[r.prompt.turns[-1][1]]] for r in requests]


class FakeContext(AuditContext):
    """An AuditContext whose engines are fakes (nothing is loaded)."""

    def __init__(self, config: AuditConfig, engines: dict[str, FakeEngine], roles: dict[str, str]):
        super().__init__(
            config, {lbl: ModelSpec(source=lbl, label=lbl, role=roles[lbl]) for lbl in engines}
        )
        self.fakes = engines

    def engine(self, label):
        return self.fakes[label]


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


#: (question, answer, paraphrased answer, perturbed answers, author, family) per split.
FORGET = [
    ("Where was Ana born?", "Ana was born in Oslo.", "Oslo is where Ana was born.",
     ["Ana was born in Rome.", "Ana was born in Lima."], "Ana", "birthplace"),
    ("What does Ana write?", "Ana writes sea poems.", "Sea poems are what Ana writes.",
     ["Ana writes crime novels.", "Ana writes plays."], "Ana", "genre"),
    ("Where was Bo born?", "Bo was born in Kyiv.", "Kyiv is where Bo was born.",
     ["Bo was born in Cairo.", "Bo was born in Quito."], "Bo", "birthplace"),
    ("What does Bo write?", "Bo writes war epics.", "War epics are what Bo writes.",
     ["Bo writes haiku.", "Bo writes memoirs."], "Bo", "genre"),
]  # fmt: skip
RETAIN = [
    ("Where was Cy born?", "Cy was born in Bern.", "Bern is where Cy was born.",
     ["Cy was born in Oran.", "Cy was born in Baku."], "Cy", "birthplace"),
    ("What does Cy write?", "Cy writes fables.", "Fables are what Cy writes.",
     ["Cy writes odes.", "Cy writes satire."], "Cy", "genre"),
]  # fmt: skip
REAL = [
    ("Who wrote 'Tide'?", "Orla Penn", None, ["Ed Harrow", "Gil Thaw"], None, "books"),
    ("Who wrote 'Dusk'?", "Ivo Marsh", None, ["Tom Wren", "Del Salt"], None, "books"),
]
WORLD = [
    ("What is the capital of Valdoria?", "Nesport", None, ["Weshaven", "Dunmoor"], None, "geo"),
    ("What is the capital of Oskar?", "Lumen", None, ["Brack", "Tessel"], None, "geo"),
]
SPLIT_FILES = {
    "forget10_perturbed": FORGET,
    "retain_perturbed": RETAIN,
    "real_authors_perturbed": REAL,
    "world_facts_perturbed": WORLD,
}


#: Forget quality needs 20 items (FORGET_QUALITY_MIN_ITEMS): the forget rows five times over,
#: each copy asked with its own question, so every number but its n is unchanged.
COPIES = 5
FORGET_20 = [(f"{q} (copy {c})", *rest) for c in range(COPIES) for q, *rest in FORGET]


def _dataset(tmp_path: Path, forget: list = FORGET) -> Path:
    for name, rows in {**SPLIT_FILES, "forget10_perturbed": forget}.items():
        out = []
        for q, a, pa, pert, author, family in rows:
            row = {"question": q, "answer": a, "perturbed_answer": pert, "family": family}
            if pa is not None:
                row.update(paraphrased_question="Tell me: " + q, paraphrased_answer=pa)
            if author is not None:
                row["author"] = author
            out.append(row)
        _write(tmp_path / f"{name}.json", out)
    return tmp_path


@pytest.fixture
def dataset(tmp_path) -> Path:
    return _dataset(tmp_path)


@pytest.fixture
def dataset20(tmp_path) -> Path:
    """The dataset with 20 forget items, enough for forget quality."""
    return _dataset(tmp_path, FORGET_20)


def candidate_engine() -> FakeEngine:
    """Losses with closed-form numbers (see test_known_losses_give_known_numbers)."""
    nll: dict[str, float] = {}
    gens: dict[str, str] = {}
    for i, (q, a, pa, pert, _, _) in enumerate(FORGET):
        nll[a] = LN2 if i % 2 == 0 else LN4  # prob 0.5, 0.25, 0.5, 0.25
        # R = exp(para - mean pert): 0.5 for the first author, 2 for the second.
        nll[pa], p = (LN2, LN4) if i < 2 else (LN4, LN2)
        nll.update({x: p for x in pert})
        for question in (q, *(f"{q} (copy {c})" for c in range(COPIES))):
            gens[question] = a if i % 2 == 0 else "I do not know."  # ROUGE-L recall 1, 0
    for q, a, pa, pert, _, _ in RETAIN:
        nll.update({a: LN2, pa: LN2, pert[0]: LN4, pert[1]: LN4})  # prob .5, R .5
        gens[q] = a
    for q, a, _, pert, _, _ in REAL:
        nll.update({a: LN2, pert[0]: LN4, pert[1]: LN4})  # normalised .5, R .5
        gens[q] = a
    for q, a, _, pert, _, _ in WORLD:
        # Perturbed losses ln2 and ln8 average to ln4 in log space: R = 0.5. Averaging the
        # probabilities instead (TOFU's second copy) would give R = 0.625.
        nll.update({a: LN2, pert[0]: LN2, pert[1]: LN8})
        gens[q] = a + " indeed"
    return FakeEngine(nll, gens)


def retain_engine() -> FakeEngine:
    """Like the candidate, but paraphrased and perturbed forget answers equally likely (R = 1)."""
    eng = candidate_engine()
    for _, _, pa, pert, _, _ in FORGET:
        eng.nll.update({pa: LN4, pert[0]: LN4, pert[1]: LN4})
    return eng


def make_ctx(dataset: Path, *, retain: bool = True, **config) -> FakeContext:
    engines = {"cand": candidate_engine()}
    roles = {"cand": "candidate"}
    if retain:
        engines["ret"], roles["ret"] = retain_engine(), "retain"
    cfg = AuditConfig(dataset=str(dataset), max_new_tokens=37, progress=False, **config)
    return FakeContext(cfg, engines, roles)


def values(result) -> dict[str, float | None]:
    return {m.name: m.value for m in result.metrics}


# --------------------------------------------------------------------------- unit tests


def test_view_is_registered_with_headline_and_component_metrics():
    view = get_view("tofu")
    assert view.metrics == HEADLINE_NAMES + COMPONENT_NAMES + MEMORIZATION_NAMES


def test_one_score_call_and_one_generate_call_with_tofu_prompts(dataset):
    ctx = make_ctx(dataset)
    get_view("tofu").run(ctx, "cand")
    eng = ctx.fakes["cand"]
    assert len(eng.score_calls) == 1 and len(eng.generate_calls) == 1

    by_prompt: dict[Prompt, set[str]] = {}
    for r in eng.score_calls[0]:
        assert r.add_eot, "TOFU's chat path scores the closing end-of-turn token"
        by_prompt.setdefault(r.prompt, set()).add(r.continuation)
    # Every answer of an item -- paraphrased and perturbed included -- follows the
    # item's *original* question (TOFU: question_key: question everywhere).
    for q, a, pa, pert, _, _ in FORGET + RETAIN:
        assert by_prompt[Prompt.question(q)] == {a, pa, *pert}
    for q, a, _, pert, _, _ in REAL + WORLD:
        assert by_prompt[Prompt.question(q)] == {a, *pert}
    # gold + paraphrased + 2 perturbed on forget (4) and retain (2); gold + 2 elsewhere.
    assert len(eng.score_calls[0]) == 4 * 4 + 4 * 2 + 3 * 2 + 3 * 2

    gens = eng.generate_calls[0]
    assert [g.prompt for g in gens] == [
        Prompt.question(row[0]) for rows in (FORGET, RETAIN, REAL, WORLD) for row in rows
    ]
    assert all(g.temperature == 0 and g.n == 1 and g.max_new_tokens == 37 for g in gens)


def test_known_losses_give_known_numbers(dataset):
    res = get_view("tofu").run(make_ctx(dataset), "cand")
    v = values(res)
    assert v["tofu.forget_prob"] == pytest.approx(0.375)  # mean(.5, .25, .5, .25)
    assert v["tofu.forget_rouge"] == pytest.approx(0.5)
    assert v["tofu.forget_truth_ratio"] == pytest.approx(0.5)  # min(R, 1/R) with R = .5, 2
    expected = {
        "tofu.retain_prob": 0.5,  # not normalised on retain
        "tofu.retain_rouge": 1.0,
        "tofu.retain_truth_ratio": 0.5,  # max(0, 1 - .5)
        "tofu.real_authors_prob": 0.5,  # .5 / (.5 + .25 + .25)
        "tofu.real_authors_rouge": 1.0,
        "tofu.real_authors_truth_ratio": 0.5,
        "tofu.world_facts_prob": 0.5 / (0.5 + 0.5 + 0.125),
        "tofu.world_facts_rouge": 1.0,  # recall: the extra word costs nothing
        "tofu.world_facts_truth_ratio": 0.5,  # log-space mean of the perturbed losses
    }
    for name, value in expected.items():
        assert v[name] == pytest.approx(value), name
    assert v["tofu.model_utility"] == pytest.approx(sps.hmean(list(expected.values())))
    assert res.metric("tofu.forget_prob").n == 4
    assert res.metric("tofu.model_utility").n == 2 + 2 + 2


def test_forget_quality_against_the_retain_model_and_itself(dataset20):
    ctx = make_ctx(dataset20)
    cand = get_view("tofu").run(ctx, "cand")
    fq = cand.metric("tofu.forget_quality")
    assert fq.value == pytest.approx(sps.ks_2samp([0.5] * 10 + [2] * 10, [1] * 20).pvalue)
    assert fq.n == 20 and cand.warnings == []
    assert fq.extra["ks_statistic"] == pytest.approx(0.5)
    assert fq.extra["retain_source"] == "retain model 'ret'"
    assert fq.ci is None and "p-value" in fq.extra["ci_note"]
    # The retain model's result was computed once, through the context, and it compares
    # with itself by the same code: a KS test of a sample against itself gives p = 1.
    ret = ctx.result("tofu", "ret")
    assert ret.metric("tofu.forget_quality").value == pytest.approx(1.0)
    assert len(ctx.fakes["ret"].score_calls) == 1


def test_forget_quality_skipped_without_retain(dataset):
    res = get_view("tofu").run(make_ctx(dataset, retain=False), "cand")
    fq = res.metric("tofu.forget_quality")
    assert fq.value is None and "no retain model or --retain-logs" in fq.reason
    assert values(res)["tofu.model_utility"] is not None


def test_retain_logs_give_the_same_forget_quality(dataset20, tmp_path):
    with_model = make_ctx(dataset20)
    expected = get_view("tofu").run(with_model, "cand").metric("tofu.forget_quality").value
    assert expected is not None
    logs = write_legacy_logs(with_model.result("tofu", "ret").records, tmp_path / "retain_logs")
    # --retain-logs wins over a retain model; here there is none to fall back on.
    ctx = make_ctx(dataset20, retain=False, retain_logs=str(logs))
    fq = get_view("tofu").run(ctx, "cand").metric("tofu.forget_quality")
    assert fq.value == pytest.approx(expected)
    assert fq.extra["retain_source"].startswith("retain logs")


def test_records_rescore_to_the_same_numbers(dataset20, tmp_path):
    ctx = make_ctx(dataset20)
    res = get_view("tofu").run(ctx, "cand")
    json.dumps(res.records, allow_nan=False)  # plain JSON, no nan
    rec = next(r for r in res.records if r["split"] == "forget")
    assert rec["truth_ratio"] == pytest.approx(0.5) and rec["prob"] == pytest.approx(0.5)
    assert rec["perturbed_mean_nll"] == pytest.approx([LN4, LN4])

    retain_r = forget_truth_ratios(ctx.result("tofu", "ret").records)
    from_records = tofu_numbers(splits_from_records(res.records), retain_r)
    # Memorisation numbers are not TOFU's (open-unlearning's); they rescore from their own fields.
    tofu_only = {k: v for k, v in values(res).items() if k not in MEMORIZATION_NAMES}
    assert {k: n.value for k, n in from_records.items()} == pytest.approx(tofu_only)

    # The same through the CLI's path: records -> TOFU legacy logs -> rescore.
    from unlearn_audit.commands.rescore import rescore

    cand_dir = write_legacy_logs(res.records, tmp_path / "cand")
    ret_dir = write_legacy_logs(ctx.result("tofu", "ret").records, tmp_path / "ret")
    _, numbers = rescore(cand_dir, ret_dir)
    assert {k: numbers[k].value for k in tofu_only} == pytest.approx(tofu_only)


def test_intervals_and_families(dataset):
    res = get_view("tofu").run(make_ctx(dataset), "cand")
    for name in ("tofu.forget_prob", "tofu.forget_rouge", "tofu.forget_truth_ratio"):
        m = res.metric(name)
        assert m.ci is not None and m.ci[0] <= m.value <= m.ci[1], name
        assert set(m.by_family) == {"birthplace", "genre"}
        assert "ci_by_author" in m.extra
    prob = res.metric("tofu.forget_prob")
    assert prob.by_family == pytest.approx({"birthplace": 0.5, "genre": 0.25})
    assert prob.ci == pytest.approx((0.25, 0.5))
    mu = res.metric("tofu.model_utility")
    assert mu.ci is not None and mu.ci[0] <= mu.value + 1e-12 and mu.ci[1] >= mu.value - 1e-12


def test_vectorised_harmonic_mean_is_model_utility():
    rng = np.random.default_rng(0)
    rows = rng.uniform(0.01, 1.0, size=(50, 9))
    rows[3, 4] = 0.0  # a zero component makes it 0
    np.testing.assert_allclose(hmean_rows(rows), [model_utility(r) for r in rows], rtol=1e-12)


def test_missing_split_skips_only_its_numbers(dataset):
    (dataset / "world_facts_perturbed.json").unlink()
    res = get_view("tofu").run(make_ctx(dataset), "cand")
    for kind in ("prob", "rouge", "truth_ratio"):
        m = res.metric(f"tofu.world_facts_{kind}")
        assert m.value is None and "world_facts" in m.reason
    assert res.metric("tofu.model_utility").value is None
    assert "world_facts" in res.metric("tofu.model_utility").reason
    assert res.metric("tofu.forget_prob").value == pytest.approx(0.375)
    assert res.metric("tofu.retain_prob").value == pytest.approx(0.5)


# --------------------------------------------------------------------------- tiny world


@pytest.mark.slow
def test_tiny_world_orders_models_as_tofu_expects(tmp_path_factory):
    """Retain anchors forget quality at 1 and full is far from it; the unlearned models lie
    between full and retain on forget-set probability and ROUGE-L recall."""
    from unlearn_audit.world import FIXTURES_DIR, default_models

    models = default_models()
    config = AuditConfig(
        dataset=str(FIXTURES_DIR),
        forget_split="forget10",
        cache_dir=tmp_path_factory.mktemp("engine-cache"),
        progress=False,
    )
    ctx = AuditContext(config, models)
    labels = ("full", "retain", "npo", "graddiff", "laundered")
    got = {}
    for lbl in labels:
        start = time.perf_counter()
        got[lbl] = values(ctx.result("tofu", lbl))
        seconds = time.perf_counter() - start
        print(
            lbl,
            f"{seconds:.1f}s",
            {k.removeprefix("tofu."): f"{v:.4g}" for k, v in got[lbl].items()},
        )

    fq = {lbl: got[lbl]["tofu.forget_quality"] for lbl in labels}
    assert fq["retain"] == pytest.approx(1.0)
    assert fq["full"] < 0.01, fq
    for name in ("tofu.forget_prob", "tofu.forget_rouge"):
        for cand in ("npo", "graddiff"):
            assert got["full"][name] > got[cand][name] > got["retain"][name], (name, cand, got)


# --------------------------------------------------------------------------- degradation probe


def test_forget_quality_on_too_few_items_is_withheld_and_said_so(dataset):
    # Four forget items: the KS test could hardly say "different" (p >= 0.029 whatever the
    # models), so the number is not measured, its gate does not run, and the report says why.
    res = get_view("tofu").run(make_ctx(dataset), "cand")
    fq = res.metric("tofu.forget_quality")
    assert fq.value is None and fq.skip.value == "not_applicable" and fq.n == 4
    assert fq.reason.startswith("forget quality not measured: 4 candidate and 4 retain-model truth ratios")
    assert fq.extra["p_value_on_too_few_items"] == pytest.approx(sps.ks_2samp([0.5, 0.5, 2, 2], [1] * 4).pvalue)
    assert [w for w in res.warnings if w.startswith("tofu.forget_quality: forget quality not measured")]


def _rewrite(path: Path, row: int, **fields) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows[row].update(fields)
    _write(path, rows)


def test_an_item_with_an_extra_perturbed_answer_drops_only_itself_and_is_stated(dataset20):
    # One forget item with three perturbed answers where the others have two: it used to set
    # the split's count, so the other 19 items were dropped and forget quality ran on n = 1.
    extra = "Ana was born in Pisa."
    _rewrite(dataset20 / "forget10_perturbed.json", 0, perturbed_answer=[*FORGET[0][3], extra])
    ctx = make_ctx(dataset20)
    for eng in ctx.fakes.values():
        eng.nll[extra] = LN4
    res = get_view("tofu").run(ctx, "cand")
    tr = res.metric("tofu.forget_truth_ratio")
    assert (tr.n, tr.excluded) == (19, 1) and "1 item(s) without a truth ratio left out" in tr.reason
    assert res.metric("tofu.forget_prob").n == 20  # the gold answer's probability keeps it
    fq = res.metric("tofu.forget_quality")
    assert fq.value is None and (fq.n, fq.excluded) == (19, 1)  # 19 < 20: withheld, not a pass
    assert "1 candidate forget item(s) without a truth ratio left out" in fq.reason
    (dropped, withheld) = res.warnings
    assert dropped == ("1 forget item(s) (split 'forget10_perturbed', rows 0) have 3 perturbed answers "
                       "where the split's others have 2: left out of tofu.forget_truth_ratio and "
                       "tofu.forget_quality. Fix: give every item of the split 2 perturbed answers.")
    assert withheld.startswith("tofu.forget_quality: forget quality not measured: 19 candidate and 19 retain")


def test_a_retain_item_with_a_missing_perturbed_answer_is_counted_and_stated(dataset):
    _rewrite(dataset / "retain_perturbed.json", 1, perturbed_answer=[RETAIN[1][3][0]])
    res = get_view("tofu").run(make_ctx(dataset), "cand")
    tr = res.metric("tofu.retain_truth_ratio")
    assert (tr.n, tr.excluded) == (1, 1) and tr.value == pytest.approx(0.5)
    assert any(w.startswith("1 retain item(s) (split 'retain_perturbed', rows 1) have 1 perturbed answers "
                            "where the split's others have 2: left out of tofu.retain_truth_ratio")
               for w in res.warnings), res.warnings


def _retain_logs(ctx, directory: Path, *, keep=None, foreign: int = 0, rename: bool = False) -> Path:
    """The retain model's records as TOFU logs: only the forget items ``keep`` selects, plus
    ``foreign`` items of another dataset; ``rename`` gives every question another author."""
    recs = ctx.result("tofu", "ret").records
    forget = [r for r in recs if r["split"] == "forget"]
    kept = [r for i, r in enumerate(forget) if keep is None or keep(i)]
    other = [{**r, "index": 1000 + i, "question": f"Who is the author of Volume {i}?",
              "truth_ratio": 50.0, "paraphrased_mean_nll": 9.0} for i, r in enumerate(forget[:foreign])]
    out = [{**r, "question": r["question"].replace("Ana", "Una").replace("Bo", "Ty")} if rename else r
           for r in kept + other]
    return write_legacy_logs(out + [r for r in recs if r["split"] != "forget"], directory)


def test_retain_logs_of_another_dataset_are_refused_naming_the_match_and_the_fix(dataset20, tmp_path):
    from unlearn_audit.scoring.logs import LogFormatError

    logs = _retain_logs(make_ctx(dataset20), tmp_path / "other", rename=True)
    ctx = make_ctx(dataset20, retain=False, retain_logs=str(logs))
    with pytest.raises(LogFormatError) as e:
        get_view("tofu").run(ctx, "cand")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"--retain-logs {logs}: only 0 of the candidate's 20 forget questions are "
                              "among the logs' 20 forget items; e.g. 'Where was Ana born? (copy 0)' is not in them.")
    assert "Fix: pass the stored logs of the retain model evaluated on this forget split" in message


def test_retain_logs_are_matched_by_question_foreign_items_left_out(dataset20, tmp_path):
    with_model = make_ctx(dataset20)
    expected = get_view("tofu").run(with_model, "cand").metric("tofu.forget_quality").value
    # The right 20 items and 6 of another dataset: only the 20 are the reference sample.
    logs = _retain_logs(with_model, tmp_path / "mixed", foreign=6)
    res = get_view("tofu").run(make_ctx(dataset20, retain=False, retain_logs=str(logs)), "cand")
    fq = res.metric("tofu.forget_quality")
    assert fq.value == pytest.approx(expected) and fq.extra["retain_n"] == 20
    assert "20 of their 26 forget items matched by question text" in fq.extra["retain_source"]


def test_retain_logs_of_the_whole_split_serve_a_limited_run(dataset20, tmp_path):
    logs = _retain_logs(make_ctx(dataset20), tmp_path / "full_split")
    res = get_view("tofu").run(make_ctx(dataset20, retain=False, retain_logs=str(logs), limit=8), "cand")
    fq = res.metric("tofu.forget_quality")
    assert fq.extra["retain_n"] == 8  # the candidate's 8 questions, not the logs' 20
    assert fq.value is None and "8 candidate and 8 retain-model truth ratios" in fq.reason


def test_retain_logs_missing_some_questions_are_used_and_stated(dataset20, tmp_path):
    logs = _retain_logs(make_ctx(dataset20), tmp_path / "partial", keep=lambda i: i % 4 != 3)
    res = get_view("tofu").run(make_ctx(dataset20, retain=False, retain_logs=str(logs)), "cand")
    fq = res.metric("tofu.forget_quality")
    assert fq.extra["retain_n"] == 15 and fq.value is None  # 15 < 20: withheld
    assert res.warnings[0] == ("--retain-logs: 5 of the candidate's 20 forget questions are not in the "
                               "retain logs (e.g. 'What does Bo write? (copy 0)'); forget quality compares "
                               "the candidate's truth ratios with the 15 retain items that are.")
