"""Repository root conftest: deliberately empty.

The audit plugin (``unlearn_audit.plugin``) is registered through the package's ``pytest11``
entry point (``pip install -e .``), so ``pytest audits`` and ``pytest tests`` need nothing
here. Fixtures shared by every test directory would go here; keep it small.
"""
