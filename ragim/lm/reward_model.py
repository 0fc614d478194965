"""The learned reward model at inference time, and best-of-n reranking.

:class:`RewardModel` reads the generator's prompt plus one candidate answer (the model's
answer text, :mod:`ragim.lm.answer`) and returns a scalar score ``s``; higher is better.
It is trained by :func:`ragim.train.train_reward_model` (Bradley–Terry,
``-log σ(s_chosen − s_rejected)``, TRL's ``RewardTrainer``); this module only builds,
loads, saves and runs it, so inference never needs the training stack.

The network is the generator's base LM as a sequence classifier with one output
(``AutoModelForSequenceClassification`` with ``num_labels=1``, built from the causal LM's
config and transformer weights; the scalar head ``score`` is new and randomly initialised).
Only LoRA adapters (``task_type="SEQ_CLS"``) and the head train; the head is saved inside
the adapter (``modules_to_save=["score"]``).

Saved reward models are artifact directories (``ragim.reward-model``): ``config.json``
(:class:`RewardModelConfig` plus the base model's identity), ``state.json`` (training log,
training config, validation accuracy) and ``adapter/`` (peft format, LoRA plus the head;
the base model is referenced, never copied).

:func:`best_of_n` samples ``n`` candidates from a generator and returns the one the reward
model scores highest.

Examples
--------
>>> rm = RewardModel(base_model="tiny", device="cpu")
>>> rm.model_, rm.tokenizer_ = rm.build_model()      # untrained head: scores are arbitrary
>>> prompt = [{"role": "user", "content": "Predict stroke."}]
>>> rm.score([prompt, prompt], [[{"role": "assistant", "content": '{"intercept": 1}'}],
...                             [{"role": "assistant", "content": '{"intercept": -1}'}]]).shape
(2,)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragim.checks import check_int
from ragim.errors import ArtifactError, GenerationError, ValidationError
from ragim.lm.adapters import adapter_config_problems, lora_field, restore_training_state
from ragim.lm.answer import answer_format
from ragim.lm.pairs import in_answer_format, pair_rows

FORMAT = "ragim.reward-model"


@dataclass
class RewardModelConfig:
    """Base model, LoRA and device settings of a :class:`RewardModel`."""

    base_model: str = field(
        default="smollm2-135m",
        metadata={
            "help": "'smollm2-135m', 'tiny', a local model directory or a cached hub id "
            "(use the generator's)"
        },
    )
    lora_r: int = lora_field("lora_r")
    lora_alpha: int = lora_field("lora_alpha")
    lora_dropout: float = lora_field("lora_dropout")
    target_modules: tuple[str, ...] = lora_field("target_modules")
    device: str = field(
        default="auto", metadata={"help": "'auto', 'cpu' or 'cuda[:N]' (resolved when loading)"}
    )
    seed: int = field(
        default=0,
        metadata={"help": "seed of the head initialisation (and of the 'tiny' base model)"},
    )

    def __post_init__(self):
        problems = adapter_config_problems(self)
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
    training_ : how it was trained: ``[{"stage": "reward", "config": {...}}]`` (the
        :class:`~ragim.train.reward.RewardModelTrainingConfig`), saved in ``state.json``.
    val_accuracy_ : pairwise accuracy on the validation pairs (NaN without them).
    n_trainable_params_, train_seconds_ : LoRA + head parameter count and training time.
    train_task_ids_, val_task_ids_ : tasks of the training and validation pairs.
    answer_format_ : the answer codec (:mod:`ragim.lm.answer`) the pairs were written in for
        training (``train_reward_model(..., answer_format=...)``), saved with the model; None:
        as given (JSON objects). :meth:`pairwise_accuracy` writes pairs in it, and
        :func:`best_of_n` refuses a generator that writes another.
    schema_fingerprint_ : :meth:`ragim.schema.FeatureSchema.fingerprint` of the index whose
        generator's pairs it was trained on (``train_reward_model(..., generator=gen)``),
        saved with the model; None: not known. :func:`best_of_n` refuses an index with another
        feature schema (the same parameter names over another scaling).
    residual_ : True when it reads each answer as its change from the statistical prior in the
        prompt (``train_reward_model(..., residual=True)``; what a generator with residual
        answers writes), saved with the model. :meth:`pairwise_accuracy` then needs pairs with
        a ``prior``, and :func:`best_of_n` a generator with residual answers.
    """

    def __init__(self, config: RewardModelConfig | None = None, **overrides: Any):
        cfg = config or RewardModelConfig()
        self.config = RewardModelConfig(**{**asdict(cfg), **overrides})
        self.model_ = None
        self.tokenizer_ = None
        self.val_accuracy_ = math.nan
        self.answer_format_ = None
        self.schema_fingerprint_ = None
        self.residual_ = False
        restore_training_state(self)  # history_, training_, ...: untrained

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
        from ragim.lm.adapters import peft_lora_config

        return peft_lora_config(self.config, "SEQ_CLS", modules_to_save=["score"])

    def _check_fitted(self):
        if self.model_ is None or self.tokenizer_ is None:
            raise ValidationError(
                "this RewardModel is not trained; use ragim.train.train_reward_model(...) "
                "or RewardModel.load"
            )

    # ------------------------------------------------------------------ scoring
    def _encode(self, prompt, completion) -> list[int]:
        tok = self.tokenizer_
        p, c = _as_messages(prompt, "prompt"), _as_messages(completion, "completion")
        if isinstance(p, list) != isinstance(c, list):
            raise ValidationError(
                "prompt and completion must both be text or both be message lists"
            )
        if isinstance(p, list):  # as TRL's RewardTrainer tokenizes conversational pairs
            return list(
                tok.apply_chat_template(p + c, tokenize=True, return_dict=True)["input_ids"]
            )
        text = p + c
        if not text.endswith(tok.eos_token):
            text += tok.eos_token
        return list(tok(text=text)["input_ids"])

    def score(
        self, prompts: Sequence[Any], completions: Sequence[Any], *, batch_size: int = 8
    ) -> np.ndarray:
        """Reward-model scores, one per (prompt, completion).

        Prompts are message lists (or text); completions are one assistant message (or
        text), as in the preference pairs.
        """
        import torch

        self._check_fitted()
        if len(prompts) != len(completions):
            raise ValidationError(
                f"got {len(prompts)} prompts for {len(completions)} completions; pass one each"
            )
        ids = [self._encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        model, pad = self.model_, self.tokenizer_.pad_token_id
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.no_grad():
                for i in range(0, len(ids), batch_size):
                    chunk = ids[i : i + batch_size]
                    width = max(len(x) for x in chunk)
                    input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(chunk), width), dtype=torch.long)
                    for j, x in enumerate(chunk):
                        input_ids[j, : len(x)] = torch.tensor(x)
                        mask[j, : len(x)] = 1
                    logits = model(
                        input_ids=input_ids.to(device),
                        attention_mask=mask.to(device),
                        use_cache=False,
                    ).logits
                    out.extend(logits[:, 0].float().cpu().tolist())
        finally:
            model.train(was_training)
        return np.asarray(out, dtype=np.float64)

    def pair_scores(self, pairs) -> tuple[np.ndarray, np.ndarray]:
        """The scores of every pair's chosen and of its rejected answer, two arrays of shape
        (n_pairs,); the answers are first written in :attr:`answer_format_` when the model has
        one (as changes from each pair's ``prior`` when :attr:`residual_`).

        Raises
        ------
        ValidationError
            For no pairs, or pairs that cannot be written in the model's answer format.
        """
        rows = pair_rows(pairs)
        if self.answer_format_ is not None and rows:
            rows = in_answer_format(rows, self.answer_format_, minus_prior=self.residual_)
        if not rows:
            raise ValidationError("no pairs to evaluate")
        prompts = [r["prompt"] for r in rows]
        return (
            self.score(prompts, [r["chosen"] for r in rows]),
            self.score(prompts, [r["rejected"] for r in rows]),
        )

    def pairwise_accuracy(self, pairs) -> float:
        """Share of pairs whose chosen answer scores above the rejected one (ties count half),
        from :meth:`pair_scores`."""
        s_w, s_l = self.pair_scores(pairs)
        return float(np.mean((s_w > s_l) + 0.5 * (s_w == s_l)))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save as an artifact: ``config.json``, ``state.json`` and ``adapter/`` (LoRA plus the
        head)."""
        from ragim.lm.adapters import save_adapter_artifact, training_state

        self._check_fitted()
        fmt = self.answer_format_
        state = {
            "val_accuracy": None if math.isnan(self.val_accuracy_) else float(self.val_accuracy_),
            "answer_format": None
            if fmt is None
            else {
                "name": fmt.name,
                "keys": list(fmt.keys),
                "decimals": fmt.decimals,
                "max_abs": fmt.max_abs,
            },
            "schema_fingerprint": self.schema_fingerprint_,
            "residual": self.residual_,
            **training_state(self),
        }
        return save_adapter_artifact(path, FORMAT, self.config, state, self.model_)

    save_pretrained = save

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> RewardModel:
        """Open a saved reward model: checksums verified, base model rebuilt, adapter and head
        applied."""
        from ragim.io import read_artifact
        from ragim.lm.adapters import load_adapter_model, read_adapter_config

        art = read_artifact(path, FORMAT)
        try:
            cfg, stored = read_adapter_config(art, RewardModelConfig, device=device)
            state = art.read_json("state.json")
            rm = cls(cfg)
            va = state.get("val_accuracy")
            rm.val_accuracy_ = math.nan if va is None else float(va)
            fmt = state.get("answer_format")  # absent before the reward model kept its format
            rm.answer_format_ = (
                None
                if fmt is None
                else answer_format(
                    fmt["keys"], name=fmt["name"], decimals=fmt["decimals"], max_abs=fmt["max_abs"]
                )
            )
            fingerprint = state.get("schema_fingerprint")  # absent before it was kept
            if fingerprint is not None and not isinstance(fingerprint, str):
                raise ValidationError(f"schema_fingerprint must be text, got {fingerprint!r}")
            rm.schema_fingerprint_ = fingerprint
            residual = state.get("residual", False)  # absent before it read changes
            if not isinstance(residual, bool) or (residual and rm.answer_format_ is None):
                raise ValidationError(
                    f"residual must be true or false, with an answer format, got {residual!r}"
                )
            rm.residual_ = residual
            restore_training_state(rm, state)
        except (TypeError, KeyError, AttributeError, ValidationError) as exc:
            raise ArtifactError(f"{path}: not a valid reward model ({exc})") from exc
        rm.model_, rm.tokenizer_ = load_adapter_model(
            path, art, cfg, stored, "reward model", rm.build_model
        )
        return rm

    from_pretrained = load

    def __repr__(self) -> str:
        state = "trained" if self.model_ is not None else "untrained"
        acc = "" if math.isnan(self.val_accuracy_) else f", val_accuracy={self.val_accuracy_:.3f}"
        return f"RewardModel(base_model={self.config.base_model!r}, {state}{acc})"


# --------------------------------------------------------------------------- best-of-n
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
        Candidates sampled (>= 2: best-of-1 would rank nothing and return a sample at
        ``temperature`` rather than the generator's greedy answer).
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
        ``reward_scores`` (every candidate's score, in sampling order). The reward model reads
        each candidate written in its own ``answer_format_`` (the decimals and range of the
        answers it was trained on) when it has one.

    Raises
    ------
    ValidationError
        A reward model trained on answers of another format or parameters than the
        generator writes, or on pairs of an index with another feature schema than
        ``index`` (``schema_fingerprint_``), before any candidate is sampled.
    """
    from ragim.tasks import Task

    n = check_int(n, "n", ge=2, note="best-of-1 ranks nothing")
    if not isinstance(query, str | Task):
        raise ValidationError(
            "best_of_n takes one query (a description or a Task); loop over a batch"
        )
    check_reward_model_fits(generator, reward_model, index)
    cands = generator.generate_candidates(
        query, index, k=k, exclude=exclude, num_candidates=n, temperature=temperature
    )
    return rank_candidates(generator, reward_model, query, index, cands, k=k, exclude=exclude)


def check_reward_model_fits(generator, reward_model, index) -> None:
    """Refuse (ValidationError), before any candidate is sampled, a reward model trained on
    answers of another format or parameters than ``generator`` writes on ``index``
    (``answer_format_``), or on pairs of an index with another feature schema
    (``schema_fingerprint_``). Any object with ``score()`` and neither attribute passes."""
    from ragim.params import param_names

    fmt = generator.answer_format(param_names(index.model, index.schema))
    trained = getattr(reward_model, "answer_format_", None)
    if trained is not None and (trained.name, trained.keys) != (fmt.name, fmt.keys):
        raise ValidationError(
            f"the reward model was trained on {trained.name!r} answers over "
            f"{len(trained.keys)} parameters, but the generator writes {fmt.name!r} answers over "
            f"{len(fmt.keys)}; train it on this generator's pairs (answer_format=...)"
        )
    if getattr(reward_model, "residual_", False) and not generator.config.residual:
        raise ValidationError(
            "the reward model reads answers as changes from the statistical prior (residual), "
            "but the generator writes whole models; use a reward model trained on this "
            "generator's pairs"
        )
    trained_on = getattr(reward_model, "schema_fingerprint_", None)
    if trained_on is not None and trained_on != index.schema.fingerprint():
        raise ValidationError(
            "the reward model was trained on pairs of an index with another feature schema "
            "(the same parameter names over another scaling: an index rebuilt on other tasks), "
            "so it would rank answers on that index's scale; train it on this generator's "
            "pairs on this index"
        )


def rank_candidates(generator, reward_model, query, index, candidates, *, k=None, exclude=None):
    """The one of ``candidates`` (ModelParams the generator sampled for ``query``) that the
    reward model scores highest on the generator's prompt for it; ``metadata`` adds
    ``rerank="reward_model"``, ``n`` and ``reward_scores`` (in the candidates' order). Each
    candidate is written as the reward model read its training answers (its
    ``answer_format_``: decimals and range), as ``pairwise_accuracy`` does; one without a
    format reads the generator's own. A reward model with ``residual_`` reads each candidate
    minus the statistical prior of ``query`` (the generator's own answer).

    Raises
    ------
    GenerationError
        When the prompt would show other neighbours than the candidates' provenance.
    ValidationError
        When the reward model returns another number of scores.
    """
    prompt, shown = generator.prompt(query, index, k=k, exclude=exclude)
    if shown != [p["task_id"] for p in candidates[0].metadata.get("provenance", [])]:
        raise GenerationError(
            "the reward model's prompt would show other neighbours than the generator's; "
            "the generator and index disagree on retrieval"
        )
    trained = getattr(reward_model, "answer_format_", None)
    fmt = trained if trained is not None else generator.answer_format(candidates[0].names)
    base = np.zeros(len(candidates[0].names))
    if getattr(reward_model, "residual_", False):  # it reads the LM's change from the prior
        (prior,) = generator.statistical_priors([query], index, [exclude])
        base = np.asarray(prior.vector, dtype=float)
    changes = [dict(zip(p.names, p.vector - base, strict=True)) for p in candidates]
    texts = [[{"role": "assistant", "content": fmt.write(c)}] for c in changes]
    scores = [
        float(s)
        for s in np.asarray(reward_model.score([prompt] * len(candidates), texts), dtype=float)
    ]
    if len(scores) != len(candidates):
        raise ValidationError(
            f"the reward model returned {len(scores)} scores for {len(candidates)} candidates"
        )
    best = int(np.argmax(scores))
    return candidates[best].replace(
        metadata={"rerank": "reward_model", "n": len(candidates), "reward_scores": scores}
    )


__all__ = [
    "FORMAT",
    "RewardModel",
    "RewardModelConfig",
    "best_of_n",
    "check_reward_model_fits",
    "rank_candidates",
]
