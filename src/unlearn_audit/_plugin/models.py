"""The models a run audits: labels from the options, and the default audit context."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from typing import TYPE_CHECKING

import pytest

from unlearn_audit.report._session import TINY_WORLD_DATASET, PlannedModel

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext

__all__ = ["LABEL_RULES", "default_context", "looks_like_path", "plan_models", "tiny_world_plan"]


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(source))


# A label names the model in the report and in plot file names, so it is one plain word.
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LABEL_RULES = (
    "A LABEL in LABEL=SOURCE is 1-64 letters, digits, '.', '_' or '-', starting with a letter "
    "or digit (no '/', no '..', no spaces)."
)
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


def _derived_label(name: str) -> str:
    """A directory name or hub id part as a label under the same rules as an explicit one:
    each run of other characters becomes '-' ("lr=1e-5" -> "lr-1e-5", "a|b" -> "a-b"), so a
    directory's name never brings markup, line breaks or escapes into the report."""
    return _NOT_LABEL.sub("-", name).lstrip("._-")[:64].rstrip("-")


def _numbered(base: str, n: int) -> str:
    suffix = f"-{n}"
    return base[: 64 - len(suffix)] + suffix


def plan_models(entries: list[tuple[str, str]]) -> list[PlannedModel]:
    """Labels for user-given models: ``LABEL=SOURCE`` when given, else the directory name or
    the hub id's last part, made to follow :data:`LABEL_RULES`; clashes take the parent
    directory or hub owner, then a number. Every model gets its own label.

    Args:
        entries: ``(role, raw option value)`` in command-line order.
    """
    parsed = []
    for role, raw in entries:
        flag = f"--{'model' if role == 'candidate' else role + '-model'}"
        explicit, sep, source = raw.partition("=")
        if not sep or os.path.exists(os.path.expanduser(raw)):
            explicit, source = "", raw  # a path that itself holds '=' stays a path
        elif not _LABEL_RE.match(explicit.strip()):
            raise pytest.UsageError(
                f"{flag} {raw!r}: {explicit.strip()!r} is not a model label and {raw!r} is no existing "
                f"path. {LABEL_RULES} Fix: {flag} LABEL=SOURCE with such a label (e.g. npo={source.strip() or 'DIR'}), "
                "or the path alone."
            )
        source = source.strip()
        if not source:
            raise pytest.UsageError(f"{flag}: empty source in {raw!r}")
        if looks_like_path(source):
            source = os.path.expanduser(source)
        parts = _name_parts(source)
        parsed.append((role, source, explicit.strip(), parts or [source], flag))
    explicit_labels = [p[2] for p in parsed if p[2]]
    for label in explicit_labels:
        if explicit_labels.count(label) > 1:
            raise pytest.UsageError(f"model label {label!r} is used twice; give each model its own LABEL=")
    names = [p[2] or _derived_label(p[3][-1]) for p in parsed]
    bases: list[str] = []
    for i, (_role, source, explicit, parts, flag) in enumerate(parsed):
        label = names[i]
        if not explicit and len(parts) > 1 and label in names[:i] + names[i + 1 :]:
            label = _derived_label(f"{parts[-2]}-{parts[-1]}")
        if not label:
            raise pytest.UsageError(
                f"{flag} {source!r}: no model label can be made from {parts[-1]!r}. {LABEL_RULES} "
                f"Fix: {flag} {shlex.quote('LABEL=' + source)} with such a label."
            )
        bases.append(label)
    # Explicit labels are the user's: a derived one that meets one (or another derived one)
    # takes the next free number, so no two models ever share a label.
    taken = set(explicit_labels)
    out = []
    for (role, source, explicit, _, _), label in zip(parsed, bases, strict=True):
        if not explicit:
            n, base = 1, label
            while label in taken:
                n += 1
                label = _numbered(base, n)
        taken.add(label)
        out.append(PlannedModel(label, role, source))
    return out


def _name_parts(source: str) -> list[str]:
    """The path's or hub id's parts, the last one named (``.``/``..`` resolved for a path)."""
    parts = [p for p in re.split(r"[/\\]+", source.rstrip("/\\")) if p not in ("", ".")]
    if (not parts or parts[-1] == "..") and looks_like_path(source):
        parts = [p for p in re.split(r"[/\\]+", os.path.abspath(source)) if p]
    return parts


def _world_module(name: str):
    from unlearn_audit import world
    from unlearn_audit.world import _smol

    return {"tiny": world, "smol": _smol}[name]


def tiny_world_plan(name: str = "tiny") -> list[PlannedModel]:
    """The models of built-in world ``name`` (tiny or smol), candidates first."""
    w = _world_module(name)
    plan = [PlannedModel(label, "candidate") for label in w.CANDIDATES]
    return plan + [PlannedModel(label, role) for label, role in w.REFERENCES.items()]


def default_context(audit_config: AuditConfig, world: str | None, planned: list[PlannedModel]) -> AuditContext:
    """The real context: a built-in world's models (``world``: tiny or smol), or the user's
    checkpoints (``world`` None); loaded lazily."""
    from unlearn_audit.context import AuditContext

    if world is not None:
        from unlearn_audit.world import fixtures_dir

        if audit_config.dataset == TINY_WORLD_DATASET:  # both worlds ask the tiny world's questions
            audit_config = dataclasses.replace(
                audit_config, dataset=str(fixtures_dir(audit_config.cache_dir))
            )
        specs = _world_module(world).default_models(audit_config.cache_dir)
        expected = {p.label for p in tiny_world_plan(world)}
        if set(specs) != expected:  # the labels were used for parametrization already
            raise RuntimeError(
                f"{world} world models {sorted(specs)} differ from its CANDIDATES + REFERENCES "
                f"{sorted(expected)}; keep them in step"
            )
        return AuditContext(audit_config, specs)
    from unlearn_audit.model import ModelSpec

    specs = {
        p.label: ModelSpec(
            source=p.source,
            label=p.label,
            role=p.role,
            dtype=audit_config.dtype,
            device=audit_config.device,
            trust_remote_code=audit_config.trust_remote_code,
            allow_pickle=audit_config.allow_pickle,
        )
        for p in planned
    }
    return AuditContext(audit_config, specs)
