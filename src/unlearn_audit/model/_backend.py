"""The backend contract: everything a view may ask of a model, and nothing more.

A view sees a model only through this :class:`Backend` (what ``AuditContext.engine(label)``
returns), so no module under ``views/`` imports torch, transformers or any other model
library (``tests/test_imports.py`` checks it). Every request and every answer is a plain
value type from :mod:`unlearn_audit.model._types` (numbers, strings, numpy arrays), so a
backend other than the Hugging Face :class:`~unlearn_audit.model.Engine` (a remote server,
another runtime) can answer the same views by implementing these members.

The Hugging Face engine implements it; ``isinstance(engine, Backend)`` holds (the check
is structural: every member must be present).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from unlearn_audit.model._format import PromptFormat
from unlearn_audit.model._types import (
    FinetuneRequest,
    GenRequest,
    ProbeAnswer,
    ProbeRequest,
    ScoreRequest,
    TokenScores,
)

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """What may be asked of a model under audit.

    Attributes:
        fmt: how prompts become tokens (chat template or plain); views tokenise answers
            with it (``encode_pair``) so positions line up with :meth:`score` and
            :meth:`hidden_states`.
        tokenizer: the model's tokenizer, for the one thing views need beyond ``fmt``:
            turning a token id back into text (``tokenizer.decode([id])``). Nothing else
            of it is part of the contract.
        fingerprint: names the weights exactly (the on-disk cache key).
        tokenizer_hash: names the tokenizer exactly (vocabulary, merges, normalisation,
            special tokens, chat template); two models whose hashes differ do not split
            text into the same tokens, so token-level numbers compared across them (truth
            ratios, log-likelihoods) are not like for like. The runner warns on it.
        prompts_too_long: request key -> prompt tokens, for each generation request whose
            prompt did not fit the model's context (answered ``NotGenerated``).
        n_layers: transformer blocks; :meth:`hidden_states` has ``n_layers + 1`` states.
        hidden_size: width of a hidden state; ``None`` when the model does not state it.
        n_params: parameter count (the retrain-to-test view picks LoRA by it).
        kernel_path: which arithmetic a quantized copy (:meth:`quantized`) computes with,
            e.g. ``cpu-dequantize`` or ``cuda-bitsandbytes``; ``None`` for a model at full
            precision. Views record it next to the numbers it produced.
    """

    fmt: PromptFormat
    tokenizer: Any
    prompts_too_long: dict[str, int]

    @property
    def fingerprint(self) -> str: ...

    @property
    def tokenizer_hash(self) -> str: ...

    @property
    def n_layers(self) -> int: ...

    @property
    def hidden_size(self) -> int | None: ...

    @property
    def n_params(self) -> int: ...

    @property
    def kernel_path(self) -> str | None: ...

    # --- asking the model ---------------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenScores]:
        """Teacher-forced log-probabilities of each continuation, one answer per request."""
        ...

    def generate(self, requests: Sequence[GenRequest]) -> list[list[str]]:
        """``n`` answers per request: greedy at temperature 0, else sampled, each sample
        seeded from ``(request.seed, index)`` alone. A prompt that does not fit the
        model's context with one new token is not run: its answers are
        :class:`~unlearn_audit.model._types.NotGenerated` (empty, marked), and the backend
        counts it in ``prompts_too_long`` (request key -> prompt tokens) for the report."""
        ...

    def hidden_states(
        self, requests: Sequence[ScoreRequest], layers: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Per request, float32 ``(n_kept_layers, n_continuation_tokens, d)``: the state at
        each position that predicts a continuation token (index ``n_layers`` after the
        final norm)."""
        ...

    def lm_head_logits(self, h: np.ndarray, layer: int | None = None) -> np.ndarray:
        """Logit lens: final norm (below the last layer) and output head of states ``h``."""
        ...

    def fit_probes(self, request: ProbeRequest) -> ProbeAnswer:
        """Fit one probe per layer on hidden states; their top-1 predictions."""
        ...

    # --- other copies of the model --------------------------------------------------------------
    def finetuned(self, request: FinetuneRequest, *, cache: bool = False) -> Backend:
        """A backend for a fine-tuned copy (never this model's weights or cache entries)."""
        ...

    def quantized(self, mode: str, *, cache: bool = True) -> Backend:
        """A backend for the checkpoint loaded again in ``mode`` (``int8``, ``nf4``).

        Raises:
            QuantizationUnavailable: the mode cannot run on this machine.
        """
        ...

    def release_memory(self) -> None:
        """Free what dropped copies and large steps left behind (accelerator caches)."""
        ...
