"""Constrained JSON-number decoding: always parseable, even for adversarial models, with
either decoder (llguidance or the built-in loop)."""

from __future__ import annotations

import math
import re
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ragim.errors import GenerationError, ValidationError
from ragim.lm import (
    format_json_numbers,
    generate_json_numbers,
    load_base_model,
    parse_json_numbers,
)
from ragim.lm.answer import DECODERS, JSONAnswerFormat, _skeleton
from ragim.lm.constrained import answer_regex, number_regex

ODD_KEYS = [
    "intercept",
    "a b",
    "x[1]",
    "é",
    'quote"key',
    "back\\slash",
    "sex[male]",
    "日本",
    "",
    "tab\tkey",
]
MANY_KEYS = ODD_KEYS + [f"f{i}" for i in range(55)]
NUMBER_RE = re.compile(r"-?(0|[1-9]\d{0,2})(\.\d{1,3})?")


@pytest.fixture(params=DECODERS)
def decoder(request):
    """Every parse-guarantee test runs on both decoders: llguidance and the built-in loop."""
    return request.param



class BiasedHead(torch.nn.Module):
    """lm_head plus a fixed bias: makes a model prefer chosen tokens."""

    def __init__(self, head: torch.nn.Module, bias: torch.Tensor):
        super().__init__()
        self.head = head
        self.register_buffer("bias", bias)

    def forward(self, h):
        return self.head(h) + self.bias


def _tiny(seed: int = 0):
    return load_base_model("tiny", device="cpu", seed=seed)


def _prompt(tok) -> torch.Tensor:
    return tok.apply_chat_template(
        [{"role": "user", "content": "Return the coefficients."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]


def _numbers(text: str, keys) -> list[str]:
    """Split a decoder answer back into its number strings using the skeleton."""
    pieces = _skeleton(keys)
    out, pos = [], 0
    for i in range(len(keys)):
        assert text.startswith(pieces[i], pos)
        pos += len(pieces[i])
        end = text.index(pieces[i + 1], pos) if i + 1 < len(keys) else len(text) - 1
        out.append(text[pos:end])
        pos = end
    return out


def _check(results, keys, max_abs=20.0):
    for r in results:
        vals = parse_json_numbers(r.text, keys, max_abs=max_abs)
        assert vals == r.values
        assert list(vals) == list(keys)
        assert all(abs(v) <= max_abs for v in vals.values())
        for s in _numbers(r.text, keys):
            assert s.startswith(" ") and NUMBER_RE.fullmatch(s[1:]), s
        assert r.n_tokens == len(r.token_ids) > 0
        assert math.isfinite(r.logprob) and r.logprob <= 0


def test_greedy_tiny_parses_and_is_deterministic(decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny()
    keys = ["intercept", "age", "sex[male]"]
    a = gen(model, tok, _prompt(tok), keys)
    b = gen(model, tok, _prompt(tok)[0], keys)  # 1-D prompt accepted
    assert len(a) == 1 and a[0].text == b[0].text
    assert a[0].text.startswith('{"intercept": ') and a[0].text.endswith("}")
    _check(a, keys)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_adversarial_random_weights_always_parse(seed, decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny(seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(60.0)  # very peaked, essentially arbitrary preferences
    g = torch.Generator().manual_seed(seed)
    ids = _prompt(tok)
    greedy = gen(model, tok, ids, MANY_KEYS)
    sampled = gen(
        model, tok, ids, MANY_KEYS, temperature=1.5, top_p=0.9, num_candidates=2, generator=g
    )
    _check(greedy + sampled, MANY_KEYS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_token_preferences_always_parse(seed, decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny(seed)
    g = torch.Generator().manual_seed(100 + seed)
    bias = torch.randn(len(tok), generator=g) * 25.0
    model.lm_head = BiasedHead(model.lm_head, bias)
    for kwargs in [
        {},
        {"temperature": 2.0, "generator": g},
        {"max_abs": 0.5, "max_int_digits": 1, "max_frac_digits": 1},
        {"max_abs": 999.0, "max_frac_digits": 0, "temperature": 1.0, "generator": g},
    ]:
        res = gen(model, tok, _prompt(tok), ODD_KEYS, **kwargs)
        _check(res, ODD_KEYS, max_abs=kwargs.get("max_abs", 20.0))


def _bias_for(tok, favour: dict[str, float], stop: float | None = None) -> torch.Tensor:
    texts = [t.replace("\u0120", " ") for t in tok.convert_ids_to_tokens(list(range(len(tok))))]
    bias = torch.zeros(len(tok))
    if stop is not None:
        for i, t in enumerate(texts):
            if t and t[0] not in "0123456789.-":
                bias[i] = stop
    for t, b in favour.items():
        bias[texts.index(t)] = b
    return bias


def test_model_that_never_stops_is_cut_by_the_grammar(decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny()
    bias = _bias_for(tok, {"9": 100.0, ".": 50.0}, stop=-100.0)
    model.lm_head = BiasedHead(model.lm_head, bias)
    res = gen(model, tok, _prompt(tok), ["a", "b", "c"])
    _check(res, ["a", "b", "c"])
    for s in _numbers(res[0].text, ["a", "b", "c"]):
        assert s.endswith(".999"), s  # ran to max_frac_digits, then was stopped
    with pytest.warns(DeprecationWarning, match="max_new_tokens_per_value is ignored"):
        again = gen(model, tok, _prompt(tok), ["a", "b", "c"],
                                      max_new_tokens_per_value=1)
    assert again[0].text == res[0].text  # the grammar, not a token budget, bounds each number


def test_model_that_always_stops_still_writes_a_number(decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny()
    model.lm_head = BiasedHead(model.lm_head, _bias_for(tok, {}, stop=100.0))
    keys = ["a", "b", "c"]
    res = gen(model, tok, _prompt(tok), keys, temperature=1.0)
    _check(res, keys)
    for s in _numbers(res[0].text, keys):
        assert re.fullmatch(r" -?\d{1,2}(\.\d)?", s), s


def test_range_is_respected_by_construction(decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny()
    model.lm_head = BiasedHead(model.lm_head, _bias_for(tok, {"9": 100.0, " 1": 90.0}))
    res = gen(model, tok, _prompt(tok), ["a", "b"], max_abs=20.0)
    _check(res, ["a", "b"])
    assert all(v <= 20.0 for v in res[0].values.values())
    res = gen(model, tok, _prompt(tok), ["a"], max_abs=1.5)
    _check(res, ["a"], max_abs=1.5)


def test_num_candidates_and_sampling(decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny()
    keys = [f"k{i}" for i in range(8)]
    g = torch.Generator().manual_seed(0)
    res = gen(
        model, tok, _prompt(tok), keys, temperature=1.0, num_candidates=4, generator=g
    )
    assert len(res) == 4
    _check(res, keys)
    assert len({r.text for r in res}) > 1
    g2 = torch.Generator().manual_seed(0)
    again = gen(
        model, tok, _prompt(tok), keys, temperature=1.0, num_candidates=4, generator=g2
    )
    assert [r.text for r in again] == [r.text for r in res]
    greedy = gen(model, tok, _prompt(tok), keys, num_candidates=3)
    assert len(greedy) == 3 and len({r.text for r in greedy}) == 1
    tight = gen(
        model, tok, _prompt(tok), keys, temperature=1.0, top_p=1e-6, num_candidates=2, generator=g
    )
    assert tight[0].text == tight[1].text == greedy[0].text  # top_p -> 0 is greedy


def test_empty_keys(decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny()
    res = gen(model, tok, _prompt(tok), [])
    assert res[0].text == "{}" and res[0].values == {}


def test_generate_validates_arguments(decoder):
    gen = partial(generate_json_numbers, decoder=decoder)
    model, tok = _tiny()
    ids = _prompt(tok)
    with pytest.raises(ValidationError, match="duplicate key 'a'"):
        gen(model, tok, ids, ["a", "a"])
    with pytest.raises(ValidationError, match="temperature"):
        gen(model, tok, ids, ["a"], temperature=-1)
    with pytest.raises(ValidationError, match="top_p"):
        gen(model, tok, ids, ["a"], top_p=0)
    with pytest.raises(ValidationError, match="prompt_ids"):
        gen(model, tok, torch.zeros(2, 3, dtype=torch.long), ["a"])
    with pytest.raises(ValidationError, match="num_candidates"):
        gen(model, tok, ids, ["a"], num_candidates=0)
    with pytest.raises(ValidationError, match="max_int_digits"):
        gen(model, tok, ids, ["a"], max_int_digits=4)


# --------------------------------------------------------------------------- parse


@pytest.mark.parametrize(
    ("text", "keys", "message"),
    [
        ('{"a": 1,', ["a"], r"not valid JSON \(.* at line 1 column 9, char 8"),
        ("not json", ["a"], "not valid JSON"),
        ('{"a": 1}', ["a", "b"], "missing keys: 'b'"),
        ('{"a": 1, "b": 2, "c": 3}', ["a"], "extra keys: 'b', 'c'"),
        ('{"a": 25}', ["a"], r"value for key 'a' is 25.0, outside \[-20, 20\]"),
        ('{"a": -20.5}', ["a"], r"value for key 'a' is -20.5, outside"),
        ('{"a": NaN}', ["a"], "value for key 'a' is not finite: nan"),
        ('{"a": Infinity}', ["a"], "value for key 'a' is not finite: inf"),
        ('{"a": "1"}', ["a"], "value for key 'a' is not a number but str"),
        ('{"a": true}', ["a"], "not a number but bool"),
        ('{"a": {"x": 1}}', ["a"], "not a number but object"),
        ('{"b": 1, "a": 2}', ["a", "b"], "keys out of order"),
        ('{"a": 1, "a": 2}', ["a"], "duplicated keys: 'a'"),
        ("[]", [], "expected a JSON object, got array"),
        ("3", ["a"], "expected a JSON object, got int"),
    ],
)
def test_parse_errors_name_the_problem(text, keys, message):
    with pytest.raises(GenerationError, match=message):
        parse_json_numbers(text, keys)


def test_parse_reports_all_problems_and_accepts_good_text():
    with pytest.raises(GenerationError) as err:
        parse_json_numbers('{"a": 99, "z": 1}', ["a", "b"])
    msg = str(err.value)
    assert "missing keys: 'b'" in msg and "extra keys: 'z'" in msg and "'a' is 99.0" in msg
    assert parse_json_numbers('  {"a b": 1, "é": -0}\n', ["a b", "é"]) == {"a b": 1.0, "é": 0.0}
    assert parse_json_numbers('{"a": 30}', ["a"], max_abs=50) == {"a": 30.0}


# --------------------------------------------------------------------------- format


def test_format_is_canonical():
    keys = ["intercept", "a b", 'quote"key', "é"]
    vals = {"intercept": -0.1234, "a b": 2.0, 'quote"key': 100.0, "é": -0.0001}
    text = format_json_numbers(vals, keys)
    assert text == '{"intercept": -0.123, "a b": 2, "quote\\"key": 20, "é": 0}'
    assert parse_json_numbers(text, keys) == {
        "intercept": -0.123,
        "a b": 2.0,
        'quote"key': 20.0,
        "é": 0.0,
    }
    assert format_json_numbers({"x": 1.25}, ["x"], decimals=1) == '{"x": 1.2}'
    assert format_json_numbers({"x": -50}, ["x"], max_abs=5) == '{"x": -5}'
    assert format_json_numbers({}, []) == "{}"


def test_format_rejects_bad_values():
    with pytest.raises(ValidationError, match="missing value for key 'b'"):
        format_json_numbers({"a": 1}, ["a", "b"])
    with pytest.raises(ValidationError, match="unexpected key 'c'"):
        format_json_numbers({"a": 1, "c": 2}, ["a"])
    with pytest.raises(ValidationError, match="not finite"):
        format_json_numbers({"a": float("nan")}, ["a"])
    with pytest.raises(ValidationError, match="decimals"):
        format_json_numbers({"a": 1}, ["a"], decimals=4)


def _decodable(text: str, keys) -> bool:
    """True when ``text`` is a string the constrained decoder can emit for ``keys``."""
    return re.fullmatch(answer_regex(JSONAnswerFormat(keys).grammar()), text) is not None


key_lists = st.lists(st.text(max_size=6), min_size=1, max_size=6, unique=True)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), keys=key_lists)
def test_format_parse_round_trip(data, keys):
    vals = {
        k: data.draw(
            st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
        )
        for k in keys
    }
    decimals = data.draw(st.integers(0, 3))
    text = format_json_numbers(vals, keys, decimals=decimals)
    parsed = parse_json_numbers(text, keys)
    assert list(parsed) == keys
    for k in keys:
        assert parsed[k] == round(min(max(vals[k], -20.0), 20.0), decimals)
    assert _decodable(text, keys)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="-.0123456789", max_size=9), st.integers(0, 3),
       st.sampled_from([20.0, 2.5, 0.5, 999.0, 13.37]))
def test_number_regex_matches_the_definition(num, decimals, max_abs):
    m = NUMBER_RE.fullmatch(num)
    expected = (m is not None and len((m.group(2) or ".")[1:]) <= decimals
                and abs(float(num)) <= max_abs)
    got = re.fullmatch(number_regex(max_abs, max_frac_digits=decimals), num) is not None
    assert got == expected
    if got:
        assert JSONAnswerFormat(["k"], decimals=decimals, max_abs=max_abs).parse(
            '{"k": ' + num + "}") == {"k": float(num)}
