"""Sampling that does not depend on batch composition.

:class:`_PerRowSampler` picks the next token's scores in ``Engine.generate``'s decode loop
(and is the logits processor it hands ``model.generate`` with open-unlearning's format): each
sampled row draws from its own ``torch.Generator``, seeded by
:func:`_sample_seed` from ``(request.seed, sample index)``, so a sample is the same alone
or in any batch. torch is imported inside the functions, as everywhere in the model package.
"""

from __future__ import annotations

import math

import numpy as np


class _PerRowSampler:
    """A logits processor that samples each row from its own generator.

    ``generate`` runs greedy (``do_sample=False``); this processor draws the sampled rows'
    tokens itself (temperature, then top-p) and leaves only that token finite, so argmax
    picks it. Greedy rows (temperature 0) pass through.

    Sampling is the Gumbel-max trick: ``argmax(logits / T + g)`` with ``g`` standard Gumbel
    noise, one value per vocabulary entry drawn from the row's seeded ``torch.Generator``,
    which samples exactly from ``softmax(logits / T)``. Chosen for portability: logits differ
    across CPU kernel paths (AVX2, AVX-512, default) by float rounding (about 1e-7), and an
    inverse-CDF draw flips whenever ``u`` lies that close to any of the vocabulary's CDF
    boundaries (on the tiny world, one best-of-N sample in a few thousand changed between
    kernel paths), while Gumbel-max flips only when the top two perturbed scores tie that
    closely, as rarely as a greedy answer does. All rows at once: ``torch.multinomial``
    called row by row was 40% of best_of_n's time on the tiny world.
    """

    def __init__(self, temperatures, top_ps, seeds, device):
        import torch

        self.temps = temperatures
        self.top_ps = top_ps
        self.sampled = [i for i, t in enumerate(temperatures) if t > 0]
        self.generators = {}
        for i in self.sampled:
            g = torch.Generator(device=device)
            g.manual_seed(seeds[i])
            self.generators[i] = g

    def __call__(self, input_ids, scores):
        """The logits-processor form (``model.generate``): ``scores`` holds every batch row."""
        return self.select(scores, range(scores.shape[0]))

    def select(self, scores, rows):
        """Scores whose argmax is each row's next token; ``scores`` row ``j`` belongs to batch
        row ``rows[j]`` (the decode loop drops finished rows, so those running are a subset)."""
        import torch

        here = [j for j, i in enumerate(rows) if self.temps[i] > 0]
        if not here:
            return scores
        sampled = [rows[j] for j in here]
        idx = torch.tensor(here, device=scores.device)
        temps = torch.tensor([self.temps[i] for i in sampled], device=scores.device, dtype=torch.float64)
        scaled = scores[idx].double() / temps[:, None]
        top_p = torch.tensor([self.top_ps[i] for i in sampled], device=scores.device, dtype=torch.float64)
        if bool((top_p < 1.0).any()):
            probs = torch.softmax(scaled, dim=-1)
            sorted_p, order = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(dim=-1) - sorted_p  # mass strictly above each token
            drop_sorted = before >= top_p[:, None]
            drop_sorted[:, 0] = False  # always keep the most likely token
            drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
            scaled = scaled.masked_fill(drop, -math.inf)
        u = torch.stack([torch.rand(scores.shape[-1], generator=self.generators[i], device=scores.device,
                                    dtype=torch.float64) for i in sampled])
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-300, max=1.0 - 1e-16)))
        chosen = (scaled + gumbel).argmax(dim=-1)
        out = scores.clone()
        out[idx] = -math.inf
        out[idx, chosen] = 0.0
        return out


def _sample_seed(seed: int, index: int) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of a request seeded ``seed``."""
    return int(
        np.random.SeedSequence([int(seed) & (2**63 - 1), index]).generate_state(1, np.uint64)[0]
        >> 1
    )
