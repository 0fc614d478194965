"""The few-shot adaptation policy validated on the index's own tasks (issue: adaptation that
never backfires)."""

from __future__ import annotations

import numpy as np
import pytest

from ragim.adaptation import adapt, log_likelihood
from ragim.adaptation_policy import (
    MAX_LOSE_SHARE,
    OPTIONS,
    AdaptationPolicy,
    ValidationCase,
    calibrate,
    option_losses,
)
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
        assert chosen["auroc_loss_share"] <= MAX_LOSE_SHARE
        # every option with a lower upper bound spoils the ranking too often
        for name, st in e["options"].items():
            if st["upper"] < chosen["upper"]:
                assert st["auroc_loss_share"] > MAX_LOSE_SHARE, (name, st)


def test_too_few_tasks_for_a_k_leave_it_to_the_evidence():
    truth = np.array([0.0, 1.0])
    cases = _cases(10, 12, truth, truth) + _cases(2, 200, truth, truth, seed=1)
    policy = calibrate(cases, k_grid=(4, 64), draws=1, min_tasks=5)
    assert [e["k"] for e in policy.entries] == [4]
    # the note says what for_k does: k = 4's entry up to 4, the evidence beyond
    assert "k = 64" in policy.note and "beyond k = 4 the evidence alone" in policy.note
    assert policy.for_k(4)["k"] == 4 and policy.for_k(5) is None
    with pytest.raises(ValidationError, match="max_tasks must be"):
        calibrate(cases, max_tasks=3, min_tasks=5)


def test_for_k_uses_the_validated_k_below_and_nothing_beyond():
    entries = [
        {"k": k, "option": o, "prefer": OPTIONS[o][0], "margin": OPTIONS[o][1]}
        for k, o in ((4, "zero-shot"), (16, "prior"))
    ]
    policy = AdaptationPolicy.from_dict({"entries": entries[::-1]})
    assert [policy.for_k(k)["option"] for k in (1, 4, 15, 16)] == [
        "zero-shot",
        "zero-shot",
        "zero-shot",
        "prior",
    ]
    assert policy.for_k(17) is None  # nothing was validated there: the evidence decides
    assert AdaptationPolicy([]).for_k(8) is None
    with pytest.raises(ValidationError, match="unknown option 'magic'"):
        AdaptationPolicy.from_dict({"entries": [{"k": 4, "option": "magic"}]})
    with pytest.raises(ValidationError, match="k must be"):
        AdaptationPolicy.from_dict({"entries": [{"k": "8", "option": "prior"}]})
    with pytest.raises(ValidationError, match="not a mapping"):
        AdaptationPolicy.from_dict({"entries": [["k", 8]]})
    with pytest.raises(ValidationError, match="lacks option"):
        AdaptationPolicy.from_dict({"entries": [{"k": 8}]})
    with pytest.raises(ValidationError, match="two entries for one k"):
        AdaptationPolicy.from_dict({"entries": [{"k": 8, "option": "prior"}] * 2})
    # an edited margin or prefer cannot change what an option means
    edited = AdaptationPolicy.from_dict(
        {"entries": [{"k": 8, "option": "zero-shot", "prefer": "map", "margin": -5}]}
    )
    assert edited.for_k(8)["prefer"] == "zero-shot" and edited.for_k(8)["margin"] == 1.0


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


def test_rows_of_one_class_ignore_the_policy_and_the_report_says_so():
    D = np.linspace(-1, 1, 6)[:, None]
    cand, report = adapt(
        D, np.ones(6), np.array([-1.0, 1.0]), ["intercept", "x"], prefer="intercept", warn=False
    )
    assert report["prefer"] is None and "one class" in report["prefer_ignored"]
    assert cand.name == report["evidence_choice"]  # the evidence chose, as without a policy


def test_adapt_params_takes_pos_label_and_checks_lengths():
    import pandas as pd

    from ragim.params import ModelParams
    from ragim.schema import FeatureSchema
    from ragim.validation import adapt_params

    X = pd.DataFrame({"age": np.linspace(40, 80, 30)})
    prior = ModelParams.from_dict(
        "logistic", FeatureSchema.infer(X).fit(X), {"intercept": -2.0, "age": 1.0}
    )
    y = np.where(np.arange(30) % 3 != 0, "yes", "no")
    with pytest.raises(ValidationError, match="pos_label"):
        adapt_params(prior, X, y)
    adapted = adapt_params(prior, X, y, pos_label="yes")
    assert adapted.intercept > -2.0  # "yes" is the event, and far more common than the prior says
    with pytest.raises(ValidationError, match="X has 30 rows but y has shape"):
        adapt_params(prior, X, y[:29], pos_label="yes")


def test_a_damaged_saved_policy_is_named_as_such(tmp_path):
    import json

    from ragim import TaskIndex, datasets
    from ragim.errors import ArtifactError
    from ragim.generate.statistical import StatisticalGenerator
    from ragim.io import read_artifact, write_artifact

    tasks = datasets.synthetic_family(n_tasks=12, n_features=2, seed=4)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    path = (
        StatisticalGenerator(adaptation_tasks=8, adaptation_draws=1)
        .fit(index, progress=False)
        .save(tmp_path / "gen")
    )
    art = read_artifact(path, "ragim.statistical-generator")
    files = {n: art.read_bytes(n) for n in ("config.json", "arrays.safetensors")}
    state = json.loads(art.read_bytes("state.json"))
    state["adaptation_policy"] = {"entries": [{"k": 4, "option": "magic"}]}
    files["state.json"] = json.dumps(state).encode()
    write_artifact(tmp_path / "bad", "ragim.statistical-generator", files)
    with pytest.raises(ArtifactError, match="state.json: adaptation_policy: .*unknown option"):
        StatisticalGenerator.load(tmp_path / "bad")


@pytest.mark.parametrize("events", [0, 3, 6], ids=["no-events", "both-classes", "all-events"])
def test_option_losses_score_what_adapt_would_choose_for_every_option(events):
    # the validation must replay the adaptation users get: rows of one class ignore the
    # preferred candidate in adapt, so they must in the validation too
    rng = np.random.default_rng(4)
    D, D_test = rng.normal(size=(6, 2)), rng.normal(size=(200, 2))
    y = np.zeros(6)
    y[:events] = 1.0
    theta0, std = np.array([-2.0, 0.8, -0.5]), np.array([1.0, 0.5, 0.5])
    y_test = (rng.random(200) < 0.4).astype(float)
    losses = option_losses(D, y, theta0, std, D_test, y_test)
    assert set(losses) == set(OPTIONS)
    for name, (prefer, margin) in OPTIONS.items():
        cand, _ = adapt(
            D,
            y,
            theta0,
            ["intercept", "a", "b"],
            prefer=prefer,
            margin=margin,
            prior_std=std,
            warn=False,
        )
        z = cand.theta[0] + D_test @ cand.theta[1:]
        assert losses[name][0] == pytest.approx(-log_likelihood(z, y_test) / 200), name
