"""Coverage of the default generator's coefficient intervals on held-out synthetic tasks.

Run: .venv/bin/python benchmarks/interval_coverage.py [--n-tasks 300] [--folds 5] [--embedder minilm]

For each of ``--folds`` leave-task-out folds of ``synthetic_family(n_tasks, n_features=10,
seed=0)`` (the evaluation's family), the StatisticalGenerator is fitted on the other folds'
index and generates every held-out task's model from its description. The nominal 50%, 80%
and 90% intervals (estimate ± z · SD) of each coefficient are checked against the task's true
coefficients (with the task's own noise) and against its oracle (without it), on the index's
standardised feature scale. Writes benchmarks/results/interval_coverage.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (0.5, 0.8, 0.9)


def main() -> None:
    from ragim import TaskIndex, datasets
    from ragim.generate.statistical import StatisticalGenerator

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-tasks", type=int, default=300)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    fam = datasets.synthetic_family(n_tasks=args.n_tasks, n_features=10, seed=0)
    order = np.random.default_rng(0).permutation(len(fam))
    folds = np.array_split(order, args.folds)
    hits = {(truth, part, lvl): [] for truth in ("true", "oracle") for part in ("intercept", "slopes")
            for lvl in LEVELS}
    t0 = time.perf_counter()
    for f, test in enumerate(folds):
        train = np.setdiff1d(order, test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tasks too small to fit are named in index.skipped
            index = TaskIndex.build(fam.take(train), embedder=args.embedder, progress=False)
        gen = StatisticalGenerator().fit(index, progress=False)
        scale = np.array([index.schema.scales_[n] for n in index.schema.names])
        center = np.array([index.schema.means_[n] for n in index.schema.names])
        targets = [fam[int(i)] for i in test]
        params = gen.generate_params([t.description for t in targets])
        for t, p in zip(targets, params, strict=True):
            for truth, tp in (("true", t.true_params), ("oracle", t.oracle_params)):
                if tp is None:
                    continue
                # the truth on the index's standardised scale: slopes times SD, intercept at the centre
                beta = tp.vector[1:] * scale
                intercept = tp.vector[0] + tp.vector[1:] @ center
                truth_vec = np.concatenate([[intercept], beta])
                for lvl in LEVELS:
                    z = norm.ppf(0.5 + lvl / 2)
                    inside = np.abs(p.vector - truth_vec) <= z * p.std
                    hits[(truth, "intercept", lvl)].append(bool(inside[0]))
                    hits[(truth, "slopes", lvl)].extend(bool(v) for v in inside[1:])
        print(f"fold {f + 1}/{args.folds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = [{"truth": truth, "part": part, "nominal": lvl, "coverage": round(float(np.mean(v)), 4),
             "n": len(v)} for (truth, part, lvl), v in hits.items() if v]
    secs = time.perf_counter() - t0
    cmd = ("`.venv/bin/python benchmarks/interval_coverage.py" + (f" --n-tasks {args.n_tasks}" if args.n_tasks != 300
                                                                    else "")
           + (f" --folds {args.folds}" if args.folds != 5 else "")
           + (f" --embedder {args.embedder}" if args.embedder != "minilm" else "") + "`")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "interval_coverage.json").write_text(json.dumps({"command": cmd, "seconds": round(secs, 1),
                                                                 "rows": rows}, indent=1) + "\n")
    lines = [f"Command: {cmd} ({len(fam)} tasks, {args.folds} leave-task-out folds, {secs:.0f} s)", "",
             "| truth | coefficients | nominal | coverage | intervals |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['truth']} | {r['part']} | {r['nominal']:.0%} | {r['coverage']:.1%} | {r['n']:,} |" for r in rows]
    (args.out / "interval_coverage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
