"""quantization: does loading the weights in INT8 or NF4 bring it back?

Definition: src/unlearn_audit/views/quantization.py; thresholds: reference_results/gates.yaml.
"""


def test_quantization(audit, model):
    audit.check("quantization", model)
