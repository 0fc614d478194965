import json

import numpy as np
import pandas as pd
import pytest

from ragim.errors import ArtifactError, ValidationError
from ragim.params import ModelParams, param_names, stack_params
from ragim.schema import FeatureSchema


@pytest.fixture
def schema(frame):
    return FeatureSchema.infer(frame).fit(frame)


def test_layouts(schema):
    assert param_names("logistic", schema) == ["intercept", *schema.design_names]
    assert param_names("gam", schema) == ["intercept", *schema.gam_names]
    with pytest.raises(ValidationError, match="unknown model kind 'tree'"):
        param_names("tree", schema)


def test_name_keyed_access_and_json_round_trip(schema):
    rng = np.random.default_rng(0)
    p = ModelParams("logistic", schema, rng.normal(size=len(param_names("logistic", schema))),
                    std=np.full(len(param_names("logistic", schema)), 0.1),
                    metadata={"source": "fit", "task_id": "t"})
    assert p["sex"] == p.vector[p.names.index("sex")]
    again = ModelParams.from_json(p.to_json())
    assert again == p
    assert json.loads(p.to_json(include_schema=False))["values"]["sex"] == p["sex"]
    assert ModelParams.from_json(p.to_json(include_schema=False), schema=schema) == p


def test_gam_feature_terms(schema):
    p = ModelParams("gam", schema, np.arange(len(param_names("gam", schema)), dtype=float))
    k = schema.names.index("chol")
    start = 1 + schema.gam_offsets[k]
    assert np.array_equal(p.feature_terms("chol"), p.vector[start:start + len(schema.bin_labels("chol"))])


def test_save_load_and_damage(schema, tmp_path):
    p = ModelParams.zeros("gam", schema, intercept=-0.5, metadata={"source": "generated"})
    path = p.save(tmp_path / "p")
    assert ModelParams.load(path) == p
    (path / "params.npz").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="checksum mismatch for 'params.npz'"):
        ModelParams.load(path)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"intercept": 0.0}, "missing parameters: ['age'"),
        ({"bogus": 1.0}, "unknown parameters (not in the schema): ['bogus']"),
    ],
)
def test_from_dict_names_missing_and_extra(schema, values, message):
    with pytest.raises(ValidationError) as err:
        ModelParams.from_dict("logistic", schema, values)
    assert message in str(err.value)


def test_rejects_non_finite_and_wrong_length(schema):
    n = len(param_names("logistic", schema))
    vec = np.zeros(n)
    vec[2] = np.nan
    with pytest.raises(ValidationError, match=r"non-finite values for \['age__missing'\]"):
        ModelParams("logistic", schema, vec)
    with pytest.raises(ValidationError, match=f"need {n} values"):
        ModelParams("logistic", schema, np.zeros(n + 1))
    with pytest.raises(ValidationError, match="'sex' must be finite"):
        ModelParams.from_dict("logistic", schema, {"sex": float("inf")}, fill_missing=0.0)
    with pytest.raises(ValidationError, match="not valid JSON"):
        ModelParams.from_json("{oops")
    with pytest.raises(ValidationError, match="fitted FeatureSchema"):
        ModelParams("logistic", FeatureSchema.infer(pd.DataFrame({"a": [1.0]})), [0, 0])


def test_stack(schema):
    a = ModelParams.zeros("logistic", schema)
    b = ModelParams.zeros("logistic", schema, intercept=1.0)
    assert stack_params([a, b]).shape == (2, len(a))
    with pytest.raises(ValidationError, match="differ in kind or schema"):
        stack_params([a, ModelParams.zeros("gam", schema)])


@pytest.mark.parametrize("kind", ["logistic", "gam"])
def test_log_odds_is_intercept_plus_design_times_terms(schema, frame, kind):
    from scipy.special import expit

    from ragim.evaluate import params_proba
    from ragim.models import model_from_params
    from ragim.params import design_matrix

    rng = np.random.default_rng(1)
    p = ModelParams(kind, schema, rng.normal(size=len(param_names(kind, schema))))
    z = p.log_odds(frame)
    assert z.shape == (len(frame),)
    np.testing.assert_allclose(z, p.intercept + design_matrix(kind, schema, frame) @ p.terms, rtol=1e-12, atol=1e-12)
    # every consumer predicts from the same log-odds
    np.testing.assert_array_equal(model_from_params(p).decision_function(frame), z)
    np.testing.assert_array_equal(params_proba(p, frame), expit(z))


# ------------------------------------------------------------------ correlated errors
def _sex_and_age(rng, n, *, coded):
    """Rows where men have 0.8 higher log-odds; sex as F/M text (one-hot) or as 0/1."""
    male = rng.random(n) < 0.5
    age = rng.normal(60, 10, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.5 + 0.8 * male + 0.03 * (age - 60))))).astype(int)
    sex = np.where(male, "M", "F") if coded == "text" else male.astype(int)
    return pd.DataFrame({"sex": sex, "age": age}), y


def test_a_contrast_of_one_hot_levels_has_the_sd_of_the_same_effect_coded_0_1():
    """An outside user saw 'M vs F: OR 2.33 (0.33-16.6)' for sex coded F/M and (1.86-2.86) for
    the same data coded 0/1: the two one-hot SDs were combined as if independent, though the
    levels' errors are strongly correlated. With the fit's correlations the contrast's SD is that
    of the 0/1 coefficient, whatever the coding."""
    from ragim.explain import explain_params
    from ragim.models import LogisticModel

    rng = np.random.default_rng(0)
    X, y = _sex_and_age(rng, 800, coded="text")
    onehot = LogisticModel(C=1e4).fit(X, y).to_params()
    binary = LogisticModel(C=1e4).fit(X.assign(sex=(X["sex"] == "M").astype(int)), y).to_params()
    assert onehot.correlation is not None and onehot.correlation.shape == (len(onehot),) * 2
    row = explain_params(onehot).table().set_index("term").loc["sex[M]"]
    assert row["comparison"] == "M vs F"
    assert row["std"] == pytest.approx(binary.std[binary.names.index("sex")], rel=0.05)
    independent = onehot.replace(correlation=None)
    wide = explain_params(independent).table().set_index("term").loc["sex[M]", "std"]
    assert wide > 3 * row["std"]  # what the independent combination reported


def test_correlation_is_checked_kept_by_copies_and_saved(tmp_path):
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 1.0]})
    schema = FeatureSchema.infer(X).fit(X)
    R = np.array([[1.0, 0.2, -0.5], [0.2, 1.0, 0.0], [-0.5, 0.0, 1.0]])
    p = ModelParams("logistic", schema, [0.1, 0.2, 0.3], std=[1.0, 2.0, 3.0], correlation=R)
    w = np.array([1.0, 0.0, 1.0])
    assert p.contrast_std(w) == pytest.approx(np.sqrt(1 + 9 - 2 * 0.5 * 3))
    assert p.replace(correlation=None).contrast_std(w) == pytest.approx(np.sqrt(10))
    assert np.isnan(p.replace(std=None).contrast_std(w))
    # a copy keeps the correlations while it keeps the SDs; new SDs describe other errors
    assert p.replace(vector=[0.0, 0.0, 0.0]).correlation is not None
    assert p.replace(std=[1.0, 1.0, 1.0]).correlation is None
    assert ModelParams.from_json(p.to_json()) == p  # exactly, as values and SDs are
    assert ModelParams.load(p.save(tmp_path / "p")) == p
    for bad, match in [
        (R[:2, :2], r"must be \(3, 3\)"),
        (R * 2, "unit diagonal"),
        (np.triu(R), "symmetric"),
        ("x", "matrix of real numbers"),
    ]:
        with pytest.raises(ValidationError, match=match):
            ModelParams("logistic", schema, [0.1, 0.2, 0.3], std=[1.0, 2.0, 3.0], correlation=bad)
    not_psd = np.eye(3)
    not_psd[0, 1] = not_psd[1, 0] = not_psd[1, 2] = not_psd[2, 1] = 0.99
    not_psd[0, 2] = not_psd[2, 0] = -0.99  # each entry is fine; together they are impossible
    for bad, match in [
        (not_psd, "not positive semi-definite"),
        ([["1", "0", "0"], ["0", "1", "0"], ["0", "0", "1"]], "real numbers"),
        (np.eye(3) + 0j, "real numbers"),
    ]:
        with pytest.raises(ValidationError, match=match):
            ModelParams("logistic", schema, [0.1, 0.2, 0.3], std=[1.0, 2.0, 3.0], correlation=bad)
    from ragim.params import std_and_correlation

    for bad, match in [("x", "real numbers"), ([[1, 5], [5, 1]], "positive semi-definite"),
                       ([[1, 0.5], [0.4, 1]], "symmetric")]:
        with pytest.raises(ValidationError, match=match):
            std_and_correlation(bad)
    with pytest.raises(ValidationError, match=r"got shape \(3, 1\)"):
        p.contrast_std([[1.0], [0.0], [1.0]])
    with pytest.raises(ValidationError, match="correlation needs std"):
        ModelParams("logistic", schema, [0.1, 0.2, 0.3], correlation=R)
    with pytest.raises(ValidationError, match="3 finite weights"):
        p.contrast_std([1.0, 0.0])


def test_adaptation_keeps_the_correlations_it_has_grounds_for():
    """An outside user saw `ragim adapt` keep a model as it was yet lose its correlations, so
    the contrast intervals widened about 10x again."""
    from ragim.estimator import adapt_prior
    from ragim.explain import explain_params
    from ragim.models import LogisticModel

    rng = np.random.default_rng(1)
    X, y = _sex_and_age(rng, 800, coded="text")
    prior = LogisticModel(C=1e4).fit(X, y).to_params()
    few_X, few_y = _sex_and_age(rng, 60, coded="text")
    kept, _ = adapt_prior(prior, few_X, few_y, adaptation="zero-shot", warn=False)
    np.testing.assert_array_equal(kept.correlation, prior.correlation)
    shifted, _ = adapt_prior(prior, few_X, few_y, adaptation="intercept", warn=False)
    np.testing.assert_allclose(shifted.correlation[1:, 1:], prior.correlation[1:, 1:], atol=1e-12)
    np.testing.assert_allclose(shifted.std[1:], prior.std[1:])
    # the intercept refitted to the rows' level given the terms moves with their errors
    assert shifted.correlation[0, 1:].any()
    for name in ("map", "prior"):  # Laplace fits carry their own posterior correlations
        fitted, _ = adapt_prior(prior, few_X, few_y, adaptation=name, warn=False)
        assert fitted.correlation is not None and fitted.correlation[0, 1] != 0
    sd = {p_.metadata["adaptation"]: explain_params(p_).table().set_index("term").loc["sex[M]", "std"]
          for p_ in (kept, shifted)}
    assert sd["zero-shot"] == pytest.approx(sd["intercept"]) and sd["zero-shot"] < 0.5


def test_a_parameter_file_missing_an_sd_is_refused_not_read_as_exact():
    """A JSON whose std lacks one parameter loaded with SD 0 there: an interval of zero width
    (found by a stranger test editing a saved model)."""
    X = pd.DataFrame({"age": [40.0, 60.0, 80.0], "sex": [0, 1, 0]})
    schema = FeatureSchema.infer(X).fit(X)
    p = ModelParams.from_dict("logistic", schema, {"intercept": -1.0, "age": 0.5, "sex": 0.2},
                              std={"intercept": 0.3, "age": 0.1, "sex": 0.2})
    payload = json.loads(p.to_json())
    assert ModelParams.from_json(json.dumps(payload)) == p
    del payload["std"]["age"]
    with pytest.raises(ValidationError, match=r"std has no value for: \['age'\]"):
        ModelParams.from_json(json.dumps(payload))
    payload["std"].update(age=0.1, weight=0.4)
    with pytest.raises(ValidationError, match=r"std names parameters not in the schema: \['weight'\]"):
        ModelParams.from_json(json.dumps(payload))


def test_loading_a_models_json_file_says_how_to_save_it_as_a_model(tmp_path):
    """``ragim generate --json > m.json`` writes the model's JSON, but ``ragim explain m.json``
    (ModelParams.load) said only "is not a ragim artifact: it is a file, not a directory"; it
    now says the file is a model's JSON and how to save it as one, and that advice works."""
    X = pd.DataFrame({"age": [40.0, 60.0, 80.0], "smoker": [0, 1, 1]})
    p = ModelParams.from_dict(
        "logistic", FeatureSchema.infer(X).fit(X), {"intercept": -1.0, "age": 0.5, "smoker": 0.7}
    )
    path = tmp_path / "m.json"
    path.write_text(p.to_json())
    with pytest.raises(ArtifactError, match=r"m\.json is a model written as JSON .*--save DIR"):
        ModelParams.load(path)
    other = tmp_path / "other.json"
    other.write_text('{"foo": 1}')
    with pytest.raises(ArtifactError, match="is not a ragim artifact: it is a file"):
        ModelParams.load(other)
    saved = ModelParams.from_json(path.read_text()).save(tmp_path / "m")
    np.testing.assert_array_equal(ModelParams.load(saved).vector, p.vector)
