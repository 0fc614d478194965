import numpy as np
import pandas as pd
import pytest
from conftest import make_frame

from ragim import TaskIndex, datasets
from ragim.errors import ArtifactError, ValidationError
from ragim.params import ModelParams
from ragim.schema import FeatureSchema
from ragim.tasks import Task, TaskCollection


def _task(tid="t1", n=40, seed=0, **meta):
    X = make_frame(n, seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    return Task(tid, f"Predict disease in cohort {tid}", X, y, meta)


def _collection():
    tasks = [
        _task("a", site="S1", patient_ids=list(range(0, 40))),
        _task("b", seed=1, site="S1", patient_ids=list(range(40, 80))),
        _task("all-s1", n=80, seed=2, site="S1", patient_ids=list(range(80))),
        _task("c", seed=3, site="S2", patient_ids=list(range(1000, 1040))),
    ]
    return TaskCollection(tasks, name="toy")


def test_basic_access_and_summary():
    tc = _collection()
    assert len(tc) == 4 and tc.ids == ["a", "b", "all-s1", "c"]
    assert tc["c"].metadata["site"] == "S2" and tc[0].task_id == "a"
    assert "c" in tc and "zzz" not in tc
    frame = tc.to_frame()
    assert list(frame["task_id"]) == tc.ids and "prevalence" in frame
    assert "sites=['S1', 'S2']" in repr(tc)
    with pytest.raises(KeyError, match="no task 'zzz'"):
        tc["zzz"]


def test_filter_groups_split_and_overlap():
    tc = _collection()
    assert tc.filter(site="S2").ids == ["c"]
    assert tc.filter(lambda info: info["task_id"].startswith("a")).ids == ["a", "all-s1"]
    assert sorted(tc.groups("site")) == ["S1", "S2"]
    train, test = tc.group_split("site", ["S2"])
    assert train.ids == ["a", "b", "all-s1"] and test.ids == ["c"]
    assert tc.overlapping("a") == ["all-s1"]
    assert tc.overlapping("all-s1") == ["a", "b"]
    assert tc.overlapping("c") == []
    with pytest.raises(ValidationError, match="no tasks with site in \\['S9'\\]"):
        tc.group_split("site", ["S9"])
    with pytest.raises(ValidationError, match="no task has the metadata key 'hospital' to split by; the tasks' keys: \\['site'"):
        tc.group_split("hospital", ["S1"])


def test_split_is_stratified_and_keeps_patient_ids():
    t = _task(patient_ids=list(range(100, 140)))
    train, test = t.split(0.25, seed=1)
    assert train.n_rows + test.n_rows == t.n_rows
    assert abs(train.prevalence - test.prevalence) < 0.1
    assert set(train.metadata["patient_ids"]).isdisjoint(test.metadata["patient_ids"])


def test_save_load_round_trip(tmp_path):
    tc = _collection()
    tc.schema.fit(make_frame(200, 9))
    t = tc["a"]
    vec = np.zeros(1 + tc.schema.n_design)
    t.true_params = ModelParams("logistic", tc.schema, vec, metadata={"source": "true"})
    path = tc.save(tmp_path / "tc")
    again = TaskCollection.load(path)
    assert again.ids == tc.ids and again.schema == tc.schema
    for a, b in zip(tc, again, strict=True):
        pd.testing.assert_frame_equal(a.X.reset_index(drop=True), b.X, check_dtype=False)
        assert np.array_equal(a.y, b.y) and a.metadata == b.metadata and a.description == b.description
    assert again["a"].true_params == t.true_params
    synthetic = datasets.synthetic_family(n_tasks=4, n_features=2, seed=0)
    back = TaskCollection.load(TaskCollection(list(synthetic), schema=synthetic.schema).save(tmp_path / "syn"))
    for a, b in zip(synthetic, back, strict=True):
        assert b.oracle_params == a.oracle_params and b.true_params == a.true_params
    (path / "tasks.jsonl").write_text("{}\n")
    with pytest.raises(ArtifactError, match="checksum mismatch for 'tasks.jsonl'"):
        TaskCollection.load(path)


def test_lazy_collection_materialises_on_demand():
    made = []
    schema = FeatureSchema.infer(make_frame(10))

    def make(i):
        made.append(i)
        return _task(f"t{i}", seed=i)

    tc = TaskCollection.lazy(1_000_000, lambda i: (f"t{i}", f"Predict disease {i}", {"k": i % 7}), make, schema)
    assert len(tc) == 1_000_000 and tc.info(5)["task_id"] == "t5" and made == []
    first = tc[123_456]
    again = tc[123_456]
    assert made == [123_456, 123_456] and first.X.equals(again.X)
    sub = tc.head(20).filter(k=3)
    assert sub.ids == ["t3", "t10", "t17"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(y=[0, 1, np.nan]), "y has 1 NaN values"),
        (dict(y=[0, 1, np.inf]), "y has 1 infinite values"),
        (dict(y=[0, 1, 2]), "y must be binary 0/1; found other values [2]"),
        (dict(description="  "), "description is empty"),
        (dict(y=[0, 1]), "X has 3 rows but y has 2"),
        (dict(task_id=""), "task_id must be a non-empty string"),
    ],
)
def test_bad_tasks(kwargs, message):
    args = dict(task_id="t", description="Predict x", X=make_frame(3), y=[0, 1, 0]) | kwargs
    with pytest.raises(ValidationError) as err:
        Task(**args)
    assert message in str(err.value)


def test_collection_validation_lists_every_problem():
    ok = _task("ok")
    single = Task("single", "Predict y", make_frame(30), np.zeros(30, int))
    tiny = Task("tiny", "Predict y", make_frame(1), [1])
    dup = _task("ok", seed=4)
    extra = Task("extra", "Predict y", make_frame(30).assign(bmi=25.0), np.arange(30) % 2)
    drift = Task("drift", "Predict y", make_frame(30).drop(columns=["chol"]), np.arange(30) % 2)
    with pytest.raises(ValidationError) as err:
        TaskCollection([ok, single, tiny, dup, extra, drift], schema=FeatureSchema.infer(make_frame()))
    msg = str(err.value)
    for needle in [
        "duplicate task id 'ok'",
        "task 'extra': columns not in the schema: ['bmi']",
        "task 'drift': columns required by the schema are missing: ['chol']",
    ]:
        assert needle in msg
    # a task that cannot be fitted is still a valid task: building a collection keeps it,
    # validate() (and fitting, which skips it with a warning) says why it cannot be fitted
    assert "single" not in msg and "tiny" not in msg
    kept = TaskCollection([ok, single, tiny], schema=FeatureSchema.infer(make_frame()))
    assert kept.ids == ["ok", "single", "tiny"]
    with pytest.raises(ValidationError) as err:
        kept.validate()
    assert "task 'single' has only one class (all 0)" in str(err.value)
    assert "task 'tiny' has 1 rows; at least 2 are needed" in str(err.value)
    with pytest.raises(ValidationError, match="task 'ok' has 40 rows; at least 50"):
        TaskCollection([ok]).validate(min_rows=50)
    with pytest.raises(ValidationError, match="must be Task objects"):
        TaskCollection([ok, "nope"])


def test_patient_ids_are_one_per_row_and_never_repeated_in_a_task():
    """Patient ids say which rows are which patients (leak-free exclusions, leave-patients-out
    validation), so a repeated id or a list of another length is refused in one line, also
    when the metadata was changed after the task was made (an outside user's repeated id
    passed ``validate()``, the index and the generator silently)."""
    X = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    y = np.array([0, 1, 0])
    with pytest.raises(ValidationError, match=r"patient id\(s\) \['0001'\] appear on more than one"):
        Task("a", "one ward", X, y, {"patient_ids": ["0001", "0001", "0002"]})
    with pytest.raises(ValidationError, match="holds 2 ids but the task has 3 rows"):
        Task("a", "one ward", X, y, {"patient_ids": [1, 2]})
    assert Task("a", "one ward", X, y, {"patient_ids": ["007", 7, 8]}).n_rows == 3  # '007' != '7'
    with pytest.raises(ValidationError, match="one per row in row order, got set"):
        Task("a", "one ward", X, y, {"patient_ids": {1, 2, 3}})  # a set has no row order
    X12, y12 = pd.DataFrame({"x": np.linspace(0.05, 1.0, 12)}), np.array([0, 1] * 6)
    changed = Task("a", "one ward", X12, y12, {"patient_ids": list(range(12))})
    changed.metadata["patient_ids"] = ["1"] * 12
    other = Task("b", "another ward", X12, y12)
    with pytest.raises(ValidationError, match="appear on more than one row"):
        TaskIndex.build(TaskCollection([changed, other]), embedder="hashing", progress=False)
    changed.metadata["patient_ids"] = [str(i) for i in range(5)]
    with pytest.raises(ValidationError, match="holds 5 ids but the task has 12 rows"):
        TaskIndex.build(TaskCollection([changed, other]), embedder="hashing", progress=False)


def test_subset_takes_a_row_mask_and_id_errors_name_the_task():
    X = pd.DataFrame({"x": np.linspace(0.05, 1.0, 6)})
    t = Task("a", "one ward", X, np.array([0, 1] * 3), {"patient_ids": list(range(6))})
    events = t.subset(t.y == 1)
    assert events.n_rows == 3 and events.metadata["patient_ids"] == ["1", "3", "5"]
    with pytest.raises(ValidationError, match="a row mask of 2 values, for 6 rows"):
        t.subset(np.array([True, False]))
    with pytest.raises(ValidationError, match="task 'b': a patient id is missing"):
        Task("b", "one ward", X, np.array([0, 1] * 3), {"patient_ids": [None, 1, 2, 3, 4, 5]})


def test_binary_outcome_names_two_labels_written_in_different_case():
    """'Died', 'died ', 'died' and 'alive' (a hand-edited export) were refused as "3 distinct
    values; a binary outcome has two" without saying why; the message now names the two
    labels and their spellings (ragim score / adapt read outcomes through this)."""
    from ragim.canonical import spellings
    from ragim.tasks import binary_outcome

    values = ["Died", "died ", "died", "alive"]
    assert spellings(values) == [["Died", "died ", "died"], ["alive"]]
    with pytest.raises(ValidationError, match=r"2 written in different letter case: 'Died', 'died ', 'died' / 'alive'"):
        binary_outcome(values, pos_label="died")
    with pytest.raises(ValidationError, match=r"holds 3 distinct values \['a', 'b', 'c'\]; a binary outcome has two$"):
        binary_outcome(["a", "b", "c"], pos_label="a")


def test_metadata_taken_from_a_dataframe_row_saves(tmp_path):
    # metadata built from a DataFrame row holds NumPy scalars (np.int64(450) beds): the index
    # was built, then refused at save as "not JSON-safe ... must hold only ... finite numbers"
    base = datasets.synthetic_family(n_tasks=4, n_features=2, seed=0, rows=(40, 60))
    sites = pd.DataFrame({"beds": [450, 120, 300, 80], "teaching": [True, False, True, False]})
    tasks = TaskCollection([
        Task(t.task_id, t.description, t.X, t.y,
             {"beds": sites["beds"].iloc[i], "teaching": sites["teaching"].iloc[i],
              "rate": np.float32(0.1)})
        for i, t in enumerate(base)
    ])
    assert tasks[0].metadata == {"beds": 450, "teaching": True, "rate": 0.1}
    assert type(tasks[0].metadata["beds"]) is int
    TaskIndex.build(tasks, embedder="hashing").save(tmp_path / "idx")
    meta = TaskIndex.load(tmp_path / "idx").records[0]["metadata"]
    assert meta == {"beds": 450, "teaching": True, "rate": 0.1}
