"""The pytest plugin: options, model parametrization, gate asserts and the report hooks.

Registered through ``[project.entry-points.pytest11]``, so it is loaded in every pytest
run of the environment; it stays inert (no I/O, no heavy imports) until a test asks for
the ``audit`` fixture. The work is done by :mod:`unlearn_audit.report`; this module only
wires it into pytest:

- ``pytest_addoption``: one "unlearn-audit" group; every option is also an ini key
  (``audit_<name>``) so a CI job can pin it in ``[tool.pytest.ini_options]``.
  Precedence: command line, then ini file, then default.
- ``pytest_generate_tests``: every test using ``audit`` and ``model`` is parametrized
  over the run's model labels (session scope, so tests group by model).
- ``audit.check(view, model)``: measure, record, judge, assert.
- ``pytest_runtest_logreport`` / ``pytest_sessionfinish`` / ``pytest_terminal_summary``:
  collect the recorded outcomes (from every xdist worker) and write the report on the
  controller.

Tests substitute the audit context through the ``pytest_unlearn_audit_context`` hook
(see :class:`HookSpecs`): a conftest returning a fake :class:`AuditContext` runs the
whole plugin without a model.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from unlearn_audit import __version__
from unlearn_audit.report._reference import KNOWN_VIEWS, ReferenceResultsError
from unlearn_audit.report._session import TINY_WORLD_DATASET, AuditSession, PlannedModel

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext

__all__ = ["PAYLOAD_KEY", "SESSION_KEY", "Audit", "HookSpecs", "audit", "model", "plan_models"]

#: Where the plugin keeps its :class:`AuditSession` (never ``config._x``).
SESSION_KEY = pytest.StashKey[AuditSession]()
_VIEW_KEY = pytest.StashKey[str]()
#: The ``workerinput`` key of the run directory the xdist workers share results through.
_RUN_DIR_KEY = "unlearn_audit_run_dir"
#: The ``record_property`` name under which a test's judged outcome travels to the reporter.
PAYLOAD_KEY = "unlearn_audit"
DEFAULT_DATASET = "locuslab/TOFU"
DTYPES = ("auto", "float32", "fp32", "float", "bfloat16", "bf16", "float16", "fp16", "half")
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class HookSpecs:
    """Hooks the plugin adds to pytest."""

    @pytest.hookspec(firstresult=True)
    def pytest_unlearn_audit_context(
        self, config: pytest.Config, audit_config: AuditConfig, tiny_world: bool
    ) -> AuditContext | None:
        """Return the :class:`AuditContext` for this session instead of the default one.

        Called once, when the first audit test is collected. The default builds the
        context from ``--model`` and friends, or from the tiny world when no model is
        given. The project's own tests implement this in a conftest to run the plugin
        end to end on fake views and fake models.

        Args:
            config: the pytest config (read any option from it).
            audit_config: the run's settings, parsed from the options.
            tiny_world: True when no model option was given.
        """


# --- options -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Option:
    name: str  # --<name>; ini key audit_<name with underscores>
    help: str  # ends with the default
    kind: str = "string"  # string | bool | list
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def dest(self) -> str:
        return "audit_" + self.name.replace("-", "_")


_OPTIONS = (
    _Option("model", "checkpoint to audit: a hub id, a local directory or a PEFT/LoRA adapter "
            "directory; repeat for several; LABEL=SOURCE names it in the report "
            "(default: none, so the built-in tiny world is audited)", "list", "ID_OR_PATH"),
    _Option("full-model", "the TOFU-full reference (fine-tuned on all authors) (default: none)",
            metavar="ID_OR_PATH"),
    _Option("retain-model", "the retain reference (never saw the forget authors) (default: none)",
            metavar="ID_OR_PATH"),
    _Option("base-model", "the base reference (no TOFU training at all) (default: none)",
            metavar="ID_OR_PATH"),
    _Option("retain-logs", "the retain model's stored eval logs (TOFU or open-unlearning format), "
            "used for forget quality instead of running a retain model (default: none)", metavar="PATH"),
    _Option("dataset", "TOFU-format data: a hub id or a local directory of split files "
            f"(default: {DEFAULT_DATASET}; the tiny world's fixtures when no model is given)",
            metavar="ID_OR_DIR"),
    _Option("forget-split", "the forget split to audit (default: forget10)", metavar="SPLIT"),
    _Option("holdout-split", "texts no model trained on, the non-members of the privacy view's "
            "membership inference (default: holdout10, TOFU's name)", metavar="SPLIT"),
    _Option("views", "comma-separated views to run (default: all)", metavar="V1,V2"),
    _Option("view-option", "one of a view's own typed options, e.g. masked_probe.steps=50 or "
            "rtt.epochs=5; repeat for several (ini: one per line); an unknown name or a bad value "
            "is an error that lists the view's options (default: each view's own)", "list",
            "VIEW.NAME=VALUE"),
    _Option("limit", "audit only the first N items of each split (default: all)", metavar="N"),
    _Option("samples", "samples per prompt for best-of-N (default: 16)", metavar="N"),
    _Option("temperature", "sampling temperature for best-of-N (default: 1.0)", metavar="T"),
    _Option("top-p", "nucleus sampling top-p for best-of-N (default: 1.0)", metavar="P"),
    _Option("max-new-tokens", "generation length limit (default: 200)", metavar="N"),
    _Option("device", "auto, cpu, cuda, cuda:N or mps (default: auto)", metavar="DEVICE"),
    _Option("dtype", f"{', '.join(DTYPES[:1] + ('float32', 'bfloat16', 'float16'))} "
            "(default: auto: bfloat16 on CUDA, float32 on CPU)", metavar="DTYPE"),
    _Option("batch-size", "batch size of the engine, or auto (default: auto)", metavar="N"),
    _Option("seed", "seed of every sampled or trained step (default: 0)", metavar="N"),
    _Option("leak-threshold", "share of an item's novel content a generation must contain to "
            "count as a leak, in (0, 1] (default: 0.5)", metavar="X"),
    _Option("prompt-format", "chat (the tokenizer's chat template) or plain (default: chat)",
            metavar="FORMAT"),
    _Option("system-prompt", "system prompt of the chat template; an empty string for none "
            "(default: 'You are a helpful assistant.')", metavar="TEXT"),
    _Option("compat", "none, or open-unlearning: tokenise, mask, stop and score every TOFU number "
            "as open-unlearning's evaluator does, to reproduce its numbers item for item; "
            "docs/differences.md lists what changes (default: none)", metavar="MODE"),
    _Option("compat-openunlearning-mask", "deprecated alias of --compat open-unlearning "
            "(default: off)", "bool"),
    _Option("trust-remote-code", "run a checkpoint's own Python code when loading it (default: off)",
            "bool"),
    _Option("allow-pickle", "accept pickle weights (*.bin, *.pt), which can execute code when "
            "loaded (default: off: safetensors only)", "bool"),
    _Option("reference-dir", "directory of reference results: paper.yaml and tiny_world/ "
            "(default: reference_results/)", metavar="DIR"),
    _Option("gates", "release gates file (default: <reference-dir>/gates.yaml)", metavar="PATH"),
    _Option("allow-incomplete", "exit 0 even when a candidate's verdict is INCOMPLETE (a gate did "
            "not run); without it an incomplete audit fails the run, since it is not a pass "
            "(default: off)", "bool"),
    _Option("update-golden", "record this run's tiny-world values as the new golden values "
            "instead of comparing with them (default: off)", "bool"),
    _Option("report-dir", "where report.md, results.json and items.jsonl go (default: audit-report/)",
            metavar="DIR"),
    _Option("cache-dir", "cache of built models and engine answers "
            "(default: $UNLEARN_AUDIT_CACHE or ~/.cache/unlearn-audit)", metavar="DIR"),
)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(HookSpecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("unlearn-audit", "unlearn-audit: audit an unlearned model")
    for opt in _OPTIONS:
        if opt.kind == "bool":
            group.addoption(opt.flag, action="store_true", default=None, dest=opt.dest, help=opt.help)
            parser.addini(opt.dest, opt.help, type="bool", default=False)
        elif opt.kind == "list":
            group.addoption(opt.flag, action="append", default=None, dest=opt.dest,
                            metavar=opt.metavar, help=opt.help)
            parser.addini(opt.dest, opt.help, type="linelist", default=[])
        else:
            group.addoption(opt.flag, default=None, dest=opt.dest, metavar=opt.metavar, help=opt.help)
            parser.addini(opt.dest, opt.help, type="string", default="")


# --- typed parsers: each raises pytest.UsageError naming the option ---------------------------------
class _Options:
    """Reads each option from the command line, then the ini file, and parses it."""

    def __init__(self, config: pytest.Config):
        self.config = config

    def raw(self, name: str) -> tuple[Any, str]:
        """(value, where): where is ``cli``, ``ini`` or ``default`` (value ``None``)."""
        dest = "audit_" + name.replace("-", "_")
        value = self.config.getoption(dest)
        if value not in (None, []):
            return value, "cli"
        ini = self.config.getini(dest)
        if ini not in ("", None, [], False):
            return ini, "ini"
        return None, "default"

    def bad(self, name: str, where: str, problem: str) -> pytest.UsageError:
        origin = f" (from {self.config.inipath or 'the ini file'}, key audit_{name.replace('-', '_')})" if where == "ini" else ""
        return pytest.UsageError(f"--{name}{origin}: {problem}")

    def get(self, name: str, parse: Callable[[str], Any], default: Any) -> Any:
        raw, where = self.raw(name)
        if raw is None:
            return default
        try:
            return parse(str(raw).strip())
        except ValueError as e:
            raise self.bad(name, where, str(e)) from None

    def flag(self, name: str) -> bool:
        raw, _ = self.raw(name)
        return bool(raw)

    def path(self, name: str, default: str | None) -> Path | None:
        """Command-line paths are relative to where pytest was started, ini paths to the ini
        file, defaults to the rootdir (so `pytest audits` finds reference_results/ anywhere)."""
        raw, where = self.raw(name)
        if raw is None:
            return None if default is None else Path(self.config.rootpath) / default
        p = Path(os.path.expanduser(str(raw).strip()))
        if p.is_absolute():
            return p
        base = self.config.invocation_params.dir if where == "cli" else (
            self.config.inipath.parent if self.config.inipath else self.config.rootpath)
        return Path(base) / p


def _int(minimum: int, what: str) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected {what}, got {raw!r}") from None
        if value < minimum:
            raise ValueError(f"expected {what}, got {raw!r}")
        return value

    return parse


def _float(lo: float, hi: float, what: str, *, lo_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected {what}, got {raw!r}") from None
        if not (lo < value <= hi if lo_open else lo <= value <= hi):
            raise ValueError(f"expected {what}, got {raw!r}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            close = difflib.get_close_matches(raw, choices, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ValueError(f"expected one of {', '.join(choices)}, got {raw!r}.{hint}")
        return raw

    return parse


def _device(raw: str) -> str:
    if not _DEVICE_RE.match(raw):
        raise ValueError(f"expected auto, cpu, cuda, cuda:N or mps, got {raw!r}")
    return raw


def _batch_size(raw: str) -> int | None:
    return None if raw == "auto" else _int(1, "a positive whole number or 'auto'")(raw)


def _compat(opts: _Options) -> str:
    """--compat, with the deprecated --compat-openunlearning-mask as its alias."""
    compat = opts.get("compat", _choice("none", "open-unlearning"), None)
    if opts.flag("compat-openunlearning-mask"):
        warnings.warn(
            "--compat-openunlearning-mask is deprecated; use --compat open-unlearning, which "
            "reproduces open-unlearning's tokenisation, mask, stopping and formulas.",
            DeprecationWarning,
            stacklevel=2,
        )
        if compat == "none":
            raise pytest.UsageError(
                "--compat none contradicts --compat-openunlearning-mask (an alias of "
                "--compat open-unlearning); drop one of them."
            )
        compat = "open-unlearning"
    return compat or "none"


def _views(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))
    if not names:
        raise ValueError("expected a comma-separated list of views, got nothing")
    return names


def _check_views(names: tuple[str, ...], where: str, config: pytest.Config) -> None:
    known = set(KNOWN_VIEWS)
    try:  # registered views beyond views.md count too; a broken view module errors its own test
        from unlearn_audit.views import available_views

        known |= set(available_views())
    except Exception:
        pass
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            origin = f" (from {config.inipath}, key audit_views)" if where == "ini" else ""
            raise pytest.UsageError(
                f"--views{origin}: unknown view '{name}'.{hint} Available: {', '.join(sorted(known))}."
            )


def _view_options(opts: _Options) -> dict[str, dict[str, Any]]:
    """--view-option entries as text, syntax checked; typed against each view's declared
    options at collection (:func:`_resolve_view_options`), once test modules have
    registered their views."""
    raw, where = opts.raw("view-option")
    if not raw:
        return {}
    from unlearn_audit.views._options import ViewOptionError, parse_entries

    try:
        return parse_entries(raw)
    except ViewOptionError as e:
        raise opts.bad("view-option", where, str(e)) from None


def _resolve_view_options(config: pytest.Config, session: AuditSession) -> None:
    """Type and check the --view-option values before any test runs (only the views named
    are imported, and only when the option is used)."""
    if not session.config.view_options:
        return
    from unlearn_audit.views._options import ViewOptionError, resolve

    try:
        session.config.view_options = resolve(session.config.view_options)
    except ViewOptionError as e:
        opts = _Options(config)
        raise opts.bad("view-option", opts.raw("view-option")[1], str(e)) from None


def _default_cache_dir() -> Path:
    env = os.environ.get("UNLEARN_AUDIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unlearn-audit"


# --- models -----------------------------------------------------------------------------------------
def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(source))


# A label names the model in the report and in plot file names, so it is one plain word.
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LABEL_RULES = (
    "A LABEL in LABEL=SOURCE is 1-64 letters, digits, '.', '_' or '-', starting with a letter "
    "or digit (no '/', no '..', no spaces)."
)


def plan_models(entries: list[tuple[str, str]]) -> list[PlannedModel]:
    """Labels for user-given models: ``LABEL=SOURCE`` when given, else the directory name or
    the hub id's last part; clashes take the parent directory or hub owner, then a number.

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
        if _looks_like_path(source):
            source = os.path.expanduser(source)
        parts = [p for p in re.split(r"[/\\]+", source.rstrip("/\\")) if p not in ("", ".")]
        parsed.append((role, source, explicit.strip(), parts or [source]))
    labels: list[str] = []
    for i, (_role, _source, explicit, parts) in enumerate(parsed):
        if explicit:
            labels.append(explicit)
            continue
        label = parts[-1]
        others = [p for j, p in enumerate(parsed) if j != i]
        if any((o[2] or o[3][-1]) == label for o in others) and len(parts) > 1:
            label = f"{parts[-2]}-{parts[-1]}"
        labels.append(label)
    seen: dict[str, int] = {}
    out = []
    for (role, source, explicit, _), label in zip(parsed, labels, strict=True):
        if label in seen:
            if explicit:
                raise pytest.UsageError(f"model label {label!r} is used twice; give each model its own LABEL=")
            seen[label] += 1
            label = f"{label}-{seen[label]}"
        seen.setdefault(label, 1)
        out.append(PlannedModel(label, role, source))
    return out


def _tiny_world_plan() -> list[PlannedModel]:
    from unlearn_audit import world

    plan = [PlannedModel(name, "candidate") for name in world.CANDIDATES]
    return plan + [PlannedModel(name, role) for name, role in world.REFERENCES.items()]


# --- configure: build the session once ---------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    from unlearn_audit.context import AuditConfig

    opts = _Options(config)
    models = [("candidate", m) for m in (opts.raw("model")[0] or [])]
    for role in ("full", "retain", "base"):
        raw, _ = opts.raw(f"{role}-model")
        if raw:
            models.append((role, str(raw)))
    tiny_world = not models
    update_golden = opts.flag("update-golden")
    if update_golden and not tiny_world:
        raise pytest.UsageError(
            "--update-golden: golden values exist only for the tiny world; drop --model and the "
            "reference model options, or drop --update-golden"
        )
    _, views_where = opts.raw("views")
    views = opts.get("views", _views, None)
    if views:
        _check_views(views, views_where, config)
    view_options = _view_options(opts)
    system_prompt = opts.get("system-prompt", lambda s: s, AuditConfig.system_prompt)
    retain_logs = opts.path("retain-logs", None)
    dataset = opts.get("dataset", lambda s: s, None)
    if dataset is None and tiny_world:
        # Resolved to the fixtures directory when the context is built; the placeholder keeps
        # results.json the same on every checkout.
        dataset = TINY_WORLD_DATASET
    elif dataset is not None and _looks_like_path(dataset):
        dataset = str(opts.path("dataset", None))
    audit_config = AuditConfig(
        dataset=dataset or DEFAULT_DATASET,
        forget_split=opts.get("forget-split", lambda s: s, "forget10"),
        holdout_split=opts.get("holdout-split", lambda s: s, "holdout10"),
        limit=opts.get("limit", _int(1, "a positive whole number of items"), None),
        samples=opts.get("samples", _int(1, "a positive whole number of samples"), 16),
        temperature=opts.get("temperature", _float(0.0, float("inf"), "a number >= 0"), 1.0),
        top_p=opts.get("top-p", _float(0.0, 1.0, "a number in (0, 1]", lo_open=True), 1.0),
        max_new_tokens=opts.get("max-new-tokens", _int(1, "a positive whole number of tokens"), 200),
        leak_threshold=opts.get("leak-threshold", _float(0.0, 1.0, "a fraction in (0, 1]", lo_open=True), 0.5),
        device=opts.get("device", _device, "auto"),
        dtype=opts.get("dtype", _choice(*DTYPES), "auto"),
        batch_size=opts.get("batch-size", _batch_size, None),
        seed=opts.get("seed", _int(0, "a whole number >= 0"), 0),
        prompt_format=opts.get("prompt-format", _choice("chat", "plain"), "chat"),
        system_prompt=system_prompt or None,
        compat=_compat(opts),
        retain_logs=str(retain_logs) if retain_logs else None,
        views=views,
        view_options=view_options,
        trust_remote_code=opts.flag("trust-remote-code"),
        allow_pickle=opts.flag("allow-pickle"),
        report_dir=opts.path("report-dir", "audit-report"),
        cache_dir=opts.path("cache-dir", None) or _default_cache_dir(),
    )
    planned = [] if tiny_world else plan_models(models)
    reference_dir = opts.path("reference-dir", "reference_results")
    gates_path = opts.path("gates", None) or reference_dir / "gates.yaml"
    state: dict[str, Any] = {}

    def injected() -> AuditContext | None:
        if "ctx" not in state:
            state["ctx"] = config.hook.pytest_unlearn_audit_context(
                config=config, audit_config=audit_config, tiny_world=tiny_world
            )
        return state["ctx"]

    def plan() -> list[PlannedModel]:
        ctx = injected()
        if ctx is not None:
            return [PlannedModel(label, spec.role, getattr(spec, "source", None)) for label, spec in ctx.models.items()]
        return _tiny_world_plan() if tiny_world else planned

    def context() -> AuditContext:
        ctx = injected()
        if ctx is not None:
            return ctx
        return _default_context(audit_config, tiny_world, planned)

    config.stash[SESSION_KEY] = AuditSession(
        audit_config,
        tiny_world=tiny_world,
        plan=plan,
        context_factory=context,
        reference_dir=reference_dir,
        gates_path=gates_path,
        root=Path(config.rootpath),
        update_golden=update_golden,
        package_version=__version__,
        allow_incomplete=opts.flag("allow-incomplete"),
        # Under pytest-xdist the controller made this directory and handed it to the worker.
        run_dir=Path(config.workerinput[_RUN_DIR_KEY]) if _RUN_DIR_KEY in getattr(config, "workerinput", {}) else None,
    )
    config.addinivalue_line("markers", "audit(view): an audit test of one view (added automatically)")
    config.pluginmanager.register(_Reporter(config), "unlearn-audit-reporter")


def _default_context(audit_config: AuditConfig, tiny_world: bool, planned: list[PlannedModel]) -> AuditContext:
    """The real context: the tiny world's models, or the user's checkpoints (loaded lazily)."""
    from unlearn_audit.context import AuditContext

    if tiny_world:
        from unlearn_audit import world

        if audit_config.dataset == TINY_WORLD_DATASET:
            audit_config = dataclasses.replace(
                audit_config, dataset=str(world.fixtures_dir(audit_config.cache_dir))
            )
        specs = world.default_models(audit_config.cache_dir)
        expected = {p.label for p in _tiny_world_plan()}
        if set(specs) != expected:  # the labels were used for parametrization already
            raise RuntimeError(
                f"tiny world models {sorted(specs)} differ from world.CANDIDATES + world.REFERENCES "
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


def _session(config: pytest.Config) -> AuditSession:
    return config.stash[SESSION_KEY]


# --- collection ---------------------------------------------------------------------------------------
def _is_audit_test(obj: Any) -> bool:
    names = getattr(obj, "fixturenames", ())
    return "audit" in names and "model" in names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _is_audit_test(metafunc):
        return
    labels = [p.label for p in _session(metafunc.config).plan()]
    metafunc.parametrize("model", labels, indirect=True, ids=labels, scope="session")


def _view_of_item(item: pytest.Item) -> str | None:
    """The view an audit test checks: its ``audit(view)`` marker, else ``test_<view>``."""
    marker = item.get_closest_marker("audit")
    if marker is not None and marker.args:
        return str(marker.args[0])
    name = getattr(item, "originalname", item.name)
    return name[len("test_"):] if name.startswith("test_") else None


@pytest.hookimpl(tryfirst=True)  # before `-m`/`-k` selection, so `-m audit` sees the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    audit_items = [it for it in items if _is_audit_test(it)]
    if not audit_items:
        return
    session = _session(config)
    try:
        from unlearn_audit.views import available_views

        extra = tuple(available_views())
    except Exception:  # a broken view module fails its own test with the real error
        extra = ()
    _resolve_view_options(config, session)
    try:  # malformed reference results stop the run before any model loads
        session.references(extra)
    except ReferenceResultsError as e:
        hint = " (pass --gates PATH or --reference-dir DIR)" if str(e).endswith("file not found") else ""
        raise pytest.UsageError(f"{e}{hint}") from None
    keep, drop = [], []
    for item in items:
        view = _view_of_item(item) if item in audit_items else None
        if view is not None:
            item.stash[_VIEW_KEY] = view
            item.add_marker(pytest.mark.audit(view))
        if view is not None and not session.selected(view) and view in (*KNOWN_VIEWS, *extra):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# --- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def model(request: pytest.FixtureRequest) -> str:
    """The label of the model under audit; parametrized over the run's models."""
    label = getattr(request, "param", None)
    if label is None:
        pytest.fail("the `model` fixture is parametrized only for tests that also use `audit`", pytrace=False)
    return label


class Audit:
    """What an audit test calls: ``audit.check("novel_recall", model)``."""

    def __init__(self, session: AuditSession, record_property: Callable[[str, object], None],
                 config: pytest.Config | None = None):
        self._session = session
        self._record_property = record_property
        self._config = config

    @property
    def context(self) -> AuditContext:
        """The session's :class:`AuditContext` (for tests that need more than ``check``)."""
        return self._session.ctx

    def _record(self, outcome) -> None:
        for row in outcome.rows:  # plain numbers, for junitxml and anyone reading properties
            self._record_property(row.metric, row.value)
        self._record_property(PAYLOAD_KEY, outcome.to_payload())

    def _measure(self, view: str, model: str):
        """The session's measure, its progress shown live on pytest's terminal (see
        :mod:`unlearn_audit._terminal_progress`), not in the test's captured output."""
        if self._config is None or not self._session.config.progress:
            return self._session.measure(view, model)
        from unlearn_audit import progress
        from unlearn_audit._terminal_progress import TerminalProgress

        display = TerminalProgress(self._config, model, view)
        display.begin()
        try:
            with progress.reporting_to(display):
                return self._session.measure(view, model)
        finally:
            display.end()

    def check(self, view: str, model: str) -> None:
        """Run ``view`` on ``model``, record every metric, and fail on a breached gate.

        With real models the release gates decide. On the tiny world the test passes
        when every gate's verdict matches ``tiny_world/expected_verdicts.yaml`` and every
        value matches its golden value; the report still shows each gate's own verdict.
        A view that raises is an error, never a pass; a view whose every metric was
        skipped skips the test.
        """
        __tracebackhide__ = True
        if not self._session.selected(view):
            pytest.skip(f"{view} not selected (--views)")
        try:
            measured = self._measure(view, model)
        except Exception as e:
            self._record(self._session.error_outcome(view, model, e))
            raise
        self._record(measured.outcome)
        if measured.failures:
            raise AssertionError("\n".join(measured.failures))
        if measured.skip_reason:
            pytest.skip(measured.skip_reason)


@pytest.fixture
def audit(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]) -> Audit:
    """The audit session's test-facing side: ``audit.check(view, model)``."""
    return Audit(_session(request.config), record_property, request.config)


# --- reporting ------------------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    # An audit test that could not even be set up still belongs in the report, as an error.
    if call.when == "setup" and report.failed and _VIEW_KEY in item.stash:
        label = getattr(getattr(item, "callspec", None), "params", {}).get("model")
        if label is not None and call.excinfo is not None:
            outcome = _session(item.config).error_outcome(item.stash[_VIEW_KEY], label, call.excinfo.value)
            report.user_properties.append((PAYLOAD_KEY, outcome.to_payload()))
    return report


class _Reporter:
    """Collects recorded outcomes and writes the report on the controller."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.error = ""
        self.incomplete: list[str] = []
        self.owns_run_dir = False

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            # The payload carries per-item records; keep it out of junitxml's properties.
            report.user_properties = [(k, v) for k, v in report.user_properties if k != PAYLOAD_KEY]
            return
        if self.is_worker:
            return  # the controller collects from the report the worker sends it
        for key, value in report.user_properties:
            if key == PAYLOAD_KEY:
                _session(self.config).collect(value)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # After every deselection (-k, -m, --views): the pairs that are meant to run.
        planned = _session(self.config).planned
        for item in session.items:
            label = getattr(getattr(item, "callspec", None), "params", {}).get("model")
            if _VIEW_KEY in item.stash and label is not None:
                planned.append((item.stash[_VIEW_KEY], label))

    def pytest_keyboard_interrupt(self) -> None:
        _session(self.config).interrupted = True

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist, on the controller, per worker: hand it the run directory through
        which the workers share finished results (each (view, model) computed once)."""
        s = _session(self.config)
        if s.run_dir is None:
            from unlearn_audit.runner import SharedResults

            s.run_dir = SharedResults.create(s.config.cache_dir or _default_cache_dir()).dir
            self.owns_run_dir = True
        node.workerinput[_RUN_DIR_KEY] = str(s.run_dir)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            return
        try:
            _session(self.config).finish()
        except Exception as e:  # a crash here would hide every test's own message too
            self.error = f"could not write the report to {_session(self.config).config.report_dir}: {type(e).__name__}: {e}"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        # Release semantics: an INCOMPLETE verdict is not a pass, so it must not exit 0
        # (a CI job gating on the exit code would ship it) unless the user opts in.
        self.incomplete = _session(self.config).incomplete_reasons()
        if self.incomplete and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        run_dir = _session(self.config).run_dir
        if self.owns_run_dir and run_dir is not None:  # its log is in results.json now
            from unlearn_audit.runner import SharedResults

            SharedResults(run_dir).remove()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        s = _session(self.config)
        if not (s.written or self.error or s.golden_notes or self.incomplete):
            return
        terminalreporter.write_sep("-", "unlearn-audit")
        if self.error:
            terminalreporter.write_line(self.error, red=True)
        if "report.md" in s.written:
            terminalreporter.write_line(f"report: {s.written['report.md']}")
            for label, v in s.verdicts.items():
                if v.status != "REFERENCE":
                    terminalreporter.write_line(f"  {label}: {v.status}")
        for line in self.incomplete:
            terminalreporter.write_line(line, red=True)
        for note in s.golden_notes:
            terminalreporter.write_line(note)
