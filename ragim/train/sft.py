"""Supervised fine-tuning (behaviour cloning) of the LM generator with LoRA.

Every indexed task becomes one example, leave-one-task-out: its prompt
(:func:`ragim.lm.prompts.build_prompt`) shows neighbours retrieved with the task
itself and every task sharing its patients excluded (:func:`ragim.index.leak_free`),
and its completion is the task's parameters as answer text
(:func:`ragim.lm.prompts.answer_text`). A share of the tasks is held out, by task,
for validation; training prompts never show a validation task as a neighbour, and a task
that shares patients with a validation task is not trained on
(:func:`apart_from_validation`), so that the validation loss and the prior-correction weight
are measured on patients the LM never learned from.

The completion (``targets``) is either the task's own fit stored in the index (``"fit"``,
the default) or its **posterior mode** (``"posterior"``): the task's rows, less the share
``heldout_fraction`` that GRPO's rewards score (``Task.split(heldout_fraction, seed=seed)``),
fitted by MAP under the prior the prompt shows, ``N(prior, diag(prior SD^2))`` (the
statistical prior and its predictive SDs; without one, the population model with ragim's
default prior SDs, 3 for the intercept and 1 for each slope). A small task's own fit is
mostly sampling noise, and cloning it teaches the LM that noise; its posterior mode moves
away from the prior only as far as the task's rows support, so the LM learns to correct
the prior, and no task's own target uses the rows GRPO scores its rewards on (the prompts
still show the neighbours' stored fits, which used all of their rows).

With ``LMConfig(residual=True)`` the completion is the same target minus the statistical
prior its prompt shows, ``answer_text(target - prior)``: the LM learns each parameter's change
from the prior (small numbers near 0), and an answer of zeros gives the prior back.

Training uses TRL's ``SFTTrainer`` on a conversational prompt/completion dataset
with ``completion_only_loss=True`` (the loss covers only the answer and the end
of turn) and a peft ``LoraConfig`` (``task_type="CAUSAL_LM"``). The model and
tokenizer are passed as objects, so nothing is fetched from the hub; nothing is
saved during training (``save_strategy="no"``), and nothing is reported
(``report_to="none"``).

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> tasks = datasets.synthetic_family(n_tasks=8, n_features=2, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> gen = train_sft(index, base_model="tiny", max_steps=2, batch_size=2, progress=False,
...                 generator_config=LMConfig(k=2, device="cpu"))
>>> gen.fine_tuned_, any("eval_loss" in h for h in gen.history_)
(True, True)
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ragim.checks import check_fields, check_int, check_number
from ragim.errors import DataWarning, ValidationError, name_some, user_stacklevel
from ragim.generate.base import config_with, record_fit_state
from ragim.generate.lm import (
    UNVALIDATED,
    LMConfig,
    LMGenerator,
    fit_prior_generator,
    prior_params,
)
from ragim.generate.meta_regression import INTERCEPT_PRIOR_SD, PRIOR_SD, prior_precisions
from ragim.models.map import newton_map
from ragim.params import ModelParams, design_matrix, param_names
from ragim.train.trainer import (
    STEP_RULES,
    CheckpointConfig,
    index_data,
    refuse_model_settings,
    run_config,
    run_description,
    train_from_scratch,
)

#: what an SFT example's completion is (:class:`SFTTrainingConfig` ``targets``)
TARGETS = ("fit", "posterior")


@dataclass
class SFTTrainingConfig(CheckpointConfig):
    """How :func:`train_sft` trains (TRL ``SFTConfig``'s role for ragim); the generator's own
    settings (base model, ``k``, LoRA rank, ...) are its :class:`~ragim.generate.lm.LMConfig`.

    Saved with the generator (``training_`` in ``state.json``).

    >>> SFTTrainingConfig(max_steps=100, batch_size=8).learning_rate
    0.0002
    """

    max_steps: int = field(default=30, metadata={"help": "optimiser steps"})
    learning_rate: float = field(
        default=2e-4, metadata={"help": "AdamW learning rate of the LoRA weights"}
    )
    batch_size: int = field(
        default=4, metadata={"help": "examples per device and step (also for evaluation)"}
    )
    grad_accum: int = field(default=1, metadata={"help": "gradient-accumulation steps"})
    val_fraction: float = field(
        default=0.2, metadata={"help": "share of tasks held out for the validation loss"}
    )
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "evaluate every this many steps (default: once, at the last step)"},
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the task split, data order and LoRA init"}
    )
    max_tasks: int | None = field(
        default=None, metadata={"help": "train on a random subset of this many tasks"}
    )
    targets: str = field(
        default="fit",
        metadata={
            "help": "completions: 'fit' (the task's stored fit) or 'posterior' (its MAP fit "
            "under the prompt's prior, without the task's GRPO reward rows)"
        },
    )
    heldout_fraction: float = field(
        default=0.5,
        metadata={
            "help": "with targets='posterior', share of each task's rows kept out of its "
            "target (GRPO's reward rows at the same seed)"
        },
    )

    def __post_init__(self):
        check_fields(
            self,
            {
                **STEP_RULES,
                "targets": check_targets,
                "heldout_fraction": partial(check_number, gt=0, lt=1),
                "grad_accum": partial(check_int, ge=1),
                "eval_steps": partial(check_int, ge=1, allow_none=True),
                "max_tasks": partial(check_int, ge=1, allow_none=True),
                "val_fraction": partial(check_number, ge=0, lt=1),
            },
            "SFTTrainingConfig",
        )


def excluding(pred, ids: frozenset):
    """The exclusion ``pred`` (a predicate over index records) widened to the tasks ``ids``:
    what an SFT prompt leaves out when ``ids`` are hidden (e.g. the validation tasks)."""
    return lambda rec: pred(rec) or rec["task_id"] in ids


def build_sft_dataset(
    index,
    tokenizer,
    config: LMConfig | None = None,
    *,
    task_ids: Sequence[str] | None = None,
    hide: Sequence[str] = (),
    max_tokens: int | None = None,
    prior_generator=None,
    targets: str = "fit",
    heldout_fraction: float = 0.5,
    seed: int = 0,
    warn_clipped: bool = True,
):
    """Leave-one-task-out prompt/completion examples for the tasks of ``index``.

    Parameters
    ----------
    index : a :class:`~ragim.index.TaskIndex` (its stored parameters are the targets; task
        rows are needed only for the statistical prior and ``targets="posterior"``).
    tokenizer : the generator's tokenizer (for the chat template and token budget).
    config : an :class:`~ragim.generate.lm.LMConfig` (``k``, ``decimals``, ``max_abs``,
        ``population``).
    task_ids : the target tasks (default: every indexed task).
    hide : task ids never shown as a neighbour or counted in the population model (e.g. the
        validation tasks).
    max_tokens : context for prompt plus answer (default: the tokenizer's).
    prior_generator : with ``config.statistical_prior``, the fitted
        :class:`~ragim.generate.statistical.StatisticalGenerator` whose model for each target,
        generated without the target, the tasks sharing its patients and ``hide``, the prompt
        shows (default: one fitted on ``index``; the exclusions need its task rows).
    targets : ``"fit"`` (the stored parameters) or ``"posterior"`` (the posterior mode under
        the prompt's prior of the rows ``Task.split(heldout_fraction, seed=seed)`` trains on;
        see the module docstring).
    heldout_fraction, seed : with ``targets="posterior"``, the rows kept out of the targets.
    warn_clipped : warn (DataWarning) when answers have values beyond ``config.max_abs``, which
        are written clipped (off for GRPO and preference pairs, which use the prompts alone).

    Returns
    -------
    datasets.Dataset
        Columns ``prompt`` (system + user messages), ``completion`` (one assistant
        message), ``task_id`` and ``neighbor_ids`` (the neighbours in the prompt, most
        similar first). With ``config.residual`` the completion is ``target - prior`` (each
        parameter's change from the prompt's statistical prior) and a column ``prior`` holds
        that prior's values (floats in answer-key order; the verifiable rewards add them to
        an answer before scoring it).
    """
    from datasets import Dataset

    from ragim.index import leak_free
    from ragim.lm.prompts import (
        answer_text,
        context_length,
        index_prompt,
        warn_if_neighbours_cut,
    )

    cfg = config or LMConfig()
    ids = list(index.ids if task_ids is None else task_ids)
    if not ids:
        raise ValidationError("no tasks to build SFT examples from")
    targets = check_targets(targets)
    if targets == "posterior" and not (cfg.population or cfg.statistical_prior):
        raise ValidationError(
            "targets='posterior' centres each target on the prior its prompt shows, but with "
            "population=False and statistical_prior=False the prompt shows none; turn one on"
        )
    if targets == "posterior" and index.tasks is None:
        raise ValidationError(
            "targets='posterior' fits each task's rows, but the index keeps none; rebuild it "
            "with TaskIndex.build(..., keep_tasks=True)"
        )
    hidden = frozenset(hide)
    k = min(cfg.k, max(len(index) - 1, 0))
    records = [index.record(t) for t in ids]
    excludes = [excluding(leak_free(r), hidden) for r in records]
    hits = (
        index.search_vectors(index.vectors(ids), k, exclude=excludes)
        if k > 0
        else [[] for _ in ids]
    )
    priors = [None] * len(ids)
    if cfg.statistical_prior:
        if prior_generator is None:
            prior_generator = fit_prior_generator(index)
        priors = prior_params(prior_generator, [r["description"] for r in records], index, excludes)
    rows, shown, clipped = [], [], []
    for tid, rec, hs, ex, prior in zip(ids, records, hits, excludes, priors, strict=True):
        hs = sorted(hs, key=lambda h: -float(h.score))
        messages, _, kept, _ = index_prompt(
            index,
            rec["description"],
            hs,
            tokenizer,
            cfg,
            exclude=ex,
            max_tokens=max_tokens,
            prior=prior,
        )
        shown.append((kept, len(hs)))
        target = index.params(tid)
        if targets == "posterior":
            center = prior if prior is not None else index.population_params(exclude=ex)
            if center is None:
                raise ValidationError(f"task {tid!r} has no population model to centre its target")
            train_rows, _ = index.tasks[tid].split(heldout_fraction, seed=seed)
            target = posterior_mode(center, train_rows.X, train_rows.y)
        if cfg.residual:  # the answer is the change from the prior the prompt shows
            target = target.replace(vector=target.vector - prior.vector)
        vec = np.asarray(target.vector, dtype=float)
        if np.any(np.abs(vec) > cfg.max_abs):
            j = int(np.argmax(np.abs(vec)))
            clipped.append((abs(float(vec[j])), tid, target.names[j], float(vec[j])))
        answer = answer_text(
            target, cfg.decimals, max_abs=cfg.max_abs, format_name=cfg.answer_format
        )
        row = {
            "prompt": messages,
            "completion": [{"role": "assistant", "content": answer}],
            "task_id": tid,
            "neighbor_ids": [h.task_id for h in hs[:kept]],
        }
        if cfg.residual:
            row["prior"] = [float(v) for v in prior.vector]
        rows.append(row)
    room = max_tokens if max_tokens is not None else context_length(tokenizer)
    warn_if_neighbours_cut(cfg.k, [a for a, _ in shown], [b for _, b in shown], room)
    if clipped and warn_clipped:
        _, tid, name, value = max(clipped)
        warnings.warn(
            f"{len(clipped)} of {len(ids)} SFT answers have values beyond max_abs="
            f"{cfg.max_abs:g} (the largest: {name} = {value:.3g} in {tid!r}), written clipped "
            f"to +-{cfg.max_abs:g}, so the LM learns the clipped answers; raise "
            "LMConfig(max_abs=...) if such values are real",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    return Dataset.from_list(rows)


def check_targets(value, name: str = "targets") -> str:
    """``value`` if it names an SFT target (:data:`TARGETS`), as a plain ``str``."""
    if not isinstance(value, str) or value not in TARGETS:
        raise ValidationError(f"{name} must be one of {list(TARGETS)}, got {value!r}")
    return str(value)


#: a prior SD of 0 fixes the parameter at the prior's value, to within this SD
FIXED_SD = 1e-6


def posterior_mode(prior: ModelParams, X, y) -> ModelParams:
    """The MAP parameters of rows ``(X, y)`` under ``N(prior.vector, diag(prior.std^2))``.

    Parameters
    ----------
    prior : ModelParams
        The prior means (``vector``) and SDs (``std``, log-odds units). Without ``std`` the
        SDs are ragim's default prior SDs of a task around the pooled model (3 for the
        intercept, 1 for each other parameter; also used by
        :func:`ragim.generate.meta_regression.task_summaries`); an SD of 0 fixes that
        parameter at the prior's value.
    X : pandas.DataFrame, shape (n, features), the columns ``prior.schema`` reads.
    y : array of 0/1 (or booleans), shape (n,). With no rows the result is the prior.

    Returns
    -------
    ModelParams
        The posterior mode (Newton's method, :func:`ragim.models.map.newton_map`), with
        ``metadata`` ``{"source": "posterior", "n_rows": n, "prior": prior's source}``.

    Raises
    ------
    ValidationError
        ``prior`` not a ModelParams, ``y`` not 0/1 or not one value per row of ``X``, or
        ``X`` without the schema's columns.
    """
    if not isinstance(prior, ModelParams):
        raise ValidationError(f"prior must be a ModelParams, got {type(prior).__name__}")
    D = design_matrix(prior.kind, prior.schema, X)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(D):
        raise ValidationError(
            f"y must hold one outcome per row of X ({len(D)}), got shape {y.shape}"
        )
    labels = set(pd.unique(y).tolist())
    if not labels <= {0, 1}:
        raise ValidationError(
            f"y must be 0/1 (1: the event), got values {sorted(labels, key=str)[:5]}"
        )
    prec = prior_precisions(len(prior.vector), PRIOR_SD, INTERCEPT_PRIOR_SD)
    if prior.std is not None:
        prec = 1.0 / np.maximum(np.asarray(prior.std, dtype=float), FIXED_SD) ** 2
    A = np.hstack([np.ones((len(D), 1)), D])
    w, _ = newton_map(A, y.astype(float), prior.vector, prec, max_iter=50, tol=1e-8)
    meta = {"source": "posterior", "n_rows": int(len(y)), "prior": prior.metadata.get("source")}
    return ModelParams(prior.kind, prior.schema, w, metadata=meta)


#: weights of the LM's correction to its statistical prior that validation compares
CORRECTION_GRID = tuple(round(0.05 * i, 2) for i in range(21))


def validate_prior_correction(
    generator, index, *, trained_on: Sequence[str] = (), task_ids: Sequence[str] | None = None
) -> float | None:
    """Choose how far ``generator``'s answers may move from the statistical prior in their
    prompts, on its validation tasks, and set ``prior_correction_``.

    Each validation task (``val_task_ids_``: held out of SFT by task, never shown as a
    neighbour) gets the LM's answer and its prior, each generated without the task and the
    tasks sharing its patients. For each weight ``w`` in :data:`CORRECTION_GRID` the model
    ``prior + w * (answer - prior)`` is scored by its mean log-loss over every row of each
    validation task, and the best ``w`` is kept (the smallest among equals). This is stacking
    of two models, validated on tasks the LM did not train on: an LM whose corrections do not
    generalise gets ``w`` near 0 and answers with its prior. ``prior_correction_cv_`` keeps
    ``(w, mean log-loss)`` for every ``w``. Tasks are matched by id, so ``index`` should be
    the index the generator was trained on.

    Parameters
    ----------
    generator : a fine-tuned :class:`~ragim.generate.lm.LMGenerator`.
    index : the TaskIndex it was trained on (with its task rows).
    trained_on : tasks a later training run (GRPO, DPO) used; they no longer count as unseen
        and are left out of the validation (a :class:`~ragim.errors.DataWarning` says so).
    task_ids : the validation tasks (default: ``val_task_ids_``); tasks of ``index`` the
        generator never trained on, e.g. for a generator trained with ``val_fraction=0``. An
        id that is not in ``index`` raises ValidationError.

    Returns
    -------
    The chosen weight, or None when the generator shows no statistical prior (its answers are
    its own). When no validation task with rows is left, the earlier weight is kept, with a
    :class:`~ragim.errors.DataWarning` (it was validated for the adapter before this run); with
    no earlier weight the DataWarning says the answers are the LM's own, unvalidated
    (:data:`ragim.generate.lm.UNVALIDATED`; generation says so too).
    """
    from scipy.special import expit

    from ragim.index import leak_free
    from ragim.metrics import clipped_log_loss

    if not generator.config.statistical_prior:
        generator.prior_correction_, generator.prior_correction_cv_ = None, []
        return None
    used = set(trained_on)
    asked = list(generator.val_task_ids_ if task_ids is None else task_ids)
    unknown = [t for t in asked if t not in index] if task_ids is not None else []
    if unknown:
        raise ValidationError(
            f"{len(unknown)} of the task_ids are not in the index: {unknown[:5]}; give ids of "
            "its tasks the generator did not train on"
        )
    if task_ids is not None:  # tasks the generator trained on are not unseen
        used |= set(getattr(generator, "train_task_ids_", None) or [])
    # a task trained on, or one sharing patients with a task trained on, is not unseen
    val = [t for t in asked if t not in used and not used.intersection(index.sharing_patients([t]))]
    if len(val) < len(asked):
        warnings.warn(
            f"{len(asked) - len(val)} validation task(s) were trained on, or share patients "
            "with tasks trained on, so the correction weight is validated without them",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    val = [t for t in val if index.tasks is not None and t in index.tasks]
    if not val:
        if generator.prior_correction_ is not None:
            warnings.warn(
                "no unseen validation task with rows in this index: the correction weight "
                f"{generator.prior_correction_} validated before is kept",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
        else:
            warnings.warn(UNVALIDATED, DataWarning, stacklevel=user_stacklevel())
        return generator.prior_correction_
    recs = [index.record(t) for t in val]
    queries = [r["description"] for r in recs]
    excludes = [leak_free(r) for r in recs]
    generator.prior_correction_ = None  # score the LM's own answers
    with warnings.catch_warnings():  # they are unvalidated: that is what is being checked
        warnings.filterwarnings("ignore", message=re.escape(UNVALIDATED[:40]))
        answers = generator.generate_params(queries, index, exclude=excludes)
    priors = generator.statistical_priors(queries, index, excludes)
    grid = np.asarray(CORRECTION_GRID)
    losses = np.zeros((len(val), len(grid)))
    for i, (tid, a, p) in enumerate(zip(val, answers, priors, strict=True)):
        task = index.tasks[tid]
        base = p.log_odds(task.X)
        step = a.log_odds(task.X) - base
        losses[i] = [clipped_log_loss(task.y, expit(base + w * step)) for w in grid]
    mean = losses.mean(axis=0)
    generator.prior_correction_ = float(grid[int(np.argmin(mean))])
    generator.prior_correction_cv_ = [(float(w), float(v)) for w, v in zip(grid, mean, strict=True)]
    return generator.prior_correction_


def warn_if_rewards_overlap_targets(
    generator, heldout_fraction: float, seed: int, where: str
) -> bool:
    """Warn (:class:`~ragim.errors.DataWarning`) when ``generator`` was fine-tuned on
    ``targets="posterior"`` with another row split than the one ``where`` scores its rewards
    on (``Task.split(heldout_fraction, seed=seed)``): some reward rows then shaped the SFT
    targets, and the rewards are optimistic for answers close to them. Returns whether it
    warned."""
    sft = [r["config"] for r in getattr(generator, "training_", []) if r.get("stage") == "sft"]
    if not sft or sft[-1].get("targets") != "posterior":
        return False
    made = (float(sft[-1]["heldout_fraction"]), int(sft[-1]["seed"]))
    if math.isclose(made[0], float(heldout_fraction), rel_tol=1e-6) and made[1] == int(seed):
        return False
    warnings.warn(
        f"{where} scores rewards on Task.split({heldout_fraction}, seed={seed})[1], but the "
        f"SFT targets were fitted on Task.split({made[0]}, seed={made[1]})[0]: some reward "
        f"rows shaped them; use heldout_fraction={made[0]} and seed={made[1]}",
        DataWarning,
        stacklevel=user_stacklevel(),
    )
    return True


def _id_list(ids, name: str) -> list[str]:
    """``ids`` (task ids) as a list without repeats, or a one-line ValidationError."""
    if isinstance(ids, str) or ids is None or not isinstance(ids, Iterable):
        raise ValidationError(f"{name} must be a list of task ids, got {ids!r}")
    items = [str(t) if isinstance(t, np.str_) else t for t in ids]
    bad = [t for t in items if not isinstance(t, str)]
    if bad:
        raise ValidationError(f"{name} must hold task ids (strings), got {bad[:3]!r}")
    return list(dict.fromkeys(items))


class SFTSplit(NamedTuple):
    """Which tasks of an index SFT trains on, validates on, leaves out and hides
    (:func:`sft_split`)."""

    train_ids: list[str]
    val_ids: list[str]
    left_out: list[str]
    hidden: list[str]


def sft_split(
    index, *, val_fraction: float = 0.2, max_tasks: int | None = None, seed: int = 0
) -> SFTSplit:
    """The tasks :func:`train_sft` will use with these settings, without loading a model.

    ``val_ids``: the seeded draw of ``val_fraction`` of the tasks (of ``max_tasks`` drawn
    first, when given). ``train_ids``: the others less ``left_out``, the tasks sharing patients
    with a validation task (:func:`apart_from_validation`, which warns). ``hidden``: what no
    training prompt shows (:func:`hidden_for_validation`). Use it to check that a split leaves
    enough training tasks before a long run.

    Raises
    ------
    ValidationError
        For an ``index`` that is not a TaskIndex, a ``val_fraction`` outside [0, 1), a
        ``max_tasks`` below 1 or a ``seed`` that is not a non-negative integer.

    >>> from ragim import TaskIndex, datasets
    >>> family = datasets.synthetic_family(n_tasks=10, n_features=2)
    >>> index = TaskIndex.build(family, embedder="hashing", progress=False)
    >>> split = sft_split(index, val_fraction=0.2)
    >>> len(split.train_ids), len(split.val_ids), split.left_out  # no patient ids: nothing shared
    (8, 2, [])
    """
    from ragim.index import TaskIndex

    if not isinstance(index, TaskIndex):
        raise ValidationError(f"index must be a TaskIndex, got {type(index).__name__}")
    val_fraction = check_number(val_fraction, "val_fraction", ge=0, lt=1)
    max_tasks = check_int(max_tasks, "max_tasks", ge=1, allow_none=True)
    seed = check_int(seed, "seed", ge=0)
    drawn, val_ids = _split(index.ids, val_fraction, max_tasks, seed)
    train_ids = apart_from_validation(index, drawn, val_ids)
    trained = set(train_ids)
    return SFTSplit(
        train_ids,
        val_ids,
        [t for t in drawn if t not in trained],
        hidden_for_validation(index, val_ids, train_ids),
    )


def prompt_pool_sizes(index, split: SFTSplit) -> dict[str, int]:
    """For each training task of ``split``, how many tasks its SFT prompt may show (as
    neighbours and in the statistical prior): the index less the task, the tasks sharing its
    patients, and ``split.hidden``. The statistical prior needs 2.

    >>> from ragim import TaskIndex, datasets
    >>> family = datasets.synthetic_family(n_tasks=10, n_features=2)
    >>> index = TaskIndex.build(family, embedder="hashing", progress=False)
    >>> split = sft_split(index, val_fraction=0.2)
    >>> set(prompt_pool_sizes(index, split).values())  # 10 less itself and the 2 validation tasks
    {7}
    """
    shown = set(index.ids) - set(split.hidden)
    return {t: len(shown - {t} - set(index.sharing_patients([t]))) for t in split.train_ids}


def _split(ids: list[str], val_fraction: float, max_tasks: int | None, seed: int):
    rng = np.random.default_rng(seed)
    if max_tasks is not None:
        if max_tasks < len(ids):
            keep = set(rng.choice(len(ids), max_tasks, replace=False).tolist())
            ids = [t for i, t in enumerate(ids) if i in keep]
    n = len(ids)
    n_val = min(n - 1, max(1, int(round(val_fraction * n)))) if val_fraction > 0 and n >= 2 else 0
    val = set(rng.permutation(n)[:n_val].tolist())
    return [t for i, t in enumerate(ids) if i not in val], [
        t for i, t in enumerate(ids) if i in val
    ]


def apart_from_validation(index, train_ids: Sequence[str], val_ids: Sequence[str]) -> list[str]:
    """``train_ids`` less every task that shares a patient with a task of ``val_ids``
    (:meth:`ragim.index.TaskIndex.sharing_patients`), as leave-task-out evaluation leaves them
    out of training: the
    validation tasks are drawn at random, as evaluation targets are, and then see only
    patients SFT never learned from. A validation task that shares patients with many others
    (a site's all-adults task) costs training all of them. Without patient ids in the tasks'
    metadata nothing is left out. A :class:`~ragim.errors.DataWarning` names the tasks left
    out. When every training task shares patients with a validation task, ``train_ids`` are
    returned whole, with a DataWarning that the validation is then optimistic. An id that is
    not in ``index``, or one in both lists, raises ValidationError.

    >>> from ragim import TaskIndex, datasets
    >>> index = TaskIndex.build(datasets.heart_disease(), embedder="hashing", progress=False)
    >>> val = ["cleveland-any_cad-women_ge60"]
    >>> train = [t for t in index.ids if t not in val]
    >>> [t for t in train if t not in apart_from_validation(index, train, val)]
    ['cleveland-any_cad-all', 'cleveland-multivessel-all', 'cleveland-multivessel-women_ge60']
    """
    train_ids, val_ids = _id_list(train_ids, "train_ids"), _id_list(val_ids, "val_ids")
    unknown = [t for t in [*train_ids, *val_ids] if t not in index]
    if unknown:
        raise ValidationError(
            f"{len(unknown)} task id(s) are not in the index: {unknown[:5]}; give ids of its "
            "tasks (index.ids)"
        )
    both = sorted(set(train_ids) & set(val_ids))
    if both:
        raise ValidationError(
            f"{len(both)} task(s) are both training and validation tasks: {both[:5]}; a "
            "validation task must be one SFT does not train on"
        )
    if not val_ids or not train_ids:
        return list(train_ids)
    shared = set(index.sharing_patients(val_ids))
    apart = [t for t in train_ids if t not in shared]
    if not apart:
        warnings.warn(
            f"each of the {len(train_ids)} training task(s) shares patients with a validation "
            "task, so SFT trains on them all and its validation loss and prior-correction "
            "weight are measured on patients it learned from (optimistic); give tasks of other "
            "patients, or val_fraction=0 and validate_prior_correction on unseen tasks",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
        return list(train_ids)
    if len(apart) < len(train_ids):
        left = [t for t in train_ids if t in shared]
        warnings.warn(
            f"{len(left)} task(s) share patients with a validation task and are not trained on, "
            f"so that validation sees unseen patients: {name_some(left)}",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    return apart


def hidden_for_validation(index, val_ids: Sequence[str], keep: Sequence[str] = ()) -> list[str]:
    """What training must not see for ``val_ids`` to stay unseen: the validation tasks and
    every task sharing a patient with one (:meth:`ragim.index.TaskIndex.sharing_patients`, in
    index order), less the tasks ``keep``
    (those trained on). SFT, GRPO and preference pairs hide these from their prompts (as
    neighbours and in the statistical prior) and, by default, from their targets.

    >>> from ragim import TaskIndex, datasets
    >>> index = TaskIndex.build(datasets.heart_disease(), embedder="hashing", progress=False)
    >>> hidden_for_validation(index, ["hungary-any_cad-women_lt50"])
    ['hungary-any_cad-women_lt50', 'hungary-any_cad-all']
    """
    val = [t for t in val_ids if t in index]
    if not val:
        return []
    kept = set(keep)
    return [t for t in [*val, *index.sharing_patients(val)] if t not in kept]


def train_sft(
    index,
    config: SFTTrainingConfig | dict | None = None,
    *,
    base_model: str | None = None,
    generator_config: LMConfig | dict | None = None,
    k: int | None = None,
    device: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] | None = None,
    **overrides: Any,
) -> LMGenerator:
    """Fine-tune an LM generator with LoRA on the tasks of ``index`` (see the module docstring).

    The run is described by ``config`` (an :class:`SFTTrainingConfig`); each of its fields
    given as a keyword (``**overrides``) replaces the config's, so
    ``train_sft(index, max_steps=50)`` and ``train_sft(index, SFTTrainingConfig(max_steps=50))``
    are the same run. Defaults are the config's.

    Parameters
    ----------
    index : TaskIndex
        The prior tasks; every indexed task is an example (the task rows are not needed).
    config : SFTTrainingConfig or dict, optional
        The training settings; default ``SFTTrainingConfig()``.
    base_model : str, optional
        ``"smollm2-135m"``, ``"tiny"``, a local model directory or a hub id in
        the Hugging Face cache (nothing is downloaded); default: the
        generator config's (``"smollm2-135m"``).
    generator_config : LMConfig or dict, optional
        Retrieval, prompt and LoRA settings (``k``, ``decimals``, ``lora_r``, ``lora_alpha``,
        ``lora_dropout``, ``target_modules``, ...); ``base_model``, ``k`` and ``device``
        given here override it.
    k : int, optional
        Neighbours per prompt (overrides the generator config).
    device : str, optional
        ``"cpu"``, ``"cuda"``, ... (overrides the generator config; default ``"auto"``).
    progress : bool
        Show TRL's tqdm progress bar.
    callbacks : list of transformers.TrainerCallback, optional
        Extra trainer callbacks (early stopping, custom logging, ...).
    **overrides
        Fields of :class:`SFTTrainingConfig`: ``max_steps`` (optimiser steps, default 30),
        ``learning_rate`` (AdamW rate of the LoRA weights, linear decay; 2e-4),
        ``batch_size`` (examples per device and step, also for evaluation; 4), ``grad_accum``
        (gradient-accumulation steps; 1), ``val_fraction`` (share of tasks held out for the
        validation loss, 0: none; 0.2), ``eval_steps`` (evaluate every this many steps;
        default once, at the last step), ``seed`` (task split, data order and LoRA
        initialisation; 0), ``max_tasks`` (a random subset of this many tasks),
        ``activation_checkpointing`` (recompute activations in the backward pass: far less
        memory for long, procedure-sized prompts, about a third more time; False),
        ``targets`` (``"fit"``: the stored fits; ``"posterior"``: each task's posterior mode
        under its prompt's prior, without the task's own GRPO reward rows; see the module
        docstring),
        ``heldout_fraction`` (with ``"posterior"``, the share of rows kept out of the
        targets; 0.5, GRPO's default) and ``output_dir`` (trainer scratch directory; default a
        temporary one).

    Returns
    -------
    LMGenerator
        Fine-tuned: ``model_`` is the peft model, ``history_`` the trainer's log history
        (``loss`` per step, ``eval_loss`` per evaluation), ``training_`` the run's config,
        ``n_trainable_params_``, ``train_seconds_``, ``train_task_ids_`` and ``val_task_ids_``.

    Raises
    ------
    ValidationError
        A setting out of range (named), fewer than 2 indexed tasks, or
        ``targets="posterior"`` on an index without task rows.
    TypeError
        A keyword that is not a field of :class:`SFTTrainingConfig`.
    """
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    refuse_model_settings(
        overrides,
        SFTTrainingConfig,
        LMConfig,
        "pass it in generator_config=LMConfig({name}=...) (base_model, k and device are also "
        "keywords)",
    )
    run = run_config(SFTTrainingConfig, config, **overrides)
    if isinstance(generator_config, dict):
        generator_config = LMConfig(**generator_config)
    overrides = {
        key: v
        for key, v in (("base_model", base_model), ("k", k), ("device", device))
        if v is not None
    }
    cfg = config_with(LMConfig, generator_config, overrides)
    if cfg.dtype != "float32":
        raise ValidationError(
            f"SFT trains a float32 model (LMConfig(dtype={cfg.dtype!r}) is for generating); "
            "train with dtype='float32', in bf16 arithmetic with mixed_precision='bf16' if "
            "wanted, and generate with LMGenerator.load(path, dtype='bfloat16')"
        )
    if len(index) < 2:
        raise ValidationError(f"SFT needs at least 2 indexed tasks, got {len(index)}")

    gen = LMGenerator(cfg)
    model, tok = gen.load_model()
    split = sft_split(index, val_fraction=run.val_fraction, max_tasks=run.max_tasks, seed=run.seed)
    train_ids, val_ids, left_out, hidden = split
    limit = gen.prompt_limit(param_names(index.model, index.schema))
    if cfg.statistical_prior:
        gen.prior_generator_ = fit_prior_generator(index, progress=progress)
    examples = partial(
        build_sft_dataset,
        index,
        tok,
        cfg,
        max_tokens=limit,
        prior_generator=gen.prior_generator_,
        targets=run.targets,
        heldout_fraction=run.heldout_fraction,
        seed=run.seed,
    )
    try:
        train_ds = examples(task_ids=train_ids, hide=hidden)
    except ValidationError as exc:
        # say so when the split, not the data, starved a prompt: hidden tasks beyond the
        # validation ones leave a training prompt fewer tasks than the prior needs
        starved = min(prompt_pool_sizes(index, split).values(), default=2) < 2
        if not (cfg.statistical_prior and len(hidden) > len(val_ids) and starved):
            raise
        raise ValidationError(
            f"SFT's validation task(s) ({name_some(val_ids)}) and the "
            f"{len(hidden) - len(val_ids)} task(s) "
            "sharing their patients are hidden from every training prompt, which leaves the "
            f"{len(train_ids)} training task(s) too few others to show ({exc}); train with "
            "val_fraction=0 (then validate_prior_correction(generator, index, task_ids=...) on "
            "tasks it did not train on), another seed, or more tasks"
        ) from exc
    val_ds = examples(task_ids=val_ids) if val_ids else None

    set_seed(run.seed)
    train_from_scratch(
        gen,
        "sft",
        run,
        SFTTrainer,
        SFTConfig,
        model=model,
        tokenizer=tok,
        progress=progress,
        callbacks=callbacks,
        args=dict(
            gradient_accumulation_steps=run.grad_accum,
            completion_only_loss=True,
            max_length=None,
        ),
        train_dataset=train_ds.select_columns(["prompt", "completion"]),
        eval_dataset=None if val_ds is None else val_ds.select_columns(["prompt", "completion"]),
        description=run_description(
            "sft",
            run,
            model_config=cfg,
            # runs saved before tasks were left out (whose description has no split) trained
            # on them: their training data differ
            data=[index_data(index), {"left_out": left_out}] if left_out else index_data(index),
            split=[list(train_ids), list(val_ids)],
        ),
    )
    gen.fine_tuned_ = True
    gen.index_ = index
    record_fit_state(gen, index)
    gen.train_task_ids_, gen.val_task_ids_ = list(train_ids), list(val_ids)
    validate_prior_correction(gen, index)
    return gen


__all__ = [
    "LMConfig",
    "SFTTrainingConfig",
    "apart_from_validation",
    "build_sft_dataset",
    "excluding",
    "hidden_for_validation",
    "posterior_mode",
    "train_sft",
    "validate_prior_correction",
    "warn_if_rewards_overlap_targets",
]
