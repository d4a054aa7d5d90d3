"""Collecting the recorded outcomes and writing the report on the controller.

Nothing already computed is lost: SIGTERM (what CI timeouts send) is turned into the
KeyboardInterrupt SIGINT gives, so either writes the partial report; under pytest-xdist
each worker leaves the (view, model) pairs it collected in the run directory, so the
controller lists the pairs of a worker that died as not run, with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import pytest

from unlearn_audit._plugin.options import default_cache_dir
from unlearn_audit._plugin.state import PAYLOAD_KEY, RUN_DIR_KEY, VIEW_KEY, session_of
from unlearn_audit.report._markdown import one_line

__all__ = ["Reporter", "check_report_dir_or_fail"]

#: In the shared run directory: the pairs each worker collected, ``{nodeid: [view, model]}``.
_PLANNED_FILE = "planned-{worker}.json"


def _sigterm_to_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def check_report_dir_or_fail(config: pytest.Config, plot_names=()) -> None:
    """The report directory can take the report, else a usage error (before any model loads)."""
    from unlearn_audit.report._files import ReportDirError, check_report_dir

    try:
        check_report_dir(session_of(config).config.report_dir, plot_names)
    except ReportDirError as e:
        raise pytest.UsageError(str(e)) from None


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
        self._previous_sigterm: Any = None
        self._node_errors: dict[str, str] = {}  # xdist worker id -> why it went down
        self._crashed: dict[str, str] = {}  # nodeid -> the worker that died running it

    def install_sigterm(self) -> None:
        """SIGTERM raises KeyboardInterrupt, as SIGINT does, so the partial report is written.

        Only over the default action: a handler someone installed, or SIGTERM ignored
        (inherited), is theirs. Restored at unconfigure."""
        if self._previous_sigterm is not None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)

    def pytest_unconfigure(self) -> None:
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

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
        s = session_of(self.config)
        by_node: dict[str, tuple[str, str]] = {}
        for item in session.items:
            label = getattr(getattr(item, "callspec", None), "params", {}).get("model")
            if VIEW_KEY in item.stash and label is not None:
                s.planned.append((item.stash[VIEW_KEY], label))
                by_node[item.nodeid] = (item.stash[VIEW_KEY], label)
        if not by_node or self.config.option.collectonly:
            return
        if self.is_worker:
            if s.run_dir is not None:  # for the controller, which collects nothing itself
                self._leave_planned(s.run_dir, by_node)
        else:
            from unlearn_audit.report._writer import planned_plot_names

            # A usage error only here: one raised in an xdist worker ends in INTERNALERROR.
            check_report_dir_or_fail(self.config, planned_plot_names(s.planned))
        self.install_sigterm()

    def _leave_planned(self, run_dir: Any, by_node: dict[str, tuple[str, str]]) -> None:
        from pathlib import Path

        worker = self.config.workerinput.get("workerid", "gw")
        path = Path(run_dir) / _PLANNED_FILE.format(worker=worker)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: list(v) for k, v in by_node.items()}), encoding="utf-8")
        os.replace(tmp, path)  # the controller never reads half a file

    def _collect_planned(self) -> None:
        """The controller (xdist): the pairs the workers collected, and which of them a dead
        worker took down with it."""
        s = session_of(self.config)
        if s.run_dir is None or self.is_worker:
            return
        by_node: dict[str, tuple[str, str]] = {}
        for path in sorted(s.run_dir.glob(_PLANNED_FILE.format(worker="*"))):
            try:
                by_node.update({k: (v[0], v[1]) for k, v in json.loads(path.read_text(encoding="utf-8")).items()})
            except (OSError, ValueError, TypeError, IndexError):
                continue
        s.planned.extend(by_node.values())
        for nodeid, worker in self._crashed.items():
            pair = by_node.get(nodeid)
            if pair is not None and pair not in s.outcomes:
                why = self._node_errors.get(worker) or "it exited"
                s.not_run_reasons[pair] = f"worker {worker} died ({why}) while running it"

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        if error is not None:
            self._node_errors[str(node.gateway.id)] = " ".join(str(error).split())[:200]

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        node = getattr(report, "node", None)
        self._crashed[crashitem] = str(getattr(getattr(node, "gateway", None), "id", "?"))

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
        self.install_sigterm()  # the controller collects nothing, so it installs it here

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker:
            return
        try:
            self._collect_planned()
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
