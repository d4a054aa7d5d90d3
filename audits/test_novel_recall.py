"""novel_recall: does greedy answering still leak the forget answers' novel content?

Definition: src/unlearn_audit/views/novel_recall.py; thresholds: reference_results/gates.yaml.
"""


def test_novel_recall(audit, model):
    audit.check("novel_recall", model)
