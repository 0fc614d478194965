"""The label-efficiency benchmark (benchmarks/label_efficiency.py) and the evaluation options it
uses: random draws of the k rows, ``k_within_pool`` and ``adapt_prior(design=...)``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import load_benchmark

from ragim import datasets, evaluate
from ragim.errors import ValidationError
from ragim.estimator import adapt_prior
from ragim.params import ModelParams, design_matrix

METHODS = ["neighbor-mean", "per-task-k"]  # fast; the generator's adaptation is tested below


def _script():
    return load_benchmark("label_efficiency")


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=16, n_features=3, seed=0, rows=(20, 60))


def _run(family, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate.few_shot(
            family,
            k_shots=(4, 24),
            methods=METHODS,
            draws=3,
            folds=2,
            max_targets=8,
            embedder="hashing",
            progress=False,
            **kw,
        )


@pytest.fixture(scope="module")
def both(family):
    return _run(family, k_within_pool=True), _run(family)


def test_k_within_pool_skips_only_the_ks_a_pool_cannot_hold(both, family):
    inside, full = both
    pool = {t.task_id: t.n_rows - math.ceil(t.y.sum() / 2) - math.ceil((1 - t.y).sum() / 2)
            for t in family}
    few = full[full["k_shot"] > 0]
    short = few[few["k_shot"] > few["task_id"].map(pool)]
    assert len(short) > 0, "the fixture should have targets whose pool is under 24 rows"
    assert (short["n_support"] < short["k_shot"]).all()  # the default scores the whole pool
    assert not (inside["k_shot"] > inside["task_id"].map(pool)).any()
    assert (inside.loc[inside["k_shot"] > 0, "n_support"] == inside.loc[
        inside["k_shot"] > 0, "k_shot"]).all()
    # every row it keeps is the default's row, to the bit
    key = ["task_id", "method", "k_shot", "draw"]
    kept = full.merge(inside[key], on=key)
    a = inside.sort_values(key).reset_index(drop=True)
    b = kept.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_draws_are_different_rows_scored_on_the_same_test_rows(both, family):
    inside, _ = both
    lr = inside[(inside["method"] == "per-task-k") & (inside["k_shot"] == 4)]
    assert sorted(lr["draw"].unique()) == [0, 1, 2]
    # draws of 4 rows give different per-task fits, so different scores on one target
    assert (lr.groupby("task_id")["log_loss"].nunique() > 1).any()
    assert (inside.groupby("task_id")["n_test"].nunique() == 1).all()
    zero = inside[(inside["method"] == "neighbor-mean") & (inside["k_shot"] == 0)]
    assert set(zero["task_id"]) == set(inside["task_id"])
    # a target's own rows never enter its fold's index
    for fold in inside.attrs["folds"]:
        assert not set(fold["targets"]) & set(fold["index_ids"])


def test_random_draws_are_simple_random_samples_of_the_pool(family):
    """With ``random_draws`` a draw is a plain random sample: over many draws of 4 rows the
    share of events matches the pool's, and some draws hold one class; the default ordering
    puts one row of each class first, which over-represents the rarer class."""
    y = np.array([1] * 10 + [0] * 90)
    seeds = range(2000)
    rand = np.array([y[evaluate.draw_order(y, s, both_classes=False)[:4]].mean() for s in seeds])
    both = np.array([y[evaluate.draw_order(y, s)[:4]].mean() for s in seeds])
    assert abs(rand.mean() - 0.10) < 0.01 and (rand == 0).mean() > 0.5
    assert both.min() >= 0.25 and both.mean() > 0.25  # at least 1 event in 4: 2.5x the rate
    df = _run(family, k_within_pool=True, random_draws=True)
    lr = df[(df["method"] == "per-task-k") & (df["k_shot"] == 4)]
    assert sorted(lr["draw"].unique()) == [0, 1, 2]
    default = _run(family, k_within_pool=True)
    key = ["task_id", "method", "k_shot", "draw"]
    zero = lambda d: d[d["k_shot"] == 0].sort_values(key).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(zero(df), zero(default))  # the same test rows and zero-shot


def test_adapt_prior_with_a_given_design_matches_and_checks_its_shape(family):
    t = family[0]
    schema = family.schema
    D = design_matrix("logistic", schema, t.X)
    prior = ModelParams("logistic", schema, np.r_[-0.5, np.linspace(0.5, -0.5, D.shape[1])])
    y = t.y.astype(float)
    a, ra = adapt_prior(prior, t.X, y, warn=False)
    b, rb = adapt_prior(prior, t.X, y, warn=False, design=D)
    np.testing.assert_array_equal(a.vector, b.vector)
    assert ra["chosen"] == rb["chosen"]
    with pytest.raises(ValidationError, match="design has shape"):
        adapt_prior(prior, t.X, y, design=D[:-1])


def test_summary_checks_the_targets_and_interpolates_the_worth():
    le = _script()
    rows = []
    # two targets: zero-shot log-loss 0.5; per-task LR 0.9 at k=4, 0.3 at k=16 (crosses 0.5)
    for tid in ("a", "b"):
        rows.append((tid, le.ADAPTED, 0, 0, 0.8, 0.5, 0, 10, "ok"))
        for k, lr_ll in ((4, 0.9), (16, 0.3)):
            for d in range(2):
                worse = tid == "a" and k == 16 and d == 1  # one draw: AUROC 0.8 -> 0.7
                rows.append((tid, le.ADAPTED, k, d, 0.7 if worse else 0.8, 0.45, k, 10, "ok"))
                rows.append((tid, le.LR, k, d, 0.75, lr_ll, k, 10, "ok"))
    df = pd.DataFrame(rows, columns=le.COLUMNS)
    s, head = le.summarise(df)
    assert s["k"].tolist() == [4, 16]
    assert s["lose_share"].tolist() == [0.0, 0.25]
    assert s["worst_d_auroc"].tolist() == pytest.approx([0.0, -0.1])
    assert head["ll_ok"] is True and head["lose_ok"] is False and head["k256"] is None
    # gap 0.4 at k=4, -0.2 at k=16: crosses at log k = log 4 + (2/3) log 4
    assert head["worth"] == pytest.approx(math.exp(math.log(4) * (1 + 2 / 3)))


def test_report_states_each_target_met_or_missed_with_the_size_of_the_miss(tmp_path):
    le = _script()
    report = load_benchmark("report")
    rows = [("a", le.ADAPTED, 0, 0, 0.8, 0.5, 0, 10, "ok")]
    for d, (auc, ll) in enumerate([(0.8, 0.52), (0.7, 0.46)]):  # mean 0.49 < 0.5; one bad draw
        rows.append(("a", le.ADAPTED, 8, d, auc, ll, 8, 10, "ok"))
        rows.append(("a", le.LR, 8, d, 0.6, 0.9, 8, 10, "ok"))
    df = pd.DataFrame(rows, columns=le.COLUMNS)
    (tmp_path / "label_efficiency_toy.md").write_text("# toy\n")
    le.write_summary(df, tmp_path / "label_efficiency_toy.json", "toy")
    lines = report.label_efficiency_targets([tmp_path / "label_efficiency_toy.md"])
    row = next(line for line in lines if line.startswith("| toy |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:3] == ["1", "2"]
    assert cells[3] == "more than 8"  # the per-task fit never reaches zero-shot
    assert cells[4] == "met (closest: -0.0100 at k = 8)"
    assert cells[5] == "**missed**: 50.0% of draws at k = 8"
    assert cells[6].startswith("not testable")
    assert cells[7] == "-0.100 (k = 8)" and cells[8] == "+0.020 (k = 8)"


def test_policy_line_counts_what_each_fold_chose():
    notes = [
        "ragim-statistical fold 0: stack ...; 3 s; adaptation policy: 4=zero-shot 8=prior",
        "ragim-statistical fold 1: stack ...; 3 s; adaptation policy: 4=zero-shot 8=intercept",
        "ragim-statistical fold 2: stack ...; 3 s; adaptation policy: none",
        "per-task-k: failed on 1 target x k row(s)",
    ]
    line = _script().policy_line(notes)
    assert "each of the 3 folds" in line
    assert "k = 4: zero-shot 2" in line and "k = 8: " in line
    assert "prior 1" in line and "intercept 1" in line
    assert _script().policy_line(["per-task-k: failed"]) == ""
