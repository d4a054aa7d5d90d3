"""What a view may ask for during an audit: configuration, items, engines, other results.

One :class:`AuditContext` lives for a pytest session. It loads each model once, on first
use, and memoises each (view, model) result, so a view that needs a reference's number
(forget quality needs retain's truth ratios) asks for it and gets it computed at most once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn_audit.data import DEFAULT_DATASET, Item, load_split

if TYPE_CHECKING:
    from unlearn_audit.model import Engine, LoadedModel, ModelSpec
    from unlearn_audit.views._base import ViewResult

ROLES = ("candidate", "full", "retain", "base")


@dataclass
class AuditConfig:
    """Every knob of a run. Anything that changes a number is here, and so in results.json."""

    dataset: str = DEFAULT_DATASET
    forget_split: str = "forget10"
    limit: int | None = None
    samples: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 200
    leak_threshold: float = 0.5
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | None = None
    seed: int = 0
    prompt_format: str = "chat"
    system_prompt: str | None = "You are a helpful assistant."
    date_string: str = "10 Apr 2025"
    #: ``none`` or ``open-unlearning`` (``--compat``): whose tokenisation, attention mask,
    #: stopping and TOFU formulas to follow.
    compat: str = "none"
    retain_logs: str | None = None
    views: tuple[str, ...] | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    report_dir: Path = Path("audit-report")
    cache_dir: Path | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("report_dir", "cache_dir"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["views"] = list(self.views) if self.views else None
        return d

    # TOFU's evaluation splits: the `_perturbed` variants carry paraphrases and perturbed answers.
    @property
    def forget_eval_split(self) -> str:
        return self.forget_split if self.forget_split.endswith("_perturbed") else f"{self.forget_split}_perturbed"

    retain_eval_split: str = "retain_perturbed"
    real_authors_split: str = "real_authors_perturbed"
    world_facts_split: str = "world_facts_perturbed"


class AuditContext:
    """Session state shared by all views: models by label, lazily loaded engines, memoised results."""

    def __init__(self, config: AuditConfig, models: dict[str, ModelSpec]):
        self.config = config
        self.models = dict(models)
        self._engines: dict[str, Engine] = {}
        self._loaded: dict[str, LoadedModel] = {}
        self._items: dict[tuple[str, int | None], list[Item]] = {}
        self._results: dict[tuple[str, str], ViewResult] = {}

    # --- models ---------------------------------------------------------------------------
    def labels(self, role: str | None = None) -> list[str]:
        return [lbl for lbl, s in self.models.items() if role is None or s.role == role]

    def reference(self, role: str) -> str | None:
        """Label of the reference model with this role (``full``, ``retain``, ``base``), if given."""
        found = self.labels(role)
        return found[0] if found else None

    def spec(self, label: str) -> ModelSpec:
        if label not in self.models:
            raise KeyError(f"No model labelled {label!r}; known: {', '.join(self.models)}")
        return self.models[label]

    def loaded(self, label: str) -> LoadedModel:
        if label not in self._loaded:
            from unlearn_audit.model import load_model

            self._loaded[label] = load_model(self.spec(label))
        return self._loaded[label]

    def engine(self, label: str) -> Engine:
        """The batched, disk-cached engine of a model, built once per session."""
        if label not in self._engines:
            from unlearn_audit.model import Engine, make_format

            lm = self.loaded(label)
            fmt = make_format(
                lm.tokenizer,
                kind=self.config.prompt_format,
                system_prompt=self.config.system_prompt,
                date_string=self.config.date_string,
                compat=self.config.compat,
            )
            self._engines[label] = Engine(
                lm,
                fmt,
                cache_dir=self.config.cache_dir,
                batch_size=self.config.batch_size,
                progress=self.config.progress,
            )
        return self._engines[label]

    def fingerprint(self, label: str) -> str:
        return self.loaded(label).fingerprint

    def known_fingerprint(self, label: str) -> str | None:
        """The fingerprint of ``label`` if it was loaded this session; never loads a model
        (the report lists fingerprints of what was actually audited)."""
        lm = self._loaded.get(label)
        return lm.fingerprint if lm is not None else None

    @staticmethod
    def missing_reference(role: str) -> str:
        """The skip reason of a number that needs a reference model this run lacks.

        The report treats reasons starting with "missing reference" as expected skips that
        leave a verdict complete; every other skip makes it INCOMPLETE.
        """
        flag = "--retain-model or --retain-logs" if role == "retain" else f"--{role}-model"
        return f"missing reference: no {role} model given ({flag})"

    # --- data -----------------------------------------------------------------------------
    def items(self, split: str, *, limit: int | None | bool = True,
              require: tuple[str, ...] = ()) -> list[Item]:
        """Items of a split; ``limit=True`` applies ``--limit``."""
        lim = self.config.limit if limit is True else (limit or None)
        key = (split, lim)
        if key not in self._items:
            self._items[key] = load_split(self.config.dataset, split, limit=lim, require=require)
        return self._items[key]

    def forget_items(self) -> list[Item]:
        return self.items(self.config.forget_eval_split,
                          require=("paraphrased_answer", "paraphrased_question"))

    def retain_items(self) -> list[Item]:
        return self.items(self.config.retain_eval_split)

    # --- results --------------------------------------------------------------------------
    def result(self, view: str, label: str) -> ViewResult:
        """Run ``view`` on ``label`` once per session and return the memoised result."""
        key = (view, label)
        if key not in self._results:
            from unlearn_audit.views import get_view

            self._results[key] = get_view(view).run(self, label)
        return self._results[key]

    def results(self) -> list[ViewResult]:
        return list(self._results.values())
