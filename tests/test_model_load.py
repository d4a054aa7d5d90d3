"""Loading checkpoints (local, adapter, pickle, quantized), fingerprints, prompt formats.

Everything runs on a tiny random Llama saved to a temporary directory: no network.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from _tiny import EOT, build_model, build_tokenizer, save_checkpoint
from unlearn_audit.model import (
    ChatFormat,
    ModelLoadError,
    ModelSpec,
    PlainFormat,
    Prompt,
    QuantizationUnavailable,
    _load,
    load_model,
    make_format,
)
from unlearn_audit.model._load import compute_fingerprint

pytestmark = pytest.mark.usefixtures("one_thread")


def cpu_spec(source: str, label: str, **kwargs) -> ModelSpec:
    """Tests pin the CPU (float32) so they behave the same on a machine with a GPU."""
    return ModelSpec(source, label, **{"device": "cpu", **kwargs})


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    # Never write the file-hash cache into the user's home during tests.
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "ua-cache"))


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "model", tokenizer)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return load_model(cpu_spec(str(tiny_dir), "tiny"), hash_cache=None)


# --- errors -----------------------------------------------------------------------------------


def test_missing_path_says_neither_local_nor_hub(tmp_path):
    with pytest.raises(ModelLoadError, match="neither a local directory") as e:
        load_model(cpu_spec(str(tmp_path / "no-such-model"), "x"))
    assert "Fix:" in str(e.value)


def test_unreachable_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="reachable hub id") as e:
        load_model(cpu_spec("no-such-org-xyz/no-such-model-xyz", "x"))
    assert "HF_HUB_OFFLINE" in str(e.value)


def test_directory_without_tokenizer(tmp_path, tokenizer):
    build_model(tokenizer).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no tokenizer files") as e:
        load_model(cpu_spec(str(tmp_path), "x"))
    assert "save_pretrained" in str(e.value)


def test_no_chat_template_suggests_plain(tmp_path, tiny_dir):
    d = tmp_path / "nochat"
    shutil.copytree(tiny_dir, d)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    lm = load_model(cpu_spec(str(d), "x"))
    assert not lm.tokenizer.chat_template
    with pytest.raises(ModelLoadError, match="--prompt-format plain"):
        make_format(lm.tokenizer, kind="chat")
    assert isinstance(make_format(lm.tokenizer, kind="plain"), PlainFormat)


def test_pickle_only_needs_opt_in(tmp_path, tokenizer, tiny_dir):
    d = tmp_path / "pickled"
    d.mkdir()
    model = build_model(tokenizer)
    model.config.save_pretrained(d)
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    tokenizer.save_pretrained(d)
    with pytest.raises(ModelLoadError, match="--allow-pickle") as e:
        load_model(cpu_spec(str(d), "x"))
    assert "safetensors" in str(e.value)
    lm = load_model(cpu_spec(str(d), "x", allow_pickle=True))
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, model(ids).logits)


def test_explicit_dtype(tiny_dir):
    lm = load_model(cpu_spec(str(tiny_dir), "x", dtype="bf16"), hash_cache=None)
    assert lm.dtype == "bfloat16" and next(lm.model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("dtype", "int4", "--dtype"),
        ("quantization", "int3", "quantization"),
        ("device", "gpu-please", "--device"),
    ],
)
def test_bad_options_are_load_errors(tiny_dir, field, value, match):
    spec = cpu_spec(str(tiny_dir), "x", **{field: value})
    with pytest.raises(ModelLoadError, match=match):
        load_model(spec)


def test_file_instead_of_directory(tiny_dir):
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(cpu_spec(str(tiny_dir / "config.json"), "x"))


# --- loading ----------------------------------------------------------------------------------


def test_local_dir_loads_float32_on_cpu(loaded, tiny_dir):
    # dtype "auto" is float32 on the CPU (bfloat16 only on CUDA).
    assert loaded.dtype == "float32"
    assert loaded.device.type == "cpu"
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert not loaded.model.training
    assert loaded.path == tiny_dir.resolve()


def test_adapter_directory_merges_onto_base(tmp_path, tiny_dir, loaded):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    base = load_model(cpu_spec(str(tiny_dir), "b"), hash_cache=None).model
    # init_lora_weights=False gives a non-zero B, so the adapter really changes outputs.
    peft_model = get_peft_model(
        base,
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    ids = torch.tensor([[0, 5, 9, 17, 33]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits

    # The base given explicitly ...
    lm = load_model(cpu_spec(str(adapter_dir), "a", base=str(tiny_dir)))
    # ... or read from adapter_config.json.
    cfg_file = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = str(tiny_dir)
    cfg_file.write_text(json.dumps(cfg))
    lm2 = load_model(cpu_spec(str(adapter_dir), "a"))
    for got in (lm, lm2):
        assert not hasattr(got.model, "peft_config")  # merged, a plain model
        with torch.no_grad():
            torch.testing.assert_close(got.model(ids).logits, expected, atol=1e-4, rtol=1e-4)
    assert lm.fingerprint != loaded.fingerprint
    assert lm.tokenizer.chat_template  # taken from the base directory


def test_adapter_without_base_is_a_clear_error(tmp_path, tiny_dir):
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ModelLoadError, match="--base-model"):
        load_model(cpu_spec(str(d), "a"))


def test_quantized_load_works_or_says_why(tiny_dir):
    # Whether bitsandbytes runs here depends on the platform; either outcome is fine as
    # long as it is one of the two documented ones.
    try:
        lm = load_model(cpu_spec(str(tiny_dir), "q", quantization="nf4"), hash_cache=None)
    except QuantizationUnavailable as e:
        assert "nf4" in str(e)
        return
    plain = load_model(cpu_spec(str(tiny_dir), "p"), hash_cache=None)
    assert lm.fingerprint != plain.fingerprint
    with torch.no_grad():
        out = lm.model(torch.tensor([[0, 5, 9]])).logits
    assert torch.isfinite(out).all()


def test_missing_bitsandbytes_is_quantization_unavailable(tiny_dir, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(QuantizationUnavailable, match="pip install"):
        load_model(cpu_spec(str(tiny_dir), "q", quantization="int8"), hash_cache=None)


# --- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_stable_across_loads_and_copies(tmp_path, tiny_dir, loaded, monkeypatch):
    from unlearn_audit.model._load import _HashCache

    # tiny_dir was written a moment ago; remember its hashes anyway, as for an old checkpoint.
    monkeypatch.setattr(_HashCache, "RACY_NS", 0, raising=False)
    hashes = tmp_path / "hashes.json"
    again = load_model(cpu_spec(str(tiny_dir), "again"), hash_cache=hashes)
    assert again.fingerprint == loaded.fingerprint
    assert hashes.is_file() and json.loads(hashes.read_text())
    # The cached hash is used and agrees.
    assert (
        load_model(cpu_spec(str(tiny_dir), "c"), hash_cache=hashes).fingerprint
        == loaded.fingerprint
    )
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    assert (
        load_model(cpu_spec(str(copy), "copy"), hash_cache=hashes).fingerprint == loaded.fingerprint
    )


def _edit_json(path, **changes):
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def _change_weights(d):
    model = load_model(cpu_spec(str(d), "c"), hash_cache=None).model
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 1e-3
    model.save_pretrained(d)  # rewrites model.safetensors: new size/mtime and bytes


# issue 12, case 1: each file or setting that changes outputs, and how to change it.
_COMPONENTS = {
    "weights": _change_weights,
    "config.json": lambda d: _edit_json(d / "config.json", rope_theta=10.0, rms_norm_eps=0.5),
    "generation_config.json": lambda d: _edit_json(
        d / "generation_config.json", do_sample=True, temperature=0.6, top_p=0.9
    ),
    "chat template in tokenizer_config.json": lambda d: _edit_json(
        d / "tokenizer_config.json", chat_template="{{ messages[0]['content'] }}"
    ),
    "chat_template.jinja": lambda d: (d / "chat_template.jinja").write_text("{{ messages[0]['content'] }}"),
    "tokenizer.json": lambda d: _edit_json(d / "tokenizer.json", truncation={
        "direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}),
}


@pytest.mark.parametrize("component", list(_COMPONENTS))
def test_fingerprint_changes_with_each_file_that_changes_outputs(tmp_path, tiny_dir, loaded, component):
    hashes = tmp_path / "hashes.json"
    changed = tmp_path / "changed"
    shutil.copytree(tiny_dir, changed)
    assert load_model(cpu_spec(str(changed), "c"), hash_cache=hashes).fingerprint == loaded.fingerprint
    _COMPONENTS[component](changed)
    assert load_model(cpu_spec(str(changed), "c"), hash_cache=hashes).fingerprint != loaded.fingerprint


def test_fingerprint_changes_with_dtype_and_quantization(tiny_dir, loaded):
    bf16 = load_model(cpu_spec(str(tiny_dir), "bf16", dtype="bfloat16"), hash_cache=None)
    assert bf16.fingerprint != loaded.fingerprint
    files = [("model", tiny_dir / "model.safetensors"), ("model", tiny_dir / "config.json"),
             ("model", tiny_dir / "generation_config.json")]
    assert compute_fingerprint(files, tiny_dir, None, dtype="float32") == loaded.fingerprint
    fps = {compute_fingerprint(files, tiny_dir, q, dtype=d)
           for q in (None, "int8", "nf4") for d in ("float32", "bfloat16")}
    assert len(fps) == 6


def test_fingerprint_changes_with_the_adapter_config(tmp_path, tiny_dir):
    from peft import LoraConfig, get_peft_model

    base = load_model(cpu_spec(str(tiny_dir), "b"), hash_cache=None).model
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"],
                                                 init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    _edit_json(adapter / "adapter_config.json", base_model_name_or_path=str(tiny_dir))
    before = load_model(cpu_spec(str(adapter), "a"), hash_cache=None).fingerprint
    _edit_json(adapter / "adapter_config.json", lora_alpha=64)  # 8x the adapter's scaling
    assert load_model(cpu_spec(str(adapter), "a"), hash_cache=None).fingerprint != before
    # the base's config is part of an adapter's fingerprint too
    base_copy = tmp_path / "base"
    shutil.copytree(tiny_dir, base_copy)
    _edit_json(base_copy / "config.json", rms_norm_eps=0.5)
    a = load_model(cpu_spec(str(adapter), "a", base=str(tiny_dir)), hash_cache=None).fingerprint
    b = load_model(cpu_spec(str(adapter), "a", base=str(base_copy)), hash_cache=None).fingerprint
    assert a != b


def test_a_warm_cache_never_serves_a_changed_configs_answers(tmp_path, tiny_dir, loaded):
    """issue 12, case 1: a copy with another config.json got the original's cached numbers."""
    from unlearn_audit.model import Engine, ScoreRequest

    req = [ScoreRequest(Prompt.question("Where was Elena Marwick born?"), "In Port Aldric.")]
    cache = tmp_path / "engine-cache"
    chat = make_format(loaded.tokenizer, kind="chat")
    original = Engine(loaded, chat, cache, progress=False).score(req)[0].logprobs  # warms the cache
    changed = tmp_path / "changed"
    shutil.copytree(tiny_dir, changed)
    _edit_json(changed / "config.json", rope_theta=10.0, rms_norm_eps=0.5)
    lm = load_model(cpu_spec(str(changed), "c"), hash_cache=None)
    warm = Engine(lm, chat, cache, progress=False).score(req)[0].logprobs
    cold = Engine(lm, chat, None, progress=False).score(req)[0].logprobs
    assert not np.allclose(cold, original, atol=1e-3)  # the config change matters ...
    np.testing.assert_allclose(warm, cold, atol=1e-5)  # ... and the warm cache knows it


# --- prompt formats ---------------------------------------------------------------------------


def test_chat_format_renders_system_date_and_stem(loaded):
    tok = loaded.tokenizer
    fmt = make_format(
        tok, kind="chat", system_prompt="You are a helpful assistant.", date_string="10 Apr 2025"
    )
    assert isinstance(fmt, ChatFormat)
    text = fmt.render(Prompt.question("Where was Elena Marwick born?", stem="She was born in"))
    assert text.startswith(tok.bos_token)
    assert "Today Date: 10 Apr 2025" in text
    assert "You are a helpful assistant." in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nShe was born in")
    assert fmt.eot_token_id == tok.convert_tokens_to_ids(EOT) != tok.eos_token_id
    assert fmt.stop_token_ids() == [fmt.eot_token_id, tok.eos_token_id]

    no_system = ChatFormat(tok, system_prompt=None).render(Prompt.question("Hi?"))
    assert "helpful" not in no_system and "system" not in no_system
    # The prompt is encoded with exactly one BOS although the template writes it.
    ids = fmt.encode_prompt(Prompt.question("Hi?"))
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_chat_format_multi_turn(loaded):
    fmt = make_format(loaded.tokenizer)
    p = Prompt(turns=(("user", "Clue one."), ("assistant", "Noted."), ("user", "Who is it?")))
    text = fmt.render(p)
    assert text.index("Clue one.") < text.index("Noted.") < text.index("Who is it?")
    assert text.count("<|start_header_id|>assistant") == 2


def test_plain_format(loaded):
    tok = loaded.tokenizer
    fmt = make_format(tok, kind="plain")
    assert fmt.render(Prompt.question("Where?", stem="In")) == "Question: Where?\nAnswer: In"
    multi = Prompt(turns=(("user", "A?"), ("assistant", "a."), ("user", "B?")))
    assert fmt.render(multi) == "Question: A?\nAnswer: a.\nQuestion: B?\nAnswer: "
    assert fmt.eot_token_id == tok.eos_token_id
    ids = fmt.encode_prompt(Prompt.question("Where?"))
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_format_input_errors(loaded):
    with pytest.raises(ValueError, match="chat or plain"):
        make_format(loaded.tokenizer, kind="fancy")
    fmt = make_format(loaded.tokenizer)
    with pytest.raises(ValueError, match="end with a user turn"):
        fmt.render(Prompt(turns=(("user", "Q"), ("assistant", "A"))))
    with pytest.raises(ValueError, match="roles"):
        fmt.render(Prompt(turns=(("narrator", "Once"), ("user", "Q"))))


def test_continuation_offsets_and_eot(loaded):
    fmt = make_format(loaded.tokenizer)
    text = "Elena Marwick was born in Port Aldric, 1961."
    ids, offsets = fmt.encode_continuation(text, add_eot=True)
    assert ids[-1] == fmt.eot_token_id and offsets[-1] == (len(text), len(text))
    assert "".join(text[a:b] for a, b in offsets) == text
    ids2, _ = fmt.encode_continuation(text, add_eot=False)
    assert ids2 == ids[:-1]


def test_quantized_kernel_failure_is_quantization_unavailable(tiny_dir, monkeypatch):
    # bitsandbytes chooses its CPU kernel on the first forward call, after a load that
    # succeeded; a kernel that raises there must come back as the documented skip reason.
    bnb = pytest.importorskip("bitsandbytes")

    def broken(self, x):
        raise RuntimeError("shape '[32, 0]' is invalid for input of size 16")

    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", broken)
    monkeypatch.setattr(_load._dequantized_linear4bit_class(), "forward", broken)  # the CPU pin's
    with pytest.raises(QuantizationUnavailable, match=r"nf4 .*kernel failed.*shape '\[32, 0\]'"):
        load_model(cpu_spec(str(tiny_dir), "q", quantization="nf4"), hash_cache=None)


# --- an adapter's base, named in adapter_config.json ------------------------------------------


@pytest.fixture(scope="module")
def adapter_beside_base(tmp_path_factory, tokenizer):
    """``root/base`` (a model) and ``root/adapter`` (a LoRA on it) whose adapter_config.json
    names its base relatively, ``../base``; plus the merged logits it must give."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("relbase")
    base_dir = save_checkpoint(root / "base", tokenizer)
    torch.manual_seed(2)
    base = load_model(cpu_spec(str(base_dir), "b"), hash_cache=None).model
    peft_model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(root / "adapter")
    _edit_json(root / "adapter" / "adapter_config.json", base_model_name_or_path="../base")
    ids = torch.tensor([[0, 5, 9, 17, 33]])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    return root, ids, expected


def _copy_adapter(root, tmp_path, base_value):
    d = tmp_path / "adapter"
    shutil.copytree(root / "adapter", d)
    _edit_json(d / "adapter_config.json", base_model_name_or_path=base_value)
    return d


def test_relative_adapter_base_resolves_against_the_adapter_dir(adapter_beside_base, tmp_path, monkeypatch):
    root, ids, expected = adapter_beside_base
    elsewhere = tmp_path / "a" / "b" / "c"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # ../base from here does not exist
    lm = load_model(cpu_spec(str(root / "adapter"), "a"), hash_cache=None)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, expected, atol=1e-4, rtol=1e-4)
    explicit = load_model(cpu_spec(str(root / "adapter"), "a", base=str(root / "base")), hash_cache=None)
    assert lm.fingerprint == explicit.fingerprint


def test_relative_adapter_base_ignores_a_decoy_in_the_working_dir(adapter_beside_base, tmp_path, monkeypatch, tokenizer):
    root, ids, expected = adapter_beside_base
    work = tmp_path / "work"
    save_checkpoint(tmp_path / "base", tokenizer, seed=7)  # ../base seen from work: another model
    work.mkdir()
    monkeypatch.chdir(work)
    lm = load_model(cpu_spec(str(root / "adapter"), "a"), hash_cache=None)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, expected, atol=1e-4, rtol=1e-4)


def test_missing_relative_adapter_base_names_the_config_the_value_and_where(adapter_beside_base, tmp_path, monkeypatch):
    root, _, _ = adapter_beside_base
    d = _copy_adapter(root, tmp_path, "../no-such-base")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as e:
        load_model(cpu_spec(str(d), "a"), hash_cache=None)
    msg = str(e.value)
    assert str(d / "adapter_config.json") in msg
    assert "'../no-such-base'" in msg
    assert str((d / "../no-such-base").resolve()) in msg
    assert "--base-model" in msg and "Fix:" in msg
    assert "\n" not in msg


def test_adapter_base_hub_id_is_not_read_from_the_working_dir(adapter_beside_base, tmp_path, monkeypatch, tokenizer):
    root, _, _ = adapter_beside_base
    d = _copy_adapter(root, tmp_path, "someorg/somebase")
    save_checkpoint(tmp_path / "someorg" / "somebase", tokenizer)  # a cwd-relative look-alike
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        load_model(cpu_spec(str(d), "a"), hash_cache=None)
    msg = str(e.value)
    assert "adapter_config.json" in msg and "'someorg/somebase'" in msg and "hub id" in msg
    assert "--base-model" in msg


def test_adapter_base_named_beside_the_adapter_without_a_path_shape(adapter_beside_base, tmp_path, monkeypatch):
    root, ids, expected = adapter_beside_base
    d = _copy_adapter(root, tmp_path, "base")
    shutil.copytree(root / "base", d / "base")  # adapter/base: a base shipped inside the adapter
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model(cpu_spec(str(d), "a"), hash_cache=None)
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, expected, atol=1e-4, rtol=1e-4)


def test_unreadable_adapter_config_is_one_line_with_a_fix(tmp_path):
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="names no base model") as e:
        load_model(cpu_spec(str(d), "a"), hash_cache=None)
    assert "adapter_config.json" in str(e.value)


@pytest.mark.parametrize("content", ['{"max_new_tokens": 0}', '{"eos_token_id": 1,'])
def test_a_generation_config_transformers_refuses_is_one_line(tmp_path, tiny_dir, content):
    d = tmp_path / "model"
    shutil.copytree(tiny_dir, d)
    (d / "generation_config.json").write_text(content)  # invalid, or torn JSON
    with pytest.raises(ModelLoadError) as e:
        load_model(cpu_spec(str(d), "m"), hash_cache=None)
    msg = str(e.value)
    assert msg.startswith(f"{d / 'generation_config.json'}: transformers cannot load it")
    assert "Fix:" in msg and "\n" not in msg


# --- the file-hash cache never serves a stale fingerprint ---------------------------------------


def test_fingerprint_sees_weights_swapped_with_the_old_size_and_mtime(tmp_path, tiny_dir, tokenizer, monkeypatch):
    import os

    from unlearn_audit.model._load import _HashCache

    monkeypatch.setattr(_HashCache, "RACY_NS", 0, raising=False)  # remember hashes of fresh files
    d, other = tmp_path / "model", tmp_path / "other"
    shutil.copytree(tiny_dir, d)
    save_checkpoint(other, tokenizer, seed=1)  # other weights, the same shapes: the same size
    weights, swapped = d / "model.safetensors", other / "model.safetensors"
    assert weights.stat().st_size == swapped.stat().st_size
    assert weights.read_bytes() != swapped.read_bytes()
    hashes = tmp_path / "hashes.json"
    before = load_model(cpu_spec(str(d), "m"), hash_cache=hashes).fingerprint
    assert hashes.is_file()  # remembered
    old = weights.stat()
    with open(weights, "r+b") as fh:  # overwritten in place: same inode, same size
        fh.write(swapped.read_bytes())
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))  # and the old mtime put back
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    after = load_model(cpu_spec(str(d), "m"), hash_cache=hashes).fingerprint
    assert after != before
    assert after == load_model(cpu_spec(str(d), "m"), hash_cache=None).fingerprint  # the new model's


def test_file_hash_cache_forgets_fresh_files_and_distrusts_an_edited_file(tmp_path, tiny_dir):
    from unlearn_audit.model._load import _HashCache

    d = tmp_path / "model"
    shutil.copytree(tiny_dir, d)
    files = [("model", d / "model.safetensors"), ("model", d / "config.json")]
    hashes = tmp_path / "hashes.json"
    truth = compute_fingerprint(files, d, None, hash_cache=hashes)
    # Written within the racy window: a change in the same timestamp tick could go unseen.
    assert not hashes.exists() or not json.loads(hashes.read_text()).get("entries")
    # An entry that matches the file's stamp but names other bytes, in a file whose checksum fails.
    weights = (d / "model.safetensors").resolve()
    entries = {str(weights): {**_HashCache._stamp(weights.stat()), "sha256": "0" * 64}}
    hashes.write_text(json.dumps({"version": 2, "entries": entries, "sha256": "0" * 64}))
    with pytest.warns(RuntimeWarning, match=r"file-hash cache .* failed its checksum"):
        assert compute_fingerprint(files, d, None, hash_cache=hashes) == truth
