"""Golden per-item outcomes of the tiny world: what each item's record decided, item by item.

A golden *value* (``golden.json``) is a number with a tolerance; it tells a metric change from
float noise only as well as that tolerance. The decisions behind a rate are discrete, so they
are compared exactly: an item that leaked and no longer does, a multiple-choice answer that
changed, a greedy answer that is not the same text. A scorer change that flips a single item
fails the check and names that item, whatever the tolerance of the rate it feeds.

What a record contributes (:func:`item_outcomes`): its identity (``uid`` plus the fields that
tell records of one item apart: format, kind, ...), and its discrete fields: booleans and
lists of them (``leaked``, ``correct``, per-layer probe hits), integers, and a short hash of
each generated text (``generation``, ``generation_before``/``_after``, best-of-N samples).
Floats are left to the golden values and their tolerances; the prompt and the gold answer are
inputs, not outcomes.

File: ``reference_results/tiny_world/golden_items.json``:
``{"_config": {...}, view: {model: {item key: outcome}}}``, written by ``--update-golden``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DuplicateKeyError", "GoldenItems", "compare_items", "item_outcomes", "load_golden_items", "loads_strict"]

class DuplicateKeyError(ValueError):
    """A JSON object names one key twice; ``str()`` is ``line N: duplicate key 'k' ...``."""


class _Duplicate(Exception):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


_STRING_END = re.compile(r'"(?:[^"\\]|\\.)*"')
_COLON = re.compile(r"\s*:")


def _first_duplicate_line(text: str) -> tuple[str, int, int] | None:
    """``(key, line, first line)`` of the first key repeated in one object, by a scan of the text.

    Only run once a load found a duplicate, so the fast C parser stays the common path.
    """
    stack: list[dict[str, int] | None] = []  # a dict of key -> line per open object, None per list
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            m = _STRING_END.match(text, i)
            if m is None:
                return None
            j = m.end()
            if stack and stack[-1] is not None and _COLON.match(text, j):
                key = json.loads(m.group(0))
                line = text.count("\n", 0, i) + 1
                if key in stack[-1]:
                    return key, line, stack[-1][key]
                stack[-1][key] = line
            i = j
            continue
        if c == "{":
            stack.append({})
        elif c == "[":
            stack.append(None)
        elif c in "}]" and stack:
            stack.pop()
        i += 1
    return None


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses an object naming a key twice (JSON would keep the last).

    Raises:
        json.JSONDecodeError: not JSON.
        DuplicateKeyError: a key repeated in one object, with its line.
    """
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicates)
    except _Duplicate as e:
        found = _first_duplicate_line(text)
        where = f"line {found[1]}: " if found else ""
        first = f" (first at line {found[2]})" if found else ""
        raise DuplicateKeyError(f"{where}duplicate key {e.args[0]!r}{first}; JSON keeps only the last one, "
                                "so delete one of them") from None


#: Fields that tell two records of one item apart (besides ``uid``).
IDENTITY_KEYS = ("format", "kind", "split", "unit", "role", "precision")
#: Inputs and descriptions: the same whatever the model does, so no part of an outcome.
INPUT_KEYS = frozenset({"uid", "author", "family", "prompt", "rendered_prompt", "gold", "stem", "dialogue",
                        "text", "biography",
                        "clue_uids", "novel_words", "half_a", "half_b", "budget", "train_seconds"})
#: Generated text: compared through a hash, so the file stays small and diffable.
TEXT_KEYS = frozenset({"generation", "generation_before", "generation_after"})


def _digest(text: Any) -> str:
    return hashlib.sha256(json.dumps(text, ensure_ascii=False).encode()).hexdigest()[:10]


def _outcome(rec: Mapping[str, Any]) -> str:
    parts = []
    for k in sorted(rec):
        v = rec[k]
        if k in INPUT_KEYS or k in IDENTITY_KEYS:
            continue
        if k in TEXT_KEYS and isinstance(v, str):
            parts.append(f"{k}#{_digest(v)}")
        elif k == "samples" and isinstance(v, list):
            gens = [s.get("generation") if isinstance(s, Mapping) else s for s in v]
            flags = "".join("1" if isinstance(s, Mapping) and s.get("leaked") else "0" for s in v)
            parts.append(f"samples#{_digest(gens)}:{flags}")
        elif isinstance(v, bool) or v is None:
            parts.append(f"{k}={'-' if v is None else int(v)}")
        elif isinstance(v, int):
            parts.append(f"{k}={v}")
        elif isinstance(v, str):
            parts.append(f"{k}={v}" if len(v) <= 40 else f"{k}#{_digest(v)}")
        elif isinstance(v, list) and v and all(isinstance(x, bool) or x is None for x in v):
            parts.append(f"{k}=" + "".join("-" if x is None else str(int(x)) for x in v))
        elif isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            parts.append(f"{k}#{_digest(v)}")
    return " ".join(parts)


def item_outcomes(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Item key -> the record's discrete outcome, for every record that names its item.

    The key is ``uid`` and the identity fields present (``forget10:3|json``); a second record
    with the same key (a view that scores one item twice the same way) gets ``#2``.
    """
    out: dict[str, str] = {}
    for rec in records:
        if "uid" not in rec:
            continue
        key = "|".join([str(rec["uid"])] + [str(rec[k]) for k in IDENTITY_KEYS if rec.get(k) is not None])
        n, base = 1, key
        while key in out:
            n += 1
            key = f"{base}#{n}"
        out[key] = _outcome(rec)
    return out


@dataclass
class GoldenItems:
    """``values[view][model][item key] = outcome``, recorded with the run settings ``config``."""

    path: Path
    shown: str
    values: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    config: dict[str, Any] | None = None

    def get(self, view: str, model: str) -> dict[str, str] | None:
        return self.values.get(view, {}).get(model)

    def to_json(self) -> str:
        data: dict[str, Any] = {v: {m: dict(sorted(items.items())) for m, items in sorted(models.items())}
                                for v, models in sorted(self.values.items()) if models}
        if self.config is not None:
            data["_config"] = self.config
        return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def load_golden_items(path: Path, shown: str) -> GoldenItems:
    """Read ``golden_items.json``; a missing file is an empty store (every item is then new).

    Raises:
        ValueError: not JSON, or not ``view -> model -> {item key: outcome string}``.
    """
    path = Path(path)
    if not path.is_file():
        return GoldenItems(path, shown)
    fix = "restore it from git or rewrite it with `pytest audits --update-golden`"
    try:
        data = loads_strict(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as e:
        raise ValueError(f"{shown}: not valid JSON ({e}); {fix}") from e
    except DuplicateKeyError as e:
        raise ValueError(f"{shown}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{shown}: expected a JSON object (view -> model -> items), got "
                         f"{type(data).__name__}; {fix}")
    config = data.pop("_config", None)
    for view, models in data.items():
        ok = isinstance(models, dict) and all(
            isinstance(items, dict) and all(isinstance(o, str) for o in items.values()) for items in models.values())
        if not ok:
            raise ValueError(f"{shown}: {view}: expected model -> {{item key: outcome string}}; restore it from "
                             "git or rewrite it with `pytest audits --update-golden`")
    return GoldenItems(path, shown, data, config)


def _diff(a: str, b: str) -> str:
    """``leaked 1 -> 0; generation changed`` for two outcomes of the same fields."""
    xs, ys = a.split(" "), b.split(" ")
    if [x.split("=")[0].split("#")[0] for x in xs] != [y.split("=")[0].split("#")[0] for y in ys]:
        return f"{a!r} -> {b!r}"
    out = []
    for x, y in zip(xs, ys):
        if x != y:
            name = x.split("=")[0].split("#")[0]
            out.append(f"{name} {x.split('=', 1)[1]} -> {y.split('=', 1)[1]}" if "=" in x else f"{name} changed")
    return "; ".join(out)


def compare_items(view: str, model: str, records: Iterable[Mapping[str, Any]], golden: GoldenItems,
                  shown_max: int = 8) -> list[str]:
    """A failure message naming the items whose outcome differs from the golden one (empty
    list when all agree, or when the golden file has nothing for this view and model)."""
    want = golden.get(view, model)
    if want is None:
        return []
    got = item_outcomes(records)
    changed = []
    for key in sorted(set(want) | set(got)):
        a, b = want.get(key), got.get(key)
        if a == b:
            continue
        if a is None:
            changed.append(f"{key}: new item ({b})")
        elif b is None:
            changed.append(f"{key}: no longer measured (was {a})")
        else:
            changed.append(f"{key}: {_diff(a, b)}")
    if not changed:
        return []
    more = f" (and {len(changed) - shown_max} more)" if len(changed) > shown_max else ""
    return [f"{view} on {model}: {len(changed)} item(s) differ from {golden.shown}{more}; "
            f"run with --update-golden if intended:\n  " + "\n  ".join(changed[:shown_max])]
