"""Loading a checkpoint: hub id, local directory or PEFT adapter, with a content fingerprint.

Everything that decides which numbers a model produces is resolved here, once: where the
files are, which weights and tokenizer they hold, the dtype, the device and the
quantization mode. The fingerprint hashes exactly those inputs, so an on-disk result cache
keyed by it can never serve one checkpoint's numbers for another (open-unlearning's resume
silently reuses stale results; this is the fix).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearn_audit.model._cache import default_cache_dir

QUANTIZATION_MODES = (None, "int8", "nf4")
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
SAFE_WEIGHTS = ("*.safetensors",)
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",  # holds the chat template in older checkpoints
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",  # sentencepiece (Llama-2)
    "vocab.json",
    "merges.txt",
)
#: Files beside the weights that change what the loaded model computes: the architecture
#: and its constants (rope_theta, rms_norm_eps, ...) and the generation defaults.
CONFIG_FILES = ("config.json", "generation_config.json")
# Any of these means a directory carries a tokenizer that ``AutoTokenizer`` can load.
_TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ModelLoadError(ValueError):
    """A checkpoint cannot be loaded as asked; the message says what is wrong and the fix."""


class QuantizationUnavailable(RuntimeError):
    """Quantized loading is impossible here (bitsandbytes missing or unsupported).

    Kept apart from :class:`ModelLoadError` because it is a property of the machine, not a
    mistake in the request: views report it as ``skipped`` with this message as the reason.
    """


@dataclass(frozen=True)
class ModelSpec:
    """What to load and how; everything a user can say about a model on the command line.

    Attributes:
        source: a hub id, a local directory with a full model, or a PEFT/LoRA adapter
            directory (one holding ``adapter_config.json``).
        label: the name the report uses for this model.
        role: ``candidate``, ``full``, ``retain`` or ``base``.
        base: the base model of an adapter; defaults to the adapter's
            ``base_model_name_or_path``.
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``bfloat16``,
            ``float16``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``.
        quantization: ``None``, ``int8`` (LLM.int8) or ``nf4`` (4-bit NormalFloat),
            both through bitsandbytes.
        trust_remote_code: run the checkpoint's own Python code; off unless asked for.
        allow_pickle: accept pickle weights (``*.bin``/``*.pt``), which can execute code
            when loaded; off unless asked for.
    """

    source: str
    label: str
    role: str = "candidate"
    base: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    quantization: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False


@dataclass
class LoadedModel:
    """A model ready for the engine.

    Attributes:
        model: the ``PreTrainedModel`` in eval mode (adapters already merged).
        tokenizer: its tokenizer, unchanged from disk.
        spec: what was asked for.
        fingerprint: sha256 over everything that changes outputs: weights, config and
            generation config, tokenizer files (chat template included), adapter config,
            the dtype and the quantization mode (see :func:`compute_fingerprint`).
        device: where the model's parameters live.
        dtype: the torch dtype the weights compute in, as a string (``float32``, ...).
        path: the local directory the weights came from (an adapter's own directory).
        kernel_path: which arithmetic a quantized model's matmuls run (see
            :func:`quantized_kernel_path`); ``None`` at full precision.
    """

    model: Any
    tokenizer: Any
    spec: ModelSpec
    fingerprint: str
    device: Any
    dtype: str = "float32"
    path: Path | None = None
    kernel_path: str | None = None


# --- resolution -------------------------------------------------------------------------------


def _looks_like_path(source: str) -> bool:
    """True when ``source`` can only be a filesystem path, never a hub id (``org/name``)."""
    return (
        source.startswith(("/", "./", "../", "~", "\\"))
        or source.count("/") > 1
        or (len(source) > 1 and source[1] == ":")  # a Windows drive
    )


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - hub library always ships with transformers
        return False


def resolve_source(source: str, *, allow_pickle: bool = False, local: bool = True) -> Path:
    """Turn a hub id or a path into a local directory holding the checkpoint's files.

    A hub id is looked up in the local hub cache first (works offline), then downloaded,
    fetching only the files loading needs (no pickle weights unless ``allow_pickle``).
    ``local=False`` never reads ``source`` as a path relative to the working directory
    (an adapter's hub-id base).

    Raises:
        ModelLoadError: when ``source`` is neither an existing directory nor a hub id that
            could be reached.
    """
    path = Path(source).expanduser()
    if local and path.is_dir():
        return path.resolve()
    if local and path.exists():
        raise ModelLoadError(
            f"Model source {source!r} is a file, not a directory. Pass the directory that "
            "holds config.json and the weights (or adapter_config.json for an adapter)."
        )
    fix = (
        "Fix: pass an existing local directory (check the spelling and the working "
        "directory), or a hub id like 'org/name' on a machine that can reach the hub "
        "(or has it in the local hub cache: `huggingface-cli download ORG/NAME`)."
    )
    if _looks_like_path(source):
        raise ModelLoadError(
            f"Model source {source!r} is neither a local directory (no such path) nor a hub "
            f"id. {fix}"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover
        raise ModelLoadError(f"Cannot resolve hub id {source!r}: {e}. {fix}") from e
    patterns = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]
    if allow_pickle:
        patterns += ["*.bin", "*.pt", "*.pth"]
    errors = []
    for local_only in (True, False):
        if not local_only and _hub_offline():
            errors.append("HF_HUB_OFFLINE is set, so the hub was not asked")
            break
        try:
            return Path(
                snapshot_download(source, allow_patterns=patterns, local_files_only=local_only)
            )
        except Exception as e:  # the hub raises a zoo of types: validation, network, 404
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise ModelLoadError(
        f"Model source {source!r} is neither a local directory (no such path) nor a reachable "
        f"hub id ({'; '.join(errors)}). {fix}"
    )


def _glob(directory: Path, patterns: tuple[str, ...]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in directory.glob(pattern) if p.is_file())
    return sorted(found)


def _weight_files(directory: Path, *, adapter: bool, allow_pickle: bool, source: str) -> list[Path]:
    """The weight files ``from_pretrained`` will read, refusing pickle-only checkpoints.

    Raises:
        ModelLoadError: no weights at all, or only pickle weights without the opt-in.
    """
    prefix = "adapter_model" if adapter else ""
    safe = [p for p in _glob(directory, SAFE_WEIGHTS) if p.name.startswith(prefix)]
    if safe:
        for file in safe:  # a torn download fails here in one line, not deep in transformers
            _check_safetensors(file)
        return safe
    pickled = [p for p in _glob(directory, PICKLE_WEIGHTS) if p.name.startswith(prefix)]
    if pickled and not allow_pickle:
        names = ", ".join(p.name for p in pickled[:3])
        raise ModelLoadError(
            f"{source}: only pickle weights found ({names}); loading a pickle can run "
            "arbitrary code, so it is off by default. Fix: convert the checkpoint to "
            "safetensors (load it once you trust it, then `model.save_pretrained(DIR, "
            "safe_serialization=True)`), or pass --allow-pickle (ModelSpec(allow_pickle=True)) "
            "if you trust its origin."
        )
    if pickled:
        return pickled
    kind = "adapter weights (adapter_model.safetensors)" if adapter else "weights (*.safetensors)"
    raise ModelLoadError(
        f"{source}: no {kind} found in {directory}. Fix: point at the directory that "
        "save_pretrained wrote, which holds the weight files; if the checkpoint only has "
        "pickle weights (*.bin) on the hub, pass --allow-pickle to fetch them."
    )


def _check_safetensors(file: Path) -> None:
    """Refuse a truncated or damaged ``.safetensors`` file before transformers reads it.

    The format is an 8-byte little-endian header length, a JSON header whose tensors give
    ``data_offsets`` into the data that follows, then the data; a complete file is exactly
    as long as the header says. Reading the header costs a few kilobytes, not the weights.

    Raises:
        ModelLoadError: naming the file, what is wrong and the fix.
    """
    fix = (
        "Fix: download or copy the checkpoint again (e.g. `huggingface-cli download ORG/NAME`), "
        "or re-save it with `model.save_pretrained(DIR, safe_serialization=True)`."
    )
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                raise ModelLoadError(
                    f"{file}: truncated or not a safetensors file ({size} bytes, too short for its "
                    f"header). {fix}"
                )
            header = json.loads(fh.read(n))
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ModelLoadError(
            f"{file}: damaged safetensors header ({type(e).__name__}: {e}). {fix}"
        ) from e
    need = 8 + n + max(ends, default=0)
    if size < need:
        raise ModelLoadError(
            f"{file}: truncated safetensors file ({size} bytes; its header needs {need}). {fix}"
        )


def _check_config(directory: Path, spec: ModelSpec) -> None:
    """Say in one line what transformers would say in a page: config.json is missing or
    unreadable, or its ``model_type`` needs the checkpoint's own code (``--trust-remote-code``).

    Raises:
        ModelLoadError: naming config.json, the problem and the fix.
    """
    file = directory / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(
            f"{file}: not found; a model directory needs the config.json that save_pretrained "
            "writes. Fix: point at the directory that holds config.json and the weights."
        ) from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{file}: unreadable ({type(e).__name__}: {e}). Fix: restore the file.") from e
    _check_generation_config(directory)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if spec.trust_remote_code or not isinstance(model_type, str):
        return
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type in CONFIG_MAPPING:
        return  # transformers' own code; an auto_map beside it is ignored without the flag
    if config.get("auto_map"):
        raise ModelLoadError(
            f"{file}: model_type {model_type!r} is implemented by the checkpoint's own Python code "
            "(its auto_map), which is not run unless asked. Fix: pass --trust-remote-code "
            "(ModelSpec(trust_remote_code=True)) if you trust that code, since it runs on this machine."
        )
    raise ModelLoadError(
        f"{file}: model_type {model_type!r} is unknown to transformers {transformers.__version__} "
        "and the checkpoint ships no code for it (no auto_map). Fix: check the spelling, or "
        "upgrade transformers (pip install -U transformers); if the model's code lives elsewhere, "
        "add its auto_map and pass --trust-remote-code."
    )


def _check_generation_config(directory: Path) -> None:
    """Refuse in one line a generation_config.json that transformers would refuse with a
    traceback mid-load (``max_new_tokens: 0``, a negative temperature, broken JSON).

    Raises:
        ModelLoadError: naming the file, transformers' complaint and the fix.
    """
    file = directory / "generation_config.json"
    if not file.is_file():
        return
    from transformers import GenerationConfig

    try:
        GenerationConfig.from_pretrained(directory)
    except Exception as e:  # ValueError from validate(), OSError/JSONDecodeError from reading
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelLoadError(
            f"{file}: transformers cannot load it ({type(e).__name__}: {first}). Fix: correct or "
            "remove that field (the audit sets its own decoding: greedy, or --temperature, "
            "--top-p and --max-new-tokens), or delete the file."
        ) from e


def _has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in _TOKENIZER_MARKERS)


# --- fingerprint ------------------------------------------------------------------------------


def file_sha256(file: Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks (weights do not fit in memory twice)."""
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class _HashCache:
    """File sha256 values remembered by the file's identity and change time, so big
    weights hash once.

    An entry is used only while path, size, mtime, ctime, inode and device all still
    match (git's index does the same). mtime alone is not enough: other weights of the
    same size with the old mtime put back (``os.utime``, ``cp -p``, ``rsync -t``) served
    the old model's cached answers. ctime cannot be set back from user space, and a file
    replaced by rename has a new inode. Hashing every time would also be safe, but costs
    about 16 s per 16 GB checkpoint per process at sha256's 1 GB/s (more from a cold disk),
    for every model and every xdist worker of every run. Two more guards: an entry is kept
    only for a file whose ctime is older than the hash's start by more than
    :attr:`RACY_NS` (a change within the same timestamp tick would otherwise look
    unchanged; git calls these "racily clean"), and nothing is cached on Windows, where
    ``st_ctime`` is the creation time. The file carries a checksum of its entries: an
    edited or damaged one is discarded (everything hashes again) with one warning.

    Concurrent writers may drop each other's entries, which only costs a re-hash.
    """

    VERSION = 2
    #: How much older than the hash's start a file's last change must be for its hash to
    #: be remembered: above any filesystem's timestamp granularity (FAT: 2 s).
    RACY_NS = 3_000_000_000

    def __init__(self, path: Path | None):
        self.path = path if os.name != "nt" else None
        self.entries: dict[str, dict] = {}
        self.dirty = False
        if self.path is not None and self.path.is_file():
            try:
                stored = json.loads(self.path.read_text())
            except (OSError, ValueError):
                stored = None  # a torn or foreign file: start over
            if isinstance(stored, dict) and stored.get("version") == self.VERSION:
                entries = stored.get("entries")
                if isinstance(entries, dict) and stored.get("sha256") == self._checksum(entries):
                    self.entries = entries
                else:
                    import warnings

                    warnings.warn(
                        f"file-hash cache {self.path} failed its checksum (edited or damaged); "
                        "ignoring it and hashing the model files again.",
                        RuntimeWarning,
                        stacklevel=3,
                    )

    @staticmethod
    def _checksum(entries: dict) -> str:
        return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()

    @staticmethod
    def _stamp(st: os.stat_result) -> dict:
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                "ino": st.st_ino, "dev": st.st_dev}

    def sha256(self, file: Path) -> str:
        import time

        real = file.resolve()  # hub snapshots are symlinks into a blob store
        st = real.stat()
        key = str(real)
        stamp = self._stamp(st)
        hit = self.entries.get(key)
        if isinstance(hit, dict) and {k: hit.get(k) for k in stamp} == stamp and isinstance(hit.get("sha256"), str):
            return hit["sha256"]
        started = time.time_ns()
        digest = file_sha256(real)
        after = real.stat()
        if self._stamp(after) == stamp and st.st_ctime_ns < started - self.RACY_NS:
            self.entries[key] = {**stamp, "sha256": digest}
            self.dirty = True
        elif self.entries.pop(key, None) is not None:  # changed lately: hash it again next time
            self.dirty = True
        return digest

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".hashes-", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                json.dump({"version": self.VERSION, "entries": self.entries,
                           "sha256": self._checksum(self.entries)}, fh, indent=0, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache only means hashing again next run


def config_files(directory: Path, role: str) -> list[tuple[str, Path]]:
    """``(role, path)`` of the :data:`CONFIG_FILES` present in ``directory``."""
    return [(role, directory / name) for name in CONFIG_FILES if (directory / name).is_file()]


def compute_fingerprint(
    files: list[tuple[str, Path]],
    tokenizer_dir: Path,
    quantization: str | None,
    *,
    dtype: str | None = None,
    hash_cache: Path | None = None,
    kernel_path: str | None = None,
) -> str:
    """sha256 over everything that changes a model's outputs, so a result cache keyed by it
    never serves one model's answers for another.

    That is: the weight bytes, ``config.json`` (a changed ``rope_theta`` changes every
    logit with the same weights) and ``generation_config.json``, an adapter's
    ``adapter_config.json`` (its scaling), the tokenizer files including the chat template
    (``tokenizer_config.json`` or ``chat_template.jinja``), the dtype the weights compute
    in, the quantization mode and the kernel path a quantized model computes with. Files
    enter by role and name (not absolute path), so the same checkpoint copied elsewhere
    keeps its fingerprint.

    Args:
        files: ``(role, path)`` pairs of weight and config files; role separates a base
            model's files from an adapter's.
        tokenizer_dir: where the tokenizer files were read from.
        quantization: the quantization mode (``None`` for full precision).
        dtype: the dtype the model is loaded in (``float32``, ``bfloat16``, ...); ``None``
            leaves it out (only for callers that fingerprint files, not a loaded model).
        hash_cache: JSON file remembering file hashes; ``None`` hashes every time.
        kernel_path: :func:`quantized_kernel_path` of a quantized load; ``None`` leaves it
            out (full precision keeps the fingerprint it always had).
    """
    cache = _HashCache(hash_cache)
    outer = hashlib.sha256()
    for role, file in sorted(files, key=lambda rp: (rp[0], rp[1].name)):
        outer.update(f"{role}:{file.name}:{cache.sha256(file)}\n".encode())
    for name in TOKENIZER_FILES:
        file = tokenizer_dir / name
        if file.is_file():
            outer.update(f"tokenizer:{name}:{cache.sha256(file)}\n".encode())
    outer.update(f"quantization:{quantization or 'none'}\n".encode())
    if dtype is not None:
        outer.update(f"dtype:{dtype}\n".encode())
    if kernel_path is not None:  # answers cached from another kernel path are not these
        outer.update(f"kernel:{kernel_path}\n".encode())
    cache.save()
    return outer.hexdigest()


# --- loading ----------------------------------------------------------------------------------


def _resolve_device(device: str):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ModelLoadError(
            f"--device {device!r} is not a device torch knows ({e}). Use auto, cpu, cuda, "
            "cuda:N or mps."
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"--device {device!r} asks for CUDA but torch sees no CUDA device "
            f"(torch {torch.__version__}). Use --device cpu or install a CUDA build of torch."
        )
    return dev


def _resolve_dtype(dtype: str, device) -> str:
    if dtype == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    name = _DTYPES.get(str(dtype).lower())
    if name is None:
        raise ModelLoadError(
            f"--dtype {dtype!r} is not supported. Use auto, float32, bfloat16 or float16."
        )
    return name


def _quantization_config(mode: str, compute_dtype):
    """A ``BitsAndBytesConfig`` for ``mode``, or :class:`QuantizationUnavailable` with why."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # ImportError, or a broken native library raising at import
        raise QuantizationUnavailable(
            f"{mode} quantization needs bitsandbytes, which cannot be imported here "
            f"({type(e).__name__}: {e}). Fix: pip install 'bitsandbytes>=0.45' "
            "(it needs a supported GPU or CPU backend)."
        ) from e
    from transformers import BitsAndBytesConfig

    if mode == "int8":
        _quiet_int8_cast_warning()
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype
    )


#: Debugging switch read by :func:`quantized_kernel_path`.
NF4_CPU_KERNEL_ENV = "UNLEARN_AUDIT_NF4_CPU_KERNEL"


def quantized_kernel_path(mode: str | None, device) -> str | None:
    """Which arithmetic a model quantized in ``mode`` on ``device`` runs; ``None`` unquantized.

    - ``cpu-dequantize`` (NF4 on the CPU): each layer's NF4 weight is dequantized in torch
      (code value times block absmax, in float32) and multiplied by a plain torch matmul,
      see :func:`_pin_cpu_4bit_kernels`. bitsandbytes itself would pick by CPUID (its native
      ``has_avx512bf16``, which ``ATEN_CPU_CAPABILITY`` never reaches) between a packed
      bfloat16 kernel and this float path, so two CPUs gave two sets of NF4 answers.
    - ``cpu-exact-int8-f64-per-token`` (INT8 on the CPU): bitsandbytes' LLM.int8 layers (quantize,
      dequantize and outliers are torch code) with the int8 matmul pinned to its exact
      int32 value, see :func:`_pin_cpu_int8_matmul`, every float of the model in
      float64, see :func:`_widen_to_float64`, and outliers taken per token, see
      :func:`_per_token_int8_outliers`. bitsandbytes' own choice is
      ``torch._int_mm`` where torch's CPU capability is AVX512 (oneDNN inside, whose kernels
      without AVX-512 VNNI saturate: off by up to 84745 on one 512-wide product), else a
      float32 matmul (exact only for input widths up to ``2**24 / 127**2``, 1040).
    - ``<device>-bitsandbytes`` elsewhere (CUDA): bitsandbytes' own kernels, as users deploy them.

    Debugging switch, only for comparing kernels (``UNLEARN_AUDIT_NF4_CPU_KERNEL``):
    ``dequantize`` (the default, as above); ``bitsandbytes`` leaves NF4 on the CPU to
    bitsandbytes' CPUID choice, as before the pin (``cpu-bitsandbytes-avx512bf16`` where it
    takes the packed kernel, else ``cpu-bitsandbytes``); ``bitsandbytes-unpacked`` runs
    bitsandbytes' own NF4 layers with the packed kernel turned off (``cpu-bitsandbytes``,
    what a CPU without AVX-512 BF16 runs).
    """
    if mode is None:
        return None
    kind = getattr(device, "type", str(device))
    if kind != "cpu":
        return f"{kind}-bitsandbytes"
    if mode != "nf4":
        return "cpu-exact-int8-f64-per-token"
    choice = os.environ.get(NF4_CPU_KERNEL_ENV, "dequantize").strip().lower() or "dequantize"
    if choice == "dequantize":
        return "cpu-dequantize"
    if choice == "bitsandbytes-unpacked":
        return "cpu-bitsandbytes"
    if choice != "bitsandbytes":
        raise ModelLoadError(f"{NF4_CPU_KERNEL_ENV}={choice!r} is not supported. Use dequantize "
                             "(the default), bitsandbytes or bitsandbytes-unpacked.")
    try:
        from bitsandbytes.nn import modules  # where Linear4bit reads it

        packed = bool(modules.has_avx512bf16())
    except Exception:  # bitsandbytes missing: the load says so in its own words
        packed = False
    return "cpu-bitsandbytes-avx512bf16" if packed else "cpu-bitsandbytes"


def dequantize_4bit(packed, quant_state):
    """A bitsandbytes 4-bit weight as float32 ``quant_state.shape``, in plain torch.

    Definition (bitsandbytes' own dequantization, ``backends/default/ops.py``): byte ``i``
    packs elements ``2i`` (high nibble) and ``2i+1`` (low nibble); element ``j`` is
    ``code[nibble_j] * absmax[j // blocksize]``. With nested (double) quantization the
    absmax are themselves 8-bit: ``state2.code[absmax_8bit[b]] * state2.absmax[b // 256] + offset``.
    One float32 multiply per element, so the result is the same on every CPU. (Not
    ``bitsandbytes.functional.dequantize_4bit``: on the CPU that runs bitsandbytes' native
    kernels, which pick AVX-512 variants by CPUID themselves.)
    """
    import torch

    shape = tuple(quant_state.shape)
    n = 1
    for dim in shape:
        n *= int(dim)
    raw = packed.contiguous().view(torch.uint8).reshape(-1)
    nibbles = torch.stack((raw >> 4, raw & 0xF), dim=-1).reshape(-1)[:n].long()
    absmax = quant_state.absmax
    if quant_state.nested:
        s2 = quant_state.state2
        absmax = _blockwise(s2.code.float()[absmax.reshape(-1).long()], s2.absmax.float(), s2.blocksize)
        absmax = absmax + quant_state.offset
    values = quant_state.code.to(torch.float32)[nibbles]
    return _blockwise(values, absmax.float(), quant_state.blocksize).reshape(shape)


def _blockwise(values, absmax, blocksize: int):
    """``values[j] * absmax[j // blocksize]`` for a flat ``values``."""
    return values * absmax.repeat_interleave(int(blocksize))[: values.numel()]


_DEQUANTIZED_LINEAR4BIT = None


def _dequantized_linear4bit_class():
    """``bitsandbytes.nn.Linear4bit`` with a forward that always dequantizes (made once, on
    first use, so importing this module never imports bitsandbytes)."""
    global _DEQUANTIZED_LINEAR4BIT
    if _DEQUANTIZED_LINEAR4BIT is not None:
        return _DEQUANTIZED_LINEAR4BIT
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.nn.modules import fix_4bit_weight_quant_state_from_module

    class DequantizedLinear4bit(bnb.nn.Linear4bit):
        """A 4-bit layer computing ``linear(x, dequantize_4bit(W))`` in the compute dtype.

        The same steps as bitsandbytes' unpacked CPU path (compute-dtype choice, dequantize,
        ``torch.nn.functional.linear``), minus its CPUID switch to the packed bfloat16
        kernel; the matmul is torch's, which ``ATEN_CPU_CAPABILITY`` and MKL's settings cover.
        The dequantized weight is kept after the first call (the same tensor every call, so
        the same numbers): dequantizing every layer at every decoding step made the
        quantization view on a 30-layer model cost more than all other views together. On
        the CPU the view measures what rounding does to answers, not memory.
        """

        def forward(self, x):
            fix_4bit_weight_quant_state_from_module(self)
            if not self.compute_type_is_set:
                self.set_compute_type(x)
                self.compute_type_is_set = True
            inp_dtype = x.dtype
            if self.compute_dtype is not None:
                x = x.to(self.compute_dtype)
            cached = getattr(self, "_dequantized", None)
            if cached is None or cached.dtype != x.dtype:
                cached = dequantize_4bit(self.weight.data, self.weight.quant_state).to(x.dtype)
                self._dequantized = cached
            weight = cached
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return torch.nn.functional.linear(x, weight, bias).to(inp_dtype)

    _DEQUANTIZED_LINEAR4BIT = DequantizedLinear4bit
    return DequantizedLinear4bit


def _pin_cpu_4bit_kernels(model) -> int:
    """Make every bitsandbytes 4-bit layer of ``model`` compute as ``cpu-dequantize``.

    Swaps each ``Linear4bit``'s class (``isinstance`` still holds) before any forward
    call, so bitsandbytes never repacks a weight for its AVX-512 BF16 kernel. Returns how
    many layers were swapped.
    """
    import bitsandbytes as bnb

    cls = _dequantized_linear4bit_class()
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and not isinstance(module, cls):
            if getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False):
                raise QuantizationUnavailable("an NF4 weight was already repacked for bitsandbytes' "
                                              "AVX-512 kernel before it could be pinned")
            module.__class__ = cls
            n += 1
    return n


_PER_TOKEN_LINEAR8BIT = None


def _per_token_linear8bit_class():
    """``bitsandbytes.nn.Linear8bitLt`` whose outlier columns are each token's own (made
    once, on first use, so importing this module never imports bitsandbytes)."""
    global _PER_TOKEN_LINEAR8BIT
    if _PER_TOKEN_LINEAR8BIT is not None:
        return _PER_TOKEN_LINEAR8BIT
    import bitsandbytes as bnb
    import torch

    class PerTokenLinear8bitLt(bnb.nn.Linear8bitLt):
        """LLM.int8 with each row's outliers its own: row ``i`` computes exactly what
        bitsandbytes computes for row ``i`` alone (a one-token pass).

        bitsandbytes moves a column to the float path for every row of a pass as soon as one
        row has an outlier there (``|x| >= threshold``), so a row's result depended on the
        rows beside it: on the padding, on the batch plan, on which rows a cache already
        held, on ``--limit``. An audit's per-item record must not. The steps are
        bitsandbytes' own (float16 cast, outliers zeroed, row absmax, round, its
        ``int8_scaled_mm`` and ``int8_vectorwise_dequant``); only the outlier mask is per
        row. Inference only: a training or gradient-taking call keeps bitsandbytes' forward.
        """

        def forward(self, x):
            if self.training or (torch.is_grad_enabled() and x.requires_grad):
                return super().forward(x)
            if self.weight.CB is not None:
                self.init_8bit_state()
            CB, SCB = self.state.CB, self.state.SCB
            if CB is None or SCB is None:
                return super().forward(x)
            ops = torch.ops.bitsandbytes
            shape = x.shape
            A = x.reshape(-1, shape[-1])
            A16 = A.to(torch.float16)
            threshold = float(self.state.threshold or 0.0)
            outliers = A16.abs() >= threshold if threshold > 0 else None
            if outliers is not None and bool(outliers.any()):
                A16 = A16.masked_fill(outliers, 0)
            else:
                outliers = None
            SCA = A16.abs().amax(dim=1).float()
            CA = torch.round(A16 * (127.0 / SCA.unsqueeze(-1))).to(torch.int8)
            bias = None if self.bias is None else self.bias.to(A.dtype)
            out = ops.int8_scaled_mm.default(CA, CB, SCA, SCB, bias=bias, dtype=A.dtype)
            if outliers is not None:
                cols = outliers.any(dim=0).nonzero().view(-1)
                # Only each row's own outliers take the float path; its other entries of these
                # columns are already in its int8 product.
                sub_a = A[:, cols] * outliers[:, cols]
                sub_b = ops.int8_vectorwise_dequant.default(CB[:, cols].contiguous(), SCB)
                out = out.addmm(sub_a, sub_b.to(A.dtype).t())
            return out.reshape(*shape[:-1], CB.shape[0])

    _PER_TOKEN_LINEAR8BIT = PerTokenLinear8bitLt
    return PerTokenLinear8bitLt


def _per_token_int8_outliers(model) -> int:
    """Swap every ``Linear8bitLt`` of ``model`` to :func:`_per_token_linear8bit_class`
    (``isinstance`` still holds); returns how many."""
    import bitsandbytes as bnb

    cls = _per_token_linear8bit_class()
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt) and not isinstance(module, cls):
            module.__class__ = cls
            n += 1
    return n


_INT8_MATMUL_PINNED = False


#: Inner dimension of one exact float32 chunk: 127**2 * 1024 < 2**24 (see _exact_int8_matmul).
_EXACT_F32_CHUNK = 1024
#: id(int8 weight) -> (weakref to it, its version, its float32 copy), dropped with the weight.
#: (Keyed by id: a WeakKeyDictionary compares tensor keys with ``==``.)
_F32_COPIES: dict[int, tuple[Any, int, Any]] = {}


def _exact_int8_matmul(A, B, out=None):
    """``A @ B.T`` of int8 matrices as int32, exactly.

    In float32, over chunks of at most 1,024 inner columns: each partial sum of a chunk is
    an integer of magnitude at most ``127**2 * 1024 < 2**24``, which float32 holds exactly,
    so no step rounds and neither the summation order, nor the BLAS kernel, nor the CPU can
    change the result; the chunks add in int32. The weight's float32 copy is kept beside it
    (the same int8 tensor comes back every call), which made this 2x as fast as converting
    both sides to float64 each call, the form before (exact too: float64 holds every sum
    below ``2**53``).
    """
    import torch

    ref, version, Bf = _F32_COPIES.get(id(B), (None, None, None))
    if ref is None or ref() is not B or version != B._version:  # new, or written since
        Bf = B.to(torch.float32)
        if ref is None or ref() is not B:
            weakref.finalize(B, _F32_COPIES.pop, id(B), None)
        _F32_COPIES[id(B)] = (weakref.ref(B), B._version, Bf)
    Af = A.to(torch.float32)
    k = A.shape[-1]
    result = None
    for lo in range(0, k, _EXACT_F32_CHUNK):
        hi = min(lo + _EXACT_F32_CHUNK, k)
        part = torch.matmul(Af[..., lo:hi], Bf[:, lo:hi].t()).to(torch.int32)
        result = part if result is None else result.add_(part)
    return result if out is None else out.copy_(result)


def _pin_cpu_int8_matmul() -> None:
    """Route bitsandbytes' CPU int8 matmul (``bitsandbytes::int8_linear_matmul``) to
    :func:`_exact_int8_matmul`, once per process.

    Process-wide (an operator kernel has no per-model form), CPU only; it returns the
    exact product, which bitsandbytes' own kernels also return wherever they are correct,
    so it changes a number only where theirs would round or saturate. CUDA is untouched.
    """
    global _INT8_MATMUL_PINNED
    if _INT8_MATMUL_PINNED:
        return
    import warnings

    from bitsandbytes._ops import register_kernel

    with warnings.catch_warnings():  # "Overriding a previously registered kernel": meant
        warnings.filterwarnings("ignore", message=r"(?s).*Overriding a previously registered kernel")
        register_kernel("bitsandbytes::int8_linear_matmul", "cpu")(lambda A, B: _exact_int8_matmul(A, B))
        register_kernel("bitsandbytes::int8_linear_matmul.out", "cpu")(
            lambda A, B, out: _exact_int8_matmul(A, B, out))
    _INT8_MATMUL_PINNED = True


#: Rotary types whose frequencies change per forward call (their own forward is kept).
_DYNAMIC_ROPE = frozenset({"dynamic", "longrope"})


def _rms_norm_f64(module, hidden_states):
    """RMSNorm in float64 (transformers' own forward computes it in float32)."""
    import torch

    x = hidden_states.to(torch.float64)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)
    return module.weight.to(torch.float64) * x


def _rotary_f64(module, x, position_ids):
    """Rotary cos/sin in float64 (transformers' own forward computes them in float32)."""
    import torch

    freqs = position_ids[..., None].to(torch.float64) * module.inv_freq.to(x.device, torch.float64)
    emb = torch.cat((freqs, freqs), dim=-1)
    scale = float(getattr(module, "attention_scaling", 1.0))
    return (emb.cos() * scale).to(x.dtype), (emb.sin() * scale).to(x.dtype)


def _widen_to_float64(model) -> None:
    """Compute every float of a CPU LLM.int8 model in float64 (the int8 weights stay int8).

    LLM.int8 rounds each activation to float16 and then to int8 (and moves a column to
    the float path when it crosses the outlier threshold): steps, where a float32 rounding
    difference between CPU kernels (AVX-512 against AVX2 sums, vectorised against scalar
    ``cos``) becomes a different int8 value, and over 30 layers and 48 greedy tokens a
    different answer. Measured on the smol world before this: 20 of 40 int8 answers of one
    model changed between an AVX-512 and an AVX2 CPU. In float64 those differences are near
    1e-16, under float16's 1e-3 steps by 13 orders, so the steps land alike on every CPU.
    Norms and rotary embeddings, which transformers computes in float32 whatever the model's
    dtype, get float64 forwards; a model with another kind of norm (one whose forward casts
    to float32 on its own) keeps it, and is only as reproducible as that cast allows.
    """
    import functools

    import torch

    for param in model.parameters():
        if param.is_floating_point():
            param.data = param.data.to(torch.float64)
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_floating_point():
                module._buffers[name] = buf.to(torch.float64)
        kind = type(module).__name__
        if (kind.endswith("RMSNorm") and hasattr(module, "variance_epsilon")
              and isinstance(getattr(module, "weight", None), torch.Tensor)):
            module.forward = functools.partial(_rms_norm_f64, module)
        elif (kind.endswith("RotaryEmbedding") and hasattr(module, "inv_freq")
              and getattr(module, "rope_type", "default") not in _DYNAMIC_ROPE):
            module.forward = functools.partial(_rotary_f64, module)


def _unpack_cpu_4bit_kernels(model) -> None:
    """Keep bitsandbytes' own 4-bit layers off its packed AVX-512 BF16 kernel (the
    ``bitsandbytes-unpacked`` debugging choice of :func:`quantized_kernel_path`)."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False  # read by Linear4bit.forward


class _DropInt8CastWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def _quiet_int8_cast_warning() -> None:
    """Silence bitsandbytes' per-matmul notice that float32 inputs are cast to float16.

    Expected for LLM.int8 and logged on every forward call: thousands of identical lines
    would drown the audit's own output.
    """
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _DropInt8CastWarning) for f in logger.filters):
        logger.addFilter(_DropInt8CastWarning())


def _smoke_forward(model, quant_mode: str, device) -> None:
    """Run one two-token forward pass, or raise :class:`QuantizationUnavailable` with why.

    A quantized kernel can load and still fail on the first forward call: bitsandbytes
    picks its kernels then, not at load (unpinned, NF4 on a CPU with AVX-512 BF16 repacks
    each weight then and raises for a layer shape its packed kernel cannot tile, e.g.
    ``shape '[32, 0]' is invalid``). Failing here turns that into a view's skip reason
    instead of a crash mid-audit.
    """
    import torch

    model.eval()  # bitsandbytes repacks NF4 for the CPU only in eval mode, as the audit runs
    try:
        with torch.no_grad():
            ids = torch.zeros((1, 2), dtype=torch.long, device=device)
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as e:
        raise QuantizationUnavailable(
            f"{quant_mode} quantization loaded but its bitsandbytes kernel failed on {device} "
            f"(CPU capability {torch.backends.cpu.get_cpu_capability()}; {type(e).__name__}: {e}). "
            "Fix: audit at full precision here, or on a machine whose bitsandbytes backend runs "
            "this model's layer shapes."
        ) from e


def _from_pretrained(directory: Path, spec: ModelSpec, device, dtype: str, quant_mode):
    import torch
    from transformers import AutoModelForCausalLM

    _check_config(directory, spec)
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, dtype),
        "trust_remote_code": spec.trust_remote_code,
        # False only for a pickle-only directory, which _weight_files has already vetted
        # against the allow_pickle opt-in.
        "use_safetensors": any(directory.glob("*.safetensors")),
    }
    if quant_mode is not None:
        kwargs["quantization_config"] = _quantization_config(quant_mode, getattr(torch, dtype))
        kwargs["device_map"] = {"": str(device)}
        try:
            model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
        except (ModelLoadError, QuantizationUnavailable):
            raise
        except Exception as e:
            # Files were vetted before this point, so a failure here is bitsandbytes (or the
            # platform) refusing the mode: report it as unavailable, not as a user error.
            raise QuantizationUnavailable(
                f"{quant_mode} quantization failed on {device} ({type(e).__name__}: {e})"
            ) from e
        kernel_path = quantized_kernel_path(quant_mode, device)
        if kernel_path == "cpu-dequantize":
            _pin_cpu_4bit_kernels(model)
        elif kernel_path == "cpu-bitsandbytes" and quant_mode == "nf4":
            _unpack_cpu_4bit_kernels(model)
        elif kernel_path == "cpu-exact-int8-f64-per-token":
            _pin_cpu_int8_matmul()
            _widen_to_float64(model)
            _per_token_int8_outliers(model)
        _smoke_forward(model, quant_mode, device)
        return model
    model = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    return model.to(device)


def load_model(spec: ModelSpec, *, hash_cache: Path | None | bool = True) -> LoadedModel:
    """Load a checkpoint as ``spec`` says and fingerprint it.

    Args:
        spec: what to load.
        hash_cache: JSON file caching file hashes; ``True`` uses
            ``<cache dir>/file_hashes.json`` (see :func:`default_cache_dir`), ``None`` or
            ``False`` disables it.

    Returns:
        The model in eval mode (an adapter merged into its base for speed), its tokenizer
        and fingerprint.

    Raises:
        ModelLoadError: the source is missing, has no tokenizer, only pickle weights without
            ``allow_pickle``, or an invalid dtype/device/quantization.
        QuantizationUnavailable: quantization was asked for and cannot run here.
    """
    if spec.quantization not in QUANTIZATION_MODES:
        raise ModelLoadError(
            f"quantization {spec.quantization!r} is not supported. Use none, int8 or nf4."
        )
    if hash_cache is True:
        hash_cache = default_cache_dir() / "file_hashes.json"
    elif hash_cache is False:
        hash_cache = None
    device = _resolve_device(spec.device)
    dtype = _resolve_dtype(spec.dtype, device)
    kernel_path = quantized_kernel_path(spec.quantization, device)

    directory = resolve_source(spec.source, allow_pickle=spec.allow_pickle)
    adapter_cfg_file = directory / "adapter_config.json"
    if adapter_cfg_file.is_file():
        return _load_adapter(spec, directory, adapter_cfg_file, device, dtype, hash_cache, kernel_path)

    weights = _weight_files(
        directory, adapter=False, allow_pickle=spec.allow_pickle, source=spec.source
    )
    tokenizer = _load_tokenizer(directory, spec)
    fingerprint = compute_fingerprint(
        [("model", w) for w in weights] + config_files(directory, "model"),
        directory,
        spec.quantization,
        dtype=dtype,
        hash_cache=hash_cache,
        kernel_path=kernel_path,
    )
    model = _from_pretrained(directory, spec, device, dtype, spec.quantization)
    model.eval()
    return LoadedModel(model, tokenizer, spec, fingerprint, _model_device(model), dtype, directory,
                       kernel_path)


def _load_adapter(spec, directory, adapter_cfg_file, device, dtype, hash_cache,
                  kernel_path=None) -> LoadedModel:
    """A PEFT adapter on top of its base, merged in full precision.

    With quantization the merged weights are written to a temporary directory and loaded
    from there quantized: rounding must apply to the merged weights the candidate really
    has, not to the base with an unrounded adapter on top.
    """
    try:
        adapter_cfg = json.loads(adapter_cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"{adapter_cfg_file}: unreadable adapter config ({type(e).__name__}: {e}). Fix: "
            "restore the file that PeftModel.save_pretrained wrote."
        ) from e
    read = adapter_cfg.get("base_model_name_or_path") if isinstance(adapter_cfg, dict) else None
    base_source = spec.base or read
    if not base_source or not isinstance(base_source, str):
        raise ModelLoadError(
            f"{adapter_cfg_file}: names no base model (base_model_name_or_path is "
            f"{read!r}). Fix: pass the base with --base-model (ModelSpec(base=...))."
        )
    adapter_weights = _weight_files(
        directory, adapter=True, allow_pickle=spec.allow_pickle, source=spec.source
    )
    if spec.base:  # the user's own argument: resolved like any model source
        base_dir = resolve_source(base_source, allow_pickle=spec.allow_pickle)
        base_weights = _weight_files(
            base_dir, adapter=False, allow_pickle=spec.allow_pickle, source=base_source
        )
    else:
        base_source = _adapter_base_source(read, directory)
        try:
            base_dir = resolve_source(base_source, allow_pickle=spec.allow_pickle,
                                      local=Path(base_source).is_absolute())
            base_weights = _weight_files(
                base_dir, adapter=False, allow_pickle=spec.allow_pickle, source=base_source
            )
            _check_config(base_dir, spec)
        except ModelLoadError as e:
            raise _base_error(adapter_cfg_file, read, base_source, e) from e
    tok_dir = directory if _has_tokenizer(directory) else base_dir
    tokenizer = _load_tokenizer(tok_dir, spec, also_checked=directory)
    fingerprint = compute_fingerprint(
        [("base", w) for w in base_weights]
        + config_files(base_dir, "base")
        + [("adapter", w) for w in adapter_weights]
        + [("adapter", adapter_cfg_file)],
        tok_dir,
        spec.quantization,
        dtype=dtype,
        hash_cache=hash_cache,
        kernel_path=kernel_path,
    )
    try:
        from peft import PeftModel
    except ImportError as e:
        raise ModelLoadError(
            f"{spec.source} is a PEFT adapter, which needs peft. Fix: pip install 'peft>=0.11'"
        ) from e

    if spec.quantization is None:
        base = _from_pretrained(base_dir, spec, device, dtype, None)
        model = PeftModel.from_pretrained(base, directory).merge_and_unload()
        model.eval()
        return LoadedModel(
            model, tokenizer, spec, fingerprint, _model_device(model), dtype, directory
        )

    import torch

    # Fail fast (before the full-precision merge) when bitsandbytes is absent.
    _quantization_config(spec.quantization, getattr(torch, dtype))
    cpu_spec = dataclasses.replace(spec, quantization=None)
    base = _from_pretrained(base_dir, cpu_spec, torch.device("cpu"), dtype, None)
    merged = PeftModel.from_pretrained(base, directory).merge_and_unload()
    with tempfile.TemporaryDirectory(prefix="unlearn-audit-merged-") as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        del merged, base
        model = _from_pretrained(Path(tmp), spec, device, dtype, spec.quantization)
    model.eval()
    return LoadedModel(model, tokenizer, spec, fingerprint, _model_device(model), dtype, directory,
                       kernel_path)


def _adapter_base_source(read: str, adapter_dir: Path) -> str:
    """Where an adapter's ``base_model_name_or_path`` points, as a model source.

    PEFT itself (0.21: ``AutoPeftModel.from_pretrained`` passes the value unchanged to
    ``from_pretrained``; ``save_pretrained`` writes the base's ``name_or_path`` as it was
    given) resolves a relative path against the working directory, so the same adapter
    would load a different base, or none, depending on where the audit runs. Here a
    relative value that names a directory relative to the adapter's own directory is that
    directory (an adapter saved beside its base, ``../base``, loads from anywhere); any
    other value without a path shape (``org/name``) stays a hub id; an absolute path is
    used as it is. A relative path found nowhere beside the adapter is an error (see
    :func:`_base_error`), never a guess against the working directory.
    """
    path = Path(read).expanduser()
    if path.is_absolute():
        return str(path)
    beside = adapter_dir / path
    if beside.is_dir() or _looks_like_path(read):
        return str(beside.resolve())
    return read  # a hub id


def _base_error(cfg_file: Path, read: str, resolved: str, cause: ModelLoadError) -> ModelLoadError:
    """The adapter's base failed to load: say which file named it, the value, where it led."""
    where = (f"resolved against the adapter's directory to {resolved}" if resolved != read
             else "read as a hub id")
    return ModelLoadError(
        f"{cfg_file}: its base_model_name_or_path {read!r} ({where}) cannot be loaded: {cause} "
        "Fix: edit base_model_name_or_path in that adapter_config.json (a path relative to "
        "the adapter's directory, an absolute path or a hub id), or pass the base with "
        "--base-model (ModelSpec(base=...))."
    )


def _load_tokenizer(directory: Path, spec: ModelSpec, also_checked: Path | None = None):
    if not _has_tokenizer(directory):
        where = f"{directory}" + (f" or {also_checked}" if also_checked else "")
        raise ModelLoadError(
            f"{spec.source}: no tokenizer files in {where} (looked for "
            f"{', '.join(_TOKENIZER_MARKERS)}). Fix: save the tokenizer next to the weights "
            "(`AutoTokenizer.from_pretrained(BASE).save_pretrained(DIR)`)."
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, trust_remote_code=spec.trust_remote_code)
    except Exception as e:
        raise ModelLoadError(
            f"{spec.source}: the tokenizer in {directory} failed to load ({type(e).__name__}: {e})."
        ) from e


def _model_device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        import torch

        return torch.device("cpu")
