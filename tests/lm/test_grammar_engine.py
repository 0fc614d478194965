"""Both constrained decoders (llguidance and the built-in loop): hot sampling always parses in
both answer formats, batching changes nothing greedy; the compact answer format round-trips."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ragim.errors import GenerationError, ValidationError
from ragim.lm.answer import DECODERS, CompactAnswerFormat, answer_format
from ragim.lm.base_models import load_base_model
from ragim.lm.constrained import generate_answer_batch

KEYS = ["intercept", "age", "sex[male]", "bmi"] + [f"f{i}" for i in range(10)]


@pytest.fixture(params=DECODERS)
def decoder(request):
    """The guarantees hold for both decoders: llguidance and the built-in loop."""
    return request.param


@pytest.fixture(scope="module")
def tiny():
    return load_base_model("tiny", device="cpu", seed=0)


def _prompts(tok, texts):
    return [tok(t, return_tensors="pt")["input_ids"] for t in texts]


@pytest.mark.parametrize("name", ["json", "compact"])
def test_sampling_at_temperature_5_always_parses(tiny, name, decoder):
    decode = partial(generate_answer_batch, decoder=decoder)
    model, tok = tiny
    fmt = answer_format(KEYS, name=name, decimals=2, max_abs=4.0)
    prompts = _prompts(tok, ["coefficients please", "the model:", "x"])
    for seed in range(4):
        out = decode(model, tok, prompts, fmt, temperature=5.0, top_p=1.0,
                                    num_candidates=3, seed=seed)
        assert [len(g) for g in out] == [3, 3, 3]
        for group in out:
            for r in group:
                assert fmt.parse(r.text) == r.values  # the codec's own parse accepts it
                assert list(r.values) == KEYS and all(abs(v) <= 4.0 for v in r.values.values())
                assert r.logprob <= 0.0 and r.n_tokens == len(r.token_ids) > 0
    # hot sampling explores: the 12 answers of one seed are not all the same
    texts = {r.text for g in out for r in g}
    assert len(texts) > 1


def test_sampling_is_reproducible_by_seed(tiny, decoder):
    decode = partial(generate_answer_batch, decoder=decoder)
    model, tok = tiny
    fmt = answer_format(KEYS[:4], decimals=2)
    prompts = _prompts(tok, ["a", "bb"])
    a = decode(model, tok, prompts, fmt, temperature=1.5, num_candidates=2, seed=7)
    b = decode(model, tok, prompts, fmt, temperature=1.5, num_candidates=2, seed=7)
    assert [[r.text for r in g] for g in a] == [[r.text for r in g] for g in b]


@pytest.mark.parametrize("name", ["json", "compact"])
def test_batched_greedy_equals_one_at_a_time(tiny, name, decoder):
    decode = partial(generate_answer_batch, decoder=decoder)
    model, tok = tiny
    fmt = answer_format(KEYS, name=name, decimals=2)
    # prompts of different lengths, so the batch is left-padded
    texts = ["a", "predict the coefficients of a heart model", "x y z w", "the model:"]
    batch = decode(model, tok, _prompts(tok, texts), fmt)
    for text, group in zip(texts, batch, strict=True):
        alone = decode(model, tok, _prompts(tok, [text]), fmt)[0][0]
        assert group[0].text == alone.text
        assert group[0].token_ids == alone.token_ids
        assert group[0].logprob == pytest.approx(alone.logprob, abs=1e-3)


def test_greedy_candidates_are_copies(tiny, decoder):
    decode = partial(generate_answer_batch, decoder=decoder)
    model, tok = tiny
    out = decode(model, tok, _prompts(tok, ["q"]), answer_format(["a", "b"]),
                                num_candidates=3)[0]
    assert len({r.text for r in out}) == 1 and len(out) == 3


def test_logprob_sums_the_free_choices(tiny):
    """With one key and range [-9, 9] in whole numbers, the compact answer is ``[`` + number +
    ``]``: the logprob is the model's log-probability of the number's tokens (both brackets are
    forced) and the sign/digit choices, recomputed here with one forward pass."""
    model, tok = tiny
    fmt = CompactAnswerFormat(["a"], decimals=0, max_abs=9)
    ids = _prompts(tok, ["value:"])[0]
    r = generate_answer_batch(model, tok, [ids], fmt)[0][0]
    full = torch.cat([ids[0], torch.tensor(r.token_ids)]).unsqueeze(0)
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits[0].float(), dim=-1)
    start = ids.shape[1]
    per_token = [float(logp[start - 1 + j, t]) for j, t in enumerate(r.token_ids)]
    texts = [tok.decode([t]) for t in r.token_ids]
    free = [lp for lp, t in zip(per_token, texts, strict=True) if t not in ("[", "]")]
    assert texts[0] == "[" and texts[-1] == "]"  # the tiny vocabulary has lone brackets
    assert r.logprob == pytest.approx(sum(free), abs=1e-4)


# --------------------------------------------------------------------------- compact format
keys_st = st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=8, unique=True)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), keys=keys_st)
def test_compact_format_round_trips(data, keys):
    decimals = data.draw(st.integers(0, 3))
    vals = {k: data.draw(st.floats(-50, 50, allow_nan=False)) for k in keys}
    fmt = CompactAnswerFormat(keys, decimals=decimals, max_abs=20.0)
    text = fmt.write(vals)
    assert text.startswith("[") and text.endswith("]") and not any(k in text for k in keys if k.isalpha())
    parsed = fmt.parse(text)
    assert list(parsed) == keys
    for k in keys:
        assert parsed[k] == round(min(max(vals[k], -20.0), 20.0), decimals)
    assert fmt.parse(fmt.write(parsed)) == parsed


@pytest.mark.parametrize("text, message", [
    ("[1, 2", "not valid JSON"),
    ('{"a": 1}', "expected a JSON array"),
    ("[1, 2, 3]", "expected 2 values"),
    ("[1, true]", "'b' is not a number"),
    ("[1, 21]", "'b' is 21.0, outside"),
])
def test_compact_parse_names_the_problem(text, message):
    with pytest.raises(GenerationError, match=message):
        CompactAnswerFormat(["a", "b"]).parse(text)


def test_compact_prompt_names_the_keys_once():
    fmt = CompactAnswerFormat(["intercept", "age"])
    assert fmt.instruction.endswith("in this order: intercept, age.")
    assert fmt.grammar().render(["1", "-0.5"]) == "[1, -0.5]"


def _threads() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


@pytest.mark.parametrize("name", ["json", "compact"])
def test_any_generate_call_inside_sample_under_grammar_parses(tiny, name):
    """What GRPO's sampling relies on: plain ``model.generate`` calls (left-padded batches,
    several return sequences, ``inputs=``) are constrained inside the block, beam search is
    refused, ``generate`` is restored on exit, also after an error, and calls leave no thread
    behind."""
    from ragim.lm.constrained import sample_under_grammar

    model, tok = tiny
    fmt = answer_format(KEYS, name=name, decimals=2, max_abs=4.0)
    ids = torch.tensor([[tok.eos_token_id, 5, 6, 7], [8, 9, 10, 11]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    common = dict(attention_mask=mask, do_sample=True, temperature=5.0, max_new_tokens=200,
                  pad_token_id=tok.eos_token_id)
    with sample_under_grammar(model, tok, fmt):
        out = model.generate(input_ids=ids, num_return_sequences=3, **common)
        again = model.generate(inputs=ids, **common)
        threads = _threads()
        for _ in range(5):
            model.generate(input_ids=ids, **common)
        assert _threads() <= threads  # one shared llguidance executor, not one per call
        with pytest.raises(ValidationError, match="beam search"):
            model.generate(input_ids=ids, num_beams=2, **{**common, "do_sample": False})
    texts = [t for o in (out, again) for t in tok.batch_decode(o[:, ids.shape[1]:], skip_special_tokens=True)]
    assert len(texts) == 8 and len(set(texts)) > 1
    assert all(list(fmt.parse(t)) == KEYS for t in texts)
    assert "generate" not in model.__dict__
    with pytest.raises(RuntimeError), sample_under_grammar(model, tok, fmt):
        raise RuntimeError("inside the block")
    assert "generate" not in model.__dict__


@pytest.mark.parametrize("name", ["json", "compact"])
def test_a_shared_prompt_prefix_is_computed_once_and_changes_nothing(tiny, name, monkeypatch):
    """Prompts that share their first tokens (the instructions, layout and population model of
    one index) get that prefix's key/value cache computed once: greedy answers equal those of
    each prompt alone, and sampled ones those of the same batch without the shared cache."""
    import ragim.lm.constrained as constrained

    model, tok = tiny
    fmt = answer_format(KEYS, name=name, decimals=2, max_abs=4.0)
    head = "You write models. Design terms: " + ", ".join(KEYS) + ". Population: 0.1, 0.2. "
    texts = [head + t for t in ("Target: stroke.", "Target: death within 30 days of surgery", "x")]
    prompts = [p[0] for p in _prompts(tok, texts)]
    assert constrained.shared_prefix_length(prompts) >= constrained.MIN_SHARED_PREFIX
    calls = []  # the shared prefix of every batch decoded (None: none shared)
    real = constrained.preallocated_cache

    def counted(model, capacity, prefix, *rest):
        calls.append(prefix)
        return real(model, capacity, prefix, *rest)

    monkeypatch.setattr(constrained, "preallocated_cache", counted)
    batched = generate_answer_batch(model, tok, prompts, fmt)
    alone = [generate_answer_batch(model, tok, [p], fmt)[0] for p in prompts]
    shared = [p for p in calls if p is not None]
    assert len(shared) == 1 and len(shared[0]) == constrained.shared_prefix_length(prompts)
    assert [g[0].text for g in batched] == [g[0].text for g in alone]
    sampled = generate_answer_batch(model, tok, prompts, fmt, temperature=3.0, num_candidates=2, seed=1)
    monkeypatch.setattr(constrained, "MIN_SHARED_PREFIX", 10**6)  # no shared cache
    plain = generate_answer_batch(model, tok, prompts, fmt, temperature=3.0, num_candidates=2, seed=1)
    assert len([p for p in calls if p is not None]) == 2
    assert [[r.text for r in g] for g in sampled] == [[r.text for r in g] for g in plain]
    assert all(list(fmt.parse(r.text)) == KEYS for g in sampled for r in g)


def test_a_preallocated_cache_gives_the_default_caches_logits_and_grows(tiny):
    """Keys and values written in place, in buffers allocated once and doubled when full, give
    the logits of transformers' default cache at every step."""
    import ragim.lm.constrained as constrained

    model, tok = tiny
    ids = torch.tensor([tok("the model: coefficients of age and sex")["input_ids"]])
    n = ids.shape[1]
    [(name, mine)] = constrained.preallocated_cache(model, n + 1).items()  # full after 1 step
    theirs = None
    with torch.no_grad():
        for step in range(4):
            a = model(input_ids=ids, use_cache=True, **{name: mine})
            b = model(input_ids=ids, use_cache=True, **({name: theirs} if theirs else {}))
            theirs = b[name]
            assert torch.allclose(a.logits[:, -1], b.logits[:, -1], atol=1e-5), step
            ids = a.logits[:, -1].argmax(-1, keepdim=True)
    assert mine.get_seq_length() == theirs.get_seq_length() == n + 3
    assert mine.layers[0].length == n + 3 > mine.layers[0].capacity  # it grew past its room


@pytest.mark.parametrize("shared", [True, False])
def test_a_chunked_prefill_fills_the_cache_as_one_forward_call_does(tiny, shared, monkeypatch):
    """Prefilling the prompts a block of rows per forward call (``prefill_in_chunks``, with or
    without a shared prefix already cached) writes the keys and values one call of all rows
    writes, and batched answers stay those of each prompt alone, whatever the block size."""
    import ragim.lm.constrained as constrained

    model, tok = tiny
    head = "You write models. Design terms: " + ", ".join(KEYS) + ". Population: 0.1, 0.2. "
    texts = [head + t for t in ("Target: stroke.", "Target: death within 30 days", "x", "y z")]
    if not shared:
        texts = [t[::-1] for t in texts]
    rows = [p[0] for p in _prompts(tok, texts)]
    n_shared = constrained.shared_prefix_length(rows)
    assert (n_shared > 0) == shared
    ids, mask = constrained.left_padded(rows, tok.eos_token_id, n_shared)
    width = ids.shape[1]

    def cache(max_tokens):
        prefix = rows[0][:n_shared] if n_shared else None
        kw = constrained.preallocated_cache(model, width + 8, prefix, len(rows))
        calls = constrained.prefill_in_chunks(model, kw, ids, mask, max_tokens=max_tokens)
        return calls, next(iter(kw.values()))

    (one, whole), (many, blocks) = cache(None), cache(1)
    assert one == 1 and many == len(rows)
    for a, b in zip(whole.layers, blocks.layers, strict=True):
        assert a.length == b.length == width - 1
        keep = mask[:, : width - 1].bool()[:, None, :, None].expand_as(a.keys)
        assert torch.allclose(a.keys[keep], b.keys[keep], atol=1e-5)
        assert torch.allclose(a.values[keep], b.values[keep], atol=1e-5)
    fmt = answer_format(KEYS, name="compact", decimals=2, max_abs=4.0)
    with monkeypatch.context() as m:  # the reference: generate's own prefill, one prompt a call
        m.setattr(constrained, "prefill_in_chunks", lambda *a, **k: 0)
        alone = [generate_answer_batch(model, tok, [p], fmt)[0][0] for p in rows]
    for budget in (1, 10**6):
        monkeypatch.setattr(constrained, "CPU_PREFILL_TOKENS", budget)
        batched = [g[0] for g in generate_answer_batch(model, tok, rows, fmt)]
        assert [r.text for r in batched] == [r.text for r in alone]
        assert [r.logprob for r in batched] == pytest.approx([r.logprob for r in alone], abs=1e-3)


def test_unpack_bitmask_agrees_with_the_bit_shifts_it_replaces():
    from ragim.lm.constrained import unpack_bitmask

    mask = torch.randint(-(2**31), 2**31 - 1, (5, 7), generator=torch.Generator().manual_seed(0),
                         dtype=torch.int32)
    shifts = ((mask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1).view(5, -1).bool()
    for width in (1, 200, 224, 230):
        allowed, counts = unpack_bitmask(mask, width)
        want = torch.cat([shifts, torch.zeros(5, 6, dtype=torch.bool)], 1)[:, :width]
        assert allowed.dtype == torch.bool and torch.equal(allowed, want)
        assert counts == want.sum(1).tolist()


def test_the_batch_helpers_refuse_bad_input_in_one_line(tiny):
    import ragim.lm.constrained as constrained

    model, tok = tiny
    rows = [torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4, 5])]
    for bad in ([], torch.tensor([1, 2]), [torch.tensor([[1, 2]])], [torch.tensor([], dtype=torch.long)]):
        with pytest.raises(ValidationError, match="row"):
            constrained.left_padded(bad, 0, 0)
    for shared in (-1, 3):
        with pytest.raises(ValidationError, match="shared"):
            constrained.left_padded(rows, 0, shared)
    with pytest.raises(ValidationError, match="do not all share their first 2"):
        constrained.left_padded([torch.tensor([1, 2, 3]), torch.tensor([1, 5, 4])], 0, 2)
    for bad, width in [(torch.tensor([[0, 1]]), 64), (torch.tensor([[1.0]]), 32),
                       (torch.tensor([5], dtype=torch.int32), 32), ([[1]], 32)]:
        with pytest.raises(ValidationError, match="bitmask must be a 2-D int32 CPU tensor"):
            constrained.unpack_bitmask(bad, width)
    with pytest.raises(ValidationError, match="width"):
        constrained.unpack_bitmask(torch.zeros(1, 2, dtype=torch.int32), -3)
    ids, mask = constrained.left_padded(rows, 0, 2)
    kw = constrained.preallocated_cache(model, 16, rows[0][:2], 2)
    with pytest.raises(ValidationError, match="keyword dict"):
        constrained.prefill_in_chunks(model, next(iter(kw.values())), ids, mask, max_tokens=None)
    with pytest.raises(ValidationError, match="same"):
        constrained.prefill_in_chunks(model, kw, ids, mask[:, 1:], max_tokens=None)
    with pytest.raises(ValidationError, match="max_tokens"):
        constrained.prefill_in_chunks(model, kw, ids, mask, max_tokens=0)
    three = constrained.preallocated_cache(model, 16, rows[0][:2], 3)
    with pytest.raises(ValidationError, match="holds 3 rows"):
        constrained.prefill_in_chunks(model, three, ids, mask, max_tokens=None)


def test_a_chunked_prefill_keeps_no_autograd_graph(tiny):
    """Called with gradients on (outside generate's inference mode), the cache it fills holds
    plain tensors, as preallocated_cache's own prefix does."""
    import ragim.lm.constrained as constrained

    model, _ = tiny
    rows = [torch.tensor([1, 2, 3, 7]), torch.tensor([1, 2, 4, 5, 6])]
    ids, mask = constrained.left_padded(rows, 0, 2)
    kw = constrained.preallocated_cache(model, 16, rows[0][:2], 2)
    assert torch.is_grad_enabled()
    assert constrained.prefill_in_chunks(model, kw, ids, mask, max_tokens=1) == 2
    layer = next(iter(kw.values())).layers[0]
    assert layer.length == ids.shape[1] - 1 and not layer.keys.requires_grad
