"""Every example runs in its fast mode."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("[0-9][0-9]_*.py"))
SLOW = {"04_gam_family_shape_plots.py", "05_lm_sft.py", "06_reward_model_and_grpo.py"}


def test_examples_are_numbered_and_documented():
    assert len(EXAMPLES) >= 4
    for path in EXAMPLES:
        text = path.read_text()
        assert text.startswith('"""') and "Run: python examples/" in text, path.name


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW else []) for p in EXAMPLES]
)
def test_example_runs_in_fast_mode(path, tmp_path):
    env = {**os.environ, "RAGIM_EXAMPLES_FAST": "1", "PYTHONPATH": str(ROOT / "examples")}
    proc = subprocess.run([sys.executable, str(path), "--out", str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip(), "an example should print what it shows"
