"""Task and TaskCollection: clinical prediction tasks with validation.

A :class:`Task` is one binary prediction problem: a description in clinical
words, a patient table ``X``, binary outcomes ``y`` and metadata (site,
subgroup, source, patient ids for overlap checks). A :class:`TaskCollection`
holds many tasks over one :class:`~ragim.schema.FeatureSchema`; it may be lazy,
so that a family of a million generated tasks costs memory only for the tasks
that are materialised.

Examples
--------
>>> import numpy as np, pandas as pd
>>> X = pd.DataFrame({"age": np.linspace(30, 80, 20)})
>>> t = Task("demo", "Predict disease in adults", X, np.arange(20) % 2)
>>> tc = TaskCollection([t])
>>> len(tc), tc["demo"].n_rows
(1, 20)
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragim.canonical import (
    canonical_ids,
    canonical_level,
    canonical_text,
    invisible_characters,
    is_missing,
    strip_invisible,
    two_labels_spelt_apart,
)
from ragim.checks import check_number, misaligned_labels, repeated
from ragim.errors import ArtifactError, DataWarning, ValidationError, user_stacklevel
from ragim.params import ModelParams
from ragim.schema import FeatureSchema

DEFAULT_MIN_ROWS = 2
DEFAULT_MIN_PER_CLASS = 1
FORMAT = "ragim.task-collection"


@dataclass
class Task:
    """One binary clinical prediction task.

    Parameters
    ----------
    task_id : unique identifier.
    description : free clinical text ("Predict multi-vessel coronary disease in women
        aged 40-55 at the Hungarian Institute of Cardiology").
    X : patient table, one row per patient.
    y : binary outcomes (0/1), one per row, matched to ``X`` by position; a pandas Series
        whose index holds ``X``'s row labels in another order is refused.
    metadata : JSON-safe dict, e.g. ``site``, ``subgroup``, ``outcome``, ``source`` and
        ``patient_ids`` (one id per row, in row order, none repeated; tasks sharing
        patient ids overlap).
    true_params : the known generating model, for synthetic families.
    oracle_params : the part of the true model that the task's description determines
        (the true model without the task's own noise), for synthetic families: the limit of
        any zero-shot method. Same kind and schema as ``true_params``.
    """

    task_id: str
    description: str
    X: pd.DataFrame
    y: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    true_params: ModelParams | None = None
    oracle_params: ModelParams | None = None

    def __post_init__(self):
        if isinstance(self.task_id, str):
            self.task_id = canonical_text(self.task_id)
        if isinstance(self.description, str):
            hidden = invisible_characters(self.description)
            self.description = strip_invisible(self.description)
            if hidden:
                warnings.warn(
                    f"task {self.task_id!r}: removed {len(hidden)} invisible character(s) "
                    f"{sorted(set(hidden))[:3]} from the description",
                    DataWarning,
                    stacklevel=user_stacklevel(),
                )
        misaligned = misaligned_labels(self.X, self.y)
        self.y = _labels_as_numbers(self.y)
        problems = self.structural_problems() + misaligned
        if self.oracle_params is not None and (
            self.true_params is None or self.oracle_params.names != self.true_params.names
        ):
            problems.append("oracle_params need true_params of the same kind and layout")
        if problems:
            raise ValidationError(f"invalid task {self.task_id!r}:", problems)
        self.y = np.asarray(self.y, dtype=np.int64).reshape(-1)
        self.metadata = canonical_metadata(self.metadata, where=f"task {self.task_id!r}")
        check_patient_id_rows(self.metadata, len(self.y), f"task {self.task_id!r}")

    def structural_problems(self) -> list[str]:
        """Problems that make the object unusable as a task at all."""
        p = []
        if not isinstance(self.task_id, str) or not self.task_id.strip():
            p.append(f"task_id must be a non-empty string, got {self.task_id!r}")
        if not isinstance(self.description, str) or not self.description.strip():
            p.append("description is empty; every task needs a clinical description")
        if not isinstance(self.X, pd.DataFrame):
            p.append(f"X must be a pandas DataFrame, got {type(self.X).__name__}")
        y = np.asarray(self.y)
        if y.ndim != 1 and not (y.ndim == 2 and 1 in y.shape):
            p.append(f"y must be one-dimensional, got shape {y.shape}")
            return p
        y = y.reshape(-1)
        if isinstance(self.X, pd.DataFrame) and len(self.X) != y.shape[0]:
            p.append(f"X has {len(self.X)} rows but y has {y.shape[0]}")
        if y.dtype.kind in "fc":
            if np.isnan(y).any():
                p.append(f"y has {int(np.isnan(y).sum())} NaN values")
            if np.isinf(y).any():
                p.append(f"y has {int(np.isinf(y).sum())} infinite values")
        if y.dtype.kind in "USO":
            levels = sorted({str(v) for v in y.tolist()})[:5]
            p.append(
                f"y holds text labels {levels}; outcomes must be 0/1 or True/False: convert "
                "them, e.g. (y == 'yes').astype(int), or pass pos_label= to the folder loader"
            )
        elif y.dtype.kind not in "biuf":
            p.append(f"y must be numeric 0/1, got dtype {y.dtype}")
        else:
            finite = y[np.isfinite(y)] if y.dtype.kind == "f" else y
            other = sorted(set(np.unique(finite).tolist()) - {0, 1})
            if other:
                p.append(f"y must be binary 0/1; found other values {other[:5]}")
        return p

    # ------------------------------------------------------------------ properties
    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_positive(self) -> int:
        return int(self.y.sum())

    @property
    def prevalence(self) -> float:
        return float(self.y.mean()) if self.n_rows else math.nan

    @property
    def patient_ids(self) -> frozenset:
        """The task's patient ids in canonical text form (see
        :func:`ragim.canonical.canonical_id`)."""
        return frozenset(self.metadata.get("patient_ids") or ())

    def fit_problems(
        self, *, min_rows: int = DEFAULT_MIN_ROWS, min_per_class: int = DEFAULT_MIN_PER_CLASS
    ) -> list[str]:
        """Reasons this task cannot be fitted (too few rows, a single class, ...)."""
        p = []
        if self.n_rows < min_rows:
            p.append(
                f"task {self.task_id!r} has {self.n_rows} rows; at least {min_rows} are needed"
            )
        n1 = self.n_positive
        n0 = self.n_rows - n1
        if self.n_rows and (n0 == 0 or n1 == 0):
            cls = 1 if n0 == 0 else 0
            p.append(
                f"task {self.task_id!r} has only one class (all {cls}); a task needs at least "
                f"{min_per_class} of each"
            )
        elif min(n0, n1) < min_per_class:
            p.append(
                f"task {self.task_id!r} has {n1} positives and {n0} negatives; at least "
                f"{min_per_class} of each are needed"
            )
        return p

    def subset(self, rows: Any, *, task_id: str | None = None) -> Task:
        """A task restricted to some rows (positions, or a boolean mask over the rows)."""
        rows = np.asarray(rows)
        if rows.size == 0 and rows.dtype != bool:
            rows = rows.astype(np.intp)  # no rows: an empty task (np.asarray([]) is float)
        if rows.dtype == bool:
            if len(rows) != self.n_rows:
                raise ValidationError(
                    f"task {self.task_id!r}: a row mask of {len(rows)} values, "
                    f"for {self.n_rows} rows"
                )
            rows = np.flatnonzero(rows)
        meta = dict(self.metadata)
        if meta.get("patient_ids") is not None:
            ids = list(meta["patient_ids"])
            meta["patient_ids"] = [ids[i] for i in rows]
        return Task(
            task_id or self.task_id,
            self.description,
            self.X.iloc[rows].reset_index(drop=True),
            self.y[rows],
            meta,
            self.true_params,
            self.oracle_params,
        )

    def split(self, test_size: float = 0.3, *, seed: int = 0) -> tuple[Task, Task]:
        """A stratified train/test split of the rows."""
        test_size = check_number(test_size, "test_size", ge=0, le=1)
        rng = np.random.default_rng(seed)
        train, test = [], []
        for cls in (0, 1):
            idx = np.where(self.y == cls)[0]
            rng.shuffle(idx)
            k = int(round(len(idx) * test_size))
            test.extend(idx[:k])
            train.extend(idx[k:])
        return self.subset(np.sort(train)), self.subset(np.sort(test))  # subset takes [] too

    def __repr__(self) -> str:
        return (
            f"Task({self.task_id!r}, n={self.n_rows}, prevalence={self.prevalence:.2f}, "
            f"description={self.description[:60]!r}{'...' if len(self.description) > 60 else ''})"
        )


def _labels_as_numbers(y: Any) -> Any:
    """Booleans, and object arrays holding only booleans and numbers, as floats (0/1 checks
    follow)."""
    arr = np.asarray(y)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if (
        arr.dtype == object
        and arr.size
        and all(
            isinstance(v, bool | int | float | np.bool_ | np.integer | np.floating)
            for v in arr.reshape(-1)
        )
    ):
        return arr.astype(float)
    return y


def _outcome_key(v: Any) -> str:
    """An outcome value in canonical form, with ``true``/``false`` in any case as ``1``/``0``
    (as booleans are): ``"FALSE"``, ``False`` and ``0`` are one value."""
    c = canonical_level(v)
    low = c.lower()
    return "1" if low == "true" else "0" if low == "false" else c


def _written(v: Any) -> str:
    """An outcome value as the file wrote it (text as read, numbers as numbers)."""
    return canonical_text(v) if isinstance(v, str) else str(v)


def binary_outcome(values: Any, *, pos_label: Any = None, where: str = "y") -> np.ndarray:
    """Outcomes as 0/1 integers, with the event stated or unambiguous.

    Without ``pos_label``, the values must be 0/1 in any form (``1``, ``1.0``, ``"1"``,
    ``True``, ``"true"``, ``"FALSE"``); anything else (``"yes"``/``"no"``, ``1``/``2``) needs
    ``pos_label``, the value that marks the event. With ``pos_label`` the values may hold
    at most two distinct levels, compared in canonical form: ``2`` matches ``2.0``, and
    ``"FALSE"``, ``"false"``, ``False`` and ``0`` are one value (so ``pos_label="FALSE"``
    makes the false rows the events). Errors show the values as written.

    Raises
    ------
    ValidationError
        Missing outcomes, more than two distinct values, values whose event is not stated,
        or a ``pos_label`` that is not among two present values.

    Examples
    --------
    >>> binary_outcome([0, 1.0, True]).tolist()
    [0, 1, 1]
    >>> binary_outcome(["yes", "no", "yes"], pos_label="yes").tolist()
    [1, 0, 1]
    >>> binary_outcome(["TRUE", "FALSE", "TRUE"], pos_label="false").tolist()
    [0, 1, 0]
    """
    arr = np.asarray(values, dtype=object).reshape(-1)
    missing = [i for i, v in enumerate(arr) if is_missing(v)]
    if missing:
        raise ValidationError(
            f"{where} is empty in {len(missing)} data row(s) {[i + 1 for i in missing[:5]]}; "
            "drop those patients or fill in their outcome"
        )
    keys = np.array([_outcome_key(v) for v in arr], dtype=object)
    levels = sorted(set(keys.tolist()))
    written = sorted({_written(v) for v in arr})
    if pos_label is None:
        if any(k not in ("0", "1") for k in levels):
            raise ValidationError(
                f"{where} holds {written[:5]}; outcomes must be 0/1 or true/false, "
                "or name the value that marks the event with pos_label= (CLI: --pos-label)"
            )
        return (keys == "1").astype(np.int64)
    pos = _outcome_key(pos_label)
    if len(levels) > 2:
        shown = two_labels_spelt_apart(arr)
        raise ValidationError(
            f"{where} holds {len(levels)} distinct values {written[:5]}; a binary outcome has two"
            + (
                f" (these are 2 written in different letter case: {shown}; write each one way)"
                if shown
                else ""
            )
        )
    if len(levels) == 2 and pos not in levels:
        raise ValidationError(
            f"pos_label {pos_label!r} is not one of the outcome values {written} in {where}"
        )
    return (keys == pos).astype(np.int64)


def patient_id_set(metadata: Mapping[str, Any] | None) -> frozenset[str]:
    """The canonical patient ids of a task's metadata (empty when it has none).

    >>> sorted(patient_id_set({"patient_ids": [1, "0002", 3.0]}))
    ['0002', '1', '3']
    """
    ids = (metadata or {}).get("patient_ids") or ()
    return frozenset(canonical_ids(ids, "patient id"))


def check_patient_id_rows(metadata: Mapping[str, Any], n_rows: int, where: str) -> None:
    """Refuse ``patient_ids`` that are not one per row (:func:`canonical_metadata` checks the
    ids themselves).

    Raises
    ------
    ValidationError
        When ``metadata["patient_ids"]`` is given and its length is not ``n_rows``.
    """
    ids = metadata.get("patient_ids")
    if ids is not None and len(ids) != n_rows:
        raise ValidationError(
            f"{where}: metadata patient_ids holds {len(ids)} ids but the task has {n_rows} rows; "
            "give one id per row, in row order"
        )


def canonical_metadata(metadata: Any, *, where: str = "task") -> dict[str, Any]:
    """Task metadata with canonical values: text in NFC, ``patient_ids`` as a list of canonical
    id strings (:func:`~ragim.canonical.canonical_id`), a missing value (NaN, ``pd.NA``: a
    blank cell of ``descriptions.csv``) as None, a NumPy scalar (a value taken from a
    DataFrame row: ``np.int64(5)``) as the Python number or boolean it holds.

    Raises
    ------
    ValidationError
        When ``metadata`` is not a dict, or a patient id is blank, missing, a non-integral
        number or on more than one row.
    """
    if not isinstance(metadata, Mapping):
        raise ValidationError(f"{where}: metadata must be a dict, got {type(metadata).__name__}")
    out = {}
    for k, v in metadata.items():
        if k == "patient_ids" and v is not None:
            if isinstance(v, str | bytes | set | frozenset | Mapping) or not isinstance(
                v, Iterable
            ):
                raise ValidationError(
                    f"{where}: patient_ids must be a list of ids, one per row in row order, got "
                    f"{type(v).__name__}"
                )
            try:
                v = canonical_ids(v, "patient id")
            except ValidationError as exc:
                raise ValidationError(f"{where}: {exc}") from None
            if twice := repeated(v):
                raise ValidationError(
                    f"{where}: patient id(s) {twice[:5]} appear on more than one row; each "
                    "row of a task must be a different patient"
                )
        elif isinstance(v, str):
            v = canonical_text(v)
        elif is_missing(v):  # a blank cell of descriptions.csv (NaN) is a missing value
            v = None
        elif isinstance(v, np.generic):  # a value taken from a DataFrame: np.int64(5) is 5
            v = float(str(v)) if isinstance(v, np.floating) and v.itemsize < 8 else v.item()
        out[canonical_text(k) if isinstance(k, str) else k] = v
    return out


# ---------------------------------------------------------------------- sources
class _ListSource:
    def __init__(self, tasks: Sequence[Task]):
        self.tasks = list(tasks)

    def __len__(self):
        return len(self.tasks)

    def info(self, i: int) -> tuple[str, str, dict]:
        t = self.tasks[i]
        return t.task_id, t.description, t.metadata

    def task(self, i: int) -> Task:
        return self.tasks[i]


class _LazySource:
    def __init__(
        self, n: int, info: Callable[[int], tuple[str, str, dict]], make: Callable[[int], Task]
    ):
        self.n, self._info, self._make = int(n), info, make

    def __len__(self):
        return self.n

    def info(self, i: int):
        return self._info(i)

    def task(self, i: int) -> Task:
        return self._make(i)


def spelled_apart(pairs: Iterable[tuple[str, str]]) -> str:
    """The keys of ``pairs`` (``(key, spelling)``) written in more than one way, as
    ``"'01' and '1'; ..."`` (at most three keys); "" when every key has one spelling.

    >>> spelled_apart([("north", "North"), ("north", "north"), ("south", "South")])
    "'North' and 'north'"
    """
    spellings: dict[str, set[str]] = {}
    for key, spelling in pairs:
        spellings.setdefault(key, set()).add(spelling)
    split = [sorted(s) for s in spellings.values() if len(s) > 1]
    return "; ".join(" and ".join(map(repr, s)) for s in split[:3])


def _warn_codes_differing_in_case(by: str, codes: Sequence[str | None]) -> None:
    """One :class:`DataWarning` when group codes differ only in letter case or spacing
    (sites ``North`` and ``north``): they are read as two groups, so holding out (or
    excluding) one leaves the other's tasks in, though they are probably one site."""
    shown = spelled_apart((" ".join(c.casefold().split()), c) for c in codes if c is not None)
    if shown:
        warnings.warn(
            f"metadata {by!r} holds codes that differ only in letter case or spacing ({shown}): "
            "ragim reads them as different groups, so holding out or excluding one (--exclude, "
            "a held-out site, leave-group-out) leaves the other's tasks in; if they are one "
            "group, write them the same way",
            DataWarning,
            stacklevel=user_stacklevel(),
        )


class TaskCollection:
    """Many tasks over one feature schema; possibly lazy.

    Parameters
    ----------
    tasks : the tasks.
    schema : the shared schema (not necessarily fitted). Inferred from the first task
        when omitted.
    name : a short name, shown in summaries ("heart-disease").
    validate : check every task against the schema and for duplicate ids.
    """

    def __init__(
        self,
        tasks: Sequence[Task] = (),
        schema: FeatureSchema | None = None,
        name: str = "tasks",
        *,
        validate: bool = True,
    ):
        tasks = list(tasks)
        bad = [i for i, t in enumerate(tasks) if not isinstance(t, Task)]
        if bad:
            raise ValidationError(
                f"TaskCollection items must be Task objects; items {bad[:10]} are not"
            )
        if schema is None and tasks:
            schema = FeatureSchema.infer(
                [t.X for t in tasks], labels=[f"task {t.task_id!r}" for t in tasks]
            )
        self.schema = schema
        self.name = name
        self._source: _ListSource | _LazySource = _ListSource(tasks)
        self._rows = np.arange(len(tasks))
        self._id_pos: dict[str, int] | None = None
        self._patients: dict | None = None
        if validate:
            self.validate(check_fit=False)

    @classmethod
    def lazy(
        cls,
        n: int,
        info: Callable[[int], tuple[str, str, dict]],
        make: Callable[[int], Task],
        schema: FeatureSchema,
        name: str = "tasks",
    ) -> TaskCollection:
        """A collection whose task ``i`` is built by ``make(i)`` only when accessed.

        ``info(i)`` must return ``(task_id, description, metadata)`` cheaply.
        """
        obj = cls.__new__(cls)
        obj.schema, obj.name = schema, name
        obj._source = _LazySource(n, info, make)
        obj._rows = np.arange(int(n))
        obj._id_pos, obj._patients = None, None
        return obj

    def _view(self, rows: np.ndarray, name: str | None = None) -> TaskCollection:
        obj = TaskCollection.__new__(TaskCollection)
        obj.schema, obj.name = self.schema, name or self.name
        obj._source, obj._rows = self._source, np.asarray(rows, dtype=np.int64)
        obj._id_pos, obj._patients = None, None
        return obj

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self._rows.shape[0])

    def __iter__(self) -> Iterator[Task]:
        for r in self._rows:
            yield self._source.task(int(r))

    def __getitem__(self, key: int | str) -> Task:
        if isinstance(key, str):
            return self._source.task(int(self._rows[self._position(canonical_text(key))]))
        if isinstance(key, int | np.integer):
            return self._source.task(int(self._rows[int(key)]))
        raise TypeError("index a TaskCollection with an int position or a task_id string")

    def __contains__(self, task_id: str) -> bool:
        return isinstance(task_id, str) and canonical_text(task_id) in self._ids_map()

    def _ids_map(self) -> dict[str, int]:
        if self._id_pos is None:
            self._id_pos = {self._source.info(int(r))[0]: i for i, r in enumerate(self._rows)}
        return self._id_pos

    def _position(self, task_id: str) -> int:
        try:
            return self._ids_map()[task_id]
        except KeyError:
            raise KeyError(f"no task {task_id!r} in collection {self.name!r}") from None

    def info(self, i: int) -> dict[str, Any]:
        """``{"task_id", "description", "metadata"}`` of task ``i`` without materialising rows."""
        tid, desc, meta = self._source.info(int(self._rows[i]))
        return {"task_id": tid, "description": desc, "metadata": meta}

    @property
    def ids(self) -> list[str]:
        return [self._source.info(int(r))[0] for r in self._rows]

    @property
    def descriptions(self) -> list[str]:
        return [self._source.info(int(r))[1] for r in self._rows]

    @property
    def metadata(self) -> list[dict]:
        return [self._source.info(int(r))[2] for r in self._rows]

    def take(
        self, positions: Sequence[int] | np.ndarray, name: str | None = None
    ) -> TaskCollection:
        """A sub-collection by positions."""
        return self._view(self._rows[np.asarray(positions, dtype=np.int64)], name)

    def head(self, n: int) -> TaskCollection:
        return self._view(self._rows[:n])

    # ------------------------------------------------------------------ selection
    def filter(
        self, predicate: Callable[[dict], bool] | None = None, **equals: Any
    ) -> TaskCollection:
        """Tasks whose metadata match: ``tc.filter(site="Cleveland")`` or
        ``tc.filter(lambda info: info["metadata"]["n"] > 50)`` (``info`` as in :meth:`info`).

        Keyword values compare as group codes (:func:`~ragim.canonical.canonical_level`):
        ``site=1`` matches a site stored as ``"01"``, ``1`` or ``1.0``.
        """
        codes = {k: self.group_codes(k) for k in equals}
        want = {k: canonical_level(v) for k, v in equals.items()}
        keep = [
            i
            for i in range(len(self))
            if all(codes[k][i] == v for k, v in want.items())
            and (predicate is None or predicate(self.info(i)))
        ]
        return self.take(keep)

    def metadata_keys(self) -> list[str]:
        """The metadata keys any task has, sorted (``patient_ids`` left out): what a split, an
        exclusion or a leave-group-out evaluation can go by.

        Examples
        --------
        >>> X = pd.DataFrame({"x": [0.0, 1.0]})
        >>> TaskCollection([Task("a", "d", X, [0, 1], {"site": "A", "patient_ids": ["1", "2"]}),
        ...                 Task("b", "d", X, [0, 1], {"outcome": "cad"})]).metadata_keys()
        ['outcome', 'site']
        """
        return sorted({k for m in self.metadata for k in m if k != "patient_ids"})

    def group_codes(self, by: str) -> list[str | None]:
        """The canonical code (:func:`~ragim.canonical.canonical_level`) of every task's
        ``metadata[by]``, in task order; None where a task has no such key.

        Spellings of one code (``1``, ``"1"``, ``"01"``) are one group. Where the metadata spell
        one code in more than one way as text (sites ``"01"`` and ``"1"``), this warns
        (:class:`~ragim.errors.DataWarning`) naming them: they may be two sites that
        only a leading zero tells apart. Text codes that differ only in letter case or spacing
        (``"North"`` and ``"north"``) stay two groups, and this warns naming them too: a
        held-out site would leave the other spelling's tasks in the index.

        Examples
        --------
        >>> import pandas as pd
        >>> X = pd.DataFrame({"x": [0.0, 1.0]})
        >>> tc = TaskCollection([Task(t, "d", X, [0, 1], {"site": s})
        ...                      for t, s in [("a", "01"), ("b", 2), ("c", "2.0")]])
        >>> tc.group_codes("site")
        ['1', '2', '2']
        """
        values = [m.get(by) for m in self.metadata]
        codes = [canonical_level(v) for v in values]
        shown = spelled_apart(  # a number has one spelling: its canonical form
            (code, v if isinstance(v, str) else code)
            for v, code in zip(values, codes, strict=True)
            if code is not None
        )
        if shown:
            warnings.warn(
                f"metadata {by!r} writes one code in several ways ({shown}): ragim reads them as "
                "one group, as numbers; if they are different groups, give them values that "
                "differ as numbers too (e.g. '01' -> 'A01')",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        _warn_codes_differing_in_case(by, codes)
        return codes

    def groups(self, by: str) -> dict[Any, TaskCollection]:
        """Split into sub-collections by a metadata key (keyed by the first spelling of each
        group code; spellings of one code such as ``1`` and ``"01"`` form one group, see
        :meth:`group_codes`)."""
        out: dict[Any, list[int]] = {}
        first: dict[Any, Any] = {}
        for i, code in enumerate(self.group_codes(by)):
            out.setdefault(first.setdefault(code, self.metadata[i].get(by)), []).append(i)
        return {k: self.take(v) for k, v in out.items()}

    def group_split(
        self, by: str, test_groups: Sequence[Any]
    ) -> tuple[TaskCollection, TaskCollection]:
        """(train, test): tasks whose ``metadata[by]`` is in ``test_groups`` go to test.

        Group codes compare in canonical form, so ``"01"``, ``1`` and ``1.0`` are one site.
        """
        if isinstance(test_groups, str | bytes) or not isinstance(test_groups, Iterable):
            test_groups = [test_groups]
        if not any(by in m for m in self.metadata):
            raise ValidationError(
                f"no task has the metadata key {by!r} to split by; the tasks' keys: "
                f"{self.metadata_keys()[:12]}"
            )
        codes = self.group_codes(by)
        known = set(codes)
        unknown = [g for g in test_groups if canonical_level(g) not in known]
        if unknown:
            shown = sorted({str(m.get(by)) for m in self.metadata})
            raise ValidationError(f"no tasks with {by} in {unknown}; known values: {shown}")
        wanted = {canonical_level(g) for g in test_groups}
        test = [i for i, c in enumerate(codes) if c in wanted]
        train = sorted(set(range(len(self))) - set(test))
        return self.take(train), self.take(test)

    def overlapping(self, task: Task | str) -> list[str]:
        """Ids of the other tasks that share at least one patient with ``task``."""
        if isinstance(task, str):
            task = self[task]
        if self._patients is None:
            idx: dict[Any, set[str]] = {}
            for i, meta in enumerate(self.metadata):
                tid = self.info(i)["task_id"]
                for pid in patient_id_set(meta):
                    idx.setdefault(pid, set()).add(tid)
            self._patients = idx
        hits: set[str] = set()
        for pid in task.patient_ids:
            hits |= self._patients.get(pid, set())
        hits.discard(task.task_id)
        return sorted(hits)

    # ------------------------------------------------------------------ validation
    def validate(
        self,
        *,
        min_rows: int = DEFAULT_MIN_ROWS,
        min_per_class: int = DEFAULT_MIN_PER_CLASS,
        check_fit: bool = True,
    ) -> TaskCollection:
        """Raise one :class:`ValidationError` listing every offending task.

        Checks duplicate ids, columns not in the schema and schema mismatches; with
        ``check_fit`` also too few rows and single-class tasks. A collection is built with
        ``check_fit=False``: a task that cannot be fitted is a valid task (it may still serve
        as a zero-shot target), and :meth:`TaskIndex.build <ragim.TaskIndex.build>` and
        :func:`~ragim.models.fit_many` skip it with a warning that names it and the reason.
        """
        problems = []
        seen: dict[str, int] = {}
        for i in range(len(self)):
            tid = self.info(i)["task_id"]
            if tid in seen:
                problems.append(f"duplicate task id {tid!r} (positions {seen[tid]} and {i})")
            seen[tid] = i
        for t in self:
            if self.schema is not None:
                try:
                    self.schema.validate_frame(t.X, where=f"task {t.task_id!r}")
                except ValidationError as exc:
                    problems.extend(
                        f"task {t.task_id!r}: {p}" for p in (exc.problems or [str(exc)])
                    )
            if check_fit:
                problems.extend(t.fit_problems(min_rows=min_rows, min_per_class=min_per_class))
        if problems:
            raise ValidationError(
                f"{len(problems)} problem(s) in task collection {self.name!r}:", problems
            )
        return self

    # ------------------------------------------------------------------ summaries
    def to_frame(self) -> pd.DataFrame:
        """One row per task: id, description, n, prevalence and scalar metadata."""
        rows = []
        for t in self:
            meta = {
                k: v
                for k, v in t.metadata.items()
                if isinstance(v, str | int | float | bool) or v is None
            }
            rows.append(
                {
                    "task_id": t.task_id,
                    "n": t.n_rows,
                    "prevalence": round(t.prevalence, 3),
                    **meta,
                    "description": t.description,
                }
            )
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        n = len(self)
        head = ""
        if 0 < n <= 200:
            sites = sorted({str(m.get("site")) for m in self.metadata if m.get("site") is not None})
            if sites:
                head = f", sites={sites}"
        return f"TaskCollection({self.name!r}, {n} tasks{head}, schema={self.schema!r})"

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save as an artifact directory: ``collection.json``, ``tasks.jsonl``, ``data.parquet``
        and (when any task has them) ``true_params.npz``."""
        from ragim.io import json_bytes, jsonl_bytes, npz_bytes, write_artifact

        frames, records, true_vecs, true_schemas, oracle_vecs = [], [], {}, {}, {}
        for t in self:
            X = t.X.reset_index(drop=True).copy()
            X.columns = [str(c) for c in X.columns]
            cols = list(X.columns)
            bad = sorted({c for c in cols if cols.count(c) > 1 or c in ("__task__", "__y__")})
            if bad:
                raise ValidationError(
                    f"cannot save task {t.task_id!r}: duplicated or reserved column names {bad}"
                )
            X["__task__"] = t.task_id
            X["__y__"] = t.y
            frames.append(X)
            rec = {
                "task_id": t.task_id,
                "description": t.description,
                "metadata": t.metadata,
                "n_rows": t.n_rows,
            }
            if t.true_params is not None:
                rec["true_params"] = {
                    "kind": t.true_params.kind,
                    "metadata": t.true_params.metadata,
                }
                true_vecs[t.task_id] = t.true_params.vector
                fp = t.true_params.schema.fingerprint()
                true_schemas.setdefault(fp, t.true_params.schema.to_dict())
                rec["true_schema"] = fp
                if t.oracle_params is not None:
                    rec["oracle_params"] = {"metadata": t.oracle_params.metadata}
                    oracle_vecs[t.task_id] = t.oracle_params.vector
            records.append(rec)
        data = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame({"__task__": [], "__y__": []})
        )
        buf = io.BytesIO()
        try:
            data.to_parquet(buf, index=False)
        except (
            TypeError,
            ValueError,
        ) as exc:  # pyarrow's ArrowTypeError/ArrowInvalid derive from these
            data = _text_for_mixed_columns(data)
            buf = io.BytesIO()
            try:
                data.to_parquet(buf, index=False)
            except (TypeError, ValueError):
                raise ValidationError(
                    f"cannot save task collection {self.name!r}: the rows cannot be written "
                    f"as Parquet ({exc})"
                ) from exc
        files = {
            "collection.json": json_bytes(
                {
                    "name": self.name,
                    "schema": None if self.schema is None else self.schema.to_dict(),
                    "true_schemas": true_schemas,
                }
            ),
            "tasks.jsonl": jsonl_bytes(records),
            "data.parquet": buf.getvalue(),
        }
        if true_vecs:
            files["true_params.npz"] = npz_bytes(
                {f"t{i}": v for i, v in enumerate(true_vecs.values())}
            )
            files["true_params_ids.json"] = json_bytes(list(true_vecs))
        if oracle_vecs:
            files["oracle_params.npz"] = npz_bytes(
                {f"t{i}": oracle_vecs[tid] for i, tid in enumerate(true_vecs) if tid in oracle_vecs}
            )
        return write_artifact(path, FORMAT, files)

    @classmethod
    def load(cls, path: str | Path) -> TaskCollection:
        from ragim.io import read_artifact

        art = read_artifact(path, FORMAT)
        meta = art.read_json("collection.json")
        if not isinstance(meta, dict):
            raise ArtifactError(f"{art.path / 'collection.json'}: expected a JSON object")
        records = art.read_jsonl("tasks.jsonl")
        counts = [rec.get("n_rows") for rec in records]
        declared = (  # the rows tasks.jsonl declares, checked before any row is decoded
            sum(counts)
            if all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts)
            else None
        )
        data = art.read_parquet(
            "data.parquet", rows=declared, columns=("__task__", "__y__"), declared_in="tasks.jsonl"
        )
        true = {}
        if "true_params.npz" in art.files:
            ids = art.read_json("true_params_ids.json")
            arrs = art.read_npz("true_params.npz", members=_TASK_ARRAY)
            if (
                not isinstance(ids, list)
                or not all(isinstance(t, str) for t in ids)
                or len(ids) != len(arrs)
                or any(f"t{i}" not in arrs for i in range(len(ids)))
            ):
                raise ArtifactError(
                    f"{art.path / 'true_params_ids.json'}: is not a list of task ids matching "
                    "true_params.npz "
                    f"({len(arrs)} arrays); the artifact was assembled from different collections"
                )
            true = {tid: arrs[f"t{i}"] for i, tid in enumerate(ids)}
        oracle = {}
        if "oracle_params.npz" in art.files:
            arrs = art.read_npz("oracle_params.npz", members=_TASK_ARRAY)
            oracle = {tid: arrs[f"t{i}"] for i, tid in enumerate(true) if f"t{i}" in arrs}
        try:
            schema = None if meta.get("schema") is None else FeatureSchema.from_dict(meta["schema"])
        except ValidationError as exc:
            raise ArtifactError(f"{art.path / 'collection.json'}: {exc}") from exc
        feature_cols = set(data.columns) - {"__task__", "__y__"}
        absent = (
            [n for n in schema.names if n not in feature_cols]
            if schema is not None and records
            else []
        )
        if absent:
            raise ArtifactError(
                f"{art.path / 'data.parquet'}: lacks the columns {absent[:10]} of the "
                "schema in collection.json; the artifact was assembled from different collections"
            )
        try:
            groups = dict(tuple(data.groupby("__task__", sort=False)))
            rec_ids = [rec["task_id"] for rec in records]
            problems = [
                f"{tid!r} has rows in data.parquet but no record"
                for tid in groups
                if tid not in set(rec_ids)
            ]
            for rec in records:
                n = len(groups[rec["task_id"]]) if rec["task_id"] in groups else 0
                if "n_rows" in rec and n != rec["n_rows"]:
                    problems.append(
                        f"task {rec['task_id']!r}: tasks.jsonl says "
                        f"{rec['n_rows']} rows, data.parquet has {n}"
                    )
            missing_true = [
                rec["task_id"]
                for rec in records
                if ("true_params" in rec and rec["task_id"] not in true)
                or ("oracle_params" in rec and rec["task_id"] not in oracle)
            ]
            if missing_true or set(true) - set(rec_ids):
                problems.append(
                    "true_params_ids.json does not list the tasks with true "
                    f"parameters: {missing_true[:5]}"
                )
            if problems:
                raise ArtifactError(
                    f"{art.path}: tasks.jsonl and data.parquet do not agree; "
                    "the artifact was assembled from different "
                    "collections:\n  - " + "\n  - ".join(problems[:10])
                )
            schemas: dict[str, FeatureSchema] = {}
            tasks = []
            for rec in records:
                tid = rec["task_id"]
                df = groups.get(tid, data.iloc[0:0])
                X = df.drop(columns=["__task__", "__y__"]).reset_index(drop=True)
                tp = op = None
                if tid in true:
                    fp = rec["true_schema"]
                    if fp not in schemas:
                        try:
                            schemas[fp] = FeatureSchema.from_dict(meta["true_schemas"][fp])
                        except ValidationError as exc:
                            raise ArtifactError(
                                f"{art.path / 'collection.json'}: true_schemas.{fp}: {exc}"
                            ) from exc
                    tschema = schemas[fp]
                    tp = ModelParams(
                        rec["true_params"]["kind"],
                        tschema,
                        true[tid],
                        metadata=rec["true_params"]["metadata"],
                    )
                    if tid in oracle:
                        op = ModelParams(
                            tp.kind, tschema, oracle[tid], metadata=rec["oracle_params"]["metadata"]
                        )
                tasks.append(
                    Task(
                        tid, rec["description"], X, df["__y__"].to_numpy(), rec["metadata"], tp, op
                    )
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(
                f"{art.path}: task records are inconsistent with data.parquet ({exc})"
            ) from exc
        return cls(tasks, schema=schema, name=meta.get("name", "tasks"), validate=False)


#: the arrays of true_params.npz and oracle_params.npz: t0, t1, ... (one per task)
_TASK_ARRAY = re.compile(r"t[0-9]+")


def _text_for_mixed_columns(data: pd.DataFrame) -> pd.DataFrame:
    """Columns whose values mix Python types (text and numbers) become text, so Parquet can hold
    them; categorical features compare categories as text anyway."""
    data = data.copy()
    for c in data.columns:
        if data[c].dtype == object and len({type(v) for v in data[c].dropna()}) > 1:
            data[c] = data[c].map(
                lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            )
    return data


def support_test_split(
    y: np.ndarray, seed: int, test_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (support pool, test) row positions; the support pool is ordered so that
    its first two rows hold one of each class (when it has both), the rest shuffled.

    Examples
    --------
    >>> pool, test = support_test_split(np.array([0, 1] * 10), seed=0)
    >>> len(pool), len(test), sorted(np.array([0, 1] * 10)[pool[:2]].tolist())
    (10, 10, [0, 1])
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    pool, test = [], []
    for cls in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_test = int(np.ceil(len(idx) * test_fraction))
        test.extend(idx[:n_test])
        pool.extend(idx[n_test:])
    pool = rng.permutation(np.asarray(pool, dtype=np.int64))
    firsts = [int(np.flatnonzero(y[pool] == c)[0]) for c in (0, 1) if np.any(y[pool] == c)]
    if len(firsts) == 2:
        head = rng.permutation(pool[firsts])
        pool = np.concatenate([head, np.delete(pool, firsts)])
    return pool, np.sort(np.asarray(test, dtype=np.int64))


def draw_order(y_pool: np.ndarray, seed: int, *, both_classes: bool = True) -> np.ndarray:
    """A seeded random order of the support pool's positions. With ``both_classes`` its first
    two rows hold one of each class (when the pool has both), so that every k >= 2 draw holds
    both classes; without, its first k rows are a simple random sample of k rows (either class
    may be missing from a small draw).

    Examples
    --------
    >>> y = np.array([0, 0, 0, 1, 0, 0])
    >>> order = draw_order(y, seed=3)
    >>> sorted(order.tolist()) == list(range(6)), sorted(y[order[:2]].tolist())
    (True, [0, 1])
    >>> plain = draw_order(y, seed=3, both_classes=False)
    >>> plain.tolist() == np.random.default_rng(3).permutation(6).tolist()
    True
    """
    rng = np.random.default_rng(seed)
    y_pool = np.asarray(y_pool)
    order = rng.permutation(len(y_pool))
    if not both_classes:
        return order
    firsts = [
        int(np.flatnonzero(y_pool[order] == c)[0]) for c in (0, 1) if np.any(y_pool[order] == c)
    ]
    if len(firsts) == 2:
        order = np.concatenate([rng.permutation(order[firsts]), np.delete(order, firsts)])
    return order
