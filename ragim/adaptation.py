"""Few-shot adaptation of a generated model to k labelled rows, chosen by the evidence.

A generated model ``theta0`` (intercept + terms, log-odds ``z0 = theta0_0 + D theta0_terms``)
is the prior; the k rows may change it in one of four nested ways, each a Bayesian
logistic model whose Laplace-approximated marginal likelihood (the *evidence*) the rows
score:

* ``"zero-shot"``: keep ``theta0`` (no free parameter; its evidence is the rows' log-likelihood).
* ``"intercept"``: ``z = z0 + a``, ``a ~ N(0, s^2)`` (the event rate differs between hospitals).
* ``"recalibrate"``: ``z = z0 + a + (b - 1)(z0 - theta0_0)`` with ``b = exp(beta)``,
  ``beta ~ N(0, (s/2)^2)``: one intercept shift and one positive scale on the generated
  log-odds. ``b > 0`` by construction, so a handful of unlucky rows can weaken the
  generated model, never reverse it.
* ``"prior"``: every coefficient moves under the generator's own prior,
  ``theta ~ N(theta0, diag(std) R diag(std))`` with the SDs and correlations ``R`` the generator
  reports (the identity without them; a Bayesian update of
  the generated model; only when those SDs are given, and only when asked for by name or
  preferred by a policy validated in the index, ``prefer``: it is not one of the :data:`AUTO`
  candidates). A coefficient the generator is sure of barely
  moves; an uncertain one follows the rows.
* ``"map"``: every coefficient moves, ``theta ~ N(theta0, diag(1/lambda, ..))`` with the
  intercept's precision ``lambda * intercept_ratio``. With many rows the data dominate,
  so it tends to the per-task maximum-likelihood fit; a coefficient crosses zero only
  when the rows outweigh the prior.

The prior scales ``s`` (:data:`RECAL_SCALES`) and ``lambda`` (:data:`LAMBDA_GRID`) are
integrated out under a uniform prior over their grid, so a candidate's evidence pays for
its flexibility (Occam's factor; MacKay 1992, "The evidence framework applied to
classification networks"). :func:`choose` keeps the *simplest* candidate whose log
evidence is within :data:`EVIDENCE_MARGIN` of the best: when the rows cannot tell the
candidates apart, the zero-shot model stays. A candidate that *reverses* the generated
model (its terms point against the generated ones: :func:`log_odds_scale` < 0, possible only
for ``"prior"`` and ``"map"``) is eligible only with overwhelming evidence: a log Bayes factor
of at least :data:`REVERSAL_MARGIN` (ln 1000, prior odds of 1000 to 1 that the generated
model is not anti-predictive at the site) over the best candidate that keeps its direction. A
handful of unlucky or selected rows cannot reach that; hundreds of rows from a site where the
model is really wrong can. Rows of one class say nothing about which patients are at higher
risk, so only ``"zero-shot"`` and ``"intercept"`` compete then.

:func:`adapt` runs the whole choice and returns the adapted parameters with a report:
which candidate won, every candidate's evidence, the intercept shift, the log-odds scale,
the coefficients that crossed zero, and the warnings it raised
(:class:`~ragim.errors.AdaptationWarning`). The chosen candidate's SDs are the adapted
parameters' posterior SDs: ``"intercept"`` and ``"recalibrate"`` keep the generated terms
(times ``b``), so a term's SD combines its generated SD with the uncertainty of ``b``
(:func:`recalibration`); ``"prior"`` and ``"map"`` give their Laplace posterior's, with the
prior scale ``s`` or ``lambda`` integrated out where the evidence chose it.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> D = rng.normal(size=(8, 2)); theta0 = np.array([0.0, 1.5, -1.0])
>>> y = (rng.random(8) < 1 / (1 + np.exp(-(D @ theta0[1:])))).astype(float)
>>> cands = candidates(D, y, theta0)
>>> sorted(cands)
['intercept', 'map', 'recalibrate', 'zero-shot']
>>> choose(cands) in cands
True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit

from ragim.errors import AdaptationWarning, ValidationError, user_stacklevel
from ragim.models.map import map_logistic, map_logistic_path, newton_map
from ragim.params import std_and_correlation

#: scales ``s`` of the recalibration prior: intercept shift ``a ~ N(0, s^2)``, log-slope
#: ``log b ~ N(0, (s/2)^2)``; integrated out with equal prior weight
RECAL_SCALES = (0.25, 0.5, 1.0, 2.0)
#: prior precisions ``lambda`` of the MAP candidate; integrated out with equal prior weight
LAMBDA_GRID = np.logspace(-2, 3, 21)
#: a richer candidate must beat a simpler one by this log Bayes factor (1 nat: "positive"
#: evidence on Kass & Raftery's 1995 scale, 2 ln BF > 2)
EVIDENCE_MARGIN = 1.0
#: a candidate that reverses the generated model must beat every candidate that keeps its
#: direction by this log Bayes factor (ln 1000; "decisive" on Jeffreys' scale starts at ln 100)
REVERSAL_MARGIN = float(np.log(1000.0))
#: a log-odds scale outside ``[1/f, f]`` of the generated model's is reported
SCALE_WARN_FACTOR = 2.0
#: coefficients smaller than this (log-odds per design unit) count as zero when looking for
#: coefficients that crossed zero
SIGN_TOLERANCE = 0.01
#: candidates from the simplest to the richest
ORDER = ("zero-shot", "intercept", "recalibrate", "prior", "map")
#: the candidates ``adaptation="auto"`` chooses among (``"prior"`` is asked for by name: with
#: a handful of rows it can do worse than the generated model; docs/benchmarks.md, MAP-prior)
AUTO = ("zero-shot", "intercept", "recalibrate", "map")


@dataclass
class Candidate:
    """One way of adapting: its parameters, their posterior SDs and its log evidence (and,
    for the Laplace fits, the correlations of the parameters' errors)."""

    name: str
    theta: np.ndarray
    std: np.ndarray | None
    log_evidence: float
    detail: dict[str, Any] = field(default_factory=dict)
    correlation: np.ndarray | None = None


def _laplace(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior SDs and correlations from the Hessian of a MAP fit (its inverse)."""
    return std_and_correlation(np.linalg.inv(H))


def _grid_covariance(evs: np.ndarray, points: np.ndarray, hessians: np.ndarray, best: int):
    """The posterior covariance with a grid's hyper-parameter integrated out under a uniform
    prior over the grid, about the parameters at its most probable point ``best``: the
    evidence-weighted mean of ``H^-1 + (x - x_best)(x - x_best)'`` over the grid (the law of
    total variance). The Laplace covariance at ``best`` alone takes that hyper-parameter as
    known and is too narrow when the rows cannot pin it down. A grid point whose Hessian is not
    positive definite (a fit that did not converge) is left out."""
    keep = np.all(np.linalg.eigvalsh(hessians) > 0, axis=1)
    keep[best] = True
    evs, points, hessians = evs[keep], points[keep], hessians[keep]
    w = np.exp(evs - np.max(evs))
    w /= w.sum()
    dev = points - points[int(keep[:best].sum())]  # best's place among those kept
    C = np.einsum("l,lij->ij", w, np.linalg.inv(hessians)) + np.einsum("l,li,lj->ij", w, dev, dev)
    return (C + C.T) / 2


def log_likelihood(z: np.ndarray, y: np.ndarray) -> float:
    """Bernoulli log-likelihood (summed) of 0/1 outcomes ``y`` under log-odds ``z``, computed
    stably (``log(1 + e^z)`` by ``logaddexp``)."""
    return float(np.sum(y * z - np.logaddexp(0.0, z)))


def _log_mean_exp(evs: np.ndarray) -> float:
    """``log(mean(exp(evs)))``, stably: the evidence with a grid's hyper-parameter integrated
    out under a uniform prior over the grid (numpy's ``logaddexp.reduce``: scipy's
    ``logsumexp`` costs 0.4 ms a call, most of a small candidate's fit)."""
    return float(np.logaddexp.reduce(evs) - np.log(len(evs)))


def _recal_fit(
    z0t: np.ndarray, y: np.ndarray, base: float, a_sd: np.ndarray, beta_sd: np.ndarray | None
):
    """MAP of (a[, beta]) under each prior scale at once (``a_sd``, ``beta_sd``: shape (S,)),
    the Hessians of the negative log posterior there and the Laplace log evidences:
    shapes (S, m), (S, m, m), (S,) with m = 2 with a slope, else 1."""
    slope = beta_sd is not None
    prec = np.column_stack([1 / a_sd**2] + ([1 / beta_sd**2] if slope else []))

    def parts(X, rows):
        U = (np.exp(X[:, 1:2]) if slope else np.ones((len(X), 1))) * z0t
        Z = base + X[:, :1] + U
        P = expit(Z)
        R, W = P - y, P * (1 - P)
        f = np.sum(np.logaddexp(0.0, Z) - y * Z, axis=1) + 0.5 * np.sum(prec[rows] * X**2, axis=1)
        if slope:
            g = np.column_stack([R.sum(1), np.sum(R * U, 1)])
            wu = np.sum(W * U, 1)
            h = np.stack(
                [
                    np.column_stack([W.sum(1), wu]),
                    np.column_stack([wu, np.sum(W * U * U, 1) + g[:, 1]]),
                ],
                axis=1,
            )
        else:
            g, h = R.sum(1)[:, None], W.sum(1)[:, None, None]
        return f, g + prec[rows] * X, h + prec[rows][:, :, None] * np.eye(X.shape[1])

    X = np.zeros(prec.shape)
    every = np.arange(len(X))
    f, g, H = parts(X, every)
    active = every
    # Newton with a step halving (and a gradient step where H is not definite); a trial step
    # may overflow exp(): it is halved, so the overflow warnings are silenced
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(100):
            if not len(active):
                break
            Xa, ga, Ha = X[active], g[active], H[active]
            definite = np.all(np.linalg.eigvalsh(Ha) > 1e-12, axis=1)
            step = ga / np.max(np.diagonal(Ha, axis1=1, axis2=2), axis=1)[:, None]
            if definite.any():
                step[definite] = np.linalg.solve(Ha[definite], ga[definite][:, :, None])[:, :, 0]
            t = np.ones(len(active))
            while True:
                f_new, g_new, H_new = parts(Xa - t[:, None] * step, active)
                # not "<=": a step that overflows (NaN) is halved too, as the scalar loop did
                worse = ~(f_new <= f[active] + 1e-12) & (t >= 1e-8)
                if not worse.any():
                    break
                t[worse] /= 2
            moved = t[:, None] * step
            X[active], f[active], g[active], H[active] = Xa - moved, f_new, g_new, H_new
            done = (np.max(np.abs(moved), axis=1) < 1e-10) | (np.max(np.abs(g_new), axis=1) < 1e-9)
            active = active[~done]
    ev = -f + 0.5 * np.sum(np.log(prec), axis=1) - 0.5 * np.linalg.slogdet(H)[1]
    return X, H, ev


def recalibration(
    D: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    *,
    slope: bool = True,
    scales=RECAL_SCALES,
    slope_ratio: float = 0.5,
    prior_std: np.ndarray | None = None,
    prior_correlation: np.ndarray | None = None,
) -> Candidate:
    """The ``"recalibrate"`` candidate (``slope=False``: ``"intercept"``): ``a ~ N(0, s^2)``,
    ``log b ~ N(0, (slope_ratio * s)^2)``, the prior scale ``s`` integrated out over ``scales``;
    the parameters are those at the most probable scale, their (Laplace) covariance that of
    the posterior with ``s`` integrated out, about them.

    The rows fit only ``a`` and ``b``; each term stays the generated ``beta_j`` times ``b``, so
    its SD carries both uncertainties: the generated ``sigma_j`` (``prior_std``, the
    generator's SD of each parameter, with ``prior_correlation`` between them when given) and
    the Laplace variance ``v`` of ``log b``, ``beta_j ~ N(beta0_j, sigma_j^2)`` independent of
    ``b``. With the delta-method moments of ``b`` (mean ``b``, variance ``b^2 v``), the exact
    variance of a product of independent factors gives

    ``Var(b beta_j) = b^2 sigma_j^2 (1 + v) + b^2 beta0_j^2 v``,

    never below ``(b sigma_j)^2``: a common scale fitted on a few rows does not shrink what
    the generator did not know about each term (``"intercept"``: ``b = 1``, ``v = 0``, the
    terms keep their generated SDs). The intercept ``theta0_0 + a`` is refitted to the rows'
    level given the terms, so the terms' errors pass into it: its variance is the Laplace
    variance of ``a`` plus ``b^2 m' Sigma m``, ``m`` the rows' weighted mean design row
    (``m = sum w_i d_i / (sum w_i + 1/s^2)``, ``w_i = p_i (1 - p_i)`` at the fit: minus the
    change of ``a`` per unit change of the terms' log-odds) and ``Sigma`` the terms' generated
    covariance. The candidate's ``correlation`` holds the covariances between them (the
    shared ``b`` correlates every term with every other).

    Without ``prior_std`` the terms' uncertainty is unknown and the candidate has no SDs
    (``std`` None): an interval from ``b`` alone would treat every generated coefficient as
    exact.

    Returns a :class:`Candidate` whose ``detail`` holds ``intercept_shift``, ``scale`` (the
    slope ``b`` on the generated log-odds), ``log_scale_sd`` (``sqrt(v)``; 0 without a slope)
    and ``prior_scale`` (``s``).

    Examples
    --------
    >>> D = np.array([[-1.0], [0.0], [1.0], [2.0]]); y = np.array([0.0, 1.0, 1.0, 1.0])
    >>> c = recalibration(D, y, np.array([-1.0, 1.0]), prior_std=np.array([0.5, 0.3]))
    >>> bool(c.theta[0] > -1.0), bool(c.detail["scale"] > 0)
    (True, True)
    >>> bool(c.std[1] >= c.detail["scale"] * 0.3)  # never below b times the generated SD
    True
    >>> recalibration(D, y, np.array([-1.0, 1.0])).std is None  # no generated SDs: none
    True
    """
    theta0 = np.asarray(theta0, dtype=float)
    z0t = D @ theta0[1:]
    sds = np.asarray(scales, dtype=float)
    X, Hs, evs = _recal_fit(z0t, y, float(theta0[0]), sds, slope_ratio * sds if slope else None)
    best = int(np.argmax(evs))
    s, x = sds[best], X[best]
    cov = _grid_covariance(evs, X, Hs, best)
    b = float(np.exp(x[1])) if slope else 1.0
    v = float(cov[1, 1]) if slope else 0.0
    theta = np.concatenate([[theta0[0] + x[0]], b * theta0[1:]])
    std = corr = None
    if prior_std is not None:
        beta0 = theta0[1:]
        sig = np.asarray(prior_std, dtype=float)[1:]
        R = (
            np.eye(len(sig))
            if prior_correlation is None
            else np.asarray(prior_correlation, dtype=float)[1:, 1:]
        )
        Sigma = R * np.outer(sig, sig)
        p = expit(theta[0] + b * z0t)
        w = p * (1 - p)
        m = (w @ D) / (w.sum() + 1.0 / s**2)
        C = np.empty((len(theta), len(theta)))
        C[0, 0] = cov[0, 0] + b**2 * float(m @ Sigma @ m)
        C[0, 1:] = C[1:, 0] = (b * cov[0, 1] * beta0 if slope else 0.0) - b**2 * (Sigma @ m)
        C[1:, 1:] = b**2 * (1 + v) * Sigma + b**2 * v * np.outer(beta0, beta0)
        std, corr = std_and_correlation((C + C.T) / 2)
    return Candidate(
        "recalibrate" if slope else "intercept",
        theta,
        std,
        _log_mean_exp(evs),
        {
            "intercept_shift": float(x[0]),
            "scale": b,
            "log_scale_sd": float(np.sqrt(v)),
            "prior_scale": float(s),
        },
        corr,
    )


def map_evidence(
    D: np.ndarray, y: np.ndarray, theta0: np.ndarray, lam: float, ratio: float
) -> float:
    """Laplace log evidence of the MAP model at prior precision ``lam`` (intercept
    ``lam * ratio``): :func:`map_evidence_path` at one precision."""
    return float(map_evidence_path(D, y, theta0, [lam], ratio)[0][0])


def map_evidence_path(
    D: np.ndarray, y: np.ndarray, theta0: np.ndarray, lambdas, ratio: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`map_evidence` at every precision in ``lambdas`` at once
    (:func:`ragim.models.map.map_logistic_path`); returns (log evidences (L,), MAP estimates
    (L, p + 1), Hessians (L, p + 1, p + 1))."""
    lambdas = np.asarray(lambdas, dtype=float)
    thetas, hessians = map_logistic_path(D, y, theta0, lambdas, ratio)
    prec = np.repeat(lambdas[:, None], thetas.shape[1], axis=1)
    prec[:, 0] *= ratio
    Z = thetas[:, :1] + thetas[:, 1:] @ D.T
    evs = (
        np.sum(y * Z - np.logaddexp(0.0, Z), axis=1)
        - 0.5 * np.sum(prec * (thetas - theta0) ** 2, axis=1)
        + 0.5 * np.sum(np.log(prec), axis=1)
        - 0.5 * np.linalg.slogdet(hessians)[1]
    )
    return evs, thetas, hessians


def cv_loss(D, y, theta0, lam, ratio, folds: int, seed: int) -> float:
    """Stratified ``folds``-fold cross-validated log-loss (summed) of the MAP model at ``lam``.

    The rows are dealt to the folds class after class without restarting, so every fold
    holds rows to score and rows to fit whenever ``2 <= folds <= len(y) - 1``, even with one
    row of a class. **Changed:** each class was dealt from fold 0, so one event and one
    non-event both fell in fold 0, no fold was scored and every ``lam`` got a loss of 0 (the
    weakest prior won).

    Raises
    ------
    ValidationError
        When no fold holds both rows to score and rows to fit (fewer than 2 rows, or ``folds``
        below 2).

    Examples
    --------
    >>> D = np.array([[1.0], [-1.0]]); y = np.array([1.0, 0.0])
    >>> bool(cv_loss(D, y, np.array([0.0, 0.2]), 1.0, 0.1, 2, 0) > 0)
    True
    """
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), int)
    dealt = 0
    for cls in (0, 1):
        idx = np.where(y == cls)[0]
        rng.shuffle(idx)
        fold_of[idx] = (dealt + np.arange(len(idx))) % folds
        dealt += len(idx)
    loss, scored = 0.0, 0
    for f in range(folds):
        tr, te = fold_of != f, fold_of == f
        if not te.any() or not tr.any():
            continue
        theta, _ = map_logistic(D[tr], y[tr], theta0, lam, ratio)
        z = theta[0] + D[te] @ theta[1:]
        loss += float(np.sum(np.logaddexp(0, z) - y[te] * z))
        scored += 1
    if not scored:
        raise ValidationError(
            f"prior_strength='cv' cannot cross-validate {len(y)} row(s) in {folds} fold(s): no "
            "fold holds both rows to score and rows to fit; use prior_strength='evidence'"
        )
    return loss


def map_candidate(
    D: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    *,
    prior_strength="evidence",
    intercept_ratio: float = 0.1,
    lambdas=LAMBDA_GRID,
) -> Candidate:
    """The ``"map"`` candidate. ``prior_strength``: ``"evidence"`` (``lambda`` integrated out
    over ``lambdas``; the fit uses the most probable one, and the SDs and correlations are
    those of the posterior with ``lambda`` integrated out, about that fit), ``"cv"``
    (``lambda`` by cross-validated log-loss on the rows) or a positive number (``lambda``
    itself); with those two, the Laplace posterior at that ``lambda``."""
    if isinstance(prior_strength, str) and prior_strength == "evidence":
        evs, thetas, hessians = map_evidence_path(D, y, theta0, lambdas, intercept_ratio)
        best = int(np.argmax(evs))
        lam, ev = float(lambdas[best]), _log_mean_exp(evs)
        std, corr = std_and_correlation(_grid_covariance(evs, thetas, hessians, best))
        return Candidate("map", thetas[best], std, ev, {"prior_strength": lam}, corr)
    elif isinstance(prior_strength, str) and prior_strength == "cv":
        folds = int(min(5, max(2, min(np.sum(y), np.sum(1 - y)))))
        losses = [cv_loss(D, y, theta0, lam, intercept_ratio, folds, 0) for lam in lambdas]
        lam = float(lambdas[int(np.argmin(losses))])
        ev = map_evidence(D, y, theta0, lam, intercept_ratio)
    else:
        lam = float(prior_strength)
        ev = map_evidence(D, y, theta0, lam, intercept_ratio)
    theta, H = map_logistic(D, y, theta0, lam, intercept_ratio)
    std, corr = _laplace(H)
    return Candidate("map", theta, std, ev, {"prior_strength": lam}, corr)


def map_with_prior(
    D: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    std: np.ndarray,
    *,
    correlation: np.ndarray | None = None,
    min_std: float = 1e-3,
) -> Candidate:
    """MAP logistic regression under the generator's Gaussian prior,
    ``theta ~ N(theta0, diag(std) R diag(std))`` (``std`` floored at ``min_std``; ``R`` the
    ``correlation`` matrix, or the identity: an independent prior per parameter, the
    elicited-prior method of AutoElicit, Capstick et al., ICML 2025, with a generator's mean and
    SD as the elicited prior). :func:`adapt`'s ``"prior"`` candidate, a Bayesian update of the
    generated model; its log evidence is the Laplace approximation of the rows' marginal
    likelihood under that prior.

    With ``correlation`` the fit runs in whitened coordinates ``theta = theta0 + L u``,
    ``u ~ N(0, I)`` (``L`` the prior covariance's Cholesky factor), so correlated prior errors
    (a generated intercept that moves with its slopes) are updated together; without them,
    an intercept whose prior uncertainty comes from its slopes' would be updated as if free.

    Examples
    --------
    >>> D = np.array([[-1.0], [0.0], [1.0], [2.0]]); y = np.array([0.0, 0.0, 1.0, 1.0])
    >>> tight = map_with_prior(D, y, np.array([0.0, -1.0]), np.array([1e-3, 1e-3]))
    >>> loose = map_with_prior(D, y, np.array([0.0, -1.0]), np.array([10.0, 10.0]))
    >>> round(float(tight.theta[1]), 3), bool(loose.theta[1] > 0)
    (-1.0, True)
    """
    theta0 = np.asarray(theta0, dtype=float)
    sd = np.maximum(np.asarray(std, dtype=float), min_std)
    A = np.hstack([np.ones((len(D), 1)), D])
    y = np.asarray(y, dtype=float)
    R = np.eye(len(sd)) if correlation is None else np.asarray(correlation, dtype=float)
    L = _cholesky(R * np.outer(sd, sd))
    # whitened: u ~ N(0, I), theta = theta0 + L u; the log prior's normaliser is -log|L|
    u, Hu = newton_map(A @ L, y, np.zeros(len(sd)), np.ones(len(sd)), offset=A @ theta0)
    theta = theta0 + L @ u
    ev = log_likelihood(A @ theta, y) - 0.5 * float(u @ u) - 0.5 * float(np.linalg.slogdet(Hu)[1])
    cov = L @ np.linalg.inv(Hu) @ L.T
    std_post, corr = std_and_correlation((cov + cov.T) / 2)
    return Candidate("prior", theta, std_post, ev, {}, corr)


def _cholesky(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a covariance matrix; one relative jitter of 1e-8 on the
    diagonal when it is singular to working precision (a correlation of +-1 between two
    parameters), as ``ragim.generate.meta_regression`` factors its kernels."""
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        pass
    jitter = 1e-8 * max(float(np.mean(np.diag(S))), 1e-8)
    try:
        return np.linalg.cholesky(S + jitter * np.eye(len(S)))
    except np.linalg.LinAlgError:
        raise ValidationError(
            "the prior covariance of the generated parameters is not positive definite"
        ) from None


def candidates(
    D: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    *,
    names=AUTO,
    prior_strength="evidence",
    intercept_ratio: float = 0.1,
    prior_std: np.ndarray | None = None,
    prior_correlation: np.ndarray | None = None,
) -> dict[str, Candidate]:
    """Every candidate in ``names`` fitted to the rows ``(D, y)`` (0/1 ``y``) around ``theta0``;
    ``"prior"`` only when ``prior_std`` (the generator's SDs, shape of ``theta0``) is given.
    ``"intercept"`` and ``"recalibrate"`` keep the generated terms (times ``b``), so their SDs
    combine ``prior_std`` (and ``prior_correlation``, the generator's correlations, when
    given) with the fit's (:func:`recalibration`); without ``prior_std`` they have none.
    ``"zero-shot"`` has none (the generated model's stand); ``"prior"`` and ``"map"`` have
    their Laplace posterior SDs."""
    out: dict[str, Candidate] = {}
    if "zero-shot" in names:
        out["zero-shot"] = Candidate(
            "zero-shot",
            np.asarray(theta0, float).copy(),
            None,
            log_likelihood(theta0[0] + D @ theta0[1:], y),
            {},
        )
    if "intercept" in names:
        out["intercept"] = recalibration(
            D, y, theta0, slope=False, prior_std=prior_std, prior_correlation=prior_correlation
        )
    if "recalibrate" in names:
        out["recalibrate"] = recalibration(
            D, y, theta0, prior_std=prior_std, prior_correlation=prior_correlation
        )
    if "prior" in names and prior_std is not None:
        out["prior"] = map_with_prior(
            D, y, np.asarray(theta0, float), prior_std, correlation=prior_correlation
        )
    if "map" in names:
        out["map"] = map_candidate(
            D, y, theta0, prior_strength=prior_strength, intercept_ratio=intercept_ratio
        )
    for c in out.values():
        scale = log_odds_scale(np.asarray(theta0, float), c.theta)
        c.detail["reverses"] = scale is not None and scale < 0
    return out


def choose(
    cands: dict[str, Candidate],
    margin: float = EVIDENCE_MARGIN,
    reversal_margin: float = REVERSAL_MARGIN,
    *,
    prefer: str | None = None,
) -> str:
    """The simplest candidate (in :data:`ORDER`) whose log evidence is within ``margin`` of the
    best eligible one. A candidate marked ``detail["reverses"]`` is eligible only when its log
    evidence beats every candidate that keeps the generated direction by ``reversal_margin``.
    ``prefer``: that candidate whenever it is eligible, whatever the evidence (an
    :class:`AdaptationPolicy` that validation chose); the rule above otherwise.

    Examples
    --------
    >>> c = {n: Candidate(n, np.zeros(1), None, ev)
    ...      for n, ev in [("zero-shot", -5.0), ("map", -4.5)]}
    >>> choose(c), choose(c, margin=0.1)
    ('zero-shot', 'map')
    >>> c["map"].detail["reverses"] = True
    >>> choose(c, margin=0.1), choose(c, margin=0.1, reversal_margin=0.2)
    ('zero-shot', 'map')
    """
    keep = [c.log_evidence for c in cands.values() if not c.detail.get("reverses")]
    floor = (max(keep) if keep else -np.inf) + reversal_margin
    eligible = {
        n: c for n, c in cands.items() if not c.detail.get("reverses") or c.log_evidence >= floor
    }
    if prefer is not None and prefer in eligible:
        return prefer
    best = max(c.log_evidence for c in eligible.values())
    return next(n for n in ORDER if n in eligible and eligible[n].log_evidence >= best - margin)


def reversals_refused(
    cands: dict[str, Candidate], chosen: str, reversal_margin: float = REVERSAL_MARGIN
) -> list[str]:
    """The candidates that reverse the generated model, had more evidence than ``chosen``, and
    were refused because they lacked ``reversal_margin`` (:data:`REVERSAL_MARGIN`) over the
    best candidate that keeps the generated direction. **Changed:** a reversing candidate
    that had the margin but was passed over (for a policy's preferred candidate) was listed
    too, and ``adapt`` then reported it refused "short of" a margin it had.

    Examples
    --------
    >>> c = {n: Candidate(n, np.zeros(1), None, ev)
    ...      for n, ev in [("zero-shot", -20.0), ("prior", -19.0), ("map", -5.0)]}
    >>> c["map"].detail["reverses"] = True
    >>> reversals_refused(c, "prior"), reversals_refused(c, "prior", reversal_margin=20.0)
    ([], ['map'])
    """
    better, floor = _reversals_beating(cands, chosen, reversal_margin)
    return [n for n in better if cands[n].log_evidence < floor]


def reversals_passed_over(
    cands: dict[str, Candidate], chosen: str, reversal_margin: float = REVERSAL_MARGIN
) -> list[str]:
    """The candidates that reverse the generated model with at least ``reversal_margin`` over
    every candidate that keeps its direction, and more evidence than ``chosen``, yet were not
    chosen (a validated policy preferred ``chosen``): the rows decisively say the generated
    model points the wrong way here.

    Examples
    --------
    >>> c = {n: Candidate(n, np.zeros(1), None, ev)
    ...      for n, ev in [("zero-shot", -20.0), ("prior", -19.0), ("map", -5.0)]}
    >>> c["map"].detail["reverses"] = True
    >>> reversals_passed_over(c, "prior")
    ['map']
    """
    better, floor = _reversals_beating(cands, chosen, reversal_margin)
    return [n for n in better if cands[n].log_evidence >= floor]


def _reversals_beating(
    cands: dict[str, Candidate], chosen: str, reversal_margin: float
) -> tuple[list[str], float]:
    """The reversing candidates (in :data:`ORDER`) with more evidence than ``chosen``, and the
    evidence a reversal needs: ``reversal_margin`` over the best candidate that keeps the
    generated direction."""
    ev = cands[chosen].log_evidence
    keep = [c.log_evidence for c in cands.values() if not c.detail.get("reverses")]
    floor = (max(keep) if keep else -np.inf) + reversal_margin
    better = [
        n
        for n in ORDER
        if n in cands and cands[n].detail.get("reverses") and cands[n].log_evidence > ev
    ]
    return better, floor


def log_odds_scale(theta0: np.ndarray, theta: np.ndarray) -> float | None:
    """The least-squares factor ``c`` in ``theta_terms ~ c * theta0_terms``: the recalibration
    slope when only the scale changed; None when the generated terms are all zero."""
    t0, t = theta0[1:], theta[1:]
    den = float(t0 @ t0)
    return None if den <= 0 else float(t0 @ t) / den


def sign_changes(
    names: list[str], theta0: np.ndarray, theta: np.ndarray, tol: float = SIGN_TOLERANCE
) -> list[str]:
    """Names of the terms whose sign differs between ``theta0`` and ``theta`` (both beyond
    ``tol``)."""
    t0, t = theta0[1:], theta[1:]
    flip = (np.abs(t0) > tol) & (np.abs(t) > tol) & (np.sign(t0) != np.sign(t))
    return [n for n, f in zip(names[1:], flip, strict=True) if f]


def _reversal_record(
    cands: dict, names: list[str], n_rows: int, verb: str
) -> tuple[dict[str, Any], str]:
    """The report entry for reversing candidates ``names`` (their best log Bayes factor over
    the best candidate that keeps the generated model's direction, and the margin needed),
    and the start of its warning ("the 20 labelled rows {verb} reversing ...")."""
    keep = max(c.log_evidence for c in cands.values() if not c.detail.get("reverses"))
    gap = float(max(cands[n].log_evidence for n in names) - keep)
    record = {
        "candidates": names,
        "log_bayes_factor": round(gap, 4),
        "needed": round(REVERSAL_MARGIN, 4),
    }
    head = (
        f"the {n_rows} labelled rows {verb} reversing the generated model ('{names[0]}', log "
        f"Bayes factor {gap:.1f} over the best model that keeps its direction"
    )
    return record, head


def adapt(
    D: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    names: list[str],
    *,
    adaptation: str = "auto",
    prior_strength="evidence",
    intercept_ratio: float = 0.1,
    margin: float = EVIDENCE_MARGIN,
    labels: tuple | None = None,
    warn: bool = True,
    prior_std: np.ndarray | None = None,
    prefer: str | None = None,
    prior_correlation: np.ndarray | None = None,
) -> tuple[Candidate, dict[str, Any]]:
    """Adapt ``theta0`` to the rows ``(D, y)``; returns the chosen :class:`Candidate` and a report.

    Parameters
    ----------
    D : design matrix without the intercept column, shape (k, p).
    y : 0/1 event indicators, shape (k,).
    theta0 : the generated parameters (intercept first), shape (p + 1,).
    names : the parameter names (for the report).
    adaptation : ``"auto"`` (the evidence chooses among the :data:`AUTO` candidates), or one of
        ``"zero-shot"``, ``"intercept"``, ``"recalibrate"``, ``"prior"``, ``"map"`` (that one,
        whatever the evidence says).
    prior_strength, intercept_ratio : of the MAP candidate (:func:`map_candidate`).
    margin, prefer : see :func:`choose`; only with ``adaptation="auto"``. ``prefer`` may name
        any candidate of :data:`ORDER` (``"prior"`` joins the candidates then; without
        ``prior_std`` it is ignored). :class:`ragim.adaptation_policy.AdaptationPolicy` gives
        both, validated inside the index for the number of rows.
    labels : ``(non-event, event)`` labels as the user wrote them, for messages.
    warn : raise :class:`~ragim.errors.AdaptationWarning` for what the report flags.
    prior_std : the generator's SD of each parameter, shape (p + 1,), >= 0; needed by
        ``adaptation="prior"`` (an error without it; floored at 1e-3 in that fit). The
        ``"intercept"`` and ``"recalibrate"`` candidates keep the generated terms, so their
        SDs add these to the fit's (:func:`recalibration`); without them they have no SDs.
    prior_correlation : the correlations of the generator's errors, shape (p + 1, p + 1), or
        None (independent); used with ``prior_std`` by ``"intercept"`` and ``"recalibrate"``.

    Returns
    -------
    (candidate, report). The candidate's ``std`` (None for ``"zero-shot"``, and for
    ``"intercept"`` and ``"recalibrate"`` without ``prior_std``) and ``correlation`` are the
    adapted parameters' posterior SDs and correlations. The report (JSON-safe) holds
    ``adaptation`` (what was asked), ``chosen``, ``k``, ``n_events``, ``margin``, ``prefer``
    (the candidate preferred, None when none was), ``prefer_ignored`` (None, or why a ``prefer``
    given was not used: rows of one class, no SDs), ``evidence_choice`` (what the evidence
    alone, with margin :data:`EVIDENCE_MARGIN`, would have chosen among the fitted candidates),
    ``log_evidence`` (per candidate), ``intercept_shift``, ``log_odds_scale``, ``sign_changes``,
    ``single_class`` (None, or what was done with rows of one class), ``reversal_refused``
    (None, or the reversing candidates the evidence favoured but not by :data:`REVERSAL_MARGIN`,
    with their log Bayes factor), ``reversal_passed_over`` (None, or the reversing candidates
    that had that margin but were not chosen because ``prefer`` named another, with their log
    Bayes factor: :func:`reversals_passed_over`) and ``warnings``.

    Raises
    ------
    ValidationError
        When ``adaptation`` or ``prefer`` is not one of the names above, ``prefer`` is given
        with an ``adaptation`` other than ``"auto"``, or the shapes disagree.

    Examples
    --------
    >>> D = np.array([[-1.0], [0.0], [1.0], [2.0]]); y = np.array([1.0, 1.0, 1.0, 1.0])
    >>> cand, report = adapt(D, y, np.array([-1.0, 1.0]), ["intercept", "x"], warn=False)
    >>> report["single_class"]["action"] in ("intercept", "zero-shot"), report["log_odds_scale"]
    (True, 1.0)
    """
    allowed = ("auto", *ORDER)
    if adaptation not in allowed:
        raise ValidationError(f"adaptation must be one of {list(allowed)}, got {adaptation!r}")
    y = np.asarray(y, dtype=float)
    theta0 = np.asarray(theta0, dtype=float)
    if D.shape != (len(y), len(theta0) - 1) or len(names) != len(theta0):
        raise ValidationError(
            f"adapt: D {D.shape}, y {y.shape}, theta0 {theta0.shape} and {len(names)} names "
            "do not match"
        )
    if len(y) == 0 or not np.all((y == 0) | (y == 1)):
        raise ValidationError(
            f"adapt needs at least one row and 0/1 outcomes y, got {len(y)} rows"
            + (f" with the value {y[~((y == 0) | (y == 1))][0]}" if len(y) else "")
        )
    if not (np.all(np.isfinite(D)) and np.all(np.isfinite(theta0))):
        raise ValidationError("adapt: the design matrix D and theta0 must be finite (no NaN, inf)")
    if prefer is not None and (prefer not in ORDER or adaptation != "auto"):
        raise ValidationError(
            f"prefer must be one of {list(ORDER)} and needs adaptation 'auto', got "
            f"prefer={prefer!r} with adaptation {adaptation!r}"
        )
    asked_prefer = prefer
    n_events = int(y.sum())
    single = n_events in (0, len(y))
    if single or (prefer == "prior" and prior_std is None):
        # rows of one class: the policy was validated on draws of both classes; no SDs: nothing
        # to centre the prior on. The evidence chooses (the report says why)
        prefer = None
    if adaptation == "zero-shot" or (adaptation == "map" and not single):
        prior_std = prior_correlation = None  # these candidates do not use the SDs
    elif prior_std is None and (adaptation == "prior" or prefer == "prior"):
        raise ValidationError(
            "adaptation 'prior' needs the SD of every parameter of the model, and this one has "
            "none: use a model from a generator that reports SDs (the statistical and attention "
            "generators do), or adaptation 'map'"
        )
    elif prior_std is not None:
        prior_std = np.asarray(prior_std, dtype=float)
        if prior_std.shape != theta0.shape:
            raise ValidationError(
                f"prior_std must hold one SD per parameter ({len(theta0)}), "
                f"got shape {prior_std.shape}"
            )
        bad = np.flatnonzero(~(np.isfinite(prior_std) & (prior_std >= 0)))
        if len(bad):
            raise ValidationError(
                f"prior_std must be finite and >= 0, got {prior_std[bad[0]]} for {names[bad[0]]!r}"
            )
        if prior_correlation is not None and np.shape(prior_correlation) != 2 * theta0.shape:
            raise ValidationError(
                f"prior_correlation must be ({len(theta0)}, {len(theta0)}), "
                f"got shape {np.shape(prior_correlation)}"
            )
    if single:
        names_c = ("zero-shot", "intercept")
    elif adaptation == "auto":
        names_c = AUTO if prefer in (None, *AUTO) else (*AUTO, prefer)
    else:
        names_c = ("zero-shot", adaptation)
    cands = candidates(
        D,
        y,
        theta0,
        names=names_c,
        prior_strength=prior_strength,
        intercept_ratio=intercept_ratio,
        prior_std=prior_std,
        prior_correlation=prior_correlation,
    )
    if adaptation == "auto" or (single and adaptation != "zero-shot"):
        chosen = choose(cands, margin, prefer=prefer if prefer in cands else None)
    else:
        chosen = adaptation
    cand = cands[chosen]
    scale = log_odds_scale(theta0, cand.theta)
    report: dict[str, Any] = {
        "adaptation": adaptation,
        "chosen": chosen,
        "k": int(len(y)),
        "n_events": n_events,
        "margin": float(margin),
        "prefer": prefer,
        "prefer_ignored": None
        if asked_prefer == prefer
        else (
            "the rows are of one class (the policy was validated on rows of both)"
            if single
            else "the model has no SDs to centre the 'prior' update on"
        ),
        "evidence_choice": choose({n: c for n, c in cands.items() if n in AUTO}, EVIDENCE_MARGIN),
        "log_evidence": {n: round(c.log_evidence, 4) for n, c in cands.items()},
        "intercept_shift": float(cand.theta[0] - theta0[0]),
        "log_odds_scale": scale,
        "sign_changes": sign_changes(names, theta0, cand.theta),
        "single_class": None,
        "reversal_refused": None,
        "warnings": [],
    }
    if "prior_strength" in cand.detail:
        report["prior_strength"] = cand.detail["prior_strength"]
    how = (
        "as asked"
        if adaptation != "auto"
        else "by the policy validated in the index"
        if prefer is not None
        else "by the evidence"
    )
    if single:
        lab = "events" if n_events else "non-events"
        written = None if labels is None else labels[1 if n_events else 0]
        if written is not None:
            lab += f" (label {written!r})"
        report["single_class"] = {"n": int(len(y)), "class": int(n_events > 0), "action": chosen}
        did = (
            "the intercept too"
            if chosen == "zero-shot"
            else f"shifted only the intercept by {report['intercept_shift']:+.2f} "
            f"(every risk {'rises' if report['intercept_shift'] > 0 else 'falls'})"
        )
        report["warnings"].append(
            f"the {len(y)} labelled rows are all {lab}: they cannot show which patients are at "
            f"higher risk, so the coefficients were kept and {did}; if these rows were chosen "
            "for their outcome, they say nothing about the event rate either: fit without them"
        )
    refused = reversals_refused(cands, chosen) if adaptation == "auto" else []
    passed = reversals_passed_over(cands, chosen) if adaptation == "auto" else []
    if passed:
        report["reversal_passed_over"], head = _reversal_record(
            cands, passed, len(y), "decisively favour"
        )
        report["warnings"].append(
            f"{head}, above the {REVERSAL_MARGIN:.1f} needed), but '{chosen}' was used {how}: "
            "check how these rows were chosen and how their outcome was coded, and whether the "
            "generated model suits this site"
        )
    else:
        report["reversal_passed_over"] = None
    if refused:
        report["reversal_refused"], head = _reversal_record(cands, refused, len(y), "favour")
        report["warnings"].append(
            f"{head}), short of the {REVERSAL_MARGIN:.1f} needed to reverse it, so '{chosen}' was "
            "kept: check how these rows were chosen and how their outcome was coded"
        )
    if report["sign_changes"]:
        flipped = report["sign_changes"]
        report["warnings"].append(
            f"adaptation '{chosen}' (chosen {how} on {len(y)} rows) moved {len(flipped)} "
            "coefficient(s) across zero: "
            f"{', '.join(flipped[:8])}{' ...' if len(flipped) > 8 else ''}"
        )
    if scale is not None and not (1 / SCALE_WARN_FACTOR <= scale <= SCALE_WARN_FACTOR):
        report["warnings"].append(
            f"adaptation '{chosen}' (chosen {how} on {len(y)} rows) scaled the generated "
            f"log-odds by {scale:.2f}, beyond the factor {SCALE_WARN_FACTOR:g} either way: "
            + (
                "the adapted model points against the generated one"
                if scale < 0
                else f"the generated model {'overstated' if scale < 1 else 'understated'} "
                "how much the features matter here"
            )
        )
    if warn:
        for msg in report["warnings"]:
            warnings.warn(
                msg + " (see adaptation_report_)", AdaptationWarning, stacklevel=user_stacklevel()
            )
    return cand, report


__all__ = [
    "EVIDENCE_MARGIN",
    "LAMBDA_GRID",
    "AUTO",
    "ORDER",
    "RECAL_SCALES",
    "REVERSAL_MARGIN",
    "SCALE_WARN_FACTOR",
    "SIGN_TOLERANCE",
    "Candidate",
    "adapt",
    "candidates",
    "log_likelihood",
    "choose",
    "cv_loss",
    "log_odds_scale",
    "map_candidate",
    "map_evidence",
    "map_evidence_path",
    "map_with_prior",
    "recalibration",
    "reversals_passed_over",
    "reversals_refused",
    "sign_changes",
]
