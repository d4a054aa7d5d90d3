"""tofu: the TOFU benchmark numbers: forget quality, model utility and the forget-set numbers behind them

Definition: src/unlearn_audit/views/tofu.py; thresholds: reference_results/gates.yaml.
"""


def test_tofu(audit, model):
    audit.check("tofu", model)
