"""ragim.datasets.heart_disease: bundled real UCI data, site x outcome x subgroup tasks."""

from __future__ import annotations

import hashlib
import itertools
import re
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from ragim import TaskCollection, ValidationError
from ragim.datasets import heart_disease
from ragim.datasets.heart import SITES, load_heart_csv

CSV_SHA256 = "574f2fa2b43012fa25fca4fcdb36bd7c6bccdd0af4242f6c0e4c8633c5a072ae"


@pytest.fixture(scope="module")
def tasks() -> TaskCollection:
    return heart_disease()


def test_bundled_csv_is_the_documented_file():
    data = resources.files("ragim.datasets").joinpath("data", "heart_disease_uci.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CSV_SHA256
    raw = pd.read_csv(resources.files("ragim.datasets").joinpath("data", "heart_disease_uci.csv"))
    assert len(raw) == 920 and raw["id"].is_unique
    assert raw["dataset"].value_counts().to_dict() == {
        "Cleveland": 304, "Hungary": 293, "VA Long Beach": 200, "Switzerland": 123}
    source = resources.files("ragim.datasets").joinpath("data", "SOURCE.md").read_text()
    assert "CC BY 4.0" in source and CSV_SHA256 in source


def test_at_least_24_tasks_from_all_four_sites(tasks):
    assert isinstance(tasks, TaskCollection) and tasks.name == "heart-disease"
    assert len(tasks) >= 24
    assert {m["site"] for m in tasks.metadata} == set(SITES)
    assert {m["outcome"] for m in tasks.metadata} == {"any-cad", "multivessel"}
    assert "TaskCollection" in repr(tasks)


def test_filter_is_respected(tasks):
    for t in tasks:
        assert t.n_rows >= 20
        assert min(t.n_positive, t.n_rows - t.n_positive) >= 5
        assert t.metadata["n_rows"] == t.n_rows
        assert t.metadata["prevalence"] == pytest.approx(t.prevalence, abs=1e-4)
    strict = heart_disease(min_rows=60, min_per_class=15)
    assert 0 < len(strict) < len(tasks)
    for t in strict:
        assert t.n_rows >= 60 and min(t.n_positive, t.n_rows - t.n_positive) >= 15
    assert len(heart_disease(include_whole_site=False)) == len(tasks) - sum(
        m["subgroup"] == "all" for m in tasks.metadata)


def test_real_missingness_survives(tasks):
    df = load_heart_csv()
    assert len(df) == 920
    assert not (df["chol"] == 0).any() and not (df["trestbps"] == 0).any()
    swiss = tasks.filter(site="Switzerland")
    assert len(swiss) > 0
    for t in swiss:
        assert t.X["chol"].isna().all(), "Swiss cholesterol is recorded as 0 = missing"
    hungary = tasks["hungary-any_cad-all"].X
    assert hungary["ca"].isna().mean() > 0.9
    assert hungary["thal"].isna().mean() > 0.8 and hungary["thal"].dropna().isin(
        ["normal", "fixed defect", "reversable defect"]).all()
    assert (df["oldpeak"] < 0).any(), "negative ST depression is real and kept"
    assert tasks["va_long_beach-any_cad-all"].X["trestbps"].isna().any()


def test_schema_is_shared_unfitted_and_handles_missing_values(tasks):
    schema = tasks.schema
    assert not schema.is_fitted
    assert schema.names == ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalch",
                            "exang", "oldpeak", "slope", "ca", "thal"]
    types = {f.name: f.type for f in schema.features}
    assert types["sex"] == types["fbs"] == types["exang"] == "binary"
    assert types["cp"] == types["thal"] == "categorical" and types["ca"] == "continuous"
    assert schema["chol"].unit == "mg/dL" and schema["trestbps"].unit == "mm Hg"
    assert all(f.description for f in schema.features)
    train = pd.concat([t.X for t in tasks.filter(subgroup="all")], ignore_index=True)
    fitted = schema.copy().fit(train)
    Z = fitted.transform(tasks["switzerland-any_cad-all"].X)
    assert np.isfinite(Z).all()
    assert "chol__missing" in fitted.design_names


def test_subgroups_disjoint_within_site_and_whole_site_overlaps(tasks):
    by_key: dict = {}
    for m, tid in zip(tasks.metadata, tasks.ids, strict=True):
        by_key.setdefault((m["site"], m["outcome"]), []).append((tid, m))
    for items in by_key.values():
        subs = [(tid, set(m["patient_ids"])) for tid, m in items if m["subgroup"] != "all"]
        for (a, pa), (b, pb) in itertools.combinations(subs, 2):
            assert not pa & pb, f"{a} and {b} share patients"
        whole = [tid for tid, m in items if m["subgroup"] == "all"]
        for tid, _ in subs:
            overlap = tasks.overlapping(tid)
            assert set(whole) <= set(overlap)
            same_outcome_subs = {t for t, _ in subs if t != tid}
            assert not same_outcome_subs & set(overlap)
    cle = tasks["cleveland-any_cad-all"]
    assert len(cle.patient_ids) == 304
    assert "cleveland-any_cad-men_ge60" in tasks.overlapping(cle)
    assert not any(i.startswith("hungary") for i in tasks.overlapping(cle))


def test_descriptions_are_unique_deterministic_and_name_the_site(tasks):
    descs = tasks.descriptions
    assert all(d.strip() for d in descs)
    assert len(set(descs)) == len(descs)
    assert descs == heart_disease().descriptions
    assert len({d.split(" ")[0] for d in descs}) >= 3, "phrasing should vary"
    city = {"Cleveland": "Cleveland", "Hungary": "Budapest", "Switzerland": "Zurich",
            "VA Long Beach": "Long Beach"}
    for t in tasks:
        m = t.metadata
        assert city[m["site"]] in t.description
        assert ("multi-vessel" in t.description) == (m["outcome"] == "multivessel")
        if m["sex"] != "all":
            words = t.description.lower().replace(",", " ").split()
            assert ("women" if m["sex"] == "female" else "men") in words


def test_ids_and_metadata(tasks):
    for t in tasks:
        assert re.fullmatch(r"(cleveland|hungary|switzerland|va_long_beach)-(any_cad|multivessel)-"
                            r"(all|(women|men)_(lt50|50to59|ge60))", t.task_id)
        m = t.metadata
        for key in ("site", "site_name", "outcome", "subgroup", "sex", "age_band", "source",
                    "patient_ids", "n_rows", "prevalence", "group"):
            assert key in m
        assert m["source"] == "UCI Heart Disease" and m["site_name"] == SITES[m["site"]][0]
        # patient ids are identifiers, kept as canonical text (the source's integer ids)
        assert all(isinstance(p, str) and p.isdigit() for p in m["patient_ids"]) and len(m["patient_ids"]) == t.n_rows
    assert "hungary-any_cad-women_lt50" in tasks
    assert "hungary-multivessel-all" not in tasks  # no Hungarian patient has num >= 2


def test_outcomes_match_the_source_labels(tasks):
    df = load_heart_csv().set_index("id")
    t = tasks["va_long_beach-multivessel-men_ge60"]
    ids = [int(p) for p in t.metadata["patient_ids"]]
    num = df.loc[ids, "num"].to_numpy()
    assert np.array_equal(t.y, (num >= 2).astype(int))
    assert (df.loc[ids, "age"] >= 60).all()


@pytest.mark.parametrize("kwargs", [{"min_rows": 0}, {"min_per_class": -1}, {"min_rows": 2.5},
                                    {"age_bands": (60, 50)}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValidationError):
        heart_disease(**kwargs)


def test_custom_age_bands():
    tc = heart_disease(age_bands=(55,), include_whole_site=False)
    assert {m["age_band"] for m in tc.metadata} <= {"<55", ">=55"}
    assert len(tc) > 0
