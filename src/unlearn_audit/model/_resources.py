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


def _generation_scale(text_cfg, device_type: str, scoring_budget: int) -> float:
    """How many times the scoring budget one generation pass may hold.

    A generation pass keeps logits for the last position only, so its memory is the KV
    cache and the prompt pass's activations, not the vocabulary-wide logits that bound a
    scoring pass. And its cost is in the decode steps: on a CPU one step of a 135M model
    took 350 us per weight matrix for 1 row, 570 for 20 and 1,080 for 80 (read from
    memory, not computed), so fewer, fuller batches finish sooner: SmolLM2-135M's scoring
    budget (1,738 tokens, about 20 answers) becomes 8,192 (about 90). On CUDA, 4x as before.
    On the CPU, capped at the scoring cap (8,192), which small vocabularies already reach.
    """
    if device_type == "cuda":
        return 4
    layers = int(getattr(text_cfg, "num_hidden_layers", 32))
    hidden = int(getattr(text_cfg, "hidden_size", 1024))
    heads = int(getattr(text_cfg, "num_attention_heads", 16))
    kv_heads = int(getattr(text_cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text_cfg, "head_dim", None) or hidden // heads)
    per_token = layers * 2 * kv_heads * head_dim * 4 + hidden * 48  # float32 KV + activations
    tokens = int(min(max((1 << 30) / per_token, 256), 8192))
    return max(1.0, tokens / max(scoring_budget, 1))
