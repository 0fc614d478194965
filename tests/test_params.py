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
