"""LMGenerator with the tiny random model: constrained decoding always parses."""

from __future__ import annotations

import numpy as np
import pytest

from ragim import TaskIndex, datasets
from ragim.errors import DataWarning, GenerationError, ValidationError
from ragim.generate import GENERATORS
from ragim.generate.lm import LMConfig, LMGenerator
from ragim.lm import ConstrainedResult, format_json_numbers
from ragim.models import LogisticModel


@pytest.fixture(scope="module")
def family():
    return datasets.synthetic_family(n_tasks=10, n_features=3, seed=0)


@pytest.fixture(scope="module")
def index(family):
    return TaskIndex.build(family, embedder="hashing", progress=False)


@pytest.fixture(scope="module")
def gen():
    return LMGenerator(base_model="tiny", k=2, device="cpu")


def _check_valid(p, index, *, decimals, excluded):
    assert p.kind == "logistic" and p.schema == index.schema
    assert np.all(np.isfinite(p.vector)) and np.all(np.abs(p.vector) <= 20.0)
    assert np.allclose(p.vector, np.round(p.vector, decimals))
    meta = p.metadata
    assert meta["source"] == "generated" and meta["generator"] == "lm"
    prov = meta["provenance"]
    assert len(prov) == meta["k"] == 2 and excluded not in {r["task_id"] for r in prov}
    assert np.isclose(sum(r["weight"] for r in prov), 1.0, atol=1e-4)
    assert prov[0]["similarity"] >= prov[1]["similarity"]


def test_registered():
    assert GENERATORS["lm"] is LMGenerator


@pytest.mark.parametrize("seed, decoder, answer_format", [(0, "llguidance", "json"),
                                                          (1, "llguidance", "compact"),
                                                          (2, "llguidance", "json"),
                                                          (0, "builtin", "json"),
                                                          (1, "builtin", "compact")])
def test_sampled_candidates_always_parse(seed, decoder, answer_format, family, index):
    gen = LMGenerator(base_model="tiny", k=2, device="cpu", seed=seed, temperature=1.0, top_p=1.0,
                      decoder=decoder, answer_format=answer_format)
    cands = gen.generate_candidates(family.descriptions[seed], index, exclude=[family.ids[seed]], num_candidates=3)
    assert len(cands) == 3
    for i, p in enumerate(cands):
        _check_valid(p, index, decimals=2, excluded=family.ids[seed])
        assert p.metadata["candidates"] == 3 and p.metadata["candidate"] == i
        assert np.isfinite(p.metadata["logprob"]) and p.metadata["prompt_tokens"] > 0
    assert gen.parse_failures_ == 0
    best = gen.generate_params(family.descriptions[seed], index, exclude=[family.ids[seed]], num_candidates=3)
    assert best.metadata["logprob"] == max(c.metadata["logprob"] for c in cands)


def test_generate_returns_a_model_with_provenance(gen, family, index):
    model = gen.generate(family.descriptions[0], index, exclude=[family.ids[0]])
    assert isinstance(model, LogisticModel)
    assert [r["task_id"] for r in model.provenance] == [
        h.task_id for h in index.search(family.descriptions[0], k=2, exclude=[family.ids[0]])]
    proba = model.predict_proba(family[0].X)[:, 1]
    assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
    _check_valid(model.to_params(), index, decimals=2, excluded=family.ids[0])


def test_greedy_is_deterministic_and_batches_match(gen, family, index):
    descs = family.descriptions[:2]
    batch = gen.generate_params(descs, index)
    again = [gen.generate_params(d, index) for d in descs]
    for a, b in zip(batch, again, strict=True):
        assert np.array_equal(a.vector, b.vector)
    assert batch[0].metadata["candidates"] == 1 and batch[0].metadata["fine_tuned"] is False


def test_task_query_records_task_id_and_uniform_weights(family, index):
    gen = LMGenerator(base_model="tiny", k=3, device="cpu", decimals=3, provenance_weights="uniform")
    p = gen.generate_params(family[4], index, exclude=[family.ids[4]])
    assert p.metadata["task_id"] == family.ids[4]
    assert [r["weight"] for r in p.metadata["provenance"]] == pytest.approx([1 / 3] * 3, abs=1e-5)
    assert np.allclose(p.vector, np.round(p.vector, 3))


def test_zero_neighbours_still_generates(gen, family, index):
    p = gen.generate_params(family.descriptions[0], index, k=0)
    assert p.metadata["provenance"] == [] and p.metadata["k"] == 0


def test_max_prompt_tokens_drops_neighbours(family, index):
    full = LMGenerator(base_model="tiny", k=2, device="cpu").generate_params(family.descriptions[0], index)
    gen = LMGenerator(base_model="tiny", k=2, device="cpu", max_prompt_tokens=full.metadata["prompt_tokens"] - 5)
    with pytest.warns(DataWarning, match="only 1 fit") as caught:
        p = gen.generate_params(family.descriptions[0], index)
    assert p.metadata["k"] == 1 and p.metadata["prompt_tokens"] <= full.metadata["prompt_tokens"] - 5
    assert p.metadata["provenance"][0]["task_id"] == full.metadata["provenance"][0]["task_id"]
    # the warning points at the caller's line, whichever entry point it came through
    with pytest.warns(DataWarning, match="only 1 fit") as direct:
        gen.generate_candidates(family.descriptions[0], index)
    assert {w.filename for w in caught} | {w.filename for w in direct} == {__file__}


def test_unknown_generation_options_are_named(gen, family, index):
    with pytest.raises(TypeError, match=r"unexpected keyword\(s\) \['top_k'\]"):
        gen.generate_params(family.descriptions[0], index, top_k=3)
    with pytest.raises(TypeError, match="top_k"):
        gen.generate(family.descriptions[0], index, top_k=3)


def test_population_model_in_prompts_leaves_out_the_excluded_tasks(gen, family, index):
    from ragim.lm.prompts import answer_text

    off = LMGenerator(base_model="tiny", k=2, device="cpu", population=False)
    ex = family.ids[:3]
    pop = index.population_params(ex)
    assert pop.metadata["n_tasks"] == len(index) - 3
    user = gen.prompt(family.descriptions[0], index, exclude=ex)[0][1]["content"]
    assert f"average over {len(index) - 3} indexed tasks" in user and answer_text(pop, gen.config.decimals) in user
    assert "Population model" not in off.prompt(family.descriptions[0], index, exclude=ex)[0][1]["content"]
    with_pop = gen.generate_params(family.descriptions[0], index, exclude=ex)
    assert with_pop.metadata["population"] == {k: pop.metadata[k] for k in ("n_tasks", "n_rows")}
    assert with_pop.metadata["prompt_tokens"] > off.generate_params(family.descriptions[0], index,
                                                                     exclude=ex).metadata["prompt_tokens"]
    # a batch with one exclusion per query builds each query's own prompt
    batch = gen.generate_params(family.descriptions[:2], index, exclude=[ex, family.ids[1:2]])
    single = gen.generate_params(family.descriptions[1], index, exclude=family.ids[1:2])
    assert np.array_equal(batch[0].vector, with_pop.vector) and np.array_equal(batch[1].vector, single.vector)
    assert batch[1].metadata["prompt_tokens"] == single.metadata["prompt_tokens"]


def test_parse_failures_are_counted_and_raised(family, index, monkeypatch):
    import ragim.lm.constrained as constrained

    def broken(model, tok, prompts, fmt, **kw):
        text = format_json_numbers({"intercept": 1.0}, ["intercept"])
        return [[ConstrainedResult(text=text, values={"intercept": 1.0}, n_tokens=3, logprob=0.0)]
                for _ in prompts]

    gen = LMGenerator(base_model="tiny", k=1, device="cpu")
    monkeypatch.setattr(constrained, "generate_answer_batch", broken)
    with pytest.raises(GenerationError, match="is not a valid logistic model"):
        gen.generate_params(family.descriptions[0], index)
    assert gen.parse_failures_ == 1


def test_untrained_generator_saves_a_zero_effect_adapter(gen, family, index, tmp_path):
    before = gen.generate_params(family.descriptions[1], index)
    path = gen.save(tmp_path / "lm")
    assert (path / "adapter" / "adapter_model.safetensors").is_file()
    loaded = LMGenerator.load(path, device="cpu")
    assert loaded.fine_tuned_ is False and loaded.param_names_ is None
    after = loaded.generate_params(family.descriptions[1], index)
    assert np.array_equal(before.vector, after.vector)


def test_bfloat16_weights_generate_parsed_answers_and_load_can_choose_them(
        gen, family, index, tmp_path):
    import torch

    with pytest.raises(ValidationError, match=r"dtype must be one of \['float32', 'bfloat16'\]"):
        LMConfig(dtype="float16")
    with pytest.raises(ValidationError, match="bf16 is how mixed_precision, a training setting, says it"):
        LMConfig(dtype="bf16")
    fast = LMGenerator(base_model="tiny", k=2, device="cpu", dtype="bfloat16")
    model, _ = fast.load_model()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    for decoder in ("builtin", "llguidance"):
        fast.config.decoder = decoder
        params = fast.generate_params(family.descriptions[:2], index, exclude=[family.ids[0]])
        for p in params:  # the grammar holds in bfloat16 too
            _check_valid(p, index, decimals=2, excluded=family.ids[0])
            assert p.metadata["dtype"] == "bfloat16"  # which arithmetic wrote it
    path = gen.save(tmp_path / "lm32")
    assert LMGenerator.load(path, device="cpu").config.dtype == "float32"
    loaded = LMGenerator.load(path, device="cpu", dtype="bfloat16")
    assert loaded.config.dtype == "bfloat16"
    assert {p.dtype for n, p in loaded.model_.named_parameters() if "lora_" not in n} == {
        torch.bfloat16}
    with pytest.raises(ValidationError, match="dtype must be one of"):
        LMGenerator.load(path, device="cpu", dtype="half")


def test_config_validation():
    with pytest.raises(ValidationError, match="decimals"):
        LMConfig(decimals=5)
    with pytest.raises(ValidationError, match="k must be"):
        LMGenerator(k=-1)
    with pytest.raises(ValidationError, match="provenance_weights"):
        LMConfig(provenance_weights="attention")
    with pytest.raises(ValidationError, match="population must be True or False"):
        LMConfig(population="yes")
    with pytest.raises(ValidationError, match=r"decoder must be one of \['llguidance', 'builtin'\]"):
        LMConfig(decoder="xgrammar")
    assert LMConfig().decoder == "builtin"  # the faster one on CPU (docs/lm_format.md#decoders)
    assert LMConfig(target_modules=["q_proj"]).target_modules == ("q_proj",)
    assert LMGenerator(LMConfig(k=3), decimals=3).config.k == 3


def test_no_index_is_a_clear_error(gen):
    with pytest.raises(ValidationError, match="no index"):
        gen.generate_params("Predict something.")


class _StubRewardModel:
    """Scores an answer by a fixed function of its text (deterministic, no network)."""

    def __init__(self):
        self.calls = 0

    @staticmethod
    def value(text: str) -> float:
        import json

        values = json.loads(text)
        return -abs(sum(values.values()) - 0.5)

    def score(self, prompts, completions):
        self.calls += 1
        assert len(prompts) == len(completions)
        return np.array([self.value(c[0]["content"]) for c in completions])


def test_best_of_n_picks_the_reward_models_argmax(family, index):
    from ragim.lm.prompts import answer_text
    from ragim.train.reward import best_of_n

    gen = LMGenerator(base_model="tiny", k=2, device="cpu", seed=3)
    desc, exclude = family.descriptions[2], [family.ids[2]]
    cands = gen.generate_candidates(desc, index, exclude=exclude, num_candidates=6, temperature=1.0)
    assert len({tuple(c.vector) for c in cands}) > 1  # sampling gives distinct candidates to choose from
    stub = _StubRewardModel()
    expected = [stub.value(answer_text(c, 2, max_abs=20.0)) for c in cands]
    best = best_of_n(gen, stub, desc, index, n=6, temperature=1.0, exclude=exclude)
    assert best.metadata["reward_scores"] == pytest.approx(expected)
    assert np.array_equal(best.vector, cands[int(np.argmax(expected))].vector)
    assert best.metadata["rerank"] == "reward_model" and best.metadata["n"] == 6

    # the same choice through generate_params / generate(rerank="reward_model")
    p = gen.generate_params(desc, index, exclude=exclude, rerank="reward_model", reward_model=stub,
                            num_candidates=6, temperature=1.0)
    assert np.array_equal(p.vector, best.vector) and p.metadata["rerank"] == "reward_model"
    model = gen.generate(desc, index, exclude=exclude, rerank="reward_model", reward_model=stub, n=6, temperature=1.0)
    assert isinstance(model, LogisticModel)
    assert np.array_equal(model.to_params().vector, best.vector)
    # a batch samples every query's candidates in one batched call (one random stream, so the
    # second query's candidates differ from a call of its own) and ranks each query's own
    batch = gen.generate_params([desc, desc], index, exclude=exclude, rerank="reward_model", reward_model=stub,
                                n=6, temperature=1.0)
    assert np.array_equal(batch[0].vector, best.vector)
    for b in batch:
        assert b.metadata["rerank"] == "reward_model" and len(b.metadata["reward_scores"]) == 6
        assert b.metadata["candidate"] == int(np.argmax(b.metadata["reward_scores"]))


def test_logprob_rerank_is_the_default_and_says_so(gen, family, index):
    p = gen.generate_params(family.descriptions[0], index)
    q = gen.generate_params(family.descriptions[0], index, rerank="logprob")
    assert p.metadata["rerank"] == q.metadata["rerank"] == "logprob"
    assert np.array_equal(p.vector, q.vector)


def test_rerank_errors(gen, family, index):
    with pytest.raises(ValidationError, match="needs reward_model"):
        gen.generate_params(family.descriptions[0], index, rerank="reward_model")
    with pytest.raises(ValidationError, match="rerank must be"):
        gen.generate(family.descriptions[0], index, rerank="bleu")
    with pytest.raises(ValidationError, match="score"):
        gen.generate_params(family.descriptions[0], index, rerank="reward_model", reward_model=object())
    with pytest.raises(ValidationError, match="disagree"):
        gen.generate_params(family.descriptions[0], index, n=2, num_candidates=3)


def test_more_than_one_greedy_candidate_is_refused(gen, family, index):
    """Greedy decoding (temperature 0, the default) gives n identical candidates: n-fold work
    for nothing, so n > 1 needs a temperature > 0, in Python and on the command line."""
    desc = family.descriptions[0]
    for call in (gen.generate_candidates, gen.generate_params):
        with pytest.raises(ValidationError, match=r"num_candidates=3 with temperature 0 .*identical"):
            call(desc, index, num_candidates=3)
    assert len(gen.generate_candidates(desc, index, num_candidates=2, temperature=0.8)) == 2
    assert len(gen.generate_candidates(desc, index, num_candidates=1)) == 1


def _prompt_tokens(gen, desc, index, k):
    return gen.generate_params(desc, index, k=k).metadata["prompt_tokens"]


def test_neighbours_cut_for_room_are_said_and_coverage_counts_the_ones_shown(family, index):
    """k=4 on a context that holds 2 neighbours: the model says k=2 (k_requested 4), one
    DataWarning names both numbers, and the coverage line is out of the 2 shown."""
    import warnings

    from ragim.errors import DataWarning
    from ragim.explain import coverage_summary

    desc = family.descriptions[0]
    probe = LMGenerator(base_model="tiny", k=4, device="cpu")
    two, three = _prompt_tokens(probe, desc, index, 2), _prompt_tokens(probe, desc, index, 3)
    gen = LMGenerator(base_model="tiny", k=4, device="cpu", max_prompt_tokens=(two + three) // 2)
    with pytest.warns(DataWarning, match=r"k=4 neighbours asked, but only 2 fit the \d+-token context"):
        p = gen.generate_params(desc, index)
    assert p.metadata["k"] == 2 and p.metadata["k_requested"] == 4
    assert len(p.metadata["provenance"]) == 2 and p.metadata["coverage"]["k"] == 2
    assert "effective neighbour(s) of 2" in coverage_summary(p.metadata["coverage"])
    with pytest.warns(DataWarning, match="only 2 fit"):
        assert len(gen.prompt(desc, index)[1]) == 2
    with warnings.catch_warnings():  # nothing cut, nothing said
        warnings.simplefilter("error", DataWarning)
        q = probe.generate_params(desc, index, k=2)
    assert q.metadata["k"] == q.metadata["k_requested"] == 2 == q.metadata["coverage"]["k"]


def test_k_zero_and_excluding_every_task(gen, family, index):
    """k=0 is a prompt with no neighbours (LMConfig's documented meaning, also `-k 0` on the
    command line); excluding every indexed task leaves no evidence at all, which is said."""
    from ragim.errors import DataWarning

    desc = family.descriptions[0]
    p = gen.generate_params(desc, index, k=0)
    assert p.metadata["k"] == 0 and p.metadata["provenance"] == []
    with pytest.warns(DataWarning, match="no indexed task left after the exclusions"):
        q = gen.generate_params(desc, index, exclude=list(index.ids))
    assert q.metadata["coverage"]["k"] == 0 and q.metadata["coverage"]["in_domain"] is False
