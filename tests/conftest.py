"""Shared fixtures: tiny, offline, deterministic."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# CI replays the same hypothesis examples on every run (.ci/run sets HYPOTHESIS_PROFILE=ci), so a
# landing is never decided by a random draw; local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread for the whole suite: tiny matmuls run ~1000x slower with 2 intra-op
    threads on a busy 2-core machine (speed is measured in benchmarks/, not here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never write caches into the user's home directory from tests."""
    if "RAGIM_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("RAGIM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "ragim-cache"))


def make_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(55, 10, n)
    age[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "age": age,
            "sex": rng.integers(0, 2, n),
            "chol": rng.normal(220, 40, n),
            "cp": rng.choice(["typical", "atypical", "asymptomatic"], n),
        }
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame()


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a
    package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reseal(root, keep=None) -> None:
    """Recompute every artifact checksum under ``root``, deepest manifest first, so that only a
    loader's own consistency checks can catch a changed file. ``keep``: a (swapped-in)
    manifest whose own entries are left as they are."""
    import hashlib
    import json
    from pathlib import Path

    from ragim.io import MANIFEST

    for m in sorted(Path(root).rglob(MANIFEST), key=lambda p: -len(p.parts)):
        if keep is not None and m == keep:
            continue
        manifest = json.loads(m.read_text())
        for name in manifest["files"]:
            data = (m.parent / name).read_bytes()
            manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        m.write_text(json.dumps(manifest))


def run_console(args, monkeypatch, capsys, columns: int = 200) -> tuple[int, str, str]:
    """``ragim ARGS`` as the console script runs it (``ragim.cli.main``, a terminal
    ``columns`` wide): (exit code, stdout, stderr)."""
    import sys

    from ragim import cli

    monkeypatch.setattr(sys, "argv", ["ragim", *map(str, args)])
    monkeypatch.setenv("COLUMNS", str(columns))
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def checkpointing_probe():
    """A transformers ``TrainerCallback`` class whose instances record, after each optimiser
    step, whether the trainer ran with activation checkpointing on (``seen``: one bool a
    step)."""
    from transformers import TrainerCallback

    class CheckpointingProbe(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.seen.append(bool(args.gradient_checkpointing and model.is_gradient_checkpointing))

    return CheckpointingProbe
