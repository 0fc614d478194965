"""`ragim.bench.bench_lm_throughput` on the tiny model: every path parses every answer, the
paths see the same prompts, and the ratios are against the first path."""

from __future__ import annotations

import pytest

from ragim.bench import LM_PATHS, bench_lm_throughput
from ragim.errors import ValidationError


def test_every_path_parses_and_ratios_are_against_the_first():
    paths = ["builtin_one_prompt_json", "engine_one_prompt_json", "engine_batched_compact",
             "builtin_one_prompt_compact"]
    res = bench_lm_throughput(2, n_params=(4,), base_model="tiny", device="cpu", paths=paths)
    (schema,) = res["schemas"]
    assert schema["n_params"] == 4 and list(schema["paths"]) == paths
    stats = schema["paths"]
    assert all(s["parse_rate"] == 1.0 for s in stats.values())
    assert schema["ratios"]["builtin_one_prompt_json"] == 1.0
    for p in paths:
        assert schema["ratios"][p] == pytest.approx(
            stats[p]["tasks_per_s"] / stats[paths[0]]["tasks_per_s"], rel=1e-2)
        assert stats[p]["cpu_seconds"] > 0 and stats[p]["seconds"] > 0
    # the same targets and neighbours: JSON paths share their prompts, compact ones theirs
    assert stats["builtin_one_prompt_json"]["mean_prompt_tokens"] == \
        stats["engine_one_prompt_json"]["mean_prompt_tokens"]
    assert stats["engine_batched_compact"]["mean_prompt_tokens"] == \
        stats["builtin_one_prompt_compact"]["mean_prompt_tokens"]
    # a compact answer of 4 values is shorter than the JSON answer with its keys
    assert stats["engine_batched_compact"]["mean_answer_tokens"] < \
        stats["engine_one_prompt_json"]["mean_answer_tokens"]
    assert res["paths"]["engine_batched_compact"] == {
        "decoder": "llguidance", "answer_format": "compact", "batched": True, "dtype": "float32"}
    assert res["threads"] == {"ours": 1, "baseline": 1}
    assert all(s["same_as_float32"] is None for s in stats.values())  # no bfloat16 path here


def test_a_bfloat16_path_is_compared_with_its_float32_twin():
    paths = ["engine_batched_compact", "engine_batched_compact_bf16"]
    res = bench_lm_throughput(3, n_params=(4,), base_model="tiny", device="cpu", paths=paths)
    stats = res["schemas"][0]["paths"]
    assert stats["engine_batched_compact_bf16"]["parse_rate"] == 1.0
    same = stats["engine_batched_compact_bf16"]["same_as_float32"]
    assert same["path"] == "engine_batched_compact" and same["targets"] == 3
    assert 0 <= same["equal_fraction"] <= 1 and same["max_abs_difference"] >= 0
    assert (same["equal_fraction"] == 1) == (same["max_abs_difference"] == 0)
    assert res["paths"]["engine_batched_compact_bf16"]["dtype"] == "bfloat16"


def test_unknown_paths_are_refused():
    with pytest.raises(ValidationError, match="paths must be a non-empty list of"):
        bench_lm_throughput(1, n_params=(3,), base_model="tiny", paths=["fastest"])
    assert set(LM_PATHS) >= {"builtin_one_prompt_json", "engine_batched_compact"}
    # `ragim bench lm-throughput` runs the defaults: today's one-prompt path first, bfloat16 among them
    import inspect

    default = inspect.signature(bench_lm_throughput).parameters["paths"].default
    assert default[0] == "builtin_one_prompt_json" and "engine_batched_compact_bf16" in default
