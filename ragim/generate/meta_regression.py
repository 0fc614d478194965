"""Random-effects meta-regression of task parameters on their descriptions: the numerical core.

Each indexed task ``j`` contributes a *noisy observation* of its own parameters: a MAP
fit of its rows with a Gaussian prior centred on the pooled model, ``theta_j``, and the
diagonal of its Laplace posterior covariance, ``var_j`` (:func:`task_summaries`). Its
deviation from the pooled model ``delta_j = theta_j - pooled`` is modelled, separately
for each parameter ``p`` and with the intercept and the slopes as two groups, as

    delta_jp = f_p(description_j) + u_jp + e_jp,
    f_p ~ GP(0, K),  u_jp ~ N(0, nugget),  e_jp ~ N(0, var_jp),

a random-effects meta-regression (Raudenbush & Bryk, *Hierarchical Linear Models*, 2002,
ch. 7; Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, ch. 2) in
which small tasks count for little (their ``var_jp`` is large) and a description unlike
any indexed one falls back to the pooled model (``f_p -> 0``). ``K`` is a kernel over
descriptions: word n-grams weighted by a relevance learned on the index
(:func:`ngram_relevance`, automatic relevance determination shared across the parameters of
a group; MacKay, *Bayesian methods for backpropagation networks*, 1994), or embedding
similarity (:func:`embedding_kernel`).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> K = np.eye(5); Y = rng.normal(size=(5, 2)); V = np.full((5, 2), 0.1)
>>> gp = KernelRegression(K, Y, V, nugget=0.0)
>>> gp.mean(np.eye(5)[:1]).shape
(1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ragim.errors import ValidationError
from ragim.models.map import newton_map
from ragim.params import design_matrix

#: variances are clipped into this range (a task that says nothing about a parameter has a
#: huge variance, not an infinite one)
VAR_BOUNDS = (1e-8, 1e6)


@dataclass
class TaskSummaries:
    """Per-task parameter estimates and their noise, over one index's parameter layout.

    Attributes
    ----------
    ids : task ids, length n.
    theta : MAP parameters centred on the pooled model, shape (n, P).
    var : diagonal of each task's Laplace posterior covariance, shape (n, P).
    n_rows : rows per task, shape (n,).
    """

    ids: list[str]
    theta: np.ndarray
    var: np.ndarray
    n_rows: np.ndarray

    def take(self, rows: Sequence[int] | np.ndarray) -> TaskSummaries:
        rows = np.asarray(rows, dtype=np.int64)
        return TaskSummaries([self.ids[i] for i in rows], self.theta[rows], self.var[rows], self.n_rows[rows])


def prior_precisions(n_params: int, prior_sd: float, intercept_prior_sd: float) -> np.ndarray:
    """Prior precisions ``[1 / intercept_sd^2, 1 / sd^2, ...]`` of the per-task fits."""
    prec = np.full(n_params, 1.0 / prior_sd**2)
    prec[0] = 1.0 / intercept_prior_sd**2
    return prec


def task_summaries(tasks, model: str, schema, pooled: np.ndarray, *, prior_sd: float = 1.0,
                   intercept_prior_sd: float = 3.0) -> TaskSummaries:
    """MAP fits of every task, each with the prior ``N(pooled, diag(sd^2))`` (Newton's method).

    Parameters
    ----------
    tasks : the tasks (iterable of :class:`~ragim.Task`), all with rows.
    model, schema : the index's model family and fitted schema.
    pooled : the pooled model's parameters, shape (P,).
    prior_sd, intercept_prior_sd : prior SDs of the slopes and of the intercept (log-odds).

    Returns
    -------
    TaskSummaries
    """
    prec = prior_precisions(len(pooled), prior_sd, intercept_prior_sd)
    ids, thetas, variances, sizes = [], [], [], []
    for t in tasks:
        D = design_matrix(model, schema, t.X)
        A = np.hstack([np.ones((len(D), 1)), D])
        w, H = newton_map(A, t.y.astype(float), pooled, prec, max_iter=50, tol=1e-8)
        try:
            cov_diag = np.diag(np.linalg.inv(H))
        except np.linalg.LinAlgError:
            cov_diag = 1.0 / prec
        ids.append(t.task_id)
        thetas.append(w)
        variances.append(np.clip(cov_diag, *VAR_BOUNDS))
        sizes.append(t.n_rows)
    if not ids:
        raise ValidationError("no tasks to summarise; the index holds no task rows")
    return TaskSummaries(ids, np.asarray(thetas), np.asarray(variances), np.asarray(sizes, dtype=np.int64))


def ngram_relevance(Phi: np.ndarray, Y: np.ndarray, var: np.ndarray, *, iters: int = 40, tol: float = 1e-4,
                    init: float = 0.05) -> tuple[np.ndarray, float]:
    """Relevance of each description feature: automatic relevance determination (ARD).

    The model is ``Y[:, p] = Phi @ b_p + u + e`` with ``b_fp ~ N(0, tau_f)`` for every
    column ``p`` (a feature is relevant for all the parameters of a group, or for none),
    ``u ~ N(0, nugget)`` and ``e ~ N(0, mean(var, axis=1))``. ``tau`` and ``nugget`` maximise
    the marginal likelihood by MacKay's fixed-point updates; irrelevant features end near 0.

    Parameters
    ----------
    Phi : description features (dense), shape (n, F).
    Y : deviations from the pooled model, shape (n, m).
    var : their noise variances, shape (n, m).

    Returns
    -------
    (tau, nugget): feature relevances (F,) and the nugget variance.
    """
    n, F = Phi.shape
    m = Y.shape[1]
    noise = var.mean(axis=1)
    tau = np.full(F, init)
    nugget = init
    eye = np.eye(n)
    for _ in range(iters):
        S = (Phi * tau) @ Phi.T + np.diag(nugget + noise)
        c = cho_factor(S, lower=True)
        A = cho_solve(c, Y)
        mu = tau[:, None] * (Phi.T @ A)
        dq = np.einsum("ij,ij->j", Phi, cho_solve(c, Phi))
        gamma = m * tau * dq  # effective number of well-determined coefficients per feature
        new_tau = np.clip(np.sum(mu**2, axis=1) / np.maximum(gamma, 1e-12), 0.0, 1e3)
        si_diag = np.diag(cho_solve(c, eye))
        new_nugget = float(np.clip(np.sum((nugget * A) ** 2) / max(m * nugget * np.sum(si_diag), 1e-12), 1e-8, 1e3))
        done = np.max(np.abs(new_tau - tau)) < tol and abs(new_nugget - nugget) < tol
        tau, nugget = new_tau, new_nugget
        if done:
            break
    return tau, nugget


def embedding_kernel(E: np.ndarray, F: np.ndarray | None = None, *, sharpness: float = 5.0) -> np.ndarray:
    """``exp(sharpness * (cos - 1))`` between unit description vectors: 1 for the same text,
    ``exp(-sharpness)`` for orthogonal ones. Shapes (n, d) and (m, d) give (m, n)."""
    F = E if F is None else F
    return np.exp(sharpness * (F @ E.T - 1.0))


def fit_kernel_scale(K: np.ndarray, Y: np.ndarray, V: np.ndarray) -> tuple[float, float]:
    """Kernel scale ``h`` and nugget maximising the marginal likelihood of
    ``Y[:, p] ~ N(0, h K + diag(nugget + mean(V, axis=1)))`` over the columns of ``Y``.

    Returns
    -------
    (h, nugget), both in [1e-8, 1e3].
    """
    from scipy.optimize import minimize

    n, m = Y.shape
    noise = V.mean(axis=1)
    eye = np.eye(n)

    def nll(log_h):
        h, nug = np.exp(log_h)
        try:
            c = cho_factor(h * K + np.diag(nug + noise), lower=True)
        except np.linalg.LinAlgError:
            return 1e12, np.zeros(2)
        A = cho_solve(c, Y)
        Si = cho_solve(c, eye)
        value = 0.5 * float(np.sum(Y * A)) + m * float(np.sum(np.log(np.diag(c[0]))))
        M = A @ A.T - m * Si
        return value, np.array([-0.5 * np.sum(M * K) * h, -0.5 * np.trace(M) * nug])

    res = minimize(nll, np.log([0.05, 0.05]), jac=True, method="L-BFGS-B", bounds=[(-18.4, 6.9)] * 2)
    h, nug = np.exp(res.x)
    return float(h), float(nug)


class KernelRegression:
    """Noise-aware GP regression of ``Y`` on descriptions through a fixed kernel matrix.

    Parameters
    ----------
    K : kernel between the training descriptions, shape (n, n).
    Y : deviations from the pooled model, shape (n, m).
    V : their noise variances, shape (n, m).
    nugget : variance of a task's own deviation that no description explains.
    """

    def __init__(self, K: np.ndarray, Y: np.ndarray, V: np.ndarray, nugget: float):
        self.nugget = float(nugget)
        self.alpha = np.empty_like(Y)
        n = len(K)
        for p in range(Y.shape[1]):
            self.alpha[:, p] = cho_solve(_chol(K + np.diag(self.nugget + V[:, p])), Y[:, p])
        # one shared factor for variances and provenance: the group's mean noise
        self._shared = _chol(K + np.diag(self.nugget + V.mean(axis=1)))
        self._eye = np.eye(n)

    def mean(self, k_star: np.ndarray) -> np.ndarray:
        """Predicted deviations for new descriptions, ``k_star`` of shape (q, n) -> (q, m)."""
        return k_star @ self.alpha

    def variance(self, k_star: np.ndarray, k_self: np.ndarray) -> np.ndarray:
        """Predictive variance of a new task's deviation (its own nugget included), shape (q,)."""
        solved = cho_solve(self._shared, k_star.T)
        return np.maximum(k_self + self.nugget - np.einsum("ij,ji->i", k_star, solved), 1e-12)

    def weights(self, k_star: np.ndarray) -> np.ndarray:
        """How much each training task's deviation enters the prediction, shape (q, n)."""
        return cho_solve(self._shared, k_star.T).T


def _chol(S: np.ndarray):
    try:
        return cho_factor(S, lower=True)
    except np.linalg.LinAlgError:
        jitter = 1e-8 * max(float(np.mean(np.diag(S))), 1e-8)
        return cho_factor(S + jitter * np.eye(len(S)), lower=True)


__all__ = ["KernelRegression", "TaskSummaries", "embedding_kernel", "fit_kernel_scale", "ngram_relevance",
           "prior_precisions", "task_summaries"]
