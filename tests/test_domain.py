"""Domain checks: the index's own threshold, calibrated on leave-one-out neighbour
similarities, and the warnings (or, strictly, refusals) for descriptions outside it."""

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from ragim import TaskIndex, ZeroShotClassifier, datasets
from ragim.cli import app
from ragim.domain import (
    MAD_SCALE,
    RANK,
    SPREAD_FLOOR,
    SPREAD_MULTIPLE,
    Coverage,
    DomainCalibration,
    calibrate,
    calibration_rank,
    check,
    coverage,
    coverage_from_scores,
    out_of_domain_message,
    similarity_floor,
)
from ragim.errors import DataWarning, DomainWarning, ValidationError
from ragim.explain import coverage_summary
from ragim.explain import explain_params as explain
from ragim.index import leak_free
from ragim.tasks import TaskCollection

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
    none of its patients (never beyond the first three quarters of them); the threshold is the
    lower 1st percentile of those similarities unless the robust fence or the embedder's floor
    lies higher. On this index of templated tasks the percentile sets it, as before."""
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
        expected.append(s[calibration_rank(len(s), RANK) - 1])
        tops.append(s[0])
    assert cal.n_tasks == len(ids) == len(tasks) and cal.rank == RANK
    np.testing.assert_allclose(sorted(cal.similarities), sorted(expected), atol=1e-5)
    quantile = np.percentile(expected, 1.0, method="lower")
    median = np.median(expected)
    spread = max(
        MAD_SCALE * np.median(np.abs(np.asarray(expected) - median)),
        SPREAD_FLOOR * (np.median(tops) - median),
    )
    assert cal.quantile == pytest.approx(quantile, abs=1e-5)
    assert cal.robust_bound == pytest.approx(median - SPREAD_MULTIPLE * spread, abs=1e-5)
    assert cal.floor == similarity_floor(index.embedder.identity) == 0.0  # hashing: no floor
    assert cal.threshold == max(cal.quantile, cal.robust_bound, cal.floor) == cal.quantile
    assert cal.n_below == sum(x < cal.threshold for x in cal.similarities) == 0
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


def test_the_out_of_domain_message_names_the_neighbour_rank_actually_used(heart):
    """On a 7-task index each task has 6 others, so the 4th neighbour calibrates (never beyond
    the first three quarters); the message said "10th neighbour" whatever the index's size."""
    tasks = datasets.synthetic_family(n_tasks=7, n_features=2, seed=0)  # no shared patients
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = TaskIndex.build(tasks, embedder="hashing", progress=False, keep_tasks=False)
    cal = calibrate(small)
    assert cal.ranks_used == (4, 4) == (calibration_rank(6), calibration_rank(6))
    cov = coverage(small, OTHER_SPECIALTIES[0])
    assert (cov.rank_min, cov.rank_max) == (4, 4)
    msg = out_of_domain_message(cov, OTHER_SPECIALTIES[0])
    assert "keep even to their 4th neighbour" in msg and "10th" not in msg
    assert Coverage.from_data(cov.data()) == Coverage(
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in cov.__dict__.items()}
    )
    # the full index calibrates on the 10th; a record saved without the ranks names none
    assert "10th neighbour" in out_of_domain_message(coverage(heart[1], OTHER_SPECIALTIES[0]))
    old = {k: v for k, v in cov.data().items() if k not in ("rank_min", "rank_max")}
    assert "even to a distant neighbour" in out_of_domain_message(Coverage.from_data(old))
    mixed = dataclasses.replace(cov, rank_min=3, rank_max=10)
    assert "their 3rd to 10th neighbour" in out_of_domain_message(mixed)


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


# ---------------------------------------------------------------- small indices and outliers
#: a small trial index: six arms x subgroups of one trial and a registry (the stranger's PBC
#: index, on synthetic rows); the first description is replaced by a French one
PBC = [
    f"Predict death in {who} with primary biliary cirrhosis randomised to {arm} in the Mayo "
    "Clinic trial"
    for arm in ("D-penicillamine", "placebo")
    for who in ("women", "men", "all")
] + [
    "Predict death in patients with primary biliary cirrhosis followed at the Mayo Clinic registry"
]
FRENCH = (  # the stranger's own, decomposed accent and check mark included
    "Prédire le décès chez les femmes — cirrhose biliaire primitive, D-pénicillamine, "
    "Mayo Clinic (Zürich-style NFD: Zu\u0308rich) ✓"
)
PBC_PARAPHRASE = "Predict death in women with primary biliary cholangitis at the Mayo Clinic"
UNRELATED = ["Predict neonatal sepsis in preterm infants", OTHER_SPECIALTIES[3]]


def _small_index(descriptions, embedder="hashing"):
    base = datasets.synthetic_family(n_tasks=len(descriptions), n_features=2, seed=0)
    tasks = TaskCollection(
        [dataclasses.replace(t, description=d) for t, d in zip(base, descriptions, strict=True)],
        schema=base.schema,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TaskIndex.build(tasks, embedder=embedder, progress=False, keep_tasks=False)


def _minilm():
    from ragim.embed import get_embedder

    return get_embedder("minilm", device="cpu", cache_dir=False)


@pytest.mark.parametrize("embedder", ["hashing", "minilm"])
def test_one_outlying_description_does_not_open_a_small_index(embedder):
    """Found by a stranger: in a 7-task index, one description in French was every other
    task's farthest neighbour, so it set the threshold (0.79 -> 0.23 with MiniLM) and
    "Predict neonatal sepsis in preterm infants" passed as in the domain. Now the outlier is
    nobody's calibration neighbour and the robust fence keeps the threshold up: unrelated
    descriptions are still refused, the trial's own paraphrase is still in, and the French
    task itself is reported outside the domain the others define."""
    emb = _minilm() if embedder == "minilm" else embedder
    clean = calibrate(_small_index(PBC, emb))
    index = _small_index([FRENCH, *PBC[1:]], emb)
    cal = calibrate(index)
    unrelated = coverage(index, UNRELATED)
    assert cal.threshold == cal.robust_bound > cal.quantile and cal.n_below == 1
    assert [c.in_domain for c in unrelated] == [False, False]
    assert all(c.effective_neighbors == 0 for c in unrelated)
    assert coverage(index, PBC_PARAPHRASE).in_domain is True
    assert cal.threshold <= clean.threshold  # the outlier does not make the index stricter
    french = coverage(index, FRENCH, exclude=leak_free(index.record(index.ids[0])))
    assert french.in_domain is False
    english = coverage(index, PBC[1], exclude=leak_free(index.record(index.ids[1])))
    assert english.in_domain is True
    with pytest.raises(ValidationError, match="outside what the index covers"):
        check(unrelated[0], description=UNRELATED[0], strict=True)


def test_cli_strict_refuses_an_unrelated_description_despite_an_outlier(tmp_path):
    index = _small_index([FRENCH, *PBC[1:]])
    index.save(tmp_path / "idx")
    r = CliRunner().invoke(app, ["generate", UNRELATED[0], "--index", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
    assert "0.0 effective neighbour(s)" in r.stdout and "OUTSIDE the index's domain" in r.stdout
    r = CliRunner().invoke(
        app, ["generate", UNRELATED[0], "--index", str(tmp_path / "idx"), "--strict"]
    )
    assert isinstance(r.exception, ValidationError)


def test_no_effective_neighbour_is_never_in_the_domain():
    """A nearest task exactly at the threshold has 0 effective neighbours: outside, in the
    Coverage, its JSON record, check() and the printed summary alike."""
    cal = DomainCalibration(threshold=0.5, typical=0.9, n_tasks=50, percentile=1.0)
    cov = coverage_from_scores([0.5, 0.3], cal)
    assert cov.effective_neighbors == 0 and cov.top_similarity >= cov.threshold
    assert cov.in_domain is False and cov.data()["in_domain"] is False
    assert Coverage.from_data(cov.data()).in_domain is False
    with pytest.warns(
        DomainWarning, match="0.50, but no indexed task is above 0.50, the index's domain threshold"
    ):
        check(cov)
    assert coverage_summary(cov.data()).endswith("OUTSIDE the index's domain")
    # a stored record that says 0 effective neighbours is outside whatever its top similarity
    record = {**cov.data(), "top_similarity": 0.8, "effective_neighbors": 0.0}
    assert Coverage.from_data(record).in_domain is False
    assert coverage_summary(record).endswith("OUTSIDE the index's domain")
    # barely above the threshold: in, and the summary does not print "0.0" neighbours
    barely = coverage_from_scores([0.5001, 0.3], cal)
    assert barely.in_domain is True and 0 < barely.effective_neighbors < 0.05
    assert "<0.1 effective neighbour(s)" in coverage_summary(barely.data())
    # when the threshold reaches the typical similarity, reaching it counts one neighbour
    flat = coverage_from_scores([0.5, 0.3], DomainCalibration(0.5, 0.5, 50, 1.0))
    assert flat.effective_neighbors == 1 and flat.in_domain is True


def test_the_embedder_sets_an_absolute_floor():
    assert similarity_floor({"kind": "sentence-transformers", "name": "all-MiniLM-L6-v2"}) == 0.4
    assert similarity_floor({"kind": "sentence-transformers", "name": "my-own-model"}) == 0.0
    assert similarity_floor({"kind": "hashing", "dim": 64, "seed": 0}) == 0.0
    assert similarity_floor({"kind": "precomputed", "name": "all-MiniLM-L6-v2"}) == 0.0
    # the floor binds when the index's own tasks are no closer than it
    index = _small_index(
        ["Predict sepsis", "Forecast churn of phone contracts", "Estimate house prices", "Rain"]
    )
    cal = calibrate(index)
    assert cal.threshold >= cal.floor == 0.0
    assert [calibration_rank(n) for n in (1, 3, 4, 5, 13, 14)] == [1, 2, 3, 3, 9, 10]
