"""A thin FAISS wrapper: the same code on CPU and GPU.

:class:`VectorStore` holds unit vectors under inner-product search. Its FAISS
index is chosen by a factory string (``"Flat"``, ``"HNSW32"``, ``"IVF1024,Flat"``,
``"IVF4096,SQ8"``, ``"IVF4096,PQ32"``...) or ``"auto"`` by collection size, and it is
moved to every visible GPU when ``faiss.get_num_gpus() > 0`` and the device resolves
to CUDA. Rows are numbered in insertion order; removing rows leaves tombstones that
searches skip, and :meth:`compact` rebuilds without them.

A store can be filled in chunks (:meth:`create`, then :meth:`add` per chunk), so
building it never needs every vector in memory at once. With ``storage="ondisk"`` the
inverted lists of an IVF index live in a file (FAISS ``OnDiskInvertedLists``) instead
of in memory.

Searches with exclusions return the ``k`` best rows that are not excluded whenever at
least ``k`` exist, on every index type: a cheap filtered search first, then, for the
queries it leaves short, a FAISS search restricted to the eligible rows by an
``IDSelectorBitmap`` with a widened ``nprobe`` / ``efSearch``, and as the last resort an
exact scan of the eligible rows.

Examples
--------
>>> import numpy as np
>>> v = np.eye(4, dtype="float32")
>>> store = VectorStore.build(v, index="Flat", device="cpu")
>>> scores, rows = store.search(v[:1], k=2)
>>> int(rows[0, 0])
0
>>> _, rows = store.search(v[:1], k=2, excluded=[np.array([0, 1])])
>>> sorted(rows[0].tolist())
[2, 3]
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragim.checks import check_int
from ragim.errors import DependencyError, ValidationError

FLAT_MAX = 100_000
#: vectors an IVF / PQ / SQ index is trained on (a random sample of a larger collection)
TRAIN_SIZE = 200_000
STORAGES = ("memory", "ondisk")
#: the largest k FAISS GPU indices answer in one call
GPU_MAX_K = 2048
#: candidates the first, unrestricted pass of a filtered search may fetch per query
FILTER_FETCH_MAX = 4096
#: an approximate index's k-th eligible hit is trusted only within its first TRUSTED_RANKS * k
#: candidates; deeper than that (most of its candidates were excluded) the search is widened
TRUSTED_RANKS = 4
#: rows reconstructed at a time by exact scans and :meth:`VectorStore.reconstruct_all`
BLOCK_ROWS = 65_536
ONDISK_FILE = "index.ivfdata"


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
    about 4·sqrt(n) lists (searched with ``nprobe=32``) over 8-bit scalar-quantised vectors
    (``SQ8``: ``d`` bytes a vector instead of ``4·d``).

    Measured on 2 cores (docs/benchmarks.md, ``benchmarks/scale.py``): at 100k tasks HNSW32
    reached only 0.81 recall@10 at efSearch=128 and took 14 s to build, while Flat is exact.
    At 1M tasks ``IVF4096,SQ8`` answered 2.1× as many queries a second as ``IVF4096,Flat``
    (754 vs 352 on one thread) at recall@10 0.981 against 0.9999, in a quarter of the memory
    (398 vs 1,550 bytes a task). ``index="IVF4096,Flat"`` keeps full vectors.

    Examples
    --------
    >>> auto_factory(50_000, 384), auto_factory(1_000_000, 384)
    ('Flat', 'IVF4096,SQ8')
    """
    if n <= FLAT_MAX:
        return "Flat"
    nlist = int(2 ** round(math.log2(4 * math.sqrt(n))))
    return f"IVF{nlist},SQ8"


def needs_training(factory: str, dim: int) -> bool:
    """Whether a FAISS index built from ``factory`` ("auto" is never passed here) must be
    trained before vectors are added (IVF, PQ, SQ: yes; Flat, HNSW32: no).

    Examples
    --------
    >>> needs_training("Flat", 8), needs_training("IVF16,SQ8", 8)
    (False, True)
    """
    faiss = import_faiss()
    try:
        return not faiss.index_factory(
            int(dim), _canonical(factory), faiss.METRIC_INNER_PRODUCT
        ).is_trained
    except RuntimeError as exc:
        raise ValidationError(
            f"invalid FAISS index string {factory!r}: {str(exc).splitlines()[0]}"
        ) from exc


def _normalise(v: np.ndarray, where: str = "vectors") -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(v, dtype=np.float32))
    if v.ndim != 2:
        raise ValidationError(f"{where} must be a 2-D array (n, dim), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValidationError(f"{where} contain NaN or infinite values")
    return v


class VectorStore:
    """Inner-product search over unit vectors with a FAISS index (CPU or GPU).

    Build with :meth:`build` (all vectors at once) or :meth:`create` + :meth:`add`
    (chunk by chunk); open a saved one with :meth:`read`.
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        *,
        nprobe: int = 32,
        ef_search: int = 128,
        device: str | None = "auto",
        storage: str = "memory",
    ):
        if storage not in STORAGES:
            raise ValidationError(f"storage must be one of {list(STORAGES)}, got {storage!r}")
        self.dim = int(dim)
        self.factory = factory
        self.nprobe = int(nprobe)
        self.ef_search = int(ef_search)
        self.device = device
        self.storage = storage
        self._cpu = None
        self._search_index = None
        self._lists_writable = False  # on-disk lists that may be added to
        self.deleted: set[int] = set()

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: np.ndarray, index: str = "auto", **options: Any) -> VectorStore:
        """A store holding ``vectors`` (n, dim), trained on up to ``train_size`` of them.

        ``options`` are the keywords of :meth:`create` but ``n_total`` and ``train`` (``nprobe``,
        ``ef_search``, ``device``, ``train_size``, ``seed``, ``storage``, ``coarse``), with its
        defaults."""
        v = _normalise(vectors)
        store = cls.create(v.shape[1], index, n_total=len(v), train=v, **options)
        for s in range(0, len(v), BLOCK_ROWS * 4):
            store.add(v[s : s + BLOCK_ROWS * 4])
        return store

    @classmethod
    def create(
        cls,
        dim: int,
        index: str = "auto",
        *,
        n_total: int | None = None,
        train: np.ndarray | None = None,
        nprobe: int = 32,
        ef_search: int = 128,
        device: str | None = "auto",
        train_size: int = TRAIN_SIZE,
        seed: int = 0,
        storage: str = "memory",
        coarse: VectorStore | None = None,
    ) -> VectorStore:
        """An empty store, trained when its index needs training, to be filled by :meth:`add`.

        Parameters
        ----------
        dim : vector length.
        index : "auto" (by ``n_total``) or a FAISS factory string (``"IVF4096,SQ8"``,
            ``"IVF4096,PQ32"``...).
        n_total : how many vectors will be added (needed by ``index="auto"``).
        train : training vectors (n, dim) for IVF / PQ / SQ indices; at most ``train_size`` of
            them are used, picked at random with ``seed``.
        storage : "memory", or "ondisk" (IVF indices only: the inverted lists go to a file,
            FAISS ``OnDiskInvertedLists``, in a temporary folder until the store is saved).
        coarse : another IVF store of the same dimension and number of lists whose trained
            coarse quantizer (the k-means centroids) is copied, so only the codec is trained:
            several codecs over the same vectors run k-means once.

        Raises
        ------
        ValidationError
            For an invalid factory string, too few training vectors, ``storage="ondisk"``
            with an index that has no inverted lists, or a ``coarse`` store that does not match.
        """
        if storage not in STORAGES:
            raise ValidationError(f"storage must be one of {list(STORAGES)}, got {storage!r}")
        if index == "auto":
            if n_total is None:
                raise ValidationError(
                    "index='auto' needs n_total, the number of vectors the store will hold"
                )
            factory = auto_factory(int(n_total), int(dim))
        else:
            factory = _canonical(index)
        store = cls(
            dim, factory, nprobe=nprobe, ef_search=ef_search, device=device, storage=storage
        )
        sample = (
            np.zeros((0, int(dim)), np.float32)
            if train is None
            else _normalise(train, "training vectors")
        )
        store._create(sample, train_size=train_size, seed=seed, coarse=coarse)
        return store

    def _create(
        self, sample: np.ndarray, *, train_size: int, seed: int, coarse: VectorStore | None = None
    ) -> None:
        faiss = import_faiss()
        try:
            index = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValidationError(
                f"invalid FAISS index string {self.factory!r}: {str(exc).splitlines()[0]}"
            ) from exc
        if self.storage == "ondisk" and faiss.try_extract_index_ivf(index) is None:
            raise ValidationError(
                "storage='ondisk' keeps the inverted lists of an IVF index on disk, "
                f"but {self.factory!r} has none; use an IVF index such as "
                "'IVF4096,Flat' or 'IVF4096,SQ8', or storage='memory'"
            )
        if coarse is not None:
            ivf, src = faiss.try_extract_index_ivf(index), faiss.try_extract_index_ivf(coarse._cpu)
            if (
                ivf is None
                or src is None
                or ivf.nlist != src.nlist
                or coarse.dim != self.dim
                or not src.is_trained
            ):
                raise ValidationError(
                    f"coarse= needs a trained IVF store with the lists of {self.factory!r} "
                    f"(dimension {self.dim}), got {coarse.factory!r} (dimension {coarse.dim})"
                )
            quantizer = faiss.clone_index(src.quantizer)
            ivf.quantizer = quantizer  # trained with nlist centroids: IndexIVF.train skips k-means
            ivf.own_fields = True
            quantizer.this.disown()
        inner = faiss.downcast_index(index)
        if getattr(inner, "do_polysemous_training", False):
            # Polysemous codes only serve Hamming pre-filtering of L2 searches; ordering them
            # took a minute for 3,000 vectors. Inner-product search never uses them.
            inner.do_polysemous_training = False
        if not index.is_trained:
            if len(sample) < _min_train(self.factory):
                raise ValidationError(
                    f"index {self.factory!r} needs at least {_min_train(self.factory)} vectors "
                    f"to train, got {len(sample)}; use index='Flat' or 'auto' for small collections"
                )
            rng = np.random.default_rng(seed)
            pick = (
                sample
                if len(sample) <= train_size
                else sample[np.sort(rng.choice(len(sample), train_size, replace=False))]
            )
            index.train(pick)
        self._cpu = index
        if self.storage == "ondisk":
            self._use_new_lists()
        self._apply_params()
        self._search_index = None

    def _apply_params(self) -> None:
        faiss = import_faiss()
        ivf = faiss.try_extract_index_ivf(self._cpu)
        if ivf is not None:
            ivf.nprobe = self.nprobe
        hnsw = self._hnsw()
        if hnsw is not None:
            hnsw.hnsw.efSearch = self.ef_search

    def _hnsw(self):
        if "HNSW" not in self.factory or "IVF" in self.factory:
            return None
        idx = import_faiss().downcast_index(self._cpu)
        return idx if hasattr(idx, "hnsw") else None

    # ------------------------------------------------------------------ on-disk inverted lists
    def _use_new_lists(self) -> None:
        """Move the IVF index's inverted lists into a new file in a temporary folder (FAISS
        ``OnDiskInvertedLists``, owned by the index; the folder goes with this store)."""
        faiss = import_faiss()
        ivf = faiss.extract_index_ivf(self._cpu)
        folder = Path(tempfile.mkdtemp(prefix="ragim-ondisk-"))
        weakref.finalize(self, shutil.rmtree, str(folder), True)
        lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(folder / ONDISK_FILE))
        if ivf.ntotal:
            _merge_lists(lists, ivf.invlists)
        ivf.replace_invlists(lists, True)  # frees the previous lists if the index owned them
        lists.this.disown()
        self._lists_writable = True

    def _writable(self) -> None:
        """Before an add: a loaded on-disk store maps its artifact's lists read-only, so they
        are first copied to a temporary file."""
        if self.storage == "ondisk" and not self._lists_writable:
            self._use_new_lists()

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
                    faiss.GpuParameterSpace().set_index_parameter(
                        self._search_index, "nprobe", self.nprobe
                    )
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
        """Append vectors (n, dim); returns their row numbers."""
        v = _normalise(vectors)
        if v.shape[1] != self.dim:
            raise ValidationError(f"vectors have dimension {v.shape[1]}, the index has {self.dim}")
        start = self.ntotal
        if len(v):
            with faiss_notices_to_stderr(self.storage == "ondisk"):
                self._writable()
                self._cpu.add(v)
        self._search_index = None
        return np.arange(start, start + len(v))

    def remove(self, rows) -> None:
        self.deleted.update(int(r) for r in rows)

    def _reconstruct(self, start: int, stop: int) -> np.ndarray:
        faiss = import_faiss()
        ivf = faiss.try_extract_index_ivf(self._cpu)
        if ivf is not None and ivf.direct_map.no():
            ivf.make_direct_map()
        return self._cpu.reconstruct_n(start, stop - start)

    def stored_vectors(self, rows: Sequence[int]) -> np.ndarray:
        """The stored vectors of ``rows``, (len(rows), dim) float32 (decoded, for compressed
        indices)."""
        if not len(rows):
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate([self._reconstruct(int(r), int(r) + 1) for r in rows])

    @property
    def lossy(self) -> bool:
        """Whether the index stores compressed codes (``SQ``, ``PQ``, ``LSH``, ...), so that
        :meth:`stored_vectors` only approximates the vectors added."""
        return bool(re.search(r"SQ|PQ|LSH|RaBitQ|LSQ|RQ", self.factory))

    def reconstruct_all(self) -> np.ndarray:
        """Every stored vector, (ntotal, dim) float32 (decoded, for compressed indices)."""
        n = self.ntotal
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(
            [self._reconstruct(s, min(n, s + BLOCK_ROWS)) for s in range(0, n, BLOCK_ROWS)]
        )

    def compact(self) -> np.ndarray:
        """Rebuild without tombstones; returns the old row number of each kept row.

        The trained structures (coarse centroids, scalar or product quantisers) are kept and
        only the kept vectors are stored again, so a removal neither retrains the index nor
        needs enough vectors to train one (FAISS ``reset`` on a copy of the trained index)."""
        keep = np.array([r for r in range(self.ntotal) if r not in self.deleted], dtype=np.int64)
        vectors = self.reconstruct_all()[keep]
        self._cpu = self._trained_copy()
        if self.storage == "ondisk":
            self._use_new_lists()
        self._apply_params()
        self._search_index = None
        self.add(vectors)
        self.deleted = set()
        return keep

    def _trained_copy(self):
        """An empty copy of the index with its training (its inverted lists are not copied)."""
        faiss = import_faiss()
        ivf = faiss.try_extract_index_ivf(self._cpu)
        if ivf is None:
            fresh = faiss.clone_index(self._cpu)
        else:  # clone it over empty in-memory lists: on-disk lists cannot be cloned
            current, own = ivf.invlists, ivf.own_invlists
            empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
            ivf.own_invlists = False
            ivf.replace_invlists(empty, False)
            try:
                fresh = faiss.clone_index(self._cpu)
            finally:
                ivf.replace_invlists(current, False)
                ivf.own_invlists = own
                del empty
        fresh.reset()
        return fresh

    def memory_bytes(self, *, in_ram: bool = False) -> int:
        """Bytes of the serialised index: codes, ids and trained structures (for an on-disk
        store, its lists' codes and ids too, unless ``in_ram``: then only what stays in memory,
        the coarse centroids). Counted as FAISS writes them, never copied."""
        faiss = import_faiss()
        ivf = faiss.try_extract_index_ivf(self._cpu)
        if self.storage == "ondisk" and ivf is not None and in_ram:
            return int(ivf.quantizer.ntotal * self.dim * 4)
        if self.storage == "ondisk" and ivf is not None:
            lists = ivf.invlists
            code_bytes = sum(lists.list_size(i) * (ivf.code_size + 8) for i in range(ivf.nlist))
            return int(code_bytes + ivf.quantizer.ntotal * self.dim * 4)
        total = [0]

        def count(chunk: bytes) -> int:
            total[0] += len(chunk)
            return len(chunk)

        writer = faiss.PyCallbackIOWriter(count)
        faiss.write_index(self._cpu, writer)
        del writer
        return int(total[0])

    # ------------------------------------------------------------------ search
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        skip: Callable[[int, int], bool] | None = None,
        excluded: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows per query by inner product among the rows that are not excluded.

        Parameters
        ----------
        queries : (m, dim) vectors.
        k : rows per query.
        skip : ``skip(query_index, row) -> bool``: rows to leave out of that query's
            results, tested lazily on candidates.
        excluded : one array of row numbers per query (or None) to leave out.

        Returns
        -------
        scores, rows : (m, k) arrays; missing results (fewer than ``k`` eligible rows) are
            row ``-1`` with score ``-inf``.

        Tombstones and excluded rows never appear, and whenever ``k`` eligible rows exist
        ``k`` are returned: an approximate index that cannot reach them with its own
        ``nprobe`` / ``efSearch`` is searched again on its CPU copy, restricted to the
        eligible rows (``faiss.IDSelectorBitmap``) with a wider search, and exactly as the
        last resort.
        """
        q = _normalise(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValidationError(f"queries have dimension {q.shape[1]}, the index has {self.dim}")
        k = check_int(k, "k", ge=1)
        if excluded is not None and len(excluded) != len(q):
            raise ValidationError(f"got {len(excluded)} exclusion lists for {len(q)} queries")
        k = int(k)
        n = self.ntotal
        out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        out_r = np.full((len(q), k), -1, dtype=np.int64)
        if n == 0 or len(q) == 0:
            return out_s, out_r
        sets = (
            None
            if excluded is None
            else [frozenset() if e is None else frozenset(np.asarray(e).tolist()) for e in excluded]
        )
        index = self._index_for_search()
        exhaustive = self._exhaustive()
        cap = min(n, GPU_MAX_K if index is not self._cpu else max(FILTER_FETCH_MAX, k))
        if skip is None and sets is None and not self.deleted:  # one FAISS call for every query
            scores, rows = index.search(q, min(k, cap))
            out_s[:, : rows.shape[1]], out_r[:, : rows.shape[1]] = scores, rows
            out_s[out_r < 0] = -np.inf
            short = np.flatnonzero(
                (out_r >= 0).sum(axis=1) < min(k, n)
            ).tolist()  # an IVF probe came up short
            pending = np.zeros(0, np.int64)
        else:
            most = max((len(s) for s in sets), default=0) if sets is not None else 0
            fetch = min(cap, k + len(self.deleted) + most + (k if skip is not None else 0))
            pending, short = np.arange(len(q)), []
        hnsw = self._hnsw()
        while len(pending):
            if hnsw is not None:  # an HNSW search returns at most efSearch rows
                params = import_faiss().SearchParametersHNSW(efSearch=max(self.ef_search, fetch))
                scores, rows = index.search(q[pending], fetch, params=params)
            else:
                scores, rows = index.search(q[pending], fetch)
            again = []
            for j, qi in enumerate(pending):
                got, rank_k = [], 0
                for rank, (s, r) in enumerate(zip(scores[j], rows[j], strict=True)):
                    if r >= 0 and self._eligible(int(qi), int(r), skip, sets):
                        got.append((s, r))
                        if len(got) == k:
                            rank_k = rank
                            break
                reached_all = fetch >= n or bool(
                    (rows[j] < 0).any()
                )  # nothing more this index can return
                if exhaustive and (len(got) >= k or reached_all):
                    self._fill(out_s, out_r, qi, got)
                elif len(got) >= k and rank_k < TRUSTED_RANKS * k:
                    self._fill(out_s, out_r, qi, got)
                elif reached_all or fetch >= cap or len(got) >= k:
                    short.append(int(qi))
                else:
                    again.append(qi)
            pending = np.array(again, dtype=np.int64)
            fetch = min(cap, fetch * 4)
        for qi in short:
            allowed = self._allowed(qi, skip, sets)
            got = self._search_allowed(q[qi], min(k, int(allowed.sum())), allowed)
            self._fill(out_s, out_r, qi, got)
        return out_s, out_r

    def _eligible(self, qi: int, row: int, skip, sets) -> bool:
        return (
            row not in self.deleted
            and (sets is None or row not in sets[qi])
            and (skip is None or not skip(qi, row))
        )

    @staticmethod
    def _fill(out_s, out_r, qi, got) -> None:
        out_s[qi], out_r[qi] = -np.inf, -1
        out_s[qi, : len(got)] = [s for s, _ in got]
        out_r[qi, : len(got)] = [r for _, r in got]

    def _exhaustive(self) -> bool:
        """True when one search scores every row (no inverted lists, no graph)."""
        return (
            import_faiss().try_extract_index_ivf(self._cpu) is None and "HNSW" not in self.factory
        )

    def _allowed(self, qi: int, skip, sets) -> np.ndarray:
        """Boolean mask of the rows query ``qi`` may return."""
        allowed = np.ones(self.ntotal, dtype=bool)
        if self.deleted:
            allowed[np.fromiter(self.deleted, np.int64)] = False
        if sets is not None and sets[qi]:
            rows = np.fromiter(sets[qi], np.int64)
            allowed[rows[(rows >= 0) & (rows < self.ntotal)]] = False
        if skip is not None:
            for r in np.flatnonzero(allowed):
                if skip(qi, int(r)):
                    allowed[r] = False
        return allowed

    def _search_allowed(
        self, query: np.ndarray, want: int, allowed: np.ndarray
    ) -> list[tuple[float, int]]:
        """The ``want`` best allowed rows for one query, on the CPU index: FAISS restricted to
        the allowed rows with a widening nprobe / efSearch, then an exact scan if still short."""
        if want <= 0:
            return []
        faiss = import_faiss()
        bits = np.packbits(allowed, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
        ivf = faiss.try_extract_index_ivf(self._cpu)
        hnsw = self._hnsw()
        x = query[None, :]
        try:
            if isinstance(faiss.downcast_index(self._cpu), faiss.IndexIVF):
                got = _widen(
                    lambda p: _hits(
                        *self._cpu.search(
                            x, want, params=faiss.SearchParametersIVF(sel=sel, nprobe=p)
                        )
                    ),
                    self.nprobe,
                    ivf.nlist,
                    want,
                )
            elif hnsw is not None:
                got = _widen(
                    lambda ef: _hits(
                        *self._cpu.search(
                            x, want, params=faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
                        )
                    ),
                    max(self.ef_search, want),
                    self.ntotal,
                    want,
                )
            elif ivf is None and self._exhaustive():
                got = _hits(*self._cpu.search(x, want, params=faiss.SearchParameters(sel=sel)))
            else:
                got = []
        except (
            RuntimeError
        ):  # this index type takes no selector (IndexPQ, pre-transforms, refinement)
            got = []
        if len(got) >= want:
            return got[:want]
        return self._exact_scan(query, want, allowed)

    def _exact_scan(
        self, query: np.ndarray, want: int, allowed: np.ndarray
    ) -> list[tuple[float, int]]:
        """Exact top-``want`` over the allowed rows' stored (decoded) vectors, block by block."""
        best_s, best_r = np.zeros(0, np.float32), np.zeros(0, np.int64)
        n = self.ntotal
        for s in range(0, n, BLOCK_ROWS):
            rows = s + np.flatnonzero(allowed[s : s + BLOCK_ROWS])
            if not len(rows):
                continue
            vecs = self._reconstruct(s, min(n, s + BLOCK_ROWS))[rows - s]
            best_s = np.concatenate([best_s, vecs @ query])
            best_r = np.concatenate([best_r, rows])
            if len(best_s) > want:
                top = np.argpartition(-best_s, want - 1)[:want]
                best_s, best_r = best_s[top], best_r[top]
        order = np.lexsort((best_r, -best_s))[:want]
        return [(float(best_s[i]), int(best_r[i])) for i in order]

    # ------------------------------------------------------------------ persistence
    def write(self, path: Path) -> None:
        """Write the index to ``path``; an on-disk store also writes its lists to
        ``index.ivfdata`` beside it (and ``index.faiss`` refers to that file)."""
        faiss = import_faiss()
        path = Path(path)
        if self.storage != "ondisk":
            faiss.write_index(self._cpu, str(path))
            return
        with faiss_notices_to_stderr():
            self._write_ondisk(faiss, path)

    def _write_ondisk(self, faiss, path: Path) -> None:
        ivf = faiss.extract_index_ivf(self._cpu)
        current = ivf.invlists
        lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path.parent / ONDISK_FILE))
        if ivf.ntotal:
            _merge_lists(lists, current)
        own = ivf.own_invlists
        ivf.own_invlists = False
        ivf.replace_invlists(lists, False)
        try:
            faiss.write_index(self._cpu, str(path))
        finally:
            ivf.replace_invlists(current, False)
            ivf.own_invlists = own
            del lists

    @classmethod
    def read(
        cls,
        path: Path,
        *,
        factory: str,
        nprobe: int,
        ef_search: int,
        device="auto",
        storage: str = "memory",
    ) -> VectorStore:
        """Open an index written by :meth:`write` (an on-disk one maps its lists read-only)."""
        faiss = import_faiss()
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR if storage == "ondisk" else 0
        try:
            with faiss_notices_to_stderr(storage == "ondisk"):
                index = faiss.read_index(str(path), flags)
        except (RuntimeError, MemoryError, OSError, TypeError, ValueError) as exc:
            from ragim.errors import ArtifactError

            raise ArtifactError(
                f"{path}: not a readable FAISS index ({str(exc).splitlines()[0]})"
            ) from exc
        if storage == "ondisk":
            _check_ondisk_lists(index, faiss, Path(path))
        has_lists = faiss.try_extract_index_ivf(index) is not None
        if has_lists != ("IVF" in factory):
            from ragim.errors import ArtifactError

            raise ArtifactError(
                f"{path}: the index {'has' if has_lists else 'has no'} inverted lists, but the "
                f"configuration says {factory!r}; the artifact was assembled from different indices"
            )
        store = cls(
            index.d, factory, nprobe=nprobe, ef_search=ef_search, device=device, storage=storage
        )
        store._cpu = index
        store._lists_writable = storage != "ondisk"
        store._apply_params()
        return store


#: the FAISS header every index type starts with (faiss/impl/index_write.cpp,
#: write_index_header): fourcc, d (int32), ntotal (int64), two unused int64, is_trained (uint8),
#: metric_type (int32)
_HEADER = struct.Struct("<4siqqqBi")
_FLAT = (b"IxFI", b"IxF2", b"IxFl")  # flat inner-product / L2 (and the old form)


def check_index_file(path: Path, *, ntotal: int, dim: int) -> None:
    """Check a saved FAISS index's header against what it must hold before FAISS reads it:
    ``ntotal`` vectors of dimension ``dim``; for a flat index also the length of its vector
    block and the file size. FAISS allocates what a file's length fields claim before it finds
    the file short, so a few changed bytes could make it take gigabytes.

    Parameters
    ----------
    path : the ``index.faiss`` file.
    ntotal, dim : the vectors the index must hold (its records and its embedder's dimension).

    Raises
    ------
    ArtifactError
        One line naming the file and what differs.
    """
    from ragim.errors import ArtifactError

    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(_HEADER.size + 8)
    if len(head) < _HEADER.size:
        raise ArtifactError(f"{path}: not a FAISS index ({size} bytes, shorter than its header)")
    fourcc, d, n, _, _, _, _ = _HEADER.unpack_from(head)
    if (d, n) != (dim, ntotal):
        raise ArtifactError(
            f"{path}: its header says {n} vectors of dimension {d}, but the index has "
            f"{ntotal} records and its embedder makes {dim}-dimensional vectors; the artifact "
            "was assembled from different indices"
        )
    if fourcc in _FLAT and len(head) == _HEADER.size + 8:
        (count,) = struct.unpack_from("<Q", head, _HEADER.size)
        if count != ntotal * dim or size != _HEADER.size + 8 + 4 * count:
            raise ArtifactError(
                f"{path}: a flat index of {ntotal} vectors of dimension {dim} holds "
                f"{ntotal * dim} numbers in {_HEADER.size + 8 + 4 * ntotal * dim} bytes, but the "
                f"file says {count} numbers and has {size} bytes"
            )


def _check_ondisk_lists(index: Any, faiss: Any, path: Path) -> None:
    """Refuse on-disk inverted lists whose ``index.ivfdata`` is shorter than the lists
    ``index.faiss`` places in it: FAISS maps the file and a search touching a page past its
    end kills the process (SIGBUS)."""
    from ragim.errors import ArtifactError

    ivf = faiss.try_extract_index_ivf(index)
    lists = None if ivf is None else faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists):
        return
    data = Path(lists.filename)
    size = data.stat().st_size if data.is_file() else 0
    entry = lists.code_size + 8  # a code and its 64-bit id
    need = max(
        (
            lists.lists.at(i).offset + lists.lists.at(i).capacity * entry
            for i in range(lists.nlist)
            if lists.lists.at(i).capacity
        ),
        default=0,
    )
    if size < max(need, lists.totsize):
        raise ArtifactError(
            f"{path.parent / ONDISK_FILE}: has {size} bytes, but {path.name} places its "
            f"inverted lists in {max(need, lists.totsize)}; the file is truncated or from "
            "another index"
        )


def _widen(
    search: Callable[[int], list], start: int, most: int, want: int
) -> list[tuple[float, int]]:
    """Search with a breadth (nprobe, efSearch) growing 4x from ``start`` until ``want`` hits
    come back and one more widening no longer changes them, or the breadth reaches ``most``."""
    breadth, previous = start, None
    while True:
        got = search(breadth)
        if (
            len(got) >= want
            and previous is not None
            and {r for _, r in got} == {r for _, r in previous}
        ):
            return got
        if breadth >= most:
            return got
        previous, breadth = got, min(most, breadth * 4)


def _hits(scores: np.ndarray, rows: np.ndarray) -> list[tuple[float, int]]:
    return [(float(s), int(r)) for s, r in zip(scores[0], rows[0], strict=True) if r >= 0]


@contextlib.contextmanager
def faiss_notices_to_stderr(active: bool = True):
    """Send what FAISS's C++ code prints to standard output (its on-disk lists print
    "resizing ..." and "IO_FLAG_ONDISK_SAME_DIR: updating ..." with printf) to standard error
    instead, so that a ``--json`` answer on standard output stays one JSON document."""
    if not active:
        yield
        return
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no file descriptor 1 (an embedded Python)
        yield
        return
    import ctypes

    libc = ctypes.CDLL(None)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)  # C's buffer, before standard output is given back
        os.dup2(saved, 1)
        os.close(saved)


def _merge_lists(target, source) -> None:
    """Copy every inverted list of ``source`` into the (empty) on-disk lists ``target``, list
    by list with ``add_entries``: FAISS's ``merge_from_multiple`` leaves the copied area marked
    free, so a later add overwrote other tasks' vectors (tests/test_index_streaming.py)."""
    for no in range(source.nlist):
        n = source.list_size(no)
        if not n:
            continue
        codes, ids = source.get_codes(no), source.get_ids(no)
        try:
            target.add_entries(no, n, ids, codes)
        finally:
            source.release_codes(no, codes)
            source.release_ids(no, ids)


def _canonical(index: str) -> str:
    if not isinstance(index, str) or not index.strip():
        raise ValidationError(f"index must be 'auto' or a FAISS factory string, got {index!r}")
    index = index.strip()  # " IVF16,SQ8 " from a config file or a shell variable
    if re.search(r"IVF0*(?:,|_|$)", index) or "IDMap" in index:
        raise ValidationError(
            f"index {index!r} is not supported: an IVF index needs at least 1 list, and ragim "
            "numbers the rows itself (no IDMap); e.g. 'IVF4096,SQ8'"
        )
    return "Flat" if index.lower() == "flat" else index


def _min_train(factory: str) -> int:
    m = re.search(r"IVF(\d+)", factory)
    nlist = int(m.group(1)) if m else 1
    return max(nlist, 256 if "PQ" in factory else 1)
