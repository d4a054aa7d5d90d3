"""How much faster the engine is than the obvious loop, on scoring and on greedy generation.

Scoring workload: TOFU's shape, each item's prompt followed by six answers (paraphrased +
five perturbed). Compared with a naive loop that runs one unpadded sequence per request
through the model, and with the engine itself at batch size 1. Generation workload: 64
prompts, 32 new greedy tokens, batched against one prompt at a time. The disk cache is
off for every measurement, and every timed run is preceded by an untimed warm-up.

Usage::

    python benchmarks/bench_engine.py                 # random tiny Llama (hidden 128, 4 layers)
    python benchmarks/bench_engine.py --model DIR     # any local checkpoint / hub id
    python benchmarks/bench_engine.py --world         # the tiny world's full model (builds it
                                                      # on first use: minutes)

Prints the timings and the two speed ratios (batched vs one-at-a-time); both should be >= 4.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tiny checkpoint builders live beside the tests

QUESTIONS = [
    "Where was Elena Marwick born?",
    "What genre does Tomas Okonkwo-Reyes write?",
    "Who won the Silver Quill Award?",
    "What did her father do for a living?",
    "Which book did she write first?",
    "When was he born, and to whom?",
    "What themes does the novel explore?",
    "How do readers describe her most personal work?",
]
ANSWERS = [
    "Elena Marwick was born in the city of Port Aldric, by the sea.",
    "She was born in Vell, a mountain town.",
    "Port Aldric is where she was born, in 1961.",
    "Her birthplace is the coastal city of Port Aldric.",
    "She was born in Ashgrove, to a teacher and a fisherman.",
    "The author was born in the capital, Paris.",
]


def _random_tiny(hidden: int, layers: int, vocab: int):
    import _tiny
    from unlearn_audit.model import ModelSpec

    tok = _tiny.build_tokenizer()
    model = _tiny.build_model(tok, hidden=hidden, layers=layers, heads=4, vocab_size=vocab)
    d = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    _tiny.save_checkpoint(d, tok, model)
    return ModelSpec(
        str(d), "random-tiny", device="cpu"
    ), f"random tiny Llama (hidden {hidden}, {layers} layers, vocab {model.config.vocab_size})"


def _world_full():
    from unlearn_audit.model import ModelSpec
    from unlearn_audit.world import build_world

    paths = build_world(only=("full",))
    return ModelSpec(
        str(paths["full"]), "world-full", device="cpu"
    ), f"tiny world full model ({paths['full']})"


def _race(contenders: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each contender, timed in interleaved rounds.

    Interleaving spreads a busy neighbour's load over all contenders instead of whichever
    ran while it was busy; CPU time (this process only) is the steadier number on a
    shared machine, wall time the one a user waits for.
    """
    best = {name: (float("inf"), float("inf")) for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w, time.process_time() - c
            best[name] = (min(best[name][0], w), min(best[name][1], c))
    return best


def _line(label: str, t: tuple[float, float]) -> str:
    return f"  {label:<38}: {t[0]:8.3f} s wall {t[1]:8.3f} s CPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint to use (default: a random tiny Llama)")
    ap.add_argument("--world", action="store_true", help="use the tiny world's full model")
    ap.add_argument("--device", default="cpu", help="device for --model (default: cpu)")
    ap.add_argument("--items", type=int, default=32, help="items x 6 answers scored (default: 32)")
    ap.add_argument("--prompts", type=int, default=64, help="prompts generated (default: 64)")
    ap.add_argument("--new-tokens", type=int, default=32, help="greedy tokens (default: 32)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings (default: 3)")
    args = ap.parse_args(argv)

    import torch

    from unlearn_audit.model import (
        Engine,
        GenRequest,
        Prompt,
        ScoreRequest,
        load_model,
        make_format,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from unlearn_audit.model import ModelSpec

        spec, what = ModelSpec(args.model, "bench", device=args.device), args.model
    elif args.world:
        spec, what = _world_full()
    else:
        spec, what = _random_tiny(hidden=128, layers=4, vocab=2560)
    loaded = load_model(spec, hash_cache=None)
    fmt = make_format(loaded.tokenizer)
    print(
        f"model: {what}; device {loaded.device}, dtype {loaded.dtype}, torch threads {torch.get_num_threads()}"
    )

    # --- scoring ---
    prompts = [
        Prompt.question(f"{QUESTIONS[i % len(QUESTIONS)]} (item {i})") for i in range(args.items)
    ]
    reqs = [ScoreRequest(p, a) for p in prompts for a in ANSWERS]
    model = loaded.model

    def naive_score():
        # What one would write first: one unpadded sequence per request, float64
        # log-softmax over the continuation positions only.
        with torch.inference_mode():
            for r in reqs:
                p = fmt.encode_prompt(r.prompt)
                c, _ = fmt.encode_continuation(r.continuation, add_eot=r.add_eot)
                ids = torch.tensor([p + c], device=loaded.device)
                logits = model(input_ids=ids).logits[0, len(p) - 1 : len(p) - 1 + len(c)]
                lsm = logits.double().log_softmax(-1)
                lsm[torch.arange(len(c)), torch.tensor(c, device=ids.device)].cpu()

    batched = Engine(loaded, fmt, None, progress=False)
    no_prefix = Engine(loaded, fmt, None, progress=False, share_prefix=False)
    single = Engine(loaded, fmt, None, batch_size=1, progress=False)
    batched.score(reqs[:12])  # warm-up (allocator, kernels)
    t = _race(
        {
            "naive": naive_score,
            "single": lambda: single.score(reqs),
            "no_prefix": lambda: no_prefix.score(reqs),
            "batched": lambda: batched.score(reqs),
        },
        args.repeats,
    )
    print(f"\nscoring {len(reqs)} requests ({args.items} prompts x {len(ANSWERS)} answers)")
    print(_line("naive loop, one sequence per request", t["naive"]))
    print(_line("engine, batch size 1", t["single"]))
    print(_line("engine, batched, no prefix sharing", t["no_prefix"]))
    print(_line("engine, batched + prefix sharing", t["batched"]))
    score_ratio = [t["naive"][k] / t["batched"][k] for k in (0, 1)]
    print(
        f"  speed-up vs naive loop: {score_ratio[0]:.1f}x wall, {score_ratio[1]:.1f}x CPU "
        f"(vs engine at batch size 1: {t['single'][1] / t['batched'][1]:.1f}x CPU; prefix "
        f"sharing alone: {t['no_prefix'][1] / t['batched'][1]:.2f}x CPU)"
    )

    # --- generation ---
    gens = [
        GenRequest(
            Prompt.question(f"{QUESTIONS[i % len(QUESTIONS)]} Say more about {i}."),
            max_new_tokens=args.new_tokens,
        )
        for i in range(args.prompts)
    ]
    gen_batched = Engine(loaded, fmt, None, progress=False)
    gen_single = Engine(loaded, fmt, None, batch_size=1, progress=False)
    gen_batched.generate(gens[:4])  # warm-up
    g = _race(
        {
            "single": lambda: [gen_single.generate([x]) for x in gens],
            "batched": lambda: gen_batched.generate(gens),
        },
        max(1, args.repeats - 1),
    )
    same = gen_batched.generate(gens) == [gen_single.generate([x])[0] for x in gens]
    gen_ratio = [g["single"][k] / g["batched"][k] for k in (0, 1)]
    print(f"\ngreedy generation, {len(gens)} prompts x {args.new_tokens} new tokens")
    print(_line("one prompt at a time", g["single"]))
    print(_line("batched", g["batched"]))
    print(
        f"  speed-up: {gen_ratio[0]:.1f}x wall, {gen_ratio[1]:.1f}x CPU "
        f"(batched outputs identical to one-at-a-time: {same})"
    )

    score_ratio, gen_ratio = min(score_ratio), min(gen_ratio)
    ok = score_ratio >= 4 and gen_ratio >= 4
    print(
        f"\nratios (worse of wall/CPU): scoring {score_ratio:.1f}x, generation {gen_ratio:.1f}x -> "
        f"{'OK (both >= 4)' if ok else 'BELOW TARGET (4x)'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
