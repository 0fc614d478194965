"""The streaming index build (fit, embed and add a chunk at a time) and its storage options."""

import numpy as np
import pytest

from ragim import TaskCollection, TaskIndex, datasets
from ragim.errors import ValidationError


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=300, n_features=3, seed=4)


@pytest.fixture(scope="module")
def whole(family):
    return TaskIndex.build(family, embedder="hashing:384", progress=False)


def test_a_chunked_build_gives_the_index_a_single_chunk_gives(family, whole):
    chunked = TaskIndex.build(family, embedder="hashing:384", progress=False, chunk_size=97)
    assert chunked.ids == whole.ids == family.ids
    np.testing.assert_array_equal(chunked.params_matrix(), whole.params_matrix())
    np.testing.assert_array_equal(chunked.vectors(), whole.vectors())
    assert chunked.records == whole.records
    q = family.descriptions[:3]
    assert [[h.task_id for h in hs] for hs in chunked.search(q, k=5)] == \
        [[h.task_id for h in hs] for hs in whole.search(q, k=5)]


def test_given_parameters_and_fitted_ones_mix_across_chunks(family, whole):
    given = {t: whole.params(t) for t in whole.ids[::3]}
    mixed = TaskIndex.build(family, embedder="hashing:384", progress=False, chunk_size=50, params=given,
                            schema=whole.schema)
    np.testing.assert_allclose(mixed.params_matrix(), whole.params_matrix(), atol=1e-12)


@pytest.mark.parametrize("factory", ["IVF16,SQ8", "IVF16,PQ8"])
def test_compressed_vectors_find_the_exact_neighbours(family, whole, factory):
    small = TaskIndex.build(family, embedder="hashing:384", index=factory, progress=False, chunk_size=128)
    assert small.config.factory == factory
    q = family.descriptions[::20]
    truth = [[h.task_id for h in hs] for hs in whole.search(q, k=10)]
    got = [[h.task_id for h in hs] for hs in small.search(q, k=10)]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
    assert recall >= (0.95 if "SQ8" in factory else 0.6), recall
    if "SQ8" in factory:  # 8-bit codes: a quarter of the float32 vectors, plus the coarse centroids
        assert small.store.memory_bytes() < whole.store.memory_bytes() / 3


def test_ondisk_lists_are_saved_beside_the_index_and_load_read_only(family, whole, tmp_path):
    disk = TaskIndex.build(family, embedder="hashing:384", index="IVF16,Flat", storage="ondisk", progress=False,
                           chunk_size=200)
    ram = TaskIndex.build(family, embedder="hashing:384", index="IVF16,Flat", progress=False, chunk_size=200)
    q = family.descriptions[:5]
    hits = [[h.task_id for h in hs] for hs in disk.search(q, k=8, exclude=[family.ids[0]])]
    assert hits == [[h.task_id for h in hs] for hs in ram.search(q, k=8, exclude=[family.ids[0]])]
    path = disk.save(tmp_path / "disk")
    assert (path / "index.ivfdata").stat().st_size >= 300 * 4 * disk.store.dim
    again = TaskIndex.load(path)
    assert again.config.storage == "ondisk" and again.store.storage == "ondisk"
    assert [[h.task_id for h in hs] for hs in again.search(q, k=8, exclude=[family.ids[0]])] == hits
    # adding to a loaded on-disk index copies its lists first: the artifact stays intact
    extra = datasets.synthetic_family(n_tasks=320, n_features=3, seed=4).take(range(300, 320))
    again.add(extra)
    assert len(again) == 320 and again.search(extra[0].description, k=1)[0].task_id == extra.ids[0]
    assert len(TaskIndex.load(path)) == 300


def test_bad_streaming_options_are_named():
    tasks = datasets.synthetic_family(n_tasks=20, n_features=2, seed=0)
    with pytest.raises(ValidationError, match="chunk_size must be an integer >= 1, got 0"):
        TaskIndex.build(tasks, embedder="hashing:384", chunk_size=0, progress=False)
    with pytest.raises(ValidationError, match="storage must be one of"):
        TaskIndex.build(tasks, embedder="hashing:384", storage="cloud", progress=False)
    with pytest.raises(ValidationError, match="'Flat' has none; use an IVF index"):
        TaskIndex.build(tasks, embedder="hashing:384", storage="ondisk", progress=False)


def test_stores_of_several_codecs_can_share_one_k_means(tmp_path):
    from ragim.vector_store import VectorStore

    rng = np.random.default_rng(0)
    v = rng.normal(size=(2000, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    flat = VectorStore.build(v, index="IVF32,Flat", device="cpu")
    sq8 = VectorStore.build(v, index="IVF32,SQ8", device="cpu", coarse=flat)
    faiss = pytest.importorskip("faiss")
    centroids = []
    for name, store in (("flat", flat), ("sq8", sq8)):
        store.write(tmp_path / name)
        read = faiss.read_index(str(tmp_path / name))  # kept alive while its quantizer is read
        centroids.append(faiss.extract_index_ivf(read).quantizer.reconstruct_n(0, 32))
    np.testing.assert_array_equal(*centroids)
    _, a = flat.search(v[:20], 5)
    _, b = sq8.search(v[:20], 5)
    assert np.mean([len(set(x) & set(y)) / 5 for x, y in zip(a, b, strict=True)]) >= 0.9
    with pytest.raises(ValidationError, match="coarse= needs a trained IVF store with the lists of 'IVF64,SQ8'"):
        VectorStore.build(v, index="IVF64,SQ8", device="cpu", coarse=flat)


def test_duplicate_ids_in_different_chunks_are_refused(family):
    twice = TaskCollection([family[0], family[1], family[0]], validate=False)
    with pytest.raises(ValidationError, match=r"duplicate task ids: \['syn-0000000'\]"):
        TaskIndex.build(twice, embedder="hashing:384", progress=False, chunk_size=2)
