"""Assemble docs/benchmarks.md and the README's results block from benchmarks/results/.

Every figure in docs/benchmarks.md is read from a file a benchmark script wrote, and the
script's command is printed beside it; `tests/test_benchmarks_doc.py` checks that the doc
is what this script produces from the committed results.

Also renders the measured block of docs/scaling.md (between its scale markers).

Run: .venv/bin/python benchmarks/report.py            (rewrites what is stale)
     .venv/bin/python benchmarks/report.py --check    (exit 1 if either file is stale)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
SCALING = ROOT / "docs" / "scaling.md"

EVALS = [
    ("heart-site", "Real heart disease, leave-site-out",
     "Each of the 28 tasks is a target once; the index holds only tasks from the *other* three hospitals."),
    ("heart-task", "Real heart disease, leave-task-out",
     "Each task is a target once; every task sharing patients with it is excluded from retrieval."),
    ("colon-arm", "Real colon-cancer trial, leave-arm-out",
     "Each of the 30 tasks is a target once; the index holds only tasks from the *other* two "
     "treatment arms."),
    ("colon-task", "Real colon-cancer trial, leave-one-task-out",
     "Each of the 30 tasks is a target once, alone in its fold; every task sharing patients with "
     "it (the whole-arm tasks of its arm and the other outcome of its subgroup) is excluded from "
     "the index."),
    ("synthetic", "`synthetic_family(n_tasks=300, n_features=10)`, leave-task-out",
     "A hierarchy system → disease → subtype → population: tasks that share more of their path share more "
     "of their wording and of their true coefficients."),
    ("procedure", "`procedure_family(n_tasks=1000)`, leave-task-out (200 targets)",
     "Real ICD-10-PCS procedures (official titles) with simulated patients; true coefficients share effects "
     "along the code's axes. Most tasks have 2 to 50 rows, so `per-task-all` is weak here."),
]


def _code_block(md: str) -> str:
    start = md.index("```")
    return md[start:].strip()


def _header_line(md: str) -> str:
    return md.splitlines()[0].lstrip("# ").strip()


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:,.{digits}f}"


def _sizes(res: dict, key: str) -> dict[int, dict]:
    return {int(k): v for k, v in res.get(key, {}).items()}


def _resources(res: dict, threads, result: dict | None = None, what: str = "the same on both sides of every ratio"
               ) -> str:
    """The per-figure line: threads on both sides, the BLAS/OpenMP libraries loaded when the
    figure was measured (``result["environment"]``) and the device."""
    from ragim.bench import resources_line

    env = (result or {}).get("environment") or res["machine"]["environment"]
    line = resources_line({"environment": env}, threads=0)
    counts = " and ".join(str(t) for t in threads)
    return line.replace("threads: 0 (ours) = 0 (baseline)", f"threads: {counts}, {what}")


def _gb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:,.0f} MB"


def scale_section(res: dict) -> list[str]:
    threads = res["machine"]["threads"]
    t1, tn = str(threads[0]), str(threads[-1])
    env = res["machine"]["environment"]
    out = ["## Scale (issues: reliability and scale; performance figures a reviewer can trust)", "",
           f"Command: `{res['command']}` (writes `benchmarks/results/scale.json` and `docs/img/scale_loglog.png`; "
           "`--resume` keeps finished parts). Single figures: `ragim bench retrieval --n-tasks N --threads 1,2 --json`, "
           "`ragim bench fit --n-tasks N --threads 1,2 --json`, `ragim bench generate --json`, `ragim bench lm --json`.",
           "",
           f"Machine: {res['machine']['cpus']} CPU cores ({env.get('cpu') or 'CPU model unknown'}), no GPU, shared "
           "with other work while it ran, so absolute times are noisy. Every ratio compares two measurements taken "
           "in the same process, back to back, with the same number of threads on both sides (threadpoolctl limits "
           "BLAS and OpenMP, `torch.set_num_threads` torch); each multi-thread figure stands beside its "
           "single-thread twin. On these shared cores the second thread often loses time instead of saving it.", ""]
    ret = _sizes(res, "retrieval")
    if ret:
        out += ["### Retrieval (precomputed clustered unit vectors, d=384, 1,000 queries, k=10)", "",
                f"| tasks | index | build s | recall@10 | index bytes/task | query s, {t1} thread | numpy s, {t1} thread "
                f"| speed-up, {t1} thread | query s, {tn} threads | numpy s, {tn} threads | speed-up, {tn} threads |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sorted(ret):
            r = ret[n]
            for name, ix in r["indices"].items():
                a, b = ix["by_threads"][t1], ix["by_threads"][tn]
                shared = "†" if ix.get("coarse_quantizer_from") else ""
                out.append(f"| {n:,} | {name}{' (chosen)' if name == r['ours']['index'] else ''} | "
                           f"{ix['build_seconds']:.1f}{shared} | {ix['recall_at_10']:.3f} | {ix['bytes_per_task']:,.0f} | "
                           f"{a['query_seconds']:.3f} | {r['by_threads'][t1]['baseline']['seconds']:.3f} | "
                           f"**{a['speedup_vs_numpy']:.2f}×** | {b['query_seconds']:.3f} | "
                           f"{r['by_threads'][tn]['baseline']['seconds']:.3f} | {b['speedup_vs_numpy']:.2f}× |")
        out += ["", _resources(res, threads, ret[max(ret)]), "",
                "Ours: FAISS inner-product search, CPU, nprobe 32 for IVF indices; baseline: exact numpy top-10 "
                "(a matrix product blocked over queries and rows, then argpartition). Times are the best of 3 rounds; "
                "each round times numpy and every index back to back at each thread count. The chosen index is the "
                "fastest with recall@10 >= 0.95. `index=\"auto\"` picks exact Flat up to 100k tasks and, beyond, "
                "IVF with about 4·√n lists over 8-bit codes (`SQ8`, the store-build rows named `auto` at 1M and 2M "
                "were built before that default and are `IVF…,Flat`); `SQ8` stores 8-bit codes, `PQ32` 32-byte product-quantised codes. † This index "
                "reused the k-means centroids of the `IVF…,Flat` row (`VectorStore.build(coarse=...)`), so its build time "
                "leaves out the k-means; the store-build table below times every index from scratch.", ""]
    sb = _sizes(res, "store_build")
    if sb:
        out += ["### Building the vector store, chunk by chunk (fresh process per build)", "",
                "| tasks | index | storage | seconds | peak RSS | peak anonymous RSS | index bytes/task |",
                "|---:|---|---|---:|---:|---:|---:|"]
        for n in sorted(sb):
            for r in sb[n].values():
                out.append(f"| {n:,} | {r['index']} | {r['storage']} | {r['seconds']:,.1f} | {_gb(r['peak_rss_mb'])} | "
                           f"{_gb(r['peak_anon_mb'])} | {r['index_bytes_per_task']:,.0f} |")
        out += ["", _resources(res, [env["cpus"]], ret.get(max(ret)) if ret else None,
                               what="FAISS's default (k-means training and adds; no baseline)"),
                "",
                f"`{next(iter(sb[min(sb)].values()))['description']}`: `VectorStore.create` trains the index on "
                "the first 200,000 vectors, then each chunk is added and dropped, so no process ever holds every "
                "vector twice. Peak RSS is the kernel's high-water mark (`VmHWM`) of a fresh Python process, "
                "including the pages of loaded libraries; peak anonymous RSS (sampled every 50 ms) leaves out "
                "file-backed pages, such as the inverted lists of an on-disk index.", ""]
    ib = _sizes(res, "index_build")
    if ib:
        out += ["### The full streaming `TaskIndex.build` (fit, embed, add; fresh process per build)", "",
                "| tasks | indexed | index | seconds | tasks/s | peak RSS | peak anonymous RSS | index bytes/task | "
                "parameter bytes/task | record bytes/task |",
                "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sorted(ib):
            r = ib[n]
            out.append(f"| {n:,} | {r['indexed']:,} | {r['index']} | {r['seconds']:,.0f} | {r['tasks_per_s']:,.0f} | "
                       f"{_gb(r['peak_rss_mb'])} | {_gb(r['peak_anon_mb'])} | {r['index_bytes_per_task']:,.0f} | "
                       f"{r.get('params_bytes_per_task', float('nan')):,.0f} | "
                       f"{r.get('record_bytes_per_task', float('nan')):,.0f} |")
        r = ib[max(ib)]
        out += ["", f"Each row: `{r['description'].replace(str(r['n']), 'N', 1)}` (`ragim.bench.bench_index_build`). "
                "Tasks with a class of fewer than 3 rows are left out, as always. The descriptions are embedded with the "
                "hashing embedder: MiniLM on 2 CPU cores embeds about 100 descriptions a second, which is weeks for "
                "millions of tasks. Parameter and record bytes are `TaskIndex.memory_bytes()` over the tasks indexed "
                "(records are kept as compact JSON)."] + [f"Note on {n:,}: {ib[n]['note']}." for n in sorted(ib)
                                                          if ib[n].get("note")] + [""]
    fit = _sizes(res, "fit")
    if fit:
        out += ["### Fitting many logistic models (`synthetic_family`, 20 features), equal threads", "",
                "| tasks | threads (each side) | batched tasks/s | per thread | sklearn loop tasks/s | per thread | "
                "speed-up | max abs coef diff |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sorted(fit):
            r = fit[n]
            for t, row in r["by_threads"].items():
                strong = "**" if t == t1 else ""
                out.append(f"| {n:,} | {t} | {row['ours']['tasks_per_s']:,.0f} | "
                           f"{row['ours']['tasks_per_s_per_thread']:,.0f} | {row['baseline']['tasks_per_s']:,.1f} | "
                           f"{row['baseline']['tasks_per_s_per_thread']:,.1f} | {strong}{row['ratio']:.1f}×{strong} | "
                           f"{r['max_abs_diff']:.1e} |")
        first = fit[min(fit)]
        out += [""] + [f"Note on {n:,}: {fit[n]['note']}." for n in sorted(fit) if fit[n].get("note")]
        out += ["", _resources(res, threads, first), "", f"Ours: {first['ours']['description']}.", "",
                f"Baseline: {first['baseline']['description']}. With more than one thread the loop runs on that many "
                "processes (joblib loky, started before the clock). Only solver time counts on both sides; the tasks "
                "are made 50,000 at a time. scikit-learn "
                f"{first.get('environment', {}).get('versions', {}).get('sklearn', '')} with lbfgs spends most of a fit in Python-level "
                "input checks, which is why its loop is slow here.", ""]
    gen = res.get("generate")
    if gen:
        out += ["### Generation throughput", "",
                "| generator | threads | batch | tasks/s |", "|---|---:|---:|---:|"]
        for t, row in gen["by_threads"].items():
            out += [f"| AttentionGenerator | {t} | {int(b):,} | {v:,.1f} |" for b, v in row["tasks_per_s_by_batch"].items()]
            out.append(f"| neighbour-mean (baseline) | {t} | 1 | {row['baseline_tasks_per_s']:,.1f} |")
        lm = res.get("generate_lm")
        if lm:
            out.append(f"| LMGenerator | {lm['threads']['ours']} | 1 | {lm['ours']['tasks_per_s']:.3f} "
                       f"({lm['ours']['seconds_per_task']:.1f} s per task) |")
        out += ["", _resources(res, list(gen["by_threads"]), gen), "",
                f"AttentionGenerator: {gen['ours']['description']}, {gen['n']} indexed tasks."]
        if lm:
            out += ["", f"LMGenerator: {lm['ours']['description']}; prompt {lm['ours']['prompt_tokens']:.0f} tokens, "
                    f"answer {lm['ours']['answer_tokens']:.0f} tokens on average; the first call (model load and "
                    f"GGUF conversion cache) took {lm['ours']['first_call_seconds']:.1f} s and is not counted."]
        out.append("")
    exps = res.get("growth_exponents")
    if exps:
        names = {"retrieval_query_seconds": ("FAISS query time, chosen index", ret),
                 "numpy_query_seconds": ("numpy exact query time", ret),
                 "store_build_seconds": ("vector store build time, auto index", sb),
                 "store_build_peak_rss_mb": ("vector store build peak RSS, auto index", sb),
                 "index_build_seconds": ("full TaskIndex.build time", ib),
                 "index_build_peak_rss_mb": ("full TaskIndex.build peak RSS", ib),
                 "fit_seconds": (f"batched fit time, {t1} thread", fit)}
        out += ["### Growth exponents", "",
                "Slope of log(cost) against log(tasks), fitted over every size measured: 1 is linear. The chosen "
                "index switches from Flat to IVF above 100k tasks, which is why query time grows far slower than "
                "linearly; peak memory starts from the ~0.2–0.9 GB a Python process with numpy, FAISS and torch "
                "holds before any task, so its exponent is below 1 at small sizes. The index behind each size is named "
                "in its table above: the memory exponents span index types (exact Flat up to 100k, then IVF).", "",
                "| cost | sizes | exponent |", "|---|---|---:|"]
        for k, v in exps.items():
            label, src = names.get(k, (k, {}))
            sizes = ", ".join(f"{n:,}" for n in sorted(src)) if src else ""
            out.append(f"| {label} | {sizes} | {v:.2f} |")
        out += ["", "![cost growth on a log-log scale](img/scale_loglog.png)", ""]
    return out


def scaling_block(res: dict) -> str:
    """The generated part of docs/scaling.md: the largest builds, memory per task per storage
    option, and the arithmetic of the sharded plan, all from scale.json."""
    sb, ib, ret = _sizes(res, "store_build"), _sizes(res, "index_build"), _sizes(res, "retrieval")
    lines = [f"Measured by `{res['command']}` on {res['machine']['cpus']} shared CPU cores "
             "(tables with every size in [benchmarks.md](benchmarks.md#scale-issues-reliability-and-scale-performance-"
             "figures-a-reviewer-can-trust)).", ""]
    if sb:
        n = max(sb)
        lines += [f"**Largest vector stores built here: {n:,} tasks** (synthetic 384-d vectors, streamed 100,000 at a "
                  "time):", ""]
        for r in sb[n].values():
            lines.append(f"- `{r['index']}`, storage `{r['storage']}`: {r['seconds']:,.0f} s, peak RSS "
                         f"{_gb(r['peak_rss_mb'])} (anonymous {_gb(r['peak_anon_mb'])}).")
        lines.append("")
    if ib:
        big = [n for n in ib if n >= 1_000_000] or [max(ib)]
        lines += [f"**Largest full `TaskIndex.build` here: {max(ib):,} tasks** (fit, embed, add; the `index` each "
                  "build chose with `\"auto\"` at the time):", ""]
        for n in sorted(big):
            r = ib[n]
            lines.append(f"- {n:,} tasks ({r['indexed']:,} indexed, `{r['index']}`): {r['seconds']:,.0f} s "
                         f"({r['tasks_per_s']:,.0f} tasks/s), peak RSS {_gb(r['peak_rss_mb'])} "
                         f"(anonymous {_gb(r['peak_anon_mb'])})." + (f" Note: {r['note']}." if r.get("note") else ""))
        lines.append("")
    per = {}
    if ib:
        r = ib[max(ib)]
        per = {"params": r.get("params_bytes_per_task"), "record": r.get("record_bytes_per_task")}
    opts = []  # (storage option, RAM bytes/task of the vectors, disk bytes/task, recall@10 or None)
    if ret:
        from ragim.vector_store import auto_factory

        auto_big = auto_factory(max(ret), 384)
        small = [n for n in ret if "Flat" in ret[n]["indices"]]
        if small:
            ix = ret[max(small)]["indices"]["Flat"]
            opts.append(("`Flat` (exact, float32; `auto` up to 100k)", ix["bytes_per_task"], 0, ix["recall_at_10"]))
        big = ret[max(ret)]["indices"]
        for name, ix in big.items():
            if name != "Flat":
                kind = {"Flat": "float32", "SQ8": "8-bit scalar codes", "PQ32": "32-byte PQ codes"}.get(
                    name.split(",")[1], name.split(",")[1])
                kind += "; `auto` beyond 100k" if name == auto_big else ""
                opts.append((f"`{name}` ({kind})", ix["bytes_per_task"], 0, ix["recall_at_10"]))
    disk = [r for v in sb.values() for r in v.values() if r["storage"] == "ondisk"]
    if disk:
        r = max(disk, key=lambda r: r["n"])
        opts.append((f"`{r['index']}`, storage `ondisk`", 0, r["index_bytes_per_task"], None))
    if opts and per.get("params") is not None:
        pr, rec = per["params"], per["record"]
        lines += ["**Memory per task, by storage option.** The vectors' bytes are measured (serialised index size "
                  "over tasks, at the largest size measured); every option adds the task's parameters "
                  f"({pr:,.0f} bytes: 21 float64 values for 20 features) and its record ({rec:,.0f} bytes of compact "
                  "JSON for a `synthetic_family` record with its fit statistics, `TaskIndex.memory_bytes()`).", "",
                  "| storage | recall@10 | vector bytes in RAM | on disk | RAM per task, all in | RAM for 1M tasks | "
                  "RAM for 10M tasks |", "|---|---:|---:|---:|---:|---:|---:|"]
        for name, ram, on_disk, recall in opts:
            total = ram + pr + rec
            lines.append(f"| {name} | {'—' if recall is None else f'{recall:.3f}'} | {ram:,.0f} | {on_disk:,.0f} | "
                         f"{total:,.0f} | {total * 1e6 / 2**30:.2f} GB | {total * 1e7 / 2**30:.1f} GB |")
        lines += ["", "The 1M and 10M columns are arithmetic (per-task bytes × tasks), not measurements; a real build "
                  "peaks higher (the full builds above): the Python process and its libraries, the chunk of task rows "
                  "being fitted, and the slack of FAISS's growing inverted lists come on top. An on-disk "
                  "index keeps its lists in the page cache: the kernel holds as much of the file as memory allows "
                  "and drops the rest, so it serves collections larger than RAM at the cost of disk reads.", ""]
        if ret:
            n = max(ret)
            r = ret[n]
            best = r["ours"]["index"]
            nlist = int(best.split(",")[0][3:]) if best.startswith("IVF") else None
            t1 = str(res["machine"]["threads"][0])
            per_q = r["indices"][best]["by_threads"][t1]["query_seconds"] / r["n_queries"]
            if nlist:
                scanned = 32 * n / nlist
                ns = per_q / scanned * 1e9
                lines += ["**Sharding arithmetic (a plan, not a measurement).** At " f"{n:,} tasks `{best}` with "
                          f"nprobe 32 scans about 32/{nlist:,} of the vectors, {scanned:,.0f} per query, in "
                          f"{per_q * 1e3:.2f} ms on one thread: {ns:,.0f} ns per scanned vector. With `index=\"auto\"` "
                          "(about 4·√n lists) a query scans about 8·√n vectors, so one thread would answer in about:", "",
                          "| tasks | lists | vectors scanned per query | ms per query, one thread | "
                          "RAM of `IVF…,SQ8` + parameters + records | 24 GB hosts at half their RAM |",
                          "|---:|---:|---:|---:|---:|---:|"]
                sq8 = next((ram for name, ram, _, _ in opts if "SQ8" in name), None)
                for tasks in (10_000_000, 100_000_000, 1_000_000_000):
                    lists = int(2 ** round(math.log2(4 * math.sqrt(tasks))))
                    sc = 32 * tasks / lists
                    ram = (sq8 + pr + rec) * tasks / 2**30 if sq8 is not None else float("nan")
                    lines.append(f"| {tasks:,} | {lists:,} | {sc:,.0f} | {sc * ns / 1e6:.1f} | {ram:,.0f} GB | "
                                 f"{math.ceil(ram / 12)} |")
                lines.append("")
    return "\n".join(lines).rstrip()


def render_scaling(text: str) -> str:
    start, end = "<!-- scale:start (benchmarks/report.py) -->", "<!-- scale:end -->"
    if start not in text or end not in text:
        raise SystemExit("docs/scaling.md lacks the scale markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    res = json.loads((RESULTS / "scale.json").read_text())
    return head + start + "\n" + scaling_block(res) + "\n" + end + tail


def eval_rows(name: str) -> dict[str, tuple[float, float]]:
    """method -> (AUROC, log-loss) from a results/eval_<name>.md table."""
    rows = {}
    for line in _code_block((RESULTS / f"eval_{name}.md").read_text()).splitlines():
        m = re.match(r"^(\S+(?: k=\d+)?)\s+([0-9.]+) \[[^]]+\]\s+([0-9.]+) \[", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return rows


README_METHODS = ["ragim-statistical", "ragim-attention", "pooled", "neighbor-mean", "per-task-all", "oracle"]
#: the default generator's evaluation method, and what it is compared with in the paired tables
DEFAULT_METHOD = "ragim-statistical"
COMPARED = ["pooled", "neighbor-mean", "ragim-attention", "rag-im-2024", "contextualized"]
BY_SIZE = ["ragim-statistical", "ragim-attention", "pooled", "neighbor-mean", "per-task-all", "oracle"]


def eval_analysis(name: str) -> list[str]:
    """Paired differences, skill and the by-size table of one evaluation, from its per-task CSV."""
    import pandas as pd

    from ragim.metrics import paired_differences, skill, summarize

    f = RESULTS / f"eval_{name}.csv"
    if not f.is_file():
        return []
    df = pd.read_csv(f, dtype={"task_id": str})
    zero = df[df["k_shot"] == 0]
    methods = set(zero["method"])
    if DEFAULT_METHOD not in methods:
        return []
    out = []
    base = [m for m in COMPARED if m in methods]
    pdiff = paired_differences(df, [DEFAULT_METHOD], base, metrics=["log_loss", "auroc", "ece"])
    if len(pdiff):
        out += [f"Paired differences, `{DEFAULT_METHOD}` minus each method on the same targets and rows "
                "(zero-shot; 95% bootstrap CI over targets; log-loss and ECE: below 0 is better, AUROC: above 0):",
                "", "| compared with | metric | mean difference | 95% CI | wins / losses |", "|---|---|---:|---|---:|"]
        for r in pdiff.itertuples():
            out.append(f"| `{r.baseline}` | {r.metric} | {r.mean_diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | "
                       f"{r.wins} / {r.losses} |")
        out.append("")
    summ = summarize(zero, metrics=["log_loss", "auroc"], n_boot=200)
    if "oracle" in methods:
        sk = skill(summ)
        sk = sk[sk["method"].isin([DEFAULT_METHOD, *base])]
        if len(sk):
            out += ["Skill: the share of the gap from the best of `pooled` and `neighbor-mean` to the `oracle` "
                    "(the noise-free truth the description determines) that a method closes; 0 is that baseline, "
                    "1 the oracle:", "", "| method | log-loss skill | AUROC skill |", "|---|---:|---:|"]
            def cell(v) -> str:
                return "—" if v is None or not math.isfinite(v) else f"{v:+.3f}"

            for m in [DEFAULT_METHOD, *base]:
                vals = sk[sk["method"] == m].set_index("metric")["skill"]
                if len(vals):
                    out.append(f"| `{m}` | {cell(vals.get('log_loss'))} | {cell(vals.get('auroc'))} |")
            out += ["", "— : the oracle is not better than the best baseline on that metric, so there is no gap "
                    "to close.", ""]
    by = summarize(zero, by_size=True, metrics=["log_loss"], n_boot=50)
    cols = [m for m in BY_SIZE if m in methods]
    groups = [g for g in by["size_group"].dropna().unique()]
    if len(groups) > 1:
        out += ["Mean zero-shot log-loss by target size (rows in the task):", "",
                "| rows | targets | " + " | ".join(f"`{m}`" for m in cols) + " |",
                "|---|---:|" + "---:|" * len(cols)]
        for g in groups:
            sub = by[by["size_group"] == g].set_index("method")
            n = int(sub["n_tasks"].max())
            out.append(f"| {g} | {n} | " + " | ".join(f"{sub.loc[m, 'mean']:.3f}" if m in sub.index else "—"
                                                      for m in cols) + " |")
        out.append("")
    return out


#: issue 14's thresholds for the default generator (docs/benchmarks.md, "The zero-shot targets")
AUROC_MARGIN = 0.005
SKILL_TARGET = 0.3
COVERAGE_RANGE = (0.85, 0.95)
SPEED_TARGET_S = 10.0
BASELINES = ["pooled", "neighbor-mean"]


def skill_interval(per_task, metric: str = "log_loss", *, n_boot: int = 2000, seed: int = 0):
    """The default generator's skill on ``metric`` (ragim.metrics.skill's definition: the share
    of the gap from the better of pooled and neighbor-mean to the oracle that it closes) with a
    percentile bootstrap 95% CI that resamples targets, the better baseline chosen again in each
    resample. Returns (skill, low, high), or None when the oracle is not better than the better
    baseline (no gap to close)."""
    import numpy as np

    from ragim.metrics import LOWER_IS_BETTER

    zero = per_task[per_task["k_shot"] == 0]
    wide = zero.pivot_table(index="task_id", columns="method", values=metric, aggfunc="mean")
    cols = [DEFAULT_METHOD, *BASELINES, "oracle"]
    if any(c not in wide.columns for c in cols):
        return None
    m = wide[cols].dropna().to_numpy(float)
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0  # skill on "lower is better" values

    def value(means):
        base = np.min(sign * means[..., 1:3], axis=-1)
        gap = base - sign * means[..., 3]
        return (base - sign * means[..., 0]) / np.where(gap > 0, gap, np.nan), gap

    point, gap = value(m.mean(axis=0))
    if not gap > 0:
        return None
    rng = np.random.default_rng(seed)
    draws, _ = value(m[rng.integers(0, len(m), size=(n_boot, len(m)))].mean(axis=1))
    lo, hi = np.nanquantile(draws, [0.025, 0.975])
    return float(point), float(lo), float(hi)


def _status(met: bool) -> str:
    return "met" if met else "**missed**"


def _ci(d) -> str:
    return f"{d['mean_diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"


def targets_section() -> list[str]:
    """One table: every target of the zero-shot issue, on every benchmark, read from the result
    files the sections below print (eval_*.csv, calibration_*.json, interval_coverage.json,
    peers_*.json, generate_statistical.json), with the paired 95% CI behind each verdict."""
    import pandas as pd

    from ragim.metrics import paired_differences

    rows = []
    for name, _, _ in EVALS:
        f = RESULTS / f"eval_{name}.csv"
        if not f.is_file():
            continue
        df = pd.read_csv(f, dtype={"task_id": str})
        zero = df[df["k_shot"] == 0]
        means = zero.groupby("method")[["log_loss", "auroc", "ece"]].mean()
        if DEFAULT_METHOD not in means.index or any(b not in means.index for b in BASELINES):
            continue
        pdiff = paired_differences(df, [DEFAULT_METHOD], BASELINES, metrics=["log_loss", "auroc", "ece"])
        diff = {(r.baseline, r.metric): r._asdict() for r in pdiff.itertuples()}
        ours = means.loc[DEFAULT_METHOD]
        ll = [diff[(b, "log_loss")] for b in BASELINES]
        rows.append((name, "log-loss ≤ pooled's and neighbor-mean's", f"{ours['log_loss']:.3f}",
                     "; ".join(f"vs {b}: {_ci(d)}" for b, d in zip(BASELINES, ll, strict=True)),
                     _status(all(d["mean_diff"] <= 0 for d in ll))))
        best = max(BASELINES, key=lambda b: means.loc[b, "auroc"])
        rows.append((name, f"AUROC ≥ the better baseline's − {AUROC_MARGIN}", f"{ours['auroc']:.3f}",
                     f"vs {best} ({means.loc[best, 'auroc']:.3f}): {_ci(diff[(best, 'auroc')])}",
                     _status(ours["auroc"] >= means.loc[best, "auroc"] - AUROC_MARGIN)))
        if "oracle" in means.index:  # synthetic and procedure: the CI against the better baseline
            better = min(BASELINES, key=lambda b: means.loc[b, "log_loss"])
            d = diff[(better, "log_loss")]
            rows.append((name, "log-loss: the paired 95% CI against the better baseline lies below 0",
                         f"{ours['log_loss']:.3f}", f"vs {better}: {_ci(d)}", _status(d["ci_high"] < 0)))
            for metric, goal in (("log_loss", SKILL_TARGET if name == "synthetic" else None), ("auroc", None)):
                sk = skill_interval(df, metric)
                what = f"skill in {metric.replace('_', '-')}" + (f" ≥ {goal}" if goal else " (reported)")
                if sk is None:
                    rows.append((name, what, "—", "the oracle is not better than the better baseline", "no gap"))
                else:
                    rows.append((name, what, f"{sk[0]:+.3f}", f"95% CI [{sk[1]:+.3f}, {sk[2]:+.3f}]",
                                 _status(sk[0] >= goal) if goal else "reported"))
        d = diff[("pooled", "ece")]
        cal_file = RESULTS / f"calibration_{name}.json"
        pooled_rows = ""
        met_rows = None
        if cal_file.is_file():
            cal = json.loads(cal_file.read_text())
            c = next(x for x in cal["differences"] if x["method"] == DEFAULT_METHOD and x["baseline"] == "pooled")
            pooled_rows = f"; over pooled test rows {c['ece']:.3f} vs {c['ece_baseline']:.3f}: {_ci(c)}"
            met_rows = c["mean_diff"] <= 0
        verdict = (f"per target: {_status(d['mean_diff'] <= 0)}"
                   + ("" if met_rows is None else f"; pooled rows: {_status(met_rows)}"))
        rows.append((name, "ECE ≤ pooled's", f"{ours['ece']:.3f}",
                     f"mean per-target ECE vs pooled ({means.loc['pooled', 'ece']:.3f}): {_ci(d)}{pooled_rows}",
                     verdict))
    cov = RESULTS / "interval_coverage.json"
    if cov.is_file():
        for r in json.loads(cov.read_text())["rows"]:
            if r["truth"] == "true" and r["nominal"] == 0.9 and r.get("k", 0) == 0:
                rows.append(("synthetic", f"nominal 90% intervals cover the true {r['part']} 85–95% of the time",
                             f"{r['coverage']:.1%}", f"{r['n']:,} intervals",
                             _status(COVERAGE_RANGE[0] <= r["coverage"] <= COVERAGE_RANGE[1])))
    for f in sorted(RESULTS.glob("peers_*.json")):
        res = json.loads(f.read_text())
        for peer, verdict in res["target"].items():
            rows.append((res["name"], f"log-loss below {peer}'s ({res['n_targets']} targets)",
                         _peer_mean(res, DEFAULT_METHOD, "log_loss"), f"vs {peer}: {_peer_difference(res, peer)}",
                         _status(verdict == "met")))
    gen = RESULTS / "generate_statistical.json"
    if gen.is_file():
        g = json.loads(gen.read_text())
        rows.append((f"{g['n']:,}-task index", f"1,000 models in under {SPEED_TARGET_S:.0f} s on 2 CPU cores",
                     f"{g['ours']['seconds']:.2f} s", f"{g['threads']['ours']} thread",
                     _status(g["ours"]["seconds"] < SPEED_TARGET_S)))
    if not rows:
        return []
    lines = ["### The zero-shot targets, one line each", "",
             "Every target the zero-shot issue sets for the default generator (`ragim-statistical`), read from "
             "the result files of the sections below (their commands are printed there). Differences are "
             "`ragim-statistical` minus the other method on the same targets and rows, with a 95% bootstrap "
             "CI over targets (log-loss and ECE: below 0 is better; AUROC: above 0). Skill's CI resamples "
             "targets too. ECE is given both ways the calibration section explains: the mean of per-target "
             "ECEs (mostly binning noise on a few rows each) and over every target's test rows pooled. "
             "Benchmarks are named as in their sections' commands (`--only NAME`).", "",
             "| benchmark | target | ragim-statistical | against [95% CI] | status |", "|---|---|---:|---|---|"]
    lines += [f"| {b} | {t} | {v} | {a} | {s} |" for b, t, v, a, s in rows]
    return [*lines, ""]


def readme_results() -> str:
    """The README's results block: AUROC / log-loss per evaluation, plus the headline scale figures."""
    lines = ["Zero-shot AUROC / log-loss on held-out tasks (bootstrap CIs and few-shot rows in "
             "[docs/benchmarks.md](docs/benchmarks.md)):", "",
             "| evaluation | " + " | ".join(f"`{m}`" for m in README_METHODS) + " |",
             "|---|" + "---:|" * len(README_METHODS)]
    for name, title, _ in EVALS:
        if not (RESULTS / f"eval_{name}.md").is_file():
            continue
        rows = eval_rows(name)
        cells = [f"{rows[m][0]:.3f} / {rows[m][1]:.3f}" if m in rows else "—" for m in README_METHODS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    scale = RESULTS / "scale.json"
    if scale.is_file():
        res = json.loads(scale.read_text())
        ret, fit, sb = _sizes(res, "retrieval"), _sizes(res, "fit"), _sizes(res, "store_build")
        ib = _sizes(res, "index_build")
        t1 = str(res["machine"]["threads"][0])
        lines += ["", f"Speed on {res['machine']['cpus']} shared CPU cores, each ratio against a baseline timed in the "
                  f"same run on the same number of threads ({t1} here; more in [docs/benchmarks.md](docs/benchmarks.md)):",
                  ""]
        if ret:
            n = max(ret)
            r = ret[n]
            lines.append(f"- retrieval over {n:,} tasks: {r['ours']['index']} answers "
                         f"{r['by_threads'][t1]['ours']['queries_per_s']:,.0f} queries/s, "
                         f"{r['by_threads'][t1]['ratio']:.1f}× exact numpy, recall@10 {r['recall_at_10']:.2f};")
        if sb:
            n = max(sb)
            auto = sb[n].get("auto/memory")
            if auto:
                lines.append(f"- building a {n:,}-task vector store ({auto['index']}) chunk by chunk: "
                             f"{auto['seconds']:,.0f} s, peak RSS {_gb(auto['peak_rss_mb'])};")
        for n in [n for n in sorted(ib) if n >= 1_000_000] or sorted(ib)[-1:]:
            lines.append(f"- the full `TaskIndex.build` of {n:,} tasks (fit, embed, add; {ib[n]['index']}): "
                         f"{ib[n]['seconds']:,.0f} s, peak RSS {_gb(ib[n]['peak_rss_mb'])};")
        for n in sorted(fit)[:2]:
            f = fit[n]["by_threads"][t1]
            lines.append(f"- fitting {n:,} logistic models: batched solver {f['ratio']:.0f}× a scikit-learn loop, "
                         f"max coefficient difference {fit[n]['max_abs_diff']:.0e};")
        if res.get("generate"):
            g = res["generate"]["by_threads"][t1]["tasks_per_s_by_batch"]
            lines.append("- AttentionGenerator: " + ", ".join(f"{v:,.0f} tasks/s at batch {b}" for b, v in g.items())
                         + ".")
    return "\n".join(lines)


def render_readme(text: str) -> str:
    start, end = "<!-- results:start (benchmarks/report.py) -->", "<!-- results:end -->"
    if start not in text or end not in text:
        raise SystemExit("README.md lacks the results markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + start + "\n" + readme_results() + "\n" + end + tail


def label_efficiency_section() -> list[str]:
    """Every benchmarks/results/label_efficiency_*.md (benchmarks/label_efficiency.py)."""
    files = sorted(RESULTS.glob("label_efficiency_*.md"))
    if not files:
        return []
    lines = ["## Label efficiency and few-shot adaptation (issue: adaptation that never backfires)", "",
             "Zero-shot model of the statistical generator, adapted to k labelled rows of the target by "
             "`ZeroShotClassifier`'s default adaptation (the evidence chooses between keeping it, an intercept shift, "
             "a recalibration and a MAP refit, following the policy the generator validated on its own index's "
             "held-out tasks: per k, the option (keep zero-shot, the evidence with a margin of 1, 3 or 10 nats, "
             "always the intercept shift, always the Bayesian update under the generated SDs) whose upper bound "
             "(mean + one standard error over tasks) on the change in held-out log-loss against zero-shot is lowest and below zero, "
             "among those that lose more than 0.05 AUROC in at most 5% of draws; "
             "`ragim.adaptation_policy`), against a per-task logistic regression on the same k rows and MAP "
             "under the generated mean and SD (the elicited-prior method of AutoElicit, ICML 2025). Each table "
             "says which targets and draws it covers; per-draw rows are in the `.csv` beside each `.md`.", ""]
    return [*lines, *label_efficiency_targets(files), *md_sections(files, "###")]


def md_sections(files, heading: str) -> list[str]:
    """The result pages ``files`` one after the other, each one's "# title" as ``heading``."""
    lines = []
    for f in files:
        body = f.read_text().strip().splitlines()
        if body and body[0].startswith("# "):
            lines += [f"{heading} {body[0][2:]}", ""]
            body = body[1:]
        lines += [*body, ""]
    return lines


def label_efficiency_targets(files: list[Path]) -> list[str]:
    """One row per benchmark: each of the issue's targets met or missed, by how much, from the
    ``.json`` beside each ``.md`` (its per-k summary)."""
    rows = []
    for f in files:
        j = f.with_suffix(".json")
        if not j.is_file():
            continue
        res = json.loads(j.read_text())
        per_k, head = res["per_k"], res["headline"]
        if not per_k:
            continue
        gaps = [(r["adapted_ll"] - r["zero_ll"], r["k"]) for r in per_k]
        gap, gk = max(gaps)
        ll = (f"met (closest: {gap:+.4f} at k = {gk})" if head["ll_ok"]
              else f"**missed**: adapted {gap:+.4f} above zero-shot at k = {gk}"
              + (f" (and {len([g for g in gaps if g[0] > 1e-12]) - 1} other k)"
                 if len([g for g in gaps if g[0] > 1e-12]) > 1 else ""))
        share, sk = max((r["lose_share"], r["k"]) for r in per_k)
        lose = ("met (no draw)" if share == 0 else f"met (most: {share:.1%} at k = {sk})")
        lose = (lose if head["lose_ok"]
                else f"**missed**: {share:.1%} of draws at k = {sk}")
        worst, wk = min((r["worst_d_auroc"], r["k"]) for r in per_k)
        worst_ll, wlk = max((r["worst_d_ll"], r["k"]) for r in per_k)
        k256 = ("not testable: no target's support pool holds 256 rows" if head["k256"] is None
                else f"{'met' if head['k256'] >= -0.01 else '**missed**'} ({head['k256']:+.3f})")
        name = res["benchmark"] + ("" if f.stem == f"label_efficiency_{res['benchmark']}"
                                   else f" ({f.stem.split(res['benchmark'])[-1].lstrip('_')})")
        rows.append(f"| {name} | {res['n_targets']} | {res['draws']} | {head['worth_text']} | {ll} | "
                    f"{lose} | {k256} | {worst:+.3f} (k = {wk}) | {worst_ll:+.3f} (k = {wlk}) |")
    if not rows:
        return []
    return ["The issue's targets, per benchmark (from the tables below): adapted mean log-loss ≤ "
            "zero-shot at every k; at most 5% of draws lose more than 0.05 AUROC against zero-shot at "
            "every k; at k = 256 adapted within 0.01 AUROC of the per-task LR. Worst draw: the largest "
            "AUROC drop and log-loss rise of one draw against zero-shot, over every k and target.", "",
            "| benchmark | targets | draws per k | zero-shot worth (labelled rows) | "
            "log-loss ≤ zero-shot | ≤ 5% of draws lose > 0.05 AUROC | k = 256 vs per-task LR | "
            "worst draw ΔAUROC | worst draw Δlog-loss |",
            "|---|---:|---:|---|---|---|---|---|---|", *rows, ""]


def domain_section() -> list[str]:
    """benchmarks/results/domain_check.json (benchmarks/domain_check.py)."""
    f = RESULTS / "domain_check.json"
    if not f.is_file():
        return []
    res = json.loads(f.read_text())
    lines = ["## Out-of-domain warnings on every benchmark index (issue: adaptation that never backfires)", "",
             "Each index is built with the default embedder and calibrated on itself: the threshold is the 1st "
             "percentile of its tasks' leave-one-out neighbour similarities, raised where needed to a robust "
             "fence (median − 3 spreads) and the embedder's floor, so that no outlying task drags it down "
             "(`ragim.domain.calibrate`). A description whose nearest indexed task is less similar, or that has "
             "no effective neighbour, is flagged. Leave-one-out targets exclude tasks that share their "
             "patients, as in evaluation.", "",
             f"Command: `.venv/bin/python {res['command']}` (per-description similarities: "
             "`benchmarks/results/domain_check.json`)", "",
             "| index | tasks | embedder | threshold | leave-one-out targets flagged (allowed) | lowest top similarity "
             "of a target | other specialties flagged |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for name, r in res["benchmarks"].items():
        hit = sum(x["flagged"] for x in r["foreign"])
        worst = max(x["top_similarity"] for x in r["foreign"])
        lines.append(f"| {name} | {r['n_tasks']} | {r['embedder']} | {r['threshold']:.3f} | {r['loo_flagged']} "
                     f"({r['loo_allowed']}) | {r['loo_min_top_similarity']:.3f} | {hit} of {len(r['foreign'])} "
                     f"(highest similarity {worst:.3f}) |")
    return [*lines, ""]


def description_ceiling_section() -> list[str]:
    f = RESULTS / "description_ceiling.json"
    if not f.is_file():
        return []
    res = json.loads(f.read_text())
    rows, oracle = res["held_out_log_loss"], res["oracle_in_sample_log_loss"]
    cols = ["pooled", "text", "text-glmm", "neighbors", "neighbor-mean", "stack"]
    base = min(rows["descriptions"]["pooled"], rows["descriptions"]["neighbor-mean"])
    out = ["### How much the wording of the descriptions limits zero-shot skill (synthetic)", "",
           "Held-out log-loss of the default generator's candidates, validated inside an index of all 300 "
           "synthetic tasks (leave-task-out, the generator's own `cv_` table), with the tasks' free-text "
           "descriptions and with each description replaced by one token per node of the task's true path "
           "(the hierarchy made exact). The last column is the share of the gap from the better baseline "
           "(pooled, neighbor-mean) to the oracle's mean per-task log-loss on the same tasks "
           f"({oracle:.4f}) that the stack closes.", "",
           f"Command: `.venv/bin/python {res['command']} --json-out benchmarks/results/description_ceiling.json` "
           f"(embedder {res['embedder']})", "",
           "| descriptions as | " + " | ".join(f"`{c}`" for c in cols) + " | stack's skill |",
           "|---|" + "---:|" * (len(cols) + 1)]
    skill = {name: (base - r["stack"]) / (base - oracle) for name, r in rows.items()}
    for name, r in rows.items():
        out.append(f"| {name} | " + " | ".join(f"{r[c]:.4f}" for c in cols) + f" | {skill[name]:+.2f} |")
    out += ["", f"With the hierarchy exact the stack closes {skill['true path']:.0%} of the gap, with the "
            f"free text {skill['descriptions']:.0%}: the wording costs the difference, and the rest is per-task "
            "fit noise and path nodes no indexed task holds (300 tasks over 4,608 leaves)."]
    if "fields, unnested" in skill and "system and disease" in skill:
        out += ["", "The last two rows say where the wording's cost lies. `fields, unnested` gives each level's value "
                "its own token, as a description's words do; `system and disease` keeps only the first two nodes "
                f"of the path. Leaving the subtype and the population out closes {skill['system and disease']:.0%}, "
                f"naming them as plain fields {skill['fields, unnested']:.0%}: their effects are specific to "
                "each disease, so words that name them carry no effect of their own, and the cost is the weight "
                "such words take from the words that do (the per-word scales, `StatisticalConfig.ard`, "
                "answer this)."]
    out.append("")
    return out


def calibration_section() -> list[str]:
    """Every benchmarks/results/calibration_*.json and .md (benchmarks/calibration.py)."""
    files = sorted(RESULTS.glob("calibration_*.json"))
    if not files:
        return []
    lines = ["### Calibration over pooled test rows", "",
             "The `ece` column above is a mean of per-target ECEs, each on one target's few test rows (median 21 "
             "on synthetic, 5 on procedure). That estimate is mostly binning noise, and the noise grows with the "
             "spread of the predictions: on synthetic the true generating model scores 0.173 and the near-constant "
             "pooled model 0.153. The tables below pool the test rows of every target before binning "
             "(`ragim.calibration`), and add the calibration intercept and slope (0 and 1 are perfect; a slope "
             "below 1: predictions too extreme). Same folds, targets and test rows as the tables above; the CIs "
             "resample targets.", "",
             "| benchmark | targets | ECE pooled rows: ragim-statistical | pooled | difference [95% CI] | "
             "neighbor-mean | calibration slope: ragim-statistical | pooled | neighbor-mean | "
             "mean per-target ECE: ragim-statistical | pooled |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for f in files:
        res = json.loads(f.read_text())
        cal = {r["method"]: r for r in res["calibration"]}
        diff = next(d for d in res["differences"]
                    if d["method"] == DEFAULT_METHOD and d["baseline"] == "pooled")
        ours, pooled, nm = cal[DEFAULT_METHOD], cal["pooled"], cal["neighbor-mean"]
        lines.append(f"| {res['name']} | {res['n_targets']} | {ours['ece']:.3f} | {pooled['ece']:.3f} | "
                     f"{diff['mean_diff']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}] | {nm['ece']:.3f} | "
                     f"{ours['calibration_slope']:.2f} | {pooled['calibration_slope']:.2f} | "
                     f"{nm['calibration_slope']:.2f} | {ours['per_target_ece']:.3f} | {pooled['per_target_ece']:.3f} |")
    return [*lines, "", *md_sections([f.with_suffix(".md") for f in files], "####")]


def _peer_mean(res: dict, method: str, metric: str) -> str:
    v = next((r["mean"] for r in res["summary"] if r["method"] == method and r["metric"] == metric), None)
    return "n/a" if v is None else f"{v:.3f}"


def _peer_difference(res: dict, peer: str) -> str:
    d = next((r for r in res["differences"] if r["baseline"] == peer and r["metric"] == "log_loss"), None)
    if d is None or d["mean_diff"] is None:
        return "n/a"
    return f"{d['mean_diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def peers_section() -> list[str]:
    """Every benchmarks/results/peers_*.json and .md (benchmarks/peers.py)."""
    files = sorted(RESULTS.glob("peers_*.json"))
    if not files:
        return []
    lines = ["### Against the published peers: rag-im-2024 and contextualized-ml", "",
             "Zero-shot, the default generator against the original RAG-IM hypernetwork (`rag-im-2024`, "
             "the paper's architecture and training settings, trained on each fold's index) and "
             "contextualized-ml's `ContextualizedClassifier` (`contextualized`, the description embedding as "
             "context, fitted on each fold's index rows), on the same folds, targets and test rows as the tables "
             "above (where a run covers only some of their folds, the targets column says which: each such fold "
             "is scored against the same index as above). The issue's target: ragim-statistical's log-loss below both peers' (met: the 95% CI of the "
             "paired difference over targets lies below 0).", "",
             "| benchmark | targets | log-loss: ragim-statistical | rag-im-2024 | contextualized | "
             "difference vs rag-im-2024 [95% CI] | difference vs contextualized [95% CI] | "
             "AUROC: ragim-statistical | rag-im-2024 | contextualized | target |",
             "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---|"]
    for f in files:
        res = json.loads(f.read_text())
        value, delta = partial(_peer_mean, res), partial(_peer_difference, res)
        target = ", ".join(f"{p}: {v}" for p, v in res["target"].items())
        folds = res["command"].split("--main-folds ")[1].split(" --")[0] if "--main-folds" in res["command"] else ""
        targets = f"{res['n_targets']}" + (f" (folds {folds.replace(' ', ', ')})" if folds else "")
        lines.append(f"| {res['name']} | {targets} | {value(DEFAULT_METHOD, 'log_loss')} | "
                     f"{value('rag-im-2024', 'log_loss')} | {value('contextualized', 'log_loss')} | "
                     f"{delta('rag-im-2024')} | {delta('contextualized')} | {value(DEFAULT_METHOD, 'auroc')} | "
                     f"{value('rag-im-2024', 'auroc')} | {value('contextualized', 'auroc')} | {target} |")
    return [*lines, "", *md_sections([f.with_suffix(".md") for f in files], "####")]


def lm_throughput_section() -> list[str]:
    """Every benchmarks/results/lm_throughput_*.json (benchmarks/lm_throughput.py)."""
    files = sorted(RESULTS.glob("lm_throughput_*.json"))
    if not files:
        return []
    lines = ["## LM generation throughput: decoders, answer formats, batching (issue: the LM generator)", "",
             "Every path decodes the same targets' prompts with the same model, greedy, in one process with equal "
             "torch threads; CPU seconds are compared because the 2 cores were shared (wall seconds are in the "
             "JSON). `builtin`: the hand-written constrained decoder (the default); `engine`: llguidance through a "
             "transformers logits processor. Ratios: CPU speed against the baseline path named above each table. "
             "`lm_throughput_heart_procedure.json` was measured before batched decoding wrote its key/value cache "
             "in place (`ragim.lm.constrained.preallocated_cache`), `lm_throughput_preallocated_cache.json` after, "
             "beside two other benchmark jobs on the same 2 cores (so both of its paths ran slower than alone). "
             "`lm_throughput_bf16.json` adds the weights in bfloat16 (`LMConfig(dtype=\"bfloat16\")`) and 12 "
             "targets per batch, beside other jobs; its last column says how the bfloat16 answers agree with the "
             "float32 path's (the untrained base model's answers: one digit that differs changes the greedy "
             "continuation). `lm_throughput_chunked_prefill.json` is after the prompts' own tokens were prefilled in "
             "row blocks (`ragim.lm.constrained.prefill_in_chunks`), beside the test suite on the other core; its "
             "baseline path ran 23% faster than in `lm_throughput_bf16.json`, so compare ratios within a file. "
             "`lm_throughput_no_amx.json` is the same comparison on a CPU whose bfloat16 units are AVX-512 BF16 "
             "without AMX, beside the test suite on the other core: there bfloat16 weights gain nothing. The "
             "earlier files do not record the CPU's bfloat16 units (the training-precision runs of the same weeks, "
             "below, ran on CPUs with AMX).", ""]
    for f in files:
        res = json.loads(f.read_text())
        env = res.get("environment", {})
        units = env.get("cpu_bfloat16_units")
        cpu = "" if units is None else f"; CPU: {env.get('cpu') or 'unknown'}, bfloat16 units: {', '.join(units) or 'none'}"
        lines += [f"### `{f.name}`: {res['base_model']}, {res['n']} targets, k = {res['k']}", "",
                  f"Command: `.venv/bin/{res['command']}`; threads: {res['threads']['ours']} on every path; "
                  f"device: {res['device']}{cpu}.", ""]
        for sch in res["schemas"]:
            twins = any(r.get("same_as_float32") for r in sch["paths"].values())
            lines += [f"{sch['n_params']} parameters per answer; baseline path `{sch['baseline_path']}`:", "",
                      "| path | CPU s per task | answer tokens per CPU s | mean prompt tokens | parse rate | "
                      "CPU speed vs baseline |" + (" numbers as in float32 (largest difference) |" if twins else ""),
                      "|---|---:|---:|---:|---:|---:|" + ("---|" if twins else "")]
            for name, r in sch["paths"].items():
                per_task = r["cpu_seconds"] / res["n"]
                same = r.get("same_as_float32")
                agree = "" if not twins else (
                    f" {same['equal_fraction']:.0%} ({same['max_abs_difference']:.2f}) |" if same else " |")
                lines.append(f"| `{name}` | {per_task:.1f} | {r['mean_answer_tokens'] * res['n'] / r['cpu_seconds']:.2f} | "
                             f"{r['mean_prompt_tokens']:.0f} | {r['parse_rate']:.0%} | "
                             f"{sch['cpu_ratios'][name]:.2f}× |" + agree)
            lines.append("")
    return lines


def lm_train_precision_section() -> list[str]:
    """Every benchmarks/results/lm_train_precision_*.json (benchmarks/lm_train_precision.py)."""
    files = sorted(RESULTS.glob("lm_train_precision_*.json"))
    if not files:
        return []
    lines = ["## LM training steps in float32 and under bf16 autocast on a CPU (issue: the LM generator)", "",
             "Each file times optimiser steps of one stage (`train_sft` or `train_grpo`) with "
             "`mixed_precision=\"no\"` and `\"bf16\"` in one process, alternating, on the same examples; the "
             "first step of each run is left out. The decoding step is one step of a group's sampling (the "
             "frozen weights are cast again at every step under autocast). Steps may differ in length between the "
             "two runs of GRPO (sampled answers), which the medians smooth only in part. The one-thread files were "
             "measured beside another benchmark job on the other core, the `_2threads` files on the idle "
             "machine.", "",
             "| file | stage | prompts | mean prompt tokens | batch | steps timed per precision | "
             "s per step, float32 | s per step, bf16 | speed-up | decoding step, float32 / bf16 (s) | "
             "CPU bfloat16 units | threads |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    commands = []
    for f in files:
        r = json.loads(f.read_text())
        prompts = r["family"] + (", statistical prior" if r["statistical_prior"] else "") + (
            ", activation checkpointing" if r["activation_checkpointing"] else "")
        batch = r["batch_size"] if r["stage"] == "sft" else "1 prompt x group"
        dec = r["decode_step_seconds"]
        lines.append(f"| `{f.name}` | {r['stage']} | {prompts} | {r['mean_prompt_tokens']:,.0f} | {batch} | "
                     f"{r['timed_steps_per_precision']} | {r['seconds_per_step']['no']:.1f} | "
                     f"{r['seconds_per_step']['bf16']:.1f} | **{r['speed_up_bf16']:.2f}×** | "
                     f"{dec['no']:.3f} / {dec['bf16']:.3f} | {', '.join(r['cpu_bf16_flags']) or 'none'} | "
                     f"{r['threads']} |")
        commands.append(f"`.venv/bin/{r['command']}`")
    return lines + ["", "Commands: " + "; ".join(commands) + ".", ""]


def lm_generation_parts_section() -> list[str]:
    """Every benchmarks/results/lm_generation_parts*.json (benchmarks/lm_generation_parts.py)."""
    files = sorted(RESULTS.glob("lm_generation_parts*.json"))
    if not files:
        return []
    lines = ["### Where batched generation's CPU time goes", "",
             "One batched, grammar-constrained generation (`engine_batched_compact` in the dtype named), timed in "
             "parts in CPU seconds of the process; then the same prompts' prefill replayed alone with several "
             "token budgets per forward call (`ragim.lm.constrained.prefill_in_chunks`; \"all rows\" is one call, "
             "as transformers' `generate` would do it). \"torch unpack\" is the same generation with the grammar's "
             "bitmask unpacked by torch shifts, as the processor did before `unpack_bitmask`. Both files were measured beside a two-thread "
             "training job (heart SFT) starting on the other core, which slowed the first run of the heart file (its "
             "prefill took 11.0 CPU s there against 8.6 s in the run that followed): compare parts within a row, "
             "and the replayed budgets with each other.", ""]
    for f in files:
        res = json.loads(f.read_text())
        lines += [f"`{f.name}`: {res['base_model']}, {res['dtype']}, {res['n']} targets per batch, k = {res['k']}, "
                  f"{res['threads']} thread(s); command `.venv/bin/{res['command']}`; the generator's budget "
                  f"`CPU_PREFILL_TOKENS` = {res['cpu_prefill_tokens']:,}.", "",
                  "| parameters | run | CPU s | shared prefix | prompt prefill | decoding forward passes | "
                  "grammar processor | other | answer tokens |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for sch in res["schemas"]:
            for name, g in sch["generation"].items():
                p = g["parts"]
                lines.append(f"| {sch['n_params']} | {name} | {g['cpu_seconds']:.1f} | {p['shared prefix']:.1f} | "
                             f"{p['prompt prefill']:.1f} | {p['decoding forward passes']:.1f} | "
                             f"{p['grammar processor']:.1f} | {p['other']:.1f} | {g['answer_tokens']:,} |")
        lines += ["", "| parameters | mean prompt tokens | shared prefix tokens | prefill budget (tokens per call) | "
                  "forward calls | CPU s |", "|---:|---:|---:|---|---:|---:|"]
        for sch in res["schemas"]:
            for r in sch["prefill"]:
                budget = "all rows" if r["max_tokens"] is None else f"{r['max_tokens']:,}"
                lines.append(f"| {sch['n_params']} | {sch['mean_prompt_tokens']:,.0f} | "
                             f"{sch['shared_prefix_tokens']:,} | {budget} | {r['forward_calls']} | "
                             f"{r['cpu_seconds']:.1f} |")
        lines.append("")
    casc = RESULTS / "lm_cascade_attention.json"
    if casc.exists():
        res = json.loads(casc.read_text())
        lines += ["### Cascade attention over the shared prefix: a micro-benchmark", "",
                  f"Command: `.venv/bin/{res['command']}`; one decoding step's attention over {res['layers']} "
                  f"layers (a cold cache per layer), SmolLM2-135M's heads, {res['dtype']}, {res['threads']} "
                  "thread(s). `sdpa` is today's attention over each row's whole cache; the cascade forms read the "
                  "shared prefix once for all rows and merge by log-sum-exp, from public torch operations or from "
                  "torch's private CPU flash operator (`aten::_scaled_dot_product_flash_attention_for_cpu`). "
                  "Not used by ragim.", "",
                  "| rows | cached positions | shared prefix | sdpa ms per step | cascade, public ops | "
                  "cascade, flash operator | largest difference from sdpa |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["shapes"]:
            worst = max(r["cascade_public"]["max_abs_difference"], r["cascade_flash"]["max_abs_difference"])
            lines.append(f"| {r['rows']} | {r['positions']:,} | {r['shared_prefix']:,} | {r['sdpa']['ms_per_step']:.1f} | "
                         f"{r['cascade_public']['ms_per_step']:.1f} | {r['cascade_flash']['ms_per_step']:.1f} | "
                         f"{worst:.4f} |")
        lines.append("")
    return lines


def lm_decode_profile_section() -> list[str]:
    """benchmarks/results/lm_decode_profile.json (benchmarks/lm_decode_profile.py)."""
    f = RESULTS / "lm_decode_profile.json"
    if not f.exists():
        return []
    res = json.loads(f.read_text())
    lines = ["### Where the LM's decode time goes", "",
             f"Command: `.venv/bin/{res['command']}`; {res['threads']} torch thread(s), CPU; random token ids "
             "(a forward pass costs the same for any ids). Prefill: CPU ms per prompt token. Decode step: CPU "
             "seconds to add one token to every row of the batch, with the cache `generate` uses by default "
             "(`DynamicCache`, grown by concatenation) and with a preallocated `StaticCache`.", "",
             "| batch | context tokens | prefill ms per token | decode step s, dynamic cache | "
             "decode step s, static cache | decode s per row-token, dynamic |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['batch']} | {r['context']:,} | {r['prefill_ms_per_token']:.2f} | "
                     f"{r['decode_step_s_dynamic']:.3f} | {r['decode_step_s_static']:.3f} | "
                     f"{r['decode_step_s_dynamic'] / r['batch']:.3f} |")
    ops = res["op_shares"]
    shares = ", ".join(f"{name} {share:.0%}" for name, share in ops["shares"].items())
    lines += ["", f"CPU time of a decode step at batch {ops['batch']} and {ops['context']:,} context tokens "
              f"(`torch.profiler`, self time): {shares}.", ""]
    bound = RESULTS / "lm_prompt_prefix.md"
    if bound.exists():
        lines += ["### What bounds the speed-up: the prompt's own tokens", "",
                  "Command: `.venv/bin/python benchmarks/lm_prompt_prefix.py` (the prompts of the throughput "
                  "run above; prefill cost from the table above; baseline: `builtin_one_prompt_json`). The batched "
                  "decoder computes the shared prefix once; each prompt's own tokens must still be prefilled, "
                  "which alone caps the speed-up below, even if decoding the answer cost nothing. The cap is for "
                  "float32 weights: with bfloat16 weights prefill is cheaper, and `lm_throughput_bf16.json` above "
                  "goes past the 14-parameter cap (6.17x).", "",
                  *bound.read_text(encoding="utf-8").strip().splitlines(), ""]
    return lines


def gpu_section() -> list[str]:
    """The prepared GPU check (``scripts/gpu_check.sh`` on a CUDA machine): ``gpu_check.json``."""
    f = RESULTS / "gpu_check.json"
    if not f.is_file():
        return []
    r = json.loads(f.read_text())
    if r.get("mode") != "cuda":
        return []
    failed = [k for k in ("pytest_gpu", "lm", "batched_logistic", "faiss") if "error" in r.get(k, {"error": "not run"})]
    if failed:  # the script keeps what it finished; say what is missing rather than guess
        return ["## GPU check (issue 18)", "",
                f"The last run on an {r.get('device_name', 'unknown GPU')} did not finish these sections: "
                + "; ".join(f"`{k}` ({r.get(k, {}).get('error', 'not run')})" for k in failed)
                + ". Rerun `scripts/gpu_check.sh` on a CUDA machine.", ""]
    lm, sol, fx, tests = r["lm"], r["batched_logistic"], r["faiss"], r["pytest_gpu"]
    weights = ("the weights of `{}`".format(lm["base_model"]) if lm["weights"] == "pretrained" else
               f"the architecture of SmolLM2-135M-Instruct ({lm['n_layers']} layers, "
               f"{lm['n_base_params'] / 1e6:.1f} M parameters; its `config.json` and tokenizer, written by "
               "`scripts/gpu_check.sh --export-architecture .gpu/smollm2-arch`) with seeded random weights: the "
               "94 MB GGUF could not travel to the GPU machine. The grammar bounds every answer all the same, but "
               "the numbers written, and so the answer lengths, are not the trained model's: compare tokens/s")
    arch = f" --architecture .gpu/{lm['architecture']}" if lm["weights"] == "random" else ""
    out = ["## GPU check (issue 18)", "",
           f"One run of the prepared GPU script on an **{r['device_name']}** ({sol['cpu_threads']} CPU threads beside it), torch "
           f"{r['torch']}, transformers {r['transformers']}, {lm['dtype']} autocast; the model is {weights}. "
           f"Command (on the GPU machine): `scripts/gpu_check.sh{arch}` (writes `benchmarks/results/gpu_check.json`; "
           "`--cpu` runs the same plumbing on a CPU, as the test suite does).", "",
           f"- `gpu`-marked tests ({', '.join(f'`{t}`' for t in tests['files'])}): {tests['summary']}" +
           ("; the skipped one needs FAISS built for CUDA, and this machine had only `faiss-cpu` (PyPI's "
            "`faiss-gpu-cu12` needs the CUDA 12 libraries, and the image has CUDA 13)." if "skipped" in tests["summary"]
            else "."),
           f"- LoRA SFT step (rank {lm['lora_r']}, AdamW), {lm['batch']} sequences of {lm['seq_len']:,} tokens: "
           f"**{lm['sft_step_seconds']:.3f} s** ({lm['sft_tokens_per_s']:,.0f} tokens/s).",
           f"- GRPO step: {lm['grpo_group']} answers of {lm['grpo_n_params']} parameters sampled under the grammar "
           f"(temperature 1), then the policy-gradient backward on their log-probabilities: "
           f"**{lm['grpo_step_seconds']:.1f} s**; {lm['grpo_parse_rate']:.0%} of the answers parse.", ""]
    out += ["Batched grammar-constrained generation (compact answers, greedy, prompts of "
            f"{lm['generate'][0]['prompt_tokens']:,} random tokens; {lm['generate_parse_rate']:.0%} of answers parse):",
            "", "| parameters | prompts per call | seconds | answer tokens (mean) | tasks/s | tokens/s |",
            "|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {g['n_params']} | {g['batch']} | {g['seconds']:.2f} | {g['answer_tokens_mean']:.0f} | "
            f"{g['tasks_per_s']:.2f} | {g['tokens_per_s']:,.0f} |" for g in lm["generate"]]
    out.append("")
    by = {(g["n_params"], g["batch"]): g for g in lm["generate"]}
    one, most = min(b for _, b in by), max(b for _, b in by)
    n = lm["generate"][0]["n_params"]
    out += [f"A call of {most} prompts takes {by[(n, most)]['seconds'] / by[(n, one)]['seconds']:.1f}x the time of "
            f"one prompt ({n} parameters): one answer's decoding is bound by the per-token cost of running the "
            "model step by step, not by the GPU's arithmetic, so on the GPU throughput comes from batching."]
    d = lm.get("decode_per_token_batch_1")
    if d:
        out += [f" Per token at one prompt: {d['constrained_ms_per_token']:.1f} ms with the grammar, "
                f"{d['plain_generate_ms_per_token']:.1f} ms for transformers' own greedy `generate` without it"
                + (f", {d['plain_generate_static_cache_ms_per_token']:.1f} ms with its static cache (a compiled "
                   "forward on CUDA)." if "plain_generate_static_cache_ms_per_token" in d else ".")]
    out += ["",
            f"- Batched logistic solver (`fit_logistic_batched`), {sol['n_tasks']:,} tasks of {sol['n_features']} "
            f"features: **{sol['seconds']:.2f} s** on the GPU ({sol['tasks_per_s']:,.0f} tasks/s), "
            f"{sol['cpu_seconds']:.2f} s on the machine's {sol['cpu_threads']} CPU threads "
            f"({sol['speedup_vs_cpu']:.2f}x); largest coefficient difference {sol['max_abs_coef_difference_vs_cpu']:.1e}; "
            f"{sol['ok_fraction']:.0%} converged.",
            f"- FAISS exact search ({'GPU' if fx['on_gpu'] else 'CPU: no GPU build of FAISS was available'}), "
            f"{fx['n']:,} vectors of {fx['dim']}, {fx['n_queries']:,} queries: {fx['seconds']:.2f} s "
            f"({fx['queries_per_s']:,.0f} queries/s).", ""]
    return out


def build() -> str:
    lines = ["# Benchmarks", "",
             "<!-- generated by benchmarks/report.py from benchmarks/results/; edit those, not this file -->", "",
             "Every number below was produced on this project's 2-core, GPU-less machine by the command printed "
             "beside it, except the GPU check's, which names its machine. Rerun a command and then "
             "`.venv/bin/python benchmarks/report.py` to refresh this page.", "",
             "## Zero- and few-shot accuracy (issue: the RAG-IM generator)", "",
             "Methods: `ragim-statistical` (the default generator, StatisticalGenerator: a noise-aware "
             "random-effects meta-regression of the index's task models on their descriptions, also fitted "
             "on the tasks' rows as a logistic mixed model with the descriptions' words as random effects, "
             "stacked with the pooled model by validation inside the index; `k=N` rows: few-shot adaptation with N "
             "labelled rows of the target), `ragim-attention` (AttentionGenerator, starting from the "
             "statistical generator's model), `oracle` (synthetic and procedure families: the true "
             "coefficients without the task's own noise, the best any method can do from the description), "
             "`pooled` (one logistic model on all indexed "
             "rows), `nearest-neighbor` (the single most similar task's model), `neighbor-mean` (similarity-"
             "weighted mean of the k=10 retrieved models), `per-task-all` (a logistic model fitted on "
             "the target's own support half: it sees labels, a reference ceiling), `per-task-k` (fitted on the same N rows the "
             "few-shot method sees), `true-model` (synthetic and procedure families: the generating coefficients). "
             "Scores are on each target's held-out half; brackets are bootstrap 95% CIs over targets. The "
             "generator is trained only on the index of each split, never on a target.", ""]
    lines += targets_section()
    for name, title, what in EVALS:
        f = RESULTS / f"eval_{name}.md"
        if not f.is_file():
            continue
        md = f.read_text()
        lines += [f"### {title}", "", what, "", _header_line(md), "",
                  f"Command: `.venv/bin/python benchmarks/evaluate_all.py --only {name}` "
                  f"(per-task rows: `benchmarks/results/eval_{name}.csv`)", "", _code_block(md), "",
                  *eval_analysis(name)]
    cov = RESULTS / "interval_coverage.md"
    if cov.is_file():
        lines += ["### Coefficient intervals of the default generator (synthetic)", "",
                  "How often the nominal intervals (estimate ± z·SD) of the generated coefficients hold the "
                  "held-out task's true coefficients (with the task's own deviation) and its oracle (without it), "
                  "on the index's standardised scale (k = 0: the zero-shot model; k > 0: that model adapted to "
                  "k of the task's rows by `ZeroShotClassifier`'s adaptations, `auto` (the default) also "
                  "broken down by the candidate it chose):", "", cov.read_text().strip(), ""]
    lines += description_ceiling_section()
    lines += calibration_section()
    lines += peers_section()
    gen = RESULTS / "generate_statistical.json"
    if gen.is_file():
        g = json.loads(gen.read_text())
        lines += ["### Generation speed of the default generator", "",
                  f"Command: `{g['command']}`", "",
                  f"- ours: {g['ours']['description']}: **{g['ours']['seconds']:.2f} s** for "
                  f"{g['ours']['n_queries']:,} models ({g['ours']['tasks_per_s']:,.0f} models/s);",
                  f"- baseline: {g['baseline']['description']}, without intervals: "
                  f"{g['baseline']['seconds']:.2f} s (time ratio baseline / ours: {g['ratio']:.2f});",
                  f"- fitting the generator on the {g['n']:,}-task index (not in the ratio): {g['fit_seconds']:.0f} s;",
                  f"- threads: {g['threads']['ours']} on both sides; device: {g['device']}; 2 shared CPU cores.", ""]
    runs = [("lm_training.md", "Tiny model (built in code), the default run"),
            ("lm_training_smollm2.md", "SmolLM2-135M, a very small budget"),
            ("lm_training_smollm2_30steps.md", "SmolLM2-135M, 30 SFT steps (GRPO sampled plainly)"),
            ("lm_training_smollm2_30steps_constrained.md",
             "SmolLM2-135M, 30 SFT steps, GRPO sampled under the answer grammar"),
            ("lm_training_smollm2_long_synthetic.md",
             "SmolLM2-135M, issue 18's budget: 300 SFT steps on the stored fits, compact answers, the "
             "statistical prior in every prompt, 20 held-out synthetic tasks"),
            ("lm_training_smollm2_posterior_synthetic.md",
             "SmolLM2-135M, the same budget, SFT on posterior-mode targets (`--sft-targets posterior`), "
             "20 held-out synthetic tasks"),
            ("lm_training_smollm2_posterior_synthetic_rm.md",
             "SmolLM2-135M, the reward model on the posterior-target SFT's preference pairs, against a "
             "reference that needs no LM"),
            ("lm_training_smollm2_residual_grpo_synthetic.md",
             "SmolLM2-135M, the same budget, residual answers (`--residual`: the LM writes each "
             "parameter's change from the statistical prior), posterior-mode targets, 300 SFT "
             "steps then 100 GRPO steps, 20 held-out synthetic tasks"),
            ("lm_training_smollm2_residual_synthetic_rm.md",
             "SmolLM2-135M, the reward model on the residual-answer SFT's preference pairs, reading whole "
             "models (`--rm-reads model`; the same SFT stage, reused), best-of-8 with it, and a reference "
             "that needs no LM"),
            ("lm_training_smollm2_residual_synthetic_rm_change.md",
             "SmolLM2-135M, the same pairs, the reward model reading each answer as its change from the "
             "prior in the prompt (`--rm-reads change`: what the residual LM writes), and best-of-8 with it"),
            ("lm_training_smollm2_residual_grpo_heart_fold0.md",
             "SmolLM2-135M, the same budget on real data: UCI heart disease, leave-task-out, fold 0 of 4 "
             "(7 held-out tasks), residual answers, 300 SFT steps then 100 GRPO steps, against the pooled "
             "model and the neighbour mean")]
    runs = [(RESULTS / f, title) for f, title in runs if (RESULTS / f).is_file()]
    if runs:
        lines += ["## LM generator training: SFT, DPO, GRPO, best-of-n (issue: reward modelling and RL)", "",
                  "Same held-out tasks for every row of a table; what each stage is, and why the tiny model's greedy "
                  "answer is all zeros, is in [training.md](training.md).", ""]
        for f, title in runs:
            body = f.read_text().strip().splitlines()
            if body and body[0].startswith("# "):
                body = body[1:]
            lines += [f"### {title}", "", *[line.replace("Command: `python ", "Command: `.venv/bin/python ")
                                              for line in body], ""]
    lm_runs = sorted(RESULTS.glob("lm_zero_shot*.md"), key=lambda f: (f.stem != "lm_zero_shot", f.stem))
    for lmz in [*lm_runs, RESULTS / "lm_parse_rate.md"]:
        if lmz.is_file():
            body = lmz.read_text().strip().splitlines()
            lines += [f"## {body[0].lstrip('# ')} (issue: the LM generator)", "", *body[1:], ""]
    lines += lm_throughput_section()
    lines += lm_train_precision_section()
    lines += lm_decode_profile_section()
    lines += lm_generation_parts_section()
    lines += gpu_section()
    lines += label_efficiency_section()
    lines += domain_section()
    scale = RESULTS / "scale.json"
    if scale.is_file():
        lines += scale_section(json.loads(scale.read_text()))
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/benchmarks.md is not up to date")
    args = ap.parse_args()
    outputs = {DOC: build(), README: render_readme(README.read_text()), SCALING: render_scaling(SCALING.read_text())}
    stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p} is stale; run .venv/bin/python benchmarks/report.py", file=sys.stderr)
        sys.exit(1 if stale else 0)
    for p in stale:
        p.write_text(outputs[p])
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
