"""Coverage of the default generator's coefficient intervals on held-out synthetic tasks.

Run: .venv/bin/python benchmarks/interval_coverage.py [--n-tasks 300] [--folds 5] [--embedder minilm]
     [--k 8 32 128] [--adaptations auto intercept recalibrate prior map]

For each of ``--folds`` leave-task-out folds of ``synthetic_family(n_tasks, n_features=10,
seed=0)`` (the evaluation's family), the StatisticalGenerator is fitted on the other folds'
index and generates every held-out task's model from its description. The nominal 50%, 80%
and 90% intervals (estimate ± z · SD) of each coefficient are checked against the task's true
coefficients (with the task's own noise) and against its oracle (without it), on the index's
standardised feature scale. Writes benchmarks/results/interval_coverage.json and .md.

Few-shot (``--k``): each held-out task's generated model is also adapted to k of its rows
(a seeded random draw, the same rows for every adaptation) by
:func:`ragim.estimator.adapt_prior` with each of ``--adaptations`` (``auto``: what
:class:`~ragim.ZeroShotClassifier` does by default), and the adapted model's intervals are
checked against the same truths. Tasks with fewer than 2k rows, or whose k rows hold one
class, are skipped at that k.
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
ADAPTATIONS = ("auto", "intercept", "recalibrate", "prior", "map")


def _count(hits: dict, key: tuple, estimate: np.ndarray, sd: np.ndarray, truth: np.ndarray) -> None:
    """Add whether each coefficient's nominal intervals hold the truth, under ``key + (part,
    level)``."""
    for lvl in LEVELS:
        inside = np.abs(estimate - truth) <= norm.ppf(0.5 + lvl / 2) * sd
        hits.setdefault((*key, "intercept", lvl), []).append(bool(inside[0]))
        hits.setdefault((*key, "slopes", lvl), []).extend(bool(v) for v in inside[1:])


def main() -> None:
    from ragim import TaskIndex, datasets
    from ragim.estimator import adapt_prior
    from ragim.generate.statistical import StatisticalGenerator

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-tasks", type=int, default=300)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--k", type=int, nargs="*", default=[], help="few-shot row counts")
    ap.add_argument("--adaptations", nargs="+", default=list(ADAPTATIONS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    fam = datasets.synthetic_family(n_tasks=args.n_tasks, n_features=10, seed=0)
    order = np.random.default_rng(0).permutation(len(fam))
    folds = np.array_split(order, args.folds)
    hits: dict = {}
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
            truths = {}
            for truth, tp in (("true", t.true_params), ("oracle", t.oracle_params)):
                if tp is None:
                    continue
                # the truth on the index's standardised scale: slopes times SD, intercept at the centre
                beta = tp.vector[1:] * scale
                intercept = tp.vector[0] + tp.vector[1:] @ center
                truths[truth] = np.concatenate([[intercept], beta])
                _count(hits, (truth, 0, "zero-shot"), p.vector, p.std, truths[truth])
            y = np.asarray(t.y, dtype=float)
            for k in args.k:
                rows = np.random.default_rng([int(t.metadata.get("index", 0)), k]).permutation(len(y))[:k]
                if len(y) < 2 * k or len(set(y[rows])) < 2:
                    continue
                for how in args.adaptations:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        a, report = adapt_prior(p, t.X.iloc[rows], y[rows], adaptation=how, warn=False)
                    if a.std is None:
                        continue
                    label = how if how != "auto" else f"auto ({report['chosen']})"
                    for truth, vec in truths.items():
                        _count(hits, (truth, k, how), a.vector, a.std, vec)
                        if label != how:  # auto, by the candidate it chose
                            _count(hits, (truth, k, label), a.vector, a.std, vec)
        print(f"fold {f + 1}/{args.folds} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = [{"truth": truth, "k": k, "adaptation": how, "part": part, "nominal": lvl,
             "coverage": round(float(np.mean(v)), 4), "n": len(v)}
            for (truth, k, how, part, lvl), v in sorted(hits.items(), key=lambda kv: kv[0][:2])]
    secs = time.perf_counter() - t0
    cmd = ("`.venv/bin/python benchmarks/interval_coverage.py" + (f" --n-tasks {args.n_tasks}" if args.n_tasks != 300
                                                                    else "")
           + (f" --folds {args.folds}" if args.folds != 5 else "")
           + (f" --embedder {args.embedder}" if args.embedder != "minilm" else "")
           + (f" --k {' '.join(map(str, args.k))}" if args.k else "")
           + (f" --adaptations {' '.join(args.adaptations)}" if args.k and tuple(args.adaptations) != ADAPTATIONS
              else "") + "`")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "interval_coverage.json").write_text(json.dumps({"command": cmd, "seconds": round(secs, 1),
                                                                 "rows": rows}, indent=1) + "\n")
    lines = [f"Command: {cmd} ({len(fam)} tasks, {args.folds} leave-task-out folds, {secs:.0f} s)", "",
             "Coverage of the nominal 50%, 80% and 90% intervals"
             + (" (few-shot rows: against the true coefficients; the oracle's are in the JSON)" if args.k else "")
             + ":", "",
             "| truth | k | model | coefficients | intervals | 50% | 80% | 90% |",
             "|---|---:|---|---|---:|---:|---:|---:|"]
    table: dict = {}
    for r in rows:
        if r["k"] == 0 or r["truth"] == "true":
            table.setdefault((r["truth"], r["k"], r["adaptation"], r["part"]), {})[r["nominal"]] = r
    for (truth, k, how, part), by_level in table.items():
        n = next(iter(by_level.values()))["n"]
        cells = " | ".join(f"{by_level[lvl]['coverage']:.1%}" for lvl in LEVELS)
        lines.append(f"| {truth} | {k} | {how} | {part} | {n:,} | {cells} |")
    (args.out / "interval_coverage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
