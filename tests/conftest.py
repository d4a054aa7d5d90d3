"""Shared test configuration.

``pytester`` runs whole pytest sessions of the audit plugin; ``world_ctx`` is one audit
context over the tiny world for the slow known-answer tests of every view module.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def world_ctx(tmp_path_factory):
    """An :class:`AuditContext` over the tiny world's models and data.

    It uses the default cache, the one ``pytest audits`` uses: engine results are keyed by
    model fingerprint and request, so `pytest tests audits` computes each answer once, and
    one session-wide context memoises each (view, model) result across test modules.
    """
    from unlearn_audit.context import AuditConfig, AuditContext
    from unlearn_audit.world import FIXTURES_DIR, default_cache_dir, default_models

    tmp = tmp_path_factory.mktemp("world")
    config = AuditConfig(dataset=str(FIXTURES_DIR), cache_dir=default_cache_dir(),
                         report_dir=tmp / "report", progress=False)
    return AuditContext(config, default_models())


@pytest.fixture(autouse=True)
def _isolated_views_and_summary(monkeypatch):
    """Every test gets its own copy of the view registry, so a view a test (or a pytester
    run's fake views) registers never reaches the next test; and none appends to a real
    ``$GITHUB_STEP_SUMMARY`` (a test that means to sets it itself)."""
    from unlearn_audit.views import _base

    monkeypatch.setattr(_base, "_REGISTRY", dict(_base._REGISTRY))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture(autouse=True)
def _imported_before_pytester(request):
    """Import every view module, and the report writer's lazy dependencies, before a
    pytester run of the plugin.

    Views are imported on first use (the lazy registry), so an in-process pytester run
    would import them, numpy and scipy included, and pytester then drops every module the
    run imported; numpy's C extensions cannot be imported twice in one process. Importing
    them here, before pytester takes its snapshot of ``sys.modules``, keeps them loaded
    (and spares each run importing matplotlib afresh).
    """
    if "pytester" in request.fixturenames:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import tabulate  # noqa: F401
        import yaml  # noqa: F401

        from unlearn_audit.views import BUILTIN_VIEWS, view_class

        for name in BUILTIN_VIEWS:
            view_class(name)


def _realtok(build):
    """Run a realtok build, skipping (with pip's reason) where the registry is unreachable."""
    from unlearn_audit.realtok import RealTokUnavailable

    try:
        return build()
    except RealTokUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def realtok_llama_untrained():
    """A random-weight Llama-3.2-shaped directory (real tokenizer, template, configs).

    Untrained, it answers with runs of newlines: the case a per-model sanity check refuses.
    """
    from unlearn_audit.realtok import build_family_model

    return _realtok(lambda: build_family_model("llama-3.2"))


@pytest.fixture(scope="session")
def realtok_llama_tuned():
    """Llama-3.2-shaped ``full``, ``retain`` and ``candidate`` directories that answer in
    words (briefly fine-tuned on the tiny world's questions): name -> directory."""
    from unlearn_audit.realtok import build_tuned_llama

    return _realtok(build_tuned_llama)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests: two intra-op threads only add
    synchronisation on such small matrices, and on a loaded two-core machine their spinning
    makes each matmul ~100x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama checkpoint (``_tiny.save_checkpoint``), one per test module."""
    from _tiny import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny(tiny_dir, one_thread):
    """:data:`tiny_dir` loaded on the CPU, uncached file hashes, on one torch thread."""
    from unlearn_audit.model import ModelSpec, load_model

    return load_model(ModelSpec(str(tiny_dir), "tiny", device="cpu"), hash_cache=None)
