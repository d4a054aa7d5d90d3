"""Fact recall of the tiny models: the world's own ground-truth check.

Fact recall = the share of greedy answers to the canonical questions that contain the
item's key fact (case-insensitive). Only the world's checks read ``key_fact``; no view
does. It tells whether a model knows what its recipe says it knows, independently of the
audit's scorers.
"""

from __future__ import annotations

from pathlib import Path

from unlearn_audit.data import load_split
from unlearn_audit.world._build import (
    FORGET_SPLIT,
    MODEL_NAMES,
    SYSTEM_PROMPT,
    fixtures_dir,
    world_paths,
)


def fact_recall(engine, items) -> float:
    """Share of ``items`` whose greedy answer contains the key fact."""
    from unlearn_audit.model import GenRequest, Prompt

    reqs = [GenRequest(Prompt.question(it.question), max_new_tokens=48) for it in items]
    outs = engine.generate(reqs)
    hits = [it.key_fact.lower() in out[0].lower() for it, out in zip(items, outs)]
    return sum(hits) / len(hits)


def world_stats(cache_dir: Path | None = None, names=MODEL_NAMES, progress: bool = False,
                paths: dict[str, Path] | None = None, world: str = "tiny") -> dict[str, dict[str, float]]:
    """Fact recall per model on the forget authors and on the retain authors, of the
    models at ``paths`` (default: the world the audit uses, see ``world_paths``; ``world``
    ``smol``: the smol world's adapters on their base)."""
    from unlearn_audit.model import Engine, ModelSpec, load_model, make_format

    if world == "smol":
        from unlearn_audit.world import _smol

        specs = _smol.default_models(cache_dir)
    else:
        paths = paths or world_paths(cache_dir)
        specs = {name: ModelSpec(source=str(paths[name]), label=name) for name in names}
    data = fixtures_dir(cache_dir)
    forget = load_split(data, FORGET_SPLIT)
    forget_authors = {it.author for it in forget}
    retain = [it for it in load_split(data, "full") if it.author not in forget_authors]
    # Every 4th retain item keeps the check quick while spanning every retain author.
    retain = retain[::4]
    out = {}
    for name in names:
        lm = load_model(specs[name])
        eng = Engine(lm, make_format(lm.tokenizer, system_prompt=SYSTEM_PROMPT), cache_dir=None, progress=progress)
        out[name] = {"forget": fact_recall(eng, forget), "retain": fact_recall(eng, retain)}
    return out
