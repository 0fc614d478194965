"""Local validation: scores with bootstrap intervals, calibration slope and intercept, adaptation,
and reading patient rows from CSV."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from ragim.errors import DataWarning, IntervalWarning, ValidationError
from ragim.estimator import recalibrate
from ragim.params import ModelParams, design_matrix
from ragim.rows import read_rows
from ragim.schema import Feature, FeatureSchema
from ragim.validation import (
    MIN_CLASS_FOR_CI,
    adapt_params,
    batch_scores,
    calibration_slope_intercept,
    score_predictions,
)


def _sample(n, slope=1.0, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < expit(shift + slope * z)).astype(int)
    return y, expit(z)


@pytest.mark.parametrize(
    "slope, shift", [(1.0, 0.0), (0.5, 0.0), (2.0, 0.0), (1.0, 1.0), (1.0, -0.7)]
)
def test_calibration_slope_and_intercept_recover_the_truth(slope, shift):
    y, p = _sample(40_000, slope, shift)
    b, a = calibration_slope_intercept(y, p)
    assert b == pytest.approx(slope, abs=0.05)
    if slope == 1.0:
        assert a == pytest.approx(shift, abs=0.05)


def test_one_class_gives_nan_and_bad_input_raises():
    b, a = calibration_slope_intercept([1, 1, 1], [0.2, 0.5, 0.9])
    assert np.isnan(b) and np.isnan(a)
    with pytest.raises(ValidationError, match="y_true has 2 values but y_prob has 1; they must match"):
        calibration_slope_intercept([0, 1], [0.5])


@pytest.mark.parametrize("risk", [0.1, 0.3, 0.5])
def test_one_risk_for_everyone_has_no_slope_but_a_calibration_in_the_large(risk):
    y = np.array([0, 0, 0, 1, 1, 0, 1, 0])  # event rate 3/8
    b, a = calibration_slope_intercept(y, np.full(len(y), risk))
    assert np.isnan(b)
    assert a == pytest.approx(np.log(3 / 5) - np.log(risk / (1 - risk)))  # logit(3/8) - logit(p)


def test_batch_scores_agree_with_scikit_learn_definitions():
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    from ragim.metrics import expected_calibration_error

    y, p = _sample(150, 1.3, 0.2, seed=3)
    p = np.round(p, 2)  # ties, to check the average ranks
    rng = np.random.default_rng(1)
    idx = rng.integers(0, y.size, (12, y.size))
    got = batch_scores(y[idx], p[idx])
    for i in range(12):
        yy, pp = y[idx[i]], p[idx[i]]
        assert got["auroc"][i] == pytest.approx(roc_auc_score(yy, pp), abs=1e-12)
        assert got["log_loss"][i] == pytest.approx(
            log_loss(yy, np.clip(pp, 1e-7, 1 - 1e-7)), abs=1e-12
        )
        assert got["brier"][i] == pytest.approx(brier_score_loss(yy, pp), abs=1e-12)
        assert got["ece"][i] == pytest.approx(expected_calibration_error(yy, pp), abs=1e-12)
        b, a = calibration_slope_intercept(yy, pp)
        assert got["calibration_slope"][i] == pytest.approx(b, abs=1e-7)
        assert got["calibration_intercept"][i] == pytest.approx(a, abs=1e-9)
    one = batch_scores(np.ones((1, 5)), np.full((1, 5), 0.5))
    assert np.isnan(one["auroc"][0]) and np.isnan(one["calibration_slope"][0])


def test_score_predictions_intervals_cover_and_are_reproducible():
    y, p = _sample(400, 1.0, 0.0, seed=5)
    s = score_predictions(y, p, n_boot=400, seed=2)
    assert (
        s["n"] == 400
        and s["n_positive"] == int(y.sum())
        and s["mean_risk"] == pytest.approx(p.mean())
    )
    for k, m in s["metrics"].items():
        assert m["ci_low"] <= m["value"] <= m["ci_high"], k
        assert m["n_boot"] == 400 and m["ci_warning"] is None, k  # a good model: every resample
    assert s["n_boot_requested"] == 400 and s["n_boot_redrawn"] == 0
    assert (
        s["metrics"]["calibration_slope"]["ci_low"]
        < 1.0
        < s["metrics"]["calibration_slope"]["ci_high"]
    )
    assert score_predictions(y, p, n_boot=400, seed=2) == s
    with pytest.warns(IntervalWarning, match="ECE: its 50% percentile"):  # the ECE's bias
        narrow = score_predictions(y, p, n_boot=400, seed=2, level=0.5)["metrics"]["auroc"]
    assert (
        narrow["ci_high"] - narrow["ci_low"]
        < s["metrics"]["auroc"]["ci_high"] - s["metrics"]["auroc"]["ci_low"]
    )
    none = score_predictions(y, p, n_boot=0)["metrics"]["auroc"]
    assert np.isnan(none["ci_low"]) and none["n_boot"] == 0
    with pytest.raises(ValidationError, match="n_boot"):
        score_predictions(y, p, n_boot=-1)
    with pytest.raises(ValidationError, match="0/1"):
        score_predictions(y + 1, p)


@pytest.fixture
def prior():
    X = pd.DataFrame({"age": np.linspace(40, 80, 60), "sex": np.tile([0.0, 1.0], 30)})
    schema = FeatureSchema([Feature("age", unit="years"), Feature("sex", "binary")]).fit(X)
    p = ModelParams.from_dict(
        "logistic",
        schema,
        {"intercept": -1.0, "age": 0.8, "sex": 0.4},
        metadata={"source": "generated", "provenance": [{"task_id": "a", "weight": 1.0}]},
    )
    return p, X


def test_adapt_params_recalibrates_with_zero_shot_classifier(prior):
    p, X = prior
    rng = np.random.default_rng(0)
    y = rng.random(60) < expit(
        0.5 + 1.6 * logit(expit(design_matrix("logistic", p.schema, X) @ p.terms - 1.0))
    )
    y = y.astype(int)
    adapted = adapt_params(p, X, y, adaptation="recalibrate")
    theta, std, _ = recalibrate(design_matrix("logistic", p.schema, X), y.astype(float), p.vector)
    np.testing.assert_allclose(adapted.vector, theta, atol=1e-12)
    assert (
        adapted.metadata["source"] == "adapted" and adapted.metadata["adaptation"] == "recalibrate"
    )
    assert (
        adapted.metadata["provenance"] == p.metadata["provenance"]
    )  # the prior's provenance stays
    mapped = adapt_params(p, X, y, adaptation="map")
    assert mapped.metadata["adaptation"] == "map" and not np.allclose(mapped.vector, adapted.vector)
    with pytest.raises(ValidationError, match="all have outcome 1"):
        adapt_params(p, X, np.ones(60, int))
    with pytest.raises(ValidationError, match="adaptation must be one of .*'recalibrate'.*'map'"):
        adapt_params(p, X, y, adaptation="refit")
    with pytest.raises(ValidationError, match="zero rows"):
        adapt_params(p, X.head(0), y[:0])


# ---------------------------------------------------------------------- read_rows
@pytest.fixture
def schema():
    X = pd.DataFrame({"age": [40.0, 70.0], "cp": ["typical", "atypical"]})
    return FeatureSchema.infer(X).fit(X)


def test_read_rows(tmp_path, schema):
    f = tmp_path / "r.csv"
    f.write_text("cp,patient_id,age,dead\ntypical,a1,61,1\n,a2,,0\n")
    rows = read_rows(f, schema=schema, outcome="dead")
    assert rows.X.columns.tolist() == ["age", "cp"] and rows.y.tolist() == [1, 0]
    assert rows.ids.tolist() == ["a1", "a2"] and len(rows) == 2  # the default id column is used
    assert rows.X["cp"].isna().tolist() == [False, True] and np.isnan(rows.X["age"].iloc[1])
    f.write_text("\ufeffage;cp\n61;typical\n")  # a BOM and semicolons, as some spreadsheets save
    assert read_rows(f, schema=schema, sep=";").X["age"].tolist() == [61.0]


def test_read_rows_names_columns_that_differ_only_in_letter_case(tmp_path, schema):
    # an export with AGE, CP headers was refused as missing every feature, with no hint why
    f = tmp_path / "r.csv"
    f.write_text("AGE,CP\n61,typical\n")
    with pytest.raises(ValidationError, match=r"'AGE' and 'age', 'CP' and 'cp' differ only in "
                                              r"letter case \(column names match as written\)"):
        read_rows(f, schema=schema)


def test_read_rows_refuses_repeated_patients_and_warns_about_empty_features(tmp_path, schema):
    """The same patient twice would count twice in every figure (and narrow its CI); a feature
    left blank in every row is filled in for everyone, which a user must be told."""
    import warnings

    from ragim.errors import DataWarning

    f = tmp_path / "r.csv"
    f.write_text("patient_id,age,cp,dead\n007,61,typical,1\n008,50,atypical,0\n007,61,typical,1\n")
    with pytest.raises(ValidationError, match=r"patient id\(s\) \['007'\] appear on more than one row \(2 rows\)"):
        read_rows(f, schema=schema, outcome="dead")
    f.write_text("patient_id,age,cp,dead\n1,,typical,1\n2,,atypical,0\n")
    with pytest.warns(DataWarning, match=r"column\(s\) \['age'\] are empty in all 2 rows"):
        rows = read_rows(f, schema=schema, outcome="dead")
    assert rows.X["age"].isna().all()
    f.write_text("patient_id,age,cp,dead\n1,70,typical,1\n2,,atypical,0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a partly filled column is ordinary
        read_rows(f, schema=schema, outcome="dead")


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("", {}, "is empty; it needs a header row"),
        ("\n\n", {}, "is empty"),
        ("age,cp\n", {}, "has a header but no patient rows"),
        ("age;cp\n1;typical\n", {}, "it looks semicolon-separated: pass --sep ';'"),
        ("age\tcp\n1\ttypical\n", {}, "it looks tab-separated: pass --sep '\\t'"),
        ("age,cp\n1,typical\n", {"sep": ";"}, "it looks comma-separated: pass --sep ','"),
        ("age,age,cp\n1,2,typical\n", {}, "duplicated columns ['age']"),
        ("age,,cp\n1,2,typical\n", {}, "column(s) [2] have no name"),
        ("age,cp\n1,typical\n", {"outcome": "dead"}, "has no outcome column 'dead' (columns"),
        ("age,cp,Dead\n1,typical,0\n", {"outcome": "dead"}, "column 'dead'; did you mean 'Dead'?"),
        ("age,cp,death\n1,typical,0\n", {"outcome": "deaht"}, "did you mean 'death'?"),
        ("age,cp,CAD\n1,typical,0\n", {"ignore_outcome": "cad"}, "did you mean 'CAD'?"),
        # never a model feature: 'age' is closer to 'agee' but is one of the model's inputs
        ("age,cp,aged\n1,typical,0\n", {"outcome": "agee"}, "did you mean 'aged'?"),
        ("age,cp,Patient_ID\n1,typical,7\n", {"outcome": "patient_id"}, "column 'patient_id' (columns"),
        (
            "age,cp," + ",".join(f"c{i}" for i in range(12)) + ",dead\n1,typical" + ",0" * 13 + "\n",
            {"outcome": "Dead"},
            "did you mean 'dead'? (columns: ['age', 'cp', 'c0', 'c1', 'c2', 'c3', 'c4', 'c5', "
            "'c6', 'c7', 'c8', 'c9'] and 3 more)",
        ),
        (
            "age,cp,dead\n1,typical,\n",
            {"outcome": "dead"},
            "outcome column 'dead' is empty in 1 data row(s) [1]",
        ),
        ("age,cp,dead\n1,typical,yes\n", {"outcome": "dead"}, "holds ['yes']; outcomes must be 0/1 or true/false"),
        ("age,cp\n1,typical\n", {"patient_id": "mrn"}, "has no patient-id column 'mrn'"),
        ("age,cp,mrn\n1,typical,\n", {"patient_id": "mrn"}, "patient-id column 'mrn' is empty"),
        (
            "age,chol\n1,200\n",
            {},
            "missing the model's features ['cp']; has columns the model does not use ['chol']",
        ),
        ("age,cp\nold,typical\n", {}, "column 'age' (continuous) has non-numeric values"),
        ('age,cp\n1,"typical\n', {}, "check the separator (--sep) and the quoting"),
        ("age,cp\n1,typical\n", {"sep": ";;"}, "--sep must be one character"),
    ],
)
def test_read_rows_errors_name_the_fix(tmp_path, schema, text, kwargs, message):
    f = tmp_path / "r.csv"
    f.write_text(text)
    with pytest.raises(ValidationError) as err:
        read_rows(f, schema=schema, **kwargs)
    assert message in str(err.value)


def test_read_rows_missing_file(tmp_path):
    with pytest.raises(ValidationError, match="cannot read --rows .*: no such file"):
        read_rows(tmp_path / "nope.csv")


def test_slope_is_infinite_where_the_risks_separate_the_outcomes():
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7])
    for y, sign in (([0, 0, 0, 1, 1, 1], 1), ([1, 1, 1, 0, 0, 0], -1), ([0, 0, 1, 1, 1, 1], 1)):
        b, a = calibration_slope_intercept(y, p)
        assert b == sign * np.inf and np.isfinite(a)
        assert batch_scores(np.array([y]), p[None])["calibration_slope"][0] == b
    tie = calibration_slope_intercept([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.3, 0.6, 0.7])[0]
    assert tie == np.inf  # touching at one risk: still no finite maximum


def test_batch_slope_is_fitted_on_every_resample_of_an_inverted_model():
    """Newton's method from a slope of 1 diverged when the slope was far below it: every
    such resample came back NaN and was dropped from the interval (a harmful model's
    calibration slope of -1.4 got a 95% CI of -2.8 to -2.05 from 12 resamples of 1000)."""
    y, p = _sample(110, -1.4, 0.8, seed=7)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, y.size, (40, y.size))
    got = batch_scores(y[idx], p[idx])["calibration_slope"]
    want = [calibration_slope_intercept(y[i], p[i])[0] for i in idx]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-7)
    s = score_predictions(y, p, n_boot=300, seed=1)["metrics"]["calibration_slope"]
    assert s["n_boot"] == 300 and s["ci_low"] < s["value"] < s["ci_high"] < 0
    assert s["ci_warning"] is None


def test_a_harmful_model_on_few_patients_counts_every_resample_and_warns():
    """Risks that run against the outcome on 12 patients: most resamples are separated by
    them (slope -inf). They are counted, not dropped, and the interval is said unbounded."""
    p = np.array([0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9])
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    with pytest.warns(IntervalWarning, match=r"calibration slope: in \d+ of 1000 .* unbounded"):
        s = score_predictions(y, p, n_boot=1000, seed=0)
    m = s["metrics"]["calibration_slope"]
    assert m["value"] < 0 and m["n_boot"] == 1000
    assert m["ci_low"] == -np.inf and m["value"] <= m["ci_high"] < 0
    assert "unbounded" in m["ci_warning"]
    assert s["n_boot_redrawn"] > 0  # resamples of one outcome drawn again
    assert all(v["n_boot"] == 1000 for v in s["metrics"].values())  # the same resamples


def test_too_few_resamples_with_a_value_are_counted_and_warned_about():
    """Two patients alone carry a second risk; a resample without them has one risk for all
    and no slope. The slope's CI says how many resamples it rests on, and a warning says so
    when that is under 90% of those asked for."""
    p = np.r_[np.full(18, 0.3), 0.6, 0.6]
    y = np.r_[np.tile([0, 0, 1], 6), 1, 0]
    b, _ = calibration_slope_intercept(y, p)
    assert np.isfinite(b)
    with pytest.warns(IntervalWarning) as caught:
        m = score_predictions(y, p, n_boot=1000, seed=0)["metrics"]["calibration_slope"]
    assert 500 < m["n_boot"] < 900
    texts = [str(w.message) for w in caught]
    assert f"calibration slope: only {m['n_boot']} of the 1000 bootstrap resamples" in texts[0]
    assert m["ci_warning"].startswith(texts[0])


def test_an_interval_that_misses_its_estimate_is_flagged():
    """Perfectly calibrated bins: ECE 0, while every resample's binning noise makes it
    positive, so the percentile interval lies above the estimate and is not a valid CI."""
    p = np.r_[np.full(10, 0.1), np.full(4, 0.25), np.full(4, 0.75), np.full(10, 0.9)]
    y = np.r_[np.eye(10)[0], np.eye(4)[0], 1 - np.eye(4)[0], 1 - np.eye(10)[0]]
    with pytest.warns(IntervalWarning) as caught:  # the slope's, unbounded, as well
        m = score_predictions(y, p, n_boot=500, seed=0)["metrics"]["ece"]
    assert any(str(w.message).startswith("ECE: its 95% percentile bootstrap CI") for w in caught)
    assert m["value"] == pytest.approx(0.0) and m["ci_low"] > 0
    assert "does not contain its value" in m["ci_warning"] and "lie above it" in m["ci_warning"]


def test_too_few_events_mark_every_interval_with_one_warning():
    """One event in 61 patients: every resample repeats that one patient (and those without
    it are drawn again), so the AUROC's "1.000 to 1.000" and every other percentile interval
    describe one patient, not the ward. Each CI is marked and one warning says why."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.6, 61)
    y = np.zeros(61, int)
    y[np.argmax(p)] = 1
    with pytest.warns(IntervalWarning) as caught:
        s = score_predictions(y, p, n_boot=300, seed=0)
    few = [str(w.message) for w in caught if "too few for a bootstrap" in str(w.message)]
    assert len(few) == 1 and few[0] == s["ci_warning"]
    assert few[0].startswith(
        "1 event in 61 patients: too few for a bootstrap interval of AUROC, log-loss, Brier "
        "score, ECE, calibration slope or calibration intercept (fewer than 10 events)"
    )
    assert f"{s['n_boot_redrawn']} of " in few[0]  # the resamples without the event, counted
    auroc = s["metrics"]["auroc"]
    assert auroc["value"] == auroc["ci_low"] == auroc["ci_high"] == 1.0
    for k, m in s["metrics"].items():
        assert "rests on 1 event in 61 patients, too few for a bootstrap interval" in m["ci_warning"], k


def test_too_few_non_events_mark_the_intervals_too():
    y, p = _sample(200, seed=2)
    y = np.ones(200, int)
    y[np.argsort(p)[:3]] = 0  # 3 non-events, the lowest risks
    with pytest.warns(IntervalWarning, match="^3 non-events in 200 patients: too few"):
        s = score_predictions(y, p, n_boot=200, seed=0)
    assert "rests on 3 non-events in 200 patients" in s["metrics"]["calibration_intercept"]["ci_warning"]


def test_enough_events_leave_the_intervals_unmarked():
    """The rule is a count: MIN_CLASS_FOR_CI events and non-events give plain intervals."""
    y, p = _sample(400, seed=3)
    y[:] = 0
    y[np.random.default_rng(1).choice(400, MIN_CLASS_FOR_CI, replace=False)] = 1  # 10 events
    s = score_predictions(y, p, n_boot=200, seed=0)
    assert s["n_positive"] == MIN_CLASS_FOR_CI and s["ci_warning"] is None
    assert all("too few for a bootstrap" not in (m["ci_warning"] or "") for m in s["metrics"].values())
    assert score_predictions(y, p, n_boot=0)["ci_warning"] is None  # no intervals, no mark


def test_batch_scores_rank_the_risks_as_given_not_clipped():
    # before, the bootstrap ranked risks clipped to [1e-7, 1 - 1e-7]: 1e-9 and 1e-8 tied, so the
    # resampled AUROC of all rows was 0.722 where the AUROC (task_metrics, sklearn) is 0.667
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.array([1, 0, 0, 1, 0, 1])
    p = np.array([1e-9, 1e-8, 0.5, 0.9, 0.2, 1 - 1e-10])
    got = batch_scores(y[None], p[None])
    assert got["auroc"][0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert got["auroc"][0] == pytest.approx(2 / 3)
    assert got["brier"][0] == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    point = score_predictions(y, p, n_boot=0)["metrics"]
    for name in ("auroc", "brier", "ece", "log_loss"):
        assert got[name][0] == pytest.approx(point[name]["value"], abs=1e-12)


@pytest.mark.parametrize(
    "y, p, message",
    [
        # before: (inf, 1.53), (inf, -0.97), (nan, nan) and scipy's "function value ... is NaN"
        ([0, 2, 1, 0], [0.2, 0.5, 0.9, 0.3], "y_true must contain only 0/1 labels"),
        ([0, 1, 1, 0], [0.2, 1.5, 0.9, 0.3], r"y_prob must be finite probabilities in \[0, 1\]"),
        ([0, 1, 1, float("nan")], [0.2, 0.6, 0.9, 0.3], "y_true must contain only 0/1 labels"),
        ([0, 1, 1, 0], [0.2, float("nan"), 0.9, 0.3], "y_prob must be finite probabilities"),
    ],
)
def test_calibration_slope_intercept_checks_its_inputs_as_the_metrics_do(y, p, message):
    from ragim.metrics import bin_statistics

    with pytest.raises(ValidationError, match=message):
        calibration_slope_intercept(y, p)
    with pytest.raises(ValidationError, match=message):  # before: 1.5 counted in the last bin
        bin_statistics(y, p)


def test_rows_of_one_outcome_say_why_auroc_and_calibration_are_blank():
    # every patient with y = 0 (a wrong outcome column): AUROC, slope and intercept were blank
    # cells of `ragim score` with no word of why
    y, p = _sample(200, seed=2)
    with pytest.warns(DataWarning, match=r"^all 200 patients have outcome 0: AUROC and the "
                                         r"calibration slope and intercept need"):
        s = score_predictions(np.zeros(200, int), p, n_boot=50, seed=0)
    assert math.isnan(s["metrics"]["auroc"]["value"])
    assert not math.isnan(s["metrics"]["log_loss"]["value"])
    with warnings.catch_warnings():  # both outcomes: not said
        warnings.simplefilter("error", DataWarning)
        score_predictions(y, p, n_boot=0)
