"""Outcomes pair with a table's rows by position: a pandas Series y whose index holds X's
row labels in another order is refused everywhere X and y are given together, with Task's
message; an equal index, plain arrays and a Series of other labels pair by position."""

import numpy as np
import pandas as pd
import pytest

from ragim import Task, ZeroShotClassifier
from ragim.checks import check_aligned_labels, misaligned_labels
from ragim.errors import ValidationError
from ragim.estimator import adapt_prior
from ragim.models import GAMModel, LogisticModel
from ragim.params import ModelParams
from ragim.schema import FeatureSchema
from ragim.validation import adapt_params, score_predictions

MESSAGE = "y is a pandas Series whose index holds X's row labels in another order"


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(4)
    n = 80
    X = pd.DataFrame({"age": rng.normal(60, 10, n), "lactate": rng.gamma(2.0, 1.0, n)})
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-0.08 * (X.age - 60)))).astype(int), index=X.index)
    shuffled = X.sample(frac=1, random_state=1)  # the same patients, rows in another order
    return X, y, shuffled


@pytest.fixture(scope="module")
def prior(rows):
    X, _, _ = rows
    schema = FeatureSchema.infer(X).fit(X)
    return ModelParams.from_dict("logistic", schema, {"intercept": -0.5, "age": 0.5, "lactate": 0.1})


def test_the_check_finds_only_labels_in_another_order(rows):
    X, y, shuffled = rows
    assert misaligned_labels(shuffled, y) == [
        MESSAGE + "; rows are matched by position, so align them first (y = y.loc[X.index]) "
        "or pass y.to_numpy()"
    ]
    assert misaligned_labels(X, y) == []  # equal index
    assert misaligned_labels(shuffled, y.loc[shuffled.index]) == []  # aligned first
    assert misaligned_labels(shuffled, y.to_numpy()) == []  # an array pairs by position
    assert misaligned_labels(shuffled, list(y)) == []
    relabelled = shuffled.set_axis(range(1000, 1000 + len(y)))  # labels that are not y's
    assert misaligned_labels(relabelled, y.loc[shuffled.index]) == []
    with pytest.raises(ValidationError, match=MESSAGE):
        check_aligned_labels(shuffled, y)


def test_task_refuses_labels_in_another_order(rows):
    _, y, shuffled = rows
    with pytest.raises(ValidationError, match=MESSAGE):
        Task("t", "Predict sepsis in adults", shuffled, y)
    assert Task("t", "Predict sepsis in adults", shuffled, y.loc[shuffled.index]).n_rows == len(y)


@pytest.mark.parametrize("model", [LogisticModel, GAMModel])
def test_models_refuse_labels_in_another_order(rows, model):
    X, y, shuffled = rows
    with pytest.raises(ValidationError, match=MESSAGE):
        model().fit(shuffled, y)
    fitted = model().fit(shuffled, y.loc[shuffled.index])
    same = model().fit(shuffled, y.loc[shuffled.index].to_numpy())
    assert np.allclose(fitted.params_.vector, same.params_.vector)
    with pytest.raises(ValidationError, match=MESSAGE):
        fitted.score(shuffled, y)
    assert fitted.score(shuffled, y.loc[shuffled.index]) == fitted.score(X, y)


def test_zero_shot_classifier_refuses_labels_in_another_order(rows):
    X, y, shuffled = rows
    with pytest.raises(ValidationError, match=MESSAGE):
        ZeroShotClassifier().fit(shuffled, y)
    clf = ZeroShotClassifier().fit(shuffled, y.loc[shuffled.index])
    ref = ZeroShotClassifier().fit(X, y)
    assert np.allclose(clf.params_.vector, ref.params_.vector)
    with pytest.raises(ValidationError, match=MESSAGE):
        clf.score(shuffled, y)


def test_adaptation_refuses_labels_in_another_order(rows, prior):
    X, y, shuffled = rows
    with pytest.raises(ValidationError, match=MESSAGE):
        adapt_params(prior, shuffled, y, adaptation="map")
    with pytest.raises(ValidationError, match=MESSAGE):
        adapt_prior(prior, shuffled, y.astype(float), adaptation="map")
    aligned = adapt_params(prior, shuffled, y.loc[shuffled.index], adaptation="map")
    assert np.allclose(aligned.vector, adapt_params(prior, X, y, adaptation="map").vector)


def test_scoring_refuses_labels_in_another_order(rows):
    X, y, shuffled = rows
    risk = np.full(len(y), 0.4)
    with pytest.raises(ValidationError, match=MESSAGE):
        score_predictions(y, risk, n_boot=0, X=shuffled)
    assert score_predictions(y, risk, n_boot=0, X=X)["n_positive"] == int(y.sum())


def test_a_one_column_dataframe_y_is_checked_as_a_series(rows, prior):
    X, y, shuffled = rows
    frame = y.to_frame("y")
    message = "y is a one-column pandas DataFrame whose index holds X's row labels in another order"
    assert misaligned_labels(shuffled, frame)[0].startswith(message)
    for run in (
        lambda: Task("t", "Predict sepsis in adults", shuffled, frame),
        lambda: ZeroShotClassifier().fit(shuffled, frame),
        lambda: LogisticModel().fit(shuffled, frame),
        lambda: adapt_params(prior, shuffled, frame, adaptation="map"),
        lambda: score_predictions(frame, np.full(len(y), 0.4), n_boot=0, X=shuffled),
    ):
        with pytest.raises(ValidationError, match=message):
            run()
    assert misaligned_labels(shuffled, frame.loc[shuffled.index]) == []
    assert misaligned_labels(X.reset_index(drop=True).set_axis(range(500, 580)), frame) == []


def test_labels_that_overlap_x_partly_are_refused_when_both_name_rows(rows):
    X, y, _ = rows
    named = X.set_axis(range(100, 100 + len(X)))
    Xp, yp = named.iloc[:60], y.set_axis(named.index).iloc[5:65]  # 55 labels shared, 5 not
    [problem] = misaligned_labels(Xp, yp)
    assert problem.startswith("y is a pandas Series whose index holds 55 of X's 60 row labels")
    assert "y = y.loc[X.index]) if y's labels name X's rows" in problem
    with pytest.raises(ValidationError, match="55 of X's 60 row labels"):
        Task("t", "Predict sepsis in adults", Xp, yp)
    with pytest.raises(ValidationError, match="55 of X's 60 row labels"):
        ZeroShotClassifier().fit(Xp, yp)
    # no label shared (X's index was reset elsewhere): pairs by position, as documented
    assert misaligned_labels(Xp.set_axis(range(1000, 1060)), yp) == []
    assert misaligned_labels(Xp, yp.to_numpy()) == []


def test_the_filter_then_reset_idiom_pairs_by_position(rows):
    """``X = d[cols].reset_index(drop=True); y = d["y"]`` after filtering ``d`` pairs correctly
    by position; its y shares some of X's labels 0..n-1 only by chance, and was refused."""
    X, y, _ = rows
    d = X.assign(y=np.asarray(y)).set_axis(range(len(X)))
    d = d[d.index % 3 != 0]
    Xr, yr = d.drop(columns="y").reset_index(drop=True), d["y"]
    assert misaligned_labels(Xr, yr) == [] and misaligned_labels(Xr, yr.to_frame()) == []
    assert Task("t", "Predict sepsis in adults", Xr, yr).n_rows == len(d)
    # X indexed by patient ids 1..n, y with pandas' default 0..n-1: also by position
    ids = Xr.set_axis(range(1, len(Xr) + 1))
    assert misaligned_labels(ids, yr.reset_index(drop=True)) == []


def test_a_table_sorted_then_x_alone_renumbered_gets_advice_for_both_readings(rows):
    """s = df.sort_values("age"); X = s[cols].reset_index(drop=True); y = s["y"] pairs correctly
    by position, and the advice was y.loc[X.index], which put the wrong outcome on 16 of 40
    rows. Which side was reordered cannot be told, so the message gives both fixes."""
    X, y, _ = rows
    d = X.assign(y=np.asarray(y)).set_axis(range(len(X))).sort_values("age")
    Xs, ys = d.drop(columns="y").reset_index(drop=True), d["y"]
    [problem] = misaligned_labels(Xs, ys)
    assert "row numbers 0.." in problem and "pass y.to_numpy()" in problem.split(";")[1]
    assert problem.index("y.to_numpy()") < problem.index("y.loc[X.index]")
    # rows numbered 0..n-1 by hand count as pandas' default: a filtered y pairs by position
    kept = d[d.index % 3 != 0]
    by_hand = kept.drop(columns="y").set_axis(np.arange(len(kept)))
    assert misaligned_labels(by_hand, kept["y"]) == []
