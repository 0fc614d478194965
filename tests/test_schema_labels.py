"""Human labels in the schema: Feature.label and Feature.levels, saved and loaded with the
schema, read from a task folder's schema.json and shipped for the heart-disease data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ragim.canonical import canonical_level
from ragim.datasets import heart_disease
from ragim.datasets.folder import load_task_folder
from ragim.datasets.heart import FEATURES, heart_schema
from ragim.errors import ValidationError
from ragim.schema import Feature, FeatureSchema


def test_labels_and_levels_round_trip():
    f = Feature("sex", "binary", label="Sex", levels={0: "female", 1.0: "male"})
    assert f.levels == {"0": "female", "1": "male"} and f.display_name == "Sex"
    assert [f.level_label(v) for v in (0, 1.0, True, "1")] == ["female", "male", "male", "male"]
    assert (
        Feature("age").display_name == "age"
        and Feature("cp", "categorical").level_label("x") == "x"
    )
    X = pd.DataFrame({"sex": [0, 1, 1], "cp": ["a", "b", None]})
    schema = FeatureSchema(
        [f, Feature("cp", "categorical", label="Chest pain", levels={"a": "typical"})]
    ).fit(X)
    back = FeatureSchema.from_json(schema.to_json())
    assert back == schema and back["sex"].levels == {"0": "female", "1": "male"}
    assert back["cp"].label == "Chest pain" and back["cp"].level_label("a") == "typical"
    assert schema.describe()["label"].tolist() == ["Sex", "Chest pain"]
    hash(back["sex"])  # a Feature stays hashable


def test_schemas_without_labels_keep_their_json_and_old_files_load():
    X = pd.DataFrame({"age": [40.0, 50.0, 60.0]})
    schema = FeatureSchema.infer(X).fit(X)
    d = schema.to_dict()
    assert set(d["features"][0]) == {
        "name",
        "type",
        "unit",
        "description",
        "categories",
        "allow_missing",
    }
    old = {
        "features": [
            {
                "name": "age",
                "type": "continuous",
                "unit": "years",
                "description": "",
                "categories": [],
                "allow_missing": True,
            }
        ],
        "n_bins": 8,
    }
    loaded = FeatureSchema.from_dict(old)
    assert loaded["age"].label == "" and loaded["age"].levels == {} and loaded.to_dict() == old


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"name": "age", "levels": {0: "young"}},
            "is continuous; level labels are only for binary or categorical",
        ),
        (
            {"name": "sex", "type": "binary", "levels": {2: "other"}},
            "a binary feature's values are 0 and 1",
        ),
        ({"name": "sex", "type": "binary", "levels": {0: ""}}, "must be non-empty text"),
        (
            {"name": "sex", "type": "binary", "levels": ["female"]},
            "levels must map values to labels",
        ),
        ({"name": "sex", "label": 3}, "label must be text"),
    ],
)
def test_bad_labels_are_clear_errors(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Feature(**kwargs)


def test_level_labels_are_keyed_by_canonical_level():
    assert [canonical_level(v) for v in (4, 4.0, "4", True, 2.5)] == ["4", "4", "4", "1", "2.5"]
    f = Feature("asa", "categorical", levels={"04": "ASA IV", 1.0: "ASA I"})
    assert f.level_label(4) == "ASA IV" and f.level_label("1") == "ASA I" and f.level_label(2) == "2"


def test_schema_json_in_a_task_folder_brings_the_labels(tmp_path):
    (tmp_path / "data").mkdir()
    pd.DataFrame({"task_id": ["a"], "description": ["Predict sepsis"]}).to_csv(
        tmp_path / "descriptions.csv", index=False
    )
    pd.DataFrame({"sex": [0, 1] * 5, "ward": ["icu", "ed"] * 5, "y": [0, 1] * 5}).to_csv(
        tmp_path / "data" / "a.csv", index=False
    )
    (tmp_path / "schema.json").write_text(
        json.dumps(
            {
                "features": [
                    {
                        "name": "sex",
                        "type": "binary",
                        "label": "Sex",
                        "levels": {"0": "female", "1": "male"},
                    },
                    {
                        "name": "ward",
                        "type": "categorical",
                        "categories": ["icu", "ed"],
                        "label": "Admitting unit",
                        "levels": {"ed": "emergency department"},
                    },
                ]
            }
        )
    )
    schema = load_task_folder(tmp_path).schema
    assert (
        schema["sex"].level_label(1) == "male" and schema["ward"].display_name == "Admitting unit"
    )
    (tmp_path / "schema.json").write_text(
        json.dumps(
            {
                "features": [
                    {"name": "sex", "type": "binary", "levels": {"2": "x"}},
                    {"name": "ward", "type": "categorical"},
                ]
            }
        )
    )
    with pytest.raises(
        ValidationError, match="schema.json: .*a binary feature's values are 0 and 1"
    ):
        load_task_folder(tmp_path)


def test_heart_disease_ships_uci_labels():
    schema = heart_schema()
    assert all(f.label for f in FEATURES) and schema["sex"].levels == {"0": "female", "1": "male"}
    assert (
        schema["exang"].levels == {"0": "no", "1": "yes"}
        and schema["fbs"].level_label(1) == "> 120 mg/dL"
    )
    assert schema["cp"].display_name == "Chest-pain type"
    assert schema["thal"].level_label("reversable defect") == "reversible defect"
    assert schema["restecg"].level_label("lv hypertrophy") == "left ventricular hypertrophy"
    assert schema["ca"].display_name == "Major vessels coloured by fluoroscopy"
    for f in schema.features:  # every level label names a real value of the feature
        values = {"0", "1"} if f.type == "binary" else set(f.categories)
        assert set(f.levels) <= values, f.name
    assert heart_disease().schema == schema


def test_labels_of_values_the_rows_never_hold_are_said():
    # schema.json labelled 'female'/'male' where the files write F/M, and 'ICU' where they write
    # 'icu': the labels were silently never shown
    import warnings

    from ragim.errors import DataWarning

    X = pd.DataFrame({"sex": ["F", "M", "F"], "ward": ["icu", "ed", "ward"]})
    schema = FeatureSchema([
        Feature("sex", "categorical", levels={"female": "Female", "male": "Male"}),
        Feature("ward", "categorical", levels={"ICU": "intensive care", "ed": "emergency"}),
    ])
    with pytest.warns(DataWarning, match=r"name values that are no level of the rows fitted on: "
                                         r"'sex' \['female', 'male'\] \(its levels: F, M\); "
                                         r"'ward' \['ICU'\] .*did you mean \['icu'\]"):
        schema.fit(X)
    # a label for a rare level these rows lack is not a mistake
    rare = FeatureSchema([Feature("ward", "categorical",
                                  levels={"icu": "intensive care", "hdu": "high dependency"})])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        rare.fit(X[["ward"]])
