"""Policy optimisation of the LM generator: GRPO with verifiable rewards, and DPO.

Both continue the generator's (SFT) LoRA adapter; the generator passed in is left
untouched (its adapter is saved and loaded onto a fresh base model) and a new :class:`~ragim.generate.lm.LMGenerator` is
returned, whose ``save()`` writes an adapter that ``LMGenerator.load`` accepts.

* :func:`train_grpo` — TRL ``GRPOTrainer``. Prompts are the leave-one-task-out prompts of
  the training tasks (:func:`ragim.train.build_sft_dataset`); each prompt carries the
  columns ``param_names``, ``heldout`` (:func:`ragim.rewards.encode_heldout` of held-out
  rows of *that* task, ``Task.split(heldout_fraction, seed=seed)``) and ``max_abs`` that
  the reward functions of :class:`ragim.rewards.RewardConfig` read. GRPO samples
  ``num_generations`` answers per prompt with plain sampling — *not* constrained decoding —
  so early on many answers are malformed and get the reward floor; that is the
  parse-validity signal. When every answer of a group gets the same reward the group's
  advantage is zero and nothing is learned from it (TRL logs ``frac_reward_zero_std``):
  train SFT until the generator writes valid JSON unconstrained before GRPO.
* :func:`train_dpo` — TRL ``DPOTrainer`` on preference pairs
  (:func:`ragim.train.build_preference_pairs` or :func:`ragim.train.load_preferences`).
  The reference policy is a frozen copy of the starting adapter (TRL adds it as a second
  peft adapter named ``"ref"`` and it is removed after training).

``history_`` of the returned generator holds the earlier (SFT) log entries tagged
``stage="sft"`` followed by this run's, tagged ``"grpo"`` or ``"dpo"``.

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> from ragim.generate.lm import LMGenerator
>>> tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> gen = LMGenerator(base_model="tiny", k=1, device="cpu")
>>> rl = train_grpo(gen, index, max_steps=1, num_generations=2, batch_size=1, progress=False)
>>> any("loss" in h and h["stage"] == "grpo" for h in rl.history_)
True
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ragim.errors import ValidationError
from ragim.generate.lm import LMGenerator
from ragim.train.preferences import _check_int, check_pair_names


def _check_lr(v: Any) -> None:
    if isinstance(v, bool) or not (isinstance(v, int | float) and v > 0):
        raise ValidationError(f"learning_rate must be positive, got {v!r}")


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
    """A new generator with the given one's adapter on a freshly loaded base model, adapter trainable.

    A generator object is saved to a temporary artifact and loaded again (``LMGenerator.load``),
    so training never touches its weights; a path is loaded directly. A generator without an
    adapter (not fine-tuned) gets a fresh one.
    """
    if isinstance(generator_or_path, str | Path):
        gen = LMGenerator.load(generator_or_path, device=device)
    elif isinstance(generator_or_path, LMGenerator):
        src = generator_or_path
        with tempfile.TemporaryDirectory(prefix="ragim-policy-") as tmp:
            gen = LMGenerator.load(src.save(Path(tmp) / "generator"), device=device or src.config.device)
        for name, value in vars(src).items():  # keep in-memory state the artifact does not hold (index_, ...)
            if name not in ("config", "model_", "tokenizer_"):
                setattr(gen, name, copy.copy(value))
    else:
        raise ValidationError(f"expected an LMGenerator or the path of a saved one, got {type(generator_or_path).__name__}")
    active = gen.model_.active_adapter
    for name, p in gen.model_.named_parameters():
        p.requires_grad_("lora_" in name and f".{active}." in name)
    return gen


def _finish(gen: LMGenerator, trainer, stage: str, seconds: float) -> LMGenerator:
    model = trainer.model
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
    _strip_trl_patches(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    old = [{**h, "stage": h.get("stage", "sft")} for h in gen.history_]
    gen.history_ = old + [{**dict(h), "stage": stage} for h in trainer.state.log_history]
    gen.model_ = model
    gen.fine_tuned_ = True
    gen.train_seconds_ = float(gen.train_seconds_) + seconds
    return gen


def build_grpo_dataset(index, tokenizer, config, *, task_ids: Sequence[str], hide: Sequence[str] = (),
                       heldout_fraction: float = 0.5, seed: int = 0, max_tokens: int | None = None):
    """GRPO prompts with the reward columns: ``prompt``, ``task_id``, ``neighbor_ids``,
    ``param_names``, ``heldout`` and ``max_abs`` (see the module docstring)."""
    from ragim.params import param_names
    from ragim.rewards import encode_heldout
    from ragim.train.sft import build_sft_dataset

    if index.tasks is None:
        raise ValidationError("the index keeps no task rows; rebuild it with TaskIndex.build(..., keep_tasks=True) "
                              "so that rewards can be evaluated on held-out rows")
    missing = [t for t in task_ids if t not in index.tasks]
    if missing:
        raise ValidationError(f"{len(missing)} task(s) have no rows in the index: {missing[:5]}")
    ds = build_sft_dataset(index, tokenizer, config, task_ids=task_ids, hide=hide, max_tokens=max_tokens)
    names = param_names(index.model, index.schema)
    heldouts = []
    for tid in ds["task_id"]:
        _, test = index.tasks[tid].split(heldout_fraction, seed=seed)
        if test.n_rows == 0:
            raise ValidationError(f"task {tid!r} has no held-out rows at heldout_fraction={heldout_fraction}")
        heldouts.append(encode_heldout(index.model, index.schema, test.X, test.y))
    ds = ds.remove_columns(["completion"])
    ds = ds.add_column("param_names", [names] * len(ds))
    ds = ds.add_column("heldout", heldouts)
    return ds.add_column("max_abs", [float(config.max_abs)] * len(ds))


def train_grpo(
    generator_or_path,
    index,
    *,
    reward_config=None,
    num_generations: int = 4,
    max_steps: int = 50,
    learning_rate: float = 5e-5,
    batch_size: int = 1,
    max_completion_length: int | None = None,
    temperature: float = 0.8,
    seed: int = 0,
    progress: bool = True,
    beta: float = 0.0,
    heldout_fraction: float = 0.5,
    task_ids: Sequence[str] | None = None,
    extra_rewards: Mapping[Callable[..., list], float] | None = None,
    device: str | None = None,
    output_dir: str | None = None,
    callbacks: Sequence[Any] | None = None,
) -> LMGenerator:
    """Continue the generator's LoRA adapter with GRPO on verifiable rewards.

    Parameters
    ----------
    generator_or_path : LMGenerator or path
        The starting policy (usually SFT'd); it is copied, not modified.
    index : TaskIndex
        Training tasks, with rows (``keep_tasks=True``); the generator's index.
    reward_config : ragim.rewards.RewardConfig, optional
        Rewards and weights (default: held-out log-likelihood alone).
    num_generations : int
        Answers sampled per prompt (the GRPO group, >= 2).
    max_steps, learning_rate : optimiser steps and AdamW rate of the LoRA weights.
    batch_size : int
        Prompts per step (each with ``num_generations`` answers).
    max_completion_length : int, optional
        Token budget per answer; default: the longest possible answer over the index's keys
        plus a margin (:func:`ragim.lm.prompts.answer_room`).
    temperature : float
        Sampling temperature of the answers.
    seed : int
        Seed of the held-out row split, data order and sampling.
    progress : bool
        Show TRL's progress bar.
    beta : float
        KL coefficient towards the starting adapter (0: no reference model, TRL's default).
    heldout_fraction : float
        Share of each task's rows the rewards are evaluated on.
    task_ids : list of str, optional
        Training tasks; default: the generator's SFT training tasks (all tasks if none),
        with its validation tasks never shown as neighbours.
    extra_rewards : dict callable -> weight, optional
        More reward functions (TRL signature) added to ``reward_config``'s.
    device : str, optional
        Used when ``generator_or_path`` is a path.
    output_dir : str, optional
        Trainer scratch directory (nothing is saved there).
    callbacks : list of transformers.TrainerCallback, optional

    Returns
    -------
    LMGenerator
        The trained policy; ``history_`` has the GRPO log (``loss``, ``reward``,
        ``rewards/<name>/mean``, ``frac_reward_zero_std``, ...) tagged ``stage="grpo"``.
    """
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from ragim.lm.prompts import answer_room
    from ragim.params import param_names
    from ragim.rewards import RewardConfig
    from ragim.train.sft import _quiet, run_trainer, trainer_args

    for name, v in (("max_steps", max_steps), ("batch_size", batch_size)):
        _check_int(name, v, 1)
    if isinstance(num_generations, bool) or not isinstance(num_generations, int) or num_generations < 2:
        raise ValidationError(f"num_generations must be an integer >= 2 (GRPO compares answers within a group), "
                              f"got {num_generations!r}")
    _check_lr(learning_rate)
    if max_completion_length is not None:
        _check_int("max_completion_length", max_completion_length, 1)
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValidationError(f"temperature must be > 0, got {temperature!r}")
    if not (isinstance(beta, int | float) and beta >= 0):
        raise ValidationError(f"beta must be >= 0, got {beta!r}")
    if not (isinstance(heldout_fraction, int | float) and 0 < heldout_fraction < 1):
        raise ValidationError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    if reward_config is None:
        reward_config = RewardConfig()
    if not isinstance(reward_config, RewardConfig):
        raise ValidationError(f"reward_config must be a ragim.rewards.RewardConfig, got {type(reward_config).__name__}")
    reward_funcs, reward_weights = reward_config.build()
    for func, w in (extra_rewards or {}).items():
        if not callable(func):
            raise ValidationError(f"extra_rewards keys must be reward functions, got {func!r}")
        reward_funcs.append(func)
        reward_weights.append(float(w))

    gen = policy_copy(generator_or_path, device=device)
    gen._check_index(index)
    model, tok = gen.model_, gen.tokenizer_
    cfg = gen.config
    names = param_names(index.model, index.schema)
    if task_ids is None:
        task_ids = [t for t in (gen.train_task_ids_ or index.ids) if t in index]
    hide = [t for t in gen.val_task_ids_ if t not in set(task_ids)]
    train_ds = build_grpo_dataset(index, tok, cfg, task_ids=list(task_ids), hide=hide,
                                  heldout_fraction=heldout_fraction, seed=seed, max_tokens=gen.prompt_limit(names))
    if max_completion_length is None:
        max_completion_length = answer_room(names, tok, decimals=cfg.decimals, max_abs=cfg.max_abs)

    on_cuda = str(next(model.parameters()).device).startswith("cuda")
    set_seed(seed)
    with tempfile.TemporaryDirectory(prefix="ragim-grpo-") as scratch:
        args = GRPOConfig(
            **trainer_args(GRPOConfig, on_cuda=on_cuda, progress=progress, seed=seed, output_dir=output_dir or scratch,
                           max_steps=max_steps, learning_rate=learning_rate),
            per_device_train_batch_size=batch_size * num_generations, num_generations=num_generations,
            max_completion_length=max_completion_length, temperature=float(temperature), top_p=1.0,
            beta=float(beta), reward_weights=reward_weights, log_completions=False,
        )
        with _quiet(progress):
            trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_ds,
                                  processing_class=tok, callbacks=list(callbacks or []) or None)
            seconds = run_trainer(trainer, progress)
        gen = _finish(gen, trainer, "grpo", seconds)
        del trainer
    gen.index_ = index
    gen.model_kind_, gen.schema_, gen.param_names_ = index.model, index.schema, names
    gen.embedder_identity_ = index.embedder.identity
    return gen


def _preference_dataset(pairs):
    from ragim.train.reward import _rows

    rows = _rows(pairs)
    if not rows:
        raise ValidationError("no preference pairs to train on")
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                              for r in rows])


def train_dpo(
    generator_or_path,
    pairs,
    *,
    beta: float = 0.1,
    max_steps: int = 50,
    learning_rate: float = 5e-5,
    batch_size: int = 4,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
    output_dir: str | None = None,
    callbacks: Sequence[Any] | None = None,
) -> LMGenerator:
    """Continue the generator's LoRA adapter with DPO on preference pairs.

    Parameters
    ----------
    generator_or_path : LMGenerator or path
        The starting policy (usually SFT'd); it is copied, not modified. It is also the
        reference policy (a frozen copy of its adapter).
    pairs : datasets.Dataset, list of dicts or JSONL path
        Preference pairs with ``prompt``, ``chosen`` and ``rejected`` in the generator's
        prompt/answer format (:func:`~ragim.train.build_preference_pairs`).
    beta : float
        DPO temperature: how far the policy may move from the reference.
    max_steps, learning_rate, batch_size : optimiser steps, AdamW rate, pairs per step.
    seed : int
    progress : bool
        Show TRL's progress bar.
    device : str, optional
        Used when ``generator_or_path`` is a path.
    output_dir : str, optional
        Trainer scratch directory (nothing is saved there).
    callbacks : list of transformers.TrainerCallback, optional

    Returns
    -------
    LMGenerator
        The trained policy; ``history_`` has the DPO log (``loss``, ``rewards/chosen``,
        ``rewards/margins``, ``rewards/accuracies``, ...) tagged ``stage="dpo"``.
    """
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    from ragim.train.sft import _quiet, run_trainer, trainer_args

    for name, v in (("max_steps", max_steps), ("batch_size", batch_size)):
        _check_int(name, v, 1)
    _check_lr(learning_rate)
    if not (isinstance(beta, int | float) and beta > 0):
        raise ValidationError(f"beta must be > 0, got {beta!r}")
    train_ds = _preference_dataset(pairs)
    gen = policy_copy(generator_or_path, device=device)
    check_pair_names(train_ds, gen.param_names_, where="the DPO preference pairs")
    model, tok = gen.model_, gen.tokenizer_
    on_cuda = str(next(model.parameters()).device).startswith("cuda")
    set_seed(seed)
    with tempfile.TemporaryDirectory(prefix="ragim-dpo-") as scratch:
        args = DPOConfig(
            **trainer_args(DPOConfig, on_cuda=on_cuda, progress=progress, seed=seed, output_dir=output_dir or scratch,
                           max_steps=max_steps, learning_rate=learning_rate),
            per_device_train_batch_size=batch_size, beta=float(beta), max_length=None,
        )
        with _quiet(progress):
            trainer = DPOTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                                 callbacks=list(callbacks or []) or None)
            seconds = run_trainer(trainer, progress)
        gen = _finish(gen, trainer, "dpo", seconds)
        del trainer
    return gen


__all__ = ["build_grpo_dataset", "policy_copy", "train_dpo", "train_grpo"]
