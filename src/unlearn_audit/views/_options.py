"""A view's own knobs, as typed fields a command-line option or an ini key can reach.

A view declares them once, on the class::

    options = (Option("steps", int, 200, "Adam steps per layer", check=lambda v: v >= 0,
                      expect="a whole number >= 0"), ...)

and users set them without any edit to the plugin:

- ``--view-option masked_probe.steps=50`` (repeatable), or
- ``audit_view_options`` in the ini file, one ``view.name=value`` per line.

:func:`resolve` checks every entry against the view's declaration before anything runs:
an unknown view or option, or a value of the wrong type, is a usage error that says what
was expected (and suggests close names). The typed values land in
``AuditConfig.view_options`` and so in ``results.json``'s config; the view reads them with
:meth:`View.option <unlearn_audit.views.View.option>` or :func:`values_of` (the declared
default when not set).

This module imports nothing (not even the view registry, which imports it); :func:`resolve`
is handed the registry's lookup, which imports only the views it is asked about.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig

__all__ = ["Option", "ViewOptionError", "parse_entries", "resolve", "values_of"]

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class ViewOptionError(ValueError):
    """A view option that names no view or option, or whose value does not parse."""


@dataclass(frozen=True)
class Option:
    """One typed knob of a view.

    Attributes:
        name: the name after ``<view>.`` (``[a-z0-9_]+``).
        type: ``int``, ``float``, ``str`` or ``bool``.
        default: the value when not set; ``None`` means "the view decides" (e.g. a learning
            rate that depends on another option).
        help: one line for people, shown in error messages and ``docs``.
        choices: the allowed values of a ``str`` option (empty: any).
        check: an extra test of the parsed value; ``expect`` says what it wants.
        expect: words for the error message, e.g. ``"a number > 0"``.
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    check: Callable[[Any], bool] | None = None
    expect: str = ""

    def parse(self, raw: Any) -> Any:
        """The typed value of ``raw`` (text from the command line, or already typed from
        Python), or :class:`ViewOptionError` saying what was expected."""
        want = self.expect or (f"one of {', '.join(self.choices)}" if self.choices else
                               {int: "a whole number", float: "a number", bool: "true or false",
                                str: "text"}.get(self.type, self.type.__name__))
        try:
            if self.type is bool:
                if isinstance(raw, bool):
                    value = raw
                elif str(raw).strip().lower() in _TRUE + _FALSE:
                    value = str(raw).strip().lower() in _TRUE
                else:
                    raise ValueError
            elif self.type is int:
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                value = int(str(raw).strip()) if isinstance(raw, str) else int(raw)
            elif self.type is float:
                value = float(raw)
                if not math.isfinite(value):  # inf passes "> 0" checks; nan fails every check
                    finite = want if "finite" in want else want.replace("a number", "a finite number", 1)
                    raise ViewOptionError(f"expected {finite}, got {raw!r}")
            else:
                value = str(raw).strip()
        except ViewOptionError:
            raise
        except (TypeError, ValueError):
            raise ViewOptionError(f"expected {want}, got {raw!r}") from None
        if self.choices and value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ViewOptionError(f"expected {want}, got {raw!r}.{hint}")
        if self.check is not None and not self.check(value):
            raise ViewOptionError(f"expected {want}, got {raw!r}")
        return value


def parse_entries(entries: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["masked_probe.steps=50", ...]`` -> ``{"masked_probe": {"steps": "50"}}`` (text,
    unchecked; a later entry for the same option wins)."""
    out: dict[str, dict[str, str]] = {}
    for entry in entries:
        key, sep, value = str(entry).partition("=")
        view, dot, name = key.strip().partition(".")
        if not sep or not dot or not view or not name:
            raise ViewOptionError(f"{entry!r} is not VIEW.OPTION=VALUE (e.g. masked_probe.steps=50)")
        out.setdefault(view, {})[name.strip()] = value.strip()
    return out


def _typed(view: str, options: Iterable[Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``given`` values of ``view``'s options, typed and checked."""
    declared = {o.name: o for o in options}
    out = {}
    for name, value in given.items():
        opt = declared.get(name)
        if opt is None:
            close = difflib.get_close_matches(name, declared, n=3)
            hint = f" Did you mean {', '.join(f'{view}.{c}' for c in close)}?" if close else ""
            known = ", ".join(f"{view}.{n}" for n in declared) or "none"
            raise ViewOptionError(f"the {view} view has no option {name!r}.{hint} Its options: {known}.")
        try:
            out[name] = opt.parse(value)
        except ViewOptionError as e:
            raise ViewOptionError(f"{view}.{name}: {e} ({opt.help})") from None
    return out


def resolve(raw: Mapping[str, Mapping[str, Any]], view_class: Callable[[str], type]) -> dict[str, dict[str, Any]]:
    """Check ``raw`` (view -> option -> value) against each view's declared options and
    return the typed values (the plugin calls it at collection, before anything runs).

    Args:
        raw: the values set, as text or already typed.
        view_class: the registry's lookup (:func:`unlearn_audit.views.view_class`), which
            raises ``KeyError`` naming close views for an unknown one.

    Raises:
        ViewOptionError: an unknown view or option (close names suggested), or a bad value.
    """
    out: dict[str, dict[str, Any]] = {}
    for view, values in raw.items():
        try:
            cls = view_class(view)
        except KeyError as e:
            raise ViewOptionError(str(e).strip("'\"")) from None
        out[view] = _typed(view, getattr(cls, "options", ()), values)
    return out


def values_of(config: AuditConfig, view: str, options: Iterable[Option]) -> dict[str, Any]:
    """Every option of ``view`` in this run, typed: the value set (``--view-option``, the
    ini file, or ``AuditConfig.view_options`` from Python), else the declared default.

    Raises:
        ViewOptionError: a value set for an option the view does not declare, or a bad one.
    """
    options = tuple(options)
    given = _typed(view, options, (config.view_options or {}).get(view, {}))
    return {o.name: given.get(o.name, o.default) for o in options}
