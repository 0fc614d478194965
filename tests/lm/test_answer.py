"""The answer codec (ragim.lm.answer): one writer, one parser, one grammar, used everywhere."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from ragim.errors import GenerationError, ValidationError
from ragim.lm import load_base_model
from ragim.lm.answer import (
    ANSWER_FORMATS,
    AnswerFormat,
    AnswerGrammar,
    JSONAnswerFormat,
    answer_format,
    answer_values,
    format_json_numbers,
    model_text,
    parse_json_numbers,
)
from ragim.lm.constrained import generate_answers, generate_json_numbers
from ragim.lm.pairs import check_pair_names
from ragim.lm.prompts import answer_text, build_prompt
from ragim.params import ModelParams
from ragim.schema import FeatureSchema
from ragim.train.rewards import parse_completion

KEYS = ["intercept", "age", "sex[male]"]


def test_write_follows_the_grammar_and_parse_inverts_it():
    fmt = answer_format(KEYS, decimals=2, max_abs=5.0)
    text = fmt.write({"intercept": -1.234, "age": 7.0, "sex[male]": 0.5})
    assert text == '{"intercept": -1.23, "age": 5, "sex[male]": 0.5}'
    grammar = fmt.grammar()
    assert grammar.keys == tuple(KEYS) and grammar.pieces == (
        '{"intercept":',
        ', "age":',
        ', "sex[male]":',
        "}",
    )
    assert grammar.render(["-1.23", "5", "0.5"]) == text
    assert (grammar.max_abs, grammar.max_frac_digits, grammar.max_int_digits) == (5.0, 2, 3)
    assert fmt.parse(text) == {"intercept": -1.23, "age": 5.0, "sex[male]": 0.5}
    assert fmt.parse_or_none('{"age": 1}') is None and fmt.parse_or_none(None) is None


def test_the_json_shorthands_are_the_codec():
    values = {"intercept": 0.12345, "age": -30.0, "sex[male]": 2.0}
    assert (
        format_json_numbers(values, KEYS, 3)
        == JSONAnswerFormat(KEYS).write(values)
        == ('{"intercept": 0.123, "age": -20, "sex[male]": 2}')
    )
    with pytest.raises(GenerationError, match="keys out of order") as a:
        parse_json_numbers('{"age": 1, "intercept": 0, "sex[male]": 0}', KEYS)
    with pytest.raises(GenerationError) as b:
        JSONAnswerFormat(KEYS).parse('{"age": 1, "intercept": 0, "sex[male]": 0}')
    assert str(a.value) == str(b.value)


def test_prompts_pairs_and_rewards_use_the_same_text():
    X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
    schema = FeatureSchema.infer(X).fit(X)
    p = ModelParams.from_dict("logistic", schema, {"intercept": -1.23456, "age": 0.5})
    text = answer_text(p, 2)
    assert (
        text
        == answer_format(p.names, decimals=2).write(p.as_dict())
        == '{"intercept": -1.23, "age": 0.5}'
    )
    # the reward parser and the pair checker read exactly what the writer wrote
    assert parse_completion([{"role": "assistant", "content": text}], p.names) == {
        "intercept": -1.23,
        "age": 0.5,
    }
    check_pair_names(
        [{"prompt": "p", "chosen": text, "rejected": model_text({"intercept": 0, "age": 1})}],
        p.names,
    )
    _, tok = load_base_model("tiny", device="cpu")
    _, rendered, _ = build_prompt("Predict stroke.", [], schema, "logistic", tok, decimals=2)
    assert JSONAnswerFormat(p.names).instruction in rendered


def test_model_text_is_lossless_and_answer_values_reads_every_form():
    values = {"intercept": -1.0, "é": 0.1234567, "age": 25.0}
    text = model_text(values)
    assert text == '{"intercept": -1, "é": 0.1234567, "age": 25}'
    assert answer_values(text) == values == answer_values(values)
    assert answer_values([{"role": "assistant", "content": text}]) == values
    for bad, message in [
        ("{", "does not parse"),
        ({"a": math.nan}, "finite"),
        ([], "exactly one"),
        ({}, "non-empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            answer_values(bad)


def test_unknown_format_and_bad_settings_are_one_line_errors():
    with pytest.raises(
        ValidationError, match=r"unknown answer format 'yaml'; use one of \['compact', 'json'\]"
    ):
        answer_format(KEYS, name="yaml")
    with pytest.raises(ValidationError, match=r"decimals must be an integer in \[0, 3\], got 4"):
        answer_format(KEYS, decimals=4)
    with pytest.raises(ValidationError, match="duplicate key 'a'"):
        answer_format(["a", "a"])
    with pytest.raises(ValidationError, match="max_abs must be below 1000"):
        answer_format(KEYS, max_abs=5000).write(dict.fromkeys(KEYS, 0.0))
    with pytest.raises(ValidationError, match="2 numbers"):
        AnswerGrammar(keys=("a",), pieces=("[", "]")).render(["1", "2"])


class ListAnswerFormat(AnswerFormat):
    """A format defined outside ragim: values in key order as a JSON list (``[ 1, -0.5]``)."""

    name = "list-for-test"

    def grammar(self, *, max_int_digits: int = 3) -> AnswerGrammar:
        pieces = ("[", *([","] * (len(self.keys) - 1)), "]")
        return AnswerGrammar(
            keys=self.keys,
            pieces=pieces,
            max_abs=self.max_abs,
            max_int_digits=max_int_digits,
            max_frac_digits=self.decimals,
        )

    @property
    def instruction(self) -> str:
        return "Answer with the values as one JSON list, in the order above."

    def parse(self, text: str) -> dict[str, float]:
        values = json.loads(text)
        if not isinstance(values, list) or len(values) != len(self.keys):
            raise GenerationError(f"invalid answer: expected a list of {len(self.keys)} numbers")
        if any(abs(v) > self.max_abs for v in values):
            raise GenerationError("invalid answer: a value is out of range")
        return dict(zip(self.keys, map(float, values), strict=True))


def test_a_new_format_is_one_class_and_the_decoder_follows_its_grammar(monkeypatch):
    monkeypatch.setitem(ANSWER_FORMATS, "list-for-test", ListAnswerFormat)
    fmt = answer_format(KEYS, name="list-for-test", decimals=1, max_abs=3.0)
    assert fmt.write({"intercept": 1.26, "age": -9.0, "sex[male]": 0.0}) == "[ 1.3, -3, 0]"
    model, tok = load_base_model("tiny", device="cpu")
    ids = tok("coefficients?", return_tensors="pt")["input_ids"]
    results = generate_answers(
        model,
        tok,
        ids,
        fmt,
        temperature=1.5,
        num_candidates=3,
        generator=torch.Generator().manual_seed(0),
    )
    for r in results:
        assert r.text.startswith("[ ") and r.text.endswith("]")
        assert fmt.parse(r.text) == r.values and set(r.values) == set(KEYS)
        assert all(abs(v) <= 3.0 and round(v, 1) == v for v in r.values.values())


def test_json_decoding_is_the_json_format_through_the_codec():
    model, tok = load_base_model("tiny", device="cpu")
    ids = tok("coefficients?", return_tensors="pt")["input_ids"]
    a = generate_json_numbers(model, tok, ids, KEYS, max_abs=4.0, max_frac_digits=2)
    b = generate_answers(model, tok, ids, answer_format(KEYS, decimals=2, max_abs=4.0))
    assert a[0].text == b[0].text and a[0].values == parse_json_numbers(
        b[0].text, KEYS, max_abs=4.0
    )
    with pytest.raises(ValidationError, match="answer_format must be an AnswerFormat"):
        generate_answers(model, tok, ids, KEYS)
