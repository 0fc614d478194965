"""Batched L2-penalised logistic regression for many small independent tasks.

:func:`fit_logistic_batched` fits thousands of binary logistic regressions at
once with a batched Newton method in torch (CPU or CUDA, same code). Each task
minimises the objective of scikit-learn's ``LogisticRegression(C=C)`` with an
L2 penalty (``l1_ratio=0``)::

    0.5 * ||w||^2 + C * sum_i s_i * logloss(y_i, x_i @ w + b)

where the intercept ``b`` is not penalised and ``s_i`` are optional sample
weights. (scikit-learn >= 1.8 minimises ``mean(logloss) + ||w||^2 / (2 C n)``
internally, which has the same minimiser.)

:func:`fit_logistic_sklearn_loop` is the reference: a Python loop over
scikit-learn's lbfgs solver with the same per-task status handling.
:func:`benchmark_fit` times one against the other.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = [rng.normal(size=(n, 3)) for n in (30, 50, 80)]
>>> y = [(x[:, 0] + rng.normal(size=len(x)) > 0).astype(int) for x in X]
>>> fit = fit_logistic_batched(X, y, device="cpu")
>>> fit.coef.shape, fit.status
((3, 3), ['ok', 'ok', 'ok'])
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
import torch

from ragim.checks import check_int, check_number
from ragim.device import resolve_device
from ragim.errors import ValidationError

__all__ = [
    "BatchedFit",
    "fit_logistic_batched",
    "fit_logistic_sklearn_loop",
    "benchmark_fit",
    "compare_solvers",
    "sklearn_loop_seconds",
]

_MAX_PROBLEMS_SHOWN = 20
# Cap on the elements of one padded (B, n_max, p) chunk; batch_size is the
# other cap. On the CPU small chunks (8 MB in float64) stay in the allocator's
# reuse range and in cache, which is markedly faster than huge ones.
_MAX_CHUNK_ELEMENTS = {"cpu": 2**20, "cuda": 2**26}


@dataclass
class BatchedFit:
    """Per-task results of a batched logistic-regression fit.

    Attributes
    ----------
    coef : ndarray of shape (T, d), float64
        Coefficients; rows of tasks that could not be fitted are NaN.
    intercept : ndarray of shape (T,), float64
        Intercepts (0.0 when ``fit_intercept=False``; NaN for unfitted tasks).
    converged : ndarray of shape (T,), bool
        Whether the solver met its tolerance for the task.
    n_iter : ndarray of shape (T,), int
        Solver iterations spent on the task (0 for unfitted tasks).
    status : list of str
        ``"ok"`` or the reason the task was not fitted or did not converge,
        e.g. ``"single-class (all 1)"``, ``"too few rows (1 < 2)"``,
        ``"non-finite values in X (3 entries)"``, ``"did not converge ..."``.

    Examples
    --------
    >>> fit = BatchedFit(np.zeros((1, 2)), np.zeros(1), np.ones(1, bool), np.ones(1, int), ["ok"])
    >>> fit.n_tasks
    1
    """

    coef: np.ndarray
    intercept: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    status: list[str]

    @property
    def n_tasks(self) -> int:
        """Number of tasks."""
        return len(self.status)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the tasks whose status is ``"ok"``."""
        return np.array([s == "ok" for s in self.status], dtype=bool)


# --------------------------------------------------------------------------- #
# Input validation and per-task status
# --------------------------------------------------------------------------- #


@dataclass
class _Tasks:
    """Validated tasks, concatenated row-wise."""

    X: np.ndarray  # (N, d) float64, all tasks stacked
    y: np.ndarray  # (N,) float64
    sw: np.ndarray | None  # (N,) float64 or None
    n: np.ndarray  # (T,) rows per task
    offsets: np.ndarray  # (T,) first row of each task in X
    d: int
    status: list[str]  # "ok" or why the task cannot be fitted

    @property
    def n_tasks(self) -> int:
        return len(self.n)


def _raise_problems(what: str, problems: list[str]) -> None:
    if not problems:
        return
    shown = problems[:_MAX_PROBLEMS_SHOWN]
    if len(problems) > len(shown):
        shown = shown + [f"... and {len(problems) - len(shown)} more"]
    raise ValidationError(what, shown)


def _row_vector(v, n_rows: int, name: str, kind: str = "numeric") -> np.ndarray | str:
    """``v`` as a float vector with one entry per row, or the problem with it (a sentence)."""
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return f"{name} is not {kind} ({exc})"
    if a.ndim != 1 or a.shape[0] != n_rows:
        return f"{name} must be 1-D with one entry per row of X ({n_rows}), got shape {a.shape}"
    return a


def _to_list(obj, name: str) -> list:
    if isinstance(obj, np.ndarray):
        if obj.ndim == 0:
            raise ValidationError(f"{name} must be a list of per-task arrays, got a scalar")
        return list(obj)
    if isinstance(obj, torch.Tensor):
        return list(obj.detach().cpu().numpy())
    try:
        return list(obj)
    except TypeError:
        raise ValidationError(
            f"{name} must be a list of per-task arrays, got {type(obj).__name__}"
        ) from None


def _prepare_tasks(X_list, y_list, sample_weight_list=None) -> _Tasks:
    """Validate the structure of the input and work out each task's status."""
    Xs = _to_list(X_list, "X_list")
    ys = _to_list(y_list, "y_list")
    sws = None if sample_weight_list is None else _to_list(sample_weight_list, "sample_weight_list")
    T = len(Xs)
    if len(ys) != T:
        raise ValidationError(f"X_list has {T} tasks but y_list has {len(ys)}; they must match")
    if sws is not None and len(sws) != T:
        raise ValidationError(
            f"X_list has {T} tasks but sample_weight_list has {len(sws)}; they must match"
        )

    problems: list[str] = []
    d: int | None = None
    d_task = -1
    Xa: list[np.ndarray] = []
    ya: list[np.ndarray] = []
    swa: list[np.ndarray] = []
    for t in range(T):
        try:
            x = np.asarray(Xs[t], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            problems.append(f"task {t}: X is not numeric ({exc})")
            continue
        if x.ndim != 2:
            problems.append(f"task {t}: X must be 2-D (n_rows, n_features), got shape {x.shape}")
            continue
        if d is None:
            d, d_task = x.shape[1], t
        elif x.shape[1] != d:
            problems.append(
                f"task {t}: X has {x.shape[1]} features but task {d_task} has {d}; "
                "all tasks must share the same features"
            )
            continue
        yy = _row_vector(ys[t], x.shape[0], "y", "numeric 0/1")
        if isinstance(yy, str):
            problems.append(f"task {t}: {yy}")
            continue
        if sws is not None:
            ww = _row_vector(sws[t], x.shape[0], "sample_weight")
            if isinstance(ww, str):
                problems.append(f"task {t}: {ww}")
                continue
            if np.any(ww < 0):
                problems.append(f"task {t}: sample_weight has negative entries")
                continue
            swa.append(ww)
        Xa.append(x)
        ya.append(yy)
    _raise_problems("invalid input to the batched logistic-regression fit", problems)
    if d is None:
        d = 0

    n = np.array([len(yy) for yy in ya], dtype=np.int64)
    offsets = np.zeros(T, dtype=np.int64)
    if T:
        offsets[1:] = np.cumsum(n)[:-1]
    X = np.concatenate(Xa, axis=0) if T else np.zeros((0, d))
    y = np.concatenate(ya) if T else np.zeros(0)
    sw = (np.concatenate(swa) if T else np.zeros(0)) if sws is not None else None
    tid = np.repeat(np.arange(T), n)

    # y must be binary 0/1 (non-finite entries are a per-task status instead).
    bad_y = np.isfinite(y) & (y != 0) & (y != 1)
    if bad_y.any():
        for t in np.unique(tid[bad_y]):
            seg = y[offsets[t] : offsets[t] + n[t]]
            vals = np.unique(seg[np.isfinite(seg)])
            shown = ", ".join(f"{v:g}" for v in vals[:6]) + (", ..." if len(vals) > 6 else "")
            problems.append(f"task {t}: y must be binary 0/1, found values {{{shown}}}")
        _raise_problems("invalid labels for the batched logistic-regression fit", problems)

    def per_task(mask: np.ndarray) -> np.ndarray:
        return np.bincount(tid, weights=mask.astype(np.float64), minlength=T).astype(np.int64)

    nonfinite_X = np.zeros(T, np.int64)
    if d and X.shape[0]:
        bad_rows = np.flatnonzero(~np.isfinite(X.sum(axis=1)))  # a sum is finite iff every entry is
        if len(bad_rows):
            per_row = (~np.isfinite(X[bad_rows])).sum(axis=1)
            nonfinite_X = np.bincount(tid[bad_rows], weights=per_row, minlength=T).astype(np.int64)
    nonfinite_y = per_task(~np.isfinite(y))
    nonfinite_w = per_task(~np.isfinite(sw)) if sw is not None else np.zeros(T, np.int64)
    used = np.ones(len(y), dtype=bool) if sw is None else (sw > 0)
    n_used = per_task(used)
    n_pos = per_task(used & (y == 1))
    n_neg = per_task(used & (y == 0))

    status = ["ok"] * T
    for t in np.flatnonzero(
        (n_used < 2)
        | (nonfinite_X > 0)
        | (nonfinite_y > 0)
        | (nonfinite_w > 0)
        | (n_pos == 0)
        | (n_neg == 0)
    ):
        if n[t] < 2:
            status[t] = f"too few rows ({n[t]} < 2)"
        elif nonfinite_X[t]:
            status[t] = f"non-finite values in X ({nonfinite_X[t]} entries)"
        elif nonfinite_y[t]:
            status[t] = f"non-finite values in y ({nonfinite_y[t]} entries)"
        elif nonfinite_w[t]:
            status[t] = f"non-finite values in sample_weight ({nonfinite_w[t]} entries)"
        elif n_used[t] < 2:
            status[t] = f"too few rows with positive sample_weight ({n_used[t]} < 2)"
        elif n_neg[t] == 0:
            status[t] = "single-class (all 1)"
        else:
            status[t] = "single-class (all 0)"
    return _Tasks(X=X, y=y, sw=sw, n=n, offsets=offsets, d=d, status=status)


# --------------------------------------------------------------------------- #
# Batched Newton solver
# --------------------------------------------------------------------------- #


def _objective(z, y, s, theta, pen):
    """Sum_i s_i * (log(1 + e^z_i) - y_i z_i) + 0.5 * sum_j pen_j theta_j^2, per task."""
    softplus = z.clamp(min=0) + torch.log1p(torch.exp(-z.abs()))
    return (s * (softplus - y * z)).sum(-1) + 0.5 * (pen * theta * theta).sum(-1)


def _gradient(Xa, z, y, s, theta, pen):
    """Per-task gradient of the objective, and sigmoid(z)."""
    sig = torch.sigmoid(z)
    r = s * (sig - y)
    g = torch.bmm(r.unsqueeze(1), Xa).squeeze(1) + pen * theta
    return g, sig


def _hessian(X, XT, h, pen):
    """Per-task Hessian ``X^T diag(h) X + diag(pen)`` (in the dtype of ``X``), jittered."""
    H = torch.bmm(XT * h.to(X.dtype).unsqueeze(1), X)
    diag = H.diagonal(dim1=1, dim2=2)
    diag += pen.to(X.dtype)
    # A relative jitter keeps the Cholesky factorisation alive when the
    # (unpenalised) intercept direction is nearly flat; it only changes the
    # search direction, never the minimiser, because the gradient is exact.
    diag += 1e-12 * (1.0 + diag.abs())
    return H


def _newton_direction(X, XT, Xf, XfT, s, sig, g, pen):
    """Newton direction and Cholesky factor of the (damped) Hessian per task.

    The Hessian is formed and factorised from ``Xf`` / ``XfT`` (float32 copies when
    the solver runs in float64, else the same tensors): an inexact Newton step with
    an exact gradient still converges to the exact minimiser, at the same rate while
    ``cond(H) * eps32`` is small. Tasks whose factorisation fails or gives a
    non-finite step are redone from ``X`` in full precision.
    """
    dt = X.dtype
    h = s * sig * (1.0 - sig)
    L, info = torch.linalg.cholesky_ex(_hessian(Xf, XfT, h, pen))
    step = -torch.cholesky_solve(g.to(L.dtype).unsqueeze(-1), L).squeeze(-1).to(dt)
    bad = (info != 0) | ~torch.isfinite(step).all(-1)
    if bool(bad.any()):
        Hb = _hessian(X[bad], XT[bad], h[bad], pen)
        Lb, infob = torch.linalg.cholesky_ex(Hb)
        sb = -torch.cholesky_solve(g[bad].unsqueeze(-1), Lb).squeeze(-1)
        redo = (infob != 0) | ~torch.isfinite(sb).all(-1)
        if bool(redo.any()):
            Hr = Hb[redo]
            scale = Hr.diagonal(dim1=1, dim2=2).abs().amax(-1).clamp(min=1.0)
            eye = torch.eye(Hb.shape[-1], dtype=dt, device=Hb.device)
            Lr, infor = torch.linalg.cholesky_ex(Hr + (1e-6 * scale)[:, None, None] * eye)
            sr = -torch.cholesky_solve(g[bad][redo].unsqueeze(-1), Lr).squeeze(-1)
            # Last resort: a scaled gradient step (its factor is a scaled identity).
            fallback = (infor != 0) | ~torch.isfinite(sr).all(-1)
            sb[redo] = torch.where(fallback[:, None], -g[bad][redo] / scale[:, None], sr)
            Lb[redo] = torch.where(fallback[:, None, None], scale.sqrt()[:, None, None] * eye, Lr)
        step[bad] = sb
        L[bad] = Lb.to(L.dtype)
    return step, L


# After this many iterations the tasks still running are ill-conditioned enough for the
# float32 Hessian to slow them down: they continue with the full-precision Hessian.
_LOW_PRECISION_ITERS = 12


def _newton_chunk(Xa, y, s, pen, *, max_iter: int, tol: float):
    """Minimise the per-task objective for a padded chunk.

    Xa: (B, n, p) with the intercept column appended; y, s: (B, n) with
    ``s = C * sample_weight * row_mask``; pen: (p,) 1 for penalised columns.
    Returns theta (B, p), converged (B,) bool, n_iter (B,) int64.

    Newton with Armijo step halving; converged tasks leave the working set.
    Gradients, objectives and the line search run in the dtype of ``Xa``; in
    float64 the Hessian is built and factorised in float32 (see
    :func:`_newton_direction`), which halves the cost of an iteration.
    """
    B, _, p = Xa.shape
    dev, dt = Xa.device, Xa.dtype
    theta_all = torch.zeros(B, p, dtype=dt, device=dev)
    conv_all = torch.zeros(B, dtype=torch.bool, device=dev)
    iters_all = torch.zeros(B, dtype=torch.int64, device=dev)
    eps = torch.finfo(dt).eps
    tol = max(float(tol), 10 * eps)
    slack = 64 * eps

    XT = Xa.transpose(1, 2).contiguous()  # both layouts keep every bmm on its fast path
    low = dt == torch.float64
    Xf, XfT = (Xa.float(), XT.float()) if low else (Xa, XT)
    idx = torch.arange(B, device=dev)  # chunk positions of the tasks in the working set
    theta = theta_all.clone()
    z = torch.zeros(y.shape, dtype=dt, device=dev)
    if pen[-1] == 0:  # intercept column: start it at the weighted log-odds
        sy = (s * y).sum(-1)
        theta[:, -1] = torch.log(sy) - torch.log(s.sum(-1) - sy)
        z += theta[:, -1:]
    f = _objective(z, y, s, theta, pen)
    L = None  # Cholesky factors of the previous iteration's Hessians
    for it in range(1, max_iter + 1):
        iters_all[idx] = it
        if low and it > _LOW_PRECISION_ITERS:
            low, Xf, XfT = False, Xa, XT
        g, sig = _gradient(Xa, z, y, s, theta, pen)
        if L is not None:
            chord = -torch.cholesky_solve(g.to(L.dtype).unsqueeze(-1), L).squeeze(-1).to(dt)
            # A chord step below tol is the Newton step to second order: the
            # task is finished without building another Hessian.
            small = chord.abs().amax(-1) <= tol * (1.0 + theta.abs().amax(-1))
            if bool(small.any()):
                theta_all[idx[small]] = theta[small] + chord[small]
                conv_all[idx[small]] = True
                keep = ~small
                idx = idx[keep]
                if not len(idx):
                    break
                theta, z, f, g, sig = theta[keep], z[keep], f[keep], g[keep], sig[keep]
                Xa, XT, y, s = Xa[keep], XT[keep], y[keep], s[keep]
                Xf, XfT = (Xf[keep], XfT[keep]) if low else (Xa, XT)
        step, L = _newton_direction(Xa, XT, Xf, XfT, s, sig, g, pen)
        gd = (g * step).sum(-1)
        dz = torch.bmm(step.unsqueeze(1), XT).squeeze(1)
        t = torch.ones(len(idx), dtype=dt, device=dev)
        f_new = _objective(z + dz, y, s, theta + step, pen)
        fail = ~(f_new <= f + 1e-4 * gd + slack * (f.abs() + 1.0))
        for _ in range(60):  # step halving, only on the tasks that need it
            if not bool(fail.any()):
                break
            fi = torch.nonzero(fail).squeeze(-1)
            t[fi] *= 0.5
            tf = t[fi, None]
            f_new[fi] = _objective(
                z[fi] + tf * dz[fi], y[fi], s[fi], theta[fi] + tf * step[fi], pen
            )
            thresh_fi = f[fi] + 1e-4 * t[fi] * gd[fi] + slack * (f[fi].abs() + 1.0)
            fail[fi] = ~(f_new[fi] <= thresh_fi)
        # Tasks still failing sit at the optimum up to rounding: keep them as is.
        t = torch.where(fail, torch.zeros_like(t), t)
        f = torch.where(fail, f, f_new)
        upd = t[:, None] * step
        theta = theta + upd
        z = z + t[:, None] * dz
        done = upd.abs().amax(-1) <= tol * (1.0 + theta.abs().amax(-1))
        if bool(done.any()):
            theta_all[idx[done]] = theta[done]
            conv_all[idx[done]] = True
            keep = ~done
            idx = idx[keep]
            if not len(idx):
                break
            theta, z, f, L = theta[keep], z[keep], f[keep], L[keep]
            Xa, XT, y, s = Xa[keep], XT[keep], y[keep], s[keep]
            Xf, XfT = (Xf[keep], XfT[keep]) if low else (Xa, XT)
    if len(idx):
        theta_all[idx] = theta
    return theta_all, conv_all, iters_all


def _chunks(n_sorted: np.ndarray, p: int, batch_size: int, max_elements: int):
    """Split tasks (sorted by row count) into [start, stop) chunks."""
    start, T = 0, len(n_sorted)
    while start < T:
        n_next = n_sorted[start : start + batch_size].astype(np.int64)
        # k tasks pad to k * n_sorted[start + k - 1] * p elements, increasing in k.
        fits = np.arange(1, len(n_next) + 1) * np.maximum(n_next, 1) * p <= max_elements
        stop = start + max(1, int(fits.sum()))
        yield start, stop
        start = stop


def fit_logistic_batched(
    X_list: list[np.ndarray] | np.ndarray,
    y_list,
    *,
    C: float = 1.0,
    fit_intercept: bool = True,
    sample_weight_list=None,
    max_iter: int = 100,
    tol: float = 1e-8,
    device: str | None = "auto",
    batch_size: int = 4096,
    dtype: torch.dtype = torch.float64,
    progress: bool = False,
    num_threads: int | None = None,
) -> BatchedFit:
    """Fit one L2-penalised binary logistic regression per task, all at once.

    Minimises ``0.5 * ||w||^2 + C * sum_i s_i * logloss_i`` per task (intercept
    not penalised), the objective of ``sklearn.linear_model.LogisticRegression``
    with the L2 penalty. Tasks are sorted by row count, padded into chunks of at
    most ``batch_size`` tasks and solved with a batched, damped Newton method
    (Cholesky solves, Armijo step halving). A task stops changing once its
    largest parameter update is ``<= tol * (1 + max |theta|)``.

    Parameters
    ----------
    X_list : list of (n_t, d) arrays, or a (T, n, d) array
        Features per task; ``d`` must be the same for all tasks.
    y_list : list of (n_t,) arrays, or a (T, n) array
        Binary 0/1 labels per task.
    C : float
        Inverse regularisation strength, as in scikit-learn.
    fit_intercept : bool
        Whether to fit an (unpenalised) intercept.
    sample_weight_list : list of (n_t,) arrays, optional
        Non-negative per-row weights.
    max_iter : int
        Maximum Newton iterations per task.
    tol : float
        Convergence tolerance on the parameter update (floored at 10 machine
        epsilons of ``dtype``).
    device : str or None
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... (see :func:`ragim.device.resolve_device`).
    batch_size : int
        Maximum number of tasks solved together.
    dtype : torch.dtype
        Compute precision; results are returned as float64.
    progress : bool
        Show a tqdm progress bar over chunks.
    num_threads : int, optional
        CPU threads for this call; ``None`` uses ``torch.get_num_threads()``.
        With more than one, chunks are solved in parallel Python threads, each
        running torch single-threaded (torch's thread setting is restored
        afterwards). This avoids torch's per-operation thread barriers, which
        made the solver 10x or more slower on cores shared with other busy
        processes. Results do not depend on the thread count.

    Returns
    -------
    BatchedFit
        Tasks that cannot be fitted (fewer than 2 rows, a single class,
        non-finite values) get NaN coefficients, ``converged=False`` and a
        status naming the reason; they never affect other tasks.

    Raises
    ------
    ValidationError
        For structurally wrong input (different numbers of tasks in the lists,
        different ``d`` between tasks, labels other than 0/1), naming the task.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> X = [rng.normal(size=(40, 2)), rng.normal(size=(1, 2))]
    >>> y = [(X[0][:, 1] > 0).astype(int), np.array([1])]
    >>> fit = fit_logistic_batched(X, y, C=0.5, device="cpu")
    >>> fit.status
    ['ok', 'too few rows (1 < 2)']
    >>> bool(fit.converged[0]), bool(np.isnan(fit.coef[1]).all())
    (True, True)
    """
    C = check_number(C, "C", gt=0)
    max_iter = check_int(max_iter, "max_iter", ge=1)
    batch_size = check_int(batch_size, "batch_size", ge=1)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValidationError(f"dtype must be a torch floating dtype, got {dtype!r}")
    num_threads = check_int(num_threads, "num_threads", ge=1, allow_none=True)
    dev = resolve_device(device)
    tasks = _prepare_tasks(X_list, y_list, sample_weight_list)
    T, d = tasks.n_tasks, tasks.d
    p = d + int(bool(fit_intercept))

    coef = np.full((T, d), np.nan)
    intercept = np.full(T, np.nan)
    converged = np.zeros(T, dtype=bool)
    n_iter = np.zeros(T, dtype=np.int64)
    status = list(tasks.status)

    valid = np.array([s == "ok" for s in status], dtype=bool)
    vidx = np.flatnonzero(valid)
    if len(vidx) and p == 0:  # no features and no intercept: nothing to fit
        converged[vidx] = True
        intercept[vidx] = 0.0
        vidx = vidx[:0]
    if len(vidx):
        order = vidx[np.argsort(tasks.n[vidx], kind="stable")]
        lens = tasks.n[order]
        cum = np.zeros(len(order) + 1, dtype=np.int64)
        cum[1:] = np.cumsum(lens)
        # Rows of all valid tasks, in sorted-task order, as one gather index.
        rows = np.repeat(tasks.offsets[order] - cum[:-1], lens) + np.arange(cum[-1])
        pen = torch.ones(p, dtype=dtype, device=dev)
        if fit_intercept:
            pen[d] = 0.0

        cap = _MAX_CHUNK_ELEMENTS["cuda" if dev.startswith("cuda") else "cpu"]
        chunk_list = list(_chunks(lens, max(p, 1), int(batch_size), cap))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(order), desc="logistic fits", unit="task", disable=None)

        def solve(a: int, b: int) -> int:
            B, nmax = b - a, int(lens[b - 1])
            r = rows[cum[a] : cum[b]]
            local = torch.from_numpy(np.repeat(np.arange(B), lens[a:b])).to(dev)
            pos = torch.from_numpy(np.arange(len(r)) - np.repeat(cum[a:b] - cum[a], lens[a:b]))
            pos = pos.to(dev)
            Xa = torch.zeros(B, nmax, p, dtype=dtype, device=dev)
            if d:
                Xa[local, pos, :d] = torch.from_numpy(tasks.X[r]).to(dev, dtype)
            if fit_intercept:
                Xa[local, pos, d] = 1.0
            yb = torch.zeros(B, nmax, dtype=dtype, device=dev)
            yb[local, pos] = torch.from_numpy(tasks.y[r]).to(dev, dtype)
            sb = torch.zeros(B, nmax, dtype=dtype, device=dev)
            w = np.full(len(r), float(C)) if tasks.sw is None else float(C) * tasks.sw[r]
            sb[local, pos] = torch.from_numpy(w).to(dev, dtype)

            theta, conv, its = _newton_chunk(Xa, yb, sb, pen, max_iter=int(max_iter), tol=tol)
            theta = theta.to("cpu", torch.float64).numpy()
            ids = order[a:b]  # chunks are disjoint, so workers never write the same rows
            coef[ids] = theta[:, :d]
            intercept[ids] = theta[:, d] if fit_intercept else 0.0
            converged[ids] = conv.cpu().numpy()
            n_iter[ids] = its.cpu().numpy()
            return B

        on_cpu = dev == "cpu"
        old_threads = torch.get_num_threads()
        n_threads = old_threads if num_threads is None else int(num_threads)
        workers = min(n_threads, len(chunk_list)) if on_cpu else 1
        try:
            if workers > 1:
                # On the CPU, chunks run in parallel Python threads, each with a
                # single-threaded torch: no per-op thread barriers, which keeps
                # the solver fast on cores shared with other busy processes.
                torch.set_num_threads(1)
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    futures = [pool.submit(solve, a, b) for a, b in chunk_list]
                    for fut in as_completed(futures):
                        done_tasks = fut.result()
                        if bar is not None:
                            bar.update(done_tasks)
            else:
                if on_cpu:
                    torch.set_num_threads(n_threads)
                for a, b in chunk_list:
                    done_tasks = solve(a, b)
                    if bar is not None:
                        bar.update(done_tasks)
        finally:
            torch.set_num_threads(old_threads)
            if bar is not None:
                bar.close()
        for t in vidx[~converged[vidx]]:
            status[t] = f"did not converge in {int(max_iter)} iterations"
    return BatchedFit(
        coef=coef, intercept=intercept, converged=converged, n_iter=n_iter, status=status
    )


# --------------------------------------------------------------------------- #
# Reference: a loop over scikit-learn
# --------------------------------------------------------------------------- #


def fit_logistic_sklearn_loop(
    X_list,
    y_list,
    *,
    C: float = 1.0,
    fit_intercept: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-4,
) -> BatchedFit:
    """Reference baseline: loop scikit-learn's ``LogisticRegression`` (lbfgs) over tasks.

    Same input checks and per-task statuses as :func:`fit_logistic_batched`;
    a task whose lbfgs run hits ``max_iter`` gets ``converged=False`` and a
    ``"did not converge ..."`` status. ``tol`` is scikit-learn's (default 1e-4).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.normal(size=(30, 2)), rng.normal(size=(20, 2))]
    >>> y = [(X[0][:, 0] > 0).astype(int), np.ones(20, int)]
    >>> fit_logistic_sklearn_loop(X, y).status
    ['ok', 'single-class (all 1)']
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    C = check_number(C, "C", gt=0)
    max_iter = check_int(max_iter, "max_iter", ge=1)
    tasks = _prepare_tasks(X_list, y_list)
    T, d = tasks.n_tasks, tasks.d
    coef = np.full((T, d), np.nan)
    intercept = np.full(T, np.nan)
    converged = np.zeros(T, dtype=bool)
    n_iter = np.zeros(T, dtype=np.int64)
    status = list(tasks.status)
    for t in range(T):
        if status[t] != "ok":
            continue
        sl = slice(tasks.offsets[t], tasks.offsets[t] + tasks.n[t])
        clf = LogisticRegression(C=C, fit_intercept=fit_intercept, max_iter=max_iter, tol=tol)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(tasks.X[sl], tasks.y[sl].astype(np.int64))
        coef[t] = clf.coef_[0]
        intercept[t] = clf.intercept_[0] if fit_intercept else 0.0
        n_iter[t] = int(np.max(clf.n_iter_))
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            status[t] = f"did not converge in {int(max_iter)} iterations"
        else:
            converged[t] = True
    return BatchedFit(
        coef=coef, intercept=intercept, converged=converged, n_iter=n_iter, status=status
    )


# --------------------------------------------------------------------------- #
# Benchmark
# --------------------------------------------------------------------------- #


def _random_tasks(n_tasks: int, n_features: int, seed: int) -> tuple[list, list]:
    """Synthetic logistic tasks: 20-200 rows each, random true coefficients.

    Examples
    --------
    >>> X, y = _random_tasks(3, 4, seed=0)
    >>> len(X), X[0].shape[1], set(np.unique(np.concatenate(y))) <= {0, 1}
    (3, 4, True)
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(20, 201, size=n_tasks)
    X_list, y_list = [], []
    for n in sizes:
        X = rng.normal(size=(int(n), n_features))
        w = rng.normal(size=n_features) * (1.5 / np.sqrt(max(n_features, 1)))
        b = rng.normal() * 0.5
        prob = 1.0 / (1.0 + np.exp(-(X @ w + b)))
        X_list.append(X)
        y_list.append((rng.random(int(n)) < prob).astype(np.int64))
    return X_list, y_list


def benchmark_fit(
    n_tasks: int = 10_000,
    n_features: int = 20,
    seed: int = 0,
    C: float = 1.0,
    device: str | None = "auto",
    baseline_tasks: int | None = None,
    baseline_tol: float = 1e-6,
    threads: Sequence[int] = (1,),
) -> dict:
    """Time :func:`fit_logistic_batched` against a scikit-learn loop, with equal threads.

    The batched solver fits all ``n_tasks`` synthetic tasks; the sklearn loop
    fits the first ``baseline_tasks`` of them (default ``min(n_tasks, 1000)``)
    and its tasks/s is extrapolated from that subset. ``max_abs_diff`` is the
    largest absolute difference of coefficients and intercepts over the tasks
    both fitted with status ``"ok"``.

    Each entry of ``threads`` is one equal-resources comparison: the batched
    solver on that many CPU threads (``num_threads``, with BLAS/OpenMP limited
    alike) against the sklearn loop split over that many processes, each limited
    to one BLAS/OpenMP thread (threadpoolctl). The top-level ``ours``,
    ``baseline`` and ``ratio`` are those of the first entry; ``by_threads`` has
    them all.

    scikit-learn runs at ``tol=baseline_tol`` (default 1e-6 rather than its own
    1e-4 default): at 1e-4 lbfgs stops with coefficients up to ~3e-3 away from
    the optimum, while at 1e-6 both solvers agree to ~1e-5.

    Examples
    --------
    >>> r = benchmark_fit(n_tasks=20, n_features=3, baseline_tasks=5, device="cpu")
    >>> sorted(r)
    ['baseline', 'by_threads', 'device', 'max_abs_diff', 'n', 'name', 'ours', 'ratio', 'threads']
    >>> r["n"], r["baseline"]["n"], r["threads"]
    (20, 5, {'ours': 1, 'baseline': 1})
    """
    X_list, y_list = _random_tasks(n_tasks, n_features, seed)
    return compare_solvers(
        [(X_list, y_list)],
        C=C,
        device=device,
        baseline_tasks=baseline_tasks,
        baseline_tol=baseline_tol,
        threads=threads,
        data=f"d={n_features}, 20-200 rows",
    )


def _sklearn_loop_one_thread(X_list, y_list, C: float, tol: float) -> BatchedFit:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return fit_logistic_sklearn_loop(X_list, y_list, C=C, tol=tol)


def sklearn_loop_seconds(
    X_list, y_list, *, C: float = 1.0, tol: float = 1e-6, threads: int = 1
) -> tuple[float, BatchedFit]:
    """Wall seconds of :func:`fit_logistic_sklearn_loop` over the tasks on ``threads``
    processes (joblib loky, started before the clock), each limited to one BLAS/OpenMP
    thread, and the fit.

    Examples
    --------
    >>> X, y = _random_tasks(4, 2, seed=0)
    >>> seconds, fit = sklearn_loop_seconds(X, y)
    >>> seconds > 0, fit.status
    (True, ['ok', 'ok', 'ok', 'ok'])
    """
    threads = max(1, min(int(threads), len(X_list)))
    if threads == 1:
        t0 = time.perf_counter()
        fit = _sklearn_loop_one_thread(X_list, y_list, C, tol)
        return time.perf_counter() - t0, fit
    from joblib import Parallel, delayed

    parts = np.array_split(np.arange(len(X_list)), threads)
    with Parallel(n_jobs=threads, backend="loky") as pool:
        pool(
            delayed(_sklearn_loop_one_thread)(X_list[:1], y_list[:1], C, tol)
            for _ in range(threads)
        )  # start
        t0 = time.perf_counter()
        fits = pool(
            delayed(_sklearn_loop_one_thread)(
                [X_list[i] for i in part], [y_list[i] for i in part], C, tol
            )
            for part in parts
        )
        seconds = time.perf_counter() - t0
    return seconds, BatchedFit(
        coef=np.concatenate([f.coef for f in fits]),
        intercept=np.concatenate([f.intercept for f in fits]),
        converged=np.concatenate([f.converged for f in fits]),
        n_iter=np.concatenate([f.n_iter for f in fits]),
        status=[st for f in fits for st in f.status],
    )


def compare_solvers(
    chunks: Iterable[tuple[list, list]],
    *,
    C: float = 1.0,
    device: str | None = "auto",
    baseline_tasks: int | None = None,
    baseline_tol: float = 1e-6,
    threads: Sequence[int] = (1,),
    data: str = "",
) -> dict:
    """Time the batched solver on every task of ``chunks`` (an iterable of ``(X_list,
    y_list)`` pairs, so a million tasks need never be in memory at once) against the
    scikit-learn loop on the first ``baseline_tasks``, once per thread count in
    ``threads`` (see :func:`benchmark_fit`); returns the benchmark dict. Only solver
    time is counted, never the making of the chunks.
    """
    from threadpoolctl import threadpool_limits

    threads = [int(t) for t in threads]
    if not threads or min(threads) < 1:
        raise ValidationError(f"threads must be positive thread counts, got {threads!r}")
    dev = resolve_device(device)
    ours_s = dict.fromkeys(threads, 0.0)
    n_tasks = n_ok = n_features = 0
    base_X: list = []
    base_y: list = []
    ours_coef, ours_int, ours_ok = [], [], []
    want = 1000 if baseline_tasks is None else int(baseline_tasks)
    warm = False
    for X_list, y_list in chunks:
        if not warm and len(X_list):
            for t in threads:  # lazy torch initialisation and thread pools, not timed
                fit_logistic_batched(X_list[:8], y_list[:8], C=C, device=dev, num_threads=t)
            warm = True
            n_features = np.asarray(X_list[0]).shape[1]
        for k, t in enumerate(threads):
            with threadpool_limits(t):
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fit = fit_logistic_batched(X_list, y_list, C=C, device=dev, num_threads=t)
                if dev.startswith("cuda"):
                    torch.cuda.synchronize()
                ours_s[t] += time.perf_counter() - t0
            if k == 0:
                n_ok += int(fit.ok.sum())
                take = min(len(X_list), want - len(base_X))
                if take > 0:
                    base_X += list(X_list[:take])
                    base_y += list(y_list[:take])
                    ours_coef.append(fit.coef[:take])
                    ours_int.append(fit.intercept[:take])
                    ours_ok.append(fit.ok[:take])
        n_tasks += len(X_list)
    n_base = len(base_X)
    by_threads, diff = {}, float("nan")
    for k, t in enumerate(threads):
        t_base, base = sklearn_loop_seconds(base_X, base_y, C=C, tol=baseline_tol, threads=t)
        if k == 0:
            both = np.concatenate(ours_ok) & base.ok if n_base else np.zeros(0, bool)
            if both.any():
                diff = max(
                    float(np.max(np.abs(np.concatenate(ours_coef)[both] - base.coef[both]))),
                    float(np.max(np.abs(np.concatenate(ours_int)[both] - base.intercept[both]))),
                )
        ours_tps = n_tasks / ours_s[t] if ours_s[t] > 0 else float("inf")
        base_tps = n_base / t_base if t_base > 0 else float("inf")
        by_threads[str(t)] = {
            "ours": {
                "tasks_per_s": ours_tps,
                "tasks_per_s_per_thread": ours_tps / t,
                "seconds": ours_s[t],
            },
            "baseline": {
                "tasks_per_s": base_tps,
                "tasks_per_s_per_thread": base_tps / t,
                "seconds": t_base,
            },
            "ratio": ours_tps / base_tps,
            "threads": {"ours": t, "baseline": t},
        }
    t0 = threads[0]
    first = by_threads[str(t0)]
    where = "the CPU" if dev == "cpu" else dev
    return {
        "name": "fit",
        "n": n_tasks,
        "ours": {
            **first["ours"],
            "description": (
                "fit_logistic_batched (batched Newton, float64 with a float32 "
                f"Hessian, on {where}, {t0} CPU thread(s), BLAS/OpenMP limited alike) "
                f"on all {n_tasks} tasks ({data or f'd={n_features}'}), C={C}, tol=1e-8; {n_ok} ok"
            ),
        },
        "baseline": {
            **first["baseline"],
            "n": n_base,
            "description": (
                f"loop of sklearn LogisticRegression(lbfgs, C={C}, "
                f"tol={baseline_tol:g}) on {t0} process(es) with one BLAS/OpenMP thread "
                f"each (threadpoolctl), timed on the first {n_base} of {n_tasks} tasks; "
                "tasks_per_s is extrapolated from that subset and seconds is the subset's time"
            ),
        },
        "ratio": first["ratio"],
        "threads": first["threads"],
        "by_threads": by_threads,
        "max_abs_diff": diff,
        "device": dev,
    }
