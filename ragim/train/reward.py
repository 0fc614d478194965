"""Training of the Bradley–Terry reward model (TRL ``RewardTrainer`` with LoRA).

The reward model (:class:`~ragim.lm.reward_model.RewardModel`) reads the generator's
prompt plus one candidate answer and returns a scalar score ``s``. It is trained on
preference pairs (:mod:`ragim.train.preferences`, :mod:`ragim.lm.pairs`) with TRL's
``RewardTrainer``, whose loss is the Bradley–Terry negative log-likelihood
``-log σ(s_chosen − s_rejected)``. Whole tasks are held out for validation
(:func:`split_pairs_by_task`).

The run is described by a :class:`RewardModelTrainingConfig`, saved with the model
(``training_``). The model itself, its artifact format and :func:`best_of_n` are inference
code in :mod:`ragim.lm.reward_model`; they are importable from here too.

Examples
--------
>>> pairs = [{"prompt": [{"role": "user", "content": "Predict stroke."}],
...           "chosen": [{"role": "assistant", "content": '{"intercept": 1}'}],
...           "rejected": [{"role": "assistant", "content": '{"intercept": -1}'}]}] * 4
>>> rm = train_reward_model(pairs, base_model="tiny", max_steps=2, batch_size=2, val_fraction=0,
...                         progress=False, device="cpu")
>>> rm.score([pairs[0]["prompt"]], [pairs[0]["chosen"]]).shape
(1,)
>>> rm.training_[0]["config"]["max_steps"]
2
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ragim.checks import check_fields, check_int, check_number
from ragim.errors import ValidationError, user_stacklevel
from ragim.lm.answer import AnswerFormat
from ragim.lm.pairs import (
    check_pair_names,
    check_pair_prompts,
    in_answer_format,
    pair_rows,
    pairs_dataset,
)
from ragim.lm.reward_model import FORMAT, RewardModel, RewardModelConfig, best_of_n
from ragim.train.trainer import (
    STEP_RULES,
    CheckpointConfig,
    refuse_model_settings,
    run_config,
    run_description,
    train_from_scratch,
)


@dataclass
class RewardModelTrainingConfig(CheckpointConfig):
    """How :func:`train_reward_model` trains; the network's settings are
    :class:`~ragim.lm.reward_model.RewardModelConfig`.

    >>> RewardModelTrainingConfig(max_steps=10).learning_rate
    0.0001
    """

    max_steps: int = field(default=50, metadata={"help": "optimiser steps"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    batch_size: int = field(default=4, metadata={"help": "pairs per step (also for evaluation)"})
    val_fraction: float = field(
        default=0.2,
        metadata={"help": "share of tasks whose pairs are held out when no val_pairs are given"},
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the split, data order, head and LoRA init"}
    )

    def __post_init__(self):
        check_fields(
            self,
            {**STEP_RULES, "val_fraction": partial(check_number, ge=0, lt=1)},
            "RewardModelTrainingConfig",
        )


def pair_groups(rows: Sequence[dict]) -> list[str]:
    """The task each pair belongs to, for a validation split that holds out whole tasks: its
    ``task_id``; for a pair without one, the ``task_id`` of a pair with the same prompt, else
    its prompt (a prompt describes one target task, so pairs that share it are one task's).

    >>> p = [{"prompt": "A", "task_id": "a"}, {"prompt": "A"}, {"prompt": "B"}, {"prompt": "B"}]
    >>> pair_groups(p)
    ['task a', 'task a', 'prompt "B"', 'prompt "B"']
    """
    return [
        f"task {tid}" if tid is not None else f"prompt {_prompt_key(r)}"
        for r, tid in zip(rows, pair_task_ids(rows), strict=True)
    ]


def _prompt_key(row: dict) -> str:
    import json

    return json.dumps(row.get("prompt"), sort_keys=True, default=str)


def pair_task_ids(rows: Sequence[dict]) -> list[str | None]:
    """Each pair's task: its ``task_id``; for a pair without one, the ``task_id`` of a pair
    with the same prompt; else None.

    >>> pair_task_ids([{"prompt": "A", "task_id": "a"}, {"prompt": "A"}, {"prompt": "B"}])
    ['a', 'a', None]
    """
    if all(isinstance(r.get("task_id"), str) for r in rows):  # no prompt needs reading
        return [r["task_id"] for r in rows]
    tagged: dict[str, str] = {}
    for r in rows:
        if isinstance(r.get("task_id"), str):
            tagged.setdefault(_prompt_key(r), r["task_id"])
    return [
        r["task_id"] if isinstance(r.get("task_id"), str) else tagged.get(_prompt_key(r))
        for r in rows
    ]


def warn_if_validation_overlaps(train_rows: Sequence[dict], val_rows: Sequence[dict]) -> None:
    """Warn (DataWarning) when validation pairs are of tasks the training pairs hold
    (:func:`pair_groups`): their accuracy is then not on tasks the reward model never saw."""
    import warnings

    from ragim.errors import DataWarning, name_some

    groups = pair_groups([*train_rows, *val_rows])
    seen = set(groups[: len(train_rows)])
    shared = [g for g in groups[len(train_rows) :] if g in seen]
    if shared:
        warnings.warn(
            f"{len(shared)} of {len(val_rows)} validation pairs are of tasks the reward model "
            f"trains on ({name_some(dict.fromkeys(shared))}), so val_accuracy_ is not an "
            "accuracy on unseen tasks; give val_pairs of other tasks, or leave them out to hold "
            "out val_fraction of the tasks",
            DataWarning,
            stacklevel=user_stacklevel(),
        )


def apart_from_validation_pairs(
    index, train_rows: Sequence[dict], val_rows: Sequence[dict]
) -> list[dict]:
    """``train_rows`` less the pairs of tasks that share a patient with a validation pair's
    task (:meth:`ragim.index.TaskIndex.sharing_patients`), so that the validation accuracy is
    measured on patients the reward model never trained on, as SFT's validation
    (:func:`ragim.train.sft.apart_from_validation`) and leave-task-out evaluation are. A pair
    without a ``task_id`` counts as its prompt's task (:func:`pair_task_ids`); pairs of no
    known task are kept, with a DataWarning when the index's tasks have patient ids. When every
    training pair would go, all are kept.

    Raises
    ------
    ValidationError
        When ``index`` is not a TaskIndex, or a pair's ``task_id`` is not one of its tasks.

    Warns
    -----
    DataWarning
        Naming the tasks whose pairs are left out; when all would be, that the validation
        accuracy is then optimistic; when pairs of no known task cannot be kept apart.
    """
    import warnings

    from ragim.errors import DataWarning, ValidationError, name_some
    from ragim.index import TaskIndex

    if not isinstance(index, TaskIndex):
        raise ValidationError(f"index must be a TaskIndex, got {type(index).__name__}")
    train_tasks = pair_task_ids(train_rows)
    val_tasks = pair_task_ids(val_rows)
    train_ids = [t for t in dict.fromkeys(train_tasks) if t is not None]
    val_ids = [t for t in dict.fromkeys(val_tasks) if t is not None]
    unknown = [t for t in dict.fromkeys([*train_ids, *val_ids]) if t not in index]
    if unknown:
        raise ValidationError(
            f"{len(unknown)} preference pair task id(s) are not tasks of the index: "
            f"{name_some(unknown)}; give the index the pairs were built from"
        )
    untold = sum(t is None for t in [*train_tasks, *val_tasks])
    if untold and val_rows and any(rec["metadata"].get("patient_ids") for rec in index.records):
        warnings.warn(
            f"{untold} preference pair(s) carry no task_id, so the reward model cannot keep "
            "the pairs of tasks sharing patients with a validation task out of training; "
            "build the pairs with build_preference_pairs, which writes task_id",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    if not train_ids or not val_ids:
        return list(train_rows)
    shared = set(index.sharing_patients(val_ids)) & set(train_ids)
    if not shared:
        return list(train_rows)
    apart = [r for r, t in zip(train_rows, train_tasks, strict=True) if t not in shared]
    if not apart:
        warnings.warn(
            "every training pair's task shares patients with a validation task, so the reward "
            "model trains on them all and val_accuracy_ is measured on patients it learned "
            "from (optimistic); give val_pairs of tasks of other patients",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
        return list(train_rows)
    warnings.warn(
        f"the pairs of {len(shared)} task(s) sharing patients with a validation task are not "
        f"trained on, so that validation sees unseen patients: {name_some(sorted(shared))}",
        DataWarning,
        stacklevel=user_stacklevel(),
    )
    return apart


def split_pairs_by_task(
    rows: list[dict], val_fraction: float, seed: int, *, index=None
) -> tuple[list[dict], list[dict]]:
    """Hold out ``val_fraction`` of the tasks (:func:`pair_groups`: by ``task_id``, a pair
    without one by its prompt) for validation, as ``(train_rows, val_rows)``, so that a pair
    given twice, or a pair without ``task_id`` beside pairs of its task, is never on both sides.
    With ``index`` (the TaskIndex the pairs were built from), the pairs of tasks sharing a
    patient with a validation task leave training too (:func:`apart_from_validation_pairs`).

    Raises
    ------
    ValidationError
        With ``index``, when a pair's ``task_id`` is not one of its tasks.

    Warns
    -----
    DataWarning
        When the pairs are of one task only: nothing is held out (``val_rows`` is empty); and
        with ``index``, naming the tasks left out of training.
    """
    import warnings

    from ragim.errors import DataWarning

    val_fraction = check_number(val_fraction, "val_fraction", ge=0, lt=1)
    seed = check_int(seed, "seed", ge=0)
    if index is not None:  # ids are checked whatever the split
        apart_from_validation_pairs(index, rows, [])
    if val_fraction <= 0 or len(rows) < 2:
        return rows, []
    keys = pair_groups(rows)
    groups = list(dict.fromkeys(keys))
    if len(groups) < 2:
        warnings.warn(
            f"all {len(rows)} preference pairs are of one task (one task_id or prompt), so no "
            "task is left to validate on and the reward model is not validated; pass "
            "val_pairs= pairs of other tasks",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
        return rows, []
    rng = np.random.default_rng(seed)
    n_val = min(len(groups) - 1, max(1, int(round(val_fraction * len(groups)))))
    val = {groups[i] for i in rng.permutation(len(groups))[:n_val]}
    train_rows = [r for r, g in zip(rows, keys, strict=True) if g not in val]
    val_rows = [r for r, g in zip(rows, keys, strict=True) if g in val]
    if index is not None:
        train_rows = apart_from_validation_pairs(index, train_rows, val_rows)
    return train_rows, val_rows


# --------------------------------------------------------------------------- training
def train_reward_model(
    pairs,
    config: RewardModelTrainingConfig | dict | None = None,
    *,
    base_model: str = "smollm2-135m",
    lora_r: int = 8,
    val_pairs=None,
    index=None,
    param_names: Sequence[str] | None = None,
    answer_format: AnswerFormat | None = None,
    generator=None,
    residual: bool | None = None,
    device: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] | None = None,
    **overrides: Any,
) -> RewardModel:
    """Train a Bradley–Terry reward model with LoRA (TRL ``RewardTrainer``).

    Parameters
    ----------
    pairs : datasets.Dataset, list of dicts or path
        Preference pairs (:func:`~ragim.train.build_preference_pairs`,
        :func:`~ragim.train.load_preferences`, or a JSONL path for it). Only ``prompt``,
        ``chosen`` and ``rejected`` are trained on (the ``margin`` column is *not* used
        as a loss margin: it is in reward units, not score units); ``task_id`` drives the
        validation split.
    config : RewardModelTrainingConfig or dict, optional
        The training settings; each of its fields given as a keyword (``**overrides``)
        replaces the config's.
    base_model : str
        ``"smollm2-135m"``, ``"tiny"``, a local model directory or a hub id in
        the Hugging Face cache (nothing is downloaded); use the
        generator's base model.
    lora_r : int
        LoRA rank (alpha = 2 * rank).
    val_pairs : optional
        Validation pairs; default: ``val_fraction`` of the *tasks* of ``pairs`` are held out
        (:func:`split_pairs_by_task`). Pairs of tasks that ``pairs`` holds are a DataWarning
        (:func:`warn_if_validation_overlaps`).
    index : TaskIndex, optional
        The index the pairs were built from. With it, the pairs of tasks that share a patient
        with a validation task are not trained on (:func:`apart_from_validation_pairs`, a
        DataWarning names them), so ``val_accuracy_`` is measured on unseen patients; without
        it, tasks that share patients (a site's all-adults task and its subgroups) may be on
        both sides.
    param_names : sequence of str, optional
        The parameter layout of the index the reward model will score (e.g. the
        generator's ``param_names_``). When given, every pair's models must use exactly
        these names in this order (:func:`~ragim.train.preferences.check_pair_names`),
        checked before any step.
    answer_format : AnswerFormat, optional
        The answer codec of the generator whose candidates the reward model will rank
        (``gen.answer_format(gen.param_names_)``; :func:`~ragim.lm.reward_model.best_of_n`
        shows it the generator's answers as written). The pairs' answers are written in it
        before training and validation (:func:`~ragim.lm.pairs.in_answer_format`); default:
        as given (JSON objects). The model keeps it (``answer_format_``, saved):
        ``pairwise_accuracy`` writes other pairs in it, and ``best_of_n`` refuses a generator
        that writes another.
    generator : LMGenerator, optional
        The generator whose candidates the reward model will rank: every pair's prompt must
        have the layout it builds (answer instruction, statistical prior, population model,
        at most ``k`` neighbours; :func:`~ragim.lm.pairs.check_pair_prompts`), checked before
        any step, since ``best_of_n`` shows the reward model that generator's prompts. The
        model keeps its index's schema fingerprint (``schema_fingerprint_``), and
        ``best_of_n`` refuses an index with another schema.
    residual : bool, optional
        Read every answer as its change from the pair's ``prior`` (the statistical prior in
        the prompt; :func:`~ragim.lm.pairs.in_answer_format` with ``minus_prior``): what a
        generator with residual answers writes, so the reward model sees the LM's own answer
        and not the prior plus it. Needs ``answer_format`` and pairs with a ``prior``
        (:func:`~ragim.train.build_preference_pairs` of a residual generator). Default:
        ``generator.config.residual`` when ``generator`` is given, else False. The model keeps
        it (``residual_``, saved).
    device : str, optional
        ``"cpu"``, ``"cuda"``, ... (default ``"auto"``).
    progress : bool
        Show TRL's progress bar.
    callbacks : list of transformers.TrainerCallback, optional
    **overrides
        Fields of :class:`RewardModelTrainingConfig`: ``max_steps``, ``learning_rate`` and
        ``batch_size`` (optimiser steps, AdamW rate, pairs per step; 50, 1e-4, 4),
        ``val_fraction`` (share of tasks held out when ``val_pairs`` is not given, 0: none;
        0.2), ``seed`` (split, data order, head and LoRA initialisation) and ``output_dir``
        (trainer scratch directory).

    Returns
    -------
    RewardModel
        Trained; ``val_accuracy_`` is the pairwise accuracy on the validation pairs
        (held-out tasks), ``history_`` the trainer's log (``loss``, ``accuracy``, ``margin``),
        ``training_`` the run's config.

    Warns
    -----
    DataWarning
        When the validation pairs are of tasks the training pairs hold, or all pairs are of one
        task (nothing held out).
    """
    from transformers import set_seed
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    refuse_model_settings(
        overrides,
        RewardModelTrainingConfig,
        RewardModelConfig,
        "train_reward_model takes base_model, lora_r and device (lora_alpha is 2 * lora_r, "
        "the other LoRA settings their defaults)",
    )
    run = run_config(RewardModelTrainingConfig, config, **overrides)
    lora_r = check_int(lora_r, "lora_r", ge=1)
    rows = pair_rows(pairs)
    if not rows:
        raise ValidationError(
            "no preference pairs to train on; build_preference_pairs returned none "
            "(lower min_margin) or the file is empty"
        )
    if val_pairs is not None:
        train_rows, val_rows = rows, pair_rows(val_pairs)
        warn_if_validation_overlaps(train_rows, val_rows)
        if index is not None:
            train_rows = apart_from_validation_pairs(index, train_rows, val_rows)
    else:
        train_rows, val_rows = split_pairs_by_task(rows, run.val_fraction, run.seed, index=index)
    if param_names is not None:
        check_pair_names(
            train_rows + val_rows,
            param_names,
            where="the reward model's preference pairs",
            answer_format=answer_format,
        )
    if generator is not None:
        check_pair_prompts(
            train_rows + val_rows, generator, where="the reward model's preference pairs"
        )
    if residual is None:
        residual = bool(generator is not None and generator.config.residual)
    if residual and answer_format is None:
        raise ValidationError(
            "residual=True writes each answer as its change from the prior in an answer format; "
            "pass answer_format=gen.answer_format(gen.param_names_)"
        )
    given_val_rows = val_rows  # pairwise_accuracy writes them as the model reads them
    if answer_format is not None:
        train_rows = in_answer_format(train_rows, answer_format, minus_prior=residual)
        if val_rows:
            val_rows = in_answer_format(val_rows, answer_format, minus_prior=residual)

    rm = RewardModel(
        RewardModelConfig(
            base_model=base_model,
            lora_r=lora_r,
            lora_alpha=2 * lora_r,
            device=device or "auto",
            seed=run.seed,
        )
    )
    set_seed(run.seed)
    model, tok = rm.build_model()
    train_from_scratch(
        rm,
        "reward",
        run,
        RewardTrainer,
        TRLRewardConfig,
        model=model,
        tokenizer=tok,
        progress=progress,
        callbacks=callbacks,
        args=dict(max_length=None),
        train_dataset=pairs_dataset(train_rows),
        eval_dataset=pairs_dataset(val_rows) if val_rows else None,
        description=run_description(
            "reward", run, model_config=rm.config, data=[train_rows, val_rows or []]
        ),
    )
    rm.train_task_ids_ = sorted(
        {r["task_id"] for r in train_rows if isinstance(r.get("task_id"), str)}
    )
    rm.val_task_ids_ = sorted({r["task_id"] for r in val_rows if isinstance(r.get("task_id"), str)})
    rm.answer_format_ = answer_format
    schema = getattr(generator, "schema_", None)
    rm.schema_fingerprint_ = None if schema is None else schema.fingerprint()
    rm.residual_ = residual
    if val_rows:
        rm.val_accuracy_ = rm.pairwise_accuracy(given_val_rows)
    return rm


__all__ = [
    "FORMAT",
    "RewardModel",
    "RewardModelConfig",
    "RewardModelTrainingConfig",
    "best_of_n",
    "pair_groups",
    "split_pairs_by_task",
    "train_reward_model",
    "warn_if_validation_overlaps",
]
