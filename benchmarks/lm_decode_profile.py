"""Where the LM generator's CPU time goes: prefill and decode costs of SmolLM2-135M (issue 18).

Issue 18 asks for LM generation at 10x the tasks/s of the one-prompt path. This script measures
the costs that bound it, on ``--threads`` torch threads, with random token ids (the cost of a
forward pass does not depend on which tokens they are):

- prefill: CPU ms per prompt token, at each context length and batch size;
- decode: CPU seconds of one decoding step (one new token for every row of the batch) with
  the key/value cache transformers ``generate`` uses by default (``DynamicCache``, which
  grows by concatenation) and with a preallocated ``StaticCache``;
- the operators of a decode step (``torch.profiler``), at the largest context and batch.

``report.py`` turns the JSON into the section "Where the LM's decode time goes" of
``docs/benchmarks.md``, beside the end-to-end figures of ``benchmarks/lm_throughput.py``.

Run (about 10 CPU-minutes on one thread):

    .venv/bin/python benchmarks/lm_decode_profile.py --out benchmarks/results/lm_decode_profile.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def _tokens(model, *shape: int):
    """Random token ids of ``shape`` (any ids: a forward pass costs the same for all)."""
    import torch

    return torch.randint(0, min(1000, int(model.config.vocab_size)), shape)


def _step_seconds(model, cache, batch: int, position: int, steps: int) -> float:
    """Mean CPU seconds of ``steps`` decoding steps that extend ``cache`` by one token per row."""
    import torch

    nxt = _tokens(model, batch, 1)
    total = 0.0
    for s in range(steps):
        pos = torch.tensor([position + s])
        total += _cpu(lambda p=pos: model(input_ids=nxt, past_key_values=cache, use_cache=True,
                                          cache_position=p))
    return total / steps


def profile_costs(contexts, batches, *, steps: int, base_model: str) -> dict:
    import torch
    from transformers import DynamicCache, StaticCache

    from ragim.lm.base_models import load_base_model

    model, _ = load_base_model(base_model, device="cpu")
    model.eval()
    rows = []
    with torch.inference_mode():
        for batch in batches:
            for ctx in contexts:
                ids = _tokens(model, batch, ctx)
                positions = torch.arange(ctx)
                dyn = DynamicCache(config=model.config)
                prefill = _cpu(lambda d=dyn, i=ids, p=positions: model(
                    input_ids=i, past_key_values=d, use_cache=True, cache_position=p))
                dynamic = _step_seconds(model, dyn, batch, ctx, steps)
                static = StaticCache(config=model.config, max_cache_len=ctx + steps + 1)
                model(input_ids=ids, past_key_values=static, use_cache=True, cache_position=positions)
                static_s = _step_seconds(model, static, batch, ctx, steps)
                rows.append({"batch": batch, "context": ctx,
                             "prefill_ms_per_token": round(1000 * prefill / (batch * ctx), 3),
                             "decode_step_s_dynamic": round(dynamic, 4),
                             "decode_step_s_static": round(static_s, 4)})
                print(rows[-1], flush=True)
        batch, ctx = max(batches), max(contexts)
        dyn = DynamicCache(config=model.config)
        model(input_ids=_tokens(model, batch, ctx), past_key_values=dyn, use_cache=True)
        nxt = _tokens(model, batch, 1)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                model(input_ids=nxt, past_key_values=dyn, use_cache=True)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values())
    groups = {
        "attention (scaled_dot_product_attention)": [k for k in ops if "scaled_dot_product" in k],
        "key/value cache growth (cat)": ["aten::cat"],
        "matrix products (mm, addmm, bmm)": ["aten::mm", "aten::addmm", "aten::bmm"],
    }
    shares = {g: round(sum(ops.get(k, 0.0) for k in keys) / total, 3) for g, keys in groups.items()}
    shares["everything else"] = round(1 - sum(shares.values()), 3)
    return {"rows": rows, "op_shares": {"batch": batch, "context": ctx, "shares": shares}}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 6])
    ap.add_argument("--steps", type=int, default=5, help="decoding steps averaged per row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = profile_costs(args.contexts, args.batches, steps=args.steps, base_model=args.base_model)
    from ragim.bench import environment
    from ragim.io import write_file

    res.update(base_model=args.base_model, threads=args.threads, environment=environment("cpu"),
               command="python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]]))
    write_file(args.out, (json.dumps(res, indent=1) + "\n").encode("utf-8"))  # atomic
    print(json.dumps(res["op_shares"]))


if __name__ == "__main__":
    main()
