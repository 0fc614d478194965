"""How many prompt tokens a batch of LM targets shares, and the speed-up that bounds (issue 18).

Builds the prompts ``ragim bench lm`` (``benchmarks/lm_throughput.py``) decodes (the same
synthetic families, 14 and 79 parameters, the compact answer format, k = 3 neighbours and the
population model), counts SmolLM2-135M tokens and the prefix the six prompts share (computed
once by the batched decoder), and, with the prefill cost per token of
``benchmarks/results/lm_decode_profile.json`` (batch 1, nearest context length) and the one-prompt
baseline's CPU seconds per task of ``benchmarks/results/lm_throughput_preallocated_cache.json``,
prints the largest speed-up any decoder could reach if decoding the answer cost nothing: the
baseline's CPU seconds over the prefill of each prompt's own tokens.

Run: .venv/bin/python benchmarks/lm_prompt_prefix.py   (about a minute)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    from ragim import TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.generate.lm import LMConfig
    from ragim.lm.base_models import load_base_model
    from ragim.lm.prompts import index_prompt

    warnings.filterwarnings("ignore")
    profile = json.loads((RESULTS / "lm_decode_profile.json").read_text())["rows"]
    speed = json.loads((RESULTS / "lm_throughput_preallocated_cache.json").read_text())
    base = {
        s["n_params"]: s["paths"]["builtin_one_prompt_json"]["cpu_seconds"] / speed["n"]
        for s in speed["schemas"]
    }
    _, tok = load_base_model("smollm2-135m", device="cpu")
    print(
        "| parameters | prompt tokens (mean) | shared prefix | own tokens (mean) | prefill "
        "ms/token | prefill CPU s per task | baseline CPU s per task | bound on the speed-up |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for width in (14, 79):
        fam = synthetic_family(n_tasks=20, n_features=width - 1, seed=0)
        index = TaskIndex.build(fam, embedder="hashing:384", progress=False)
        cfg = LMConfig(answer_format="compact")
        ids = []
        for d in fam.descriptions[: speed["n"]]:
            _, text, _, _ = index_prompt(index, d, index.search(d, k=speed["k"]), tok, cfg)
            ids.append(tok(text)["input_ids"])
        shared = 0
        while shared < min(map(len, ids)) and len({x[shared] for x in ids}) == 1:
            shared += 1
        mean = sum(map(len, ids)) / len(ids)
        row = min((r for r in profile if r["batch"] == 1), key=lambda r: abs(r["context"] - mean))
        ms = row["prefill_ms_per_token"]
        own = mean - shared
        prefill = (own + shared / len(ids)) * ms / 1000
        print(
            f"| {width} | {mean:.0f} | {shared} | {own:.0f} | {ms:.2f} | {prefill:.1f} | "
            f"{base[width]:.1f} | {base[width] / prefill:.1f}x |"
        )


if __name__ == "__main__":
    main()
