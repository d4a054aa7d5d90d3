"""The tiny world's tokenizer: byte-level BPE trained on the world's own text.

Byte-level, so any unicode input encodes (real prompts, hypothesis strings); saved as a
normal ``PreTrainedTokenizerFast`` with a Llama-3-style chat template, so tiny models load
through exactly the same ``from_pretrained`` path as a real checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, START_HEADER, END_HEADER, EOT]

# Llama-3.2-Instruct's layout (header tokens, the newline pair after each header, every turn
# closed by <|eot_id|>, which is also EOS and the stop token), without its date preamble:
# the default audit runs the seed checkpoints' tokenisation paths. Llama-3's pre-tokenizer
# keeps a newline run whole ("\n\n" is one piece before a word and at the end of a prompt
# alike), so a prompt tokenised on its own ends exactly as it does inside the whole dialogue.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# Llama-3's split pattern (tokenizer.json of Llama-3.x): words with their leading space or
# punctuation, numbers in threes, newline runs whole.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (message contents) and wrap it as a transformers
    fast tokenizer.

    The role names are trained too, as they stand in the template (no leading space): a
    tokenizer that never saw them splits "assistant" into three pieces in every turn header.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Messages as they appear in the template: after a header's newline pair.
    texts = list(texts)
    roles = ["system", "user", "assistant"] * max(1, len(texts) // 20)
    tok.train_from_iterator(["\n\n" + t for t in texts] + roles, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,  # as Llama-3.2-Instruct's tokenizer: the end of a turn ends a reply
        pad_token=PAD,
        additional_special_tokens=[EOS, START_HEADER, END_HEADER],
        model_max_length=1024,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
