"""Log-probability and vocabulary-statistic math on logits.

What a scoring pass reads out of the model's logits: ``log p(target)`` per position
(:func:`_log_prob_of`), the mean/spread of ``log p`` over the vocabulary and the argmax
(:func:`_vocab_stats`), both chunked over rows and split back per request by
:func:`_gather`. Every float operation's order and dtype here is part of the numbers the
audit reports (and the disk cache stores): bump ``CACHE_VERSION`` if it changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Rows of log-softmax computed at once, bounding its extra memory at ~rows x vocab x 8 B.
_LOGSOFTMAX_CHUNK = 1024

# Rows of vocabulary statistics at once: they hold two float64 rows x vocab products.
_STATS_CHUNK = 256


def _gather(logits, rows, cols, targets, lengths, wants=None) -> list[tuple[np.ndarray, Any]]:
    """log p(target) = logit[target] - logsumexp(logits), accumulated in float64.

    The exponentials of the max-shifted logits are taken in float32 and summed in
    float64: within ~1e-8 of a full float64 log-softmax of the same logits (tested),
    at a third of its cost on a CPU, where this step otherwise rivals the model itself.

    Returns:
        Per row ``(logprobs, stats)``; ``stats`` is ``(vocab_mean, vocab_std, top_ids)``
        (:func:`_vocab_stats`) for rows whose ``wants`` flag is set, else ``None``.
    """
    import torch

    dev = logits.device
    wants = wants or [False] * len(lengths)
    rows_t = torch.tensor(rows, device=dev)
    cols_t = torch.tensor(cols, device=dev)
    tgt_t = torch.tensor(targets, device=dev)
    parts = []
    for s in range(0, len(rows), _LOGSOFTMAX_CHUNK):
        chunk = slice(s, s + _LOGSOFTMAX_CHUNK)
        parts.append(_log_prob_of(logits[rows_t[chunk], cols_t[chunk]], tgt_t[chunk]))
    flat = torch.cat(parts).cpu().numpy() if parts else np.zeros(0)
    # Vocabulary statistics only at the positions of rows that asked for them.
    flat_want = np.repeat(np.asarray(wants, dtype=bool), lengths)
    stats = None
    if flat_want.any():
        sel = torch.as_tensor(np.flatnonzero(flat_want), device=dev)
        pieces = [
            _vocab_stats(logits[rows_t[sel[s : s + _STATS_CHUNK]], cols_t[sel[s : s + _STATS_CHUNK]]])
            for s in range(0, len(sel), _STATS_CHUNK)
        ]
        stats = [torch.cat([p[j] for p in pieces]).cpu().numpy() for j in range(3)]
    out, at, st_at = [], 0, 0
    for n, want in zip(lengths, wants, strict=True):
        lp = np.asarray(flat[at : at + n], dtype=np.float64)
        got = None
        if want:
            mean, std, top = (a[st_at : st_at + n] for a in stats)
            got = (np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64),
                   [int(t) for t in top])
            st_at += n
        out.append((lp, got))
        at += n
    return out


def _log_prob_of(logits, targets):
    """float64 ``log_softmax(logits)[target]`` per row, exponentials in float32.

    ``exp(x - max)`` lies in (0, 1]; its float32 relative error (~6e-8) is all the
    shortcut costs, while the sum, the log and the subtraction run in float64.
    """
    import torch

    x = logits.float()
    top = x.max(dim=-1, keepdim=True).values
    sum_exp = (x - top).exp().sum(dim=-1, dtype=torch.float64)
    target = x.gather(1, targets[:, None])[:, 0].double()
    return target - top[:, 0].double() - sum_exp.log()


def _vocab_stats(logits):
    """Mean and spread of ``log p`` over the vocabulary, and the argmax, per row.

    Definition: with ``p = softmax(logits)`` and ``z = logits - max``, ``log p = z - log Z``,
    so ``E_p[log p] = E_p[z] - log Z`` and ``Var_p[log p] = E_p[z^2] - E_p[z]^2``. The
    exponentials are float32 (as in :func:`_log_prob_of`), the products and sums float64.
    These are the ``mu`` and ``sigma`` of Min-K%++ (Zhang et al. 2024, eq. 3) and of
    open-unlearning's ``MinKPlusPlusAttack`` (which takes the variance from the full
    log-softmax); the argmax is the greedy prediction exact memorisation compares with.

    Returns:
        ``(mean, std, argmax)`` tensors of shape ``(rows,)``; mean and std in float64.
    """
    import torch

    x = logits.float()
    top = x.max(dim=-1, keepdim=True).values
    z = x - top
    e = z.exp()
    total = e.sum(dim=-1, dtype=torch.float64)
    ez = e.double() * z.double()
    mean_z = ez.sum(dim=-1) / total
    mean_z2 = (ez * z.double()).sum(dim=-1) / total
    var = (mean_z2 - mean_z.square()).clamp(min=0.0)
    return mean_z - total.log(), var.sqrt(), x.argmax(dim=-1)


def _compute_dtype(param):
    import torch

    # Quantized heads keep int8/uint8 storage; activations then run in the compute dtype.
    return param.dtype if param.dtype.is_floating_point else torch.float16
