"""The launch commands of docs/scaling.md run the training CLI (one CPU process here; more
processes or GPUs are the same command with other counts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragim import TaskIndex, datasets
from ragim.generate.lm import LMGenerator

BIN = Path(sys.executable).parent
TRAIN = ["-m", "ragim.cli", "train", "sft", "--base-model", "tiny", "--max-steps", "2", "--batch-size", "2", "--json"]
LAUNCHERS = {
    "accelerate": [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"],
    "torchrun": [str(BIN / "torchrun"), "--nproc_per_node", "1"],
}


@pytest.fixture(scope="module")
def index_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("launch") / "index"
    TaskIndex.build(datasets.synthetic_family(n_tasks=8, n_features=2, seed=0), embedder="hashing",
                    progress=False).save(path)
    return path


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_training_cli_runs_under_the_launcher(launcher, index_path, tmp_path):
    if not Path(LAUNCHERS[launcher][0]).exists():
        pytest.skip(f"{launcher} is not installed next to {sys.executable}")
    out = tmp_path / "sft"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([*LAUNCHERS[launcher], *TRAIN, "--index", str(index_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["stage"] == "sft" and summary["train_loss"] is not None
    assert LMGenerator.load(out).fine_tuned_
