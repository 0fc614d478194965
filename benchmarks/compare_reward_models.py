"""Compare two reward models scored on the same held-out preference pairs by
``benchmarks/lm_training.py`` (its ``--json-out``, which keeps every held-out pair's two scores):
the difference in pairwise accuracy with a bootstrap 95% CI over tasks (a task's pairs share
its prompt, so they are resampled together), and the paired difference in held-out log-loss of
best-of-n with each, over the held-out tasks.

    python benchmarks/compare_reward_models.py \\
        benchmarks/results/lm_training_smollm2_residual_synthetic_rm_change.json \\
        benchmarks/results/lm_training_smollm2_residual_synthetic_rm.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def pair_outcomes(run: dict) -> tuple[list[str], np.ndarray]:
    """Each held-out pair's task and whether the reward model ranked it right (ties: 0.5)."""
    pairs = run["rm_heldout_pair_scores"]
    right = [(p["chosen_score"] > p["rejected_score"]) + 0.5 * (p["chosen_score"] == p["rejected_score"])
             for p in pairs]
    return [p["task_id"] for p in pairs], np.asarray(right, dtype=float)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", help="lm_training JSON of the first reward model")
    ap.add_argument("second", help="lm_training JSON of the second, on the same pairs and tasks")
    ap.add_argument("--boot", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    a, b = (json.load(open(p)) for p in (args.first, args.second))
    (ta, xa), (tb, xb) = pair_outcomes(a), pair_outcomes(b)
    if ta != tb or not ta:
        raise SystemExit("the two runs did not score the same held-out pairs; compare runs of one SFT stage")
    rng = np.random.default_rng(args.seed)
    ids = sorted(set(ta))
    rows = [np.flatnonzero(np.asarray(ta) == i) for i in ids]
    diff = xa - xb
    boot = [diff[np.concatenate([rows[i] for i in rng.choice(len(ids), len(ids))])].mean()
            for _ in range(args.boot)]
    out = {"n_pairs": len(ta), "n_tasks": len(ids), "accuracy_first": xa.mean(), "accuracy_second": xb.mean(),
           "accuracy_difference": diff.mean(), "accuracy_difference_ci": np.percentile(boot, [2.5, 97.5]).tolist()}
    best = [m for m in a["per_task"] if m.startswith("SFT + best-of-") and m in b["per_task"]]
    for m in best:
        d = np.array([p["log_loss"] - q["log_loss"] for p, q in zip(a["per_task"][m], b["per_task"][m], strict=True)])
        ci = np.percentile([rng.choice(d, len(d)).mean() for _ in range(args.boot)], [2.5, 97.5]).tolist()
        out[m] = {"log_loss_difference": d.mean(), "ci": ci, "first_lower": int((d < 0).sum()), "n_tasks": len(d)}
    print(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
