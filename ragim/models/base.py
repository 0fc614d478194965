"""Shared machinery of ragim's interpretable estimators and the model-family registry.

:class:`InterpretableModel` is a mixin for scikit-learn classifiers whose whole
fitted state is one :class:`~ragim.params.ModelParams` (``params_``). It provides
input validation against the fitted :class:`~ragim.schema.FeatureSchema`,
``decision_function`` / ``predict_proba`` / ``predict`` computed from the
parameters, ``to_params`` / ``from_params``, ``explain`` and ``provenance``.

Model families register themselves by name, as peft registers its methods: the estimator
class, and the :class:`~ragim.models.family.ModelFamily` object that owns the family's
parameter layout, design, explanations and prompt text::

    register_model_family("logistic", LogisticModel, family=LogisticFamily())

Examples
--------
>>> from ragim.models import MODEL_FAMILIES
>>> sorted(MODEL_FAMILIES)
['gam', 'logistic']
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit, log_expit
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ragim.canonical import two_labels_spelt_apart
from ragim.checks import check_aligned_labels
from ragim.errors import ValidationError
from ragim.models.family import (
    FAMILIES,
    ModelFamily,
    constant_terms,
    family_of,
    load_plugin_families,
    register_family,
)
from ragim.params import ModelParams
from ragim.schema import FeatureSchema

MODEL_FAMILIES: dict[str, type] = {}


def register_model_family(
    name: str,
    model_cls: type | None = None,
    *,
    family: ModelFamily | None = None,
    overwrite: bool = False,
):
    """Register an estimator class under a family name (usable as a decorator).

    The class must provide ``fit``, ``to_params`` and a ``from_params`` classmethod: subclass
    :class:`InterpretableModel` (with scikit-learn's ``ClassifierMixin, BaseEstimator``),
    whose ``fit`` builds the family's ``ModelParams`` with :func:`fit_frame`,
    :func:`fitted_schema`, :func:`fit_metadata` and :func:`set_fitted`; the rest is inherited.
    ``family`` (a :class:`~ragim.models.family.ModelFamily` whose ``name`` is ``name``) is
    registered at once and learns the class as its ``model_cls``; without one, a family
    already registered under ``name`` keeps its behaviour and takes the new class. An
    :class:`InterpretableModel` subclass that names no family (``_kind``) takes ``name``.

    Raises
    ------
    ValidationError
        For an empty name, an instance instead of a class, a class without those methods or
        that writes another family's parameters, a family of another name, a non-boolean
        ``overwrite``, or a name already taken by another class or family (unless
        ``overwrite=True``).

    Examples
    --------
    >>> from ragim.models import LogisticModel
    >>> register_model_family("logistic", LogisticModel, overwrite=True) is LogisticModel
    True
    """
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"a model family needs a non-empty name, got {name!r}")
    if family is not None and (not isinstance(family, ModelFamily) or family.name != name):
        raise ValidationError(f"family= must be a ModelFamily named {name!r}, got {family!r}")

    if not isinstance(overwrite, bool):
        raise ValidationError(f"overwrite must be True or False, got {overwrite!r}")
    if family is not None and model_cls is None:
        register_family(family, overwrite=overwrite)  # known before the decorator gets the class

    def _register(cls: type) -> type:
        if not isinstance(cls, type):
            raise ValidationError(
                f"register_model_family({name!r}, ...) needs the estimator class, got an instance "
                f"of {type(cls).__name__}"
            )
        missing = [
            m for m in ("fit", "to_params", "from_params") if not callable(getattr(cls, m, None))
        ]
        if missing:
            raise ValidationError(
                f"cannot register {cls!r} as model family {name!r}: it has no {missing}"
            )
        if name in MODEL_FAMILIES and MODEL_FAMILIES[name] is not cls and not overwrite:
            raise ValidationError(
                f"model family {name!r} is already registered to {MODEL_FAMILIES[name].__name__}; "
                "pass overwrite=True to replace it"
            )
        if issubclass(cls, InterpretableModel):
            if not cls._kind:
                cls._kind = name  # the parameters it writes and reads are of this family
            elif cls._kind != name:
                raise ValidationError(
                    f"{cls.__name__} writes {cls._kind!r} parameters; it cannot be registered as "
                    f"model family {name!r}"
                )
        if family is not None:
            register_family(family, overwrite=overwrite)
        if name in FAMILIES:
            FAMILIES[name].model_cls = cls
        MODEL_FAMILIES[name] = cls
        return cls

    return _register if model_cls is None else _register(model_cls)


def get_model_family(model: str | type) -> type:
    """The estimator class for a family name (or the class itself)."""
    if isinstance(model, type):
        return model
    if model not in MODEL_FAMILIES and isinstance(model, str):
        load_plugin_families()
    if model not in MODEL_FAMILIES:
        if model in FAMILIES:
            raise ValidationError(
                f"model family {model!r} has no estimator class; register one with "
                f"register_model_family({model!r}, YourModel, family=...)"
            )
        raise ValidationError(
            f"unknown model family {model!r}; registered: {sorted(MODEL_FAMILIES)} (import the "
            "module that registers a custom family first)"
        )
    return MODEL_FAMILIES[model]


def model_from_params(params: ModelParams) -> InterpretableModel:
    """A ready (fitted) estimator of the right family for some parameters.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
    >>> p = ModelParams.from_dict("logistic", FeatureSchema.infer(X).fit(X),
    ...                           {"intercept": 0.0, "age": 1.0})
    >>> type(model_from_params(p)).__name__
    'LogisticModel'
    """
    if not isinstance(params, ModelParams):
        raise ValidationError(f"model_from_params needs ModelParams, got {type(params).__name__}")
    if params.kind not in MODEL_FAMILIES:
        load_plugin_families()  # a family an installed package declares
    cls = MODEL_FAMILIES.get(params.kind)
    if cls is None:
        cls = next(
            (c for c in MODEL_FAMILIES.values() if getattr(c, "_kind", None) == params.kind), None
        )
    if cls is None:
        raise ValidationError(f"no registered model family handles {params.kind!r} parameters")
    return cls.from_params(params)


def json_label(c: Any) -> Any:
    """A class label as a JSON-safe value (numpy scalars as Python, other objects as text)."""
    if isinstance(c, np.generic):
        c = c.item()
    return c if isinstance(c, str | bool | numbers.Integral | float) else str(c)


def check_binary_targets(
    y: Any, n_rows: int, name: str, *, allow_single_class: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validate binary labels for an estimator called ``name``; returns (y, classes).

    Messages follow scikit-learn's wording where its estimator checks expect it.
    """
    try:
        y = column_or_1d(y, warn=True)
    except ValueError as exc:
        raise ValidationError(f"y must be one-dimensional: {exc}") from exc
    if y.shape[0] != n_rows:
        raise ValidationError(f"X has {n_rows} rows but y has {y.shape[0]} labels; they must match")
    n_nan = int(pd.isna(y).sum()) if y.dtype.kind in "fcO" else 0
    if n_nan:
        raise ValidationError(
            f"y has {n_nan} missing (NaN) labels; drop those rows or fill the labels"
        )
    if y.dtype.kind == "O":
        kinds = {"text" if isinstance(v, str) else "number" for v in y.tolist()}
        if len(kinds) > 1:  # numpy cannot sort them; scikit-learn's metrics refuse them
            seen = sorted({json_label(v) for v in y.tolist()}, key=str)[:5]
            raise ValidationError(
                f"y mixes text and number labels ({seen}); write every label the same way"
            )
    try:
        check_classification_targets(y)
    except ValueError as exc:
        raise ValidationError(f"{exc} {name} needs binary labels.") from exc
    classes = np.unique(y)
    if len(classes) < 2 and not allow_single_class:
        raise ValidationError(
            f"y has only one class ({json_label(classes[0])!r}); {name} needs examples of "
            "both classes to fit"
        )
    if len(classes) > 2:
        if shown := two_labels_spelt_apart(classes):
            raise ValidationError(
                f"y holds {len(classes)} labels but they are 2 written in several ways "
                f"({shown}: letter case, spaces or number format); write each label one way "
                "before fitting"
            )
        raise ValidationError(
            f"Only binary classification is supported. The type of the target is "
            f"{type_of_target(y)} ({len(classes)} classes: "
            f"{[json_label(c) for c in classes[:5]]}); {name} predicts one "
            "binary outcome, so fit one model per outcome"
        )
    return y, classes


class BinaryClassifierTags:
    """scikit-learn tags shared by ragim's classifiers (:class:`InterpretableModel`,
    :class:`~ragim.ZeroShotClassifier`): missing values are allowed, since the schema handles
    them, and the targets are binary. Put it before scikit-learn's mixins in the bases."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are handled by the schema
        tags.classifier_tags.multi_class = False
        return tags

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy on ``(X, y)``, as scikit-learn's; a pandas ``y`` whose index holds
        ``X``'s row labels in another order is refused (:func:`ragim.checks.check_aligned_labels`),
        since rows pair by position."""
        check_aligned_labels(X, y)
        return super().score(X, y, sample_weight=sample_weight)


class InterpretableModel(BinaryClassifierTags):
    """Mixin: a binary classifier whose fitted state is ``params_`` (a ModelParams).

    Subclasses fit ``params_`` (with :func:`fit_frame`, :func:`fitted_schema`,
    :func:`fit_metadata` and :func:`set_fitted`); predictions are the parameters' log-odds
    (:meth:`ragim.params.ModelParams.log_odds`). ``_kind``, their family's name, is set by
    :func:`register_model_family`. A subclass without scikit-learn parameter constraints of
    its own (``_parameter_constraints``) has its constructor arguments unchecked.
    """

    _kind: ClassVar[str] = ""
    _parameter_constraints: ClassVar[dict] = {}  # scikit-learn's; a family may declare its own

    # ------------------------------------------------------------------ input handling
    def _check_targets(self, y: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        return check_binary_targets(y, n_rows, type(self).__name__)

    def _predict_frame(self, X: Any) -> pd.DataFrame:
        """X as a DataFrame over the schema's columns (validated later by the schema)."""
        check_is_fitted(self, "params_")
        names = self.schema_.names
        if isinstance(X, pd.DataFrame):
            cols = [str(c) for c in X.columns]
            if hasattr(self, "feature_names_in_") or cols == names:
                return X.set_axis(cols, axis=1)
        try:
            arr = validate_data(self, X, reset=False, dtype=None, ensure_all_finite=False)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        return pd.DataFrame(arr, columns=names)

    # ------------------------------------------------------------------ predictions
    def _decision_from_frame(self, X: pd.DataFrame) -> np.ndarray:
        """Log-odds of the second class for a validated frame, shape (n_rows,)."""
        return self.params_.log_odds(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of the second class (``classes_[1]``), shape (n_rows,).

        Warns (:class:`~ragim.errors.DataWarning`) about categorical levels the model does not
        know, about continuous values far from those it was fitted on (a wrong unit), about
        missing-value codes (-9, 999) outside the range it was fitted on, and about
        blanks in columns that were never missing when it was fitted (filled in)."""
        frame = self._predict_frame(X)
        self.schema_.warn_new_rows(frame)
        return self._decision_from_frame(frame)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_rows, 2), columns in ``classes_`` order."""
        p1 = expit(self.decision_function(X))
        return np.column_stack([1.0 - p1, p1])

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log class probabilities, shape (n_rows, 2)."""
        z = self.decision_function(X)
        return np.column_stack([log_expit(-z), log_expit(z)])

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (``classes_[1]`` where the log-odds are positive)."""
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]

    def check_params(self) -> None:
        """Check the constructor arguments against the family's ``_parameter_constraints``
        without fitting (``fit`` runs the same check first).

        Raises
        ------
        ValueError or TypeError
            scikit-learn's ``InvalidParameterError`` naming the bad argument.

        Examples
        --------
        >>> from ragim.models import LogisticModel
        >>> LogisticModel(C=-1.0).check_params()  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        sklearn.utils._param_validation.InvalidParameterError: The 'C' parameter of LogisticModel
        must be a float in the range (0.0, inf). Got -1.0 instead.
        """
        self._validate_params()

    # ------------------------------------------------------------------ parameters
    def to_params(self) -> ModelParams:
        """The fitted parameters (a copy), with metadata, std and provenance."""
        check_is_fitted(self, "params_")
        return self.params_.replace()

    @classmethod
    def from_params(cls, params: ModelParams | Mapping[str, Any]):
        """A fitted model that predicts from ``params`` alone (no data needed).

        ``params`` may also be a payload dict as written by ``ModelParams.to_dict()``.
        ``classes_`` come from ``params.metadata["classes"]`` when present, else [0, 1].
        """
        if isinstance(params, Mapping):
            params = ModelParams.from_payload(params)
        if not isinstance(params, ModelParams):
            raise ValidationError(
                f"{cls.__name__}.from_params needs ModelParams, got {type(params).__name__}"
            )
        if params.kind != cls._kind:
            raise ValidationError(
                f"{cls.__name__}.from_params needs {cls._kind!r} parameters, got {params.kind!r}; "
                "use ragim.models.model_from_params(params) to pick the family"
            )
        classes = params.metadata.get("classes")
        if not (
            isinstance(classes, list | tuple) and len(classes) == 2 and classes[0] != classes[1]
        ):
            classes = [0, 1]
        model = cls(schema=params.schema)
        set_fitted(model, params, classes, named=True)
        return model

    def explain(self, X_row: Any = None, *, outcome: str | None = None):
        """An explanation of the model (global) or of one patient's risk (``X_row``);
        ``outcome`` names what the model predicts, for titles (see
        :func:`ragim.explain.explain_params`)."""
        from ragim.explain import explain_params

        return explain_params(self.to_params(), X_row, outcome=outcome)

    @property
    def provenance(self) -> list:
        """The neighbours a generated model was made from (empty for a fitted model)."""
        check_is_fitted(self, "params_")
        return list(self.params_.metadata.get("provenance", []))


def fit_frame(
    estimator: InterpretableModel, X: Any, y: Any
) -> tuple[pd.DataFrame, bool, np.ndarray, np.ndarray]:
    """An estimator's ``fit`` input, checked: ``(X as a DataFrame, whether X had column names,
    y as an array (n_rows,), classes (2,))``. A family's estimator calls it first (see
    :func:`register_model_family`).

    Raises
    ------
    ValidationError
        Zero rows, labels misaligned with ``X``, or labels that are not two classes.
    ValueError
        ``y`` is None (scikit-learn's message).
    """
    if y is None:
        raise ValueError(
            f"{type(estimator).__name__} requires y to be passed, but the target y is None"
        )
    check_aligned_labels(X, y)
    if isinstance(X, pd.DataFrame):
        Xdf = X.set_axis([str(c) for c in X.columns], axis=1)
        named = True
    else:
        try:
            arr = validate_data(estimator, X, dtype="numeric", ensure_all_finite="allow-nan")
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        given = getattr(estimator, "schema", None)
        cols = (
            given.names
            if given is not None and len(given.names) == arr.shape[1]
            else [f"x{j}" for j in range(arr.shape[1])]
        )
        Xdf, named = pd.DataFrame(arr, columns=cols), False
    if len(Xdf) == 0:
        raise ValidationError(f"{type(estimator).__name__} cannot be fitted on zero rows")
    y, classes = estimator._check_targets(y, len(Xdf))
    return Xdf, named, y, classes


def fitted_schema(
    estimator: InterpretableModel, X: pd.DataFrame, n_bins: int | None = None
) -> FeatureSchema:
    """The schema an estimator fits with: the one given to its constructor (``schema``,
    fitted on a copy when needed), or one inferred from ``X`` (``n_bins`` bins per continuous
    feature when given)."""
    if estimator.schema is None:
        kw = {} if n_bins is None else {"n_bins": int(n_bins)}
        return FeatureSchema.infer(X, **kw).fit(X)
    if not estimator.schema.is_fitted:
        return estimator.schema.copy().fit(X)
    return estimator.schema


def set_fitted(
    estimator: InterpretableModel,
    params: ModelParams,
    classes: Any,
    *,
    named: bool,
    X: pd.DataFrame | None = None,
) -> None:
    """Make ``estimator`` fitted with ``params``: ``params_``, ``schema_``, ``classes_`` and
    scikit-learn's ``n_features_in_`` (and ``feature_names_in_`` when it was fitted on named
    columns, ``named``). A family's estimator calls it last in ``fit``, with ``X``, the rows
    it was fitted on: the terms that never vary in them (:func:`constant_terms` of the family's
    design matrix) are then recorded in ``metadata["constant_terms"]``, unless the fit
    recorded its own, so that explanations mark their effects not estimable instead of
    showing a number the data could not give."""
    if X is not None and "constant_terms" not in params.metadata:
        design = family_of(params.kind).design_matrix(params.schema, X)
        if const := constant_terms(params.names[1:], design):
            params = params.replace(metadata={"constant_terms": const})
    estimator.params_ = params
    estimator.schema_ = params.schema
    estimator.classes_ = np.asarray(classes)
    estimator.n_features_in_ = len(params.schema.names)
    if named:
        estimator.feature_names_in_ = np.asarray(params.schema.names, dtype=object)
    elif hasattr(estimator, "feature_names_in_"):
        del estimator.feature_names_in_


def fit_metadata(
    estimator: InterpretableModel, y: np.ndarray, classes: np.ndarray
) -> dict[str, Any]:
    """The ``ModelParams.metadata`` every fit records: ``source="fit"``, the estimator's class,
    ``n_rows``, ``n_positive``, ``prevalence`` and ``classes`` (JSON-safe)."""
    n1 = int(np.sum(y == classes[1]))
    return {
        "source": "fit",
        "model": type(estimator).__name__,
        "n_rows": int(len(y)),
        "n_positive": n1,
        "prevalence": n1 / len(y),
        "classes": [json_label(c) for c in classes],
    }
