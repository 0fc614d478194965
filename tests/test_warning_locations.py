"""Every warning ragim raises points at the user's line (``ragim.errors.user_stacklevel``):
before, most pointed inside ragim (``ragim/models/base.py:336``), or inside scikit-learn's
wrapper around ``fit``, however the user had called it."""

from __future__ import annotations

import warnings

import pytest

from ragim import TaskIndex, datasets
from ragim.errors import DataWarning
from ragim.models import LogisticModel


def located(call) -> set[tuple[str, str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return {(w.category.__name__, w.filename) for w in caught if issubclass(w.category, DataWarning)}


@pytest.fixture(scope="module")
def heart():
    return datasets.heart_disease()


def test_fit_and_predict_warnings_point_at_the_callers_line(heart):
    task = heart[0]
    model = LogisticModel()
    assert located(lambda: model.fit(task.X, task.y)) == {("DataWarning", __file__)}  # few-int 'ca'
    far = task.X.copy()
    far["chol"] = far["chol"] * 1000.0  # another unit
    assert located(lambda: model.predict_proba(far)) == {("DataWarning", __file__)}


def test_index_warnings_point_at_the_callers_line(heart):
    index = TaskIndex.build(heart.take(range(6)), embedder="hashing", progress=False)
    hits = located(lambda: index.search("coronary disease", k=2, exclude=["no-such-task"]))
    assert hits == {("DataWarning", __file__)}
