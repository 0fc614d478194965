"""Clinical data as it really arrives: pandas' type guesses, Unicode forms, codings and dates.

Every test asserts the right value (a coefficient, a risk, an overlap set), not only that
nothing crashed: a plausible wrong answer is the failure these guard against.
"""

from __future__ import annotations

import json
import re
import unicodedata
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import run_console
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragim import FeatureSchema, Task, TaskCollection, TaskIndex, ZeroShotClassifier, datasets
from ragim.canonical import canonical_id, canonical_level
from ragim.datasets.folder import load_task_folder
from ragim.errors import DataWarning, ValidationError
from ragim.index import leak_free
from ragim.models import LogisticModel, fit_many

RNG = np.random.default_rng(7)


def pain_cohort(n: int, *, gap: bool, seed: int = 0) -> pd.DataFrame:
    """A numeric-coded categorical item (pain type 1-4; type 4 carries the risk); with a gap the
    column is float, as pandas reads it once one value is missing."""
    rng = np.random.default_rng(seed)
    pain = rng.integers(1, 5, n).astype(float)
    y = (rng.random(n) < np.where(pain == 4, 0.8, 0.2)).astype(int)
    frame = pd.DataFrame({"age": rng.normal(58, 8, n).round(), "pain_type": pain, "y": y})
    if gap:
        frame.loc[:2, "pain_type"] = np.nan
    else:
        frame["pain_type"] = frame["pain_type"].astype(int)
    return frame


def write_folder(root, tables: dict[str, pd.DataFrame], descriptions: dict | None = None, schema: dict | None = None):
    (root / "data").mkdir(parents=True)
    for tid, table in tables.items():
        table.to_csv(root / "data" / f"{tid}.csv", index=False)
    ids = list(tables)
    desc = descriptions or {"task_id": ids, "description": [f"Predict coronary disease at clinic {t}" for t in ids]}
    pd.DataFrame(desc).to_csv(root / "descriptions.csv", index=False)
    if schema is not None:
        (root / "schema.json").write_text(json.dumps(schema))
    return root


# ------------------------------------------------------------------ kind 1: canonical values
def test_numeric_levels_match_by_value_whatever_pandas_made_of_them():
    train = pain_cohort(240, gap=True)  # float column: levels seen as 1.0 ... 4.0
    X, y = train[["age", "pain_type"]], train["y"]
    schema = FeatureSchema.infer(X, types={"pain_type": "categorical"}).fit(X)
    assert schema.categories_["pain_type"] == ["1", "2", "3", "4"]
    model = LogisticModel(schema=schema).fit(X, y)
    rows = pd.DataFrame({"age": [58.0, 58.0], "pain_type": [1, 4]})
    as_int = model.predict_proba(rows)[:, 1]
    as_float = model.predict_proba(rows.astype({"pain_type": float}))[:, 1]
    as_text = model.predict_proba(rows.astype({"pain_type": str}))[:, 1]
    np.testing.assert_allclose(as_int, as_float)
    np.testing.assert_allclose(as_int, as_text)
    assert as_int[1] > 0.6 > 0.3 > as_int[0]  # type 4 carries the risk (0.8 vs 0.2 in the data)


def test_folder_files_with_and_without_gaps_learn_the_same_levels(tmp_path):
    root = write_folder(tmp_path / "t", {"north": pain_cohort(200, gap=True, seed=1),
                                         "south": pain_cohort(200, gap=False, seed=2)},
                        schema={"features": [{"name": "age"}, {"name": "pain_type", "type": "categorical"}]})
    fits = fit_many(load_task_folder(root), model="logistic", progress=False)
    for tid in ("north", "south"):
        coef = fits.params[tid].as_dict()
        assert coef["pain_type[4]"] - coef["pain_type[1]"] > 1.0, (tid, coef)


def test_declared_numeric_categories_match_float_data(tmp_path):
    schema = {"features": [{"name": "age"}, {"name": "pain_type", "type": "categorical", "categories": [1, 2, 3, 4]}]}
    root = write_folder(tmp_path / "t", {"north": pain_cohort(200, gap=True, seed=1)}, schema=schema)
    fits = fit_many(load_task_folder(root), model="logistic", progress=False)
    coef = fits.params["north"].as_dict()
    assert list(k for k in coef if k.startswith("pain_type[")) == [f"pain_type[{i}]" for i in range(1, 5)]
    assert coef["pain_type[4]"] - coef["pain_type[1]"] > 1.0


def test_one_level_written_twice_in_a_declared_schema_is_refused():
    with pytest.raises(ValidationError, match=r"declares the same level more than once: \['4'\]"):
        FeatureSchema([{"name": "pain", "type": "categorical", "categories": [4, "4.0", 1]}])


def test_a_saved_schema_with_float_text_levels_still_matches_integers():
    """Schemas saved before levels were canonical hold '1.0'-style levels; they keep their names and match 1."""
    X = pd.DataFrame({"pain": [1.0, 2.0, 4.0, np.nan]})
    d = FeatureSchema.infer(X, types={"pain": "categorical"}).fit(X).to_dict()
    d["fitted"]["categories"]["pain"] = ["1.0", "2.0", "4.0"]
    old = FeatureSchema.from_dict(d)
    assert old.design_names == ["pain[1.0]", "pain[2.0]", "pain[4.0]", "pain__missing"]
    np.testing.assert_array_equal(old.transform(pd.DataFrame({"pain": [4, 1]})),
                                  [[0, 0, 1, 0], [1, 0, 0, 0]])


def test_nfc_and_nfd_text_are_one_name_and_one_level():
    nfc, nfd = "Zürich", unicodedata.normalize("NFD", "Zürich")
    assert nfc != nfd
    X = pd.DataFrame({"Größe": [1.0, 2.0, 3.0, 4.0], "site": [nfc, "Basel", nfc, "Basel"]})
    schema = FeatureSchema.infer(X).fit(X)
    decomposed = pd.DataFrame({unicodedata.normalize("NFD", "Größe"): [1.0, 2.0], "site": [nfd, "Basel"]})
    np.testing.assert_array_equal(schema.transform(decomposed), schema.transform(X.iloc[:2]))
    t = Task(unicodedata.normalize("NFD", "zürich-all"), "Predict disease", X, [0, 1, 0, 1], {"site": nfd})
    assert t.task_id == "zürich-all" and t.metadata["site"] == nfc
    tc = TaskCollection([t])
    assert "zürich-all" in tc and tc[unicodedata.normalize("NFD", "zürich-all")] is not None


# ------------------------------------------------------------------ kind 2: ids typed by guess
def test_task_ids_and_site_codes_keep_their_leading_zeros(tmp_path):
    tables = {t: pd.DataFrame({"lactate": RNG.normal(2, 1, 30).round(2), "y": np.arange(30) % 2})
              for t in ("007", "012", "013")}
    root = write_folder(tmp_path / "w", tables, descriptions={
        "task_id": list(tables), "description": [f"Predict septic shock on ward {t}" for t in tables],
        "site": ["01", "01", "02"]})
    tc = load_task_folder(root)
    assert tc.ids == ["007", "012", "013"] and tc["007"].metadata["site"] == "01"
    for spelling in ("01", "1", 1, 1.0):
        train, test = tc.group_split("site", [spelling])
        assert test.ids == ["007", "012"] and train.ids == ["013"]
    assert tc.filter(site=2).ids == ["013"]
    assert set(tc.groups("site")) == {"01", "02"}


def _sites_spelled(spellings):
    """Synthetic tasks whose metadata site is written as ``spellings`` (one per task)."""
    base = datasets.synthetic_family(n_tasks=len(spellings), n_features=2, seed=3, rows=(40, 60))
    return TaskCollection([Task(t.task_id, t.description, t.X, t.y, {"site": s})
                           for t, s in zip(base, spellings, strict=True)])


def test_one_site_code_written_two_ways_is_one_group_and_says_so():
    tc = _sites_spelled(["01", "1", 2, 2.0, "3", "3"])
    with pytest.warns(DataWarning, match=r"'site' writes one code in several ways \('01' and '1'\)"):
        train, test = tc.group_split("site", ["1"])
    assert test.ids == tc.ids[:2] and train.ids == tc.ids[2:]
    with warnings.catch_warnings():  # numbers (2, 2.0) have one spelling; "3" twice is one
        warnings.simplefilter("error")
        assert _sites_spelled([2, 2.0, "3", "3"]).group_codes("site") == ["2", "2", "3", "3"]


def test_site_codes_differing_only_in_case_are_named_where_a_site_is_held_out():
    # 'North' and 'north' are two groups (text compares as written): holding out one silently
    # left the other's tasks in the index (--exclude site=north, leave-group-out)
    from ragim.cli_common import exclude_tasks

    tc = _sites_spelled(["North", "north", "north", "south", " South ", "east"])
    pattern = r"'site' holds codes that differ only in letter case.*\('North' and 'north'; "
    with pytest.warns(DataWarning, match=pattern + r"'South' and 'south'\)"):
        train, test = tc.group_split("site", ["north"])
    assert test.ids == tc.ids[1:3]  # still two groups: the warning names them, nothing merges
    with pytest.warns(DataWarning, match=pattern):
        assert exclude_tasks(tc, {"site": ["north"]}).n_excluded == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _sites_spelled(["North", "North", "south", "east"]).group_codes("site")


def test_a_blank_metadata_cell_is_missing_and_the_index_saves(tmp_path):
    # a blank site in descriptions.csv was NaN in the metadata: saving the index failed with
    # "a record is not JSON-safe", and leave-group-out kept the task in every fold unsaid
    from ragim import evaluate

    rng = np.random.default_rng(0)
    tables = {t: pd.DataFrame({"patient_id": [f"{t}-{i}" for i in range(60)],
                               "age": rng.normal(60, 10, 60), "y": np.arange(60) % 2})
              for t in "abcdef"}
    root = write_folder(tmp_path / "f", tables, descriptions={
        "task_id": list(tables), "description": [f"Predict sepsis at clinic {t}" for t in tables],
        "site": ["north", "", "south", "south", "east", "east"]})
    tc = load_task_folder(root)
    assert tc["b"].metadata["site"] is None
    index = TaskIndex.build(tc, embedder="hashing")
    index.save(tmp_path / "idx")
    assert TaskIndex.load(tmp_path / "idx").records[1]["metadata"]["site"] is None
    with pytest.warns(DataWarning, match=r"1 task\(s\) have no 'site' \(b\): leave-group-out"):
        df = evaluate.zero_shot(tc, protocol="leave-group-out", group="site", methods=["pooled"],
                                embedder="hashing", progress=False)
    assert set(df["task_id"]) == {"a", "c", "d", "e", "f"}


def test_leave_group_out_compares_site_codes_as_group_split_does():
    from ragim import evaluate

    tc = _sites_spelled(["01", "01", 2, 2, "3", "3"])
    for spelling in (1, "1", "01", 1.0):
        df = evaluate.zero_shot(tc, protocol="leave-group-out", group="site", groups=[spelling],
                                methods=["pooled"], embedder="hashing", progress=False)
        (fold,) = df.attrs["folds"]
        assert set(fold["targets"]) == set(tc.ids[:2]) and not set(tc.ids[:2]) & set(fold["index_ids"])
    with pytest.raises(ValidationError, match=r"no tasks with site in \['4'\]"):
        evaluate.zero_shot(tc, protocol="leave-group-out", group="site", groups=[4],
                           methods=["pooled"], embedder="hashing", progress=False)
    folds = evaluate.zero_shot(tc, protocol="leave-group-out", group="site", methods=["pooled"],
                               embedder="hashing", progress=False).attrs["folds"]
    assert [sorted(f["targets"]) for f in folds] == [tc.ids[0:2], tc.ids[2:4], tc.ids[4:6]]


def test_leak_check_sees_a_held_out_site_written_another_way():
    from ragim.evaluate import assert_leak_free

    tc = _sites_spelled(["01", 1, "2", "2"])
    index = TaskIndex.build(tc.take([1, 2, 3]), embedder="hashing", progress=False)
    with pytest.raises(ValidationError, match="belongs to held-out site"):
        assert_leak_free(index, tc.take([0]), group="site")
    assert_leak_free(TaskIndex.build(tc.take([2, 3]), embedder="hashing", progress=False),
                     tc.take([0]), group="site")


def test_demo_holds_out_a_site_given_without_its_leading_zero(tmp_path):
    from typer.testing import CliRunner

    from ragim.cli import app

    rng = np.random.default_rng(3)
    tables, sites = {}, []
    for i in range(8):
        x = rng.normal(size=60)
        tables[f"w{i}"] = pd.DataFrame({"lactate": x.round(3), "y": (rng.random(60) < 1 / (1 + np.exp(-x))).astype(int)})
        sites.append("01" if i < 3 else "02")
    root = write_folder(tmp_path / "w", tables, descriptions={
        "task_id": list(tables), "description": [f"Predict septic shock on ward {t}" for t in tables], "site": sites})
    result = CliRunner().invoke(app, ["demo", "--tasks-dir", str(root), "--site", "1", "--fast", "--embedder", "hashing",
                                      "--out", str(tmp_path / "report"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["target"]["site"] == "01"


def test_patient_ids_keep_leading_zeros_so_shared_patients_are_found(tmp_path):
    ids = [f"{i:04d}" for i in range(1, 20)] + ["TMP-7"]  # one temporary id: pandas keeps this file as text
    whole = pd.DataFrame({"patient_id": ids, "age": RNG.normal(64, 9, 20).round(), "y": np.arange(20) % 2})
    root = write_folder(tmp_path / "s", {"all-adults": whole, "men": whole.iloc[:10]})  # men: digits only
    tc = load_task_folder(root)
    assert sorted(tc["men"].patient_ids) == [f"{i:04d}" for i in range(1, 11)]
    assert tc.overlapping("men") == ["all-adults"]
    exclude = leak_free(tc["men"])
    assert exclude({"task_id": "all-adults", "metadata": tc["all-adults"].metadata})


def test_unrelated_patients_numbered_0001_and_1_are_not_merged(tmp_path):
    a = pd.DataFrame({"patient_id": [f"{i:04d}" for i in range(1, 11)], "age": np.arange(10.0), "y": np.arange(10) % 2})
    b = pd.DataFrame({"patient_id": list(range(1, 11)), "age": np.arange(10.0), "y": np.arange(10) % 2})
    with pytest.warns(DataWarning, match=r"patient ids '0001' \(in 'a'\) and '1' \(in 'b'\) differ only by "
                      r"leading zeros or a '\.0' tail, as do 9 more id\(s\) of different files"):
        tc = load_task_folder(write_folder(tmp_path / "s", {"a": a, "b": b}))
    assert tc.overlapping("a") == [] and tc["b"].patient_ids == frozenset(str(i) for i in range(1, 11))


def test_ids_with_and_without_leading_zeros_in_one_file_are_that_files_patients(tmp_path):
    a = pd.DataFrame({"patient_id": ["0001", "1", "2", "3"], "age": [1.5, 2, 3, 4], "y": [0, 1, 0, 1]})
    b = pd.DataFrame({"patient_id": ["7", "8", "9", "10"], "age": [1.5, 2, 3, 4], "y": [0, 1, 0, 1]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        tc = load_task_folder(write_folder(tmp_path / "s", {"a": a, "b": b}))
    assert sorted(tc["a"].patient_ids) == ["0001", "1", "2", "3"]


def test_patients_shared_between_sites_are_flagged(tmp_path):
    a = pd.DataFrame({"patient_id": ["1", "2", "3", "4"], "age": [1.0, 2, 3, 4], "y": [0, 1, 0, 1]})
    root = write_folder(tmp_path / "s", {"a": a, "b": a.copy()}, descriptions={
        "task_id": ["a", "b"], "description": ["Predict x at A", "Predict x at B"], "site": ["A", "B"]})
    with pytest.warns(DataWarning, match=r"sites 'A' and 'B' share 4 patient id\(s\)"):
        load_task_folder(root)


def test_shared_patient_warning_counts_distinct_ids_for_every_pair_of_sites(tmp_path):
    """Two tasks per site used to count each id twice, and sites B and C were never compared."""
    a = pd.DataFrame({"patient_id": ["1", "2", "3", "4"], "age": [1.0, 2, 3, 4], "y": [0, 1, 0, 1]})
    tables = {f"{site}{i}": a.copy() for site in "ABC" for i in (1, 2)}
    root = write_folder(tmp_path / "s", tables, descriptions={
        "task_id": list(tables), "description": [f"Predict x, task {t}" for t in tables],
        "site": [t[0] for t in tables]})
    with pytest.warns(DataWarning) as record:
        load_task_folder(root)
    shared = [str(w.message) for w in record if "share" in str(w.message)]
    assert len(shared) == 1  # one warning, however many sites
    assert shared[0].split("; ids are global")[0] == "; ".join(
        f"sites '{a}' and '{b}' share 4 patient id(s) (e.g. ['1', '2', '3'])"
        for a, b in (("A", "B"), ("A", "C"), ("B", "C")))


def test_index_records_from_older_artifacts_get_canonical_patient_ids(tmp_path):
    tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
    # one id per row, given as numbers: the records hold them as canonical text
    meta_tasks = [Task(t.task_id, t.description, t.X, t.y,
                       {**t.metadata, "patient_ids": list(range(i * 1000, i * 1000 + t.n_rows))})
                  for i, t in enumerate(tasks)]
    index = TaskIndex.build(TaskCollection(meta_tasks), embedder="hashing", progress=False)
    assert index.records[1]["metadata"]["patient_ids"][:3] == ["1000", "1001", "1002"]
    target = Task("new", "Predict", tasks[0].X.iloc[:1], tasks[0].y[:1], {"patient_ids": ["1002"]})
    hits = index.search("Predict", k=6, exclude=leak_free(target))
    assert meta_tasks[1].task_id not in [h.task_id for h in hits] and len(hits) == 5


# ------------------------------------------------------------------ kind 3: types from every task
def test_column_types_come_from_every_task_not_the_first():
    rng = np.random.default_rng(1)
    first = Task("a", "Predict stroke in non-smokers", pd.DataFrame({"cigsPerDay": np.zeros(20), "age": rng.normal(50, 5, 20)}),
                 np.arange(20) % 2)
    smokers = Task("b", "Predict stroke", pd.DataFrame({"cigsPerDay": rng.integers(0, 40, 20).astype(float),
                                                          "age": rng.normal(50, 5, 20)}), np.arange(20) % 2)
    tc = TaskCollection([first, smokers])
    assert tc.schema["cigsPerDay"].type == "continuous"
    fits = fit_many([first, smokers], progress=False)
    assert fits.status == {"a": "ok", "b": "ok"}
    assert fits.schema["cigsPerDay"].type == "continuous"


def test_a_column_that_is_text_in_one_task_names_both_tasks():
    a = Task("a", "d", pd.DataFrame({"grade": [1.0, 2.0, 3.0, 1.0]}), [0, 1, 0, 1])
    b = Task("b", "d", pd.DataFrame({"grade": ["low", "high", "low", "high"]}), [0, 1, 0, 1])
    with pytest.raises(ValidationError, match="column 'grade' holds numbers in task 'a' but text in task 'b'"):
        TaskCollection([a, b])


# ------------------------------------------------------------------ kind 4: dates and durations
@pytest.mark.parametrize("column, kind", [
    (pd.Timestamp("2024-03-01") + pd.to_timedelta(np.arange(12) % 8, unit="D"), "dates"),
    (pd.to_timedelta(np.arange(1, 13) * 7, unit="h"), "durations"),
    (pd.Series(["2024-03-01", "2024-03-02"] * 6), "dates"),
    (pd.Series([pd.Timestamp("2024-01-01").date()] * 12, dtype=object), "dates"),
])
def test_dates_and_durations_are_refused_with_what_to_do(column, kind):
    X = pd.DataFrame({"creatinine": np.linspace(0.6, 2.0, 12), "when": column})
    with pytest.raises(ValidationError, match=f"column 'when' holds {kind}"):
        LogisticModel().fit(X, np.arange(12) % 2)


def test_dates_given_to_a_numeric_feature_are_refused_not_turned_into_nanoseconds():
    X = pd.DataFrame({"creatinine": np.linspace(0.6, 2.0, 12), "stay": np.arange(12.0)})
    model = LogisticModel().fit(X, np.arange(12) % 2)
    bad = X.assign(stay=pd.to_timedelta(np.arange(12), unit="D"))
    with pytest.raises(ValidationError, match="column 'stay' holds durations"):
        model.predict_proba(bad)


# ------------------------------------------------------------------ kind 5: which label is the event
@pytest.fixture(scope="module")
def synthetic_index():
    family = datasets.synthetic_family(n_tasks=20, n_features=3, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return family, TaskIndex.build(family, embedder="hashing", progress=False)


def test_events_labelled_yes_need_a_pos_label_and_then_raise_the_risk(synthetic_index):
    family, index = synthetic_index
    target = family[family.ids[0]]
    rows = target.X.iloc[:6]
    zero = ZeroShotClassifier(index=index, description=target.description).fit().predict_proba(rows)[:, 1]
    ones = ZeroShotClassifier(index=index, description=target.description).fit(rows, np.ones(6, int))
    with pytest.raises(ValidationError, match=r"holds \['yes'\].*pos_label="):
        ZeroShotClassifier(index=index, description=target.description).fit(rows, np.array(["yes"] * 6))
    with pytest.raises(ValidationError, match=r"holds \['2'\]"):
        ZeroShotClassifier(index=index, description=target.description).fit(rows, np.full(6, 2))
    cases = ((np.array(["yes"] * 6), "yes", ["no", "yes"]), (np.full(6, 2), 2, [1, 2]),
             (np.full(6, 2.0), "2", [1.0, 2.0]))
    for labels, pos, classes in cases:
        clf = ZeroShotClassifier(index=index, description=target.description, pos_label=pos)
        # rows of one class whose label is not 0/1: the other label must be named for predict
        with pytest.raises(ValidationError, match="classes="):
            clf.fit(rows, labels)
        clf.fit(rows, labels, classes=classes)
        np.testing.assert_allclose(clf.predict_proba(rows), ones.predict_proba(rows))
        assert clf.classes_.tolist() == classes and set(clf.predict(rows)) <= set(classes)
    assert (ones.predict_proba(rows)[:, 1] > zero).all()
    as_bool = ZeroShotClassifier(index=index, description=target.description).fit(rows, np.ones(6, bool))
    np.testing.assert_allclose(as_bool.predict_proba(rows), ones.predict_proba(rows))


def test_two_text_classes_with_an_index_keep_sorted_classes_and_the_event_in_its_column(synthetic_index):
    family, index = synthetic_index
    target = family[family.ids[1]]
    X, y = target.X.iloc[:20], target.y[:20]
    coded = np.where(y == 1, "event", "none")  # the event label sorts first
    with pytest.raises(ValidationError, match="pos_label"):
        ZeroShotClassifier(index=index, description=target.description).fit(X, coded)
    clf = ZeroShotClassifier(index=index, description=target.description, pos_label="event").fit(X, coded)
    ref = ZeroShotClassifier(index=index, description=target.description).fit(X, y)
    # scikit-learn's order: sorted labels, column i of predict_proba is classes_[i]
    assert clf.classes_.tolist() == ["event", "none"] and clf.event_label_ == "event"
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X)[:, ::-1])
    np.testing.assert_allclose(clf.decision_function(X), -ref.decision_function(X))
    assert clf.predict(X[:3]).tolist() == np.where(ref.predict(X[:3]) == 1, "event", "none").tolist()
    with pytest.raises(ValidationError, match="pos_label 'dead' is not one of the labels"):
        ZeroShotClassifier(index=index, description=target.description, pos_label="dead").fit(X, coded)


def test_two_data_files_for_one_task_are_refused_naming_both(tmp_path):
    base = pd.DataFrame({"lactate": np.linspace(1, 4, 20), "y": [0, 1] * 10})
    root = write_folder(tmp_path / "p", {"t0": base, "t1": base})
    base.iloc[:10].to_parquet(root / "data" / "t0.parquet")  # an old partial export left beside
    with pytest.raises(ValidationError, match=r"task 't0' has t0\.csv and t0\.parquet"):
        load_task_folder(root)
    # any two names that map to one task id: another case of the extension, a trailing space
    root = write_folder(tmp_path / "c", {"t0": base, "t1": base})
    base.to_csv(root / "data" / "t1 .CSV", index=False)
    with pytest.raises(ValidationError, match=r"task 't1' has t1 \.CSV and t1\.csv"):
        load_task_folder(root)
    # an extension in upper case alone is read, as .csv / .parquet are
    root = write_folder(tmp_path / "u", {"t0": base, "t1": base})
    (root / "data" / "t1.csv").unlink()
    base.iloc[:12].to_parquet(root / "data" / "t1.PARQUET")
    assert load_task_folder(root)["t1"].n_rows == 12


@pytest.mark.parametrize("desc_sep", [",", ";", "\t"])
@pytest.mark.parametrize("data_sep", [",", ";", "\t"])
def test_descriptions_csv_is_read_with_its_own_separator(tmp_path, desc_sep, data_sep):
    """--sep names the data files' separator; descriptions.csv (often written apart, by hand or
    by pandas) may use another, which is detected; the commas inside a description stay."""
    base = pd.DataFrame({"lactate": np.linspace(1, 4, 8), "y": [0, 1] * 4})
    root = tmp_path / "f"
    (root / "data").mkdir(parents=True)
    for t in ("a", "b"):
        base.to_csv(root / "data" / f"{t}.csv", sep=data_sep, index=False)
    pd.DataFrame({"task_id": ["a", "b"], "description": ["Sepsis, adults", "Sepsis; children"],
                  "site": ["01", "02"]}).to_csv(root / "descriptions.csv", sep=desc_sep, index=False)
    tc = load_task_folder(root, sep=data_sep)
    assert [t.description for t in tc] == ["Sepsis, adults", "Sepsis; children"]
    assert tc["a"].metadata["site"] == "01" and tc["b"].n_rows == 8


def test_a_true_false_outcome_takes_false_as_its_event_and_errors_show_the_written_values(tmp_path):
    """TRUE/FALSE in a file are what the user sees: pos_label names one of them in any case, and
    every error lists them as written (pandas had read them as booleans, shown as ['0', '1'])."""
    base = pd.DataFrame({"lactate": np.linspace(1, 4, 8)})
    survived = ["TRUE", "FALSE", "FALSE", "TRUE"] * 2  # the event, death, is FALSE
    root = write_folder(tmp_path / "b", {"a": base.assign(y=survived), "b": base.assign(y=survived[::-1])})
    for pos in ("FALSE", "false", "False", False, 0):
        assert load_task_folder(root, pos_label=pos)["a"].y.tolist() == [0, 1, 1, 0] * 2
    assert load_task_folder(root, pos_label="true")["a"].y.tolist() == [1, 0, 0, 1] * 2
    with pytest.raises(ValidationError, match=r"pos_label 'dead' is not one of the outcome values \['FALSE', 'TRUE'\]"):
        load_task_folder(root, pos_label="dead")
    root = write_folder(tmp_path / "m", {"a": base.assign(y=["TRUE", "FALSE", "maybe", "TRUE"] * 2)})
    with pytest.raises(ValidationError, match=r"holds \['FALSE', 'TRUE', 'maybe'\]; outcomes must be"):
        load_task_folder(root)
    with pytest.raises(ValidationError, match=r"holds 3 distinct values \['FALSE', 'TRUE', 'maybe'\]"):
        load_task_folder(root, pos_label="FALSE")


def test_folder_outcomes_as_booleans_or_with_a_stated_event(tmp_path):
    base = pd.DataFrame({"lactate": np.linspace(1, 4, 8)})
    root = write_folder(tmp_path / "b", {"a": base.assign(y=[True, False] * 4), "b": base.assign(y=["true", "false"] * 4)})
    tc = load_task_folder(root)
    assert tc["a"].y.tolist() == [1, 0] * 4 and tc["b"].y.tolist() == [1, 0] * 4
    root = write_folder(tmp_path / "c", {"a": base.assign(y=["yes", "no"] * 4), "b": base.assign(y=[2, 1] * 4)})
    with pytest.raises(ValidationError, match="pos_label"):
        load_task_folder(root)
    with pytest.raises(ValidationError, match=r"pos_label 'yes' is not one of the outcome values \['1', '2'\]"):
        load_task_folder(root, pos_label="yes")
    root2 = write_folder(tmp_path / "d", {"a": base.assign(y=["yes", "no"] * 4)})
    assert load_task_folder(root2, pos_label="yes")["a"].y.tolist() == [1, 0] * 4


# ------------------------------------------------------------------ kind 8: nothing dropped silently
def test_unseen_levels_are_counted_in_a_warning_and_contribute_zero():
    X = pd.DataFrame({"asa": [1, 2, 3, 1, 2, 3], "age": np.linspace(40, 80, 6)})
    model = LogisticModel(schema=FeatureSchema.infer(X, types={"asa": "categorical"})).fit(X, [0, 1, 0, 1, 1, 0])
    new = pd.DataFrame({"asa": [5, 5, 1], "age": [60.0, 60.0, 60.0]})
    with pytest.warns(DataWarning, match=r"'asa': 2 row\(s\), e.g. \['5'\]"):
        logit = model.decision_function(new)
    coef = model.to_params()
    assert logit[0] == pytest.approx(coef.intercept + coef["age"] * model.schema_.transform(new)[0, -1])


def test_levels_missing_from_a_declared_schema_are_reported_when_fitting():
    schema = FeatureSchema([{"name": "asa", "type": "categorical", "categories": [1, 2]}])
    with pytest.warns(DataWarning, match=r"levels not declared in the schema.*'asa': 2 row\(s\), e.g. \['3'\]"):
        schema.fit(pd.DataFrame({"asa": [1, 2, 3, 3]}))


def test_invisible_characters_are_removed_from_descriptions_and_queries_with_a_warning():
    with pytest.warns(DataWarning, match=r"removed 2 invisible character\(s\) \['U\+200B', 'U\+FEFF'\]"):
        t = Task("a", "\ufeffPredict sepsis\u200b in adults", pd.DataFrame({"x": [1.0, 2.0]}), [0, 1])
    assert t.description == "Predict sepsis in adults"
    tasks = datasets.synthetic_family(n_tasks=5, n_features=2, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    with pytest.warns(DataWarning, match="query 0: removed 1 invisible"):
        hits = index.search(tasks.descriptions[0] + "\u200b", k=1)
    assert hits[0].task_id == tasks.ids[0] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValidationError, match=r"^query 0 is empty \(it holds only invisible characters\)"):
        index.search("\u200b \ufeff", k=1)


# ------------------------------------------------------------------ kind 9: frictions
def test_the_same_columns_in_another_order_are_matched_by_name(tmp_path):
    a = pd.DataFrame({"lactate": [1.0, 2.0, 3.0, 4.0], "age": [50.0, 60.0, 70.0, 80.0], "y": [0, 1, 0, 1]})
    root = write_folder(tmp_path / "o", {"a": a, "b": a[["y", "age", "lactate"]]})
    tc = load_task_folder(root)
    pd.testing.assert_frame_equal(tc["a"].X, tc["b"].X)


def test_tasks_that_cannot_be_fitted_load_and_are_skipped_with_a_warning(tmp_path):
    rng = np.random.default_rng(0)
    tables = {f"w{i}": pd.DataFrame({"lactate": rng.normal(size=40), "y": np.arange(40) % 2}) for i in range(3)}
    tables["all-events"] = pd.DataFrame({"lactate": rng.normal(size=40), "y": np.ones(40, int)})
    tables["three-rows"] = pd.DataFrame({"lactate": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    tc = load_task_folder(write_folder(tmp_path / "f", tables))
    assert len(tc) == 5
    with pytest.warns(UserWarning, match="2 task\\(s\\) left out of the index") as rec:
        index = TaskIndex.build(tc, embedder="hashing", progress=False)
    text = " ".join(str(w.message) for w in rec)
    assert "task 'all-events' has only one class (all 1)" in text and "task 'three-rows' has 3 rows" in text
    assert sorted(index.ids) == ["w0", "w1", "w2"] and set(index.skipped) == {"all-events", "three-rows"}
    index.save(tmp_path / "idx")  # the list travels with the index
    assert TaskIndex.load(tmp_path / "idx").skipped == index.skipped


# ------------------------------------------------------------------ property: dtype guesses do not matter
def _folder_variant(root, data, ids_style, code_style, label_style, text_form):
    """Write one logical task folder in a given set of pandas-typical spellings."""
    (root / "data").mkdir(parents=True)
    norm = lambda s: unicodedata.normalize(text_form, s)  # noqa: E731
    for tid, (codes, x, y, pids) in data.items():
        frame = pd.DataFrame({"lactate": x, "triage": codes, "ward": [norm("Zürich"), "Basel"] * (len(x) // 2),
                              "y": y, "patient_id": pids})
        if code_style == "float":
            frame["triage"] = frame["triage"].astype(float)
        elif code_style == "text":
            frame["triage"] = [f"{c}.0" for c in codes]
        if label_style == "bool":
            frame["y"] = frame["y"].astype(bool)
        if ids_style == "int":
            frame["patient_id"] = [int(p) for p in pids]
        frame.to_csv(root / "data" / f"{norm(tid)}.csv", index=False)
    pd.DataFrame({"task_id": [norm(t) for t in data], "description": [norm(f"Predict deterioration, {t}") for t in data],
                  "site": ["01"] * len(data)}).to_csv(root / "descriptions.csv", index=False)
    (root / "schema.json").write_text(json.dumps({"features": [
        {"name": "lactate"}, {"name": "triage", "type": "categorical"}, {"name": "ward", "type": "categorical"}]}))
    return root


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids_style=st.sampled_from(["text", "int"]), code_style=st.sampled_from(["int", "float", "text"]),
       label_style=st.sampled_from(["int", "bool"]), text_form=st.sampled_from(["NFC", "NFD"]),
       seed=st.integers(0, 3))
def test_dtype_guesses_give_identical_models_and_overlaps(tmp_path_factory, ids_style, code_style, label_style,
                                                          text_form, seed):
    rng = np.random.default_rng(seed)
    n = 24
    pids_all = [str(i) for i in range(1, n + 1)]  # digits only, so "int" ids are the same patients
    data = {}
    for tid, rows in (("gesamt-Zürich", np.arange(n)), ("männer", np.arange(n // 2))):
        codes = rng.integers(1, 4, n)[rows]
        x = rng.normal(size=n)[rows].round(3)
        y = (np.arange(n) % 2)[rows]
        data[tid] = (codes, x, y, [pids_all[i] for i in rows])
    ref_root = _folder_variant(tmp_path_factory.mktemp("ref"), data, "text", "int", "int", "NFC")
    var_root = _folder_variant(tmp_path_factory.mktemp("var"), data, ids_style, code_style, label_style, text_form)
    ref, var = load_task_folder(ref_root), load_task_folder(var_root)
    assert var.ids == ref.ids == ["gesamt-Zürich", "männer"]
    assert var.overlapping("männer") == ref.overlapping("männer") == ["gesamt-Zürich"]
    f_ref = fit_many(ref, progress=False)
    f_var = fit_many(var, progress=False)
    assert f_var.schema.design_names == f_ref.schema.design_names
    for tid in ref.ids:
        np.testing.assert_allclose(f_var.params[tid].vector, f_ref.params[tid].vector, atol=1e-10)


def test_canonical_forms_are_stable():
    assert [canonical_level(v) for v in (4, 4.0, "4.0", "04", np.int64(4), np.float32(4))] == ["4"] * 6
    assert canonical_level(True) == canonical_level(1) == "1"
    assert canonical_level(2.5) == canonical_level("2.50") == "2.5"
    assert canonical_id("007") == "007" and canonical_id(7.0) == "7"
    with pytest.raises(ValidationError, match="patient id 1.5 is not an integer"):
        canonical_id(1.5, "patient id")


def test_cli_exclusions_compare_site_codes_in_canonical_form():
    import unicodedata

    from ragim.cli_common import exclude_tasks

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 40)})
    y = np.arange(40) % 2
    sites = ["01", "02", unicodedata.normalize("NFC", "Zürich")]
    tasks = TaskCollection([Task(f"t{i}", f"task {i}", X, y, metadata={"site": s}) for i, s in enumerate(sites)])
    left = exclude_tasks(tasks, {"site": ["1"]})
    assert left.n_excluded == 1 and left.tasks.ids == ["t1", "t2"]
    left = exclude_tasks(tasks, {"site": [unicodedata.normalize("NFD", "Zürich")]})
    assert left.n_excluded == 1 and left.tasks.ids == ["t0", "t1"]


@pytest.mark.parametrize("dates", [["01/03/2024", "06/03/2024", "11/03/2024"], ["1.3.24", "6.3.24", "11.3.24"],
                                   ["2024/03/01", "2024/03/06", "2024/03/11"]])
def test_dates_written_the_spreadsheet_way_are_refused_like_iso_dates(dates):
    X = pd.DataFrame({"age": [60.0, 70.0, 65.0], "admitted": dates})
    with pytest.raises(ValidationError, match="column 'admitted' holds dates"):
        FeatureSchema.infer(X)


# ------------------------------------------------------------------ kind 9: codes and units that look like numbers
def test_integer_codes_inferred_continuous_are_named_in_a_warning():
    X = pd.DataFrame({"ward": [1, 2, 4, 2, 1, 4], "age": np.linspace(40, 80, 6), "smoker": [0, 1] * 3})
    with pytest.warns(DataWarning, match=r"'ward' \[1, 2, 4\]\. If a number is a code") as record:
        schema = FeatureSchema.infer(X)
    assert schema["ward"].type == "continuous" and schema["smoker"].type == "binary"
    assert not any("'age'" in str(w.message) or "'smoker'" in str(w.message) for w in record)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert FeatureSchema.infer(X, types={"ward": "categorical"})["ward"].type == "categorical"
        FeatureSchema.infer(X, types={"ward": "continuous"})  # declared: the trend is wanted


def test_dates_written_as_whole_numbers_warn_naming_the_column():
    rng = np.random.default_rng(4)
    days = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 700, 40), unit="D")
    X = pd.DataFrame({"admitted": days.strftime("%Y%m%d").astype(int), "age": rng.normal(60, 9, 40)})
    with pytest.warns(DataWarning, match=r"column 'admitted' holds whole numbers that read as dates") as rec:
        schema = FeatureSchema.infer(X)
    assert schema["admitted"].type == "continuous"
    assert not any("'age'" in str(w.message) for w in rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        FeatureSchema.infer(X, types={"admitted": "continuous"})  # declared: kept, silently
        # amounts that merely fall in the same range are not dates (month 13, day 32)
        FeatureSchema.infer(pd.DataFrame({"count": [20241301, 20240132, 20240101]}))
    sentinel = X.assign(admitted=X["admitted"].where(np.arange(40) != 7, 99999999))  # 1 of 40
    with pytest.warns(DataWarning, match="'admitted' holds whole numbers that read as dates"):
        FeatureSchema.infer(sentinel)


def test_a_folder_with_a_numeric_code_column_warns_once_naming_it(tmp_path):
    root = write_folder(tmp_path / "f", {"a": pain_cohort(40, gap=False), "b": pain_cohort(40, gap=True, seed=1)})
    with pytest.warns(DataWarning, match=r"'pain_type' \[1, 2, 3, 4\]") as record:
        load_task_folder(root, outcome="y")
    assert sum("pain_type" in str(w.message) for w in record) == 1


def test_a_folder_without_patient_ids_says_that_overlapping_tasks_cannot_be_kept_apart(tmp_path):
    a, b = pain_cohort(40, gap=False), pain_cohort(40, gap=False, seed=1)
    with pytest.warns(DataWarning, match="none of the 2 data files have a patient-id column 'patient_id'"):
        load_task_folder(write_folder(tmp_path / "none", {"a": a, "b": b}))
    with_ids = a.assign(patient_id=[f"p{i}" for i in range(40)])
    with pytest.warns(DataWarning, match=r"1 of the 2 data files have a patient-id column 'patient_id'; b lacks it,"):
        load_task_folder(write_folder(tmp_path / "some", {"a": with_ids, "b": b}))
    # the count is of the files that have the column, the names of those that lack it
    four = {"a": with_ids, "b": with_ids.assign(patient_id=[f"q{i}" for i in range(40)]),
            "c": with_ids.assign(patient_id=[f"r{i}" for i in range(40)]), "d": b}
    with pytest.warns(DataWarning, match=r"3 of the 4 data files have a patient-id column 'patient_id'; d lacks it"):
        load_task_folder(write_folder(tmp_path / "three", four))
    with pytest.warns(DataWarning, match=r"2 of the 4 data files .*; c, d lack it"):
        load_task_folder(write_folder(tmp_path / "two", {**four, "c": b}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_task_folder(write_folder(tmp_path / "all", {"a": with_ids, "b": with_ids.assign(
            patient_id=[f"q{i}" for i in range(40)])}))
    assert not any("patient-id column" in str(w.message) for w in caught)


def test_values_far_outside_the_fitted_range_warn_with_the_unit():
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"lactate": rng.lognormal(0.6, 0.4, 300), "age": rng.normal(60, 10, 300)})
    y = (rng.random(300) < 0.3).astype(int)
    schema = FeatureSchema([{"name": "lactate", "type": "continuous", "unit": "mmol/L"},
                            {"name": "age", "type": "continuous", "unit": "years"}])
    model = LogisticModel(schema=schema).fit(X, y)
    fine = X.iloc[:20]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        model.predict_proba(fine)
    in_mg_dl = fine.assign(lactate=fine["lactate"] * 9.01)  # lactate 1 mmol/L = 9.01 mg/dL
    fitted = model.schema_
    n_far = int((np.abs(in_mg_dl["lactate"] - fitted.means_["lactate"]) > 8 * fitted.scales_["lactate"]).sum())
    assert n_far > 0
    with pytest.warns(DataWarning, match=rf"'lactate': {n_far} row\(s\).*mmol/L") as record:
        model.predict_proba(in_mg_dl)
    assert not any("'age'" in str(w.message) for w in record)


def sepsis_site(n: int, *, seed: int, age=(65.0, 12.0), lactate=1.6, spo2_scale=1.0, site="A"):
    """One hospital's sepsis table with nothing else to warn about: patient ids, float ages,
    a skewed lab, SpO2 (as a percentage, or as a fraction with spo2_scale=0.01) and an outcome."""
    rng = np.random.default_rng(seed)
    age = rng.normal(*age, n)
    lac = rng.lognormal(np.log(lactate), 0.5, n)
    spo2 = rng.normal(95, 2.5, n).clip(75, 100)
    lp = -1 + 0.04 * (age - 65) + 0.8 * np.log(lac) - 0.1 * (spo2 - 95)
    y = (rng.random(n) < 1 / (1 + np.exp(-lp))).astype(int)
    return pd.DataFrame({"patient_id": [f"{site}{seed}-{i}" for i in range(n)], "age": age,
                         "lactate": lac, "spo2": spo2 * spo2_scale, "y": y})


def test_one_file_with_spo2_as_a_fraction_is_named_with_its_median_against_the_others(tmp_path):
    tables = {f"site{k}": sepsis_site(60, seed=k, site="ABCD"[k]) for k in range(4)}
    tables["site2"] = sepsis_site(60, seed=2, site="C", spo2_scale=0.01)  # 0.95, not 95
    with pytest.warns(DataWarning, match=r"'spo2' in site2\.csv \(median 0\.9\d+\) against a median of 9\d\.?\d* "
                      r"in the other 3 table\(s\) .*times smaller.*a fraction against a percentage.*"
                      r"convert them to the others. unit") as record:
        tasks = load_task_folder(write_folder(tmp_path / "f", tables), outcome="y")
    assert len(record) == 1  # one warning, for spo2 alone: the data hold nothing else to warn about
    assert "'age'" not in str(record[0].message) and "'lactate'" not in str(record[0].message)
    assert tasks.schema["spo2"].type == "continuous"  # still loads: the user converts the file
    # a declared schema.json skips inference, not the check; the unit is shown
    declared = {"features": [{"name": "age", "type": "continuous", "unit": "years"},
                             {"name": "lactate", "type": "continuous", "unit": "mmol/L"},
                             {"name": "spo2", "type": "continuous", "unit": "%"}]}
    with pytest.warns(DataWarning, match=r"'spo2' in site2\.csv .* against a median of 9\d\.?\d* %"):
        load_task_folder(write_folder(tmp_path / "declared", tables, schema=declared), outcome="y")
    # tasks given in Python are named by task id; lactate in mg/dL (x 9.01) among mmol/L too
    mg = {k: t.drop(columns=["patient_id", "y"]) for k, t in tables.items() if k != "site2"}
    mg["site1"] = mg["site1"].assign(lactate=mg["site1"]["lactate"] * 9.01)
    tasks = [Task(k, f"sepsis mortality at {k}", X, tables[k]["y"].to_numpy()) for k, X in mg.items()]
    with pytest.warns(DataWarning, match=r"'lactate' in task 'site1' \(median 1\d\.\d+\) .*times larger"):
        TaskCollection(tasks)


def test_ordinary_differences_between_hospitals_do_not_warn_about_scale(tmp_path):
    # older patients at one site (55 +- 10 against 70 +- 8), sicker ones at another (lactate
    # 1.5 against 3.0 mmol/L): real differences, a factor of 2 at most
    tables = {"young": sepsis_site(80, seed=0, age=(55.0, 10.0), lactate=1.5, site="A"),
              "old": sepsis_site(80, seed=1, age=(70.0, 8.0), lactate=1.5, site="B"),
              "sick": sepsis_site(80, seed=2, age=(70.0, 8.0), lactate=3.0, site="C")}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        load_task_folder(write_folder(tmp_path / "f", tables), outcome="y")
        load_task_folder(write_folder(tmp_path / "two", {k: tables[k] for k in ("young", "sick")}), outcome="y")
    # one task alone has nothing to be compared with, whatever its scale
    alone = {"frac": sepsis_site(80, seed=3, spo2_scale=0.01)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        load_task_folder(write_folder(tmp_path / "one", alone), outcome="y")
        FeatureSchema.infer(alone["frac"].drop(columns=["patient_id", "y"]))


def test_blanks_in_a_column_never_missing_when_fitted_warn_with_what_they_are_scored_as():
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"age": rng.normal(60, 10, 300), "sex": rng.choice(["F", "M"], 300),
                      "lactate": np.where(rng.random(300) < 0.1, np.nan, rng.lognormal(0.6, 0.4, 300))})
    y = (rng.random(300) < 0.3).astype(int)
    schema = FeatureSchema([{"name": "age", "type": "continuous", "unit": "years"},
                            {"name": "sex", "type": "categorical"},
                            {"name": "lactate", "type": "continuous"}])
    model = LogisticModel(schema=schema).fit(X, y)
    rows = X.iloc[:10].copy()
    rows.loc[rows.index[:3], "age"] = np.nan
    rows.loc[rows.index[:2], "sex"] = None
    rows.loc[rows.index[:4], "lactate"] = np.nan  # missing in training too: it has a term, no warning
    median = model.schema_.medians_["age"]
    with pytest.warns(DataWarning, match="never missing") as record:
        model.predict_proba(rows)
    text = " ".join(str(w.message) for w in record)
    assert f"'age': 3 row(s), scored as the training median {median:.4g}"[:40] in text and "years" in text
    assert "'sex': 2 row(s), scored as no level (all its one-hot terms 0 in a logistic model, no bin in a GAM, unlike every known level)" in text
    assert "'lactate'" not in text
    with warnings.catch_warnings():  # complete rows, or blanks the model has a term for: silent
        warnings.simplefilter("error", DataWarning)
        model.predict_proba(X.iloc[:10])


def test_rows_with_percentages_or_detection_limits_get_advice_that_keeps_their_value():
    """'38%' in a continuous column is 38, and '<0.5' a very low value: the generic advice
    (declare categorical, declare missing) would lose or invert them."""
    X = pd.DataFrame({"ef": [35.0, 40.0, 55.0, 60.0], "lactate": [1.5, 2.0, 0.8, 3.1]})
    schema = FeatureSchema.infer(X).fit(X)
    with pytest.raises(ValidationError, match=r"they are percentages written with '%' \(e.g. \['38%', '45%'\]\)"):
        schema.validate_frame(X.assign(ef=["38%", "45%", 50.0, 61.0]))
    with pytest.raises(ValidationError, match=r"\['<0.5'\] look like results reported against a detection limit"):
        schema.validate_frame(X.assign(lactate=["<0.5", 2.0, 0.8, 3.1]))
    with pytest.raises(ValidationError, match="declare them missing"):  # a real marker keeps its advice
        schema.validate_frame(X.assign(lactate=["unknown", 2.0, 0.8, 3.1]))


def test_age_groups_written_with_inequalities_stay_categories():
    X = pd.DataFrame({"age_group": ["<65", ">=65"] * 20, "lactate": np.linspace(0.5, 4, 40)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert FeatureSchema.infer(X)["age_group"].type == "categorical"


def test_rows_with_decimal_commas_are_refused_with_the_fix():
    X = pd.DataFrame({"lactate": [1.5, 2.0, 0.8, 3.1], "age": [50.0, 60.0, 70.0, 80.0]})
    schema = FeatureSchema.infer(X).fit(X)
    with pytest.raises(ValidationError, match="has non-numeric values, e.g. \\['1,5', '2,0', '0,8'\\] in 4 of 4 row\\(s\\); "
                                              "they look like numbers with a decimal comma"):
        schema.validate_frame(X.assign(lactate=["1,5", "2,0", "0,8", "3,1"]))
    with pytest.raises(ValidationError, match=r"has non-numeric values, e.g. \['unknown'\] in 1 row\(s\); if "
                                              r"they mark missing values, declare them missing"):
        schema.validate_frame(X.assign(lactate=["unknown", 2.0, 0.8, 3.1]))
    with pytest.raises(ValidationError, match=r"\['high'\] look like results written as words among numbers"):
        schema.validate_frame(X.assign(lactate=["high", 2.0, 0.8, 3.1]))  # a result: never "missing"


def test_a_column_of_record_numbers_warns_that_it_is_an_identifier_not_an_amount():
    rng = np.random.default_rng(5)
    n = 40
    X = pd.DataFrame({"mrn": rng.permutation(np.arange(700_000, 700_000 + 4 * n, 4)),
                      "row": np.arange(1, n + 1), "age": rng.normal(60, 9, n).round(),
                      "bili": rng.lognormal(0, 1, n)})
    with pytest.warns(DataWarning, match=r"'mrn', 'row' look like identifiers") as rec:
        schema = FeatureSchema.infer(X)
    assert schema["mrn"].type == "continuous"
    assert not any("'age'" in str(w.message) or "'bili'" in str(w.message) for w in rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        FeatureSchema.infer(X, types={"mrn": "continuous", "row": "continuous"})  # declared
        FeatureSchema.infer(X.head(10))  # too few rows to tell an identifier from a measurement
        # the same numbers twice in a table are not one per row (two visits of one patient)
        FeatureSchema.infer(pd.DataFrame({"mrn": np.repeat(np.arange(30), 2)}))


def test_a_text_identifier_column_is_refused_with_the_patient_id_advice():
    X = pd.DataFrame({"PatientID": [f"P{i:04d}" for i in range(30)], "age": np.arange(30.0)})
    with pytest.raises(ValidationError, match="looks like an identifier.*--patient-id"):
        FeatureSchema.infer(X)
    ward = pd.DataFrame({"ward": [f"W{i % 15}" for i in range(30)]})  # repeated: a real category
    with pytest.raises(ValidationError, match="encode it as numbers"):
        FeatureSchema.infer(ward)


def test_categories_that_differ_only_in_letter_case_warn_and_stay_apart():
    a = pd.DataFrame({"sex": ["F", "M"] * 5, "age": np.arange(10.0)})
    b = pd.DataFrame({"sex": ["f", "m"] * 5, "age": np.arange(10.0)})
    with pytest.warns(DataWarning, match=r"'sex' has categories that differ only in letter case "
                      r"\('F' / 'f'; 'M' / 'm'\)"):
        schema = FeatureSchema.infer([a, b])
    fitted = schema.fit(pd.concat([a, b]))
    assert sum(n.startswith("sex[") for n in fitted.design_names) == 4  # F, M, f and m


def test_outcomes_in_a_series_indexed_in_another_order_than_x_are_refused():
    X = pd.DataFrame({"bili": [0.5, 3.0, 1.0, 8.0]}, index=[10, 11, 12, 13])
    y = pd.Series([0, 1, 0, 1], index=X.index)
    shuffled = X.sort_values("bili")  # index 10, 12, 11, 13: y would land on other patients
    with pytest.raises(ValidationError, match=r"y = y.loc\[X.index\]"):
        Task("t", "Predict death.", shuffled, y)
    task = Task("t", "Predict death.", shuffled, y.loc[shuffled.index])
    assert task.y.tolist() == [0, 0, 1, 1]
    # other labels (X's index reset) are matched by position, as scikit-learn does
    assert Task("t", "Predict death.", shuffled.reset_index(drop=True), y).y.tolist() == [0, 1, 0, 1]


# ------------------------------------------------------------------ missing-value codes
def _creatinine_tables(code, n_tasks=3, n=120, seed=0):
    """Tables of age and creatinine (0.3-3 mg/dL) whose missing creatinine is written ``code``."""
    rng = np.random.default_rng(seed)
    tables = {}
    for k in range(n_tasks):
        cr = rng.lognormal(0, 0.3, n).round(2)
        y = (rng.random(n) < 1 / (1 + np.exp(-(cr - 1) * 2))).astype(int)
        cr = np.where(rng.random(n) < 0.2, np.nan, cr)
        creatinine = cr if code is None else np.where(np.isnan(cr), code, cr)
        tables[f"t{k}"] = pd.DataFrame({"patient_id": [f"t{k}-{i}" for i in range(n)],
                                        "age": rng.normal(65, 10, n).round(), "creatinine": creatinine, "y": y})
    return tables


@pytest.mark.parametrize("code", [-99, 999, -1, 9999])
def test_a_missing_value_code_in_a_lab_column_warns_naming_the_value_its_count_and_the_fix(code):
    tables = _creatinine_tables(code)
    n_code = sum(int((t["creatinine"] == code).sum()) for t in tables.values())
    with pytest.warns(DataWarning, match="look like missing-value codes") as record:
        FeatureSchema.infer([t.drop(columns=["y", "patient_id"]) for t in tables.values()])
    text = " ".join(str(w.message) for w in record if "missing-value codes" in str(w.message))
    assert f"'creatinine' holds {code} in {n_code} row(s)" in text
    assert f"na_values=[{code}]" in text and f"--na-values {code}" in text
    assert "'age'" not in text


def test_missing_value_codes_warn_at_load_also_with_a_declared_schema_and_na_values_makes_them_missing(tmp_path):
    schema = {"features": [{"name": "age", "type": "continuous"}, {"name": "creatinine", "type": "continuous"}]}
    for declared in (None, schema):
        root = write_folder(tmp_path / f"f{declared is None}", _creatinine_tables(-99), schema=declared)
        with pytest.warns(DataWarning, match="'creatinine' holds -99 in"):
            load_task_folder(root)
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)
            tc = load_task_folder(root, na_values=[-99])
    blank = load_task_folder(write_folder(tmp_path / "blank", _creatinine_tables(None)))
    coded = load_task_folder(root, na_values="-99")  # text, numbers and -99.0 alike
    for t in tc.ids:
        pd.testing.assert_frame_equal(coded[t].X, blank[t].X)
        assert coded[t].X["creatinine"].isna().any() and (coded[t].X["creatinine"].dropna() > 0).all()
    index = TaskIndex.build(coded, embedder="hashing")
    assert "creatinine__missing" in index.params("t0").names


def test_na_values_apply_to_parquet_files_too(tmp_path):
    root = write_folder(tmp_path / "f", _creatinine_tables(-99))
    for f in (root / "data").glob("*.csv"):
        table = pd.read_csv(f)
        table["creatinine"] = table["creatinine"].astype(object).where(table["creatinine"] != -99, ".")
        table.astype({"creatinine": str}).to_parquet(f.with_suffix(".parquet"))
        f.unlink()
    tc = load_task_folder(root, na_values=["."])
    assert tc.schema["creatinine"].type == "continuous"
    assert tc["t0"].X["creatinine"].dtype.kind == "f" and tc["t0"].X["creatinine"].isna().any()


def test_csv_and_parquet_read_missing_text_alike(tmp_path):
    from ragim.rows import read_table

    table = pd.DataFrame({"patient_id": ["a1", "a2", "NA", "a4", "a5", "a6"],
                          "lactate": ["1.5", "NA", "2.0", "null", "3.1", "N/A"],
                          "smoker": ["yes", "NA", "no", "n/a", "None", "NA "],
                          "y": ["1", "0", "NA", "1", "0", "1"]})
    table.to_csv(tmp_path / "t.csv", index=False)
    table.to_parquet(tmp_path / "t.parquet", index=False)
    for na in (None, ["."], {"smoker": "no"}):
        read = [read_table(tmp_path / f"t.{fmt}", text_columns=("patient_id", "y"), na_values=na)
                for fmt in ("csv", "parquet")]
        pd.testing.assert_frame_equal(read[0], read[1])
    csv = read[0]
    assert csv["lactate"].dtype.kind == "f" and csv["lactate"].isna().sum() == 3
    # "no" declared for smoker; the word "None" is a value (not pandas' default list)
    assert csv["smoker"].isna().sum() == 3 and csv["smoker"].tolist()[-2:] == ["None", "NA "]
    assert csv["patient_id"].isna().sum() == 1 and csv["y"].isna().sum() == 1

    tables = {f"t{k}": pd.DataFrame({"patient_id": [f"t{k}-{i}" for i in range(40)],
                                     "lactate": [("NA" if i % 7 == 0 else str(1 + i / 10)) for i in range(40)],
                                     "smoker": [("NA", "yes", "no", "null")[i % 4] for i in range(40)],
                                     "y": [i % 3 == 0 for i in range(40)]}) for k in range(2)}
    roots = {fmt: write_folder(tmp_path / fmt, tables) for fmt in ("csv", "parquet")}
    for f in (roots["parquet"] / "data").glob("*.csv"):
        pd.read_csv(f, dtype=str, keep_default_na=False).to_parquet(f.with_suffix(".parquet"))
        f.unlink()
    loaded = {fmt: load_task_folder(root) for fmt, root in roots.items()}
    for t in ("t0", "t1"):
        pd.testing.assert_frame_equal(loaded["csv"][t].X, loaded["parquet"][t].X)
    assert set(loaded["parquet"]["t0"].X["smoker"].dropna()) == {"no", "yes"}
    assert loaded["parquet"]["t0"].X["lactate"].isna().sum() == 6


def test_bad_na_values_are_refused_in_one_line(tmp_path):
    root = write_folder(tmp_path / "f", _creatinine_tables(None))
    for bad, match in ((True, "text or numbers"), ([" "], "blank value"), (object(), "a value or a list")):
        with pytest.raises(ValidationError, match=match):
            load_task_folder(root, na_values=bad)


def _sex_coded_9_tables(n_tasks=2, n=80, seed=0):
    """Tables where sex 9 means unknown, and hemoglobin 9.0 g/dL is a real value."""
    rng = np.random.default_rng(seed)
    tables = {}
    for k in range(n_tasks):
        sex = rng.choice([1, 2], n)
        sex[::10] = 9
        hb = rng.normal(12, 2, n).round()
        hb[1::10] = 9.0
        tables[f"t{k}"] = pd.DataFrame({"patient_id": [f"t{k}-{i}" for i in range(n)], "sex": sex,
                                        "hb": hb, "y": (rng.random(n) < 0.4).astype(int)})
    return tables


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_na_values_by_column_apply_to_that_column_only_as_in_pandas(tmp_path, fmt):
    tables = _sex_coded_9_tables()
    n_hb9 = int((tables["t0"]["hb"] == 9).sum())
    root = write_folder(tmp_path / "f", tables)
    if fmt == "parquet":
        for f in (root / "data").glob("*.csv"):
            pd.read_csv(f).to_parquet(f.with_suffix(".parquet"))
            f.unlink()
    for spec in ({"sex": [9]}, {"sex": 9}, {" sex ": "9"}, {"sex": [9], "hb": []}):
        X = load_task_folder(root, na_values=spec)["t0"].X
        assert X["sex"].isna().sum() == 8 and set(X["sex"].dropna()) == {1, 2}, spec
        assert (X["hb"] == 9).sum() == n_hb9 >= 8 and X["hb"].notna().all(), spec
    X = load_task_folder(root, na_values=[9])["t0"].X  # a list applies to every column
    assert X["sex"].isna().sum() == 8 and X["hb"].isna().sum() == n_hb9
    for bad, match in (({"sexx": 9}, r"names column\(s\) \['sexx'\] that .*t0\.\w+ does not have"),
                       ({"patient_id": "x"}, "patient ids are never read as missing"),
                       ({"sex": [" "]}, "blank value"), ({"sex": {"a": 1}}, "got a dict"),
                       ({9: [9]}, "column names as keys")):
        with pytest.raises(ValidationError, match=match) as info:
            load_task_folder(root, na_values=bad)
        assert "\n" not in str(info.value)


def test_bundled_datasets_raise_no_missing_value_code_warning():
    from ragim.schema import missing_codes

    collections = [datasets.heart_disease(), datasets.colon_cancer(),
                   datasets.synthetic_family(n_tasks=60, n_features=10, seed=3),
                   datasets.procedure_family(n_tasks=120, seed=1)]
    for tc in collections:
        for f in tc.schema.features:
            if f.type == "continuous":
                assert missing_codes([t.X[f.name] for t in tc]) == [], (tc.name, f.name)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*missing-value codes", category=DataWarning)
            FeatureSchema.infer([t.X for t in tc])


def test_ordinary_values_that_equal_a_code_are_not_flagged():
    from ragim.schema import missing_codes

    rng = np.random.default_rng(2)
    ages = pd.Series(np.r_[rng.normal(60, 12, 300).round(), 99, 88, 77])  # real ages, not codes
    crp = pd.Series(np.r_[rng.lognormal(1.5, 1.0, 2000).round(), 99])  # a long right tail
    spo2 = pd.Series(rng.integers(85, 101, 300))  # 88, 99 inside the range
    assert missing_codes([ages]) == missing_codes([crp]) == missing_codes([spo2]) == []


def _code_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "missing-value codes" in str(w.message)]


def test_missing_value_codes_in_new_rows_warn_at_predict_explain_and_adapt():
    from ragim.validation import adapt_params

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(65, 10, 200).round(), "lactate": rng.gamma(2, 1, 200)})
    y = (rng.random(200) < 1 / (1 + np.exp(-(X["age"] - 65) / 10))).astype(int)
    model = LogisticModel().fit(X, y)
    new = X.iloc[:30].copy()
    new.loc[new.index[:10], "age"] = -9  # 7.4 SDs from the mean: the far-value check is silent
    new.loc[new.index[10], "lactate"] = 999
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict_proba(new)
    (msg,) = _code_warnings(caught)
    assert "'age' holds -9 in 10 row(s)" in msg and "'lactate' holds 999 in 1 row(s)" in msg
    assert "--na-values -9,999" in msg and "outside the range the model was fitted on" in msg
    for run in (
        lambda: model.explain(new.iloc[[0]]),
        lambda: adapt_params(model.to_params(), new, y[:30]),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
        assert any("'age' holds -9" in m for m in _code_warnings(caught))
    ages = X.iloc[:30].copy()  # real values equal to a code, inside the fitted range: no warning
    ages.loc[ages.index[:3], "age"] = 77
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict_proba(ages)
    assert not _code_warnings(caught)


def test_a_new_value_of_a_column_that_never_varied_warns_at_predict():
    """Hospital 5 in every fitted row: patients of hospital 6 are scored as if the column had
    no effect, and the warning says the model never saw it vary; hospital 5 (or '5.0') or a
    blank says nothing."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"age": rng.normal(65, 10, 120), "hospital": 5})
    y = (rng.random(120) < 0.4).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the constant column's own warning at inference
        model = LogisticModel().fit(X, y)
    new = X.iloc[:8].copy()
    new.loc[new.index[:3], "hospital"] = 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict_proba(new)
    msgs = [str(w.message) for w in caught if "never varied" in str(w.message)]
    assert len(msgs) == 1 and "'hospital': 3 row(s) differ from 5" in msgs[0]
    same = X.iloc[:8].astype({"hospital": object})
    same.loc[same.index[0], "hospital"] = "5.0"
    same.loc[same.index[1], "hospital"] = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict_proba(same)
    assert not [w for w in caught if "never varied" in str(w.message)]


@pytest.mark.parametrize(
    "make",
    [datasets.heart_disease, datasets.colon_cancer, lambda: datasets.procedure_family(n_tasks=200)],
    ids=["heart", "colon", "procedure"],
)
def test_bundled_datasets_scored_on_their_own_rows_raise_no_code_warning(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tasks = make()
    rows = pd.concat([t.X for t in tasks], ignore_index=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = tasks.schema.copy().fit(rows)  # as an index fits it: on every task's rows
    assert schema.missing_codes(rows) == {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema.warn_new_rows(schema.validate_frame(rows))
        LogisticModel(schema=schema).fit(tasks[0].X, tasks[0].y).predict_proba(rows)
    assert not _code_warnings(caught)


# ------------------------------------------------------------------ kind 10: numbers and codes as exports write them
def _alk_phos(n: int, seed: int = 0) -> np.ndarray:
    """Alkaline phosphatase in U/L (about 300-14000, a third of them >= 1000, as in survival::pbc)."""
    return np.random.default_rng(seed).lognormal(6.9, 0.7, n).round().clip(290, 13900).astype(int)


def _grouped(v: int, mark: str) -> str:
    return f"{v:,}".replace(",", mark)


def _lab_folder(root, column: list[str], *, sep: str = ",", n_tasks: int = 2):
    (root / "data").mkdir(parents=True)
    n = len(column) // n_tasks
    for k in range(n_tasks):
        pd.DataFrame({"patient_id": [f"{k}-{i}" for i in range(n)], "alk_phos": column[k * n:(k + 1) * n],
                      "y": np.arange(n) % 2}).to_csv(root / "data" / f"t{k}.csv", sep=sep, index=False)
    pd.DataFrame({"task_id": [f"t{k}" for k in range(n_tasks)],
                  "description": [f"Predict death in cholangitis, clinic {k}" for k in range(n_tasks)]}).to_csv(
        root / "descriptions.csv", index=False)
    return root


@pytest.mark.parametrize("sep, mark", [(";", "."), (",", ","), (";", ","), (",", "\u00a0"), (";", "\u202f")])
def test_numbers_with_a_thousands_separator_are_refused_naming_the_column_and_read_with_thousands(
        tmp_path, sep, mark):
    """A German spreadsheet writes 1718 U/L as '1.718' (pandas reads 1.718); an English one as "1,718" (text)."""
    true = _alk_phos(120)
    root = _lab_folder(tmp_path / "f", [_grouped(v, mark) for v in true], sep=sep)
    with pytest.raises(ValidationError, match=rf"t0.csv: column 'alk_phos' holds numbers written with "
                                              rf"{re.escape(repr(mark))} as a thousands separator \(e\.g\. \['"
                                              rf".*read the file with thousands={re.escape(repr(mark))}") as err:
        load_task_folder(root, sep=sep)
    assert "decimal comma" not in str(err.value) and "\n" not in str(err.value)
    tc = load_task_folder(root, sep=sep, thousands=mark)
    read = np.concatenate([t.X["alk_phos"].to_numpy() for t in tc])
    np.testing.assert_array_equal(read, true)
    assert tc.schema["alk_phos"].type == "continuous"

    from ragim.rows import read_rows

    rows = root / "data" / "t0.csv"
    with pytest.raises(ValidationError, match=r"--rows .*t0.csv: column 'alk_phos' holds numbers written with"):
        read_rows(rows, sep=sep, outcome="y")
    np.testing.assert_array_equal(read_rows(rows, sep=sep, outcome="y", thousands=mark).X["alk_phos"], true[:60])


def test_the_pandas_advice_for_a_no_break_space_separator_reads_the_numbers(tmp_path):
    """pandas' C parser ignores thousands='\\xa0' (two bytes in UTF-8) and left '1\\xa0718' as
    text, so the advice given for a DataFrame did not work; it names engine='python' now."""
    true = _alk_phos(60)
    text = [_grouped(v, "\u00a0") for v in true]
    with pytest.raises(ValidationError, match=r"pd.read_csv\(\.\.\., thousands='\\xa0', engine='python'\)"):
        FeatureSchema.infer(pd.DataFrame({"alk_phos": text}))
    pd.DataFrame({"alk_phos": text}).to_csv(tmp_path / "x.csv", index=False)
    read = pd.read_csv(tmp_path / "x.csv", thousands="\u00a0", engine="python")["alk_phos"]
    np.testing.assert_array_equal(read, true)


def test_german_thousands_with_a_decimal_comma_read_as_one_number(tmp_path):
    values = ["1.718,4", "961,2", "7.394,8", "516,0", "2.115,5", "702,3"] * 5
    root = _lab_folder(tmp_path / "f", values, sep=";")
    with pytest.raises(ValidationError, match="column 'alk_phos' holds numbers written with '.' as a thousands"):
        load_task_folder(root, sep=";")
    tc = load_task_folder(root, sep=";", thousands=".")
    assert tc["t0"].X["alk_phos"].tolist()[:4] == [1718.4, 961.2, 7394.8, 516.0]


@pytest.mark.parametrize("values", [
    ["0.5", "1.250", "2", "3", "0.75", "1.5", "2.125"],  # mmol/L, one value written with 3 decimals
    ["1.015", "1.020", "1.030", "999", "1.010", "1.025"],  # urine specific gravity, 999 = missing
    ["1.250", "2.125", "1", "3", "2"],  # no value of 100-999 written in full
    ["0.500", "120", "250", "0.125"],  # a grouped number never starts with 0
    ["1.5", "250", "1.718", "300"],  # '1.5' is a decimal, so '.' is not a thousands separator here
])
def test_decimals_with_three_places_are_not_taken_for_a_thousands_separator(tmp_path, values):
    from ragim.schema import thousands_separator

    assert thousands_separator(values) is None
    root = _lab_folder(tmp_path / "f", values * 4, sep=";")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # 999 warns as a missing-value code
        tc = load_task_folder(root, sep=";")
    assert tc["t0"].X["alk_phos"].tolist()[:len(values)] == [float(v) for v in values]


def test_a_decimal_comma_is_still_named_as_one_and_thousands_in_a_dataframe_are_refused():
    from ragim.schema import decimal_comma_values, thousands_separator

    assert decimal_comma_values(["1,5", "961", "0,75"]) == ["1,5", "0,75"]
    assert thousands_separator(["1,5", "961", "0,75"]) is None
    text = [_grouped(v, ".") for v in _alk_phos(60)]
    X = pd.DataFrame({"alk_phos": text, "age": np.linspace(40, 80, 60)})
    with pytest.raises(ValidationError, match=r"column 'alk_phos' holds numbers written with '\.' as a thousands "
                                              r"separator .*pd.read_csv\(\.\.\., thousands='\.'\)"):
        FeatureSchema.infer(X)
    schema = FeatureSchema.infer(X.assign(alk_phos=_alk_phos(60).astype(float))).fit(X.assign(alk_phos=1.0 * _alk_phos(60)))
    with pytest.raises(ValidationError, match=r"column 'alk_phos' holds numbers written with '\.' as a thousands"):
        schema.validate_frame(X)


def test_ward_codes_that_look_like_exponents_keep_their_names_and_levels():
    """'3E1' (ward 3 East, bay 1) is not 3x10^1: it must not merge with ward 30, nor '4E2' become 400."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"age": rng.normal(60, 10, 200).round(), "ward": rng.choice(["3E1", "30", "4E2", "ICU"], 200)})
    schema = FeatureSchema.infer(X, types={"ward": "categorical"}).fit(X)
    assert schema.design_names == ["age", "ward[30]", "ward[3E1]", "ward[4E2]", "ward[ICU]"]
    D = pd.DataFrame(schema.transform(X), columns=schema.design_names)
    for ward in ("3E1", "30", "4E2", "ICU"):
        assert (D.loc[(X.ward == ward).to_numpy(), f"ward[{ward}]"] == 1).all()
    assert [canonical_level(v) for v in ("3E1", "+5", "1_000", "0x1F", "inf", "nan", "\u0663", "1e-3")] == \
        ["3E1", "+5", "1_000", "0x1F", "inf", "nan", "\u0663", "1e-3"]
    assert [canonical_level(v) for v in ("04", "-2.50", ".5", " 7 ", "4.")] == ["4", "-2.5", "0.5", "7", "4"]
    # inferred: text codes, not numbers with 'ICU' as a missing-value code
    wards = X.assign(ward=X.ward.replace({"30": "5W2"}))
    assert FeatureSchema.infer(wards)["ward"].type == "categorical"
    # mostly text codes with one numeric-looking ward ('30'): a category, '30' one of its levels
    assert FeatureSchema.infer(X)["ward"].type == "categorical"


def test_group_codes_that_look_like_exponents_are_not_merged():
    from ragim.cli_common import exclude_tasks

    X = pd.DataFrame({"age": np.random.default_rng(0).normal(60, 10, 40)})
    tasks = TaskCollection([Task(f"t{i}", f"task {i}", X, np.arange(40) % 2, metadata={"site": s})
                            for i, s in enumerate(["3E1", "30", "030"])])
    left = exclude_tasks(tasks, {"site": ["30"]})
    assert left.n_excluded == 2 and left.tasks.ids == ["t0"]
    train, test = tasks.group_split("site", ["3E1"])
    assert test.ids == ["t0"] and train.ids == ["t1", "t2"]


def _pbc_like(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"patient_id": [f"{seed}-{i}" for i in range(n)],
                         "bili": rng.lognormal(0.5, 1, n).round(1), "edema": rng.choice([0, 0.5, 1], n),
                         "y": (rng.random(n) < 0.4).astype(int)})


def test_parquet_decimal_columns_read_as_the_numbers_they_are(tmp_path):
    """SQL exports store NUMERIC(6,2) as Parquet DECIMAL: pandas gives decimal.Decimal objects."""
    import decimal

    tables = {f"t{k}": _pbc_like(80, k) for k in range(2)}
    csv = load_task_folder(write_folder(tmp_path / "csv", tables))
    root = write_folder(tmp_path / "pq", tables)
    for f in (root / "data").glob("*.csv"):
        t = pd.read_csv(f, dtype={"patient_id": str})
        for c in ("bili", "edema", "y"):
            t[c] = t[c].map(lambda v: decimal.Decimal(str(v)))
        t.to_parquet(f.with_suffix(".parquet"), index=False)
        f.unlink()
    assert isinstance(pd.read_parquet(root / "data" / "t0.parquet")["bili"][0], decimal.Decimal)
    pq = load_task_folder(root)
    assert [pq.schema[c].type for c in ("bili", "edema")] == ["continuous", "continuous"]
    for t in csv.ids:
        pd.testing.assert_frame_equal(pq[t].X, csv[t].X)
        np.testing.assert_array_equal(pq[t].y, csv[t].y)


def test_decimal_values_in_a_dataframe_behave_as_numbers():
    import decimal

    t = _pbc_like(120)
    X = t[["bili", "edema"]].assign(grade=np.random.default_rng(1).choice([1, 2, 3], 120))
    as_decimal = X.map(lambda v: decimal.Decimal(str(v)))
    as_decimal.loc[3, "bili"] = decimal.Decimal("NaN")
    X.loc[3, "bili"] = np.nan
    types = {"grade": "categorical"}
    schema = FeatureSchema.infer(as_decimal, types=types).fit(as_decimal)
    ref = FeatureSchema.infer(X, types=types).fit(X)
    assert schema.design_names == ref.design_names == ["bili", "bili__missing", "edema", "grade[1]", "grade[2]",
                                                       "grade[3]"]
    np.testing.assert_allclose(schema.transform(as_decimal), ref.transform(X))
    assert canonical_level(decimal.Decimal("0.50")) == "0.5" and canonical_id(decimal.Decimal("12")) == "12"


@pytest.mark.parametrize("written", ["%d-%b-%Y", "%b %d %Y", "%d %B %Y", "%B %d, %Y", "%d%b%Y", "%d-%b-%y %H:%M"])
def test_dates_with_the_month_as_a_word_are_refused_like_iso_dates(written):
    days = pd.date_range("1990-01-01", periods=60, freq="17D")
    X = pd.DataFrame({"age": np.linspace(40, 80, 60), "diagnosed": days.strftime(written)})
    with pytest.raises(ValidationError, match="column 'diagnosed' holds dates; a model cannot use a calendar date"):
        FeatureSchema.infer(X)


@pytest.mark.parametrize("months", [["Oct", "Nov", "Dec"], ["May 2020", "Jun 2020", "Jul 2020"],
                                    ["March", "April", "May"], ["3E1", "Oct 19", "ward 12"]])
def test_month_names_without_a_day_and_year_stay_categories(months):
    X = pd.DataFrame({"age": np.linspace(40, 80, 30), "admitted": months * 10})
    assert FeatureSchema.infer(X)["admitted"].type == "categorical"


def test_a_global_missing_code_that_is_an_outcome_label_leaves_the_outcome_alone(tmp_path):
    """--na-values 0 (lab values never measured, as Pima codes them) blanked every 0 of the
    outcome too, and the error said the outcome was empty. A code given for every column blanks
    an outcome cell only when it cannot be a label (not 0, 1, true/false, pos_label); named for
    the outcome column it applies there as given."""
    from ragim.datasets.folder import load_task_folder
    from ragim.rows import outcome_na_codes, read_rows

    assert outcome_na_codes(["0", "0.0", "TRUE", "-9", "."], "y") == ["-9", "."]
    assert outcome_na_codes(["died", "-9"], "y", pos_label="died") == ["-9"]
    assert outcome_na_codes({"y": ["0"], "glucose": ["0"]}, "y") == ["0"]
    frame = pd.DataFrame({"glucose": [0, 110, 95, 0, 130, 88, 101, 0], "y": [0, 1, 0, 0, 1, 0, 1, -9]})
    frame.iloc[:7].to_csv(tmp_path / "rows.csv", index=False)
    rows = read_rows(tmp_path / "rows.csv", outcome="y", na_values=["0"])
    assert rows.y.tolist() == [0, 1, 0, 0, 1, 0, 1] and rows.X["glucose"].isna().sum() == 2
    frame.to_csv(tmp_path / "coded.csv", index=False)
    with pytest.raises(ValidationError, match="outcome column 'y' is empty in 1 data row"):
        read_rows(tmp_path / "coded.csv", outcome="y", na_values=["0", "-9"])
    root = tmp_path / "tasks"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in ("a", "b"):
        pd.DataFrame({"glucose": rng.choice([0, 90, 120, 150], 40), "y": np.arange(40) % 2}).to_csv(
            root / "data" / f"{t}.csv", index=False)
    pd.DataFrame({"task_id": ["a", "b"], "description": ["diabetes a", "diabetes b"]}).to_csv(
        root / "descriptions.csv", index=False)
    tasks = load_task_folder(root, na_values=["0"])
    assert tasks["a"].y.tolist() == (np.arange(40) % 2).tolist()
    assert tasks["a"].X["glucose"].isna().any()


def _read_folder(tmp_path, frames: dict, *, schema: dict | None = None, parquet=(), **kw):
    (tmp_path / "data").mkdir()
    for tid, df in frames.items():
        if tid in parquet:
            df.to_parquet(tmp_path / "data" / f"{tid}.parquet")
        else:
            df.to_csv(tmp_path / "data" / f"{tid}.csv", index=False, sep=kw.get("sep", ","))
    pd.DataFrame({"task_id": list(frames), "description": [f"task {t}" for t in frames]}).to_csv(
        tmp_path / "descriptions.csv", index=False
    )
    if schema is not None:
        (tmp_path / "schema.json").write_text(json.dumps(schema))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_task_folder(tmp_path, **kw)


def _site(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.normal(60, 10, n).round().astype(int), "y": [0, 1] * (n // 2)})


def test_float_patient_ids_match_across_parquet_and_csv(tmp_path):
    """Ids of a float column (5.0) are id 5 in Parquet and in CSV ('5.0' read as text) alike."""
    whole = _site().assign(patient_id=[float(i) for i in range(1, 41)])
    tasks = _read_folder(tmp_path, {"all": whole, "half": whole.iloc[:20]}, parquet=("all",))
    assert tasks["half"].metadata["patient_ids"][:3] == ["1", "2", "3"]
    assert tasks["all"].metadata["patient_ids"][:3] == ["1", "2", "3"]
    assert sorted(tasks.overlapping("all")) == ["half"]
    # false-alarm side: leading zeros and ids mixing '5.0' with text stay as written
    from ragim.canonical import canonical_ids

    assert canonical_ids(["0005", "12"]) == ["0005", "12"]
    assert canonical_ids(["5.0", "A7"]) == ["5.0", "A7"]
    assert canonical_ids(["007.0", "8.0"]) == ["007.0", "8.0"]


def test_parquet_ids_saved_as_the_index_are_read(tmp_path):
    """A table saved after set_index('patient_id') holds its ids as a column of the Parquet
    schema; pd.read_parquet made them the index, so the file was said to lack them and shared
    patients went unseen (leave-task-out then scores a target on its own patients)."""
    from ragim.rows import read_rows

    whole = _site().assign(patient_id=[f"P{i}" for i in range(40)])
    tasks = _read_folder(tmp_path, {"all": whole.set_index("patient_id"), "half": whole.iloc[:20]},
                         parquet=("all",))
    assert tasks["all"].metadata["patient_ids"][:2] == ["P0", "P1"]
    assert list(tasks["all"].X.columns) == list(tasks["half"].X.columns)
    assert tasks.overlapping("half") == ["all"]
    rows = read_rows(tmp_path / "data" / "all.parquet", outcome="y")
    assert rows.ids.tolist()[:2] == ["P0", "P1"] and list(rows.X.columns) == ["age"]


def test_float32_category_codes_are_the_codes_written(tmp_path):
    """A Parquet REAL (float32) stage 1.1 is level '1.1', as in the same table written as CSV."""
    from ragim.canonical import canonical_levels

    assert canonical_level(np.float32(1.1)) == "1.1" and canonical_level(np.float16(3.3)) == "3.3"
    assert canonical_levels(pd.Series([1.1, None], dtype="Float32")).tolist() == ["1.1", None]
    assert canonical_level(1.100000023841858) == "1.100000023841858"  # a float64 keeps its digits
    codes = ["1.1", "2.2", "3.3"] * 10
    a = _site(30).assign(stage=np.array(codes, dtype=float).astype(np.float32))
    b = _site(30, 1).assign(stage=codes)
    schema = {"features": [{"name": "age", "type": "continuous"}, {"name": "stage", "type": "categorical"}]}
    tasks = _read_folder(tmp_path, {"a": a, "b": b}, schema=schema, parquet=("a",))
    fitted = tasks.schema.fit(pd.concat([t.X for t in tasks], ignore_index=True))
    assert list(fitted.categories_["stage"]) == ["1.1", "2.2", "3.3"]
    # in memory too: a float32 column fits the levels as written
    X = pd.DataFrame({"stage": np.array(codes, dtype=float).astype(np.float32)})
    assert list(FeatureSchema.infer(X, types={"stage": "categorical"}).fit(X).categories_["stage"]) == codes[:3]


def test_thousands_dot_refuses_values_that_are_not_digit_groups(tmp_path):
    """With thousands='.', karno written 100.0 would read as 1000: refused, naming the column."""
    df = _site(4).assign(karno=["100.0", "80.0", "90.0", "70.0"], meal_cal=["1.025", "912", "1.330", "850"])
    with pytest.raises(ValidationError, match=r"column 'karno' holds \['100.0', '80.0', '90.0'\].*"
                                              r"'100.0' as 1000.*cannot also be its thousands separator"):
        _read_folder(tmp_path, {"a": df}, sep=";", thousands=".")


def test_thousands_dot_reads_digit_groups_and_decimal_commas(tmp_path):
    """False-alarm side: '1.025' and '1.025,5' are digit-grouped numbers under thousands='.'."""
    df = _site(4).assign(meal_cal=["1.025", "912", "1.330,5", "850"], karno=["100", "80,5", "90", "70"])
    t = _read_folder(tmp_path, {"a": df}, sep=";", thousands=".")["a"]
    assert t.X.meal_cal.tolist() == [1025.0, 912.0, 1330.5, 850.0]
    assert t.X.karno.tolist() == [100.0, 80.5, 90.0, 70.0]


def test_ward_column_mostly_text_is_categorical_not_missing_codes(tmp_path):
    """Ward icu/ward/3E1/30: a category whose level '30' looks like a number, not text to blank."""
    wards = ["icu", "ward", "3E1", "30", "icu"] * 8
    tasks = _read_folder(tmp_path, {"a": _site().assign(unit=wards)})
    assert tasks.schema["unit"].type == "categorical"
    # false-alarm side: a few codes among numbers still get the missing-value advice
    lactate = [1.5, 2.0, 0.9, "."] * 10
    with pytest.raises(ValidationError, match=r"mixes numbers with text: \['\.'\] in 10 of 40.*na_values=\['\.'\]"):
        FeatureSchema.infer(pd.DataFrame({"lactate": lactate}))


def test_text_in_a_binary_column_says_what_a_binary_column_holds(tmp_path):
    """male/female in a column declared binary: say binary is 0/1 and how to declare it categorical."""
    schema = {"features": [{"name": "age", "type": "continuous"}, {"name": "sex", "type": "binary"}]}
    with pytest.raises(ValidationError) as info:
        _read_folder(tmp_path, {"a": _site().assign(sex=["male", "female"] * 20)}, schema=schema)
    msg = str(info.value)
    assert "column 'sex' (binary) has non-numeric values" in msg
    assert "a binary column holds 0/1" in msg and '"type": "categorical"' in msg
    assert "na_values" not in msg


# ------------------------------------------------------------------ one value, two forms
def _smokers(n=300, seed=11):
    """A yes/no column written as the text TRUE/FALSE (read_csv(dtype=str), Excel, SQL)."""
    rng = np.random.default_rng(seed)
    smoker = rng.random(n) < 0.4
    age = rng.normal(60, 10, n).round()
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1 + 1.2 * smoker + 0.03 * (age - 60))))).astype(int)
    return pd.DataFrame({"age": age, "smoker": np.where(smoker, "TRUE", "FALSE")}), y


def test_true_false_text_is_binary_and_scores_as_the_booleans_a_csv_gives(tmp_path, monkeypatch, capsys):
    X, y = _smokers()
    assert FeatureSchema.infer(X)["smoker"].type == "binary"  # as a boolean column is
    assert FeatureSchema.infer([X, X.assign(smoker=(X.smoker == "TRUE").astype(int))])["smoker"].type == "binary"
    model = LogisticModel(schema=FeatureSchema.infer(X)).fit(X, y)
    as_bools = X.assign(smoker=X.smoker == "TRUE")
    risk = model.predict_proba(X)[:, 1]
    assert model.to_params()["smoker"] > 0.5  # the effect is learned from the text
    np.testing.assert_allclose(model.predict_proba(as_bools)[:, 1], risk)
    other_case = X.assign(smoker=X.smoker.map({"TRUE": " true", "FALSE": "False"}))
    np.testing.assert_allclose(model.predict_proba(other_case)[:, 1], risk)
    # a binary model fitted on 0/1 takes the text as 1/0
    ints = LogisticModel(schema=FeatureSchema.infer(as_bools)).fit(as_bools.assign(smoker=as_bools.smoker.astype(int)), y)
    np.testing.assert_allclose(ints.predict_proba(X)[:, 1], ints.predict_proba(as_bools)[:, 1])
    # the CLI reads the same text from a CSV (pandas makes it booleans): the same risks
    model.to_params().save(tmp_path / "m")
    X.to_csv(tmp_path / "rows.csv", index=False)
    code, _, err = run_console(["-q", "predict", tmp_path / "m", "--rows", tmp_path / "rows.csv",
                             "--out", tmp_path / "risk.csv"], monkeypatch, capsys)
    assert code == 0 and "match no level" not in err, err
    np.testing.assert_allclose(pd.read_csv(tmp_path / "risk.csv")["risk"], risk, rtol=1e-5)


def test_true_false_levels_of_a_categorical_column_match_booleans_and_csv_text(tmp_path):
    from ragim.export import to_sklearn_pipeline

    X, y = _smokers(seed=12)
    X["status"] = np.where(np.arange(len(X)) % 3 == 0, "Unknown", X.pop("smoker").str.title())
    model = LogisticModel(schema=FeatureSchema.infer(X)).fit(X, y)
    assert model.schema_.categories_["status"] == ["0", "1", "Unknown"]  # True is the level 1
    risk = model.predict_proba(X)[:, 1]
    X.to_csv(tmp_path / "rows.csv", index=False)
    from_csv = pd.read_csv(tmp_path / "rows.csv")  # object column: 'True', 'False', 'Unknown'
    as_bools = X.assign(status=X.status.map({"True": True, "False": False, "Unknown": "Unknown"}))
    pipe = to_sklearn_pipeline(model.to_params())
    for rows in (from_csv, as_bools, X.assign(status=X.status.str.replace("True", "TRUE"))):
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataWarning)  # every value is a known level
            np.testing.assert_allclose(model.predict_proba(rows)[:, 1], risk)
        np.testing.assert_allclose(pipe.predict_proba(rows)[:, 1], risk)


def _sexes(n=300, seed=13):
    rng = np.random.default_rng(seed)
    sex = rng.choice(["Female", "Male"], n)
    y = (rng.random(n) < np.where(sex == "Male", 0.5, 0.2)).astype(int)
    return pd.DataFrame({"age": rng.normal(60, 10, n).round(), "sex": sex}), y


def test_a_level_written_in_another_letter_case_is_refused_naming_the_level(tmp_path, monkeypatch, capsys):
    from ragim.export import to_sklearn_pipeline

    X, y = _sexes()
    model = LogisticModel(schema=FeatureSchema.infer(X)).fit(X, y)
    woman = X[X.sex == "Female"].iloc[[0]].assign(sex="female")
    msg = r"column 'sex' value 'female' is not a level of the model; did you mean 'Female'\? levels: \['Female', 'Male'\]"
    for score in (model.predict_proba, model.explain, to_sklearn_pipeline(model.to_params()).predict_proba):
        with pytest.raises(ValidationError, match=msg):
            score(woman)
    model.to_params().save(tmp_path / "m")
    woman.to_csv(tmp_path / "rows.csv", index=False)
    for command in ("predict", "explain"):
        code, _, err = run_console([command, tmp_path / "m", "--rows", tmp_path / "rows.csv"], monkeypatch, capsys)
        assert code != 0 and "did you mean 'Female'?" in err, err
    with pytest.raises(ValidationError, match="value 'female' is not a level declared in the schema; did you mean 'Female'"):
        FeatureSchema([{"name": "sex", "type": "categorical", "categories": ["Female", "Male"]}]).fit(
            pd.DataFrame({"sex": ["Female", "Male", "female"]}))


def test_a_value_of_no_level_even_ignoring_case_warns_that_its_risk_is_unlike_every_level():
    X, y = _sexes(seed=14)
    model = LogisticModel(schema=FeatureSchema.infer(X)).fit(X, y)
    rows = pd.concat([X.iloc[[0]]] * 3, ignore_index=True).assign(sex=["Female", "Male", "diverse"])
    with pytest.warns(DataWarning, match=r"scored as none of its levels.*risk differs from that of every known "
                      r"level: 'sex': 1 row\(s\), e.g. \['diverse'\]") as record:
        risk = model.predict_proba(rows)[:, 1]
    assert "contribute 0" not in str(record[0].message)
    assert risk[2] != pytest.approx(risk[0]) and risk[2] != pytest.approx(risk[1])


# ------------------------------------------------------------------ kind 6: copies of one patient
def test_rows_copied_twenty_times_warn_when_adapted_on_naming_how_many(synthetic_index):
    """6 patients each written 20 times are not 120 patients: fitting on them warns, once,
    with the count and an example, and keeps every row (nothing is dropped silently)."""
    family, index = synthetic_index
    target = family[family.ids[0]]
    y = np.asarray(target.y)
    pick = np.concatenate([np.flatnonzero(y == 1)[:3], np.flatnonzero(y == 0)[:3]])
    X6, y6 = target.X.iloc[pick], y[pick]
    X120, y120 = pd.concat([X6] * 20, ignore_index=True), np.tile(y6, 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = ZeroShotClassifier(index=index, description=target.description).fit(X120, y120)
    repeats = [w for w in caught if issubclass(w.category, DataWarning) and "repeat" in str(w.message)]
    assert len(repeats) == 1, [str(w.message) for w in caught]
    text = str(repeats[0].message)
    assert "114 of 120 rows repeat another row exactly" in text
    assert "data row 7 repeats data row 1" in text and "not a new patient" in text
    assert "drop the copies" in text and repeats[0].filename == __file__
    assert clf.adaptation_report_["k"] == 120  # warned, not dropped


def test_distinct_continuous_rows_do_not_warn_about_repeats(synthetic_index):
    family, index = synthetic_index
    target = family[family.ids[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        ZeroShotClassifier(index=index, description=target.description).fit(target.X, target.y)
        from ragim.validation import score_predictions

        risk = np.linspace(0.1, 0.9, len(target.X))
        score_predictions(target.y, risk, X=target.X, n_boot=20)


def test_binary_features_that_repeat_by_nature_do_not_warn():
    """Six yes/no findings: most of 400 real patients share their row with another one by
    chance, which is no sign of copies."""
    from ragim.rows import repeated_rows, warn_repeated_rows
    from ragim.validation import score_predictions

    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.random((400, 6)) < [0.5, 0.3, 0.2, 0.4, 0.1, 0.6], columns=list("abcdef")).astype(int)
    y = (rng.random(400) < 0.3).astype(int)
    count, chance, _ = repeated_rows(X, y)
    assert count > 0.5 * len(X)  # repeats are the rule here ...
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert warn_repeated_rows(X, y) == count  # ... and say nothing
        score_predictions(y, np.full(400, 0.3) + rng.normal(0, 0.01, 400), X=X, n_boot=20)
    # the same file with a few continuous measurements, copied: warns
    Xc = pd.concat([X.iloc[:10].assign(age=rng.normal(60, 9, 10), sbp=rng.normal(135, 15, 10))] * 5)
    with pytest.warns(DataWarning, match="40 of 50 rows repeat"):
        warn_repeated_rows(Xc, np.tile(y[:10], 5))


def test_a_two_value_column_coded_two_ways_is_said(tmp_path):
    # sex 0/1 in three hospitals' files, 1/2 (SPSS style) in the fourth: loaded without a word,
    # though '1' may mean male in some files and female in another
    rng = np.random.default_rng(0)

    def site(codes, n=40):
        return pd.DataFrame({"age": rng.normal(60, 10, n), "sex": rng.choice(codes, n),
                             "ward": rng.choice(["icu", "ed", "ward"], n), "y": [0, 1] * (n // 2)})

    frames = {"a": site([0, 1]), "b": site([0, 1]), "c": site([0, 1]), "d": site([1, 2])}
    with pytest.warns(DataWarning, match=r"two values in every file, but not the same two: 'sex' "
                                         r"0/1 in 3 files \(a.csv, b.csv, c.csv\) but 1/2 in d.csv"):
        load_task_folder(write_folder(tmp_path / "two", frames))
    # one coding, a subgroup holding one value, a file lacking a rare level: not said
    frames = {"a": site([0, 1]), "b": site([1]), "c": site([0, 1]).assign(ward="icu"),
              "d": site([0, 1])}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_task_folder(write_folder(tmp_path / "one", frames))
    assert not [w for w in caught if "two values in every file" in str(w.message)]


def test_a_global_missing_code_that_halves_a_binary_column_is_said(tmp_path):
    """--na-values 0 (meant for lab values never measured) blanked every 0 of a 0/1 flag too:
    the flag became 1-or-blank, reported only as 'always 1, never varies'. A code given for
    every column that blanks one of a column's two values is now said, once for all files."""
    from ragim.rows import read_rows

    rng = np.random.default_rng(0)
    frames = {t: pd.DataFrame({"glucose": rng.choice([0, 95, 110, 130, 88], 40),
                               "diabetic": rng.choice([0, 1], 40), "y": [0, 1] * 20})
              for t in ("a", "b")}
    root = write_folder(tmp_path / "f", frames)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_task_folder(root, na_values=[0])
    said = {str(w.message) for w in caught if "blank one of the two values" in str(w.message)}
    assert said == {
        "the missing-value codes (na_values) given for every column blank one of the two values "
        "of column(s) 'diabetic' (every '0', beside '1'), which are then one value and blanks: a "
        "0/1 column's 0 is a value, not a missing one; give na_values by column "
        "(na_values={'column': [...]}) for the columns the codes are meant for"
    }
    with warnings.catch_warnings():  # given by column: meant for that column, not said
        warnings.simplefilter("error", DataWarning)
        rows = read_rows(root / "data" / "a.csv", outcome="y", na_values={"glucose": [0]})
    assert rows.X["diabetic"].notna().all()
