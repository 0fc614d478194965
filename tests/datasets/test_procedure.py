"""ragim.datasets.procedure_family: real ICD-10-PCS titles, simulated patients, true models."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ragim import ValidationError
from ragim.datasets import procedure_family
from ragim.datasets.procedure import LAB_PANEL, pcs_db_path
from ragim.params import param_names


@pytest.fixture(scope="module")
def tasks():
    return procedure_family(n_tasks=2000, seed=0)


def _same(a, b) -> bool:
    return (a.task_id == b.task_id and a.description == b.description and a.X.equals(b.X)
            and np.array_equal(a.y, b.y) and a.true_params == b.true_params)


def test_titles_are_real_icd10pcs_long_titles(tasks):
    con = sqlite3.connect(f"file:{pcs_db_path()}?mode=ro", uri=True)
    try:
        for i in (0, 1, 17, 500, 1999):
            info = tasks.info(i)
            m = info["metadata"]
            row = con.execute("SELECT long_name, billable FROM pcs_codes WHERE code = ?", (m["code"],)).fetchone()
            assert row is not None and row[1] == 1
            assert m["title"] == row[0]
            assert row[0] in info["description"] and m["code"] in info["description"]
            axes = con.execute("SELECT bs_def, bp_def, ap_def, dv_def FROM pcs_tree WHERE code = ?",
                               (m["code"],)).fetchone()
            assert (m["body_system"], m["body_part"], m["approach"], m["device"]) == axes
            assert info["task_id"] == f"pcs-{m['code']}" and m["group"] == m["body_system"]
    finally:
        con.close()


def test_codes_are_unique_and_spread_over_body_systems(tasks):
    codes = [m["code"] for m in tasks.metadata]
    assert len(set(codes)) == len(codes) == 2000
    systems = {m["body_system"] for m in tasks.metadata}
    assert len(systems) >= 25
    assert len({m["root_operation"] for m in tasks.metadata}) >= 20
    assert {m["section"] for m in tasks.metadata} == {"Medical and Surgical"}


def test_sizes_are_heavy_tailed(tasks):
    sizes = np.array([m["n_rows"] for m in tasks.metadata])
    assert sizes.min() >= 2 and sizes.max() <= 2000
    assert np.median(sizes) <= 20
    assert sizes.max() >= 500
    assert np.mean(sizes <= 50) > 0.7


def test_true_params_match_a_reference_fitted_schema(tasks):
    assert not tasks.schema.is_fitted
    assert tasks.schema.names == [lab.name for lab in LAB_PANEL[:40]]
    assert tasks.schema["creatinine"].unit == "mg/dL" and tasks.schema["hemoglobin"].unit == "g/dL"
    t = tasks[3]
    tp = t.true_params
    assert tp.kind == "logistic" and tp.metadata["source"] == "true"
    assert tp.schema.is_fitted and tp.schema.names == tasks.schema.names
    assert tp.names == param_names("logistic", tp.schema)
    assert tp.vector.shape == (1 + tp.schema.n_design,)
    assert "lactate__missing" in tp.schema.design_names and "age__missing" not in tp.schema.design_names
    assert tasks[4].true_params.schema == tp.schema  # one reference schema for the family
    # raw units, real missingness (labs not drawn), none in age and sex
    X = t.X
    assert X["sodium"].dropna().between(115, 165).all()
    big = max((tasks[i] for i in range(60)), key=lambda t: t.n_rows).X
    assert big["nt_probnp"].isna().mean() > 0.3 and not big[["age", "sex"]].isna().any().any()


def test_fit_on_a_large_task_recovers_the_true_model():
    tc = procedure_family(n_tasks=2, min_rows=3000, max_rows=3000, seed=0)
    for t in tc:
        D = t.true_params.schema.transform(t.X)
        fit = LogisticRegression(C=100, max_iter=3000).fit(D, t.y)
        assert np.corrcoef(fit.coef_[0], t.true_params.terms)[0, 1] > 0.7


def test_deterministic_and_independent_of_n_tasks(tasks):
    again = procedure_family(n_tasks=300, seed=0)
    assert again.ids == tasks.ids[:300]
    for i in (0, 7, 299):
        assert _same(tasks[i], tasks[i]) and _same(tasks[i], again[i])
    other = procedure_family(n_tasks=300, seed=1)
    assert other.ids != again.ids


def test_shared_axes_give_similar_coefficients(tasks):
    meta = tasks.metadata
    by_bs = {}
    for i, m in enumerate(meta):
        by_bs.setdefault((m["body_system"], m["root_operation"], m["approach"]), []).append(i)
    pairs = [v[:2] for v in by_bs.values() if len(v) >= 2][:40]
    rng = np.random.default_rng(0)
    strangers = []
    while len(strangers) < 40:
        i, j = (int(v) for v in rng.integers(0, len(tasks), 2))
        if meta[i]["body_system"] != meta[j]["body_system"] and meta[i]["root_operation"] != meta[j]["root_operation"]:
            strangers.append((i, j))

    def dist(ps):
        return np.mean([np.linalg.norm(tasks[i].true_params.vector - tasks[j].true_params.vector) for i, j in ps])

    assert dist(pairs) < dist(strangers)


def test_sex_follows_reproductive_body_systems(tasks):
    fem = tasks.filter(body_system="Female Reproductive System")
    assert len(fem) > 0
    for t in fem.head(5):
        assert (t.X["sex"] == 0).all()


def test_builds_5000_tasks_quickly():
    t0 = time.perf_counter()
    tc = procedure_family(n_tasks=5000, seed=4)
    assert len(tc) == 5000 and time.perf_counter() - t0 < 10


@pytest.mark.parametrize("kwargs", [
    {"n_tasks": 0}, {"n_tasks": 10**6}, {"n_features": 0}, {"n_features": 99}, {"min_rows": 0},
    {"max_rows": 1}, {"size_alpha": 0}, {"noise": -1}, {"seed": -3},
])
def test_bad_arguments_raise_validation_error(kwargs):
    with pytest.raises(ValidationError):
        procedure_family(**kwargs)
