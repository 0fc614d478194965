"""Residual answers (LMConfig(residual=True)): the LM writes each parameter's change from the
statistical prior in its prompt, and the generator returns prior + change."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import reseal

import ragim.lm.constrained
from ragim import TaskIndex, datasets
from ragim.errors import ValidationError
from ragim.generate.lm import LMConfig, LMGenerator, plus_prior
from ragim.index import leak_free
from ragim.lm.answer import answer_format
from ragim.lm.prompts import PRIOR_HEAD, RESIDUAL_INSTRUCTION, build_prompt
from ragim.params import param_names
from ragim.train import build_sft_dataset, train_dpo, train_sft
from ragim.train.rewards import (
    held_out_log_likelihood,
    parse_validity,
    score_params,
    sparsity_reward,
)
from ragim.train.rl import build_grpo_dataset


@pytest.fixture(scope="module")
def index():
    """Eight synthetic tasks, their rows kept (the statistical prior is fitted on them)."""
    return TaskIndex.build(datasets.synthetic_family(n_tasks=8, n_features=2, seed=0), embedder="hashing",
                           progress=False)


@pytest.fixture(scope="module")
def trained(index):
    cfg = LMConfig(k=1, device="cpu", statistical_prior=True, residual=True)
    return train_sft(index, base_model="tiny", generator_config=cfg, max_steps=1, batch_size=2,
                     val_fraction=0.3, progress=False)


def forced_answers(monkeypatch, answer):
    """Make the generator's constrained decoder write ``answer(fmt)`` for every prompt."""
    def fake(model, tok, prompts, fmt, *, num_candidates=1, **kwargs):
        text = answer(fmt)
        one = SimpleNamespace(text=text, values=fmt.parse(text), n_tokens=3, logprob=-1.5)
        return [[one] * num_candidates for _ in prompts]

    monkeypatch.setattr(ragim.lm.constrained, "generate_answer_batch", fake)


def test_residual_needs_the_statistical_prior():
    with pytest.raises(ValidationError, match=r"residual=True needs statistical_prior=True"):
        LMConfig(residual=True)
    with pytest.raises(ValidationError, match="residual must be True or False"):
        LMConfig(residual="yes", statistical_prior=True)
    assert LMConfig(residual=True, statistical_prior=True).residual is True
    assert LMConfig().residual is False


def test_an_answer_of_zeros_is_the_prior_and_an_answer_is_added_to_it(index, monkeypatch):
    """The decode path parses the residual answer and adds the prompt's prior; without
    residual the same text is the parameters themselves."""
    desc = index.tasks.descriptions[0]
    gen = LMGenerator(base_model="tiny", k=1, device="cpu", statistical_prior=True, residual=True)
    [prior] = gen.statistical_priors([desc], index, [None])
    forced_answers(monkeypatch, lambda fmt: fmt.write(dict.fromkeys(fmt.keys, 0.0)))
    [zero] = gen.generate_candidates(desc, index)
    np.testing.assert_array_equal(zero.vector, prior.vector)
    assert zero.std is None and zero.metadata["residual"] is True and zero.metadata["logprob"] == -1.5

    change = {k: 0.25 * (i + 1) * (-1) ** i for i, k in enumerate(prior.names)}
    forced_answers(monkeypatch, lambda fmt: fmt.write(change))
    p = gen.generate_params(desc, index)
    np.testing.assert_allclose(p.vector, prior.vector + np.array(list(change.values())), rtol=0, atol=1e-12)
    assert p.metadata["residual"] is True
    gen.prior_correction_ = 0.5  # toward_prior blends the final parameters with the prior
    np.testing.assert_allclose(gen.generate_params(desc, index).vector,
                               prior.vector + 0.5 * np.array(list(change.values())), rtol=0, atol=1e-12)
    plain = LMGenerator(base_model="tiny", k=1, device="cpu", statistical_prior=True)
    q = plain.generate_params(desc, index)
    np.testing.assert_array_equal(q.vector, list(change.values()))
    assert q.metadata["residual"] is False


def test_plus_prior_checks_the_keys(index):
    gen = LMGenerator(base_model="tiny", k=1, device="cpu", statistical_prior=True)
    [prior] = gen.statistical_priors([index.tasks.descriptions[0]], index, [None])
    values = dict.fromkeys(prior.names, 1.0)
    assert list(plus_prior(values, prior).values()) == list(prior.vector + 1.0)
    assert plus_prior(values, None) is values
    with pytest.raises(ValidationError, match="not the prior's"):
        plus_prior(dict(reversed(values.items())), prior)


def test_the_real_decoder_writes_a_change_on_the_answer_grid(index):
    gen = LMGenerator(base_model="tiny", k=1, device="cpu", statistical_prior=True, residual=True)
    desc = index.tasks.descriptions[1]
    p = gen.generate_params(desc, index)
    [prior] = gen.statistical_priors([desc], index, [None])
    change = p.vector - prior.vector
    np.testing.assert_allclose(change, np.round(change, gen.config.decimals), rtol=0, atol=1e-9)
    assert np.all(np.abs(change) <= gen.config.max_abs + 1e-9)


def test_sft_targets_are_the_change_from_the_prompts_prior(index):
    """Every SFT completion is write(target - prior) for the prior its prompt shows (as
    absolute values), and the prompt asks for the change; the prior is kept in a column."""
    cfg = LMConfig(k=2, device="cpu", statistical_prior=True, residual=True, answer_format="compact")
    gen = LMGenerator(cfg)
    _, tok = gen.load_model()
    prior_gen = gen.fitted_prior(index)
    ds = build_sft_dataset(index, tok, cfg, prior_generator=prior_gen)
    names = param_names(index.model, index.schema)
    fmt = answer_format(names, name="compact", decimals=cfg.decimals, max_abs=cfg.max_abs)
    for row in ds:
        rec = index.record(row["task_id"])
        prior = prior_gen.generate_params(rec["description"], index, exclude=leak_free(rec))
        target = index.params(row["task_id"])
        change = dict(zip(names, target.vector - prior.vector, strict=True))
        assert row["completion"][0]["content"] == fmt.write(change)
        assert row["prior"] == [float(v) for v in prior.vector]
        user = row["prompt"][1]["content"]
        assert f"{PRIOR_HEAD}\n{fmt.write(prior.as_dict())}" in user
        assert user.endswith(fmt.instruction + " " + RESIDUAL_INSTRUCTION)
    plain = build_sft_dataset(index, tok, LMConfig(k=2, statistical_prior=True, answer_format="compact"),
                              prior_generator=prior_gen)
    assert "prior" not in plain.column_names
    assert plain[0]["completion"][0]["content"] == fmt.write(index.params(plain[0]["task_id"]).as_dict())
    assert RESIDUAL_INSTRUCTION not in plain[0]["prompt"][1]["content"]


def test_a_residual_prompt_needs_a_prior(index):
    _, tok = LMGenerator(base_model="tiny", device="cpu").load_model()
    with pytest.raises(ValidationError, match="no prior was given"):
        build_prompt("Predict stroke.", [], index.schema, index.model, tok, residual=True)


def test_the_prior_column_adds_the_prior_before_scoring():
    names = ["intercept", "x"]
    heldout = {"D": [[-1.0], [0.5], [2.0]], "y": [0, 1, 1]}
    prior = [-1.0, 0.75]
    change, final = {"intercept": 0.25, "x": -0.5}, {"intercept": -0.75, "x": 0.25}
    for name in ("json", "compact"):
        fmt = answer_format(names, name=name)
        kw = dict(param_names=names, heldout=heldout, answer_format=name)
        with_prior = held_out_log_likelihood(None, [fmt.write(change)], prior=[prior], **kw)
        summed = held_out_log_likelihood(None, [fmt.write(final)], **kw)
        assert with_prior == summed
        assert held_out_log_likelihood(None, [fmt.write(change)], **kw) != summed
        # one prior for all, None for an answer that is the parameters themselves
        both = held_out_log_likelihood(None, [fmt.write(change), fmt.write(final)], prior=[prior, None], **kw)
        assert both == summed * 2
        assert held_out_log_likelihood(None, [fmt.write(change)] * 2, prior=prior, **kw) == summed * 2
    # x: -0.75 + 0.75 = 0, a sparse coefficient once the prior is added
    assert sparsity_reward(None, ['{"intercept": 0, "x": -0.75}'], param_names=names, prior=prior) == [1.0]
    assert sparsity_reward(None, ['{"intercept": 0, "x": -0.75}'], param_names=names) == [0.0]
    assert parse_validity(None, ["nope"], param_names=names, prior=prior) == [0.0]
    with pytest.raises(ValidationError, match="prior must be None or one number per name"):
        held_out_log_likelihood(None, ['{"intercept": 0, "x": 0}'], param_names=names, heldout=heldout,
                                prior=[1.0])


def test_the_grpo_dataset_carries_the_prior_in_residual_mode(index):
    cfg = LMConfig(k=1, device="cpu", statistical_prior=True, residual=True)
    gen = LMGenerator(cfg)
    _, tok = gen.load_model()
    ids = index.ids[:3]
    ds = build_grpo_dataset(index, tok, cfg, task_ids=ids, prior_generator=gen.fitted_prior(index))
    sft = build_sft_dataset(index, tok, cfg, task_ids=ids, prior_generator=gen.fitted_prior(index))
    assert ds["prior"] == sft["prior"] and "completion" not in ds.column_names
    row = ds[0]
    fmt = gen.answer_format(row["param_names"])
    zeros = fmt.write(dict.fromkeys(row["param_names"], 0.0))
    columns = {k: [row[k]] for k in ("param_names", "heldout", "max_abs", "answer_format", "prior")}
    prior = gen.fitted_prior(index).generate_params(
        index.record(row["task_id"])["description"], index, exclude=leak_free(index.record(row["task_id"])))
    _, test = index.tasks[row["task_id"]].split(0.5, seed=0)  # the rows GRPO scores (its defaults)
    expected = score_params(prior, test.X, test.y)["log_likelihood"]
    assert held_out_log_likelihood(None, [zeros], **columns)[0] == pytest.approx(expected, abs=1e-9)
    assert held_out_log_likelihood(None, [zeros], **{**columns, "prior": [None]})[0] != pytest.approx(expected)
    plain = build_grpo_dataset(index, tok, LMConfig(k=1, statistical_prior=True), task_ids=ids,
                               prior_generator=gen.fitted_prior(index))
    assert "prior" not in plain.column_names


def test_residual_sft_validates_its_correction_and_saves_the_mode(trained, index, tmp_path):
    gen = trained
    assert gen.fine_tuned_ and gen.prior_correction_ is not None and len(gen.prior_correction_cv_) == 21
    loaded = LMGenerator.load(gen.save(tmp_path / "g"), device="cpu")
    assert loaded.config.residual is True
    assert json.loads((tmp_path / "g" / "config.json").read_text())["residual"] is True
    desc = index.tasks.descriptions[0]
    np.testing.assert_allclose(loaded.generate_params(desc, index).vector, gen.generate_params(desc, index).vector,
                               rtol=0, atol=1e-12)


def test_a_generator_saved_before_residual_existed_loads_without_it(index, tmp_path):
    path = LMGenerator(base_model="tiny", k=1, device="cpu").save(tmp_path / "old")
    config = json.loads((path / "config.json").read_text())
    del config["residual"]
    (path / "config.json").write_text(json.dumps(config))
    reseal(path)
    assert LMGenerator.load(path, device="cpu").config.residual is False


def test_dpo_refuses_a_residual_generator(trained):
    pairs = [{"prompt": "Predict stroke.", "chosen": dict.fromkeys(trained.param_names_, 0.5),
              "rejected": dict.fromkeys(trained.param_names_, -0.5)}]
    with pytest.raises(ValidationError, match=r"train_dpo does not train a generator with LMConfig\(residual=True\)"):
        train_dpo(trained, pairs, max_steps=1, progress=False)


def stepped_answers(monkeypatch):
    """Make the decoder write, for every prompt, candidate ``i`` as the change ``0.25 (i + 1)`` on
    every parameter: distinct answers whose rewards differ."""
    def fake(model, tok, prompts, fmt, *, num_candidates=1, **kwargs):
        texts = [fmt.write(dict.fromkeys(fmt.keys, 0.25 * (i + 1))) for i in range(num_candidates)]
        group = [SimpleNamespace(text=t, values=fmt.parse(t), n_tokens=3, logprob=-1.0 - i)
                 for i, t in enumerate(texts)]
        return [group for _ in prompts]

    monkeypatch.setattr(ragim.lm.constrained, "generate_answer_batch", fake)


def test_residual_pairs_keep_the_prior_and_a_reward_model_reads_the_lms_change(trained, index, monkeypatch,
                                                                                tmp_path):
    """Pairs of a residual generator keep the prior its prompt shows; the reward model trained for
    it reads every answer as the change the LM wrote, in training, in pairwise_accuracy and when
    it ranks candidates, and it keeps that when saved."""
    from ragim.lm.pairs import in_answer_format, load_preferences, save_preferences
    from ragim.lm.reward_model import check_reward_model_fits, rank_candidates
    from ragim.train import RewardModel, build_preference_pairs, train_reward_model
    from ragim.train.sft import excluding

    stepped_answers(monkeypatch)
    pairs = build_preference_pairs(trained, index, n_candidates=3, min_margin=0.0, pairs="all", progress=False)
    assert len(pairs) > 0 and "prior" in pairs.column_names
    fmt = trained.answer_format(trained.param_names_)
    steps = {fmt.write(dict.fromkeys(fmt.keys, 0.25 * (i + 1))) for i in range(3)}
    for row in pairs:
        rec = index.record(row["task_id"])
        hidden = frozenset(set(trained.val_task_ids_) - {row["task_id"]})  # as build_preference_pairs hides
        [prior] = trained.statistical_priors([rec["description"]], index, [excluding(leak_free(rec), hidden)])
        np.testing.assert_allclose(list(json.loads(row["prior"]).values()), prior.vector, rtol=0, atol=1e-12)
    written = in_answer_format(pairs, fmt, minus_prior=True)
    assert {w[side][0]["content"] for w in written for side in ("chosen", "rejected")} <= steps
    saved = load_preferences(save_preferences(pairs, tmp_path / "pairs.jsonl"))
    assert saved["prior"] == pairs["prior"]

    rm = train_reward_model(pairs, generator=trained, answer_format=fmt, base_model="tiny", max_steps=1,
                            val_fraction=0, progress=False, device="cpu")
    assert rm.residual_ is True
    loaded = RewardModel.load(rm.save(tmp_path / "rm"), device="cpu")
    assert loaded.residual_ is True
    assert loaded.pairwise_accuracy(pairs) == rm.pairwise_accuracy(pairs)
    whole = train_reward_model(pairs, generator=trained, answer_format=fmt, residual=False, base_model="tiny",
                               max_steps=1, val_fraction=0, progress=False, device="cpu")
    assert whole.residual_ is False

    class Reads:  # records what a residual reward model is shown
        residual_, answer_format_ = True, fmt

        def score(self, prompts, completions):
            self.completions = [c[0]["content"] for c in completions]
            return np.arange(len(completions), dtype=float)

    reads, desc = Reads(), index.tasks.descriptions[0]
    cands = trained.generate_candidates(desc, index, num_candidates=3, temperature=1.0)
    best = rank_candidates(trained, reads, desc, index, cands)
    assert reads.completions == [fmt.write(dict.fromkeys(fmt.keys, 0.25 * (i + 1))) for i in range(3)]
    assert best.metadata["reward_scores"] == [0.0, 1.0, 2.0]
    plain = LMGenerator(base_model="tiny", k=1, device="cpu", statistical_prior=True)
    with pytest.raises(ValidationError, match="reads answers as changes from the statistical prior"):
        check_reward_model_fits(plain, reads, index)


def test_a_residual_reward_model_needs_the_prior_and_an_answer_format(trained):
    from ragim.lm.pairs import in_answer_format
    from ragim.train import train_reward_model

    fmt = trained.answer_format(trained.param_names_)
    pair = {"prompt": "Predict stroke.", "chosen": dict.fromkeys(fmt.keys, 0.5),
            "rejected": dict.fromkeys(fmt.keys, -0.5)}
    with pytest.raises(ValidationError, match=r"pair 1: no 'prior' to write its answers as changes from"):
        in_answer_format([pair], fmt, minus_prior=True)
    with pytest.raises(ValidationError, match=r"pair 1: chosen: the prior's parameters"):
        in_answer_format([{**pair, "prior": {"other": 1.0}}], fmt, minus_prior=True)
    with pytest.raises(ValidationError, match="residual=True writes each answer as its change"):
        train_reward_model([pair], residual=True, base_model="tiny", max_steps=1, progress=False, device="cpu")


def test_a_pair_file_prior_must_name_the_answers_parameters(tmp_path):
    from ragim.lm.pairs import load_preferences

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "p", "chosen": {"intercept": 1, "x": 0}, "rejected": {"intercept": 0, "x": 0},
                             "prior": {"intercept": 0}}) + "\n")
    with pytest.raises(ValidationError, match="line 1: field 'prior' has other parameters than the answers"):
        load_preferences(f)
