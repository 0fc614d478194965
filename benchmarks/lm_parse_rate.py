"""Parse rate of SmolLM2 answers after SFT: every sampled candidate must parse.

SFT (LoRA) on the index tasks, then sample ``--samples`` candidate models at
temperature 1 (no nucleus cut) for each held-out task, zero-shot (never trained on).
Constrained decoding (:mod:`ragim.lm.constrained`) should make every one of them parse;
a failure is counted per call of ``generate_candidates``, which raises on the first
unparseable candidate.

* ``--dataset heart``: index = every site but Cleveland; targets = the 12 Cleveland tasks
  (33 parameters, about 13 s per candidate with 2 threads: 17 samples take 45 minutes).
* ``--dataset synthetic``: ``synthetic_family(n_tasks=60, n_features=10, seed=0)``; the
  last 12 tasks are the targets (11 parameters; fits the CPU budget).

Run: .venv/bin/python benchmarks/lm_parse_rate.py [--dataset synthetic] [--max-steps 10] [--samples 17]
     [--threads 2]

Writes benchmarks/results/lm_parse_rate.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from ragim import TaskIndex, datasets
    from ragim.errors import GenerationError
    from ragim.index import leak_free
    from ragim.train import train_sft

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["heart", "synthetic"], default="synthetic")
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--max-steps", type=int, default=10)
    ap.add_argument("--samples", type=int, default=17, help="candidates sampled per target")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.dataset == "heart":
        train, test = datasets.heart_disease().group_split("site", ["Cleveland"])
        what = f"the {len(train)} non-Cleveland heart tasks", "Cleveland task"
    else:
        tasks = datasets.synthetic_family(n_tasks=60, n_features=10, seed=0)
        train, test = tasks.take(range(48)), tasks.take(range(48, 60))
        what = "48 tasks of `synthetic_family(n_tasks=60, n_features=10, seed=0)`", "held-out synthetic task"
    index = TaskIndex.build(train, progress=False)
    t0 = time.perf_counter()
    gen = train_sft(index, base_model=args.base_model, max_steps=args.max_steps, batch_size=1, k=args.k,
                    val_fraction=0.0, progress=True)
    sft_s = time.perf_counter() - t0
    ok = failed_calls = 0
    errors = []
    t1 = time.perf_counter()
    for task in test:
        try:
            cands = gen.generate_candidates(task.description, index, exclude=leak_free(task),
                                            num_candidates=args.samples, temperature=1.0, top_p=1.0)
            ok += len(cands)
        except GenerationError as exc:
            failed_calls += 1
            errors.append(f"- {task.task_id}: {exc}")
        print(f"{task.task_id}: {ok} parsed so far, {failed_calls} failed calls", flush=True)
    gen_s = time.perf_counter() - t1
    cmd = " ".join([".venv/bin/python benchmarks/lm_parse_rate.py", *map(shlex.quote, sys.argv[1:])])
    text = (f"# LM answers that parse after SFT on {args.base_model} ({ok} of {ok + failed_calls * args.samples})\n\n"
            f"Command: `{cmd}`\n\n"
            f"SFT: {args.max_steps} steps of batch 1 on {what[0]} "
            f"({sft_s:.0f} s, {args.threads} torch thread(s)). Then {args.samples} candidates per {what[1]} "
            f"({len(test)} tasks, {len(index.schema.design_names) + 1} parameters, zero-shot, k={args.k}), "
            "sampled at temperature 1 without a nucleus cut "
            f"({gen_s:.0f} s, {gen_s / max(len(test) * args.samples, 1):.2f} s per candidate).\n\n"
            f"- candidates parsed: **{ok}**\n- generate_candidates calls that raised GenerationError: "
            f"**{failed_calls}** (each loses its {args.samples} candidates)\n"
            f"- LMGenerator.parse_failures_: {gen.parse_failures_}\n" + "\n".join(errors) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lm_parse_rate.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
