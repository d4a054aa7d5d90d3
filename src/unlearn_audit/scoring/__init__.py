"""Scoring: pure functions that turn model outputs into per-item records and metrics.

Scorers never touch a model: TOFU metrics, the novel-content leak scorer, ROUGE,
statistics (Wilson, bootstrap, pass@k) and readers for stored eval logs.
"""
