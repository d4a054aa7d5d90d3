"""Audit views, one module each, named in a lazy registry. Registry order = report order.

Importing this package imports no view module (and so none of numpy, scipy, torch):
:func:`get_view` imports a view's module the first time the view is asked for. See
:data:`~unlearn_audit.views._base.BUILTIN_VIEWS`.
"""

from unlearn_audit.views._base import (
    BUILTIN_VIEWS,
    Metric,
    Plot,
    Skip,
    View,
    ViewResult,
    available_views,
    get_view,
    register_view,
    view_class,
)

#: The built-in views' names, in report order.
VIEW_MODULES: tuple[str, ...] = tuple(BUILTIN_VIEWS)

__all__ = [
    "BUILTIN_VIEWS",
    "VIEW_MODULES",
    "Metric",
    "Skip",
    "Plot",
    "View",
    "ViewResult",
    "available_views",
    "get_view",
    "register_view",
    "view_class",
]
