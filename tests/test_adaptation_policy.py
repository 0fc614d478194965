"""The few-shot adaptation policy validated on the index's own tasks (issue: adaptation that
never backfires)."""

from __future__ import annotations

import numpy as np
import pytest

from ragim.adaptation import adapt
from ragim.adaptation_policy import OPTIONS, AdaptationPolicy, ValidationCase, calibrate
from ragim.errors import ValidationError


def _cases(n_tasks, n_rows, theta_true, theta_gen, seed=0, std=None):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_tasks):
        D = rng.normal(size=(n_rows, len(theta_true) - 1))
        p = 1 / (1 + np.exp(-(theta_true[0] + D @ theta_true[1:])))
        y = (rng.random(n_rows) < p).astype(float)
        out.append(ValidationCase(D, y, np.asarray(theta_gen, float), std))
    return out


def test_rows_that_carry_no_information_leave_the_zero_shot_model():
    # the generated model is the truth: no option can be shown to beat it on held-out rows
    truth = np.array([-0.5, 1.0, -1.0])
    policy = calibrate(_cases(16, 80, truth, truth), k_grid=(4, 16), draws=3, min_tasks=8)
    assert [e["option"] for e in policy.entries] == ["zero-shot", "zero-shot"]
    for e in policy.entries:
        assert e["options"]["zero-shot"]["change"] == 0.0
        assert e["prefer"] == "zero-shot"


def test_a_systematically_wrong_intercept_is_adapted_once_the_index_shows_it_helps():
    truth = np.array([1.5, 1.0, -1.0])
    generated = np.array([-1.0, 1.0, -1.0])  # every site has far more events than generated
    policy = calibrate(_cases(20, 120, truth, generated), k_grid=(16, 32), draws=3)
    for e in policy.entries:
        assert e["option"] != "zero-shot"
        chosen = e["options"][e["option"]]
        assert chosen["change"] < 0 and chosen["upper"] < 0
        # the kept option has the lowest upper bound of all
        assert chosen["upper"] == min(v["upper"] for v in e["options"].values())


def test_too_few_tasks_for_a_k_leave_it_to_the_evidence():
    truth = np.array([0.0, 1.0])
    cases = _cases(10, 12, truth, truth) + _cases(2, 200, truth, truth, seed=1)
    policy = calibrate(cases, k_grid=(4, 64), draws=1, min_tasks=5)
    assert [e["k"] for e in policy.entries] == [4]
    assert "k = 64" in policy.note and "evidence alone" in policy.note


def test_for_k_uses_the_validated_k_below_and_nothing_far_beyond():
    entries = [
        {"k": k, "option": o, "prefer": OPTIONS[o][0], "margin": OPTIONS[o][1]}
        for k, o in ((4, "zero-shot"), (16, "prior"))
    ]
    policy = AdaptationPolicy.from_dict({"entries": entries[::-1]})
    assert [policy.for_k(k)["option"] for k in (1, 4, 15, 16, 32)] == [
        "zero-shot",
        "zero-shot",
        "zero-shot",
        "prior",
        "prior",
    ]
    assert policy.for_k(33) is None
    assert AdaptationPolicy([]).for_k(8) is None
    with pytest.raises(ValidationError, match="not an adaptation policy entry"):
        AdaptationPolicy.from_dict({"entries": [{"k": 4, "option": "magic"}]})


def test_prefer_still_cannot_reverse_the_generated_model_on_a_few_rows():
    # 8 rows planted against the generated direction: "map" would reverse it, and preferring it
    # does not lift the reversal rule
    D = np.linspace(-2, 2, 8)[:, None]
    y = (D[:, 0] < 0).astype(float)
    theta0 = np.array([0.0, 1.5])
    cand, report = adapt(D, y, theta0, ["intercept", "x"], prefer="map", warn=False)
    assert cand.name != "map" and report["prefer"] == "map"
    assert report["sign_changes"] == []


def test_prefer_is_taken_when_eligible_and_checked():
    rng = np.random.default_rng(3)
    D = rng.normal(size=(30, 2))
    y = (rng.random(30) < 0.5).astype(float)
    theta0 = np.array([0.0, 0.3, -0.2])
    cand, report = adapt(D, y, theta0, ["i", "a", "b"], prefer="intercept", warn=False)
    assert cand.name == "intercept" and report["chosen"] == "intercept"
    cand, _ = adapt(
        D, y, theta0, ["i", "a", "b"], prefer="prior", prior_std=np.full(3, 0.5), warn=False
    )
    assert cand.name == "prior"
    cand, report = adapt(D, y, theta0, ["i", "a", "b"], prefer="prior", warn=False)
    assert report["prefer"] is None  # no SDs to centre the prior on: the evidence chose
    with pytest.raises(ValidationError, match="prefer must be one of"):
        adapt(D, y, theta0, ["i", "a", "b"], adaptation="map", prefer="intercept")
    with pytest.raises(ValidationError, match="prefer must be one of"):
        adapt(D, y, theta0, ["i", "a", "b"], prefer="everything")


def test_the_default_generator_validates_its_policy_and_every_model_carries_it(tmp_path):
    import pandas as pd

    from ragim import TaskIndex, datasets
    from ragim.estimator import adapt_prior
    from ragim.generate.statistical import StatisticalGenerator

    tasks = datasets.synthetic_family(n_tasks=30, n_features=3, seed=2)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    gen = StatisticalGenerator(adaptation_tasks=10, adaptation_draws=2).fit(index, progress=False)
    policy = gen.adaptation_policy_
    assert policy.entries, policy.note
    assert all(e["n_tasks"] >= 8 and e["option"] in OPTIONS for e in policy.entries)
    params = gen.generate_params(tasks.descriptions[0])
    carried = params.metadata["adaptation_policy"]
    assert [e["k"] for e in carried] == [e["k"] for e in policy.entries]

    again = StatisticalGenerator.load(gen.save(tmp_path / "gen"))
    assert again.adaptation_policy_.to_dict() == policy.to_dict()

    task = tasks[1]
    X, y = task.X.iloc[:8], task.y[:8].astype(float)
    assert isinstance(X, pd.DataFrame)
    _, report = adapt_prior(params, X, y, warn=False)
    assert report["policy"] == {k: policy.for_k(8)[k] for k in ("k", "option", "prefer", "margin")}
    assert report["prefer"] == policy.for_k(8)["prefer"]
    _, asked = adapt_prior(params, X, y, adaptation="map", warn=False)
    assert asked["policy"] is None and asked["chosen"] == "map"

    off = StatisticalGenerator(adaptation_tasks=0).fit(index, progress=False)
    assert off.adaptation_policy_.entries == [] and "evidence alone" in off.adaptation_policy_.note
    assert off.generate_params(tasks.descriptions[0]).metadata["adaptation_policy"] == []
