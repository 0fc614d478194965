"""GAMModel: shared-bin mapping, round trip, known shapes, interpret interop and timing."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import log_loss

from ragim.errors import ValidationError
from ragim.models import GAMModel, LogisticModel, model_from_params
from ragim.models.gam import _ebm_inputs
from ragim.params import ModelParams
from ragim.schema import Feature, FeatureSchema

FAST = {"outer_bags": 2, "max_rounds": 300, "learning_rate": 0.1, "early_stopping_rounds": 20}


def make_task(n: int = 400, seed: int = 0):
    """Continuous (U-shaped effect, some missing), binary and categorical features."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, n)
    x_obs = x.copy()
    x_obs[rng.random(n) < 0.08] = np.nan
    X = pd.DataFrame({
        "x": x_obs,
        "b": rng.integers(0, 2, n),
        "cat": rng.choice(["a", "b", "c"], n),
        "noise": rng.normal(size=n),
    })
    logit = 0.8 * x**2 - 2.5 + 0.7 * X["b"] + 0.8 * (X["cat"] == "a")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    return X, y


@pytest.fixture(scope="module")
def task():
    return make_task()


@pytest.fixture(scope="module")
def gam(task):
    return GAMModel(**FAST).fit(*task)


def test_params_cover_every_shared_bin(task, gam):
    p = gam.to_params()
    assert p.kind == "gam" and p.names == ["intercept", *gam.schema_.gam_names]
    assert [len(s) for s in gam.term_scores_] == [len(lab) for _, lab in gam.schema_.gam_layout]
    assert "x[missing]" in p.names
    assert p.std is not None and p.std.shape == p.vector.shape
    assert p.metadata["ebm"]["outer_bags"] == 2 and p.metadata["n_rows"] == len(task[0])
    assert gam.predict_proba(task[0]).shape == (len(task[0]), 2)


def test_params_reproduce_the_ebm_exactly(task, gam):
    from interpret.glassbox import ExplainableBoostingClassifier

    X, y = task
    schema = gam.schema_
    D, types = _ebm_inputs(schema, schema.bin_indices(X))
    settings = gam._ebm_settings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ebm = ExplainableBoostingClassifier(feature_names=schema.names, feature_types=types, **settings).fit(D, y)
    assert np.allclose(ebm.predict_proba(D)[:, 1], gam.predict_proba(X)[:, 1], rtol=0, atol=1e-10)


def test_shape_functions_are_centred(task, gam):
    X, _ = task
    B = gam.schema_.bin_indices(X)
    for k, scores in enumerate(gam.term_scores_):
        counts = np.bincount(B[:, k][B[:, k] >= 0], minlength=len(scores))
        assert abs(counts @ scores / counts.sum()) < 1e-9


def test_round_trip_predicts_identically(task, gam):
    X, _ = task
    p = gam.to_params()
    again = GAMModel.from_params(p)
    assert np.array_equal(again.predict_proba(X), gam.predict_proba(X))
    assert np.array_equal(model_from_params(ModelParams.from_json(p.to_json())).predict(X), gam.predict(X))
    # prediction is intercept + the score of each value's bin
    B = gam.schema_.bin_indices(X.iloc[:5])
    z = p.intercept + sum(gam.term_scores_[k][B[:, k]] for k in range(B.shape[1]))
    assert np.allclose(gam.decision_function(X.iloc[:5]), z)


def test_learns_u_shape_better_than_logistic(task, gam):
    X_test, y_test = make_task(4000, seed=1)
    gam_ll = log_loss(y_test, gam.predict_proba(X_test)[:, 1])
    lin_ll = log_loss(y_test, LogisticModel().fit(*task).predict_proba(X_test)[:, 1])
    assert gam_ll < lin_ll - 0.05
    shape = gam.shape_functions().query("feature == 'x' and not is_missing")
    s = shape["score"].to_numpy()
    mid = len(s) // 2
    assert s[0] > s[mid - 1] + 1 and s[-1] > s[mid] + 1  # high at both ends, low in the middle
    assert np.all(np.diff(shape["midpoint"].to_numpy()) > 0)


def test_shape_function_table(gam):
    t = gam.shape_functions()
    assert list(t.columns) == ["feature", "type", "bin", "label", "midpoint", "score", "is_missing",
                               "not_estimable", "std", "ci_low", "ci_high"]
    assert len(t) == len(gam.schema_.gam_names)
    assert t.query("is_missing")["label"].tolist() == ["missing"]
    assert t.query("feature == 'cat'")["label"].tolist() == ["a", "b", "c"]
    assert t.query("type != 'continuous'")["midpoint"].isna().all()


def test_unseen_bins_score_zero_or_neighbour(task):
    X, y = task
    wide = pd.concat([X, pd.DataFrame({"x": [np.nan, 10.0], "b": [1, 0], "cat": ["z", "a"], "noise": [0.0, 0.0]})])
    schema = FeatureSchema.infer(wide).fit(wide)
    sub = X.dropna().query("x < 1.5")  # no missing x, no category "z", no high x bins
    m = GAMModel(schema=schema, **FAST).fit(sub, y[sub.index])
    shape = m.shape_functions().set_index(["feature", "label"])["score"]
    assert shape[("cat", "z")] == 0.0 and shape[("x", "missing")] == 0.0
    x_scores = m.term_scores_[0]
    last_seen = int(schema.bin_indices(sub)[:, 0].max())
    assert last_seen < len(x_scores) - 2
    assert np.all(x_scores[last_seen + 1 : -1] == x_scores[last_seen])  # ordinal: neighbour's score


def test_numpy_input_and_max_bins():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] ** 2 + rng.normal(scale=0.5, size=200) > 1).astype(int)
    m = GAMModel(max_bins=5, **FAST).fit(X, y)
    assert m.schema_.names == ["x0", "x1"] and m.schema_.n_bins == 5
    assert len(m.term_scores_[0]) == 5
    assert m.score(X, y) > 0.7


def test_to_interpret_matches_and_explains(task, gam):
    X, _ = task
    ebm = gam.to_interpret()
    X_new = make_task(300, seed=2)[0]
    X_new.loc[:4, "cat"] = "never-seen"
    X_new.loc[5:7, "cat"] = None
    X_new.loc[8, "x"] = gam.schema_.bin_edges_["x"][3]  # exactly on a bin edge
    assert np.allclose(ebm.predict_proba(X_new), gam.predict_proba(X_new), rtol=0, atol=1e-12)
    glob = ebm.explain_global()
    assert type(glob).__name__ == "EBMExplanation"
    assert glob.data()["names"] == gam.schema_.names
    d = glob.data(0)
    assert np.allclose(d["scores"], gam.term_scores_[0][:-1])  # missing bin is not graphed
    local = ebm.explain_local(X_new.iloc[:2])
    assert local.data(0)["names"][:4] == gam.schema_.names


def test_interpret_visualize_and_show(gam):
    """Needs the ``notebook`` extra (part of ``dev``, so CI runs it)."""
    pytest.importorskip("plotly", reason="interpret's visualize() needs plotly: pip install 'ragim[notebook]'")
    pytest.importorskip("dash_cytoscape", reason="interpret.show() needs interpret-core[dash]: pip install 'ragim[notebook]'")
    pytest.importorskip("IPython", reason="the inline provider displays through IPython: pip install 'ragim[notebook]'")
    import interpret
    from plotly import graph_objs as go

    glob = gam.to_interpret().explain_global()
    fig = glob.visualize(0)
    assert isinstance(fig, go.Figure) and len(fig.data) > 0
    before = interpret.get_visualize_provider()
    interpret.set_visualize_provider(interpret.provider.InlineProvider())
    try:
        interpret.show(glob)  # renders inline (no server); raises if the explanation cannot be shown
    finally:
        interpret.set_visualize_provider(before)


def test_interactions_are_refused(task):
    with pytest.raises(ValidationError, match="interactions=0"):
        GAMModel(interactions=2).fit(*task)


def test_a_validation_size_that_leaves_a_class_nothing_to_boost_on_is_refused():
    """validation_size=0.9 on ten rows left the EBM one row, and the fit failed as 'parameters
    must be finite; non-finite values for ['intercept']'."""
    X = pd.DataFrame({"age": np.arange(10.0), "sex": ["m", "f"] * 5})
    y = np.array([0, 1] * 5)
    with pytest.raises(ValidationError, match=r"validation_size=0.9 leaves class '0' about 0.5 of its 5 row"):
        GAMModel(validation_size=0.9).fit(X, y)
    assert np.isfinite(GAMModel(validation_size=0.5, random_state=0).fit(X, y).params_.vector).all()


def test_default_fit_time_on_a_clinical_sized_task():
    """About 0.3 s on an idle core for 300 rows x 13 features; loose bound for busy CI."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({f"c{j}": rng.normal(size=300) for j in range(9)}
                     | {f"b{j}": rng.integers(0, 2, 300) for j in range(3)}
                     | {"cat": rng.choice(list("abcd"), 300)})
    y = (rng.random(300) < 1 / (1 + np.exp(-(X["c0"] ** 2 - 1 + X["b0"])))).astype(int)
    t0 = time.perf_counter()
    GAMModel().fit(X, y)
    assert time.perf_counter() - t0 < 15


def test_scores_carry_laplace_sds_of_the_centred_scores():
    """params.std is the Laplace SD of each centred score (before: the spread of interpret's
    outer bags, which share most of their rows: 95% intervals held the true binned score 47% of
    the time on simulated 300-row tasks; with outer_bags=1 there was no SD at all)."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"smoker": rng.integers(0, 2, 400).astype(float)})
    y = (rng.random(400) < np.where(X["smoker"] == 1, 0.6, 0.25)).astype(int)
    for bags in (1, 2):
        p = GAMModel(outer_bags=bags, max_rounds=300).fit(X, y).to_params()
        assert p.metadata["std_method"] == "laplace"
        # one binary feature: the bins' log-odds L_b are independent with variance
        # V_b = 1 / (n_b p_b (1 - p_b)); centred, s_0 = w_1 (L_0 - L_1) and the intercept is
        # w_0 L_0 + w_1 L_1 (w_b the share of rows in bin b)
        n = np.bincount(X["smoker"].astype(int), minlength=2)
        w = n / n.sum()
        pb = expit(p.intercept + p.terms)
        V = 1 / (n * pb * (1 - pb))
        assert p.std[1] == pytest.approx(w[1] * np.sqrt(V.sum()), rel=1e-6)
        assert p.std[2] == pytest.approx(w[0] * np.sqrt(V.sum()), rel=1e-6)
        assert p.std[0] == pytest.approx(np.sqrt(w @ (w * V)), rel=1e-6)
        assert p.correlation is not None


def test_shape_functions_mark_bins_that_are_not_estimable():
    """shape_functions() gave a bin no fitted row fell in its neighbour's std and 95% CI
    (0.098, -0.98..-0.60) and a level never seen a CI of 0..0, which explain() marks not
    estimable; both are NaN now, with the same reason."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"grade": rng.choice([1.0, 2.0, 3.0], 300), "cp": rng.choice(["a", "b"], 300)})
    y = (rng.random(300) < expit(X["grade"] - 2)).astype(int)
    schema = FeatureSchema(  # bins shared with rows of grade 0-3: no fitted row has grade 0
        [Feature("grade", "continuous"), Feature("cp", "categorical", categories=("a", "b", "c"))]
    ).fit(pd.DataFrame({"grade": [0.0, 1.0, 2.0, 3.0] * 5, "cp": ["a", "b", "c", "a"] * 5}))
    gam = GAMModel(schema=schema, outer_bags=2, max_rounds=300).fit(X, y)
    sf = gam.shape_functions().set_index("label")
    frame = gam.explain().to_frame().set_index("bin")
    for label in ("-inf..1", "c"):  # grade 0, level c: no fitted row
        assert np.isnan(sf.loc[label, "std"]) and np.isnan(sf.loc[label, "ci_low"])
        assert sf.loc[label, "not_estimable"] == frame.loc[label, "not_estimable"] != ""
    assert sf.loc["1..2", "not_estimable"] == "" and sf.loc["1..2", "std"] > 0


def test_feature_that_never_varies_is_not_estimable():
    """A feature constant in the fitted rows showed its bin as score 0 with std 0 and a 95% CI
    of 0..0; it is marked not estimable now, as the logistic model marks it."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(55, 10, 200), "beds": np.full(200, 500.0)})
    y = (rng.random(200) < 0.4).astype(int)
    gam = GAMModel(outer_bags=2, max_rounds=300).fit(X, y)
    assert gam.schema_.bin_labels("beds") == ["-inf..inf"]  # one value: one bin
    assert gam.to_params().metadata["constant_terms"]["beds[-inf..inf]"] == 1.0
    row = gam.explain().to_frame().set_index("term").loc["beds[-inf..inf]"]
    assert row["not_estimable"].startswith("not estimable: never varies")
    assert np.isnan(row["std"]) and np.isnan(row["ci_low"])


def test_a_column_of_few_values_gets_one_bin_per_value():
    """A count 0-3 (3 rare) got the quantile edges [0, 1, 2]: a bin below 0 no row could fall in,
    and counts 2 and 3 in one bin, one score (1.28 for both, where interpret's own EBM gives 0.87
    and 2.81). Each value has its own bin now, and no bin lies below the smallest value."""
    from ragim.schema import bin_edges

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"vessels": rng.choice([0.0, 1.0, 2.0, 3.0], 2000, p=[0.55, 0.25, 0.12, 0.08])})
    y = (rng.random(2000) < expit(1.2 * X["vessels"] - 1.5)).astype(int)
    gam = GAMModel(outer_bags=2, max_rounds=300).fit(X, y)
    assert gam.schema_.bin_edges_["vessels"] == [1.0, 2.0, 3.0]
    assert gam.schema_.bin_labels("vessels") == ["-inf..1", "1..2", "2..3", "3..inf"]
    two, three = gam.predict_proba(pd.DataFrame({"vessels": [2.0, 3.0]}))[:, 1]
    assert three > two + 0.2
    assert "constant_terms" not in gam.to_params().metadata  # every bin holds patients
    # many values: quantile edges, none at the smallest value (its lower bin would be empty)
    ties = np.r_[np.zeros(50), np.linspace(0.1, 4, 50)]
    assert bin_edges(ties, 8)[0] > 0 and len(bin_edges(ties, 8)) <= 7


def test_carrying_over_a_feature_always_blank_scores_its_value_bins_zero_as_a_fit_does():
    """carry_over_empty_bins (the statistical generator's, for bins no indexed row fell in) and
    GAMModel's fit share one rule (carried_bins). It raised 'argmin of an empty sequence' for a
    feature whose value bins were all empty (always blank); a fit scores such bins 0."""
    from ragim.models.gam_family import carried_bins, carry_over_empty_bins

    X = pd.DataFrame({"age": [30.5, 40.5, 50.5, 60.5, np.nan] * 4})
    schema = FeatureSchema.infer(X).fit(X)
    p = ModelParams("gam", schema, np.arange(len(schema.gam_names) + 1.0))
    blank = {n: 0.0 for n in schema.gam_names if not n.endswith("[missing]")}
    assert carry_over_empty_bins(p, blank).terms.tolist() == [0.0, 0.0, 0.0, 0.0, 5.0]
    assert carry_over_empty_bins(p, {"age[-inf..40.5]": 0.0}).terms.tolist() == [2.0, 2.0, 3.0, 4.0, 5.0]
    source, zero = carried_bins(schema["age"], np.array([True, False, True, True, True]), 4)
    assert source.tolist() == [1, 1, 1, 1, 4] and zero.tolist() == [False, False, False, False, True]
