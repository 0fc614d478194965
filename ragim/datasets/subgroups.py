"""Sex x age-band subgroup tasks of a real cohort: the pieces the bundled families share.

:func:`heart_disease` and :func:`colon_cancer` both cut one cohort (a site, a trial arm)
into disjoint subgroups of sex x age band, keep a subgroup when it has enough patients of
each class, and describe it with one of a few sentence templates chosen by a hash of the
task id (so a task's text never changes between runs).

Examples
--------
>>> [band[0] for band in age_bands([50, 60])]
['<50', '50-59', '>=60']
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from ragim.checks import check_int
from ragim.errors import ValidationError
from ragim.tasks import Task

#: (sex name in metadata, plural noun, code in the ``sex`` column)
SEXES = (("female", "women", 0.0), ("male", "men", 1.0))


def check_sizes(min_rows: Any, min_per_class: Any) -> tuple[int, int]:
    """``(min_rows, min_per_class)`` as ints after checking each is an integer >= 1.

    >>> check_sizes(20, 5)
    (20, 5)
    """
    return check_int(min_rows, "min_rows", ge=1), check_int(min_per_class, "min_per_class", ge=1)


def check_age_cuts(cuts: Sequence[float]) -> list[float]:
    """The age-band cut points as a list, after checking they are increasing finite numbers.

    Raises
    ------
    ValidationError
        ``"age_bands must be increasing finite numbers, got (60, 50)"``.

    >>> check_age_cuts((50, 60))
    [50, 60]
    """
    edges = list(cuts)
    finite = all(
        isinstance(e, int | float | np.integer | np.floating) and np.isfinite(e) for e in edges
    )
    if not finite or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=False)):
        raise ValidationError(f"age_bands must be increasing finite numbers, got {cuts!r}")
    return edges


def age_bands(edges: Sequence[float]) -> list[tuple[str, str, str, float, float]]:
    """(label, id slug, phrase, lo, hi) of the age bands split at ``edges`` (lo <= age < hi).

    >>> age_bands([60])[1]
    ('>=60', 'ge60', 'aged 60 and over', 60, inf)
    """
    bounds = [-np.inf, *edges, np.inf]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        if lo == -np.inf:
            out.append((f"<{hi:g}", f"lt{hi:g}", f"under {hi:g}", lo, hi))
        elif hi == np.inf:
            out.append((f">={lo:g}", f"ge{lo:g}", f"aged {lo:g} and over", lo, hi))
        else:
            label, slug = f"{lo:g}-{hi - 1:g}", f"{lo:g}to{hi - 1:g}"
            out.append((label, slug, f"aged {lo:g} to {hi - 1:g}", lo, hi))
    return out


def sex_age_groups(
    df: pd.DataFrame, edges: Sequence[float], whole: str | None
) -> list[tuple[str, str, str, str, str, pd.DataFrame]]:
    """The disjoint sex x age-band subgroups of ``df`` (columns ``sex`` 0/1 and ``age``).

    Each is ``(subgroup, id slug, sex, age band, population phrase, rows)``; ``whole``, when
    given, is the phrase of one more group with every row (``"all"`` subgroup, sex and band).

    >>> df = pd.DataFrame({"sex": [0.0, 1.0, 1.0], "age": [40, 45, 70]})
    >>> [(g[1], len(g[5])) for g in sex_age_groups(df, [60], "patients")]
    [('all', 3), ('women_lt60', 1), ('women_ge60', 0), ('men_lt60', 1), ('men_ge60', 1)]
    """
    groups = [] if whole is None else [("all", "all", "all", "all", whole, df)]
    for sex, noun, code in SEXES:
        for label, slug, phrase, lo, hi in age_bands(edges):
            sub = df[(df["sex"] == code) & (df["age"] >= lo) & (df["age"] < hi)]
            pop = f"{noun} {phrase}"
            groups.append((f"{noun} {label}", f"{noun}_{slug}", sex, label, pop, sub))
    return groups


def enough_of_each(y: np.ndarray, min_rows: int, min_per_class: int) -> bool:
    """Whether 0/1 labels ``y`` have ``min_rows`` rows and ``min_per_class`` of each class.

    >>> enough_of_each(np.array([0, 1, 1]), 3, 1), enough_of_each(np.array([1, 1, 1]), 3, 1)
    (True, False)
    """
    n1 = int(np.sum(y))
    return len(y) >= min_rows and min(n1, len(y) - n1) >= min_per_class


def labelled_subgroups(
    df: pd.DataFrame,
    column: str,
    cohorts: Sequence[Any],
    outcomes: Sequence[str],
    edges: Sequence[float],
    whole: str | None,
    labels: Callable[[pd.DataFrame, str], pd.Series],
    min_rows: int,
    min_per_class: int,
) -> Iterator[tuple[Any, str, tuple, pd.DataFrame, np.ndarray]]:
    """The labelled subgroups of a cohort table, in task order: for each cohort (a value of
    ``column``), each outcome and each of the cohort's :func:`sex_age_groups` (``edges``,
    ``whole``), ``(cohort, outcome, group, rows, y)``.

    ``labels(rows, outcome)`` gives each row's 0/1 label, or NaN to leave the row out;
    ``rows`` are the rows kept and ``y`` their labels. A subgroup without ``min_rows`` rows
    and ``min_per_class`` of each class (:func:`enough_of_each`) is skipped.

    >>> df = pd.DataFrame({"site": "A", "sex": [0.0, 0.0, 1.0, 1.0], "age": [40, 50, 45, 70],
    ...                    "event": [0.0, 1.0, 1.0, None]})
    >>> out = labelled_subgroups(df, "site", ["A"], ["event"], [60], "patients",
    ...                          lambda rows, outcome: rows[outcome], 2, 1)
    >>> [(cohort, outcome, g[1], y.tolist()) for cohort, outcome, g, rows, y in out]
    [('A', 'event', 'all', [0, 1, 1]), ('A', 'event', 'women_lt60', [0, 1])]
    """
    for cohort in cohorts:
        groups = sex_age_groups(df[df[column] == cohort], edges, whole)
        for outcome in outcomes:
            for group in groups:
                y_all = labels(group[5], outcome)
                rows = group[5][y_all.notna()]
                y = y_all.dropna().to_numpy().astype(np.int64)
                if enough_of_each(y, min_rows, min_per_class):
                    yield cohort, outcome, group, rows, y


def group_metadata(
    group: tuple[str, str, str, str, str, pd.DataFrame],
    cohort: str,
    source: str,
    ids: pd.Series,
    y: np.ndarray,
) -> dict[str, Any]:
    """The metadata every subgroup task carries, from a :func:`sex_age_groups` entry.

    ``cohort`` is the task's ``group`` (its site or arm), ``ids`` the patients' ids and ``y``
    their 0/1 labels.

    >>> g = ("women <60", "women_lt60", "female", "<60", "women under 60", None)
    >>> group_metadata(g, "Obs", "trial", pd.Series([3, 7]), np.array([0, 1]))["prevalence"]
    0.5
    """
    subgroup, _, sex, band, _, _ = group
    return {
        "subgroup": subgroup,
        "sex": sex,
        "age_band": band,
        "group": cohort,
        "source": source,
        "patient_ids": [str(int(i)) for i in ids],
        "n_rows": int(len(y)),
        "prevalence": round(int(np.sum(y)) / len(y), 4),
    }


def read_bundled_csv(name: str, **read_csv: Any) -> pd.DataFrame:
    """The bundled table ``ragim/datasets/data/<name>``, read by :func:`pandas.read_csv` with
    the keywords ``read_csv``.

    >>> len(read_bundled_csv("heart_disease_uci.csv"))
    920
    """
    ref = resources.files("ragim.datasets").joinpath("data", name)
    with ref.open("rb") as fh:
        return pd.read_csv(fh, **read_csv)


def subgroup_task(
    task_id: str,
    group: tuple[str, str, str, str, str, pd.DataFrame],
    rows: pd.DataFrame,
    y: np.ndarray,
    columns: Sequence[str],
    metadata: dict[str, Any],
    description: str,
    cohort: str,
    source: str,
) -> Task:
    """A subgroup's task: the feature ``columns`` of ``rows`` (the patients with labels ``y``)
    and ``metadata`` followed by :func:`group_metadata` (``cohort``, ``source``, the ``id``
    column of ``rows``).

    >>> g = ("women <60", "women_lt60", "female", "<60", "women under 60", None)
    >>> rows = pd.DataFrame({"id": [3, 7], "age": [41.0, 55.0]})
    >>> t = subgroup_task("obs-women_lt60", g, rows, np.array([0, 1]), ["age"], {"arm": "Obs"},
    ...                   "Women under 60.", "Obs", "trial")
    >>> t.metadata["arm"], t.metadata["patient_ids"], t.n_rows
    ('Obs', ['3', '7'], 2)
    """
    meta = {**metadata, **group_metadata(group, cohort, source, rows["id"], y)}
    return Task(task_id, description, rows[list(columns)].reset_index(drop=True), y, meta)


def subgroup_tasks(
    groups: Iterable[tuple[Any, str, tuple, pd.DataFrame, np.ndarray]],
    column: str,
    cohorts: Mapping[Any, tuple[str, str, str]],
    outcomes: Mapping[str, tuple[str, str]],
    templates: Sequence[str],
    columns: Sequence[str],
    source: str,
    metadata: Mapping[str, Any] | None = None,
) -> list[Task]:
    """The tasks of a family: one :func:`subgroup_task` per labelled subgroup in ``groups``
    (what :func:`labelled_subgroups` yields for the cohorts in ``column``).

    ``cohorts`` gives each cohort's (long name, description phrase, id slug) and ``outcomes``
    each outcome's (id slug, description phrase). A task's id is
    ``<cohort slug>-<outcome slug>-<group slug>``; its metadata starts with ``column`` (the
    cohort), ``<column>_name`` (its long name), ``outcome`` and ``metadata``; its description is
    one of ``templates`` (:func:`describe`) with the fields ``pop``, ``outcome`` and ``column``
    (the cohort's phrase). ``columns`` are the feature columns, ``source`` the data set.

    >>> df = pd.DataFrame({"id": [1, 2, 3], "arm": "A", "sex": [0.0, 0.0, 1.0],
    ...                    "age": [40, 50, 45], "event": [0.0, 1.0, 1.0]})
    >>> groups = labelled_subgroups(df, "arm", ["A"], ["event"], [60], "patients",
    ...                             lambda rows, outcome: rows[outcome], 3, 1)
    >>> [t] = subgroup_tasks(groups, "arm", {"A": ("arm A", "arm A", "a")},
    ...                      {"event": ("ev", "the event")}, ["{Pop} in {arm}: {outcome}."],
    ...                      ["age"], "trial")
    >>> t.task_id, t.description, t.metadata["arm_name"]
    ('a-ev-all', 'Patients in arm A: the event.', 'arm A')
    """
    tasks = []
    for cohort, outcome, group, rows, y in groups:
        name, phrase, slug = cohorts[cohort]
        outcome_slug, outcome_phrase = outcomes[outcome]
        task_id = f"{slug}-{outcome_slug}-{group[1]}"
        meta = {column: cohort, f"{column}_name": name, "outcome": outcome, **(metadata or {})}
        fields = {"outcome": outcome_phrase, column: phrase}
        description = describe(templates, task_id, group[4], **fields)
        tasks.append(
            subgroup_task(task_id, group, rows, y, columns, meta, description, cohort, source)
        )
    return tasks


def describe(templates: Sequence[str], task_id: str, pop: str, **fields: str) -> str:
    """One of ``templates`` (chosen by a CRC-32 hash of ``task_id``) filled with ``fields``.

    ``{pop}`` is the population phrase and ``{Pop}`` the same with a capital letter.

    >>> describe(["{Pop} at {site}."], "t1", "women under 50", site="Cleveland")
    'Women under 50 at Cleveland.'
    """
    k = zlib.crc32(task_id.encode()) % len(templates)
    return templates[k].format(pop=pop, Pop=pop[0].upper() + pop[1:], **fields)


__all__ = [
    "SEXES",
    "age_bands",
    "check_age_cuts",
    "check_sizes",
    "describe",
    "enough_of_each",
    "group_metadata",
    "labelled_subgroups",
    "read_bundled_csv",
    "sex_age_groups",
    "subgroup_task",
    "subgroup_tasks",
]
