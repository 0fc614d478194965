"""The prepared GPU check runs its plumbing on the CPU (``scripts/gpu_check.sh --cpu``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_mode_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["name"] == "gpu-check" and r["mode"] == "cpu" and r["device"] == "cpu"
    assert r["pytest_gpu"] == {"skipped": "cpu mode"}
    lm = r["lm"]
    assert lm["base_model"] == "tiny" and lm["dtype"] == "float32"
    for key in ("sft_step_seconds", "grpo_step_seconds", "generate_seconds"):
        assert lm[key] > 0
    expected = lm["batch"] * lm["seq_len"] / lm["sft_step_seconds"]  # seconds rounded to 0.1 ms
    assert lm["sft_tokens_per_s"] == pytest.approx(expected, rel=0.05)
    # answers sampled in GRPO and decoded in the batch always parse under the grammar
    assert lm["grpo_parse_rate"] == 1.0 and lm["generate_parse_rate"] == 1.0
    assert r["batched_logistic"]["n_tasks"] == 64 and r["batched_logistic"]["ok_fraction"] == 1.0
    # an exact index finds each query's own (slightly perturbed) vector first
    assert r["faiss"]["on_gpu"] is False and r["faiss"]["self_hit_rate"] == 1.0
