"""likelihood: is the gold answers' likelihood suppressed relative to TOFU-full?

Definition: src/unlearn_audit/views/likelihood.py; thresholds: reference_results/gates.yaml.
"""


def test_likelihood(audit, model):
    audit.check("likelihood", model)
