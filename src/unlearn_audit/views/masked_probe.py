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

The probe (``ctx.config.extra["probe_kind"]``) is an affine *translator* per layer,
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
  (:func:`next_token_prototypes`). The ridge ``probe_ridge`` (relative to the mean
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
  ``probe_steps`` steps with an L2 penalty ``probe_weight_decay`` on ``A``, ``b``;
  untrained it is exactly the logit lens. Slow on a CPU: with it the view takes about
  34 s of CPU time a tiny-world model, against about 1 s with ``lstsq``.
- ``"restricted"``: multinomial logistic regression on standardised states over the token
  ids seen in the retain answers (a forget token outside that set always counts wrong),
  fit by Adam like ``tuned``.

The Adam-fit kinds run full-batch (or in seeded minibatches of ``probe_batch_tokens``).
Every knob lives in ``ctx.config.extra`` (``probe_kind``, ``probe_ridge``, ``probe_steps``,
``probe_lr``, ``probe_weight_decay``, ``probe_batch_tokens``, ``probe_max_gib``) and is
reported in ``extra["probe"]``.

Source: views.md; the seed paper reports 0.620 (3B), 0.618 (1B), 0.628 (8B) at the last
layer. The logit lens: nostalgebraist, "interpreting GPT: the logit lens" (2020).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from unlearn_audit import prompts
from unlearn_audit.model._types import ScoreRequest
from unlearn_audit.scoring.stats import rate_with_ci
from unlearn_audit.views._base import Plot, View, ViewResult, plot_number, register_view
from unlearn_audit.views._leak import item_fields, rate_metric, shown_texts
from unlearn_audit.views.likelihood import novel_token_mask

if TYPE_CHECKING:
    from unlearn_audit.context import AuditConfig, AuditContext

__all__ = ["MaskedProbe", "ProbeSettings", "fit_probe", "next_token_prototypes"]

PROBE_KINDS = ("lstsq", "tuned", "restricted")
# Rows of logits computed at once when predicting (bounds memory at ~rows x vocab x 4 B).
_PREDICT_CHUNK = 512


@dataclass(frozen=True)
class ProbeSettings:
    """How the per-layer probe is fit; every field can be set through ``config.extra``.

    Attributes:
        kind: ``lstsq`` (closed-form least-squares translator read out through the model's
            head), ``tuned`` (the same affine translator fit by Adam on cross-entropy) or
            ``restricted`` (logistic regression over the token ids seen in training).
        ridge: ``lstsq`` only: ridge penalty on each side of the closed form, relative to
            the mean eigenvalue of that side's Gram matrix.
        steps: Adam steps per layer (``tuned``, ``restricted``).
        lr: Adam learning rate.
        weight_decay: L2 penalty on the probe's parameters (the translator's offsets
            from identity).
        batch_tokens: minibatch size (capped so a minibatch's logits stay near 1 GiB);
            full batch when the retain set is smaller.
        max_gib: memory for hidden states held at once; layers are read in groups that fit.
    """

    kind: str = "lstsq"
    # Strong enough to keep the translator near the logit lens when the retain set holds
    # far fewer tokens than the translator has entries (the tiny world: 1.1k vs 16k).
    ridge: float = 0.1
    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_tokens: int = 4096
    max_gib: float = 2.0

    @classmethod
    def from_config(cls, config: AuditConfig) -> ProbeSettings:
        """Read ``probe_*`` keys of ``config.extra``; a bad value raises a readable error."""
        ex = config.extra or {}
        kind = str(ex.get("probe_kind", cls.kind))
        if kind not in PROBE_KINDS:
            raise ValueError(f"probe_kind {kind!r} is not supported; use one of {', '.join(PROBE_KINDS)} "
                             f"(default {cls.kind}).")
        default_lr = 1e-2 if kind == "restricted" else cls.lr
        try:
            s = cls(kind=kind, ridge=float(ex.get("probe_ridge", cls.ridge)),
                    steps=int(ex.get("probe_steps", cls.steps)),
                    lr=float(ex.get("probe_lr", default_lr)),
                    weight_decay=float(ex.get("probe_weight_decay", cls.weight_decay)),
                    batch_tokens=int(ex.get("probe_batch_tokens", cls.batch_tokens)),
                    max_gib=float(ex.get("probe_max_gib", cls.max_gib)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"a probe_* setting in the config's extra is not a number ({e}).") from e
        if (s.steps < 0 or s.lr <= 0 or s.weight_decay < 0 or s.batch_tokens < 1 or s.max_gib <= 0
                or not s.ridge > 0):
            raise ValueError(f"probe settings out of range: {s} (need ridge > 0, steps >= 0, lr > 0, "
                             "weight_decay >= 0, batch_tokens >= 1, max_gib > 0).")
        return s


# --- the probes -------------------------------------------------------------------------------


def _final_norm(model):
    """The decoder's final norm module (looked up the way the engine's logit lens does)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    for name in ("norm", "final_layernorm", "ln_f", "final_layer_norm"):
        mod = getattr(decoder, name, None)
        if mod is not None:
            return mod
    raise NotImplementedError(
        f"Cannot find the final norm of {type(model).__name__}; the tuned probe needs it. "
        "Fix: set probe_kind='restricted' in the config's extra."
    )


class Readout:
    """The model's frozen final norm and output head as float32 differentiable ops.

    Copies, never references: fitting a probe through them can never write a gradient
    into the audited model.

    Args:
        model: a causal LM with ``get_output_embeddings()``.
        device: where the probe is fit.
    """

    def __init__(self, model, device):
        import torch

        head = model.get_output_embeddings()
        if head is None or not hasattr(head, "weight"):
            raise NotImplementedError(
                f"{type(model).__name__} has no output head; the {PROBE_KINDS[0]} and tuned probes need one. "
                "Fix: set probe_kind='restricted' in the config's extra."
            )
        self.weight = head.weight.detach().to(device=device, dtype=torch.float32)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else bias.detach().to(device=device, dtype=torch.float32)
        self.norm = copy.deepcopy(_final_norm(model)).to(device=device, dtype=torch.float32)
        self.norm.requires_grad_(False)
        d = self.weight.shape[1]
        with torch.no_grad():
            if isinstance(self.norm, torch.nn.LayerNorm) or getattr(self.norm, "bias", None) is not None:
                # A centring norm maps a constant row to its bias: take its weight instead.
                w = getattr(self.norm, "weight", None)
                self.norm_scale = torch.ones(d) if w is None else w.detach().float().cpu()
            else:
                # An RMS norm of a row of ones is its elementwise scale, however it stores it
                # (Llama's ``weight``, Gemma's ``1 + weight``).
                self.norm_scale = self.norm(torch.ones(1, d, device=device)).reshape(d).cpu()

    def __call__(self, z, normed: bool):
        import torch.nn.functional as F

        return F.linear(z if normed else self.norm(z), self.weight, self.bias)


class _Probe:
    """A fitted probe: ``predict(X)`` gives the top-1 token id of each row."""

    def __init__(self, kind: str, params: dict[str, Any], device, readout: Readout | None,
                 normed: bool):
        self.kind, self.params, self.device = kind, params, device
        self.readout, self.normed = readout, normed

    def logits(self, x):
        import torch.nn.functional as F

        p = self.params
        if self.kind == "lstsq":
            # z lives after the final norm (the prior maps x to the lens's normed state), so
            # the head reads it directly; no per-token rescaling changes its arg-max.
            z = _prep_tuned(x, self.normed) @ p["V"] + p["b"]
            return F.linear(z, self.readout.weight, self.readout.bias)
        if self.kind == "tuned":
            x = _prep_tuned(x, self.normed)
            return self.readout(x + x @ p["A"].T + p["b"], self.normed)
        return ((x - p["mu"]) / p["sd"]) @ p["W"].T + p["c"]

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(X), _PREDICT_CHUNK):
                x = torch.as_tensor(X[i: i + _PREDICT_CHUNK], device=self.device, dtype=torch.float32)
                top = self.logits(x).argmax(-1)
                out.append(top.cpu().numpy() if self.kind != "restricted"
                           else self.params["classes"][top.cpu().numpy()])
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _prep_tuned(x, normed: bool):
    # Below the last layer the readout norms each token, so dividing by the token's RMS
    # changes no prediction but puts every layer on one scale (real models' mid-layer
    # states reach norms in the hundreds), which keeps one learning rate sane for all.
    if normed:
        return x
    return x / x.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt()


def fit_probe(
    X: np.ndarray,
    y: np.ndarray,
    settings: ProbeSettings,
    *,
    seed: int = 0,
    device: Any = "cpu",
    readout: Readout | None = None,
    normed: bool = False,
    prototypes: np.ndarray | None = None,
) -> _Probe:
    """Fit one layer's probe on training states ``X`` (N, d) and next-token ids ``y`` (N,).

    Args:
        X: hidden states, float.
        y: the token each state predicts.
        settings: kind, ridge, steps, learning rate, penalty, minibatch size.
        seed: seeds the minibatch order of the Adam-fit kinds (the initialisation is
            deterministic: zeros; ``lstsq`` has no randomness).
        device: torch device to fit on.
        readout: the model's frozen norm + head; required for ``lstsq`` and ``tuned``.
        normed: whether these states are already normed (the last layer): the readout then
            skips the norm, as the model itself does.
        prototypes: ``lstsq`` only: each row's regression target,
            :func:`next_token_prototypes` of the same rows' last-layer states and ``y``.

    Returns:
        A probe whose ``predict`` maps states to token ids.
    """
    import torch
    import torch.nn.functional as F

    x_all = torch.as_tensor(np.asarray(X), device=device, dtype=torch.float32)
    d = x_all.shape[1]
    if settings.kind == "lstsq":
        if readout is None or prototypes is None:
            raise ValueError("the lstsq probe needs the model's readout and the rows' prototypes "
                             "(next_token_prototypes of their last-layer states)")
        lens_scale = torch.ones(d) if normed else readout.norm_scale
        v, b = _lstsq_translator(_prep_tuned(x_all, normed), prototypes, lens_scale, settings.ridge)
        return _Probe("lstsq", {"V": v.to(device), "b": b.to(device)}, device, readout, normed)
    if settings.kind == "tuned":
        if readout is None:
            raise ValueError("the tuned probe needs the model's readout (norm + head)")
        x_all = _prep_tuned(x_all, normed)
        targets = torch.as_tensor(np.asarray(y), device=device, dtype=torch.long)
        params = {"A": torch.zeros(d, d, device=device), "b": torch.zeros(d, device=device)}

        def forward(x):
            return readout(x + x @ params["A"].T + params["b"], normed)
    else:
        classes, inverse = np.unique(np.asarray(y), return_inverse=True)
        targets = torch.as_tensor(inverse, device=device, dtype=torch.long)
        mu = x_all.mean(0)
        sd = x_all.std(0, unbiased=False).clamp_min(1e-6)
        x_all = (x_all - mu) / sd
        params = {"W": torch.zeros(len(classes), d, device=device),
                  "c": torch.zeros(len(classes), device=device)}

        def forward(x):
            return x @ params["W"].T + params["c"]

    trainable = list(params.values())
    for p in trainable:
        p.requires_grad_(True)
    n_out = readout.weight.shape[0] if settings.kind == "tuned" else len(classes)
    # Keep one minibatch's logits (and their gradient) near 1 GiB: a 128k-token vocabulary
    # at 4096 tokens would need 4 GiB for them alone.
    batch = min(settings.batch_tokens, max(256, (1 << 28) // max(1, n_out)))
    if settings.steps and len(x_all):
        opt = torch.optim.Adam(trainable, lr=settings.lr)
        gen = torch.Generator().manual_seed(int(seed))
        n = len(x_all)
        for _ in range(settings.steps):
            if n > batch:
                idx = torch.randperm(n, generator=gen)[:batch].to(x_all.device)
                xb, yb = x_all[idx], targets[idx]
            else:
                xb, yb = x_all, targets
            loss = F.cross_entropy(forward(xb), yb)
            if settings.weight_decay:
                loss = loss + settings.weight_decay * sum(p.pow(2).sum() for p in trainable)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    params = {k: v.detach() for k, v in params.items()}
    if settings.kind == "tuned":
        return _Probe("tuned", params, device, readout, normed)
    params.update({"mu": mu, "sd": sd, "classes": classes})
    return _Probe("restricted", params, device, None, normed)


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


def _lstsq_translator(x, targets, lens_scale, ridge: float):
    """Closed-form affine translator of the ``lstsq`` probe: ``(V, b)`` with ``z = x V + b``.

    Ridge regression towards the logit lens: with ``xa = [x, 1]`` and ``P = [diag(lens_scale); 0]``
    (the lens, no offset), minimises ``||xa U - t||^2 + l ||U - P||^2`` where
    ``l = ridge * mean(diag(x^T x))``, i.e. ``U = (xa^T xa + l I)^-1 (xa^T t + l P)``; ``V``
    is ``U`` less its last row, ``b`` that row. A ``(d + 1)``-square solve in float64;
    nothing of size tokens x vocabulary is built. As ``ridge`` grows the probe becomes the
    logit lens exactly.
    """
    import torch

    n, d = x.shape
    xa = torch.cat([x.double(), torch.ones(n, 1, device=x.device, dtype=torch.float64)], dim=1)
    t = torch.as_tensor(targets, device=x.device, dtype=torch.float64)
    gram = xa.T @ xa
    lam = ridge * gram.diagonal()[:d].mean().clamp_min(1e-12)
    prior = torch.zeros(d + 1, d, device=x.device, dtype=torch.float64)
    prior[:d] = torch.diag(lens_scale.to(device=x.device, dtype=torch.float64))
    eye = torch.eye(d + 1, device=x.device, dtype=torch.float64)
    u = torch.linalg.solve(gram + lam * eye, xa.T @ t + lam * prior)
    return u[:d].to(torch.float32), u[d].to(torch.float32)


def _lens_top1(engine, X: np.ndarray, layer: int) -> np.ndarray:
    out = [engine.lm_head_logits(X[i: i + _PREDICT_CHUNK], layer=layer).argmax(-1)
           for i in range(0, len(X), _PREDICT_CHUNK)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _hidden_size(model) -> int | None:
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    size = getattr(cfg, "hidden_size", None)
    return int(size) if size else None


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

    def run(self, ctx: AuditContext, label: str) -> ViewResult:
        import torch

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
        d = _hidden_size(engine.model)
        groups = ([list(range(n_states))] if d is None else
                  _layer_groups(n_states, len(y_r) + len(y_f), d, settings.max_gib))
        device = engine.device if str(getattr(engine.device, "type", engine.device)) == "cuda" else "cpu"
        readout = None if settings.kind == "restricted" else Readout(engine.model, device)

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
            for j, layer in enumerate(group):
                probe = fit_probe(x_r[j], y_r, settings, seed=ctx.config.seed + layer,
                                  device=device, readout=readout, normed=layer == n_states - 1,
                                  prototypes=prototypes)
                pred = probe.predict(x_f[j])
                probe_ok[layer] = pred == y_f
                lens_ok[layer] = _lens_top1(engine, x_f[j], layer) == y_f
                train_acc[layer] = float(np.mean(probe.predict(x_r[j]) == y_r))
                if layer == n_states - 1:
                    last_pred = pred
            del x_f, x_r
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

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
