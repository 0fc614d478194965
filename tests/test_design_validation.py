"""benchmarks/design_validation.py: settings are compared on design families, never on the
benchmarks' own family (seed 0)."""

from __future__ import annotations

import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("design_validation")


def test_compares_a_setting_inside_the_index_of_a_design_family(bench, tmp_path):
    out = bench.main(["--setting", "split_buckets", "--values", "false", "true", "--families", "synthetic:3:24",
                      "--embedder", "hashing", "--json-out", str(tmp_path / "d.json")])
    rows = out["families"]["synthetic:3:24"]
    assert [r["value"] for r in rows] == [False, True]
    assert all(0 < r["stack"] < 1 and r["candidates"]["pooled"] > 0 for r in rows)
    assert json.loads((tmp_path / "d.json").read_text()) == out


def test_refuses_the_benchmarks_family_and_unknown_settings(bench):
    with pytest.raises(SystemExit, match="seed 0 is the benchmarks' family"):
        bench.family("synthetic:0")
    with pytest.raises(SystemExit, match="synthetic:SEED"):
        bench.family("heart:1")
    with pytest.raises(SystemExit, match="no setting 'magic'"):
        bench.parse_value("magic", "1")
    with pytest.raises(SystemExit, match="true or false"):
        bench.parse_value("split_buckets", "yes")
    assert bench.parse_value("cv_folds", "3") == 3
