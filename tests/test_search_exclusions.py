"""Search with exclusions returns the k best eligible tasks on every index type.

An approximate index (IVF, HNSW) only looks at part of the collection. When the tasks
it looks at are excluded (the target's site, its overlapping subgroups), search must
still return the k best of the tasks that remain, not fewer, and never an excluded one.
Every check compares against a numpy brute force over the eligible rows.
"""

import warnings

import numpy as np
import pytest

from ragim import TaskIndex, datasets
from ragim.errors import DataWarning, ValidationError
from ragim.estimator import neighbor_mean
from ragim.vector_store import FILTER_FETCH_MAX, VectorStore

K = 10


def _clustered(n: int, dim: int = 32, clusters: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    v = centres[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _brute_force(db: np.ndarray, query: np.ndarray, excluded, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows (and scores) over the rows not in ``excluded``."""
    scores = db @ query
    scores[np.asarray(list(excluded), dtype=np.int64)] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    top = top[np.isfinite(scores[top])]
    return top, scores[top]


# Exhaustive indices score every row: their results must be the brute-force top-k over the
# stored (for SQ and PQ: decoded) vectors. IVF and HNSW are approximate by design; with
# large excluded groups they must still return k eligible rows, close to the brute force.
EXHAUSTIVE = ["Flat", "SQ8", "PQ8"]
APPROXIMATE = ["IVF64,Flat", "IVF64,SQ8", "IVF64,PQ8", "HNSW16"]


@pytest.fixture(scope="module")
def db():
    return _clustered(3000)


@pytest.fixture(scope="module")
def queries(db):
    rng = np.random.default_rng(1)
    q = db[rng.integers(0, len(db), 12)] + 0.05 * rng.normal(size=(12, db.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _store(db, factory, storage="memory"):
    return VectorStore.build(db, index=factory, nprobe=4, ef_search=16, device="cpu", storage=storage)


def _excluded_groups(db, queries, n_excluded):
    """Per query: its n_excluded nearest rows, i.e. everything a narrow search would see."""
    return [np.argsort(-(db @ q))[:n_excluded] for q in queries]


@pytest.mark.parametrize("factory", EXHAUSTIVE + APPROXIMATE + ["IVF64,Flat@ondisk"])
def test_large_excluded_groups_leave_k_eligible_neighbours(db, queries, factory):
    factory, _, storage = factory.partition("@")
    store = _store(db, factory, storage or "memory")
    decoded = store.reconstruct_all()
    excluded = _excluded_groups(db, queries, 400)  # far more than nprobe=4 of 64 lists hold
    scores, rows = store.search(queries, K, excluded=excluded)
    recalls = []
    for qi, q in enumerate(queries):
        assert (rows[qi] >= 0).all(), f"{factory}: only {(rows[qi] >= 0).sum()} of {K} neighbours"
        assert not set(rows[qi].tolist()) & set(excluded[qi].tolist())
        truth, truth_scores = _brute_force(decoded, q, excluded[qi], K)
        if factory in EXHAUSTIVE:  # the same scores as brute force (ties may swap rows)
            np.testing.assert_allclose(np.sort(decoded[rows[qi]] @ q)[::-1], truth_scores, atol=1e-4)
        recalls.append(len(set(rows[qi].tolist()) & set(truth.tolist())) / K)
    assert np.mean(recalls) >= (1.0 if factory in EXHAUSTIVE + ["IVF64,Flat"] else 0.9), (factory, recalls)


@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat", "HNSW16"])
def test_a_predicate_gives_the_same_neighbours_as_the_ids_it_names(db, queries, factory):
    store = _store(db, factory)
    excluded = _excluded_groups(db, queries, 400)
    sets = [set(e.tolist()) for e in excluded]
    by_rows = store.search(queries, K, excluded=excluded)[1]
    by_pred = store.search(queries, K, skip=lambda qi, row: row in sets[qi])[1]
    np.testing.assert_array_equal(by_rows, by_pred)


@pytest.mark.parametrize("factory", ["IVF64,Flat", "HNSW16"])
def test_almost_everything_excluded_still_finds_the_best_of_the_rest(db, queries, factory):
    # All but 200 scattered rows excluded: the probed lists / graph neighbourhood hold few of them.
    store = _store(db, factory)
    keep = np.random.default_rng(2).choice(len(db), 200, replace=False)
    excluded = np.setdiff1d(np.arange(len(db)), keep)
    _, rows = store.search(queries, K, excluded=[excluded] * len(queries))
    for qi, q in enumerate(queries):
        truth, _ = _brute_force(db, q, excluded, K)
        assert set(rows[qi].tolist()) <= set(keep.tolist())
        assert set(rows[qi].tolist()) == set(truth.tolist())


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_more_exclusions_than_the_first_pass_fetches(factory):
    db = _clustered(FILTER_FETCH_MAX + 2000, dim=16, seed=3)
    q = db[:3]
    excluded = [np.argsort(-(db @ v))[: FILTER_FETCH_MAX + 100] for v in q]
    _, rows = VectorStore.build(db, index=factory, device="cpu").search(q, K, excluded=excluded)
    for qi in range(len(q)):
        truth, _ = _brute_force(db, q[qi], excluded[qi], K)
        assert set(rows[qi].tolist()) == set(truth.tolist())


def test_fewer_eligible_rows_than_k_returns_exactly_those(db, queries):
    store = _store(db, "IVF64,Flat")
    left = np.array([5, 900, 2999])
    excluded = np.setdiff1d(np.arange(len(db)), left)
    scores, rows = store.search(queries[:2], K, excluded=[excluded, np.arange(len(db))])
    assert sorted(rows[0][rows[0] >= 0].tolist()) == left.tolist()
    assert (rows[0][3:] == -1).all() and np.isneginf(scores[0][3:]).all()
    assert (rows[1] == -1).all()


def test_tombstones_and_exclusions_together_still_fill_k(db, queries):
    store = _store(db, "IVF64,Flat")
    excluded = _excluded_groups(db, queries, 200)
    removed = np.argsort(-(db @ queries[0]))[200:500]
    store.remove(removed)
    _, rows = store.search(queries[:1], K, excluded=excluded[:1])
    truth, _ = _brute_force(db, queries[0], set(excluded[0].tolist()) | set(removed.tolist()), K)
    assert set(rows[0].tolist()) == set(truth.tolist())


def test_an_ivf_probe_that_holds_fewer_than_k_rows_is_widened(db, queries):
    # 512 lists over 3000 rows with nprobe=1: the probed list holds about 6 rows.
    store = VectorStore.build(db, index="IVF512,Flat", nprobe=1, device="cpu")
    _, rows = store.search(queries, K)
    assert (rows >= 0).all()


# --------------------------------------------------------------------- the task index
@pytest.fixture(scope="module")
def ivf_index():
    """The reported case: 600 synthetic tasks in IVF512 lists, 32 of them probed."""
    family = datasets.synthetic_family(n_tasks=600, n_features=2, seed=0)
    return TaskIndex.build(family, embedder="hashing", index="IVF512,Flat", progress=False)


def test_the_reported_ivf_case_returns_the_brute_force_neighbours(ivf_index):
    query = ivf_index.records[0]["description"]
    qv = ivf_index.embedder.embed([query])[0]
    db = ivf_index.vectors()
    ids = np.array(ivf_index.ids)
    ranked = ids[np.argsort(-(db @ qv), kind="stable")]
    for n_excluded in (0, 38, 200, 590):
        excluded = list(ranked[:n_excluded])
        hits = ivf_index.search(query, k=K, exclude=excluded)
        truth, _ = _brute_force(db, qv, [ivf_index.ids.index(t) for t in excluded], K)
        assert len(hits) == K, n_excluded
        assert {h.task_id for h in hits} == set(ids[truth]), n_excluded
        by_pred = ivf_index.search(query, k=K, exclude=lambda rec, ex=set(excluded): rec["task_id"] in ex)
        assert [h.task_id for h in by_pred] == [h.task_id for h in hits]
    last = ivf_index.search(query, k=K, exclude=list(ranked[:597]))
    assert sorted(h.task_id for h in last) == sorted(ranked[597:])


def test_neighbor_mean_says_all_tasks_are_excluded_only_when_they_are(ivf_index):
    query = ivf_index.records[0]["description"]
    ids = ivf_index.ids
    p = neighbor_mean(ivf_index, query, k=K, exclude=ids[:590])
    assert len(p.metadata["provenance"]) == K
    assert {r["task_id"] for r in p.metadata["provenance"]} == set(ids[590:])
    with pytest.raises(ValidationError, match="all 600 indexed tasks are excluded"):
        neighbor_mean(ivf_index, query, k=K, exclude=lambda rec: True)


def test_an_excluded_id_the_index_does_not_hold_is_named_not_silently_ignored(ivf_index):
    """A misspelt id used to exclude nothing without a word, so a 'zero-shot' model could see
    its target; ids of the wrong type are refused."""
    query = ivf_index.records[0]["description"]
    target = ivf_index.ids[0]
    typo = target.upper()
    assert typo not in ivf_index
    calls = (
        lambda ex: ivf_index.search(query, k=K, exclude=ex),
        lambda ex: ivf_index.population_params(exclude=ex),
        lambda ex: neighbor_mean(ivf_index, query, k=K, exclude=ex),
    )
    for call in calls:
        with pytest.warns(DataWarning, match=rf"1 task id\(s\) the index does not hold: '{typo}'; they exclude"):
            call([typo])
        with pytest.raises(ValidationError, match="exclude must be task ids .* got int"):
            call(5)
        with pytest.raises(ValidationError, match=r"task ids as strings, got 5 \(int\)"):
            call([target, 5])
    hits = ivf_index.search(query, k=K, exclude=target)  # one id, known: fine
    assert target not in {h.task_id for h in hits}


@pytest.mark.parametrize("make", [list, tuple, set, np.array, lambda ids: (t for t in ids),
                                  lambda ids: dict.fromkeys(ids).keys()])
def test_any_collection_of_ids_excludes_the_same_tasks_everywhere(ivf_index, make):
    """A generator used to be read up by the search, so the population model and the coverage
    saw nothing excluded; an array used to be misread as one exclusion per query."""
    query = ivf_index.records[0]["description"]
    ids = ivf_index.ids[:40]
    want = neighbor_mean(ivf_index, query, k=K, exclude=list(ids))
    got = neighbor_mean(ivf_index, query, k=K, exclude=make(ids))
    assert [r["task_id"] for r in got.metadata["provenance"]] == [r["task_id"] for r in want.metadata["provenance"]]
    assert got.metadata["coverage"] == want.metadata["coverage"]
    assert ivf_index.population_params(exclude=make(ids)).metadata["n_tasks"] == 600 - 40


def test_removed_and_skipped_ids_may_be_excluded_silently():
    family = datasets.synthetic_family(n_tasks=40, n_features=2, seed=0)
    with pytest.warns(UserWarning):  # a few tiny tasks are skipped at build
        index = TaskIndex.build(family, embedder="hashing", progress=False, min_per_class=12)
    assert index.skipped
    skipped = next(iter(index.skipped))
    removed = index.ids[1]
    index.remove([removed])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        hits = index.search(index.records[0]["description"], k=3, exclude=[skipped, removed])
    assert len(hits) == 3 and not {skipped, removed} & {h.task_id for h in hits}


# ---------------------------------------------------------------------- ids hold out patients
def _cohort_tasks():
    """One cohort's whole task and its two age bands (they share patients), plus three
    cohorts of their own patients; described alike, so all are each other's neighbours."""
    import pandas as pd

    from ragim import Task

    rng = np.random.default_rng(0)

    def task(tid, n, pids):
        X = pd.DataFrame({"age": rng.normal(60, 10, n), "hgb": rng.normal(13, 2, n)})
        y = (rng.random(n) < 1 / (1 + np.exp(-(X.age - 60) / 10))).astype(int)
        return Task(tid, f"Predict death within 5 years in adults, {tid}", X, y,
                    metadata={"patient_ids": list(pids)})

    whole = task("cohort-all", 120, (f"P{i:03d}" for i in range(120)))

    def band(tid, rows):
        part = whole.subset(rows)
        return Task(tid, f"Predict death within 5 years in adults, {tid}", part.X, part.y,
                    metadata=part.metadata)

    young, old = band("cohort-young", np.arange(60)), band("cohort-old", np.arange(60, 120))
    others = [task(f"other-{c}", 80, (f"{c}{i:03d}" for i in range(80))) for c in "abc"]
    return [whole, young, old, *others]


@pytest.fixture()
def cohort_index():
    return TaskIndex.build(_cohort_tasks(), embedder="hashing", progress=False)


def test_excluding_a_task_by_id_leaves_out_the_tasks_holding_its_patients_and_says_so(cohort_index):
    """exclude=["cohort-old"] held out the old band but kept the whole-cohort task, which
    holds every one of its patients, as a neighbour, without a word (mgus2: a "zero-shot"
    model borrowed most from the task containing its target's own patients)."""
    index = cohort_index
    query = "Predict death within 5 years in adults, cohort-old"
    with pytest.warns(DataWarning, match=r"exclude also leaves out 1 task\(s\) sharing patients with the excluded task\(s\): cohort-all"):
        hits = index.search(query, k=len(index), exclude=["cohort-old"])
    assert sorted(h.task_id for h in hits) == ["cohort-young", "other-a", "other-b", "other-c"]
    assert index.sharing_patients(["cohort-old"]) == ["cohort-all"]
    assert index.sharing_patients("other-a") == []
    with pytest.warns(DataWarning, match="sharing patients"):
        assert index.population_params(exclude=["cohort-old"]).metadata["n_tasks"] == 4
    with pytest.warns(DataWarning, match="sharing patients"):
        mean = neighbor_mean(index, query, k=6, exclude="cohort-old")
    assert "cohort-all" not in {p["task_id"] for p in mean.metadata["provenance"]}
    # the whole task holds both bands' patients: excluding it leaves out both
    with pytest.warns(DataWarning, match=r"2 task\(s\).*cohort-young, cohort-old"):
        hits = index.search(query, k=len(index), exclude=["cohort-all"])
    assert sorted(h.task_id for h in hits) == ["other-a", "other-b", "other-c"]
    # a predicate leaves out exactly what it matches; an id sharing no patient, only itself
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        hits = index.search(query, k=len(index), exclude=lambda rec: rec["task_id"] == "cohort-old")
        assert "cohort-all" in {h.task_id for h in hits} and len(hits) == 5
        hits = index.search(query, k=len(index), exclude=["other-a"])  # shares no patient
        assert len(hits) == 5 and "other-a" not in {h.task_id for h in hits}


def test_an_excluded_task_removed_from_the_index_still_holds_out_its_patients(cohort_index):
    index = cohort_index
    index.remove(["cohort-old"])
    with pytest.warns(DataWarning, match="cohort-all"):
        hits = index.search("cohort-old", k=len(index), exclude=["cohort-old"])
    assert "cohort-all" not in {h.task_id for h in hits} and len(hits) == 4


def test_a_generator_given_an_id_leaves_out_the_tasks_holding_its_patients(cohort_index):
    from ragim import StatisticalGenerator, ZeroShotClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # too few tasks to validate the stack
        gen = StatisticalGenerator().fit(cohort_index, progress=False)
    query = "Predict death within 5 years in adults, cohort-old"
    with pytest.warns(DataWarning, match="sharing patients"):
        p = gen.generate_params(query, cohort_index, exclude=["cohort-old"])
    assert p.metadata["excluded_from_fit"] == 2
    assert not {"cohort-old", "cohort-all"} & {r["task_id"] for r in p.metadata["provenance"]}
    with pytest.warns(DataWarning, match="sharing patients"):
        clf = ZeroShotClassifier(cohort_index, gen, query, exclude=["cohort-old"]).fit()
    assert clf.prior_params_.metadata["excluded_from_fit"] == 2


def test_a_removed_task_still_holds_out_its_patients_after_the_index_is_saved(cohort_index, tmp_path):
    """After index.remove([T]) and a save/load, exclude=[T] warned that the index does not hold
    T and "excludes nothing", and the tasks holding T's patients came back as neighbours (the
    patients of a removed task were remembered in memory only)."""
    import json

    from conftest import reseal

    from ragim.errors import ArtifactError

    index = cohort_index
    index.remove(["cohort-old", "other-a"])  # other-a shares no patient: still known, silently
    back = TaskIndex.load(index.save(tmp_path / "idx"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = back.search("cohort-old", k=len(back), exclude=["cohort-old", "other-a"])
    assert [str(w.message)[:61] for w in caught] == [
        "exclude also leaves out 1 task(s) sharing patients with the e"
    ]
    assert sorted(h.task_id for h in hits) == ["cohort-young", "other-b", "other-c"]
    assert back.sharing_patients("cohort-old") == ["cohort-all"]
    # an index saved before removals were kept loads without them; a damaged record is named
    cfg_path = tmp_path / "idx" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    assert {t: len(p) for t, p in cfg["removed"].items()} == {"cohort-old": 60, "other-a": 80}
    cfg["removed"] = {"cohort-old": 7}
    cfg_path.write_text(json.dumps(cfg))
    reseal(tmp_path / "idx")
    with pytest.raises(ArtifactError, match="'removed' must map task ids to lists of patient ids"):
        TaskIndex.load(tmp_path / "idx")
    del cfg["removed"]
    cfg_path.write_text(json.dumps(cfg))
    reseal(tmp_path / "idx")
    with pytest.warns(DataWarning, match="does not hold: 'cohort-old'"):
        TaskIndex.load(tmp_path / "idx").search("cohort-old", k=3, exclude=["cohort-old"])


def test_a_task_removed_after_fit_also_leaves_out_the_tasks_holding_its_patients(cohort_index):
    """After index.remove([T]) a fitted StatisticalGenerator left out T only (excluded_from_fit
    1) and kept the whole-cohort task holding T's patients as its top neighbour, while
    exclude=[T] leaves both out; removal is now handled as exclude= is."""
    from ragim import StatisticalGenerator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # too few tasks to validate the stack
        gen = StatisticalGenerator().fit(cohort_index, progress=False)
        query = "Predict death within 5 years in adults, cohort-old"
        held_out = gen.generate_params(query, cohort_index, exclude=["cohort-old"])
    cohort_index.remove(["cohort-old"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = gen.generate_params(query, cohort_index)
    shared = [str(w.message) for w in caught if "sharing patients" in str(w.message)]
    assert shared == [
        "the index no longer holds 1 task(s) this StatisticalGenerator was fitted on "
        "(cohort-old); as exclude= does, it also leaves out 1 task(s) sharing patients with "
        "them: cohort-all"
    ]
    assert p.metadata["excluded_from_fit"] == 2
    assert not {"cohort-old", "cohort-all"} & {r["task_id"] for r in p.metadata["provenance"]}
    np.testing.assert_allclose(p.vector, held_out.vector)
