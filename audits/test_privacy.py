"""privacy: does the model still give away that it saw the forget set? (membership inference, privleak)

Definition: src/unlearn_audit/views/privacy.py; thresholds: reference_results/gates.yaml.
"""


def test_privacy(audit, model):
    audit.check("privacy", model)
