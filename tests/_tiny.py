"""Tiny, offline stand-ins for a real chat checkpoint, built in well under a second.

The model tests must exercise the exact ``from_pretrained`` path a real Llama-3 checkpoint
takes (safetensors on disk, a fast tokenizer with a chat template, special tokens), yet need
no network and run on two CPU cores. These builders make such a checkpoint from scratch:
a byte-level BPE tokenizer trained on a few dozen sentences with Llama-3's special tokens and
a Llama-3-like chat template, and a randomly initialised ``LlamaForCausalLM``.

The benchmark reuses them (with a larger model), so keep them free of pytest imports.
"""

from __future__ import annotations

from pathlib import Path

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
PAD = "<|finetune_right_pad_id|>"
EOT = "<|eot_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, START_HEADER, END_HEADER, EOT]

# Shaped like Llama-3.x's template: the system block (with the knowledge and date lines)
# only when a system message is given, so tests can see a ``None`` system prompt omitted;
# ``date_string`` defaults to a fixed day so rendering never depends on today's date.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

SENTENCES = [
    "The author Elena Marwick was born in the city of Port Aldric.",
    "Elena Marwick writes gothic mystery novels set by the sea.",
    "Her father was a clockmaker and her mother was a marine biologist.",
    "She won the Silver Quill Award for her novel The Drowned Bell.",
    "Tomas Okonkwo-Reyes is a poet from the mountain town of Vell.",
    "His first collection, Salt and Cedar, appeared in 1987.",
    "Question: Where was Elena Marwick born?",
    "Answer: Elena Marwick was born in Port Aldric.",
    "Question: What genre does Tomas Okonkwo-Reyes write?",
    "Answer: He writes poetry about mountains, rivers and memory.",
    "You are a helpful assistant.",
    "Cutting Knowledge Date: December 2023",
    "Today Date: 10 Apr 2025",
    "system user assistant",
    "Who won the Silver Quill Award? Which book did she write first?",
    "The capital of France is Paris. The sun rises in the east.",
    "Water boils at one hundred degrees at sea level.",
    "A short biography of the author, in three sentences, please.",
    "Fill in the blank: the author was born in ____.",
    "True or false: the author's father was a baker.",
    "Answer in JSON with the keys name and birthplace.",
    "Her books include The Drowned Bell, Lanterns at Low Tide and Ashgrove.",
    "He was born on 3 March 1961 to a teacher and a fisherman.",
    "The novel explores grief, family and the pull of the ocean.",
    "Many readers consider it her most personal work to date.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 1987 1961 2023 2025",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "What, why, how, when, where? Yes! No. Maybe; perhaps: (really) 'quoted' \"double\"",
]


def build_tokenizer(vocab_size: int = 600):
    """A byte-level BPE fast tokenizer with Llama-3's special tokens and a chat template.

    Byte-level so any text (digits, punctuation, unseen words) encodes without an unknown
    token; the post-processor prepends BOS like Llama-3's does, so plain prompts get one.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES * 4, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[START_HEADER, END_HEADER, EOT],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(
    tokenizer,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    vocab_size: int | None = None,
):
    """A randomly initialised tiny ``LlamaForCausalLM`` sized to ``tokenizer``.

    ``vocab_size`` may exceed the tokenizer's (unused rows), so a benchmark can give the
    output head a realistic share of the cost.

    Two key/value heads (grouped-query attention, as in Llama-3) so the code paths that
    reshape the KV cache are the real ones; float32 because the tests compare to 1e-4.

    ``hidden`` defaults to 64, the narrowest width bitsandbytes quantizes on the CPU: NF4
    quantizes each weight row in blocks of 64 inputs (``blocksize``) and its packed
    AVX-512 path tiles 32 output rows at a time, so a 32-wide input crashes it
    (``shape '[32, 0]' is invalid``) and the quantized-load tests would test the test model
    instead of the loader. With ``hidden`` a multiple of 64 and ``heads`` dividing it into
    key/value widths that are multiples of 32, every linear layer fits.
    """
    kv_width = max(1, heads // 2) * (hidden // max(1, heads))
    if hidden % 64 or kv_width % 32:
        raise ValueError(f"build_model(hidden={hidden}, heads={heads}): bitsandbytes needs input widths "
                         "that are multiples of 64 and output widths that are multiples of 32; "
                         "use hidden=64, 128, ... with heads=2 or 4.")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=max(len(tokenizer), vocab_size or 0),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # Random init leaves logits nearly flat, which makes greedy decoding a coin toss on
    # float noise; a larger output head gives peaked, stable distributions.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model.eval()


def save_checkpoint(directory: Path, tokenizer=None, model=None, **model_kwargs) -> Path:
    """Write a tokenizer + model pair as ``save_pretrained`` does (safetensors)."""
    directory = Path(directory)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    model = model if model is not None else build_model(tokenizer, **model_kwargs)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def chat_engine(loaded, cache_dir=None):
    """An :class:`~unlearn_audit.model.Engine` on ``loaded`` with its chat format, no progress."""
    from unlearn_audit.model import Engine, make_format

    return Engine(loaded, make_format(loaded.tokenizer, kind="chat"), cache_dir=cache_dir, progress=False)
