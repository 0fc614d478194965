"""scikit-learn conformance: both estimators run sklearn's own estimator checks.

The checks use the numpy input path (columns become x0..x{d-1} and the schema is
inferred). GAMModel runs with a tiny, fast boosting configuration. No check is
skipped: ``EXPECTED_FAILED`` is empty and stays the place to document one.

One deliberate difference is outside the standard suite: scikit-learn's (unyielded)
``check_dataframe_column_names_consistency`` wants reordered DataFrame columns to be an
error, while ragim's schema selects columns by name, so any column order is accepted
(see ``test_reordered_and_renamed_columns``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from ragim.models import GAMModel, LogisticModel

FAST_GAM = GAMModel(outer_bags=1, max_rounds=100, learning_rate=0.1, early_stopping_rounds=10, smoothing_rounds=0)

# check name -> reason, per estimator class; empty: every check passes.
EXPECTED_FAILED: dict[str, dict[str, str]] = {"LogisticModel": {}, "GAMModel": {}}


def _expected_failed(estimator) -> dict[str, str]:
    return EXPECTED_FAILED[type(estimator).__name__]


@parametrize_with_checks([LogisticModel(), FAST_GAM], expected_failed_checks=_expected_failed)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", [LogisticModel(), FAST_GAM], ids=["logistic", "gam"])
def test_reordered_and_renamed_columns(estimator):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    y = (X["a"] + rng.normal(size=120) > 0).astype(int)
    model = clone(estimator).fit(X, y)
    assert np.array_equal(model.predict_proba(X[["c", "a", "b"]]), model.predict_proba(X))
    with pytest.raises(ValueError, match=r"columns required by the schema are missing: \['c'\]"):
        model.predict(X.rename(columns={"c": "d"}))
