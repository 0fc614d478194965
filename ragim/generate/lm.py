"""LMGenerator: a (LoRA-fine-tuned) causal language model that writes model parameters.

For a target description the generator retrieves the ``k`` most similar indexed
tasks, renders the prompt of :mod:`ragim.lm.prompts` (description, parameter
layout with units, neighbours with their fitted parameters as JSON) and decodes
the answers of up to ``batch_size`` targets per call of
:func:`ragim.lm.constrained.generate_answer_batch`, where constrained decoding lets the model
write only valid answers in the configured format (``answer_format``: name-keyed JSON, or
``"compact"``, the values alone in schema order). ``decoder`` chooses how: ``"builtin"`` (the
default; a hand-written loop, one prompt at a time, each literal piece forced in one forward
call) or ``"llguidance"`` (a grammar engine in one batched ``generate`` call with left padding
and the KV cache). On SmolLM2-135M on one CPU thread the built-in loop is the faster
(docs/lm_format.md#decoders gives the ratios and the command). The answer is parsed into
:class:`~ragim.params.ModelParams` over the index's schema. With ``LMConfig(residual=True)``
(which needs ``statistical_prior=True``) the answer is each parameter's change from the
statistical prior in the prompt, and the parameters are prior + answer (:func:`plus_prior`).

* **Zero SFT works.** An unfitted generator loads its base model on first use,
  so the untrained model can be compared with a fine-tuned one.
* **Fine-tuning** is behaviour cloning with LoRA (:func:`ragim.train.train_sft`,
  or :meth:`LMGenerator.fit`).
* **Provenance.** The LM has no attention weights we can trust as attributions,
  so ``provenance`` lists the neighbours that were *in the prompt* with weights
  proportional to ``max(similarity, 0)`` (``provenance_weights="similarity"``,
  the default; uniform when every similarity is <= 0) or ``1/k``
  (``"uniform"``). Neighbours dropped to fit the context are not listed.
* **Parse failures** cannot happen with constrained decoding; if one does it is
  counted in ``parse_failures_`` and raised as :class:`~ragim.errors.GenerationError`.

Saved generators are artifact directories (``ragim.lm-generator``): ``config.json``
(the :class:`LMConfig` plus the base model's identity), ``adapter/`` (the LoRA
adapter in peft's own format, never the base weights) and ``state.json``.

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> tasks = datasets.synthetic_family(n_tasks=8, n_features=2, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> gen = LMGenerator(base_model="tiny", k=2, device="cpu")
>>> p = gen.generate_params(tasks.descriptions[0], index, exclude=[tasks.ids[0]])
>>> p.metadata["generator"], len(p.metadata["provenance"])
('lm', 2)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ragim.checks import check_fields, check_int, check_number
from ragim.errors import (
    ArtifactError,
    DataWarning,
    ExcludedAfterFitWarning,
    GenerationError,
    ValidationError,
    user_stacklevel,
)
from ragim.generate.base import (
    Generator,
    check_task_index,
    config_with,
    fitted_tasks_state,
    provenance_records,
    read_fitted_digests,
    read_fitted_ids,
    register_generator,
)
from ragim.lm.adapters import (
    adapter_config_problems,
    lora_field,
    quiet_checkpointing_rename,
    restore_training_state,
)
from ragim.params import ModelParams, param_names
from ragim.tasks import Task

FORMAT = "ragim.lm-generator"
_WEIGHTINGS = ("similarity", "uniform")
#: values of ``LMConfig.dtype``: the floating-point types the model's weights may be loaded in
DTYPES = ("float32", "bfloat16")


def check_dtype(value: Any, name: str = "dtype") -> str:
    """``value`` if it is one of :data:`DTYPES`, else a one-line ValidationError naming it as
    ``name``, with a hint where it is the training setting's spelling ("bf16")."""
    if value not in DTYPES:
        hint = (
            " (bf16 is how mixed_precision, a training setting, says it)" if value == "bf16" else ""
        )
        raise ValidationError(f"{name} must be one of {list(DTYPES)}, got {value!r}{hint}")
    return value


RERANKS = ("logprob", "reward_model")
#: The LM generator's own keywords of ``generate_params`` and ``generate``.
GENERATION_OPTIONS = ("rerank", "reward_model", "num_candidates", "n", "temperature")


def generation_options(
    config: LMConfig,
    *,
    rerank: str | None = None,
    reward_model: Any = None,
    num_candidates: int | None = None,
    temperature: float | None = None,
    n: int | None = None,
) -> tuple[str, int, float]:
    """The rerank rule, number of candidates and temperature that
    :meth:`LMGenerator.generate_params` uses with these options and a generator of ``config``,
    checked before any work (an evaluation checks them before it fine-tunes anything).

    Defaults: ``config.num_candidates`` and ``config.temperature``; with
    ``rerank="reward_model"``, 8 candidates (when the config asks for one) at temperature 0.8
    (when the config's is 0).

    Returns
    -------
    (rerank, num_candidates, temperature) : tuple of str, int and float

    Raises
    ------
    ValidationError
        An unknown ``rerank``; ``rerank="reward_model"`` without ``reward_model``, or with one
        candidate (nothing to rank), or a ``reward_model`` without it; ``n`` and
        ``num_candidates`` that disagree; fewer than one candidate or a negative temperature;
        more than one candidate at temperature 0 (greedy candidates would be identical).

    >>> generation_options(LMConfig(), rerank="reward_model", reward_model="runs/rm")
    ('reward_model', 8, 0.8)
    """
    rerank = "logprob" if rerank is None else rerank
    if rerank not in RERANKS:
        raise ValidationError(f"rerank must be None or one of {list(RERANKS)}, got {rerank!r}")
    if n is not None and num_candidates is not None and n != num_candidates:
        raise ValidationError(
            f"n={n} and num_candidates={num_candidates} disagree; pass one of them"
        )
    num_candidates = n if n is not None else num_candidates
    if num_candidates is not None:
        num_candidates = check_int(num_candidates, "num_candidates", ge=1)
    if temperature is not None:
        temperature = check_number(temperature, "temperature", ge=0)
    if rerank == "reward_model":
        if reward_model is None:
            raise ValidationError(
                'rerank="reward_model" needs reward_model=... (a RewardModel or the path of '
                "a saved one); train one with ragim.train.train_reward_model"
            )
        if num_candidates == 1:
            raise ValidationError(
                'rerank="reward_model" with one candidate leaves the reward model nothing to '
                "rank (the one answer would be a sample at a temperature > 0); ask for 2 or "
                "more (the default is 8), or leave rerank out for the greedy answer"
            )
        count = (
            num_candidates
            if num_candidates is not None
            else (config.num_candidates if config.num_candidates > 1 else 8)
        )
        temp = (
            temperature
            if temperature is not None
            else (config.temperature if config.temperature > 0 else 0.8)
        )
        return rerank, count, temp
    if reward_model is not None:
        raise ValidationError('reward_model=... is used only with rerank="reward_model"')
    count = config.num_candidates if num_candidates is None else num_candidates
    temp = config.temperature if temperature is None else temperature
    if count > 1 and temp == 0:
        raise ValidationError(
            f"num_candidates={count} with temperature 0 (greedy decoding) gives {count} "
            "identical candidates; sample them with temperature > 0 (e.g. 0.8), or ask for 1"
        )
    return rerank, count, temp


@dataclass
class LMConfig:
    """Base model, retrieval, decoding and LoRA settings of an :class:`LMGenerator`."""

    base_model: str = field(
        default="smollm2-135m",
        metadata={"help": "'smollm2-135m', 'tiny', a local model directory or a cached hub id"},
    )
    k: int = field(
        default=5,
        metadata={
            "help": "neighbours retrieved into each prompt (0: none; the prompt then shows only "
            "the population model and the statistical prior, if on)"
        },
    )
    decimals: int = field(
        default=2, metadata={"help": "decimal places of numbers in prompts and answers (0-3)"}
    )
    max_abs: float = field(
        default=20.0,
        metadata={"help": "largest |parameter| shown or generated (values are clipped)"},
    )
    temperature: float = field(
        default=0.0, metadata={"help": "0 = greedy; > 0 samples the numbers"}
    )
    top_p: float = field(default=0.95, metadata={"help": "nucleus mass when sampling"})
    num_candidates: int = field(
        default=1, metadata={"help": "answers decoded per query (generate_candidates)"}
    )
    lora_r: int = lora_field("lora_r")
    lora_alpha: int = lora_field("lora_alpha")
    lora_dropout: float = lora_field("lora_dropout")
    target_modules: tuple[str, ...] = lora_field("target_modules")
    device: str = field(
        default="auto",
        metadata={"help": "'auto', 'cpu' or 'cuda[:N]' (resolved when the model loads)"},
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "floating-point type of the model's weights when generating: 'float32' or "
            "'bfloat16' (about twice as fast on CPUs with bfloat16 units; answers differ from "
            "float32's, docs/lm_format.md#bfloat16-weights); training needs 'float32'"
        },
    )
    seed: int = field(
        default=0,
        metadata={"help": "sampling seed (and the initialisation seed of the 'tiny' model)"},
    )
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={
            "help": "cap on prompt tokens (default: the model's context minus room for the answer)"
        },
    )
    provenance_weights: str = field(
        default="similarity", metadata={"help": "'similarity' or 'uniform' provenance weights"}
    )
    population: bool = field(
        default=True,
        metadata={
            "help": "show the population model (row-weighted mean of the other indexed tasks' "
            "parameters) in prompts"
        },
    )
    answer_format: str = field(
        default="json",
        metadata={
            "help": "'json' (name-keyed object) or 'compact' (values alone in schema order, keys "
            "once in the prompt)"
        },
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "prompts per decoding call (decoded together in one batched generate call by "
            "decoder='llguidance'; one at a time by 'builtin')"
        },
    )
    statistical_prior: bool = field(
        default=False,
        metadata={
            "help": "show the StatisticalGenerator's model for the target (estimates and their "
            "SDs) in the prompt, for the LM to correct; fitted on the training index and saved "
            "with the generator"
        },
    )
    residual: bool = field(
        default=False,
        metadata={
            "help": "the LM writes each parameter's change from the statistical prior in its "
            "prompt (0 keeps the prior's value) and the generator returns prior + change; "
            "needs statistical_prior=True"
        },
    )
    prompt_order: str = field(
        default="shared-first",
        metadata={
            "help": "'shared-first' (layout and population model before the target, computed "
            "once per batch) or 'target-first' (the order of generators saved before this "
            "choice)"
        },
    )
    decoder: str = field(
        default="builtin",
        metadata={
            "help": "constrained decoder: 'builtin' (hand-written loop, one prompt at a time; "
            "faster on CPU) or 'llguidance' (grammar engine in batched generate); "
            "docs/lm_format.md#decoders"
        },
    )

    def __post_init__(self):
        problems = adapter_config_problems(self)
        for flag in ("population", "statistical_prior", "residual"):
            if not isinstance(getattr(self, flag), bool):
                problems.append(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.residual is True and self.statistical_prior is not True:
            problems.append(
                "residual=True needs statistical_prior=True (the answer is a change to the "
                "statistical prior in the prompt); set statistical_prior=True or residual=False"
            )
        from ragim.lm.answer import ANSWER_FORMATS, DECODERS

        if self.answer_format not in ANSWER_FORMATS:
            problems.append(
                f"answer_format must be one of {sorted(ANSWER_FORMATS)}, got {self.answer_format!r}"
            )
        from ragim.lm.prompts import PROMPT_ORDERS

        if self.prompt_order not in PROMPT_ORDERS:
            problems.append(
                f"prompt_order must be one of {list(PROMPT_ORDERS)}, got {self.prompt_order!r}"
            )
        if self.decoder not in DECODERS:
            problems.append(f"decoder must be one of {list(DECODERS)}, got {self.decoder!r}")
        if self.provenance_weights not in _WEIGHTINGS:
            problems.append(
                f"provenance_weights must be one of {list(_WEIGHTINGS)}, "
                f"got {self.provenance_weights!r}"
            )
        rules = {
            "k": partial(check_int, ge=0),
            "num_candidates": partial(check_int, ge=1),
            "batch_size": partial(check_int, ge=1),
            "decimals": partial(check_int, ge=0, le=3),
            "max_abs": partial(check_number, gt=0, lt=1000),
            "temperature": partial(check_number, ge=0),
            "top_p": partial(check_number, gt=0, le=1),
            "max_prompt_tokens": partial(check_int, ge=16, allow_none=True),
            "dtype": check_dtype,
        }
        check_fields(self, rules, "LMConfig", problems)


#: what generation and training say of a fine-tuned generator with the statistical prior whose
#: correction weight was never validated (``prior_correction_`` None)
UNVALIDATED = (
    "this generator's correction of its statistical prior was never validated (no validation "
    "tasks), so its answers are the LM's own, unvalidated; train with val_fraction > 0, or "
    "validate it on unseen tasks: ragim.train.validate_prior_correction(gen, index, task_ids=...)"
)

_PRIOR_OFF = "; or turn it off (LMConfig(statistical_prior=False))"


def fit_prior_generator(index, *, progress: bool = False):
    """The :class:`~ragim.generate.statistical.StatisticalGenerator` whose model for each
    target an LM generator with ``statistical_prior`` shows in its prompts, fitted on
    ``index`` (its generation with ``exclude`` needs the index's task rows).

    Raises
    ------
    ValidationError
        When it cannot be fitted on ``index``, saying that the statistical prior needs it.
    """
    from ragim.generate.statistical import StatisticalGenerator

    try:
        return StatisticalGenerator().fit(index, progress=progress)
    except ValidationError as exc:
        raise ValidationError(f"the statistical prior cannot be fitted: {exc}{_PRIOR_OFF}") from exc


def prior_params(prior_generator, queries: Sequence, index, excludes: Sequence) -> list:
    """``prior_generator``'s parameters (with SDs) for each of ``queries`` on ``index``, each
    generated without what its entry of ``excludes`` names; a ValidationError says that the
    statistical prior needs what is missing."""
    try:
        with warnings.catch_warnings():
            # each prompt's prior leaves its own task out on purpose; that the stack's few
            # validated numbers saw the task is no leak into a prompt (held-out targets are
            # kept out of the index itself)
            warnings.simplefilter("ignore", ExcludedAfterFitWarning)
            out = prior_generator.generate_params(list(queries), index, exclude=list(excludes))
    except ValidationError as exc:
        raise ValidationError(
            f"the statistical prior cannot be generated: {exc}{_PRIOR_OFF}"
        ) from exc
    return list(out)


def plus_prior(values: dict[str, float], prior: ModelParams | None) -> dict[str, float]:
    """A residual answer's final parameters: ``values`` (an answer's values by key, in the
    prior's key order) plus ``prior``'s; ``values`` unchanged when ``prior`` is None.

    >>> import pandas as pd
    >>> from ragim.schema import FeatureSchema
    >>> X = pd.DataFrame({"x": [0.0, 1.0]})
    >>> p = ModelParams.from_dict("logistic", FeatureSchema.infer(X).fit(X),
    ...                           {"intercept": -1.0, "x": 0.5})
    >>> plus_prior({"intercept": 0.25, "x": 0.0}, p)
    {'intercept': -0.75, 'x': 0.5}
    """
    if prior is None:
        return values
    if list(values) != prior.names:
        raise ValidationError(
            f"the answer's keys {list(values)[:4]} are not the prior's {prior.names[:4]}"
        )
    return {k: v + float(b) for (k, v), b in zip(values.items(), prior.vector, strict=True)}


def correction_state(weight, table) -> dict[str, Any]:
    """``prior_correction_`` and ``prior_correction_cv_`` as ``state.json`` keeps them, checked:
    the weight None or a number in [0, 1], the table ``(w, mean log-loss)`` pairs of finite
    numbers. Raises ValidationError naming the bad value."""
    weight = None if weight is None else check_number(weight, "prior_correction", ge=0, le=1)
    rows = []
    for row in table if isinstance(table, list | tuple) else [table]:
        if not isinstance(row, list | tuple) or len(row) != 2:
            raise ValidationError(
                f"prior_correction_cv rows must be (w, log-loss) pairs, got {row!r}"
            )
        rows.append([check_number(v, "prior_correction_cv values") for v in row])
    return {"prior_correction": weight, "prior_correction_cv": rows}


@register_generator("lm")
class LMGenerator(Generator):
    """Language-model generator (see the module docstring).

    Parameters
    ----------
    config : :class:`LMConfig`; keyword overrides are accepted too
        (``LMGenerator(base_model="tiny", k=3)``).

    Attributes
    ----------
    model_, tokenizer_ : the causal LM (a ``peft.PeftModel`` once fine-tuned or loaded) and
        its tokenizer; None until first use.
    history_ : the trainer's log history (train ``loss`` and ``eval_loss`` entries).
    training_ : how it was trained, one ``{"stage", "config"}`` record per training run
        (SFT, then GRPO or DPO), saved in ``state.json`` beside the adapter.
    parse_failures_ : answers that did not parse (expected: always 0).
    n_trainable_params_, train_seconds_ : LoRA parameter count and SFT wall time.

    Notes
    -----
    :meth:`generate_params` and :meth:`generate` take these options besides ``k`` and
    ``exclude`` (:func:`generation_options` checks them before any work):

    - ``num_candidates``, ``n``: candidates drawn per query (``n`` is an alias). Default: the
      config's ``num_candidates``; 8 with ``rerank="reward_model"``. More than one needs a
      temperature > 0 (greedy candidates would be identical; refused).
    - ``temperature``: sampling temperature. Default: the config's; with
      ``rerank="reward_model"`` and a greedy config, 0.8.
    - ``rerank``: ``None`` or ``"logprob"`` (the candidate with the highest model
      log-probability) or ``"reward_model"`` (best-of-n with ``reward_model``: every query's
      candidates sampled in batched calls, then each query's ranked by
      :func:`ragim.lm.reward_model.rank_candidates`, as :func:`~ragim.lm.reward_model.best_of_n`
      does for one query).
    - ``reward_model``: a :class:`~ragim.lm.reward_model.RewardModel` (or any object with
      ``score(prompts, completions)``), or the path of a saved one; needed for
      ``rerank="reward_model"``.

    ``metadata["rerank"]`` says which rule picked the answer and ``metadata["candidates"]``
    how many were drawn; best-of-n adds ``reward_scores``. :meth:`generate_candidates`
    returns them all. Unknown options raise TypeError.

    Examples
    --------
    >>> from ragim import TaskIndex, datasets
    >>> tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
    >>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
    >>> class Longest:  # a stand-in reward model: prefers longer answers
    ...     def score(self, prompts, completions):
    ...         return [len(c[0]["content"]) for c in completions]
    >>> gen = LMGenerator(base_model="tiny", k=2, device="cpu")
    >>> p = gen.generate_params(tasks.descriptions[0], index, rerank="reward_model",
    ...                         reward_model=Longest(), n=3)
    >>> p.metadata["rerank"], len(p.metadata["reward_scores"])
    ('reward_model', 3)
    """

    def __init__(self, config: LMConfig | None = None, **overrides: Any):
        self.config = config_with(LMConfig, config, overrides)
        self.model_ = None
        self.tokenizer_ = None
        self.index_ = None
        self.parse_failures_ = 0
        self.fine_tuned_ = False
        self.model_kind_: str | None = None
        self.schema_ = None
        self.param_names_: list[str] | None = None
        self.embedder_identity_: dict | None = None
        self.prior_generator_ = None
        self.prior_correction_: float | None = None
        self.prior_correction_cv_: list[tuple[float, float]] = []
        restore_training_state(self)  # history_, training_, ...: untrained

    # ------------------------------------------------------------------ model
    def load_model(self):
        """Load the base model and tokenizer now (otherwise done on first use); returns
        ``(model, tokenizer)``."""
        if self.model_ is None or self.tokenizer_ is None:
            import torch

            from ragim.lm.base_models import load_base_model

            cfg = self.config
            self.model_, self.tokenizer_ = load_base_model(
                cfg.base_model, device=cfg.device, dtype=getattr(torch, cfg.dtype), seed=cfg.seed
            )
        return self.model_, self.tokenizer_

    def lora_config(self):
        """The ``peft.LoraConfig`` this generator trains (task type CAUSAL_LM)."""
        from ragim.lm.adapters import peft_lora_config

        return peft_lora_config(self.config, "CAUSAL_LM")

    def prompt_limit(self, names: Sequence[str]) -> int:
        """Tokens available for prompt plus an answer over ``names`` (see
        :func:`ragim.lm.prompts.build_prompt`)."""
        from ragim.lm.prompts import answer_room, context_length

        model, tok = self.load_model()
        limit = context_length(tok, model)
        if self.config.max_prompt_tokens is not None:
            room = answer_room(
                names,
                tok,
                decimals=self.config.decimals,
                max_abs=self.config.max_abs,
                format_name=self.config.answer_format,
            )
            limit = min(limit, self.config.max_prompt_tokens + room)
        return limit

    def statistical_priors(self, queries: Sequence[str | Task], index, excludes: Sequence) -> list:
        """The statistical prior of each query for its prompt (``config.statistical_prior``;
        a list of None when it is off): :class:`~ragim.generate.statistical.StatisticalGenerator`
        parameters with their SDs, each generated without what ``excludes`` (one exclusion per
        query) names. The prior generator is ``prior_generator_``, fitted on the training index
        by :func:`ragim.train.train_sft`, or on ``index`` at first use by an untrained
        generator."""
        prior = self.fitted_prior(index)
        if prior is None:
            return [None] * len(queries)
        return prior_params(prior, queries, index, excludes)

    def fitted_prior(self, index):
        """The prior generator the prompts over ``index`` use (None when
        ``config.statistical_prior`` is off): ``prior_generator_``, kept from training; an
        untrained generator fits one on ``index`` and refits it for any other index."""
        if not self.config.statistical_prior:
            return None
        lazy = self.__dict__.get("_prior_fitted_on")
        if self.prior_generator_ is None or (lazy is not None and lazy is not index):
            self.prior_generator_ = fit_prior_generator(index)
            self._prior_fitted_on = index
        return self.prior_generator_

    def answer_format(self, names: Sequence[str]):
        """The answer codec (:mod:`ragim.lm.answer`) of this generator over ``names``: what it
        writes, parses and constrains its decoding to (decimals and range from the config)."""
        from ragim.lm.answer import answer_format

        c = self.config
        return answer_format(names, name=c.answer_format, decimals=c.decimals, max_abs=c.max_abs)

    refit_python = (
        "fine-tune a new LMGenerator on this index: train_sft(index, generator_config=gen.config)"
    )
    refit_command = "fine-tune a new one on it: ragim train sft --index INDEX --out NEW-GENERATOR"

    def fit(self, index, **sft_kwargs: Any) -> LMGenerator:
        """Fine-tune with LoRA on ``index`` (:func:`ragim.train.train_sft` with this config);
        returns self."""
        # Training sits above inference: imported at call time so that ragim.generate.lm never
        # loads ragim.train (a convenience for Generator.fit; train_sft is the real entry point).
        from ragim.train.sft import train_sft  # lazy on purpose: inference must not import training

        check_task_index(index)
        if self.fine_tuned_:
            raise ValidationError(
                "this LMGenerator is already fine-tuned; fine-tune a new one with its config: "
                "train_sft(index, generator_config=gen.config)"
            )
        fitted = train_sft(index, generator_config=self.config, **sft_kwargs)
        self.__dict__.update(fitted.__dict__)
        return self

    # ------------------------------------------------------------------ generation
    def check_index(self, index) -> None:
        """Raise :class:`~ragim.errors.ValidationError` unless ``index`` has the model family,
        parameter layout and embedder this generator was trained on (an untrained base model
        works with any index)."""
        if self.param_names_ is None:
            return  # the untrained base model works with any index
        self._check_layout(index, "trained")
        if self.embedder_identity_ is not None:
            from ragim.embed import check_identity

            check_identity(self.embedder_identity_, index.embedder, generator=type(self).__name__)

    def prompt(
        self, query: str | Task, index=None, *, k: int | None = None, exclude=None
    ) -> tuple[list[dict[str, str]], list[str]]:
        """The chat prompt :meth:`generate_candidates` builds for one query, and the ids of the
        neighbours shown in it (most similar first).

        This is what a reward model scores candidates against
        (:func:`~ragim.lm.reward_model.best_of_n`) and what preference pairs store as ``prompt``.

        Examples
        --------
        >>> from ragim import TaskIndex, datasets
        >>> tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
        >>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
        >>> messages, shown = LMGenerator(base_model="tiny", k=2, device="cpu").prompt(
        ...     tasks.descriptions[0], index, exclude=[tasks.ids[0]])
        >>> [m["role"] for m in messages], len(shown)
        (['system', 'user'], 2)
        """
        from ragim.lm.prompts import index_prompt, warn_if_neighbours_cut

        if not isinstance(query, str | Task):
            raise ValidationError("prompt() takes one description or Task")
        index = self._resolve_index(index)
        cfg = self.config
        k = check_int(cfg.k if k is None else k, "k", ge=0)
        _, tok = self.load_model()
        desc = query.description if isinstance(query, Task) else query
        from ragim.index import normalize_exclude

        exclude = normalize_exclude(exclude)  # read twice: by the search and the population model
        hits = index.search(desc, k=min(k, len(index)), exclude=exclude) if k > 0 else []
        hits = sorted(hits, key=lambda h: -float(h.score))
        limit = self.prompt_limit(param_names(index.model, index.schema))
        [prior] = self.statistical_priors([desc], index, [exclude])
        messages, _, kept, _ = index_prompt(
            index, desc, hits, tok, cfg, exclude=exclude, max_tokens=limit, prior=prior
        )
        warn_if_neighbours_cut(k, [kept], [len(hits)], limit)
        return messages, [h.task_id for h in hits[:kept]]

    def _weights(self, hits) -> list[float]:
        if not hits:
            return []
        sims = [max(float(h.score), 0.0) for h in hits]
        if self.config.provenance_weights == "similarity" and sum(sims) > 0:
            return [s / sum(sims) for s in sims]
        return [1.0 / len(hits)] * len(hits)

    def generate_candidates(
        self,
        query: str | Task | Sequence[str | Task],
        index=None,
        *,
        k: int | None = None,
        exclude=None,
        num_candidates: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
    ) -> list[ModelParams] | list[list[ModelParams]]:
        """``num_candidates`` generated parameter sets per query (a list; a list of lists for a
        batch).

        Every candidate carries ``metadata``: ``source="generated"``, ``generator="lm"``,
        ``provenance`` (the neighbours in the prompt), ``candidates`` (n), ``candidate``
        (its position), ``logprob`` (the model's log-probability of its free choices),
        ``k``, ``population`` (``n_tasks`` and ``n_rows`` of the population model in the
        prompt, or None), ``residual`` (``config.residual``) and ``prompt_tokens``. Sampling is
        seeded by ``config.seed`` per call, and prompts are decoded ``config.batch_size`` at a
        time, so a query's sampled candidates depend on the queries batched with it (greedy
        answers do not). With ``config.residual`` the LM's answer is each
        parameter's change from the statistical prior in its prompt, and the candidate is
        prior + change (:func:`plus_prior`; without the prior's SDs). More than one candidate
        needs ``temperature > 0`` (greedy candidates would be identical; refused).
        """
        index = self._resolve_index(index)
        self.check_index(index)
        self.check_index_unchanged(index)  # a trained LM learned from its index's tasks
        sampling = self._sampling(num_candidates, temperature, top_p)
        vecs, items, single = index.embed_queries(query)
        out = self._candidates(index, vecs, items, sampling, k=k, exclude=exclude)
        return out[0] if single else out

    def _sampling(self, num_candidates, temperature, top_p) -> tuple[int, float, float]:
        """``(num_candidates, temperature, top_p)``, the config's where None, checked."""
        cfg = self.config
        n = cfg.num_candidates if num_candidates is None else num_candidates
        temp = cfg.temperature if temperature is None else temperature
        top_p = cfg.top_p if top_p is None else top_p
        LMConfig(
            **{**asdict(cfg), "num_candidates": n, "temperature": temp, "top_p": top_p}
        )  # validates
        if n > 1 and temp == 0:
            raise ValidationError(
                f"num_candidates={n} with temperature 0 (greedy decoding) gives {n} identical "
                "candidates; sample them with temperature > 0 (e.g. 0.8), or ask for 1"
            )
        return n, temp, top_p

    def _candidates(
        self, index, vecs, items: list, sampling: tuple[int, float, float], *, k, exclude
    ) -> list[list[ModelParams]]:
        """The candidates of each query (``items``, embedded as ``vecs`` (Q, E)) on an index
        already checked, with ``sampling`` from :meth:`_sampling`."""
        from ragim.index import per_query_excludes
        from ragim.lm.prompts import index_prompt, warn_if_neighbours_cut

        cfg = self.config
        n, temp, top_p = sampling
        k = asked = check_int(cfg.k if k is None else k, "k", ge=0)
        k = min(k, len(index))
        hits = index.search_vectors(vecs, k, exclude=exclude) if k > 0 else [[] for _ in items]
        model, tok = self.load_model()
        model.eval()
        names = param_names(index.model, index.schema)
        limit = self.prompt_limit(names)
        out, prompts, shown = [], [], []
        excludes = per_query_excludes(exclude, len(items))
        priors = self.statistical_priors(items, index, excludes)
        for item, hs, ex, prior in zip(items, hits, excludes, priors, strict=True):
            desc = item.description if isinstance(item, Task) else item
            hs = sorted(hs, key=lambda h: -float(h.score))
            messages, _, kept, pop = index_prompt(
                index, desc, hs, tok, cfg, exclude=ex, max_tokens=limit, prior=prior
            )
            used = hs[:kept]
            shown.append((kept, len(hs)))
            meta = {
                "source": "generated",
                "generator": "lm",
                "k": kept,
                "k_requested": asked,
                "provenance": provenance_records(used, self._weights(used)),
                "candidates": n,
                "population": None
                if pop is None
                else {key: pop.metadata[key] for key in ("n_tasks", "n_rows")},
                "base_model": cfg.base_model,
                "dtype": cfg.dtype,
                "fine_tuned": self.fine_tuned_,
                "statistical_prior": prior is not None,
                "residual": cfg.residual,
            }
            if isinstance(item, Task):
                meta["task_id"] = item.task_id
            ids = tok.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"][0]
            prompts.append((ids, desc, meta, prior if cfg.residual else None))
        warn_if_neighbours_cut(asked, [a for a, _ in shown], [b for _, b in shown], limit)
        for start in range(0, len(prompts), cfg.batch_size):
            chunk = prompts[start : start + cfg.batch_size]
            out += self._decode(
                model,
                tok,
                chunk,
                names,
                index,
                n,
                temp,
                top_p,
                seed=cfg.seed + start // cfg.batch_size,
            )
        return out

    def _decode(
        self, model, tok, chunk, names, index, n, temp, top_p, *, seed
    ) -> list[list[ModelParams]]:
        """Decode one batch of ``(prompt_ids, description, metadata, base)`` prompts in one
        call; ``base`` is None, or the prior a residual answer is added to."""
        from ragim.lm.constrained import generate_answer_batch

        fmt = self.answer_format(names)
        try:
            batch = generate_answer_batch(
                model,
                tok,
                [ids for ids, _, _, _ in chunk],
                fmt,
                temperature=float(temp),
                top_p=float(top_p),
                num_candidates=n,
                seed=seed,
                decoder=self.config.decoder,
            )
        except GenerationError as exc:
            self.parse_failures_ += 1
            descs = "; ".join(repr(d[:60]) for _, d, _, _ in chunk)
            raise GenerationError(f"the LM's answer for {descs} did not parse: {exc}") from exc
        out = []
        for (ids, desc, meta, base), results in zip(chunk, batch, strict=True):
            group = []
            for i, r in enumerate(results):
                try:
                    values = plus_prior(fmt.parse(r.text), base)
                    p = ModelParams.from_dict(
                        index.model,
                        index.schema,
                        values,
                        metadata={
                            **meta,
                            "candidate": i,
                            "logprob": round(float(r.logprob), 6),
                            "prompt_tokens": int(ids.shape[0]),
                            "answer_tokens": int(r.n_tokens),
                        },
                    )
                except (GenerationError, ValidationError) as exc:
                    self.parse_failures_ += 1
                    raise GenerationError(
                        f"the LM's answer for {desc[:80]!r} is not a valid {index.model} "
                        f"model: {exc}\n"
                        f"answer: {r.text[:300]}"
                    ) from exc
                group.append(p)
            out.append(group)
        return out

    def _is_fitted(self) -> bool:
        return True  # an untrained base model generates too (with any index)

    def _check_fitted_on(self, index, fitted: bool) -> None:
        self.check_index(index)

    def _generate(
        self, index, vectors, items: list, single: bool, *, k, exclude, **options: Any
    ) -> list[ModelParams]:
        """The chosen candidate per query for :meth:`generate_params`; ``options`` are
        :func:`generation_options`' keywords (see the class docstring)."""
        unknown = sorted(set(options) - set(GENERATION_OPTIONS))
        if unknown:
            raise TypeError(
                f"LMGenerator.generate_params() got unexpected keyword(s) {unknown}; its "
                f"options are k, exclude, {', '.join(GENERATION_OPTIONS)}"
            )
        rerank, count, temp = generation_options(self.config, **options)
        rm = None
        if rerank == "reward_model":
            from ragim.lm.reward_model import check_reward_model_fits

            rm = self._resolve_reward_model(options["reward_model"])
            check_reward_model_fits(self, rm, index)  # before any candidate is sampled
        sampling = self._sampling(count, temp, None)
        # every query's candidates in batched calls (config.batch_size prompts each)
        groups = self._candidates(index, vectors, items, sampling, k=k, exclude=exclude)
        if rm is not None:
            from ragim.index import per_query_excludes
            from ragim.lm.reward_model import rank_candidates

            excludes = per_query_excludes(exclude, len(items))  # one per query, as the search
            best = [
                rank_candidates(self, rm, q, index, g, k=k, exclude=ex)
                for q, g, ex in zip(items, groups, excludes, strict=True)
            ]
        else:
            best = [
                max(g, key=lambda p: p.metadata["logprob"]).replace(metadata={"rerank": "logprob"})
                for g in groups
            ]
        return self.toward_prior(items, best, index, exclude)

    def toward_prior(self, queries: Sequence, answers: list, index, exclude=None) -> list:
        """``answers`` (one ModelParams per query) moved towards the statistical prior of their
        prompts: ``prior + w * (answer - prior)`` with ``w = prior_correction_``, the weight of
        the LM's correction that validation on held-out training tasks chose
        (:func:`ragim.train.validate_prior_correction`; 1 keeps the answer, 0 gives the prior).
        Unchanged when ``prior_correction_`` is None or ``config.statistical_prior`` is off.
        ``metadata["prior_correction"]`` records ``w``. A fine-tuned generator with the
        statistical prior but no validated weight returns its answers unchanged with
        ``metadata["prior_correction"] = None`` and one :class:`~ragim.errors.DataWarning` per
        call (:data:`UNVALIDATED`)."""
        w = self.prior_correction_
        if not self.config.statistical_prior:
            return answers
        if w is None:
            if not self.fine_tuned_:
                return answers
            warnings.warn(UNVALIDATED, DataWarning, stacklevel=user_stacklevel())
            return [a.replace(metadata={"prior_correction": None}) for a in answers]
        w = check_number(w, "prior_correction_", ge=0, le=1)
        from ragim.index import per_query_excludes

        index = self._resolve_index(index)
        queries = list(queries)
        priors = self.statistical_priors(queries, index, per_query_excludes(exclude, len(queries)))
        return [
            a.replace(
                vector=p.vector + w * (a.vector - p.vector),
                metadata={"prior_correction": float(w)},
            )
            for a, p in zip(answers, priors, strict=True)
        ]

    @staticmethod
    def _resolve_reward_model(reward_model):
        if isinstance(reward_model, str | Path):
            from ragim.lm.reward_model import RewardModel

            return RewardModel.load(reward_model)
        if not callable(getattr(reward_model, "score", None)):
            raise ValidationError(
                "reward_model must be a RewardModel (or have a score(prompts, completions) "
                f"method) or the path of a saved one, got {type(reward_model).__name__}"
            )
        return reward_model

    # ------------------------------------------------------------------ persistence
    def _ensure_adapter(self):
        """The model as a PeftModel: an untrained generator gets a fresh (zero-effect) LoRA
        adapter."""
        from peft import PeftModel, get_peft_model

        model, _ = self.load_model()
        if not isinstance(model, PeftModel):
            from ragim.lm.adapters import check_lora_rank

            check_lora_rank(model, self.config)
            with quiet_checkpointing_rename():
                model = get_peft_model(model, self.lora_config())
            model.eval()
            self.model_ = model
        return model

    def save(self, path: str | Path) -> Path:
        """Save as an artifact: ``config.json``, ``state.json`` and the LoRA ``adapter/`` (peft
        format)."""
        from ragim.lm.adapters import save_adapter_artifact, training_state

        model = self._ensure_adapter()
        state = {
            "model_kind": self.model_kind_,
            "param_names": self.param_names_,
            "schema": None if self.schema_ is None else self.schema_.to_dict(),
            "embedder": self.embedder_identity_,
            **fitted_tasks_state(self),
            "fine_tuned": self.fine_tuned_,
            **correction_state(self.prior_correction_, self.prior_correction_cv_),
            **training_state(self),
        }
        prior = self.prior_generator_
        extra = {} if prior is None else {"prior": lambda target: prior.save(target)}
        return save_adapter_artifact(path, FORMAT, self.config, state, model, extra)

    save_pretrained = save

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | None = None, dtype: str | None = None
    ) -> LMGenerator:
        """Open a saved generator: checksums are verified, then the base model is loaded and the
        adapter applied.

        ``device`` and ``dtype`` (one of :data:`DTYPES`), when given, replace the saved
        ``LMConfig`` values: a generator trained in float32 generates in bfloat16 with
        ``dtype="bfloat16"``. Raises ArtifactError for a damaged or mismatched artifact and
        ValidationError for a ``dtype`` outside :data:`DTYPES`."""
        if dtype is not None:
            check_dtype(dtype)
        from ragim.io import read_artifact
        from ragim.lm.adapters import load_adapter_model, read_adapter_config
        from ragim.schema import FeatureSchema

        art = read_artifact(path, FORMAT)
        try:
            # population, prompt_order: saved before prompts could show it / choose it
            cfg, stored = read_adapter_config(
                art,
                LMConfig,
                device=device,
                dtype=dtype,
                defaults={"population": False, "prompt_order": "target-first"},
            )
            state = art.read_json("state.json")
            gen = cls(cfg)
            gen.model_kind_, gen.param_names_ = state["model_kind"], state["param_names"]
            try:
                gen.schema_ = (
                    None if state["schema"] is None else FeatureSchema.from_dict(state["schema"])
                )
            except ValidationError as exc:  # name the file the schema is in
                raise ValidationError(f"state.json: schema: {exc}") from None
            gen.embedder_identity_ = state["embedder"]
            gen.fitted_ids_ = read_fitted_ids(state)  # None when saved before they were kept
            gen.fitted_digests_ = read_fitted_digests(state)
            gen.fine_tuned_ = bool(state.get("fine_tuned", False))
            # saved before it existed: None and []
            saved = correction_state(
                state.get("prior_correction"), state.get("prior_correction_cv", [])
            )
            gen.prior_correction_ = saved["prior_correction"]
            gen.prior_correction_cv_ = [tuple(r) for r in saved["prior_correction_cv"]]
            restore_training_state(gen, state)
            if (art.path / "prior").is_dir():
                from ragim.generate.statistical import StatisticalGenerator

                gen.prior_generator_ = StatisticalGenerator.load(art.path / "prior")
                if gen.prior_generator_.param_names_ != gen.param_names_:
                    raise ValidationError(
                        "its prior/ generator has another parameter layout than the LM"
                    )
            elif cfg.statistical_prior and gen.fine_tuned_:
                raise ValidationError(
                    "it was trained with statistical_prior but its prior/ folder is missing"
                )
        except (TypeError, KeyError, ValueError, AttributeError, ValidationError) as exc:
            raise ArtifactError(f"{path}: not a valid LM generator ({exc})") from exc
        gen.model_, gen.tokenizer_ = load_adapter_model(
            path,
            art,
            cfg,
            stored,
            "adapter",
            gen.load_model,  # the base model, as an unsaved generator of this config loads it
        )
        return gen

    from_pretrained = load

    def __repr__(self) -> str:
        state = "fine-tuned" if self.fine_tuned_ else "base model"
        return f"LMGenerator(base_model={self.config.base_model!r}, k={self.config.k}, {state})"


__all__ = [
    "FORMAT",
    "RERANKS",
    "LMConfig",
    "LMGenerator",
    "fit_prior_generator",
    "generation_options",
    "plus_prior",
    "prior_params",
    "quiet_checkpointing_rename",
]
