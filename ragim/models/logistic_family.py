"""The logistic family: coefficients on the schema's standardised design.

Parameters are ``["intercept", *schema.design_names]``; the design is
``schema.transform(X)`` (continuous features per SD, indicators 0/1). Explanations have one
row per design term; the table compares categorical levels with their reference level.

Examples
--------
>>> import pandas as pd
>>> from ragim.schema import FeatureSchema
>>> X = pd.DataFrame({"age": [40.0, None, 80.0]})
>>> LogisticFamily().param_names(FeatureSchema.infer(X).fit(X))
['intercept', 'age', 'age__missing']
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ragim.models.family import (
    Z95,
    ModelFamily,
    by_abs,
    clipped_exp,
    format_number,
    reference_level,
    std_terms,
    truncation_note,
)
from ragim.params import ModelParams
from ragim.schema import FeatureSchema


def _num_text(v: float) -> str:
    return f"{v:.3g}"


def _unit_hint(unit: str, *parts: str) -> str:
    bits = [b for b in (unit, *parts) if b]
    return f" ({', '.join(bits)})" if bits else ""


def _term_label(f, c) -> str:
    """A design term in words: "Chest-pain type = asymptomatic", "Age (years)", "Sex = male"."""
    if c.role == "missing":
        return f"{f.display_name} = missing"
    if c.role == "category":
        return f"{f.display_name} = {f.level_label(c.category)}"
    if f.type == "binary":
        return f"{f.display_name} = {f.level_label(1)}"
    return f"{f.display_name} ({f.unit})" if f.unit else f.display_name


def _term_reference(schema, f, c) -> str:
    """What a term's effect is compared with ("" for continuous values: per SD)."""
    if c.role == "missing":
        return (
            reference_level(schema, f.name) if f.type == "categorical" else "recorded at the median"
        )
    return reference_level(schema, f.name) or ""


def _comparison_rows(p: ModelParams, missing: bool) -> tuple[pd.DataFrame, int]:
    """Display rows (see :meth:`LogisticFamily.explanation_table`) and the number of
    missing-indicator terms left out."""
    schema = p.schema
    coef = dict(zip(schema.design_names, p.terms, strict=True))
    sd = dict(zip(schema.design_names, std_terms(p), strict=True))
    position = {n: i for i, n in enumerate(p.names)}

    def versus(term: str, ref: str) -> tuple[float, float]:  # coef and SD of term - ref
        w = np.zeros(len(p))
        w[position[term]], w[position[ref]] = 1.0, -1.0
        return float(coef[term]) - float(coef[ref]), p.contrast_std(w)

    rows, hidden = [], 0
    for c in schema.design_columns:
        f = schema[c.feature]
        b, s = float(coef[c.name]), float(sd[c.name])
        ref = (
            schema.categories_[f.name][0]
            if f.type == "categorical" and schema.categories_[f.name]
            else None
        )
        ref_term = f"{f.name}[{ref}]" if ref is not None else None
        if c.role == "category" and c.category == ref:
            continue  # the reference level: every other level is compared with it
        if c.role == "missing" and not missing:
            hidden += 1
            continue
        if schema.not_estimable(c):
            comparison, b, s = schema.not_estimable(c), math.nan, math.nan
        elif c.role == "value" and f.type == "continuous":
            comparison = f"+1 SD ({_num_text(c.scale)} {f.unit})".replace(" )", ")")
        elif c.role == "value":
            comparison = f"{f.level_label(1)} vs {f.level_label(0)}"
        elif c.role == "category":
            comparison = f"{f.level_label(c.category)} vs {f.level_label(ref)}"
            b, s = versus(c.name, ref_term)
        elif f.type == "categorical" and ref_term is not None:
            comparison = f"missing vs {f.level_label(ref)}"
            b, s = versus(c.name, ref_term)
        else:
            med = schema.medians_[f.name]
            shown = (
                f.level_label(med) if f.type == "binary" else f"{_num_text(med)} {f.unit}".strip()
            )
            comparison = f"missing vs recorded {shown} (the median)"
        rows.append(
            {
                "term": c.name,
                "feature": f.name,
                "label": f.display_name,
                "comparison": comparison,
                "coef": b,
                "std": s,
                "ci_low": b - Z95 * s,
                "ci_high": b + Z95 * s,
                "odds_ratio": clipped_exp(b),
                "or_low": clipped_exp(b - Z95 * s),
                "or_high": clipped_exp(b + Z95 * s),
            }
        )
    cols = [
        "term",
        "feature",
        "label",
        "comparison",
        "coef",
        "std",
        "ci_low",
        "ci_high",
        "odds_ratio",
        "or_low",
        "or_high",
    ]
    return by_abs(pd.DataFrame(rows, columns=cols), "coef").reset_index(drop=True), hidden


class LogisticFamily(ModelFamily):
    """Logistic regression on the standardised design (:class:`~ragim.models.LogisticModel`)."""

    name = "logistic"
    title = "logistic regression"
    figure_name = "Logistic model"
    value_column = "coef"
    term_noun = "terms"
    importance_label = "max |coef| (log-odds per SD or 0→1)"
    fits_on_design = True

    def param_names(self, schema: FeatureSchema) -> list[str]:
        return ["intercept", *schema.design_names]

    def design_matrix(self, schema: FeatureSchema, X: pd.DataFrame) -> np.ndarray:
        """The standardised design matrix ``schema.transform(X)``."""
        return schema.transform(X)

    def term_features(self, schema: FeatureSchema) -> list[str]:
        return [c.feature for c in schema.design_columns]

    def estimator(self, schema: FeatureSchema, C: float = 1.0):
        return self.model_cls(schema=schema, C=C)

    def pooled_fit(self, schema, X, y, D) -> np.ndarray:
        """``LogisticModel(C=1)`` on the pooled rows."""
        return self.model_cls(schema=schema, C=1.0).fit(X, y).to_params().vector

    def sklearn_export_problem(self) -> str | None:
        return None

    # ------------------------------------------------------------------ explanations
    def explanation_frame(self, params: ModelParams) -> pd.DataFrame:
        """One row per design term (see ``GlobalExplanation``)."""
        schema = params.schema
        rows = []
        for c, b, s in zip(schema.design_columns, params.terms, std_terms(params), strict=True):
            f = schema[c.feature]
            cont = c.role == "value" and f.type == "continuous"
            unit = f.unit if cont else ""
            change = f"+1 SD = {c.scale:.3g} {unit}".strip() if cont else "0→1"
            if schema.not_estimable(c):  # the column never varied: no effect is claimed
                change, b, s = schema.not_estimable(c), math.nan, math.nan
            rows.append(
                {
                    "term": c.name,
                    "feature": c.feature,
                    "label": _term_label(f, c),
                    "reference": _term_reference(schema, f, c),
                    "type": f.type,
                    "role": c.role,
                    "category": c.category,
                    "coef": b,
                    "std": s,
                    "ci_low": b - Z95 * s,
                    "ci_high": b + Z95 * s,
                    "odds_ratio_per_sd": clipped_exp(b),
                    "change": change,
                    "coef_per_unit": b / c.scale,
                    "odds_ratio_per_unit": clipped_exp(b / c.scale),
                    "unit": unit,
                    "scale": c.scale,
                }
            )
        return pd.DataFrame(rows)

    def importance(self, params: ModelParams, frame: pd.DataFrame) -> pd.Series:
        """The largest |coef| among the feature's non-missing-indicator terms."""
        return (
            frame[frame["role"] != "missing"]
            .groupby("feature", sort=False)["coef"]
            .apply(lambda s: s.abs().max())
        )

    def explanation_table(self, expl, top: int | None, missing: bool) -> pd.DataFrame:
        df, hidden = _comparison_rows(expl.params, missing)
        total = len(df)
        df = df.head(top) if top is not None else df
        df.attrs.update(
            n_total=total,
            n_hidden_missing=hidden,
            note=truncation_note(len(df), total, "terms", hidden),
        )
        return df

    def reference_intercept(self, params: ModelParams) -> tuple[float, float, list[str]]:
        """The intercept plus each categorical feature's reference-level coefficient."""
        value, _, refs = super().reference_intercept(params)
        schema = params.schema
        names = params.names
        w = np.zeros(len(params))
        w[0] = 1.0
        for f in schema.features:
            if f.type != "categorical" or not schema.categories_[f.name]:
                continue
            ref = schema.categories_[f.name][0]
            term = f"{f.name}[{ref}]"
            if term in names:
                value += params[term]
                w[names.index(term)] = 1.0
                refs.append(f"{f.display_name} = {f.level_label(ref)}")
        return value, params.contrast_std(w), refs

    def plot_global(self, expl, table: pd.DataFrame, kind: str, ax=None):
        """Each row labelled with its comparison ("sex: male vs female")."""
        df = table.assign(
            label=[
                f"{lab}: {cmp}"
                for lab, cmp in zip(table["label"], table["comparison"], strict=True)
            ]
        )
        return super().plot_global(expl, df, kind, ax)

    def html_columns(self) -> list[str]:
        return [
            "label",
            "comparison",
            "odds_ratio",
            "or_low",
            "or_high",
            "coef",
            "ci_low",
            "ci_high",
            "term",
        ]

    def summary_lines(self, expl) -> list[str]:
        t = expl.table(5)
        lines = [
            f"  {r.label + ': ' + r.comparison:<64}"
            + (f" OR {r.odds_ratio:.3g}" if math.isfinite(r.odds_ratio) else "")
            + (f" (95% CI {r.or_low:.3g}-{r.or_high:.3g})" if math.isfinite(r.or_low) else "")
            for r in t.itertuples()
        ]
        return [*lines, f"  ({t.attrs['note']})"]

    def text_table(self, table: pd.DataFrame) -> tuple[list[tuple], list]:
        fmt = format_number
        rows = [
            (
                r.label,
                r.comparison,
                fmt(r.odds_ratio),
                f"{fmt(r.or_low)}-{fmt(r.or_high)}" if math.isfinite(r.or_low) else "",
                fmt(r.coef, "+.3f"),
            )
            for r in table.itertuples()
        ]
        cols = [
            "term",
            "comparison",
            ("odds ratio", "right"),
            ("95% CI", "right"),
            ("log-odds", "right"),
        ]
        return rows, cols

    # ------------------------------------------------------------------ prompts
    def schema_lines(self, schema: FeatureSchema) -> list[str]:
        """One line per design term, with units and descriptions."""
        lines: list[str] = []
        described: set[str] = set()
        for col in schema.design_columns:
            f = schema[col.feature]
            if col.role == "missing":
                lines.append(f"- {col.name} (0/1, 1 = {f.name} missing)")
                continue
            if col.role == "category":
                hint = " (0/1)"
            elif f.type == "continuous":
                hint = _unit_hint(f.unit, "per SD")
            else:
                hint = _unit_hint(f.unit, "0/1")
            desc = f": {f.description}" if f.description and f.name not in described else ""
            described.add(f.name)
            lines.append(f"- {col.name}{hint}{desc}")
        return lines

    def prompt_head(self) -> str:
        return (
            'Model: logistic regression. Parameters: "intercept" and one coefficient (log-odds) '
            "per design term below. Continuous features are standardised (a coefficient is per "
            "SD); indicators are 0/1."
        )
