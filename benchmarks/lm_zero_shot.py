"""Zero-shot LMGenerator (LoRA SFT on SmolLM2) against the baselines on ``procedure_family``.

One leave-group-out fold of the evaluation harness: every procedure of one body-system
group is a target, and the index (hence SFT data, neighbours and baselines) holds only
the other groups. SFT runs once, on that fold's index, so the run fits a 2-core machine.

Run: .venv/bin/python benchmarks/lm_zero_shot.py [--n-tasks 300] [--group "Lower Joints"]
     [--base-model smollm2-135m] [--max-steps 20] [--batch-size 1] [--k 2]

procedure_family has 79 parameters, so one SFT example (prompt with 2 neighbours plus the
answer) is about 3,600 SmolLM2 tokens; batch size 2 ran out of 24 GB of RAM on CPU.

Writes benchmarks/results/lm_zero_shot.md (summary table, settings, wall time) and
lm_zero_shot.csv (per target).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from ragim import datasets
    from ragim import evaluate as ev
    from ragim.metrics import format_table, summarize

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-tasks", type=int, default=300)
    ap.add_argument("--group", default="Lower Joints")
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--k", type=int, default=2, help="neighbours in the LM prompt (and for neighbor-mean)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tasks = datasets.procedure_family(n_tasks=args.n_tasks, seed=0)
    lm_config = {"base_model": args.base_model, "max_steps": args.max_steps, "batch_size": args.batch_size,
                 "learning_rate": args.learning_rate, "k": args.k}
    t = time.perf_counter()
    df = ev.zero_shot(tasks, protocol="leave-group-out", group="group", groups=[args.group],
                      methods=["ragim-lm", "ragim-attention", "neighbor-mean", "pooled", "nearest-neighbor",
                               "true-model"],
                      k_neighbors=args.k, lm_config=lm_config, progress=True)
    secs = time.perf_counter() - t
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "lm_zero_shot.csv", index=False)
    table = format_table(summarize(df))
    cmd = (f".venv/bin/python benchmarks/lm_zero_shot.py --n-tasks {args.n_tasks} --group {json.dumps(args.group)} "
           f"--base-model {args.base_model} --max-steps {args.max_steps} --batch-size {args.batch_size} --k {args.k}")
    text = (f"# LMGenerator zero-shot on procedure_family ({df['task_id'].nunique()} targets, {secs:.0f} s)\n\n"
            f"Command: `{cmd}`\n\n"
            f"Protocol: leave-group-out, the {args.group!r} body-system group held out of "
            f"`procedure_family(n_tasks={args.n_tasks}, seed=0)`; every method uses k={args.k} neighbours; "
            f"SFT settings {json.dumps(lm_config)}; {args.threads} torch thread(s).\n\n"
            "```\n" + table + "\n```\n")
    (args.out / "lm_zero_shot.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
