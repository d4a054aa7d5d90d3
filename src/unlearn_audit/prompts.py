"""Named prompt builders: the ways the audit asks about an item.

Each builder is a pure function of the item's text (never of the tiny world's key fact),
so it applies to real TOFU as well. The tiny world's training uses the same builders,
so its models have seen each format at all (a tiny model cannot generalise to a format
it never saw; a real instruct model can).

The "novel span" of an answer is the stretch from its first to its last word whose content
word does not occur in the question. It is what fill-in-the-blank hides and what sentence
completion leaves for the model to say.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from unlearn_audit.data import Item
from unlearn_audit.model._types import Prompt

BLANK = "____"


@dataclass(frozen=True)
class Asked:
    """A prompt and what a model that knows the fact would answer (the training target,
    and the gold for scoring). ``choice`` holds the correct option for choice formats."""

    format: str
    prompt: Prompt
    target: str
    choice: str | None = None
    n_options: int | None = None


def _novel_mask(answer: str, shown: str) -> list[tuple[str, bool]]:
    from unlearn_audit.scoring.novel import content_words

    seen = set(content_words(shown))
    out = []
    for tok in answer.split():
        words = content_words(tok)
        out.append((tok, any(w not in seen for w in words)))
    return out


def novel_span(question: str, answer: str) -> tuple[str, str, str]:
    """Split ``answer`` into (before, span, after) around its novel span w.r.t. ``question``.

    If no word is novel, the span is the whole answer (nothing to hide would make the
    format meaningless; such items are excluded by the leak scorer anyway).
    """
    toks = _novel_mask(answer, question)
    idx = [i for i, (_, novel) in enumerate(toks) if novel]
    if not idx:
        return "", answer, ""
    first, last = idx[0], idx[-1]
    words = [t for t, _ in toks]
    span = " ".join(words[first: last + 1])
    # Keep trailing sentence punctuation outside the blank.
    m = re.match(r"^(.*?)([.!?]*)$", span, flags=re.S)
    span, punct = m.group(1), m.group(2)
    return " ".join(words[:first]), span, (punct + " " + " ".join(words[last + 1:])).strip()


def direct(item: Item) -> Asked:
    """The canonical TOFU question."""
    return Asked("direct", Prompt.question(item.question), item.answer)


def paraphrased(item: Item) -> Asked:
    """TOFU's paraphrased question, answered by the paraphrased answer."""
    return Asked("paraphrased", Prompt.question(item.paraphrased_question or item.question),
                 item.paraphrased_answer or item.answer)


def fill_blank(item: Item) -> Asked:
    """The answer sentence with its novel span blanked; the model must supply the span."""
    before, span, after = novel_span(item.question, item.answer)
    masked = " ".join(x for x in (before, BLANK + (after[:1] if after[:1] in ".!?" else ""),
                                  after[1:].strip() if after[:1] in ".!?" else after) if x)
    return Asked("fill_blank", Prompt.question(f"Fill in the blank: {masked}"), span)


def completion(item: Item) -> Asked:
    """Sentence completion: the assistant's answer is pre-filled with the answer's own stem
    (everything before the novel span) and the model continues it. The stem carries no
    trailing space; the continuation starts with one, as ordinary tokenization has it."""
    before, span, after = novel_span(item.question, item.answer)
    rest = span + after if after[:1] in ".!?" else (span + " " + after).strip()
    if not before:
        return Asked("completion", Prompt(turns=(("user", "Complete the sentence:"),)), rest)
    return Asked("completion", Prompt(turns=(("user", f"Complete the sentence: {before}"),), stem=before),
                 " " + rest)


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def multiple_choice(item: Item, seed: int = 0) -> Asked:
    """Gold answer among the perturbed answers, shuffled (seeded by item), answer by letter."""
    options = [item.answer, *item.perturbed_answer]
    order = list(range(len(options)))
    random.Random(f"{seed}:{item.uid}:mc").shuffle(order)
    letters = _letters(len(options))
    lines = [f"{letters[j]}. {options[i]}" for j, i in enumerate(order)]
    gold = letters[order.index(0)]
    text = f"{item.question}\n" + "\n".join(lines) + "\nAnswer with the letter of the correct option."
    return Asked("multiple_choice", Prompt.question(text), gold, choice=gold, n_options=len(options))


def true_false(item: Item, seed: int = 0) -> Asked:
    """A statement that is either the gold answer or one perturbed answer (seeded coin)."""
    rng = random.Random(f"{seed}:{item.uid}:tf")
    use_gold = not item.perturbed_answer or rng.random() < 0.5
    statement = item.answer if use_gold else rng.choice(item.perturbed_answer)
    truth = "True" if use_gold else "False"
    text = f"True or false: {statement}\nAnswer True or False."
    return Asked("true_false", Prompt.question(text), truth, choice=truth, n_options=2)


def biography(author_name: str) -> Prompt:
    """A request for a short biography of the author (one prompt per author)."""
    return Prompt.question(f"Write a short biography of {author_name}.")


def json_answer(item: Item) -> Asked:
    """The canonical question with the answer demanded as a JSON object."""
    text = f'{item.question} Reply only with JSON of the form {{"answer": "..."}}.'
    return Asked("json", Prompt.question(text), json.dumps({"answer": item.answer}))


def unwrap_json(generation: str) -> str:
    """The ``answer`` field of a JSON reply, or the raw text when it is not such JSON."""
    m = re.search(r"\{.*\}", generation, flags=re.S)
    if m:
        try:
            val = json.loads(m.group(0))
            if isinstance(val, dict) and isinstance(val.get("answer"), str):
                return val["answer"]
        except json.JSONDecodeError:
            pass
    return generation


_NAME = re.compile(r"\b([A-Z][\w'-]+(?:\s+[A-Z][\w'-]+){1,3})")


def author_display_name(items: Sequence[Item]) -> str:
    """The author's name as the questions write it.

    The tiny world records names; real TOFU only has item positions, so the name is the
    capitalised 2-4 word phrase that recurs most across the author's questions and answers
    (TOFU's questions name their author in all but the full-name question).
    """
    author = items[0].author or ""
    if author and not author.startswith("tofu_author_"):
        return author
    counts: Counter[str] = Counter()
    for it in items:
        for text in (it.question, it.answer):
            for m in _NAME.finditer(text.replace("'s ", " ")):
                phrase = m.group(1)
                if phrase.split()[0] not in {"The", "What", "Who", "How", "Which", "Where", "When", "In", "Can"}:
                    counts[phrase] += 1
    return counts.most_common(1)[0][0] if counts else "this author"


def biography_text(items: Sequence[Item]) -> str:
    """A reference biography: the author's answers joined (the world's training target)."""
    return " ".join(it.answer for it in items)


FORMATS = ("direct", "paraphrased", "fill_blank", "completion", "multiple_choice", "true_false", "json")
BUILDERS = {
    "direct": direct, "paraphrased": paraphrased, "fill_blank": fill_blank, "completion": completion,
    "multiple_choice": multiple_choice, "true_false": true_false, "json": json_answer,
}
# The formats whose prompt depends on a seed (the options' order, the claim shown).
SEEDED_FORMATS = ("multiple_choice", "true_false")


def ask(fmt: str, item: Item, seed: int = 0) -> Asked:
    """``item`` asked in format ``fmt``; ``seed`` matters only for :data:`SEEDED_FORMATS`."""
    return BUILDERS[fmt](item, seed=seed) if fmt in SEEDED_FORMATS else BUILDERS[fmt](item)
