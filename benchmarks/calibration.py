"""Calibration on pooled test rows: the zero-shot models of docs/benchmarks.md, their ECE
measured over the test rows of all targets together, with logistic recalibration intercept
and slope, and paired ECE differences with a bootstrap CI over targets
(:mod:`ragim.calibration`).

Why: the per-target ECE of the evaluation tables is measured on each target's few test rows
(median 21 on synthetic, 5 on procedure) and is dominated by binning noise that grows with
the spread of the predictions; the true generating model scores worse on it than the pooled
model. The same folds, targets and test rows as benchmarks/evaluate_all.py are used
(its CONFIGS, seed 0, MiniLM unless --embedder).

Run: .venv/bin/python benchmarks/calibration.py [--only synthetic procedure heart-task ...]
         [--embedder hashing]

Writes benchmarks/results/calibration_<name>.json and .md, which benchmarks/report.py puts in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_all import CONFIGS, ROOT, load_benchmark  # noqa: E402

METHODS = ["ragim-statistical", "pooled", "neighbor-mean", "true-model", "oracle"]
COMPARED = ["ragim-statistical", "neighbor-mean", "true-model", "oracle"]
BASELINES = ["pooled", "neighbor-mean"]


def markdown(res: dict) -> str:
    lines = [
        f"# {res['name']}: calibration over pooled test rows ({res['n_targets']} targets, "
        f"{res['seconds']:.0f} s)",
        "",
        f"Command: `{res['command']}`",
        "",
        "| method | targets | rows | ECE (pooled rows) | mean per-target ECE | "
        "calibration intercept | calibration slope | mean risk | event rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["calibration"]:
        lines.append(
            f"| {r['method']} | {r['n_targets']} | {r['n_rows']} | {r['ece']:.3f} | "
            f"{r['per_target_ece']:.3f} | {r['calibration_intercept']:+.3f} | "
            f"{r['calibration_slope']:.3f} | {r['mean_risk']:.3f} | {r['event_rate']:.3f} |"
        )
    lines += [
        "",
        "Paired ECE differences over pooled rows (method − baseline, 95% bootstrap CI over "
        "targets; below 0 is better):",
        "",
        "| method | baseline | ECE | baseline ECE | difference [95% CI] |",
        "|---|---|---:|---:|---|",
    ]
    for r in res["differences"]:
        lines.append(
            f"| {r['method']} | {r['baseline']} | {r['ece']:.3f} | {r['ece_baseline']:.3f} | "
            f"{r['mean_diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    from ragim import evaluate as ev
    from ragim.calibration import pooled_calibration, pooled_ece_differences

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="+", default=list(CONFIGS))
    ap.add_argument("--embedder", default=None, help="description embedder (default: MiniLM)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.only:
        ds, tasks, cfg = load_benchmark(name)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # true-model/oracle are skipped on real data
            df, preds = ev.zero_shot(tasks, methods=METHODS, embedder=args.embedder,
                                     return_predictions=True, progress=True, **cfg)
        seconds = time.perf_counter() - t
        table = pooled_calibration(preds)
        per_target = df.groupby("method")["ece"].mean()
        table["per_target_ece"] = table["method"].map(per_target)
        have = set(table["method"])
        diffs = pooled_ece_differences(preds, [m for m in COMPARED if m in have],
                                       [b for b in BASELINES if b in have])
        command = "benchmarks/calibration.py --only " + name
        if args.embedder:
            command += f" --embedder {args.embedder}"
        res = {"name": name, "dataset": ds, "protocol": cfg["protocol"],
               "n_targets": int(df["task_id"].nunique()), "seconds": round(seconds, 1),
               "command": ".venv/bin/python " + command,
               "calibration": table.to_dict("records"), "differences": diffs.to_dict("records")}
        (args.out / f"calibration_{name}.json").write_text(json.dumps(res, indent=1) + "\n")
        (args.out / f"calibration_{name}.md").write_text(markdown(res))
        print(markdown(res), flush=True)


if __name__ == "__main__":
    main()
