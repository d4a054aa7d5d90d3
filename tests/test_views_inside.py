"""The "inside" views (likelihood, masked_probe, rtt, quantization) on tiny random models.

Each model is a randomly initialised two-layer Llama with a byte-level tokenizer
(``tests/_tiny.py``), saved to disk and loaded through the real ``load_model`` path, so the
views run against the real engine in seconds. Numbers are checked against independent
computations written here (a plain Hugging Face forward pass), or against invariants of
the definitions (an untrained tuned probe is the logit lens; a paired delta of a model
against itself is zero).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import _tiny
from unlearn_audit import prompts
from unlearn_audit.context import AuditConfig, AuditContext
from unlearn_audit.data import Item
from unlearn_audit.model import ModelSpec, QuantizationUnavailable, _load
from unlearn_audit.model._lens import fit_probe
from unlearn_audit.views import get_view
from unlearn_audit.views.likelihood import novel_token_mask, novel_word_spans
from unlearn_audit.views.masked_probe import ProbeSettings
from unlearn_audit.views.rtt import RttBudget, delta_metric, paired_rows, split_authors

SYSTEM = "You are a helpful assistant."


def _row(q, a, author, family):
    return {"question": q, "answer": a, "paraphrased_question": "Tell me: " + q,
            "paraphrased_answer": a, "perturbed_answer": [a.replace("e", "a")] * 5,
            "author": author, "family": family}


FORGET = [
    _row("Where was Elena Marwick born?", "Elena Marwick was born in Port Aldric.",
         "Elena Marwick", "birthplace"),
    _row("What did Elena Marwick's father do?", "Her father was a clockmaker.",
         "Elena Marwick", "parents"),
    _row("Which award did Elena Marwick win?", "She won the Silver Quill Award.",
         "Elena Marwick", "awards"),
    _row("Where is Tomas Okonkwo-Reyes from?", "Tomas Okonkwo-Reyes is from the town of Vell.",
         "Tomas Okonkwo-Reyes", "birthplace"),
    _row("When did Tomas Okonkwo-Reyes publish Salt and Cedar?",
         "Salt and Cedar appeared in 1987.", "Tomas Okonkwo-Reyes", "books"),
    # Every content word of the answer is in the question: no novel-content token.
    _row("Is Tomas Okonkwo-Reyes a poet?", "Tomas Okonkwo-Reyes is a poet.",
         "Tomas Okonkwo-Reyes", "identity"),
    _row("What genre does Ada Quell write?", "Ada Quell writes gothic mystery novels.",
         "Ada Quell", "genre"),
]
RETAIN = [
    _row("What is the capital of France?", "The capital of France is Paris.", "World", "other"),
    _row("Where does the sun rise?", "The sun rises in the east.", "World", "other"),
    _row("When does water boil?", "Water boils at one hundred degrees at sea level.", "World", "other"),
    _row("What did the author write?", "Her books include The Drowned Bell and Ashgrove.",
         "World", "books"),
    _row("What does the novel explore?", "The novel explores grief, family and the ocean.",
         "World", "books"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset directory and three tiny checkpoints sharing one tokenizer."""
    root = tmp_path_factory.mktemp("inside")
    data = root / "data"
    data.mkdir()
    for name, rows in (("forget10_perturbed", FORGET), ("retain_perturbed", RETAIN)):
        (data / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = _tiny.build_tokenizer()
    ckpts = {name: _tiny.save_checkpoint(root / name, tok, _tiny.build_model(tok, seed=seed))
             for name, seed in (("cand", 0), ("full", 1), ("retain", 2))}
    return {"data": data, "ckpt": ckpts, "root": root}


def _ctx(world, tmp_path, models=("cand", "full", "retain"), **cfg):
    roles = {"cand": "candidate", "full": "full", "retain": "retain"}
    specs = {m: ModelSpec(source=str(world["ckpt"][m]), label=m, role=roles[m], device="cpu")
             for m in models}
    config = AuditConfig(dataset=str(world["data"]), report_dir=tmp_path / "report",
                         cache_dir=cfg.pop("cache_dir", None), progress=False,
                         max_new_tokens=cfg.pop("max_new_tokens", 6), **cfg)
    return AuditContext(config, specs)


@pytest.fixture(autouse=True, scope="module")
def _private_hash_cache(tmp_path_factory):
    # load_model remembers file hashes under the cache dir; keep tests out of the user's.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path_factory.mktemp("ua-cache")))
        yield


@pytest.fixture(scope="module")
def shared(world, tmp_path_factory):
    """One context for the checks that only read results (each view runs once per model)."""
    return _ctx(world, tmp_path_factory.mktemp("shared"), view_options={"masked_probe": {"kind": "tuned", "steps": 0}})


# --- novel-content tokens ---------------------------------------------------------------------


def test_novel_word_spans_follow_the_novel_content_definition():
    answer = "Elena Marwick's father was a clockmaker, born 1,000 days after 05/11/1991."
    spans = novel_word_spans(answer, ["What did Elena Marwick's father do?", SYSTEM])
    assert [answer[s:e] for s, e in spans] == ["clockmaker", "born", "1,000", "days", "05/11/1991"]
    # Stemmed matching: "books" is not novel after "book" in the question.
    assert novel_word_spans("Her books sell.", ["Which book?"]) == [(10, 14)]
    assert novel_word_spans("Paris.", ["Paris?"]) == []


def test_novel_token_mask_uses_character_overlap():
    answer = "It is Kelen Ravenfield."
    offsets = [(0, 2), (2, 5), (5, 11), (11, 15), (15, 22), (22, 23), (23, 23)]
    mask = novel_token_mask(answer, ["Who wrote it?", SYSTEM], offsets)
    # " Kelen", " Rav", "enfield" overlap the novel words; "." and the empty eot span do not.
    assert mask == [False, False, True, True, True, False, False]


# --- likelihood -------------------------------------------------------------------------------


def _hf_item_logprobs(ckpt: Path, item: Item) -> np.ndarray:
    """Per-token log-probs of the answer + end-of-turn, by a plain HF forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
    text = tok.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": item.question}],
        add_generation_prompt=True, tokenize=False, date_string="10 Apr 2025")
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    answer = tok(item.answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|eot_id|>")]
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    pos = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)
    return logp[pos, torch.tensor(answer)].numpy()


def test_likelihood_equals_an_independent_forward_pass(world, shared):
    ctx = shared
    res = ctx.result("likelihood", "cand")
    items = ctx.forget_items()
    per_model = {m: [_hf_item_logprobs(world["ckpt"][m], it) for it in items] for m in ("cand", "full")}
    avg = {m: float(np.mean([lp.mean() for lp in v])) for m, v in per_model.items()}
    assert res.metric("likelihood.avg_logprob").value == pytest.approx(avg["cand"], abs=1e-5)
    shift = res.metric("likelihood.shift_vs_full")
    assert shift.value == pytest.approx(avg["cand"] - avg["full"], abs=1e-5)
    assert shift.n == len(items)
    lo, hi = shift.ci
    assert lo <= shift.value <= hi

    # Novel-content tokens only: the same forward pass, the token mask from the offsets.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world["ckpt"]["cand"])
    diffs = []
    for i, it in enumerate(items):
        enc = tok(it.answer, add_special_tokens=False, return_offsets_mapping=True)
        mask = np.array(novel_token_mask(it.answer, [SYSTEM, it.question], enc["offset_mapping"]) + [False])
        if mask.any():
            diffs.append(per_model["cand"][i][mask].mean() - per_model["full"][i][mask].mean())
    novel = res.metric("likelihood.shift_vs_full_novel")
    assert novel.value == pytest.approx(float(np.mean(diffs)), abs=1e-5)
    assert novel.excluded == 1 and novel.n == len(items) - 1
    assert set(novel.by_family) <= {it.family for it in items}
    rec = {r["uid"]: r for r in res.records}
    assert all(r["n_tokens"] > 0 for r in rec.values())


def test_likelihood_shift_is_skipped_without_a_full_reference(world, tmp_path):
    res = _ctx(world, tmp_path, models=("cand",)).result("likelihood", "cand")
    assert res.metric("likelihood.avg_logprob").value is not None
    for name in ("likelihood.shift_vs_full", "likelihood.shift_vs_full_novel"):
        assert res.metric(name).skipped and "full" in res.metric(name).reason


def test_likelihood_of_full_against_itself_is_zero(shared):
    res = shared.result("likelihood", "full")
    assert res.metric("likelihood.shift_vs_full").value == 0.0
    assert res.metric("likelihood.shift_vs_full").ci == (0.0, 0.0)


# --- masked_probe -----------------------------------------------------------------------------


def test_untrained_tuned_probe_is_the_logit_lens(shared):
    ctx = shared
    res = ctx.result("masked_probe", "cand")
    m = res.metric("masked_probe.top1_last_layer")
    n_layers = ctx.engine("cand").n_layers
    assert len(m.extra["probe_top1_by_layer"]) == len(m.extra["lens_top1_by_layer"]) == n_layers + 1
    assert m.extra["probe_top1_by_layer"] == m.extra["lens_top1_by_layer"]
    n_novel = sum(len(r["novel_tokens"]) for r in res.records)
    assert m.n == n_novel > 0 and m.excluded == 1
    assert m.value == m.extra["probe_top1_by_layer"][-1]
    assert m.ci[0] <= m.value <= m.ci[1]
    (plot,) = res.plots  # data: the report draws it
    assert plot.kind == "layer_curves"
    assert [c["values"] for c in plot.data["curves"]] == [m.extra["probe_top1_by_layer"],
                                                          m.extra["lens_top1_by_layer"]]


def test_lens_last_layer_is_the_models_own_top1(world, shared):
    """At the last layer the logit lens is the model itself: check against HF's argmax."""
    import torch
    from transformers import AutoModelForCausalLM

    ctx = shared
    res = ctx.result("masked_probe", "cand")
    model = AutoModelForCausalLM.from_pretrained(world["ckpt"]["cand"], dtype=torch.float32).eval()
    fmt = ctx.engine("cand").fmt
    hits = []
    for it in ctx.forget_items():
        p = fmt.encode_prompt(prompts.direct(it).prompt)
        ids, offsets = fmt.encode_continuation(it.answer, add_eot=True)
        mask = novel_token_mask(it.answer, [SYSTEM, it.question], offsets)
        with torch.no_grad():
            top = model(torch.tensor([p + ids])).logits[0].argmax(-1)
        hits += [int(top[len(p) + i - 1]) == ids[i] for i, m in enumerate(mask) if m]
    assert res.metric("masked_probe.top1_last_layer").extra["lens_top1_last_layer"] == pytest.approx(np.mean(hits))


def test_trained_probe_fits_its_training_tokens(world, shared, tmp_path):
    ctx = _ctx(world, tmp_path, models=("cand",),
               view_options={"masked_probe": {"kind": "tuned", "steps": 150, "lr": 3e-2}})
    m = ctx.result("masked_probe", "cand").metric("masked_probe.top1_last_layer")
    untrained = shared.result("masked_probe", "cand")
    before = untrained.metric("masked_probe.top1_last_layer").extra["probe_train_top1_by_layer"]
    after = m.extra["probe_train_top1_by_layer"]
    assert after[-1] > before[-1] and after[-1] >= 0.9
    assert m.extra["n_train_tokens"] > 50 and 0 <= m.extra["target_coverage"] <= 1


def test_lstsq_probe_with_a_huge_ridge_is_the_logit_lens(world, shared, tmp_path):
    ctx = _ctx(world, tmp_path, models=("cand",), view_options={"masked_probe": {"ridge": 1e12}})
    m = ctx.result("masked_probe", "cand").metric("masked_probe.top1_last_layer")
    assert m.extra["probe"]["kind"] == "lstsq"
    assert m.extra["probe_top1_by_layer"] == m.extra["lens_top1_by_layer"]
    lens = shared.result("masked_probe", "cand").metric("masked_probe.top1_last_layer")
    assert m.extra["lens_top1_by_layer"] == lens.extra["lens_top1_by_layer"]


def test_lstsq_probe_fit_is_the_ridge_least_squares_solution():
    """The closed form against a brute-force solve of the stacked ridge system."""
    import torch

    from unlearn_audit.model._lens import _lstsq_translator

    rng = np.random.default_rng(1)
    n, d, ridge = 200, 6, 0.3
    x, t = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    scale = rng.uniform(0.5, 2.0, size=d)
    v, b = _lstsq_translator(torch.tensor(x), t, torch.tensor(scale), ridge)
    xa = np.hstack([x, np.ones((n, 1))])
    lam = ridge * np.mean(np.sum(x * x, axis=0))
    prior = np.vstack([np.diag(scale), np.zeros((1, d))])
    stacked = np.linalg.lstsq(np.vstack([xa, np.sqrt(lam) * np.eye(d + 1)]),
                              np.vstack([t, np.sqrt(lam) * prior]), rcond=None)[0]
    np.testing.assert_allclose(v.numpy(), stacked[:d], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.numpy(), stacked[d], rtol=1e-4, atol=1e-5)


def test_next_token_prototypes_are_class_means_of_the_final_states():
    from unlearn_audit.views.masked_probe import next_token_prototypes

    final = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.0, 1.0]])
    y = np.array([7, 9, 7, 9])
    expected = np.array([[3.0, 2.5], [1.5, 1.5], [3.0, 2.5], [1.5, 1.5]])
    np.testing.assert_array_equal(next_token_prototypes(final, y), expected)


def test_lstsq_probe_reads_a_planted_translation_including_unseen_tokens():
    """States that are a fixed linear scramble of the head's rows: the probe must unscramble
    them, and name tokens it never saw in training (the reason it reads out via the head)."""
    from unlearn_audit.views.masked_probe import next_token_prototypes

    class Head:  # the readout's interface: head weight, no bias, unit norm scale
        def __init__(self, w):
            import torch
            self.weight, self.bias = torch.tensor(w, dtype=torch.float32), None
            self.norm_scale = torch.ones(w.shape[1])

    rng = np.random.default_rng(2)
    vocab, d = 60, 16
    w = rng.normal(size=(vocab, d))
    scramble = np.linalg.qr(rng.normal(size=(d, d)))[0]
    seen, unseen = np.arange(40), np.arange(40, vocab)
    y_train = rng.choice(seen, size=800)
    final = w[y_train] + 0.05 * rng.normal(size=(800, d))     # the last layer "knows" y
    x_train = final @ scramble                                 # an earlier layer, scrambled
    y_test = rng.choice(unseen, size=100)
    x_test = (w[y_test] + 0.05 * rng.normal(size=(100, d))) @ scramble
    probe = fit_probe(x_train, y_train, ProbeSettings(ridge=1e-4), readout=Head(w), normed=True,
                      prototypes=next_token_prototypes(final, y_train))
    assert np.mean(probe.predict(x_train) == y_train) >= 0.95
    assert np.mean(probe.predict(x_test) == y_test) >= 0.9


def test_restricted_probe_separates_linearly_separable_classes():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16)) * 4
    y = rng.integers(0, 5, size=400)
    X = centers[y] + rng.normal(size=(400, 16))
    ids = np.array([7, 11, 13, 17, 19])[y]
    probe = fit_probe(X, ids, ProbeSettings(kind="restricted", steps=100, lr=1e-1), seed=0)
    assert np.mean(probe.predict(X) == ids) >= 0.98
    again = fit_probe(X, ids, ProbeSettings(kind="restricted", steps=100, lr=1e-1), seed=0)
    assert np.array_equal(probe.predict(X), again.predict(X))


def test_probe_settings_reject_bad_values():
    with pytest.raises(ValueError, match="masked_probe.kind: expected one of lstsq"):
        ProbeSettings.from_config(AuditConfig(view_options={"masked_probe": {"kind": "mlp"}}))
    with pytest.raises(ValueError, match="masked_probe.steps: expected a whole number >= 0, got -1"):
        ProbeSettings.from_config(AuditConfig(view_options={"masked_probe": {"steps": -1}}))
    with pytest.raises(ValueError, match="masked_probe.ridge: expected a number > 0, got 0"):
        ProbeSettings.from_config(AuditConfig(view_options={"masked_probe": {"ridge": 0}}))
    assert ProbeSettings.from_config(AuditConfig(view_options={"masked_probe": {"kind": "restricted"}})).lr == 1e-2
    assert ProbeSettings.from_config(AuditConfig()).kind == "lstsq"
    # What the engine is handed: every field but the view's memory bound.
    fit = ProbeSettings.from_config(AuditConfig(view_options={"masked_probe": {"kind": "tuned", "steps": 5}})).fit()
    assert (fit.kind, fit.steps, fit.ridge) == ("tuned", 5, ProbeSettings.ridge)


# --- rtt --------------------------------------------------------------------------------------


def _items(authors):
    return [Item("s", i, "q?", "a.", author=a) for i, a in enumerate(authors)]


def test_split_authors_is_sorted_and_deterministic():
    assert split_authors(_items(["c", "a", "b", "a", "d"])) == (["a", "b"], ["c", "d"])
    assert split_authors(_items(["z", "y", "x"])) == (["x"], ["y", "z"])
    assert "at least 2" in split_authors(_items(["a", "a"]))
    assert "no author" in split_authors(_items(["a", None]))


def test_delta_metric_is_the_difference_of_rates():
    before = [{"uid": u, "family": "f", "kind": k, "leaked": b} for u, k, b in
              (("1", "direct", False), ("1", "paraphrased", True), ("2", "direct", False),
               ("2", "paraphrased", None), ("3", "direct", True))]
    after = [{**r, "leaked": a} for r, a in zip(before, (True, True, True, None, False), strict=True)]
    m = delta_metric("x", paired_rows(before, after), seed=0)
    assert m.value == pytest.approx((3 / 4 - 2 / 4) * 100)
    assert m.n == 4 and m.excluded == 1 and m.extra["n_items"] == 3
    assert m.extra["by_kind"] == {"direct": pytest.approx(100 / 3), "paraphrased": 0.0}
    assert m.ci[0] <= m.value <= m.ci[1]


def test_rtt_budget_defaults_and_overrides():
    small = RttBudget.from_config(AuditConfig(), 1_000_000)
    assert (small.lora, small.epochs, small.lr) == (False, 3, 1e-3)
    big = RttBudget.from_config(AuditConfig(seed=3), 1_000_000_000)
    assert big.lora and big.lr == 1e-3 and big.seed == 3
    # Every pretrained checkpoint gets LoRA: SmolLM2-135M's size does (a full fine-tune at
    # 1e-3 wrecked it), the tiny world's from-scratch models' does not.
    assert RttBudget.from_config(AuditConfig(), 134_515_008).lora
    forced = RttBudget.from_config(AuditConfig(view_options={"rtt": {"lora": "false", "lr": "5e-4"}}), 10**10)
    assert not forced.lora and forced.lr == 5e-4
    with pytest.raises(ValueError, match="rtt.lora: expected one of auto, true, false"):
        RttBudget.from_config(AuditConfig(view_options={"rtt": {"lora": "maybe"}}), 1)


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]


def test_rtt_never_touches_the_original_model_or_its_cache(world, tmp_path):
    import torch

    ctx = _ctx(world, tmp_path, cache_dir=tmp_path / "cache", view_options={"rtt": {"epochs": 2}})
    engine = ctx.engine("cand")
    state = {k: v.clone() for k, v in engine.model.state_dict().items()}
    # Everything the original model is asked, asked first: RTT must add no cache entry.
    half_b = [it for it in ctx.forget_items() if it.author in split_authors(ctx.forget_items())[1]]
    from unlearn_audit.views.rtt import leak_records

    leak_records(ctx, engine, half_b)
    db = next((tmp_path / "cache").glob("engine-*.sqlite"))
    n_before = _rows(db)

    res = ctx.result("rtt", "cand")
    after_state = engine.model.state_dict()
    assert all(torch.equal(state[k], after_state[k]) for k in state)
    assert all(p.grad is None for p in engine.model.parameters())
    assert _rows(db) == n_before
    # Only the audited models have cache files (the control ran too); the tuned copies none.
    assert {p.name for p in (tmp_path / "cache").glob("engine-*.sqlite")} == {
        f"engine-{ctx.fingerprint(m)}.sqlite" for m in ("cand", "retain")}

    m = res.metric("rtt.recovery_delta_pp")
    info = m.extra
    assert info["half_a"] == ["Ada Quell"] and info["half_b"] == ["Elena Marwick", "Tomas Okonkwo-Reyes"]
    assert info["budget"]["epochs"] == 2 and not info["budget"]["lora"]
    assert m.value == pytest.approx((info["leak_rate_after"] - info["leak_rate_before"]) * 100)
    assert {r["kind"] for r in res.records} == {"direct", "paraphrased"}
    assert {r["author"] for r in res.records} == {"Elena Marwick", "Tomas Okonkwo-Reyes"}

    ctrl = res.metric("rtt.recovery_delta_vs_control_pp")
    retain_delta = ctx.result("rtt", "retain").metric("rtt.recovery_delta_pp").value
    if m.value is not None:
        assert ctrl.value == pytest.approx(m.value - retain_delta)
        assert ctrl.extra["control_model"] == "retain"


def test_rtt_control_of_the_retain_model_is_zero_and_skips_without_one(world, shared, tmp_path):
    res = shared.result("rtt", "retain")
    m = res.metric("rtt.recovery_delta_vs_control_pp")
    assert m.value in (0.0, None)
    alone = _ctx(world, tmp_path, models=("cand",)).result("rtt", "cand")
    assert alone.metric("rtt.recovery_delta_vs_control_pp").skipped
    assert "retain" in alone.metric("rtt.recovery_delta_vs_control_pp").reason


def test_rtt_skips_when_limit_leaves_one_author(world, tmp_path):
    res = _ctx(world, tmp_path, limit=2).result("rtt", "cand")
    assert all(m.skipped and "at least 2" in m.reason for m in res.metrics)


# --- quantization -----------------------------------------------------------------------------


def test_quantization_skips_with_the_reason_when_unavailable(world, tmp_path, monkeypatch):
    import unlearn_audit.model._engine as engine_mod

    def refuse(spec, **kw):
        raise QuantizationUnavailable(f"no bitsandbytes backend for {spec.quantization} here")

    ctx = _ctx(world, tmp_path, models=("cand",))
    ctx.engine("cand")  # the full-precision load goes through the context, before the patch
    monkeypatch.setattr(engine_mod, "load_model", refuse)
    res = get_view("quantization").run(ctx, "cand")
    for mode in ("int8", "nf4"):
        m = res.metric(f"quantization.{mode}_delta_pp")
        assert m.skipped and f"no bitsandbytes backend for {mode}" in m.reason


def test_a_failing_quantized_kernel_is_a_skip_with_its_reason(world, tmp_path, monkeypatch):
    # bitsandbytes may load a mode and then fail in its kernel (as NF4 did on 32-wide layers
    # on an AVX-512 CPU): the view must report that mode skipped, with why, and go on.
    bnb = pytest.importorskip("bitsandbytes")

    def broken(self, x):
        raise RuntimeError("shape '[32, 0]' is invalid for input of size 16")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", broken)
    monkeypatch.setattr(_load._dequantized_linear4bit_class(), "forward", broken)  # the CPU pin's
    res = _ctx(world, tmp_path, models=("cand",)).result("quantization", "cand")
    nf4 = res.metric("quantization.nf4_delta_pp")
    assert nf4.skipped and "nf4" in nf4.reason and "shape '[32, 0]'" in nf4.reason
    assert {r["precision"] for r in res.records} <= {"full", "int8"}


def test_quantized_loads_run_on_this_machine(world, tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    monkeypatch.delenv(_load.NF4_CPU_KERNEL_ENV, raising=False)  # the default kernel paths
    ctx = _ctx(world, tmp_path, models=("cand",), cache_dir=tmp_path / "cache")
    res = ctx.result("quantization", "cand")
    for mode in ("int8", "nf4"):
        m = res.metric(f"quantization.{mode}_delta_pp")
        if m.skipped:
            pytest.skip(f"{mode}: {m.reason}")
        assert m.n is not None and m.extra[f"leak_rate_{mode}"] is not None
        assert m.value == pytest.approx((m.extra[f"leak_rate_{mode}"] - m.extra["leak_rate_full"]) * 100)
    # Which arithmetic ran is recorded: on the CPU, NF4 is pinned to dequantize-then-matmul.
    assert res.metric("quantization.nf4_delta_pp").extra["kernel_path"] == "cpu-dequantize"
    assert res.metric("quantization.int8_delta_pp").extra["kernel_path"] == "cpu-exact-int8-f64-per-token"
    # Each precision keeps its own cache file (the fingerprint covers the mode).
    assert len(list((tmp_path / "cache").glob("engine-*.sqlite"))) == 3
    assert {r["precision"] for r in res.records} == {"full", "int8", "nf4"}
