"""The CUDA paths (``gpu`` marker; run by ``scripts/gpu_check.sh`` on a machine with a GPU).

Each test runs the tiny model (built in code) or small data on the GPU and checks what the CPU
tests check: grammar-constrained answers always parse, batching changes nothing greedy, GRPO's
sampling path is constrained, the batched solver agrees with the CPU, and a LoRA SFT run in bf16
trains and generates on the GPU.

``RAGIM_GPU_TEST_DEVICE=cpu pytest -m gpu tests/test_gpu.py`` runs the same tests on the CPU, to
check the tests themselves where no GPU is present.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ragim import datasets
from ragim.index import TaskIndex
from ragim.lm.answer import answer_format
from ragim.lm.base_models import load_base_model
from ragim.lm.constrained import generate_answer_batch, sample_under_grammar

pytestmark = pytest.mark.gpu

KEYS = ["intercept", "age", "sex[male]", "bmi"] + [f"f{i}" for i in range(10)]


@pytest.fixture(scope="module")
def device():
    name = os.environ.get("RAGIM_GPU_TEST_DEVICE", "cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return name


@pytest.fixture(scope="module")
def tiny(device):
    model, tok = load_base_model("tiny", device=device, seed=0)
    assert next(model.parameters()).device.type == torch.device(device).type
    return model, tok


def _prompts(tok, texts):
    return [tok(t, return_tensors="pt")["input_ids"] for t in texts]


@pytest.mark.parametrize("name", ["json", "compact"])
def test_hot_sampling_on_the_device_always_parses(tiny, name):
    model, tok = tiny
    fmt = answer_format(KEYS, name=name, decimals=2, max_abs=4.0)
    prompts = _prompts(tok, ["coefficients please", "the model:", "x"])
    texts = set()
    for seed in range(3):
        out = generate_answer_batch(model, tok, prompts, fmt, temperature=5.0, num_candidates=3, seed=seed)
        assert [len(g) for g in out] == [3, 3, 3]
        for group in out:
            for r in group:
                assert fmt.parse(r.text) == r.values and list(r.values) == KEYS
                assert all(abs(v) <= 4.0 for v in r.values.values()) and r.logprob <= 0.0
                texts.add(r.text)
    assert len(texts) > 1  # hot sampling explores


@pytest.mark.parametrize("name", ["json", "compact"])
def test_batched_greedy_equals_one_at_a_time_on_the_device(tiny, name):
    model, tok = tiny
    fmt = answer_format(KEYS, name=name, decimals=2)
    texts = ["a", "predict the coefficients of a heart model", "x y z w", "the model:"]  # left-padded
    batch = generate_answer_batch(model, tok, _prompts(tok, texts), fmt)
    for text, group in zip(texts, batch, strict=True):
        alone = generate_answer_batch(model, tok, _prompts(tok, [text]), fmt)[0][0]
        assert group[0].token_ids == alone.token_ids
        assert group[0].logprob == pytest.approx(alone.logprob, abs=1e-3)


def test_grpo_sampling_path_is_constrained_on_the_device(tiny, device):
    """Plain ``model.generate`` calls inside ``sample_under_grammar`` (what TRL's GRPO calls)
    give answers that parse, with device tensors in and out."""
    model, tok = tiny
    fmt = answer_format(KEYS, name="compact", decimals=2, max_abs=4.0)
    ids = torch.tensor([[tok.eos_token_id, 5, 6, 7], [8, 9, 10, 11]], device=device)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], device=device)
    with sample_under_grammar(model, tok, fmt):
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=5.0,
                             max_new_tokens=200, num_return_sequences=3, pad_token_id=tok.eos_token_id)
    assert out.device.type == torch.device(device).type
    texts = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    assert len(texts) == 6 and all(list(fmt.parse(t)) == KEYS for t in texts)
    assert "generate" not in model.__dict__


def test_batched_logistic_on_the_device_agrees_with_the_cpu(device):
    from ragim.models.batched import fit_logistic_batched

    rng = np.random.default_rng(0)
    X = [rng.normal(size=(int(n), 4)) for n in rng.integers(30, 90, 40)]
    y = [(x[:, 0] - x[:, 1] + rng.normal(size=len(x)) > 0).astype(int) for x in X]
    on_device = fit_logistic_batched(X, y, device=device)
    on_cpu = fit_logistic_batched(X, y, device="cpu")
    assert on_device.status == on_cpu.status == ["ok"] * 40
    np.testing.assert_allclose(on_device.coef, on_cpu.coef, atol=1e-6)
    np.testing.assert_allclose(on_device.intercept, on_cpu.intercept, atol=1e-6)


def test_bf16_sft_trains_and_generates_on_the_device(device):
    """A LoRA SFT run under bf16 autocast on the device (TRL's trainer), then a generated model
    for a held-out description."""
    pytest.importorskip("trl")
    from ragim.generate.lm import LMConfig
    from ragim.train import train_sft

    family = datasets.synthetic_family(n_tasks=8, n_features=3, seed=0)
    index = TaskIndex.build(family, embedder="hashing", progress=False)
    gen = train_sft(index, base_model="tiny", generator_config=LMConfig(k=2, device=device), max_steps=2,
                    batch_size=2, val_fraction=0, learning_rate=5e-3, mixed_precision="bf16", progress=False)
    assert next(gen.model_.parameters()).device.type == torch.device(device).type
    assert [h["loss"] for h in gen.history_ if "loss" in h]
    assert gen.training_[-1]["config"]["mixed_precision"] == "bf16"
    p = gen.generate_params(family.descriptions[0], index, exclude=[family.ids[0]])
    assert p.names == index.params(index.ids[0]).names and np.isfinite(p.vector).all()
