"""The report directory's files: checked before the run, written all or nothing.

Every file of a report goes through :class:`ReportFiles`: each is first written in full
to a staging directory the writer makes inside the report directory, and only when all
of them are there are they renamed into place (``os.replace``, relative to directory
descriptors). A full disk or ``ulimit -f`` therefore fails before anything is renamed
and leaves the previous report as it was, never a torn file beside an older one.

Nothing inside the report directory is trusted: a symlink at a target is replaced (the
link itself, never the file it points to), ``plots/`` must be a real directory, the plot
manifest is read only if it is a regular file, and a stale plot is removed only if it
is a regular file whose sha256 is the one recorded when this package wrote it. A file
under ``plots/`` that is not ours (not in the manifest, or changed since) is never
overwritten: the plugin stops before the run when it can foresee the clash
(:func:`check_report_dir`), and the writer draws no plot over it otherwise, saying so.
The report directory itself may be a symlink the user gave (it is followed).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PLOTS_DIR", "PLOTS_MANIFEST", "REPORT_FILES", "ReportDirError", "ReportFiles", "append_no_follow",
           "check_report_dir"]

REPORT_FILES = ("report.md", "results.json", "items.jsonl")
PLOTS_DIR = "plots"
#: The plots this package wrote last time, with each file's sha256 (``{"files": {name: sha}}``).
#: Only those, unchanged, are ever removed; any other file under ``plots/`` is the user's.
#: A manifest of an older version (a bare list of names, no hashes) lets nothing be removed.
PLOTS_MANIFEST = ".unlearn-audit-plots.json"
_STAGE_PREFIX = ".unlearn-audit-staging-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


class ReportDirError(ValueError):
    """The report directory cannot take a report (one line: the path and the fix)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _lstat(path: Path | str, dir_fd: int | None = None) -> os.stat_result | None:
    try:
        return os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _read_no_follow(name: str, dir_fd: int, limit: int = 1 << 30) -> bytes | None:
    """A regular file's bytes, or None when it is missing, a symlink or anything else."""
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0), dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read(limit)
    finally:
        os.close(fd)


def read_manifest(plots_fd: int | None) -> dict[str, str | None]:
    """name -> recorded sha256 (``None`` for an old manifest without hashes)."""
    raw = None if plots_fd is None else _read_no_follow(PLOTS_MANIFEST, plots_fd)
    if raw is None:
        return {}  # none, or a symlink planted in its place: nothing is ours
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        return {}
    if isinstance(data, list):  # written before hashes were recorded
        entries = {n: None for n in data}
    elif isinstance(data, dict) and isinstance(data.get("files"), dict):
        entries = {n: h if isinstance(h, str) else None for n, h in data["files"].items()}
    else:
        return {}
    # Plain file names only: a hand-edited manifest must never reach outside plots/.
    return {n: h for n, h in entries.items()
            if isinstance(n, str) and n == Path(n).name and n not in (".", "..") and n.endswith(".png")}


def is_ours(name: str, plots_fd: int, manifest: dict[str, str | None]) -> bool:
    """Whether ``plots/<name>`` may be replaced: absent, or a regular file this package wrote
    and nobody changed since. A legacy entry (no hash) counts as ours for replacing, never
    for removing: the first run after an upgrade keeps working."""
    st = _lstat(name, plots_fd)
    if st is None:
        return True
    if not stat.S_ISREG(st.st_mode) or name not in manifest:
        return False
    recorded = manifest[name]
    if recorded is None:
        return True
    data = _read_no_follow(name, plots_fd)
    return data is not None and _sha256(data) == recorded


def _open_dir(path: Path | str, dir_fd: int | None = None, follow: bool = False) -> int:
    return os.open(path, os.O_RDONLY | _DIRECTORY | (0 if follow else _NOFOLLOW), dir_fd=dir_fd)


def check_report_dir(path: Path, plot_names: Iterable[str] = (), option: str = "--report-dir") -> None:
    """Raise :class:`ReportDirError` when ``path`` cannot take this run's report.

    It must be a directory (a symlink to one, given by the user, is fine) or creatable,
    and writable; ``plots/`` in it a real directory; report.md, results.json and
    items.jsonl not directories; and no file of the user's may sit at one of
    ``plot_names`` (the plots this run would write).
    """
    p = Path(path)
    fix = f"pass another {option} DIR"
    if not os.path.lexists(p):
        parent = p.parent
        while not os.path.lexists(parent) and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ReportDirError(f"{option} {p}: cannot be created ({parent} is not a writable directory); {fix}")
        return
    if not p.is_dir():
        what = "a symlink to something that is not a directory" if p.is_symlink() else "a file, not a directory"
        raise ReportDirError(f"{option} {p}: is {what}; remove it or {fix}")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ReportDirError(f"{option} {p}: directory is not writable; make it writable or {fix}")
    for name in REPORT_FILES:
        st = _lstat(p / name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise ReportDirError(f"{option} {p}: {p / name} is a directory where the report writes a file; "
                                 f"move it away or {fix}")
    st = _lstat(p / PLOTS_DIR)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise ReportDirError(f"{option} {p}: {p / PLOTS_DIR} is {what}; the report draws its plots into a "
                             f"directory of its own there: move it away or {fix}")
    if not os.access(p / PLOTS_DIR, os.W_OK | os.X_OK):
        raise ReportDirError(f"{option} {p}: {p / PLOTS_DIR} is not writable; make it writable or {fix}")
    fd = _open_dir(p / PLOTS_DIR)
    try:
        manifest = read_manifest(fd)
        for name in sorted(set(plot_names)):
            if not is_ours(name, fd, manifest):
                raise ReportDirError(
                    f"{option} {p}: {p / PLOTS_DIR / name} is not a plot unlearn-audit wrote (a file of yours, "
                    f"or changed since) and this run would write its plot there; move it away or {fix}")
    finally:
        os.close(fd)


class ReportFiles:
    """One report's files, staged in full and then renamed into ``report_dir`` together.

    Use as a context manager: :meth:`add` / :meth:`draw_path` stage, :meth:`commit` puts
    everything in place, and leaving the block removes whatever was not committed.
    """

    def __init__(self, report_dir: Path):
        self.dir = Path(report_dir)
        self.dir.mkdir(parents=True, exist_ok=True)  # the user's path: a symlink they gave is followed
        self._dir_fd = _open_dir(self.dir, follow=True)
        self._clean_old_stages()
        self._stage = Path(tempfile.mkdtemp(prefix=_STAGE_PREFIX, dir=self.dir))  # 0700, made exclusively
        self._stage_fd = _open_dir(self._stage)
        self._plots_fd: int | None = None
        self._plots_problem = ""
        st = _lstat(PLOTS_DIR, self._dir_fd)
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                self._plots_fd = _open_dir(PLOTS_DIR, self._dir_fd)
            else:
                self._plots_problem = (f"{self.dir / PLOTS_DIR} is {'a symlink' if stat.S_ISLNK(st.st_mode) else 'not a directory'}"
                                       "; no plot was written (move it away to get them)")
        #: what the previous report's manifest recorded
        self.manifest = read_manifest(self._plots_fd)
        self._staged: list[tuple[str, str, bool]] = []  # (staged name, target name, under plots/)
        self._drawing: dict[str, str] = {}  # plot name -> its staged name, while drawn
        self._count = itertools.count()
        self.plots: dict[str, str] = {}  # plot name -> sha256, for the new manifest

    # --- staging ------------------------------------------------------------------------------
    def _stage_name(self, target: str, in_plots: bool) -> str:
        return f"{next(self._count)}-{'p' if in_plots else 'r'}-{target}"

    def add(self, target: str, data: bytes | str) -> None:
        """Stage ``data`` as ``<report_dir>/<target>`` (a plain name)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        name = self._stage_name(target, False)
        self._write_new(name, data)
        self._staged.append((name, target, False))

    def _write_new(self, name: str, data: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666, dir_fd=self._stage_fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def plot_problem(self, name: str) -> str:
        """Why ``plots/<name>`` must not be written (empty when it may)."""
        if self._plots_problem:
            return self._plots_problem
        if self._plots_fd is not None and not is_ours(name, self._plots_fd, self.manifest):
            return (f"{self.dir / PLOTS_DIR / name} is not a plot unlearn-audit wrote (a file of yours, or changed "
                    "since): it was kept, and this plot not drawn (move it away to get it)")
        return ""

    def draw_path(self, name: str) -> Path:
        """Where to draw ``plots/<name>`` (a fresh path in the staging directory); call
        :meth:`add_drawn` once it is drawn."""
        self._drawing[name] = self._stage_name(name, True)
        return self._stage / self._drawing[name]

    def add_drawn(self, name: str) -> None:
        staged = self._drawing.pop(name)
        data = _read_no_follow(staged, self._stage_fd)
        if data is None:
            raise OSError(f"the plot {name} was not drawn")
        fd = os.open(staged, os.O_RDONLY | _NOFOLLOW, dir_fd=self._stage_fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._staged.append((staged, name, True))
        self.plots[name] = _sha256(data)

    # --- putting it in place ------------------------------------------------------------------------
    def _ensure_plots_dir(self) -> int:
        if self._plots_fd is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(PLOTS_DIR, dir_fd=self._dir_fd)
            self._plots_fd = _open_dir(PLOTS_DIR, self._dir_fd)  # fails on a symlink planted meanwhile
        return self._plots_fd

    def commit(self) -> None:
        """Stage the plot manifest, then rename every staged file into place: plots first,
        report.md last, so a reader never sees a report linking a plot not yet there."""
        had = self.manifest or (self._plots_fd is not None and _lstat(PLOTS_MANIFEST, self._plots_fd))
        if (self.plots or had) and not self._plots_problem:
            name = self._stage_name(PLOTS_MANIFEST, True)
            body = json.dumps({"files": dict(sorted(self.plots.items()))}, indent=1) + "\n"
            self._write_new(name, body.encode("utf-8"))
            self._staged.append((name, PLOTS_MANIFEST, True))
        order = sorted(self._staged, key=lambda s: (not s[2], s[1] == "report.md"))
        # Checked before any rename, so a directory in a target's place costs nothing already there.
        for _, target, in_plots in order:
            st = _lstat(target, self._ensure_plots_dir() if in_plots else self._dir_fd)
            if st is not None and stat.S_ISDIR(st.st_mode):
                where = self.dir / PLOTS_DIR / target if in_plots else self.dir / target
                raise IsADirectoryError(f"{where} is a directory; the report writes a file there")
        with _signals_held():  # a Ctrl-C/SIGTERM now would leave half old, half new files
            for staged, target, in_plots in order:
                # os.replace on a symlink replaces the link, never the file it points to.
                os.replace(staged, target, src_dir_fd=self._stage_fd,
                           dst_dir_fd=self._plots_fd if in_plots else self._dir_fd)
        for fd in (self._plots_fd, self._dir_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
        self._staged = []

    def prune(self, keep: Iterable[str]) -> None:
        """Remove the plots the previous manifest recorded that this report did not write:
        regular files only, and only if unchanged since (a recorded sha256 that matches)."""
        if self._plots_fd is None:
            return
        keep = set(keep)
        for name, recorded in sorted(self.manifest.items()):
            if name in keep or recorded is None:
                continue
            data = _read_no_follow(name, self._plots_fd)
            if data is None or _sha256(data) != recorded:
                continue  # gone, a symlink, or changed by the user: theirs now
            with contextlib.suppress(OSError):  # a stale plot left behind is harmless
                os.unlink(name, dir_fd=self._plots_fd)

    def _clean_old_stages(self) -> None:
        """Staging directories an earlier run left when it was killed mid-write."""
        cutoff = time.time() - 3600  # not one a concurrent run is still filling
        with contextlib.suppress(OSError):
            for entry in os.scandir(self._dir_fd):
                if (entry.name.startswith(_STAGE_PREFIX) and entry.is_dir(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                    shutil.rmtree(self.dir / entry.name, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self._stage, ignore_errors=True)
        for fd in (self._stage_fd, self._plots_fd, self._dir_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._plots_fd = None

    def __enter__(self) -> ReportFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait (are delivered after the block) while the files are renamed."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError, ValueError):  # no pthread_sigmask here: rename anyway
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def append_no_follow(path: str, text: str) -> None:
    """Append ``text`` to ``path`` (e.g. ``$GITHUB_STEP_SUMMARY``), never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o666)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)
