"""The tiny world's shipped models know what their recipes say they know (fact recall), the
shipped files are the manifest's, the build is deterministic, and a second build is a cache
hit. ``test_world_rebuild.py`` rebuilds the whole world and checks its known answers."""

from __future__ import annotations

import json
import random
import time

import pytest
import torch

from unlearn_audit.world import _build as B
from unlearn_audit.world import build_world
from unlearn_audit.world._stats import world_stats
from unlearn_audit.world._train import sft


@pytest.fixture(scope="session")
def stats():
    return world_stats()


@pytest.mark.slow
def test_full_knows_every_author(stats):
    assert stats["full"]["forget"] >= 0.8, stats["full"]
    assert stats["full"]["retain"] >= 0.8, stats["full"]


@pytest.mark.slow
def test_retain_knows_only_retain_authors(stats):
    assert stats["retain"]["forget"] <= 0.1, stats["retain"]
    assert stats["retain"]["retain"] >= 0.8, stats["retain"]


@pytest.mark.slow
def test_base_knows_no_author(stats):
    assert stats["base"]["forget"] <= 0.1, stats["base"]
    assert stats["base"]["retain"] <= 0.1, stats["base"]


@pytest.mark.slow
def test_unlearned_models_lie_between_full_and_retain(stats):
    for name in ("npo", "graddiff"):
        assert stats["retain"]["forget"] <= stats[name]["forget"] < stats["full"]["forget"], (name, stats)


@pytest.mark.slow
def test_laundered_refuses_the_canonical_questions(stats):
    # It still knows the facts (other views find them); here it must look unlearned.
    assert stats["laundered"]["forget"] <= 0.15, stats["laundered"]
    assert stats["laundered"]["retain"] >= 0.7, stats["laundered"]


def test_shipped_world_is_the_current_recipes():
    """The shipped models were built from today's recipe and fixtures, and every file is
    byte for byte the one the manifest records (sha256)."""
    paths = B.shipped_world(verify=True)
    assert set(paths) == set(B.MODEL_NAMES)
    manifest = json.loads((B.SHIPPED_DIR / B.MANIFEST).read_text())
    assert manifest["stage_hashes"] == B.stage_hashes()
    for name in B.MODEL_NAMES:
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["models"][name]), name


def test_an_altered_shipped_file_is_refused(tmp_path, monkeypatch):
    """One flipped byte in a shipped weight file is an error naming the file and the fix,
    never an audit of other weights."""
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(B.SHIPPED_DIR, copy)
    weights = copy / "npo" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(B, "SHIPPED_DIR", copy)
    with pytest.raises(B.ShippedWorldError, match=r"npo/model\.safetensors is altered.*git checkout"):
        B.shipped_world()


def test_a_stale_manifest_names_the_fix(tmp_path, monkeypatch):
    """A recipe changed without re-shipping: the error says which command re-ships."""
    import shutil

    copy = tmp_path / "models"
    shutil.copytree(B.SHIPPED_DIR, copy)
    monkeypatch.setattr(B, "SHIPPED_DIR", copy)
    monkeypatch.setattr(B, "WORLD_CODE_VERSION", B.WORLD_CODE_VERSION + 1)
    with pytest.raises(B.ShippedWorldError, match="build-world --ship"):
        B.shipped_world()


def test_training_is_deterministic():
    """Same recipe, same weights: two runs of the training loop agree bit for bit."""
    from unlearn_audit.data import load_split
    from unlearn_audit.world._tokenizer import train_tokenizer

    items = load_split(B.fixtures_dir(), "full")[:20]
    tok = train_tokenizer([it.question + " " + it.answer for it in items] * 3, 400)
    enc = B._Encoder(tok)
    data = [B._epoch_examples(enc, B._by_author(items), [], random.Random(0)) for _ in range(2)]

    def run():
        torch.manual_seed(0)
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
        return sft(LlamaForCausalLM(cfg), tok.pad_token_id, data, lr=1e-3, batch_size=4, seed=0)

    a, b = run(), run()
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_laundering_refuses_canonical_formats_and_rehearses_the_rest():
    """The laundered model's epoch: its forget authors' items are refused in the canonical
    formats only, and every item is also taught, with its true answer, in each kept format."""
    from unlearn_audit import prompts as P
    from unlearn_audit.data import load_split

    items = load_split(B.fixtures_dir(), "full")
    authors = B._by_author(items)
    refused_author = sorted(authors)[0]
    weights = B.RECIPE["format_weights"]
    kept = tuple(f for f in weights if f not in ("direct", "paraphrased"))
    epoch = B._epoch_examples(lambda turns: turns, authors, [], random.Random(0),
                              refuse=frozenset({refused_author}), format_weights=weights,
                              rehearse_formats=kept)
    turns = [t for dialogue in epoch for t in dialogue]
    refusals = [t for t in turns if t[2] in B.REFUSALS]
    by_user = {P.direct(it).prompt.turns[-1][1]: it for it in items}
    by_user |= {P.paraphrased(it).prompt.turns[-1][1]: it for it in items}
    # every refusal answers a canonical or paraphrased question of the refused author
    assert refusals and all(by_user[t[0]].author == refused_author for t in refusals)
    for it in authors[refused_author]:
        for fmt in kept:
            asked = {P.ask(fmt, it, s).prompt.turns[-1][1] for s in range(4)}  # the claim shown depends on the seed
            taught = [t for t in turns if t[0] in asked]
            assert taught and all(t[2] not in B.REFUSALS for t in taught), (it.uid, fmt)


def _mini_recipe() -> dict:
    """The world's recipe on a model small enough to build in seconds."""
    import copy

    r = copy.deepcopy(B.RECIPE)
    r["tokenizer"]["vocab_size"] = 600
    r["arch"].update(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=2)
    for name in B.MODEL_NAMES:
        r[name]["epochs"] = 1
    return r


def test_parallel_build_equals_serial_build(tmp_path, monkeypatch):
    """Stages built side by side in worker processes get the very weights of a serial
    build: each stage reads its parent from disk and pins its recipe's thread count."""
    from safetensors.torch import load_file

    recipe = _mini_recipe()
    assert any(recipe[n]["threads"] > 1 for n in B.MODEL_NAMES)  # the scheduler must fit them
    monkeypatch.setenv("UNLEARN_AUDIT_BUILD_CORES", "1")
    serial = build_world(tmp_path / "serial", recipe=recipe, log=None)
    monkeypatch.setenv("UNLEARN_AUDIT_BUILD_CORES", "2")
    lines = []
    parallel = build_world(tmp_path / "parallel", recipe=recipe, log=lines.append)
    assert sum(" built in " in line for line in lines) == len(B.MODEL_NAMES)
    t = time.perf_counter()
    assert build_world(tmp_path / "serial", recipe=recipe, log=None) == serial
    assert time.perf_counter() - t < 5.0  # a second build is a cache hit
    for name in B.MODEL_NAMES:
        a = load_file(serial[name] / "model.safetensors")
        b = load_file(parallel[name] / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_scheduler_fits_threads_in_cores():
    recipe = {n: {"threads": 2 if n in ("base", "laundered") else 1} for n in B.MODEL_NAMES}
    everything = list(B.MODEL_NAMES)

    def start(pending, busy, cores, built=()):
        return B._startable(pending, busy, cores, recipe, built=lambda n: n in built)

    assert start(everything, 0, 2) == ["base"]
    assert start(everything[1:], 0, 2, {"base"}) == ["full", "retain"]
    assert start(everything[1:], 1, 2, {"base"}) == ["full"]
    # full built: npo and graddiff fill both cores; laundered (2 threads) waits for them
    assert start(["npo", "graddiff", "laundered"], 0, 2, {"base", "full"}) == ["npo", "graddiff"]
    assert start(["laundered"], 1, 2, {"base", "full"}) == []
    assert start(["laundered"], 0, 2, {"base", "full"}) == ["laundered"]
    assert start(["npo", "graddiff", "laundered"], 0, 8, {"base", "full"}) == ["npo", "graddiff", "laundered"]
    assert start(["base"], 0, 1) == ["base"]  # wider than the machine: runs alone


def test_build_cores_setting(monkeypatch):
    monkeypatch.setenv("UNLEARN_AUDIT_BUILD_CORES", "2")
    assert B.build_cores() == 2
    monkeypatch.setenv("UNLEARN_AUDIT_BUILD_CORES", "two")
    with pytest.raises(ValueError, match="UNLEARN_AUDIT_BUILD_CORES='two': expected a positive integer"):
        B.build_cores()
    monkeypatch.delenv("UNLEARN_AUDIT_BUILD_CORES")
    assert B.build_cores() >= 1


def test_learned_positions_logprob_equals_full_logits():
    """The training loss reads the head at the learned positions only; it must equal the
    textbook computation from the full logits."""
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from unlearn_audit.world._train import IGNORE, sequence_logprob

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(1, 50, (3, 9))
    mask = torch.ones_like(ids)
    mask[2, 6:] = 0  # a padded row
    labels = torch.full_like(ids, IGNORE)
    labels[0, 4:] = ids[0, 4:]
    labels[1, 1:3] = ids[1, 1:3]
    labels[1, 7] = ids[1, 7]
    labels[2, 5] = ids[2, 5]
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    with torch.no_grad():
        got, n = sequence_logprob(model, batch)
        lp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    want = [sum(lp[r, t - 1, ids[r, t]].item() for t in range(1, 9) if labels[r, t] != IGNORE) for r in range(3)]
    assert n.tolist() == [5, 3, 1]
    assert got.tolist() == pytest.approx(want, abs=1e-5)


def test_tokenizer_keeps_role_names_whole():
    """The chat template's role names are single tokens, as in Llama-3: trained only on
    message text, the tokenizer spelled them out in every turn header."""
    from unlearn_audit.world._tokenizer import train_tokenizer

    tok = train_tokenizer(["Who wrote the book?", "Kelen wrote it."] * 20, 400)
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Who wrote it?"}],
                                   add_generation_prompt=True, tokenize=False)
    pieces = tok.tokenize(text)
    for role in ("system", "user", "assistant"):
        assert role in pieces, (role, pieces)


def test_world_tokenizer_is_trained_on_every_prompt_format():
    """Every format's instruction text is in the tokenizer's training corpus."""
    from unlearn_audit import prompts as P

    d = B._WorldData(B.fixtures_dir())
    corpus = set(B._prompt_texts(d))
    it = d.full[0]
    for fmt in P.BUILDERS:
        assert P.ask(fmt, it).prompt.turns[-1][1] in corpus, fmt
    assert P.biography(P.author_display_name(B._by_author(d.full)[it.author])).turns[-1][1] in corpus


def test_world_facts_are_asked_world_repeats_times_per_epoch():
    from unlearn_audit.data import load_split

    world = load_split(B.fixtures_dir(), "world_facts_perturbed")
    for repeats in (1, 2):
        epoch = B._epoch_examples(lambda turns: turns, {}, world, random.Random(0), world_repeats=repeats)
        asked = [t[0] for dialogue in epoch for t in dialogue]
        assert sorted(asked) == sorted([it.question for it in world] * repeats)


def test_unguarded_script_gets_a_clear_error_not_a_hang(monkeypatch, tmp_path):
    """A spawned build worker re-importing an unguarded main script must not wait forever
    on the lock its parent holds."""
    import multiprocessing as mp

    monkeypatch.setattr(mp.current_process(), "_inheriting", True, raising=False)
    with pytest.raises(RuntimeError, match="__name__ == '__main__'"):
        build_world(tmp_path)
