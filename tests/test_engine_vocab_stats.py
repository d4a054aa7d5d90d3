"""The engine's vocabulary statistics (``ScoreRequest(vocab_stats=True)``).

The reference is the simplest computation: one unpadded sequence, a float64
``log_softmax`` over the whole vocabulary, its mean and standard deviation under the
model's own distribution, and its argmax. Batching, padding, prefix sharing and the disk
cache must reproduce it, and plain requests must keep their old cache keys.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _tiny import save_checkpoint
from unlearn_audit.model import Engine, ModelSpec, Prompt, ScoreRequest, load_model, make_format
from unlearn_audit.model._cache import request_key

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [
    Prompt.question("Where was Elena Marwick born?"),
    Prompt.question("What genre does Tomas Okonkwo-Reyes write?", stem="He writes"),
    Prompt.question("Hi?"),
]
CONTINUATIONS = ["Port Aldric.", "Elena Marwick was born in the city of Port Aldric, by the sea.", "1961"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    d = save_checkpoint(tmp_path_factory.mktemp("tiny") / "model")
    return load_model(ModelSpec(str(d), "tiny", device="cpu"), hash_cache=None)


@pytest.fixture(scope="module")
def chat(loaded):
    return make_format(loaded.tokenizer, kind="chat")


def reference(model, fmt, req: ScoreRequest):
    """(logprobs, mean, std, argmax) of one request alone, float64 log-softmax."""
    p = fmt.encode_prompt(req.prompt)
    c, _ = fmt.encode_continuation(req.continuation, add_eot=req.add_eot, prompt=req.prompt)
    ids = torch.tensor([p + c])
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None]).logits[0]
    lsm = logits.double().log_softmax(-1)[len(p) - 1 : len(p) - 1 + len(c)]
    probs = lsm.exp()
    mean = (probs * lsm).sum(-1)
    std = ((probs * (lsm - mean[:, None]) ** 2).sum(-1)).sqrt()
    lp = lsm[torch.arange(len(c)), torch.tensor(c)]
    return lp.numpy(), mean.numpy(), std.numpy(), logits[len(p) - 1 : len(p) - 1 + len(c)].argmax(-1).tolist()


@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("side", ["left", "right"])
def test_vocab_stats_match_a_float64_reference(loaded, chat, share_prefix, side):
    original = loaded.tokenizer.padding_side
    loaded.tokenizer.padding_side = side
    try:
        engine = Engine(loaded, chat, progress=False, share_prefix=share_prefix)
        # Stats and plain rows mixed in one call (and so in one batch).
        reqs = [ScoreRequest(p, c, add_eot=True, vocab_stats=(i + j) % 2 == 0)
                for i, p in enumerate(PROMPTS) for j, c in enumerate(CONTINUATIONS)]
        got = engine.score(reqs)
    finally:
        loaded.tokenizer.padding_side = original
    for req, ts in zip(reqs, got, strict=True):
        lp, mean, std, top = reference(loaded.model, chat, req)
        np.testing.assert_allclose(ts.logprobs, lp, atol=1e-4)
        if not req.vocab_stats:
            assert ts.vocab_mean is None and ts.vocab_std is None and ts.top_ids is None
            continue
        np.testing.assert_allclose(ts.vocab_mean, mean, atol=1e-4)
        np.testing.assert_allclose(ts.vocab_std, std, atol=1e-4)
        assert ts.top_ids == top
        # The spread is a real one: a random model is far from one-hot.
        assert (ts.vocab_std > 0).all()


def test_vocab_stats_survive_the_disk_cache(loaded, chat, tmp_path):
    reqs = [ScoreRequest(PROMPTS[0], CONTINUATIONS[1], vocab_stats=True),
            ScoreRequest(PROMPTS[0], "", add_eot=False, vocab_stats=True)]
    first = Engine(loaded, chat, cache_dir=tmp_path, progress=False).score(reqs)
    again = Engine(loaded, chat, cache_dir=tmp_path, progress=False)
    second = again.score(reqs)
    assert again.stats["forward_calls"] == 0
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.vocab_mean, b.vocab_mean)
        np.testing.assert_array_equal(a.vocab_std, b.vocab_std)
        assert a.top_ids == b.top_ids
    assert second[1].n_tokens == 0 and len(second[1].vocab_mean) == 0


def test_plain_requests_keep_their_cache_keys():
    """Adding the field must not invalidate every answer cached before it existed."""
    req = ScoreRequest(PROMPTS[0], "Port Aldric.", add_eot=False)
    old_shape = {"prompt": {"turns": [["user", "Where was Elena Marwick born?"]], "stem": ""},
                 "continuation": "Port Aldric.", "add_eot": False}
    assert request_key("score", {"v": 1}, req) == request_key("score", {"v": 1}, old_shape)
    with_stats = ScoreRequest(PROMPTS[0], "Port Aldric.", add_eot=False, vocab_stats=True)
    assert request_key("score", {"v": 1}, with_stats) != request_key("score", {"v": 1}, req)
