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


#: :attr:`NotGenerated.not_generated` of a prompt that leaves no room in the model's context.
PROMPT_TOO_LONG = "prompt_too_long"


class NotGenerated(str):
    """An answer the backend did not generate: an empty string that says why.

    :meth:`Backend.generate` returns it for a prompt that does not fit the model's context
    with at least one new token (``not_generated == PROMPT_TOO_LONG``). It is a ``str``
    so every caller keeps working, but it is not the model's answer: the leak scorer
    excludes it (``scoring.novel.score_generation``) instead of counting "did not leak",
    and the engine counts it for the report (``AuditContext.engine_notes``). The marker
    lives in memory only; a record written to JSON keeps it as its own field.
    """

    not_generated: str

    def __new__(cls, reason: str = PROMPT_TOO_LONG) -> NotGenerated:
        obj = super().__new__(cls, "")
        obj.not_generated = reason
        return obj

    def __getnewargs__(self) -> tuple[str]:  # pickle/copy keep the reason, not the ""
        return (self.not_generated,)

    def __repr__(self) -> str:
        return f"NotGenerated({self.not_generated!r})"


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


# --- fine-tuned copies (the retrain-to-test view) ---------------------------------------------


@dataclass(frozen=True)
class FinetuneRequest:
    """A short seeded fine-tune of a *copy* of the model (:meth:`Engine.finetuned`).

    The loop is :func:`unlearn_audit.model.finetune`: AdamW, loss on the answer tokens and
    the end-of-turn token only, tokenised by the engine's own prompt format.

    Attributes:
        examples: ``(prompt, answer)`` pairs to train on.
        epochs: passes over ``examples``.
        lr: AdamW learning rate.
        batch_size: examples per optimiser step.
        lora: LoRA (r=8, all linear layers, merged afterwards) instead of a full fine-tune.
        seed: seeds LoRA initialisation and the example order.
        purpose: names the copy (its label is ``<label>+<purpose>``) and enters its
            fingerprint.
        tag: plain strings that set this copy apart from others of the same budget (the
            retrain-to-test view's half-A authors); they enter the fingerprint.
    """

    examples: tuple[tuple[Prompt, str], ...]
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 4
    lora: bool = False
    seed: int = 0
    purpose: str = "finetune"
    tag: tuple[str, ...] = ()

    def budget(self) -> dict:
        """The training budget as a plain dict (the keys in this order enter the fingerprint)."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "lora": self.lora, "seed": self.seed}

    def fingerprint(self, parent: str) -> str:
        """The copy's fingerprint: never the parent's, and the same for the same request.

        ``sha256(json([parent, purpose, budget, tag]))``; the examples do not enter it
        (they follow from the purpose and tag).
        """
        import hashlib
        import json

        return hashlib.sha256(
            json.dumps([parent, self.purpose, self.budget(), list(self.tag)]).encode()
        ).hexdigest()


# --- probes on hidden states (the masked_probe view) ------------------------------------------

#: The probe kinds :class:`ProbeFit` accepts.
PROBE_KINDS = ("lstsq", "tuned", "restricted")


@dataclass(frozen=True)
class ProbeFit:
    """How a per-layer probe is fit (see :mod:`unlearn_audit.model._lens`).

    Attributes:
        kind: ``lstsq`` (closed-form ridge translator read out through the model's head),
            ``tuned`` (the same affine translator fit by Adam on cross-entropy) or
            ``restricted`` (logistic regression over the token ids seen in training).
        ridge: ``lstsq`` only: ridge penalty relative to the mean diagonal of the Gram matrix.
        steps: Adam steps per layer (``tuned``, ``restricted``).
        lr: Adam learning rate.
        weight_decay: L2 penalty on the probe's parameters.
        batch_tokens: minibatch size (capped so a minibatch's logits stay near 1 GiB).
    """

    kind: str = "lstsq"
    # Strong enough to keep the translator near the logit lens when the retain set holds
    # far fewer tokens than the translator has entries (the tiny world: 1.1k vs 16k).
    ridge: float = 0.1
    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_tokens: int = 4096


@dataclass(frozen=True, eq=False)
class ProbeRequest:
    """Fit one probe per layer on training states and predict with it (:meth:`Engine.fit_probes`).

    Attributes:
        fit: how each probe is fit.
        layers: indices into the ``n_layers + 1`` hidden states, one per row of ``x_train``
            and ``x_eval``; the last index (``n_layers``) is read as already normed.
        x_train: ``(len(layers), N, d)`` training states, as :meth:`Engine.hidden_states` gives.
        y_train: ``(N,)`` the token each training state predicts.
        x_eval: ``(len(layers), M, d)`` states to predict.
        seed: layer ``l``'s probe is seeded ``seed + l`` (the Adam kinds' minibatch order).
        prototypes: ``lstsq`` only: ``(N, d)`` each training row's regression target (the
            masked_probe view's ``next_token_prototypes``).
    """

    fit: ProbeFit
    layers: tuple[int, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    seed: int = 0
    prototypes: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class ProbeAnswer:
    """Top-1 token ids of each layer's fitted probe, in the order of ``ProbeRequest.layers``.

    Attributes:
        train_top1: per layer, ``(N,)`` predictions on the training states.
        eval_top1: per layer, ``(M,)`` predictions on the evaluation states.
    """

    train_top1: tuple[np.ndarray, ...]
    eval_top1: tuple[np.ndarray, ...]
