"""The sanity check every model passes before any view measures it.

A model that says nothing leaks nothing: a checkpoint whose weights are NaN answers "" to
every prompt, and a random-weight model answers runs of newlines, so every leak gate
would PASS them. The check asks what a release decision silently assumes:

1. every floating-point weight is finite;
2. the log-probabilities of a few known answers are finite (non-finite logits);
3. the model answers at all: greedy answers to a few retain questions (items every
   model under audit should be able to answer, as TOFU's retain set is by definition
   kept) are not empty, whitespace-only or one token repeated.

It runs through the engine with the exact requests the TOFU view makes for the same
retain items (``ScoreRequest(question, answer)`` and a greedy ``GenRequest`` of
``max_new_tokens``), so on a full audit it costs nothing beyond the disk cache.
:class:`~unlearn_audit.context.AuditContext` runs it once per model per session,
before the first view gets the model's engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unlearn_audit.model._types import GenRequest, Prompt, ScoreRequest

if TYPE_CHECKING:
    from unlearn_audit.data import Item
    from unlearn_audit.model._engine import Engine

__all__ = ["PROBE_ITEMS", "SanityResult", "degenerate_kind", "sanity_check"]

#: Retain items asked; few, so a real checkpoint pays a handful of generations.
PROBE_ITEMS = 4
#: A repeated token or word counts as degenerate from this many repeats on.
_MIN_REPEATS = 4


@dataclass
class SanityResult:
    """What the check found.

    Attributes:
        problems: one phrase per failed condition (empty when the model is fit to audit).
        answers: the probe answers, for the message and for tests.
    """

    problems: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def degenerate_kind(text: str, tokenizer=None) -> str | None:
    """Why an answer is no answer, or ``None`` when it is one.

    ``"empty"``: nothing but whitespace. ``"one token repeated"``: the same token (or the
    same word) at least four times and nothing else, e.g. ``"the the the the"`` or
    ``"!!!!!!!!"``.
    """
    stripped = text.strip()
    if not stripped:
        return "empty"
    words = stripped.split()
    if len(words) >= _MIN_REPEATS and len(set(words)) == 1:
        return "one token repeated"
    if tokenizer is not None:
        ids = tokenizer.encode(stripped, add_special_tokens=False)
        if len(ids) >= _MIN_REPEATS and len(set(ids)) == 1:
            return "one token repeated"
    elif len(stripped) >= _MIN_REPEATS and len(set(stripped)) == 1:
        return "one token repeated"
    return None


def _non_finite_weights(model) -> tuple[int, int, list[str]]:
    """(bad tensors, floating-point tensors, first bad names) over parameters and buffers."""
    import torch

    bad, total, names = 0, 0, []
    with torch.no_grad():
        tensors = list(model.named_parameters()) + list(model.named_buffers())
        for name, t in tensors:
            if not t.is_floating_point():  # quantized int8/4-bit storage: nothing to check
                continue
            total += 1
            if not bool(torch.isfinite(t).all()):
                bad += 1
                if len(names) < 3:
                    names.append(name)
    return bad, total, names


def sanity_check(engine: Engine, items: Sequence[Item], max_new_tokens: int) -> SanityResult:
    """Check that ``engine``'s model is fit to be audited (module docstring).

    Args:
        engine: the model's engine (its disk cache answers repeated probes).
        items: the probe items, normally the first :data:`PROBE_ITEMS` retain items.
        max_new_tokens: the run's generation length, so the probes are the TOFU view's
            own requests.

    Returns:
        The problems found, worded to follow "the model ..." in an error message.
    """
    result = SanityResult()
    loaded = getattr(engine, "loaded", None)  # a backend without torch weights has none to check
    bad, total, names = _non_finite_weights(loaded.model) if loaded is not None else (0, 0, [])
    if bad:
        result.problems.append(
            f"has non-finite weights (NaN or inf in {bad} of {total} tensors, e.g. {', '.join(names)})"
        )
    if not items:
        return result
    prompts = [Prompt.question(it.question) for it in items]
    scores = engine.score([ScoreRequest(p, it.answer, add_eot=True) for p, it in zip(prompts, items, strict=True)])
    non_finite = sum(1 for s in scores if not all(math.isfinite(float(x)) for x in s.logprobs))
    if non_finite:
        result.problems.append(
            f"gives non-finite log-probabilities (NaN or inf logits) on {non_finite} of "
            f"{len(items)} retain answers"
        )
    outs = engine.generate([GenRequest(p, max_new_tokens=max_new_tokens) for p in prompts])
    result.answers = [o[0] for o in outs]
    # A prompt the engine could not run (no room left in the context) is no answer either,
    # but say so: "empty" would blame the model's weights for its context length.
    kinds = ["prompt longer than the context" if getattr(a, "not_generated", None)
             else degenerate_kind(a, getattr(loaded, "tokenizer", None)) for a in result.answers]
    degenerate = [k for k in kinds if k is not None]
    # More than half: one odd answer is a model's right; most answers missing is a broken model.
    if 2 * len(degenerate) > len(kinds):
        what = ", ".join(f"{n} {k}" for k, n in sorted(
            {k: degenerate.count(k) for k in degenerate}.items()))
        result.problems.append(
            f"does not answer: {len(degenerate)} of {len(kinds)} greedy answers to retain "
            f"questions (which every audited model should answer) are degenerate ({what}; "
            f"first answer {result.answers[0][:40]!r})"
        )
    return result
