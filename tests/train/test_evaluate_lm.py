"""The "ragim-lm" evaluation method: SFT per fold on the leak-free index, zero-shot generation."""

from __future__ import annotations

import numpy as np
import pytest

from ragim import datasets, evaluate

pytest.importorskip("trl")



def test_ragim_lm_is_registered_and_opt_in():
    assert "ragim-lm" in evaluate.METHODS and "ragim-lm" not in evaluate.DEFAULT_METHODS
    assert evaluate.METHODS["ragim-lm"].shots == "zero" and evaluate.METHODS["ragim-lm"].setup is not None


def test_zero_shot_with_the_tiny_lm(monkeypatch):
    import ragim.train.sft as sft_mod

    trained_on = []
    real = sft_mod.train_sft

    def spy(index, **kw):
        gen = real(index, **kw)
        trained_on.append((set(index.ids), gen))
        return gen

    monkeypatch.setattr(sft_mod, "train_sft", spy)
    tasks = datasets.synthetic_family(n_tasks=10, n_features=2, seed=0)
    df = evaluate.zero_shot(tasks, methods=["ragim-lm", "pooled"], folds=2, embedder="hashing", progress=False,
                            max_targets=2, lm_config={"base_model": "tiny", "max_steps": 1, "batch_size": 2, "k": 2,
                                                      "device": "cpu"})
    lm = df[df["method"] == "ragim-lm"]
    assert len(lm) == 2 and (lm["status"] == "ok").all() and (lm["k_shot"] == 0).all()
    assert np.isfinite(lm["log_loss"]).all() and lm["auroc"].between(0, 1).all()
    # one generator per fold, never trained on (or retrieving from) its fold's targets
    folds = df.attrs["folds"]
    assert len(trained_on) == len(folds)
    for (ids, gen), fold in zip(trained_on, folds, strict=True):
        assert ids == set(fold["index_ids"]) and not ids & set(fold["targets"])
        assert not set(gen.train_task_ids_ + gen.val_task_ids_) & set(fold["targets"])
        assert gen.config.base_model == "tiny" and gen.config.k == 2
    # each fold's note reports the SFT run and the generation time of its targets
    notes = [n for n in df.attrs["notes"] if n.startswith("ragim-lm fold")]
    assert len(notes) == len(folds)
    for note, (_, gen), fold in zip(notes, trained_on, folds, strict=True):
        assert f"SFT 1 steps in {gen.train_seconds_:.0f} s, {gen.n_trainable_params_:,} trainable" in note
        assert f"s per task ({len(fold['targets'])} tasks)" in note
    assert sorted(evaluate.summarize(df)["method"].unique()) == ["pooled", "ragim-lm"]


def test_generation_options_reach_the_generator(monkeypatch):
    from ragim.generate.lm import LMGenerator

    seen = []
    real = LMGenerator.generate_params

    def spy(self, query, index=None, **kw):
        seen.append(kw)
        return real(self, query, index, **kw)

    monkeypatch.setattr(LMGenerator, "generate_params", spy)
    tasks = datasets.synthetic_family(n_tasks=8, n_features=2, seed=1)
    df = evaluate.zero_shot(tasks, methods=["ragim-lm"], folds=2, embedder="hashing", progress=False, max_targets=1,
                            lm_config={"base_model": "tiny", "max_steps": 1, "batch_size": 2, "k": 1, "device": "cpu",
                                       "num_candidates": 2, "temperature": 0.7})
    assert (df["status"] == "ok").all()
    assert seen and all(kw["num_candidates"] == 2 and kw["temperature"] == 0.7 and callable(kw["exclude"])
                        for kw in seen)


@pytest.mark.parametrize(("options", "message"), [
    ({"rerank": "reward_model"}, r'rerank="reward_model" needs reward_model='),
    ({"num_candidates": 4}, "num_candidates=4 with temperature 0 .* 4 identical candidates"),
    ({"reward_model": "runs/rm"}, r'reward_model=\.\.\. is used only with rerank="reward_model"'),
    ({"rerank": "best"}, "rerank must be None or one of"),
])
def test_generation_options_every_target_would_fail_on_are_refused_before_any_sft(monkeypatch, options, message):
    """lm_config={"rerank": "reward_model"} without a reward model fine-tuned an LM in each of the
    5 folds, then failed every target: 5 NaN rows and a warning after 10 s of SFT. Such options
    are refused before any fold trains."""
    import ragim.train.sft as sft_mod
    from ragim.errors import ValidationError

    def no_training(*args, **kwargs):
        raise AssertionError("an LM was fine-tuned before the options were checked")

    monkeypatch.setattr(sft_mod, "train_sft", no_training)
    tasks = datasets.synthetic_family(n_tasks=5, n_features=2, seed=0)
    with pytest.raises(ValidationError, match="lm_config of ragim-lm: " + message):
        evaluate.zero_shot(tasks, methods=["ragim-lm"], embedder="hashing", progress=False,
                           lm_config={"base_model": "tiny", "max_steps": 1, "k": 2, **options})
