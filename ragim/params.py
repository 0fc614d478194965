"""ModelParams: the one object every stage of ragim shares.

A ``ModelParams`` is a name-keyed parameter vector over a fitted
:class:`~ragim.schema.FeatureSchema`:

* ``kind="logistic"``: ``["intercept", *schema.design_names]`` — coefficients on the
  standardised design scale;
* ``kind="gam"``: ``["intercept", *schema.gam_names]`` — one score (log-odds) per shared
  bin of every feature.

``kind`` names a registered model family (:func:`model_family`): the family object owns the
layout, the design matrix and the log-odds, so another registered family works here too.

It is what gets fitted, indexed, put in prompts, generated, rewarded and saved.
``std`` optionally carries a per-parameter uncertainty, and ``correlation`` the correlations
between the parameters' errors (one-hot levels of one feature are strongly correlated, so the
SD of a contrast between two levels is not that of independent parts:
:meth:`ModelParams.contrast_std`); ``metadata`` says where the
parameters came from (``source``: "fit", "generated", "true", ...) and, for generated
models, their ``provenance``.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from ragim.schema import FeatureSchema
>>> X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
>>> schema = FeatureSchema.infer(X).fit(X)
>>> p = ModelParams.from_dict("logistic", schema, {"intercept": -1.0, "age": 0.5})
>>> p["age"], p.names
(0.5, ['intercept', 'age'])
>>> ModelParams.from_json(p.to_json()) == p
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ragim.checks import check_int, check_loaded, check_number
from ragim.errors import ValidationError
from ragim.schema import FeatureSchema

FORMAT = "ragim.model-params"


def model_family(kind: str):
    """The registered :class:`~ragim.models.family.ModelFamily` of a kind ("logistic", ...).

    Raises
    ------
    ValidationError
        For a kind no family is registered under.

    Examples
    --------
    >>> model_family("gam").term_noun
    'bins'
    """
    from ragim.models.family import family_of  # at call time: models (the registry) import params

    return family_of(kind)


def param_names(kind: str, schema: FeatureSchema) -> list[str]:
    """The ordered parameter names of a model family over a fitted schema."""
    return model_family(kind).param_names(schema)


class ModelParams:
    """Name-keyed parameters of one interpretable model (see module docstring).

    Parameters
    ----------
    kind : a registered model family: "logistic", "gam", ...
    schema : the fitted schema the parameters are defined over.
    vector : values in the order of :func:`param_names`.
    std : optional per-parameter uncertainty (same shape, non-negative).
    metadata : JSON-safe dict (source, task_id, provenance, fit statistics, ...).
    correlation : optional correlation matrix of the parameters' errors, shape (P, P):
        symmetric, unit diagonal, entries in [-1, 1]; needs ``std`` (the covariance is
        ``correlation * outer(std, std)``). None: treat the errors as independent.

    Raises
    ------
    ValidationError
        If the schema is not fitted, a shape disagrees with the layout, a value is not
        finite, ``std`` is negative, or ``correlation`` is not a correlation matrix or comes
        without ``std``.
    """

    __slots__ = ("kind", "schema", "vector", "std", "metadata", "correlation")

    def __init__(
        self,
        kind: str,
        schema: FeatureSchema,
        vector: Any,
        *,
        std: Any = None,
        metadata: Mapping[str, Any] | None = None,
        correlation: Any = None,
    ):
        if not isinstance(schema, FeatureSchema) or not schema.is_fitted:
            raise ValidationError("ModelParams needs a fitted FeatureSchema")
        names = param_names(kind, schema)
        vec = _as_vector(vector, "parameters")
        if vec.shape[0] != len(names):
            raise ValidationError(
                f"{kind} parameters over this schema need {len(names)} values "
                f"(intercept + {len(names) - 1} terms), got {vec.shape[0]}"
            )
        bad = [names[i] for i in np.where(~np.isfinite(vec))[0][:10]]
        if bad:
            raise ValidationError(f"parameters must be finite; non-finite values for {bad}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationError(f"metadata must be a dict, got {type(metadata).__name__}")
        if std is not None:
            std = _as_vector(std, "std")
            if std.shape != vec.shape or not np.all(np.isfinite(std)) or np.any(std < 0):
                raise ValidationError(
                    "std must be finite, non-negative and the same length as the parameters"
                )
        if correlation is not None:
            correlation = _as_correlation(correlation, len(vec), std is not None)
        self.kind = kind
        self.schema = schema
        self.vector = vec
        self.std = std
        self.metadata = dict(metadata or {})
        self.correlation = correlation

    # ------------------------------------------------------------------ access
    @property
    def names(self) -> list[str]:
        return param_names(self.kind, self.schema)

    @property
    def intercept(self) -> float:
        return float(self.vector[0])

    @property
    def terms(self) -> np.ndarray:
        """All parameters but the intercept."""
        return self.vector[1:]

    def __getitem__(self, name: str) -> float:
        try:
            return float(self.vector[self.names.index(name)])
        except ValueError:
            raise KeyError(f"{name!r} is not a parameter of this {self.kind} model") from None

    def __len__(self) -> int:
        return self.vector.shape[0]

    def as_dict(self, decimals: int | None = None) -> dict[str, float]:
        vals = self.vector if decimals is None else np.round(self.vector, decimals)
        return {n: float(v) for n, v in zip(self.names, vals, strict=True)}

    def contrast_std(self, weights: Any) -> float:
        """The SD of the linear combination ``weights @ vector`` (a contrast between two levels
        of a feature, ``[0, ..., 1, ..., -1, ...]``), from ``std`` and ``correlation``: the
        errors are treated as independent when there is no ``correlation``. NaN without ``std``.

        Raises
        ------
        ValidationError
            If ``weights`` is not a finite vector of one number per parameter.

        Examples
        --------
        >>> import pandas as pd
        >>> X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
        >>> p = ModelParams("logistic", FeatureSchema.infer(X).fit(X), [-1.0, 0.5],
        ...                 std=[0.3, 0.4], correlation=[[1.0, 0.5], [0.5, 1.0]])
        >>> round(p.contrast_std([1.0, -1.0]), 4)  # sqrt(0.09 + 0.16 - 2 * 0.5 * 0.12)
        0.3606
        """
        w = np.asarray(weights, dtype=float) if np.ndim(weights) == 1 else np.zeros(0)
        if w.shape != self.vector.shape or not np.all(np.isfinite(w)):
            raise ValidationError(
                f"contrast_std needs {len(self)} finite weights (one per parameter), got "
                f"shape {np.shape(weights)}"
            )
        if self.std is None:
            return math.nan
        ws = w * self.std
        if self.correlation is None:
            return float(np.sqrt(ws @ ws))
        return float(np.sqrt(max(float(ws @ self.correlation @ ws), 0.0)))

    def feature_terms(self, feature: str) -> np.ndarray:
        """The GAM scores of one feature's bins (families with bins only)."""
        return model_family(self.kind).feature_terms(self, feature)

    def log_odds(self, X) -> np.ndarray:
        """Log-odds ``intercept + D @ terms`` of the rows of ``X``, shape (n_rows,).

        ``X`` is a DataFrame with the schema's features (``D`` is :func:`design_matrix`: the
        standardised design for logistic parameters; for a GAM each feature adds the score of
        the row's bin, 0 when the value has no bin). This is the one place predictions are
        computed from parameters; ``sigmoid(log_odds(X))`` is P(y=1).

        Examples
        --------
        >>> import pandas as pd
        >>> X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
        >>> p = ModelParams.from_dict("logistic", FeatureSchema.infer(X).fit(X),
        ...                           {"intercept": -1.0, "age": 0.5})
        >>> p.log_odds(X).round(3).tolist()
        [-1.612, -1.0, -0.388]
        """
        return model_family(self.kind).log_odds(self, X)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(
        cls,
        kind: str,
        schema: FeatureSchema,
        values: Mapping[str, float],
        *,
        std: Mapping[str, float] | None = None,
        metadata: Mapping[str, Any] | None = None,
        fill_missing: float | None = None,
    ) -> ModelParams:
        """Build from a name -> value mapping; missing or extra names raise unless
        ``fill_missing`` is given (then absent names take that value, and SD 0). ``std``, when
        given, must name the same parameters (a missing SD would read as an exact value)."""
        names = param_names(kind, schema)
        missing = [n for n in names if n not in values]
        extra = [k for k in values if k not in set(names)]
        problems = []
        if missing and fill_missing is None:
            problems.append(
                f"missing parameters: {missing[:20]}{' ...' if len(missing) > 20 else ''}"
            )
        if extra:
            problems.append(f"unknown parameters (not in the schema): {extra[:20]}")
        if std is not None:  # a name without an SD would read as known exactly (SD 0)
            no_sd = [n for n in names if n not in std]
            if no_sd and fill_missing is None:
                problems.append(f"std has no value for: {no_sd[:20]}")
            stray = [k for k in std if k not in set(names)]
            if stray:
                problems.append(f"std names parameters not in the schema: {stray[:20]}")
        if problems:
            raise ValidationError(
                f"parameters do not match the {kind} layout of this schema:", problems
            )
        vec = [_as_float(values.get(n, fill_missing), n) for n in names]
        sd = None if std is None else [_as_float(std.get(n, 0.0), n) for n in names]
        return cls(kind, schema, vec, std=sd, metadata=metadata)

    @classmethod
    def zeros(
        cls, kind: str, schema: FeatureSchema, *, intercept: float = 0.0, metadata=None
    ) -> ModelParams:
        vec = np.zeros(len(param_names(kind, schema)))
        vec[0] = intercept
        return cls(kind, schema, vec, metadata=metadata)

    def replace(self, *, vector=None, std=..., metadata=None, correlation=...) -> ModelParams:
        """A copy with some fields replaced. ``correlation`` is kept while ``std`` is (new
        ``std`` describes other errors, whose correlations are not known unless given)."""
        keep = std is ...
        if correlation is ...:
            correlation = self.correlation if keep else None
        return ModelParams(
            self.kind,
            self.schema,
            self.vector.copy() if vector is None else vector,
            std=(None if self.std is None else self.std.copy()) if keep else std,
            metadata={**self.metadata, **(metadata or {})},
            correlation=correlation,
        )

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, *, include_schema: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "values": self.as_dict(),
            "metadata": self.metadata,
        }
        if self.std is not None:
            d["std"] = {n: float(v) for n, v in zip(self.names, self.std, strict=True)}
        if self.correlation is not None:  # rows and columns in the order of "values"
            d["correlation"] = self.correlation.tolist()
        if include_schema:
            d["schema"] = self.schema.to_dict()
        return d

    @classmethod
    def from_payload(cls, d: Mapping[str, Any], schema: FeatureSchema | None = None) -> ModelParams:
        if not isinstance(d, Mapping):
            raise ValidationError("model parameters must be a JSON object")
        for key in ("kind", "values"):
            if key not in d:
                raise ValidationError(f"model parameters JSON has no {key!r} field")
        if schema is None:
            if "schema" not in d:
                raise ValidationError("model parameters JSON has no 'schema' and none was given")
            schema = FeatureSchema.from_dict(d["schema"])
        if not isinstance(d["values"], Mapping):
            raise ValidationError("'values' must be an object of name -> number")
        if d.get("std") is not None and not isinstance(d["std"], Mapping):
            raise ValidationError("'std' must be an object of name -> number")
        if d.get("metadata") is not None and not isinstance(d["metadata"], Mapping):
            raise ValidationError("'metadata' must be an object")
        if not isinstance(d["kind"], str):
            from ragim.models.family import FAMILIES  # at call time: models import params

            raise ValidationError(f"'kind' must be one of {list(FAMILIES)}, got {d['kind']!r}")
        p = cls.from_dict(
            d["kind"], schema, d["values"], std=d.get("std"), metadata=d.get("metadata") or {}
        )
        if d.get("correlation") is not None:
            p = p.replace(correlation=d["correlation"])
        return p

    def to_json(self, *, include_schema: bool = True, indent: int | None = None) -> str:
        try:
            return json.dumps(
                self.to_dict(include_schema=include_schema), indent=indent, allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"metadata is not JSON-safe ({exc}); use strings, finite numbers, "
                "booleans, None, lists and dicts"
            ) from exc

    @classmethod
    def from_json(cls, text: str, schema: FeatureSchema | None = None) -> ModelParams:
        from ragim.io import parse_json

        return cls.from_payload(parse_json(text, "model parameters are not valid JSON"), schema)

    def save(self, path: str | Path) -> Path:
        """Save as an artifact directory (``config.json`` + ``params.npz``).

        The checks :meth:`load` makes of what it reads are made first, so that nothing is
        saved that would not load: log-odds that stay finite for rows within the fitted ranges
        and the metadata fields ragim reads (:func:`check_metadata`).

        Raises
        ------
        ValidationError
            Naming the field, for a model :meth:`load` would refuse; nothing is written.
        """
        from ragim.io import json_bytes, npz_bytes, write_artifact

        config = json_bytes(
            {
                "kind": self.kind,
                "names": self.names,
                "schema": self.schema.to_dict(),
                "metadata": self.metadata,
            }
        )
        try:
            _check_log_odds(self)
            # the metadata as load reads it back (a tuple is written as a list)
            check_metadata(json.loads(config)["metadata"], self.names)
        except ValidationError as exc:
            raise ValidationError(
                f"this model is not saved, since it could not be loaded: {exc}"
            ) from None
        arrays = {"vector": self.vector}
        if self.std is not None:
            arrays["std"] = self.std
        if self.correlation is not None:
            arrays["correlation"] = self.correlation
        return write_artifact(
            path, FORMAT, {"config.json": config, "params.npz": npz_bytes(arrays)}
        )

    @classmethod
    def load(cls, path: str | Path) -> ModelParams:
        """Open a saved model: checksums are verified, then every field the model is read from:
        its schema (:meth:`FeatureSchema.from_dict`), the parameter names against the schema's
        layout, ``params.npz``'s arrays (float64 of the layout's shape, finite, and log-odds
        that stay finite for rows within the fitted ranges) and the metadata ragim reads
        (:func:`check_metadata`).

        Raises
        ------
        ArtifactError
            Naming the file and the field (a schema's disagreeing statistics are listed one a
            line); for a file holding a model's JSON (``ragim generate --json``, :meth:`to_json`),
            how to save it as a model.
        """
        from ragim.errors import ArtifactError
        from ragim.io import read_artifact

        if _is_model_json(path):
            raise ArtifactError(
                f"{path} is a model written as JSON (ragim generate --json), not a saved model "
                "(a directory): save it with ragim generate --save DIR, or in Python "
                "ModelParams.from_json(text).save(DIR), and pass DIR"
            )
        art = read_artifact(path, FORMAT)
        cfile, afile = art.path / "config.json", art.path / "params.npz"
        config = art.read_json("config.json")
        arrays = art.read_npz("params.npz", members=("vector", "std", "correlation"))
        try:
            check_loaded(
                config,
                {"kind": str, "names": [str], "schema": None, "metadata?": None},
                "config.json",
            )
        except ValidationError as exc:
            raise ArtifactError(f"{art.path}: {exc}") from exc
        try:
            schema = FeatureSchema.from_dict(config["schema"])
            names = param_names(config["kind"], schema)
        except ValidationError as exc:
            raise ArtifactError(f"{cfile}: schema: {exc}") from exc
        if names != config["names"]:
            raise ArtifactError(
                f"{cfile}: parameter names do not match the schema's {config['kind']} layout"
            )
        try:
            _check_arrays(arrays, len(names))
            p = cls(
                config["kind"],
                schema,
                arrays["vector"],
                std=arrays.get("std"),
                correlation=arrays.get("correlation"),
            )
            _check_log_odds(p)
        except ValidationError as exc:
            raise ArtifactError(f"{afile}: {exc}") from exc
        try:
            p.metadata = check_metadata(config.get("metadata", {}), names)
        except ValidationError as exc:
            raise ArtifactError(f"{cfile}: {exc}") from exc
        return p

    # ------------------------------------------------------------------ misc
    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ModelParams)
            and self.kind == other.kind
            and self.schema == other.schema
            and np.array_equal(self.vector, other.vector)
            and _same_or_both_none(self.std, other.std)
            and self.metadata == other.metadata
            and _same_or_both_none(self.correlation, other.correlation)
        )

    def __repr__(self) -> str:
        src = self.metadata.get("source", "?")
        top = sorted(zip(self.names[1:], self.terms, strict=True), key=lambda t: -abs(t[1]))[:3]
        tops = ", ".join(f"{n}={v:+.3g}" for n, v in top)
        return (
            f"ModelParams({self.kind}, {len(self)} params, source={src}, "
            f"intercept={self.intercept:+.3g}; {tops})"
        )


def _same_or_both_none(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def std_and_correlation(cov: Any) -> tuple[np.ndarray, np.ndarray]:
    """A covariance matrix (P, P) as ``(std, correlation)`` for :class:`ModelParams`; a
    parameter with zero variance is uncorrelated with the others.

    Raises
    ------
    ValidationError
        If ``cov`` is not a square, finite, symmetric, positive semi-definite matrix of real
        numbers.

    Examples
    --------
    >>> std, corr = std_and_correlation([[4.0, 1.0], [1.0, 1.0]])
    >>> std.tolist(), float(corr[0, 1])
    ([2.0, 1.0], 0.5)
    """
    C = _real_matrix(cov, "a covariance")
    if C.ndim != 2 or C.shape[0] != C.shape[1] or not np.all(np.isfinite(C)):
        raise ValidationError(f"a covariance must be a finite square matrix, got shape {C.shape}")
    var = np.diag(C)
    tol = 1e-8 * max(float(np.abs(var).max()) if var.size else 0.0, 1e-300)
    if not np.allclose(C, C.T, rtol=1e-6, atol=tol):
        raise ValidationError("a covariance must be symmetric")
    if var.size and np.linalg.eigvalsh((C + C.T) / 2)[0] < -1e-6 * float(np.abs(var).max()):
        raise ValidationError("a covariance must be positive semi-definite")
    std = np.sqrt(np.clip(var, 0.0, None))
    inv = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    R = np.clip((C + C.T) / 2 * np.outer(inv, inv), -1.0, 1.0)
    np.fill_diagonal(R, 1.0)
    return std, R


def _as_correlation(value: Any, n: int, has_std: bool) -> np.ndarray:
    """``value`` as an (n, n) correlation matrix, or a :class:`ValidationError` naming the
    problem."""
    if not has_std:
        raise ValidationError("correlation needs std: it scales the correlations to covariances")
    R = _real_matrix(value, "correlation")
    if R.shape != (n, n):
        raise ValidationError(
            f"correlation must be ({n}, {n}), one row per parameter, got {R.shape}"
        )
    if (
        not np.all(np.isfinite(R))
        or not np.allclose(R, R.T, atol=1e-6)
        or not np.allclose(np.diag(R), 1.0, atol=1e-6)
        or np.any(np.abs(R) > 1 + 1e-6)
    ):
        raise ValidationError(
            "correlation must be symmetric, finite, with a unit diagonal and entries in [-1, 1]"
        )
    R = np.clip((R + R.T) / 2, -1.0, 1.0)
    if np.linalg.eigvalsh(R)[0] < -1e-6 * n:
        raise ValidationError(
            "correlation is not positive semi-definite (no errors can have these correlations)"
        )
    return R


def _real_matrix(value: Any, what: str) -> np.ndarray:
    """``value`` as a float matrix, refusing text, booleans and complex numbers."""
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError):
        raw = np.asarray([], dtype=object)
    if raw.dtype.kind not in "iuf":
        raise ValidationError(f"{what} must be a matrix of real numbers")
    return raw.astype(float)


def _as_vector(v: Any, what: str) -> np.ndarray:
    if isinstance(v, str | bytes | Mapping):
        raise ValidationError(f"{what} must be a sequence of numbers, got {type(v).__name__}")
    try:
        return np.asarray(v, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{what} must be a sequence of numbers ({exc})") from None


def _as_float(v: Any, name: str) -> float:
    if isinstance(v, bool | str | bytes) or v is None:
        raise ValidationError(f"parameter {name!r} must be a number, got {_short(v)}")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(
            f"parameter {name!r} must be a finite number, got {_short(v)}"
        ) from None
    if not math.isfinite(f):
        raise ValidationError(f"parameter {name!r} must be finite, got {_short(v)}")
    return f


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


# ---------------------------------------------------------------------- checks of a loaded model
#: what ``params.npz`` holds, by array: its shape for ``P`` parameters
_ARRAY_SHAPES = {"vector": lambda P: (P,), "std": lambda P: (P,), "correlation": lambda P: (P, P)}


def _is_model_json(path: str | Path) -> bool:
    """Whether ``path`` is a file (of at most 64 MiB) holding a model's JSON
    (:meth:`ModelParams.to_json`, ``ragim generate --json``): an object with ``kind`` and
    ``values``."""
    try:
        p = Path(path)
        if not p.is_file() or p.stat().st_size > 64 * 2**20:
            return False
        data = json.loads(p.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "kind" in data and "values" in data


def _check_arrays(arrays: Mapping[str, np.ndarray], n: int) -> None:
    """Refuse ``params.npz`` arrays that are not float64 (the type ragim writes: an integer,
    bool, text, complex or half-precision array would be cast silently) of the shape the
    ``n`` parameter names give: ``vector`` and ``std`` (n,), ``correlation`` (n, n)."""
    if "vector" not in arrays:
        raise ValidationError("holds no array 'vector' (the parameters)")
    for key, a in arrays.items():
        want = _ARRAY_SHAPES[key](n)
        if a.dtype.kind != "f" or a.dtype.itemsize != 8 or a.shape != want:
            raise ValidationError(
                f"{key} must be float64 numbers of shape {want} ({n} parameters in config.json's "
                f"names), got {a.dtype} of shape {a.shape}"
            )


def _check_log_odds(params: ModelParams) -> None:
    """Refuse parameters whose log-odds overflow float64 (pass 1.8e308, then every risk is NaN
    or a bare 0 or 1) for some row within the ranges the schema was fitted on
    (:meth:`~ragim.models.family.ModelFamily.log_odds_reach`). A finite but absurd value
    (1e300) passes: no bound below float64's own follows from what the parameters mean."""
    reach = model_family(params.kind).log_odds_reach(params)
    if reach is not None and not math.isfinite(reach):
        j = int(np.argmax(np.abs(params.vector)))
        raise ValidationError(
            "vector: the model's log-odds overflow float64 for rows within the ranges its "
            f"schema was fitted on (its largest parameter is {params.names[j]} = "
            f"{params.vector[j]:.3g}), so its risks would be NaN"
        )


def _opt(rule: Any) -> Any:
    """``rule`` (a :func:`check_loaded` spec) that lets None (JSON null) pass."""

    def check(value: Any, name: str) -> Any:
        return None if value is None else check_loaded(value, rule, name)

    return check


def _provenance(records: Any, name: str) -> Any:
    if not isinstance(records, list):
        raise ValidationError(f"{name} must be a list of neighbour records, got {_short(records)}")
    for i, r in enumerate(records):
        where = f"{name}[{i}]"
        if not isinstance(r, Mapping):
            raise ValidationError(f"{where} must be an object, got {_short(r)}")
        check_loaded(r.get("task_id"), str, f"{where}.task_id")
        for key, rule in (
            ("description", str),
            ("similarity", _opt(float)),
            ("weight", _opt(float)),
        ):
            if key in r:  # other keys a generator stored are shown as they are
                check_loaded(r[key], rule, f"{where}.{key}")
    return records


def _policy(entries: Any, name: str) -> Any:
    from ragim.adaptation_policy import AdaptationPolicy

    if not isinstance(entries, list):
        raise ValidationError(f"{name} must be a list of policy entries, got {_short(entries)}")
    try:
        AdaptationPolicy.from_dict({"entries": entries})
    except ValidationError as exc:
        raise ValidationError(f"{name}: {exc}") from None
    return entries


def _label(value: Any, name: str) -> Any:
    if isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    raise ValidationError(f"{name} must be a class label (text, a number or a bool), got {value!r}")


_SIMILARITY = partial(check_number, ge=-1, le=1)
#: a coverage record (:meth:`ragim.domain.Coverage.data`); a key ending "?" may be absent
_COVERAGE = {
    "top_similarity": _SIMILARITY,
    "effective_similarity": _SIMILARITY,
    "effective_neighbors?": _opt(partial(check_number, ge=0)),
    "k": partial(check_int, ge=1),
    "threshold?": _opt(_SIMILARITY),
    "typical?": _opt(_SIMILARITY),
    "rank_min?": _opt(partial(check_int, ge=1)),
    "rank_max?": _opt(partial(check_int, ge=1)),
    "in_domain?": _opt(bool),  # recomputed from the others
}


def check_metadata(metadata: Any, names: list[str], name: str = "metadata") -> dict[str, Any]:
    """``metadata`` of a saved model, after checking each field ragim reads from it (other keys
    are the user's and pass as they are): ``source``, ``description``, ``outcome``,
    ``adaptation``, ``prior_source`` text; ``k`` (>= 1) and ``k_shot`` (>= 0) integers;
    ``prior_strength`` a number; ``coverage`` a coverage record
    (:class:`ragim.domain.Coverage`); ``provenance`` neighbour records (a ``task_id``, and
    ``description``, ``similarity`` and ``weight`` of their types where given);
    ``adaptation_policy`` entries :class:`~ragim.adaptation_policy.AdaptationPolicy` accepts;
    ``between_tasks`` and ``constant_terms`` naming terms of the model (``names``);
    ``classes`` two different labels; ``adapted_on_sha256`` text.

    Raises
    ------
    ValidationError
        One line naming the field: ``"metadata.provenance[0].weight must be a number, got 'x'"``.

    Examples
    --------
    >>> check_metadata({"source": "fit", "mine": [1]}, ["intercept", "age"])
    {'source': 'fit', 'mine': [1]}
    >>> check_metadata({"between_tasks": ["beds"]}, ["intercept", "age"])
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: metadata.between_tasks names 'beds', which is not a term of \
this model
    """
    if not isinstance(metadata, Mapping):
        raise ValidationError(f"{name} must be an object, got {_short(metadata)}")
    terms = set(names[1:])

    def term_names(value: Any, where: str) -> Any:
        for t in value:
            if t not in terms:
                raise ValidationError(f"{where} names {t!r}, which is not a term of this model")
        return value

    def between(value: Any, where: str) -> Any:
        return term_names(check_loaded(value, [str], where), where)

    def constant(value: Any, where: str) -> Any:
        return term_names(check_loaded(value, {"*": float}, where), where)

    def classes(value: Any, where: str) -> Any:
        labels = check_loaded(value, [_label], where)
        if len(labels) != 2 or labels[0] == labels[1]:
            raise ValidationError(f"{where} must be two different labels, got {value!r}")
        return value

    rules = {
        "source": str,
        "description": str,
        "outcome": str,
        "adaptation": str,
        "prior_source": _opt(str),
        "k": partial(check_int, ge=1),
        "k_shot": partial(check_int, ge=0),
        "prior_strength": _opt(float),
        "coverage": _opt(_COVERAGE),
        "provenance": _provenance,
        "adaptation_policy": _policy,
        "between_tasks": between,
        "constant_terms": constant,
        "classes": classes,
        "adapted_on_sha256": [str],
    }
    for key, rule in rules.items():
        if key in metadata:
            check_loaded(metadata[key], rule, f"{name}.{key}")
    return dict(metadata)


def stack_params(params: list[ModelParams]) -> np.ndarray:
    """Stack parameter vectors of one kind over one schema into a (n, p) matrix."""
    if not params:
        raise ValidationError("no parameters to stack")
    kind, ref = params[0].kind, params[0].schema
    for i, p in enumerate(params):
        if p.kind != kind or (p.schema is not ref and p.schema != ref):
            raise ValidationError(f"parameters #{i} differ in kind or schema from #0; cannot stack")
    return np.stack([p.vector for p in params])


def design_matrix(kind: str, schema: FeatureSchema, X) -> np.ndarray:
    """The matrix ``D`` with ``logit = intercept + D @ terms`` for a model family.

    Logistic: the standardised design matrix. GAM: one-hot indicators of each
    feature's shared bin (a value with no bin gives a zero row block). Any other registered
    family: its :meth:`~ragim.models.family.ModelFamily.design_matrix`.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
    >>> s = FeatureSchema.infer(X).fit(X)
    >>> design_matrix("gam", s, X).sum(axis=1).tolist()
    [1.0, 1.0, 1.0]
    """
    return model_family(kind).design_matrix(schema, X)
