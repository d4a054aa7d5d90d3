"""Fetch llama.cpp's vocabularies and templates from PyPI; build real-tokenizer model dirs.

Layout under ``<cache>/realtok`` (``<cache>`` is ``$UNLEARN_AUDIT_CACHE`` or
``~/.cache/unlearn-audit``, as for the tiny world)::

    llama.cpp-<version>/         the extracted GGUF vocabularies, test vectors, templates
    <recipe hash>/tokenizers/<family>/   each family's tokenizer, saved as a normal one
    <recipe hash>/models/<family>-untrained/   model directories laid out like the hub's
    <recipe hash>/models/llama-3.2-<name>-<tune hash>/   the fine-tuned Llama-3.2 shapes

The recipe hash covers every setting below, so changing one rebuilds and never serves a
stale directory. Builds take an exclusive file lock, so concurrent sessions wait for one.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unlearn_audit.model._cache import default_cache_dir

SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
# sha256 of llama_cpp_python-0.3.36.tar.gz as PyPI serves it (computed once, 1 Dec 2026).
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_SDIST_FILE = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
_MODELS_IN_SDIST = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/models/"
# Bump when the build code changes what it writes, so old directories are not reused.
BUILD_VERSION = 1


@dataclass(frozen=True)
class Family:
    """One model family: where its tokenizer and template come from, what its checkpoint says.

    Attributes:
        name: the family's short name (``llama-3.2``, ``phi-3.5``, ``qwen2.5``).
        gguf: llama.cpp's vocabulary file for the family's tokenizer.
        template: llama.cpp's copy of the released checkpoint's chat template.
        special: ``bos``/``eos``/``pad``/``unk`` tokens of the released tokenizer_config.json
            (``None`` where the release has none: Llama-3.2 has no pad, Qwen2.5 no BOS).
        add_bos: whether plain encoding prepends BOS, as the released tokenizer does.
        drop_added: added tokens the GGUF conversion invents that the release lacks.
        generation: the released generation_config.json (stop ids, sampling defaults).
        arch: ``model_type`` and the released config.json's settings other than size.
    """

    name: str
    gguf: str
    template: str
    special: dict[str, str | None]
    add_bos: bool | None
    drop_added: tuple[str, ...]
    generation: dict[str, Any]
    arch: dict[str, Any] = field(default_factory=dict)


# Each value below is copied from the released checkpoint's config.json,
# generation_config.json and tokenizer_config.json (meta-llama/Llama-3.2-3B-Instruct,
# microsoft/Phi-3.5-mini-instruct, Qwen/Qwen2.5-7B-Instruct); only the sizes are small.
FAMILIES: dict[str, Family] = {
    "llama-3.2": Family(
        name="llama-3.2",
        gguf="ggml-vocab-llama-bpe.gguf",
        template="meta-llama-Llama-3.2-3B-Instruct.jinja",
        special={"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None, "unk": None},
        add_bos=True,
        # transformers' GGUF reader appends <|endoftext|> as id 128256; Llama-3 has
        # 128,256 tokens and no such token.
        drop_added=("<|endoftext|>",),
        generation={
            "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009],
            "do_sample": True,
            "temperature": 0.6,
            "top_p": 0.9,
        },
        arch={
            "model_type": "llama",
            "vocab_size": 128256,
            "bos_token_id": 128000,
            "eos_token_id": [128001, 128008, 128009],
            "tie_word_embeddings": True,
            "max_position_embeddings": 131072,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            },
        },
    ),
    "phi-3.5": Family(
        name="phi-3.5",
        gguf="ggml-vocab-phi-3.gguf",
        template="microsoft-Phi-3.5-mini-instruct.jinja",
        special={"bos": "<s>", "eos": "<|endoftext|>", "pad": "<|endoftext|>", "unk": "<unk>"},
        add_bos=None,  # keep what llama.cpp's conversion of the release says
        drop_added=(),
        generation={
            "bos_token_id": 1,
            "eos_token_id": [32007, 32001, 32000],
            "pad_token_id": 32000,
        },
        arch={
            "model_type": "phi3",
            "vocab_size": 32064,
            "bos_token_id": 1,
            "eos_token_id": 32000,
            "pad_token_id": 32000,
            "tie_word_embeddings": False,
            # The release uses longrope scaling to 131072; its factor lists are sized for
            # its head dimension, so the small model keeps the 4k base window instead.
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
        },
    ),
    "qwen2.5": Family(
        name="qwen2.5",
        gguf="ggml-vocab-qwen2.gguf",
        template="Qwen-Qwen2.5-7B-Instruct.jinja",
        special={"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None},
        add_bos=None,
        # The GGUF pads its vocabulary with [PAD151646]... fillers up to the embedding
        # size; the released tokenizer has no such tokens.
        drop_added=("[PAD",),
        generation={
            "bos_token_id": 151643,
            "pad_token_id": 151643,
            "eos_token_id": [151645, 151643],
            "do_sample": True,
            "repetition_penalty": 1.05,
            "temperature": 0.7,
            "top_p": 0.8,
            "top_k": 20,
        },
        arch={
            "model_type": "qwen2",
            "vocab_size": 152064,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "tie_word_embeddings": False,
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "use_sliding_window": False,
        },
    ),
}

# Small: the real vocabulary (128k rows) dominates the size; narrow and shallow keeps a
# forward pass over it cheap on two cores.
SMALL_SIZE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
# Hub checkpoints are sharded with an index; small shards make this one sharded too.
SHARD_SIZE = "8MB"
# Fine-tune of the Llama-3.2-shaped models on the tiny world's questions, so that they
# answer in words (untrained, they answer with runs of newlines). Measured on this recipe:
# after 40 steps the retain model says "The was was was.", after 200 "The author is Haline
# Ravenshaw." (1 CPU-second a step). As in the tiny world: retain first, full = retain +
# the forget authors, candidate = full tuned a little on retain items only.
TUNE = {
    "seed": 0,
    "lr": 5e-3,
    "batch_size": 8,
    "forget_split": "forget10",
    "retain_split": "retain90",
    "retain_items": 160,
    "retain_steps": 200,
    "full_steps": 40,
    "candidate_steps": 10,
}
TUNED_NAMES = ("full", "retain", "candidate")


class RealTokUnavailable(RuntimeError):
    """The sdist cannot be fetched here (no registry, no pip); tests skip with this reason."""


class RealTokIntegrityError(ValueError):
    """The downloaded sdist is not the pinned one; never skipped: it is a failure."""


def realtok_root(cache_dir: Path | None = None) -> Path:
    """``<cache>/realtok``, beside the tiny world's cache."""
    return Path(cache_dir or default_cache_dir()) / "realtok"


def _recipe_hash() -> str:
    blob = json.dumps(
        {
            "sdist": [SDIST_VERSION, SDIST_SHA256],
            "build": BUILD_VERSION,
            "families": {k: asdict(v) for k, v in FAMILIES.items()},
            "size": SMALL_SIZE,
            "shard": SHARD_SIZE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _lock(root: Path):
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _wanted_files() -> list[str]:
    names = []
    for fam in FAMILIES.values():
        names += [fam.gguf, fam.gguf + ".inp", fam.gguf + ".out", "templates/" + fam.template]
    return names


def fetch_sources(cache_dir: Path | None = None, *, log=None) -> Path:
    """Download llama-cpp-python's sdist once with pip and extract the files the builds use.

    Returns:
        ``<cache>/realtok/llama.cpp-<version>``, holding the GGUF vocabularies with their
        ``.inp``/``.out`` test vectors, and ``templates/`` with the chat templates.

    Raises:
        RealTokUnavailable: pip cannot reach the package registry (or is missing).
        RealTokIntegrityError: the download's sha256 is not :data:`SDIST_SHA256`.
    """
    root = realtok_root(cache_dir)
    dest = root / f"llama.cpp-{SDIST_VERSION}"
    if (dest / ".complete").is_file():
        return dest
    with _lock(root):
        if (dest / ".complete").is_file():
            return dest
        with tempfile.TemporaryDirectory(dir=root, prefix=".sdist-") as tmp:
            sdist = _pip_download(Path(tmp), log)
            _extract(sdist, dest)
    return dest


def _pip_download(tmp: Path, log) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", "-d", str(tmp), f"{SDIST_NAME}=={SDIST_VERSION}",
    ]
    if log:
        log(f"realtok: {' '.join(cmd[2:])}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RealTokUnavailable(f"pip download {SDIST_NAME}=={SDIST_VERSION} failed: {e}") from e
    sdist = tmp / _SDIST_FILE
    if done.returncode != 0 or not sdist.is_file():
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "")
        raise RealTokUnavailable(
            f"pip could not download {SDIST_NAME}=={SDIST_VERSION} (the source of the real "
            f"tokenizers): {why.strip()}"
        )
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise RealTokIntegrityError(
            f"{sdist.name}: sha256 {digest} is not the pinned {SDIST_SHA256}. The registry "
            "served a different file; check the index pip uses (pip config list)."
        )
    return sdist


def _extract(sdist: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    wanted = _wanted_files()
    with tarfile.open(sdist) as tar:
        for name in wanted:
            member = tar.getmember(_MODELS_IN_SDIST + name)
            out = tmp / name  # names are ours, never the archive's: no path traversal
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(member).read())
    (tmp / ".complete").write_text(json.dumps({"version": SDIST_VERSION, "files": wanted}))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


# --- tokenizers --------------------------------------------------------------------------------


def family_tokenizer_dir(family: str, cache_dir: Path | None = None, *, log=None) -> Path:
    """The family's real tokenizer, saved as an ordinary tokenizer directory.

    Built from llama.cpp's GGUF vocabulary (``AutoTokenizer.from_pretrained(dir,
    gguf_file=...)``, which needs the ``gguf`` package), with the released chat template
    and special tokens; loads with plain ``AutoTokenizer.from_pretrained(dir)``.

    Raises:
        KeyError: an unknown family.
        RealTokUnavailable: the sources cannot be fetched here.
    """
    fam = _family(family)
    root = realtok_root(cache_dir)
    out = root / _recipe_hash() / "tokenizers" / fam.name
    if (out / "tokenizer_config.json").is_file():
        return out
    src = fetch_sources(cache_dir, log=log)
    with _lock(root):
        if not (out / "tokenizer_config.json").is_file():
            _build_tokenizer(fam, src, out, log)
    return out


def _family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"Unknown family {name!r}. Available: {', '.join(FAMILIES)}") from None


def _build_tokenizer(fam: Family, src: Path, out: Path, log) -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise RealTokUnavailable(
            "Reading llama.cpp's GGUF vocabularies needs the gguf package. "
            "Fix: pip install -e '.[test]' (or pip install gguf)."
        ) from e
    from transformers import AutoTokenizer

    if log:
        log(f"realtok: building the {fam.name} tokenizer from {fam.gguf}")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=fam.gguf)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    _patch_saved_tokenizer(fam, tmp, (src / "templates" / fam.template).read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _patch_saved_tokenizer(fam: Family, path: Path, template: str) -> None:
    """Make the saved files say what the release's do: tokens, specials, BOS, template."""
    tj_file, tc_file = path / "tokenizer.json", path / "tokenizer_config.json"
    tj = json.loads(tj_file.read_text())
    tc = json.loads(tc_file.read_text())

    # An entry ending in "[PAD" drops a whole numbered run ([PAD151646], ...).
    def dropped(content: str) -> bool:
        return any(content == d or (d == "[PAD" and content.startswith(d)) for d in fam.drop_added)

    gone = {t["id"] for t in tj.get("added_tokens", []) if dropped(t["content"])}
    tj["added_tokens"] = [t for t in tj.get("added_tokens", []) if t["id"] not in gone]
    vocab = tj.get("model", {}).get("vocab")
    if isinstance(vocab, dict):
        tj["model"]["vocab"] = {k: v for k, v in vocab.items() if v not in gone}
    # Listed in tokenizer_config.json as the releases do: without it Qwen2Tokenizer splits
    # <|im_start|> into characters (it only keeps the added tokens the config names).
    keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    tc["added_tokens_decoder"] = {
        str(t["id"]): {k: t[k] for k in keys} for t in tj["added_tokens"]
    }

    if fam.add_bos:
        bos = fam.special["bos"]
        bos_id = next(t["id"] for t in tj["added_tokens"] if t["content"] == bos)
        # Llama-3's own tokenizer.json: byte-level offsets, then BOS before every text.
        tj["post_processor"] = {
            "type": "Sequence",
            "processors": [
                {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                 "use_regex": True},
                {
                    "type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                               {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                             {"Sequence": {"id": "A", "type_id": 0}},
                             {"SpecialToken": {"id": bos, "type_id": 1}},
                             {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
                },
            ],
        }
        tc["add_bos_token"] = True
    for key, value in fam.special.items():
        tc[f"{key}_token"] = value
    tc["model_max_length"] = fam.arch["max_position_embeddings"]
    tc.pop("chat_template", None)
    tj_file.write_text(json.dumps(tj, ensure_ascii=False, indent=2))
    tc_file.write_text(json.dumps(tc, ensure_ascii=False, indent=2))
    (path / "chat_template.jinja").write_text(template)
    stm = path / "special_tokens_map.json"
    if stm.is_file():
        stm.unlink()  # tokenizer_config.json is the one source; a stale map would override it


# --- models ------------------------------------------------------------------------------------


def _config(fam: Family):
    from transformers import AutoConfig

    # A deep copy: config classes rewrite nested dicts (rope_scaling) in place, which would
    # change FAMILIES and with it the recipe hash.
    arch = copy.deepcopy(fam.arch)
    model_type = arch.pop("model_type")
    return AutoConfig.for_model(model_type, **arch, **SMALL_SIZE)


def build_family_model(family: str, cache_dir: Path | None = None, *, log=None) -> Path:
    """A random-weight model of ``family`` laid out like the hub checkpoint.

    The directory holds the real tokenizer and chat template, a small config of the real
    architecture with the real vocabulary size, the released generation config, and
    bfloat16 safetensors in shards with an index (as the hub's checkpoints are stored).

    Raises:
        RealTokUnavailable: the sources cannot be fetched here.
    """
    fam = _family(family)
    root = realtok_root(cache_dir)
    out = root / _recipe_hash() / "models" / f"{fam.name}-untrained"
    if (out / "config.json").is_file():
        return out
    tok_dir = family_tokenizer_dir(family, cache_dir, log=log)
    with _lock(root):
        if not (out / "config.json").is_file():
            import torch
            from transformers import AutoModelForCausalLM

            torch.manual_seed(TUNE["seed"])
            model = AutoModelForCausalLM.from_config(_config(fam))
            _save_model(model, fam, tok_dir, out)
    return out


def _save_model(model, fam: Family, tok_dir: Path, out: Path) -> None:
    import torch
    from transformers import GenerationConfig

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = model.to(torch.bfloat16)  # the releases store bfloat16 weights
    model.generation_config = GenerationConfig(**fam.generation)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size=SHARD_SIZE)
    for f in tok_dir.iterdir():
        shutil.copy2(f, tmp / f.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: an interrupted build never leaves a half-written model


def build_tuned_llama(cache_dir: Path | None = None, *, log=None) -> dict[str, Path]:
    """Llama-3.2-shaped ``full``, ``retain`` and ``candidate`` models that answer in words.

    Fine-tuned (:data:`TUNE`) from the untrained Llama-3.2-shaped model on the tiny world's
    questions, tokenised through the package's own chat format: ``retain`` on retain items,
    ``full`` from ``retain`` on the forget authors mixed with retain items, ``candidate``
    from ``full`` on retain items only. They stand in for a candidate and its references
    in an end-to-end audit through the real tokenizer.

    Returns:
        name -> model directory.
    """
    fam = FAMILIES["llama-3.2"]
    root = realtok_root(cache_dir)
    base = root / _recipe_hash() / "models"
    # The tuning recipe's own hash, so retuning leaves the tokenizers and untrained models be.
    tune = hashlib.sha256(json.dumps(TUNE, sort_keys=True).encode()).hexdigest()[:8]
    paths = {name: base / f"llama-3.2-{name}-{tune}" for name in TUNED_NAMES}
    if all((p / "config.json").is_file() for p in paths.values()):
        return paths
    untrained = build_family_model("llama-3.2", cache_dir, log=log)
    tok_dir = family_tokenizer_dir("llama-3.2", cache_dir)  # before the lock: it may lock too
    with _lock(root):
        if not all((p / "config.json").is_file() for p in paths.values()):
            _tune(fam, untrained, tok_dir, paths, log)
    return paths


def _tune(fam: Family, untrained: Path, tok_dir: Path, paths: dict[str, Path], log) -> None:
    import random
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearn_audit.data import load_split
    from unlearn_audit.model._format import make_format
    from unlearn_audit.model._types import Prompt
    from unlearn_audit.world import FIXTURES_DIR

    tok = AutoTokenizer.from_pretrained(untrained)
    fmt = make_format(tok)
    torch.manual_seed(TUNE["seed"])
    model = AutoModelForCausalLM.from_pretrained(untrained, dtype=torch.float32)

    def encoded(split: str, n: int | None = None):
        out = []
        for it in load_split(FIXTURES_DIR, split, limit=n):
            prompt = Prompt.question(it.question)
            ids = fmt.encode_prompt(prompt)
            answer, _ = fmt.encode_continuation(it.answer, prompt=prompt)
            out.append((ids + answer, len(ids)))
        return out

    forget = encoded(TUNE["forget_split"])
    retain = encoded(TUNE["retain_split"], TUNE["retain_items"])
    rng = random.Random(TUNE["seed"])
    t0 = time.time()
    stages = (("retain", retain, "retain_steps"), ("full", forget + retain, "full_steps"),
              ("candidate", retain, "candidate_steps"))
    for name, data, steps in stages:
        _sft(model, data, TUNE[steps], rng)
        _save_model(model, fam, tok_dir, paths[name])
        if log:
            log(f"realtok: tuned llama-3.2-{name} ({time.time() - t0:.0f}s so far)")


def _sft(model, data: list[tuple[list[int], int]], steps: int, rng) -> None:
    """AdamW on the answer tokens (and the closing end-of-turn token), in place.

    The output head runs on answer positions only: with a 128k vocabulary it is nearly all
    of a step's cost, and the prompt's positions carry no loss.
    """
    import torch

    body, head = model.get_decoder(), model.get_output_embeddings()
    opt = torch.optim.AdamW(model.parameters(), lr=TUNE["lr"], weight_decay=0.0)
    model.train()
    order: list[int] = []
    for _ in range(steps):
        if len(order) < TUNE["batch_size"]:
            order += rng.sample(range(len(data)), len(data))
        batch = [data[order.pop()] for _ in range(TUNE["batch_size"])]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        rows, cols, targets = [], [], []
        for i, (seq, n_prompt) in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            for t in range(n_prompt, len(seq)):  # token t is predicted at position t - 1
                rows.append(i)
                cols.append(t - 1)
                targets.append(seq[t])
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = torch.nn.functional.cross_entropy(head(hidden[rows, cols]), torch.tensor(targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
