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
>>> bool(abs(loc.baseline + loc.to_frame()["contribution"].sum() - loc.logit) < 1e-12)
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
from ragim.io import make_parent
from ragim.models.family import (  # noqa: F401  (Z95 re-exported: ragim.explain.Z95)
    Z95,
    by_abs,
    check_top,
    reference_level,
    truncation_note,
)
from ragim.params import ModelParams, model_family


def explain_params(
    params: ModelParams,
    X_row: pd.DataFrame | pd.Series | Mapping | None = None,
    *,
    outcome: str | None = None,
) -> GlobalExplanation | LocalExplanation:
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
    >>> p = ModelParams.from_dict("logistic", FeatureSchema.infer(X).fit(X),
    ...                           {"intercept": 0.0, "age": 1.0})
    >>> type(explain_params(p)).__name__, type(explain_params(p, X.iloc[0])).__name__
    ('GlobalExplanation', 'LocalExplanation')
    """
    if not isinstance(params, ModelParams):
        raise ValidationError(
            f"explain_params needs ModelParams, got {type(params).__name__}; "
            "for a model use model.explain()"
        )
    if outcome is not None and (not isinstance(outcome, str) or not outcome.strip()):
        raise ValidationError(
            f"outcome must be a non-empty text naming what the model predicts, got {outcome!r}"
        )
    if X_row is None:
        return GlobalExplanation(params, outcome=outcome)
    return LocalExplanation(params, X_row, outcome=outcome)


# ---------------------------------------------------------------------- helpers
def _jsonable(x: Any) -> Any:
    """Recursively convert to JSON-safe Python: NaN becomes None, and inf and -inf the strings
    "inf" and "-inf" (a GAM's open end bins), so that they are not read as not computable."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | np.ndarray):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, bool | int | str):
        return x
    return None if x is pd.NA else str(x)


def _records(df: pd.DataFrame) -> list[dict]:
    return _jsonable(df.to_dict("records"))


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


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(
        index=False,
        border=0,
        na_rep="",
        float_format=lambda v: f"{v:.3g}",
        classes="ragim-table",
        escape=True,
    )


class _Explanation:
    """Shared PNG / JSON / HTML plumbing."""

    inline_plot: bool = (
        True  # embed a PNG of plot() in _repr_html_ (set False on the class to skip)
    )

    def to_json(self, indent: int | None = None) -> str:
        """``data()`` as JSON text."""
        return json.dumps(self.data(), indent=indent, allow_nan=False)

    def _data(self, **fields: Any) -> dict:
        """``data()``: kind, source, outcome and intercept, then the kind's own ``fields``, then
        provenance and coverage, JSON-safe."""
        return _jsonable(
            {
                "kind": self.kind,
                "source": self.source,
                "outcome": self.outcome,
                "intercept": self.intercept,
                **fields,
                "provenance": self.provenance.data(),
                "coverage": self.coverage,
            }
        )

    def save_png(self, path: str | Path, *, dpi: int = 150, **plot_kw) -> Path:
        """Render ``plot(**plot_kw)`` to a PNG file and return its path."""
        make_parent(path := Path(path))
        self.plot(**plot_kw).savefig(path, format="png", dpi=dpi, bbox_inches="tight")
        return path

    def _img_html(self, **plot_kw) -> str:
        if not self.inline_plot:
            return ""
        buf = io.BytesIO()
        self.plot(**plot_kw).savefig(buf, format="png", dpi=80, bbox_inches="tight")
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        return (
            '<div><img alt="plot" style="max-width:720px" '
            f'src="data:image/png;base64,{b64}"/></div>'
        )


# ---------------------------------------------------------------------- coverage
def coverage_summary(coverage: Mapping[str, Any] | None, *, adapted: bool = False) -> str | None:
    """One line on how well the index covered a generated model's description, from
    ``params.metadata["coverage"]`` (:meth:`ragim.domain.Coverage.data`); None without one.
    ``adapted``: the model was adapted to labelled rows since, and the line says the coverage
    is that of the zero-shot model it started from.

    Examples
    --------
    >>> coverage_summary({"top_similarity": 0.31, "effective_similarity": 0.25,
    ...                   "effective_neighbors": 0.0, "k": 10, "threshold": 0.62, "typical": 0.8})
    ... # doctest: +NORMALIZE_WHITESPACE
    "index coverage: top similarity 0.31, effective similarity 0.25, 0.0 effective neighbour(s)
    of 10; top similarity against the threshold 0.62: OUTSIDE the index's domain"

    The verdict is :attr:`ragim.domain.Coverage.in_domain`'s: with no effective neighbour a
    description is outside even when its top similarity reaches the threshold.

    >>> coverage_summary({"top_similarity": 0.62, "effective_similarity": 0.5,
    ...                   "effective_neighbors": 0.0, "k": 10, "threshold": 0.62, "typical": 0.8})
    ... # doctest: +ELLIPSIS
    "...0.0 effective neighbour(s) of 10; ...: OUTSIDE the index's domain"
    """
    if not coverage:
        return None
    try:
        top, eff_sim = float(coverage["top_similarity"]), float(coverage["effective_similarity"])
        n_eff, k, thr = (
            coverage.get("effective_neighbors"),
            int(coverage["k"]),
            coverage.get("threshold"),
        )
    except (KeyError, TypeError, ValueError):
        raise ValidationError(
            f"params.metadata['coverage'] is not a coverage record: {coverage!r}"
        ) from None
    from ragim.domain import in_domain_verdict

    eff = (
        "n/a"
        if n_eff is None
        else ("<0.1" if 0 < float(n_eff) < 0.05 else f"{float(n_eff):.1f}")  # never "0.0" if > 0
    )
    what = "index coverage"
    if adapted:
        what = "the zero-shot model's index coverage (before adaptation)"
    line = (
        f"{what}: top similarity {top:.2f}, effective similarity {eff_sim:.2f}, "
        f"{eff} effective neighbour(s) of {k}"
    )
    if thr is None:
        return line + " (the index is too small to calibrate a threshold)"
    inside = in_domain_verdict(top, n_eff, thr)  # the rule of Coverage.in_domain
    verdict = "in the index's domain" if inside else "OUTSIDE the index's domain"
    return line + f"; top similarity against the threshold {float(thr):.2f}: {verdict}"


#: each adaptation method (:data:`ragim.adaptation.ORDER`) in words
ADAPTATION_METHODS = {
    "intercept": "the intercept shifted",
    "recalibrate": "an intercept shift and one scale on the generated log-odds",
    "map": "every coefficient refitted, under a prior centred on the generated model",
    "prior": "every coefficient refitted, under the generator's own SDs and correlations as prior",
}


def adaptation_summary(metadata: Mapping[str, Any] | None) -> str | None:
    """One line on how a model was adapted to labelled rows (few-shot: ``ragim adapt``,
    ``ZeroShotClassifier.fit(X, y)``), from the ``adaptation``, ``k_shot``, ``prior_source``
    and ``prior_strength`` that :func:`ragim.estimator.adapt_prior` records; None for a model
    never adapted. A zero-shot model kept after weighing the rows says so.

    Examples
    --------
    >>> adaptation_summary({"source": "adapted", "adaptation": "recalibrate", "k_shot": 24,
    ...                     "prior_source": "generated"})  # doctest: +NORMALIZE_WHITESPACE
    "adapted on 24 labelled row(s) by 'recalibrate' (an intercept shift and one scale on the
    generated log-odds), starting from the generated model"
    >>> adaptation_summary({"source": "generated", "adaptation": "zero-shot", "k_shot": 5})
    'not adapted: the zero-shot model was kept after weighing 5 labelled row(s)'
    >>> adaptation_summary({"source": "generated"}) is None
    True
    """
    meta = metadata or {}
    how, rows = meta.get("adaptation"), meta.get("k_shot")
    if how is None:
        return None
    n = f"{rows} labelled row(s)" if isinstance(rows, int) else "labelled rows"
    if how == "zero-shot":
        return f"not adapted: the zero-shot model was kept after weighing {n}"
    words = ADAPTATION_METHODS.get(str(how))
    line = f"adapted on {n} by {how!r}" + (f" ({words})" if words else "")
    src = meta.get("prior_source")
    if src:
        line += f", starting from the {src} model"
    strength = meta.get("prior_strength")
    if isinstance(strength, int | float) and math.isfinite(strength):
        line += f"; prior strength {_fmt(float(strength))}"
    return line


def model_notes(metadata: Mapping[str, Any] | None) -> list[str]:
    """The lines an explanation shows about where its model came from: how it was adapted
    (:func:`adaptation_summary`), then the index coverage (:func:`coverage_summary`), marked as
    the zero-shot model's when the model was adapted since, then the terms that vary only
    between the tasks a generated model learned from (``metadata["between_tasks"]``)."""
    meta = metadata or {}
    adapted = meta.get("source") == "adapted"
    lines = [adaptation_summary(meta), coverage_summary(meta.get("coverage"), adapted=adapted)]
    between = meta.get("between_tasks")
    if isinstance(between, list) and between:
        lines.append(
            f"varies only between tasks: {', '.join(map(str, between))} (constant within every "
            "task the model learned from, so the odds ratio is the difference between those "
            "tasks: sites, case mix; not an effect on patients)"
        )
    return [line for line in lines if line]


def _notes_html(notes: list[str]) -> str:
    return "".join(f"<p><i>{html.escape(line)}</i></p>" for line in notes)


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
                raise ValidationError(
                    f"provenance record #{i} must be a mapping with a 'task_id', got {r!r}"
                )
            self._records.append(
                {
                    "task_id": str(r["task_id"]),
                    "description": str(r.get("description") or ""),
                    "similarity": _num(r.get("similarity"), "similarity"),
                    "weight": _num(r.get("weight"), "weight"),
                    **{k: v for k, v in r.items() if k not in self.FIELDS},
                }
            )

    @classmethod
    def from_params(cls, params: ModelParams) -> Provenance:
        raw = params.metadata.get("provenance") or []
        if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
            raise ValidationError(
                "params.metadata['provenance'] must be a list of neighbour records"
            )
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
            self.to_frame()[list(self.FIELDS)]
        )

    def __repr__(self) -> str:
        if not self._records:
            return "Provenance(empty: fitted model)"
        items = ", ".join(f"{r['task_id']} (w={r['weight']:.2f})" for r in self._records[:5])
        return f"Provenance({len(self)} neighbours: {items}{' ...' if len(self) > 5 else ''})"


# ---------------------------------------------------------------------- global
class GlobalExplanation(_Explanation):
    """What a model says overall; build with :func:`explain_params`.

    Logistic rows (``to_frame()``): term, feature, label (the term in words, from the
    schema's labels: "Chest-pain type = asymptomatic"), reference (what a binary or
    categorical term is compared with), type, role, category, coef (the term's effect in
    log-odds on the standardised design scale: per SD for a continuous value, the 0→1 change
    of a binary or missing-indicator column, and for a categorical level, or the missing
    indicator of a categorical feature, the difference from the feature's reference level,
    0 for the reference level itself: the numbers :meth:`table` reports), std (its SD),
    ci_low/ci_high (coef ± 1.96 std; NaN without std), odds_ratio_per_sd (exp(coef)), change
    (what one step means, or why the effect is not estimable), not_estimable (that reason
    alone, "" for an estimable term, as GAM rows have it), coef_per_unit and
    odds_ratio_per_unit (coef / scale, per raw unit; equal to coef for indicators), unit,
    scale, and model_coef / model_std (the model's own parameter and its SD, which rebuild
    the model: for a level, its one-hot coefficient, not an effect on its own). An effect the
    data cannot estimate (a feature that never varied, a level no patient in the model's
    fitted rows had) has NaN coef, std, interval and odds ratios
    (:func:`ragim.models.logistic_family.term_effects`).

    GAM rows: one per feature × bin: feature, label, type, term, bin, bin_label (the bin in
    words), is_missing_bin, bin_low/bin_high (a continuous feature's bin holds the values
    ``bin_low <= x < bin_high``; the first bin's bin_low is -inf and the last's bin_high inf,
    as their names say; NaN for other features and the missing bin), midpoint (a value to plot
    the bin at), score (log-odds), std, ci_low/ci_high, odds_ratio, unit. A bin's odds_ratio
    is exp(score): the bin's odds against a score of 0 for its feature, not against another
    bin (a fitted GAM centres each feature's scores on its fitted rows, so 0 is the feature's
    average contribution there); two bins compare by the ratio of their odds ratios (ICU 1.56
    against ward 0.755: 2.07).

    :meth:`table` gives the rows a reader needs (categorical levels against their reference,
    missing-value indicators folded, largest first); :meth:`plot` and the CLI draw from it.

    Rows, table, importance, plot and text come from the parameters' model family
    (``family``, a :class:`~ragim.models.ModelFamily`); another registered family explains
    its own way.

    Attributes: ``kind``, ``family``, ``intercept``, ``intercept_std`` (NaN if unknown), ``source``,
    ``outcome`` (in words), ``provenance``, ``coverage`` (the index's coverage of the
    description, a dict, or None), ``adaptation`` (how the model was adapted to labelled rows,
    one line, or None: :func:`adaptation_summary`), ``notes`` (the adaptation and coverage
    lines the text and HTML views show: :func:`model_notes`), ``params``.
    """

    def __init__(self, params: ModelParams, outcome: str | None = None):
        self.params, self.kind = params, params.kind
        self.family = model_family(params.kind)
        self.intercept = params.intercept
        self.intercept_std = float(params.std[0]) if params.std is not None else math.nan
        self.source = params.metadata.get("source")
        self.outcome = _outcome_name(params, outcome)
        self.provenance = Provenance.from_params(params)
        self.coverage = params.metadata.get("coverage")
        coverage_summary(self.coverage)  # a damaged record fails here, not when shown
        self.adaptation = adaptation_summary(params.metadata)
        self.notes = model_notes(params.metadata)
        self._frame = self.family.explanation_frame(params)

    def reference_intercept(self) -> tuple[float, float, list[str]]:
        """The log-odds of the reference patient of :meth:`table` (logistic models).

        :meth:`table` compares each categorical level with its feature's reference level, so
        the intercept that goes with it is the model's intercept plus each reference level's
        own coefficient. Returns (log-odds, its SD (:meth:`ModelParams.contrast_std`), NaN when
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
        return self.family.reference_intercept(self.params)

    def baseline(self) -> str:
        """The log-odds every comparison of :meth:`table` starts from, in words, as the plot
        title, the notebook view, ``repr`` and ``ragim explain`` show it: for a logistic model
        "intercept at the reference patient -3.521 (95% CI -4.952 to -2.089): Chest pain =
        typical angina; binary features at 0, continuous at their mean, none missing"
        (:meth:`reference_intercept`; the interval when the parameters carry ``std``), for a
        GAM "intercept -1.640". ``intercept`` is the model's own parameter, which for a
        logistic model with categorical features is the log-odds of a patient with no level
        at all, so it is not shown beside the table."""
        return self.family.baseline_text(*self.reference_intercept())

    def to_frame(self) -> pd.DataFrame:
        """The tidy table described in the class docstring (a copy)."""
        return self._frame.copy()

    def table(self, top: int | None = None, *, missing: bool = False) -> pd.DataFrame:
        """The model as a reader sees it, largest effects first.

        Logistic: one row per term with columns term, feature, label (the feature in words),
        comparison ("+1 SD (9.4 years)", "male vs female", "asymptomatic vs typical angina"),
        coef, std, ci_low, ci_high (log-odds) and odds_ratio, or_low, or_high. A categorical
        level is compared with the feature's reference level (its first category), so its
        coef is the difference of the two one-hot coefficients; its std is that difference's
        (:meth:`ModelParams.contrast_std`: with the parameters' ``correlation`` when they carry
        one, as the default generator's and fitted logistic models' do, else as if the two
        were independent, which overstates it). The reference level has no
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
        check_top(top)
        return self.family.explanation_table(self, top, missing)

    def importance(self) -> pd.DataFrame:
        """Per-feature importance, largest first.

        Returns a frame with columns feature and importance (log-odds, >= 0), one row per
        schema feature (0 when nothing can be said).

        GAM: the plain (unweighted) mean |score| over the feature's non-missing bins. The
        schema's continuous bins are training quantiles, so each holds about the same
        share of patients and this approximates interpret's frequency-weighted mean.
        Logistic: the log-odds range of the feature's effect: |coef| per SD of a continuous
        feature, |coef| of a binary feature's 0→1 change, and for a categorical feature the
        largest difference between two of its levels (max - min of the level effects
        against the reference, the reference counting 0). It does not depend on how the
        one-hot levels are parameterised (two models with the same predictions rank alike).
        Missing-value indicators and effects that are not estimable are left out.
        """
        imp = self.family.importance(self.params, self._frame)
        imp = imp.reindex(self.params.schema.names).fillna(0.0)
        out = pd.DataFrame({"feature": imp.index, "importance": imp.to_numpy(float)})
        return out.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)

    def data(self) -> dict:
        """JSON-safe dict: kind, source, outcome, intercept and intercept_std (the model's own
        intercept parameter), baseline (what :meth:`baseline` says: ``log_odds``, ``std`` (None
        when unknown), ``reference`` (the reference levels in words) and ``text``), terms (the
        rows of :meth:`to_frame`), importance (:meth:`importance`), provenance, coverage."""
        value, sd, refs = self.reference_intercept()
        return self._data(
            intercept_std=self.intercept_std,
            baseline={"log_odds": value, "std": sd, "reference": refs, "text": self.baseline()},
            terms=_records(self._frame),
            importance=_records(self.importance()),
        )

    def plot(self, ax=None, top: int | None = None, kind: str = "coef", *, missing: bool = False):
        """Plot the model; returns a matplotlib Figure.

        Logistic: a dot chart of the ``top`` rows of :meth:`table` (categorical levels against
        their reference, labelled in words) with 95% CI whiskers, as coefficients
        (``kind="coef"``) or odds ratios (``"odds_ratio"``, log axis); the title says how
        many terms are shown. GAM: a grid of shape functions of the ``top`` features by
        importance (CI bands, and whiskers on binary and categorical bars, over every bin
        that has an interval: a not-estimable bin leaves a gap, not the whole band;
        missing-value bins drawn as a dotted line or a grey bar); ``ax`` may be one axes (for
        one panel) or a sequence of axes. ``kind="importance"`` draws importance bars.
        """
        if kind not in ("coef", "odds_ratio", "importance"):
            raise ValidationError(
                f"kind must be 'coef', 'odds_ratio' or 'importance', got {kind!r}"
            )
        if kind == "importance":
            imp = self.importance()
            labels = {f.name: f.display_name for f in self.params.schema.features}
            imp = imp.assign(feature=imp["feature"].map(labels))
            return plots.plot_importance(imp, top=top, ax=ax, xlabel=self.family.importance_label)
        return self.family.plot_global(self, self.table(top, missing=missing), kind, ax=ax)

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>{html.escape(self.family.heading)}</b> for {html.escape(self.outcome)} "
            f"&middot; {html.escape(self.baseline())}"
            f" &middot; source: {html.escape(str(self.source))}</p>"
        )
        df = self.table(missing=True)
        cols = [c for c in self.family.html_columns() if c in df.columns]
        if self.params.std is None:
            cols = [c for c in cols if c not in ("ci_low", "ci_high", "or_low", "or_high")]
        body = _table_html(df[cols].head(40))
        more = f"<p><i>… {len(df) - 40} more rows in table()</i></p>" if len(df) > 40 else ""
        return (
            head
            + _notes_html(self.notes)
            + body
            + more
            + self._img_html(top=12)
            + self.provenance._repr_html_()
        )

    def __repr__(self) -> str:
        src = f", source={self.source}" if self.source else ""
        lines = [
            f"GlobalExplanation({self.kind} model for {self.outcome}{src}, "
            f"{len(self._frame)} {self.family.term_noun}; {self.baseline()})"
        ]
        lines += self.family.summary_lines(self)
        notes = [f"  {line}" for line in self.notes]
        return "\n".join([*lines, *notes, f"  {self.provenance!r}"])


# ---------------------------------------------------------------------- local
def _one_row(X_row: Any, schema) -> pd.DataFrame:
    if isinstance(X_row, pd.Series):
        X_row = X_row.to_frame().T.infer_objects()
    elif isinstance(X_row, Mapping):
        X_row = pd.DataFrame([dict(X_row)])
    if not isinstance(X_row, pd.DataFrame):
        raise ValidationError(
            "X_row must be a one-row pandas DataFrame, a Series or a dict, got "
            f"{type(X_row).__name__}"
        )
    if len(X_row) != 1:
        raise ValidationError(
            f"explain one patient at a time; got {len(X_row)} rows (select one with X.iloc[[i]])"
        )
    return schema.validate_frame(X_row, where="X_row")


class LocalExplanation(_Explanation):
    """Why one patient got their risk; build with :func:`explain_params` and ``X_row``.

    ``to_frame()`` has one row per feature (schema order): feature, value (raw; None if
    missing), unit, contribution (log-odds) and, for GAMs, bin. Logistic contributions
    are coef × standardised design value summed over the feature's columns (one-hot
    and missing indicator folded in); GAM contributions are the patient's bin scores.
    ``baseline + sum(contribution) == logit`` (up to float rounding), and
    ``probability = sigmoid(logit)``. ``baseline`` is the log-odds the global explanation's
    comparisons start from (:meth:`GlobalExplanation.reference_intercept`): for a logistic
    model the reference patient's, so a categorical feature contributes its level's
    comparison with the reference level (0 at the reference level), as the global table
    shows it; for a GAM the intercept. ``intercept`` is the model's own parameter. Two more
    columns put the row in words: label (the feature's name from the schema) and value_label
    ("male", "63 years", "missing"), which says how a value the model has no term for is
    scored: "missing (scored as the training median, 64 years)" (or "missing (scored as no
    level)" for a category) for a blank in a column never blank in the fitted rows, "hdu
    (unknown level: scored as no level)" for a level the model does not know (all of its
    one-hot terms 0); the contribution is then that of the value scored, not an effect of
    the value written.
    ``outcome`` names what the model predicts (for titles); ``adaptation`` and ``notes`` are
    :class:`GlobalExplanation`'s.
    """

    def __init__(self, params: ModelParams, X_row: Any, outcome: str | None = None):
        schema = params.schema
        X = _one_row(X_row, schema)
        schema.warn_new_rows(X, where="X_row")
        self.params, self.kind, self.source = params, params.kind, params.metadata.get("source")
        self.outcome = _outcome_name(params, outcome)
        self.provenance = Provenance.from_params(params)
        self.coverage = params.metadata.get("coverage")
        self.adaptation = adaptation_summary(params.metadata)
        self.notes = model_notes(params.metadata)  # a damaged coverage record fails here
        self.intercept = params.intercept
        self.baseline = model_family(params.kind).reference_intercept(params)[0]
        self.index = X.index[0]
        values = [
            None if pd.isna(v) else (v.item() if isinstance(v, np.generic) else v)
            for v in X.iloc[0]
        ]
        contributions, self._terms = model_family(params.kind).local_contributions(params, X)
        unseen = schema.unseen_levels(X)
        rows = []
        for f, v in zip(schema.features, values, strict=True):
            extra = dict(contributions[f.name])
            rows.append(
                {
                    "feature": f.name,
                    "label": f.display_name,
                    "value": v,
                    "value_label": _value_label(f, v)
                    + _scored_as(schema, f, v, unseen, extra.get("bin")),
                    "unit": f.unit,
                    **{k: c for k, c in extra.items() if k != "contribution"},
                    "contribution": extra["contribution"],
                }
            )
        for name in [c for c in contributions if c not in set(schema.names)]:
            rows.append(  # a term of no single feature (a family's interaction): its own row
                {
                    "feature": name,
                    "label": name,
                    "value": None,
                    "value_label": "a term of more than one feature",
                    "unit": "",
                    "contribution": contributions[name]["contribution"],
                }
            )
        self._frame = pd.DataFrame(rows)
        self.logit = math.fsum([self.baseline, *self._frame["contribution"]])
        model_logit = float(params.log_odds(X)[0])
        if not math.isclose(self.logit, model_logit, rel_tol=1e-6, abs_tol=1e-6):
            raise ValidationError(
                f"the {params.kind} family's contributions for this patient add up to log-odds "
                f"{self.logit:.6g}, but the model gives {model_logit:.6g}; its "
                "local_contributions must account for every term (ModelFamily docs)"
            )
        self.probability = (
            1.0 / (1.0 + math.exp(-self.logit))
            if self.logit >= 0
            else (math.exp(self.logit) / (1.0 + math.exp(self.logit)))
        )

    def to_frame(self, by: str = "feature") -> pd.DataFrame:
        """Per-feature contributions; ``by="term"`` gives the unfolded logistic design terms
        (term, feature, design_value, coef, contribution)."""
        if by == "term":
            if self._terms is None:
                raise ValidationError(
                    f"by='term' is only defined for models with design terms, "
                    f"not for {self.kind} models; GAM terms are the bins"
                )
            return self._terms.copy()
        if by != "feature":
            raise ValidationError(f"by must be 'feature' or 'term', got {by!r}")
        return self._frame.copy()

    def data(self) -> dict:
        """JSON-safe dict: kind, source, outcome, intercept, baseline, contributions, logit,
        probability, provenance, coverage."""
        return self._data(
            baseline=self.baseline,
            contributions=_records(self._frame),
            logit=self.logit,
            probability=self.probability,
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
        check_top(top)
        df = by_abs(self._frame, "contribution")[
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
                f"log-odds {self.logit:+.2f} = baseline {self.baseline:+.2f}"
                + (" (the reference patient)" if self.baseline != self.intercept else "")
                + " + contributions",
                *textwrap.wrap(note, 80),
            ]
        )
        return plots.plot_waterfall(
            self._frame.assign(label=self._labels()),
            self.baseline,
            self.logit,
            self.probability,
            top=top,
            ax=ax,
            title=title,
        )

    def _repr_html_(self) -> str:
        df = self.table()
        head = (
            f"<p><b>{html.escape(model_family(self.kind).heading)}, one patient</b> &middot; "
            "predicted risk of "
            f"{html.escape(self.outcome)}: {self.probability:.3f} &middot; "
            f"logit {self.logit:+.3f} = "
            f"baseline {self.baseline:+.3f} + contributions</p>"
        )
        return (
            head
            + _notes_html(self.notes)
            + _table_html(df)
            + self._img_html()
            + self.provenance._repr_html_()
        )

    def __repr__(self) -> str:
        df = by_abs(self._frame, "contribution")
        parts = " ".join(f"{r.feature} {r.contribution:+.2f}" for r in df.head(5).itertuples())
        return (
            f"LocalExplanation({self.kind}, P={self.probability:.3f}, logit={self.logit:+.3f} = "
            f"baseline {self.baseline:+.2f} {parts}{' ...' if len(df) > 5 else ''})"
        )


def _scored_as(schema, f, v: Any, unseen: dict, bin: str | None = None) -> str:
    """What a value the model has no term for is scored as, in words after its label: a
    blank in a column never blank in the fitted rows (the training median, or no level), or
    a level the model does not know (no level); "" otherwise. ``bin``: the bin a GAM scored
    the value in (None for other families); a binary feature's median between 0 and 1 (0.5
    when half the rows are 1) falls in no bin of its own, so the bin is named."""
    none = "scored as no level"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        if f.name in schema.missing_:
            return ""
        if f.type == "categorical":
            return f" ({none})"
        median = schema.medians_[f.name]
        if bin is not None and f.type == "binary" and median not in (0.0, 1.0):
            return (
                f" (scored as {f.level_label(int(bin))}: the bin of the training median "
                f"{_fmt(float(median))})"
            )
        value = (
            _value_label(f, schema.medians_[f.name])
            if f.type == "continuous"
            else (f.level_label(schema.medians_[f.name]))
        )
        return f" (scored as the training median, {value})"
    if f.name in unseen:
        return f" (unknown level: {none})"
    return ""


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
    "adaptation_summary",
    "coverage_summary",
    "explain_params",
    "model_notes",
    "plots",
    "reference_level",
    "truncation_note",
]
