"""Explanations of interpretable models: data first, pictures second.

:func:`explain_params` turns a :class:`~ragim.params.ModelParams` into

* a :class:`GlobalExplanation` (what the model says overall): one row per logistic
  term, or per GAM bin, with a 95% interval when ``params.std`` exists;
* a :class:`LocalExplanation` (why this patient got this risk) when one row is
  given: each feature's additive contribution to that patient's log-odds.

As in interpret, an explanation is data: ``to_frame()`` (tidy pandas) and ``data()``
(a JSON-safe dict) come first; ``plot()`` (a matplotlib Figure), ``save_png()`` and
``_repr_html_()`` are built on them. Both explanations carry ``.provenance``: the
retrieved neighbour tasks a generated model was made from (empty for a fitted model).

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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragim import plots
from ragim.errors import ValidationError
from ragim.params import ModelParams

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def explain_params(params: ModelParams, X_row: pd.DataFrame | pd.Series | Mapping | None = None
                   ) -> GlobalExplanation | LocalExplanation:
    """Explain a model: globally, or for one patient when ``X_row`` is given.

    Parameters
    ----------
    params : the model's parameters (logistic or GAM).
    X_row : one patient as a one-row DataFrame, a Series or a dict of raw values.

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
    return GlobalExplanation(params) if X_row is None else LocalExplanation(params, X_row)


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
        rows.append({
            "term": c.name, "feature": c.feature, "type": f.type, "role": c.role, "category": c.category,
            "coef": b, "std": s, "ci_low": b - Z95 * s, "ci_high": b + Z95 * s,
            "odds_ratio_per_sd": math.exp(min(b, 700.0)),  # clipped: stays finite for JSON
            "change": f"+1 SD = {c.scale:.3g} {unit}".strip() if cont else "0→1",
            "coef_per_unit": b / c.scale, "odds_ratio_per_unit": math.exp(min(b / c.scale, 700.0)),
            "unit": unit, "scale": c.scale,
        })
    return pd.DataFrame(rows)


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
            rows.append({
                "feature": f.name, "type": f.type, "term": f"{f.name}[{lab}]", "bin": lab,
                "is_missing_bin": not obs,
                "bin_low": bounds[i] if obs and bounds is not None else np.nan,
                "bin_high": bounds[i + 1] if obs and bounds is not None else np.nan,
                "midpoint": mids[i] if obs and f.type != "categorical" else np.nan,
                "score": s, "std": sd, "ci_low": s - Z95 * sd, "ci_high": s + Z95 * sd,
                "odds_ratio": math.exp(min(s, 700.0)), "unit": f.unit,
            })
    return pd.DataFrame(rows)


class GlobalExplanation(_Explanation):
    """What a model says overall; build with :func:`explain_params`.

    Logistic rows (``to_frame()``): term, feature, type, role, category, coef (on the
    standardised design scale), std, ci_low/ci_high (coef ± 1.96 std; NaN without std),
    odds_ratio_per_sd (exp(coef): per SD for continuous values, for the 0→1 change of
    binary, one-hot and missing-indicator columns), change (what one step means),
    coef_per_unit and odds_ratio_per_unit (coef / scale, per raw unit; equal to coef for
    indicators), unit, scale.

    GAM rows: one per feature × bin: feature, type, term, bin, is_missing_bin,
    bin_low/bin_high (continuous), midpoint, score (log-odds), std, ci_low/ci_high,
    odds_ratio, unit.

    Attributes: ``kind``, ``intercept``, ``intercept_std`` (NaN if unknown), ``source``,
    ``provenance``, ``params``.
    """

    def __init__(self, params: ModelParams):
        self.params, self.kind = params, params.kind
        self.intercept = params.intercept
        self.intercept_std = float(params.std[0]) if params.std is not None else math.nan
        self.source = params.metadata.get("source")
        self.provenance = Provenance.from_params(params)
        self._frame = _logistic_frame(params) if self.kind == "logistic" else _gam_frame(params)

    def to_frame(self) -> pd.DataFrame:
        """The tidy table described in the class docstring (a copy)."""
        return self._frame.copy()

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
        """JSON-safe dict: kind, source, intercept, intercept_std, terms, importance, provenance."""
        return _jsonable({
            "kind": self.kind, "source": self.source, "intercept": self.intercept,
            "intercept_std": self.intercept_std, "terms": _records(self._frame),
            "importance": _records(self.importance()), "provenance": self.provenance.data(),
        })

    def plot(self, ax=None, top: int | None = None, kind: str = "coef"):
        """Plot the model; returns a matplotlib Figure.

        Logistic: a dot chart of the ``top`` terms by |coef| with 95% CI whiskers, as
        coefficients (``kind="coef"``) or odds ratios (``"odds_ratio"``, log axis).
        GAM: a grid of shape functions of the ``top`` features by importance (CI bands
        when std exists; binary and categorical as bars); ``ax`` may be one axes (for one
        panel) or a sequence of axes. ``kind="importance"`` draws importance bars.
        """
        if kind not in ("coef", "odds_ratio", "importance"):
            raise ValidationError(f"kind must be 'coef', 'odds_ratio' or 'importance', got {kind!r}")
        if kind == "importance":
            return plots.plot_importance(self.importance(), top=top, ax=ax,
                                         xlabel=_IMPORTANCE_LABEL[self.kind])
        if self.kind == "logistic":
            df = self._frame.assign(label=[f"{t}  ({c})" if c != "0→1" else t
                                           for t, c in zip(self._frame["term"], self._frame["change"], strict=True)])
            return plots.plot_coefficients(df, kind=kind, top=top, ax=ax,
                                           title=f"Logistic model terms (intercept {self.intercept:+.3g})")
        feats = list(self.importance()["feature"])[: top or None]
        return plots.plot_shape_functions(self._frame, feats, kind=kind, ax=ax,
                                          title="GAM shape functions (features by importance)")

    def _repr_html_(self) -> str:
        head = (f"<p><b>{self.kind.upper()} model</b> &middot; intercept {self.intercept:+.4g}"
                + (f" &plusmn; {Z95 * self.intercept_std:.3g}" if math.isfinite(self.intercept_std) else "")
                + f" &middot; source: {html.escape(str(self.source))}</p>")
        if self.kind == "logistic":
            df = _by_abs(self._frame, "coef")
            cols = ["term", "coef", "ci_low", "ci_high", "odds_ratio_per_sd", "change", "odds_ratio_per_unit", "unit"]
        else:
            order = {f: i for i, f in enumerate(self.importance()["feature"])}
            df = self._frame.sort_values("feature", key=lambda s: s.map(order), kind="stable")
            cols = ["feature", "bin", "score", "ci_low", "ci_high", "odds_ratio", "unit"]
        if self.params.std is None:
            cols = [c for c in cols if c not in ("ci_low", "ci_high")]
        body = _table_html(df[cols].head(40))
        more = f"<p><i>… {len(df) - 40} more rows in to_frame()</i></p>" if len(df) > 40 else ""
        return head + body + more + self._img_html(top=12) + self.provenance._repr_html_()

    def __repr__(self) -> str:
        src = f", source={self.source}" if self.source else ""
        lines = [f"GlobalExplanation({self.kind}, intercept={self.intercept:+.3g}{src}, "
                 f"{len(self._frame)} {'terms' if self.kind == 'logistic' else 'bins'})"]
        if self.kind == "logistic":
            df = _by_abs(self._frame, "coef").head(5)
            lines += [f"  {r.term:<24} coef {r.coef:+.3f}  OR {r.odds_ratio_per_sd:.3g} ({r.change})"
                      for r in df.itertuples()]
        else:
            lines += [f"  {r.feature:<24} importance {r.importance:.3f}" for r in self.importance().head(5).itertuples()]
        return "\n".join([*lines, f"  {self.provenance!r}"])


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
    ``probability = sigmoid(logit)``.
    """

    def __init__(self, params: ModelParams, X_row: Any):
        schema = params.schema
        X = _one_row(X_row, schema)
        self.params, self.kind, self.source = params, params.kind, params.metadata.get("source")
        self.provenance = Provenance.from_params(params)
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
                rows.append({"feature": f.name, "value": v, "unit": f.unit, "contribution": folded[f.name]})
        else:
            idx = schema.bin_indices(X)[0]
            self._terms = None
            for f, v, i in zip(schema.features, values, idx, strict=True):
                labels = schema.bin_labels(f.name)
                c = float(params.feature_terms(f.name)[i]) if i >= 0 else 0.0
                rows.append({"feature": f.name, "value": v, "unit": f.unit,
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
        """JSON-safe dict: kind, source, intercept, contributions, logit, probability, provenance."""
        return _jsonable({"kind": self.kind, "source": self.source, "intercept": self.intercept,
                          "contributions": _records(self._frame), "logit": self.logit,
                          "probability": self.probability, "provenance": self.provenance.data()})

    def _labels(self) -> list[str]:
        return [f"{r.feature} = {_fmt(r.value)}{' ' + r.unit if r.unit and not pd.isna(r.value) else ''}"
                for r in self._frame.itertuples()]

    def plot(self, ax=None, top: int | None = 12):
        """Waterfall from the intercept through the ``top`` contributions (by |size|) to the logit."""
        return plots.plot_waterfall(self._frame.assign(label=self._labels()), self.intercept, self.logit,
                                    self.probability, top=top, ax=ax)

    def _repr_html_(self) -> str:
        df = _by_abs(self._frame.assign(value=[_fmt(v) for v in self._frame["value"]]), "contribution")
        head = (f"<p><b>{self.kind.upper()} model, one patient</b> &middot; P = {self.probability:.3f}"
                f" &middot; logit {self.logit:+.3f} = intercept {self.intercept:+.3f} + contributions</p>")
        return head + _table_html(df) + self._img_html() + self.provenance._repr_html_()

    def __repr__(self) -> str:
        df = _by_abs(self._frame, "contribution")
        parts = " ".join(f"{r.feature} {r.contribution:+.2f}" for r in df.head(5).itertuples())
        return (f"LocalExplanation({self.kind}, P={self.probability:.3f}, logit={self.logit:+.3f} = "
                f"intercept {self.intercept:+.2f} {parts}{' ...' if len(df) > 5 else ''})")


__all__ = ["GlobalExplanation", "LocalExplanation", "Provenance", "explain_params", "plots"]
