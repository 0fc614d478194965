"""Checks of the training rows as an index is built or grown: gross outliers, a column that
recodes the outcome, and a column that only varies between tasks.

:class:`TrainingRowChecks` sees every fitted task's rows once (``observe``), keeping a few
numbers per task and column, and then warns (:class:`~ragim.errors.DataWarning`, one warning
per kind) about:

* values far outside the rest of a continuous column (:func:`far_from`): more than
  :data:`~ragim.schema.FAR_SD` robust standard deviations (the scaled median absolute
  deviation, which one outlier cannot inflate) from the pooled median, on the log scale too
  for a column that is positive, and from the median of their own task. A mistyped value
  (lactate 1,000,000) or rows in another unit (ages in months among years) make the shared
  schema's SD (the "+1 SD" of every explanation) and the fitted effects wrong;
* a column that on its own separates the outcome (AUROC of at least :data:`LEAK_AUROC`) in at
  least half of the tasks (and at least 2): a recoding of the outcome, or recorded after it;
* a column constant within every task that differs between tasks (a hospital's bed count):
  no task's own model can estimate its effect; what a model pooled over tasks learns of it
  is the difference between those few tasks.

:func:`check_added_rows` is the check of :meth:`ragim.index.TaskIndex.add` for rows of new
tasks against the index's fitted schema.

Examples
--------
>>> import numpy as np, pandas as pd, warnings
>>> from ragim import Task, FeatureSchema
>>> rng = np.random.default_rng(0)
>>> tasks = [Task(f"t{i}", "d", pd.DataFrame({"age": rng.normal(60, 10, 50).round()}),
...               np.arange(50) % 2) for i in range(3)]
>>> tasks[1].X.loc[0, "age"] = 720.0  # an age in months
>>> checks = TrainingRowChecks(FeatureSchema.infer([t.X for t in tasks]))
>>> for t in tasks:
...     checks.observe(t)
>>> with warnings.catch_warnings(record=True) as w:
...     warnings.simplefilter("always")
...     checks.warn()
>>> "'age' in task 't1': 720 (1 row)" in str(w[0].message)
True
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ragim.canonical import canonical_level, canonical_text
from ragim.errors import DataWarning, ValidationError, name_some, user_stacklevel
from ragim.schema import FAR_SD, SCALE_RATIO, FeatureSchema

LEAK_AUROC = 0.99
"""The AUROC (or 1 - AUROC) of one column alone, within a task, from which
:class:`TrainingRowChecks` counts the column as separating that task's outcome."""

LEAK_MIN_CLASS = 5
"""The fewest rows of each class, among those with a value, for a task to count towards
:meth:`TrainingRowChecks.separating`: a lab measured in 3 patients separates them by chance."""

EXTREMES = 50
"""The most extreme values per task and column (at each end) that :class:`TrainingRowChecks`
keeps; a task with more far values than this is reported as having at least this many."""

SKETCH = 64
"""The evenly spaced order statistics per task and column that make up the pooled reference
(median, robust SD) of :class:`TrainingRowChecks`: every value of a task with fewer rows."""

MIN_OWN_ROWS = 20
"""The fewest values of a task from which its own median and robust SD are used: a value is far
only when it is far from the pooled column and from the rest of its own task."""


def robust_center(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """The (weighted) median of ``values`` and their robust SD: 1.4826 times the median absolute
    deviation, or the interquartile range / 1.349 when more than half the values are equal; 0.0
    when three quarters are (a column of mostly one value has no spread to measure against).

    >>> robust_center(np.array([1.0, 2.0, 3.0, 4.0, 1000.0]))
    (3.0, 1.4826)
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), 0.0
    if weights is None:
        center = float(np.median(v))
        mad = float(np.median(np.abs(v - center)))
        if mad > 0:
            return center, 1.4826 * mad
        q1, q3 = np.percentile(v, [25, 75])
        return center, max(0.0, float(q3 - q1) / 1.349)
    w = np.asarray(weights, dtype=float)
    center = _weighted_quantile(v, w, 0.5)
    mad = _weighted_quantile(np.abs(v - center), w, 0.5)
    if mad > 0:
        return center, 1.4826 * mad
    q1, q3 = _weighted_quantile(v, w, 0.25), _weighted_quantile(v, w, 0.75)
    return center, max(0.0, (q3 - q1) / 1.349)


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``v`` with weights ``w`` (the mean of the two middle values at an
    exact half, as ``np.median``)."""
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cum = np.cumsum(w)
    target = q * cum[-1]
    i = int(np.searchsorted(cum, target - 1e-9 * cum[-1], side="left"))
    if abs(cum[i] - target) <= 1e-9 * cum[-1] and i + 1 < v.size:
        return float((v[i] + v[i + 1]) / 2)
    return float(v[i])


class Reference(tuple):
    """A column's pooled (median, robust SD) and, for a column whose values are positive, the
    same of its logarithm (else NaN and 0)."""

    __slots__ = ()

    def __new__(cls, center: float, spread: float, log_center: float, log_spread: float):
        return super().__new__(cls, (center, spread, log_center, log_spread))


def far_from(
    values: np.ndarray,
    ref: Reference,
    *,
    own: tuple[float, float] | None = None,
    sd: float = FAR_SD,
) -> np.ndarray:
    """Which of ``values`` lie far from a column's pooled values: more than ``sd`` robust SDs
    from its median, and, where the column is positive (``ref`` has a log scale), zero or
    negative or more than ``sd`` robust SDs from its median on the log scale (a legitimately
    long tail, CRP or triglycerides, is not far there), and, with ``own`` (the task's own
    median and robust SD), more than ``sd`` of those from its own median. Boolean array of
    ``values``' shape; never True where the pooled robust SD is 0.

    >>> ref = Reference(1.5, 0.7, np.log(1.5), 0.45)
    >>> far_from(np.array([1.2, 9.0, 1e6]), ref).tolist()
    [False, False, True]
    """
    v = np.asarray(values, dtype=float)
    center, spread, log_center, log_spread = ref
    if not spread > 0:
        return np.zeros(v.shape, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        far = np.abs(v - center) > sd * spread
        if log_spread > 0:
            logs = np.log(np.where(v > 0, v, np.nan))
            far &= (v <= 0) | (np.abs(logs - log_center) > sd * log_spread)
        if own is not None and own[1] > 0:
            far &= np.abs(v - own[0]) > sd * own[1]
    return far


def _auroc(score: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The AUROC of ``score`` (n,) or of each column of ``score`` (n, k) for ``y`` (ties count
    half: the Mann-Whitney U over both class sizes); NaN without both classes."""
    score = np.asarray(score, dtype=float)
    flat = score.ndim == 1
    score = score[:, None] if flat else score
    pos, neg = y == 1, y == 0
    n1, n0 = int(pos.sum()), int(neg.sum())
    out = np.full(score.shape[1], np.nan)
    if n1 and n0:
        for j in range(score.shape[1]):
            negatives = np.sort(score[neg, j])
            below = np.searchsorted(negatives, score[pos, j], side="left")
            upto = np.searchsorted(negatives, score[pos, j], side="right")
            out[j] = float((below + upto).sum()) / (2 * n1 * n0)
    return out[0] if flat else out


def _numbers(X: pd.DataFrame, columns: list[Any]) -> np.ndarray:
    """The columns of ``X`` as floats (n, k), text that is not a number as NaN."""
    if len(columns) == X.shape[1]:  # every column: one conversion, no column lookups
        try:
            return X.to_numpy(dtype=float, na_value=np.nan)[:, X.columns.get_indexer(columns)]
        except (TypeError, ValueError):
            pass
    out = np.empty((len(X), len(columns)))
    for j, c in enumerate(columns):
        s = X[c]
        try:
            out[:, j] = s.to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            out[:, j] = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)
    return out


class TrainingRowChecks:
    """Per-task summaries of the rows an index is built from, and the warnings they call for
    (see the module docstring). ``observe`` each fitted task once, then ``warn``.

    Parameters
    ----------
    schema : the schema the tasks are fitted with (its feature names and types).

    Memory is O(tasks x continuous columns x :data:`EXTREMES`), the rows are not kept.
    """

    def __init__(self, schema: FeatureSchema):
        self.types = {f.name: f.type for f in schema.features}
        self.continuous = [n for n, t in self.types.items() if t == "continuous"]
        self.n_tasks = 0
        self._sketch: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
            c: ([], []) for c in self.continuous
        }
        self._tails: dict[str, list[tuple[str, tuple[float, float] | None, np.ndarray, int]]] = {
            c: [] for c in self.continuous
        }
        self._separates: dict[str, int] = dict.fromkeys(self.types, 0)
        self._values: dict[str, set[str]] = {c: set() for c in self.types}
        self._varies: set[str] = set()
        self._constant_in: dict[str, int] = dict.fromkeys(self.types, 0)
        self._all_blank: dict[str, list[str]] = {c: [] for c in self.types}  # task ids
        self._some_blank: set[str] = set()  # blank in some rows of a task, not all
        self._recorded: set[str] = set()  # with a value in some task

    def observe(self, task: Any) -> None:
        """Take in one fitted task's rows (``task.X``, ``task.y``, ``task.task_id``)."""
        self.n_tasks += 1
        y = np.asarray(task.y).astype(int)
        cols = {canonical_text(str(c)): c for c in task.X.columns}
        names = [n for n in self.types if n in cols]
        numeric = [n for n in names if self.types[n] != "categorical"]
        M = _numbers(task.X, [cols[n] for n in numeric])
        finite = np.isfinite(M)
        full = []  # varying columns without blanks: ranked together
        for j, name in enumerate(numeric):
            ok = finite[:, j]
            self._blanks(name, task.task_id, int(ok.sum()), ok.size)
            v = M[ok, j]
            if self.types[name] == "continuous" and v.size:
                self._summarise(name, task.task_id, np.sort(v))
            if v.size and v.min() < v.max():
                if ok.all():
                    full.append(j)
                else:
                    self._varied(name, v, y[ok])
            else:
                self._constant(name, {canonical_level(float(v[0]))} if v.size else set(), v.size)
        if full:
            self._varied([numeric[j] for j in full], M[:, full], y)
        for name in names:
            if self.types[name] != "categorical":
                continue
            raw = task.X[cols[name]].to_numpy(dtype=object)
            codes = pd.Series([None if pd.isna(v) else canonical_level(v) for v in raw])
            self._blanks(name, task.task_id, int(codes.notna().sum()), codes.size)
            seen = set(codes.dropna())
            if len(seen) > 1:
                levels = codes.fillna("")
                score = levels.map(pd.Series(y).groupby(levels).mean()).to_numpy(dtype=float)
                self._varied(name, score, y)
            else:
                self._constant(name, seen, int(codes.notna().sum()))

    def _blanks(self, name: str, task_id: str, n_obs: int, n: int) -> None:
        """Count how a task leaves a column blank: in every row, in some, or in none."""
        if n_obs == 0 and n:
            self._all_blank[name].append(task_id)
        elif n_obs < n:
            self._some_blank.add(name)
        if n_obs:
            self._recorded.add(name)

    def blank_in_whole_tasks(self) -> dict[str, list[str]]:
        """The columns blank in every row of some tasks and in no row of the others (a lab a
        site never records), with those tasks: their missing-value term is constant within
        every task, so it can only learn the difference between those tasks and the rest."""
        return {
            c: ids
            for c, ids in self._all_blank.items()
            if ids and c in self._recorded and c not in self._some_blank
        }

    def _varied(self, names: str | list[str], score: np.ndarray, y: np.ndarray) -> None:
        """Columns that vary in a task, with their scores (one column, or one per name): counted
        as separating the outcome where their AUROC alone is at least :data:`LEAK_AUROC`."""
        names = [names] if isinstance(names, str) else names
        self._varies.update(names)
        n1 = int(y.sum())
        if min(n1, y.size - n1) < LEAK_MIN_CLASS:
            return
        for name, auc in zip(names, np.atleast_1d(_auroc(score, y)), strict=True):
            if max(auc, 1 - auc) >= LEAK_AUROC:
                self._separates[name] += 1

    def _constant(self, name: str, seen: set[str], n_obs: int) -> None:
        """A column with one value (``seen``) in the ``n_obs`` rows of a task that have one."""
        if n_obs > 1 and name not in self._varies:
            self._constant_in[name] += 1
            if len(self._values[name]) < 3:
                self._values[name] |= seen

    def _summarise(self, name: str, task_id: str, v: np.ndarray) -> None:
        n = v.size
        if n <= SKETCH:
            sk, w = v, np.ones(n)
        else:
            sk, w = (
                v[np.linspace(0, n - 1, SKETCH).round().astype(int)],
                np.full(SKETCH, n / SKETCH),
            )
        self._sketch[name][0].append(sk)
        self._sketch[name][1].append(w)
        own = robust_center(v) if n >= MIN_OWN_ROWS else None
        tails = v if n <= 2 * EXTREMES else np.concatenate([v[:EXTREMES], v[-EXTREMES:]])
        self._tails[name].append((task_id, own, tails, n))

    def reference(self, name: str) -> Reference | None:
        """A continuous column's pooled :class:`Reference` over the tasks observed so far."""
        parts, weights = self._sketch.get(name, ([], []))
        if not parts:
            return None
        v, w = np.concatenate(parts), np.concatenate(weights)
        center, spread = robust_center(v, w)
        if _weighted_quantile(v, w, 0.01) > 0:
            pos = v > 0
            log_center, log_spread = robust_center(np.log(v[pos]), w[pos])
        else:
            log_center, log_spread = float("nan"), 0.0
        return Reference(center, spread, log_center, log_spread)

    def far_values(self) -> dict[str, list[tuple[str, int, list[float]]]]:
        """Per continuous column: (task id, rows, up to 3 values) of each task with values
        far from the rest (:func:`far_from` against the pooled reference and the task's own);
        a count of ``2 * EXTREMES`` or more is a lower bound."""
        out: dict[str, list[tuple[str, int, list[float]]]] = {}
        for name in self.continuous:
            ref = self.reference(name)
            if ref is None:
                continue
            for task_id, own, tails, _ in self._tails[name]:
                far = far_from(tails, ref, own=own)
                if far.any():
                    shown = sorted(set(tails[far].tolist()), key=lambda x: -abs(x - ref[0]))[:3]
                    out.setdefault(name, []).append((task_id, int(far.sum()), shown))
        return out

    def separating(self) -> dict[str, int]:
        """The columns that separate the outcome on their own (AUROC >= :data:`LEAK_AUROC`,
        among the rows with a value, at least :data:`LEAK_MIN_CLASS` of each class) in at least
        half of the observed tasks and at least 2, with their count of tasks."""
        need = max(2, (self.n_tasks + 1) // 2)
        return {c: k for c, k in self._separates.items() if k >= need}

    def between_tasks_only(self) -> dict[str, list[str]]:
        """The columns constant within every observed task (blanks aside; in at least 2 tasks
        with two values or more) that take at least two values across tasks, with up to 3 of
        those values."""
        return {
            c: sorted(v, key=str)
            for c, v in self._values.items()
            if c not in self._varies and len(v) > 1 and self._constant_in[c] >= 2
        }

    def warn(self, *, stacklevel: int | None = None) -> None:
        """Warn (:class:`~ragim.errors.DataWarning`, one per kind) about far values, columns
        that separate the outcome and columns that vary only between tasks: :meth:`messages`."""
        for message in self.messages():
            warnings.warn(
                message,
                DataWarning,
                stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1,
            )

    def messages(self) -> list[str]:
        """The text of each warning :meth:`warn` gives, in order: far values, columns that
        separate the outcome, columns that vary only between tasks (absent kinds left out)."""
        out = []
        far = self.far_values()
        if far:
            parts = []
            for name, found in far.items():
                ref = self.reference(name)
                shown = []
                for task_id, n, values in found[:3]:
                    rows = f"{n}+ rows" if n >= 2 * EXTREMES else f"{n} row{'s' * (n > 1)}"
                    shown.append(f"task {task_id!r}: {', '.join(map(_fmt, values))} ({rows})")
                more = f" and {len(found) - 3} more task(s)" if len(found) > 3 else ""
                parts.append(
                    f"{name!r} in {'; '.join(shown)}{more} (the column's median "
                    f"{_fmt(ref[0])}, robust SD {_fmt(ref[1])})"
                )
            out.append(
                f"values far outside the rest of their column, more than {FAR_SD:g} robust SDs "
                "(scaled median absolute deviations) from its median and from their own task's, "
                "and on the log scale too for a positive column: " + "; ".join(parts) + ". "
                "They would be fitted as real measurements: they widen the shared schema's SD "
                "(the '+1 SD' of every explanation) and flatten the fitted effects. Check them "
                "for a typo or another unit (an age in months among years, mg/dL among mmol/L); "
                "correct them or make those cells blank; if they are real, ignore this"
            )
        leaks = ", ".join(
            f"{c!r} ({k} of {self.n_tasks} tasks)" for c, k in self.separating().items()
        )
        between = ", ".join(
            f"{c!r} (e.g. {', '.join(v[:3])})" for c, v in self.between_tasks_only().items()
        )
        kinds = [
            (
                leaks,
                f"separate the outcome on their own, almost perfectly (AUROC >= "
                f"{LEAK_AUROC:g} within a task): a recoding of the outcome, or recorded after it "
                "(a discharge code, a treatment given because of it)? A model would read it as a "
                "huge, precisely estimated risk factor. Drop it unless it is known when the "
                "prediction is made",
            ),
            (
                between,
                "never vary within a task, only between tasks (a property of the site or "
                "the study, such as a bed count): no task's own model can estimate their effect, "
                "and a model pooled over tasks learns it only from the differences between the "
                f"{self.n_tasks} tasks, so its odds ratio reflects whatever else differs between "
                "them (site, case mix, outcome), not an effect on patients. Drop them, or describe "
                "the difference in the task descriptions",
            ),
        ]
        out.extend(f"column(s) {cols} {text}" for cols, text in kinds if cols)
        blank = self.blank_in_whole_tasks()
        if blank:
            shown = "; ".join(
                f"{c!r} in {name_some(ids)} ({len(ids)} of {self.n_tasks} tasks)"
                for c, ids in blank.items()
            )
            out.append(
                f"column(s) blank in every row of some tasks and never blank in the others: "
                f"{shown}. Their missing-value term varies only between tasks, so a model pooled "
                "over them learns the difference between those tasks and the rest (site, case "
                "mix) as the effect of a blank value, and gives it to every new patient whose "
                "value is blank. Fill the values in if they exist, or leave the column out of "
                "every file"
            )
        return out


def check_added_rows(
    schema: FeatureSchema, tasks: Iterable[Any], *, ratio: float = SCALE_RATIO
) -> list[str]:
    """The problems of new tasks' rows against a fitted schema (the check of
    :meth:`ragim.index.TaskIndex.add`): per task and continuous column, a median that differs
    from the schema's by ``ratio`` (:data:`~ragim.schema.SCALE_RATIO`) or more while lying
    outside the schema's fitted range (another unit, as :func:`ragim.schema.scale_gaps` finds
    between tables), else values more than :data:`~ragim.schema.FAR_SD` SDs from the schema's
    mean (:meth:`~ragim.schema.FeatureSchema.far_values`). One line per task and column.

    A task whose rows do not match the schema is passed over (fitting it names the problem).

    Raises
    ------
    ValidationError
        When ``schema`` is not fitted.
    """
    if not schema.is_fitted:
        raise ValidationError("check_added_rows needs a fitted schema")
    out = []
    for task in tasks:
        try:
            shifts = schema.scale_shifts(task.X)  # medians outside the fitted range
            far = schema.far_values(task.X)
        except ValidationError:
            continue  # fitting names what does not match
        for f in schema.features:
            unit = f" {f.unit}" if f.unit else ""
            med, ref, low, high = shifts.get(f.name, (0.0, 0.0, 0.0, 0.0))
            if med > 0 and ref > 0 and (factor := max(med / ref, ref / med)) >= ratio:
                way = "larger" if med > ref else "smaller"
                out.append(
                    f"task {task.task_id!r}: {f.name!r} has median {_fmt(med)} against "
                    f"the index's {_fmt(ref)}{unit} (range {_fmt(low)} to {_fmt(high)}), "
                    f"{_fmt(factor)} times {way} (another unit)"
                )
                continue
            if f.name in far:
                n, ex = far[f.name]
                out.append(
                    f"task {task.task_id!r}: {f.name!r} has {n} value(s) more than {FAR_SD:g} "
                    f"SDs from the index's mean {_fmt(schema.means_[f.name])}{unit} (SD "
                    f"{_fmt(schema.scales_[f.name])}), e.g. {', '.join(map(_fmt, ex))}"
                )
    return out


def warn_added_rows(
    schema: FeatureSchema, tasks: Sequence[Any], *, stacklevel: int | None = None
) -> None:
    """One :class:`~ragim.errors.DataWarning` listing :func:`check_added_rows`; none without
    problems."""
    found = check_added_rows(schema, tasks)
    if found:
        warnings.warn(
            "rows of the added task(s) lie far from those the index's schema was fitted on: "
            + "; ".join(found)
            + ". Their models are fitted on the index's scale as they are, and later searches "
            "borrow their effects: convert them to the index's units (or correct them) and add "
            f"again; {name_some([t.task_id for t in tasks])} can be taken out with remove()",
            DataWarning,
            stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1,
        )


def between_task_terms(constant_terms: Iterable[Mapping[str, float]]) -> list[str]:
    """The terms constant within every task (each task's
    :func:`~ragim.models.family.fit_constant_terms`, as index records keep them) that take at
    least two values across the tasks: terms whose effect only the differences between tasks
    can show (a site's bed count). The intercept is never one. Sorted by name.

    >>> tasks = [{"beds": 100.0, "age": 60.0}, {"beds": 400.0, "age": 60.0}, {"beds": 250.0}]
    >>> between_task_terms(tasks)
    ['beds']
    """
    common: set[str] | None = None
    values: dict[str, set[float]] = {}
    for terms in constant_terms:
        keys = {k for k in terms if k != "intercept"}
        common = keys if common is None else common & keys
        for k in keys:
            values.setdefault(k, set()).add(float(terms[k]))
    return sorted(k for k in common or () if len(values[k]) > 1)


def never_varied_terms(constant_terms: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The terms constant within every task (each task's
    :func:`~ragim.models.family.fit_constant_terms`, as index records keep them) at one and the
    same value in all of them, with that value: a GAM bin no patient of any task fell in (0.0),
    a level no patient had. No task's rows could estimate them, so a model generated from the
    tasks has nothing to borrow for them either. The intercept is never one. Empty when a task
    records none.

    >>> never_varied_terms([{"age[-inf..30]": 0.0, "beds": 100.0}, {"age[-inf..30]": 0.0}])
    {'age[-inf..30]': 0.0}
    """
    common: dict[str, float] | None = None
    for terms in constant_terms:
        now = {k: float(v) for k, v in terms.items() if k != "intercept"}
        common = now if common is None else {k: v for k, v in common.items() if now.get(k) == v}
    return dict(sorted((common or {}).items()))


def _fmt(x: float) -> str:
    """A number in a message: 4 significant digits."""
    return f"{x:.4g}"


__all__ = [
    "LEAK_AUROC",
    "LEAK_MIN_CLASS",
    "EXTREMES",
    "SKETCH",
    "MIN_OWN_ROWS",
    "Reference",
    "TrainingRowChecks",
    "between_task_terms",
    "never_varied_terms",
    "check_added_rows",
    "far_from",
    "robust_center",
    "warn_added_rows",
]
