"""StatisticalGenerator: noise-aware meta-regression, stacking inside the index, intervals."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from ragim import Task, TaskCollection, TaskIndex, datasets
from ragim.errors import ArtifactError, DataWarning, ExcludedAfterFitWarning, ValidationError
from ragim.generate import GENERATORS
from ragim.generate.meta_regression import (
    KernelRegression,
    centring,
    fit_feature_scales,
    fit_kernel_scales,
    glmm_map,
    ngram_buckets,
    split_by_score,
)
from ragim.generate.statistical import CANDIDATES, StatisticalConfig, StatisticalGenerator


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=160, n_features=4, seed=5, rows=(40, 300))


@pytest.fixture(scope="module")
def split(family):
    return family.take(range(120)), family.take(range(120, 160))


@pytest.fixture(scope="module")
def index(split):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TaskIndex.build(split[0], embedder="hashing", progress=False)


@pytest.fixture(scope="module")
def gen(index):
    return StatisticalGenerator().fit(index, progress=False)


# ------------------------------------------------------------------ the meta-regression's limits
def test_infinitely_noisy_tasks_leave_the_pooled_model():
    rng = np.random.default_rng(0)
    K = np.eye(6) + 0.5
    Y = rng.normal(size=(6, 3))
    gp = KernelRegression(K, Y, np.full((6, 3), 1e9), nugget=0.0)
    np.testing.assert_allclose(gp.mean(K[:2] * 0.7), 0.0, atol=1e-7)  # no deviation from pooled
    var = gp.variance(K[:2], np.full(2, 1.5))
    np.testing.assert_allclose(var, 1.5, rtol=1e-6)  # and the prior's full uncertainty


def test_an_exact_identical_task_is_reproduced():
    rng = np.random.default_rng(1)
    K = np.eye(5) * 0.5 + 0.5
    Y = rng.normal(size=(5, 2))
    V = np.full((5, 2), 0.3)
    V[2] = 0.0  # task 2 is known exactly
    gp = KernelRegression(K, Y, V, nugget=0.0)
    np.testing.assert_allclose(gp.mean(K[2:3]), Y[2:3], atol=1e-8)
    assert gp.variance(K[2:3], np.array([K[2, 2]]))[0] < 1e-8


def test_generator_falls_back_to_pooled_when_tasks_say_nothing(index, monkeypatch):
    import ragim.generate.statistical as st

    real = st.task_summaries

    def noisy(*args, **kwargs):
        s = real(*args, **kwargs)
        s.var[:] = 1e6
        return s

    monkeypatch.setattr(st, "task_summaries", noisy)
    g = StatisticalGenerator(candidates=("text", "neighbors")).fit(index, progress=False)
    p = g.generate_params(
        "Predict a fatal outcome within 28 days in adults with chronic endocarditis."
    )
    # every candidate is the pooled model; the stack may only recalibrate it: a shift of the
    # baseline risk and one scale for the slopes (in the centred coordinates it works in)
    T = centring(g.center_)
    pooled_c, p_c = T @ g.pooled_, T @ p.vector
    u, w = sum(g.stack_["baseline"].values()), sum(g.stack_["slopes"].values())
    np.testing.assert_allclose(p_c[1:], w * pooled_c[1:], atol=1e-5)
    assert p_c[0] == pytest.approx(g.stack_["shift"] + u * pooled_c[0], abs=1e-5)


def test_kernel_scales_weigh_the_word_groups_that_carry_the_effect():
    rng = np.random.default_rng(3)
    n = 120
    Phi = (rng.random((n, 6)) < 0.3).astype(float)
    effect = np.array([2.0, 0, 0, -1.5, 0, 0])
    Y = (Phi @ effect)[:, None] + rng.normal(0, 0.1, (n, 1))
    groups = [np.array([1, 0, 0, 1, 0, 0], bool), np.array([0, 1, 1, 0, 1, 1], bool)]
    Ks = [Phi[:, g] @ Phi[:, g].T for g in groups]
    h, nugget = fit_kernel_scales(Ks, Y, np.full((n, 1), 0.01))
    assert h[0] > 1.0 and h[1] < 0.05 and nugget < 0.05


def test_ngram_buckets_split_by_length_and_document_frequency():
    n_words = np.array([1, 1, 1, 2, 2])
    doc_freq = np.array([2, 3, 50, 2, 100])
    masks = ngram_buckets(n_words, doc_freq, n_docs=100)
    assert sum(m.sum() for m in masks) == 5 and all(m.any() for m in masks)
    by_feature = {int(np.flatnonzero(m)[0]): m for m in masks}
    assert by_feature[0][1] and not by_feature[0][2]  # 2 and 3 documents share a bucket, 50 not
    assert not any(m[0] and m[3] for m in masks)  # unigrams and bigrams never share a scale


def _one_bucket_of_words(seed):
    """8 words of one bucket: words 0-2 move 10 parameters of 150 tasks, the other five do
    nothing. Returns (Phi, Y, V)."""
    rng = np.random.default_rng(seed)
    n, m = 150, 10
    Phi = (rng.random((n, 8)) < 0.3).astype(float)
    W = np.zeros((8, m))
    W[:3] = rng.normal(0, 1.0, (3, m))
    return Phi, Phi @ W + rng.normal(0, 0.1, (n, m)), np.full((n, m), 0.01)


def test_score_split_separates_the_words_that_carry_an_effect_from_those_that_do_not():
    Phi, Y, V = _one_bucket_of_words(5)
    one = [np.ones(8, bool)]
    h, nugget = fit_kernel_scales([Phi @ Phi.T], Y, V)
    up, down = split_by_score(Phi, one, Y, V, h, nugget)
    assert up[:3].all() and not down[:3].any() and down.sum() >= 3  # the noise words mostly go down
    h2, _ = fit_kernel_scales([Phi[:, b] @ Phi[:, b].T for b in (up, down)], Y, V)
    assert h2[0] > 10 * h2[1]  # the words with an effect get their own, larger scale
    # a bucket under min_features, or whose words all agree, is kept whole
    assert len(split_by_score(Phi, one, Y, V, h, nugget, min_features=9)) == 1
    assert len(split_by_score(Phi[:, :3], [np.ones(3, bool)], Y, V, h, nugget, min_features=2)) == 1
    with pytest.raises(ValidationError, match="one n"):
        split_by_score(Phi[:-1], one, Y, V, h, nugget)
    with pytest.raises(ValidationError, match="one scale per bucket"):
        split_by_score(Phi, one * 2, Y, V, h, nugget)


def test_feature_scales_tell_apart_the_words_of_one_bucket_and_stay_near_it_under_a_tight_prior():
    Phi, Y, V = _one_bucket_of_words(6)
    h, nugget = fit_kernel_scales([Phi @ Phi.T], Y, V)
    start = np.full(8, h[0])
    tau, _ = fit_feature_scales(Phi, Y, V, start, nugget)
    assert tau[:3].min() > 10 * tau[3:].max()  # each word its own relevance
    # the hyperprior keeps the scales near their bucket's when it is tight
    tight, _ = fit_feature_scales(Phi, Y, V, start, nugget, prior_sd=1e-3)
    np.testing.assert_allclose(np.log(tight), np.log(start), atol=0.01)
    # a word left out of the start (scale 0) stays out
    assert fit_feature_scales(Phi, Y, V, np.where(np.arange(8) == 0, 0.0, h[0]), nugget)[0][0] == 0
    with pytest.raises(ValidationError, match="one n"):
        fit_feature_scales(Phi[:-1], Y, V, start, nugget)
    with pytest.raises(ValidationError, match="one starting scale per feature"):
        fit_feature_scales(Phi, Y, V, start[:-1], nugget)
    with pytest.raises(ValidationError, match="scales >= 0"):
        fit_feature_scales(Phi, Y, V, -start, nugget)
    with pytest.raises(ValidationError, match=r"prior_sd must be a number in \[0.001, 1000\]"):
        fit_feature_scales(Phi, Y, V, start, nugget, prior_sd=1e-300)
    with pytest.raises(ValidationError, match="nugget must be a number >= 0"):
        fit_feature_scales(Phi, Y, V, start, -1.0)
    with pytest.raises(ValidationError, match="nugget must be a number"):
        fit_feature_scales(Phi, Y, V, start, "0.1")
    with pytest.raises(ValidationError, match="variances V >= 0"):
        fit_feature_scales(Phi, Y, -V, start, nugget)
    with pytest.raises(ValidationError, match="n and m at least 1"):
        fit_feature_scales(Phi, Y[:, :0], V[:, :0], start, nugget)
    with pytest.raises(ValidationError, match="must be real numbers"):
        fit_feature_scales(np.full(Phi.shape, "a"), Y, V, start, nugget)
    with pytest.raises(ValidationError, match="must be real numbers"):
        fit_feature_scales(Phi + 1j, Y, V, start, nugget)


def test_relevance_per_word_is_a_checked_setting_and_older_artifacts_keep_their_fit(
    gen, tmp_path
):
    import json

    from conftest import reseal

    with pytest.raises(ValidationError, match="ard must be"):
        StatisticalConfig(ard="yes")
    for bad in (0, 1e300, float("nan")):
        with pytest.raises(ValidationError, match=r"ard_prior_sd must be a number in \[0.001, 1000\]"):
            StatisticalConfig(ard_prior_sd=bad)
    assert gen.config.ard and gen.config.split_buckets  # the defaults
    # an artifact saved before these settings existed was fitted without them, and a refit
    # (exclude=) must not change how: its config loads with both off
    path = gen.save(tmp_path / "old")
    cfg = json.loads((path / "config.json").read_text())
    del cfg["ard"], cfg["ard_prior_sd"], cfg["split_buckets"]
    (path / "config.json").write_text(json.dumps(cfg))
    reseal(path)
    from safetensors.numpy import load as st_load
    from safetensors.numpy import save as st_save

    arrays = st_load((path / "arrays.safetensors").read_bytes())
    del arrays["pooled_corr"]  # kept since the correlations were: an older one has none
    (path / "arrays.safetensors").write_bytes(st_save(arrays))
    reseal(path)
    back = StatisticalGenerator.load(path)
    assert not back.config.ard and not back.config.split_buckets
    old = back.generate_params(gen.descriptions_[0], index=gen.index_)
    assert old.std is not None and old.correlation is None  # independent, as it was saved
    assert StatisticalGenerator.load(gen.save(tmp_path / "new")).config.ard


def test_score_split_is_a_checked_setting_that_leaves_one_parameter_groups_whole(index):
    with pytest.raises(ValidationError, match="split_buckets must be"):
        StatisticalConfig(split_buckets="yes")
    on = StatisticalGenerator(StatisticalConfig(split_buckets=True, candidates=("pooled", "text")))
    off = StatisticalGenerator(StatisticalConfig(split_buckets=False, candidates=("pooled", "text")))
    on.fit(index, progress=False), off.fit(index, progress=False)
    # the intercept is one parameter (below MIN_SCORE_COLUMNS): its scales are never split
    assert np.array_equal(on.fitted_.state["tau_intercept"], off.fitted_.state["tau_intercept"])


def _bernoulli_rows(rng, theta, n, p):
    X = rng.normal(size=(n, p - 1))
    A = np.hstack([np.ones((n, 1)), X])
    return A, (rng.random(n) < 1 / (1 + np.exp(-A @ theta))).astype(float)


def test_glmm_with_vanishing_scales_is_the_pooled_model():
    rng = np.random.default_rng(4)
    base = np.array([-0.5, 1.0, -1.0])
    rows = [_bernoulli_rows(rng, base + rng.normal(0, 1, 3), 80, 3) for _ in range(12)]
    Phi = (rng.random((12, 5)) < 0.5).astype(float)
    W = glmm_map([Phi, Phi], [np.full(5, 1e-12)] * 2, [[0], [1, 2]], [1e-12, 1e-12], base, rows)
    assert np.abs(W[0]).max() < 1e-5 and np.abs(W[1]).max() < 1e-5


def test_glmm_recovers_a_word_effect_from_rows_and_ignores_a_noise_word():
    rng = np.random.default_rng(5)
    base = np.array([-1.0, 0.5])
    Phi = np.column_stack([np.arange(40) % 2, rng.random(40) < 0.5]).astype(float)
    shift = np.array([[1.5, -1.0], [0.0, 0.0]])  # word 0 moves the intercept and the slope
    rows = [_bernoulli_rows(rng, base + Phi[t] @ shift, 400, 2) for t in range(40)]
    W = glmm_map(
        [Phi[:, :1], Phi[:, 1:]],
        [np.full(1, 4.0), np.full(1, 4.0)],
        [[0], [1]],
        [1e-4, 1e-4],
        base,
        rows,
    )
    assert W[0][0, 0] == pytest.approx(1.5, abs=0.2)
    W_all = glmm_map([Phi, Phi], [np.full(2, 4.0)] * 2, [[0], [1]], [1e-4, 1e-4], base, rows)
    assert W_all[0][0, 0] == pytest.approx(1.5, abs=0.2)
    assert W_all[1][0, 0] == pytest.approx(-1.0, abs=0.2)
    assert abs(W_all[0][1, 0]) < 0.2 and abs(W_all[1][1, 0]) < 0.2  # the noise word


def test_glmm_reproduces_one_exact_task_that_owns_its_word():
    rng = np.random.default_rng(6)
    base, own = np.array([0.0, 0.0, 0.0]), np.array([1.0, -2.0, 0.5])
    rows = [_bernoulli_rows(rng, own, 20_000, 3)]
    W = glmm_map([np.ones((1, 1))], [np.full(1, 100.0)], [[0, 1, 2]], [0.0], base, rows)
    np.testing.assert_allclose(W[0][0], own, atol=0.08)


def test_glmm_refuses_shapes_that_disagree():
    rows = [(np.ones((3, 2)), np.array([0.0, 1.0, 1.0]))]
    with pytest.raises(ValidationError, match="partition"):
        glmm_map([np.ones((1, 1))], [np.ones(1)], [[0]], [0.1], np.zeros(2), rows)
    with pytest.raises(ValidationError, match="tasks, len"):
        glmm_map([np.ones((2, 1))], [np.ones(1)], [[0, 1]], [0.1], np.zeros(2), rows)
    with pytest.raises(ValidationError, match="design must be"):
        glmm_map([np.ones((1, 1))], [np.ones(1)], [[0, 1, 2]], [0.1], np.zeros(3), rows)
    with pytest.raises(ValidationError, match=r"rows\[0\]: the design must be"):  # 3 rows, 2 labels
        glmm_map([np.ones((1, 1))], [np.ones(1)], [[0, 1]], [0.1], np.zeros(2), [(np.ones((3, 2)), np.ones(2))])


@pytest.mark.parametrize(("change", "match"), [
    (lambda a: a["rows"][0][0].__setitem__((0, 1), np.nan), "design holds NaN"),
    (lambda a: a["rows"][0][1].__setitem__(0, 2.0), "labels must be 0 or 1"),
    (lambda a: a["scales"][0].__setitem__(0, -1.0), "scales must be finite and >= 0"),
    (lambda a: a["scales"][0].__setitem__(0, np.nan), "scales must be finite and >= 0"),
    (lambda a: a["features"][0].__setitem__((0, 0), np.inf), "features hold NaN"),
    (lambda a: a.__setitem__("nuggets", [-5.0, 0.1]), "nuggets must be finite"),
    (lambda a: a.__setitem__("base", np.array([0.0, np.nan, 0.0])), "base must be a finite"),
    (lambda a: a.__setitem__("max_iter", 0), "max_iter"),
])
def test_glmm_refuses_values_that_would_give_a_wrong_fit(change, match):
    rng = np.random.default_rng(7)
    args = dict(features=[np.ones((4, 2)), np.ones((4, 2))], scales=[np.ones(2), np.ones(2)],
                columns=[[0], [1, 2]], nuggets=[0.1, 0.1], base=np.zeros(3),
                rows=[_bernoulli_rows(rng, np.zeros(3), 20, 3) for _ in range(4)], max_iter=100)
    change(args)
    with pytest.raises(ValidationError, match=match):
        glmm_map(**args)


def test_glmm_warns_when_the_optimiser_stops_early():
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(8)
    rows = [_bernoulli_rows(rng, np.array([0.5, 1.0]), 50, 2) for _ in range(6)]
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        glmm_map([np.eye(6)[:, :3]], [np.ones(3)], [[0, 1]], [0.1], np.zeros(2), rows, max_iter=1)


# ------------------------------------------------------------------ the generator
def test_registered_and_generates_with_provenance_and_intervals(gen, split):
    assert GENERATORS["statistical"] is StatisticalGenerator
    target = split[1][0]
    p = gen.generate_params(target.description)
    assert p.metadata["generator"] == "statistical" and p.std is not None and np.all(p.std > 0)
    prov = p.metadata["provenance"]
    assert 0 < len(prov) <= 10 and sum(r["weight"] for r in prov) <= 1 + 1e-9
    assert all(r["task_id"] in gen.index_ for r in prov)
    assert set(p.metadata["stack"]) <= set(CANDIDATES)
    assert "text-glmm" in gen.cv_["candidates"]  # the row fit is validated like the others
    model = gen.generate(target.description)
    assert model.predict_proba(target.X).shape == (target.n_rows, 2)
    batch = gen.generate_params([target.description, split[1][1].description])
    np.testing.assert_allclose(batch[0].vector, p.vector)


def test_provenance_lists_k_tasks_by_their_weight_in_the_whole_stack(gen, split):
    """An outside user asked for k=20 and got 10 tasks whose weights summed to 1: they were the
    leading candidate's (the neighbour mean's 10 neighbours), while the text candidate, fitted
    on every task, held most of the stack. Now every candidate's weights count."""
    desc = split[1][0].description
    n = len(gen.summaries_.ids)
    assert gen.stack_["baseline"]["text"] > 0  # a candidate that weighs every task
    for k in (3, 20, n + 5):
        prov = gen.generate_params(desc, k=k).metadata["provenance"]
        assert len(prov) == min(k, n)
        sizes = [abs(r["weight"]) for r in prov]
        assert sizes == sorted(sizes, reverse=True)
    # every task listed: the signed shares of the whole stack's baseline sum to 1 in size
    assert sum(sizes) == pytest.approx(1.0, abs=1e-4)


def test_provenance_weights_are_the_stacks_baseline_weights_times_each_candidates(index, split):
    """Pooled model and neighbour mean: a task's weight is the pooled model's baseline weight
    times its share of the rows (the pooled model is fitted on them) plus the neighbour mean's
    times its similarity weight among the neighbor_k closest tasks."""
    g = StatisticalGenerator(candidates=("pooled", "neighbor-mean")).fit(index, progress=False)
    desc = split[1][3].description
    n = len(g.summaries_.ids)
    prov = g.generate_params(desc, index, k=n).metadata["provenance"]
    u = g.stack_["baseline"]
    rows = g.summaries_.n_rows / g.summaries_.n_rows.sum()
    sims = g.vectors_ @ index.embed_queries(desc)[0][0].astype(np.float64)
    near = np.zeros(n)
    top = np.argsort(-sims, kind="stable")[: g.config.neighbor_k]
    near[top] = np.maximum(sims[top], 0) / np.maximum(sims[top], 0).sum()
    want = (u["pooled"] * rows + u["neighbor-mean"] * near) / (u["pooled"] + u["neighbor-mean"])
    got = {r["task_id"]: r["weight"] for r in prov}
    assert len(prov) == n  # the pooled model weighs every task by its rows
    np.testing.assert_allclose([got[t] for t in g.summaries_.ids], want, atol=2e-6)
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-4)
    only_pooled = StatisticalGenerator(candidates=("pooled",)).fit(index, progress=False)
    prov = only_pooled.generate_params(desc, index, k=3).metadata["provenance"]
    largest = np.argsort(-only_pooled.summaries_.n_rows, kind="stable")[:3]
    assert [r["task_id"] for r in prov] == [only_pooled.summaries_.ids[i] for i in largest]
    np.testing.assert_allclose([r["weight"] for r in prov], rows[largest], atol=2e-6)


def test_stack_weights_come_from_validation_inside_the_index(gen, index):
    assert gen.cv_["n_tasks"] == len(index)
    assert gen.cv_["stack"] <= min(gen.cv_["candidates"].values()) + 1e-9
    assert all(w >= 0 for part in ("baseline", "slopes") for w in gen.stack_[part].values())
    assert set(gen.stack_["baseline"]) == set(gen.stack_["slopes"]) == set(gen.cv_["candidates"])


def test_the_stack_anchor_averages_when_few_tasks_validate_and_chooses_when_many_do(
    gen, family
):
    """The stack is pulled towards how often each candidate wins under the Bayesian bootstrap of
    the held-out tasks: with 8 tasks several candidates share it; with 120, a candidate that
    validates clearly worse (pooled, 0.10 nats behind) gets none of it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = TaskIndex.build(family.take(range(8)), embedder="hashing", progress=False)
        few = StatisticalGenerator().fit(small, progress=False).cv_["anchor"]
    many = gen.cv_["anchor"]
    for anchor in (few, many):
        assert set(anchor) == set(CANDIDATES) and abs(sum(anchor.values()) - 1) < 1e-9
    assert sum(w > 0.1 for w in few.values()) >= 2 and max(few.values()) < 0.9
    assert gen.cv_["candidates"]["pooled"] > min(gen.cv_["candidates"].values()) + 0.05
    assert many["pooled"] == 0.0


def test_targets_outside_the_index_cannot_move_the_stack(index, split):
    """Fitting sees only the index: the held-out tasks' labels change nothing."""
    a = StatisticalGenerator(cv_folds=3).fit(index, progress=False)
    b = StatisticalGenerator(cv_folds=3).fit(index, progress=False)
    assert a.stack_ == b.stack_ and a.cv_ == b.cv_
    p_a = a.generate_params(split[1][0].description)
    np.testing.assert_allclose(p_a.vector, b.generate_params(split[1][0].description).vector)


def test_coefficient_intervals_cover_the_truth_at_their_nominal_rate(gen, index, split):
    """90% intervals of the generated slopes against the true slopes of 40 held-out tasks."""
    z = norm.ppf(0.95)
    hits = []
    for t in split[1]:
        p = gen.generate_params(t.description)
        scale = np.array([index.schema.scales_[n] for n in index.schema.names])
        true_slopes = t.true_params.vector[1:] * scale  # the index standardises each feature
        lo, hi = p.vector[1:] - z * p.std[1:], p.vector[1:] + z * p.std[1:]
        hits.extend((lo <= true_slopes) & (true_slopes <= hi))
    coverage = float(np.mean(hits))
    assert 0.75 <= coverage <= 0.99, coverage


def test_exclusions_refit_without_the_excluded_tasks(gen, index):
    ids = index.ids
    dropped = ids[:5]
    desc = index.record(ids[0])["description"]
    with_ex = gen.generate_params(desc, exclude=dropped)
    assert with_ex.metadata["excluded_from_fit"] == 5
    assert not {r["task_id"] for r in with_ex.metadata["provenance"]} & set(dropped)
    plain = gen.generate_params(desc)
    assert not np.allclose(with_ex.vector, plain.vector)
    # the same exclusion as a predicate gives the same model
    pred = gen.generate_params(desc, exclude=lambda rec: rec["task_id"] in set(dropped))
    np.testing.assert_allclose(pred.vector, with_ex.vector)


def test_save_load_round_trip_and_damage(gen, index, tmp_path, split):
    path = gen.save(tmp_path / "g")
    back = StatisticalGenerator.load(path)
    q = split[1][2].description
    a, b = gen.generate_params(q), back.generate_params(q, index=index)
    np.testing.assert_allclose(b.vector, a.vector, atol=1e-10)
    np.testing.assert_allclose(b.std, a.std, atol=1e-10)
    # the errors' correlations (one-hot levels move together) come back too
    assert a.correlation is not None and a.correlation.shape == (len(a), len(a))
    np.testing.assert_allclose(b.correlation, a.correlation, atol=1e-10)
    assert back.stack_ == gen.stack_
    (path / "arrays.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        StatisticalGenerator.load(path)


def test_bad_configuration_and_misuse(index):
    with pytest.raises(ValidationError, match="candidates must be a non-empty subset"):
        StatisticalConfig(candidates=("magic",))
    with pytest.raises(ValidationError, match="each named once"):
        StatisticalConfig(candidates=("text-glmm", "text-glmm"))
    with pytest.raises(ValidationError, match="cv_folds must be an integer >= 2, got 1"):
        StatisticalConfig(cv_folds=1)
    with pytest.raises(ValidationError, match="prior_sd must be a number > 0, got 0"):
        StatisticalConfig(prior_sd=0)
    with pytest.raises(ValidationError, match="not fitted"):
        StatisticalGenerator().generate_params("x", index)
    bare = TaskIndex.build(
        datasets.synthetic_family(n_tasks=6, n_features=2, seed=0),
        embedder="hashing",
        progress=False,
        keep_tasks=False,
    )
    with pytest.raises(ValidationError, match="holds no task rows"):
        StatisticalGenerator().fit(bare, progress=False)


def test_an_index_of_another_layout_is_refused(gen):
    other = TaskIndex.build(
        datasets.synthetic_family(n_tasks=8, n_features=2, seed=0),
        embedder="hashing",
        progress=False,
    )
    with pytest.raises(ValidationError, match="does not match the generator"):
        gen.generate_params("x", other)


def test_an_index_too_small_to_validate_gives_the_pooled_model():
    fam = datasets.synthetic_family(n_tasks=2, n_features=2, seed=3, rows=(80, 120))
    idx = TaskIndex.build(fam, embedder="hashing", progress=False)
    # a user is told, not only cv_: every description will get the same model
    with pytest.warns(DataWarning, match="every description gets the pooled model of the 2 task"):
        g = StatisticalGenerator().fit(idx, progress=False)
    assert g.stack_ == {"shift": 0.0, "baseline": {"pooled": 1.0}, "slopes": {"pooled": 1.0}}
    assert "only 2 indexed task(s)" in g.cv_["note"]
    p = g.generate_params("anything at all")
    np.testing.assert_allclose(p.vector, g.pooled_, atol=1e-9)


def test_intervals_never_narrower_than_the_pooled_models_own_sampling_error():
    """Tasks that agree leave no between-task variance, but the pooled estimate still has its
    sampling error (an outside user saw 95% CIs of +-0.0005 from five 150-row tasks)."""
    rng = np.random.default_rng(4)
    tasks = []
    for i in range(5):
        X = pd.DataFrame({"age": rng.normal(60, 10, 150), "lactate": rng.gamma(2, 1, 150)})
        logit = -0.5 + 0.04 * (X["age"] - 60) + 0.5 * (X["lactate"] - 2)
        y = (rng.random(150) < 1 / (1 + np.exp(-logit))).astype(int)
        tasks.append(Task(f"t{i}", f"Predict ICU transfer in ward {i} of one hospital", X, y))
    idx = TaskIndex.build(TaskCollection(tasks), embedder="hashing", progress=False)
    g = StatisticalGenerator().fit(idx, progress=False)
    p = g.generate_params("Predict ICU transfer in a new ward of the same hospital")
    assert np.all(g.pooled_var_ > 0)
    assert np.all(p.std[1:] >= np.sqrt(g.pooled_var_[1:]) - 1e-12)
    assert np.all(p.std > 0.02)  # 750 rows cannot pin a log-odds coefficient to +-0.0005


def test_a_description_of_words_the_index_never_saw_gets_intervals_no_narrower(gen, index, split):
    """Words the index does not know carry unknown effects, not known zero effects: a
    description made of them is at least as uncertain as one the index knows (an outside user
    saw slope SDs of 0.13 for "zebra quantum violin harbour" against 0.2-0.25 in domain)."""
    known = [gen.generate_params(t.description, index).std for t in list(split[1])[:8]]
    for foreign in ("zebra quantum violin harbour", "Predict neonatal sepsis in preterm infants"):
        std = gen.generate_params(foreign, index).std
        assert np.all(std[1:] >= np.median([s[1:] for s in known], axis=0)), foreign


def test_exclude_refits_the_pooled_model_without_the_excluded_tasks():
    """Excluded tasks leave the pooled model too: it was fitted on every index task's rows, so
    keeping it would let `exclude=leak_free(target)` leak the target's own patients. Half the
    wards have a strong positive lactate effect, half a negative one; excluding the positive
    half must turn the generated (pooled-only) effect negative."""
    rng = np.random.default_rng(0)
    tasks = []
    for i in range(12):
        X = pd.DataFrame({"lactate": rng.normal(size=300)})
        beta = 2.0 if i < 6 else -2.0
        y = (rng.random(300) < 1 / (1 + np.exp(-beta * X["lactate"].to_numpy()))).astype(int)
        tasks.append(Task(f"t{i}", f"Predict ICU transfer in ward {i} of one hospital", X, y))
    index = TaskIndex.build(TaskCollection(tasks), embedder="hashing", progress=False)
    gen = StatisticalGenerator(candidates=("pooled",)).fit(index, progress=False)
    query = "Predict ICU transfer in a new ward"
    everyone = gen.generate_params(query).as_dict()["lactate"]
    with pytest.warns(ExcludedAfterFitWarning, match=r"6 task\(s\) this StatisticalGenerator was "
                      r"fitted on are left out \(t0, t1, t2, \.\.\.\): the pooled model and the "
                      r"meta-regression are refitted without them, but the stack weights.*fit the "
                      r"generator on an index built without them"):
        without = gen.generate_params(query, exclude=[f"t{i}" for i in range(6)]).as_dict()["lactate"]
    assert abs(everyone) < 0.3 and without < -0.8, (everyone, without)
    assert gen.generate_params(query).as_dict()["lactate"] == everyone  # the cache is per set

    bare = TaskIndex.build(
        TaskCollection(tasks), embedder="hashing", progress=False, keep_tasks=False
    )
    with pytest.raises(ValidationError, match="exclude= refits the pooled model"):
        gen.generate_params(query, bare, exclude=["t0"])


@pytest.mark.parametrize("bad", ["no", 0, None])
def test_uncertainty_must_be_a_bool(bad):
    """ "no" is truthy: it would silently mean True."""
    tasks = datasets.synthetic_family(n_tasks=8, n_features=2, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    gen = StatisticalGenerator().fit(index, progress=False)
    with pytest.raises(ValidationError, match="uncertainty must be True or False, got"):
        gen.generate_params(tasks.descriptions[0], uncertainty=bad)
    assert gen.generate_params(tasks.descriptions[0], uncertainty=False).std is None


@pytest.mark.parametrize("other_hospital", [False, True], ids=["one-cohort", "plus-one-task"])
def test_one_cohort_index_is_validated_on_held_out_patients_and_follows_the_outcome(
    other_hospital,
):
    """One cohort's subgroups and two outcomes: every task shares patients with another, so
    no task can be held out leak-free. The generator used to give the pooled model, which
    mixes the two outcomes, for every description. It now holds out patients: the stack is
    validated, no held-out patient shaped its own prediction, and a rare outcome's model
    predicts a lower risk than a common one's. One unrelated task more (another hospital)
    must not switch back to leave-task-out, where each task would be validated against the
    3 tasks that share none of its patients: an outside user saw the rare outcome's risk
    generated 4 times too high that way."""
    from ragim.generate.statistical import patient_halves

    rng = np.random.default_rng(7)
    n = 1600
    X = pd.DataFrame({"age": rng.normal(size=n), "male": rng.integers(0, 2, n).astype(float)})
    ids = [f"{i:05d}" for i in range(n)]  # ids with leading zeros, as hospitals write them
    z = 0.8 * X["age"].to_numpy() + 0.5 * X["male"].to_numpy()
    outcomes = {
        "any coronary disease": (rng.random(n) < 1 / (1 + np.exp(-(0.6 + z)))).astype(int),
        "multivessel disease": (rng.random(n) < 1 / (1 + np.exp(-(-2.2 + z)))).astype(int),
    }
    groups = {
        "all patients": np.ones(n, bool),
        "men": X["male"].to_numpy() == 1,
        "women": X["male"].to_numpy() == 0,
        "older patients": X["age"].to_numpy() > 0,
        "younger patients": X["age"].to_numpy() <= 0,
    }
    tasks = []
    for o, y in outcomes.items():
        for g, m in groups.items():
            rows = np.flatnonzero(m)
            tasks.append(
                Task(
                    f"{o[:3]}-{g[:5]}",
                    f"Risk of {o} at angiography in {g} of one hospital",
                    X.iloc[rows].reset_index(drop=True),
                    y[rows],
                    {"patient_ids": [ids[i] for i in rows]},
                )
            )
    n_tasks = len(tasks)
    if other_hospital:
        Xo = pd.DataFrame({"age": rng.normal(size=400), "male": rng.integers(0, 2, 400) * 1.0})
        yo = (rng.random(400) < 1 / (1 + np.exp(-(0.6 + 0.8 * Xo["age"].to_numpy())))).astype(int)
        tasks.append(Task("other", "Risk of any coronary disease at another hospital", Xo, yo))
    index = TaskIndex.build(TaskCollection(tasks), embedder="hashing", progress=False)
    gen = StatisticalGenerator().fit(index, progress=False)
    assert gen.cv_["protocol"] == "leave-patients-out" and gen.cv_["n_tasks"] == len(tasks)
    assert gen.heldout_params_ == {}  # not leak-free on the tasks' own rows
    # a patient's half is the same in every task that holds it: no held-out patient is in
    # any task's training half
    a_ids = set().union(
        *({t.metadata["patient_ids"][i] for i in patient_halves(t, 0)[0]} for t in tasks[:n_tasks])
    )
    b_ids = set().union(
        *({t.metadata["patient_ids"][i] for i in patient_halves(t, 0)[1]} for t in tasks[:n_tasks])
    )
    assert a_ids.isdisjoint(b_ids) and len(a_ids | b_ids) == n
    common = gen.generate_params("Risk of any coronary disease at angiography in men")
    rare = gen.generate_params("Risk of multivessel disease at angiography in men")
    assert common.intercept - rare.intercept > 1.0, (common.intercept, rare.intercept)
    # provenance weights are signed shares (a negative one is a contrast): the rare outcome's
    # own tasks carry the weight, the common outcome's pull away or barely count
    prov = rare.metadata["provenance"]
    assert sum(abs(r["weight"]) for r in prov) <= 1 + 1e-6
    by_outcome = {
        o: sum(r["weight"] for r in prov if r["task_id"].startswith(o)) for o in ("mul", "any")
    }
    assert by_outcome["mul"] > max(by_outcome["any"], 0), by_outcome
    # the stack beats the pooled model on the held-out patients
    assert gen.cv_["stack"] < gen.cv_["candidates"]["pooled"]


def _unshared_index(n_tasks: int, shared_word_in: int = 0):
    """Tasks whose descriptions share no word, except ``shared_word_in`` of them that share one."""
    fam = datasets.synthetic_family(n_tasks=n_tasks, n_features=2, seed=9, rows=(60, 100))
    tasks = [Task(t.task_id, f"zz{i}a qq{i}b" + (" shared" if i < shared_word_in else ""), t.X, t.y)
             for i, t in enumerate(fam)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TaskIndex.build(TaskCollection(tasks), embedder="hashing", progress=False)


def test_candidates_that_cannot_be_fitted_are_named_never_a_silent_zero_model():
    idx = _unshared_index(12)
    with pytest.raises(ValidationError, match="none of the candidates"):
        StatisticalGenerator(candidates=("text-glmm",)).fit(idx, progress=False)
    with pytest.warns(DataWarning, match=r"\['text-glmm'\] could not be fitted"):
        g = StatisticalGenerator(candidates=("pooled", "text-glmm")).fit(idx, progress=False)
    assert "text-glmm" not in g.cv_["candidates"]
    small = _unshared_index(3, shared_word_in=3)  # too few tasks to validate: the pooled model
    with pytest.warns(DataWarning, match="pooled model"):
        g = StatisticalGenerator(candidates=("text-glmm",)).fit(small, progress=False)
    np.testing.assert_allclose(g.generate_params("zz0a shared").vector, g.pooled_, atol=1e-9)


def test_a_stacked_candidate_lost_to_exclusions_counts_as_the_pooled_model():
    idx = _unshared_index(12, shared_word_in=6)  # only tasks 0-5 share an n-gram
    g = StatisticalGenerator(candidates=("text-glmm",)).fit(idx, progress=False)
    assert set(g.stack_["baseline"]) == {"text-glmm"}
    ids = list(idx.ids)
    p = g.generate_params("zz0a shared", exclude=ids[:6])  # no shared n-gram is left
    assert p.metadata["unavailable"] == ["text-glmm"]
    T = centring(g.center_)
    w, u = g.stack_["slopes"]["text-glmm"], g.stack_["baseline"]["text-glmm"]
    pooled_c = g._fitted_without(frozenset(ids[:6]), idx).pooled  # centred already
    p_c = T @ p.vector
    np.testing.assert_allclose(p_c[1:], w * pooled_c[1:], atol=1e-8)  # the pooled slopes, as stacked
    assert p_c[0] == pytest.approx(g.stack_["shift"] + u * pooled_c[0], abs=1e-8)


# ------------------------------------------------------------------ the tasks too small to index
def _index_with_small_tasks(small_rate: float, n_small: int = 30, patients: bool = False):
    """20 fittable tasks with an event rate near 30%, and ``n_small`` 4-row tasks of one class
    (too small to fit, so the index skips them) whose event rate is ``small_rate``: as on the
    procedure family, where the tasks that can be fitted are a biased sample of the small ones."""
    rng = np.random.default_rng(3)
    tasks = []
    for i in range(20 + n_small):
        n = 200 if i < 20 else 4
        X = pd.DataFrame({"age": rng.normal(size=n), "bmi": rng.normal(size=n)})
        rate = 0.3 if i < 20 else small_rate
        y = (rng.random(n) < 1 / (1 + np.exp(-(np.log(rate / (1 - rate)) + X["age"])))).astype(int)
        if i >= 20:
            y = np.full(n, int(rng.random() < small_rate))
        meta = {"patient_ids": [f"p{j}" for j in range(n)]} if patients else {}
        tasks.append(Task(f"t{i:02d}", f"surgery ward {i % 5} unit {i % 3} outcome", X, y, meta))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TaskIndex.build(TaskCollection(tasks), embedder="hashing", progress=False)


def test_the_stack_is_validated_on_the_tasks_too_small_to_index_too():
    """The skipped tasks' rows are held-out cases of the stack: when small tasks have far more
    events than the fittable ones, the stacked baseline risk moves towards theirs; without them
    (``validate_skipped=False``, or tasks sharing patients with indexed ones) it does not."""
    idx = _index_with_small_tasks(0.9)
    assert len(idx) == 20 and len(idx.skipped) == 30
    assert sorted(idx.skipped_tasks.ids) == sorted(idx.skipped)
    cfg = {"candidates": ("pooled", "text"), "adaptation_tasks": 0}
    on = StatisticalGenerator(**cfg).fit(idx, progress=False)
    off = StatisticalGenerator(**cfg, validate_skipped=False).fit(idx, progress=False)
    assert on.cv_["n_skipped_tasks"] == 30 and off.cv_["n_skipped_tasks"] == 0
    assert on.cv_["n_tasks"] == off.cv_["n_tasks"] + 30
    risk = {g: g.generate_params("surgery ward 1 unit 1 outcome").vector[0] for g in (on, off)}
    assert risk[on] > risk[off] + 0.3, risk
    shared = _index_with_small_tasks(0.9, patients=True)  # p0.. in every task: all overlap
    g = StatisticalGenerator(**cfg).fit(shared, progress=False)
    assert g.cv_.get("n_skipped_tasks", 0) == 0


def test_skipped_tasks_are_saved_with_the_index_and_dropped_when_tasks_are_added(tmp_path):
    idx = _index_with_small_tasks(0.5, n_small=6)
    again = TaskIndex.load(idx.save(tmp_path / "idx"))
    assert again.skipped_tasks.ids == idx.skipped_tasks.ids
    pd.testing.assert_frame_equal(again.skipped_tasks[0].X, idx.skipped_tasks[0].X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again.add([idx.tasks[0].__class__("new", "surgery ward 9", idx.tasks[0].X, idx.tasks[0].y)])
    assert again.tasks is None and again.skipped_tasks is None
    bare = TaskIndex.load(idx.save(tmp_path / "bare", include_tasks=False))
    assert bare.skipped_tasks is None


def test_a_target_among_the_skipped_tasks_is_a_leak():
    from ragim.evaluate import assert_leak_free

    idx = _index_with_small_tasks(0.5, n_small=6)
    target = idx.skipped_tasks[0]
    with pytest.raises(ValidationError, match="index.skipped_tasks"):
        assert_leak_free(idx, [target])


# ------------------------------------------------------------------ the index changed since fit
@pytest.fixture()
def small():
    family = datasets.synthetic_family(n_tasks=30, n_features=3, seed=2, rows=(40, 300))
    index = TaskIndex.build(family, embedder="hashing", progress=False)
    return index, StatisticalGenerator().fit(index, progress=False)


def test_a_task_removed_from_the_index_after_fit_no_longer_shapes_the_generated_model(small, tmp_path):
    """After index.remove([T]) a generator fitted before still listed T in its provenance and
    returned the very same model (mgus2: the removed target shaped its own "zero-shot" model).
    It now leaves T out as exclude=[T] does."""
    index, gen = small
    target = index.ids[3]
    desc = index.record(target)["description"]
    assert target in {p["task_id"] for p in gen.generate_params(desc).metadata["provenance"]}
    held_out = gen.generate_params(desc, exclude=[target])
    path = gen.save(tmp_path / "g")
    index.remove([target])
    after = gen.generate_params(desc, index=index)
    assert target not in {p["task_id"] for p in after.metadata["provenance"]}
    assert after.metadata["excluded_from_fit"] == 1
    np.testing.assert_allclose(after.vector, held_out.vector)
    # a saved generator keeps the ids of the tasks it was fitted on, and checks them too
    back = StatisticalGenerator.load(path)
    assert back.fitted_ids_ == gen.fitted_ids_ == [*index.ids[:3], target, *index.ids[3:]]
    np.testing.assert_allclose(back.generate_params(desc, index=index).vector, held_out.vector)


def test_tasks_added_after_fit_are_named_and_older_artifacts_load_unchecked(small, tmp_path):
    import json

    from conftest import reseal

    index, gen = small
    desc = index.record(index.ids[0])["description"]
    path = gen.save(tmp_path / "old")
    new = index.tasks[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.add([Task("new-task", "surgical ward 9 readmission", new.X, new.y)])
    with pytest.warns(DataWarning, match=r"the index holds 1 task\(s\) added since this StatisticalGenerator was fitted \(new-task\); it was not fitted on them"):
        gen.generate_params(desc, index=index)
    # a generator saved before the ids were kept loads, and its index is not checked
    state = json.loads((path / "state.json").read_text())
    del state["index_ids"]
    (path / "state.json").write_text(json.dumps(state))
    reseal(path)
    old = StatisticalGenerator.load(path)
    assert old.fitted_ids_ is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert old.generate_params(desc, index=index).metadata.get("excluded_from_fit") is None


def test_a_task_replaced_under_the_same_id_is_not_generated_from_its_old_model(small, tmp_path):
    """index.remove([T]) then index.add() of a new T (same id, other data): a generator fitted
    before kept T's old model, bit-identical output and no warning, also after save/load (it
    compared ids only). It now compares a hash of each task's parameters: T counts as removed
    (its old model left out) and added (named)."""
    index, gen = small
    target = index.ids[3]
    desc = index.record(target)["description"]
    assert gen.fitted_digests_ == index.task_digests() and len(gen.fitted_digests_) == 30
    # an unchanged index, saved and loaded, is unchanged to a saved and loaded generator
    back = StatisticalGenerator.load(gen.save(tmp_path / "g"))
    assert back.fitted_digests_ == gen.fitted_digests_
    assert back.index_changes(TaskIndex.load(index.save(tmp_path / "same"))) == ([], [])
    old = index.tasks[target]
    index.remove([target])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.add([Task(target, old.description, old.X, 1 - np.asarray(old.y), dict(old.metadata))])
    assert index.task_digests()[target] != gen.fitted_digests_[target]
    assert gen.index_changes(index) == ([target], [target])
    # left out as a removed task is: the refit needs the rows add() drops, so it is refused
    with (
        pytest.warns(DataWarning, match=rf"1 task\(s\) changed since this StatisticalGenerator was fitted \({target}\); it was not fitted on them \(their old models are left out\)"),
        pytest.raises(ValidationError, match="changed in, the index since fit"),
    ):
        gen.generate_params(desc, index=index)
    saved = TaskIndex.load(index.save(tmp_path / "idx"))
    for g in (back, StatisticalGenerator.load(gen.save(tmp_path / "g2"))):
        assert g.index_changes(saved) == ([target], [target])
        with pytest.warns(DataWarning, match="changed since"), pytest.raises(ValidationError):
            g.generate_params(desc, index=index)


def test_generated_gam_marks_bins_no_indexed_patient_fell_in(tmp_path):
    """A bin no patient of any indexed task fell in (here: bins shared with a wider population)
    got a generated score and a 95% CI (-0.146, SD 1.0, beside
    -0.9 for the bin of 0) while every task's own GAM marks it not estimable. Generated models
    now carry it in constant_terms (not estimable, no CI) with the nearest filled bin's score,
    as fitted GAMs do; saved and loaded generators keep it."""
    from ragim.data_checks import never_varied_terms
    from ragim.explain import explain_params
    from ragim.schema import Feature, FeatureSchema

    rng = np.random.default_rng(0)
    tasks = []
    for i in range(8):
        X = pd.DataFrame({
            "age": rng.normal(55, 10, 150),
            "vessels": rng.choice([0.0, 1.0, 2.0, 3.0], 150, p=[0.55, 0.25, 0.12, 0.08]),
        })
        y = (rng.random(150) < 1 / (1 + np.exp(-(X.vessels - 1 + (X.age - 55) / 20)))).astype(int)
        sex = "women" if i % 2 else "men"
        tasks.append(Task(f"t{i}", f"Predict coronary disease at hospital {i} in {sex}", X, y))
    # bins shared with a wider population: vessels -1 (a bin of its own) is in no task's rows
    wide = pd.DataFrame({"age": rng.normal(55, 10, 50), "vessels": [-1.0, 0.0, 1.0, 2.0, 3.0] * 10})
    schema = FeatureSchema([Feature("age", "continuous"), Feature("vessels", "continuous")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = TaskIndex.build(
            TaskCollection(tasks), model="gam", embedder="hashing", progress=False,
            schema=schema.fit(wide),
        )
        gen = StatisticalGenerator().fit(index)
    low, zero = "vessels[-inf..0]", "vessels[0..1]"
    assert all(low in index.record(t)["constant_terms"] for t in index.ids)
    assert gen.never_varied_ == never_varied_terms(index.record(t)["constant_terms"] for t in index.ids)
    assert gen.never_varied_[low] == 0.0
    query = "Predict coronary disease at hospital 9 in women"
    p = gen.generate_params(query, index)
    assert p.metadata["constant_terms"][low] == 0.0
    assert p[low] == p[zero] and p.std[p.names.index(low)] == p.std[p.names.index(zero)]
    row = explain_params(p).to_frame().set_index("term").loc[low]
    assert row["not_estimable"].startswith("not estimable: no patient in this bin")
    assert np.isnan(row["std"]) and np.isnan(row["ci_low"])
    gen.save(tmp_path / "gen")
    loaded = StatisticalGenerator.load(tmp_path / "gen")
    assert loaded.never_varied_ == gen.never_varied_
    np.testing.assert_allclose(loaded.generate_params(query, index).vector, p.vector)
