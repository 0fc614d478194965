"""LogisticModel: fitting, sklearn agreement, params round trip, tables and bad input.

The bad-input tests at the end run for both families (LogisticModel and GAMModel).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import InvalidParameterError

from ragim.errors import ValidationError
from ragim.models import (
    MODEL_FAMILIES,
    GAMModel,
    LogisticModel,
    model_from_params,
    register_model_family,
)
from ragim.params import ModelParams
from ragim.schema import Feature, FeatureSchema

FAST_GAM = {"outer_bags": 2, "max_rounds": 200, "learning_rate": 0.1, "early_stopping_rounds": 20}


def make_task(n: int = 300, seed: int = 0, missing: bool = True):
    rng = np.random.default_rng(seed)
    age = rng.normal(55, 10, n)
    if missing:
        age[rng.random(n) < 0.1] = np.nan
    X = pd.DataFrame({
        "age": age,
        "sex": rng.integers(0, 2, n),
        "chol": rng.normal(220, 40, n),
        "cp": rng.choice(["typical", "atypical", "asymptomatic"], n),
    })
    logit = (0.06 * (np.nan_to_num(age, nan=55.0) - 55) + 0.8 * X["sex"] + 0.01 * (X["chol"] - 220)
             + 1.0 * (X["cp"] == "asymptomatic") - 0.5)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int).to_numpy()
    return X, y


@pytest.fixture(scope="module")
def task():
    return make_task()


@pytest.fixture(scope="module")
def fitted(task):
    X, y = task
    return LogisticModel().fit(X, y)


def test_fit_sets_sklearn_attributes(task, fitted):
    X, y = task
    m = fitted
    d = m.schema_.n_design
    assert m.coef_.shape == (1, d) and m.intercept_.shape == (1,)
    assert list(m.classes_) == [0, 1]
    assert m.n_features_in_ == 4 and list(m.feature_names_in_) == ["age", "sex", "chol", "cp"]
    assert m.predict_proba(X).shape == (len(X), 2)
    assert set(np.unique(m.predict(X))) <= {0, 1}
    assert np.allclose(m.predict_proba(X).sum(1), 1.0)
    assert np.allclose(np.log(m.predict_proba(X)), m.predict_log_proba(X))
    assert m.score(X, y) > 0.6
    assert m.n_iter_[0] >= 1
    assert m.provenance == []
    meta = m.to_params().metadata
    assert meta["source"] == "fit" and meta["n_rows"] == len(X) and meta["penalty"] == "l2"


def test_matches_plain_sklearn_on_design_matrix(task, fitted):
    X, y = task
    Z = fitted.schema_.transform(X)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(Z, y)
    assert np.allclose(fitted.coef_, ref.coef_, atol=1e-4)
    assert np.allclose(fitted.intercept_, ref.intercept_, atol=1e-4)
    assert np.allclose(fitted.predict_proba(X), ref.predict_proba(Z), atol=1e-5)


def test_params_round_trip_predicts_identically(task, fitted):
    X, _ = task
    p = fitted.to_params()
    assert p.kind == "logistic" and p.names == ["intercept", *fitted.schema_.design_names]
    assert p.std is not None and np.all(p.std > 0)
    again = LogisticModel.from_params(p)
    assert np.array_equal(again.predict_proba(X), fitted.predict_proba(X))
    assert again.to_params() == p
    via_json = LogisticModel.from_params(ModelParams.from_json(p.to_json()))
    assert np.allclose(via_json.predict_proba(X), fitted.predict_proba(X), rtol=0, atol=1e-12)
    via_dict = LogisticModel.from_params(p.to_dict())
    assert np.allclose(via_dict.decision_function(X), fitted.decision_function(X))
    assert type(model_from_params(p)) is LogisticModel


def test_from_params_never_sees_data():
    X = pd.DataFrame({"age": [40.0, 60.0, 80.0], "smoker": [0, 1, 0]})
    schema = FeatureSchema.infer(X).fit(X)
    p = ModelParams.from_dict("logistic", schema, {"intercept": -1.0, "age": 2.0, "smoker": 0.5},
                              metadata={"source": "generated", "provenance": [{"task_id": "a", "weight": 1.0}]})
    m = LogisticModel.from_params(p)
    assert list(m.classes_) == [0, 1]
    z = -1.0 + 2.0 * schema.transform(X)[:, 0] + 0.5 * X["smoker"].to_numpy()
    assert np.allclose(m.decision_function(X), z)
    assert m.provenance == [{"task_id": "a", "weight": 1.0}]
    assert m.explain().provenance is not None


def test_string_labels_are_kept(task):
    X, y = task
    labels = np.where(y == 1, "disease", "healthy")
    m = LogisticModel().fit(X, labels)
    assert list(m.classes_) == ["disease", "healthy"]
    assert set(m.predict(X)) <= {"disease", "healthy"}
    again = LogisticModel.from_params(m.to_params())
    assert list(again.classes_) == ["disease", "healthy"]
    assert np.array_equal(again.predict(X), m.predict(X))


@pytest.mark.parametrize("penalty", ["l1", "elasticnet", None])
def test_penalties_use_non_deprecated_sklearn_api(task, penalty):
    X, y = task
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        m = LogisticModel(penalty=penalty, C=0.05 if penalty else 1.0).fit(X, y)
    if penalty == "l1":
        assert np.sum(m.coef_ == 0) >= 1
        assert m.to_params().std is None
    assert m.to_params().metadata["penalty"] == penalty


def test_class_weight_balanced_shifts_intercept(task):
    X, y = task
    plain = LogisticModel().fit(X, y)
    balanced = LogisticModel(class_weight="balanced").fit(X, y)
    assert not np.allclose(plain.intercept_, balanced.intercept_)
    assert balanced.to_params().metadata["class_weight"] == "balanced"


def test_coefficients_per_unit_and_per_sd_are_consistent(task, fitted):
    X, _ = task
    std = fitted.coefficients("standardised").set_index("term")
    orig = fitted.coefficients("original").set_index("term")
    sd = fitted.schema_.scales_["chol"]
    assert np.isclose(orig.loc["chol", "coef"] * sd, std.loc["chol", "coef"])
    assert np.isclose(orig.loc["chol", "odds_ratio"], np.exp(std.loc["chol", "coef"] / sd))
    assert np.isclose(orig.loc["chol", "odds_ratio_per_sd"], np.exp(std.loc["chol", "coef"]))
    assert np.isclose(orig.loc["chol", "odds_ratio_per_sd"], orig.loc["chol", "odds_ratio"] ** sd)
    # binary, one-hot and missing-indicator terms are unchanged
    for term in ("sex", "cp[asymptomatic]", "age__missing"):
        assert np.isclose(orig.loc[term, "coef"], std.loc[term, "coef"])
    # the original-scale table reproduces the model's log-odds on raw values
    rows = X.dropna().head(20)
    z = orig.loc["intercept", "coef"] + sum(
        orig.loc[c, "coef"] * rows[c] for c in ("age", "chol", "sex"))
    z = z + sum(orig.loc[f"cp[{c}]", "coef"] * (rows["cp"] == c) for c in fitted.schema_.categories_["cp"])
    assert np.allclose(z, fitted.decision_function(rows))
    # intervals
    assert {"std", "ci_low", "ci_high"} <= set(std.columns)
    assert (std["ci_low"] < std["coef"]).all() and (std["coef"] < std["ci_high"]).all()
    # the intercept's odds are the reference patient's (test below), not exp(coef)
    assert std.loc["intercept", "odds_ratio"] == pytest.approx(
        np.exp(std.loc["intercept", "coef_vs_reference"])
    )
    with pytest.raises(ValidationError, match="scale must be"):
        fitted.coefficients("log")


def test_laplace_sds_shrink_with_more_data():
    small = LogisticModel().fit(*make_task(100, seed=1, missing=False))
    large = LogisticModel().fit(*make_task(2000, seed=1, missing=False))
    s_small = small.coefficients().set_index("term")["std"]
    s_large = large.coefficients().set_index("term")["std"]
    assert (s_large < s_small).all()


def test_schema_argument_handling(task):
    X, y = task
    unfitted = FeatureSchema.infer(X)
    m = LogisticModel(schema=unfitted).fit(X, y)
    assert not unfitted.is_fitted and m.schema_.is_fitted  # fitted on a copy
    shared = FeatureSchema.infer(X).fit(X)
    m2 = LogisticModel(schema=shared).fit(X.iloc[:100], y[:100])
    assert m2.schema_ is shared
    # column order does not matter for DataFrames: the schema selects by name
    assert np.allclose(m2.predict_proba(X[X.columns[::-1]]), m2.predict_proba(X))


def test_numpy_input_infers_x_columns():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    y = (X[:, 0] + rng.normal(size=80) > 0).astype(int)
    m = LogisticModel().fit(X, y)
    assert m.schema_.names == ["x0", "x1", "x2"] and not hasattr(m, "feature_names_in_")
    assert m.predict(X).shape == (80,)
    assert np.allclose(m.predict_proba(pd.DataFrame(X, columns=["x0", "x1", "x2"])), m.predict_proba(X))


def test_registry():
    assert MODEL_FAMILIES["logistic"] is LogisticModel and MODEL_FAMILIES["gam"] is GAMModel
    with pytest.raises(ValidationError, match="already registered"):
        register_model_family("logistic", GAMModel)
    with pytest.raises(ValidationError, match="has no"):
        register_model_family("broken", object)

    with pytest.raises(ValidationError, match="GAMModel writes 'gam' parameters"):
        register_model_family("logistic", GAMModel, overwrite=True)

    @register_model_family("logistic-copy")
    class Copy(LogisticModel):
        _kind = ""  # no family of its own yet: registration gives it this name

    assert Copy._kind == "logistic-copy"

    try:
        assert MODEL_FAMILIES["logistic-copy"] is Copy
    finally:
        del MODEL_FAMILIES["logistic-copy"]


# ---------------------------------------------------------------------- bad input, both families
FAMILIES = [pytest.param(LogisticModel, {}, id="logistic"), pytest.param(GAMModel, FAST_GAM, id="gam")]


@pytest.fixture(scope="module")
def fitted_models(task):
    X, y = task
    return {"logistic": LogisticModel().fit(X, y), "gam": GAMModel(**FAST_GAM).fit(X, y)}


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("family", ["logistic", "gam"])
def test_predict_schema_mismatch_names_columns(task, fitted_models, family):
    X, _ = task
    m = fitted_models[family]
    with pytest.raises(ValidationError, match=r"missing: \['chol'\]"):
        m.predict_proba(X.drop(columns="chol"))
    with pytest.raises(ValidationError, match=r"not in the schema: \['bmi'\]"):
        m.predict(X.assign(bmi=1.0))
    with pytest.raises(ValidationError, match="infinite values"):
        m.predict(X.assign(chol=np.inf))
    with pytest.raises(ValidationError, match="expecting 4 features"):
        m.predict(np.zeros((3, 5)))


@pytest.mark.parametrize("cls,kw", FAMILIES)
def test_nan_where_schema_forbids_missing(task, cls, kw):
    X, y = task
    schema = FeatureSchema([Feature("age"), Feature("sex", "binary"), Feature("chol", allow_missing=False),
                            Feature("cp", "categorical")])
    m = cls(schema=schema, **kw).fit(X, y)
    bad = X.copy()
    bad.loc[0, "chol"] = np.nan
    with pytest.raises(ValidationError, match="'chol' has 1 missing values but the schema allows none"):
        m.predict(bad)
    with pytest.raises(ValidationError, match="allows none"):
        cls(schema=schema, **kw).fit(bad, y)


@pytest.mark.parametrize("cls,kw", FAMILIES)
def test_bad_targets(task, cls, kw):
    X, y = task
    with pytest.raises(ValidationError, match=r"only one class \(1\)"):
        cls(**kw).fit(X, np.ones(len(X), dtype=int))
    y_nan = y.astype(float)
    y_nan[:3] = np.nan
    with pytest.raises(ValidationError, match="3 missing \\(NaN\\) labels"):
        cls(**kw).fit(X, y_nan)
    with pytest.raises(ValidationError, match="Only binary classification is supported"):
        cls(**kw).fit(X, np.arange(len(X)) % 3)
    with pytest.raises(ValidationError, match="Unknown label type"):
        cls(**kw).fit(X, np.linspace(0, 1, len(X)))
    with pytest.raises(ValidationError, match="300 rows but y has 10 labels"):
        cls(**kw).fit(X, y[:10])
    with pytest.raises(ValueError, match="requires y to be passed"):
        cls(**kw).fit(X, None)


@pytest.mark.parametrize("cls,kw", FAMILIES)
def test_from_params_rejects_wrong_kind_and_names(cls, kw):
    X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
    schema = FeatureSchema.infer(X).fit(X)
    other = "gam" if cls is LogisticModel else "logistic"
    with pytest.raises(ValidationError, match=f"needs '{cls._kind}' parameters, got '{other}'"):
        cls.from_params(ModelParams.zeros(other, schema))
    payload = ModelParams.zeros(cls._kind, schema).to_dict()
    payload["values"]["weight"] = 1.0
    with pytest.raises(ValidationError, match=r"unknown parameters \(not in the schema\): \['weight'\]"):
        cls.from_params(payload)
    with pytest.raises(ValidationError, match="needs ModelParams"):
        cls.from_params([1.0, 2.0])


@pytest.mark.parametrize("cls,kw", FAMILIES)
def test_unfitted_and_invalid_parameters(task, cls, kw):
    X, y = task
    with pytest.raises(NotFittedError):
        cls(**kw).predict(X)
    with pytest.raises(InvalidParameterError):
        cls(schema="not a schema").fit(X, y)


def test_original_scale_indicator_rows_have_no_unit():
    """coefficients("original") labelled the chol__missing row "mg/dL", reading as "per mg/dL";
    an indicator is a 0->1 change, as to_frame() says."""
    from ragim.schema import Feature, FeatureSchema

    rng = np.random.default_rng(0)
    chol = rng.normal(240, 45, 300)
    chol[rng.random(300) < 0.2] = np.nan
    X = pd.DataFrame({"chol": chol, "smoker": rng.integers(0, 2, 300)})
    y = (rng.random(300) < 0.4).astype(int)
    schema = FeatureSchema([Feature("chol", unit="mg/dL"), Feature("smoker", "binary", unit="0/1")])
    m = LogisticModel(schema=schema).fit(X, y)
    for scale in ("original", "standardised"):
        t = m.coefficients(scale).set_index("term")
        assert t.loc["chol", "unit"] == "mg/dL"
        assert t.loc["chol__missing", "unit"] == "" and t.loc["smoker", "unit"] == ""
    frame = m.explain().to_frame().set_index("term")
    assert frame.loc["chol__missing", "unit"] == ""


def test_coefficients_odds_ratio_of_a_level_is_against_its_reference(task, fitted):
    """coefficients() gave exp(one-hot coefficient) as a level's odds ratio, unlike every
    explanation; coef stays the parameter (it reproduces the log-odds)."""
    t = fitted.coefficients().set_index("term")
    table = fitted.explain().table(missing=True).set_index("term")
    ref = f"cp[{fitted.schema_.categories_['cp'][0]}]"
    for term in table.index[table["feature"] == "cp"]:
        assert t.loc[term, "coef_vs_reference"] == pytest.approx(table.loc[term, "coef"])
        assert t.loc[term, "odds_ratio"] == pytest.approx(table.loc[term, "odds_ratio"])
        assert t.loc[term, "coef"] == pytest.approx(fitted.to_params()[term])
    assert t.loc[ref, "odds_ratio"] == 1.0
    assert t.loc["sex", "odds_ratio"] == pytest.approx(np.exp(t.loc["sex", "coef"]))


@pytest.mark.parametrize("scale", ["standardised", "original"])
def test_coefficients_odds_ratio_interval_is_the_odds_ratios_own(fitted, scale):
    """coefficients() put a level's odds ratio (against its reference level) beside ci_low /
    ci_high of its one-hot coefficient: exp(ci) of ward[icu] was 0.61-6.48 around an odds ratio
    of 3.37 whose own interval is 1.89-6.02, and the reference level read OR 1 with an interval
    of 0.18-1.91. or_ci_low / or_ci_high now give the odds ratio's interval, as the CSV export
    (coefficients_frame) does."""
    from ragim.export import coefficients_frame

    t = fitted.coefficients(scale).set_index("term")
    csv = coefficients_frame(fitted.to_params()).set_index("term")
    ref = f"cp[{fitted.schema_.categories_['cp'][0]}]"
    for term in csv.index[csv["type"] == "categorical"]:
        assert t.loc[term, "or_ci_low"] == pytest.approx(csv.loc[term, "or_ci_low"])
        assert t.loc[term, "or_ci_high"] == pytest.approx(csv.loc[term, "or_ci_high"])
        assert t.loc[term, "or_ci_low"] <= t.loc[term, "odds_ratio"] <= t.loc[term, "or_ci_high"]
    assert (t.loc[ref, "or_ci_low"], t.loc[ref, "or_ci_high"]) == (1.0, 1.0)
    level = "cp[asymptomatic]"  # its one-hot interval is not the odds ratio's
    assert t.loc[level, "or_ci_low"] != pytest.approx(np.exp(t.loc[level, "ci_low"]))
    # a continuous feature: per SD, or per unit on the original scale
    per = "odds_ratio_per_sd" if scale == "standardised" else "odds_ratio_per_unit"
    want = csv.loc["chol", "or_ci_low"] ** (1 if per == "odds_ratio_per_sd" else 1 / csv.loc["chol", "scale"])
    assert t.loc["chol", "or_ci_low"] == pytest.approx(want)
    assert t.loc["chol", "odds_ratio"] == pytest.approx(csv.loc["chol", per])


def test_coefficients_intercept_effect_is_the_reference_patients(fitted, task):
    """coefficients() gave the intercept's odds as exp(coef), the parameter: a patient with no
    categorical level at all (exp(0.293) = 1.34 on the ward model of repro 06), and on the
    original scale one whose every continuous value is 0 (age 0, cholesterol 0), while
    explain() prints the reference patient's log-odds (-0.237). Its coef_vs_reference, odds_ratio
    and odds-ratio interval are now the reference patient's, on both scales; coef stays the
    parameter."""
    value, sd, _ = fitted.explain().reference_intercept()
    X, _ = task
    reference = pd.DataFrame({
        "age": [fitted.schema_.means_["age"]], "sex": [0], "chol": [fitted.schema_.means_["chol"]],
        "cp": [fitted.schema_.categories_["cp"][0]],
    })
    assert value == pytest.approx(fitted.decision_function(reference)[0])
    for scale in ("standardised", "original"):
        row = fitted.coefficients(scale).set_index("term").loc["intercept"]
        assert row["coef_vs_reference"] == pytest.approx(value)
        assert row["odds_ratio"] == pytest.approx(np.exp(value))
        assert (row["or_ci_low"], row["or_ci_high"]) == pytest.approx(
            (np.exp(value - 1.959963984540054 * sd), np.exp(value + 1.959963984540054 * sd))
        )
        assert row["odds_ratio"] != pytest.approx(np.exp(row["coef"]))


def test_an_unpenalised_fit_that_separates_the_classes_warns_and_gives_no_interval():
    """penalty=None on rows the age separates completely: the fit stopped at an arbitrary point
    (OR 4e+107 per SD) with a finite, huge covariance, so the explanation printed "95% CI
    0-1.01e+304" as an interval, silently. The docs said params.std stays None then; it now
    does, with a DataWarning saying why."""
    from ragim.errors import DataWarning

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 100), "ward": rng.choice(["a", "b"], 100)})
    y = (X["age"] > 60).astype(int)
    with pytest.warns(DataWarning, match="separate the classes completely") as caught:
        model = LogisticModel(penalty=None).fit(X, y)
    assert {w.filename for w in caught if issubclass(w.category, DataWarning)} == {__file__}  # the user's line
    assert model.to_params().std is None
    assert model.explain().to_frame()["ci_low"].isna().all()
    with warnings.catch_warnings():  # one row the other way: not separated, intervals kept
        warnings.simplefilter("error", DataWarning)
        y2 = y.copy()
        y2.iloc[int(np.argmax(X["age"].to_numpy()))] = 0
        assert LogisticModel(penalty=None).fit(X, y2).to_params().std is not None
        assert LogisticModel().fit(X, y).to_params().std is not None  # penalised: finite


def test_an_unpenalised_fit_that_nearly_separates_the_classes_warns_as_r_does():
    """Quasi-complete separation: no row with the flag has the event, the rest overlap. The
    flag's coefficient runs off (SD in the hundreds) while the fit looked ordinary; R's glm
    warns that fitted probabilities are numerically 0 or 1, and so does ragim now."""
    from ragim.errors import DataWarning

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"age": rng.normal(60, 10, 300), "flag": (rng.random(300) < 0.15).astype(int)})
    y = (rng.random(300) < 1 / (1 + np.exp(-(X["age"] - 60) / 10))).astype(int)
    y[X["flag"] == 1] = 0
    with pytest.warns(DataWarning, match=r"row\(s\) a probability within 1e-8 of 0 or 1.*quasi-complete") as caught:
        params = LogisticModel(penalty=None).fit(X, y).to_params()
    assert {w.filename for w in caught if issubclass(w.category, DataWarning)} == {__file__}
    assert params.std is not None and params.std[params.names.index("flag")] > 20
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        LogisticModel().fit(X, y)  # penalised: finite, no warning
