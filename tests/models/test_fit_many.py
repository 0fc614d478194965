"""fit_many: statuses for bad tasks, batched vs per-task agreement, backends, schemas."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from ragim.errors import ValidationError
from ragim.models import FitResult, GAMModel, LogisticModel, fit_many
from ragim.schema import Feature, FeatureSchema
from ragim.tasks import Task, TaskCollection

FAST_GAM = {"outer_bags": 2, "max_rounds": 200, "learning_rate": 0.1, "early_stopping_rounds": 20}


def _task(tid: str, n: int, seed: int, *, y=None) -> Task:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "age": rng.normal(55, 10, n),
        "sex": rng.integers(0, 2, n),
        "cp": rng.choice(["typical", "atypical", "asymptomatic"], n),
    })
    if y is None:
        logit = 0.08 * (X["age"] - 55) + 0.9 * X["sex"] - 0.4 + 0.7 * (X["cp"] == "asymptomatic")
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return Task(tid, f"Predict disease in task {tid}", X, y, {"site": "A" if seed % 2 else "B"})


@pytest.fixture(scope="module")
def tasks() -> TaskCollection:
    items = [_task("big", 200, 0), _task("mid", 90, 1), _task("small-ok", 40, 2),
             _task("tiny", 6, 3), _task("one-class", 30, 4, y=np.zeros(30, int))]
    return TaskCollection(items, validate=False)


@pytest.fixture(scope="module")
def result(tasks) -> FitResult:
    return fit_many(tasks, progress=False)


def test_failed_tasks_get_a_status_not_a_model(result):
    assert result.status["big"] == result.status["mid"] == result.status["small-ok"] == "ok"
    assert result.status["tiny"].startswith("task 'tiny' has 6 rows; at least 10 are needed")
    assert "only one class (all 0)" in result.status["one-class"]
    assert sorted(result.params) == ["big", "mid", "small-ok"]
    assert set(result.failed) == {"tiny", "one-class"}
    assert result.ok == ["big", "mid", "small-ok"]
    assert "3 fitted, 2 failed" in repr(result)


def test_summary_and_stats(result):
    s = result.summary()
    assert list(s.columns) == ["task_id", "status", "n_rows", "prevalence", "train_logloss", "heldout_logloss"]
    assert len(s) == 5
    big = result.stats["big"]
    assert big["n_rows"] == 200 and 0 < big["prevalence"] < 1
    assert 0 < big["train_logloss"] < big["heldout_logloss"] < 1.0
    assert np.isnan(result.stats["tiny"]["heldout_logloss"])
    p = result.params["big"]
    assert p.kind == "logistic" and p.metadata["task_id"] == "big" and p.std is not None


def test_default_schema_is_a_fitted_copy(tasks, result):
    assert result.schema.is_fitted and not tasks.schema.is_fitted
    pooled = pd.concat([t.X for t in tasks], ignore_index=True)
    assert result.schema == tasks.schema.copy().fit(pooled)
    fitted = FeatureSchema.infer(pooled).fit(pooled.iloc[:100])
    res = fit_many(tasks, schema=fitted, progress=False, cv=0)
    assert res.schema is fitted and res.params["big"].schema is fitted


def test_batched_matches_per_task_sklearn(tasks, result):
    pytest.importorskip("ragim.models.batched", reason="batched solver not available")
    assert result.solver == "batched"
    ref = fit_many(tasks, solver="sklearn", tol=1e-10, progress=False)
    assert ref.solver == "sklearn" and ref.status == result.status
    for tid, p in result.params.items():
        assert np.allclose(p.vector, ref.params[tid].vector, atol=1e-3)
        assert ref.stats[tid]["heldout_logloss"] == pytest.approx(result.stats[tid]["heldout_logloss"], abs=1e-3)


def test_solver_choice_rules(tasks):
    l1 = fit_many(tasks, penalty="l1", C=0.5, progress=False, cv=0)
    assert l1.solver == "sklearn" and l1.params["big"].metadata["penalty"] == "l1"
    with pytest.raises(ValidationError, match="solver='batched' fits only L2 logistic"):
        fit_many(tasks, penalty="l1", solver="batched", progress=False)
    with pytest.raises(ValidationError, match="invalid parameters for LogisticModel"):
        fit_many(tasks, penalty="l3", progress=False)
    with pytest.raises(ValidationError, match="invalid parameters"):
        fit_many(tasks, not_a_parameter=1, progress=False)
    with pytest.raises(ValidationError, match="solver must be"):
        fit_many(tasks, solver="fast", progress=False)


def test_model_as_class_or_instance(tasks):
    by_class = fit_many(tasks, LogisticModel, solver="sklearn", progress=False, cv=0)
    by_instance = fit_many(tasks, LogisticModel(C=0.1), progress=False, cv=0)
    assert by_class.model == "logistic" and by_instance.params["big"].metadata["C"] == 0.1
    strong = np.abs(by_instance.params["big"].terms).sum()
    assert strong < np.abs(by_class.params["big"].terms).sum()


def test_gam_family_and_threading_backend(tasks):
    seq = fit_many(tasks, "gam", progress=False, cv=2, **FAST_GAM)
    assert seq.model == "gam" and sorted(seq.params) == ["big", "mid", "small-ok"]
    assert seq.params["big"].kind == "gam" and seq.failed.keys() == {"tiny", "one-class"}
    par = fit_many(tasks, GAMModel, n_jobs=2, backend="threading", progress=False, cv=0, **FAST_GAM)
    for tid, p in seq.params.items():
        assert np.allclose(p.vector, par.params[tid].vector)


def test_any_registered_joblib_backend_is_used(tasks):
    """Dask and Ray plug in the same way (``register_parallel_backend``), so this is their code path."""
    import joblib
    from joblib._parallel_backends import ThreadingBackend

    used = []

    class RecordingBackend(ThreadingBackend):
        def apply_async(self, func, callback=None):
            used.append(func)
            return super().apply_async(func, callback)

        def submit(self, func, callback=None):
            used.append(func)
            return super().submit(func, callback)

    joblib.register_parallel_backend("ragim-test-recording", RecordingBackend)
    seq = fit_many(tasks, "gam", progress=False, cv=0, **FAST_GAM)
    par = fit_many(tasks, "gam", n_jobs=2, backend="ragim-test-recording", progress=False, cv=0, **FAST_GAM)
    assert used, "fit_many did not dispatch through the requested joblib backend"
    assert sorted(par.params) == sorted(seq.params)
    for tid, p in seq.params.items():
        assert np.allclose(p.vector, par.params[tid].vector)


def test_lazy_collection_and_progress(tasks, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn on a terminal only
    items = list(tasks)
    lazy = TaskCollection.lazy(len(items), lambda i: (items[i].task_id, items[i].description, {}),
                               lambda i: items[i], tasks.schema)
    res = fit_many(lazy, progress=True, cv=0)
    assert sorted(res.params) == ["big", "mid", "small-ok"]
    assert "fitting logistic models" in capsys.readouterr().err


def test_invalid_task_data_and_inputs(tasks):
    bad = _task("extra-column", 50, 7)
    bad.X["bmi"] = 25.0
    res = fit_many([*tasks, bad], schema=fit_many(tasks, progress=False, cv=0).schema, progress=False, cv=0)
    assert "not in the schema: ['bmi']" in res.status["extra-column"]
    with pytest.raises(ValidationError, match="duplicate task id 'big'"):
        fit_many([tasks[0], tasks[0]], progress=False)
    with pytest.raises(ValidationError, match="zero tasks"):
        fit_many([], progress=False)
    with pytest.raises(ValidationError, match="unknown model family 'forest'"):
        fit_many(tasks, "forest", progress=False)


def test_heart_disease_both_families():
    datasets = pytest.importorskip("ragim.datasets", reason="ragim.datasets is not available")
    if not hasattr(datasets, "heart_disease"):
        pytest.skip("ragim.datasets.heart_disease is not available")
    tc = datasets.heart_disease()
    lr = fit_many(tc, progress=False)
    assert len(lr.params) == len(tc) and not lr.failed
    assert lr.summary()["heldout_logloss"].mean() < 0.69
    sub = tc.take(range(4))
    gam = fit_many(sub, "gam", schema=lr.schema, progress=False, cv=0, **FAST_GAM)
    assert sorted(gam.params) == sorted(sub.ids)
    assert all(p.names == ["intercept", *lr.schema.gam_names] for p in gam.params.values())


def test_tasks_checked_a_chunk_at_a_time_fit_as_they_would_one_by_one():
    # Rows are validated and transformed a chunk at a time; a bad task must still get its own
    # message, and the others exactly the parameters a fit of that task alone gives.
    good = [_task(f"g{i}", 60 + 10 * i, 20 + i) for i in range(5)]
    bad = _task("text-in-age", 50, 40)
    bad.X["age"] = bad.X["age"].astype(object)
    bad.X.loc[3, "age"] = "unknown"
    items = [*good[:2], bad, *good[2:]]
    res = fit_many(items, progress=False, cv=0)
    assert res.status["text-in-age"].startswith("task 'text-in-age' has invalid values")
    assert "'age'" in res.status["text-in-age"] and "unknown" in res.status["text-in-age"]
    for t in good:
        alone = fit_many([t], schema=res.schema, progress=False, cv=0)
        np.testing.assert_allclose(res.params[t.task_id].vector, alone.params[t.task_id].vector, atol=1e-12)


def test_int_and_float_coded_categories_are_not_mixed_in_one_chunk():
    # pandas turns an int column into floats when it meets a float one (level 4 becomes 4.0);
    # tasks whose categorical columns differ in dtype are therefore transformed apart, and
    # each task fits as it would alone.
    rng = np.random.default_rng(0)

    def graded(tid, n, dtype):
        X = pd.DataFrame({"age": rng.normal(55, 10, n), "grade": rng.choice([1, 2, 4], n)})
        X["grade"] = X["grade"].astype(dtype)
        y = (rng.random(n) < 1 / (1 + np.exp(-(X["grade"].astype(float) - 2)))).astype(int)
        return Task(tid, f"task {tid}", X, y)

    items = [graded("ints", 80, "int64"), graded("floats", 80, "float64")]
    schema = FeatureSchema([Feature("age", "continuous"), Feature("grade", "categorical")]).fit(items[0].X)
    assert schema.categories_["grade"] == ["1", "2", "4"]
    res = fit_many(items, schema=schema, progress=False, cv=0)
    assert res.status == {"ints": "ok", "floats": "ok"}
    for t in items:
        alone = fit_many([t], schema=res.schema, progress=False, cv=0)
        np.testing.assert_allclose(res.params[t.task_id].vector, alone.params[t.task_id].vector, atol=1e-12)


def test_held_out_folds_are_scikit_learns_stratified_folds():
    from sklearn.model_selection import StratifiedKFold

    from ragim.models.fit_many import stratified_folds

    rng = np.random.default_rng(3)
    for trial in range(200):
        n = int(rng.integers(6, 120))
        y = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
        cv, seed = int(rng.integers(2, 5)), int(rng.integers(0, 1000))
        ours = stratified_folds(y, cv, seed)
        if min(y.sum(), n - y.sum()) < cv:
            assert ours is None
            continue
        theirs = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(np.zeros(n), y))
        assert len(ours) == cv, trial
        for (a_tr, a_te), (b_tr, b_te) in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a_tr, b_tr)
            np.testing.assert_array_equal(a_te, b_te)


def test_progress_bars_stay_out_of_pipes_and_logs(tasks, capsys):
    """progress=True draws a bar on a terminal only (found by an outside user piping output)."""
    res = fit_many(tasks, progress=True, cv=0)
    assert len(res.params) > 0
    assert "fitting logistic models" not in capsys.readouterr().err


@pytest.mark.parametrize("solver", ["batched", "sklearn"])
def test_each_task_model_records_what_its_own_rows_never_varied(solver):
    """Per-task models share one schema: a level one task never had (here "typical" in
    task "b") was explained as if estimated. Each fit records its constant terms, and the
    task's explanation marks them not estimable."""
    if solver == "batched":
        pytest.importorskip("ragim.models.batched", reason="batched solver not available")
    a = _task("a", 120, 0)
    b = _task("b", 120, 1)
    keep = b.X["cp"] != "typical"
    b = Task("b", b.description, b.X[keep].reset_index(drop=True), b.y[keep.to_numpy()])
    res = fit_many([a, b], solver=solver, progress=False, cv=0)
    assert "constant_terms" not in res.params["a"].metadata
    assert res.params["b"].metadata["constant_terms"] == {"cp[typical]": 0.0}
    from ragim.explain import explain_params

    table = explain_params(res.params["b"]).table().set_index("term")
    assert table.loc["cp[typical]", "comparison"].startswith("not estimable: no patient")
    assert np.isfinite(explain_params(res.params["a"]).table().set_index("term").loc[
        "cp[typical]", "odds_ratio"])
    # the reference level no patient had: every level's comparison with it is not estimable
    c = _task("c", 120, 2)
    keep = c.X["cp"] != "asymptomatic"
    c = Task("c", c.description, c.X[keep].reset_index(drop=True), c.y[keep.to_numpy()])
    res = fit_many([a, c], solver=solver, progress=False, cv=0)
    table = explain_params(res.params["c"]).table().set_index("term")
    assert table.loc[["cp[atypical]", "cp[typical]"], "comparison"].eq(
        "not estimable: no patient at the reference level (asymptomatic) in the rows the model "
        "was fitted on").all()
    assert table.loc["sex", "comparison"] == "1 vs 0"
