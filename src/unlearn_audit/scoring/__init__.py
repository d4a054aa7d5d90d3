"""Scoring: pure functions that turn model outputs into per-item records and metrics.

Scorers never touch a model: TOFU metrics, the novel-content leak scorer, ROUGE,
statistics (Wilson, bootstrap, pass@k), readers for stored eval logs, and the tofu view's
model-free side (its records read back and written as logs, its intervals' bootstraps).
"""
