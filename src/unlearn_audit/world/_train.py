"""Training loops of the tiny world: supervised fine-tuning, NPO and GradDiff.

Loss is on answer tokens only (plus the closing end-of-turn token), as in TOFU's
fine-tuning. Everything is seeded and single-process, so the same recipe gives the same
weights on the same machine.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass(frozen=True)
class Example:
    """One training sequence: ``prompt_ids`` are context, ``answer_ids`` are learned.

    A multi-turn example instead puts the whole sequence in ``prompt_ids`` and marks the
    learned positions in ``learn``.
    """

    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    learn: tuple[bool, ...] | None = None

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)

    def labels(self) -> list[int]:
        if self.learn is not None:
            return [t if m else IGNORE for t, m in zip(self.prompt_ids, self.learn)]
        return [IGNORE] * len(self.prompt_ids) + list(self.answer_ids)


def encode(tokenizer, messages: list[dict], answer: str, stem: str = "", learn_prompt: bool = False) -> Example:
    """Render a conversation with the tokenizer's chat template and append ``answer`` + eot.

    ``learn_prompt`` moves everything after the system message into the learned part: the
    base model learns the world's language from whole dialogues (more signal per step),
    while fine-tuning stages learn answers only, as TOFU does.
    """
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + stem
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    if learn_prompt and messages and messages[0]["role"] == "system":
        cut = p.index(eot) + 1  # end of the system message
        return Example(tuple(p[:cut]), tuple(p[cut:]) + tuple(a) + (eot,))
    return Example(tuple(p), tuple(a) + (eot,))


def encode_dialogue(tokenizer, system: str | None, turns: list[tuple[str, str, str]],
                    learn_prompt: bool = False) -> Example:
    """A multi-turn dialogue learned on every assistant turn.

    ``turns`` are ``(user text, assistant stem, assistant continuation)``; the stem is
    context, the continuation (plus its end-of-turn token) is learned. One sequence teaches
    several facts, which is what lets a tiny model memorise them in a CPU budget: fact
    memorisation needs many exposures, and each exposure costs far fewer tokens here than in
    a one-question sequence. Built from chat-template renderings of growing prefixes, whose
    boundaries fall on special tokens, so the pieces tokenize exactly as the whole.
    ``learn_prompt`` also learns the user turns after the first (the base model's lessons).
    """
    from unlearn_audit.model._format import end_of_turn_token_id

    eot = end_of_turn_token_id(tokenizer)
    eot_text = tokenizer.convert_ids_to_tokens(eot)
    messages = [{"role": "system", "content": system}] if system else []
    ids: list[int] = []
    learn: list[bool] = []
    rendered = ""
    for user, stem, cont in turns:
        messages.append({"role": "user", "content": user})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + stem
        # Trailing spaces of the prompt lead the answer, exactly as the engine tokenises
        # (PromptFormat.trailing_space).
        body = text.rstrip(" ")
        piece = tokenizer(body[len(rendered):], add_special_tokens=False)["input_ids"]
        ans = tokenizer(text[len(body):] + cont, add_special_tokens=False)["input_ids"] + [eot]
        ids += piece + ans
        learn += [learn_prompt and bool(ids[: -len(piece) - len(ans)])] * len(piece) + [True] * len(ans)
        messages.append({"role": "assistant", "content": stem + cont})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        # Up to the closing token: what a template writes after it ("\n" in ChatML) opens
        # the next turn's piece. The tiny world's Llama-3 template ends at <|eot_id|>.
        rendered = rendered[: rendered.rindex(eot_text) + len(eot_text)]
    return Example(tuple(ids), (), tuple(learn))


def _batches(examples: Sequence[Example], batch_size: int, rng: random.Random):
    """Shuffle, then sort within windows of 8 batches so padding stays small."""
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    window = batch_size * 8
    batches = []
    for w in range(0, len(idx), window):
        chunk = sorted(idx[w: w + window], key=lambda i: len(examples[i]))
        batches += [chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    seqs = [list(e.prompt_ids) + list(e.answer_ids) for e in examples]
    labels = [e.labels() for e in examples]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lb) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(lb)] = torch.tensor(lb)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": mask}


def sequence_logprob(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of answer-token log-probabilities per sequence, and answer-token counts.

    The output head runs on the learned positions only: they are a third of the tokens,
    and the head plus its softmax over the vocabulary is a quarter of a tiny model's work.
    """
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels"][:, 1:]
    mask = target != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][mask]).float()
    lp = torch.gather(F.log_softmax(logits, -1), 1, target[mask].unsqueeze(-1)).squeeze(-1)
    rows = mask.nonzero()[:, 0]
    return torch.zeros(len(target), dtype=lp.dtype).index_add(0, rows, lp), mask.sum(-1)


def _nll(model, batch) -> torch.Tensor:
    s, n = sequence_logprob(model, batch)
    return -(s.sum() / n.sum())


def _optimizer(model, lr: float, total_steps: int):
    # fused: one kernel over all parameters instead of a dozen ops per tensor; half the
    # optimizer's time on these tiny models.
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98), fused=True)
    warm = max(1, total_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / max(1, total_steps)))
    return opt, sched


def sft(model, pad_id: int, epochs_data: Sequence[Sequence[Example]], *, lr: float,
        batch_size: int, seed: int, log=None):
    """Supervised fine-tuning. ``epochs_data[e]`` is epoch e's examples (formats resampled per epoch)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    total = sum((len(d) + batch_size - 1) // batch_size for d in epochs_data)
    opt, sched = _optimizer(model, lr, total)
    model.train()
    for e, data in enumerate(epochs_data):
        losses = []
        for b in _batches(data, batch_size, rng):
            loss = _nll(model, collate([data[i] for i in b], pad_id))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        if log:
            log(f"epoch {e + 1}/{len(epochs_data)} loss {sum(losses) / len(losses):.3f}")
    model.eval()
    return model


def unlearn(model, pad_id: int, forget: Sequence[Example], retain: Sequence[Example], *,
            method: str, epochs: int, lr: float, batch_size: int, seed: int,
            alpha: float = 1.0, beta: float = 0.1, log=None):
    """Unlearn ``forget`` from ``model``, keeping ``retain``.

    - ``graddiff`` (gradient difference; Liu et al. 2022, as in TOFU): ascent on the forget
      NLL plus ``alpha`` times descent on the retain NLL: ``L = -NLL_f + alpha * NLL_r``.
    - ``npo`` (Negative Preference Optimization; Zhang et al. 2024, as in open-unlearning's
      NPO with a retain term): ``L = -(2/beta) * mean(log sigmoid(-beta * log(pi/pi_ref)(y_f|x_f)))
      + alpha * NLL_r``, with the sequence log-ratio against the frozen starting model ``pi_ref``.
    """
    if method not in ("npo", "graddiff"):
        raise ValueError(f"unknown unlearning method {method!r}; use 'npo' or 'graddiff'")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    ref = copy.deepcopy(model).eval() if method == "npo" else None
    steps_per_epoch = (len(forget) + batch_size - 1) // batch_size
    opt, sched = _optimizer(model, lr, epochs * steps_per_epoch)
    model.train()
    for e in range(epochs):
        for b in _batches(forget, batch_size, rng):
            fb = collate([forget[i] for i in b], pad_id)
            rb = collate([retain[i] for i in rng.sample(range(len(retain)), len(b))], pad_id)
            if method == "graddiff":
                forget_loss = -_nll(model, fb)
            else:
                cur, _ = sequence_logprob(model, fb)
                with torch.no_grad():
                    old, _ = sequence_logprob(ref, fb)
                forget_loss = -(2.0 / beta) * F.logsigmoid(-beta * (cur - old)).mean()
            loss = forget_loss + alpha * _nll(model, rb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        if log:
            log(f"{method} epoch {e + 1}/{epochs} loss {loss.item():.3f}")
    model.eval()
    return model
