"""Artifacts that hold a peft LoRA adapter over a referenced (never copied) base model.

The LM generator (:class:`~ragim.generate.lm.LMGenerator`) and the reward model
(:class:`~ragim.lm.reward_model.RewardModel`) save the same way: ``config.json`` (their
config dataclass plus the base model's identity), ``state.json`` and peft's ``adapter/``
folder. Loading verifies, in order: the base model still resolves to the weights the
adapter was trained on, the LoRA settings of ``config.json`` agree with
``adapter/adapter_config.json``, and peft can apply the adapter; each failure is an
:class:`~ragim.errors.ArtifactError` that names the files.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

from ragim.errors import ArtifactError, DataWarning, ValidationError, user_stacklevel

#: Default and help text of the LoRA fields every adapter config has (:func:`lora_field`).
LORA_FIELDS: dict[str, tuple[Any, str]] = {
    "lora_r": (8, "LoRA rank"),
    "lora_alpha": (16, "LoRA scaling alpha"),
    "lora_dropout": (0.05, "dropout on the LoRA input during training"),
    "target_modules": (
        ("q_proj", "k_proj", "v_proj", "o_proj"),
        "modules that get LoRA adapters (Llama attention projections by default)",
    ),
}


def lora_field(name: str) -> Any:
    """The dataclass field for the LoRA setting ``name`` (a key of :data:`LORA_FIELDS`), with
    its default and help text, so that :class:`~ragim.generate.lm.LMConfig` and
    :class:`~ragim.lm.reward_model.RewardModelConfig` define these settings once.

    >>> lora_field("lora_r").default
    8
    """
    default, help_text = LORA_FIELDS[name]
    return field(default=default, metadata={"help": help_text})


def peft_lora_config(config: Any, task_type: str, **extra: Any):
    """A ``peft.LoraConfig`` from an adapter config's ``lora_r``, ``lora_alpha``,
    ``lora_dropout`` and ``target_modules`` for ``task_type`` (``"CAUSAL_LM"``, ``"SEQ_CLS"``,
    ...), without bias training, plus ``extra`` (e.g. ``modules_to_save``).

    >>> from types import SimpleNamespace
    >>> settings = SimpleNamespace(**{name: lora_field(name).default for name in LORA_FIELDS})
    >>> settings.lora_r = 4
    >>> peft_lora_config(settings, "SEQ_CLS").r
    4
    """
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        **extra,
    )


def lora_target_problems(model: Any, target_modules: Any) -> list[str]:
    """What is wrong with ``target_modules`` for ``model``, as peft matches them (a module
    whose name is a target or ends with ``"." + target``): each name that matches no module,
    and each that matches a module with no 2-D weight (a block such as ``self_attn``, not a
    layer LoRA can adapt). Empty when all are fine.

    >>> from ragim.lm import load_base_model
    >>> model, _ = load_base_model("tiny", device="cpu")
    >>> lora_target_problems(model, ("q_proj", "v_prj"))
    ["'v_prj' matches no module"]
    """
    problems = []
    modules = list(model.named_modules())
    for t in dict.fromkeys(target_modules):
        hits = [m for name, m in modules if name == t or name.endswith("." + t)]
        if not hits:
            problems.append(f"{t!r} matches no module")
        elif not all(_adaptable(m) for m in hits):
            problems.append(f"{t!r} names a block, not a layer LoRA can adapt")
    return problems


def _adaptable(module: Any) -> bool:
    """Whether LoRA can adapt ``module``: it has a 2-D weight (a linear layer)."""
    return getattr(getattr(module, "weight", None), "ndim", 0) == 2


def check_lora_targets(model: Any, config: Any) -> None:
    """Refuse ``config.target_modules`` that name no layer of ``model``
    (:func:`lora_target_problems`): peft drops a name that matches nothing when another one
    matches, so a misspelt module would train silently without its adapter.

    Raises
    ------
    ValidationError
        One line naming each bad target and the layers ``model`` has.
    """
    problems = lora_target_problems(model, config.target_modules)
    if problems:
        layers = sorted(
            {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if _adaptable(m)}
        )
        raise ValidationError(
            f"target_modules {list(config.target_modules)!r} do not fit {config.base_model}: "
            f"{'; '.join(problems)}; its layers are {layers}"
        )


def check_lora_rank(model: Any, config: Any) -> None:
    """Refuse target modules that name no layer of ``model`` (:func:`check_lora_targets`) and
    a LoRA rank (``config.lora_r``) above the smallest width of the modules of
    ``model`` that ``config.target_modules`` name (as peft matches them): such a rank adds no
    capacity, only memory (a rank of 100000 on a 64-wide model exhausts it).

    Raises
    ------
    ValidationError
        One line naming the rank, the width and the module (or the bad target modules).
    """
    check_lora_targets(model, config)
    targets = tuple(config.target_modules)
    smallest: tuple[int, str] | None = None
    for name, module in model.named_modules():
        if not any(name == t or name.endswith("." + t) for t in targets):
            continue
        weight = getattr(module, "weight", None)
        if weight is None or getattr(weight, "ndim", 0) != 2:
            continue
        width = int(min(weight.shape))
        if smallest is None or width < smallest[0]:
            smallest = (width, name)
    if smallest is not None and config.lora_r > smallest[0]:
        raise ValidationError(
            f"lora_r {config.lora_r} is above {smallest[0]}, the width of the target module "
            f"{smallest[1]} of {config.base_model}; choose a LoRA rank of at most {smallest[0]} "
            "(4 to 64 is usual)"
        )


def adapter_config_problems(config: Any) -> list[str]:
    """Check the settings every adapter config shares (``base_model``, ``target_modules``,
    ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``seed``): fixes their types in place
    (``target_modules`` as a tuple, numbers as plain ints and floats) and returns the
    problems, one line each, for the config's own error."""
    from ragim.checks import check_int, check_number

    config.target_modules = tuple(config.target_modules)
    problems = []
    if not isinstance(config.base_model, str) or not config.base_model.strip():
        problems.append(f"base_model must be a non-empty string, got {config.base_model!r}")
    if not config.target_modules or not all(
        isinstance(m, str) and m for m in config.target_modules
    ):
        problems.append(
            f"target_modules must be non-empty module names, got {config.target_modules!r}"
        )
    rules = {
        "lora_r": (check_int, {"ge": 1}),
        "lora_alpha": (check_int, {"ge": 1}),
        "seed": (check_int, {"ge": 0}),
        "lora_dropout": (check_number, {"ge": 0, "lt": 1}),
    }
    for name, (check, bounds) in rules.items():
        try:
            setattr(config, name, check(getattr(config, name), name, **bounds))
        except ValidationError as exc:
            problems.append(str(exc))
    return problems


@contextlib.contextmanager
def quiet_checkpointing_rename():
    """peft/TRL still call transformers' renamed ``*gradient_checkpointing*`` API; hide that
    FutureWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*gradient_checkpointing.*", category=FutureWarning
        )
        yield


def _safetensors_errors() -> tuple[type[BaseException], ...]:
    """safetensors' own error class (raised for an unreadable ``.safetensors`` file), if
    installed."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        return ()
    return (SafetensorError,)


def save_adapter_artifact(
    path: str | Path, fmt: str, config: Any, state: dict, model, extra: dict | None = None
) -> Path:
    """Write ``config.json`` (``config``, a dataclass with ``base_model``, ``seed`` and
    ``target_modules``, plus the base model's identity), ``state.json``, ``model``'s peft
    ``adapter/`` and the ``extra`` files (name -> bytes or writer, as
    :func:`ragim.io.write_artifact` takes them) as one atomic artifact of format ``fmt``."""
    from ragim.io import json_bytes, write_artifact
    from ragim.lm.base_models import base_model_identity

    cfg = asdict(config)
    cfg["target_modules"] = list(cfg["target_modules"])
    cfg["base_model_identity"] = base_model_identity(config.base_model, seed=config.seed)

    def write_adapter(target: Path) -> None:
        model.save_pretrained(str(target), safe_serialization=True, save_embedding_layers=False)

    return write_artifact(
        path,
        fmt,
        {
            "config.json": json_bytes(cfg),
            "state.json": json_bytes(state),
            "adapter": write_adapter,
            **(extra or {}),
        },
    )


def training_state(model: Any) -> dict[str, Any]:
    """The training record both adapter artifacts keep in ``state.json``: ``model``'s
    ``history_``, ``training_``, ``n_trainable_params_``, ``train_seconds_``,
    ``train_task_ids_`` and ``val_task_ids_``, JSON-safe (:func:`restore_training_state`
    reads it back)."""
    from ragim.io import json_safe

    return {
        "history": json_safe(model.history_),
        "training": json_safe(model.training_),
        "n_trainable_params": int(model.n_trainable_params_),
        "train_seconds": float(model.train_seconds_),
        "train_task_ids": list(model.train_task_ids_),
        "val_task_ids": list(model.val_task_ids_),
    }


def restore_training_state(model: Any, state: dict | None = None) -> None:
    """Set ``model``'s training attributes from a :func:`training_state` record (a missing key:
    the untrained value; no record: all untrained, as a new model starts)."""
    state = state or {}
    model.history_ = list(state.get("history", []))
    model.training_ = list(state.get("training", []))
    model.n_trainable_params_ = int(state.get("n_trainable_params", 0))
    model.train_seconds_ = float(state.get("train_seconds", 0.0))
    model.train_task_ids_ = list(state.get("train_task_ids", []))
    model.val_task_ids_ = list(state.get("val_task_ids", []))


def read_adapter_config(
    art,
    config_cls: type,
    *,
    defaults: dict[str, Any] | None = None,
    **replace: Any,
) -> tuple[Any, dict]:
    """An opened adapter artifact's ``config.json`` as ``config_cls`` and the base-model identity
    stored beside it. ``defaults`` fill fields that older artifacts lack; each of ``replace``
    (``device=...``, ...) that is not None replaces the saved value. A wrong field raises
    ``config_cls``'s TypeError or ValidationError (the caller reports it as an ArtifactError)."""
    raw = dict(art.read_json("config.json"))
    stored = raw.pop("base_model_identity", None) or {}
    config = config_cls(**{**(defaults or {}), **raw})
    for name, value in replace.items():
        if value is not None:
            setattr(config, name, value)
    return config, stored


def load_adapter_model(path, art, config: Any, stored: dict, what: str, load_base):
    """``(model, tokenizer)`` of an opened adapter artifact, verified in the order the module
    docstring gives: the base model is still the one of the ``stored`` identity
    (:func:`check_base_model`), the LoRA settings match (:func:`checked_adapter_dir`), then
    ``load_base()`` (returning ``(base, tokenizer)``) runs and the adapter is applied
    (:func:`apply_adapter`). Each failure is an ArtifactError naming ``path``."""
    check_base_model(path, stored, config, what)
    adapter_dir = checked_adapter_dir(path, art, config)
    base, tokenizer = load_base()
    return apply_adapter(path, adapter_dir, base, config.base_model), tokenizer


def check_base_model(path, stored: dict, config: Any, what: str) -> None:
    """Refuse an adapter whose base model (``config.base_model``) now resolves to other weights
    than the ``stored`` identity it was trained on."""
    from ragim.lm.base_models import base_model_identity

    now = base_model_identity(config.base_model, seed=config.seed)
    if now.get("files") is not None:  # a folder: compared file by file, by content
        saved = stored.get("files")
        if not isinstance(saved, dict):
            warnings.warn(
                f"{path}: the {what} records no content hashes of its base model's files "
                f"(saved before they were kept, or from a hub id not cached then), so "
                f"{config.base_model!r} cannot be verified to be the model it was trained on",
                DataWarning,
                stacklevel=user_stacklevel(),
            )
            return
        for name in sorted(set(saved) | set(now["files"])):
            was, is_ = saved.get(name), now["files"].get(name)
            if was != is_:
                state = (
                    "is missing now"
                    if is_ is None
                    else "was not there"
                    if was is None
                    else f"had sha256 {str(was)[:16]}, now {is_[:16]}"
                )
                raise ArtifactError(
                    f"{path}: the {what} was trained on base model {stored.get('name')!r}, "
                    f"but its file {name} {state}; install the original base model"
                )
        return
    if stored.get("sha256_16") and now.get("sha256_16") and stored["sha256_16"] != now["sha256_16"]:
        raise ArtifactError(
            f"{path}: the {what} was trained on base model {stored.get('name')!r} "
            f"(sha256 {stored['sha256_16']}), but {config.base_model!r} now resolves to a "
            f"different model (sha256 {now['sha256_16']}); "
            "install the original base model"
        )


def check_lora_settings(path, config: Any, adapter_config: Any, adapter_dir: Path) -> None:
    """Raise :class:`~ragim.errors.ArtifactError` naming both files when ``config.json``'s LoRA
    settings (``lora_r``, ``lora_alpha``, ``target_modules``) disagree with peft's
    ``adapter/adapter_config.json`` (e.g. one of them was swapped in from another artifact).
    """
    files = f"{Path(path) / 'config.json'} and {Path(adapter_dir) / 'adapter_config.json'}"
    if not isinstance(adapter_config, dict):
        raise ArtifactError(
            f"{Path(adapter_dir) / 'adapter_config.json'}: not a peft adapter config "
            f"(a JSON {type(adapter_config).__name__}, expected an object)"
        )
    theirs = {
        "lora_r": adapter_config.get("r"),
        "lora_alpha": adapter_config.get("lora_alpha"),
        "target_modules": adapter_config.get("target_modules"),
    }
    ours = {
        "lora_r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "target_modules": config.target_modules,
    }
    diffs = []
    for key in ("lora_r", "lora_alpha"):
        if theirs[key] != ours[key]:
            diffs.append(f"{key}: {ours[key]!r} vs {theirs[key]!r}")
    tm = theirs["target_modules"]
    tm_set = {tm} if isinstance(tm, str) else set(tm) if isinstance(tm, list) else None
    if tm_set != set(ours["target_modules"]):
        diffs.append(f"target_modules: {sorted(ours['target_modules'])} vs {tm!r}")
    if diffs:
        raise ArtifactError(
            f"{path}: the LoRA settings of {files} disagree ({'; '.join(diffs)}); "
            "one of the files comes from another artifact"
        )


def checked_adapter_dir(path, art, config: Any) -> Path:
    """``art``'s ``adapter/`` folder, after checking its files exist and its LoRA settings match
    ``config`` (:func:`check_lora_settings`); run before loading the base model."""
    adapter_dir = art.file("adapter/adapter_config.json").parent
    art.file("adapter/adapter_model.safetensors")
    check_lora_settings(path, config, art.read_json("adapter/adapter_config.json"), adapter_dir)
    return adapter_dir


def apply_adapter(path, adapter_dir: Path, base, base_model: str):
    """The adapter in ``adapter_dir`` applied to ``base`` (frozen, eval mode); any failure is an
    ArtifactError naming the adapter."""
    from peft import PeftModel

    try:
        with quiet_checkpointing_rename():
            model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    except (
        OSError,
        ValueError,
        RuntimeError,
        KeyError,
        TypeError,
        AttributeError,
        EOFError,
        *_safetensors_errors(),
    ) as exc:
        raise ArtifactError(
            f"{path}: the adapter in {adapter_dir} (adapter_model.safetensors) cannot be applied "
            f"to {base_model!r} ({type(exc).__name__}: {exc})"
        ) from exc
    model.eval()
    return model


__all__ = [
    "LORA_FIELDS",
    "adapter_config_problems",
    "apply_adapter",
    "check_base_model",
    "check_lora_rank",
    "check_lora_settings",
    "check_lora_targets",
    "checked_adapter_dir",
    "load_adapter_model",
    "lora_field",
    "lora_target_problems",
    "peft_lora_config",
    "quiet_checkpointing_rename",
    "read_adapter_config",
    "restore_training_state",
    "save_adapter_artifact",
    "training_state",
]
