"""Label efficiency: what ragim's zero-shot model is worth in labelled rows, and how few-shot
adaptation compares with a per-task fit and with MAP under the generated prior.

For each benchmark, every target's rows are split (stratified) into a support pool and test
rows (:func:`ragim.evaluate.support_test_split`); at each k, ``--draws`` random draws of k
rows from the pool (:func:`ragim.evaluate.draw_order`, both classes in every draw) are given
to three methods, scored on the same test rows:

* ``ragim-statistical``: the StatisticalGenerator's model, zero-shot at k = 0 and adapted by
  :class:`ragim.ZeroShotClassifier`'s default adaptation at k > 0;
* ``per-task-k``: a logistic regression (C = 1) on the k rows alone;
* ``map-prior``: MAP logistic regression whose Gaussian prior is the generated model's mean
  and SD (the elicited-prior method of AutoElicit, ICML 2025).

Only targets whose support pool holds at least k rows count at k. The table reports, per k,
means over targets (each target's draws averaged first), the worst draw, the share of draws
that lose more than 0.05 AUROC against zero-shot, and whether the issue's targets hold; the
headline is "zero-shot is worth N labelled rows": the k at which the per-task fit's mean
log-loss reaches the zero-shot model's on the same targets (interpolated in log k).

Run: .venv/bin/python benchmarks/label_efficiency.py
         [--only heart-task heart-site synthetic procedure colon-task] [--draws 20] [--max-targets N]
         [--k-shots 4 8 16 32 64 128 256] [--embedder hashing] [--suffix _reduced] [--out DIR]
         [--data-seed 1] [--random-draws]

Writes benchmarks/results/label_efficiency_<name><suffix>.csv (one row per target, method,
k and draw), .json (the per-k summary and headline) and .md (the summary), which benchmarks/report.py puts in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
K_SHOTS = [4, 8, 16, 32, 64, 128, 256]
METHODS = ["ragim-statistical", "per-task-k", "map-prior"]
ADAPTED, LR, MAP = METHODS
COLUMNS = [
    "task_id",
    "method",
    "k_shot",
    "draw",
    "auroc",
    "log_loss",
    "n_support",
    "n_test",
    "status",
]
#: the issue's targets
MAX_LOSE_SHARE, LOSE_AUROC, K256_AUROC = 0.05, 0.05, 0.01

CONFIGS = {
    "heart-task": dict(dataset="heart-disease", protocol="leave-task-out", folds=5),
    "heart-site": dict(dataset="heart-disease", protocol="leave-group-out", group="site"),
    "synthetic": dict(
        dataset="synthetic", protocol="leave-task-out", folds=5, n_tasks=300, n_features=10
    ),
    # every task whose pool can hold 256 rows, plus a seeded sample of the others
    "procedure": dict(
        dataset="procedure",
        protocol="leave-task-out",
        folds=5,
        n_tasks=1000,
        max_targets=200,
        min_rows=16,
    ),
    "colon-task": dict(dataset="colon-cancer", protocol="leave-task-out", folds=30),
}
TITLES = {
    "heart-task": "Real heart disease, leave-task-out",
    "heart-site": "Real heart disease, leave-site-out",
    "synthetic": "`synthetic_family(n_tasks=300, n_features=10)`, leave-task-out",
    "procedure": "`procedure_family(n_tasks=1000)`, leave-task-out",
    "colon-task": "Real colon-cancer trial, leave-one-task-out",
}


def load_tasks(dataset: str, n_tasks: int | None, n_features: int = 10, seed: int = 0):
    """The benchmark's tasks; ``seed`` draws another family of the same design (synthetic and
    procedure only), for choosing a design on other tasks than the evaluation's."""
    from ragim import datasets

    if seed and dataset not in ("synthetic", "procedure"):
        raise SystemExit(f"--data-seed applies to the synthetic and procedure benchmarks, not {dataset}")

    if dataset == "heart-disease":
        return datasets.heart_disease()
    if dataset == "colon-cancer":
        return datasets.colon_cancer()
    if dataset == "synthetic":
        return datasets.synthetic_family(n_tasks=n_tasks, n_features=n_features, seed=seed)
    return datasets.procedure_family(n_tasks=n_tasks, seed=seed)


def choose_targets(
    tasks, max_targets: int | None, min_rows: int, k_max: int, seed: int = 0
) -> list[str] | None:
    """Every task that can reach ``k_max`` rows in its pool, plus a seeded sample of the tasks
    with at least ``min_rows`` rows, ``max_targets`` in all (None: every task)."""
    if max_targets is None and not min_rows:
        return None
    sizes = {t.task_id: t.n_rows for t in tasks}
    big = [tid for tid, n in sizes.items() if n // 2 >= k_max]
    rest = [tid for tid, n in sizes.items() if n >= min_rows and tid not in big]
    n_rest = len(rest) if max_targets is None else max(0, max_targets - len(big))
    rng = np.random.default_rng(seed)
    pick = (
        sorted(rng.choice(len(rest), min(n_rest, len(rest)), replace=False).tolist())
        if rest
        else []
    )
    return big + [rest[i] for i in pick]


def worth_rows(curve: pd.DataFrame) -> tuple[float | None, str]:
    """The k where the per-task fit's mean log-loss reaches zero-shot's (log-k interpolation).

    ``curve`` has columns k, zero (zero-shot log-loss) and lr (per-task fit), on the same
    targets at each k. Returns (N or None, text)."""
    c = curve.dropna(subset=["zero", "lr"]).sort_values("k")
    if c.empty:
        return None, "n/a"
    gap = (c["lr"] - c["zero"]).to_numpy()
    ks = c["k"].to_numpy(dtype=float)
    if gap[0] <= 0:
        return float(ks[0]), f"at most {int(ks[0])}"
    for i in range(1, len(ks)):
        if gap[i] <= 0:
            a, b = math.log(ks[i - 1]), math.log(ks[i])
            t = gap[i - 1] / (gap[i - 1] - gap[i])
            n = math.exp(a + t * (b - a))
            return n, f"about {n:.0f}"
    return None, f"more than {int(ks[-1])}"


def summarise(df: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per-k summary (means over targets, worst draws, target checks) and the headline."""
    ok = df[df["status"] == "ok"]
    zero = ok[(ok["method"] == ADAPTED) & (ok["k_shot"] == 0)].set_index("task_id")[
        ["log_loss", "auroc"]
    ]
    few = ok[ok["k_shot"] > 0]
    few = few[few["n_support"] == few["k_shot"]]  # only targets whose pool holds k rows
    rows = []
    for k, grp in few.groupby("k_shot"):
        per_target = grp.groupby(["method", "task_id"])[["log_loss", "auroc"]].mean()
        targets = sorted(set(grp.loc[grp["method"] == ADAPTED, "task_id"]) & set(zero.index))
        if not targets:
            continue
        row = {
            "k": int(k),
            "targets": len(targets),
            "zero_ll": zero.loc[targets, "log_loss"].mean(),
            "zero_auroc": zero.loc[targets, "auroc"].mean(),
        }
        for m, short in ((ADAPTED, "adapted"), (LR, "lr"), (MAP, "map")):
            if m in per_target.index.get_level_values(0):
                pt = per_target.loc[m].reindex(targets)
                row[f"{short}_ll"], row[f"{short}_auroc"] = (
                    pt["log_loss"].mean(),
                    pt["auroc"].mean(),
                )
        a = grp[(grp["method"] == ADAPTED) & grp["task_id"].isin(targets)]
        d_ll = a["log_loss"].to_numpy() - zero.loc[a["task_id"], "log_loss"].to_numpy()
        d_au = a["auroc"].to_numpy() - zero.loc[a["task_id"], "auroc"].to_numpy()
        row.update(
            draws=len(a),
            worst_d_ll=float(np.nanmax(d_ll)),
            worst_d_auroc=float(np.nanmin(d_au)),
            lose_share=float(np.mean(d_au < -LOSE_AUROC)),
        )
        rows.append(row)
    s = pd.DataFrame(rows)
    head = {
        "zero_ll": float(zero["log_loss"].mean()),
        "zero_auroc": float(zero["auroc"].mean()),
        "n_targets": int(len(zero)),
    }
    if not s.empty:
        head["worth"], head["worth_text"] = worth_rows(
            s.rename(columns={"zero_ll": "zero", "lr_ll": "lr"})
        )
        head["ll_ok"] = bool((s["adapted_ll"] <= s["zero_ll"] + 1e-12).all())
        head["lose_ok"] = bool((s["lose_share"] <= MAX_LOSE_SHARE).all())
        big = s[s["k"] == 256]
        head["k256"] = (
            None if big.empty else float(big["adapted_auroc"].iloc[0] - big["lr_auroc"].iloc[0])
        )
    return s, head


def _f(x, spec=".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def markdown(name: str, s: pd.DataFrame, head: dict, header: str, command: str) -> str:
    lines = [f"# {header}", "", f"Command: `{command}`", ""]
    if s.empty:
        return "\n".join([*lines, "No target had labelled rows to draw from.", ""])
    lines += [
        f"**Zero-shot is worth {head['worth_text']} labelled rows** to a per-task logistic regression "
        f"(zero-shot log-loss {head['zero_ll']:.3f}, AUROC {head['zero_auroc']:.3f} over "
        f"{head['n_targets']} targets; the per-task fit's mean log-loss reaches zero-shot's, on the targets "
        "whose support pool holds k rows, interpolated in log k).",
        "",
        "| k | targets | draws | log-loss: zero-shot | adapted | per-task LR | MAP-prior | "
        "AUROC: zero-shot | adapted | per-task LR | MAP-prior | worst draw Δlog-loss | worst draw ΔAUROC | "
        "draws losing > 0.05 AUROC |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in s.itertuples():
        lines.append(
            f"| {r.k} | {r.targets} | {r.draws} | {_f(r.zero_ll)} | {_f(r.adapted_ll)} | {_f(r.lr_ll)} | "
            f"{_f(getattr(r, 'map_ll', None))} | {_f(r.zero_auroc)} | {_f(r.adapted_auroc)} | "
            f"{_f(r.lr_auroc)} | {_f(getattr(r, 'map_auroc', None))} | {r.worst_d_ll:+.3f} | "
            f"{r.worst_d_auroc:+.3f} | {r.lose_share:.1%} |"
        )
    k256 = (
        "no target's support pool holds 256 rows"
        if head["k256"] is None
        else f"adapted − per-task LR AUROC at k = 256: {head['k256']:+.3f} "
        f"({'met' if head['k256'] >= -K256_AUROC else 'NOT met'})"
    )
    lines += [
        "",
        "Means are over targets (each target's draws averaged first); Δ = adapted − zero-shot on the same "
        "draw and test rows (worst: the largest log-loss increase, the largest AUROC drop over every draw of "
        "every target).",
        "",
        f"Targets: adapted mean log-loss ≤ zero-shot at every k: {'met' if head['ll_ok'] else 'NOT met'}; "
        f"at most 5% of draws lose more than 0.05 AUROC at every k: {'met' if head['lose_ok'] else 'NOT met'}; "
        f"{k256}.",
        "",
    ]
    return "\n".join(lines)


def run(name: str, args) -> tuple[pd.DataFrame, str]:
    from ragim import evaluate as ev

    cfg = dict(CONFIGS[name])
    tasks = load_tasks(
        cfg.pop("dataset"), cfg.pop("n_tasks", None), cfg.pop("n_features", 10), args.data_seed
    )
    min_rows = cfg.pop("min_rows", 0)
    max_targets = args.max_targets if args.max_targets is not None else cfg.pop("max_targets", None)
    cfg.pop("max_targets", None)
    targets = choose_targets(tasks, max_targets, min_rows, max(args.k_shots))
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tasks left out of a fold's index are listed in its notes
        df = ev.few_shot(
            tasks,
            k_shots=tuple(args.k_shots),
            methods=METHODS,
            draws=args.draws,
            targets=targets,
            embedder=args.embedder,
            progress=not args.quiet,
            k_within_pool=True,  # a k the pool cannot hold is not scored (it would not count)
            random_draws=args.random_draws,
            **cfg,
        )
    secs = time.perf_counter() - t
    notes = list(df.attrs.get("notes", []))
    df = df[[c for c in COLUMNS if c in df.columns]]
    opts = ""
    if args.draws != 20:
        opts += f" --draws {args.draws}"
    if args.max_targets is not None:
        opts += f" --max-targets {args.max_targets}"
    if args.k_shots != K_SHOTS:
        opts += " --k-shots " + " ".join(map(str, args.k_shots))
    if args.embedder:
        opts += f" --embedder {args.embedder}"
    if args.data_seed:
        opts += f" --data-seed {args.data_seed}"
    if args.random_draws:
        opts += " --random-draws"
    if args.suffix:
        opts += f" --suffix {args.suffix}"
    command = f".venv/bin/python benchmarks/label_efficiency.py --only {name}{opts}"
    s, head = summarise(df)
    policy = policy_line(notes)
    header = (
        f"{TITLES.get(name, name)}: {df['task_id'].nunique()} targets, {args.draws} draws per k, {secs:.0f} s"
        + (f", embedder {args.embedder}" if args.embedder else "")
    )
    md = markdown(name, s, head, header, command)
    return df, md + (f"\n{policy}\n" if policy else "")


def policy_line(notes: list[str]) -> str:
    """What the adaptation policy validated in each fold's index chose, per k, from the
    evaluation's notes ("... adaptation policy: 4=zero-shot 8=intercept ...")."""
    counts: dict[int, dict[str, int]] = {}
    folds = 0
    for n in notes:
        if not n.startswith("ragim-statistical fold") or "adaptation policy: " not in n:
            continue
        folds += 1
        for item in n.split("adaptation policy: ", 1)[1].split():
            if "=" in item:
                k, option = item.split("=", 1)
                counts.setdefault(int(k), {}).setdefault(option, 0)
                counts[int(k)][option] += 1
    if not folds:
        return ""
    parts = [
        f"k = {k}: " + ", ".join(f"{o} {c}" for o, c in sorted(v.items(), key=lambda x: -x[1]))
        for k, v in sorted(counts.items())
    ]
    return (
        f"Adaptation policy validated in each of the {folds} folds' index (option: folds; "
        "`ragim.adaptation_policy`; a k beyond the largest validated one follows the "
        "evidence alone): " + ("; ".join(parts) if parts else "nothing validated") + "."
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument(
        "--draws", type=int, default=20, help="random draws of the k rows per target and k"
    )
    ap.add_argument(
        "--max-targets", type=int, default=None, help="score at most this many (seeded) targets"
    )
    ap.add_argument("--k-shots", type=int, nargs="+", default=K_SHOTS)
    ap.add_argument(
        "--embedder", default=None, help="description embedder (default: MiniLM; 'hashing' is fast)"
    )
    ap.add_argument(
        "--suffix", default="", help="appended to the result file names (e.g. _reduced)"
    )
    ap.add_argument(
        "--data-seed",
        type=int,
        default=0,
        help="another family of the same design (synthetic, procedure): a development set for "
        "design choices, never the evaluation's tasks (seed 0)",
    )
    ap.add_argument(
        "--random-draws",
        action="store_true",
        help="each draw a simple random sample of the pool (a small draw may hold one class); "
        "default: every draw starts with one row of each class",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if args.draws < 1 or any(k < 1 for k in args.k_shots):
        ap.error("--draws and --k-shots must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import torch

        torch.set_num_threads(1)  # small models: one thread is fastest on a shared 2-core machine
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    for name in args.only:
        df, md = run(name, args)
        df.to_csv(
            args.out / f"label_efficiency_{name}{args.suffix}.csv", index=False, float_format="%.5g"
        )
        (args.out / f"label_efficiency_{name}{args.suffix}.md").write_text(md)
        write_summary(df, args.out / f"label_efficiency_{name}{args.suffix}.json", name)
        print(md, flush=True)


def write_summary(df: pd.DataFrame, path: Path, name: str) -> dict:
    """The per-k summary and the headline of :func:`summarise` as JSON (``path``)."""
    s, head = summarise(df)
    out = {
        "benchmark": name,
        "headline": head,
        "per_k": s.to_dict("records"),
        "n_targets": int(df["task_id"].nunique()),
        "draws": int(df["draw"].max() + 1),
    }
    path.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return out


if __name__ == "__main__":
    main()
