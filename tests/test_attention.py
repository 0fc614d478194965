import numpy as np
import pytest

from ragim import AttentionGenerator, TaskIndex, datasets
from ragim.errors import ArtifactError, ValidationError
from ragim.generate.attention import AttentionConfig
from ragim.index import leak_free
from ragim.models import GAMModel, LogisticModel


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=60, n_features=5, seed=1)


@pytest.fixture(scope="module")
def index(family):
    return TaskIndex.build(family, embedder="hashing:128", progress=False)


@pytest.fixture(scope="module")
def generator(index):
    return AttentionGenerator(max_epochs=15, patience=15, seed=0).fit(index, progress=False)


def test_episodic_training_reduces_validation_loss(family):
    """Neighbours fitted with a strong penalty are shrunk; the paper-style mixture learns to undo it."""
    shrunk = TaskIndex.build(family, embedder="hashing:128", progress=False, C=0.05)
    gen = AttentionGenerator(max_epochs=40, patience=40, seed=0, base="none").fit(shrunk, progress=False)
    assert len(gen.history_) == 40
    assert gen.best_val_loss_ < gen.initial_val_loss_
    assert gen.history_[-1]["train_loss"] < gen.history_[0]["train_loss"]
    assert gen.n_val_tasks_ == 12 and gen.n_train_tasks_ == 48


def test_with_a_base_training_starts_from_the_base_and_never_ends_worse(index, family):
    """With base="statistical" the untrained network is the statistical generator's model, and
    early stopping on validation tasks keeps it unless moving away helps."""
    from ragim.generate.statistical import StatisticalGenerator

    stat = StatisticalGenerator(seed=0).fit(index, progress=False)
    gen = AttentionGenerator(max_epochs=6, patience=6, seed=0).fit(index, progress=False, base_generator=stat)
    assert gen.base_ is stat and gen.best_val_loss_ <= gen.initial_val_loss_
    fresh = AttentionGenerator(max_epochs=1, patience=1, seed=0, lr=1e-12).fit(index, progress=False,
                                                                                 base_generator=stat)
    target = family.descriptions[5]
    base = stat.generate_params(target)
    near = fresh.generate_params(target, uncertainty=False)
    # sigmoid(-4) of the way from the base to the mixture, plus a zero-initialised correction
    moved = np.abs(near.vector - base.vector) / (np.abs(base.vector) + 1.0)
    assert float(np.max(moved)) < 0.1 and near.metadata["base"]["generator"] == "statistical"


def test_generation_returns_valid_model_with_provenance(generator, index, family):
    target = index.record(family.ids[3])
    model = generator.generate(target["description"], exclude=leak_free(target), k=5)
    assert isinstance(model, LogisticModel)
    prov = model.provenance
    assert len(prov) >= 5 and family.ids[3] not in {p["task_id"] for p in prov}
    # the base model's tasks and the 5 neighbours attended to, each by its share
    base = generator.base_.generate_params(target["description"], exclude=leak_free(target))
    listed = {r["task_id"] for r in base.metadata["provenance"]}
    assert {p["task_id"] for p in prov} >= listed and len(prov) <= len(listed) + 5
    p = model.to_params()
    assert p.std is not None and np.all(p.std >= 0) and p.metadata["source"] == "generated"
    proba = model.predict_proba(family[3].X)[:, 1]
    assert np.all((proba > 0) & (proba < 1))


def test_batch_generation_matches_single(generator, index, family):
    descs = family.descriptions[:3]
    batch = generator.generate_params(descs, index, uncertainty=False)
    single = [generator.generate_params(d, index, uncertainty=False) for d in descs]
    for a, b in zip(batch, single, strict=True):
        assert np.allclose(a.vector, b.vector, atol=1e-6)


def test_zero_shot_beats_an_uninformed_model(generator, index, family):
    """Held-out tasks: the generated model's log-loss beats predicting the base rate."""
    from sklearn.metrics import log_loss

    gains = []
    for tid in family.ids[:20]:
        task = family[tid]
        if len(set(task.y)) < 2:
            continue
        p = generator.generate(task.description, exclude=leak_free(index.record(tid))).predict_proba(task.X)[:, 1]
        gains.append(log_loss(task.y, np.full(len(task.y), 0.5)) - log_loss(task.y, p))
    assert np.mean(gains) > 0


def test_save_load_round_trip(generator, index, family, tmp_path):
    path = generator.save(tmp_path / "gen")
    again = AttentionGenerator.load(path)
    d = family.descriptions[0]
    assert np.allclose(again.generate_params(d, index).vector, generator.generate_params(d, index).vector)
    (path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="checksum mismatch for 'model.safetensors'"):
        AttentionGenerator.load(path)


def test_gam_family(family):
    idx = TaskIndex.build(family.head(20), model="gam", embedder="hashing:64", progress=False)
    gen = AttentionGenerator(max_epochs=5, n_bootstrap=4).fit(idx, progress=False)
    model = gen.generate(family[0].description)
    assert isinstance(model, GAMModel) and len(model.to_params()) == 1 + len(idx.schema.gam_names)


def test_errors(index, family):
    with pytest.raises(ValidationError, match="not fitted"):
        AttentionGenerator().generate("x", index=index)
    with pytest.raises(ValidationError, match="hidden \\(30\\) must be divisible by heads \\(4\\)"):
        AttentionConfig(hidden=30)
    other = TaskIndex.build(family.head(10), embedder="hashing:64", keep_tasks=False, progress=False)
    with pytest.raises(ValidationError, match="holds no task rows"):
        AttentionGenerator().fit(other)


@pytest.mark.parametrize("k", [0, -2, 1.5, True])
def test_bad_k_is_refused_not_replaced_by_the_default(generator, index, k):
    with pytest.raises(ValidationError, match=f"k must be an integer >= 1 or None .*got {k!r}"):
        generator.generate_params("Predict readmission", index, k=k)


def test_provenance_weighs_the_base_and_the_neighbours_by_how_far_the_gate_moved(
    generator, index, family
):
    """The model is the base moved a share ``move`` towards the attention mixture, so each
    task's provenance weight is (1 - move) its weight in the base model's provenance plus
    move its attention weight. A gate that barely opens leaves the base's tasks in charge
    (an outside user saw one neighbour credited with 0.96 of a model the gate had moved 2%
    from the statistical base); a gate fully open gives the attention weights."""
    import torch

    target = index.record(family.ids[4])
    desc, ex = target["description"], leak_free(target)
    made = generator.base_.generate_params(desc, index, exclude=ex)
    base = {r["task_id"]: r["weight"] for r in made.metadata["provenance"]}
    gate = generator.net_.base_gate
    saved = gate.detach().clone()
    got = {}
    try:
        for name, value in (("shut", -30.0), ("open", 30.0), ("trained", None)):
            with torch.no_grad():
                gate.copy_(saved if value is None else torch.full_like(saved, value))
            p = generator.generate_params(desc, index, exclude=ex, k=5, uncertainty=False)
            weights = {r["task_id"]: r["weight"] for r in p.metadata["provenance"]}
            got[name] = (p.metadata["base"]["move"], weights)
    finally:
        with torch.no_grad():
            gate.copy_(saved)
    move, shut = got["shut"]
    assert move == 0.0 and shut == pytest.approx(base, abs=1e-6)
    move, attention = got["open"]  # the read-out's weights over the 5 neighbours
    assert move == 1.0 and len(attention) == 5 and family.ids[4] not in attention
    assert sum(attention.values()) == pytest.approx(1.0, abs=1e-4)
    assert all(w >= 0 for w in attention.values())
    move, trained = got["trained"]
    assert 0 < move < 1
    for tid in set(base) | set(attention):
        expected = (1 - move) * base.get(tid, 0.0) + move * attention.get(tid, 0.0)
        assert trained.get(tid, 0.0) == pytest.approx(expected, abs=1e-4), tid


def test_intervals_are_the_base_models_widened_by_the_move(generator, index, family):
    """With base="statistical" every SD is the base model's predictive SD plus the uncertainty
    of the learned move, in the index's domain and out of it: never narrower than the
    statistical generator's for the same query. An outside user saw 95% intervals of a few
    thousandths (the bootstrap spread of a move that barely leaves the base) where the
    statistical generator gave an odds ratio of 0.46 to 6.19."""
    target = index.record(family.ids[3])
    cases = [(target["description"], leak_free(target)), ("zebra quantum violin harbour", None)]
    for desc, exclude in cases:
        p = generator.generate_params(desc, index, exclude=exclude)
        base = generator.base_.generate_params(desc, index, exclude=exclude)
        assert np.all(p.std >= base.std * (1 - 1e-9)), (p.std, base.std)
        assert np.all((p.std >= 0.05) | (base.std < 0.05))  # no SD collapses below the base's
        assert p.correlation is not None and base.correlation is not None
        assert np.allclose(np.diag(p.correlation), 1.0)
    assert p.metadata["coverage"]["in_domain"] is False  # the second case is out of the domain


def test_an_unmoved_network_keeps_the_base_models_intervals(index, family):
    """A network that has not learned to move (lr ~ 0) gives the base model's SDs, not the
    near-zero spread of its neighbour bootstrap; with one neighbour there is nothing to
    resample and the SDs and correlations are exactly the base model's."""
    from ragim.generate.statistical import StatisticalGenerator

    stat = StatisticalGenerator(seed=0).fit(index, progress=False)
    gen = AttentionGenerator(max_epochs=1, patience=1, seed=0, lr=1e-12).fit(index, progress=False, base_generator=stat)
    target = index.record(family.ids[7])
    ex = leak_free(target)
    base = stat.generate_params(target["description"], index, exclude=ex)
    p = gen.generate_params(target["description"], index, exclude=ex)
    np.testing.assert_allclose(p.std, base.std, rtol=0.05)
    assert np.all(p.std >= base.std * (1 - 1e-9))
    one = gen.generate_params(target["description"], index, exclude=ex, k=1)
    np.testing.assert_allclose(one.std, base.std, rtol=1e-12)
    np.testing.assert_allclose(one.correlation, base.correlation, atol=1e-12)
    none = gen.generate_params(target["description"], index, exclude=ex, uncertainty=False)
    assert none.std is None and none.correlation is None


def test_without_a_base_there_is_no_interval(index, family):
    """base="none" has only the neighbours' point estimates, which say nothing of how far a new
    task departs from them: no SDs rather than their near-zero bootstrap spread, and the
    explanation shows no interval."""
    gen = AttentionGenerator(max_epochs=2, patience=2, seed=0, base="none").fit(index, progress=False)
    p = gen.generate_params(family.descriptions[0], index, uncertainty=True)
    assert p.std is None and p.correlation is None
    table = gen.generate(family.descriptions[0], index).explain().table()
    assert table["ci_low"].isna().all() and table["or_high"].isna().all()


def test_an_index_that_lost_tasks_since_fit_is_refused_and_added_ones_are_named(family, tmp_path):
    """After index.remove([T]) a fitted generator went on with a network trained on T's rows,
    silently; it learned from T, so only a refit can leave T out."""
    from ragim.errors import DataWarning

    idx = TaskIndex.build(family.head(12), embedder="hashing:64", progress=False)
    gen = AttentionGenerator(max_epochs=2, patience=2, seed=0, base="none").fit(idx, progress=False)
    again = AttentionGenerator.load(gen.save(tmp_path / "g"))
    assert again.fitted_ids_ == gen.fitted_ids_ == idx.ids
    target = idx.ids[2]
    idx.remove([target])
    for g in (gen, again):
        with pytest.raises(ValidationError, match=rf"the index no longer holds 1 task\(s\) this AttentionGenerator was fitted on \({target}\) and it learned from them; refit it"):
            g.generate(family[2].description, index=idx)
    grown = TaskIndex.build(family.head(12), embedder="hashing:64", progress=False)
    grown.add([family[12]])
    with pytest.warns(DataWarning, match=rf"1 task\(s\) added since this AttentionGenerator was fitted \({family.ids[12]}\)"):
        gen.generate_params(family[0].description, index=grown)
