"""The runner: declared needs first, each (view, model) once, shared across xdist workers.

Everything here runs real views on the mock backend (:mod:`unlearn_audit.model.mock`):
no weights load, so these tests take seconds.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest

from _data import REPO
from test_plugin import ISOLATED
from unlearn_audit.context import AuditConfig, AuditContext
from unlearn_audit.data import load_split
from unlearn_audit.model import ModelSpec
from unlearn_audit.model.mock import MockBackend, MockModel, knowing, mock_context
from unlearn_audit.runner import DependencyError, SharedResults
from unlearn_audit.views import Metric, Plot, Skip, View, ViewResult, register_view

DATASET = str(REPO / "fixtures" / "tiny_world")


def mock_models() -> dict[str, MockModel]:
    forget = load_split(DATASET, "forget10_perturbed")
    retain = load_split(DATASET, "retain_perturbed")
    return {
        "npo": MockModel("candidate", {**knowing(forget, fraction=0.25), **knowing(retain)}),
        "full": MockModel("full", {**knowing(forget), **knowing(retain)}),
        "retain": MockModel("retain", knowing(retain)),
        "base": MockModel("base", {}),
    }


def make_ctx(tmp_path: Path, limit: int | None = 8):
    cfg = AuditConfig(dataset=DATASET, limit=limit, samples=4, cache_dir=tmp_path, progress=False)
    return mock_context(cfg, mock_models())


def test_needs_are_computed_first_and_each_result_once(tmp_path):
    ctx = make_ctx(tmp_path)
    npo = ctx.result("tofu", "npo")
    # it got retain's truth ratios (8 items are too few to report the p-value itself)
    assert npo.metric("tofu.forget_quality").extra["retain_n"] == 8
    ctx.result("tofu", "retain")  # memoised: not computed again
    ctx.result("likelihood", "npo")
    order = [(c["view"], c["model"]) for c in ctx.runner.computed]
    assert order == [("tofu", "retain"), ("tofu", "npo"), ("likelihood", "full"), ("likelihood", "npo")]


def test_a_view_that_asks_for_an_undeclared_result_is_refused(tmp_path):
    @register_view
    class Sneaky(View):
        name = "sneaky"
        metrics = ("sneaky.x",)

        def run(self, ctx, model):
            ctx.result("novel_recall", "base")
            return ViewResult(self.name, model, [Metric("sneaky.x", 1.0)])

    with pytest.raises(DependencyError, match=r"without declaring it: return .* from sneaky.requires\(\)"):
        make_ctx(tmp_path).result("sneaky", "npo")


def test_a_cycle_of_needs_is_named(tmp_path):
    def view(name, other):
        class Cyclic(View):
            metrics = (f"{name}.x",)

            def requires(self, ctx, model):
                return [(other, model)]

            def run(self, ctx, model):  # pragma: no cover - never reached
                raise AssertionError

        Cyclic.name = name
        return register_view(Cyclic)

    view("ping", "pong"), view("pong", "ping")
    with pytest.raises(DependencyError, match=r"cycle: ping\(npo\) -> pong\(npo\) -> ping\(npo\)"):
        make_ctx(tmp_path).result("ping", "npo")


def test_a_backend_that_cannot_run_a_view_gives_a_typed_skip(tmp_path):
    # The mock has no hidden states: the masked probe is skipped as backend_unavailable.
    r = make_ctx(tmp_path).result("masked_probe", "npo")
    assert r.metrics and all(m.value is None and m.skip is Skip.BACKEND_UNAVAILABLE for m in r.metrics)
    assert "hidden states" in r.metrics[0].reason


def test_a_shared_result_reads_back_with_the_same_numbers(tmp_path):
    shared = SharedResults(tmp_path)
    result = make_ctx(tmp_path / "cache").result("tofu", "npo")
    result.metrics.append(Metric("tofu.nan_probe", math.nan, ci=(0.0, 1.0), extra={"curve": [1.5, None]}))
    result.plots.append(Plot("bars", "a caption", {"labels": ["a"], "values": [0.25]}))
    calls = []
    stored = shared.get_or_compute("tofu", "npo", lambda: calls.append(1) or result)
    again = shared.get_or_compute("tofu", "npo", lambda: calls.append(1) or result)
    assert calls == [1] and stored is result
    assert [m.name for m in again.metrics] == [m.name for m in result.metrics]
    for a, b in zip(again.metrics, result.metrics, strict=True):
        assert (a.value == b.value) or (math.isnan(a.value) and math.isnan(b.value))
        assert (a.ci, a.n, a.by_family, a.skip) == (b.ci, b.n, b.by_family, b.skip)
        assert a.extra == json.loads(json.dumps(b.extra))  # tuples come back as lists
    assert json.loads(json.dumps(again.records)) == json.loads(ViewResult.loads(result.dumps()).dumps())["records"]
    assert again.plots == result.plots
    assert [c["view"] for c in shared.computed()] == ["tofu"]


def test_labels_that_differ_only_in_punctuation_never_share_a_result(tmp_path):
    # npo+v1 and npo_v1 once mapped to one file name: the second was handed the first's result.
    shared = SharedResults(tmp_path)
    a = ViewResult("novel_recall", "npo+v1", [Metric("novel_recall.leak_rate", 0.75)])
    b = ViewResult("novel_recall", "npo_v1", [Metric("novel_recall.leak_rate", 0.0)])
    shared.get_or_compute("novel_recall", "npo+v1", lambda: a)
    got = shared.get_or_compute("novel_recall", "npo_v1", lambda: b)
    assert got.model == "npo_v1" and got.metric("novel_recall.leak_rate").value == 0.0
    again = shared.get_or_compute("novel_recall", "npo+v1", lambda: b)
    assert again.model == "npo+v1" and again.metric("novel_recall.leak_rate").value == 0.75
    assert [c["model"] for c in shared.computed()] == ["npo+v1", "npo_v1"]


def test_a_tampered_shared_result_is_recomputed_with_one_warning(tmp_path):
    shared = SharedResults(tmp_path)
    leak = ViewResult("novel_recall", "npo", [Metric("novel_recall.leak_rate", 0.75)])
    shared.get_or_compute("novel_recall", "npo", lambda: leak)
    (stored,) = [p for p in tmp_path.glob("novel_recall--npo*.json")]
    payload = json.loads(stored.read_text())
    payload["result"] = payload["result"].replace("0.75", "0.0")  # still valid JSON
    stored.write_text(json.dumps(payload))
    with pytest.warns(RuntimeWarning, match=r"did not match its key and checksum .* moved it to .*corrupt-1") as caught:
        got = shared.get_or_compute("novel_recall", "npo", lambda: leak)
        other = ViewResult("novel_recall", "npo", [])
        payload["result"] = other.dumps()
        stored.write_text(json.dumps(payload))  # a second damaged file in the run: no second warning
        shared.get_or_compute("novel_recall", "npo", lambda: leak)
    assert len(caught) == 1
    assert got.metric("novel_recall.leak_rate").value == 0.75
    assert [c["model"] for c in shared.computed()] == ["npo", "npo", "npo"]


def test_a_shared_result_of_other_weights_under_the_same_label_is_an_error(tmp_path):
    from unlearn_audit.runner import SharedResultError

    shared = SharedResults(tmp_path)
    leak = ViewResult("novel_recall", "npo", [Metric("novel_recall.leak_rate", 0.75)])
    shared.get_or_compute("novel_recall", "npo", lambda: leak, fingerprint=lambda: "fp-a")
    assert shared.fingerprints == {"npo": "fp-a"}
    reader = SharedResults(tmp_path)  # another worker, which loaded other weights
    with pytest.raises(SharedResultError, match=r"fingerprint fp-a, while this worker has fp-b .* changed during the run"):
        reader.get_or_compute("novel_recall", "npo", lambda: leak, fingerprint=lambda: "fp-b")
    assert reader.get_or_compute("novel_recall", "npo", lambda: leak).model == "npo"  # not loaded: no conflict
    assert reader.fingerprints == {"npo": "fp-a"}


class LazyMockContext(AuditContext):
    """A mock context whose backends are built on first use, as real engines are: a model
    whose results all came from another worker is never loaded in this one."""

    def __init__(self, config, models):
        specs = {label: ModelSpec(source=f"mock:{label}", label=label, role=m.role) for label, m in models.items()}
        super().__init__(config, specs)
        self._mock = dict(models)

    def _build_engine(self, label):
        if label not in self._engines:
            self._engines[label] = MockBackend(label, self._mock[label])


def test_a_worker_that_read_a_result_knows_its_fingerprint(tmp_path):
    cfg = AuditConfig(dataset=DATASET, limit=8, samples=4, cache_dir=tmp_path / "cache", progress=False)
    first, second = LazyMockContext(cfg, mock_models()), LazyMockContext(cfg, mock_models())
    for ctx in (first, second):
        ctx.share(tmp_path / "run")
    first.result("novel_recall", "npo")
    assert second.known_fingerprint("npo") is None  # nothing loaded, nothing read yet
    second.result("novel_recall", "npo")
    assert [c["worker"] for c in SharedResults(tmp_path / "run").computed()] == ["main"]  # read, not computed
    assert second.known_fingerprint("npo") == first.known_fingerprint("npo") is not None


CONFTEST = f'''
import sys
sys.path.insert(0, {str(REPO / "tests")!r})

from test_runner import mock_models
from unlearn_audit.model.mock import mock_context


def pytest_unlearn_audit_context(config, audit_config, tiny_world):
    return mock_context(audit_config, mock_models())
'''

AUDITS = "".join(f'''
def test_{view}(audit, model):
    audit.check("{view}", model)
''' for view in ("tofu", "novel_recall", "format_shift", "likelihood"))


def _mock_project(pytester: pytest.Pytester, conftest: str, gates: str) -> None:
    """A project auditing the mock world of ``conftest`` with AUDITS, gated by ``gates``
    (the YAML list under ``gates:``)."""
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_audits=AUDITS)
    ref = pytester.mkdir("reference_results")
    (ref / "gates.yaml").write_text("schema_version: 1\ngates:\n" + textwrap.dedent(gates))


def test_xdist_workers_compute_each_result_once_with_the_same_numbers(pytester: pytest.Pytester):
    _mock_project(pytester, CONFTEST, """\
          - {metric: tofu.model_utility, op: ">=", relative_to: full, factor: 0.0,
             rationale: "relative to full, so the candidate needs full's number"}
    """)
    # `--opt=value`: a path given as its own argument would move pytest's rootdir to the repo.
    # --limit=20: the fewest items forget quality is reported on (FORGET_QUALITY_MIN_ITEMS).
    common = (*ISOLATED, f"--rootdir={pytester.path}", f"--dataset={DATASET}", "--limit=20",
              f"--cache-dir={pytester.path / 'cache'}", "--model=npo=mock")
    numbers = {}
    for n in ("0", "2"):
        result = pytester.runpytest(*common, "-n", n, "--report-dir", f"report-{n}")
        result.assert_outcomes(passed=16)
        out = json.loads((pytester.path / f"report-{n}" / "results.json").read_text())
        numbers[n] = {(r["model"], r["metric"]): (r["value"], r["ci"], r["outcome"]) for r in out["metrics"]}
        keys = [(c["view"], c["model"]) for c in out["computed"]]
        assert sorted(keys) == sorted({(v, m) for v in ("tofu", "novel_recall", "format_shift", "likelihood")
                                       for m in ("npo", "full", "retain", "base")})  # each once
        if n == "2":
            assert {c["worker"] for c in out["computed"]} <= {"gw0", "gw1"}
        assert out["verdicts"]["npo"]["status"] == "PASS"
    assert numbers["0"] == numbers["2"]
    assert not list((pytester.path / "cache" / "runs").glob("*")), "the controller removes its run directory"


def test_the_mock_honours_the_backend_contract_and_rtt_runs_on_it(tmp_path):
    from unlearn_audit.model import Backend

    ctx = make_ctx(tmp_path, limit=None)  # two halves of authors
    assert isinstance(ctx.engine("npo"), Backend)
    rtt = ctx.result("rtt", "npo")  # the fine-tuned mock learns half A, not half B: no recovery
    assert rtt.metric("rtt.recovery_delta_pp").value == 0.0
    assert rtt.metric("rtt.recovery_delta_vs_control_pp").value is not None
    quant = ctx.result("quantization", "npo")
    assert all(m.skip is Skip.BACKEND_UNAVAILABLE for m in quant.metrics)


def punctuation_models() -> dict[str, MockModel]:
    """Two candidates whose labels differ only in punctuation: one leaks, one forgot."""
    forget = load_split(DATASET, "forget10_perturbed")
    retain = load_split(DATASET, "retain_perturbed")
    return {
        "npo+v1": MockModel("candidate", {**knowing(forget, fraction=0.75), **knowing(retain)}),
        "npo_v1": MockModel("candidate", knowing(retain)),
    }


PUNCTUATION_CONFTEST = f'''
import sys
sys.path.insert(0, {str(REPO / "tests")!r})

from test_runner import LazyMockContext, punctuation_models


def pytest_unlearn_audit_context(config, audit_config, tiny_world):
    return LazyMockContext(audit_config, punctuation_models())
'''


def test_xdist_gives_labels_that_differ_only_in_punctuation_their_own_verdicts(pytester: pytest.Pytester):
    _mock_project(pytester, PUNCTUATION_CONFTEST, """\
          - {metric: novel_recall.leak_rate, op: "<=", value: 0.10, rationale: "at most 1 in 10"}
    """)
    # --model sources; the labels are the mock context's own (punctuation_models)
    models = [pytester.mkdir(name) for name in ("npo+v1", "npo_v1")]
    common = (*ISOLATED, f"--rootdir={pytester.path}", f"--dataset={DATASET}", "--limit=8",
              f"--cache-dir={pytester.path / 'cache'}", "--views=novel_recall",
              *(f"--model={m}" for m in models))
    seen = {}
    for n in ("0", "2"):
        result = pytester.runpytest(*common, "-n", n, "--report-dir", f"report-{n}")
        result.assert_outcomes(passed=1, failed=1)
        out = json.loads((pytester.path / f"report-{n}" / "results.json").read_text())
        leak = {r["model"]: r["value"] for r in out["metrics"] if r["metric"] == "novel_recall.leak_rate"}
        verdicts = {m: v["status"] for m, v in out["verdicts"].items()}
        fingerprints = {m: e["fingerprint"] for m, e in out["models"].items()}
        assert leak["npo+v1"] >= 0.5 and leak["npo_v1"] == 0.0
        assert verdicts == {"npo+v1": "FAIL", "npo_v1": "PASS"}
        assert None not in fingerprints.values() and len(set(fingerprints.values())) == 2
        seen[n] = (leak, verdicts, fingerprints, sorted(c["model"] for c in out["computed"]))
    assert seen["0"] == seen["2"]
