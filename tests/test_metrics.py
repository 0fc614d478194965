"""Per-task metrics, bootstrap CIs, summaries, records and tables (ragim.metrics)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from ragim.errors import ValidationError
from ragim.metrics import (
    SUMMARY_FIELDS,
    auroc,
    bootstrap_ci,
    expected_calibration_error,
    format_table,
    plot_by_group,
    plot_calibration,
    size_group,
    size_labels,
    summarize,
    task_metrics,
    to_records,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_sklearn_and_first_principles(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = rng.random(200)
    p[:3] = [0.0, 1.0, 0.5]  # edge values: clipped for log-loss, 0.5 predicts 1
    m = task_metrics(y, p)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    # independent formulas
    pos, neg = p[y == 1], p[y == 0]
    mann_whitney = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert m["auroc"] == pytest.approx(mann_whitney)
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    assert m["log_loss"] == pytest.approx(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


@pytest.mark.parametrize("seed", [0, 1])
def test_task_metrics_auroc_counts_ties_half_like_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 120)
    p = np.round(rng.random(120), 1)  # 11 distinct values: many ties across the classes
    assert task_metrics(y, p)["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert task_metrics(y, p)["auroc"] == pytest.approx(auroc(y, p), abs=1e-12)


def test_auroc_is_nan_for_single_class_test_rows_but_others_are_finite():
    m = task_metrics([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.6])
    assert math.isnan(m["auroc"])
    assert all(math.isfinite(m[k]) for k in ("log_loss", "brier", "ece", "accuracy"))
    assert m["accuracy"] == 0.75


def test_metrics_reject_bad_input():
    with pytest.raises(ValidationError, match="0/1"):
        task_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValidationError, match="must match"):
        task_metrics([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        task_metrics([0, 1], [0.1, 1.2])


def test_ece_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    over = np.clip(0.5 + 1.8 * (p - 0.5), 0, 1)  # overconfident
    assert expected_calibration_error(y, over) > 0.1
    assert expected_calibration_error(y, np.full_like(p, 0.9)) == pytest.approx(abs(0.9 - y.mean()), abs=1e-12)


def test_ece_bins_are_equal_width_and_count_weighted():
    # two bins used: [0.1, 0.2) with 3 rows (mean p .1, mean y 1/3) and the closed last bin with 1 row at p=1
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.1, 1.0])
    expected = 3 / 4 * abs(1 / 3 - 0.1) + 1 / 4 * 0.0
    assert expected_calibration_error(y, p) == pytest.approx(expected)


def test_bootstrap_ci_contains_mean_and_narrows_with_more_tasks():
    rng = np.random.default_rng(0)
    small = rng.normal(0.75, 0.1, 20)
    large = rng.normal(0.75, 0.1, 500)
    m1, lo1, hi1, n1 = bootstrap_ci(small)
    m2, lo2, hi2, n2 = bootstrap_ci(large)
    assert lo1 <= m1 <= hi1 and lo2 <= m2 <= hi2
    assert (n1, n2) == (20, 500)
    assert hi2 - lo2 < (hi1 - lo1) / 2
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)


def test_bootstrap_ci_ignores_nan_and_handles_tiny_inputs():
    assert bootstrap_ci([0.5, float("nan")])[1:] == (0.5, 0.5, 1)
    mean, lo, hi, n = bootstrap_ci([float("nan")])
    assert n == 0 and all(math.isnan(v) for v in (mean, lo, hi))


def test_size_groups():
    assert size_labels() == ["<50", "50-200", "200-1000", ">=1000"]
    assert [size_group(n) for n in (49, 50, 199, 200, 999, 1000)] == ["<50", "50-200", "50-200", "200-1000",
                                                                      "200-1000", ">=1000"]
    assert size_group(30, edges=(20, 40)) == "20-40"
    with pytest.raises(ValidationError, match="increasing"):
        size_labels((100, 50))


def _per_task(n_tasks=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_tasks):
        for method, shift in (("ragim-attention", 0.05), ("pooled", 0.0)):
            rows.append({"dataset": "synthetic", "protocol": "leave-task-out", "fold": i % 3, "task_id": f"t{i}",
                         "n_rows": int(rng.integers(20, 400)), "method": method, "k_shot": 0,
                         "auroc": float(np.clip(rng.normal(0.7 + shift, 0.05), 0, 1)) if i else float("nan"),
                         "log_loss": float(rng.normal(0.6, 0.05)), "brier": 0.2, "ece": 0.05, "accuracy": 0.7})
    df = pd.DataFrame(rows)
    df["size_group"] = [size_group(n) for n in df["n_rows"]]
    return df


def test_summarize_has_exactly_the_contract_fields_and_counts_finite_values():
    s = summarize(_per_task())
    assert list(s.columns) == SUMMARY_FIELDS
    assert SUMMARY_FIELDS == ["dataset", "protocol", "method", "k_shot", "metric", "mean", "ci_low", "ci_high",
                              "n_tasks"]
    auroc = s[(s.method == "pooled") & (s.metric == "auroc")].iloc[0]
    loss = s[(s.method == "pooled") & (s.metric == "log_loss")].iloc[0]
    assert auroc.n_tasks == 29 and loss.n_tasks == 30  # the NaN AUROC task does not count
    assert (s["ci_low"] <= s["mean"]).all() and (s["mean"] <= s["ci_high"]).all()
    by = summarize(_per_task(), by_size=True)
    assert list(by.columns) == [*SUMMARY_FIELDS, "size_group"]
    assert by.groupby(["method", "metric"])["n_tasks"].sum().loc[("pooled", "log_loss")] == 30


def test_to_records_is_json_safe():
    s = summarize(_per_task())
    s.loc[0, "mean"] = float("nan")
    recs = to_records(s)
    json.loads(json.dumps(recs, allow_nan=False))
    assert recs[0]["mean"] is None
    assert set(recs[0]) == set(SUMMARY_FIELDS)
    assert isinstance(recs[0]["k_shot"], int) and isinstance(recs[0]["n_tasks"], int)


def test_format_table_methods_as_rows_metrics_as_columns():
    text = format_table(summarize(_per_task()), metrics=["auroc", "log_loss"])
    lines = text.splitlines()
    assert lines[0].startswith("synthetic / leave-task-out")
    assert lines[1].split() == ["method", "auroc", "log_loss", "n"]
    assert any(line.startswith("ragim-attention ") for line in lines)
    assert "[" in lines[3] and "]" in lines[3]


def test_figures_are_built_without_pyplot():
    import inspect

    from matplotlib.figure import Figure

    import ragim.metrics

    fig = plot_by_group(summarize(_per_task(), by_size=True))
    assert isinstance(fig, Figure)
    rng = np.random.default_rng(0)
    preds = pd.DataFrame({"task_id": np.repeat(["a", "b"], 20), "row": np.tile(np.arange(20), 2),
                          "y": rng.integers(0, 2, 40), "k_shot": 0})
    preds = pd.concat([preds.assign(method="m1", p=rng.random(40)), preds.assign(method="m2", p=rng.random(40))])
    assert isinstance(plot_calibration(preds), Figure)
    assert "import matplotlib.pyplot" not in inspect.getsource(ragim.metrics)


def test_format_table_says_which_metric_counts_fewer_tasks_than_n():
    """The table's n is a row's largest count; AUROC on fewer targets (one-class test rows)
    was shown under the same n. A line under the block now says so, and for which rows."""
    rows = [
        {"dataset": "d", "protocol": "p", "method": m, "k_shot": 0, "metric": metric,
         "mean": 0.7, "ci_low": 0.6, "ci_high": 0.8, "n_tasks": n}
        for m, n_auroc in [("ragim", 2), ("pooled", 3)]
        for metric, n in [("auroc", n_auroc), ("log_loss", 3)]
    ]
    text = format_table(pd.DataFrame(rows))
    assert "auroc is on fewer tasks than n: 2 of 3 tasks (ragim)" in text
    assert "log_loss is on fewer" not in text
    full = format_table(pd.DataFrame([{**r, "n_tasks": 3} for r in rows]))
    assert "fewer" not in full


def _two_methods_frame():
    return pd.DataFrame(
        {
            "dataset": "d",
            "protocol": "p",
            "task_id": ["a", "b", "a", "b", "a", "b"],
            "method": ["new", "new", "pooled", "pooled", "per-task-k", "per-task-k"],
            "k_shot": [0, 0, 0, 0, 4, 4],
            "log_loss": [0.4, 0.5, 0.5, 0.6, 0.45, 0.55],
            "auroc": [0.7, 0.8, 0.6, 0.7, 0.65, 0.75],
        }
    )


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        # before: one NaN row per letter of 'new', each over 0 targets
        (("new", ["pooled"]), {}, r"methods must be a list of method names, got the text 'new'"),
        ((["new"], "pooled"), {}, r"baselines must be a list .* got the text 'pooled'"),
        # before: a NaN row over 0 targets
        ((["new"], ["poled"]), {}, r"no rows for method\(s\) \['poled'\]"),
        ((["per-task-k"], ["pooled"]), {"k_shot": 4}, r"no rows at k_shot=4 for 'pooled' \(k_shot \[0\]\)"),
        ((["new"], ["pooled"]), {"metrics": "auroc"}, "metrics must be a list of metric names"),
        # before: numpy's "Quantiles must be in the range [0, 1]" / an IndexError
        ((["new"], ["pooled"]), {"level": 95}, r"level must be a number in \(0, 1\), got 95"),
        ((["new"], ["pooled"]), {"n_boot": 0}, "n_boot must be an integer >= 1, got 0"),
        ((["new"], ["pooled"]), {"seed": -1}, "seed must be an integer >= 0, got -1"),
        ((["new"], ["pooled"]), {"k_shot": 0.5}, "k_shot must be an integer"),
    ],
)
def test_paired_differences_refuse_what_they_cannot_compare(args, kwargs, message):
    from ragim.metrics import paired_differences

    with pytest.raises(ValidationError, match=message):
        paired_differences(_two_methods_frame(), *args, **kwargs)


def test_paired_differences_of_named_methods_still_compare():
    from ragim.metrics import paired_differences

    r = paired_differences(_two_methods_frame(), ("new",), ("pooled", "new"), metrics=["log_loss"])
    assert r[["baseline", "n_tasks", "wins"]].to_dict("records") == [
        {"baseline": "pooled", "n_tasks": 2, "wins": 2}
    ]
    assert float(r["mean_diff"].iloc[0]) == pytest.approx(-0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"level": 1.5}, r"level must be a number in \(0, 1\)"),
        ({"n_boot": 0}, "n_boot must be an integer >= 1"),
        ({"seed": -2}, "seed must be an integer >= 0"),
    ],
)
def test_bootstrap_settings_are_checked_in_one_line(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        bootstrap_ci([0.1, 0.2, 0.3], **kwargs)
    with pytest.raises(ValidationError, match=message):
        summarize(_two_methods_frame(), metrics=["log_loss"], **kwargs)
    with pytest.raises(ValidationError, match="metrics must be a list of metric names"):
        summarize(_two_methods_frame(), metrics="log_loss")
    with pytest.raises(ValidationError, match="per_task must be a pandas DataFrame"):
        summarize(_two_methods_frame().to_dict("records"))


@pytest.mark.parametrize("n_bins", [0, -1, 2.5, "10"])
def test_n_bins_is_checked_in_one_line(n_bins):
    # before: numpy's "'list' argument must have no negative elements", "'minlength' must not
    # be negative" or a TypeError about 'float' objects
    from ragim.metrics import bin_statistics
    from ragim.plots import plot_calibration as reliability
    from ragim.validation import score_predictions

    message = f"n_bins must be an integer >= 1, got {n_bins!r}"
    for call in (
        lambda: expected_calibration_error([0, 1, 1], [0.2, 0.6, 0.9], n_bins=n_bins),
        lambda: bin_statistics([0, 1, 1], [0.2, 0.6, 0.9], n_bins=n_bins),
        lambda: score_predictions([0, 1, 1, 0], [0.2, 0.6, 0.9, 0.1], n_bins=n_bins, n_boot=5),
        lambda: reliability([0, 1, 1], {"m": [0.2, 0.6, 0.9]}, n_bins=n_bins),
    ):
        with pytest.raises(ValidationError, match=message):
            call()


def test_text_labels_and_risks_are_refused_naming_the_argument():
    # before: numpy's "could not convert string to float: 'yes'"
    from ragim.validation import calibration_slope_intercept, score_predictions

    for call in (
        lambda: task_metrics(["yes", "no"], [0.8, 0.2]),
        lambda: auroc(["yes", "no"], [0.8, 0.2]),
        lambda: calibration_slope_intercept(["yes", "no"], [0.8, 0.2]),
        lambda: score_predictions(["yes", "no"], [0.8, 0.2], n_boot=5),
    ):
        with pytest.raises(ValidationError, match=r"y_true must hold 0/1 .*, got 'yes'; map"):
            call()
    with pytest.raises(ValidationError, match=r"y_prob must hold probabilities, got 'high'"):
        task_metrics([1, 0], ["high", 0.2])
    assert task_metrics(["1", "0"], [0.8, 0.2])["auroc"] == 1.0  # numbers as text still read


def _draw_predictions():
    rows = []
    for draw, shift in ((0, 0.0), (1, 0.3)):
        for t in ("a", "b"):
            for r, y in enumerate([0, 1, 0, 1]):
                for m in ("per-task-k", "new"):
                    p = min(0.95, 0.2 + 0.5 * y + shift + (0.05 if m == "new" else 0.0))
                    rows.append({"task_id": t, "method": m, "k_shot": 4, "draw": draw, "row": r,
                                 "y": y, "p": p})
    return pd.DataFrame(rows)


def test_plot_calibration_reads_draw_0_and_names_what_is_missing():
    # before: "cannot handle a non-unique multi-index!" with draws, an IndexError for an absent k
    preds = _draw_predictions()
    fig = plot_calibration(preds, k_shot=4)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    first = preds[(preds["draw"] == 0) & (preds["method"] == "per-task-k")]
    ece = expected_calibration_error(first["y"], first["p"])
    assert f"per-task-k (ECE {ece:.3f})" in labels
    with pytest.raises(ValidationError, match=r"no predictions at k_shot=7; they have k_shot \[4\]"):
        plot_calibration(preds, k_shot=7)
    with pytest.raises(ValidationError, match=r"for method\(s\) \['pooled'\]"):
        plot_calibration(preds, k_shot=4, methods=["new", "pooled"])


def test_skill_of_a_by_size_summary_is_one_per_size_group():
    # before: "TypeError: float() argument must be ... not 'Series'" (a method per size group)
    from ragim.metrics import skill

    rows = []
    for i, (size, n) in enumerate([("<50", 20), ("<50", 30), ("50-200", 120), ("50-200", 150)]):
        for m, ll in (("pooled", 0.7), ("neighbor-mean", 0.65), ("oracle", 0.5), ("new", 0.6)):
            rows.append({"dataset": "d", "protocol": "p", "method": m, "k_shot": 0,
                         "task_id": f"t{i}", "n_rows": n, "size_group": size,
                         "log_loss": ll + (0.02 * i if m == "oracle" else 0.01 * i)})
    per_task = pd.DataFrame(rows)
    by = skill(summarize(per_task, by_size=True, metrics=["log_loss"], n_boot=20),
               metrics=["log_loss"]).set_index(["size_group", "method"])["skill"]
    # <50: new 0.605 vs neighbor-mean 0.655 and oracle 0.51 -> 0.05 / 0.145
    assert by[("<50", "new")] == pytest.approx(0.05 / 0.145)
    assert by[("50-200", "new")] == pytest.approx(0.05 / 0.125)
    assert by[("<50", "neighbor-mean")] == pytest.approx(0.0)
    whole = summarize(per_task, metrics=["log_loss"], n_boot=20)
    with pytest.raises(ValidationError, match="several log_loss rows"):
        skill(pd.concat([whole, whole]), metrics=["log_loss"])


def test_a_target_whose_method_failed_on_some_draws_is_nan_not_its_other_draws_mean():
    # before: new's log-loss on target a was 0.3 from the one draw of three that worked, status
    # "ok", and it counted as a win against base's mean over all three draws
    from ragim.metrics import mean_over_draws, paired_differences

    nan = float("nan")
    df = pd.DataFrame({"dataset": "d", "protocol": "p", "k_shot": 4,
                       "task_id": ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3,
                       "method": ["new"] * 6 + ["base"] * 6, "draw": [0, 1, 2] * 4,
                       "log_loss": [0.3, nan, nan, 0.4, 0.5, 0.6, 0.5, 0.6, 0.7, 0.6, 0.6, 0.6],
                       "status": ["ok", "ValueError: boom", "ValueError: boom"] + ["ok"] * 9})
    m = mean_over_draws(df).set_index(["method", "task_id"])
    assert math.isnan(m.loc[("new", "a"), "log_loss"])
    assert m.loc[("new", "a"), "status"] == "ValueError: boom"
    assert m.loc[("new", "b"), "log_loss"] == pytest.approx(0.5)
    assert m.loc[("new", "b"), "status"] == "ok"
    r = paired_differences(df, ["new"], ["base"], metrics=["log_loss"], k_shot=4).iloc[0]
    assert (r["n_tasks"], r["wins"], r["mean_diff"]) == (1, 1, pytest.approx(-0.1))
    s = summarize(df, metrics=["log_loss"]).set_index("method")
    assert int(s.loc["new", "n_tasks"]) == 1 and int(s.loc["base", "n_tasks"]) == 2


def test_skill_over_different_targets_is_nan_with_a_warning():
    # before: the oracle known on 2 of 4 targets made the gap (neighbor-mean - oracle) 0.2
    # instead of 0.1, and a method 0.05 better than neighbor-mean everywhere got skill 0.25
    from ragim.metrics import skill

    rows = []
    for i in range(4):
        for m, ll in (("pooled", 0.7), ("neighbor-mean", 0.6), ("better", 0.55), ("oracle", 0.5)):
            if m == "oracle" and i >= 2:
                continue
            rows.append({"dataset": "d", "protocol": "p", "method": m, "k_shot": 0,
                         "task_id": f"t{i}", "log_loss": ll + 0.1 * i})
    per_task = pd.DataFrame(rows)
    s = summarize(per_task, metrics=["log_loss"], n_boot=20)
    with pytest.warns(UserWarning, match=r"better \(4\), neighbor-mean \(4\), oracle \(2\)"):
        r = skill(s, metrics=["log_loss"]).set_index("method")["skill"]
    assert math.isnan(r["better"])
    shared = per_task[per_task["task_id"].isin(["t0", "t1"])]  # the targets all of them scored
    r = skill(summarize(shared, metrics=["log_loss"], n_boot=20), metrics=["log_loss"])
    assert r.set_index("method")["skill"]["better"] == pytest.approx(0.5)


def test_table_and_summary_refuse_a_bare_metric_name_and_a_text_flag():
    # before: format_table(s, metrics="auroc") made columns a, u, r, o, c of "n/a", and
    # by_size="no" (truthy) summarised by size
    s = summarize(_two_methods_frame(), metrics=["auroc"], n_boot=20)
    with pytest.raises(ValidationError, match="metrics must be a list of metric names, got the text"):
        format_table(s, metrics="auroc")
    with pytest.raises(ValidationError, match="by_size must be True or False, got 'no'"):
        summarize(_two_methods_frame(), metrics=["auroc"], by_size="no")
