"""benchmarks/lm_train_precision.py's decoding-step timer and CPU flags, on the tiny model (the
SFT timing itself runs SmolLM2 and is a benchmark, not a test)."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import load_benchmark

from ragim.lm.base_models import load_base_model


def test_decode_step_is_timed_both_ways_and_leaves_no_autocast_behind():
    bench = load_benchmark("lm_train_precision")
    model, _ = load_base_model("tiny", device="cpu")
    times = bench.decode_step_seconds(model, batch=2, context=16, steps=2, rounds=1)
    assert set(times) == {"no", "bf16"} and all(t > 0 for t in times.values())
    assert not torch.is_autocast_enabled("cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # autocast casts copies
    flags = bench.cpu_bf16_flags()
    assert isinstance(flags, list) and set(flags) <= {"amx_bf16", "avx512_bf16", "amx_tile"}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # the flags the kernel lists, sorted
        listed = next(ln.split(":", 1)[1].split() for ln in cpuinfo.read_text().splitlines()
                      if ln.startswith("flags"))
        assert flags == sorted(set(listed) & {"amx_bf16", "avx512_bf16", "amx_tile"})
