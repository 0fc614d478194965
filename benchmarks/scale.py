"""Scale benchmark: how retrieval, fitting and generation costs grow from 10k to 1M tasks.

Writes benchmarks/results/scale.json and docs/img/scale_loglog.png, and prints the table
that docs/benchmarks.md reproduces.

Run: .venv/bin/python benchmarks/scale.py [--sizes 10000 100000 1000000] [--fit-sizes 10000 100000]
     [--lm-queries 3] [--generate-threads N] [--resume]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def peak_build_memory_mb(n: int, factory: str) -> float:
    """Peak resident memory of a fresh process that generates n vectors and builds the index."""
    code = (
        "import resource, sys; from ragim.bench import clustered_unit_vectors; "
        "from ragim.vector_store import VectorStore; "
        f"v = clustered_unit_vectors({n}, 384); s = VectorStore.build(v, index={factory!r}, device='cpu'); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def exponent(sizes, values) -> float:
    """Slope of log(value) against log(size): 1 = linear growth."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def main() -> None:
    from ragim.bench import bench_fit, bench_generate, bench_generate_lm, bench_retrieval

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--fit-sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--lm-queries", type=int, default=3, help="LM generations timed (0: skip the LM benchmark)")
    ap.add_argument("--lm-base-model", default="smollm2-135m")
    ap.add_argument("--generate-threads", type=int, default=None,
                    help="torch threads for the generation benchmarks (default: torch's own choice)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    ap.add_argument("--resume", action="store_true", help="keep results already in --out and only run the missing sizes")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    res: dict = {"machine": {"cpus": len(__import__("os").sched_getaffinity(0))}, "retrieval": {}, "fit": {}}
    if args.resume and args.out.is_file():
        old = json.loads(args.out.read_text())
        res["retrieval"] = {int(k): v for k, v in old.get("retrieval", {}).items()}
        res["fit"] = {int(k): v for k, v in old.get("fit", {}).items()}
    for n in args.sizes:
        if n in res["retrieval"]:
            continue
        t = time.perf_counter()
        r = bench_retrieval(n, n_queries=args.queries)
        r["peak_build_mb"] = peak_build_memory_mb(n, r["ours"]["index"])
        r["wall_seconds"] = round(time.perf_counter() - t, 1)
        res["retrieval"][n] = r
        args.out.write_text(json.dumps(res, indent=2, default=str))
        print(json.dumps({"retrieval": n, "ours": r["ours"], "baseline": r["baseline"], "ratio": r["ratio"],
                          "recall_at_10": r["recall_at_10"], "peak_build_mb": r["peak_build_mb"]}), flush=True)
    for n in args.fit_sizes:
        if n in res["fit"]:
            continue
        r = bench_fit(n, baseline_tasks=min(n, 1000))
        res["fit"][n] = r
        args.out.write_text(json.dumps(res, indent=2, default=str))
        print(json.dumps({"fit": n, "ours": r["ours"], "baseline": r["baseline"], "ratio": r["ratio"]}), flush=True)
    if args.generate_threads:
        import torch

        torch.set_num_threads(args.generate_threads)
    res["machine"]["generate_torch_threads"] = __import__("torch").get_num_threads()
    res["generate"] = bench_generate(300)
    print(json.dumps({"generate": res["generate"]["tasks_per_s_by_batch"]}), flush=True)
    if args.lm_queries > 0:
        res["generate_lm"] = bench_generate_lm(args.lm_queries, base_model=args.lm_base_model)
        print(json.dumps({"generate_lm": res["generate_lm"]["ours"]}), flush=True)
    sizes = sorted(res["retrieval"])
    res["growth_exponents"] = {
        "retrieval_query_seconds": exponent(sizes, [res["retrieval"][n]["ours"]["seconds"] for n in sizes]),
        "numpy_query_seconds": exponent(sizes, [res["retrieval"][n]["baseline"]["seconds"] for n in sizes]),
        "index_build_seconds": exponent(sizes, [res["retrieval"][n]["build"][res["retrieval"][n]["ours"]["index"]] for n in sizes]),
        "peak_build_mb": exponent(sizes, [res["retrieval"][n]["peak_build_mb"] for n in sizes]),
    }
    if len(res["fit"]) > 1:
        fs = sorted(res["fit"])
        res["growth_exponents"]["fit_seconds"] = exponent(fs, [res["fit"][n]["ours"]["seconds"] for n in fs])
    args.out.write_text(json.dumps(res, indent=2, default=str))
    _plot(res, ROOT / "docs" / "img" / "scale_loglog.png")
    print(json.dumps(res["growth_exponents"], indent=2))


def _plot(res, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sizes = sorted(res["retrieval"])
    ax.loglog(sizes, [res["retrieval"][n]["ours"]["seconds"] for n in sizes], "o-", label="FAISS query (1k queries)")
    ax.loglog(sizes, [res["retrieval"][n]["baseline"]["seconds"] for n in sizes], "s--", label="numpy exact query (1k queries)")
    ax.loglog(sizes, [res["retrieval"][n]["build"][res["retrieval"][n]["ours"]["index"]] for n in sizes], "^-", label="index build")
    if res["fit"]:
        fs = sorted(res["fit"])
        ax.loglog(fs, [res["fit"][n]["ours"]["seconds"] for n in fs], "d-", label="fit_many, batched solver")
    ax.set_xlabel("tasks")
    ax.set_ylabel("seconds")
    ax.set_title("ragim cost growth on 2 CPU cores")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
