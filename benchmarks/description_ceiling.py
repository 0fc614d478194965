"""How much of the gap to the oracle the description's wording costs, measured inside the index.

On ``synthetic_family(n_tasks=300, n_features=10, seed=0)`` the StatisticalGenerator is fitted
twice on indexes of the same tasks and validated the same way (leave-task-out inside the index, its
``cv_`` table: mean held-out log-loss per candidate):

* ``descriptions``: the tasks' own free-text descriptions (what a user has);
* ``true path``: each description replaced by one token per node of the task's true path
  (system, system/disease, system/disease/subtype, and so on), so the text candidates see the
  hierarchy exactly, with unigrams (``ngram_max=1``).

* ``fields, unnested``: one token per level's own value (the system, the disease, the subtype
  and the population each on its own, not as the node of a path);
* ``system and disease``: the true path's first two tokens only.

The difference between the first two rows is what recovering the structure from the wording could
gain at most through these candidates; the last two say where that gain lies (a subtype's or a
population's effect is specific to its disease, so their words alone carry no effect of their
own); the distance from the ``true path`` row to the oracle
(the noise-free truth, ``--oracle``) is what it cannot: per-task fit noise and path nodes that
no indexed task holds (300 tasks over 12 x 8 x 4 x 12 = 4,608 leaves). Uses the synthetic
family's metadata (``system``, ``disease``, ``subtype``, ``population``) only to build the
tokens; nothing here is an evaluation target's label.

Run: .venv/bin/python benchmarks/description_ceiling.py [--embedder hashing] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace

import numpy as np

LEVELS = ("system", "disease", "subtype", "population")


def level_names(task) -> list[str]:
    """The task's value at each level of :data:`LEVELS`, as one alphanumeric word each."""
    return ["".join(ch for ch in task.metadata[lv] if ch.isalnum()) for lv in LEVELS]


def path_tokens(task) -> str:
    """One token per node of the task's true path (a node is its whole path prefix)."""
    names = level_names(task)
    return " ".join(f"L{i}x" + "_".join(names[: i + 1]) for i in range(len(LEVELS)))


def field_tokens(task) -> str:
    """One token per level's own value (the disease as a node of its system, which names it)."""
    names = level_names(task)
    return f"Sx{names[0]} Dx{names[0]}_{names[1]} Tx{names[2]} Px{names[3]}"


def oracle_log_loss(tasks) -> float:
    """Mean per-task log-loss of the oracle (true coefficients without the task's own noise)
    on each task's own rows: the scale the validation numbers are compared with."""
    from scipy.special import expit

    from ragim.metrics import clipped_log_loss

    return float(
        np.mean([clipped_log_loss(t.y, expit(t.oracle_params.log_odds(t.X))) for t in tasks])
    )


def main() -> None:
    from ragim import TaskCollection, TaskIndex, datasets
    from ragim.generate.statistical import StatisticalGenerator

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    tasks = list(datasets.synthetic_family(n_tasks=300, n_features=10, seed=0))
    variants = (
        ("descriptions", tasks, 2),
        ("true path", [replace(t, description=path_tokens(t)) for t in tasks], 1),
        ("fields, unnested", [replace(t, description=field_tokens(t)) for t in tasks], 1),
        (
            "system and disease",
            [replace(t, description=" ".join(path_tokens(t).split()[:2])) for t in tasks],
            1,
        ),
    )
    rows = {}
    for name, family, ngram_max in variants:
        index = TaskIndex.build(TaskCollection(family), embedder=args.embedder, progress=False)
        t0 = time.perf_counter()
        gen = StatisticalGenerator(ngram_max=ngram_max).fit(index, progress=False)
        rows[name] = {**gen.cv_["candidates"], "stack": gen.cv_["stack"]}
        rows[name]["seconds"] = round(time.perf_counter() - t0, 1)
    res = {
        "held_out_log_loss": rows,
        "oracle_in_sample_log_loss": round(oracle_log_loss(tasks), 4),
        "embedder": args.embedder,
        "command": "benchmarks/description_ceiling.py",
    }
    cols = ["pooled", "text", "text-glmm", "neighbors", "neighbor-mean", "stack"]
    print("| descriptions as | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + " |")
    print(f"oracle (all rows of every task): {res['oracle_in_sample_log_loss']:.4f}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
