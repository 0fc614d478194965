"""Explanations of interpretable models: data first, pictures second.

:func:`explain_params` turns a :class:`~ragim.params.ModelParams` into

* a :class:`GlobalExplanation` (what the model says overall): one row per logistic
  term, or per GAM bin, with a 95% interval when ``params.std`` exists;
* a :class:`LocalExplanation` (why this patient got this risk) when one row is
  given: each feature's additive contribution to that patient's log-odds.

As in interpret, an explanation is data: ``to_frame()`` (tidy pandas) and ``data()``
(a JSON-safe dict) come first; ``plot()`` (a matplotlib Figure), ``save_png()`` and
``_repr_html_()`` are built on them. Both explanations carry ``.provenance``: the
retrieved neighbour tasks a generated model was made from (empty for a fitted model),
and ``.coverage``: how well the index covered the model's description (top and effective
similarity, effective neighbours, the index's threshold; :mod:`ragim.domain`), or None.

Examples
--------
>>> import pandas as pd
>>> from ragim.schema import FeatureSchema
>>> X = pd.DataFrame({"age": [40.0, 50.0, 60.0, 70.0], "smoker": [0, 1, 1, 0]})
>>> schema = FeatureSchema.infer(X, units={"age": "years"}).fit(X)
>>> p = ModelParams.from_dict("logistic", schema, {"intercept": -1.0, "age": 0.5, "smoker": 0.7})
>>> ex = explain_params(p)
>>> ex.to_frame()[["term", "coef", "odds_ratio_per_sd"]].round(3).to_dict("list")
{'term': ['age', 'smoker'], 'coef': [0.5, 0.7], 'odds_ratio_per_sd': [1.649, 2.014]}
>>> loc = explain_params(p, X.iloc[[1]])
>>> bool(abs(loc.intercept + loc.to_frame()["contribution"].sum() - loc.logit) < 1e-12)
True
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragim import plots
from ragim.errors import ValidationError
from ragim.params import ModelParams

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def explain_params(params: ModelParams, X_row: pd.DataFrame | pd.Series | Mapping | None = None, *,
                   outcome: str | None = None) -> GlobalExplanation | LocalExplanation:
    """Explain a model: globally, or for one patient when ``X_row`` is given.

    Parameters
    ----------
    params : the model's parameters (logistic or GAM).
    X_row : one patient as a one-row DataFrame, a Series or a dict of raw values.
    outcome : what the model predicts, in words ("coronary artery disease"), for titles;
        default ``params.metadata["outcome"]``, else "the outcome".

    Examples
    --------
    >>> import pandas as pd
    >>> from ragim.schema import FeatureSchema
    >>> X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
    >>> p = ModelParams.from_dict("logistic", FeatureSchema.infer(X).fit(X), {"intercept": 0.0, "age": 1.0})
    >>> type(explain_params(p)).__name__, type(explain_params(p, X.iloc[0])).__name__
    ('GlobalExplanation', 'LocalExplanation')
    """
    if not isinstance(params, ModelParams):
        raise ValidationError(f"explain_params needs ModelParams, got {type(params).__name__}; "
                              "for a model use model.explain()")
    if outcome is not None and (not isinstance(outcome, str) or not outcome.strip()):
        raise ValidationError(
            f"outcome must be a non-empty text naming what the model predicts, got {outcome!r}"
        )
    if X_row is None:
        return GlobalExplanation(params, outcome=outcome)
    return LocalExplanation(params, X_row, outcome=outcome)


# ---------------------------------------------------------------------- helpers
def _jsonable(x: Any) -> Any:
    """Recursively convert to JSON-safe Python (non-finite floats become None)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, bool | int | str):
        return x
    return None if x is pd.NA else str(x)


def _records(df: pd.DataFrame) -> list[dict]:
    return _jsonable(df.to_dict("records"))


def _by_abs(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Rows sorted by |df[col]|, largest first."""
    return df.reindex(df[col].abs().sort_values(ascending=False, kind="stable").index)


def _num(v: Any, what: str) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        raise ValidationError(f"provenance {what} must be a number, got {v!r}") from None


def _fmt(v: Any) -> str:
    if v is None or pd.isna(v):
        return "missing"
    return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)


def _outcome_name(params: ModelParams, outcome: str | None) -> str:
    """The outcome in words: the given one, ``metadata["outcome"]``, or "the outcome"."""
    name = outcome if outcome is not None else params.metadata.get("outcome")
    return " ".join(str(name).split()) if isinstance(name, str) and name.strip() else "the outcome"


def _num_text(v: float) -> str:
    return f"{v:.3g}"


def reference_level(schema, feature: str) -> str | None:
    """The level a binary or categorical feature's effects are compared with, as a label:
    0 for binary features, the first category for categorical ones; None for continuous.

    Examples
    --------
    >>> from ragim.datasets.heart import heart_schema, load_heart_csv
    >>> s = heart_schema().fit(load_heart_csv()[heart_schema().names])
    >>> reference_level(s, "sex"), reference_level(s, "cp"), reference_level(s, "age")
    ('female', 'typical angina', None)
    """
    f = schema[feature]
    if f.type == "binary":
        return f.level_label(0)
    if f.type == "categorical":
        cats = schema.categories_[feature]
        return f.level_label(cats[0]) if cats else None
    return None


def truncation_note(shown: int, total: int, what: str = "terms", hidden_missing: int = 0) -> str:
    """A sentence that says how much of a table or plot is shown.

    >>> truncation_note(15, 18, hidden_missing=10)
    '15 of 18 terms shown (largest first); 10 missing-value indicator terms not shown'
    """
    text = (
        f"{shown} of {total} {what} shown (largest first)"
        if shown < total
        else f"all {total} {what} shown"
    )
    if hidden_missing:
        plural = "s" if hidden_missing != 1 else ""
        text += f"; {hidden_missing} missing-value indicator term{plural} not shown"
    return text


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.3g}",
                      classes="ragim-table", escape=True)


class _Explanation:
    """Shared PNG / JSON / HTML plumbing."""

    inline_plot: bool = True  # embed a PNG of plot() in _repr_html_ (set False on the class to skip)

    def to_json(self, indent: int | None = None) -> str:
        """``data()`` as JSON text."""
        return json.dumps(self.data(), indent=indent, allow_nan=False)

    def save_png(self, path: str | Path, *, dpi: int = 150, **plot_kw) -> Path:
        """Render ``plot(**plot_kw)`` to a PNG file and return its path."""
        (path := Path(path)).parent.mkdir(parents=True, exist_ok=True)
        self.plot(**plot_kw).savefig(path, format="png", dpi=dpi, bbox_inches="tight")
        return path

    def _img_html(self, **plot_kw) -> str:
        if not self.inline_plot:
            return ""
        buf = io.BytesIO()
        self.plot(**plot_kw).savefig(buf, format="png", dpi=80, bbox_inches="tight")
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        return f'<div><img alt="plot" style="max-width:720px" src="data:image/png;base64,{b64}"/></div>'


# ---------------------------------------------------------------------- coverage
def coverage_summary(coverage: Mapping[str, Any] | None) -> str | None:
    """One line on how well the index covered a generated model's description, from
    ``params.metadata["coverage"]`` (:meth:`ragim.domain.Coverage.data`); None without one.

    Examples
    --------
    >>> coverage_summary({"top_similarity": 0.31, "effective_similarity": 0.25, "effective_neighbors": 0.0,
    ...                   "k": 10, "threshold": 0.62, "typical": 0.8})
    "index coverage: top similarity 0.31, effective similarity 0.25, 0.0 effective neighbour(s) of 10; threshold 0.62: OUTSIDE the index's domain"
    """
    if not coverage:
        return None
    try:
        top, eff_sim = float(coverage["top_similarity"]), float(coverage["effective_similarity"])
        n_eff, k, thr = coverage.get("effective_neighbors"), int(coverage["k"]), coverage.get("threshold")
    except (KeyError, TypeError, ValueError):
        raise ValidationError(f"params.metadata['coverage'] is not a coverage record: {coverage!r}") from None
    eff = "n/a" if n_eff is None else f"{float(n_eff):.1f}"
    line = (f"index coverage: top similarity {top:.2f}, effective similarity {eff_sim:.2f}, "
            f"{eff} effective neighbour(s) of {k}")
    if thr is None:
        return line + " (the index is too small to calibrate a threshold)"
    verdict = "in the index's domain" if top >= float(thr) else "OUTSIDE the index's domain"
    return line + f"; threshold {float(thr):.2f}: {verdict}"


def _coverage_html(coverage: Mapping[str, Any] | None) -> str:
    line = coverage_summary(coverage)
    return "" if line is None else f"<p><i>{html.escape(line)}</i></p>"


# ---------------------------------------------------------------------- provenance
class Provenance(Sequence):
    """The neighbour tasks a generated model was built from, best first.

    A read-only list of dicts with ``task_id``, ``description``, ``similarity`` and
    ``weight`` (NaN when unknown) plus any extra keys the generator stored. Empty for a
    fitted model. Filled from ``params.metadata["provenance"]``.

    Examples
    --------
    >>> prov = Provenance([{"task_id": "cleveland-men", "description": "Men, Cleveland",
    ...                     "similarity": 0.91, "weight": 0.6}])
    >>> len(prov), prov[0]["task_id"], list(prov.to_frame().columns)
    (1, 'cleveland-men', ['task_id', 'description', 'similarity', 'weight'])
    """

    FIELDS = ("task_id", "description", "similarity", "weight")

    def __init__(self, records: Iterable[Mapping[str, Any]] = ()):
        self._records: list[dict] = []
        for i, r in enumerate(records):
            if not isinstance(r, Mapping) or "task_id" not in r:
                raise ValidationError(f"provenance record #{i} must be a mapping with a 'task_id', got {r!r}")
            self._records.append({
                "task_id": str(r["task_id"]),
                "description": str(r.get("description") or ""),
                "similarity": _num(r.get("similarity"), "similarity"),
                "weight": _num(r.get("weight"), "weight"),
                **{k: v for k, v in r.items() if k not in self.FIELDS},
            })

    @classmethod
    def from_params(cls, params: ModelParams) -> Provenance:
        raw = params.metadata.get("provenance") or []
        if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
            raise ValidationError("params.metadata['provenance'] must be a list of neighbour records")
        return cls(raw)

    def __getitem__(self, i):
        return Provenance(self._records[i]) if isinstance(i, slice) else dict(self._records[i])

    def __len__(self) -> int:
        return len(self._records)

    def to_frame(self) -> pd.DataFrame:
        """One row per neighbour: task_id, description, similarity, weight (+ extra keys)."""
        extra = dict.fromkeys(k for r in self._records for k in r if k not in self.FIELDS)
        return pd.DataFrame(self._records, columns=[*self.FIELDS, *extra])

    def data(self) -> list[dict]:
        """JSON-safe list of the records."""
        return _jsonable(self._records)

    def plot(self, ax=None):
        """Bar chart of neighbour weights labelled by task id and short description."""
        return plots.plot_provenance(self.to_frame(), ax=ax)

    def _repr_html_(self) -> str:
        if not self._records:
            return "<p><i>Provenance: none (a fitted model, not generated from neighbours).</i></p>"
        return f"<p><b>Provenance</b>: {len(self)} retrieved neighbour tasks</p>" + _table_html(
            self.to_frame()[list(self.FIELDS)])

    def __repr__(self) -> str:
        if not self._records:
            return "Provenance(empty: fitted model)"
        items = ", ".join(f"{r['task_id']} (w={r['weight']:.2f})" for r in self._records[:5])
        return f"Provenance({len(self)} neighbours: {items}{' ...' if len(self) > 5 else ''})"


# ---------------------------------------------------------------------- global
def _logistic_frame(p: ModelParams) -> pd.DataFrame:
    schema = p.schema
    std = p.std[1:] if p.std is not None else np.full(len(p) - 1, np.nan)
    rows = []
    for c, b, s in zip(schema.design_columns, p.terms, std, strict=True):
        f = schema[c.feature]
        cont = c.role == "value" and f.type == "continuous"
        unit = f.unit if cont else ""
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
                "odds_ratio_per_sd": math.exp(min(b, 700.0)),  # clipped: stays finite for JSON
                "change": f"+1 SD = {c.scale:.3g} {unit}".strip() if cont else "0→1",
                "coef_per_unit": b / c.scale,
                "odds_ratio_per_unit": math.exp(min(b / c.scale, 700.0)),
                "unit": unit,
                "scale": c.scale,
            }
        )
    return pd.DataFrame(rows)


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


def _logistic_table(p: ModelParams, missing: bool) -> tuple[pd.DataFrame, int]:
    """Display rows of a logistic model (see :meth:`GlobalExplanation.table`) and the number of
    missing-indicator terms left out."""
    schema = p.schema
    std = p.std[1:] if p.std is not None else np.full(len(p) - 1, np.nan)
    coef = dict(zip(schema.design_names, p.terms, strict=True))
    sd = dict(zip(schema.design_names, std, strict=True))
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
        if c.role == "value" and f.type == "continuous":
            comparison = f"+1 SD ({_num_text(c.scale)} {f.unit})".replace(" )", ")")
        elif c.role == "value":
            comparison = f"{f.level_label(1)} vs {f.level_label(0)}"
        elif c.role == "category":
            comparison = f"{f.level_label(c.category)} vs {f.level_label(ref)}"
            b, s = b - float(coef[ref_term]), math.hypot(s, float(sd[ref_term]))
        elif f.type == "categorical" and ref_term is not None:
            comparison = f"missing vs {f.level_label(ref)}"
            b, s = b - float(coef[ref_term]), math.hypot(s, float(sd[ref_term]))
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
                "odds_ratio": math.exp(min(b, 700.0)),
                "or_low": math.exp(min(b - Z95 * s, 700.0)),
                "or_high": math.exp(min(b + Z95 * s, 700.0)),
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
    return _by_abs(pd.DataFrame(rows, columns=cols), "coef").reset_index(drop=True), hidden


def _continuous_bounds(schema, name: str) -> np.ndarray:
    """Bin boundaries for plotting; the open outer bins are cut one half-bin past their midpoint."""
    e = np.asarray(schema.bin_edges_[name], float)
    mids = schema.bin_midpoints(name)
    if e.size == 0:
        w = max(abs(float(mids[0])) * 0.1, 1.0)
        return np.array([mids[0] - w, mids[0] + w])
    return np.concatenate([[2 * mids[0] - e[0]], e, [2 * mids[-1] - e[-1]]])


def _gam_frame(p: ModelParams) -> pd.DataFrame:
    schema = p.schema
    rows = []
    for k, f in enumerate(schema.features):
        labels = schema.bin_labels(f.name)
        start = 1 + int(schema.gam_offsets[k])
        scores = p.vector[start : start + len(labels)]
        stds = p.std[start : start + len(labels)] if p.std is not None else np.full(len(labels), np.nan)
        n_obs = len(labels) - (f.name in schema.missing_)
        mids = schema.bin_midpoints(f.name)
        bounds = _continuous_bounds(schema, f.name) if f.type == "continuous" else None
        for i, (lab, s, sd) in enumerate(zip(labels, scores, stds, strict=True)):
            obs = i < n_obs
            rows.append(
                {
                    "feature": f.name,
                    "label": f.display_name,
                    "type": f.type,
                    "term": f"{f.name}[{lab}]",
                    "bin": lab,
                    "bin_label": f.level_label(lab) if obs and f.type != "continuous" else lab,
                    "is_missing_bin": not obs,
                    "bin_low": bounds[i] if obs and bounds is not None else np.nan,
                    "bin_high": bounds[i + 1] if obs and bounds is not None else np.nan,
                    "midpoint": mids[i] if obs and f.type != "categorical" else np.nan,
                    "score": s,
                    "std": sd,
                    "ci_low": s - Z95 * sd,
                    "ci_high": s + Z95 * sd,
                    "odds_ratio": math.exp(min(s, 700.0)),
                    "unit": f.unit,
                }
            )
    return pd.DataFrame(rows)


class GlobalExplanation(_Explanation):
    """What a model says overall; build with :func:`explain_params`.

    Logistic rows (``to_frame()``): term, feature, label (the term in words, from the
    schema's labels: "Chest-pain type = asymptomatic"), reference (what a binary or
    categorical term is compared with), type, role, category, coef (on the standardised
    design scale), std, ci_low/ci_high (coef ± 1.96 std; NaN without std),
    odds_ratio_per_sd (exp(coef): per SD for continuous values, for the 0→1 change of
    binary, one-hot and missing-indicator columns), change (what one step means),
    coef_per_unit and odds_ratio_per_unit (coef / scale, per raw unit; equal to coef for
    indicators), unit, scale.

    GAM rows: one per feature × bin: feature, label, type, term, bin, bin_label (the bin in
    words), is_missing_bin, bin_low/bin_high (continuous), midpoint, score (log-odds), std,
    ci_low/ci_high, odds_ratio, unit.

    :meth:`table` gives the rows a reader needs (categorical levels against their reference,
    missing-value indicators folded, largest first); :meth:`plot` and the CLI draw from it.

    Attributes: ``kind``, ``intercept``, ``intercept_std`` (NaN if unknown), ``source``,
    ``outcome`` (in words), ``provenance``, ``coverage`` (the index's coverage of the
    description, a dict, or None), ``params``.
    """

    def __init__(self, params: ModelParams, outcome: str | None = None):
        self.params, self.kind = params, params.kind
        self.intercept = params.intercept
        self.intercept_std = float(params.std[0]) if params.std is not None else math.nan
        self.source = params.metadata.get("source")
        self.outcome = _outcome_name(params, outcome)
        self.provenance = Provenance.from_params(params)
        self.coverage = params.metadata.get("coverage")
        coverage_summary(self.coverage)  # a damaged record fails here, not when shown
        self._frame = _logistic_frame(params) if self.kind == "logistic" else _gam_frame(params)

    def reference_intercept(self) -> tuple[float, float, list[str]]:
        """The log-odds of the reference patient of :meth:`table` (logistic models).

        :meth:`table` compares each categorical level with its feature's reference level, so
        the intercept that goes with it is the model's intercept plus each reference level's
        own coefficient. Returns (log-odds, SD combining the parts as independent, NaN when
        unknown, and the reference levels in words, e.g. ``["Ward = medical"]``). For a GAM,
        or a model without categorical features, the model's intercept.

        Examples
        --------
        >>> import pandas as pd
        >>> from ragim.schema import Feature, FeatureSchema
        >>> X = pd.DataFrame({"cp": ["typical", "atypical", "typical", None]})
        >>> schema = FeatureSchema([Feature("cp", "categorical", label="Chest pain")]).fit(X)
        >>> p = ModelParams.from_dict("logistic", schema, {"intercept": -1.0, "cp[atypical]": 0.3,
        ...     "cp[typical]": 1.0, "cp__missing": 0.1})
        >>> value, _, refs = explain_params(p).reference_intercept()
        >>> round(value, 2), refs
        (-0.7, ['Chest pain = atypical'])
        """
        value, var, refs = self.intercept, self.intercept_std**2, []
        if self.kind != "logistic":
            return value, math.sqrt(var), refs
        schema = self.params.schema
        std = self.params.std[1:] if self.params.std is not None else np.full(len(self.params) - 1, np.nan)
        coef = dict(zip(schema.design_names, self.params.terms, strict=True))
        sd = dict(zip(schema.design_names, std, strict=True))
        for f in schema.features:
            if f.type != "categorical" or not schema.categories_[f.name]:
                continue
            ref = schema.categories_[f.name][0]
            term = f"{f.name}[{ref}]"
            if term in coef:
                value += float(coef[term])
                var += float(sd[term]) ** 2
                refs.append(f"{f.display_name} = {f.level_label(ref)}")
        return value, math.sqrt(var), refs

    def to_frame(self) -> pd.DataFrame:
        """The tidy table described in the class docstring (a copy)."""
        return self._frame.copy()

    def table(self, top: int | None = None, *, missing: bool = False) -> pd.DataFrame:
        """The model as a reader sees it, largest effects first.

        Logistic: one row per term with columns term, feature, label (the feature in words),
        comparison ("+1 SD (9.4 years)", "male vs female", "asymptomatic vs typical angina"),
        coef, std, ci_low, ci_high (log-odds) and odds_ratio, or_low, or_high. A categorical
        level is compared with the feature's reference level (its first category), so its
        coef is the difference of the two one-hot coefficients; its std combines the two SDs
        as if independent (``ModelParams`` keeps no covariances). The reference level has no
        row of its own. Missing-value indicator terms are left out unless ``missing=True``
        (then "missing vs recorded at the median", or vs the reference level).

        GAM: one row per bin of the ``top`` most important features (feature, label, bin,
        bin_label, score, std, ci_low, ci_high, odds_ratio); missing bins only with
        ``missing=True``.

        ``top`` keeps the first rows (logistic) or features (GAM). ``table().attrs`` holds
        ``n_total`` (rows or features before ``top``), ``n_hidden_missing`` and ``note``, a
        sentence saying what is shown ("15 of 18 terms shown (largest first); ...").

        Examples
        --------
        >>> import pandas as pd
        >>> from ragim.schema import Feature, FeatureSchema
        >>> X = pd.DataFrame({"sex": [0, 1, 1, 0], "cp": ["typical", "atypical", "typical", None]})
        >>> schema = FeatureSchema([Feature("sex", "binary", levels={0: "female", 1: "male"}),
        ...                         Feature("cp", "categorical", label="Chest pain")]).fit(X)
        >>> p = ModelParams.from_dict("logistic", schema, {"intercept": 0.0, "sex": 0.5,
        ...     "cp[atypical]": 0.2, "cp[typical]": 1.0, "cp__missing": 0.1})
        >>> t = explain_params(p).table()
        >>> t[["label", "comparison", "coef"]].round(2).values.tolist()
        [['Chest pain', 'typical vs atypical', 0.8], ['sex', 'male vs female', 0.5]]
        >>> t.attrs["note"]
        'all 2 terms shown; 1 missing-value indicator term not shown'
        """
        if top is not None and (
            isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1
        ):
            raise ValidationError(f"top must be a positive integer or None, got {top!r}")
        if self.kind == "logistic":
            df, hidden = _logistic_table(self.params, missing)
            total, what = len(df), "terms"
            df = df.head(top) if top is not None else df
            shown = len(df)
        else:
            feats = list(self.importance()["feature"])
            total, what = len(feats), "features"
            feats = feats[:top] if top is not None else feats
            shown = len(feats)
            order = {f: i for i, f in enumerate(feats)}
            df = self._frame[self._frame["feature"].isin(feats)]
            hidden = int(df["is_missing_bin"].sum()) if not missing else 0
            if not missing:
                df = df[~df["is_missing_bin"]]
            df = df.sort_values("feature", key=lambda c: c.map(order), kind="stable")
            df = df[
                [
                    "term",
                    "feature",
                    "label",
                    "bin",
                    "bin_label",
                    "score",
                    "std",
                    "ci_low",
                    "ci_high",
                    "odds_ratio",
                ]
            ].reset_index(drop=True)
        df.attrs.update(
            n_total=total,
            n_hidden_missing=hidden,
            note=truncation_note(shown, total, what, hidden if self.kind == "logistic" else 0)
            + (f"; {hidden} missing-value bin{'s' if hidden != 1 else ''} not shown"
               if self.kind == "gam" and hidden else ""),
        )
        return df

    def importance(self) -> pd.DataFrame:
        """Per-feature importance, largest first.

        GAM: the plain (unweighted) mean |score| over the feature's non-missing bins. The
        schema's continuous bins are training quantiles, so each holds about the same
        share of patients and this approximates interpret's frequency-weighted mean.
        Logistic: the largest |coef| among the feature's non-missing-indicator terms
        (per SD, or per 0→1 for indicators).
        """
        df = self._frame
        if self.kind == "gam":
            imp = df[~df["is_missing_bin"]].groupby("feature", sort=False)["score"].apply(lambda s: s.abs().mean())
        else:
            imp = df[df["role"] != "missing"].groupby("feature", sort=False)["coef"].apply(lambda s: s.abs().max())
        imp = imp.reindex(self.params.schema.names).fillna(0.0)
        out = pd.DataFrame({"feature": imp.index, "importance": imp.to_numpy(float)})
        return out.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)

    def data(self) -> dict:
        """JSON-safe dict: kind, source, outcome, intercept, intercept_std, terms, importance,
        provenance, coverage."""
        return _jsonable({
            "kind": self.kind, "source": self.source, "outcome": self.outcome,
            "intercept": self.intercept,
            "intercept_std": self.intercept_std, "terms": _records(self._frame),
            "importance": _records(self.importance()), "provenance": self.provenance.data(),
            "coverage": self.coverage,
        })

    def plot(self, ax=None, top: int | None = None, kind: str = "coef", *, missing: bool = False):
        """Plot the model; returns a matplotlib Figure.

        Logistic: a dot chart of the ``top`` rows of :meth:`table` (categorical levels against
        their reference, labelled in words) with 95% CI whiskers, as coefficients
        (``kind="coef"``) or odds ratios (``"odds_ratio"``, log axis); the title says how
        many terms are shown. GAM: a grid of shape functions of the ``top`` features by
        importance (CI bands when std exists; binary and categorical as bars); ``ax`` may be
        one axes (for one panel) or a sequence of axes. ``kind="importance"`` draws
        importance bars.
        """
        if kind not in ("coef", "odds_ratio", "importance"):
            raise ValidationError(f"kind must be 'coef', 'odds_ratio' or 'importance', got {kind!r}")
        if kind == "importance":
            imp = self.importance()
            labels = {f.name: f.display_name for f in self.params.schema.features}
            imp = imp.assign(feature=imp["feature"].map(labels))
            return plots.plot_importance(imp, top=top, ax=ax,
                                         xlabel=_IMPORTANCE_LABEL[self.kind])
        t = self.table(top, missing=missing)
        if self.kind == "logistic":
            df = t.assign(
                label=[
                    f"{lab}: {cmp}" for lab, cmp in zip(t["label"], t["comparison"], strict=True)
                ]
            )
            return plots.plot_coefficients(
                df,
                kind=kind,
                ax=ax,
                title=(
                    f"Logistic model for {self.outcome} (intercept {self.intercept:+.3g})\n"
                    f"{t.attrs['note']}"
                ),
            )
        feats = list(dict.fromkeys(t["feature"]))
        frame = self._frame.assign(bin=self._frame["bin_label"])
        return plots.plot_shape_functions(
            frame,
            feats,
            kind=kind,
            ax=ax,
            title=f"GAM shape functions for {self.outcome}\n{t.attrs['note']}",
        )

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>{self.kind.upper()} model</b> for {html.escape(self.outcome)} "
            "&middot; intercept "
            f"{self.intercept:+.4g}"
            + (
                f" &plusmn; {Z95 * self.intercept_std:.3g}"
                if math.isfinite(self.intercept_std)
                else ""
            )
            + f" &middot; source: {html.escape(str(self.source))}</p>"
        )
        df = self.table(missing=True)
        if self.kind == "logistic":
            cols = ["label", "comparison", "odds_ratio", "or_low", "or_high", "coef", "ci_low",
                    "ci_high", "term"]
        else:
            cols = ["label", "bin_label", "score", "ci_low", "ci_high", "odds_ratio", "term"]
        if self.params.std is None:
            cols = [c for c in cols if c not in ("ci_low", "ci_high", "or_low", "or_high")]
        body = _table_html(df[cols].head(40))
        more = f"<p><i>… {len(df) - 40} more rows in table()</i></p>" if len(df) > 40 else ""
        return (head + _coverage_html(self.coverage) + body + more + self._img_html(top=12)
                + self.provenance._repr_html_())

    def __repr__(self) -> str:
        src = f", source={self.source}" if self.source else ""
        lines = [f"GlobalExplanation({self.kind} model for {self.outcome}, "
                 f"intercept={self.intercept:+.3g}{src}, "
                 f"{len(self._frame)} {'terms' if self.kind == 'logistic' else 'bins'})"]
        if self.kind == "logistic":
            t = self.table(5)
            lines += [
                f"  {r.label + ': ' + r.comparison:<64} OR {r.odds_ratio:.3g}"
                + (f" (95% CI {r.or_low:.3g}-{r.or_high:.3g})" if math.isfinite(r.or_low) else "")
                for r in t.itertuples()
            ]
            lines.append(f"  ({t.attrs['note']})")
        else:
            labels = {f.name: f.display_name for f in self.params.schema.features}
            lines += [f"  {labels[r.feature]:<24} importance {r.importance:.3f}"
                      for r in self.importance().head(5).itertuples()]
        cov = coverage_summary(self.coverage)
        return "\n".join([*lines, *([f"  {cov}"] if cov else []), f"  {self.provenance!r}"])


_IMPORTANCE_LABEL = {"gam": "mean |score| over bins (log-odds)", "logistic": "max |coef| (log-odds per SD or 0→1)"}


# ---------------------------------------------------------------------- local
def _one_row(X_row: Any, schema) -> pd.DataFrame:
    if isinstance(X_row, pd.Series):
        X_row = X_row.to_frame().T.infer_objects()
    elif isinstance(X_row, Mapping):
        X_row = pd.DataFrame([dict(X_row)])
    if not isinstance(X_row, pd.DataFrame):
        raise ValidationError(f"X_row must be a one-row pandas DataFrame, a Series or a dict, got {type(X_row).__name__}")
    if len(X_row) != 1:
        raise ValidationError(f"explain one patient at a time; got {len(X_row)} rows (select one with X.iloc[[i]])")
    return schema.validate_frame(X_row, where="X_row")


class LocalExplanation(_Explanation):
    """Why one patient got their risk; build with :func:`explain_params` and ``X_row``.

    ``to_frame()`` has one row per feature (schema order): feature, value (raw; None if
    missing), unit, contribution (log-odds) and, for GAMs, bin. Logistic contributions
    are coef × standardised design value summed over the feature's columns (one-hot
    and missing indicator folded in); GAM contributions are the patient's bin scores.
    ``intercept + sum(contribution) == logit`` (up to float rounding), and
    ``probability = sigmoid(logit)``. Two more columns put the row in words: label (the
    feature's name from the schema) and value_label ("male", "63 years", "missing").
    ``outcome`` names what the model predicts (for titles).
    """

    def __init__(self, params: ModelParams, X_row: Any, outcome: str | None = None):
        schema = params.schema
        X = _one_row(X_row, schema)
        self.params, self.kind, self.source = params, params.kind, params.metadata.get("source")
        self.outcome = _outcome_name(params, outcome)
        self.provenance = Provenance.from_params(params)
        self.coverage = params.metadata.get("coverage")
        coverage_summary(self.coverage)
        self.intercept = params.intercept
        self.index = X.index[0]
        values = [None if pd.isna(v) else (v.item() if isinstance(v, np.generic) else v) for v in X.iloc[0]]
        rows = []
        if self.kind == "logistic":
            z = schema.transform(X)[0]
            per = params.terms * z
            self._terms = pd.DataFrame({"term": schema.design_names,
                                        "feature": [c.feature for c in schema.design_columns],
                                        "design_value": z, "coef": params.terms, "contribution": per})
            folded = dict.fromkeys(schema.names, 0.0)
            for c, v in zip(schema.design_columns, per, strict=True):
                folded[c.feature] += float(v)
            for f, v in zip(schema.features, values, strict=True):
                rows.append(
                    {
                        "feature": f.name,
                        "label": f.display_name,
                        "value": v,
                        "value_label": _value_label(f, v),
                        "unit": f.unit,
                        "contribution": folded[f.name],
                    }
                )
        else:
            idx = schema.bin_indices(X)[0]
            self._terms = None
            for f, v, i in zip(schema.features, values, idx, strict=True):
                labels = schema.bin_labels(f.name)
                c = float(params.feature_terms(f.name)[i]) if i >= 0 else 0.0
                rows.append({"feature": f.name, "label": f.display_name, "value": v,
                             "value_label": _value_label(f, v), "unit": f.unit,
                             "bin": labels[i] if i >= 0 else "(unknown category)", "contribution": c})
        self._frame = pd.DataFrame(rows)
        self.logit = math.fsum([self.intercept, *self._frame["contribution"]])
        self.probability = 1.0 / (1.0 + math.exp(-self.logit)) if self.logit >= 0 else (
            math.exp(self.logit) / (1.0 + math.exp(self.logit)))

    def to_frame(self, by: str = "feature") -> pd.DataFrame:
        """Per-feature contributions; ``by="term"`` gives the unfolded logistic design terms
        (term, feature, design_value, coef, contribution)."""
        if by == "term":
            if self._terms is None:
                raise ValidationError("by='term' is only defined for logistic models; GAM terms are the bins")
            return self._terms.copy()
        if by != "feature":
            raise ValidationError(f"by must be 'feature' or 'term', got {by!r}")
        return self._frame.copy()

    def data(self) -> dict:
        """JSON-safe dict: kind, source, outcome, intercept, contributions, logit, probability,
        provenance, coverage."""
        return _jsonable(
            {
                "kind": self.kind,
                "source": self.source,
                "outcome": self.outcome,
                "intercept": self.intercept,
                "contributions": _records(self._frame),
                "logit": self.logit,
                "probability": self.probability,
                "provenance": self.provenance.data(),
                "coverage": self.coverage,
            }
        )

    def table(self, top: int | None = None) -> pd.DataFrame:
        """Contributions in words, largest |contribution| first: label, value_label,
        contribution (log-odds), feature. ``attrs["note"]`` says how many are shown.

        Examples
        --------
        >>> import pandas as pd
        >>> from ragim.schema import Feature, FeatureSchema
        >>> X = pd.DataFrame({"sex": [0, 1], "age": [40.0, 60.0]})
        >>> sex = Feature("sex", "binary", label="Sex", levels={0: "female", 1: "male"})
        >>> schema = FeatureSchema([sex, Feature("age", unit="years", label="Age")]).fit(X)
        >>> p = ModelParams.from_dict("logistic", schema,
        ...                           {"intercept": 0.0, "sex": 0.9, "age": 0.1})
        >>> explain_params(p, X.iloc[[1]]).table()[["label", "value_label"]].values.tolist()
        [['Sex', 'male'], ['Age', '60 years']]
        """
        if top is not None and (
            isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1
        ):
            raise ValidationError(f"top must be a positive integer or None, got {top!r}")
        df = _by_abs(self._frame, "contribution")[
            ["label", "value_label", "contribution", "feature"]
        ]
        df = df.reset_index(drop=True)
        total = len(df)
        df = df.head(top) if top is not None else df
        df.attrs.update(n_total=total, note=truncation_note(len(df), total, "features"))
        return df

    def _labels(self) -> list[str]:
        return [f"{r.label} = {r.value_label}" for r in self._frame.itertuples()]

    def plot(self, ax=None, top: int | None = 12):
        """Waterfall from the intercept through the ``top`` contributions (by |size|) to the logit.

        The title names the outcome and the predicted risk; features beyond ``top`` are summed
        in one bar, and the title says how many are shown.
        """
        n = len(self._frame)
        shown = n if top is None or n <= top else top
        note = truncation_note(shown, n, "features") + (
            "; the rest are summed in one bar" if shown < n else ""
        )
        title = "\n".join(
            [
                *textwrap.wrap(f"Predicted risk of {self.outcome}: {self.probability:.1%}", 80),
                f"log-odds {self.logit:+.2f} = baseline {self.intercept:+.2f} + contributions",
                *textwrap.wrap(note, 80),
            ]
        )
        return plots.plot_waterfall(self._frame.assign(label=self._labels()), self.intercept, self.logit,
                                    self.probability, top=top, ax=ax, title=title)

    def _repr_html_(self) -> str:
        df = self.table()
        head = (
            f"<p><b>{self.kind.upper()} model, one patient</b> &middot; predicted risk of "
            f"{html.escape(self.outcome)}: {self.probability:.3f} &middot; "
            f"logit {self.logit:+.3f} = "
            f"intercept {self.intercept:+.3f} + contributions</p>"
        )
        return head + _coverage_html(self.coverage) + _table_html(df) + self._img_html() + self.provenance._repr_html_()

    def __repr__(self) -> str:
        df = _by_abs(self._frame, "contribution")
        parts = " ".join(f"{r.feature} {r.contribution:+.2f}" for r in df.head(5).itertuples())
        return (f"LocalExplanation({self.kind}, P={self.probability:.3f}, logit={self.logit:+.3f} = "
                f"intercept {self.intercept:+.2f} {parts}{' ...' if len(df) > 5 else ''})")


def _value_label(f, v: Any) -> str:
    """One raw value in words: a level label, a number with its unit, or "missing"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if f.type != "continuous":
        return f.level_label(v)
    return f"{_fmt(float(v))} {f.unit}".strip()


__all__ = [
    "GlobalExplanation",
    "LocalExplanation",
    "Provenance",
    "explain_params",
    "plots",
    "reference_level",
    "truncation_note",
]
