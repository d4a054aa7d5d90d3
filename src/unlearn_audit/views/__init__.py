"""Audit views, one module each, registered by name. Import order = report order."""

# Each import registers its view; a view module that is missing simply isn't offered.
import importlib as _importlib

from unlearn_audit.views._base import (
    Metric,
    View,
    ViewResult,
    available_views,
    get_view,
    register_view,
)

VIEW_MODULES = (
    "tofu",
    "novel_recall",
    "format_shift",
    "best_of_n",
    "chain_of_clues",
    "likelihood",
    "masked_probe",
    "rtt",
    "quantization",
    "privacy",
)
for _m in VIEW_MODULES:
    try:
        _importlib.import_module(f"unlearn_audit.views.{_m}")
    except ModuleNotFoundError as _e:  # only tolerate the view module itself being absent
        if _e.name != f"unlearn_audit.views.{_m}":
            raise

__all__ = ["Metric", "View", "ViewResult", "available_views", "get_view", "register_view"]
