"""Issue 12, cases 5-13: hostile input never loses the report and never ends in a traceback.

Each test reproduces one case of the issue and asserts on what a user sees: the files left
in the report directory, the verdict line, or the one-line error (naming the file, row or
option, and the fix).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _tiny import chat_engine
from test_plugin import CONFTEST, ISOLATED, MODELS, VIEWS, make_project, report_md, results
from unlearn_audit.context import AuditConfig
from unlearn_audit.report import MetricRow, RunReport, ViewOutcome
from unlearn_audit.report._writer import PLOTS_MANIFEST, format_ci, format_value, write_report


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # no_reraise_ctrlc: an inner run's SIGINT stays inside it instead of stopping this session.
    return pytester.runpytest(*ISOLATED, *args, no_reraise_ctrlc=True)


# --- case 5: the report writer keeps the views' plots and the user's files --------------------------
def _png(path, payload: bytes = b"\x89PNG\r\n\x1a\n fake") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return str(path)


#: One plot of each kind the views use, with a NaN, a None and an infinity in its data:
#: each drawer leaves them out (never a crash, never a lost report).
HOSTILE_PLOTS = {
    "format_shift": {"kind": "bars", "data": {"labels": ["a", "b", "c"], "values": [0.5, math.nan, None],
                                              "line": math.nan, "line_label": "pooled"}},
    "best_of_n": {"kind": "pass_at_k", "data": {"k": [1, 2, 4], "leak_rate": [0.1, None, math.inf],
                                                "ci": [math.nan, 0.3]}},
    "masked_probe": {"kind": "layer_curves", "data": {"curves": [{"label": "probe", "values": [math.nan, 0.5]},
                                                                 {"label": "lens", "values": []}]}},
    "privacy": {"kind": "histograms", "data": {"panels": [
        {"title": "npo", "series": [{"label": "forget", "values": [1.0, math.nan, None, -math.inf]},
                                    {"label": "holdout", "values": []}]}]}},
}


def _plot_run(report_dir, views_with_plots: list[str]) -> RunReport:
    """A run whose views returned their per-model plots as data, as the real views do."""
    outcomes = []
    for view in views_with_plots:
        rows = [MetricRow("npo", view, f"{view}.leak_rate", 0.1, outcome="info")]
        plot = {**HOSTILE_PLOTS[view], "caption": f"{view} curve (npo)"}
        outcomes.append(ViewOutcome(view, "npo", "candidate", "hub/npo", "fp", rows=rows, plots=[plot]))
    return RunReport(created="2026-01-01T00:00:00+00:00", package_version="0", config={},
                     models={"npo": {"source": "hub/npo", "role": "candidate", "fingerprint": "fp"}},
                     outcomes=outcomes)


def test_view_plots_and_user_files_survive_the_report_writer(tmp_path):
    out = tmp_path / "report"
    mine = _png(out / "plots" / "my_notes.png", b"the user's own figure")
    write_report(_plot_run(out, ["format_shift", "best_of_n", "masked_probe", "privacy"]), out)
    md = (out / "report.md").read_text()
    for view in ("format_shift", "best_of_n", "masked_probe", "privacy"):
        # drawn from the view's data, NaN and all, and linked
        assert (out / "plots" / f"{view}_npo.png").read_bytes()[:4] == b"\x89PNG", f"{view}'s plot not drawn"
        assert f"(plots/{view}_npo.png)" in md
    assert "not drawn" not in md and "could not be written" not in md
    assert (out / "plots" / "my_notes.png").read_bytes() == b"the user's own figure", mine

    # A second run without three of the views: their plots are this package's stale files
    # and go; the user's file stays.
    write_report(_plot_run(out, ["format_shift"]), out)
    left = sorted(p.name for p in (out / "plots").iterdir())
    assert left == [PLOTS_MANIFEST, "format_shift_npo.png", "my_notes.png"]


# --- case 6: one NaN or missing value never loses the report ------------------------------------------
def test_formatters_show_nan_and_missing_values_as_such():
    assert format_ci("likelihood.avg_logprob", [0.0, None]) == "[0, —]"
    assert format_ci("novel_recall.leak_rate", [float("nan"), 0.5]) == "[NaN, 50.00]%"
    assert format_ci("x", [None, None]) == "[—, —]"
    assert format_value("novel_recall.leak_rate", float("nan")) == "NaN"
    assert format_value("likelihood.avg_logprob", float("-inf")) == "-inf"
    assert format_value("rtt.gap_pp", None) == "—"


def test_a_nan_metric_fails_its_test_and_the_report_is_still_written(pytester):
    views = {**VIEWS, "likelihood": {"npo": {"likelihood.avg_logprob": math.nan},
                                     "laundered": {"likelihood.avg_logprob": -2.0},
                                     "full": {"likelihood.avg_logprob": -1.0}}}
    tests = "\n\ndef test_likelihood(audit, model):\n    audit.check('likelihood', model)\n"
    make_project(pytester, views=views, tests=tests)
    result = _run(pytester, "--model", "npo", "--model", "laundered", "--full-model", "full")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "INTERNALERROR" not in out
    assert "likelihood.avg_logprob on npo is NaN" in out  # the test's own message reaches the user
    md = report_md(pytester)
    assert "likelihood.avg_logprob is NaN" in md and "[0, —]" in md
    data = results(pytester)
    (nan_row,) = [r for r in data["metrics"] if r["model"] == "npo" and r["view"] == "likelihood"]
    assert nan_row["value"] is None and nan_row["ci"] == [0.0, None] and nan_row["outcome"] == "error"
    assert (pytester.path / "audit-report" / "items.jsonl").read_text().count('"likelihood"') == 9


# --- case 7: an interrupted run says which (view, model) pairs did not run ---------------------------
INTERRUPTING_CONFTEST = CONFTEST.replace(
    '            if entry == "raise":',
    '            if entry == "interrupt":\n'
    '                import os, signal\n'
    # A process started in the background (a CI step, `cmd &`) inherits SIGINT ignored, and
    # Python keeps it so: restore the default handler, then send what Ctrl-C sends.
    '                signal.signal(signal.SIGINT, signal.default_int_handler)\n'
    '                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does\n'
    '            if entry == "raise":',
)


def test_sigint_partway_names_the_pairs_that_did_not_run(pytester):
    views = json.loads(json.dumps(VIEWS))
    views["tofu"]["laundered"] = "interrupt"
    make_project(pytester, views=views)
    pytester.makeconftest(INTERRUPTING_CONFTEST)
    result = _run(pytester, "--model", "npo", "--model", "laundered", "--full-model", "full")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    md = report_md(pytester)
    assert "every view ran" not in md
    verdict_lines = [line for line in md.splitlines() if line.startswith("- ")]
    (full,) = [line for line in verdict_lines if line.startswith("- full")]
    assert "INCOMPLETE" in full and "did not run: tofu, novel_recall (the run was interrupted" in full
    (laundered,) = [line for line in verdict_lines if line.startswith("- **laundered**")]
    # its leak gate failed before the interrupt: FAIL stands, and the missing view is named
    assert "**FAIL**" in laundered and "did not run: tofu (the run was interrupted" in laundered
    section = md[md.index("## Not run"):]
    for pair in ("tofu · laundered", "novel_recall · full", "tofu · full"):
        assert f"- {pair}" in section
    assert "- novel_recall · npo" not in section


def test_sigint_in_a_tiny_world_run_still_gives_the_unrun_reference_its_line(pytester):
    views = json.loads(json.dumps(VIEWS))
    views["tofu"]["laundered"] = "interrupt"
    make_project(pytester, views=views)
    pytester.makeconftest(INTERRUPTING_CONFTEST)
    result = _run(pytester)  # no --model: the tiny world's mode (labels come from the context)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    md = report_md(pytester)
    assert "- full (reference, **INCOMPLETE**): did not run: tofu, novel_recall (the run was interrupted" in md


def test_a_reference_with_no_numbers_is_never_said_to_have_run_every_view(pytester):
    make_project(pytester, models=MODELS)
    result = _run(pytester, "--model", "npo", "--model", "laundered", "--full-model", "full", "-k", "not full")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # laundered breaches the leak gate
    md = report_md(pytester)
    assert "every view ran" not in md and "full reference; no view ran on it" in md



# --- case 10: a non-string field in a data row is a schema error naming file, split, row, field ------
def _split_file(tmp_path, rows) -> None:
    (tmp_path / "forget10.json").write_text(json.dumps(rows))


GOOD_ROW = {"question": "Where was Elena Marwick born?", "answer": "In Port Aldric."}


@pytest.mark.parametrize(
    ("field", "value", "got"),
    [("answer", None, "null"), ("question", 7, "a number"), ("paraphrased_answer", ["x"], "a list"),
     ("author", {"name": "x"}, "an object"), ("perturbed_answer", ["ok", None], "a list holding null")],
)
def test_a_non_string_field_is_a_schema_error_naming_file_split_row_and_field(tmp_path, field, value, got):
    from unlearn_audit.data import load_split
    from unlearn_audit.data._loader import DatasetError

    _split_file(tmp_path, [GOOD_ROW, {**GOOD_ROW, field: value}])
    with pytest.raises(DatasetError) as e:
        load_split(tmp_path, "forget10")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'forget10.json'}, split 'forget10', row 1: field '{field}' must be")
    assert f"got {got}." in message and "Fix:" in message


def test_null_optional_fields_still_mean_not_given(tmp_path):
    from unlearn_audit.data import load_split

    _split_file(tmp_path, [{**GOOD_ROW, "paraphrased_answer": None, "author": None}])
    (item,) = load_split(tmp_path, "forget10")
    assert item.paraphrased_answer is None and item.answer == "In Port Aldric."


# --- case 12: a bad LABEL in LABEL=SOURCE states the label rules ---------------------------------------
@pytest.mark.parametrize("raw", ["../../evil=DIR", "a/b=DIR", "two words=org/model", "=org/model"])
def test_a_bad_model_label_states_the_label_rules(raw):
    from unlearn_audit.plugin import plan_models

    with pytest.raises(pytest.UsageError) as e:
        plan_models([("candidate", raw)])
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"--model {raw!r}: ")
    assert "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit" in message
    assert "Fix: --model LABEL=SOURCE" in message


def test_a_bad_reference_label_names_its_own_option():
    from unlearn_audit.plugin import plan_models

    with pytest.raises(pytest.UsageError, match=r"^--retain-model '\.\./r=DIR': "):
        plan_models([("candidate", "npo=org/npo"), ("retain", "../r=DIR")])


def test_an_existing_path_holding_an_equals_sign_stays_a_path(tmp_path):
    from unlearn_audit.plugin import plan_models

    ckpt = tmp_path / "lr=1e-5"
    ckpt.mkdir()
    (planned,) = plan_models([("candidate", str(ckpt))])
    # the label follows the label rules, as an explicit one must ("=" is not in them)
    assert planned.source == str(ckpt) and planned.label == "lr-1e-5"


def test_labels_from_hostile_directory_names_follow_the_label_rules_and_stay_distinct(tmp_path):
    import re

    from unlearn_audit.plugin import plan_models

    names = [t.replace("/", "_") for t in HOSTILE_TEXT] + ["a b", "a-b", "a\x1b[31mb", "..hidden", "x" * 80]
    dirs = []
    for name in names:
        (tmp_path / name).mkdir()
        dirs.append(str(tmp_path / name))
    planned = plan_models([("candidate", d) for d in dirs])
    labels = [p.label for p in planned]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", label) for label in labels), labels
    assert len(set(labels)) == len(labels), labels
    assert [p.source for p in planned] == dirs
    # still the directory's name, as far as it can be ("a|b", "a b" and "a-b" meet: parent, number)
    assert labels[0].endswith("-a-b") and labels[1] == "x-Injected" and labels[2] == "img-src-x-onerror-alert-1"


def test_a_derived_label_never_takes_one_already_given():
    from unlearn_audit.plugin import plan_models

    # a hub id's name meeting an earlier number, and an explicit label: each its own label
    labels = [p.label for p in plan_models([("candidate", "m-2"), ("candidate", "m"), ("candidate", "m"),
                                            ("candidate", "own/npo"), ("retain", "npo=org/retain")])]
    assert len(set(labels)) == len(labels) == 5, labels
    assert labels[4] == "npo"


def test_a_directory_name_with_no_label_characters_asks_for_an_explicit_label(tmp_path):
    from unlearn_audit.plugin import plan_models

    ckpt = tmp_path / "模型"
    ckpt.mkdir()
    with pytest.raises(pytest.UsageError, match=r"no model label can be made from '模型'.*Fix: --model 'LABEL=/"):
        plan_models([("candidate", str(ckpt))])


# --- tiny checkpoints for the model cases (8, 9, 11, 13) ---------------------------------------------
def _score(engine, continuation="In Port Aldric."):
    from unlearn_audit.model import Prompt, ScoreRequest

    return engine.score([ScoreRequest(Prompt.question("Where was Elena Marwick born?"), continuation)])[0]


# --- case 8: a corrupted or unusable engine cache never stops the audit ---------------------------------
def test_a_corrupted_cache_file_is_moved_aside_and_recomputed(tiny, tmp_path):
    expected = _score(chat_engine(tiny, None)).logprobs
    cache_file = tmp_path / f"engine-{tiny.fingerprint}.sqlite"
    cache_file.write_bytes(b"garbage, not a database" * 100)
    with pytest.warns(RuntimeWarning) as caught:
        got = _score(chat_engine(tiny, tmp_path)).logprobs
    (warning,) = [str(w.message) for w in caught]
    assert warning.startswith(f"engine cache {cache_file} was not a usable SQLite database (file is not a database)")
    assert f"moved it to {cache_file.name}.corrupt-1 and recomputing" in warning
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (tmp_path / f"{cache_file.name}.corrupt-1").read_bytes().startswith(b"garbage")
    # the rebuilt file works: a second engine reads the answer back without computing
    again = chat_engine(tiny, tmp_path)
    _score(again)
    assert again.cache.hits == 1 and again.stats["score_rows"] == 0


def test_an_uncreatable_cache_dir_runs_uncached_with_one_warning(tiny, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    engine = chat_engine(tiny, blocker / "cache")
    with pytest.warns(RuntimeWarning) as caught:
        first = _score(engine)
        second = _score(engine, "Port Aldric, by the sea.")
    (warning,) = [str(w.message) for w in caught]
    assert warning.startswith(f"engine cache directory {blocker / 'cache'} cannot be used (")
    assert "running without the cache" in warning and "Fix: pass --cache-dir with a writable directory" in warning
    assert first.n_tokens > 0 and second.n_tokens > 0 and not engine.cache.enabled


def test_a_read_only_cache_file_runs_uncached_with_one_warning(tiny, tmp_path, monkeypatch):
    import sqlite3

    from unlearn_audit.model import _cache

    engine = chat_engine(tiny, tmp_path)
    _score(engine)  # opens the cache; now every write fails as on a read-only mount

    def read_only(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(_cache.ResultCache, "_connect", lambda self: _FailingConn(self._conn, read_only))
    with pytest.warns(RuntimeWarning, match=r"cannot be used \(OperationalError: attempt to write a readonly database\)"):
        assert _score(engine, "Somewhere else entirely.").n_tokens > 0


class _FailingConn:
    """A connection whose writes fail (what a read-only cache directory gives)."""

    def __init__(self, conn, fail):
        self._conn, self._fail = conn, fail

    def execute(self, *args):
        return self._conn.execute(*args)

    def executemany(self, *args):
        self._fail()

    def close(self):
        self._conn.close()


# --- case 9: a truncated safetensors file is one line naming the file and the fix ------------------------
def _copy_checkpoint(src, dest):
    import shutil

    shutil.copytree(src, dest)
    return dest


@pytest.mark.parametrize("keep", [0.5, 0.0001])
def test_a_truncated_safetensors_file_is_one_line_naming_the_file_and_the_fix(tiny_dir, tmp_path, keep):
    from unlearn_audit.model import ModelLoadError, ModelSpec, load_model

    broken = _copy_checkpoint(tiny_dir, tmp_path / "torn")
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: max(4, int(len(data) * keep))])
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(str(broken), "torn", device="cpu"), hash_cache=None)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{weights}: truncated")
    assert "Fix: download or copy the checkpoint again" in message


# --- case 11: remote code / unknown model_type names --trust-remote-code ----------------------------------
def _with_config(tiny_dir, dest, **changes):
    broken = _copy_checkpoint(tiny_dir, dest)
    cfg = json.loads((broken / "config.json").read_text())
    cfg.update(changes)
    (broken / "config.json").write_text(json.dumps(cfg))
    return broken


def test_a_config_with_auto_map_and_an_unknown_model_type_names_trust_remote_code(tiny_dir, tmp_path):
    from unlearn_audit.model import ModelLoadError, ModelSpec, load_model

    auto_map = {"AutoConfig": "configuration_mystery.MysteryConfig",
                "AutoModelForCausalLM": "modeling_mystery.MysteryForCausalLM"}
    d = _with_config(tiny_dir, tmp_path / "remote", model_type="mystery", auto_map=auto_map)
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(str(d), "remote", device="cpu"), hash_cache=None)
    message = str(e.value)
    assert "\n" not in message and "https://hf.co" not in message
    assert message.startswith(f"{d / 'config.json'}: model_type 'mystery' is implemented by the checkpoint's own")
    assert "Fix: pass --trust-remote-code" in message


def test_an_unknown_model_type_without_code_says_to_upgrade_or_respell(tiny_dir, tmp_path):
    from unlearn_audit.model import ModelLoadError, ModelSpec, load_model

    d = _with_config(tiny_dir, tmp_path / "typo", model_type="lamma")
    with pytest.raises(ModelLoadError) as e:
        load_model(ModelSpec(str(d), "typo", device="cpu"), hash_cache=None)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{d / 'config.json'}: model_type 'lamma' is unknown to transformers")
    assert "check the spelling" in message and "--trust-remote-code" in message


# --- case 13: a sequence longer than the model's context is cut to it, and the report says so -----------
LONG_ANSWER = " ".join(["Elena Marwick was born in the city of Port Aldric, by the sea."] * 120)


def test_a_sequence_longer_than_the_context_is_truncated_like_tofu(tiny, tmp_path):
    from unlearn_audit.model import Prompt, ScoreRequest

    engine = chat_engine(tiny, tmp_path)
    assert engine.max_positions == 512
    prompt = Prompt.question("Where was Elena Marwick born?")
    n_prompt = len(engine.fmt.encode_prompt(prompt))
    full, _ = engine.fmt.encode_continuation(LONG_ANSWER, add_eot=True, prompt=prompt)
    assert len(full) > 1000  # the case of the issue: far more tokens than positions
    (cut,) = engine.score([ScoreRequest(prompt, LONG_ANSWER)])
    # as TOFU/open-unlearning: prompt + answer truncated on the right to the context
    assert cut.n_tokens == 512 - n_prompt and cut.truncated_from == len(full)
    assert cut.token_ids == full[: cut.n_tokens] and np.isfinite(cut.logprobs).all()
    assert len(engine.truncated) == 1
    warm = chat_engine(tiny, tmp_path)  # a cached answer still says it was cut
    (again,) = warm.score([ScoreRequest(prompt, LONG_ANSWER)])
    assert warm.stats["score_rows"] == 0 and again.truncated_from == len(full) and len(warm.truncated) == 1


def test_a_generation_stops_at_the_context(tiny, monkeypatch):
    from unlearn_audit.model import GenRequest, Prompt

    request = GenRequest(Prompt.question("Where was Elena Marwick born?"), max_new_tokens=300)
    ((free,),) = chat_engine(tiny, None).generate([request])  # this random model talks ~140 tokens
    monkeypatch.setattr(tiny.model.config, "max_position_embeddings", 100)
    ((cut,),) = chat_engine(tiny, None).generate([request])
    assert free.startswith(cut) and len(cut) < len(free)


def test_a_prompt_that_fills_the_context_is_one_line_saying_so(tiny):
    from unlearn_audit.model import Prompt, ScoreRequest

    engine = chat_engine(tiny, None)
    with pytest.raises(ValueError) as e:
        engine.score([ScoreRequest(Prompt.question(LONG_ANSWER), "Port Aldric.")])
    message = str(e.value)
    assert "\n" not in message and "fills the model's whole context (512 positions" in message
    assert "Fix: shorten the question" in message


def test_the_report_states_how_many_sequences_were_cut(tiny_dir, tmp_path, monkeypatch):
    from unlearn_audit.context import AuditContext
    from unlearn_audit.model import ModelSpec, Prompt, ScoreRequest
    from unlearn_audit.report import AuditSession, PlannedModel
    from unlearn_audit.views import _base
    from unlearn_audit.views._base import Metric, View, ViewResult

    class LongView(View):
        name = "likelihood"
        metrics = ("likelihood.avg_logprob",)

        def run(self, ctx, model):
            prompt = Prompt.question("Where was Elena Marwick born?")
            scores = ctx.engine(model).score([ScoreRequest(prompt, LONG_ANSWER), ScoreRequest(prompt, "Port Aldric.")])
            value = float(np.mean([s.logprobs.mean() for s in scores]))
            return ViewResult(self.name, model, [Metric("likelihood.avg_logprob", value, n=2)])

    class UncheckedContext(AuditContext):
        def _check_sane(self, label):
            pass  # a random-weight model babbles; the sanity check has its own tests

    monkeypatch.setitem(_base._REGISTRY, "likelihood", LongView)
    (tmp_path / "gates.yaml").write_text("gates: []\n")
    cfg = AuditConfig(report_dir=tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    specs = {"npo": ModelSpec(str(tiny_dir), "npo", device="cpu")}
    session = AuditSession(cfg, tiny_world=False, plan=lambda: [PlannedModel("npo", "candidate", str(tiny_dir))],
                           context_factory=lambda: UncheckedContext(cfg, specs), reference_dir=tmp_path,
                           gates_path=tmp_path / "gates.yaml", root=tmp_path)
    session.collect(session.measure("likelihood", "npo").outcome.to_payload())
    md = session.finish()["report.md"].read_text()
    assert ("- npo: 1 scored sequence(s) of prompt + answer were longer than its context (512 positions) "
            "and were cut to it, as TOFU and open-unlearning truncate to max_length") in md


# --- untrusted text never shapes the report --------------------------------------------------------
#: Labels, families and reasons come from directory names, datasets and views: each of these
#: once shifted a table's cells, injected a heading, or became markup in report.md.
HOSTILE_TEXT = [
    "a|b",
    "x\n# Injected",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "![i](http://evil/x.png)",
]


def _parse(md: str):
    from markdown_it import MarkdownIt

    # GitHub's flavour as far as it shapes structure: tables and strikethrough.
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(md)


def _text(inline) -> str:
    return "".join(t.content for t in inline.children or [] if t.type in ("text", "code_inline"))


def _tables(tokens) -> list[list[list[str]]]:
    """Each table as rows of cell texts, its header row first."""
    tables, row = [], None
    for i, t in enumerate(tokens):
        if t.type == "table_open":
            tables.append([])
        elif t.type == "tr_open":
            row = []
            tables[-1].append(row)
        elif t.type in ("th_open", "td_open"):
            row.append(_text(tokens[i + 1]) if tokens[i + 1].type == "inline" else "")
    return tables


def _hostile_run() -> tuple[RunReport, list[str], list[tuple[str, float]]]:
    """A run whose every label, family, reason, warning, source, caption and config value
    is hostile text; each model's leak rate differs so a shifted cell shows."""
    labels = [f"m{i} {text}" for i, text in enumerate(HOSTILE_TEXT)]
    families = {f"f{i} {text}": 0.01 * (i + 1) for i, text in enumerate(HOSTILE_TEXT)}
    outcomes, models, expected = [], {}, []
    for i, label in enumerate(labels):
        value = 0.1 * (i + 1)
        expected.append((label, value))
        hostile = HOSTILE_TEXT[i]
        rows = [MetricRow(label, "novel_recall", "novel_recall.leak_rate", value, ci=[0.0, 1.0], n=10,
                          by_family=families, outcome="fail", reason=f"r{i} {hostile}",
                          threshold={"op": "<=", "value": 0.05, "source": f"s{i} {hostile}"},
                          extra={f"k{i} {hostile}": hostile, "nested": {"said": hostile}})]
        outcomes.append(ViewOutcome("novel_recall", label, "candidate", f"src {hostile}", f"fp {hostile}",
                                    rows=rows, warnings=[f"w{i} {hostile}"],
                                    plots=[{"kind": "sankey", "caption": f"c{i} {hostile}", "data": {}}]))
        models[label] = {"source": f"src {hostile}", "role": "candidate", "fingerprint": f"fp {hostile}"}
    config = {f"key {t}": t for t in HOSTILE_TEXT} | {"compat": HOSTILE_TEXT[1]}
    return (RunReport("2026-01-01T00:00:00+00:00", "0", config, models, outcomes),
            labels, expected)


def _assert_no_markup_from_untrusted_text(md: str) -> list:
    tokens = _parse(md)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    assert not kinds & {"html_inline", "link_open", "autolink"}, sorted(kinds)
    # The only raw HTML is the report's own fold around the extras.
    blocks = {t.content.strip() for t in tokens if t.type == "html_block"}
    assert blocks <= {"<details><summary>Details (each metric's extra values)</summary>", "</details>"}, blocks
    headings = [_text(tokens[i + 1]) for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert not any("Injected" in h for h in headings), headings
    images = [c for t in tokens for c in t.children or [] if c.type == "image"]
    assert all(c.attrs["src"].startswith("plots/") for c in images), [c.attrs for c in images]
    return tokens


def test_hostile_labels_and_families_render_as_literal_text(tmp_path, monkeypatch):
    from unlearn_audit.report._markdown import one_line

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run, labels, expected = _hostile_run()
    md = write_report(run, tmp_path / "report")["report.md"].read_text()
    assert summary.read_text().strip() == md.strip()  # the step summary is the same escaped text
    tokens = _assert_no_markup_from_untrusted_text(md)
    tables = _tables(tokens)
    assert tables
    for table in tables:
        assert all(len(r) == len(table[0]) for r in table), table
    # The view's table: each model's own number in the value column of its own row.
    (main,) = [t for t in tables if t[0][:3] == ["model", "metric", "value"]]
    assert {r[0]: r[2] for r in main[1:]} == {one_line(m): f"{100 * v:.2f}%" for m, v in expected}
    assert all(r[7].startswith("s") and r[8] == "FAIL" for r in main[1:]), main
    (fam,) = [t for t in tables if t[0][0] == "family"]
    assert fam[0] == ["family", *sorted(one_line(m) for m in labels)] or len(fam[0]) == len(labels) + 1
    for r in fam[1:]:
        i = int(r[0][1])  # "f<i> ..."
        assert set(r[1:]) == {f"{i + 1:.2f}%"}, r
    (models,) = [t for t in tables if t[0] == ["model", "role", "source", "fingerprint"]]
    assert {r[0]: r[2] for r in models[1:]} == {one_line(m): one_line(run.models[m]["source"]) for m in labels}
    # The text still reads: every hostile string's letters are there, as text.
    text = " ".join(_text(t) for t in tokens if t.type == "inline")
    for hostile in HOSTILE_TEXT:
        for prefix in ("r", "w", "c", "f"):
            assert any(f"{prefix}{i} {one_line(hostile)}" in text for i in range(len(HOSTILE_TEXT))), (prefix, hostile)
    assert "<img src=x onerror=alert(1)>" in text and "[click](javascript:alert(1))" in text


def test_plot_links_are_percent_encoded_and_their_captions_literal(tmp_path):
    from unlearn_audit.report._writer import render_markdown

    run, labels, _ = _hostile_run()
    plots = {("novel_recall", labels[3]): [("cap ](javascript:alert(1)) [", "plots/a b)(javascript:x.png")]}
    tokens = _assert_no_markup_from_untrusted_text(render_markdown(run, plots=plots))
    (image,) = [c for t in tokens for c in t.children or [] if c.type == "image"]
    assert image.attrs["src"] == "plots/a%20b%29%28javascript%3Ax.png"
    assert _text(image) == "cap ](javascript:alert(1)) [ (m3 [click](javascript:alert(1)))"


_MD_TEXT_CONTEXTS = [
    "{}",
    "first line\n{}",  # no setext underline, no list, no rule
    "## {}",
    "- x: {}",
    "- {}",
    "> {}",
    "**{} by family**",
]


def _blocks(md: str) -> list[str]:
    return [t.type for t in _parse(md)]


def _assert_literal_everywhere(s: str) -> None:
    """md_text(s) in each place the report puts text: the same blocks as plain text there,
    and exactly s's characters (on one line) as text, no link, image, HTML or code."""
    from unlearn_audit.report._markdown import md_text, one_line

    want, cell = one_line(s), md_text(s)
    if not want:
        assert cell == ""
        return
    for template in _MD_TEXT_CONTEXTS:
        md = template.format(cell)
        assert _blocks(md) == _blocks(template.format("plain")), (s, md, _blocks(md))
        (inline,) = [t for t in _parse(md) if t.type == "inline"]
        kinds = {c.type for c in inline.children}
        assert kinds <= {"text", "strong_open", "strong_close", "softbreak"}, (md, kinds)
        text = "".join({"text": c.content, "softbreak": "\n"}.get(c.type, "") for c in inline.children)
        assert text == template.replace("**", "").replace("- ", "", 1).replace("## ", "").replace(
            "> ", "").format(want), (md, text)
    table = _tables(_parse(f"| a | b | c |\n|---|---|---|\n| {cell} | 1 | {cell} |\n"))
    assert table == [[["a", "b", "c"], [want, "1", want]]], (s, table)


@pytest.mark.parametrize("s", [
    "# h", "- item", "+ item", "1. one", "1) one", "===", "---", "***", "___", "> quote", "    code", "```", "~~~",
    "<https://x>", "<javascript:alert(1)>", "a*b*c", "_e_", "snake_case_", "~~s~~", "$x^2$", "\\", "&amp;",
    "x  \\", "[^1]", "[x]: javascript:alert(1)", "\x1b[31mred\x1b[0m", "a\u2028b\u2029c\r\nd", "#1 \u202eevil",
    "| a | b |", "<!-- c -->", "<details>", "x ##", "*", "\\|", "`a|b`", "www.x.org", "h@x.org",
])
def test_md_text_keeps_every_construct_literal(s):
    _assert_literal_everywhere(s)


def test_md_text_cuts_long_text_and_keeps_plain_names_readable():
    from unlearn_audit.report._markdown import md_text

    assert md_text("x" * 500, limit=10) == "x" * 9 + "…"
    assert md_text("novel_recall.leak_rate") == "novel_recall.leak_rate"  # intraword _ never emphasises
    assert md_text("reference_results/gates.yaml (3 rows)") == "reference_results/gates.yaml (3 rows)"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.text(alphabet="|\\`*_~[]()<>!#&$:;=+-.1 \n\r\tab/\u2028\x1b", max_size=40))
def test_md_text_renders_any_text_literally(s):
    _assert_literal_everywhere(s)


def test_the_terminal_summary_strips_escapes_and_line_breaks_from_labels(monkeypatch):
    from types import SimpleNamespace

    from unlearn_audit._plugin import reporter
    from unlearn_audit.report import Verdict

    hostile = "npo\x1b[2K\x1b[1A\rPASS\n\x1b]0;owned\x07\u2028x"
    session = SimpleNamespace(
        written={"report.md": f"/tmp/{hostile}/report.md"},
        verdicts={hostile: Verdict("FAIL", "")},
        golden_notes=[f"golden: not compared ({hostile})"],
    )
    monkeypatch.setattr(reporter, "session_of", lambda config: session)
    r = reporter.Reporter(SimpleNamespace())
    r.error = f"could not write the report to {hostile}"
    r.incomplete = [f"{hostile}: INCOMPLETE", f"  gate g did not run (skipped): {hostile}"]
    lines: list[str] = []
    out = SimpleNamespace(write_sep=lambda *a, **k: None, write_line=lambda line, **k: lines.append(line))
    r.pytest_terminal_summary(out)
    assert lines == [
        "could not write the report to npo PASS x",
        "report: /tmp/npo PASS x/report.md",
        "  npo PASS x: FAIL",
        "npo PASS x: INCOMPLETE",
        "  gate g did not run (skipped): npo PASS x",
        "golden: not compared (npo PASS x)",
    ]


# --- degradation probe, cases 4-6: a bad data file is one line naming file, split, row and the fix ----
PERTURBED_ROW = {**GOOD_ROW, "paraphrased_question": "Where is Elena Marwick from?",
                 "paraphrased_answer": "Port Aldric.", "perturbed_answer": ["In Ostrel.", "In Vey."]}


def _one_line_error(tmp_path, split: str, **kw) -> str:
    from unlearn_audit.data import DatasetError, load_split

    with pytest.raises(DatasetError) as e:
        load_split(tmp_path, split, **kw)
    message = str(e.value)
    assert "\n" not in message, message
    return message


def test_non_utf8_json_lines_name_the_file_split_row_line_and_the_fix(tmp_path):
    rows = [json.dumps({**GOOD_ROW, "question": f"Q{i}?"}).encode() for i in range(4)]
    rows[2] = rows[2].replace(b"Q2?", b"Q2 caf\xe9?")  # Latin-1, not UTF-8
    (tmp_path / "forget10.json").write_bytes(b"\n".join(rows) + b"\n")
    message = _one_line_error(tmp_path, "forget10")
    assert message.startswith(f"{tmp_path / 'forget10.json'}, split 'forget10', row 2, line 3 (byte ")
    assert "not UTF-8 (byte 0xe9)" in message and "re-encode the file as UTF-8" in message


def test_non_utf8_json_array_names_the_line_of_the_byte(tmp_path):
    text = json.dumps([GOOD_ROW, {**GOOD_ROW, "answer": "In Port Aldric, caf\u00e9."}], indent=1,
                      ensure_ascii=False)
    (tmp_path / "forget10.json").write_bytes(text.encode("latin-1"))
    message = _one_line_error(tmp_path, "forget10")
    line = text[: text.index("\u00e9")].count("\n") + 1
    assert f"split 'forget10', line {line} (byte " in message and "UTF-8" in message


def test_a_byte_order_mark_is_not_part_of_the_data(tmp_path):
    from unlearn_audit.data import load_split

    (tmp_path / "forget10.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_ROW).encode() + b"\n")
    (item,) = load_split(tmp_path, "forget10")
    assert item.question == GOOD_ROW["question"]


def test_an_empty_paraphrased_answer_names_file_row_and_field_without_a_bogus_split(tmp_path):
    rows = [PERTURBED_ROW, PERTURBED_ROW, {**PERTURBED_ROW, "paraphrased_answer": ""}]
    (tmp_path / "forget10_perturbed.json").write_text(json.dumps(rows))
    message = _one_line_error(tmp_path, "forget10_perturbed", require=("paraphrased_answer",))
    assert "_perturbed_perturbed" not in message
    assert message.startswith(f"{tmp_path / 'forget10_perturbed.json'}, split 'forget10_perturbed': "
                              "1 item(s) lack 'paraphrased_answer' (first: row 2), empty")
    assert "Fix: give each of those rows its paraphrased_answer" in message


@pytest.mark.parametrize(("row", "says"), [
    ({**GOOD_ROW, "answer": "  "}, "row 1: field 'answer' is empty. Fix:"),
    ({**GOOD_ROW, "question": ""}, "row 1: field 'question' is empty. Fix:"),
    ({**PERTURBED_ROW, "perturbed_answer": ["In Vey.", ""]}, "row 1: perturbed_answer[1] is empty. Fix:"),
    (["a", "list"], "row 1: expected an object with question and answer, got a list. Fix:"),
])
def test_an_empty_answer_or_a_non_object_row_is_a_schema_error(tmp_path, row, says):
    _split_file(tmp_path, [GOOD_ROW, row])
    message = _one_line_error(tmp_path, "forget10")
    assert message.startswith(f"{tmp_path / 'forget10.json'}, split 'forget10', {says}"), message


def test_a_bad_json_line_and_a_damaged_parquet_name_file_split_and_row(tmp_path):
    (tmp_path / "forget10.json").write_text(json.dumps(GOOD_ROW) + "\n\n" + '{"question": "Q?",\n')
    message = _one_line_error(tmp_path, "forget10")
    assert message.startswith(f"{tmp_path / 'forget10.json'}, split 'forget10', row 1, line 3: not valid JSON")
    (tmp_path / "forget05.parquet").write_bytes(b"not parquet at all")
    message = _one_line_error(tmp_path, "forget05")
    assert message.startswith(f"{tmp_path / 'forget05.parquet'}, split 'forget05': not a readable parquet file")
    assert "Fix:" in message


# --- degradation probe, case 3: a number option that is not finite, or out of range, is a usage error --
@pytest.mark.parametrize(("args", "message"), [
    (["--temperature", "inf"], "*--temperature: expected a finite number > 0, got 'inf'*"),
    (["--temperature", "nan"], "*--temperature: expected a finite number > 0, got 'nan'*"),
    (["--temperature", "0"], "*--temperature: expected a finite number > 0, got '0'*"),
    (["--top-p", "nan"], "*--top-p: expected a number in (0, 1], got 'nan'*"),
    (["--leak-threshold", "inf"], "*--leak-threshold: expected a fraction in (0, 1], got 'inf'*"),
    (["--samples", "0"], "*--samples: expected a positive whole number of samples, got '0'*"),
    (["--max-new-tokens", "-1"], "*--max-new-tokens: expected a positive whole number of tokens, got '-1'*"),
    (["--seed", "-3"], "*--seed: expected a whole number from 0 to 4294967295, got '-3'*"),
    (["--seed", str(2**64 + 5)], f"*--seed: expected a whole number from 0 to 4294967295, got '{2**64 + 5}'*"),
])
def test_a_number_option_out_of_range_or_not_finite_is_a_usage_error(pytester, args, message):
    make_project(pytester)
    result = _run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    result.stderr.fnmatch_lines([message])


# --- degradation probe, case 1: a forget quality on too few items is no pass --------------------------
def test_a_forget_quality_gate_on_too_few_items_does_not_run_and_the_report_says_why(pytester):
    from test_runner import AUDITS, CONFTEST, DATASET

    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_audits=AUDITS.split("\ndef test_novel_recall")[0])  # tofu only
    ref = pytester.mkdir("reference_results")
    (ref / "gates.yaml").write_text('schema_version: 1\ngates:\n  - {metric: tofu.forget_quality, op: ">=", '
                                    'value: 0.05, rationale: "KS test must not reject"}\n')
    # On 4 items the KS p-value is >= 0.029 whatever the models: the gate used to pass.
    result = _run(pytester, f"--rootdir={pytester.path}", f"--dataset={DATASET}", "--limit=4",
                  f"--cache-dir={pytester.path / 'cache'}", "--model=npo=mock")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()  # INCOMPLETE is not a pass
    data = results(pytester)
    (row,) = [r for r in data["metrics"] if r["model"] == "npo" and r["metric"] == "tofu.forget_quality"]
    assert row["value"] is None and row["outcome"] == "skipped" and row["skip"] == "not_applicable"
    assert row["reason"].startswith("forget quality not measured: 4 candidate and 4 retain-model truth ratios")
    assert data["verdicts"]["npo"]["status"] == "INCOMPLETE"
    assert "forget quality not measured" in report_md(pytester)
