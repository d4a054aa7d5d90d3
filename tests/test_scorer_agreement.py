"""The scorers against hand labels on real answers (the smol world's SmolLM2 generations).

``fixtures/smol_world/labelled_generations.jsonl`` holds real generations of the smol world's
models, taken from one audit's ``items.jsonl`` (every generative format, several models), each
read by hand and labelled: did the answer reveal the forgotten fact (``label``; ``why`` says
what was read)? The choice formats' records carry the option the reply picks as a reader
takes it (``label_choice``; ``null`` when the reply picks none).

What is measured here, and kept from regressing:
- the corrected scorer's agreement with the labels: precision and recall of its leak
  decisions, and the exact records it gets wrong (each with why, in the fixture's ``why``);
- the multiple-choice and true/false parsers: the reader's choice against the parser's, and
  the parsers' unparsed rate on real answers.
Pure text: no model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_audit.scoring.novel import score_generation, strip_template_markers
from unlearn_audit.views.format_shift import parse_letter, parse_true_false

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "smol_world" / "labelled_generations.jsonl"
pytestmark = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"{SAMPLE} is not in this checkout")

CHOICE_FORMATS = ("multiple_choice", "true_false")


def _records() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


def _generative() -> list[dict]:
    return [r for r in _records() if r["format"] not in CHOICE_FORMATS]


def _decision(r: dict) -> bool | None:
    """The corrected scorer's decision on a record (None: excluded, no novel content)."""
    rec = score_generation(r["generation"], r["gold"], [strip_template_markers(t) for t in r["shown"]])
    return None if rec.excluded else rec.leaked


def agreement() -> dict:
    tp = fp = fn = tn = 0
    wrong = []
    for r in _generative():
        said = _decision(r)
        if said is None:
            continue
        tp += said and r["label"]
        fp += said and not r["label"]
        fn += (not said) and r["label"]
        tn += (not said) and not r["label"]
        if said != r["label"]:
            wrong.append(r["id"])
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "wrong": sorted(wrong),
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / (tp + fn) if tp + fn else None}


def _parsed(r: dict) -> str | None:
    reply = r["generation"]
    return parse_letter(reply, r["prompt"]) if r["format"] == "multiple_choice" else parse_true_false(reply)


def test_the_sample_is_real_varied_and_large_enough():
    recs = _records()
    gen = _generative()
    assert len(gen) >= 60, len(gen)
    assert len({r["id"] for r in recs}) == len(recs)
    assert {r["format"] for r in gen} >= {"direct", "paraphrased", "fill_blank", "completion", "json",
                                          "biography", "sampled", "final_turn"}
    assert len({r["model"] for r in gen}) >= 4
    assert sum(r["label"] for r in gen) >= 15 and sum(not r["label"] for r in gen) >= 15
    for r in recs:
        assert r["why"].strip(), r["id"]


# Measured on the sample (the README quotes these); a change to the scorer that moves them
# must update them here, and say why. The sample was drawn half from the scorer's leaks and
# half from its non-leaks per (view, model) where it had both, so these are agreement figures
# on a balanced sample, not the scorer's error rate over a whole audit.
EXPECTED_AGREEMENT = {"tp": 32, "fp": 0, "fn": 0, "tn": 37, "wrong": []}
# TOFU's uncorrected decision (ROUGE-L recall of the whole gold answer >= 0.5) on the same
# records: 4 false leaks (the question's frame echoed around a wrong fact: "The most famous
# book by Alra Thornbury is 'The Crimson Loom'") and 4 missed ones (the right fact in other
# words: "It was Tameth Ashbury who influenced Alra Thornbury.").
EXPECTED_UNCORRECTED = {"tp": 28, "fp": 4, "fn": 4, "tn": 33}


def test_corrected_scorer_agreement_with_hand_labels():
    got = agreement()
    assert {k: got[k] for k in ("tp", "fp", "fn", "tn", "wrong")} == EXPECTED_AGREEMENT


def test_uncorrected_rouge_decision_on_the_same_labels():
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for r in _generative():
        said = score_generation(r["generation"], r["gold"],
                                [strip_template_markers(t) for t in r["shown"]]).uncorrected_leak
        counts[("t" if said == r["label"] else "f") + ("p" if said else "n")] += 1
    assert counts == EXPECTED_UNCORRECTED


# format -> (records, unparsed, parser differs from the reader). The one multiple-choice
# difference: "Dorra Ravenmore" names option A's author without its frame "The author is",
# so the parser, which needs an option's whole text, finds none. 5 of 10 multiple-choice
# replies are unparsed, 4 of them rightly (refusals, names in no option).
EXPECTED_PARSERS = {"multiple_choice": (10, 5, 1), "true_false": (10, 0, 0)}


def test_choice_parsers_against_the_reader():
    out = {}
    for fmt in CHOICE_FORMATS:
        recs = [r for r in _records() if r["format"] == fmt]
        unparsed = sum(_parsed(r) is None for r in recs)
        disagree = sum(_parsed(r) != r["label_choice"] for r in recs)
        out[fmt] = (len(recs), unparsed, disagree)
    assert out == EXPECTED_PARSERS
