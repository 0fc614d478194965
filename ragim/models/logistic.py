"""LogisticModel: penalised logistic regression on the schema's standardised design.

The coefficients live on the shared design layout of the
:class:`~ragim.schema.FeatureSchema` (``["intercept", *schema.design_names]``),
so every task's model is a vector of the same length and meaning. They are
fitted with scikit-learn's ``LogisticRegression`` (lbfgs for L2 or no penalty,
saga for L1 / elastic net) and reported on the standardised scale (per SD) or
the original scale (per unit) by :meth:`LogisticModel.coefficients`.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> X = pd.DataFrame({"age": rng.normal(55, 10, 200), "smoker": rng.integers(0, 2, 200)})
>>> y = (rng.random(200) < 1 / (1 + np.exp(-(X["age"] - 55) / 10))).astype(int)
>>> model = LogisticModel().fit(X, y)
>>> model.coef_.shape, model.predict_proba(X).shape
((1, 2), (200, 2))
>>> again = LogisticModel.from_params(model.to_params())
>>> bool(np.allclose(again.predict_proba(X), model.predict_proba(X)))
True
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ragim.errors import DataWarning, ValidationError, user_stacklevel
from ragim.models.base import (
    InterpretableModel,
    fit_frame,
    fit_metadata,
    fitted_schema,
    json_label,
    register_model_family,
    set_fitted,
)
from ragim.models.family import constant_terms
from ragim.models.logistic_family import LogisticFamily, term_effects
from ragim.params import ModelParams, std_and_correlation
from ragim.schema import FeatureSchema

Z95 = 1.959963984540054


def laplace_covariance(
    Z: np.ndarray,
    y01: np.ndarray,
    coef: np.ndarray,
    intercept: float,
    C: float,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray | None:
    """Approximate posterior covariance of ``[intercept, *coef]`` for the L2 objective
    ``0.5 ||w||^2 + C sum_i s_i logloss_i``: the inverse Hessian at the optimum (Laplace),
    shape (P, P).

    Without a penalty (``C`` infinite) the Hessian is singular whenever some combination of
    the parameters is not identified by the rows: the one-hot columns of a categorical
    feature sum to the intercept's column, and a level no patient had is a column of zeros.
    Then the Hessian is inverted on the directions the design identifies (the pseudo-inverse
    along the design's null space): every identified combination (a
    difference between two observed levels, a continuous or binary slope, the log-odds of a
    patient) gets its exact Laplace variance, whichever generalised inverse is taken, while
    a column of zeros gets variance 0 (its coefficient, 0, was never moved by the data;
    explanations mark it not estimable from ``metadata["constant_terms"]``).

    Returns None when a penalised Hessian is singular or the result is not finite.

    Examples
    --------
    >>> Z = np.array([[-1.0], [0.0], [1.0], [2.0]]); y = np.array([0, 1, 0, 1])
    >>> laplace_covariance(Z, y, np.array([0.5]), 0.0, 1.0).shape
    (2, 2)
    """
    Za = np.column_stack([np.ones(len(Z)), Z])
    p = expit(Z @ coef + intercept)
    w = p * (1 - p) * (1.0 if sample_weight is None else sample_weight)
    scale = 1.0 if not np.isfinite(C) else C
    H = scale * (Za.T @ (Za * w[:, None]))
    if np.isfinite(C):
        H[1:, 1:] += np.eye(Z.shape[1])
        try:
            cov = np.linalg.inv(H)
        except np.linalg.LinAlgError:
            return None
    else:  # invert on the directions the rows identify (the row space of the design)
        _, sv, vt = np.linalg.svd(Za, full_matrices=False)
        U = vt[sv > 1e-10 * max(float(sv.max()) if sv.size else 0.0, 1e-300)].T
        try:
            cov = U @ np.linalg.inv(U.T @ H @ U) @ U.T
        except np.linalg.LinAlgError:
            return None
    var = np.diag(cov)
    if not np.all(np.isfinite(cov)) or np.any(var < -1e-10):
        return None
    return cov


#: log-odds beyond which a fitted probability is within 1e-8 of 0 or 1 (logit(1 - 1e-8)): an
#: unpenalised fit that puts rows there nearly separates the classes (R's glm warns likewise)
SURE_LOG_ODDS = 18.420680733952366


def separates(log_odds: np.ndarray, y01: np.ndarray) -> bool:
    """Whether fitted log-odds (shape (n_rows,)) put every positive row (``y01`` 1) above every
    negative one: complete separation, where an unpenalised fit has no finite optimum and its
    coefficients (and Laplace covariance) are wherever the solver stopped. False with one class.

    >>> separates(np.array([-3.0, -1.0, 2.0]), np.array([0.0, 0.0, 1.0]))
    True
    >>> separates(np.array([-3.0, 1.0, 2.0]), np.array([0.0, 1.0, 0.0]))
    False
    """
    pos, neg = log_odds[y01 == 1], log_odds[y01 == 0]
    return bool(pos.size and neg.size and pos.min() > neg.max())


class LogisticModel(InterpretableModel, ClassifierMixin, BaseEstimator):
    """Binary logistic regression over a FeatureSchema's standardised design.

    Parameters
    ----------
    schema : FeatureSchema or None
        The feature schema. None: inferred and fitted on ``X`` at fit time. Not fitted:
        fitted (on a copy) on ``X``. Fitted: used as is (share it across tasks).
    penalty : {"l2", "l1", "elasticnet"} or None
        Regularisation; None fits an unpenalised model.
    C : float
        Inverse regularisation strength, as in scikit-learn.
    l1_ratio : float
        Elastic-net mixing (only used with ``penalty="elasticnet"``).
    max_iter, tol : solver settings.
    class_weight : dict, "balanced" or None
        As in scikit-learn; dict keys are the labels of ``y``.

    Attributes
    ----------
    params_ : ModelParams (kind "logistic") — the whole fitted state.
    schema_ : the fitted schema used.
    coef_ : ndarray (1, n_design), on the standardised design scale.
    intercept_ : ndarray (1,).
    classes_ : the two labels; ``predict_proba[:, 1]`` is ``classes_[1]``.
    n_features_in_ : number of input columns.
    feature_names_in_ : input column names (only when fitted on a DataFrame).
    n_iter_ : solver iterations (only after fit).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3)); y = (X[:, 0] > 0).astype(int)
    >>> LogisticModel(C=10.0).fit(X, y).score(X, y) > 0.9
    True
    """

    _kind = "logistic"
    _parameter_constraints: dict = {
        "schema": [FeatureSchema, None],
        "penalty": [StrOptions({"l2", "l1", "elasticnet"}), None],
        "C": [Interval(Real, 0, None, closed="neither")],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        schema=None,
        penalty="l2",
        C=1.0,
        l1_ratio=0.5,
        max_iter=1000,
        tol=1e-6,
        class_weight=None,
    ):
        self.schema = schema
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight

    def _solver_kwargs(self) -> dict[str, Any]:
        """scikit-learn >= 1.8 spelling: the penalty is set by ``l1_ratio`` and ``C``."""
        kw = {
            "max_iter": self.max_iter,
            "tol": self.tol,
            "class_weight": self.class_weight,
            "random_state": 0,
        }
        if self.penalty is None:
            return kw | {"C": np.inf, "l1_ratio": 0.0, "solver": "lbfgs"}
        if self.penalty == "l2":
            return kw | {"C": self.C, "l1_ratio": 0.0, "solver": "lbfgs"}
        ratio = 1.0 if self.penalty == "l1" else float(self.l1_ratio)
        return kw | {"C": self.C, "l1_ratio": ratio, "solver": "saga"}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit on a DataFrame with the schema's columns (or a numeric array) and binary y.

        Returns
        -------
        self
        """
        Xdf, named, y, classes = fit_frame(self, X, y)
        schema = fitted_schema(self, Xdf)
        Z = schema.transform(Xdf)
        kw = self._solver_kwargs()
        lr = LogisticRegression(**kw).fit(Z, y)
        coef, b = lr.coef_.ravel().astype(float), float(lr.intercept_[0])
        std = corr = None
        if self.penalty in ("l2", None):
            sw = None
            if self.class_weight is not None:
                from sklearn.utils.class_weight import compute_sample_weight

                sw = compute_sample_weight(self.class_weight, y)
            y01 = (y == classes[1]).astype(float)
            cov = laplace_covariance(Z, y01, coef, b, kw["C"], sw)
            log_odds = Z @ coef + b
            n_sure = int(np.sum(np.abs(log_odds) > SURE_LOG_ODDS))
            if self.penalty is None and separates(log_odds, y01):
                warnings.warn(
                    "the rows separate the classes completely (every positive row has higher "
                    "log-odds than every negative one), so the unpenalised coefficients run off "
                    "towards infinity: their values and odds ratios are arbitrary and have no "
                    "interval (params.std is None); fit with penalty='l2'",
                    DataWarning,
                    stacklevel=user_stacklevel(),
                )
                cov = None
            elif self.penalty is None and n_sure:  # as R's glm warns: probabilities 0 or 1
                warnings.warn(
                    f"the unpenalised fit gives {n_sure} of {len(y01)} row(s) a probability "
                    "within 1e-8 of 0 or 1: the rows nearly separate the classes (quasi-complete "
                    "separation), so some coefficients run off towards infinity and their odds "
                    "ratios and intervals say little; fit with penalty='l2'",
                    DataWarning,
                    stacklevel=user_stacklevel(),
                )
            if cov is not None:
                std, corr = std_and_correlation(cov)
        meta = fit_metadata(self, y, classes) | {
            "penalty": self.penalty,
            "C": float(self.C),
            "solver": kw["solver"],
            "n_iter": int(np.max(lr.n_iter_)),
        }
        if self.penalty == "elasticnet":
            meta["l1_ratio"] = float(self.l1_ratio)
        if self.class_weight is not None:
            meta["class_weight"] = (
                self.class_weight
                if isinstance(self.class_weight, str)
                else {str(json_label(k)): float(v) for k, v in self.class_weight.items()}
            )
        if std is not None:
            meta["std_method"] = "laplace"
        if const := constant_terms(schema.design_names, Z):
            meta["constant_terms"] = const
        params = ModelParams(
            "logistic",
            schema,
            np.concatenate([[b], coef]),
            std=std,
            metadata=meta,
            correlation=corr,
        )
        set_fitted(self, params, classes, named=named)
        self.n_iter_ = np.asarray(lr.n_iter_)
        return self

    # ------------------------------------------------------------------ fitted state
    @property
    def coef_(self) -> np.ndarray:
        check_is_fitted(self, "params_")
        return self.params_.terms.reshape(1, -1).copy()

    @property
    def intercept_(self) -> np.ndarray:
        check_is_fitted(self, "params_")
        return np.array([self.params_.intercept])

    # ------------------------------------------------------------------ tables
    def coefficients(self, scale: str = "standardised") -> pd.DataFrame:
        """Coefficient table, one row per term (intercept first).

        Parameters
        ----------
        scale : "standardised" (per SD of continuous features; the model's own scale) or
            "original" (per unit of each continuous feature, with the odds ratio per unit
            and per SD). Binary, one-hot and missing-indicator terms are the same on both.

        Returns
        -------
        DataFrame with columns term, feature, role, unit (the raw unit of a continuous
        feature's value term, "" for every indicator: binary, one-hot and missing-value
        terms are 0→1 changes), coef (the model's own parameter: log-odds = intercept +
        sum of coef × value, so for a categorical level its one-hot coefficient),
        coef_vs_reference (the effect the odds ratio describes: coef, except for a
        categorical level or a categorical feature's missing indicator, where it is the
        difference from the reference level, as ``explain().table()`` reports it; NaN when
        the rows cannot estimate it: a level, or the reference level, no patient had),
        odds_ratio (exp(coef_vs_reference)). For the intercept, coef_vs_reference is the
        log-odds of the reference patient the other rows compare with (every categorical
        feature at its reference level, binary features at 0, continuous ones at their mean,
        none missing: :meth:`ragim.explain.GlobalExplanation.reference_intercept`, what
        ``explain()`` and ``ragim explain`` print) and odds_ratio that patient's odds, on
        both scales. Then sd,
        odds_ratio_per_sd on the original scale; std, ci_low, ci_high (a 95% normal
        interval of coef, the parameter) and or_ci_low, or_ci_high (the 95% interval of
        odds_ratio: exp of coef_vs_reference ± 1.96 times its SD, that of the difference from
        the reference level for a level, :func:`~ragim.models.logistic_family.term_effects`;
        1 to 1 for the reference level, NaN when the effect is not estimable) when the
        parameters carry a std. For a categorical level ci_low / ci_high describe the one-hot
        coefficient, not the odds ratio beside it: take the odds ratio's interval from
        or_ci_low / or_ci_high.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> X = pd.DataFrame({"age": np.linspace(30, 80, 40)}); y = np.arange(40) % 3 == 0
        >>> m = LogisticModel().fit(X, y)
        >>> t = m.coefficients("original")
        >>> bool(np.isclose(t.loc[1, "odds_ratio_per_sd"], np.exp(m.coef_[0, 0])))
        True
        """
        if scale == "standardized":
            scale = "standardised"
        if scale not in ("standardised", "original"):
            raise ValidationError(f"scale must be 'standardised' or 'original', got {scale!r}")
        p = self.to_params()
        schema = p.schema
        cols = schema.design_columns
        coef = p.terms.copy()
        std = None if p.std is None else p.std.copy()
        is_cont = np.array(
            [c.role == "value" and schema[c.feature].type == "continuous" for c in cols], bool
        )
        rows = [{"term": "intercept", "feature": "", "role": "intercept", "unit": ""}]
        rows += [
            {
                "term": c.name,
                "feature": c.feature,
                "role": c.role,
                "unit": schema[c.feature].unit if cont else "",
            }
            for c, cont in zip(cols, is_cont, strict=True)
        ]
        table = pd.DataFrame(rows)
        values = np.concatenate([[p.intercept], coef])
        effects = term_effects(p)
        effect = effects["coef"].to_numpy(float)
        effect_std = effects["std"].to_numpy(float)
        if scale == "original":
            sd = np.array([c.scale for c in cols])
            center = np.array([c.center for c in cols])
            per_unit = np.where(is_cont, coef / sd, coef)
            b0 = p.intercept - float(np.sum(np.where(is_cont, coef * center / sd, 0.0)))
            values = np.concatenate([[b0], per_unit])
            effect = np.where(is_cont, effect / sd, effect)
            effect_std = np.where(is_cont, effect_std / sd, effect_std)
            table["sd"] = np.concatenate([[np.nan], np.where(is_cont, sd, np.nan)])
            table["odds_ratio_per_sd"] = np.concatenate(
                [[np.nan], np.where(is_cont, np.exp(coef), np.nan)]
            )
            if std is not None:
                std = np.concatenate([[np.nan], np.where(is_cont, std[1:] / sd, std[1:])])
        # the intercept's effect is the reference patient's log-odds, which the other rows
        # compare with (the parameter itself is a patient with no categorical level at all,
        # and on the original scale one whose every continuous value is 0)
        ref_value, ref_sd, _ = LogisticFamily().reference_intercept(p)
        effect = np.concatenate([[ref_value], effect])
        # the odds ratio's own interval: of the effect (a level against its reference level),
        # not of the parameter
        effect_std = np.concatenate([[ref_sd], effect_std])
        table.insert(4, "coef", values)
        table.insert(5, "coef_vs_reference", effect)
        with np.errstate(over="ignore"):
            table.insert(6, "odds_ratio", np.exp(effect))
        if std is not None:
            table["std"] = std
            table["ci_low"] = values - Z95 * std
            table["ci_high"] = values + Z95 * std
            with np.errstate(over="ignore"):
                table["or_ci_low"] = np.exp(effect - Z95 * effect_std)
                table["or_ci_high"] = np.exp(effect + Z95 * effect_std)
        return table


register_model_family("logistic", LogisticModel, family=LogisticFamily())
