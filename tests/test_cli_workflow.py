"""Local validation from the command line: ``index build --exclude``, ``generate``, ``predict``,
``score``, ``adapt``, ``export``, ``explain``, on real heart-disease rows (hashing embedder), and
their bad inputs (each one line, exit code 2)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_console
from typer.testing import CliRunner

from ragim import TaskIndex, datasets
from ragim.cli import app
from ragim.models import model_from_params
from ragim.params import ModelParams, design_matrix

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DESCRIPTION = (
    "Predict coronary artery disease in adults referred for coronary angiography to the Hungarian "
    "Institute of Cardiology, Budapest"
)


def _ok(*args) -> str:
    result = runner.invoke(
        app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def _json(*args):
    return json.loads(_ok(*args, "--json"))


def run_main(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """``ragim ARGS`` as the console script runs it: (exit code, stdout, stderr)."""
    return run_console(args, monkeypatch, capsys)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """An index without Hungary, a model generated for Hungary, and Hungary's patients split
    into rows to adapt on and rows to validate on."""
    root = tmp_path_factory.mktemp("workflow")
    summary = _json(
        "index",
        "build",
        "--dataset",
        "heart-disease",
        "--exclude",
        "site=Hungary",
        "--embedder",
        "hashing",
        "--out",
        root / "idx",
    )
    params = _json(
        "generate",
        DESCRIPTION,
        "--index",
        root / "idx",
        "--outcome-name",
        "coronary artery disease",
        "--save",
        root / "m0",
    )
    hungary = datasets.heart_disease()["hungary-any_cad-all"]
    local, holdout = hungary.split(test_size=0.8, seed=0)
    for task, name in ((local, "adapt.csv"), (holdout, "validate.csv")):
        task.X.assign(patient_id=task.metadata["patient_ids"], cad=task.y).to_csv(
            root / name, index=False
        )
    return {"path": root, "build": summary, "generate": params, "local": local, "holdout": holdout}


def test_generate_never_replaces_a_saved_model_unless_told_to(root, monkeypatch, capsys):
    d = root["path"]
    before = ModelParams.load(d / "m0")
    args = ["generate", "Predict death in women", "--index", d / "idx", "--save", d / "m0"]
    code, _, err = run_main(args, monkeypatch, capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert ModelParams.load(d / "m0") == before  # the saved model is untouched
    copy = d / "m0-copy"
    before.save(copy)
    code, _, _ = run_main([*args[:-1], copy, "--overwrite"], monkeypatch, capsys)
    assert code == 0 and ModelParams.load(copy).metadata["description"] == "Predict death in women"


def _frame(root, name):
    d = pd.read_csv(root / name)
    return d.drop(columns=["patient_id", "cad"]), d["cad"].to_numpy(), d["patient_id"].to_numpy()


# ---------------------------------------------------------------------- index build --exclude
def test_exclude_leaves_the_site_out_and_records_it(root):
    n_hungary = sum(m["site"] == "Hungary" for m in datasets.heart_disease().metadata)
    assert (
        root["build"]["excluded"] == {"site": ["Hungary"]}
        and root["build"]["n_excluded"] == n_hungary == 5
    )
    index = TaskIndex.load(root["path"] / "idx")
    assert index.config.excluded == {"site": ["Hungary"]}
    assert (
        all(r["metadata"]["site"] != "Hungary" for r in index.records)
        and len(index) == 28 - n_hungary
    )
    config = json.loads((root["path"] / "idx" / "config.json").read_text())
    assert config["excluded"] == {"site": ["Hungary"]}
    meta = root["generate"]["metadata"]
    assert (
        meta["index_excluded"] == {"site": ["Hungary"]}
        and meta["outcome"] == "coronary artery disease"
    )
    assert meta["description"] == DESCRIPTION
    assert not any(p["task_id"].startswith("hungary-") for p in meta["provenance"])


def test_exclude_any_metadata_key_repeatable(tmp_path):
    out = _json(
        "index",
        "build",
        "--dataset",
        "heart-disease",
        "--exclude",
        "outcome=multivessel",
        "--exclude",
        "site=Switzerland",
        "--embedder",
        "hashing",
        "--out",
        tmp_path / "i",
    )
    tasks = datasets.heart_disease()
    expected = sum(
        m["outcome"] == "multivessel" or m["site"] == "Switzerland" for m in tasks.metadata
    )
    assert out["n_excluded"] == expected and out["n_tasks"] == len(tasks) - expected
    assert TaskIndex.load(tmp_path / "i").config.excluded == {
        "outcome": ["multivessel"],
        "site": ["Switzerland"],
    }



def test_a_task_excluded_by_id_takes_the_tasks_sharing_its_patients_with_it(tmp_path):
    """--exclude task_id=T left out T but kept the whole-site tasks holding every one of its
    patients, without a word (mgus2: the "zero-shot" model for T borrowed most from the task
    that contains T's own patients). Leave-task-out evaluation leaves them out; so does this."""
    tasks = datasets.heart_disease()
    target = "cleveland-any_cad-women_50to59"
    sharing = ["cleveland-any_cad-all", "cleveland-multivessel-all", "cleveland-multivessel-women_50to59"]
    assert sorted(tasks.overlapping(target)) == sharing
    args = ["index", "build", "--dataset", "heart-disease", "--embedder", "hashing", "--exclude", f"task_id={target}"]
    out = _json(*args, "--out", tmp_path / "i")
    assert sorted(out["sharing_patients"]) == sharing
    assert out["n_excluded"] == 1 and out["n_tasks"] == len(tasks) - 1 - len(sharing)
    assert not {target, *sharing} & set(TaskIndex.load(tmp_path / "i").ids)
    text = " ".join(_ok(*args, "--out", tmp_path / "j").split())
    assert f"left out 1 task(s) with task_id={target} and 3 sharing their patients (cleveland-" in text
    # tasks left out by another key: those sharing their patients stay, and are named
    out = _json("index", "build", "--dataset", "heart-disease", "--embedder", "hashing",
                "--exclude", "outcome=multivessel", "--out", tmp_path / "k")
    left = [t for t, m in zip(tasks.ids, tasks.metadata, strict=True) if m["outcome"] == "multivessel"]
    near = {o for t in left for o in tasks.overlapping(t)} - set(left)
    assert out["sharing_patients"] == [] and out["n_tasks"] == len(tasks) - len(left)
    assert any(f"{len(near)} kept task(s) share patients with the tasks left out" in w for w in out["warnings"])


def test_repeated_excludes_leave_out_any_match_and_say_so(tmp_path):
    """Repeated --exclude options are OR-ed: the message says "any of" (it read as AND:
    "with outcome=multivessel, site=Switzerland"), as the help does; task_id=ID names a task."""
    tasks = datasets.heart_disease()
    args = ["index", "build", "--dataset", "heart-disease", "--embedder", "hashing", "--out", tmp_path / "i",
            "--overwrite"]  # each call rebuilds the same index
    text = " ".join(_ok(*args, "--exclude", "outcome=multivessel", "--exclude", "site=Switzerland").split())
    n = sum(m["outcome"] == "multivessel" or m["site"] == "Switzerland" for m in tasks.metadata)
    assert f"left out {n} task(s) with any of outcome=multivessel, site=Switzerland" in text
    help_text = " ".join(runner.invoke(app, ["index", "build", "--help"], env={"COLUMNS": "300"}).output.split())
    assert "a task is left out when ANY of them matches" in help_text and "task_id=ID" in help_text
    one, two = tasks.ids[:2]
    out = _json(*args, "--exclude", f"task_id={one}", "--exclude", f"task_id={two}", "--exclude", "site=Hungary")
    n = sum(t in (one, two) or m["site"] == "Hungary" for t, m in zip(tasks.ids, tasks.metadata, strict=True))
    shared = out["sharing_patients"]  # the whole-site tasks hold the two named ones' patients
    assert out["n_excluded"] == n and out["n_tasks"] == len(tasks) - n - len(shared)
    assert not {one, two} & set(TaskIndex.load(tmp_path / "i").ids)
    bad = runner.invoke(app, [*map(str, args), "--exclude", "task_id=nonesuch"])
    assert bad.exit_code != 0 and "--exclude task_id=nonesuch matches no task" in bad.output + str(bad.exception)


# ---------------------------------------------------------------------- predict
def test_predict_writes_the_models_risks(root, tmp_path):
    d = root["path"]
    X, _, ids = _frame(d, "validate.csv")
    expected = model_from_params(ModelParams.load(d / "m0")).predict_proba(X)[:, 1]
    out = _json(
        "predict",
        d / "m0",
        "--rows",
        d / "validate.csv",
        "--outcome",
        "cad",
        "--out",
        tmp_path / "r.csv",
    )
    assert out["n"] == len(X) and out["mean_risk"] == pytest.approx(expected.mean())
    risks = pd.read_csv(tmp_path / "r.csv")
    assert list(risks.columns) == ["row", "patient_id", "risk"]
    np.testing.assert_array_equal(risks["patient_id"], ids)
    np.testing.assert_allclose(
        risks["risk"], expected, rtol=1e-5
    )  # written with 6 significant digits
    np.testing.assert_allclose([r["risk"] for r in out["risks"]], expected)
    text = _ok("predict", d / "m0", "--rows", d / "validate.csv", "--outcome", "cad")
    assert f"Predicted risk of coronary artery disease for {len(X)} patients" in text
    assert f"first 20 of {len(X)} rows" in text and "--out FILE.csv writes all of them" in text


def test_predict_reads_a_semicolon_file_with_sep(root, tmp_path):
    d = root["path"]
    pd.read_csv(d / "validate.csv").to_csv(tmp_path / "semi.csv", sep=";", index=False)
    a = _json("predict", d / "m0", "--rows", d / "validate.csv", "--outcome", "cad")
    b = _json(
        "predict", d / "m0", "--rows", tmp_path / "semi.csv", "--outcome", "cad", "--sep", ";"
    )
    assert [r["risk"] for r in a["risks"]] == [r["risk"] for r in b["risks"]]


def test_rows_and_folders_written_by_a_german_spreadsheet_read_with_thousands(root, tmp_path, monkeypatch, capsys):
    """--thousands '.' reads 1.718 as 1718 and ',' as the decimal mark, in --rows and task folders."""
    d = root["path"]
    pd.read_csv(d / "validate.csv").to_csv(tmp_path / "de.csv", sep=";", decimal=",", index=False)
    a = _json("predict", d / "m0", "--rows", d / "validate.csv", "--outcome", "cad")
    b = _json("predict", d / "m0", "--rows", tmp_path / "de.csv", "--outcome", "cad", "--sep", ";",
              "--thousands", ".")
    assert [r["risk"] for r in a["risks"]] == [r["risk"] for r in b["risks"]]
    folder = tmp_path / "tasks"
    (folder / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        alk = rng.lognormal(6.9, 0.7, 60).round().astype(int)
        pd.DataFrame({"patient_id": [f"w{i}-{j}" for j in range(60)],
                      "alk_phos": [f"{v:,}".replace(",", ".") for v in alk],
                      "y": (rng.random(60) < 0.5).astype(int)}).to_csv(folder / "data" / f"t{i}.csv", sep=";",
                                                                      index=False)
    pd.DataFrame({"task_id": [f"t{i}" for i in range(3)],
                  "description": [f"Predict death in cholangitis, clinic {i}" for i in range(3)]}).to_csv(
        folder / "descriptions.csv", index=False)
    build = ["index", "build", "--dataset", folder, "--embedder", "hashing", "--sep", ";", "-q"]
    code, _, err = run_main([*build, "--out", tmp_path / "i0"], monkeypatch, capsys)
    assert code == 2 and "column 'alk_phos' holds numbers written with '.' as a thousands separator" in err
    assert "--thousands '.'" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main([*build, "--thousands", ".", "--out", tmp_path / "i1"], monkeypatch, capsys)
    assert code == 0, err
    code, _, err = run_main(["evaluate", "--dataset", "synthetic", "--thousands", "."], monkeypatch, capsys)
    assert code == 2 and "--thousands apply to a task folder" in err


def test_a_french_export_with_no_break_space_groups_reads_with_the_escape_the_message_gives(
        root, tmp_path, monkeypatch, capsys):
    """'1\\xa0718' (a no-break space between digit groups) stayed text even with --thousands: pandas'
    C parser ignores a two-byte separator; and the message's --thousands '\\xa0' reached ragim as
    four characters. Both read now, and the risks equal those of the same rows written plainly."""
    d = root["path"]
    frame = pd.read_csv(d / "validate.csv")
    frame["chol"] *= 10  # values in the thousands, written '2\xa0430' below
    frame.to_csv(tmp_path / "plain.csv", index=False)
    grouped = frame.astype(object).assign(chol=[
        "" if pd.isna(v) else f"{int(v):,}".replace(",", "\u00a0") for v in frame["chol"]])
    grouped.to_csv(tmp_path / "fr.csv", index=False)
    code, _, err = run_main(["predict", d / "m0", "--rows", tmp_path / "fr.csv", "--outcome", "cad"],
                            monkeypatch, capsys)
    assert code == 2 and "--thousands '\\xa0'" in err
    a = _json("predict", d / "m0", "--rows", tmp_path / "plain.csv", "--outcome", "cad")
    b = _json("predict", d / "m0", "--rows", tmp_path / "fr.csv", "--outcome", "cad",
              "--thousands", "\\xa0")
    assert [r["risk"] for r in a["risks"]] == [r["risk"] for r in b["risks"]]


def test_predict_ignores_an_outcome_written_yes_no_without_reading_it(root, tmp_path, monkeypatch, capsys):
    d = root["path"]
    a = _json("predict", d / "m0", "--rows", d / "validate.csv", "--outcome", "cad")
    frame = pd.read_csv(d / "validate.csv")
    frame.assign(cad=np.where(frame["cad"] == 1, "yes", "no")).to_csv(tmp_path / "yn.csv", index=False)
    b = _json("predict", d / "m0", "--rows", tmp_path / "yn.csv", "--outcome", "cad")
    assert [r["risk"] for r in a["risks"]] == [r["risk"] for r in b["risks"]]
    code, _, err = run_main(["predict", d / "m0", "--rows", tmp_path / "yn.csv", "--outcome", "death"],
                            monkeypatch, capsys)
    assert code == 2 and "has no outcome column 'death'" in err


def test_rows_commands_take_na_values_as_the_error_advises(root, tmp_path, monkeypatch, capsys):
    """A missing-value code in --rows: the error advises --na-values, and predict, score, adapt
    and explain take it, reading those cells as blanks."""
    d = root["path"]
    frame = pd.read_csv(d / "validate.csv")
    schema = ModelParams.load(d / "m0").schema
    col = next(f.name for f in schema.features if f.allow_missing and f.type == "continuous")
    blank, dot = frame.copy(), frame.copy().astype({col: object})
    blank.loc[:2, col] = np.nan
    dot.loc[:2, col] = "."
    blank.to_csv(tmp_path / "blank.csv", index=False)
    dot.to_csv(tmp_path / "dot.csv", index=False)
    code, _, err = run_main(["predict", d / "m0", "--rows", tmp_path / "dot.csv", "--outcome", "cad"],
                            monkeypatch, capsys)
    assert code == 2 and "--na-values" in err
    want = _json("predict", d / "m0", "--rows", tmp_path / "blank.csv", "--outcome", "cad")
    got = _json("predict", d / "m0", "--rows", tmp_path / "dot.csv", "--outcome", "cad", "--na-values", ".")
    assert [r["risk"] for r in got["risks"]] == [r["risk"] for r in want["risks"]]
    for cmd in (["score", d / "m0"], ["adapt", d / "m0", "--save", tmp_path / "a"]):
        a = _json(*cmd, "--rows", tmp_path / "blank.csv", "--outcome", "cad")
        if cmd[0] == "adapt":
            cmd[-1] = tmp_path / "b"
        b = _json(*cmd, "--rows", tmp_path / "dot.csv", "--outcome", "cad", "--na-values", ".")
        same = ("rows", "save", "out", "path")
        assert {k: v for k, v in a.items() if k not in same} == {k: v for k, v in b.items() if k not in same}
    a = _json("explain", d / "m0", "--rows", tmp_path / "blank.csv", "--outcome", "cad")
    b = _json("explain", d / "m0", "--rows", tmp_path / "dot.csv", "--outcome", "cad", "--na-values", ".")
    assert a == b


# ---------------------------------------------------------------------- score
def test_score_reports_the_right_values_with_intervals(root, tmp_path):
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    from ragim.metrics import expected_calibration_error

    d = root["path"]
    X, y, _ = _frame(d, "validate.csv")
    p = model_from_params(ModelParams.load(d / "m0")).predict_proba(X)[:, 1]
    out = _json(
        "score",
        d / "m0",
        "--rows",
        d / "validate.csv",
        "--outcome",
        "cad",
        "--n-boot",
        300,
        "--png",
        tmp_path / "cal.png",
    )
    m = out["metrics"]
    assert (
        out["n"] == len(y) and out["n_positive"] == int(y.sum()) and out["n_boot_requested"] == 300
    )
    assert m["auroc"]["value"] == pytest.approx(roc_auc_score(y, p))
    assert m["log_loss"]["value"] == pytest.approx(log_loss(y, p))
    assert m["brier"]["value"] == pytest.approx(brier_score_loss(y, p))
    assert m["ece"]["value"] == pytest.approx(expected_calibration_error(y, p))
    z = logit(p)
    slope = LogisticRegression(C=np.inf).fit(z[:, None], y).coef_[0, 0]
    assert m["calibration_slope"]["value"] == pytest.approx(slope, rel=1e-3)
    a = m["calibration_intercept"]["value"]
    assert np.sum(y - 1 / (1 + np.exp(-(a + z)))) == pytest.approx(
        0.0, abs=1e-8
    )  # the offset model's score
    for k in ("auroc", "log_loss", "brier", "calibration_slope", "calibration_intercept"):
        assert m[k]["ci_low"] < m[k]["value"] < m[k]["ci_high"], k
        assert m[k]["n_boot"] == 300
    assert (tmp_path / "cal.png").read_bytes()[:8] == PNG_MAGIC
    text = _ok("score", d / "m0", "--rows", d / "validate.csv", "--outcome", "cad", "--n-boot", 50)
    for name in (
        "AUROC",
        "log-loss",
        "Brier score",
        "ECE",
        "calibration slope",
        "calibration intercept",
        "95% CI",
    ):
        assert name in text
    assert f"{m['auroc']['value']:.3f}" in text
    assert "300 resamples" not in text and "50 resamples;" in text  # every CI rests on all 50


def test_score_of_a_harmful_model_counts_its_resamples_and_flags_its_intervals(root, tmp_path):
    """A model whose risks run against the outcome, on few patients: many resamples are
    separated by the risks (an infinite slope). Every resample is counted, none dropped, and
    the unbounded slope interval is flagged instead of being printed as a plain 95% CI."""
    d = root["path"]
    rows = pd.read_csv(d / "validate.csv")
    X, y, _ = _frame(d, "validate.csv")
    p = model_from_params(ModelParams.load(d / "m0")).predict_proba(X)[:, 1]
    order = np.argsort(p)
    pick = np.r_[order[:6], order[-6:]]  # the 6 lowest and 6 highest risks
    few = rows.iloc[pick].assign(cad=np.r_[np.ones(6, int), np.zeros(6, int)])
    few.iloc[[5, 6], few.columns.get_loc("cad")] = [0, 1]  # one overlap: a finite slope
    few.to_csv(tmp_path / "harm.csv", index=False)
    args = ("score", d / "m0", "--rows", tmp_path / "harm.csv", "--outcome", "cad")
    out = _json(*args, "--n-boot", 400)
    slope = out["metrics"]["calibration_slope"]
    assert slope["value"] < 0 and slope["n_boot"] == 400  # separated resamples count (-inf)
    assert slope["ci_low"] == "-inf" and slope["ci_high"] < 0  # unbounded below, spelt out
    assert "unbounded" in slope["ci_warning"]
    assert any(w.startswith("calibration slope: in ") for w in out["warnings"])
    assert all(m["n_boot"] == 400 for m in out["metrics"].values())
    text = _ok(*args, "--n-boot", 400)
    line = next(ln for ln in text.splitlines() if ln.startswith("calibration slope"))
    assert "-inf to" in line and " *" in line
    assert "*: not a plain 95% CI, see the warning" in text



def test_score_marks_every_interval_of_a_file_with_one_event(root, tmp_path):
    """One patient with the outcome: each CI is starred in the table and marked in --json, and
    one warning says why; an infinite slope is "inf" in --json (null is not computable)."""
    d = root["path"]
    rows = pd.read_csv(d / "validate.csv")
    X, _, _ = _frame(d, "validate.csv")
    p = model_from_params(ModelParams.load(d / "m0")).predict_proba(X)[:, 1]
    one = rows.assign(cad=(np.arange(len(rows)) == np.argmax(p)).astype(int))  # top risk
    one.to_csv(tmp_path / "one.csv", index=False)
    args = ("score", d / "m0", "--rows", tmp_path / "one.csv", "--outcome", "cad", "--n-boot", 200)
    out = _json(*args)
    why = f"1 event in {len(rows)} patients: too few for a bootstrap interval of AUROC"
    assert out["ci_warning"].startswith(why)
    assert sum(w.startswith(why) for w in out["warnings"]) == 1
    assert all("too few for a bootstrap interval" in m["ci_warning"] for m in out["metrics"].values())
    slope = out["metrics"]["calibration_slope"]
    assert slope["value"] == slope["ci_low"] == slope["ci_high"] == "inf"  # separated: inf, not null
    text = _ok(*args)
    for name in ("AUROC", "calibration intercept"):
        line = next(ln for ln in text.splitlines() if ln.startswith(name))
        assert line.rstrip().endswith(" *") or " * " in line, line


# ---------------------------------------------------------------------- adapt
def test_adapt_recalibrates_like_zero_shot_classifier(root):
    from ragim.estimator import recalibrate

    d = root["path"]
    out = _json(
        "adapt", d / "m0", "--rows", d / "adapt.csv", "--outcome", "cad", "--save", d / "m1",
        "--method", "recalibrate",
    )
    assert out["method"] == out["asked"] == "recalibrate"
    prior, adapted = ModelParams.load(d / "m0"), ModelParams.load(d / "m1")
    X, y, _ = _frame(d, "adapt.csv")
    theta, std, _ = recalibrate(
        design_matrix("logistic", prior.schema, X),
        y.astype(float),
        prior.vector,
        prior_std=prior.std,
        prior_correlation=prior.correlation,
    )
    np.testing.assert_allclose(adapted.vector, theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(adapted.std, std, rtol=1e-10, atol=1e-12)
    assert adapted.metadata["source"] == "adapted" and adapted.metadata["k_shot"] == len(y)
    assert (
        adapted.metadata["adapted_from"] == str(d / "m0")
        and adapted.metadata["outcome"] == "coronary artery disease"
    )
    assert out["n_rows"] == len(y) and out["n_positive"] == int(y.sum())
    assert out["intercept_after"] == pytest.approx(theta[0])
    assert out["terms_scale"] == pytest.approx(float(np.median(theta[1:] / prior.vector[1:])))
    assert out["sign_changes"] == []  # a positive recalibration moves no term across zero
    # then score again on the other patients
    after = _json(
        "score", d / "m1", "--rows", d / "validate.csv", "--outcome", "cad", "--n-boot", 0
    )
    Xv, yv, _ = _frame(d, "validate.csv")
    p = model_from_params(adapted).predict_proba(Xv)[:, 1]
    from sklearn.metrics import log_loss

    assert after["metrics"]["log_loss"]["value"] == pytest.approx(log_loss(yv, p))
    assert (
        after["source"] == "adapted" and after["metrics"]["auroc"]["ci_low"] is None
    )  # --n-boot 0: no CI
    assert after["warnings"] == []
    # scoring on the very rows it was adapted on (even a renamed copy) is flagged as optimistic
    copy = d / "adapt_copy.csv"
    copy.write_bytes((d / "adapt.csv").read_bytes())
    same = _json("score", d / "m1", "--rows", copy, "--outcome", "cad", "--n-boot", 0)
    assert len(same["warnings"]) == 1 and "same bytes as a file this model was adapted on" in same["warnings"][0]
    # adapted again on other rows, it still remembers the first file
    _json("adapt", d / "m1", "--rows", d / "validate.csv", "--outcome", "cad", "--save", d / "m1b")
    again = _json("score", d / "m1b", "--rows", copy, "--outcome", "cad", "--n-boot", 0)
    assert len(again["warnings"]) == 1 and "adapted on" in again["warnings"][0]
    # adapting again on rows it was adapted on counts those patients twice: said
    twice = _json("adapt", d / "m1", "--rows", copy, "--outcome", "cad", "--save", d / "m1c")
    assert any("counts these patients twice" in w for w in twice["warnings"])
    # saving over the model being adapted would lose it: refused, and the model is untouched
    def contents(path):
        return {p.name: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}

    before = contents(d / "m1")
    result = runner.invoke(app, ["adapt", str(d / "m1"), "--rows", str(copy), "--outcome", "cad",
                                 "--save", str(d / "m1")], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "is the model being adapted" in result.output
    assert before and contents(d / "m1") == before
    # nor inside it, nor onto a folder that holds it
    for where in (d / "m1" / "adapted", d):
        result = runner.invoke(app, ["adapt", str(d / "m1"), "--rows", str(copy), "--outcome",
                                     "cad", "--save", str(where)], env={"COLUMNS": "200"})
        assert result.exit_code == 2 and "is the model being adapted" in result.output
    assert contents(d / "m1") == before


def test_adapt_says_who_chose_the_adaptation(root):
    d = root["path"]
    out = _json("adapt", d / "m0", "--rows", d / "adapt.csv", "--outcome", "cad", "--save", d / "mp")
    # the generated model carries the policy its generator validated in the index
    assert out["policy_note"] and out["evidence_choice"] in ("zero-shot", "intercept", "recalibrate", "map")
    # --json carries what the Python report says about the choice
    assert {"prefer", "prefer_ignored", "single_class", "reversal_refused"} <= set(out)
    assert out["prefer"] == (None if out["policy"] is None else out["policy"]["prefer"])
    text = _ok("adapt", d / "m0", "--rows", d / "adapt.csv", "--outcome", "cad", "--save", d / "mq")
    if out["policy"] is not None and out["policy"]["prefer"] is not None:
        assert f"policy validated in the index for k = {out['policy']['k']}" in text
        if out["evidence_choice"] != out["method"]:
            assert f"the evidence alone would have chosen '{out['evidence_choice']}'" in text
    else:
        assert "chosen by the evidence on these rows" in text
    # an adapted model carries no policy: adapting it again, the evidence alone chooses
    adapted = ModelParams.load(d / "mp")
    if adapted.metadata["adaptation"] != "zero-shot":
        again = _json("adapt", d / "mp", "--rows", d / "validate.csv", "--outcome", "cad", "--save", d / "mr")
        assert again["policy"] is None and "no adaptation policy" in again["policy_note"]


def test_adapt_map_moves_every_coefficient(root, tmp_path):
    d = root["path"]
    out = _json(
        "adapt",
        d / "m0",
        "--rows",
        d / "adapt.csv",
        "--outcome",
        "cad",
        "--save",
        tmp_path / "m",
        "--method",
        "map",
    )
    prior, adapted = ModelParams.load(d / "m0"), ModelParams.load(tmp_path / "m")
    assert out["method"] == "map" and adapted.metadata["adaptation"] == "map"
    ratio = adapted.vector[1:] / prior.vector[1:]
    assert np.ptp(ratio) > 0.05  # not one common slope: each coefficient moved on its own


def test_explain_of_an_adapted_model_says_how_it_was_adapted(root, tmp_path):
    """An outside user's `ragim explain` of an adapted model looked exactly like the zero-shot
    model's and still printed the generated model's index coverage line as its own."""
    d = root["path"]
    _json("adapt", d / "m0", "--rows", d / "adapt.csv", "--outcome", "cad", "--save",
          tmp_path / "m", "--method", "recalibrate")
    n = len(root["local"].y)
    said = f"adapted on {n} labelled row(s) by 'recalibrate' (an intercept shift and one scale"
    text = _ok("explain", tmp_path / "m")
    lines = text.splitlines()
    assert lines[0].startswith(said) and "starting from the generated model" in lines[0]
    assert lines[-1].startswith("the zero-shot model's index coverage (before adaptation): ")
    one = _ok("explain", tmp_path / "m", "--rows", d / "validate.csv", "--outcome", "cad")
    assert one.splitlines()[0].startswith(said)
    assert "the zero-shot model's index coverage (before adaptation)" in one
    zero = _ok("explain", d / "m0")  # the generated model: its own coverage, no adaptation
    assert "adapt" not in zero and zero.splitlines()[-1].startswith("index coverage: ")


def test_adapt_prior_updates_under_the_models_own_sds(root, tmp_path):
    from ragim.adaptation import map_with_prior

    d = root["path"]
    prior = ModelParams.load(d / "m0")
    assert prior.std is not None  # the generated model carries its SDs
    out = _json(
        "adapt", d / "m0", "--rows", d / "adapt.csv", "--outcome", "cad",
        "--save", tmp_path / "m", "--method", "prior",
    )
    adapted = ModelParams.load(tmp_path / "m")
    assert out["method"] == out["asked"] == "prior" and adapted.metadata["adaptation"] == "prior"
    X, y, _ = _frame(d, "adapt.csv")
    want = map_with_prior(
        design_matrix("logistic", prior.schema, X),
        y.astype(float),
        prior.vector,
        prior.std,
        correlation=prior.correlation,
    )
    np.testing.assert_allclose(adapted.vector, want.theta, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- export
def test_export_csv_holds_every_parameter_with_its_interval(root, tmp_path):
    d = root["path"]
    out = _json("export", d / "m1", "--csv", tmp_path / "c.csv")
    p = ModelParams.load(d / "m1")
    c = pd.read_csv(tmp_path / "c.csv", keep_default_na=False, na_values=[""])
    assert out["n_terms"] == len(p) and list(c["term"]) == p.names
    # --json holds the coefficients too (it held only the path and the column names)
    rows = _json("export", d / "m1")["coefficients"]
    assert [r["term"] for r in rows] == p.names
    np.testing.assert_allclose([r["model_coef"] for r in rows], p.vector, rtol=1e-12)
    assert [r["ci_low"] is None for r in rows] == list(c["ci_low"].isna())
    np.testing.assert_allclose(c["model_coef"], p.vector, rtol=1e-5)  # rebuilds the model
    np.testing.assert_allclose(c["model_std"], p.std, rtol=1e-5)
    # coef and its interval are the effect the odds ratios describe: the parameter itself,
    # except a categorical level, which is compared with its feature's reference level, and
    # the intercept, the reference patient's log-odds that `ragim explain` prints
    plain = (c["type"] != "categorical").to_numpy().copy()
    plain[0] = False
    np.testing.assert_allclose(c["coef"][plain], p.vector[plain], rtol=1e-5)
    shown = re.search(r"intercept at the reference patient ([-+]\d+\.\d+)", _ok("explain", d / "m1"))
    assert c["coef"][0] == pytest.approx(float(shown.group(1)), abs=1e-3)
    np.testing.assert_allclose(
        c["ci_low"][plain], (p.vector - 1.959963984540054 * p.std)[plain], rtol=1e-5, atol=1e-6
    )
    level = c.set_index("term").loc["cp[asymptomatic]"]
    assert level["coef"] == pytest.approx(p["cp[asymptomatic]"] - p["cp[typical angina]"], 1e-4)
    assert level["odds_ratio_per_sd"] == pytest.approx(np.exp(level["coef"]), 1e-4)
    assert level["or_ci_low"] == pytest.approx(np.exp(level["ci_low"]), 1e-4)
    assert c.loc[c["term"] == "sex", "label"].item() == "Sex = male"
    assert c.loc[c["term"] == "sex", "reference"].item() == "female"


def test_adapt_reports_the_intercept_explain_prints(root, tmp_path):
    """`ragim adapt` printed the raw intercept parameter ("intercept -0.999 -> +0.600 (+1.600)"
    after a MAP refit of a heart model) while `ragim explain` of the two models printed the
    reference patient's (-2.215 -> -0.332, +1.882): the two could not be matched. It now prints
    the reference patient's, as explain does; --json gives both (baseline_*, intercept_*)."""
    from ragim.explain import explain_params

    d = root["path"]
    args = ["adapt", d / "m0", "--rows", d / "adapt.csv", "--outcome", "cad", "--method", "map"]
    out = _json(*args, "--save", tmp_path / "a")
    before, after = ModelParams.load(d / "m0"), ModelParams.load(tmp_path / "a")
    want = [explain_params(p).reference_intercept()[0] for p in (before, after)]
    assert [out["baseline_before"], out["baseline_after"]] == pytest.approx(want)
    assert [out["intercept_before"], out["intercept_after"]] == pytest.approx(
        [before.intercept, after.intercept]
    )
    assert abs(want[0] - before.intercept) > 0.1  # the heart schema has categorical features
    text = _ok(*args, "--save", tmp_path / "b")
    line = next(ln for ln in text.splitlines() if "intercept" in ln and "->" in ln)
    assert line.split() == [
        "intercept", "at", "the", "reference", "patient",
        f"{want[0]:+.3f}", "->", f"{want[1]:+.3f}", f"({want[1] - want[0]:+.3f})",
    ]
    assert f"intercept at the reference patient {want[1]:+.3f}" in _ok("explain", tmp_path / "b")


# ---------------------------------------------------------------------- explain and generate text
def test_explain_table_is_sorted_with_reference_levels_and_folded_missing(root):
    d = root["path"]
    text = _ok("explain", d / "m0")
    rows = [ln for ln in text.splitlines() if not ln.startswith("LOGISTIC")]
    logodds = [
        float(m.group()) for m in re.finditer(r"[-+]\d+\.\d{3}(?=\s*$)", "\n".join(rows), re.M)
    ]
    assert len(logodds) == 18 and [abs(v) for v in logodds] == sorted(
        (abs(v) for v in logodds), reverse=True
    )
    assert "vs typical angina" in text and "male vs female" in text and "vs normal" in text
    assert "__missing" not in text and "missing vs" not in text
    assert (
        "all 18 terms shown; 10 missing-value indicator terms not shown; --all shows them" in text
    )
    everything = _ok("explain", d / "m0", "--all")
    assert "missing vs" in everything and "all 28 terms shown" in everything
    top = _ok("explain", d / "m0", "--top", "5")
    assert "5 of 18 terms shown (largest first)" in top
    assert "Logistic model for coronary artery disease" in text


def test_a_declared_code_in_the_outcome_of_rows_is_a_blank_outcome_not_a_label(
    root, tmp_path, monkeypatch, capsys
):
    """score --na-values -9 with -9 in the outcome column advised --pos-label (a wrong fix);
    the code is a blank outcome, refused naming its rows, as in a task folder."""
    d = root["path"]
    frame = pd.read_csv(d / "validate.csv").astype({"cad": object})
    frame.loc[:2, "cad"] = -9
    frame.to_csv(tmp_path / "coded.csv", index=False)
    code, _, err = run_main(["score", d / "m0", "--rows", tmp_path / "coded.csv", "--outcome", "cad",
                             "--na-values", "-9"], monkeypatch, capsys)
    assert code == 2
    assert "outcome column 'cad' is empty in 3 data row(s) [1, 2, 3]" in err and "pos-label" not in err


def test_explain_reads_past_an_outcome_column_of_any_labels(root, tmp_path):
    """The outcome is ignored when explaining, so Yes/No labels need no --pos-label (which
    explain does not take); an outside user was told to pass it."""
    d = root["path"]
    rows = pd.read_csv(d / "validate.csv")
    rows.assign(cad=np.where(rows["cad"] == 1, "Yes", "No")).to_csv(tmp_path / "yn.csv", index=False)
    text = _ok("explain", d / "m0", "--rows", tmp_path / "yn.csv", "--outcome", "cad", "--row", 3)
    plain = _ok("explain", d / "m0", "--rows", d / "validate.csv", "--outcome", "cad", "--row", 3)
    assert text.replace(str(tmp_path / "yn.csv"), "F") == plain.replace(str(d / "validate.csv"), "F")


def test_adapt_and_score_name_the_event_label_and_the_follow_up_command_runs(root, tmp_path):
    """With Yes/No outcomes the headings say "cad = Yes", not "cad = 1", and the score command
    that adapt suggests carries the --pos-label it needs."""
    import shlex

    d = root["path"]
    for name in ("adapt.csv", "validate.csv"):
        rows = pd.read_csv(d / name)
        rows.assign(cad=np.where(rows["cad"] == 1, "Yes", "No")).to_csv(tmp_path / name, index=False)
    out = _ok("adapt", d / "m0", "--rows", tmp_path / "adapt.csv", "--outcome", "cad",
              "--pos-label", "Yes", "--save", tmp_path / "m1")
    assert "with cad = Yes)" in out and "cad = 1" not in out
    suggested = shlex.split(out.strip().splitlines()[-1].split(": ", 1)[1])
    assert suggested[:3] == ["ragim", "score", str(tmp_path / "m1")] and "--pos-label" in suggested
    suggested[suggested.index("OTHER.csv")] = str(tmp_path / "validate.csv")
    scored = _ok(*suggested[1:])
    assert "with cad = Yes" in " ".join(scored.split())


def test_score_takes_false_as_the_event_of_a_true_false_outcome(root, tmp_path):
    """--pos-label FALSE (any case) names the event of a TRUE/FALSE column, which pandas reads
    as booleans; a wrong label is refused naming the values as the file writes them."""
    d = root["path"]
    rows = pd.read_csv(d / "validate.csv")
    # "no disease" written TRUE/FALSE: the event, disease, is FALSE
    rows.assign(cad=np.where(rows["cad"] == 1, "FALSE", "TRUE")).to_csv(tmp_path / "tf.csv", index=False)
    plain = _json("score", d / "m0", "--rows", d / "validate.csv", "--outcome", "cad", "--n-boot", 20)
    for label in ("FALSE", "false"):
        out = _json("score", d / "m0", "--rows", tmp_path / "tf.csv", "--outcome", "cad", "--pos-label", label,
                    "--n-boot", 20)
        assert out["n_positive"] == plain["n_positive"] == int(rows["cad"].sum())
        assert out["metrics"]["auroc"]["value"] == pytest.approx(plain["metrics"]["auroc"]["value"])
    bad = runner.invoke(app, ["score", str(d / "m0"), "--rows", str(tmp_path / "tf.csv"), "--outcome", "cad",
                              "--pos-label", "dead"])
    assert bad.exit_code != 0
    assert "is not one of the outcome values ['FALSE', 'TRUE']" in bad.output + str(bad.exception)


def test_explain_one_patient_shows_the_predicted_risk(root, tmp_path):
    d = root["path"]
    X, _, ids = _frame(d, "validate.csv")
    p = model_from_params(ModelParams.load(d / "m0")).predict_proba(X.iloc[[3]])[0, 1]
    text = _ok(
        "explain",
        d / "m0",
        "--rows",
        d / "validate.csv",
        "--outcome",
        "cad",
        "--row",
        3,
        "--png",
        tmp_path / "w.png",
    )
    assert f"Predicted risk of coronary artery disease: {p:.1%}" in " ".join(text.split())
    assert (
        f"(patient {ids[3]})" in text
        and "Sex" in text
        and "13 features shown" in " ".join(text.split())
    )
    data = _json("explain", d / "m0", "--rows", d / "validate.csv", "--outcome", "cad", "--row", 3)
    assert data["probability"] == pytest.approx(p) and data["outcome"] == "coronary artery disease"
    assert (tmp_path / "w.png").read_bytes()[:8] == PNG_MAGIC
    for given in (["--row", "3"], ["--outcome", "cad"], ["--patient-id", "pid"]):
        result = runner.invoke(app, ["explain", str(d / "m0"), *given])  # without --rows: refused
        assert result.exit_code == 2 and f"{given[0]} needs --rows FILE" in result.output


def test_search_and_train_attention_print_readable_text(root, tmp_path):
    d = root["path"]
    text = _ok("index", "search", d / "idx", DESCRIPTION, "-k", 3)
    header = [ln for ln in text.splitlines() if ln.split()[:2] == ["score", "task_id"]]
    assert header and "most similar first" in text
    summary = _ok(
        "train", "attention", "--index", d / "idx", "--out", tmp_path / "g", "--max-epochs", 2
    )
    assert (
        "{" not in summary and "epochs       2 of at most 2" in summary and "validation" in summary
    )


# ---------------------------------------------------------------- --version, --quiet, progress
def test_version(monkeypatch, capsys):
    import ragim

    code, out, err = run_main(["--version"], monkeypatch, capsys)
    assert code == 0 and out.strip() == f"ragim {ragim.__version__}" and err == ""


def test_python_dash_m_ragim_is_the_command_line():
    import os
    import subprocess
    from pathlib import Path

    import ragim

    root = str(Path(ragim.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "ragim", "--version"], capture_output=True, text=True, env=env,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"ragim {ragim.__version__}"


def test_progress_bars_only_on_a_terminal_and_quiet_silences_them(tmp_path, monkeypatch, capsys):
    args = ["index", "build", "--dataset", "synthetic", "--n-tasks", "10", "--embedder", "hashing"]
    code, out, err = run_main([*args, "--out", tmp_path / "a"], monkeypatch, capsys)
    assert (
        code == 0 and err == "" and out.startswith("saved TaskIndex(")
    )  # stderr is not a terminal here
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # now it is
    code, out, err = run_main([*args, "--out", tmp_path / "b"], monkeypatch, capsys)
    assert code == 0 and "building index: 100%" in err  # a progress bar
    for quiet in (["--quiet", *args], [*args, "--quiet"], ["-q", *args]):
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
        code, out, err = run_main([*quiet, "--out", tmp_path / "c", "--overwrite"], monkeypatch, capsys)
        assert code == 0 and err == "", quiet
    from ragim import cli_common

    cli_common.QUIET["on"] = False


def test_progress_only_on_a_terminal(monkeypatch):
    from ragim import cli_common

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert cli_common.show_progress() is True
    assert (
        cli_common.show_progress(quiet=True) is False
        and cli_common.show_progress(as_json=True) is False
    )
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert cli_common.show_progress() is False


def test_skipped_tasks_are_one_short_warning_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "tasks"
    (folder / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        y = (
            np.r_[np.ones(2, int), np.zeros(28, int)]
            if i == 2
            else (rng.random(30) < 0.5).astype(int)
        )  # t2: too few
        ids = [f"w{i}-{j}" for j in range(30)]  # ids, so the only warning is about t2
        pd.DataFrame({"patient_id": ids, "lactate": rng.normal(2, 1, 30), "y": y}).to_csv(
            folder / "data" / f"t{i}.csv", index=False
        )
        rows.append({"task_id": f"t{i}", "description": f"Predict sepsis in ward {i}"})
    pd.DataFrame(rows).to_csv(folder / "descriptions.csv", index=False)
    code, out, err = run_main(
        ["index", "build", "--dataset", folder, "--embedder", "hashing", "--out", tmp_path / "i"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    lines = err.splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("warning: 1 task(s) could not be fitted")
        and "(t2)" in lines[0]
    )
    assert ".py" not in err and "UserWarning" not in err and len(lines[0]) < 200


# ---------------------------------------------------------------------- bad inputs
def _bad_files(root, tmp_path):
    d = root["path"]
    good = pd.read_csv(d / "validate.csv")
    good.drop(columns=["thal"]).to_csv(tmp_path / "no_thal.csv", index=False)
    good.assign(bmi=25.0).to_csv(tmp_path / "extra.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(",".join(good.columns) + "\n")
    good.to_csv(tmp_path / "semi.csv", sep=";", index=False)
    good.to_csv(tmp_path / "tab.csv", sep="\t", index=False)
    good.assign(cad=good["cad"] + 1).to_csv(tmp_path / "bad_outcome.csv", index=False)
    good.assign(chol="high").to_csv(tmp_path / "text.csv", index=False)
    good[good["cad"] == 0].to_csv(tmp_path / "one_class.csv", index=False)


BAD = [
    (
        "missing-outcome-column",
        ["--rows", "{d}/validate.csv", "--outcome", "diagnosis"],
        "has no outcome column 'diagnosis'",
    ),
    (
        "schema-mismatch-missing",
        ["--rows", "{t}/no_thal.csv", "--outcome", "cad"],
        "does not match the model: missing the model's features ['thal']",
    ),
    (
        "schema-mismatch-extra",
        ["--rows", "{t}/extra.csv", "--outcome", "cad"],
        "has columns the model does not use ['bmi']",
    ),
    (
        "empty-csv",
        ["--rows", "{t}/empty.csv", "--outcome", "cad"],
        "empty.csv is empty; it needs a header row",
    ),
    (
        "header-only",
        ["--rows", "{t}/header.csv", "--outcome", "cad"],
        "has a header but no patient rows",
    ),
    (
        "semicolon",
        ["--rows", "{t}/semi.csv", "--outcome", "cad"],
        "was read as one column ('age;sex;cp;",
    ),
    (
        "tab",
        ["--rows", "{t}/tab.csv", "--outcome", "cad"],
        "it looks tab-separated: pass --sep '\\t'",
    ),
    ("no-such-file", ["--rows", "{t}/nope.csv", "--outcome", "cad"], "cannot read --rows"),
    (
        "text-in-numbers",
        ["--rows", "{t}/text.csv", "--outcome", "cad"],
        "column 'chol' (continuous) has non-numeric",
    ),
]
VERBS = {"predict": [], "score": ["--n-boot", "0"], "adapt": ["--save", "{t}/out"]}


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize("args, message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_inputs_are_one_line_and_exit_2(
    root, tmp_path, monkeypatch, capsys, verb, args, message
):
    _bad_files(root, tmp_path)
    d = root["path"]
    full = [verb, d / "m0", *[a.format(d=d, t=tmp_path) for a in [*args, *VERBS[verb]]]]
    code, out, err = run_main(full, monkeypatch, capsys)
    assert code == 2, (out, err)
    assert message in err, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    if "semicolon" in message or "one column" in message:
        assert "it looks semicolon-separated: pass --sep ';'" in err


@pytest.mark.parametrize(
    "verb, args, message",
    [
        (
            "score",
            ["--rows", "{t}/bad_outcome.csv", "--outcome", "cad"],
            "'2']; outcomes must be 0/1 or true/false",
        ),
        (
            "adapt",
            ["--rows", "{t}/one_class.csv", "--outcome", "cad", "--save", "{t}/o"],
            "all have outcome 0; adapting on one outcome would only drag every risk towards it",
        ),
        (
            "adapt",
            ["--rows", "{d}/adapt.csv", "--outcome", "cad", "--save", "{t}/o", "--method", "magic"],
            "--method must be auto, intercept, recalibrate, prior or map",
        ),
        ("score", ["--rows", "{d}/validate.csv"], "Missing option '--outcome'"),
        ("predict", ["--rows", "{d}/validate.csv"], "has columns the model does not use ['cad']"),
        (
            "score",
            ["--rows", "{d}/validate.csv", "--outcome", "cad", "--sep", ";;"],
            "--sep must be one character",
        ),
        (
            "index",
            ["build", "--exclude", "Hungary", "--out", "{t}/i"],
            "--exclude must look like KEY=VALUE",
        ),
        (
            "index",
            ["build", "--exclude", "hospital=Hungary", "--embedder", "hashing", "--out", "{t}/i"],
            "no task has the metadata key 'hospital'",
        ),
        (
            "index",
            ["build", "--exclude", "site=Hungry", "--embedder", "hashing", "--out", "{t}/i"],
            "--exclude site=Hungry matches no task; known values of 'site': "
            "['Cleveland', 'Hungary'",
        ),
        (
            "index",
            ["build", "--outcome", "cad", "--out", "{t}/i"],
            "--outcome, --patient-id, --pos-label, --sep, --na-values and --thousands apply to a task folder",
        ),
    ],
)
def test_more_bad_inputs(root, tmp_path, monkeypatch, capsys, verb, args, message):
    _bad_files(root, tmp_path)
    d = root["path"]
    params = [] if verb == "index" else [d / "m0"]
    code, out, err = run_main(
        [verb, *params, *[a.format(d=d, t=tmp_path) for a in args]], monkeypatch, capsys
    )
    assert code == 2 and message in err and err.count("\n") == 1, (out, err)


def test_a_multi_problem_error_is_one_line(root, tmp_path, monkeypatch, capsys):
    good = pd.read_csv(root["path"] / "validate.csv")
    good.assign(chol="high", trestbps="x").to_csv(tmp_path / "two.csv", index=False)
    code, out, err = run_main(
        ["predict", root["path"] / "m0", "--rows", tmp_path / "two.csv", "--outcome", "cad"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and err.count("\n") == 1
    assert (
        "'trestbps' (continuous) has non-numeric" in err and "; column 'chol' (continuous)" in err
    )


def test_the_console_script_prints_no_library_progress_off_a_terminal(tmp_path):
    """No "Loading weights" bar from the embedder when stderr is not a terminal."""
    import subprocess
    from pathlib import Path

    prebuilt = Path(__file__).resolve().parents[1] / "indices" / "heart-disease"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragim.cli",
            "index",
            "search",
            str(prebuilt),
            "coronary disease in women at a Swiss clinic",
            "-k",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-1000:]
    assert "score" in proc.stdout and "task_id" in proc.stdout


def test_outcome_and_patient_id_options_name_a_task_folders_columns(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "tasks"
    (folder / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        pd.DataFrame(
            {
                "lactate": rng.normal(2, 1, 40),
                "dead": (rng.random(40) < 0.4).astype(int),
                "mrn": np.arange(40) + 100 * i,
            }
        ).to_csv(folder / "data" / f"t{i}.csv", index=False)
    pd.DataFrame(
        {"task_id": ["t0", "t1", "t2"], "description": ["sepsis a", "sepsis b", "sepsis c"]}
    ).to_csv(folder / "descriptions.csv", index=False)
    code, out, err = run_main(
        ["index", "build", "--dataset", folder, "--embedder", "hashing", "--out", tmp_path / "x"],
        monkeypatch,
        capsys,
    )
    assert code == 2 and "has no outcome column 'y'" in err
    out = _json(
        "index",
        "build",
        "--dataset",
        folder,
        "--outcome",
        "dead",
        "--patient-id",
        "mrn",
        "--embedder",
        "hashing",
        "--out",
        tmp_path / "i",
    )
    assert out["n_tasks"] == 3
    index = TaskIndex.load(tmp_path / "i")
    # patient ids are kept as canonical id strings (ragim.tasks.canonical_metadata)
    assert index.schema.names == ["lactate"] and index.tasks["t1"].metadata["patient_ids"][:2] == [
        "100",
        "101",
    ]


def test_json_output_carries_the_warnings_printed_on_stderr(tmp_path, monkeypatch, capsys):
    """A script that reads --json sees what a person reads on stderr: the library's Python
    warnings (here: a description far outside the index) and the CLI's own warning lines."""
    folder = tmp_path / "tasks"
    (folder / "data").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(6):
        n = 4 if i == 5 else 40  # t5: too few rows to fit
        ids = [f"w{i}-{j}" for j in range(n)]
        pd.DataFrame({"patient_id": ids, "lactate": rng.normal(2, 1, n), "y": np.arange(n) % 2}).to_csv(
            folder / "data" / f"t{i}.csv", index=False
        )
        rows.append({"task_id": f"t{i}", "description": f"Predict sepsis in surgical ward {i}"})
    pd.DataFrame(rows).to_csv(folder / "descriptions.csv", index=False)
    build = ["index", "build", "--dataset", folder, "--embedder", "hashing", "--out", tmp_path / "i"]
    code, out, err = run_main([*build, "--json"], monkeypatch, capsys)
    assert code == 0, err
    shown = [line.removeprefix("warning: ") for line in err.splitlines()]
    summary = json.loads(out)
    assert summary["warnings"] == shown and shown[0].startswith("1 task(s) could not be fitted")

    query = "Wie hoch ist das Risiko einer Hüftfraktur bei älteren Frauen?"
    code, out, err = run_main(["generate", "--index", tmp_path / "i", query, "--json"], monkeypatch, capsys)
    assert code == 0, err
    shown = [line.removeprefix("warning: ") for line in err.splitlines()]
    assert any("is outside what the index covers" in line for line in shown), err
    assert json.loads(out)["metadata"]["warnings"] == shown

    code, out, err = run_main([*build, "--json", "--overwrite"], monkeypatch, capsys)  # starts clean
    assert json.loads(out)["warnings"] == [line.removeprefix("warning: ") for line in err.splitlines()]
    assert len(err.splitlines()) == 1


def test_na_values_declares_missing_codes_in_every_data_file(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "tasks"
    (folder / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        cr = rng.lognormal(0, 0.3, 60).round(2).astype(object)
        cr[::5], cr[1::7] = -99, "."  # two missing-value codes
        pd.DataFrame({"patient_id": [f"w{i}-{j}" for j in range(60)], "creatinine": cr,
                      "y": (rng.random(60) < 0.5).astype(int)}).to_csv(folder / "data" / f"t{i}.csv", index=False)
        rows.append({"task_id": f"t{i}", "description": f"Predict dialysis in ward {i}"})
    pd.DataFrame(rows).to_csv(folder / "descriptions.csv", index=False)
    build = ["index", "build", "--dataset", folder, "--embedder", "hashing"]
    for i, given in enumerate((["--na-values", ".,-99"], ["--na-values", ".", "--na-values", " -99"])):
        code, out, err = run_main([*build, *given, "--out", tmp_path / f"i{i}"], monkeypatch, capsys)
        assert code == 0 and err == "", err
        names = TaskIndex.load(tmp_path / f"i{i}").params("t0").names
        assert names == ["intercept", "creatinine", "creatinine__missing"]
    code, out, err = run_main([*build, "--na-values", ".", "--out", tmp_path / "i2"], monkeypatch, capsys)
    assert code == 0 and re.search(r"'creatinine' holds -99 in 30 row\(s\).*--na-values -99", err)
    assert "--na-values" in _ok("index", "build", "--help")
    result = runner.invoke(app, ["index", "build", "--dataset", "synthetic", "--na-values", "-99"])
    assert result.exit_code == 2 and "--na-values and --thousands apply to a task folder" in result.output


def test_saved_artifacts_are_not_replaced_without_overwrite(tmp_path, monkeypatch, capsys):
    """index build --out and adapt --save wrote over what was saved there without a word (the
    default --out of index build is the committed demo index); they refuse, one line, before
    any fitting, and --overwrite replaces."""
    build = ["index", "build", "--dataset", "synthetic", "--n-tasks", "10", "--embedder", "hashing",
             "--out", tmp_path / "i", "-q"]
    assert run_main(build, monkeypatch, capsys)[0] == 0
    before = (tmp_path / "i" / "config.json").read_bytes()
    code, _, err = run_main([*build[:-3], "--n-tasks", "12", *build[-3:]], monkeypatch, capsys)
    assert code == 2 and f"--out {tmp_path / 'i'} already exists" in err and "--overwrite" in err
    assert (tmp_path / "i" / "config.json").read_bytes() == before
    assert run_main([*build, "--n-tasks", "12", "--overwrite"], monkeypatch, capsys)[0] == 0
    assert len(TaskIndex.load(tmp_path / "i")) == 12
    for cmd in (["train", "attention", "--index", tmp_path / "i", "--out", tmp_path / "i"],
                ["train", "sft", "--index", tmp_path / "i", "--out", tmp_path / "i"]):
        code, _, err = run_main(cmd, monkeypatch, capsys)
        assert code == 2 and "already exists" in err, cmd


def test_an_operating_system_error_is_one_line_and_json(tmp_path, monkeypatch, capsys):
    """A path that cannot be written (here under a file) ended in a traceback, and with --json
    gave no JSON; it is one line naming the path, exit code 2, and a JSON error object."""
    index = Path(__file__).resolve().parents[1] / "indices" / "heart-disease"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["generate", "coronary artery disease in Cleveland men", "--index", index,
            "--save", blocker / "model", "--json"]
    code, out, err = run_main(args, monkeypatch, capsys)
    assert code == 2
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ")
    assert str(blocker) in err.strip().splitlines()[-1]
    assert "error" in json.loads(out) and str(blocker) in json.loads(out)["error"]


def test_an_out_path_that_exists_or_cannot_be_written_is_refused_before_reading_the_data(
    tmp_path, monkeypatch, capsys
):
    """The README: --out/--save refuse an existing path "before any work". index build read
    the whole task folder first (a data error came before the refusal), and an --out under a
    regular file failed only after every task was fitted and embedded ("File exists")."""
    folder = tmp_path / "tasks"
    (folder / "data").mkdir(parents=True)
    rows = []
    for i in range(2):
        y = ["."] + [0, 1] * 20  # a data error: an outcome that is neither class
        pd.DataFrame({"age": np.arange(41.0), "y": y}).to_csv(folder / "data" / f"t{i}.csv", index=False)
        rows.append({"task_id": f"t{i}", "description": f"Predict death in ward {i}"})
    pd.DataFrame(rows).to_csv(folder / "descriptions.csv", index=False)
    (tmp_path / "exists").mkdir()
    (tmp_path / "afile").write_text("")
    build = ["index", "build", "--dataset", folder, "--embedder", "hashing"]
    code, _, err = run_main([*build, "--out", tmp_path / "exists"], monkeypatch, capsys)
    assert code == 2 and f"--out {tmp_path / 'exists'} already exists" in err and "'y'" not in err
    for args in ([*build, "--out", tmp_path / "afile" / "idx"],
                 [*build, "--out", tmp_path / "afile" / "deeper" / "idx", "--overwrite"],
                 ["generate", "Predict death", "--index", tmp_path / "no-index", "--save", tmp_path / "afile" / "m"]):
        code, _, err = run_main(args, monkeypatch, capsys)
        assert code == 2 and re.search(r"cannot write --(out|save) ", err), err
        assert f"{tmp_path / 'afile'} is a file, not a folder" in err and len(err.strip().splitlines()) <= 2
    # the checks of the options themselves still come first
    code, _, err = run_main([*build[:3], "synthetic", "--na-values", "-99", "--out", tmp_path / "exists"],
                            monkeypatch, capsys)
    assert code == 2 and "--na-values and --thousands apply to a task folder" in err


def test_every_written_file_is_refused_over_an_existing_one_or_inside_an_artifact(
    root, tmp_path, monkeypatch, capsys
):
    """`train reward --save-pairs FILE` wrote over any file without --overwrite, even the
    records.jsonl of a saved index, which then no longer loaded. Every file a command writes
    (--save-pairs, --out, --png, --csv) is refused over an existing one before any work, and
    nothing is written inside a saved artifact, with --overwrite or without."""
    d = root["path"]
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    records = d / "idx" / "records.jsonl"
    kept = records.read_bytes()
    no_gen = tmp_path / "no-generator"  # the refusal comes before the generator is read
    reward = ["train", "reward", "--generator", no_gen, "--index", d / "idx", "--out", tmp_path / "rm"]
    rows = ["--rows", d / "validate.csv", "--outcome", "cad"]
    for args, option in (
        ([*reward, "--save-pairs", notes], "--save-pairs"),
        (["predict", d / "m0", *rows, "--out", notes], "--out"),
        (["score", d / "m0", *rows, "--png", notes], "--png"),
        (["export", d / "m0", "--csv", notes], "--csv"),
        (["explain", d / "m0", "--png", notes], "--png"),
        (["demo", "--out", tmp_path], "--out"),
    ):
        code, _, err = run_main(args, monkeypatch, capsys)
        assert code == 2 and "already exists" in err and "--overwrite" in err, (args, err)
        assert f"{option} " in err and len(err.strip().splitlines()) == 1, err
    assert notes.read_text() == "my notes"
    for args in ([*reward, "--save-pairs", records, "--overwrite"],
                 ["export", d / "m0", "--csv", d / "idx" / "c.csv", "--overwrite"],
                 ["predict", d / "m0", *rows, "--out", d / "m0" / "sub" / "r.csv"]):
        code, _, err = run_main(args, monkeypatch, capsys)
        assert code == 2 and f"inside the saved ragim artifact {d / 'idx'}" in err.replace(
            str(d / "m0"), str(d / "idx")), err
    assert records.read_bytes() == kept and not (d / "idx" / "c.csv").exists()
    assert len(TaskIndex.load(d / "idx")) > 0
    out = _json("export", d / "m0", "--csv", notes, "--overwrite")
    assert out["path"] == str(notes) and notes.read_text() != "my notes"


def test_score_and_adapt_warn_about_rows_that_are_copies_without_patient_ids(root):
    """6 patients each written 20 times, in a file without a patient-id column: ``score`` and
    ``adapt`` say that 114 of the 120 rows repeat another (one warning each), and use every row;
    with distinct patient ids the user vouches for the rows, and nothing is said."""
    d = root["path"]
    hungary = root["local"]
    y = np.asarray(hungary.y)
    pick = np.concatenate([np.flatnonzero(y == 1)[:3], np.flatnonzero(y == 0)[:3]])
    six = hungary.X.iloc[pick].assign(cad=y[pick])
    copies = pd.concat([six] * 20, ignore_index=True)
    copies.to_csv(d / "copies.csv", index=False)
    scored = _json("score", d / "m0", "--rows", d / "copies.csv", "--outcome", "cad", "--n-boot", 50)
    repeat = [w for w in scored["warnings"] if "repeat another row exactly" in w]
    assert scored["n"] == 120 and len(repeat) == 1
    assert "114 of 120 rows" in repeat[0] and "--patient-id" in repeat[0]
    adapted = _json(
        "adapt", d / "m0", "--rows", d / "copies.csv", "--outcome", "cad", "--save", d / "m-copies"
    )
    repeat = [w for w in adapted["warnings"] if "repeat another row exactly" in w]
    assert adapted["n_rows"] == 120 and len(repeat) == 1 and "114 of 120 rows" in repeat[0]
    copies.assign(patient_id=[f"p{i}" for i in range(120)]).to_csv(d / "ids.csv", index=False)
    vouched = _json("score", d / "m0", "--rows", d / "ids.csv", "--outcome", "cad", "--n-boot", 50)
    assert not any("repeat another row" in w for w in vouched["warnings"])
