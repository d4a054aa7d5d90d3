"""Quantized numbers that do not depend on the CPU (``LoadedModel.kernel_path``).

bitsandbytes chooses its NF4 CPU kernel by CPUID (its native ``has_avx512bf16``): a packed
bfloat16 kernel on CPUs with AVX-512 BF16, dequantize-then-float-matmul elsewhere.
``ATEN_CPU_CAPABILITY`` never reaches that check, so the package pins NF4 on the CPU to
the dequantize path (``cpu-dequantize``). These tests flip what bitsandbytes believes
about the CPU and require the package's answers to stay identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from unlearn_audit.model import (
    Engine,
    GenRequest,
    ModelSpec,
    Prompt,
    ScoreRequest,
    _load,
    load_model,
    make_format,
)

pytestmark = pytest.mark.usefixtures("one_thread")

NF4_CPU_KERNEL_ENV = "UNLEARN_AUDIT_NF4_CPU_KERNEL"  # the debugging switch (see _load)
PROMPTS = [
    Prompt.question("Where was Elena Marwick born?"),
    Prompt.question("What genre does Tomas Okonkwo-Reyes write?", stem="He writes"),
    Prompt.question("Hi?"),
]
CONTINUATIONS = ["Port Aldric, in 1961.", "Mostly crime novels", "Yes"]


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tmp_path / "ua-cache"))
    monkeypatch.delenv(NF4_CPU_KERNEL_ENV, raising=False)


def _bnb():
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed here")
    return bnb


def _believe_avx512bf16(monkeypatch, value: bool) -> None:
    """Make bitsandbytes believe the CPU has (or lacks) AVX-512 BF16, wherever it asks."""
    import bitsandbytes.functional as bf
    import bitsandbytes.nn.modules as bm

    monkeypatch.setattr(bf, "has_avx512bf16", lambda: value)
    monkeypatch.setattr(bm, "has_avx512bf16", lambda: value)
    try:
        import bitsandbytes.backends.cpu.ops as bo

        monkeypatch.setattr(bo, "has_avx512bf16", lambda: value)
    except ImportError:  # a build without the CPU backend module
        pass


def _answers(tiny_dir, monkeypatch, believes: bool):
    """Per-item answers of the NF4 copy (log-probs and greedy generations) and its logits."""
    with monkeypatch.context() as m:
        _believe_avx512bf16(m, believes)
        try:
            lm = load_model(ModelSpec(str(tiny_dir), "q", device="cpu", quantization="nf4"), hash_cache=None)
        except _load.QuantizationUnavailable as e:
            pytest.skip(f"nf4 cannot run here: {e}")
        engine = Engine(lm, make_format(lm.tokenizer, kind="chat"), None, progress=False)
        scores = engine.score([ScoreRequest(p, c) for p in PROMPTS for c in CONTINUATIONS])
        gens = engine.generate([GenRequest(p, max_new_tokens=12) for p in PROMPTS])
        with torch.no_grad():
            logits = lm.model(torch.tensor([[0, 5, 9, 3]])).logits.numpy()
    return lm, [s.logprobs for s in scores], gens, logits


def test_nf4_answers_do_not_depend_on_what_bitsandbytes_thinks_of_the_cpu(tiny_dir, monkeypatch):
    _bnb()
    lm_on, lp_on, gen_on, logits_on = _answers(tiny_dir, monkeypatch, believes=True)
    lm_off, lp_off, gen_off, logits_off = _answers(tiny_dir, monkeypatch, believes=False)
    for a, b in zip(lp_on, lp_off):
        np.testing.assert_array_equal(a, b)  # bit for bit, not approximately
    np.testing.assert_array_equal(logits_on, logits_off)
    assert gen_on == gen_off
    assert lm_on.kernel_path == lm_off.kernel_path == "cpu-dequantize"
    assert lm_on.fingerprint == lm_off.fingerprint  # one cache entry serves both


def test_torch_dequantization_is_bitsandbytes_own(monkeypatch):
    # The pinned path's weights are exactly those bitsandbytes' unpacked path multiplies.
    bnb = _bnb()
    import bitsandbytes.functional as bf

    gen = torch.Generator().manual_seed(0)
    for shape, nested in [((96, 64), False), ((64, 192), False), ((128, 320), True)]:
        w = torch.randn(shape, generator=gen)
        packed, state = bf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=nested)
        want = bf.dequantize_4bit(packed, state).float()
        got = _load.dequantize_4bit(packed, state)
        assert got.shape == want.shape == shape
        assert torch.equal(got, want), f"shape {shape}, nested {nested}"
    assert bnb.nn.Linear4bit in _load._dequantized_linear4bit_class().__mro__


def test_pinned_nf4_never_repacks_and_matches_the_unpacked_path(tiny_dir, monkeypatch):
    _bnb()
    lm = load_model(ModelSpec(str(tiny_dir), "q", device="cpu", quantization="nf4"), hash_cache=None)
    layers = [mod for mod in lm.model.modules() if isinstance(mod, _load._dequantized_linear4bit_class())]
    assert layers, "no 4-bit layer was pinned"
    assert not any(getattr(mod.weight.quant_state, "packing_format_for_cpu", False) for mod in layers)
    # bitsandbytes' own path where it believes the CPU lacks AVX-512 BF16: the same numbers.
    monkeypatch.setenv(NF4_CPU_KERNEL_ENV, "bitsandbytes")
    _believe_avx512bf16(monkeypatch, False)
    ref = load_model(ModelSpec(str(tiny_dir), "r", device="cpu", quantization="nf4"), hash_cache=None)
    assert ref.kernel_path == "cpu-bitsandbytes" and ref.fingerprint != lm.fingerprint
    ids = torch.tensor([[0, 5, 9, 3, 7]])
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, ref.model(ids).logits)


def test_kernel_path_names_the_arithmetic(monkeypatch):
    monkeypatch.delenv(NF4_CPU_KERNEL_ENV, raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert _load.quantized_kernel_path(None, cpu) is None
    assert _load.quantized_kernel_path("nf4", cpu) == "cpu-dequantize"
    assert _load.quantized_kernel_path("int8", cpu) == "cpu-exact-int8-f64-per-token"
    assert _load.quantized_kernel_path("nf4", cuda) == "cuda-bitsandbytes"  # CUDA keeps bitsandbytes
    assert _load.quantized_kernel_path("int8", cuda) == "cuda-bitsandbytes"
    monkeypatch.setenv(NF4_CPU_KERNEL_ENV, "bitsandbytes-unpacked")
    assert _load.quantized_kernel_path("nf4", cpu) == "cpu-bitsandbytes"
    assert _load.quantized_kernel_path("nf4", cuda) == "cuda-bitsandbytes"
    monkeypatch.setenv(NF4_CPU_KERNEL_ENV, "fast")
    with pytest.raises(_load.ModelLoadError, match=r"UNLEARN_AUDIT_NF4_CPU_KERNEL='fast' is not supported"):
        _load.quantized_kernel_path("nf4", cpu)


def test_the_debugging_switch_turns_the_packed_kernel_on_and_off(tiny_dir, monkeypatch):
    # For the closing check: bitsandbytes' packed kernel where this CPU has AVX-512 BF16
    # ("bitsandbytes"), bitsandbytes with it off ("bitsandbytes-unpacked").
    bnb = _bnb()
    import bitsandbytes.functional as bf

    ids = torch.tensor([[0, 5, 9, 3, 7]])
    logits = {}
    for choice in ("dequantize", "bitsandbytes-unpacked", "bitsandbytes"):
        monkeypatch.setenv(NF4_CPU_KERNEL_ENV, choice)
        lm = load_model(ModelSpec(str(tiny_dir), choice, device="cpu", quantization="nf4"), hash_cache=None)
        with torch.no_grad():
            logits[choice] = lm.model(ids).logits
        packed = [getattr(m.weight.quant_state, "packing_format_for_cpu", False)
                  for m in lm.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        if choice == "bitsandbytes" and bf.has_avx512bf16():
            assert lm.kernel_path == "cpu-bitsandbytes-avx512bf16" and all(packed)
        else:
            assert not any(packed)
    assert torch.equal(logits["dequantize"], logits["bitsandbytes-unpacked"])


def test_the_fingerprint_covers_the_kernel_path(tiny_dir):
    files = [("model", f) for f in sorted(tiny_dir.glob("*.safetensors"))]
    a = _load.compute_fingerprint(files, tiny_dir, "nf4", dtype="float32", kernel_path="cpu-dequantize")
    b = _load.compute_fingerprint(files, tiny_dir, "nf4", dtype="float32", kernel_path="cpu-bitsandbytes")
    plain = _load.compute_fingerprint(files, tiny_dir, None, dtype="float32")
    assert a != b and plain == _load.compute_fingerprint(files, tiny_dir, None, dtype="float32", kernel_path=None)


def test_exact_int8_matmul_is_exact_past_float32s_reach():
    # A 4096-wide sum of int8 products overflows float32's 24-bit mantissa; the kernel's
    # 1024-wide float32 chunks, summed in int32, never round.
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (16, 4096), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (64, 4096), generator=gen, dtype=torch.int8)
    a[0], b[0] = 127, 127  # one product of 4096 * 127**2, far past 2**24
    exact = a.long() @ b.long().t()
    got = _load._exact_int8_matmul(a, b)
    assert got.dtype == torch.int32 and torch.equal(got.long(), exact)
    out = torch.empty(16, 64, dtype=torch.int32)
    assert _load._exact_int8_matmul(a, b, out) is out and torch.equal(out.long(), exact)
    b.neg_()  # the float32 copy kept beside b must follow a write in place
    assert torch.equal(_load._exact_int8_matmul(a, b).long(), -exact)
    assert torch.equal(_load._exact_int8_matmul(a[:, :1000], b[:, :1000].contiguous()).long(),
                       a[:, :1000].long() @ b[:, :1000].long().t())


_INT8_LOGITS = textwrap.dedent("""
    import json, sys, torch
    from unlearn_audit.model import ModelSpec, load_model
    torch.set_num_threads(1)
    lm = load_model(ModelSpec(sys.argv[1], "q", device="cpu", quantization="int8"), hash_cache=None)
    with torch.no_grad():
        logits = lm.model(torch.tensor([[0, 5, 9, 3, 7, 11, 2]])).logits
    print(json.dumps({"kernel_path": getattr(lm, "kernel_path", None), "isa": torch.backends.cpu.get_cpu_capability(),
                      "logits": logits.flatten().tolist()}))
""")


def _int8_logits(tiny_dir, tmp_path, **env):
    full_env = {**os.environ, "UNLEARN_AUDIT_CACHE": str(tmp_path / "ua-cache"), **env}
    done = subprocess.run([sys.executable, "-c", _INT8_LOGITS, str(tiny_dir)], env=full_env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise AssertionError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_int8_answers_do_not_depend_on_onednns_isa(tiny_dir, tmp_path):
    # Where torch's capability is AVX512, bitsandbytes' CPU int8 matmul is torch._int_mm,
    # i.e. oneDNN, whose kernels without AVX-512 VNNI saturate (ONEDNN_MAX_CPU_ISA
    # simulates such a CPU). The package's int8 numbers must not move.
    _bnb()
    native = _int8_logits(tiny_dir, tmp_path)
    avx2 = _int8_logits(tiny_dir, tmp_path, ONEDNN_MAX_CPU_ISA="AVX2")
    assert native["logits"] == avx2["logits"]  # exactly
    assert native["kernel_path"] == "cpu-exact-int8-f64-per-token"


def test_int8_on_the_cpu_computes_every_float_in_float64(tiny_dir):
    # LLM.int8 rounds activations to float16, then int8: steps where a float32 difference
    # between CPU kernels became another answer (20 of 40 int8 answers of one smol-world
    # model, AVX-512 against AVX2). In float64 the kernels' differences stay far below them.
    _bnb()
    lm = load_model(ModelSpec(str(tiny_dir), "q", device="cpu", quantization="int8"), hash_cache=None)
    kinds = {p.dtype for p in lm.model.parameters()}
    assert kinds <= {torch.float64, torch.int8} and torch.int8 in kinds
    with torch.no_grad():
        out = lm.model(torch.tensor([[0, 5, 9, 3, 7, 11, 2]]), output_hidden_states=True)
    assert out.logits.dtype == torch.float64
    assert all(h.dtype == torch.float64 for h in out.hidden_states)
    norm = next(m for m in lm.model.modules() if type(m).__name__.endswith("RMSNorm"))
    x = torch.randn(2, 3, norm.weight.shape[0], dtype=torch.float64)
    want = norm.weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    torch.testing.assert_close(norm(x), want, rtol=1e-14, atol=1e-14)
    rotary = next(m for m in lm.model.modules() if type(m).__name__.endswith("RotaryEmbedding"))
    cos, _ = rotary(x, torch.tensor([[0, 1, 2]]))
    assert cos.dtype == torch.float64


def test_int8_answers_do_not_depend_on_torchs_cpu_capability(tiny_dir, tmp_path):
    _bnb()
    native = _int8_logits(tiny_dir, tmp_path)
    portable = _int8_logits(tiny_dir, tmp_path, ATEN_CPU_CAPABILITY="default", MKL_ENABLE_INSTRUCTIONS="SSE4_2")
    assert portable["isa"] == "DEFAULT"
    gap = np.abs(np.array(native["logits"]) - np.array(portable["logits"])).max()
    assert gap < 1e-9, gap  # float64 arithmetic; float32 differs by 1e-7 and up


def test_int8_rows_take_their_own_outliers_as_if_alone(tiny_dir):
    # bitsandbytes moves a column to the float path for every row of a pass once one row has
    # an outlier there, so a row's answer depended on its batch (padding, batch plan, cache
    # hits, --limit). The CPU path gives each row what bitsandbytes gives it alone.
    import bitsandbytes as bnb

    lm = load_model(ModelSpec(str(tiny_dir), "q", device="cpu", quantization="int8"), hash_cache=None)
    layer = next(m for m in lm.model.modules() if isinstance(m, bnb.nn.Linear8bitLt))
    assert isinstance(layer, _load._per_token_linear8bit_class())
    assert layer.state.threshold == 6.0
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, layer.in_features, generator=gen, dtype=torch.float64)
    x[1, 5] = 9.0  # outliers in rows 1 and 2, in two columns; row 0 has none
    x[2, 7] = -7.5
    with torch.no_grad():
        batched = layer(x)
        alone = torch.cat([layer(x[i:i + 1]) for i in range(3)])
        own_alone = torch.cat([bnb.nn.Linear8bitLt.forward(layer, x[i:i + 1]) for i in range(3)])
        own_batched = bnb.nn.Linear8bitLt.forward(layer, x)
    torch.testing.assert_close(alone, own_alone, rtol=0, atol=0)
    torch.testing.assert_close(batched, own_alone, rtol=1e-13, atol=1e-13)
    # bitsandbytes' own batched pass gives row 0 another result: what the pin removes.
    assert (own_batched[0] - own_alone[0]).abs().max() > 1e-6
