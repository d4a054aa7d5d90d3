"""Collecting the recorded outcomes and writing the report on the controller."""

from __future__ import annotations

from typing import Any

import pytest

from unlearn_audit._plugin.options import default_cache_dir
from unlearn_audit._plugin.state import PAYLOAD_KEY, RUN_DIR_KEY, VIEW_KEY, session_of
from unlearn_audit.report._markdown import one_line

__all__ = ["Reporter"]


def _printable(line: str) -> str:
    """One terminal line with no control characters or ANSI escapes from labels, reasons or
    paths (they could recolour, move the cursor or overwrite earlier lines); the line's own
    indent is kept."""
    indent = line[: len(line) - len(line.lstrip(" "))]
    return indent + one_line(line)


class Reporter:
    """Collects recorded outcomes and writes the report on the controller."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.error = ""
        self.incomplete: list[str] = []

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
                session_of(self.config).collect(value)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # After every deselection (-k, -m, --views): the pairs that are meant to run.
        planned = session_of(self.config).planned
        for item in session.items:
            label = getattr(getattr(item, "callspec", None), "params", {}).get("model")
            if VIEW_KEY in item.stash and label is not None:
                planned.append((item.stash[VIEW_KEY], label))

    def pytest_keyboard_interrupt(self) -> None:
        session_of(self.config).interrupted = True

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist, on the controller, per worker: hand it the run directory through
        which the workers share finished results (each (view, model) computed once)."""
        s = session_of(self.config)
        if s.run_dir is None:
            from unlearn_audit.runner import SharedResults

            s.run_dir = SharedResults.create(s.config.cache_dir or default_cache_dir()).dir
        node.workerinput[RUN_DIR_KEY] = str(s.run_dir)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            return
        try:
            session_of(self.config).finish()
        except Exception as e:  # a crash here would hide every test's own message too
            self.error = f"could not write the report to {session_of(self.config).config.report_dir}: {type(e).__name__}: {e}"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        # Release semantics: an INCOMPLETE verdict is not a pass, so it must not exit 0
        # (a CI job gating on the exit code would ship it) unless the user opts in.
        self.incomplete = session_of(self.config).incomplete_reasons()
        if self.incomplete and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        run_dir = session_of(self.config).run_dir
        if run_dir is not None:  # the controller made it (workers returned above); its log is in results.json now
            from unlearn_audit.runner import SharedResults

            SharedResults(run_dir).remove()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        s = session_of(self.config)
        if not (s.written or self.error or s.golden_notes or self.incomplete):
            return
        terminalreporter.write_sep("-", "unlearn-audit")
        if self.error:
            terminalreporter.write_line(_printable(self.error), red=True)
        if "report.md" in s.written:
            terminalreporter.write_line(_printable(f"report: {s.written['report.md']}"))
            for label, v in s.verdicts.items():
                if v.status != "REFERENCE":
                    terminalreporter.write_line(_printable(f"  {label}: {v.status}"))
        for line in self.incomplete:
            terminalreporter.write_line(_printable(line), red=True)
        for note in s.golden_notes:
            terminalreporter.write_line(_printable(note))
