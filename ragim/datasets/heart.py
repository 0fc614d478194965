"""UCI Heart Disease as a family of real clinical tasks (bundled, offline).

920 patients referred for coronary angiography at four hospitals (Cleveland,
Budapest, Zurich/Basel, Long Beach). Every task is one site x one outcome x one
disjoint patient subgroup (sex x age band), plus whole-site tasks. Missing values
are real and stay missing (NaN / None); see ``data/SOURCE.md``.

Examples
--------
>>> from ragim.datasets import heart_disease
>>> tasks = heart_disease()
>>> len(tasks) >= 24
True
>>> t = tasks["hungary-any_cad-women_lt50"]
>>> t.metadata["site"], t.metadata["outcome"], t.metadata["subgroup"]
('Hungary', 'any-cad', 'women <50')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

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

CSV_NAME = "heart_disease_uci.csv"
SOURCE = "UCI Heart Disease"

#: short site name -> (long name, "hospital, city" phrase used in descriptions, id slug)
SITES: dict[str, tuple[str, str, str]] = {
    "Cleveland": (
        "Cleveland Clinic Foundation, Cleveland, Ohio",
        "the Cleveland Clinic Foundation in Cleveland, Ohio",
        "cleveland",
    ),
    "Hungary": (
        "Hungarian Institute of Cardiology, Budapest",
        "the Hungarian Institute of Cardiology, Budapest",
        "hungary",
    ),
    "Switzerland": (
        "University Hospitals of Zurich and Basel, Switzerland",
        "the University Hospitals of Zurich and Basel, Switzerland",
        "switzerland",
    ),
    "VA Long Beach": (
        "V.A. Medical Center, Long Beach, California",
        "the V.A. Medical Center in Long Beach, California",
        "va_long_beach",
    ),
}

#: outcome key -> (id slug, minimum ``num``, phrase used in descriptions)
OUTCOMES: dict[str, tuple[str, int, str]] = {
    "any-cad": (
        "any_cad",
        1,
        "angiographic coronary artery disease (>50% diameter narrowing in at least one "
        "major coronary vessel)",
    ),
    "multivessel": (
        "multivessel",
        2,
        "multi-vessel coronary artery disease (significant narrowing in two or more major "
        "coronary vessels)",
    ),
}

#: the levels of the categorical features, as coded in the data; the first is the reference
_CATEGORIES: dict[str, tuple[str, ...]] = {
    "cp": ("typical angina", "atypical angina", "non-anginal", "asymptomatic"),
    "restecg": ("normal", "st-t abnormality", "lv hypertrophy"),
    "slope": ("upsloping", "flat", "downsloping"),
    "thal": ("normal", "fixed defect", "reversable defect"),
}
#: feature -> (its name, value -> name) in tables, plots and reports; values without a name
#: show as coded
_SHOWN: dict[str, tuple[str, dict]] = {
    "age": ("Age", {}),
    "sex": ("Sex", {0: "female", 1: "male"}),
    "cp": ("Chest-pain type", {"non-anginal": "non-anginal pain"}),
    "trestbps": ("Resting systolic blood pressure", {}),
    "chol": ("Serum cholesterol", {}),
    "fbs": ("Fasting blood sugar", {0: "<= 120 mg/dL", 1: "> 120 mg/dL"}),
    "restecg": (
        "Resting ECG",
        {
            "st-t abnormality": "ST-T wave abnormality",
            "lv hypertrophy": "left ventricular hypertrophy",
        },
    ),
    "thalch": ("Maximum exercise heart rate", {}),
    "exang": ("Exercise-induced angina", {0: "no", 1: "yes"}),
    "oldpeak": ("Exercise ST depression", {}),
    "slope": ("Peak-exercise ST slope", {}),
    "ca": ("Major vessels coloured by fluoroscopy", {}),
    "thal": ("Thallium scintigraphy", {"reversable defect": "reversible defect"}),
}
#: features recorded for every patient
_COMPLETE = ("age", "sex")


def _feature(name: str, kind: str, meaning: str, unit: str = "") -> Feature:
    """The feature ``name`` of type ``kind``, with its meaning and unit as the UCI
    documentation gives them, its categories (:data:`_CATEGORIES`), label and level names
    (:data:`_SHOWN`); only the features of :data:`_COMPLETE` are never missing."""
    label, levels = _SHOWN[name]
    return Feature(
        name,
        kind,
        unit,
        meaning,
        categories=_CATEGORIES.get(name, ()),
        allow_missing=name not in _COMPLETE,
        label=label,
        levels=levels,
    )


#: Feature meanings, units and value labels follow the UCI documentation of the data set
#: (``data/SOURCE.md``); the first level of each categorical feature is its reference.
FEATURES: list[Feature] = [
    _feature("age", "continuous", "age at examination", "years"),
    _feature("sex", "binary", "sex (1 = male, 0 = female)"),
    _feature("cp", "categorical", "chest-pain type"),
    _feature("trestbps", "continuous", "resting systolic blood pressure on admission", "mm Hg"),
    _feature("chol", "continuous", "serum cholesterol", "mg/dL"),
    _feature("fbs", "binary", "fasting blood sugar > 120 mg/dL (1 = yes)"),
    _feature("restecg", "categorical", "resting electrocardiogram"),
    _feature("thalch", "continuous", "maximum heart rate achieved on exercise testing", "bpm"),
    _feature("exang", "binary", "exercise-induced angina (1 = yes)"),
    _feature("oldpeak", "continuous", "ST depression induced by exercise relative to rest", "mm"),
    _feature("slope", "categorical", "slope of the peak-exercise ST segment"),
    _feature(
        "ca", "continuous", "number of major vessels (0-3) coloured by fluoroscopy", "vessels"
    ),
    _feature("thal", "categorical", "thallium stress scintigraphy result"),
]

#: outcome key -> a short human name (plots and reports say "predicted risk of ...")
OUTCOME_LABELS: dict[str, str] = {
    "any-cad": "coronary artery disease (>50% narrowing)",
    "multivessel": "multi-vessel coronary artery disease",
}

_TEMPLATES = (
    "Predict {outcome} in {pop} referred for coronary angiography to {site}.",
    "Among {pop} undergoing coronary angiography at {site}, estimate the probability of {outcome}.",
    "{Pop} evaluated for suspected heart disease at {site}: predict {outcome}.",
    "Risk of {outcome} for {pop} seen at {site}, from routine clinical and exercise-test findings.",
    "Estimate whether {pop} referred to {site} have {outcome}.",
)


def heart_schema() -> FeatureSchema:
    """The (unfitted) schema shared by every heart-disease task; its features carry the labels
    and level names of the UCI documentation.

    >>> heart_schema().names[:4]
    ['age', 'sex', 'cp', 'trestbps']
    """
    return FeatureSchema(features=list(FEATURES))


def load_heart_csv() -> pd.DataFrame:
    """The bundled CSV, cleaned: binary columns as 0/1 floats, impossible zeros as NaN.

    ``chol == 0`` (all Swiss patients, some at VA Long Beach) and ``trestbps == 0`` mean
    "not measured" and become NaN; missing categories become ``None``.

    >>> df = load_heart_csv()
    >>> len(df), int(df["chol"].eq(0).sum())
    (920, 0)
    """
    raw = read_bundled_csv(CSV_NAME)
    df = pd.DataFrame({"id": raw["id"].astype(int), "site": raw["dataset"], "num": raw["num"]})
    df["age"] = raw["age"].astype(float)
    df["sex"] = raw["sex"].map({"Male": 1.0, "Female": 0.0}).astype(float)
    for col in ("fbs", "exang"):
        df[col] = raw[col].map(_as_binary).astype(float)
    for col in ("trestbps", "chol", "thalch", "oldpeak", "ca"):
        df[col] = raw[col].astype(float)
    df.loc[df["chol"] == 0, "chol"] = np.nan
    df.loc[df["trestbps"] == 0, "trestbps"] = np.nan
    for col in ("cp", "restecg", "slope", "thal"):
        df[col] = raw[col].astype(object).where(raw[col].notna(), None)
    unknown = sorted(set(df["site"]) - set(SITES))
    if unknown:  # pragma: no cover - guards against a modified CSV
        raise ValidationError(f"bundled heart CSV has unknown sites {unknown}")
    return df


def _as_binary(v) -> float:
    if isinstance(v, str):
        return {"TRUE": 1.0, "FALSE": 0.0}.get(v.strip().upper(), np.nan)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    return float(bool(v))


def _labels(df: pd.DataFrame, outcome: str) -> pd.Series:
    """1 = the outcome's narrowing (``num`` at or above its threshold), else 0."""
    threshold = OUTCOMES[outcome][1]
    return pd.Series((df["num"].to_numpy() >= threshold).astype(float), index=df.index)


def heart_disease(
    *,
    min_rows: int = 20,
    min_per_class: int = 5,
    include_whole_site: bool = True,
    age_bands: Sequence[int] = (50, 60),
) -> TaskCollection:
    """Real UCI Heart Disease tasks: site x outcome x disjoint (sex x age band) subgroup.

    Parameters
    ----------
    min_rows, min_per_class : the fewest patients a task may have, in all and of each class.
    include_whole_site : also add one task per site and outcome with all its patients
        (these overlap the subgroup tasks; see :meth:`TaskCollection.overlapping`).
    age_bands : increasing cut points in years; the default gives <50, 50-59, >=60.

    Returns
    -------
    TaskCollection named "heart-disease" over one unfitted :class:`FeatureSchema`.
    Metadata per task: site, site_name, outcome ("any-cad" / "multivessel"), subgroup,
    sex, age_band, group (= site), source, patient_ids, n_rows, prevalence.

    Examples
    --------
    >>> tc = heart_disease()
    >>> sorted({m["site"] for m in tc.metadata})
    ['Cleveland', 'Hungary', 'Switzerland', 'VA Long Beach']
    >>> tc.overlapping("cleveland-any_cad-men_ge60")
    ['cleveland-any_cad-all', 'cleveland-multivessel-all', 'cleveland-multivessel-men_ge60']
    """
    min_rows, min_per_class = check_sizes(min_rows, min_per_class)
    edges = check_age_cuts(age_bands)

    schema = heart_schema()
    whole = "adult patients" if include_whole_site else None
    outcomes = {key: (slug, phrase) for key, (slug, _, phrase) in OUTCOMES.items()}
    groups = labelled_subgroups(
        load_heart_csv(), "site", SITES, outcomes, edges, whole, _labels, min_rows, min_per_class
    )
    tasks = subgroup_tasks(groups, "site", SITES, outcomes, _TEMPLATES, schema.names, SOURCE)
    return TaskCollection(tasks, schema=schema, name="heart-disease")
