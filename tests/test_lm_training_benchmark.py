"""The LM training benchmark's run directory (benchmarks/lm_training.py): finished stages are
reused on --resume, and a run directory is never resumed with other settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("lm_training")


def test_resume_reuses_stages_and_refuses_other_settings(bench, tmp_path):
    run = ["--run-dir", str(tmp_path / "run"), "--sft-targets", "posterior"]
    first = bench.Stages(bench.parse_args(run))
    calls = []
    assert first.run("pairs.json", lambda: calls.append(1) or [1, 2], save=bench.save_json, load=bench.load_json) == [1, 2]
    again = bench.Stages(bench.parse_args([*run, "--resume", "--threads", "2", "--stages", "grpo"]))
    assert again.run("pairs.json", lambda: calls.append(1) or [3], save=bench.save_json, load=bench.load_json) == [1, 2]
    assert calls == [1] and "pairs.json" in again.timings
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["sft_targets"] == "posterior"
    with pytest.raises(SystemExit, match=r"sft_lr=0\.01 \(now 0\.5\).*sft_targets='posterior' \(now 'fit'\)"):
        bench.Stages(bench.parse_args(["--run-dir", str(tmp_path / "run"), "--resume", "--sft-lr", "0.5"]))


def test_sft_targets_benchmark_runs_on_a_small_family(tmp_path):
    out = load_benchmark("sft_targets").main(["--n-tasks", "14", "--n-heldout", "4", "--json-out", str(tmp_path / "t.json")])
    mse = out["mean_squared_error"]
    assert out["n_train_tasks"] == 10 and len(mse) == 5
    assert all(v["true"] >= 0 and v["oracle"] >= 0 for v in mse.values())
    assert json.loads((tmp_path / "t.json").read_text())["mean_squared_error"] == mse


def test_heart_folds_leave_out_every_task_sharing_patients_with_a_held_out_one(bench):
    train, held, what = bench.split_tasks(bench.parse_args(["--family", "heart-task", "--n-folds", "4"]))
    shared = {o for t in held for o in train.overlapping(t)}
    assert len(held) == 7 and len(train) >= 4 and not shared
    assert not {t.task_id for t in held} & set(train.ids)
    assert f"so {len(train)} tasks train" in what
    with pytest.raises(SystemExit, match="training tasks share no patient"):
        bench.split_tasks(bench.parse_args(["--family", "heart-task", "--n-folds", "2", "--fold", "1"]))


def test_heart_site_folds_hold_out_each_site_once_and_train_on_the_others(bench):
    """Leave-site-out: fold K holds out every task of the K-th site (name order); sites share no
    patients, so nothing else leaves training, and the 4 folds hold out all 28 tasks once."""
    held_ids = []
    for fold in range(4):
        train, held, what = bench.split_tasks(bench.parse_args(["--family", "heart-site", "--fold", str(fold)]))
        (site,) = {t.metadata["site"] for t in held}
        assert site == sorted({t.metadata["site"] for t in [*held, *train]})[fold]
        assert all(t.metadata["site"] != site for t in train) and len(train) + len(held) == 28
        assert not {o for t in held for o in train.overlapping(t)} and "leave-site-out" in what
        held_ids += [t.task_id for t in held]
    assert len(held_ids) == len(set(held_ids)) == 28
    with pytest.raises(SystemExit, match=r"--fold must be in \[0, 4\)"):
        bench.split_tasks(bench.parse_args(["--family", "heart-site", "--fold", "4"]))
    with pytest.raises(SystemExit, match="one per site"):
        bench.split_tasks(bench.parse_args(["--family", "heart-site", "--n-folds", "3"]))


def test_plan_shows_which_heart_folds_leave_sft_too_few_tasks(bench, capsys):
    """``--plan`` prints the split without loading a model: leave-task-out fold 1 leaves SFT 2
    training tasks whose prompts may show 1 task (the statistical prior needs 2); every
    leave-site-out fold leaves at least 9, each prompt showing at least 4."""
    bench.main(["--family", "heart-task", "--n-folds", "4", "--fold", "1", "--plan"])
    task = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert task["sft_val"] == ["switzerland-any_cad-all"]
    assert (task["sft_train"], task["fewest_tasks_a_prompt_may_show"]) == (2, 1)
    # without SFT validation tasks nothing is hidden: every prompt may show the other 6 less
    # the tasks sharing the target's patients
    bench.main(["--family", "heart-task", "--n-folds", "4", "--fold", "1", "--plan", "--sft-val-fraction", "0"])
    task = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (task["sft_val"], task["sft_train"], task["fewest_tasks_a_prompt_may_show"]) == ([], 7, 2)
    proc = subprocess.run([sys.executable, str(Path(bench.__file__)), "--family", "heart-site", "--plan",
                           "--sft-val-fraction", "1.5"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: val_fraction must be a number in [0, 1), got 1.5"
    for fold in range(4):
        bench.main(["--family", "heart-site", "--fold", str(fold), "--plan"])
        site = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert site["sft_train"] >= 9 and site["fewest_tasks_a_prompt_may_show"] >= 4
        assert site["index_tasks"] == site["sft_train"] + len(site["sft_val"]) + site["left_out"]


def test_plan_touches_no_run_directory_and_old_run_directories_still_resume(bench, tmp_path, capsys):
    """``plan`` was compared on resume, so every run directory kept before it existed was
    refused (plan=None, now False), and ``--plan --run-dir`` rewrote the run's settings."""
    run = tmp_path / "run"
    bench.Stages(bench.parse_args(["--run-dir", str(run)]))
    kept = json.loads((run / "settings.json").read_text())
    assert "plan" not in kept
    (run / "settings.json").write_text(json.dumps({**kept, "plan": True, "threads": 7}))  # volatile keys kept
    bench.Stages(bench.parse_args(["--run-dir", str(run), "--resume"]))
    before = (run / "settings.json").read_text()
    bench.main(["--family", "heart-task", "--n-folds", "4", "--plan", "--run-dir", str(run / "other")])
    capsys.readouterr()
    assert not (run / "other").exists() and (run / "settings.json").read_text() == before


def test_prior_density_reference_prefers_the_answer_nearer_the_prior(bench):
    from ragim import TaskIndex, datasets
    from ragim.generate.lm import LMGenerator
    from ragim.lm.prompts import answer_text

    tasks = datasets.synthetic_family(n_tasks=12, n_features=2, seed=1)
    index = TaskIndex.build(tasks.take(range(9)), embedder="hashing", keep_tasks=True, progress=False)
    gen = LMGenerator(base_model="tiny", k=2, device="cpu", statistical_prior=True, answer_format="compact")
    held = [tasks[i] for i in range(9, 12)]
    pairs = []
    for t in held:
        [prior] = gen.statistical_priors([t.description], index, [None])
        near, far = prior.replace(vector=prior.vector + 0.1), prior.replace(vector=prior.vector - 3.0)
        # heldout_pairs writes JSON; the generator's compact format is read as well
        text = [answer_text(near, gen.config.decimals), gen.answer_format(prior.names).write(far.as_dict())]
        pairs.append({"task_id": t.task_id, "chosen": [{"role": "assistant", "content": text[0]}],
                      "rejected": [{"role": "assistant", "content": text[1]}]})
    assert bench.prior_density_accuracy(gen, index, held, pairs) == 1.0
    swapped = [{**p, "chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    assert bench.prior_density_accuracy(gen, index, held, swapped) == 0.0


def test_residual_needs_the_statistical_prior_and_old_run_directories_resume(bench, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--residual"])
    assert "--residual needs --statistical-prior" in capsys.readouterr().err
    args = bench.parse_args(["--residual", "--statistical-prior"])
    assert args.residual and args.statistical_prior
    run = tmp_path / "run"
    bench.Stages(bench.parse_args(["--run-dir", str(run)]))
    kept = json.loads((run / "settings.json").read_text())
    assert kept["residual"] is False
    del kept["residual"]  # a run directory kept before --residual existed
    (run / "settings.json").write_text(json.dumps(kept))
    bench.Stages(bench.parse_args(["--run-dir", str(run), "--resume"]))
    with pytest.raises(SystemExit, match=r"residual=False \(now True\)"):
        bench.Stages(bench.parse_args(["--run-dir", str(run), "--resume", "--residual", "--statistical-prior"]))


def test_residual_held_out_pairs_keep_the_prior_and_old_run_directories_read_whole_models(bench, tmp_path):
    """Held-out pairs of a residual generator keep the prior its prompt shows (the reward model
    reads each answer minus it); a run directory kept before --rm-reads resumes as 'model', and
    without --residual there is no prior to read a change from."""
    from ragim import TaskIndex, datasets
    from ragim.generate.lm import LMGenerator
    from ragim.lm.answer import answer_values

    tasks = datasets.synthetic_family(n_tasks=10, n_features=2, seed=1)
    index = TaskIndex.build(tasks.take(range(8)), embedder="hashing", keep_tasks=True, progress=False)
    gen = LMGenerator(base_model="tiny", k=2, device="cpu", statistical_prior=True, residual=True)
    held = [tasks[8], tasks[9]]
    pairs = bench.heldout_pairs(gen, index, held, n=3, temperature=1.5, min_margin=0.0)
    assert pairs
    for p in pairs:
        [prior] = gen.statistical_priors([tasks[p["task_id"]].description], index, [None])
        assert list(answer_values(p["prior"]).values()) == list(prior.as_dict().values())
    assert bench.parse_args([]).rm_reads == "model"
    assert bench.parse_args(["--residual", "--statistical-prior"]).rm_reads == "change"
    run = tmp_path / "run"
    bench.Stages(bench.parse_args(["--run-dir", str(run), "--residual", "--statistical-prior"]))
    kept = json.loads((run / "settings.json").read_text())
    del kept["rm_reads"]  # a residual run directory kept before --rm-reads existed
    (run / "settings.json").write_text(json.dumps(kept))
    with pytest.raises(SystemExit, match=r"rm_reads='model' \(now 'change'\)"):
        bench.Stages(bench.parse_args(["--run-dir", str(run), "--resume", "--residual", "--statistical-prior"]))
    bench.Stages(bench.parse_args(["--run-dir", str(run), "--resume", "--residual", "--statistical-prior",
                                   "--rm-reads", "model"]))


def test_two_reward_models_compare_pair_by_pair_over_tasks(tmp_path):
    """compare_reward_models reads two lm_training JSONs of the same held-out pairs: the accuracy
    difference, and best-of-n's paired log-loss difference; runs of other pairs are refused."""
    cmp = load_benchmark("compare_reward_models")
    pairs = lambda right: [{"task_id": t, "chosen_score": 1.0 if r else -1.0, "rejected_score": 0.0}  # noqa: E731
                           for t, r in zip(["a", "a", "b", "c"], right, strict=True)]
    per = lambda losses: {"SFT + best-of-8 (reward model)": [{"log_loss": v} for v in losses]}  # noqa: E731
    first, second, other = tmp_path / "1.json", tmp_path / "2.json", tmp_path / "3.json"
    first.write_text(json.dumps({"rm_heldout_pair_scores": pairs([1, 1, 1, 0]), "per_task": per([0.5, 0.6])}))
    second.write_text(json.dumps({"rm_heldout_pair_scores": pairs([0, 1, 0, 0]), "per_task": per([0.6, 0.6])}))
    out = cmp.main([str(first), str(second), "--boot", "200"])
    assert out["accuracy_first"] == 0.75 and out["accuracy_second"] == 0.25 and out["n_tasks"] == 3
    assert out["accuracy_difference"] == 0.5 and out["accuracy_difference_ci"][1] <= 1.0
    best = out["SFT + best-of-8 (reward model)"]
    assert best["log_loss_difference"] == pytest.approx(-0.05) and best["first_lower"] == 1
    other.write_text(json.dumps({"rm_heldout_pair_scores": pairs([1, 1, 1, 0])[:3], "per_task": per([0.5, 0.6])}))
    with pytest.raises(SystemExit, match="did not score the same held-out pairs"):
        cmp.main([str(first), str(other)])


def test_also_bfloat16_scores_a_bfloat16_copy_paired_with_float32(bench, tmp_path):
    out = tmp_path / "r.json"
    bench.main(["--base-model", "tiny", "--n-tasks", "10", "--n-heldout", "3", "--k", "2", "--sft-steps", "1",
                "--stages", "sft", "--samples", "0", "--statistical-prior", "--answer-format", "compact",
                "--also-bfloat16", "--out", str(tmp_path / "r.md"), "--json-out", str(out)])
    res = json.loads(out.read_text())
    assert {"SFT (greedy)", "SFT (greedy), bfloat16 weights"} <= set(res["per_task"])
    pairs = {(c["method"], c["baseline"]) for c in res["comparisons"]}
    assert ("SFT (greedy), bfloat16 weights", "SFT (greedy)") in pairs
    assert ("SFT (greedy), bfloat16 weights, correction validated", "SFT (greedy), correction validated") in pairs
    # the baselines a reviewer asks for are scored on the same rows, and each LM method is paired with them
    assert set(bench.BASELINES) <= set(res["per_task"])
    for b in bench.BASELINES:
        assert [r["task_id"] for r in res["per_task"][b]] == [r["task_id"] for r in res["per_task"]["SFT (greedy)"]]
        assert ("SFT (greedy)", b) in pairs and ("SFT (greedy), correction validated", b) in pairs
        assert (b, "statistical prior (in the prompt)") not in pairs
    assert not any(bench.BF16 in m and b in bench.BASELINES for m, b in pairs)


def test_folds_pool_into_one_paired_comparison_and_other_runs_are_refused(tmp_path):
    """lm_training_folds pools the folds' held-out tasks and recomputes each fold's comparison
    over all of them; folds of other settings, a fold twice or a task in two folds are refused."""
    folds = load_benchmark("lm_training_folds")

    def fold(f, tasks, lm, base, **settings):
        per = {"SFT (greedy)": [{"task_id": t, "log_loss": v, "auroc": 0.7} for t, v in zip(tasks, lm, strict=True)],
               "pooled (training rows)": [{"task_id": t, "log_loss": v, "auroc": 0.6}
                                          for t, v in zip(tasks, base, strict=True)]}
        p = tmp_path / f"f{f}-{len(list(tmp_path.iterdir()))}.json"
        p.write_text(json.dumps({"settings": {"fold": f, "sft_steps": 300, "run_dir": f"r{f}", **settings},
                                 "per_task": per,
                                 "comparisons": [{"method": "SFT (greedy)", "baseline": "pooled (training rows)"}]}))
        return str(p)

    a = fold(0, ["t1", "t2"], [0.5, 0.4], [0.6, 0.6])
    b = fold(1, ["t3", "t4", "t5"], [0.5, 0.7, 0.3], [0.5, 0.6, 0.5])
    out = folds.main([a, b, "--out", str(tmp_path / "pooled.md"), "--json-out", str(tmp_path / "pooled.json")])
    assert out["folds"] == [0, 1] and out["n_tasks"] == 5
    ll = next(c for c in out["comparisons"] if c["metric"] == "log_loss")
    assert (ll["method"], ll["baseline"], ll["n_tasks"]) == ("SFT (greedy)", "pooled (training rows)", 5)
    assert ll["mean_diff"] == pytest.approx(np.mean([-0.1, -0.2, 0.0, 0.1, -0.2]))
    assert (ll["wins"], ll["losses"]) == (3, 1)
    assert "5 held-out tasks" in (tmp_path / "pooled.md").read_text()
    assert json.loads((tmp_path / "pooled.json").read_text())["n_tasks"] == 5
    with pytest.raises(SystemExit, match="other settings.*sft_steps=100"):
        folds.main([a, fold(2, ["t6"], [0.5], [0.5], sft_steps=100)])
    with pytest.raises(SystemExit, match="same fold is given twice"):
        folds.main([a, fold(0, ["t7"], [0.5], [0.5])])
    with pytest.raises(SystemExit, match="task 't1' is held out in"):
        folds.main([a, fold(3, ["t1"], [0.5], [0.5])])
    bad = tmp_path / "bad.json"
    for text, message in [('{"results": {}}', "not a benchmarks/lm_training.py --json-out file"),
                          ("3", "not a benchmarks/lm_training.py --json-out file"),
                          ('{"settings": null, "per_task": {}}', "not a benchmarks/lm_training.py --json-out file"),
                          ('{"settings": {"fold": "1"}, "per_task": {}}', "settings.fold is '1'"),
                          ('{"settings": {"fold": 1, "n_folds": null}, "per_task": {}}', "not one fold"),
                          ('{"settings": {"fold": 1}, "per_task": {}}', "scores no method"),
                          ('{"settings": {"fold": 1}, "per_task": {"m": [{"task_id": "x"}]}}', "rows of 'm'"),
                          ('{"settings": {"fold": 1}, "per_task": {"m": [{"task_id": "x", "log_loss": 1},'
                           ' {"task_id": "x", "log_loss": 1}]}}', "'m' scores a task twice: \\['x'\\]"),
                          ('{"settings": {"fold": 1}, "per_task": {"m": [{"task_id": "x", "log_loss": 1}],'
                           ' "n": [{"task_id": "y", "log_loss": 1}]}}', "'n' is scored on other tasks than 'm'"),
                          ('{"settings": {"fold": 1}, "per_task": {"m": [{"task_id": "x", "log_loss": 1}]},'
                           ' "comparisons": [{"method": "m"}]}', "comparisons must be"),
                          ("{", "cannot read")]:
        bad.write_text(text)
        with pytest.raises(SystemExit, match=message):
            folds.main([a, str(bad)])


def test_folds_of_a_real_run_pool_with_nan_metrics_and_options_added_later(bench, tmp_path):
    """Two folds written by lm_training.py itself (the tiny model; NaN where a metric has no value) pool; a
    fold kept before an option was added counts as run with its default (lm_training.ADDED)."""
    folds = load_benchmark("lm_training_folds")
    outs = []
    for f in (0, 1):
        outs.append(tmp_path / f"f{f}.json")
        bench.main(["--base-model", "tiny", "--n-tasks", "12", "--n-folds", "4", "--fold", str(f), "--k", "2",
                    "--sft-steps", "1", "--stages", "sft", "--samples", str(1 - f), "--out", str(tmp_path / f"f{f}.md"),
                    "--json-out", str(outs[-1])])
    first = json.loads(outs[0].read_text())
    assert "NaN" in outs[0].read_text()  # no reward model in this run: its accuracy is written as NaN
    # LM samples are drawn for the LM's rows only, not for the baselines (a baseline has no samples)
    assert "sample_reward" in first["results"]["SFT (greedy)"]
    assert not any("sample_reward" in first["results"][b] for b in bench.BASELINES)
    assert "| – | – |" in (tmp_path / "f0.md").read_text()
    old = json.loads(outs[1].read_text())
    for k in bench.ADDED:
        del old["settings"][k]
    outs[1].write_text(json.dumps(old))
    out = folds.main([str(p) for p in outs])
    assert out["folds"] == [0, 1] and out["n_tasks"] == 6
    assert {("SFT (greedy)", b) for b in bench.BASELINES} <= {(c["method"], c["baseline"]) for c in out["comparisons"]}


def test_a_grpo_checkpoint_is_scored_as_the_run_scores_its_last_step(bench, tmp_path):
    """lm_checkpoint_score applies a GRPO checkpoint's LoRA weights to the run's SFT generator: the last
    checkpoint's greedy answers score exactly as the run's own SFT + GRPO row, an earlier one differently
    from SFT; a missing checkpoint or run directory is refused in one line."""
    ck = load_benchmark("lm_checkpoint_score")
    run = tmp_path / "run"
    bench.main(["--base-model", "tiny", "--n-tasks", "10", "--n-heldout", "3", "--k", "2", "--sft-steps", "2",
                "--stages", "grpo", "--grpo-steps", "2", "--grpo-lr", "5e-2", "--save-steps", "1", "--samples", "0",
                "--run-dir", str(run), "--out", str(tmp_path / "r.md")])
    last = ck.main(["--run-dir", str(run), "--checkpoint", "2"])
    assert last["changed_tensors"] > 0  # the GRPO adapter is not the SFT one
    ours = [r["log_loss"] for r in last["per_task"]["SFT + GRPO, checkpoint 2"]]
    assert ours == [r["log_loss"] for r in last["per_task"]["sft grpo"]]
    assert {"sft greedy", "pooled training rows", "neighbour mean k 10"} <= set(last["per_task"])
    assert any(c["baseline"] == "pooled training rows" for c in last["comparisons"])
    with pytest.raises(SystemExit, match=r"checkpoint-7 does not exist; the run has GRPO checkpoints \[1, 2\]"):
        ck.main(["--run-dir", str(run), "--checkpoint", "7"])
    with pytest.raises(SystemExit, match="not an lm_training.py run directory"):
        ck.main(["--run-dir", str(tmp_path), "--checkpoint", "1"])
