"""``--compat open-unlearning``: tokens, mask, stop ids and ROUGE reference as open-unlearning's.

Each test compares the engine with a short re-statement of what open-unlearning's
evaluator does (locuslab/open-unlearning HEAD: ``data/utils.py::preprocess_chat_instance``,
``data/collators.py``, ``evals/metrics/utils.py::evaluate_probability`` and
``eval_text_similarity``, ``model/__init__.py::get_tokenizer``), written from scratch here:
tokenise the whole chat, label everything after the prompt's token count, append EOS unless
last, attend to every token but ``pad_token_id`` (EOS when the tokenizer has none), no
``position_ids``; generate greedily from the prompt's own tokens with the checkpoint's
``generation_config``; ROUGE against the decoded labels less the decoded prompt.

Two tokenizers exercise the two ways their numbers move: one shaped like
Llama-3.2-Instruct's (EOS is ``<|eot_id|>``, no pad token, so every end-of-turn token in
the prompt is masked) and one whose generation prompt ends in a space (so the prompt's
last token is the answer's first).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from _tiny import CHAT_TEMPLATE, EOT, build_model, build_tokenizer, save_checkpoint
from unlearn_audit.model import (
    Engine,
    GenRequest,
    ModelSpec,
    OpenUnlearningChatFormat,
    Prompt,
    ScoreRequest,
    load_model,
    make_format,
)

pytestmark = pytest.mark.usefixtures("one_thread")

IGNORE = -100
QA = [
    ("Where was Elena Marwick born?", "Elena Marwick was born in Port Aldric."),
    ("What genre does Tomas Okonkwo-Reyes write?", "He writes poetry about mountains."),
    ("Hi?", "Yes , it is ."),  # " ," is what clean_up_tokenization_spaces may rewrite
]
# The old tiny world's layout: a header closed by a space that the tokenizer splits off.
SPACE_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|> ' + message['content']"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|> ' }}"
    "{%- endif %}"
)


def _load(directory):
    return load_model(ModelSpec(str(directory), "tiny", device="cpu"), hash_cache=None)


@pytest.fixture(scope="module")
def llama32(tmp_path_factory):
    """Llama-3.2-Instruct's token setup: EOS = <|eot_id|>, no pad token."""
    tok = build_tokenizer()
    model = build_model(tok)
    tok.eos_token = EOT
    tok.pad_token = None
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(EOT)
    model.generation_config.pad_token_id = None
    lm = _load(save_checkpoint(tmp_path_factory.mktemp("l32") / "m", tok, model))
    assert lm.tokenizer.pad_token_id is None and lm.tokenizer.eos_token == EOT
    return lm


@pytest.fixture(scope="module")
def spaced(tmp_path_factory):
    """A generation prompt ending in a space; a pad token, so open-unlearning masks nothing."""
    tok = build_tokenizer()
    tok.chat_template = SPACE_TEMPLATE
    model = build_model(tok, seed=1)
    lm = _load(save_checkpoint(tmp_path_factory.mktemp("sp") / "m", tok, model))
    assert lm.tokenizer.pad_token_id is not None
    return lm


def _ids(out) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
    return list(out["input_ids"] if not isinstance(out, list) else out)


def ou_item(tok, fmt, question: str, answer: str) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, labels, prompt_ids) of one chat item, as open-unlearning builds them."""
    msgs = fmt.messages(Prompt.question(question))
    kw = {"date_string": fmt.date_string}
    chat_ids = _ids(tok.apply_chat_template(
        msgs + [{"role": "assistant", "content": answer}], tokenize=True,
        add_generation_prompt=False, **kw))
    prompt_ids = _ids(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, **kw))
    if chat_ids[-1] != tok.eos_token_id:
        chat_ids.append(tok.eos_token_id)
    labels = [IGNORE] * len(prompt_ids) + chat_ids[len(prompt_ids):]
    return chat_ids, labels, prompt_ids


def ou_token_logprobs(lm, fmt, question: str, answer: str) -> np.ndarray:
    """open-unlearning's per-token log-probabilities of the labelled tokens (one item)."""
    tok = lm.tokenizer
    ids, labels, _ = ou_item(tok, fmt, question, answer)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = lm.model(input_ids=x, attention_mask=(x != pad).long()).logits[0]
    lsm = logits.double().log_softmax(-1)
    return np.array([lsm[i - 1, t].item() for i, t in enumerate(labels) if t != IGNORE])


@pytest.mark.parametrize("which", ["llama32", "spaced"])
def test_scores_are_open_unlearnings(which, request):
    lm = request.getfixturevalue(which)
    fmt = make_format(lm.tokenizer, kind="chat", compat="open-unlearning")
    assert isinstance(fmt, OpenUnlearningChatFormat) and fmt.config()["compat"] == "open-unlearning"
    reqs = [ScoreRequest(Prompt.question(q), a) for q, a in QA]
    for share in (True, False):
        got = Engine(lm, fmt, None, progress=False, share_prefix=share).score(reqs)
        for (q, a), s in zip(QA, got, strict=True):
            np.testing.assert_allclose(s.logprobs, ou_token_logprobs(lm, fmt, q, a), atol=1e-5)
    default = Engine(lm, make_format(lm.tokenizer, kind="chat"), None, progress=False).score(reqs)
    # Each tokenizer moves the numbers for its own reason; the default differs from theirs.
    assert all(abs(d.mean_nll - s.mean_nll) > 1e-3 for d, s in zip(default, got, strict=True))


def test_space_ended_prompt_loses_the_answers_first_token(spaced):
    """The answer's first token merges with the prompt's space: their labels start after it."""
    tok = spaced.tokenizer
    ou = make_format(tok, kind="chat", compat="open-unlearning")
    ours = make_format(tok, kind="chat")
    q, a = QA[0]
    p_ou, c_ou, off_ou = ou.encode_pair(Prompt.question(q), a)
    p, c, _ = ours.encode_pair(Prompt.question(q), a)
    ids, labels, prompt_ids = ou_item(tok, ou, q, a)
    assert p_ou + c_ou == ids and len(p_ou) == len(prompt_ids)
    assert c_ou == [t for t in labels if t != IGNORE]
    assert tok.decode(c[:1]) == " Elena" and tok.decode(c_ou[:1]) != " Elena"
    # Theirs: the answer less its first token, the template's <|eot_id|>, then EOS.
    assert c_ou == c[1:] + [tok.eos_token_id]
    assert all(0 <= x <= y <= len(a) for x, y in off_ou)
    kept = ou.encode_pair(Prompt.question(q), a, add_eot=False)[1]
    assert kept == c_ou[:-2]


def test_mask_hides_pad_id_only(llama32, spaced):
    """pad = EOS = <|eot_id|> hides the prompt's end-of-turn tokens; a pad token hides none."""
    for lm, hides in ((llama32, True), (spaced, False)):
        fmt = make_format(lm.tokenizer, kind="chat", compat="open-unlearning")
        eng = Engine(lm, fmt, None, progress=False)
        ids = torch.tensor([fmt.encode_pair(Prompt.question("Hi?"), "Yes")[0]])
        mask = eng._attn(ids, torch.ones_like(ids))
        assert bool((mask == 0).any()) is hides
        assert eng.config["compat"] == "open-unlearning"
        assert eng.config != Engine(lm, make_format(lm.tokenizer), None).config


def ou_generate(lm, fmt, questions: list[str], max_new: int) -> list[str]:
    """open-unlearning's greedy answers: left-padded prompt ids, its mask, the checkpoint's
    generation config, decoded without special tokens, cut at the decoded EOS, stripped."""
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = [ou_item(tok, fmt, q, "x")[2] for q in questions]
    width = max(len(p) for p in prompts)
    x = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    out = lm.model.generate(
        x, attention_mask=(x != pad).long(), do_sample=False, top_p=None, temperature=None,
        max_new_tokens=max_new, use_cache=True, pad_token_id=tok.eos_token_id,
    )
    texts = tok.batch_decode(out[:, width:], skip_special_tokens=True,
                             clean_up_tokenization_spaces=True)
    stop = tok.decode([tok.eos_token_id])
    return [t.split(stop)[0].strip() for t in texts]


@pytest.mark.parametrize("which", ["llama32", "spaced"])
def test_generation_is_open_unlearnings(which, request):
    lm = request.getfixturevalue(which)
    fmt = make_format(lm.tokenizer, kind="chat", compat="open-unlearning")
    eng = Engine(lm, fmt, None, progress=False)
    questions = [q for q, _ in QA]
    got = [o[0] for o in eng.generate([GenRequest(Prompt.question(q), max_new_tokens=12)
                                       for q in questions])]
    assert got == ou_generate(lm, fmt, questions, 12)
    assert eng._stop_ids() == _as_list(lm.model.generation_config.eos_token_id)


def _as_list(x) -> list[int]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def test_stops_on_the_checkpoints_eos_ids(spaced):
    """Theirs stops where the checkpoint's generation_config says, not at our end-of-turn."""
    lm = copy.copy(spaced)
    lm.model = copy.deepcopy(spaced.model)
    eot = lm.tokenizer.convert_tokens_to_ids(EOT)
    lm.model.generation_config.eos_token_id = lm.tokenizer.eos_token_id  # not <|eot_id|>
    ou = Engine(lm, make_format(lm.tokenizer, compat="open-unlearning"), None, progress=False)
    ours = Engine(lm, make_format(lm.tokenizer), None, progress=False)
    assert ou._stop_ids() == [lm.tokenizer.eos_token_id]
    assert eot in ours._stop_ids()


def test_rouge_reference_is_the_decoded_labels(spaced):
    tok = spaced.tokenizer
    fmt = make_format(tok, kind="chat", compat="open-unlearning")
    q, a = QA[2]
    ids, labels, prompt_ids = ou_item(tok, fmt, q, a)
    decode = {"skip_special_tokens": True, "clean_up_tokenization_spaces": True}
    want = tok.decode(ids, **decode).replace(tok.decode(prompt_ids, **decode), "").strip()
    assert fmt.reference_answer(Prompt.question(q), a) == want
    assert want.startswith("Yes")
    assert make_format(tok).reference_answer(Prompt.question(q), a) == a


def test_plain_path_tokenises_with_special_tokens(spaced):
    tok = spaced.tokenizer
    fmt = make_format(tok, kind="plain", compat="open-unlearning")
    prompt = Prompt.question("Where was Elena Marwick born?")
    text = fmt.render(prompt)
    p, c, _ = fmt.encode_pair(prompt, "Port Aldric.")
    full = tok(text + "Port Aldric.", add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    own = tok(text, add_special_tokens=True)["input_ids"]
    # "Answer: " ends in a space: the whole text's first len(own) tokens differ from own.
    assert p + c == full and len(p) == len(own) and p != own
    assert p[0] == tok.bos_token_id


def test_deprecated_engine_flag_switches_the_format(spaced):
    with pytest.warns(DeprecationWarning, match="compat='open-unlearning'"):
        eng = Engine(spaced, make_format(spaced.tokenizer), None, compat_openunlearning_mask=True)
    assert eng.compat == "open-unlearning" and isinstance(eng.fmt, OpenUnlearningChatFormat)
    with pytest.raises(ValueError, match="--compat 'ou'"):
        make_format(spaced.tokenizer, compat="ou")


def test_template_shape_is_llamas():
    assert "<|end_header_id|>\\n\\n" in CHAT_TEMPLATE  # the seed checkpoints' header layout
