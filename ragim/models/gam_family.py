"""The GAM family: one log-odds score per shared bin of every feature.

Parameters are ``["intercept", *schema.gam_names]``; a row's log-odds are the intercept plus
the score of its bin in each feature (0 for a value with no bin). Explanations have one row
per bin; the table groups the bins of the most important features.

Examples
--------
>>> import pandas as pd
>>> from ragim.schema import FeatureSchema
>>> X = pd.DataFrame({"smoker": [0, 1, 1]})
>>> GAMFamily().param_names(FeatureSchema.infer(X).fit(X))
['intercept', 'smoker[0]', 'smoker[1]']
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ragim.models.family import (
    FITTED_ROWS,
    Z95,
    ModelFamily,
    clipped_exp,
    fit_constant_terms,
    format_number,
    truncation_note,
)
from ragim.params import ModelParams
from ragim.schema import FeatureSchema


def _continuous_bounds(schema, name: str) -> np.ndarray:
    """The bins' boundaries, -inf and inf at the open ends (as the bins' names say): bin ``i``
    holds ``bounds[i] <= x < bounds[i + 1]``, as :meth:`FeatureSchema.bin_indices` reads them."""
    return np.concatenate([[-np.inf], np.asarray(schema.bin_edges_[name], float), [np.inf]])


def _empty_bin(f, observed: bool, constant: float | None) -> str:
    """Why a bin's score is not an estimate, or "": no fitted row fell in it (``constant``
    0.0), or every fitted row did (1.0: the feature never varied, and the intercept absorbs the
    bin's score)."""
    if constant is None:
        return ""
    if constant != 0.0:
        if not observed:
            return f"not estimable: always blank in {FITTED_ROWS}"
        return f"not estimable: never varies in {FITTED_ROWS} (every patient in this bin)"
    if not observed:
        return f"not estimable: never missing in {FITTED_ROWS} (score 0)"
    if f.type == "categorical":
        return f"not estimable: no patient with this level in {FITTED_ROWS} (score 0)"
    return f"not estimable: no patient in this bin in {FITTED_ROWS} (the nearest bin's score)"


def nearest_filled_bins(unseen: np.ndarray) -> np.ndarray:
    """For each of a feature's ordered value bins (``unseen``: True where no row fell), the
    index of the nearest bin rows did fill (itself when filled): the bin whose score an empty
    bin carries over, so the shape function stays flat beyond the data. Needs one filled bin.

    >>> nearest_filled_bins(np.array([True, False, True, True, False])).tolist()
    [1, 1, 1, 4, 4]
    """
    seen = np.flatnonzero(~unseen)
    return seen[np.abs(seen[None, :] - np.arange(len(unseen))[:, None]).argmin(axis=1)]


def carried_bins(f, unseen: np.ndarray, n_val: int) -> tuple[np.ndarray, np.ndarray]:
    """How a GAM scores one feature's bins that no row fell in (``unseen``, shape (n_bins,);
    the first ``n_val`` are its value bins, a missing bin follows): ``(source, zero)``, the bin
    each takes its score from (a value bin of a continuous or binary feature: its nearest
    filled one, :func:`nearest_filled_bins`, so the shape function stays flat beyond the data;
    every other bin: itself) and the bins scored 0 (a category, or the missing bin, no row had;
    all value bins when none was filled).

    >>> class F: type = "continuous"
    >>> src, zero = carried_bins(F, np.array([True, False, True, True]), 3)
    >>> src.tolist(), zero.tolist()
    ([1, 1, 1, 3], [False, False, False, True])
    """
    source, zero = np.arange(len(unseen)), np.asarray(unseen, bool).copy()
    if f.type != "categorical" and unseen[:n_val].any() and not unseen[:n_val].all():
        source[:n_val] = nearest_filled_bins(unseen[:n_val])
        zero[:n_val] = False
    return source, zero


def carry_over_empty_bins(params: ModelParams, empty: Mapping[str, float]) -> ModelParams:
    """``params`` (a GAM) with the bins ``empty`` names at 0.0 (no row fell in them) scored as
    :class:`~ragim.models.GAMModel` scores such bins: a bin of a continuous or binary feature
    takes the score, SD and correlations of its nearest bin that rows did fill (the shape
    function stays flat beyond the data), a category or missing bin no row had scores 0 with
    SD 0 (:func:`carried_bins`). A feature with no filled bin is left as it is; one whose value
    bins were all empty (always blank) scores them 0. **Changed:** that last case raised
    ValueError ("argmin of an empty sequence").

    Examples
    --------
    >>> X = pd.DataFrame({"age": [30.5, 40.5, 50.5, 60.5, 70.5] * 4})
    >>> schema = FeatureSchema.infer(X).fit(X)
    >>> p = ModelParams("gam", schema, np.arange(len(schema.gam_names) + 1.0))
    >>> schema.bin_labels("age")[:2]
    ['-inf..40.5', '40.5..50.5']
    >>> carry_over_empty_bins(p, {"age[-inf..40.5]": 0.0}).terms[:2].tolist()
    [2.0, 2.0]
    """
    schema = params.schema
    names = params.names
    where = {n: i for i, n in enumerate(names)}
    copy_of = np.arange(len(names))
    zero = np.zeros(len(names), bool)
    for f in schema.features:
        labels = schema.bin_labels(f.name)
        n_val = len(labels) - (f.name in schema.missing_)
        idx = np.array([where[f"{f.name}[{lab}]"] for lab in labels])
        unseen = np.array([empty.get(names[i]) == 0.0 for i in idx])
        if unseen.all():
            continue
        source, zeroed = carried_bins(f, unseen, n_val)
        copy_of[idx] = idx[source]
        zero[idx[zeroed]] = True
    vector = params.vector[copy_of]
    vector[zero] = 0.0
    std = corr = None
    if params.std is not None:
        std = params.std[copy_of]
        std[zero] = 0.0
    if params.correlation is not None:
        corr = params.correlation[np.ix_(copy_of, copy_of)]
        corr[zero, :] = 0.0
        corr[:, zero] = 0.0
        np.fill_diagonal(corr, 1.0)
    return ModelParams(
        params.kind, schema, vector, std=std, metadata=params.metadata, correlation=corr
    )


def _unit_hint(unit: str) -> str:
    return f" ({unit})" if unit else ""


class GAMFamily(ModelFamily):
    """A GAM on the schema's shared bins (:class:`~ragim.models.GAMModel`)."""

    name = "gam"
    title = "generalised additive model"
    value_column = "score"
    term_noun = "bins"
    importance_label = "mean |score| over bins (log-odds)"

    def param_names(self, schema: FeatureSchema) -> list[str]:
        return ["intercept", *schema.gam_names]

    def design_matrix(self, schema: FeatureSchema, X: pd.DataFrame) -> np.ndarray:
        """One-hot indicators of each feature's bin (a value with no bin gives a zero block)."""
        idx = schema.bin_indices(X)
        offsets = schema.gam_offsets
        out = np.zeros((idx.shape[0], len(schema.gam_names)))
        rows = np.arange(idx.shape[0])
        for k in range(idx.shape[1]):
            ok = idx[:, k] >= 0
            out[rows[ok], offsets[k] + idx[ok, k]] = 1.0
        return out

    def log_odds_reach(self, params: ModelParams) -> float | None:
        """``|intercept|`` plus each feature's largest bin score in size: a row falls in one
        bin of every feature."""
        schema, size = params.schema, np.abs(params.vector)
        total = size[0]
        with np.errstate(over="ignore", invalid="ignore"):
            for start, (_, labels) in zip(schema.gam_offsets, schema.gam_layout, strict=True):
                if labels:
                    total = total + size[1 + start : 1 + start + len(labels)].max()
        return float(total)

    def log_odds(self, params: ModelParams, X: pd.DataFrame) -> np.ndarray:
        """The intercept plus each feature's bin score, without building the one-hot design."""
        B = params.schema.bin_indices(X)
        idx = B + params.schema.gam_offsets[None, :]
        contrib = np.where(B >= 0, params.terms[np.where(B >= 0, idx, 0)], 0.0)
        return params.intercept + contrib.sum(axis=1)

    def term_features(self, schema: FeatureSchema) -> list[str]:
        return [f.name for f in schema.features for _ in schema.bin_labels(f.name)]

    def feature_terms(self, params: ModelParams, feature: str) -> np.ndarray:
        names = params.schema.names
        if feature not in names:
            raise KeyError(feature)
        k = names.index(feature)
        start = 1 + int(params.schema.gam_offsets[k])
        return params.vector[start : start + len(params.schema.bin_labels(feature))]

    def sklearn_export_problem(self) -> str | None:
        return (
            "only a logistic model exports to a scikit-learn Pipeline; export a GAM with "
            "ragim.models.model_from_params(params).to_interpret() (an interpret EBM)"
        )

    # ------------------------------------------------------------------ explanations
    def explanation_frame(self, params: ModelParams) -> pd.DataFrame:
        """One row per feature × bin (see ``GlobalExplanation``). ``not_estimable`` says why a
        bin's score is not an estimate ("" otherwise): no row the model was fitted on fell in
        it, or every row did (a feature that never varied;
        :func:`~ragim.models.family.fit_constant_terms`). Its score stays (predictions use
        it); its std and CI are NaN."""
        schema = params.schema
        empty = fit_constant_terms(params)
        rows = []
        for k, f in enumerate(schema.features):
            labels = schema.bin_labels(f.name)
            start = 1 + int(schema.gam_offsets[k])
            scores = params.vector[start : start + len(labels)]
            stds = (
                params.std[start : start + len(labels)]
                if params.std is not None
                else np.full(len(labels), np.nan)
            )
            n_obs = len(labels) - (f.name in schema.missing_)
            mids = schema.bin_midpoints(f.name)
            bounds = _continuous_bounds(schema, f.name) if f.type == "continuous" else None
            for i, (lab, s, sd) in enumerate(zip(labels, scores, stds, strict=True)):
                obs = i < n_obs
                reason = _empty_bin(f, obs, empty.get(schema.gam_names[start - 1 + i]))
                sd = np.nan if reason else sd
                rows.append(
                    {
                        "feature": f.name,
                        "label": f.display_name,
                        "type": f.type,
                        "term": f"{f.name}[{lab}]",
                        "bin": lab,
                        "bin_label": f.level_label(lab) if obs and f.type != "continuous" else lab,
                        "is_missing_bin": not obs,
                        "bin_low": bounds[i] if obs and bounds is not None else np.nan,
                        "bin_high": bounds[i + 1] if obs and bounds is not None else np.nan,
                        "midpoint": mids[i] if obs and f.type != "categorical" else np.nan,
                        "score": s,
                        "std": sd,
                        "ci_low": s - Z95 * sd,
                        "ci_high": s + Z95 * sd,
                        "odds_ratio": clipped_exp(s),
                        "unit": f.unit,
                        "not_estimable": reason,
                    }
                )
        return pd.DataFrame(rows)

    def importance(self, params: ModelParams, frame: pd.DataFrame) -> pd.Series:
        """The plain mean |score| over the feature's non-missing bins that the fitted rows
        filled (a not-estimable bin carries its neighbour's score over and would count it
        twice)."""
        return (
            frame[~frame["is_missing_bin"] & (frame["not_estimable"] == "")]
            .groupby("feature", sort=False)["score"]
            .apply(lambda s: s.abs().mean())
        )

    def explanation_table(self, expl, top: int | None, missing: bool) -> pd.DataFrame:
        """The bins of the ``top`` most important features, most important first."""
        feats = list(expl.importance()["feature"])
        total = len(feats)
        feats = feats[:top] if top is not None else feats
        order = {f: i for i, f in enumerate(feats)}
        frame = expl.to_frame()
        df = frame[frame["feature"].isin(feats)]
        hidden = int(df["is_missing_bin"].sum()) if not missing else 0
        if not missing:
            df = df[~df["is_missing_bin"]]
        df = df.sort_values("feature", key=lambda c: c.map(order), kind="stable")
        df = df[
            [
                "term",
                "feature",
                "label",
                "bin",
                "bin_label",
                "score",
                "std",
                "ci_low",
                "ci_high",
                "odds_ratio",
                "not_estimable",
            ]
        ].reset_index(drop=True)
        marked = df["not_estimable"] != ""
        full = int((marked & df["not_estimable"].str.contains("never varies|always blank")).sum())
        empty = int(marked.sum()) - full
        plural = "s" if hidden != 1 else ""
        note = (
            truncation_note(len(feats), total, "features")
            + (f"; {hidden} missing-value bin{plural} not shown" if hidden else "")
            + (
                f"; {empty} bin{'s' if empty != 1 else ''} with no patient in {FITTED_ROWS} "
                "(not estimable: score carried over, no CI)"
                if empty
                else ""
            )
            + (
                f"; {full} bin{'s' if full != 1 else ''} holding every patient of a feature that "
                "never varies (not estimable, no CI)"
                if full
                else ""
            )
        )
        df.attrs.update(n_total=total, n_hidden_missing=hidden, note=note)
        return df

    def local_contributions(
        self, params: ModelParams, X: pd.DataFrame
    ) -> tuple[dict[str, dict], None]:
        """Each feature's contribution is the score of the patient's bin (and the bin)."""
        schema = params.schema
        out = {}
        for f, i in zip(schema.features, schema.bin_indices(X)[0], strict=True):
            labels = schema.bin_labels(f.name)
            c = float(self.feature_terms(params, f.name)[i]) if i >= 0 else 0.0
            out[f.name] = {"bin": labels[i] if i >= 0 else "(unknown category)", "contribution": c}
        return out, None

    def plot_global(self, expl, table: pd.DataFrame, kind: str, ax=None):
        """A grid of shape functions of the table's features."""
        from ragim import plots

        feats = list(dict.fromkeys(table["feature"]))
        frame = expl.to_frame()
        # the panels draw the missing-value bins: the note counts them as shown
        note = self.explanation_table(expl, len(feats), True).attrs["note"]
        return plots.plot_shape_functions(
            frame.assign(bin=frame["bin_label"]),
            feats,
            kind=kind,
            ax=ax,
            title=f"GAM shape functions for {expl.outcome}\n{note}",
        )

    def html_columns(self) -> list[str]:
        return [
            "label",
            "bin_label",
            "score",
            "ci_low",
            "ci_high",
            "odds_ratio",
            "not_estimable",
            "term",
        ]

    def summary_lines(self, expl) -> list[str]:
        labels = {f.name: f.display_name for f in expl.params.schema.features}
        return [
            f"  {labels[r.feature]:<24} importance {r.importance:.3f}"
            for r in expl.importance().head(5).itertuples()
        ]

    def text_table(self, table: pd.DataFrame) -> tuple[list[tuple], list]:
        fmt = format_number
        rows = [
            (
                r.label,
                r.bin_label,
                fmt(r.score, "+.3f"),
                f"{fmt(r.ci_low, '+.2f')}..{fmt(r.ci_high, '+.2f')}"
                if np.isfinite(r.ci_low)
                else ("not estimable" if r.not_estimable else ""),
                fmt(r.odds_ratio),
            )
            for r in table.itertuples()
        ]
        cols = ["feature", "bin", ("score", "right"), ("95% CI", "right"), ("odds ratio", "right")]
        return rows, cols

    # ------------------------------------------------------------------ prompts
    def schema_lines(self, schema: FeatureSchema) -> list[str]:
        """One line per feature, naming its bins."""
        lines = []
        for f in schema.features:
            desc = f": {f.description}" if f.description else ""
            names = ", ".join(f"{f.name}[{lab}]" for lab in schema.bin_labels(f.name))
            lines.append(f"- {f.name}{_unit_hint(f.unit)}{desc}; one score per bin: {names}")
        return lines

    def prompt_head(self) -> str:
        return (
            'Model: generalised additive model. Parameters: "intercept" and one log-odds '
            "score per bin of each feature below."
        )
