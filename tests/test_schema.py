import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from ragim.errors import ValidationError
from ragim.schema import Feature, FeatureSchema


def test_infer_types_and_design_layout(frame):
    schema = FeatureSchema.infer(frame, units={"age": "years", "chol": "mg/dL"}).fit(frame)
    assert [f.type for f in schema.features] == ["continuous", "binary", "continuous", "categorical"]
    assert schema["chol"].unit == "mg/dL"
    assert schema.design_names == [
        "age", "age__missing", "sex", "chol", "cp[asymptomatic]", "cp[atypical]", "cp[typical]",
    ]


def test_transform_imputes_standardises_and_flags_missing(frame):
    schema = FeatureSchema.infer(frame).fit(frame)
    Z = schema.transform(frame)
    names = schema.design_names
    age, miss = Z[:, names.index("age")], Z[:, names.index("age__missing")]
    assert np.allclose(age.mean(), 0, atol=1e-12) and np.allclose(age.std(), 1)
    assert np.array_equal(miss, frame["age"].isna().to_numpy().astype(float))
    med = frame["age"].median()
    expected = (med - schema.means_["age"]) / schema.scales_["age"]
    assert np.allclose(age[frame["age"].isna().to_numpy()], expected)
    assert np.allclose(Z[:, names.index("sex")], frame["sex"])  # binary stays 0/1
    onehot = Z[:, [names.index(n) for n in names if n.startswith("cp[")]]
    assert np.all(onehot.sum(1) == 1)


def test_unknown_category_gives_zeros(frame):
    schema = FeatureSchema.infer(frame).fit(frame)
    new = frame.head(1).assign(cp="never-seen")
    row = schema.transform(new)[0]
    assert all(row[schema.design_names.index(n)] == 0 for n in schema.design_names if n.startswith("cp["))


def test_fitted_only_on_given_data(frame):
    a = FeatureSchema.infer(frame).fit(frame.iloc[:30])
    b = FeatureSchema.infer(frame).fit(frame.iloc[30:])
    assert a.means_["chol"] != b.means_["chol"]
    assert a.means_["chol"] == pytest.approx(frame["chol"].iloc[:30].mean())


def test_gam_bins_cover_every_value(frame):
    schema = FeatureSchema.infer(frame).fit(frame)
    idx = schema.bin_indices(frame)
    for k, (_name, labels) in enumerate(schema.gam_layout):
        assert idx[:, k].min() >= 0 and idx[:, k].max() < len(labels)
    assert schema.bin_labels("age")[-1] == "missing"
    age_bins = idx[:, 0]
    assert np.all(age_bins[frame["age"].isna().to_numpy()] == len(schema.bin_labels("age")) - 1)
    assert len(schema.gam_names) == sum(len(lab) for _, lab in schema.gam_layout)


def test_json_round_trip(frame):
    schema = FeatureSchema.infer(frame, units={"age": "years"}).fit(frame)
    again = FeatureSchema.from_json(schema.to_json())
    assert again == schema and again.fingerprint() == schema.fingerprint()
    assert np.array_equal(again.transform(frame), schema.transform(frame))
    unfitted = FeatureSchema.infer(frame)
    assert FeatureSchema.from_json(unfitted.to_json()) == unfitted


@pytest.mark.parametrize("stat", ["medians", "means", "scales", "bin_edges"])
def test_fitted_state_missing_a_feature_is_refused_on_load(frame, stat):
    """A fitted statistic renamed or dropped in schema.json (e.g. a damaged artifact) is a
    ValidationError at load, not a KeyError later when the design layout is built."""
    d = FeatureSchema.infer(frame).fit(frame).to_dict()
    d["fitted"][stat]["chol_renamed"] = d["fitted"][stat].pop("chol")
    with pytest.raises(ValidationError, match="(?s)fitted schema state is inconsistent.*'chol'"):
        FeatureSchema.from_dict(d)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda X: X.drop(columns=["chol"]), "columns required by the schema are missing: ['chol']"),
        (lambda X: X.assign(extra=1.0), "columns not in the schema: ['extra']"),
        (lambda X: X.assign(chol=np.inf), "column 'chol' has infinite values"),
        (lambda X: X.assign(chol="high"), "column 'chol' (continuous) has non-numeric values"),
        (lambda X: X.assign(sex=2), "binary column 'sex' has values other than 0/1"),
    ],
)
def test_bad_frames_name_the_problem(frame, mutate, message):
    schema = FeatureSchema.infer(frame).fit(frame)
    with pytest.raises(ValidationError) as err:
        schema.transform(mutate(frame))
    assert message in str(err.value)


def test_duplicated_columns_and_disallowed_nan(frame):
    schema = FeatureSchema([Feature("age", allow_missing=False), Feature("sex", "binary")])
    X = pd.DataFrame({"age": [1.0, np.nan], "sex": [0, 1]})
    with pytest.raises(ValidationError, match="'age' has 1 missing values but the schema allows none"):
        schema.fit(X)
    dup = pd.DataFrame([[1.0, 0, 1.0]], columns=["age", "sex", "age"])
    with pytest.raises(ValidationError, match="duplicated columns: \\['age'\\]"):
        schema.validate_frame(dup)


def test_bad_schema_definitions():
    with pytest.raises(ValidationError, match="duplicate feature names"):
        FeatureSchema([Feature("a"), Feature("a")])
    with pytest.raises(ValidationError, match="unknown type 'ordinal'"):
        Feature("a", "ordinal")
    with pytest.raises(ValidationError, match="not fitted"):
        FeatureSchema([Feature("a")]).transform(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(ValidationError, match="not a valid FeatureSchema"):
        FeatureSchema.from_dict({"nothing": 1})
    with pytest.raises(ValidationError, match="not valid JSON"):
        FeatureSchema.from_json("{")


def test_a_column_that_never_varies_or_is_always_blank_warns_at_inference():
    import warnings

    from ragim.errors import DataWarning

    rng = np.random.default_rng(0)
    tables = [pd.DataFrame({"age": rng.normal(60, 9, 30), "hospital": 5, "note": np.nan}) for _ in range(2)]
    with pytest.warns(DataWarning, match=r"'hospital' \(always 5\), 'note' \(blank\) never vary") as rec:
        FeatureSchema.infer(tables)
    assert not any("'age'" in str(w.message) for w in rec)
    with warnings.catch_warnings():  # a column that varies between tables is fine
        warnings.simplefilter("error", DataWarning)
        FeatureSchema.infer([tables[0].drop(columns="note"), tables[1].assign(hospital=6).drop(columns="note")])


def test_fitted_range_is_kept_and_schemas_saved_without_it_load_unchanged(frame):
    schema = FeatureSchema.infer(frame).fit(frame)
    age = frame["age"].dropna()
    assert schema.ranges_["age"] == [float(age.min()), float(age.max())]
    again = FeatureSchema.from_json(schema.to_json())
    assert again.ranges_ == schema.ranges_
    # a schema saved before ranges were kept: same JSON, same fingerprint, a mean +- 3 SD range
    d = json.loads(schema.to_json())
    del d["fitted"]["ranges"]
    old_json = json.dumps(d, sort_keys=True, allow_nan=False)
    old = FeatureSchema.from_json(old_json)
    assert old.ranges_ == {} and old.to_json() == old_json
    assert old.fingerprint() == hashlib.sha256(old_json.encode()).hexdigest()[:16]
    assert "age" in old.missing_codes(pd.DataFrame({**frame.iloc[:1].to_dict("list"), "age": [-9]}))
    d["fitted"]["ranges"] = {"age": [80.0, 20.0]}
    with pytest.raises(ValidationError, match="fitted range of 'age'"):
        FeatureSchema.from_dict(d)


def test_a_nines_code_below_a_never_negative_column_is_flagged_at_any_distance():
    """-9 for an unknown age in months (0-191, robust SD about 30) lies only 0.3 SD below the
    column, so the distance rule missed it; -9, -99, ... below a never-negative column are codes.
    -1 in a column that only happened to stay positive (ST depression) keeps the distance rule."""
    import warnings as w

    from ragim.schema import missing_codes

    rng = np.random.default_rng(0)
    months = pd.Series(np.r_[rng.integers(0, 192, 300), [-9] * 12]).astype(float)
    assert missing_codes([months]) == [(-9.0, 12)]
    st = pd.Series(np.r_[rng.gamma(1.0, 1.0, 300).round(1), [-1.0, -1.0]])
    assert missing_codes([st]) == []
    frame = pd.DataFrame({"age_months": months.clip(lower=0)})
    schema = FeatureSchema.infer(frame).fit(frame)
    assert schema.missing_codes(pd.DataFrame({"age_months": [-9.0, 40.0]})) == {
        "age_months": [(-9.0, 1)]
    }
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        FeatureSchema.infer(pd.DataFrame({"age_months": months}))
    assert any("'age_months' holds -9 in 12 row(s)" in str(c.message) for c in caught)


@pytest.mark.parametrize("kind", ["continuous", "binary", "categorical"])
def test_a_list_in_a_cell_is_refused_in_one_line_for_every_feature_type(kind):
    """A list in a cell (``explain({"age": [60.0]})``, a dict of lists where a dict of values
    is meant) failed deep inside pandas with ``TypeError: unhashable type: 'list'`` in a
    continuous or binary column; every feature type now names the column and the value."""
    X = pd.DataFrame({"age": [40.0, 60.0, 80.0], "smoker": [0, 1, 1], "ward": ["a", "b", "a"]})
    schema = FeatureSchema.infer(X).fit(X)
    name = {"continuous": "age", "binary": "smoker", "categorical": "ward"}[kind]
    row = pd.DataFrame([{"age": 50.0, "smoker": 0, "ward": "a", name: [1]}])
    with pytest.raises(ValidationError, match=rf"column '{name}' \({kind}\) holds list values"):
        schema.validate_frame(row, where="X_row")
