"""The end-of-turn token is read off the tokenizer's own chat template, for every family.

Each template below has the structure of one family's released chat format (Llama-3,
Phi-3.5, Gemma, Qwen); each tokenizer's EOS differs from its end-of-turn token, so a
derivation that fell back to EOS (or to a hard-coded ``<|eot_id|>``) fails here. The
released templates themselves are tested in ``test_realtok.py``.
"""

from __future__ import annotations

import pytest
from tests._tiny import CHAT_TEMPLATE as LLAMA3_TEMPLATE
from tests._tiny import SENTENCES

from unlearn_audit.model import ChatFormat, Prompt
from unlearn_audit.model._format import end_of_turn_token_id

PHI35_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template that closes a turn with plain text: only EOS can end the answer.
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Response:\n' + message['content'] + '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)

# family: (template, bos, eos, end-of-turn, other special tokens)
FAMILIES = {
    "llama-3": (LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
                ["<|start_header_id|>", "<|end_header_id|>"]),
    "phi-3.5": (PHI35_TEMPLATE, "<s>", "<|endoftext|>", "<|end|>",
                ["<|system|>", "<|user|>", "<|assistant|>"]),
    "gemma": (GEMMA_TEMPLATE, "<bos>", "<eos>", "<end_of_turn>", ["<start_of_turn>"]),
    # Qwen base tokenizers end text with <|endoftext|>; the chat turn closes with <|im_end|>.
    "qwen": (QWEN_TEMPLATE, None, "<|endoftext|>", "<|im_end|>", ["<|im_start|>"]),
}


def _tokenizer(template, bos, eos, eot, others):
    """A byte-level BPE tokenizer with one family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # The end-of-turn token is added last so its id is never EOS's by accident.
    specials = [t for t in (bos, eos) if t] + others + [eot]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                   additional_special_tokens=others + [eot])
    fast.chat_template = template
    return fast


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_end_of_turn_is_the_templates_closing_token(family):
    template, bos, eos, eot, others = FAMILIES[family]
    tok = _tokenizer(template, bos, eos, eot, others)
    eot_id = tok.convert_tokens_to_ids(eot)
    assert eot_id != tok.eos_token_id
    assert end_of_turn_token_id(tok) == eot_id

    # Gemma's template refuses a system message, so that family renders without one.
    fmt = ChatFormat(tok, system_prompt=None if family == "gemma" else "Be brief.")
    assert fmt.eot_token_id == eot_id
    assert fmt.stop_token_ids() == [eot_id, tok.eos_token_id]
    ids, offsets = fmt.encode_continuation("Paris.", prompt=Prompt.question("Capital?"))
    assert ids[-1] == eot_id and offsets[-1] == (6, 6)
    # What the template writes after an answer starts with the token the scorer appends.
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Capital?"}, {"role": "assistant", "content": "Paris."}],
        tokenize=False,
    )
    assert text.split("Paris.", 1)[1].startswith(eot)


def test_end_of_turn_falls_back_to_eos():
    """A turn closed by plain text, or a template that cannot render a reply, stops at EOS."""
    tok = _tokenizer(PLAIN_TEMPLATE, "<s>", "</s>", "<|unused|>", [])
    assert end_of_turn_token_id(tok) == tok.eos_token_id

    tok.chat_template = "{{ raise_exception('only user messages') }}"
    assert end_of_turn_token_id(tok) == tok.eos_token_id
