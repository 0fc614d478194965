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


def test_ondisk_lists_are_saved_beside_the_index_and_load_read_only(family, whole, tmp_path, capfd):
    disk = TaskIndex.build(family, embedder="hashing:384", index="IVF16,Flat", storage="ondisk", progress=False,
                           chunk_size=200)
    ram = TaskIndex.build(family, embedder="hashing:384", index="IVF16,Flat", progress=False, chunk_size=200)
    q = family.descriptions[:5]
    hits = [[h.task_id for h in hs] for hs in disk.search(q, k=8, exclude=[family.ids[0]])]
    assert hits == [[h.task_id for h in hs] for hs in ram.search(q, k=8, exclude=[family.ids[0]])]
    # in RAM an on-disk index holds only its 16 coarse centroids; the lists are on disk
    assert disk.memory_bytes()["vectors"] == 16 * disk.store.dim * 4
    assert disk.store.memory_bytes() >= 300 * disk.store.dim * 4 > ram.memory_bytes()["vectors"] / 2
    path = disk.save(tmp_path / "disk")
    assert (path / "index.ivfdata").stat().st_size >= 300 * 4 * disk.store.dim
    again = TaskIndex.load(path)
    assert again.config.storage == "ondisk" and again.store.storage == "ondisk"
    assert [[h.task_id for h in hs] for hs in again.search(q, k=8, exclude=[family.ids[0]])] == hits
    # adding to a loaded on-disk index copies its lists first: the artifact stays intact
    extra = datasets.synthetic_family(n_tasks=320, n_features=3, seed=4).take(range(300, 320))
    capfd.readouterr()
    again.add(extra)
    assert len(again) == 320 and again.search(extra[0].description, k=1)[0].task_id == extra.ids[0]
    # ... and leaves every task it held where it was (FAISS's merge_from_multiple marked the
    # copied lists free, so the add overwrote other tasks' vectors)
    ram.add(extra)
    every = family.descriptions + extra.descriptions
    assert [[h.task_id for h in hs] for hs in again.search(every, k=5)] == [
        [h.task_id for h in hs] for hs in ram.search(every, k=5)
    ]
    np.testing.assert_allclose(again.store.reconstruct_all(), ram.store.reconstruct_all(), atol=1e-6)
    resaved = TaskIndex.load(again.save(tmp_path / "disk2"))
    assert len(resaved) == 320 and len(TaskIndex.load(path)) == 300
    # FAISS's on-disk notices go to stderr, never into a --json answer on stdout
    assert capfd.readouterr().out == ""


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


@pytest.mark.parametrize("factory", ["IVF16,SQ8", "IVF16,Flat@ondisk"])
def test_a_removal_keeps_the_trained_index_and_saves_below_its_training_size(tmp_path, factory):
    """Saving after remove() used to decode every vector, retrain the index on them (losing
    quality with each cycle) and fail when fewer vectors than the index trains on were left."""
    fac, _, storage = factory.partition("@")
    tasks = datasets.synthetic_family(n_tasks=400, n_features=3, seed=1)
    ix = TaskIndex.build(tasks, embedder="hashing:384", index=fac, storage=storage or "memory", progress=False)
    before = ix.store.reconstruct_all()
    for cycle in range(2):
        ix.remove([ix.ids[-1]])
        ix = TaskIndex.load(ix.save(tmp_path / f"c{cycle}"))
    np.testing.assert_array_equal(ix.store.reconstruct_all(), before[: len(ix)])  # codes unchanged
    ix.remove(ix.ids[5:])  # 5 left: fewer than the 16 lists the index was trained with
    again = TaskIndex.load(ix.save(tmp_path / "few"))
    assert again.ids == ix.ids and again.search(tasks[0].description, k=1)[0].task_id == tasks.ids[0]


def test_unusable_index_strings_and_empty_or_repeated_updates_are_named():
    tasks = datasets.synthetic_family(n_tasks=40, n_features=2, seed=0)
    for bad in ("IVF0,Flat", "IDMap,Flat"):
        with pytest.raises(ValidationError, match="is not supported"):
            TaskIndex.build(tasks, embedder="hashing:384", index=bad, progress=False)
    ix = TaskIndex.build(tasks, embedder="hashing:384", progress=False)
    with pytest.raises(ValidationError, match="at least one task"):
        ix.add([])
    ix.remove(ix.ids[0])
    with pytest.raises(ValidationError, match=r"does not hold: .*\(1 removed already\)"):
        ix.remove(tasks.ids[0])
    with pytest.raises(ValidationError, match="does not hold"):
        ix.remove("no-such-task")


def _reseal(path):
    """Rewrite the manifest's checksums, as an editor who knows the format would."""
    import json

    from ragim.io import sha256_file

    m = json.loads((path / "manifest.json").read_text())
    for name, entry in m["files"].items():
        entry.update(sha256=sha256_file(path / name), bytes=(path / name).stat().st_size)
    (path / "manifest.json").write_text(json.dumps(m))


def test_a_resealed_configuration_that_contradicts_the_index_is_refused(tmp_path):
    import json
    import shutil

    from ragim.errors import ArtifactError

    tasks = datasets.synthetic_family(n_tasks=60, n_features=2, seed=0)
    path = TaskIndex.build(tasks, embedder="hashing:384", index="IVF4,Flat", progress=False).save(
        tmp_path / "ix"
    )
    for change, message in (({"nprobe": -3}, "nprobe must be an integer >= 1"),
                            ({"factory": "Flat"}, "has inverted lists, but the configuration")):
        cfg = json.loads((path / "config.json").read_text())
        cfg.update(change)
        bad = tmp_path / f"bad{len(message)}"
        shutil.copytree(path, bad)
        (bad / "config.json").write_text(json.dumps(cfg))
        _reseal(bad)
        with pytest.raises(ArtifactError, match=message):
            TaskIndex.load(bad)
