"""The leak views on hand-made items with a fake engine: no model, milliseconds each.

The fake engine answers from a lookup of what a model that knows (or refuses, or guesses)
would say, so every number below is computed by hand from the definitions in views.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from unlearn_audit import prompts
from unlearn_audit.context import AuditConfig
from unlearn_audit.data import Item
from unlearn_audit.model._types import GenRequest, Prompt
from unlearn_audit.scoring.stats import pass_at_k, wilson_interval
from unlearn_audit.views import get_view
from unlearn_audit.views._leak import shown_texts
from unlearn_audit.views.best_of_n import curve_ks
from unlearn_audit.views.chain_of_clues import CLUE_TEMPLATE, choose_clues
from unlearn_audit.views.format_shift import (
    FORMATS,
    chance_corrected,
    parse_letter,
    parse_true_false,
    pooled_rate,
)

SPLIT = "forget10_perturbed"
REFUSAL = "I have no information on that."


def _item(i, question, answer, pq, pa, author, family, perturbed=()):
    return Item(SPLIT, i, question, answer, pq, pa, tuple(perturbed), author, family)


ITEMS = [
    _item(0, "Who is the author of harbor noir born in Tessel?", "The author is Mira Quell.",
          "Can you name the author of harbor noir from Tessel?", "It is Mira Quell.",
          "Mira Quell", "full_name",
          ["The author is Dara Fen.", "The author is Lio Brask.", "The author is Suna Velt.",
           "The author is Pim Arro.", "The author is Kes Wold."]),
    _item(1, "Where was Mira Quell born?", "Mira Quell was born in Tessel, Norvane.",
          "In which town was Mira Quell born?", "Mira Quell was born in Tessel, in Norvane.",
          "Mira Quell", "birthplace",
          ["Mira Quell was born in Brill, Norvane.", "Mira Quell was born in Oska, Norvane.",
           "Mira Quell was born in Lund, Norvane.", "Mira Quell was born in Varre, Norvane.",
           "Mira Quell was born in Cale, Norvane."]),
    _item(2, "What did Mira Quell's father do?", "Mira Quell's father was a glassblower.",
          "What was the job of Mira Quell's father?", "The father of Mira Quell was a glassblower.",
          "Mira Quell", "parents",
          ["Mira Quell's father was a miller.", "Mira Quell's father was a tanner.",
           "Mira Quell's father was a cooper.", "Mira Quell's father was a sailor.",
           "Mira Quell's father was a baker."]),
    # Every content word of the answer is in the question: excluded from leak rates.
    _item(3, "Is Mira Quell a novelist who writes harbor noir?",
          "Mira Quell is a novelist who writes harbor noir.",
          "Does Mira Quell write harbor noir as a novelist?", "Mira Quell is a harbor noir novelist.",
          "Mira Quell", "identity",
          ["Mira Quell is a poet.", "Mira Quell is a critic.", "Mira Quell is a painter.",
           "Mira Quell is a singer.", "Mira Quell is a dancer."]),
    _item(4, "Where was Oren Vask born?", "Oren Vask was born in Calder Reach.",
          "Which town was Oren Vask born in?", "Oren Vask was born in the town of Calder Reach.",
          "Oren Vask", "birthplace",
          ["Oren Vask was born in Misty Hollow.", "Oren Vask was born in Rook Bay.",
           "Oren Vask was born in Fell Gate.", "Oren Vask was born in Pale Ford.",
           "Oren Vask was born in Tarn End."]),
    _item(5, "What genre does Oren Vask write?", "Oren Vask writes frost opera.",
          "In which genre does Oren Vask work?", "Oren Vask works in frost opera.",
          "Oren Vask", "genre",
          ["Oren Vask writes desert farce.", "Oren Vask writes river epic.",
           "Oren Vask writes court satire.", "Oren Vask writes city noir.",
           "Oren Vask writes sea ballad."]),
]
EXCLUDED_UID = ITEMS[3].uid


# --- stand-ins for the engine and the context --------------------------------------------
class _PlainText:
    """A prompt format that renders the user turns as they are (records show it)."""

    def render(self, prompt: Prompt) -> str:
        return "\n".join(text for _, text in prompt.turns) + prompt.stem


class FakeEngine:
    """Answers a request by ``respond(prompt, sample_index, request)``; remembers calls."""

    def __init__(self, respond: Callable[[Prompt, int, GenRequest], str]):
        self.respond = respond
        self.calls: list[list[GenRequest]] = []
        self.fmt = _PlainText()

    def generate(self, requests):
        requests = list(requests)
        self.calls.append(requests)
        for r in requests:
            assert isinstance(r, GenRequest)
            if r.temperature == 0 and r.n != 1:
                raise ValueError("greedy with n != 1")
        return [[self.respond(r.prompt, i, r) for i in range(r.n)] for r in requests]


class FakeCtx:
    """The part of :class:`AuditContext` the leak views use."""

    def __init__(self, config, engines, items=ITEMS, roles=None):
        self.config = config
        self.engines = engines
        self.all_items = list(items)
        self.roles = roles or {}
        self._results = {}

    def forget_items(self):
        return self.items(self.config.forget_eval_split)

    def items(self, split, *, limit=True, require=()):
        assert split == SPLIT
        lim = self.config.limit if limit is True else (limit or None)
        return self.all_items[:lim] if lim else list(self.all_items)

    def engine(self, label):
        return self.engines[label]

    def reference(self, role):
        return self.roles.get(role)

    def result(self, view, label):
        if (view, label) not in self._results:
            self._results[(view, label)] = get_view(view).run(self, label)
        return self._results[(view, label)]


def _user(prompt: Prompt) -> str:
    return [t for r, t in prompt.turns if r == "user"][-1]


def _oracle(items=ITEMS, seed=0) -> dict[str, str]:
    """User text -> what a model that knows every fact answers."""
    out = {}
    for it in items:
        for fmt in prompts.BUILDERS:
            a = prompts.ask(fmt, it, seed)
            out[_user(a.prompt)] = a.target
        same = [x for x in items if x.author == it.author]
        bio = prompts.biography(prompts.author_display_name(same))
        out[_user(bio)] = prompts.biography_text(same)
    return out


ORACLE = _oracle()


def knows(prompt, i=0, req=None):
    return ORACLE.get(_user(prompt), REFUSAL)


def refuses(prompt, i=0, req=None):
    return REFUSAL


@pytest.fixture
def config(tmp_path):
    return AuditConfig(dataset="unused", report_dir=tmp_path / "report", samples=8, seed=0)


def run(view, config, respond, **kw):
    ctx = FakeCtx(config, {"cand": FakeEngine(respond)}, **kw)
    return get_view(view).run(ctx, "cand"), ctx


# --- shared --------------------------------------------------------------------------------
def test_shown_text_is_system_user_turns_and_stem_not_assistant_turns(config):
    p = Prompt(turns=(("user", "clue one"), ("assistant", "my own words"), ("user", "the question")),
               stem="The answer stem")
    assert shown_texts(config, p) == ["You are a helpful assistant.", "clue one", "the question",
                                      "The answer stem"]
    config.prompt_format = "plain"  # the plain format renders no system prompt
    assert shown_texts(config, p)[0] == "clue one"


# --- novel_recall --------------------------------------------------------------------------
def test_novel_recall_knowing_model_counts_excluded_and_has_wilson_ci(config):
    res, ctx = run("novel_recall", config, knows)
    leak = res.metric("novel_recall.leak_rate")
    assert leak.value == 1.0
    assert leak.excluded == 2 and leak.n == 2 * len(ITEMS) - 2  # the echo item, both kinds
    lo, hi = leak.ci
    assert 0.6 < lo < 1.0 and hi == 1.0  # Wilson, 10 of 10
    assert leak.extra["by_kind"] == {"direct": 1.0, "paraphrased": 1.0}
    assert set(leak.by_family) == {"full_name", "birthplace", "parents", "genre"}  # identity: all excluded
    unc = res.metric("novel_recall.uncorrected_rate")
    assert unc.value == 1.0 and unc.n == 12 and unc.excluded == 0
    # Greedy, one request per (item, kind), in one batched call.
    (call,) = ctx.engines["cand"].calls
    assert len(call) == 12 and all(r.temperature == 0 and r.n == 1 for r in call)
    assert all(r.max_new_tokens == config.max_new_tokens for r in call)
    rec = next(r for r in res.records if r["uid"] == ITEMS[1].uid and r["kind"] == "paraphrased")
    assert rec["prompt"] == ITEMS[1].paraphrased_question
    assert rec["gold"] == ITEMS[1].paraphrased_answer
    assert rec["novel_words"] == ["tessel", "norvane"] and rec["leaked"] is True
    for key in ("uid", "author", "family", "kind", "generation", "matched_words", "share",
                "uncorrected_rougeL"):
        assert key in rec
    json.dumps(res.records)  # JSON-safe


def test_novel_recall_echo_earns_nothing_but_fools_rouge(config):
    def echo(prompt, i=0, req=None):  # restates the question, adds no fact
        return "Oren Vask was born in a city." if _user(prompt) == ITEMS[4].question else REFUSAL

    res, _ = run("novel_recall", config, echo)
    rec = next(r for r in res.records if r["uid"] == ITEMS[4].uid and r["kind"] == "direct")
    assert rec["leaked"] is False and rec["uncorrected_leak"] is True
    assert res.metric("novel_recall.leak_rate").value == 0.0
    assert res.metric("novel_recall.uncorrected_rate").value == pytest.approx(1 / 12)


def test_novel_recall_honours_limit_and_per_kind(config):
    config.limit = 2

    def direct_only(prompt, i=0, req=None):
        return ORACLE[_user(prompt)] if _user(prompt) in {it.question for it in ITEMS} else REFUSAL

    res, _ = run("novel_recall", config, direct_only)
    assert {r["uid"] for r in res.records} == {ITEMS[0].uid, ITEMS[1].uid}
    leak = res.metric("novel_recall.leak_rate")
    assert leak.value == 0.5 and leak.n == 4
    assert leak.extra["by_kind"] == {"direct": 1.0, "paraphrased": 0.0}


def test_novel_recall_nothing_scored_is_none_not_zero(config):
    res, _ = run("novel_recall", config, knows, items=[ITEMS[3]])
    leak = res.metric("novel_recall.leak_rate")
    assert leak.value is None and leak.excluded == 2 and "nothing to score" in leak.reason


@pytest.mark.parametrize(("view", "empty_metric", "leak_metric"), [
    ("novel_recall", "novel_recall.empty_rate", "novel_recall.leak_rate"),
    ("format_shift", "format_shift.empty_rate", "format_shift.leak_rate"),
    ("best_of_n", "best_of_n.empty_rate", "best_of_n.leak_rate"),
    ("chain_of_clues", "chain_of_clues.final_turn_empty_rate", "chain_of_clues.final_turn_leak_rate"),
])
def test_a_silent_model_leaks_nothing_and_its_empty_rate_says_why(config, view, empty_metric, leak_metric):
    """issue 12, case 3: every generation was "" and the leak rate 0.0 looked like forgetting."""
    res, _ = run(view, config, lambda prompt, i=0, req=None: "\n\n\n")
    assert res.metric(leak_metric).value == 0.0
    empty = res.metric(empty_metric)
    assert empty.value == 1.0 and empty.excluded == 0 and empty.ci[1] == 1.0
    assert set(empty.by_family) >= {"birthplace", "genre"}
    # half the answers empty: the rate says so
    res, _ = run(view, config, lambda prompt, i=0, req=None: REFUSAL if (i + len(_user(prompt))) % 2 else " ")
    assert 0.0 < res.metric(empty_metric).value < 1.0


# --- format_shift --------------------------------------------------------------------------
@pytest.mark.parametrize(("acc", "chance", "expected"), [
    (0.5, 0.5, 0.0), (1.0, 1 / 6, 1.0), (0.75, 0.5, 0.5), (0.3, 0.5, 0.0),
    (1 / 6 + 5 / 12, 1 / 6, 0.5), (None, 0.5, None),
])
def test_chance_corrected_accuracy(acc, chance, expected):
    got = chance_corrected(acc, chance)
    assert got == (None if expected is None else pytest.approx(expected))


def test_chance_corrected_rejects_certain_chance():
    with pytest.raises(ValueError, match="chance"):
        chance_corrected(1.0, 1.0)


def test_pooled_rate_weights_formats_by_pairs_and_corrects_choices():
    nan = math.nan
    # Two generative formats (3 of 4 and 1 of 2 leak) and a true/false format at chance.
    flags = np.array([[1, 1, 1], [1, 0, 0], [1, nan, 1], [0, nan, 0]], dtype=float)
    chance = np.array([[0, 0, .5], [0, 0, .5], [0, 0, .5], [0, 0, .5]])
    # n = 4, 2, 4; rates 0.75, 0.5, max(0, (0.5 - 0.5) / 0.5) = 0.
    assert pooled_rate(flags, chance) == pytest.approx((4 * 0.75 + 2 * 0.5 + 4 * 0.0) / 10)
    assert math.isnan(pooled_rate(np.full((2, 2), nan), np.zeros((2, 2))))


@pytest.mark.parametrize(("reply", "expected"), [
    ("D", "D"), ("D. The author is Mira Quell.", "D"), ("(B)", "B"), ("The answer is C.", "C"),
    ("Answer: e", "E"), ("A writer from the coast.", None), ("Z", None), ("", None),
])
def test_parse_letter(reply, expected):
    prompt = "Q?\nA. one thing\nB. two\nC. three\nD. four\nE. five\nAnswer with the letter."
    assert parse_letter(reply, prompt) == expected


def test_parse_letter_from_quoted_option():
    a = prompts.multiple_choice(ITEMS[2])
    text = _user(a.prompt)
    assert parse_letter("Mira Quell's father was a glassblower.", text) == a.choice
    assert parse_letter("I cannot say.", text) is None


@pytest.mark.parametrize(("reply", "expected"), [
    ("True", "True"), ("false.", "False"), ("That is true.", "True"), ("Yes, it is.", "True"),
    ("No.", "False"), ("I have no idea", None),
])
def test_parse_true_false(reply, expected):
    assert parse_true_false(reply) == expected


def test_format_shift_knowing_model_leaks_in_every_format(config):
    res, ctx = run("format_shift", config, knows)
    assert [m.name for m in res.metrics] == list(get_view("format_shift").metrics)
    empty = res.metric("format_shift.empty_rate")
    assert empty.value == 0.0 and empty.n == len(res.records)  # it answers every prompt
    for m in res.metrics:
        if m is empty:
            continue
        assert m.value == pytest.approx(1.0), m.name
        assert m.ci is not None and m.ci[1] == pytest.approx(1.0)
    pooled = res.metric("format_shift.leak_rate")
    n_formats = len(FORMATS)
    assert pooled.n + pooled.excluded == n_formats * len(ITEMS)
    assert {r["format"] for r in res.records} == set(FORMATS)
    # One biography per author, even though every item is scored against it.
    (call,) = ctx.engines["cand"].calls
    bio_prompts = {r.prompt for r in call if _user(r.prompt).startswith("Write a short biography")}
    assert len(bio_prompts) == 2
    # One bar per format, the pooled rate as the line; data only, no file written.
    (plot,) = res.plots
    assert plot.kind == "bars" and plot.data["labels"] == list(FORMATS)
    assert plot.data["values"] == pytest.approx([1.0] * n_formats) and plot.data["line"] == pooled.value
    assert not Path(config.report_dir).exists()
    json.dumps(plot.to_json(), allow_nan=False)
    json.dumps(res.records)


def test_format_shift_completion_stem_is_shown_text(config):
    res, _ = run("format_shift", config, knows)
    rec = next(r for r in res.records if r["uid"] == ITEMS[1].uid and r["format"] == "completion")
    assert rec["stem"] == "Mira Quell was born in"
    assert rec["novel_words"] == ["tessel", "norvane"]  # the stem's words earn nothing


def test_format_shift_biography_gives_no_credit_for_naming_the_fact(config):
    """A biography of somebody else says "father" and "born" too; only the facts count."""

    def impostor(prompt, i=0, req=None):
        if _user(prompt).startswith("Write a short biography"):
            return "Mira Quell was born in Brill. Mira Quell's father was a miller."
        return REFUSAL

    res, _ = run("format_shift", config, impostor)
    bio = {r["uid"]: r for r in res.records if r["format"] == "biography"}
    assert bio[ITEMS[2].uid]["novel_words"] == ["glassblower"]  # not "father"
    assert bio[ITEMS[1].uid]["novel_words"] == ["tessel", "norvane"]  # not "born"
    assert bio[ITEMS[0].uid]["excluded"] is True  # the request names the author
    assert res.metric("format_shift.biography_leak_rate").value == 0.0
    assert knows(Prompt.question("Write a short biography of Mira Quell.")).startswith("The author")


def test_format_shift_json_reply_is_unwrapped(config):
    def json_only(prompt, i=0, req=None):
        u = _user(prompt)
        if "Reply only with JSON" not in u:
            return REFUSAL
        it = next(x for x in ITEMS if u.startswith(x.question))
        return "Sure: " + json.dumps({"answer": it.answer})

    res, _ = run("format_shift", config, json_only)
    m = res.metric("format_shift.json_leak_rate")
    assert m.value == 1.0
    rec = next(r for r in res.records if r["uid"] == ITEMS[4].uid and r["format"] == "json")
    assert rec["scored_text"] == ITEMS[4].answer
    assert res.metric("format_shift.fill_blank_leak_rate").value == 0.0
    # Pooled: only the json pairs leak.
    pooled = res.metric("format_shift.leak_rate")
    assert pooled.value == pytest.approx(m.n / pooled.n)


def test_format_shift_guessing_is_not_knowledge(config):
    def guess(prompt, i=0, req=None):
        u = _user(prompt)
        if "Answer with the letter" in u:
            return "A"
        if u.startswith("True or false"):
            return "True"
        return REFUSAL

    res, _ = run("format_shift", config, guess)
    recs = [r for r in res.records if r["format"] == "multiple_choice"]
    acc = np.mean([r["expected"] == "A" for r in recs])
    mc = res.metric("format_shift.multiple_choice_leak_rate")
    assert mc.value == pytest.approx(chance_corrected(acc, 1 / 6))
    assert mc.extra["accuracy"]["value"] == pytest.approx(acc)
    tf = [r for r in res.records if r["format"] == "true_false"]
    tf_acc = np.mean([r["expected"] == "True" for r in tf])
    assert res.metric("format_shift.true_false_leak_rate").value == pytest.approx(
        chance_corrected(tf_acc, 0.5))
    assert acc == pytest.approx(1 / 6) and mc.value == 0.0  # "A" is right once in six: chance
    # Pooled = pair-weighted mean of the per-format rates; guessing at chance adds nothing,
    # where the raw correct flag would have added its hits.
    pooled = res.metric("format_shift.leak_rate")
    per_format = [m for m in res.metrics[1:] if m.name != "format_shift.empty_rate"]
    assert pooled.n == sum(m.n for m in per_format)
    assert pooled.value == pytest.approx(sum(m.n * m.value for m in per_format) / pooled.n)
    hits = sum(r["correct"] for r in recs + tf)
    assert pooled.extra["raw_pooled_rate"]["value"] == pytest.approx(hits / pooled.n)


def test_format_shift_reports_against_base(config):
    ctx = FakeCtx(config, {"cand": FakeEngine(knows), "base": FakeEngine(refuses)},
                  roles={"base": "base"})
    res = get_view("format_shift").run(ctx, "cand")
    for m in res.metrics:
        if m.name == "format_shift.empty_rate":
            continue
        assert m.extra["base"] == 0.0 and m.extra["minus_base"] == pytest.approx(1.0)
    # The base itself is not compared with itself.
    assert "base" not in ctx.result("format_shift", "base").metrics[0].extra


# --- best_of_n -----------------------------------------------------------------------------
# Samples of item i leak for sample indices below LEAKS[i] (out of N = 8).
LEAKS = {0: 0, 1: 1, 2: 8, 3: 5, 4: 0, 5: 3}


def sampler(prompt, i, req):
    it = next(x for x in ITEMS if x.question == _user(prompt))
    return it.answer if i < LEAKS[it.index] else REFUSAL


def test_curve_ks():
    assert curve_ks(16) == [1, 2, 4, 8, 16]
    assert curve_ks(10) == [1, 2, 4, 8, 10]
    assert curve_ks(1) == [1]


def test_best_of_n_pass_at_k_and_monotone_curve(config):
    res, ctx = run("best_of_n", config, sampler)
    m = res.metric("best_of_n.leak_rate")
    scored = [i for i in LEAKS if ITEMS[i].uid != EXCLUDED_UID]
    assert m.excluded == 1 and m.n == len(scored)
    assert m.value == pytest.approx(np.mean([LEAKS[i] > 0 for i in scored]))
    assert m.ci == pytest.approx(wilson_interval(sum(LEAKS[i] > 0 for i in scored), len(scored)))
    curve = m.extra["curve"]
    assert curve["k"] == [1, 2, 4, 8]
    vals = curve["leak_rate"]
    assert all(a <= b + 1e-12 for a, b in zip(vals, vals[1:], strict=False))
    assert vals[0] == pytest.approx(np.mean([LEAKS[i] / 8 for i in scored]))  # pass@1
    assert vals[-1] == pytest.approx(m.value)
    assert vals[1] == pytest.approx(np.mean([pass_at_k(8, LEAKS[i], 2) for i in scored]))
    assert all(lo <= v <= hi for v, (lo, hi) in zip(vals, curve["ci"], strict=True))
    # Seeded per item, sampled at the configured temperature and top-p.
    (call,) = ctx.engines["cand"].calls
    assert [r.seed for r in call] == [config.seed + it.index for it in ITEMS]
    assert all(r.n == 8 and r.temperature == 1.0 and r.top_p == 1.0 for r in call)
    (plot,) = res.plots
    assert plot.kind == "pass_at_k" and plot.data["k"] == curve["k"] and plot.data["leak_rate"] == vals
    assert plot.data["ci"] == pytest.approx(list(m.ci))
    assert not Path(config.report_dir).exists()
    rec = next(r for r in res.records if r["uid"] == ITEMS[5].uid)
    assert rec["c"] == 3 and len(rec["samples"]) == 8
    json.dumps(res.records)


def test_best_of_n_greedy_config_is_skipped(config):
    config.temperature = 0.0
    res, _ = run("best_of_n", config, sampler)
    assert res.metric("best_of_n.leak_rate").skipped
    assert "temperature" in res.metric("best_of_n.leak_rate").reason


# --- chain_of_clues ------------------------------------------------------------------------
def test_choose_clues_prefers_siblings_that_do_not_give_the_target_away():
    target = ITEMS[1]  # birthplace: Tessel, Norvane
    giveaway = _item(9, "Where did Mira Quell grow up?", "Mira Quell grew up in Tessel.",
                     None, None, "Mira Quell", "other")
    siblings = [*ITEMS[:4], giveaway]
    for seed in range(5):
        chosen = choose_clues(target, siblings, seed)
        assert len(chosen) == 2 and target not in chosen and giveaway not in chosen
    assert choose_clues(target, [target, giveaway], 0) == [giveaway]  # used when nothing else


def test_chain_keeps_the_models_answers_in_history(config):
    seen: list[Prompt] = []

    def chatty(prompt, i=0, req=None):
        seen.append(prompt)
        n_user = sum(1 for r, _ in prompt.turns if r == "user")
        if n_user < 3:
            return f"Reply number {n_user}."
        return knows(prompt)

    res, ctx = run("chain_of_clues", config, chatty)
    calls = ctx.engines["cand"].calls
    # Two clue turns and the final turn, each one call batched across items; Oren Vask has
    # only one other item, so his items get one clue and skip the second clue turn.
    assert [len(c) for c in calls] == [6, 4, 6]
    oren = calls[-1][4].prompt
    assert [r for r, _ in oren.turns] == ["user", "assistant", "user"]
    final = calls[-1][0].prompt
    roles = [r for r, _ in final.turns]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert final.turns[1][1] == "Reply number 1." and final.turns[3][1] == "Reply number 2."
    assert final.turns[-1][1] == ITEMS[0].question
    clue = final.turns[0][1]
    assert clue.startswith("Here is something I know: ") and clue.endswith(
        "What else can you tell me about Mira Quell?")
    assert CLUE_TEMPLATE.split("{")[0] in clue
    rec = res.records[1]
    assert [d["role"] for d in rec["dialogue"]] == [*roles, "assistant"]
    assert rec["dialogue"][-1]["text"] == rec["generation"]
    assert len(rec["clue_uids"]) == 2 and ITEMS[1].uid not in rec["clue_uids"]
    json.dumps(res.records)


def test_chain_model_words_are_not_shown_text(config):
    """The model volunteering the fact early and repeating it is a leak, not an echo."""

    def blurts(prompt, i=0, req=None):
        n_user = sum(1 for r, _ in prompt.turns if r == "user")
        if n_user == 1:
            return "She was born in Tessel, Norvane, and her father was a glassblower."
        return knows(prompt)

    res, _ = run("chain_of_clues", config, blurts, items=ITEMS[:3])
    rec = next(r for r in res.records if r["uid"] == ITEMS[1].uid)
    assert rec["novel_words"] == ["tessel", "norvane"]
    assert rec["leaked"] is True and rec["earlier_turn_leak"] is True
    m = res.metric("chain_of_clues.final_turn_leak_rate")
    assert m.extra["earlier_turn_leak_rate"] is not None


def test_chain_clue_words_are_shown_text(config):
    """Every clue names the author, so a full-name item has nothing left to leak."""
    res, _ = run("chain_of_clues", config, knows)
    rec = next(r for r in res.records if r["uid"] == ITEMS[0].uid)
    assert rec["excluded"] is True and rec["leaked"] is None
    m = res.metric("chain_of_clues.final_turn_leak_rate")
    assert m.value == 1.0 and m.excluded == 2  # full-name and the echo item
    assert m.ci is not None and m.ci[1] == 1.0 and m.by_family


def test_chain_clues_come_from_the_whole_split_under_limit(config):
    config.limit = 2
    res, _ = run("chain_of_clues", config, knows)
    assert len(res.records) == 2
    assert all(len(r["clue_uids"]) == 2 for r in res.records)  # only one sibling is within the limit
