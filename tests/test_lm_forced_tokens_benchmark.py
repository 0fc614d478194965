"""benchmarks/lm_forced_tokens.py's count on the tiny tokenizer, checked against the grammar by
hand: in the one-value compact answer "[5]" with |value| <= 5 the grammar forces the opening
bracket; then "-" or a digit, and after "5" "]" or ".", are choices. The end of the answer,
forced once it is complete, is not counted."""

from __future__ import annotations

from conftest import load_benchmark

from ragim.lm import load_base_model
from ragim.lm.answer import answer_format


def test_forced_share_counts_the_tokens_the_grammar_leaves_no_choice_over():
    bench = load_benchmark("lm_forced_tokens")
    model, tok = load_base_model("tiny")
    fmt = answer_format(["a"], name="compact", decimals=2, max_abs=5.0)
    text = fmt.write({"a": 5.0})
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert text == "[5]" and len(ids) == 3  # one token per character
    row = bench.forced_share(tok, fmt, [{"a": 5.0}, {"a": 5.0}], int(model.config.vocab_size))
    assert row == {"answers": 2, "tokens_per_answer": 3.0, "forced_share": round(1 / 3, 4)}
