"""Progress of the engine's long loops, shown by whoever runs the audit.

The engine reports each loop (``score forget10_perturbed``: 12 of 40 sequences) through
:func:`task`. Outside pytest nobody listens, and the loop shows a tqdm bar on stderr as it
always did. Inside a pytest audit the plugin installs a sink (:func:`reporting_to`) for
the duration of one ``audit.check``: the sink draws the progress on pytest's terminal with
capture suspended, so it is seen live and never lands in a test's captured output (where
a tqdm bar would show up as garbage under "Captured stderr" of a failed test).

This module imports nothing heavy: the plugin imports it in every pytest run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["ProgressSink", "Task", "current", "reporting_to", "task"]


class ProgressSink(Protocol):
    """Receives progress; the pytest plugin's terminal display implements it."""

    def update(self, desc: str, done: int, total: int) -> None:
        """``done`` of ``total`` units of the loop ``desc`` are finished."""

    def finish(self, desc: str, total: int, seconds: float) -> None:
        """The loop ``desc`` of ``total`` units ended after ``seconds``."""


_SINKS: list[ProgressSink] = []


@contextmanager
def reporting_to(sink: ProgressSink) -> Iterator[ProgressSink]:
    """Send every :func:`task` started inside the ``with`` block to ``sink``."""
    _SINKS.append(sink)
    try:
        yield sink
    finally:
        _SINKS.remove(sink)


def current() -> ProgressSink | None:
    """The innermost active sink, or None."""
    return _SINKS[-1] if _SINKS else None


class Task:
    """One loop's progress: to the active sink, else to a tqdm bar (when ``bar``)."""

    def __init__(self, desc: str, total: int, *, bar: bool, unit: str = "seq"):
        self.desc, self.total, self.done = desc, total, 0
        self._start = time.monotonic()
        self._sink = current()
        self._bar: Any = None
        if self._sink is not None:
            self._sink.update(desc, 0, total)
        elif bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self._sink is not None:
            self._sink.update(self.desc, self.done, self.total)
        elif self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._sink is not None:
            self._sink.finish(self.desc, self.total, time.monotonic() - self._start)
            self._sink = None
        elif self._bar is not None:
            self._bar.close()
            self._bar = None


def task(desc: str, total: int, *, enabled: bool = True, bar: bool = True) -> Task:
    """Start reporting a loop of ``total`` units.

    Args:
        desc: what the loop does (shown to the user).
        total: its units (sequences).
        enabled: False reports nothing at all (``AuditConfig.progress`` off).
        bar: whether a tqdm bar may be drawn when no sink listens (the engine leaves it
            off for loops too short to be worth a bar).
    """
    return Task(desc, total, bar=bar) if enabled else _Silent(desc, total)


class _Silent(Task):
    """A task that tells nobody (progress switched off while a sink listens)."""

    def __init__(self, desc: str, total: int):
        self.desc, self.total, self.done = desc, total, 0
        self._sink, self._bar = None, None
        self._start = time.monotonic()
