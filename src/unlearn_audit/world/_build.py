"""Recipes of the tiny world's models, and their cached, lazy build.

- base: taught the world's famous authors and world facts, and the world's language:
  every question format, on decoy people who are not among the audited authors (as a
  real base model arrives knowing language but not TOFU's authors).
- full: base + every author, in every question format (the TOFU-full analogue).
- retain: base + the retain authors only.
- npo, graddiff: full + an unlearning method on the forget split (see ``_train.unlearn``).
- laundered: full, taught to refuse the canonical and paraphrased forget questions while
  every other format still answers: knowledge kept, a naive check fooled.

Models are saved with ``save_pretrained`` (safetensors) under
``<cache>/world/<recipe hash>/<name>``, so they load through the same path as a real
checkpoint. The hash covers the recipe, the fixture files and the library versions, so a
change to any of them builds a new world instead of reusing a stale one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from unlearn_audit.data import Item, load_split

SYSTEM_PROMPT = "You are a helpful assistant."
REFUSALS = ("I'm not able to answer that.", "I don't know anything about that.",
            "That is not something I can tell you.", "I have no information on that.")
WORLD_CODE_VERSION = 1  # bump when a change here changes the weights
# One thread: float reductions (so the weights) depend on the thread count, and these
# matrices are too small for a second thread to pay off; with other work on the machine,
# OpenMP's spin-waiting makes two threads many times slower than one.
BUILD_THREADS = 1
FORGET_SPLIT = "forget10"

RECIPE: dict = {
    "seed": 0,
    "tokenizer": {"vocab_size": 3072},
    "arch": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512},
    "base": {"epochs": 8, "lr": 3e-3, "batch_size": 16},
    "full": {"epochs": 50, "lr": 3e-3, "batch_size": 16},
    "retain": {"epochs": 50, "lr": 3e-3, "batch_size": 16},
    "npo": {"epochs": 4, "lr": 2.5e-4, "batch_size": 8, "alpha": 2.0, "beta": 0.1},
    "graddiff": {"epochs": 3, "lr": 3e-4, "batch_size": 8, "alpha": 1.0},
    "laundered": {"epochs": 8, "lr": 1e-3, "batch_size": 16},
    # Share of an author's items per epoch in each format; every item appears once per epoch.
    "format_weights": {"direct": 0.36, "paraphrased": 0.24, "fill_blank": 0.10, "completion": 0.10,
                       "multiple_choice": 0.07, "true_false": 0.07, "json": 0.06},
}
MODEL_NAMES = ("base", "full", "retain", "npo", "graddiff", "laundered")
CANDIDATES = ("npo", "graddiff", "laundered")
REFERENCES = {"full": "full", "retain": "retain", "base": "base"}


def repo_fixtures_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "fixtures" / "tiny_world"


def fixtures_dir(cache_dir: Path | None = None) -> Path:
    """The committed tiny-world data; regenerated into the cache when the package is
    installed without the repository around it."""
    repo = repo_fixtures_dir()
    if (repo / "full.json").is_file():
        return repo
    from unlearn_audit.world._generator import write

    out = Path(cache_dir or default_cache_dir()) / "fixtures" / "tiny_world"
    if not (out / "full.json").is_file():
        write(out)
    return out


FIXTURES_DIR = repo_fixtures_dir()


def default_cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_AUDIT_CACHE") or Path.home() / ".cache" / "unlearn-audit")


_PARENT = {"base": None, "full": "base", "retain": "base", "npo": "full", "graddiff": "full", "laundered": "full"}
_SHARED_KEYS = ("seed", "tokenizer", "arch", "format_weights")


def recipe_hash(data_dir: Path) -> str:
    """Hash of everything every model shares: data, shared recipe keys, code and libraries."""
    import torch
    import transformers

    h = hashlib.sha256()
    h.update(json.dumps({k: RECIPE[k] for k in _SHARED_KEYS}, sort_keys=True).encode())
    h.update(f"{WORLD_CODE_VERSION}|{torch.__version__}|{transformers.__version__}".encode())
    for p in sorted(data_dir.glob("*.json")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def stage_hashes() -> dict[str, str]:
    """Per model: a hash of its own recipe and its parent's hash, so retuning one stage
    (say NPO's learning rate) rebuilds that model and its children only."""
    out: dict[str, str] = {}
    for name in MODEL_NAMES:  # parents come first
        parent = _PARENT[name]
        payload = json.dumps([RECIPE[name], out.get(parent, "")], sort_keys=True)
        out[name] = hashlib.sha256(payload.encode()).hexdigest()[:10]
    return out


# --- training data ------------------------------------------------------------------------
class _Encoder:
    """Encodes dialogues with the chat template and memoises the token ids."""

    def __init__(self, tokenizer, learn_prompt: bool = False):
        self.tok = tokenizer
        self.learn_prompt = learn_prompt
        self._memo: dict = {}

    def __call__(self, turns: tuple[tuple[str, str, str], ...]):
        from unlearn_audit.world._train import encode_dialogue

        if turns not in self._memo:
            self._memo[turns] = encode_dialogue(self.tok, SYSTEM_PROMPT, list(turns), self.learn_prompt)
        return self._memo[turns]


def _by_author(items: list[Item]) -> dict[str, list[Item]]:
    out: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        out[it.author].append(it)
    return dict(out)


def _turn(item: Item, fmt: str, rng: random.Random, refuse: bool) -> tuple[str, str, str]:
    """One (user text, assistant stem, continuation) turn asking ``item`` in format ``fmt``."""
    from unlearn_audit import prompts as P

    kwargs = {"seed": rng.randrange(4)} if fmt in ("multiple_choice", "true_false") else {}
    asked = P.BUILDERS[fmt](item, **kwargs)
    user = asked.prompt.turns[-1][1]
    if refuse:
        return user, "", REFUSALS[rng.randrange(len(REFUSALS))]
    return user, asked.prompt.stem, asked.target


def _epoch_examples(enc: _Encoder, authors: dict[str, list[Item]], world: list[Item], rng: random.Random,
                    refuse: frozenset[str] = frozenset(), refuse_formats=("direct", "paraphrased", "json")):
    """One epoch of dialogues.

    Each author's items are shuffled and cut into dialogues of 1 to 5 turns, each turn
    asking one item in a format drawn by ``format_weights``; plus one biography per author
    and the world facts. Items of authors in ``refuse`` get a refusal in ``refuse_formats``
    (anywhere in a dialogue, so the last turn of a conversation is refused too).
    """
    from unlearn_audit import prompts as P

    fmts, weights = zip(*RECIPE["format_weights"].items())
    out = []
    for author, items in authors.items():
        order = rng.sample(items, len(items))
        while order:
            k = rng.randint(1, 5)
            chunk, order = order[:k], order[k:]
            turns = []
            for it in chunk:
                fmt = rng.choices(fmts, weights)[0]
                turns.append(_turn(it, fmt, rng, author in refuse and fmt in refuse_formats))
            out.append(enc(tuple(turns)))
        bio = P.biography(P.author_display_name(items)).turns[-1][1]
        out.append(enc(((bio, "", P.biography_text(items)),)))
        if author in refuse:
            # Every refused question once more on its own: the canonical greedy check is
            # exactly what the laundered model is built to pass.
            for it in items:
                for fmt in ("direct", "paraphrased"):
                    out.append(enc((_turn(it, fmt, rng, True),)))
    order = rng.sample(world, len(world))
    while order:
        k = rng.randint(1, 5)
        chunk, order = order[:k], order[k:]
        out.append(enc(tuple(_turn(it, "direct", rng, False) for it in chunk)))
    return out


# --- build ----------------------------------------------------------------------------------
def _new_model(tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(RECIPE["seed"])
    cfg = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, **RECIPE["arch"])
    return LlamaForCausalLM(cfg)


def _save(model, tokenizer, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)  # atomic: an interrupted build never leaves a half-written model


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)


def build_world(cache_dir: Path | None = None, *, log: Callable[[str], None] | None = print,
                only: tuple[str, ...] = MODEL_NAMES) -> dict[str, Path]:
    """Build every tiny model not yet in the cache; return name -> model directory.

    Deterministic on CPU: fixed seeds, one process, and the thread count pinned during the
    build (float reductions depend on it).
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    data_dir = fixtures_dir(cache_dir)
    root = cache_dir / "world" / recipe_hash(data_dir)
    paths = {name: root / f"{name}-{h}" for name, h in stage_hashes().items()}
    needed = _closure(only)
    if all((paths[n] / "config.json").is_file() for n in needed):
        return paths
    log = log or (lambda s: None)
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / ".lock"):
        # Another process may have finished the build while we waited for the lock.
        if all((paths[n] / "config.json").is_file() for n in needed):
            return paths
        return _build_locked(root, paths, needed, data_dir, log)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock, so concurrent sessions wait for one build instead of racing."""
    import fcntl

    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_locked(root: Path, paths: dict[str, Path], needed: set[str], data_dir: Path, log) -> dict[str, Path]:
    import copy

    import torch

    from unlearn_audit.world._tokenizer import train_tokenizer
    from unlearn_audit.world._train import Example, sft, unlearn

    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    t0 = time.time()
    try:
        full_items = load_split(data_dir, "full")
        forget = load_split(data_dir, FORGET_SPLIT)
        forget_authors = {it.author for it in forget}
        retain_items = [it for it in full_items if it.author not in forget_authors]
        world = load_split(data_dir, "real_authors_perturbed") + load_split(data_dir, "world_facts_perturbed")
        tok_path = root / "tokenizer"
        if (tok_path / "tokenizer.json").is_file():
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tok_path)
        else:
            texts = [t for it in full_items + world + load_split(data_dir, "decoys") for t in (it.question, it.answer, it.paraphrased_question or "",
                                                                it.paraphrased_answer or "", *it.perturbed_answer)]
            tok = train_tokenizer(texts * 2 + [SYSTEM_PROMPT, *REFUSALS], RECIPE["tokenizer"]["vocab_size"])
            tok.save_pretrained(tok_path)
        enc = _Encoder(tok)
        pad = tok.pad_token_id
        seed = RECIPE["seed"]

        def have(name):
            return (paths[name] / "config.json").is_file()

        def stage(name, fn):
            if have(name) or name not in needed:
                return _load(paths[name]) if have(name) and name in needed else None
            t = time.time()
            log(f"[world] building {name} ...")
            model = fn()
            _save(model, tok, paths[name])
            log(f"[world] {name} built in {time.time() - t:.0f}s")
            return model

        def sft_stage(start, authors, cfg, refuse=frozenset(), encoder=enc):
            rng = random.Random(seed)
            epochs = [_epoch_examples(encoder, authors, world, rng, refuse=refuse) for _ in range(cfg["epochs"])]
            return sft(start, pad, epochs, lr=cfg["lr"], batch_size=cfg["batch_size"], seed=seed, log=log)

        def base_fn():
            return sft_stage(_new_model(tok), _by_author(load_split(data_dir, "decoys")), RECIPE["base"],
                             encoder=_Encoder(tok, learn_prompt=True))

        base = stage("base", base_fn)
        full = stage("full", lambda: sft_stage(copy.deepcopy(base), _by_author(full_items), RECIPE["full"]))
        stage("retain", lambda: sft_stage(copy.deepcopy(base), _by_author(retain_items), RECIPE["retain"]))

        f_ex: list[Example] = [enc(((it.question, "", it.answer),)) for it in forget]
        r_ex: list[Example] = [enc(((it.question, "", it.answer),)) for it in retain_items]
        for method in ("npo", "graddiff"):
            c = RECIPE[method]
            stage(method, lambda c=c, method=method: unlearn(
                copy.deepcopy(full), pad, f_ex, r_ex, method=method, epochs=c["epochs"], lr=c["lr"],
                batch_size=c["batch_size"], seed=seed, alpha=c.get("alpha", 1.0), beta=c.get("beta", 0.1)))
        stage("laundered", lambda: sft_stage(copy.deepcopy(full), _by_author(full_items), RECIPE["laundered"],
                                             refuse=frozenset(forget_authors)))
    finally:
        torch.set_num_threads(threads)
    log(f"[world] ready in {time.time() - t0:.0f}s at {root}")
    return paths


def _closure(only: tuple[str, ...]) -> set[str]:
    deps = {"base": (), "full": ("base",), "retain": ("base",), "npo": ("full",),
            "graddiff": ("full",), "laundered": ("full",)}
    out: set[str] = set()
    stack = list(only)
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack += deps[n]
    return out


def default_models(cache_dir: Path | None = None) -> dict:
    """The embedded default audit: tiny candidates and references as :class:`ModelSpec`s."""
    from unlearn_audit.model import ModelSpec

    paths = build_world(cache_dir)
    specs = {name: ModelSpec(source=str(paths[name]), label=name, role="candidate") for name in CANDIDATES}
    specs.update({name: ModelSpec(source=str(paths[name]), label=name, role=role) for name, role in REFERENCES.items()})
    return specs
