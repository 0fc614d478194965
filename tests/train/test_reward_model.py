"""Bradley–Terry reward model on the tiny LM: only LoRA and the head train, it learns a planted
preference, it round-trips as an artifact, and best-of-n picks its top-scored candidate."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import reseal
from safetensors import safe_open
from transformers import TrainerCallback

from ragim import TaskIndex, datasets
from ragim.errors import ArtifactError, ValidationError
from ragim.generate.lm import LMGenerator
from ragim.lm.prompts import answer_text
from ragim.params import param_names
from ragim.train import RewardModel, best_of_n, train_reward_model
from ragim.train.reward import split_pairs_by_task


def planted_pairs(n: int, offset: int, seed: int) -> list[dict]:
    """Chosen models always have intercept 1, rejected ones intercept -1; the rest is noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, b = rng.normal(size=2).round(2)
        out.append({
            "prompt": [{"role": "user", "content": f"Predict outcome {i + offset} in cohort {rng.integers(100)}."}],
            "chosen": [{"role": "assistant", "content": f'{{"intercept": 1, "x": {a}}}'}],
            "rejected": [{"role": "assistant", "content": f'{{"intercept": -1, "x": {b}}}'}],
            "task_id": f"task-{(i + offset) % 12}",
        })
    return out


class Snapshot(TrainerCallback):
    """Copies every parameter (and whether it trains) when training starts and ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def trained():
    snap = Snapshot()
    rm = train_reward_model(planted_pairs(48, 0, 0), val_pairs=planted_pairs(16, 100, 1), base_model="tiny",
                            max_steps=30, batch_size=4, learning_rate=3e-3, progress=False, device="cpu",
                            callbacks=[snap])
    return rm, snap


def test_training_changes_only_lora_and_head_weights(trained):
    rm, snap = trained
    assert set(snap.before) == set(snap.after)
    lora = {n for n in snap.before if "lora_" in n}
    head = {n for n in snap.before if "score.modules_to_save" in n}
    assert lora and head and snap.trainable == lora | head
    for n in snap.trainable:
        assert not torch.equal(snap.before[n], snap.after[n]), f"trainable parameter {n} did not change"
    for n in set(snap.before) - snap.trainable:
        assert torch.equal(snap.before[n], snap.after[n]), f"frozen parameter {n} changed"
    assert rm.n_trainable_params_ == sum(snap.before[n].numel() for n in snap.trainable)
    losses = [h["loss"] for h in rm.history_ if "loss" in h]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)


def test_learns_a_planted_preference(trained):
    rm, _ = trained
    assert rm.val_accuracy_ > 0.7
    assert rm.pairwise_accuracy(planted_pairs(16, 200, 2)) > 0.7
    assert any("eval_accuracy" in h for h in rm.history_)
    s_w, s_l = rm.pair_scores(planted_pairs(16, 200, 2))  # what the accuracy counts, pair by pair
    assert s_w.shape == s_l.shape == (16,)
    assert rm.pairwise_accuracy(planted_pairs(16, 200, 2)) == np.mean((s_w > s_l) + 0.5 * (s_w == s_l))


def test_artifact_round_trip(trained, tmp_path):
    rm, _ = trained
    pairs = planted_pairs(4, 300, 3)
    prompts = [p["prompt"] for p in pairs] * 2
    completions = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    before = rm.score(prompts, completions)
    path = rm.save(tmp_path / "rm")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == "ragim.reward-model"
    config = json.loads((path / "config.json").read_text())
    assert config["base_model"] == "tiny" and config["base_model_identity"]["name"] == "tiny"
    with safe_open(str(path / "adapter" / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and all("lora_" in k or ".score." in k for k in keys)  # base weights are never copied
    assert any(".score." in k for k in keys)  # the head is saved
    loaded = RewardModel.load(path, device="cpu")
    np.testing.assert_allclose(loaded.score(prompts, completions), before, rtol=1e-5, atol=1e-6)
    assert loaded.val_accuracy_ == pytest.approx(rm.val_accuracy_) and loaded.history_ == json.loads(
        json.dumps(rm.history_))

    raw = bytearray((path / "adapter" / "adapter_model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (path / "adapter" / "adapter_model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        RewardModel.load(path)


def test_resealed_damage_is_an_artifact_error_naming_the_files(trained, tmp_path):
    """The reward model shares the LM generator's adapter checks (ragim.lm.adapters)."""
    rm, _ = trained
    path = rm.save(tmp_path / "rm")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "lora_r": config["lora_r"] * 2}))
    reseal(path)
    with pytest.raises(ArtifactError, match=r"LoRA settings of .*config\.json and .*adapter_config\.json disagree"):
        RewardModel.load(path)

    path = rm.save(tmp_path / "rm2")
    (path / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    reseal(path)
    with pytest.raises(ArtifactError, match=r"adapter_model\.safetensors\) cannot be applied"):
        RewardModel.load(path)


def test_validation_split_holds_out_whole_tasks():
    rows = planted_pairs(40, 0, 0)
    train, val = split_pairs_by_task(rows, 0.25, seed=0)
    assert len(train) + len(val) == 40 and val
    assert {r["task_id"] for r in train}.isdisjoint({r["task_id"] for r in val})
    untagged = [{k: v for k, v in r.items() if k != "task_id"} for r in rows]
    train, val = split_pairs_by_task(untagged, 0.25, seed=0)
    assert len(val) == 10 and len(train) == 30


def test_a_pair_given_twice_or_untagged_beside_its_task_stays_on_one_side_of_the_split():
    """Pairs without task_id were split by row: each pair of a file holding every pair 3 times
    had its copies in training, so all 4 validation pairs were training pairs; and one untagged
    line switched a whole tagged file to the row split (2 validation tasks also in training).
    Pairs are now grouped by task_id, else by prompt (with a tagged pair's task when one shares
    it); one task alone leaves nothing to validate on, said with a DataWarning."""
    from ragim.errors import DataWarning
    from ragim.train.reward import pair_groups

    def key(r):
        return json.dumps([r["prompt"], r["chosen"], r["rejected"]], sort_keys=True)

    rows = [{k: v for k, v in r.items() if k != "task_id"} for r in planted_pairs(6, 0, 0)] * 3
    train, val = split_pairs_by_task(rows, 0.2, seed=0)
    assert val and len(train) + len(val) == 18
    assert not {key(r) for r in val} & {key(r) for r in train}
    tagged = [dict(r) for r in planted_pairs(12, 0, 0) * 2]
    del tagged[0]["task_id"]                                   # a hand-added copy without task_id
    assert pair_groups(tagged)[0] == pair_groups(tagged)[12] == "task task-0"
    for seed in range(5):
        train, val = split_pairs_by_task(tagged, 0.25, seed=seed)
        assert not {key(r) for r in val} & {key(r) for r in train}
        assert len(val) == 6                                   # 3 of 12 tasks, 2 pairs each
    one = [dict(r, task_id="t") for r in planted_pairs(4, 0, 0)]
    with pytest.warns(DataWarning, match="all 4 preference pairs are of one task"):
        assert split_pairs_by_task(one, 0.25, seed=0) == (one, [])


def test_validation_pairs_of_the_training_tasks_are_said_to_be_seen():
    """val_pairs equal to the training pairs were taken silently: val_accuracy_ (0.17 in the
    repro) was measured on the 6 tasks it trained on, where the docs promise held-out tasks."""
    from ragim.errors import DataWarning
    from ragim.train.reward import warn_if_validation_overlaps

    rows = planted_pairs(12, 0, 0)
    with pytest.warns(DataWarning, match=r"3 of 4 validation pairs are of tasks the reward model trains on "
                                         r"\(task task-0, task task-1, task task-2\)"):
        warn_if_validation_overlaps(rows[:8], rows[:3] + rows[10:11])
    untagged = [{k: v for k, v in r.items() if k != "task_id"} for r in rows]
    with pytest.warns(DataWarning, match="1 of 1 validation pairs"):   # the same prompt: the same task
        warn_if_validation_overlaps(untagged[:4], untagged[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        warn_if_validation_overlaps(rows[:8], rows[8:])
    with pytest.warns(DataWarning, match="6 of 6 validation pairs"):
        train_reward_model(rows[:6], val_pairs=rows[:6], base_model="tiny", max_steps=1, batch_size=2,
                           progress=False, device="cpu")


def test_bad_inputs():
    with pytest.raises(ValidationError, match="no preference pairs"):
        train_reward_model([], base_model="tiny")
    with pytest.raises(ValidationError, match="lack"):
        train_reward_model([{"prompt": "p", "chosen": "a"}], base_model="tiny")
    with pytest.raises(ValidationError, match="max_steps"):
        train_reward_model(planted_pairs(2, 0, 0), base_model="tiny", max_steps=0)
    with pytest.raises(ValidationError, match="not trained"):
        RewardModel(base_model="tiny").score(["p"], ["c"])


class FakeRewardModel:
    """Scores candidates by a fixed list; records what it was asked."""

    def __init__(self, scores):
        self.scores = scores

    def score(self, prompts, completions):
        self.prompts, self.completions = prompts, completions
        return np.asarray(self.scores[:len(completions)], dtype=float)


def test_best_of_n_returns_the_highest_scored_candidate():
    tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    gen = LMGenerator(base_model="tiny", k=2, device="cpu")
    desc = tasks.descriptions[0]
    cands = gen.generate_candidates(desc, index, exclude=[tasks.ids[0]], num_candidates=5, temperature=1.0)
    fake = FakeRewardModel([0.1, -2.0, 3.5, 0.0, 1.0])
    best = best_of_n(gen, fake, desc, index, n=5, temperature=1.0, exclude=[tasks.ids[0]])
    np.testing.assert_array_equal(best.vector, cands[2].vector)
    assert best.metadata["rerank"] == "reward_model" and best.metadata["n"] == 5
    assert best.metadata["reward_scores"] == [0.1, -2.0, 3.5, 0.0, 1.0]
    assert best.metadata["candidate"] == 2 and best.metadata["generator"] == "lm"
    # the reward model saw the generator's prompt and every candidate's answer text
    assert fake.completions == [[{"role": "assistant", "content": answer_text(p, gen.config.decimals)}]
                                for p in cands]
    user = fake.prompts[0][1]["content"]
    assert user.count(desc) == 1 and all(p["description"] in user for p in cands[0].metadata["provenance"])
    with pytest.raises(ValidationError, match="n must be"):
        best_of_n(gen, fake, desc, index, n=0)


def test_best_of_n_writes_candidates_as_the_reward_model_was_trained():
    """A reward model trained on 1-decimal answers reads 1-decimal candidates, not the
    generator's 3 decimals it never saw in training."""
    from ragim.lm.answer import answer_format

    tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    gen = LMGenerator(base_model="tiny", k=2, device="cpu", decimals=3)
    desc = tasks.descriptions[0]
    keys = gen.answer_format(param_names(index.model, index.schema)).keys
    fake = FakeRewardModel([0.0, 1.0, 0.5])
    fake.answer_format_ = answer_format(keys, name="json", decimals=1, max_abs=2.0)
    best = best_of_n(gen, fake, desc, index, n=3, temperature=1.0, exclude=[tasks.ids[0]])
    cands = gen.generate_candidates(desc, index, exclude=[tasks.ids[0]], num_candidates=3, temperature=1.0)
    assert [c[0]["content"] for c in fake.completions] == [fake.answer_format_.write(p.as_dict()) for p in cands]
    for c in fake.completions:
        values = json.loads(c[0]["content"]).values()
        assert all(round(v, 1) == v and abs(v) <= 2.0 for v in values)
    np.testing.assert_array_equal(best.vector, cands[1].vector)  # the generator's own values


def test_the_training_run_is_saved_with_the_model(trained, tmp_path):
    from ragim.train.reward import RewardModelTrainingConfig

    rm, _ = trained
    assert rm.training_ == [{"stage": "reward", "config": {"max_steps": 30, "learning_rate": 3e-3,
                                                           "batch_size": 4, "val_fraction": 0.2, "seed": 0,
                                                           "output_dir": None, "save_steps": None,
                                                           "resume_from_checkpoint": False,
                                                           "mixed_precision": "auto",
                                                           "activation_checkpointing": False}}]
    assert RewardModelTrainingConfig(**rm.training_[0]["config"]).max_steps == 30
    assert RewardModel.load(rm.save(tmp_path / "rm"), device="cpu").training_ == rm.training_


def test_a_resumed_reward_model_run_must_be_the_run_of_its_checkpoints(tmp_path):
    """The reward model's trainer shares the checks of every ragim trainer: other pairs in the
    same output_dir are refused on resume, and an empty folder has nothing to resume."""
    from ragim.errors import DataWarning

    kw = dict(base_model="tiny", max_steps=1, batch_size=4, val_fraction=0, progress=False, device="cpu",
              output_dir=tmp_path / "rm", save_steps=1)
    with pytest.warns(DataWarning, match="holds no checkpoint"):
        train_reward_model(planted_pairs(8, 0, 0), resume_from_checkpoint=True, **kw)
    with pytest.raises(ValidationError, match=r"another run \(it differs in the training data\)"):
        train_reward_model(planted_pairs(8, 50, 3), resume_from_checkpoint=True, **kw)


def test_pairs_for_another_prompt_layout_are_refused_for_the_generator_they_serve():
    """A reward model ranks its generator's candidates on that generator's prompts: pairs whose
    prompts another generator wrote are refused before any step."""
    from ragim.train import train_sft

    index = TaskIndex.build(datasets.synthetic_family(n_tasks=6, n_features=2, seed=0), embedder="hashing",
                            progress=False)
    gen = train_sft(index, base_model="tiny", k=1, device="cpu", max_steps=1, batch_size=2, val_fraction=0,
                    progress=False)
    with pytest.raises(ValidationError, match=r"the reward model's preference pairs were written for another "
                                              r"prompt layout than this generator's: 8 of 8 pair\(s\) differ "
                                              r"\(pair 1: another system prompt"):
        train_reward_model(planted_pairs(8, 0, 0), generator=gen, base_model="tiny", max_steps=1, progress=False,
                           device="cpu", val_fraction=0)


def test_best_of_one_is_refused_rather_than_sampled():
    """best_of_n(n=1) and rerank="reward_model" with one candidate returned one answer sampled at
    temperature 0.8, ranked by nothing, where the generator's greedy answer was asked for in
    all but name."""
    from ragim.generate.lm import LMConfig, generation_options

    tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    gen = LMGenerator(base_model="tiny", k=2, device="cpu")
    with pytest.raises(ValidationError, match="n must be an integer >= 2.*best-of-1 ranks nothing"):
        best_of_n(gen, FakeRewardModel([1.0]), tasks.descriptions[0], index, n=1)
    with pytest.raises(ValidationError, match="one candidate leaves the reward model nothing"):
        generation_options(LMConfig(), rerank="reward_model", reward_model="rm", n=1)
    assert generation_options(LMConfig(), rerank="reward_model", reward_model="rm")[1] == 8


def test_reward_validation_pairs_share_no_patient_with_training_pairs():
    """The pairs of a task that shares patients with a validation task (one cohort's two tasks)
    were trained on, so val_accuracy_ was measured partly on patients the reward model had
    learned from; with the index they leave training, a DataWarning naming them, and the
    validation draw is unchanged."""
    from ragim import Task
    from ragim.errors import DataWarning
    from ragim.train.reward import apart_from_validation_pairs

    family = datasets.synthetic_family(n_tasks=12, n_features=2, seed=0)
    tasks = [Task(t.task_id, t.description, t.X, t.y,
                  metadata={"patient_ids": [f"{i // 2}-{r}" for r in range(len(t.y))]})
             for i, t in enumerate(family)]  # tasks 2j and 2j+1 are one cohort
    index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    rows = [dict(r, task_id=index.ids[int(r["task_id"].split("-")[1])]) for r in planted_pairs(24, 0, 0)]
    plain_train, plain_val = split_pairs_by_task(rows, 0.25, seed=0)
    with pytest.warns(DataWarning, match=r"the pairs of \d task\(s\) sharing patients with a validation task"):
        train, val = split_pairs_by_task(rows, 0.25, seed=0, index=index)
    assert val == plain_val
    val_ids = {r["task_id"] for r in val}
    partners = set(index.sharing_patients(sorted(val_ids))) - val_ids
    assert partners and {r["task_id"] for r in train}.isdisjoint(partners | val_ids)
    assert train == [r for r in plain_train if r["task_id"] not in partners]
    # tasks without patient ids share nothing ragim can see: the same split, no warning
    plain_index = TaskIndex.build(family, embedder="hashing", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert split_pairs_by_task(rows, 0.25, seed=0, index=plain_index) == (plain_train, plain_val)
    # every training pair of one cohort: all are kept, said to be optimistic
    one = [r for r in rows if r["task_id"] in index.ids[:2]]
    with pytest.warns(DataWarning, match="val_accuracy_ is measured on patients it learned from"):
        kept = apart_from_validation_pairs(index, [r for r in one if r["task_id"] == index.ids[0]],
                                           [r for r in one if r["task_id"] == index.ids[1]])
    assert kept and all(r["task_id"] == index.ids[0] for r in kept)
    with pytest.raises(ValidationError, match=r"task id\(s\) are not tasks of the index: task-0"):
        split_pairs_by_task(planted_pairs(8, 0, 0), 0.25, seed=0, index=index)
    # an untagged copy of a partner's pair is its prompt's task's pair: it leaves training too
    (partner,) = sorted(partners)[:1]
    copy = {k: v for k, v in next(r for r in rows if r["task_id"] == partner).items() if k != "task_id"}
    with pytest.warns(DataWarning, match="sharing patients with a validation task"):
        train2, _ = split_pairs_by_task([*rows, copy], 0.25, seed=0, index=index)
    assert copy not in train2
    # pairs of no known task cannot be kept apart: said so
    bare = [{k: v for k, v in r.items() if k != "task_id"} for r in rows]
    with pytest.warns(DataWarning, match=r"24 preference pair\(s\) carry no task_id"):
        split_pairs_by_task(bare, 0.25, seed=0, index=index)
    for bad, message in [(dict(val_fraction=1.5), "val_fraction"), (dict(val_fraction=float("nan")), "val_fraction"),
                         (dict(seed=-1), "seed"), (dict(index="index"), "index must be a TaskIndex")]:
        with pytest.raises(ValidationError, match=message):
            split_pairs_by_task(rows, **{"val_fraction": 0.25, "seed": 0, **bad})
    with pytest.raises(ValidationError, match="not tasks of the index"):  # checked with no split too
        split_pairs_by_task(planted_pairs(8, 0, 0), 0.0, seed=0, index=index)
    # train_reward_model splits the same way when given the index
    with pytest.warns(DataWarning, match="sharing patients with a validation task"):
        rm = train_reward_model(rows, base_model="tiny", index=index, max_steps=1, batch_size=4,
                                val_fraction=0.25, progress=False, device="cpu")
    assert rm.val_accuracy_ is not None
