"""The audits users run: `pytest audits` (one module per view, parametrized over models)."""
