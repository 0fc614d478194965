"""ZeroShotClassifier: a scikit-learn classifier built from an index, a generator and a description.

With no labels, ``fit()`` generates the task's model zero-shot. With k labelled
rows it adapts: a MAP logistic regression (or GAM on the shared bins) whose
Gaussian prior is centred on the generated parameters,

    minimise  sum_i logloss(y_i, theta)  +  lambda/2 ||theta_terms - theta0_terms||^2
                                          +  lambda * r/2 (theta_0 - theta0_0)^2,

where ``r`` (``intercept_prior_ratio``) lets the intercept move more freely than
the coefficients (prevalence differs a lot between hospitals). The prior
strength ``lambda`` is chosen by the Laplace-approximated evidence (the default,
``prior_strength="evidence"``), by cross-validation (``"cv"``), or given.

Without an index the prior is centred at zero, which makes the estimator a
penalised logistic regression with an evidence-chosen penalty.

Examples
--------
>>> import numpy as np
>>> from ragim import ZeroShotClassifier
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(40, 3)); y = (X[:, 0] + rng.normal(size=40) > 0).astype(int)
>>> clf = ZeroShotClassifier().fit(X, y)
>>> clf.predict_proba(X).shape
(40, 2)
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ragim.errors import ValidationError
from ragim.params import ModelParams, design_matrix
from ragim.schema import FeatureSchema

LAMBDA_GRID = np.logspace(-2, 3, 21)


def map_logistic(D: np.ndarray, y: np.ndarray, theta0: np.ndarray, lam: float, intercept_ratio: float = 0.1,
                 max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method for the MAP logistic regression above; returns (theta, Hessian).

    Examples
    --------
    >>> D = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> theta, H = map_logistic(D, y, np.zeros(2), lam=1.0)
    >>> bool(theta[1] > 0)
    True
    """
    n, d = D.shape
    A = np.hstack([np.ones((n, 1)), D])
    prec = np.full(d + 1, float(lam))
    prec[0] = lam * intercept_ratio
    theta = theta0.astype(float).copy()
    for _ in range(max_iter):
        z = A @ theta
        p = 1.0 / (1.0 + np.exp(-z))
        grad = A.T @ (p - y) + prec * (theta - theta0)
        H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(prec)
        step = np.linalg.solve(H, grad)
        theta = theta - step
        if np.max(np.abs(step)) < tol:
            break
    z = A @ theta
    p = 1.0 / (1.0 + np.exp(-z))
    H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(prec)
    return theta, H


def _log_evidence(D, y, theta0, lam, ratio) -> float:
    theta, H = map_logistic(D, y, theta0, lam, ratio)
    z = np.hstack([np.ones((len(D), 1)), D]) @ theta
    loglik = float(np.sum(y * z - np.logaddexp(0, z)))
    prec = np.full(len(theta), lam)
    prec[0] = lam * ratio
    prior = -0.5 * float(np.sum(prec * (theta - theta0) ** 2)) + 0.5 * float(np.sum(np.log(prec)))
    _, logdet = np.linalg.slogdet(H)
    return loglik + prior - 0.5 * logdet


def _cv_loss(D, y, theta0, lam, ratio, folds: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), int)
    for cls in (0, 1):
        idx = np.where(y == cls)[0]
        rng.shuffle(idx)
        fold_of[idx] = np.arange(len(idx)) % folds
    loss = 0.0
    for f in range(folds):
        tr, te = fold_of != f, fold_of == f
        if not te.any() or not tr.any():
            continue
        theta, _ = map_logistic(D[tr], y[tr], theta0, lam, ratio)
        z = theta[0] + D[te] @ theta[1:]
        loss += float(np.sum(np.logaddexp(0, z) - y[te] * z))
    return loss


class ZeroShotClassifier(ClassifierMixin, BaseEstimator):
    """Zero-shot (no labels) or few-shot (k labels) interpretable classifier; see module docstring.

    Parameters
    ----------
    index : a :class:`~ragim.TaskIndex`, or None (prior centred at zero).
    generator : a fitted generator (``AttentionGenerator``, ``LMGenerator``); None uses the
        similarity-weighted mean of the neighbours' parameters.
    description : the target task's clinical description (needed with an index).
    k : neighbours to retrieve (None: the generator's default, else 10).
    prior_strength : "evidence", "cv", or a positive number (lambda).
    intercept_prior_ratio : the intercept's prior precision relative to the coefficients'.
    exclude : task ids or a predicate excluded from retrieval (see :meth:`TaskIndex.search`).
    """

    _parameter_constraints = {
        "index": "no_validation",
        "generator": "no_validation",
        "description": [None, str],
        "k": [None, Interval(Integral, 1, None, closed="left")],
        "prior_strength": [StrOptions({"evidence", "cv"}), Interval(Real, 0, None, closed="neither")],
        "intercept_prior_ratio": [Interval(Real, 0, None, closed="neither")],
        "exclude": "no_validation",
    }

    def __init__(self, index=None, generator=None, description=None, k=None, prior_strength="evidence",
                 intercept_prior_ratio=0.1, exclude=None):
        self.index = index
        self.generator = generator
        self.description = description
        self.k = k
        self.prior_strength = prior_strength
        self.intercept_prior_ratio = intercept_prior_ratio
        self.exclude = exclude

    def __sklearn_clone__(self):
        # the index and generator are shared, read-only resources: never deep-copy them
        return type(self)(**self.get_params(deep=False))

    # ------------------------------------------------------------------ helpers
    def _as_frame(self, X, schema: FeatureSchema | None) -> pd.DataFrame:
        if isinstance(X, pd.DataFrame):
            return X
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise ValidationError(f"X must be 2-D (rows, features), got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise ValidationError(f"X must be numeric, got dtype {arr.dtype}")
        names = schema.names if schema is not None else [f"x{j}" for j in range(arr.shape[1])]
        if len(names) != arr.shape[1]:
            raise ValidationError(f"X has {arr.shape[1]} columns but the schema has {len(names)} features: {names}")
        return pd.DataFrame(arr, columns=names)

    def _prior(self, X_frame: pd.DataFrame | None) -> ModelParams:
        if self.index is None:
            if X_frame is None:
                raise ValidationError("without an index, fit() needs labelled rows X and y")
            schema = FeatureSchema.infer(X_frame).fit(X_frame)
            return ModelParams.zeros("logistic", schema, metadata={"source": "zero-prior"})
        if not self.description or not str(self.description).strip():
            raise ValidationError("ZeroShotClassifier needs a task description when an index is given")
        if self.generator is not None:
            return self.generator.generate_params(self.description, self.index, k=self.k, exclude=self.exclude)
        return neighbor_mean(self.index, self.description, k=self.k or 10, exclude=self.exclude)

    # ------------------------------------------------------------------ sklearn API
    def fit(self, X=None, y=None):
        """Generate the prior model; with labelled rows, adapt it (MAP)."""
        self._validate_params()
        schema = None if self.index is None else self.index.schema
        frame = None if X is None else self._as_frame(X, schema)
        prior = self._prior(frame)
        self.prior_params_ = prior
        self.schema_ = prior.schema
        if y is None:
            if X is not None and self.index is None:
                raise ValidationError("y is required when X is given without an index")
            self.classes_ = np.array([0, 1])
            self.params_ = prior
            self.prior_strength_ = None
            self._set_features(frame)
            return self
        y = np.asarray(y)
        if frame is None or len(frame) != len(y):
            raise ValidationError("X and y must both be given, with the same number of rows")
        if y.ndim != 1:
            raise ValidationError(f"y must be one-dimensional, got shape {y.shape}")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise ValidationError("y contains NaN or infinite values")
        classes = np.unique(y)
        if len(classes) > 2:
            raise ValidationError(f"y must be binary; found {len(classes)} classes: {classes[:5].tolist()}")
        if len(classes) == 1 and self.index is None:
            raise ValidationError(f"y has only one class ({classes[0]!r}); few-shot adaptation without an index needs both classes")
        self.classes_ = classes if len(classes) == 2 else np.array([0, 1])
        y01 = (y == self.classes_[1]).astype(float)
        D = design_matrix(prior.kind, prior.schema, frame)
        if not np.all(np.isfinite(D)):
            raise ValidationError("X contains values that could not be turned into finite features")
        lam = self._choose_lambda(D, y01, prior.vector)
        theta, H = map_logistic(D, y01, prior.vector, lam, self.intercept_prior_ratio)
        std = np.sqrt(np.clip(np.diag(np.linalg.inv(H)), 0, None))
        self.prior_strength_ = lam
        self.params_ = prior.replace(vector=theta, std=std, metadata={
            "source": "adapted", "k_shot": int(len(y)), "prior_strength": float(lam),
            "prior_source": prior.metadata.get("source")})
        self._set_features(frame)
        return self

    def _set_features(self, frame):
        self.n_features_in_ = len(self.schema_.names)
        if frame is not None and not all(isinstance(c, str) and c.startswith("x") for c in frame.columns[:1]):
            self.feature_names_in_ = np.asarray(frame.columns, dtype=object)

    def _choose_lambda(self, D, y, theta0) -> float:
        ps, ratio = self.prior_strength, self.intercept_prior_ratio
        if not isinstance(ps, str):
            return float(ps)
        if ps == "evidence":
            scores = [_log_evidence(D, y, theta0, lam, ratio) for lam in LAMBDA_GRID]
            return float(LAMBDA_GRID[int(np.argmax(scores))])
        folds = int(min(5, max(2, min(np.sum(y), np.sum(1 - y)))))
        losses = [_cv_loss(D, y, theta0, lam, ratio, folds, 0) for lam in LAMBDA_GRID]
        return float(LAMBDA_GRID[int(np.argmin(losses))])

    def decision_function(self, X):
        check_is_fitted(self, "params_")
        frame = self._as_frame(X, self.schema_)
        D = design_matrix(self.params_.kind, self.schema_, frame)
        return self.params_.intercept + D @ self.params_.terms

    def predict_proba(self, X):
        z = self.decision_function(X)
        p1 = 1.0 / (1.0 + np.exp(-z))
        return np.column_stack([1 - p1, p1])

    def predict(self, X):
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    @property
    def model_(self):
        """The fitted parameters as a LogisticModel or GAMModel (for explanations)."""
        from ragim.models import model_from_params

        check_is_fitted(self, "params_")
        return model_from_params(self.params_)

    def explain(self, X_row=None):
        return self.model_.explain(X_row)

    @property
    def provenance(self) -> list[dict]:
        check_is_fitted(self, "params_")
        return list(self.prior_params_.metadata.get("provenance", []))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def neighbor_mean(index, description: str, *, k: int = 10, exclude=None) -> ModelParams:
    """The similarity-weighted mean of the top-k neighbours' parameters (weights ∝ max(sim, 0))."""
    from ragim.generate.base import provenance_records

    hits = index.search(description, k, exclude=exclude)
    if not hits:
        raise ValidationError("no neighbours found; the index is empty after exclusions")
    sims = np.array([max(h.score, 0.0) for h in hits])
    w = sims / sims.sum() if sims.sum() > 0 else np.full(len(hits), 1 / len(hits))
    vec = np.sum([wi * h.params.vector for wi, h in zip(w, hits, strict=True)], axis=0)
    return ModelParams(index.model, index.schema, vec, metadata={
        "source": "neighbor-mean", "provenance": provenance_records(hits, w)})
