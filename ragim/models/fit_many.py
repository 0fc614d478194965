"""Fit one interpretable model per task, for a handful or a million tasks.

:func:`fit_many` fits every task of a :class:`~ragim.tasks.TaskCollection` (lazy
collections are materialised chunk by chunk) over one shared fitted schema:

* L2 logistic models go to the batched Newton solver
  (:func:`ragim.models.batched.fit_logistic_batched`; CPU or GPU, matches
  scikit-learn to about 1e-3) — all tasks of a chunk at once;
* everything else runs one estimator per task through ``joblib.Parallel``
  (loky by default; any joblib backend such as "threading", "dask" or "ray").

Tasks that are too small, single-class or invalid get a status naming the reason
instead of a crash or a silent zero model.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from ragim.tasks import Task
>>> rng = np.random.default_rng(0)
>>> def task(i, n):
...     X = pd.DataFrame({"age": rng.normal(55, 10, n)})
...     return Task(f"t{i}", f"task {i}", X, (X["age"] + rng.normal(0, 10, n) > 55).astype(int))
>>> res = fit_many([task(0, 80), task(1, 60), task(2, 3)], progress=False)
>>> res.status["t0"], res.status["t2"].startswith("task 't2' has 3 rows; at least 10 are needed")
('ok', True)
>>> sorted(res.params)
['t0', 't1']
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from ragim.checks import check_int
from ragim.errors import DependencyError, ValidationError
from ragim.models.base import MODEL_FAMILIES, get_model_family
from ragim.models.family import constant_terms
from ragim.models.logistic import LogisticModel, laplace_covariance
from ragim.params import ModelParams
from ragim.schema import FeatureSchema
from ragim.tasks import Task, TaskCollection

SCHEMA_MAX_ROWS = 200_000
CHUNK_TASKS = 2048
_EPS = 1e-15


@dataclass
class FitResult:
    """What :func:`fit_many` returns.

    Attributes
    ----------
    params : task_id -> ModelParams, for the tasks whose status is "ok".
    status : task_id -> "ok" or the reason the task has no model.
    stats : task_id -> {n_rows, n_positive, prevalence, train_logloss, heldout_logloss, solver}.
        ``heldout_logloss`` is the pooled out-of-fold log-loss of a stratified k-fold
        (NaN when the task has fewer than ``cv`` rows of a class or cv is off).
    schema : the fitted schema every model shares.
    model : the model family name.
    """

    params: dict[str, ModelParams]
    status: dict[str, str]
    stats: dict[str, dict]
    schema: FeatureSchema
    model: str = "logistic"
    solver: str = "sklearn"

    @property
    def failed(self) -> dict[str, str]:
        """task_id -> reason, for tasks without a model."""
        return {t: s for t, s in self.status.items() if s != "ok"}

    @property
    def ok(self) -> list[str]:
        return [t for t, s in self.status.items() if s == "ok"]

    def summary(self) -> pd.DataFrame:
        """One row per task: task_id, status, n_rows, prevalence, train/held-out log-loss."""
        rows = []
        for tid, st in self.status.items():
            s = self.stats.get(tid, {})
            rows.append(
                {
                    "task_id": tid,
                    "status": st,
                    "n_rows": s.get("n_rows"),
                    "prevalence": s.get("prevalence", math.nan),
                    "train_logloss": s.get("train_logloss", math.nan),
                    "heldout_logloss": s.get("heldout_logloss", math.nan),
                }
            )
        return pd.DataFrame(
            rows,
            columns=[
                "task_id",
                "status",
                "n_rows",
                "prevalence",
                "train_logloss",
                "heldout_logloss",
            ],
        )

    def __len__(self) -> int:
        return len(self.status)

    def __repr__(self) -> str:
        return (
            f"FitResult({self.model}, {len(self.params)} fitted, {len(self.failed)} failed, "
            f"solver={self.solver})"
        )


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def fit_schema(
    tasks: TaskCollection | Sequence[Task], schema: FeatureSchema | None = None
) -> FeatureSchema:
    """The schema :func:`fit_many` uses by default: a copy of ``schema`` (default: the
    collection's, else inferred from the rows of every sampled task, so a column that is all
    0 in one task is not "binary" for the rest) fitted on the pooled rows of the tasks whose
    rows match it, up to 200,000 rows taken from tasks in a fixed random order (seed 0), so
    the same tasks always give the same schema.

    Raises
    ------
    ValidationError
        When the sampled tasks disagree on a column's type (the message names the column
        and the task), or no task's rows match the schema.

    Examples
    --------
    >>> from ragim import datasets
    >>> tasks = datasets.synthetic_family(n_tasks=20, n_features=3, seed=0)
    >>> fit_schema(tasks).is_fitted
    True
    """
    if schema is None:
        schema = (
            tasks.schema if isinstance(tasks, TaskCollection) and tasks.schema is not None else None
        )
    order = [int(i) for i in np.random.default_rng(0).permutation(len(tasks))]
    if schema is None:  # types from the rows of every task that the schema is fitted on
        picked, rows = [], 0
        for i in order:
            picked.append(i)
            rows += tasks[i].n_rows
            if rows >= SCHEMA_MAX_ROWS:
                break
        sample = [tasks[i] for i in sorted(picked)]  # in task order, as the user listed them
        try:
            base = FeatureSchema.infer(
                [t.X for t in sample], labels=[f"task {t.task_id!r}" for t in sample]
            )
        except ValidationError:
            # a few tasks with text where most hold numbers ('n/a' in age) get their own status
            # later; the others keep their types. Any other disagreement stands.
            kept = _without_text_minorities(sample)
            if len(kept) == len(sample) or not kept:
                raise
            base = FeatureSchema.infer(
                [t.X for t in kept], labels=[f"task {t.task_id!r}" for t in kept]
            )
    else:
        base = schema
    chosen, total = {}, 0
    for s in range(0, len(order), 256):
        block = {i: tasks[i] for i in order[s : s + 256]}
        good = _matching(base, list(block.values()))
        for i, t in block.items():
            if t.task_id not in good:
                continue  # the task gets its own status later
            chosen[i] = t.X
            total += len(t.X)
            if total >= SCHEMA_MAX_ROWS:
                break
        if total >= SCHEMA_MAX_ROWS:
            break
    frames = [chosen[i] for i in sorted(chosen)]  # task order: the same rows give the same schema
    if not frames:
        raise ValidationError("no task has rows that match the feature schema; cannot fit a schema")
    pooled = pd.concat(frames, ignore_index=True)
    if len(pooled) > SCHEMA_MAX_ROWS:
        pooled = pooled.sample(n=SCHEMA_MAX_ROWS, random_state=0)
    return base.copy().fit(pooled)


def _without_text_minorities(tasks: list[Task]) -> list[Task]:
    """``tasks`` less those holding text in a column that most of the tasks hold as numbers."""
    drop: set[str] = set()
    for col in {c for t in tasks for c in t.X.columns}:
        numeric = {
            t.task_id: pd.api.types.is_numeric_dtype(t.X[col]) for t in tasks if col in t.X.columns
        }
        if 2 * sum(numeric.values()) > len(numeric):
            drop.update(tid for tid, is_num in numeric.items() if not is_num)
    return [t for t in tasks if t.task_id not in drop]


def _same_layout_groups(schema: FeatureSchema, tasks: list[Task]) -> list[list[Task]]:
    """Tasks grouped by column names and order and by the dtypes of their categorical
    columns: pandas concatenates those without changing a value that the schema reads
    (mixing an int and a float categorical column would turn level 4 into 4.0; numeric
    columns are read as floats either way)."""
    categorical = [f.name for f in schema.features if f.type == "categorical"]
    groups: dict[tuple, list[Task]] = {}
    for t in tasks:
        cols = tuple(str(c) for c in t.X.columns)
        key = (cols, tuple(str(t.X[c].dtype) if c in cols else "" for c in categorical))
        groups.setdefault(key, []).append(t)
    return list(groups.values())


def _matching(schema: FeatureSchema, tasks: list[Task]) -> set[str]:
    """Ids of the tasks whose rows pass ``schema.validate_frame``, checked a group at a time
    (the checks are row by row, so a group passes exactly when each of its tasks does)."""
    ok = set()
    for group in _same_layout_groups(schema, tasks):
        try:
            schema.validate_frame(pd.concat([t.X for t in group], ignore_index=True))
            ok.update(t.task_id for t in group)
        except ValidationError:
            for t in group:
                try:
                    schema.validate_frame(t.X)
                    ok.add(t.task_id)
                except ValidationError:
                    pass
    return ok


def _design(schema: FeatureSchema, tasks: list[Task]) -> list[np.ndarray]:
    """``schema.transform`` of every task's rows (all valid), a same-layout group at a time."""
    out: dict[str, np.ndarray] = {}
    for group in _same_layout_groups(schema, tasks):
        Z = schema.transform(pd.concat([t.X for t in group], ignore_index=True))
        bounds = np.cumsum([0] + [t.n_rows for t in group])
        out.update(
            (t.task_id, Z[a:b]) for t, a, b in zip(group, bounds[:-1], bounds[1:], strict=True)
        )
    return [out[t.task_id] for t in tasks]


def _prechecks(
    tasks: list[Task], schema: FeatureSchema, min_rows: int, min_per_class: int
) -> list[str]:
    """``"ok"`` or the reason each task cannot be fitted; rows are validated a group at a
    time, and a task is validated alone (for its own message) only when its group fails."""
    status = [
        "; ".join(t.fit_problems(min_rows=min_rows, min_per_class=min_per_class)) or "ok"
        for t in tasks
    ]
    passed = _matching(schema, [t for t, st in zip(tasks, status, strict=True) if st == "ok"])
    for k, t in enumerate(tasks):
        if status[k] == "ok" and t.task_id not in passed:
            status[k] = _precheck(t, schema, min_rows, min_per_class)
    return status


def _precheck(task: Task, schema: FeatureSchema, min_rows: int, min_per_class: int) -> str:
    problems = task.fit_problems(min_rows=min_rows, min_per_class=min_per_class)
    if problems:
        return "; ".join(problems)
    try:
        schema.validate_frame(task.X, where=f"task {task.task_id!r}")
    except ValidationError as exc:
        return str(exc).replace("\n", " ")
    return "ok"


def stratified_folds(
    y: np.ndarray, cv: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The (train, test) rows of ``StratifiedKFold(cv, shuffle=True, random_state=seed)``
    for binary ``y``, or None when a class has fewer than ``cv`` rows (or ``cv < 2``).

    The same folds as scikit-learn's (its allocation and shuffling, step by step; a test
    compares them), without its input validation, which cost 5 ms per task: hours for
    millions of tasks.

    Examples
    --------
    >>> [test.tolist() for _, test in stratified_folds(np.array([0, 1, 0, 1, 0, 1]), 3, seed=0)]
    [[3, 4], [2, 5], [0, 1]]
    """
    y = np.asarray(y)
    if cv < 2 or min(int(y.sum()), int(len(y) - y.sum())) < cv:
        return None
    _, first, inverse = np.unique(y, return_index=True, return_inverse=True)
    encoded = np.argsort(np.argsort(first))[inverse]  # classes numbered by first appearance
    allocation = np.array(
        [np.bincount(np.sort(encoded)[i::cv], minlength=len(first)) for i in range(cv)]
    )
    rng = np.random.RandomState(seed)
    test_folds = np.empty(len(y), dtype=np.int64)
    for k in range(len(first)):
        folds_for_class = np.arange(cv).repeat(allocation[:, k])
        rng.shuffle(folds_for_class)
        test_folds[encoded == k] = folds_for_class
    rows = np.arange(len(y))
    return [(rows[test_folds != i], rows[test_folds == i]) for i in range(cv)]


def _stats(task: Task, solver: str) -> dict[str, Any]:
    return {
        "n_rows": task.n_rows,
        "n_positive": task.n_positive,
        "prevalence": task.prevalence,
        "solver": solver,
        "train_logloss": math.nan,
        "heldout_logloss": math.nan,
    }


# ---------------------------------------------------------------------- one task, any estimator
def _fit_one(template, schema: FeatureSchema, task: Task, cv: int, seed: int):
    est = clone(template).set_params(schema=schema)
    stats = _stats(task, "sklearn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            est.fit(task.X, task.y)
        except Exception as exc:  # one bad task must not stop a million-task run
            return (
                task.task_id,
                None,
                f"fit failed ({type(exc).__name__}): {exc}".replace("\n", " "),
                stats,
            )
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            stats["converged"] = False
        stats["train_logloss"] = _logloss(task.y, est.predict_proba(task.X)[:, 1])
        folds = stratified_folds(task.y, cv, seed)
        if folds is not None:
            oof = np.empty(task.n_rows)
            try:
                for tr, te in folds:
                    m = clone(est).fit(task.X.iloc[tr], task.y[tr])
                    oof[te] = m.predict_proba(task.X.iloc[te])[:, 1]
                stats["heldout_logloss"] = _logloss(task.y, oof)
            except Exception:  # the held-out estimate is optional
                pass
    params = est.to_params()
    params.metadata["task_id"] = task.task_id
    return task.task_id, params, "ok", stats


def _run_parallel(template, schema, tasks: list[Task], cv, seed, n_jobs, backend, bar):
    jobs = (joblib.delayed(_fit_one)(template, schema, t, cv, seed) for t in tasks)
    if backend is None:
        results = joblib.Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
        yield from _ticking(results, bar)
    else:
        with joblib.parallel_config(backend=backend, n_jobs=n_jobs):
            results = joblib.Parallel(return_as="generator")(jobs)
            yield from _ticking(results, bar)


def _ticking(results, bar):
    for r in results:
        if bar is not None:
            bar.update(1)
        yield r


# ---------------------------------------------------------------------- batched L2 logistic
def _run_batched(
    fit_fn, schema: FeatureSchema, tasks: list[Task], C: float, cv: int, seed: int, device
):
    Z = _design(schema, tasks)
    ys = [t.y for t in tasks]
    fit = fit_fn(Z, ys, C=C, device=device)
    folds = [stratified_folds(t.y, cv, seed) for t in tasks]
    fold_Z, fold_y, owners = [], [], []
    for k, f in enumerate(folds):
        for tr, te in f or ():
            fold_Z.append(Z[k][tr])
            fold_y.append(ys[k][tr])
            owners.append((k, te))
    ffit = fit_fn(fold_Z, fold_y, C=C, device=device) if fold_Z else None
    oof = [np.full(t.n_rows, np.nan) for t in tasks]
    for j, (k, te) in enumerate(owners):
        if ffit.status[j] == "ok":
            oof[k][te] = expit(Z[k][te] @ ffit.coef[j] + ffit.intercept[j])
    out = []
    for k, t in enumerate(tasks):
        stats = _stats(t, "batched")
        if fit.status[k] != "ok":
            out.append((t.task_id, None, fit.status[k], stats))
            continue
        w, b = np.asarray(fit.coef[k], float), float(fit.intercept[k])
        stats["train_logloss"] = _logloss(t.y, expit(Z[k] @ w + b))
        if folds[k] is not None and not np.isnan(oof[k]).any():
            stats["heldout_logloss"] = _logloss(t.y, oof[k])
        cov = laplace_covariance(Z[k], t.y, w, b, C)  # kept as SDs: the index holds many
        std = None if cov is None else np.sqrt(np.clip(np.diag(cov), 0.0, None))
        meta = {
            "source": "fit",
            "model": "LogisticModel",
            "task_id": t.task_id,
            "n_rows": t.n_rows,
            "n_positive": t.n_positive,
            "prevalence": t.prevalence,
            "classes": [0, 1],
            "penalty": "l2",
            "C": float(C),
            "solver": "batched",
            "n_iter": int(fit.n_iter[k]),
        }
        if std is not None:
            meta["std_method"] = "laplace"
        if const := constant_terms(schema.design_names, Z[k]):  # e.g. a level no patient had
            meta["constant_terms"] = const
        out.append(
            (
                t.task_id,
                ModelParams("logistic", schema, np.concatenate([[b], w]), std=std, metadata=meta),
                "ok",
                stats,
            )
        )
    return out


# ---------------------------------------------------------------------- public entry point
def fit_many(
    tasks: TaskCollection | Sequence[Task],
    model: str | type | Any = "logistic",
    *,
    schema: FeatureSchema | None = None,
    n_jobs: int | None = 1,
    backend: str | None = None,
    solver: str = "auto",
    C: float = 1.0,
    progress: bool = True,
    min_rows: int = 10,
    min_per_class: int = 3,
    cv: int = 3,
    device: str | None = "auto",
    random_state: int = 0,
    **model_kwargs,
) -> FitResult:
    """Fit one model per task over one shared schema.

    Parameters
    ----------
    tasks : a TaskCollection (possibly lazy) or a list of Task.
    model : "logistic", "gam", a registered family name, an estimator class or an
        unfitted estimator instance (its parameters are the defaults).
    schema : a fitted FeatureSchema. Default: a copy of the collection's schema fitted
        on the pooled rows of ``tasks`` (up to 200,000 rows, deterministic). Pass a schema
        fitted on training tasks only to keep zero-shot targets out of preprocessing.
    n_jobs, backend : joblib workers and backend (None = loky; "threading", "dask", "ray"...).
    solver : "auto" (batched for L2 logistic, else per-task estimators), "batched" or "sklearn".
    C : inverse L2 strength for families with a ``C`` parameter (ignored otherwise).
    progress : show a tqdm progress bar.
    min_rows, min_per_class : tasks below these get a status instead of a model.
    cv : folds of the internal held-out log-loss estimate (0 or 1 disables it).
    device : batched solver device ("auto", "cpu", "cuda", ...).
    model_kwargs : estimator parameters (e.g. ``penalty="l1"``, ``outer_bags=4``). The
        batched solver uses only ``C``; it runs its own Newton iterations and tolerance.

    Returns
    -------
    FitResult
    """
    if isinstance(tasks, TaskCollection):
        base = tasks.schema
    else:
        tasks = list(tasks)
        bad = [i for i, t in enumerate(tasks) if not isinstance(t, Task)]
        if bad:
            raise ValidationError(f"fit_many needs Task objects; items {bad[:10]} are not")
        base = None
    n = len(tasks)
    if n == 0:
        raise ValidationError("fit_many got zero tasks")
    if solver not in ("auto", "batched", "sklearn"):
        raise ValidationError(f"solver must be 'auto', 'batched' or 'sklearn', got {solver!r}")
    min_rows = check_int(min_rows, "min_rows", ge=0)
    min_per_class = check_int(min_per_class, "min_per_class", ge=0)
    cv = check_int(cv, "cv", ge=0)

    if isinstance(model, str | type):
        cls, defaults = get_model_family(model), {}
    elif hasattr(model, "get_params") and hasattr(model, "to_params"):
        cls, defaults = (
            type(model),
            {k: v for k, v in model.get_params(deep=False).items() if k != "schema"},
        )
    else:
        raise ValidationError(
            f"model must be a family name, an estimator class or instance; got {model!r}"
        )
    family = next((k for k, v in MODEL_FAMILIES.items() if v is cls), cls.__name__)
    kwargs = defaults | dict(model_kwargs)
    if "C" in cls().get_params():
        kwargs.setdefault("C", C)
    C = kwargs.get("C", C)
    try:
        template = cls(**kwargs)
        if hasattr(template, "check_params"):  # a registered family need not be a ragim model
            template.check_params()
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"invalid parameters for {cls.__name__}: {exc}") from exc

    batchable = (
        cls is LogisticModel
        and kwargs.get("penalty", "l2") == "l2"
        and kwargs.get("class_weight") is None
    )
    if solver == "batched" and not batchable:
        raise ValidationError(
            "solver='batched' fits only L2 logistic models without class_weight; "
            "use solver='sklearn' or 'auto'"
        )
    fit_fn = None
    if batchable and solver in ("auto", "batched"):
        try:
            from ragim.models.batched import fit_logistic_batched as fit_fn
        except ImportError as exc:
            if solver == "batched":
                raise DependencyError(
                    f"the batched solver is unavailable ({exc}); use solver='sklearn'"
                ) from exc

    if schema is None:
        schema = fit_schema(tasks, base)
    elif not isinstance(schema, FeatureSchema):
        raise ValidationError(f"schema must be a FeatureSchema, got {type(schema).__name__}")
    elif not schema.is_fitted:
        schema = fit_schema(tasks, schema)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"fitting {family} models", unit="task", disable=None)
    params, status, stats = {}, {}, {}
    try:
        for start in range(0, n, CHUNK_TASKS):
            chunk = [tasks[i] for i in range(start, min(n, start + CHUNK_TASKS))]
            todo = []
            for t in chunk:
                if t.task_id in status:
                    raise ValidationError(f"duplicate task id {t.task_id!r} in fit_many input")
                status[t.task_id] = "pending"
            for t, st in zip(
                chunk, _prechecks(chunk, schema, min_rows, min_per_class), strict=True
            ):
                status[t.task_id] = st
                if st == "ok":
                    todo.append(t)
                else:
                    stats[t.task_id] = _stats(t, "none")
            if fit_fn is not None:
                results = (
                    _run_batched(fit_fn, schema, todo, C, cv, random_state, device) if todo else []
                )
                if bar is not None:
                    bar.update(len(chunk))
            else:
                if bar is not None:
                    bar.update(len(chunk) - len(todo))
                results = _run_parallel(
                    template, schema, todo, cv, random_state, n_jobs, backend, bar
                )
            for tid, p, st, s in results:
                status[tid], stats[tid] = st, s
                if p is not None:
                    params[tid] = p
    finally:
        if bar is not None:
            bar.close()
    return FitResult(
        params,
        status,
        stats,
        schema,
        model=family,
        solver="batched" if fit_fn is not None else "sklearn",
    )
