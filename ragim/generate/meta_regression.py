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
descriptions: word n-grams grouped by how many descriptions share them, one scale per group
(:func:`ngram_buckets`), or embedding similarity (:func:`embedding_kernel`); the scales are
chosen by type-II maximum likelihood (:func:`fit_kernel_scales`).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> K = np.eye(5); Y = rng.normal(size=(5, 2)); V = np.full((5, 2), 0.1)
>>> gp = KernelRegression(K, Y, V, nugget=0.0)
>>> gp.mean(np.eye(5)[:1]).shape
(1, 2)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ragim.checks import check_int, check_number
from ragim.errors import ValidationError, user_stacklevel
from ragim.models.map import newton_map
from ragim.params import design_matrix

#: variances are clipped into this range (a task that says nothing about a parameter has a
#: huge variance, not an infinite one)
VAR_BOUNDS = (1e-8, 1e6)
#: prior SDs of a task's slopes and of its intercept (log-odds) around the pooled model: the
#: defaults of :func:`task_summaries` and of the statistical generator's ``prior_sd`` and
#: ``intercept_prior_sd``
PRIOR_SD = 1.0
INTERCEPT_PRIOR_SD = 3.0
#: how sharply :func:`embedding_kernel` falls with cosine distance by default (the statistical
#: generator's ``embedding_sharpness``)
SHARPNESS = 5.0


@dataclass
class TaskSummaries:
    """Per-task parameter estimates and their noise, over one index's parameter layout.

    Attributes
    ----------
    ids : task ids, length n.
    theta : MAP parameters centred on the pooled model, shape (n, P).
    var : diagonal of each task's Laplace posterior covariance, shape (n, P).
    n_rows : rows per task, shape (n,).
    fits : optionally, the index's own per-task fits in the same (centred) form, shape (n, P).
    """

    ids: list[str]
    theta: np.ndarray
    var: np.ndarray
    n_rows: np.ndarray
    fits: np.ndarray | None = None

    def take(self, rows: Sequence[int] | np.ndarray) -> TaskSummaries:
        rows = np.asarray(rows, dtype=np.int64)
        return TaskSummaries(
            [self.ids[i] for i in rows],
            self.theta[rows],
            self.var[rows],
            self.n_rows[rows],
            None if self.fits is None else self.fits[rows],
        )


def prior_precisions(n_params: int, prior_sd: float, intercept_prior_sd: float) -> np.ndarray:
    """Prior precisions ``[1 / intercept_sd^2, 1 / sd^2, ...]`` of the per-task fits."""
    prec = np.full(n_params, 1.0 / prior_sd**2)
    prec[0] = 1.0 / intercept_prior_sd**2
    return prec


def centring(center: np.ndarray) -> np.ndarray:
    """The matrix ``T`` that maps parameters to their centred form: the intercept becomes the
    log-odds at the average design row ``center`` (``theta_0 + center @ theta_terms``), the
    terms stay. Shape (P, P)."""
    T = np.eye(len(center) + 1)
    T[0, 1:] = center
    return T


def task_summaries(
    tasks,
    model: str,
    schema,
    pooled: np.ndarray,
    *,
    prior_sd: float = PRIOR_SD,
    intercept_prior_sd: float = INTERCEPT_PRIOR_SD,
) -> TaskSummaries:
    """Each task's departure from the pooled model, with its noise, in centred form.

    Every task is fitted by MAP with the prior ``N(pooled, diag(sd^2))`` (Newton's method).

    * **Baseline risk** (``theta[:, 0]``): the fitted log-odds at the task's own average
      patient (its mean design row), with its Laplace variance. A raw intercept would not
      do: with one-hot levels and missing indicators it trades off against the sum of a
      feature's levels, and only such a combination is well determined.
    * **Slopes** (``theta[:, 1:]``): the MAP slopes and the diagonal of their Laplace covariance.

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
        y = t.y.astype(float)
        w, H = newton_map(A, y, pooled, prec, max_iter=50, tol=1e-8)
        try:
            cov = np.linalg.inv(H)
        except np.linalg.LinAlgError:
            cov = np.diag(1.0 / prec)
        var = np.diag(cov).copy()
        # the baseline risk: log-odds at the task's own average patient, which its rows determine
        # well (a raw intercept trades off against the levels of one-hot features and missing
        # indicators; the log-odds at another population would be an extrapolation)
        e = np.concatenate([[1.0], D.mean(axis=0)])
        w = w.copy()
        w[0], var[0] = float(e @ w), float(e @ cov @ e)
        ids.append(t.task_id)
        thetas.append(w)
        variances.append(np.clip(var, *VAR_BOUNDS))
        sizes.append(t.n_rows)
    if not ids:
        raise ValidationError("no tasks to summarise; the index holds no task rows")
    return TaskSummaries(
        ids, np.asarray(thetas), np.asarray(variances), np.asarray(sizes, dtype=np.int64)
    )


def ngram_buckets(n_words: np.ndarray, doc_freq: np.ndarray, n_docs: int) -> list[np.ndarray]:
    """Groups of description features that share one kernel scale: by n-gram length and by
    how many descriptions hold them (2-3, 4-7, 8-15, ... up to all of them).

    The groups mirror the levels of a task hierarchy: words shared by a few tasks name a
    narrow group (a disease, a procedure's body part), words shared by many a broad one
    (an organ system, an outcome), and words in every description are template. The
    marginal likelihood then weighs each level, with a handful of scales instead of one
    per word, which stays stable on an index of a few dozen tasks.

    Returns
    -------
    A list of boolean masks over the features (non-empty ones only).
    """
    edges = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    edges = [e for e in edges if e < n_docs] + [n_docs + 1]
    out = []
    for k in sorted(set(int(v) for v in n_words)):
        for lo, hi in zip([1, *edges[:-1]], edges, strict=True):
            m = (n_words == k) & (doc_freq >= lo) & (doc_freq < hi)
            if m.any():
                out.append(m)
    return out


def _gaussian_nll(S: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray] | None:
    """The negative log marginal likelihood of the columns of ``Y`` (n, m) under ``N(0, S)``, up
    to a constant, and ``M = S^-1 Y Y' S^-1 - m S^-1``: the derivative of the likelihood with
    respect to ``S`` is ``M / 2``, so a kernel scale ``h`` of ``h K`` gets ``-0.5 sum(M * K) h``
    in log scale. None when ``S`` is not positive definite."""
    from scipy.linalg.lapack import dpotri

    try:
        c = cho_factor(S, lower=True)
    except np.linalg.LinAlgError:
        return None
    A = cho_solve(c, Y)
    inv, info = dpotri(c[0], lower=1)  # S^-1 from the factor: half the work of solving for I
    if info != 0:
        return None
    inv = np.tril(inv) + np.tril(inv, -1).T
    m = Y.shape[1]
    value = 0.5 * float(np.sum(Y * A)) + m * float(np.sum(np.log(np.diag(c[0]))))
    return value, A @ A.T - m * inv


def fit_kernel_scales(
    Ks: Sequence[np.ndarray], Y: np.ndarray, V: np.ndarray
) -> tuple[np.ndarray, float]:
    """Scales ``h`` and a nugget maximising the marginal likelihood of
    ``Y[:, p] ~ N(0, sum_k h_k K_k + diag(nugget + mean(V, axis=1)))`` over the columns of ``Y``
    (type-II maximum likelihood, L-BFGS-B on the log scales with exact gradients).

    Returns
    -------
    (h, nugget): scales (len(Ks),) and the nugget, each in [1e-8, 1e3].
    """
    from scipy.optimize import minimize

    noise = V.mean(axis=1)

    def nll(log_h):
        h = np.exp(log_h)
        S = sum(hk * K for hk, K in zip(h[:-1], Ks, strict=True)) + np.diag(h[-1] + noise)
        fit = _gaussian_nll(S, Y)
        if fit is None:
            return 1e12, np.zeros_like(log_h)
        value, M = fit
        grad = [-0.5 * float(np.sum(M * K)) * hk for hk, K in zip(h[:-1], Ks, strict=True)]
        return value, np.array([*grad, -0.5 * float(np.trace(M)) * h[-1]])

    x0 = np.log(np.full(len(Ks) + 1, 0.01))
    res = minimize(nll, x0, jac=True, method="L-BFGS-B", bounds=[(-18.4, 6.9)] * len(x0))
    h = np.exp(res.x)
    return h[:-1], float(h[-1])


#: SD of a feature's log kernel scale around its bucket's in :func:`fit_feature_scales` (the
#: statistical generator's ``ard_prior_sd``; chosen among 0.5, 1 and 2 by validation inside the
#: index of a design family, ``benchmarks/design_validation.py``)
ARD_PRIOR_SD = 2.0
#: the SDs :func:`fit_feature_scales` accepts: from scales held at their bucket's (1e-3) to
#: plain ARD (1e3; a log scale moves at most about 25 within the optimiser's bounds)
ARD_PRIOR_SD_RANGE = (1e-3, 1e3)


def fit_feature_scales(
    Phi: np.ndarray,
    Y: np.ndarray,
    V: np.ndarray,
    scales: np.ndarray,
    nugget: float,
    *,
    prior_sd: float = ARD_PRIOR_SD,
    max_iter: int = 200,
) -> tuple[np.ndarray, float]:
    """One kernel scale per feature (automatic relevance determination), each shrunk towards
    the scale of its bucket.

    The model is :func:`fit_kernel_scales`'s with the linear kernel ``sum_v h_v phi_v phi_v'``
    of the feature columns ``phi_v``: ``Y[:, p] ~ N(0, sum_v h_v phi_v phi_v' + diag(nugget +
    mean(V, axis=1)))``. A scale per feature lets the marginal likelihood tell apart words of
    one bucket (similar document frequency) that name a level with an effect (an organ system)
    from those that do not (a population, whose effect is specific to each disease); this is
    automatic relevance determination (MacKay, *ASHRAE Transactions* 100, 1994; Rasmussen &
    Williams, *Gaussian Processes for Machine Learning*, 2006, sec. 5.1). With hundreds of
    words and a few hundred tasks, plain ARD overfits, so each log scale has a normal
    hyperprior centred on the log of its starting value (its bucket's scale) with SD
    ``prior_sd``: the estimate is the hyperparameters' posterior mode (type-II MAP), found by
    L-BFGS-B on the log scales with exact gradients.

    Parameters
    ----------
    Phi : (n, F) features of the ``n`` tasks.
    Y, V : (n, m) deviations and their sampling variances, as for :func:`fit_kernel_scales`.
    scales : (F,) starting scales and prior centres (each feature's bucket scale); a feature
        whose scale is below 1e-8 is left out (kept at 0).
    nugget : the starting nugget (it has no hyperprior).
    prior_sd : SD of each log scale around its centre, within :data:`ARD_PRIOR_SD_RANGE`.
    max_iter : L-BFGS-B iterations at most (>= 1).

    Returns
    -------
    (scales, nugget): scales (F,), 0 where left out, the others in [1e-8, 1e3].

    Raises
    ------
    ValidationError
        If the shapes disagree (or ``n`` or ``m`` is 0), a value is not a real number, is NaN,
        infinite or negative, or ``nugget``, ``prior_sd`` or ``max_iter`` is out of range.
    """
    from scipy.optimize import minimize

    try:
        Phi, Y, V, scales = (
            np.asarray(a, dtype=float) if np.isrealobj(a) else None for a in (Phi, Y, V, scales)
        )
    except (TypeError, ValueError):
        Phi = None
    if any(a is None for a in (Phi, Y, V, scales)):
        raise ValidationError("fit_feature_scales: Phi, Y, V and scales must be real numbers")
    if Y.ndim != 2 or V.shape != Y.shape or Phi.ndim != 2 or len(Phi) != len(Y) or Y.size == 0:
        raise ValidationError(
            f"fit_feature_scales needs Phi (n, F), Y and V (n, m) of one n, with n and m at "
            f"least 1; got {Phi.shape}, {Y.shape} and {V.shape}"
        )
    if scales.shape != (Phi.shape[1],):
        raise ValidationError(
            f"fit_feature_scales needs one starting scale per feature ({Phi.shape[1]}), got "
            f"shape {scales.shape}"
        )
    if not all(np.all(np.isfinite(a)) for a in (Phi, Y, V, scales)):
        raise ValidationError("fit_feature_scales: Phi, Y, V and scales must be finite")
    if np.any(scales < 0) or np.any(V < 0):
        raise ValidationError("fit_feature_scales: scales >= 0 and variances V >= 0 are needed")
    nugget = check_number(nugget, "nugget", ge=0)
    prior_sd = check_number(
        prior_sd, "prior_sd", ge=ARD_PRIOR_SD_RANGE[0], le=ARD_PRIOR_SD_RANGE[1]
    )
    max_iter = check_int(max_iter, "max_iter", ge=1)
    noise = V.mean(axis=1)
    on = scales >= 1e-8
    F = Phi[:, on]
    centre = np.log(np.clip(scales[on], 1e-8, 1e3))

    def nll(x):
        h = np.exp(x)
        fit = _gaussian_nll((F * h[:-1]) @ F.T + np.diag(h[-1] + noise), Y)
        if fit is None:
            return 1e12, np.zeros_like(x)
        value, M = fit
        d = x[:-1] - centre
        grad = -0.5 * np.einsum("ij,ij->j", F, M @ F) * h[:-1] + d / prior_sd**2
        value += 0.5 * float(d @ d) / prior_sd**2
        return value, np.concatenate([grad, [-0.5 * float(np.trace(M)) * h[-1]]])

    x0 = np.concatenate([centre, [np.log(np.clip(nugget, 1e-8, 1e3))]])
    res = minimize(
        nll,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-18.4, 6.9)] * len(x0),
        options={"maxiter": max_iter},
    )
    out = np.zeros(len(scales))
    out[on] = np.exp(res.x[:-1])
    return out, float(np.exp(res.x[-1]))


#: a bucket is split by :func:`split_by_score` only when the score pools at least this many
#: parameters (columns of ``Y``): one column's score is a single chi-square(1) draw, too noisy
#: to sort features by (on the intercept alone, splitting lost held-out log-loss on procedure
#: families outside the benchmarks; ``benchmarks/design_validation.py``)
MIN_SCORE_COLUMNS = 5


def split_by_score(
    Phi: np.ndarray,
    buckets: Sequence[np.ndarray],
    Y: np.ndarray,
    V: np.ndarray,
    scales: np.ndarray,
    nugget: float,
    *,
    min_features: int = 4,
) -> list[np.ndarray]:
    """Each bucket of features split in two by a score test of each feature's own effect.

    Under the model that :func:`fit_kernel_scales` fitted, ``S = sum_k h_k Phi_k Phi_k' +
    diag(nugget + mean(V, axis=1))``, and for a feature column ``phi`` the projection
    ``phi' S^-1 y`` of each column ``y`` of ``Y`` is ``N(0, q)`` with ``q = phi' S^-1 phi``.
    The standardised score ``z = (sum_p (phi' S^-1 y_p)^2 / q - m) / sqrt(2 m)`` (``m``
    columns; the score test of a variance component, Lin, *Biometrika* 1997) is above 0 when
    the feature's direction holds more between-task variation than its bucket's shared scale
    gives it. A bucket with at least ``min_features`` features and both signs is replaced by
    its ``z > 0`` and ``z <= 0`` parts, so that features that track the parameters stop
    sharing one scale with those that do not (a one-step, two-level form of automatic
    relevance determination). The scales are then refitted on the new buckets.

    Parameters
    ----------
    Phi : (n, F) features of the ``n`` tasks.
    buckets : boolean masks over the ``F`` features (:func:`ngram_buckets`).
    Y, V : (n, m) deviations and their sampling variances, as for :func:`fit_kernel_scales`.
    scales, nugget : the fitted scales (one per bucket) and nugget.

    Returns
    -------
    The new list of boolean masks (the order of ``buckets``, a split bucket's two parts in
    its place).

    Raises
    ------
    ValidationError
        If the shapes disagree.
    """
    Phi, Y, V = (np.asarray(a, dtype=float) for a in (Phi, Y, V))
    if Y.ndim != 2 or V.shape != Y.shape or Phi.ndim != 2 or len(Phi) != len(Y):
        raise ValidationError(
            f"split_by_score needs Phi (n, F), Y and V (n, m) of one n; got {Phi.shape}, "
            f"{Y.shape} and {V.shape}"
        )
    if len(scales) != len(buckets) or any(len(b) != Phi.shape[1] for b in buckets):
        raise ValidationError(
            f"split_by_score needs one scale per bucket and masks over the {Phi.shape[1]} "
            f"features; got {len(scales)} scales and {len(buckets)} buckets"
        )
    m = Y.shape[1]
    K = sum(h * (Phi[:, b] @ Phi[:, b].T) for h, b in zip(scales, buckets, strict=True))
    c = cho_factor(K + np.diag(nugget + V.mean(axis=1)), lower=True)
    q = np.maximum(np.sum(Phi * cho_solve(c, Phi), axis=0), 1e-12)
    z = (np.sum((cho_solve(c, Y).T @ Phi) ** 2, axis=0) / q - m) / np.sqrt(2 * m)
    out = []
    for b in buckets:
        b = np.asarray(b, dtype=bool)
        up, down = b & (z > 0), b & (z <= 0)
        out += [up, down] if b.sum() >= min_features and up.any() and down.any() else [b]
    return out


def glmm_map(
    features: Sequence[np.ndarray],
    scales: Sequence[np.ndarray],
    columns: Sequence[Sequence[int]],
    nuggets: Sequence[float],
    base: np.ndarray,
    rows: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    max_iter: int = 2000,
) -> list[np.ndarray]:
    """The text meta-regression fitted on the tasks' rows instead of their summaries: the MAP
    of a logistic mixed model whose random effects are the description's features.

    Task ``t``'s parameters (centred form, shape (P,)) are

        theta_t = base + sum_g phi_gt W_g + u_t,
        W_g[v, :] ~ N(0, scales[g][v]),  u_t[cols_g] ~ N(0, nuggets[g]),

    and its rows ``(A_t, y_t)`` are Bernoulli with log-odds ``A_t @ theta_t``. With the kernel
    scales and nuggets of the summary fit (type-II maximum likelihood on the task summaries,
    :func:`fit_kernel_scales`), this is that Gaussian process with the exact Bernoulli
    likelihood of every row instead of a Gaussian approximation of each task's fit: a small
    task's rows count as the rows they are, and a MAP fit shrunk towards the pooled model is
    never mistaken for an unbiased observation. The estimate is the penalised likelihood's mode
    (Breslow & Clayton, *J. Am. Stat. Assoc.* 88, 1993, penalised quasi-likelihood), found by
    scipy's L-BFGS-B with exact gradients on whitened effects.

    Parameters
    ----------
    features : per group ``g``, the tasks' description features ``phi_g``, shape (n, V_g).
    scales : per group, the prior variance of each feature's effect, shape (V_g,).
    columns : per group, the parameter columns it holds (the groups partition ``range(P)``).
    nuggets : per group, the variance of a task's own deviation no description explains.
    base : the pooled model in centred form, shape (P,).
    rows : per task, ``(A, y)``: its centred design with the intercept column, shape (n_t, P),
        and its 0/1 labels, shape (n_t,).
    max_iter : L-BFGS-B iterations at most.

    Returns
    -------
    Per group, the feature effects ``W_g``, shape (V_g, len(columns[g])): a new description's
    centred parameters are ``base + sum_g phi_g W_g``.

    Raises
    ------
    ValidationError
        If the shapes disagree, a value is NaN or infinite, a label is not 0 or 1, a scale or
        nugget is negative, ``max_iter`` is below 1, or no task has rows.

    Warns
    -----
    sklearn.exceptions.ConvergenceWarning
        When L-BFGS-B stops before converging (its last estimate is returned).
    """
    from scipy.optimize import minimize
    from scipy.sparse import csr_matrix
    from scipy.special import expit, log_expit

    features, scales, cols, nuggets, base, rows = _glmm_inputs(
        features, scales, columns, nuggets, base, rows
    )
    max_iter = check_int(max_iter, "max_iter", ge=1)
    n, P = len(rows), len(base)
    sizes = [len(y) for _, y in rows]
    A = np.vstack([a for a, _ in rows])
    y = np.concatenate([v for _, v in rows])
    owner = np.repeat(np.arange(n), sizes)
    by_task = csr_matrix((np.ones(len(y)), (owner, np.arange(len(y)))), shape=(n, len(y)))
    roots = [np.sqrt(s)[:, None] for s in scales]
    nug = np.zeros(P)
    for c, v in zip(cols, nuggets, strict=True):
        nug[c] = np.sqrt(v)
    splits = np.cumsum([F.shape[1] * len(c) for F, c in zip(features, cols, strict=True)])

    def unpack(x):
        parts = np.split(x[: splits[-1]], splits[:-1])
        Z = [p.reshape(F.shape[1], len(c)) for p, F, c in zip(parts, features, cols, strict=True)]
        return Z, x[splits[-1] :].reshape(n, P)

    def objective(x):
        Z, E = unpack(x)
        theta = base + E * nug
        for F, r, c, z in zip(features, roots, cols, Z, strict=True):
            theta[:, c] += F @ (r * z)
        eta = np.einsum("ij,ij->i", A, theta[owner])
        value = -float(np.sum(y * log_expit(eta) + (1 - y) * log_expit(-eta)))
        grad_theta = by_task @ (A * (expit(eta) - y)[:, None])
        grads = [
            (r * (F.T @ grad_theta[:, c]) + z).ravel()
            for F, r, c, z in zip(features, roots, cols, Z, strict=True)
        ]
        return value + 0.5 * float(x @ x), np.concatenate([*grads, (grad_theta * nug + E).ravel()])

    x0 = np.zeros(splits[-1] + n * P)
    res = minimize(objective, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    if not res.success:
        from sklearn.exceptions import ConvergenceWarning

        warnings.warn(
            f"glmm_map: L-BFGS-B stopped before converging ({res.message}) after {res.nit} "
            f"iterations; the effects are its last estimate (raise max_iter={max_iter})",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
    Z, _ = unpack(res.x)
    return [r * z for r, z in zip(roots, Z, strict=True)]


def _glmm_inputs(features, scales, columns, nuggets, base, rows):
    """:func:`glmm_map`'s arguments as float arrays, or a :class:`ValidationError` naming the
    first problem of each kind (shapes, non-finite values, labels other than 0/1)."""
    base = np.asarray(base, dtype=float)
    if base.ndim != 1 or not np.all(np.isfinite(base)):
        raise ValidationError("glmm_map: base must be a finite vector of the P parameters")
    P = len(base)
    features = [np.asarray(F, dtype=float) for F in features]
    scales = [np.asarray(v, dtype=float) for v in scales]
    cols = [np.asarray(c, dtype=np.int64).reshape(-1) for c in columns]
    nuggets = [float(v) for v in nuggets]
    if not (len(features) == len(scales) == len(cols) == len(nuggets)) or sorted(
        np.concatenate(cols).tolist() if cols else []
    ) != list(range(P)):
        raise ValidationError(
            "glmm_map needs one feature matrix, scale vector and nugget per group, and groups "
            "that partition the parameters"
        )
    rows = list(rows)
    for g, (F, v) in enumerate(zip(features, scales, strict=True)):
        if F.ndim != 2 or v.ndim != 1 or F.shape != (len(rows), len(v)):
            raise ValidationError(
                f"glmm_map: group {g}: each feature matrix must be (tasks, len(scales)) = "
                f"({len(rows)}, {v.size}), got {F.shape}"
            )
        if not np.all(np.isfinite(F)):
            raise ValidationError(f"glmm_map: group {g}: the features hold NaN or infinity")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValidationError(f"glmm_map: group {g}: scales must be finite and >= 0")
    if any(not np.isfinite(v) or v < 0 for v in nuggets):
        raise ValidationError(f"glmm_map: nuggets must be finite and >= 0, got {nuggets}")
    out = []
    for t, (A, y) in enumerate(rows):
        A, y = np.asarray(A, dtype=float), np.asarray(y, dtype=float)
        if A.ndim != 2 or A.shape[1] != P or y.ndim != 1 or len(y) != len(A):
            raise ValidationError(
                f"glmm_map: rows[{t}]: the design must be (n_t, {P}) and the labels (n_t,), got "
                f"{A.shape} and {y.shape}"
            )
        if not np.all(np.isfinite(A)):
            raise ValidationError(f"glmm_map: rows[{t}]: the design holds NaN or infinity")
        if not np.all((y == 0) | (y == 1)):
            raise ValidationError(f"glmm_map: rows[{t}]: labels must be 0 or 1")
        out.append((A, y))
    if not out or sum(len(y) for _, y in out) == 0:
        raise ValidationError("glmm_map needs at least one task with rows")
    return features, scales, cols, nuggets, base, out


def embedding_kernel(
    E: np.ndarray, F: np.ndarray | None = None, *, sharpness: float = SHARPNESS
) -> np.ndarray:
    """``exp(sharpness * (cos - 1))`` between unit description vectors: 1 for the same text,
    ``exp(-sharpness)`` for orthogonal ones. Shapes (n, d) and (m, d) give (m, n)."""
    F = E if F is None else F
    return np.exp(sharpness * (F @ E.T - 1.0))


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


__all__ = [
    "ARD_PRIOR_SD",
    "ARD_PRIOR_SD_RANGE",
    "INTERCEPT_PRIOR_SD",
    "PRIOR_SD",
    "SHARPNESS",
    "MIN_SCORE_COLUMNS",
    "KernelRegression",
    "TaskSummaries",
    "centring",
    "embedding_kernel",
    "fit_feature_scales",
    "fit_kernel_scales",
    "glmm_map",
    "ngram_buckets",
    "prior_precisions",
    "split_by_score",
    "task_summaries",
]
