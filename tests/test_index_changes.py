"""A generator used with an index that changed since it was fitted: the message says what
changed (tasks removed, or the whole index rebuilt), and its advice works for that generator,
in Python and on the command line."""

from __future__ import annotations

import pytest

from ragim import TaskIndex, datasets
from ragim.errors import ValidationError
from ragim.generate.attention import AttentionGenerator
from ragim.generate.base import advice_for_cli, record_fit_state
from ragim.generate.lm import LMConfig, LMGenerator
from ragim.tasks import TaskCollection


@pytest.fixture(scope="module")
def indexes():
    tasks = list(datasets.synthetic_family(n_tasks=8, n_features=3, seed=0))
    full = TaskIndex.build(TaskCollection(tasks), embedder="hashing", progress=False)
    less = TaskIndex.build(TaskCollection(tasks[:2] + tasks[3:]), embedder="hashing", progress=False)
    return full, less, tasks[2].task_id


def test_an_index_rebuilt_without_one_task_is_called_rebuilt_not_all_tasks_changed(indexes):
    """An index rebuilt without one task refits every task (the scaling is learned from all
    the rows): the LM generator said 7 tasks "changed" and advised fit(index), which a
    fine-tuned LMGenerator refuses; it says the index was rebuilt, names the one task gone,
    and advises train_sft (Python) or `ragim train sft` (command line)."""
    full, less, gone = indexes
    gen = LMGenerator(LMConfig(base_model="tiny"))
    record_fit_state(gen, full)
    with pytest.raises(ValidationError) as err:
        gen.check_index_unchanged(less)
    msg = str(err.value)
    assert "the index was rebuilt" in msg and f"no longer holds 1 task(s) ({gone})" in msg
    assert "changed" not in msg and "fit(index)" not in msg
    assert "train_sft(index, generator_config=gen.config)" in msg and "\n" not in msg
    with advice_for_cli("my-index"), pytest.raises(ValidationError) as err:
        gen.check_index_unchanged(less)
    assert "ragim train sft --index my-index --out NEW-GENERATOR" in str(err.value)
    assert "train_sft(" not in str(err.value)


def test_refit_advice_names_each_generators_own_command(indexes):
    full, less, _ = indexes
    gen = AttentionGenerator()
    record_fit_state(gen, full)
    with pytest.raises(ValidationError, match=r"refit it on this index \(fit\(index\)\)$"):
        gen.check_index_unchanged(less)
    with advice_for_cli("i2"), pytest.raises(ValidationError, match="ragim train attention --index i2"):
        gen.check_index_unchanged(less)


def test_an_index_of_another_embedder_says_which_side_has_which(indexes):
    """The message said the index was built with the generator's embedder and that the
    index's own was "given": it names the generator's index and this index."""
    from ragim.embed import HashingEmbedder, check_identity

    with pytest.raises(ValidationError) as err:
        check_identity(HashingEmbedder(dim=64).identity, HashingEmbedder(dim=32),
                       generator="LMGenerator")
    msg = str(err.value)
    assert msg.startswith("this LMGenerator was fitted on an index built with embedder hashing "
                          "(dim=64, seed=0), but this index was built with hashing (dim=32")
    assert "dim: the generator's index 64, this index 32" in msg


def test_an_index_of_the_same_width_and_other_features_names_the_differing_ones(indexes):
    """Same width, other features: "the index (logistic, 4 params) does not match the
    generator (logistic, 4 params)" named no difference; it names the first that differ."""
    full, _, _ = indexes
    gen = LMGenerator(LMConfig(base_model="tiny"))
    record_fit_state(gen, full)
    gen.param_names_ = ["intercept", "creatinine", "x02", "egfr"]
    with pytest.raises(ValidationError) as err:
        gen._check_layout(full)
    assert ("differ from the generator's at 2 place(s), first: x01 where the generator has "
            "creatinine, x03 where the generator has egfr; use the index") in str(err.value)


def test_a_reward_model_passed_as_a_generator_is_named_with_the_kinds_accepted(tmp_path, monkeypatch,
                                                                                capsys):
    """A reward model given as --generator: "a 'ragim.attention-generator' artifact was
    expected", although any generator would do; it names what was found and what is accepted."""
    from ragim import cli
    from ragim.io import write_artifact

    write_artifact(tmp_path / "rm", "ragim.reward-model", {"config.json": b"{}"})
    monkeypatch.setattr("sys.argv", ["ragim", "generate", "x", "--index", str(tmp_path / "i"),
                                     "--generator", str(tmp_path / "rm")])
    monkeypatch.setattr("ragim.index.TaskIndex.load", lambda *a, **k: None)
    with pytest.raises(SystemExit):
        cli.main()
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --generator {tmp_path / 'rm'} holds a reward model ('ragim.reward-model'), not a "
        "generator; pass a saved generator: a statistical generator ('ragim.statistical-generator'),"
        " an attention generator ('ragim.attention-generator'), an LM generator "
        "('ragim.lm-generator'), a rag-im-2024 generator ('ragim.rag-im-2024-generator')"
    )
