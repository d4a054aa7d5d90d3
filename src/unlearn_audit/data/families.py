"""Fact families: what kind of fact an item asks about.

The tiny world records each item's family. Real TOFU does not, so for it the family is
read off the question with the keyword rules below (checked by hand on forget10). An
item no rule matches is ``other``; per-family tables always show that bucket, so a
misclassification is visible rather than silently dropped.
"""

from __future__ import annotations

import re

FAMILIES = (
    "full_name",
    "birthplace",
    "birth_date",
    "parents",
    "genre",
    "awards",
    "books",
    "identity",
    "influences",
    "other",
)

# Ordered: the first match wins, so the specific patterns come before the broad ones.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (fam, re.compile(pat, re.IGNORECASE))
    for fam, pat in (
        ("full_name", r"\b(full name|what is the name of|author's name|called)\b"),
        ("parents", r"\b(father|mother|parent|parents|dad|mom)\b"),
        ("birth_date", r"\b(when was .* born|date of birth|birth ?date|born on|what year|which year)\b"),
        ("birthplace", r"\b(where was .* born|birthplace|born in|hometown|city|country|hail from|from where|where .* from)\b"),
        ("awards", r"\b(award|prize|honou?r|recogni[sz])"),
        ("books", r"\b(book|books|novel|novels|title|titles|wrote|written|works?)\b"),
        ("genre", r"\b(genre|type of (books|literature|writing)|kind of (books|stories))\b"),
        ("identity", r"\b(gender|lgbtq|identity|identif(y|ies)|sexual|background|ethnic)\b"),
        ("influences", r"\b(influence|inspir|shape|impact)"),
    )
)


def classify_question(question: str) -> str:
    """Family of a question by keyword rules; ``other`` when none matches."""
    for fam, pat in _RULES:
        if pat.search(question):
            return fam
    return "other"
