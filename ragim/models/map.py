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
from scipy.special import expit


def map_logistic(D: np.ndarray, y: np.ndarray, theta0: np.ndarray, lam: float, intercept_ratio: float = 0.1,
                 max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
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


def newton_map(A: np.ndarray, y: np.ndarray, mu: np.ndarray, prec: np.ndarray, max_iter: int = 100,
               tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method for ``sum_i logloss(y_i, A_i w) + 1/2 sum_k prec_k (w_k - mu_k)^2``.

    Parameters
    ----------
    A : design with the intercept column, shape (n, d).
    y : 0/1 outcomes, shape (n,).
    mu, prec : prior means and precisions, shape (d,); ``prec > 0`` keeps every step defined
        (separable or collinear data included).

    Returns
    -------
    (w, H): the MAP estimate (d,) and the Hessian of the objective at it (d, d), whose
    inverse is the Laplace approximation of the posterior covariance.
    """
    w = np.asarray(mu, dtype=float).copy()
    for _ in range(max_iter):
        p = expit(A @ w)
        grad = A.T @ (p - y) + prec * (w - mu)
        H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(prec)
        step = np.linalg.solve(H, grad)
        w = w - step
        if np.max(np.abs(step)) < tol:
            break
    p = expit(A @ w)
    return w, (A * (p * (1 - p))[:, None]).T @ A + np.diag(prec)


__all__ = ["map_logistic", "newton_map"]
