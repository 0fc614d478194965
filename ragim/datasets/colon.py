"""Adjuvant colon cancer trial as a family of real clinical tasks (bundled, offline).

929 patients with resected stage B/C colon cancer randomised to observation,
levamisole, or levamisole plus fluorouracil (5-FU) in the North Central Cancer
Treatment Group / intergroup trial reported by Moertel et al. (NEJM 1990); the table
is ``colon`` of R's ``survival`` package (LGPL >= 2). Every task is one treatment arm
x one 5-year outcome (cancer recurrence, death) x one disjoint patient subgroup
(sex x age band), plus whole-arm tasks. See ``data/SOURCE-colon.md``.

Examples
--------
>>> from ragim.datasets import colon_cancer
>>> tasks = colon_cancer()
>>> len(tasks)
30
>>> t = tasks["obs-recurrence-women_lt60"]
>>> t.metadata["arm"], t.metadata["outcome"], t.metadata["subgroup"], t.n_rows
('Obs', 'recurrence', 'women <60', 70)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd

from ragim.checks import check_number
from ragim.datasets.subgroups import (
    check_age_cuts,
    check_sizes,
    labelled_subgroups,
    read_bundled_csv,
    subgroup_tasks,
)
from ragim.errors import ValidationError
from ragim.schema import Feature, FeatureSchema
from ragim.tasks import TaskCollection

CSV_NAME = "colon_cancer_trial.csv"
SOURCE = "Colon cancer adjuvant trial (R survival::colon)"
DAYS_PER_YEAR = 365.25

#: arm code in the data -> (long name, phrase used in descriptions, id slug)
ARMS: dict[str, tuple[str, str, str]] = {
    "Obs": ("observation", "the observation arm (no adjuvant chemotherapy)", "obs"),
    "Lev": ("levamisole", "the adjuvant levamisole arm", "lev"),
    "Lev+5FU": (
        "levamisole + fluorouracil",
        "the adjuvant levamisole plus fluorouracil (5-FU) arm",
        "lev5fu",
    ),
}

#: outcome key -> (event type in the data, phrase used in descriptions; ``{years}`` is the horizon)
OUTCOMES: dict[str, tuple[int, str]] = {
    "recurrence": (1, "recurrence of colon cancer within {years} years of trial registration"),
    "death": (2, "death from any cause within {years} years of trial registration"),
}

DIFFERENTIATION = {1: "well", 2: "moderate", 3: "poor"}
EXTENT = {1: "submucosa", 2: "muscle", 3: "serosa", 4: "contiguous structures"}

FEATURES: list[Feature] = [
    Feature("age", "continuous", "years", "age at registration", allow_missing=False),
    Feature("sex", "binary", "", "sex (1 = male, 0 = female)", allow_missing=False),
    Feature(
        "obstruct",
        "binary",
        "",
        "obstruction of the colon by the tumour (1 = yes)",
        allow_missing=False,
    ),
    Feature("perfor", "binary", "", "perforation of the colon (1 = yes)", allow_missing=False),
    Feature(
        "adhere",
        "binary",
        "",
        "adherence of the tumour to nearby organs (1 = yes)",
        allow_missing=False,
    ),
    Feature("nodes", "continuous", "nodes", "number of lymph nodes with detectable cancer"),
    Feature(
        "node4", "binary", "", "more than 4 positive lymph nodes (1 = yes)", allow_missing=False
    ),
    Feature(
        "differ",
        "categorical",
        "",
        "differentiation of the tumour",
        categories=tuple(DIFFERENTIATION.values()),
    ),
    Feature(
        "extent",
        "categorical",
        "",
        "extent of local spread",
        categories=tuple(EXTENT.values()),
        allow_missing=False,
    ),
    Feature(
        "surg",
        "binary",
        "",
        "long time from surgery to registration (1 = long, 0 = short)",
        allow_missing=False,
    ),
]


_TEMPLATES = (
    "Predict {outcome} in {pop} with resected stage B/C colon cancer randomised to {arm}.",
    "Among {pop} in {arm} after curative resection of stage B/C colon cancer, estimate the "
    "probability of {outcome}.",
    "{Pop} in an adjuvant colon cancer trial, {arm}: predict {outcome}.",
    "Risk of {outcome} for {pop} in {arm} after surgery for stage B/C colon cancer, from tumour "
    "and surgical findings.",
    "Estimate the chance of {outcome} for {pop} with resected colon cancer in {arm}.",
)


def colon_schema() -> FeatureSchema:
    """The (unfitted) schema shared by every colon-cancer task.

    >>> colon_schema().names[:4]
    ['age', 'sex', 'obstruct', 'perfor']
    """
    return FeatureSchema(features=list(FEATURES))


def load_colon_csv() -> pd.DataFrame:
    """The bundled table, one row per patient with both outcomes side by side.

    Columns: ``id``, ``arm`` (Obs, Lev, Lev+5FU), the features of :func:`colon_schema`
    (``differ`` and ``extent`` as text levels, missing ``nodes`` / ``differ`` as NaN /
    None), and ``recurrence_event``, ``recurrence_days``, ``death_event``,
    ``death_days`` (1 = the event was observed; days from registration to the event or
    to censoring).

    >>> df = load_colon_csv()
    >>> len(df), sorted(df["arm"].unique())
    (929, ['Lev', 'Lev+5FU', 'Obs'])
    """
    raw = read_bundled_csv(CSV_NAME, na_values=["NA"])
    if (
        sorted(raw["etype"].unique()) != [1, 2] or raw.groupby("id").size().ne(2).any()
    ):  # pragma: no cover
        raise ValidationError(
            f"bundled {CSV_NAME} must hold one recurrence and one death record per patient"
        )
    base = raw[raw["etype"] == 1].set_index("id").sort_index()
    death = raw[raw["etype"] == 2].set_index("id").sort_index()
    df = pd.DataFrame({"id": base.index.astype(int), "arm": base["rx"].to_numpy()})
    for col in ("age", "sex", "obstruct", "perfor", "adhere", "nodes", "node4", "surg"):
        df[col] = base[col].to_numpy(dtype=float)
    df["differ"] = [DIFFERENTIATION.get(v) if pd.notna(v) else None for v in base["differ"]]
    df["extent"] = [EXTENT[int(v)] for v in base["extent"]]
    df["recurrence_event"] = base["status"].to_numpy(dtype=int)
    df["recurrence_days"] = base["time"].to_numpy(dtype=float)
    df["death_event"] = death["status"].to_numpy(dtype=int)
    df["death_days"] = death["time"].to_numpy(dtype=float)
    unknown = sorted(set(df["arm"]) - set(ARMS))
    if unknown:  # pragma: no cover - guards against a modified CSV
        raise ValidationError(f"bundled {CSV_NAME} has unknown arms {unknown}")
    return df


def _labels(df: pd.DataFrame, outcome: str, horizon_days: float) -> pd.Series:
    """1 = event by the horizon, 0 = followed past it event-free, NaN = censored before it."""
    event, days = df[f"{outcome}_event"].to_numpy(), df[f"{outcome}_days"].to_numpy()
    y = np.where(
        (event == 1) & (days <= horizon_days), 1.0, np.where(days >= horizon_days, 0.0, np.nan)
    )
    return pd.Series(y, index=df.index)


def colon_cancer(
    *,
    min_rows: int = 20,
    min_per_class: int = 5,
    include_whole_arm: bool = True,
    age_bands: Sequence[float] = (60,),
    horizon_years: float = 5.0,
) -> TaskCollection:
    """Real colon-cancer trial tasks: arm x 5-year outcome x disjoint (sex x age band) subgroup.

    An outcome is binary at ``horizon_years``: 1 if the event (recurrence, or death from
    any cause) happened by then, 0 if the patient was followed past it without the event.
    Patients censored earlier (lost to follow-up, or, for recurrence, dead without
    recurrence) are left out of that outcome's tasks: 41 for recurrence and 14 for death
    at 5 years.

    Parameters
    ----------
    min_rows, min_per_class : the fewest patients a task may have, in all and of each class.
    include_whole_arm : also add one task per arm and outcome with all its patients
        (these overlap the subgroup tasks; see :meth:`TaskCollection.overlapping`).
    age_bands : increasing cut points in years; the default gives <60 and >=60.
    horizon_years : the outcome horizon in years (365.25 days each).

    Returns
    -------
    TaskCollection named "colon-cancer" over one unfitted :class:`FeatureSchema`; 30 tasks
    with the defaults. Metadata per task: arm, arm_name, outcome ("recurrence" /
    "death"), horizon_years, subgroup, sex, age_band, group (= arm), source,
    patient_ids, n_rows, prevalence.

    Raises
    ------
    ValidationError
        A bad parameter, named with the value given.

    Examples
    --------
    >>> tc = colon_cancer()
    >>> sorted({m["arm"] for m in tc.metadata})
    ['Lev', 'Lev+5FU', 'Obs']
    >>> tc.overlapping("lev-death-men_ge60")
    ['lev-death-all', 'lev-recurrence-all', 'lev-recurrence-men_ge60']
    """
    min_rows, min_per_class = check_sizes(min_rows, min_per_class)
    edges = check_age_cuts(age_bands)
    horizon_years = check_number(
        horizon_years, "horizon_years", gt=0, le=9, note="follow-up ends near 9 years"
    )

    schema = colon_schema()
    whole = "patients" if include_whole_arm else None
    labels = partial(_labels, horizon_days=horizon_years * DAYS_PER_YEAR)
    years = f"{horizon_years:g}"
    outcomes = {key: (key, phrase.format(years=years)) for key, (_, phrase) in OUTCOMES.items()}
    groups = labelled_subgroups(
        load_colon_csv(), "arm", ARMS, outcomes, edges, whole, labels, min_rows, min_per_class
    )
    meta = {"horizon_years": float(horizon_years)}
    tasks = subgroup_tasks(groups, "arm", ARMS, outcomes, _TEMPLATES, schema.names, SOURCE, meta)
    return TaskCollection(tasks, schema=schema, name="colon-cancer")
