"""TokenScores as the engine stores and hands them out.

Their JSON form in the disk cache (:func:`_scores_to_json`, :func:`_scores_from_json`;
floats round-trip exactly, and a field absent from old entries reads as its default), the
empty result of an empty continuation, and the copy every caller gets so duplicated
requests never share one mutable array.
"""

from __future__ import annotations

import numpy as np

from unlearn_audit.model._types import TokenScores


def _empty_scores(vocab_stats: bool) -> TokenScores:
    empty = np.zeros(0, dtype=np.float64)
    if not vocab_stats:
        return TokenScores(empty, [], [])
    return TokenScores(empty, [], [], empty.copy(), empty.copy(), [])


def _scores_to_json(s: TokenScores) -> dict:
    d = {
        "logprobs": [float(x) for x in s.logprobs],
        "token_ids": list(s.token_ids),
        "offsets": [list(o) for o in s.offsets],
    }
    if s.vocab_mean is not None:
        d["vocab_mean"] = [float(x) for x in s.vocab_mean]
        d["vocab_std"] = [float(x) for x in s.vocab_std]
        d["top_ids"] = [int(t) for t in s.top_ids]
    if s.truncated_from is not None:  # absent otherwise: entries written before stay valid
        d["truncated_from"] = int(s.truncated_from)
    return d


def _scores_from_json(d: dict) -> TokenScores:
    s = TokenScores(
        np.asarray(d["logprobs"], dtype=np.float64),
        list(d["token_ids"]),
        [tuple(o) for o in d["offsets"]],
        truncated_from=d.get("truncated_from"),
    )
    if "vocab_mean" in d:
        s.vocab_mean = np.asarray(d["vocab_mean"], dtype=np.float64)
        s.vocab_std = np.asarray(d["vocab_std"], dtype=np.float64)
        s.top_ids = list(d["top_ids"])
    return s


def _copy_scores(s: TokenScores) -> TokenScores:
    # Duplicated requests must not share one mutable array.
    out = TokenScores(s.logprobs.copy(), list(s.token_ids), list(s.offsets), truncated_from=s.truncated_from)
    if s.vocab_mean is not None:
        out.vocab_mean, out.vocab_std, out.top_ids = s.vocab_mean.copy(), s.vocab_std.copy(), list(s.top_ids)
    return out
