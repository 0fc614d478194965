"""What every ragim trainer shares: TRL settings, quiet runs and run configs.

* :func:`trainer_args` — the TRL ``*Config`` settings common to SFT, reward-model, GRPO and
  DPO training (log every step, save and report nothing, bf16 on GPUs that support it, no
  activation checkpointing).
* :func:`run_trainer` — ``trainer.train()`` with nothing written to stdout.
* :func:`quiet_training` — silences transformers' checkpointing-rename warnings and, without
  ``progress``, the ``datasets`` progress bars.
* :func:`train_with` — all of the above in one call: builds the TRL ``*Config`` and trainer in
  a scratch directory, trains quietly and returns the trained model, log and wall time.
* :func:`train_from_scratch` — :func:`train_with` for a new LoRA adapter of a generator or
  reward model (its ``lora_config()``), the run installed on it (:meth:`TrainedRun.install`).
* :func:`run_config` and :func:`training_record` — a trainer's settings as one config
  dataclass, the way TRL's ``SFTConfig`` describes a run: built from a config object and
  keyword overrides, and recorded (``{"stage", "config"}``) in the trained model's
  ``training_`` list, which its ``save()`` writes to ``state.json`` beside the adapter.

Examples
--------
>>> from ragim.train.sft import SFTTrainingConfig
>>> cfg = run_config(SFTTrainingConfig, None, max_steps=5, batch_size=None)
>>> cfg.max_steps, cfg.batch_size
(5, 4)
>>> training_record("sft", cfg)["config"]["max_steps"]
5
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import field
from functools import partial
from typing import Any

from ragim.checks import check_bool, check_int, check_number, config_from
from ragim.errors import ValidationError, user_stacklevel
from ragim.lm.adapters import quiet_checkpointing_rename


def check_output_dir(value: Any, name: str) -> str | None:
    """``value`` as a directory name (a non-empty str or path-like that is not an existing
    file; None: a temporary directory)."""
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise ValidationError(f"{name} must be a directory path or None, got {value!r}")
    if os.path.exists(value) and not os.path.isdir(value):
        raise ValidationError(f"{name} {os.fspath(value)!r} is a file, not a directory")
    return os.fspath(value)


@dataclasses.dataclass
class CheckpointConfig:
    """Where a trainer works, whether it keeps resumable checkpoints, its arithmetic and its
    memory: the fields every training config inherits (TRL's ``output_dir`` and
    ``save_steps``, HF's ``resume_from_checkpoint``, accelerate's ``mixed_precision``, and
    ``activation_checkpointing``, TRL's ``gradient_checkpointing``). With ``save_steps``, a
    checkpoint (the LoRA adapter, optimiser, scheduler and RNG states) is kept in
    ``output_dir`` every that many steps; with ``resume_from_checkpoint``, training continues
    from the last one there, if there is one, so a long CPU run that was stopped loses at most
    ``save_steps`` steps. ``mixed_precision="bf16"`` runs forward and backward passes under
    bf16 autocast on a CPU too (:data:`MIXED_PRECISION`). ``activation_checkpointing=True``
    keeps only each layer's input in the forward pass and recomputes the rest in the backward
    pass: the same gradients with far less memory on long prompts, for more time per step
    (TRL turns it off while GRPO samples, so sampling keeps its KV cache). A resumed run may
    change the last two, since neither changes what is trained (:data:`VOLATILE_TRAINING`)."""

    output_dir: str | None = field(
        default=None,
        metadata={"help": "trainer directory (checkpoints with save_steps; default: temporary)"},
    )
    save_steps: int | None = field(
        default=None,
        metadata={"help": "keep a resumable checkpoint in output_dir every this many steps"},
    )
    resume_from_checkpoint: bool = field(
        default=False,
        metadata={"help": "continue from the last checkpoint in output_dir, if there is one"},
    )
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "'auto' (bf16 autocast on GPUs that support it, float32 elsewhere), 'bf16' "
            "(bf16 autocast on any device: SFT steps about 1.6x and GRPO steps about 1.3x "
            "faster on CPUs with bfloat16 units) or 'no' (float32 throughout); weights and "
            "LoRA adapters stay float32"
        },
    )
    activation_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "recompute activations in the backward pass: far less memory for long "
            "prompts (procedure-sized SFT, heart-sized GRPO), more time per step"
        },
    )


#: values of ``mixed_precision`` (accelerate's "bf16" and "no", and "auto")
MIXED_PRECISION = ("auto", "bf16", "no")


def check_mixed_precision(value: Any, name: str = "mixed_precision") -> str:
    """``value`` if it is one of :data:`MIXED_PRECISION`, else a one-line ValidationError."""
    if value not in MIXED_PRECISION:
        hint = " (bfloat16 is how LMConfig.dtype says it)" if value == "bfloat16" else ""
        raise ValidationError(f"{name} must be one of {list(MIXED_PRECISION)}, got {value!r}{hint}")
    return value


#: The rules (:func:`ragim.checks.check_fields`) of the fields every training config has and
#: :func:`train_with` reads: ``max_steps``, ``learning_rate``, ``batch_size``, ``seed``,
#: ``output_dir`` and :class:`CheckpointConfig`'s.
STEP_RULES = {
    "max_steps": partial(check_int, ge=1),
    "learning_rate": partial(check_number, gt=0),
    "batch_size": partial(check_int, ge=1),
    "seed": partial(check_int, ge=0),
    "output_dir": check_output_dir,
    "save_steps": partial(check_int, ge=1, allow_none=True),
    "resume_from_checkpoint": check_bool,
    "mixed_precision": check_mixed_precision,
    "activation_checkpointing": check_bool,
}


def refuse_model_settings(
    overrides: dict[str, Any], run_cls: type, model_cls: type, advice: str
) -> None:
    """Refuse a keyword that is a setting of the model (``model_cls``: ``LMConfig``,
    ``RewardModelConfig``), not of the run (``run_cls``), with one line saying where it goes:
    ``advice`` with ``{name}`` for the keyword (TypeError, as for any unexpected keyword).

    >>> from ragim.generate.lm import LMConfig
    >>> from ragim.train.sft import SFTTrainingConfig
    >>> try:
    ...     refuse_model_settings({"lora_r": 4}, SFTTrainingConfig, LMConfig,
    ...                           "pass it in generator_config=LMConfig({name}=...)")
    ... except TypeError as exc:
    ...     print(str(exc).split("; ")[1])
    pass it in generator_config=LMConfig(lora_r=...)
    """
    from dataclasses import fields

    run_fields = {f.name for f in fields(run_cls)}
    model_fields = {f.name for f in fields(model_cls)}
    for name in overrides:
        if name not in run_fields and name in model_fields:
            what = "generator" if model_cls.__name__ == "LMConfig" else "reward model"
            raise TypeError(
                f"{name} is a setting of the {what} ({model_cls.__name__}), not of the run "
                f"({run_cls.__name__}); " + advice.format(name=name)
            )


def run_config(cls: type, config: Any, **overrides: Any) -> Any:
    """``config`` (an instance of the dataclass ``cls``, a dict of its fields, or None for the
    defaults) with every override that is not None applied (a keyword set to None keeps the
    config's value; clear a field on the config itself); the dataclass checks the result, also
    when ``config`` was changed after it was built (:func:`ragim.checks.config_from`).
    Each trainer passes its keyword arguments here, so ``train_sft(index, max_steps=50)`` is
    ``train_sft(index, SFTTrainingConfig(max_steps=50))``.

    Raises
    ------
    ValidationError
        When ``config`` is of another type, has unknown fields, or a value is out of range.
    TypeError
        When an override is not a field of ``cls`` (as for an unexpected keyword argument).
    """
    run = config_from(cls, config, overrides, skip_none=True)
    if (run.save_steps or run.resume_from_checkpoint) and not run.output_dir:
        raise ValidationError(
            f"invalid {cls.__name__}: save_steps and resume_from_checkpoint keep checkpoints in "
            "output_dir; give an output_dir"
        )
    return run


def training_record(stage: str, config: Any) -> dict[str, Any]:
    """``{"stage": stage, "config": <the config's fields>}``, JSON-safe (nested configs: dicts)."""
    from ragim.io import json_safe

    return {"stage": stage, "config": json_safe(dataclasses.asdict(config))}


def checkpointing_args(config_cls, on: bool = False) -> dict[str, bool]:
    """Activation checkpointing on or off, under the name ``config_cls`` (a TRL ``*Config``)
    gives it. TRL turns it on by default; ragim's trainers turn it off, since for LoRA on small
    models with short prompts it only costs time, unless a config asks for it (long prompts:
    it trades about a third more time for far less memory)."""
    fields = getattr(config_cls, "__dataclass_fields__", {})
    if "activation_checkpointing" in fields:
        return {"activation_checkpointing": on}
    return {"gradient_checkpointing": on}


def trainer_args(
    config_cls,
    *,
    on_cuda: bool,
    progress: bool,
    seed: int,
    output_dir: str,
    max_steps: int,
    learning_rate: float,
    mixed_precision: str = "auto",
    activation_checkpointing: bool = False,
) -> dict[str, Any]:
    """The settings every ragim trainer shares (log each step, save and report nothing, bf16
    autocast as ``mixed_precision`` says: by default on GPUs that support it; activation
    checkpointing only if asked, :func:`checkpointing_args`) as keyword arguments of
    ``config_cls``."""
    import torch

    bf16 = mixed_precision == "bf16" or (
        mixed_precision == "auto" and on_cuda and torch.cuda.is_bf16_supported()
    )

    return dict(
        output_dir=output_dir,
        max_steps=max_steps,
        learning_rate=learning_rate,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not on_cuda,
        disable_tqdm=not progress,
        bf16=bf16,
        fp16=False,
        seed=seed,
        data_seed=seed,
        dataloader_pin_memory=on_cuda,
        push_to_hub=False,
        warmup_steps=0,
        **checkpointing_args(config_cls, activation_checkpointing),
    )


#: the file in a trainer's ``output_dir`` that describes the run its checkpoints belong to
RUN_FILE = "ragim_run.json"
#: training-config fields a resumed run may change (where and how often it saves, when it stops)
VOLATILE_TRAINING = (
    "mixed_precision",  # arithmetic, as the device is: a CPU run may resume on a GPU
    "activation_checkpointing",  # memory for time: the same gradients
    "output_dir",
    "save_steps",
    "resume_from_checkpoint",
    "max_steps",
    "eval_steps",
)
#: model-config fields that only affect generation or placement, not what is trained
VOLATILE_MODEL = (
    "device",
    "dtype",
    "decoder",
    "batch_size",
    "num_candidates",
    "temperature",
    "top_p",
    "provenance_weights",
)


def data_digest(data: Any) -> str:
    """A short hash of a run's training data (any JSON-able value: an index's task digests,
    preference pairs)."""
    import hashlib
    import json

    from ragim.io import json_safe

    text = json.dumps(json_safe(data), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def index_data(index) -> dict[str, str]:
    """What :func:`run_description` hashes of a TaskIndex: its task ids and a hash of each
    one's parameters (:meth:`ragim.index.TaskIndex.task_digests`)."""
    return dict(index.task_digests())


#: :func:`adapter_digest` of an adapter that changes nothing (every ``lora_B`` zero)
UNTRAINED_ADAPTER = "untrained"


def adapter_digest(model: Any) -> str:
    """A short hash of the LoRA weights of ``model`` (a peft model: every parameter whose name
    holds ``lora_``, by name), so that a run that continues an adapter (GRPO, DPO) can tell
    which adapter it started from (:func:`run_description`'s ``start``); ``"untrained"``
    (:data:`UNTRAINED_ADAPTER`) for an adapter that changes nothing (every ``lora_B`` zero, as
    peft creates one), whose random ``lora_A`` would differ from one process to the next.

    >>> from ragim.lm import load_base_model
    >>> from peft import LoraConfig, get_peft_model
    >>> model, _ = load_base_model("tiny", device="cpu")
    >>> peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    >>> adapter_digest(peft)  # a fresh adapter (peft starts its B matrices at 0)
    'untrained'
    """
    import hashlib

    import torch

    lora = sorted((kv for kv in model.named_parameters() if "lora_" in kv[0]), key=lambda kv: kv[0])
    if all(not torch.any(p) for name, p in lora if "lora_B" in name):
        # an adapter that changes nothing (peft starts B at 0): its random A differs from one
        # process to the next, but every such adapter is the same starting point
        return UNTRAINED_ADAPTER
    h = hashlib.sha256()
    for name, p in lora:
        h.update(name.encode("utf-8"))
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_description(
    stage: str,
    run: Any,
    *,
    model_config: Any = None,
    data: Any = None,
    start: str | None = None,
    split: Any = None,
) -> dict:
    """What a resumed run must share with the run that wrote the checkpoints: the ``stage``, the
    model's config (``model_config``, less :data:`VOLATILE_MODEL`), the training config ``run``
    (less :data:`VOLATILE_TRAINING`), a digest of the training ``data``
    (:func:`data_digest`), for a run that continues an adapter, ``start``: the digest of
    the adapter it starts from (:func:`adapter_digest`; left out when None), and a digest of
    the ``split`` into training and validation tasks (SFT's; left out when None). JSON-safe;
    :func:`train_with` saves it as :data:`RUN_FILE`.

    >>> from ragim.train.sft import SFTTrainingConfig
    >>> d = run_description("sft", SFTTrainingConfig(output_dir="x"), data=["a", "b"])
    >>> sorted(d), "output_dir" in d["training"]
    (['data', 'model', 'stage', 'training'], False)
    """
    import json

    from ragim.io import json_safe

    def fields_of(config, volatile):
        if config is None:
            return None
        values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        return {key: v for key, v in values.items() if key not in volatile}

    described = {
        "stage": stage,
        "model": fields_of(model_config, VOLATILE_MODEL),
        "training": fields_of(run, VOLATILE_TRAINING),
        "data": None if data is None else data_digest(data),
    }
    if start is not None:
        described["start"] = start
    if split is not None:
        described["split"] = data_digest(split)
    return json.loads(json.dumps(json_safe(described), default=str))


def differing(saved: Any, now: Any, prefix: str = "") -> list[str]:
    """The dotted names of the settings in which two run descriptions differ. A ``start`` or
    ``split`` that the saved description lacks (runs saved before it was recorded) is
    unknown, not a difference."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        keys = set(saved) | set(now)
        if not prefix:
            keys -= {k for k in ("start", "split") if k not in saved}
        for key in sorted(keys, key=str):
            out += differing(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == now else [prefix.rstrip(".")]


def prepare_output_dir(output_dir: str, description: dict | None, resume: bool) -> None:
    """Before training in ``output_dir``: with ``resume``, refuse (ValidationError) checkpoints
    of another run (their :data:`RUN_FILE` differs from ``description``) or of no known run
    (no :data:`RUN_FILE`), and warn (DataWarning) when there is no checkpoint to resume from;
    without ``resume``, refuse an ``output_dir`` that already holds checkpoints (a new run would
    rewrite :data:`RUN_FILE` and leave them beside its own, so that a later resume continued
    them as its own); then save ``description`` there (when given)."""
    import json
    import warnings

    from transformers.trainer_utils import get_last_checkpoint

    from ragim.errors import DataWarning

    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    path = os.path.join(output_dir, RUN_FILE)
    if not resume and last is not None:
        raise ValidationError(
            f"output_dir {output_dir!r} already holds checkpoints of an earlier run (the last: "
            f"{os.path.basename(last)}); a new run there would leave them beside its own, and a "
            "later resume could continue them: resume that run (resume_from_checkpoint=True), "
            "remove its checkpoint-* folders, or train in another output_dir"
        )
    if resume and last is None:
        warnings.warn(
            f"resume_from_checkpoint: {output_dir!r} holds no checkpoint, so there is nothing "
            "to resume and training starts from scratch; check output_dir",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    elif resume and description is not None:
        if not os.path.isfile(path):
            raise ValidationError(
                f"cannot resume from {output_dir!r}: its checkpoints have no {RUN_FILE} saying "
                "which run wrote them, so resuming could mix runs; start without "
                "resume_from_checkpoint, or in another output_dir"
            )
        try:
            with open(path, encoding="utf-8") as fh:
                saved = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ValidationError(
                f"cannot resume from {output_dir!r}: its {RUN_FILE} is unreadable ({exc}); "
                "start without resume_from_checkpoint, or in another output_dir"
            ) from None
        if isinstance(saved, dict) and isinstance(saved.get("training"), dict):
            # a setting made volatile since the run was saved (activation_checkpointing) is no
            # difference either
            saved["training"] = {
                k: v for k, v in saved["training"].items() if k not in VOLATILE_TRAINING
            }
        plain = {
            "data": "the training data",
            "start": "the adapter it starts from",
            "split": "the training and validation tasks",
        }
        diff = [plain.get(d, d) for d in differing(saved, description)]
        if diff:
            raise ValidationError(
                f"cannot resume from {output_dir!r}: its checkpoints are of another run (it "
                f"differs in {', '.join(diff)}); resume with that run's settings and data, or "
                "train in another output_dir"
            )
    if description is not None:
        os.makedirs(output_dir, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(description, fh, indent=1, sort_keys=True)


def run_trainer(trainer, progress: bool, resume: bool = False) -> float:
    """``trainer.train()``, from the last checkpoint in its ``output_dir`` when ``resume`` and
    there is one; returns wall seconds. Nothing goes to stdout: without ``progress``
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
    from transformers.trainer_utils import get_last_checkpoint

    last = None
    if resume and os.path.isdir(trainer.args.output_dir):
        last = get_last_checkpoint(trainer.args.output_dir)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    return time.perf_counter() - t0


@contextlib.contextmanager
def quiet_training(progress: bool):
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


def on_cuda(model) -> bool:
    """Whether ``model``'s weights are on a CUDA device."""
    return str(next(model.parameters()).device).startswith("cuda")


@dataclasses.dataclass
class TrainedRun:
    """What :func:`train_with` returns: the trained ``model`` (the trainer's, e.g. a peft
    model), the trainer's log ``history`` (one dict per logged step) and wall ``seconds``."""

    model: Any
    history: list[dict[str, Any]]
    seconds: float

    def install(self, owner: Any, stage: str, run: Any) -> Any:
        """Make this run the training of ``owner`` (a generator or reward model trained from
        scratch) and return it: ``model_`` is the trained model in eval mode, ``history_``,
        ``train_seconds_`` and ``n_trainable_params_`` describe the run, and ``training_`` is
        ``[training_record(stage, run)]``."""
        self.model.eval()
        owner.model_ = self.model
        owner.history_, owner.train_seconds_ = self.history, self.seconds
        owner.n_trainable_params_ = sum(
            p.numel() for p in self.model.parameters() if p.requires_grad
        )
        owner.training_ = [training_record(stage, run)]
        return owner


def train_with(
    trainer_cls: type,
    args_cls: type,
    run: Any,
    *,
    stage: str,
    model: Any,
    tokenizer: Any,
    progress: bool,
    callbacks: Sequence[Any] | None = None,
    args: Mapping[str, Any] | None = None,
    description: dict | None = None,
    **trainer_kwargs: Any,
) -> TrainedRun:
    """Train ``model`` with a TRL trainer the way every ragim trainer does.

    ``args_cls`` (e.g. ``SFTConfig``) gets :func:`trainer_args` with ``run``'s ``seed``,
    ``max_steps`` and ``learning_rate``, ``run.batch_size`` examples per device and step and,
    when an ``eval_dataset`` is given, an evaluation every ``run.eval_steps`` steps (if the
    config has that field and it is set; else once, at the last step) with the same batch
    size, then the trainer's own ``args``, which override all of these; ``trainer_cls`` (e.g.
    ``SFTTrainer``) gets ``model``, those args, ``tokenizer`` as ``processing_class``,
    ``callbacks`` and ``trainer_kwargs`` (datasets, ``peft_config``, ...). Training runs
    under :func:`quiet_training` and :func:`run_trainer`, with ``run.output_dir`` (default: a
    temporary ``ragim-<stage>-`` directory, removed afterwards) as scratch; the trainer is
    dropped before returning. Seeding the RNGs before the model is built is the caller's.
    With an ``output_dir``, the run's ``description`` (:func:`run_description`) is saved there
    and a resumed run must match it (:func:`prepare_output_dir`).
    """
    if run.output_dir:
        prepare_output_dir(run.output_dir, description, run.resume_from_checkpoint)
    batches: dict[str, Any] = {"per_device_train_batch_size": run.batch_size}
    if run.save_steps:  # resumable checkpoints (adapter, optimiser, scheduler, RNG states)
        batches.update(save_strategy="steps", save_steps=run.save_steps)
    if trainer_kwargs.get("eval_dataset") is not None:
        batches.update(
            per_device_eval_batch_size=run.batch_size,
            eval_strategy="steps",
            eval_steps=getattr(run, "eval_steps", None) or run.max_steps,
        )
    with tempfile.TemporaryDirectory(prefix=f"ragim-{stage}-") as scratch:
        shared = trainer_args(
            args_cls,
            on_cuda=on_cuda(model),
            progress=progress,
            seed=run.seed,
            output_dir=run.output_dir or scratch,
            max_steps=run.max_steps,
            learning_rate=run.learning_rate,
            mixed_precision=run.mixed_precision,
            activation_checkpointing=run.activation_checkpointing,
        )
        trl_args = args_cls(**{**shared, **batches, **(args or {})})
        with quiet_training(progress):
            trainer = trainer_cls(
                model=model,
                args=trl_args,
                processing_class=tokenizer,
                callbacks=list(callbacks or []) or None,
                **trainer_kwargs,
            )
            seconds = run_trainer(trainer, progress, run.resume_from_checkpoint)
        done = TrainedRun(trainer.model, [dict(h) for h in trainer.state.log_history], seconds)
        del trainer
    return done


def train_from_scratch(
    owner: Any,
    stage: str,
    run: Any,
    trainer_cls: type,
    args_cls: type,
    *,
    model: Any,
    tokenizer: Any,
    **train_kwargs: Any,
) -> Any:
    """Train ``model`` with a new LoRA adapter, ``owner.lora_config()`` (``owner``: a generator
    or reward model trained from scratch), by :func:`train_with` (``train_kwargs`` are its other
    keywords: ``progress``, ``callbacks``, the trainer's ``args`` and datasets),
    and make the run ``owner``'s: :meth:`TrainedRun.install` with ``stage`` and ``run``, and
    ``tokenizer_`` the tokenizer. Returns ``owner``. Seeding the RNGs is the caller's."""
    from ragim.lm.adapters import check_lora_rank

    check_lora_rank(model, owner.config)  # before peft allocates the adapter
    done = train_with(
        trainer_cls,
        args_cls,
        run,
        stage=stage,
        model=model,
        tokenizer=tokenizer,
        peft_config=owner.lora_config(),
        **train_kwargs,
    )
    done.install(owner, stage, run)
    owner.tokenizer_ = tokenizer
    return owner


__all__ = [
    "CheckpointConfig",
    "RUN_FILE",
    "STEP_RULES",
    "TrainedRun",
    "adapter_digest",
    "checkpointing_args",
    "data_digest",
    "differing",
    "index_data",
    "on_cuda",
    "prepare_output_dir",
    "quiet_training",
    "refuse_model_settings",
    "run_config",
    "run_description",
    "run_trainer",
    "train_from_scratch",
    "train_with",
    "trainer_args",
    "training_record",
]
