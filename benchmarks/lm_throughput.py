"""LM generation throughput of the two constrained decoders on SmolLM2-135M (issue 18).

Runs :func:`ragim.bench.bench_lm_throughput` (one process, the same model, the same targets,
``--threads`` torch threads for every path) and writes its JSON to ``--out``. Paths are
``LMGenerator(decoder=..., answer_format=..., batch_size=...)``: the built-in hand-written
decoder (one prompt at a time) and the llguidance grammar engine (one prompt per call, or
all ``--n`` targets in one batched call), with JSON or compact answers.

Run (heart- and procedure-sized schemas, 14 and 79 parameters; about 40 CPU-minutes on one
thread, most of them the one-prompt procedure paths):

    nice -n 5 .venv/bin/python benchmarks/lm_throughput.py --n-params 14 79 --n 6 \\
        --paths builtin_one_prompt_json builtin_one_prompt_compact engine_batched_json \\
        engine_batched_compact --out benchmarks/results/lm_throughput_heart_procedure.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from ragim.bench import LM_PATHS, bench_lm_throughput
    from ragim.io import write_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3, help="targets per schema")
    ap.add_argument("--n-params", type=int, nargs="+", default=[14], help="schema widths (14 heart, 79 procedure)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--paths", nargs="+", choices=list(LM_PATHS),
                    default=["builtin_one_prompt_json", "engine_one_prompt_json", "engine_batched_json",
                             "builtin_one_prompt_compact", "engine_batched_compact", "engine_batched_compact_bf16"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    res = bench_lm_throughput(args.n, n_params=args.n_params, base_model=args.base_model,
                              threads=args.threads, paths=args.paths)
    res["command"] = "python " + shlex.join([str(Path(sys.argv[0])), *sys.argv[1:]])
    write_file(args.out, (json.dumps(res, indent=1) + "\n").encode("utf-8"))  # atomic
    for s in res["schemas"]:
        print(f"n_params={s['n_params']}")
        for p, st in s["paths"].items():
            print(f"  {p:28s} {st['tasks_per_s']:.4f} tasks/s  {st['answer_tokens_per_s']:.2f} tok/s  "
                  f"cpu {st['cpu_seconds']:.1f}s  parse {st['parse_rate']:.0%}  ratio {s['ratios'][p]:.3f}")


if __name__ == "__main__":
    main()
