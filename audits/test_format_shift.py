"""format_shift: does asking in another format (fill-in, completion, choice, JSON, biography) bring it back?

Definition: src/unlearn_audit/views/format_shift.py; thresholds: reference_results/gates.yaml.
"""


def test_format_shift(audit, model):
    audit.check("format_shift", model)
