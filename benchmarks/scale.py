"""Scale benchmark: how retrieval, index builds, fitting and generation grow from 10k to 2M tasks.

Writes benchmarks/results/scale.json and docs/img/scale_loglog.png; docs/benchmarks.md is then
rendered from the JSON by benchmarks/report.py.

Every ratio compares two measurements taken in the same process, back to back, with the same
number of threads on both sides (``--threads``, default 1 and all CPUs). Peak memory is
measured in a fresh child process per build.

Vectors: the retrieval and store-build rows use synthetic clustered unit vectors (d=384, the
size of MiniLM embeddings), made chunk by chunk. The full ``TaskIndex.build`` rows fit
``synthetic_family`` tasks and embed their descriptions with the hashing embedder: MiniLM
embeds about 100 descriptions a second on 2 CPU cores, weeks for millions of tasks.

Run: .venv/bin/python benchmarks/scale.py [--max-tasks 2000000] [--resume] [--threads 1 2]
     [--sizes ...] [--build-sizes ...] [--fit-sizes ...] [--lm-queries 3] [--skip-generate]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = [10_000, 100_000, 1_000_000, 2_000_000]


def in_child(call: str) -> dict:
    """Run ``ragim.bench.<call>`` in a fresh Python process (clean peak memory); its JSON result."""
    code = f"import json, warnings; warnings.simplefilter('ignore'); from ragim import bench; print(json.dumps(bench.{call}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{call} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(sizes, values) -> float | None:
    """Slope of log(value) against log(size): 1 = linear growth (None for fewer than 2 sizes)."""
    if len(sizes) < 2:
        return None
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def store_options(n: int) -> list[tuple[str, str]]:
    """(index, storage) builds measured at size n: the auto index everywhere; from 1M on,
    its SQ8-compressed twin and its on-disk twin too."""
    from ragim.vector_store import auto_factory

    opts = [("auto", "memory")]
    if n >= 1_000_000:
        ivf = auto_factory(n, 384).split(",")[0]
        opts += [(f"{ivf},SQ8", "memory"), (f"{ivf},Flat", "ondisk")]
    return opts


def growth(res: dict) -> dict:
    ret = {int(k): v for k, v in res.get("retrieval", {}).items()}
    sizes = sorted(ret)
    out = {}
    if sizes:
        out["retrieval_query_seconds"] = exponent(sizes, [ret[n]["ours"]["seconds"] for n in sizes])
        out["numpy_query_seconds"] = exponent(sizes, [ret[n]["baseline"]["seconds"] for n in sizes])
    sb = {int(k): v["auto/memory"] for k, v in res.get("store_build", {}).items() if "auto/memory" in v}
    if sb:
        s = sorted(sb)
        out["store_build_seconds"] = exponent(s, [sb[n]["seconds"] for n in s])
        out["store_build_peak_rss_mb"] = exponent(s, [sb[n]["peak_rss_mb"] for n in s])
    ib = {int(k): v for k, v in res.get("index_build", {}).items()}
    if ib:
        s = sorted(ib)
        out["index_build_seconds"] = exponent(s, [ib[n]["seconds"] for n in s])
        out["index_build_peak_rss_mb"] = exponent(s, [ib[n]["peak_rss_mb"] for n in s])
    fit = {int(k): v for k, v in res.get("fit", {}).items()}
    if fit:
        s = sorted(fit)
        out["fit_seconds"] = exponent(s, [fit[n]["ours"]["seconds"] for n in s])
    return {k: v for k, v in out.items() if v is not None}


def main() -> None:
    import faiss  # noqa: F401  (loaded first, so the environment lists its BLAS and OpenMP)
    import torch  # noqa: F401

    from ragim import bench

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tasks", type=int, default=2_000_000, help="largest size of every section")
    ap.add_argument("--sizes", type=int, nargs="+", default=SIZES, help="retrieval and store-build sizes")
    ap.add_argument("--build-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 2_000_000],
                    help="sizes of the full TaskIndex.build (fit, embed, add)")
    ap.add_argument("--fit-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 2_000_000])
    ap.add_argument("--threads", type=int, nargs="+", default=list(bench.default_threads()))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--lm-queries", type=int, default=3, help="LM generations timed (0: skip the LM benchmark)")
    ap.add_argument("--lm-base-model", default="smollm2-135m")
    ap.add_argument("--skip-generate", action="store_true", help="keep the generation results already in --out")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "scale_loglog.png")
    ap.add_argument("--resume", action="store_true", help="keep results already in --out; run only what is missing")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cap = [n for n in args.sizes if n <= args.max_tasks]
    res: dict = {}
    if (args.resume or args.skip_generate) and args.out.is_file():
        res = json.loads(args.out.read_text())
        if not args.resume:
            res = {k: v for k, v in res.items() if k in ("generate", "generate_lm")}
    res["command"] = ".venv/bin/python benchmarks/scale.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res["machine"] = {"cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
                      "environment": bench.environment()}
    for key in ("retrieval", "store_build", "index_build", "fit"):
        res[key] = {str(k): v for k, v in res.get(key, {}).items()}

    def save():
        res["growth_exponents"] = growth(res)
        args.out.write_text(json.dumps(res, indent=1, default=str) + "\n")

    for n in cap:
        if str(n) not in res["retrieval"]:
            t = time.perf_counter()
            r = bench.bench_retrieval(n, n_queries=args.queries, threads=args.threads)
            r["wall_seconds"] = round(time.perf_counter() - t, 1)
            res["retrieval"][str(n)] = r
            save()
            print(json.dumps({"retrieval": n, "ours": r["ours"]["index"], "by_threads": r["by_threads"],
                              "recall_at_10": r["recall_at_10"]}), flush=True)
        for index, storage in store_options(n):
            key = f"{index}/{storage}"
            if key not in res["store_build"].get(str(n), {}):
                r = in_child(f"bench_store_build({n}, index={index!r}, storage={storage!r})")
                res["store_build"].setdefault(str(n), {})[key] = r
                save()
                print(json.dumps({"store_build": n, key: r}), flush=True)
    for n in [n for n in args.fit_sizes if n <= args.max_tasks]:
        if str(n) not in res["fit"]:
            r = bench.bench_fit(n, baseline_tasks=min(n, 1000), threads=args.threads)
            res["fit"][str(n)] = r
            save()
            print(json.dumps({"fit": n, "by_threads": r["by_threads"], "max_abs_diff": r["max_abs_diff"]}), flush=True)
    if not args.skip_generate or "generate" not in res:
        res["generate"] = bench.bench_generate(300, threads=args.threads)
        save()
        print(json.dumps({"generate": res["generate"]["by_threads"]}), flush=True)
        if args.lm_queries > 0:
            res["generate_lm"] = bench.bench_generate_lm(args.lm_queries, base_model=args.lm_base_model,
                                                         threads=args.threads[0])
            save()
            print(json.dumps({"generate_lm": res["generate_lm"]["ours"]}), flush=True)
    for n in [n for n in args.build_sizes if n <= args.max_tasks]:
        if str(n) not in res["index_build"]:
            r = in_child(f"bench_index_build({n})")
            res["index_build"][str(n)] = r
            save()
            print(json.dumps({"index_build": n, **r}), flush=True)
    save()
    _plot(res, args.plot)
    print(json.dumps(res["growth_exponents"], indent=2))


def _plot(res, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    ax, mx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ret = {int(k): v for k, v in res["retrieval"].items()}
    sizes = sorted(ret)
    t1 = str(res["machine"]["threads"][0])
    ax.loglog(sizes, [ret[n]["by_threads"][t1]["ours"]["seconds"] for n in sizes], "o-",
              label=f"FAISS query, chosen index (1k queries, {t1} thread)")
    ax.loglog(sizes, [ret[n]["by_threads"][t1]["baseline"]["seconds"] for n in sizes], "s--",
              label=f"numpy exact query (1k queries, {t1} thread)")
    sb = {int(k): v["auto/memory"] for k, v in res["store_build"].items() if "auto/memory" in v}
    if sb:
        s = sorted(sb)
        ax.loglog(s, [sb[n]["seconds"] for n in s], "^-", label="vector store build (auto index)")
        mx.loglog(s, [sb[n]["peak_rss_mb"] for n in s], "^-", label="vector store build (auto index)")
    ib = {int(k): v for k, v in res["index_build"].items()}
    if ib:
        s = sorted(ib)
        ax.loglog(s, [ib[n]["seconds"] for n in s], "v-", label="TaskIndex.build (fit, embed, add)")
        mx.loglog(s, [ib[n]["peak_rss_mb"] for n in s], "v-", label="TaskIndex.build (fit, embed, add)")
    fit = {int(k): v for k, v in res["fit"].items()}
    if fit:
        s = sorted(fit)
        ax.loglog(s, [fit[n]["by_threads"][t1]["ours"]["seconds"] for n in s], "d-",
                  label=f"batched logistic fits ({t1} thread)")
    ax.set(xlabel="tasks", ylabel="seconds", title="time")
    mx.set(xlabel="tasks", ylabel="peak RSS (MB)", title="memory of a build (fresh process)")
    for a in (ax, mx):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"ragim cost growth on {res['machine']['cpus']} CPU cores")
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
