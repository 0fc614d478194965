"""Pool the folds of a leave-task-out LM training run into one paired comparison.

``benchmarks/lm_training.py --family heart-task --n-folds 4 --fold F`` scores the tasks of one
fold (7 of the 28 heart tasks); issue 18 asks for paired CIs over at least 20 held-out tasks.
This script reads the ``--json-out`` of several folds of one run (the same settings but
``fold``), puts every fold's held-out tasks side by side, and recomputes each paired
difference the folds reported (``method − baseline``, log-loss and AUROC) over all of them,
with :func:`ragim.metrics.paired_differences` (95% percentile bootstrap over tasks). Every
method is scored on all the rows of each held-out task by the model its own fold trained, so
the pooled comparison stays paired.

    python benchmarks/lm_training_folds.py runs/heart-f0.json runs/heart-f1.json \\
        runs/heart-f2.json runs/heart-f3.json --out benchmarks/results/lm_training_heart_folds.md

A fold file of other settings (other than ``fold`` and the options that do not change what is
computed), the same fold twice, a task in two folds, or a method missing from one fold is
refused in one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: settings that may differ between the folds of one run
PER_FOLD = {"fold", "out", "json_out", "run_dir", "stages", "resume", "threads", "save_steps",
            "samples", "activation_checkpointing", "also_bfloat16", "mixed_precision"}


def pool(runs: list[dict], names: list[str]) -> tuple[dict, list[tuple[str, str]]]:
    """``(per_task, pairs)``: each method's per-task rows over every fold, and the union of the
    folds' ``(method, baseline)`` comparisons, in first-seen order. ``names`` label ``runs`` in
    errors."""
    first = runs[0]["settings"]
    for name, run in zip(names[1:], runs[1:], strict=True):
        differ = sorted(k for k in first.keys() | run["settings"].keys()
                        if k not in PER_FOLD and first.get(k) != run["settings"].get(k))
        if differ:
            raise SystemExit(f"{name} was run with other settings than {names[0]}: "
                             + ", ".join(f"{k}={run['settings'].get(k)!r} (not {first.get(k)!r})" for k in differ))
    folds = [r["settings"].get("fold") for r in runs]
    if len(set(folds)) < len(folds):
        raise SystemExit(f"the same fold is given twice: folds {folds}")
    methods = [m for m in runs[0]["per_task"] if all(m in r["per_task"] for r in runs)]
    missing = sorted({m for r in runs for m in r["per_task"]} - set(methods))
    if missing:
        raise SystemExit(f"method(s) {missing} are not scored in every fold; pool runs of the same --stages")
    per_task, seen = {m: [] for m in methods}, {}
    for name, run in zip(names, runs, strict=True):
        for r in run["per_task"][methods[0]]:
            if r["task_id"] in seen:
                raise SystemExit(f"task {r['task_id']!r} is held out in {seen[r['task_id']]} and {name}")
            seen[r["task_id"]] = name
        for m in methods:
            per_task[m] += run["per_task"][m]
    pairs = []
    for run in runs:
        for c in run.get("comparisons", []):
            p = (c["method"], c["baseline"])
            if p not in pairs and p[0] in per_task and p[1] in per_task:
                pairs.append(p)
    return per_task, pairs


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folds", nargs="+", type=Path, help="lm_training.py --json-out files, one per fold")
    ap.add_argument("--out", type=Path, help="markdown table (also printed)")
    ap.add_argument("--json-out", type=Path, help="per-task rows and comparisons of all folds")
    args = ap.parse_args(argv)
    from lm_training import paired

    from ragim.io import strict_json, write_file

    runs = []
    for p in args.folds:
        try:
            runs.append(strict_json(p.read_bytes()))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"cannot read {p}: {exc}") from exc
        if not {"settings", "per_task"} <= set(runs[-1]):
            raise SystemExit(f"{p} is not a benchmarks/lm_training.py --json-out file (no settings or per_task)")
    per_task, pairs = pool(runs, [str(p) for p in args.folds])
    comparisons = paired(per_task, pairs)
    folds = sorted(r["settings"].get("fold") for r in runs)
    n = len(per_task[next(iter(per_task))])
    lines = [f"# LM training, folds {folds} pooled: {n} held-out tasks", "",
             "Files: " + ", ".join(f"`{p}`" for p in args.folds), "",
             "| method | log-loss ↓ | AUROC ↑ | tasks |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {np.mean([r['log_loss'] for r in rows]):.4f} | "
              f"{np.nanmean([r['auroc'] for r in rows]):.4f} | {len(rows)} |" for m, rows in per_task.items()]
    lines += ["", "| paired difference (same held-out tasks) | metric | mean | 95% bootstrap CI | wins / tasks |",
              "|---|---|---:|---|---|"]
    lines += [f"| {c['method']} − {c['baseline']} | {c['metric']} | {c['mean_diff']:+.4f} | "
              f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | {c['wins']} / {c['n_tasks']} |" for c in comparisons]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out is not None:
        write_file(args.out, md.encode("utf-8"))
    out = {"folds": folds, "n_tasks": n, "per_task": per_task, "comparisons": comparisons}
    if args.json_out is not None:
        write_file(args.json_out, json.dumps(out, indent=1, default=float).encode("utf-8"))
    return out


if __name__ == "__main__":
    main()
