"""ragim.datasets.synthetic_family: lazy hierarchical tasks with known true coefficients."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression

from ragim import ModelParams, ValidationError
from ragim.datasets import synthetic_family
from ragim.params import param_names


def _same(a, b) -> bool:
    return (a.task_id == b.task_id and a.description == b.description
            and a.X.equals(b.X) and np.array_equal(a.y, b.y)
            and a.true_params == b.true_params and a.metadata == b.metadata)


def test_determinism_same_seed_identical_other_seed_different():
    a, b = synthetic_family(n_tasks=30, seed=7), synthetic_family(n_tasks=30, seed=7)
    for i in (0, 5, 29):
        assert _same(a[i], a[i])  # materialising twice gives the same task
        assert _same(a[i], b[i])
    assert a.descriptions == b.descriptions and a.metadata == b.metadata
    c = synthetic_family(n_tasks=30, seed=8)
    assert not np.array_equal(a[0].true_params.vector, c[0].true_params.vector)
    assert not any(a[i].X.equals(c[i].X) for i in range(5))


def test_task_i_does_not_depend_on_n_tasks():
    small, big = synthetic_family(n_tasks=10, seed=3), synthetic_family(n_tasks=5000, seed=3)
    for i in range(10):
        assert _same(small[i], big[i])


def test_large_families_build_lazily_and_fast():
    t0 = time.perf_counter()
    tc = synthetic_family(n_tasks=100_000)
    elapsed = time.perf_counter() - t0
    assert len(tc) == 100_000
    assert elapsed < 10, f"building 100k lazy tasks took {elapsed:.1f}s"
    last = tc[99_999]
    assert last.task_id == "syn-0099999" and last.n_rows == last.metadata["n_rows"]
    assert tc.info(12_345)["metadata"]["source"] == "synthetic"


def test_schema_is_identity_fitted_and_true_params_live_in_design_space():
    tc = synthetic_family(n_tasks=5, n_features=12)
    s = tc.schema
    assert s.is_fitted and s.names[:2] == ["x01", "x02"] and s.design_names == s.names
    t = tc[0]
    assert np.allclose(s.transform(t.X), t.X.to_numpy())
    tp = t.true_params
    assert isinstance(tp, ModelParams) and tp.kind == "logistic"
    assert tp.metadata["source"] == "true" and tp.names == param_names("logistic", s)
    assert tp.schema == s
    assert len(s.bin_labels("x01")) == s.n_bins


def test_logistic_fit_on_a_big_task_recovers_true_coefficients():
    tc = synthetic_family(n_tasks=3, n_rows=4000, seed=1)
    for t in tc:
        fit = LogisticRegression(C=1e4, max_iter=2000).fit(t.X.to_numpy(), t.y)
        r = np.corrcoef(fit.coef_[0], t.true_params.terms)[0, 1]
        assert r > 0.8, f"{t.task_id}: correlation {r:.2f}"
        assert abs(fit.intercept_[0] - t.true_params.intercept) < 0.5


def test_siblings_have_more_similar_coefficients_than_strangers():
    tc = synthetic_family(n_tasks=4000, n_rows=2, seed=2)
    meta = tc.metadata
    by_subtype = defaultdict(list)
    for i, m in enumerate(meta):
        by_subtype[(m["system"], m["disease"], m["subtype"])].append(i)
    sib_pairs = [v[:2] for v in by_subtype.values() if len(v) >= 2][:150]
    assert len(sib_pairs) >= 50
    rng = np.random.default_rng(0)
    strangers = []
    while len(strangers) < 150:
        i, j = rng.integers(0, len(tc), 2)
        if meta[i]["system"] != meta[j]["system"]:
            strangers.append((i, j))

    def dist(pairs):
        return np.mean([np.linalg.norm(tc[int(i)].true_params.terms - tc[int(j)].true_params.terms)
                        for i, j in pairs])

    assert dist(sib_pairs) < 0.5 * dist(strangers)
    # ... and the wording follows the hierarchy too
    i, j = sib_pairs[0]
    assert meta[i]["disease"] in tc.descriptions[i] and meta[j]["disease"] in tc.descriptions[j]


def test_metadata_and_descriptions():
    tc = synthetic_family(n_tasks=300)
    for info in (tc.info(i) for i in range(300)):
        m = info["metadata"]
        assert {"system", "disease", "subtype", "population", "group", "n_rows", "source"} <= set(m)
        assert m["group"] == m["disease"] and m["source"] == "synthetic"
        for level in ("disease", "population"):
            assert m[level] in info["description"].lower()
    assert len(set(tc.descriptions)) > 250
    assert len(tc.groups("group")) > 20


def test_task_sizes_are_heavy_tailed_and_configurable():
    sizes = np.array([m["n_rows"] for m in synthetic_family(n_tasks=3000).metadata])
    assert sizes.min() >= 20 and sizes.max() == 400
    assert np.median(sizes) < 60 and np.mean(sizes) > 1.5 * np.median(sizes)
    assert {m["n_rows"] for m in synthetic_family(n_tasks=50, n_rows=17).metadata} == {17}
    custom = synthetic_family(n_tasks=50, rows=lambda u: 5 + np.floor(u * 10))
    assert all(5 <= t.n_rows < 15 for t in custom.head(10))
    scipy_sizes = [m["n_rows"] for m in synthetic_family(n_tasks=200, rows=stats.poisson(30)).metadata]
    assert 20 < np.mean(scipy_sizes) < 40


def test_fraction_of_single_class_tasks_is_documented():
    """Labels are redrawn a few times while a task is single-class; tiny tasks can stay so."""
    default = synthetic_family(n_tasks=500)
    assert np.mean([t.y.min() == t.y.max() for t in default]) == 0.0
    tiny = synthetic_family(n_tasks=500, n_rows=2)
    frac = np.mean([t.y.min() == t.y.max() for t in tiny])
    assert 0.0 < frac < 0.15  # about 4% at 2 rows per task (seed 0)


def test_missing_values_get_indicators_with_zero_true_effect():
    tc = synthetic_family(n_tasks=3, n_rows=3000, missing_rate=0.2)
    s = tc.schema
    assert s.missing_ == s.names and "x01__missing" in s.design_names
    t = tc[0]
    assert 0.17 < t.X.isna().to_numpy().mean() < 0.23
    tp = t.true_params
    assert all(tp[f"{n}__missing"] == 0.0 for n in s.names)
    D = s.transform(t.X)
    assert np.allclose(D[:, ::2], np.nan_to_num(t.X.to_numpy()))


def test_fewer_levels_and_custom_branching():
    tc = synthetic_family(n_tasks=40, levels=("system", "disease"), branching=(3, 2))
    meta = tc.metadata
    assert len({m["system"] for m in meta}) <= 3 and "population" not in meta[0]
    assert len({(m["system"], m["disease"]) for m in meta}) <= 6
    assert tc[0].true_params is not None and tc.descriptions[0]


@pytest.mark.parametrize("kwargs", [
    {"n_tasks": 0}, {"n_features": 0}, {"seed": -1}, {"noise": -0.1}, {"n_rows": 0},
    {"levels": ("disease", "system")}, {"levels": ("organ",)}, {"branching": (99, 8, 4, 12)},
    {"branching": (2, 2)}, {"level_scale": (1.0,)}, {"rows": (10, 5)}, {"rows": "many"},
    {"missing_rate": 1.5}, {"n_tasks": 2.5},
])
def test_bad_arguments_raise_validation_error(kwargs):
    with pytest.raises(ValidationError):
        synthetic_family(**kwargs)
