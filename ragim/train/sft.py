"""Supervised fine-tuning (behaviour cloning) of the LM generator with LoRA.

Every indexed task becomes one example, leave-one-task-out: its prompt
(:func:`ragim.lm.prompts.build_prompt`) shows neighbours retrieved with the task
itself and every task sharing its patients excluded (:func:`ragim.index.leak_free`),
and its completion is the task's own fitted parameters as answer text
(:func:`ragim.lm.prompts.answer_text`). A share of the tasks is held out, by task,
for validation; training prompts never show a validation task as a neighbour.

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

import contextlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ragim.errors import ValidationError
from ragim.generate.lm import LMConfig, LMGenerator, quiet_checkpointing_rename
from ragim.params import param_names


def _without(pred, ids: frozenset):
    return lambda rec: pred(rec) or rec["task_id"] in ids


def build_sft_dataset(index, tokenizer, config: LMConfig | None = None, *, task_ids: Sequence[str] | None = None,
                      hide: Sequence[str] = (), max_tokens: int | None = None):
    """Leave-one-task-out prompt/completion examples for the tasks of ``index``.

    Parameters
    ----------
    index : a :class:`~ragim.index.TaskIndex` (its stored parameters are the targets; task
        rows are not needed).
    tokenizer : the generator's tokenizer (for the chat template and token budget).
    config : an :class:`~ragim.generate.lm.LMConfig` (``k``, ``decimals``, ``max_abs``, ``population``).
    task_ids : the target tasks (default: every indexed task).
    hide : task ids never shown as a neighbour or counted in the population model (e.g. the
        validation tasks).
    max_tokens : context for prompt plus answer (default: the tokenizer's).

    Returns
    -------
    datasets.Dataset
        Columns ``prompt`` (system + user messages), ``completion`` (one assistant
        message), ``task_id`` and ``neighbor_ids`` (the neighbours in the prompt, most
        similar first).
    """
    from datasets import Dataset

    from ragim.index import leak_free
    from ragim.lm.prompts import answer_text, index_prompt

    cfg = config or LMConfig()
    ids = list(index.ids if task_ids is None else task_ids)
    if not ids:
        raise ValidationError("no tasks to build SFT examples from")
    hidden = frozenset(hide)
    k = min(cfg.k, max(len(index) - 1, 0))
    records = [index.record(t) for t in ids]
    excludes = [_without(leak_free(r), hidden) for r in records]
    hits = index.search_vectors(index.vectors(ids), k, exclude=excludes) if k > 0 else [[] for _ in ids]
    rows = []
    for tid, rec, hs, ex in zip(ids, records, hits, excludes, strict=True):
        hs = sorted(hs, key=lambda h: -float(h.score))
        messages, _, kept, _ = index_prompt(index, rec["description"], hs, tokenizer, cfg, exclude=ex,
                                         max_tokens=max_tokens)
        answer = answer_text(index.params(tid), cfg.decimals, max_abs=cfg.max_abs)
        rows.append({"prompt": messages, "completion": [{"role": "assistant", "content": answer}],
                     "task_id": tid, "neighbor_ids": [h.task_id for h in hs[:kept]]})
    return Dataset.from_list(rows)


def _no_checkpointing(config_cls) -> dict[str, bool]:
    """TRL turns activation checkpointing on by default; for LoRA on small models it only costs time."""
    fields = getattr(config_cls, "__dataclass_fields__", {})
    return {"activation_checkpointing": False} if "activation_checkpointing" in fields else {"gradient_checkpointing": False}


def trainer_args(config_cls, *, on_cuda: bool, progress: bool, seed: int, output_dir: str, max_steps: int,
                 learning_rate: float) -> dict[str, Any]:
    """The settings every ragim trainer shares (log each step, save and report nothing, bf16 on
    GPUs that support it, no activation checkpointing) as keyword arguments of ``config_cls``."""
    import torch

    return dict(output_dir=output_dir, max_steps=max_steps, learning_rate=learning_rate, logging_strategy="steps",
                logging_steps=1, save_strategy="no", report_to="none", use_cpu=not on_cuda, disable_tqdm=not progress,
                bf16=on_cuda and torch.cuda.is_bf16_supported(), fp16=False, seed=seed, data_seed=seed,
                dataloader_pin_memory=on_cuda, push_to_hub=False, warmup_steps=0, **_no_checkpointing(config_cls))


def run_trainer(trainer, progress: bool) -> float:
    """``trainer.train()``; returns wall seconds. Nothing goes to stdout: without ``progress``
    transformers' per-step log prints are removed, with it the progress bar (on stderr) stays
    but its per-step log dicts, which it would write to stdout, are dropped (the logs are
    still in ``trainer.state.log_history``)."""
    from transformers import PrinterCallback, ProgressCallback

    if not progress:
        trainer.remove_callback(PrinterCallback)
    elif trainer.pop_callback(ProgressCallback) is not None:

        class BarOnlyProgress(ProgressCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # the dicts, not the bar
                return None

        trainer.add_callback(BarOnlyProgress())
    t0 = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t0


@contextlib.contextmanager
def _quiet(progress: bool):
    """Silence transformers' checkpointing-rename FutureWarnings and, without ``progress``,
    the datasets map bars (restoring their previous state)."""
    import datasets

    was_enabled = not datasets.are_progress_bars_disabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        with quiet_checkpointing_rename():
            yield
    finally:
        if was_enabled and not progress:
            datasets.enable_progress_bars()


def _split(ids: list[str], val_fraction: float, max_tasks: int | None, seed: int):
    rng = np.random.default_rng(seed)
    if max_tasks is not None:
        if isinstance(max_tasks, bool) or not isinstance(max_tasks, int) or max_tasks < 1:
            raise ValidationError(f"max_tasks must be a positive integer or None, got {max_tasks!r}")
        if max_tasks < len(ids):
            keep = set(rng.choice(len(ids), max_tasks, replace=False).tolist())
            ids = [t for i, t in enumerate(ids) if i in keep]
    n = len(ids)
    n_val = min(n - 1, max(1, int(round(val_fraction * n)))) if val_fraction > 0 and n >= 2 else 0
    val = set(rng.permutation(n)[:n_val].tolist())
    return [t for i, t in enumerate(ids) if i not in val], [t for i, t in enumerate(ids) if i in val]


def train_sft(
    index,
    *,
    base_model: str | None = None,
    generator_config: LMConfig | dict | None = None,
    max_steps: int = 30,
    learning_rate: float = 2e-4,
    batch_size: int = 4,
    grad_accum: int = 1,
    val_fraction: float = 0.2,
    eval_steps: int | None = None,
    output_dir: str | None = None,
    progress: bool = True,
    seed: int = 0,
    max_tasks: int | None = None,
    k: int | None = None,
    device: str | None = None,
    callbacks: Sequence[Any] | None = None,
) -> LMGenerator:
    """Fine-tune an LM generator with LoRA on the tasks of ``index`` (see the module docstring).

    Parameters
    ----------
    index : TaskIndex
        The prior tasks; every indexed task is an example (the task rows are not needed).
    base_model : str, optional
        ``"smollm2-135m"``, ``"tiny"``, a local model directory or a hub id; default: the
        config's (``"smollm2-135m"``).
    generator_config : LMConfig or dict, optional
        Retrieval, prompt and LoRA settings (``k``, ``decimals``, ``lora_r``, ``lora_alpha``,
        ``lora_dropout``, ``target_modules``, ...); ``base_model``, ``k`` and ``device``
        given here override it.
    max_steps : int
        Optimiser steps.
    learning_rate : float
        AdamW learning rate of the LoRA weights (linear decay).
    batch_size : int
        Examples per device and step (also the evaluation batch size).
    grad_accum : int
        Gradient-accumulation steps (effective batch = batch_size * grad_accum * devices).
    val_fraction : float
        Share of tasks held out for the validation loss (0: none).
    eval_steps : int, optional
        Evaluate every this many steps; default: once, at the last step.
    output_dir : str, optional
        Trainer scratch directory (nothing is saved there); default: a temporary one.
    progress : bool
        Show TRL's tqdm progress bar.
    seed : int
        Seed of the task split, data order and LoRA initialisation.
    max_tasks : int, optional
        Use a random subset of this many tasks (for quick runs).
    k : int, optional
        Neighbours per prompt (overrides the config).
    device : str, optional
        ``"cpu"``, ``"cuda"``, ... (overrides the config; default ``"auto"``).
    callbacks : list of transformers.TrainerCallback, optional
        Extra trainer callbacks (early stopping, custom logging, ...).

    Returns
    -------
    LMGenerator
        Fine-tuned: ``model_`` is the peft model, ``history_`` the trainer's log history
        (``loss`` per step, ``eval_loss`` per evaluation), ``n_trainable_params_``,
        ``train_seconds_``, ``train_task_ids_`` and ``val_task_ids_``.
    """
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    if isinstance(generator_config, dict):
        generator_config = LMConfig(**generator_config)
    overrides = {key: v for key, v in (("base_model", base_model), ("k", k), ("device", device)) if v is not None}
    cfg = LMConfig(**{**asdict(generator_config or LMConfig()), **overrides})
    for name, v in (("max_steps", max_steps), ("batch_size", batch_size), ("grad_accum", grad_accum)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValidationError(f"{name} must be a positive integer, got {v!r}")
    if eval_steps is not None and (isinstance(eval_steps, bool) or not isinstance(eval_steps, int) or eval_steps < 1):
        raise ValidationError(f"eval_steps must be a positive integer or None, got {eval_steps!r}")
    if not 0 <= val_fraction < 1:
        raise ValidationError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not (isinstance(learning_rate, int | float) and learning_rate > 0):
        raise ValidationError(f"learning_rate must be positive, got {learning_rate!r}")
    if len(index) < 2:
        raise ValidationError(f"SFT needs at least 2 indexed tasks, got {len(index)}")

    gen = LMGenerator(cfg)
    model, tok = gen.load_model()
    train_ids, val_ids = _split(index.ids, val_fraction, max_tasks, seed)
    limit = gen.prompt_limit(param_names(index.model, index.schema))
    train_ds = build_sft_dataset(index, tok, cfg, task_ids=train_ids, hide=val_ids, max_tokens=limit)
    val_ds = build_sft_dataset(index, tok, cfg, task_ids=val_ids, max_tokens=limit) if val_ids else None

    on_cuda = str(next(model.parameters()).device).startswith("cuda")
    set_seed(seed)
    with tempfile.TemporaryDirectory(prefix="ragim-sft-") as scratch:
        args = SFTConfig(
            **trainer_args(SFTConfig, on_cuda=on_cuda, progress=progress, seed=seed, output_dir=output_dir or scratch,
                           max_steps=max_steps, learning_rate=learning_rate),
            per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
            gradient_accumulation_steps=grad_accum,
            eval_strategy="steps" if val_ds is not None else "no", eval_steps=eval_steps or max_steps,
            completion_only_loss=True, max_length=None,
        )
        with _quiet(progress):
            trainer = SFTTrainer(
                model=model, args=args, train_dataset=train_ds.select_columns(["prompt", "completion"]),
                eval_dataset=None if val_ds is None else val_ds.select_columns(["prompt", "completion"]),
                processing_class=tok, peft_config=gen.lora_config(), callbacks=list(callbacks or []) or None,
            )
            gen.train_seconds_ = run_trainer(trainer, progress)
        peft_model = trainer.model
        gen.history_ = [dict(h) for h in trainer.state.log_history]
        del trainer
    peft_model.eval()
    gen.model_ = peft_model
    gen.n_trainable_params_ = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    gen.fine_tuned_ = True
    gen.index_ = index
    gen.model_kind_ = index.model
    gen.schema_ = index.schema
    gen.param_names_ = param_names(index.model, index.schema)
    gen.embedder_identity_ = index.embedder.identity
    gen.train_task_ids_, gen.val_task_ids_ = list(train_ids), list(val_ids)
    return gen


__all__ = ["build_sft_dataset", "train_sft", "LMConfig"]
