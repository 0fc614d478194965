"""Model families as objects: what a family knows, and the registry of families by name.

A :class:`ModelFamily` owns everything that differs between model families: the parameter
layout over a schema, the design matrix (``log-odds = intercept + D @ terms``), the
explanation rows, tables, plots and text, the prompt layout an LM reads, and what export
and evaluation need. ``ModelParams.kind`` is a family's name; code that depends on the family
asks :func:`family_of` instead of comparing names, so adding a family (a Poisson GLM for
counts, say) touches one new file and a registration
(:func:`ragim.models.register_model_family` with ``family=``).

Only :meth:`ModelFamily.param_names` and :meth:`ModelFamily.design_matrix` are required;
every other method has a default that treats the parameters as additive log-odds terms,
one explanation row per term (the logistic and GAM families override them).

Examples
--------
>>> from ragim.models import family_of
>>> family_of("gam").term_noun, family_of("logistic").value_column
('bins', 'coef')
"""

from __future__ import annotations

import math
import textwrap
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from ragim.checks import check_int
from ragim.errors import ValidationError, user_stacklevel
from ragim.schema import FeatureSchema

if TYPE_CHECKING:
    from ragim.params import ModelParams

Z95 = 1.959963984540054  # two-sided 95% normal quantile

#: family name -> family object, in registration order
FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily, *, overwrite: bool = False) -> ModelFamily:
    """Add a family object to the registry under ``family.name`` and return it.

    Usually called through :func:`ragim.models.register_model_family`, which also records
    the family's estimator class.

    Raises
    ------
    ValidationError
        When ``family`` is not a :class:`ModelFamily`, has no name, has a ``log_odds`` that
        is not ``intercept + design_matrix @ terms`` or a layout that does not fit
        (:func:`check_family`), or its
        name is taken by another family and ``overwrite`` is False.
    """
    if not isinstance(family, ModelFamily):
        raise ValidationError(f"a model family must be a ModelFamily instance, got {family!r}")
    if not isinstance(overwrite, bool):
        raise ValidationError(f"overwrite must be True or False, got {overwrite!r}")

    name = family.name
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"{type(family).__name__} needs a non-empty class attribute 'name'")
    old = FAMILIES.get(name)
    if old is not None and old is not family and not overwrite:
        raise ValidationError(
            f"model family {name!r} is already registered to {type(old).__name__}; "
            "pass overwrite=True to replace it"
        )
    FAMILIES[name] = family
    try:  # checked on a probe table; a failing family is not left registered
        check_family(family)
    except Exception:
        if old is None:
            FAMILIES.pop(name)
        else:
            FAMILIES[name] = old
        raise
    return family


def check_family(family: ModelFamily) -> None:
    """Check a family on a probe table (a continuous, a binary and a categorical feature, or
    the numeric ones alone when the family refuses categories) with random parameters: its
    parameter names start with ``"intercept"``, its design matrix has one column per other
    parameter and one row per table row, and its ``log_odds`` (which a family may override
    with a faster route, as the GAM's bin lookup) equals ``intercept + design_matrix @ terms``.

    Raises
    ------
    ValidationError
        On a layout mismatch, or when ``log_odds`` differs: the family is not a logit-link
        model linear in its parameters (a probit link, say), which the generators, few-shot
        adaptation and explanations assume.
    """
    from ragim.params import ModelParams
    from ragim.schema import Feature

    full = pd.DataFrame(
        {"a": np.linspace(-2.0, 3.0, 24), "b": [0.0, 1.0] * 12, "c": ["x", "y", "z"] * 8}
    )
    feats = [Feature("a", "continuous"), Feature("b", "binary"), Feature("c", "categorical")]
    for n in (3, 2):  # with a categorical feature, then numeric ones only
        X = full.iloc[:, :n]
        schema = FeatureSchema(feats[:n]).fit(X)
        try:
            names = family.param_names(schema)
            D = family.design_matrix(schema, X)
            break
        except Exception:
            continue
    else:  # a family for special schemas; its own tests must cover it
        return
    label = type(family).__name__
    if not names or names[0] != "intercept":
        raise ValidationError(f"{label}.param_names must start with 'intercept', got {names[:3]}")
    D = np.asarray(D, dtype=float)
    if D.shape != (len(X), len(names) - 1):
        raise ValidationError(
            f"{label}.design_matrix gave shape {D.shape} for {len(X)} rows and "
            f"{len(names) - 1} non-intercept parameters; it must be (n_rows, n_params - 1)"
        )
    vector = np.random.default_rng(0).normal(size=len(names))
    params = ModelParams(family.name, schema, vector)
    own = np.asarray(family.log_odds(params, X), dtype=float)
    linear = D @ vector[1:] + vector[0]
    if own.shape != linear.shape or not np.allclose(own, linear, atol=1e-8, rtol=1e-6):
        gap = float(np.max(np.abs(own - linear))) if own.shape == linear.shape else float("nan")
        raise ValidationError(
            f"{label}.log_odds differs from intercept + design_matrix @ terms "
            f"(by up to {gap:.3g} on a probe table); a family must be a logit-link model linear "
            "in its parameters, which the generators, few-shot adaptation and explanations rely "
            "on: express it through design_matrix"
        )


def family_of(kind: str) -> ModelFamily:
    """The registered family of a ``ModelParams.kind`` ("logistic", "gam", ...).

    Raises
    ------
    ValidationError
        For a name no family is registered under (the message lists the registered ones).

    Examples
    --------
    >>> type(family_of("logistic")).__name__
    'LogisticFamily'
    """
    family = FAMILIES.get(kind) if isinstance(kind, str) else None
    if family is None and isinstance(kind, str) and load_plugin_families():
        family = FAMILIES.get(kind)
    if family is None:
        raise ValidationError(
            f"unknown model kind {kind!r}; use one of {list(FAMILIES)} (a custom family is known "
            "only once registered: import the module that calls register_model_family, or install "
            f"a package that declares it under the {PLUGIN_GROUP!r} entry-point group)"
        )
    return family


PLUGIN_GROUP = "ragim.model_families"
_plugins_loaded = False


def load_plugin_families() -> bool:
    """Import, once per process, every module that installed packages declare under the
    ``ragim.model_families`` entry-point group (importing such a module registers its family,
    so saved parameters and indices of that family load in any process, the CLI included).
    Returns True when this call imported at least one.

    A package declares its family in its ``pyproject.toml``::

        [project.entry-points."ragim.model_families"]
        probit = "my_package.probit_family"
    """
    global _plugins_loaded
    if _plugins_loaded:
        return False
    _plugins_loaded = True
    from importlib.metadata import entry_points

    loaded = False
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not hide the built-in families
            import warnings

            warnings.warn(
                f"model-family plugin {ep.name!r} ({ep.value}) failed to load: {exc}",
                stacklevel=user_stacklevel(),
            )
            continue
        loaded = True
    return loaded


# ---------------------------------------------------------------------- shared helpers
def truncation_note(shown: int, total: int, what: str = "terms", hidden_missing: int = 0) -> str:
    """A sentence that says how much of a table or plot is shown.

    >>> truncation_note(15, 18, hidden_missing=10)
    '15 of 18 terms shown (largest first); 10 missing-value indicator terms not shown'
    """
    text = (
        f"{shown} of {total} {what} shown (largest first)"
        if shown < total
        else f"all {total} {what} shown"
    )
    if hidden_missing:
        plural = "s" if hidden_missing != 1 else ""
        text += f"; {hidden_missing} missing-value indicator term{plural} not shown"
    return text


def reference_level(schema: FeatureSchema, feature: str) -> str | None:
    """The level a binary or categorical feature's effects are compared with, as a label:
    0 for binary features, the first category for categorical ones; None for continuous.

    Examples
    --------
    >>> from ragim.datasets.heart import heart_schema, load_heart_csv
    >>> s = heart_schema().fit(load_heart_csv()[heart_schema().names])
    >>> reference_level(s, "sex"), reference_level(s, "cp"), reference_level(s, "age")
    ('female', 'typical angina', None)
    """
    f = schema[feature]
    if f.type == "binary":
        return f.level_label(0)
    if f.type == "categorical":
        cats = schema.categories_[feature]
        return f.level_label(cats[0]) if cats else None
    return None


def by_abs(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Rows sorted by |df[col]|, largest first (stable)."""
    return df.reindex(df[col].abs().sort_values(ascending=False, kind="stable").index)


def clipped_exp(v: float) -> float:
    """exp(v), clipped at exp(700) so it stays finite for JSON."""
    return math.exp(min(v, 700.0))


def wald_columns(coef: float, std: float) -> dict[str, float]:
    """``coef``, ``std`` and the 95% Wald interval ``ci_low``/``ci_high`` (coef ± 1.96 std), as
    explanation frames hold them (NaN std: NaN interval)."""
    return {"coef": coef, "std": std, "ci_low": coef - Z95 * std, "ci_high": coef + Z95 * std}


def std_terms(params: ModelParams) -> np.ndarray:
    """The terms' standard deviations, NaN when the parameters carry none."""
    return params.std[1:] if params.std is not None else np.full(len(params) - 1, np.nan)


def interval_text(value: float, sd: float) -> str:
    """ " (95% CI a to b)" for a log-odds value and its SD; "" when the SD is not finite.

    >>> interval_text(-1.0, 0.5)
    ' (95% CI -1.980 to -0.020)'
    """
    if not math.isfinite(sd):
        return ""
    return f" (95% CI {value - Z95 * sd:+.3f} to {value + Z95 * sd:+.3f})"


def check_top(top: Any) -> None:
    """Raise unless ``top`` is None or a positive integer (:func:`ragim.checks.check_int`)."""
    check_int(top, "top", ge=1, allow_none=True)


def format_number(v: Any, spec: str = ".3g") -> str:
    """A number for a text table cell ("" for NaN or None)."""
    if v is None:
        return ""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "" if not math.isfinite(f) else format(f, spec)


# ---------------------------------------------------------------------- fitted rows
FITTED_ROWS = "the rows the model was fitted on"


def constant_terms(names: list[str], Z: np.ndarray) -> dict[str, float]:
    """The design columns of ``Z`` (n_rows, len(names)) that never vary over its rows, as
    ``{name: value}`` (0.0 for a category level no row has): what
    ``params.metadata["constant_terms"]`` records for a fit, so that explanations mark those
    effects not estimable. Empty for no rows.

    Examples
    --------
    >>> constant_terms(["age", "cp[a]", "cp[b]"], np.array([[0.5, 1, 0], [-0.5, 1, 0.0]]))
    {'cp[a]': 1.0, 'cp[b]': 0.0}
    """
    Z = np.asarray(Z, dtype=float)
    if Z.ndim != 2 or Z.shape[1] != len(names):
        raise ValidationError(
            f"constant_terms needs a design of {len(names)} columns, got shape {Z.shape}"
        )
    if len(Z) == 0:
        return {}
    same = np.all(np.abs(Z - Z[:1]) <= 1e-12 * np.maximum(1.0, np.abs(Z[:1])), axis=0)
    return {n: float(Z[0, j]) for j, n in enumerate(names) if same[j]}


def fit_constant_terms(params: ModelParams) -> dict[str, float]:
    """The terms (design terms of a logistic model, bins of a GAM) whose column never varied in
    the rows the model was fitted on, with that constant value (0.0 for a level no patient
    had): ``params.metadata["constant_terms"]``,
    recorded by :class:`~ragim.models.LogisticModel`, :func:`~ragim.models.fit_many` and
    :class:`~ragim.models.GAMModel` fits (a GAM bin no fitted row fell in is recorded as 0.0),
    and by :func:`~ragim.models.set_fitted` given the fitted rows (any family's estimator).
    Empty when the metadata has none (generated models borrow their coefficients from other
    tasks, so nothing is marked there but the terms no indexed task's rows varied,
    :func:`ragim.data_checks.never_varied_terms`).

    Raises
    ------
    ValidationError
        When the record is not a mapping of parameter names to numbers.
    """
    raw = params.metadata.get("constant_terms")
    if raw is None:
        return {}
    try:
        return {str(k): float(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError):
        raise ValidationError(
            f"params.metadata['constant_terms'] must map term names to numbers, got {raw!r}"
        ) from None


# ---------------------------------------------------------------------- the base class


class ModelFamily(ABC):
    """One model family's behaviour; subclass it, then register an instance.

    **The contract.** Every family is a logistic (logit-link) model that is linear in its
    parameters: ``log-odds = intercept + design_matrix(schema, X) @ terms``, P(event) =
    sigmoid(log-odds). A family chooses its terms (standardised features, bins, splines,
    interactions) through :meth:`param_names` and :meth:`design_matrix`; the generators,
    few-shot adaptation, the per-patient explanation (contributions that sum to the log-odds)
    and the odds ratios all rely on this. :meth:`log_odds` may be overridden only by a faster
    route to the same numbers; registration checks that on a probe table. Another link
    (probit) or outcome (counts) would need those to become link-aware; it is not supported.

    Class attributes: ``name`` (the registry name and ``ModelParams.kind``), ``title`` (the
    model in words, for prompts and plot titles), ``figure_name`` (the model's name at the
    head of its tables and plots, :attr:`heading`; default: ``title`` capitalised),
    ``value_column`` (the explanation frame's log-odds column), ``term_noun`` (what one
    explanation row is), ``importance_label`` (the x label of importance bars) and
    ``fits_on_design`` (True when a scikit-learn ``LogisticRegression(C=1)`` on
    :meth:`design_matrix` is the family's own C=1 fit, so evaluation may reuse a cached
    design). ``model_cls`` is the family's estimator class, set at registration.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = "additive log-odds model"
    figure_name: ClassVar[str | None] = None
    value_column: ClassVar[str] = "coef"
    term_noun: ClassVar[str] = "terms"
    importance_label: ClassVar[str] = "max |coef| (log-odds)"
    fits_on_design: ClassVar[bool] = False

    def __init__(self, model_cls: type | None = None):
        self.model_cls = model_cls

    @property
    def heading(self) -> str:
        """The model's name at the head of its tables, reports and figures: ``figure_name``,
        else ``title`` capitalised ("Logistic model", "Generalised additive model")."""
        return self.figure_name or self.title[:1].upper() + self.title[1:]

    def __repr__(self) -> str:
        cls = getattr(self.model_cls, "__name__", None)
        return f"{type(self).__name__}(name={self.name!r}, model_cls={cls})"

    # ------------------------------------------------------------------ layout and design
    @abstractmethod
    def param_names(self, schema: FeatureSchema) -> list[str]:
        """The ordered parameter names over a fitted schema, ``"intercept"`` first."""

    @abstractmethod
    def design_matrix(self, schema: FeatureSchema, X: pd.DataFrame) -> np.ndarray:
        """``D`` (n_rows, n_params - 1) with ``log-odds = intercept + D @ terms``."""

    def log_odds(self, params: ModelParams, X: pd.DataFrame) -> np.ndarray:
        """Log-odds of the rows of ``X``, shape (n_rows,)."""
        return self.design_matrix(params.schema, X) @ params.terms + params.intercept

    def log_odds_reach(self, params: ModelParams) -> float | None:
        """The largest size the log-odds of ``params`` reach, as float64 computes them
        (``inf`` when they overflow), over rows whose values lie within the ranges the schema
        was fitted on (any level of a binary or categorical feature, blank where it can be);
        None when the family cannot tell (then a loaded model's parameters are bounded by
        float64 alone). A model whose reach is ``inf`` is refused by
        :meth:`ragim.params.ModelParams.load` and :meth:`~ragim.params.ModelParams.save`."""
        return None

    def term_features(self, schema: FeatureSchema) -> list[str]:
        """The schema feature each term belongs to ("" when none), in term order.

        Default: a term named after a feature, or ``feature[...]`` / ``feature__...``.

        Raises
        ------
        ValidationError
            For a term that names no feature (override this method to map it).
        """
        names = set(schema.names)
        out = []
        for term in self.param_names(schema)[1:]:
            stem = term.split("[", 1)[0].split("__", 1)[0]
            if term not in names and stem not in names:
                raise ValidationError(
                    f"{self.name} term {term!r} names no feature of the "
                    "schema; override term_features to map it"
                )
            out.append(term if term in names else stem)
        return out

    def feature_terms(self, params: ModelParams, feature: str) -> np.ndarray:
        """The parameters of one feature's bins (families with bins only)."""
        raise ValidationError(
            f"feature_terms is only defined for GAM parameters, not {self.name} parameters"
        )

    # ------------------------------------------------------------------ fitting
    def estimator(self, schema: FeatureSchema, C: float = 1.0):
        """A new, unfitted estimator of the family over ``schema`` (per-task baselines)."""
        if self.model_cls is None:
            raise ValidationError(f"model family {self.name!r} has no estimator class registered")
        return self.model_cls(schema=schema)

    def pooled_fit(
        self, schema: FeatureSchema, X: pd.DataFrame, y: np.ndarray, D: np.ndarray
    ) -> np.ndarray:
        """One parameter vector fitted to pooled rows (``D`` is :meth:`design_matrix` of
        ``X``): the MAP under a unit Gaussian prior on every parameter (Newton)."""
        from ragim.models.map import newton_map

        A = np.hstack([np.ones((len(D), 1)), D])
        w, _ = newton_map(
            A, y.astype(float), np.zeros(A.shape[1]), np.ones(A.shape[1]), max_iter=50, tol=1e-8
        )
        return w

    # ------------------------------------------------------------------ export
    def sklearn_export_problem(self) -> str | None:
        """None when :func:`ragim.export.to_sklearn_pipeline` can export the family, else
        the one-line reason and the alternative."""
        return (
            f"only a logistic model exports to a scikit-learn Pipeline; {self.name!r} "
            "parameters do not (use ragim.export.coefficients_frame for a table)"
        )

    # ------------------------------------------------------------------ explanations
    def explanation_frame(self, params: ModelParams) -> pd.DataFrame:
        """One row per term: term, feature, label, coef (log-odds), std, ci_low, ci_high,
        odds_ratio, not_estimable (``GlobalExplanation.to_frame()``). A term that never varied
        in the rows the model was fitted on (:func:`fit_constant_terms`) has no effect the data
        could give: its coef, std and interval are NaN and ``not_estimable`` says why."""
        schema = params.schema
        labels = {f.name: f.display_name for f in schema.features}
        const = fit_constant_terms(params)
        rows = []
        for term, feat, b, s in zip(
            params.names[1:],
            self.term_features(schema),
            params.terms,
            std_terms(params),
            strict=True,
        ):
            reason = (
                f"not estimable: never varies in the rows the model was fitted on "
                f"(always {const[term]:g})"
                if term in const
                else ""
            )
            if reason:
                b = s = math.nan
            rows.append(
                {
                    "term": term,
                    "feature": feat,
                    "label": labels.get(feat, term),
                    **wald_columns(b, s),
                    "odds_ratio": clipped_exp(b),
                    "not_estimable": reason,
                }
            )
        columns = ["term", "feature", "label", "coef", "std", "ci_low", "ci_high", "odds_ratio"]
        return pd.DataFrame(rows, columns=[*columns, "not_estimable"])

    def importance(self, params: ModelParams, frame: pd.DataFrame) -> pd.Series:
        """Per-feature importance (index: feature names; any order, missing ones count 0)."""
        return frame.groupby("feature", sort=False)[self.value_column].apply(
            lambda s: s.abs().max()
        )

    def explanation_table(self, expl, top: int | None, missing: bool) -> pd.DataFrame:
        """The rows of ``GlobalExplanation.table(top, missing=missing)``, with ``attrs``
        ``n_total``, ``n_hidden_missing`` and ``note``. Default: the frame's rows, largest
        |value| first."""
        df = by_abs(expl.to_frame(), self.value_column).reset_index(drop=True)
        total = len(df)
        df = df.head(top) if top is not None else df
        df.attrs.update(
            n_total=total, n_hidden_missing=0, note=truncation_note(len(df), total, self.term_noun)
        )
        return df

    def reference_intercept(self, params: ModelParams) -> tuple[float, float, list[str]]:
        """(log-odds of the reference patient of the table, its SD or NaN, the reference
        levels in words). Default: the intercept."""
        sd = float(params.std[0]) if params.std is not None else math.nan
        return params.intercept, sd, []

    def baseline_text(self, value: float, sd: float, refs: list[str]) -> str:
        """The baseline of the global explanation in words, with its 95% interval when ``sd``
        is finite: :meth:`reference_intercept`'s (value, sd, refs). Default: "intercept"."""
        return f"intercept {value:+.3f}{interval_text(value, sd)}"

    def local_contributions(
        self, params: ModelParams, X: pd.DataFrame
    ) -> tuple[dict[str, dict], pd.DataFrame | None]:
        """One patient (a validated one-row frame): feature -> its columns (``contribution``
        in log-odds, plus any extra ones, e.g. ``bin``) for every schema feature, and for each
        term of no single feature (:meth:`term_features` gives "") under the term's name; and
        the per-term frame (term, feature, design_value, coef, contribution) or None. The
        contributions must add up from :meth:`reference_intercept`'s log-odds to the
        patient's (:class:`~ragim.explain.LocalExplanation` refuses them otherwise).
        Default: each term's ``D * coef`` summed by feature (from the intercept)."""
        schema = params.schema
        z = self.design_matrix(schema, X)[0]
        per = params.terms * z
        feats = self.term_features(schema)
        terms = pd.DataFrame(
            {
                "term": params.names[1:],
                "feature": feats,
                "design_value": z,
                "coef": params.terms,
                "contribution": per,
            }
        )
        folded = dict.fromkeys(schema.names, 0.0)
        for term, f, v in zip(params.names[1:], feats, per, strict=True):
            key = f or term  # a term of no single feature (say an interaction) is its own row
            folded[key] = folded.get(key, 0.0) + float(v)
        return {f: {"contribution": c} for f, c in folded.items()}, terms

    def plot_global(self, expl, table: pd.DataFrame, kind: str, ax=None):
        """The global explanation's figure from its :meth:`explanation_table` rows."""
        from ragim import plots

        return plots.plot_coefficients(
            table,
            kind=kind,
            ax=ax,
            title=(
                "\n".join(
                    textwrap.wrap(
                        f"{self.heading} for {expl.outcome}; {expl.baseline()}",
                        90,
                    )
                )
                + f"\n{table.attrs['note']}"
            ),
        )

    def html_columns(self) -> list[str]:
        """The columns of the table in a notebook's HTML view (those present are shown)."""
        return ["label", "term", self.value_column, "ci_low", "ci_high", "odds_ratio"]

    def summary_lines(self, expl) -> list[str]:
        """Lines after the first of ``repr(GlobalExplanation)``."""
        t = self.explanation_table(expl, 5, False)
        v = self.value_column
        return [f"  {r['term']:<40} {v} {r[v]:+.3g}" for r in t.to_dict("records")]

    def text_table(self, table: pd.DataFrame) -> tuple[list[tuple], list]:
        """(rows, columns) of the command line's table of a global explanation."""
        v = self.value_column
        rows = [
            (r["label"], r["term"], format_number(r[v], "+.3f"), format_number(r.get("odds_ratio")))
            for r in table.to_dict("records")
        ]
        return rows, ["feature", "term", (v, "right"), ("odds ratio", "right")]

    # ------------------------------------------------------------------ prompts
    def schema_lines(self, schema: FeatureSchema) -> list[str]:
        """One prompt line per parameter group, with units and descriptions."""
        return [f"- {t}" for t in self.param_names(schema)[1:]]

    def prompt_head(self) -> str:
        """The prompt's paragraph that says what model the parameters describe."""
        return f'Model: {self.title}. Parameters: "intercept" and one log-odds term per name below.'
