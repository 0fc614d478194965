"""What the two attention hypernetworks (``attention``, ``rag-im-2024``) share.

* :class:`HypernetworkConfig` — the network and run fields every hypernetwork config starts
  with (``k``, ``hidden``, ``heads``, ``blocks``, ``seed``, ``device``) and their checks; a
  config that extends it adds its own fields and returns their rules from
  :meth:`~HypernetworkConfig.field_rules`.
* :class:`HypernetworkGenerator` — saving and loading: ``config.json``, ``state.json`` (what
  the generator was fitted on, the query embedding width and the training log) and
  ``model.safetensors`` (no pickle), written atomically and verified when read. A subclass
  names its artifact ``FORMAT``, its config class and how its tensors are kept and restored.
"""

from __future__ import annotations

import numbers
import warnings
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ragim.checks import check_fields, check_int, config_from, setting
from ragim.embed import MAX_EMBED_DIM
from ragim.errors import ArtifactError, ValidationError
from ragim.generate.base import (
    Generator,
    config_with,
    fit_state,
    read_fit_state,
    read_fitted_digests,
    read_fitted_ids,
)
from ragim.params import design_matrix
from ragim.schema import FeatureSchema


def heads_problems(hidden: Any, heads: Any) -> list[str]:
    """Why an attention width ``hidden`` cannot be split over ``heads`` heads: ``[]`` when it
    can, or when either is not a positive integer (the field checks report that).

    >>> heads_problems(64, 5), heads_problems(64, 4), heads_problems(64, 0)
    (['hidden (64) must be divisible by heads (5)'], [], [])
    """
    sizes = (hidden, heads)
    if not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in sizes
    ):
        return []
    return [f"hidden ({hidden}) must be divisible by heads ({heads})"] if hidden % heads else []


#: the largest sizes a hypernetwork config may give (a received config.json with "blocks":
#: 1e30 would otherwise build blocks until memory runs out)
SIZE_LIMITS = {"k": 10_000, "hidden": 16_384, "heads": 1_024, "blocks": 256}


@dataclass
class HypernetworkConfig:
    """The fields every attention hypernetwork config (``attention``, ``rag-im-2024``) starts
    with. A config that extends it may give ``hidden`` and ``blocks`` other defaults, and
    returns the rules of its own fields from :meth:`field_rules`.

    Raises
    ------
    ValidationError
        One error listing every bad field (``k``, ``hidden``, ``heads``, ``blocks`` must be
        integers >= 1, ``hidden`` must split over ``heads``, ``seed`` an integer >= 0).

    >>> HypernetworkConfig(hidden=64, heads=5)
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: invalid HypernetworkConfig:
      - hidden (64) must be divisible by heads (5)
    """

    k: int = setting(10, "neighbours retrieved per task")
    hidden: int = setting(64, "width of the attention blocks")
    heads: int = setting(4, "attention heads")
    blocks: int = setting(2, "cross-attention blocks")
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "'auto', 'cpu' or 'cuda'")

    def field_rules(self, problems: list[str]) -> dict[str, Callable[[Any, str], Any]]:
        """The rules of a subclass's own fields (name -> ``rule(value, name)``, as
        :func:`ragim.checks.check_fields` takes them); append any other problem found to
        ``problems``. The base config has none."""
        return {}

    def __post_init__(self):
        rules: dict[str, Callable[[Any, str], Any]] = {
            name: partial(check_int, ge=1, le=most) for name, most in SIZE_LIMITS.items()
        }
        rules["seed"] = partial(check_int, ge=0)
        problems = heads_problems(self.hidden, self.heads)
        rules.update(self.field_rules(problems))
        check_fields(self, rules, type(self).__name__, problems)


@dataclass
class SavedNet:
    """A saved hypernetwork's ``state.json`` and ``model.safetensors``: what it was fitted
    on, the query embedding width ``emb_dim``, the training log ``history`` and the network's
    ``tensors`` (name -> torch tensor)."""

    model_kind: str
    param_names: list[str]
    schema: FeatureSchema
    embedder: Any
    emb_dim: int
    history: list
    tensors: dict[str, Any]
    fitted_ids: list[str] | None = None  # None: saved before they were kept
    fitted_digests: dict[str, str] | None = None  # None: saved before they were kept

    def restore(self, gen: Generator) -> None:
        """Set what ``gen`` was fitted on (``model_kind_``, ``param_names_``, ``schema_``,
        ``embedder_identity_``, ``fitted_ids_``) and its ``history_``."""
        gen.model_kind_, gen.param_names_ = self.model_kind, self.param_names
        gen.schema_, gen.embedder_identity_ = self.schema, self.embedder
        gen.fitted_ids_ = self.fitted_ids
        gen.fitted_digests_ = self.fitted_digests
        gen.history_ = self.history


def read_saved_net(art: Any, bad: Callable[[str, Any], Exception]) -> SavedNet:
    """Read ``state.json`` and ``model.safetensors`` of an opened artifact ``art``
    (:func:`ragim.io.read_artifact`); a malformed file raises ``bad(file name, why)`` (the
    loader's ArtifactError naming its generator)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    try:
        state = art.read_json("state.json")
        model_kind, names, schema, embedder = read_fit_state(state)
        fitted_ids = read_fitted_ids(state)
        fitted_digests = read_fitted_digests(state)
        emb_dim = check_int(state["emb_dim"], "emb_dim", ge=1, le=MAX_EMBED_DIM)
        history = list(state.get("history", []))
        if isinstance(embedder, dict) and embedder.get("dim", emb_dim) != emb_dim:
            raise ValueError(
                f"emb_dim {emb_dim} differs from the embedder's dimension {embedder['dim']}"
            )
    except KeyError as exc:
        raise bad("state.json", f"it lacks the field {exc}") from exc
    except (TypeError, ValueError, ValidationError) as exc:
        raise bad("state.json", exc) from exc
    try:
        tensors = st_load(art.read_bytes("model.safetensors"))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise bad("model.safetensors", exc) from exc
    return SavedNet(
        model_kind, names, schema, embedder, emb_dim, history, tensors, fitted_ids, fitted_digests
    )


def weights_mismatch_error(root: Any, exc: BaseException) -> ArtifactError:
    """The error of a saved hypernetwork at ``root`` whose ``model.safetensors`` does not
    fit its ``config.json`` and ``state.json``; ``exc`` says why building or loading the
    network failed."""
    why = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if len(why) > 300:
        why = why[:300].rsplit(" ", 1)[0] + " ..."
    return ArtifactError(
        f"{root / 'model.safetensors'}: its weights do not fit {root / 'config.json'} and "
        f"{root / 'state.json'} ({why})"
    )


class HypernetworkGenerator(Generator):
    """A generator whose model is a torch network ``net_`` over neighbours' parameters and
    description embeddings; saving and loading are shared (see the module docstring).

    A subclass is registered (:func:`~ragim.generate.base.register_generator`, whose name its
    error messages use), sets ``FORMAT`` (the artifact's format name) and ``config_class``, and
    implements :meth:`saved_tensors` and :meth:`restore_net`;
    :meth:`upgrade_config`, :meth:`extra_files` and :meth:`check_artifact` are optional
    hooks. The network must expose its query projection as ``q_in`` (its ``in_features``
    is the description embedding width).
    """

    FORMAT: ClassVar[str]
    config_class: ClassVar[type[HypernetworkConfig]]
    #: the saved tensors' prefixes of the network's lists of blocks (config ``blocks`` each)
    block_lists: ClassVar[tuple[str, ...]]

    def __init__(self, config: HypernetworkConfig | None = None, **overrides: Any):
        self.config = config_with(self.config_class, config, overrides)
        self.net_: Any = None
        self.history_: list[dict] = []

    # ------------------------------------------------------------------ episodes
    def episode_ids(self, index) -> list[str]:
        """The indexed tasks whose rows train the network (each is one episode's target).

        Raises
        ------
        ValidationError
            The index holds no task rows, or fewer than 3 indexed tasks have rows.
        """
        if index.tasks is None:
            raise ValidationError(
                "the index holds no task rows (it was built with keep_tasks=False, grown with "
                "add(), or saved without tasks); rebuild it from a TaskCollection to train the "
                f"{self.generator_name} generator"
            )
        ids = [t for t in index.tasks.ids if t in index]
        if len(ids) < 3:
            raise ValidationError(
                f"episodic training needs at least 3 indexed tasks with rows, got {len(ids)}"
            )
        return ids

    def usable_episodes(self, ids: list[str], neighbor_rows: np.ndarray) -> np.ndarray:
        """Which targets have a leak-free neighbour (``neighbor_rows`` (T, K), -1 = none): a
        boolean mask (T,). The others are kept in ``skipped_episodes_``.

        Raises
        ------
        ValidationError
            Fewer than 3 targets have a neighbour (every other task shares their patients).
        """
        usable = (np.asarray(neighbor_rows) >= 0).any(axis=1)
        if usable.sum() < 3:
            raise ValidationError(
                f"only {int(usable.sum())} task(s) have neighbours once the tasks sharing their "
                "patients are excluded; episodic training needs at least 3"
            )
        self.skipped_episodes_ = [t for t, u in zip(ids, usable, strict=True) if not u]
        return usable

    def episode_rows(
        self, index, ids: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
        """Every target's rows, stacked: the design ``D`` (R, P - 1) and labels ``y`` (R,) as
        float32 tensors on the generator's device, each target's first row ``start`` (T,) and
        its number of rows ``count`` (T,)."""
        designs, ys = [], []
        for t in ids:
            task = index.tasks[t]
            designs.append(design_matrix(index.model, index.schema, task.X).astype(np.float32))
            ys.append(np.asarray(task.y, dtype=np.float32))
        count = np.array([len(y) for y in ys])
        dev = self._device
        D = torch.as_tensor(np.concatenate(designs), device=dev)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        return D, torch.as_tensor(np.concatenate(ys), device=dev), start, count

    @abstractmethod
    def saved_tensors(self) -> dict[str, Any]:
        """The tensors ``model.safetensors`` keeps (name -> CPU tensor)."""

    @abstractmethod
    def restore_net(self, saved: SavedNet) -> Any:
        """A network rebuilt from ``saved`` (its tensors loaded; any other saved array set on
        ``self``). KeyError, RuntimeError, TypeError or ValueError mean the weights do not fit
        the config."""

    @classmethod
    def upgrade_config(cls, raw: Any) -> Any:
        """``config.json`` as read, brought up to date for ``config_class`` (older artifacts
        lack newer fields); unchanged by default."""
        return raw

    def extra_files(self) -> dict[str, Any]:
        """More files or sub-artifacts of the artifact (name -> bytes or writer); none by
        default."""
        return {}

    def check_artifact(self, art: Any, bad: Callable[[str, Any], Exception]) -> None:
        """Verify and load what :meth:`extra_files` saved, once the network is restored;
        nothing by default."""

    def save(self, path: str | Path) -> Path:
        """Save atomically as an artifact: ``config.json``, ``state.json`` and
        ``model.safetensors`` (no pickle), plus the subclass's :meth:`extra_files`.

        Raises
        ------
        ValidationError
            The generator is not fitted.
        """
        from safetensors.torch import save as st_save

        from ragim.io import json_bytes, write_artifact

        if self.net_ is None:
            raise ValidationError(
                f"cannot save an unfitted {type(self).__name__}; call fit(index) first"
            )
        state = {
            **fit_state(self),
            "emb_dim": int(self.net_.q_in.in_features),
            "history": self.history_,
        }
        files = {
            "config.json": json_bytes(asdict(self.config)),
            "state.json": json_bytes(state),
            "model.safetensors": st_save(self.saved_tensors()),
            **self.extra_files(),
        }
        return write_artifact(path, self.FORMAT, files)

    def save_pretrained(self, path: str | Path) -> Path:
        """Alias of :meth:`save` (the Hugging Face name)."""
        return self.save(path)

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None):
        """Open a saved generator; checksums, format and shapes are verified.

        ``device`` overrides the saved ``config.device``.

        Raises
        ------
        ArtifactError
            A missing, damaged or foreign file, named with what was expected.
        """
        from ragim.device import resolve_device
        from ragim.io import read_artifact

        art = read_artifact(path, cls.FORMAT)
        root = Path(art.path)

        def bad(name: str, exc: BaseException | str) -> ArtifactError:
            what = f"a valid {cls.generator_name} generator file"
            return ArtifactError(f"{root / name}: not {what} ({exc})")

        try:
            cfg = config_from(
                cls.config_class, cls.upgrade_config(art.read_json("config.json")), {}
            )
        except (TypeError, ValueError, ValidationError) as exc:
            raise bad("config.json", exc) from exc
        if device is not None:
            cfg.device = device
        saved = read_saved_net(art, bad)
        gen = cls(cfg)
        saved.restore(gen)
        gen._device = resolve_device(cfg.device)
        blocks = {
            key[len(name) + 1 :].split(".", 1)[0]
            for name in cls.block_lists
            for key in saved.tensors
            if key.startswith(name + ".")
        }
        if len(blocks) != cfg.blocks:
            raise bad(
                "config.json",
                f"blocks is {cfg.blocks}, but model.safetensors holds {len(blocks)} blocks",
            )
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")  # "copying ... to a meta parameter is a no-op"
                gen.restore_net(saved)  # the shapes alone, before any memory is taken
            net = gen.restore_net(saved)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            raise weights_mismatch_error(root, exc) from exc
        gen.net_ = net.to(gen._device).eval()
        gen.check_artifact(art, bad)
        return gen

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | None = None):
        """Alias of :meth:`load` (the Hugging Face name)."""
        return cls.load(path, device=device)

    def __repr__(self) -> str:
        state = "fitted" if self.net_ is not None else "not fitted"
        c = self.config
        return f"{type(self).__name__}(k={c.k}, hidden={c.hidden}, blocks={c.blocks}, {state})"
