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

#: settings that may differ between the folds of one run, besides lm_training.VOLATILE
PER_FOLD = {"fold", "out", "json_out"}


def check_run(run, name: str) -> None:
    """Refuse, in one line, a fold file that is not what ``lm_training.py --json-out`` writes:
    ``settings`` with an integer ``fold``; ``per_task`` mapping each method to rows with a
    ``task_id`` and a ``log_loss``, every method over the same tasks, each once; and
    ``comparisons`` naming a ``method`` and a ``baseline``."""
    if not isinstance(run, dict) or not isinstance(run.get("settings"), dict) or not isinstance(
            run.get("per_task"), dict):
        raise SystemExit(f"{name} is not a benchmarks/lm_training.py --json-out file (no settings or per_task)")
    fold = run["settings"].get("fold")
    if "n_folds" in run["settings"] and run["settings"]["n_folds"] is None:
        raise SystemExit(f"{name} is not one fold of an --n-folds run (it held out --n-heldout tasks)")
    if not isinstance(fold, int) or isinstance(fold, bool):
        raise SystemExit(f"{name}: settings.fold is {fold!r}, not a fold number; pool the folds of an --n-folds run")
    if not run["per_task"]:
        raise SystemExit(f"{name} scores no method (per_task is empty)")
    ids = None
    for m, rows in run["per_task"].items():
        if not isinstance(rows, list) or not rows or not all(
                isinstance(r, dict) and isinstance(r.get("task_id"), str) and "log_loss" in r for r in rows):
            raise SystemExit(f"{name}: the rows of {m!r} are not a list of {{task_id, log_loss, ...}} records")
        mine = [r["task_id"] for r in rows]
        if len(set(mine)) < len(mine):
            raise SystemExit(f"{name}: {m!r} scores a task twice: {sorted({t for t in mine if mine.count(t) > 1})}")
        if ids is not None and set(mine) != ids:
            raise SystemExit(f"{name}: {m!r} is scored on other tasks than {next(iter(run['per_task']))!r}; "
                             "each method must be scored on every held-out task")
        ids = set(mine)
    comps = run.get("comparisons", [])
    if not isinstance(comps, list) or not all(
            isinstance(c, dict) and isinstance(c.get("method"), str) and isinstance(c.get("baseline"), str)
            for c in comps):
        raise SystemExit(f"{name}: comparisons must be a list of {{method, baseline, ...}} records")


def pool(runs: list[dict], names: list[str]) -> tuple[dict, list[tuple[str, str]]]:
    """``(per_task, pairs)``: each method's per-task rows over every fold, and the union of the
    folds' ``(method, baseline)`` comparisons, in first-seen order. ``names`` label ``runs`` in
    errors. A fold kept before an option was added counts as run with its default
    (``lm_training.ADDED``)."""
    from lm_training import VOLATILE, differing_settings

    for name, run in zip(names, runs, strict=True):
        check_run(run, name)
    for name, run in zip(names[1:], runs[1:], strict=True):
        differ = differing_settings(runs[0]["settings"], run["settings"], ignore=VOLATILE | PER_FOLD, word="not")
        if differ:
            raise SystemExit(f"{name} was run with other settings than {names[0]}: {differ}")
    folds = [r["settings"]["fold"] for r in runs]
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
        for m in methods:  # a metric a fold could not compute (None, NaN) stays missing: dropped from its pairs
            per_task[m] += [{**r, **{k: np.nan for k in ("log_loss", "auroc") if r.get(k) is None}}
                            for r in run["per_task"][m]]
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
    from lm_training import paired, paired_table

    from ragim.io import write_file

    runs = []
    for p in args.folds:
        try:
            runs.append(json.loads(p.read_text(encoding="utf-8")))  # lm_training writes NaN as NaN
        except (OSError, ValueError) as exc:
            raise SystemExit(f"cannot read {p}: {exc}") from exc
    per_task, pairs = pool(runs, [str(p) for p in args.folds])
    comparisons = paired(per_task, pairs)
    folds = sorted(r["settings"].get("fold") for r in runs)
    n = len(per_task[next(iter(per_task))])
    lines = [f"# LM training, folds {folds} pooled: {n} held-out tasks", "",
             "Files: " + ", ".join(f"`{p}`" for p in args.folds), "",
             "| method | log-loss ↓ | AUROC ↑ | tasks |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {np.nanmean([r['log_loss'] for r in rows]):.4f} | "
              f"{np.nanmean([r['auroc'] for r in rows]):.4f} | {len(rows)} |" for m, rows in per_task.items()]
    lines += ["", *paired_table(comparisons)]
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
