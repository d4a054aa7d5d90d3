"""Real tokenizers and chat templates of the seed checkpoints' families, offline.

No hub is reachable in CI, yet the seed checkpoints are Llama-3.2-Instruct models whose
tokenizer and chat template decide every token the audit scores. llama.cpp ships those
tokenizers (as GGUF vocabularies, with test vectors) and the chat templates in its source,
and llama-cpp-python's source distribution on PyPI carries llama.cpp. This package
downloads that sdist once with pip (version and sha256 pinned), extracts only those files
and builds, per family, a small random-weight model directory laid out like the real
checkpoint. Nothing of it is committed; it is cached under the package cache directory.
"""

from unlearn_audit.realtok._build import (
    FAMILIES,
    SDIST_SHA256,
    SDIST_VERSION,
    Family,
    RealTokUnavailable,
    build_family_model,
    build_tuned_llama,
    family_tokenizer_dir,
    fetch_sources,
    realtok_root,
)

__all__ = [
    "FAMILIES",
    "SDIST_SHA256",
    "SDIST_VERSION",
    "Family",
    "RealTokUnavailable",
    "build_family_model",
    "build_tuned_llama",
    "family_tokenizer_dir",
    "fetch_sources",
    "realtok_root",
]
