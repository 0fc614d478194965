"""The default generator against the published peers, zero-shot: ``rag-im-2024`` (the original
RAG-IM hypernetwork, trained on each fold's index) and ``contextualized`` (contextualized-ml's
ContextualizedClassifier, the description embedding as context), with ``pooled`` and
``neighbor-mean`` for reference.

The same folds, targets and test rows as benchmarks/evaluate_all.py (its CONFIGS, seed 0,
MiniLM unless --embedder); the peers use the settings ragim.evaluate gives them
(``RagIm2024Config`` defaults, ``CONTEXTUALIZED_FIT``). The shared methods' per-target scores
are compared with benchmarks/results/eval_<name>.csv to show that the rows are the same.
Paired differences ragim-statistical minus each other method over the same targets use
:func:`ragim.metrics.paired_differences` (percentile bootstrap over targets).

Run: .venv/bin/python benchmarks/peers.py [--only synthetic procedure] [--embedder hashing]
         [--main-folds F ...] [--max-targets N]

``--main-folds F ...`` scores only the targets of those folds of the main evaluation (the
``fold`` column of eval_<name>.csv), each against that fold's own index: the fold's targets
are held out together as a group (metadata key ``main_fold``), which leaves the same index as
the main evaluation's leave-task-out fold, so the scores of the shared methods must equal
eval_<name>.csv's (the output checks it). ``--max-targets N`` instead scores a seeded subset
of N of the main evaluation's targets with new folds over that subset (other indexes).
Writes benchmarks/results/peers_<name>.json, .md and .csv (per-target rows), which
benchmarks/report.py puts in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_all import CONFIGS, ROOT, load_benchmark  # noqa: E402

OURS = "ragim-statistical"
PEERS = ["rag-im-2024", "contextualized"]
METHODS = [OURS, "pooled", "neighbor-mean", *PEERS]
RESULTS = ROOT / "benchmarks" / "results"
FOLD_KEY = "main_fold"  # metadata key holding a target's fold of the main evaluation


@contextlib.contextmanager
def timed_methods(names):
    """Time the registered evaluation methods ``names`` while the block runs.

    Yields ``{"seconds": {name: {"setup": s, "predict": s}}, "training": {name: [...]}}``:
    wall seconds summed over folds (setup) and targets (predict), and per fold the training
    curve of a method whose setup caches, under its own name, a generator with a
    ``history_`` (``{"fold", "steps", "first_loss", "last_loss"}``: the mean loss of the
    first and last logged steps). The registry's entries are restored on exit.
    """
    from ragim import evaluate as ev

    log = {"seconds": {n: {"setup": 0.0, "predict": 0.0} for n in names},
           "training": {n: [] for n in names}}
    saved = {n: ev.METHODS[n] for n in names}

    def wrap(fn, name, part):
        if fn is None:
            return None

        def run(ctx):
            t = time.perf_counter()
            try:
                return fn(ctx)
            finally:
                log["seconds"][name][part] += time.perf_counter() - t
                trained = ctx.cache.get(name) if part == "setup" else None
                if getattr(trained, "history_", None):
                    h = trained.history_
                    log["training"][name].append(
                        {"fold": ctx.fold, "steps": h[-1]["step"],
                         "first_loss": h[0]["loss"], "last_loss": h[-1]["loss"]})

        return run

    try:
        for n, m in saved.items():
            ev.register_method(n, wrap(m.predict, n, "predict"), shots=m.shots,
                               setup=wrap(m.setup, n, "setup"), default=m.default)
        yield log
    finally:
        ev.METHODS.update(saved)


def with_main_folds(tasks, fold_of: dict):
    """``tasks`` where each task in ``fold_of`` (task id -> fold of the main evaluation) carries
    its fold in ``metadata["main_fold"]``; the other tasks are unchanged. Holding one such fold
    out as a group removes exactly the tasks that fold of the leave-task-out evaluation removed.
    """
    from ragim import TaskCollection

    out = [dataclasses.replace(t, metadata={**t.metadata, FOLD_KEY: int(fold_of[t.task_id])})
           if t.task_id in fold_of else t for t in tasks]
    return TaskCollection(out, schema=tasks.schema, name=tasks.name)


def agreement(df: pd.DataFrame, main: pd.DataFrame, methods, metrics=("log_loss", "auroc")):
    """How far this run's zero-shot per-target scores are from the main evaluation's.

    One record per method of ``methods`` found in both frames: ``n_common`` targets scored by
    both (k_shot 0) and, per metric, the largest absolute difference over them (NaN where both
    are NaN counts as equal; NaN on one side only as infinite). ``n_common`` 0 gives None.
    """
    out = []
    for m in methods:
        a = df[(df["method"] == m) & (df["k_shot"] == 0)].set_index("task_id")
        b = main[(main["method"] == m) & (main["k_shot"] == 0)].set_index("task_id")
        common = a.index.intersection(b.index)
        rec = {"method": m, "n_common": int(len(common))}
        for metric in metrics:
            x = a.loc[common, metric].to_numpy(float)
            y = b.loc[common, metric].to_numpy(float)
            d = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
            d = np.where(np.isnan(d), np.inf, d)
            rec[f"max_abs_diff_{metric}"] = float(d.max()) if len(d) else None
        out.append(rec)
    return out


def failures(df: pd.DataFrame, methods, n_targets: int):
    """Per method: targets with a row, targets failed (status not "ok", first reason) and
    targets with no row at all (a method that returned nothing, e.g. not installed)."""
    out = []
    for m in methods:
        rows = df[df["method"] == m]
        bad = rows[rows["status"] != "ok"]
        out.append({"method": m, "n_rows": int(rows["task_id"].nunique()),
                    "n_failed": int(bad["task_id"].nunique()),
                    "first_failure": None if bad.empty else f"{bad['task_id'].iloc[0]}: "
                                                            f"{bad['status'].iloc[0]}",
                    "n_missing": int(n_targets - rows["task_id"].nunique())})
    return out


def verdict(differences: list[dict], peer: str) -> str:
    """'met', 'not significant' or 'missed': ragim-statistical's log-loss against ``peer``
    (met: the paired difference's 95% CI lies below 0)."""
    d = next(r for r in differences if r["baseline"] == peer and r["metric"] == "log_loss")
    if d["mean_diff"] is None:
        return "not measured"
    if d["ci_high"] < 0:
        return "met"
    return "not significant" if d["mean_diff"] < 0 else "missed"


def _fmt_diff(r: dict) -> str:
    if r["mean_diff"] is None:
        return "n/a"
    return f"{r['mean_diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"


def markdown(res: dict) -> str:
    lines = [
        f"# {res['name']}: ragim-statistical against the peers, zero-shot "
        f"({res['n_targets']} targets, {res['seconds']:.0f} s)",
        "",
        f"Command: `{res['command']}` (per-target rows: `benchmarks/results/peers_{res['name']}.csv`)",
        "",
        f"Targets: {res['targets_note']}",
        "",
        "```",
        res["table"],
        "```",
        "",
        "Paired differences ragim-statistical − method over the same targets (95% percentile "
        "bootstrap CI over targets; log-loss below 0 and AUROC above 0 favour ragim-statistical; "
        "wins/losses: targets where ragim-statistical is better/worse):",
        "",
        "| method | log-loss difference [95% CI] | wins/losses | AUROC difference [95% CI] | "
        "wins/losses | targets (log-loss/AUROC) |",
        "|---|---|---:|---|---:|---:|",
    ]
    diffs = {(r["baseline"], r["metric"]): r for r in res["differences"]}
    for base in res["baselines"]:
        ll, au = diffs[(base, "log_loss")], diffs[(base, "auroc")]
        lines.append(f"| {base} | {_fmt_diff(ll)} | {ll['wins']}/{ll['losses']} | {_fmt_diff(au)} | "
                     f"{au['wins']}/{au['losses']} | {ll['n_tasks']}/{au['n_tasks']} |")
    lines += ["", "Issue target (ragim-statistical's log-loss below the peer's, CI of the paired "
              "difference below 0): " + "; ".join(f"{p}: **{v}**" for p, v in res["target"].items()),
              "", "Time per method (wall seconds: setup summed over folds, prediction over targets): "
              + "; ".join(f"{m} {t['setup']:.0f} + {t['predict']:.0f}"
                          for m, t in res["method_seconds"].items()) + "."]
    for m, curve in res["training"].items():
        lines += ["", f"Training loss of {m} (mean row-level cross-entropy of the first and last "
                  "logged steps, per fold): " + "; ".join(
                      f"fold {c['fold']} {c['first_loss']:.3f} → {c['last_loss']:.3f} "
                      f"({c['steps']} steps)" for c in curve) + "."]
    failed = [f for f in res["failures"] if f["n_failed"] or f["n_missing"]]
    lines += ["", "Failures: " + ("none (every method scored every target)." if not failed else
                                  "; ".join(f"{f['method']}: {f['n_failed']} failed, {f['n_missing']} "
                                            f"missing (first: {f['first_failure']})" for f in failed))]
    agree = res["agreement"]
    if not agree:
        lines += ["", "Not compared with the main evaluation's rows (another embedder, a subset of "
                  "its targets, or no `eval_" + res["name"] + ".csv`)."]
    else:
        lines += ["", "Same rows as the main evaluation (`eval_" + res["name"] + ".csv`): largest "
                  "per-target difference of "
                  + "; ".join(f"{a['method']} {a['max_abs_diff_log_loss']:.1e} log-loss over "
                              f"{a['n_common']} common targets" for a in agree) + "."]
        same = [a["method"] for a in agree if (a["max_abs_diff_log_loss"] or 0) < 1e-9]
        other = [a["method"] for a in agree if a["method"] not in same]
        if same and other:
            verb = "differs" if len(other) == 1 else "differ"
            lines[-1] += (f" {' and '.join(same)} use only the index and the test rows, so the "
                          f"indexes and test rows are the main evaluation's; {', '.join(other)} "
                          f"{verb}, so `eval_{res['name']}"
                          ".csv` was made by other code of "
                          f"{'that method' if len(other) == 1 else 'those methods'} (refresh it "
                          f"with `benchmarks/evaluate_all.py --only {res['name']}`).")
    s = res["settings"]
    lines += ["", f"Settings: {s['folds']} folds, seed {s['seed']}, k = {s['k_neighbors']} neighbours, "
              f"embedder {s['embedder']}, torch {s['torch']} with {s['torch_threads']} thread; "
              f"rag-im-2024: `RagIm2024Config` defaults ({s['rag_im_2024_summary']}); contextualized "
              f"(contextualized-ml {s['contextualized_version']}): {s['contextualized_summary']}."]
    return "\n".join(lines) + "\n"


def _settings(cfg: dict, embedder: str | None) -> dict:
    from ragim import evaluate as ev
    from ragim.generate.ragim2024 import RagIm2024Config

    try:
        ctx_version = importlib.metadata.version("contextualized-ml")
    except importlib.metadata.PackageNotFoundError:
        ctx_version = None
    r24 = asdict(RagIm2024Config())
    fit = ev.CONTEXTUALIZED_FIT
    return {
        "protocol": cfg["protocol"], "folds": cfg.get("folds", 5), "seed": 0, "k_neighbors": 10,
        "max_targets": cfg.get("max_targets"), "embedder": embedder or "minilm (default)",
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "rag_im_2024": r24,
        "rag_im_2024_summary": f"hidden {r24['hidden']}, {r24['blocks']} blocks, lr {r24['lr']}, "
                               f"batch {r24['batch_size']}, {r24['epochs']} epochs, at least "
                               f"{r24['min_steps']} steps",
        "contextualized_version": ctx_version,
        "contextualized_fit": fit, "contextualized_max_rows": ev.CONTEXTUALIZED_MAX_ROWS,
        "contextualized_summary": f"mlp encoder, 8 archetypes, batch {fit['train_batch_size']}, "
                                  f"lr {fit['learning_rate']}, at most {fit['max_epochs']} epochs "
                                  f"(early stopping, patience {fit['es_patience']}), at most "
                                  f"{ev.CONTEXTUALIZED_MAX_ROWS:,} index rows per fold",
    }


def run(name: str, embedder: str | None, max_targets: int | None, out: Path, *,
        methods=tuple(METHODS), peers=tuple(PEERS), main_folds=None) -> dict:
    """Evaluate ``methods`` zero-shot on benchmark ``name``, write peers_<name>.csv/.json/.md
    under ``out`` and return the JSON record."""
    from ragim import evaluate as ev
    from ragim.metrics import format_table, paired_differences, summarize, to_records

    ds, tasks, cfg = load_benchmark(name)
    main_csv = RESULTS / f"eval_{name}.csv"
    main = pd.read_csv(main_csv) if main_csv.is_file() else None
    kw = dict(cfg)
    note = (f"all {cfg['max_targets']} targets of the main evaluation (seeded choice of "
            f"{len(tasks)} tasks)" if cfg.get("max_targets") else f"all {len(tasks)} tasks")
    if (max_targets is not None or main_folds) and main is None:
        raise SystemExit(f"--max-targets and --main-folds need {main_csv} (its targets)")
    zero = None if main is None else main[main["k_shot"] == 0].drop_duplicates("task_id")
    if main_folds:
        groups = sorted({int(f) for f in main_folds})
        fold_of = {t: int(f) for t, f in zip(zero["task_id"], zero["fold"], strict=True)
                   if int(f) in groups}
        tasks = with_main_folds(tasks, fold_of)
        kw = dict(protocol="leave-group-out", group=FOLD_KEY, groups=groups)
        note = (f"the targets of fold(s) {', '.join(map(str, groups))} of the main evaluation's "
                f"{zero['fold'].nunique()} folds ({len(fold_of)} of its {len(zero)} targets), each "
                "scored against that fold's own index (the fold's targets held out together, "
                "which removes what the main evaluation's fold removed)")
    elif max_targets is not None:
        pool = sorted(zero["task_id"])
        chosen = sorted(np.random.default_rng(0).choice(pool, min(max_targets, len(pool)),
                                                        replace=False).tolist())
        kw.pop("max_targets", None)
        kw["targets"] = chosen
        note = (f"a seeded subset (seed 0) of {len(chosen)} of the main evaluation's "
                f"{len(pool)} targets; the folds are made over this subset, so each fold's index "
                "differs from the main evaluation's")
    methods, peers = list(methods), list(peers)
    baselines = [m for m in methods if m != OURS]
    t = time.perf_counter()
    with timed_methods(methods) as log, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = ev.zero_shot(tasks, methods=methods, embedder=embedder, progress=True, **kw)
    wall = time.perf_counter() - t
    if main_folds:  # report it as the main evaluation's protocol and fold numbers
        df["protocol"] = cfg["protocol"]
        df["fold"] = df["fold"].map(dict(enumerate(groups)))
    n_targets = int(df["task_id"].nunique())
    summary = summarize(df, metrics=["auroc", "log_loss"])
    scored = set(df["method"])  # a peer that is not installed scored no row: nothing to compare
    diffs = paired_differences(df, [OURS], [b for b in baselines if b in scored])
    diff_records = to_records(diffs)
    command = f".venv/bin/python benchmarks/peers.py --only {name}"
    if embedder:
        command += f" --embedder {embedder}"
    if main_folds:
        command += " --main-folds " + " ".join(map(str, groups))
    elif max_targets is not None:
        command += f" --max-targets {max_targets}"
    res = {
        "name": name, "dataset": ds, "protocol": cfg["protocol"], "n_targets": n_targets,
        "targets_note": note, "seconds": round(wall, 1), "command": command,
        "methods": methods, "baselines": baselines,
        "method_seconds": {m: {k: round(v, 1) for k, v in s.items()}
                           for m, s in log["seconds"].items()},
        "training": {m: t for m, t in log["training"].items() if t},
        "summary": to_records(summary), "table": format_table(summary, metrics=["auroc", "log_loss"]),
        "differences": diff_records,
        "target": {p: verdict(diff_records, p) for p in peers},
        "failures": failures(df, methods, n_targets),
        # the main evaluation's rows are comparable only with its embedder and its targets
        "agreement": [] if main is None or embedder or (max_targets is not None and not main_folds)
        else agreement(df, main, [m for m in methods if m in set(main["method"])]),
        "notes": list(df.attrs.get("notes", [])),
        "warnings": sorted({str(w.message).splitlines()[0][:300] for w in caught}
                           - set(df.attrs.get("notes", []))),
        "settings": _settings(cfg, embedder),
    }
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"peers_{name}.csv", index=False)
    (out / f"peers_{name}.json").write_text(json.dumps(res, indent=1, allow_nan=False) + "\n")
    (out / f"peers_{name}.md").write_text(markdown(res))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="+", default=["synthetic", "procedure"], choices=list(CONFIGS))
    ap.add_argument("--embedder", default=None, help="description embedder (default: MiniLM)")
    ap.add_argument("--main-folds", type=int, nargs="+", default=None,
                    help="score only the targets of these folds of the main evaluation")
    ap.add_argument("--max-targets", type=int, default=None,
                    help="score a seeded subset of this many of the main evaluation's targets")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as benchmarks/evaluate_all.py
    for name in args.only:
        res = run(name, args.embedder, args.max_targets, args.out, main_folds=args.main_folds)
        print(markdown(res), flush=True)


if __name__ == "__main__":
    main()
