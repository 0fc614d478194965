import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_frame

from ragim import datasets
from ragim.embed import HashingEmbedder
from ragim.errors import ArtifactError, ValidationError
from ragim.index import TaskIndex, leak_free, same_group, shares_patients
from ragim.tasks import Task, TaskCollection

SITES = ["Zurich", "Budapest", "Cleveland"]
GROUPS = ["women under 50", "men over 60", "adults"]


def _tasks():
    tasks = []
    pid = 0
    for s, site in enumerate(SITES):
        for g, group in enumerate(GROUPS):
            n = 60
            X = make_frame(n, seed=10 * s + g)
            rng = np.random.default_rng(s * 7 + g)
            y = (rng.random(n) < 1 / (1 + np.exp(-(X["sex"] - 0.5 + 0.3 * s)))).astype(int)
            ids = list(range(pid, pid + n))
            pid += n
            tasks.append(Task(f"{site.lower()}-{g}", f"Predict coronary disease in {group} at the {site} clinic",
                              X, y, {"site": site, "group": group, "patient_ids": ids}))
        # a whole-site task sharing every patient of the site
        site_ids = [i for t in tasks if t.metadata["site"] == site for i in t.metadata["patient_ids"]]
        Xs = make_frame(len(site_ids), seed=99 + s)
        ys = np.arange(len(site_ids)) % 2
        tasks.append(Task(f"{site.lower()}-all", f"Predict coronary disease in all patients at the {site} clinic",
                          Xs, ys, {"site": site, "group": "all", "patient_ids": site_ids}))
    return TaskCollection(tasks, name="toy")


@pytest.fixture(scope="module")
def index():
    return TaskIndex.build(_tasks(), embedder=HashingEmbedder(dim=128), progress=False)


def test_build_stores_params_stats_and_schema(index):
    assert len(index) == 12 and index.config.factory == "Flat"
    rec = index.record("zurich-0")
    assert rec["stats"]["n_rows"] == 60 and "heldout_logloss" in rec["stats"]
    p = index.params("zurich-0")
    assert p.names[0] == "intercept" and p.names[1:] == index.schema.design_names


def test_search_matches_brute_force(index):
    queries = ["coronary disease in women at Zurich", "adults in Cleveland", "men over 60"]
    vecs = index.embedder.embed(queries)
    allv = index.vectors()
    brute = np.argsort(-(vecs @ allv.T), axis=1)[:, :4]
    hits = index.search(queries, k=4)
    for qi, hs in enumerate(hits):
        assert [h.task_id for h in hs] == [index.ids[j] for j in brute[qi]]
        assert all(a.score >= b.score for a, b in zip(hs, hs[1:], strict=False))


def test_exclusions_are_leak_free(index):
    target = index.record("zurich-0")
    hits = index.search(target["description"], k=12, exclude=leak_free(target))
    ids = {h.task_id for h in hits}
    assert "zurich-0" not in ids and "zurich-all" not in ids  # itself and the overlapping site task
    assert "zurich-1" in ids  # same site, disjoint patients
    hits = index.search(target["description"], k=12, exclude=leak_free(target, group="site"))
    assert all(h.metadata["site"] != "Zurich" for h in hits) and len(hits) == 8
    assert [h.task_id for h in index.search("x y", k=3, exclude=["zurich-0", "zurich-1"])] != []
    pred = same_group(target, "site")
    assert pred(index.record("zurich-2")) and not pred(index.record("budapest-0"))
    assert shares_patients(target)(index.record("zurich-all"))
    with pytest.raises(ValidationError, match="no metadata 'ward'"):
        same_group(target, "ward")


def test_batch_search_with_per_query_exclusions(index):
    a, b = index.record("zurich-0"), index.record("budapest-1")
    hits = index.search([a["description"], b["description"]], k=3, exclude=[leak_free(a), leak_free(b)])
    assert "zurich-0" not in {h.task_id for h in hits[0]}
    assert "budapest-1" not in {h.task_id for h in hits[1]}
    with pytest.raises(ValidationError, match="query 1 is empty"):
        index.search(["ok", "  "], k=2)


def test_add_and_remove_without_rebuild(tmp_path):
    tc = _tasks()
    idx = TaskIndex.build(tc.take(range(8)), embedder=HashingEmbedder(dim=128), progress=False)
    added = idx.add(tc.take(range(8, 12)))
    assert len(idx) == 12 and added == tc.ids[8:]
    assert idx.search(tc[10].description, k=1)[0].task_id == tc.ids[10]
    idx.remove(["zurich-0", tc.ids[10]])
    assert len(idx) == 10 and "zurich-0" not in idx
    assert all(h.task_id not in ("zurich-0", tc.ids[10]) for h in idx.search(tc[10].description, k=10))
    with pytest.raises(ValidationError, match="already in the index"):
        idx.add(tc.take([1]))
    idx.save(tmp_path / "i")
    again = TaskIndex.load(tmp_path / "i")
    assert again.ids == idx.ids and len(again.store.deleted) == 0


def test_rows_line_up_parameters_records_and_vectors():
    tc = _tasks()
    idx = TaskIndex.build(tc.take(range(6)), embedder=HashingEmbedder(dim=128), progress=False)
    vectors = idx.store.reconstruct_all()
    for t in idx.ids:
        r = idx.row(t)
        assert np.array_equal(idx.row_params[r], idx.params(t).vector)
        assert idx.row_records[r]["task_id"] == t
        assert np.allclose(vectors[r], idx.embed_queries(idx.record(t)["description"])[0][0], atol=1e-5)
    with pytest.raises(ValueError, match="read-only"):
        idx.row_params[0, 0] = 1.0
    removed = idx.row("zurich-1")
    idx.remove(["zurich-1"])
    assert idx.row_records[removed] is None and idx.row_params.shape[0] == 6  # its row stays until saved
    with pytest.raises(KeyError, match="zurich-1"):
        idx.row("zurich-1")


def test_save_load_round_trip(index, tmp_path):
    path = index.save(tmp_path / "idx")
    files = json.loads((path / "manifest.json").read_text())["files"]
    for f in ("index.faiss", "records.jsonl", "params.safetensors", "schema.json", "config.json", "tasks/manifest.json"):
        assert f in files
    again = TaskIndex.load(path)
    assert again.ids == index.ids and again.schema == index.schema
    assert np.array_equal(again.params_matrix(), index.params_matrix())
    q = "Predict coronary disease in women at the Budapest clinic"
    assert [(h.task_id, round(h.score, 6)) for h in again.search(q, 5)] == [
        (h.task_id, round(h.score, 6)) for h in index.search(q, 5)]
    assert again.tasks is not None and again.tasks.ids == index.tasks.ids


def test_load_errors(index, tmp_path):
    path = index.save(tmp_path / "idx")
    with pytest.raises(ValidationError, match="index was built with embedder"):
        TaskIndex.load(path, embedder=HashingEmbedder(dim=64))
    (path / "records.jsonl").write_text('{"task_id": "evil"}\n')
    with pytest.raises(ArtifactError, match="checksum mismatch for 'records.jsonl'"):
        TaskIndex.load(path)
    path2 = index.save(tmp_path / "idx2")
    (path2 / "index.faiss").unlink()
    with pytest.raises(ArtifactError, match="'index.faiss' listed in the manifest is missing"):
        TaskIndex.load(path2)


def test_crash_during_save_keeps_old_index(index, tmp_path):
    path = index.save(tmp_path / "idx")
    code = f"""
import os, ragim.io as io
from ragim.index import TaskIndex
idx = TaskIndex.load({str(path)!r})
real = io._swap_into_place
def die(*_):
    os._exit(9)  # the process dies after writing, before the rename
io._swap_into_place = die
idx.save({str(path)!r})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    again = TaskIndex.load(path)
    assert again.ids == index.ids


def test_approximate_indices_agree_with_exact():
    rng = np.random.default_rng(0)
    n = 2000
    centers = rng.normal(size=(40, 32))
    vecs = centers[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, 32))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    from ragim.vector_store import VectorStore

    exact = VectorStore.build(vecs, index="Flat", device="cpu")
    _, truth = exact.search(vecs[:50], 10)
    for factory in ("HNSW32", "IVF32,Flat"):
        approx = VectorStore.build(vecs, index=factory, nprobe=8, device="cpu")
        _, got = approx.search(vecs[:50], 10)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
        assert recall > 0.9, (factory, recall)
    with pytest.raises(ValidationError, match="needs at least 32 vectors to train"):
        VectorStore.build(vecs[:10], index="IVF32,Flat")
    with pytest.raises(ValidationError, match="invalid FAISS index string"):
        VectorStore.build(vecs, index="Nonsense99")


def test_bad_build_inputs():
    with pytest.raises(ValidationError, match="zero tasks"):
        TaskIndex.build(TaskCollection([], validate=False), embedder="hashing")
    with pytest.raises(ValidationError, match="model must be 'logistic' or 'gam'"):
        TaskIndex.build(_tasks(), model="forest", embedder="hashing")


@pytest.mark.gpu
def test_gpu_index_gives_cpu_results():
    faiss = pytest.importorskip("faiss")
    if faiss.get_num_gpus() == 0:
        pytest.skip("no GPU visible to FAISS")
    idx_cpu = TaskIndex.build(_tasks(), embedder=HashingEmbedder(dim=128), device="cpu", progress=False)
    idx_gpu = TaskIndex.build(_tasks(), embedder=HashingEmbedder(dim=128), device="cuda", progress=False)
    assert idx_gpu.store.on_gpu and not idx_cpu.store.on_gpu
    q = ["Predict coronary disease in women at the Zurich clinic", "adults at Budapest"]
    a, b = idx_cpu.search(q, 5), idx_gpu.search(q, 5)
    assert [[h.task_id for h in hs] for hs in a] == [[h.task_id for h in hs] for hs in b]


def test_population_params_is_the_row_weighted_mean_of_the_tasks_left():
    tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    n = np.array([index.record(t)["stats"]["n_rows"] for t in index.ids], dtype=float)
    P = index.params_matrix().astype(np.float64)
    full = index.population_params()
    np.testing.assert_allclose(full.vector, n @ P / n.sum(), rtol=1e-6)
    assert full.metadata == {"source": "population", "n_tasks": 6, "n_rows": int(n.sum())}
    assert full.names == index.params(index.ids[0]).names
    by_id = index.population_params(exclude=index.ids[:2])
    np.testing.assert_allclose(by_id.vector, n[2:] @ P[2:] / n[2:].sum(), rtol=1e-6)
    by_pred = index.population_params(exclude=lambda rec: rec["task_id"] in index.ids[:2])
    np.testing.assert_array_equal(by_pred.vector, by_id.vector)
    assert index.population_params(exclude=lambda rec: True) is None
    index.remove(index.ids[:2])
    np.testing.assert_array_equal(index.population_params().vector, by_id.vector)


def test_records_are_compact_json_copies_and_the_saved_file_is_unchanged(tmp_path):
    """Records live as their records.jsonl lines (a third of the memory of dicts); a returned
    record is a copy, and records.jsonl is written exactly as before (sorted keys, one line
    per task)."""
    import tracemalloc

    from ragim.index_records import RecordStore
    from ragim.io import jsonl_bytes

    tasks = datasets.synthetic_family(n_tasks=300, n_features=4, seed=1)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    before = index.record(index.ids[0])
    rec = index.record(index.ids[0])
    rec["metadata"]["system"] = "changed"
    assert index.record(index.ids[0]) == before != rec
    index.remove(index.ids[:2])
    assert index.row_records[:2] == [None, None] and index.ids == tasks.ids[2:]
    path = index.save(tmp_path / "i")
    assert (path / "records.jsonl").read_bytes() == jsonl_bytes(index.records)
    assert TaskIndex.load(path).records == index.records

    records = index.records
    tracemalloc.start()
    as_dicts = json.loads(json.dumps(records))
    dict_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del as_dicts
    store = RecordStore.from_records(records)
    assert store.memory_bytes() < dict_bytes / 2
    assert index.memory_bytes()["records"] == store.memory_bytes()


def test_patient_ids_written_apart_across_tasks_are_warned_about():
    """One table kept the MRNs' leading zeros ("007") and another read them as numbers (7): the
    ids compare as text, so the tasks silently shared no patient and leave-task-out would train
    on a held-out task's patients. The index now says so at build and at add."""
    from ragim.errors import DataWarning

    def task(tid, ids, seed):
        X = make_frame(len(ids), seed=seed)
        y = np.arange(len(ids)) % 2
        return Task(tid, f"Predict coronary disease in cohort {tid}", X, y, {"patient_ids": ids})

    padded = [f"{i:04d}" for i in range(1, 41)]
    numeric = list(range(21, 61))                      # patients 21-40 are in both
    with pytest.warns(DataWarning, match=r"20 patient id\(s\) are one number written apart in different tasks: "
                                         r"'0021' \(task a\) and '21' \(task b\)"):
        index = TaskIndex.build([task("a", padded, 0), task("b", numeric, 1)], embedder="hashing", progress=False)
    assert index.sharing_patients(["a"]) == []          # as documented: compared as text
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error", DataWarning)           # the same ids written alike: no warning
        alike = TaskIndex.build([task("a", padded, 0), task("b", [f"{i:04d}" for i in numeric], 1)],
                                embedder="hashing", progress=False)
        assert alike.sharing_patients(["a"]) == ["b"]
        alike.add([task("c", [f"{i:04d}" for i in range(100, 140)], 2)])
    with pytest.warns(DataWarning, match=r"one number written apart .*'120' \(task d\)"):
        alike.add([task("d", [str(i) for i in range(120, 160)], 3)])
    # the message names the task just added, not the first task holding the spelling
    with pytest.warns(DataWarning, match=r"'0120' \(task c\) and '120' \(task e\)"):
        alike.add([task("e", [str(i) for i in range(120, 160)], 4)])
    from ragim.canonical import patient_id_near_misses

    # ids given as generators are read once; a single new task id is one id, not its letters
    assert patient_id_near_misses([("a", iter(["007"])), ("b", iter(["7"]))]) == [("007", "a", "7", "b")]
    assert patient_id_near_misses([("a", ["007"]), ("b", ["7"]), ("ab", ["8"])], new="ab") == []


def test_near_misses_equal_the_definition_on_random_id_columns():
    """The fast passes find exactly the numbers whose spellings (plain, zero-padded, '.0'
    tailed) include two never held by one task, as a brute force over all pairs does."""
    import itertools

    from ragim.canonical import patient_id_near_misses

    rng = np.random.default_rng(0)
    spell = [lambda n: str(n), lambda n: f"{n:03d}", lambda n: f"{n}.0", lambda n: f"P{n}"]
    for _ in range(200):
        tasks = [(f"t{i}", {spell[rng.integers(4)](int(n)) for n in rng.integers(0, 12, rng.integers(1, 6))})
                 for i in range(rng.integers(1, 5))]
        brute = {}
        for (_, ia), (_, ib) in itertools.product(tasks, repeat=2):
            for a, b in itertools.product(ia, ib):
                if a < b and not a.startswith("P") and not b.startswith("P") and float(a) == float(b):
                    holds_a = {t for t, ids in tasks if a in ids}
                    holds_b = {t for t, ids in tasks if b in ids}
                    if holds_a.isdisjoint(holds_b):
                        brute.setdefault(int(float(a)), set()).add((a, b))
        found = patient_id_near_misses(tasks)
        assert {int(float(a)) for a, _, _, _ in found} == set(brute)
        for a, ta, b, tb in found:
            assert (a, b) in brute[int(float(a))] and a in dict(tasks)[ta] and b in dict(tasks)[tb]
