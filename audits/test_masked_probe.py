"""masked_probe: can a linear probe on the hidden states still predict the forgotten tokens?

Definition: src/unlearn_audit/views/masked_probe.py; thresholds: reference_results/gates.yaml.
"""


def test_masked_probe(audit, model):
    audit.check("masked_probe", model)
