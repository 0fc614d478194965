"""A thin FAISS wrapper: the same code on CPU and GPU.

:class:`VectorStore` holds unit vectors under inner-product search. Its FAISS
index is chosen by a factory string (``"Flat"``, ``"HNSW32"``, ``"IVF1024,Flat"``,
``"IVF4096,PQ32"``...) or ``"auto"`` by collection size, and it is moved to every
visible GPU when ``faiss.get_num_gpus() > 0`` and the device resolves to CUDA.
Rows are numbered in insertion order; removing rows leaves tombstones that
searches skip, and :meth:`compact` rebuilds without them.

Examples
--------
>>> import numpy as np
>>> v = np.eye(4, dtype="float32")
>>> store = VectorStore.build(v, index="Flat", device="cpu")
>>> scores, rows = store.search(v[:1], k=2)
>>> int(rows[0, 0])
0
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ragim.errors import DependencyError, ValidationError

FLAT_MAX = 100_000


def import_faiss():
    """Import FAISS or explain which extra to install."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DependencyError(
            "FAISS is not installed. Install ragim with the CPU extra, `pip install ragim[cpu]` "
            "(faiss-cpu), or on a CUDA machine `pip install ragim[gpu]` (faiss-gpu); never both."
        ) from exc
    return faiss


def auto_factory(n: int, d: int) -> str:
    """The index chosen by ``index="auto"``: exact Flat up to 100k vectors, then IVF with
    about 4·sqrt(n) lists (searched with ``nprobe=32``).

    Measured on 2 cores (docs/benchmarks.md): at 100k tasks HNSW32 reached only 0.81
    recall@10 at efSearch=128 and took 14 s to build, while Flat is exact in ~3 ms per
    query; at 1M, IVF4096,Flat was 40x faster than exact search with recall@10 = 1.0.
    """
    if n <= FLAT_MAX:
        return "Flat"
    nlist = int(2 ** round(math.log2(4 * math.sqrt(n))))
    return f"IVF{nlist},Flat"


def _normalise(v: np.ndarray, where: str = "vectors") -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(v, dtype=np.float32))
    if v.ndim != 2:
        raise ValidationError(f"{where} must be a 2-D array (n, dim), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValidationError(f"{where} contain NaN or infinite values")
    return v


class VectorStore:
    """Inner-product search over unit vectors with a FAISS index (CPU or GPU)."""

    def __init__(self, dim: int, factory: str = "Flat", *, nprobe: int = 32, ef_search: int = 128,
                 device: str | None = "auto"):
        self.dim = int(dim)
        self.factory = factory
        self.nprobe = int(nprobe)
        self.ef_search = int(ef_search)
        self.device = device
        self._cpu = None
        self._search_index = None
        self.deleted: set[int] = set()

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: np.ndarray, index: str = "auto", *, nprobe: int = 32, ef_search: int = 128,
              device: str | None = "auto", train_size: int = 200_000, seed: int = 0) -> VectorStore:
        v = _normalise(vectors)
        factory = auto_factory(len(v), v.shape[1]) if index == "auto" else _canonical(index)
        store = cls(v.shape[1], factory, nprobe=nprobe, ef_search=ef_search, device=device)
        store._create(v, train_size=train_size, seed=seed)
        store.add(v)
        return store

    def _create(self, sample: np.ndarray, *, train_size: int, seed: int) -> None:
        faiss = import_faiss()
        try:
            index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValidationError(f"invalid FAISS index string {self.factory!r}: {str(exc).splitlines()[0]}") from exc
        if not index.is_trained:
            if len(sample) < _min_train(self.factory):
                raise ValidationError(
                    f"index {self.factory!r} needs at least {_min_train(self.factory)} vectors to train, "
                    f"got {len(sample)}; use index='Flat' or 'auto' for small collections"
                )
            rng = np.random.default_rng(seed)
            pick = sample if len(sample) <= train_size else sample[np.sort(rng.choice(len(sample), train_size, replace=False))]
            index.train(pick)
        self._cpu = index
        self._apply_params()
        self._search_index = None

    def _apply_params(self) -> None:
        faiss = import_faiss()
        ivf = faiss.try_extract_index_ivf(self._cpu)
        if ivf is not None:
            ivf.nprobe = self.nprobe
        if "HNSW" in self.factory:
            hnsw = faiss.downcast_index(self._cpu)
            if hasattr(hnsw, "hnsw"):
                hnsw.hnsw.efSearch = self.ef_search

    # ------------------------------------------------------------------ device
    @property
    def on_gpu(self) -> bool:
        return self._index_for_search() is not self._cpu

    def _index_for_search(self):
        if self._search_index is None:
            faiss = import_faiss()
            from ragim.device import resolve_device

            use_gpu = False
            if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
                try:
                    use_gpu = resolve_device(self.device).startswith("cuda")
                except ValidationError:
                    use_gpu = False
            if use_gpu and "HNSW" not in self.factory:  # FAISS has no GPU HNSW; CPU it is
                co = faiss.GpuMultipleClonerOptions()
                co.shard = False
                self._search_index = faiss.index_cpu_to_all_gpus(self._cpu, co=co)
                ivf = faiss.try_extract_index_ivf(self._search_index)
                if ivf is not None:
                    ivf.nprobe = self.nprobe
                try:
                    faiss.GpuParameterSpace().set_index_parameter(self._search_index, "nprobe", self.nprobe)
                except Exception:  # Flat has no nprobe
                    pass
            else:
                self._search_index = self._cpu
        return self._search_index

    # ------------------------------------------------------------------ content
    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    def __len__(self) -> int:
        return self.ntotal - len(self.deleted)

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors; returns their row numbers."""
        v = _normalise(vectors)
        if v.shape[1] != self.dim:
            raise ValidationError(f"vectors have dimension {v.shape[1]}, the index has {self.dim}")
        start = self.ntotal
        if len(v):
            self._cpu.add(v)
        self._search_index = None
        return np.arange(start, start + len(v))

    def remove(self, rows) -> None:
        self.deleted.update(int(r) for r in rows)

    def reconstruct_all(self) -> np.ndarray:
        faiss = import_faiss()
        n = self.ntotal
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        ivf = faiss.try_extract_index_ivf(self._cpu)
        if ivf is not None:
            ivf.make_direct_map()
        return self._cpu.reconstruct_n(0, n)

    def compact(self) -> np.ndarray:
        """Rebuild without tombstones; returns the old row number of each kept row."""
        keep = np.array([r for r in range(self.ntotal) if r not in self.deleted], dtype=np.int64)
        vectors = self.reconstruct_all()[keep]
        self._create(vectors if len(vectors) else np.zeros((1, self.dim), np.float32), train_size=200_000, seed=0)
        self.add(vectors)
        self.deleted = set()
        return keep

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, *, skip=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query by inner product, skipping tombstones and rows for which
        ``skip(query_index, row)`` is true. Missing results are ``-1`` with score ``-inf``."""
        q = _normalise(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValidationError(f"queries have dimension {q.shape[1]}, the index has {self.dim}")
        if not isinstance(k, int | np.integer) or k < 1:
            raise ValidationError(f"k must be a positive integer, got {k!r}")
        n = self.ntotal
        out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        out_r = np.full((len(q), k), -1, dtype=np.int64)
        if n == 0 or len(q) == 0:
            return out_s, out_r
        index = self._index_for_search()
        if skip is None and not self.deleted:  # fast path: one FAISS call
            scores, rows = index.search(q, min(k, n))
            out_s[:, : rows.shape[1]], out_r[:, : rows.shape[1]] = scores, rows
            out_s[out_r < 0] = -np.inf
            return out_s, out_r
        pending = np.arange(len(q))
        fetch = min(n, k + len(self.deleted) + (k if skip is not None else 0))
        while len(pending):
            scores, rows = index.search(q[pending], min(fetch, n) if not self.on_gpu else min(fetch, n, 2048))
            still = []
            for j, qi in enumerate(pending):
                got = [(s, r) for s, r in zip(scores[j], rows[j], strict=True)
                       if r >= 0 and r not in self.deleted and (skip is None or not skip(int(qi), int(r)))]
                if len(got) >= k or fetch >= n or (self.on_gpu and fetch >= 2048):
                    got = got[:k]
                    out_s[qi, : len(got)] = [s for s, _ in got]
                    out_r[qi, : len(got)] = [r for _, r in got]
                else:
                    still.append(qi)
            pending = np.array(still, dtype=np.int64)
            fetch = min(n, fetch * 4)
        return out_s, out_r

    # ------------------------------------------------------------------ persistence
    def write(self, path: Path) -> None:
        import_faiss().write_index(self._cpu, str(path))

    @classmethod
    def read(cls, path: Path, *, factory: str, nprobe: int, ef_search: int, device="auto") -> VectorStore:
        faiss = import_faiss()
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, MemoryError, OSError, TypeError, ValueError) as exc:
            from ragim.errors import ArtifactError

            raise ArtifactError(f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})") from exc
        store = cls(index.d, factory, nprobe=nprobe, ef_search=ef_search, device=device)
        store._cpu = index
        store._apply_params()
        return store


def _canonical(index: str) -> str:
    if not isinstance(index, str) or not index.strip():
        raise ValidationError(f"index must be 'auto' or a FAISS factory string, got {index!r}")
    return "Flat" if index.lower() == "flat" else index


def _min_train(factory: str) -> int:
    import re

    m = re.search(r"IVF(\d+)", factory)
    nlist = int(m.group(1)) if m else 1
    return max(nlist, 256 if "PQ" in factory else 1)
