"""Policy optimisation of the LM generator: GRPO with verifiable rewards, and DPO.

Both continue the generator's (SFT) LoRA adapter; the generator passed in is left
untouched (its adapter is saved and loaded onto a fresh base model) and a new
:class:`~ragim.generate.lm.LMGenerator` is returned, whose ``save()`` writes an adapter that
``LMGenerator.load`` accepts.

* :func:`train_grpo` — TRL ``GRPOTrainer``. Prompts are the leave-one-task-out prompts of
  the training tasks (:func:`ragim.train.build_sft_dataset`); each prompt carries the
  columns ``param_names``, ``heldout`` (:func:`ragim.train.rewards.encode_heldout` of held-out
  rows of *that* task, ``Task.split(heldout_fraction, seed=seed)``), ``max_abs`` and
  ``answer_format`` (the generator's, so compact answers are scored as compact), and for a
  generator with ``LMConfig(residual=True)`` ``prior`` (the statistical prior in the prompt,
  which the rewards add to each answer, a change from it), that the reward functions of
  :class:`ragim.train.rewards.VerifiableRewardConfig` read. GRPO samples
  ``num_generations`` answers per prompt under the answer grammar
  (:func:`ragim.lm.constrained.sample_under_grammar`, as ``LMGenerator`` decodes), so every
  answer parses and gets a real score, and a group's rewards differ whenever its answers do.
  The loss still uses the policy's unconstrained log-probabilities, so forced tokens are
  learned too. With ``constrained=False`` it samples plainly: early on most answers are
  malformed and get the reward floor, every answer of a group gets the same reward, the
  group's advantage is zero and nothing is learned from it (TRL logs
  ``frac_reward_zero_std``).
* :func:`train_dpo` — TRL ``DPOTrainer`` on preference pairs
  (:func:`ragim.train.build_preference_pairs` or :func:`ragim.train.load_preferences`).
  The reference policy is a frozen copy of the starting adapter (TRL adds it as a second
  peft adapter named ``"ref"`` and it is removed after training). A generator with
  ``LMConfig(residual=True)`` is refused: pairs hold final models, not changes from each
  prompt's prior.

``history_`` of the returned generator holds the earlier (SFT) log entries tagged
``stage="sft"`` followed by this run's, tagged ``"grpo"`` or ``"dpo"``; ``training_`` gets
the run's :class:`GRPOTrainingConfig` or :class:`DPOTrainingConfig` appended.

Examples
--------
>>> from ragim import LMGenerator, TaskIndex, datasets
>>> index = TaskIndex.build(datasets.synthetic_family(n_tasks=6, n_features=2, seed=0),
...                         embedder="hashing", progress=False)
>>> gen = LMGenerator(base_model="tiny", k=1, device="cpu")
>>> rl = train_grpo(gen, index, max_steps=1, num_generations=2, batch_size=1, progress=False)
>>> any("loss" in h and h["stage"] == "grpo" for h in rl.history_)
True
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from ragim.checks import check_bool, check_fields, check_int, check_number, repeated
from ragim.errors import DataWarning, ValidationError, user_stacklevel
from ragim.generate.base import record_fit_state
from ragim.generate.lm import UNVALIDATED, LMConfig, LMGenerator
from ragim.lm.pairs import (
    check_pair_names,
    check_pair_prompts,
    in_answer_format,
    pair_rows,
    pairs_dataset,
)
from ragim.train.rewards import VerifiableRewardConfig, encode_heldout, load_sign_constraints
from ragim.train.sft import (
    build_sft_dataset,
    hidden_for_validation,
    validate_prior_correction,
    warn_if_rewards_overlap_targets,
)
from ragim.train.trainer import (
    STEP_RULES,
    CheckpointConfig,
    adapter_digest,
    index_data,
    refuse_model_settings,
    run_config,
    run_description,
    train_with,
    training_record,
)


@dataclass
class GRPOTrainingConfig(CheckpointConfig):
    """How :func:`train_grpo` trains (TRL ``GRPOConfig``'s role for ragim), including the
    verifiable rewards; saved with the generator (``training_``).

    >>> GRPOTrainingConfig(max_steps=20).rewards.weights
    {'log_likelihood': 1.0}
    """

    rewards: VerifiableRewardConfig = field(
        default_factory=VerifiableRewardConfig,
        metadata={"help": "rewards and weights (default: held-out log-likelihood alone)"},
    )
    num_generations: int = field(
        default=4,
        metadata={
            "help": (
                "answers sampled per prompt (the GRPO group, >= 2: GRPO "
                "compares answers within a group)"
            )
        },
    )
    max_steps: int = field(default=50, metadata={"help": "optimiser steps"})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "AdamW learning rate of the LoRA weights"}
    )
    batch_size: int = field(
        default=1, metadata={"help": "prompts per step (each with num_generations answers)"}
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={
            "help": "token budget per answer (default: the longest possible answer plus a margin)"
        },
    )
    temperature: float = field(
        default=0.8, metadata={"help": "sampling temperature of the answers"}
    )
    constrained: bool = field(
        default=True,
        metadata={
            "help": (
                "sample the answers under the answer grammar, so every one parses and scores "
                "(False: plain sampling, where malformed answers get the reward floor)"
            )
        },
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the held-out row split, data order and sampling"}
    )
    beta: float = field(
        default=0.0, metadata={"help": "KL coefficient towards the starting adapter (0: none)"}
    )
    heldout_fraction: float = field(
        default=0.5, metadata={"help": "share of each task's rows the rewards use"}
    )
    task_ids: list[str] | None = field(
        default=None,
        metadata={"help": "training tasks (default: the generator's SFT training tasks)"},
    )

    def __post_init__(self):
        problems = []
        known = [f.name for f in fields(VerifiableRewardConfig)]
        if isinstance(self.rewards, dict) and set(self.rewards) <= set(known):
            self.rewards = VerifiableRewardConfig(**self.rewards)  # a saved config's fields
        elif isinstance(self.rewards, dict):
            unknown = sorted(set(self.rewards) - set(known))
            problems.append(f"rewards has unknown VerifiableRewardConfig field(s) {unknown}")
        elif not isinstance(self.rewards, VerifiableRewardConfig):
            problems.append(
                f"rewards (reward_config) must be a ragim.train.rewards.VerifiableRewardConfig "
                f"(formerly RewardConfig), got {type(self.rewards).__name__}"
            )
        if isinstance(self.task_ids, str | bytes):
            problems.append(
                f"task_ids must be a list of task ids, got one string {self.task_ids!r}"
            )
        elif self.task_ids is not None:
            self.task_ids = list(self.task_ids)
            twice = repeated(self.task_ids)
            if not self.task_ids:
                problems.append(
                    "task_ids is empty; give the training tasks, or None for the generator's "
                    "SFT training tasks"
                )
            elif twice:
                problems.append(
                    f"task_ids names {len(twice)} task(s) more than once ({twice[:5]}); a task "
                    "given twice would get twice the prompts"
                )
        check_fields(
            self,
            {
                **STEP_RULES,
                "num_generations": partial(check_int, ge=2),
                "max_completion_length": partial(check_int, ge=1, allow_none=True),
                "temperature": partial(check_number, gt=0),
                "beta": partial(check_number, ge=0),
                "heldout_fraction": partial(check_number, gt=0, lt=1),
                "constrained": check_bool,
            },
            "GRPOTrainingConfig",
            problems,
        )


@dataclass
class DPOTrainingConfig(CheckpointConfig):
    """How :func:`train_dpo` trains (TRL ``DPOConfig``'s role for ragim); saved with the
    generator (``training_``).

    >>> DPOTrainingConfig().beta
    0.1
    """

    beta: float = field(
        default=0.1, metadata={"help": "DPO temperature: how far the policy may move"}
    )
    max_steps: int = field(default=50, metadata={"help": "optimiser steps"})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "AdamW learning rate of the LoRA weights"}
    )
    batch_size: int = field(default=4, metadata={"help": "pairs per step"})
    seed: int = field(default=0, metadata={"help": "seed of the data order"})

    def __post_init__(self):
        check_fields(
            self,
            {**STEP_RULES, "beta": partial(check_number, gt=0)},
            "DPOTrainingConfig",
        )


def _strip_trl_patches(model) -> None:
    """Remove TRL's fused-LM-head ``forward`` override (an instance attribute left by the trainers).

    Its non-fused path calls the ``forward`` captured when it was patched, so a copy of a patched
    model would silently run the *original* model's weights.
    """
    for module in model.modules():
        code = getattr(getattr(module.__dict__.get("forward"), "__func__", None), "__code__", None)
        if code is not None and code.co_name == "_fused_forward":
            del module.__dict__["forward"]


def policy_copy(generator_or_path, *, device: str | None = None) -> LMGenerator:
    """A new generator with the given one's adapter on a freshly loaded base model, adapter
    trainable.

    A generator object is saved to a temporary artifact and loaded again (``LMGenerator.load``),
    so training never touches its weights; a path is loaded directly. The copy's weights are
    float32 (``LMConfig.dtype``) whatever the source's: training needs them. A generator without an
    adapter (not fine-tuned) gets a fresh one.
    """
    if isinstance(generator_or_path, str | Path):
        gen = LMGenerator.load(generator_or_path, device=device, dtype="float32")
    elif isinstance(generator_or_path, LMGenerator):
        src = generator_or_path
        with tempfile.TemporaryDirectory(prefix="ragim-policy-") as tmp:
            gen = LMGenerator.load(
                src.save(Path(tmp) / "generator"),
                device=device or src.config.device,
                dtype="float32",
            )
        for name, value in vars(
            src
        ).items():  # keep in-memory state the artifact does not hold (index_, ...)
            if name not in ("config", "model_", "tokenizer_"):
                setattr(gen, name, copy.copy(value))
    else:
        raise ValidationError(
            "expected an LMGenerator or the path of a saved one, got "
            f"{type(generator_or_path).__name__}"
        )
    active = gen.model_.active_adapter
    for name, p in gen.model_.named_parameters():
        p.requires_grad_("lora_" in name and f".{active}." in name)
    return gen


def _continue_policy(
    gen: LMGenerator,
    trainer_cls: type,
    args_cls: type,
    run,
    stage: str,
    **train_kwargs: Any,
) -> LMGenerator:
    """Train ``gen``'s adapter further with ``trainer_cls`` (:func:`train_with`, seeded with
    ``run.seed``; ``train_kwargs`` are its other keywords: ``progress``,
    ``callbacks``, the trainer's ``args`` and datasets) and return ``gen`` with the result: the
    adapter frozen in eval mode (TRL's ``"ref"`` adapter and patches removed), its ``history_``
    the earlier entries followed by this run's, tagged ``stage``, and the run appended to
    ``training_``."""
    from transformers import set_seed

    set_seed(run.seed)
    done = train_with(
        trainer_cls,
        args_cls,
        run,
        stage=stage,
        model=gen.model_,
        tokenizer=gen.tokenizer_,
        **train_kwargs,
    )
    model = done.model
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
    _strip_trl_patches(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    old = [{**h, "stage": h.get("stage", "sft")} for h in gen.history_]
    gen.history_ = old + [{**h, "stage": stage} for h in done.history]
    gen.model_ = model
    gen.fine_tuned_ = True
    gen.train_seconds_ = float(gen.train_seconds_) + done.seconds
    gen.training_ = [*gen.training_, training_record(stage, run)]
    return gen


def build_grpo_dataset(
    index,
    tokenizer,
    config,
    *,
    task_ids: Sequence[str],
    hide: Sequence[str] = (),
    heldout_fraction: float = 0.5,
    seed: int = 0,
    max_tokens: int | None = None,
    prior_generator=None,
):
    """GRPO prompts with the reward columns: ``prompt``, ``task_id``, ``neighbor_ids``,
    ``param_names``, ``heldout``, ``max_abs``, ``answer_format`` and, with
    ``config.residual``, ``prior`` (the values each residual answer is added to; see the module
    docstring). The prompts are :func:`ragim.train.build_sft_dataset`'s (``prior_generator``
    is passed on to it)."""
    from ragim.params import param_names

    if index.tasks is None:
        raise ValidationError(
            "the index keeps no task rows; rebuild it with TaskIndex.build(..., keep_tasks=True) "
            "so that rewards can be evaluated on held-out rows"
        )
    unknown = [t for t in task_ids if t not in index]
    if unknown:
        raise ValidationError(
            f"{len(unknown)} of the task_ids are not in the index: {unknown[:5]}; give ids of "
            "its tasks (index.ids)"
        )
    missing = [t for t in task_ids if t not in index.tasks]
    if missing:
        raise ValidationError(f"{len(missing)} task(s) have no rows in the index: {missing[:5]}")
    ds = build_sft_dataset(
        index,
        tokenizer,
        config,
        task_ids=task_ids,
        hide=hide,
        max_tokens=max_tokens,
        prior_generator=prior_generator,
        warn_clipped=False,  # the prompts alone are used
    )
    names = param_names(index.model, index.schema)
    heldouts = []
    for tid in ds["task_id"]:
        _, test = index.tasks[tid].split(heldout_fraction, seed=seed)
        if test.n_rows == 0:
            raise ValidationError(
                f"task {tid!r} has no held-out rows at heldout_fraction={heldout_fraction}"
            )
        heldouts.append(encode_heldout(index.model, index.schema, test.X, test.y))
    ds = ds.remove_columns(["completion"])
    ds = ds.add_column("param_names", [names] * len(ds))
    ds = ds.add_column("heldout", heldouts)
    ds = ds.add_column("max_abs", [float(config.max_abs)] * len(ds))
    return ds.add_column("answer_format", [config.answer_format] * len(ds))


def train_grpo(
    generator_or_path,
    index,
    config: GRPOTrainingConfig | dict | None = None,
    *,
    reward_config=None,
    extra_rewards: Mapping[Callable[..., list], float] | None = None,
    device: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] | None = None,
    **overrides: Any,
) -> LMGenerator:
    """Continue the generator's LoRA adapter with GRPO on verifiable rewards: a group of
    answers sampled per prompt, each rewarded (by default, its log-likelihood on held-out rows).

    Parameters
    ----------
    generator_or_path : LMGenerator or path
        The starting policy (usually SFT'd); it is copied, not modified.
    index : TaskIndex
        Training tasks, with rows (``keep_tasks=True``); the generator's index.
    config : GRPOTrainingConfig or dict, optional
        The run's settings; each of its fields given as a keyword (``**overrides``)
        replaces the config's (defaults are the config's).
    reward_config : ragim.train.rewards.VerifiableRewardConfig, optional
        Rewards and weights (default: held-out log-likelihood alone); the config's ``rewards``.
    extra_rewards : dict callable -> weight, optional
        More reward functions (TRL signature) added to ``reward_config``'s.
    device : str, optional
        Used when ``generator_or_path`` is a path.
    progress : bool
        Show TRL's progress bar.
    callbacks : list of transformers.TrainerCallback, optional
    **overrides
        Fields of :class:`GRPOTrainingConfig`: ``num_generations`` (answers sampled per
        prompt, the GRPO group, >= 2; default 4), ``max_steps`` and ``learning_rate``
        (optimiser steps and AdamW rate of the LoRA weights; 50, 5e-5), ``batch_size``
        (prompts per step, each with ``num_generations`` answers; 1),
        ``max_completion_length`` (token budget per answer; default the longest possible
        answer over the index's keys plus a margin, :func:`ragim.lm.prompts.answer_room`),
        ``temperature`` (of the sampled answers; 0.8), ``constrained`` (sample under the
        answer grammar; True, see the module docstring), ``seed`` (held-out row split, data
        order and sampling), ``beta`` (KL coefficient towards the starting adapter; 0: no
        reference model, TRL's default), ``heldout_fraction`` (share of each task's rows the
        rewards are evaluated on; 0.5), ``task_ids`` (training tasks; default the generator's
        SFT training tasks, all tasks if none, with its validation tasks never shown as
        neighbours), ``output_dir`` (trainer scratch directory) and
        ``activation_checkpointing`` (recompute activations in the backward pass; on
        heart-sized prompts of about 2,200 tokens far less memory, see docs/training.md;
        sampling keeps its KV cache).

    Returns
    -------
    LMGenerator
        The trained policy; ``history_`` has the GRPO log (``loss``, ``reward``,
        ``rewards/<name>/mean``, ``frac_reward_zero_std``, ...) tagged ``stage="grpo"``;
        ``training_`` ends with this run's config.

    Raises
    ------
    ValidationError
        The ``sign`` reward without ``sign_constraints`` (every step would fail on it).
        An index of another layout or embedder than the generator's, or one that no longer
        holds the tasks it was fine-tuned on or was rebuilt since (other feature scaling;
        :meth:`~ragim.generate.base.Generator.check_index_unchanged`), before any step.
    """
    from trl import GRPOConfig, GRPOTrainer

    from ragim.lm.constrained import sample_under_grammar
    from ragim.lm.prompts import ANSWER_MARGIN, answer_room
    from ragim.params import param_names

    if reward_config is not None and overrides.get("rewards") is not None:
        raise TypeError("give the rewards once: reward_config= or rewards=, not both")
    if overrides.get("rewards") is None:
        overrides["rewards"] = reward_config
    refuse_model_settings(
        overrides,
        GRPOTrainingConfig,
        LMConfig,
        "it was fixed when the generator was fine-tuned, and GRPO continues its adapter: set "
        "it in train_sft(index, generator_config=LMConfig({name}=...))",
    )
    run = run_config(GRPOTrainingConfig, config, **overrides)
    if "sign" in run.rewards.weights and run.rewards.sign_constraints is None:
        raise ValidationError(
            "the 'sign' reward needs the expected signs, and GRPO's prompts carry none: give "
            "VerifiableRewardConfig(sign_constraints=path) (a JSON object or term,sign CSV; "
            "ragim train grpo --sign-constraints PATH), or drop 'sign' from the weights"
        )
    reward_funcs, reward_weights = run.rewards.build()
    for func, w in (extra_rewards or {}).items():
        if not callable(func):
            raise ValidationError(f"extra_rewards keys must be reward functions, got {func!r}")
        reward_funcs.append(func)
        reward_weights.append(float(w))

    gen = policy_copy(generator_or_path, device=device)
    gen.check_index(index)
    gen.check_index_unchanged(index)  # GRPO continues what SFT learned from this index's tasks
    warn_if_rewards_overlap_targets(gen, run.heldout_fraction, run.seed, "GRPO")
    tok, cfg = gen.tokenizer_, gen.config
    names = param_names(index.model, index.schema)
    train_ids = run.task_ids
    if train_ids is None:
        train_ids = [t for t in (gen.train_task_ids_ or index.ids) if t in index]
    # the validation tasks GRPO does not train on, and the tasks sharing their patients
    trained = set(train_ids)
    unseen = [t for t in gen.val_task_ids_ if t not in trained]
    hide = hidden_for_validation(index, unseen, train_ids)
    train_ds = build_grpo_dataset(
        index,
        tok,
        cfg,
        task_ids=list(train_ids),
        hide=hide,
        heldout_fraction=run.heldout_fraction,
        seed=run.seed,
        max_tokens=gen.prompt_limit(names),
        prior_generator=gen.fitted_prior(index),  # the prior its samples are shown
    )
    room = answer_room(
        names, tok, decimals=cfg.decimals, max_abs=cfg.max_abs, format_name=cfg.answer_format
    )
    longest = room - ANSWER_MARGIN + 1  # the longest answer in its usual tokens, then its end
    completion_length = room if run.max_completion_length is None else run.max_completion_length
    if completion_length < longest:
        raise ValidationError(
            f"max_completion_length={completion_length} cannot hold the longest answer over "
            f"these {len(names)} parameters ({longest} tokens with its end); cut answers would "
            f"score the reward floor. Give at least {longest}, or leave it unset ({room})"
        )

    sampling = (
        sample_under_grammar(gen.model_, tok, gen.answer_format(names))
        if run.constrained
        else contextlib.nullcontext()
    )
    signs = run.rewards.sign_constraints  # a path: a resume must read the same constraints
    sign_data = [] if signs is None else [load_sign_constraints(signs)]
    n_before = len(gen.history_)
    with sampling:
        gen = _continue_policy(
            gen,
            GRPOTrainer,
            GRPOConfig,
            run,
            "grpo",
            progress=progress,
            callbacks=callbacks,
            args=dict(
                per_device_train_batch_size=run.batch_size * run.num_generations,
                num_generations=run.num_generations,
                max_completion_length=completion_length,
                temperature=run.temperature,
                top_p=1.0,
                beta=run.beta,
                reward_weights=reward_weights,
                log_completions=False,
            ),
            reward_funcs=reward_funcs,
            train_dataset=train_ds,
            description=run_description(
                "grpo",
                run,
                model_config=cfg,
                data=[index_data(index), list(train_ids), *sign_data],
                start=adapter_digest(gen.model_),
            ),
        )
    steps = gen.history_[n_before:]
    spread = [h["frac_reward_zero_std"] for h in steps if "frac_reward_zero_std" in h]
    if spread and min(spread) == 1:
        if not run.constrained:
            why = "; unconstrained answers that never parse all get the reward floor"
        elif set(run.rewards.weights) == {"validity"}:
            why = "; under constrained sampling every answer is valid, so validity is always 1"
        else:
            why = ""
        warnings.warn(
            "every GRPO group gave all its answers the same reward, so the advantage was zero "
            f"and the adapter did not learn{why}",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    gen.index_ = index
    record_fit_state(gen, index)
    # the SFT adapter's weight does not hold for this one
    validate_prior_correction(gen, index, trained_on=train_ids)
    return gen


def train_dpo(
    generator_or_path,
    pairs,
    config: DPOTrainingConfig | dict | None = None,
    *,
    index=None,
    device: str | None = None,
    progress: bool = True,
    callbacks: Sequence[Any] | None = None,
    **overrides: Any,
) -> LMGenerator:
    """Continue the generator's LoRA adapter with DPO on preference pairs, against a frozen
    copy of the adapter it starts from (the reference policy).

    Parameters
    ----------
    generator_or_path : LMGenerator or path
        The starting policy (usually SFT'd); it is copied, not modified. It is also the
        reference policy (a frozen copy of its adapter).
    pairs : datasets.Dataset, list of dicts or JSONL path
        Preference pairs with ``prompt``, ``chosen`` and ``rejected`` in the generator's
        prompt/answer format (:func:`~ragim.train.build_preference_pairs`).
    config : DPOTrainingConfig or dict, optional
        The run's settings; each of its fields given as a keyword replaces the config's.
    index : TaskIndex, optional
        The training index, on whose validation tasks the correction weight of a generator
        with the statistical prior is validated again after DPO
        (:func:`~ragim.train.validate_prior_correction`; tasks of the pairs are left out).
        Default: the generator's own ``index_`` (None for one loaded from disk: the earlier
        weight is then kept, with a DataWarning).
    device, progress, callbacks
        As in :func:`train_grpo`.
    **overrides
        Fields of :class:`DPOTrainingConfig`: ``beta`` (DPO temperature: how far the policy
        may move from the reference; default 0.1), ``max_steps``, ``learning_rate`` and
        ``batch_size`` (optimiser steps, AdamW rate, pairs per step; 50, 5e-5, 4), ``seed``
        (data order) and ``output_dir`` (trainer scratch directory).

    Returns
    -------
    LMGenerator
        The trained policy; ``history_`` has the DPO log (``loss``, ``rewards/chosen``,
        ``rewards/margins``, ``rewards/accuracies``, ...) tagged ``stage="dpo"``; ``training_``
        ends with this run's config.

    Raises
    ------
    ValidationError
        No pairs, pairs over another parameter layout, pairs whose prompts have another layout
        than the generator builds (:func:`~ragim.lm.pairs.check_pair_prompts`: answer format,
        statistical prior, population model, more than ``k`` neighbours), or a generator with
        ``LMConfig(residual=True)`` (its answers are changes from the prompt's prior, the pairs'
        models are not), or an ``index`` the generator was not fine-tuned on (another layout,
        rebuilt since, tasks removed), before any step.
    """
    from trl import DPOConfig, DPOTrainer

    refuse_model_settings(
        overrides,
        DPOTrainingConfig,
        LMConfig,
        "it was fixed when the generator was fine-tuned, and DPO continues its adapter: set "
        "it in train_sft(index, generator_config=LMConfig({name}=...))",
    )
    run = run_config(DPOTrainingConfig, config, **overrides)
    rows = pair_rows(pairs)
    if not rows:
        raise ValidationError("no preference pairs to train on")
    gen = policy_copy(generator_or_path, device=device)
    if index is not None:  # validated on after training: refuse another index before it
        gen.check_index(index)
        gen.check_index_unchanged(index)
    if gen.config.residual:
        raise ValidationError(
            "train_dpo does not train a generator with LMConfig(residual=True): preference "
            "pairs hold final models, not changes from each prompt's prior; use train_grpo"
        )
    fmt = gen.answer_format(gen.param_names_)
    check_pair_names(rows, gen.param_names_, where="the DPO preference pairs", answer_format=fmt)
    check_pair_prompts(rows, gen, where="the DPO preference pairs")
    # the policy is trained on answers as it writes them (compact ones for a compact generator)
    train_ds = pairs_dataset(in_answer_format(rows, fmt))
    gen = _continue_policy(
        gen,
        DPOTrainer,
        DPOConfig,
        run,
        "dpo",
        progress=progress,
        callbacks=callbacks,
        args=dict(beta=run.beta, max_length=None),
        train_dataset=train_ds,
        description=run_description(
            "dpo", run, model_config=gen.config, data=rows, start=adapter_digest(gen.model_)
        ),
    )
    index = index if index is not None else gen.index_
    trained = sorted({r["task_id"] for r in rows if r.get("task_id") is not None})
    if index is not None:  # the SFT adapter's weight does not hold for this one
        validate_prior_correction(gen, index, trained_on=trained)
    elif gen.config.statistical_prior and gen.prior_correction_ is None:
        warnings.warn(UNVALIDATED, DataWarning, stacklevel=user_stacklevel())
    elif gen.prior_correction_ is not None:
        warnings.warn(
            f"train_dpo has no index to validate the correction weight on, so the weight "
            f"{gen.prior_correction_} of the adapter before DPO is kept; pass index=",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    return gen


__all__ = [
    "DPOTrainingConfig",
    "GRPOTrainingConfig",
    "build_grpo_dataset",
    "policy_copy",
    "train_dpo",
    "train_grpo",
]
