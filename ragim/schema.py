"""FeatureSchema: named features, fitted preprocessing and the shared design layout.

A schema fixes, once, how a patient table becomes numbers:

* continuous features: median imputation, a missing indicator where values can be
  missing, then standardisation (mean 0, SD 1 on the data the schema was fitted on);
* binary features: 0/1, median imputation and a missing indicator;
* categorical features: one-hot columns (unknown categories give all zeros) and a
  missing indicator.

Every model and every generated parameter vector shares the resulting layout
(:attr:`FeatureSchema.design_names`), and GAMs share its bins
(:attr:`FeatureSchema.gam_names`). The schema is fitted only on the data it is
given: build it from training tasks, never from a zero-shot target.

Examples
--------
>>> import pandas as pd
>>> X = pd.DataFrame({"age": [40.0, 50.0, None, 70.0], "smoker": [0, 1, 1, 0]})
>>> schema = FeatureSchema.infer(X, units={"age": "years"}).fit(X)
>>> schema.design_names
['age', 'age__missing', 'smoker']
>>> schema.transform(X).shape
(4, 3)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ragim.errors import ValidationError

FeatureType = Literal["continuous", "binary", "categorical"]
_TYPES = ("continuous", "binary", "categorical")
MISSING_SUFFIX = "__missing"


@dataclass(frozen=True)
class Feature:
    """One named input feature.

    Parameters
    ----------
    name : column name in the task tables.
    type : "continuous", "binary" (0/1) or "categorical".
    unit : unit of measurement, shown in explanations and prompts ("mg/dL", "years").
    description : free text, shown in prompts.
    categories : the levels of a categorical feature; learned at fit time when empty.
    allow_missing : whether NaN is acceptable in this column.
    label : a human name for tables, plots and reports ("Chest-pain type"); default: ``name``.
    levels : human labels of a binary or categorical feature's values, value -> label
        (``{0: "female", 1: "male"}``); values without a label are shown as they are.
    """

    name: str
    type: FeatureType = "continuous"
    unit: str = ""
    description: str = ""
    categories: tuple[str, ...] = ()
    allow_missing: bool = True
    label: str = ""
    levels: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValidationError(f"feature name must be a non-empty string, got {self.name!r}")
        if self.type not in _TYPES:
            raise ValidationError(
                f"feature {self.name!r} has unknown type {self.type!r}; use one of {list(_TYPES)}"
            )
        object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))
        if not isinstance(self.label, str):
            raise ValidationError(f"feature {self.name!r}: label must be text, got {self.label!r}")
        object.__setattr__(self, "levels", _check_levels(self.name, self.type, self.levels))

    @property
    def display_name(self) -> str:
        """``label``, or ``name`` when no label is given."""
        return self.label or self.name

    def level_label(self, value: Any) -> str:
        """The human label of one value (``levels``), or the value as text.

        >>> Feature("sex", "binary", levels={0: "female", 1: "male"}).level_label(1.0)
        'male'
        """
        key = level_key(value)
        return self.levels.get(key, key)


@dataclass(frozen=True)
class DesignColumn:
    """One column of the design matrix and how it maps back to its feature."""

    name: str
    feature: str
    role: Literal["value", "missing", "category"]
    center: float = 0.0
    scale: float = 1.0
    category: str | None = None


@dataclass
class FeatureSchema:
    """Named features plus fitted preprocessing; see the module docstring.

    Parameters
    ----------
    features : the features, in design order.
    n_bins : number of shared quantile bins per continuous feature for GAMs.
    """

    features: list[Feature]
    n_bins: int = 8
    # fitted state (None until fit)
    medians_: dict[str, float] | None = None
    means_: dict[str, float] | None = None
    scales_: dict[str, float] | None = None
    missing_: list[str] | None = None
    categories_: dict[str, list[str]] | None = None
    bin_edges_: dict[str, list[float]] | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.features = [f if isinstance(f, Feature) else Feature(**f) for f in self.features]
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValidationError(f"duplicate feature names in schema: {dupes}")
        if not self.features:
            raise ValidationError("a schema needs at least one feature")
        if not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ValidationError(f"n_bins must be an integer >= 2, got {self.n_bins!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def infer(
        cls,
        X: pd.DataFrame,
        *,
        units: Mapping[str, str] | None = None,
        types: Mapping[str, FeatureType] | None = None,
        descriptions: Mapping[str, str] | None = None,
        max_categories: int = 12,
        n_bins: int = 8,
    ) -> FeatureSchema:
        """Infer feature types from a table: numeric 0/1 columns are binary, other numeric
        columns continuous, strings, booleans-as-text and categoricals categorical."""
        if not isinstance(X, pd.DataFrame):
            raise ValidationError(f"X must be a pandas DataFrame, got {type(X).__name__}")
        cols = [str(c) for c in X.columns]
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        if dupes:
            raise ValidationError(f"X has duplicated columns {dupes}; every feature needs a unique name")
        units, types, descriptions = dict(units or {}), dict(types or {}), dict(descriptions or {})
        unknown = sorted((set(units) | set(types)) - set(cols))
        if unknown:
            raise ValidationError(f"units/types given for columns that are not in X: {unknown}")
        feats = []
        for col, name in zip(X.columns, cols, strict=True):
            s = X.iloc[:, cols.index(name)]
            t = types.get(col, types.get(name))
            if t is None:
                if pd.api.types.is_bool_dtype(s):
                    t = "binary"
                elif pd.api.types.is_complex_dtype(s):
                    raise ValidationError(f"column {name!r} holds complex numbers; features must be real numbers or text")
                elif pd.api.types.is_numeric_dtype(s):
                    vals = set(pd.unique(s.dropna()))
                    t = "binary" if vals and vals <= {0, 1} else "continuous"
                else:
                    _check_text_column(name, s)
                    if s.dropna().nunique() > max_categories:
                        raise ValidationError(
                            f"column {name!r} is text with {s.dropna().nunique()} distinct values "
                            f"(more than max_categories={max_categories}); encode it or pass types="
                        )
                    t = "categorical"
            feats.append(
                Feature(name=name, type=t, unit=units.get(col, units.get(name, "")),
                        description=descriptions.get(col, descriptions.get(name, "")))
            )
        return cls(feats, n_bins=n_bins)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def __getitem__(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def is_fitted(self) -> bool:
        return self.medians_ is not None

    def _check_fitted(self):
        if not self.is_fitted:
            raise ValidationError(
                "this FeatureSchema is not fitted; call schema.fit(X) on training data first"
            )

    # ------------------------------------------------------------------ validation
    def validate_frame(self, X: Any, *, where: str = "X") -> pd.DataFrame:
        """Check a table against the schema and return it with numeric columns as float.

        Raises one :class:`ValidationError` listing every problem: missing or extra
        columns, duplicated columns, text in numeric columns, infinite values, values
        outside {0, 1} in binary columns, and NaN where a feature allows none.
        """
        if not isinstance(X, pd.DataFrame):
            raise ValidationError(f"{where} must be a pandas DataFrame, got {type(X).__name__}")
        problems = []
        cols = [str(c) for c in X.columns]
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        if dupes:
            problems.append(f"duplicated columns: {dupes}")
        missing = [n for n in self.names if n not in cols]
        extra = [c for c in cols if c not in self.names]
        if missing:
            problems.append(f"columns required by the schema are missing: {missing}")
        if extra:
            problems.append(f"columns not in the schema: {extra} (drop them or add them to the schema)")
        if problems:
            raise ValidationError(f"{where} does not match the feature schema:", problems)
        if any(not isinstance(c, str) for c in X.columns):
            X = X.set_axis(cols, axis=1)
        out = {}
        for f in self.features:
            s = X[f.name]
            if f.type == "categorical":
                s = s.astype(object).where(s.notna(), None)
                if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("mixed", "unknown-array"):
                    odd = [v for v in s if isinstance(v, list | dict | set | tuple | np.ndarray)]
                    if odd:
                        problems.append(
                            f"column {f.name!r} (categorical) holds {type(odd[0]).__name__} values; "
                            "categories must be text or numbers"
                        )
                        continue
                out[f.name] = s
                nan_mask = s.isna().to_numpy()
            else:
                if pd.api.types.is_complex_dtype(s):
                    problems.append(f"column {f.name!r} ({f.type}) holds complex numbers")
                    continue
                if pd.api.types.is_bool_dtype(s):
                    s = s.astype(float)
                try:
                    num = pd.to_numeric(s, errors="coerce")
                except TypeError:  # unhashable or otherwise odd objects
                    num = pd.Series(np.nan, index=s.index)
                bad = num.isna() & s.notna()
                if bad.any():
                    examples = [v for v in s[bad]][:3]
                    problems.append(
                        f"column {f.name!r} ({f.type}) has non-numeric values, e.g. {examples}"
                    )
                    continue
                arr = num.to_numpy(dtype=float)
                if np.isinf(arr).any():
                    problems.append(f"column {f.name!r} has infinite values at rows {np.where(np.isinf(arr))[0][:5].tolist()}")
                if f.type == "binary":
                    vals = set(np.unique(arr[np.isfinite(arr)]).tolist())
                    if not vals <= {0.0, 1.0}:
                        problems.append(f"binary column {f.name!r} has values other than 0/1: {sorted(vals)[:5]}")
                nan_mask = np.isnan(arr)
                out[f.name] = arr
            if not f.allow_missing and nan_mask.any():
                problems.append(
                    f"column {f.name!r} has {int(nan_mask.sum())} missing values but the schema allows none"
                )
        if problems:
            raise ValidationError(f"{where} has invalid values:", problems)
        return pd.DataFrame(out, index=X.index)

    # ------------------------------------------------------------------ fitting
    def fit(self, X: pd.DataFrame) -> FeatureSchema:
        """Learn imputation values, scales, categories, missing indicators and GAM bins from X."""
        X = self.validate_frame(X)
        if len(X) == 0:
            raise ValidationError("cannot fit a FeatureSchema on zero rows")
        medians, means, scales, missing, cats, edges = {}, {}, {}, [], {}, {}
        for f in self.features:
            s = X[f.name]
            if s.isna().any():
                missing.append(f.name)
            if f.type == "categorical":
                learned = sorted({str(v) for v in s.dropna()})
                cats[f.name] = list(f.categories) if f.categories else learned
                continue
            arr = s.to_numpy(dtype=float)
            obs = arr[~np.isnan(arr)]
            med = float(np.median(obs)) if obs.size else 0.0
            medians[f.name] = med
            if f.type == "continuous":
                filled = np.where(np.isnan(arr), med, arr)
                with np.errstate(over="ignore", invalid="ignore"):
                    mu, sd = float(filled.mean()), float(filled.std())
                means[f.name], scales[f.name] = mu, (sd if sd > 1e-12 else 1.0)
                if obs.size and math.isfinite(mu) and math.isfinite(sd):
                    qs = np.quantile(obs, np.linspace(0, 1, self.n_bins + 1)[1:-1])
                    e = np.unique(np.round(qs, 10))
                    edges[f.name] = [float(v) for v in e]
                else:
                    edges[f.name] = []
        huge = sorted(n for n, v in {**medians, **means, **scales}.items() if not math.isfinite(v))
        if huge:
            raise ValidationError(
                f"columns {huge} have values too large to standardise (their mean or spread overflows); "
                "rescale them (for example to other units) first"
            )
        self.medians_, self.means_, self.scales_ = medians, means, scales
        self.missing_, self.categories_, self.bin_edges_ = missing, cats, edges
        self._cache.clear()
        return self

    # ------------------------------------------------------------------ design layout
    @property
    def design_columns(self) -> list[DesignColumn]:
        self._check_fitted()
        if "design" not in self._cache:
            cols = []
            for f in self.features:
                if f.type == "continuous":
                    cols.append(DesignColumn(f.name, f.name, "value", self.means_[f.name], self.scales_[f.name]))
                elif f.type == "binary":
                    cols.append(DesignColumn(f.name, f.name, "value"))
                else:
                    for c in self.categories_[f.name]:
                        cols.append(DesignColumn(f"{f.name}[{c}]", f.name, "category", category=c))
                if f.name in self.missing_:
                    cols.append(DesignColumn(f.name + MISSING_SUFFIX, f.name, "missing"))
            names = [c.name for c in cols]
            if len(set(names)) != len(names):
                clash = sorted({n for n in names if names.count(n) > 1})
                raise ValidationError(f"feature names produce clashing design columns: {clash}")
            self._cache["design"] = cols
        return self._cache["design"]

    @property
    def design_names(self) -> list[str]:
        return [c.name for c in self.design_columns]

    @property
    def n_design(self) -> int:
        return len(self.design_columns)

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The standardised design matrix, shape (n_rows, n_design), float64."""
        self._check_fitted()
        X = self.validate_frame(X)
        n = len(X)
        out = np.zeros((n, self.n_design))
        j = 0
        for f in self.features:
            s = X[f.name]
            if f.type == "categorical":
                vals = s.to_numpy(dtype=object)
                isna = s.isna().to_numpy()
                for c in self.categories_[f.name]:
                    out[:, j] = np.array([(not m) and str(v) == c for v, m in zip(vals, isna, strict=True)], float)
                    j += 1
            else:
                arr = s.to_numpy(dtype=float)
                isna = np.isnan(arr)
                filled = np.where(isna, self.medians_[f.name], arr)
                if f.type == "continuous":
                    filled = (filled - self.means_[f.name]) / self.scales_[f.name]
                out[:, j] = filled
                j += 1
            if f.name in self.missing_:
                out[:, j] = isna.astype(float)
                j += 1
        return out

    # ------------------------------------------------------------------ GAM bins
    def bin_labels(self, name: str) -> list[str]:
        """Labels of the shared bins of one feature (the GAM's shape-function support)."""
        self._check_fitted()
        f = self[name]
        if f.type == "continuous":
            e = self.bin_edges_[name]
            bounds = [-math.inf, *e, math.inf]
            labels = [f"{_fmt(lo)}..{_fmt(hi)}" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        elif f.type == "binary":
            labels = ["0", "1"]
        else:
            labels = list(self.categories_[name])
        if name in self.missing_:
            labels.append("missing")
        return labels

    def bin_midpoints(self, name: str) -> np.ndarray:
        """A representative raw value per non-missing bin (for plotting shape functions)."""
        self._check_fitted()
        f = self[name]
        if f.type != "continuous":
            return np.arange(len(self.bin_labels(name)) - (name in self.missing_), dtype=float)
        e = np.asarray(self.bin_edges_[name], float)
        if e.size == 0:
            return np.array([self.medians_[name]])
        width = (e[-1] - e[0]) / max(len(e) - 1, 1) if e.size > 1 else max(abs(e[0]) * 0.1, 1.0)
        pts = np.concatenate([[e[0] - width / 2], (e[:-1] + e[1:]) / 2, [e[-1] + width / 2]])
        return pts

    @property
    def gam_layout(self) -> list[tuple[str, list[str]]]:
        return [(f.name, self.bin_labels(f.name)) for f in self.features]

    @property
    def gam_names(self) -> list[str]:
        if "gam_names" not in self._cache:
            names = [f"{n}[{lab}]" for n, labels in self.gam_layout for lab in labels]
            if len(set(names)) != len(names):
                clash = sorted({n for n in names if names.count(n) > 1})
                raise ValidationError(
                    f"GAM bins clash: {clash}; a categorical level may not be called 'missing' "
                    "when the feature also has missing values"
                )
            self._cache["gam_names"] = names
        return self._cache["gam_names"]

    @property
    def gam_offsets(self) -> np.ndarray:
        """Start offset of each feature's bins in the GAM vector (without intercept)."""
        sizes = [len(labels) for _, labels in self.gam_layout]
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)

    def bin_indices(self, X: pd.DataFrame) -> np.ndarray:
        """Bin index of every value, shape (n_rows, n_features); -1 means "no bin" (contributes 0)."""
        self._check_fitted()
        X = self.validate_frame(X)
        out = np.empty((len(X), len(self.features)), dtype=np.int64)
        for k, f in enumerate(self.features):
            labels = self.bin_labels(f.name)
            miss_bin = len(labels) - 1 if f.name in self.missing_ else -1
            s = X[f.name]
            if f.type == "categorical":
                lookup = {c: i for i, c in enumerate(self.categories_[f.name])}
                idx = np.array([lookup.get(str(v), -1) if v is not None else miss_bin for v in s], dtype=np.int64)
                idx[s.isna().to_numpy()] = miss_bin
            else:
                arr = s.to_numpy(dtype=float)
                isna = np.isnan(arr)
                filled = np.where(isna, self.medians_[f.name], arr)
                if f.type == "continuous":
                    idx = np.searchsorted(np.asarray(self.bin_edges_[f.name]), filled, side="right")
                else:
                    idx = filled.astype(np.int64)
                idx = np.where(isna, miss_bin if miss_bin >= 0 else idx, idx)
            out[:, k] = idx
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        d = {
            "features": [_feature_dict(f) for f in self.features],
            "n_bins": self.n_bins,
        }
        if self.is_fitted:
            d["fitted"] = {
                "medians": self.medians_,
                "means": self.means_,
                "scales": self.scales_,
                "missing": self.missing_,
                "categories": self.categories_,
                "bin_edges": self.bin_edges_,
            }
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSchema:
        if not isinstance(d, Mapping):
            raise ValidationError(f"not a valid FeatureSchema description: expected an object, got {type(d).__name__}")
        if not isinstance(d.get("features"), list) or not all(isinstance(f, Mapping) for f in d["features"]):
            raise ValidationError("not a valid FeatureSchema description: 'features' must be a list of objects")
        try:
            schema = cls([Feature(**{**f, "categories": tuple(f.get("categories", ()))}) for f in d["features"]],
                         n_bins=int(d.get("n_bins", 8)))
            fitted = d.get("fitted")
            if fitted:
                schema.medians_ = {k: float(v) for k, v in fitted["medians"].items()}
                schema.means_ = {k: float(v) for k, v in fitted["means"].items()}
                schema.scales_ = {k: float(v) for k, v in fitted["scales"].items()}
                schema.missing_ = list(fitted["missing"])
                schema.categories_ = {k: [str(c) for c in v] for k, v in fitted["categories"].items()}
                schema.bin_edges_ = {k: [float(x) for x in v] for k, v in fitted["bin_edges"].items()}
                schema._check_consistent()
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValidationError(f"not a valid FeatureSchema description: missing or malformed {exc}") from exc
        return schema

    def _check_consistent(self):
        problems = []
        for f in self.features:
            if f.type == "categorical":
                if f.name not in self.categories_:
                    problems.append(f"categorical feature {f.name!r} has no fitted categories")
            else:
                if f.name not in self.medians_:
                    problems.append(f"feature {f.name!r} has no fitted median")
                if f.type == "continuous" and any(f.name not in d for d in (self.means_, self.scales_, self.bin_edges_)):
                    problems.append(f"continuous feature {f.name!r} has no fitted mean/scale/bins")
        for stats in (self.medians_, self.means_, self.scales_):
            for name, v in (stats or {}).items():
                if not math.isfinite(v):
                    problems.append(f"fitted statistic for {name!r} is not finite")
        for name, v in (self.scales_ or {}).items():
            if not v > 0:
                problems.append(f"fitted scale of {name!r} must be positive, got {v}")
        for name, e in (self.bin_edges_ or {}).items():
            if not all(math.isfinite(x) for x in e) or any(b <= a for a, b in zip(e, e[1:], strict=False)):
                problems.append(f"bin edges of {name!r} must be finite and increasing")
        if problems:
            raise ValidationError("fitted schema state is inconsistent:", problems)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> FeatureSchema:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, RecursionError, ValueError) as exc:
            raise ValidationError(f"schema JSON is not valid JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise ValidationError("schema JSON must be an object")
        return cls.from_dict(d)

    def fingerprint(self) -> str:
        """Short hash of the full schema (features and fitted state)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def copy(self) -> FeatureSchema:
        return FeatureSchema.from_dict(self.to_dict())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSchema) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        kinds = {t: sum(f.type == t for f in self.features) for t in _TYPES}
        state = f"{self.n_design} design columns" if self.is_fitted else "not fitted"
        return (
            f"FeatureSchema({len(self.features)} features: {kinds['continuous']} continuous, "
            f"{kinds['binary']} binary, {kinds['categorical']} categorical; {state})"
        )

    def describe(self) -> pd.DataFrame:
        """One row per feature: type, unit, missing indicator, categories or bins."""
        rows = []
        for f in self.features:
            row = {"feature": f.name, "type": f.type, "unit": f.unit, "description": f.description,
                   "label": f.display_name}
            if self.is_fitted:
                row["missing_indicator"] = f.name in self.missing_
                row["n_bins"] = len(self.bin_labels(f.name))
            rows.append(row)
        return pd.DataFrame(rows)


def level_key(value: Any) -> str:
    """The text key of a value in ``Feature.levels``: integral numbers lose their ".0"
    (``1.0`` -> ``"1"``, ``True`` -> ``"1"``); anything else is ``str(value)``.

    >>> level_key(0.0), level_key(True), level_key("flat")
    ('0', '1', 'flat')
    """
    if isinstance(value, bool | np.bool_):
        return str(int(value))
    if isinstance(value, int | float | np.integer | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _check_levels(name: str, ftype: str, levels: Any) -> dict[str, str]:
    if levels is None:
        return {}
    if not isinstance(levels, Mapping):
        raise ValidationError(
            f"feature {name!r}: levels must map values to labels, got {type(levels).__name__}"
        )
    if levels and ftype == "continuous":
        raise ValidationError(
            f"feature {name!r} is continuous; level labels are only for binary or "
            "categorical features"
        )
    out = {}
    for k, v in levels.items():
        if not isinstance(v, str) or not v.strip():
            raise ValidationError(
                f"feature {name!r}: the label of level {k!r} must be non-empty text, got {v!r}"
            )
        out[level_key(k)] = v
    if ftype == "binary" and not set(out) <= {"0", "1"}:
        raise ValidationError(
            f"binary feature {name!r} has level labels for {sorted(set(out) - {'0', '1'})}; "
            "a binary feature's values are 0 and 1"
        )
    return out


def _feature_dict(f: Feature) -> dict[str, Any]:
    """A feature as JSON; ``label`` and ``levels`` only when set, so schemas saved before they
    existed keep their exact JSON (and fingerprint)."""
    d = asdict(f) | {"categories": list(f.categories)}
    for key in ("label", "levels"):
        if not d[key]:
            del d[key]
    return d


def _check_text_column(name: str, s: pd.Series) -> None:
    """Reject text columns that hold unhashable objects or mix numbers with text."""
    vals = s.dropna()
    odd = [v for v in vals if isinstance(v, list | dict | set | tuple | np.ndarray)]
    if odd:
        raise ValidationError(f"column {name!r} holds {type(odd[0]).__name__} values; features must be numbers or text")
    as_num = pd.to_numeric(vals.map(lambda v: v if isinstance(v, str | int | float | np.number) else None),
                           errors="coerce")
    n_num = int(as_num.notna().sum())
    if 0 < n_num < len(vals):
        text = list(dict.fromkeys(str(v) for v, x in zip(vals, as_num, strict=True) if pd.isna(x)))[:3]
        raise ValidationError(
            f"column {name!r} mixes numbers with text (e.g. {text}); fix the values or declare its type "
            "(types= here, or \"type\" in schema.json)"
        )


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return f"{x:.4g}"


def check_same_schema(schemas: Iterable[FeatureSchema], labels: Sequence[str]) -> None:
    """Raise if the schemas do not describe the same features (name, type) in the same order."""
    schemas = list(schemas)
    if not schemas:
        return
    ref = [(f.name, f.type) for f in schemas[0].features]
    problems = []
    for s, lab in zip(schemas[1:], labels[1:], strict=False):
        cur = [(f.name, f.type) for f in s.features]
        if cur != ref:
            problems.append(f"{lab}: features {cur} differ from {labels[0]}: {ref}")
    if problems:
        raise ValidationError("tasks do not share one feature schema:", problems)
