"""Preference pairs from verifiable rewards (leave-one-task-out), and human preferences as JSONL."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ragim import TaskIndex, datasets
from ragim.errors import ValidationError
from ragim.generate.lm import LMGenerator
from ragim.index import leak_free
from ragim.params import param_names
from ragim.train import build_preference_pairs, load_preferences
from ragim.train.preferences import save_preferences
from ragim.train.rewards import encode_heldout, held_out_log_likelihood


@pytest.fixture(scope="module")
def heart_index():
    return TaskIndex.build(datasets.heart_disease(), embedder="hashing", progress=False)


@pytest.fixture(scope="module")
def synthetic_index():
    return TaskIndex.build(datasets.synthetic_family(n_tasks=8, n_features=2, seed=0), embedder="hashing",
                           progress=False)


@pytest.fixture(scope="module")
def generator():
    return LMGenerator(base_model="tiny", k=2, device="cpu")


@pytest.fixture(scope="module")
def all_pairs(generator, synthetic_index):
    return build_preference_pairs(generator, synthetic_index, n_candidates=4, min_margin=0.05, pairs="all",
                                  progress=False)


def test_pairs_respect_the_margin_and_the_rewards(all_pairs, synthetic_index):
    index = synthetic_index
    assert len(all_pairs) > 0
    assert all_pairs.column_names[:5] == ["prompt", "chosen", "rejected", "task_id", "margin"]
    names = param_names(index.model, index.schema)
    for row in all_pairs:
        assert row["margin"] >= 0.05
        assert row["chosen_reward"] - row["rejected_reward"] == pytest.approx(row["margin"])
        assert row["chosen"] != row["rejected"]
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        # the reward, recomputed on the task's own held-out rows, agrees and ranks chosen first
        _, test = index.tasks[row["task_id"]].split(0.5, seed=0)
        heldout = encode_heldout(index.model, index.schema, test.X, test.y)
        r_w, r_l = held_out_log_likelihood(None, [row["chosen"], row["rejected"]], param_names=names,
                                           heldout=heldout)
        assert r_w == pytest.approx(row["chosen_reward"]) and r_l == pytest.approx(row["rejected_reward"])
        assert r_w > r_l + 0.05 - 1e-12


def test_best_worst_gives_one_pair_per_task_with_the_widest_margin(generator, synthetic_index, all_pairs):
    best = build_preference_pairs(generator, synthetic_index, n_candidates=4, min_margin=0.05, progress=False)
    assert len(set(best["task_id"])) == len(best)
    for row in best:
        widest = max(r["margin"] for r in all_pairs if r["task_id"] == row["task_id"])
        assert row["margin"] == pytest.approx(widest)


def test_prompts_are_leave_one_task_out(generator, heart_index):
    """Each prompt's neighbours exclude its task and every task sharing its patients."""
    pairs = build_preference_pairs(generator, heart_index, n_candidates=2, min_margin=0.0, max_tasks=3,
                                   progress=False)
    assert len(pairs) == 3
    for row in pairs:
        rec = heart_index.record(row["task_id"])
        excluded = leak_free(rec)
        assert row["neighbor_ids"] and row["task_id"] not in row["neighbor_ids"]
        for nb in row["neighbor_ids"]:
            assert not excluded(heart_index.record(nb)), f"{nb} shares patients with {row['task_id']}"
        user = row["prompt"][1]["content"]
        assert user.count(rec["description"]) == 1  # only as the target


def test_no_pairs_gives_an_empty_dataset_and_a_hint(generator, synthetic_index):
    with pytest.warns(UserWarning, match="lower min_margin"):
        ds = build_preference_pairs(generator, synthetic_index, n_candidates=2, min_margin=1e6, max_tasks=1,
                                    progress=False)
    assert len(ds) == 0 and ds.column_names[:5] == ["prompt", "chosen", "rejected", "task_id", "margin"]


def test_bad_arguments(generator, synthetic_index):
    with pytest.raises(ValidationError, match="n_candidates"):
        build_preference_pairs(generator, synthetic_index, n_candidates=1)
    with pytest.raises(ValidationError, match="temperature"):
        build_preference_pairs(generator, synthetic_index, temperature=0)
    with pytest.raises(ValidationError, match="pairs must be one of"):
        build_preference_pairs(generator, synthetic_index, pairs="best")
    with pytest.raises(ValidationError, match="not in the index"):
        build_preference_pairs(generator, synthetic_index, task_ids=["nope"])
    bare = TaskIndex.build(datasets.synthetic_family(n_tasks=4, n_features=2, seed=0), embedder="hashing",
                           progress=False, keep_tasks=False)
    with pytest.raises(ValidationError, match="keep_tasks=True"):
        build_preference_pairs(generator, bare)


def test_save_and_load_round_trip(all_pairs, tmp_path):
    path = save_preferences(all_pairs, tmp_path / "prefs.jsonl")
    loaded = load_preferences(path)
    assert len(loaded) == len(all_pairs)
    for a, b in zip(all_pairs, loaded, strict=True):
        for col in ("prompt", "chosen", "rejected", "task_id", "neighbor_ids"):
            assert a[col] == b[col]
        assert a["margin"] == pytest.approx(b["margin"])


def _write(tmp_path, lines):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


GOOD = {"prompt": "Predict stroke in adults.", "chosen": {"intercept": -2, "age": 0.75},
        "rejected": '{"intercept": 1.50, "age": -3}', "task_id": "stroke"}


def test_load_accepts_text_objects_and_messages(tmp_path):
    msg = {**GOOD, "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
           "chosen": [{"role": "assistant", "content": '{"intercept": -2.0, "age": 0.75}'}], "margin": 0.2}
    ds = load_preferences(_write(tmp_path, [GOOD, "", msg]))
    assert len(ds) == 2
    assert ds[0]["prompt"] == [{"role": "user", "content": "Predict stroke in adults."}]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": '{"intercept": -2, "age": 0.75}'}]
    assert ds[0]["rejected"] == [{"role": "assistant", "content": '{"intercept": 1.5, "age": -3}'}]
    assert ds[1]["chosen"] == ds[0]["chosen"] and ds[1]["margin"] == 0.2 and ds[0]["margin"] is None


@pytest.mark.parametrize("line, message", [
    ("{not json", r"line 2: not valid JSON"),
    ({"prompt": "p", "chosen": {"intercept": 1}}, r"line 2: missing field 'rejected'"),
    ({**GOOD, "chosen": '{"intercept": 1, "age": }'}, r"line 2: field 'chosen': the model JSON does not parse"),
    ({**GOOD, "rejected": {"intercept": "high", "age": 1}}, r"line 2: field 'rejected': parameter 'intercept'"),
    ({**GOOD, "rejected": {"intercept": 1, "sex": 1}}, r"line 2: chosen and rejected have different parameters"),
    ({**GOOD, "rejected": GOOD["chosen"]}, r"line 2: chosen and rejected are the same model"),
    ({**GOOD, "margin": -1}, r"line 2: field 'margin'"),
    ({**GOOD, "prompt": [{"role": "robot", "content": "x"}]}, r"line 2: field 'prompt'"),
    ([1, 2], r"line 2: expected a JSON object"),
])
def test_load_errors_name_the_line_and_the_problem(tmp_path, line, message):
    with pytest.raises(ValidationError, match=message):
        load_preferences(_write(tmp_path, [GOOD, line]))


def test_load_missing_and_empty_files(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        load_preferences(tmp_path / "nope.jsonl")
    with pytest.raises(ValidationError, match="holds no preference pairs"):
        load_preferences(_write(tmp_path, [""]))


def test_pairs_of_a_compact_answer_generator_are_json_and_train_in_its_format(synthetic_index, tmp_path,
                                                                               monkeypatch):
    """Pairs hold JSON models whatever the generator writes; DPO and the reward model train on the
    generator's own (compact) answers, so save/load and both trainers work for compact generators."""
    import ragim.train.reward as reward_mod
    import ragim.train.rl as rl_mod
    from ragim.lm.pairs import in_answer_format
    from ragim.lm.reward_model import RewardModel, best_of_n
    from ragim.train import train_sft
    from ragim.train.reward import train_reward_model
    from ragim.train.rl import train_dpo

    gen = train_sft(synthetic_index, base_model="tiny", max_steps=1, progress=False,
                    generator_config=dict(k=2, device="cpu", answer_format="compact"))
    pairs = build_preference_pairs(gen, synthetic_index, n_candidates=4, min_margin=0.0, max_tasks=3,
                                   progress=False)
    assert len(pairs) > 0
    names = gen.param_names_
    fmt = gen.answer_format(names)
    for row in pairs:  # JSON objects with every parameter, in the generator's order
        assert list(json.loads(row["chosen"][0]["content"])) == names
    back = load_preferences(save_preferences(pairs, tmp_path / "pairs.jsonl"))
    compact = in_answer_format(back, fmt)
    for a, b in zip(back, compact, strict=True):
        text = b["chosen"][0]["content"]
        assert text.startswith("[") and fmt.parse(text) == pytest.approx(json.loads(a["chosen"][0]["content"]))
    seen = []
    for mod in (reward_mod, rl_mod):
        real = mod.pairs_dataset
        monkeypatch.setattr(mod, "pairs_dataset", lambda rows, real=real: seen.append(rows) or real(rows))
    rm = train_reward_model(back, base_model="tiny", max_steps=1, progress=False, device="cpu",
                            param_names=names, answer_format=fmt)
    assert 0.0 <= rm.val_accuracy_ <= 1.0 or np.isnan(rm.val_accuracy_)
    train_dpo(gen, back, max_steps=1, progress=False)
    train_dpo(gen, compact, max_steps=1, progress=False)  # pairs already in its own format too
    assert seen and all(r["chosen"][0]["content"].startswith("[") for rows in seen for r in rows)
    # the reward model keeps the format it was trained on: saved, used to score JSON pairs, and
    # checked against the generator best-of-n reranks
    assert rm.answer_format_ is fmt
    loaded = RewardModel.load(rm.save(tmp_path / "rm"))
    assert (loaded.answer_format_.name, loaded.answer_format_.keys) == ("compact", tuple(names))
    assert loaded.pairwise_accuracy(back) == loaded.pairwise_accuracy(compact)
    json_gen = LMGenerator(base_model="tiny", k=2, device="cpu")
    with pytest.raises(ValidationError, match="trained on 'compact' answers"):
        best_of_n(json_gen, loaded, "Predict a fatal outcome in adults.", synthetic_index, n=2)
    with pytest.raises(ValidationError, match="compact"):
        in_answer_format([{"prompt": "p", "chosen": "[1, 2]", "rejected": "[1, 2, 3]"}], fmt)


def test_answers_that_would_train_on_a_wrong_model_are_refused_pair_by_pair():
    from ragim.lm.answer import answer_format, answer_values
    from ragim.lm.pairs import check_pair_names, in_answer_format

    fmt = answer_format(["intercept", "age"], name="compact", decimals=1)
    pairs = [
        {"prompt": "p", "chosen": '{"intercept": 1, "intercept": 5, "age": 0.8}', "rejected": {"intercept": 0, "age": 0}},
        {"prompt": "p", "chosen": {"intercept": 1.01, "age": 0.5}, "rejected": {"intercept": 1.02, "age": 0.5}},
        {"prompt": "p", "chosen": {"intercept": -25, "age": 0.5}, "rejected": {"intercept": 1, "age": 0.5}},
        {"prompt": "p", "chosen": {"intercept": 1, "bmi": 0.5}, "rejected": {"intercept": 1, "age": 0.5}},
    ]
    with pytest.raises(ValidationError) as err:
        in_answer_format(pairs, fmt)
    found = err.value.problems
    assert any(p.startswith("pair 1: chosen:") and "more than once" in p for p in found)
    assert any(p.startswith("pair 2:") and "same model" in p and "1 decimal place)" in p for p in found)
    assert any(p.startswith("pair 3: chosen:") and "outside [-20, 20]" in p for p in found)
    assert any(p.startswith("pair 4: chosen:") and "unexpected key 'bmi'" in p and "\n" not in p for p in found)
    with pytest.raises(ValueError, match="no parameter names"):
        answer_values([-2, 0.8])
    with pytest.raises(ValueError, match="no parameter names"):
        answer_values("[-2, 0.8]")
    with pytest.raises(ValidationError, match="must be an AnswerFormat"):
        answer_values("[1, 2]", answer_format="compact")
    # compact answers are read with the generator's format, and only with it
    check_pair_names([{"prompt": "p", "chosen": "[1, 2]", "rejected": "[0, 2]"}], ["intercept", "age"],
                     answer_format=fmt)
    with pytest.raises(ValidationError, match="no parameter names"):
        check_pair_names([{"prompt": "p", "chosen": "[1, 2]", "rejected": "[0, 2]"}], ["intercept", "age"])


def test_pairs_leave_the_generators_validation_tasks_unseen(synthetic_index):
    """By default no pair is built for a validation task of the generator, and none is shown as
    a neighbour, so its correction weight is still validated on unseen tasks."""
    gen = LMGenerator(base_model="tiny", k=3, device="cpu")
    gen.val_task_ids_ = list(synthetic_index.ids[:2])
    pairs = build_preference_pairs(gen, synthetic_index, n_candidates=3, min_margin=0.0, pairs="all",
                                   progress=False)
    assert len(pairs) > 0
    assert not set(pairs["task_id"]) & set(gen.val_task_ids_)
    assert not {nb for row in pairs["neighbor_ids"] for nb in row} & set(gen.val_task_ids_)
    chosen = build_preference_pairs(gen, synthetic_index, n_candidates=3, min_margin=0.0,
                                    task_ids=gen.val_task_ids_, progress=False)
    assert set(chosen["task_id"]) <= set(gen.val_task_ids_)  # named tasks are used as asked


def test_a_pair_that_reverses_another_in_a_preference_file_is_said(tmp_path):
    """A hand-edited file holding a pair and its reversal (the same prompt, chosen and rejected
    swapped) was loaded silently: a file of 6 pairs and their 6 reversals trained a reward model
    (val accuracy 0.5) and DPO without a word. load_preferences now names the lines."""
    from ragim.errors import DataWarning

    a = {"prompt": "p", "chosen": {"intercept": 1, "age": 0.5}, "rejected": {"intercept": -1, "age": 0}}
    b = {**a, "chosen": a["rejected"], "rejected": a["chosen"]}
    other = {**b, "prompt": "q"}                       # another task may prefer it: no clash
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in (a, other, a, b)))
    with pytest.warns(DataWarning, match=r"1 pair\(s\) prefer the other answer of an earlier pair with the same "
                                         r"prompt \(line 4 reverses line 1\)"):
        assert len(load_preferences(path)) == 4
    path.write_text("".join(json.dumps(x) + "\n" for x in (a, other, a)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        load_preferences(path)


def test_a_task_given_twice_to_build_preference_pairs_is_refused(generator, synthetic_index):
    """task_ids=[a, a] gave a's pairs twice (2 pairs of one task); refused, as train_grpo refuses it."""
    with pytest.raises(ValidationError, match=r"task_ids names 1 task\(s\) more than once \(\['syn-0000000'\]\)"):
        build_preference_pairs(generator, synthetic_index, task_ids=["syn-0000000"] * 2, n_candidates=2,
                               progress=False)
