"""The peers benchmark (benchmarks/peers.py): its timing wrapper, its check against the main
evaluation's rows, its failure count and verdict, and one tiny end-to-end run."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import load_benchmark

from ragim import datasets
from ragim import evaluate as ev
from ragim.metrics import paired_differences


@pytest.fixture(scope="module")
def peers():
    return load_benchmark("peers")


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=16, n_features=3, seed=0)


def test_timed_methods_times_setup_and_predict_and_restores_the_registry(peers, family):
    before = {n: ev.METHODS[n] for n in ("pooled", "neighbor-mean")}
    with peers.timed_methods(["pooled", "neighbor-mean"]) as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ev.METHODS["pooled"] is not before["pooled"]
        df = ev.zero_shot(family, methods=["pooled", "neighbor-mean"], folds=2,
                          embedder="hashing", progress=False)
    assert set(df["status"]) == {"ok"} and len(df) == 32
    sec = log["seconds"]
    assert sec["pooled"]["setup"] > 0 and sec["pooled"]["predict"] > 0
    assert sec["neighbor-mean"]["setup"] == 0.0 and sec["neighbor-mean"]["predict"] > 0
    assert all(ev.METHODS[n] is m for n, m in before.items())
    assert log["training"] == {"pooled": [], "neighbor-mean": []}  # nothing with a history_


def test_timed_methods_records_a_trained_generators_curve_per_fold(peers, family):
    from ragim.generate.ragim2024 import RagIm2024Generator

    def setup(fctx):  # the rag-im-2024 method's setup with a small network, for speed
        gen = RagIm2024Generator(hidden=16, min_steps=20, seed=fctx.seed)
        fctx.cache["small-r24"] = gen.fit(fctx.index, progress=False)

    def predict(ctx):
        params = ctx.fold.cache["small-r24"].generate_params(
            ctx.task.description, ctx.fold.index, exclude=ctx.exclude)
        return ev.params_proba(params, ctx.X_test)

    ev.register_method("small-r24", predict, setup=setup)
    try:
        with peers.timed_methods(["small-r24"]) as log, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ev.zero_shot(family, methods=["small-r24"], folds=2, embedder="hashing",
                         progress=False)
    finally:
        ev.METHODS.pop("small-r24")
    curve = log["training"]["small-r24"]
    assert [c["fold"] for c in curve] == [0, 1] and all(c["steps"] == 20 for c in curve)
    assert all(np.isfinite(c["first_loss"]) and c["last_loss"] < c["first_loss"] for c in curve)
    assert log["seconds"]["small-r24"]["setup"] > 0


def _frame(method, ids, ll, auc):
    return pd.DataFrame({"method": method, "k_shot": 0, "task_id": ids, "log_loss": ll,
                         "auroc": auc, "status": "ok"})


def test_agreement_is_the_largest_gap_over_common_targets(peers):
    run = pd.concat([_frame("a", ["t1", "t2", "t3"], [0.5, 0.6, 0.7], [0.8, np.nan, 0.9]),
                     _frame("b", ["t1"], [0.4], [0.7])])
    main = pd.concat([_frame("a", ["t1", "t2", "t9"], [0.5, 0.65, 0.1], [0.8, np.nan, 0.5]),
                      _frame("b", ["t1"], [0.4], [np.nan])])
    rec = {r["method"]: r for r in peers.agreement(run, main, ["a", "b", "c"])}
    assert rec["a"]["n_common"] == 2
    assert rec["a"]["max_abs_diff_log_loss"] == pytest.approx(0.05)
    assert rec["a"]["max_abs_diff_auroc"] == 0.0  # NaN on both sides is the same value
    assert math.isinf(rec["b"]["max_abs_diff_auroc"])  # NaN on one side only is not
    assert rec["c"] == {"method": "c", "n_common": 0, "max_abs_diff_log_loss": None,
                        "max_abs_diff_auroc": None}


def test_failures_count_failed_and_missing_targets(peers):
    df = pd.concat([_frame("a", ["t1", "t2", "t3"], [0.5, np.nan, 0.7], 0.8),
                    _frame("b", ["t1", "t2"], [0.4, 0.5], 0.7)])
    df.loc[(df["method"] == "a") & (df["task_id"] == "t2"), "status"] = "ValueError: boom"
    rec = {r["method"]: r for r in peers.failures(df, ["a", "b", "c"], 3)}
    assert rec["a"] == {"method": "a", "n_rows": 3, "n_failed": 1,
                        "first_failure": "t2: ValueError: boom", "n_missing": 0}
    assert (rec["b"]["n_failed"], rec["b"]["n_missing"]) == (0, 1)
    assert (rec["c"]["n_rows"], rec["c"]["n_missing"]) == (0, 3)


def test_verdict_needs_the_whole_interval_below_zero(peers):
    def diffs(mean, lo, hi):
        return [{"baseline": "p", "metric": "log_loss", "mean_diff": mean, "ci_low": lo,
                 "ci_high": hi}]

    assert peers.verdict(diffs(-0.1, -0.2, -0.01), "p") == "met"
    assert peers.verdict(diffs(-0.1, -0.2, 0.01), "p") == "not significant"
    assert peers.verdict(diffs(0.1, -0.2, 0.3), "p") == "missed"
    assert peers.verdict(diffs(None, None, None), "p") == "not measured"


def test_run_writes_the_paired_differences_of_its_own_rows(peers, family, tmp_path,
                                                            monkeypatch):
    cfg = dict(protocol="leave-task-out", group=None, folds=2)
    monkeypatch.setattr(peers, "load_benchmark", lambda name: ("synthetic", family, dict(cfg)))
    res = peers.run("synthetic", "hashing", None, tmp_path,
                    methods=["ragim-statistical", "pooled", "neighbor-mean"],
                    peers=["neighbor-mean"])
    df = pd.read_csv(tmp_path / "peers_synthetic.csv")
    assert res["n_targets"] == 16 and set(df["method"]) == set(res["methods"])
    expect = paired_differences(df, ["ragim-statistical"], ["pooled", "neighbor-mean"])
    got = pd.DataFrame(res["differences"])
    assert np.allclose(got["mean_diff"], expect["mean_diff"])
    assert list(got["wins"]) == list(expect["wins"])
    assert json.loads((tmp_path / "peers_synthetic.json").read_text())["target"] == res["target"]
    assert res["agreement"] == []  # another embedder: not comparable with eval_synthetic.csv
    md = (tmp_path / "peers_synthetic.md").read_text()
    ll = next(r for r in res["differences"]
              if r["baseline"] == "neighbor-mean" and r["metric"] == "log_loss")
    assert f"| neighbor-mean | {ll['mean_diff']:+.4f} [" in md
    assert "--only synthetic --embedder hashing`" in md


def test_a_main_fold_held_out_as_a_group_scores_exactly_as_in_the_main_evaluation(peers, family):
    methods = ["ragim-statistical", "pooled", "neighbor-mean"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main = ev.zero_shot(family, methods=methods, folds=3, embedder="hashing", progress=False)
        fold_of = dict(zip(main["task_id"], main["fold"], strict=False))
        tasks = peers.with_main_folds(family, {t: f for t, f in fold_of.items() if f == 1})
        one = ev.zero_shot(tasks, methods=methods, protocol="leave-group-out",
                           group="main_fold", groups=[1], embedder="hashing", progress=False)
    assert [t.metadata.get("main_fold") for t in tasks] == [
        1 if fold_of[t] == 1 else None for t in family.ids]
    assert one.attrs["folds"][0]["index_ids"] == main.attrs["folds"][1]["index_ids"]
    mine = one.set_index(["task_id", "method"])["log_loss"]
    theirs = main[main["fold"] == 1].set_index(["task_id", "method"])["log_loss"]
    assert len(mine) == len(theirs) == 3 * sum(f == 1 for f in fold_of.values())
    assert np.allclose(mine.sort_index(), theirs.sort_index(), rtol=0, atol=1e-12)
