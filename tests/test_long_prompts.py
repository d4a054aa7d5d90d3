"""A generation prompt longer than the model's context: never an empty answer read as "did
not leak". The engine does not run it (its answer is ``NotGenerated``), counts it for the
report, and the leak views exclude its item (counted in ``excluded``, with the reason).
"""

from __future__ import annotations

import copy
import pickle

import pytest

from _data import REPO
from _tiny import chat_engine
from unlearn_audit.context import AuditConfig
from unlearn_audit.model._types import PROMPT_TOO_LONG, GenRequest, NotGenerated, Prompt
from unlearn_audit.model.mock import MockModel, knowing, mock_context
from unlearn_audit.views import get_view

SHORT = Prompt.question("Where was Elena Marwick born?")
LONG = Prompt.question(" ".join(["Elena Marwick writes gothic mystery novels set by the sea."] * 12))


def test_not_generated_is_an_empty_str_that_keeps_its_reason():
    a = NotGenerated()
    assert a == "" and isinstance(a, str) and a.not_generated == PROMPT_TOO_LONG
    for b in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert b == "" and b.not_generated == PROMPT_TOO_LONG


def test_engine_does_not_run_a_prompt_that_leaves_no_room(tiny, tmp_path, monkeypatch):
    n_short = len(chat_engine(tiny, None).fmt.encode_prompt(SHORT))
    n_long = len(chat_engine(tiny, None).fmt.encode_prompt(LONG))
    assert n_long > n_short + 40
    reqs = [GenRequest(SHORT, max_new_tokens=8), GenRequest(LONG, max_new_tokens=8),
            GenRequest(LONG, max_new_tokens=8, n=3, temperature=1.0)]
    ((alone,),) = chat_engine(tiny, None).generate(reqs[:1])
    monkeypatch.setattr(tiny.model.config, "max_position_embeddings", n_short + 20)
    engine = chat_engine(tiny, tmp_path)
    (short,), (long,), sampled = engine.generate(reqs)
    assert short == alone and not isinstance(short, NotGenerated)
    assert isinstance(long, NotGenerated) and long.not_generated == PROMPT_TOO_LONG
    assert len(sampled) == 3 and all(isinstance(s, NotGenerated) for s in sampled)
    assert engine.stats["gen_rows"] == 1  # the long prompt never reached the model
    assert sorted(engine.prompts_too_long.values()) == [n_long, n_long]
    warm = chat_engine(tiny, tmp_path)  # a warm run says the same, and caches nothing for it
    (short2,), (long2,), _ = warm.generate(reqs)
    assert warm.stats["gen_rows"] == 0 and short2 == short and isinstance(long2, NotGenerated)
    assert len(warm.prompts_too_long) == 2


def test_exactly_one_free_position_is_enough(tiny, monkeypatch):
    n_short = len(chat_engine(tiny, None).fmt.encode_prompt(SHORT))
    monkeypatch.setattr(tiny.model.config, "max_position_embeddings", n_short + 1)
    engine = chat_engine(tiny, None)
    ((answer,),) = engine.generate([GenRequest(SHORT, max_new_tokens=8)])
    assert not isinstance(answer, NotGenerated) and not engine.prompts_too_long
    monkeypatch.setattr(tiny.model.config, "max_position_embeddings", n_short)
    ((answer,),) = engine.generate([GenRequest(SHORT, max_new_tokens=8)])
    assert isinstance(answer, NotGenerated) and len(engine.prompts_too_long) == 1


def _context(tmp_path, max_positions=None):
    cfg = AuditConfig(dataset=str(REPO / "fixtures" / "tiny_world"), limit=8, cache_dir=None, progress=False, report_dir=tmp_path / "out")
    items = mock_context(cfg, {"npo": MockModel()}).forget_items()
    ctx = mock_context(cfg, {"npo": MockModel("candidate", knowing(items))})
    ctx._check_sane = lambda label: None  # probes are retain questions; not what is tested
    ctx._engines["npo"].max_positions = max_positions
    return ctx


def _prompt_lengths(ctx):
    """Whitespace tokens of each novel_recall prompt as the mock renders it."""
    result = get_view("novel_recall").run(ctx, "npo")
    return [len(r["rendered_prompt"].split()) for r in result.records], result


def test_novel_recall_excludes_items_whose_prompt_does_not_fit(tmp_path):
    lengths, free = _prompt_lengths(_context(tmp_path))
    limit = sorted(lengths)[len(lengths) // 2]
    too_long = sum(n + 1 > limit for n in lengths)
    assert 0 < too_long < len(lengths)
    ctx = _context(tmp_path, max_positions=limit)
    result = get_view("novel_recall").run(ctx, "npo")
    leak = result.metric("novel_recall.leak_rate")
    # The rate is over the prompts that fit, as without a limit; the others are not "no leak".
    fits = [r["leaked"] for r, n in zip(free.records, lengths, strict=True)
            if n + 1 <= limit and r["leaked"] is not None]
    assert leak.n == len(fits) and leak.value == pytest.approx(sum(fits) / len(fits))
    assert leak.excluded == len(lengths) - len(fits)
    assert f"{too_long} prompt longer than the model's context" in leak.reason
    marked = [r for r in result.records if r.get("not_generated")]
    assert len(marked) == too_long and all(r["leaked"] is None and r["uncorrected_leak"] is None for r in marked)
    uncorrected = result.metric("novel_recall.uncorrected_rate")
    assert uncorrected.excluded == too_long
    empty = result.metric("novel_recall.empty_rate")
    assert empty.value == 0.0 and empty.excluded == too_long  # never asked, so not "silent"
    assert ctx.engine_notes("npo")["prompts_too_long"] == too_long


def _novel_recall_report(ctx, tmp_path) -> str:
    """report.md of a session that ran novel_recall on ``ctx``'s candidate, with no gates."""
    from unlearn_audit.report import AuditSession, PlannedModel

    (tmp_path / "gates.yaml").write_text("gates: []\n")
    session = AuditSession(ctx.config, tiny_world=False,
                           plan=lambda: [PlannedModel("npo", "candidate", "mock:npo")],
                           context_factory=lambda: ctx, reference_dir=tmp_path,
                           gates_path=tmp_path / "gates.yaml", root=tmp_path)
    session.collect(session.measure("novel_recall", "npo").outcome.to_payload())
    return session.finish()["report.md"].read_text()


def test_the_report_states_how_many_prompts_did_not_fit(tmp_path):
    lengths, _ = _prompt_lengths(_context(tmp_path))
    limit = sorted(lengths)[len(lengths) // 2]
    too_long = sum(n + 1 > limit for n in lengths)
    md = _novel_recall_report(_context(tmp_path, max_positions=limit), tmp_path)
    assert "## Inputs longer than the model's context" in md
    assert (f"- npo: {too_long} generation prompt(s) left no room for a new token in its context "
            f"({limit} positions), so nothing was generated for them") in md


def test_answers_capped_by_the_context_are_counted(tiny, tmp_path, monkeypatch):
    n_short = len(chat_engine(tiny, None).fmt.encode_prompt(SHORT))
    monkeypatch.setattr(tiny.model.config, "max_position_embeddings", n_short + 5)
    engine = chat_engine(tiny, tmp_path)
    engine.generate([GenRequest(SHORT, max_new_tokens=5), GenRequest(SHORT, max_new_tokens=8)])
    assert list(engine.answers_capped.values()) == [5]  # only the one asking for more than fits
    warm = chat_engine(tiny, tmp_path)
    warm.generate([GenRequest(SHORT, max_new_tokens=8)])
    assert warm.stats["gen_rows"] == 0 and list(warm.answers_capped.values()) == [5]


def test_the_report_states_answers_capped_by_the_context(tmp_path, monkeypatch):
    ctx = _context(tmp_path)
    monkeypatch.setattr(ctx, "engine_notes", lambda label: {"truncated": 0, "max_positions": 64, "answers_capped": 3})
    md = _novel_recall_report(ctx, tmp_path)
    assert ("- npo: 3 generation prompt(s) left fewer positions in its context (64) than max_new_tokens; "
            "their answers stop at the context") in md


def test_compat_generation_without_any_eos_is_one_line_saying_so(tiny, monkeypatch):
    from unlearn_audit.model import Engine, make_format

    fmt = make_format(tiny.tokenizer, kind="chat", compat="open-unlearning")
    engine = Engine(tiny, fmt, progress=False)
    for cfg in (tiny.model.generation_config, tiny.model.config):
        monkeypatch.setattr(cfg, "eos_token_id", None)
    eos = tiny.tokenizer.eos_token
    tiny.tokenizer.eos_token = None
    try:
        with pytest.raises(ValueError) as e:
            engine.generate([GenRequest(SHORT, max_new_tokens=4)])
    finally:
        tiny.tokenizer.eos_token = eos
    assert "\n" not in str(e.value) and "eos_token_id" in str(e.value) and "Fix:" in str(e.value)


def test_format_shift_excludes_choice_prompts_that_do_not_fit(tmp_path):
    # A multiple-choice or true/false prompt never asked must not count as a wrong choice
    # (that reads as "forgot"); it is excluded like a generative one.
    free = get_view("format_shift").run(_context(tmp_path), "npo")
    lengths = [len(r["prompt"].split()) for r in free.records]
    limit = sorted(lengths)[len(lengths) // 2]
    result = get_view("format_shift").run(_context(tmp_path, max_positions=limit), "npo")
    unasked = [r for r in result.records if r.get("not_generated")]
    choice = [r for r in unasked if r["format"] in ("multiple_choice", "true_false")]
    assert choice, "the limit should leave some choice prompts unasked"
    assert all(r["correct"] is None for r in choice)
    assert all(r.get("leaked") is None for r in unasked)
    for fmt in ("multiple_choice", "true_false"):
        m = result.metric(f"format_shift.{fmt}_leak_rate")
        asked = [r for r in result.records if r["format"] == fmt and r["correct"] is not None]
        assert m.n == len(asked)
    assert "not generated" in result.metric("format_shift.leak_rate").reason


def test_the_sanity_check_names_a_context_too_short_instead_of_empty_answers(tmp_path):
    from unlearn_audit.model._sanity import sanity_check

    ctx = _context(tmp_path, max_positions=2)
    result = sanity_check(ctx._engines["npo"], ctx.forget_items()[:4], max_new_tokens=8)
    assert not result.ok
    assert "4 prompt longer than the context" in result.problems[-1]
    assert "empty" not in result.problems[-1]


def test_best_of_n_excludes_prompts_that_do_not_fit(tmp_path):
    # every sample of a prompt too long is a marked empty answer: "no sample leaked" would
    # read as forgetting, so the prompt is excluded and said so
    lengths, _ = _prompt_lengths(_context(tmp_path))  # the same questions, as rendered
    limit = sorted(lengths)[len(lengths) // 2]
    result = get_view("best_of_n").run(_context(tmp_path, max_positions=limit), "npo")
    unasked = [r for r in result.records if r.get("not_generated")]
    assert unasked and all(r["excluded"] and r["c"] is None for r in unasked)
    leak = result.metric("best_of_n.leak_rate")
    assert leak.n == sum(1 for r in result.records if not r["excluded"])
    assert f"{len(unasked)} not generated" in leak.reason
