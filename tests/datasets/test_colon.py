"""ragim.datasets.colon_cancer: bundled real trial data, arm x 5-year outcome x subgroup tasks."""

from __future__ import annotations

import hashlib
import itertools
import re
import socket
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from ragim import TaskCollection, ValidationError, datasets
from ragim.datasets import colon_cancer
from ragim.datasets.colon import ARMS, load_colon_csv

CSV_SHA256 = "9c4a93263c7f4edfc0adbd4317716b0f4aa53d152125925fe819fa04f82739bc"


@pytest.fixture(scope="module")
def tasks() -> TaskCollection:
    return colon_cancer()


def test_loads_offline(monkeypatch):
    """No network: every socket connection fails, and the 30 tasks still load."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert len(colon_cancer()) == 30


def test_bundled_csv_is_the_documented_file():
    data = resources.files("ragim.datasets").joinpath("data", "colon_cancer_trial.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CSV_SHA256
    raw = pd.read_csv(resources.files("ragim.datasets").joinpath("data", "colon_cancer_trial.csv"))
    assert raw.shape == (1858, 16) and raw["id"].nunique() == 929
    assert raw.groupby("etype").size().to_dict() == {1: 929, 2: 929}
    source = resources.files("ragim.datasets").joinpath("data", "SOURCE-colon.md").read_text()
    assert "LGPL" in source and CSV_SHA256 in source and "Moertel" in source
    licence = (
        resources.files("ragim.datasets")
        .joinpath("data", "LICENSE-survival-LGPL-2.1.txt")
        .read_text()
    )
    assert "GNU LESSER GENERAL PUBLIC LICENSE" in licence and "Version 2.1" in licence


def test_thirty_tasks_with_both_classes(tasks):
    assert isinstance(tasks, TaskCollection) and tasks.name == "colon-cancer"
    assert len(tasks) == 30 and len(set(tasks.ids)) == 30
    assert {m["arm"] for m in tasks.metadata} == set(ARMS)
    assert {m["outcome"] for m in tasks.metadata} == {"recurrence", "death"}
    for t in tasks:
        assert t.n_rows >= 60 and min(t.n_positive, t.n_rows - t.n_positive) >= 20, t.task_id
        assert set(np.unique(t.y)) == {0, 1}
        assert t.metadata["n_rows"] == t.n_rows
        assert t.metadata["prevalence"] == pytest.approx(t.prevalence, abs=1e-4)
        ids = t.metadata["patient_ids"]
        # patient ids are identifiers: canonical text of the trial's integer ids
        assert len(ids) == len(set(ids)) == t.n_rows and all(isinstance(i, str) and i.isdigit() for i in ids)
    assert sorted(t.n_rows for t in tasks.filter(subgroup="all")) == [289, 298, 299, 300, 308, 309]


def test_subgroup_overlaps_its_whole_arm_task_and_no_other_arm(tasks):
    sub = "lev5fu-recurrence-women_ge60"
    overlap = tasks.overlapping(sub)
    assert "lev5fu-recurrence-all" in overlap and "lev5fu-death-all" in overlap
    assert "lev5fu-death-women_ge60" in overlap  # the same women, the other outcome
    assert not any(o.startswith(("obs-", "lev-")) for o in overlap)
    assert not {"lev5fu-recurrence-women_lt60", "lev5fu-recurrence-men_ge60"} & set(overlap)
    by_key: dict = {}
    for m, tid in zip(tasks.metadata, tasks.ids, strict=True):
        if m["subgroup"] != "all":
            by_key.setdefault((m["arm"], m["outcome"]), []).append((tid, set(m["patient_ids"])))
    for items in by_key.values():
        assert len(items) == 4
        for (a, pa), (b, pb) in itertools.combinations(items, 2):
            assert not pa & pb, f"{a} and {b} share patients"


def test_outcomes_match_the_source_records(tasks):
    raw = pd.read_csv(resources.files("ragim.datasets").joinpath("data", "colon_cancer_trial.csv"))
    rec = raw[raw["etype"] == 1].set_index("id")
    t = tasks["obs-recurrence-men_ge60"]
    r = rec.loc[[int(i) for i in t.metadata["patient_ids"]]]
    horizon = 5 * 365.25
    expected = ((r["status"] == 1) & (r["time"] <= horizon)).astype(int).to_numpy()
    assert np.array_equal(t.y, expected)
    assert (r["rx"] == "Obs").all() and (r["sex"] == 1).all() and (r["age"] >= 60).all()
    assert not ((r["status"] == 0) & (r["time"] < horizon)).any(), (
        "censored before 5 years: left out"
    )
    dropped = rec[(rec["rx"] == "Obs") & (rec["status"] == 0) & (rec["time"] < horizon)]
    assert len(dropped) > 0 and not set(map(str, dropped.index)) & set(
        tasks["obs-recurrence-all"].metadata["patient_ids"]
    )


def test_table_and_schema(tasks):
    df = load_colon_csv()
    assert len(df) == 929 and df["id"].is_unique
    assert df["arm"].value_counts().to_dict() == {"Obs": 315, "Lev": 310, "Lev+5FU": 304}
    assert df["nodes"].isna().sum() == 18 and df["differ"].isna().sum() == 23
    schema = tasks.schema
    assert not schema.is_fitted
    types = {f.name: f.type for f in schema.features}
    assert types["differ"] == types["extent"] == "categorical" and types["nodes"] == "continuous"
    assert all(f.description for f in schema.features)
    fitted = schema.copy().fit(
        pd.concat([t.X for t in tasks.filter(subgroup="all")], ignore_index=True)
    )
    Z = fitted.transform(tasks["lev-death-all"].X)
    assert np.isfinite(Z).all() and "nodes__missing" in fitted.design_names


def test_ids_descriptions_and_metadata(tasks):
    descs = tasks.descriptions
    assert len(set(descs)) == len(descs) and descs == colon_cancer().descriptions
    words = {"Obs": "observation", "Lev": "levamisole", "Lev+5FU": "fluorouracil"}
    for t in tasks:
        assert re.fullmatch(
            r"(obs|lev|lev5fu)-(recurrence|death)-(all|(women|men)_(lt60|ge60))", t.task_id
        )
        m = t.metadata
        assert m["group"] == m["arm"] and m["horizon_years"] == 5.0
        assert words[m["arm"]] in t.description and "5 years" in t.description
        assert ("recurrence" in t.description) == (m["outcome"] == "recurrence")
        if m["sex"] != "all":
            assert ("women" if m["sex"] == "female" else "men") in t.description.lower().replace(
                ",", " "
            ).split()


def test_leave_arm_out_is_a_valid_protocol(tasks):
    """Each arm held out in turn leaves the other two arms' 20 tasks in the index."""
    from ragim import evaluate as ev

    df = ev.zero_shot(
        tasks,
        protocol="leave-group-out",
        group="arm",
        methods=["pooled"],
        embedder="hashing",
        progress=False,
    )
    assert len(df) == 30 and set(df["status"]) == {"ok"} and set(df["n_index"]) == {20}
    assert df["auroc"].mean() > 0.6  # pooled trial covariates carry real signal


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_rows": 0},
        {"min_per_class": -1},
        {"age_bands": (70, 50)},
        {"horizon_years": 0},
        {"horizon_years": 12},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValidationError):
        colon_cancer(**kwargs)


def test_options():
    three_year = colon_cancer(horizon_years=3, include_whole_arm=False)
    assert len(three_year) == 24 and all(m["horizon_years"] == 3.0 for m in three_year.metadata)
    assert "3 years" in three_year.descriptions[0]
    assert datasets.colon_cancer is colon_cancer
