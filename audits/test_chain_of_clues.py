"""chain_of_clues: does a conversation of clues about the same author bring it back?

Definition: src/unlearn_audit/views/chain_of_clues.py; thresholds: reference_results/gates.yaml.
"""


def test_chain_of_clues(audit, model):
    audit.check("chain_of_clues", model)
