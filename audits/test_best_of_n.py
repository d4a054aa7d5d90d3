"""best_of_n: does sampling N answers bring it back?

Definition: src/unlearn_audit/views/best_of_n.py; thresholds: reference_results/gates.yaml.
"""


def test_best_of_n(audit, model):
    audit.check("best_of_n", model)
