"""Cascade attention over a batch's shared prompt prefix (``ragim.lm.prefix_attention``): it is
softmax attention over the whole cache, batched decoding gives the same answers with it as
without, and the model's own attention comes back afterwards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ragim.lm.prefix_attention as prefix_attention
from ragim.errors import ValidationError
from ragim.lm.answer import answer_format
from ragim.lm.base_models import load_base_model
from ragim.lm.constrained import generate_answer_batch
from ragim.lm.prefix_attention import (
    cascade_attention,
    shared_prefix_attention,
    without_cascade_attention,
)


def _batch(rows=5, heads=9, kv_heads=3, positions=40, prefix=17, dim=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(rows, heads, 1, dim, generator=g).to(dtype)
    k = torch.randn(rows, kv_heads, positions, dim, generator=g).to(dtype)
    v = torch.randn(rows, kv_heads, positions, dim, generator=g).to(dtype)
    k[:, :, :prefix], v[:, :, :prefix] = k[:1, :, :prefix], v[:1, :, :prefix]
    mask = torch.ones(rows, 1, 1, positions, dtype=torch.bool)
    for r in range(rows):  # left padding after the shared prefix, as left_padded lays it out
        mask[r, :, :, prefix : prefix + r] = False
    return q, k, v, mask


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_cascade_attention_is_softmax_attention_over_the_whole_cache(dtype, atol):
    q, k, v, mask = _batch(dtype=dtype)
    plain = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    got = cascade_attention(q, k, v, 17, attention_mask=mask)
    assert got.shape == plain.shape and got.dtype == dtype
    assert torch.allclose(got.float(), plain.float(), atol=atol)
    # an additive mask means the same as the boolean one; no mask attends everywhere
    additive = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, float("-inf"))
    assert torch.allclose(cascade_attention(q, k, v, 17, attention_mask=additive).float(),
                          got.float(), atol=atol)
    everywhere = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, scale=0.3)
    assert torch.allclose(cascade_attention(q, k, v, 17, scaling=0.3).float(),
                          everywhere.float(), atol=atol)


def test_cascade_attention_reads_only_row_0s_prefix():
    q, k, v, _ = _batch()
    before = cascade_attention(q, k, v, 17)
    k[1:, :, :17] += 100.0  # other rows' copies of the prefix are never read
    assert torch.equal(cascade_attention(q, k, v, 17), before)


def test_cascade_attention_refuses_bad_input():
    q, k, v, mask = _batch()
    with pytest.raises(ValidationError, match="prefix"):
        cascade_attention(q, k, v, 40)
    with pytest.raises(ValidationError, match="prefix"):
        cascade_attention(q, k, v, 0)
    with pytest.raises(ValidationError, match="rows, heads, 1, head_dim"):
        cascade_attention(q.expand(-1, -1, 2, -1), k, v, 17)  # two query positions
    with pytest.raises(ValidationError, match="do not fit"):
        cascade_attention(q[:, :8], k, v, 17)  # 8 heads cannot share 3 key/value heads
    with pytest.raises(ValidationError, match="does not cover 40 positions"):
        cascade_attention(q, k, v, 17, attention_mask=mask[..., :39])


@pytest.fixture(scope="module")
def tiny():
    return load_base_model("tiny", device="cpu")


def _prompts(tok):
    shared = "You write interpretable clinical models. " * 12
    return [tok(shared + t, return_tensors="pt")["input_ids"]
            for t in ("coefficients for task one?", "the model:", "a longer description, then?")]


def test_batched_decoding_gives_the_same_answers_with_and_without_cascade(tiny, monkeypatch):
    model, tok = tiny
    fmt = answer_format(["a", "b", "c"], max_abs=2)
    calls = []
    real = prefix_attention.cascade_attention
    monkeypatch.setattr(prefix_attention, "cascade_attention",
                        lambda *a, **kw: calls.append(a[3]) or real(*a, **kw))
    with_cascade = generate_answer_batch(model, tok, _prompts(tok), fmt)
    assert calls and len(set(calls)) == 1 and calls[0] > 100  # every step read a long prefix once
    n = len(calls)
    with without_cascade_attention():
        plain = generate_answer_batch(model, tok, _prompts(tok), fmt)
    assert len(calls) == n  # off: not called
    for (a,), (b,) in zip(with_cascade, plain, strict=True):
        assert a.text == b.text and a.token_ids == b.token_ids
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    assert model.config._attn_implementation == "sdpa"  # restored


def test_the_context_restores_the_models_attention_and_applies_only_where_it_can(tiny):
    model, _ = tiny
    with shared_prefix_attention(model, 10) as applies:
        assert applies and model.config._attn_implementation == prefix_attention.ATTENTION_NAME
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError, match="inside"), shared_prefix_attention(model, 10):
        raise RuntimeError("inside")
    assert model.config._attn_implementation == "sdpa"
    with shared_prefix_attention(model, 0) as applies:  # no shared prefix
        assert not applies
    with shared_prefix_attention(object(), 10) as applies:  # not a transformers model
        assert not applies
    with pytest.raises(ValidationError, match="prefix"), shared_prefix_attention(model, -1):
        pass
    model.set_attn_implementation("eager")
    try:
        with shared_prefix_attention(model, 10) as applies:
            assert not applies and model.config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")


def test_a_peft_wrapped_model_is_switched_through_its_base():
    from peft import LoraConfig, get_peft_model

    base, tok = load_base_model("tiny", device="cpu")
    wrapped = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with shared_prefix_attention(wrapped, 10) as applies:
        assert applies and base.config._attn_implementation == prefix_attention.ATTENTION_NAME
    assert base.config._attn_implementation == "sdpa"
    fmt = answer_format(["a", "b"], max_abs=2)
    got = generate_answer_batch(wrapped, tok, _prompts(tok), fmt)
    with without_cascade_attention():
        plain = generate_answer_batch(wrapped, tok, _prompts(tok), fmt)
    assert [c[0].text for c in got] == [c[0].text for c in plain]
