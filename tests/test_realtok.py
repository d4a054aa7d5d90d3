"""The package on the seed checkpoints' real tokenizers and chat templates, offline.

The tokenizers (llama.cpp's GGUF vocabularies) and templates come from llama-cpp-python's
sdist, fetched once with pip by :mod:`unlearn_audit.realtok` and cached; where pip cannot
reach the registry these tests skip with pip's reason. Select them with ``-m realtok``.
"""

from __future__ import annotations

import json

import pytest

from unlearn_audit.model import ModelSpec, Prompt, load_model, make_format
from unlearn_audit.model._format import end_of_turn_token_id
from unlearn_audit.model._load import compute_fingerprint, config_files
from unlearn_audit.realtok import (
    FAMILIES,
    RealTokUnavailable,
    build_family_model,
    family_tokenizer_dir,
    fetch_sources,
)

pytestmark = pytest.mark.realtok

# A TOFU forget10 item (the first author, Basil Mahfouz Al-Kuwaiti).
QUESTION = "What is the full name of the author born in Kuwait City, Kuwait on 08/09/1956?"
ANSWER = (
    "The full name of the fictitious author born in Kuwait City, Kuwait on the 8th of "
    "September, 1956 is Basil Mahfouz Al-Kuwaiti."
)

# The token ids each family's released checkpoint is shown and scored on, with the
# package's defaults (system prompt "You are a helpful assistant."; for Llama-3.2 the date
# "10 Apr 2025"). Llama-3.2's prompt renders as
#   <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date:
#   December 2023\nToday Date: 10 Apr 2025\n\nYou are a helpful assistant.<|eot_id|>
#   <|start_header_id|>user<|end_header_id|>\n\n{QUESTION}<|eot_id|>
#   <|start_header_id|>assistant<|end_header_id|>\n\n
# Written out by hand so that a change of system prompt, date or end-of-turn handling
# (or of the tokenizer build) fails here instead of moving every number silently.
REFERENCE = {
    "llama-3.2": (
        [128000, 128006, 9125, 128007, 271,  # BOS, "system" header, "\n\n"
         38766, 1303, 33025, 2696, 25, 6790, 220, 2366, 18, 198,  # Cutting Knowledge Date...
         15724, 2696, 25, 220, 605, 5186, 220, 2366, 20, 271,  # Today Date: 10 Apr 2025
         2675, 527, 264, 11190, 18328, 13, 128009,  # You are a helpful assistant.<|eot_id|>
         128006, 882, 128007, 271,  # "user" header
         3923, 374, 279, 2539, 836, 315, 279, 3229, 9405, 304, 57111, 4409, 11, 57111, 389,
         220, 2318, 14, 2545, 14, 6280, 21, 30, 128009,
         128006, 78191, 128007, 271],  # "assistant" header, "\n\n"
        [791, 2539, 836, 315, 279, 89207, 65795, 3229, 9405, 304, 57111, 4409, 11, 57111,
         389, 279, 220, 23, 339, 315, 6250, 11, 220, 6280, 21, 374, 67070, 16566, 69,
         109475, 1708, 16222, 84, 11748, 72, 13, 128009],  # ... Al-Kuwaiti.<|eot_id|>
    ),
    "phi-3.5": (
        [1, 32006, 29871, 13, 3492, 526, 263, 8444, 20255, 29889, 32007, 29871, 13,
         32010, 29871, 13, 5618, 338, 278, 2989, 1024, 310, 278, 4148, 6345, 297, 476, 7262,
         1249, 4412, 29892, 476, 7262, 1249, 373, 29871, 29900, 29947, 29914, 29900, 29929,
         29914, 29896, 29929, 29945, 29953, 29973, 32007, 29871, 13,
         32001, 29871, 13],  # <|assistant|>\n
        [450, 2989, 1024, 310, 278, 26797, 277, 2738, 4148, 6345, 297, 476, 7262, 1249, 4412,
         29892, 476, 7262, 1249, 373, 278, 29871, 29947, 386, 310, 3839, 29892, 29871,
         29896, 29929, 29945, 29953, 338, 4886, 309, 10082, 29888, 283, 29920, 838, 29899,
         29968, 7262, 1249, 29875, 29889, 32007],  # ... Al-Kuwaiti.<|end|>
    ),
    "qwen2.5": (
        [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198,
         151644, 872, 198, 3838, 374, 279, 2480, 829, 315, 279, 3150, 9223, 304, 56011, 4311,
         11, 56011, 389, 220, 15, 23, 14, 15, 24, 14, 16, 24, 20, 21, 30, 151645, 198,
         151644, 77091, 198],  # <|im_start|>assistant\n
        [785, 2480, 829, 315, 279, 88107, 64695, 3150, 9223, 304, 56011, 4311, 11, 56011,
         389, 279, 220, 23, 339, 315, 6122, 11, 220, 16, 24, 20, 21, 374, 65970, 16171, 69,
         283, 89, 1674, 15843, 84, 11489, 72, 13, 151645],  # ... Al-Kuwaiti.<|im_end|>
    ),
}
END_OF_TURN = {"llama-3.2": "<|eot_id|>", "phi-3.5": "<|end|>", "qwen2.5": "<|im_end|>"}
# llama.cpp's vectors that transformers' GGUF reader does not reproduce (its Llama-3 BPE
# misses the merge behind " Việt"); pinned so that a change either way is seen.
KNOWN_VECTOR_MISMATCHES = {"llama-3.2": {"Cửa Việt"}, "phi-3.5": set(), "qwen2.5": set()}


@pytest.fixture(scope="session")
def sources():
    try:
        return fetch_sources()
    except RealTokUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def tokenizers(sources):
    from transformers import AutoTokenizer

    return {fam: AutoTokenizer.from_pretrained(family_tokenizer_dir(fam)) for fam in FAMILIES}


@pytest.fixture(scope="session")
def llama_dir(sources):
    return build_family_model("llama-3.2")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tofu_item_token_ids_equal_the_reference(tokenizers, family):
    fmt = make_format(tokenizers[family])
    prompt = Prompt.question(QUESTION)
    answer_ids, _ = fmt.encode_continuation(ANSWER, prompt=prompt)
    prompt_ids, expected_answer = REFERENCE[family]
    assert fmt.encode_prompt(prompt) == prompt_ids
    assert answer_ids == expected_answer


def test_llama_prompt_is_the_seed_checkpoints(tokenizers):
    fmt = make_format(tokenizers["llama-3.2"])
    assert fmt.render(Prompt.question("Q?")) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 10 Apr 2025\n\n"
        "You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        "Q?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_end_of_turn_from_the_released_template(tokenizers, family):
    tok = tokenizers[family]
    eot = tok.convert_tokens_to_ids(END_OF_TURN[family])
    assert end_of_turn_token_id(tok) == eot
    assert make_format(tok).stop_token_ids()[0] == eot


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_llama_cpp_test_vectors(sources, tokenizers, family):
    """llama.cpp's tokenizer test vectors (``.inp``/``.out``) through the saved tokenizer."""
    gguf = FAMILIES[family].gguf
    texts = (sources / f"{gguf}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outs = (sources / f"{gguf}.out").read_text(encoding="utf-8").split("\n")
    # Both files end with a separator, which leaves one empty entry after the last vector.
    assert len(texts) == len(outs) == 47 and texts[-1] == outs[-1] == ""
    tok = tokenizers[family]
    wrong = {
        text
        for text, out in zip(texts[:-1], outs[:-1])
        if tok(text, add_special_tokens=False)["input_ids"] != [int(i) for i in out.split()]
    }
    assert wrong == KNOWN_VECTOR_MISMATCHES[family]


def test_llama_directory_is_laid_out_like_the_release(llama_dir, tokenizers):
    tok = tokenizers["llama-3.2"]
    config = json.loads((llama_dir / "config.json").read_text())
    gen = json.loads((llama_dir / "generation_config.json").read_text())
    index = json.loads((llama_dir / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in llama_dir.glob("model-*.safetensors"))
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == shards
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == len(tok) == 128256
    assert config["tie_word_embeddings"] is True
    assert config["rope_parameters"]["rope_type"] == "llama3"
    assert gen["eos_token_id"] == [128001, 128008, 128009] and gen["bos_token_id"] == 128000
    assert tok.eos_token == "<|eot_id|>" and tok.pad_token is None
    assert tok.bos_token == "<|begin_of_text|>" and tok("Hi")["input_ids"][0] == 128000
    assert (llama_dir / "chat_template.jinja").read_text().startswith("{{- bos_token }}")


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_seed_loading_path_on_llama_shape(llama_dir, dtype):
    """The seed checkpoints' path: sharded bf16 safetensors, loaded in bf16 or fp32."""
    import torch

    from unlearn_audit.model import Engine, GenRequest

    loaded = load_model(ModelSpec(source=str(llama_dir), label="llama", dtype=dtype,
                                  device="cpu"), hash_cache=None)
    assert loaded.dtype == dtype
    assert {p.dtype for p in loaded.model.parameters()} == {getattr(torch, dtype)}
    assert loaded.model.generation_config.eos_token_id == [128001, 128008, 128009]
    # Every shard enters the fingerprint, so a change in any of them is a new model.
    shards = sorted(llama_dir.glob("model-*.safetensors"))
    assert len(shards) > 1
    files = [("model", s) for s in shards] + config_files(llama_dir, "model")
    assert loaded.fingerprint == compute_fingerprint(files, llama_dir, None, dtype=dtype)
    assert loaded.fingerprint != compute_fingerprint(files[1:], llama_dir, None, dtype=dtype)
    fmt = make_format(loaded.tokenizer)
    assert fmt.stop_token_ids() == [128009]
    engine = Engine(loaded, fmt, cache_dir=None, progress=False)
    (out,) = engine.generate([GenRequest(prompt=Prompt.question(QUESTION), max_new_tokens=4)])
    assert len(out) == 1 and isinstance(out[0], str)


def test_compat_open_unlearning_masks_what_it_masks_with_llama32(llama_dir):
    """Llama-3.2-Instruct has no pad token, so open-unlearning's pad is EOS = <|eot_id|>,
    and its attention mask hides every <|eot_id|> inside the prompt (the system turn's and
    the user turn's): ``--compat open-unlearning`` hides exactly those, the default none."""
    import torch

    from unlearn_audit.model import Engine

    lm = load_model(ModelSpec(source=str(llama_dir), label="llama", dtype="float32", device="cpu"),
                    hash_cache=None)
    tok = lm.tokenizer
    assert tok.pad_token_id is None and tok.eos_token == "<|eot_id|>"
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    prompt = Prompt.question(QUESTION)
    compat = make_format(tok, kind="chat", compat="open-unlearning")
    ids = torch.tensor([compat.encode_pair(prompt, "An answer.")[0]])
    assert int((ids == eot).sum()) == 2  # the system and user turns' ends
    hidden = Engine(lm, compat, None, progress=False)._attn(ids, torch.ones_like(ids)) == 0
    assert torch.equal(hidden, ids == eot)
    default = make_format(tok, kind="chat")
    ids = torch.tensor([default.encode_pair(prompt, "An answer.")[0]])
    assert not bool((Engine(lm, default, None, progress=False)._attn(ids, torch.ones_like(ids)) == 0).any())
