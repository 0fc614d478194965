"""The evaluation tables of docs/benchmarks.md: zero- and few-shot results against the baselines.

Run: .venv/bin/python benchmarks/evaluate_all.py
         [--only heart-site heart-task colon-arm colon-task synthetic procedure]
         [--k-shots 4 8 16 32] [--methods pooled neighbor-mean ...] [--embedder hashing]

Writes benchmarks/results/eval_<name>.csv (per task) and eval_<name>.md (summary table).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "heart-site": dict(dataset="heart-disease", protocol="leave-group-out", group="site"),
    "heart-task": dict(dataset="heart-disease", protocol="leave-task-out", group=None),
    "colon-arm": dict(dataset="colon-cancer", protocol="leave-group-out", group="arm"),
    # one target per fold: 6 targets in a fold often touch all three whole-arm tasks, and every
    # task sharing patients with a target leaves the index, which would leave it (nearly) empty
    "colon-task": dict(dataset="colon-cancer", protocol="leave-task-out", group=None, folds=30),
    "synthetic": dict(dataset="synthetic", protocol="leave-task-out", group=None, n_tasks=300),
    "procedure": dict(dataset="procedure", protocol="leave-task-out", group=None, n_tasks=1000, max_targets=200),
}


def load_benchmark(name: str):
    """``(dataset name, tasks, evaluation keyword arguments)`` of benchmark ``name``."""
    from ragim import datasets

    cfg = dict(CONFIGS[name])
    ds = cfg.pop("dataset")
    n = cfg.pop("n_tasks", None)
    if ds == "heart-disease":
        tasks = datasets.heart_disease()
    elif ds == "colon-cancer":
        tasks = datasets.colon_cancer()
    elif ds == "synthetic":
        tasks = datasets.synthetic_family(n_tasks=n, n_features=10, seed=0)
    else:
        tasks = datasets.procedure_family(n_tasks=n, seed=0)
    return ds, tasks, cfg


def _options(args) -> str:
    """The non-default options of this run, as they are written on the command line."""
    out = ""
    if args.k_shots != [4, 8, 16, 32]:
        out += " --k-shots " + " ".join(map(str, args.k_shots))
    if args.methods:
        out += " --methods " + " ".join(args.methods)
    if args.embedder:
        out += f" --embedder {args.embedder}"
    return out


def main() -> None:
    from ragim import evaluate as ev
    from ragim.metrics import format_table, summarize

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="+", default=list(CONFIGS))
    ap.add_argument("--k-shots", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="evaluation methods (default: ragim's defaults)")
    ap.add_argument("--embedder", default=None,
                    help="description embedder (default: MiniLM; 'hashing' for a quick run)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # tiny networks: one thread is fastest on a shared 2-core machine
    for name in args.only:
        ds, tasks, cfg = load_benchmark(name)
        t = time.perf_counter()
        df = ev.few_shot(tasks, k_shots=tuple(args.k_shots), embedder=args.embedder,
                         methods=args.methods, progress=True, **cfg)
        secs = time.perf_counter() - t
        df.to_csv(args.out / f"eval_{name}.csv", index=False)
        summary = summarize(df)
        table = format_table(summary)
        header = (f"# {name}: {ds}, {cfg['protocol']}" + (f" by {cfg['group']}" if cfg.get("group") else "")
                  + f" ({df['task_id'].nunique()} targets, {secs:.0f} s)\n\n"
                  "Command: `.venv/bin/python benchmarks/evaluate_all.py "
                  f"--only {name}{_options(args)}`\n\n")
        (args.out / f"eval_{name}.md").write_text(header + "```\n" + table + "\n```\n")
        print(header + table, flush=True)


if __name__ == "__main__":
    main()
