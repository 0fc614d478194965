import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from ragim import AttentionGenerator, TaskIndex, ZeroShotClassifier, datasets
from ragim.errors import ValidationError
from ragim.estimator import map_logistic, neighbor_mean, recalibrate
from ragim.index import leak_free
from ragim.metrics import task_metrics


@parametrize_with_checks([ZeroShotClassifier(), ZeroShotClassifier(adaptation="map", prior_strength="cv")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def setup():
    fam = datasets.synthetic_family(n_tasks=80, n_features=5, seed=3)
    index = TaskIndex.build(fam, embedder="hashing:128", progress=False)
    return fam, index


def test_zero_shot_equals_the_generated_model(setup):
    fam, index = setup
    t = fam[5]
    excl = leak_free(index.record(t.task_id))
    gen = AttentionGenerator(max_epochs=3).fit(index, progress=False)
    clf = ZeroShotClassifier(index=index, generator=gen, description=t.description, exclude=excl).fit()
    p = gen.generate_params(t.description, index, exclude=excl)
    assert np.allclose(clf.params_.vector, p.vector)
    assert clf.provenance and all(r["task_id"] != t.task_id for r in clf.provenance)
    assert clf.predict_proba(t.X).shape == (t.n_rows, 2)
    assert clf.explain().to_frame().shape[0] == len(p) - 1


def test_few_shot_beats_zero_shot_and_plain_fit_in_log_loss(setup):
    """Adapted on 8 rows: lower held-out log-loss than the zero-shot prior and than a
    plain per-task fit on the same rows (averaged over targets)."""
    fam, index = setup
    from ragim.models import LogisticModel

    gains_zero, gains_plain = [], []
    for tid in fam.ids[:30]:
        t = fam[tid]
        if t.n_rows < 60 or min(t.n_positive, t.n_rows - t.n_positive) < 5:
            continue
        excl = leak_free(index.record(tid))
        rows = np.random.default_rng(0).permutation(t.n_rows)
        k_rows, test = rows[:8], rows[8:]
        if len(set(t.y[k_rows])) < 2:
            continue
        Xk, yk, Xt, yt = t.X.iloc[k_rows], t.y[k_rows], t.X.iloc[test], t.y[test]
        zero = ZeroShotClassifier(index=index, description=t.description, exclude=excl).fit()
        few = ZeroShotClassifier(index=index, description=t.description, exclude=excl).fit(Xk, yk)
        plain = LogisticModel(schema=index.schema).fit(Xk, yk)
        ll = {n: task_metrics(yt, m.predict_proba(Xt)[:, 1])["log_loss"] for n, m in
              [("zero", zero), ("few", few), ("plain", plain)]}
        gains_zero.append(ll["zero"] - ll["few"])
        gains_plain.append(ll["plain"] - ll["few"])
    assert len(gains_zero) >= 8
    # on 8 random rows the evidence rarely tells a change apart from the (good) generated
    # model, so the adapted model often IS the zero-shot one: never worse on average
    assert np.mean(gains_zero) >= -1e-9 and np.mean(gains_plain) > 0


def test_map_adaptation_moves_towards_the_data(setup):
    fam, index = setup
    t = fam[7]
    prior = neighbor_mean(index, t.description, k=10)
    few = ZeroShotClassifier(index=index, description=t.description, adaptation="map", prior_strength=0.01)
    few.fit(t.X, t.y)
    far = ZeroShotClassifier(index=index, description=t.description, adaptation="map", prior_strength=1e6)
    far.fit(t.X, t.y)
    assert np.allclose(far.params_.vector, far.prior_params_.vector, atol=1e-3)
    assert not np.allclose(few.params_.vector, few.prior_params_.vector, atol=1e-2)
    # the prior is the default generator's model, not the neighbour mean
    assert few.prior_params_.metadata["generator"] == "statistical"
    assert not np.allclose(few.prior_params_.vector, prior.vector, atol=1e-3)
    assert few.params_.metadata["adaptation"] == "map" and few.prior_strength_ == 0.01


def test_map_and_recalibrate_helpers():
    rng = np.random.default_rng(0)
    D = rng.normal(size=(200, 3))
    y = (rng.random(200) < 1 / (1 + np.exp(-(D @ [2.0, -1.0, 0.0])))).astype(float)
    theta, _ = map_logistic(D, y, np.zeros(4), lam=1e-6, intercept_ratio=1.0)
    from sklearn.linear_model import LogisticRegression

    sk = LogisticRegression(C=1e6, tol=1e-10, max_iter=10000).fit(D, y)
    assert np.allclose(theta[1:], sk.coef_[0], atol=1e-3)
    theta0 = np.array([0.0, 1.0, -0.5, 0.0])  # right direction, too weak
    theta_r, std, scale = recalibrate(D, y, theta0, prior_std=np.full(4, 0.2))
    assert theta_r[1] / theta0[1] > 1.3 and np.all(std >= 0)
    assert theta_r[3] == 0.0  # recalibration keeps the generated direction
    # a term it keeps at zero is still as uncertain as generated, times the scale
    assert std[3] >= 0.2 * theta_r[1] / theta0[1]
    # without the generated SDs the terms' uncertainty is unknown: no SDs, not b's alone
    assert recalibrate(D, y, theta0)[1] is None


def test_bad_inputs(setup):
    fam, index = setup
    with pytest.raises(ValidationError, match="needs a task description"):
        ZeroShotClassifier(index=index).fit()
    with pytest.raises(ValidationError, match="needs labelled rows"):
        ZeroShotClassifier().fit()
    with pytest.raises(ValidationError, match="Only binary classification is supported"):
        ZeroShotClassifier().fit(np.zeros((6, 2)), [0, 1, 2, 0, 1, 2])
    with pytest.raises(ValidationError, match="only one class"):
        ZeroShotClassifier().fit(np.zeros((4, 2)), [1, 1, 1, 1])
    with pytest.raises(ValidationError, match="X has 3 columns but the schema has 5 features"):
        ZeroShotClassifier(index=index, description="x").fit(np.zeros((4, 3)), [0, 1, 0, 1])
    clf = ZeroShotClassifier(index=index, description=fam[0].description).fit()
    with pytest.raises(ValidationError, match="columns not in the schema"):
        clf.predict_proba(fam[0].X.assign(extra=1.0))
    assert isinstance(clf.predict(pd.DataFrame(fam[0].X)), np.ndarray)


def test_a_fitted_classifier_travels_to_joblib_workers():
    """scikit-learn runs ``cross_val_score(n_jobs=2)`` by sending the estimator, its index
    included, to worker processes; the index's lock (and a lazy family's caches) made that
    fail. Artifacts are still saved with save(), never pickled (docs/artifacts.md)."""
    import pickle

    from sklearn.model_selection import cross_val_score

    fam = datasets.synthetic_family(n_tasks=12, n_features=2, seed=0)
    index = TaskIndex.build(fam, embedder="hashing", progress=False)
    t = fam[0]
    clf = ZeroShotClassifier(index=index, description=t.description).fit(t.X.iloc[:30], t.y[:30])
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(back.predict_proba(t.X), clf.predict_proba(t.X))
    assert back.index.search(t.description, k=1)[0].task_id == t.task_id
    scores = cross_val_score(ZeroShotClassifier(index=index, description=t.description), t.X, t.y,
                             cv=3, n_jobs=2, scoring="roc_auc")
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


# Labels whose event sorts first or last: scikit-learn's contract is that ``classes_`` is
# sorted and column i of ``predict_proba`` is ``classes_[i]``, whichever label is the event.
CODINGS = [("case", "control"), ("Died", "Survived"), (1, 2), ("yes", "no")]  # (event, other)


def _coded(y01, event, other):
    return np.where(np.asarray(y01) == 1, np.asarray([event])[0], np.asarray([other])[0])


@pytest.fixture(scope="module")
def scored_task(setup):
    fam, index = setup
    tid = next(i for i in fam.ids if fam[i].n_rows >= 120 and min(fam[i].n_positive, fam[i].n_rows - fam[i].n_positive) >= 20)
    t = fam[tid]
    X, y = t.X.iloc[:120], t.y[:120]
    return index, t.description, leak_free(index.record(tid)), X, y


@pytest.mark.filterwarnings("ignore::ragim.errors.AdaptationWarning")
@pytest.mark.parametrize(("event", "other"), CODINGS)
def test_scikit_learn_scorers_give_the_same_scores_whichever_way_the_labels_sort(scored_task, event, other):
    """Cross-validated AUROC, log-loss, average precision and Brier score on text or numeric
    labels equal those on 0/1 labels of the same rows (an outside user's AUROC came out as
    1 - AUROC with 'case'/'control', because the event's column was not ``classes_``'s)."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        make_scorer,
        roc_auc_score,
    )
    from sklearn.model_selection import StratifiedKFold, cross_validate

    index, description, excl, X, y = scored_task
    coded = _coded(y, event, other)
    folds = list(StratifiedKFold(4).split(X, y))
    base = {"index": index, "description": description, "exclude": excl}
    named = ZeroShotClassifier(**base, pos_label=event)
    plain = ZeroShotClassifier(**base)
    by_proba = make_scorer(roc_auc_score, response_method="predict_proba")  # column classes_[1]
    # scikit-learn's defaults: the positive class is classes_[1] (decision_function for AUROC)
    defaults = {"roc_auc": "roc_auc", "neg_log_loss": "neg_log_loss", "auroc_of_proba": by_proba}

    def named_event(pos):  # the event named: its column, or minus decision_function if first
        return {
            "average_precision": make_scorer(average_precision_score, response_method="decision_function", pos_label=pos),
            "brier": make_scorer(brier_score_loss, response_method="predict_proba", pos_label=pos, greater_is_better=False),
        }

    # one cross_validate per pos_label: its multi-metric cache keys on the response method only
    auroc = []
    for on_coded, on_01 in ((defaults, defaults), (named_event(event), named_event(1))):
        got = cross_validate(named, X, coded, cv=folds, scoring=on_coded)
        want = cross_validate(plain, X, y, cv=folds, scoring=on_01)
        for name in on_coded:
            np.testing.assert_allclose(got[f"test_{name}"], want[f"test_{name}"], rtol=1e-9, atol=1e-12, err_msg=name)
        auroc.extend(want.get("test_roc_auc", []))
    assert np.mean(auroc) > 0.6  # a model that ranks, so an inversion would show


@pytest.mark.filterwarnings("ignore::ragim.errors.AdaptationWarning")
@pytest.mark.parametrize(("event", "other"), CODINGS)
def test_classes_are_sorted_and_the_event_column_holds_the_event_risk(scored_task, event, other):
    index, description, excl, X, y = scored_task
    coded = _coded(y, event, other)
    clf = ZeroShotClassifier(index=index, description=description, exclude=excl, pos_label=event).fit(X, coded)
    ref = ZeroShotClassifier(index=index, description=description, exclude=excl).fit(X, y)
    assert clf.classes_.tolist() == np.unique(coded).tolist()
    assert clf.event_label_ == event and ref.event_label_ == 1 and ref.classes_.tolist() == [0, 1]
    col = clf.classes_.tolist().index(clf.event_label_)
    risk = ref.predict_proba(X)[:, 1]
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba[:, col], risk)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[:, col], 1 / (1 + np.exp(-clf.params_.log_odds(X))))
    # decision_function: the log-odds of classes_[1], as scikit-learn's scorers take it
    np.testing.assert_allclose(clf.decision_function(X), np.log(proba[:, 1] / proba[:, 0]), rtol=1e-6, atol=1e-9)
    assert clf.predict(X).tolist() == _coded(ref.predict(X), event, other).tolist()
    assert set(clf.predict(X)) <= set(clf.classes_.tolist())
    assert clf.score(X, coded) == ref.score(X, y)


def test_zero_shot_classes_are_zero_and_one_with_the_event_second(setup):
    fam, index = setup
    clf = ZeroShotClassifier(index=index, description=fam[0].description).fit()
    assert clf.classes_.tolist() == [0, 1] and clf.event_label_ == 1
    np.testing.assert_allclose(clf.predict_proba(fam[0].X)[:, 1], 1 / (1 + np.exp(-clf.decision_function(fam[0].X))))


def test_without_an_index_pos_label_still_names_the_event_and_classes_stay_sorted():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] + rng.normal(size=60) > 0).astype(int)
    ref = ZeroShotClassifier().fit(X, y)
    clf = ZeroShotClassifier(pos_label="case").fit(X, np.where(y == 1, "case", "control"))
    assert clf.classes_.tolist() == ["case", "control"]
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X)[:, ::-1])
    # without pos_label the label that sorts last is the event, as scikit-learn's own estimators
    last = ZeroShotClassifier().fit(X, np.where(y == 1, "control", "case"))
    assert last.classes_.tolist() == ["case", "control"] and last.event_label_ == "control"
    np.testing.assert_allclose(last.predict_proba(X), ref.predict_proba(X))


@pytest.fixture(scope="module")
def renal():
    """A small index whose creatinine is missing in a fifth of the rows, and a held-in task."""
    from ragim import FeatureSchema, Task, TaskCollection

    rng = np.random.default_rng(0)
    tasks = []
    for k in range(6):
        X = pd.DataFrame({"age": rng.normal(65, 10, 120), "creatinine": rng.lognormal(0, 0.3, 120)})
        X.loc[rng.random(120) < 0.2, "creatinine"] = np.nan
        y = (rng.random(120) < 1 / (1 + np.exp(-(X["age"] - 65) / 10 - X["creatinine"].fillna(1) + 1))).astype(int)
        tasks.append(Task(f"t{k}", f"Predict death in renal clinic {k}", X, y))
    index = TaskIndex.build(TaskCollection(tasks, FeatureSchema.infer([t.X for t in tasks])), embedder="hashing", progress=False)
    return index, tasks[0]


@pytest.mark.filterwarnings("ignore::ragim.errors.AdaptationWarning")
def test_nan_in_an_array_is_a_missing_value_as_in_a_dataframe(renal):
    """NaN in a numpy array was refused with scikit-learn's "does not accept missing values
    encoded as NaN" although the schema handles it in a DataFrame; now both give one risk."""
    index, t = renal
    X = t.X
    assert X["creatinine"].isna().sum() > 10
    clf = ZeroShotClassifier(index=index, description="Predict death in a renal clinic").fit()
    np.testing.assert_allclose(clf.predict_proba(X.to_numpy()), clf.predict_proba(X), rtol=0, atol=1e-15)
    # fitting on an array with NaN adapts as on the DataFrame
    on_frame = ZeroShotClassifier(index=index, description="Predict death in a renal clinic").fit(X.iloc[:40], t.y[:40])
    on_array = ZeroShotClassifier(index=index, description="Predict death in a renal clinic").fit(X.iloc[:40].to_numpy(), t.y[:40])
    np.testing.assert_allclose(on_array.params_.vector, on_frame.params_.vector)
    # without an index too: NaN gets a missing-value term
    plain = ZeroShotClassifier().fit(X.to_numpy(), t.y)
    assert "x1__missing" in plain.params_.names
    assert np.isfinite(plain.predict_proba(X.to_numpy())).all()
    # infinity is still refused, in one line
    bad = X.to_numpy().copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValidationError, match="infinity") as err:
        clf.predict_proba(bad)
    assert "\n" not in str(err.value)
    assert clf.__sklearn_tags__().input_tags.allow_nan


@pytest.mark.filterwarnings("ignore::ragim.errors.AdaptationWarning")
def test_fitted_on_a_dataframe_an_array_warns_and_a_dataframe_is_read_by_name(renal):
    """An array given to a classifier fitted on a DataFrame was read by position without a
    word; now ``feature_names_in_`` is set and scikit-learn's warning is given."""
    import warnings

    index, t = renal
    X = t.X.iloc[:60]
    clf = ZeroShotClassifier(index=index, description="Predict death in a renal clinic").fit(X[["creatinine", "age"]], t.y[:60])
    assert clf.feature_names_in_.tolist() == index.schema.names == ["age", "creatinine"]
    want = clf.predict_proba(X)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but ZeroShotClassifier was fitted with feature names"):
        got = clf.predict_proba(X[clf.feature_names_in_].to_numpy())  # columns in feature_names_in_ order
    np.testing.assert_allclose(got, want)
    with warnings.catch_warnings():  # a DataFrame in another order: read by name, no warning
        warnings.simplefilter("error", UserWarning)
        np.testing.assert_allclose(clf.predict_proba(X[["creatinine", "age"]]), want)
    # refitted on an array: no feature names
    assert not hasattr(clf.fit(X.to_numpy(), t.y[:60]), "feature_names_in_")
    # zero-shot without rows: the index schema's names, so an array warns (it was read by
    # position without a word)
    assert clf.fit().feature_names_in_.tolist() == ["age", "creatinine"]
    assert clf.n_features_in_ == 2
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        got = clf.predict_proba(X[clf.feature_names_in_].to_numpy())
    np.testing.assert_allclose(got, clf.predict_proba(X))


def test_an_array_holding_text_categories_is_refused_saying_to_pass_a_dataframe():
    """A numpy array of a schema with a text category failed with a bare 'could not convert
    string to float'; the error says an array holds numbers and to pass a DataFrame."""
    tasks = datasets.heart_disease()
    index = TaskIndex.build(tasks.take(range(8)), embedder="hashing", progress=False)
    clf = ZeroShotClassifier(index=index, description="coronary disease in Cleveland men").fit()
    X = tasks[0].X.iloc[:5]
    assert clf.predict_proba(X).shape == (5, 2)
    with pytest.raises(ValidationError, match="array must hold numbers only: pass a DataFrame") as e:
        clf.predict_proba(X.to_numpy(dtype=object))
    assert "'cp'" in str(e.value) and "\n" not in str(e.value)



def test_pos_label_refused_after_scikit_learn_recoded_the_labels_says_so():
    """cross_val_predict(method="predict_proba") passes y to fit re-coded as 0, 1 (sorted:
    "case" -> 0, "control" -> 1). pos_label="case" was then refused as "not one of the labels
    [0, 1]", blaming pos_label for labels the user never wrote; the message now names the
    re-coding and the way out (y as 0/1, 1 = the event), and that way gives the event's risks."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    y = (X["a"] + rng.normal(size=80) > 0).astype(int).to_numpy()
    named = np.where(y == 1, "case", "control")
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    with pytest.raises(ValidationError, match=r"re-coded by scikit-learn.*cross_val_predict"):
        cross_val_predict(ZeroShotClassifier(pos_label="case"), X, named, cv=cv,
                          method="predict_proba")
    p = cross_val_predict(ZeroShotClassifier(), X, y, cv=cv, method="predict_proba")
    assert roc_auc_score(y, p[:, 1]) > 0.7
    # a label that is truly absent keeps the plain message
    with pytest.raises(ValidationError, match=r"not one of the labels \['a', 'b'\]$"):
        ZeroShotClassifier(pos_label="case").fit(X, np.where(y == 1, "a", "b"))


def test_k_changes_only_the_provenance_list_of_the_statistical_generator(renal):
    """The docstring said k is the "neighbours to retrieve": with the default statistical
    generator, which learns from every indexed task, k=1 and k=3 gave identical coefficients
    (a GridSearchCV over k compares one model with itself); it now says k sets the length of
    the provenance list there."""
    index, t = renal
    fits = {
        k: ZeroShotClassifier(index=index, description="Predict death in a renal clinic", k=k).fit()
        for k in (1, 3)
    }
    np.testing.assert_array_equal(fits[1].params_.vector, fits[3].params_.vector)
    assert [len(f.provenance) for f in fits.values()] == [1, 3]
    doc = " ".join(ZeroShotClassifier.__doc__.split("k :", 1)[1].split("adaptation :")[0].split())
    assert "changes no coefficient, only how many tasks ``provenance`` lists" in doc


def test_one_patient_as_a_series_is_refused_naming_the_series():
    """predict_proba(df.iloc[0]) (one patient as a Series, which explain() takes) said "X is an
    array holding text", blaming an array the user never passed; it now says X is a Series and
    how to pass one patient."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 40), "ward": rng.choice(["icu", "ward"], 40)})
    y = (X["age"] + rng.normal(0, 10, 40) > 60).astype(int)
    clf = ZeroShotClassifier().fit(X, y)
    for method in (clf.predict_proba, clf.predict, clf.decision_function):
        with pytest.raises(ValidationError, match=r"X is a pandas Series of 2 value.*iloc\[\[i\]\]"):
            method(X.iloc[0])
    assert clf.predict_proba(X.iloc[[0]]).shape == (1, 2)
    assert repr(clf.explain(X.iloc[0])).startswith("LocalExplanation")


def test_quickstart_lists_every_candidate_auto_can_choose():
    """docs/quickstart.md said adaptation_report_["chosen"] is "zero-shot", "intercept",
    "recalibrate" or "map"; with adaptation="auto" the policy the generator validated can
    prefer "prior" (it did at k = 32 on the Swiss heart task), so the list now has it."""
    import re
    from pathlib import Path

    from ragim import FeatureSchema, ModelParams
    from ragim.adaptation import ORDER
    from ragim.estimator import adapt_prior

    text = (Path(__file__).resolve().parents[1] / "docs" / "quickstart.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith('clf.adaptation_report_["chosen"]'))
    assert set(re.findall(r'"([a-z-]+)"', line.split("#", 1)[1])) == set(ORDER)
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 32)})
    y = (rng.random(32) < 1 / (1 + np.exp(-(X["age"] - 60) / 10))).astype(float)
    schema = FeatureSchema.infer(X).fit(X)
    policy = [{"k": 32, "option": "prior", "prefer": "prior", "margin": 1.0}]
    prior = ModelParams.from_dict("logistic", schema, {"intercept": 0.0, "age": 1.0}).replace(
        std=np.array([0.5, 0.5]), metadata={"adaptation_policy": policy}
    )
    _, report = adapt_prior(prior, X, y, warn=False)
    assert report["chosen"] == "prior" and report["policy"]["prefer"] == "prior"


def test_exclude_as_a_one_shot_iterator_is_refused(renal):
    """exclude=(t for t in ids) was used up by the first fit: a second fit (each
    cross-validation fold, GridSearchCV) silently excluded nothing, and the held-out tasks came
    back (the Hungarian tasks in the provenance of the Swiss model, coefficients moved by 0.46).
    It is refused at fit, naming the fix; a list keeps excluding on every fit."""
    from sklearn.base import clone

    index, t = renal
    description = "Predict death in renal clinic 1"
    with pytest.raises(ValidationError, match="one-shot iterator .*pass a list"):
        ZeroShotClassifier(index=index, description=description, exclude=(i for i in ["t1"])).fit()
    with pytest.raises(ValidationError, match="one-shot iterator"):
        ZeroShotClassifier(index=index, description=description, exclude=iter(["t1"])).fit()
    clf = ZeroShotClassifier(index=index, description=description, exclude=["t1"])
    for fitted in (clf.fit(), clf.fit(), clone(clf).fit()):
        assert "t1" not in {r["task_id"] for r in fitted.provenance}


@pytest.mark.parametrize("make", ["zero-shot", "logistic"])
def test_two_labels_written_several_ways_are_named(make):
    """Labels 'died', 'Died', 'died ' and 'alive' were refused as "multiclass (4 classes) ...
    fit one model per outcome", advice for another problem; the message now says they are two
    labels written several ways and to write each one way. Three real outcomes keep the
    multiclass message."""
    from ragim.models import LogisticModel

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 40)})
    y = np.where(X["age"] > 60, "died", "alive").astype(object)
    y[:3] = ["Died", "died ", "ALIVE"]
    est = ZeroShotClassifier(pos_label="died") if make == "zero-shot" else LogisticModel()
    with pytest.raises(ValidationError, match=r"2 written in several ways \(.*'Died'.*'died '"):
        est.fit(X, y)
    y[0] = "transferred"
    with pytest.raises(ValidationError, match="fit one model per outcome"):
        est.fit(X, y)


def test_fit_warns_when_the_labelled_rows_are_in_another_unit():
    """ZeroShotClassifier.fit(X_k, y_k) adapted on rows in another unit (a feature 100 times
    its indexed scale) without a word, where predict, adapt_params and `ragim adapt` warn about
    the same rows; fit warns now, once per kind, naming the column."""
    from ragim.errors import DataWarning
    from ragim.validation import adapt_params

    fam = datasets.synthetic_family(n_tasks=12, n_features=3, seed=0)
    index = TaskIndex.build(fam, embedder="hashing:64", progress=False)
    t = fam[0]
    X = t.X.iloc[:40].copy()
    X[X.columns[0]] = X[X.columns[0]] * 100 + 1000
    y = t.y[:40]
    gen = neighbor_mean(index, t.description)  # any generated model: the rows are the point

    class Fixed(AttentionGenerator):  # a generator that returns that model
        def generate_params(self, *a, **k):
            return gen

    with pytest.warns(DataWarning) as got:
        clf = ZeroShotClassifier(index=index, generator=Fixed(), description=t.description)
        clf.fit(X, y)
    fit_says = [str(w.message) for w in got if X.columns[0] in str(w.message)]
    with pytest.warns(DataWarning) as ref:
        adapt_params(gen, X, y)
    assert fit_says and len(fit_says) == len([w for w in ref if X.columns[0] in str(w.message)])
    assert any("scale" in m for m in fit_says)
