"""The committed reference results validate, and broken ones fail with the file, key and problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unlearn_audit.report import (
    KNOWN_METRICS,
    KNOWN_VIEWS,
    ReferenceResultsError,
    is_known_metric,
    load_gates,
    load_golden,
    load_paper,
    load_reference_results,
)
from unlearn_audit.report._reference import Gate, load_expected_verdicts

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "reference_results"


# --- the committed files ------------------------------------------------------------------------
def test_committed_reference_results_load():
    refs = load_reference_results(REF, REF / "gates.yaml", root=ROOT, tiny_world=True)
    assert refs.gates["novel_recall.leak_rate"].value == pytest.approx(0.10)
    assert refs.gates["tofu.model_utility"].relative_to == "full"
    assert refs.gates["tofu.model_utility"].factor == pytest.approx(0.8)
    assert refs.gates["masked_probe.top1_last_layer"].relative_to == "retain"
    assert all(g.rationale and "\n" not in g.rationale for g in refs.gates.values())
    assert refs.gates["novel_recall.leak_rate"].source == "reference_results/gates.yaml"
    assert "laundered" in refs.expected and "fail" in refs.expected["laundered"].values()
    assert refs.golden is not None


def test_paper_numbers_match_the_seed_table():
    paper = load_paper(REF / "paper.yaml", ROOT)
    three_b = paper["naahraf27/npo_llama-3.2-3b-instruct_forget10_ep5_lr2e-5_alpha2.0_beta0.1"]
    assert three_b.metrics == pytest.approx(
        {
            "tofu.forget_quality": 0.468,
            "tofu.model_utility": 0.621,
            "novel_recall.leak_rate": 0.0613,
            "format_shift.leak_rate": 0.228,
            "best_of_n.leak_rate": 0.099,
            "chain_of_clues.final_turn_leak_rate": 0.426,
            "masked_probe.top1_last_layer": 0.620,
            "likelihood.avg_logprob": -3.20,
            "likelihood.shift_vs_full": 0.424,
            "rtt.recovery_delta_vs_control_pp": 0.51,
            "quantization.int8_delta_pp": -0.03,
        }
    )
    assert three_b.references["full"] == "open-unlearning/tofu_Llama-3.2-3B-Instruct_full"
    one_b = paper["naahraf27/npo_llama-3.2-1b-instruct_forget10_ep10_lr5e-5_alpha1.0_beta0.1"]
    assert one_b.metrics["novel_recall.leak_rate"] == pytest.approx(0.0467)
    assert "chain_of_clues.final_turn_leak_rate" not in one_b.metrics  # "—" in the table
    eight_b = paper["naahraf27/npo_llama-3.1-8b-instruct_forget10_ep5_lr5e-5_alpha2.0_beta0.1"]
    assert eight_b.metrics["rtt.recovery_delta_vs_control_pp"] == pytest.approx(7.64)
    assert paper["open-unlearning/tofu_llama-3.2-3b-instruct_full"].metrics["novel_recall.leak_rate"] == pytest.approx(0.0785)
    assert paper["open-unlearning/tofu_llama-3.2-1b-instruct_full"].metrics["novel_recall.leak_rate"] == pytest.approx(0.037)
    assert paper["meta-llama/llama-3.2-3b-instruct"].metrics["novel_recall.leak_rate"] == pytest.approx(0.003)
    assert paper["meta-llama/llama-3.2-1b-instruct"].metrics["novel_recall.leak_rate"] == pytest.approx(0.004)
    assert any("graddiff" in k for k in paper)


def test_paper_value_lookup_is_case_insensitive():
    refs = load_reference_results(REF, REF / "gates.yaml", root=ROOT)
    src = "Naahraf27/npo_llama-3.2-3b-instruct_forget10_ep5_lr2e-5_alpha2.0_beta0.1"
    assert refs.paper_value(src, "novel_recall.leak_rate") == pytest.approx(0.0613)
    assert refs.paper_value("some/other", "novel_recall.leak_rate") is None
    assert refs.paper_value(None, "novel_recall.leak_rate") is None


# --- metric names ----------------------------------------------------------------------------------
def test_known_metrics_cover_views_md():
    assert {m.split(".")[0] for m in KNOWN_METRICS} == set(KNOWN_VIEWS)
    for name in ("tofu.retain_prob", "format_shift.fill_blank_leak_rate", "masked_probe.top1_layer_3"):
        assert is_known_metric(name)
    for name in ("leak_rate", "novel.leak_rate", "novel_recall.", "novel_recall.Leak-Rate", "tofu"):
        assert not is_known_metric(name)
    assert is_known_metric("myview.score", extra_views=("myview",))


@given(st.sampled_from(KNOWN_VIEWS), st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True))
def test_any_snake_case_name_under_a_known_view_is_known(view, tail):
    assert is_known_metric(f"{view}.{tail}")


# --- gates: every problem names the file and key -------------------------------------------------------
def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '=<', value: 0.1, rationale: r}\n",
         "gates.yaml: gates[0].op: unknown operator '=<'; use one of <=, <, >=, >"),
        ("gates:\n  - {metric: novel_recal.leak_rate, op: '<=', value: 0.1, rationale: r}\n",
         "gates.yaml: gates[0].metric: unknown metric 'novel_recal.leak_rate'"),
        ("gates:\n  - {metric: tofu.model_utility, op: '>=', relative_to: finetuned, rationale: r}\n",
         "gates.yaml: gates[0].relative_to: unknown reference 'finetuned'; use one of full, retain, base"),
        ("gates:\n  - {metric: tofu.model_utility, op: '>=', value: 1, relative_to: full, rationale: r}\n",
         "gates.yaml: gates[0]: give exactly one of 'value'"),
        ("gates:\n  - {metric: tofu.model_utility, op: '>=', rationale: r}\n",
         "gates.yaml: gates[0]: give exactly one of 'value'"),
        ("gates:\n  - {metric: tofu.model_utility, op: '>=', value: 1, factor: 2, rationale: r}\n",
         "gates.yaml: gates[0].factor: only meaningful with 'relative_to'"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1}\n",
         "gates.yaml: gates[0].rationale: missing"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: high, rationale: r}\n",
         "gates.yaml: gates[0].value: expected a number, got 'high'"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1, rationale: r, treshold: 1}\n",
         "gates.yaml: gates[0].treshold: unknown key"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1, rationale: r}\n"
         "  - {metric: novel_recall.leak_rate, op: '<', value: 0.2, rationale: r}\n",
         "gates.yaml: gates[1].metric: a gate on novel_recall.leak_rate already exists at gates[0]"),
        ("gates: {novel_recall.leak_rate: 0.1}\n", "gates.yaml: gates: expected a list of gates"),
        ("schema_version: 2\ngates: []\n", "gates.yaml: schema_version: expected 1, got 2"),
        ("gates: [\n", "gates.yaml: not valid YAML"),
        ("- just\n- a list\n", "gates.yaml: expected a mapping, got list"),
        # issue 12, case 2: a misspelt metric used to pass validation and turn its gate off.
        ("gates:\n  - {metric: novel_recall.leak_rat, op: '<=', value: 0.1, rationale: r}\n",
         "gates.yaml: gates[0].metric: unknown metric 'novel_recall.leak_rat': no view reports it, "
         "so this gate would never run. Did you mean 'novel_recall.leak_rate'?"),
        ("gates:\n  - {metric: tofu.forget_qualty, op: '>=', value: 0.05, rationale: r}\n",
         "Did you mean 'tofu.forget_quality'?"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1, rationle: r}\n",
         "gates.yaml: gates[0].rationle: unknown key. Did you mean 'rationale'?"),
        ("gates:\n  - {metric: tofu.model_utility, op: '>=', relative_to: fulll, rationale: r}\n",
         "gates.yaml: gates[0].relative_to: unknown reference 'fulll'; use one of full, retain, base. "
         "Did you mean 'full'?"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '=<', value: 0.1, rationale: r}\n",
         "Did you mean '<='?"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: .inf, rationale: r}\n",
         "gates.yaml: gates[0].value: expected a finite number, got inf"),
        ("gate:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1, rationale: r}\n",
         "gates.yaml: gate: unknown key. Did you mean 'gates'?"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1, rationale: r, 1: x, b: y}\n",
         "gates.yaml: gates[0].1: unknown key"),
        # duplicate keys and aliases: a gates file must not loosen itself silently
        # a second `value:` used to win: a 75% leak passed against "<= 0.99"
        ("gates:\n  - metric: novel_recall.leak_rate\n    op: '<='\n    value: 0.1\n    value: 0.99\n"
         "    rationale: r\n",
         "gates.yaml: line 5: duplicate key 'value' (first at line 4)"),
        # a second top-level `gates:` used to drop the first list
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1, rationale: r}\n"
         "gates:\n  - {metric: tofu.forget_quality, op: '>=', value: 0.05, rationale: r}\n",
         "gates.yaml: line 3: duplicate key 'gates' (first at line 1)"),
        ("gates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1, value: 0.9, rationale: r}\n",
         "gates.yaml: line 2: duplicate key 'value'"),
        ("r: &r why\ngates:\n  - {metric: novel_recall.leak_rate, op: '<=', value: 0.1, rationale: *r}\n",
         "gates.yaml: line 3: alias *r is not allowed"),
    ],
)
def test_gate_file_problems(tmp_path, body, message):
    path = write(tmp_path, "gates.yaml", body)
    with pytest.raises(ReferenceResultsError) as err:
        load_gates(path, tmp_path)
    assert message in str(err.value)


def test_missing_gates_file_names_it(tmp_path):
    with pytest.raises(ReferenceResultsError, match=r"gates\.yaml: file not found"):
        load_reference_results(tmp_path, tmp_path / "gates.yaml", root=tmp_path)


def test_gate_thresholds_and_descriptions():
    absolute = Gate("novel_recall.leak_rate", "<=", "r", "g.yaml", value=0.1)
    assert absolute.threshold() == pytest.approx(0.1) and absolute.describe() == "<= 0.1"
    relative = Gate("tofu.model_utility", ">=", "r", "g.yaml", relative_to="full", factor=0.8)
    assert relative.threshold(0.5) == pytest.approx(0.4) and relative.describe() == ">= 0.8 × full"
    offset = Gate("masked_probe.top1_last_layer", "<=", "r", "g.yaml", relative_to="retain", offset=0.2)
    assert offset.threshold(0.3) == pytest.approx(0.5) and offset.describe() == "<= retain + 0.2"
    with pytest.raises(ValueError, match="relative to full"):
        relative.threshold()


# --- paper, expectations, golden --------------------------------------------------------------------------
def test_paper_file_problems(tmp_path):
    path = write(tmp_path, "paper.yaml", "checkpoints:\n  org/x:\n    metrics: {novel_recall.leak: 0.1, bogus: 1}\n")
    with pytest.raises(ReferenceResultsError, match=r"paper\.yaml: checkpoints\.org/x\.metrics\.bogus: unknown metric"):
        load_paper(path, tmp_path)
    path = write(tmp_path, "paper.yaml", "checkpoints:\n  org/x:\n    role: teacher\n")
    with pytest.raises(ReferenceResultsError, match=r"checkpoints\.org/x\.role: unknown role 'teacher'"):
        load_paper(path, tmp_path)


def test_expected_verdict_problems(tmp_path):
    gates = {"novel_recall.leak_rate": Gate("novel_recall.leak_rate", "<=", "r", "g", value=0.1)}
    path = write(tmp_path, "expected_verdicts.yaml", "models:\n  npo: {novel_recall.leak_rate: maybe}\n")
    with pytest.raises(ReferenceResultsError, match=r"models\.npo\.novel_recall\.leak_rate: expected 'pass' or 'fail', got 'maybe'"):
        load_expected_verdicts(path, gates, tmp_path)
    path = write(tmp_path, "expected_verdicts.yaml", "models:\n  npo: {tofu.forget_quality: fail}\n")
    with pytest.raises(ReferenceResultsError, match="no gate on this metric"):
        load_expected_verdicts(path, gates, tmp_path)
    path = write(tmp_path, "expected_verdicts.yaml", "models:\n  npo: {novel_recall.leak_rate: fail}\n")
    assert load_expected_verdicts(path, gates, tmp_path) == {"npo": {"novel_recall.leak_rate": "fail"}}


def test_golden_round_trip_and_problems(tmp_path):
    assert load_golden(tmp_path / "missing.json").values == {}
    path = write(tmp_path, "golden.json", json.dumps({
        "novel_recall.leak_rate": {"npo": {"value": 0.05, "tol": 0.001}},
        "_config": {"limit": None},
    }))
    golden = load_golden(path, tmp_path)
    assert golden.get("novel_recall.leak_rate", "npo") == {"value": 0.05, "tol": 0.001}
    assert golden.config == {"limit": None}
    assert golden.config_mismatch({"limit": None}) == []
    assert golden.config_mismatch({"limit": 5}) == ["limit (golden None, run 5)"]
    assert json.loads(golden.to_json()) == json.loads(path.read_text())

    for body, message in [
        ({"novel_recall.leak_rate": {"npo": {"tol": 0.1}}}, r"novel_recall\.leak_rate\.npo\.value: missing"),
        ({"novel_recall.leak_rate": {"npo": {"value": "x"}}}, r"\.value: expected a number"),
        ({"novel_recall.leak_rate": {"npo": {"value": 1, "tol": -1}}}, r"\.tol: must be >= 0"),
        ({"made_up": {"npo": {"value": 1}}}, r"golden\.json: made_up: unknown metric"),
    ]:
        path.write_text(json.dumps(body))
        with pytest.raises(ReferenceResultsError, match=message):
            load_golden(path, tmp_path)
    path.write_text("{not json")
    with pytest.raises(ReferenceResultsError, match=r"golden\.json: not valid JSON"):
        load_golden(path, tmp_path)


# --- property: a gates file is used whole, or refused naming the bad key -----------------------------
# issue 12: "for any gates file built from valid and invalid pieces, either the run uses every
# gate or it stops naming the bad key". Each invalid piece carries exactly one defect and the
# key its error must name; the loader stops at the first one, in file order.
_DEFECTS = {
    "metric": lambda e, m: {**e, "metric": m[:-1]},  # a dropped last letter: leak_rat
    "op": lambda e, m: {**e, "op": "=<"},
    "value": lambda e, m: {**e, "value": "high"},
    "rationale": lambda e, m: {k: v for k, v in e.items() if k != "rationale"},
    "treshold": lambda e, m: {**e, "treshold": 0.1},
    "relative_to": lambda e, m: {**e, "relative_to": "fulll"},
    "factor": lambda e, m: {**e, "factor": float("inf")},
}


def _gate_entry(draw, metric: str) -> dict:
    entry = {"metric": metric, "op": draw(st.sampled_from(["<=", "<", ">=", ">"])),
             "rationale": draw(st.sampled_from(["r", "keep 80% of full's utility", "why: 'safe'"]))}
    finite = st.floats(-1e6, 1e6, allow_nan=False)
    if draw(st.booleans()):
        entry["value"] = draw(finite)
    else:
        entry["relative_to"] = draw(st.sampled_from(["full", "retain", "base"]))
        if draw(st.booleans()):
            entry["factor"] = draw(finite)
        if draw(st.booleans()):
            entry["offset"] = draw(finite)
    return entry


@st.composite
def _gates_files(draw):
    """(file body, the key path the error must name, or None for a valid file, the entries)."""
    from unlearn_audit.report import declared_metrics

    declared = sorted(declared_metrics())
    metrics = draw(st.lists(st.sampled_from(declared), min_size=0, max_size=6, unique=True))
    entries, first_bad = [], None
    for i, metric in enumerate(metrics):
        entry = _gate_entry(draw, metric)
        defect = draw(st.sampled_from([None, None, None, *_DEFECTS, "duplicate"]))
        if defect == "duplicate" and i > 0:
            entry, key = {**entry, "metric": metrics[0]}, "metric"
        elif defect in _DEFECTS and not (defect == "metric" and metric[:-1] in declared) and not (
            # each defect where it is one: a bad value on an absolute gate, a bad reference
            # or factor on a relative one
            defect in ("relative_to", "factor") and "value" in entry
            or defect == "value" and "value" not in entry
        ):
            entry, key = _DEFECTS[defect](entry, metric), defect
        else:
            key = None
        if key is not None and first_bad is None:
            first_bad = f"gates[{i}].{key}"
        entries.append(entry)
    data = {"schema_version": 1, "gates": entries}
    if draw(st.integers(0, 9)) == 0:  # a misspelt top-level key is checked before any gate
        data["gate"] = []
        first_bad = "gate"
    return data, first_bad


@given(_gates_files())
def test_gates_file_is_used_whole_or_refused_naming_the_bad_key(tmp_path_factory, case):
    import yaml

    data, first_bad = case
    path = tmp_path_factory.mktemp("gates") / "gates.yaml"
    path.write_text(yaml.safe_dump(data))
    if first_bad is not None:
        with pytest.raises(ReferenceResultsError) as err:
            load_gates(path, path.parent)
        assert str(err.value).startswith(f"gates.yaml: {first_bad}: "), (str(err.value), first_bad)
        return
    gates = load_gates(path, path.parent)
    # every gate of the file is in force, as written
    assert list(gates) == [e["metric"] for e in data["gates"]]
    for e in data["gates"]:
        g = gates[e["metric"]]
        assert (g.op, g.rationale, g.relative_to) == (e["op"], e["rationale"], e.get("relative_to"))
        if "value" in e:
            assert g.value == e["value"]
        else:
            assert (g.factor, g.offset) == (e.get("factor", 1.0), e.get("offset", 0.0))


# --- a file cannot loosen itself silently: duplicate keys and aliases are refused ---------------------
def test_duplicate_keys_in_paper_and_expected_verdicts_are_refused(tmp_path):
    path = write(tmp_path, "paper.yaml", "checkpoints:\n  org/x:\n    metrics:\n      novel_recall.leak_rate: 0.1\n"
                                         "      novel_recall.leak_rate: 0.2\n")
    with pytest.raises(ReferenceResultsError, match=r"paper\.yaml: line 5: duplicate key 'novel_recall\.leak_rate'"):
        load_paper(path, tmp_path)
    gates = {"novel_recall.leak_rate": Gate("novel_recall.leak_rate", "<=", "r", "g", value=0.1)}
    path = write(tmp_path, "expected_verdicts.yaml",
                 "models:\n  npo: {novel_recall.leak_rate: fail}\n  npo: {novel_recall.leak_rate: pass}\n")
    with pytest.raises(ReferenceResultsError, match=r"expected_verdicts\.yaml: line 3: duplicate key 'npo'"):
        load_expected_verdicts(path, gates, tmp_path)


def test_a_yaml_alias_bomb_stops_at_once_with_a_clear_error(tmp_path):
    # "billion laughs" inside a rationale: 9^12 strings if expanded (the probe's ran past 1.8 GB)
    levels = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 13)]
    body = "gates:\n  - metric: novel_recall.leak_rate\n    op: '<='\n    value: 0.1\n    rationale:\n"
    body += "".join(f"      - {level}\n" for level in levels)
    path = write(tmp_path, "gates.yaml", body)
    import resource
    import subprocess
    import sys

    code = ("import sys\nfrom unlearn_audit.report import load_gates\n"
            "try:\n    load_gates(sys.argv[1])\nexcept ValueError as e:\n    print(e)\n")

    def cap_memory():  # the old behaviour then ends in a MemoryError, not a swapping machine
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    try:
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                             timeout=30, preexec_fn=cap_memory)
    except subprocess.TimeoutExpired:
        pytest.fail("an alias bomb in a gates file was expanded instead of refused")
    assert "gates.yaml: line 7: alias *a0 is not allowed" in out.stdout, out.stdout + out.stderr[-2000:]


def test_duplicate_keys_in_golden_files_are_refused_with_their_line(tmp_path):
    from unlearn_audit.report._golden_items import load_golden_items

    path = write(tmp_path, "golden.json", '{\n  "novel_recall.leak_rate": {\n    "npo": {\n      "value": 0.05,\n'
                                          '      "tol": 0.001,\n      "value": 0.9\n    }\n  }\n}\n')
    with pytest.raises(ReferenceResultsError, match=r"golden\.json: line 6: duplicate key 'value' \(first at line 4\)"):
        load_golden(path, tmp_path)
    path = write(tmp_path, "golden_items.json", '{\n "novel_recall": {"npo": {"u1": "leaked=1"}},\n'
                                                ' "novel_recall": {}\n}\n')
    with pytest.raises(ValueError, match=r"golden_items\.json: line 3: duplicate key 'novel_recall' \(first at line 2\)"):
        load_golden_items(path, "golden_items.json")
    # the same key in two different objects is fine; a key inside a string value is not a key
    path.write_text('{"v": {"a": {"k": "x \\" \\"k\\": y"}, "b": {"k": "y"}}}')
    assert load_golden_items(path, "golden_items.json").values == {"v": {"a": {"k": 'x " "k": y'}, "b": {"k": "y"}}}
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"golden_items\.json: expected a JSON object"):
        load_golden_items(path, "golden_items.json")


def test_two_paper_checkpoints_differing_only_in_case_are_refused(tmp_path):
    # looked up case-insensitively, so the second silently replaced the first
    path = write(tmp_path, "paper.yaml", "checkpoints:\n  Org/X:\n    metrics: {novel_recall.leak_rate: 0.1}\n"
                                         "  org/x:\n    metrics: {novel_recall.leak_rate: 0.5}\n")
    with pytest.raises(ReferenceResultsError, match=r"paper\.yaml: checkpoints\.org/x: the same checkpoint as "
                                                    r"checkpoints\.Org/X \(hub ids ignore case\)"):
        load_paper(path, tmp_path)
