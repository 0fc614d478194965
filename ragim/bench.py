"""Benchmarks behind ``ragim bench`` and ``benchmarks/``.

Each benchmark returns one JSON-safe dict with at least ``name``, ``n``, ``ours``,
``baseline`` (each with a ``description``), and ``ratio`` = how many times faster
ours is than the baseline, measured in the same process.

Examples
--------
>>> r = bench_retrieval(n_tasks=2000, n_queries=50, dim=32, factories=("Flat",))
>>> {"name", "n", "ours", "baseline", "ratio", "recall_at_10"} <= set(r)
True
>>> r["recall_at_10"]  # an exact index finds the true neighbours
1.0
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ragim.errors import ValidationError


def clustered_unit_vectors(n: int, dim: int = 384, *, n_clusters: int | None = None, spread: float = 0.35,
                           seed: int = 0) -> np.ndarray:
    """Unit vectors around random cluster centres, like description embeddings of task
    families (uniformly random vectors in 384-d have no neighbours worth finding)."""
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(8, int(np.sqrt(n)))
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        v = centres[rng.integers(0, n_clusters, m)] + spread * rng.standard_normal((m, dim)).astype(np.float32)
        out[s : s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def numpy_topk(db: np.ndarray, queries: np.ndarray, k: int, *, block: int = 256) -> np.ndarray:
    """Exact top-k by inner product with a blocked matrix product (the baseline)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), block):
        sims = queries[s : s + block] @ db.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
        out[s : s + block] = np.take_along_axis(part, order, 1)
    return out


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, truth, strict=True)]))


def bench_retrieval(n_tasks: int = 100_000, *, dim: int = 384, n_queries: int = 1000, k: int = 10,
                    factories: Sequence[str] | None = None, nprobe: int = 32, ef_search: int = 128,
                    seed: int = 0, device: str = "cpu", repeats: int = 3) -> dict[str, Any]:
    """Build time, query throughput, recall@10 and memory per task for FAISS indices against
    an exact numpy top-k on the same precomputed unit vectors.

    Query times are the best of ``repeats`` rounds; each round times numpy and then every
    index back to back, so a busy machine slows both sides of a ratio alike.
    """
    from ragim.vector_store import VectorStore, auto_factory

    if n_tasks < k:
        raise ValidationError(f"n_tasks must be at least k={k}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValidationError(f"repeats must be a positive integer, got {repeats!r}")
    db = clustered_unit_vectors(n_tasks, dim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    q = db[rng.integers(0, n_tasks, n_queries)] + 0.05 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    factories = list(factories) if factories else sorted({"Flat", auto_factory(n_tasks, dim)})
    stores, build = {}, {}
    for f in factories:
        gc.collect()
        t = time.perf_counter()
        stores[f] = VectorStore.build(db, index=f, nprobe=nprobe, ef_search=ef_search, device=device)
        build[f] = time.perf_counter() - t
    base_s, search_s, got = float("inf"), dict.fromkeys(factories, float("inf")), {}
    for _ in range(repeats):
        t = time.perf_counter()
        truth = numpy_topk(db, q, k)
        base_s = min(base_s, time.perf_counter() - t)
        for f, store in stores.items():
            t = time.perf_counter()
            _, got[f] = store.search(q, k)
            search_s[f] = min(search_s[f], time.perf_counter() - t)
    results = {}
    for f in factories:
        results[f] = {"build_seconds": round(build[f], 3), "query_seconds": round(search_s[f], 4),
                      "queries_per_s": round(n_queries / search_s[f], 1),
                      "recall_at_10": round(_recall(got[f], truth), 4),
                      "speedup_vs_numpy": round(base_s / search_s[f], 2),
                      "bytes_per_task": round(_index_bytes(stores[f]) / n_tasks, 1)}
    del stores
    best = max((f for f in factories if results[f]["recall_at_10"] >= 0.95),
               key=lambda f: results[f]["speedup_vs_numpy"], default=factories[0])
    return {
        "name": "retrieval", "n": n_tasks, "dim": dim, "n_queries": n_queries,
        "ours": {"index": best, "queries_per_s": results[best]["queries_per_s"], "seconds": results[best]["query_seconds"],
                 "description": f"FAISS {best} inner-product search ({device}), k={k}, best of {repeats}"},
        "baseline": {"queries_per_s": round(n_queries / base_s, 1), "seconds": round(base_s, 4),
                     "description": f"exact numpy blocked matrix product + argpartition top-{k}, best of {repeats}"},
        "ratio": results[best]["speedup_vs_numpy"], "recall_at_10": results[best]["recall_at_10"],
        "indices": results, "build": {f: r["build_seconds"] for f, r in results.items()},
        "memory_bytes_per_task": results[best]["bytes_per_task"],
    }


def _index_bytes(store) -> int:
    import faiss

    return int(faiss.serialize_index(store._cpu).nbytes)


def bench_fit(n_tasks: int = 10_000, *, n_features: int = 20, baseline_tasks: int = 1000, seed: int = 0,
              device: str = "auto", C: float = 1.0) -> dict[str, Any]:
    """Batched logistic solver vs a scikit-learn loop on ``synthetic_family`` tasks."""
    from ragim.datasets import synthetic_family
    from ragim.models.batched import compare_solvers

    fam = synthetic_family(n_tasks=n_tasks, n_features=n_features, seed=seed)
    schema = fam.schema
    X, y = [], []
    for t in fam:
        X.append(schema.transform(t.X))
        y.append(t.y)
    out = compare_solvers(X, y, C=C, device=device, baseline_tasks=baseline_tasks,
                          data=f"synthetic_family(n_tasks={n_tasks}, n_features={n_features}, seed={seed})")
    out["n_features"] = n_features
    return out


def bench_generate(n_tasks: int = 300, *, batch_sizes: Sequence[int] = (1, 1024), seed: int = 0) -> dict[str, Any]:
    """AttentionGenerator throughput (tasks/s) at batch 1 and a large batch, vs neighbour-mean."""
    from ragim import AttentionGenerator, TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.estimator import neighbor_mean

    fam = synthetic_family(n_tasks=n_tasks, n_features=10, seed=seed)
    index = TaskIndex.build(fam, embedder="hashing:384", progress=False)
    gen = AttentionGenerator(max_epochs=5, seed=seed).fit(index, progress=False)
    descs = fam.descriptions
    rates = {}
    for b in batch_sizes:
        queries = [descs[i % len(descs)] for i in range(b)]
        t = time.perf_counter()
        if b == 1:
            reps = 50
            for i in range(reps):
                gen.generate_params(descs[i % len(descs)], index, uncertainty=False)
            rates[b] = reps / (time.perf_counter() - t)
        else:
            gen.generate_params(queries, index, uncertainty=False)
            rates[b] = b / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(50):
        neighbor_mean(index, descs[i % len(descs)], k=gen.config.k)
    base = 50 / (time.perf_counter() - t)
    big = max(batch_sizes)
    return {
        "name": "generate", "n": n_tasks,
        "ours": {"tasks_per_s": round(rates[big], 1), "batch": big,
                 "description": f"AttentionGenerator.generate_params, batch {big} (hashing embedder, CPU)"},
        "baseline": {"tasks_per_s": round(base, 1), "description": "neighbour-mean, one query at a time"},
        "ratio": round(rates[big] / base, 2),
        "tasks_per_s_by_batch": {str(b): round(r, 1) for b, r in rates.items()},
    }


def bench_generate_lm(n_queries: int = 3, *, base_model: str = "smollm2-135m", n_features: int = 10, k: int = 3,
                      seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """LMGenerator seconds per generated model (constrained JSON decoding) vs neighbour-mean.

    The base model is not fine-tuned: the cost of a generation does not depend on the adapter's
    weights, only on the prompt (``k`` neighbours) and the answer length (``n_features + 1`` numbers).
    The first generation (model load, conversion cache) is not timed.
    """
    from ragim import TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.estimator import neighbor_mean
    from ragim.generate.lm import LMGenerator

    if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries < 1:
        raise ValidationError(f"n_queries must be a positive integer, got {n_queries!r}")
    fam = synthetic_family(n_tasks=max(2 * n_queries, 20), n_features=n_features, seed=seed)
    index = TaskIndex.build(fam, embedder="hashing:384", progress=False)
    gen = LMGenerator(base_model=base_model, k=k, device=device, seed=seed)
    descs = fam.descriptions
    t = time.perf_counter()
    gen.generate_params(descs[-1], index)  # warm-up: load (and convert) the model
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    params = [gen.generate_params(descs[i], index) for i in range(n_queries)]
    per_task = (time.perf_counter() - t) / n_queries
    t = time.perf_counter()
    for i in range(n_queries):
        neighbor_mean(index, descs[i], k=k)
    base = (time.perf_counter() - t) / n_queries
    answer_tokens = float(np.mean([p.metadata["answer_tokens"] for p in params]))
    prompt_tokens = float(np.mean([p.metadata["prompt_tokens"] for p in params]))
    return {
        "name": "generate-lm", "n": n_queries,
        "ours": {"seconds_per_task": round(per_task, 3), "tasks_per_s": round(1 / per_task, 4),
                 "first_call_seconds": round(load_s, 2), "prompt_tokens": round(prompt_tokens, 1),
                 "answer_tokens": round(answer_tokens, 1),
                 "description": f"LMGenerator({base_model}, k={k}).generate_params, one query at a time, "
                                f"{n_features + 1} parameters, constrained JSON decoding"},
        "baseline": {"seconds_per_task": round(base, 5), "tasks_per_s": round(1 / base, 1),
                     "description": "neighbour-mean, one query at a time"},
        "ratio": round(base / per_task, 6),
    }

