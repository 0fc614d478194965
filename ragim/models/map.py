"""MAP logistic regression with a Gaussian prior centred anywhere: Newton's method.

Few-shot adaptation (:mod:`ragim.estimator`) and the statistical generator
(:mod:`ragim.generate.statistical`) both fit logistic models whose prior is centred on
another model (a generated one, or the pooled model) rather than on zero.

Examples
--------
>>> import numpy as np
>>> A = np.column_stack([np.ones(4), [0.0, 1.0, 2.0, 3.0]]); y = np.array([0, 0, 1, 1])
>>> w, H = newton_map(A, y, np.zeros(2), np.ones(2))
>>> bool(w[1] > 0), H.shape
(True, (2, 2))
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit


def map_logistic(
    D: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    lam: float,
    intercept_ratio: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """MAP logistic regression with a ridge prior centred on ``theta0``; returns (theta, Hessian).

    Minimises ``sum_i logloss(y_i, theta) + lam/2 ||theta_terms - theta0_terms||^2 +
    lam * intercept_ratio/2 (theta_0 - theta0_0)^2`` by Newton's method (:func:`newton_map`).

    Examples
    --------
    >>> D = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> theta, H = map_logistic(D, y, np.zeros(2), lam=1.0)
    >>> bool(theta[1] > 0)
    True
    """
    n, d = D.shape
    A = np.hstack([np.ones((n, 1)), D])
    prec = np.full(d + 1, float(lam))
    prec[0] = lam * intercept_ratio
    return newton_map(A, y, theta0.astype(float), prec, max_iter, tol)


def newton_map(
    A: np.ndarray,
    y: np.ndarray,
    mu: np.ndarray,
    prec: ArrayLike,
    max_iter: int = 100,
    tol: float = 1e-10,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method, with step halving, for
    ``sum_i logloss(y_i, offset_i + A_i w) + 1/2 sum_k prec_k (w_k - mu_k)^2``.

    Parameters
    ----------
    A : design with the intercept column, shape (n, d).
    y : 0/1 outcomes, shape (n,).
    mu, prec : prior means and precisions, shape (d,) (``prec`` as any array-like);
        ``prec > 0`` keeps every step defined (separable or collinear data included).
    offset : a fixed part of each row's log-odds, shape (n,) (default 0).

    Returns
    -------
    (w, H): the MAP estimate (d,) and the Hessian of the objective at it (d, d), whose
    inverse is the Laplace approximation of the posterior covariance.
    """
    w, H = newton_map_batch(A, y, mu, np.asarray(prec, dtype=float)[None, :], max_iter, tol, offset)
    return w[0], H[0]


def newton_map_batch(
    A: np.ndarray,
    y: np.ndarray,
    mu: np.ndarray,
    prec: np.ndarray,
    max_iter: int = 100,
    tol: float = 1e-10,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`newton_map` under L priors at once (``prec``: shape (L, d), one row of
    precisions per prior; ``mu``: shape (d,), shared): one stacked solve per Newton step, each
    prior with its own step halving and stopping rule. Returns (W, H) of shapes (L, d) and
    (L, d, d)."""
    y = np.asarray(y, dtype=float)
    mu = np.asarray(mu, dtype=float)
    off = 0.0 if offset is None else offset
    W = np.repeat(mu[None, :], len(prec), axis=0)

    def objective(V, rows):
        Z = off + V @ A.T
        return np.sum(np.logaddexp(0.0, Z) - y * Z, axis=1) + 0.5 * np.sum(
            prec[rows] * (V - mu) ** 2, axis=1
        )

    def hessian(V, rows):
        P = expit(off + V @ A.T)
        H = np.matmul((A[None] * (P * (1 - P))[:, :, None]).transpose(0, 2, 1), A)
        return P, H + prec[rows][:, :, None] * np.eye(A.shape[1])

    every = np.arange(len(W))
    f = objective(W, every)
    active = every
    for _ in range(max_iter):
        if not len(active):
            break
        V = W[active]
        P, H = hessian(V, active)
        grad = (P - y) @ A + prec[active] * (V - mu)
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        # step halving: a full Newton step from a distant start can overshoot and diverge
        t = np.ones(len(active))
        while True:
            f_new = objective(V - t[:, None] * step, active)
            # not "<=" fails for NaN too: a step that overflows is halved
            bound = f[active] + 1e-12 * np.maximum(1.0, np.abs(f[active]))
            worse = ~(f_new <= bound) & (t >= 1e-10)
            if not worse.any():
                break
            t[worse] /= 2
        moved = t[:, None] * step
        W[active], f[active] = V - moved, f_new
        active = active[np.max(np.abs(moved), axis=1) >= tol]
    return W, hessian(W, every)[1]


def map_logistic_path(
    D: np.ndarray,
    y: np.ndarray,
    theta0: np.ndarray,
    lambdas: np.ndarray,
    intercept_ratio: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`map_logistic` at every prior precision in ``lambdas`` at once
    (:func:`newton_map_batch`; the few-shot evidence integrates over a grid of 21).

    Returns (thetas, hessians) of shapes (L, p + 1) and (L, p + 1, p + 1), in ``lambdas``
    order, each equal to :func:`map_logistic`'s at that precision.

    Examples
    --------
    >>> D = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> thetas, _ = map_logistic_path(D, y, np.zeros(2), np.array([1.0, 10.0]))
    >>> one, _ = map_logistic(D, y, np.zeros(2), lam=10.0)
    >>> bool(np.allclose(thetas[1], one))
    True
    """
    A = np.hstack([np.ones((len(D), 1)), D])
    lambdas = np.asarray(lambdas, dtype=float)
    prec = np.repeat(lambdas[:, None], A.shape[1], axis=1)
    prec[:, 0] *= intercept_ratio
    return newton_map_batch(A, y, theta0, prec, max_iter, tol)


def stratified_logistic(
    D: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    slope_prec: float = 1.0,
    intercept_prec: float = 1e-4,
    max_iter: int = 50,
    tol: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression with one intercept per group (task) and slopes shared by all groups.

    Minimises ``sum_i logloss(y_i, alpha_g(i) + D_i beta) + slope_prec/2 ||beta||^2 +
    intercept_prec/2 ||alpha||^2`` by Newton's method, eliminating the intercepts through
    their diagonal block (a Schur complement), so a step costs ``O(n d^2)`` however many
    groups there are. The slopes are *within-group* effects: unlike a model fitted on
    the concatenated rows, they do not absorb differences in outcome rate between groups
    (a site with more of one category and more events). scikit-learn's solvers have no
    block elimination; with thousands of groups they need hundreds of iterations.

    Parameters
    ----------
    D : design without the intercept column, shape (n, d).
    y : 0/1 outcomes, shape (n,).
    groups : integer group of each row, ``0 .. G-1``, shape (n,).
    slope_prec, intercept_prec : ridge precisions of the slopes and of the intercepts.

    Returns
    -------
    (beta, alpha): the shared slopes (d,) and the group intercepts (G,).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat([0, 1], 200); x = rng.normal(size=(400, 1))
    >>> y = (rng.random(400) < expit(np.where(g == 0, -1.0, 1.0) + x[:, 0])).astype(float)
    >>> beta, alpha = stratified_logistic(x, y, g, slope_prec=1e-6)
    >>> bool(0.7 < beta[0] < 1.3), bool(alpha[0] < 0 < alpha[1])
    (True, True)
    """
    from scipy.sparse import csr_matrix

    groups = np.asarray(groups, dtype=np.int64)
    G = int(groups.max()) + 1
    n, d = D.shape
    member = csr_matrix((np.ones(n), (groups, np.arange(n))), shape=(G, n))
    beta, alpha = np.zeros(d), np.zeros(G)
    for _ in range(max_iter):
        z = alpha[groups] + D @ beta
        p = expit(z)
        w = p * (1 - p)
        r = p - y
        g_b = D.T @ r + slope_prec * beta
        g_a = np.bincount(groups, weights=r, minlength=G) + intercept_prec * alpha
        H_bb = (D * w[:, None]).T @ D + slope_prec * np.eye(d)
        h_aa = np.bincount(groups, weights=w, minlength=G) + intercept_prec
        H_ab = np.asarray(member @ (D * w[:, None]))
        S = H_bb - (H_ab / h_aa[:, None]).T @ H_ab
        rhs = g_b - H_ab.T @ (g_a / h_aa)
        step_b = np.linalg.solve(S, rhs)
        step_a = (g_a - H_ab @ step_b) / h_aa
        beta, alpha = beta - step_b, alpha - step_a
        if max(np.max(np.abs(step_b)), np.max(np.abs(step_a))) < tol:
            break
    return beta, alpha


__all__ = [
    "map_logistic",
    "map_logistic_path",
    "newton_map",
    "newton_map_batch",
    "stratified_logistic",
]
