"""All model access in one place: loading, prompt rendering, the batched cached engine.

Views never import torch, transformers or any other model library (a test parses every
module under ``views/`` to check it): they build requests (plain values, see
:mod:`unlearn_audit.model._types`) and ask a :class:`Backend`, the contract of
:mod:`unlearn_audit.model._backend`, which the Hugging Face :class:`Engine` implements:
scoring, generation, hidden states and the logit lens, probes
(:mod:`unlearn_audit.model._lens`), fine-tuned and quantized copies.
"""

from unlearn_audit.model._backend import Backend
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
    FinetuneRequest,
    GenRequest,
    ProbeAnswer,
    ProbeFit,
    ProbeRequest,
    Prompt,
    ScoreRequest,
    TokenScores,
)

__all__ = [
    "BackendUnavailable",
    "CACHE_VERSION",
    "Backend",
    "DEFAULT_DATE_STRING",
    "DEFAULT_SYSTEM_PROMPT",
    "ChatFormat",
    "Engine",
    "FinetuneRequest",
    "GenRequest",
    "LoadedModel",
    "ModelLoadError",
    "ModelSpec",
    "OpenUnlearningChatFormat",
    "OpenUnlearningPlainFormat",
    "PlainFormat",
    "ProbeAnswer",
    "ProbeFit",
    "ProbeRequest",
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
