"""Prompt and answer format of the LM generator (tiny tokenizer, no model weights)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ragim import TaskIndex, datasets
from ragim.errors import ValidationError
from ragim.index import leak_free
from ragim.lm import build_tiny_tokenizer, format_json_numbers, parse_json_numbers
from ragim.lm.prompts import (
    ANSWER_MARGIN,
    SYSTEM_PROMPT,
    answer_room,
    answer_text,
    build_prompt,
    context_length,
    schema_lines,
)

BIG = 200_000  # a context no test prompt reaches



@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def heart_index():
    return TaskIndex.build(datasets.heart_disease(), embedder="hashing", progress=False)


@pytest.fixture(scope="module")
def target(heart_index):
    return heart_index.record("hungary-any_cad-all")


def _n_tokens(tok, text):
    return len(tok.encode(text, add_special_tokens=False))


def test_prompt_shows_description_schema_with_units_and_neighbours_by_similarity(heart_index, target, tok):
    hits = heart_index.search(target["description"], k=4, exclude=leak_free(target))
    shuffled = hits[:]
    random.Random(0).shuffle(shuffled)
    messages, text, kept = build_prompt(target["description"], shuffled, heart_index.schema, "logistic", tok,
                                        max_tokens=BIG, decimals=2)
    assert kept == 4
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert text == tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<s>assistant\n")
    user = messages[1]["content"]
    assert user.startswith("Model: ") and "\n\nTarget task: " + target["description"] in user
    assert user.index("Design terms:") < user.index("Target task:") < user.index("Similar tasks")
    for name in heart_index.schema.design_names:
        assert f"\n- {name} (" in user, name
    for unit_line in ("- age (years, per SD): age at examination", "- cp[asymptomatic] (0/1)",
                      "- chol (mg/dL, per SD): serum cholesterol", "- trestbps (mm Hg, per SD)",
                      "- chol__missing (0/1, 1 = chol missing)", "- sex (0/1): sex (1 = male, 0 = female)"):
        assert unit_line in user, unit_line
    # most similar first, each with its similarity and its parameters as name-keyed JSON
    ordered = sorted(hits, key=lambda h: -h.score)
    positions = [user.index(f". {h.description} (similarity {h.score:.3f})") for h in ordered]
    assert positions == sorted(positions)
    for h in ordered:
        js = format_json_numbers(h.params.as_dict(), h.params.names, decimals=2)
        assert js in user
    assert user.count(target["description"]) == 1  # only as the target


def test_prompt_orders_and_the_shared_prefix(heart_index, tok):
    """shared-first: layout, population model, target, neighbours, instruction, so two targets
    of one index share everything before the target as a token prefix; target-first is the order
    of generators saved before the choice existed."""
    from ragim.lm.constrained import shared_prefix_length

    pop = heart_index.population_params()
    users, ids = {}, []
    for order in ("shared-first", "target-first"):
        for t in heart_index.ids[:2]:
            rec = heart_index.record(t)
            hits = heart_index.search(rec["description"], k=2, exclude=leak_free(rec))
            messages, text, _ = build_prompt(rec["description"], hits, heart_index.schema, "logistic", tok,
                                             max_tokens=BIG, population=pop, order=order)
            users.setdefault(order, []).append(messages[1]["content"])
            if order == "shared-first":
                ids.append(torch.tensor(tok(text, add_special_tokens=False)["input_ids"]))
    first = users["shared-first"][0]
    marks = ["Design terms:", "Population model", "Target task:", "Similar tasks", "Answer with"]
    assert [first.index(m) for m in marks] == sorted(first.index(m) for m in marks)
    old = users["target-first"][0]
    marks = ["Target task:", "Design terms:", "Similar tasks", "Population model", "Answer with"]
    assert [old.index(m) for m in marks] == sorted(old.index(m) for m in marks)
    shared = first[: first.index("Target task:")]
    assert users["shared-first"][1].startswith(shared)
    n_shared = len(tok(shared, add_special_tokens=False)["input_ids"])
    assert shared_prefix_length(ids, minimum=1) >= n_shared - 2  # the split may merge a token
    with pytest.raises(ValidationError, match="order must be one of"):
        build_prompt("x", [], heart_index.schema, "logistic", tok, order="random")
    other = datasets.synthetic_family(n_tasks=2, n_features=2, seed=0)
    foreign = TaskIndex.build(other, embedder="hashing", progress=False).population_params()
    with pytest.raises(ValidationError, match="statistical prior must be ModelParams over the prompt's layout"):
        build_prompt("x", [], heart_index.schema, "logistic", tok, prior=foreign)


def test_answer_text_is_the_rounded_params_in_schema_order(heart_index):
    for tid in heart_index.ids[:6]:
        p = heart_index.params(tid)
        for decimals in (2, 3):
            text = answer_text(p, decimals)
            assert text == format_json_numbers(p.as_dict(), p.names, decimals=decimals)
            values = parse_json_numbers(text, p.names)
            assert list(values) == p.names == ["intercept", *heart_index.schema.design_names]
            assert np.allclose(list(values.values()), np.round(np.clip(p.vector, -20, 20), decimals), atol=1e-9)


def test_answer_room_covers_real_answers(heart_index, tok):
    names = heart_index.params(heart_index.ids[0]).names
    room = answer_room(names, tok, decimals=2)
    longest = max(_n_tokens(tok, answer_text(heart_index.params(t), 2)) for t in heart_index.ids)
    assert longest <= room - ANSWER_MARGIN
    assert answer_room(names) == 8 * len(names) + ANSWER_MARGIN


def test_truncation_drops_least_similar_neighbours_first(heart_index, target, tok):
    hits = heart_index.search(target["description"], k=3, exclude=leak_free(target))
    schema, desc = heart_index.schema, target["description"]
    names = ["intercept", *schema.design_names]
    room = answer_room(names, tok, decimals=2)
    sizes = [_n_tokens(tok, build_prompt(desc, hits[:n], schema, "logistic", tok, max_tokens=BIG, decimals=2)[1])
             for n in range(4)]
    assert sizes == sorted(sizes)
    for n in range(4):
        _, text, kept = build_prompt(desc, hits, schema, "logistic", tok, max_tokens=sizes[n] + room, decimals=2)
        assert kept == n
        assert _n_tokens(tok, text) + room <= sizes[n] + room
        for i, h in enumerate(hits):
            assert (h.description in text) == (i < n)
    _, text, kept = build_prompt(desc, hits, schema, "logistic", tok, max_tokens=sizes[0] + room, decimals=2)
    assert kept == 0 and "No similar tasks are available." in text


def test_population_model_is_shown_before_the_target_and_never_dropped(heart_index, target, tok):
    hits = heart_index.search(target["description"], k=3, exclude=leak_free(target))
    schema, desc = heart_index.schema, target["description"]
    pop = heart_index.population_params(leak_free(target))
    room = answer_room(["intercept", *schema.design_names], tok, decimals=2)
    messages, _, kept = build_prompt(desc, hits, schema, "logistic", tok, max_tokens=BIG, decimals=2, population=pop)
    user = messages[1]["content"]
    head = f"Population model (average over {pop.metadata['n_tasks']} indexed tasks, weighted by their patients):"
    assert kept == 3 and f"{head}\n{answer_text(pop, 2)}" in user
    assert user.index(head) < user.index("Target task:") < user.index(hits[-1].description)
    old = build_prompt(desc, hits, schema, "logistic", tok, max_tokens=BIG, decimals=2, population=pop,
                       order="target-first")[0][1]["content"]
    assert old.index(hits[-1].description) < old.index(head) < old.index("Answer with")
    alone = build_prompt(desc, [], schema, "logistic", tok, max_tokens=BIG, decimals=2, population=pop)[1]
    _, text, kept = build_prompt(desc, hits, schema, "logistic", tok, max_tokens=_n_tokens(tok, alone) + room,
                                 decimals=2, population=pop)
    assert kept == 0 and head in text  # neighbours go first; the population model stays
    with pytest.raises(ValidationError, match=r"population model \(LMConfig\(population=False\); ragim train sft --no-population\)"):
        build_prompt(desc, hits, schema, "logistic", tok, max_tokens=_n_tokens(tok, alone) + room - 1,
                     decimals=2, population=pop)
    with pytest.raises(ValidationError, match="population model"):
        build_prompt(desc, hits, schema, "gam", tok, max_tokens=BIG, population=pop)


def test_raises_when_even_the_schema_does_not_fit(heart_index, target, tok):
    names = ["intercept", *heart_index.schema.design_names]
    room = answer_room(names, tok, decimals=2)
    base = _n_tokens(tok, build_prompt(target["description"], [], heart_index.schema, "logistic", tok,
                                       max_tokens=BIG, decimals=2)[1])
    with pytest.raises(ValidationError, match="without neighbours needs"):
        build_prompt(target["description"], [], heart_index.schema, "logistic", tok, max_tokens=base + room - 1,
                     decimals=2)


def test_gam_prompt_lists_bins_per_feature(tok):
    tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
    index = TaskIndex.build(tasks, model="gam", embedder="hashing", progress=False)
    lines = schema_lines(index.schema, "gam")
    assert len(lines) == 2
    for f, line in zip(index.schema.features, lines, strict=True):
        assert line.startswith(f"- {f.name} (SD): {f.description}; one score per bin: ")
        for lab in index.schema.bin_labels(f.name):
            assert f"{f.name}[{lab}]" in line
    hits = index.search(tasks.descriptions[0], k=2, exclude=[tasks.ids[0]])
    _, text, kept = build_prompt(tasks.descriptions[0], hits, index.schema, "gam", tok, max_tokens=BIG)
    assert kept == 2 and "generalised additive model" in text
    p = index.params(tasks.ids[0])
    assert list(parse_json_numbers(answer_text(p), p.names)) == ["intercept", *index.schema.gam_names]


def test_context_length_uses_the_smaller_known_limit(tok):
    assert context_length(tok) == 8192
    huge = SimpleNamespace(model_max_length=int(1e30))
    assert context_length(huge) == 8192
    assert context_length(huge, SimpleNamespace(config=SimpleNamespace(max_position_embeddings=2048))) == 2048


def test_invalid_inputs(heart_index, tok):
    with pytest.raises(ValidationError, match="description is empty"):
        build_prompt("  ", [], heart_index.schema, "logistic", tok)
    with pytest.raises(ValidationError, match="unknown model kind"):
        build_prompt("x", [], heart_index.schema, "forest", tok)
    other = TaskIndex.build(datasets.synthetic_family(n_tasks=4, n_features=2, seed=0), embedder="hashing",
                            progress=False)
    foreign = other.search("anything", k=1)
    with pytest.raises(ValidationError, match="same index"):
        build_prompt("x", foreign, heart_index.schema, "logistic", tok, max_tokens=BIG)


def test_a_description_too_long_for_the_context_is_named_with_its_tokens_and_the_room(
    heart_index, target, tok, recwarn
):
    """A description longer than the context was blamed on the features and the population
    model, never named, and a transformers warning ("Token indices sequence length is longer
    than the specified maximum") leaked through -q; the error says how many tokens the
    description has and how many fit, and nothing else is printed."""
    import logging

    tok = build_tiny_tokenizer()  # a fresh one: transformers warns once per tokenizer
    tok.model_max_length = 512
    long = target["description"] + " with chronic kidney disease" * 200
    words = _n_tokens(tok, long)
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        with pytest.raises(ValidationError) as err:
            build_prompt(long, [], heart_index.schema, "logistic", tok, max_tokens=512, decimals=2)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    msg = str(err.value)
    assert msg.startswith(f"the description has {words} tokens, but the 512-token context leaves "
                          "room for ") and msg.endswith("; shorten the description")
    assert "population" not in msg and "features" not in msg
    assert not [r for r in seen if "sequence length" in r.getMessage()]
