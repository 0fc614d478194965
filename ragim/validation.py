"""Local validation of a model on a hospital's own labelled patients: score it, adapt it.

The README insists that a zero-shot model be validated locally before any use. This
module is what ``ragim score`` and ``ragim adapt`` run:

* :func:`score_predictions`: discrimination and calibration of predicted risks against
  observed 0/1 outcomes, each with a percentile bootstrap 95% CI over patients:
  AUROC, log-loss, Brier score and ECE (:func:`ragim.metrics.task_metrics`), and the
  calibration slope and intercept (:func:`calibration_slope_intercept`). Each CI says how
  many resamples it rests on, and an :class:`ragim.errors.IntervalWarning` says when that
  is under :data:`MIN_BOOT_SHARE` of those asked for, when the CI is unbounded, when it
  does not contain its own estimate, or (one warning for all of them) when there are fewer
  than :data:`MIN_CLASS_FOR_CI` events or non-events for a bootstrap to resample.
* :func:`adapt_params`: the generated model adapted to the local rows with
  :class:`ragim.ZeroShotClassifier`'s few-shot adaptation (by default the evidence chooses
  between keeping it, an intercept shift, a recalibration and a MAP refit), with the given
  parameters as its prior.

Always score on patients the model was not adapted on: :func:`adapt_params` then
:func:`score_predictions` on the same rows measures the fit, not the validity.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.uniform(0.05, 0.95, 4000); y = (rng.random(4000) < p).astype(int)   # calibrated risks
>>> s = score_predictions(y, p, n_boot=50)
>>> round(s["metrics"]["calibration_slope"]["value"], 1), s["n"]
(1.0, 4000)
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit, logit

from ragim.checks import check_aligned_labels, check_float_array, check_int, check_number
from ragim.errors import DataWarning, IntervalWarning, ValidationError, user_stacklevel
from ragim.metrics import EPS, check_predictions, expected_calibration_error, task_metrics
from ragim.params import ModelParams

#: the metrics :func:`score_predictions` reports, in order, and whether higher is better
SCORES = {
    "auroc": True,
    "log_loss": False,
    "brier": False,
    "ece": False,
    "calibration_slope": None,
    "calibration_intercept": None,
}

#: the share of the requested bootstrap resamples that must give a metric a value; below it
#: :func:`score_predictions` warns (:class:`ragim.errors.IntervalWarning`)
MIN_BOOT_SHARE = 0.9

#: the fewest patients of each outcome for which :func:`score_predictions` reads its bootstrap
#: intervals as intervals: with fewer events (or non-events), every resample holds the same few
#: copied again and again, so the percentiles describe those patients, not the ward; every CI
#: is then marked and one :class:`ragim.errors.IntervalWarning` says why
MIN_CLASS_FOR_CI = 10

_LABELS = {
    "auroc": "AUROC",
    "log_loss": "log-loss",
    "brier": "Brier score",
    "ece": "ECE",
    "calibration_slope": "calibration slope",
    "calibration_intercept": "calibration intercept",
}


def _separation(y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``y`` (0/1, shape (B, n)) whose outcomes the log-odds ``z`` separate: every
    event at or above every non-event (first array), or at or below (second). With one
    predictor that is exactly when the maximum-likelihood slope does not exist (it runs off
    to plus or minus infinity; Albert & Anderson, Biometrika 1984)."""
    ones, zeros = y > 0.5, y < 0.5
    z1_min = np.where(ones, z, np.inf).min(1)
    z1_max = np.where(ones, z, -np.inf).max(1)
    z0_min = np.where(zeros, z, np.inf).min(1)
    z0_max = np.where(zeros, z, -np.inf).max(1)
    return z0_max <= z1_min, z1_max <= z0_min


def calibration_slope_intercept(y_true, y_prob) -> tuple[float, float]:
    """Calibration slope and intercept of predicted risks (Van Calster et al., J Clin
    Epidemiol 2016; Steyerberg, *Clinical Prediction Models*, 2019).

    * slope: the coefficient ``b`` of a logistic regression of the outcome on the
      predicted log-odds ``z`` (``logit P(y) = a + b z``; scikit-learn, no penalty: ``C=inf``). 1 is
      ideal; below 1 the predictions are too extreme, above 1 too modest.
    * intercept (calibration-in-the-large): ``a`` in ``logit P(y) = a + z`` with the slope
      fixed at 1. 0 is ideal; above 0 the model under-predicts the risk on average.

    Outcomes must be 0/1 and risks finite in [0, 1] (:func:`ragim.metrics.check_predictions`,
    else a :class:`ValidationError`); they are clipped to ``[1e-7, 1 - 1e-7]``. Both are NaN
    when the outcomes hold
    one class only; the slope is NaN when every predicted risk is the same, and ``inf``
    (``-inf``) when the risks separate the outcomes, every event at or above (below) every
    non-event: there the likelihood grows without end as the slope does, so no finite slope
    fits.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.05, 0.95, 4000); y = (rng.random(4000) < p).astype(int)
    >>> [round(v, 1) for v in calibration_slope_intercept(y, p / 2)]   # risks halved: too low
    [1.5, 1.3]
    """
    from sklearn.linear_model import LogisticRegression

    y, p = check_predictions(y_true, y_prob)  # as task_metrics: 0/1, finite risks in [0, 1]
    z = logit(np.clip(p, EPS, 1 - EPS))
    if not 0 < y.sum() < y.size:
        return math.nan, math.nan
    intercept = float(brentq(lambda a: float(np.sum(y - expit(a + z))), -60.0, 60.0, xtol=1e-12))
    if np.ptp(z) == 0:  # one predicted risk for everyone: no slope to estimate
        return math.nan, intercept
    above, below = _separation(y[None], z[None])
    if above[0] or below[0]:
        return (math.inf if above[0] else -math.inf), intercept
    slope = float(
        LogisticRegression(C=np.inf, solver="newton-cg", tol=1e-10, max_iter=1000)
        .fit(z[:, None], y)
        .coef_[0, 0]
    )
    return slope, intercept


def _all_scores(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, float]:
    m = task_metrics(y, p)
    slope, intercept = calibration_slope_intercept(y, p)
    return {
        "auroc": m["auroc"],
        "log_loss": m["log_loss"],
        "brier": m["brier"],
        "ece": expected_calibration_error(y, p, n_bins),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }


def batch_scores(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """:data:`SCORES` of many samples at once (rows of ``y`` and ``p``, shape (B, n)).

    The same definitions as :func:`score_predictions`' point estimates (scikit-learn and
    :mod:`ragim.metrics`: AUROC, Brier score and ECE on the risks as given, log-loss and the
    log-odds on risks clipped to ``[1e-7, 1 - 1e-7]``), computed with vectorised numpy so a
    1,000-resample bootstrap takes well under a second: AUROC from average ranks (the
    Mann-Whitney statistic), and the calibration intercept (slope fixed at 1) and slope (the
    two-parameter logistic regression) by Newton's method with a backtracking line search on the
    log-likelihood (:func:`_logistic_mle`), which reaches the maximum from any start whenever it
    exists. The slope is ``inf`` or ``-inf`` where the log-odds separate the outcomes, as in
    :func:`calibration_slope_intercept`. Undefined values (one class, one predicted risk for
    all, a fit that did not converge) are NaN. ``tests/test_validation.py`` checks the
    agreement.
    """
    from scipy.stats import rankdata

    n_bins = check_int(n_bins, "n_bins", ge=1)
    y = np.atleast_2d(np.asarray(y, float))
    raw = np.atleast_2d(np.asarray(p, float))  # AUROC, Brier and ECE read the risks as given
    p = np.clip(raw, EPS, 1 - EPS)  # log-loss and the log-odds: clipped, as task_metrics does
    B, n = y.shape
    n1 = y.sum(1)
    two = (n1 > 0) & (n1 < n)
    ranks = rankdata(raw, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = np.where(two, ((ranks * y).sum(1) - n1 * (n1 + 1) / 2) / (n1 * (n - n1)), np.nan)
    log_loss = -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean(1)
    brier = ((raw - y) ** 2).mean(1)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    bins = (
        np.clip(np.searchsorted(edges, raw, side="right") - 1, 0, int(n_bins) - 1)
        + np.arange(B)[:, None] * n_bins
    )
    sp = np.bincount(bins.ravel(), raw.ravel(), B * n_bins).reshape(B, n_bins)
    sy = np.bincount(bins.ravel(), y.ravel(), B * n_bins).reshape(B, n_bins)
    ece = np.abs(sy - sp).sum(1) / n
    z = logit(p)
    intercept = np.full(B, np.nan)
    if two.any():
        intercept[two] = _logistic_mle(y[two], z[two], slope=False)[0]
    slope = np.full(B, np.nan)
    above, below = _separation(y, z)
    slope[two & above & ~below] = np.inf
    slope[two & below & ~above] = -np.inf  # both: one risk for all, no slope (NaN)
    fit = two & ~above & ~below
    if fit.any():
        slope[fit] = _logistic_mle(y[fit], z[fit], slope=True, a0=intercept[fit])[1]
    return {
        "auroc": auroc,
        "log_loss": log_loss,
        "brier": brier,
        "ece": ece,
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }


def _loglik(y: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bernoulli log-likelihood of each row at log-odds ``eta``, and ``expit(eta)``, from
    one exponential."""
    e = np.exp(-np.abs(eta))
    ll = (y * eta - np.maximum(eta, 0.0) - np.log1p(e)).sum(1)
    return ll, np.where(eta >= 0, 1.0, e) / (1.0 + e)


def _logistic_mle(
    y: np.ndarray, z: np.ndarray, *, slope: bool, a0=None, max_iter: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood ``(a, b)`` of ``logit P(y) = a + b z`` for each row of ``y`` and
    ``z`` (shape (B, n)); with ``slope=False`` ``b`` stays 1 (``z`` is an offset).

    Newton's method from ``a0`` (default: the event rate's log-odds less the mean of ``z``)
    and ``b = 1``, each step halved until it raises the log-likelihood by at least 1e-4 of
    what its quadratic model promises (Armijo). The log-likelihood is concave, so this
    converges from any start when the maximum exists: rows must hold both classes, and
    with ``slope=True`` their ``z`` must not separate them (:func:`_separation`). A row whose
    steps did not shrink below 1e-9 in ``max_iter`` iterations gets NaN.
    """
    B = y.shape[0]
    a = logit(np.clip(y.mean(1), EPS, 1 - EPS)) - z.mean(1) if a0 is None else np.array(a0)
    a = np.where(np.isfinite(a), a, 0.0)
    b = np.ones(B)
    eta = a[:, None] + z
    ll, q = _loglik(y, eta)
    rows = np.arange(B)  # the rows still iterating
    done = np.zeros(B, bool)
    for _ in range(max_iter):
        if rows.size == 0:
            break
        yr, zr, er, qr = y[rows], z[rows], eta[rows], q[rows]
        r, v = yr - qr, qr * (1 - qr)
        ga, h00 = r.sum(1), v.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if slope:
                gb, h01, h11 = (r * zr).sum(1), (v * zr).sum(1), (v * zr * zr).sum(1)
                det = h00 * h11 - h01**2
                da, db = (h11 * ga - h01 * gb) / det, (h00 * gb - h01 * ga) / det
            else:
                gb, da, db = np.zeros(rows.size), ga / h00, np.zeros(rows.size)
        gain = ga * da + gb * db  # the rise in log-likelihood the quadratic model promises
        bad = ~(np.isfinite(da) & np.isfinite(db) & (gain >= 0))  # singular: not converged
        da, db = np.where(bad, 0.0, da), np.where(bad, 0.0, db)
        small = ~bad & (np.maximum(np.abs(da), np.abs(db)) < 1e-9)
        t = np.ones(rows.size)
        ll_old, slack = ll[rows], 1e-12 * (1 + np.abs(ll[rows]))
        for _ in range(60):  # backtracking (Armijo); a rounding slack at the optimum
            trial = er + (t * da)[:, None] + (t * db)[:, None] * zr
            ll_new, q_new = _loglik(yr, trial)
            ok = bad | small | (ll_new >= ll_old + 1e-4 * t * gain - slack)
            if ok.all():
                break
            t = np.where(ok, t, t / 2)
        move = ~bad & ok  # a row with no step that raised the likelihood stops: not converged
        moved = rows[move]
        a[moved] += t[move] * da[move]
        b[moved] += t[move] * db[move]
        eta[moved], ll[moved], q[moved] = trial[move], ll_new[move], q_new[move]
        done[rows[small]] = True
        rows = rows[move & ~small]
    return np.where(done, a, np.nan), np.where(done, b, np.nan)


def _percentile(d: np.ndarray, q: float) -> float:
    """``np.quantile(d, q)`` (linear interpolation) of sorted ``d``, which may hold ``inf``
    and ``-inf``: a quantile that leans on an infinite value is that infinity."""
    h = (d.size - 1) * q
    i, j = math.floor(h), math.ceil(h)
    lo, hi = float(d[i]), float(d[j])
    if math.isfinite(lo) and math.isfinite(hi):
        return lo + (h - i) * (hi - lo)
    return lo if (h == i or math.isinf(lo)) else hi


def score_predictions(
    y_true,
    y_prob,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_bins: int = 10,
    X: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Score predicted risks on observed outcomes, with percentile bootstrap CIs.

    The patients are resampled with replacement. When they hold both outcomes, a resample
    that holds one only (no AUROC, slope or intercept) is drawn again, so that every metric
    is read on the same resamples, all with both outcomes; the draws stop at 50 times
    ``n_boot``. A metric's CI is read on the resamples where it has a value, and says how
    many those were: a slope of ``inf`` or ``-inf`` (the resampled risks separate the
    outcomes, see :func:`calibration_slope_intercept`) is a value, and makes the interval
    unbounded once it passes the tail; NaN (one risk for all, a fit that did not converge)
    is not. The percentile interval is kept, rather than BCa, because it stays defined
    with infinite slopes and when the estimate lies outside the resampled values, where
    BCa's bias correction is infinite; such an interval is reported as not valid instead.

    Parameters
    ----------
    y_true : 0/1 outcomes, shape (n,).
    y_prob : predicted P(y = 1), shape (n,).
    n_boot : bootstrap resamples of the patients to draw (0: no intervals).
    level : the confidence level of the intervals.
    seed : seed of the resampling.
    n_bins : ECE bins (equal-width, as in :func:`ragim.metrics.expected_calibration_error`).
    X : the patients' features, one row per outcome (optional; a pandas ``y_true`` whose
        index holds its row labels in another order is refused): given, rows that repeat
        another exactly (every feature and the outcome) warn when there are many, since the
        CIs resample each copy as another patient (:func:`ragim.rows.warn_repeated_rows`;
        leave it out when the rows have distinct patient ids).

    Returns
    -------
    dict
        ``n``, ``n_positive``, ``prevalence``, ``mean_risk``, ``n_boot_requested``,
        ``n_boot_redrawn`` (resamples of one outcome drawn again), ``level`` and
        ``metrics``: for each of :data:`SCORES` a dict ``value`` (scikit-learn and
        :mod:`ragim.metrics` on all rows), ``ci_low``, ``ci_high`` (percentiles of
        :func:`batch_scores` over the resamples; NaN when undefined, e.g. AUROC with one
        class, or with fewer than 2 resamples), ``n_boot`` (the resamples in which it had a
        value: the CI rests on these) and ``ci_warning`` (None, or why the CI is not what
        its level claims). The top-level ``ci_warning``: None, or why no CI is valid (fewer
        than :data:`MIN_CLASS_FOR_CI` patients of one outcome).

    Warns
    -----
    IntervalWarning
        For each metric with a value whose CI rests on fewer than :data:`MIN_BOOT_SHARE` of
        the ``n_boot`` resamples, is unbounded, or does not contain that value (the same
        text as its ``ci_warning``); and once, naming every metric, when fewer than
        :data:`MIN_CLASS_FOR_CI` patients have the rarer outcome: every resample repeats
        those few, so the percentiles describe them rather than the patients' spread, and
        each metric's ``ci_warning`` marks its CI as not valid.
    DataWarning
        With ``X``, when many rows are exact copies of another
        (:func:`ragim.rows.warn_repeated_rows`); and when every patient has one outcome,
        naming the metrics left without a value.
    """
    check_aligned_labels(X, y_true)
    n_bins = check_int(n_bins, "n_bins", ge=1)
    y = check_float_array(y_true, "y_true", what="0/1 outcomes")
    p = check_float_array(y_prob, "y_prob", what="probabilities")
    if X is not None:
        from ragim.rows import warn_repeated_rows

        if len(X) != y.size:
            raise ValidationError(f"X has {len(X)} rows but y_true has {y.size}")
        warn_repeated_rows(X, y, where="the rows to score")
    n_boot = check_int(n_boot, "n_boot", ge=0)
    level = check_number(level, "level", gt=0, lt=1)
    point = _all_scores(y, p, n_bins)  # validates y and p
    both = 0 < y.sum() < y.size
    if not both:  # blank cells of `ragim score`, said
        warnings.warn(
            f"all {y.size} patients have outcome {int(y[0])}: AUROC and the calibration slope "
            "and intercept need patients of both outcomes, so they have no value; if this "
            "site has both, check the outcome column (and its pos_label)",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    rng = np.random.default_rng(seed)
    draws: dict[str, list] = {k: [] for k in SCORES}
    chunk = max(1, 2_000_000 // max(y.size, 1))
    kept = drawn = 0
    while kept < n_boot and drawn < 50 * n_boot:
        b = min(chunk, n_boot - kept)
        idx = rng.integers(0, y.size, (b, y.size))
        drawn += b
        if both:  # one outcome only: drawn again
            n1 = y[idx].sum(1)
            idx = idx[(n1 > 0) & (n1 < y.size)]
        if len(idx) == 0:
            continue
        kept += len(idx)
        for k, v in batch_scores(y[idx], p[idx], n_bins).items():
            draws[k].append(v)
    alpha = (1 - level) / 2
    pct = f"{100 * level:g}%"
    few = _few_outcomes(y, n_boot, drawn, kept, point)
    metrics = {}
    for k, v in point.items():
        d = np.sort(np.concatenate(draws[k])) if draws[k] else np.empty(0)
        d = d[~np.isnan(d)]  # inf and -inf (separation) are values
        lo, hi = (
            (_percentile(d, alpha), _percentile(d, 1 - alpha)) if d.size >= 2 else (math.nan,) * 2
        )
        notes = []
        if n_boot and not math.isnan(v):
            name = _LABELS[k]
            if d.size < MIN_BOOT_SHARE * n_boot:
                notes.append(
                    f"{name}: only {d.size} of the {n_boot} bootstrap resamples gave a value "
                    f"(under {MIN_BOOT_SHARE:.0%}); its {pct} CI rests on those {d.size} and "
                    "is less reliable than its level says"
                )
            if math.isinf(lo) or math.isinf(hi):
                n_inf = int(np.isinf(d).sum())
                notes.append(
                    f"{name}: in {n_inf} of {d.size} bootstrap resamples the predicted risks "
                    f"separate the outcomes (an infinite slope), so its {pct} CI is unbounded"
                )
            elif d.size >= 2 and not lo <= v <= hi:
                side = "above" if lo > v else "below"
                notes.append(
                    f"{name}: its {pct} percentile bootstrap CI ({lo:.3g} to {hi:.3g}) does not "
                    f"contain its value {v:.3g}, so it is not a valid {pct} CI: the resampled "
                    f"values lie {side} it (a metric biased under resampling, as the ECE is, or "
                    "too few patients or events)"
                )
        for note in notes:
            warnings.warn(note, IntervalWarning, stacklevel=user_stacklevel())
        if few and k in few["metrics"]:
            notes.append(f"{_LABELS[k]}: {few['short']}")
        metrics[k] = {
            "value": v,
            "ci_low": lo,
            "ci_high": hi,
            "n_boot": int(d.size),
            "ci_warning": "; ".join(notes) or None,
        }
    if few:
        warnings.warn(few["text"], IntervalWarning, stacklevel=user_stacklevel())
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "prevalence": float(y.mean()),
        "mean_risk": float(p.mean()),
        "n_boot_requested": int(n_boot),
        "n_boot_redrawn": int(drawn - kept) if both else 0,
        "level": float(level),
        "ci_warning": few["text"] if few else None,
        "metrics": metrics,
    }


def _few_outcomes(
    y: np.ndarray, n_boot: int, drawn: int, kept: int, point: dict[str, float]
) -> dict[str, Any] | None:
    """Why no bootstrap CI of :func:`score_predictions` means what it says when the rarer
    outcome has fewer than :data:`MIN_CLASS_FOR_CI` patients: ``text`` (the one warning),
    ``short`` (each metric's mark) and ``metrics`` (those with a value); None otherwise."""
    n_event = int(y.sum())
    n_rare = min(n_event, y.size - n_event)
    if not n_boot or n_rare == 0 or n_rare >= MIN_CLASS_FOR_CI:
        return None
    noun = ("event" if n_rare == n_event else "non-event") + ("" if n_rare == 1 else "s")
    them = "that patient" if n_rare == 1 else "those patients"
    lacked = "lacked that patient" if n_rare == 1 else "held none of them"
    keys = [k for k, v in point.items() if not math.isnan(v)]
    names = [_LABELS[k] for k in keys]
    where = f"{n_rare} {noun} in {y.size} patients"
    redrawn = drawn - kept
    return {
        "metrics": keys,
        "short": f"rests on {where}, too few for a bootstrap interval (fewer than "
        f"{MIN_CLASS_FOR_CI}); not a valid CI",
        "text": f"{where}: too few for a bootstrap interval of "
        + (", ".join(names[:-1]) + " or " if len(names) > 1 else "")
        + names[-1]
        + f" (fewer than {MIN_CLASS_FOR_CI} {noun.removesuffix('s')}s): the resamples can only "
        f"repeat {them}"
        + (f", and {redrawn} of {drawn} {lacked} and were drawn again" if redrawn else "")
        + "; those CIs are marked and are not valid CIs; score on more patients",
    }


def adapt_params(
    params: ModelParams,
    X: pd.DataFrame,
    y,
    *,
    adaptation: str = "auto",
    pos_label=None,
    patient_ids=None,
) -> ModelParams:
    """Adapt a model to a few local labelled rows, as :class:`ragim.ZeroShotClassifier` does.

    The given parameters are the prior. ``adaptation="auto"`` (default) lets the evidence on
    the rows choose between keeping the model, shifting its intercept, recalibrating it (an
    intercept shift and one positive scale on its log-odds) and a MAP refit of every
    coefficient centred on it, and keeps the model when the rows cannot tell them apart;
    ``"recalibrate"``, ``"map"`` (or ``"intercept"``, ``"zero-shot"``) force one, and
    ``"prior"`` updates every coefficient under the model's own SDs (``params.std``). See
    :mod:`ragim.adaptation`.

    Parameters
    ----------
    params : the model to adapt (logistic or GAM).
    X : the local patients, the model's feature columns.
    y : their outcomes, shape (len(X),): 0/1 in any form (1, 1.0, "1", True), or any two
        labels with ``pos_label``; paired with ``X`` by position, so a pandas Series whose
        index holds ``X``'s row labels in another order is refused
        (:func:`ragim.checks.check_aligned_labels`).
    adaptation : "auto", "recalibrate", "prior", "map", "intercept" or "zero-shot".
    pos_label : the label of ``y`` that marks the event (needed for labels such as
        "yes"/"no").
    patient_ids : the rows' patient ids, when known (distinct, else refused): rows with
        distinct ids are different patients. Without them, many rows that repeat another
        exactly (every feature and the outcome) warn (:func:`ragim.rows.warn_repeated_rows`):
        the evidence would count each copy as another patient.

    Returns
    -------
    ModelParams
        Metadata: ``source`` ("adapted" unless the model was kept), ``adaptation`` (the
        candidate used), ``k_shot`` (rows used), ``prior_source``, ``adaptation_report``
        (:func:`ragim.adaptation.adapt`'s report) and the prior's provenance.

    Warns
    -----
    AdaptationWarning
        When the adaptation moved a coefficient across zero or scaled the log-odds by more
        than :data:`ragim.adaptation.SCALE_WARN_FACTOR` either way.
    DataWarning
        Without ``patient_ids``, when many rows are exact copies of another.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from ragim.schema import FeatureSchema
    >>> X = pd.DataFrame({"age": np.linspace(40, 80, 30)})
    >>> schema = FeatureSchema.infer(X).fit(X)
    >>> prior = ModelParams.from_dict("logistic", schema, {"intercept": -2.0, "age": 1.0})
    >>> y = (np.arange(30) % 3 != 0).astype(int)        # far more positives than the prior expects
    >>> bool(adapt_params(prior, X, y).intercept > -2.0)
    True
    """
    from ragim.adaptation import ORDER
    from ragim.estimator import adapt_prior
    from ragim.tasks import binary_outcome

    if not isinstance(params, ModelParams):
        raise ValidationError(f"adapt_params needs ModelParams, got {type(params).__name__}")
    if adaptation not in ("auto", *ORDER):
        raise ValidationError(f"adaptation must be one of {['auto', *ORDER]}, got {adaptation!r}")
    if len(X) == 0:
        raise ValidationError("cannot adapt on zero rows")
    check_aligned_labels(X, y)
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise ValidationError(
            f"X has {len(X)} rows but y has shape {y.shape}; give one outcome per row"
        )
    classes = np.unique(y[pd.notna(y)]) if y.dtype == object else np.unique(y)
    if len(classes) < 2:
        only = classes[0] if len(classes) else "none"
        raise ValidationError(
            f"the {len(y)} rows to adapt on all have outcome {only}; adapting on one outcome "
            "would only drag every risk towards it; add patients with the other outcome"
        )
    y01 = binary_outcome(y, pos_label=pos_label, where="the outcome to adapt on").astype(float)
    if patient_ids is None:
        from ragim.rows import warn_repeated_rows

        warn_repeated_rows(X, y01, where="the rows to adapt on")
    elif len(patient_ids) != len(X) or pd.Series(list(patient_ids)).duplicated().any():
        raise ValidationError(
            f"patient_ids must give {len(X)} distinct ids, one per row of X; a patient on "
            "several rows would count as several"
        )
    if isinstance(X, pd.DataFrame):  # codes and far values would be fitted as measurements
        params.schema.warn_new_rows(X, where="the rows to adapt on")
    adapted, report = adapt_prior(params, X, y01, adaptation=adaptation, warn=True)
    return adapted.replace(metadata={"adaptation_report": report})


__all__ = [
    "MIN_BOOT_SHARE",
    "MIN_CLASS_FOR_CI",
    "SCORES",
    "adapt_params",
    "batch_scores",
    "calibration_slope_intercept",
    "score_predictions",
]
