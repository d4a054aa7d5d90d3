"""``unlearn-audit rescore`` of open-unlearning's ``TOFU_EVAL.json`` gives its ``TOFU_SUMMARY.json``.

The logs are built here from TOFU's real per-item logs (Llama-2-7b full and retain90) with
open-unlearning's own formulas, written out from its source
(``src/evals/metrics/memorization.py``, ``privacy.py::ks_test``, ``utility.py::hm_aggregate``
at locuslab/open-unlearning HEAD): per-item ``prob = exp(-avg_loss)``, truth ratio
``wrong / (correct + 1e-10)``, forget score ``min(R, 1 / (R + 1e-10))``, normalised
probability ``correct / (correct + sum wrong + 1e-10)``, KS test on the stored scores,
harmonic mean. The rescore must give every summary number and every model-utility
component from the per-item values alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from _data import TOFU_LOGS
from unlearn_audit.commands.rescore import compat_for, rescore
from unlearn_audit.scoring.logs import LEGACY_FILES, OPEN_UNLEARNING_METRICS, read_logs
from unlearn_audit.scoring.tofu import SplitScores, tofu_values, truth_ratio, truth_ratio_score

FULL, RETAIN = "llama2-7b_full_wd0.01", "llama2-7b_retain90_wd0.01"
EPS = 1e-10
PREFIX = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}


@pytest.fixture(scope="module")
def real_logs() -> Path:
    """TOFU's real per-item logs, committed under fixtures/tofu_logs."""
    assert (TOFU_LOGS / FULL).is_dir() and (TOFU_LOGS / RETAIN).is_dir(), f"{TOFU_LOGS} lacks {FULL}/ or {RETAIN}/"
    return TOFU_LOGS


def _entry(agg, by_index=None) -> dict:
    out = {"agg_value": agg}
    if by_index is not None:
        out["value_by_index"] = by_index
    return out


def _prob_entries(losses: dict, idx: list[str], many: bool = False) -> dict:
    """memorization.py::evaluate_probability's per-item entries: prob = exp(-avg_loss)."""
    if many:
        return {i: {"prob": [math.exp(-x) for x in losses[i]], "avg_loss": losses[i]} for i in idx}
    return {i: {"prob": math.exp(-losses[i]), "avg_loss": losses[i]} for i in idx}


def open_unlearning_eval(model_dir: Path, retain_eval: dict | None) -> dict:
    """open-unlearning's ``TOFU_EVAL.json`` for one model, computed as its code computes it."""
    out: dict = {}
    for split, p in PREFIX.items():
        d = json.loads((model_dir / LEGACY_FILES[split]).read_text())
        idx = list(d["avg_gt_loss"])

        gt = _prob_entries(d["avg_gt_loss"], idx)
        pert = _prob_entries(d["average_perturb_loss"], idx, many=True)
        # probability: mean of the per-item probs (aggregate_to_1D, then np.mean).
        out[f"{p}_Q_A_Prob"] = _entry(np.mean([gt[i]["prob"] for i in idx]), gt)
        out[f"{p}_Q_A_PERT_Prob"] = _entry(
            np.mean([np.mean(pert[i]["prob"]) for i in idx]), pert
        )
        correct = gt
        if split in ("forget", "retain"):
            correct = _prob_entries(d["avg_paraphrased_loss"], idx)
            out[f"{p}_Q_A_PARA_Prob"] = _entry(np.mean([correct[i]["prob"] for i in idx]), correct)
        rouge = {
            i: {
                "rouge1_recall": d["rouge1_recall"][i],
                "rougeL_f1": 0.0,
                "rougeL_recall": d["rougeL_recall"][i],
                "input": d["generated_text"][i][0],
                "ground_truth": d["generated_text"][i][2],
                "generation": d["generated_text"][i][1],
            }
            for i in idx
        }
        out[f"{p}_Q_A_ROUGE"] = _entry(np.mean([rouge[i]["rougeL_recall"] for i in idx]), rouge)
        # truth_ratio: losses averaged (aggregate_to_1D), then exp, then wrong/(correct+eps).
        c = np.exp(-np.array([correct[i]["avg_loss"] for i in idx]))
        w = np.exp(-np.array([np.mean(pert[i]["avg_loss"]) for i in idx]))
        tr = w / (c + EPS)
        if split == "forget":
            agg = np.mean(np.minimum(tr, 1 / (tr + EPS)))  # closer_to_1_better
            key = "forget_truth_ratio"
        else:
            agg = np.mean(np.maximum(0, 1 - tr))  # true_better
            key = f"{p}_Truth_Ratio"
        out[key] = _entry(agg, {i: {"score": float(r)} for i, r in zip(idx, tr, strict=True)})
        if split in ("real_authors", "world_facts"):
            # probability_w_options: correct / (correct + sum(wrong) + eps).
            cp = np.array([gt[i]["prob"] for i in idx])
            wp = np.array([np.sum(pert[i]["prob"]) for i in idx])
            out[f"{p}_Q_A_Prob_normalised"] = _entry(np.mean(cp / (cp + wp + EPS)))
    components = [
        out[k]["agg_value"]
        for k in (
            "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio",
            "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
            "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
        )
    ]
    out["model_utility"] = _entry(stats.hmean(components))  # hm_aggregate
    fq = None
    if retain_eval is not None:  # ks_test on the stored per-item scores
        own = [v["score"] for v in out["forget_truth_ratio"]["value_by_index"].values()]
        ref = [v["score"] for v in retain_eval["forget_truth_ratio"]["value_by_index"].values()]
        fq = stats.ks_2samp(own, ref).pvalue
    out["forget_quality"] = _entry(fq)
    return out


def summary(eval_logs: dict) -> dict:
    """open-unlearning's ``TOFU_SUMMARY.json``: the configured metrics' ``agg_value``."""
    keys = ("forget_truth_ratio", "forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
            "model_utility")
    return {k: float(eval_logs[k]["agg_value"]) for k in keys if eval_logs[k]["agg_value"] is not None}


def test_rescore_reproduces_open_unlearning_summary(real_logs, tmp_path):
    retain_eval = open_unlearning_eval(real_logs / RETAIN, None)
    retain_eval["forget_quality"] = _entry(1.0)
    full_eval = open_unlearning_eval(real_logs / FULL, retain_eval)
    for name, data in (("retain", retain_eval), ("full", full_eval)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "TOFU_EVAL.json").write_text(json.dumps(data))

    logs, numbers = rescore(tmp_path / "full", retain_logs=tmp_path / "retain")
    assert compat_for(logs) == "open-unlearning"
    want = summary(full_eval)
    assert set(want) == {"forget_truth_ratio", "forget_quality", "forget_Q_A_Prob",
                         "forget_Q_A_ROUGE", "model_utility"}
    # The Llama-2 full model remembers the forget set: a low forget quality.
    assert want["forget_quality"] < 1e-5 and 0.5 < want["model_utility"] < 0.7
    for ours, theirs in OPEN_UNLEARNING_METRICS.items():
        assert numbers[ours].value == pytest.approx(
            float(full_eval[theirs]["agg_value"]), rel=1e-12, abs=0
        ), ours
    got = {OPEN_UNLEARNING_METRICS[k]: v.value for k, v in numbers.items()
           if k in OPEN_UNLEARNING_METRICS}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=0), key


def test_rescore_cli_names_the_compat_mode(real_logs, tmp_path, capsys):
    import argparse

    from unlearn_audit.commands import rescore as cmd

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "TOFU_EVAL.json").write_text(
        json.dumps(open_unlearning_eval(real_logs / FULL, None))
    )
    args = argparse.Namespace(logdir=str(tmp_path / "full"), retain_logs=None, json=False,
                              compat="auto")
    assert cmd.run(args) == 0
    assert "compat: open-unlearning" in capsys.readouterr().out
    assert compat_for(read_logs(real_logs / FULL)) == "none"  # TOFU's logs: TOFU's formulas


def _tiny_split(true_nll, pert_nll) -> SplitScores:
    return SplitScores(paraphrased_mean_nll=true_nll, perturbed_mean_nll=pert_nll)


def test_epsilons_matter_when_probabilities_are_tiny():
    """open-unlearning's 1e-10 dominates a true answer of probability ~1e-13: its forget
    score then differs from TOFU's exact form, and each mode computes its own."""
    true_nll = np.array([30.0, 0.5])
    pert_nll = np.array([[31.0, 29.0], [1.0, 2.0]])
    exact = truth_ratio(true_nll, pert_nll)
    ou = truth_ratio(true_nll, pert_nll, compat="open-unlearning")
    np.testing.assert_allclose(exact, np.exp(true_nll - pert_nll.mean(axis=1)), rtol=1e-12)
    p_true, p_false = np.exp(-true_nll), np.exp(-pert_nll.mean(axis=1))
    np.testing.assert_allclose(ou, p_false / (p_true + 1e-10), rtol=1e-12)
    assert ou[0] < 0.01 < 0.9 < exact[0]  # the epsilon swamps p_true ~ 9e-14
    s_ou = truth_ratio_score(ou, on_forget=True, compat="open-unlearning")
    s_exact = truth_ratio_score(exact, on_forget=True)
    assert s_ou == pytest.approx(np.mean(np.minimum(ou, 1 / (ou + 1e-10))), rel=1e-12)
    assert abs(s_ou - s_exact) > 0.4
    split = {"forget": _tiny_split(true_nll, pert_nll)}
    assert tofu_values(split, compat="open-unlearning")["tofu.forget_truth_ratio"] == s_ou
    assert tofu_values(split)["tofu.forget_truth_ratio"] == s_exact


def test_prob_mean_aggregator_is_true_share():
    true_nll, pert_nll = np.array([0.1, 2.0]), np.array([[1.0, 3.0], [0.5, 0.5]])
    share = truth_ratio(true_nll, pert_nll, compat="open-unlearning", aggregator="prob_mean")
    p_true, p_false = np.exp(-true_nll), np.exp(-pert_nll.mean(axis=1))
    np.testing.assert_allclose(share, p_true / (p_true + p_false + 1e-10), rtol=1e-12)
    assert truth_ratio_score(share, on_forget=True, aggregator="prob_mean") == pytest.approx(
        share.mean(), rel=1e-12
    )
    with pytest.raises(ValueError, match="compat='open-unlearning'"):
        truth_ratio(true_nll, pert_nll, aggregator="prob_mean")
    with pytest.raises(ValueError, match="--compat 'ou'"):
        tofu_values({"forget": _tiny_split(true_nll, pert_nll)}, compat="ou")


def test_open_unlearning_averages_the_probabilities_it_stored():
    """Its probability metrics average the float32 ``prob`` it wrote, not exp(-avg_loss)."""
    nll = np.array([0.5, 1.0])
    stored = np.exp(-nll).astype(np.float32).astype(np.float64)  # what its JSON holds
    pert_nll = np.array([[1.0, 2.0], [0.5, 3.0]])
    pert_stored = np.exp(-pert_nll).astype(np.float32).astype(np.float64)
    splits = {
        "retain": SplitScores(gt_mean_nll=nll, gt_prob=stored),
        "real_authors": SplitScores(
            gt_mean_nll=nll, perturbed_mean_nll=pert_nll, gt_prob=stored, perturbed_prob=pert_stored
        ),
    }
    ou = tofu_values(splits, compat="open-unlearning")
    assert ou["tofu.retain_prob"] == np.mean(stored)
    want = np.mean(stored / (stored + pert_stored.sum(axis=1) + 1e-10))
    assert ou["tofu.real_authors_prob"] == want
    exact = tofu_values(splits)
    assert exact["tofu.retain_prob"] == pytest.approx(np.mean(np.exp(-nll)), rel=1e-15)
    assert exact["tofu.retain_prob"] != ou["tofu.retain_prob"]


OU_OUTPUT = Path(__file__).resolve().parents[1] / "fixtures" / "open_unlearning_tiny"


def test_rescore_of_open_unlearnings_own_output_gives_its_summary():
    """Its evaluator's real TOFU_EVAL.json (fixtures/open_unlearning_tiny/README.md) rescored
    gives its TOFU_SUMMARY.json bit for bit, and every model-utility component."""
    logs, numbers = rescore(OU_OUTPUT / "full", retain_logs=OU_OUTPUT / "retain")
    assert compat_for(logs) == "open-unlearning"
    want = json.loads((OU_OUTPUT / "full" / "TOFU_SUMMARY.json").read_text())
    evals = json.loads((OU_OUTPUT / "full" / "TOFU_EVAL.json").read_text())
    for ours, theirs in OPEN_UNLEARNING_METRICS.items():
        assert numbers[ours].value == evals[theirs]["agg_value"], ours
        if theirs in want:
            assert numbers[ours].value == want[theirs], ours
    assert 0 < want["forget_quality"] < 1e-5  # full vs retain: told apart
    # TOFU's exact forms, forced, miss their float32 probabilities by ~1e-9 only.
    _, exact = rescore(OU_OUTPUT / "full", retain_logs=OU_OUTPUT / "retain", compat="none")
    assert exact["tofu.forget_prob"].value != want["forget_Q_A_Prob"]
    assert exact["tofu.forget_prob"].value == pytest.approx(want["forget_Q_A_Prob"], rel=1e-7)
