"""Calibration over pooled test rows (ragim.calibration)."""

import numpy as np
import pandas as pd
import pytest

from ragim.calibration import pooled_calibration, pooled_ece_differences
from ragim.errors import ValidationError
from ragim.metrics import bin_statistics, ece_from_bins, expected_calibration_error


def _predictions(rng, n_targets=60, rows=20):
    """Targets whose true risk is ``true``; "truth" predicts it, "flat" the overall rate,
    "extreme" doubles the log-odds (over-confident)."""
    frames = []
    for t in range(n_targets):
        z = rng.normal(-0.5 + rng.normal(0, 0.8), 1.2, rows)
        true = 1 / (1 + np.exp(-z))
        y = (rng.random(rows) < true).astype(int)
        for method, p in (
            ("truth", true),
            ("flat", np.full(rows, 0.4)),
            ("extreme", 1 / (1 + np.exp(-2 * z))),
        ):
            frames.append(pd.DataFrame({"task_id": f"t{t}", "method": method, "k_shot": 0,
                                        "row": np.arange(rows), "y": y, "p": p}))
    return pd.concat(frames, ignore_index=True)


def test_pooled_bins_give_the_ece_of_all_rows_together():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 500), rng.random(500)
    stats = bin_statistics(y[:200], p[:200]) + bin_statistics(y[200:], p[200:])
    assert float(ece_from_bins(stats)) == pytest.approx(expected_calibration_error(y, p))


def test_true_risks_are_calibrated_and_overconfident_ones_are_not():
    table = pooled_calibration(_predictions(np.random.default_rng(1), n_targets=200))
    t = table.set_index("method")
    assert t.loc["truth", "ece"] < 0.03
    assert t.loc["truth", "calibration_slope"] == pytest.approx(1.0, abs=0.15)
    assert t.loc["extreme", "calibration_slope"] == pytest.approx(0.5, abs=0.1)
    assert t.loc["extreme", "ece"] > t.loc["truth", "ece"] + 0.03
    assert t.loc["truth", "n_rows"] == 200 * 20 and t.loc["truth", "n_targets"] == 200


def test_per_target_ece_of_true_risks_is_binning_noise_that_pooled_rows_remove():
    """The reason for the module: on 20-row targets the true risks get a large mean
    per-target ECE, while over pooled rows they are calibrated."""
    preds = _predictions(np.random.default_rng(2), n_targets=200)
    truth = preds[preds["method"] == "truth"]
    per_target = [expected_calibration_error(g["y"], g["p"]) for _, g in truth.groupby("task_id")]
    assert np.mean(per_target) > 0.1
    assert pooled_calibration(truth)["ece"].iloc[0] < 0.03


def test_paired_difference_ci_excludes_zero_for_a_clear_gap_and_is_paired():
    preds = _predictions(np.random.default_rng(3), n_targets=150)
    d = pooled_ece_differences(preds, ["extreme"], ["truth"], n_boot=500)
    row = d.iloc[0]
    assert row["mean_diff"] == pytest.approx(row["ece"] - row["ece_baseline"])
    assert 0 < row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    same = pooled_ece_differences(preds, ["truth"], ["truth"], n_boot=50)
    assert same.empty  # a method is never compared with itself


def test_bad_prediction_frames_are_refused():
    with pytest.raises(ValidationError, match="predictions lacks columns"):
        pooled_calibration(pd.DataFrame({"task_id": ["a"], "p": [0.5]}))
    preds = _predictions(np.random.default_rng(4), n_targets=3)
    with pytest.raises(ValidationError, match="no predictions at k_shot=8"):
        pooled_calibration(preds, k_shot=8)
    with pytest.raises(ValidationError, match="outside"):
        pooled_calibration(preds.assign(p=preds["p"] * 2))
    with pytest.raises(ValidationError, match="no predictions for method"):
        pooled_ece_differences(preds, ["missing"], ["truth"])


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (lambda d: d.assign(y=d["y"] * 2), {}, r"outcomes y must be 0/1, found \['2'\]"),
        (lambda d: d.assign(y=d["y"].astype(float).where(d.index > 0)), {}, "must be 0/1"),
        (lambda d: d.assign(task_id=d["task_id"].where(d.index > 0)), {}, "task_id is missing"),
        (lambda d: d, {"n_bins": 0}, "n_bins must be an integer >= 1"),
        (lambda d: d, {"k_shot": 0.5}, "k_shot must be an integer"),
    ],
)
def test_bad_values_are_refused_in_one_line(change, kwargs, message):
    preds = change(_predictions(np.random.default_rng(5), n_targets=4))
    with pytest.raises(ValidationError, match=message):
        pooled_calibration(preds, **kwargs)


def test_differences_check_their_arguments_and_compare_only_what_they_name():
    preds = _predictions(np.random.default_rng(6), n_targets=6)
    with pytest.raises(ValidationError, match=r"got the text 'extreme'; write \['extreme'\]"):
        pooled_ece_differences(preds, "extreme", ["truth"])
    for kwargs, message in (({"n_boot": 0}, "n_boot"), ({"level": 1.5}, "level")):
        with pytest.raises(ValidationError, match=message):
            pooled_ece_differences(preds, ["extreme"], ["truth"], **kwargs)
    apart = preds[~((preds["method"] == "truth") & (preds["task_id"] < "t3"))]
    apart = apart[~((apart["method"] == "extreme") & (apart["task_id"] >= "t3"))]
    with pytest.raises(ValidationError, match="scored no target in common"):
        pooled_ece_differences(apart, ["extreme"], ["truth"])
    # a NaN in a method that is not compared does not block the others
    broken = preds.assign(p=preds["p"].where(preds["method"] != "flat"))
    assert len(pooled_ece_differences(broken, ["extreme"], ["truth"], n_boot=20)) == 1
    # a method against itself only: no row, but the columns are there
    same = pooled_ece_differences(preds, ["truth"], ["truth"], n_boot=20)
    assert same.empty and "mean_diff" in same.columns
    # task ids 1 and "1" are one target in both functions
    mixed = preds.assign(task_id=preds["task_id"].str[1:].astype(int).astype(object))
    mixed.loc[mixed["method"] == "truth", "task_id"] = mixed["task_id"].astype(str)
    d = pooled_ece_differences(mixed, ["extreme"], ["truth"], n_boot=20)
    assert int(d["n_targets"].iloc[0]) == 6
    assert set(pooled_calibration(mixed)["n_targets"]) == {6}


def test_a_pairs_ci_does_not_depend_on_the_other_pairs_of_the_call():
    # before, one generator served every pair in turn, so a pair's CI moved with what else
    # the call asked for (0.177..0.252 alone, 0.174..0.250 after another baseline)
    preds = _predictions(np.random.default_rng(7), n_targets=12)
    alone = pooled_ece_differences(preds, ["extreme"], ["truth"], n_boot=300, seed=2)
    beside = pooled_ece_differences(preds, ["extreme"], ["flat", "truth"], n_boot=300, seed=2)
    both = pooled_ece_differences(preds, ["flat", "extreme"], ["truth"], n_boot=300, seed=2)
    want = alone.iloc[0][["ci_low", "ci_high"]].to_numpy(float)
    got = beside.set_index("baseline").loc["truth", ["ci_low", "ci_high"]].to_numpy(float)
    assert np.array_equal(got, want)
    got = both.set_index("method").loc["extreme", ["ci_low", "ci_high"]].to_numpy(float)
    assert np.array_equal(got, want)
    with pytest.raises(ValidationError, match="seed must be an integer >= 0"):
        pooled_ece_differences(preds, ["extreme"], ["truth"], seed=-1)
