"""The small contract between views and the engine: what may be asked of a model.

Views build requests from items; the engine answers them (batched, cached); scorers
turn answers into per-item records and never see a model. A request is a plain frozen
value so it can be hashed into the on-disk cache key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class BackendUnavailable(RuntimeError):
    """The backend cannot answer this kind of request here (the mock has no hidden
    states; a backend without training support cannot fine-tune). The runner reports the
    view's numbers as :attr:`~unlearn_audit.views.Skip.BACKEND_UNAVAILABLE` skips."""


@dataclass(frozen=True)
class Prompt:
    """What the model is shown, independent of any chat template.

    Attributes:
        turns: the conversation as ``(role, text)`` pairs, ``role`` in ``user``/``assistant``,
            ending with a ``user`` turn. The system prompt is added by the model's prompt
            format (it is part of the model's configuration, not of the item).
        stem: text the assistant's answer starts with; the model continues from it
            (sentence completion). Empty for an ordinary question.
    """

    turns: tuple[tuple[str, str], ...]
    stem: str = ""

    @classmethod
    def question(cls, text: str, stem: str = "") -> Prompt:
        return cls(turns=(("user", text),), stem=stem)

    def shown_text(self) -> str:
        """Every piece of text the user side put in front of the model (for novel content)."""
        return "\n".join([t for _, t in self.turns] + ([self.stem] if self.stem else []))


@dataclass(frozen=True)
class ScoreRequest:
    """Teacher-forced scoring of ``continuation`` after ``prompt``.

    ``add_eot`` appends the model's end-of-turn token to the continuation, as TOFU and
    open-unlearning do on the chat path (the closing token counts in the mean loss).

    ``vocab_stats`` also asks, at every continuation position, for the mean and the
    standard deviation of ``log p`` over the whole vocabulary under the model's own
    next-token distribution, and for its most likely token (see :class:`TokenScores`).
    They come from the same forward pass as the log-probabilities, so membership attacks
    (Min-K%++) and memorisation metrics never ship full logits out of the engine. The
    field is left out of the cache key while it is ``False``, so plain requests keep the
    keys (and cached answers) they had before it existed.
    """

    prompt: Prompt
    continuation: str
    add_eot: bool = True
    vocab_stats: bool = field(default=False, metadata={"omit_from_key_when_default": True})


@dataclass(frozen=True)
class GenRequest:
    """Generation after ``prompt``. ``temperature == 0`` means greedy (then ``n`` must be 1)."""

    prompt: Prompt
    max_new_tokens: int = 200
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass
class TokenScores:
    """Per-token answer to a :class:`ScoreRequest`.

    Attributes:
        logprobs: ``log p(token_t | prompt, tokens_<t)`` for each continuation token, float64.
        token_ids: the continuation's token ids (the end-of-turn token last when added).
        offsets: character span ``(start, end)`` of each token in ``continuation``
            (the end-of-turn token gets ``(len, len)``), to map words to tokens.
        vocab_mean: only for ``ScoreRequest(vocab_stats=True)``: per continuation
            position, ``E_{z ~ p}[log p(z | prompt, tokens_<t)]`` over the vocabulary,
            float64; ``None`` otherwise.
        vocab_std: likewise ``sqrt(Var_{z ~ p}[log p(z | ...)])``, float64.
        top_ids: likewise the model's most likely next token (argmax of the logits) at
            each position, to compare with ``token_ids`` (exact memorisation).
        truncated_from: when prompt + continuation exceeded the model's context, the
            continuation's full token count; only the first ``n_tokens`` were scored (TOFU
            and open-unlearning truncate the same way). ``None`` when nothing was cut.
    """

    logprobs: np.ndarray
    token_ids: list[int]
    offsets: list[tuple[int, int]] = field(default_factory=list)
    vocab_mean: np.ndarray | None = None
    vocab_std: np.ndarray | None = None
    top_ids: list[int] | None = None
    truncated_from: int | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def total(self) -> float:
        return float(np.sum(self.logprobs))

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood per token (TOFU's ``avg_gt_loss``)."""
        return float(-np.mean(self.logprobs)) if len(self.logprobs) else float("nan")
