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

import contextlib
import contextvars
import datetime
import decimal
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from ragim.canonical import (
    canonical_level,
    canonical_text,
    invisible_characters,
    is_missing,
    is_missing_text,
    level_key,
    plain_numeral,
    strip_invisible,
    truth_text,
    widen_floats,
)
from ragim.checks import check_int, check_loaded, check_number, repeated
from ragim.errors import DataWarning, ValidationError, name_some, user_stacklevel
from ragim.io import parse_json

FeatureType = Literal["continuous", "binary", "categorical"]
_TYPES = ("continuous", "binary", "categorical")
MISSING_SUFFIX = "__missing"


FAR_SD = 8.0
"""How many standard deviations from the fitted mean make a value "far"
(:meth:`FeatureSchema.far_values`): rare for real measurements (under 0.2% of a log-normal with
sigma 1), common for a wrong unit."""

MISSING_CODES = (-1, -9, -99, -999, -9999, -77, -777, -88, -888, 77, 777, 88, 888, 99, 999, 9999)
"""Numbers that exports often write for a missing value (-99, 999, 9999, 88 "not asked",
77 "refused", ...); :func:`missing_codes` flags them only where they lie far outside the rest
of a column."""

SCALE_RATIO = 2.0
"""The smallest factor between one table's median of a continuous column and the other tables'
that :func:`scale_gaps` flags (with the median outside the other tables' 1st-99th percentile):
below every common unit change (pounds against kilograms: 2.2; inches against centimetres:
2.54; degrees Fahrenheit against Celsius near body temperature: 2.7; mg/dL against mmol/L: 9
for lactate, 18 for glucose; a fraction against a percentage: 100; months against years: 12),
above most differences between hospitals in the columns narrow enough to fail the
percentile condition (weight, height, temperature, SpO2). A site whose patients differ that
much (children among adults, a trauma centre's ages against a geriatric unit's, an
intensive-care unit's lactate against wards') is flagged too: the shared SD mixes the two
populations in the same way, and the warning names the matching unit change
(:func:`unit_change`) or says that none gives the factor. It was 5 until a hospital's file
in pounds among files in kilograms loaded silently."""

NEGATIVE_NINES = (-9, -99, -999, -9999)
"""The codes :func:`far_codes` flags at any distance below a column that is never negative (an
age in months, 0-191, with -9 for unknown): no export writes -9 or -99 for a real value of a
quantity that is never negative, while -1 or -2 can be real where a column only happened to
stay positive in the rows seen (ST depression), so those keep the distance rule."""


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
        object.__setattr__(self, "name", canonical_text(self.name))
        if self.type not in _TYPES:
            raise ValidationError(
                f"feature {self.name!r} has unknown type {self.type!r}; use one of {list(_TYPES)}"
            )
        if isinstance(self.categories, str | bytes):
            raise ValidationError(
                f"feature {self.name!r}: categories must be a list of levels, "
                f"got the text {self.categories!r}"
            )
        cats = [canonical_level(c) for c in self.categories]
        if any(c is None or c == "" for c in cats):
            raise ValidationError(f"feature {self.name!r}: a declared category is blank or missing")
        dupes = sorted({c for c in cats if cats.count(c) > 1}, key=level_key)
        if dupes:
            raise ValidationError(
                f"feature {self.name!r} declares the same level more than once: {dupes} "
                "(numbers compare by value: 4 and 4.0 and '04' are one level)"
            )
        object.__setattr__(self, "categories", tuple(cats))
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
        key = canonical_level(value)
        return self.levels.get(key, str(value) if key is None else key)


@dataclass(frozen=True)
class DesignColumn:
    """One column of the design matrix and how it maps back to its feature."""

    name: str
    feature: str
    role: Literal["value", "missing", "category"]
    center: float = 0.0
    scale: float = 1.0
    category: str | None = None


def bin_edges(values: np.ndarray, n_bins: int) -> list[float]:
    """The shared GAM bin edges of a continuous column's observed ``values``: bin ``i`` holds
    ``edges[i - 1] <= x < edges[i]``, the outer bins open-ended.

    A column of at most ``n_bins`` distinct values gets one bin per value (the edges are the
    values but the smallest); otherwise the edges are the ``n_bins``-quantiles, rounded to 10
    decimals, without repeats and without one at the smallest value, whose bin below it could
    hold no fitted value. **Changed:** a count 0-3 got the edges [0, 1, 2]: an empty bin below
    0, and 2 and 3 sharing one bin (one score, where interpret's own EBM scores them apart).

    Examples
    --------
    >>> bin_edges(np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0]), 8)
    [1.0, 2.0, 3.0]
    >>> bin_edges(np.arange(100.0), 4)
    [24.75, 49.5, 74.25]
    """
    obs = np.asarray(values, dtype=float)
    distinct = np.unique(obs)
    if len(distinct) <= n_bins:
        return [float(v) for v in distinct[1:]]
    qs = np.quantile(obs, np.linspace(0, 1, n_bins + 1)[1:-1])
    e = np.unique(np.round(qs, 10))
    return [float(v) for v in e if v > distinct[0]]


@dataclass
class FeatureSchema:
    """Named features plus fitted preprocessing; see the module docstring.

    Parameters
    ----------
    features : the features, in design order.
    n_bins : at most this many shared bins per continuous feature for GAMs
        (:func:`bin_edges`: quantile bins, or one bin per value for a column of at most
        ``n_bins`` distinct values).
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
    constant_: dict[str, str | None] = field(default_factory=dict)
    ranges_: dict[str, list[float]] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.features = [f if isinstance(f, Feature) else Feature(**f) for f in self.features]
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValidationError(f"duplicate feature names in schema: {dupes}")
        if not self.features:
            raise ValidationError("a schema needs at least one feature")
        self.n_bins = check_int(self.n_bins, "n_bins", ge=2)

    # ------------------------------------------------------------------ construction
    @classmethod
    def infer(
        cls,
        X: pd.DataFrame | Sequence[pd.DataFrame],
        *,
        units: Mapping[str, str] | None = None,
        types: Mapping[str, FeatureType] | None = None,
        descriptions: Mapping[str, str] | None = None,
        max_categories: int = 12,
        n_bins: int = 8,
        labels: Sequence[str] | None = None,
        written: Mapping[str, Mapping[float, str]] | None = None,
    ) -> FeatureSchema:
        """Infer feature types from one table or from several (every task of a collection).

        Types come from *all* the tables given: a column is binary only when every value in
        every table is 0/1 (or boolean), continuous when it holds other numbers, and
        categorical when it holds text (at most ``max_categories`` distinct levels, counted
        in canonical form: ``4`` and ``4.0`` are one level).

        With several tables, a continuous column whose values in some of them lie on another
        scale than in the rest (SpO2 as a fraction in one hospital's file, a percentage in the
        others) gets one :class:`~ragim.errors.DataWarning` naming those tables, their medians
        and the rest's (:func:`scale_gaps`): pooled, the fitted mean and SD would mix the two.

        Parameters
        ----------
        X : a DataFrame, or a sequence of DataFrames with the same columns.
        units, types, descriptions : per-column overrides.
        max_categories : most distinct levels a text column may have.
        n_bins : shared GAM bins per continuous feature.
        labels : names of the tables in error messages (e.g. ``"task 'a'"``).
        written : per column, numbers its files wrote as codes in exponent notation and the
            text written (``{"ward": {30.0: "3E1"}}``, :func:`ragim.rows.exponent_codes`):
            warnings quote that text, and such a column inferred continuous gets one
            :class:`~ragim.errors.DataWarning` saying it may hold codes.

        Raises
        ------
        ValidationError
            A column that holds dates or durations (models cannot use them; the message says
            what to derive instead), numbers in one table but text in another (naming both),
            text with too many levels, complex numbers, or tables with different columns.
        """
        frames = [X] if isinstance(X, pd.DataFrame) else list(X) if isinstance(X, Sequence) else X
        if (
            not isinstance(frames, list)
            or not frames
            or not all(isinstance(f, pd.DataFrame) for f in frames)
        ):
            raise ValidationError(
                f"X must be a pandas DataFrame or a list of them, got {type(X).__name__}"
            )
        if labels is None:
            labels = ["X"] if len(frames) == 1 else [f"table {i}" for i in range(len(frames))]
        labels = list(labels)
        if len(labels) != len(frames):
            raise ValidationError(f"got {len(labels)} labels for {len(frames)} tables")
        tables = []
        for frame, label in zip(frames, labels, strict=True):
            cols = [canonical_text(str(c)) for c in frame.columns]
            dupes = sorted({c for c in cols if cols.count(c) > 1})
            if dupes:
                raise ValidationError(
                    f"{label} has duplicated columns {dupes}; every feature needs a unique name"
                )
            columns = (blank_missing_text(frame.iloc[:, j]) for j in range(frame.shape[1]))
            tables.append(dict(zip(cols, columns, strict=True)))
        cols = list(tables[0])
        for table, label in zip(tables[1:], labels[1:], strict=True):
            if set(table) != set(cols):
                raise ValidationError(
                    f"{label} has columns {sorted(table)}, but {labels[0]} has {sorted(cols)}; "
                    "every table must share one set of features"
                )
        units, types, descriptions = dict(units or {}), dict(types or {}), dict(descriptions or {})
        unknown = sorted((set(units) | set(types)) - set(cols))
        if unknown:
            raise ValidationError(f"units/types given for columns that are not in X: {unknown}")
        feats, coded, ids, sentinels, constant = [], [], [], [], []
        written = {canonical_text(str(k)): dict(v) for k, v in (written or {}).items() if v}
        exponents = []
        gaps: list[ScaleGap] = []
        for name in cols:
            t = types.get(name)
            if t is None:
                column = [table[name] for table in tables]
                t = _infer_type(name, column, labels, max_categories)
                codes = integer_codes(column, max_categories) if t == "continuous" else None
                as_written = written.get(name, {})
                if codes and as_written:
                    shown = [as_written.get(float(c), str(c)) for c in codes]
                    read = ", ".join(
                        f"{w!r} as {c}" for c, w in zip(codes, shown, strict=True) if w != str(c)
                    )
                    coded.append(f"{name!r} {shown} (exponent notation, read as numbers: {read})")
                elif codes:
                    coded.append(f"{name!r} {codes}")
                elif (
                    t == "continuous" and as_written and 4 * len(as_written) >= _n_distinct(column)
                ):
                    # a quarter of the column's values written so: codes (a few such cells
                    # among many values, a viral load of 2E2 copies/mL, are a lab's numbers)
                    w, number = next((w, n) for n, w in as_written.items())
                    exponents.append(f"{name!r} ({w!r} read as {number:g})")
                if t == "continuous" and identifier_like(name, column):
                    ids.append(repr(name))
                if (level := single_value(column)) != "":
                    constant.append(f"{name!r} (always {level})" if level else f"{name!r} (blank)")
                if t == "continuous" and (found := missing_codes(column)):
                    sentinels.append((name, found))
                dates = number_dates(column) if t == "continuous" else None
                if dates:
                    import warnings

                    warnings.warn(
                        f"column {name!r} holds whole numbers that read as dates "
                        f"(YYYYMMDD, e.g. {dates[0]}); as a feature it would be taken as an "
                        "amount: derive a number such as days from admission to the index "
                        "date and drop the column, or declare it continuous to keep it",
                        DataWarning,
                        stacklevel=user_stacklevel(),
                    )
            if t == "continuous" and len(tables) > 1:
                gaps.extend(scale_gaps(name, [table[name] for table in tables], labels))
            feats.append(
                Feature(
                    name=name,
                    type=t,
                    unit=units.get(name, ""),
                    description=descriptions.get(name, ""),
                )
            )
        if constant:
            import warnings

            warnings.warn(
                f"column(s) {', '.join(constant)} never vary in these rows, so a model cannot "
                "estimate their effect: explanations mark them not estimable. Drop them, or "
                "fit on rows where they vary",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        if sentinels:
            warn_missing_codes(sentinels)
        if gaps:
            warn_scale_gaps(gaps, units)
        if ids:
            import warnings

            warnings.warn(
                f"column(s) {', '.join(ids)} look like identifiers (a different whole number in "
                "every row): as a feature, a model would read the number as an amount. Drop "
                "them, or name the patient-id column (patient_id= of load_task_folder, "
                "--patient-id); declare a column continuous to keep it and silence this",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        if exponents:
            import warnings

            warnings.warn(
                f"column(s) {', '.join(exponents)} hold values written as numbers in exponent "
                "notation that read as small whole numbers, as codes such as ward 3E1 are: if "
                'they are codes, declare the column categorical ("type" in schema.json, types= '
                "here) to keep them as written; declare it continuous to silence this",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        if coded:
            import warnings

            warnings.warn(
                "columns holding only a few whole numbers are taken as "
                f"continuous (a trend across the values): {'; '.join(coded)}. "
                "If a number is a code (ward 1/2/4, a hospital, a type), "
                'declare the column categorical (types= here, or "type" in '
                "schema.json); declare it "
                "continuous to keep the trend and silence this",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        return cls(feats, n_bins=n_bins)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def names_of(self, kind: FeatureType) -> list[str]:
        """The names of the features of one type (``"binary"``, ``"continuous"`` or
        ``"categorical"``), in schema order: the readers keep the ``"categorical"`` ones as
        the text written (:func:`ragim.rows.read_table`).

        >>> FeatureSchema([Feature("age", "continuous"), Feature("ward", "categorical")]).names_of(
        ...     "categorical")
        ['ward']
        """
        return [f.name for f in self.features if f.type == kind]

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

        Column names are matched in canonical form (Unicode NFC, stripped), in any order.
        Raises one :class:`ValidationError` listing every problem: missing or extra
        columns, duplicated columns, dates or durations, text in numeric columns, infinite
        values, values outside {0, 1} in binary columns, and NaN where a feature allows none.
        """
        if not isinstance(X, pd.DataFrame):
            raise ValidationError(f"{where} must be a pandas DataFrame, got {type(X).__name__}")
        problems = []
        cols = [canonical_text(str(c)) for c in X.columns]
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        if dupes:
            problems.append(f"duplicated columns: {dupes}")
        missing = [n for n in self.names if n not in cols]
        extra = [c for c in cols if c not in self.names]
        if missing:
            problems.append(f"columns required by the schema are missing: {missing}")
        if extra:
            problems.append(
                f"columns not in the schema: {extra} (drop them or add them to the schema)"
            )
        if problems:
            raise ValidationError(f"{where} does not match the feature schema:", problems)
        if cols != [c for c in X.columns]:
            X = X.set_axis(cols, axis=1)
        out = {}
        for f in self.features:
            values, found = read_feature(f, X[f.name])
            problems += found
            if values is not None:
                out[f.name] = values
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
        constant: dict[str, str | None] = {}
        ranges: dict[str, list[float]] = {}
        for f in self.features:
            s = X[f.name]
            if s.isna().any():
                missing.append(f.name)
            if (level := single_value([s])) != "":
                constant[f.name] = level
            if f.type == "categorical":
                learned = sorted(
                    {
                        canonical_level(v)
                        for v in pd.unique(widen_floats(s.dropna()).to_numpy(dtype=object))
                    },
                    key=level_key,
                )
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
                if obs.size:
                    ranges[f.name] = [float(obs.min()), float(obs.max())]
                if obs.size and math.isfinite(mu) and math.isfinite(sd):
                    edges[f.name] = bin_edges(obs, self.n_bins)
                else:
                    edges[f.name] = []
        huge = sorted(n for n, v in {**medians, **means, **scales}.items() if not math.isfinite(v))
        if huge:
            raise ValidationError(
                f"columns {huge} have values too large to standardise (their "
                "mean or spread overflows); rescale them (for example to other units) first"
            )
        self.medians_, self.means_, self.scales_ = medians, means, scales
        self.missing_, self.categories_, self.bin_edges_ = missing, cats, edges
        self.constant_ = constant
        self.ranges_ = ranges
        self._cache.clear()
        self.warn_unseen_levels(
            X,
            where="the rows the schema is fitted on (levels not declared in the schema)",
            known="a level declared in the schema",
        )
        self._warn_labels_of_no_level()
        return self

    def _warn_labels_of_no_level(self) -> None:
        """One :class:`DataWarning` when ``levels`` (``schema.json``) label values that are no
        level of a fitted categorical feature: none of them is (``female``/``male`` where the
        files write ``F``/``M``), or one is a level but for letter case (``ICU`` where they
        write ``icu``). Those labels are never shown, and the levels they were meant for
        appear as written. A label of a rare level the rows lack is not said."""
        unused = []
        for f in self.features:
            cats = self.categories_.get(f.name, [])
            if f.type != "categorical" or not (stray := [k for k in f.levels if k not in cats]):
                continue
            hint = [c for k in stray for c in cats if c.casefold() == k.casefold()]
            if not hint and len(stray) < len(f.levels):
                continue  # a rare level these rows lack, not labels of another coding
            unused.append(
                f"{f.name!r} {stray[:5]} (its levels: {name_some(cats, 8)}"
                + (f"; did you mean {hint[:3]}?" if hint else "")
                + ")"
            )
        if unused:
            import warnings

            warnings.warn(
                "level labels (schema.json 'levels') name values that are no level of the "
                f"rows fitted on: {'; '.join(unused)}; those labels are never shown and the "
                "levels appear as written: key each label by the value as the files write it",
                DataWarning,
                stacklevel=user_stacklevel(),
            )

    def not_estimable(self, column: DesignColumn) -> str:
        """Why a design column's coefficient cannot be estimated from the rows the schema was
        fitted on, or ``""``: its feature never varied there ("never varies (always 5)"), or
        was blank in every row (then its missing-value indicator never varies either)."""
        self._check_fitted()
        if column.feature not in self.constant_:
            return ""
        level = self.constant_[column.feature]
        if level is None:
            return "not estimable: always blank"
        if column.role == "missing":
            return ""
        return f"not estimable: never varies (always {self[column.feature].level_label(level)})"

    # ------------------------------------------------------------------ design layout
    @property
    def design_columns(self) -> list[DesignColumn]:
        self._check_fitted()
        if "design" not in self._cache:
            cols = []
            for f in self.features:
                if f.type == "continuous":
                    cols.append(
                        DesignColumn(
                            f.name, f.name, "value", self.means_[f.name], self.scales_[f.name]
                        )
                    )
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

    def _level_lookup(self, name: str) -> dict[str, int]:
        key = ("levels", name)
        if key not in self._cache:
            self._cache[key] = {canonical_level(c): j for j, c in enumerate(self.categories_[name])}
        return self._cache[key]

    def _level_codes(self, name: str, s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(position of each value among the feature's levels, -1 when it matches none; missing
        mask), matching canonical forms (``4 == 4.0 == "4"``)."""
        lookup = self._level_lookup(name)
        vals = pd.Series(widen_floats(s).to_numpy(dtype=object), dtype=object)
        isna = vals.isna().to_numpy()
        codes = np.full(len(vals), -1, dtype=np.int64)
        if (~isna).any():
            present = vals[~isna]
            keymap = {u: lookup.get(canonical_level(u), -1) for u in pd.unique(present.to_numpy())}
            codes[~isna] = present.map(keymap).to_numpy(dtype=np.int64)
        return codes, isna

    def unseen_levels(self, X: pd.DataFrame) -> dict[str, tuple[int, list[str]]]:
        """Per categorical column: (rows whose value matches no known level, up to 3 such values).

        Such values are scored as none of the feature's levels (all of its one-hot columns
        are 0), which is unlike every known level: their risk differs from that of each
        known level. :meth:`transform` warns about them.
        """
        self._check_fitted()
        X = self.validate_frame(X)
        return {name: (n, shown[:3]) for name, (n, _, shown) in self._unseen(X).items()}

    def _unseen(self, X: pd.DataFrame) -> dict[str, tuple[int, list[str], list[str]]]:
        """Per categorical column: (rows whose value matches no known level, every such
        value in canonical form, and as written: text stripped, so a file's ``TRUE`` is
        quoted as ``TRUE``, not as the level ``1`` it reads as)."""
        out = {}
        for f in self.features:
            if f.type != "categorical":
                continue
            codes, isna = self._level_codes(f.name, X[f.name])
            bad = (codes < 0) & ~isna
            if bad.any():
                values = pd.unique(X[f.name].to_numpy(dtype=object)[bad])
                shown = [
                    strip_invisible(v) if isinstance(v, str) else canonical_level(v) for v in values
                ]
                out[f.name] = (
                    int(bad.sum()),
                    list(dict.fromkeys(map(canonical_level, values))),
                    list(dict.fromkeys(shown)),
                )
        return out

    def warn_unseen_levels(
        self, X: pd.DataFrame, *, where: str = "X", known: str = "a level of the model"
    ) -> None:
        """Warn (:class:`~ragim.errors.DataWarning`) when categorical values in ``X`` (already
        validated) match no known level: they are scored as none of the levels (all one-hot
        columns 0), unlike every known level, and the warning counts them.

        Raises
        ------
        ValidationError
            In one line, for a value that matches no level but exactly one when letter case
            is ignored (``female`` where the model knows ``Female``): it names both
            (:func:`case_only_level`; ``known`` says what the levels are), since scoring it as
            no level would be wrong.
        """
        where = named_rows(where)
        unseen = self._unseen(X)
        wrong_case = [
            problem
            for name, (_, values, _) in unseen.items()
            if (problem := case_only_level(name, values, self.categories_[name], known))
        ]
        if wrong_case:
            raise ValidationError("; ".join(wrong_case))
        warn_columns(
            f"categorical values in {where} match no level the model knows: they are scored as "
            "none of its levels (all of the column's one-hot terms 0 in a logistic model, no bin "
            "in a GAM), so their risk differs "
            "from that of every known level: ",
            [
                f"{name!r}: {n} row(s), e.g. {shown[:3]} (known: {self.categories_[name][:8]})"
                for name, (n, _, shown) in unseen.items()
            ],
        )

    def far_values(
        self, X: pd.DataFrame, *, sd: float = FAR_SD
    ) -> dict[str, tuple[int, list[float]]]:
        """Per continuous column: (rows more than ``sd`` standard deviations from the fitted
        mean, up to 3 such values). Such values are extrapolated by a logistic model and often
        mean another unit (lactate in mg/dL against mmol/L is a factor of 9).

        >>> fit = pd.DataFrame({"lactate": [1.0, 2.0, 3.0, 2.0]})
        >>> schema = FeatureSchema.infer(fit).fit(fit)
        >>> schema.far_values(pd.DataFrame({"lactate": [2.5, 18.0]}))
        {'lactate': (1, [18.0])}
        """
        self._check_fitted()
        return self._far_values(self.validate_frame(X), sd)

    def _far_values(
        self, X: pd.DataFrame, sd: float = FAR_SD
    ) -> dict[str, tuple[int, list[float]]]:
        """:meth:`far_values` of an already validated ``X``."""
        out = {}
        for f in self._fitted_continuous():
            arr = X[f.name].to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                far = np.abs(arr - self.means_[f.name]) > sd * self.scales_[f.name]
            if far.any():
                out[f.name] = (
                    int(far.sum()),
                    [float(v) for v in dict.fromkeys(arr[far].tolist())][:3],
                )
        return out

    def warn_far_values(self, X: pd.DataFrame, *, where: str = "X") -> None:
        """Warn (:class:`~ragim.errors.DataWarning`) when continuous values in ``X`` lie more
        than ``FAR_SD`` standard deviations from the means the schema was fitted on, naming
        each column with its fitted mean, standard deviation and unit (see :meth:`far_values`)."""
        self._check_fitted()
        self._warn_far_values(self.validate_frame(X), where)

    def _warn_far_values(self, X: pd.DataFrame, where: str) -> None:
        """:meth:`warn_far_values` for an already validated ``X``."""
        parts = []
        for name, (n, ex) in self._far_values(X).items():
            unit = f" {self[name].unit}" if self[name].unit else ""
            parts.append(
                f"{name!r}: {n} row(s), e.g. {[_fmt(v) for v in ex]} (fitted on mean "
                f"{_fmt(self.means_[name])}{unit}, SD {_fmt(self.scales_[name])})"
            )
        warn_columns(
            f"values in {where} lie more than {FAR_SD:g} SDs from those the model was fitted "
            "on, so their risks are extrapolated; check the units: ",
            parts,
        )

    def missing_codes(self, X: pd.DataFrame) -> dict[str, list[tuple[float, int]]]:
        """Per continuous column: the (value, count) pairs of ``X`` that look like missing-value
        codes (:data:`MISSING_CODES`) outside the range the schema was fitted on, by the rule of
        :func:`missing_codes` with the fitted SD as the spread. Schemas saved before the range
        was kept use the fitted mean +- 3 SDs as the range.

        >>> fit = pd.DataFrame({"age": [45.0, 52, 61, 66, 70, 77]})
        >>> schema = FeatureSchema.infer(fit).fit(fit)
        >>> schema.missing_codes(pd.DataFrame({"age": [-9, 60, -9, 99]}))
        {'age': [(-9.0, 2)]}
        """
        self._check_fitted()
        return self._missing_codes(self.validate_frame(X))

    def _missing_codes(self, X: pd.DataFrame) -> dict[str, list[tuple[float, int]]]:
        """:meth:`missing_codes` of an already validated ``X``."""
        out = {}
        for f in self._fitted_continuous():
            mu, sd = self.means_[f.name], self.scales_[f.name]
            low, high = self.ranges_.get(f.name, (mu - 3 * sd, mu + 3 * sd))
            found = far_codes(X[f.name].to_numpy(dtype=float), low=low, high=high, spread=sd)
            if found:
                out[f.name] = found
        return out

    def scale_shifts(
        self, X: pd.DataFrame, *, min_rows: int = 5
    ) -> dict[str, tuple[float, float, float, float]]:
        """Per continuous column whose values in ``X`` as a whole lie on another scale than
        the rows the schema was fitted on: (median in ``X``, fitted median, fitted minimum,
        fitted maximum). A column is listed when it has at least ``min_rows`` values in ``X``
        and their median lies outside the fitted range (most new rows beyond every fitted
        one): weight in pounds for a model fitted in kilograms, or a file that writes 0 in
        every row for a measurement it did not record. The 8-SD check of :meth:`far_values`
        counts only the extreme rows of such a file. Schemas saved before the range was kept
        use the fitted mean +- 3 SDs as the range.

        >>> fit = pd.DataFrame({"weight": [52.0, 64, 71, 78, 85, 97]})
        >>> schema = FeatureSchema.infer(fit).fit(fit)
        >>> schema.scale_shifts(pd.DataFrame({"weight": [121.0, 150, 172, 190, 214]}))
        {'weight': (172.0, 74.5, 52.0, 97.0)}
        """
        self._check_fitted()
        return self._scale_shifts(self.validate_frame(X), min_rows)

    def _scale_shifts(
        self, X: pd.DataFrame, min_rows: int = 5
    ) -> dict[str, tuple[float, float, float, float]]:
        """:meth:`scale_shifts` of an already validated ``X``."""
        out = {}
        for f in self._fitted_continuous():
            v = X[f.name].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size < min_rows:
                continue
            mu, sd = self.means_[f.name], self.scales_[f.name]
            low, high = self.ranges_.get(f.name, (mu - 3 * sd, mu + 3 * sd))
            median = float(np.median(v))
            if median < low or median > high:
                out[f.name] = (median, self.medians_[f.name], float(low), float(high))
        return out

    def _warn_scale_shifts(self, X: pd.DataFrame, where: str) -> None:
        """Warn (:class:`~ragim.errors.DataWarning`) about the columns of :meth:`scale_shifts`,
        naming each with both medians, the fitted range and the factor between the medians."""
        parts = []
        for name, (median, fitted, low, high) in self._scale_shifts(X).items():
            unit = f" {self[name].unit}" if self[name].unit else ""
            if median > 0 and fitted > 0:
                factor = max(median / fitted, fitted / median)
                way = "larger" if median > fitted else "smaller"
                factor = f", {_fmt(factor)} times {way}"
            elif median == 0:
                factor = " (0 is often written for a value not recorded: declare it missing)"
            else:
                factor = ""
            parts.append(
                f"{name!r}: median {_fmt(median)} against {_fmt(fitted)}{unit} in the fitted rows "
                f"(range {_fmt(low)} to {_fmt(high)}){factor}"
            )
        warn_columns(
            f"values in {where} lie, as a whole, outside the range the model was fitted on: "
            "their median is beyond every fitted value, so every row may be on another scale "
            "(another unit, such as pounds against kilograms, or a code written for a value "
            "not recorded) and the risks are wrong; check the units: ",
            parts,
        )

    def _fitted_continuous(self) -> list[Feature]:
        """The continuous features with fitted statistics."""
        return [f for f in self.features if f.type == "continuous" and f.name in self.means_]

    def warn_missing_codes(self, X: pd.DataFrame, *, where: str = "X") -> None:
        """Warn (:class:`~ragim.errors.DataWarning`) about the values of :meth:`missing_codes`,
        naming each column, value and count, and how to declare them missing."""
        self._check_fitted()
        self._warn_missing_codes(self.validate_frame(X), where)

    def _warn_missing_codes(self, X: pd.DataFrame, where: str) -> None:
        """:meth:`warn_missing_codes` for an already validated ``X``."""
        found = self._missing_codes(X)
        if found:
            warn_missing_codes(list(found.items()), where=where)

    def warn_new_rows(self, X: pd.DataFrame, *, where: str = "X") -> None:
        """The warnings for rows a fitted model scores: a column whose values as a whole lie
        outside the fitted range (:meth:`scale_shifts`), values far from the fitted ones,
        missing-value codes, blanks the model has no term for, and values of a column that
        never varied in the fitted rows. ``X`` is validated once for all four. Inside
        :func:`rows_named`, the warnings name the rows as it says, not ``where``."""
        self._check_fitted()
        where = named_rows(where)
        X = self.validate_frame(X)
        self._warn_scale_shifts(X, where)
        self._warn_far_values(X, where)
        self._warn_missing_codes(X, where)
        self.warn_unexpected_missing(X, where=where)
        self.warn_new_values_of_constant_columns(X, where=where)

    def new_values_of_constant_columns(self, X: pd.DataFrame) -> dict[str, tuple[str, int]]:
        """Per column that never varied in the rows the schema was fitted on (``constant_``):
        its one fitted value (canonical form) and how many rows of ``X`` hold another value.
        The model never saw such a column vary, so it has no estimate of what the new value
        does: its coefficient is 0 (or, in a GAM, its shape is flat)."""
        self._check_fitted()
        out = {}
        for name, level in self.constant_.items():
            if level is None or name not in X.columns:
                continue
            values = X[name].dropna().to_numpy(dtype=object)
            try:
                other = sum(canonical_level(v) != level for v in values)
            except (ValidationError, TypeError):  # odd values: validate_frame names them
                continue
            if other:
                out[name] = (level, int(other))
        return out

    def warn_new_values_of_constant_columns(self, X: pd.DataFrame, *, where: str = "X") -> None:
        """Warn (:class:`~ragim.errors.DataWarning`) about the rows of
        :meth:`new_values_of_constant_columns`, naming each column, its fitted value and the
        count."""
        warn_columns(
            f"columns in {where} that never varied in the rows the model was fitted on hold "
            "other values, so the model has no estimate of their effect (it counts as none): ",
            [
                f"{name!r}: {n} row(s) differ from {self[name].level_label(level)}"
                for name, (level, n) in self.new_values_of_constant_columns(X).items()
            ],
        )

    def unexpected_missing(self, X: pd.DataFrame) -> dict[str, int]:
        """Per column that was never missing in the rows the schema was fitted on (so the model
        has no missing-value term for it): how many rows of ``X`` (already validated) leave it
        blank. Such a blank is scored as the training median (continuous and binary columns)
        or as no level (categorical: all its one-hot columns 0, unlike every known level), not
        as missing."""
        self._check_fitted()
        return {
            f.name: int(n)
            for f in self.features
            if f.name not in self.missing_ and (n := X[f.name].isna().sum())
        }

    def warn_unexpected_missing(self, X: pd.DataFrame, *, where: str = "X") -> None:
        """Warn (:class:`~ragim.errors.DataWarning`) about the blanks of
        :meth:`unexpected_missing`, naming each column and the value its blanks are scored as."""
        parts = []
        for name, n in self.unexpected_missing(X).items():
            f = self[name]
            if f.type == "categorical":
                scored = (
                    "no level (all its one-hot terms 0 in a logistic model, no bin in a GAM, "
                    "unlike every known level)"
                )
            else:
                unit = f" {f.unit}" if f.unit else ""
                scored = f"the training median {_fmt(self.medians_[name])}{unit}"
                if f.type == "binary" and self.medians_[name] not in (0.0, 1.0):
                    scored += " (bin 0 in a GAM, which has a bin per value)"
            parts.append(f"{name!r}: {n} row(s), scored as {scored}")
        warn_columns(
            f"blank values in {where} in columns that were never missing in the rows the model "
            "was fitted on, so it has no term for them and they are filled in; the risks "
            "assume a typical value: ",
            parts,
        )

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """The standardised design matrix, shape (n_rows, n_design), float64.

        Categorical values match the fitted levels in canonical form (``4``, ``4.0`` and
        ``"4"`` are one level); a value that matches no level gives all-zero one-hot
        columns (unlike every known level) and a :class:`~ragim.errors.DataWarning` that
        counts such rows, and one that matches a level only when letter case is ignored
        (``female`` for ``Female``) raises a :class:`~ragim.errors.ValidationError` naming both.
        """
        self._check_fitted()
        X = self.validate_frame(X)
        self.warn_unseen_levels(X)
        n = len(X)
        out = np.zeros((n, self.n_design))
        j = 0
        for f in self.features:
            s = X[f.name]
            if f.type == "categorical":
                codes, isna = self._level_codes(f.name, s)
                n_cat = len(self.categories_[f.name])
                ok = codes >= 0
                out[np.flatnonzero(ok), j + codes[ok]] = 1.0
                j += n_cat
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
            labels = [
                f"{_fmt(lo)}..{_fmt(hi)}" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
            ]
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
        """Bin index of every value, shape (n_rows, n_features); -1 means "no bin" (contributes 0,
        with a :class:`~ragim.errors.DataWarning` for categorical values of no known level; one
        that matches a level only when letter case is ignored raises, as in :meth:`transform`)."""
        self._check_fitted()
        X = self.validate_frame(X)
        self.warn_unseen_levels(X)
        out = np.empty((len(X), len(self.features)), dtype=np.int64)
        for k, f in enumerate(self.features):
            labels = self.bin_labels(f.name)
            miss_bin = len(labels) - 1 if f.name in self.missing_ else -1
            s = X[f.name]
            if f.type == "categorical":
                idx, isna = self._level_codes(f.name, s)
                idx[isna] = miss_bin
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
            if self.constant_:  # only when some column never varied: older schemas keep their JSON
                d["fitted"]["constant"] = self.constant_
            if self.ranges_:  # schemas fitted before ranges were kept keep their JSON
                d["fitted"]["ranges"] = self.ranges_
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSchema:
        """Inverse of :meth:`to_dict` (a schema written by hand needs only ``features``).

        The fitted state, when there is one, is checked before it is used
        (:func:`ragim.checks.check_loaded`): every statistic is a finite number (not a bool,
        not text), scales are positive, bin edges increasing, each table holds a value for
        exactly the features of its type (medians for binary and continuous features; means,
        scales and bin edges for continuous ones; categories for categorical ones), the
        missing-value columns are features, and the statistics agree with the fitted range of
        values they were computed from.

        Raises
        ------
        ValidationError
            ``"not a valid FeatureSchema description: <field> ..."`` naming the first wrong
            field (``fitted.means.age must be a number, got True``), or
            ``"fitted schema state is inconsistent:"`` listing what disagrees.
        """
        bad = "not a valid FeatureSchema description"
        if not isinstance(d, Mapping):
            raise ValidationError(f"{bad}: expected an object, got {type(d).__name__}")
        if not isinstance(d.get("features"), list) or not all(
            isinstance(f, Mapping) for f in d["features"]
        ):
            raise ValidationError(f"{bad}: 'features' must be a list of objects")
        try:
            schema = cls(
                [
                    Feature(**{**f, "categories": _as_levels(f.get("categories", ()))})
                    for f in d["features"]
                ],
                n_bins=d.get("n_bins", 8),
            )
            fitted = d.get("fitted")
            if fitted is not None and not isinstance(fitted, Mapping):
                raise ValidationError(
                    f"{bad}: fitted must be an object, got {type(fitted).__name__}"
                )
            if fitted:
                try:
                    f = check_loaded(fitted, _FITTED, "fitted")
                except ValidationError as exc:
                    raise ValidationError(f"{bad}: {exc}") from None
                schema.medians_, schema.means_ = f["medians"], f["means"]
                schema.scales_, schema.bin_edges_ = f["scales"], f["bin_edges"]
                schema.missing_, schema.categories_ = f["missing"], f["categories"]
                schema.constant_ = f.get("constant", {})
                ranges = f.get("ranges", {})
                short = [k for k, v in ranges.items() if len(v) != 2]
                if short:
                    raise ValidationError(
                        f"{bad}: fitted.ranges.{short[0]} must be [min, max], "
                        f"got {ranges[short[0]]}"
                    )
                schema.ranges_ = ranges
                schema._check_consistent()
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError, IndexError) as exc:
            if isinstance(exc, ValidationError):
                raise
            raise ValidationError(f"{bad}: missing or malformed {exc}") from exc
        return schema

    def _check_consistent(self):
        problems = []
        kinds = {f.name: f.type for f in self.features}
        for key, table in (
            ("medians", self.medians_),
            ("means", self.means_),
            ("scales", self.scales_),
            ("bin_edges", self.bin_edges_),
            ("ranges", self.ranges_),
            ("categories", self.categories_),
            ("constant", self.constant_),
        ):
            for name in table or {}:
                if name not in kinds:
                    problems.append(f"fitted.{key} names {name!r}, which is not a feature")
                elif kinds[name] not in _FITTED_FOR[key]:
                    problems.append(
                        f"fitted.{key} holds a value for {name!r}, a {kinds[name]} feature, "
                        f"which has none (only {' and '.join(_FITTED_FOR[key])} features do)"
                    )
        for name in repeated(self.missing_):
            problems.append(f"fitted.missing lists {name!r} more than once")
        for name in self.missing_:
            if name not in kinds:
                problems.append(f"fitted.missing names {name!r}, which is not a feature")
        for f in self.features:
            if f.type == "categorical":
                if f.name not in self.categories_:
                    problems.append(f"categorical feature {f.name!r} has no fitted categories")
            else:
                if f.name not in self.medians_:
                    problems.append(f"feature {f.name!r} has no fitted median")
                if f.type == "continuous" and any(
                    f.name not in d for d in (self.means_, self.scales_, self.bin_edges_)
                ):
                    problems.append(f"continuous feature {f.name!r} has no fitted mean/scale/bins")
            if f.type == "binary" and not 0 <= self.medians_.get(f.name, 0.0) <= 1:
                problems.append(
                    f"fitted median of binary feature {f.name!r} must lie in [0, 1] (its values "
                    f"are 0 and 1), got {self.medians_[f.name]}"
                )
        for stats in (self.medians_, self.means_, self.scales_):
            for name, v in (stats or {}).items():
                if not math.isfinite(v):
                    problems.append(f"fitted statistic for {name!r} is not finite")
        for name, (lo, hi) in self.ranges_.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                problems.append(f"fitted range of {name!r} must be finite with min <= max")
            else:
                problems += self._outside_range(name, lo, hi)
        for name, v in (self.scales_ or {}).items():
            if not v > 0:
                problems.append(f"fitted scale of {name!r} must be positive, got {v}")
        for name, cats in (self.categories_ or {}).items():
            canon = [canonical_level(c) for c in cats]
            same = sorted({c for c in canon if canon.count(c) > 1}, key=level_key)
            if same:
                problems.append(
                    f"categorical feature {name!r} lists one level in several forms {same} "
                    "(4, 4.0 and '04' are one level)"
                )
        for name, e in (self.bin_edges_ or {}).items():
            if not all(math.isfinite(x) for x in e) or any(
                b <= a for a, b in zip(e, e[1:], strict=False)
            ):
                problems.append(f"bin edges of {name!r} must be finite and increasing")
            if len(e) > self.n_bins - 1:
                problems.append(
                    f"fitted.bin_edges.{name} holds {len(e)} edges, more than the "
                    f"{self.n_bins - 1} that n_bins={self.n_bins} quantile bins have"
                )
        if problems:
            raise ValidationError("fitted schema state is inconsistent:", problems)

    def _outside_range(self, name: str, lo: float, hi: float) -> list[str]:
        """The statistics of continuous feature ``name`` that its fitted range ``[lo, hi]`` (the
        observed values they were computed from, in :meth:`fit`) rules out: a median, mean or
        bin edge outside it (each is a median, mean or quantile of values inside it), or a
        scale above half its width (no SD of values in ``[lo, hi]`` exceeds ``(hi - lo) / 2``,
        Popoviciu's inequality) unless 1.0, the scale of a column that never varied."""
        tol = 1e-9 * max(1.0, abs(lo), abs(hi))  # the rounding of a mean or a rounded quantile
        out = []
        for what, v in (("median", self.medians_.get(name)), ("mean", self.means_.get(name))):
            if v is not None and not lo - tol <= v <= hi + tol:
                out.append(
                    f"fitted {what} of {name!r} ({v:g}) lies outside its fitted range "
                    f"[{lo:g}, {hi:g}], the values it was computed from"
                )
        edges = self.bin_edges_.get(name) or []
        if edges and not (lo - tol <= min(edges) and max(edges) <= hi + tol):
            out.append(
                f"fitted bin edges of {name!r} reach outside its fitted range [{lo:g}, {hi:g}], "
                "the values they are quantiles of"
            )
        scale = self.scales_.get(name)
        if scale is not None and scale != 1.0 and scale > (hi - lo) / 2 * (1 + 1e-9) + tol:
            out.append(
                f"fitted scale of {name!r} ({scale:g}) exceeds half its fitted range "
                f"[{lo:g}, {hi:g}], more than any SD of values in that range"
            )
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> FeatureSchema:
        d = parse_json(text, "schema JSON is not valid JSON")
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
            row = {
                "feature": f.name,
                "type": f.type,
                "unit": f.unit,
                "description": f.description,
                "label": f.display_name,
            }
            if self.is_fitted:
                row["missing_indicator"] = f.name in self.missing_
                row["n_bins"] = len(self.bin_labels(f.name))
            rows.append(row)
        return pd.DataFrame(rows)


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")
#: day-first or month-first dates as spreadsheets write them: 31/12/2024, 31.12.24, 12-31-2024,
#: 2024/12/31, optionally with a time
_WRITTEN_DATE = re.compile(
    r"(\d{1,2}[./-]\d{1,2}[./-](\d{4}|\d{2})|\d{4}[./]\d{1,2}[./]\d{1,2})"
    r"([ T]\d{1,2}:\d{2}(:\d{2})?)?"
)
_MONTHS = (
    "january jan februar february feb march mar april apr may june jun july jul august aug "
    "september sept sep october oct november nov december dec "
    "januar jänner jän märz mär mrz mai juni juli oktober okt dezember dez"  # German
).split()
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY, _YEAR, _GAP = r"\d{1,2}(st|nd|rd|th)?", r"(\d{4}|\d{2})", r"[-/.,]?\s*"
#: dates with the month as a word: 19-Oct-1992, 19OCT1992 (SAS), Oct 19 1992, 19 October 1992,
#: October 19, 1992, 1992-Oct-19, Mon, 19 Oct 1992, optionally with a time. A day and a year
#: are required, so a month written alone ("Oct", "May 2020") stays text.
_NAMED_DATE = re.compile(
    r"((mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+)?"
    rf"({_DAY}{_GAP}{_MONTH}{_GAP}{_YEAR}|{_MONTH}{_GAP}{_DAY}([-/.,]\s*|\s+){_YEAR}"
    rf"|\d{{4}}{_GAP}{_MONTH}{_GAP}\d{{1,2}})"
    r"([ T:]\s*\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(\s*[ap]\.?m\.?)?)?",
    re.IGNORECASE,
)
_TEMPORAL_OBJECTS = (
    datetime.date,
    datetime.timedelta,
    datetime.time,
    np.datetime64,
    np.timedelta64,
)


_ROWS_NAME: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ragim_rows_name", default=None
)


@contextlib.contextmanager
def rows_named(name: str) -> Iterator[None]:
    """Within this block, the warnings about rows a model scores
    (:meth:`FeatureSchema.warn_new_rows`, :meth:`FeatureSchema.warn_unseen_levels`) name the
    rows ``name`` (``"--rows north.csv"``, ``"row 3 of --rows north.csv"``) instead of the
    caller's variable (``X``, ``X_row``); the CLI reads files inside it.

    >>> with rows_named("--rows north.csv"):
    ...     named_rows("X")
    '--rows north.csv'
    >>> named_rows("X")
    'X'
    """
    token = _ROWS_NAME.set(name)
    try:
        yield
    finally:
        _ROWS_NAME.reset(token)


def named_rows(where: str) -> str:
    """The name the rows have in messages: the innermost :func:`rows_named`, else ``where``."""
    return _ROWS_NAME.get() or where


def value_kind(s: pd.Series) -> str:
    """What a column holds: "empty", "bool", "numeric", "text", "datetime", "timedelta",
    "period" or "complex" (dtype first, then the Python objects of an object column: numbers,
    ``decimal.Decimal`` among them, are "numeric"; booleans and the text ``true``/``false`` in
    any case, as ``read_csv(dtype=str)``, Excel or SQL give what ``read_csv`` makes booleans,
    are "bool")."""
    vals = s.dropna()
    if len(vals) == 0:
        return "empty"
    dt = s.dtype
    if pd.api.types.is_bool_dtype(dt):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dt):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dt):
        return "timedelta"
    if isinstance(dt, pd.PeriodDtype):
        return "period"
    if pd.api.types.is_complex_dtype(dt):
        return "complex"
    if pd.api.types.is_numeric_dtype(dt):
        return "numeric"
    raw = vals.to_numpy(dtype=object)
    if any(isinstance(v, list | dict | set | tuple | np.ndarray) for v in raw):
        return "text"  # unhashable values: the text checks name them
    objs = list(pd.unique(raw))
    if any(isinstance(v, datetime.timedelta | np.timedelta64) for v in objs):
        return "timedelta"
    if any(isinstance(v, _TEMPORAL_OBJECTS) or isinstance(v, pd.Period) for v in objs):
        return "datetime"
    if all(isinstance(v, bool | np.bool_) or truth_text(v) is not None for v in objs):
        return "bool"
    if all(
        isinstance(v, int | float | np.integer | np.floating | decimal.Decimal)
        and not isinstance(v, bool | np.bool_)
        for v in objs
    ):
        return "numeric"  # decimal.Decimal: a DECIMAL column of Parquet or a database
    if all(
        isinstance(v, str)
        and (
            _ISO_DATE.fullmatch(v.strip())
            or _WRITTEN_DATE.fullmatch(v.strip())
            or _NAMED_DATE.fullmatch(v.strip())
        )
        for v in objs
    ):
        return "datetime"
    return "text"


def case_only_level(
    name: str, values: Iterable[str], levels: Sequence[str], known: str = "a level of the model"
) -> str:
    """The one-line problem for the first of ``values`` (canonical levels that match none of
    ``levels``) that matches exactly one of ``levels`` when letter case is ignored, or ``""``.

    Such a value (``female`` where the model knows ``Female``) is almost surely that level
    written another way; scored as no level, the patient would get a risk unlike every level's.

    >>> print(case_only_level("sex", ["f"], ["F", "M"]))
    column 'sex' value 'f' is not a level of the model; did you mean 'F'? levels: ['F', 'M']
    >>> case_only_level("sex", ["other"], ["Female", "Male"])
    ''
    """
    folded: dict[str, list[str]] = {}
    for level in levels:
        folded.setdefault(str(level).casefold(), []).append(str(level))
    for v in values:
        if v is None:
            continue
        match = folded.get(str(v).casefold(), [])
        if len(match) == 1:
            shown = list(levels[:20]) + (["..."] if len(levels) > 20 else [])
            return (
                f"column {name!r} value {v!r} is not {known}; did you mean {match[0]!r}? "
                f"levels: {shown}"
            )
    return ""


def truth_as_numbers(s: pd.Series) -> pd.Series:
    """``s`` with the text ``true``/``false`` in any case (:func:`~ragim.canonical.truth_text`)
    as 1.0/0.0, as booleans are read; other values unchanged. Only object, string and
    categorical columns can hold such text (they come back as object columns when they do);
    any other is returned as it is. Missing values (``pd.NA`` too) become NaN.

    >>> truth_as_numbers(pd.Series(["TRUE", "false", None, "1"])).tolist()
    [1.0, 0.0, nan, '1']
    """
    if not (
        s.dtype == object
        or isinstance(s.dtype, pd.StringDtype | pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(s.dtype)
    ):
        return s
    read = {}
    try:
        for v in pd.unique(s.dropna().to_numpy(dtype=object)):
            if (t := truth_text(v)) is not None:
                read[v] = float(t)
    except TypeError:  # unhashable values (a list in a cell): the checks of the caller name them
        return s
    if not read:
        return s
    obj = s.astype(object)
    return obj.where(obj.notna(), np.nan).map(lambda v: read.get(v, v) if isinstance(v, str) else v)


def blank_missing_text(s: pd.Series) -> pd.Series:
    """``s`` with its text cells that mean "missing" (blank, or one of
    :data:`~ragim.canonical.MISSING_TEXT`: ``NA``, ``N/A``, ``null``, ...) missing, as a CSV
    file's are read: a DataFrame and the same table saved as CSV read alike. Columns that hold
    no text are returned as they are; ``"None"`` written as text is a value.

    >>> blank_missing_text(pd.Series(["None", "NA", " null", "Light", ""])).tolist()
    ['None', nan, nan, 'Light', nan]
    """
    if not (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)):
        return s
    try:
        found = [v for v in pd.unique(s.to_numpy(dtype=object)) if is_missing_text(v)]
        mask = s.isin(found).to_numpy(dtype=bool) if found else None
    except TypeError:  # unhashable cells (lists): other checks name them
        mask = s.map(is_missing_text).to_numpy(dtype=bool)
    return s if mask is None or not mask.any() else s.astype(object).mask(mask)


def read_feature(feature: Feature, s: pd.Series) -> tuple[pd.Series | np.ndarray | None, list[str]]:
    """One column's values as ragim reads them for ``feature``, and what is wrong with them.

    A categorical column comes back as an object Series with None where a value is missing
    (its levels are matched later, in :func:`~ragim.canonical.canonical_level` form); any
    other as a float64 array with NaN where a value is missing (booleans, and the text
    ``true``/``false`` in any case, are 1/0; numerals written as text are their numbers). The
    problems are one line each, naming the column:
    dates or durations, complex numbers, lists (or other containers) in a cell, text that is no
    number, infinite values, values other than 0/1 in a binary column, and missing values
    where the feature allows none. The values are None when the column cannot be read at all.
    :meth:`FeatureSchema.validate_frame` reads every column with it, and so does the pipeline
    of :func:`ragim.export.to_sklearn_pipeline`.

    >>> read_feature(Feature("grade", "categorical"), pd.Series(["2", None]))[0].tolist()
    ['2', None]
    >>> values, problems = read_feature(Feature("lactate"), pd.Series(["1.5", "unknown"]))
    >>> problems
    ["column 'lactate' (continuous) has non-numeric values, e.g. ['unknown'] in 1 row(s); ..."]
    """
    problems: list[str] = []
    s = blank_missing_text(s)
    kind = value_kind(s)
    if kind in ("datetime", "timedelta", "period"):
        return None, [temporal_problem(feature.name, kind)]
    if kind == "complex":
        return None, [f"column {feature.name!r} ({feature.type}) holds complex numbers"]
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in (
        "mixed",
        "unknown-array",
    ):
        odd = [v for v in s if isinstance(v, list | dict | set | tuple | np.ndarray)]
        if odd:
            held = "categories" if feature.type == "categorical" else "values"
            return None, [
                f"column {feature.name!r} ({feature.type}) holds {type(odd[0]).__name__} "
                f"values, e.g. {odd[0]!r}; {held} must be text or numbers, one per cell"
            ]
    if feature.type == "categorical":
        s = widen_floats(s)  # float32 1.1 is the level 1.1
        s = s.astype(object).where(s.notna(), None)
        values, nan_mask = s, s.isna().to_numpy()
    else:
        if kind in ("bool", "text"):  # "TRUE"/"false" text reads as the booleans it writes
            s = truth_as_numbers(s)
        if pd.api.types.is_bool_dtype(s) or kind == "bool":
            s = s.astype(float)
        if kind == "text" and (found := thousands_separator(s.dropna().to_numpy(dtype=object))):
            return None, [thousands_problem(feature.name, found, pandas_thousands_fix(found[0]))]
        try:
            num = pd.to_numeric(s, errors="coerce")
        except TypeError:  # unhashable or otherwise odd objects
            num = pd.Series(np.nan, index=s.index)
        bad = num.isna() & s.notna()
        if bad.any():
            distinct: dict[str, Any] = {}
            for v in s[bad]:
                distinct.setdefault(str(v), v)
            examples = list(distinct.values())[:3]
            n_bad, n_values = int(bad.sum()), int(s.notna().sum())
            if advice := number_text_advice([*s[bad], *s[~bad & s.notna()].head(20)]):
                hint = f" in {n_bad} of {n_values} row(s); {advice}"
            elif _looks_like_missing_codes(n_bad, n_values, len(distinct)):
                hint = f" in {n_bad} row(s); " + missing_marker_hint(examples)
            else:
                held = (
                    "a binary column holds 0/1 (or True/False)"
                    if feature.type == "binary"
                    else f"a {feature.type} column holds numbers"
                )
                hint = (
                    f" in {n_bad} of {n_values} row(s); {held}: declare it categorical "
                    '("type": "categorical" in schema.json, types= in Python) to keep these '
                    "values as its levels, or recode them as numbers"
                )
            return None, [
                f"column {feature.name!r} ({feature.type}) has non-numeric values, e.g. "
                f"{examples}" + hint
            ]
        values = num.to_numpy(dtype=float)
        if np.isinf(values).any():
            problems.append(
                f"column {feature.name!r} has infinite values at rows "
                f"{np.where(np.isinf(values))[0][:5].tolist()}"
            )
        if feature.type == "binary":
            vals = set(np.unique(values[np.isfinite(values)]).tolist())
            if other := sorted(vals - {0.0, 1.0}):
                more = f" and {len(other) - 5} more" if len(other) > 5 else ""
                problems.append(
                    f"binary column {feature.name!r} has values other than 0/1: {other[:5]}{more}"
                )
        nan_mask = np.isnan(values)
    if not feature.allow_missing and nan_mask.any():
        problems.append(
            f"column {feature.name!r} has {int(nan_mask.sum())} missing "
            "values but the schema allows none"
        )
    return values, problems


def temporal_problem(name: str, kind: str, where: str = "") -> str:
    """The message for a date, duration or period column: models cannot use it as is."""
    at = f" in {where}" if where else ""
    if kind == "timedelta":
        return (
            f"column {name!r} holds durations{at}; models need a number in a "
            f"stated unit: convert it, e.g. X[{name!r}].dt.total_seconds() / "
            "86400 for days, and give its unit in the schema"
        )
    return (
        f"column {name!r} holds dates{at}; a model cannot use a calendar date (a "
        "new date would match nothing): derive a number such as days from "
        "admission to the index date, or the age at admission, and drop the date column"
    )


DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")
#: for each thousands separator: a number written with it (1.718, 12.345.678, 1.718,5), and a
#: number written without it (961, 961,5)
_GROUPED = {
    ".": (re.compile(r"-?[1-9]\d{0,2}(\.\d{3})+(,\d+)?"), re.compile(r"-?\d+(,\d+)?")),
    ",": (re.compile(r"-?[1-9]\d{0,2}(,\d{3})+(\.\d+)?"), re.compile(r"-?\d+(\.\d+)?")),
    # French and Swiss exports: a space (plain, no-break or narrow no-break) or an apostrophe
    **{
        mark: (
            re.compile(rf"-?[1-9]\d{{0,2}}({mark}\d{{3}})+(\.\d+)?"),
            re.compile(r"-?\d+(\.\d+)?"),
        )
        for mark in (" ", "\u00a0", "\u202f", "'")
    },
}
#: a percentage written with its sign: ``35%``, ``12.5 %``
_PERCENT = re.compile(r"-?\d+([.,]\d+)?\s*%")
#: a number written with ',' digit groups and an optional '.' decimal part (``1,000``)
_COMMA_GROUPED = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?")
#: a result reported against a detection limit: ``<0.5``, ``< 5``, ``>1000``, ``<=0.1``, ``≤0.1``
_LIMIT = re.compile(r"(<=?|>=?|≤|≥)\s*-?\d+([.,]\d+)?")
#: a number followed by a unit: ``99 bpm``, ``72kg``, ``5.1 mmol/L``, ``37.2 °C``
_UNIT_SUFFIX = re.compile(r"-?\d+([.,]\d+)?\s*(?P<unit>[^\d\s.,+-].*)")
#: units written after numbers in clinical exports (casefolded); any unit with a "/" after a
#: letter (``breaths/min``, ``mEq/L``) counts too. Single letters do not (ward ``5A``).
UNIT_WORDS = frozenset(
    "bpm /min kg g/dl g/l mg/dl mg/l mmol/l µmol/l μmol/l umol/l mmhg kpa cm mm ml dl mg "
    "mcg µg μg iu u/l iu/l °c °f degc kg/m2 kg/m² lb lbs years yrs yr months days hours hrs h "
    "min mins sec ms cmh2o l/min ml/min".split()
)

#: how to read numbers written with a decimal comma
DECIMAL_COMMA_FIX = (
    "read the file with thousands='.' (load_task_folder, read_rows; --thousands .), which "
    "takes ',' as the decimal mark, or in pandas pd.read_csv(..., decimal=',')"
)


def thousands_separator(values: Iterable[Any]) -> tuple[str, list[str], list[str]] | None:
    """``(separator, up to 3 values written with it, 2 values written without it)`` when the
    text among ``values`` reads as numbers written with a thousands separator (``'1.718'``
    for 1718, as a German spreadsheet writes it; ``'1,718'`` in English); else None.

    The rule is conservative, so that a number written with 3 decimals is not taken for one:
    every text value holding the separator is 1 to 3 digits (not starting with 0) then groups
    of exactly 3 digits (``1.718``, ``12.345.678``, ``1.718,5``), every other text value is a
    number written without it, and at least 2 distinct ones of those have 3 digits before
    any decimal mark (``961``, ``961,2``; not missing-value codes such as 999): written in
    full beside the grouped ones, they show the column runs from hundreds into thousands. A
    space (plain, no-break or narrow) or an apostrophe between groups (French and Swiss
    exports) is no decimal mark, so 2 distinct grouped values are enough.
    ``1.250`` among ``0.5``-``3`` mmol/L, a column of ``1.015``-``1.030`` with ``999`` for
    missing, or one whose values all hold the separator, is not taken for one.

    >>> thousands_separator(["1.718", "961", "7.395", "516", None])
    ('.', ['1.718', '7.395'], ['961', '516'])
    >>> thousands_separator(["1,718", "961.5", "516", "250"])
    (',', ['1,718'], ['961.5', '516'])
    >>> thousands_separator(["1.250", "0.5", "2", "3"]) is None  # mmol/L with 3 decimals
    True
    >>> nbsp = chr(0xA0)  # a no-break space between the digit groups
    >>> thousands_separator([f"2{nbsp}430", f"3{nbsp}120", None])[0] == nbsp
    True
    """
    texts = list(dict.fromkeys(v.strip() for v in values if isinstance(v, str) and v.strip()))
    for mark, (grouped, plain) in _GROUPED.items():
        holding = [t for t in texts if mark in t]
        if not holding or not all(grouped.fullmatch(t) for t in holding):
            continue
        rest = [t for t in texts if mark not in t]
        if not all(plain.fullmatch(t) for t in rest):
            continue
        hundreds: dict[str, str] = {}  # by the digits before any decimal mark
        for t in rest:
            digits = re.split("[.,]", t.lstrip("-"))[0]
            if (
                len(digits) == 3
                and digits[0] != "0"
                and not (digits == t and int(t) in MISSING_CODES)
            ):
                hundreds.setdefault(digits, t)
        if len(hundreds) >= 2 or (mark not in ".," and len(holding) >= 2):
            # a space or an apostrophe between digit groups is no decimal mark: no values
            # written in full are needed to tell the two apart
            return mark, holding[:3], list(hundreds.values())[:2]
    return None


def pandas_thousands_fix(mark: str) -> str:
    """How to read numbers written with the thousands separator ``mark`` with pandas: its C
    parser ignores a separator that is not one byte in UTF-8 (the no-break spaces of French
    and Swiss exports) and leaves the numbers as text, so those need ``engine="python"``.

    >>> pandas_thousands_fix(",")
    "write them without it (pandas: pd.read_csv(..., thousands=','))"
    >>> pandas_thousands_fix(chr(0xA0)).endswith("engine='python'))")
    True
    """
    engine = "" if len(mark.encode()) == 1 else ", engine='python'"
    return f"write them without it (pandas: pd.read_csv(..., thousands={mark!r}{engine}))"


def thousands_problem(name: str, found: tuple[str, list[str], list[str]], fix: str) -> str:
    """The message for a column of numbers written with a thousands separator
    (:func:`thousands_separator`'s ``found``), ending with how to read them (``fix``)."""
    mark, grouped, plain = found
    beside = f" beside {plain} written in full" if plain else ""
    return (
        f"column {name!r} holds numbers written with {mark!r} as a thousands separator (e.g. "
        f"{grouped}{beside}), which would be "
        + ("read as decimals" if mark == "." else "read as text")
        + f"; {fix}"
    )


def decimal_comma_values(values: Iterable[Any]) -> list[str]:
    """Up to 3 text values written as numbers with a decimal comma (``'1,5'``), when every
    text value among ``values`` is such a number or a plain integer; else an empty list.

    >>> decimal_comma_values(["1,5", "2", "0,75", None])
    ['1,5', '0,75']
    >>> decimal_comma_values(["1,5", "high"])
    []
    >>> decimal_comma_values(["1,718", "961", "516"])  # see thousands_separator
    []
    """
    texts = [v.strip() for v in values if isinstance(v, str) and v.strip()]
    if (found := thousands_separator(texts)) and found[0] == ",":
        return []  # '1,718' beside '961': a thousands separator, not a decimal comma
    commas = list(dict.fromkeys(t for t in texts if DECIMAL_COMMA.fullmatch(t)))
    if not commas or any(
        not (DECIMAL_COMMA.fullmatch(t) or t.lstrip("+-").isdigit()) for t in texts
    ):
        return []
    return commas[:3]


def unit_suffix(text: str) -> str | None:
    """The unit written after the number in ``text`` (``"99 bpm"`` -> ``"bpm"``), or None when
    ``text`` is not a number followed by a unit (:data:`UNIT_WORDS`, or a unit with a ``/``).

    >>> [unit_suffix(t) for t in ("99 bpm", "5.1 mmol/L", "72kg", "5A", "3E1", "icu", "99")]
    ['bpm', 'mmol/L', 'kg', None, None, None, None]
    """
    m = _UNIT_SUFFIX.fullmatch(text.strip())
    if not m:
        return None
    unit = m.group("unit").strip()
    folded = unit.casefold()
    if folded in UNIT_WORDS or re.fullmatch(r"[^\W\d_][^/\s]*/[^\s]+", unit):
        return unit
    return None


def number_text_advice(values: Iterable[Any], *, limits: bool = True) -> str:
    """The advice for a column whose text values are numbers in a form a model cannot read,
    or "" when they are not: numbers with a decimal comma (``1,5``), percentages written with
    their sign (every text value like ``35%``), numbers written with a unit (``99 bpm``,
    ``5.1 mmol/L``: :func:`unit_suffix`, among plain numbers or not), or (with ``limits``)
    results reported against a detection limit (``<0.5``, ``>1000``) among plain numbers.
    Generic advice (declare missing, declare categorical) would be wrong for these: declaring
    ``<0.5`` missing fills in a typical value for a very low one.

    >>> print(number_text_advice(["35%", "40%"]))  # doctest: +ELLIPSIS
    they are percentages written with '%' (e.g. ['35%', '40%']): write them as numbers ...
    >>> print(number_text_advice(["1.2", "<0.5", "3.1"]))  # doctest: +ELLIPSIS
    ['<0.5'] look like results reported against a detection limit: ...
    >>> print(number_text_advice(["99 bpm", "72"]))  # doctest: +ELLIPSIS
    they are numbers written with a unit (e.g. ['99 bpm']): write the numbers alone (99 ...
    >>> print(number_text_advice(["1,000", "63.0"]))  # doctest: +ELLIPSIS
    they are numbers written with a thousands separator (e.g. ['1,000']): write them without ...
    >>> print(number_text_advice(["1,5", "2.5", "5"]))  # doctest: +ELLIPSIS
    they look like numbers written with a decimal comma (e.g. ['1,5']) among numbers written ...
    >>> number_text_advice(["<65", ">=65"]), number_text_advice(["icu", "3"])  # age groups
    ('', '')
    """
    values = list(values)
    texts = [v.strip() for v in values if isinstance(v, str) and v.strip()]
    if not texts:
        return ""
    if commas := decimal_comma_values(texts):
        return f"they look like numbers with a decimal comma (e.g. {commas}): {DECIMAL_COMMA_FIX}"
    commas = list(
        dict.fromkeys(
            t for t in texts if DECIMAL_COMMA.fullmatch(t) and not _COMMA_GROUPED.fullmatch(t)
        )
    )  # '1,5', not '1,000' (a thousands separator, below)
    if commas and all(
        t in commas or (plain_numeral(t) and "," not in t) for t in texts
    ):  # '1,5' among '2.5': reading the file with a decimal comma would misread the rest
        return (
            f"they look like numbers written with a decimal comma (e.g. {commas[:3]}) among "
            f"numbers written with a decimal point: write them with '.' "
            f"({commas[0].replace(',', '.')} for {commas[0]!r}); declaring them missing would "
            "blank real values"
        )
    grouped = list(dict.fromkeys(t for t in texts if _COMMA_GROUPED.fullmatch(t)))
    if grouped and all(_COMMA_GROUPED.fullmatch(t) or plain_numeral(t) for t in texts):
        whole = grouped[0].replace(",", "")
        return (
            f"they are numbers written with a thousands separator (e.g. {grouped[:3]}): write "
            f"them without it ({whole} for {grouped[0]!r}), or read the file with "
            "thousands=',' (--thousands ',')"
        )
    if all(_PERCENT.fullmatch(t) for t in texts):
        shown = list(dict.fromkeys(texts))[:3]
        return (
            f"they are percentages written with '%' (e.g. {shown}): write them as numbers "
            "(35 for '35%') and give the column the unit '%' (\"unit\" in schema.json)"
        )
    units = [t for t in texts if unit_suffix(t)]
    if units and all(unit_suffix(t) or plain_numeral(t) for t in texts):
        shown = list(dict.fromkeys(units))[:3]
        number = shown[0][: -len(unit_suffix(shown[0]) or "")].strip()
        return (
            f"they are numbers written with a unit (e.g. {shown}): write the numbers alone "
            f'({number} for {shown[0]!r}), in the column\'s one unit ("unit" in schema.json, '
            "the unit a saved model was fitted in)"
        )
    found = list(dict.fromkeys(t for t in texts if _LIMIT.fullmatch(t))) if limits else []
    others = [t for t in texts if not _LIMIT.fullmatch(t)]
    if (
        found
        and all(plain_numeral(t) for t in others)
        and (others or any(not isinstance(v, str) for v in values if not is_missing(v)))
    ):
        return (
            f"{found[:3]} look like results reported against a detection limit: a model needs "
            "a number, so write one (the limit itself, or half a lower limit, a common "
            "convention) and say so in your methods; declaring them missing would fill in a "
            "typical value for a very low or very high one"
        )
    words = list(dict.fromkeys(t for t in texts if t.casefold() in RESULT_WORDS))
    numbers = [t for t in texts if plain_numeral(t)] or [
        v for v in values if not isinstance(v, str) and not is_missing(v)
    ]
    if words and limits and numbers and all(t in words or plain_numeral(t) for t in texts):
        return (
            f"{words[:3]} look like results written as words among numbers: a model needs a "
            "number, so write one (a value typical of that result in your laboratory) or drop "
            "the rows, and say so in your methods; declaring them missing would fill in a "
            "typical value for a high or low one"
        )
    return ""


#: words that laboratories write for a result in place of its number (a semi-quantitative
#: result), which are data, not missing-value markers
RESULT_WORDS = frozenset(
    {
        "high",
        "low",
        "normal",
        "elevated",
        "raised",
        "positive",
        "negative",
        "pos",
        "neg",
        "trace",
        "abnormal",
        "hi",
        "lo",
        "critical",
        "undetectable",
        "detected",
        "not detected",
    }
)


def number_dates(series: Sequence[pd.Series], share: float = 0.95) -> list[int] | None:
    """Up to 3 values of a numeric column when at least ``share`` of its values, over every
    table, are whole numbers that read as calendar dates written YYYYMMDD (years 1900–2099);
    else None. The rest may be sentinels for a missing date (``0``, ``99999999``).

    >>> number_dates([pd.Series([20240101, 20231231.0]), pd.Series([19991015])])
    [20240101, 20231231, 19991015]
    >>> number_dates([pd.Series([20240101] * 19 + [99999999])])  # one sentinel in 20
    [20240101]
    >>> number_dates([pd.Series([20241301, 20240132, 20240101])]) is None  # month 13, day 32
    True
    """
    values = []
    for s in series:
        num = pd.to_numeric(s.dropna().astype(object), errors="coerce")
        if num.isna().any():
            return None
        values.append(num.to_numpy(dtype=float))
    v = np.concatenate(values) if values else np.zeros(0)
    if not len(v):
        return None
    whole = np.isfinite(v) & (v >= 19000101) & (v <= 20991231) & (v == np.round(v))
    if whole.mean() < share:
        return None
    candidates = v[whole].astype(np.int64)
    parsed = pd.to_datetime(pd.Series(candidates.astype(str)), format="%Y%m%d", errors="coerce")
    dates = candidates[parsed.notna().to_numpy()]
    if len(dates) < share * len(v):
        return None
    return [int(d) for d in pd.unique(dates)[:3]]


def integer_codes(series: Sequence[pd.Series], max_categories: int = 12) -> list[int] | None:
    """The sorted values of a numeric column when they are 3 to ``max_categories`` distinct
    whole numbers over every table, each seen twice on average (values that may be codes rather
    than amounts), else None.

    >>> integer_codes([pd.Series([1, 2, 4, 2]), pd.Series([4.0, 1.0])])
    [1, 2, 4]
    >>> integer_codes([pd.Series([40, 48, 56, 64])]) is None  # as many values as rows
    True
    >>> integer_codes([pd.Series([0.5, 1, 2, 0.5, 1, 2])]) is None
    True
    """
    values: set = set()
    n_obs = 0
    for s in series:
        num = pd.to_numeric(s.dropna().astype(object), errors="coerce")
        if num.isna().any():
            return None
        n_obs += len(num)
        values.update(num.unique().tolist())
        if len(values) > max_categories:
            return None
    if len(values) < 3 or n_obs < 2 * len(values):
        return None
    if not all(math.isfinite(v) and float(v).is_integer() for v in values):
        return None
    return sorted(int(v) for v in values)


def warn_columns(head: str, parts: list[str]) -> None:
    """One :class:`~ragim.errors.DataWarning`: ``head`` and the per-column ``parts`` joined by
    "; ", attributed to the caller of the schema method that calls this; none without parts."""
    if parts:
        import warnings

        warnings.warn(head + "; ".join(parts), DataWarning, stacklevel=user_stacklevel())


def single_value(series: Sequence[pd.Series]) -> str | None:
    """The one value a column holds over every table, in canonical form (``"5"``), None when
    every cell is blank, and ``""`` when it holds two values or more: a column that never
    varies has no estimable effect.

    >>> single_value([pd.Series([5, 5.0]), pd.Series([None, 5])]), single_value([pd.Series([None])])
    ('5', None)
    >>> single_value([pd.Series([0, 1])])
    ''
    """
    seen: set = set()
    try:
        for s in series:
            for v in pd.unique(s.dropna().to_numpy(dtype=object)):
                seen.add(canonical_level(v))
                if len(seen) > 1:
                    return ""
    except (ValidationError, TypeError):  # lists, infinities: other checks name them
        return ""
    return next(iter(seen)) if seen else None


def missing_codes(series: Sequence[pd.Series], sd: float = FAR_SD) -> list[tuple[float, int]]:
    """The (value, count) pairs of a numeric column, over every table, that look like
    missing-value codes: a value of :data:`MISSING_CODES` that lies outside the range of the
    column's other values, more than ``sd`` robust standard deviations (the scaled median
    absolute deviation) beyond it, or, in a column that is never negative, more than 2 of them
    below its minimum or any of -9, -99, -999, -9999 (:data:`NEGATIVE_NINES`). Empty when there
    are fewer than 5 other values.

    >>> creatinine = pd.Series([0.8, 1.1, 0.9, 1.4, 0.7, 1.0, -99, -99])
    >>> missing_codes([creatinine])
    [(-99.0, 2)]
    >>> missing_codes([pd.Series([0.4, 0.8, 1.1, 0.9, 2.5, -1])])  # a lab value is never negative
    [(-1.0, 1)]
    >>> missing_codes([pd.Series([61, 45, 52, 70, 66, 58, 77, 99])])  # ages: 77 and 99 are ages
    []
    """
    arrays = []
    for s in series:
        s = s.dropna()
        num = s if pd.api.types.is_numeric_dtype(s) else pd.to_numeric(s, errors="coerce")
        arrays.append(num.to_numpy(dtype=float))
    v = np.concatenate(arrays) if arrays else np.zeros(0)
    v = v[np.isfinite(v)]
    coded = np.isin(v, MISSING_CODES)
    rest = v[~coded]
    if not coded.any() or rest.size < 5:
        return []
    center = float(np.median(rest))
    spread = 1.4826 * float(np.median(np.abs(rest - center)))
    if spread <= 0:
        q1, q3 = np.percentile(rest, [25, 75])
        spread = float(q3 - q1) / 1.349 or float(rest.std())
    return far_codes(v, low=float(rest.min()), high=float(rest.max()), spread=spread, sd=sd)


def far_codes(
    values: np.ndarray, *, low: float, high: float, spread: float, sd: float = FAR_SD
) -> list[tuple[float, int]]:
    """The (value, count) pairs of ``values`` that are :data:`MISSING_CODES` lying outside
    ``[low, high]`` by more than ``sd`` times ``spread``, or, when ``low >= 0`` (a column that
    is never negative), below it by more than 2 times ``spread`` or at any distance for
    :data:`NEGATIVE_NINES`. :func:`missing_codes` measures the range and spread on a column's
    other values; :meth:`FeatureSchema.missing_codes` uses the range and SD the schema was
    fitted on.

    >>> far_codes(np.array([-9.0, -9.0, 70.0]), low=29, high=77, spread=9.0)
    [(-9.0, 2)]
    >>> far_codes(np.array([-9.0, -1.0, 12.0]), low=0, high=191, spread=30.0)  # age in months
    [(-9.0, 1)]
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    found = []
    coded = v[np.isin(v, MISSING_CODES)]
    for value, count in zip(*np.unique(coded, return_counts=True), strict=True):
        gap = low - value if value < low else value - high
        below_never_negative = value < 0 <= low and (gap > 2 * spread or value in NEGATIVE_NINES)
        if gap > sd * spread or below_never_negative:
            found.append((float(value), int(count)))
    return found


def warn_missing_codes(
    found: Sequence[tuple[str, Sequence[tuple[float, int]]]],
    *,
    stacklevel: int | None = None,
    where: str = "",
) -> None:
    """One :class:`~ragim.errors.DataWarning` for the columns whose values look like
    missing-value codes (``(column, missing_codes(...))`` pairs), naming each value and its
    count, and how to declare it missing. ``where`` names rows scored by a fitted model (e.g.
    ``"X"``): the warning then says the values lie outside the range it was fitted on, and how
    to declare them when reading rows to score."""
    import warnings

    parts = [
        f"{name!r} holds " + ", ".join(f"{_fmt(value)} in {count} row(s)" for value, count in codes)
        for name, codes in found
    ]
    values = sorted({int(value) for _, codes in found for value, _ in codes})
    listed = ",".join(map(str, values))
    if where:
        head = (
            f"values in {where} that look like missing-value codes, outside the range the model "
            f"was fitted on: {'; '.join(parts)}. They are scored as real measurements; if they "
            f"mean 'missing', declare them: read_rows(..., na_values={values}) or --na-values "
            f"{listed} (ragim predict, score, adapt, explain)"
        )
    else:
        head = (
            f"values that look like missing-value codes, outside the rest of their column: "
            f"{'; '.join(parts)}. They would be fitted as real measurements; if they mean "
            f"'missing', declare them: load_task_folder(..., na_values={values}) or --na-values "
            f"{listed}"
        )
    warnings.warn(
        f"{head} (pandas: pd.read_csv(..., na_values=...)), or make those cells blank "
        f"(X.replace({values}, np.nan))",
        DataWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1,
    )


class ScaleGap(NamedTuple):
    """One continuous column whose values in some tables lie on another scale than in the
    rest (:func:`scale_gaps`): ``tables`` holds (label, median) of each such table; ``median``,
    ``low`` and ``high`` are the median and 1st and 99th percentiles of the rest, pooled."""

    column: str
    tables: list[tuple[str, float]]
    median: float
    low: float
    high: float
    n_rest: int


def _finite_values(s: pd.Series) -> np.ndarray:
    """The finite numbers of a column (text that is not a number dropped)."""
    s = s.dropna()
    num = s if pd.api.types.is_numeric_dtype(s) else pd.to_numeric(s, errors="coerce")
    try:
        v = num.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):  # complex numbers, lists: other checks name them
        return np.zeros(0)
    return v[np.isfinite(v)]


def scale_gaps(
    column: str,
    series: Sequence[pd.Series],
    labels: Sequence[str],
    *,
    ratio: float = SCALE_RATIO,
    min_rows: int = 5,
) -> list[ScaleGap]:
    """The tables whose values of a continuous column lie on another scale than the rest's:
    SpO2 written as a fraction (0.95) in one hospital's file and as a percentage (95) in the
    others, or lactate in mg/dL among files in mmol/L. Pooled, such a table makes the shared
    schema's mean and SD (the "+1 SD" of every explanation) mix two scales, and the fitted
    effect per unit flattens; :meth:`FeatureSchema.far_values` catches the same gap in new
    rows, this catches it in the training tables. Empty, or one :class:`ScaleGap`.

    The rule, on medians and percentiles only (a few extreme rows move neither):

    1. each table with at least ``min_rows`` finite values has a median; the tables' median of
       these medians is the consensus (a majority of tables, however large any one table is);
    2. a table is a candidate when the consensus is positive and the table's median is 0 (a
       file that writes 0 for a value it does not record: infinitely many times smaller) or
       positive and differs from it by a factor of ``ratio`` (:data:`SCALE_RATIO`, 2) or
       more; the rest (every other table with a median) is pooled;
    3. a candidate is flagged when its median lies outside the rest's pooled 1st-99th
       percentile *and* differs from the rest's pooled median by ``ratio`` or more.

    Both conditions are needed: a factor alone would flag a real subgroup of a skewed lab
    (one site's CRP median 4 mg/L against 40 in intensive care, where values of 4 are common)
    and the percentile alone would flag any site whose patients differ (ages 55 +- 10 against
    70 +- 8: a factor of 1.3). Columns that are zero or negative at their centre (base excess,
    counts that are mostly 0) have no ratio and are not checked, nor is a column in one table.
    The rest is pooled only from the tables that are not candidates, so several files in the
    other unit do not widen its range; when half of the tables are in each unit the lower
    ones are named (the message shows both medians). The cost is one sort per column, and a
    pooled percentile only for a column with a candidate.

    >>> pct = [pd.Series(np.linspace(90.0, 100.0, 20) + k) for k in range(-2, 2)]
    >>> gaps = scale_gaps("spo2", pct + [pd.Series(np.linspace(0.9, 1.0, 20))], list("abcde"))
    >>> [(g.column, g.tables) for g in gaps]
    [('spo2', [('e', 0.95)])]
    >>> zero = scale_gaps("hr", pct + [pd.Series(np.zeros(20))], list("abcde"))
    >>> [(g.column, g.tables) for g in zero]
    [('hr', [('e', 0.0)])]
    >>> scale_gaps("age", [pd.Series(np.linspace(35.0, 75, 30)),
    ...                    pd.Series(np.linspace(54.0, 86, 30))], ["young", "old"])
    []
    """
    arrays = [_finite_values(s) for s in series]
    sizes = np.array([a.size for a in arrays])
    usable = np.flatnonzero(sizes >= min_rows)
    if usable.size < 2:
        return []
    n = sizes[usable]
    values = np.concatenate([arrays[i] for i in usable])
    groups = np.repeat(np.arange(usable.size), n)
    ordered = values[np.lexsort((values, groups))]  # sorted within each table
    starts = np.concatenate(([0], np.cumsum(n)[:-1]))
    medians = (ordered[starts + (n - 1) // 2] + ordered[starts + n // 2]) / 2
    consensus = float(np.median(medians))
    if not consensus > 0:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.maximum(medians / consensus, consensus / medians)
    candidate = (medians >= 0) & (factor >= ratio)
    if not candidate.any() or candidate.all():
        return []
    rest = ordered[np.repeat(~candidate, n)]
    low, center, high = (float(q) for q in np.percentile(rest, [1, 50, 99]))
    if not center > 0:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.maximum(medians / center, center / medians)
    flagged = candidate & ((medians < low) | (medians > high)) & (gap >= ratio)
    if not flagged.any():
        return []
    tables = [(str(labels[usable[i]]), float(medians[i])) for i in np.flatnonzero(flagged)]
    return [ScaleGap(column, tables, center, low, high, int((~candidate).sum()))]


def warn_scale_gaps(
    gaps: Sequence[ScaleGap],
    units: Mapping[str, str] | None = None,
    *,
    stacklevel: int | None = None,
) -> None:
    """One :class:`~ragim.errors.DataWarning` for the columns of :func:`scale_gaps`, naming per
    column the tables, their medians against the rest's median, percentiles and unit, and the
    factor between them."""
    import warnings

    units = units or {}
    parts = []
    for g in gaps:
        unit = f" {units[g.column]}" if units.get(g.column) else ""
        shown = [f"{label} (median {_fmt(m)})" for label, m in g.tables[:3]]
        more = f" and {len(g.tables) - 3} more" if len(g.tables) > 3 else ""
        factors = [max(m / g.median, g.median / m) for _, m in g.tables if m != 0]
        if factors:
            lo, hi = min(factors), max(factors)
            factor = f"{_fmt(lo)}" if _fmt(lo) == _fmt(hi) else f"{_fmt(lo)} to {_fmt(hi)}"
            lower = all(m < g.median for _, m in g.tables)
            higher = all(m > g.median for _, m in g.tables)
            way = " smaller" if lower else " larger" if higher else ""
            factor = f", {factor} times{way}"
        else:
            factor = ""
        zero = (
            f"; a median of 0 is often 0 written for a value not recorded: if so, declare it "
            f"missing (na_values={{{g.column!r}: [0]}})"
            if any(m == 0 for _, m in g.tables)
            else ""
        )
        if factors and not zero:
            change = unit_change(sum(factors) / len(factors))
            zero = (
                f": the factor of {change}"
                if change
                else ": no common unit change gives "
                "this factor, so the patients may differ (a paediatric or intensive-care site)"
            )
        parts.append(
            f"{g.column!r} in {', '.join(shown)}{more} against a median of {_fmt(g.median)}{unit} "
            f"in the other {g.n_rest} table(s) (1st-99th percentile {_fmt(g.low)} to "
            f"{_fmt(g.high)}){factor}{zero}"
        )
    warnings.warn(
        f"values on another scale in some tables: {'; '.join(parts)}. Pooled, the shared "
        "schema's mean and SD (the '+1 SD' of every explanation) mix the two and the fitted "
        "effects flatten. If those files use another unit, convert them to the others' unit; "
        "if their patients differ (children among adults, an intensive-care unit among wards), "
        "the values are real: keep them and ignore this",
        DataWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel + 1,
    )


#: (factor, change) of the unit changes clinical exports make, for :func:`unit_change`
UNIT_CHANGES = (
    (2.2046, "pounds against kilograms"),
    (2.54, "inches against centimetres"),
    (2.665, "degrees Fahrenheit against Celsius near body temperature"),
    (7.5006, "mmHg against kPa"),
    (9.008, "lactate in mg/dL against mmol/L"),
    (10.0, "g/L against g/dL"),
    (12.0, "months against years"),
    (18.016, "glucose in mg/dL against mmol/L"),
    (38.67, "cholesterol in mg/dL against mmol/L"),
    (88.42, "creatinine in umol/L against mg/dL"),
    (100.0, "a fraction against a percentage"),
    (1000.0, "a unit a thousand times another (mg against g, mL against L)"),
)


def unit_change(factor: float, *, tolerance: float = 0.08) -> str:
    """The common unit change (:data:`UNIT_CHANGES`) whose factor is within ``tolerance``
    (relative) of ``factor`` (>= 1), as '2.2 (pounds against kilograms)'; else "".

    >>> unit_change(2.21), unit_change(3.75)
    ('2.205 (pounds against kilograms)', '')
    """
    for f, change in UNIT_CHANGES:
        if abs(factor / f - 1) <= tolerance:
            return f"{_fmt(f)} ({change})"
    return ""


#: column names that read as identifiers (id, mrn, patient_no, record_number, ...)
_ID_WORD = re.compile(
    r"(^|[^a-z])(ids?|mrn|nr|no|num|number|key|uuid|guid|record|encounter|admission)([^a-z]|$)",
    re.IGNORECASE,
)
_ID_CAMEL = re.compile(r"[a-z]I[dD]$|^ID")  # PatientID, recordId, IDnumber
#: the fewest rows in one table before a column of distinct whole numbers reads as identifiers
ID_MIN_ROWS = 20


def identifier_like(name: str, series: Sequence[pd.Series]) -> bool:
    """Whether a numeric column looks like an identifier rather than a measurement: in every
    table its values are distinct whole numbers (one per row), some table holds at least
    :data:`ID_MIN_ROWS` of them, and either its name reads as an identifier (``id``, ``mrn``,
    ``patient_no``, ``PatientID``, ...) or each table's values are consecutive (row numbers).

    >>> rows = pd.Series(range(100, 130))
    >>> identifier_like("mrn", [rows]), identifier_like("row", [rows])
    (True, True)
    >>> identifier_like("age_days", [pd.Series(range(0, 300, 10))])
    False
    >>> identifier_like("uric_acid", [pd.Series(range(0, 300, 10))])  # "id" inside a word
    False
    >>> identifier_like("mrn", [pd.Series([3, 3] + list(range(28)))])  # repeated: not one per row
    False
    """
    named = bool(_ID_WORD.search(str(name)) or _ID_CAMEL.search(str(name)))
    consecutive, longest = True, 0
    for s in series:
        num = pd.to_numeric(s.dropna().astype(object), errors="coerce")
        if num.isna().any():
            return False
        v = num.to_numpy(dtype=float)
        if not len(v):
            continue
        if not (np.isfinite(v).all() and (v == np.round(v)).all()) or len(np.unique(v)) < len(v):
            return False
        longest = max(longest, len(v))
        consecutive &= bool(v.max() - v.min() == len(v) - 1)
    return longest >= ID_MIN_ROWS and (named or consecutive)


def _infer_type(
    name: str, series: list[pd.Series], labels: list[str], max_categories: int
) -> FeatureType:
    kinds = [(value_kind(s), s, label) for s, label in zip(series, labels, strict=True)]
    seen = [k for k in kinds if k[0] != "empty"]
    for kind, _, label in seen:
        if kind in ("datetime", "timedelta", "period"):
            raise ValidationError(temporal_problem(name, kind, label if len(labels) > 1 else ""))
        if kind == "complex":
            raise ValidationError(
                f"column {name!r} holds complex numbers; features must be real numbers or text"
            )
    if not seen:
        return "continuous"
    text = [k for k in seen if k[0] == "text"]
    numeric = [k for k in seen if k[0] in ("numeric", "bool")]
    if text and numeric:  # a table whose text is all numerals ("4", "4.0") agrees with the numbers
        numeral = [
            k
            for k in text
            if pd.to_numeric(truth_as_numbers(k[1].dropna()), errors="coerce").notna().all()
        ]
        numeric += [("numeric", s, label) for _, s, label in numeral]
        text = [k for k in text if not any(k is n for n in numeral)]
    if text and numeric:
        _, ts, tlabel = text[0]
        example = next(str(v) for v in ts.dropna() if isinstance(v, str))
        raise ValidationError(
            f"column {name!r} holds numbers in {numeric[0][2]} but text in "
            f"{tlabel} (e.g. {example!r}); "
            'fix the values or declare its type (types= here, or "type" in schema.json)'
        )
    if numeric:
        if all(k[0] == "bool" for k in numeric):
            return "binary"
        vals = set()
        for _, s, _ in numeric:
            vals.update(
                pd.unique(
                    pd.to_numeric(truth_as_numbers(s.dropna().astype(object)), errors="coerce")
                ).tolist()
            )
        return "binary" if vals <= {0, 1} else "continuous"
    written = [v for _, s, _ in text for v in s.dropna().to_numpy(dtype=object)]
    tables = [label for _, _, label in text] if len(labels) > 1 else []
    within = f" (in {name_some(tables)})" if tables else ""
    if found := thousands_separator(written):
        raise ValidationError(
            thousands_problem(
                name,
                found,
                pandas_thousands_fix(found[0]),
            )
            + within
        )
    if advice := number_text_advice(written, limits=False):  # decimal commas, percentages
        raise ValidationError(f"column {name!r}{within} is text, but {advice}")
    levels: set = set()
    table_levels: list[set] = []
    hidden: dict[str, str] = {}
    for _, s, label in text:
        _check_text_column(name, s, label if len(labels) > 1 and len(text) > 1 else "")
        written_levels = pd.unique(widen_floats(s.dropna()).to_numpy(dtype=object))
        table_levels.append({canonical_level(v) for v in written_levels})
        levels.update(table_levels[-1])
        hidden.update(
            (v, label) for v in written_levels if isinstance(v, str) and invisible_characters(v)
        )
    if hidden:
        import warnings

        shown = [f"{v!r} in {lab} (read as {canonical_level(v)!r})" for v, lab in hidden.items()]
        codes = sorted({c for v in hidden for c in invisible_characters(v)})
        warnings.warn(
            f"column {name!r} has values with invisible characters {codes[:3]}, which are not "
            f"part of a level: {'; '.join(shown[:3])}",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    if len(levels) > max_categories:
        one_per_row = all(s.dropna().nunique() == s.notna().sum() for _, s, _ in text)
        as_numbers = pd.to_numeric(pd.Series(written, dtype=object), errors="coerce")
        if as_numbers.notna().all():
            example = next(str(v) for v in written if isinstance(v, str))
            advice = (
                f"its values are numbers stored as text (e.g. {example!r}): convert the column "
                "to numbers (pd.to_numeric), or save it as numbers"
            )
        elif one_per_row:
            advice = (
                "it looks like an identifier (a different value in every row): drop it, or name "
                "it as the patient-id column (patient_id= of load_task_folder, --patient-id)"
            )
        else:
            advice = "encode it as numbers, or declare it categorical with its categories"
        where = f" in {name_some(tables)}" if tables else ""
        raise ValidationError(
            f"column {name!r} is text with {len(levels)} distinct values{where} (more than "
            f"max_categories={max_categories}); {advice}"
        )
    if len(text) > 1 and (apart := separate_level_sets(table_levels, [k[2] for k in text])):
        import warnings

        shown = [
            f"{name_some(tables)} hold {own} where the other tables hold {main}"
            for tables, own, main in apart
        ]
        warnings.warn(
            f"column {name!r} is coded with levels that share none with the other tables': "
            f"{'; '.join(shown)}. Each code becomes a level of its own, so the same patients "
            "get a different term by table (a site's coding, not an effect); if they mean the "
            "same, write them one way in every file",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    folded: dict[str, list[str]] = {}
    for level in levels:
        folded.setdefault(str(level).strip().casefold(), []).append(str(level))
    clashes = [" / ".join(map(repr, sorted(v))) for v in folded.values() if len(v) > 1]
    if clashes:
        import warnings

        warnings.warn(
            f"column {name!r} has categories that differ only in letter case "
            f"({'; '.join(sorted(clashes)[:3])}): they are kept as different categories; if "
            "they mean the same, write them one way in every file",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    return "categorical"


def separate_level_sets(
    levels: Sequence[set], labels: Sequence[str]
) -> list[tuple[list[str], list[str], list[str]]]:
    """The tables whose levels of one categorical column share none with the other tables':
    ``F``/``M`` in one hospital's files, ``Female``/``Male`` in the rest's. Tables are grouped
    when they share a level; the group with the most tables is the main one, and every other
    group with at least 2 levels is returned as (its table labels, its levels, the main
    group's levels), levels sorted. A table that lacks a rare level still shares the others,
    and a column with one value per table (a site column) has groups of one level, so
    neither is returned; nor is a group whose levels match the main group's when letter case
    is ignored (that case clash has its own warning).

    Parameters
    ----------
    levels : per table, its canonical levels (:func:`~ragim.canonical.canonical_level`).
    labels : the tables' names, same length.

    >>> separate_level_sets([{"F", "M"}, {"Female", "Male"}, {"Female", "Male"}], ["n", "s", "e"])
    [(['n'], ['F', 'M'], ['Female', 'Male'])]
    >>> separate_level_sets([{"a", "b"}, {"a"}, {"North"}], ["x", "y", "z"])
    []
    """
    parent = list(range(len(levels)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[Any, int] = {}
    for i, table in enumerate(levels):
        for level in table:
            parent[root(i)] = root(first.setdefault(level, i))
    groups: dict[int, list[int]] = {}
    for i, table in enumerate(levels):
        if table:
            groups.setdefault(root(i), []).append(i)
    if len(groups) < 2:
        return []
    members = sorted(groups.values(), key=len, reverse=True)

    def union(idx: list[int]) -> list[str]:
        return sorted({str(v) for i in idx for v in levels[i]}, key=level_key)

    main = union(members[0])
    folded = {v.casefold() for v in main}
    if len(main) < 2:
        return []
    return [
        ([str(labels[i]) for i in idx], own, main)
        for idx in members[1:]
        if len(own := union(idx)) >= 2 and not folded & {v.casefold() for v in own}
    ]


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
        key = canonical_level(k)
        if key is None:
            raise ValidationError(f"feature {name!r}: a level to label is missing (None or NaN)")
        out[key] = v
    if ftype == "binary" and not set(out) <= {"0", "1"}:
        raise ValidationError(
            f"binary feature {name!r} has level labels for {sorted(set(out) - {'0', '1'})}; "
            "a binary feature's values are 0 and 1"
        )
    return out


def _level_or_none(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{name} must be a level (text) or null, got {value!r}")
    return value


#: what :meth:`FeatureSchema.from_dict` requires of a fitted state (:func:`check_loaded`)
_FITTED = {
    "medians": {"*": float},
    "means": {"*": float},
    "scales": {"*": partial(check_number, gt=0)},
    "missing": [str],
    "categories": {"*": [str]},
    "bin_edges": {"*": [float]},
    "constant?": {"*": _level_or_none},  # absent when no column was constant
    "ranges?": {"*": [float]},  # absent in schemas fitted before ranges were kept
}

#: the feature types that each fitted table holds a value for
_FITTED_FOR = {
    "medians": ("binary", "continuous"),
    "means": ("continuous",),
    "scales": ("continuous",),
    "bin_edges": ("continuous",),
    "ranges": ("continuous",),
    "categories": ("categorical",),
    "constant": _TYPES,
}


def _as_levels(categories: Any) -> Any:
    """A feature's declared ``categories`` as a tuple; text is passed on for :class:`Feature`
    to refuse (``tuple("abc")`` would make three levels of it)."""
    return categories if isinstance(categories, str | bytes) else tuple(categories)


def _feature_dict(f: Feature) -> dict[str, Any]:
    """A feature as JSON; ``label`` and ``levels`` only when set, so schemas saved before they
    existed keep their exact JSON (and fingerprint)."""
    d = asdict(f) | {"categories": list(f.categories)}
    for key in ("label", "levels"):
        if not d[key]:
            del d[key]
    return d


def _n_distinct(column: Sequence[pd.Series]) -> int:
    """The number of distinct values in a column's tables, missing values aside."""
    return len(set().union(*(set(s.dropna().tolist()) for s in column)))


def _check_text_column(name: str, s: pd.Series, where: str = "") -> None:
    """Reject text columns that hold unhashable objects or mix numbers with text."""
    at = f" in {where}" if where else ""
    vals = s.dropna()
    odd = [v for v in vals if isinstance(v, list | dict | set | tuple | np.ndarray)]
    if odd:
        raise ValidationError(
            f"column {name!r}{at} holds {type(odd[0]).__name__} values; features must be "
            "numbers or text"
        )
    # numbers, and text written as plain numerals ("30", "4.0"); not "3E1" (a ward), "+5", "inf"
    is_num = [
        plain_numeral(v)
        or (isinstance(v, int | float | np.number | decimal.Decimal) and not isinstance(v, bool))
        for v in vals
    ]
    n_num = sum(is_num)
    if 0 < n_num < len(vals):
        words = [str(v).strip() for v, x in zip(vals, is_num, strict=True) if not x]
        text = list(dict.fromkeys(words))
        if 2 * len(words) > len(vals):
            return  # mostly text (ward 'icu', 'ward', '3E1', '30'): a categorical column
        shown = f"{text[:5]}" + (f" and {len(text) - 5} more" if len(text) > 5 else "")
        declare = 'declare the column categorical (types= here, or "type" in schema.json)'
        advice = number_text_advice(vals.tolist()) or (
            f"{missing_marker_hint(text[:5])}; otherwise fix the values, or {declare}"
            if _looks_like_missing_codes(len(words), len(vals), len(text))
            else f"{declare}, or fix the values"
        )
        raise ValidationError(
            f"column {name!r}{at} mixes numbers with text: {shown} in {len(words)} of "
            f"{len(vals)} row(s); {advice}"
        )


def _looks_like_missing_codes(n_text: int, n_values: int, n_distinct: int) -> bool:
    """Whether text found among numbers may be missing-value codes (``.``, ``unknown``): a few
    distinct codes (at most 5) in at most half of the values. Text in most of a column is its
    data (ward ``icu``, ``ward``, ``3E1``, ``30``: categories), not markers to blank.

    >>> _looks_like_missing_codes(3, 60, 1), _looks_like_missing_codes(48, 60, 3)
    (True, False)
    """
    return n_distinct <= 5 and 2 * n_text <= n_values


def missing_marker_hint(values: Sequence[Any]) -> str:
    """The advice for text found among numbers: declare it missing, if that is what it means.

    Blank cells and NA, N/A, NaN, null (:data:`~ragim.canonical.MISSING_TEXT`) are read as
    missing already, in files and DataFrames alike; other codes are declared as files are read,
    or replaced in a DataFrame.

    >>> missing_marker_hint([".", "unknown"])  # doctest: +NORMALIZE_WHITESPACE
    "if they mark missing values, declare them missing: in files, load_task_folder(...,
    na_values=['.', 'unknown']) or --na-values '.,unknown'; in a DataFrame, X.replace(['.',
    'unknown'], np.nan) (blank cells and NA, N/A, NaN, null count as missing already, in both)"
    """
    texts = [str(v).strip() for v in values]
    return (
        f"if they mark missing values, declare them missing: in files, load_task_folder(..., "
        f"na_values={texts}) or --na-values {','.join(texts)!r}; in a DataFrame, "
        f"X.replace({texts}, np.nan) (blank cells and NA, N/A, NaN, null count as missing "
        "already, in both)"
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


def schema_difference(
    a: FeatureSchema, b: FeatureSchema, a_name: str = "the first", b_name: str = "the second"
) -> str:
    """The first difference between two schemas' :meth:`~FeatureSchema.to_dict`, in words
    (features by name); ``""`` when they are equal.

    >>> import pandas as pd
    >>> X = pd.DataFrame({"age": [40.0, 60.0]})
    >>> one, two = FeatureSchema.infer(X).fit(X), FeatureSchema.infer(X).fit(X + 10)
    >>> schema_difference(one, two, "the index", "the generator")
    'fitted.medians.age: 50.0 in the index, 60.0 in the generator'
    >>> schema_difference(one, one.copy())
    ''
    """

    def brief(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 40 else text[:37] + "..."

    def walk(x: Any, y: Any, path: str) -> str:
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            for k in [*x, *(k for k in y if k not in x)]:  # in to_dict's order
                where = f"{path}.{k}" if path else str(k)
                if k not in x or k not in y:
                    return f"{where}: only in {b_name if k not in x else a_name}"
                found = walk(x[k], y[k], where)
                if found:
                    return found
            return ""
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                named = isinstance(u, Mapping) and isinstance(v, Mapping) and "name" in u
                found = walk(u, v, f"{path}[{u['name']!r}]" if named else f"{path}[{i}]")
                if found:
                    return found
            return ""
        return "" if x == y else f"{path}: {brief(x)} in {a_name}, {brief(y)} in {b_name}"

    return walk(a.to_dict(), b.to_dict(), "")
