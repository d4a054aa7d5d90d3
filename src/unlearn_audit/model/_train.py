"""A small, seeded supervised fine-tuning loop for the retrain-to-test (RTT) view.

RTT asks whether a short fine-tune on half of the forget authors brings back the other
half. The loop is deliberately plain (AdamW, loss on answer tokens only, the closing
end-of-turn token included) and tokenises through the same :class:`PromptFormat` the
engine scores with, so the model is trained on exactly the text it is then measured on.
It always trains a deep copy: the audited weights are never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from unlearn_audit.model._format import PromptFormat
from unlearn_audit.model._types import Prompt

# Applied when ``lora=True``; a dict given as ``lora`` overrides these keys.
DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear"}
_IGNORE = -100


def finetune(
    model,
    tokenizer,
    fmt: PromptFormat,
    examples: Sequence[tuple[Prompt, str]],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    lora: bool | dict[str, Any] = False,
):
    """Fine-tune a copy of ``model`` on ``(prompt, answer)`` pairs and return the copy.

    Deterministic on CPU for a given seed: torch's global RNG is seeded (LoRA init) and
    the example order of every epoch comes from a generator seeded with ``seed``.

    Args:
        model: a causal LM; it is deep-copied first and never modified.
        tokenizer: its tokenizer (padding side is ignored: training pads on the right).
        fmt: the prompt format the model is audited with.
        examples: ``(prompt, answer)`` pairs; the loss covers the answer tokens and the
            end-of-turn token only, never the prompt.
        epochs: passes over ``examples``.
        lr: AdamW learning rate.
        batch_size: examples per optimiser step.
        seed: seeds initialisation (LoRA) and the shuffling.
        lora: ``False`` for a full fine-tune; ``True`` or a dict of ``peft.LoraConfig``
            arguments for LoRA, merged back into the weights before returning.

    Returns:
        A new model object (adapters merged) in eval mode on the original's device.

    Raises:
        ValueError: empty ``examples``, non-positive ``epochs``/``lr``/``batch_size``, or a
            quantized model.
    """
    import torch

    examples = list(examples)
    if not examples:
        raise ValueError("finetune() needs at least one (prompt, answer) example.")
    for i, ex in enumerate(examples):
        if not (
            isinstance(ex, tuple)
            and len(ex) == 2
            and isinstance(ex[0], Prompt)
            and isinstance(ex[1], str)
        ):
            raise ValueError(f"finetune() example {i} must be a (Prompt, str) pair; got {ex!r:.80}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer; got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive; got {lr!r}")
    if getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None:
        raise ValueError(
            "finetune() cannot train a quantized model; load the candidate in full precision "
            "for the retrain-to-test view."
        )

    encoded = []
    for prompt, answer in examples:
        # What the engine scores is what is trained, in every --compat mode.
        p, a, _ = fmt.encode_pair(prompt, answer, add_eot=True)
        encoded.append((p + a, [_IGNORE] * len(p) + a))

    torch.manual_seed(seed)
    new = copy.deepcopy(model)
    device = next(new.parameters()).device
    if lora:
        from peft import LoraConfig, get_peft_model

        cfg = {**DEFAULT_LORA, **(lora if isinstance(lora, dict) else {})}
        new = get_peft_model(new, LoraConfig(task_type="CAUSAL_LM", **cfg))
    else:
        for p in new.parameters():
            p.requires_grad_(True)
    params = [p for p in new.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order_gen = torch.Generator().manual_seed(seed)
    pad_id = next(
        (int(i) for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None), 0
    )

    new.train()
    for _ in range(epochs):
        order = torch.randperm(len(encoded), generator=order_gen).tolist()
        for start in range(0, len(order), batch_size):
            batch = [encoded[i] for i in order[start : start + batch_size]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), _IGNORE, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (seq, lab) in enumerate(batch):
                ids[i, : len(seq)] = torch.tensor(seq)
                labels[i, : len(lab)] = torch.tensor(lab)
                mask[i, : len(seq)] = 1
            ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
            logits = new(
                input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
            ).logits
            # Token t is predicted from position t-1; mean over all answer tokens in batch.
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1),
                ignore_index=_IGNORE,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if lora:
        new = new.merge_and_unload()
    new.eval()
    return new
