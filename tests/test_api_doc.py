"""docs/api.md matches the code: the signatures it spells out are the real ones, and what it
says about a loaded generator's index holds."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

import ragim
from ragim import AttentionGenerator, TaskIndex, datasets
from ragim.datasets.folder import load_task_folder
from ragim.errors import ValidationError
from ragim.estimator import neighbor_mean
from ragim.generate.statistical import default_generator
from ragim.metrics import paired_differences
from ragim.models.base import InterpretableModel
from ragim.models.map import newton_map
from ragim.rows import read_rows
from ragim.validation import adapt_params, calibration_slope_intercept, score_predictions

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()


def signature(fn, *, method: bool = False) -> str:
    """``(a, b=1, *, c="x")`` as the docs write it: no annotations, strings in double quotes."""
    out, star = [], False
    params = list(inspect.signature(fn).parameters.values())[1 if method else 0 :]
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        if p.kind is p.VAR_KEYWORD:
            out.append(f"**{p.name}")
            continue
        default = (
            ""
            if p.default is p.empty
            else "=" + (json.dumps(p.default) if isinstance(p.default, str) else repr(p.default))
        )
        out.append(p.name + default)
    return "(" + ", ".join(out) + ")"


@pytest.mark.parametrize(
    "name, fn, method",
    [
        ("ragim.estimator.neighbor_mean", neighbor_mean, False),
        (".generate", AttentionGenerator.generate, True),
        ("ragim.rows.read_rows", read_rows, False),
        ("ragim.datasets.folder.load_task_folder", load_task_folder, False),
        ("ragim.validation.score_predictions", score_predictions, False),
        ("ragim.validation.calibration_slope_intercept", calibration_slope_intercept, False),
        ("ragim.validation.adapt_params", adapt_params, False),
        ("model.explain", InterpretableModel.explain, True),
        ("ragim.generate.statistical.default_generator", default_generator, False),
        ("ragim.metrics.paired_differences", paired_differences, False),
        ("ragim.models.map.newton_map", newton_map, False),
    ],
)
def test_documented_signatures_are_the_real_ones(name, fn, method):
    text = f"`{name}{signature(fn, method=method)}`"
    assert text in API, f"docs/api.md should show {text}"


def test_neighbor_mean_k_is_keyword_only():
    assert inspect.signature(neighbor_mean).parameters["k"].kind is inspect.Parameter.KEYWORD_ONLY


def test_a_loaded_generator_needs_the_index_and_says_so(tmp_path):
    tasks = datasets.synthetic_family(n_tasks=24, n_features=3, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    gen = AttentionGenerator(max_epochs=2, seed=0).fit(index, progress=False)
    query = tasks.descriptions[0]
    fitted = gen.generate(query)  # fitted in memory: the index is remembered
    gen.save(tmp_path / "gen")
    loaded = AttentionGenerator.load(tmp_path / "gen")
    with pytest.raises(
        ValidationError,
        match=r"after load\(\), pass it: generate\(description, "
        r"index=TaskIndex.load\(path\)\)",
    ):
        loaded.generate(query)
    again = loaded.generate(query, index=index)
    assert again.to_params().as_dict(decimals=8) == fitted.to_params().as_dict(decimals=8)
    assert "after `.load()`, pass `index=TaskIndex.load(path)`" in API


def test_public_modules_of_this_workflow_are_listed():
    for name in (
        "ragim.export.to_sklearn_pipeline",
        "ragim.export.coefficients_frame",
        ".config.excluded",
        "`ragim.Feature(name, type, unit, description, categories, allow_missing, label, levels)`",
    ):
        assert name in API, name
    assert ragim.Feature.__dataclass_fields__.keys() >= {"label", "levels"}
