"""Files are read as written: a column declared categorical keeps its text (ward 3E1 is not
30, +5 is not 5) in a task folder and in --rows alike; a Parquet table of numbers stored as
text reads as the same table saved as CSV; messages quote the values as the file writes them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from ragim import FeatureSchema
from ragim.datasets.folder import load_task_folder
from ragim.errors import DataWarning, ValidationError
from ragim.models import LogisticModel
from ragim.rows import read_rows, read_table


def _recorded(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in seen if issubclass(w.category, DataWarning)]


def _table(n: int, seed: int, **columns) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 12, n).round(1)
    frame = pd.DataFrame({"age": age, **{k: rng.choice(v, n) for k, v in columns.items()}})
    frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-0.05 * (age - 60)))).astype(int)
    return frame


def _folder(root, tables: dict[str, pd.DataFrame], schema: dict | None = None, fmt="csv"):
    (root / "data").mkdir(parents=True)
    for tid, table in tables.items():
        if fmt == "csv":
            table.to_csv(root / "data" / f"{tid}.csv", index=False)
        else:
            table.to_parquet(root / "data" / f"{tid}.parquet", index=False)
    pd.DataFrame(
        {"task_id": list(tables), "description": [f"Predict sepsis at {t}" for t in tables]}
    ).to_csv(root / "descriptions.csv", index=False)
    if schema is not None:
        (root / "schema.json").write_text(json.dumps(schema))
    return root


UNIT_SCHEMA = {
    "features": [{"name": "age", "type": "continuous"}, {"name": "unit", "type": "categorical"}]
}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_declared_categorical_column_keeps_its_codes_as_written(tmp_path, fmt):
    codes = ["3E1", "30", "12", "+5", "04", "4.0", "NA"]
    tables = {f"s{k}": _table(70, k, unit=codes) for k in range(2)}
    for t in tables.values():  # a Parquet export of text cells: every code a string
        t["unit"] = t["unit"].astype(str)
    folder = load_task_folder(_folder(tmp_path / "f", tables, UNIT_SCHEMA, fmt))
    X = folder["s0"].X
    # 3E1 stays 3E1 (pandas reads 30) and +5 stays +5; 04 and 4.0 are one level, 4; NA missing
    assert sorted(set(X["unit"].dropna())) == ["+5", "04", "12", "30", "3E1", "4.0"]
    assert X["unit"].isna().sum() == (tables["s0"]["unit"] == "NA").sum()
    schema = folder.schema.copy().fit(pd.concat([t.X for t in folder]))
    assert schema.categories_["unit"] == ["4", "12", "30", "+5", "3E1"]
    assert int(folder.schema["unit"].type == "categorical")


def test_declared_missing_codes_leave_a_categorical_column_as_text(tmp_path):
    tables = {"s0": _table(60, 0, unit=["3E1", "30", "9"])}
    folder = load_task_folder(
        _folder(tmp_path / "f", tables, UNIT_SCHEMA), na_values={"unit": [9]}
    )
    X = folder["s0"].X
    assert sorted(set(X["unit"].dropna())) == ["30", "3E1"]
    assert X["unit"].isna().sum() == (tables["s0"]["unit"] == "9").sum()


def test_rows_keep_the_model_s_categorical_codes_as_written(tmp_path):
    train = _table(200, 1, grade=["1", "2", "3", "4"])
    train["grade"] = train["grade"].astype(int)
    X = train.drop(columns="y")
    schema = FeatureSchema.infer(X, types={"grade": "categorical"}).fit(X)
    model = LogisticModel(schema=schema).fit(X, train["y"])
    forms = ["4", "4.0", "04", " 4 ", "4.00", "+4", "4e0"]
    path = tmp_path / "rows.csv"
    pd.DataFrame({"age": [60.0] * len(forms), "grade": forms}).to_csv(path, index=False)
    rows = read_rows(path, schema=schema)
    assert rows.X["grade"].tolist() == forms  # as written
    _, seen = _recorded(model.predict_proba, rows.X)
    risk = model.predict_proba(rows.X)[:, 1]
    # the plain decimal numerals are level 4; +4 and 4e0 are no level the model knows
    assert np.allclose(risk[:5], risk[0]) and not np.isclose(risk[5], risk[0])
    assert any("'+4'" in m and "'4e0'" in m for m in seen)
    # read without the schema, the same file makes them numbers, as pandas does
    assert read_table(path)["grade"].tolist() == [4.0] * 7


def test_a_parquet_table_of_numbers_stored_as_text_reads_as_its_csv(tmp_path):
    tables = {f"s{k}": _table(80, k, ward=["icu", "ed", "ward"]) for k in range(2)}
    for t in tables.values():
        t.loc[3, "age"] = np.nan
    text = {k: t.astype(str).replace({"nan": "NA"}) for k, t in tables.items()}
    csv = load_task_folder(_folder(tmp_path / "csv", tables))
    pq = load_task_folder(_folder(tmp_path / "pq", text, fmt="parquet"))
    for t in csv:
        other = pq[t.task_id]
        assert np.array_equal(t.y, other.y)
        assert np.allclose(t.X["age"], other.X["age"].astype(float), equal_nan=True)
        assert t.X["ward"].tolist() == other.X["ward"].tolist()
    assert pq.schema["age"].type == "continuous"


def test_a_parquet_text_column_with_thousands_separators_is_refused_naming_the_file(tmp_path):
    t = _table(40, 0)
    t["ck"] = ["1,718", "961", "516", "2,300"] * 10
    path = tmp_path / "north.parquet"
    t.astype(str).to_parquet(path, index=False)
    with pytest.raises(ValidationError, match=r"north\.parquet.*'ck'"):
        read_table(path)


def test_a_column_coded_two_ways_says_so_and_never_advises_declaring_codes_missing(tmp_path):
    tables = {f"s{k}": _table(50, k, sex=["F", "M"]) for k in range(4)}
    tables["s3"]["sex"] = tables["s3"]["sex"].map({"F": 0, "M": 1})
    with pytest.raises(ValidationError) as caught:
        load_task_folder(_folder(tmp_path / "f", tables))
    message = str(caught.value)
    assert "'sex' is coded two ways: as text (F/M) in 3 files (s0.csv, s1.csv, s2.csv)" in message
    assert "as numbers (0/1) in s3.csv" in message and "recode one side" in message
    assert "na_values=" not in message and "--na-values 'F'" not in message
    # text among numbers in one file still gets the missing-value advice
    tables = {f"s{k}": _table(50, k) for k in range(2)}
    tables["s1"]["age"] = tables["s1"]["age"].astype(object)
    tables["s1"].loc[:2, "age"] = "."
    with pytest.raises(ValidationError, match=r"'age' is text in s1.csv.*na_values=\['\.'\]"):
        load_task_folder(_folder(tmp_path / "g", tables))
    # a file writing only a missing-value marker where the others write 0/1: the old advice
    tables = {f"s{k}": _table(50, k, smoker=[0, 1]) for k in range(2)}
    tables["s1"]["smoker"] = "."
    with pytest.raises(ValidationError, match=r"'smoker' is text in s1.csv.*na_values=\['\.'\]"):
        load_task_folder(_folder(tmp_path / "h", tables))



def test_a_file_of_words_where_the_others_write_values_never_gets_missing_advice(tmp_path):
    # potassium as low/normal/high in one file, 3.1-5.0 elsewhere: the advice was to declare
    # the words missing, which loaded that hospital's column wholly blank, silently
    rng = np.random.default_rng(0)
    tables = {f"s{k}": _table(50, k).assign(k=rng.uniform(3.1, 5.0, 50).round(1)) for k in range(4)}
    tables["s3"]["k"] = rng.choice(["low", "normal", "high"], 50)
    with pytest.raises(ValidationError) as caught:
        load_task_folder(_folder(tmp_path / "f", tables))
    message = str(caught.value)
    assert "'k' is written as words (high/low/normal) in s3.csv but as numbers in 3 files" in message
    assert "na_values=" not in message and "do not declare the words missing" in message
    # a 0-10 score coded as words in one file lists its codes with an ellipsis
    tables = {f"s{k}": _table(50, k).assign(pain=np.arange(50) % 11) for k in range(2)}
    tables["s1"]["pain"] = rng.choice(list("abcdefgh"), 50)
    with pytest.raises(ValidationError, match=r"\(a/b/c/d/e/f/\.\.\.\) in s1.csv"):
        load_task_folder(_folder(tmp_path / "g", tables))

# ------------------------------------------------------------------ messages about --rows
@pytest.fixture()
def saved_model(tmp_path):
    train = _table(200, 3, sex=["F", "M"])
    X = train.drop(columns="y")
    schema = FeatureSchema.infer(X).fit(X)
    path = tmp_path / "model"
    LogisticModel(schema=schema).fit(X, train["y"]).params_.save(path)
    return path


def test_rows_messages_name_the_file_and_quote_what_it_writes(tmp_path, saved_model, monkeypatch, capsys):
    from conftest import run_console

    rows = pd.DataFrame({"age": [61.0, 70.0, 55.0], "sex": ["TRUE", "M", "F"]})
    rows.loc[2, "age"] = np.nan  # age was never missing in the fitted rows
    path = tmp_path / "north.csv"
    rows.to_csv(path, index=False)
    code, _, err = run_console(["predict", str(saved_model), "--rows", str(path)], monkeypatch, capsys)
    assert code == 0
    assert f"categorical values in --rows {path} match no level" in err
    assert "e.g. ['TRUE']" in err and "['1']" not in err  # as written, not the level it reads as
    assert f"blank values in --rows {path} in columns" in err
    code, _, err = run_console(
        ["explain", str(saved_model), "--rows", str(path), "--row", "2"], monkeypatch, capsys
    )
    assert code == 0 and f"blank values in row 2 of --rows {path}" in err and "X_row" not in err

    rows = pd.DataFrame({"age": ["1,000", "63.0", "70.5"], "sex": ["F", "M", "F"]})
    rows.to_csv(path, index=False)
    code, _, err = run_console(["predict", str(saved_model), "--rows", str(path)], monkeypatch, capsys)
    assert code != 0
    assert "thousands separator (e.g. ['1,000']): write them without it (1000 for '1,000')" in err
    assert "na-values" not in err


# ------------------------------------------------------------------ codes in exponent notation
def test_ward_codes_in_exponent_notation_are_quoted_as_written(tmp_path):
    tables = {f"s{k}": _table(60, k, ward=["1E2", "2E1", "3E1", "4E1"]) for k in range(2)}
    folder, seen = _recorded(load_task_folder, _folder(tmp_path / "f", tables))
    assert folder.schema["ward"].type == "continuous"  # as pandas reads them, without a schema
    [coded] = [m for m in seen if "few whole numbers" in m]
    assert "'ward' ['2E1', '3E1', '4E1', '1E2'] (exponent notation" in coded
    assert "'3E1' as 30" in coded and "[20, 30, 40, 100]" not in coded
    # more distinct values than codes: a warning of its own
    many = {"s0": _table(60, 0, bed=[f"{k}E1" for k in range(1, 10)] + [str(k) for k in range(15)])}
    _, seen = _recorded(load_task_folder, _folder(tmp_path / "g", many))
    assert any("'bed' ('" in m and "exponent notation" in m for m in seen)


def test_real_numbers_in_exponent_notation_raise_no_alarm(tmp_path):
    from ragim.rows import exponent_codes

    t = _table(60, 0)
    t["crp"] = np.round(np.random.default_rng(1).gamma(2, 20, 60), 1).astype(str)
    t.loc[:5, "crp"] = ["1e-3", "2.5E-4", "1E6", "5E+3", "3.1e2", "2E3"]
    t["viral_load"] = ["1E6", "5E5", "2E4", "1E3"] * 15
    path = tmp_path / "t.csv"
    t.to_csv(path, index=False)
    from ragim.rows import read_table

    assert exponent_codes(path, read_table(path)) == {}
    _, seen = _recorded(load_task_folder, _folder(tmp_path / "f", {"s0": t}))
    assert not [m for m in seen if "exponent notation" in m]
    # a lab column of many values with a few cells like 2E2 (copies/mL) warned 'may be codes'
    t["viral_load"] = np.round(np.random.default_rng(2).lognormal(8, 2, 60)).astype(str)
    t.loc[:1, "viral_load"] = ["2E2", "1E2"]
    _, seen = _recorded(load_task_folder, _folder(tmp_path / "g", {"s0": t}))
    assert not [m for m in seen if "exponent notation" in m]


def test_text_with_too_many_values_names_the_tables_and_numbers_stored_as_text():
    a = pd.DataFrame({"age": [f"{60 + k}" for k in range(20)]})
    b = pd.DataFrame({"age": [f"{40 + k}" for k in range(20)]})
    with pytest.raises(ValidationError) as caught:
        FeatureSchema.infer([a, b], labels=["north.parquet", "south.parquet"])
    message = str(caught.value)
    assert "in north.parquet, south.parquet (more than max_categories=12)" in message
    assert "numbers stored as text (e.g. '60')" in message and "pd.to_numeric" in message


def test_numbers_padded_with_no_break_spaces_read_as_numbers(tmp_path):
    """A no-break space before a number (Excel, EHR exports) made the column text, and the
    advice was to declare the bare number missing, which blanked every real 5 in every file."""
    from ragim.rows import read_table

    lab = ["5", "5.0", "2.5", "\u00a061", "4.4\u202f", "\u20071.9"]
    path = tmp_path / "a.csv"
    pd.DataFrame({"lab": lab, "ward": ["\u00a03"] * 6, "y": [0, 1] * 3}).to_csv(path, index=False)
    table = read_table(path, categorical=["ward"])
    assert table["lab"].tolist() == [5.0, 5.0, 2.5, 61.0, 4.4, 1.9]
    assert table["ward"].tolist() == ["\u00a03"] * 6  # a declared categorical keeps its text
    words = tmp_path / "b.csv"
    pd.DataFrame({"lab": ["\u00a05", "high"], "y": [0, 1]}).to_csv(words, index=False)
    assert read_table(words)["lab"].tolist() == ["\u00a05", "high"]  # text stays text
    pq = tmp_path / "c.parquet"
    pd.DataFrame({"lab": lab, "y": ["0", "1"] * 3}).to_parquet(pq)
    assert read_table(pq, text_columns=("y",))["lab"].tolist() == [5.0, 5.0, 2.5, 61.0, 4.4, 1.9]


@pytest.mark.parametrize(
    ("thousands", "cells", "numbers"),
    [(",", ["1,718", "961", "2,005.5"], [1718.0, 961.0, 2005.5]),
     (".", ["1.718", "1,5", "1.718,25"], [1718.0, 1.5, 1718.25])],
)
def test_thousands_reads_parquet_text_as_it_reads_csv(tmp_path, thousands, cells, numbers):
    """thousands= had no effect on a Parquet text column: '1,718' was refused with the advice
    to pass the thousands= the user had passed, and '1,5' with thousands='.' was advised missing."""
    frame = pd.DataFrame({"lab": cells, "y": ["0", "1", "0"]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    csv = read_table(tmp_path / "a.csv", thousands=thousands, text_columns=("y",))
    pq = read_table(tmp_path / "a.parquet", thousands=thousands, text_columns=("y",))
    assert csv["lab"].tolist() == numbers and pq["lab"].tolist() == numbers


def test_decimal_commas_among_decimal_points_are_never_advised_missing(tmp_path):
    """'1,5' among '2.5' got the advice to declare '1,5' missing, which blanks real values;
    reading the file with a decimal comma would misread the rest."""
    tables = {f"s{k}": _table(30, k).assign(lab=["5", "2.5", "3.1"] * 10) for k in range(2)}
    tables["s1"].loc[:1, "lab"] = ["1,5", "2,0"]
    with pytest.raises(ValidationError) as caught:
        load_task_folder(_folder(tmp_path / "f", tables))
    message = str(caught.value)
    assert "decimal comma (e.g. ['1,5', '2,0']) among numbers written with a decimal point" in message
    assert "na_values" not in message and "write them with '.' (1.5 for '1,5')" in message


def test_result_words_among_numbers_are_never_advised_missing(tmp_path):
    """'high' among potassium values in one file was advised missing: a real (high) result
    would be filled with a typical value."""
    tables = {f"s{k}": _table(30, k).assign(k=["3.9", "4.1", "4.4"] * 10) for k in range(2)}
    tables["s1"].loc[:2, "k"] = ["high", "High", "low"]
    with pytest.raises(ValidationError) as caught:
        load_task_folder(_folder(tmp_path / "f", tables))
    message = str(caught.value)
    assert "look like results written as words among numbers" in message
    assert "na_values" not in message


def test_exponent_codes_in_a_parquet_text_column_are_quoted_and_numbers_need_no_second_read(
    tmp_path,
):
    from ragim.rows import exponent_codes

    path = tmp_path / "t.parquet"
    pd.DataFrame({"ward": ["3E1", "2E1", "1E2", "30"], "lab": [1.5, 2.0, 0.5, 1.0]}).to_parquet(path)
    assert exponent_codes(path, read_table(path)) == {"ward": {30.0: "3E1", 20.0: "2E1", 100.0: "1E2"}}
    numbers = tmp_path / "n.parquet"
    pd.DataFrame({"lab": [1.5, 2.0], "age": [61.0, 70.0]}).to_parquet(numbers)
    assert exponent_codes(numbers, read_table(numbers)) == {}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_codes_that_fill_a_whole_column_are_said(tmp_path, fmt):
    """--na-values F,M (meant for another file's sex column, or typed by mistake) blanked a
    column coded F/M in every row, silently: the model then had no sex effect. It is said now,
    naming the column and the codes; one code filling a column (a never-recorded field) is not."""
    table = _table(40, 0, sex=["F", "M"], smoker=["."])
    path = tmp_path / f"t.{fmt}"
    table.to_csv(path, index=False) if fmt == "csv" else table.to_parquet(path, index=False)
    df, said = _recorded(read_table, path, na_values=["F", "M", "."])
    assert df["sex"].isna().all() and df["smoker"].isna().all()
    assert len(said) == 1 and "column(s) 'sex' (" in said[0] and "'F' x" in said[0] and "'M' x" in said[0]
    assert "smoker" not in said[0]
    _, quiet = _recorded(read_table, path, na_values=["."])
    assert quiet == []
