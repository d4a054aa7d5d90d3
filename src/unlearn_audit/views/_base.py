"""What a view is: items in, requests to the engine, records and metrics out.

A view never applies gates and never writes files; the plugin and the reporter do. A
view's plots are data (:class:`Plot`): the report writer draws them into the report's
``plots/`` folder.
Adding a view = one module under ``views/`` named in :data:`BUILTIN_VIEWS` (or any class
passed to :func:`register_view`), plus one test module under ``audits/``. Nothing in the
engine, the plugin or the report changes. This module imports nothing heavy: the view
modules are imported when a view is first asked for.
"""

from __future__ import annotations

import difflib
import enum
import importlib
import importlib.util
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext
    from unlearn_audit.views._options import Option


class Skip(str, enum.Enum):
    """Why a number was not measured. The report decides from the kind, never from the text
    of the reason (which is for people)."""

    #: The number needs a reference model (or stored logs) that this run was not given.
    #: Expected: it leaves a verdict complete.
    MISSING_REFERENCE = "missing_reference"
    #: The backend cannot do it here (bitsandbytes not installed, a quantization mode the
    #: device does not support). The audit did not fully run: the verdict is INCOMPLETE.
    BACKEND_UNAVAILABLE = "backend_unavailable"
    #: The number has no meaning for this model or data (no items, nothing to score, a model
    #: already quantized). The verdict is INCOMPLETE when a gate needed the number.
    NOT_APPLICABLE = "not_applicable"


@dataclass
class Metric:
    """One measured number.

    Attributes:
        name: the views.md name, e.g. ``novel_recall.leak_rate``.
        value: the number (fractions for rates), or ``None`` when skipped.
        ci: 95% confidence interval ``(lo, hi)`` or ``None`` when it has no meaning.
        n: the count the number is over (items, pairs, prompts).
        excluded: items left out (e.g. empty novel content), with the reason in ``reason``.
        by_family: the same number per fact family.
        reason: why it was skipped, or a note on exclusions.
        extra: anything else worth reporting (curves, per-layer lists); JSON-serialisable.
        skip: for a skipped number (``value is None``), what kind of skip it is; a skipped
            number without one counts as :attr:`Skip.NOT_APPLICABLE`.
    """

    name: str
    value: float | None
    ci: tuple[float, float] | None = None
    n: int | None = None
    excluded: int = 0
    by_family: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    skip: Skip | None = None

    def __post_init__(self) -> None:
        if self.value is None and self.skip is None:
            self.skip = Skip.NOT_APPLICABLE
        elif self.value is not None and self.skip is not None:
            raise ValueError(f"{self.name}: a measured number ({self.value}) cannot also be skipped ({self.skip.value})")
        if self.skip is not None:
            self.skip = Skip(self.skip)

    @property
    def skipped(self) -> bool:
        return self.value is None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": _float_or_none(self.value),
                "ci": None if self.ci is None else [float(self.ci[0]), float(self.ci[1])],
                "n": None if self.n is None else int(self.n), "excluded": int(self.excluded or 0),
                "by_family": {str(k): _float_or_none(v) for k, v in self.by_family.items()},
                "reason": self.reason, "extra": self.extra,
                "skip": None if self.skip is None else self.skip.value}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Metric:
        ci = d.get("ci")
        return cls(d["name"], d.get("value"), ci=None if ci is None else (ci[0], ci[1]), n=d.get("n"),
                   excluded=d.get("excluded", 0), by_family=dict(d.get("by_family") or {}),
                   reason=d.get("reason", ""), extra=dict(d.get("extra") or {}),
                   skip=None if d.get("skip") is None else Skip(d["skip"]))


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


def _to_builtins(obj: Any) -> Any:
    """``json.dumps`` default: numpy arrays and scalars as lists and numbers, paths as text."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    return str(obj)


@dataclass(frozen=True)
class Plot:
    """One plot a view measured, as data: the report writer draws it (``report/_plots.py``).

    Attributes:
        kind: which drawer draws it; the kinds and the ``data`` each reads are listed in
            ``report/_plots.py`` (``pass_at_k``, ``bars``, ``layer_curves``,
            ``histograms``). A new view reuses a kind; a kind no drawer knows becomes a
            note in report.md, never a crash.
        caption: the plot's caption in report.md.
        data: what the drawer reads; plain JSON only (str keys, lists, str, int, float,
            ``None``; no numpy), since a result travels between processes as JSON.
            ``None`` (or ``nan``) values are left out of the drawing.
    """

    kind: str
    caption: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "caption": self.caption, "data": self.data}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plot:
        return cls(str(d["kind"]), str(d["caption"]), dict(d.get("data") or {}))


def plot_number(value: Any) -> float | None:
    """A number for :attr:`Plot.data`: a plain ``float``, or ``None`` when missing or not
    finite (numpy scalars included)."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


@dataclass
class ViewResult:
    """Everything one view measured on one model."""

    view: str
    model: str
    metrics: list[Metric]
    records: list[dict] = field(default_factory=list)  # per-item, JSON-serialisable
    plots: list[Plot] = field(default_factory=list)  # drawn by the report writer
    #: Plain-text notes a reader of the report must see beside the numbers (rows dropped,
    #: too few items, inputs cut to the context, ...). Untrusted text: the report escapes it.
    warnings: list[str] = field(default_factory=list)

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(f"{self.view} on {self.model} has no metric {name!r}")

    def dumps(self) -> str:
        """This result as JSON text, to share it with other processes (pytest-xdist workers).

        NaN stays NaN (``json`` writes it as ``NaN``), so a result read back with
        :meth:`loads` gives the same numbers; numpy values become lists and numbers.
        """
        return json.dumps({"view": self.view, "model": self.model,
                           "metrics": [m.to_json() for m in self.metrics],
                           "records": self.records,
                           "plots": [p.to_json() for p in self.plots],
                           "warnings": list(self.warnings)},
                          default=_to_builtins, allow_nan=True)

    @classmethod
    def loads(cls, text: str) -> ViewResult:
        d = json.loads(text)
        return cls(d["view"], d["model"], [Metric.from_json(m) for m in d["metrics"]],
                   records=list(d.get("records") or []),
                   plots=[Plot.from_json(p) for p in d.get("plots") or []],
                   warnings=[str(w) for w in d.get("warnings") or []])


class View:
    """Base class of every audit view."""

    name: ClassVar[str]
    title: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    #: The view's own typed knobs (:class:`~unlearn_audit.views._options.Option`), set with
    #: ``--view-option <name>.<option>=VALUE`` or the ini key ``audit_view_option``.
    options: ClassVar[tuple[Option, ...]] = ()

    def option(self, ctx: AuditContext, name: str) -> Any:
        """This run's value of the option ``name`` (its declared default when not set)."""
        from unlearn_audit.views._options import values_of

        values = values_of(ctx.config, self.name, self.options)
        if name not in values:
            raise KeyError(f"the {self.name} view declares no option {name!r}")
        return values[name]

    def run(self, ctx: AuditContext, model: str) -> ViewResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def requires(self, ctx: AuditContext, model: str) -> Sequence[tuple[str, str]]:
        """The (view, model) results :meth:`run` asks ``ctx.result`` for, e.g. forget quality
        needs ``("tofu", <retain label>)``. The runner computes them first, each once per
        session and once across pytest-xdist workers; a view must not ask for a result it
        did not declare (the runner refuses, naming this method). Default: none."""
        return ()

    def skipped(self, model: str, reason: str, skip: Skip = Skip.NOT_APPLICABLE) -> ViewResult:
        """Every metric of this view as skipped, with the reason (never a made-up number)."""
        return ViewResult(self.name, model, [Metric(m, None, reason=reason, skip=skip) for m in self.metrics])


#: The built-in views, in report order: name -> ``module:Class``. The module is imported
#: the first time the view is asked for (:func:`get_view`), never before, because the
#: pytest plugin is loaded in every pytest run of the environment and a view module pulls
#: in numpy, scipy and the model stack. Adding a view = its module plus one line here
#: (or :func:`register_view` anywhere, e.g. in a test module); the engine, the plugin and
#: the report never name a view.
BUILTIN_VIEWS: dict[str, str] = {
    "tofu": "unlearn_audit.views.tofu:TofuView",
    "novel_recall": "unlearn_audit.views.novel_recall:NovelRecall",
    "format_shift": "unlearn_audit.views.format_shift:FormatShift",
    "best_of_n": "unlearn_audit.views.best_of_n:BestOfN",
    "chain_of_clues": "unlearn_audit.views.chain_of_clues:ChainOfClues",
    "likelihood": "unlearn_audit.views.likelihood:Likelihood",
    "masked_probe": "unlearn_audit.views.masked_probe:MaskedProbe",
    "rtt": "unlearn_audit.views.rtt:Rtt",
    "quantization": "unlearn_audit.views.quantization:Quantization",
    "privacy": "unlearn_audit.views.privacy:Privacy",
}

#: Views registered at run time with :func:`register_view` (not the built-in ones, which
#: :data:`BUILTIN_VIEWS` names); an entry here wins over a built-in of the same name.
_REGISTRY: dict[str, type[View]] = {}


def _spec_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _builtin_present(name: str) -> bool:
    """Whether a built-in view's module exists (found without importing it): a checkout
    without one of the view modules simply does not offer that view."""
    module = BUILTIN_VIEWS[name].partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def register_view(cls: type[View]) -> type[View]:
    """Class decorator: offer ``cls`` as the view ``cls.name``.

    The built-in view classes carry it too; for them it is a no-op, since
    :data:`BUILTIN_VIEWS` already names them (so importing a view module twice, or
    under a test's copy of the registry, never registers it twice).

    Raises:
        ValueError: another class already has that name.
    """
    spec = _spec_of(cls)
    if BUILTIN_VIEWS.get(cls.name) == spec:
        return cls
    taken = _REGISTRY.get(cls.name)
    if taken is not None and _spec_of(taken) == spec:
        taken = None  # the same class from a re-imported module (pytester's in-process reruns)
    if (taken is not None and taken is not cls) or (taken is None and cls.name in BUILTIN_VIEWS):
        where = _spec_of(taken) if taken is not None else BUILTIN_VIEWS[cls.name]
        raise ValueError(f"view {cls.name!r} registered twice: {spec} and {where}; rename one of them")
    _REGISTRY[cls.name] = cls
    return cls


def available_views() -> list[str]:
    """Names of every view that can run, sorted; imports no view module."""
    return sorted({*_REGISTRY, *(n for n in BUILTIN_VIEWS if _builtin_present(n))})


def view_class(name: str) -> type[View]:
    """The class of the view ``name``, importing its module on first use.

    Raises:
        KeyError: no view has that name (the message suggests close names).
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN_VIEWS and _builtin_present(name):
        module, _, qualname = BUILTIN_VIEWS[name].partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    close = difflib.get_close_matches(name, available_views(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"Unknown view '{name}'.{hint} Available: {', '.join(available_views())}.")


def get_view(name: str) -> View:
    """A fresh instance of the view registered under ``name`` (see :func:`view_class`)."""
    return view_class(name)()
