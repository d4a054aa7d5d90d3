"""The tiny world's tokenizer: byte-level BPE trained on the world's own text.

Byte-level, so any unicode input encodes (real prompts, hypothesis strings); saved as a
normal ``PreTrainedTokenizerFast`` with a Llama-3-style chat template, so tiny models load
through exactly the same ``from_pretrained`` path as a real checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, START_HEADER, END_HEADER, EOT]

# Llama-3's layout without its date preamble (the tiny world has no notion of dates of use).
# A space, not Llama-3's blank line, separates header and content: byte-level BPE gives a
# word after a space its common token, so the first word of every message ("Kelen", the
# name most answers start with) is the same token as everywhere else, which a tiny model
# needs to learn a fact once rather than twice.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|> ' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|> ' }}{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (message contents) and wrap it as a transformers
    fast tokenizer.

    The role names are trained too, as they stand in the template (no leading space): a
    tokenizer that never saw them splits "assistant" into three pieces in every turn header.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Words as they appear inside messages: after a space.
    texts = list(texts)
    roles = ["system", "user", "assistant"] * max(1, len(texts) // 20)
    tok.train_from_iterator([" " + t for t in texts] + roles, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[START_HEADER, END_HEADER, EOT],
        model_max_length=1024,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
