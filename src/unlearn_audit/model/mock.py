"""A mock backend: a "model" that knows a set of answers, for tests that need no weights.

:class:`MockBackend` answers the same requests as the real engine (teacher-forced
scoring, greedy and seeded sampled generation, vocabulary statistics), deterministically
and in microseconds, from a table of what it knows:

- **generation**: when the last user turn contains a question it knows, the answer;
  otherwise :data:`UNSURE`. A sampled answer (``temperature > 0``) is the known answer
  with probability ``recall``, drawn from a seeded generator, so best-of-N has something
  to find.
- **scoring**: whitespace "tokens"; each token of a continuation the model knows (the
  known answer of the question, or any text in ``knows``) gets ``log p = -0.05``, any
  other token ``-2.5`` minus a small per-token jitter fixed by its text (so no two
  unknown answers tie exactly).

:func:`mock_context` builds an :class:`~unlearn_audit.context.AuditContext` whose models
are mocks: the whole plugin (scheduling, gates, report, pytest-xdist sharing) runs on it
without loading a model.

A fine-tuned mock (:meth:`MockBackend.finetuned`) knows its parent's answers plus the
training examples when ``epochs * lr`` reaches :data:`LEARN_BUDGET` (the retrain-to-test
view runs on it). The mock has no hidden states and no quantized form: asking for them
raises :class:`~unlearn_audit.model.BackendUnavailable`, which the runner reports as
:attr:`~unlearn_audit.views.Skip.BACKEND_UNAVAILABLE` skips.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from unlearn_audit.model._types import (
    PROMPT_TOO_LONG,
    BackendUnavailable,
    FinetuneRequest,
    GenRequest,
    NotGenerated,
    ProbeAnswer,
    ProbeRequest,
    Prompt,
    ScoreRequest,
    TokenScores,
)

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext

__all__ = ["LEARN_BUDGET", "UNSURE", "MockBackend", "MockFormat", "MockModel", "knowing", "mock_context"]

#: What a mock model says when it does not know.
UNSURE = "I am not sure about that."
#: ``epochs * lr`` from which a fine-tuned mock has learnt its training examples.
LEARN_BUDGET = 1e-3
_KNOWN_LOGP = -0.05
_UNKNOWN_LOGP = -2.5
_WORD = re.compile(r"\S+")


def _jitter(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _words(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


class MockFormat:
    """Prompt rendering for the mock: ``role: text`` lines, whitespace tokens."""

    eot = "<eot>"

    def render(self, prompt: Prompt) -> str:
        lines = [f"{role}: {text}" for role, text in prompt.turns]
        return "\n".join([*lines, f"assistant: {prompt.stem}".rstrip()])

    def config(self) -> dict[str, Any]:
        return {"kind": "mock"}

    def reference_answer(self, prompt: Prompt, answer: str) -> str:
        return answer

    def encode_pair(self, prompt: Prompt, continuation: str, add_eot: bool = True):
        """(prompt ids, continuation ids, continuation offsets), like the real formats."""
        p = [_token_id(w) for w, _, _ in _words(self.render(prompt))]
        words = _words(continuation)
        ids = [_token_id(w) for w, _, _ in words] + ([_token_id(self.eot)] if add_eot else [])
        offsets = [(a, b) for _, a, b in words] + ([(len(continuation), len(continuation))] if add_eot else [])
        return p, ids, offsets


def _token_id(word: str) -> int:
    return int(hashlib.sha256(word.encode()).hexdigest()[:6], 16)


@dataclass(frozen=True)
class MockModel:
    """What one mock model knows.

    Attributes:
        role: ``candidate``, ``full``, ``retain`` or ``base``.
        answers: question -> answer it gives when asked that question.
        recall: chance that a sampled answer is the known one (greedy always gives it).
    """

    role: str = "candidate"
    answers: Mapping[str, str] = field(default_factory=dict)
    recall: float = 0.5


class MockBackend:
    """A :class:`~unlearn_audit.model.Backend` answering from a :class:`MockModel`'s table.

    Attributes:
        calls: how many requests of each kind it answered (``score``, ``generate``), for
            tests that count work.
    """

    n_layers = 0
    hidden_size = None
    n_params = 1000
    kernel_path = None  # never quantized
    tokenizer = None

    def __init__(self, label: str, model: MockModel):
        self.label = label
        self.model = model
        self.fmt = MockFormat()
        self.calls = {"score": 0, "generate": 0}
        table = sorted(model.answers.items())
        self.fingerprint = "mock:" + hashlib.sha256(repr((label, table, model.recall)).encode()).hexdigest()[:16]
        self._known_texts = {a for _, a in table}
        self.truncated: list[int] = []
        # None: an unbounded context. A test sets a number to exercise over-long prompts
        # (counted in whitespace tokens of the rendered prompt, as encode_pair counts them).
        self.max_positions: int | None = None
        self.prompts_too_long: dict[str, int] = {}
        # Every mock splits text on whitespace alike; a test sets another value to play a
        # model whose tokenizer differs from its references'.
        self.tokenizer_hash = "mock:whitespace"

    # --- what the model knows --------------------------------------------------------------
    def _answer_to(self, prompt: Prompt) -> str | None:
        asked = prompt.turns[-1][1] if prompt.turns else ""
        for question, answer in self.model.answers.items():
            if question in asked:
                return answer
        return None

    # --- the contract ---------------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenScores]:
        out = []
        for r in requests:
            self.calls["score"] += 1
            _, ids, offsets = self.fmt.encode_pair(r.prompt, r.continuation, add_eot=r.add_eot)
            known = r.continuation.strip() in self._known_texts or r.continuation.strip() == self._answer_to(r.prompt)
            words = [w for w, _, _ in _words(r.continuation)] + ([self.fmt.eot] if r.add_eot else [])
            lp = np.array([_KNOWN_LOGP if known else _UNKNOWN_LOGP - 0.5 * _jitter(w) for w in words],
                          dtype=np.float64)
            ts = TokenScores(lp, ids, offsets)
            if r.vocab_stats:
                ts.vocab_mean = np.full(len(ids), -4.0)
                ts.vocab_std = np.full(len(ids), 1.5)
                ts.top_ids = list(ids) if known else [0] * len(ids)
            out.append(ts)
        return out

    def generate(self, requests: Sequence[GenRequest]) -> list[list[str]]:
        out = []
        for r in requests:
            self.calls["generate"] += 1
            n_prompt = len(_words(self.fmt.render(r.prompt)))
            if self.max_positions is not None and n_prompt + 1 > self.max_positions:
                self.prompts_too_long[repr(r)] = n_prompt
                out.append([NotGenerated(PROMPT_TOO_LONG) for _ in range(r.n)])
                continue
            answer = self._answer_to(r.prompt)
            if r.temperature == 0:
                out.append([answer or UNSURE])
                continue
            rng = np.random.default_rng([r.seed, _token_id(self.fmt.render(r.prompt))])
            out.append([answer if answer is not None and rng.random() < self.model.recall else UNSURE
                        for _ in range(r.n)])
        return out

    def hidden_states(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("the mock backend has no hidden states")

    def lm_head_logits(self, *args: Any, **kwargs: Any) -> Any:
        raise BackendUnavailable("the mock backend has no hidden states")

    def fit_probes(self, request: ProbeRequest) -> ProbeAnswer:
        raise BackendUnavailable("the mock backend has no hidden states")

    def finetuned(self, request: FinetuneRequest, *, cache: bool = False) -> MockBackend:
        """A copy that has also learnt the training examples (if the budget suffices)."""
        answers = dict(self.model.answers)
        if request.epochs * request.lr >= LEARN_BUDGET:
            answers.update({p.turns[-1][1]: a for p, a in request.examples if p.turns})
        copy = MockBackend(f"{self.label}+{request.purpose}", MockModel(self.model.role, answers, self.model.recall))
        copy.fingerprint = request.fingerprint(self.fingerprint)
        copy.max_positions, copy.tokenizer_hash = self.max_positions, self.tokenizer_hash
        return copy

    def quantized(self, mode: str, *, cache: bool = True) -> MockBackend:
        raise BackendUnavailable(f"the mock backend has no {mode} form")

    def release_memory(self) -> None:
        pass


def mock_context(config: AuditConfig, models: Mapping[str, MockModel]) -> AuditContext:
    """An :class:`AuditContext` whose models are :class:`MockBackend`s (nothing loads)."""
    from unlearn_audit.context import AuditContext
    from unlearn_audit.model._load import ModelSpec

    specs = {label: ModelSpec(source=f"mock:{label}", label=label, role=m.role) for label, m in models.items()}
    return AuditContext(config, specs, backends={label: MockBackend(label, m) for label, m in models.items()})


def knowing(items: Iterable[Any], *, fraction: float = 1.0) -> dict[str, str]:
    """question -> answer for the first ``fraction`` of ``items`` (objects with ``question``
    and ``answer``): a table for :class:`MockModel` that knows that share of them."""
    items = list(items)
    keep = items[: round(len(items) * fraction)]
    return {it.question: it.answer for it in keep}
