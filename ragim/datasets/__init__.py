"""Task families: bundled real data and generators with known ground truth.

* :func:`heart_disease` — real UCI Heart Disease data, site x outcome x subgroup tasks;
* :func:`colon_cancer` — a real adjuvant colon-cancer trial, treatment arm x 5-year outcome
  x subgroup tasks;
* :func:`synthetic_family` — hierarchical synthetic tasks with true coefficients, lazy,
  up to millions of tasks;
* :func:`procedure_family` — real ICD-10-PCS procedure titles with simulated patients
  over a named lab panel, lazy.

>>> from ragim import datasets
>>> len(datasets.synthetic_family(n_tasks=50))
50
"""

from __future__ import annotations

from ragim.datasets.colon import colon_cancer
from ragim.datasets.heart import heart_disease
from ragim.datasets.procedure import procedure_family
from ragim.datasets.synthetic import synthetic_family

__all__ = ["colon_cancer", "heart_disease", "procedure_family", "synthetic_family"]
