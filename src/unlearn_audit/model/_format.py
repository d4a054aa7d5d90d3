"""Rendering a :class:`Prompt` to the exact text and token ids a model is shown.

The format is part of the model's configuration, not of the item: the same item is asked
of a Llama-3 chat checkpoint through its chat template (with TOFU's system prompt and a
pinned date) and of a base model through plain ``Question:/Answer:`` text. Scoring,
hidden states and fine-tuning all tokenise through :meth:`PromptFormat.encode_pair`
(generation through :meth:`PromptFormat.encode_prompt`), so what is trained is exactly what
is measured. ``--compat open-unlearning`` swaps in :class:`OpenUnlearningChatFormat` /
:class:`OpenUnlearningPlainFormat`, which tokenise as open-unlearning's evaluator does.
"""

from __future__ import annotations

from typing import Any

from unlearn_audit.model._load import ModelLoadError
from unlearn_audit.model._types import Prompt

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
# TOFU/open-unlearning evaluate Llama-3 with this date; without it the template inserts
# today's date and every number drifts from one day to the next.
DEFAULT_DATE_STRING = "10 Apr 2025"
# Written into a one-message conversation to find where the template closes the assistant's
# turn; plain letters so no template's ``trim`` or escaping changes it.
_SENTINEL = "Sentinel answer text"


class PromptFormat:
    """Base class: prompt -> text -> token ids, and the token that closes an answer.

    Attributes:
        kind: ``chat`` or ``plain``; part of the engine's cache key.
        compat: ``none``, or ``open-unlearning`` for the formats that tokenise as it does.
        eot_token_id: the token that ends the assistant's turn; appended to scored
            continuations (``add_eot``) and a stop token for generation.
    """

    kind: str = "base"
    #: Whose tokenisation this follows: ``none`` (this package's) or ``open-unlearning``.
    compat: str = "none"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eot_token_id: int | None = tokenizer.eos_token_id

    def render(self, prompt: Prompt) -> str:
        """The full prompt text, ending where the assistant's answer begins (after the stem)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The settings that change rendered text, for cache keys and the report."""
        return {"kind": self.kind}

    def stop_token_ids(self) -> list[int]:
        """Token ids that end a generation: the end-of-turn token and EOS."""
        ids = [self.eot_token_id, self.tokenizer.eos_token_id]
        return list(dict.fromkeys(int(i) for i in ids if i is not None))

    def trailing_space(self, prompt: Prompt | str) -> str:
        """The spaces a rendered prompt ends with, which belong to the answer's first token.

        Byte-level BPE merges a space into the word after it (" cobbler" is one token), so a
        prompt that ends in a space, tokenised on its own, would end in a lone space token
        the model never sees before an answer. As lm-evaluation-harness does, those spaces
        move to the start of the continuation: scoring then equals tokenising prompt and
        answer together, and generation starts where the model expects to.
        """
        text = prompt if isinstance(prompt, str) else self.render(prompt)
        return text[len(text.rstrip(" ")):]

    def encode_prompt(self, prompt: Prompt | str) -> list[int]:
        """Token ids of the rendered prompt, with special tokens as the template renders them,
        less any trailing spaces (see :meth:`trailing_space`).

        BOS is added by the tokenizer only when the rendered text does not already start
        with it (chat templates write it themselves; a second BOS changes every number).
        """
        text = prompt if isinstance(prompt, str) else self.render(prompt)
        text = text.rstrip(" ")
        bos = self.tokenizer.bos_token
        has_bos = bool(bos) and text.startswith(bos)
        ids = self.tokenizer(text, add_special_tokens=not has_bos)["input_ids"]
        return list(ids)

    def encode_continuation(
        self, text: str, add_eot: bool = True, prompt: Prompt | str | None = None
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets of an answer, tokenised on its own.

        The answer is tokenised separately from the prompt (no special tokens), so its
        tokens do not depend on how the prompt ends. TOFU and open-unlearning do otherwise:
        they tokenise prompt and answer as one text and mask the prompt's token count
        (open-unlearning ``data/utils.py::preprocess_chat_instance``), so a prompt ending
        in a space that its tokenizer splits off takes the answer's first token from the
        scored span. :class:`OpenUnlearningChatFormat` and :class:`OpenUnlearningPlainFormat`
        (``--compat open-unlearning``) do it their way.

        With ``prompt`` given, the prompt's trailing spaces lead the answer (see
        :meth:`trailing_space`); offsets stay relative to ``text``.

        Returns:
            ``(ids, offsets)``; with ``add_eot`` the end-of-turn id is last with the empty
            span ``(len(text), len(text))``.

        Raises:
            ValueError: ``add_eot`` but the tokenizer has neither an end-of-turn nor EOS token.
        """
        lead = self.trailing_space(prompt) if prompt is not None else ""
        enc = self.tokenizer(lead + text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        k = len(lead)
        offsets = [(max(0, int(a) - k), max(0, int(b) - k)) for a, b in enc["offset_mapping"]]
        if add_eot:
            if self.eot_token_id is None:
                raise ValueError(
                    "add_eot=True but the tokenizer has no end-of-turn or EOS token; "
                    "score with ScoreRequest(add_eot=False)."
                )
            ids.append(int(self.eot_token_id))
            offsets.append((len(text), len(text)))
        return ids, offsets

    def encode_pair(
        self, prompt: Prompt | str, continuation: str, add_eot: bool = True
    ) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """Prompt ids, continuation ids and the continuation's offsets, as scored together.

        What the engine scores: the continuation's tokens teacher-forced after the prompt's.
        Here, :meth:`encode_prompt` and :meth:`encode_continuation` (the prompt's trailing
        spaces leading the answer); the open-unlearning formats tokenise the whole text.
        """
        ids, offsets = self.encode_continuation(continuation, add_eot=add_eot, prompt=prompt)
        return self.prompt_ids(prompt), ids, offsets

    def prompt_ids(self, prompt: Prompt | str) -> list[int]:
        """:meth:`encode_prompt`, remembered per prompt: TOFU scores six to eight answers
        after each question, and rendering a chat template costs more than the lookup."""
        memo = self.__dict__.setdefault("_prompt_memo", {})
        if prompt not in memo:
            if len(memo) >= _PROMPT_MEMO_SIZE:
                memo.clear()
            memo[prompt] = self.encode_prompt(prompt)
        return list(memo[prompt])

    def reference_answer(self, prompt: Prompt, answer: str) -> str:
        """The gold answer ROUGE compares a generation with: the answer as given."""
        return answer

    def finish_generation(self, token_ids: list[int], prompt: Prompt | str) -> str:
        """A generation's text: decoded without special tokens, the prompt's trailing spaces
        (left for the model to generate, see :meth:`trailing_space`) removed."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        lead = self.trailing_space(prompt)
        return text[len(lead):] if lead and text.startswith(lead) else text


class ChatFormat(PromptFormat):
    """The tokenizer's chat template, with an optional system prompt and a fixed date.

    Args:
        tokenizer: a tokenizer whose ``chat_template`` is set.
        system_prompt: prepended as the system message; ``None`` omits the message.
        date_string: passed to the template (Llama-3 templates print it in the system block).
    """

    kind = "chat"

    def __init__(
        self,
        tokenizer,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        date_string: str = DEFAULT_DATE_STRING,
    ):
        super().__init__(tokenizer)
        if not getattr(tokenizer, "chat_template", None):
            raise _no_template_error(tokenizer)
        self.system_prompt = system_prompt
        self.date_string = date_string
        self.eot_token_id = end_of_turn_token_id(tokenizer, date_string=date_string)

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        msgs = (
            []
            if self.system_prompt is None
            else [{"role": "system", "content": self.system_prompt}]
        )
        msgs += [{"role": role, "content": text} for role, text in prompt.turns]
        return msgs

    def render(self, prompt: Prompt) -> str:
        _check_turns(prompt)
        text = self.tokenizer.apply_chat_template(
            self.messages(prompt),
            add_generation_prompt=True,
            tokenize=False,
            date_string=self.date_string,
        )
        return text + prompt.stem

    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "system_prompt": self.system_prompt,
            "date_string": self.date_string,
        }


class PlainFormat(PromptFormat):
    """``Question: {q}\\nAnswer: {stem}`` for models without a chat template.

    Earlier turns become ``Question:``/``Answer:`` pairs, one per line. There is no system
    prompt (TOFU's plain format has none); the end-of-turn token is EOS.
    """

    kind = "plain"

    def render(self, prompt: Prompt) -> str:
        _check_turns(prompt)
        lines = []
        for role, text in prompt.turns:
            lines.append(f"Question: {text}" if role == "user" else f"Answer: {text}")
        return "\n".join(lines) + f"\nAnswer: {prompt.stem}"


def end_of_turn_token_id(tokenizer, date_string: str = DEFAULT_DATE_STRING) -> int | None:
    """The special token the tokenizer's own chat template closes an assistant turn with.

    Renders ``[user, assistant]`` with a sentinel answer and reads the first token after
    the answer: ``<|eot_id|>`` for Llama-3, ``<|end|>`` for Phi-3.5, ``<end_of_turn>`` for
    Gemma, ``<|im_end|>`` for Qwen. That token is what the checkpoint was trained to emit
    after an answer, so scoring appends it and generation stops on it; a name hard-coded
    for one family scores the others with the wrong closing token.

    Args:
        tokenizer: a tokenizer whose ``chat_template`` is set.
        date_string: passed to the template, as :class:`ChatFormat` renders it.

    Returns:
        The closing token's id; EOS when the template closes the turn with plain text or
        nothing, or cannot render a reply (then the model can only stop at EOS).
    """
    messages = [
        {"role": "user", "content": "Sentinel question?"},
        {"role": "assistant", "content": _SENTINEL},
    ]
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=False, date_string=date_string
        )
    except Exception:  # a template that refuses a bare user/assistant pair
        return tokenizer.eos_token_id
    at = text.rfind(_SENTINEL)
    if at < 0:  # the template drops assistant content (some reasoning templates)
        return tokenizer.eos_token_id
    after = text[at + len(_SENTINEL):].lstrip()
    # Added tokens (specials and control tokens such as <|eot_id|>, <|im_end|>) are the
    # only ones a template can close a turn with that the model emits as one id.
    added = sorted(
        (t.content for t in tokenizer.added_tokens_decoder.values() if t.content),
        key=len,
        reverse=True,
    )
    for content in added:
        if after.startswith(content):
            return int(tokenizer.convert_tokens_to_ids(content))
    return tokenizer.eos_token_id


# Distinct prompts remembered by PromptFormat.prompt_ids before the memo starts over.
_PROMPT_MEMO_SIZE = 4096


class _OpenUnlearningTokenising:
    """Tokenisation, reference answers and generation text as open-unlearning makes them.

    Read from locuslab/open-unlearning ``src/data/utils.py::preprocess_chat_instance``,
    ``src/data/collators.py`` and ``src/evals/metrics/utils.py::eval_text_similarity``:

    * the whole conversation, answer included, is tokenised as one text, EOS is appended
      unless it already ends it, and the answer is what follows the *prompt's* token
      count (the prompt tokenised on its own, generation prompt included). Where the
      prompt's last token merges with the answer's first (a prompt ending in a space),
      the answer loses that token, as theirs does;
    * the chat path tokenises the template's text without special tokens (as
      ``apply_chat_template(tokenize=True)``); the plain path with them (their
      ``tokenizer(text, add_special_tokens=True)``, so BOS first);
    * no trailing-space handling: generation starts after the prompt's own tokens;
    * ROUGE's reference is the decoded labels: ``decode(whole conversation)`` with the
      decoded prompt cut out, stripped (``skip_special_tokens`` and
      ``clean_up_tokenization_spaces`` on);
    * a generation is decoded the same way, cut at the decoded EOS token and stripped.

    The attention mask (their ``pad_token_id``) and the stop tokens (the checkpoint's
    ``generation_config`` EOS ids) are the engine's part (``Engine(compat=...)``).
    """

    compat = "open-unlearning"
    #: Whether the tokenizer adds its special tokens (BOS) to the text.
    _special = False

    def config(self) -> dict[str, Any]:
        return {**super().config(), "compat": self.compat}

    def trailing_space(self, prompt) -> str:
        return ""  # open-unlearning keeps the prompt's text, spaces and all

    def _tokenise(self, text: str, offsets: bool = False):
        return self.tokenizer(
            text, add_special_tokens=self._special, return_offsets_mapping=offsets
        )

    def encode_prompt(self, prompt) -> list[int]:
        text = prompt if isinstance(prompt, str) else self.render(prompt)
        return list(self._tokenise(text)["input_ids"])

    def full_text(self, prompt, continuation: str) -> tuple[str, int]:
        """The conversation with ``continuation`` as the assistant's answer, and where the
        answer starts in it."""
        raise NotImplementedError

    def encode_pair(self, prompt, continuation: str, add_eot: bool = True):
        """``(prompt ids, answer ids, answer offsets)``: the whole text tokenised once, the
        answer being everything after the prompt's token count, EOS appended unless last.

        ``add_eot=False`` keeps only the tokens that start inside the answer's text (no
        closing tokens, no EOS).
        """
        text, start = self.full_text(prompt, continuation)
        enc = self._tokenise(text, offsets=True)
        ids = list(enc["input_ids"])
        spans = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
        eos = self.tokenizer.eos_token_id
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(int(eos))
            spans.append((len(text), len(text)))
        n_prompt = len(self.prompt_ids(prompt))
        cont, cont_spans = ids[n_prompt:], spans[n_prompt:]
        end = start + len(continuation)
        if not add_eot:
            keep = [i for i, (a, b) in enumerate(cont_spans) if a < end and b > a]
            cont = [cont[i] for i in keep]
            cont_spans = [cont_spans[i] for i in keep]
        n = len(continuation)
        offsets = [
            (min(max(a - start, 0), n), min(max(b - start, 0), n)) for a, b in cont_spans
        ]
        return ids[:n_prompt], cont, offsets

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=True
        )

    def reference_answer(self, prompt, answer: str) -> str:
        """open-unlearning's ROUGE reference: the decoded labels less the decoded prompt."""
        p, cont, _ = self.encode_pair(prompt, answer)
        # Their prompt text is decoded from the prompt's own tokens (the generation input),
        # which can end differently from the whole text's first len(p) tokens.
        head = self._decode(self.prompt_ids(prompt))
        return self._decode(p + cont).replace(head, "").strip()

    def finish_generation(self, token_ids: list[int], prompt) -> str:
        text = self._decode(token_ids)
        eos = self.tokenizer.eos_token_id
        stop = self.tokenizer.decode([eos]) if eos is not None else ""
        if stop and stop in text:
            text = text.split(stop)[0]
        return text.strip()


class OpenUnlearningChatFormat(_OpenUnlearningTokenising, ChatFormat):
    """:class:`ChatFormat` tokenised as open-unlearning does (``--compat open-unlearning``).

    The answer is the assistant message of the rendered conversation (the template then
    closes the turn itself); a ``Prompt.stem`` leads that message.
    """

    def full_text(self, prompt, continuation: str) -> tuple[str, int]:
        if isinstance(prompt, str):
            return prompt + continuation, len(prompt)
        _check_turns(prompt)
        msgs = self.messages(prompt) + [
            {"role": "assistant", "content": prompt.stem + continuation}
        ]
        text = self.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=False, tokenize=False, date_string=self.date_string
        )
        head = self.render(prompt)
        if text.startswith(head):
            return text, len(head)
        # A template that trims the message: find the answer after the generation prompt.
        at = text.find(continuation.strip(), len(head) - len(prompt.stem) - 1)
        return text, max(at, 0)


class OpenUnlearningPlainFormat(_OpenUnlearningTokenising, PlainFormat):
    """:class:`PlainFormat` tokenised as open-unlearning's non-chat path does: prompt and
    answer as one text with the tokenizer's special tokens (BOS), EOS appended."""

    _special = True

    def full_text(self, prompt, continuation: str) -> tuple[str, int]:
        head = prompt if isinstance(prompt, str) else self.render(prompt)
        return head + continuation, len(head)


def as_open_unlearning(fmt: PromptFormat) -> PromptFormat:
    """``fmt`` with the same rendering, tokenised as open-unlearning does."""
    if fmt.compat == "open-unlearning":
        return fmt
    if isinstance(fmt, ChatFormat):
        return OpenUnlearningChatFormat(
            fmt.tokenizer, system_prompt=fmt.system_prompt, date_string=fmt.date_string
        )
    if isinstance(fmt, PlainFormat):
        return OpenUnlearningPlainFormat(fmt.tokenizer)
    raise ValueError(f"No open-unlearning version of the prompt format {type(fmt).__name__}.")


def _check_turns(prompt: Prompt) -> None:
    if not prompt.turns or prompt.turns[-1][0] != "user":
        raise ValueError(
            f"A Prompt must end with a user turn; got turns={prompt.turns!r}. "
            "Put the text the answer starts with in Prompt.stem."
        )
    bad = [role for role, _ in prompt.turns if role not in ("user", "assistant")]
    if bad:
        raise ValueError(f"Prompt turn roles must be 'user' or 'assistant'; got {bad!r}.")


def _no_template_error(tokenizer) -> ModelLoadError:
    name = getattr(tokenizer, "name_or_path", "") or "this model"
    return ModelLoadError(
        f"The tokenizer of {name} has no chat template, so the chat prompt format cannot "
        "be rendered. Fix: pass --prompt-format plain (Question:/Answer: text) for a base "
        "model, or use a checkpoint whose tokenizer_config.json/chat_template.jinja has one."
    )


def make_format(
    tokenizer,
    kind: str = "chat",
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    date_string: str = DEFAULT_DATE_STRING,
    compat: str = "none",
) -> PromptFormat:
    """The prompt format a run asked for.

    ``compat="open-unlearning"`` gives the same rendering tokenised as open-unlearning
    tokenises it (:class:`OpenUnlearningChatFormat`, :class:`OpenUnlearningPlainFormat`).

    Chat is the default and never silently falls back to plain: numbers from the two
    formats are not comparable, so plain must be chosen explicitly.
    ``system_prompt`` and ``date_string`` only affect the chat format.

    Raises:
        ModelLoadError: ``chat`` on a tokenizer without a chat template.
        ValueError: an unknown ``kind``.
    """
    if compat not in ("none", "open-unlearning"):
        raise ValueError(f"--compat {compat!r} is not supported. Use none or open-unlearning.")
    ou = compat == "open-unlearning"
    if kind == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise _no_template_error(tokenizer)
        cls = OpenUnlearningChatFormat if ou else ChatFormat
        return cls(tokenizer, system_prompt=system_prompt, date_string=date_string)
    if kind == "plain":
        return OpenUnlearningPlainFormat(tokenizer) if ou else PlainFormat(tokenizer)
    raise ValueError(f"--prompt-format {kind!r} is not supported. Use chat or plain.")
