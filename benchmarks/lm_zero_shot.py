"""Zero-shot LMGenerator (LoRA SFT on SmolLM2) against the baselines.

* ``--dataset procedure`` (default): one leave-group-out fold of the evaluation harness on
  ``procedure_family``. Every procedure of one body-system group is a target, and the
  index (hence SFT data, neighbours, population model and baselines) holds only the other
  groups. SFT runs once, on that fold's index, so the run fits a 2-core machine.
* ``--dataset heart``: leave-task-out on the real heart-disease tasks, the harness's 5
  folds of targets; SFT runs once per fold, each on an index without that fold's targets
  and every task sharing their patients.

Run: .venv/bin/python benchmarks/lm_zero_shot.py [--dataset procedure|heart] [--n-tasks 300]
     [--group "Lower Joints"] [--base-model smollm2-135m] [--max-steps 20] [--batch-size 1] [--k 2]
     [--no-population] [--max-targets N] [--threads 2]

procedure_family has 79 parameters, so one SFT example (prompt with 2 neighbours and the
population model, plus the answer) is about 4,900 SmolLM2 tokens; on CPU one step of
batch 1 takes about 45 s with 2 threads, and batch 2 ran out of 24 GB of RAM.

Writes benchmarks/results/lm_zero_shot[_heart|_<group>][_no_population].md (summary
table, settings, wall time, generation failures, per-fold SFT notes) and the matching
.csv (per target); ``_<group>`` is the held-out group's name in snake case when it is
not "Lower Joints".
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GROUP = "Lower Joints"


def main() -> None:
    from ragim import datasets
    from ragim import evaluate as ev
    from ragim.metrics import format_table, summarize

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["procedure", "heart"], default="procedure")
    ap.add_argument("--n-tasks", type=int, default=300, help="procedure_family size")
    ap.add_argument("--group", default=DEFAULT_GROUP, help="the procedure group held out")
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--learning-rate", type=float, default=2e-4)
    ap.add_argument("--k", type=int, default=2, help="neighbours in the LM prompt (and for neighbor-mean)")
    ap.add_argument("--val-fraction", type=float, default=0.05,
                    help="SFT validation share (its loss is computed once, after training)")
    ap.add_argument("--no-population", action="store_true", help="leave the population model out of the prompts")
    ap.add_argument("--prompt-order", choices=["shared-first", "target-first"], default="shared-first",
                    help="LMConfig.prompt_order (target-first: the order before the choice existed)")
    ap.add_argument("--max-targets", type=int, default=None,
                    help="heart: evaluate this many seeded-random targets (spread over the 5 folds)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm_config = {"base_model": args.base_model, "max_steps": args.max_steps, "batch_size": args.batch_size,
                 "learning_rate": args.learning_rate, "k": args.k, "val_fraction": args.val_fraction,
                 "generator_config": {"population": not args.no_population, "prompt_order": args.prompt_order}}
    methods = ["ragim-lm", "ragim-attention", "neighbor-mean", "population", "pooled", "nearest-neighbor"]
    if args.dataset == "procedure":
        tasks = datasets.procedure_family(n_tasks=args.n_tasks, seed=0)
        split = dict(protocol="leave-group-out", group="group", groups=[args.group])
        methods.append("true-model")
        what = (f"leave-group-out, the {args.group!r} body-system group held out of "
                f"`procedure_family(n_tasks={args.n_tasks}, seed=0)`")
        title = f"procedure_family, {args.group} held out"
    else:
        tasks = datasets.heart_disease()
        split = dict(protocol="leave-task-out", max_targets=args.max_targets)
        n = "all 28" if args.max_targets is None else f"{args.max_targets} seeded-random"
        what = (f"leave-task-out on `heart_disease()`, {n} tasks as targets in 5 folds (one SFT per fold, on an "
                "index without the fold's targets and the tasks sharing their patients)")
        title = "heart disease"
    if args.no_population:
        title += ", prompts without the population model"
    stem = "lm_zero_shot"
    if args.dataset == "heart":
        stem += "_heart"
    elif args.group != DEFAULT_GROUP:
        stem += "_" + "_".join("".join(c if c.isalnum() else " " for c in args.group.lower()).split())
    if args.no_population:
        stem += "_no_population"
    t = time.perf_counter()
    df = ev.zero_shot(tasks, methods=methods, k_neighbors=args.k, lm_config=lm_config, progress=True, **split)
    secs = time.perf_counter() - t
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / f"{stem}.csv", index=False)
    table = format_table(summarize(df))
    lm = df[df["method"] == "ragim-lm"]
    failed = lm[lm["status"] != "ok"]
    failures = "".join(f"\n- {r.task_id}: {r.status}" for r in failed.itertuples())
    cmd = " ".join([".venv/bin/python benchmarks/lm_zero_shot.py", *map(shlex.quote, sys.argv[1:])])
    text = (f"# LMGenerator zero-shot on {title} ({df['task_id'].nunique()} targets, {secs:.0f} s)\n\n"
            f"Command: `{cmd}`\n\n"
            f"Protocol: {what}; every method uses k={args.k} neighbours; SFT settings {json.dumps(lm_config)}; "
            f"{args.threads} torch thread(s). {len(lm)} LM generations, {len(failed)} failed (parse or other "
            f"errors).{failures}\n\n"
            "```\n" + table + "\n```\n"
            + "".join(f"\n- {n}" for n in df.attrs.get("notes", [])) + "\n")
    (args.out / f"{stem}.md").write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
