"""What a view may ask for during an audit: configuration, items, engines, other results.

One :class:`AuditContext` lives for a pytest session. It serves resources: the run's
settings, items, and each model's backend (loaded once, on first use). Results of other
views come from the session's :class:`~unlearn_audit.runner.Runner`, which schedules them
(each (view, model) once, declared needs first, shared across pytest-xdist workers);
``ctx.result`` is its front door.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn_audit.data import DEFAULT_DATASET, Item, load_split

if TYPE_CHECKING:
    from unlearn_audit.model import Engine, LoadedModel, ModelSpec
    from unlearn_audit.runner import Runner
    from unlearn_audit.views._base import ViewResult

ROLES = ("candidate", "full", "retain", "base")


class ModelUnusable(RuntimeError):
    """A model failed the sanity check run before any view (non-finite weights or logits,
    or no real answers): none of its numbers can be trusted, so every gate on it is an
    error. The message is one line: the model, what is wrong, and the fix."""


@dataclass
class AuditConfig:
    """Every knob of a run. Anything that changes a number is here, and so in results.json."""

    dataset: str = DEFAULT_DATASET
    forget_split: str = "forget10"
    holdout_split: str = "holdout10"
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
    #: Each view's own typed options (``--view-option VIEW.NAME=VALUE``): view -> name ->
    #: value, checked against the view's declaration (:mod:`unlearn_audit.views._options`).
    view_options: dict[str, dict[str, Any]] = field(default_factory=dict)

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

    def __init__(self, config: AuditConfig, models: dict[str, ModelSpec],
                 backends: dict[str, Any] | None = None):
        """``backends``: ready backends by label (e.g. :mod:`unlearn_audit.model.mock`'s),
        used instead of loading those models."""
        self.config = config
        self.models = dict(models)
        self._engines: dict[str, Engine] = dict(backends or {})
        self._loaded: dict[str, LoadedModel] = {}
        self._items: dict[tuple[str, int | None, tuple[str, ...]], list[Item]] = {}
        self._runner: Runner | None = None
        self._sanity: dict[str, str] = {}  # label -> problem ("" when the model is fine)

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
        """The batched, disk-cached engine of a model, built once per session.

        Every view reaches a model through here, so this is where the sanity check runs:
        once per model per session, before the first view measures anything.

        Raises:
            ModelUnusable: the model failed the sanity check (on every call, from the
                cached verdict).
        """
        self._build_engine(label)
        self._check_sane(label)
        return self._engines[label]

    def _build_engine(self, label: str) -> None:
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

    def _probe_items(self) -> list[Item]:
        from unlearn_audit.model._sanity import PROBE_ITEMS

        try:  # retain items: every audited model, unlearned or not, should answer them
            return self.items(self.config.retain_eval_split, limit=PROBE_ITEMS)
        except Exception:  # data without a retain split: a silent model is silent anywhere
            return self.forget_items()[:PROBE_ITEMS]

    def _check_sane(self, label: str) -> None:
        """Run :func:`~unlearn_audit.model._sanity.sanity_check` once; raise on failure."""
        if label not in self._sanity:
            from unlearn_audit.model._sanity import sanity_check

            found = sanity_check(self._engines[label], self._probe_items(), self.config.max_new_tokens)
            self._sanity[label] = "; ".join(found.problems)
        if self._sanity[label]:
            raise ModelUnusable(
                f"{label} failed the sanity check run before any view: the model "
                f"{self._sanity[label]}. Its numbers cannot be trusted (a model that says nothing "
                "leaks nothing), so every gate on it is an error. Fix: check that the checkpoint "
                "is the one meant and loads as saved (weights, config.json, --dtype, chat template)."
            )

    def engine_notes(self, label: str) -> dict[str, int]:
        """What the engine of ``label`` did to inputs that the report must state; never
        loads a model. ``{"truncated": n, "max_positions": m}`` when ``n`` scored sequences
        were cut to the model's context (see ``Engine._fit_context``), plus
        ``"prompts_too_long": k`` when ``k`` generation requests had a prompt that left no
        room for one new token (never run; their items are excluded), and
        ``"answers_capped": c`` when ``c`` had fewer positions left than max_new_tokens
        (their answers may stop at the context); else ``{}``."""
        engine = self._engines.get(label)
        if engine is None:
            return {}
        truncated = len(getattr(engine, "truncated", None) or ())
        too_long = len(getattr(engine, "prompts_too_long", None) or ())
        capped = len(getattr(engine, "answers_capped", None) or ())
        if not truncated and not too_long and not capped:
            return {}
        notes = {"truncated": truncated, "max_positions": engine.max_positions or 0}
        # Each only when non-zero: reports of runs without them keep their notes.
        if too_long:
            notes["prompts_too_long"] = too_long
        if capped:
            notes["answers_capped"] = capped
        return notes

    def tokenizer_hash(self, label: str) -> str | None:
        """The tokenizer hash of ``label``'s backend (``Backend.tokenizer_hash``); ``None``
        when the backend has none. Loads the model only when this process has not (a
        reference whose results another pytest-xdist worker computed)."""
        engine = self._engines.get(label)
        if engine is None:
            self._build_engine(label)
            engine = self._engines[label]
        return engine.tokenizer_hash or None

    def reference_warnings(self, label: str, needs) -> list[str]:
        """Warnings for a result of ``label`` that reads the results ``needs`` (``(view,
        model)`` pairs, a view's ``requires``): one per other model whose tokenizer differs.

        Reference comparisons (forget quality's truth-ratio KS against retain, likelihood
        against full, format_shift against base, privacy against retain) pair this model's
        numbers with the reference's item by item. Token-level ones (log-probabilities,
        truth ratios, Min-K%) then count different tokens, and a different chat template
        shows the two models different prompts: the numbers are still computed, and the
        reader is told.
        """
        if not needs:
            return []
        out: list[str] = []
        for other in sorted({m for _, m in needs if m != label}):
            try:
                mine, theirs = self.tokenizer_hash(label), self.tokenizer_hash(other)
            except Exception as e:  # the comparison's own failure is stated, never fatal
                out.append(f"could not compare the tokenizers of {label} and {other} "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).")
                continue
            if mine is None or theirs is None or mine == theirs:
                continue
            role = self.models[other].role if other in self.models else "reference"
            out.append(
                f"{label}'s tokenizer differs from that of {other} (the {role} model this view "
                "compares against): vocabulary, merges, special tokens or chat template. "
                "Token-level comparisons between them (log-probabilities, truth ratios, "
                "per-token statistics) count different tokens, and the prompts may differ, "
                "so they are not like for like. Fix: audit a candidate saved with its "
                "references' tokenizer, or compare against references that share its tokenizer."
            )
        return out

    def fingerprint(self, label: str) -> str:
        if label in self._engines:
            return self._engines[label].fingerprint
        return self.loaded(label).fingerprint

    def known_fingerprint(self, label: str) -> str | None:
        """The fingerprint of ``label`` if it was loaded this session; never loads a model
        (the report lists fingerprints of what was actually audited)."""
        lm = self._loaded.get(label)
        if lm is not None:
            return lm.fingerprint
        engine = self._engines.get(label)
        if engine is not None:
            return engine.fingerprint
        # Under pytest-xdist its results may all have come from another worker, which
        # stored the fingerprint beside them.
        return self._runner.fingerprints.get(label) if self._runner is not None else None

    # --- data -----------------------------------------------------------------------------
    def items(self, split: str, *, limit: int | None | bool = True,
              require: tuple[str, ...] = ()) -> list[Item]:
        """Items of a split; ``limit=True`` applies ``--limit``.

        ``require`` is part of the cache key: items loaded without a check of their
        paraphrased fields must never be served to a caller that needs them checked.
        """
        lim = self.config.limit if limit is True else (limit or None)
        key = (split, lim, tuple(sorted(require)))
        if key not in self._items:
            self._items[key] = load_split(self.config.dataset, split, limit=lim, require=require)
        return self._items[key]

    def forget_items(self) -> list[Item]:
        return self.items(self.config.forget_eval_split,
                          require=("paraphrased_answer", "paraphrased_question"))

    def retain_items(self) -> list[Item]:
        return self.items(self.config.retain_eval_split)

    # --- results --------------------------------------------------------------------------
    @property
    def runner(self) -> Runner:
        """The session's scheduler of view results (single-process until :meth:`share`)."""
        if self._runner is None:
            from unlearn_audit.runner import Runner

            self._runner = Runner(self)
        return self._runner

    def share(self, run_dir: Path) -> None:
        """Share finished results with the other processes of this run through ``run_dir``
        (pytest-xdist workers: each result is computed once across all of them)."""
        from unlearn_audit.runner import SharedResults

        self.runner.shared = SharedResults(run_dir)

    def result(self, view: str, label: str) -> ViewResult:
        """The result of ``view`` on ``label``, computed at most once per run (see
        :class:`~unlearn_audit.runner.Runner`). A view may ask only for what its
        ``requires`` declares."""
        return self.runner.result(view, label)

    def results(self) -> list[ViewResult]:
        return self.runner.results()
