"""Bradley–Terry reward model over generated models, and best-of-n reranking.

The reward model reads the generator's prompt plus one candidate answer (the model's JSON)
and returns a scalar score ``s``. It is trained on preference pairs
(:mod:`ragim.train.preferences`) with TRL's ``RewardTrainer``, whose loss is the
Bradley–Terry negative log-likelihood ``-log σ(s_chosen − s_rejected)``.

The network is the generator's base LM as a sequence classifier with one output
(``AutoModelForSequenceClassification`` with ``num_labels=1``, built from the causal LM's
config and transformer weights; the scalar head ``score`` is new and randomly initialised).
Only LoRA adapters (``task_type="SEQ_CLS"``) and the head train; the head is saved inside
the adapter (``modules_to_save=["score"]``).

Saved reward models are artifact directories (``ragim.reward-model``): ``config.json``
(:class:`RewardModelConfig` plus the base model's identity), ``state.json`` (training log,
validation accuracy) and ``adapter/`` (peft format, LoRA plus the head; the base model is
referenced, never copied).

:func:`best_of_n` samples ``n`` candidates from a generator and returns the one the reward
model scores highest.

Examples
--------
>>> pairs = [{"prompt": [{"role": "user", "content": "Predict stroke."}],
...           "chosen": [{"role": "assistant", "content": '{"intercept": 1}'}],
...           "rejected": [{"role": "assistant", "content": '{"intercept": -1}'}]}] * 4
>>> rm = train_reward_model(pairs, base_model="tiny", max_steps=2, batch_size=2, val_fraction=0,
...                         progress=False, device="cpu")
>>> rm.score([pairs[0]["prompt"]], [pairs[0]["chosen"]]).shape
(1,)
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragim.errors import ArtifactError, GenerationError, ValidationError

FORMAT = "ragim.reward-model"


@dataclass
class RewardModelConfig:
    """Base model, LoRA and device settings of a :class:`RewardModel`."""

    base_model: str = field(default="smollm2-135m", metadata={
        "help": "'smollm2-135m', 'tiny', a local model directory or a hub id (use the generator's)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input during training"})
    target_modules: tuple[str, ...] = field(default=("q_proj", "k_proj", "v_proj", "o_proj"), metadata={
        "help": "modules that get LoRA adapters (Llama attention projections by default)"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda[:N]' (resolved when loading)"})
    seed: int = field(default=0, metadata={"help": "seed of the head initialisation (and of the 'tiny' base model)"})

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        problems = []
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            problems.append(f"base_model must be a non-empty string, got {self.base_model!r}")
        for name in ("lora_r", "lora_alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (isinstance(self.lora_dropout, int | float) and 0 <= self.lora_dropout < 1):
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            problems.append(f"target_modules must be non-empty module names, got {self.target_modules!r}")
        if problems:
            raise ValidationError("invalid RewardModelConfig:", problems)


def _as_messages(x: Any, role: str) -> list[dict] | str:
    """A prompt or completion as TRL sees it: a message list, or text."""
    if isinstance(x, dict):
        return [x]
    if isinstance(x, str | list):
        return x
    raise ValidationError(f"a {role} must be text or a list of messages, got {type(x).__name__}")


class RewardModel:
    """A scalar reward over (prompt, generated model) pairs; see the module docstring.

    Parameters
    ----------
    config : :class:`RewardModelConfig`; keyword overrides are accepted too.

    Attributes
    ----------
    model_, tokenizer_ : the peft sequence classifier and its tokenizer (None until built).
    history_ : the trainer's log history (``loss``, ``accuracy``, ``margin`` per step).
    val_accuracy_ : pairwise accuracy on the validation pairs (NaN without them).
    n_trainable_params_, train_seconds_ : LoRA + head parameter count and training time.
    train_task_ids_, val_task_ids_ : tasks of the training and validation pairs.
    """

    def __init__(self, config: RewardModelConfig | None = None, **overrides: Any):
        cfg = config or RewardModelConfig()
        self.config = RewardModelConfig(**{**asdict(cfg), **overrides})
        self.model_ = None
        self.tokenizer_ = None
        self.history_: list[dict] = []
        self.val_accuracy_ = math.nan
        self.n_trainable_params_ = 0
        self.train_seconds_ = 0.0
        self.train_task_ids_: list[str] = []
        self.val_task_ids_: list[str] = []

    # ------------------------------------------------------------------ model
    def build_model(self):
        """A fresh (untrained) sequence classifier from the base LM: ``(model, tokenizer)``."""
        import torch
        from transformers import AutoModelForSequenceClassification

        from ragim.device import resolve_device
        from ragim.lm.base_models import load_base_model

        c = self.config
        causal, tok = load_base_model(c.base_model, device="cpu", seed=c.seed)
        cfg = copy.deepcopy(causal.config)
        cfg.num_labels = 1
        cfg.pad_token_id = tok.pad_token_id
        cfg.architectures = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32)
        model.base_model.load_state_dict(causal.base_model.state_dict(), strict=True)
        del causal
        model.to(resolve_device(c.device))
        model.eval()
        return model, tok

    def lora_config(self):
        """The ``peft.LoraConfig`` (task type SEQ_CLS, head ``score`` trained and saved)."""
        from peft import LoraConfig

        c = self.config
        return LoraConfig(task_type="SEQ_CLS", r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                          target_modules=list(c.target_modules), modules_to_save=["score"], bias="none")

    def _check_fitted(self):
        if self.model_ is None or self.tokenizer_ is None:
            raise ValidationError("this RewardModel is not trained; use train_reward_model(...) or RewardModel.load")

    # ------------------------------------------------------------------ scoring
    def _encode(self, prompt, completion) -> list[int]:
        tok = self.tokenizer_
        p, c = _as_messages(prompt, "prompt"), _as_messages(completion, "completion")
        if isinstance(p, list) != isinstance(c, list):
            raise ValidationError("prompt and completion must both be text or both be message lists")
        if isinstance(p, list):  # as TRL's RewardTrainer tokenizes conversational pairs
            return list(tok.apply_chat_template(p + c, tokenize=True, return_dict=True)["input_ids"])
        text = p + c
        if not text.endswith(tok.eos_token):
            text += tok.eos_token
        return list(tok(text=text)["input_ids"])

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], *, batch_size: int = 8) -> np.ndarray:
        """Reward-model scores, one per (prompt, completion).

        Prompts are message lists (or text); completions are one assistant message (or
        text), as in the preference pairs.
        """
        import torch

        self._check_fitted()
        if len(prompts) != len(completions):
            raise ValidationError(f"got {len(prompts)} prompts for {len(completions)} completions; pass one each")
        ids = [self._encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        model, pad = self.model_, self.tokenizer_.pad_token_id
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad():
                for i in range(0, len(ids), batch_size):
                    chunk = ids[i:i + batch_size]
                    width = max(len(x) for x in chunk)
                    input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(chunk), width), dtype=torch.long)
                    for j, x in enumerate(chunk):
                        input_ids[j, :len(x)] = torch.tensor(x)
                        mask[j, :len(x)] = 1
                    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                   use_cache=False).logits
                    out.extend(logits[:, 0].float().cpu().tolist())
        finally:
            model.train(was_training)
        return np.asarray(out, dtype=np.float64)

    def pairwise_accuracy(self, pairs) -> float:
        """Share of pairs whose chosen answer scores above the rejected one (ties count half)."""
        rows = _rows(pairs)
        if not rows:
            raise ValidationError("no pairs to evaluate")
        prompts = [r["prompt"] for r in rows]
        s_w = self.score(prompts, [r["chosen"] for r in rows])
        s_l = self.score(prompts, [r["rejected"] for r in rows])
        return float(np.mean((s_w > s_l) + 0.5 * (s_w == s_l)))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save as an artifact: ``config.json``, ``state.json`` and ``adapter/`` (LoRA plus the head)."""
        from ragim.generate.lm import _json_safe
        from ragim.lm.adapters import save_adapter_artifact

        self._check_fitted()
        state = {"history": _json_safe(self.history_),
                 "val_accuracy": None if math.isnan(self.val_accuracy_) else float(self.val_accuracy_),
                 "n_trainable_params": int(self.n_trainable_params_), "train_seconds": float(self.train_seconds_),
                 "train_task_ids": list(self.train_task_ids_), "val_task_ids": list(self.val_task_ids_)}
        return save_adapter_artifact(path, FORMAT, self.config, state, self.model_)

    save_pretrained = save

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> RewardModel:
        """Open a saved reward model: checksums verified, base model rebuilt, adapter and head applied."""
        from ragim.io import read_artifact
        from ragim.lm.adapters import apply_adapter, check_base_model, checked_adapter_dir

        art = read_artifact(path, FORMAT)
        try:
            raw = dict(art.read_json("config.json"))
            stored = raw.pop("base_model_identity", None) or {}
            cfg = RewardModelConfig(**raw)
            if device is not None:
                cfg.device = device
            state = art.read_json("state.json")
            rm = cls(cfg)
            rm.history_ = list(state.get("history", []))
            va = state.get("val_accuracy")
            rm.val_accuracy_ = math.nan if va is None else float(va)
            rm.n_trainable_params_ = int(state.get("n_trainable_params", 0))
            rm.train_seconds_ = float(state.get("train_seconds", 0.0))
            rm.train_task_ids_ = list(state.get("train_task_ids", []))
            rm.val_task_ids_ = list(state.get("val_task_ids", []))
        except (TypeError, KeyError, AttributeError, ValidationError) as exc:
            raise ArtifactError(f"{path}: not a valid reward model ({exc})") from exc
        check_base_model(path, stored, cfg, "reward model")
        adapter_dir = checked_adapter_dir(path, art, cfg)
        base, tok = rm.build_model()
        rm.model_, rm.tokenizer_ = apply_adapter(path, adapter_dir, base, cfg.base_model), tok
        return rm

    from_pretrained = load

    def __repr__(self) -> str:
        state = "trained" if self.model_ is not None else "untrained"
        acc = "" if math.isnan(self.val_accuracy_) else f", val_accuracy={self.val_accuracy_:.3f}"
        return f"RewardModel(base_model={self.config.base_model!r}, {state}{acc})"


# --------------------------------------------------------------------------- data
def _rows(pairs) -> list[dict]:
    """Preference pairs as a list of dicts (from a Dataset, a list or a JSONL path)."""
    if isinstance(pairs, str | Path):
        from ragim.train.preferences import load_preferences

        pairs = load_preferences(pairs)
    if hasattr(pairs, "column_names"):
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in pairs.column_names]
        if missing:
            raise ValidationError(f"the preference dataset lacks column(s) {missing}; see build_preference_pairs")
        return [dict(r) for r in pairs]
    if isinstance(pairs, Sequence):
        rows = [dict(r) for r in pairs]
        bad = [i for i, r in enumerate(rows) if not {"prompt", "chosen", "rejected"} <= set(r)]
        if bad:
            raise ValidationError(f"pairs {bad[:5]} lack 'prompt', 'chosen' or 'rejected'")
        return rows
    raise ValidationError(f"pairs must be a datasets.Dataset, a list of dicts or a JSONL path, got {type(pairs).__name__}")


def _as_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                              for r in rows])


def split_pairs_by_task(rows: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole tasks (by ``task_id``) for validation; rows without task ids are split by row."""
    if val_fraction <= 0 or len(rows) < 2:
        return rows, []
    rng = np.random.default_rng(seed)
    tids = [r.get("task_id") for r in rows]
    if all(isinstance(t, str) for t in tids) and len(set(tids)) >= 2:
        groups = list(dict.fromkeys(tids))
        n_val = min(len(groups) - 1, max(1, int(round(val_fraction * len(groups)))))
        val = {groups[i] for i in rng.permutation(len(groups))[:n_val]}
        return [r for r in rows if r["task_id"] not in val], [r for r in rows if r["task_id"] in val]
    n_val = min(len(rows) - 1, max(1, int(round(val_fraction * len(rows)))))
    val_idx = set(rng.permutation(len(rows))[:n_val].tolist())
    return [r for i, r in enumerate(rows) if i not in val_idx], [r for i, r in enumerate(rows) if i in val_idx]


# --------------------------------------------------------------------------- training
def train_reward_model(
    pairs,
    *,
    base_model: str = "smollm2-135m",
    lora_r: int = 8,
    max_steps: int = 50,
    learning_rate: float = 1e-4,
    batch_size: int = 4,
    val_pairs=None,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    device: str | None = None,
    output_dir: str | None = None,
    callbacks: Sequence[Any] | None = None,
    param_names: Sequence[str] | None = None,
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
    base_model : str
        ``"smollm2-135m"``, ``"tiny"``, a local model directory or a hub id; use the
        generator's base model.
    lora_r : int
        LoRA rank (alpha = 2 * rank).
    max_steps, learning_rate, batch_size : optimiser steps, AdamW rate, pairs per step.
    val_pairs : optional
        Validation pairs; default: ``val_fraction`` of the *tasks* of ``pairs`` are held out.
    val_fraction : float
        Share of tasks held out when ``val_pairs`` is not given (0: none).
    seed : int
        Seed of the split, data order, head and LoRA initialisation.
    progress : bool
        Show TRL's progress bar.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ... (default ``"auto"``).
    output_dir : str, optional
        Trainer scratch directory (nothing is saved there).
    callbacks : list of transformers.TrainerCallback, optional
    param_names : sequence of str, optional
        The parameter layout of the index the reward model will score (e.g. the
        generator's ``param_names_``). When given, every pair's models must use exactly
        these names in this order (:func:`~ragim.train.preferences.check_pair_names`),
        checked before any step.

    Returns
    -------
    RewardModel
        Trained; ``val_accuracy_`` is the pairwise accuracy on the validation pairs
        (held-out tasks), ``history_`` the trainer's log (``loss``, ``accuracy``, ``margin``).
    """
    from transformers import set_seed
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    from ragim.train.sft import _quiet, run_trainer, trainer_args

    for name, v in (("max_steps", max_steps), ("batch_size", batch_size), ("lora_r", lora_r)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValidationError(f"{name} must be a positive integer, got {v!r}")
    if not (isinstance(learning_rate, int | float) and learning_rate > 0):
        raise ValidationError(f"learning_rate must be positive, got {learning_rate!r}")
    if not 0 <= val_fraction < 1:
        raise ValidationError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    rows = _rows(pairs)
    if not rows:
        raise ValidationError("no preference pairs to train on; build_preference_pairs returned none "
                              "(lower min_margin) or the file is empty")
    if val_pairs is not None:
        train_rows, val_rows = rows, _rows(val_pairs)
    else:
        train_rows, val_rows = split_pairs_by_task(rows, val_fraction, seed)
    if param_names is not None:
        from ragim.train.preferences import check_pair_names

        check_pair_names(train_rows + val_rows, param_names, where="the reward model's preference pairs")

    rm = RewardModel(RewardModelConfig(base_model=base_model, lora_r=lora_r, lora_alpha=2 * lora_r,
                                       device=device or "auto", seed=seed))
    set_seed(seed)
    model, tok = rm.build_model()
    on_cuda = str(next(model.parameters()).device).startswith("cuda")
    with tempfile.TemporaryDirectory(prefix="ragim-reward-") as scratch:
        args = TRLRewardConfig(
            **trainer_args(TRLRewardConfig, on_cuda=on_cuda, progress=progress, seed=seed,
                           output_dir=output_dir or scratch, max_steps=max_steps, learning_rate=learning_rate),
            per_device_train_batch_size=batch_size, per_device_eval_batch_size=batch_size,
            eval_strategy="steps" if val_rows else "no", eval_steps=max_steps, max_length=None,
        )
        with _quiet(progress):
            trainer = RewardTrainer(model=model, args=args, train_dataset=_as_dataset(train_rows),
                                    eval_dataset=_as_dataset(val_rows) if val_rows else None,
                                    processing_class=tok, peft_config=rm.lora_config(),
                                    callbacks=list(callbacks or []) or None)
            rm.train_seconds_ = run_trainer(trainer, progress)
        peft_model = trainer.model
        rm.history_ = [dict(h) for h in trainer.state.log_history]
        del trainer
    peft_model.eval()
    rm.model_, rm.tokenizer_ = peft_model, tok
    rm.n_trainable_params_ = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    rm.train_task_ids_ = sorted({r["task_id"] for r in train_rows if isinstance(r.get("task_id"), str)})
    rm.val_task_ids_ = sorted({r["task_id"] for r in val_rows if isinstance(r.get("task_id"), str)})
    if val_rows:
        rm.val_accuracy_ = rm.pairwise_accuracy(val_rows)
    return rm


# --------------------------------------------------------------------------- best-of-n
def _prompt_messages(generator, query, index, k, exclude) -> tuple[list[dict], list[str]]:
    """The prompt :meth:`LMGenerator.generate_candidates` builds for one query, and its neighbours' ids."""
    from ragim.lm.prompts import index_prompt
    from ragim.params import param_names
    from ragim.tasks import Task

    cfg = generator.config
    k = cfg.k if k is None else k
    _, tok = generator.load_model()
    desc = query.description if isinstance(query, Task) else query
    hits = index.search(desc, k=min(k, len(index)), exclude=exclude) if k > 0 else []
    hits = sorted(hits, key=lambda h: -float(h.score))
    limit = generator.prompt_limit(param_names(index.model, index.schema))
    messages, _, kept, _ = index_prompt(index, desc, hits, tok, cfg, exclude=exclude, max_tokens=limit)
    return messages, [h.task_id for h in hits[:kept]]


def best_of_n(generator, reward_model, query, index, *, n=8, temperature=0.8, k=None, exclude=None):
    """Sample ``n`` candidate models and return the one the reward model scores highest.

    Parameters
    ----------
    generator : LMGenerator
    reward_model : RewardModel (anything with ``score(prompts, completions) -> array``).
    query : str or Task
        One target description.
    index : TaskIndex
    n : int
        Candidates sampled (>= 1).
    temperature : float
        Sampling temperature of the candidates.
    k : int, optional
        Neighbours in the prompt (default: the generator's).
    exclude : optional
        Task ids or a predicate (e.g. :func:`ragim.index.leak_free`) kept out of retrieval.

    Returns
    -------
    ModelParams
        The best candidate; ``metadata`` adds ``rerank="reward_model"``, ``n`` and
        ``reward_scores`` (every candidate's score, in sampling order).
    """
    from ragim.lm.prompts import answer_text
    from ragim.tasks import Task

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValidationError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(query, str | Task):
        raise ValidationError("best_of_n takes one query (a description or a Task); loop over a batch")
    cands = generator.generate_candidates(query, index, k=k, exclude=exclude, num_candidates=n,
                                          temperature=temperature)
    prompt, shown = _prompt_messages(generator, query, index, k, exclude)
    if shown != [p["task_id"] for p in cands[0].metadata.get("provenance", [])]:
        raise GenerationError("the reward model's prompt would show other neighbours than the generator's; "
                              "the generator and index disagree on retrieval")
    cfg = generator.config
    texts = [[{"role": "assistant", "content": answer_text(p, cfg.decimals, max_abs=cfg.max_abs)}] for p in cands]
    scores = [float(s) for s in np.asarray(reward_model.score([prompt] * len(cands), texts), dtype=float)]
    if len(scores) != len(cands):
        raise ValidationError(f"the reward model returned {len(scores)} scores for {len(cands)} candidates")
    best = int(np.argmax(scores))
    return cands[best].replace(metadata={"rerank": "reward_model", "n": n, "reward_scores": scores})


__all__ = ["FORMAT", "RewardModel", "RewardModelConfig", "best_of_n", "split_pairs_by_task", "train_reward_model"]
