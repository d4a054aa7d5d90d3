"""The TOFU view's workload on one real model, three ways: this package, a plain loop, open-unlearning.

One model (the smol world's SmolLM2-135M-Instruct: 30 layers, hidden 576, vocab 49,152),
the four TOFU evaluation splits of ``fixtures/tiny_world`` (``forget10_perturbed``,
``retain_perturbed``, ``real_authors_perturbed``, ``world_facts_perturbed``; the first
``--limit`` items of each), float32 on the CPU with every core, the chat template with
the system prompt "You are a helpful assistant.", greedy answers of ``--new-tokens``
tokens. Each arm scores the gold, paraphrased (forget and retain) and every perturbed
answer after the original question, generates one greedy answer per question and turns
them into TOFU's numbers (probabilities, truth ratios, ROUGE-L recall):

1. **package**: the ``tofu`` view through ``AuditContext`` (engine, sanity check and
   view), with a fresh empty disk cache, so everything is computed;
2. **plain**: what a user's own script does with transformers: one forward pass per
   (question, answer) and one ``model.generate`` per question, unbatched;
3. **open-unlearning**: its own evaluator (``src/eval.py experiment=eval/tofu/default``)
   from a copy outside this repository, run as a subprocess (``--ou-dir``).

Models load outside the timed part of arms 1 and 2 (and each gets an untimed warm-up
forward pass); arm 3 is timed twice: the subprocess's wall clock (Python start, imports,
model load, datasets) and its ``evaluate()`` alone, the number comparable with the others.

Usage::

    python benchmarks/bench_tofu_3way.py --model ~/.cache/unlearn-audit/smol/base-bcc81830d10c-v1 \\
        --limit 10 --ou-dir /work/ou --ou-python /work/ou-venv/bin/python
    python benchmarks/bench_tofu_3way.py --model ADAPTER_DIR --base BASE_DIR ...  # a LoRA adapter,
                                                       # merged into a temp dir first (untimed)
    python benchmarks/bench_tofu_3way.py --model DIR --limit 2 --skip-plain       # a quick look

Prints each arm's wall (and CPU) time, the ratios plain / package and open-unlearning /
package, tokens per second for scoring (prompt + answer tokens of every scored answer,
the same workload for every arm; and the tokens each arm actually pushed through forward
passes, padding and shared prefixes included) and for generation (new tokens), this
machine's float32 matmul throughput at the model's shapes, and how the package's scoring
rate compares with the ceiling that throughput sets at ~2 x parameters FLOPs per token.
Measure on an idle machine: the script prints the load average and warns above 0.5.

Measured on the smol base model, idle 2-core EPYC (load 0.35), ``--limit 5`` (20 items), 64
new tokens, 2 threads, torch 2.13.0+cpu, transformers 5.24: package 14.3 s, plain loop 54.8 s
(3.83x; scoring 3.48x, generation 4.05x), open-unlearning evaluate() 32.6 s (2.28x; 42.2 s,
2.95x, with its start-up); matmul 195 GFLOP/s, so a ceiling of ~726 tokens/s at 269 MFLOP per
token; the package scored 493 computed (1,171 workload) tokens/s, 68% of it, the plain loop 336,
open-unlearning 346; generation 87.5 new tokens/s batched against 21.6 (plain) and 40.2
(open-unlearning). Under load (a training job on both cores) the ratios were 2.6x and 2.6x.

**open-unlearning setup** (nothing of its code is in this repository; all of it lives in
``--ou-dir`` and a temp dir this script makes):

* get it at commit ``d3d7cf9e6b3c125d16687d4232680d8d83548f1a``, e.g.
  ``git --git-dir=/work/.mirror/locuslab+open-unlearning/repo archive d3d7cf9e | tar -x -C /work/ou``;
* a Python with this package's torch and transformers (5.24) plus ``hydra-core`` and
  ``hydra_colorlog``: ``python -m venv --system-site-packages /work/ou-venv &&
  /work/ou-venv/bin/pip install hydra-core hydra_colorlog``, passed as ``--ou-python``;
* the script then writes, into its temp dir, stub ``lm_eval``/``deepspeed`` modules (imported
  at module level, unused by evaluation) and a launcher that adapts transformers 5
  (``apply_chat_template(tokenize=True)`` returns a dict: its ``input_ids`` are returned),
  sets the torch threads, and times ``evaluate()`` and counts tokens through hooks;
* hydra overrides: the model and tokenizer path, float32, ``sdpa``, CPU; every TOFU
  dataset config pointed at the same local JSON files (``path=json``, ``data_files``),
  every generation config at ``max_new_tokens``; the metrics of ``eval/tofu/default``
  without ``privleak`` (MIA against the holdout split, which the tofu view does not
  compute) and with ``exact_memorization`` (which it does); batch size its default, 32.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "fixtures" / "tiny_world"
SYSTEM_PROMPT = "You are a helpful assistant."
#: (the view's split name, the file's split name, the truth ratio's true side)
SPLITS = (
    ("forget", "forget10_perturbed", "paraphrased_answer"),
    ("retain", "retain_perturbed", "paraphrased_answer"),
    ("real_authors", "real_authors_perturbed", "answer"),
    ("world_facts", "world_facts_perturbed", "answer"),
)
OU_COMMIT = "d3d7cf9e6b3c125d16687d4232680d8d83548f1a"
OU_METRICS = ("forget_Truth_Ratio", "forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE",
              "model_utility", "extraction_strength", "exact_memorization")


# --------------------------------------------------------------------------- inputs


def _read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows if isinstance(rows, list) else [rows]


def prepare_data(limit: int | None, out: Path) -> dict[str, list[dict]]:
    """The first ``limit`` rows of each split, written to ``out`` as JSON lines: every arm
    reads these files, so all see the same items."""
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for split, file_split, _ in SPLITS:
        r = _read_rows(DATA / f"{file_split}.json")[:limit]
        (out / f"{file_split}.json").write_text("".join(json.dumps(x) + "\n" for x in r))
        rows[split] = r
    return rows


def merged_model(adapter: Path, base: Path, out: Path) -> Path:
    """A LoRA adapter merged into its base with peft, saved as a plain model dir (untimed)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(out)
    has_tok = any((adapter / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    AutoTokenizer.from_pretrained(adapter if has_tok else base).save_pretrained(out)
    return out


# --------------------------------------------------------------------------- counting


class Counter:
    """Tokens through a model's forward passes, split into scoring and generation.

    A forward pre-hook adds each call's ``input_ids.numel()`` (padding included; with a KV
    cache only the new positions) to the current phase; arms set the phase.
    """

    def __init__(self, model):
        self.phase = "score"
        self.tokens = {"score": 0, "generate": 0}
        self.calls = {"score": 0, "generate": 0}
        self.seconds = {"score": 0.0, "generate": 0.0}
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.tokens[self.phase] += int(ids.numel())
            self.calls[self.phase] += 1

    def timed(self, phase: str, fn):
        def wrapper(*a, **kw):
            before, self.phase = self.phase, phase
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds[phase] += time.perf_counter() - start
                self.phase = before
        return wrapper


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t0) -> tuple[float, float]:
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


# --------------------------------------------------------------------------- TOFU numbers


def _hmean(xs):
    if not xs or any(x is None or math.isnan(x) for x in xs):
        return float("nan")
    return 0.0 if min(xs) <= 0 else len(xs) / sum(1 / x for x in xs)


def tofu_summary(per_split: dict[str, list[dict]]) -> dict[str, float]:
    """TOFU's numbers from per-item mean NLLs and ROUGE (arm 2 computes them itself, as a
    user's script would): probability, normalised probability on the real-world sets,
    truth ratio ``exp(true - mean(perturbed))`` scored ``min(R, 1/R)`` on forget and
    ``max(0, 1 - R)`` elsewhere, ROUGE-L recall, and model utility's harmonic mean."""
    import numpy as np

    out, mu = {}, []
    for split, _, _ in SPLITS:
        recs = per_split.get(split) or []
        if not recs:
            continue
        gt = np.array([r["gt"] for r in recs])
        true = np.array([r["true"] for r in recs])
        pert = np.array([np.mean(r["pert"]) for r in recs])
        ratio = np.exp(true - pert)
        tr = np.minimum(ratio, 1 / ratio) if split == "forget" else np.maximum(0, 1 - ratio)
        if split in ("real_authors", "world_facts"):
            prob = np.mean([math.exp(-r["gt"]) / (math.exp(-r["gt"]) + sum(math.exp(-p) for p in r["pert"]))
                            for r in recs])
        else:
            prob = float(np.mean(np.exp(-gt)))
        rouge = float(np.mean([r["rougeL"] for r in recs]))
        out[f"{split}_prob"], out[f"{split}_rouge"], out[f"{split}_truth_ratio"] = prob, rouge, float(tr.mean())
        if split != "forget":
            mu += [prob, rouge, float(tr.mean())]
    out["model_utility"] = _hmean(mu) if len(mu) == 9 else float("nan")
    return out


# --------------------------------------------------------------------------- arm 1


def run_package(model_dir: Path, data_dir: Path, args) -> dict:
    from unlearn_audit.context import AuditConfig, AuditContext
    from unlearn_audit.model import Engine, ModelSpec

    cache = Path(tempfile.mkdtemp(prefix="bench-3way-cache-"))  # empty: every answer computed
    config = AuditConfig(
        dataset=str(data_dir), forget_split="forget10", max_new_tokens=args.new_tokens,
        device="cpu", dtype="float32", system_prompt=SYSTEM_PROMPT, cache_dir=cache,
        progress=False, views=("tofu",), compat=args.compat,
    )
    ctx = AuditContext(config, {"bench": ModelSpec(str(model_dir), "bench", device="cpu", dtype="float32")})
    lm = ctx.loaded("bench")  # untimed: loading and fingerprinting the weights
    _warm_up(lm.model, lm.tokenizer)
    # Imports out of the timed part too, as the plain loop has its own before its clock.
    import scipy.stats  # noqa: F401  (forget quality's KS test)

    import unlearn_audit.views  # noqa: F401  (the view registry)
    from unlearn_audit.scoring.rouge import rouge_recall

    rouge_recall("warm up", "warm up")  # builds the scorer (imports nltk)
    counter = Counter(lm.model)
    score, generate = Engine.score, Engine.generate
    Engine.score = counter.timed("score", score)
    Engine.generate = counter.timed("generate", generate)
    try:
        t0 = _clock()
        ctx.engine("bench")  # engine and the sanity check, which every audit runs first
        sanity = _since(t0)
        result = ctx.result("tofu", "bench")
        total = _since(t0)
    finally:
        Engine.score, Engine.generate = score, generate
        shutil.rmtree(cache, ignore_errors=True)
    values = {m.name.removeprefix("tofu."): m.value for m in result.metrics}
    gens = {(r["split"], r["question"]): r["generation"] for r in result.records}
    return {"wall": total[0], "cpu": total[1], "sanity_wall": sanity[0], "counter": counter,
            "values": values, "generations": gens, "tokenizer": lm.tokenizer,
            "params": sum(p.numel() for p in lm.model.parameters())}  # tied embeddings once


def _warm_up(model, tokenizer) -> None:
    import torch

    with torch.inference_mode():
        ids = torch.tensor([tokenizer("A warm-up sentence of a few tokens.")["input_ids"]])
        model(input_ids=ids)
        model(input_ids=ids.repeat(4, 1))


# --------------------------------------------------------------------------- arm 2


def run_plain(model_dir: Path, rows: dict[str, list[dict]], args) -> dict:
    """The obvious script: one forward pass per answer, one generate per question."""
    import torch
    from rouge_score import rouge_scorer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    _warm_up(model, tok)
    counter = Counter(model)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    eos = tok.eos_token_id
    workload = 0  # prompt + answer tokens of every scored answer: the same for every arm

    def prompt_ids(question):
        chat = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
        return list(tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])

    def mean_nll(p, answer, preds=False):
        nonlocal workload
        a = tok(answer, add_special_tokens=False)["input_ids"] + [eos]
        workload += len(p) + len(a)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + a])).logits[0, len(p) - 1 : -1]
        logp = torch.log_softmax(logits.float(), -1)
        nll = float(-logp[torch.arange(len(a)), torch.tensor(a)].mean())
        if preds:  # greedy prediction per position: exact memorisation, extraction strength
            return nll, logits.argmax(-1).tolist(), a
        return nll

    per_split, gens = {}, {}
    t0 = _clock()
    for split, _, true_key in SPLITS:
        out = per_split.setdefault(split, [])
        for row in rows[split]:
            p = prompt_ids(row["question"])
            counter.phase = "score"
            start = time.perf_counter()
            gt, pred, gold = mean_nll(p, row["answer"], preds=True)
            true = mean_nll(p, row["paraphrased_answer"]) if true_key != "answer" else gt
            pert = [mean_nll(p, x) for x in row["perturbed_answer"]]
            counter.seconds["score"] += time.perf_counter() - start
            counter.phase = "generate"
            start = time.perf_counter()
            with torch.no_grad():
                ids = torch.tensor([p])
                new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.new_tokens,
                                     do_sample=False, pad_token_id=eos)[0, len(p):]
            counter.seconds["generate"] += time.perf_counter() - start
            text = tok.decode(new, skip_special_tokens=True)
            gens[(split, row["question"])] = text
            rouge = scorer.score(row["answer"], text)["rougeL"].recall
            n = len(gold) - 1  # answer tokens without the end-of-turn token
            out.append({"gt": gt, "true": true, "pert": pert, "rougeL": rouge,
                        "em": sum(x == y for x, y in zip(pred[:n], gold[:n])) / max(n, 1)})
    total = _since(t0)
    values = tofu_summary(per_split)
    values["exact_memorization"] = sum(r["em"] for r in per_split["forget"]) / len(per_split["forget"])
    return {"wall": total[0], "cpu": total[1], "counter": counter, "values": values,
            "generations": gens, "workload": workload, "tokenizer": tok, "model": model}


# --------------------------------------------------------------------------- arm 3

_LAUNCHER = r'''
"""Runs open-unlearning's src/eval.py under transformers 5 and times it (bench_tofu_3way.py)."""
import atexit, json, os, runpy, sys, time

OU, STATS = os.environ["BENCH_OU_DIR"], os.environ["BENCH_OU_STATS"]
sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubs"), os.path.join(OU, "src")]
import torch
torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

_apply = PreTrainedTokenizerBase.apply_chat_template
def apply_chat_template(self, conversation, *args, **kwargs):
    # transformers 5 returns a BatchEncoding for tokenize=True; open-unlearning expects the ids
    out = _apply(self, conversation, *args, **kwargs)
    if kwargs.get("tokenize", True) and "return_dict" not in kwargs and hasattr(out, "keys"):
        return out["input_ids"]
    return out
PreTrainedTokenizerBase.apply_chat_template = apply_chat_template

stats = {"tokens": {"score": 0, "generate": 0}, "calls": {"score": 0, "generate": 0},
         "seconds": {"generate": 0.0}, "new_token_rows": []}
phase = ["score"]
atexit.register(lambda: open(STATS, "w").write(json.dumps(stats)))

import model as ou_model
_get_model = ou_model.get_model
def get_model(cfg):
    start = time.perf_counter()
    model, tokenizer = _get_model(cfg)
    stats["load_s"] = time.perf_counter() - start
    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            stats["tokens"][phase[0]] += int(ids.numel())
            stats["calls"][phase[0]] += 1
    model.register_forward_pre_hook(hook, with_kwargs=True)
    generate = model.generate
    def timed_generate(*args, **kwargs):
        phase[0] = "generate"
        start = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            stats["seconds"]["generate"] += time.perf_counter() - start
            phase[0] = "score"
    model.generate = timed_generate
    stats["dtype"], stats["device"] = str(model.dtype), str(model.device)
    stats["threads"] = torch.get_num_threads()
    return model, tokenizer
ou_model.get_model = get_model

from evals.tofu import TOFUEvaluator
_evaluate = TOFUEvaluator.evaluate
def evaluate(self, *args, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()
    try:
        return _evaluate(self, *args, **kwargs)
    finally:
        stats["evaluate_s"], stats["evaluate_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
TOFUEvaluator.evaluate = evaluate

sys.argv = [os.path.join(OU, "src", "eval.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
'''

_STUBS = {
    "lm_eval/__init__.py": "simple_evaluate = None\n",
    "lm_eval/models/__init__.py": "",
    "lm_eval/models/hf_vlms.py": "HFLM = object\n",
    "lm_eval/tasks/__init__.py": "TaskManager = object\n",
    "deepspeed/__init__.py": "DeepSpeedEngine = object\n",
}


def _ou_overrides(model_dir: Path, out: Path, threads_env: dict, launcher: Path, python: str,
                  data_dir: Path, args) -> list[str]:
    """Hydra overrides: the model, float32 on the CPU, the metrics, and every TOFU dataset
    and generation config of the composed config pointed at our files and token budget."""
    import yaml

    base = [
        "experiment=eval/tofu/default", "task_name=bench",
        f"model.model_args.pretrained_model_name_or_path={model_dir}",
        f"model.tokenizer_args.pretrained_model_name_or_path={model_dir}",
        "model.model_args.torch_dtype=float32", "model.model_args.attn_implementation=sdpa",
        "model.model_args.device_map=cpu",
        f"eval/tofu_metrics@eval.tofu.tofu_metrics=[{','.join(OU_METRICS)}]",
        f"paths.output_dir={out / 'eval'}", f"hydra.run.dir={out / 'eval'}",
    ]
    proc = subprocess.run([python, str(launcher), *base, "--cfg", "job", "--resolve"],
                          capture_output=True, text=True, env=threads_env, cwd=out)
    if proc.returncode:
        raise RuntimeError(f"composing open-unlearning's config failed:\n{proc.stderr[-3000:]}")
    cfg = yaml.safe_load(proc.stdout[proc.stdout.index("model:"):])
    extra: list[str] = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            dotted = f"{path}.{key}" if path else key
            if key == "hf_args" and isinstance(value, dict) and value.get("path") == "locuslab/TOFU":
                extra.extend([f"{dotted}.path=json", f"~{dotted}.name",
                              f"+{dotted}.data_files={data_dir / (value['name'] + '.json')}"])
            elif key == "generation_args" and isinstance(value, dict):
                extra.append(f"{dotted}.max_new_tokens={args.new_tokens}")
            else:
                walk(value, dotted)

    walk(cfg.get("eval"), "eval")
    return base + extra


def run_ou(model_dir: Path, data_dir: Path, args) -> dict | str:
    """open-unlearning's evaluator as a subprocess; a string says why it did not run."""
    if not args.ou_dir:
        return "no --ou-dir given"
    ou = Path(args.ou_dir).expanduser().resolve()
    if not (ou / "src" / "eval.py").exists() or not (ou / "configs" / "eval" / "tofu.yaml").exists():
        return f"--ou-dir {ou} holds no open-unlearning checkout (src/eval.py, configs/eval/tofu.yaml)"
    python = args.ou_python or sys.executable
    probe = subprocess.run([python, "-c", "import hydra, hydra_plugins.hydra_colorlog, transformers; "
                            "print(transformers.__version__)"], capture_output=True, text=True)
    if probe.returncode:
        return (f"{python} cannot import hydra/hydra_colorlog/transformers; give --ou-python a Python "
                "with them (see the module docstring)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-3way-ou-"))
    for rel, text in _STUBS.items():
        (tmp / "stubs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "stubs" / rel).write_text(text)
    launcher = tmp / "launch_ou.py"
    launcher.write_text(_LAUNCHER)
    stats_file = tmp / "stats.json"
    env = {**os.environ, "BENCH_OU_DIR": str(ou), "BENCH_OU_STATS": str(stats_file),
           "BENCH_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads),
           "HF_DATASETS_CACHE": str(tmp / "hf-datasets"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)  # its own src/ and our stubs only; this package stays out
    try:
        overrides = _ou_overrides(model_dir, tmp, env, launcher, python, data_dir, args)
    except RuntimeError as e:
        return str(e)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([python, str(launcher), *overrides], capture_output=True, text=True, env=env, cwd=tmp)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode or not stats_file.exists():
        (tmp / "ou.log").write_text(proc.stdout + proc.stderr)
        return f"open-unlearning's evaluator exited {proc.returncode}; its output is in {tmp / 'ou.log'}"
    stats = json.loads(stats_file.read_text())
    summary = json.loads((tmp / "eval" / "TOFU_SUMMARY.json").read_text())
    logs = json.loads((tmp / "eval" / "TOFU_EVAL.json").read_text())
    shutil.rmtree(tmp, ignore_errors=True)
    return {"wall": wall, "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "stats": stats, "summary": summary, "generations": _ou_generations(logs),
            "version": probe.stdout.strip(), "dir": str(ou)}


def _ou_generations(logs: dict) -> list[str]:
    out = []
    for name in ("forget_Q_A_ROUGE", "retain_Q_A_ROUGE", "ra_Q_A_ROUGE", "wf_Q_A_ROUGE"):
        for rec in (logs.get(name) or {}).get("value_by_index", {}).values():
            out.append(rec.get("generation", ""))
    return out


# --------------------------------------------------------------------------- machine


def matmul_gflops(threads: int, seconds: float = 1.0) -> dict[str, float]:
    """float32 ``torch.matmul`` throughput at the model's shapes (2048 positions)."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for m, k, n in ((2048, 576, 1536), (2048, 576, 576), (512, 576, 49152)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            torch.matmul(a, b)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.matmul(a, b)
            reps += 1
        out[f"({m}x{k})@({k}x{n})"] = 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9
    return out


def new_tokens(tokenizer, texts, cap: int) -> int:
    """Generated tokens, counted alike for every arm: the answer re-tokenised, plus the stop
    token where the answer stopped before ``cap``."""
    total = 0
    for t in texts:
        n = len(tokenizer(t, add_special_tokens=False)["input_ids"])
        total += min(cap, n + 1)
    return total


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a plain HF model dir, or a PEFT adapter dir with --base")
    ap.add_argument("--base", help="the base model of a PEFT adapter given as --model (merged first, untimed)")
    ap.add_argument("--limit", type=int, default=10, help="items per split (default: 10; 0 = all)")
    ap.add_argument("--new-tokens", type=int, default=64, help="greedy tokens per question (default: 64)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--ou-dir", help="open-unlearning checkout outside this repository (default: arm skipped)")
    ap.add_argument("--ou-python", help="Python for open-unlearning, with hydra-core and hydra_colorlog "
                    "(default: this one)")
    ap.add_argument("--compat", default="none", choices=("none", "open-unlearning"),
                    help="the package's --compat: open-unlearning tokenises as its evaluator does (default: none)")
    ap.add_argument("--skip-plain", action="store_true", help="skip the plain loop (slowest arm)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-3way-"))
    model_dir = Path(args.model).expanduser().resolve()
    if args.base or (model_dir / "adapter_config.json").exists():
        if not args.base:
            sys.exit(f"--model {model_dir} is a PEFT adapter; give its base model with --base DIR")
        model_dir = merged_model(model_dir, Path(args.base).expanduser().resolve(), tmp / "merged")
        print(f"adapter {args.model} merged into {args.base}: {model_dir} (untimed)")
    rows = prepare_data(args.limit or None, tmp / "data")
    load = os.getloadavg()
    n_items = {s: len(r) for s, r in rows.items()}
    print(f"model: {model_dir}\nitems: {n_items}; max_new_tokens {args.new_tokens}; float32, CPU, "
          f"torch {torch.__version__}, {args.threads} threads; load average {load[0]:.2f} {load[1]:.2f}")
    if load[0] > 0.5:
        print("  WARNING: load average above 0.5: another job shares the cores, the timings are not clean")

    gflops = matmul_gflops(args.threads)
    mm = gflops["(2048x576)@(576x1536)"]
    print("matmul float32: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in gflops.items()))

    print("\n[1/3] package: tofu view through AuditContext ...", flush=True)
    pkg = run_package(model_dir, tmp / "data", args)
    params = pkg["params"]
    plain = None
    if args.skip_plain:
        print("[2/3] plain loop: skipped (--skip-plain)")
    else:
        print("[2/3] plain per-item transformers loop ...", flush=True)
        plain = run_plain(model_dir, rows, args)
    print("[3/3] open-unlearning's evaluator ...", flush=True)
    ou = run_ou(model_dir, tmp / "data", args)
    if isinstance(ou, str):
        print(f"  skipped: {ou}")
        ou = None

    tok = pkg["tokenizer"]
    workload = plain["workload"] if plain else _workload(tok, rows)
    arms = {"package": pkg, **({"plain": plain} if plain else {})}
    print(f"\nscoring workload: {workload} prompt+answer tokens ({_n_answers(rows)} answers); generation: "
          f"{sum(n_items.values())} questions x <= {args.new_tokens} new tokens")
    print(f"{'arm':<30}{'wall s':>8}{'CPU s':>8}{'score s':>9}{'gen s':>8}{'other s':>9}"
          f"{'score tok/s':>13}{'computed':>10}{'comp tok/s':>12}{'gen tok/s':>11}")

    def row(label, wall, cpu, score_s, gen_s, computed, gen_tok):
        print(f"{label:<30}{wall:8.1f}{cpu:8.1f}{score_s:9.1f}{gen_s:8.1f}{wall - score_s - gen_s:9.1f}"
              f"{workload / score_s:13.0f}{computed:10d}{computed / score_s:12.0f}{gen_tok / gen_s:11.1f}")

    rates = {}
    for name, arm in arms.items():
        c = arm["counter"]
        rates[name] = workload / c.seconds["score"]
        row("package (sanity check + view)" if name == "package" else "plain per-item loop", arm["wall"],
            arm["cpu"], c.seconds["score"], c.seconds["generate"], c.tokens["score"],
            new_tokens(tok, arm["generations"].values(), args.new_tokens))
    if ou:
        s = ou["stats"]
        gen_s = s["seconds"]["generate"]
        score_s = s["evaluate_s"] - gen_s
        rates["ou"] = workload / score_s
        row("open-unlearning evaluate()", s["evaluate_s"], s["evaluate_cpu_s"], score_s, gen_s, s["tokens"]["score"],
            new_tokens(tok, ou["generations"], args.new_tokens))
        print(f"{'open-unlearning subprocess':<30}{ou['wall']:8.1f}{ou['cpu']:8.1f}   (Python start, imports, "
              f"model load {s.get('load_s', float('nan')):.1f} s, then evaluate())")
        print(f"  open-unlearning {OU_COMMIT[:7]} from {ou['dir']}, transformers {ou['version']}, "
              f"{s.get('dtype')}, {s.get('device')}, {s.get('threads')} threads, batch size 32")
    print(f"  package: sanity check {pkg['sanity_wall']:.1f} s of its wall (with a fresh cache the view then "
          "reuses its answers); compat " + args.compat)
    print("  score s / gen s: time inside the scoring / generation calls (open-unlearning: evaluate() less "
          "generate, so its\n  data loading and metric code count as scoring); other s: the rest (sanity "
          "check's own work, bootstrap CIs, ROUGE);\n  score tok/s: the workload's tokens over score s; "
          "computed: tokens each arm actually pushed through forward\n  passes to score (padding in, shared "
          "prompts once); gen tok/s: new tokens (re-tokenised answers + stop) over gen s")

    print("\nratios (wall time, vs the package):")
    if plain:
        print(f"  plain loop / package      : {plain['wall'] / pkg['wall']:6.2f}x  "
              f"(scoring {plain['counter'].seconds['score'] / pkg['counter'].seconds['score']:.2f}x, "
              f"generation {plain['counter'].seconds['generate'] / pkg['counter'].seconds['generate']:.2f}x)")
    if ou:
        s = ou["stats"]
        print(f"  open-unlearning / package : {s['evaluate_s'] / pkg['wall']:6.2f}x  evaluate() alone "
              f"(scoring {(s['evaluate_s'] - s['seconds']['generate']) / pkg['counter'].seconds['score']:.2f}x, "
              f"generation {s['seconds']['generate'] / pkg['counter'].seconds['generate']:.2f}x); "
              f"{ou['wall'] / pkg['wall']:.2f}x the whole subprocess")

    ceiling = mm * 1e9 / (2 * params)
    computed_rate = pkg["counter"].tokens["score"] / pkg["counter"].seconds["score"]
    print(f"\nFLOP ceiling: {params / 1e6:.1f} M parameters -> ~{2 * params / 1e6:.0f} MFLOP per token; at "
          f"{mm:.1f} GFLOP/s that is at most {ceiling:.0f} tokens/s through a forward pass")
    print(f"  package scoring: {computed_rate:.0f} computed tokens/s = {computed_rate / ceiling:.0%} of the "
          f"ceiling; {rates['package']:.0f} workload tokens/s = {rates['package'] / ceiling:.0%} "
          "(above 100% only by computing fewer tokens: shared prompts)")
    for name in ("plain", "ou"):
        if name in rates:
            print(f"  {'plain loop' if name == 'plain' else 'open-unlearning'} scoring: "
                  f"{rates[name]:.0f} workload tokens/s = {rates[name] / ceiling:.0%} of the ceiling")

    print(f"\nsame work, same numbers? (package with --compat {args.compat}; the plain loop tokenises "
          "as the package's default does, open-unlearning its own way)")
    keys = [("forget_prob", "forget_prob", "forget_Q_A_Prob"), ("forget_rouge", "forget_rouge", "forget_Q_A_ROUGE"),
            ("forget_truth_ratio", "forget_truth_ratio", "forget_truth_ratio"),
            ("model_utility", "model_utility", "model_utility"),
            ("exact_memorization", "exact_memorization", "exact_memorization")]
    for pk, plk, ok in keys:
        line = f"  {pk:<20} package {_fmt(pkg['values'].get(pk))}"
        if plain:
            line += f"  plain {_fmt(plain['values'].get(plk))}"
        if ou:
            line += f"  open-unlearning {_fmt(ou['summary'].get(ok))}"
        print(line)
    if plain:
        same = sum(pkg["generations"].get(k) == v for k, v in plain["generations"].items())
        print(f"  greedy answers identical, package vs plain loop: {same}/{len(plain['generations'])}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _fmt(x) -> str:
    return "    -   " if x is None else f"{x:8.4f}"


def _answers(row: dict, true_key: str) -> list[str]:
    """What is scored after an item's question: gold, paraphrased (forget, retain), perturbed."""
    return [row["answer"], *([row["paraphrased_answer"]] if true_key != "answer" else []),
            *row["perturbed_answer"]]


def _n_answers(rows) -> int:
    return sum(len(_answers(row, true_key)) for split, _, true_key in SPLITS for row in rows[split])


def _workload(tok, rows) -> int:
    """Prompt + answer tokens of every scored answer, as the plain loop counts them."""
    n = 0
    for split, _, true_key in SPLITS:
        for row in rows[split]:
            chat = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["question"]}]
            p = len(tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
            n += sum(p + len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in _answers(row, true_key))
    return n


if __name__ == "__main__":
    raise SystemExit(main())
