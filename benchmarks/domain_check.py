"""Out-of-domain warnings on every benchmark index: do they fire for other specialties, and
stay quiet for the index's own (leave-one-out) targets?

For each benchmark's task collection an index is built with the default embedder (the bundled
MiniLM), its domain threshold is calibrated on itself (:func:`ragim.domain.calibrate`), and
:func:`ragim.domain.coverage` is computed for

* every indexed task as a leave-one-out target (tasks sharing its patients excluded, as in
  evaluation): the number flagged must stay at or below the calibrated rate (the threshold is
  at least the 1st percentile of those tasks' neighbour similarities; a robust fence or the
  embedder's floor may raise it, and then the tasks it sets aside, ``DomainCalibration.n_below``,
  are allowed too);
* descriptions from specialties the index does not hold (a list per benchmark plus a
  non-clinical one): each should be flagged.

Run: .venv/bin/python benchmarks/domain_check.py [--only heart colon synthetic procedure]
Writes benchmarks/results/domain_check.json, which benchmarks/report.py puts in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_CLINICAL = "Predict whether a mobile phone customer cancels the contract within a month"
#: per benchmark: descriptions of specialties its tasks do not cover
FOREIGN = {
    "heart": [
        "Predict 30-day readmission after hip replacement in elderly men",
        "Predict delirium after cardiac surgery",
        "Predict sepsis mortality in the intensive care unit",
        "Predict relapse of acute lymphoblastic leukaemia in children",
        "Predict preterm birth in pregnant women",
        "Vorhersage der Sterblichkeit nach Herzinfarkt bei Frauen",
    ],
    "colon": [
        "Predict angiographic coronary artery disease in adults referred for angiography",
        "Predict 30-day readmission after hip replacement in elderly men",
        "Predict preterm birth in pregnant women",
        "Predict asthma exacerbation in children within one year",
        "Predict delirium in older adults admitted to a medical ward",
    ],
    "synthetic": [  # the synthetic family spans twelve organ systems; these lie outside them
        "Predict preterm birth in pregnant women",
        "Predict dental caries in schoolchildren within two years",
        "Predict relapse of major depression within a year of discharge from a psychiatric ward",
        "Predict glaucoma progression in patients of an eye clinic",
    ],
    "procedure": [  # procedure codes and their 30-day complications
        "Predict angiographic coronary artery disease in adults referred for angiography",
        "Predict relapse of major depression within a year of discharge from a psychiatric ward",
        "Predict asthma exacerbation in children within one year",
        "Predict dental caries in schoolchildren within two years",
    ],
}


def collections() -> dict:
    from ragim import datasets

    return {
        "heart": lambda: datasets.heart_disease(),
        "colon": lambda: datasets.colon_cancer(),
        "synthetic": lambda: datasets.synthetic_family(n_tasks=300, seed=0),
        "procedure": lambda: datasets.procedure_family(n_tasks=500, seed=0),
    }


def check_benchmark(name: str, tasks, embedder: str | None) -> dict:
    from ragim import TaskIndex
    from ragim.domain import calibrate, coverage
    from ragim.index import leak_free

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = TaskIndex.build(tasks, embedder=embedder, progress=False, keep_tasks=False)
    cal = calibrate(index)
    ids = index.ids
    loo = coverage(index, [index.record(t)["description"] for t in ids],
                   exclude=[leak_free(index.record(t)) for t in ids])
    flagged = [t for t, c in zip(ids, loo, strict=True) if c.in_domain is False]
    queries = [*FOREIGN[name], NOT_CLINICAL]
    foreign = coverage(index, queries)
    return {
        "n_tasks": len(ids),
        "embedder": index.embedder.name,
        "threshold": cal.threshold,
        "typical": cal.typical,
        "percentile": cal.percentile,
        "quantile": cal.quantile,
        "robust_bound": cal.robust_bound,
        "floor": cal.floor,
        "loo_flagged": len(flagged),
        "loo_allowed": max(math.floor(len(ids) * cal.percentile / 100), cal.n_below),
        "loo_min_top_similarity": min(c.top_similarity for c in loo),
        "foreign": [{"description": q, "top_similarity": c.top_similarity, "flagged": c.in_domain is False}
                    for q, c in zip(queries, foreign, strict=True)],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    makers = collections()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(makers), default=list(makers))
    ap.add_argument("--embedder", default=None, help="default: the bundled MiniLM")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "domain_check.json")
    args = ap.parse_args()
    res = json.loads(args.out.read_text()) if args.out.is_file() else {}
    res["command"] = "benchmarks/domain_check.py"
    for name in args.only:
        r = check_benchmark(name, makers[name](), args.embedder)
        res.setdefault("benchmarks", {})[name] = r
        print(json.dumps({name: {k: v for k, v in r.items() if k != "foreign"},
                          "foreign_flagged": [f["flagged"] for f in r["foreign"]]}), flush=True)
        args.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
