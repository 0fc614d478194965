"""Would cascade attention speed up batched decoding? A micro-benchmark (issue 18).

In a batched decoding step every row attends to its whole key/value cache, whose first ``P``
positions (the shared prompt prefix) are the same in every row. Cascade attention reads that
prefix once for all rows and merges it with each row's own part by log-sum-exp. This script
times one decoding step's attention over ``--layers`` layers (a separate cache per layer, so
caches are cold as in a real step; SmolLM2-135M's 9 query heads, 3 key/value heads, head size
64, bfloat16, one thread) three ways, at each ``--shape`` ``ROWS,POSITIONS,PREFIX``:

- ``sdpa``: what transformers does today (``scaled_dot_product_attention`` over each row's
  whole cache, with the padding mask);
- ``cascade_public``: cascade attention from public torch operations (matrix products, a
  masked log-sum-exp and softmax for each part);
- ``cascade_flash``: cascade attention from torch's CPU flash kernel, which returns the
  log-sum-exp: ``aten::_scaled_dot_product_flash_attention_for_cpu``, a private operator.

It also reports the largest difference from ``sdpa``'s output. Run (about a minute):

    .venv/bin/python benchmarks/lm_cascade_attention.py --out benchmarks/results/lm_cascade_attention.json
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

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64  # SmolLM2-135M


def step_ms(rows: int, positions: int, prefix: int, layers: int, repeats: int) -> dict:
    import torch

    sdpa = torch.nn.functional.scaled_dot_product_attention
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    dt, rep, d = torch.bfloat16, HEADS // KV_HEADS, HEAD_DIM
    scale, own = d**-0.5, positions - prefix
    g = torch.Generator().manual_seed(0)
    keys = [torch.randn(rows, KV_HEADS, positions, d, dtype=dt, generator=g) for _ in range(layers)]
    values = [torch.randn(rows, KV_HEADS, positions, d, dtype=dt, generator=g) for _ in range(layers)]
    for k, v in zip(keys, values, strict=True):  # the shared prefix: the same in every row
        k[:, :, :prefix], v[:, :, :prefix] = k[:1, :, :prefix], v[:1, :, :prefix]
    q = torch.randn(rows, KV_HEADS, rep, d, dtype=dt, generator=g)  # one query per head, packed
    mask = torch.ones(rows, 1, 1, positions, dtype=torch.bool)
    mask[:, :, :, prefix : prefix + 30] = False  # left padding after the shared prefix
    own_mask = torch.zeros(rows, 1, 1, own, dtype=dt).masked_fill(~mask[..., prefix:], float("-inf"))
    q_prefix = q.transpose(0, 1).reshape(1, KV_HEADS, rows * rep, d)  # all rows' queries at once

    def merge(out_p, lse_p, out_o, lse_o):
        out_p = out_p.view(KV_HEADS, rows, rep, d).transpose(0, 1)
        lse_p = lse_p.view(KV_HEADS, rows, rep, 1).transpose(0, 1)
        m = torch.maximum(lse_p, lse_o)
        a, b = torch.exp(lse_p - m), torch.exp(lse_o - m)
        return ((out_p.float() * a + out_o.float() * b) / (a + b)).to(dt)

    def base(i):
        return sdpa(q, keys[i], values[i], attn_mask=mask, scale=scale)

    def public(i):
        k, v = keys[i], values[i]
        s = torch.matmul(q_prefix, k[:1, :, :prefix].transpose(-1, -2)).float() * scale
        lse_p = torch.logsumexp(s, -1, keepdim=True)
        out_p = torch.matmul(torch.exp(s - lse_p).to(dt), v[:1, :, :prefix])
        s = torch.matmul(q, k[:, :, prefix:].transpose(-1, -2)).float() * scale
        s = s.masked_fill(~mask[..., prefix:], float("-inf"))
        lse_o = torch.logsumexp(s, -1, keepdim=True)
        out_o = torch.matmul(torch.exp(s - lse_o).to(dt), v[:, :, prefix:])
        return merge(out_p, lse_p, out_o, lse_o)

    def flashed(i):
        k, v = keys[i], values[i]
        out_p, lse_p = flash(q_prefix, k[:1, :, :prefix], v[:1, :, :prefix], 0.0, False, scale=scale)
        out_o, lse_o = flash(q, k[:, :, prefix:], v[:, :, prefix:], 0.0, False, attn_mask=own_mask,
                             scale=scale)
        return merge(out_p, lse_p.unsqueeze(-1), out_o, lse_o.unsqueeze(-1))

    out = {}
    with torch.inference_mode():
        for name, fn in (("sdpa", base), ("cascade_public", public), ("cascade_flash", flashed)):
            for i in range(layers):  # warm-up
                fn(i)
            t = time.process_time()
            for _ in range(repeats):
                for i in range(layers):
                    fn(i)
            ms = 1000 * (time.process_time() - t) / repeats
            err = max(float((fn(i).float() - base(i).float()).abs().max()) for i in range(min(3, layers)))
            out[name] = {"ms_per_step": round(ms, 1), "max_abs_difference": err}
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs="+", default=["12,4300,1899", "12,1000,419"],
                    help="ROWS,POSITIONS,PREFIX (defaults: the procedure- and heart-sized batches of "
                         "benchmarks/lm_generation_parts.py)")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    shapes = []
    for text in args.shape:
        try:
            rows, positions, prefix = (int(x) for x in text.split(","))
        except ValueError:
            ap.error(f"--shape takes ROWS,POSITIONS,PREFIX, got {text!r}")
        if not (rows >= 1 and 1 <= prefix < positions - 30):
            ap.error(f"--shape {text}: need ROWS >= 1 and 1 <= PREFIX < POSITIONS - 30")
        shapes.append((rows, positions, prefix))
    torch.set_num_threads(args.threads)
    rows_out = []
    for rows, positions, prefix in shapes:
        r = step_ms(rows, positions, prefix, args.layers, args.repeats)
        rows_out.append({"rows": rows, "positions": positions, "shared_prefix": prefix, **r})
        print(json.dumps(rows_out[-1]), flush=True)
    from ragim.bench import environment
    from ragim.io import write_file

    res = {"name": "lm-cascade-attention", "layers": args.layers, "threads": args.threads,
           "dtype": "bfloat16", "shapes": rows_out, "environment": environment("cpu"),
           "command": "python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]])}
    write_file(args.out, (json.dumps(res, indent=1) + "\n").encode("utf-8"))  # atomic


if __name__ == "__main__":
    main()
