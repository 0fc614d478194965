"""rag-im-2024: the original RAG-IM architecture as an opt-in baseline."""

import numpy as np
import pytest

from ragim import TaskIndex, datasets
from ragim.errors import ArtifactError, ValidationError
from ragim.generate import GENERATORS
from ragim.generate.ragim2024 import RagIm2024Config, RagIm2024Generator
from ragim.index import leak_free
from ragim.models import LogisticModel

SMALL = dict(hidden=32, heads=4, min_steps=60, seed=0)


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=40, n_features=4, seed=3)


@pytest.fixture(scope="module")
def index(family):
    return TaskIndex.build(family, embedder="hashing:128", progress=False)


@pytest.fixture(scope="module")
def generator(index):
    return RagIm2024Generator(**SMALL).fit(index, progress=False)


def test_registered_under_its_name():
    assert GENERATORS["rag-im-2024"] is RagIm2024Generator


def test_architecture_is_the_papers():
    cfg = RagIm2024Config()
    assert (cfg.k, cfg.hidden, cfg.heads, cfg.blocks, cfg.gate_rows) == (10, 512, 4, 3, 50)
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.epochs, cfg.draws_per_task) == (
        2e-4,
        0.01,
        1024,
        5,
        10,
    )
    from ragim.generate.ragim2024 import RagIm2024Net

    net = RagIm2024Net(n_params=5, emb_dim=8, cfg=RagIm2024Config(hidden=16))
    assert len(net.attn) == 3 and net.k_in.in_features == 5 + 8 and net.v_in.in_features == 5
    assert (
        net.q_in.in_features == 8 and net.out.out_features == 5 and float(net.gate.detach()) == 0.5
    )


def test_trains_on_row_level_cross_entropy(generator, index):
    # 40 tasks x 10 draws fit in one batch per epoch: 5 epochs are 5 steps, the floor makes 60
    assert generator.n_steps_ == 60 and generator.n_train_tasks_ == 40
    assert [h["step"] for h in generator.history_] == [10, 20, 30, 40, 50, 60]
    assert generator.history_[-1]["loss"] < generator.history_[0]["loss"]
    assert generator.index_ is index


def test_generates_a_model_with_provenance(generator, index, family):
    target = index.record(family.ids[5])
    model = generator.generate(target["description"], exclude=leak_free(target), k=6)
    assert isinstance(model, LogisticModel)
    params = model.to_params()
    assert (
        params.metadata["generator"] == "rag-im-2024" and params.metadata["own_model_used"] is False
    )
    assert params.std is None  # the paper's architecture gives no intervals
    prov = model.provenance
    assert len(prov) == 6 and family.ids[5] not in {p["task_id"] for p in prov}
    assert np.isclose(sum(p["weight"] for p in prov), 1.0, atol=1e-4)
    proba = model.predict_proba(family[5].X)[:, 1]
    assert np.all((proba > 0) & (proba < 1))


def test_batch_generation_matches_single(generator, index, family):
    descs = family.descriptions[:3]
    batch = generator.generate_params(descs, index)
    for d, b in zip(descs, batch, strict=True):
        assert np.allclose(generator.generate_params(d, index).vector, b.vector, atol=1e-5)


def test_own_model_gate_is_used_only_from_50_rows(generator, index, family):
    d = family.descriptions[2]
    zero = generator.generate_params(d, index).vector
    own = index.params(family.ids[2])
    below = generator.generate_params(d, index, own=own, own_rows=49)
    at = generator.generate_params(d, index, own=own, own_rows=50)
    g = float(generator.net_.gate.detach())
    assert np.array_equal(below.vector, zero) and below.metadata["own_model_used"] is False
    assert at.metadata["own_model_used"] is True
    # zero-shot the own slot is zero: theta = g W a; with an own model: g W a + (1 - g) own
    assert np.allclose(at.vector - zero, (1 - g) * own.vector, atol=1e-5)
    # provenance: the neighbours shaped g of it, the own model (no retrieved task) 1 - g
    assert sum(r["weight"] for r in below.metadata["provenance"]) == pytest.approx(1, abs=1e-4)
    assert below.metadata["own_model_weight"] == 0.0
    assert sum(r["weight"] for r in at.metadata["provenance"]) == pytest.approx(g, abs=1e-4)
    assert at.metadata["own_model_weight"] == pytest.approx(1 - g, abs=1e-6)
    with pytest.raises(ValidationError, match="own_rows was given without own="):
        generator.generate_params(d, index, own_rows=60)
    message = r"own_rows 0 must be an integer >= 0 \(rows the own model was fitted on\), got -1"
    with pytest.raises(ValidationError, match=message):
        generator.generate_params(d, index, own=own, own_rows=-1)


def test_training_episodes_are_leak_free():
    """Each training target's neighbours exclude the target and every task sharing its patients."""
    tasks = datasets.heart_disease()
    idx = TaskIndex.build(tasks, embedder="hashing:64", progress=False)
    gen = RagIm2024Generator(hidden=16, min_steps=2).fit(idx, progress=False)
    assert set(gen.train_neighbors_) == set(idx.ids) - set(gen.skipped_episodes_)
    for tid, nbs in gen.train_neighbors_.items():
        assert nbs and tid not in nbs
        pids = set(tasks[tid].metadata["patient_ids"])
        assert all(pids.isdisjoint(tasks[n].metadata["patient_ids"]) for n in nbs), tid


def test_save_load_round_trip(generator, index, family, tmp_path):
    path = generator.save(tmp_path / "gen")
    again = RagIm2024Generator.load(path)
    assert again.config == generator.config and again.history_ == generator.history_
    descs = family.descriptions[:4]
    for a, b in zip(
        again.generate_params(descs, index), generator.generate_params(descs, index), strict=True
    ):
        assert np.array_equal(a.vector, b.vector)
        assert a.metadata["provenance"] == b.metadata["provenance"]
    (path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ArtifactError, match="checksum mismatch for 'model.safetensors'"):
        RagIm2024Generator.load(path)


def test_load_refuses_another_generator(index, tmp_path):
    from ragim import AttentionGenerator

    path = (
        AttentionGenerator(max_epochs=1, n_bootstrap=2)
        .fit(index, progress=False)
        .save(tmp_path / "att")
    )
    with pytest.raises(ArtifactError):
        RagIm2024Generator.load(path)


def test_errors(index, family):
    with pytest.raises(ValidationError, match="not fitted"):
        RagIm2024Generator().generate("x", index=index)
    with pytest.raises(ValidationError, match=r"hidden \(30\) must be divisible by heads \(4\)"):
        RagIm2024Config(hidden=30)
    with pytest.raises(ValidationError, match=r"blocks must be an integer in \[1, 256\]"):
        RagIm2024Config(blocks=0)
    no_rows = TaskIndex.build(
        family.head(10), embedder="hashing:64", keep_tasks=False, progress=False
    )
    with pytest.raises(ValidationError, match="holds no task rows"):
        RagIm2024Generator().fit(no_rows)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k_is_refused(generator, index, k):
    with pytest.raises(ValidationError, match=f"k must be an integer >= 1 or None .*got {k!r}"):
        generator.generate_params("Predict readmission", index, k=k)


@pytest.mark.slow  # the paper's defaults (hidden 512, 200 steps) in each of 2 folds: about 30 s
def test_evaluation_method_is_opt_in_and_zero_shot():
    from ragim import evaluate as ev

    assert "rag-im-2024" in ev.METHODS and "rag-im-2024" not in ev.DEFAULT_METHODS
    tasks = datasets.synthetic_family(n_tasks=16, n_features=3, seed=0)
    df = ev.zero_shot(
        tasks, methods=["rag-im-2024", "pooled"], folds=2, embedder="hashing", progress=False
    )
    mine = df[df["method"] == "rag-im-2024"]
    assert len(mine) == 16 and set(mine["status"]) == {"ok"} and set(mine["k_shot"]) == {0}
    assert mine["log_loss"].notna().all() and mine["auroc"].between(0, 1).all()


def test_configs_from_dicts_and_bad_keywords_name_the_fields():
    from ragim.generate.attention import AttentionGenerator

    assert AttentionGenerator({"k": 3}).config.k == 3
    assert RagIm2024Generator({"hidden": 32}, k=4).config.hidden == 32
    with pytest.raises(TypeError, match=r"\['max_epoch'\]: not AttentionConfig fields .*'max_epochs'"):
        AttentionGenerator(max_epoch=3)
    with pytest.raises(ValidationError, match=r"unknown RagIm2024Config field\(s\) \['patience'\]"):
        RagIm2024Generator({"patience": 3})
    with pytest.raises(ValidationError, match="weight_decay must be a number >= 0, got -1"):
        RagIm2024Config(weight_decay=-1)


def test_names_moved_to_the_hypernetwork_module_still_import_with_a_warning():
    import ragim.generate.base as base
    from ragim.generate import hypernetwork

    with pytest.warns(DeprecationWarning, match="moved to ragim.generate.hypernetwork.SavedNet"):
        assert base.SavedNet is hypernetwork.SavedNet
    with pytest.raises(AttributeError):
        base.no_such_name  # noqa: B018


def test_an_index_that_lost_tasks_since_fit_is_refused(family, tmp_path):
    """The network learned from every task of its index: after index.remove([T]) it must be
    refitted, not used silently (a saved one remembers its tasks too)."""
    idx = TaskIndex.build(family.head(10), embedder="hashing:128", progress=False)
    gen = RagIm2024Generator(hidden=16, min_steps=2).fit(idx, progress=False)
    again = RagIm2024Generator.load(gen.save(tmp_path / "g"))
    assert again.fitted_ids_ == idx.ids
    idx.remove([idx.ids[0]])
    with pytest.raises(ValidationError, match=r"no longer holds 1 task\(s\) this RagIm2024Generator was fitted on"):
        again.generate_params(family[0].description, idx)
