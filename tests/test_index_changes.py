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
