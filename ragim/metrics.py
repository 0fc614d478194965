"""Per-task metrics, bootstrap confidence intervals and result tables.

The evaluation protocols in :mod:`ragim.evaluate` score every method on every
target task with :func:`task_metrics`, then aggregate over tasks with
:func:`summarize` (macro mean, bootstrap 95% CI over tasks, optional breakdown by
task size). :func:`to_records` and :func:`format_table` turn a summary into JSON
records (the ``ragim evaluate --json`` contract) and a terminal table;
:func:`plot_calibration` and :func:`plot_by_group` draw matplotlib figures (no pyplot).

Metric definitions
------------------
* ``auroc``: :func:`sklearn.metrics.roc_auc_score`; NaN when the test rows hold
  one class only (the task then does not count towards the AUROC mean).
* ``log_loss``: :func:`sklearn.metrics.log_loss` with probabilities clipped to
  ``[1e-7, 1 - 1e-7]``.
* ``brier``: :func:`sklearn.metrics.brier_score_loss` (mean squared error of P(y=1)).
* ``ece``: expected calibration error over 10 equal-width bins of [0, 1]
  (bin ``b`` is ``[b/10, (b+1)/10)``, the last one closed), weighted by the
  number of rows in each bin: ``sum_b n_b / n * |mean(y_b) - mean(p_b)|``.
* ``accuracy``: :func:`sklearn.metrics.accuracy_score` at threshold 0.5
  (``p >= 0.5`` predicts 1).

The values are sklearn's, computed with the same formulas in numpy (AUROC as the
Mann-Whitney U of :func:`scipy.stats.rankdata` ranks): sklearn's per-call input checks cost
~28 ms a call, most of a few-shot evaluation's scoring. tests/test_metrics.py checks the
match.

Examples
--------
>>> import numpy as np
>>> m = task_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
>>> round(m["auroc"], 2), m["accuracy"]
(0.75, 0.75)
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from ragim.checks import (
    check_bool,
    check_float_array,
    check_frame,
    check_int,
    check_names,
    check_number,
)
from ragim.errors import DataWarning, ValidationError, user_stacklevel

METRICS = ("auroc", "log_loss", "brier", "ece", "accuracy")
HIGHER_IS_BETTER = {
    "auroc": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
    "accuracy": True,
}
EPS = 1e-7
DEFAULT_SIZE_EDGES = (50, 200, 1000)
SUMMARY_FIELDS = [
    "dataset",
    "protocol",
    "method",
    "k_shot",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n_tasks",
]
_KEYS = ["dataset", "protocol", "method", "k_shot"]


def check_predictions(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """``(y, p)`` as flat float arrays after checking them as every metric here does: the same
    length, at least one row, 0/1 outcomes, finite probabilities in [0, 1].

    Raises
    ------
    ValidationError
        One line naming the problem ("y_true must contain only 0/1 labels").

    Examples
    --------
    >>> check_predictions([True, 0], [0.8, 0.1])[0].tolist()
    [1.0, 0.0]
    """
    y = check_float_array(y_true, "y_true", what="0/1 labels")
    p = check_float_array(y_prob, "y_prob", what="probabilities")
    if y.shape != p.shape:
        raise ValidationError(
            f"y_true has {y.shape[0]} values but y_prob has {p.shape[0]}; they must match"
        )
    if y.size == 0:
        raise ValidationError("cannot score zero rows")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValidationError("y_true must contain only 0/1 labels")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValidationError("y_prob must be finite probabilities in [0, 1]")
    return y, p


def bin_statistics(y, p, n_bins: int = 10) -> np.ndarray:
    """Per equal-width bin of [0, 1] (bin ``b`` is ``[b/n_bins, (b+1)/n_bins)``, the last
    closed): rows, sum of ``p`` and sum of ``y``; shape ``(3, n_bins)``. Bins of several
    prediction sets add up to the bins of their rows together (:mod:`ragim.calibration`).

    Examples
    --------
    >>> bin_statistics([0, 1], [0.05, 0.95], n_bins=2).tolist()
    [[1.0, 1.0], [0.05, 0.95], [0.0, 1.0]]
    """
    n_bins = check_int(n_bins, "n_bins", ge=1)
    y, p = check_predictions(y, p)  # a risk outside [0, 1] would land in an end bin
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, int(n_bins) - 1)
    return np.stack(
        [
            np.bincount(idx, minlength=n_bins).astype(float),
            np.bincount(idx, p, n_bins),
            np.bincount(idx, y, n_bins),
        ]
    )


def ece_from_bins(stats: np.ndarray) -> np.ndarray:
    """ECE from :func:`bin_statistics` (summed over any number of prediction sets):
    ``sum_b |sum(y_b) - sum(p_b)| / n``. ``stats`` may carry leading dimensions
    (``(..., 3, n_bins)``, e.g. one per bootstrap draw), reduced the same way.

    Examples
    --------
    >>> float(ece_from_bins(bin_statistics([0, 0, 0, 0], [0.9] * 4)))
    0.9
    """
    n, sp, sy = stats[..., 0, :], stats[..., 1, :], stats[..., 2, :]
    return np.abs(sy - sp).sum(axis=-1) / n.sum(axis=-1)


def expected_calibration_error(y_true, y_prob, n_bins: int = 10) -> float:
    """Count-weighted ECE over ``n_bins`` equal-width bins of [0, 1] (see module docstring).

    Examples
    --------
    >>> expected_calibration_error([0, 1, 1, 0], [0.0, 1.0, 1.0, 0.0])
    0.0
    >>> round(expected_calibration_error([0, 0, 0, 0], [0.9, 0.9, 0.9, 0.9]), 3)
    0.9
    """
    n_bins = check_int(n_bins, "n_bins", ge=1)
    y, p = check_predictions(y_true, y_prob)
    return float(ece_from_bins(bin_statistics(y, p, n_bins)))


def clipped_log_loss(y_true, y_prob) -> float:
    """Mean log-loss (nats per row) with probabilities clipped to ``[EPS, 1 - EPS]`` (the value
    of :func:`sklearn.metrics.log_loss`); ``-clipped_log_loss`` is the mean log-likelihood.

    Examples
    --------
    >>> round(clipped_log_loss([0, 1], [0.0, 1.0]), 12)
    1e-07
    """
    y, p = check_predictions(y_true, y_prob)
    return _log_loss(y, p)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Clipped mean log-loss of checked arrays (equals :func:`sklearn.metrics.log_loss`;
    tests/test_metrics.py checks it) without sklearn's per-call input checks."""
    q = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """AUROC of checked arrays as the Mann-Whitney U of average ranks (ties count half;
    equals :func:`sklearn.metrics.roc_auc_score`, tests/test_metrics.py checks it), NaN with
    one class. sklearn's per-call input checks took ~28 ms, most of a few-shot evaluation's
    scoring time."""
    n1 = int(y.sum())
    if not 0 < n1 < y.size:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (y.size - n1)))


def auroc(y_true, y_score) -> float:
    """Area under the ROC curve (the value of :func:`sklearn.metrics.roc_auc_score`; ties
    count half) of any real-valued scores (probabilities or log-odds); NaN when ``y_true``
    holds one class.

    Examples
    --------
    >>> auroc([0, 1, 1], [-2.0, 0.5, 0.5]), math.isnan(auroc([1, 1], [0.2, 0.3]))
    (1.0, True)
    """
    y = check_float_array(y_true, "y_true", what="0/1 labels")
    s = check_float_array(y_score, "y_score")
    if y.shape != s.shape or y.size == 0:
        raise ValidationError(
            f"y_true has {y.size} values but y_score has {s.size}; they must match and be non-empty"
        )
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValidationError("y_true must contain only 0/1 labels")
    if not np.all(np.isfinite(s)):
        raise ValidationError("y_score must be finite")
    return _auroc(y, s)


def task_metrics(y_true, y_prob) -> dict[str, float]:
    """AUROC, log-loss, Brier score, ECE and accuracy of one task's predictions.

    Examples
    --------
    >>> m = task_metrics([1, 1, 1], [0.9, 0.8, 0.7])
    >>> math.isnan(m["auroc"]), round(m["brier"], 3)
    (True, 0.047)
    """
    y, p = check_predictions(y_true, y_prob)
    return {
        "auroc": _auroc(y, p),
        "log_loss": _log_loss(y, p),
        "brier": float(np.mean((p - y) ** 2)),  # sklearn's brier_score_loss
        "ece": float(ece_from_bins(bin_statistics(y, p))),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),  # sklearn's accuracy_score at 0.5
    }


def bootstrap_ci(
    values, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float, int]:
    """Mean of the finite ``values`` and a percentile bootstrap CI, resampling values (tasks).

    Returns ``(mean, ci_low, ci_high, n)`` where ``n`` counts the finite values.
    With no finite value everything is NaN; with one the CI is the value itself.

    Raises :class:`~ragim.errors.ValidationError` when ``n_boot`` is not an integer >= 1,
    ``level`` not in (0, 1) or ``seed`` not an integer >= 0.

    Examples
    --------
    >>> m, lo, hi, n = bootstrap_ci([0.7, 0.8, 0.9, float("nan")])
    >>> round(m, 3), lo <= m <= hi, n
    (0.8, True, 3)
    """
    n_boot, level, seed = _bootstrap_settings(n_boot, level, seed)
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n == 1:
        return mean, mean, mean, 1
    rng = np.random.default_rng(seed)
    draws = v[rng.integers(0, n, size=(int(n_boot), n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return mean, float(min(lo, mean)), float(max(hi, mean)), n


def _bootstrap_settings(n_boot: Any, level: Any, seed: Any) -> tuple[int, float, int]:
    return (
        check_int(n_boot, "n_boot", ge=1),
        check_number(level, "level", gt=0, lt=1),
        check_int(seed, "seed", ge=0),
    )


def size_labels(edges: Sequence[int] = DEFAULT_SIZE_EDGES) -> list[str]:
    """Labels of the task-size groups: ``(50, 200, 1000)`` gives "<50", "50-200", "200-1000",
    ">=1000"."""
    e = [int(x) for x in edges]
    if not e or any(b <= a for a, b in zip(e, e[1:], strict=False)):
        raise ValidationError(f"size edges must be increasing integers, got {list(edges)!r}")
    return [f"<{e[0]}"] + [f"{a}-{b}" for a, b in zip(e, e[1:], strict=False)] + [f">={e[-1]}"]


def size_group(n_rows: int, edges: Sequence[int] = DEFAULT_SIZE_EDGES) -> str:
    """The size-group label of a task with ``n_rows`` rows.

    >>> size_group(120), size_group(5000)
    ('50-200', '>=1000')
    """
    labels = size_labels(edges)
    return labels[int(np.searchsorted(np.asarray(edges), int(n_rows), side="right"))]


# ---------------------------------------------------------------------- aggregation
def _check_frame(per_task: Any, need: Sequence[str]) -> None:
    check_frame(per_task, "per_task", need, source="the output of zero_shot/few_shot")


def mean_over_draws(per_task: pd.DataFrame) -> pd.DataFrame:
    """One row per target, method and k: the metrics averaged over the random draws of the k
    rows (the ``draw`` column of :func:`ragim.evaluate.evaluate` with ``draws > 1``); a frame
    without draws is returned as it is.

    A metric that is NaN on some draws (the method failed on them) is NaN for the target: a
    mean over the draws that worked would score the method on other draws than the methods
    it is compared with. The ``status`` column then gives the first failure (else "ok").

    Examples
    --------
    >>> df = pd.DataFrame({"dataset": "d", "protocol": "p", "method": "m", "k_shot": 4,
    ...                    "task_id": "a", "draw": [0, 1], "log_loss": [0.5, 0.7]})
    >>> mean_over_draws(df)[["task_id", "log_loss"]].to_dict("records")
    [{'task_id': 'a', 'log_loss': 0.6}]
    """
    if "draw" not in per_task.columns or not (per_task["draw"].fillna(0) > 0).any():
        return per_task
    keys = [
        c for c in ["dataset", "protocol", "method", "k_shot", "task_id"] if c in per_task.columns
    ]
    metric_cols = [c for c in METRICS if c in per_task.columns]
    flags = {f"{c} missing": per_task[c].isna() for c in metric_cols}
    agg: dict[str, Any] = {c: "mean" for c in metric_cols}
    agg.update({f: "any" for f in flags})
    if "status" in per_task.columns:
        agg["status"] = _first_failure
    agg.update(
        {c: "first" for c in per_task.columns if c not in keys and c not in agg and c != "draw"}
    )
    out = per_task.assign(**flags).groupby(keys, sort=False, dropna=False).agg(agg)
    for c in metric_cols:  # a draw that failed makes the target's mean NaN
        out[c] = out[c].where(~out.pop(f"{c} missing").astype(bool))
    return out[[c for c in per_task.columns if c in out.columns]].reset_index()


def _first_failure(status: pd.Series) -> str:
    failed = [str(v) for v in status if str(v) != "ok"]
    return failed[0] if failed else "ok"


def summarize(
    per_task: pd.DataFrame,
    *,
    by_size: bool = False,
    metrics: Sequence[str] = METRICS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Macro mean over tasks with a bootstrap CI, per dataset, protocol, method and k (a
    target's draws of the k rows are averaged first: :func:`mean_over_draws`).

    Parameters
    ----------
    per_task : the frame returned by :func:`ragim.evaluate.zero_shot` / ``few_shot``.
    by_size : add a ``size_group`` column and summarise each task-size group separately.
    metrics : which metric columns to summarise.
    n_boot, level, seed : bootstrap draws (tasks resampled with replacement), CI level, seed.

    Returns a long frame with the contract fields ``dataset, protocol, method, k_shot,
    metric, mean, ci_low, ci_high, n_tasks`` (``n_tasks`` counts tasks with a finite value
    of that metric, so AUROC may count fewer tasks than log-loss).

    Raises :class:`~ragim.errors.ValidationError` when ``per_task`` is not a frame with the
    key and metric columns, ``metrics`` is not a list of names, or ``n_boot``, ``level`` or
    ``seed`` is out of range (:func:`bootstrap_ci`).

    Examples
    --------
    >>> df = pd.DataFrame({"dataset": "d", "protocol": "p", "method": "m", "k_shot": 0,
    ...                    "task_id": ["a", "b"], "n_rows": [10, 20], "size_group": "<50",
    ...                    "auroc": [0.6, float("nan")], "log_loss": [0.5, 0.7]})
    >>> s = summarize(df, metrics=["auroc", "log_loss"])
    >>> s[["metric", "mean", "n_tasks"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'metric': 'auroc', 'mean': 0.6, 'n_tasks': 1},
     {'metric': 'log_loss', 'mean': 0.6, 'n_tasks': 2}]
    """
    metrics = check_names(metrics, "metrics", what="metric names")
    by_size = check_bool(by_size, "by_size")
    n_boot, level, seed = _bootstrap_settings(n_boot, level, seed)
    _check_frame(per_task, [*_KEYS, *metrics])
    per_task = mean_over_draws(per_task)
    keys = [*_KEYS, "size_group"] if by_size else list(_KEYS)
    rows = []
    for key, grp in per_task.groupby(keys, sort=False, dropna=False):
        for metric in metrics:
            mean, lo, hi, n = bootstrap_ci(
                grp[metric].to_numpy(dtype=float), n_boot=n_boot, level=level, seed=seed
            )
            rows.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "metric": metric,
                    "mean": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n_tasks": n,
                }
            )
    cols = SUMMARY_FIELDS + (["size_group"] if by_size else [])
    out = pd.DataFrame(rows, columns=cols)
    out["k_shot"] = out["k_shot"].astype(int)
    out["n_tasks"] = out["n_tasks"].astype(int)
    return out


#: metrics where a lower value is better
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})


def paired_differences(
    per_task: pd.DataFrame,
    methods: Sequence[str],
    baselines: Sequence[str],
    *,
    metrics: Sequence[str] = ("log_loss", "auroc"),
    k_shot: int = 0,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired differences ``method - baseline`` over the same targets, with a bootstrap CI.

    Each target contributes one difference (the same test rows scored by both methods);
    targets where either value is missing are dropped. The CI resamples targets (percentile
    bootstrap), so it is the uncertainty of the *difference*, far narrower than comparing two
    marginal CIs when the methods are correlated.

    Returns a frame with ``dataset, protocol, method, baseline, k_shot, metric, mean_diff,
    ci_low, ci_high, n_tasks, wins, losses`` (a win is a target where the method is better:
    lower log-loss, Brier and ECE; higher AUROC and accuracy).

    Raises :class:`~ragim.errors.ValidationError` when ``methods``, ``baselines`` or
    ``metrics`` is not a list of names (a bare string), a method or baseline has no row in
    ``per_task`` or none at ``k_shot`` (a zero-shot baseline such as ``pooled`` is scored at
    k_shot 0 only), or ``k_shot``, ``n_boot``, ``level`` or ``seed`` is out of range.

    Examples
    --------
    >>> df = pd.DataFrame({"dataset": "d", "protocol": "p", "k_shot": 0,
    ...                    "task_id": ["a", "b", "a", "b"], "method": ["new", "new", "old", "old"],
    ...                    "log_loss": [0.4, 0.5, 0.5, 0.6]})
    >>> r = paired_differences(df, ["new"], ["old"], metrics=["log_loss"])
    >>> round(float(r["mean_diff"][0]), 3), int(r["wins"][0])
    (-0.1, 2)
    """
    methods, baselines = check_names(methods, "methods"), check_names(baselines, "baselines")
    metrics = check_names(metrics, "metrics", what="metric names")
    k_shot = check_int(k_shot, "k_shot", ge=0)
    n_boot, level, seed = _bootstrap_settings(n_boot, level, seed)
    _check_frame(per_task, ["dataset", "protocol", "method", "k_shot", "task_id", *metrics])
    _check_methods_at_k(per_task, [*methods, *baselines], k_shot)
    df = mean_over_draws(per_task[per_task["k_shot"] == k_shot])
    rows = []
    for (dataset, protocol), grp in df.groupby(["dataset", "protocol"], sort=False):
        for method in methods:
            for base in baselines:
                if method == base:
                    continue
                a = grp[grp["method"] == method].set_index("task_id")
                b = grp[grp["method"] == base].set_index("task_id")
                common = a.index.intersection(b.index)
                for metric in metrics:
                    d = (a.loc[common, metric] - b.loc[common, metric]).to_numpy(dtype=float)
                    d = d[np.isfinite(d)]
                    mean, lo, hi, n = bootstrap_ci(d, n_boot=n_boot, level=level, seed=seed)
                    better = d < 0 if metric in LOWER_IS_BETTER else d > 0
                    worse = d > 0 if metric in LOWER_IS_BETTER else d < 0
                    rows.append(
                        {
                            "dataset": dataset,
                            "protocol": protocol,
                            "method": method,
                            "baseline": base,
                            "k_shot": k_shot,
                            "metric": metric,
                            "mean_diff": mean,
                            "ci_low": lo,
                            "ci_high": hi,
                            "n_tasks": n,
                            "wins": int(better.sum()),
                            "losses": int(worse.sum()),
                        }
                    )
    return pd.DataFrame(
        rows,
        columns=[
            "dataset",
            "protocol",
            "method",
            "baseline",
            "k_shot",
            "metric",
            "mean_diff",
            "ci_low",
            "ci_high",
            "n_tasks",
            "wins",
            "losses",
        ],
    )


def _check_methods_at_k(per_task: pd.DataFrame, names: Sequence[str], k_shot: int) -> None:
    """Refuse a method that ``per_task`` never scored, or never at ``k_shot``: its differences
    would be NaN over 0 targets, a row that reads like a result."""
    ks = pd.to_numeric(per_task["k_shot"], errors="coerce")
    have = {str(m): sorted({int(k) for k in g.dropna()}) for m, g in ks.groupby(per_task["method"])}
    absent = [m for m in dict.fromkeys(names) if m not in have]
    if absent:
        raise ValidationError(f"no rows for method(s) {absent}; the frame has {sorted(have)}")
    elsewhere = [f"{m!r} (k_shot {have[m]})" for m in dict.fromkeys(names) if k_shot not in have[m]]
    if elsewhere:
        raise ValidationError(
            f"no rows at k_shot={k_shot} for {', '.join(elsewhere)}; zero-shot methods such as "
            "pooled are scored at k_shot 0 only: compare at a k both were scored at"
        )


def skill(
    summary: pd.DataFrame,
    *,
    baselines: Sequence[str] = ("pooled", "neighbor-mean"),
    oracle: str = "oracle",
    metrics: Sequence[str] = ("log_loss", "auroc"),
    k_shot: int = 0,
) -> pd.DataFrame:
    """Each method's *skill*: the share of the gap from the best baseline to the oracle it closes.

    ``skill = (baseline - method) / (baseline - oracle)`` for log-loss (lower is better) and
    ``(method - baseline) / (oracle - baseline)`` for AUROC, on macro means, where the baseline
    is whichever of ``baselines`` is best on that metric. 0 is the best baseline, 1 the oracle
    (the noise-free part of the true model that the description determines); negative values
    are worse than the best baseline. Rows without an oracle are skipped. Where the method,
    the best baseline and the oracle were scored on different numbers of targets
    (``n_tasks``: the oracle known on some targets only, a method that failed on some), the
    macro means are over different targets, so the skill is NaN and a warning names them. A
    summary by task size (``summarize(..., by_size=True)``) gives one skill per size group,
    in a ``size_group`` column.

    Examples
    --------
    >>> s = pd.DataFrame({"dataset": "d", "protocol": "p", "k_shot": 0, "metric": "log_loss",
    ...                   "method": ["pooled", "neighbor-mean", "oracle", "new"],
    ...                   "mean": [0.6, 0.55, 0.45, 0.5]})
    >>> r = skill(s, metrics=["log_loss"]).set_index("method")["skill"]
    >>> round(float(r["new"]), 3), round(float(r["neighbor-mean"]), 3)
    (0.5, 0.0)
    """
    baselines = check_names(baselines, "baselines")
    metrics = check_names(metrics, "metrics", what="metric names")
    k_shot = check_int(k_shot, "k_shot", ge=0)
    _check_frame(summary, ["dataset", "protocol", "method", "k_shot", "metric", "mean"])
    rows: list[dict[str, Any]] = []
    unpaired: list[str] = []
    s = summary[summary["k_shot"] == k_shot]
    keys = ["dataset", "protocol", "metric"] + (["size_group"] if "size_group" in s.columns else [])
    for key, grp in s.groupby(keys, sort=False, dropna=False):
        where = dict(zip(keys, key, strict=True))
        if where["metric"] not in metrics:
            continue
        if grp["method"].duplicated().any():
            twice = sorted(set(grp.loc[grp["method"].duplicated(), "method"]))
            raise ValidationError(
                f"the summary has several {where['metric']} rows of {twice} at k_shot={k_shot} "
                f"in {where['dataset']} / {where['protocol']}; pass one summarize() result"
            )
        means = grp.set_index("method")["mean"]
        if oracle not in means or not any(b in means for b in baselines):
            continue
        counts = grp.set_index("method")["n_tasks"] if "n_tasks" in grp.columns else None
        lower = where["metric"] in LOWER_IS_BETTER
        base_vals = {b: float(means[b]) for b in baselines if b in means}
        best = (min if lower else max)(base_vals, key=base_vals.get)
        gap = (
            (base_vals[best] - float(means[oracle]))
            if lower
            else (float(means[oracle]) - base_vals[best])
        )
        for method, value in means.items():
            if method == oracle:
                continue
            gain = (base_vals[best] - float(value)) if lower else (float(value) - base_vals[best])
            share = gain / gap if gap > 0 else math.nan
            if counts is not None and len({int(counts[m]) for m in (method, best, oracle)}) > 1:
                unpaired.append(
                    f"{method} ({int(counts[method])}), {best} ({int(counts[best])}), "
                    f"{oracle} ({int(counts[oracle])}) on {where['metric']}"
                )
                share = math.nan  # means over different targets: no gap to share
            rows.append({**where, "method": method, "baseline": best, "skill": share})
    if unpaired:
        warnings.warn(
            "skill is NaN where the method, the best baseline and the oracle were scored on "
            "different numbers of targets (their macro means are over different targets): "
            + "; ".join(unpaired[:5])
            + (" ..." if len(unpaired) > 5 else ""),
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    extra = ["size_group"] if "size_group" in keys else []
    return pd.DataFrame(
        rows, columns=["dataset", "protocol", "metric", "method", "baseline", "skill", *extra]
    )


def _json_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def to_records(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records of a summary (NaN becomes ``None``), one per row.

    Examples
    --------
    >>> s = pd.DataFrame([{"dataset": "d", "protocol": "p", "method": "m", "k_shot": 0,
    ...                    "metric": "auroc", "mean": float("nan"), "ci_low": None, "ci_high": None,
    ...                    "n_tasks": 0}])
    >>> to_records(s)[0]["mean"] is None
    True
    """
    recs = [{str(k): _json_value(v) for k, v in rec.items()} for rec in summary.to_dict("records")]
    json.dumps(recs, allow_nan=False)  # fail here, not in the caller's json.dumps
    return recs


def _fmt_cell(row) -> str:
    if row is None or not np.isfinite(row["mean"]):
        return "n/a"
    if row["ci_low"] == row["ci_high"]:
        return f"{row['mean']:.3f}"
    return f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def format_table(summary: pd.DataFrame, *, metrics: Sequence[str] | None = None) -> str:
    """A readable terminal table: one block per dataset and protocol (and size group),
    methods (with their k) as rows, metrics as columns, cells ``"0.812 [0.790, 0.835]"``;
    the last column ``n`` is the largest number of tasks with a finite value among the shown
    metrics; a line under the block names each metric that counts fewer, and on which rows
    (AUROC is undefined on single-class test rows).

    Examples
    --------
    >>> s = pd.DataFrame([{"dataset": "d", "protocol": "p", "method": "m", "k_shot": 0,
    ...                    "metric": "auroc", "mean": 0.8, "ci_low": 0.7, "ci_high": 0.9,
    ...                    "n_tasks": 4}])
    >>> print(format_table(s))
    d / p (4 tasks)
    method  auroc                 n
    ------  --------------------  -
    m       0.800 [0.700, 0.900]  4
    """
    if summary.empty:
        return "(no results)"
    metrics = (
        check_names(metrics, "metrics", what="metric names")
        if metrics is not None
        else [m for m in METRICS if m in set(summary["metric"])]
        or list(dict.fromkeys(summary["metric"]))
    )
    blocks = ["dataset", "protocol"] + (["size_group"] if "size_group" in summary.columns else [])
    out = []
    for key, grp in summary.groupby(blocks, sort=False):
        n = int(grp["n_tasks"].max())
        out.append(" / ".join(str(k) for k in key) + f" ({n} tasks)")
        lines = [["method", *metrics, "n"]]
        fewer: dict[str, dict[tuple[int, int], list[str]]] = {}  # metric -> (n, of) -> rows
        for (method, k), g in grp.groupby(["method", "k_shot"], sort=False):
            cells = {r["metric"]: r for r in g.to_dict("records")}
            label = method if int(k) == 0 else f"{method} k={int(k)}"
            n_row = max((int(cells[m]["n_tasks"]) for m in metrics if m in cells), default=0)
            lines.append([label, *[_fmt_cell(cells.get(m)) for m in metrics], str(n_row)])
            for m in metrics:
                if m in cells and int(cells[m]["n_tasks"]) < n_row:
                    fewer.setdefault(m, {}).setdefault(
                        (int(cells[m]["n_tasks"]), n_row), []
                    ).append(label)
        widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
        lines.insert(1, ["-" * w for w in widths])
        out.extend(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
        )
        for m, counts in fewer.items():  # n is the row's largest count: say where it is less
            rows = len(lines) - 2
            parts = [
                f"{n} of {of} tasks" + ("" if len(labels) == rows else f" ({', '.join(labels)})")
                for (n, of), labels in counts.items()
            ]
            why = " (undefined where a task's test rows hold one class)" if m == "auroc" else ""
            out.append(f"{m} is on fewer tasks than n: {'; '.join(parts)}{why}")
        out.append("")
    return "\n".join(out).rstrip()


# ---------------------------------------------------------------------- figures
def plot_calibration(
    predictions: pd.DataFrame,
    *,
    methods: Sequence[str] | None = None,
    k_shot: int = 0,
    n_bins: int = 10,
    title: str | None = None,
):
    """Reliability diagram of the pooled test-row predictions of each method at one k
    (``predictions`` from ``zero_shot(..., return_predictions=True)``; with several draws of
    the k rows, draw 0, as :func:`ragim.calibration.pooled_calibration` reads).

    Raises :class:`~ragim.errors.ValidationError` when ``predictions`` lacks the columns
    ``task_id, method, k_shot, row, y, p``, has no row at ``k_shot``, or a named method has
    none there, or lacks some test rows of the first method.
    """
    from ragim.plots import plot_calibration as _plot

    k_shot = check_int(k_shot, "k_shot", ge=0)
    _check_frame(predictions, ["task_id", "method", "k_shot", "row", "y", "p"])
    ks = pd.to_numeric(predictions["k_shot"], errors="coerce")
    sel = predictions[ks == k_shot]
    if "draw" in sel.columns:  # one prediction per test row: draw 0 of the k rows
        sel = sel[sel["draw"].fillna(0) == 0]
    if sel.empty:
        have = sorted({int(k) for k in ks.dropna()})
        raise ValidationError(f"no predictions at k_shot={k_shot}; they have k_shot {have}")
    methods = (
        check_names(methods, "methods")
        if methods is not None
        else list(dict.fromkeys(sel["method"]))
    )
    absent = [m for m in methods if m not in set(sel["method"])]
    if absent:
        raise ValidationError(
            f"no predictions at k_shot={k_shot} for method(s) {absent}; have "
            f"{sorted(set(sel['method']))}"
        )
    ref = sel[sel["method"] == methods[0]].sort_values(["task_id", "row"])
    probs = {}
    for m in methods:
        s = sel[sel["method"] == m].set_index(["task_id", "row"])["p"]
        probs[m] = s.reindex(pd.MultiIndex.from_frame(ref[["task_id", "row"]])).to_numpy()
        if np.isnan(probs[m]).any():
            raise ValidationError(
                f"method {m!r} lacks predictions for some test rows of {methods[0]!r}"
            )
    return _plot(
        ref["y"].to_numpy(), probs, n_bins=n_bins, title=title or f"Calibration, k = {k_shot}"
    )


def plot_by_group(
    summary: pd.DataFrame, *, metric: str = "auroc", k_shot: int = 0, title: str | None = None
):
    """Bars of one metric per method with CI whiskers, grouped by task size when the summary
    has a ``size_group`` column (``summarize(..., by_size=True)``)."""
    from ragim.plots import new_figure

    s = summary[(summary["metric"] == metric) & (summary["k_shot"] == k_shot)]
    if s.empty:
        raise ValidationError(f"the summary has no {metric!r} rows at k_shot={k_shot}")
    groups = list(dict.fromkeys(s["size_group"])) if "size_group" in s.columns else ["all tasks"]
    methods = list(dict.fromkeys(s["method"]))
    fig = new_figure(max(5.0, 1.2 * len(groups) * max(1, len(methods)) / 2), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        sm = s[s["method"] == m]
        for gi, g in enumerate(groups):
            r = sm[sm["size_group"] == g] if "size_group" in sm.columns else sm
            if r.empty:
                continue
            r = r.iloc[0]
            err = [[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]]
            ax.bar(
                gi + (j - (len(methods) - 1) / 2) * width,
                r["mean"],
                width,
                yerr=err,
                capsize=2,
                color=f"C{j}",
                label=m if gi == 0 else None,
            )
    ax.set_xticks(range(len(groups)), [f"{g}" for g in groups])
    ax.set(ylabel=metric, xlabel="task size (rows)" if len(groups) > 1 else "")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(title or f"{metric} by task size, k = {k_shot}", fontsize=11, loc="left")
    return fig


__all__ = [
    "LOWER_IS_BETTER",
    "METRICS",
    "SUMMARY_FIELDS",
    "bin_statistics",
    "bootstrap_ci",
    "check_predictions",
    "ece_from_bins",
    "expected_calibration_error",
    "format_table",
    "mean_over_draws",
    "paired_differences",
    "plot_by_group",
    "plot_calibration",
    "size_group",
    "size_labels",
    "skill",
    "summarize",
    "task_metrics",
    "to_records",
]
