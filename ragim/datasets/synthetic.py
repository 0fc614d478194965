"""Hierarchical synthetic task families with known true coefficients, at any scale.

Each task sits at a leaf of a hierarchy ``system -> disease -> subtype -> population``.
Every node carries a random effect vector (intercept + one value per feature); a task's
true logistic coefficients are the scaled sum of the effects on its path plus task
noise, and its description is worded from the node names on the same path. Tasks that
share more of their path therefore share more of their wording *and* of their
coefficients, which is exactly the structure retrieval should exploit.

The family is lazy: construction only hashes task indices into paths and sizes
(vectorised), and task ``i`` is generated from ``(seed, i)`` when it is accessed, so a
million-task family builds in well under a second and task ``i`` is identical across
calls and across ``n_tasks``.

Examples
--------
>>> tc = synthetic_family(n_tasks=100, n_features=5, seed=1)
>>> t = tc[3]
>>> t.true_params.names
['intercept', 'x01', 'x02', 'x03', 'x04', 'x05']
>>> bool((tc[3].X == t.X).all().all())
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from ragim.checks import check_int, check_number
from ragim.errors import ValidationError
from ragim.params import ModelParams
from ragim.schema import FeatureSchema
from ragim.tasks import Task, TaskCollection

LEVELS = ("system", "disease", "subtype", "population")
DEFAULT_BRANCHING = {"system": 12, "disease": 8, "subtype": 4, "population": 12}
DEFAULT_LEVEL_SCALE = (1.0, 0.6, 0.4, 0.2)
#: the linear predictor has SD about SIGNAL * sqrt(sum(level_scale**2)) on standard-normal rows
SIGNAL = 1.5
INTERCEPT_BASE, INTERCEPT_SCALE = -0.5, 0.5
MAX_LABEL_RESAMPLES = 8

# organ system -> (disease heads, outcome phrase); heads are unique across systems
SYSTEMS: dict[str, tuple[tuple[str, ...], str]] = {
    "cardiovascular": (
        (
            "heart failure",
            "cardiomyopathy",
            "atrial fibrillation",
            "coronary artery disease",
            "valvular heart disease",
            "hypertension",
        ),
        "a major adverse cardiovascular event within one year",
    ),
    "renal": (
        (
            "nephropathy",
            "glomerulonephritis",
            "nephrotic syndrome",
            "renal tubular acidosis",
            "kidney injury",
            "polycystic kidney disease",
        ),
        "a 40% decline in kidney function within two years",
    ),
    "respiratory": (
        (
            "asthma",
            "bronchiectasis",
            "interstitial lung disease",
            "pneumonitis",
            "pulmonary hypertension",
            "obstructive airway disease",
        ),
        "hospitalisation for a respiratory exacerbation within one year",
    ),
    "hepatic": (
        (
            "hepatitis",
            "cirrhosis",
            "steatohepatitis",
            "cholestasis",
            "liver fibrosis",
            "portal hypertension",
        ),
        "hepatic decompensation within one year",
    ),
    "endocrine": (
        (
            "diabetes",
            "thyroiditis",
            "adrenal insufficiency",
            "hyperparathyroidism",
            "pituitary dysfunction",
            "metabolic syndrome",
        ),
        "an emergency admission for a metabolic crisis within one year",
    ),
    "neurological": (
        (
            "epilepsy",
            "peripheral neuropathy",
            "migraine",
            "cerebral small-vessel disease",
            "myasthenia",
            "movement disorder",
        ),
        "disability progression within one year",
    ),
    "gastrointestinal": (
        (
            "colitis",
            "pancreatitis",
            "gastroparesis",
            "peptic ulcer disease",
            "enteropathy",
            "diverticular disease",
        ),
        "an unplanned admission within 90 days",
    ),
    "haematological": (
        (
            "anaemia",
            "thrombocytopenia",
            "coagulopathy",
            "neutropenia",
            "myelodysplasia",
            "haemolytic disease",
        ),
        "a transfusion-requiring event within 90 days",
    ),
    "infectious": (
        (
            "sepsis",
            "pneumonia",
            "endocarditis",
            "osteomyelitis",
            "urinary tract infection",
            "cellulitis",
        ),
        "a fatal outcome within 28 days",
    ),
    "oncological": (
        (
            "lymphoma",
            "leukaemia",
            "colorectal carcinoma",
            "lung carcinoma",
            "breast carcinoma",
            "melanoma",
        ),
        "treatment-related toxicity requiring admission",
    ),
    "musculoskeletal": (
        ("osteoarthritis", "osteoporosis", "tendinopathy", "spondyloarthritis", "myositis", "gout"),
        "a fragility fracture or joint replacement within two years",
    ),
    "immunological": (
        (
            "lupus",
            "vasculitis",
            "sarcoidosis",
            "rheumatoid arthritis",
            "immunodeficiency",
            "amyloidosis",
        ),
        "a disease flare requiring hospitalisation within one year",
    ),
}
MODIFIERS = (
    "acute",
    "chronic",
    "recurrent",
    "idiopathic",
    "hereditary",
    "secondary",
    "progressive",
    "late-onset",
)
SUBTYPES = (
    "mild",
    "moderate",
    "severe",
    "stage I",
    "stage II",
    "stage III",
    "refractory",
    "treatment-naive",
    "post-operative",
    "with comorbid diabetes",
    "with chronic kidney disease",
    "with frailty",
)
DEMOGRAPHICS = (
    "adults over 65",
    "adults aged 18 to 40",
    "middle-aged adults",
    "women of reproductive age",
    "older men",
    "children under 12",
    "adolescents",
    "nursing-home residents",
)
SETTINGS = (
    "in rural clinics",
    "in urban emergency departments",
    "in tertiary referral centres",
    "in primary care",
    "in intensive care units",
    "at community hospitals",
)
POPULATIONS = tuple(f"{d} {s}" for d in DEMOGRAPHICS for s in SETTINGS)
GENERIC_OUTCOME = "an adverse outcome within one year"

_TEMPLATES = (
    "Predict {outcome} in {pop} with {cond}.",
    "Among {pop} diagnosed with {cond}, estimate the risk of {outcome}.",
    "{Pop} with {cond}{sys_care}: will the patient have {outcome}?",
    "Risk model for {outcome} in {pop} treated for {cond}{sys_paren}.",
)

# seed-sequence tags, so streams of different kinds never collide
_TAG_TASK, _TAG_NODE, _TAG_NAME = 101, 202, 303
_STREAM_SIZE, _STREAM_TEMPLATE = 64, 65

_M1, _M2, _GOLD = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15


# ---------------------------------------------------------------------- hashing helpers
def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(_GOLD)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_M1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_M2)
    return x ^ (x >> np.uint64(31))


def hash_uniform(seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1): one per key, a pure function of (seed, key, stream).

    Vectorised and random-access (no sequential state), so value ``i`` never depends on
    how many values are asked for.

    >>> a = hash_uniform(0, np.arange(5), stream=1)
    >>> bool(np.array_equal(a[:3], hash_uniform(0, np.arange(3), stream=1)))
    True
    """
    k = _splitmix(np.array([seed % (1 << 64)], dtype=np.uint64))
    k = _splitmix(k ^ np.uint64(stream % (1 << 64)))
    h = _splitmix(_splitmix(np.asarray(keys).astype(np.uint64) ^ k))
    return (h >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def identity_schema(
    names: Sequence[str],
    *,
    missing: bool = False,
    n_bins: int = 8,
    unit: str = "SD",
    descriptions: Sequence[str] | None = None,
) -> FeatureSchema:
    """A schema *already fitted* to standard-normal continuous features (identity transform).

    Medians and means 0, scales 1, bin edges at standard-normal quantiles, and a missing
    indicator per feature when ``missing``.

    >>> s = identity_schema(["a", "b"])
    >>> s.is_fitted, s.design_names
    (True, ['a', 'b'])
    """
    edges = [NormalDist().inv_cdf(q) for q in np.linspace(0, 1, n_bins + 1)[1:-1]]
    descriptions = list(descriptions) if descriptions is not None else [""] * len(names)
    return FeatureSchema.from_dict(
        {
            "features": [
                {"name": n, "type": "continuous", "unit": unit, "description": d}
                for n, d in zip(names, descriptions, strict=True)
            ],
            "n_bins": n_bins,
            "fitted": {
                "medians": {n: 0.0 for n in names},
                "means": {n: 0.0 for n in names},
                "scales": {n: 1.0 for n in names},
                "missing": list(names) if missing else [],
                "categories": {},
                "bin_edges": {n: list(edges) for n in names},
            },
        }
    )


def sizes_from_spec(rows: Any, u: np.ndarray) -> np.ndarray:
    """Task sizes from uniforms ``u`` and a size spec (see :func:`synthetic_family`)."""
    if isinstance(rows, tuple | list):
        if len(rows) not in (2, 3):
            raise ValidationError(f"rows must be (min, max) or (min, max, alpha), got {rows!r}")
        lo = check_int(rows[0], "rows[0] (minimum task size)", ge=1)
        hi = check_int(rows[1], "rows[1] (maximum task size)", ge=lo)
        tail = rows[2] if len(rows) == 3 else 1.0
        alpha = check_number(tail, "rows[2] (Pareto tail index)", gt=0)
        sizes = np.floor(lo * (1.0 - u) ** (-1.0 / alpha))
        return np.clip(sizes, lo, hi).astype(np.int64)
    if hasattr(rows, "ppf"):
        out = np.asarray(rows.ppf(u), dtype=float)
    elif callable(rows):
        out = np.asarray(rows(u), dtype=float)
    else:
        raise ValidationError(
            "rows must be (min, max), (min, max, alpha), a distribution with .ppf, or a callable "
            f"mapping uniforms in [0, 1) to sizes; got {rows!r}"
        )
    if out.shape != u.shape or not np.all(np.isfinite(out)) or np.any(np.round(out) < 1):
        raise ValidationError(
            "the rows distribution must give one finite size >= 1 per uniform draw"
        )
    return np.round(out).astype(np.int64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def draw_labels(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Bernoulli labels; redrawn (given the same rows) up to a few times while single-class.

    Tasks whose probabilities make both classes very unlikely can stay single-class.
    """
    n = p.shape[0]
    y = (rng.random(n) < p).astype(np.int64)
    for _ in range(MAX_LABEL_RESAMPLES):
        if n < 2 or 0 < y.sum() < n:
            break
        y = (rng.random(n) < p).astype(np.int64)
    return y


# ---------------------------------------------------------------------- the family
class _SyntheticFamily:
    def __init__(
        self,
        n_tasks,
        n_features,
        seed,
        levels,
        branching,
        noise,
        rows,
        n_rows,
        level_scale,
        missing_rate,
    ):
        self.n, self.nf, self.seed = n_tasks, n_features, seed
        self.levels, self.branching = levels, branching
        self.noise, self.level_scale, self.missing_rate = (
            noise,
            np.asarray(level_scale),
            missing_rate,
        )
        width = max(2, len(str(n_features)))
        self.names = [f"x{k + 1:0{width}d}" for k in range(n_features)]
        self.columns = pd.Index(self.names)  # built once: an Index per task cost 0.2 ms
        self.schema = identity_schema(
            self.names,
            missing=missing_rate > 0,
            descriptions=[f"synthetic standardised measurement {k + 1}" for k in range(n_features)],
        )
        idx = np.arange(n_tasks, dtype=np.uint64)
        dtype = np.int16 if max(branching) < 2**15 else np.int32
        self.paths = np.stack(
            [
                np.floor(hash_uniform(seed, idx, lvl) * b).astype(dtype)
                for lvl, b in enumerate(branching)
            ],
            axis=1,
        )
        if n_rows is not None:
            self.sizes = np.full(n_tasks, n_rows, dtype=np.int64)
        else:
            self.sizes = sizes_from_spec(rows, hash_uniform(seed, idx, _STREAM_SIZE))
        self.templates = np.floor(
            hash_uniform(seed, idx, _STREAM_TEMPLATE) * len(_TEMPLATES)
        ).astype(np.int8)
        self._caches()
        self.coef_scale = SIGNAL / np.sqrt(n_features)

    # -- names -----------------------------------------------------------------
    def _vocab(self, depth: int, parent: tuple[int, ...]) -> tuple[str, ...]:
        level = self.levels[depth]
        if level == "system":
            return tuple(SYSTEMS)
        if level == "disease":
            system = self.ancestor(parent, "system")
            heads = (
                SYSTEMS[system][0] if system else tuple(h for hs, _ in SYSTEMS.values() for h in hs)
            )
            return tuple(f"{m} {h}" for h in heads for m in MODIFIERS)
        if level == "subtype":
            return SUBTYPES
        return POPULATIONS

    def _caches(self) -> None:
        self.children = lru_cache(maxsize=None)(self._children)
        self.effect = lru_cache(maxsize=262_144)(self._effect)
        self.leaf = lru_cache(maxsize=262_144)(self._leaf)

    # a family travels to other processes (joblib workers) without its caches, rebuilt there
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("children", "effect", "leaf")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._caches()

    def _children(self, depth: int, parent: tuple[int, ...]) -> tuple[str, ...]:
        vocab = self._vocab(depth, parent)
        rng = np.random.default_rng([self.seed, _TAG_NAME, depth, *parent])
        order = rng.permutation(len(vocab))[: self.branching[depth]]
        return tuple(vocab[j] for j in order)

    def node_name(self, path: tuple[int, ...]) -> str:
        return self.children(len(path) - 1, path[:-1])[path[-1]]

    def ancestor(self, path: tuple[int, ...], level: str) -> str | None:
        if level not in self.levels:
            return None
        d = self.levels.index(level)
        return self.node_name(path[: d + 1]) if d < len(path) else None

    # -- effects ---------------------------------------------------------------
    def _effect(self, path: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _TAG_NODE, len(path) - 1, *path])
        return rng.standard_normal(self.nf + 1)

    def coefficients(self, i: int, *, task_noise: bool = True) -> np.ndarray:
        """[intercept, w_1..w_nf] of task i; without ``task_noise``, the oracle: the sum of the
        effects on the task's path, which its description determines."""
        z = self._path_effect(i)
        if task_noise:
            z = z + self._task_noise(i)
        return self._scaled(z)

    def _path_effect(self, i: int) -> np.ndarray:
        path = tuple(int(v) for v in self.paths[i])
        return sum(self.level_scale[d] * self.effect(path[: d + 1]) for d in range(len(path)))

    def _task_noise(self, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _TAG_TASK, i, 1])
        return self.noise * rng.standard_normal(self.nf + 1)

    def _scaled(self, z: np.ndarray) -> np.ndarray:
        out = self.coef_scale * z
        out[0] = INTERCEPT_BASE + INTERCEPT_SCALE * z[0]
        return out

    # -- lazy-collection callbacks ----------------------------------------------
    def info(self, i: int) -> tuple[str, str, dict]:
        i = int(i)
        if not 0 <= i < self.n:
            raise IndexError(f"task index {i} out of range for {self.n} tasks")
        names, desc = self.leaf(tuple(self.paths[i].tolist()), int(self.templates[i]))
        meta: dict[str, Any] = dict(names)
        meta["n_rows"] = int(self.sizes[i])
        meta["source"] = "synthetic"
        meta["index"] = i
        return f"syn-{i:07d}", desc, meta

    def _leaf(self, path: tuple[int, ...], template: int) -> tuple[dict[str, str], str]:
        names = {lvl: self.node_name(path[: d + 1]) for d, lvl in enumerate(self.levels)}
        desc = self._describe(names, template)
        names["group"] = names.get("disease", names[self.levels[0]])
        names["path"] = " / ".join(names[lvl] for lvl in self.levels)
        return names, desc

    @staticmethod
    def _describe(names: dict[str, str], k: int) -> str:
        system, disease = names.get("system"), names.get("disease")
        subtype, population = names.get("subtype"), names.get("population")
        outcome = SYSTEMS[system][1] if system else GENERIC_OUTCOME
        if disease is None:
            disease = f"{system} disease" if system else "a chronic condition"
        if subtype is not None:
            if subtype.startswith("with "):
                cond = f"{disease} and {subtype[len('with ') :]}"
            else:
                cond = f"{subtype} {disease}"
        else:
            cond = disease
        pop = population or "adult patients"
        return _TEMPLATES[k].format(
            outcome=outcome,
            pop=pop,
            Pop=pop[0].upper() + pop[1:],
            cond=cond,
            sys_care=f", followed in {system} care" if system else "",
            sys_paren=f" ({system} medicine)" if system else "",
        )

    def true_params(self, i: int, task_id: str, *, oracle: bool = False) -> ModelParams:
        return self._params(self.coefficients(i, task_noise=not oracle), task_id, oracle=oracle)

    def _params(self, c: np.ndarray, task_id: str, *, oracle: bool) -> ModelParams:
        if self.missing_rate > 0:  # interleave zero coefficients for the missing indicators
            vec = np.zeros(1 + 2 * self.nf)
            vec[0], vec[1::2] = c[0], c[1:]
        else:
            vec = c
        return ModelParams(
            "logistic",
            self.schema,
            vec,
            metadata={"source": "oracle" if oracle else "true", "task_id": task_id},
        )

    def make(self, i: int) -> Task:
        tid, desc, meta = self.info(i)
        z = self._path_effect(i)  # computed once for the true and the oracle model
        c, oracle = self._scaled(z + self._task_noise(i)), self._scaled(z)
        rng = np.random.default_rng([self.seed, _TAG_TASK, i, 0])
        n = int(self.sizes[i])
        X = rng.standard_normal((n, self.nf))
        if self.missing_rate > 0:
            X[rng.random((n, self.nf)) < self.missing_rate] = np.nan
        design = np.where(
            np.isnan(X), 0.0, X
        )  # median imputation in design space; indicator coef 0
        y = draw_labels(rng, _sigmoid(c[0] + design @ c[1:]))
        return Task(
            tid,
            desc,
            pd.DataFrame(X, columns=self.columns, copy=False),
            y,
            meta,
            self._params(c, tid, oracle=False),
            self._params(oracle, tid, oracle=True),
        )


def synthetic_family(
    n_tasks: int = 1000,
    n_features: int = 10,
    seed: int = 0,
    *,
    levels: Sequence[str] = LEVELS,
    branching: Sequence[int] | None = None,
    noise: float = 0.1,
    rows: tuple | Callable | Any = (20, 400),
    n_rows: int | None = None,
    level_scale: Sequence[float] = DEFAULT_LEVEL_SCALE,
    missing_rate: float = 0.0,
) -> TaskCollection:
    """A lazy hierarchical family of synthetic logistic tasks with known true parameters.

    Parameters
    ----------
    n_tasks : number of tasks (>= 1); task ``i`` does not depend on ``n_tasks``.
    n_features : number of standard-normal features ``x01, x02, ...`` (>= 1).
    seed : non-negative integer; everything is a pure function of ``(seed, task index)``.
    levels : hierarchy levels, a non-empty ordered subset of
        ``("system", "disease", "subtype", "population")``.
    branching : children per node at each level; default 12 systems, 8 diseases per
        system, 4 subtypes per disease, 12 populations per subtype (bounded by the word
        lists: 12, 48, 12, 48).
    noise : SD of the task-specific perturbation, in the units of ``level_scale``.
    rows : task-size distribution: ``(min, max)`` or ``(min, max, alpha)`` for a Pareto
        tail (default alpha 1: heavy-tailed, clipped at max), a frozen scipy distribution
        (its ``ppf`` is used), or a callable mapping an array of uniforms in [0, 1) to sizes.
    n_rows : if given, every task has exactly this many rows (overrides ``rows``).
    level_scale : weight of each level's node effect (one per level; the default is
        truncated when fewer levels are used).
    missing_rate : probability that any single value is missing (MCAR). When > 0 the
        schema has a missing indicator per feature, with true coefficient 0.

    Returns
    -------
    A lazy :class:`TaskCollection` named "synthetic" over an identity-fitted schema.
    True coefficients: ``intercept = -0.5 + 0.5 * z_0`` and ``w = 1.5 / sqrt(n_features) * z``
    with ``z = sum_l level_scale[l] * effect(node_l) + noise * eps``; each task's
    ``oracle_params`` are the same without ``noise * eps`` (what its path, and so its
    description, determines: the limit of a zero-shot method); labels are
    Bernoulli(sigmoid(intercept + X_imputed @ w)), redrawn a few times while a task is
    single-class (tiny tasks can still be single-class). Metadata: one field per level,
    ``group`` (the disease), ``path``, ``n_rows``, ``source="synthetic"``, ``index``.

    Examples
    --------
    >>> tc = synthetic_family(n_tasks=10, n_features=3, n_rows=50)
    >>> t = tc[0]
    >>> t.X.shape, t.true_params.metadata["source"]
    ((50, 3), 'true')
    >>> sorted(k for k in t.metadata if k in LEVELS)
    ['disease', 'population', 'subtype', 'system']
    """
    n_tasks = check_int(n_tasks, "n_tasks", ge=1)
    n_features = check_int(n_features, "n_features", ge=1)
    seed = check_int(seed, "seed", ge=0)
    noise = check_number(noise, "noise", ge=0)
    missing_rate = check_number(missing_rate, "missing_rate", ge=0, le=0.99)
    levels = tuple(levels) if not isinstance(levels, str) else (levels,)
    if (
        not levels
        or any(lv not in LEVELS for lv in levels)
        or list(levels) != sorted(set(levels), key=LEVELS.index)
    ):
        raise ValidationError(
            f"levels must be a non-empty ordered subset of {LEVELS}, got {levels!r}"
        )
    caps = {
        "system": len(SYSTEMS),
        "disease": len(MODIFIERS) * 6,
        "subtype": len(SUBTYPES),
        "population": len(POPULATIONS),
    }
    if branching is None:
        branching = tuple(DEFAULT_BRANCHING[lv] for lv in levels)
    else:
        branching = tuple(branching)
        if len(branching) != len(levels):
            raise ValidationError(
                f"branching needs one entry per level {levels}, got {branching!r}"
            )
        branching = tuple(
            check_int(b, f"branching for {lv!r}", ge=1, le=caps[lv])
            for lv, b in zip(levels, branching, strict=True)
        )
    level_scale = tuple(level_scale)
    if len(level_scale) != len(levels):
        if level_scale == DEFAULT_LEVEL_SCALE and len(levels) < len(LEVELS):
            level_scale = tuple(DEFAULT_LEVEL_SCALE[LEVELS.index(lv)] for lv in levels)
        else:
            raise ValidationError(
                f"level_scale needs one entry per level {levels}, got {level_scale!r}"
            )
    level_scale = tuple(check_number(s, "level_scale entries", ge=0) for s in level_scale)
    if n_rows is not None:
        n_rows = check_int(n_rows, "n_rows", ge=1)
    fam = _SyntheticFamily(
        n_tasks, n_features, seed, levels, branching, noise, rows, n_rows, level_scale, missing_rate
    )
    return TaskCollection.lazy(n_tasks, fam.info, fam.make, fam.schema, name="synthetic")
