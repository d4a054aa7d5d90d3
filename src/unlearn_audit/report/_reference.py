"""Reference results: release gates, the seed paper's numbers, the tiny world's expectations.

Everything under ``reference_results/`` is data a person edits by hand, so every file is
validated on load and every problem is reported with the file, the key and the fix
(``reference_results/gates.yaml: gates[3].op: unknown operator '=<'; use one of ...``).
Nothing here knows about pytest: a problem raises :class:`ReferenceResultsError` (a
``ValueError``), which the plugin turns into a usage error and the CLI into exit 2.

Files:
    gates.yaml: one gate per metric: ``{metric, op, value}`` or
        ``{metric, op, relative_to: full|retain|base, factor, offset}``, and a one-line
        ``rationale``. A relative threshold is ``factor * reference's value + offset``,
        measured in the same run.
    paper.yaml: the seed paper's numbers, keyed by the checkpoint's hub id.
    tiny_world/expected_verdicts.yaml: the verdict each tiny-world candidate is expected
        to get from each gate (the demo: ``laundered`` must be caught).
    tiny_world/golden.json: ``metric -> model -> {value, tol}`` on the tiny world.
    tiny_world/golden_items.json: each record's discrete outcome, item by item
        (``report/_golden_items.py``).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn_audit.report._golden_items import (
    DuplicateKeyError,
    GoldenItems,
    load_golden_items,
    loads_strict,
)
from unlearn_audit.views import VIEW_MODULES

__all__ = [
    "DEFAULT_GOLDEN_TOLERANCE",
    "KNOWN_METRICS",
    "KNOWN_VIEWS",
    "OPERATORS",
    "REFERENCE_ROLES",
    "Gate",
    "Golden",
    "ReferenceResultsError",
    "ReferenceResults",
    "declared_metrics",
    "default_tolerance",
    "display_path",
    "is_known_metric",
    "load_expected_verdicts",
    "load_gates",
    "load_golden",
    "load_paper",
    "load_reference_results",
    "view_of",
]

#: The views of views.md, in report order: the same list the view registry imports, so a
#: new view is named in one place.
KNOWN_VIEWS: tuple[str, ...] = VIEW_MODULES

#: The headline metric names of views.md. Component metrics (``tofu.retain_prob``,
#: ``format_shift.json_leak_rate``, ...) validate through :func:`is_known_metric`.
KNOWN_METRICS: frozenset[str] = frozenset(
    {
        "tofu.forget_quality",
        "tofu.model_utility",
        "tofu.forget_truth_ratio",
        "tofu.forget_rouge",
        "tofu.forget_prob",
        "novel_recall.leak_rate",
        "novel_recall.uncorrected_rate",
        "format_shift.leak_rate",
        "best_of_n.leak_rate",
        "chain_of_clues.final_turn_leak_rate",
        "masked_probe.top1_last_layer",
        "likelihood.avg_logprob",
        "likelihood.shift_vs_full",
        "likelihood.shift_vs_full_novel",
        "rtt.recovery_delta_pp",
        "rtt.recovery_delta_vs_control_pp",
        "quantization.int8_delta_pp",
        "quantization.nf4_delta_pp",
        "privacy.auc_loss",
        "privacy.auc_zlib",
        "privacy.auc_min_k",
        "privacy.auc_min_k_plus_plus",
        "privacy.auc_reference",
        "privacy.privleak",
        "tofu.extraction_strength",
        "tofu.exact_memorization",
    }
)

OPERATORS: dict[str, Any] = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}
REFERENCE_ROLES = ("full", "retain", "base")
VERDICTS = ("pass", "fail")
SCHEMA_VERSION = 1
_NAME_TAIL = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")


class ReferenceResultsError(ValueError):
    """A reference-results file is missing, malformed or names something unknown."""


def _did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """`` Did you mean X?`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def declared_metrics(extra_views: Iterable[str] = ()) -> frozenset[str]:
    """Every metric name a registered view declares (``View.metrics``), plus :data:`KNOWN_METRICS`.

    A gate must name one of these exactly: a gate on a name no view reports would never
    be evaluated, so a typo (``novel_recall.leak_rat``) would silently switch the gate off.
    A registered view that declares no metrics keeps the ``<view>.<snake_case>`` rule.
    """
    from unlearn_audit.views import available_views, get_view

    names = set(KNOWN_METRICS)
    for view in (*available_views(), *extra_views):
        # a view named by the caller but not registered declares nothing
        with contextlib.suppress(KeyError):
            names.update(get_view(view).metrics)
    return frozenset(names)


def _undeclaring_views(extra_views: Iterable[str] = ()) -> set[str]:
    """Views known by name whose class declares no metrics (see :func:`declared_metrics`)."""
    from unlearn_audit.views import available_views, get_view

    out = set()
    for view in {*KNOWN_VIEWS, *available_views(), *extra_views}:
        try:
            if not get_view(view).metrics:
                out.add(view)
        except KeyError:
            out.add(view)  # a views.md view whose module is absent: only the name rule
    return out


def view_of(metric: str) -> str:
    """The view a metric belongs to: the part of its name before the first dot."""
    return metric.split(".", 1)[0]


def is_known_metric(name: str, extra_views: Iterable[str] = ()) -> bool:
    """Whether ``name`` is a metric some view may report.

    A name is known when it is one of :data:`KNOWN_METRICS`, or ``<view>.<snake_case>``
    for a view of views.md (or one of ``extra_views``, the views registered at run time),
    so component metrics (``tofu.retain_prob``) and per-format rates
    (``format_shift.fill_blank_leak_rate``) validate without being listed one by one.
    """
    if name in KNOWN_METRICS:
        return True
    view, _, tail = name.partition(".")
    return bool(tail) and view in (*KNOWN_VIEWS, *extra_views) and bool(_NAME_TAIL.match(tail))


def display_path(path: Path, root: Path | None = None) -> str:
    """``path`` relative to ``root`` when inside it (what reports and messages show)."""
    path = Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()


#: How golden tolerances are set: ``max(GOLDEN_ABS_TOL, GOLDEN_REL_TOL * |value|)``. Derived
#: from the spread measured across CPU kernel paths (golden.json's ``_tolerance`` records the
#: measurement): that spread times a safety factor, and far below one item's weight in any
#: rate (1/400 = 0.0025), which the per-item check (golden_items.json) catches exactly anyway.
GOLDEN_ABS_TOL = 1e-5
GOLDEN_REL_TOL = 1e-5


def default_tolerance(value: float) -> float:
    """Tolerance of a golden value: ``max(GOLDEN_ABS_TOL, GOLDEN_REL_TOL * |value|)``.

    Inference on the shipped weights moves continuous numbers across CPU kernel paths
    (default, AVX2, AVX-512) by float rounding only; this bound is that measured spread
    with a margin, so a machine change passes and a metric change does not.
    """
    return float(f"{max(GOLDEN_ABS_TOL, GOLDEN_REL_TOL * abs(value)):.3g}")


DEFAULT_GOLDEN_TOLERANCE = 1e-3


# --- validation helpers -------------------------------------------------------------------------
class _Checker:
    """Builds error messages of the form ``<file>: <key>: <problem>``."""

    def __init__(self, path: Path, shown: str):
        self.path = path
        self.shown = shown

    def fail(self, key: str, problem: str) -> ReferenceResultsError:
        where = f"{self.shown}: {key}: " if key else f"{self.shown}: "
        return ReferenceResultsError(where + problem)

    def mapping(self, value: Any, key: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def number(self, value: Any, key: str) -> float:
        # bool is an int subclass; `value: yes` is a typo, not the number 1.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise self.fail(key, f"expected a number, got {value!r}")
        return float(value)

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def keys(self, entry: dict, key: str, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        # YAML keys need not be strings (`1: x`); sort by text so mixed keys still compare.
        unknown = sorted(set(entry) - set(allowed), key=str)
        if unknown:
            bad = unknown[0]
            raise self.fail(
                f"{key}.{bad}" if key else str(bad),
                f"unknown key.{_did_you_mean(bad, allowed)} Allowed keys: {', '.join(allowed)}",
            )

    def metric(self, value: Any, key: str, extra_views: Iterable[str]) -> str:
        name = self.text(value, key)
        if not is_known_metric(name, extra_views):
            views = ", ".join(KNOWN_VIEWS)
            raise self.fail(
                key,
                f"unknown metric {name!r}; use a views.md metric name such as "
                f"'novel_recall.leak_rate' (<view>.<name> with a view among {views})",
            )
        return name

    def gate_metric(self, value: Any, key: str, extra_views: Iterable[str]) -> str:
        """A metric some view really reports (see :func:`declared_metrics`), else the error
        with the closest declared name."""
        name = self.text(value, key)
        declared = declared_metrics(extra_views)
        if name in declared:
            return name
        view, _, tail = name.partition(".")
        if view in _undeclaring_views(extra_views) and tail and _NAME_TAIL.match(tail):
            return name
        raise self.fail(
            key,
            f"unknown metric {name!r}: no view reports it, so this gate would never run."
            f"{_did_you_mean(name, declared)} Fix the name; known metrics: "
            f"{', '.join(sorted(declared))}",
        )

    def finite(self, value: Any, key: str) -> float:
        """A finite number: an infinite threshold or factor is a gate that can never fail."""
        number = self.number(value, key)
        if math.isinf(number):
            raise self.fail(key, f"expected a finite number, got {value!r}")
        return number

    def schema(self, data: dict) -> None:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise self.fail("schema_version", f"expected {SCHEMA_VERSION}, got {version!r}")


class _StrictYAMLError(Exception):
    """A YAML construct these files refuse; ``str()`` is ``line N: problem``."""


_STRICT_LOADER: Any = None


def _strict_loader() -> Any:
    """A SafeLoader that refuses duplicate keys and aliases (built once, on first use).

    A duplicate key silently keeps the last value (a second ``value:`` loosened a gate; a
    second ``gates:`` dropped the first list). An alias is refused outright: these files
    never need one, and expanding nested aliases ("billion laughs") takes unbounded memory.
    """
    global _STRICT_LOADER
    if _STRICT_LOADER is not None:
        return _STRICT_LOADER
    import yaml  # imported here: the plugin loads in every pytest run, audits or not

    class StrictLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):  # noqa: ANN001, ANN202 - PyYAML's signature
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _StrictYAMLError(
                    f"line {event.start_mark.line + 1}: alias *{event.anchor} is not allowed in this "
                    "file; write the value out in full"
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN202
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)
                first: dict[Any, int] = {}
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        seen = first.get(key)
                    except TypeError:  # an unhashable key: SafeLoader's own error says so
                        continue
                    line = key_node.start_mark.line + 1
                    if seen is not None:
                        raise _StrictYAMLError(
                            f"line {line}: duplicate key {key!r} (first at line {seen}); YAML keeps only "
                            "the last one, so delete one of them"
                        )
                    first[key] = line
            return super().construct_mapping(node, deep=deep)

    _STRICT_LOADER = StrictLoader
    return StrictLoader


def _read_yaml(path: Path, shown: str) -> Any:
    import yaml  # imported here: the plugin loads in every pytest run, audits or not
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReferenceResultsError(f"{shown}: file not found") from None
    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader subclass
    except _StrictYAMLError as e:
        raise ReferenceResultsError(f"{shown}: {e}") from None
    except yaml.YAMLError as e:
        raise ReferenceResultsError(f"{shown}: not valid YAML ({e})") from e


# --- gates ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Gate:
    """One release gate: ``metric op threshold``.

    Attributes:
        metric: the metric it applies to (one gate per metric).
        op: ``<=``, ``<``, ``>=`` or ``>``; the candidate passes when ``value op threshold``.
        rationale: one line saying why this threshold.
        source: the file it came from, as shown in reports.
        value: an absolute threshold, or ``None`` for a relative one.
        relative_to: ``full``, ``retain`` or ``base``: the threshold is
            ``factor * <that reference's value of the metric> + offset``.
        factor: see ``relative_to``.
        offset: see ``relative_to``.
    """

    metric: str
    op: str
    rationale: str
    source: str
    value: float | None = None
    relative_to: str | None = None
    factor: float = 1.0
    offset: float = 0.0

    @property
    def view(self) -> str:
        return view_of(self.metric)

    def threshold(self, reference_value: float | None = None) -> float:
        """The number to compare with; ``reference_value`` is needed for a relative gate."""
        if self.relative_to is None:
            return float(self.value)  # type: ignore[arg-type]
        if reference_value is None:
            raise ValueError(f"gate on {self.metric} is relative to {self.relative_to}: pass its value")
        return self.factor * reference_value + self.offset

    def passes(self, value: float, threshold: float) -> bool:
        return bool(OPERATORS[self.op](value, threshold))

    def describe(self) -> str:
        """The rule as written, e.g. ``<= 0.1`` or ``>= 0.8 × full``."""
        if self.relative_to is None:
            return f"{self.op} {self.value:g}"
        rhs = self.relative_to if self.factor == 1 else f"{self.factor:g} × {self.relative_to}"
        if self.offset:
            rhs += f" {'+' if self.offset > 0 else '-'} {abs(self.offset):g}"
        return f"{self.op} {rhs}"


_GATE_KEYS = ("metric", "op", "value", "relative_to", "factor", "offset", "rationale")


def load_gates(path: Path, root: Path | None = None, extra_views: Iterable[str] = ()) -> dict[str, Gate]:
    """Read and validate a gates file; return metric name -> :class:`Gate`."""
    path = Path(path)
    shown = display_path(path, root)
    ck = _Checker(path, shown)
    data = _read_yaml(path, shown)
    data = ck.mapping(data if data is not None else {}, "")
    ck.keys(data, "", ("schema_version", "gates"))
    ck.schema(data)
    entries = data.get("gates") or []
    if not isinstance(entries, list):
        raise ck.fail("gates", "expected a list of gates")
    gates: dict[str, Gate] = {}
    first_at: dict[str, int] = {}
    for i, entry in enumerate(entries):
        key = f"gates[{i}]"
        entry = ck.mapping(entry, key)
        ck.keys(entry, key, _GATE_KEYS)
        for required in ("metric", "op", "rationale"):
            if required not in entry:
                raise ck.fail(f"{key}.{required}", "missing")
        metric = ck.gate_metric(entry["metric"], f"{key}.metric", extra_views)
        if metric in gates:
            raise ck.fail(
                f"{key}.metric",
                f"a gate on {metric} already exists at gates[{first_at[metric]}]; keep one gate per metric",
            )
        op = entry["op"]
        if not isinstance(op, str) or op not in OPERATORS:
            # '=<' is the usual slip; difflib finds no match for two-character strings.
            hint = f" Did you mean {op[::-1]!r}?" if isinstance(op, str) and op[::-1] in OPERATORS else ""
            raise ck.fail(f"{key}.op", f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}.{hint}")
        rationale = ck.text(entry["rationale"], f"{key}.rationale")
        if "\n" in rationale:
            raise ck.fail(f"{key}.rationale", "keep the rationale to one line")
        has_value, has_rel = "value" in entry, "relative_to" in entry
        if has_value == has_rel:
            raise ck.fail(key, "give exactly one of 'value' (absolute) or 'relative_to' (full, retain or base)")
        if has_value:
            for k in ("factor", "offset"):
                if k in entry:
                    raise ck.fail(f"{key}.{k}", "only meaningful with 'relative_to'")
            gate = Gate(metric, op, rationale, shown, value=ck.finite(entry["value"], f"{key}.value"))
        else:
            rel = entry["relative_to"]
            if not isinstance(rel, str) or rel not in REFERENCE_ROLES:
                raise ck.fail(
                    f"{key}.relative_to",
                    f"unknown reference {rel!r}; use one of {', '.join(REFERENCE_ROLES)}."
                    + _did_you_mean(rel, REFERENCE_ROLES),
                )
            gate = Gate(
                metric,
                op,
                rationale,
                shown,
                relative_to=rel,
                factor=ck.finite(entry.get("factor", 1.0), f"{key}.factor"),
                offset=ck.finite(entry.get("offset", 0.0), f"{key}.offset"),
            )
        gates[metric] = gate
        first_at[metric] = i
    return gates


# --- paper numbers ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperCheckpoint:
    """The seed paper's numbers for one checkpoint (rates as fractions, pp as pp)."""

    source: str
    role: str
    metrics: dict[str, float]
    references: dict[str, str] = field(default_factory=dict)


def load_paper(path: Path, root: Path | None = None, extra_views: Iterable[str] = ()) -> dict[str, PaperCheckpoint]:
    """Read and validate ``paper.yaml``; return hub id (lower-cased) -> checkpoint."""
    path = Path(path)
    shown = display_path(path, root)
    ck = _Checker(path, shown)
    data = ck.mapping(_read_yaml(path, shown) or {}, "")
    ck.keys(data, "", ("schema_version", "source", "checkpoints"))
    ck.schema(data)
    out: dict[str, PaperCheckpoint] = {}
    for hub_id, entry in ck.mapping(data.get("checkpoints") or {}, "checkpoints").items():
        key = f"checkpoints.{hub_id}"
        entry = ck.mapping(entry, key)
        ck.keys(entry, key, ("role", "references", "metrics", "note"))
        role = entry.get("role", "candidate")
        if role not in ("candidate", *REFERENCE_ROLES):
            raise ck.fail(f"{key}.role", f"unknown role {role!r}; use candidate, full, retain or base")
        refs = ck.mapping(entry.get("references") or {}, f"{key}.references")
        for r, rid in refs.items():
            if r not in REFERENCE_ROLES:
                raise ck.fail(f"{key}.references.{r}", f"unknown reference; use one of {', '.join(REFERENCE_ROLES)}")
            ck.text(rid, f"{key}.references.{r}")
        metrics = {
            ck.metric(m, f"{key}.metrics.{m}", extra_views): ck.number(v, f"{key}.metrics.{m}")
            for m, v in ck.mapping(entry.get("metrics") or {}, f"{key}.metrics").items()
        }
        if str(hub_id).lower() in out:  # hub ids are looked up case-insensitively: one would hide the other
            raise ck.fail(key, f"the same checkpoint as checkpoints.{out[str(hub_id).lower()].source} "
                               "(hub ids ignore case); keep one")
        out[str(hub_id).lower()] = PaperCheckpoint(str(hub_id), role, metrics, dict(refs))
    return out


# --- tiny world: expected verdicts and golden values ------------------------------------------
def load_expected_verdicts(
    path: Path, gates: Mapping[str, Gate], root: Path | None = None
) -> dict[str, dict[str, str]]:
    """Read ``expected_verdicts.yaml``: model -> gate metric -> ``pass`` or ``fail``.

    A gate a model does not list is expected to pass, so the file lists only the
    breaches the demo wants to show.
    """
    path = Path(path)
    shown = display_path(path, root)
    ck = _Checker(path, shown)
    data = ck.mapping(_read_yaml(path, shown) or {}, "")
    ck.keys(data, "", ("schema_version", "models"))
    ck.schema(data)
    out: dict[str, dict[str, str]] = {}
    for model, verdicts in ck.mapping(data.get("models") or {}, "models").items():
        key = f"models.{model}"
        verdicts = ck.mapping(verdicts or {}, key)
        row: dict[str, str] = {}
        for metric, verdict in verdicts.items():
            mkey = f"{key}.{metric}"
            if metric not in gates:
                raise ck.fail(mkey, "no gate on this metric in the gates file; expectations name gates")
            if verdict not in VERDICTS:
                raise ck.fail(mkey, f"expected 'pass' or 'fail', got {verdict!r}")
            row[metric] = verdict
        out[str(model)] = row
    return out


@dataclass
class Golden:
    """Golden tiny-world values: ``values[metric][model] = {"value": v, "tol": t}``.

    ``config`` holds the run settings the values were recorded with (the file's reserved
    ``_config`` key); a run with other settings is not compared, since its numbers
    legitimately differ.
    """

    path: Path
    shown: str
    values: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    tolerance_note: dict[str, Any] | None = None  # how the tolerances were measured (``_tolerance``)

    def get(self, metric: str, model: str) -> dict[str, float] | None:
        return self.values.get(metric, {}).get(model)

    def config_mismatch(self, config: Mapping[str, Any]) -> list[str]:
        """Settings in which ``config`` differs from the recorded one (empty when it matches)."""
        if self.config is None:
            return []
        keys = sorted(set(self.config) | set(config))
        return [
            f"{k} (golden {self.config.get(k)!r}, run {config.get(k)!r})"
            for k in keys
            if self.config.get(k) != config.get(k)
        ]

    def to_json(self) -> str:
        data: dict[str, Any] = {m: {k: dict(v) for k, v in sorted(models.items())}
                                for m, models in sorted(self.values.items()) if models}
        if self.config is not None:
            data["_config"] = self.config
        if self.tolerance_note is not None:
            data["_tolerance"] = self.tolerance_note
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def load_golden(path: Path, root: Path | None = None, extra_views: Iterable[str] = ()) -> Golden:
    """Read ``golden.json``; a missing file is an empty store (every value is then 'new')."""
    path = Path(path)
    shown = display_path(path, root)
    ck = _Checker(path, shown)
    if not path.is_file():
        return Golden(path, shown)
    try:
        data = loads_strict(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as e:
        raise ReferenceResultsError(f"{shown}: not valid JSON ({e})") from e
    except DuplicateKeyError as e:
        raise ReferenceResultsError(f"{shown}: {e}") from None
    data = ck.mapping(data, "")
    config = data.pop("_config", None)
    if config is not None:
        config = ck.mapping(config, "_config")
    note = data.pop("_tolerance", None)
    if note is not None:
        note = ck.mapping(note, "_tolerance")
    values: dict[str, dict[str, dict[str, float]]] = {}
    for metric, models in data.items():
        ck.metric(metric, metric, extra_views)
        for model, entry in ck.mapping(models, metric).items():
            key = f"{metric}.{model}"
            entry = ck.mapping(entry, key)
            ck.keys(entry, key, ("value", "tol"))
            if "value" not in entry:
                raise ck.fail(f"{key}.value", "missing")
            value = ck.number(entry["value"], f"{key}.value")
            tol = ck.number(entry.get("tol", DEFAULT_GOLDEN_TOLERANCE), f"{key}.tol")
            if tol < 0:
                raise ck.fail(f"{key}.tol", f"must be >= 0, got {tol}")
            values.setdefault(metric, {})[model] = {"value": value, "tol": tol}
    return Golden(path, shown, values, config, note)


# --- everything at once ----------------------------------------------------------------------
@dataclass
class ReferenceResults:
    """All reference data of a run, validated."""

    gates: dict[str, Gate]
    paper: dict[str, PaperCheckpoint]
    expected: dict[str, dict[str, str]] = field(default_factory=dict)
    golden: Golden | None = None
    golden_items: GoldenItems | None = None
    expected_source: str = ""

    def paper_value(self, source: str | None, metric: str) -> float | None:
        """The paper's number for ``metric`` on the checkpoint ``source``, if it has one."""
        if not source:
            return None
        ck = self.paper.get(source.lower())
        return ck.metrics.get(metric) if ck else None


def load_reference_results(
    reference_dir: Path,
    gates_path: Path,
    *,
    root: Path | None = None,
    tiny_world: bool = False,
    world: str = "tiny",
    extra_views: Iterable[str] = (),
) -> ReferenceResults:
    """Load and validate the gates, the paper's numbers and (a built-in world's) expectations and goldens.

    ``paper.yaml`` is optional (no paper column without it); the gates file is required.
    """
    extra_views = tuple(extra_views)
    gates = load_gates(gates_path, root, extra_views)
    paper_path = Path(reference_dir) / "paper.yaml"
    paper = load_paper(paper_path, root, extra_views) if paper_path.is_file() else {}
    refs = ReferenceResults(gates, paper)
    if tiny_world:
        tiny = Path(reference_dir) / f"{world}_world"  # tiny_world/ or smol_world/
        exp_path = tiny / "expected_verdicts.yaml"
        if exp_path.is_file():
            refs.expected = load_expected_verdicts(exp_path, gates, root)
            refs.expected_source = display_path(exp_path, root)
        refs.golden = load_golden(tiny / "golden.json", root, extra_views)
        items_path = tiny / "golden_items.json"
        try:
            refs.golden_items = load_golden_items(items_path, display_path(items_path, root))
        except ValueError as e:
            raise ReferenceResultsError(str(e)) from e
    return refs
