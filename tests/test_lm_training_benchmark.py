"""The LM training benchmark's run directory (benchmarks/lm_training.py): finished stages are
reused on --resume, and a run directory is never resumed with other settings."""

from __future__ import annotations

import json

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
