"""Stored-log readers and ``unlearn-audit rescore``, on the real TOFU logs and on tiny ones.

The real logs (TOFU's own per-item eval logs of Llama-2-7b full / retain90) are committed
under ``fixtures/tofu_logs`` (see its README), so every clone runs these tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import hmean, ks_2samp

from _data import TOFU_LOGS
from unlearn_audit.commands import rescore as rescore_cmd
from unlearn_audit.scoring.logs import (
    LEGACY_FILES,
    LogFormatError,
    detect_format,
    read_logs,
    read_retain_truth_ratios,
)
from unlearn_audit.scoring.rouge import rouge_recall
from unlearn_audit.scoring.tofu import (
    COMPONENT_NAMES,
    HEADLINE_NAMES,
    normalized_probability,
    tofu_values,
)

FULL, RETAIN = "llama2-7b_full_wd0.01", "llama2-7b_retain90_wd0.01"


def _tofu_logs_root() -> Path:
    return TOFU_LOGS


@pytest.fixture(scope="module")
def real_logs() -> Path:
    root = _tofu_logs_root()
    assert (root / FULL).is_dir() and (root / RETAIN).is_dir(), f"{root} lacks {FULL}/ or {RETAIN}/"
    return root


def _run_rescore(argv: list[str], capsys) -> tuple[int, str, str]:
    """``unlearn-audit rescore ARGV`` through the command module, as the CLI dispatches it."""
    parser = argparse.ArgumentParser(prog="unlearn-audit rescore")
    rescore_cmd.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        rc = rescore_cmd.run(args)
    except (FileNotFoundError, ValueError, KeyError) as e:  # what cli.main turns into rc 2
        print(f"unlearn-audit rescore: error: {e}", file=sys.stderr)
        rc = 2
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- independent reference
# Written straight off the JSON with plain numpy/scipy, following TOFU's
# aggregate_eval_stat.py (including its 1/R form), sharing no code with the package.


def _load(model_dir: Path) -> dict[str, dict]:
    return {name: json.loads((model_dir / name).read_text()) for name in LEGACY_FILES.values()}


def _reference_model_utility(logs: dict[str, dict]) -> float:
    parts = []
    for name in (
        "eval_log.json",
        "eval_real_author_wo_options.json",
        "eval_real_world_wo_options.json",
    ):
        d = logs[name]
        gt = np.array(list(d["avg_gt_loss"].values()))
        pert = np.array(list(d["average_perturb_loss"].values()))
        para = np.array(list(d["avg_paraphrased_loss"].values()))
        if name == "eval_log.json":
            prob = np.mean(np.exp(-gt))
        else:
            p_true = np.exp(-gt)
            prob = np.mean(p_true / (p_true + np.exp(-pert).sum(axis=1)))
        rouge = np.mean(list(d["rougeL_recall"].values()))
        inv_r = np.exp(pert.mean(axis=1) - para)
        tr = np.mean(np.maximum(0, 1 - 1 / inv_r))
        parts += [prob, rouge, tr]
    return float(hmean(parts))


def _reference_inv_truth_ratios(logs: dict[str, dict]) -> np.ndarray:
    d = logs["eval_log_forget.json"]
    pert = np.array(list(d["average_perturb_loss"].values())).mean(axis=1)
    return np.exp(pert - np.array(list(d["avg_paraphrased_loss"].values())))


# --------------------------------------------------------------------------- real logs


def test_real_full_vs_retain_match_tofu(real_logs):
    full, retain = _load(real_logs / FULL), _load(real_logs / RETAIN)
    v = tofu_values(
        read_logs(real_logs / FULL).splits, read_retain_truth_ratios(real_logs / RETAIN)
    )

    assert v["tofu.model_utility"] == pytest.approx(0.62, abs=0.01)
    assert abs(v["tofu.model_utility"] - _reference_model_utility(full)) < 1e-9

    ref_fq = ks_2samp(_reference_inv_truth_ratios(full), _reference_inv_truth_ratios(retain)).pvalue
    assert v["tofu.forget_quality"] < 0.05
    assert abs(v["tofu.forget_quality"] - ref_fq) < 1e-9

    forget = full["eval_log_forget.json"]
    assert abs(v["tofu.forget_rouge"] - np.mean(list(forget["rougeL_recall"].values()))) < 1e-9
    forget_prob = np.mean(np.exp(-np.array(list(forget["avg_gt_loss"].values()))))
    assert abs(v["tofu.forget_prob"] - forget_prob) < 1e-9
    inv_r = _reference_inv_truth_ratios(full)
    assert abs(v["tofu.forget_truth_ratio"] - np.mean(np.minimum(inv_r, 1 / inv_r))) < 1e-9


def test_real_retain_model_utility_and_self_forget_quality(real_logs):
    full, retain = _load(real_logs / FULL), _load(real_logs / RETAIN)
    r = read_retain_truth_ratios(real_logs / RETAIN)
    v = tofu_values(read_logs(real_logs / RETAIN).splits, r)
    assert v["tofu.forget_quality"] == 1.0
    assert abs(v["tofu.model_utility"] - _reference_model_utility(retain)) < 1e-9
    # The full model has seen the forget set: its forget numbers sit far above the retain model's.
    vf = tofu_values(read_logs(real_logs / FULL).splits)
    assert vf["tofu.forget_prob"] > 0.9 > 0.2 > v["tofu.forget_prob"]
    assert _reference_model_utility(full) > _reference_model_utility(retain)


def test_real_stored_fields_agree_with_recomputation(real_logs):
    """TOFU's stored per-item truth_ratio (= R, float32) and normalized_gt_loss agree with ours."""
    logs = read_logs(real_logs / FULL)
    assert logs.format == "tofu_legacy"
    for s in logs.splits.values():
        np.testing.assert_allclose(s.truth_ratios(), s.stored_truth_ratio, rtol=1e-5)
    raw = json.loads((real_logs / FULL / "eval_real_author_wo_options.json").read_text())
    ra = logs.splits["real_authors"]
    stored = np.exp(-np.array([raw["normalized_gt_loss"][i] for i in ra.index]))
    np.testing.assert_allclose(
        normalized_probability(ra.gt_mean_nll, ra.perturbed_mean_nll), stored, rtol=1e-12
    )


def test_real_rouge_recomputed_from_generations(real_logs):
    """The saved generations reproduce TOFU's stored ROUGE-L/ROUGE-1 recall item by item."""
    s = read_logs(real_logs / FULL).splits["forget"]
    assert s.generations is not None and len(s.generations) == s.n == 300
    got = [rouge_recall(g.generation, g.gold) for g in s.generations]
    np.testing.assert_allclose([x["rougeL"] for x in got], s.rougeL_recall, atol=1e-12)
    np.testing.assert_allclose([x["rouge1"] for x in got], s.rouge1_recall, atol=1e-12)
    rec = read_logs(real_logs / FULL).generation_records("forget")[0]
    assert set(rec) == {"index", "prompt", "generation", "gold"}
    assert rec["prompt"].startswith("[INST]")


def _to_open_unlearning(model_dir: Path) -> dict:
    """Re-express TOFU legacy logs as open-unlearning's TOFU_EVAL.json (same per-item values)."""
    out: dict = {}
    for split, prefix in (
        ("forget", "forget"),
        ("retain", "retain"),
        ("real_authors", "ra"),
        ("world_facts", "wf"),
    ):
        d = json.loads((model_dir / LEGACY_FILES[split]).read_text())

        def prob(losses):
            return {i: {"prob": math.exp(-x), "avg_loss": x} for i, x in losses.items()}

        out[f"{prefix}_Q_A_Prob"] = {"agg_value": 0.0, "value_by_index": prob(d["avg_gt_loss"])}
        if split in ("forget", "retain"):
            out[f"{prefix}_Q_A_PARA_Prob"] = {
                "agg_value": 0.0,
                "value_by_index": prob(d["avg_paraphrased_loss"]),
            }
        out[f"{prefix}_Q_A_PERT_Prob"] = {
            "agg_value": 0.0,
            "value_by_index": {
                i: {"prob": [math.exp(-x) for x in xs], "avg_loss": xs}
                for i, xs in d["average_perturb_loss"].items()
            },
        }
        out[f"{prefix}_Q_A_ROUGE"] = {
            "agg_value": 0.0,
            "value_by_index": {
                i: {
                    "rouge1_recall": d["rouge1_recall"][i],
                    "rougeL_f1": 0.0,
                    "rougeL_recall": d["rougeL_recall"][i],
                    "input": t[0],
                    "ground_truth": t[2],
                    "generation": t[1],
                }
                for i, t in d["generated_text"].items()
            },
        }
        tr_key = "forget_truth_ratio" if split == "forget" else f"{prefix}_Truth_Ratio"
        out[tr_key] = {
            "agg_value": 0.0,
            "value_by_index": {i: {"score": r} for i, r in d["truth_ratio"].items()},
        }
    out["forget_quality"] = {"agg_value": None}
    out["model_utility"] = {"agg_value": 0.0}
    return out


def test_open_unlearning_format_gives_the_same_numbers(real_logs, tmp_path):
    for model in (FULL, RETAIN):
        (tmp_path / model).mkdir()
        (tmp_path / model / "TOFU_EVAL.json").write_text(
            json.dumps(_to_open_unlearning(real_logs / model))
        )
    ou = read_logs(tmp_path / FULL)
    assert (
        ou.format == "open_unlearning"
        and detect_format(tmp_path / FULL / "TOFU_EVAL.json") == ou.format
    )
    v_ou = tofu_values(ou.splits, read_retain_truth_ratios(tmp_path / RETAIN))
    v_legacy = tofu_values(
        read_logs(real_logs / FULL).splits, read_retain_truth_ratios(real_logs / RETAIN)
    )
    same = [*HEADLINE_NAMES[:1], *HEADLINE_NAMES[2:], *COMPONENT_NAMES]
    # open-unlearning's real-world truth ratio uses the gold answer's loss as the true side,
    # TOFU's legacy log its separately computed (numerically noisy) "paraphrased" copy.
    same = [
        k
        for k in same
        if k not in ("tofu.real_authors_truth_ratio", "tofu.world_facts_truth_ratio")
    ]
    for k in same:
        assert abs(v_ou[k] - v_legacy[k]) < 1e-9, k
    ra = json.loads((real_logs / FULL / LEGACY_FILES["real_authors"]).read_text())
    r = np.exp(
        np.array(list(ra["avg_gt_loss"].values()))
        - np.array(list(ra["average_perturb_loss"].values())).mean(axis=1)
    )
    assert abs(v_ou["tofu.real_authors_truth_ratio"] - np.mean(np.maximum(0, 1 - r))) < 1e-9
    assert (
        abs(v_ou["tofu.real_authors_truth_ratio"] - v_legacy["tofu.real_authors_truth_ratio"])
        < 0.01
    )
    assert len(ou.generation_records()) == 300


def test_cli_json_on_real_logs(real_logs, capsys):
    rc, out, _ = _run_rescore(
        [str(real_logs / FULL), "--retain-logs", str(real_logs / RETAIN), "--json"], capsys
    )
    assert rc == 0
    data = json.loads(out)
    assert {*HEADLINE_NAMES, *COMPONENT_NAMES} <= set(data)
    assert all(isinstance(data[k], float) for k in (*HEADLINE_NAMES, *COMPONENT_NAMES))
    assert data["tofu.model_utility"] == pytest.approx(0.62, abs=0.01)
    assert data["tofu.forget_quality"] < 0.05
    assert set(data) - {*HEADLINE_NAMES, *COMPONENT_NAMES} <= set(rescore_cmd.NOVEL_KEYS)

    rc, out, _ = _run_rescore(
        [str(real_logs / RETAIN), "--retain-logs", str(real_logs / RETAIN), "--json"], capsys
    )
    assert json.loads(out)["tofu.forget_quality"] == 1.0


def test_cli_table_on_real_logs(real_logs, capsys):
    rc, out, _ = _run_rescore([str(real_logs / FULL)], capsys)
    assert rc == 0
    assert "tofu.model_utility" in out and "0.6227" in out
    assert "--retain-logs" in out  # says how to get forget quality


def test_console_script_dispatches_rescore(real_logs, capsys):
    from unlearn_audit import cli

    try:
        rc = cli.main(["rescore", str(real_logs / FULL), "--json"])
    except ModuleNotFoundError as e:
        if (e.name or "").startswith("unlearn_audit.commands."):
            pytest.skip(f"another subcommand's module is not there yet ({e.name})")
        raise
    assert rc == 0
    assert "tofu.model_utility" in json.loads(capsys.readouterr().out)


# --------------------------------------------------------------------------- tiny logs


def _write_legacy(d: Path, forget: dict | None = None) -> Path:
    """A minimal TOFU legacy log directory, two items per split."""
    d.mkdir(parents=True, exist_ok=True)
    base = {
        "avg_gt_loss": {"0": 0.1, "1": 0.2},
        "avg_paraphrased_loss": {"0": 1.0, "1": 1.5},
        "average_perturb_loss": {"0": [2.0, 2.5], "1": [1.0, 1.2]},
        "rougeL_recall": {"0": 1.0, "1": 0.5},
        "rouge1_recall": {"0": 1.0, "1": 0.6},
        "generated_text": {
            "0": ["[INST] Q0 [/INST]", "A0", "G0"],
            "1": ["[INST] Q1 [/INST]", "A1", "G1"],
        },
    }
    for split, name in LEGACY_FILES.items():
        data = forget if (split == "forget" and forget is not None) else base
        (d / name).write_text(json.dumps(data))
    return d


def test_legacy_reader_on_tiny_logs(tmp_path):
    logs = read_logs(_write_legacy(tmp_path / "m"))
    assert logs.format == "tofu_legacy" and set(logs.splits) == set(LEGACY_FILES)
    s = logs.splits["forget"]
    assert s.index == ("0", "1") and s.perturbed_mean_nll.shape == (2, 2)
    np.testing.assert_allclose(s.truth_ratios(), np.exp([1.0 - 2.25, 1.5 - 1.1]))
    assert logs.generation_records()[1] == {
        "index": "1",
        "prompt": "[INST] Q1 [/INST]",
        "generation": "A1",
        "gold": "G1",
    }
    # TOFU's eval_log_aggregated.json and a single per-split file read the same.
    agg = {name: json.loads((tmp_path / "m" / name).read_text()) for name in LEGACY_FILES.values()}
    (tmp_path / "eval_log_aggregated.json").write_text(json.dumps(agg))
    assert tofu_values(read_logs(tmp_path / "eval_log_aggregated.json").splits) == tofu_values(
        logs.splits
    )
    single = read_logs(tmp_path / "m" / "eval_log_forget.json")
    assert list(single.splits) == ["forget"]
    np.testing.assert_array_equal(
        read_retain_truth_ratios(tmp_path / "m" / "eval_log_forget.json"), s.truth_ratios()
    )


def test_open_unlearning_reader_on_tiny_file(tmp_path):
    data = {
        "forget_truth_ratio": {
            "agg_value": 0.5,
            "value_by_index": {"0": {"score": 0.5}, "1": {"score": 2.0}},
        },
        "forget_Q_A_Prob": {
            "agg_value": 0.75,
            "value_by_index": {"0": {"prob": 1.0, "avg_loss": 0.0}, "1": {"prob": 0.5}},
        },
        "forget_quality": {"agg_value": None},
    }
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(data))
    logs = read_logs(tmp_path)
    assert logs.format == "open_unlearning" and list(logs.splits) == ["forget"]
    v = tofu_values(logs.splits, read_retain_truth_ratios(tmp_path))
    assert v["tofu.forget_quality"] is None  # two items: too few for a KS p-value
    assert v["tofu.forget_truth_ratio"] == pytest.approx(0.5)  # stored scores: min(R, 1/R)
    assert v["tofu.forget_prob"] == pytest.approx(0.75)  # avg_loss, or -log(prob) when absent
    assert v["tofu.model_utility"] is None and v["tofu.forget_rouge"] is None


def test_tiny_cli_json_keys_and_novel_hook(tmp_path, capsys, monkeypatch):
    d = _write_legacy(tmp_path / "m")
    seen = []

    def fake_rescore_generations(records):
        seen.extend(records)
        return {
            "novel_recall.leak_rate": 0.5,
            "novel_recall.leak_rate_ci": (0.1, 0.9),
            "novel_recall.uncorrected_rate": 1.0,
            "n": 2,
            "excluded": 0,
            "uncorrected_n": 2,
        }

    fake = types.ModuleType("unlearn_audit.scoring.novel")
    fake.rescore_generations = fake_rescore_generations
    monkeypatch.setitem(sys.modules, "unlearn_audit.scoring.novel", fake)
    rc, out, err = _run_rescore([str(d), "--retain-logs", str(d), "--json"], capsys)
    assert rc == 0
    data = json.loads(out)
    assert list(data) == [*HEADLINE_NAMES, *COMPONENT_NAMES, *rescore_cmd.NOVEL_KEYS]
    assert data["tofu.forget_quality"] is None  # two items: too few for a KS p-value
    assert "forget quality not measured: 2 candidate and 2 retain-model truth ratios" in err
    assert data["novel_recall.leak_rate"] == 0.5 and data["novel_recall.uncorrected_rate"] == 1.0
    assert seen == [("[INST] Q0 [/INST]", "A0", "G0"), ("[INST] Q1 [/INST]", "A1", "G1")]

    # Before the novel scorer lands, rescore still works and reports TOFU numbers only.
    monkeypatch.setitem(sys.modules, "unlearn_audit.scoring.novel", None)
    rc, out, err = _run_rescore([str(d), "--json"], capsys)
    data = json.loads(out)
    assert rc == 0 and list(data) == [*HEADLINE_NAMES, *COMPONENT_NAMES]
    assert data["tofu.forget_quality"] is None
    assert "tofu.forget_quality skipped" in err


# --------------------------------------------------------------------------- malformed logs


def test_empty_directory_names_what_was_expected(tmp_path, capsys):
    with pytest.raises(LogFormatError, match="eval_log_forget.json.*TOFU_EVAL.json"):
        read_logs(tmp_path)
    rc, out, err = _run_rescore([str(tmp_path)], capsys)
    assert rc == 2 and out == ""
    assert "no eval logs found" in err and "eval_log_forget.json" in err and "TOFU_EVAL.json" in err


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_logs(tmp_path / "nope")


@pytest.mark.parametrize(
    ("forget", "match"),
    [
        (
            {"avg_gt_loss": {"0": 0.1}, "rougeL_recall": {"1": 1.0}},
            r"rougeL_recall: no value for item\(s\) 0",
        ),
        ({"average_perturb_loss": {"0": 2.0}}, r"average_perturb_loss\[0\]: expected a list"),
        ({"avg_gt_loss": {"0": "x"}}, r"avg_gt_loss\[0\]: expected a number"),
        ({"avg_gt_loss": [0.1]}, "should map item index -> value"),
        ({"something_else": {}}, "none of TOFU's per-item fields"),
        (
            {"generated_text": {"0": ["only", "two"]}},
            r"generated_text\[0\]: expected \[prompt, generation, gold\]",
        ),
    ],
)
def test_malformed_legacy_fields_name_file_and_field(tmp_path, forget, match):
    d = _write_legacy(tmp_path / "m", forget=forget)
    with pytest.raises(LogFormatError, match=match) as info:
        read_logs(d)
    assert "eval_log_forget.json" in str(info.value)


def test_invalid_json_names_the_file(tmp_path):
    d = _write_legacy(tmp_path / "m")
    (d / "eval_log.json").write_text("{not json")
    with pytest.raises(LogFormatError, match=r"eval_log.json: not valid JSON"):
        read_logs(d)


def test_summary_only_and_unknown_json(tmp_path):
    (tmp_path / "TOFU_SUMMARY.json").write_text(
        json.dumps({"forget_quality": 0.1, "model_utility": 0.6})
    )
    with pytest.raises(LogFormatError, match="TOFU_EVAL.json"):
        read_logs(tmp_path)
    with pytest.raises(LogFormatError, match="aggregates only"):
        read_logs(tmp_path / "TOFU_SUMMARY.json")
    (tmp_path / "eval_log_forget_0.json").write_text(json.dumps({"avg_gt_loss": {"0": 1.0}}))
    with pytest.raises(LogFormatError, match="does not say which split"):
        read_logs(tmp_path / "eval_log_forget_0.json")
    (tmp_path / "other.json").write_text(json.dumps([1, 2]))
    with pytest.raises(LogFormatError, match="not a recognised eval log"):
        read_logs(tmp_path / "other.json")


def test_retain_logs_without_truth_ratios(tmp_path):
    d = _write_legacy(tmp_path / "m", forget={"avg_gt_loss": {"0": 0.1}})
    with pytest.raises(LogFormatError, match="no forget-set truth ratios"):
        read_retain_truth_ratios(d)


def test_rescore_cli_prints_leak_rates_from_real_generations(real_logs, capsys):
    """The issue's check, end to end through the console script: on TOFU's own Llama-2-7b
    logs the corrected scorer finds the full model leaking and the retain model not."""
    from unlearn_audit.cli import main

    rates = {}
    for name in (FULL, RETAIN):
        assert main(["rescore", str(real_logs / name), "--retain-logs", str(real_logs / RETAIN), "--json"]) == 0
        rates[name] = json.loads(capsys.readouterr().out)
    full, retain = rates[FULL], rates[RETAIN]
    assert full["novel_recall.leak_rate"] >= 0.9
    assert retain["novel_recall.leak_rate"] <= 0.06
    # The plain ROUGE-L rate credits echoed question words: the correction is visible.
    assert retain["novel_recall.uncorrected_rate"] > retain["novel_recall.leak_rate"] + 0.1
    assert full["tofu.forget_quality"] < 0.05 and retain["tofu.forget_quality"] == 1.0


# --- degradation probe, case 2: retain logs are matched to the candidate's questions -----------------
def _tiny_forget_questions() -> list[str]:
    from unlearn_audit.data import load_split

    return [it.question for it in load_split(TOFU_LOGS.parent / "tiny_world", "forget10_perturbed")]


def test_open_unlearning_retain_logs_match_the_tiny_worlds_questions_in_their_rendered_prompts():
    from unlearn_audit.scoring.logs import match_retain_truth_ratios

    logs = TOFU_LOGS.parent / "open_unlearning_tiny" / "retain"
    questions = _tiny_forget_questions()
    whole = match_retain_truth_ratios(logs, questions)
    assert (whole.matched, whole.n_questions, whole.n_logs, whole.unmatched) == (40, 40, 40, ())
    np.testing.assert_array_equal(whole.truth_ratios, read_retain_truth_ratios(logs))
    # A --limit run: the logs' first 8 items, in the candidate's order, not all 40.
    limited = match_retain_truth_ratios(logs, questions[:8])
    np.testing.assert_array_equal(limited.truth_ratios, read_retain_truth_ratios(logs)[:8])


def test_tofus_real_retain_logs_are_refused_for_the_tiny_worlds_questions(real_logs):
    from unlearn_audit.scoring.logs import match_retain_truth_ratios

    with pytest.raises(LogFormatError) as e:
        match_retain_truth_ratios(real_logs / RETAIN, _tiny_forget_questions())
    message = str(e.value)
    assert "\n" not in message
    assert "only 0 of the candidate's 40 forget questions are among the logs' 300 forget items" in message
    assert "e.g. 'What is the full name of the author born in Linstead on 27 November 1944?'" in message
    assert "Fix:" in message
    # Their own questions, inside TOFU's "[INST] question [/INST]" prompts, are found.
    forget = json.loads((real_logs / RETAIN / "eval_log_forget.json").read_text())
    own = [p.removeprefix("[INST] ").removesuffix(" [/INST]") for p, _, _ in forget["generated_text"].values()]
    match = match_retain_truth_ratios(real_logs / RETAIN, own[:50])
    assert match.matched == 50 and len(match.truth_ratios) == 50


def test_a_legacy_log_with_an_uneven_perturbed_list_drops_that_item_only(tmp_path):
    # It used to stop the rescore with a ValueError about ragged lists.
    n = 5
    log = {"avg_gt_loss": {str(i): 1.0 for i in range(n)},
           "avg_paraphrased_loss": {str(i): 1.0 for i in range(n)},
           "average_perturb_loss": {str(i): [2.0, 2.0] for i in range(n)}}
    log["average_perturb_loss"]["3"] = [2.0, 2.0, 2.0]
    (tmp_path / "eval_log_forget.json").write_text(json.dumps(log))
    r = read_retain_truth_ratios(tmp_path / "eval_log_forget.json")
    assert np.isnan(r[3]) and np.allclose(np.delete(r, 3), math.exp(-1.0))
    from unlearn_audit.scoring.tofu import tofu_numbers

    tr = tofu_numbers(read_logs(tmp_path).splits)["tofu.forget_truth_ratio"]
    assert (tr.n, tr.excluded) == (4, 1) and "1 item(s) without a truth ratio left out" in tr.reason


def test_rescore_refuses_retain_logs_of_another_dataset():
    # TOFU's Llama-2 full-model logs against the tiny world's retain logs: no question in
    # common, so there is no forget quality to compute (it used to compare them anyway).
    tiny_retain = TOFU_LOGS.parent / "open_unlearning_tiny" / "retain"
    with pytest.raises(LogFormatError, match=r"only 0 of the candidate.s \d+ forget questions"):
        rescore_cmd.rescore(TOFU_LOGS / "llama2-7b_full_wd0.01", tiny_retain)
    # logs of the same questions still match item by item
    _, numbers = rescore_cmd.rescore(TOFU_LOGS / "llama2-7b_full_wd0.01", TOFU_LOGS / "llama2-7b_retain90_wd0.01")
    assert numbers["tofu.forget_quality"].value is not None
