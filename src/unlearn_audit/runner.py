"""Scheduling views: each (view, model) computed once, its declared needs first.

A view declares the results it reads (:meth:`View.requires
<unlearn_audit.views.View.requires>`: forget quality needs the retain model's TOFU
result, format_shift's ``minus_base`` needs the base model's). The :class:`Runner`
resolves that graph depth first, refuses a cycle with the chain that forms it, and
memoises every result for the session.

Under pytest-xdist each worker has its own runner; they share finished results through a
run directory (:class:`SharedResults`) that the controller creates and hands to every
worker. A result is computed under a file lock on its own key, so across all workers each
(view, model) is computed at most once, and the others read it back from disk. A stored
result is found by a hash of its exact key (view, model label, the model's spec), never by
a readable name alone (``npo+v1`` and ``npo_v1`` once shared one file and so one verdict),
and it carries that key, the fingerprint of the model it was computed on and a checksum,
all checked on read. Every computation is logged (``computed.jsonl``) and reaches
``results.json`` as the run's ``computed`` list, which is how a user (and a test) sees that
each reference ran once.

A result the view raised on is never stored: each worker that needs it raises the same
error in its own test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unlearn_audit.context import AuditContext
    from unlearn_audit.views import ViewResult

__all__ = ["DependencyError", "Runner", "SharedResultError", "SharedResults", "worker_id"]

#: Where a session's run directories live, under the cache directory.
RUNS_DIR = "runs"


class DependencyError(RuntimeError):
    """The views' declared needs form a cycle, or a view asked for a result it did not declare."""


def worker_id() -> str:
    """``gw0``, ``gw1``, ... under pytest-xdist; ``main`` otherwise."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _slug(text: str) -> str:
    """A readable file-name part; many texts share one, so it never names a file alone."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:40]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class SharedResultError(RuntimeError):
    """A stored result belongs to another model than the one this process loaded."""


class SharedResults:
    """Finished results shared by the processes of one run, in one directory.

    ``<view>--<model slug>--<sha256 of the key>.json`` holds a result (the slug is for
    people; the hash, of the canonical JSON of ``{view, model, identity}``, is what cannot
    collide), ``.lock`` beside it guards its computation, and ``computed.jsonl`` logs one
    line per computation: ``{view, model, worker}``. The file holds ``{key, fingerprint,
    result, sha256}``; a file whose checksum or key does not match is damaged: moved aside,
    recomputed, and said in one warning.
    """

    LOG = "computed.jsonl"

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self._damage_said = False
        #: label -> fingerprint of the model each result read or computed here was computed
        #: on, where known: a model whose results all came from another worker is never
        #: loaded in this one, and the report still names what was audited.
        self.fingerprints: dict[str, str] = {}

    @classmethod
    def create(cls, cache_dir: Path) -> SharedResults:
        """A fresh run directory under ``cache_dir/runs`` (stale ones of crashed runs, older
        than a day, are removed on the way)."""
        root = Path(cache_dir) / RUNS_DIR
        root.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - 86400
        for old in root.iterdir():
            try:
                if old.is_dir() and old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        run = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        run.mkdir()
        return cls(run)

    @staticmethod
    def key(view: str, model: str, identity: Any = None) -> dict[str, Any]:
        """The exact key of a result: the view, the model's label as given and ``identity``
        (what the run knows of the model without loading it: its spec)."""
        return {"view": view, "model": model, "identity": identity}

    def _path(self, key: dict[str, Any], suffix: str) -> Path:
        digest = hashlib.sha256(_canonical(key).encode()).hexdigest()
        return self.dir / f"{_slug(key['view'])}--{_slug(key['model'])}--{digest}{suffix}"

    @staticmethod
    def _checksum(key: dict[str, Any], fingerprint: str | None, result: str) -> str:
        return hashlib.sha256(_canonical([key, fingerprint, result]).encode()).hexdigest()

    def _read(self, done: Path, key: dict[str, Any]) -> tuple[str | None, str] | None:
        """``(fingerprint, result text)`` of a stored result, or ``None`` when there is
        none or it is damaged (then moved aside, said once)."""
        try:
            text = done.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            stored = json.loads(text)
            fingerprint, result = stored["fingerprint"], stored["result"]
            ok = (stored["key"] == json.loads(_canonical(key))
                  and stored["sha256"] == self._checksum(key, fingerprint, result))
        except (ValueError, KeyError, TypeError):
            ok = False
        if ok:
            return fingerprint, result
        from unlearn_audit.model._cache import move_aside

        aside = move_aside(done)
        if not self._damage_said:
            self._damage_said = True
            import warnings

            warnings.warn(
                f"shared result {done} did not match its key and checksum (edited or damaged); "
                f"moved it to {aside.name} and computing {key['view']} on {key['model']} again.",
                RuntimeWarning,
                stacklevel=3,
            )
        return None

    def get_or_compute(self, view: str, model: str, compute: Callable[[], ViewResult], *,
                       identity: Any = None,
                       fingerprint: Callable[[], str | None] = lambda: None) -> ViewResult:
        """The stored result of (view, model), or ``compute()``'s, stored for the others;
        the fingerprint of the model it was computed on goes to :attr:`fingerprints`.

        The lock is held while computing, so a second worker asking for the same key waits
        and then reads the first one's result instead of computing it again.

        Args:
            identity: what names the model beyond its label (its spec), part of the key.
            fingerprint: the model's fingerprint as this process knows it, called after a
                computation (to store it) and after a read (to compare: when both are
                known, they must be equal).

        Raises:
            SharedResultError: the stored result was computed on other weights than the
                ones this process loaded under the same label.
        """
        from filelock import FileLock

        from unlearn_audit.views import ViewResult

        key = self.key(view, model, identity)
        done = self._path(key, ".json")
        with FileLock(str(self._path(key, ".lock"))):
            stored = self._read(done, key)
            if stored is not None:
                theirs, text = stored
                mine = fingerprint()
                if mine is not None and theirs is not None and mine != theirs:
                    raise SharedResultError(
                        f"{view} on {model}: another worker computed it on a model with fingerprint "
                        f"{theirs}, while this worker has {mine} for the same label and source, so "
                        "the checkpoint changed during the run. Fix: keep the model files unchanged "
                        "while auditing, and run again."
                    )
                if theirs is not None:
                    self.fingerprints.setdefault(model, theirs)
                return ViewResult.loads(text)
            result = compute()
            fp = fingerprint()
            text = result.dumps()
            payload = {"key": key, "fingerprint": fp, "result": text,
                       "sha256": self._checksum(key, fp, text)}
            tmp = done.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
            os.replace(tmp, done)  # readers never see half a file
            self.log(view, model)
        if fp is not None:
            self.fingerprints.setdefault(model, fp)
        return result

    def log(self, view: str, model: str) -> None:
        line = json.dumps({"view": view, "model": model, "worker": worker_id()})
        with open(self.dir / self.LOG, "a", encoding="utf-8") as f:  # one short append per line
            f.write(line + "\n")

    def computed(self) -> list[dict[str, Any]]:
        """Every logged computation, in log order."""
        try:
            text = (self.dir / self.LOG).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Runner:
    """Computes (view, model) results for one :class:`AuditContext`, each once.

    Args:
        ctx: the context views run in (its ``result`` method delegates here).
        shared: the run directory shared with other processes, or ``None`` for a
            single-process run (the computations are then logged in :attr:`computed`).
    """

    def __init__(self, ctx: AuditContext, shared: SharedResults | None = None):
        self.ctx = ctx
        self.shared = shared
        self._done: dict[tuple[str, str], ViewResult] = {}
        self._stack: list[tuple[str, str]] = []  # results being computed, outermost first
        self._allowed: list[set[tuple[str, str]]] = []  # declared needs of each on the stack
        #: ``{view, model, worker}`` per computation in this process.
        self.computed: list[dict[str, Any]] = []

    def result(self, view: str, model: str) -> ViewResult:
        """The result of ``view`` on ``model``: memoised, shared, or computed now.

        Raises:
            DependencyError: a cycle in the declared needs, or a view asking for a result
                it did not declare.
        """
        key = (view, model)
        if key in self._done:
            return self._done[key]
        if self._allowed and key not in self._allowed[-1]:
            asking = self._stack[-1]
            raise DependencyError(
                f"view {asking[0]!r} on {asking[1]!r} asked for {view!r} on {model!r} without "
                f"declaring it: return {key!r} from {asking[0]}.requires() so the runner can "
                "compute it first (and once across pytest-xdist workers)"
            )
        if key in self._stack:
            chain = " -> ".join(f"{v}({m})" for v, m in [*self._stack[self._stack.index(key):], key])
            raise DependencyError(f"the views' declared needs form a cycle: {chain}")
        from unlearn_audit.views import get_view

        v = get_view(view)
        self._stack.append(key)
        try:
            needs = {tuple(k) for k in v.requires(self.ctx, model)}
            for need in sorted(needs):
                self.result(*need)  # depth first: needs are done before this one starts
            self._allowed.append(needs)
            try:
                self._done[key] = self._compute(v, view, model)
            finally:
                self._allowed.pop()
        finally:
            self._stack.pop()
        return self._done[key]

    def _identity(self, model: str) -> Any:
        try:
            spec = self.ctx.spec(model)
        except KeyError:
            return None
        return dataclasses.asdict(spec) if dataclasses.is_dataclass(spec) else repr(spec)

    def _compute(self, v: Any, view: str, model: str) -> ViewResult:
        if self.shared is None:
            return self._run(v, view, model)
        return self.shared.get_or_compute(
            view, model, lambda: self._run(v, view, model),
            identity=self._identity(model), fingerprint=lambda: self.ctx.known_fingerprint(model),
        )

    def _run(self, v: Any, view: str, model: str) -> ViewResult:
        from unlearn_audit.model._types import BackendUnavailable
        from unlearn_audit.views import Skip

        try:
            result = v.run(self.ctx, model)
        except BackendUnavailable as e:  # a typed skip: the audit did not fully run here
            result = v.skipped(model, f"the backend of {model} cannot run {view}: {e}", Skip.BACKEND_UNAVAILABLE)
        # Before the result is shared, so every worker's copy carries the warnings.
        warnings = self.ctx.reference_warnings(model, v.requires(self.ctx, model))
        result.warnings.extend(w for w in warnings if w not in result.warnings)
        self.computed.append({"view": view, "model": model, "worker": worker_id()})
        return result

    def results(self) -> list[ViewResult]:
        return list(self._done.values())

    @property
    def fingerprints(self) -> dict[str, str]:
        """label -> fingerprint of models whose results were shared with other workers."""
        return self.shared.fingerprints if self.shared is not None else {}
