"""How close each kind of SFT target is to the task's true coefficients (synthetic family).

An LM generator is fine-tuned to write each training task's parameters (``train_sft``'s
``targets``). This measures, on the training tasks of ``benchmarks/lm_training.py``'s split
(``synthetic_family(n_tasks, n_features=3, seed)``, ``--n-heldout`` tasks held out), the mean
squared distance over the parameters between each candidate target and the task's generating
coefficients (``true``) and their description-determined part (``oracle``):

* ``fit (all rows)``: the index's stored fit (``targets="fit"``);
* ``prior``: the statistical prior the prompt shows (the default generator fitted on the index,
  each task generated without itself);
* ``posterior (half rows, statistical prior)``: ``targets="posterior"`` with
  ``LMConfig(statistical_prior=True)`` (``heldout_fraction=0.5``);
* ``posterior (all rows, statistical prior)``: the same on every row (what posterior targets
  would be without keeping GRPO's reward rows out);
* ``posterior (half rows, population model)``: ``targets="posterior"`` without the statistical
  prior.

Run: .venv/bin/python benchmarks/sft_targets.py [--n-tasks 80 --n-heldout 20 --seed 0]
     [--json-out benchmarks/results/sft_targets.json]
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np


def main(argv=None) -> dict:
    from ragim import TaskIndex, datasets
    from ragim.generate.statistical import StatisticalGenerator
    from ragim.index import leak_free
    from ragim.train.sft import posterior_mode

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-tasks", type=int, default=80)
    ap.add_argument("--n-heldout", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    tasks = datasets.synthetic_family(n_tasks=args.n_tasks, n_features=3, seed=args.seed)
    held = set(np.random.default_rng(args.seed).permutation(len(tasks))[: args.n_heldout].tolist())
    train = tasks.take([i for i in range(len(tasks)) if i not in held])  # lm_training.py's split
    index = TaskIndex.build(train, embedder="hashing", progress=False)
    recs = [index.record(t) for t in index.ids]
    excludes = [leak_free(r) for r in recs]
    prior_gen = StatisticalGenerator().fit(index, progress=False)
    priors = prior_gen.generate_params([r["description"] for r in recs], index, exclude=excludes)
    errors: dict[str, list[tuple[float, float]]] = {}
    for tid, prior, ex in zip(index.ids, priors, excludes, strict=True):
        task = index.tasks[tid]
        half, _ = task.split(0.5, seed=args.seed)
        candidates = {
            "fit (all rows)": index.params(tid).vector,
            "prior": prior.vector,
            "posterior (half rows, statistical prior)": posterior_mode(prior, half.X, half.y).vector,
            "posterior (all rows, statistical prior)": posterior_mode(prior, task.X, task.y).vector,
            "posterior (half rows, population model)": posterior_mode(
                index.population_params(exclude=ex), half.X, half.y
            ).vector,
        }
        for name, v in candidates.items():
            errors.setdefault(name, []).append(
                (float(np.mean((v - task.true_params.vector) ** 2)),
                 float(np.mean((v - task.oracle_params.vector) ** 2)))
            )  # fmt: skip
    out = {
        "n_train_tasks": len(index),
        "mean_squared_error": {
            k: {"true": round(float(np.mean([e[0] for e in v])), 4),
                "oracle": round(float(np.mean([e[1] for e in v])), 4)}
            for k, v in errors.items()
        },  # fmt: skip
        "command": "benchmarks/sft_targets.py",
        "settings": vars(args),
    }
    print(f"| SFT target ({len(index)} training tasks) | MSE to the true coefficients | MSE to the oracle |")
    print("|---|---:|---:|")
    for k, v in out["mean_squared_error"].items():
        print(f"| {k} | {v['true']:.4f} | {v['oracle']:.4f} |")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
