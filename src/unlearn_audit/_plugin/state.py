"""Where the plugin keeps its state: stash keys, and the keys outcomes travel under."""

from __future__ import annotations

import pytest

from unlearn_audit.report._session import AuditSession

__all__ = ["PAYLOAD_KEY", "RUN_DIR_KEY", "SESSION_KEY", "VIEW_KEY", "session_of"]

#: Where the plugin keeps its :class:`AuditSession` (never ``config._x``).
SESSION_KEY = pytest.StashKey[AuditSession]()
#: The view an audit test checks, on its item.
VIEW_KEY = pytest.StashKey[str]()
#: The ``workerinput`` key of the run directory the xdist workers share results through.
RUN_DIR_KEY = "unlearn_audit_run_dir"
#: The ``record_property`` name under which a test's judged outcome travels to the reporter.
PAYLOAD_KEY = "unlearn_audit"


def session_of(config: pytest.Config) -> AuditSession:
    """The run's :class:`AuditSession` (made in ``pytest_configure``)."""
    return config.stash[SESSION_KEY]
