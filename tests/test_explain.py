import html
import json
import math

import numpy as np
import pandas as pd
import pytest

from ragim.errors import ValidationError
from ragim.explain import GlobalExplanation, LocalExplanation, Provenance, explain_params
from ragim.params import ModelParams
from ragim.plots import plot_calibration
from ragim.schema import FeatureSchema

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROV = [
    {"task_id": "cleveland-men", "description": "Predict coronary disease in men at Cleveland",
     "similarity": 0.91, "weight": 0.6},
    {"task_id": "swiss-women", "description": "Predict coronary disease in women at a Swiss clinic",
     "similarity": 0.8, "weight": 0.4, "rank": 2},
]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 80
    age = rng.normal(55, 10, n)
    age[rng.random(n) < 0.15] = np.nan
    sex = rng.integers(0, 2, n).astype(float)
    sex[3] = np.nan
    cp = rng.choice(["typical", "atypical", "asymptomatic"], n).astype(object)
    cp[5] = None
    X = pd.DataFrame({"age": age, "sex": sex, "chol": rng.normal(220, 40, n), "cp": cp})
    schema = FeatureSchema.infer(X, units={"age": "years", "chol": "mg/dL"}).fit(X)
    return X, schema


def _params(schema, kind, *, std=False, prov=False, seed=1):
    names = schema.design_names if kind == "logistic" else schema.gam_names
    rng = np.random.default_rng(seed)
    vec = rng.normal(0, 0.7, len(names) + 1)
    sd = np.abs(rng.normal(0.2, 0.05, len(vec))) if std else None
    meta = {"source": "generated" if prov else "fit"}
    if prov:
        meta["provenance"] = PROV
    return ModelParams(kind, schema, vec, std=sd, metadata=meta)


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1024
    assert path.read_bytes()[:8] == PNG_MAGIC


# ---------------------------------------------------------------------- global, logistic
@pytest.mark.parametrize("std", [False, True])
def test_logistic_frame_values(data, std):
    _, schema = data
    p = _params(schema, "logistic", std=std)
    ex = explain_params(p)
    assert isinstance(ex, GlobalExplanation)
    df = ex.to_frame()
    assert list(df["term"]) == schema.design_names
    for col in ["term", "feature", "role", "coef", "std", "ci_low", "ci_high", "odds_ratio_per_sd",
                "coef_per_unit", "odds_ratio_per_unit", "unit", "model_coef", "model_std"]:
        assert col in df.columns
    np.testing.assert_allclose(df["model_coef"], p.terms)  # the parameters, to rebuild the model
    # the effect: the parameter, but a categorical level (or cp's missing indicator) against the
    # reference level, as table() says; every odds ratio is exp(coef)
    ref = p[f"cp[{schema.categories_['cp'][0]}]"]
    effect = np.where(df["feature"] == "cp", p.terms - ref, p.terms)
    np.testing.assert_allclose(df["coef"], effect, atol=1e-12)
    np.testing.assert_allclose(df["odds_ratio_per_sd"], np.exp(effect))
    age = df.set_index("term").loc["age"]
    assert age["unit"] == "years" and age["role"] == "value"
    assert age["coef_per_unit"] == pytest.approx(p["age"] / schema.scales_["age"])
    assert age["odds_ratio_per_unit"] == pytest.approx(math.exp(p["age"] / schema.scales_["age"]))
    ind = df[df["role"] != "value"]  # indicators: per unit is the 0->1 change
    np.testing.assert_allclose(ind["coef_per_unit"], ind["coef"])
    assert set(df.loc[df["role"] == "missing", "term"]) == {"age__missing", "sex__missing", "cp__missing"}
    if std:
        plain = (df["feature"] != "cp").to_numpy()
        z = 1.959963984540054
        np.testing.assert_allclose(df["ci_low"][plain], (p.terms - z * p.std[1:])[plain])
        np.testing.assert_allclose(df["ci_high"][plain], (p.terms + z * p.std[1:])[plain])
        np.testing.assert_allclose(df["model_std"], p.std[1:])
        table = ex.table(missing=True).set_index("term")
        for _, row in df[df["feature"] == "cp"].iloc[1:].iterrows():
            want = table.loc[row["term"]]
            assert (row["coef"], row["ci_low"], row["ci_high"]) == pytest.approx(
                (want["coef"], want["ci_low"], want["ci_high"]))
        assert ex.intercept_std == pytest.approx(p.std[0])
    else:
        assert df["std"].isna().all() and df["ci_low"].isna().all()
    assert ex.intercept == p.intercept
    assert len(ex.provenance) == 0


def test_logistic_data_is_json_and_repr(data):
    _, schema = data
    p = _params(schema, "logistic", std=False, prov=True)
    ex = explain_params(p)
    d = json.loads(json.dumps(ex.data(), allow_nan=False))
    assert d["kind"] == "logistic" and d["intercept"] == pytest.approx(p.intercept)
    assert [t["term"] for t in d["terms"]] == schema.design_names
    assert d["terms"][0]["std"] is None  # NaN becomes null
    assert [r["task_id"] for r in d["provenance"]] == ["cleveland-men", "swiss-women"]
    assert json.loads(ex.to_json()) == d
    text = repr(ex)
    assert "GlobalExplanation(logistic" in text and "cleveland-men" in text
    imp = ex.importance()
    assert list(imp.columns) == ["feature", "importance"] and set(imp["feature"]) == set(schema.names)


# ---------------------------------------------------------------------- global, GAM
@pytest.mark.parametrize("std", [False, True])
def test_gam_frame_and_importance(data, std):
    _, schema = data
    p = _params(schema, "gam", std=std)
    ex = explain_params(p)
    df = ex.to_frame()
    assert list(df["term"]) == schema.gam_names
    np.testing.assert_allclose(df["score"], p.terms)
    age = df[df["feature"] == "age"]
    obs = age[~age["is_missing_bin"]]
    np.testing.assert_allclose(obs["midpoint"], schema.bin_midpoints("age"))
    assert list(age["bin"]) == schema.bin_labels("age") and age["is_missing_bin"].iloc[-1]
    assert np.all(np.diff(np.append(obs["bin_low"], obs["bin_high"].iloc[-1])) > 0)
    assert df.loc[df["feature"] == "cp", "midpoint"].isna().all()
    imp = ex.importance().set_index("feature")["importance"]
    for f in schema.names:  # plain mean |score| over non-missing bins
        k = len(schema.bin_labels(f)) - (f in schema.missing_)
        assert imp[f] == pytest.approx(np.abs(p.feature_terms(f)[:k]).mean())
    assert list(ex.importance()["importance"]) == sorted(imp, reverse=True)
    assert df["ci_low"].notna().all() == std
    d = json.loads(json.dumps(ex.data(), allow_nan=False))
    assert d["kind"] == "gam" and len(d["terms"]) == len(schema.gam_names) and d["provenance"] == []


def test_gam_bins_no_fitted_patient_fell_in_are_not_estimable():
    """A task of patients aged 60-90 on bins shared with a 20-90 index: its GAM carries the
    60+ score down to the young bins (predictions need a value there), but no explanation may
    present that score as an estimate with a CI, nor count it in the importance."""
    from ragim.models import GAMModel

    rng = np.random.default_rng(0)
    wide = pd.DataFrame({"age": rng.uniform(20, 90, 500), "sex": rng.choice(["F", "M"], 500)})
    schema = FeatureSchema.infer(wide).fit(wide)
    X = pd.DataFrame({"age": rng.uniform(60, 90, 300), "sex": ["F"] * 300})
    y = (rng.random(300) < 1 / (1 + np.exp(-(X["age"] - 75) / 5))).astype(int)
    p = GAMModel(schema=schema, outer_bags=4, max_rounds=50).fit(X, y).to_params()
    young = [n for n, hi in zip(schema.bin_labels("age"), schema.bin_midpoints("age"), strict=False)
             if hi < 58]
    # sex[F] holds every patient: sex never varies, so its score is not estimable either
    expected = {f"age[{b}]" for b in young} | {"sex[M]", "sex[F]"}
    assert young and set(p.metadata["constant_terms"]) == expected
    df = explain_params(p).to_frame().set_index("term")
    empty = df["not_estimable"] != ""
    assert set(df.index[empty]) == set(p.metadata["constant_terms"])
    assert df.loc[empty, ["std", "ci_low", "ci_high"]].isna().all().all()
    assert df.loc[~empty & ~df["is_missing_bin"], "ci_low"].notna().all()
    assert df.loc["sex[M]", "not_estimable"].startswith("not estimable: no patient with this level")
    np.testing.assert_allclose(df["score"], p.terms)  # the scores predictions use are kept
    filled = df[~empty & (df["feature"] == "age") & ~df["is_missing_bin"]]
    imp = explain_params(p).importance().set_index("feature")["importance"]
    assert imp["age"] == pytest.approx(filled["score"].abs().mean())
    table = explain_params(p).table()
    assert f"{len(young) + 1} bins with no patient in the rows the model was fitted on" in table.attrs["note"]
    assert "1 bin holding every patient of a feature that never varies" in table.attrs["note"]
    assert (table.set_index("term")["not_estimable"] != "").sum() == len(young) + 2


# ---------------------------------------------------------------------- local
@pytest.mark.parametrize("kind", ["logistic", "gam"])
@pytest.mark.parametrize("row", [0, 3, 5])  # 3: sex missing, 5: cp missing
def test_local_contributions_sum_to_logit(data, kind, row):
    X, schema = data
    p = _params(schema, kind, std=True)
    loc = explain_params(p, X.iloc[[row]])
    assert isinstance(loc, LocalExplanation)
    df = loc.to_frame()
    assert list(df["feature"]) == schema.names
    assert loc.baseline + df["contribution"].sum() == pytest.approx(loc.logit, abs=1e-12)
    if kind == "logistic":
        model_logit = p.intercept + schema.transform(X.iloc[[row]])[0] @ p.terms
    else:
        idx = schema.bin_indices(X.iloc[[row]])[0]
        model_logit = p.intercept + sum(p.feature_terms(f)[i] for f, i in zip(schema.names, idx, strict=True))
    assert loc.logit == pytest.approx(model_logit, abs=1e-12)
    assert loc.probability == pytest.approx(1 / (1 + math.exp(-model_logit)), rel=1e-12)
    d = json.loads(json.dumps(loc.data(), allow_nan=False))
    assert d["logit"] == pytest.approx(loc.logit) and len(d["contributions"]) == len(schema.names)
    raw = X.iloc[row]
    for rec, f in zip(d["contributions"], schema.names, strict=True):
        assert rec["value"] is None if pd.isna(raw[f]) else rec["value"] == raw[f]


def test_local_logistic_folds_terms(data):
    X, schema = data
    p = _params(schema, "logistic")
    loc = explain_params(p, X.iloc[5])  # a Series works too
    terms = loc.to_frame(by="term")
    assert list(terms["term"]) == schema.design_names
    folded = terms.groupby("feature", sort=False)["contribution"].sum()
    np.testing.assert_allclose(loc.to_frame().set_index("feature")["contribution"], folded[schema.names])
    cp = loc.to_frame().set_index("feature").loc["cp", "contribution"]
    # cp is missing in row 5: its indicator fires, counted from the reference patient's level
    reference = f"cp[{schema.categories_['cp'][0]}]"
    assert cp == pytest.approx(p["cp__missing"] - p[reference])


def test_local_gam_unknown_category_and_dict_input(data):
    X, schema = data
    p = _params(schema, "gam")
    row = X.iloc[0].to_dict() | {"cp": "never-seen"}
    loc = explain_params(p, row)
    r = loc.to_frame().set_index("feature").loc["cp"]
    assert r["contribution"] == 0.0 and r["bin"] == "(unknown category)"


def test_multi_row_raises(data):
    X, schema = data
    p = _params(schema, "logistic")
    with pytest.raises(ValidationError, match="explain one patient at a time; got 3 rows"):
        explain_params(p, X.head(3))
    with pytest.raises(ValidationError, match="got 0 rows"):
        explain_params(p, X.head(0))
    with pytest.raises(ValidationError, match="not in the schema"):
        explain_params(p, X.head(1).assign(extra=1))
    with pytest.raises(ValidationError, match="needs ModelParams"):
        explain_params("not params")


# ---------------------------------------------------------------------- provenance
def test_provenance_object(data):
    _, schema = data
    prov = explain_params(_params(schema, "gam", prov=True)).provenance
    assert isinstance(prov, Provenance) and len(prov) == 2 and prov[0]["task_id"] == "cleveland-men"
    df = prov.to_frame()
    assert list(df.columns[:4]) == ["task_id", "description", "similarity", "weight"]
    assert df["rank"].tolist()[1] == 2
    assert "swiss-women" in prov._repr_html_() and "swiss-women" in repr(prov)
    assert "none" in Provenance()._repr_html_()
    with pytest.raises(ValidationError, match="task_id"):
        Provenance([{"description": "no id"}])
    with pytest.raises(ValidationError, match="list of neighbour records"):
        Provenance.from_params(_params(schema, "gam").replace(metadata={"provenance": "oops"}))


# ---------------------------------------------------------------------- pictures
@pytest.mark.parametrize("kind", ["logistic", "gam"])
@pytest.mark.parametrize("std", [False, True])
def test_plots_render(data, tmp_path, kind, std):
    X, schema = data
    p = _params(schema, kind, std=std, prov=std)
    ex = explain_params(p)
    _assert_png(ex.save_png(tmp_path / "global.png"))
    _assert_png(ex.save_png(tmp_path / "or.png", kind="odds_ratio", top=2))
    _assert_png(ex.save_png(tmp_path / "imp.png", kind="importance"))
    _assert_png(explain_params(p, X.iloc[[3]]).save_png(tmp_path / "local.png"))
    fig = ex.provenance.plot()
    fig.savefig(tmp_path / "prov.png")
    assert (tmp_path / "prov.png").stat().st_size > 1024
    with pytest.raises(ValidationError, match="kind must be"):
        ex.plot(kind="nope")


def test_plot_into_given_axes(data):
    from ragim.plots import new_figure

    _, schema = data
    fig = new_figure(8, 3)
    a1, a2 = fig.subplots(1, 2)
    assert explain_params(_params(schema, "logistic")).plot(ax=a1) is fig
    gam = explain_params(_params(schema, "gam"))
    assert gam.plot(ax=a2, top=1) is fig
    with pytest.raises(ValidationError, match="need 4 axes"):
        gam.plot(ax=a2)


def test_html_contains_terms_and_provenance(data):
    X, schema = data
    for kind in ("logistic", "gam"):
        p = _params(schema, kind, std=True, prov=True)
        h = explain_params(p)._repr_html_()
        assert "<table" in h and "cleveland-men" in h and "swiss-women" in h
        assert "data:image/png;base64," in h
        if (
            kind == "logistic"
        ):  # every term but the reference level, which the other levels are compared with
            ref = f"cp[{schema.categories_['cp'][0]}]"
            names = [n for n in schema.design_names if n != ref]
            assert ref not in h and f"vs {schema.categories_['cp'][0]}" in h
        else:
            names = schema.bin_labels("age")
        assert all(n in h for n in names)
        hl = explain_params(p, X.iloc[[0]])._repr_html_()
        assert all(f in hl for f in schema.names) and "cleveland-men" in hl
    h = explain_params(_params(schema, "logistic"))._repr_html_()
    assert "Provenance: none" in h


def test_calibration_plot(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    probs = {"good": np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1), "noise": rng.random(300)}
    fig = plot_calibration(y, probs, n_bins=8)
    fig.savefig(tmp_path / "cal.png")
    _assert_png(tmp_path / "cal.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(s.startswith("good (ECE") for s in labels)
    plot_calibration(y, probs, strategy="quantile")
    with pytest.raises(ValidationError, match="in \\[0, 1\\]"):
        plot_calibration(y, {"bad": probs["good"] + 2})
    with pytest.raises(ValidationError, match="0/1"):
        plot_calibration(y + 1, probs)


# ------------------------------------------------------------ human labels (heart disease)
@pytest.fixture(scope="module")
def heart():
    from ragim import datasets
    from ragim.models import LogisticModel

    tasks = datasets.heart_disease()
    schema = tasks.schema.copy().fit(pd.concat([t.X for t in tasks], ignore_index=True))
    t = tasks["cleveland-any_cad-all"]
    p = LogisticModel(schema=schema).fit(t.X, t.y).to_params()
    return p.replace(metadata={"provenance": PROV[::-1]}), t


def test_table_compares_levels_with_their_reference_and_folds_missing(heart):
    p, _ = heart
    ex = explain_params(p, outcome="coronary artery disease")
    t = ex.table()
    assert list(t["coef"].abs()) == sorted(t["coef"].abs(), reverse=True)  # most important first
    row = t.set_index("term").loc["cp[asymptomatic]"]
    assert (
        row["comparison"] == "asymptomatic vs typical angina" and row["label"] == "Chest-pain type"
    )
    assert row["coef"] == pytest.approx(p["cp[asymptomatic]"] - p["cp[typical angina]"])
    # the difference's SD, with the levels' correlation (a fitted model carries it)
    i, j = p.names.index("cp[asymptomatic]"), p.names.index("cp[typical angina]")
    cov = p.correlation[np.ix_([i, j], [i, j])] * np.outer(p.std[[i, j]], p.std[[i, j]])
    assert row["std"] == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    assert row["std"] < math.hypot(p.std[i], p.std[j])  # independent parts would overstate it
    assert row["or_low"] == pytest.approx(math.exp(row["coef"] - 1.959963984540054 * row["std"]))
    assert "cp[typical angina]" not in set(t["term"])  # the reference level has no row of its own
    sex = t.set_index("term").loc["sex"]
    assert sex["comparison"] == "male vs female" and sex["coef"] == pytest.approx(p["sex"])
    age = t.set_index("term").loc["age"]
    assert age["comparison"] == f"+1 SD ({p.schema.scales_['age']:.3g} years)"
    assert not t["term"].str.endswith("__missing").any()
    n_missing = sum(n.endswith("__missing") for n in p.names)
    assert t.attrs == {
        "n_total": len(t),
        "n_hidden_missing": n_missing,
        "note": f"all {len(t)} terms shown; {n_missing} missing-value indicator terms not shown",
    }
    everything = ex.table(missing=True).set_index("term")
    assert everything.loc["thal__missing", "comparison"] == "missing vs normal"
    assert everything.loc["thal__missing", "coef"] == pytest.approx(
        p["thal__missing"] - p["thal[normal]"]
    )
    # no Cleveland patient lacks a cholesterol: that indicator's effect is not estimable there
    assert everything.loc["chol__missing", "comparison"] == (
        "not estimable: never missing in the rows the model was fitted on"
    )
    assert np.isnan(everything.loc["chol__missing", ["coef", "odds_ratio"]].astype(float)).all()
    assert everything.loc["ca__missing", "comparison"].startswith("missing vs recorded")
    assert everything.loc["ca__missing", "coef"] == pytest.approx(p["ca__missing"])
    top = ex.table(5)
    assert len(top) == 5 and top.attrs["note"].startswith(
        f"5 of {len(t)} terms shown (largest first)"
    )
    with pytest.raises(ValidationError, match=r"top must be an integer >= 1 or None, got 0"):
        ex.table(0)
    frame = ex.to_frame().set_index("term")
    assert frame.loc["exang", "label"] == "Exercise-induced angina = yes"
    assert frame.loc["thal[fixed defect]", "reference"] == "normal"


def test_plots_name_the_terms_the_outcome_and_the_truncation(heart):
    p, t = heart
    ex = explain_params(p, outcome="coronary artery disease")
    fig = ex.plot(kind="odds_ratio", top=6)
    ax = fig.axes[0]
    labels = [x.get_text() for x in ax.get_yticklabels()]
    assert len(labels) == 6 and all(":" in s for s in labels)
    assert (
        labels[-1] == f"{ex.table(1)['label'][0]}: {ex.table(1)['comparison'][0]}"
    )  # the largest at the top
    assert "coronary artery disease" in ax.get_title(loc="left")
    assert f"6 of {len(ex.table())} terms shown" in ax.get_title(loc="left")
    loc = explain_params(p, t.X.iloc[[0]], outcome="coronary artery disease")
    title = loc.plot(top=5).axes[0].get_title(loc="left")
    assert f"Predicted risk of coronary artery disease: {loc.probability:.1%}" in title
    assert "5 of 13 features shown" in title.replace("\n", " ")
    ticks = [x.get_text() for x in loc.plot(top=5).axes[0].get_yticklabels()]
    words = [f"{r.label} = {r.value_label}" for r in loc.table(5).itertuples()]
    assert ticks == [
        "intercept (baseline)",
        *words,
        "8 other features (summed)",
        "log-odds (total)",
    ]
    assert explain_params(p, t.X.iloc[[0]]).outcome == "the outcome"
    with pytest.raises(ValidationError, match="outcome must be a non-empty text"):
        explain_params(p, outcome=" ")


def test_local_table_in_words(heart):
    p, t = heart
    row = t.X.iloc[[0]]
    loc = explain_params(p, row)
    tab = loc.table().set_index("feature")
    sex = "male" if row["sex"].iloc[0] == 1 else "female"
    assert tab.loc["sex", "value_label"] == sex and tab.loc["sex", "label"] == "Sex"
    assert tab.loc["age", "value_label"] == f"{row['age'].iloc[0]:.4g} years"
    assert list(loc.table()["contribution"].abs()) == sorted(
        loc.table()["contribution"].abs(), reverse=True
    )


def test_provenance_chart_is_sorted_by_weight(heart):
    p, _ = heart  # PROV reversed: the lighter neighbour (0.4) comes first in the records
    ax = explain_params(p).provenance.plot().axes[0]
    ticks = [x.get_text().split("\n")[0] for x in ax.get_yticklabels()]
    assert ticks[-1] == "cleveland-men"  # barh draws bottom-up: the heaviest (0.6) is on top


def test_provenance_plot_ranks_weights_by_size_as_drawn():
    """Signed weights (a negative one is a contrast) are ranked by size, largest at the top;
    a non-finite weight is drawn, and ranked, as 0 (it was ranked first and drawn empty)."""
    prov = Provenance([{"task_id": "a", "weight": float("inf")}, {"task_id": "b", "weight": 0.5},
                       {"task_id": "c", "weight": -0.3}])
    ax = prov.plot().axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "c", "b"]  # bottom-up
    assert [round(float(r.get_width()), 2) for r in ax.patches] == [0.0, -0.3, 0.5]
    assert ax.get_xlim()[0] < -0.3


def test_a_column_that_never_varied_is_marked_not_estimable_not_given_an_invented_unit():
    import json
    import warnings

    from ragim.models import LogisticModel
    from ragim.params import ModelParams

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 9, 200), "hospital": 5.0, "sex": 1, "lab": np.nan})
    y = (rng.random(200) < 1 / (1 + np.exp(-(X["age"] - 60) / 9))).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = LogisticModel().fit(X, y).to_params()
    params = ModelParams.from_json(params.to_json())  # the fitted schema keeps what never varied
    table = explain_params(params).table(missing=True).set_index("term")
    assert table.loc["hospital", "comparison"] == "not estimable: never varies (always 5)"
    assert table.loc["sex", "comparison"] == "not estimable: never varies (always 1)"
    assert table.loc[["lab", "lab__missing"], "comparison"].eq("not estimable: always blank").all()
    assert table.loc[["hospital", "sex", "lab"], ["odds_ratio", "or_low", "or_high"]].isna().all().all()
    assert np.isfinite(table.loc["age", ["odds_ratio", "or_low", "or_high"]].astype(float)).all()
    assert "+1 SD" not in " ".join(table.loc[["hospital", "lab"], "comparison"])
    text = repr(explain_params(params))
    assert "OR nan" not in text and "not estimable" in text
    json.dumps(explain_params(params).data(), allow_nan=False)


# ------------------------------------------------------------ what the fitted rows can estimate
def _unobserved_level_task(n=500):
    """cp has three declared levels; no patient has "asymptomatic"."""
    from scipy.special import expit

    from ragim.schema import Feature

    rng = np.random.default_rng(0)
    cp = rng.choice(["typical", "atypical"], n)
    age = rng.normal(50, 10, n)
    y = (rng.random(n) < expit(-0.5 + 1.0 * (cp == "atypical") + 0.03 * (age - 50))).astype(int)
    X = pd.DataFrame({"age": age, "cp": cp})
    schema = FeatureSchema([
        Feature("age", unit="years"),
        Feature("cp", "categorical", categories=("typical", "atypical", "asymptomatic")),
    ])
    return X, y, schema


@pytest.mark.parametrize("penalty", ["l2", None])
def test_a_level_no_fitted_patient_had_is_not_estimable_in_every_view(penalty, tmp_path):
    """A declared level absent from the rows a model was fitted on got "asymptomatic vs typical"
    OR 1.69 (95% CI 0.15-18.8), an effect of zero patients; it is marked not estimable in the
    table, the frame, the JSON, the CSV, the plot and repr, with no odds ratio."""
    from ragim.export import coefficients_frame, save_coefficients_csv
    from ragim.models import LogisticModel

    X, y, schema = _unobserved_level_task()
    model = LogisticModel(schema=schema, penalty=penalty).fit(X, y)
    p = ModelParams.from_json(model.to_params().to_json())  # the record survives saving
    assert p.metadata["constant_terms"] == {"cp[asymptomatic]": 0.0}
    ex = explain_params(p)
    why = "not estimable: no patient with this level in the rows the model was fitted on"
    row = ex.table().set_index("term").loc["cp[asymptomatic]"]
    assert row["comparison"] == why
    assert np.isnan(row[["coef", "std", "odds_ratio", "or_low", "or_high"]].astype(float)).all()
    frame = ex.to_frame().set_index("term").loc["cp[asymptomatic]"]
    assert frame["change"] == why and np.isnan(frame["odds_ratio_per_sd"])
    terms = {t["term"]: t for t in json.loads(ex.to_json())["terms"]}
    assert terms["cp[asymptomatic]"]["odds_ratio_per_sd"] is None
    csv = pd.read_csv(save_coefficients_csv(p, tmp_path / "c.csv")).set_index("term")
    assert csv.loc["cp[asymptomatic]", ["coef", "odds_ratio_per_sd", "or_ci_low"]].isna().all()
    assert coefficients_frame(p).set_index("term").loc["cp[asymptomatic]", "change"] == why
    labels = [t.get_text() for t in ex.plot().axes[0].get_yticklabels()]
    assert any("not estimable" in t for t in labels)
    assert "not estimable" in repr(ex)
    # the observed level keeps its odds ratio and interval
    atyp = ex.table().set_index("term").loc["cp[atypical]"]
    assert atyp["comparison"] == "atypical vs typical"
    assert np.isfinite(atyp[["odds_ratio", "or_low", "or_high"]].astype(float)).all()


def test_an_unpenalised_fit_keeps_its_intervals_with_one_hot_levels():
    """penalty=None: the one-hot levels sum to the intercept's column (and an unobserved level
    is a column of zeros), so the Hessian is singular and params.std was None: every interval
    of the model vanished. The identified effects get the unpenalised Laplace interval of the
    usual drop-the-reference fit."""
    from sklearn.linear_model import LogisticRegression

    from ragim.models import LogisticModel

    X, y, schema = _unobserved_level_task()
    model = LogisticModel(schema=schema, penalty=None, tol=1e-10).fit(X, y)
    assert model.to_params().std is not None
    ex = model.explain()
    # independent: drop-the-reference coding, unpenalised, covariance = inverse Fisher information
    z = (X["age"] - model.schema_.means_["age"]) / model.schema_.scales_["age"]
    D = np.column_stack([np.ones(len(X)), z, X["cp"] == "atypical"]).astype(float)
    lr = LogisticRegression(C=np.inf, max_iter=10000, tol=1e-12).fit(D[:, 1:], y)
    prob = lr.predict_proba(D[:, 1:])[:, 1]
    cov = np.linalg.inv(D.T @ (D * (prob * (1 - prob))[:, None]))
    t = ex.table().set_index("term")
    for term, j in (("age", 1), ("cp[atypical]", 2)):
        assert t.loc[term, "coef"] == pytest.approx(lr.coef_[0, j - 1], abs=1e-4)
        assert t.loc[term, "std"] == pytest.approx(math.sqrt(cov[j, j]), rel=1e-3)
    value, sd, refs = ex.reference_intercept()  # the reference patient's log-odds is identified
    assert (value, sd) == pytest.approx((lr.intercept_[0], math.sqrt(cov[0, 0])), rel=1e-3)


def test_heart_women_task_marks_what_no_woman_in_it_had():
    """cleveland-any_cad-women_ge60: 39 women, none with a fixed thallium defect; "male vs
    female" and "fixed defect vs normal" were given odds ratios."""
    from ragim import datasets
    from ragim.models import LogisticModel, fit_schema

    tasks = datasets.heart_disease()
    t = tasks["cleveland-any_cad-women_ge60"]
    table = LogisticModel(schema=fit_schema(tasks)).fit(t.X, t.y).explain().table()
    table = table.set_index("term")
    assert table.loc["thal[fixed defect]", "comparison"] == (
        "not estimable: no patient with this level in the rows the model was fitted on"
    )
    assert table.loc["sex", "comparison"] == (
        "not estimable: never varies in the rows the model was fitted on (always female)"
    )
    assert table.loc[["thal[fixed defect]", "sex"], "odds_ratio"].isna().all()
    assert table.loc["thal[reversable defect]", "odds_ratio"] > 0


def test_an_index_gives_back_what_a_tasks_rows_never_varied(tmp_path):
    """index.params(task) rebuilt the task's model without the record of what its rows never
    varied, so the women-only task's own model showed "male vs female" and "fixed defect" as
    effects; the index keeps the record (saved with the index) and gives it back."""
    from ragim import TaskIndex, datasets

    tasks = datasets.heart_disease()
    index = TaskIndex.build(tasks.take(range(8)), embedder="hashing", progress=False)
    tid = "cleveland-any_cad-women_ge60"
    assert tid in index.ids
    index.save(tmp_path / "i")
    for idx in (index, TaskIndex.load(tmp_path / "i")):
        p = idx.params(tid)
        assert {"sex", "thal[fixed defect]"} <= set(p.metadata["constant_terms"])
        table = explain_params(p).table().set_index("term")
        assert table.loc[["thal[fixed defect]", "sex"], "odds_ratio"].isna().all()
    men = next(t for t in index.ids if "men_" in t and "women" not in t)
    assert "sex" in index.params(men).metadata["constant_terms"]
    whole = next(t for t in index.ids if t.endswith("-all"))
    assert "sex" not in index.params(whole).metadata.get("constant_terms", {})


def test_a_generated_model_borrows_effects_so_nothing_is_marked():
    """A generated (zero-shot) model's coefficients come from other tasks: a level absent from
    some task's rows is still estimable there."""
    X, y, schema = _unobserved_level_task()
    fitted = schema.copy().fit(X)
    p = ModelParams.from_dict("logistic", fitted, {"intercept": -0.5, "age": 0.3, "cp[typical]": 0.0,
                              "cp[atypical]": 1.0, "cp[asymptomatic]": 1.4},
                              metadata={"source": "generated"})
    row = explain_params(p).table().set_index("term").loc["cp[asymptomatic]"]
    assert row["comparison"] == "asymptomatic vs typical"
    assert row["odds_ratio"] == pytest.approx(math.exp(1.4))


def test_adapting_on_rows_that_have_the_level_estimates_it():
    from ragim.estimator import adapt_prior
    from ragim.models import LogisticModel

    X, y, schema = _unobserved_level_task()
    p = LogisticModel(schema=schema).fit(X, y).to_params()
    rng = np.random.default_rng(1)
    new = pd.DataFrame({"age": rng.normal(50, 10, 60),
                        "cp": rng.choice(["typical", "asymptomatic"], 60)})
    y_new = (rng.random(60) < 0.5).astype(float)
    adapted, _ = adapt_prior(p, new, y_new, adaptation="map", warn=False)
    if adapted.metadata["adaptation"] in ("zero-shot", "intercept"):
        assert adapted.metadata["constant_terms"] == {"cp[asymptomatic]": 0.0}
    else:
        assert adapted.metadata["constant_terms"] == {}
        assert explain_params(adapted).table().set_index("term").loc[
            "cp[asymptomatic]", "comparison"] == "asymptomatic vs typical"


# ------------------------------------------------------------ one effect per level, everywhere
def test_importance_and_effects_do_not_depend_on_the_parameterisation():
    """Adding c to every level of a feature and subtracting c from the intercept is the same
    model; importance ranked age above thal for one and below for the other, and to_frame gave
    different odds ratios. Importance is now a feature's log-odds range (for a categorical
    feature the largest difference between two levels)."""
    X = pd.DataFrame({"age": [40.0, 50, 60, 70, 55, 65], "thal": ["normal", "fixed", "reversible"] * 2})
    from ragim.schema import Feature

    schema = FeatureSchema([
        Feature("age", unit="years"),
        Feature("thal", "categorical", categories=("normal", "fixed", "reversible")),
    ]).fit(X)
    base = {"intercept": -1.0, "age": 0.9, "thal[normal]": -0.7, "thal[fixed]": 0.3,
            "thal[reversible]": 0.4}
    shifted = {**{k: v + 0.7 for k, v in base.items() if k.startswith("thal")}, "age": 0.9,
               "intercept": -1.7}
    a, b = (ModelParams.from_dict("logistic", schema, d) for d in (base, shifted))
    np.testing.assert_allclose(a.log_odds(X), b.log_odds(X))
    ea, eb = explain_params(a), explain_params(b)
    for ex in (ea, eb):
        imp = ex.importance()
        assert imp["feature"].tolist() == ["thal", "age"]
        assert imp["importance"].tolist() == pytest.approx([1.1, 0.9])
        assert [t["feature"] for t in ex.data()["importance"]] == ["thal", "age"]
    cols = ["coef", "odds_ratio_per_sd", "coef_per_unit", "odds_ratio_per_unit"]
    pd.testing.assert_frame_equal(ea.to_frame()[cols], eb.to_frame()[cols])
    assert ea.to_frame().set_index("term").loc["thal[reversible]", "odds_ratio_per_sd"] == (
        pytest.approx(math.exp(1.1)))
    assert ea.baseline() == eb.baseline()


def test_the_baseline_is_the_reference_patient_in_every_view(heart):
    """The plot title, the notebook view and repr showed the raw intercept (-1.64, a patient
    with no level at all) beside odds ratios against reference levels, while `ragim explain`
    showed the reference patient's log-odds."""
    import re

    from scipy.special import logit

    from ragim.models import model_from_params

    p, _ = heart
    model = model_from_params(p)
    s = p.schema
    ref = {f.name: (s.means_[f.name] if f.type == "continuous" else 0.0 if f.type == "binary"
                    else s.categories_[f.name][0]) for f in s.features}
    truth = float(logit(model.predict_proba(pd.DataFrame([ref]))[0, 1]))
    ex = explain_params(p)
    text = ex.baseline()
    assert text.startswith(f"intercept at the reference patient {truth:+.3f} (95% CI ")
    assert "Chest-pain type = typical angina" in text and "continuous at their mean" in text
    title = " ".join(ex.plot().axes[0].get_title(loc="left").splitlines())
    shown = f"{truth:+.3f}"
    assert shown in title and f"{p.intercept:+.3g}" not in title
    assert html_unescape(ex._repr_html_()).count(text) == 1
    assert text in repr(ex)
    assert re.search(r"intercept=", repr(ex)) is None
    assert ex.data()["baseline"]["log_odds"] == pytest.approx(truth)
    assert ex.data()["intercept"] == pytest.approx(p.intercept)  # the parameter, named as such


def html_unescape(text):
    import html

    return html.unescape(text)


def test_a_patients_contributions_start_from_the_reference_patient_as_the_table_does():
    """A one-patient explanation started from the raw intercept (-1.64 on heart data) with raw
    one-hot contributions, while every global view starts from the reference patient's log-odds
    (-3.52); both now start from the same baseline, and a level contributes its comparison with
    the reference level, as the table shows it."""
    from ragim import datasets
    from ragim.models import LogisticModel

    t = datasets.heart_disease()["cleveland-any_cad-all"]
    model = LogisticModel().fit(t.X, t.y)
    glob = model.explain()
    ref_value = glob.reference_intercept()[0]
    table = glob.table().set_index("term")
    for i in (0, 7, 30):
        loc = model.explain(t.X.iloc[[i]])
        assert loc.baseline == pytest.approx(ref_value) and loc.intercept == model.to_params().intercept
        assert loc.baseline + loc.to_frame()["contribution"].sum() == pytest.approx(loc.logit)
        assert loc.logit == pytest.approx(float(model.decision_function(t.X.iloc[[i]])[0]))
        level = t.X.iloc[i]["cp"]
        row = loc.to_frame().set_index("feature").loc["cp"]
        term = f"cp[{level}]"
        want = 0.0 if term not in table.index else float(table.loc[term, "coef"])
        assert row["contribution"] == pytest.approx(want, abs=1e-9)
    assert loc.data()["baseline"] == pytest.approx(ref_value)



# ------------------------------------------------------------ an adapted model says so
COVERAGE = {"top_similarity": 0.69, "effective_similarity": 0.59, "effective_neighbors": 3.7,
            "k": 10, "threshold": 0.41, "typical": 0.8}


def test_an_adapted_model_says_how_and_on_how_many_rows_in_every_view(data):
    """An outside user's `ragim explain` of an adapted model read exactly as the zero-shot
    model's, with its index coverage line; only repr and JSON said source=adapted."""
    from ragim.estimator import adapt_prior

    X, schema = data
    prior = _params(schema, "logistic", std=True, prov=True)
    prior = prior.replace(metadata={"coverage": COVERAGE})
    rows = X.dropna().iloc[:30]
    y = (np.arange(len(rows)) % 3 == 0).astype(float)
    adapted, _ = adapt_prior(prior, rows, y, adaptation="recalibrate", warn=False)
    want = (f"adapted on {len(rows)} labelled row(s) by 'recalibrate' (an intercept shift and "
            "one scale on the generated log-odds), starting from the generated model")
    marked = "the zero-shot model's index coverage (before adaptation): top similarity 0.69"
    for ex in (explain_params(adapted), explain_params(adapted, rows.iloc[[0]])):
        assert ex.adaptation.startswith(want)
        assert ex.notes[0] == ex.adaptation and ex.notes[1].startswith(marked)
        page = html.unescape(ex._repr_html_())
        assert want in page and marked in page
    text = repr(explain_params(adapted))
    assert want in text and marked in text
    # the zero-shot model: no adaptation line, its coverage unmarked
    zero = explain_params(prior)
    assert zero.adaptation is None and zero.notes[0].startswith("index coverage: top similarity")
    assert "adapt" not in repr(zero)
    # a zero-shot model kept after weighing the rows says that, and its coverage is its own
    kept = prior.replace(metadata={"adaptation": "zero-shot", "k_shot": 7})
    assert explain_params(kept).notes == [
        "not adapted: the zero-shot model was kept after weighing 7 labelled row(s)",
        zero.notes[0],
    ]


@pytest.mark.filterwarnings("ignore::ragim.errors.DataWarning")
@pytest.mark.parametrize("kind", ["logistic", "gam"])
def test_local_value_says_how_a_value_without_a_term_is_scored(kind):
    """A patient's row showed ward "hdu" (a level the model never saw) as "hdu  +0.282 raises",
    and a blank age (never blank in the fitted rows) as "missing", although the first is scored
    as none of the ward levels (an artefact of the parameterisation, not an effect of HDU) and
    the second as the training median; the value now says so, beside the same contribution."""
    from ragim.params import param_names

    rng = np.random.default_rng(0)
    X = pd.DataFrame({
        "age": rng.normal(60, 10, 60), "sex": rng.integers(0, 2, 60).astype(float),
        "ward": rng.choice(["icu", "ward"], 60), "lactate": rng.normal(2, 0.5, 60),
    })
    X.loc[:5, "lactate"] = np.nan
    schema = FeatureSchema.infer(X).fit(X)
    names = param_names(kind, schema)
    p = ModelParams(kind, schema, np.linspace(-0.5, 0.5, len(names)))
    odd = X.iloc[[6]].assign(age=np.nan, sex=np.nan, ward="hdu", lactate=np.nan)
    local = explain_params(p, odd).to_frame().set_index("feature")["value_label"]
    head = "missing (scored as the training median, "
    assert local["age"].startswith(head) and local["age"].endswith(")")
    shown = float(local["age"][len(head):-1])
    assert shown == pytest.approx(schema.medians_["age"], rel=1e-3)
    assert local["sex"].startswith("missing (scored as the training median, ")
    assert local["ward"] == "hdu (unknown level: scored as no level)"
    assert local["lactate"] == "missing"  # it has a missing-value term
    plain = explain_params(p, X.iloc[[6]]).to_frame().set_index("feature")["value_label"]
    assert "scored as" not in " ".join(plain)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gam_odds_ratio_is_against_the_features_average_on_the_fitted_rows():
    """A GAM bin's odds ratio was given with no comparison ("ICU 1.56" reads as ICU against the
    other wards); the docs now say it is exp(score) against a score of 0, the feature's average
    contribution over the fitted rows of a fitted GAM, which this pins down."""
    from ragim.models import GAMModel

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 300), "ward": rng.choice(["icu", "ward", "ed"], 300)})
    y = (0.05 * (X["age"] - 60) + (X["ward"] == "icu") + rng.logistic(size=300) > 0).astype(int)
    m = GAMModel(max_rounds=100).fit(X, y)
    frame = m.explain().to_frame()
    bins = m.schema_.bin_indices(X)
    for j, feature in enumerate(m.schema_.names):
        scores = frame.loc[frame["feature"] == feature, "score"].to_numpy()
        assert scores[bins[:, j]].mean() == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(frame["odds_ratio"], np.exp(frame["score"]))
    doc = " ".join(GlobalExplanation.__doc__.split())
    assert "odds_ratio is exp(score): the bin's odds against a score of 0 for its feature" in doc


def test_gam_plot_keeps_the_intervals_of_estimable_bins_and_counts_missing_bins_as_shown():
    """One bin with no CI (not estimable) removed the whole CI band of its continuous feature
    and every error bar of its categorical one; and the title said '1 missing-value bin not
    shown' above a panel that draws it. The band now covers the estimable bins, the bars with a
    CI keep their whiskers, and the title does not say the missing bins are hidden."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import StepPatch

    from ragim.models import GAMModel
    from ragim.schema import Feature

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"grade": rng.choice([1.0, 2.0, 3.0], 300), "cp": rng.choice(["a", "b"], 300)})
    X.loc[:20, "grade"] = np.nan
    y = (rng.random(300) < 1 / (1 + np.exp(-(X["grade"].fillna(2) - 2)))).astype(int)
    schema = FeatureSchema(  # bins shared with rows of grade 0-3: no fitted row has grade 0
        [Feature("grade", "continuous"), Feature("cp", "categorical", categories=("a", "b", "c"))]
    ).fit(pd.DataFrame({"grade": [0.0, 1.0, 2.0, 3.0, np.nan] * 4, "cp": ["a", "b", "c", "a", "b"] * 4}))
    expl = GAMModel(schema=schema, outer_bags=2, max_rounds=300).fit(X, y).explain()
    fig = expl.plot()
    grade = next(a for a in fig.axes if "grade" in a.get_xlabel())
    cp = next(a for a in fig.axes if "cp" in a.get_xlabel())
    bands = [c for c in grade.collections if isinstance(c, PolyCollection)]
    bands += [p for p in grade.patches if isinstance(p, StepPatch) and p.get_fill()]
    fr = expl.to_frame()
    shown = fr[(fr["feature"] == "grade") & (fr["not_estimable"] == "") & ~fr["is_missing_bin"]]
    assert len(shown) == 3 and len(bands) == len(shown)
    assert any(getattr(c, "errorbar", None) is not None for c in cp.containers)
    title = fig._suptitle.get_text()
    assert "not shown" not in title and "2 bins with no patient" in title


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_blank_binary_value_says_what_a_gam_scored_it_as_when_the_median_is_one_half():
    """With as many 1s as 0s a binary feature's training median is 0.5. A logistic model scores
    a blank as 0.5, but a GAM scores it in bin 0; its explanation said "scored as the training
    median, 0.5" beside bin 0's score. It now names the bin it scored."""
    from ragim.params import param_names

    X = pd.DataFrame({"age": np.linspace(40, 80, 40), "flag": np.repeat([0.0, 1.0], 20)})
    schema = FeatureSchema.infer(X).fit(X)
    assert schema.medians_["flag"] == 0.5
    blank = pd.DataFrame({"age": [60.0], "flag": [np.nan]})
    for kind in ("logistic", "gam"):
        names = param_names(kind, schema)
        p = ModelParams(kind, schema, np.linspace(-0.5, 0.5, len(names)))
        row = explain_params(p, blank).to_frame().set_index("feature").loc["flag"]
        if kind == "logistic":
            assert row["value_label"] == "missing (scored as the training median, 0.5)"
        else:
            assert row["bin"] == "0"
            assert row["value_label"] == (
                "missing (scored as 0: the bin of the training median 0.5)"
            )
            assert row["contribution"] == p.terms[names.index("flag[0]") - 1]
    with pytest.warns(Warning, match=r"'flag': 1 row\(s\), scored as the training median 0.5 "
                      r"\(bin 0 in a GAM"):
        schema.warn_unexpected_missing(blank)
