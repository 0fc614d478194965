"""Calibration of many targets' test predictions pooled together.

The per-target ``ece`` of :func:`ragim.metrics.task_metrics` is the mean, over targets, of an
expected calibration error measured on each target's own test rows. With the few test rows
that small tasks have (median 21 on the synthetic benchmark, 5 on procedure) that estimate
is dominated by binning noise, and the noise grows with the spread of the predictions: a
near-constant model lands in one or two bins and looks well calibrated, while the true
generating model of a synthetic family scores worse than the pooled model (0.173 against
0.153 on the synthetic benchmark, ``benchmarks/results/eval_synthetic.md``).

This module measures calibration on the test rows of every target pooled together, so each
bin holds hundreds or thousands of rows:

* :func:`pooled_calibration`: per method, the ECE over the pooled rows and the calibration
  intercept (calibration-in-the-large) and slope of
  :func:`ragim.validation.calibration_slope_intercept` (the "weak" and "moderate" levels of
  the calibration hierarchy of Van Calster et al., *J Clin Epidemiol* 2016): intercept 0
  and slope 1 are perfect; a slope below 1 means predictions too extreme.
* :func:`pooled_ece_differences`: the paired difference of pooled-row ECEs between two
  methods on the same targets and rows, with a percentile bootstrap CI that resamples
  targets (the unit the evaluation draws), as :func:`ragim.metrics.paired_differences` does
  for per-target metrics.

Both read the long prediction frame of :func:`ragim.evaluate.evaluate` with
``return_predictions=True`` (columns ``task_id, method, k_shot, y, p``).

Examples
--------
Two 2-row targets predicted at 0.5: each alone has ECE 0.5 (one bin, event rate 0 or 1);
pooled, the bin holds one event in two rows and the ECE is 0.

>>> import pandas as pd
>>> preds = pd.DataFrame({"task_id": ["a", "a", "b", "b"], "method": "flat", "k_shot": 0,
...                       "y": [0, 0, 1, 1], "p": 0.5})
>>> float(pooled_calibration(preds)["ece"].iloc[0])
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ragim.checks import check_frame, check_int, check_names, check_number
from ragim.errors import ValidationError
from ragim.metrics import bin_statistics, ece_from_bins
from ragim.validation import calibration_slope_intercept

PREDICTION_COLUMNS = ("task_id", "method", "k_shot", "y", "p")
DIFFERENCE_COLUMNS = [
    "method",
    "baseline",
    "ece",
    "ece_baseline",
    "mean_diff",
    "ci_low",
    "ci_high",
    "n_targets",
]


def _checked(
    predictions: pd.DataFrame, k_shot: Any, methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows at ``k_shot`` (draw 0) of ``methods`` (default: all), checked, with text
    task ids (so 1 and "1" are one target in every function)."""
    k_shot = check_int(k_shot, "k_shot", ge=0)
    check_frame(
        predictions,
        "predictions",
        PREDICTION_COLUMNS,
        source="the second frame of ragim.evaluate.evaluate(..., return_predictions=True)",
    )
    ks = pd.to_numeric(predictions["k_shot"], errors="coerce")
    df = predictions[ks == k_shot]
    if "draw" in df.columns:
        df = df[df["draw"] == 0]
    if methods is not None:
        df = df[df["method"].isin(list(methods))]
    if df.empty:
        raise ValidationError(f"no predictions at k_shot={k_shot}")
    if df["task_id"].isna().any():
        raise ValidationError(f"task_id is missing in {int(df['task_id'].isna().sum())} row(s)")
    p = pd.to_numeric(df["p"], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValidationError("predictions hold probabilities outside [0, 1] or non-finite values")
    y = pd.to_numeric(df["y"], errors="coerce").to_numpy(dtype=float)
    bad = sorted({str(v) for v, ok in zip(df["y"], np.isin(y, (0, 1)), strict=True) if not ok})
    if bad:
        raise ValidationError(f"outcomes y must be 0/1, found {bad[:5]}")
    return df.assign(task_id=df["task_id"].astype(str), y=y, p=p)


def _target_bins(df: pd.DataFrame, n_bins: int) -> dict[str, np.ndarray]:
    return {
        str(t): bin_statistics(g["y"], g["p"], n_bins) for t, g in df.groupby("task_id", sort=True)
    }


def pooled_calibration(
    predictions: pd.DataFrame, *, k_shot: int = 0, n_bins: int = 10
) -> pd.DataFrame:
    """Calibration of each method over the test rows of all its targets pooled together.

    Parameters
    ----------
    predictions : long frame ``task_id, method, k_shot, y, p`` (draw 0 only when a
        ``draw`` column is present).
    k_shot : which k to read.
    n_bins : equal-width bins of [0, 1] for the ECE.

    Returns
    -------
    One row per method: ``method, n_targets, n_rows, ece, calibration_intercept,
    calibration_slope, mean_risk, event_rate``; the intercept and slope are those of
    :func:`ragim.validation.calibration_slope_intercept` (NaN with one class; a slope of
    ``inf`` or ``-inf`` when the risks separate the outcomes).

    Raises
    ------
    ValidationError
        When columns are missing, no row has ``k_shot``, a task id is missing, a
        probability is outside [0, 1] or not finite, an outcome is not 0/1, or ``n_bins`` < 1.
    """
    n_bins = check_int(n_bins, "n_bins", ge=1)
    df = _checked(predictions, k_shot)
    rows = []
    for method, g in df.groupby("method", sort=False):
        y, p = g["y"].to_numpy(dtype=float), g["p"].to_numpy(dtype=float)
        slope, intercept = calibration_slope_intercept(y, p)
        rows.append(
            {
                "method": method,
                "n_targets": int(g["task_id"].nunique()),
                "n_rows": int(y.size),
                "ece": float(ece_from_bins(bin_statistics(y, p, n_bins))),
                "calibration_intercept": intercept,
                "calibration_slope": slope,
                "mean_risk": float(p.mean()),
                "event_rate": float(y.mean()),
            }
        )
    return pd.DataFrame(rows)


def pooled_ece_differences(
    predictions: pd.DataFrame,
    methods: Sequence[str],
    baselines: Sequence[str],
    *,
    k_shot: int = 0,
    n_bins: int = 10,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired difference ``ECE(method) - ECE(baseline)`` over the pooled test rows of the
    targets both methods scored, with a percentile bootstrap CI resampling targets (each
    draw pools the same resampled targets for both methods).

    Returns
    -------
    One row per (method, baseline), a method never against itself (so possibly no row):
    ``method, baseline, ece, ece_baseline, mean_diff, ci_low, ci_high, n_targets``; below 0
    is better. Each pair's resamples are drawn from ``seed`` afresh, so a pair's CI is the
    same whichever other methods and baselines the call names. As
    :func:`ragim.metrics.bootstrap_ci` does, the interval is widened to hold the point
    estimate when the percentiles miss it.

    Raises
    ------
    ValidationError
        As :func:`pooled_calibration`; when ``methods`` or ``baselines`` is not a list of
        names, a method has no predictions, two methods share no target, or ``n_boot``,
        ``level``, ``n_bins`` or ``seed`` is out of range.

    Examples
    --------
    >>> import pandas as pd
    >>> preds = pd.DataFrame({"task_id": ["a", "a", "b", "b"] * 2, "k_shot": 0,
    ...                       "method": ["m"] * 4 + ["c"] * 4, "y": [0, 1, 0, 1] * 2,
    ...                       "p": [0.1, 0.9, 0.2, 0.8, 0.5, 0.5, 0.5, 0.5]})
    >>> r = pooled_ece_differences(preds, ["m"], ["c"], n_boot=200)
    >>> round(float(r["mean_diff"][0]), 3)
    0.15
    """
    methods, baselines = check_names(methods, "methods"), check_names(baselines, "baselines")
    n_bins = check_int(n_bins, "n_bins", ge=1)
    n_boot = check_int(n_boot, "n_boot", ge=1)
    level = check_number(level, "level", gt=0, lt=1)
    present = set(predictions["method"]) if isinstance(predictions, pd.DataFrame) else set()
    absent = [m for m in [*methods, *baselines] if present and m not in present]
    if absent:
        raise ValidationError(f"no predictions for method(s) {absent}; have {sorted(present)}")
    df = _checked(predictions, k_shot, [*methods, *baselines])
    bins = {m: _target_bins(g, n_bins) for m, g in df.groupby("method", sort=False)}
    absent = [m for m in [*methods, *baselines] if m not in bins]
    if absent:
        raise ValidationError(
            f"no predictions for method(s) {absent} at k_shot={k_shot}; have {sorted(bins)}"
        )
    seed = check_int(seed, "seed", ge=0)
    alpha = (1.0 - level) / 2.0
    rows = []
    for method in methods:
        for base in baselines:
            if method == base:
                continue
            rng = np.random.default_rng(seed)  # each pair its own draws: the same in any call
            common = sorted(set(bins[method]) & set(bins[base]))
            if not common:
                raise ValidationError(f"{method!r} and {base!r} scored no target in common")
            a = np.stack([bins[method][t] for t in common])  # (targets, 3, bins)
            b = np.stack([bins[base][t] for t in common])
            ea, eb = float(ece_from_bins(a.sum(0))), float(ece_from_bins(b.sum(0)))
            weights = rng.multinomial(len(common), np.full(len(common), 1 / len(common)), n_boot)
            boot = ece_from_bins(np.einsum("dt,tkb->dkb", weights, a)) - ece_from_bins(
                np.einsum("dt,tkb->dkb", weights, b)
            )
            lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
            diff = ea - eb
            rows.append(
                {
                    "method": method,
                    "baseline": base,
                    "ece": ea,
                    "ece_baseline": eb,
                    "mean_diff": diff,
                    "ci_low": float(min(lo, diff)),
                    "ci_high": float(max(hi, diff)),
                    "n_targets": len(common),
                }
            )
    return pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)


__all__ = ["pooled_calibration", "pooled_ece_differences"]
