"""The pytest plugin: options, model parametrization, gate asserts and the report hooks.

Registered through ``[project.entry-points.pytest11]``, so it is loaded in every pytest
run of the environment; it stays inert (no I/O, no heavy imports) until a test asks for
the ``audit`` fixture. The work is done by :mod:`unlearn_audit.report` and the runner;
this module only wires it into pytest, with its parts in :mod:`unlearn_audit._plugin`:

- ``pytest_addoption``: the options (:mod:`._plugin.options`); every option is also an
  ini key (``audit_<name>``). Precedence: command line, then ini file, then default.
- ``pytest_generate_tests``: every test using ``audit`` and ``model`` is parametrized
  over the run's model labels (session scope, so tests group by model).
- ``audit.check(view, model)``: measure, record, judge, assert.
- the reporter (:mod:`._plugin.reporter`): collects the recorded outcomes (from every
  xdist worker) and writes the report on the controller; under pytest-xdist it hands the
  workers the run directory through which they share finished results.

Tests substitute the audit context through the ``pytest_unlearn_audit_context`` hook
(see :class:`HookSpecs`): a conftest returning
:func:`unlearn_audit.model.mock.mock_context` runs the whole plugin without a model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from unlearn_audit import __version__
from unlearn_audit._plugin.models import default_context, plan_models, tiny_world_plan
from unlearn_audit._plugin.options import (
    Options,
    add_options,
    read_audit_config,
    resolve_view_options,
)
from unlearn_audit._plugin.reporter import Reporter, check_report_dir_or_fail
from unlearn_audit._plugin.state import PAYLOAD_KEY, RUN_DIR_KEY, SESSION_KEY, VIEW_KEY, session_of
from unlearn_audit.report._reference import KNOWN_VIEWS, ReferenceResultsError
from unlearn_audit.report._session import AuditSession, PlannedModel

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext

__all__ = ["PAYLOAD_KEY", "SESSION_KEY", "Audit", "HookSpecs", "audit", "model", "plan_models"]


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
            tiny_world: True when no model option was given (a built-in world is audited:
                ``--world`` says which: tiny, the default, or smol).
        """


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(HookSpecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


# --- configure: build the session once ---------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    run = read_audit_config(config)
    audit_config, tiny_world = run.audit_config, run.tiny_world
    planned = [] if tiny_world else plan_models(run.models)
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
        return tiny_world_plan(run.world) if tiny_world else planned

    def context() -> AuditContext:
        ctx = injected()
        if ctx is not None:
            return ctx
        return default_context(audit_config, run.world if tiny_world else None, planned)

    config.stash[SESSION_KEY] = AuditSession(
        audit_config,
        tiny_world=tiny_world,
        world=run.world,
        plan=plan,
        context_factory=context,
        reference_dir=run.reference_dir,
        gates_path=run.gates_path,
        root=Path(config.rootpath),
        update_golden=run.update_golden,
        package_version=__version__,
        allow_incomplete=run.allow_incomplete,
        # Under pytest-xdist the controller made this directory and handed it to the worker.
        run_dir=Path(config.workerinput[RUN_DIR_KEY]) if RUN_DIR_KEY in getattr(config, "workerinput", {}) else None,
    )
    config.addinivalue_line("markers", "audit(view): an audit test of one view (added automatically)")
    config.pluginmanager.register(Reporter(config), "unlearn-audit-reporter")
    # A report directory that cannot take the report is found now, not after the audit ran:
    # here when it was asked for or under pytest-xdist (whose controller collects nothing),
    # else once audit tests are collected (the reporter's collection_finish).
    distributed = getattr(config.option, "dist", "no") != "no" or bool(getattr(config.option, "numprocesses", None))
    if not hasattr(config, "workerinput") and (Options(config).raw("report-dir")[0] is not None or distributed):
        from unlearn_audit.report._writer import SUMMARY_PLOT

        check_report_dir_or_fail(config, [SUMMARY_PLOT])


# --- collection ---------------------------------------------------------------------------------------
def _is_audit_test(obj: Any) -> bool:
    names = getattr(obj, "fixturenames", ())
    return "audit" in names and "model" in names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not _is_audit_test(metafunc):
        return
    labels = [p.label for p in session_of(metafunc.config).plan()]
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
    session = session_of(config)
    try:
        from unlearn_audit.views import available_views

        extra = tuple(available_views())
    except Exception:  # a broken view module fails its own test with the real error
        extra = ()
    resolve_view_options(config, session)
    try:  # malformed reference results stop the run before any model loads
        session.references(extra)
    except ReferenceResultsError as e:
        hint = " (pass --gates PATH or --reference-dir DIR)" if str(e).endswith("file not found") else ""
        raise pytest.UsageError(f"{e}{hint}") from None
    keep, drop = [], []
    for item in items:
        view = _view_of_item(item) if item in audit_items else None
        if view is not None:
            item.stash[VIEW_KEY] = view
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
    return Audit(session_of(request.config), record_property, request.config)


# --- reporting ------------------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    # An audit test that could not even be set up still belongs in the report, as an error.
    if call.when == "setup" and report.failed and VIEW_KEY in item.stash:
        label = getattr(getattr(item, "callspec", None), "params", {}).get("model")
        if label is not None and call.excinfo is not None:
            outcome = session_of(item.config).error_outcome(item.stash[VIEW_KEY], label, call.excinfo.value)
            report.user_properties.append((PAYLOAD_KEY, outcome.to_payload()))
    return report


