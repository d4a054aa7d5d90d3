"""The one record type every view consumes: a TOFU-format QA item."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Item:
    """One QA pair in TOFU's schema, plus the bookkeeping the audit needs.

    Attributes:
        split: the split it was read from (``forget10``, ``retain_perturbed``, ...).
        index: position in that split (stable id for per-item records).
        question / answer: TOFU's ``question`` and ``answer``.
        paraphrased_question / paraphrased_answer: TOFU's paraphrases; ``None`` on
            splits that have none (``real_authors``, ``world_facts``).
        perturbed_answer: TOFU's wrong answers (5 on forget/retain, 3 elsewhere).
        author: who the item is about. The tiny world records it; for real TOFU it is
            derived from TOFU's fixed layout of 20 consecutive items per author.
        family: the kind of fact (``birthplace``, ``genre``, ...), see ``families``.
        key_fact: the attribute value the answer states. Only the tiny world has it,
            and only the world's own checks may read it, never a view.
    """

    split: str
    index: int
    question: str
    answer: str
    paraphrased_question: str | None = None
    paraphrased_answer: str | None = None
    perturbed_answer: tuple[str, ...] = field(default_factory=tuple)
    author: str | None = None
    family: str | None = None
    key_fact: str | None = None

    @property
    def uid(self) -> str:
        return f"{self.split}:{self.index}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["perturbed_answer"] = list(self.perturbed_answer)
        return d
