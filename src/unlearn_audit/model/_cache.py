"""The engine's on-disk result cache: one SQLite file per model fingerprint.

Why SQLite (stdlib): every batch is committed as it finishes, so an interrupted run
resumes where it stopped and a re-run computes nothing; a half-written batch is rolled
back instead of leaving a torn file. Values are JSON (floats round-trip exactly through
``repr``), never pickle, so a cache directory copied from elsewhere cannot run code.

The key is the SHA-256 of ``[method, engine config that changes numbers, request]``
(lm-evaluation-harness's scheme); the file name carries the model fingerprint, so another
checkpoint, tokenizer or quantization mode never reads this model's numbers.

Every entry carries a checksum: SHA-256 of the fingerprint, the key and the value's JSON
text. An edited value, a row copied to another key, or a file renamed to another model's
fingerprint fails it, and a cached number is then never served: the file counts as damaged
and is moved aside like an unreadable one. The checksum is not a signature: whoever can
write the cache can also recompute it; it stops accidents and naive edits, not a forger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import warnings
from pathlib import Path
from typing import Any

# Bump when the engine's arithmetic changes (tokenisation, masking, dtype handling), so
# old cached numbers are not served for new code.
CACHE_VERSION = 3  # 2: Gumbel-max sampling, answers cut at the model's context; 3: the decode loop, LLM.int8 outliers per token


def default_cache_dir() -> Path:
    """``$UNLEARN_AUDIT_CACHE`` or ``~/.cache/unlearn-audit``: the same root the tiny world uses."""
    env = os.environ.get("UNLEARN_AUDIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unlearn-audit"


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # A field added to a request later can say so (``omit_from_key_when_default``):
        # left at its default it stays out of the key, so older cached answers still match.
        return {
            f.name: _jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get("omit_from_key_when_default") and getattr(obj, f.name) == f.default)
        }
    if isinstance(obj, (list, tuple)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    return obj


def move_aside(path: Path) -> Path:
    """Rename a damaged cache file to the first free ``<name>.corrupt-N`` beside it (kept for
    a look, never read again) and return the new path."""
    n = 1
    while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.replace(path, aside)
    return aside


def entry_checksum(fingerprint: str, key: str, value_text: str) -> str:
    """SHA-256 binding a stored value to its key and to the model (the file's fingerprint)."""
    return hashlib.sha256(f"{fingerprint}\n{key}\n{value_text}".encode()).hexdigest()


def request_key(method: str, config: dict[str, Any], request: Any) -> str:
    """SHA-256 of ``[method, config, request]`` as canonical JSON.

    Args:
        method: ``score``, ``generate``, ...
        config: engine settings that change the numbers (prompt format, system prompt,
            date, mask mode, dtype, cache version).
        request: a frozen request dataclass (or anything JSON-serialisable).
    """
    blob = json.dumps([method, _jsonable(config), _jsonable(request)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResultCache:
    """Key -> JSON value store in ``<cache_dir>/<fingerprint>.sqlite``.

    ``cache_dir=None`` gives a cache that remembers nothing, so callers need no branches.
    A cache is never worth a failed audit: a file that is not a SQLite database, or one
    holding an entry whose checksum does not match, is moved aside (``*.corrupt-N``) and
    rebuilt, and a directory that cannot be created or written turns the cache off for the
    session; each says so in one ``RuntimeWarning``. An entry without a checksum (written
    before checksums existed) is a miss: recomputed and stored again with one.
    """

    def __init__(self, cache_dir: Path | None, fingerprint: str):
        self.fingerprint = fingerprint
        self.path = None if cache_dir is None else Path(cache_dir) / f"engine-{fingerprint}.sqlite"
        self._conn: sqlite3.Connection | None = None
        self._opened: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we opened
        self._damage_said = False
        self.hits = 0
        self.misses = 0
        self.problem = ""  # why the cache was turned off, when it was

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _open(self) -> sqlite3.Connection:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A generous timeout because pytest-xdist workers may share one file.
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS results "
                         "(key TEXT PRIMARY KEY, value TEXT NOT NULL, checksum TEXT)")
            columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
            if "checksum" not in columns:  # a file of an older version: its rows read as misses
                try:
                    conn.execute("ALTER TABLE results ADD COLUMN checksum TEXT")
                except sqlite3.OperationalError as e:
                    if "duplicate column" not in str(e):  # another worker added it first
                        raise
            conn.commit()
            conn.execute("SELECT key, value, checksum FROM results LIMIT 1").fetchall()
            st = self.path.stat()
            self._opened = (st.st_dev, st.st_ino)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        if self._conn is None:
            try:
                try:
                    self._conn = self._open()
                except sqlite3.OperationalError:
                    raise  # locked, read-only, unopenable: a property of the place, not the file
                except sqlite3.DatabaseError as e:  # "file is not a database", "malformed"
                    self._move_aside(f"was not a usable SQLite database ({e})")
                    self._conn = self._open()
            except (sqlite3.Error, OSError) as e:
                self._disable(e)
        return self._conn

    def _move_aside(self, problem: str) -> None:
        assert self.path is not None
        aside = move_aside(self.path)
        for extra in ("-wal", "-shm"):  # journal files of the broken database are broken too
            with contextlib.suppress(OSError):
                self.path.with_name(self.path.name + extra).unlink()
        warnings.warn(
            f"engine cache {self.path} {problem}; moved it to {aside.name} and recomputing its answers.",
            RuntimeWarning,
            stacklevel=4,
        )

    def _damaged(self, bad: int) -> None:
        """Entries failed their checksum: move the file aside and start a fresh one."""
        assert self.path is not None and self._conn is not None
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._conn = None
        try:
            st = self.path.stat()
            mine = (st.st_dev, st.st_ino) == self._opened
        except FileNotFoundError:
            mine = False
        if mine:  # else another worker has moved it aside already (and said so)
            try:
                self._move_aside(f"held {bad} entr{'y' if bad == 1 else 'ies'} (of those read) whose checksum "
                                 "over key and value did not match (edited or damaged), so none of it is trusted")
            except OSError as e:  # cannot move it: never read it again this session
                self._disable(e)
            self._damage_said = True
        elif not self._damage_said:
            self._damage_said = True
            warnings.warn(f"engine cache {self.path} held entries that failed their checksum; "
                          "another process moved it aside; recomputing its answers.",
                          RuntimeWarning, stacklevel=4)

    def _disable(self, error: BaseException) -> None:
        """Run uncached from now on, saying so once."""
        where = self.path.parent if self.path is not None else "?"
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self.path = None
        self.problem = f"{type(error).__name__}: {error}"
        warnings.warn(
            f"engine cache directory {where} cannot be used ({self.problem}); running without the "
            "cache, so nothing is kept for the next run. Fix: pass --cache-dir with a writable "
            "directory (or set UNLEARN_AUDIT_CACHE).",
            RuntimeWarning,
            stacklevel=4,
        )

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """The cached values among ``keys`` (missing keys are simply absent)."""
        conn = self._connect()
        if conn is None or not keys:
            self.misses += len(keys)
            return {}
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        bad = 0
        try:
            for i in range(0, len(unique), 500):  # SQLite caps bound parameters per statement
                chunk = unique[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for k, v, checksum in conn.execute(
                    f"SELECT key, value, checksum FROM results WHERE key IN ({marks})", chunk
                ):
                    if checksum is None:
                        continue  # an entry of an older version: recomputed, stored with one
                    if checksum != entry_checksum(self.fingerprint, k, v):
                        bad += 1
                        continue
                    found[k] = json.loads(v)
        except (sqlite3.Error, ValueError) as e:  # damaged after opening: recompute uncached
            self._disable(e)
            found = {}
        if bad:
            # One damaged entry says the file cannot be trusted: none of this batch is
            # served, and later reads go to a fresh file.
            self._damaged(bad)
            found = {}
        self.hits += sum(k in found for k in keys)
        self.misses += sum(k not in found for k in keys)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store and commit at once, so a crash after this call loses nothing."""
        conn = self._connect()
        if conn is None or not items:
            return
        try:
            rows = [(k, json.dumps(v)) for k, v in items.items()]
            conn.executemany(
                "INSERT OR REPLACE INTO results (key, value, checksum) VALUES (?, ?, ?)",
                [(k, text, entry_checksum(self.fingerprint, k, text)) for k, text in rows],
            )
            conn.commit()
        except sqlite3.Error as e:  # e.g. a read-only file or a full disk: keep auditing
            self._disable(e)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
