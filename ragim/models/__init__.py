"""Interpretable per-task models: scikit-learn estimators over a shared FeatureSchema.

* :class:`LogisticModel` — penalised logistic regression on the standardised design;
* :class:`GAMModel` — an explainable boosting GAM on the schema's shared bins;
* :func:`fit_many` — one model per task for many tasks (batched or joblib);
* :func:`fit_schema` — the shared schema :func:`fit_many` fits by default;
* :func:`model_from_params` — a ready model from any :class:`~ragim.params.ModelParams`;
* :func:`register_model_family` / ``MODEL_FAMILIES`` — the family registry (name -> class);
* :class:`ModelFamily` (:class:`LogisticFamily`, :class:`GAMFamily`) / :func:`family_of` — a
  family's behaviour (parameter layout, design, explanations, prompt text) by name.

Examples
--------
>>> from ragim.models import LogisticModel, GAMModel, MODEL_FAMILIES
>>> MODEL_FAMILIES["gam"] is GAMModel
True
"""

from ragim.models.base import (
    MODEL_FAMILIES,
    InterpretableModel,
    fit_frame,
    fit_metadata,
    fitted_schema,
    get_model_family,
    model_from_params,
    register_model_family,
    set_fitted,
)
from ragim.models.family import (
    FAMILIES,
    ModelFamily,
    constant_terms,
    family_of,
    register_family,
)
from ragim.models.fit_many import FitResult, fit_many, fit_schema
from ragim.models.gam import GAMModel
from ragim.models.gam_family import GAMFamily
from ragim.models.logistic import LogisticModel
from ragim.models.logistic_family import LogisticFamily

__all__ = [
    "FAMILIES",
    "MODEL_FAMILIES",
    "FitResult",
    "GAMFamily",
    "GAMModel",
    "InterpretableModel",
    "constant_terms",
    "fit_frame",
    "fit_metadata",
    "fitted_schema",
    "set_fitted",
    "LogisticFamily",
    "LogisticModel",
    "ModelFamily",
    "family_of",
    "fit_many",
    "fit_schema",
    "get_model_family",
    "model_from_params",
    "register_family",
    "register_model_family",
]
