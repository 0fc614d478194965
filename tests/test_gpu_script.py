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
    assert lm["weights"] == "pretrained" and lm["n_layers"] == 2
    for key in ("sft_step_seconds", "grpo_step_seconds"):
        assert lm[key] > 0
    expected = lm["batch"] * lm["seq_len"] / lm["sft_step_seconds"]  # seconds rounded to 0.1 ms
    assert lm["sft_tokens_per_s"] == pytest.approx(expected, rel=0.05)
    assert [(g["n_params"], g["batch"]) for g in lm["generate"]] == [(5, 1), (5, 2)]
    d = lm["decode_per_token_batch_1"]
    assert d["answer_tokens"] > 0 and d["constrained_ms_per_token"] > 0 and d["plain_generate_ms_per_token"] > 0
    assert d["plain_generate_static_cache_ms_per_token"] > 0
    for g in lm["generate"]:
        assert g["seconds"] > 0 and g["tasks_per_s"] == pytest.approx(g["batch"] / g["seconds"], rel=0.01)
        assert g["tokens_per_s"] == pytest.approx(g["answer_tokens_mean"] * g["tasks_per_s"], rel=0.02)
    # answers sampled in GRPO and decoded in the batch always parse under the grammar
    assert lm["grpo_parse_rate"] == 1.0 and lm["generate_parse_rate"] == 1.0
    assert r["batched_logistic"]["n_tasks"] == 64 and r["batched_logistic"]["ok_fraction"] == 1.0
    # an exact index finds each query's own (slightly perturbed) vector first
    assert r["faiss"]["on_gpu"] is False and r["faiss"]["self_hit_rate"] == 1.0


def test_gpu_check_runs_only_the_gpu_marked_test_files():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    files = gpu_check.gpu_test_files(ROOT)
    assert "tests/test_gpu.py" in files and "tests/test_index.py" in files
    assert "tests/lm/test_sft.py" not in files


def test_gpu_check_times_an_architecture_with_random_weights(tmp_path):
    """``--export-architecture`` writes config and tokenizer only; ``--architecture`` times that
    architecture with seeded random weights and says so."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "scripts" / "gpu_check.sh")
    arch = tmp_path / "arch"
    from ragim.lm.base_models import load_base_model

    model, tok = load_base_model("tiny", device="cpu")
    model.config.save_pretrained(arch)
    tok.save_pretrained(arch)
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([script, "--cpu", "--architecture", str(arch), "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lm = json.loads(out.read_text())["lm"]
    assert lm["weights"] == "random" and lm["architecture"] == "arch" and lm["base_model"] is None
    assert lm["generate_parse_rate"] == 1.0
    assert not list(arch.glob("*.safetensors"))  # nothing was written into the folder


def test_a_partial_gpu_check_is_reported_as_partial(tmp_path, monkeypatch):
    """The script keeps the sections it finished; the report said nothing useful of a failed
    one (a KeyError stopped the whole page) and now names it."""
    from conftest import load_benchmark

    report = load_benchmark("report")
    done = json.loads((ROOT / "benchmarks" / "results" / "gpu_check.json").read_text())
    assert report.gpu_section()[0] == "## GPU check (issue 18)" and "faiss" in done
    partial = {k: v for k, v in done.items() if k != "faiss"}
    partial["lm"] = {"error": "OutOfMemoryError: CUDA out of memory"}
    (tmp_path / "gpu_check.json").write_text(json.dumps(partial))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    text = "\n".join(report.gpu_section())
    assert "did not finish these sections: `lm` (OutOfMemoryError: CUDA out of memory); `faiss` (not run)" in text


def test_gpu_check_refuses_an_architecture_without_a_config_before_any_work(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "scripts" / "gpu_check.sh")
    proc = subprocess.run([script, "--cpu", "--architecture", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "holds no config.json" in proc.stderr
    (tmp_path / "f").write_text("x")
    proc = subprocess.run([script, "--export-architecture", str(tmp_path / "f")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is a file; give a folder" in proc.stderr
