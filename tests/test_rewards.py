"""Tests of ragim.train.rewards: TRL-signature verifiable rewards (fast, offline)."""

from __future__ import annotations

import json
import math
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

from ragim.errors import ValidationError
from ragim.params import ModelParams, param_names
from ragim.schema import FeatureSchema
from ragim.train.rewards import (
    DEFAULT_FLOOR,
    REWARDS,
    auroc_reward,
    combine_rewards,
    decode_heldout,
    encode_heldout,
    held_out_log_likelihood,
    load_sign_constraints,
    make_sign_agreement,
    parse_validity,
    rank_candidates,
    score_params,
    sign_agreement,
    sparsity_reward,
)
from ragim.train.rewards import VerifiableRewardConfig as RewardConfig

NAMES = ["intercept", "age", "chol"]
HELDOUT = {"kind": "logistic", "D": [[-1.0, 0.5], [0.0, -1.0], [1.0, 0.0], [2.0, 1.0]], "y": [0, 0, 1, 1]}
VALID = '{"intercept": -0.5, "age": 1.2, "chol": 0.01}'

MALFORMED = {
    "bad_json": '{"intercept": -0.5, "age": 1.2, "chol": }',
    "missing_key": '{"intercept": -0.5, "age": 1.2}',
    "extra_key": '{"intercept": -0.5, "age": 1.2, "chol": 0.01, "bmi": 1}',
    "reordered": '{"age": 1.2, "intercept": -0.5, "chol": 0.01}',
    "nan": '{"intercept": NaN, "age": 1.2, "chol": 0.01}',
    "out_of_range": '{"intercept": -0.5, "age": 25, "chol": 0.01}',
    "not_a_number": '{"intercept": "-0.5", "age": 1.2, "chol": 0.01}',
    "array": "[-0.5, 1.2, 0.01]",
    "trailing_text": VALID + " I hope this helps",
    "empty": "",
    "none": None,
    "empty_conversation": [],
}


def _call(func, completions, **columns):
    return func(prompts=[None] * len(completions), completions=completions, **columns)


# ----------------------------------------------------------------------------- valid and malformed
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_completions_get_fixed_low_rewards(case):
    c = [VALID, MALFORMED[case]]
    cols = {"param_names": [NAMES, NAMES], "heldout": [HELDOUT, HELDOUT]}
    ll = _call(held_out_log_likelihood, c, **cols)
    assert ll[1] == DEFAULT_FLOOR and ll[0] > DEFAULT_FLOOR
    assert _call(auroc_reward, c, **cols)[1] == 0.5
    assert _call(parse_validity, c, **cols) == [1.0, 0.0]
    assert _call(sparsity_reward, c, **cols)[1] == 0.0
    assert _call(sign_agreement, c, sign_constraints={"age": 1}, **cols) == [1.0, 0.0]
    assert _call(combine_rewards({"validity": 1.0, "log_likelihood": 0.5}), c, **cols)[1] == 0.5 * DEFAULT_FLOOR


def test_valid_completion_values_and_conversational_format():
    conv = [{"role": "assistant", "content": VALID}]
    parts = [{"role": "assistant", "content": [{"type": "text", "text": VALID}]}]
    c = [VALID, conv, parts, "  \n" + VALID + "\n"]
    cols = {"param_names": [NAMES] * 4, "heldout": [HELDOUT] * 4}
    ll = _call(held_out_log_likelihood, c, **cols)
    assert len(set(ll)) == 1 and -16.2 < ll[0] < 0
    assert _call(auroc_reward, c, **cols) == [1.0] * 4
    assert _call(parse_validity, c, **cols) == [1.0] * 4
    assert _call(sparsity_reward, c, **cols) == [0.5] * 4  # chol = 0.01 < 0.05, age = 1.2 is not
    assert _call(sparsity_reward, c, sparsity_threshold=2.0, **cols) == [1.0] * 4


def test_max_abs_column_is_respected():
    c = ['{"intercept": 0, "age": 15, "chol": 0}'] * 2
    assert parse_validity(None, c, param_names=NAMES, max_abs=[20, 10]) == [1.0, 0.0]


def test_log_likelihood_and_auroc_match_metrics():
    from ragim.metrics import EPS, task_metrics

    rng = np.random.default_rng(0)
    D = rng.normal(size=(200, 2))
    y = (rng.random(200) < 0.4).astype(int)
    h = {"D": D.tolist(), "y": y.tolist()}
    coefs = [0.3, -1.0, 25.0 / 20]
    text = json.dumps(dict(zip(NAMES, coefs, strict=True)))
    z = coefs[0] + D @ np.array(coefs[1:])
    m = task_metrics(y, 1 / (1 + np.exp(-z)))
    assert held_out_log_likelihood(None, [text], param_names=NAMES, heldout=h)[0] == pytest.approx(-m["log_loss"])
    assert auroc_reward(None, [text], param_names=NAMES, heldout=h)[0] == pytest.approx(m["auroc"])
    assert EPS == 1e-7


def test_floor_is_below_every_valid_score_and_configurable():
    worst = '{"intercept": 0, "age": -20, "chol": -20}'  # maximally confident and wrong
    h = {"D": [[10.0, 10.0], [-10.0, -10.0]], "y": [1, 0]}
    r = held_out_log_likelihood(None, [worst, "x"], param_names=NAMES, heldout=h)
    assert r[0] == pytest.approx(math.log(1e-7)) and r[1] < r[0]
    assert held_out_log_likelihood(None, ["x"], param_names=NAMES, heldout=h, floor=-99.0) == [-99.0]


def test_auroc_one_class_is_half():
    h = {"D": [[0.0, 1.0], [1.0, 0.0]], "y": [1, 1]}
    assert auroc_reward(None, [VALID], param_names=NAMES, heldout=h) == [0.5]


def test_dataset_errors_raise_clear_messages():
    with pytest.raises(ValidationError, match="do not fit heldout 'D' with 2 columns"):
        held_out_log_likelihood(None, [VALID], param_names=["intercept", "age"], heldout=HELDOUT)
    with pytest.raises(ValidationError, match="3 values for 2 completions"):
        parse_validity(None, [VALID, VALID], param_names=[NAMES] * 3)
    with pytest.raises(ValidationError, match="'heldout' dataset column"):
        held_out_log_likelihood(None, [VALID], param_names=NAMES)
    with pytest.raises(ValidationError, match="only 0/1"):
        decode_heldout({"D": [[1.0]], "y": [2]})
    with pytest.raises(ValidationError, match="1 rows but 'y' has 2"):
        decode_heldout({"D": [[1.0]], "y": [0, 1]})
    with pytest.raises(ValidationError, match="encode_heldout"):
        decode_heldout([1, 2])


# ----------------------------------------------------------------------------- hedging order
def _true_task(n=20000, coef=3.0, intercept=-0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.normal(size=n)})
    schema = FeatureSchema.infer(X).fit(X)
    names = param_names("logistic", schema)
    D = np.asarray(encode_heldout("logistic", schema, X, np.zeros(n, dtype=int))["D"])
    y = (rng.random(n) < 1 / (1 + np.exp(-(intercept + coef * D[:, 0])))).astype(int)
    return schema, names, X, y, encode_heldout("logistic", schema, X, y)


def test_log_likelihood_orders_the_five_hedging_cases():
    schema, names, X, y, heldout = _true_task()
    base = math.log(y.mean() / (1 - y.mean()))
    cases = {  # (intercept, coefficient)
        "confident correct": (-0.5, 3.0),
        "hedged correct": (-0.5, 0.9),
        "uninformative": (base, 0.0),
        "hedged wrong": (-0.5, -0.9),
        "confident wrong": (-0.5, -3.0),
    }
    completions = [json.dumps({"intercept": round(b0, 3), "x": b1}) for b0, b1 in cases.values()]
    r = held_out_log_likelihood(None, completions, param_names=names, heldout=heldout)
    assert all(a > b for a, b in zip(r, r[1:], strict=False)), dict(zip(cases, r, strict=True))
    assert rank_candidates(completions[::-1], param_names=names, heldout=heldout) == [4, 3, 2, 1, 0]
    # score_params reuses the same code path on raw rows
    p = ModelParams.from_dict("logistic", schema, {"intercept": -0.5, "x": 3.0})
    assert score_params(p, X, y)["log_likelihood"] == pytest.approx(r[0], abs=1e-6)


# ----------------------------------------------------------------------------- combination and config
def test_combine_rewards_weights_names_and_callables():
    c = [VALID, "garbage"]
    cols = {"param_names": NAMES, "heldout": HELDOUT}
    ll = held_out_log_likelihood(None, c, **cols)
    sp = sparsity_reward(None, c, **cols)
    f = combine_rewards({"log_likelihood": 2.0, parse_validity: 0.5, "sparsity_reward": -1.0})
    assert f.__name__ == "combined_reward"
    assert f(None, c, **cols) == pytest.approx([2 * ll[i] + 0.5 * (i == 0) - sp[i] for i in range(2)])
    assert combine_rewards({lambda prompts, completions, **kw: [None, 1.0]: 1.0})(None, c) == [None, 1.0]
    with pytest.raises(ValidationError, match="unknown reward 'bleu'"):
        combine_rewards({"bleu": 1.0})
    with pytest.raises(ValidationError, match="finite number"):
        combine_rewards({"auroc": float("nan")})
    assert set(REWARDS) == {"log_likelihood", "auroc", "validity", "sparsity", "sign"}


def test_reward_config_build_for_trl(tmp_path):
    path = tmp_path / "signs.json"
    path.write_text(json.dumps({"age": 1}))
    cfg = RewardConfig(weights={"log_likelihood": 1.0, "validity": 0.5, "sparsity": 0.1, "sign": 0.2},
                       sparsity_threshold=2.0, sign_constraints=str(path), floor=-30.0)
    funcs, weights = cfg.build()
    assert [f.__name__ for f in funcs] == ["held_out_log_likelihood", "parse_validity", "sparsity_reward",
                                           "sign_agreement"]
    assert weights == [1.0, 0.5, 0.1, 0.2]
    cols = {"param_names": [NAMES] * 2, "heldout": [HELDOUT] * 2}
    c = [VALID, "bad"]
    parts = [f(prompts=None, completions=c, **cols) for f in funcs]
    assert parts[0][1] == -30.0 and parts[2] == [1.0, 0.0] and parts[3] == [1.0, 0.0]
    expected = [sum(w * p[i] for w, p in zip(weights, parts, strict=True)) for i in range(2)]
    assert cfg.combined()(prompts=None, completions=c, **cols) == pytest.approx(expected)
    assert pickle.loads(pickle.dumps(funcs))[3](None, c, **cols) == parts[3]  # picklable
    with pytest.raises(ValidationError, match="floor must be below"):
        RewardConfig(floor=-5.0)
    with pytest.raises(ValidationError, match="unknown reward"):
        RewardConfig(weights={"typo": 1.0})



def test_reward_weights_negative_zero_and_repeated_names_are_refused():
    # a sign typo would have GRPO lower the held-out likelihood; all zeros maximise nothing
    with pytest.raises(ValidationError, match=r"must be >= 0.*log_likelihood=-1"):
        RewardConfig(weights={"log_likelihood": -1.0})
    with pytest.raises(ValidationError, match="every reward weight is 0"):
        RewardConfig(weights={"log_likelihood": 0.0, "validity": 0})
    with pytest.raises(ValidationError, match="finite"):
        RewardConfig(weights={"log_likelihood": math.inf})
    assert RewardConfig(weights={"log_likelihood": 1.0, "validity": 0.0}).weights["validity"] == 0
    import typer

    from ragim.cli import _reward_weights

    with pytest.raises(typer.BadParameter, match="'auroc' twice"):
        _reward_weights("auroc=1,auroc=2")
    assert _reward_weights("auroc=1,validity") == {"auroc": 1.0, "validity": 1.0}


# ----------------------------------------------------------------------------- sign constraints
def test_sign_constraints_from_json_and_csv(tmp_path):
    j = tmp_path / "s.json"
    j.write_text('{"age": 1, "chol": -1, "thalch": "-"}')
    c = tmp_path / "s.csv"
    c.write_text("term,sign\nage,+1\nchol,-1\nthalch,-\n")
    expected = {"age": 1, "chol": -1, "thalch": -1}
    assert load_sign_constraints(j) == expected and load_sign_constraints(c) == expected
    reward = make_sign_agreement(j)
    completions = ['{"intercept": 0, "age": 0.5, "chol": 0.5}', '{"intercept": 0, "age": 0.5, "chol": 0}', "x"]
    with pytest.warns(UserWarning, match="thalch"):
        r = reward(prompts=None, completions=completions, param_names=[NAMES] * 3)
    assert r == [0.5, 1.0, 0.0] and reward.__name__ == "sign_agreement"
    with warnings.catch_warnings():  # warned once per term
        warnings.simplefilter("error")
        reward(prompts=None, completions=completions, param_names=[NAMES] * 3)
    strict = make_sign_agreement({"age": 1, "chol": -1}, strict=True)
    assert strict(None, completions, param_names=NAMES) == [0.5, 0.5, 0.0]


@pytest.mark.parametrize(("name", "text", "match"), [
    ("s.json", '{"age": 2}', r"term 'age' has sign 2"),
    ("s.json", '{"age": 1,', "not valid JSON"),
    ("s.json", "[1, -1]", "must map term -> sign"),
    ("s.csv", "feature,direction\nage,1\n", "columns 'term,sign'"),
    ("s.csv", "term,sign\nage,up\n", "term 'age' has sign 'up'"),
    ("s.csv", "term,sign\nage,1\nage,-1\n", "more than once"),
    ("s.yaml", "age: 1", r"must end in \.json or \.csv"),
])
def test_bad_sign_constraint_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValidationError, match=match):
        load_sign_constraints(path)


def test_missing_sign_file_and_missing_column(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        load_sign_constraints(tmp_path / "nope.json")
    with pytest.raises(ValidationError, match="sign_constraints"):
        sign_agreement(None, [VALID], param_names=NAMES)


# ----------------------------------------------------------------------------- datasets and TRL
def test_heldout_round_trip_through_hf_datasets(frame):
    datasets = pytest.importorskip("datasets")
    schema = FeatureSchema.infer(frame).fit(frame)
    y = np.arange(len(frame)) % 2
    rows = []
    for kind in ("logistic", "gam"):
        enc = encode_heldout(kind, schema, frame, y)
        rows.append({"prompt": f"task {kind}", "param_names": param_names(kind, schema), "heldout": enc})
    ds = datasets.Dataset.from_list(rows)
    for kind, row in zip(("logistic", "gam"), ds, strict=True):
        D, yy = decode_heldout(row["heldout"])
        from ragim.params import design_matrix
        np.testing.assert_array_equal(D, design_matrix(kind, schema, frame))
        np.testing.assert_array_equal(yy, y)
        assert row["heldout"]["kind"] == kind
        assert decode_heldout(json.dumps(row["heldout"]))[0].shape == D.shape


def test_rewards_called_the_way_grpo_trainer_calls_them(frame):
    """Mimic trl 1.16 GRPOTrainer._calculate_rewards: columns repeated per generation."""
    datasets = pytest.importorskip("datasets")
    schema = FeatureSchema.infer(frame).fit(frame)
    names = param_names("logistic", schema)
    y = (frame["sex"].to_numpy() > 0).astype(int)
    ds = datasets.Dataset.from_list([{
        "prompt": [{"role": "user", "content": "Predict disease"}],
        "param_names": names, "heldout": encode_heldout("logistic", schema, frame, y),
        "sign_constraints": {"sex": 1}, "max_abs": 20.0,
    }])
    inputs = [ds[0], ds[0]]  # num_generations = 2
    keys = [k for k in inputs[0] if k not in ["prompt", "completion", "completion_ids"]]
    reward_kwargs = {k: [ex[k] for ex in inputs] for k in keys}
    reward_kwargs.update(trainer_state=object(), log_extra=lambda *a: None, log_metric=lambda *a: None)
    good = json.dumps({n: (1.0 if n == "sex" else 0.0) for n in names})
    completions = [[{"role": "assistant", "content": good}], [{"role": "assistant", "content": "{"}]]
    funcs = [*REWARDS.values(), *RewardConfig(weights=dict.fromkeys(REWARDS, 1.0)).build()[0],
             RewardConfig().combined()]
    for func in funcs:
        out = func(prompts=[ex["prompt"] for ex in inputs], completions=completions,
                   completion_ids=[[1, 2], [3]], **reward_kwargs)
        assert len(out) == 2 and all(isinstance(v, float) for v in out), func
        assert out[0] > out[1] or func is REWARDS["sparsity"], (func, out)


def test_a_misspelt_column_or_option_is_warned_not_silently_defaulted(frame):
    """TRL passes every dataset column, so unknown keywords are ignored; one close to a column
    or option the rewards read (and absent) is most likely a typo of it."""
    import warnings

    from ragim.errors import DataWarning

    schema = FeatureSchema.infer(frame).fit(frame)
    names = param_names("logistic", schema)
    text = json.dumps(dict.fromkeys(names, 0.5))
    for typo, meant in (("answerformat", "answer_format"), ("maxabs", "max_abs"),
                        ("sparsity_treshold", "sparsity_threshold")):
        with pytest.warns(DataWarning, match=f"do not read '{typo}'; did you mean '{meant}'"):
            REWARDS["validity"](None, [text], param_names=[names], **{typo: [0.1]})
    with warnings.catch_warnings():  # TRL's own and the dataset's other columns are not typos
        warnings.simplefilter("error", DataWarning)
        REWARDS["validity"](None, [text], param_names=[names], task_id=["t"], neighbor_ids=[["a"]],
                            trainer_state=object(), completion_ids=[[1]], max_abs=[20.0])


@pytest.mark.parametrize("values", [{"intercept": -0.5, "age": 1.2, "chol": 0.01},
                                    {"intercept": 3, "age": -20, "chol": 0},
                                    {"intercept": 0.04, "age": 0.02, "chol": -7.5}])
def test_a_compact_completion_gets_the_reward_of_the_same_json_completion(values):
    """Every reward scores the generator's answer format through the one codec: the compact
    answer of a model and its JSON answer get the same reward, with the format as a keyword
    or as a dataset column (one value per completion, as GRPOTrainer passes it)."""
    from ragim.lm.answer import answer_format

    as_json = answer_format(NAMES, name="json").write(values)
    as_compact = answer_format(NAMES, name="compact").write(values)
    assert as_compact.startswith("[") and as_json.startswith("{")
    cons = {"age": 1, "chol": -1}
    funcs = [*REWARDS.values(), *RewardConfig(weights=dict.fromkeys(REWARDS, 1.0)).build()[0],
             RewardConfig(weights={"log_likelihood": 1.0, "sparsity": 0.5}).combined(),
             make_sign_agreement(cons)]
    for func in funcs:
        kw = {"param_names": NAMES, "heldout": HELDOUT, "sign_constraints": cons}
        ref = func(None, [as_json], **kw)
        compact = func(None, [as_compact], answer_format="compact", **kw)
        column = func(None, [as_json, as_compact], answer_format=["json", "compact"],
                      **{k: [v, v] for k, v in kw.items()})
        assert compact == ref and column == ref + ref, (func, ref, compact, column)
    # the JSON text is malformed for the compact codec and the other way round
    ll = held_out_log_likelihood(None, [as_json, as_compact], param_names=NAMES, heldout=HELDOUT,
                                 answer_format=["compact", "json"])
    assert ll == [DEFAULT_FLOOR, DEFAULT_FLOOR]
    b = np.array([values[n] for n in NAMES], dtype=float)
    p = 1 / (1 + np.exp(-(b[0] + np.asarray(HELDOUT["D"]) @ b[1:])))
    p = np.clip(p, 1e-7, 1 - 1e-7)
    y = np.asarray(HELDOUT["y"])
    expected = float(np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    got = held_out_log_likelihood(None, [as_compact], param_names=NAMES, heldout=HELDOUT,
                                  answer_format="compact")
    assert got[0] == pytest.approx(expected, abs=1e-9)


def test_an_unknown_answer_format_is_refused_by_name():
    with pytest.raises(ValidationError, match=r"unknown answer_format 'yaml'.*compact.*json"):
        parse_validity(None, [VALID], param_names=NAMES, answer_format="yaml")


def test_rank_candidates_is_stable():
    c = ["bad", VALID, "worse", VALID]
    assert rank_candidates(c, param_names=NAMES, heldout=HELDOUT) == [1, 3, 0, 2]
    assert rank_candidates(c, param_names=NAMES, heldout=HELDOUT, reward="validity") == [1, 3, 0, 2]


def test_old_module_and_config_name_work_with_a_deprecation_warning():
    import ragim
    import ragim.train.rewards as new

    with pytest.warns(DeprecationWarning, match=r"use ragim.train.rewards.VerifiableRewardConfig"):
        from ragim.rewards import RewardConfig as Old
    assert Old is new.VerifiableRewardConfig
    with pytest.warns(DeprecationWarning, match=r"use ragim.train.rewards.held_out_log_likelihood"):
        assert ragim.rewards.held_out_log_likelihood is held_out_log_likelihood
    with pytest.warns(DeprecationWarning, match="use VerifiableRewardConfig"):
        assert new.RewardConfig is new.VerifiableRewardConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert "RewardConfig" in dir(ragim.rewards) and "auroc_reward" in ragim.rewards.__all__
    with pytest.raises(AttributeError, match="moved to ragim.train.rewards"):
        ragim.rewards.no_such_reward  # noqa: B018
    # the new name does not clash with TRL's reward-model config
    from trl import RewardConfig as TRLRewardConfig

    assert new.VerifiableRewardConfig is not TRLRewardConfig
    with pytest.raises(ValidationError, match="max_abs must be a number > 0"):
        new.VerifiableRewardConfig(max_abs=0)
