"""Batch planning: which rows share a forward pass, under a padded-token budget.

Pure bookkeeping on token counts (no torch): the rows the engine plans over
(:class:`_ScoreRow`, :class:`_GenRow`), cutting them into batches by length or by shared
prompt, deciding whether the prefix-shared passes pay off, and splitting a continuation
pass into length bands. Kept apart from the engine so the cost model reads in one place;
nothing here changes a number, only how work is grouped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unlearn_audit.model._types import GenRequest

# What one extra forward call costs, in padded tokens it would have to save to pay off:
# small on a CPU (tiny models are compute-bound), large on a GPU (launch-bound).
_CALL_OVERHEAD_TOKENS = {"cpu": 64, "cuda": 2048}

# A prefix shared by every prompt of a batch gets its own pass only when at least this
# long; shorter, the extra forward call costs more than it saves.
_MIN_SHARED_PREFIX = 8


@dataclass
class _ScoreRow:
    key: str
    prompt_ids: tuple[int, ...]
    cont_ids: list[int]
    offsets: list[tuple[int, int]]
    vocab_stats: bool = False
    truncated_from: int | None = None  # answer tokens before _fit_context cut them


@dataclass
class _GenRow:
    req_index: int
    sample_index: int
    prompt_ids: list[int]
    request: GenRequest


def _plan_by_length(
    rows: list, length: Callable[[Any], int], budget: int, max_rows: int, presorted: bool = False
) -> list[list]:
    """Sort by length and cut batches whose padded size (rows x longest) fits the budget."""
    ordered = rows if presorted else sorted(rows, key=length)
    batches: list[list] = []
    cur: list = []
    longest = 0
    for r in ordered:
        n = length(r)
        if cur and (len(cur) + 1 > max_rows or (len(cur) + 1) * max(longest, n) > budget):
            batches.append(cur)
            cur, longest = [], 0
        cur.append(r)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches


def _plan_score(
    rows: list[_ScoreRow], budget: int, max_rows: int, share_prefix: bool
) -> list[list[_ScoreRow]]:
    """Batches of score rows under ``budget`` padded tokens and ``max_rows`` rows.

    With ``share_prefix`` rows are grouped by prompt and a batch is costed as its
    prompts once plus every continuation (the prefix-shared passes); else as full
    sequences cut by length.
    """
    if not share_prefix:
        return _plan_by_length(
            rows, lambda r: len(r.prompt_ids) + len(r.cont_ids) - 1, budget, max_rows
        )
    groups: dict[tuple[int, ...], list[_ScoreRow]] = {}
    for r in rows:
        groups.setdefault(r.prompt_ids, []).append(r)
    ordered = sorted(
        groups.items(), key=lambda g: (len(g[0]), max(len(r.cont_ids) for r in g[1]))
    )
    batches: list[list[_ScoreRow]] = []
    cur: list[_ScoreRow] = []
    n_prompts = lp_max = lc_max = 0
    for prompt, members in ordered:
        members = sorted(members, key=lambda r: len(r.cont_ids))
        lp = len(prompt) - 1
        while members:
            # Take as many rows of this prompt as fit beside what the batch holds.
            take = 0
            for k in range(1, len(members) + 1):
                nlp = max(lp_max, lp)
                nlc = max(lc_max, len(members[k - 1].cont_ids))
                rows_now = len(cur) + k
                cost = (n_prompts + 1) * nlp + rows_now * nlc
                if rows_now > max_rows or cost > budget or rows_now * (nlp + nlc) > 2 * budget:
                    break
                take = k
            if take == 0:
                if cur:
                    batches.append(cur)
                    cur, n_prompts, lp_max, lc_max = [], 0, 0, 0
                    continue
                take = 1  # one row over budget still has to run
            chunk, members = members[:take], members[take:]
            cur.extend(chunk)
            n_prompts += 1
            lp_max = max(lp_max, lp)
            lc_max = max(lc_max, max(len(r.cont_ids) for r in chunk))
    if cur:
        batches.append(cur)
    return batches


def _plan_generate(rows: list[_GenRow], gen_budget: int, max_rows: int) -> list[list[_GenRow]]:
    """Batches of generation rows, each at most ``gen_budget`` tokens of prompt plus new
    tokens (see ``_resources._generation_scale``), same ``max_new_tokens`` together."""
    ordered = sorted(rows, key=lambda r: (r.request.max_new_tokens, len(r.prompt_ids)))
    return _plan_by_length(
        ordered,
        lambda r: len(r.prompt_ids) + r.request.max_new_tokens,
        gen_budget,
        max_rows,
        presorted=True,
    )


def _reuse_pays(batch: list[_ScoreRow]) -> bool:
    """Whether the cached-prefix passes save work here (else one full pass is cheaper)."""
    if min(len(r.prompt_ids) for r in batch) < 2:
        return False  # a one-token prompt leaves no prefix to cache
    distinct = {r.prompt_ids for r in batch}
    if len(distinct) < len(batch):
        return True  # some prompt feeds several continuations
    if len(distinct) == 1:
        return False
    return _common_prefix_len([list(p[:-1]) for p in distinct]) >= _MIN_SHARED_PREFIX


def _length_bands(lengths: list[int], overhead: int) -> list[tuple[int, int]]:
    """Cut sorted ``lengths`` into contiguous bands minimising padded tokens + calls.

    Cost of a band = rows x its longest length; each band adds ``overhead``. Exact dynamic
    programme over the positions where the length changes (few distinct lengths).
    """
    n = len(lengths)
    cuts = [0] + [i for i in range(1, n) if lengths[i] != lengths[i - 1]] + [n]
    best = {0: (0, None)}  # cut position -> (cost, previous cut)
    for j in range(1, len(cuts)):
        end = cuts[j]
        options = []
        for i in range(j):
            start = cuts[i]
            cost = best[start][0] + (end - start) * lengths[end - 1] + overhead
            options.append((cost, start))
        best[end] = min(options)
    bands, end = [], n
    while end:
        start = best[end][1]
        bands.append((start, end))
        end = start
    return bands[::-1]


def _common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(len(x) for x in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(x[i] != t for x in seqs):
            return i
    return n
