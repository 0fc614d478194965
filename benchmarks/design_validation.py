"""Choosing a StatisticalConfig setting by validation inside indexes of design families.

A design choice of the default generator is made here, never on the benchmarks' targets. Each
design family (``synthetic:SEED[:N_TASKS]``, ``procedure:SEED[:N_TASKS]``) is a seed of
``synthetic_family(n_tasks=300, n_features=10)`` or of ``procedure_family(n_tasks=1000)`` that no
benchmark uses (the benchmarks use seed 0); a smaller ``N_TASKS`` stands for the small indexes of
the real cohorts (a few dozen tasks). The StatisticalGenerator is fitted on an index of the
whole family, once per value of the setting, and its own leave-task-out validation inside the index (the ``cv_`` table) gives the mean
held-out log-loss of every candidate and of the stack. Lower is better; the ``difference``
column is the stack's change from the first value.

Run: .venv/bin/python benchmarks/design_validation.py --setting split_buckets --values false true
     [--families synthetic:11 synthetic:12 synthetic:13 procedure:7 procedure:8 synthetic:11:30 ...]
     [--embedder minilm] [--json-out benchmarks/results/design_validation_split_buckets.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import fields
from pathlib import Path

DEFAULT_FAMILIES = ("synthetic:11", "synthetic:12", "synthetic:13", "procedure:7", "procedure:8",
                    "synthetic:11:30", "synthetic:12:30", "synthetic:13:30")


def family(spec: str):
    """The tasks of a design family ``"synthetic:SEED"`` or ``"procedure:SEED"`` (seed 0, the
    benchmarks' seed, is refused)."""
    from ragim import datasets

    name, seed, *size = spec.split(":")
    if name not in ("synthetic", "procedure") or not seed.isdigit() or len(size) > 1 or (
        size and not size[0].isdigit()
    ):
        raise SystemExit(f"a family is synthetic:SEED[:N_TASKS] or procedure:SEED[:N_TASKS], got {spec!r}")
    if int(seed) == 0:
        raise SystemExit(f"{spec}: seed 0 is the benchmarks' family; design on another seed")
    if name == "synthetic":
        return datasets.synthetic_family(n_tasks=int(size[0]) if size else 300, n_features=10, seed=int(seed))
    return datasets.procedure_family(n_tasks=int(size[0]) if size else 1000, seed=int(seed))


def parse_value(setting: str, text: str):
    """``text`` as a value of the StatisticalConfig field ``setting`` (bool, int, float or str)."""
    from ragim.generate.statistical import StatisticalConfig

    kinds = {f.name: f.type for f in fields(StatisticalConfig)}
    if setting not in kinds:
        raise SystemExit(f"StatisticalConfig has no setting {setting!r}; it has {sorted(kinds)}")
    kind = str(kinds[setting])
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise SystemExit(f"{setting} takes true or false, got {text!r}")
        return text.lower() == "true"
    return int(text) if kind == "int" else float(text) if kind == "float" else text


def validate(tasks, setting: str, values: list, embedder: str) -> list[dict]:
    """One row per value: the generator's ``cv_`` log-losses on an index of ``tasks``."""
    from ragim import TaskIndex
    from ragim.generate.statistical import StatisticalConfig, StatisticalGenerator

    index = TaskIndex.build(tasks, embedder=embedder, keep_tasks=True, progress=False)
    rows = []
    for v in values:
        t0 = time.perf_counter()
        gen = StatisticalGenerator(StatisticalConfig(**{setting: v})).fit(index, progress=False)
        rows.append({"value": v, "candidates": gen.cv_["candidates"], "stack": gen.cv_["stack"],
                     "n_tasks": gen.cv_["n_tasks"], "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setting", required=True, help="a StatisticalConfig field")
    ap.add_argument("--values", nargs="+", required=True, help="its values; the first is the reference")
    ap.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES))
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    values = [parse_value(args.setting, v) for v in args.values]
    out = {"setting": args.setting, "values": values, "embedder": args.embedder, "families": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the families' small tasks left out of the index
        for spec in args.families:
            rows = validate(family(spec), args.setting, values, args.embedder)
            out["families"][spec] = rows
            for r in rows:
                cands = " ".join(f"{c} {v:.4f}" for c, v in r["candidates"].items())
                print(f"{spec:14s} {args.setting}={r['value']!s:6s} stack {r['stack']:.4f} "
                      f"(difference {r['stack'] - rows[0]['stack']:+.4f}) | {cands} | "
                      f"{r['n_tasks']} tasks, {r['seconds']:.0f} s", flush=True)
    if args.json_out is not None:
        from ragim.io import write_file

        write_file(args.json_out, (json.dumps(out, indent=1) + "\n").encode("utf-8"))  # atomic
    return out


if __name__ == "__main__":
    main()
