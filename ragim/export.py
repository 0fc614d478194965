"""Take a model out of ragim: coefficients as CSV, a plain scikit-learn Pipeline.

* :func:`coefficients_frame` / :func:`save_coefficients_csv`: every parameter with its 95%
  interval (when the parameters carry a ``std``) and odds ratio, plus the human labels
  of the schema; the intercept is the first row.
* :func:`to_sklearn_pipeline`: a logistic model as ``Pipeline([("preprocess",
  ColumnTransformer), ("logistic", LogisticRegression)])`` built from scikit-learn classes.
  It reproduces ragim's preprocessing (median imputation with missing-value indicators,
  one-hot categories where an unknown category gives zeros) and its predictions; the
  standardisation is folded into the coefficients, which are therefore per raw unit. Each
  feature's values are first read by :func:`read_column`, ragim's own reading (category codes
  ``2``, ``2.0`` and ``"2"`` are one level), so the pipeline needs ragim installed.
* A GAM exports to interpret's EBM with :meth:`ragim.models.GAMModel.to_interpret`; it reads
  raw values by interpret's rules, so give it :func:`read_frame` (ragim's reading of them).

Examples
--------
>>> import numpy as np, pandas as pd
>>> from ragim.models import LogisticModel
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame({"age": rng.normal(60, 10, 80), "cp": rng.choice(["typical", "atypical"], 80)})
>>> y = (X["age"] + rng.normal(0, 10, 80) > 60).astype(int)
>>> model = LogisticModel().fit(X, y)
>>> pipe = to_sklearn_pipeline(model.to_params())
>>> bool(np.allclose(pipe.predict_proba(X), model.predict_proba(X)))
True
>>> coefficients_frame(model.to_params())["term"].tolist()
['intercept', 'age', 'cp[atypical]', 'cp[typical]']
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ragim.canonical import canonical_level, canonical_levels
from ragim.errors import ValidationError
from ragim.explain import Z95, explain_params
from ragim.io import write_file
from ragim.params import ModelParams, model_family
from ragim.schema import Feature, case_only_level, read_feature


def coefficients_frame(params: ModelParams) -> pd.DataFrame:
    """Every parameter with its interval, one row each, the intercept first.

    Logistic: the columns of ``GlobalExplanation.to_frame()`` plus or_ci_low / or_ci_high
    (the odds-ratio interval, exp of ci_low / ci_high). Every number in a row describes one
    effect (:func:`ragim.models.logistic_family.term_effects`), as
    :meth:`~ragim.explain.GlobalExplanation.table` and ``ragim explain`` report it: coef,
    std, ci_low, ci_high, coef_per_unit and the odds ratios are per SD of a continuous
    feature (coef_per_unit, odds_ratio_per_unit: per raw unit), for the 0→1 change of a binary
    feature or a missing-value indicator, and for a categorical level (or the missing
    indicator of a categorical feature) against the feature's reference level (the
    ``reference`` column; the reference level's own row is 0, OR 1). They are NaN for an
    effect the data cannot estimate (the ``change`` column says why). ``model_coef`` and
    ``model_std`` are the model's own parameters (a level's one-hot coefficient), which
    rebuild it: ``ModelParams.from_dict(kind, schema, dict(zip(term, model_coef)))``.
    GAM: one row per bin (feature, label, bin, bin_label, is_missing_bin, bin_low, bin_high,
    midpoint, score, std, ci_low, ci_high, odds_ratio) plus or_ci_low / or_ci_high. A
    continuous feature's bin holds the values ``bin_low <= x < bin_high``: the first bin's
    bin_low is -inf and the last's bin_high inf (the CSV writes ``-inf`` / ``inf``), as the
    bins' names (``age[-inf..45]``) say, so every value falls in exactly one bin; midpoint is
    a value to plot the bin at. Other features' bins, and the missing bin, have NaN bounds.
    Intervals are ± 1.96 std, NaN when ``params.std`` is None. The intercept row comes first
    and has no odds ratio, so its odds-ratio columns are NaN. For a logistic model its coef,
    std, ci_low and ci_high are the log-odds of the reference patient the other rows compare
    with (:meth:`~ragim.explain.GlobalExplanation.reference_intercept`: every categorical
    feature at its reference level, listed in ``reference``, binary features at 0, continuous
    ones at their fitted mean, none missing), the intercept ``ragim explain`` prints, so that
    the intercept plus the rows of one patient's levels gives that patient's log-odds; its
    model_coef / model_std are the model's own intercept parameter (the log-odds when every
    design column is 0: for a model with categorical features, a patient with no level at
    all), which rebuilds the model. For a GAM (and a logistic model without categorical
    features) the two are the same.

    Logistic rows also give what re-scoring a patient from the table alone needs: ``center``,
    a continuous feature's fitted mean (its value at the reference patient; the value row's
    effect is per ``scale`` (SD) of ``x - center``, per unit in coef_per_unit), and ``fill``,
    the value a blank of a continuous or binary feature is scored as (the training median; the
    feature's ``__missing`` row, when it has one, adds its own 0→1 change). A patient's
    log-odds are then the intercept row's coef + coef_per_unit × (x − center) for each
    continuous feature + coef × x for each binary one (x = fill when blank, plus the missing
    row's coef) + the coef of each categorical feature's level row (its ``__missing`` row
    when blank). Both are NaN on other rows. A categorical value the model has no row for
    (an unseen level, or a blank where the feature has no ``__missing`` row) is scored as no
    level at all: minus the reference level's model_coef.

    Two columns carry the caveats an explanation shows, so that the table does not drop them:
    ``not_estimable`` (why the data cannot estimate a term, or ""), and ``between_tasks``
    (True for a term constant within every task a generated model learned from,
    ``metadata["between_tasks"]``: its odds ratio is a difference between those tasks, such
    as sites, not an effect on patients).

    Raises
    ------
    ValidationError
        When ``params`` is not a :class:`~ragim.params.ModelParams`.
    """
    if not isinstance(params, ModelParams):
        raise ValidationError(f"coefficients_frame needs ModelParams, got {type(params).__name__}")
    expl = explain_params(params)
    frame = expl.to_frame()
    value = model_family(params.kind).value_column
    sd0 = float(params.std[0]) if params.std is not None else math.nan
    # the rows compare with the reference patient (a level against its reference level), so
    # the intercept beside them is that patient's log-odds, as `ragim explain` prints it
    b0, sd, refs = expl.reference_intercept()
    intercept = {
        "term": "intercept",
        "feature": "",
        "label": "intercept",
        "role": "intercept",
        value: b0,
        "std": sd,
        "ci_low": b0 - Z95 * sd,
        "ci_high": b0 + Z95 * sd,
    }
    if "model_coef" in frame.columns:
        intercept.update(model_coef=params.intercept, model_std=sd0)
    if "reference" in frame.columns:
        intercept["reference"] = ", ".join(refs)
    if "change" in frame.columns:
        intercept["change"] = (
            "log-odds at the reference patient: "
            + ("the reference levels, " if refs else "")
            + "binary features at 0, continuous at their mean, none missing"
        )
    if "scale" in frame.columns and "term" in frame.columns:
        frame = _with_reference_values(params, frame)
    out = pd.concat([pd.DataFrame([intercept]), frame], ignore_index=True)
    with np.errstate(over="ignore"):
        out["or_ci_low"] = np.exp(np.clip(out["ci_low"].to_numpy(float), -700, 700))
        out["or_ci_high"] = np.exp(np.clip(out["ci_high"].to_numpy(float), -700, 700))
    out.loc[0, ["or_ci_low", "or_ci_high"]] = math.nan  # the intercept: no ratio
    # a registered family's frame may have no such column: nothing is marked then
    out["not_estimable"] = out.get("not_estimable", pd.Series("", index=out.index)).fillna("")
    between = params.metadata.get("between_tasks")
    between = {str(t) for t in between} if isinstance(between, list) else set()
    out["between_tasks"] = out["term"].isin(between) | out["feature"].isin(between)
    return out


def _with_reference_values(params: ModelParams, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (rows named by ``term``) with ``center`` (a continuous feature's value row:
    the fitted mean, the reference patient's value) and ``fill`` (the value row of a continuous
    or binary feature: the training median a blank is scored as) after ``scale``; NaN on the
    rows of other terms (a level, a missing indicator, a family's own terms such as an
    interaction)."""
    schema = params.schema
    center, fill = {}, {}
    for c in schema.design_columns:
        kind = schema[c.feature].type
        if c.role == "value" and kind in ("continuous", "binary"):
            center[c.name] = c.center if kind == "continuous" else math.nan
            fill[c.name] = float(schema.medians_[c.feature])
    at = list(frame.columns).index("scale") + 1
    frame = frame.copy()
    frame.insert(at, "fill", [fill.get(t, math.nan) for t in frame["term"]])
    frame.insert(at, "center", [center.get(t, math.nan) for t in frame["term"]])
    return frame


#: a text cell starting with one of these is a formula (or becomes one) in a spreadsheet
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every text cell that a spreadsheet would take for a formula (one starting
    with ``= + - @``, a tab or a carriage return) prefixed with a single quote, as OWASP advises
    against CSV injection; numbers, missing values and other text are left as they are.

    Parameters
    ----------
    frame : any table (n_rows × n_columns); it is not changed.

    Returns
    -------
    pandas.DataFrame
        A copy of the same shape, columns and index.

    Examples
    --------
    >>> spreadsheet_safe(pd.DataFrame({"label": ["=2+3", "age"], "change": ["+1 SD", "-"],
    ...                                "coef": [-0.5, 1.0]})).to_dict("list")
    {'label': ["'=2+3", 'age'], 'change': ["'+1 SD", "'-"], 'coef': [-0.5, 1.0]}
    """
    out = frame.copy()
    for c in out.columns:
        col = out[c]
        if col.dtype == object or isinstance(col.dtype, pd.StringDtype | pd.CategoricalDtype):
            out[c] = col.astype(object).map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v,
                na_action="ignore",
            )
    return out


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` (without its index) as a UTF-8 CSV that is safe to open in a spreadsheet
    (:func:`spreadsheet_safe`; numbers in full, as Python's ``repr`` writes them, so that
    they read back exactly: a GAM's bin edges and ``model_coef`` rebuild the model),
    atomically with :func:`ragim.io.write_file` (an existing file keeps its permissions).
    Returns ``path``.

    Raises
    ------
    ragim.errors.ArtifactError
        When ``path`` is a folder, or a file stands where a folder of ``path`` must be.
    ragim.errors.ValidationError
        When ``path`` has no file name.
    """
    text = spreadsheet_safe(frame).to_csv(index=False, lineterminator=os.linesep)
    return write_file(path, text.encode("utf-8"))


def save_coefficients_csv(params: ModelParams, path: str | Path) -> Path:
    """Write :func:`coefficients_frame` as a UTF-8 CSV with :func:`write_csv` (atomic; text
    cells that a spreadsheet would take for a formula, such as a received model's label
    ``=HYPERLINK(...)`` or the ``change`` column's ``+1 SD = 1.03``, start with a single quote)
    and return its path."""
    return write_csv(coefficients_frame(params), path)


def read_column(X: Any, feature: Feature, levels: Sequence[str] | None = None) -> np.ndarray:
    """One feature's column as ragim reads it: the first step of each feature in
    :func:`to_sklearn_pipeline`.

    ``X`` is the one-column table a ``ColumnTransformer`` passes. The values are read by
    :func:`ragim.schema.read_feature`, as ragim reads them; a categorical feature's then
    become :func:`~ragim.canonical.canonical_levels` (``2``, ``2.0``, ``"2"`` and ``True``
    for 1 are each one level, as in ragim), shape (n_rows, 1), object, None where missing;
    any other feature's are float64 with NaN where missing. ``levels`` (the model's levels of
    a categorical feature, canonical) refuse a value that matches none of them but exactly one
    when letter case is ignored (``female`` for ``Female``), as ragim does.

    Raises
    ------
    ValidationError
        In one line, for values ragim refuses: text in a numeric column, infinite values,
        values other than 0/1 in a binary column, missing values a feature does not allow, a
        level that differs from one of ``levels`` only in letter case.

    Examples
    --------
    >>> ward = pd.DataFrame({"ward": [2, "2", 2.0, None]})
    >>> read_column(ward, Feature("ward", "categorical")).ravel()
    array(['2', '2', '2', None], dtype=object)
    >>> read_column(pd.DataFrame({"age": [61, None]}), Feature("age")).ravel()
    array([61., nan])
    """
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object))
    if frame.shape[1] != 1:
        raise ValidationError(
            f"read_column reads one column ({feature.name!r}), got {frame.shape[1]} columns"
        )
    values, problems = read_feature(feature, frame.iloc[:, 0])
    if problems:
        raise ValidationError("X has invalid values: " + "; ".join(problems))
    if feature.type == "categorical":
        codes = canonical_levels(values).reshape(-1, 1)
        if levels:
            known = set(levels)
            unseen = dict.fromkeys(c for c in codes.ravel() if c is not None and c not in known)
            if problem := case_only_level(feature.name, list(unseen), list(levels)):
                raise ValidationError(problem)
        return codes
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def read_frame(X: pd.DataFrame, schema) -> pd.DataFrame:
    """``X`` as ragim reads it, one :func:`read_column` per feature of ``schema``: what an
    exported model that reads raw values by its own rules (the interpret EBM of
    :meth:`ragim.models.GAMModel.to_interpret`) must be given to score as ragim does.

    Parameters
    ----------
    X : the patients, n_rows × (the schema's columns, in any order; others are ignored).
    schema : a fitted :class:`~ragim.schema.FeatureSchema` (``params.schema``).

    Returns
    -------
    pandas.DataFrame
        n_rows × the schema's features, in schema order, with ``X``'s index: a categorical
        feature's values as canonical level text (``4``, ``4.0``, ``"4"`` and ``" 4"`` are all
        ``"4"``), None where missing; any other feature's as float64, NaN where missing (a blank
        text cell is missing, ``"true"`` is 1).

    Raises
    ------
    ValidationError
        For a schema that is not fitted, a missing column, and in one line for values ragim
        refuses (:func:`read_column`).

    Examples
    --------
    >>> from ragim.schema import FeatureSchema
    >>> X = pd.DataFrame({"ward": ["4", "2"], "age": [61.0, 70.0]})
    >>> schema = FeatureSchema.infer(X, types={"ward": "categorical"}).fit(X)
    >>> read_frame(pd.DataFrame({"ward": [4.0, ""], "age": ["61", None]}), schema).to_dict("list")
    {'ward': ['4', None], 'age': [61.0, nan]}
    """
    if not isinstance(X, pd.DataFrame):
        raise ValidationError(f"read_frame reads a pandas DataFrame, got {type(X).__name__}")
    if not getattr(schema, "is_fitted", False):
        raise ValidationError(
            "read_frame needs the model's fitted schema (params.schema, model.schema_), got "
            + (
                "an unfitted FeatureSchema"
                if hasattr(schema, "is_fitted")
                else type(schema).__name__
            )
        )
    absent = [n for n in schema.names if n not in X.columns]
    if absent:
        raise ValidationError(f"X is missing the model's columns {absent}")
    out = {}
    for f in schema.features:
        cats = [canonical_level(c) for c in schema.categories_.get(f.name, [])]
        values = read_column(X[[f.name]], f, cats if f.type == "categorical" else None)[:, 0]
        if f.type == "categorical":
            col = pd.Series(values, index=X.index, dtype=object)
            out[f.name] = col.where(col.notna(), None)
        else:
            out[f.name] = pd.Series(values, index=X.index, dtype=np.float64)
    return pd.DataFrame(out, index=X.index)


def to_sklearn_pipeline(params: ModelParams):
    """A scikit-learn ``Pipeline`` that predicts exactly as the logistic model ``params``.

    Parameters
    ----------
    params : logistic parameters over a fitted schema.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``preprocess`` (a ``ColumnTransformer`` with one step per feature, by column name)
        then ``logistic`` (a ``LogisticRegression`` whose ``coef_`` are per raw unit).
        ``predict_proba`` takes a DataFrame with the schema's columns (others are ignored),
        holding whatever ragim accepts: numbers of any dtype, booleans, numerals written as
        text, NaN or None where missing, and category codes in any form ragim treats as one
        level (``2``, ``2.0``, ``"2"``; pandas categorical columns too). Each feature's first
        step is a ``FunctionTransformer`` running :func:`read_column`, ragim's own reading of
        the values, so the pipeline needs ragim installed to load and run; values ragim
        refuses raise the same one-line :class:`ValidationError`.

    Raises
    ------
    ValidationError
        For GAM parameters (use ``GAMModel.to_interpret()``).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    if not isinstance(params, ModelParams):
        raise ValidationError(f"to_sklearn_pipeline needs ModelParams, got {type(params).__name__}")
    problem = model_family(params.kind).sklearn_export_problem()
    if problem is not None:
        raise ValidationError(problem)
    schema = params.schema
    coef = dict(zip(schema.design_names, params.terms, strict=True))
    steps, fit_cols, raw_coef = [], {}, []
    intercept = params.intercept
    for f in schema.features:
        has_missing = f.name in schema.missing_
        cats = [canonical_level(c) for c in schema.categories_.get(f.name, [])]
        kw_args = {"feature": f, "levels": cats} if f.type == "categorical" else {"feature": f}
        read = FunctionTransformer(read_column, kw_args=kw_args, feature_names_out="one-to-one")
        if f.type == "categorical":
            onehot = OneHotEncoder(categories=[cats], handle_unknown="ignore", sparse_output=False)
            # a missing level stays None: one-hot zeros (unknown), and the indicator reads None
            # itself, so no placeholder text can collide with a real level
            encode = (
                FeatureUnion(
                    [
                        ("onehot", onehot),
                        ("missing", MissingIndicator(missing_values=None, features="all")),
                    ]
                )
                if has_missing
                else onehot
            )
            enc = Pipeline([("read", read), ("encode", encode)])
            level = cats[0] if cats else None
            fit_cols[f.name] = pd.Series([level, None if has_missing else level], dtype=object)
            raw_coef += [coef[f"{f.name}[{c}]"] for c in schema.categories_[f.name]]
        else:
            med = float(schema.medians_[f.name])
            impute = SimpleImputer(strategy="constant", fill_value=med, add_indicator=has_missing)
            enc = Pipeline([("read", read), ("impute", impute)])
            # the imputer's fill is the constant med; the fit rows need only be values ragim
            # reads (a binary median may be 0.5, which no 0/1 column holds) and a blank for the
            # imputer's indicator
            seen = 0.0 if f.type == "binary" else med
            fit_cols[f.name] = [seen, np.nan if has_missing else seen]
            b = coef[f.name]
            if f.type == "continuous":  # fold the standardisation into the coefficient
                b_raw = b / schema.scales_[f.name]
                intercept -= b_raw * schema.means_[f.name]
                raw_coef.append(b_raw)
            else:
                raw_coef.append(b)
        if has_missing:
            raw_coef.append(coef[f.name + "__missing"])
        steps.append((f.name, enc, [f.name]))
    pre = ColumnTransformer(steps, remainder="drop", verbose_feature_names_out=False)
    fit_frame = pd.DataFrame(fit_cols)
    pre.fit(fit_frame)
    n_out = pre.transform(fit_frame).shape[1]
    if n_out != len(raw_coef):  # pragma: no cover - guards the layout against sklearn changes
        raise ValidationError(
            f"the exported preprocessing makes {n_out} columns but the model has {len(raw_coef)}"
        )
    clf = LogisticRegression()
    classes = params.metadata.get("classes")
    clf.classes_ = np.asarray(
        classes if isinstance(classes, list) and len(classes) == 2 else [0, 1]
    )
    clf.coef_ = np.asarray(raw_coef, dtype=np.float64)[None, :]
    clf.intercept_ = np.array([intercept], dtype=np.float64)
    clf.n_features_in_ = len(raw_coef)
    clf.n_iter_ = np.array([0], dtype=np.int32)
    return Pipeline([("preprocess", pre), ("logistic", clf)])


__all__ = [
    "FORMULA_STARTS",
    "coefficients_frame",
    "read_column",
    "read_frame",
    "save_coefficients_csv",
    "spreadsheet_safe",
    "to_sklearn_pipeline",
    "write_csv",
]
