"""How much of the machine the engine takes: CPU threads, and tokens per forward pass.

Policy, not arithmetic: a small model runs on one CPU thread, and without ``--batch-size``
a forward pass holds as many padded tokens as the logits and (on CUDA) free memory allow.
``Engine._run_planned`` halves that budget on out-of-memory.
"""

from __future__ import annotations

# Below this many parameters a model on the CPU runs on one thread.
SMALL_MODEL_PARAMS = 50_000_000


def _limit_threads_for_small_cpu_model(model, device_type: str) -> None:
    """Run a small model on one CPU thread.

    Its matrices are too small for a second thread to pay off, and when the machine has
    other work (CI, a test runner beside the audit) OpenMP's spin-waiting made the tiny
    world's generation 14x slower on two threads than on one (1.5 s against 21 s, measured).
    Large models keep torch's default. ``UNLEARN_AUDIT_THREADS`` overrides either way.
    """
    import os

    import torch

    forced = os.environ.get("UNLEARN_AUDIT_THREADS")
    if forced:
        torch.set_num_threads(int(forced))
    elif device_type == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)


def _default_budget(text_cfg, device_type: str, device) -> int:
    """Padded tokens per forward: bounded by logits memory (vocab) and free GPU memory."""
    vocab = int(getattr(text_cfg, "vocab_size", 32000))
    hidden = int(getattr(text_cfg, "hidden_size", 1024))
    per_token = vocab * 12 + hidden * 48  # logits (+ float64 chunk) and activations
    if device_type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(min(max(free * 0.3 / per_token, 256), 65536))
    return int(min(max((1 << 30) / per_token, 256), 8192))
