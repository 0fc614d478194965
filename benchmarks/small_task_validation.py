"""Does validating the stack on the index's skipped tasks help? A design-family check.

The statistical generator's stack is validated on held-out index tasks. The tasks too small or
one-class to fit are not in the index, yet most new tasks of a procedure-like family are that
small. ``StatisticalConfig.validate_skipped`` holds them out too (``index.skipped_tasks``).
Here each design family (a seed of ``procedure_family(n_tasks=1000)`` or
``synthetic_family(n_tasks=300)`` that no benchmark uses, never seed 0) is split into
``--targets`` random targets and an index of the rest; the generator is fitted on the index
with the setting off and on, and both are scored zero-shot on each target's test half
(``ragim.tasks.support_test_split``). The choice was made on these families, never on the
benchmarks' targets.

Run: .venv/bin/python benchmarks/small_task_validation.py [--families procedure:7 procedure:8]
     [--targets 200] [--json-out benchmarks/results/small_task_validation.json]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from design_validation import family


def compare(spec: str, n_targets: int, seed: int = 5) -> dict:
    """Per-target held-out log-loss and AUROC with ``validate_skipped`` off and on."""
    from ragim import TaskIndex
    from ragim.evaluate import params_proba
    from ragim.generate.statistical import StatisticalGenerator
    from ragim.metrics import auroc, clipped_log_loss
    from ragim.tasks import support_test_split

    tasks = family(spec)
    rng = np.random.default_rng(seed)
    targets = np.sort(rng.choice(len(tasks), n_targets, replace=False))
    rest = np.setdiff1d(np.arange(len(tasks)), targets)
    index = TaskIndex.build(tasks.take(rest), embedder="minilm", keep_tasks=True, progress=False)
    gens, stacks = {}, {}
    for on in (False, True):
        gens[on] = StatisticalGenerator(validate_skipped=on).fit(index, progress=False)
        stacks[str(on).lower()] = gens[on].stack_
    rows = []
    for i in targets:
        task = tasks[int(i)]
        y = task.y.astype(float)
        _, test = support_test_split(y, int(i))
        row = {"task_id": task.task_id, "n_rows": len(y)}
        for on, gen in gens.items():
            p = params_proba(gen.generate_params(task.description, index), task.X.iloc[test])
            row[f"log_loss_{str(on).lower()}"] = float(clipped_log_loss(y[test], p))
            both = 0 < y[test].sum() < len(test)
            row[f"auroc_{str(on).lower()}"] = float(auroc(y[test], p)) if both else None
        rows.append(row)
    out = {"family": spec, "n_indexed": len(index), "n_skipped": len(index.skipped),
           "n_skipped_validated": gens[True].cv_["n_skipped_tasks"], "stacks": stacks}
    for metric in ("log_loss", "auroc"):
        d = np.array([r[f"{metric}_true"] - r[f"{metric}_false"] for r in rows
                      if r[f"{metric}_true"] is not None])
        boot = [rng.choice(d, len(d)).mean() for _ in range(2000)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out[metric] = {"off": float(np.mean([r[f"{metric}_false"] for r in rows if r[f"{metric}_false"] is not None])),
                       "on": float(np.mean([r[f"{metric}_true"] for r in rows if r[f"{metric}_true"] is not None])),
                       "difference": float(d.mean()), "ci": [float(lo), float(hi)], "targets": len(d)}
    out["rows"] = rows
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", nargs="+", default=["procedure:7", "procedure:8"])
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    result = {"targets": args.targets, "families": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the families' small tasks left out of the index
        for spec in args.families:
            t0 = time.perf_counter()
            r = result["families"][spec] = compare(spec, args.targets)
            r["seconds"] = round(time.perf_counter() - t0, 1)
            for m in ("log_loss", "auroc"):
                s = r[m]
                print(f"{spec:14s} {m:8s} off {s['off']:.4f} on {s['on']:.4f} difference "
                      f"{s['difference']:+.4f} [{s['ci'][0]:+.4f}, {s['ci'][1]:+.4f}] "
                      f"({s['targets']} targets; {r['n_skipped_validated']} skipped tasks "
                      f"validated, {r['n_indexed']} indexed)", flush=True)
    if args.json_out is not None:
        from ragim.io import json_bytes, write_file

        write_file(args.json_out, json_bytes(result))  # atomic
    return result


if __name__ == "__main__":
    main()
