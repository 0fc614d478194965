"""Matplotlib figures for ragim explanations and reports.

Every function draws from plain data (pandas frames, arrays) and returns a
:class:`matplotlib.figure.Figure`. Figures are built with ``Figure`` objects
directly, never ``pyplot``, so nothing here changes the user's backend or opens
windows; notebooks still display the returned figure. Pass ``ax=`` to draw into
an existing axes instead.

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1, 0, 1])
>>> fig = plot_calibration(y, {"model": np.array([.1, .3, .7, .8, .2, .6])}, n_bins=5)
>>> len(fig.axes)
2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ragim.checks import check_float_array, check_int
from ragim.errors import ValidationError

POS, NEG, GREY, DARK = "#c0392b", "#2e6da4", "#9aa0a6", "#3c4043"


def new_figure(width: float, height: float, **kw) -> Figure:
    """A pyplot-free figure with an Agg canvas and constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig


def _txt(s: object) -> str:
    """Text safe from matplotlib's mathtext (a lone ``$`` would be parsed as math)."""
    return str(s).replace("$", r"\$")


def _short(s: str, n: int = 42) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _exp(v):
    """exp clipped to a range a log axis can show (extreme log-odds stay finite)."""
    return np.exp(np.clip(np.asarray(v, float), -300, 300))


def _log_axis(axis) -> None:
    """Log scale with plain tick labels (0.5, 1, 2) instead of 5x10^-1."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _fig_ax(ax, width, height):
    if ax is None:
        fig = new_figure(width, height)
        return fig, fig.add_subplot()
    return ax.figure, ax


# ---------------------------------------------------------------------- coefficients
def plot_coefficients(
    frame: pd.DataFrame,
    *,
    kind: str = "coef",
    top: int | None = None,
    ax=None,
    title: str | None = None,
) -> Figure:
    """Dot chart of logistic terms (``coef`` or ``odds_ratio``) with 95% CI whiskers.

    ``frame`` needs columns term (or label), coef, ci_low, ci_high; rows are sorted by |coef|.
    """
    if kind not in ("coef", "odds_ratio"):
        raise ValidationError(f"kind must be 'coef' or 'odds_ratio', got {kind!r}")
    df = frame.reindex(frame["coef"].abs().sort_values(ascending=False).index)
    if top is not None:
        df = df.head(int(top))
    df = df.iloc[::-1]  # largest at the top
    fig, ax = _fig_ax(ax, 7.0, 1.2 + 0.32 * max(len(df), 1))
    y = np.arange(len(df))
    tr = _exp if kind == "odds_ratio" else (lambda v: v)
    val = tr(df["coef"].to_numpy(float))
    colors = [POS if c > 0 else NEG for c in df["coef"]]
    lo, hi = tr(df["ci_low"].to_numpy(float)), tr(df["ci_high"].to_numpy(float))
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    if has_ci.any():
        ax.hlines(
            y[has_ci], lo[has_ci], hi[has_ci], color=np.array(colors)[has_ci], lw=2, alpha=0.55
        )
    ax.scatter(val, y, c=colors, s=36, zorder=3)
    ax.axvline(1.0 if kind == "odds_ratio" else 0.0, color=DARK, lw=0.8, ls="--")
    labels = [_txt(t) for t in (df["label"] if "label" in df else df["term"])]
    ax.set_yticks(y, labels, fontsize=9)
    ax.set_ylim(-0.7, len(df) - 0.3)
    if kind == "odds_ratio":
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_xlabel("odds ratio (log scale)" + (", 95% CI" if has_ci.any() else ""))
    else:
        ax.set_xlabel(
            "coefficient (log-odds per SD or per 0→1)" + (", 95% CI" if has_ci.any() else "")
        )
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(_txt(title or "Model terms"), fontsize=11, loc="left")
    return fig


# ---------------------------------------------------------------------- GAM shapes
def plot_shape_functions(
    frame: pd.DataFrame,
    features: Sequence[str],
    *,
    kind: str = "coef",
    ax=None,
    ncols: int = 3,
    title: str | None = None,
) -> Figure:
    """A grid of GAM shape functions, one panel per feature (continuous: steps with CI band;
    binary/categorical: bars). ``frame`` is ``GlobalExplanation.to_frame()`` of a GAM."""
    if kind not in ("coef", "odds_ratio"):
        raise ValidationError(f"kind must be 'coef' or 'odds_ratio', got {kind!r}")
    features = list(features)
    if ax is None:
        nc = max(1, min(ncols, len(features)))
        nr = math.ceil(len(features) / nc)
        fig = new_figure(3.4 * nc, 2.7 * nr + 0.3)
        axes = list(np.atleast_1d(fig.subplots(nr, nc, squeeze=False).ravel()))
        for extra in axes[len(features) :]:
            extra.set_visible(False)
    else:
        axes = [ax] if not isinstance(ax, Sequence | np.ndarray) else list(np.ravel(ax))
        if len(axes) < len(features):
            raise ValidationError(
                f"{len(features)} shape-function panels need {len(features)} "
                f"axes, got {len(axes)}; pass ax=None for a new figure or top=1 for a single panel"
            )
        fig = axes[0].figure
    tr = _exp if kind == "odds_ratio" else (lambda v: v)
    ref = 1.0 if kind == "odds_ratio" else 0.0
    for a, name in zip(axes, features, strict=False):
        d = frame[frame["feature"] == name]
        _shape_panel(a, d, tr, ref)
        if kind == "odds_ratio":
            a.set_yscale("log")
            _log_axis(a.yaxis)
        if a.get_subplotspec() is None or a.get_subplotspec().is_first_col():
            a.set_ylabel("odds ratio" if kind == "odds_ratio" else "score (log-odds)", fontsize=8)
    if ax is None and len(features) > 1:  # one y-range for all panels, so effect sizes compare
        d = frame[frame["feature"].isin(features)]
        vals = tr(d[["score", "ci_low", "ci_high"]].to_numpy(float).ravel())
        vals = vals[np.isfinite(vals)]
        lo, hi = float(min(vals.min(), ref)), float(max(vals.max(), ref))
        if kind == "odds_ratio":
            pad = (hi / lo) ** 0.06
            lims = (lo / pad, hi * pad)
        else:
            pad = 0.06 * ((hi - lo) or 1.0)
            lims = (lo - pad, hi + pad)
        for a in axes[: len(features)]:
            a.set_ylim(*lims)
    if title and ax is None:
        fig.suptitle(_txt(title), fontsize=11, x=0.01, ha="left")
    return fig


def _drawn_edges(body: pd.DataFrame) -> np.ndarray:
    """A continuous feature's bin edges to draw: its bins' bounds, with the open ends (-inf,
    inf) cut one half-bin past the outer bins' midpoints."""
    edges = np.append(body["bin_low"].to_numpy(float), float(body["bin_high"].iloc[-1]))
    mids = body["midpoint"].to_numpy(float)
    if len(edges) == 2:  # one bin, open at both ends
        w = max(abs(float(mids[0])) * 0.1, 1.0)
        return np.array([mids[0] - w, mids[0] + w])
    if np.isinf(edges[0]):
        edges[0] = 2 * mids[0] - edges[1]
    if np.isinf(edges[-1]):
        edges[-1] = 2 * mids[-1] - edges[-2]
    return edges


def _shape_panel(ax, d: pd.DataFrame, tr, ref: float) -> None:
    ftype, unit = d["type"].iloc[0], d["unit"].iloc[0]
    name = d["label"].iloc[0] if "label" in d and d["label"].iloc[0] else d["feature"].iloc[0]
    miss = d[d["is_missing_bin"]]
    body = d[~d["is_missing_bin"]]
    s, lo, hi = (tr(body[c].to_numpy(float)) for c in ("score", "ci_low", "ci_high"))
    # a bin with no CI (not estimable) leaves a gap in the band; the others keep theirs
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    if ftype == "continuous" and len(body):
        edges = _drawn_edges(body)
        if has_ci.all():
            ax.stairs(hi, edges, baseline=lo, fill=True, color=NEG, alpha=0.2, lw=0)
        else:
            for i in np.flatnonzero(has_ci):
                ax.fill_between(
                    edges[i : i + 2], lo[i], hi[i], color=NEG, alpha=0.2, lw=0, step="post"
                )
        ax.stairs(s, edges, color=NEG, lw=2, baseline=None)
        ax.set_xlim(edges[0], edges[-1])
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(_txt(f"{name} ({unit})" if unit else name), fontsize=9)
        if len(miss):
            m = float(tr(miss["score"].to_numpy(float))[0])
            ax.axhline(m, color=POS, ls=":", lw=1.5)
            ax.annotate(
                f"missing {m:+.3g}" if ref == 0 else f"missing {m:.3g}",
                (1, m),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=7,
                color=POS,
            )
    else:
        bars = pd.concat([body, miss])
        vals, blo, bhi = (tr(bars[c].to_numpy(float)) for c in ("score", "ci_low", "ci_high"))
        x = np.arange(len(bars))
        bottom = ref
        colors = [
            GREY if m else (POS if v > ref else NEG)
            for v, m in zip(vals, bars["is_missing_bin"], strict=True)
        ]
        yerr = None
        if (np.isfinite(blo) & np.isfinite(bhi)).any():  # a bar with no CI gets no whisker
            yerr = np.vstack([vals - blo, bhi - vals])
        ax.bar(
            x,
            vals - bottom,
            bottom=bottom,
            color=colors,
            alpha=0.8,
            yerr=yerr,
            error_kw={"lw": 1, "capsize": 2, "ecolor": DARK},
        )
        labels = [
            _txt("(missing)" if m else _short(b, 14))
            for b, m in zip(bars["bin"], bars["is_missing_bin"], strict=True)
        ]
        ax.set_xticks(
            x,
            labels,
            fontsize=8,
            rotation=30 if max(map(len, labels), default=0) > 4 else 0,
            ha="right" if max(map(len, labels), default=0) > 4 else "center",
        )
        ax.set_xlabel(_txt(name), fontsize=9)
    ax.axhline(ref, color=DARK, lw=0.6, ls="--")
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)


def plot_importance(
    frame: pd.DataFrame,
    *,
    top: int | None = None,
    ax=None,
    title: str | None = None,
    xlabel: str = "importance",
) -> Figure:
    """Horizontal bars of per-feature importance (columns feature, importance)."""
    df = frame.sort_values("importance", ascending=False)
    df = (df.head(int(top)) if top else df).iloc[::-1]
    fig, ax = _fig_ax(ax, 6.0, 1.0 + 0.3 * max(len(df), 1))
    ax.barh(np.arange(len(df)), df["importance"], color=NEG, alpha=0.8)
    ax.set_yticks(np.arange(len(df)), [_txt(f) for f in df["feature"]], fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_title(_txt(title or "Feature importance"), fontsize=11, loc="left")
    ax.grid(axis="x", alpha=0.3)
    return fig


# ---------------------------------------------------------------------- local
def plot_waterfall(
    frame: pd.DataFrame,
    intercept: float,
    logit: float,
    probability: float,
    *,
    top: int | None = 12,
    ax=None,
    title: str | None = None,
) -> Figure:
    """Waterfall from the intercept through each feature's contribution to the logit.

    ``frame`` needs columns label, contribution; bars are sorted by |contribution| and
    features beyond ``top`` are folded into one "N other features (summed)" bar.
    """
    df = frame.reindex(frame["contribution"].abs().sort_values(ascending=False).index)
    labels, contrib = list(df["label"]), list(df["contribution"].astype(float))
    if top is not None and len(df) > top:
        rest = sum(contrib[top:])
        other = f"{len(df) - top} other feature{'s' if len(df) - top != 1 else ''} (summed)"
        labels, contrib = labels[:top] + [other], contrib[:top] + [rest]
    n = len(contrib) + 2
    fig, ax = _fig_ax(ax, 7.0, 1.4 + 0.34 * n)
    y = np.arange(n)[::-1]
    ax.barh(y[0], intercept, color=GREY, height=0.6)
    cum = intercept
    ends = [intercept]
    for i, c in enumerate(contrib, start=1):
        ax.barh(y[i], c, left=cum, color=POS if c > 0 else NEG, height=0.6)
        ax.text(
            cum + c,
            y[i],
            f" {c:+.2f} " if c >= 0 else f" {c:+.2f} ",
            va="center",
            ha="left" if c >= 0 else "right",
            fontsize=8,
            color=DARK,
        )
        cum += c
        ends.append(cum)
    ax.barh(y[-1], logit, color=DARK, height=0.6)
    for i in range(n - 1):  # connectors
        ax.plot(
            [ends[i]] * 2 if i < len(ends) else [logit] * 2,
            [y[i] - 0.3, y[i + 1] + 0.3],
            color=DARK,
            lw=0.6,
            ls=":",
        )
    ax.text(
        logit,
        y[-1],
        f" {logit:+.2f} " if logit >= 0 else f" {logit:+.2f} ",
        va="center",
        ha="left" if logit >= 0 else "right",
        fontsize=8,
        fontweight="bold",
    )
    ax.text(
        intercept,
        y[0],
        f" {intercept:+.2f} " if intercept >= 0 else f" {intercept:+.2f} ",
        va="center",
        ha="left" if intercept >= 0 else "right",
        fontsize=8,
    )
    ax.set_yticks(
        y,
        [_txt(_short(s, 56)) for s in ["intercept (baseline)", *labels, "log-odds (total)"]],
        fontsize=9,
    )
    ax.axvline(0, color=DARK, lw=0.6)
    pts = np.array([0.0, *ends, logit])
    span = float(pts.max() - pts.min()) or 1.0
    ax.set_xlim(pts.min() - 0.18 * span, pts.max() + 0.18 * span)
    ax.set_xlabel("contribution to the log-odds (red raises the risk, blue lowers it)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        _txt(title or f"Predicted risk {probability:.1%}   (log-odds {logit:+.3f})"),
        fontsize=10,
        loc="left",
    )
    return fig


# ---------------------------------------------------------------------- provenance
def plot_provenance(frame: pd.DataFrame, *, ax=None, title: str | None = None) -> Figure:
    """Bars of neighbour weights, largest in size at the top (a negative weight, a contrast,
    in grey), labelled by task id and a short description; each bar notes the neighbour's
    similarity."""
    fig, ax = _fig_ax(ax, 7.5, 1.2 + 0.5 * max(len(frame), 1))
    if len(frame) == 0:
        ax.text(
            0.5,
            0.5,
            "no retrieved neighbours\n(a fitted model has no provenance)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color=DARK,
        )
        ax.set_axis_off()
        return fig
    w_all = pd.to_numeric(frame["weight"], errors="coerce")
    w_all = w_all.where(np.isfinite(w_all), 0.0)  # ranked as drawn: a non-finite weight as 0
    df = frame.loc[w_all.abs().sort_values(ascending=True, kind="stable").index]  # bottom-up
    w = df["weight"].to_numpy(float)
    w = np.where(np.isfinite(w), w, 0.0)
    y = np.arange(len(df))
    ax.barh(y, w, color=[NEG if v >= 0 else GREY for v in w], alpha=0.8)
    for yi, wi, s in zip(y, w, df["similarity"].to_numpy(float), strict=True):
        if np.isfinite(s):
            ax.text(wi, yi, f" sim {s:.2f}", va="center", fontsize=8, color=DARK)
    labels = [
        _txt(f"{_short(t, 40)}\n{_short(d, 48)}" if d else _short(t, 40))
        for t, d in zip(df["task_id"], df["description"], strict=True)
    ]
    ax.set_yticks(y, labels, fontsize=9)
    lo, hi = min(float(w.min()), 0.0), max(float(w.max()), 0.0)
    ax.set_xlim(1.25 * lo, 1.25 * hi if hi > 0 else 0.05)
    ax.axvline(0, color=DARK, lw=0.6)
    ax.set_xlabel("weight (grey, negative: a contrast the model moves away from)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(
        _txt(title or "Provenance: retrieved neighbour tasks, by weight"), fontsize=11, loc="left"
    )
    return fig


# ---------------------------------------------------------------------- calibration
def plot_calibration(
    y_true,
    prob_dict: Mapping[str, object],
    n_bins: int = 10,
    ax=None,
    *,
    strategy: str = "uniform",
    title: str | None = None,
) -> Figure:
    """Reliability diagram of several methods' predicted probabilities.

    Parameters
    ----------
    y_true : 0/1 labels, shape (n,).
    prob_dict : method name -> predicted P(y=1), each shape (n,).
    n_bins : number of bins; ``strategy`` "uniform" (equal width) or "quantile".
    ax : draw into this axes (reliability only); otherwise a new figure with a
        histogram of predictions below.

    The legend shows each method's expected calibration error (ECE, the
    count-weighted mean |observed - predicted| over the same bins).

    Examples
    --------
    >>> fig = plot_calibration([0, 1, 1, 0], {"a": [.2, .7, .9, .4]}, n_bins=2)
    >>> fig.axes[-1].get_xlabel()
    'mean predicted probability'
    """
    y = check_float_array(y_true, "y_true", what="0/1 labels")
    if not set(np.unique(y)) <= {0.0, 1.0}:
        raise ValidationError("y_true must contain only 0/1 labels")
    if not prob_dict:
        raise ValidationError("prob_dict is empty; pass {method name: predicted probabilities}")
    n_bins = check_int(n_bins, "n_bins", ge=1)
    if strategy not in ("uniform", "quantile"):
        raise ValidationError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    probs = {}
    for name, p in prob_dict.items():
        p = check_float_array(p, f"the probabilities of {name!r}", what="probabilities")
        if p.shape != y.shape or not np.all((p >= 0) & (p <= 1)):
            raise ValidationError(
                f"probabilities of {name!r} must be {y.shape[0]} values in [0, 1]"
            )
        probs[name] = p
    if ax is None:
        fig = new_figure(5.6, 6.2)
        ax, hax = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    else:
        fig, hax = ax.figure, None
    ax.plot([0, 1], [0, 1], ls="--", color=GREY, lw=1, label="perfectly calibrated")
    for name, p in probs.items():
        if strategy == "quantile":
            edges = np.unique(np.quantile(p, np.linspace(0, 1, int(n_bins) + 1)))
        else:
            edges = np.linspace(0, 1, int(n_bins) + 1)
        idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
        cnt = np.bincount(idx, minlength=len(edges) - 1)
        ok = cnt > 0
        mp = np.bincount(idx, p, len(edges) - 1)[ok] / cnt[ok]
        obs = np.bincount(idx, y, len(edges) - 1)[ok] / cnt[ok]
        ece = float(np.sum(cnt[ok] * np.abs(obs - mp)) / len(y))
        (line,) = ax.plot(mp, obs, marker="o", ms=4, lw=1.5, label=_txt(f"{name} (ECE {ece:.3f})"))
        if hax is not None:
            hax.hist(p, bins=np.linspace(0, 1, 21), histtype="step", lw=1.5, color=line.get_color())
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), ylabel="observed fraction of positives")
    ax.set_aspect("auto")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(_txt(title or "Calibration (reliability diagram)"), fontsize=11, loc="left")
    if hax is not None:
        hax.set(xlabel="mean predicted probability", ylabel="count")
        hax.grid(alpha=0.3)
    else:
        ax.set_xlabel("mean predicted probability")
    return fig


__all__ = [
    "new_figure",
    "plot_calibration",
    "plot_coefficients",
    "plot_importance",
    "plot_provenance",
    "plot_shape_functions",
    "plot_waterfall",
]
