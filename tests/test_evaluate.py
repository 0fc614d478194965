"""Evaluation protocols, leak-freedom and baselines (ragim.evaluate); fast, offline."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from ragim import TaskIndex, datasets, evaluate
from ragim.errors import ValidationError
from ragim.metrics import SUMMARY_FIELDS
from ragim.tasks import Task, TaskCollection

FAST = {"max_epochs": 8, "patience": 4, "n_bootstrap": 4}


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=30, n_features=3, seed=0, rows=(30, 120))


@pytest.fixture(scope="module")
def run(family):
    """One few-shot run with every default method (shared by several tests)."""
    return evaluate.few_shot(family, k_shots=(8,), folds=2, max_targets=10, embedder="hashing",
                             generator_config=FAST, progress=False, return_predictions=True)


def _with_patients():
    """Six tasks where t0/t1 and t2/t3 share patients; t4, t5 share none."""
    base = datasets.synthetic_family(n_tasks=6, n_features=3, seed=1, n_rows=60)
    tasks = []
    for i, t in enumerate(base):
        owner = {0: "a", 1: "a", 2: "b", 3: "b"}.get(i, f"solo{i}")
        meta = {**t.metadata, "patient_ids": [f"{owner}-{j}" for j in range(t.n_rows)]}
        tasks.append(Task(t.task_id, t.description, t.X, t.y, meta, t.true_params))
    return TaskCollection(tasks, schema=base.schema, name="synthetic")


# ---------------------------------------------------------------------- leak-freedom
def test_planted_leak_is_refused_naming_the_task():
    tasks = _with_patients()
    index = TaskIndex.build(tasks.take([1, 3, 4, 5]), embedder="hashing", progress=False)
    # t1 shares patients with target t0; t3 is a target itself
    with pytest.raises(ValidationError) as err:
        evaluate.assert_leak_free(index, [tasks[0], tasks[3]])
    msg = str(err.value)
    assert "'syn-0000001' shares patients" in msg and "'syn-0000003' is a target" in msg
    assert "syn-0000004" not in msg
    clean = TaskIndex.build(tasks.take([4, 5]), embedder="hashing", progress=False)
    evaluate.assert_leak_free(clean, [tasks[0], tasks[3]])  # nothing to refuse


def test_group_leak_is_refused():
    tasks = _with_patients()
    index = TaskIndex.build(tasks.take([4, 5]), embedder="hashing", progress=False)
    g = tasks[4].metadata["group"]
    target = Task("new", "a new task", tasks[0].X, tasks[0].y, {"group": g})
    with pytest.raises(ValidationError, match="held-out group"):
        evaluate.assert_leak_free(index, [target], group="group")


def test_no_fold_index_contains_a_target_or_a_task_sharing_its_patients():
    tasks = _with_patients()
    df = evaluate.zero_shot(tasks, methods=["nearest-neighbor", "true-model"], folds=3, embedder="hashing",
                            progress=False)
    folds = df.attrs["folds"]
    assert sorted(t for f in folds for t in f["targets"]) == sorted(tasks.ids)
    for f in folds:
        index_ids = set(f["index_ids"])
        for tid in f["targets"]:
            assert tid not in index_ids
            assert not index_ids & set(tasks.overlapping(tid)), (tid, f)
    # a target whose partner is in another fold still loses the partner from its index
    fold_of = {t: f["fold"] for f in folds for t in f["targets"]}
    for f in folds:
        assert set(f["removed"]) >= {o for t in f["targets"] for o in tasks.overlapping(t)}
    assert set(df["fold"]) == set(fold_of.values())


def test_default_run_is_leak_free_for_index_and_generator(run):
    df, _ = run
    for f in df.attrs["folds"]:
        assert not set(f["targets"]) & set(f["index_ids"])
        assert set(f["generator_ids"]) <= set(f["index_ids"])
        assert not set(f["targets"]) & set(f["generator_ids"])


def test_no_method_but_the_oracle_sees_the_oracle(family):
    """Scrambling every target's oracle parameters changes the oracle's scores and nothing else."""
    methods = [m for m in evaluate.DEFAULT_METHODS if m != "ragim-attention"] + ["ragim-attention", "population"]
    kw = dict(methods=methods, folds=2, max_targets=6, embedder="hashing", generator_config=FAST, progress=False)
    real = evaluate.zero_shot(family, **kw)
    rng = np.random.default_rng(0)
    scrambled = TaskCollection(
        [Task(t.task_id, t.description, t.X, t.y, t.metadata, t.true_params,
              t.oracle_params.replace(vector=rng.normal(0, 3, len(t.oracle_params))))
         for t in family], schema=family.schema, name=family.name)
    other = evaluate.zero_shot(scrambled, **kw)
    key = ["task_id", "method"]
    a, b = real.set_index(key).sort_index(), other.set_index(key).sort_index()
    is_oracle = a.index.get_level_values("method") == "oracle"
    assert is_oracle.sum() == 6
    pd.testing.assert_frame_equal(a[~is_oracle], b[~is_oracle])
    assert not np.allclose(a.loc[is_oracle, "log_loss"], b.loc[is_oracle, "log_loss"])


def test_oracle_is_the_true_model_without_task_noise():
    fam = datasets.synthetic_family(n_tasks=5, n_features=3, seed=2)
    noiseless = datasets.synthetic_family(n_tasks=5, n_features=3, seed=2, noise=0.0)
    for t, t0 in zip(fam, noiseless, strict=True):
        np.testing.assert_allclose(t.oracle_params.vector, t0.true_params.vector)
        assert not np.allclose(t.oracle_params.vector, t.true_params.vector)
    proc = datasets.procedure_family(n_tasks=3, seed=0)
    proc0 = datasets.procedure_family(n_tasks=3, seed=0, noise=0.0)
    for t, t0 in zip(proc, proc0, strict=True):
        np.testing.assert_allclose(t.oracle_params.vector, t0.true_params.vector)


def test_skill_and_paired_differences_on_a_run(run):
    from ragim.metrics import paired_differences, skill

    df, _ = run
    s = evaluate.summarize(df)
    sk = skill(s).set_index(["metric", "method"])["skill"]
    # the true model is at least as good as the oracle's limit on average: skill near or above 1
    assert sk[("log_loss", "true-model")] > 0.5
    best = min(("pooled", "neighbor-mean"), key=lambda m: s[(s.metric == "log_loss") & (s.method == m) & (s.k_shot == 0)]["mean"].item())
    assert sk[("log_loss", best)] == pytest.approx(0.0)
    pdiff = paired_differences(df, ["true-model"], ["pooled"], metrics=["log_loss"])
    row = pdiff.iloc[0]
    a = df[(df.method == "true-model") & (df.k_shot == 0)].set_index("task_id")["log_loss"]
    b = df[(df.method == "pooled") & (df.k_shot == 0)].set_index("task_id")["log_loss"]
    assert row["mean_diff"] == pytest.approx(float((a - b.loc[a.index]).mean()))
    assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"] and row["n_tasks"] == 10
    assert row["wins"] + row["losses"] <= 10


# ---------------------------------------------------------------------- outputs
def test_all_default_methods_with_finite_metrics(run):
    df, preds = run
    assert list(df.columns) == evaluate.COLUMNS
    got = set(zip(df["method"], df["k_shot"], strict=True))
    zero = {"ragim-statistical", "ragim-attention", "pooled", "nearest-neighbor", "neighbor-mean", "per-task-all",
            "true-model", "oracle"}
    few = {("ragim-statistical", 8), ("ragim-attention", 8), ("per-task-k", 8)}
    assert got == {(m, 0) for m in zero} | few
    assert df["task_id"].nunique() == 10
    assert df.groupby(["method", "k_shot"]).size().eq(10).all()
    for metric in ("log_loss", "brier", "ece", "accuracy"):
        assert np.isfinite(df[metric]).all(), metric
    assert np.isfinite(df["auroc"]).mean() > 0.8
    assert set(df["dataset"]) == {"synthetic"} and set(df["protocol"]) == {"leave-task-out"}
    # every method is scored on the same test rows of a target
    rows = preds.groupby(["task_id", "method", "k_shot"])["row"].apply(tuple)
    assert rows.groupby(level="task_id").nunique().eq(1).all()
    assert (df.loc[df.k_shot == 8, "n_support"] == 8).all()


def test_summary_contract_records_and_table(run):
    df, _ = run
    s = evaluate.summarize(df)
    assert list(s.columns) == SUMMARY_FIELDS
    recs = evaluate.to_records(s)
    text = json.dumps(recs, allow_nan=False)
    assert json.loads(text)[0].keys() == set(SUMMARY_FIELDS)
    table = evaluate.format_table(s, metrics=["auroc", "log_loss"])
    assert "ragim-attention k=8" in table and "per-task-k k=8" in table
    by = evaluate.summarize(df, by_size=True)
    assert "size_group" in by.columns


def test_calibration_plot_from_predictions(run):
    from matplotlib.figure import Figure

    _, preds = run
    assert isinstance(evaluate.plot_calibration(preds, methods=["ragim-attention", "pooled"]), Figure)


def test_true_model_beats_pooled_when_tasks_differ():
    tasks = datasets.synthetic_family(n_tasks=30, n_features=4, seed=2, n_rows=200, level_scale=(2.0, 1.5, 1.0, 0.5))
    df = evaluate.zero_shot(tasks, methods=["pooled", "true-model"], folds=2, embedder="hashing", progress=False)
    mean = df.groupby("method")["auroc"].mean()
    assert mean["true-model"] > mean["pooled"] + 0.05


def test_leave_group_out_holds_out_whole_groups():
    tasks = datasets.synthetic_family(n_tasks=30, n_features=3, seed=0, rows=(30, 80))
    values = [m["group"] for m in tasks.metadata]
    held = [v for v in dict.fromkeys(values) if values.count(v) >= 2][:1] or [values[0]]
    df = evaluate.zero_shot(tasks, protocol="leave-group-out", groups=held, methods=["neighbor-mean"],
                            embedder="hashing", progress=False)
    assert set(df["protocol"]) == {"leave-group-out"}
    (fold,) = df.attrs["folds"]
    members = {t for t, v in zip(tasks.ids, values, strict=True) if v == held[0]}
    assert set(fold["targets"]) == members
    assert not members & set(fold["index_ids"])
    assert np.isfinite(df["log_loss"]).all()


def test_k_shot_fallback_for_single_class_support():
    tasks = datasets.synthetic_family(n_tasks=8, n_features=3, seed=0, n_rows=40)
    # a target whose rows are all negative except one: the support pool is single-class
    t = tasks[0]
    y = np.zeros(t.n_rows, dtype=int)
    y[0] = 1
    odd = Task("odd", t.description, t.X, y, t.metadata, t.true_params)
    coll = TaskCollection([odd, *list(tasks)[1:]], schema=tasks.schema, name="synthetic")
    df = evaluate.few_shot(coll, k_shots=(4,), methods=["per-task-k", "per-task-all"], folds=2, embedder="hashing",
                           progress=False, max_targets=8)
    # the single positive goes to the test rows (they take the larger half of each class), so the
    # support pool is all negative: both per-task methods predict the smoothed rate (n_pos + 1) / (n + 2)
    odd_rows = df[df.task_id == "odd"].set_index("method")
    assert odd_rows.loc["per-task-k", "n_test"] == 21
    for method, rate in (("per-task-k", 1 / 6), ("per-task-all", 1 / 21)):
        expected = -(20 * math.log(1 - rate) + math.log(rate)) / 21
        assert odd_rows.loc[method, "log_loss"] == pytest.approx(expected)
        assert odd_rows.loc[method, "auroc"] == 0.5


def test_support_test_split_is_stratified_seeded_and_disjoint():
    y = np.array([0] * 30 + [1] * 11)
    pool, test = evaluate.support_test_split(y, seed=5)
    assert not set(pool) & set(test) and len(pool) + len(test) == len(y)
    assert y[test].sum() == 6 and (1 - y[test]).sum() == 15
    assert set(y[pool[:2]]) == {0, 1}
    again = evaluate.support_test_split(y, seed=5)
    assert np.array_equal(pool, again[0]) and np.array_equal(test, again[1])


def test_unknown_method_and_protocol_are_refused(family):
    with pytest.raises(ValidationError, match="ragim-xl"):
        evaluate.zero_shot(family, methods=["ragim-xl"], embedder="hashing", progress=False)
    with pytest.raises(ValidationError, match="leave-task-out"):
        evaluate.zero_shot(family, protocol="random", embedder="hashing", progress=False)


def test_registered_method_joins_the_run(family):
    seen = []

    def setup(fctx):
        seen.append(len(fctx.index))

    evaluate.register_method("always-prevalence", lambda ctx: np.full(len(ctx.y_test), ctx.y_pool.mean()),
                             setup=setup)
    try:
        df = evaluate.zero_shot(family, methods=["always-prevalence"], folds=2, max_targets=4, embedder="hashing",
                                progress=False)
    finally:
        evaluate.METHODS.pop("always-prevalence")
    assert set(df["method"]) == {"always-prevalence"} and len(seen) == 2
    assert isinstance(df, pd.DataFrame)


def test_a_failing_method_is_scored_nan_with_a_note_not_a_crash(family):
    def broken(ctx):
        raise ValidationError("parameters must be finite")

    evaluate.register_method("broken", broken)
    try:
        with pytest.warns(UserWarning, match="broken: failed on 4"):
            df = evaluate.zero_shot(family, methods=["broken", "pooled"], folds=2, max_targets=4,
                                    embedder="hashing", progress=False)
    finally:
        evaluate.METHODS.pop("broken")
    b = df[df.method == "broken"]
    assert len(b) == 4 and b["log_loss"].isna().all() and b["status"].str.contains("finite").all()
    assert (df.loc[df.method == "pooled", "status"] == "ok").all()
    s = evaluate.summarize(df)
    assert (s.loc[s.method == "broken", "n_tasks"] == 0).all()


def test_population_method_scores_the_fold_indexs_population_model():
    tasks = datasets.synthetic_family(n_tasks=12, n_features=3, seed=0, rows=(30, 80))
    df, preds = evaluate.zero_shot(tasks, protocol="leave-task-out", methods=["population"], folds=2,
                                   max_targets=2, embedder="hashing", progress=False, return_predictions=True)
    assert set(df["method"]) == {"population"} and (df["status"] == "ok").all()
    assert np.isfinite(df["auroc"]).all() and np.isfinite(df["log_loss"]).all()
    for fold in df.attrs["folds"]:
        index = TaskIndex.build(tasks.take([tasks.ids.index(t) for t in fold["index_ids"]]), embedder="hashing",
                                progress=False)
        for tid in fold["targets"]:
            task = tasks[tasks.ids.index(tid)]
            mine = preds[preds["task_id"] == tid]
            expected = evaluate.params_proba(index.population_params([tid]), task.X.iloc[mine["row"].to_numpy()])
            np.testing.assert_allclose(mine["p"].to_numpy(), expected, rtol=1e-5)


def test_an_empty_support_pool_leaves_the_generated_model_zero_shot():
    # a 1-row target: its row goes to the test half, so there is nothing to adapt on at any k
    tasks = datasets.synthetic_family(n_tasks=10, n_features=3, seed=1, n_rows=40)
    t = tasks[0]
    tiny = Task("tiny", t.description, t.X.iloc[:1], t.y[:1], t.metadata, t.true_params)
    coll = TaskCollection([tiny, *list(tasks)[1:]], schema=tasks.schema, name="synthetic")
    df = evaluate.few_shot(coll, k_shots=(8,), methods=["ragim-statistical", "map-prior"],
                           targets=["tiny"], folds=2, embedder="hashing", progress=False)
    rows = df[df.task_id == "tiny"]
    assert (rows["status"] == "ok").all(), rows["status"].tolist()
    zero = rows[(rows.method == "ragim-statistical") & (rows.k_shot == 0)]["log_loss"].item()
    for method in ("ragim-statistical", "map-prior"):
        k8 = rows[(rows.method == method) & (rows.k_shot == 8)]
        assert k8["n_support"].item() == 0 and k8["log_loss"].item() == pytest.approx(zero)


def test_leave_group_out_refuses_a_key_no_task_has_and_lists_the_keys():
    tasks = datasets.synthetic_family(n_tasks=12, n_features=3, seed=0, rows=(30, 60))
    keys = tasks.metadata_keys()
    assert "group" in keys and "patient_ids" not in keys
    assert evaluate.group_key(tasks) == "group"  # no 'site': the families' "group"
    with pytest.raises(ValidationError) as err:
        evaluate.zero_shot(tasks, protocol="leave-group-out", group="hospital", methods=["pooled"],
                           embedder="hashing", progress=False)
    assert str(err.value) == (f"no task has the metadata key 'hospital'; pass group= with one of the "
                              f"tasks' keys {keys}")
    assert evaluate.group_key(datasets.heart_disease()) == "site"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        # before: numpy's "number sections must be larger than 0." / "negative dimensions ..."
        ({"max_targets": 0}, r"max_targets must be an integer >= 1 or None, got 0"),
        ({"max_targets": -1}, r"max_targets must be an integer >= 1 or None, got -1"),
        # before: every method failed on every target with "k must be an integer >= 1"
        ({"k_neighbors": 0}, r"k_neighbors must be an integer >= 1, got 0"),
        # before: 2.5 folds ran
        ({"folds": 2.5}, r"folds must be an integer >= 2 \(leave-task-out"),
        ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
        # before: "targets ['s', 'y', 'n', ...] are not tasks"
        ({"targets": "syn-0000001"}, r"targets must be a list of task ids, got the text"),
        ({"protocol": "leave-group-out", "groups": []}, "groups is empty"),
        ({"size_edges": (100, 50)}, "size edges must be increasing"),
        # before: ignored, every task was scored leave-task-out
        ({"groups": ["Hungary"]}, r"groups hold groups out, which protocol='leave-task-out' does"),
        ({"group": "site"}, r"group hold groups out, .* pass protocol='leave-group-out'"),
    ],
)
def test_evaluate_checks_its_arguments_before_any_fold(family, kwargs, message, monkeypatch):
    from ragim.index import TaskIndex as Index

    def no_build(*a, **k):  # the check comes first: no index is built
        raise AssertionError("an index was built before the arguments were checked")

    monkeypatch.setattr(Index, "build", no_build)
    kw = {"folds": 2, "methods": ["pooled"], "embedder": "hashing", "progress": False, **kwargs}
    with pytest.raises(ValidationError, match=message):
        evaluate.zero_shot(family, **kw)


@pytest.mark.parametrize(
    "k_shots, methods, message",
    [
        # before: an empty frame (the CLI printed "(no results)" and exited 0)
        ((4,), ["pooled"], r"no method to score: pooled: a zero-shot method.* k_shots \[4\] has no 0"),
        ((0,), ["per-task-k"], r"no method to score: per-task-k: needs k > 0 labelled rows"),
    ],
)
def test_no_method_that_the_k_values_score_is_refused(family, k_shots, methods, message):
    with pytest.raises(ValidationError, match=message):
        evaluate.evaluate(family, k_shots=k_shots, methods=methods, folds=2, embedder="hashing",
                          progress=False)


def test_a_named_method_that_no_k_scores_is_skipped_with_a_note(family):
    # before: pooled was silently absent from the results
    with pytest.warns(UserWarning, match=r"pooled: a zero-shot method.*method skipped"):
        df = evaluate.evaluate(family, k_shots=(4,), methods=["pooled", "per-task-k"], folds=2,
                               max_targets=2, embedder="hashing", progress=False)
    assert set(df["method"]) == {"per-task-k"}
    assert any(n.startswith("pooled: a zero-shot method") for n in df.attrs["notes"])


def test_default_methods_keep_those_the_k_values_score(family):
    df = evaluate.evaluate(family, k_shots=(4,), folds=2, max_targets=2, embedder="hashing",
                           methods=None, generator_config=FAST, progress=False)
    assert set(df["method"]) == {"ragim-statistical", "ragim-attention", "per-task-k"}
    assert set(df["k_shot"]) == {4}


def test_a_method_returning_values_outside_0_1_fails_on_that_target(family):
    # before: log-odds were clipped to 0 and 1 and scored (status "ok", log-loss 7.5)
    evaluate.register_method("log-odds", lambda ctx: np.linspace(-3, 3, len(ctx.y_test)))
    evaluate.register_method("rounded", lambda ctx: np.full(len(ctx.y_test), 1 + 1e-12))
    try:
        with pytest.warns(UserWarning, match="log-odds: failed on 2 target"):
            df = evaluate.zero_shot(family, methods=["log-odds", "rounded"], folds=2,
                                    max_targets=2, embedder="hashing", progress=False)
    finally:
        evaluate.METHODS.pop("log-odds")
        evaluate.METHODS.pop("rounded")
    bad = df[df["method"] == "log-odds"]
    assert bad["log_loss"].isna().all()
    assert bad["status"].str.startswith("returned values outside [0, 1] (from -3 to 3)").all()
    ok = df[df["method"] == "rounded"]
    assert (ok["status"] == "ok").all() and ok["log_loss"].notna().all()


def test_a_k_larger_than_a_targets_support_pool_is_said():
    # a 12-row target has a 6-row support pool: at k=8 its few-shot methods got 6 rows, yet the
    # summary's "k=8" row mixed it in without a word
    tasks = datasets.synthetic_family(n_tasks=10, n_features=3, seed=1, n_rows=40)
    t = tasks[0]
    small = Task("small", t.description, t.X.iloc[:12], t.y[:12], t.metadata, t.true_params)
    coll = TaskCollection([small, *list(tasks)[1:]], schema=tasks.schema, name="synthetic")
    kw = dict(methods=["per-task-k"], targets=["small", coll.ids[1]], folds=2,
              embedder="hashing", progress=False)
    with pytest.warns(UserWarning, match=r"^k=8: 1 of 2 target\(s\) have fewer than 8 rows in "
                                         r"their support pool .* given 6 rows \(small\)"):
        df = evaluate.few_shot(coll, k_shots=(4, 8), **kw)
    assert df[(df.task_id == "small") & (df.k_shot == 8)]["n_support"].item() == 6
    assert not any(n.startswith("k=4:") for n in df.attrs["notes"])  # 4 rows fit: not said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate.few_shot(coll, k_shots=(8,), k_within_pool=True, **kw)


def test_a_target_of_zero_rows_is_named_and_not_scored():
    # a task file with a header and no rows loads (and is skipped at build), but as a target it
    # crashed evaluation: "zero-size array to reduction operation minimum"
    tasks = datasets.synthetic_family(n_tasks=10, n_features=3, seed=1, n_rows=40)
    t = tasks[0]
    empty = Task("empty", t.description, t.X.iloc[:0], t.y[:0], t.metadata, t.true_params)
    coll = TaskCollection([empty, *list(tasks)[1:]], schema=tasks.schema, name="synthetic")
    with pytest.warns(UserWarning, match=r"^empty: no rows to score \(a task of 0 rows\)"):
        df = evaluate.few_shot(coll, k_shots=(8,), methods=["pooled", "per-task-k"],
                               targets=["empty", coll.ids[1]], folds=2, embedder="hashing",
                               progress=False)
    assert set(df["task_id"]) == {coll.ids[1]}
