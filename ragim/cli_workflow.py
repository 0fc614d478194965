"""``ragim predict | score | adapt | export``: validate a model on local patients.

The README's rule is that a zero-shot model must be validated locally before any use.
These verbs do it from the command line, on CSV files (one patient per row, the model's
feature columns, an outcome column where one is needed):

    ragim predict PARAMS --rows patients.csv [--out risks.csv]
    ragim score   PARAMS --rows labelled.csv --outcome COL [--png calibration.png]
    ragim adapt   PARAMS --rows labelled.csv --outcome COL --save PARAMS2
    ragim export  PARAMS [--csv coefficients.csv]

Each takes ``--json``; bad input is one line and exit code 2. :func:`register` adds them
to the ``ragim`` app.
"""

from __future__ import annotations

import functools
import math
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from ragim.cli_common import (
    AsJson,
    CsvOptions,
    OverwriteFile,
    OverwriteSave,
    PatientId,
    PosLabel,
    Quiet,
    check_positive,
    echo_json,
    fmt,
    one_line_warnings,
    option_groups,
    print_table,
    refuse_to_replace,
    say,
    setup,
    warn,
)
from ragim.io import make_parent
from ragim.schema import rows_named

Params = Annotated[
    Path, typer.Argument(help="saved model parameters (ragim generate --save, ragim adapt --save)")
]
Rows = Annotated[
    Path,
    typer.Option(
        "--rows", help="a CSV file, one patient per row, with the model's feature columns"
    ),
]
RequiredOutcome = Annotated[str, typer.Option("--outcome", help="the 0/1 outcome column of --rows")]

_NAMES = {
    "auroc": "AUROC",
    "log_loss": "log-loss",
    "brier": "Brier score",
    "ece": "ECE (10 bins)",
    "calibration_slope": "calibration slope",
    "calibration_intercept": "calibration intercept",
}
_IDEAL = {
    "auroc": "1 (0.5 = chance)",
    "log_loss": "0 (lower is better)",
    "brier": "0 (lower is better)",
    "ece": "0 (lower is better)",
    "calibration_slope": "1 (<1: too extreme)",
    "calibration_intercept": "0 (>0: risk under-predicted)",
}


def _load(params_path: Path):
    from ragim.models import model_from_params
    from ragim.params import ModelParams

    params = ModelParams.load(params_path)
    return params, model_from_params(params)


def _event(outcome: str, pos_label) -> str:
    """How the event is written in headings: ``death = Yes`` with a pos-label, else ``death = 1``.

    >>> _event("death", "Yes"), _event("cad", None)
    ('death = Yes', 'cad = 1')
    """
    return f"{outcome} = {1 if pos_label is None else pos_label}"


def _named_by_file(command):
    """``command`` with the warnings about its ``--rows`` patients naming the file
    (``--rows north.csv``), not the library's variable (``X``)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        with rows_named(f"--rows {kwargs['rows']}"):
            return command(*args, **kwargs)

    return run


def load_model_and_rows(
    params_path: Path,
    rows: Path,
    outcome: str | None,
    patient_id: str | None,
    csv_options: CsvOptions,
    *,
    pos_label=None,
    labelled: bool = True,
):
    """The saved model and the patients of the ``rows`` file read for it (as ``csv_options``
    says), as ``(params, model, data)``: with their ``outcome`` when ``labelled`` (``score``,
    ``adapt``), else with an ``outcome`` column dropped unread (``predict``, ``explain``: they
    need no label)."""
    from ragim.rows import read_rows

    params, model = _load(params_path)
    label = (
        {"outcome": outcome, "pos_label": pos_label} if labelled else {"ignore_outcome": outcome}
    )
    data = read_rows(
        rows,
        schema=params.schema,
        patient_id=patient_id,
        **asdict(csv_options),
        **label,
    )
    return params, model, data


@option_groups
@_named_by_file
def predict(
    params_path: Params,
    rows: Rows,
    out: Annotated[Path | None, typer.Option("--out", help="write the risks here as CSV")] = None,
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome", help="an outcome column in --rows to ignore (its values are not read)"
        ),
    ] = None,
    patient_id: PatientId = None,
    csv_options: CsvOptions = CsvOptions(),
    overwrite: OverwriteFile = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Predicted risks for a CSV of patients."""
    setup(as_json, quiet)
    refuse_to_replace(out, overwrite)
    params, model, data = load_model_and_rows(
        params_path, rows, outcome, patient_id, csv_options, labelled=False
    )
    risk = model.predict_proba(data.X)[:, 1]
    table = pd.DataFrame({"row": np.arange(len(risk))})
    if data.ids is not None:
        table["patient_id"] = data.ids.to_numpy()
    table["risk"] = risk
    if out is not None:
        from ragim.export import write_csv

        write_csv(table, out)
    if as_json:
        echo_json(
            {
                "n": len(risk),
                "mean_risk": float(risk.mean()),
                "out": None if out is None else str(out),
                "risks": table.to_dict("records"),
            }
        )
        return
    what = params.metadata.get("outcome") or "the outcome"
    shown = table.head(20)
    print_table(
        [
            [r.row, *([r.patient_id] if "patient_id" in table else []), f"{r.risk:.3f}"]
            for r in shown.itertuples()
        ],
        ["row", *(["patient"] if "patient_id" in table else []), ("risk", "right")],
        title=f"Predicted risk of {what} for {len(risk)} patients (mean {risk.mean():.3f})",
        caption=None
        if len(table) <= 20
        else f"first 20 of {len(table)} rows"
        + ("" if out is not None else "; --out FILE.csv writes all of them"),
    )
    if out is not None:
        typer.echo(f"wrote {len(risk)} risks to {out}")


@option_groups
@_named_by_file
def score(
    params_path: Params,
    rows: Rows,
    outcome: RequiredOutcome,
    patient_id: PatientId = None,
    pos_label: PosLabel = None,
    csv_options: CsvOptions = CsvOptions(),
    png: Annotated[
        Path | None,
        typer.Option("--png", help="write a calibration plot (reliability diagram) here"),
    ] = None,
    n_boot: Annotated[
        int, typer.Option("--n-boot", help="bootstrap resamples of the patients for the 95% CIs")
    ] = 1000,
    bins: Annotated[
        int, typer.Option("--bins", help="bins of the ECE and the calibration plot")
    ] = 10,
    seed: int = 0,
    overwrite: OverwriteFile = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Discrimination and calibration on local outcomes: AUROC, log-loss, Brier score, ECE,
    calibration slope and intercept, each with a bootstrap 95% CI; and a calibration plot."""
    setup(as_json, quiet)
    refuse_to_replace(png, overwrite, "--png")
    from ragim.io import sha256_file
    from ragim.plots import plot_calibration
    from ragim.validation import score_predictions

    check_positive(bins=bins)
    if n_boot < 0:
        raise typer.BadParameter(f"--n-boot must be >= 0, got {n_boot}")
    params, model, data = load_model_and_rows(
        params_path, rows, outcome, patient_id, csv_options, pos_label=pos_label
    )
    if sha256_file(rows) in _adapted_on(params):
        warn(
            f"{rows} holds the same bytes as a file this model was adapted on: scores on the "
            "rows it was adapted on are optimistic; score it on other patients"
        )
    risk = model.predict_proba(data.X)[:, 1]
    with one_line_warnings():  # a CI on too few resamples, unbounded, or missing its value
        result = score_predictions(
            data.y,
            risk,
            n_boot=n_boot,
            seed=seed,
            n_bins=bins,
            X=data.X if data.ids is None else None,  # distinct ids: different patients
        )
    result.update(
        params=str(params_path),
        rows=str(rows),
        outcome=outcome,
        source=params.metadata.get("source"),
    )
    if png is not None:
        name = "adapted model" if params.metadata.get("source") == "adapted" else "model"
        fig = plot_calibration(
            data.y,
            {name: risk},
            n_bins=bins,
            title=f"Calibration on {Path(rows).name} ({len(risk)} patients, "
            f"{int(data.y.sum())} with {_event(outcome, pos_label)})",
        )
        make_parent(png)
        fig.savefig(png, dpi=120, bbox_inches="tight")
        result["png"] = str(png)
    if as_json:  # inf spelt out: JSON null is kept for a value that could not be computed
        echo_json({**result, "metrics": _spelt_infinities(result["metrics"])})
        return
    m = result["metrics"]
    rows_out = [
        (_NAMES[k], _number(v["value"]), _interval(v, n_boot), _IDEAL[k]) for k, v in m.items()
    ]
    fewer = any(v["n_boot"] != n_boot for v in m.values())
    flagged = any(v["ci_warning"] for v in m.values())
    print_table(
        rows_out,
        ["metric", ("value", "right"), ("95% CI", "right"), "ideal"],
        title=f"{params_path} on {rows}: {result['n']} patients, "
        f"{result['n_positive']} with {_event(outcome, pos_label)} "
        f"(prevalence {result['prevalence']:.3f}, mean predicted risk {result['mean_risk']:.3f})",
        caption=f"95% CIs: percentile bootstrap over patients, {n_boot} resamples"
        + (f" asked for; a CI on fewer says how many (n of {n_boot})" if fewer else "")
        + ("; *: not a plain 95% CI, see the warning" if flagged else "")
        + (
            f"; calibration plot: {png}"
            if png is not None
            else "; --png FILE draws the calibration plot"
        ),
    )


def _spelt_infinities(metrics: dict) -> dict:
    """The scores with ``inf`` and ``-inf`` as the strings "inf" and "-inf" (a slope where the
    risks separate the outcomes, an unbounded CI end), so that ``--json`` tells them from NaN,
    which becomes null."""
    return {
        k: {f: _number(x) if isinstance(x, float) and math.isinf(x) else x for f, x in v.items()}
        for k, v in metrics.items()
    }


def _number(v: float) -> str:
    """A score's table cell: 3 decimals, ``inf`` and ``-inf`` spelt out, "" for NaN."""
    return ("inf" if v > 0 else "-inf") if math.isinf(v) else fmt(v, ".3f")


def _interval(v: dict, n_boot: int) -> str:
    """A score's CI cell: "low to high", with "(n of N)" when it rests on fewer resamples
    than asked for and "*" when it is not a plain CI (its ``ci_warning``)."""
    if math.isnan(v["ci_low"]):
        return ""
    cell = f"{_number(v['ci_low'])} to {_number(v['ci_high'])}"
    if v["n_boot"] != n_boot:
        cell += f" ({v['n_boot']} of {n_boot})"
    return cell + (" *" if v["ci_warning"] else "")


def _adapted_on(params) -> list[str]:
    """The SHA-256 of every rows file the model was adapted on (``ragim adapt``)."""
    seen = params.metadata.get("adapted_on_sha256") or []
    return [seen] if isinstance(seen, str) else [str(h) for h in seen]


@option_groups
@_named_by_file
def adapt(
    params_path: Params,
    rows: Rows,
    outcome: RequiredOutcome,
    save: Annotated[Path, typer.Option("--save", help="where to save the adapted parameters")],
    overwrite: OverwriteSave = False,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="auto (the evidence on the rows chooses, following the adaptation policy the "
            "generator validated in its index; keeps the model when they cannot tell) | "
            "intercept | recalibrate (an intercept and one positive slope) | prior (every "
            "coefficient, under the model's own SDs) | map (every coefficient, with the model as "
            "the prior)",
        ),
    ] = "auto",
    patient_id: PatientId = None,
    pos_label: PosLabel = None,
    csv_options: CsvOptions = CsvOptions(),
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Adapt a model to local labelled patients (ZeroShotClassifier's few-shot adaptation).

    Score the adapted model on other patients than the ones it was adapted on."""
    setup(as_json, quiet)
    from ragim.io import sha256_file
    from ragim.validation import adapt_params

    if method not in ("auto", "intercept", "recalibrate", "prior", "map"):
        raise typer.BadParameter(
            f"--method must be auto, intercept, recalibrate, prior or map, got {method!r}"
        )
    target, source = Path(save).resolve(), Path(params_path).resolve()
    if target == source or target.is_relative_to(source) or source.is_relative_to(target):
        raise typer.BadParameter(
            f"--save {save} is the model being adapted, or inside it, or holds it: saving there "
            "would replace it (and its zero-shot parameters); choose another path"
        )
    refuse_to_replace(save, overwrite, "--save")
    params, _, data = load_model_and_rows(
        params_path, rows, outcome, patient_id, csv_options, pos_label=pos_label
    )
    digest = sha256_file(rows)
    if digest in _adapted_on(params):
        warn(
            f"{params_path} was already adapted on {rows} (same file contents): adapting again "
            "counts these patients twice"
        )
    with one_line_warnings():
        adapted = adapt_params(params, data.X, data.y, adaptation=method, patient_ids=data.ids)
    chosen = adapted.metadata["adaptation"]
    report = adapted.metadata["adaptation_report"]
    adapted = adapted.replace(
        metadata={
            "adapted_from": str(params_path),
            "adapted_on": str(rows),
            # every adaptation's rows file: scoring on any of them is optimistic
            "adapted_on_sha256": [*_adapted_on(params), digest],
            "adapted_outcome": outcome,
        }
    )
    adapted.save(save)
    # the intercept `ragim explain` prints (the reference patient's log-odds), not the raw
    # parameter, which for a model with categorical features is a patient with no level at all
    from ragim.explain import explain_params

    base_before, _, refs = explain_params(params).reference_intercept()
    base_after, _, _ = explain_params(adapted).reference_intercept()
    summary = {
        "path": str(save),
        "method": chosen,
        "asked": method,
        "log_evidence": adapted.metadata["adaptation_report"]["log_evidence"],
        "n_rows": len(data),
        "n_positive": int(data.y.sum()),
        "intercept_before": params.intercept,
        "intercept_after": adapted.intercept,
        "baseline_before": base_before,
        "baseline_after": base_after,
        # the least-squares factor of the adapted terms on the original ones (the recalibration
        # slope when only the scale changed); a median ratio hid large moves of a few terms
        "terms_scale": report["log_odds_scale"],
        "sign_changes": report["sign_changes"],
        "policy": report.get("policy"),
        "policy_note": report.get("policy_note"),
        "evidence_choice": report.get("evidence_choice"),
        "prefer": report.get("prefer"),
        "prefer_ignored": report.get("prefer_ignored"),
        "single_class": report.get("single_class"),
        "reversal_refused": report.get("reversal_refused"),
        "reversal_passed_over": report.get("reversal_passed_over"),
    }
    if as_json:
        echo_json(summary)
        return
    scale = summary["terms_scale"]
    typer.echo(
        f"adapted {params_path} on {len(data)} patients "
        f"({summary['n_positive']} with {_event(outcome, pos_label)}) by "
        f"{_ADAPTATION_WORDS[chosen]}{_why_chosen(method, chosen, report)}; "
        f"saved to {save}\n"
        f"  {'intercept at the reference patient' if refs else 'intercept'}  "
        f"{base_before:+.3f} -> {base_after:+.3f} ({base_after - base_before:+.3f})"
        + (
            f"\n  terms      x {scale:.3f} (least-squares scale, adapted on original terms)"
            if scale is not None
            else ""
        )
        + (
            f"\n  crossed zero: {', '.join(summary['sign_changes'])}"
            if summary["sign_changes"]
            else ""
        )
        + "\nscore it on patients it was not adapted on: "
        + shlex.join(
            ["ragim", "score", str(save), "--rows", "OTHER.csv", "--outcome", outcome]
            + ([] if pos_label is None else ["--pos-label", str(pos_label)])
            + ([] if csv_options.sep == "," else ["--sep", csv_options.sep])
            + ([] if csv_options.thousands is None else ["--thousands", csv_options.thousands])
        )
    )


def _why_chosen(method: str, chosen: str, report: dict) -> str:
    """Who chose the adaptation: the user, the validated policy or the evidence."""
    if method != "auto":
        return ""
    if report.get("prefer") is not None:
        alone = report.get("evidence_choice")
        return f" (as {report['policy_note']}" + (
            f"; the evidence alone would have chosen '{alone}')" if alone != chosen else ")"
        )
    note = report.get("policy_note")
    return " (chosen by the evidence on these rows" + (f": {note})" if note else ")")


_ADAPTATION_WORDS = {
    "zero-shot": "keeping the model as it was",
    "intercept": "an intercept shift",
    "recalibrate": "recalibration",
    "prior": "an update of every coefficient under the model's own SDs and correlations",
    "map": "MAP refit",
}


def export(
    params_path: Params,
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="write every coefficient with its 95% interval here"),
    ] = None,
    overwrite: OverwriteFile = False,
    quiet: Quiet = False,
    as_json: AsJson = False,
):
    """Export a model's coefficients (with 95% intervals and odds ratios) as CSV (with --json:
    the same rows as JSON records, under "coefficients").

    In Python, ragim.export.to_sklearn_pipeline(params) gives a scikit-learn Pipeline that
    predicts as ragim does (loading it needs ragim), and a GAM's .to_interpret() an
    interpret EBM."""
    setup(as_json, quiet)
    refuse_to_replace(csv, overwrite, "--csv")
    from ragim.export import coefficients_frame, save_coefficients_csv, spreadsheet_safe

    params, _ = _load(params_path)
    frame = coefficients_frame(params)
    if csv is not None:
        save_coefficients_csv(params, csv)
    if as_json:  # the coefficients themselves, as the CSV holds them (NaN: null)
        import json

        echo_json(
            {
                "path": None if csv is None else str(csv),
                "kind": params.kind,
                "n_terms": len(frame),
                "columns": list(frame.columns),
                "coefficients": json.loads(frame.to_json(orient="records", double_precision=15)),
            }
        )
        return
    if csv is None:
        typer.echo(spreadsheet_safe(frame).to_csv(index=False), nl=False)
    else:
        say(
            f"wrote {len(frame)} {params.kind} parameters with their 95% intervals to {csv}",
            quiet=quiet,
        )


def register(app: typer.Typer) -> None:
    """Add ``predict``, ``score``, ``adapt`` and ``export`` to the ``ragim`` app."""
    app.command("predict")(predict)
    app.command("score")(score)
    app.command("adapt")(adapt)
    app.command("export")(export)
