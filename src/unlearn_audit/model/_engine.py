"""The one place a model runs: batched, prefix-sharing, disk-cached scoring and generation.

Views build :class:`ScoreRequest`/:class:`GenRequest` values; the engine answers them.
What it guarantees, and how:

* **Batching never changes a number** (beyond float noise, tested to 1e-4): every batch
  carries an attention mask *and* explicit ``position_ids`` computed from the real tokens
  only, so left or right padding (the tokenizer's ``padding_side`` is honoured) gives the
  same positions as scoring one request alone. Log-probabilities are a log-softmax of
  the logits at the continuation positions, accumulated in float64 (see :mod:`._logits`).
* **Shared prompts are computed once.** A TOFU item is scored as its paraphrased answer
  plus five perturbed answers after the *same* prompt, and every chat prompt starts with
  the same system block. Requests are deduplicated by ``(prompt, continuation,
  add_eot)`` and grouped by prompt into batches; each batch then extends one KV cache
  (``past_key_values``) in three passes: the prefix all its prompts share (run once),
  the rest of each distinct prompt minus its last token (once per prompt), and the
  continuations, each row reading a copy of its prompt's cache
  (``Cache.batch_select_indices``). Six answers of one item cost one prompt pass instead
  of six. The continuation pass is split into length bands when that saves more padding
  than the extra calls cost. Models whose cache cannot be re-indexed fall back to full
  sequences automatically (``share_prefix=False`` forces it).
* **A re-run computes nothing.** Results go to a SQLite file per model fingerprint,
  committed after every batch; see :mod:`unlearn_audit.model._cache`.
* **Sampling does not depend on batch composition.** Each sample (request, index) draws
  from its own ``torch.Generator`` seeded from ``(request.seed, index)``, inside a logits
  processor; ``model.generate`` then only picks that token. A request's samples are thus
  the same alone or in any batch, and sample ``i`` is the same whatever ``n`` is
  (:mod:`._sampling`).

This module is the :class:`Engine` and its forward passes. Batch planning lives in
:mod:`._batching`, log-prob and vocabulary-statistic math in :mod:`._logits`, the sampler in
:mod:`._sampling`, thread and token-budget policy in :mod:`._resources`, and TokenScores'
cache form in :mod:`._scores`.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import inspect
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_audit.model._batching import (
    _CALL_OVERHEAD_TOKENS,
    _MIN_SHARED_PREFIX,
    _common_prefix_len,
    _GenRow,
    _length_bands,
    _plan_by_length,
    _plan_generate,
    _plan_score,
    _reuse_pays,
    _ScoreRow,
)
from unlearn_audit.model._cache import CACHE_VERSION, ResultCache, request_key
from unlearn_audit.model._decode import cache_kwarg, cache_of, decode
from unlearn_audit.model._decode import positions as _positions
from unlearn_audit.model._format import PromptFormat
from unlearn_audit.model._load import LoadedModel, load_model
from unlearn_audit.model._logits import _compute_dtype, _gather
from unlearn_audit.model._resources import (
    _default_budget,
    _generation_scale,
    _limit_threads_for_small_cpu_model,
)
from unlearn_audit.model._sampling import _PerRowSampler, _sample_seed
from unlearn_audit.model._scores import (
    _copy_scores,
    _empty_scores,
    _scores_from_json,
    _scores_to_json,
)
from unlearn_audit.model._types import (
    PROMPT_TOO_LONG,
    FinetuneRequest,
    GenRequest,
    NotGenerated,
    ProbeAnswer,
    ProbeRequest,
    ScoreRequest,
    TokenScores,
)

# Below this many batches a progress bar is noise.
_PROGRESS_MIN_BATCHES = 4


class Engine:
    """Answers score, generate and hidden-state requests for one loaded model.

    Args:
        loaded: the model, tokenizer and fingerprint from :func:`load_model`.
        fmt: how prompts become text (chat template or plain).
        cache_dir: directory of the on-disk result cache; ``None`` disables caching.
        batch_size: maximum sequences per forward pass; ``None`` sizes batches by a token
            budget derived from the vocabulary and (on CUDA) free memory, halving it on
            out-of-memory.
        compat_openunlearning_mask: deprecated; ``True`` turns ``fmt`` into its
            open-unlearning version (:func:`~unlearn_audit.model._format.as_open_unlearning`),
            which is what ``--compat open-unlearning`` does.
        progress: show tqdm bars on loops of more than a few batches.
        share_prefix: compute each distinct prompt once per batch and score continuations
            against its KV cache (see module docstring); ``False`` runs full sequences.
        token_budget: padded tokens per forward pass when ``batch_size`` is ``None``;
            ``None`` picks one for the device.

    With an open-unlearning format (``fmt.compat == "open-unlearning"``, from
    ``--compat open-unlearning``) the engine also does the rest as open-unlearning does:
    the attention mask hides every ``pad_token_id`` (their collator's ``input_ids !=
    pad_token_id``; their loader sets pad = EOS only when the tokenizer has no pad token,
    and then every EOS/end-of-turn token inside a sequence is hidden), and generation
    starts from the checkpoint's own ``generation_config`` made greedy (their
    ``do_sample=False, top_p=None, temperature=None``), so it stops on the checkpoint's
    EOS ids, not on the end-of-turn token this package adds.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        fmt: PromptFormat,
        cache_dir: Path | None = None,
        batch_size: int | None = None,
        compat_openunlearning_mask: bool = False,
        progress: bool = True,
        *,
        share_prefix: bool = True,
        token_budget: int | None = None,
    ):
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(
                f"--batch-size must be a positive integer or None (auto); got {batch_size!r}"
            )
        if token_budget is not None and token_budget < 1:
            raise ValueError(f"token_budget must be positive; got {token_budget!r}")
        if compat_openunlearning_mask and fmt.compat != "open-unlearning":
            from unlearn_audit.model._format import as_open_unlearning

            warnings.warn(
                "compat_openunlearning_mask is deprecated; pass a format from "
                "make_format(..., compat='open-unlearning') (--compat open-unlearning).",
                DeprecationWarning,
                stacklevel=2,
            )
            fmt = as_open_unlearning(fmt)
        self.loaded = loaded
        self.fmt = fmt
        self.compat = fmt.compat
        self.batch_size = batch_size
        self.progress = progress
        self.share_prefix = share_prefix
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache = ResultCache(self._cache_dir, loaded.fingerprint)
        self._budget = token_budget or self._default_budget()
        self._budget_explicit = token_budget is not None
        self._gen_scale = (4 if self._device_type() == "cuda" else 1) if token_budget else (
            _generation_scale(self._text_config(), self._device_type(), self._budget))
        tok = loaded.tokenizer
        self._pad_id = next(
            (int(i) for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None), 0
        )
        # open-unlearning's pad id is the tokenizer's pad token, else EOS: _pad_id exactly.
        self._compat_ids = [self._pad_id]
        self._call_overhead = _CALL_OVERHEAD_TOKENS.get(self._device_type(), 512)
        self._takes_logits_to_keep = (
            "logits_to_keep" in inspect.signature(loaded.model.forward).parameters
        )
        self._cache_kwarg = cache_kwarg(loaded.model)
        _limit_threads_for_small_cpu_model(loaded.model, self._device_type())
        # Scored sequences cut to the model's context (request key -> (kept, full) answer
        # tokens), for the report; see _fit_context.
        self.truncated: dict[str, tuple[int, int]] = {}
        # Generation requests whose prompt did not fit the context (key -> prompt tokens).
        self.prompts_too_long: dict[str, int] = {}
        # ... and those whose prompt left fewer than max_new_tokens positions (key -> room).
        self.answers_capped: dict[str, int] = {}
        self._tokenizer_hash: str | None = None
        # Counters for tests and benchmarks: work done, and prompt tokens not recomputed.
        self.stats = {
            "forward_calls": 0,
            "generate_calls": 0,
            "score_rows": 0,
            "gen_rows": 0,
            "prefix_tokens_reused": 0,
        }

    # --- properties -------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.loaded.fingerprint

    @property
    def tokenizer_hash(self) -> str:
        """sha256 of how this model's tokenizer splits and wraps text (:func:`tokenizer_hash`)."""
        if self._tokenizer_hash is None:
            self._tokenizer_hash = tokenizer_hash(self.loaded.tokenizer)
        return self._tokenizer_hash

    @property
    def kernel_path(self) -> str | None:
        """How a quantized copy's matmuls run (``cpu-dequantize``, ``cuda-bitsandbytes``, ...;
        see :func:`~unlearn_audit.model._load.quantized_kernel_path`); ``None`` unquantized."""
        return self.loaded.kernel_path

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def device(self):
        return self.loaded.device

    @property
    def n_layers(self) -> int:
        """Transformer blocks; ``hidden_states`` returns ``n_layers + 1`` states per token."""
        return int(self._text_config().num_hidden_layers)

    @property
    def hidden_size(self) -> int | None:
        """Width of the residual stream (``d`` of :meth:`hidden_states`); ``None`` if unstated."""
        size = getattr(self._text_config(), "hidden_size", None)
        return int(size) if size else None

    @property
    def n_params(self) -> int:
        """The model's parameter count."""
        return int(sum(p.numel() for p in self.model.parameters()))

    def _text_config(self):
        cfg = self.loaded.model.config
        return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

    @property
    def max_positions(self) -> int | None:
        """The model's context in tokens (``max_position_embeddings``); ``None`` if unstated."""
        n = getattr(self._text_config(), "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    @property
    def config(self) -> dict[str, Any]:
        """Engine settings that change numbers: part of every cache key and of the report."""
        return {
            "cache_version": CACHE_VERSION,
            "format": self.fmt.config(),
            "compat": self.compat,
            "dtype": self.loaded.dtype,
        }

    @property
    def cache(self) -> ResultCache:
        return self._cache

    # --- scoring ----------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenScores]:
        """Teacher-forced log-probabilities of each request's continuation.

        The prompt is rendered and tokenised with its special tokens (one BOS), the
        continuation separately without them, plus the end-of-turn id when ``add_eot``.

        Returns:
            One :class:`TokenScores` per request, in order; equal (to float noise) to
            scoring each request alone.

        Raises:
            TypeError: an element is not a :class:`ScoreRequest`.
        """
        requests = list(requests)
        for i, r in enumerate(requests):
            if not isinstance(r, ScoreRequest):
                raise TypeError(
                    f"score() takes ScoreRequest values; item {i} is {type(r).__name__}"
                )
        keys = [request_key("score", self.config, r) for r in requests]
        results: dict[str, TokenScores] = {
            k: _scores_from_json(v) for k, v in self._cache.get_many(keys).items()
        }
        todo: dict[str, ScoreRequest] = {}
        for k, r in zip(keys, requests, strict=True):
            if k not in results and k not in todo:
                todo[k] = r
        if todo:
            rows = [self._fit_context(row) for row in self._score_rows(todo)]
            for row in rows:  # nothing to compute for an empty continuation
                if not row.cont_ids:
                    results[row.key] = _empty_scores(row.vocab_stats)
            rows = [row for row in rows if row.cont_ids]
            self.stats["score_rows"] += len(rows)

            def run(batch: list[_ScoreRow]) -> None:
                out = self._score_batch(batch)
                results.update(out)
                self._cache.put_many({k: _scores_to_json(v) for k, v in out.items()})

            self._run_planned(rows, self._plan_score, run, "score")
        for k in keys:  # cached answers remember their cut too, so warm runs report it alike
            if results[k].truncated_from is not None:
                self.truncated[k] = (results[k].n_tokens, results[k].truncated_from)
        return [_copy_scores(results[k]) for k in keys]

    def _fit_context(self, row: _ScoreRow) -> _ScoreRow:
        """Cut a prompt + answer longer than the model's context to fit it.

        TOFU and open-unlearning tokenize the whole question + answer with
        ``truncation=True, max_length=...`` (right side), so the answer's tail beyond the
        limit is simply not scored; the same is done here at the model's own context
        (``max_position_embeddings``), and the result says how many tokens it had
        (``TokenScores.truncated_from``). Positions past the context were never trained,
        so scoring them would give numbers without meaning.

        Raises:
            ValueError: the prompt alone fills the context, leaving no answer token to score.
        """
        limit = self.max_positions
        if limit is None or len(row.prompt_ids) + len(row.cont_ids) <= limit:
            return row
        keep = limit - len(row.prompt_ids)
        if keep < 1:
            raise ValueError(
                f"A prompt of {len(row.prompt_ids)} tokens fills the model's whole context "
                f"({limit} positions, max_position_embeddings), leaving no answer token to score. "
                "Fix: shorten the question (or the system prompt), or audit a model with a longer context."
            )
        row.truncated_from = len(row.cont_ids)
        row.cont_ids, row.offsets = row.cont_ids[:keep], row.offsets[:keep]
        return row

    def _score_rows(self, todo: dict[str, ScoreRequest]) -> list[_ScoreRow]:
        prompt_ids: dict[tuple[int, ...], tuple[int, ...]] = {}
        rows = []
        for key, r in todo.items():
            p, ids, offsets = self.fmt.encode_pair(r.prompt, r.continuation, add_eot=r.add_eot)
            if not p:
                raise ValueError(
                    f"The prompt {r.prompt!r} renders to no tokens; nothing predicts the answer."
                )
            # One tuple per distinct prompt, so prefix sharing groups its rows.
            p = prompt_ids.setdefault(tuple(p), tuple(p))
            rows.append(_ScoreRow(key, p, ids, offsets, r.vocab_stats))
        return rows

    def _plan_score(self, rows: list[_ScoreRow], budget: int) -> list[list[_ScoreRow]]:
        return _plan_score(rows, budget, self.batch_size or 1 << 30, self.share_prefix)

    def _score_batch(self, batch: list[_ScoreRow]) -> dict[str, TokenScores]:
        import torch

        with torch.inference_mode():
            if self.share_prefix and _reuse_pays(batch):
                try:
                    gathered = self._score_prefix_shared(batch)
                except (AttributeError, NotImplementedError, TypeError) as e:
                    # This architecture's cache cannot be re-indexed by batch: score full
                    # sequences from now on (same numbers, slower) rather than fail.
                    warnings.warn(
                        f"{type(self.model).__name__}: prompt-prefix reuse unavailable "
                        f"({type(e).__name__}: {e}); scoring full sequences instead.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    self.share_prefix = False
                    gathered = self._score_full(batch)
            else:
                gathered = self._score_full(batch)
        out = {}
        for r, (lp, stats) in zip(batch, gathered, strict=True):
            ts = TokenScores(lp, list(r.cont_ids), list(r.offsets), truncated_from=r.truncated_from)
            if stats is not None:
                ts.vocab_mean, ts.vocab_std, ts.top_ids = stats
            out[r.key] = ts
        return out

    def _score_full(self, batch: list[_ScoreRow]) -> list[tuple[np.ndarray, Any]]:
        """Whole sequences (prompt + continuation minus its last token) in one forward."""
        seqs = [list(r.prompt_ids) + r.cont_ids[:-1] for r in batch]
        ids, mask, lefts = self._pad(seqs, self.tokenizer.padding_side)
        pos = _positions(mask)
        out = self._forward(
            input_ids=ids, attention_mask=self._attn(ids, mask), position_ids=pos, use_cache=False
        )
        rows, cols, targets = [], [], []
        for i, r in enumerate(batch):
            start = lefts[i] + len(r.prompt_ids) - 1
            rows += [i] * len(r.cont_ids)
            cols += range(start, start + len(r.cont_ids))
            targets += r.cont_ids
        return _gather(out.logits, rows, cols, targets, [len(r.cont_ids) for r in batch],
                            [r.vocab_stats for r in batch])

    def _score_prefix_shared(self, batch: list[_ScoreRow]) -> list[tuple[np.ndarray, Any]]:
        """Shared prompt tokens once, then every continuation against the prompt's KV cache.

        Three passes, each extending the KV cache of the one before: (1) the prefix that
        every prompt in the batch shares (a chat template's system block, with its date
        line; skipped when short), run once; (2) the rest of each distinct prompt, run once
        per prompt; (3) the continuations, each row reading its own prompt's cache. The
        prompt's last token opens pass (3), so the logit predicting the first answer token
        comes from the same pass as the others and passes (1)-(2) need no logits at all.
        Every pass carries the padding mask of everything before it and explicit positions
        counting real tokens only, so padding anywhere never moves a number.
        """
        prompts: dict[tuple[int, ...], int] = {}
        for r in batch:
            prompts.setdefault(r.prompt_ids, len(prompts))
        prefixes = [list(p[:-1]) for p in prompts]
        common = _common_prefix_len(prefixes) if len(prefixes) > 1 else 0
        if common < _MIN_SHARED_PREFIX:
            common = 0

        state = None  # (cache, attention mask so far, real tokens so far), one row per parent
        if common:
            state = self._extend(None, [prefixes[0][:common]])
        suffixes = [p[common:] for p in prefixes]
        state = self._extend(state, suffixes, parent=[0] * len(suffixes) if common else None)
        self.stats["prefix_tokens_reused"] += sum(len(r.prompt_ids) - 1 for r in batch) - (
            common + sum(len(x) for x in suffixes)
        )

        # The continuation pass runs in a few length bands when that saves more padded
        # tokens than the extra calls cost; every band reads a copy of the prompt cache.
        order = sorted(range(len(batch)), key=lambda i: len(batch[i].cont_ids))
        bands = _length_bands([len(batch[i].cont_ids) for i in order], self._call_overhead)
        out: list[tuple[np.ndarray, Any] | None] = [None] * len(batch)
        for b, (lo, hi) in enumerate(bands):
            idx = order[lo:hi]
            last = b == len(bands) - 1
            band_state = state if last else (copy.deepcopy(state[0]), *state[1:])
            conts = [[batch[i].prompt_ids[-1]] + batch[i].cont_ids[:-1] for i in idx]
            logits, lefts = self._extend(
                band_state,
                conts,
                parent=[prompts[batch[i].prompt_ids] for i in idx],
                want_logits=True,
            )
            rows, cols, targets = [], [], []
            for j, i in enumerate(idx):
                n = len(batch[i].cont_ids)
                rows += [j] * n
                cols += range(lefts[j], lefts[j] + n)
                targets += batch[i].cont_ids
            lengths = [len(batch[i].cont_ids) for i in idx]
            wants = [batch[i].vocab_stats for i in idx]
            for i, got in zip(idx, _gather(logits, rows, cols, targets, lengths, wants), strict=True):
                out[i] = got
        return out

    def _extend(self, state, seqs, parent=None, want_logits=False):
        """Run ``seqs`` after the cached tokens of ``state`` (row ``i`` after ``parent[i]``).

        Returns the new state, or ``(logits, left offsets)`` when ``want_logits``.
        """
        import torch

        ids, mask, lefts = self._pad(seqs, self.tokenizer.padding_side)
        attn = self._attn(ids, mask)
        kwargs = {"use_cache": True}
        if state is None:
            pos = _positions(mask)
        else:
            cache, past_attn, past_real = state
            index = torch.tensor(parent, device=ids.device)
            cache.batch_select_indices(index)  # copy each parent's cache to its children
            past_attn, past_real = past_attn[index], past_real[index]
            pos = past_real[:, None] + _positions(mask)
            attn = torch.cat([past_attn, attn], dim=1)
            kwargs[self._cache_kwarg] = cache
        if not want_logits and self._takes_logits_to_keep:
            kwargs["logits_to_keep"] = 1  # only the cache is wanted
        out = self._forward(input_ids=ids, attention_mask=attn, position_ids=pos, **kwargs)
        if want_logits:
            return out.logits, lefts
        real = mask.sum(dim=1) if state is None else past_real + mask.sum(dim=1)
        return cache_of(out), attn, real

    # --- generation -------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenRequest]) -> list[list[str]]:
        """``n`` completions per request, decoded without special tokens.

        Greedy when ``temperature == 0``; otherwise temperature + nucleus (top-p) sampling,
        each sample seeded from ``(request.seed, sample index)`` so it does not depend on
        what else is in the batch. Stops at the end-of-turn token or EOS. A prompt of at
        least ``max_positions`` tokens (no room for one new token) is not run: its answers
        are :class:`NotGenerated` and its key lands in :attr:`prompts_too_long`.

        Raises:
            ValueError: greedy with ``n != 1``, or a non-positive ``n``/``max_new_tokens``,
                a negative temperature, or ``top_p`` outside ``(0, 1]``.
            TypeError: an element is not a :class:`GenRequest`.
        """
        requests = list(requests)
        for i, r in enumerate(requests):
            _check_gen_request(i, r)
        keys = [request_key("generate", self.config, r) for r in requests]
        prompt_ids: dict[Any, list[int]] = {}

        def encoded(prompt) -> list[int]:
            if prompt not in prompt_ids:
                prompt_ids[prompt] = self.fmt.encode_prompt(prompt)
            return prompt_ids[prompt]

        # A prompt that leaves no room for one new token is never run: its answer would be
        # empty and read as "did not leak". Checked before the cache, so a warm run (and an
        # entry cached before this check existed) reports it the same way.
        limit = self.max_positions
        results: dict[str, list[str]] = {}
        for k, r in zip(keys, requests, strict=True) if limit is not None else ():
            n = len(encoded(r.prompt))
            if n + 1 > limit:
                self.prompts_too_long[k] = n
                results[k] = [NotGenerated(PROMPT_TOO_LONG) for _ in range(r.n)]
            elif n + r.max_new_tokens > limit:
                # Its answer may stop at the context, short of max_new_tokens: stated too.
                self.answers_capped[k] = limit - n
        results.update(self._cache.get_many([k for k in keys if k not in results]))
        todo: dict[str, GenRequest] = {}
        for k, r in zip(keys, requests, strict=True):
            if k not in results and k not in todo:
                todo[k] = r
        if todo:
            todo_keys = list(todo)
            rows: list[_GenRow] = []
            for qi, k in enumerate(todo_keys):
                r = todo[k]
                rows += [_GenRow(qi, s, encoded(r.prompt), r) for s in range(r.n)]
            self.stats["gen_rows"] += len(rows)
            partial: dict[int, dict[int, str]] = {}

            def run(batch: list[_GenRow]) -> None:
                texts = self._generate_batch(batch)
                finished = {}
                for row, text in zip(batch, texts, strict=True):
                    got = partial.setdefault(row.req_index, {})
                    got[row.sample_index] = text
                    req = todo[todo_keys[row.req_index]]
                    if len(got) == req.n:
                        finished[todo_keys[row.req_index]] = [got[i] for i in range(req.n)]
                results.update(finished)
                self._cache.put_many(finished)

            self._run_planned(rows, self._plan_generate, run, "generate")
        return [list(results[k]) for k in keys]

    def _plan_generate(self, rows: list[_GenRow], budget: int) -> list[list[_GenRow]]:
        # ``budget`` is the scoring budget (halved on CUDA OOM); generation holds more.
        return _plan_generate(rows, int(budget * self._gen_scale), self.batch_size or 1 << 30)

    def _generate_batch(self, batch: list[_GenRow]) -> list[str]:
        import torch

        ids, mask, _ = self._pad([r.prompt_ids for r in batch], "left")
        stop = self._stop_ids()
        sampler = _PerRowSampler(
            [float(r.request.temperature) for r in batch],
            [float(r.request.top_p) for r in batch],
            [_sample_seed(r.request.seed, r.sample_index) for r in batch],
            ids.device,
        )
        limit = self.max_positions
        # Per row, so a batch never changes an answer: no token past the model's context
        # (tokens are causal, so cutting afterwards equals stopping there).
        rooms = [row.request.max_new_tokens if limit is None else min(
            row.request.max_new_tokens, max(limit - len(row.prompt_ids), 0)) for row in batch]
        self.stats["generate_calls"] += 1
        if self.compat == "open-unlearning":
            new = self._generate_open_unlearning(ids, mask, stop, sampler, batch)
        else:
            with torch.inference_mode():
                new = decode(self.model, ids, mask, rooms, stop, sampler,
                             logits_to_keep=self._takes_logits_to_keep)
        texts = []
        stop_set = set(stop)
        for row, room, toks in zip(batch, rooms, new, strict=True):
            toks = toks[:room]
            cut = next((i for i, t in enumerate(toks) if t in stop_set), len(toks))
            texts.append(self.fmt.finish_generation(toks[:cut], row.request.prompt))
        return texts

    def _generate_open_unlearning(self, ids, mask, stop, sampler, batch) -> list[list[int]]:
        """``model.generate`` as open-unlearning calls it: the checkpoint's generation_config
        made greedy, whatever else it sets (a repetition penalty, say) applied as theirs is."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        # Theirs: the checkpoint's generation_config with these overrides
        # (configs/generation/default.yaml, metrics/utils.py::eval_text_similarity).
        gen_cfg = copy.deepcopy(self.model.generation_config)
        gen_cfg.update(
            do_sample=False,
            top_p=None,
            temperature=None,
            max_new_tokens=max(r.request.max_new_tokens for r in batch),
            use_cache=True,
            eos_token_id=stop,
            pad_token_id=self.tokenizer.eos_token_id,
        )
        model = self.model
        saved = model.generation_config
        # The checkpoint's own generation_config.json (Llama-3: do_sample, temperature 0.6,
        # top_p 0.9) would fill every field left unset; start from library defaults instead.
        model.generation_config = GenerationConfig()
        try:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids,
                    attention_mask=self._attn(ids, mask),
                    generation_config=gen_cfg,
                    logits_processor=LogitsProcessorList([sampler]),
                )
        finally:
            model.generation_config = saved
        return out[:, ids.shape[1] :].cpu().tolist()

    def _stop_ids(self) -> list[int]:
        """Token ids that end a generation: the format's (end-of-turn and EOS), or with
        open-unlearning's format the checkpoint's ``generation_config.eos_token_id``
        (else its model config's, else the tokenizer's EOS), as ``model.generate`` uses."""
        if self.compat != "open-unlearning":
            return self.fmt.stop_token_ids()
        for cfg in (self.model.generation_config, self._text_config(), self.model.config):
            eos = getattr(cfg, "eos_token_id", None)
            if eos is not None:
                return [int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos])]
        if self.tokenizer.eos_token_id is None:
            raise ValueError(
                f"{self.loaded.spec.label}: --compat open-unlearning stops generation on the "
                "checkpoint's EOS, but neither generation_config.json, config.json nor the "
                "tokenizer names one, so every answer would run to max_new_tokens. Fix: set "
                "eos_token_id in generation_config.json, or audit without --compat open-unlearning."
            )
        return [int(self.tokenizer.eos_token_id)]

    # --- hidden states ----------------------------------------------------------------------
    def hidden_states(
        self, requests: Sequence[ScoreRequest], layers: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Residual-stream states at the positions that predict each continuation token.

        For continuation token ``t`` the state is read at position ``t - 1`` (the last
        prompt token for the first answer token), the input the model predicts ``t`` from.

        Args:
            requests: what to teacher-force, as for :meth:`score`.
            layers: indices into the ``n_layers + 1`` states to keep (saves memory);
                ``None`` keeps all.

        Returns:
            Per request a float32 array ``(n_kept_layers, n_cont_tokens, d)``. Index 0 is
            the embedding output; index ``n_layers`` is the last block's output **after**
            the final norm, exactly as Hugging Face returns it (so ``lm_head`` of it gives
            the model's logits); indices in between are pre-norm. Not cached on disk
            (they are large).
        """
        import torch

        requests = list(requests)
        for i, r in enumerate(requests):
            if not isinstance(r, ScoreRequest):
                raise TypeError(
                    f"hidden_states() takes ScoreRequest values; item {i} is {type(r).__name__}"
                )
        n_states = self.n_layers + 1
        keep = list(range(n_states)) if layers is None else [int(x) for x in layers]
        bad = [x for x in keep if not -n_states <= x < n_states]
        if bad:
            raise ValueError(
                f"layers {bad} out of range for {n_states} hidden states (0..{n_states - 1})."
            )
        todo = {str(i): r for i, r in enumerate(requests)}
        rows = self._score_rows(todo)
        d = int(self._text_config().hidden_size)
        results: dict[str, np.ndarray] = {
            r.key: np.zeros((len(keep), 0, d), dtype=np.float32) for r in rows if not r.cont_ids
        }
        rows = [r for r in rows if r.cont_ids]

        def run(batch: list[_ScoreRow]) -> None:
            seqs = [list(r.prompt_ids) + r.cont_ids[:-1] for r in batch]
            ids, mask, lefts = self._pad(seqs, self.tokenizer.padding_side)
            extra = {"logits_to_keep": 1} if self._takes_logits_to_keep else {}
            with torch.inference_mode():
                out = self._forward(
                    input_ids=ids,
                    attention_mask=self._attn(ids, mask),
                    position_ids=_positions(mask),
                    use_cache=False,
                    output_hidden_states=True,
                    **extra,
                )
                stacked = torch.stack([out.hidden_states[k] for k in keep])  # L, B, T, d
                for i, r in enumerate(batch):
                    start = lefts[i] + len(r.prompt_ids) - 1
                    sl = stacked[:, i, start : start + len(r.cont_ids)]
                    results[r.key] = sl.to(torch.float32).cpu().numpy()

        self._run_planned(
            rows,
            lambda rs, b: _plan_by_length(
                rs, lambda r: len(r.prompt_ids) + len(r.cont_ids) - 1, b, self.batch_size or 1 << 30
            ),
            run,
            "hidden states",
        )
        return [results[str(i)] for i in range(len(requests))]

    def lm_head_logits(self, h: np.ndarray, layer: int | None = None) -> np.ndarray:
        """Logit lens: final norm + output head applied to hidden states.

        Hugging Face's last hidden state is already normed, so the norm is skipped for it
        (norming twice changes the numbers); every other layer is normed first.

        Args:
            h: either a full stack ``(n_layers + 1, T, d)`` as :meth:`hidden_states`
                returns with ``layers=None`` (the last entry is treated as normed), or the
                states of one layer ``(..., d)`` with ``layer`` saying which.
            layer: the index (into ``0..n_layers``, negatives allowed) ``h`` came from;
                required unless ``h`` is a full stack.

        Returns:
            float32 logits with ``h``'s leading shape and the vocabulary as last axis.
        """
        import torch

        h = np.asarray(h)
        n_states = self.n_layers + 1
        if layer is None:
            if h.ndim != 3 or h.shape[0] != n_states:
                raise ValueError(
                    f"lm_head_logits needs layer=... unless h is a full stack of shape "
                    f"({n_states}, T, d); got shape {h.shape}."
                )
            return np.stack([self.lm_head_logits(h[i], layer=i) for i in range(n_states)])
        if not -n_states <= layer < n_states:
            raise ValueError(f"layer {layer} out of range for {n_states} hidden states.")
        is_last = layer % n_states == n_states - 1
        head = self.model.get_output_embeddings()
        param = head.weight
        with torch.inference_mode():
            x = torch.as_tensor(h, device=param.device).to(_compute_dtype(param))
            if not is_last:
                x = self._final_norm()(x)
            return head(x).to(torch.float32).cpu().numpy()

    def _final_norm(self):
        from unlearn_audit.model._lens import final_norm

        return final_norm(self.model, "the logit lens")

    # --- probes -----------------------------------------------------------------------------
    def fit_probes(self, request: ProbeRequest) -> ProbeAnswer:
        """Fit a probe per layer on hidden states and give its top-1 predictions.

        The probes (see :mod:`unlearn_audit.model._lens`) read out through a float32 copy of
        this model's final norm and head (the ``lstsq`` and ``tuned`` kinds); the model is
        never modified. Fit on the GPU when the model is on one, else on the CPU.

        Raises:
            TypeError: ``request`` is not a :class:`ProbeRequest`.
            ValueError: a layer out of range or arrays of mismatched shapes.
        """
        from unlearn_audit.model._lens import fit_and_predict

        if not isinstance(request, ProbeRequest):
            raise TypeError(f"fit_probes() takes a ProbeRequest; got {type(request).__name__}")
        return fit_and_predict(self.model, self.device, request, self.n_layers + 1)

    # --- other copies of the model ------------------------------------------------------------
    def finetuned(self, request: FinetuneRequest, *, cache: bool = False) -> Engine:
        """An engine for a fine-tuned *copy* of this model (:func:`~unlearn_audit.model.finetune`).

        This model's weights, and its cache entries, are never touched. The copy's
        fingerprint is :meth:`FinetuneRequest.fingerprint` of this one, its label
        ``<label>+<purpose>``; it keeps this engine's format, batch size and progress.

        Args:
            request: the examples and the training budget.
            cache: give the copy an on-disk cache (in this engine's cache directory). Off
                by default: training is not bit-reproducible across machines, so a cached
                answer could belong to other weights under the same fingerprint.

        Raises:
            ValueError: bad examples or budget, or a quantized model (see ``finetune``).
        """
        from unlearn_audit.model._train import finetune

        if not isinstance(request, FinetuneRequest):
            raise TypeError(f"finetuned() takes a FinetuneRequest; got {type(request).__name__}")
        lm = self.loaded
        tuned = finetune(lm.model, lm.tokenizer, self.fmt, list(request.examples),
                         epochs=request.epochs, lr=request.lr, batch_size=request.batch_size,
                         seed=request.seed, lora=request.lora)
        copy_lm = LoadedModel(tuned, lm.tokenizer,
                              dataclasses.replace(lm.spec, label=f"{lm.spec.label}+{request.purpose}"),
                              request.fingerprint(lm.fingerprint), lm.device, lm.dtype)
        return self._derived(copy_lm, cache=cache)

    def quantized(self, mode: str, *, cache: bool = True) -> Engine:
        """An engine for this model's checkpoint loaded again quantized (``int8`` or ``nf4``).

        The checkpoint is loaded through :func:`~unlearn_audit.model.load_model` with
        ``ModelSpec.quantization=mode`` (label ``<label>@<mode>``); its fingerprint covers
        the mode, so sharing this engine's on-disk cache directory is safe.

        Raises:
            QuantizationUnavailable: bitsandbytes cannot quantize on this machine.
            ImportError: a library the quantized load needs is missing.
            ModelLoadError: an unsupported mode.
        """
        spec = self.loaded.spec
        qspec = dataclasses.replace(spec, quantization=mode, label=f"{spec.label}@{mode}")
        return self._derived(load_model(qspec), cache=cache)

    def _derived(self, loaded: LoadedModel, *, cache: bool) -> Engine:
        """An engine like this one (format, batch size, progress) for another model copy."""
        return Engine(loaded, self.fmt, cache_dir=self._cache_dir if cache else None,
                      batch_size=self.batch_size, progress=self.progress,
                      share_prefix=self.share_prefix,
                      token_budget=self._budget if self._budget_explicit else None)

    @staticmethod
    def release_memory() -> None:
        """Collect garbage and hand cached accelerator memory back (after a large step, or
        once a copy from :meth:`finetuned`/:meth:`quantized` is dropped)."""
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # --- plumbing ---------------------------------------------------------------------------
    def _forward(self, **kwargs):
        self.stats["forward_calls"] += 1
        return self.model(**kwargs)

    def _pad(self, seqs: list[list[int]], side: str):
        """Pad to a rectangle; returns ids, 0/1 real-token mask and each row's left offset."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        lefts = []
        for i, s in enumerate(seqs):
            left = width - len(s) if side == "left" else 0
            ids[i, left : left + len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, left : left + len(s)] = 1
            lefts.append(left)
        return ids.to(self.device), mask.to(self.device), lefts

    def _attn(self, ids, mask):
        """The attention mask the model sees: real tokens, minus open-unlearning's pad id
        (pad token, else EOS) with its format (see the class docstring)."""
        if self.compat != "open-unlearning":
            return mask
        import torch

        hidden = torch.isin(ids, torch.tensor(self._compat_ids, device=ids.device))
        return mask * (~hidden).long()

    def _device_type(self) -> str:
        return getattr(self.device, "type", str(self.device))

    def _default_budget(self) -> int:
        return _default_budget(self._text_config(), self._device_type(), self.device)

    def _run_planned(
        self,
        work: list,
        plan: Callable[[list, int], list[list]],
        run: Callable[[list], None],
        desc: str,
    ) -> None:
        """Plan batches under the token budget and run them, halving it on CUDA OOM."""
        if not work:
            return
        import torch

        from unlearn_audit import progress

        pending = list(work)
        batches = plan(pending, self._budget)
        # To the pytest plugin's live display when it listens, else a tqdm bar on stderr.
        bar = progress.task(desc, len(pending), enabled=self.progress,
                            bar=len(batches) >= _PROGRESS_MIN_BATCHES)
        try:
            while batches:
                batch = batches.pop(0)
                try:
                    run(batch)
                except torch.OutOfMemoryError as e:
                    if self.batch_size is not None or self._budget_explicit or self._budget <= 64:
                        raise RuntimeError(
                            f"Out of memory in {desc} with batches of up to {len(batch)} "
                            f"sequences. Fix: pass a smaller --batch-size (or leave it unset "
                            f"for automatic sizing), or use --dtype bfloat16."
                        ) from e
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    self._budget //= 2
                    rest = batch + [r for b in batches for r in b]
                    batches = plan(rest, self._budget)
                    continue
                bar.update(len(batch))
        finally:
            bar.close()


# --- helpers ----------------------------------------------------------------------------------


def tokenizer_hash(tok) -> str:
    """sha256 of what decides a tokenizer's token ids and prompts, not of its files.

    That is: the fast tokenizer's whole pipeline (``backend_tokenizer.to_str()``:
    normaliser, pre-tokenizer, vocabulary and merges, added tokens, post-processor) or a
    slow one's vocabulary, the special tokens with their ids, the BOS/EOS flags and the
    chat template. Hashing content rather than files means two checkpoints that saved
    the same tokenizer with different file layouts (tokenizer_config.json keys, a
    chat_template.jinja beside it) compare equal. The runtime truncation/padding
    settings that ``to_str`` also carries are left out: they change with calls made.
    """
    import hashlib
    import json

    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        pipeline.pop("truncation", None)
        pipeline.pop("padding", None)
        h.update(json.dumps(pipeline, sort_keys=True).encode())
    else:
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    specials = {name: [str(value), tok.convert_tokens_to_ids(value) if isinstance(value, str) else None]
                for name, value in sorted(getattr(tok, "special_tokens_map", {}).items())
                if isinstance(value, str)}
    h.update(json.dumps(specials, sort_keys=True).encode())
    flags = {k: getattr(tok, k, None) for k in ("add_bos_token", "add_eos_token")}
    h.update(json.dumps(flags, sort_keys=True, default=str).encode())
    h.update(json.dumps(getattr(tok, "chat_template", None), sort_keys=True, default=str).encode())
    return h.hexdigest()


def _check_gen_request(i: int, r: Any) -> None:
    if not isinstance(r, GenRequest):
        raise TypeError(f"generate() takes GenRequest values; item {i} is {type(r).__name__}")
    if r.n < 1:
        raise ValueError(f"GenRequest {i}: n must be >= 1; got {r.n}")
    if r.max_new_tokens < 1:
        raise ValueError(f"GenRequest {i}: max_new_tokens must be >= 1; got {r.max_new_tokens}")
    if r.temperature < 0:
        raise ValueError(f"GenRequest {i}: temperature must be >= 0; got {r.temperature}")
    if r.temperature == 0 and r.n != 1:
        raise ValueError(
            f"GenRequest {i}: greedy decoding (temperature=0) gives one answer, so n must be 1; "
            f"got n={r.n}. Use temperature > 0 for several samples."
        )
    if not 0 < r.top_p <= 1:
        raise ValueError(f"GenRequest {i}: top_p must be in (0, 1]; got {r.top_p}")


