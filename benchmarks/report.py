"""Assemble docs/benchmarks.md and the README's results block from benchmarks/results/.

Every figure in docs/benchmarks.md is read from a file a benchmark script wrote, and the
script's command is printed beside it; `tests/test_benchmarks_doc.py` checks that the doc
is what this script produces from the committed results.

Run: .venv/bin/python benchmarks/report.py            (rewrites what is stale)
     .venv/bin/python benchmarks/report.py --check    (exit 1 if either file is stale)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"

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


def scale_section(res: dict) -> list[str]:
    out = ["## Scale (issue: reliability and scale)", "",
           "Command: `.venv/bin/python benchmarks/scale.py` (writes `benchmarks/results/scale.json` and "
           "`docs/img/scale_loglog.png`; `--resume` keeps finished sizes). Single sizes: "
           "`ragim bench retrieval --n-tasks N --json`, `ragim bench fit --n-tasks N --json`, "
           "`ragim bench generate --json`, `ragim bench lm --json`, or `ragim bench all --json`.", "",
           f"Machine: {res['machine']['cpus']} CPU cores, no GPU, shared with other work while it ran, so absolute "
           "times are noisy; every ratio compares two measurements taken in the same process, back to back.", ""]
    ret = {int(k): v for k, v in res.get("retrieval", {}).items()}
    if ret:
        out += ["### Retrieval (precomputed clustered unit vectors, d=384, 1,000 queries, k=10)", "",
                "| tasks | index | build s | query s (1k queries) | numpy exact s | speed-up vs numpy | recall@10 | "
                "bytes/task | peak build RSS (MB) |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n in sorted(ret):
            r = ret[n]
            for name, ix in r["indices"].items():
                out.append(f"| {n:,} | {name}{' (chosen)' if name == r['ours']['index'] else ''} | "
                           f"{ix['build_seconds']:.2f} | {ix['query_seconds']:.3f} | {r['baseline']['seconds']:.3f} | "
                           f"{ix['speedup_vs_numpy']:.2f}× | {ix['recall_at_10']:.3f} | {ix['bytes_per_task']:,.0f} | "
                           + (f"{r['peak_build_mb']:,.0f}" if name == r["ours"]["index"] else "—") + " |")
        out += ["", "Query and numpy times are the best of 3 interleaved rounds. `index=\"auto\"` picks exact Flat up "
                "to 100k tasks and IVF (about 4·√n lists, nprobe 32) beyond. Peak RSS is that of a fresh process "
                "that generates the vectors and builds the chosen index.", ""]
    fit = {int(k): v for k, v in res.get("fit", {}).items()}
    if fit:
        out += ["### Fitting many logistic models (`synthetic_family`, 20 features)", "",
                "| tasks | batched solver tasks/s | sklearn loop tasks/s | speed-up | max abs coef diff vs sklearn |",
                "|---:|---:|---:|---:|---:|"]
        for n in sorted(fit):
            r = fit[n]
            out.append(f"| {n:,} | {r['ours']['tasks_per_s']:,.0f} | {r['baseline']['tasks_per_s']:,.1f} | "
                       f"{r['ratio']:.1f}× | {r['max_abs_diff']:.1e} |")
        first = fit[min(fit)]
        out += ["", f"Ours: {first['ours']['description']}.", "",
                f"Baseline: {first['baseline']['description']}.", ""]
    gen = res.get("generate")
    if gen:
        by = gen["tasks_per_s_by_batch"]
        out += ["### Generation throughput", "",
                "| generator | batch | tasks/s |", "|---|---:|---:|"]
        out += [f"| AttentionGenerator | {int(b):,} | {v:,.1f} |" for b, v in by.items()]
        out.append(f"| neighbour-mean (baseline) | 1 | {gen['baseline']['tasks_per_s']:,.1f} |")
        lm = res.get("generate_lm")
        if lm:
            out.append(f"| LMGenerator | 1 | {lm['ours']['tasks_per_s']:.3f} ({lm['ours']['seconds_per_task']:.1f} s per task) |")
        threads = res["machine"].get("generate_torch_threads")
        out += ["", f"AttentionGenerator: {gen['ours']['description']}, {gen['n']} indexed tasks"
                + (f"; torch used {threads} thread(s)." if threads else ".")]
        if threads:
            out += ["", f"These rows come from `.venv/bin/python benchmarks/scale.py --resume --generate-threads {threads}`. "
                    "On a 2-core machine that is busy with other work, torch's default of 2 threads oversubscribes "
                    "the cores: an earlier run with the default measured SmolLM2 at 88.8 s per task and the "
                    "AttentionGenerator at 11 tasks/s at batch 1, so set `torch.set_num_threads(1)` on shared "
                    "machines."]
        if lm:
            out += ["", f"LMGenerator: {lm['ours']['description']}; prompt {lm['ours']['prompt_tokens']:.0f} tokens, "
                    f"answer {lm['ours']['answer_tokens']:.0f} tokens on average; the first call (model load and "
                    f"GGUF conversion cache) took {lm['ours']['first_call_seconds']:.1f} s and is not counted."]
        out.append("")
    exps = res.get("growth_exponents")
    if exps:
        names = {"retrieval_query_seconds": "FAISS query time (chosen index)",
                 "numpy_query_seconds": "numpy exact query time",
                 "index_build_seconds": "index build time (chosen index)",
                 "peak_build_mb": "peak build memory",
                 "fit_seconds": "batched fit time (10k → 100k only)"}
        out += ["### Growth from 10k → 100k → 1M tasks", "",
                "Slope of log(cost) against log(tasks): 1 is linear. The chosen index switches from Flat to IVF "
                "above 100k, which is why query time grows far slower than linearly.", "",
                "| cost | exponent |", "|---|---:|"]
        out += [f"| {names.get(k, k)} | {v:.2f} |" for k, v in exps.items()]
        out += ["", "![cost growth on a log-log scale](img/scale_loglog.png)", ""]
    return out


def eval_rows(name: str) -> dict[str, tuple[float, float]]:
    """method -> (AUROC, log-loss) from a results/eval_<name>.md table."""
    rows = {}
    for line in _code_block((RESULTS / f"eval_{name}.md").read_text()).splitlines():
        m = re.match(r"^(\S+(?: k=\d+)?)\s+([0-9.]+) \[[^]]+\]\s+([0-9.]+) \[", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return rows


README_METHODS = ["ragim-attention", "pooled", "neighbor-mean", "nearest-neighbor", "per-task-all", "true-model"]


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
        ret = {int(k): v for k, v in res.get("retrieval", {}).items()}
        fit = {int(k): v for k, v in res.get("fit", {}).items()}
        lines += ["", "Speed on 2 CPU cores (each ratio against a baseline timed in the same run):", ""]
        if ret:
            n = max(ret)
            r = ret[n]
            lines.append(f"- retrieval over {n:,} tasks: {r['ours']['index']} answers {r['ours']['queries_per_s']:,.0f} "
                         f"queries/s, {r['ratio']:.1f}× exact numpy, recall@10 {r['recall_at_10']:.2f};")
        if fit:
            n = min(fit)
            f = fit[n]
            lines.append(f"- fitting {n:,} logistic models: batched solver {f['ratio']:.0f}× a scikit-learn loop, "
                         f"max coefficient difference {f['max_abs_diff']:.0e};")
        if res.get("generate"):
            g = res["generate"]["tasks_per_s_by_batch"]
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


def build() -> str:
    lines = ["# Benchmarks", "",
             "<!-- generated by benchmarks/report.py from benchmarks/results/; edit those, not this file -->", "",
             "Every number below was produced on this project's 2-core, GPU-less machine by the command printed "
             "beside it. Rerun a command and then `.venv/bin/python benchmarks/report.py` to refresh this page.", "",
             "## Zero- and few-shot accuracy (issue: the RAG-IM generator)", "",
             "Methods: `ragim-attention` (zero-shot AttentionGenerator; `k=N` rows: few-shot adaptation with N "
             "labelled rows of the target, recalibration by default), `pooled` (one logistic model on all indexed "
             "rows), `nearest-neighbor` (the single most similar task's model), `neighbor-mean` (similarity-"
             "weighted mean of the k=10 retrieved models), `per-task-all` (a logistic model fitted on "
             "the target's own support half: it sees labels, a reference ceiling), `per-task-k` (fitted on the same N rows the "
             "few-shot method sees), `true-model` (synthetic and procedure families: the generating coefficients). "
             "Scores are on each target's held-out half; brackets are bootstrap 95% CIs over targets. The "
             "generator is trained only on the index of each split, never on a target.", ""]
    for name, title, what in EVALS:
        f = RESULTS / f"eval_{name}.md"
        if not f.is_file():
            continue
        md = f.read_text()
        lines += [f"### {title}", "", what, "", _header_line(md), "",
                  f"Command: `.venv/bin/python benchmarks/evaluate_all.py --only {name}` "
                  f"(per-task rows: `benchmarks/results/eval_{name}.csv`)", "", _code_block(md), ""]
    runs = [("lm_training.md", "Tiny model (built in code), the default run"),
            ("lm_training_smollm2.md", "SmolLM2-135M, a very small budget"),
            ("lm_training_smollm2_30steps.md", "SmolLM2-135M, 30 SFT steps")]
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
    scale = RESULTS / "scale.json"
    if scale.is_file():
        lines += scale_section(json.loads(scale.read_text()))
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/benchmarks.md is not up to date")
    args = ap.parse_args()
    outputs = {DOC: build(), README: render_readme(README.read_text())}
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
