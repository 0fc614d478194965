"""GRPO and DPO smoke runs on the tiny model, continuing an SFT adapter: a loss is logged, every
trainable (LoRA) parameter changes, frozen ones do not, the input generator is untouched, and the
result saves as an adapter that ``LMGenerator.load`` accepts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from ragim import TaskIndex, datasets
from ragim.errors import DataWarning, ValidationError
from ragim.generate.lm import LMConfig, LMGenerator
from ragim.index import leak_free
from ragim.params import param_names
from ragim.train import build_preference_pairs, train_dpo, train_grpo, train_sft
from ragim.train.rewards import VerifiableRewardConfig as RewardConfig
from ragim.train.rewards import completion_text, decode_heldout
from ragim.train.rl import build_grpo_dataset


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=8, n_features=2, seed=0)


@pytest.fixture(scope="module")
def index(family):
    return TaskIndex.build(family, embedder="hashing", progress=False)


@pytest.fixture(scope="module")
def sft(index):
    return train_sft(index, base_model="tiny", generator_config=LMConfig(k=2, device="cpu"), max_steps=2,
                     batch_size=2, learning_rate=5e-3, progress=False)


def lora_state(gen) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in gen.model_.named_parameters() if "lora_" in n}


class Snapshot(TrainerCallback):
    """Copies every parameter (and whether it trains) when training starts and ends."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_only_the_adapter_trained(snap: Snapshot):
    lora = {n for n in snap.before if "lora_" in n and ".default." in n}
    assert lora and snap.trainable == lora
    for n in snap.trainable:
        assert not torch.equal(snap.before[n], snap.after[n]), f"trainable parameter {n} did not change"
    for n in set(snap.before) - snap.trainable:
        assert torch.equal(snap.before[n], snap.after[n]), f"frozen parameter {n} changed"


def same_logits(a, b) -> bool:
    ids = torch.tensor([[1, 5, 9, 20, 30, 40, 50]])
    with torch.no_grad():
        return torch.allclose(a.model_(input_ids=ids).logits, b.model_(input_ids=ids).logits, atol=1e-6)


def digit_share(prompts, completions, **kwargs) -> list[float]:
    """A dense toy reward (share of digits) so that every GRPO group has reward variance."""
    texts = [completion_text(c) or "" for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def test_grpo_dataset_tells_the_rewards_the_compact_format(sft, index):
    """A compact-format generator's GRPO prompts carry answer_format="compact", so the
    rewards score its completions (compact arrays) instead of flooring them as malformed."""
    from dataclasses import replace

    from ragim.lm.answer import answer_format

    _, tok = sft.load_model()
    cfg = replace(sft.config, answer_format="compact")
    ds = build_grpo_dataset(index, tok, cfg, task_ids=index.ids[:2])
    assert ds["answer_format"] == ["compact", "compact"]
    row = ds[0]
    values = index.params(row["task_id"]).as_dict()
    texts = [answer_format(row["param_names"], name=f, max_abs=row["max_abs"],
                           decimals=cfg.decimals).write(values) for f in ("compact", "json")]
    funcs, _ = RewardConfig(weights={"log_likelihood": 1.0}).build()
    score = funcs[0](prompts=[row["prompt"]] * 2, completions=texts,
                     param_names=[row["param_names"]] * 2, heldout=[row["heldout"]] * 2,
                     max_abs=[row["max_abs"]] * 2, answer_format=[row["answer_format"], "json"])
    assert texts[0].startswith("[") and score[0] == score[1] > -16.2  # the floor is -20


def test_grpo_dataset_has_reward_columns_and_is_leave_one_task_out(sft, index):
    _, tok = sft.load_model()
    ds = build_grpo_dataset(index, tok, sft.config, task_ids=index.ids[:4], hide=[index.ids[5]])
    assert {"prompt", "task_id", "neighbor_ids", "param_names", "heldout", "max_abs",
            "answer_format"} <= set(ds.column_names)
    assert "completion" not in ds.column_names
    assert set(ds["answer_format"]) == {"json"}
    names = param_names(index.model, index.schema)
    for row in ds:
        rec = index.record(row["task_id"])
        assert row["param_names"] == names
        D, y = decode_heldout(row["heldout"])
        _, test = index.tasks[row["task_id"]].split(0.5, seed=0)
        assert D.shape == (test.n_rows, len(names) - 1) and y.tolist() == test.y.tolist()
        assert row["task_id"] not in row["neighbor_ids"] and index.ids[5] not in row["neighbor_ids"]
        assert not any(leak_free(rec)(index.record(nb)) for nb in row["neighbor_ids"])
        assert row["prompt"][1]["content"].count(rec["description"]) == 1


@pytest.fixture(scope="module")
def grpo(sft, index):
    before = lora_state(sft)
    snap = Snapshot()
    gen = train_grpo(sft, index, reward_config=RewardConfig(weights={"log_likelihood": 1.0, "validity": 0.5}),
                     extra_rewards={digit_share: 1.0}, num_generations=4, batch_size=1, max_steps=2,
                     learning_rate=1e-3, progress=False, callbacks=[snap])
    return gen, snap, before


def test_grpo_smoke(grpo, sft, index):
    gen, snap, before = grpo
    assert_only_the_adapter_trained(snap)
    logs = [h for h in gen.history_ if h.get("stage") == "grpo" and "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert all("rewards/held_out_log_likelihood/mean" in h and "rewards/parse_validity/mean" in h for h in logs)
    assert any(h.get("stage") == "sft" for h in gen.history_)
    # the SFT generator is untouched; the new one is a different model
    after_sft = lora_state(sft)
    assert all(torch.equal(before[n], after_sft[n]) for n in before)
    assert gen.model_ is not sft.model_ and gen.fine_tuned_
    assert not any(p.requires_grad for p in gen.model_.parameters())


def test_grpo_samples_under_the_grammar_so_every_answer_scores(sft, index):
    """GRPO's groups are sampled under the answer grammar (hot sampling, a barely trained tiny
    model): every completion parses, none gets the reward floor, and no group has zero reward
    variance, so the advantage is never identically zero."""
    seen: list[str] = []

    def record(prompts, completions, **kwargs):
        seen.extend(completion_text(c) for c in completions)
        return [0.0] * len(completions)

    gen = train_grpo(sft, index, extra_rewards={record: 0.0}, num_generations=4, batch_size=1,
                     max_steps=2, temperature=3.0, progress=False)
    fmt = gen.answer_format(param_names(index.model, index.schema))
    assert len(seen) == 8 and all(set(fmt.parse(t)) == set(fmt.keys) for t in seen)
    assert len(set(seen)) > 1  # sampled, not greedy
    logs = [h for h in gen.history_ if h.get("stage") == "grpo" and "loss" in h]
    assert len(logs) == 2
    assert all(h["frac_reward_zero_std"] == 0 for h in logs)
    assert all(h["rewards/held_out_log_likelihood/mean"] > RewardConfig().floor for h in logs)
    assert gen.training_[-1]["config"]["constrained"] is True


def test_grpo_can_sample_without_the_grammar(sft, index):
    seen: list[str] = []

    def record(prompts, completions, **kwargs):
        seen.extend(completion_text(c) for c in completions)
        return [0.0] * len(completions)

    gen = train_grpo(sft, index, extra_rewards={record: 0.0}, num_generations=2, max_steps=1,
                     temperature=3.0, constrained=False, progress=False)
    fmt = gen.answer_format(param_names(index.model, index.schema))
    assert len(seen) == 2 and not gen.training_[-1]["config"]["constrained"]
    # a hot, barely trained tiny model writes no valid answer on its own
    assert all(fmt.parse_or_none(t) is None for t in seen)


def test_grpo_refuses_a_budget_that_cuts_answers_and_warns_when_nothing_is_learned(sft, index):
    with pytest.raises(ValidationError, match="max_completion_length=10 cannot hold the longest answer"):
        train_grpo(sft, index, num_generations=2, max_steps=1, max_completion_length=10, progress=False)
    # under the grammar every answer is valid: validity alone gives every group zero spread
    with pytest.warns(DataWarning, match="validity is always 1"):
        train_grpo(sft, index, reward_config=RewardConfig(weights={"validity": 1.0}), num_generations=2,
                   max_steps=1, progress=False)


def test_grpo_after_posterior_sft_flags_reward_rows_that_shaped_the_targets(index):
    post = train_sft(index, base_model="tiny", generator_config=LMConfig(k=2, device="cpu"), max_steps=1,
                     batch_size=2, targets="posterior", progress=False)
    with pytest.warns(DataWarning, match=r"GRPO scores rewards on Task.split\(0.3, seed=0\)"):
        train_grpo(post, index, num_generations=2, max_steps=1, heldout_fraction=0.3, progress=False)


def test_grpo_adapter_round_trip(grpo, family, index, tmp_path):
    gen, _, _ = grpo
    desc = family.descriptions[2]
    p = gen.generate_params(desc, index, exclude=[family.ids[2]])
    loaded = LMGenerator.load(gen.save(tmp_path / "grpo"), device="cpu")
    assert same_logits(gen, loaded)  # the in-memory model runs its own weights (no stale TRL forward patch)
    q = loaded.generate_params(desc, index, exclude=[family.ids[2]])
    np.testing.assert_array_equal(p.vector, q.vector)
    assert loaded.fine_tuned_ and any(h.get("stage") == "grpo" for h in loaded.history_)


def test_policy_training_validates_the_correction_weight_again(index, family, tmp_path):
    """With the statistical prior, GRPO and DPO choose the correction weight again for the new
    adapter, on the validation tasks they did not train on; DPO from a saved generator needs
    the index for that (without it the earlier weight is kept, with a warning)."""
    post = train_sft(index, base_model="tiny", generator_config=LMConfig(k=2, device="cpu", statistical_prior=True),
                     max_steps=1, batch_size=2, val_fraction=0.3, progress=False)
    assert post.prior_correction_ is not None and post.val_task_ids_
    grpo = train_grpo(post, index, num_generations=2, max_steps=1, progress=False)
    assert grpo.prior_correction_ is not None and len(grpo.prior_correction_cv_) == 21
    pairs = build_preference_pairs(post, index, n_candidates=3, min_margin=0.0, progress=False)
    assert not set(pairs["task_id"]) & set(post.val_task_ids_)
    path = post.save(tmp_path / "sft")
    with pytest.warns(DataWarning, match="train_dpo has no index to validate the correction weight on"):
        kept = train_dpo(path, pairs, max_steps=1, batch_size=2, progress=False)
    assert kept.prior_correction_ == post.prior_correction_
    again = train_dpo(path, pairs, index=index, max_steps=1, batch_size=2, progress=False)
    assert again.prior_correction_ is not None and len(again.prior_correction_cv_) == 21
    # best-of-n answers of a batch, each query with its own exclusion, move towards the prior too

    class Longest:
        def score(self, prompts, completions):
            return [len(c[0]["content"]) for c in completions]

    descs = family.descriptions[:2]
    best = again.generate_params(descs, index, rerank="reward_model", reward_model=Longest(), n=2,
                                 exclude=[[family.ids[0]], [family.ids[1]]])
    assert [b.metadata["prior_correction"] for b in best] == [again.prior_correction_] * 2


def test_dpo_smoke_and_round_trip(sft, family, index, tmp_path):
    pairs = build_preference_pairs(sft, index, n_candidates=3, min_margin=0.0, progress=False)
    assert len(pairs) >= 4
    before = lora_state(sft)
    snap = Snapshot()
    gen = train_dpo(sft, pairs, beta=0.1, max_steps=2, batch_size=2, learning_rate=1e-3, progress=False,
                    callbacks=[snap])
    # TRL keeps the reference as a frozen "ref" copy of the adapter during training
    assert any(".ref." in n for n in snap.before)
    assert_only_the_adapter_trained(snap)
    logs = [h for h in gen.history_ if h.get("stage") == "dpo" and "loss" in h]
    assert len(logs) == 2 and all(math.isfinite(h["loss"]) for h in logs)
    assert list(gen.model_.peft_config) == ["default"]  # the reference adapter is gone
    assert all(torch.equal(before[n], t) for n, t in lora_state(sft).items())

    desc = family.descriptions[1]
    p = gen.generate_params(desc, index, exclude=[family.ids[1]])
    path = gen.save(tmp_path / "dpo")
    assert sorted(f.name for f in (path / "adapter").iterdir() if f.is_dir()) == []  # no "ref" subfolder
    loaded = LMGenerator.load(path, device="cpu")
    assert same_logits(gen, loaded)
    np.testing.assert_array_equal(p.vector, loaded.generate_params(desc, index, exclude=[family.ids[1]]).vector)


def test_training_from_a_saved_generator(sft, index, tmp_path):
    path = sft.save(tmp_path / "sft")
    gen = train_grpo(path, index, extra_rewards={digit_share: 1.0}, num_generations=2, max_steps=1,
                     progress=False, device="cpu")
    assert gen.fine_tuned_ and any("loss" in h for h in gen.history_ if h.get("stage") == "grpo")
    # a generator loaded in bfloat16 to generate faster is trained further in float32
    fast = LMGenerator.load(path, device="cpu", dtype="bfloat16")
    gen = train_grpo(fast, index, extra_rewards={digit_share: 1.0}, num_generations=2,
                     max_steps=1, progress=False, device="cpu")
    assert gen.config.dtype == "float32"
    assert {p.dtype for p in gen.model_.parameters()} == {torch.float32}


def test_bf16_grpo_samples_and_trains_under_autocast_with_float32_weights(sft, index):
    gen = train_grpo(sft, index, num_generations=2, max_steps=1, progress=False, mixed_precision="bf16")
    assert gen.training_[-1]["config"]["mixed_precision"] == "bf16"
    assert any("reward" in h for h in gen.history_ if h.get("stage") == "grpo")
    assert {p.dtype for p in gen.model_.parameters()} == {torch.float32}


def test_grpo_with_activation_checkpointing_trains_the_same_adapter_and_may_resume_with_it(
        sft, index, tmp_path, checkpointing_probe):
    """Activation checkpointing trades time for memory in GRPO too (off while it samples, so
    sampling keeps its KV cache): the same rewards, losses and LoRA weights as without it. A
    stopped run may resume with it turned on, since it changes no gradient."""
    seen = [checkpointing_probe(), checkpointing_probe()]
    runs = [train_grpo(sft, index, num_generations=2, max_steps=2, learning_rate=1e-3, progress=False,
                       activation_checkpointing=on, output_dir=tmp_path / f"grpo-{on}", save_steps=1,
                       callbacks=[cb])
            for on, cb in zip((False, True), seen, strict=True)]
    assert [cb.seen for cb in seen] == [[False, False], [True, True]]
    logs = [[h[key] for h in g.history_ if h.get("stage") == "grpo" and "loss" in h for key in ("reward", "loss")]
            for g in runs]
    assert len(logs[0]) == 4 and logs[0] == pytest.approx(logs[1], rel=1e-4)
    a, b = (lora_state(g) for g in runs)
    assert a.keys() == b.keys() and all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    start = lora_state(sft)
    assert any(not torch.equal(a[n], start[n]) for n in a)  # GRPO moved the adapter
    assert runs[1].training_[-1]["config"]["activation_checkpointing"] is True
    run_file = tmp_path / "grpo-False" / "ragim_run.json"  # as runs saved before it was volatile hold it
    saved = json.loads(run_file.read_text())
    saved["training"]["activation_checkpointing"] = False
    run_file.write_text(json.dumps(saved))
    again = train_grpo(sft, index, num_generations=2, max_steps=3, learning_rate=1e-3, progress=False,
                       activation_checkpointing=True, output_dir=tmp_path / "grpo-False", save_steps=1,
                       resume_from_checkpoint=True)
    assert [h["step"] for h in again.history_ if h.get("stage") == "grpo" and "loss" in h] == [1, 2, 3]
    with pytest.raises(ValidationError, match="activation_checkpointing must be True or False"):
        train_grpo(sft, index, activation_checkpointing=1, progress=False)


def test_bad_arguments(sft, index):
    with pytest.raises(ValidationError, match="num_generations"):
        train_grpo(sft, index, num_generations=1)
    with pytest.raises(ValidationError, match="RewardConfig"):
        train_grpo(sft, index, reward_config={"log_likelihood": 1.0})
    with pytest.raises(ValidationError, match="expected an LMGenerator"):
        train_grpo(42, index)
    with pytest.raises(ValidationError, match="beta"):
        train_dpo(sft, [], beta=0)
    with pytest.raises(ValidationError, match="no preference pairs"):
        train_dpo(sft, [])


def test_every_training_run_is_recorded_and_saved_beside_the_adapter(grpo, sft, index, tmp_path):
    from ragim.train import GRPOTrainingConfig

    gen, _, _ = grpo
    assert [r["stage"] for r in sft.training_] == ["sft"]
    assert [r["stage"] for r in gen.training_] == ["sft", "grpo"]
    assert gen.training_[0] == sft.training_[0]
    run = gen.training_[1]["config"]
    assert run["rewards"]["weights"] == {"log_likelihood": 1.0, "validity": 0.5}
    assert (run["num_generations"], run["max_steps"], run["batch_size"], run["learning_rate"]) == (4, 2, 1, 1e-3)
    # the record is a complete config: it rebuilds the run's settings
    assert GRPOTrainingConfig(**run) == GRPOTrainingConfig(
        rewards=RewardConfig(weights={"log_likelihood": 1.0, "validity": 0.5}), max_steps=2, learning_rate=1e-3)
    loaded = LMGenerator.load(gen.save(tmp_path / "grpo"), device="cpu")
    assert loaded.training_ == gen.training_


def test_a_config_object_and_keywords_describe_the_same_run():
    from ragim.train import DPOTrainingConfig, GRPOTrainingConfig
    from ragim.train.trainer import run_config

    cfg = GRPOTrainingConfig(max_steps=7, temperature=1.2)
    run = run_config(GRPOTrainingConfig, cfg, max_steps=3, beta=None)
    assert (run.max_steps, run.temperature, run.beta) == (3, 1.2, 0.0) and cfg.max_steps == 7
    assert run_config(DPOTrainingConfig, {"beta": 0.5}).beta == 0.5
    with pytest.raises(ValidationError, match=r"unknown DPOTrainingConfig field\(s\) \['betta'\]"):
        run_config(DPOTrainingConfig, {"betta": 0.5})
    with pytest.raises(ValidationError, match="config must be a DPOTrainingConfig"):
        run_config(DPOTrainingConfig, cfg)
    with pytest.raises(ValidationError, match="temperature must be a number > 0, got 0"):
        GRPOTrainingConfig(temperature=0)


def test_a_keyword_that_is_no_config_field_is_refused_by_name():
    """Trainers take their config's fields as keywords; a misspelt one raises TypeError naming the
    config's fields, before any model is loaded."""
    from ragim.train import train_dpo, train_grpo, train_reward_model, train_sft

    for call in (lambda: train_sft(None, max_step=3), lambda: train_grpo(None, None, max_step=3),
                 lambda: train_dpo(None, [], max_step=3), lambda: train_reward_model([], max_step=3)):
        with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['max_step'\].*max_steps"):
            call()


def test_a_generator_setting_given_to_a_trainer_says_where_it_goes():
    """train_sft(index, lora_r=4) raised a TypeError listing only the training fields, though
    the docs call the LoRA rank a generator setting and base_model and k are keywords; each
    trainer says in one line whose setting it is and where to pass it."""
    from ragim.train import train_dpo, train_grpo, train_reward_model, train_sft

    with pytest.raises(TypeError, match=r"^lora_r is a setting of the generator \(LMConfig\), not "
                       r"of the run \(SFTTrainingConfig\); pass it in "
                       r"generator_config=LMConfig\(lora_r=\.\.\.\)"):
        train_sft(None, lora_r=4)
    for call in (lambda: train_grpo(None, None, decimals=3), lambda: train_dpo(None, [], decimals=3)):
        with pytest.raises(TypeError, match=r"^decimals is a setting of the generator .* set it in "
                           r"train_sft\(index, generator_config=LMConfig\(decimals=\.\.\.\)\)$"):
            call()
    with pytest.raises(TypeError, match=r"^lora_alpha is a setting of the reward model "
                       r"\(RewardModelConfig\).*takes base_model, lora_r and device"):
        train_reward_model([], lora_alpha=4)


def test_output_dir_is_a_config_field(tmp_path):
    from ragim.train import DPOTrainingConfig

    assert DPOTrainingConfig(output_dir=tmp_path).output_dir == str(tmp_path)
    with pytest.raises(ValidationError, match="output_dir must be a directory path or None, got 3"):
        DPOTrainingConfig(output_dir=3)


def test_config_problems_the_stranger_test_found_are_refused_by_name(tmp_path):
    from ragim.train import GRPOTrainingConfig, SFTTrainingConfig
    from ragim.train.trainer import run_config

    cfg = SFTTrainingConfig()
    cfg.max_steps = 0  # changed after it was checked: the run checks it again
    with pytest.raises(ValidationError, match="max_steps must be an integer >= 1, got 0"):
        run_config(SFTTrainingConfig, cfg)
    with pytest.raises(ValidationError, match="task_ids must be a list of task ids, got one string"):
        GRPOTrainingConfig(task_ids="syn-0000000")
    with pytest.raises(ValidationError, match=r"unknown VerifiableRewardConfig field\(s\) \['foo'\]"):
        GRPOTrainingConfig(rewards={"foo": 1.0})
    (tmp_path / "afile").write_text("x")
    for bad, match in ((tmp_path / "afile", "is a file, not a directory"), ("", "must be a directory path")):
        with pytest.raises(ValidationError, match=match):
            SFTTrainingConfig(output_dir=bad)
    with pytest.raises(TypeError, match="give the rewards once"):
        train_grpo(None, None, reward_config=RewardConfig(), rewards=RewardConfig())


def test_rewards_may_be_given_as_the_config_field_name(sft, index):
    weights = {"log_likelihood": 1.0, "validity": 0.25}
    gen = train_grpo(sft, index, rewards=RewardConfig(weights=weights), num_generations=2, max_steps=1,
                     progress=False)
    assert gen.training_[-1]["config"]["rewards"]["weights"] == weights


def test_a_stopped_run_resumes_from_its_last_checkpoint(sft, index, tmp_path):
    """save_steps keeps resumable checkpoints in output_dir; resume_from_checkpoint continues from
    the last one: the resumed run's log holds the first run's steps unchanged, then the new one."""
    out = tmp_path / "grpo"
    first = train_grpo(sft, index, num_generations=2, max_steps=2, progress=False, output_dir=out,
                       save_steps=1)
    assert {"checkpoint-1", "checkpoint-2"} <= {p.name for p in out.iterdir()}
    again = train_grpo(sft, index, num_generations=2, max_steps=3, progress=False, output_dir=out,
                       save_steps=1, resume_from_checkpoint=True)

    def rewards(gen):
        return [(h["step"], h["reward"]) for h in gen.history_ if h.get("stage") == "grpo" and "reward" in h]

    assert rewards(again)[:2] == rewards(first) and [s for s, _ in rewards(again)] == [1, 2, 3]
    assert json.loads((out / "ragim_run.json").read_text())["stage"] == "grpo"


def test_resuming_refuses_another_runs_checkpoints_and_says_when_there_is_none(sft, index, tmp_path):
    """The checkpoints in output_dir belong to the run described in its ragim_run.json: a resume
    with other settings or other data is refused, naming what differs; a folder with no checkpoint
    has nothing to resume (said, then trained from scratch)."""
    out = tmp_path / "grpo"
    kw = dict(num_generations=2, progress=False, output_dir=out, save_steps=1)
    with pytest.warns(DataWarning, match="holds no checkpoint, so there is nothing to resume"):
        train_grpo(sft, index, max_steps=1, resume_from_checkpoint=True, **kw)
    with pytest.raises(ValidationError, match=r"another run \(it differs in training.temperature\)"):
        train_grpo(sft, index, max_steps=2, temperature=0.5, resume_from_checkpoint=True, **kw)
    # other training tasks (an index rebuilt on other tasks is refused before: tested above)
    with pytest.raises(ValidationError, match=r"it differs in the training data"):
        train_grpo(sft, index, max_steps=2, task_ids=sft.train_task_ids_[:2], resume_from_checkpoint=True, **kw)
    with pytest.raises(ValidationError, match="give an output_dir"):
        train_sft(index, save_steps=5)


def test_a_resume_reads_the_same_sign_constraints_not_just_the_same_path(sft, index, tmp_path):
    """The run description kept the sign-constraints file's path only: a file edited between
    the stop and the resume let the run continue under other constraints. Its contents count
    as training data now."""
    from ragim.train.rewards import VerifiableRewardConfig

    signs = tmp_path / "signs.json"
    signs.write_text(json.dumps({"x01": 1}))
    rewards = VerifiableRewardConfig(weights={"log_likelihood": 1.0, "sign": 0.5}, sign_constraints=str(signs))
    kw = dict(num_generations=2, progress=False, output_dir=tmp_path / "grpo", save_steps=1, rewards=rewards)
    train_grpo(sft, index, max_steps=1, **kw)
    signs.write_text(json.dumps({"x01": -1}))
    with pytest.raises(ValidationError, match=r"it differs in the training data"):
        train_grpo(sft, index, max_steps=2, resume_from_checkpoint=True, **kw)


def test_grpo_and_dpo_refuse_an_index_rebuilt_since_sft(sft, index):
    """An index rebuilt on other tasks keeps the parameter names but scales the features
    otherwise: GRPO trained on it anyway and relabelled the generator as fitted on it (schema_
    the rebuilt index's) while generate_params and build_preference_pairs refuse it. GRPO, and
    DPO given it to validate on, now refuse it before any step, as generation does."""
    rebuilt = TaskIndex.build(datasets.synthetic_family(n_tasks=8, n_features=2, seed=5), embedder="hashing",
                              progress=False)
    assert param_names(rebuilt.model, rebuilt.schema) == sft.param_names_ and rebuilt.schema != sft.schema_
    with pytest.raises(ValidationError, match="the index was rebuilt since this LMGenerator was fitted"):
        build_preference_pairs(sft, rebuilt, n_candidates=2, progress=False)
    with pytest.raises(ValidationError, match="the index was rebuilt since this LMGenerator was fitted"):
        train_grpo(sft, rebuilt, max_steps=1, num_generations=2, progress=False)
    pairs = [{"prompt": "p", "chosen": {"intercept": 1, "x01": 0, "x02": 0},
              "rejected": {"intercept": -1, "x01": 0, "x02": 0}}]
    with pytest.raises(ValidationError, match="the index was rebuilt since this LMGenerator was fitted"):
        train_dpo(sft, pairs, index=rebuilt, max_steps=1, progress=False)


def test_a_resume_from_another_starting_adapter_is_refused(sft, index, tmp_path):
    """GRPO and DPO continue an adapter: resuming one's checkpoints from another starting
    generator (the same settings, other weights) continued the first adapter while the result
    recorded the second's SFT run (its learning rate 5e-2 in training_, the weights of the 1e-3
    run). It is refused, naming the starting adapter; the same start resumes."""
    other = train_sft(index, base_model="tiny", k=2, device="cpu", max_steps=1, batch_size=2,
                      learning_rate=5e-2, progress=False)
    kw = dict(num_generations=2, progress=False, output_dir=tmp_path / "grpo", save_steps=1)
    train_grpo(sft, index, max_steps=1, **kw)
    with pytest.raises(ValidationError, match=r"it differs in the adapter it starts from\)"):
        train_grpo(other, index, max_steps=2, resume_from_checkpoint=True, **kw)
    again = train_grpo(sft, index, max_steps=2, resume_from_checkpoint=True, **kw)
    assert [h["step"] for h in again.history_ if h.get("stage") == "grpo" and "loss" in h] == [1, 2]
    pairs = build_preference_pairs(sft, index, n_candidates=3, min_margin=0.0, progress=False).to_list()
    dpo = dict(max_steps=1, batch_size=2, progress=False, output_dir=tmp_path / "dpo", save_steps=1)
    train_dpo(sft, pairs, **dpo)
    with pytest.raises(ValidationError, match=r"it differs in the adapter it starts from\)"):
        train_dpo(other, pairs, resume_from_checkpoint=True, **{**dpo, "max_steps": 2})


def test_dpo_resumes_only_from_its_own_pairs(sft, index, tmp_path):
    pairs = build_preference_pairs(sft, index, n_candidates=3, min_margin=0.0, progress=False).to_list()
    kw = dict(max_steps=1, batch_size=2, progress=False, output_dir=tmp_path / "dpo", save_steps=1)
    with pytest.warns(DataWarning, match="holds no checkpoint"):
        train_dpo(sft, pairs, resume_from_checkpoint=True, **kw)
    with pytest.raises(ValidationError, match=r"it differs in the training data"):
        train_dpo(sft, pairs[:-1], resume_from_checkpoint=True, **kw)


def test_dpo_refuses_pairs_written_for_another_prompt_layout(sft, index, family):
    """Pairs sampled from a JSON-answer generator with k=2 are not DPO data for a compact one:
    their prompts ask for another answer form, so the policy would learn on prompts it never
    sees; the layout check names each difference (answer instruction, prior, population, k)."""
    from dataclasses import replace

    from ragim.lm.prompts import prompt_layout_problems

    messages, _ = sft.prompt(family.descriptions[0], index, exclude=[family.ids[0]])
    layout = (index.model, index.schema)
    assert prompt_layout_problems(messages, *layout, sft.config) == []
    assert prompt_layout_problems(messages, *layout, replace(sft.config, answer_format="compact")) == [
        "another answer instruction (this generator asks for compact answers)"]
    assert prompt_layout_problems(messages, *layout, replace(sft.config, statistical_prior=True)) == [
        "no statistical prior"]
    assert prompt_layout_problems(messages, *layout, replace(sft.config, population=False)) == [
        "a population model"]
    assert prompt_layout_problems(messages, *layout, replace(sft.config, k=1)) == [
        "2 neighbours (this generator shows at most k=1)"]
    pairs = build_preference_pairs(sft, index, n_candidates=3, min_margin=0.0, progress=False)
    compact = train_sft(index, base_model="tiny", generator_config=LMConfig(k=2, device="cpu", answer_format="compact"),
                        max_steps=1, batch_size=2, progress=False)
    with pytest.raises(ValidationError, match=r"the DPO preference pairs were written for another prompt layout "
                                              r"than this generator's: \d+ of \d+ pair\(s\) differ .*compact answers"):
        train_dpo(compact, pairs, max_steps=1, batch_size=2, progress=False)


def test_grpo_task_ids_are_checked_as_ids_of_the_index(sft, index):
    """task_ids=["nope"] said '1 task(s) have no rows in the index' (it is not in the index at
    all), task_ids=[] said 'no tasks to build SFT examples from', and a task given 3 times was
    trained on with 3 times the prompts and recorded so; each is now named as what it is."""
    kw = dict(max_steps=1, num_generations=2, progress=False)
    with pytest.raises(ValidationError, match=r"1 of the task_ids are not in the index: \['nope'\]"):
        train_grpo(sft, index, task_ids=["nope"], **kw)
    with pytest.raises(ValidationError, match="task_ids is empty"):
        train_grpo(sft, index, task_ids=[], **kw)
    with pytest.raises(ValidationError, match=r"task_ids names 1 task\(s\) more than once \(\['syn-0000000'\]\)"):
        train_grpo(sft, index, task_ids=["syn-0000000"] * 3, **kw)


def test_a_run_saved_before_its_start_was_recorded_still_resumes_and_fresh_adapters_match(tmp_path):
    """GRPO/DPO checkpoints written before run descriptions held the starting adapter (`start`)
    were refused as 'another run'; and an untrained generator's fresh adapter got another
    digest in every process (peft draws its A matrices at random), so its runs could never
    resume. A missing `start` is unknown, not a difference; an adapter whose B matrices are all
    0 (it changes nothing) has the one digest 'untrained'."""
    from peft import LoraConfig, get_peft_model

    from ragim.lm import load_base_model
    from ragim.train.trainer import RUN_FILE, UNTRAINED_ADAPTER, adapter_digest, prepare_output_dir

    digests = set()
    for seed in (0, 1):
        torch.manual_seed(seed)
        model, _ = load_base_model("tiny", device="cpu")
        digests.add(adapter_digest(get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))))
    assert digests == {UNTRAINED_ADAPTER}
    saved = {"stage": "grpo", "model": None, "training": {"beta": 0.0}, "data": "d"}
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / RUN_FILE).write_text(json.dumps(saved))
    prepare_output_dir(str(tmp_path), {**saved, "start": "0123456789abcdef"}, True)
    (tmp_path / RUN_FILE).write_text(json.dumps({**saved, "start": UNTRAINED_ADAPTER}))
    with pytest.raises(ValidationError, match="it differs in the adapter it starts from"):
        prepare_output_dir(str(tmp_path), {**saved, "start": "0123456789abcdef"}, True)
