"""rtt: can a little fine-tuning on half the forget set bring back the other half?

Definition: src/unlearn_audit/views/rtt.py; thresholds: reference_results/gates.yaml.
"""


def test_rtt(audit, model):
    audit.check("rtt", model)
