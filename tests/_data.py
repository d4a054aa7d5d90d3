"""Paths of the data the tests read, all inside the repository (no test reads ../shared)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# TOFU's own per-item eval logs of Llama-2-7b (full, retain90); see its README.
TOFU_LOGS = REPO / "fixtures" / "tofu_logs"
