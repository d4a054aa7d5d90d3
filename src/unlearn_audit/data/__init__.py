"""TOFU-format data: the :class:`Item` record and the one loader everything uses."""

from unlearn_audit.data._item import Item
from unlearn_audit.data._loader import DEFAULT_DATASET, DatasetError, load_split
from unlearn_audit.data.families import FAMILIES, classify_question

__all__ = ["DEFAULT_DATASET", "FAMILIES", "DatasetError", "Item", "classify_question", "load_split"]
