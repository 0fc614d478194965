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
                "coef_per_unit", "odds_ratio_per_unit", "unit"]:
        assert col in df.columns
    np.testing.assert_allclose(df["coef"], p.terms)
    np.testing.assert_allclose(df["odds_ratio_per_sd"], np.exp(p.terms))
    age = df.set_index("term").loc["age"]
    assert age["unit"] == "years" and age["role"] == "value"
    assert age["coef_per_unit"] == pytest.approx(p["age"] / schema.scales_["age"])
    assert age["odds_ratio_per_unit"] == pytest.approx(math.exp(p["age"] / schema.scales_["age"]))
    ind = df[df["role"] != "value"]  # indicators: per unit is the 0->1 change
    np.testing.assert_allclose(ind["coef_per_unit"], ind["coef"])
    assert set(df.loc[df["role"] == "missing", "term"]) == {"age__missing", "sex__missing", "cp__missing"}
    if std:
        np.testing.assert_allclose(df["ci_low"], p.terms - 1.959963984540054 * p.std[1:])
        np.testing.assert_allclose(df["ci_high"], p.terms + 1.959963984540054 * p.std[1:])
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
    assert loc.intercept + df["contribution"].sum() == pytest.approx(loc.logit, abs=1e-12)
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
    assert cp == pytest.approx(p["cp__missing"])  # cp is missing in row 5: only the indicator fires


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
    assert everything.loc["chol__missing", "comparison"].startswith("missing vs recorded")
    assert everything.loc["chol__missing", "coef"] == pytest.approx(p["chol__missing"])
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
