"""Tests of the batched logistic-regression solver against scikit-learn."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from ragim.errors import ValidationError
from ragim.models.batched import (
    BatchedFit,
    benchmark_fit,
    fit_logistic_batched,
    fit_logistic_sklearn_loop,
    sklearn_loop_seconds,
)


def _tasks(n_tasks: int, d: int, seed: int, n_lo: int = 5, n_hi: int = 150):
    rng = np.random.default_rng(seed)
    X_list, y_list = [], []
    for _ in range(n_tasks):
        n = int(rng.integers(n_lo, n_hi + 1))
        X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d)
        w = rng.normal(size=d)
        p = 1 / (1 + np.exp(-(X @ w * 0.7 + rng.normal())))
        y = (rng.random(n) < p).astype(int)
        y[0], y[1] = 0, 1  # both classes present
        X_list.append(X)
        y_list.append(y)
    return X_list, y_list


def _sk(X, y, C, fit_intercept):
    clf = LogisticRegression(C=C, fit_intercept=fit_intercept, tol=1e-10, max_iter=10000)
    with threadpool_limits(1):  # tiny fits: OpenMP threads only cost time on a busy machine
        clf.fit(X, y)
    return clf.coef_[0], (clf.intercept_[0] if fit_intercept else 0.0)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
def test_matches_sklearn(C, fit_intercept):
    X_list, y_list = _tasks(30, 6, seed=int(C * 10) + fit_intercept)
    fit = fit_logistic_batched(X_list, y_list, C=C, fit_intercept=fit_intercept, device="cpu")
    assert isinstance(fit, BatchedFit)
    assert fit.coef.shape == (30, 6) and fit.coef.dtype == np.float64
    assert fit.status == ["ok"] * 30
    assert fit.converged.all() and (fit.n_iter >= 1).all()
    for t in range(30):
        coef, b = _sk(X_list[t], y_list[t], C, fit_intercept)
        np.testing.assert_allclose(fit.coef[t], coef, atol=1e-4, rtol=0)
        assert abs(fit.intercept[t] - b) <= 1e-4


def test_small_batches_and_unsorted_sizes_give_same_result():
    X_list, y_list = _tasks(25, 4, seed=3, n_lo=3, n_hi=80)
    a = fit_logistic_batched(X_list, y_list, device="cpu")
    b = fit_logistic_batched(X_list, y_list, device="cpu", batch_size=3)
    np.testing.assert_allclose(a.coef, b.coef, atol=1e-10)
    np.testing.assert_allclose(a.intercept, b.intercept, atol=1e-10)


def test_array_input_and_sample_weights():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(5, 40, 3))
    y = (X[..., 0] + rng.normal(size=(5, 40)) > 0).astype(int)
    fit = fit_logistic_batched(X, y, device="cpu")
    assert fit.status == ["ok"] * 5
    # Integer weights are the same as repeating rows.
    w = rng.integers(1, 4, size=(5, 40)).astype(float)
    fw = fit_logistic_batched(X, y, sample_weight_list=w, C=2.0, device="cpu")
    for t in range(5):
        rep = np.repeat(np.arange(40), w[t].astype(int))
        coef, b = _sk(X[t][rep], y[t][rep], 2.0, True)
        np.testing.assert_allclose(fw.coef[t], coef, atol=1e-4)
        assert abs(fw.intercept[t] - b) <= 1e-4


def test_separable_data_stays_finite_and_matches_sklearn():
    rng = np.random.default_rng(11)
    X_list, y_list = [], []
    for n in (10, 30, 100):
        X = rng.normal(size=(n, 3))
        y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)  # perfectly separable
        X_list.append(X * 5.0)
        y_list.append(y)
    X_list.append(np.array([[0.0], [1.0]]) @ np.ones((1, 3)))  # 2 rows, separable
    y_list.append(np.array([0, 1]))
    for C in (1.0, 100.0):
        fit = fit_logistic_batched(X_list, y_list, C=C, device="cpu")
        assert np.isfinite(fit.coef).all() and fit.converged.all()
        for t in range(len(X_list)):
            coef, b = _sk(X_list[t], y_list[t], C, True)
            np.testing.assert_allclose(fit.coef[t], coef, atol=1e-4)
            assert abs(fit.intercept[t] - b) <= 1e-4


def test_bad_tasks_get_status_and_do_not_affect_others():
    X_list, y_list = _tasks(6, 3, seed=5)
    good = fit_logistic_batched(X_list, y_list, device="cpu")
    X_nan = X_list[0].copy()
    X_nan[2, 1] = np.nan
    y_nan = y_list[1].astype(float)
    y_nan[3] = np.nan
    bad_X = [
        np.ones((20, 3)),
        np.zeros((20, 3)),
        np.ones((1, 3)),
        np.zeros((0, 3)),
        X_nan,
        X_list[1],
    ]
    bad_y = [np.ones(20, int), np.zeros(20, int), np.array([1]), np.zeros(0, int), y_list[0], y_nan]
    X_all = X_list[:3] + bad_X + X_list[3:]
    y_all = y_list[:3] + bad_y + y_list[3:]
    fit = fit_logistic_batched(X_all, y_all, device="cpu", batch_size=4)
    assert fit.status[3:9] == [
        "single-class (all 1)",
        "single-class (all 0)",
        "too few rows (1 < 2)",
        "too few rows (0 < 2)",
        "non-finite values in X (1 entries)",
        "non-finite values in y (1 entries)",
    ]
    assert np.isnan(fit.coef[3:9]).all() and np.isnan(fit.intercept[3:9]).all()
    assert not fit.converged[3:9].any() and (fit.n_iter[3:9] == 0).all()
    ok = [0, 1, 2, 9, 10, 11]
    assert [fit.status[i] for i in ok] == ["ok"] * 6 and fit.converged[ok].all()
    np.testing.assert_allclose(fit.coef[ok], good.coef, atol=1e-12)
    np.testing.assert_allclose(fit.intercept[ok], good.intercept, atol=1e-12)
    # The sklearn loop reports the same statuses.
    ref = fit_logistic_sklearn_loop(X_all, y_all)
    assert ref.status == fit.status


def test_did_not_converge_status():
    X_list, y_list = _tasks(3, 4, seed=2)
    fit = fit_logistic_batched(X_list, y_list, C=10.0, max_iter=1, device="cpu")
    assert fit.status == ["did not converge in 1 iterations"] * 3
    assert not fit.converged.any() and np.isfinite(fit.coef).all()


def test_validation_errors_name_the_task():
    X_list, y_list = _tasks(3, 4, seed=1)
    with pytest.raises(ValidationError, match=r"task 2: X has 3 features but task 0 has 4"):
        fit_logistic_batched(X_list[:2] + [X_list[2][:, :3]], y_list, device="cpu")
    y_bad = [y_list[0], y_list[1] * 2, y_list[2]]
    with pytest.raises(
        ValidationError, match=r"task 1: y must be binary 0/1, found values \{0, 2\}"
    ):
        fit_logistic_batched(X_list, y_bad, device="cpu")
    with pytest.raises(ValidationError, match="3 tasks but y_list has 2"):
        fit_logistic_batched(X_list, y_list[:2], device="cpu")
    with pytest.raises(ValidationError, match="task 0: y must be 1-D"):
        fit_logistic_batched(X_list, [y_list[0][:-1]] + y_list[1:], device="cpu")
    with pytest.raises(ValidationError, match="task 1: sample_weight has negative"):
        w = [np.ones(len(y)) for y in y_list]
        w[1][0] = -1.0
        fit_logistic_batched(X_list, y_list, sample_weight_list=w, device="cpu")


def test_float32_and_progress(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn on a terminal only
    X_list, y_list = _tasks(10, 3, seed=9)
    f64 = fit_logistic_batched(X_list, y_list, device="cpu")
    f32 = fit_logistic_batched(X_list, y_list, device="cpu", dtype=torch.float32, progress=True)
    assert f32.coef.dtype == np.float64 and f32.converged.all()
    np.testing.assert_allclose(f32.coef, f64.coef, atol=1e-3)
    assert "logistic fits" in capsys.readouterr().err
    threads = torch.get_num_threads()
    f1 = fit_logistic_batched(X_list, y_list, device="cpu", num_threads=1)
    assert torch.get_num_threads() == threads
    np.testing.assert_allclose(f1.coef, f64.coef, atol=1e-10)


def test_benchmark_tiny():
    r = benchmark_fit(n_tasks=50, baseline_tasks=10, device="cpu", threads=(1, 2))
    assert set(r) == {"name", "n", "ours", "baseline", "ratio", "max_abs_diff", "device", "threads", "by_threads"}
    assert r["name"] == "fit" and r["n"] == 50 and r["device"] == "cpu"
    assert set(r["ours"]) == {"tasks_per_s", "tasks_per_s_per_thread", "seconds", "description"}
    assert set(r["baseline"]) == {"tasks_per_s", "tasks_per_s_per_thread", "seconds", "n", "description"}
    assert r["baseline"]["n"] == 10 and "extrapolated" in r["baseline"]["description"]
    assert r["ratio"] > 0 and r["max_abs_diff"] < 1e-3
    # every comparison runs both sides on the same number of threads
    assert r["threads"] == {"ours": 1, "baseline": 1} and set(r["by_threads"]) == {"1", "2"}
    two = r["by_threads"]["2"]
    assert two["threads"] == {"ours": 2, "baseline": 2}
    assert two["ours"]["tasks_per_s_per_thread"] == pytest.approx(two["ours"]["tasks_per_s"] / 2)
    assert two["ratio"] == pytest.approx(two["ours"]["tasks_per_s"] / two["baseline"]["tasks_per_s"])


def test_the_sklearn_loop_gives_the_same_fit_on_any_number_of_processes():
    X_list, y_list = _tasks(12, 3, seed=8)
    _, one = sklearn_loop_seconds(X_list, y_list, threads=1)
    _, two = sklearn_loop_seconds(X_list, y_list, threads=2)
    np.testing.assert_array_equal(one.coef, two.coef)
    assert one.status == two.status == ["ok"] * 12


def test_ill_conditioned_tasks_reach_the_float64_minimiser():
    # The Hessian is built in float32 for speed; raw units (values near 1e4) and two
    # nearly collinear columns make cond(H) far beyond float32's reach. Those tasks must
    # still converge to scikit-learn's float64 solution.
    rng = np.random.default_rng(5)
    X_list, y_list = [], []
    for n in (40, 90, 150):
        a = rng.normal(size=n)
        X = np.column_stack([2000 + 300 * a, 2000 + 300 * a + rng.normal(scale=0.5, size=n),
                             rng.normal(size=n)])
        y = (rng.random(n) < 1 / (1 + np.exp(-(a + X[:, 2])))).astype(int)
        X_list.append(X)
        y_list.append(y)
    fit = fit_logistic_batched(X_list, y_list, C=1000.0, device="cpu")
    assert fit.converged.all(), fit.status
    for t in range(len(X_list)):
        coef, b = _sk(X_list[t], y_list[t], 1000.0, True)
        np.testing.assert_allclose(fit.coef[t], coef, rtol=1e-3, atol=1e-6)
        assert abs(fit.intercept[t] - b) <= 1e-3 * max(1.0, abs(b))
