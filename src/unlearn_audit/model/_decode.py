"""The decode loop: greedy and sampled generation that drops each row as it finishes.

``model.generate`` keeps every row of a batch in every forward pass until the longest answer
ends (finished rows are fed padding). A chat model's answers vary in length: on the smol
world they averaged 14 tokens, and one rambling answer per batch kept 48 steps of every row
running. Here a row leaves the batch, and its KV cache rows are dropped
(``Cache.batch_select_indices``), the step it ends, so a batch costs the sum of its answers'
lengths, not its size times the longest.

It computes what ``model.generate`` computes for the engine's configuration (greedy over the
scores of :class:`~unlearn_audit.model._sampling._PerRowSampler`, no penalties): the same
left-padded prompt pass with the same position ids (real tokens counted, padding at 0), then
one token per step against the cache, the attention mask grown by one real column. Only the
batch a row shares a pass with changes as rows leave, which no answer may depend on (the
engine's batch-invariance tests). torch is imported inside the function, as everywhere in
the model package.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence


def cache_kwarg(model) -> str:
    """The forward argument that carries the KV cache: ``cache`` from transformers 5.x (which
    deprecates ``past_key_values``), ``past_key_values`` before."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_of(out):
    """The KV cache a forward returned (``cache`` from transformers 5.x, else
    ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


def positions(mask):
    """Position ids counting real tokens only, so padding never shifts a position."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def decode(
    model,
    ids,
    mask,
    rooms: Sequence[int],
    stop_ids: Sequence[int],
    sampler,
    *,
    logits_to_keep: bool,
) -> list[list[int]]:
    """New tokens for each row of the left-padded prompts ``ids``/``mask``.

    Row ``i`` runs until it emits one of ``stop_ids`` (kept as its last token) or holds
    ``rooms[i]`` tokens. ``sampler.select(scores, rows)`` turns each step's float32 logits into
    scores whose argmax is the next token (``rows``: the batch rows still running).
    """
    import torch

    name = cache_kwarg(model)
    stop = set(int(t) for t in stop_ids)
    out: list[list[int]] = [[] for _ in range(ids.shape[0])]
    rows = list(range(ids.shape[0]))  # batch row of each row still running
    attn = mask
    real = mask.sum(dim=1)  # real tokens so far, per running row: the next token's position
    step_ids, pos = ids, positions(mask)
    kwargs = {"use_cache": True}
    if logits_to_keep:
        kwargs["logits_to_keep"] = 1
    while True:
        res = model(input_ids=step_ids, attention_mask=attn, position_ids=pos, **kwargs)
        kwargs[name] = cache_of(res)
        scores = sampler.select(res.logits[:, -1].to(dtype=torch.float32, copy=True), rows)
        del res  # the prompt pass's logits may be large
        nxt = scores.argmax(dim=-1)
        keep = []
        for j, (i, t) in enumerate(zip(rows, nxt.tolist(), strict=True)):
            out[i].append(t)
            if t not in stop and len(out[i]) < rooms[i]:
                keep.append(j)
        if not keep:
            return out
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=ids.device)
            kwargs[name].batch_select_indices(index)
            attn, real, nxt = attn[index], real[index], nxt[index]
            rows = [rows[j] for j in keep]
        step_ids, pos = nxt[:, None], real[:, None]
        real = real + 1
        attn = torch.cat([attn, attn.new_ones((len(rows), 1))], dim=1)
