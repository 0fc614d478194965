"""Local validation of a model on a hospital's own labelled patients: score it, adapt it.

The README insists that a zero-shot model be validated locally before any use. This
module is what ``ragim score`` and ``ragim adapt`` run:

* :func:`score_predictions`: discrimination and calibration of predicted risks against
  observed 0/1 outcomes, each with a percentile bootstrap 95% CI over patients:
  AUROC, log-loss, Brier score and ECE (:func:`ragim.metrics.task_metrics`), and the
  calibration slope and intercept (:func:`calibration_slope_intercept`).
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
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit, logit

from ragim.checks import check_int, check_number
from ragim.errors import ValidationError
from ragim.metrics import EPS, expected_calibration_error, task_metrics
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


def calibration_slope_intercept(y_true, y_prob) -> tuple[float, float]:
    """Calibration slope and intercept of predicted risks (Van Calster et al., J Clin
    Epidemiol 2016; Steyerberg, *Clinical Prediction Models*, 2019).

    * slope: the coefficient ``b`` of a logistic regression of the outcome on the
      predicted log-odds ``z`` (``logit P(y) = a + b z``; scikit-learn, no penalty: ``C=inf``). 1 is
      ideal; below 1 the predictions are too extreme, above 1 too modest.
    * intercept (calibration-in-the-large): ``a`` in ``logit P(y) = a + z`` with the slope
      fixed at 1. 0 is ideal; above 0 the model under-predicts the risk on average.

    Probabilities are clipped to ``[1e-7, 1 - 1e-7]``. Both are NaN when the outcomes hold
    one class only; the slope is NaN when every predicted risk is the same.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.05, 0.95, 4000); y = (rng.random(4000) < p).astype(int)
    >>> [round(v, 1) for v in calibration_slope_intercept(y, p / 2)]   # risks halved: too low
    [1.5, 1.3]
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y_true, dtype=float).reshape(-1)
    z = logit(np.clip(np.asarray(y_prob, dtype=float).reshape(-1), EPS, 1 - EPS))
    if y.shape != z.shape or y.size == 0:
        raise ValidationError(
            f"need one predicted risk per outcome, got {z.size} risks for {y.size} outcomes"
        )
    if not 0 < y.sum() < y.size:
        return math.nan, math.nan
    intercept = float(brentq(lambda a: float(np.sum(y - expit(a + z))), -60.0, 60.0, xtol=1e-12))
    if np.ptp(z) == 0:  # one predicted risk for everyone: no slope to estimate
        return math.nan, intercept
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
    :mod:`ragim.metrics`), computed with vectorised numpy so a 1,000-resample bootstrap
    takes well under a second: AUROC from average ranks (the Mann-Whitney statistic), the
    calibration intercept by Newton's method with the slope fixed at 1, and the slope by
    Newton's method on the two-parameter logistic regression started from there (steps
    clipped to 5). Undefined values (one class, no
    convergence) are NaN. ``tests/test_validation.py`` checks the agreement.
    """
    from scipy.stats import rankdata

    y = np.atleast_2d(np.asarray(y, float))
    p = np.clip(np.atleast_2d(np.asarray(p, float)), EPS, 1 - EPS)
    B, n = y.shape
    n1 = y.sum(1)
    two = (n1 > 0) & (n1 < n)
    ranks = rankdata(p, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = np.where(two, ((ranks * y).sum(1) - n1 * (n1 + 1) / 2) / (n1 * (n - n1)), np.nan)
    log_loss = -(y * np.log(p) + (1 - y) * np.log1p(-p)).mean(1)
    brier = ((p - y) ** 2).mean(1)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    bins = (
        np.clip(np.searchsorted(edges, p, side="right") - 1, 0, int(n_bins) - 1)
        + np.arange(B)[:, None] * n_bins
    )
    sp = np.bincount(bins.ravel(), p.ravel(), B * n_bins).reshape(B, n_bins)
    sy = np.bincount(bins.ravel(), y.ravel(), B * n_bins).reshape(B, n_bins)
    ece = np.abs(sy - sp).sum(1) / n
    z = logit(p)
    a = np.zeros(B)  # a of logit P(y) = a + z (slope fixed at 1), by Newton's method
    for _ in range(100):
        q1 = expit(a[:, None] + z)
        da = (y - q1).sum(1) / np.maximum((q1 * (1 - q1)).sum(1), 1e-300)
        a = a + np.clip(da, -5.0, 5.0)
        if np.all(np.abs(da) < 1e-10):
            break
    w = np.stack([a, np.ones(B)], 1)  # [a, b] of logit P(y) = a + b z, Newton's method from there
    for _ in range(100):
        q = expit(w[:, :1] + w[:, 1:] * z)
        r, v = y - q, q * (1 - q)
        g = np.stack([r.sum(1), (r * z).sum(1)], 1)
        h00, h01, h11 = v.sum(1), (v * z).sum(1), (v * z * z).sum(1)
        det = h00 * h11 - h01**2
        with np.errstate(invalid="ignore", divide="ignore"):
            step = np.stack(
                [(h11 * g[:, 0] - h01 * g[:, 1]) / det, (h00 * g[:, 1] - h01 * g[:, 0]) / det], 1
            )
        step = np.where(np.isfinite(step), np.clip(step, -5.0, 5.0), np.nan)
        w = w + np.nan_to_num(step)
        if np.all(~np.isfinite(step) | (np.abs(step) < 1e-10)):
            break
    converged = np.all(np.abs(step) < 1e-6, axis=1)  # NaN steps (a singular Hessian) count as not
    slope = np.where(two & converged, w[:, 1], np.nan)
    intercept = np.where(two, a, np.nan)
    return {
        "auroc": auroc,
        "log_loss": log_loss,
        "brier": brier,
        "ece": ece,
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }


def score_predictions(
    y_true, y_prob, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0, n_bins: int = 10
) -> dict[str, Any]:
    """Score predicted risks on observed outcomes, with percentile bootstrap CIs.

    Parameters
    ----------
    y_true : 0/1 outcomes, shape (n,).
    y_prob : predicted P(y = 1), shape (n,).
    n_boot : bootstrap resamples of the patients (0: no intervals).
    level : the confidence level of the intervals.
    seed : seed of the resampling.
    n_bins : ECE bins (equal-width, as in :func:`ragim.metrics.expected_calibration_error`).

    Returns
    -------
    dict
        ``n``, ``n_positive``, ``prevalence``, ``mean_risk``, ``n_boot``, ``level`` and
        ``metrics``: for each of :data:`SCORES` a dict ``value`` (scikit-learn and
        :mod:`ragim.metrics` on all rows), ``ci_low``, ``ci_high`` (percentiles of
        :func:`batch_scores` over the resamples; NaN when undefined, e.g. AUROC with one
        class) and ``n_boot`` (resamples in which it was defined).
    """
    y = np.asarray(y_true, dtype=float).reshape(-1)
    p = np.asarray(y_prob, dtype=float).reshape(-1)
    n_boot = check_int(n_boot, "n_boot", ge=0)
    level = check_number(level, "level", gt=0, lt=1)
    point = _all_scores(y, p, n_bins)  # validates y and p
    rng = np.random.default_rng(seed)
    draws: dict[str, list] = {k: [] for k in SCORES}
    chunk = max(1, 2_000_000 // max(y.size, 1))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, y.size, (b, y.size))
        for k, v in batch_scores(y[idx], p[idx], n_bins).items():
            draws[k].append(v)
        done += b
    alpha = (1 - level) / 2
    metrics = {}
    for k, v in point.items():
        d = np.concatenate(draws[k]) if draws[k] else np.empty(0)
        d = d[np.isfinite(d)]
        lo, hi = (
            (float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha)))
            if d.size >= 2
            else (math.nan,) * 2
        )
        metrics[k] = {"value": v, "ci_low": lo, "ci_high": hi, "n_boot": int(d.size)}
    return {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "prevalence": float(y.mean()),
        "mean_risk": float(p.mean()),
        "n_boot": int(n_boot),
        "level": float(level),
        "metrics": metrics,
    }


def adapt_params(
    params: ModelParams, X: pd.DataFrame, y, *, adaptation: str = "auto", pos_label=None
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
        labels with ``pos_label``.
    adaptation : "auto", "recalibrate", "prior", "map", "intercept" or "zero-shot".
    pos_label : the label of ``y`` that marks the event (needed for labels such as
        "yes"/"no").

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
    adapted, report = adapt_prior(params, X, y01, adaptation=adaptation, warn=True)
    return adapted.replace(metadata={"adaptation_report": report})


__all__ = [
    "SCORES",
    "adapt_params",
    "batch_scores",
    "calibration_slope_intercept",
    "score_predictions",
]
