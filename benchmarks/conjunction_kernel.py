"""A degree-2 (conjunction) term in the text candidate's kernel: a prototype, not adopted.

Question (issue 14, synthetic skill): a subtype's or a population's effect in
``synthetic_family`` is specific to its disease, so a description's words carry it only jointly
(disease AND subtype). The text candidate's kernel is linear in the words,
``K1 = Phi diag(tau) Phi'``; this prototype adds ``C = L * L`` (elementwise), ``L`` the same
kernel without its constant, whose features are the pairs of words two descriptions share
(a polynomial kernel of degree 2), with both scales and the nugget refitted by type-II maximum
likelihood (``fit_kernel_scales``) after the per-word scales.

Measured inside the index only (the generator's own leave-task-out ``cv_`` table on
``synthetic_family(n_tasks=300, n_features=10, seed=0)``, as ``description_ceiling.py``), with the
free-text descriptions and with one token per level's value (``fields``). It patches two private
methods of ``ragim.generate.statistical._Fitted`` for the run, on purpose: it is an experiment,
not a feature.

Run: .venv/bin/python benchmarks/conjunction_kernel.py   (about 1 minute per row)
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def patch(statistical) -> None:
    """Give the text candidate of every ``_Fitted`` the kernel ``a K1 + s C``."""
    from ragim.generate.meta_regression import KernelRegression, fit_kernel_scales

    fit_text, predict = statistical._Fitted._fit_text, statistical._Fitted.predict

    def kernels(part, fq=None):
        P, tau = part["Phi"], part["tau"]
        F = P if fq is None else fq
        return (F * tau) @ P.T, (F[:, 1:] * tau[1:]) @ P[:, 1:].T

    def fit_text_conj(self):
        fit_text(self)
        if "text" not in self.parts:
            return
        for g, cols in self.groups.items():
            part = self.parts["text"][g]
            K1, L = kernels(part)
            sub = self._hyper_rows()
            Y, V = self.Y[np.ix_(sub, cols)], self.V[np.ix_(sub, cols)]
            h, nug = fit_kernel_scales([K1[np.ix_(sub, sub)], (L * L)[np.ix_(sub, sub)]], Y, V)
            part["conj"] = (float(h[0]), float(h[1]))
            part["gp"] = KernelRegression(
                h[0] * K1 + h[1] * L * L, self.Y[:, cols], self.V[:, cols], nug
            )

    def predict_conj(self, texts, vectors):
        out = predict(self, texts, vectors)
        if "text" not in out:
            return out
        mean, var = out["text"]
        Phi_q = self._text_features(texts)
        for g, cols in self.groups.items():
            part = self.parts["text"][g]
            a, s = part["conj"]
            fq = Phi_q[:, part["keep"]]
            k1, lq = kernels(part, fq)
            k = a * k1 + s * lq * lq
            self_k1 = np.einsum("ij,ij->i", fq * part["tau"], fq)
            self_l = np.einsum("ij,ij->i", fq[:, 1:] * part["tau"][1:], fq[:, 1:])
            mean[:, cols] = part["gp"].mean(k)
            var[:, cols] = part["gp"].variance(k, a * self_k1 + s * self_l**2)[:, None]
        out["text"] = (mean, var)
        return out

    statistical._Fitted._fit_text = fit_text_conj
    statistical._Fitted.predict = predict_conj


def main() -> None:
    from description_ceiling import field_tokens

    import ragim.generate.statistical as statistical
    from ragim import TaskCollection, TaskIndex, datasets

    warnings.filterwarnings("ignore")
    tasks = list(datasets.synthetic_family(n_tasks=300, n_features=10, seed=0))
    variants = {
        "descriptions": (tasks, 2),
        "fields, unnested": ([replace(t, description=field_tokens(t)) for t in tasks], 1),
    }
    cols = ["pooled", "text", "text-glmm", "neighbors", "neighbor-mean", "stack"]
    print("| descriptions as | kernel | " + " | ".join(cols) + " | seconds |")
    print("|---|---|" + "---:|" * (len(cols) + 1))
    for kernel in ("linear (ragim)", "linear + conjunctions"):
        if kernel != "linear (ragim)":
            patch(statistical)
        for name, (family, ngram_max) in variants.items():
            index = TaskIndex.build(TaskCollection(family), embedder="minilm", progress=False)
            t0 = time.perf_counter()
            gen = statistical.StatisticalGenerator(ngram_max=ngram_max, adaptation_tasks=0)
            gen.fit(index, progress=False)
            row = {**gen.cv_["candidates"], "stack": gen.cv_["stack"]}
            print(
                f"| {name} | {kernel} | "
                + " | ".join(f"{row[c]:.4f}" for c in cols)
                + f" | {time.perf_counter() - t0:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
