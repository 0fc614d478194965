"""Benchmarks behind ``ragim bench`` and ``benchmarks/``.

Each benchmark returns one JSON-safe dict with at least ``name``, ``n``, ``ours``,
``baseline`` (each with a ``description``), and ``ratio`` = how many times faster
ours is than the baseline, measured in the same process. Both sides of a ratio run
with the same number of threads: ``threads`` says how many (``{"ours": t,
"baseline": t}``), ``by_threads`` repeats the comparison for every thread count asked
for (a multi-thread figure always beside its single-thread twin), and ``environment``
names the BLAS / OpenMP libraries, their versions, the CPU and the device
(:func:`environment`, from threadpoolctl).

Examples
--------
>>> r = bench_retrieval(n_tasks=2000, n_queries=50, dim=32, factories=("Flat",), threads=(1,))
>>> {"name", "n", "ours", "baseline", "ratio", "recall_at_10", "threads", "environment"} <= set(r)
True
>>> r["recall_at_10"], r["threads"]  # an exact index finds the true neighbours
(1.0, {'ours': 1, 'baseline': 1})
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ragim.checks import check_int
from ragim.errors import GenerationError, ValidationError


# ---------------------------------------------------------------------- threads and environment
def default_threads() -> tuple[int, ...]:
    """``(1, cpus)``: every ratio once on one thread and once on all the CPUs this process may
    use."""
    cpus = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    return (1,) if cpus <= 1 else (1, cpus)


def _check_threads(threads: Sequence[int] | None) -> list[int]:
    out = list(default_threads() if threads is None else threads)
    if not out:
        raise ValidationError(f"threads must list at least one thread count, got {threads!r}")
    return [check_int(t, "each thread count in threads", ge=1) for t in out]


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Limit BLAS and OpenMP (numpy, scipy, FAISS: threadpoolctl) and torch to ``n`` threads."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(int(n)):
        if torch is not None:
            torch.set_num_threads(int(n))
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(old)


#: the /proc/cpuinfo flags of a CPU's bfloat16 units. bfloat16 weights made LM generation about
#: twice as fast on CPUs with AMX tiles and no faster on one with AVX-512 BF16 alone
#: (docs/lm_format.md, "On a CPU without AMX"), so benchmark ratios depend on them
BFLOAT16_FLAGS = frozenset({"amx_bf16", "amx_tile", "avx512_bf16"})


def environment(device: str = "cpu") -> dict[str, Any]:
    """The CPU (its model name and bfloat16 units, :data:`BFLOAT16_FLAGS`; empty where
    /proc/cpuinfo cannot be read), device, library versions and the BLAS / OpenMP libraries
    loaded in this process with their default thread counts (threadpoolctl), for a
    benchmark's JSON.

    Examples
    --------
    >>> env = environment()
    >>> env["device"], {"api", "version", "threads", "package"} <= set(env["libraries"][0])
    ('cpu', True)
    """
    from threadpoolctl import threadpool_info

    libs = []
    for info in threadpool_info():
        parts = Path(info.get("filepath", "")).parts
        site = [i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages")]
        owner = (
            parts[site[-1] + 1].split(".")[0].split("_")[0]
            if site and len(parts) > site[-1] + 2
            else "system"
        )
        libs.append(
            {
                "api": info.get("internal_api"),
                "version": info.get("version"),
                "threads": info.get("num_threads"),
                "package": owner,
            }
        )
    cpu, flags = "", []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    except OSError:
        pass
    versions = {"numpy": np.__version__}
    for mod in ("faiss", "torch", "sklearn"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    return {
        "cpus": default_threads()[-1],
        "cpu": cpu,
        "cpu_bfloat16_units": sorted(f for f in flags if f in BFLOAT16_FLAGS),
        "device": device,
        "libraries": libs,
        "versions": versions,
    }


def resources_line(result: dict[str, Any], threads: int | None = None) -> str:
    """One line naming the threads on each side, the BLAS / OpenMP libraries and the
    device of a benchmark result (for the docs, beside each figure).

    Examples
    --------
    >>> blas = {"api": "openblas", "version": "0.3", "package": "numpy"}
    >>> resources_line({"threads": {"ours": 1, "baseline": 1},
    ...     "environment": {"device": "cpu", "cpus": 2, "cpu": "", "libraries": [blas]}})
    'threads: 1 (ours) = 1 (baseline); BLAS/OpenMP: openblas 0.3 (numpy); device: cpu, 2 CPU cores'
    """
    env = result.get("environment", {})
    t = result.get("threads", {})
    ours, base = (
        (threads, threads) if threads is not None else (t.get("ours", "?"), t.get("baseline", "?"))
    )
    libs = ", ".join(
        f"{lib['api']}{' ' + lib['version'] if lib.get('version') else ''} ({lib['package']})"
        for lib in env.get("libraries", [])
    )
    where = env.get("device", "?")
    cpu = (
        f", {env['cpus']} CPU cores" + (f" ({env['cpu']})" if env.get("cpu") else "")
        if env.get("cpus")
        else ""
    )
    return (
        f"threads: {ours} (ours) = {base} (baseline); BLAS/OpenMP: {libs or 'none'}; "
        f"device: {where}{cpu}"
    )


class PeakMemory:
    """Samples this process's resident memory in a background thread: ``peak_anon_mb`` is
    the largest anonymous RSS seen (heap, arrays), which excludes file pages mapped from
    disk (an on-disk index); ``peak_rss_mb`` is the kernel's high-water mark of the whole
    RSS (``VmHWM``, every page).

    Examples
    --------
    >>> with PeakMemory() as peak:
    ...     _ = np.ones(1_000_000)
    >>> peak.peak_rss_mb > 0
    True
    """

    def __init__(self, every: float = 0.05):
        self.every, self.peak_anon_mb = every, 0.0
        self._stop = threading.Event()

    @staticmethod
    def _status_mb(key: str) -> float | None:
        """The ``key:`` line of ``/proc/self/status`` in MB, or None where there is none."""
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    @classmethod
    def _anon_mb(cls) -> float:
        return cls._status_mb("RssAnon") or 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_anon_mb = max(self.peak_anon_mb, self._anon_mb())
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_anon_mb = max(self.peak_anon_mb, self._anon_mb())

    @property
    def peak_rss_mb(self) -> float:
        """The high-water mark of this process image's RSS (``VmHWM``). Not ``ru_maxrss``:
        Linux carries that over ``fork`` + ``exec``, so a child started by a big parent
        reports at least the parent's size."""
        hwm = self._status_mb("VmHWM")
        if hwm is not None:
            return hwm
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------- retrieval
def clustered_unit_vector_chunks(
    n: int,
    dim: int = 384,
    *,
    n_clusters: int | None = None,
    spread: float = 0.35,
    seed: int = 0,
    chunk: int = 100_000,
) -> Iterator[np.ndarray]:
    """:func:`clustered_unit_vectors` made ``chunk`` rows at a time (the same rows), so
    a collection larger than memory can be streamed into an index."""
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(8, int(np.sqrt(n)))
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    step = 100_000
    for s in range(0, n, chunk):
        out = np.empty((min(chunk, n - s), dim), dtype=np.float32)
        for a in range(0, len(out), step):
            m = min(step, len(out) - a)
            v = centres[rng.integers(0, n_clusters, m)] + spread * rng.standard_normal(
                (m, dim)
            ).astype(np.float32)
            out[a : a + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
        yield out


def clustered_unit_vectors(
    n: int, dim: int = 384, *, n_clusters: int | None = None, spread: float = 0.35, seed: int = 0
) -> np.ndarray:
    """Unit vectors around random cluster centres, like description embeddings of task
    families (uniformly random vectors in 384-d have no neighbours worth finding)."""
    out = np.empty((n, dim), dtype=np.float32)
    s = 0
    for part in clustered_unit_vector_chunks(
        n, dim, n_clusters=n_clusters, spread=spread, seed=seed
    ):
        out[s : s + len(part)] = part
        s += len(part)
    return out


def numpy_topk(
    db: np.ndarray, queries: np.ndarray, k: int, *, block: int = 256, db_block: int = 65_536
) -> np.ndarray:
    """Exact top-k by inner product (the baseline): a matrix product blocked over queries
    and database rows, an argpartition per block, and a merge of the blocks' candidates
    (memory stays at ``block * db_block`` scores however large ``db`` is)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), block):
        q = queries[s : s + block]
        cand_s, cand_i = [], []
        for d in range(0, len(db), db_block):
            sims = q @ db[d : d + db_block].T
            kk = min(k, sims.shape[1])
            part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            cand_s.append(np.take_along_axis(sims, part, 1))
            cand_i.append(part + d)
        sims, idx = np.concatenate(cand_s, axis=1), np.concatenate(cand_i, axis=1)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1)
        out[s : s + block] = np.take_along_axis(np.take_along_axis(idx, part, 1), order, 1)
    return out


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, truth, strict=True)]))


def default_factories(n: int, dim: int) -> list[str]:
    """The indices :func:`bench_retrieval` compares: exact Flat up to 100k vectors; beyond,
    the ``"auto"`` IVF index with float32, 8-bit (SQ8) and product-quantised (PQ) codes."""
    from ragim.vector_store import FLAT_MAX, auto_factory

    if n <= FLAT_MAX:
        return ["Flat"]
    ivf = auto_factory(n, dim).split(",")[0]
    m = next(m for m in (32, 16, 8, 4, 2, 1) if dim % m == 0)
    return [f"{ivf},Flat", f"{ivf},SQ8", f"{ivf},PQ{m}"]


def bench_retrieval(
    n_tasks: int = 100_000,
    *,
    dim: int = 384,
    n_queries: int = 1000,
    k: int = 10,
    factories: Sequence[str] | None = None,
    nprobe: int = 32,
    ef_search: int = 128,
    seed: int = 0,
    device: str = "cpu",
    repeats: int = 3,
    threads: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Build time, query throughput, recall@10 and memory per task of FAISS indices against
    an exact numpy top-k on the same precomputed unit vectors, with equal threads.

    For every thread count in ``threads`` (default ``(1, cpus)``) numpy's BLAS and FAISS's
    OpenMP are limited to that many threads. Query times are the best of ``repeats``
    rounds; each round times numpy and then every index back to back, so a busy machine
    slows both sides of a ratio alike. The top-level figures are those of the fastest
    index with recall@10 >= 0.95 at the first thread count. IVF indices with the same
    number of lists share the first one's k-means (``coarse_quantizer_from``; their
    ``build_seconds`` leave it out).
    """
    from ragim.vector_store import VectorStore

    if n_tasks < k:
        raise ValidationError(f"n_tasks must be at least k={k}")
    repeats = check_int(repeats, "repeats", ge=1)
    threads = _check_threads(threads)
    db = clustered_unit_vectors(n_tasks, dim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    q = db[rng.integers(0, n_tasks, n_queries)] + 0.05 * rng.standard_normal(
        (n_queries, dim)
    ).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    factories = list(factories) if factories else default_factories(n_tasks, dim)
    stores, build, shared = {}, {}, {}
    for f in factories:
        gc.collect()
        lists = f.split(",")[0] if f.startswith("IVF") else None
        coarse = next((s for g, s in stores.items() if lists and g.split(",")[0] == lists), None)
        t = time.perf_counter()
        stores[f] = VectorStore.build(
            db, index=f, nprobe=nprobe, ef_search=ef_search, device=device, coarse=coarse
        )
        build[f] = time.perf_counter() - t
        if coarse is not None:
            shared[f] = coarse.factory
    base_s = dict.fromkeys(threads, float("inf"))
    search_s = {(f, t): float("inf") for f in factories for t in threads}
    got, truth = {}, None
    for _ in range(repeats):
        for t in threads:
            with limit_threads(t):
                t0 = time.perf_counter()
                truth = numpy_topk(db, q, k)
                base_s[t] = min(base_s[t], time.perf_counter() - t0)
                for f, store in stores.items():
                    t0 = time.perf_counter()
                    _, got[f] = store.search(q, k)
                    search_s[f, t] = min(search_s[f, t], time.perf_counter() - t0)
    t1 = threads[0]
    results = {}
    for f in factories:
        by = {
            str(t): {
                "query_seconds": round(search_s[f, t], 4),
                "queries_per_s": round(n_queries / search_s[f, t], 1),
                "speedup_vs_numpy": round(base_s[t] / search_s[f, t], 2),
            }
            for t in threads
        }
        results[f] = {
            "build_seconds": round(build[f], 3),
            "coarse_quantizer_from": shared.get(f),
            **by[str(t1)],
            "recall_at_10": round(_recall(got[f], truth), 4),
            "bytes_per_task": round(stores[f].memory_bytes() / n_tasks, 1),
            "by_threads": by,
        }
    del stores
    best = max(
        (f for f in factories if results[f]["recall_at_10"] >= 0.95),
        key=lambda f: results[f]["speedup_vs_numpy"],
        default=factories[0],
    )
    by_threads = {
        str(t): {
            "baseline": {
                "seconds": round(base_s[t], 4),
                "queries_per_s": round(n_queries / base_s[t], 1),
            },
            "ours": {
                "seconds": results[best]["by_threads"][str(t)]["query_seconds"],
                "queries_per_s": results[best]["by_threads"][str(t)]["queries_per_s"],
            },
            "ratio": results[best]["by_threads"][str(t)]["speedup_vs_numpy"],
            "threads": {"ours": t, "baseline": t},
        }
        for t in threads
    }
    return {
        "name": "retrieval",
        "n": n_tasks,
        "dim": dim,
        "n_queries": n_queries,
        "ours": {
            "index": best,
            "queries_per_s": results[best]["queries_per_s"],
            "seconds": results[best]["query_seconds"],
            "description": f"FAISS {best} inner-product search ({device}, nprobe {nprobe}), k={k}, "
            f"{t1} thread(s), best of {repeats}",
        },
        "baseline": {
            "queries_per_s": round(n_queries / base_s[t1], 1),
            "seconds": round(base_s[t1], 4),
            "description": f"exact numpy blocked matrix product + argpartition top-{k}, {t1} BLAS "
            f"thread(s), best of {repeats}",
        },
        "ratio": results[best]["speedup_vs_numpy"],
        "recall_at_10": results[best]["recall_at_10"],
        "threads": {"ours": t1, "baseline": t1},
        "by_threads": by_threads,
        "indices": results,
        "build": {f: r["build_seconds"] for f, r in results.items()},
        "memory_bytes_per_task": results[best]["bytes_per_task"],
        "device": device,
        "environment": environment(device),
    }


# ---------------------------------------------------------------------- builds and their memory
def bench_store_build(
    n_tasks: int,
    *,
    index: str = "auto",
    storage: str = "memory",
    dim: int = 384,
    chunk: int = 100_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Stream ``n_tasks`` clustered unit vectors into a :class:`~ragim.vector_store.VectorStore`
    ``chunk`` rows at a time (trained on the first 200,000, which are a random sample:
    the vectors are drawn independently), in this process; seconds and peak memory.

    Run it in a fresh process for a clean peak (``benchmarks/scale.py`` does).
    """
    from ragim.vector_store import TRAIN_SIZE, VectorStore

    with PeakMemory() as peak:
        t0 = time.perf_counter()
        chunks = clustered_unit_vector_chunks(n_tasks, dim, seed=seed, chunk=chunk)
        head, held = [], 0
        for part in chunks:
            head.append(part)
            held += len(part)
            if held >= TRAIN_SIZE:
                break
        first = np.concatenate(head) if len(head) > 1 else head[0]
        del head
        store = VectorStore.create(
            dim, index, n_total=n_tasks, train=first[:TRAIN_SIZE], device="cpu", storage=storage
        )
        store.add(first)
        del first
        for part in chunks:
            store.add(part)
        seconds = time.perf_counter() - t0
    return {
        "name": "store-build",
        "n": n_tasks,
        "index": store.factory,
        "storage": storage,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak.peak_rss_mb, 1),
        "peak_anon_mb": round(peak.peak_anon_mb, 1),
        "index_bytes_per_task": round(store.memory_bytes() / n_tasks, 1),
        "chunk": chunk,
        "description": f"VectorStore.create + add, {chunk:,} synthetic clustered {dim}-d unit "
        "vectors at a time",
    }


def bench_index_build(
    n_tasks: int,
    *,
    index: str = "auto",
    storage: str = "memory",
    chunk_size: int | None = None,
    n_features: int = 20,
    embedder: str = "hashing:384",
    seed: int = 0,
) -> dict[str, Any]:
    """The full streaming :meth:`TaskIndex.build <ragim.index.TaskIndex.build>` of
    ``synthetic_family(n_tasks, n_features)`` (fit, embed, add), in this process; seconds
    and peak memory. The embedder defaults to the hashing embedder: MiniLM on 2 CPU cores
    embeds about 100 descriptions a second, weeks for millions of tasks.
    """
    from ragim import TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.index import CHUNK_TASKS

    chunk_size = CHUNK_TASKS if chunk_size is None else int(chunk_size)
    # the build's settings, as passed and as the description names them
    built = {"embedder": embedder, "index": index, "storage": storage, "chunk_size": chunk_size}
    fam = synthetic_family(n_tasks=n_tasks, n_features=n_features, seed=seed)
    with PeakMemory() as peak:
        t0 = time.perf_counter()
        idx = TaskIndex.build(fam, **built, progress=False, keep_tasks=False)
        seconds = time.perf_counter() - t0
    memory = idx.memory_bytes()
    return {
        "name": "index-build",
        "n": n_tasks,
        "indexed": len(idx),
        "index": idx.config.factory,
        "storage": storage,
        "seconds": round(seconds, 1),
        "tasks_per_s": round(n_tasks / seconds, 1),
        "peak_rss_mb": round(peak.peak_rss_mb, 1),
        "peak_anon_mb": round(peak.peak_anon_mb, 1),
        "index_bytes_per_task": round(memory["vectors"] / len(idx), 1),
        "params_bytes_per_task": round(memory["params"] / len(idx), 1),
        "record_bytes_per_task": round(memory["records"] / len(idx), 1),
        "chunk_size": chunk_size,
        "description": f"TaskIndex.build(synthetic_family({n_tasks}, n_features={n_features}), "
        + ", ".join(f"{k}={v!r}" for k, v in built.items())
        + ")",
    }


# ---------------------------------------------------------------------- fitting
def synthetic_fit_chunks(
    n_tasks: int, *, n_features: int = 20, seed: int = 0, chunk: int = 50_000
) -> Iterator[tuple[list, list]]:
    """``(X_list, y_list)`` of ``synthetic_family`` tasks, ``chunk`` tasks at a time, as
    standardised design matrices (the collection's own fitted schema)."""
    import pandas as pd

    from ragim.datasets import synthetic_family

    fam = synthetic_family(n_tasks=n_tasks, n_features=n_features, seed=seed)
    schema = fam.schema
    for s in range(0, n_tasks, chunk):
        tasks = [fam[i] for i in range(s, min(n_tasks, s + chunk))]
        Z = schema.transform(
            pd.concat([t.X for t in tasks], ignore_index=True)
        )  # same columns and dtypes
        bounds = np.cumsum([0] + [t.n_rows for t in tasks])
        yield [Z[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)], [t.y for t in tasks]


def bench_fit(
    n_tasks: int = 10_000,
    *,
    n_features: int = 20,
    baseline_tasks: int = 1000,
    seed: int = 0,
    device: str = "auto",
    C: float = 1.0,
    threads: Sequence[int] | None = None,
    chunk: int = 50_000,
) -> dict[str, Any]:
    """Batched logistic solver vs a scikit-learn loop on ``synthetic_family`` tasks, with
    equal threads (:func:`ragim.models.batched.compare_solvers`); the tasks are made
    ``chunk`` at a time, so a million of them fit in memory, and only solver time counts."""
    from ragim.device import resolve_device
    from ragim.models.batched import compare_solvers

    threads = _check_threads(threads)
    out = compare_solvers(
        synthetic_fit_chunks(n_tasks, n_features=n_features, seed=seed, chunk=chunk),
        C=C,
        device=device,
        baseline_tasks=baseline_tasks,
        threads=threads,
        data=f"synthetic_family(n_tasks={n_tasks}, n_features={n_features}, seed={seed})",
    )
    out["n_features"] = n_features
    out["environment"] = environment(resolve_device(device))
    return out


# ---------------------------------------------------------------------- generation
def bench_generate(
    n_tasks: int = 300,
    *,
    batch_sizes: Sequence[int] = (1, 1024),
    seed: int = 0,
    threads: Sequence[int] | None = None,
) -> dict[str, Any]:
    """AttentionGenerator throughput (tasks/s) at batch 1 and a large batch, vs neighbour-mean,
    both on the same number of torch / BLAS threads (each of ``threads``)."""
    from ragim import AttentionGenerator, TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.estimator import neighbor_mean

    threads = _check_threads(threads)
    fam = synthetic_family(n_tasks=n_tasks, n_features=10, seed=seed)
    index = TaskIndex.build(fam, embedder="hashing:384", progress=False)
    gen = AttentionGenerator(max_epochs=5, seed=seed).fit(index, progress=False)
    descs = fam.descriptions
    by_threads = {}
    for th in threads:
        rates = {}
        with limit_threads(th):
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
        by_threads[str(th)] = {"rates": rates, "base": base}
    big, t1 = max(batch_sizes), threads[0]
    first = by_threads[str(t1)]
    return {
        "name": "generate",
        "n": n_tasks,
        "ours": {
            "tasks_per_s": round(first["rates"][big], 1),
            "batch": big,
            "description": f"AttentionGenerator.generate_params, batch {big} (hashing embedder, "
            f"CPU, {t1} thread(s))",
        },
        "baseline": {
            "tasks_per_s": round(first["base"], 1),
            "description": f"neighbour-mean, one query at a time ({t1} thread(s))",
        },
        "ratio": round(first["rates"][big] / first["base"], 2),
        "tasks_per_s_by_batch": {str(b): round(r, 1) for b, r in first["rates"].items()},
        "threads": {"ours": t1, "baseline": t1},
        "by_threads": {
            th: {
                "tasks_per_s_by_batch": {str(b): round(r, 1) for b, r in v["rates"].items()},
                "baseline_tasks_per_s": round(v["base"], 1),
                "ratio": round(v["rates"][big] / v["base"], 2),
                "threads": {"ours": int(th), "baseline": int(th)},
            }
            for th, v in by_threads.items()
        },
        "device": "cpu",
        "environment": environment("cpu"),
    }


def bench_generate_statistical(
    n_tasks: int = 10_000,
    *,
    n_queries: int = 1000,
    seed: int = 0,
    threads: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The default generator's throughput: :class:`~ragim.generate.statistical.StatisticalGenerator`
    generating ``n_queries`` models (with intervals) in one batch from an index of ``n_tasks``
    ``synthetic_family`` tasks, against the neighbour mean generating the same models one query at
    a time, both on each of ``threads`` BLAS threads. Fitting the generator is timed apart
    (``fit_seconds``, all threads). Hashing embedder, CPU.
    """
    from ragim import TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.estimator import neighbor_mean
    from ragim.generate.statistical import StatisticalGenerator

    n_tasks, n_queries = (
        check_int(n_tasks, "n_tasks", ge=1),
        check_int(n_queries, "n_queries", ge=1),
    )
    threads = _check_threads(threads)
    fam = synthetic_family(n_tasks=n_tasks, n_features=10, seed=seed)
    index = TaskIndex.build(fam, embedder="hashing:384", progress=False)
    t = time.perf_counter()
    gen = StatisticalGenerator(seed=seed).fit(index, progress=False)
    fit_s = time.perf_counter() - t
    descs = fam.descriptions
    queries = [descs[(7 * i) % len(descs)] for i in range(n_queries)]
    n_base = min(n_queries, 200)
    by_threads = {}
    for th in threads:
        with limit_threads(th):
            t = time.perf_counter()
            gen.generate_params(queries, index)
            ours = time.perf_counter() - t
            t = time.perf_counter()
            for q in queries[:n_base]:
                neighbor_mean(index, q, k=10)
            base = (time.perf_counter() - t) / n_base * n_queries
        by_threads[str(th)] = {
            "seconds": round(ours, 3),
            "baseline_seconds": round(base, 3),
            "ratio": round(base / ours, 2),
            "threads": {"ours": th, "baseline": th},
        }
    t1 = str(threads[0])
    first = by_threads[t1]
    return {
        "name": "generate-statistical",
        "n": n_tasks,
        "ours": {
            "seconds": first["seconds"],
            "n_queries": n_queries,
            "tasks_per_s": round(n_queries / first["seconds"], 1),
            "description": f"StatisticalGenerator.generate_params, {n_queries} queries in one "
            f"batch, with coefficient intervals, index of {n_tasks:,} tasks (hashing embedder, "
            f"CPU, {t1} thread(s))",
        },
        "baseline": {
            "seconds": first["baseline_seconds"],
            "description": f"neighbour-mean (k=10), one query at a time, timed on {n_base} queries "
            f"and scaled to {n_queries} ({t1} thread(s))",
        },
        "ratio": first["ratio"],
        "fit_seconds": round(fit_s, 2),
        "threads": {"ours": int(t1), "baseline": int(t1)},
        "by_threads": by_threads,
        "device": "cpu",
        "environment": environment("cpu"),
    }


def bench_generate_lm(
    n_queries: int = 3,
    *,
    base_model: str = "smollm2-135m",
    n_features: int = 10,
    k: int = 3,
    seed: int = 0,
    device: str = "auto",
    threads: int = 1,
) -> dict[str, Any]:
    """LMGenerator seconds per generated model (constrained JSON decoding) vs neighbour-mean,
    both on ``threads`` torch / BLAS threads.

    The base model is not fine-tuned: the cost of a generation does not depend on the adapter's
    weights, only on the prompt (``k`` neighbours) and the answer length (``n_features + 1``
    numbers).
    The first generation (model load, conversion cache) is not timed.
    """
    from ragim import TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.device import resolve_device
    from ragim.estimator import neighbor_mean
    from ragim.generate.lm import LMGenerator

    n_queries = check_int(n_queries, "n_queries", ge=1)
    threads = _check_threads([threads])[0]
    fam = synthetic_family(n_tasks=max(2 * n_queries, 20), n_features=n_features, seed=seed)
    index = TaskIndex.build(fam, embedder="hashing:384", progress=False)
    gen = LMGenerator(base_model=base_model, k=k, device=device, seed=seed)
    descs = fam.descriptions
    with limit_threads(threads):
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
    dev = resolve_device(device)
    return {
        "name": "generate-lm",
        "n": n_queries,
        "ours": {
            "seconds_per_task": round(per_task, 3),
            "tasks_per_s": round(1 / per_task, 4),
            "first_call_seconds": round(load_s, 2),
            "prompt_tokens": round(prompt_tokens, 1),
            "answer_tokens": round(answer_tokens, 1),
            "description": f"LMGenerator({base_model}, k={k}).generate_params, one query at a "
            f"time, {n_features + 1} parameters, constrained JSON decoding, {threads} thread(s)",
        },
        "baseline": {
            "seconds_per_task": round(base, 5),
            "tasks_per_s": round(1 / base, 1),
            "description": f"neighbour-mean, one query at a time, {threads} thread(s)",
        },
        "ratio": round(base / per_task, 6),
        "threads": {"ours": threads, "baseline": threads},
        "device": dev,
        "environment": environment(dev),
    }


#: the paths of :func:`bench_lm_throughput`: (decoder, answer format, batched, weights' dtype)
LM_PATHS = {
    "builtin_one_prompt_json": ("builtin", "json", False, "float32"),
    "engine_one_prompt_json": ("llguidance", "json", False, "float32"),
    "engine_batched_json": ("llguidance", "json", True, "float32"),
    "builtin_one_prompt_compact": ("builtin", "compact", False, "float32"),
    "engine_one_prompt_compact": ("llguidance", "compact", False, "float32"),
    "engine_batched_compact": ("llguidance", "compact", True, "float32"),
    "engine_batched_compact_bf16": ("llguidance", "compact", True, "bfloat16"),
}


def bench_lm_throughput(
    n_queries: int = 4,
    *,
    n_params: Sequence[int] = (14, 79),
    base_model: str = "smollm2-135m",
    k: int = 3,
    seed: int = 0,
    device: str = "auto",
    threads: int = 1,
    paths: Sequence[str] = (
        "builtin_one_prompt_json",
        "engine_one_prompt_json",
        "engine_batched_json",
        "engine_batched_compact",
        "engine_batched_compact_bf16",
    ),
) -> dict[str, Any]:
    """LM generation throughput of the two constrained decoders, one prompt and batched.

    For each schema width in ``n_params`` (a synthetic logistic family with ``n_params - 1``
    features; 14 is heart-sized, 79 procedure-sized) the same ``n_queries`` targets are
    generated (greedy, untrained base model, ``k`` neighbours, population model in the prompt)
    by each path of ``paths`` (keys of :data:`LM_PATHS`) in this process, on ``threads`` torch
    threads each. A path is ``LMGenerator(decoder=..., answer_format=..., batch_size=...,
    dtype=...)``: decoder ``"builtin"`` (the hand-written loop, one prompt at a time) or
    ``"llguidance"`` (the grammar engine in transformers ``generate``); ``batched`` paths decode
    all targets in one call (``batch_size=n_queries``), the others one prompt per call
    (``batch_size=1``); the model's weights in float32 or bfloat16 (``LMConfig.dtype``). A
    bfloat16 path's ``same_as_float32`` says how its answers agree with the float32 path of the
    same decoding, when ``paths`` holds one.

    Each path reports wall seconds, process CPU seconds, tasks/s, answer tokens/s (tokens of
    the answer, forced ones included), mean prompt and answer tokens and the parse rate (the
    targets whose answer the format's ``parse`` accepted and that gave valid ``ModelParams``;
    ``generate_params`` raises GenerationError otherwise, which is counted, not raised).
    ``ratios`` divides every path's tasks/s by the first path's. The model is loaded (and
    every decoder warmed up) before timing.
    """
    from ragim import TaskIndex
    from ragim.datasets import synthetic_family
    from ragim.device import resolve_device
    from ragim.generate.lm import LMGenerator

    n_queries = check_int(n_queries, "n_queries", ge=1)
    threads = _check_threads([threads])[0]
    widths = [check_int(p, "each value of n_params", ge=2) for p in n_params]
    unknown = [p for p in paths if p not in LM_PATHS]
    if unknown or not paths:
        raise ValidationError(
            f"paths must be a non-empty list of {list(LM_PATHS)}, got {list(paths)}"
        )
    make = partial(LMGenerator, base_model=base_model, k=k, device=device, seed=seed)
    models = {  # the model in each dtype the paths use, loaded once
        dtype: make(dtype=dtype).load_model() for dtype in sorted({LM_PATHS[p][3] for p in paths})
    }

    def on_model(dtype: str = "float32", **options: Any) -> LMGenerator:
        """A generator of this run (``options`` beside or over ``make``'s) on the model loaded
        once above in ``dtype``."""
        g = make(dtype=dtype, **options)
        g.model_, g.tokenizer_ = models[dtype]
        return g

    schemas = []
    with limit_threads(threads):
        for width in widths:
            fam = synthetic_family(n_tasks=max(2 * n_queries, 20), n_features=width - 1, seed=seed)
            index = TaskIndex.build(fam, embedder="hashing:384", progress=False)
            descs = fam.descriptions[:n_queries]
            gens = {}
            for name in paths:
                dec, fmt, batched, dtype = LM_PATHS[name]
                gens[name] = on_model(
                    dtype, decoder=dec, answer_format=fmt, batch_size=n_queries if batched else 1
                )
            # warm-up of each decoder in each dtype
            for dec, dtype in sorted({(LM_PATHS[p][0], LM_PATHS[p][3]) for p in paths}):
                on_model(dtype, k=0, decoder=dec).generate_params(fam.descriptions[-1], index)
            stats, answers = {}, {}
            for name, g in gens.items():
                chunks = [descs] if LM_PATHS[name][2] else [[d] for d in descs]
                params, answers[name] = [], {}
                wall, cpu = time.perf_counter(), time.process_time()
                for chunk in chunks:
                    try:  # an answer that does not parse raises; the parse rate counts it
                        got = g.generate_params(chunk, index)
                    except GenerationError:
                        continue
                    params += got
                    answers[name].update(zip(chunk, got, strict=True))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                stats[name] = _path_stats(
                    wall,
                    cpu,
                    n_queries,
                    sum(p.metadata["answer_tokens"] for p in params),
                    sum(p.metadata["prompt_tokens"] for p in params),
                    len(params),
                )
            for name in paths:
                stats[name]["same_as_float32"] = _same_as_float32(name, paths, answers)
            base = paths[0]
            schemas.append(
                {
                    "n_params": width,
                    "paths": stats,
                    "baseline_path": base,
                    "ratios": {
                        p: round(stats[p]["tasks_per_s"] / stats[base]["tasks_per_s"], 3)
                        for p in paths
                    },
                    "cpu_ratios": {
                        p: round(stats[base]["cpu_seconds"] / stats[p]["cpu_seconds"], 3)
                        for p in paths
                    },
                }
            )
    dev = resolve_device(device)
    last = schemas[-1]
    best = max(paths, key=lambda p: last["paths"][p]["tasks_per_s"])
    return {
        "name": "lm-throughput",
        "n": n_queries,
        "base_model": base_model,
        "k": k,
        "schemas": schemas,
        "paths": {
            p: dict(zip(("decoder", "answer_format", "batched", "dtype"), LM_PATHS[p], strict=True))
            for p in paths
        },
        "ours": {
            **last["paths"][best],
            "description": f"{best} (the fastest path), {threads} thread(s)",
        },
        "baseline": {**last["paths"][paths[0]], "description": f"{paths[0]}, {threads} thread(s)"},
        "ratio": last["ratios"][best],
        "threads": {"ours": threads, "baseline": threads},
        "device": dev,
        "environment": environment(dev),
    }


def _names(index) -> list[str]:
    from ragim.params import param_names

    return param_names(index.model, index.schema)


def _same_as_float32(name: str, paths: Sequence[str], answers: dict) -> dict | None:
    """How a path in another dtype than float32 agrees with the float32 path of the same
    decoder, format and batching among ``paths`` (None for a float32 path or without one):
    the fraction of the parameters written identically and the largest absolute difference,
    over the targets both parsed (``answers``: path → {description: ModelParams})."""
    dec, fmt, batched, dtype = LM_PATHS[name]
    twin = next((p for p in paths if LM_PATHS[p] == (dec, fmt, batched, "float32")), None)
    if dtype == "float32" or twin is None:
        return None
    mine, theirs = answers[name], answers[twin]
    pairs = [(mine[d].vector, theirs[d].vector) for d in mine if d in theirs]
    if not pairs:
        return {"path": twin, "targets": 0, "equal_fraction": None, "max_abs_difference": None}
    a, b = (np.concatenate(side) for side in zip(*pairs, strict=True))
    return {
        "path": twin,
        "targets": len(pairs),
        "equal_fraction": round(float(np.mean(a == b)), 4),
        "max_abs_difference": round(float(np.max(np.abs(a - b))), 4),
    }


def _path_stats(
    wall: float, cpu: float, n: int, answer_tokens: int, prompt_tokens: int, n_parsed: int
) -> dict:
    return {
        "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "tasks_per_s": round(n / wall, 5),
        "answer_tokens_per_s": round(answer_tokens / wall, 3),
        "mean_prompt_tokens": round(prompt_tokens / n, 1),
        "mean_answer_tokens": round(answer_tokens / n, 1),
        "parse_rate": n_parsed / n,
    }
