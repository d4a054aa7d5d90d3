"""All model access in one place: loading, prompt rendering, the batched cached engine.

Views never import torch or transformers themselves; they build requests (see
:mod:`unlearn_audit.model._types`) and ask an :class:`Engine`.
"""

from unlearn_audit.model._cache import CACHE_VERSION, ResultCache, default_cache_dir
from unlearn_audit.model._engine import Engine
from unlearn_audit.model._format import (
    DEFAULT_DATE_STRING,
    DEFAULT_SYSTEM_PROMPT,
    ChatFormat,
    OpenUnlearningChatFormat,
    OpenUnlearningPlainFormat,
    PlainFormat,
    PromptFormat,
    make_format,
)
from unlearn_audit.model._load import (
    LoadedModel,
    ModelLoadError,
    ModelSpec,
    QuantizationUnavailable,
    load_model,
)
from unlearn_audit.model._train import finetune
from unlearn_audit.model._types import (
    BackendUnavailable,
    GenRequest,
    Prompt,
    ScoreRequest,
    TokenScores,
)

__all__ = [
    "BackendUnavailable",
    "CACHE_VERSION",
    "DEFAULT_DATE_STRING",
    "DEFAULT_SYSTEM_PROMPT",
    "ChatFormat",
    "Engine",
    "GenRequest",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "OpenUnlearningChatFormat",
    "OpenUnlearningPlainFormat",
    "PlainFormat",
    "Prompt",
    "PromptFormat",
    "QuantizationUnavailable",
    "ResultCache",
    "ScoreRequest",
    "TokenScores",
    "default_cache_dir",
    "finetune",
    "load_model",
    "make_format",
]
