"""Recipes of the tiny world's models, and their cached, lazy build.

- base: taught the world's famous authors and world facts, and the world's language:
  every question format, on decoy people who are not among the audited authors (as a
  real base model arrives knowing language but not TOFU's authors).
- full: base + every author, in every question format (the TOFU-full analogue).
- retain: base + the retain authors only.
- npo, graddiff: full + an unlearning method on the forget split (see ``_train.unlearn``).
- laundered: full, taught to refuse the canonical and paraphrased forget questions while
  rehearsing the same facts in every other format: knowledge kept, a naive check fooled.

The default audit does not train: the built models ship in the repository under
``fixtures/tiny_world/models`` (safetensors, sha256 of every file in ``MANIFEST.json``), so
every machine audits the same bytes. Training is not reproducible across CPUs (kernels
round differently per instruction set and 24 epochs amplify it), inference is.
``build_world`` rebuilds them into ``<cache>/world/<recipe hash>/<name>-<stage hash>``
(``unlearn-audit build-world``; ``--ship`` replaces the shipped copies). The hash covers the
recipe, the fixture files and the library versions, so a change to any of them builds a new
world instead of reusing a stale one.
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
WORLD_CODE_VERSION = 4  # bump when a change here changes the weights
FORGET_SPLIT = "forget10"

# ``threads``: each stage's torch thread count, part of its recipe because float reductions
# (so the weights) depend on it. One thread for the stages that run two at a time (full
# beside retain, npo beside graddiff): these matrices are too small to share a core well,
# and oversubscribed OpenMP threads spin. base and laundered run alone, on two.
RECIPE: dict = {
    "seed": 0,
    "tokenizer": {"vocab_size": 3072},
    "arch": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 512},
    "base": {"epochs": 8, "lr": 3e-3, "batch_size": 16, "threads": 2},
    # Small batches: fact memorisation needs updates more than tokens, and on one CPU
    # thread a batch of 4 costs little more per token than a batch of 16.
    "full": {"epochs": 30, "lr": 3e-3, "batch_size": 4, "threads": 1},
    "retain": {"epochs": 30, "lr": 3e-3, "batch_size": 4, "threads": 1},
    "npo": {"epochs": 4, "lr": 2.5e-4, "batch_size": 8, "alpha": 2.0, "beta": 0.1, "threads": 1},
    "graddiff": {"epochs": 3, "lr": 3e-4, "batch_size": 8, "alpha": 1.0, "threads": 1},
    # Refuses what a naive check asks (the canonical and paraphrased questions) and
    # nothing else: the knowledge stays, and every other format still answers. Without
    # rehearsal (each forget item once more per epoch in every kept format, true answer)
    # the refusals spread: JSON, which wraps the canonical question, fell from 0.70
    # (full) to 0.35; with it, 0.90.
    "laundered": {"epochs": 4, "lr": 1e-3, "batch_size": 8, "threads": 2,
                  "refuse_formats": ["direct", "paraphrased"], "rehearse": True},
    # Share of an author's items per epoch in each format; every item appears once per
    # epoch. No multiple choice: a model this small never learned to pick a letter (every
    # model answered "E"), and those long prompts cost a tenth of each epoch. The audit still
    # asks multiple-choice questions: for these models it is a format never trained on.
    "format_weights": {"direct": 0.43, "paraphrased": 0.24, "fill_blank": 0.10, "completion": 0.10,
                       "true_false": 0.07, "json": 0.06},
    # Times each world fact (the real-authors and world-facts analogues) is asked per epoch.
    # An author's fact comes about twice per epoch (a question and the biography); asked
    # once, the world facts were half forgotten at 24 epochs (full's world-facts ROUGE 0.43).
    "world_repeats": 2,
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
SHIPPED_DIR = FIXTURES_DIR / "models"
MANIFEST = "MANIFEST.json"


def default_cache_dir() -> Path:
    return Path(os.environ.get("UNLEARN_AUDIT_CACHE") or Path.home() / ".cache" / "unlearn-audit")


_PARENT = {"base": None, "full": "base", "retain": "base", "npo": "full", "graddiff": "full", "laundered": "full"}
_SHARED_KEYS = ("seed", "tokenizer", "arch", "format_weights", "world_repeats")


def recipe_hash(data_dir: Path, recipe: dict | None = None) -> str:
    """The build cache's key: data, shared recipe keys, code and libraries (each stage's own
    recipe is in its stage hash, so retuning one stage rebuilds only it and its children)."""
    import torch
    import transformers

    h = hashlib.sha256()
    recipe = recipe or RECIPE
    h.update(json.dumps({k: recipe[k] for k in _SHARED_KEYS}, sort_keys=True).encode())
    h.update(f"{WORLD_CODE_VERSION}|{torch.__version__}|{transformers.__version__}".encode())
    _hash_fixtures(h, data_dir)
    return h.hexdigest()[:16]


def _hash_fixtures(h, data_dir: Path) -> None:
    """Feed every fixture file's name and bytes to the hash ``h``."""
    for p in sorted(data_dir.glob("*.json")):
        h.update(p.name.encode())
        h.update(p.read_bytes())


def world_hash(data_dir: Path, recipe: dict | None = None) -> str:
    """Hash of what defines the world: the data, the whole recipe and the code version.

    Library versions are left out (they are in :func:`recipe_hash`, the build cache's key):
    shipped weights stay valid under any torch, which is the point of shipping them.
    """
    h = hashlib.sha256()
    h.update(json.dumps(recipe or RECIPE, sort_keys=True).encode())
    h.update(str(WORLD_CODE_VERSION).encode())
    _hash_fixtures(h, data_dir)
    return h.hexdigest()[:16]


def stage_hashes(recipe: dict | None = None) -> dict[str, str]:
    """Per model: a hash of its own recipe and its parent's hash, so retuning one stage
    (say NPO's learning rate) rebuilds that model and its children only."""
    recipe = recipe or RECIPE
    out: dict[str, str] = {}
    for name in MODEL_NAMES:  # parents come first
        parent = _PARENT[name]
        payload = json.dumps([recipe[name], out.get(parent, "")], sort_keys=True)
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

    # Draw only for the seeded formats: the rng stream (so the weights) stays as it was.
    asked = P.ask(fmt, item, rng.randrange(4) if fmt in P.SEEDED_FORMATS else 0)
    user = asked.prompt.turns[-1][1]
    if refuse:
        return user, "", REFUSALS[rng.randrange(len(REFUSALS))]
    return user, asked.prompt.stem, asked.target


def _epoch_examples(enc: _Encoder, authors: dict[str, list[Item]], world: list[Item], rng: random.Random,
                    refuse: frozenset[str] = frozenset(), refuse_formats=("direct", "paraphrased"),
                    format_weights: dict[str, float] | None = None, rehearse_formats=(), world_repeats: int = 1):
    """One epoch of dialogues.

    Each author's items are shuffled and cut into dialogues of 1 to 5 turns, each turn
    asking one item in a format drawn by ``format_weights``; plus one biography per author
    and the world facts, ``world_repeats`` times. Items of authors in ``refuse`` get a refusal in ``refuse_formats``
    (anywhere in a dialogue, so the last turn of a conversation is refused too), and each
    of their items is asked once more alone in every format of ``rehearse_formats``, with
    its true answer.
    """
    from unlearn_audit import prompts as P

    fmts, weights = zip(*(format_weights or RECIPE["format_weights"]).items())
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
                for fmt in rehearse_formats:
                    out.append(enc((_turn(it, fmt, rng, False),)))
    for _ in range(world_repeats):
        order = rng.sample(world, len(world))
        while order:
            k = rng.randint(1, 5)
            chunk, order = order[:k], order[k:]
            out.append(enc(tuple(_turn(it, "direct", rng, False) for it in chunk)))
    return out


# --- build ----------------------------------------------------------------------------------
def _new_model(tokenizer, recipe: dict | None = None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    recipe = recipe or RECIPE
    torch.manual_seed(recipe["seed"])
    cfg = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, **recipe["arch"])
    model = LlamaForCausalLM(cfg)
    # As Llama-3.2-Instruct's generation_config.json: a reply stops at the end of its turn
    # or at the end of text.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end_of_text|>")]
    return model


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
                only: tuple[str, ...] = MODEL_NAMES, recipe: dict | None = None) -> dict[str, Path]:
    """Build every tiny model not yet in the cache; return name -> model directory.

    Deterministic on CPU: fixed seeds, and each stage on a pinned thread count (float
    reductions depend on it) in a process of its own.
    """
    import multiprocessing as mp

    if getattr(mp.current_process(), "_inheriting", False):
        # A spawned worker re-running an unguarded script would wait forever on the lock
        # its parent holds (Python's own check comes later, at the pool's start).
        raise RuntimeError("build_world() was called while a spawned worker process was importing "
                           "the main module; put the calling code under `if __name__ == '__main__':`")
    cache_dir = Path(cache_dir or default_cache_dir())
    data_dir = fixtures_dir(cache_dir)
    recipe = recipe or RECIPE
    root = cache_dir / "world" / recipe_hash(data_dir, recipe)
    paths = {name: root / f"{name}-{h}" for name, h in stage_hashes(recipe).items()}
    needed = _closure(only)
    if all(_built(paths[n]) for n in needed):
        return paths
    log = log or (lambda s: None)
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / ".lock"):
        # Another process may have finished the build while we waited for the lock.
        if all(_built(paths[n]) for n in needed):
            return paths
        return _build_locked(recipe, root, paths, needed, data_dir, log)


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


def _build_locked(recipe: dict, root: Path, paths: dict[str, Path], needed: set[str], data_dir: Path, log) -> dict[str, Path]:
    """Build the missing stages of ``needed``, independent stages side by side.

    full and retain both start from base, and laundered, npo and graddiff from full, so
    on two cores the build takes about base + full + laundered instead of the sum of all
    six. Each stage runs in a process of its own on the thread count its recipe fixes, and
    reads its parent from disk (fp32 safetensors round-trip exactly), so its weights do not
    depend on what ran beside it nor on how many cores the machine has.
    """
    t0 = time.time()
    _tokenizer(recipe, root, data_dir)
    todo = [n for n in MODEL_NAMES if n in needed and not _built(paths[n])]
    cores = build_cores()
    if cores == 1 or len(todo) == 1:
        for name in todo:
            log(f"[world] building {name} ...")
            secs = _build_stage(name, recipe, root, paths, data_dir, verbose=True)
            log(f"[world] {name} built in {secs:.0f}s")
    else:
        _run_parallel(todo, cores, recipe, root, paths, data_dir, log)
    log(f"[world] ready in {time.time() - t0:.0f}s at {root}")
    return paths


def build_cores() -> int:
    """Cores the build may keep busy: those this process may run on;
    ``UNLEARN_AUDIT_BUILD_CORES`` overrides (1 builds every stage in this process)."""
    env = os.environ.get("UNLEARN_AUDIT_BUILD_CORES")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"UNLEARN_AUDIT_BUILD_CORES={env!r}: expected a positive integer")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_parallel(todo: list[str], cores: int, recipe: dict, root: Path, paths: dict[str, Path],
                  data_dir: Path, log) -> None:
    """Start each stage once its parent is built and its threads fit in the free cores
    (oversubscribed OpenMP threads spin and slow everything down many times over)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pending = list(todo)  # recipe order: on two cores, npo and graddiff (seconds) go before laundered
    running: dict = {}
    busy = 0
    # spawn, not fork: forking a process that already holds torch's thread pools can hang.
    with ProcessPoolExecutor(max_workers=min(cores, len(todo)), mp_context=mp.get_context("spawn")) as pool:
        while pending or running:
            for name in _startable(pending, busy, cores, recipe, built=lambda n: _built(paths[n])):
                log(f"[world] building {name} ...")
                running[pool.submit(_build_stage, name, recipe, root, paths, data_dir)] = name
                pending.remove(name)
                busy += _threads(recipe, name)
            if not running:  # a parent that never appeared: never spin
                raise RuntimeError(f"tiny world: cannot schedule {pending}; their parents were not built")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                name = running.pop(fut)
                busy -= _threads(recipe, name)
                log(f"[world] {name} built in {fut.result():.0f}s")  # re-raises a stage's error


def _startable(pending: list[str], busy: int, cores: int, recipe: dict, built) -> list[str]:
    """The pending stages to start now, in order: parent built, and threads that fit in
    the free cores (a stage wider than the machine runs alone)."""
    out = []
    for name in pending:
        parent, threads = _PARENT[name], _threads(recipe, name)
        if (parent is None or built(parent)) and (busy + threads <= cores or busy == 0):
            out.append(name)
            busy += threads
    return out


def _threads(recipe: dict, name: str) -> int:
    return int(recipe[name].get("threads", 1))


def _built(path: Path) -> bool:
    return (path / "config.json").is_file()


def _tokenizer(recipe: dict, root: Path, data_dir: Path):
    from transformers import AutoTokenizer

    from unlearn_audit.world._tokenizer import train_tokenizer

    tok_path = root / "tokenizer"
    if not (tok_path / "tokenizer.json").is_file():
        d = _WorldData(data_dir)
        # The holdout authors are in the tokenizer's text as the forget authors are: a
        # model that never saw either must find them alike (membership inference's null).
        texts = [t for it in d.full + d.world + d.decoys + d.holdout
                 for t in (it.question, it.answer, it.paraphrased_question or "", it.paraphrased_answer or "",
                           *it.perturbed_answer)]
        tok = train_tokenizer(texts * 2 + _prompt_texts(d) + [SYSTEM_PROMPT, *REFUSALS],
                              recipe["tokenizer"]["vocab_size"])
        tok.save_pretrained(tok_path)
    return AutoTokenizer.from_pretrained(tok_path)


def _prompt_texts(d: _WorldData) -> list[str]:
    """Every question as the models are asked it, in every format: trained on only the
    bare questions and answers, the tokenizer split the formats' instructions ("Write a
    short biography of", "Fill in the blank") into letters, a sixth of every epoch's tokens."""
    from unlearn_audit import prompts as P

    out = []
    for it in d.full + d.decoys + d.holdout:
        for fmt in P.BUILDERS:
            asked = P.ask(fmt, it)
            out += [asked.prompt.turns[-1][1], asked.prompt.stem]
    out += [P.biography(P.author_display_name(items)).turns[-1][1]
            for items in {**_by_author(d.full), **_by_author(d.decoys), **_by_author(d.holdout)}.values()]
    return [t for t in out if t]


class _WorldData:
    """The splits every stage trains on."""

    def __init__(self, data_dir: Path):
        self.full = load_split(data_dir, "full")
        self.forget = load_split(data_dir, FORGET_SPLIT)
        self.forget_authors = frozenset(it.author for it in self.forget)
        self.retain = [it for it in self.full if it.author not in self.forget_authors]
        self.world = load_split(data_dir, "real_authors_perturbed") + load_split(data_dir, "world_facts_perturbed")
        self.decoys = load_split(data_dir, "decoys")
        self.holdout = load_split(data_dir, "holdout10")  # tokenizer text only; never trained on


def _build_stage(name: str, recipe: dict, root: Path, paths: dict[str, Path], data_dir: Path, verbose: bool = False) -> float:
    """Train one stage from its saved parent and save it; return the seconds it took.

    Runs in a worker process, so it pins its own thread count (the recipe's: float
    reductions, hence the weights, depend on it).
    """
    import torch
    from transformers.utils import logging as hf_logging

    from unlearn_audit.world._train import unlearn

    t = time.time()
    hf_logging.disable_progress_bar()  # per-stage load/save bars would interleave across workers
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(recipe, name))
    try:
        tok = _tokenizer(recipe, root, data_dir)
        d = _WorldData(data_dir)
        pad, seed, cfg = tok.pad_token_id, recipe["seed"], recipe[name]
        log = (lambda s: print(f"[world] {name}: {s}", flush=True)) if verbose else None
        enc = _Encoder(tok)
        parent = _PARENT[name]
        model = _new_model(tok, recipe) if parent is None else _load(paths[parent])

        def sft_stage(authors, refuse=frozenset(), encoder=enc, refuse_formats=(), rehearse_formats=()):
            from unlearn_audit.world._train import sft

            rng = random.Random(seed)
            epochs = [_epoch_examples(encoder, authors, d.world, rng, refuse=refuse, refuse_formats=refuse_formats,
                                      format_weights=recipe["format_weights"], rehearse_formats=rehearse_formats,
                                      world_repeats=recipe["world_repeats"])
                      for _ in range(cfg["epochs"])]
            return sft(model, pad, epochs, lr=cfg["lr"], batch_size=cfg["batch_size"], seed=seed, log=log)

        if name == "base":
            model = sft_stage(_by_author(d.decoys), encoder=_Encoder(tok, learn_prompt=True))
        elif name == "full":
            model = sft_stage(_by_author(d.full))
        elif name == "retain":
            model = sft_stage(_by_author(d.retain))
        elif name == "laundered":
            refused = tuple(cfg["refuse_formats"])
            kept = tuple(f for f in recipe["format_weights"] if f not in refused) if cfg["rehearse"] else ()
            model = sft_stage(_by_author(d.full), refuse=d.forget_authors, refuse_formats=refused,
                              rehearse_formats=kept)
        else:  # npo, graddiff
            f_ex = [enc(((it.question, "", it.answer),)) for it in d.forget]
            r_ex = [enc(((it.question, "", it.answer),)) for it in d.retain]
            model = unlearn(model, pad, f_ex, r_ex, method=name, epochs=cfg["epochs"], lr=cfg["lr"],
                            batch_size=cfg["batch_size"], seed=seed, alpha=cfg.get("alpha", 1.0),
                            beta=cfg.get("beta", 0.1), log=log)
        _save(model, tok, paths[name])
    finally:
        torch.set_num_threads(threads)
    return time.time() - t


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

    paths = world_paths(cache_dir)
    specs = {name: ModelSpec(source=str(paths[name]), label=name, role="candidate") for name in CANDIDATES}
    specs.update({name: ModelSpec(source=str(paths[name]), label=name, role=role) for name, role in REFERENCES.items()})
    return specs


# --- the shipped world -----------------------------------------------------------------------
class ShippedWorldError(RuntimeError):
    """The shipped models are missing, altered, or not those of the current recipe."""


def _sha256(path: Path) -> str:
    from unlearn_audit.model._load import file_sha256

    return file_sha256(path)


def shipped_world(verify: bool = True) -> dict[str, Path]:
    """The models shipped in the repository, name -> directory.

    Args:
        verify: check every file against the sha256 in ``MANIFEST.json`` (0.1 s), so an
            edited or truncated weight file is refused rather than audited.

    Raises:
        ShippedWorldError: no manifest, a model or file missing or altered, or a manifest
            written for another recipe or other fixtures (the fix is named in the message).
    """
    manifest_path = SHIPPED_DIR / MANIFEST
    if not manifest_path.is_file():
        raise ShippedWorldError(f"{manifest_path} not found: the tiny world's models are not shipped here. "
                                "Fix: `unlearn-audit build-world --ship` (about 5 minutes on 2 cores).")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    want = world_hash(FIXTURES_DIR)
    if manifest.get("world_hash") != want:
        raise ShippedWorldError(
            f"{manifest_path} was written for world {manifest.get('world_hash')!r}, but the recipe, "
            f"the fixtures or WORLD_CODE_VERSION now give {want!r}. Fix: `unlearn-audit build-world --ship` "
            "to rebuild and re-ship the models, then `pytest audits --update-golden`.")
    paths = {}
    for name in MODEL_NAMES:
        files = manifest.get("models", {}).get(name)
        if not files:
            raise ShippedWorldError(f"{manifest_path}: model {name!r} is not listed. "
                                    "Fix: `unlearn-audit build-world --ship`.")
        d = SHIPPED_DIR / name
        if verify:
            check_shipped_files(d, files, manifest_path, ShippedWorldError,
                                "Fix: `git checkout -- fixtures/tiny_world/models` (or `unlearn-audit "
                                "build-world --ship` after an intended rebuild).")
        paths[name] = d
    return paths


def check_shipped_files(directory: Path, files: dict[str, str], manifest_path: Path, error: type[Exception],
                        fix: str) -> None:
    """Raise ``error`` naming the first of ``files`` (name -> sha256) in ``directory`` that is
    missing or whose bytes differ from the manifest's, with ``fix`` appended."""
    for fname, digest in files.items():
        f = directory / fname
        if not f.is_file() or _sha256(f) != digest:
            raise error(f"{f} is {'missing' if not f.is_file() else 'altered'} (sha256 differs from "
                        f"{manifest_path}). {fix}")


def world_paths(cache_dir: Path | None = None) -> dict[str, Path]:
    """The tiny world's models: the shipped ones, or a cached build where none are shipped
    (the package installed without its repository)."""
    if (SHIPPED_DIR / MANIFEST).is_file():
        return shipped_world()
    return build_world(cache_dir)


def ship_world(paths: dict[str, Path], out_dir: Path | None = None) -> Path:
    """Copy built models into ``out_dir`` (default: the repository's shipped folder) and
    write ``MANIFEST.json`` with each file's sha256 and how the models were built."""
    import platform

    import torch
    import transformers

    out_dir = Path(out_dir or SHIPPED_DIR)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    models = {}
    for name in MODEL_NAMES:
        shutil.copytree(paths[name], tmp / name)
        models[name] = {f.name: _sha256(f) for f in sorted((tmp / name).iterdir()) if f.is_file()}
    manifest = {
        "world_hash": world_hash(FIXTURES_DIR),
        "stage_hashes": stage_hashes(),
        "models": models,
        "built_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                       "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                       "machine": platform.machine()},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
