"""Reading values the same way everywhere, and noticing levels or scales that differ by file.

Missing-value text, invisible characters, site-specific level codings, files or new rows on
another scale, numbers written with their unit, and tasks that share one description. Each
test asserts the value ragim reads or the warning it gives, and that the bundled datasets
raise none of the new warnings.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from ragim import FeatureSchema, Task, TaskIndex
from ragim.canonical import (
    MISSING_TEXT,
    canonical_level,
    is_missing_text,
    shared_descriptions,
    warn_shared_descriptions,
)
from ragim.datasets.folder import load_task_folder
from ragim.errors import DataWarning, ValidationError
from ragim.models import LogisticModel
from ragim.rows import read_rows, read_table
from ragim.schema import (
    Feature,
    blank_missing_text,
    read_feature,
    scale_gaps,
    separate_level_sets,
    unit_suffix,
)


def _recorded(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in seen if issubclass(w.category, DataWarning)]


def _smoking(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    smoking = rng.choice(["None", "Light", "Heavy"], n)
    age = rng.normal(60, 12, n).round()
    logit = -1 + 0.04 * (age - 60) + np.select([smoking == "Light", smoking == "Heavy"], [0.5, 1.2])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"age": age, "smoking": smoking, "y": y})


def _folder(root, tables: dict[str, pd.DataFrame], descriptions: dict[str, str] | None = None):
    (root / "data").mkdir(parents=True)
    for tid, table in tables.items():
        table.to_csv(root / "data" / f"{tid}.csv", index=False)
    text = descriptions or {t: f"Predict sepsis in adults at {t} hospital" for t in tables}
    pd.DataFrame({"task_id": list(text), "description": list(text.values())}).to_csv(
        root / "descriptions.csv", index=False
    )
    return root


# ------------------------------------------------------------------ one list of missing text
def test_the_word_none_is_a_level_in_files_as_in_dataframes(tmp_path):
    tables = {f"site{k}": _smoking(150, k) for k in range(3)}
    folder = load_task_folder(_folder(tmp_path / "f", tables))
    assert folder.schema.names == ["age", "smoking"]
    index = TaskIndex.build(folder, embedder="hashing", progress=False)
    assert index.schema.categories_["smoking"] == ["Heavy", "Light", "None"]
    assert "smoking__missing" not in index.schema.design_names

    model = LogisticModel(schema=index.schema).fit(
        tables["site0"][["age", "smoking"]], tables["site0"]["y"]
    )
    new = _smoking(12, 9)
    new.to_csv(tmp_path / "rows.csv", index=False)
    rows = read_rows(tmp_path / "rows.csv", schema=index.schema, outcome="y")
    assert rows.X["smoking"].tolist() == new["smoking"].tolist()
    np.testing.assert_allclose(
        model.predict_proba(rows.X)[:, 1], model.predict_proba(new[["age", "smoking"]])[:, 1]
    )


def test_missing_text_reads_alike_from_csv_parquet_and_dataframes(tmp_path):
    table = pd.DataFrame(
        {
            "lactate": ["1.5", "NA", "2.0", "null", "3.1", "#N/A"],
            "smoker": ["yes", "NA", "None", "n/a", "no", "<NA>"],
        }
    )
    table.to_csv(tmp_path / "t.csv", index=False)
    table.to_parquet(tmp_path / "t.parquet", index=False)
    csv, parquet = (read_table(tmp_path / f"t.{fmt}") for fmt in ("csv", "parquet"))
    pd.testing.assert_frame_equal(csv, parquet)
    assert csv["lactate"].isna().tolist() == [False, True, False, True, False, True]
    assert csv["smoker"].tolist()[2] == "None"
    assert csv["smoker"].isna().tolist() == [False, True, False, True, False, True]

    schema = FeatureSchema.infer(csv).fit(csv)
    in_memory = schema.validate_frame(table)  # the same text, never written to a file
    from_file = schema.validate_frame(csv)
    pd.testing.assert_frame_equal(in_memory, from_file)
    assert schema.categories_["smoker"] == ["None", "no", "yes"]
    assert set(MISSING_TEXT) >= {"NA", "N/A", "NaN", "null"} and "None" not in MISSING_TEXT
    assert [is_missing_text(v) for v in (" NA ", "None", "")] == [True, False, True]
    assert blank_missing_text(pd.Series([1.0, 2.0])).tolist() == [1.0, 2.0]


def test_declared_na_values_add_to_the_list(tmp_path):
    table = pd.DataFrame({"lactate": ["1.5", "None", "2.0", "NA", "."]})
    table.to_csv(tmp_path / "t.csv", index=False)
    read = read_table(tmp_path / "t.csv", na_values=["None", "."])
    assert read["lactate"].tolist()[0] == 1.5 and read["lactate"].isna().sum() == 3


# ------------------------------------------------------------------ invisible characters
def test_invisible_characters_do_not_split_a_level(tmp_path):
    assert canonical_level("Fe\u200bmale") == "Female" == canonical_level("\ufeffFemale\u00ad")
    rng = np.random.default_rng(0)
    frames = []
    for k in range(3):
        sex = rng.choice(["Female", "Male"], 80)
        if k == 0:
            sex = np.where(sex == "Female", "Fe\u200bmale", sex)
        frames.append(pd.DataFrame({"age": rng.normal(60, 10, 80), "sex": sex}))
    schema, seen = _recorded(FeatureSchema.infer, frames, labels=["north", "south", "east"])
    schema.fit(pd.concat(frames))
    assert schema.categories_["sex"] == ["Female", "Male"]
    assert any("'sex'" in m and "U+200B" in m and "north" in m for m in seen)
    codes = schema.transform(frames[0])
    np.testing.assert_array_equal(
        codes, schema.transform(frames[0].replace("Fe\u200bmale", "Female"))
    )


# ------------------------------------------------------------------ site-specific codings
def test_a_file_coding_a_column_with_other_levels_warns_naming_both_sets():
    rng = np.random.default_rng(1)
    frames, labels = [], []
    for site in ("north", "south", "east", "west"):
        for outcome in ("sepsis", "death"):
            sex = rng.choice(["Female", "Male"], 60)
            if site == "north":
                sex = np.where(sex == "Female", "F", "M")
            frames.append(pd.DataFrame({"age": rng.normal(60, 10, 60), "sex": sex}))
            labels.append(f"{site}-{outcome}.csv")
    _, seen = _recorded(FeatureSchema.infer, frames, labels=labels)
    found = [m for m in seen if "share none" in m]
    assert len(found) == 1
    assert "'sex'" in found[0] and "north-sepsis.csv" in found[0] and "north-death.csv" in found[0]
    assert "['F', 'M']" in found[0] and "['Female', 'Male']" in found[0]


def test_a_file_lacking_a_rare_level_or_a_site_column_does_not_warn():
    assert separate_level_sets([{"a", "b", "c"}, {"a", "b"}, {"b", "c"}], ["x", "y", "z"]) == []
    assert separate_level_sets([{"North"}, {"South"}, {"East"}], ["x", "y", "z"]) == []
    assert separate_level_sets([{"f", "m"}, {"F", "M"}, {"F", "M"}], ["x", "y", "z"]) == []
    rng = np.random.default_rng(2)
    frames = [
        pd.DataFrame(
            {
                "grade": rng.choice(["1", "2", "3"] if k else ["1", "2"], 50),
                "site": [f"s{k}"] * 50,
                "age": rng.normal(50, 9, 50),
            }
        )
        for k in range(4)
    ]
    _, seen = _recorded(FeatureSchema.infer, frames, types={"grade": "categorical"})
    assert not [m for m in seen if "share none" in m]


# ------------------------------------------------------------------ files and rows on another scale
def test_a_file_whose_column_is_zero_is_a_scale_gap():
    rng = np.random.default_rng(3)
    hr = [pd.Series(rng.normal(90, 15, 100).round()) for _ in range(5)]
    gaps = scale_gaps("hr", [*hr, pd.Series(np.zeros(100))], [f"t{i}" for i in range(6)])
    assert [(g.column, g.tables) for g in gaps] == [("hr", [("t5", 0.0)])]
    _, seen = _recorded(
        FeatureSchema.infer,
        [pd.DataFrame({"hr": s}) for s in [*hr, pd.Series(np.zeros(100))]],
        labels=[f"t{i}.csv" for i in range(6)],
    )
    found = [m for m in seen if "another scale" in m]
    assert len(found) == 1 and "t5.csv (median 0)" in found[0]
    assert "na_values={'hr': [0]}" in found[0]
    # a count that is 0 at the centre of one file and ranges down to 0 elsewhere is not flagged
    counts = [pd.Series(rng.poisson(2, 100)) for _ in range(5)] + [pd.Series(rng.poisson(0.3, 100))]
    assert scale_gaps("admissions", counts, list("abcdef")) == []


@pytest.mark.parametrize(
    ("column", "center", "spread", "factor"),
    [("weight", 78.0, 15.0, 2.2046), ("height", 170.0, 9.0, 1 / 2.54), ("temp", 37.2, 0.6, None)],
)
def test_a_file_in_pounds_inches_or_fahrenheit_among_metric_files_is_a_scale_gap(
    column, center, spread, factor
):
    # SCALE_RATIO was 5: a hospital's weights in pounds (median 172 among 78) loaded silently
    rng = np.random.default_rng(4)
    metric = [pd.Series(rng.normal(center, spread, 120)) for _ in range(4)]
    other = metric[0] * factor if factor else metric[0] * 9 / 5 + 32
    gaps = scale_gaps(column, [*metric[1:], other], ["a", "b", "c", "d"])
    assert [t for g in gaps for t, _ in g.tables] == ["d"]
    # adults of different ages, weights or temperatures per site are not a gap
    sites = [pd.Series(rng.normal(center * s, spread, 120)) for s in (0.85, 1.0, 1.1, 1.2)]
    assert scale_gaps(column, sites, ["a", "b", "c", "d"]) == []


def _weights(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"age": rng.normal(60, 12, n).round(), "weight": rng.normal(78, 15, n).round(1)}
    )


def test_new_rows_on_another_scale_warn_once_with_both_medians():
    fit = _weights(400, 0)
    schema = FeatureSchema.infer(fit, units={"weight": "kg"}).fit(fit)
    rng = np.random.default_rng(1)
    model = LogisticModel(schema=schema).fit(fit, (rng.random(400) < 0.3).astype(int))
    new = _weights(200, 5)
    _, seen = _recorded(model.predict_proba, new)
    assert not [m for m in seen if "as a whole" in m]

    pounds = new.assign(weight=(new["weight"] * 2.2046).round(1))
    _, seen = _recorded(model.predict_proba, pounds)
    found = [m for m in seen if "as a whole" in m]
    assert (
        len(found) == 1 and "'weight': median" in found[0] and "kg in the fitted rows" in found[0]
    )
    assert "median 170.2 against 77.7 kg" in found[0] and "2.19 times larger" in found[0]
    assert list(schema.scale_shifts(pounds)) == ["weight"]

    _, seen = _recorded(model.predict_proba, new.assign(weight=0.0))
    assert [m for m in seen if "as a whole" in m and "median 0 " in m]
    _, seen = _recorded(model.predict_proba, pounds.head(3))  # 3 patients: no file-level claim
    assert not [m for m in seen if "as a whole" in m]


def test_schemas_saved_without_ranges_still_check_the_scale():
    fit = _weights(300, 0)
    schema = FeatureSchema.infer(fit).fit(fit)
    d = schema.to_dict()
    del d["fitted"]["ranges"]
    old = FeatureSchema.from_dict(d)
    assert list(old.scale_shifts(fit.assign(weight=fit["weight"] * 2.2))) == ["weight"]
    assert old.scale_shifts(fit) == {}


# ------------------------------------------------------------------ numbers with a unit
@pytest.mark.parametrize("share", [5, 30])
def test_numbers_with_a_unit_get_advice_to_write_the_number(share):
    values = pd.Series([f"{90 + i}" + (" bpm" if i < share else "") for i in range(30)])
    _, problems = read_feature(Feature("hr"), values)
    assert len(problems) == 1
    assert "numbers written with a unit" in problems[0] and "(90 for '90 bpm')" in problems[0]
    assert "na_values" not in problems[0] and "declare it categorical" not in problems[0]
    assert [unit_suffix(t) for t in ("5.1 mmol/L", "72kg", "37.2 °C", "5A", "3E1")] == [
        "mmol/L",
        "kg",
        "°C",
        None,
        None,
    ]


def test_a_ward_column_is_not_taken_for_numbers_with_units():
    frame = pd.DataFrame({"ward": ["5A", "5B", "3E1", "4W"] * 10, "age": np.arange(40.0)})
    assert FeatureSchema.infer(frame)["ward"].type == "categorical"


# ------------------------------------------------------------------ shared descriptions
def _task(tid: str, description: str, seed: int) -> Task:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"age": rng.normal(60, 12, 80)})
    return Task(tid, description, X, (rng.random(80) < 0.4).astype(int))


def test_tasks_sharing_a_description_warn_at_build_and_add():
    same = "Predict outcome in adult emergency admissions"
    tasks = [_task(f"t{i}", same if i < 3 else f"Predict death at site {i}", i) for i in range(5)]
    index, seen = _recorded(TaskIndex.build, tasks, embedder="hashing", progress=False)
    found = [m for m in seen if "share a description" in m]
    assert len(found) == 1 and "['t0', 't1', 't2']" in found[0]
    assert "retrieval cannot" in found[0]

    _, seen = _recorded(
        index.add, [_task("t9", "predict  OUTCOME in adult emergency admissions", 9)]
    )
    found = [m for m in seen if "share a description" in m]
    assert len(found) == 1 and "'t9'" in found[0]
    _, seen = _recorded(index.add, [_task("t10", "Predict sepsis in children", 10)])
    assert not [m for m in seen if "share a description" in m]
    assert shared_descriptions([("a", "x"), ("b", "y")]) == []


def test_a_few_coinciding_descriptions_in_a_large_family_do_not_warn():
    pairs = [(f"t{i}", f"Predict death at site {i}") for i in range(100)] + [
        ("t100", "Predict death at site 7")
    ]
    assert shared_descriptions(pairs) == [["t7", "t100"]]
    _, seen = _recorded(warn_shared_descriptions, pairs)
    assert seen == []
    _, seen = _recorded(warn_shared_descriptions, pairs, new=["t100"])  # one added: 1 of 1
    assert len(seen) == 1 and "['t7', 't100']" in seen[0]


# ------------------------------------------------------------------ small messages
def test_rows_that_are_a_folder_or_a_device_are_named_so(tmp_path):
    with pytest.raises(ValidationError, match="it is a folder"):
        read_rows(tmp_path)
    with pytest.raises(ValidationError, match="not a regular file"):
        read_rows("/dev/null")
    with pytest.raises(ValidationError, match="no such file"):
        read_rows(tmp_path / "absent.csv")


def test_a_binary_column_names_its_offending_values_first():
    values = pd.Series([0, 1] * 10 + [9])
    _, problems = read_feature(Feature("smoker", "binary"), values)
    assert problems == ["binary column 'smoker' has values other than 0/1: [9.0]"]


def test_the_scale_warning_names_the_unit_change_or_says_the_patients_may_differ():
    # it led with 'convert those files' and named mg/dL against mmol/L for an intensive-care
    # site's lactate 3.75 times the wards'
    from ragim.schema import warn_scale_gaps

    rng = np.random.default_rng(5)
    kg = [pd.Series(rng.normal(78, 12, 120)) for _ in range(3)]
    ward = [pd.Series(rng.lognormal(np.log(1.2), 0.25, 120)) for _ in range(3)]
    for column, tables, says in (
        ("weight", [*kg, kg[0] * 2.2046], "the factor of 2.205 (pounds against kilograms)"),
        ("lactate", [*ward, pd.Series(rng.lognormal(np.log(4.5), 0.25, 120))],
         "no common unit change gives this factor, so the patients may differ"),
    ):
        gaps = scale_gaps(column, tables, ["a", "b", "c", "d"])
        with pytest.warns(DataWarning) as caught:
            warn_scale_gaps(gaps)
        message = str(caught[0].message)
        assert says in message and "if their patients differ" in message
        assert "mg/dL against mmol/L" not in message
