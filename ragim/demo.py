"""The main job: a zero-shot interpretable model for a hospital the index never saw.

``ragim demo`` (and ``make demo``) runs, with progress for each stage:

1. build the heart-disease index from three hospitals;
2. fit the default (statistical) generator on it: stack weights validated inside the index;
3. generate a model for a task at the fourth hospital from its description alone;
4. print the model (odds ratios with intervals) and the neighbours that shaped it;
5. score it on that hospital's real outcomes, beside the pooled and neighbour-mean baselines;
6. write a report folder: PNG plots and a Markdown + HTML summary.

Examples
--------
>>> from ragim.demo import run_demo
>>> result = run_demo(out="reports/demo", fast=True, quiet=True)   # doctest: +SKIP
>>> result["scores"]["ragim"]["auroc"]                              # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragim.errors import DataWarning, ValidationError, user_stacklevel


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, flush=True)


def _choose_target(targets, target_task: str | None):
    if target_task is not None:
        if target_task not in targets:
            raise ValidationError(
                f"no task {target_task!r} at the held-out group; choose one of {targets.ids}"
            )
        return targets[target_task]
    # the largest task of the held-out group: the most reliable score
    return max(targets, key=lambda t: t.n_rows)


def _outcome_name(target) -> str | None:
    """The target's outcome in words: the heart-disease outcome labels, else its metadata."""
    from ragim.datasets.heart import OUTCOME_LABELS

    value = target.metadata.get("outcome")
    if value is None:
        return None
    return OUTCOME_LABELS.get(value, str(value))


def run_demo(
    *,
    out: str | Path = "reports/demo",
    site: str = "Switzerland",
    tasks_dir: str | Path | None = None,
    group: str = "site",
    target_task: str | None = None,
    embedder: str | None = "minilm",
    fast: bool = False,
    quiet: bool = False,
    seed: int = 0,
    progress: bool | None = None,
    outcome: str | None = None,
    patient_id: str | None = None,
    pos_label: str | None = None,
    sep: str = ",",
    na_values: Any = None,
    thousands: str | None = None,
) -> dict[str, Any]:
    """Run the demo and return its scores and report paths (see module docstring).

    Parameters
    ----------
    out : report folder.
    site : the held-out group (a value of ``metadata[group]``): the hospital the index never sees.
    tasks_dir : a task folder (see :func:`ragim.datasets.folder.load_task_folder`) instead of
        the bundled heart-disease data; ``outcome`` and ``patient_id`` name its columns,
        ``pos_label`` its positive outcome value, ``sep`` its CSV field separator,
        ``na_values`` its missing-value codes and ``thousands`` its numbers' thousands
        separator.
    group : the metadata key that defines hospitals.
    target_task : which held-out task to generate (default: the largest).
    embedder : description embedder ("minilm" is the bundled offline model; "hashing" is fast).
    fast : fewer training epochs (for tests).
    quiet : no stage messages.
    progress : progress bars (default: not ``quiet``).
    """
    from ragim import TaskIndex, datasets
    from ragim.datasets.folder import load_task_folder
    from ragim.estimator import neighbor_mean
    from ragim.generate.statistical import StatisticalGenerator
    from ragim.metrics import task_metrics
    from ragim.models import LogisticModel, model_from_params
    from ragim.tasks import patient_id_set

    t0 = time.perf_counter()
    progress = not quiet if progress is None else progress
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _say(quiet, "[1/6] loading tasks and building the index from the other hospitals")
    if tasks_dir:
        kw = {
            k: v
            for k, v in (("outcome", outcome), ("patient_id", patient_id), ("pos_label", pos_label))
            if v is not None
        }
        tasks = load_task_folder(tasks_dir, sep=sep, na_values=na_values, thousands=thousands, **kw)
    else:
        tasks = datasets.heart_disease()
    train, targets = tasks.group_split(group, [site])
    site = targets.metadata[0].get(group, site)  # as the data spell it ("--site 1" finds site "01")
    held_patients = frozenset().union(*(patient_id_set(m) for m in targets.metadata))
    sharing = [
        i for i, m in enumerate(train.metadata) if not held_patients.isdisjoint(patient_id_set(m))
    ]
    if sharing:  # the same patient id is the same patient (docs/own_tasks.md): keep them out
        if len(sharing) == len(train):
            raise ValidationError(
                f"every task outside {site} shares patient ids with {site}; nothing is left "
                "to index without using that site's patients"
            )
        warnings.warn(
            f"{len(sharing)} task(s) outside {site} share patient ids with it "
            f"and are left out of the index: {[train.ids[i] for i in sharing][:5]}",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
        train = train.take([i for i in range(len(train)) if i not in set(sharing)])
    index = TaskIndex.build(train, model="logistic", embedder=embedder, progress=progress)
    _say(quiet, f"      {len(index)} tasks indexed; held out: {len(targets)} task(s) at {site}")

    _say(
        quiet,
        "[2/6] fitting the statistical generator (its stack is validated on held-out index tasks)",
    )
    overrides = {"cv_folds": 3} if fast else {}
    gen = StatisticalGenerator(seed=seed, **overrides).fit(index, progress=progress)
    _say(quiet, f"      {gen.train_seconds_:.1f}s; {_stack_text(gen)}")

    target = _choose_target(targets, target_task)
    _say(
        quiet, f'[3/6] generating a model from the description alone:\n      "{target.description}"'
    )
    params = gen.generate_params(target.description)
    meta = {"description": target.description}
    if _outcome_name(target):
        meta["outcome"] = _outcome_name(target)
    params = params.replace(metadata=meta)
    model = model_from_params(params)

    expl = model.explain()
    table = expl.table(15)
    prov = expl.provenance.to_frame()[["task_id", "similarity", "weight"]]
    prov = prov.sort_values("weight", ascending=False, kind="stable").reset_index(drop=True)
    if not quiet:
        from ragim.cli_common import print_global, print_provenance

        _say(quiet, "[4/6] the generated model")
        print_global(expl, top=15)
        print_provenance(list(expl.provenance))
        if expl.coverage:
            _say(quiet, _coverage_line(expl.coverage))

    _say(
        quiet,
        f"[5/6] scoring on {target.n_rows} real outcomes at {site} (no label "
        "was used to build the model)",
    )
    pooled = LogisticModel(schema=index.schema).fit(
        pd.concat([t.X for t in index.tasks], ignore_index=True),
        np.concatenate([t.y for t in index.tasks]),
    )
    probs = {
        "ragim": model.predict_proba(target.X)[:, 1],
        "pooled": pooled.predict_proba(target.X)[:, 1],
        "neighbor-mean": model_from_params(
            neighbor_mean(index, target.description, k=10)
        ).predict_proba(target.X)[:, 1],
    }
    scores = {m: task_metrics(target.y, p) for m, p in probs.items()}
    score_table = pd.DataFrame(scores).T[["auroc", "log_loss", "brier", "ece", "accuracy"]]
    if not quiet:
        from ragim.cli_common import print_table

        print_table(
            [
                [m, *(f"{v:.3f}" for v in r)]
                for m, r in zip(score_table.index, score_table.to_numpy(), strict=True)
            ],
            ["method", *((_SCORE_NAMES[c], "right") for c in score_table.columns)],
            caption="AUROC and accuracy: higher is better; "
            "log-loss, Brier and ECE: lower is better",
        )

    _say(quiet, f"[6/6] writing the report to {out}/")
    files = _write_report(
        out, target, model, expl, table, probs, score_table, prov, gen, index, site
    )
    result = {
        "target": {
            "task_id": target.task_id,
            "description": target.description,
            "n_rows": target.n_rows,
            "prevalence": target.prevalence,
            "site": site,
        },
        "scores": {m: {k: float(v) for k, v in s.items()} for m, s in scores.items()},
        "provenance": model.provenance,
        "indexed": list(index.ids),
        "params": params.as_dict(decimals=4),
        "report": {k: str(v) for k, v in files.items()},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    _say(quiet, f"done in {result['seconds']}s: open {files['html']}")
    return result


# ---------------------------------------------------------------------- the report
# The report is a list of blocks, rendered twice: to Markdown and to an HTML page, so the two
# always say the same. A block is (kind, payload): ("h1"|"h2"|"p"|"quote"|"note", text),
# ("table", DataFrame) or ("img", (file name, alt text)).


def _md_table(df: pd.DataFrame) -> str:
    cells = [
        [str(c) for c in df.columns],
        *[[_cell(v) for v in row] for row in df.itertuples(index=False)],
    ]
    head = "| " + " | ".join(cells[0]) + " |"
    rule = (
        "|"
        + "|".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns)
        + "|"
    )
    return "\n".join(
        [
            head,
            rule,
            *("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells[1:]),
        ]
    )


def _cell(v) -> str:
    if isinstance(v, float | np.floating):
        return "" if not np.isfinite(v) else f"{v:.3f}"
    return str(v)


def render_markdown(blocks: list[tuple[str, Any]]) -> str:
    """The report blocks as Markdown."""
    return "\n".join(f"{_BLOCKS[kind][0](x)}\n" for kind, x in blocks)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:60rem;
  margin:2rem auto;padding:0 1rem;line-height:1.45;color:#202124}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #dadce0;padding:.25rem .6rem;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
blockquote{border-left:4px solid #dadce0;margin:.5rem 0;padding:.2rem 1rem;color:#3c4043}
img{max-width:100%;height:auto}
.note{color:#5f6368;font-style:italic}
"""


def _html_table(df: pd.DataFrame) -> str:
    num = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    head = "".join(
        f"<th{' class=num' if n else ''}>{html.escape(str(c))}</th>"
        for c, n in zip(df.columns, num, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if n else ''}>{html.escape(_cell(v))}</td>"
            for v, n in zip(row, num, strict=True)
        )
        + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    """Markdown **bold** in a paragraph, as HTML (everything else escaped)."""
    parts = text.split("**")
    return "".join(
        f"<b>{html.escape(p)}</b>" if i % 2 else html.escape(p) for i, p in enumerate(parts)
    )


#: block kind -> (its Markdown, its HTML)
_BLOCKS: dict[str, tuple[Callable[[Any], str], Callable[[Any], str]]] = {
    "h1": (lambda x: f"# {x}", lambda x: f"<h1>{html.escape(x)}</h1>"),
    "h2": (lambda x: f"## {x}", lambda x: f"<h2>{html.escape(x)}</h2>"),
    "p": (lambda x: x, lambda x: f"<p>{_inline(x)}</p>"),
    "quote": (lambda x: f"> {x}", lambda x: f"<blockquote>{html.escape(x)}</blockquote>"),
    "note": (lambda x: f"_{x}_", lambda x: f'<p class="note">{html.escape(x)}</p>'),
    "table": (_md_table, _html_table),
    "img": (
        lambda x: f"![{x[1]}]({x[0]})",
        lambda x: f'<p><img src="{html.escape(x[0])}" alt="{html.escape(x[1])}"></p>',
    ),
}


def render_html(blocks: list[tuple[str, Any]], title: str) -> str:
    """The report blocks as a standalone HTML5 page (UTF-8; images linked relative)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(_BLOCKS[kind][1](x) for kind, x in blocks)
        + "\n</body>\n</html>\n"
    )


_SCORE_NAMES = {
    "auroc": "AUROC",
    "log_loss": "log-loss",
    "brier": "Brier score",
    "ece": "ECE",
    "accuracy": "accuracy",
}


def _coverage_line(coverage: dict) -> str:
    from ragim.explain import coverage_summary

    return (
        coverage_summary(coverage)[0].upper()
        + coverage_summary(coverage)[1:]
        + (
            " (how close the index's tasks are to this description: below the threshold, the model "
            "would be borrowed from unrelated tasks)"
        )
    )


def _stack_text(gen) -> str:
    """The generator's stack weights and its held-out log-loss inside the index, in words."""
    st, cv = gen.stack_, gen.cv_
    parts = [
        f"{c} {st['baseline'][c]:.2f}/{st['slopes'][c]:.2f}"
        for c in st["baseline"]
        if st["baseline"][c] + st["slopes"][c] > 0
    ]
    held = (
        ""
        if cv.get("stack") is None
        else f"; held-out log-loss in the index {cv['stack']:.3f} on {cv['n_tasks']} tasks"
    )
    return "stack weights baseline/slopes: " + ", ".join(parts) + held


def _write_report(
    out: Path, target, model, expl, table, probs, score_table, prov, gen, index, site
) -> dict[str, Path]:
    from ragim.plots import plot_calibration

    files = {
        "coefficients": out / "coefficients.png",
        "provenance": out / "provenance.png",
        "calibration": out / "calibration.png",
        "waterfall": out / "waterfall.png",
    }
    expl.save_png(files["coefficients"], kind="odds_ratio", top=15)
    expl.provenance.plot().savefig(files["provenance"], dpi=120, bbox_inches="tight")
    plot_calibration(target.y, probs, n_bins=8).savefig(
        files["calibration"], dpi=120, bbox_inches="tight"
    )
    p = probs["ragim"]
    patient = int(np.argmax(p))
    local = model.explain(target.X.iloc[[patient]])
    local.save_png(files["waterfall"])
    coef = table.assign(
        **{
            "95% CI": [
                f"{lo:.2f} to {hi:.2f}" if np.isfinite(lo) else ""
                for lo, hi in zip(table["or_low"], table["or_high"], strict=True)
            ]
        }
    )
    coef = coef[["label", "comparison", "odds_ratio", "95% CI"]].rename(
        columns={"label": "term", "odds_ratio": "odds ratio"}
    )
    contrib = local.table(12)
    note = contrib.attrs["note"]
    contrib = contrib[["label", "value_label", "contribution"]].rename(
        columns={
            "label": "feature",
            "value_label": "value",
            "contribution": "contribution (log-odds)",
        }
    )
    scores = score_table.reset_index(names="method").rename(columns=_SCORE_NAMES)
    title = f"ragim demo: zero-shot model for {site}"
    blocks: list[tuple[str, Any]] = [
        ("h1", title),
        (
            "p",
            f"**Target task** ({target.task_id}, {target.n_rows} patients, "
            f"prevalence {target.prevalence:.2f}):",
        ),
        ("quote", target.description),
        (
            "p",
            f"The index holds {len(index)} tasks from the other hospitals; no row from {site} was "
            f"used to build, train or preprocess anything. Generator: the statistical generator "
            f"({_stack_text(gen)}). The model predicts {expl.outcome}.",
        ),
        ("h2", "Scores on the real outcomes"),
        ("table", scores),
        (
            "p",
            "AUROC and accuracy: higher is better; log-loss, Brier score and ECE: lower is better.",
        ),
        ("h2", "The model: odds ratios with 95% intervals"),
        (
            "p",
            f"Continuous features per SD, binary features for the named level against the other, "
            f"categorical "
            f"levels against the feature's reference level; {table.attrs['note']}.",
        ),
        ("table", coef),
        *([("note", _coverage_line(expl.coverage))] if expl.coverage else []),
        ("img", ("coefficients.png", "odds ratios of the generated model with 95% intervals")),
        ("h2", "The neighbours that shaped it"),
        ("p", "The indexed tasks the generator drew on, heaviest weight first."),
        ("table", prov),
        ("img", ("provenance.png", "weights of the retrieved neighbour tasks")),
        ("h2", "Calibration"),
        ("img", ("calibration.png", "reliability diagram of the three methods")),
        ("h2", f"One patient (row {patient}): predicted risk of {local.outcome} {p[patient]:.2f}"),
        ("p", f"Contributions to the log-odds, largest first; {note}."),
        ("table", contrib),
        ("img", ("waterfall.png", "waterfall of one patient's contributions to the log-odds")),
        (
            "note",
            "Zero-shot models need local validation before any clinical use: "
            "ragim score PARAMS --rows "
            "YOUR_PATIENTS.csv --outcome COLUMN.",
        ),
    ]
    files["markdown"] = out / "report.md"
    files["markdown"].write_text(render_markdown(blocks), encoding="utf-8")
    files["html"] = out / "report.html"
    files["html"].write_text(render_html(blocks, title), encoding="utf-8")
    return files
