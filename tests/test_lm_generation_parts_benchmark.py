"""benchmarks/lm_generation_parts.py's plumbing on the tiny model (the SmolLM2 timings are a
benchmark, not a test): every part is timed, the prefill replay splits rows as its budget says,
the torch unpacking gives the same answers, and nothing it patches stays patched."""

from __future__ import annotations

from conftest import load_benchmark

import ragim.lm.constrained as constrained


def test_parts_and_prefill_budgets_on_the_tiny_model():
    bench = load_benchmark("lm_generation_parts")
    saved = (constrained.preallocated_cache, constrained.prefill_in_chunks,
             constrained.generate_answer_batch, constrained.unpack_bitmask,
             constrained.GrammarLogitsProcessor.__call__)
    [sch] = bench.run([4], n=3, k=1, dtype="float32", budgets=[0, 1], unpack_torch=True,
                      base_model="tiny")
    assert saved == (constrained.preallocated_cache, constrained.prefill_in_chunks,
                     constrained.generate_answer_batch, constrained.unpack_bitmask,
                     constrained.GrammarLogitsProcessor.__call__)
    runs = sch["generation"]
    assert set(runs) == {"numpy unpack", "torch unpack"}
    for r in runs.values():
        parts = r["parts"]
        assert set(parts) == {*bench.PARTS, "other"}
        assert parts["prompt prefill"] > 0 and parts["decoding forward passes"] > 0
        assert parts["grammar processor"] > 0 and r["answer_tokens"] > 0
    assert runs["numpy unpack"]["answer_tokens"] == runs["torch unpack"]["answer_tokens"]
    whole, one_row = sch["prefill"]
    assert whole["max_tokens"] is None and whole["forward_calls"] == 1
    assert one_row["max_tokens"] == 1 and one_row["forward_calls"] == 3  # at least a row a call
    assert sch["shared_prefix_tokens"] > 0 and sch["mean_prompt_tokens"] > sch["shared_prefix_tokens"]


def test_the_cascade_attention_micro_benchmark_computes_the_same_attention():
    """benchmarks/lm_cascade_attention.py: both cascade forms give SDPA's output (bfloat16)."""
    bench = load_benchmark("lm_cascade_attention")
    out = bench.step_ms(rows=3, positions=120, prefix=40, layers=2, repeats=1)
    assert set(out) == {"sdpa", "cascade_public", "cascade_flash"}
    assert out["sdpa"]["max_abs_difference"] == 0.0
    for name in ("cascade_public", "cascade_flash"):
        assert 0 <= out[name]["max_abs_difference"] < 0.02 and out[name]["ms_per_step"] >= 0
