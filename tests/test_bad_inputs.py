"""Bad-input catalogue: every malformed input gives a clear ragim error naming the problem.

Each case builds one bad input and asserts the ragim error class (``ValidationError``,
``ArtifactError`` or ``GenerationError``) and a fragment of its message. Nothing may escape as a
bare traceback from numpy, pandas, pyarrow, FAISS or torch. Hypothesis fuzzes the parsers of
untrusted text: ``ModelParams.from_json`` / ``from_payload``, ``FeatureSchema.from_dict`` and
``read_artifact`` on random manifests and bytes.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import run_console
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragim import FeatureSchema, ModelParams, Task, TaskCollection
from ragim.datasets.folder import load_task_folder
from ragim.errors import ArtifactError, GenerationError, RagimError, ValidationError
from ragim.io import MANIFEST, read_artifact, sha256_bytes, write_artifact
from ragim.lm.constrained import parse_json_numbers

N = 12
Y = np.arange(N) % 2


def frame(**cols) -> pd.DataFrame:
    base = {"age": np.linspace(30.0, 80.0, N), "smoker": Y.copy()}
    base.update(cols)
    return pd.DataFrame(base)


def odd_frame(name) -> pd.DataFrame:
    return pd.DataFrame({name: np.linspace(1.0, 5.0, N), "smoker": Y.copy()})


def collection(*tasks: Task) -> TaskCollection:
    return TaskCollection(list(tasks))


def check(build, error, message):
    """``build()`` raises ``error`` whose text contains every fragment of ``message``."""
    with pytest.raises(RagimError) as info:
        build()
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {info.value}"
    text = str(info.value)
    for part in [message] if isinstance(message, str) else message:
        assert part in text, f"{part!r} not in {text!r}"


# ---------------------------------------------------------------------------------------- Task
TASK_CASES = [
    ("nan-in-y", lambda: Task("t", "d", frame(), np.where(Y == 1, np.nan, 0.0)), "y has 6 NaN values"),
    ("inf-in-y", lambda: Task("t", "d", frame(), np.where(Y == 1, np.inf, 0.0)), "y has 6 infinite values"),
    ("y-not-binary", lambda: Task("t", "d", frame(), Y * 2), "y must be binary 0/1; found other values [2]"),
    ("y-text", lambda: Task("t", "d", frame(), np.array(["no", "yes"] * (N // 2))),
     "y holds text labels ['no', 'yes']; outcomes must be 0/1 or True/False"),
    ("y-mixed-types", lambda: Task("t", "d", frame(), np.array([0, "1"] * (N // 2), dtype=object)),
     "y holds text labels ['0', '1']"),
    ("y-2d", lambda: Task("t", "d", frame(), np.ones((N, 2))), "y must be one-dimensional"),
    ("y-length", lambda: Task("t", "d", frame(), Y[:5]), "X has 12 rows but y has 5"),
    ("X-not-a-frame", lambda: Task("t", "d", frame().to_numpy(), Y), "X must be a pandas DataFrame, got ndarray"),
    ("empty-id", lambda: Task("", "d", frame(), Y), "task_id must be a non-empty string"),
    ("id-not-text", lambda: Task(7, "d", frame(), Y), "task_id must be a non-empty string, got 7"),
    ("empty-description", lambda: Task("t", "   ", frame(), Y), "description is empty"),
    ("description-not-text", lambda: Task("t", None, frame(), Y), "description is empty"),
]

COLLECTION_CASES = [
    ("nan-everywhere-not-allowed",
     lambda: TaskCollection([Task("t", "d", frame(age=np.nan), Y)],
                            schema=FeatureSchema([{"name": "age", "allow_missing": False}, {"name": "smoker", "type": "binary"}])),
     "column 'age' has 12 missing values but the schema allows none"),
    ("inf-in-X", lambda: collection(Task("t", "d", frame(age=np.r_[np.inf, np.ones(N - 1)]), Y)),
     "column 'age' has infinite values at rows [0]"),
    ("neg-inf-in-X", lambda: collection(Task("t", "d", frame(age=-np.inf), Y)), "column 'age' has infinite values"),
    ("mixed-number-text-column", lambda: collection(Task("t", "d", frame(age=[40, "forty"] * (N // 2)), Y)),
     ["column 'age' mixes numbers with text", "'forty'"]),
    ("text-in-binary-column",
     lambda: TaskCollection([Task("t", "d", frame(), Y), Task("u", "d", frame(smoker=["yes", "no"] * (N // 2)), Y)]),
     "column 'smoker' holds numbers in task 't' but text in task 'u' (e.g. 'yes')"),
    ("text-in-declared-binary-column",
     lambda: TaskCollection([Task("t", "d", frame(), Y), Task("u", "d", frame(smoker=["yes", "no"] * (N // 2)), Y)],
                            schema=FeatureSchema.infer(frame())),
     "column 'smoker' (binary) has non-numeric values"),
    ("non-binary-in-binary-column",
     lambda: TaskCollection([Task("t", "d", frame(), Y), Task("u", "d", frame(smoker=Y * 3), Y)],
                            schema=FeatureSchema.infer(frame())),
     "binary column 'smoker' has values other than 0/1: [3.0]"),
    ("dict-values", lambda: collection(Task("t", "d", frame(cp=[{"a": 1}] * N), Y)), "column 'cp' holds dict values"),
    ("list-values", lambda: collection(Task("t", "d", frame(cp=[[1, 2]] * N), Y)), "column 'cp' holds list values"),
    ("complex-values", lambda: collection(Task("t", "d", frame(z=np.ones(N) * 1j), Y)),
     "column 'z' holds complex numbers"),
    ("date-column", lambda: collection(Task("t", "d", frame(adm=pd.date_range("2024-01-01", periods=N)), Y)),
     ["column 'adm' holds dates", "derive a number such as days from admission"]),
    ("duration-column", lambda: collection(Task("t", "d", frame(los=pd.to_timedelta(np.arange(N), unit="h")), Y)),
     ["column 'los' holds durations", ".dt.total_seconds() / 86400"]),
    ("iso-date-text-column", lambda: collection(Task("t", "d", frame(adm=[f"2024-01-0{i % 9 + 1}" for i in range(N)]), Y)),
     "column 'adm' holds dates"),
    ("numbers-in-one-task-text-in-another",
     lambda: collection(Task("a", "d", frame(g=np.arange(N) % 3), Y), Task("b", "d", frame(g=["lo", "hi"] * (N // 2)), Y)),
     "column 'g' holds numbers in task 'a' but text in task 'b' (e.g. 'lo')"),
    ("declared-level-twice", lambda: FeatureSchema([{"name": "asa", "type": "categorical", "categories": [2, "2.0"]}]),
     "declares the same level more than once: ['2']"),
    ("patient-id-not-an-integer", lambda: Task("t", "d", frame(), Y, {"patient_ids": [1.5] * N}),
     "patient id 1.5 is not an integer; read ids as text"),
    ("patient-id-blank", lambda: Task("t", "d", frame(), Y, {"patient_ids": [None] * N}),
     "a patient id is missing (blank or NaN)"),
    # tasks that cannot be fitted are valid tasks; validate() (and fitting, which skips them) says why
    ("zero-rows", lambda: collection(Task("t", "d", frame().iloc[:0], Y[:0])).validate(),
     ["task 't' has 0 rows; at least 2 are needed", "0 positives and 0 negatives"]),
    ("one-row", lambda: collection(Task("t", "d", frame().iloc[:1], Y[:1])).validate(),
     ["task 't' has 1 rows; at least 2 are needed", "only one class (all 0)"]),
    ("single-class", lambda: collection(Task("t", "d", frame(), np.zeros(N))).validate(),
     "task 't' has only one class (all 0); a task needs at least 1 of each"),
    ("single-class-ones", lambda: collection(Task("t", "d", frame(), np.ones(N))).validate(), "only one class (all 1)"),
    ("duplicated-columns", lambda: collection(Task("t", "d", pd.concat([frame(), frame()[["age"]]], axis=1), Y)),
     "task 't' has duplicated columns ['age']"),
    ("duplicated-columns-given-schema",
     lambda: TaskCollection([Task("t", "d", pd.concat([frame(), frame()[["age"]]], axis=1), Y)],
                            schema=FeatureSchema([{"name": "age"}, {"name": "smoker", "type": "binary"}])),
     "duplicated columns: ['age']"),
    ("columns-1-and-'1'-collide", lambda: collection(Task("t", "d", pd.DataFrame({1: np.ones(N), "1": np.ones(N)}), Y)),
     "task 't' has duplicated columns ['1']"),
    ("empty-feature-name", lambda: collection(Task("t", "d", odd_frame(""), Y)), "feature name must be a non-empty string"),
    ("blank-feature-name", lambda: collection(Task("t", "d", odd_frame("  "), Y)), "feature name must be a non-empty string"),
    ("schema-drift-columns", lambda: collection(Task("t", "d", frame(), Y), Task("u", "d", frame().rename(columns={"age": "Age"}), Y)),
     "task 'u' has columns ['Age', 'smoker'], but task 't' has ['age', 'smoker']"),
    ("schema-drift-columns-given-schema",
     lambda: TaskCollection([Task("t", "d", frame(), Y), Task("u", "d", frame().rename(columns={"age": "Age"}), Y)],
                            schema=FeatureSchema.infer(frame())),
     ["task 'u': columns required by the schema are missing: ['age']", "columns not in the schema: ['Age']"]),
    ("schema-drift-extra-column",
     lambda: TaskCollection([Task("t", "d", frame(), Y), Task("u", "d", frame(chol=1.0), Y)],
                            schema=FeatureSchema.infer(frame())),
     "task 'u': columns not in the schema: ['chol']"),
    ("duplicate-task-ids", lambda: collection(Task("t", "d", frame(), Y), Task("t", "d", frame(), Y)),
     "duplicate task id 't' (positions 0 and 1)"),
    ("not-a-task", lambda: TaskCollection([Task("t", "d", frame(), Y), "oops"]), "items [1] are not"),
    ("many-problems-listed-together",
     lambda: TaskCollection([Task("a", "d", frame(smoker=Y * 3), Y), Task("b", "d", frame(age=np.inf), Y)],
                            schema=FeatureSchema.infer(frame())),
     ["2 problem(s)", "task 'a': binary column 'smoker' has values other than 0/1",
      "task 'b': column 'age' has infinite values"]),
]


@pytest.mark.parametrize("build, message", [c[1:] for c in TASK_CASES + COLLECTION_CASES],
                         ids=[c[0] for c in TASK_CASES + COLLECTION_CASES])
def test_bad_tasks(build, message):
    check(build, ValidationError, message)


@pytest.mark.parametrize("name", ["lab value", "ca[1]", 'chol "mg/dL"', "it's", "β-hCG (mIU/mL)", "x__missing",
                                  "a,b;c", "tab\tname", "😀", 3, 2.5, None, ("a", "b")])
def test_odd_feature_names_work_end_to_end(name):
    """Spaces, brackets, quotes, unicode and non-text labels are valid names, not crashes."""
    X = odd_frame(name)
    tc = collection(Task("t", "Predict sepsis", X, Y))
    schema = tc.schema.copy().fit(X)
    # pandas >= 3 stores a None label as NaN, so compare with the label the frame really holds
    assert schema.names[0] == str(X.columns[0])
    p = ModelParams.zeros("logistic", schema)
    assert ModelParams.from_json(p.to_json()) == p
    assert schema.transform(X).shape == (N, 2)


@pytest.mark.parametrize("description", ["x" * 1_000_000, "Prédire la maladie coronarienne 心臓病 🫀 \"quoted\" [x]\n\t"],
                         ids=["1MB", "unicode"])
def test_huge_and_unicode_descriptions_round_trip(tmp_path, description):
    tc = collection(Task("t", description, frame(), Y, {"site": "Zürich"}))
    back = TaskCollection.load(tc.save(tmp_path / "tc"))
    # descriptions are kept in canonical form: NFC, without surrounding whitespace
    assert back["t"].description == description.strip() and back["t"].metadata == {"site": "Zürich"}


def test_mixed_category_types_across_tasks_still_save(tmp_path):
    """Categories 1/2 in one task and 'u'/'v' in another: saved as text, not a pyarrow crash."""
    tc = TaskCollection([Task("a", "d", frame(c=["u", "v"] * (N // 2)), Y), Task("b", "d", frame(c=[1, 2] * (N // 2)), Y)],
                        schema=FeatureSchema.infer(frame(c=["u", "v"] * (N // 2))))
    back = TaskCollection.load(tc.save(tmp_path / "tc"))
    assert back["b"].X["c"].tolist()[:2] == ["1", "2"]


# ---------------------------------------------------------------------------------------- FeatureSchema
def _fitted_dict(**over):
    d = FeatureSchema.infer(frame()).fit(frame()).to_dict()
    d["fitted"].update(over)
    return d


SCHEMA_CASES = [
    ("no-features", lambda: FeatureSchema([]), "a schema needs at least one feature"),
    ("duplicate-features", lambda: FeatureSchema([{"name": "a"}, {"name": "a"}]), "duplicate feature names in schema: ['a']"),
    ("unknown-type", lambda: FeatureSchema([{"name": "a", "type": "ordinal"}]), "feature 'a' has unknown type 'ordinal'"),
    ("bad-n-bins", lambda: FeatureSchema([{"name": "a"}], n_bins=1), "n_bins must be an integer >= 2"),
    ("infer-not-a-frame", lambda: FeatureSchema.infer(np.ones((3, 2))), "X must be a pandas DataFrame"),
    ("infer-unknown-units", lambda: FeatureSchema.infer(frame(), units={"bmi": "kg/m2"}),
     "units/types given for columns that are not in X: ['bmi']"),
    ("too-many-text-levels", lambda: FeatureSchema.infer(frame(ward=[f"w{i}" for i in range(N)]), max_categories=5),
     "column 'ward' is text with 12 distinct values (more than max_categories=5)"),
    ("fit-zero-rows", lambda: FeatureSchema.infer(frame()).fit(frame().iloc[:0]), "cannot fit a FeatureSchema on zero rows"),
    ("fit-overflowing-values", lambda: FeatureSchema.infer(frame()).fit(frame(age=[1e308, -1e308] * (N // 2))),
     "columns ['age'] have values too large to standardise"),
    ("transform-unfitted", lambda: FeatureSchema.infer(frame()).transform(frame()), "this FeatureSchema is not fitted"),
    ("transform-missing-column", lambda: FeatureSchema.infer(frame()).fit(frame()).transform(frame().drop(columns="age")),
     "columns required by the schema are missing: ['age']"),
    ("from-dict-not-an-object", lambda: FeatureSchema.from_dict([1, 2]), "expected an object, got list"),
    ("from-dict-features-not-a-list", lambda: FeatureSchema.from_dict({"features": "age"}), "'features' must be a list of objects"),
    ("from-dict-bad-fitted", lambda: FeatureSchema.from_dict(_fitted_dict(medians=1)), "not a valid FeatureSchema description"),
    ("from-dict-nan-statistic", lambda: FeatureSchema.from_dict(_fitted_dict(means={"age": float("nan")})),
     "fitted.means.age must be a number, got nan"),
    ("from-dict-zero-scale", lambda: FeatureSchema.from_dict(_fitted_dict(scales={"age": 0.0})),
     "fitted.scales.age must be a number > 0, got 0.0"),
    ("from-dict-unsorted-bins", lambda: FeatureSchema.from_dict(_fitted_dict(bin_edges={"age": [3.0, 1.0]})),
     "bin edges of 'age' must be finite and increasing"),
    ("from-json-invalid", lambda: FeatureSchema.from_json("{nope"), "schema JSON is not valid JSON"),
    ("from-json-bytes", lambda: FeatureSchema.from_json(b"\xff\xfe"), "schema JSON is not valid JSON"),
    ("from-json-none", lambda: FeatureSchema.from_json(None), "schema JSON is not valid JSON"),
    ("from-json-array", lambda: FeatureSchema.from_json("[1]"), "schema JSON must be an object"),
]


@pytest.mark.parametrize("build, message", [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES])
def test_bad_schemas(build, message):
    check(build, ValidationError, message)


# ---------------------------------------------------------------------------------------- ModelParams
@pytest.fixture(scope="module")
def schema():
    return FeatureSchema.infer(frame()).fit(frame())


def _values(**over):
    return {"intercept": 0.1, "age": 0.5, "smoker": -0.2, **over}


def _payload(**over):
    return json.dumps({"kind": "logistic", "values": _values(), **over})


PARAM_CASES = [
    ("nan", lambda s: ModelParams("logistic", s, [0.0, np.nan, 1.0]), "non-finite values for ['age']"),
    ("inf", lambda s: ModelParams("logistic", s, [np.inf, 0.0, 1.0]), "non-finite values for ['intercept']"),
    ("text-in-vector", lambda s: ModelParams("logistic", s, [0.0, "x", 1.0]), "parameters must be a sequence of numbers"),
    ("dict-as-vector", lambda s: ModelParams("logistic", s, {"age": 1.0}), "parameters must be a sequence of numbers, got dict"),
    ("wrong-length", lambda s: ModelParams("logistic", s, [0.0, 1.0]), "need 3 values (intercept + 2 terms), got 2"),
    ("unknown-kind", lambda s: ModelParams("tree", s, [0.0, 1.0, 1.0]), "unknown model kind 'tree'"),
    ("unfitted-schema", lambda s: ModelParams("logistic", FeatureSchema.infer(frame()), [0, 1, 1]), "needs a fitted FeatureSchema"),
    ("negative-std", lambda s: ModelParams("logistic", s, [0, 1, 1], std=[-1, 0, 0]), "std must be finite, non-negative"),
    ("text-std", lambda s: ModelParams("logistic", s, [0, 1, 1], std=["a", 0, 0]), "std must be a sequence of numbers"),
    ("metadata-not-a-dict", lambda s: ModelParams("logistic", s, [0, 1, 1], metadata=[1, 2]), "metadata must be a dict, got list"),
    ("metadata-not-json", lambda s: ModelParams("logistic", s, [0, 1, 1], metadata={"a": object()}).to_json(),
     "metadata is not JSON-safe"),
    ("metadata-nan-save", lambda s: ModelParams("logistic", s, [0, 1, 1], metadata={"a": float("nan")}).save("/nonexistent/x"),
     "is not JSON-safe"),
    ("from-dict-missing", lambda s: ModelParams.from_dict("logistic", s, {"intercept": 0.0}), "missing parameters: ['age', 'smoker']"),
    ("from-dict-extra", lambda s: ModelParams.from_dict("logistic", s, _values(bmi=1.0)), "unknown parameters (not in the schema): ['bmi']"),
    ("from-dict-nan", lambda s: ModelParams.from_dict("logistic", s, _values(age=float("nan"))), "parameter 'age' must be finite"),
    ("from-dict-huge-int", lambda s: ModelParams.from_dict("logistic", s, _values(age=10**400)), "parameter 'age' must be a finite number"),
    ("from-dict-text-number", lambda s: ModelParams.from_dict("logistic", s, _values(age="1.5")), "parameter 'age' must be a number, got '1.5'"),
    ("from-dict-bool", lambda s: ModelParams.from_dict("logistic", s, _values(age=True)), "parameter 'age' must be a number, got True"),
    ("from-dict-null", lambda s: ModelParams.from_dict("logistic", s, _values(age=None)), "parameter 'age' must be a number, got None"),
    ("json-invalid", lambda s: ModelParams.from_json("{", s), "model parameters are not valid JSON"),
    ("json-bytes", lambda s: ModelParams.from_json(b"\xff", s), "model parameters are not valid JSON"),
    ("json-deeply-nested", lambda s: ModelParams.from_json("[" * 100_000, s), "model parameters are not valid JSON"),
    ("json-5000-digit-int", lambda s: ModelParams.from_json('{"kind": "logistic", "values": {"age": ' + "9" * 5000 + "}}", s),
     "model parameters are not valid JSON"),
    ("json-NaN", lambda s: ModelParams.from_json(_payload().replace("0.5", "NaN"), s), "parameter 'age' must be finite, got nan"),
    ("json-Infinity", lambda s: ModelParams.from_json(_payload().replace("0.5", "-Infinity"), s), "parameter 'age' must be finite"),
    ("json-1e999", lambda s: ModelParams.from_json(_payload().replace("0.5", "1e999"), s), "parameter 'age' must be finite"),
    ("json-array", lambda s: ModelParams.from_json("[1, 2]", s), "model parameters must be a JSON object"),
    ("json-no-kind", lambda s: ModelParams.from_json('{"values": {}}', s), "has no 'kind' field"),
    ("json-no-schema", lambda s: ModelParams.from_json(_payload()), "has no 'schema' and none was given"),
    ("json-bad-schema", lambda s: ModelParams.from_json(_payload(schema=[1])), "not a valid FeatureSchema description"),
    ("json-values-list", lambda s: ModelParams.from_json(_payload(values=[1, 2]), s), "'values' must be an object"),
    ("json-std-list", lambda s: ModelParams.from_json(_payload(std=[1.0]), s), "'std' must be an object"),
    ("json-metadata-list", lambda s: ModelParams.from_json(_payload(metadata=[1]), s), "'metadata' must be an object"),
    ("json-kind-list", lambda s: ModelParams.from_json(_payload(kind=["logistic"]), s), "'kind' must be one of"),
]


@pytest.mark.parametrize("build, message", [c[1:] for c in PARAM_CASES], ids=[c[0] for c in PARAM_CASES])
def test_bad_model_params(schema, build, message):
    check(lambda: build(schema), ValidationError, message)


# ---------------------------------------------------------------------------------------- task folders
GOOD = pd.DataFrame({"lactate": np.linspace(1, 4, N), "y": Y})


def _folder(root, tables, descriptions=None, schema_json=None, fmt="csv"):
    (root / "data").mkdir(parents=True)
    if isinstance(descriptions, bytes):
        (root / "descriptions.csv").write_bytes(descriptions)
    else:
        ids = list(tables)
        descriptions = descriptions or {"task_id": ids, "description": [f"Predict sepsis in ward {t}" for t in ids]}
        pd.DataFrame(descriptions).to_csv(root / "descriptions.csv", index=False)
    for tid, table in tables.items():
        target = root / "data" / f"{tid}.{fmt}"
        if isinstance(table, bytes):
            target.write_bytes(table)
        elif fmt == "csv":
            table.to_csv(target, index=False)
        else:
            table.to_parquet(target, index=False)
    if schema_json is not None:
        (root / "schema.json").write_text(schema_json)
    return root


def _dup_parquet(root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    pd.DataFrame({"task_id": ["a"], "description": ["Predict sepsis"]}).to_csv(root / "descriptions.csv", index=False)
    table = pa.Table.from_arrays([pa.array(np.ones(N)), pa.array(np.ones(N)), pa.array(Y)], names=["lactate", "lactate", "y"])
    pq.write_table(table, root / "data" / "a.parquet")
    return root


FOLDER_CASES = [
    ("not-a-folder", lambda r: r / "missing", "does not exist"),
    ("no-descriptions", lambda r: (r / "data").mkdir(parents=True) or r, "has no descriptions.csv"),
    ("descriptions-not-utf8", lambda r: _folder(r, {"a": GOOD}, b"\xff\xfe\x00garbage\n"), "cannot read"),
    ("descriptions-empty-file", lambda r: _folder(r, {"a": GOOD}, b""), "descriptions.csv is empty"),
    ("descriptions-no-rows", lambda r: _folder(r, {}, b"task_id,description\n"), "lists no tasks"),
    ("descriptions-lacks-columns", lambda r: _folder(r, {"a": GOOD}, b"id,text\na,x\n"), "lacks the columns ['task_id', 'description']"),
    ("blank-task-id", lambda r: _folder(r, {"a": GOOD}, b"task_id,description\n,x\n"), "line(s) [2] have no task_id"),
    ("listed-without-data", lambda r: _folder(r, {"a": GOOD}, {"task_id": ["a", "b"], "description": ["x", "y"]}),
     "task 'b' is listed in descriptions.csv but has no data/b.csv"),
    ("data-without-listing", lambda r: _folder(r, {"a": GOOD, "b": GOOD}, {"task_id": ["a"], "description": ["x"]}),
     "data/b.csv has no row in descriptions.csv"),
    ("empty-description", lambda r: _folder(r, {"a": GOOD}, {"task_id": ["a"], "description": [""]}), "description is empty"),
    ("no-outcome", lambda r: _folder(r, {"a": GOOD.drop(columns="y")}), "has no outcome column 'y'"),
    ("outcome-text", lambda r: _folder(r, {"a": GOOD.assign(y=["no", "yes"] * (N // 2))}),
     ["a.csv: outcome column 'y' holds ['no', 'yes']", "pos_label"]),
    ("outcome-nan", lambda r: _folder(r, {"a": GOOD.assign(y=np.r_[np.nan, Y[1:]])}),
     "outcome column 'y' is empty in 1 data row(s) [1]"),
    ("outcome-not-binary", lambda r: _folder(r, {"a": GOOD.assign(y=Y * 2)}),
     "outcome column 'y' holds ['0', '2']; outcomes must be 0/1 or true/false"),
    ("outcome-three-values", lambda r: _folder(r, {"a": GOOD.assign(y=np.arange(N) % 3)}),
     "holds ['0', '1', '2']"),
    ("semicolon-separated", lambda r: _folder(r, {"a": b"lactate;y\n1,5;0\n2,5;1\n"}),
     ["a.csv was read as one column", "'lactate;y'", "looks semicolon-separated: pass --sep ';'"]),
    ("blank-patient-id", lambda r: _folder(r, {"a": GOOD.assign(patient_id=[None] + [f"p{i}" for i in range(N - 1)])}),
     "column 'patient_id' has blank ids (lines [2])"),
    ("repeated-patient-id", lambda r: _folder(r, {"a": GOOD.assign(patient_id=["0001", "0001"] + [f"p{i}" for i in range(N - 2)])}),
     "patient id(s) ['0001'] appear on more than one row ('0001' on lines [2, 3])"),
    ("dates-among-features", lambda r: _folder(r, {"a": GOOD.assign(admitted=["2024-03-01", "2024-03-02"] * (N // 2))}),
     "column 'admitted' holds dates"),
    ("inf-text-in-csv", lambda r: _folder(r, {"a": b"lactate,y\ninf,0\n1,1\n2,0\n"}), "column 'lactate' has infinite values at rows [0]"),
    ("mixed-types", lambda r: _folder(r, {"a": GOOD.assign(lactate=[1.5, "high"] * (N // 2))}),
     "column 'lactate' mixes numbers with text"),
    ("missing-written-dot-or-unknown",
     lambda r: _folder(r, {"a": GOOD.assign(lactate=[1.5, ".", 2.0, "unknown"] * (N // 4))}),
     ["column 'lactate' mixes numbers with text: ['.', 'unknown'] in 6 of 12 row(s)", "declare them missing",
      "na_values=['.', 'unknown']", "--na-values '.,unknown'", "blank cells and NA, N/A, NaN, null count as missing already, in both"]),
    ("missing-written-dot-declared-continuous",
     lambda r: _folder(r, {"a": GOOD.assign(lactate=[1.5, "."] * (N // 2))},
                       schema_json='{"features": [{"name": "lactate", "type": "continuous"}]}'),
     ["column 'lactate' (continuous) has non-numeric values, e.g. ['.'] in", "na_values=['.']", "--na-values '.'"]),
    ("missing-written-dot-in-one-file-only",
     lambda r: _folder(r, {"a": GOOD, "b": GOOD.assign(lactate=["."] * N)}),
     ["'lactate' is text in b.csv but numeric in a.csv (e.g. '.')", "na_values=['.']"]),
    ("empty-csv", lambda r: _folder(r, {"a": b""}), "a.csv is empty"),
    ("duplicated-csv-columns", lambda r: _folder(r, {"a": b"lactate,lactate,y\n1,2,0\n3,4,1\n"}),
     "a.csv has duplicated columns ['lactate']"),
    ("duplicated-parquet-columns", _dup_parquet, "a.parquet has duplicated columns ['lactate']"),
    ("empty-csv-column-name", lambda r: _folder(r, {"a": b",y\n1,0\n2,1\n"}), "column(s) [1] have no name; name every column"),
    ("garbage-parquet", lambda r: _folder(r, {"a": b"PAR1garbagePAR1"}, fmt="parquet"), ["cannot read", "a.parquet"]),
    ("drift-column-names", lambda r: _folder(r, {"a": GOOD, "b": GOOD.rename(columns={"lactate": "lac"})}),
     "b.csv does not have the columns of a.csv: it lacks ['lactate']; it adds ['lac']"),
    ("drift-column-name-case", lambda r: _folder(r, {"a": GOOD, "b": GOOD.rename(columns={"lactate": "Lactate"})}),
     "it lacks ['lactate']; it adds ['Lactate']; 'Lactate' and 'lactate' differ only in letter case"),
    ("drift-column-type", lambda r: _folder(r, {"a": GOOD, "b": GOOD.assign(lactate=["lo", "hi"] * (N // 2))}),
     "'lactate' is written as words (hi/lo) in b.csv but as numbers in a.csv"),
    ("drift-column-type-many-files",
     lambda r: _folder(r, {"a": GOOD.assign(lactate=["1,5", "2,0"] * (N // 2)), **{k: GOOD for k in "bcde"}}),
     "'lactate' is text in a.csv but numeric in 4 files (b.csv, c.csv, d.csv, ...) (e.g. '1,5'); they look like "
     "numbers with a decimal comma (e.g. ['1,5', '2,0']): read the file with thousands='.'"),
    ("decimal-commas-in-every-file",
     lambda r: _folder(r, {k: GOOD.assign(lactate=["1,5", "2,0", "0,75", "3"] * (N // 4)) for k in "ab"}),
     "column 'lactate' (in a.csv, b.csv) is text, but they look like numbers with a decimal comma (e.g. ['1,5', '2,0', '0,75']): "
     "read the file with thousands='.' (load_task_folder, read_rows; --thousands .), which takes ',' as the "
     "decimal mark"),
    ("percentages-with-their-sign",
     lambda r: _folder(r, {k: GOOD.assign(lactate=["35%", "40%", "55%", "60%"] * (N // 4)) for k in "ab"}),
     "column 'lactate' (in a.csv, b.csv) is text, but they are percentages written with '%' (e.g. ['35%', '40%', '55%']): write "
     "them as numbers (35 for '35%')"),
    ("detection-limits-among-numbers",
     lambda r: _folder(r, {k: GOOD.assign(lactate=["<0.5", *np.round(np.linspace(0.6, 4, N - 1), 2).astype(str)])
                           for k in "ab"}),
     "column 'lactate' in a.csv mixes numbers with text: ['<0.5'] in 1 of 12 row(s)"),
    ("detection-limits-advice",
     lambda r: _folder(r, {k: GOOD.assign(lactate=["<0.5", *np.round(np.linspace(0.6, 4, N - 1), 2).astype(str)])
                           for k in "ab"}),
     "['<0.5'] look like results reported against a detection limit: a model needs a number, so write one (the "
     "limit itself, or half a lower limit"),
    ("space-as-thousands-separator",
     lambda r: _folder(r, {k: GOOD.assign(lactate=["1 017", "274", "1 069", "179"] * (N // 4)) for k in "ab"}),
     "holds numbers written with ' ' as a thousands separator (e.g. ['1 017', '1 069'] beside ['274', '179'] "
     "written in full), which would be read as text; read the file with thousands=' '"),
    ("windows-1252-csv", lambda r: _folder(r, {"a": "lactate,y,ward\n1,0,Zürich\n2,1,Genève\n".encode("cp1252")}),
     "a.csv: it is not UTF-8 text (byte 0xfc at position"),
    ("duplicate-task-ids", lambda r: _folder(r, {"a": GOOD}, {"task_id": ["a", "a"], "description": ["x", "y"]}),
     "task id(s) ['a'] are listed more than once"),
    ("schema-json-invalid", lambda r: _folder(r, {"a": GOOD}, schema_json="{nope"), "schema.json is not valid JSON"),
    ("schema-json-not-object", lambda r: _folder(r, {"a": GOOD}, schema_json="[1]"), ["schema.json", "expected an object"]),
    ("schema-json-other-features", lambda r: _folder(r, {"a": GOOD}, schema_json='{"features": [{"name": "crp"}]}'),
     "columns required by the schema are missing: ['crp']"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in FOLDER_CASES], ids=[c[0] for c in FOLDER_CASES])
def test_bad_task_folders(tmp_path, make, message):
    root = make(tmp_path / "tasks")
    check(lambda: load_task_folder(root), ValidationError, message)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_values_written_as_text_load_as_missing_when_declared(tmp_path, fmt):
    coded = GOOD.assign(lactate=[1.5, ".", 2.0, " unknown"] * (N // 4)).astype({"lactate": str})
    root = _folder(tmp_path / "t", {"a": coded, "b": GOOD}, fmt=fmt)
    with pytest.raises(ValidationError, match="na_values="):
        load_task_folder(root)
    tc = load_task_folder(root, na_values=[".", "unknown"])
    lactate = tc["a"].X["lactate"]
    assert tc.schema["lactate"].type == "continuous" and lactate.dtype.kind == "f"
    assert lactate.isna().sum() == N // 2 and lactate.dropna().tolist() == [1.5, 2.0] * (N // 4)
    assert "lactate__missing" in tc.schema.copy().fit(tc["a"].X).design_names


def test_a_declared_missing_code_in_the_outcome_is_a_blank_outcome(tmp_path):
    """'.' declared missing and written in the outcome column: the rows are named as blank
    outcomes (drop those patients), not taken for a third label to name with pos_label."""
    coded = GOOD.astype({"y": object})
    coded.loc[[1, 4], "y"] = "."
    root = _folder(tmp_path / "t", {"a": coded, "b": GOOD})
    with pytest.raises(ValidationError, match=r"is empty in 2 data row\(s\)") as info:
        load_task_folder(root, na_values=".")
    assert "pos_label" not in str(info.value)


def test_text_among_numbers_in_a_dataframe_gets_advice_for_a_dataframe():
    """In memory as in a file, a text 'NA' is a missing value; other text codes get advice
    for both (declare them as files are read, replace them in a DataFrame)."""
    from ragim.schema import FeatureSchema

    schema = FeatureSchema.infer(GOOD.drop(columns="y")).fit(GOOD.drop(columns="y"))
    X = GOOD.drop(columns="y").astype({"lactate": object})
    X.loc[0, "lactate"] = "NA"
    assert np.isnan(schema.validate_frame(X)["lactate"].iloc[0])
    X.loc[0, "lactate"] = "."
    with pytest.raises(ValidationError) as info:
        schema.validate_frame(X)
    text = str(info.value)
    assert "in a DataFrame, X.replace(['.'], np.nan)" in text
    assert "in files, load_task_folder" in text and "count as missing already, in both" in text


def test_good_parquet_folder_with_odd_names_loads(tmp_path):
    table = GOOD.rename(columns={"lactate": 'lactate "mmol/L" [β]'})
    tc = load_task_folder(_folder(tmp_path / "t", {"a": table}, fmt="parquet"))
    assert tc.schema.names == ['lactate "mmol/L" [β]'] and tc["a"].n_rows == N


# ---------------------------------------------------------------------------------------- command line
def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def run_cli(args, monkeypatch, capsys) -> tuple[int, str]:
    """``ragim.cli.main`` as the console script runs it: exit code and all output."""
    code, out, err = run_console(args, monkeypatch, capsys, columns=400)
    return code, _normalise(out + err)


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory):
    from typer.testing import CliRunner

    from ragim.cli import app

    root = tmp_path_factory.mktemp("cli-bad")
    result = CliRunner().invoke(app, ["index", "build", "--dataset", "synthetic", "--n-tasks", "12", "--embedder",
                                      "hashing", "--out", str(root / "idx"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["generate", "chronic endocarditis", "--index", str(root / "idx"), "--save",
                                      str(root / "params"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (root / "junk").mkdir()
    (root / "junk" / MANIFEST).write_text("{not json")
    (root / "rows.csv").write_text("a,b\n1,2\n")
    from ragim.params import ModelParams

    names = ModelParams.load(root / "params").schema.names
    values = ",".join("0.5" for _ in names)
    (root / "good_rows.csv").write_text(",".join(names) + "\n" + values + "\n")
    return root


CLI_CASES = [
    ("k-zero", ["index", "search", "{d}/idx", "x", "-k", "0"], "-k must be a positive integer, got 0"),
    ("k-not-a-number", ["index", "search", "{d}/idx", "x", "-k", "abc"], "Input should be a valid integer"),
    ("empty-query", ["index", "search", "{d}/idx", ""], "query 0 is empty"),
    ("missing-index", ["index", "search", "{d}/nope", "x"], "error: no artifact at"),
    ("damaged-manifest", ["index", "search", "{d}/junk", "x"], "the manifest is not valid JSON"),
    ("wrong-artifact-kind", ["explain", "{d}/idx"], "holds a task index ('ragim.task-index'), but a model's parameters ('ragim.model-params')"),
    ("generator-is-an-index", ["generate", "x", "--index", "{d}/idx", "--generator", "{d}/idx"],
     "holds a task index ('ragim.task-index'), not a generator; pass a saved generator: a "
     "statistical generator"),
    ("generator-damaged-manifest", ["generate", "x", "--index", "{d}/idx", "--generator", "{d}/junk"],
     "the manifest is not valid JSON"),
    ("generate-k-zero", ["generate", "x", "--index", "{d}/idx", "-k", "0"], "-k 0 (no neighbours) is for an LM generator's prompt"),
    ("generate-k-negative", ["generate", "x", "--index", "{d}/idx", "-k", "-1"], "-k must be a non-negative integer (0: no neighbours)"),
    ("generate-empty", ["generate", " ", "--index", "{d}/idx"], "query 0 is empty"),
    ("unknown-dataset", ["index", "build", "--dataset", "nonsense", "--out", "{d}/o"], "unknown dataset 'nonsense'"),
    ("n-tasks-zero", ["index", "build", "--dataset", "synthetic", "--n-tasks", "0", "--out", "{d}/o"],
     "--n-tasks must be at least 1, got 0"),
    ("negative-seed", ["index", "build", "--dataset", "synthetic", "--n-tasks", "5", "--seed", "-1", "--embedder",
                       "hashing", "--out", "{d}/o"], "seed must be an integer >= 0, got -1"),
    ("unknown-model", ["index", "build", "--dataset", "synthetic", "--n-tasks", "5", "--model", "tree", "--embedder",
                       "hashing", "--out", "{d}/o"], "model must be 'logistic' or 'gam', got 'tree'"),
    ("bad-faiss-string", ["index", "build", "--dataset", "synthetic", "--n-tasks", "5", "--index", "Bogus99",
                          "--embedder", "hashing", "--out", "{d}/o"], "invalid FAISS index string 'Bogus99'"),
    ("k-shots-not-numbers", ["evaluate", "--dataset", "synthetic", "--k-shots", "a,b"],
     "--k-shots must be comma-separated integers"),
    ("k-shots-negative", ["evaluate", "--dataset", "synthetic", "--k-shots", "-1"], "--k-shots needs at least one k >= 0"),
    ("unknown-protocol", ["evaluate", "--dataset", "synthetic", "--n-tasks", "12", "--embedder", "hashing", "--protocol",
                          "nonsense"], "unknown protocol 'nonsense'"),
    ("rows-missing", ["explain", "{d}/params", "--rows", "{d}/nope.csv"], "cannot read --rows"),
    ("rows-wrong-columns", ["explain", "{d}/params", "--rows", "{d}/rows.csv"],
     "does not match the model: missing the model's features"),
    ("row-out-of-range", ["explain", "{d}/params", "--rows", "{d}/good_rows.csv", "--row", "5"],
     "--row 5 is outside the 1 rows"),
    ("unknown-bench", ["bench", "nonsense"], "unknown benchmark 'nonsense'"),
    ("bench-n-zero", ["bench", "fit", "--n-tasks", "0"], "--n-tasks must be at least 1, got 0"),
    ("train-zero-epochs", ["train", "attention", "--index", "{d}/idx", "--max-epochs", "0", "--out", "{d}/g"],
     "--max-epochs must be an integer >= 1, got 0"),
    ("unknown-command", ["nonsense"], "No such command 'nonsense'"),
]


@pytest.mark.parametrize("args, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_cli_arguments_exit_2_with_one_clear_message(cli_dir, monkeypatch, capsys, args, message):
    code, out = run_cli([a.format(d=cli_dir) for a in args], monkeypatch, capsys)
    assert code == 2, out
    assert message in out, out
    assert "Traceback" not in out


def test_cli_runner_reports_ragim_errors_as_exceptions(cli_dir):
    """Under ``CliRunner`` (no ``main`` wrapper) the ragim error itself surfaces, never a foreign one."""
    from typer.testing import CliRunner

    from ragim.cli import app

    result = CliRunner().invoke(app, ["index", "search", str(cli_dir / "junk"), "x"])
    assert isinstance(result.exception, ArtifactError)


# ---------------------------------------------------------------------------------------- LM outputs
KEYS = ["intercept", "age"]
LM_CASES = [
    ("NaN", '{"intercept": NaN, "age": 1}', "value for key 'intercept' is not finite: nan"),
    ("Infinity", '{"intercept": 1, "age": Infinity}', "value for key 'age' is not finite: inf"),
    ("-Infinity", '{"intercept": -Infinity, "age": 1}', "is not finite: -inf"),
    ("overflow-1e999", '{"intercept": 1e999, "age": 1}', "is not finite: inf"),
    ("out-of-range", '{"intercept": 25, "age": 1}', "value for key 'intercept' is 25.0, outside [-20, 20]"),
    ("out-of-range-negative", '{"intercept": 0, "age": -20.5}', "value for key 'age' is -20.5, outside [-20, 20]"),
    ("number-as-text", '{"intercept": "1", "age": 1}', "value for key 'intercept' is not a number but str"),
    ("null", '{"intercept": null, "age": 1}', "is not a number but NoneType"),
    ("bool", '{"intercept": true, "age": 1}', "is not a number but bool"),
    ("list", '{"intercept": [1], "age": 1}', "is not a number but list"),
    ("object", '{"intercept": {"v": 1}, "age": 1}', "is not a number but object"),
    ("missing-key", '{"intercept": 1}', "missing keys: 'age'"),
    ("extra-key", '{"intercept": 1, "age": 1, "bmi": 2}', "extra keys: 'bmi'"),
    ("duplicated-key", '{"intercept": 1, "intercept": 2, "age": 1}', "duplicated keys: 'intercept'"),
    ("reordered", '{"age": 1, "intercept": 1}', "keys out of order"),
    ("array", "[1, 2]", "expected a JSON object, got array"),
    ("scalar", "1", "expected a JSON object, got int"),
    ("empty", "", "not valid JSON"),
    ("prose", "The intercept is 1.", "not valid JSON"),
    ("truncated", '{"intercept": 1, "age": 1', "not valid JSON (Expecting ',' delimiter"),
    ("trailing-text", '{"intercept": 1, "age": 1} done', "Extra data"),
    ("hex", '{"intercept": 0x10, "age": 1}', "not valid JSON"),
    ("bytes", b'{"intercept": 1, "age": 1}', "expected text, got bytes"),
    ("none", None, "expected text, got NoneType"),
    ("5000-digit-int", '{"intercept": ' + "9" * 5000 + ', "age": 1}', "intercept"),
    ("deeply-nested", "[" * 100_000, "not valid JSON"),
]
@pytest.mark.parametrize("text, message", [pytest.param(*c[1:], id=c[0]) for c in LM_CASES])
def test_bad_lm_outputs(text, message):
    check(lambda: parse_json_numbers(text, KEYS), GenerationError, message)


def test_lm_parser_accepts_odd_but_valid_keys():
    keys = ["β-hCG [mIU/mL]", 'chol "total"', "it's", ""]
    text = json.dumps(dict(zip(keys, [1, -2.5, 0, 3], strict=True)), ensure_ascii=False)
    assert parse_json_numbers(text, keys) == {"β-hCG [mIU/mL]": 1.0, 'chol "total"': -2.5, "it's": 0.0, "": 3.0}


# ---------------------------------------------------------------------------------------- fuzzing
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])
json_scalars = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
param_names_st = st.sampled_from(["intercept", "age", "smoker", "bmi", "", "age__missing"])
values_st = st.dictionaries(param_names_st, json_scalars, max_size=5)
payload_st = st.fixed_dictionaries(
    {},
    optional={"kind": st.sampled_from(["logistic", "gam", "tree"]) | json_scalars, "values": values_st | json_values,
              "std": values_st | json_values, "metadata": json_values, "schema": json_values},
)


@FUZZ
@given(text=st.text(max_size=200) | payload_st.map(lambda d: json.dumps(d, default=str)))
def test_fuzz_model_params_from_json(schema, text):
    try:
        p = ModelParams.from_json(text, schema)
    except ValidationError:
        return
    assert np.all(np.isfinite(p.vector)) and p.names == ["intercept", "age", "smoker"]


@FUZZ
@given(payload=payload_st | json_values)
def test_fuzz_model_params_from_payload(schema, payload):
    for s in (schema, None):
        try:
            ModelParams.from_payload(payload, s)
        except ValidationError:
            pass


@FUZZ
@given(d=json_values | st.fixed_dictionaries({"features": json_values}, optional={"n_bins": json_scalars, "fitted": json_values}))
def test_fuzz_schema_from_dict(d):
    try:
        FeatureSchema.from_dict(d)
    except ValidationError:
        pass


@FUZZ
@given(text=st.text(max_size=80))
def test_fuzz_lm_parser(text):
    try:
        out = parse_json_numbers(text, KEYS)
    except GenerationError:
        return
    assert list(out) == KEYS and all(abs(v) <= 20 for v in out.values())


entry_st = st.fixed_dictionaries({}, optional={"sha256": st.text(max_size=64) | json_scalars,
                                               "bytes": st.integers(-2, 40) | json_scalars}) | json_values
manifest_st = st.fixed_dictionaries(
    {},
    optional={"format": st.sampled_from(["ragim.example", "ragim.task-index"]) | json_scalars,
              "format_version": st.sampled_from([1, 2, 1.0, "1", True]) | json_scalars,
              "files": st.dictionaries(st.sampled_from(["config.json", "a/b.bin", "../x", "/etc/hosts", "", "manifest.json",
                                                        "nul\x00l", ".", "a//b"]) | st.text(max_size=10),
                                       entry_st, max_size=4) | json_values},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=manifest_st | json_values, raw=st.none() | st.binary(max_size=64), data=st.binary(max_size=40))
def test_fuzz_read_artifact(tmp_path_factory, manifest, raw, data):
    """Random manifests (or raw manifest bytes) and file contents: a verified artifact or an ArtifactError."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "config.json").write_bytes(data)
    (root / "a").mkdir()
    (root / "a" / "b.bin").write_bytes(data)
    if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict):  # sometimes make the checksums right
        for entry in manifest["files"].values():
            if isinstance(entry, dict) and entry.get("sha256") == "":
                entry.update(sha256=sha256_bytes(data), bytes=len(data))
    (root / MANIFEST).write_bytes(raw if raw is not None else json.dumps(manifest).encode())
    try:
        art = read_artifact(root, "ragim.example")
    except ArtifactError:
        return
    for name in art.files:  # whatever was accepted is inside the artifact and readable
        assert (root / name).resolve().is_relative_to(root.resolve())
        assert art.read_bytes(name) == data
        for reader in (art.read_json, art.read_jsonl, art.read_npz):
            try:
                reader(name)
            except ArtifactError:
                pass


def test_read_artifact_rejects_paths_outside_the_artifact(tmp_path):
    p = write_artifact(tmp_path / "art", "ragim.example", {"config.json": b"{}"})
    m = json.loads((p / MANIFEST).read_text())
    hosts = b"127.0.0.1 localhost\n"
    (tmp_path / "outside").write_bytes(hosts)
    for bad in (str(tmp_path / "outside"), "../outside"):
        m["files"] = {bad: {"sha256": sha256_bytes(hosts), "bytes": len(hosts)}}
        (p / MANIFEST).write_text(json.dumps(m))
        check(lambda: read_artifact(p, "ragim.example"), ArtifactError, "invalid file name")


# ---------------------------------------------------------------- generator and query types
@pytest.fixture(scope="module")
def small_index():
    from ragim import TaskIndex, datasets

    tasks = datasets.synthetic_family(n_tasks=12, n_features=2, seed=0)
    return TaskIndex.build(tasks, embedder="hashing", progress=False)


@pytest.mark.parametrize(
    "query, message",
    [
        (None, "query must be a description .* got NoneType"),
        (5, "query must be a description .* got int"),
        (b"sepsis", "query must be a description .* got bytes"),
        (["sepsis", 7], r"query 1 must be a description \(str\) or a Task, got int"),
    ],
)
def test_generate_params_names_a_query_of_the_wrong_type(small_index, query, message):
    from ragim.generate import StatisticalGenerator

    gen = StatisticalGenerator().fit(small_index, progress=False)
    with pytest.raises(ValidationError, match=message):
        gen.generate_params(query)
    with pytest.raises(ValidationError, match=message):
        small_index.search(query, k=2)


def test_generators_name_a_path_or_an_unfitted_state_not_a_missing_index(small_index, tmp_path):
    from ragim.generate import AttentionGenerator, RagIm2024Generator, StatisticalGenerator

    for cls in (StatisticalGenerator, AttentionGenerator, RagIm2024Generator):
        with pytest.raises(ValidationError, match=r"index must be a TaskIndex, got PosixPath; load the saved one"):
            cls().fit(tmp_path / "index")
        with pytest.raises(ValidationError, match="index must be a TaskIndex, got int$"):
            cls().fit(5)
        with pytest.raises(ValidationError, match=f"this {cls.__name__} is not fitted; call fit"):
            cls().generate_params("sepsis after surgery")
    fitted = StatisticalGenerator().fit(small_index, progress=False)
    with pytest.raises(ValidationError, match="index must be a TaskIndex, got str; load the saved one"):
        fitted.generate_params("sepsis after surgery", str(tmp_path))



def test_every_generator_names_an_excluded_id_the_index_does_not_hold(small_index):
    from ragim import ZeroShotClassifier
    from ragim.errors import DataWarning
    from ragim.generate import AttentionGenerator, StatisticalGenerator

    typo = small_index.ids[0] + "x"
    gens = [StatisticalGenerator().fit(small_index, progress=False),
            AttentionGenerator(max_epochs=1).fit(small_index, progress=False)]
    for gen in gens:
        with pytest.warns(DataWarning, match=f"the index does not hold: '{typo}'"):
            gen.generate_params("sepsis after surgery", exclude=[typo])
        known = gen.generate_params("sepsis after surgery", exclude=np.array([small_index.ids[0]]))
        assert small_index.ids[0] not in {r["task_id"] for r in known.metadata["provenance"]}
    clf = ZeroShotClassifier(small_index, gens[0], "sepsis after surgery", exclude=[typo])
    with pytest.warns(DataWarning, match=f"the index does not hold: '{typo}'"):
        clf.fit()
    for bad, message in (("/some/index", "index must be a TaskIndex, got str"),):
        with pytest.raises(ValidationError, match=message):
            ZeroShotClassifier(bad, None, "sepsis after surgery").fit()
    with pytest.raises(ValidationError, match="generator must be a ragim Generator .* got str"):
        ZeroShotClassifier(small_index, "/some/generator", "sepsis after surgery").fit()
    X = small_index.tasks[small_index.ids[0]].X
    with pytest.raises(ValidationError, match="X has no rows"):
        ZeroShotClassifier(small_index, gens[0], "sepsis after surgery").fit(X.iloc[:0], np.zeros(0))
    assert small_index.search(np.array("sepsis after surgery"), k=2)  # a 0-d array is one query
    assert len(gens[0].generate_params((q for q in ["sepsis", "stroke"]), small_index)) == 2
