"""Domain checks: the index's own threshold, calibrated on leave-one-out neighbour
similarities, and the warnings (or, strictly, refusals) for descriptions outside it."""

import json
import math
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from ragim import TaskIndex, ZeroShotClassifier, datasets
from ragim.cli import app
from ragim.domain import (
    RANK,
    Coverage,
    DomainCalibration,
    calibrate,
    check,
    coverage,
    coverage_from_scores,
)
from ragim.errors import DataWarning, DomainWarning, ValidationError
from ragim.explain import explain_params as explain
from ragim.index import leak_free

OTHER_SPECIALTIES = [
    "Predict 30-day readmission after hip replacement in elderly men",
    "Vorhersage der Sterblichkeit nach Herzinfarkt bei Frauen",
    "Predict delirium after cardiac surgery",
    "Predict sepsis mortality in the intensive care unit",
    "Predict relapse of acute lymphoblastic leukaemia in children",
    "Predict preterm birth in pregnant women",
]
#: the README's own query: another site's wording of the index's task
IN_DOMAIN = "Predict coronary artery disease in women at a Swiss clinic"


@pytest.fixture(scope="module")
def heart():
    """The heart-disease index without its task rows: generation is the (fast) neighbour mean;
    the coverage does not depend on the generator (the default one is covered in
    tests/test_adaptation.py)."""
    tasks = datasets.heart_disease()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = TaskIndex.build(tasks, embedder="hashing", progress=False, keep_tasks=False)
    return tasks, index


def test_threshold_is_the_percentile_of_leave_one_out_neighbour_similarities(heart):
    """Recomputed by brute force: each task's RANK-th most similar task among those that share
    none of its patients; the threshold is the lower 1st percentile of those similarities."""
    tasks, index = heart
    cal = calibrate(index)
    ids = index.ids
    V = index.vectors(ids)
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    S = V @ V.T
    expected, tops = [], []
    for i, tid in enumerate(ids):
        excluded = leak_free(index.record(tid))
        ok = [j for j, other in enumerate(ids) if not excluded(index.record(other))]
        s = np.sort(S[i, ok])[::-1]
        expected.append(s[min(RANK, len(s)) - 1])
        tops.append(s[0])
    assert cal.n_tasks == len(ids) == len(tasks) and cal.rank == RANK
    np.testing.assert_allclose(sorted(cal.similarities), sorted(expected), atol=1e-5)
    assert cal.threshold == pytest.approx(np.percentile(expected, 1.0, method="lower"), abs=1e-5)
    assert cal.typical == pytest.approx(np.median(tops), abs=1e-5)
    assert cal.threshold < cal.typical
    assert calibrate(index) is cal  # cached per index


def test_leave_one_out_targets_are_never_out_of_domain_and_other_specialties_are(heart):
    tasks, index = heart
    cal = calibrate(index)
    loo = coverage(
        index, list(tasks.descriptions), exclude=[leak_free(index.record(t)) for t in tasks.ids]
    )
    flagged = sum(c.in_domain is False for c in loo)
    assert flagged <= math.floor(len(loo) * cal.percentile / 100)  # its calibrated rate: 0 of 28
    for c in loo:
        assert c.top_similarity >= cal.threshold and c.effective_neighbors > 0
    foreign = coverage(index, OTHER_SPECIALTIES)
    assert [c.in_domain for c in foreign] == [False] * len(OTHER_SPECIALTIES)
    assert all(c.top_similarity < cal.threshold and c.effective_neighbors == 0 for c in foreign)
    assert coverage(index, IN_DOMAIN).in_domain is True


def test_coverage_measures():
    cal = DomainCalibration(threshold=0.5, typical=0.9, n_tasks=50, percentile=1.0)
    cov = coverage_from_scores([0.95, 0.7, 0.5, -0.2], cal)
    assert cov.top_similarity == 0.95 and cov.k == 4
    # weights max(s, 0): (0.95^2 + 0.7^2 + 0.5^2) / (0.95 + 0.7 + 0.5)
    assert cov.effective_similarity == pytest.approx((0.95**2 + 0.49 + 0.25) / 2.15)
    # each neighbour counts (s - 0.5) / (0.9 - 0.5), clipped to [0, 1]: 1 + 0.5 + 0 + 0
    assert cov.effective_neighbors == pytest.approx(1.5) and cov.in_domain is True
    assert coverage_from_scores([0.4], cal).in_domain is False
    uncal = coverage_from_scores([0.1], DomainCalibration(None, None, 2, 1.0))
    assert uncal.in_domain is None and uncal.effective_neighbors is None
    assert Coverage.from_data(cov.data()) == Coverage(
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in cov.__dict__.items()}
    )
    with pytest.raises(ValidationError, match="not a coverage record"):
        Coverage.from_data({"top_similarity": 0.3})


def test_estimator_warns_outside_the_domain_and_carries_coverage(heart):
    tasks, index = heart
    warnings.simplefilter("ignore", DataWarning)  # "no task rows: the neighbour mean"
    with pytest.warns(DomainWarning, match="outside what the index covers"):
        clf = ZeroShotClassifier(index=index, description=OTHER_SPECIALTIES[0]).fit()
    assert clf.coverage_.in_domain is False
    cov = clf.params_.metadata["coverage"]
    assert cov["in_domain"] is False and cov["threshold"] == pytest.approx(
        calibrate(index).threshold, abs=1e-4
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        warnings.simplefilter("error", DomainWarning)
        inside = ZeroShotClassifier(index=index, description=IN_DOMAIN).fit()
    assert (
        inside.coverage_.in_domain is True
        and inside.params_.metadata["coverage"]["in_domain"] is True
    )
    # the report and explain() show it beside the model
    expl = explain(clf.params_)
    assert expl.coverage == cov and "OUTSIDE the index's domain" in repr(expl)
    assert "in the index's domain" in repr(explain(inside.params_))
    with pytest.raises(ValidationError, match="outside what the index covers"):
        check(clf.params_, strict=True)


def test_cli_generate_warns_and_strict_refuses(heart, tmp_path):
    _, index = heart
    index.save(tmp_path / "idx")
    runner = CliRunner()
    r = runner.invoke(app, ["generate", OTHER_SPECIALTIES[1], "--index", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
    assert "outside what the index covers" in r.output
    assert "index coverage: top similarity" in r.stdout and "OUTSIDE the index's domain" in r.stdout
    r = runner.invoke(
        app, ["generate", OTHER_SPECIALTIES[1], "--index", str(tmp_path / "idx"), "--strict"]
    )
    assert isinstance(r.exception, ValidationError) and "outside what the index covers" in str(
        r.exception
    )
    r = runner.invoke(
        app, ["generate", IN_DOMAIN, "--index", str(tmp_path / "idx"), "--strict", "--json"]
    )
    assert r.exit_code == 0, r.output
    params = json.loads(r.stdout[r.stdout.index("{") :])
    assert params["metadata"]["coverage"]["in_domain"] is True
