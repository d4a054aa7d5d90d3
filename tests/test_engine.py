"""The engine: batching never changes numbers, caching, generation, hidden states, finetune.

The reference for every number is the simplest possible computation: one unpadded
sequence through the model, ``log_softmax`` in float64. Everything the engine does to be
fast (sorting, padding on either side, prefix KV reuse, deduplication, the disk cache)
must reproduce it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _tiny import save_checkpoint
from unlearn_audit.model import (
    Backend,
    Engine,
    FinetuneRequest,
    GenRequest,
    ModelSpec,
    ProbeFit,
    ProbeRequest,
    Prompt,
    ScoreRequest,
    finetune,
    load_model,
    make_format,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [
    Prompt.question("Where was Elena Marwick born?"),
    Prompt.question("What genre does Tomas Okonkwo-Reyes write?", stem="He writes"),
    Prompt(
        turns=(
            ("user", "Clue: she writes gothic novels."),
            ("assistant", "Noted."),
            ("user", "Who is she?"),
        )
    ),
    Prompt.question("Hi?"),
    # Stems make one prompt a token-prefix of another: an empty per-prompt suffix.
    Prompt.question("Hi?", stem="Yes"),
    Prompt.question("Hi?", stem="Yes, it is"),
]
CONTINUATIONS = [
    "Port Aldric.",
    "Elena Marwick was born in the city of Port Aldric, by the sea.",
    "poetry",
    "",
    "1961",
    "The Drowned Bell, Lanterns at Low Tide and Ashgrove.",
]


def cpu_spec(source: str, label: str, **kwargs) -> ModelSpec:
    """Tests pin the CPU (float32) so they behave the same on a machine with a GPU."""
    return ModelSpec(source, label, **{"device": "cpu", **kwargs})


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    d = save_checkpoint(tmp_path_factory.mktemp("tiny") / "model")
    return load_model(cpu_spec(str(d), "tiny"), hash_cache=None)


@pytest.fixture(scope="module")
def chat(loaded):
    return make_format(loaded.tokenizer, kind="chat")


@pytest.fixture(scope="module")
def plain(loaded):
    return make_format(loaded.tokenizer, kind="plain")


@pytest.fixture
def padding_side(loaded):
    """Set the shared tokenizer's padding side for one test, restoring it afterwards."""
    original = loaded.tokenizer.padding_side

    def set_side(side: str) -> None:
        loaded.tokenizer.padding_side = side

    yield set_side
    loaded.tokenizer.padding_side = original


def reference(model, fmt, req: ScoreRequest, compat: bool = False) -> np.ndarray:
    """One request alone, unpadded; compat masks open-unlearning's pad id (pad, else EOS)."""
    p, c, _ = fmt.encode_pair(req.prompt, req.continuation, add_eot=req.add_eot)
    ids = torch.tensor([p + c])
    mask = torch.ones_like(ids)
    if compat:
        tok = fmt.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        mask = torch.tensor([[0 if t == pad else 1 for t in p + c]])
    with torch.no_grad():
        logits = model(
            input_ids=ids, attention_mask=mask, position_ids=torch.arange(ids.shape[1])[None]
        ).logits[0]
    lsm = logits.double().log_softmax(-1)
    return np.array([lsm[len(p) - 1 + i, t].item() for i, t in enumerate(c)])


_REF: dict = {}


def cached_reference(loaded, fmt, req):
    key = (fmt.kind, req)
    if key not in _REF:
        _REF[key] = reference(loaded.model, fmt, req)
    return _REF[key]


# --- scoring ----------------------------------------------------------------------------------

requests_st = st.lists(
    st.builds(
        ScoreRequest,
        prompt=st.sampled_from(PROMPTS),
        continuation=st.sampled_from(CONTINUATIONS),
        add_eot=st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    requests=requests_st,
    side=st.sampled_from(["left", "right"]),
    share_prefix=st.booleans(),
    batch_size=st.sampled_from([None, 1, 2, 3]),
    token_budget=st.sampled_from([None, 96, 200]),
    kind=st.sampled_from(["chat", "plain"]),
    call_overhead=st.sampled_from([0, 64, 10**9]),  # many length bands .. one band
)
def test_batched_scoring_equals_one_at_a_time(
    loaded,
    chat,
    plain,
    padding_side,
    requests,
    side,
    share_prefix,
    batch_size,
    token_budget,
    kind,
    call_overhead,
):
    fmt = chat if kind == "chat" else plain
    padding_side(side)
    engine = Engine(
        loaded,
        fmt,
        None,
        batch_size=batch_size,
        progress=False,
        share_prefix=share_prefix,
        token_budget=token_budget,
    )
    engine._call_overhead = call_overhead
    got = engine.score(requests)
    assert len(got) == len(requests)
    for req, scores in zip(requests, got, strict=True):
        ref = cached_reference(loaded, fmt, req)
        ids, offsets = fmt.encode_continuation(req.continuation, add_eot=req.add_eot, prompt=req.prompt)
        assert scores.token_ids == ids and scores.offsets == offsets
        assert scores.logprobs.dtype == np.float64
        np.testing.assert_allclose(scores.logprobs, ref, atol=1e-4, rtol=0)


def test_one_at_a_time_engine_matches_reference(loaded, chat):
    engine = Engine(loaded, chat, None, batch_size=1, progress=False)
    reqs = [ScoreRequest(p, c) for p in PROMPTS[:2] for c in CONTINUATIONS[:2]]
    for req in reqs:
        (one,) = engine.score([req])
        np.testing.assert_allclose(one.logprobs, reference(loaded.model, chat, req), atol=1e-4)


def test_shared_prompts_are_computed_once(loaded, chat):
    # One item's pattern: a paraphrased answer and five perturbed ones after one prompt.
    reqs = [ScoreRequest(PROMPTS[0], c) for c in CONTINUATIONS]
    engine = Engine(loaded, chat, None, progress=False)
    engine.score(reqs + reqs[:2])  # duplicates are deduplicated, not recomputed
    assert engine.stats["score_rows"] == len(CONTINUATIONS)
    assert engine.stats["forward_calls"] < len(CONTINUATIONS)
    prompt_len = len(chat.encode_prompt(PROMPTS[0]))
    # Every row but one read the prompt (minus its last token) from the cache.
    assert engine.stats["prefix_tokens_reused"] == (len(CONTINUATIONS) - 1) * (prompt_len - 1)


def test_prefix_shared_by_all_prompts_runs_once(loaded, chat):
    # Two questions share the chat template's system block: it is computed once, each
    # question's remainder once, and the continuations read both from the cache.
    reqs = [ScoreRequest(p, c) for p in PROMPTS[:2] for c in CONTINUATIONS[:3]]
    engine = Engine(loaded, chat, None, progress=False)
    engine.score(reqs)
    a, b = (chat.encode_prompt(p)[:-1] for p in PROMPTS[:2])
    common = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert common >= 8  # the system block
    computed = common + (len(a) - common) + (len(b) - common)
    assert engine.stats["prefix_tokens_reused"] == 3 * (len(a) + len(b)) - computed


def test_log_prob_helper_matches_float64_log_softmax():
    from unlearn_audit.model._logits import _log_prob_of

    gen = torch.Generator().manual_seed(0)
    logits = (
        torch.randn(64, 3000, generator=gen) * torch.tensor([0.1, 3.0, 30.0]).repeat(22)[:64, None]
    )
    targets = torch.randint(0, 3000, (64,), generator=gen)
    exact = torch.log_softmax(logits.double(), dim=-1).gather(1, targets[:, None])[:, 0]
    got = _log_prob_of(logits, targets)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, exact, atol=1e-7, rtol=0)


def test_duplicate_requests_get_separate_arrays(loaded, chat):
    req = ScoreRequest(PROMPTS[0], CONTINUATIONS[0])
    a, b = Engine(loaded, chat, None, progress=False).score([req, req])
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    a.logprobs[0] = 0.0
    assert b.logprobs[0] != 0.0


def test_empty_continuation_and_empty_batch(loaded, chat):
    engine = Engine(loaded, chat, None, progress=False)
    assert engine.score([]) == []
    (s,) = engine.score([ScoreRequest(PROMPTS[0], "", add_eot=False)])
    assert s.n_tokens == 0 and np.isnan(s.mean_nll)


def test_input_validation(loaded, chat):
    with pytest.raises(ValueError, match="batch-size"):
        Engine(loaded, chat, None, batch_size=0)
    engine = Engine(loaded, chat, None, progress=False)
    with pytest.raises(TypeError, match="ScoreRequest"):
        engine.score([("prompt", "answer")])
    with pytest.raises(TypeError, match="GenRequest"):
        engine.generate([ScoreRequest(PROMPTS[0], "x")])
    with pytest.raises(ValueError, match="n must be 1"):
        engine.generate([GenRequest(PROMPTS[0], n=2, temperature=0.0)])
    with pytest.raises(ValueError, match="top_p"):
        engine.generate([GenRequest(PROMPTS[0], temperature=1.0, top_p=0.0)])
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate([GenRequest(PROMPTS[0], max_new_tokens=0)])


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("side", ["left", "right"])
def test_compat_open_unlearning_is_batching_invariant(loaded, padding_side, share_prefix, side):
    """--compat open-unlearning: batched scores equal each request alone, tokenised and
    masked their way (tests/test_ou_compat.py checks those against their recipe)."""
    padding_side(side)
    ou = make_format(loaded.tokenizer, kind="chat", compat="open-unlearning")
    reqs = [ScoreRequest(p, c) for p in PROMPTS[:3] for c in CONTINUATIONS[:3]]
    compat_engine = Engine(loaded, ou, None, progress=False, share_prefix=share_prefix)
    for req, got in zip(reqs, compat_engine.score(reqs), strict=True):
        np.testing.assert_allclose(
            got.logprobs, reference(loaded.model, ou, req, compat=True), atol=1e-4
        )
    chat = make_format(loaded.tokenizer, kind="chat")
    assert compat_engine.config != Engine(loaded, chat, None).config  # distinct cache keys


# --- cache ------------------------------------------------------------------------------------


def test_disk_cache_second_call_computes_nothing(loaded, chat, tmp_path, monkeypatch):
    reqs = [ScoreRequest(p, c) for p in PROMPTS[:2] for c in CONTINUATIONS[:3]]
    gens = [GenRequest(p, max_new_tokens=8) for p in PROMPTS[:2]]
    first = Engine(loaded, chat, tmp_path, progress=False)
    s1, g1 = first.score(reqs), first.generate(gens)
    assert first.stats["forward_calls"] > 0 and first.stats["generate_calls"] > 0

    calls = []
    real_forward = loaded.model.forward
    monkeypatch.setattr(
        loaded.model, "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k)
    )
    second = Engine(loaded, chat, tmp_path, progress=False)  # a new process, in effect
    s2, g2 = second.score(reqs), second.generate(gens)
    assert calls == [] and second.stats["forward_calls"] == 0
    assert second.cache.hits == len(reqs) + len(gens)
    assert g1 == g2
    for a, b in zip(s1, s2, strict=True):
        np.testing.assert_array_equal(a.logprobs, b.logprobs)  # JSON round-trip is exact
        assert a.token_ids == b.token_ids and a.offsets == b.offsets

    # Anything that changes the numbers misses the cache.
    other = Engine(
        loaded, make_format(loaded.tokenizer, system_prompt=None), tmp_path, progress=False
    )
    other.score(reqs[:1])
    assert other.stats["forward_calls"] > 0


def test_a_tampered_cache_entry_is_recomputed_with_one_warning(loaded, chat, tmp_path):
    # Edited payloads that stay valid JSON (a 75 % leak made 0 % that way) are caught by the
    # checksum over key and value: the file is moved aside and the numbers recomputed.
    import json
    import sqlite3
    import warnings

    reqs = [ScoreRequest(p, c) for p in PROMPTS[:2] for c in CONTINUATIONS[:3]]
    gens = [GenRequest(p, max_new_tokens=8) for p in PROMPTS[:2]]
    first = Engine(loaded, chat, tmp_path, progress=False)
    s1, g1 = first.score(reqs), first.generate(gens)
    db = first.cache.path
    first.cache.close()
    with sqlite3.connect(db) as conn:
        for key, value in conn.execute("SELECT key, value FROM results").fetchall():
            d = json.loads(value)
            if isinstance(d, dict):
                d["logprobs"] = [0.0] * len(d["logprobs"])  # a model sure of every answer
            else:
                d = ["I do not know."] * len(d)  # a model that forgot
            conn.execute("UPDATE results SET value = ? WHERE key = ?", (json.dumps(d), key))
    second = Engine(loaded, chat, tmp_path, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s2, g2 = second.score(reqs), second.generate(gens)
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1, said  # once per damaged file, not per entry
    assert said[0].startswith(f"engine cache {db} held 6 entries (of those read) whose checksum")
    assert f"moved it to {db.name}.corrupt-1" in said[0]
    assert (tmp_path / f"{db.name}.corrupt-1").is_file()
    assert second.stats["forward_calls"] > 0 and g2 == g1
    for a, b in zip(s1, s2, strict=True):
        np.testing.assert_array_equal(a.logprobs, b.logprobs)
    third = Engine(loaded, chat, tmp_path, progress=False)  # the rebuilt file is trusted again
    third.score(reqs)
    assert third.cache.hits == len(reqs) and third.stats["forward_calls"] == 0


def test_cache_checksums_across_processes_and_old_files(tmp_path):
    import sqlite3
    import warnings

    from unlearn_audit.model import ResultCache

    # A file of the previous version (no checksum column): its rows are misses, not numbers.
    old = tmp_path / "engine-old.sqlite"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO results VALUES ('k', '[\"forged\"]')")
    cache = ResultCache(tmp_path, "old")
    assert cache.get_many(["k"]) == {}
    cache.put_many({"k": ["real"]})
    assert ResultCache(tmp_path, "old").get_many(["k"]) == {"k": ["real"]}
    # A row copied under another fingerprint's file name fails too (the checksum covers it).
    a, b = ResultCache(tmp_path, "fp"), ResultCache(tmp_path, "fp")  # two workers, one file
    a.put_many({"x": [1.0], "y": [2.0]})
    assert b.get_many(["x"]) == {"x": [1.0]}
    with sqlite3.connect(a.path) as conn:
        conn.execute("UPDATE results SET value = '[0.0]' WHERE key = 'x'")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert a.get_many(["x", "y"]) == {}  # moved aside
        assert b.get_many(["x", "y"]) == {}  # its connection still saw the old file: it says so once
        assert b.get_many(["x"]) == {}
    said = [str(w.message) for w in caught]
    assert len(said) == 2 and "checksum" in said[0] and "another process moved it aside" in said[1]
    renamed = tmp_path / "engine-other.sqlite"
    a.put_many({"x": [1.0]})
    a.close()
    os.replace(a.path, renamed)
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert ResultCache(tmp_path, "other").get_many(["x"]) == {}


def test_interrupted_run_resumes(loaded, chat, tmp_path, monkeypatch):
    reqs = [ScoreRequest(p, c) for p in PROMPTS for c in CONTINUATIONS[:2]]
    engine = Engine(loaded, chat, tmp_path, batch_size=2, progress=False)
    real = engine._score_batch
    done = []

    def crash_after_two(batch):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(batch)
        return real(batch)

    monkeypatch.setattr(engine, "_score_batch", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        engine.score(reqs)
    resumed = Engine(loaded, chat, tmp_path, batch_size=2, progress=False)
    out = resumed.score(reqs)
    assert resumed.cache.hits == 4 and resumed.stats["score_rows"] == len(reqs) - 4
    for req, s in zip(reqs, out, strict=True):
        np.testing.assert_allclose(s.logprobs, cached_reference(loaded, chat, req), atol=1e-4)


# --- generation -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "plain"])
def test_greedy_batched_equals_one_at_a_time(loaded, chat, plain, kind):
    fmt = chat if kind == "chat" else plain
    gens = [GenRequest(p, max_new_tokens=16) for p in PROMPTS]
    batched = Engine(loaded, fmt, None, progress=False).generate(gens)
    assert Engine(loaded, fmt, None, progress=False).stats["generate_calls"] == 0
    alone = Engine(loaded, fmt, None, batch_size=1, progress=False)
    singles = [alone.generate([g])[0] for g in gens]
    assert batched == singles
    assert all(len(out) == 1 and isinstance(out[0], str) for out in batched)


def test_greedy_matches_manual_argmax(loaded, chat):
    p = PROMPTS[0]
    (text,) = Engine(loaded, chat, None, progress=False).generate(
        [GenRequest(p, max_new_tokens=6)]
    )[0:1][0]
    ids = chat.encode_prompt(p)
    stop = set(chat.stop_token_ids())
    out = []
    with torch.no_grad():
        for _ in range(6):
            nxt = int(loaded.model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt in stop:
                break
            out.append(nxt)
    assert text == loaded.tokenizer.decode(out, skip_special_tokens=True)


def test_sampling_is_seeded_per_request(loaded, chat):
    def sample(reqs, **kw):
        return Engine(loaded, chat, None, progress=False, **kw).generate(reqs)

    req = GenRequest(PROMPTS[0], max_new_tokens=12, n=4, temperature=1.0, seed=7)
    a = sample([req])[0]
    assert len(a) == 4 and len(set(a)) > 1
    assert sample([req])[0] == a  # same seed, same samples
    assert sample([GenRequest(PROMPTS[0], max_new_tokens=12, n=4, temperature=1.0, seed=8)])[0] != a
    # Independent of batch composition and of n.
    others = [GenRequest(p, max_new_tokens=12, n=3, temperature=1.0, seed=1) for p in PROMPTS[1:]]
    assert sample(others + [req] + others[:1])[len(others)] == a
    assert sample([req], batch_size=3)[0] == a
    assert (
        sample([GenRequest(PROMPTS[0], max_new_tokens=12, n=2, temperature=1.0, seed=7)])[0]
        == a[:2]
    )


@pytest.mark.parametrize("top_p, expected", [
    (1.0, [0.5, 0.3, 0.15, 0.05]),
    (0.7, [0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0]),  # the nucleus: tokens 0 and 1 (0.8 >= 0.7)
])
def test_per_row_sampler_draws_from_the_tempered_nucleus(top_p, expected):
    """One step for 4000 rows with their own seeds: token counts follow the distribution."""
    from scipy.stats import chisquare

    from unlearn_audit.model._sampling import _PerRowSampler

    n = 4000
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(n, 1) * 2.0
    sampler = _PerRowSampler([2.0] * n, [top_p] * n, list(range(n)), "cpu")  # T=2 undoes the *2
    counts = np.bincount(sampler(None, scores).argmax(-1).numpy(), minlength=4)
    keep = [i for i, p in enumerate(expected) if p > 0]
    assert counts[[i for i in range(4) if i not in keep]].sum() == 0
    assert chisquare(counts[keep], n * np.array(expected)[keep]).pvalue > 1e-3
    # Greedy rows pass through untouched, and a row's draw depends only on its own seed.
    mixed = _PerRowSampler([0.0, 2.0], [1.0, top_p], [5, 17], "cpu")(None, scores[:2])
    assert torch.equal(mixed[0], scores[0])
    alone = _PerRowSampler([2.0], [top_p], [17], "cpu")(None, scores[:1])
    assert int(mixed[1].argmax()) == int(alone[0].argmax())


def test_tiny_top_p_is_greedy(loaded, chat):
    greedy = Engine(loaded, chat, None, progress=False).generate(
        [GenRequest(p, max_new_tokens=10) for p in PROMPTS]
    )
    nucleus = Engine(loaded, chat, None, progress=False).generate(
        [
            GenRequest(p, max_new_tokens=10, n=2, temperature=0.7, top_p=1e-6, seed=3)
            for p in PROMPTS
        ]
    )
    assert [[g[0]] * 2 for g in greedy] == nucleus


def test_generation_stops_at_end_of_turn(loaded, chat, monkeypatch):
    tok = loaded.tokenizer
    words = tok("Port Aldric", add_special_tokens=False)["input_ids"]
    engine = Engine(loaded, chat, None, progress=False)

    def fake_decode(model, ids, mask, rooms, stop_ids, sampler, **kw):
        return [(words + [chat.eot_token_id] + words)[:room] for room in rooms]

    monkeypatch.setattr("unlearn_audit.model._engine.decode", fake_decode)
    out = engine.generate(
        [GenRequest(PROMPTS[0], max_new_tokens=50), GenRequest(PROMPTS[1], max_new_tokens=1)]
    )
    assert out == [["Port Aldric"], [tok.decode(words[:1])]]


def _generate_reference(loaded, chat, prompts, max_new, stop=None):
    """transformers' own greedy ``generate`` on the left-padded batch, cut per row at the
    first stop token: what the decode loop must reproduce."""
    from transformers import GenerationConfig

    engine = Engine(loaded, chat, None, progress=False)
    ids, mask, _ = engine._pad([chat.encode_prompt(p) for p in prompts], "left")
    stop = chat.stop_token_ids() if stop is None else stop
    cfg = GenerationConfig(do_sample=False, max_new_tokens=max_new, eos_token_id=stop,
                           pad_token_id=engine._pad_id)
    with torch.no_grad():
        out = loaded.model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
    rows = []
    for toks in out[:, ids.shape[1]:].tolist():
        cut = next((i + 1 for i, t in enumerate(toks) if t in stop), len(toks))
        rows.append(toks[:cut])
    return ids, mask, stop, rows


def test_decode_loop_equals_transformers_generate_and_drops_finished_rows(loaded, chat, monkeypatch):
    """Greedy tokens of every row equal ``model.generate``'s on the same padded batch (cut at
    each row's room), while each forward pass carries only the rows still running."""
    from unlearn_audit.model._decode import decode
    from unlearn_audit.model._sampling import _PerRowSampler

    n = len(PROMPTS)
    ids, mask, stop, want = _generate_reference(loaded, chat, PROMPTS, 24, [-1])
    rooms = [1 + (5 * i) % 24 for i in range(n)]
    assert len(set(rooms)) > 2
    rows_seen = []
    forward = loaded.model.forward

    def counting(*args, **kwargs):
        rows_seen.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", counting)
    sampler = _PerRowSampler([0.0] * n, [1.0] * n, [0] * n, "cpu")
    with torch.no_grad():
        got = decode(loaded.model, ids, mask, rooms, stop, sampler, logits_to_keep=True)
    assert got == [w[:r] for w, r in zip(want, rooms, strict=True)]
    # Step k runs the rows with more than k tokens to go, and nothing else.
    assert rows_seen == [sum(r > k for r in rooms) for k in range(max(rooms))]


def test_decode_loop_ends_a_row_at_its_stop_token_and_maps_rows_for_the_sampler(loaded, chat):
    """Scripted answers (a sampler that forces each row's next token) ending at a stop token
    at different steps: each row keeps its stop token last, and the sampler is told which
    batch rows are still running."""
    from unlearn_audit.model._decode import decode

    stop = 7
    scripts = [[3, 4, stop, 9], [5, stop], [6, 6, 6, 6, 6, stop], [8, 8, 8]]  # last: room 3
    seen = []

    class Scripted:
        def select(self, scores, rows):
            seen.append(list(rows))
            out = torch.full_like(scores, -1e9)
            for j, i in enumerate(rows):
                out[j, scripts[i][len(steps[i])]] = 0.0
                steps[i].append(None)
            return out

    scripted = Scripted()
    steps = [[] for _ in scripts]
    ids, mask, _ = Engine(loaded, chat, None, progress=False)._pad(
        [chat.encode_prompt(p) for p in PROMPTS[:4]], "left")
    with torch.no_grad():
        got = decode(loaded.model, ids, mask, [48, 48, 48, 3], [stop], scripted, logits_to_keep=True)
    assert got == [[3, 4, stop], [5, stop], [6, 6, 6, 6, 6, stop], [8, 8, 8]]
    assert seen == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 2, 3], [2], [2], [2]]


# --- hidden states ----------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_hidden_states_positions_and_logit_lens(loaded, chat, padding_side, side):
    padding_side(side)
    engine = Engine(loaded, chat, None, progress=False)
    reqs = [
        ScoreRequest(PROMPTS[i], c)
        for i, c in [(0, CONTINUATIONS[1]), (3, CONTINUATIONS[0]), (1, CONTINUATIONS[2])]
    ]
    states = engine.hidden_states(reqs)
    d = loaded.model.config.hidden_size
    for req, h in zip(reqs, states, strict=True):
        p = chat.encode_prompt(req.prompt)
        c, _ = chat.encode_continuation(req.continuation, prompt=req.prompt)
        assert h.shape == (engine.n_layers + 1, len(c), d) and h.dtype == np.float32
        with torch.no_grad():
            out = loaded.model(torch.tensor([p + c]), output_hidden_states=True)
        sl = slice(len(p) - 1, len(p) - 1 + len(c))  # the positions predicting each token
        for k in range(engine.n_layers + 1):
            np.testing.assert_allclose(h[k], out.hidden_states[k][0, sl].numpy(), atol=1e-4)
        # Logit lens at the last layer is the model's own logits (its state is post-norm).
        np.testing.assert_allclose(
            engine.lm_head_logits(h[-1], layer=-1), out.logits[0, sl].numpy(), atol=1e-4
        )
        lens = engine.lm_head_logits(h)
        assert lens.shape == (engine.n_layers + 1, len(c), loaded.model.config.vocab_size)
        np.testing.assert_allclose(lens[-1], out.logits[0, sl].numpy(), atol=1e-4)
        with torch.no_grad():
            manual0 = loaded.model.lm_head(loaded.model.model.norm(torch.from_numpy(h[0])))
        np.testing.assert_allclose(lens[0], manual0.numpy(), atol=1e-4)
    kept = engine.hidden_states(reqs[:1], layers=[0, -1])[0]
    np.testing.assert_array_equal(kept, states[0][[0, -1]])
    with pytest.raises(ValueError, match="layer="):
        engine.lm_head_logits(states[0][1])


# --- fine-tuning ------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [False, True])
def test_finetune_trains_a_copy(loaded, chat, lora):
    model = loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    examples = [(PROMPTS[0], "Port Aldric."), (PROMPTS[1], "poetry about mountains.")]
    kwargs = dict(
        epochs=4,
        lr=5e-2 if lora else 1e-2,
        batch_size=2,
        seed=0,
        lora={"r": 4, "lora_alpha": 8} if lora else False,
    )
    tuned = finetune(model, loaded.tokenizer, chat, examples, **kwargs)
    assert tuned is not model and not tuned.training
    assert not hasattr(tuned, "peft_config")  # adapters merged back
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    # It learned: the trained answers became more likely.
    reqs = [ScoreRequest(p, a) for p, a in examples]
    old = Engine(loaded, chat, None, progress=False).score(reqs)
    new_loaded = type(loaded)(tuned, loaded.tokenizer, loaded.spec, "tuned", loaded.device)
    new = Engine(new_loaded, chat, None, progress=False).score(reqs)
    assert all(n.mean_nll < o.mean_nll for n, o in zip(new, old, strict=True))
    # Deterministic for a seed.
    again = finetune(model, loaded.tokenizer, chat, examples, **kwargs)
    for (k, v), (_, w) in zip(tuned.state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(v, w, atol=0, rtol=0, msg=k)


def test_finetune_input_errors(loaded, chat):
    with pytest.raises(ValueError, match="at least one"):
        finetune(loaded.model, loaded.tokenizer, chat, [], epochs=1, lr=1e-3, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="epochs"):
        finetune(
            loaded.model,
            loaded.tokenizer,
            chat,
            [(PROMPTS[0], "x")],
            epochs=0,
            lr=1e-3,
            batch_size=1,
            seed=0,
        )


# --- the backend contract ---------------------------------------------------------------------


def test_engine_satisfies_the_backend_contract(loaded, chat):
    engine = Engine(loaded, chat, None, progress=False)
    assert isinstance(engine, Backend)
    assert engine.hidden_size == loaded.model.config.hidden_size
    assert engine.n_params == sum(p.numel() for p in loaded.model.parameters())
    # A missing member breaks the contract (the check is not vacuous).
    assert not isinstance(object(), Backend)


def test_finetuned_copy_has_its_own_fingerprint_and_leaves_the_original(loaded, chat, tmp_path):
    import dataclasses
    import hashlib
    import json

    engine = Engine(loaded, chat, tmp_path / "cache", batch_size=3, progress=False)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    req = FinetuneRequest(((PROMPTS[0], "Port Aldric."),), epochs=2, lr=1e-2, batch_size=1,
                          seed=0, purpose="rtt", tag=("Ada Quell",))
    copy_engine = engine.finetuned(req)
    assert isinstance(copy_engine, Backend) and copy_engine.model is not loaded.model
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)
    # The formula the retrain-to-test view has always used (its keys must not move).
    budget = {"epochs": 2, "lr": 1e-2, "batch_size": 1, "lora": False, "seed": 0}
    old = hashlib.sha256(json.dumps([loaded.fingerprint, "rtt", budget, ["Ada Quell"]]).encode()).hexdigest()
    assert copy_engine.fingerprint == old != engine.fingerprint
    assert copy_engine.loaded.spec == dataclasses.replace(loaded.spec, label="tiny+rtt")
    assert not copy_engine.cache.enabled  # no cache unless asked
    assert (copy_engine.fmt, copy_engine.batch_size) == (engine.fmt, 3)
    assert engine.finetuned(req, cache=True).cache.path.parent == tmp_path / "cache"
    engine.release_memory()


def test_quantized_copy_loads_the_spec_with_the_mode(loaded, chat, monkeypatch):
    import unlearn_audit.model._engine as engine_mod

    asked = []

    def fake_load(spec, **kw):
        asked.append(spec)
        return loaded

    monkeypatch.setattr(engine_mod, "load_model", fake_load)
    engine = Engine(loaded, chat, None, batch_size=2, progress=False)
    q = engine.quantized("nf4")
    assert asked[0].quantization == "nf4" and asked[0].label == "tiny@nf4"
    assert asked[0].source == loaded.spec.source
    assert q is not engine and q.batch_size == 2 and q.fmt is engine.fmt


def test_fit_probes_equals_fitting_each_layer_alone(loaded, chat):
    from unlearn_audit.model._lens import Readout, fit_probe

    engine = Engine(loaded, chat, None, progress=False)
    reqs = [ScoreRequest(p, c) for p, c in zip(PROMPTS[:3], CONTINUATIONS[:3], strict=True)]
    states = np.concatenate(engine.hidden_states(reqs), axis=1)  # L, N, d
    y = np.array([t for r in engine.score(reqs) for t in r.token_ids])
    n_states = engine.n_layers + 1
    fit = ProbeFit(kind="tuned", steps=3, lr=1e-2)
    layers = (0, n_states - 1)
    ans = engine.fit_probes(ProbeRequest(fit, layers, states[list(layers)], y,
                                         states[list(layers), :5], seed=7))
    readout = Readout(loaded.model, "cpu")
    for j, layer in enumerate(layers):
        probe = fit_probe(states[layer], y, fit, seed=7 + layer, readout=readout,
                          normed=layer == n_states - 1)
        np.testing.assert_array_equal(ans.train_top1[j], probe.predict(states[layer]))
        np.testing.assert_array_equal(ans.eval_top1[j], probe.predict(states[layer, :5]))
    with pytest.raises(ValueError, match="out of range"):
        engine.fit_probes(ProbeRequest(fit, (n_states,), states[:1], y, states[:1]))


def test_out_of_memory_halves_the_budget(loaded, chat, monkeypatch):
    reqs = [ScoreRequest(p, c) for p in PROMPTS for c in CONTINUATIONS[:3]]
    engine = Engine(loaded, chat, None, progress=False)
    start = engine._budget
    real = engine._score_batch

    def small_batches_only(batch):
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch)

    monkeypatch.setattr(engine, "_score_batch", small_batches_only)
    out = engine.score(reqs)
    assert engine._budget < start
    for req, s in zip(reqs, out, strict=True):
        np.testing.assert_allclose(s.logprobs, cached_reference(loaded, chat, req), atol=1e-4)
    # With a fixed batch size the user chose, OOM is reported with the fix instead.
    fixed = Engine(loaded, chat, None, batch_size=4, progress=False)
    monkeypatch.setattr(fixed, "_score_batch", small_batches_only)
    with pytest.raises(RuntimeError, match="smaller --batch-size"):
        fixed.score(reqs)


def test_trailing_prompt_space_scores_like_joint_tokenisation(loaded, plain):
    """A prompt ending in a space ("Answer: ") scores its answer as if prompt and answer
    were tokenised together: the space leads the answer's first token."""
    prompt = Prompt.question("Where was Elena Marwick born?")
    assert plain.trailing_space(prompt) == " "
    ids, offsets = plain.encode_continuation("Port Aldric.", add_eot=False, prompt=prompt)
    joint = plain.tokenizer(plain.render(prompt) + "Port Aldric.", add_special_tokens=False)["input_ids"]
    bos = [plain.tokenizer.bos_token_id]  # the plain format adds BOS; the joint call did not
    assert plain.encode_prompt(prompt) + ids == bos + list(joint)
    assert offsets[0][0] == 0 and offsets[-1][1] == len("Port Aldric.")


def test_sampled_tokens_survive_float_rounding_of_the_logits():
    """Logits differ across CPU kernel paths by float rounding; a sampled token must not.

    500 rows over a 3,000-token vocabulary, every logit moved by a relative 1e-6 (ten times
    the spread measured between ATEN_CPU_CAPABILITY=default, avx2 and avx512): the same seed
    draws the same token in every row. An inverse-CDF draw over the same vocabulary fails
    this (a draw that lands near one of 3,000 CDF boundaries flips)."""
    from unlearn_audit.model._sampling import _PerRowSampler

    n, vocab = 500, 3000
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(n, vocab, generator=gen) * 3.0
    moved = scores * (1.0 + 1e-6 * torch.randn(n, vocab, generator=gen))

    def draw(s):
        return _PerRowSampler([1.0] * n, [1.0] * n, list(range(n)), "cpu")(None, s).argmax(-1)

    assert torch.equal(draw(scores), draw(moved))


# --- the tokenizer hash: do two models split text alike? --------------------------------------


def test_tokenizer_hash_names_what_splits_text(loaded, chat, tmp_path):
    from _tiny import build_tokenizer
    from unlearn_audit.model._engine import tokenizer_hash

    tok = loaded.tokenizer
    engine = Engine(loaded, chat, progress=False)
    assert engine.tokenizer_hash == tokenizer_hash(tok)
    tok.save_pretrained(tmp_path / "copy")
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path / "copy")
    again(["a b", "a"], padding=True, truncation=True, max_length=4)  # runtime settings only
    assert tokenizer_hash(again) == tokenizer_hash(tok)
    templated = AutoTokenizer.from_pretrained(tmp_path / "copy")
    templated.chat_template = tok.chat_template.replace("<|eot_id|>", "<|end_of_text|>")
    assert tokenizer_hash(templated) != tokenizer_hash(tok)
    assert tokenizer_hash(build_tokenizer(vocab_size=500)) != tokenizer_hash(tok)
    special = AutoTokenizer.from_pretrained(tmp_path / "copy")
    special.add_special_tokens({"additional_special_tokens": ["<|extra|>"]})
    assert tokenizer_hash(special) != tokenizer_hash(tok)


def _tokenizer_context(monkeypatch, candidate_hash):
    from unlearn_audit.context import AuditConfig
    from unlearn_audit.model.mock import MockModel, mock_context
    from unlearn_audit.views import View, ViewResult, _base

    class Compares(View):
        name = "compares"
        metrics = ()

        def requires(self, ctx, label):
            ref = ctx.reference("retain")
            return [(self.name, ref)] if ref != label else []

        def run(self, ctx, label):
            return ViewResult(self.name, label, [])

    monkeypatch.setattr(_base, "_REGISTRY", {**_base._REGISTRY, "compares": Compares})
    ctx = mock_context(AuditConfig(progress=False), {"npo": MockModel("candidate"), "retain": MockModel("retain")})
    ctx._engines["npo"].tokenizer_hash = candidate_hash
    return ctx


def test_a_candidate_whose_tokenizer_differs_from_its_reference_is_warned(monkeypatch):
    ctx = _tokenizer_context(monkeypatch, "another tokenizer")
    (warning,) = ctx.result("compares", "npo").warnings
    assert warning.startswith("npo's tokenizer differs from that of retain (the retain model")
    assert "not like for like" in warning and "Fix:" in warning and "\n" not in warning
    assert ctx.result("compares", "retain").warnings == []  # no reference, nothing compared


def test_a_candidate_sharing_its_references_tokenizer_is_not_warned(monkeypatch):
    ctx = _tokenizer_context(monkeypatch, "mock:whitespace")
    assert ctx.result("compares", "npo").warnings == []


def test_mock_backend_satisfies_the_backend_contract():
    from unlearn_audit.model.mock import MockBackend, MockModel

    assert isinstance(MockBackend("m", MockModel()), Backend)


@pytest.mark.parametrize("view, reference", [("tofu", "retain"), ("likelihood", "full"), ("format_shift", "base")])
def test_the_comparing_views_warn_on_a_reference_with_another_tokenizer(view, reference):
    from _data import REPO
    from unlearn_audit.context import AuditConfig
    from unlearn_audit.model.mock import MockModel, knowing, mock_context

    cfg = AuditConfig(dataset=str(REPO / "fixtures" / "tiny_world"), limit=4, progress=False)
    items = mock_context(cfg, {"npo": MockModel()}).forget_items()
    ctx = mock_context(cfg, {"npo": MockModel("candidate", knowing(items)),
                             reference: MockModel(reference, knowing(items))})
    ctx._engines[reference].tokenizer_hash = "the reference's own tokenizer"
    warnings = ctx.result(view, "npo").warnings
    assert any(w.startswith(f"npo's tokenizer differs from that of {reference} (the {reference} model")
               for w in warnings), warnings
    assert not any("tokenizer differs" in w for w in ctx.result(view, reference).warnings)
