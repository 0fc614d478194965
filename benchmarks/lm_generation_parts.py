"""Where batched LM generation spends its CPU time, part by part (issue 18).

One batched, grammar-constrained generation (``LMGenerator(decoder="llguidance",
answer_format="compact", batch_size=n)``, greedy, the untrained base model, ``k`` neighbours and
the population model in each prompt: the ``engine_batched_compact`` paths of
``benchmarks/lm_throughput.py``) is timed in parts, in CPU seconds of this process:

- the shared prompt prefix, computed once (``ragim.lm.constrained.preallocated_cache``);
- each prompt's own tokens, a block of rows per forward call
  (``ragim.lm.constrained.prefill_in_chunks``);
- the decoding steps' forward passes inside transformers' ``generate``;
- the grammar's logits processor (llguidance's masks, unpacked and applied);
- everything else (prompts, retrieval, parsing).

It then replays the same prompts' prefill alone with several ``--prefill-tokens`` budgets
(``0`` = all rows in one call, as transformers' ``generate`` would), which is how
``ragim.lm.constrained.CPU_PREFILL_TOKENS`` was chosen, and, with ``--unpack-torch``, runs the
generation again with the bitmask unpacked by torch bit shifts (what the processor did before
``ragim.lm.constrained.unpack_bitmask``). ``report.py`` turns the JSON into the section "Where
batched generation's CPU time goes" of ``docs/benchmarks.md``.

Run (about 8 CPU-minutes on one thread for both schemas):

    .venv/bin/python benchmarks/lm_generation_parts.py --unpack-torch \\
        --out benchmarks/results/lm_generation_parts.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("shared prefix", "prompt prefill", "decoding forward passes", "grammar processor")


def _torch_unpack(bitmask, width: int):
    """The processor's former unpacking: torch shifts over every bit, then a sum."""
    import torch

    rows = bitmask.shape[0]
    bits = ((bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1).view(rows, -1)
    allowed = bits.bool()[:, :width]
    if allowed.shape[1] < width:
        allowed = torch.cat([allowed, torch.zeros(rows, width - allowed.shape[1], dtype=torch.bool)], 1)
    return allowed, allowed.sum(dim=1).tolist()


@contextlib.contextmanager
def timed_parts(model, seconds: dict, prompts: list):
    """Attribute the CPU time of ``model``'s forward calls (and of the grammar processor) to the
    parts above while the block runs; ``prompts`` receives each batch's prompt token ids."""
    import torch

    import ragim.lm.constrained as C

    phase = ["other"]
    saved = {n: getattr(C, n) for n in ("preallocated_cache", "prefill_in_chunks", "generate_answer_batch")}
    call = C.GrammarLogitsProcessor.__call__
    forward = model.forward

    def in_phase(name, fn):
        def run(*a, **k):
            before, phase[0] = phase[0], name
            try:
                return fn(*a, **k)
            finally:
                phase[0] = before
        return run

    def timed_forward(*a, **k):
        t = time.process_time()
        try:
            return forward(*a, **k)
        finally:
            seconds[phase[0]] = seconds.get(phase[0], 0.0) + time.process_time() - t

    def timed_call(self, *a, **k):
        t = time.process_time()
        try:
            return call(self, *a, **k)
        finally:
            seconds["grammar processor"] += time.process_time() - t

    def generate(self_model, *a, **k):  # the decoding steps: generate's own forward calls
        return in_phase("decoding forward passes", type(self_model).generate)(self_model, *a, **k)

    def batch(model_, tok, rows, *a, **k):
        prompts.append([[int(t) for t in torch.as_tensor(r).reshape(-1)] for r in rows])
        return saved["generate_answer_batch"](model_, tok, rows, *a, **k)

    own = {n: model.__dict__[n] for n in ("forward", "generate") if n in model.__dict__}
    seconds.update({p: 0.0 for p in PARTS})
    C.preallocated_cache = in_phase("shared prefix", saved["preallocated_cache"])
    C.prefill_in_chunks = in_phase("prompt prefill", saved["prefill_in_chunks"])
    C.generate_answer_batch = batch
    C.GrammarLogitsProcessor.__call__ = timed_call
    model.forward = timed_forward
    model.generate = generate.__get__(model)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(C, n, f)
        C.GrammarLogitsProcessor.__call__ = call
        del model.forward, model.generate
        model.__dict__.update(own)  # instance attributes the model had before (hooks)


def prefill_seconds(model, tok, prompts: list[list[int]], budgets: list[int]) -> list[dict]:
    """CPU seconds of the prompts' prefill (shared prefix once, then the rest) per budget."""
    import torch

    import ragim.lm.constrained as C

    rows = [torch.tensor(p) for p in prompts]
    shared = C.shared_prefix_length(rows)
    ids, mask = C.left_padded(rows, tok.eos_token_id, shared)
    out = []
    with torch.inference_mode():
        for budget in [budgets[0], *budgets]:  # the first run warms up the kernels; not kept
            cache = C.preallocated_cache(model, ids.shape[1] + 8, rows[0][:shared] if shared else None,
                                         len(rows))
            t = time.process_time()
            calls = C.prefill_in_chunks(model, cache, ids, mask, max_tokens=budget or None)
            out.append({"max_tokens": budget or None, "forward_calls": calls,
                        "cpu_seconds": round(time.process_time() - t, 3)})
    return out[1:]


def run(widths, *, n: int, k: int, dtype: str, budgets: list[int], unpack_torch: bool,
        base_model: str) -> list[dict]:
    import ragim.lm.constrained as C
    from ragim import TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.generate.lm import LMGenerator

    make = dict(base_model=base_model, k=k, seed=0, dtype=dtype, decoder="llguidance",
                answer_format="compact", batch_size=n)
    model, tok = LMGenerator(**make).load_model()
    schemas = []
    for width in widths:
        fam = synthetic_family(n_tasks=max(2 * n, 20), n_features=width - 1, seed=0)
        index = TaskIndex.build(fam, embedder="hashing:384", progress=False)
        gen = LMGenerator(**make)
        gen.model_, gen.tokenizer_ = model, tok
        gen.generate_params(fam.descriptions[-2:], index)  # warm-up
        variants = {"numpy unpack": None, **({"torch unpack": _torch_unpack} if unpack_torch else {})}
        parts, prompts = {}, []
        for name, unpack in variants.items():
            seconds, got = {}, []
            saved = C.unpack_bitmask
            if unpack is not None:
                C.unpack_bitmask = unpack
            try:
                with timed_parts(model, seconds, got):
                    t = time.process_time()
                    params = gen.generate_params(fam.descriptions[:n], index)
                    total = time.process_time() - t
            finally:
                C.unpack_bitmask = saved
            prompts = prompts or got[0]
            seconds["other"] = total - sum(seconds[p] for p in PARTS)
            parts[name] = {"cpu_seconds": round(total, 3),
                           "parts": {p: round(s, 3) for p, s in seconds.items()},
                           "answer_tokens": sum(p.metadata["answer_tokens"] for p in params)}
            print(width, name, json.dumps(parts[name]), flush=True)
        lengths = [len(p) for p in prompts]
        import torch

        shared = C.shared_prefix_length([torch.tensor(p) for p in prompts])
        sweep = prefill_seconds(model, tok, prompts, budgets)
        print(width, "prefill", json.dumps(sweep), flush=True)
        schemas.append({"n_params": width, "mean_prompt_tokens": round(sum(lengths) / len(lengths), 1),
                        "shared_prefix_tokens": shared, "generation": parts, "prefill": sweep})
    return schemas


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-params", type=int, nargs="+", default=[14, 79],
                    help="parameters per answer (14: heart-sized, 79: procedure-sized)")
    ap.add_argument("--n", type=int, default=12, help="targets per batch")
    ap.add_argument("--k", type=int, default=3, help="neighbours per prompt")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--prefill-tokens", type=int, nargs="+", default=[0, 512, 1024, 2048, 4096],
                    help="prefill budgets to replay (tokens per forward call; 0 = all rows in one call)")
    ap.add_argument("--unpack-torch", action="store_true",
                    help="also generate with the bitmask unpacked by torch shifts (the former way)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.n < 2 or any(p < 2 for p in args.n_params) or any(b < 0 for b in args.prefill_tokens):
        ap.error("--n and --n-params must be >= 2 and --prefill-tokens >= 0")
    torch.set_num_threads(args.threads)
    schemas = run(args.n_params, n=args.n, k=args.k, dtype=args.dtype, budgets=args.prefill_tokens,
                  unpack_torch=args.unpack_torch, base_model=args.base_model)
    from ragim.bench import environment
    from ragim.io import write_file
    from ragim.lm.constrained import CPU_PREFILL_TOKENS

    res = {"name": "lm-generation-parts", "base_model": args.base_model, "n": args.n, "k": args.k,
           "dtype": args.dtype, "threads": args.threads, "cpu_prefill_tokens": CPU_PREFILL_TOKENS,
           "schemas": schemas, "environment": environment("cpu"),
           "command": "python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]])}
    write_file(args.out, (json.dumps(res, indent=1) + "\n").encode("utf-8"))  # atomic


if __name__ == "__main__":
    main()
