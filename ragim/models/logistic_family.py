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
from typing import Any

import numpy as np
import pandas as pd

from ragim.models.family import (
    FITTED_ROWS,
    Z95,
    ModelFamily,
    by_abs,
    clipped_exp,
    fit_constant_terms,
    format_number,
    interval_text,
    reference_level,
    std_terms,
    truncation_note,
    wald_columns,
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


def _model_not_estimable(schema, f, c, ref_term: str | None, const: dict[str, float]) -> str:
    """Why term ``c``'s effect (against the reference, for a categorical feature) cannot be
    estimated from the model's own fitted rows, or ""."""
    if not const:
        return ""
    miss = f.name + "__missing"
    if const.get(miss) == 1.0:
        return f"not estimable: always blank in {FITTED_ROWS}"
    if c.role == "missing":
        if const.get(c.name) == 0.0:
            return f"not estimable: never missing in {FITTED_ROWS}"
    elif c.role == "category":
        if const.get(c.name) == 0.0:
            return f"not estimable: no patient with this level in {FITTED_ROWS}"
    elif c.name in const:
        v = const[c.name]
        always = f" (always {f.level_label(int(v))})" if f.type == "binary" and v in (0, 1) else ""
        return f"not estimable: never varies in {FITTED_ROWS}{always}"
    if ref_term is not None and ref_term != c.name and const.get(ref_term) == 0.0:
        ref = reference_level(schema, f.name)
        return f"not estimable: no patient at the reference level ({ref}) in {FITTED_ROWS}"
    return ""


def term_effects(params: ModelParams) -> pd.DataFrame:
    """Each design term's effect as every logistic explanation reports it, one row per term
    in design order.

    Columns: term, feature, model_coef and model_std (the model's own parameter and its SD:
    for a categorical level, its one-hot coefficient, which is not an effect on its own),
    coef and std (the effect in log-odds: per SD of a continuous feature, the 0→1 change of
    a binary feature or a missing-value indicator, and for a categorical level, or the
    missing indicator of a categorical feature, the difference from the feature's reference
    level, with the SD of that difference from :meth:`ModelParams.contrast_std`; 0 with SD 0
    for the reference level itself), reference_term (the reference level's term, or None) and
    not_estimable (why the data cannot estimate the effect, or ""). coef and std are NaN when
    not estimable: the feature never varied in the schema's rows
    (:meth:`FeatureSchema.not_estimable`) or in the rows the model was fitted on
    (:func:`fit_constant_terms`: a level, or the reference level, no patient had). std is NaN
    when the parameters carry no ``std``.

    Examples
    --------
    >>> import pandas as pd
    >>> from ragim.schema import Feature, FeatureSchema
    >>> X = pd.DataFrame({"cp": ["a", "b", "c", "b"]})
    >>> schema = FeatureSchema([Feature("cp", "categorical")]).fit(X)
    >>> p = ModelParams.from_dict("logistic", schema, {"intercept": 0.0, "cp[a]": -0.5,
    ...     "cp[b]": 0.5, "cp[c]": 0.2})
    >>> term_effects(p)[["term", "model_coef", "coef"]].values.tolist()
    [['cp[a]', -0.5, 0.0], ['cp[b]', 0.5, 1.0], ['cp[c]', 0.2, 0.7]]
    """
    schema = params.schema
    const = fit_constant_terms(params)
    position = {n: i for i, n in enumerate(params.names)}
    rows = []
    for c, b, s in zip(schema.design_columns, params.terms, std_terms(params), strict=True):
        f = schema[c.feature]
        cats = schema.categories_.get(f.name) if f.type == "categorical" else None
        ref_term = f"{f.name}[{cats[0]}]" if cats else None
        effect, sd = float(b), float(s)
        if ref_term is not None and c.name == ref_term:
            effect, sd = 0.0, 0.0 if params.std is not None else math.nan
        elif ref_term is not None:  # a level, or the missing indicator, against the reference
            w = np.zeros(len(params))
            w[position[c.name]], w[position[ref_term]] = 1.0, -1.0
            effect, sd = float(b) - params[ref_term], params.contrast_std(w)
        reason = schema.not_estimable(c) or _model_not_estimable(schema, f, c, ref_term, const)
        if reason:
            effect, sd = math.nan, math.nan
        rows.append(
            {
                "term": c.name,
                "feature": f.name,
                "model_coef": float(b),
                "model_std": float(s),
                "coef": effect,
                "std": sd,
                "reference_term": ref_term,
                "not_estimable": reason,
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            "term",
            "feature",
            "model_coef",
            "model_std",
            "coef",
            "std",
            "reference_term",
            "not_estimable",
        ],
    )
    out["reference_term"] = out["reference_term"].astype(object)
    out.loc[out["reference_term"].isna(), "reference_term"] = None
    return out


def _comparison_rows(p: ModelParams, missing: bool) -> tuple[pd.DataFrame, int]:
    """Display rows (see :meth:`LogisticFamily.explanation_table`) and the number of
    missing-indicator terms left out."""
    schema = p.schema
    effects = term_effects(p)
    rows, hidden = [], 0
    for c, e in zip(schema.design_columns, effects.itertuples(), strict=True):
        f = schema[c.feature]
        ref_term = e.reference_term
        if c.name == ref_term:
            continue  # the reference level: every other level is compared with it
        if c.role == "missing" and not missing:
            hidden += 1
            continue
        b, s = e.coef, e.std
        ref = schema.categories_[f.name][0] if ref_term is not None else None
        if e.not_estimable:
            comparison = e.not_estimable
        elif c.role == "value" and f.type == "continuous":
            comparison = f"+1 SD ({_num_text(c.scale)} {f.unit})".replace(" )", ")")
        elif c.role == "value":
            comparison = f"{f.level_label(1)} vs {f.level_label(0)}"
        elif c.role == "category":
            comparison = f"{f.level_label(c.category)} vs {f.level_label(ref)}"
        elif ref_term is not None:
            comparison = f"missing vs {f.level_label(ref)}"
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
                **wald_columns(b, s),
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
    importance_label = "log-odds range (per SD, 0→1, or between levels)"
    fits_on_design = True

    def param_names(self, schema: FeatureSchema) -> list[str]:
        return ["intercept", *schema.design_names]

    def design_matrix(self, schema: FeatureSchema, X: pd.DataFrame) -> np.ndarray:
        """The standardised design matrix ``schema.transform(X)``."""
        return schema.transform(X)

    def term_features(self, schema: FeatureSchema) -> list[str]:
        return [c.feature for c in schema.design_columns]

    def log_odds_reach(self, params: ModelParams) -> float | None:
        """``|intercept| + sum_j |beta_j| r_j``, ``r_j`` the largest size of design column
        ``j`` in range: 1 for an indicator; ``max |range end - mean| / scale`` for a continuous
        value, or 1 when the schema was saved without its range (the values a scale was fitted
        on reach at least one SD from their mean)."""
        schema = params.schema
        reach = np.ones(len(params.vector) - 1)
        for j, col in enumerate(schema.design_columns):
            ends = schema.ranges_.get(col.feature)
            if col.role == "value" and schema[col.feature].type == "continuous" and ends:
                reach[j] = max(abs(v - col.center) for v in ends) / col.scale
        with np.errstate(over="ignore", invalid="ignore"):
            return float(abs(params.intercept) + np.abs(params.terms) @ reach)

    def estimator(self, schema: FeatureSchema, C: float = 1.0):
        return self.model_cls(schema=schema, C=C)

    def pooled_fit(self, schema, X, y, D) -> np.ndarray:
        """``LogisticModel(C=1)`` on the pooled rows."""
        return self.model_cls(schema=schema, C=1.0).fit(X, y).to_params().vector

    def sklearn_export_problem(self) -> str | None:
        return None

    # ------------------------------------------------------------------ explanations
    def explanation_frame(self, params: ModelParams) -> pd.DataFrame:
        """One row per design term (see ``GlobalExplanation``); the effect columns come from
        :func:`term_effects`, so a level has the odds ratio against its reference here as in
        every other view."""
        schema = params.schema
        rows = []
        effects = term_effects(params)
        for c, e in zip(schema.design_columns, effects.itertuples(), strict=True):
            f = schema[c.feature]
            cont = c.role == "value" and f.type == "continuous"
            unit = f.unit if cont else ""
            change = f"+1 SD = {c.scale:.3g} {unit}".strip() if cont else "0→1"
            if e.reference_term is not None:
                change = "vs the reference level"
            b, s = e.coef, e.std
            if e.not_estimable:  # no effect is claimed
                change = e.not_estimable
            rows.append(
                {
                    "term": c.name,
                    "feature": c.feature,
                    "label": _term_label(f, c),
                    "reference": _term_reference(schema, f, c),
                    "type": f.type,
                    "role": c.role,
                    "category": c.category,
                    **wald_columns(b, s),
                    "odds_ratio_per_sd": clipped_exp(b),
                    "change": change,
                    "not_estimable": e.not_estimable,
                    "coef_per_unit": b / c.scale,
                    "odds_ratio_per_unit": clipped_exp(b / c.scale),
                    "unit": unit,
                    "scale": c.scale,
                    "model_coef": e.model_coef,
                    "model_std": e.model_std,
                }
            )
        return pd.DataFrame(rows)

    def importance(self, params: ModelParams, frame: pd.DataFrame) -> pd.Series:
        """Per feature, the log-odds range of its effect: |coef| per SD for a continuous
        feature, |coef| of the 0→1 change for a binary one, and for a categorical feature the
        largest difference between two of its levels (max - min of the level effects against
        the reference, the reference counting 0), so the same for every parameterisation
        that predicts the same. Missing-value indicators and effects that are not estimable
        are left out (a feature with none left gets 0)."""
        kept = frame[(frame["role"] != "missing") & frame["coef"].notna()]
        return kept.groupby("feature", sort=False)["coef"].apply(
            lambda s: float(s.abs().max()) if len(s) == 1 else float(s.max() - s.min())
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

    @staticmethod
    def reference_terms(params: ModelParams) -> list[tuple[Any, str]]:
        """``(feature, term)`` of each categorical feature's reference level (its first
        category) that is a term of ``params``: what :meth:`reference_intercept` adds to the
        intercept and :meth:`local_contributions` measures each level from."""
        schema, names = params.schema, set(params.names)
        out = []
        for f in schema.features:
            if f.type == "categorical" and schema.categories_[f.name]:
                term = f"{f.name}[{schema.categories_[f.name][0]}]"
                if term in names:
                    out.append((f, term))
        return out

    def reference_intercept(self, params: ModelParams) -> tuple[float, float, list[str]]:
        """The intercept plus each categorical feature's reference-level coefficient."""
        value, _, refs = super().reference_intercept(params)
        names = params.names
        w = np.zeros(len(params))
        w[0] = 1.0
        for f, term in self.reference_terms(params):
            value += params[term]
            w[names.index(term)] = 1.0
            refs.append(f"{f.display_name} = {f.level_label(params.schema.categories_[f.name][0])}")
        return value, params.contrast_std(w), refs

    def local_contributions(
        self, params: ModelParams, X: pd.DataFrame
    ) -> tuple[dict[str, dict], pd.DataFrame | None]:
        """As the base's, but each categorical feature's contribution is measured from its
        reference level, as the global table's comparisons are (its own coefficient less the
        reference level's), so that they add up from :meth:`reference_intercept`'s log-odds of
        the reference patient. In the per-term frame the reference level's term counts from the
        reference patient too, ``(design_value - 1) * coef``, so its rows still add up to the
        feature's contribution."""
        folded, terms = super().local_contributions(params, X)
        for f, term in self.reference_terms(params):
            folded[f.name]["contribution"] -= float(params[term])
            if terms is not None:
                terms.loc[terms["term"] == term, "contribution"] -= float(params[term])
        return folded, terms

    def baseline_text(self, value: float, sd: float, refs: list[str]) -> str:
        """ "intercept at the reference patient -3.521 (95% CI ...): its levels; binary
        features at 0, continuous at their mean, none missing": the log-odds the table's
        comparisons start from."""
        where = "; ".join(
            [", ".join(refs)] * bool(refs)
            + ["binary features at 0, continuous at their mean, none missing"]
        )
        return f"intercept at the reference patient {value:+.3f}{interval_text(value, sd)}: {where}"

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
