"""Live progress on pytest's terminal while an audit test runs, never in captured output.

The engine reports each loop through :func:`unlearn_audit.progress.task`; the inner
sessions' fake view calls it the same way (the engine's own use is checked at the end,
on a tiny random checkpoint).
"""

from __future__ import annotations

import json
import re

import pytest

from test_plugin import ISOLATED
from unlearn_audit import progress

CONFTEST = '''
import sys
import time

from unlearn_audit import progress
from unlearn_audit.model.mock import MockModel, mock_context
from unlearn_audit.views import Metric, View, ViewResult, register_view


def _slow_view(view_name):
    class SlowView(View):
        name = view_name
        metrics = (f"{view_name}.rate",)

        def run(self, ctx, model):
            task = progress.task("score", 4)
            for _ in range(4):
                time.sleep(0.12)  # above the redraw interval: every step is drawn
                task.update(1)
            task.close()
            return ViewResult(self.name, model, [Metric(f"{view_name}.rate", 0.5, n=4)])

    return register_view(SlowView)


_slow_view("slow_view")
_slow_view("slow_fail")


def pytest_unlearn_audit_context(config, audit_config, tiny_world):
    return mock_context(audit_config, {"cand": MockModel("candidate")})
'''

TESTS = '''
def test_slow_view(audit, model):
    audit.check("slow_view", model)


def test_slow_fail(audit, model):
    audit.check("slow_fail", model)
    print("the test's own output")
    assert False, "fails on purpose"
'''

STATUS = re.compile(r"\x1b7 cand · slow_view: score (\d)/4 seq\x1b8")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    data = pytester.mkdir("data")
    rows = [{"question": "q?", "answer": "a.", "paraphrased_question": "p?", "paraphrased_answer": "p.",
             "perturbed_answer": ["x.", "y."]}]
    (data / "forget10_perturbed.json").write_text(json.dumps(rows))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_audits=TESTS)
    (pytester.mkdir("reference_results") / "gates.yaml").write_text("schema_version: 1\ngates: []\n")
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest(*ISOLATED, "--model", "cand", "--dataset", "data", *args)
    result.assert_outcomes(passed=1, failed=1)
    return result


def _captured_sections(text: str) -> str:
    """Every "Captured ... call" section of the failure report."""
    return "\n".join(re.findall(r"-+ Captured \w+ call -+\n(.*?)(?=\n[-=]{5,})", text, flags=re.S))


def test_on_a_terminal_progress_is_drawn_live_and_erased(project):
    result = _run(project, "-v", "--color=yes")
    out = result.stdout.str()
    line = next(ln for ln in result.outlines if "test_slow_view[cand]" in ln and "PASSED" in ln)
    # Drawn while the test ran: after pytest named the test, before its outcome.
    steps = [int(m.group(1)) for m in STATUS.finditer(line)]
    assert steps == [0, 1, 2, 3, 4], line
    assert line.index("test_slow_view[cand]") < line.index("\x1b7") < line.index("PASSED")
    assert "\x1b7 cand · slow_view: running\x1b8" in line
    assert line.count("\x1b[K") >= 6  # each redraw erased the last one, then the view's end
    # No line of the session is a log line: the terminal got the live status only.
    assert "[unlearn-audit] cand" not in out
    failing = next(ln for ln in result.outlines if "test_slow_fail[cand]" in ln and "FAILED" in ln)
    assert [int(m) for m in re.findall(r"slow_fail: score (\d)/4 seq", failing)] == [0, 1, 2, 3, 4]
    captured = _captured_sections(out)
    assert "the test's own output" in captured  # the section exists and was read
    assert "slow_fail: score" not in captured and "seq" not in captured


def test_without_a_terminal_each_finished_step_is_one_line(project):
    result = _run(project)
    result.stdout.fnmatch_lines([
        "[[]unlearn-audit[]] cand · slow_view: score 4 seq in *s",
        "[[]unlearn-audit[]] cand · slow_view: done in *s",
    ])
    out = result.stdout.str()
    assert "\x1b7" not in out  # no cursor games in a log
    assert "[unlearn-audit] cand · slow_fail: score 4 seq in" in out
    captured = _captured_sections(out)
    assert "the test's own output" in captured and "unlearn-audit] cand" not in captured


@pytest.mark.parametrize("args", [("-q",), ("-q", "--color=yes")], ids=["log", "terminal"])
def test_quiet_shows_no_progress(project, args):
    out = _run(project, *args).stdout.str()
    assert "slow_view: score" not in out and "slow_view: running" not in out
    assert "the test's own output" in out  # the run did show the failure


class _Sink:
    def __init__(self):
        self.updates: list[tuple[str, int, int]] = []
        self.finished: list[tuple[str, int]] = []

    def update(self, desc, done, total):
        self.updates.append((desc, done, total))

    def finish(self, desc, total, seconds):
        self.finished.append((desc, total))


def test_the_engine_reports_its_loops_to_the_sink_not_to_stderr(tmp_path, capfd, monkeypatch):
    import _tiny
    from unlearn_audit.model import Engine, ModelSpec, ScoreRequest, load_model, make_format

    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "cache"))
    ckpt = _tiny.save_checkpoint(tmp_path / "m")
    lm = load_model(ModelSpec(source=str(ckpt), label="m", role="candidate", device="cpu"))
    engine = Engine(lm, make_format(lm.tokenizer), cache_dir=None, batch_size=1, progress=True)
    capfd.readouterr()
    sink = _Sink()
    with progress.reporting_to(sink):
        engine.score([ScoreRequest(f"Question {i}?", f"Answer {i}.") for i in range(5)])
    assert sink.updates[0] == ("score", 0, 5) and sink.updates[-1] == ("score", 5, 5)
    assert sink.finished == [("score", 5)]
    assert capfd.readouterr().err == ""  # no tqdm bar: it would land in captured stderr
    assert progress.current() is None
