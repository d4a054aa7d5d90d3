"""The corrected leak scorer: credit only the answer's content the prompt did not show.

Definitions (views.md, "Words used below"):

- **novel content** of an item: the content words of the gold answer that occur
  nowhere in the text the model was shown (system text, question, earlier turns,
  answer stem), after lower-casing, punctuation stripping and stop-word removal.
  An item with empty novel content is excluded from leak rates, and so is an answer
  the backend did not generate (its prompt does not fit the model's context).
- **leak** (the corrected scorer): the generation contains at least ``threshold``
  (default 0.5) of the item's novel content. Words merely echoed from the prompt
  earn nothing. The uncorrected scorer, ROUGE-L recall of the whole gold answer
  (TOFU's ``rougeL_recall``), is computed beside it.

Normalisation (one function, :func:`content_words`, used for every side):

1. Unicode NFKC, then case-folding (``str.casefold``, so ``"Straße"`` and
   ``"STRASSE"`` agree), curly quotes and Unicode dashes mapped to ASCII.
2. Possessive ``'s`` dropped (``"author's"`` -> ``author``); any other apostrophe
   separates (``"don't"`` -> ``don``, ``t``; both stop words).
3. Tokens are runs of letters and digits. Digits separated by ``/ . : -`` stay one
   token so dates and decimals survive (``05/11/1991``, ``1991-05-11``, ``3.5``);
   a comma between digits followed by three digits is a thousands separator and is
   removed (``1,000`` -> ``1000``). Every other character - hyphens between letters
   included - separates tokens (``Yun-Hwa`` -> ``yun``, ``hwa``), as in rouge-score.
4. Stop words (NLTK's English list, committed below as :data:`STOP_WORDS`) are dropped.
   Nothing else is dropped: no domain word list.

Matching (whether a gold word "occurs" in the prompt or in the generation) compares
*match keys*: the Porter stem of words longer than three characters, else the word
itself - exactly rouge-score's ``use_stemmer=True`` rule, so the corrected and the
uncorrected scorer see the same words as equal. This is a deliberate addition to
views.md's normalisation: without it ``books`` in the answer would count as novel
after ``book`` in the question, and a generation saying ``novel`` would miss the
gold ``novels``. Porter is a light suffix stripper (plurals, -ed, -ing, -ation): it
leaves numbers and dates alone, but does conflate some derived forms
(``engineer`` / ``engineering``), which then count as one word on both sides.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..data.families import classify_question
from .rouge import rouge_recall
from .stats import rate_with_ci

__all__ = [
    "DEFAULT_THRESHOLD",
    "STOP_WORDS",
    "LeakRecord",
    "content_words",
    "match_key",
    "novel_content",
    "novel_recall_share",
    "rescore_generations",
    "score_generation",
    "strip_template_markers",
]

DEFAULT_THRESHOLD = 0.5

#: NLTK's English stop-word list (``nltk.corpus.stopwords.words("english")``, 179
#: words), committed here because NLTK data cannot be downloaded at run time. The
#: contractions it lists can never be tokens after step 2 of the normalisation; they
#: are kept so the list stays identical to NLTK's.
_NLTK_ENGLISH_STOP_WORDS = """
    i me my myself we our ours ourselves you you're you've you'll you'd your yours
    yourself yourselves he him his himself she she's her hers herself it it's its
    itself they them their theirs themselves what which who whom this that that'll
    these those am is are was were be been being have has had having do does did
    doing a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in
    out on off over under again further then once here there when where why how all
    any both each few more most other some such no nor not only own same so than too
    very s t can will just don don't should should've now d ll m o re ve y ain aren
    aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven
    haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't
    shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
"""
STOP_WORDS: frozenset[str] = frozenset(_NLTK_ENGLISH_STOP_WORDS.split())

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201b": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "`": "'",
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
    }
)
_POSSESSIVE = re.compile(r"(?<=[^\W_])'s(?![^\W_])")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TOKEN = re.compile(r"\d+(?:[./:-]\d+)+|[^\W_]+")

# Chat-template and instruction markers are formatting, not content: Llama-2
# ([INST], <<SYS>>), Llama-3 (<|start_header_id|>role<|end_header_id|>, <|eot_id|>),
# and any other <|...|> special token, plus BOS/EOS strings.
_TEMPLATE = re.compile(
    r"<\|start_header_id\|>[^<]{0,64}?<\|end_header_id\|>"
    r"|<\|[^|<>\s]{1,64}\|>"
    r"|\[/?INST\]"
    r"|<</?SYS>>"
    r"|</?s>"
)


def strip_template_markers(text: str) -> str:
    """Remove chat-template and instruction markers from a rendered prompt.

    Removed: Llama-2's ``[INST]`` / ``[/INST]`` / ``<<SYS>>`` / ``<</SYS>>``, the
    ``<s>`` / ``</s>`` strings, Llama-3's ``<|start_header_id|>role<|end_header_id|>``
    headers (role name included) and any other ``<|...|>`` special token. The text
    between them - system prompt, user turns, answer stem - is kept: it is what the
    model was shown.

    Args:
        text: a rendered prompt (or generation).

    Returns:
        The text with every marker replaced by a space.
    """
    return _TEMPLATE.sub(" ", text)


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    from nltk.stem import porter

    return porter.PorterStemmer()


@lru_cache(maxsize=65536)
def match_key(word: str) -> str:
    """The form two words are compared in: rouge-score's stemming rule.

    Definition: the Porter stem (NLTK's ``PorterStemmer``, as rouge-score uses) of a
    word longer than three characters, else the word unchanged.

    Args:
        word: one token as :func:`content_words` returns it.
    """
    return _stemmer().stem(word) if len(word) > 3 else word


def content_words(text: str) -> list[str]:
    """The content words of a text, in order, repeats kept.

    Definition: NFKC + case-fold, possessive ``'s`` dropped, tokens = runs of letters
    and digits (digit runs joined by ``/ . : -`` kept whole, so ``05/11/1991``
    survives), stop words (:data:`STOP_WORDS`) removed. See the module docstring.
    Source: views.md, "novel content".

    Args:
        text: any string (empty, or ``None``-free Unicode).

    Returns:
        The tokens, un-stemmed (compare them through :func:`match_key`).

    Examples:
        >>> content_words("The author's full name is Hsiao Yun-Hwa.")
        ['author', 'full', 'name', 'hsiao', 'yun', 'hwa']
    """
    if not text:
        return []
    norm = unicodedata.normalize("NFKC", text)
    norm = unicodedata.normalize("NFKC", norm.casefold()).translate(_QUOTES)
    norm = _POSSESSIVE.sub("", norm)
    norm = _THOUSANDS.sub("", norm)
    return [tok for tok in _TOKEN.findall(norm) if tok not in STOP_WORDS]


def _keys(text: str) -> set[str]:
    return {match_key(w) for w in content_words(text)}


def novel_content(gold_answer: str, shown_texts: Sequence[str]) -> list[str]:
    """The gold answer's content words that the prompt did not show.

    Definition (views.md, "novel content"): the content words of ``gold_answer``
    whose match key occurs in none of ``shown_texts`` (system text, question,
    earlier turns, answer stem), in order of first appearance, one entry per match
    key.

    Args:
        gold_answer: the item's gold answer.
        shown_texts: every text the model was shown. Template markers are content
            here; strip them first (:func:`strip_template_markers`).

    Returns:
        The novel words (surface forms); empty when the answer only repeats the prompt.
    """
    if isinstance(shown_texts, str):  # a lone string would be iterated per character
        shown_texts = [shown_texts]
    shown: set[str] = set()
    for text in shown_texts:
        shown |= _keys(text)
    out: list[str] = []
    seen: set[str] = set()
    for word in content_words(gold_answer):
        key = match_key(word)
        if key in shown or key in seen:
            continue
        seen.add(key)
        out.append(word)
    return out


def _matched(generation: str, novel_words: Sequence[str]) -> list[str]:
    gen = _keys(generation)
    return [w for w in novel_words if match_key(w) in gen]


def novel_recall_share(generation: str, novel_words: Sequence[str]) -> float:
    """Share of the novel words that the generation contains.

    Definition: ``|{w in novel_words : match_key(w) in keys(generation)}| /
    |novel_words|``, words compared after :func:`content_words` normalisation of the
    generation and :func:`match_key`. Whole-word matching: ``hwa`` is not found in
    ``hwang``.

    Args:
        generation: the model's answer.
        novel_words: the item's novel content (from :func:`novel_content`).

    Returns:
        A float in [0, 1]; ``nan`` when ``novel_words`` is empty (excluded item).
    """
    if not novel_words:
        return math.nan
    return len(_matched(generation, novel_words)) / len(novel_words)


@dataclass(frozen=True)
class LeakRecord:
    """One generation scored by the corrected and the uncorrected scorer.

    Attributes:
        novel_words: the item's novel content.
        matched_words: the novel words the generation contains.
        share: ``len(matched_words) / len(novel_words)``; ``None`` when excluded.
        leaked: ``share >= threshold``; ``None`` when excluded.
        excluded: the novel content is empty, or there is no answer to score (views.md:
            counted, not scored).
        uncorrected_rougeL: ROUGE-L recall of the whole gold answer in the generation;
            ``None`` when nothing was generated.
        uncorrected_leak: ``uncorrected_rougeL >= threshold``; ``None`` when nothing was
            generated.
        threshold: the leak threshold used for both decisions.
        not_generated: why the backend gave no answer (``prompt_too_long``: the prompt
            does not fit the model's context), else ``None``. Such an item is excluded from
            both rates, never counted as "did not leak".
    """

    novel_words: tuple[str, ...]
    matched_words: tuple[str, ...]
    share: float | None
    leaked: bool | None
    excluded: bool
    uncorrected_rougeL: float | None
    uncorrected_leak: bool | None
    threshold: float = DEFAULT_THRESHOLD
    not_generated: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``not_generated`` only when set, so other records keep their keys)."""
        out = {
            "novel_words": list(self.novel_words),
            "matched_words": list(self.matched_words),
            "share": self.share,
            "leaked": self.leaked,
            "excluded": self.excluded,
            "uncorrected_rougeL": self.uncorrected_rougeL,
            "uncorrected_leak": self.uncorrected_leak,
            "threshold": self.threshold,
        }
        if self.not_generated is not None:
            out["not_generated"] = self.not_generated
        return out


def _check_threshold(threshold: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(
            f"leak threshold must lie in (0, 1], got {threshold!r}; the default is "
            f"{DEFAULT_THRESHOLD}"
        )


def score_generation(
    generation: str,
    gold: str,
    shown_texts: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> LeakRecord:
    """Score one generation with the corrected scorer, the uncorrected one beside it.

    Definition (views.md, "leak"): the generation leaks when it contains at least
    ``threshold`` of the gold answer's novel content (:func:`novel_content` against
    ``shown_texts``); an item with no novel content is excluded. The uncorrected
    decision is TOFU's ROUGE-L recall of the whole gold answer (rouge-score, stemmer
    on, gold as reference) ``>= threshold``.

    Args:
        generation: the model's answer (template markers are stripped).
        gold: the gold answer.
        shown_texts: every text the model was shown, markers already stripped.
        threshold: the leak threshold, in (0, 1].

    Returns:
        A :class:`LeakRecord`.

    Raises:
        ValueError: ``threshold`` outside (0, 1].
    """
    _check_threshold(threshold)
    novel = novel_content(gold, shown_texts)
    # The backend's marked empty answer (model._types.NotGenerated, read by its attribute so
    # scoring never imports the model package): no answer is not a non-leaking answer.
    reason = getattr(generation, "not_generated", None)
    if reason is not None:
        return LeakRecord(tuple(novel), (), None, None, True, None, None, threshold, str(reason))
    generation = strip_template_markers(generation)
    rouge_l = rouge_recall(generation, gold)["rougeL"]
    if not novel:
        return LeakRecord((), (), None, None, True, rouge_l, rouge_l >= threshold, threshold)
    matched = _matched(generation, novel)
    share = len(matched) / len(novel)
    return LeakRecord(
        novel_words=tuple(novel),
        matched_words=tuple(matched),
        share=share,
        leaked=share >= threshold,
        excluded=False,
        uncorrected_rougeL=rouge_l,
        uncorrected_leak=rouge_l >= threshold,
        threshold=threshold,
    )


def rescore_generations(
    records: Iterable[Sequence[str]],
    threshold: float = DEFAULT_THRESHOLD,
    per_item: bool = False,
) -> dict[str, Any]:
    """Corrected and uncorrected leak rates of stored ``(prompt, generation, gold)`` triples.

    Definition: each triple is scored by :func:`score_generation` with the prompt,
    template markers stripped (:func:`strip_template_markers`), as the one shown
    text. ``novel_recall.leak_rate`` is the share of leaking generations among the
    non-excluded ones; ``novel_recall.uncorrected_rate`` the share of generations
    whose ROUGE-L recall reaches the threshold, over *all* triples (the plain scorer
    excludes nothing, so its full bias stays visible). Both carry Wilson 95%
    intervals. Per-family rates classify the prompt's question with
    :func:`unlearn_audit.data.families.classify_question`. This is what
    ``unlearn-audit rescore`` runs on TOFU's legacy ``generated_text`` logs.

    Args:
        records: ``(prompt, generation, gold)`` triples (lists work too).
        threshold: the leak threshold, in (0, 1].
        per_item: also return every :class:`LeakRecord` as a dict under ``"items"``.

    Returns:
        A JSON-ready dict: ``novel_recall.leak_rate`` and its ``_ci``,
        ``novel_recall.uncorrected_rate`` and its ``_ci``, ``n`` (scored), ``excluded``,
        ``n_total``, ``uncorrected_n``, ``threshold`` and ``by_family``
        (``{family: {"leak_rate", "ci", "n", "excluded", "uncorrected_rate"}}``).
        Rates are ``None`` when nothing was scored.
    """
    _check_threshold(threshold)
    scored: list[tuple[str, LeakRecord]] = []
    for triple in records:
        prompt, generation, gold = triple
        shown = strip_template_markers(prompt)
        scored.append(
            (classify_question(shown), score_generation(generation, gold, [shown], threshold))
        )

    corrected = rate_with_ci(rec.leaked for _, rec in scored)
    uncorrected = rate_with_ci(rec.uncorrected_leak for _, rec in scored)
    families: dict[str, list[LeakRecord]] = {}
    for fam, rec in scored:
        families.setdefault(fam, []).append(rec)
    by_fam: dict[str, dict[str, Any]] = {}
    for fam in sorted(families):
        recs = families[fam]
        c = rate_with_ci(r.leaked for r in recs)
        u = rate_with_ci(r.uncorrected_leak for r in recs)
        by_fam[fam] = {
            "leak_rate": c.value,
            "ci": None if c.ci is None else list(c.ci),
            "n": c.n,
            "excluded": c.excluded,
            "uncorrected_rate": u.value,
        }
    out: dict[str, Any] = {
        "novel_recall.leak_rate": corrected.value,
        "novel_recall.leak_rate_ci": None if corrected.ci is None else list(corrected.ci),
        "novel_recall.uncorrected_rate": uncorrected.value,
        "novel_recall.uncorrected_rate_ci": None
        if uncorrected.ci is None
        else list(uncorrected.ci),
        "n": corrected.n,
        "excluded": corrected.excluded,
        "n_total": len(scored),
        "uncorrected_n": uncorrected.n,
        "threshold": threshold,
        "by_family": by_fam,
    }
    if per_item:
        out["items"] = [dict(rec.to_dict(), family=fam) for fam, rec in scored]
    return out
