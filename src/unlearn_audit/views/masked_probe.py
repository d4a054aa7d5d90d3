"""masked_probe: is it still inside?

Definition (views.md, "masked_probe"): for every novel-content token of every forget item
(the tokens whose character span overlaps a novel-content word of the gold answer, against
the system prompt and the question; see :func:`unlearn_audit.views.likelihood.novel_token_mask`),
the prompt and the gold answer are teacher-forced up to just before that token and the hidden
state is read at every layer (:meth:`Engine.hidden_states`: index 0 is the embedding output,
index ``n_layers`` the last block after the final norm). Per layer:

- a **linear probe** is fit on the *same* model's hidden states over the retain-set answers
  (every answer token of ``ctx.retain_items()`` after its question, end-of-turn token
  included, predicting that token), then applied to the forget tokens: top-1 accuracy;
- the **logit lens** (final norm + output head, :meth:`Engine.lm_head_logits`) is read off
  the same states beside it.

``masked_probe.top1_last_layer`` is the probe's top-1 accuracy at the last layer, over all
novel-content tokens (Wilson 95% interval, ``n`` = tokens; items without a novel token are
``excluded``); per family over that family's tokens. ``extra`` holds both curves over
layers, and their plot (kind ``layer_curves``) is in ``ViewResult.plots``.

The probe (option ``kind``) is an affine *translator* per layer,
``z = x V + b``, read out through the model's own frozen output head (the shape of the
*tuned lens*, Belrose et al., 2023, "Eliciting Latent Predictions from Transformers with the
Tuned Lens", arXiv:2303.08112). Below the last layer ``x`` is first divided by its RMS,
as the final norm would divide it; real models' mid-layer states reach norms in the
hundreds, and this puts every layer on one scale. Why a translator into the model's own
readout and not a classifier over the tokens seen in training: a forget item's novel
tokens are mostly names and titles that occur in no retain answer (40% coverage in the
tiny world), so such a probe could never name them, whatever the model knows; the
coverage is reported in ``extra["target_coverage"]``.

- ``"lstsq"`` (default): fit in closed form by ridge least squares. Each retain token's
  state is regressed onto the *prototype of the token it predicts*: the mean of the
  model's own last-layer (normed) states over the retain positions followed by that token
  (:func:`next_token_prototypes`). The ridge (option ``ridge``) (relative to the mean
  diagonal entry of the states' Gram matrix) pulls ``V`` towards the logit lens
  (``V = diag(final-norm scale)``, identity at the last layer; ``b = 0``), so with scarce
  retain data the probe falls back to the lens (exactly, as the ridge grows); ``z`` is
  taken as the normed state and read by the head directly. One ``d x d`` solve per
  layer. Least-squares linear maps from a layer towards the last layer, read out by the
  model's head: Din et al., 2023,
  "Jump to Conclusions: Mapping Early-Layer Representations to Later Layers",
  arXiv:2303.09435; here the target is the next token's prototype, so the fit is
  supervised by the next token, as views.md asks.
- ``"tuned"``: the same translator (``V = I + A``, ``A`` initialised at zero, read through
  the final norm and head) fit with cross-entropy on the retain tokens by Adam for
  ``steps`` steps with an L2 penalty ``weight_decay`` on ``A``, ``b``;
  untrained it is exactly the logit lens. Slow on a CPU: with it the view takes about
  34 s of CPU time a tiny-world model, against about 1 s with ``lstsq``.
- ``"restricted"``: multinomial logistic regression on standardised states over the token
  ids seen in the retain answers (a forget token outside that set always counts wrong),
  fit by Adam like ``tuned``.

The Adam-fit kinds run full-batch (or in seeded minibatches of ``batch_tokens``).
Every knob is a typed option of the view (:data:`OPTIONS`: ``kind``, ``ridge``, ``steps``,
``lr``, ``weight_decay``, ``batch_tokens``, ``max_gib``; ``--view-option
masked_probe.steps=50``) and is reported in ``extra["probe"]``.

Source: views.md; the seed paper reports 0.620 (3B), 0.618 (1B), 0.628 (8B) at the last
layer. The logit lens: nostalgebraist, "interpreting GPT: the logit lens" (2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from unlearn_audit import prompts
from unlearn_audit.model._types import PROBE_KINDS, ProbeFit, ProbeRequest, ScoreRequest
from unlearn_audit.scoring.stats import rate_with_ci
from unlearn_audit.views._base import Plot, View, ViewResult, plot_number, register_view
from unlearn_audit.views._leak import item_fields, rate_metric, shown_texts
from unlearn_audit.views._options import Option, values_of
from unlearn_audit.views.likelihood import novel_token_mask

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext

__all__ = ["MaskedProbe", "ProbeSettings", "next_token_prototypes"]

# Rows of logit-lens logits computed at once (bounds memory at ~rows x vocab x 4 B).
_PREDICT_CHUNK = 512


@dataclass(frozen=True)
class ProbeSettings(ProbeFit):
    """How the per-layer probe is fit (:class:`~unlearn_audit.model.ProbeFit`: ``kind``,
    ``ridge``, ``steps``, ``lr``, ``weight_decay``, ``batch_tokens``) plus the view's memory
    bound; every field is a typed option of the view (:data:`OPTIONS`).

    Attributes:
        max_gib: memory for hidden states held at once; layers are read in groups that fit.
    """

    max_gib: float = 2.0

    @classmethod
    def from_config(cls, config: AuditConfig) -> ProbeSettings:
        """The run's settings: ``--view-option masked_probe.<field>=VALUE`` over the defaults
        (:data:`OPTIONS`); a bad value raises :class:`ViewOptionError` naming it."""
        v = values_of(config, "masked_probe", OPTIONS)
        if v["lr"] is None:
            v["lr"] = 1e-2 if v["kind"] == "restricted" else cls.lr
        return cls(**v)

    def fit(self) -> ProbeFit:
        """What the engine needs to fit the probes (everything but ``max_gib``)."""
        return ProbeFit(**{f.name: getattr(self, f.name) for f in fields(ProbeFit)})


_POSITIVE = {"check": lambda v: v > 0, "expect": "a number > 0"}
_NON_NEGATIVE = {"check": lambda v: v >= 0, "expect": "a number >= 0"}
#: The view's options, one per :class:`ProbeSettings` field.
OPTIONS = (
    Option("kind", str, ProbeSettings.kind, "how the per-layer probe is fit", choices=PROBE_KINDS),
    Option("ridge", float, ProbeSettings.ridge, "lstsq ridge penalty, relative to the mean "
           "eigenvalue of each side's Gram matrix", **_POSITIVE),
    Option("steps", int, ProbeSettings.steps, "Adam steps per layer (tuned, restricted)",
           check=lambda v: v >= 0, expect="a whole number >= 0"),
    Option("lr", float, None, "Adam learning rate (default 1e-3; 1e-2 for restricted)", **_POSITIVE),
    Option("weight_decay", float, ProbeSettings.weight_decay, "L2 penalty on the probe's "
           "parameters", **_NON_NEGATIVE),
    Option("batch_tokens", int, ProbeSettings.batch_tokens, "minibatch size in tokens",
           check=lambda v: v >= 1, expect="a whole number >= 1"),
    Option("max_gib", float, ProbeSettings.max_gib, "memory for hidden states held at once (GiB)",
           **_POSITIVE),
)


def next_token_prototypes(final_states: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's target for the ``lstsq`` probe: the prototype of the token it predicts.

    The prototype of token ``t`` is the mean of the model's own last-layer (normed) states
    over the training rows whose next token is ``t``; row ``i`` gets ``y[i]``'s prototype.

    Args:
        final_states: ``(N, d)`` last-layer states of the training rows.
        y: ``(N,)`` the token each row predicts.

    Returns:
        ``(N, d)`` float64 targets.
    """
    final_states = np.asarray(final_states, dtype=np.float64)
    _, inverse = np.unique(np.asarray(y), return_inverse=True)
    sums = np.zeros((int(inverse.max()) + 1 if len(inverse) else 0, final_states.shape[1]))
    np.add.at(sums, inverse, final_states)
    return (sums / np.bincount(inverse)[:, None])[inverse]


def _lens_top1(engine, X: np.ndarray, layer: int) -> np.ndarray:
    out = [engine.lm_head_logits(X[i: i + _PREDICT_CHUNK], layer=layer).argmax(-1)
           for i in range(0, len(X), _PREDICT_CHUNK)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _layer_groups(n_states: int, n_tokens: int, d: int, max_gib: float) -> list[list[int]]:
    per_layer = max(1, n_tokens * d * 4)  # float32 hidden states of every token
    size = max(1, int(max_gib * (1 << 30) // per_layer))
    return [list(range(i, min(i + size, n_states))) for i in range(0, n_states, size)]


def _gather(states: Sequence[np.ndarray], positions: Sequence[Sequence[int]] | None) -> np.ndarray:
    """Stack per-request ``(L, T, d)`` states into ``(L, N, d)``, keeping ``positions``."""
    parts = [h if positions is None else h[:, list(pos)] for h, pos in
             zip(states, positions if positions is not None else [None] * len(states), strict=True)]
    return np.concatenate(parts, axis=1)


# --- the view ---------------------------------------------------------------------------------


@register_view
class MaskedProbe(View):
    """Per-layer linear probe and logit lens on the forget answers' novel-content tokens."""

    name = "masked_probe"
    title = "Masked probe: is it still inside?"
    metrics = ("masked_probe.top1_last_layer",)
    options = OPTIONS

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        items = ctx.forget_items()
        retain = ctx.retain_items()
        if not items:
            return self.skipped(label, "the forget split has no items")
        if not retain:
            return self.skipped(label, "the retain split has no items to fit the probe on")
        settings = ProbeSettings.from_config(ctx.config)
        engine = ctx.engine(label)
        fmt = engine.fmt

        # Forget side: which answer tokens are novel content, and their ids.
        probe_items, f_reqs, f_pos, f_ids, excluded = [], [], [], [], []
        for item in items:
            a = prompts.direct(item)
            # The engine's own tokenisation of the answer (encode_pair), so positions line
            # up with its hidden states in every --compat mode.
            _, ids, offsets = fmt.encode_pair(a.prompt, item.answer, add_eot=True)
            mask = novel_token_mask(item.answer, shown_texts(ctx.config, a.prompt), offsets)
            pos = [i for i, m in enumerate(mask) if m]
            if not pos:
                excluded.append(item)
                continue
            probe_items.append((item, [item.answer[offsets[i][0]: offsets[i][1]] for i in pos]))
            f_reqs.append(ScoreRequest(a.prompt, item.answer, add_eot=True))
            f_pos.append(pos)
            f_ids.append([ids[i] for i in pos])
        if not probe_items:
            return self.skipped(label, "no forget item has a novel-content token "
                                       "(every answer only repeats its question)")
        y_f = np.array([t for ids in f_ids for t in ids], dtype=np.int64)

        # Retain side: every answer token (end-of-turn included) is a training example.
        r_reqs, y_r = [], []
        for item in retain:
            r_prompt = prompts.direct(item).prompt
            r_reqs.append(ScoreRequest(r_prompt, item.answer, add_eot=True))
            y_r += fmt.encode_pair(r_prompt, item.answer, add_eot=True)[1]
        y_r = np.array(y_r, dtype=np.int64)

        n_states = engine.n_layers + 1
        d = engine.hidden_size
        groups = ([list(range(n_states))] if d is None else
                  _layer_groups(n_states, len(y_r) + len(y_f), d, settings.max_gib))

        prototypes = None
        if settings.kind == "lstsq":
            # Every layer's targets come from the last layer: read it once, up front.
            final_r = _gather(engine.hidden_states(r_reqs, layers=[n_states - 1]), None)[0]
            prototypes = next_token_prototypes(final_r, y_r)
            del final_r

        probe_ok = np.zeros((n_states, len(y_f)), dtype=bool)
        lens_ok = np.zeros((n_states, len(y_f)), dtype=bool)
        train_acc: list[float] = [float("nan")] * n_states
        last_pred = np.zeros(len(y_f), dtype=np.int64)
        for group in groups:
            x_f = _gather(engine.hidden_states(f_reqs, layers=group), f_pos)
            x_r = _gather(engine.hidden_states(r_reqs, layers=group), None)
            # Layer l's probe is seeded ctx.config.seed + l; the last layer is read as normed.
            probes = engine.fit_probes(ProbeRequest(settings.fit(), tuple(group), x_r, y_r, x_f,
                                                    seed=ctx.config.seed, prototypes=prototypes))
            for j, layer in enumerate(group):
                pred = probes.eval_top1[j]
                probe_ok[layer] = pred == y_f
                lens_ok[layer] = _lens_top1(engine, x_f[j], layer) == y_f
                train_acc[layer] = float(np.mean(probes.train_top1[j] == y_r))
                if layer == n_states - 1:
                    last_pred = pred
            del x_f, x_r, probes
            engine.release_memory()

        return self._result(ctx, label, settings, probe_items, excluded, y_f, y_r, probe_ok,
                            lens_ok, train_acc, last_pred, engine.tokenizer)

    def _result(self, ctx, label, settings, probe_items, excluded, y_f, y_r, probe_ok, lens_ok,
                train_acc, last_pred, tokenizer) -> ViewResult:
        n_states = probe_ok.shape[0]
        last = n_states - 1
        records, token_flags, start = [], [], 0
        for item, texts in probe_items:
            sl = slice(start, start + len(texts))
            start += len(texts)
            fam = item_fields(item)["family"]
            token_flags += [{"family": fam, "correct": bool(c)} for c in probe_ok[last, sl]]
            records.append({
                **item_fields(item),
                "novel_tokens": texts,
                "token_ids": [int(t) for t in y_f[sl]],
                "probe_correct_last": [bool(c) for c in probe_ok[last, sl]],
                "lens_correct_last": [bool(c) for c in lens_ok[last, sl]],
                "probe_pred_last": [tokenizer.decode([int(t)]) for t in last_pred[sl]],
                "probe_correct_by_layer": [int(c) for c in probe_ok[:, sl].sum(1)],
                "lens_correct_by_layer": [int(c) for c in lens_ok[:, sl].sum(1)],
            })
        for item in excluded:
            records.append({**item_fields(item), "excluded": True, "novel_tokens": []})
            token_flags.append({"family": item_fields(item)["family"], "correct": None})

        metric = rate_metric(
            "masked_probe.top1_last_layer", token_flags, "correct",
            excluded_reason="items without a novel-content token (the question shows every "
                            "content word of the answer)")
        probe_curve = [float(v) for v in probe_ok.mean(1)]
        lens_curve = [float(v) for v in lens_ok.mean(1)]
        seen = set(y_r.tolist())
        metric.extra.update({
            "unit": "novel-content tokens; excluded counts items",
            "probe_top1_by_layer": probe_curve,
            "lens_top1_by_layer": lens_curve,
            "lens_top1_last_layer": lens_curve[last],
            "lens_ci": list(rate_with_ci(lens_ok[last].tolist()).ci or ()),
            "probe_train_top1_by_layer": train_acc,
            "n_train_tokens": int(len(y_r)),
            "target_coverage": float(np.mean([t in seen for t in y_f.tolist()])),
            "probe": asdict(settings),
        })
        plot = Plot("layer_curves", f"masked_probe: probe and logit lens by layer ({label})", {
            "curves": [{"label": f"{settings.kind} probe (fit on retain)", "values": [plot_number(v) for v in probe_curve]},
                       {"label": "logit lens", "values": [plot_number(v) for v in lens_curve]}],
            "title": f"{label}: top-1 on novel forget tokens "
                     f"(probe {probe_curve[last]:.3f}, lens {lens_curve[last]:.3f} at last layer)"})
        return ViewResult(self.name, label, [metric], records, plots=[plot])
