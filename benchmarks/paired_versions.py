"""Did a change to a method help? Its evaluation rows now against the same rows at a git revision.

``benchmarks/evaluate_all.py`` scores every method on fixed folds, targets and test rows
(seed 0), so a method's per-target rows before and after a change are paired: this script
takes ``benchmarks/results/eval_<name>.csv`` at ``--old`` (a git revision) and in the working
tree, and reports the mean paired difference (new - old) of each metric with a percentile
bootstrap CI over targets (:func:`ragim.metrics.paired_differences`), zero-shot unless
``--k-shot``.

Run: .venv/bin/python benchmarks/paired_versions.py --old REV [--method ragim-statistical]
         [--only synthetic procedure ...] [--k-shot 0]
"""

from __future__ import annotations

import argparse
import io
import subprocess
from pathlib import Path

import pandas as pd

from ragim.metrics import paired_differences

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["heart-site", "heart-task", "colon-arm", "colon-task", "synthetic", "procedure"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="git revision holding the earlier results")
    ap.add_argument("--method", default="ragim-statistical")
    ap.add_argument("--only", nargs="+", default=NAMES, choices=NAMES)
    ap.add_argument("--k-shot", type=int, default=0)
    args = ap.parse_args()
    print(f"paired difference {args.method} (working tree) - {args.method} ({args.old}), "
          f"k = {args.k_shot}; 95% bootstrap CI over targets; log-loss below 0 and AUROC above 0 "
          "favour the working tree\n")
    print("| benchmark | metric | mean difference | 95% CI | better / worse | targets |")
    print("|---|---|---:|---|---:|---:|")
    for name in args.only:
        rel = f"benchmarks/results/eval_{name}.csv"
        old_text = subprocess.run(["git", "show", f"{args.old}:{rel}"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout
        old, new = pd.read_csv(io.StringIO(old_text)), pd.read_csv(ROOT / rel)
        old, new = (df[df["method"] == args.method].copy() for df in (old, new))
        old["method"], new["method"] = "old", "new"
        res = paired_differences(pd.concat([new, old]), ["new"], ["old"], k_shot=args.k_shot)
        for r in res.itertuples():
            print(f"| {name} | {r.metric} | {r.mean_diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | "
                  f"{r.wins} / {r.losses} | {r.n_tasks} |")


if __name__ == "__main__":
    main()
