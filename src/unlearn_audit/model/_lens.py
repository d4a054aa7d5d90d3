"""Probes on hidden states and the model's frozen readout, for the masked_probe view.

Every torch operation of the probes lives here, reached through :meth:`Engine.fit_probes`
(numpy in, numpy out), so the view itself never imports torch. The probe kinds, their
fits and why they are built this way are described in
:mod:`unlearn_audit.views.masked_probe`:

- :class:`Readout`: a float32 copy of the model's final norm and output head;
- :func:`fit_probe`: one layer's probe (closed-form ridge ``lstsq``, or the Adam-fit
  ``tuned`` translator and ``restricted`` logistic regression);
- :func:`fit_and_predict`: every layer of a :class:`ProbeRequest`.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from unlearn_audit.model._types import PROBE_KINDS, ProbeAnswer, ProbeFit, ProbeRequest

__all__ = ["Readout", "fit_and_predict", "fit_probe"]

# Rows of logits computed at once when predicting (bounds memory at ~rows x vocab x 4 B).
_PREDICT_CHUNK = 512


def final_norm(model, needed_by: str, fix: str = ""):
    """The decoder's final norm module, for the logit lens and the probes' readout.

    Raises:
        NotImplementedError: an architecture whose norm has none of the usual names; the
            message says who needed it (``needed_by``) and ``fix``, if any.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    names = ("norm", "final_layernorm", "ln_f", "final_layer_norm")
    for name in names:
        mod = getattr(decoder, name, None)
        if mod is not None:
            return mod
    raise NotImplementedError(
        f"Cannot find the final norm of {type(model).__name__} (looked for {', '.join(names)} "
        f"on its decoder); {needed_by} needs it.{' Fix: ' + fix if fix else ''}"
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
                "Fix: --view-option masked_probe.kind=restricted."
            )
        self.weight = head.weight.detach().to(device=device, dtype=torch.float32)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else bias.detach().to(device=device, dtype=torch.float32)
        norm = final_norm(model, "the tuned probe", "--view-option masked_probe.kind=restricted.")
        self.norm = copy.deepcopy(norm).to(device=device, dtype=torch.float32)
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
    settings: ProbeFit,
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
            the masked_probe view's ``next_token_prototypes`` of the same rows' last-layer
            states and ``y``.

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



def fit_and_predict(model, device, request: ProbeRequest, n_states: int) -> ProbeAnswer:
    """Fit ``request``'s probe at each of its layers and predict its train and eval rows.

    Args:
        model: the causal LM whose final norm and head the ``lstsq``/``tuned`` probes read
            through (copied, never modified).
        device: the engine's device; probes are fit there on CUDA, else on the CPU.
        request: states, targets, layers and settings.
        n_states: ``n_layers + 1``; layer ``n_states - 1`` is read as already normed.

    Raises:
        ValueError: a layer out of range, or arrays whose shapes do not match.
    """
    layers = [int(x) for x in request.layers]
    bad = [x for x in layers if not 0 <= x < n_states]
    if bad:
        raise ValueError(f"layers {bad} out of range for {n_states} hidden states (0..{n_states - 1}).")
    x_train, x_eval = request.x_train, request.x_eval
    if len(x_train) != len(layers) or len(x_eval) != len(layers):
        raise ValueError(f"x_train and x_eval need one row per layer ({len(layers)}); "
                         f"got {len(x_train)} and {len(x_eval)}.")
    device = device if str(getattr(device, "type", device)) == "cuda" else "cpu"
    readout = None if request.fit.kind == "restricted" else Readout(model, device)
    train, evals = [], []
    for j, layer in enumerate(layers):
        probe = fit_probe(x_train[j], request.y_train, request.fit, seed=request.seed + layer,
                          device=device, readout=readout, normed=layer == n_states - 1,
                          prototypes=request.prototypes)
        evals.append(probe.predict(x_eval[j]))
        train.append(probe.predict(x_train[j]))
    return ProbeAnswer(tuple(train), tuple(evals))
