"""Live progress of an audit test on pytest's terminal (a :class:`~unlearn_audit.progress.ProgressSink`).

pytest captures a test's output, so the engine's tqdm bars were invisible while a test
ran and then showed up as "Captured stderr" garbage in a failed test's report. During
one ``audit.check`` the plugin installs a :class:`TerminalProgress`, which writes with
capture suspended (``CaptureManager.global_and_fixture_disabled``, as pytest-benchmark
does), to pytest's own terminal writer:

- on a terminal (``TerminalWriter.hasmarkup``; ``--color=yes`` forces it): one live
  status after pytest's current line (``npo · tofu: score 12/40 seq``), redrawn in place
  with the cursor saved and restored and erased when the view ends, so pytest's own
  output and its column bookkeeping are left as they were;
- otherwise (a CI log): one line per finished step (each engine loop, then the view);
- under ``-q`` (verbosity below 0): nothing.

Imports nothing heavy: the plugin imports it in every pytest run.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["TerminalProgress"]

# ANSI: erase to the end of the line; save and restore the cursor position (DECSC/DECRC).
_ERASE, _SAVE, _RESTORE = "\x1b[K", "\x1b7", "\x1b8"
# Redraw at most this often: a status redrawn per batch would flood a slow terminal.
_MIN_REDRAW_S = 0.1


class TerminalProgress:
    """Progress of one (view, model) on pytest's terminal.

    Args:
        config: the pytest config (its terminal writer and capture manager are used).
        model: the model's label.
        view: the view's name.
    """

    def __init__(self, config: Any, model: str, view: str):
        self._capman = config.pluginmanager.getplugin("capturemanager")
        reporter = config.pluginmanager.getplugin("terminalreporter")
        # xdist workers have no terminal of their own; their reporter's output is dropped.
        self.enabled = (reporter is not None and config.get_verbosity() >= 0
                        and not hasattr(config, "workerinput"))
        self._tw = config.get_terminal_writer() if self.enabled else None
        self.live = bool(self.enabled and self._tw.hasmarkup)
        self.prefix = f"{model} · {view}"
        self._drawn = False
        self._last = 0.0
        self._start = time.monotonic()

    # --- ProgressSink ------------------------------------------------------------------------
    def update(self, desc: str, done: int, total: int) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if 0 < done < total and now - self._last < _MIN_REDRAW_S:
            return
        self._last = now
        self._draw(f"{desc} {done}/{total} seq")

    def finish(self, desc: str, total: int, seconds: float) -> None:
        if self.enabled and not self.live:
            self._line(f"{self.prefix}: {desc} {total} seq in {seconds:.1f}s")

    # --- the view as a whole -----------------------------------------------------------------
    def begin(self) -> None:
        """The view starts (live: shows that it runs before any loop reports)."""
        if self.live:
            self._draw("running")

    def end(self) -> None:
        """The view ended, however: erase the live status, or log one line."""
        if self.live:
            if self._drawn:
                self._raw(_ERASE)
                self._drawn = False
        elif self.enabled:
            self._line(f"{self.prefix}: done in {time.monotonic() - self._start:.1f}s")

    # --- output ------------------------------------------------------------------------------
    def _draw(self, status: str) -> None:
        # Keep to the rest of the current line: a status that wrapped would scroll the
        # screen, and the saved cursor would then no longer be pytest's. Short of room
        # (``-v`` names the test, and with it the model and view, on the line already),
        # the step goes first.
        room = self._tw.fullwidth - self._tw.width_of_current_line - 2
        text = f"{self.prefix}: {status}"
        if len(text) > room:
            text = status
        if room < 8:
            return
        self._raw(f"{_ERASE}{_SAVE} {text[:room]}{_RESTORE}")
        self._drawn = True

    def _raw(self, text: str) -> None:
        # write_raw leaves pytest's record of the current line alone: the cursor ends
        # where pytest left it, so its dots and percentages line up as before.
        with self._suspended():
            self._tw.write_raw(text, flush=True)

    def _line(self, text: str) -> None:
        reporter = self._tw
        with self._suspended():
            if reporter.width_of_current_line:
                reporter.line()
            reporter.line(f"[unlearn-audit] {text}")

    def _suspended(self) -> Any:
        if self._capman is None:
            from contextlib import nullcontext

            return nullcontext()
        return self._capman.global_and_fixture_disabled()
