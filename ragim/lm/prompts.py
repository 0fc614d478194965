"""Prompt and answer format of the LM generator.

A prompt is a chat (``system`` + ``user``) rendered with the tokenizer's own
chat template and ``add_generation_prompt=True``. The user message holds, in
this order (``order="shared-first"``, the default):

1. the model family and its parameter layout, as the family object writes it
   (:meth:`~ragim.models.ModelFamily.prompt_head`, ``schema_lines``): for logistic regression
   one line per design term with its unit (``age (years, per SD): age at examination``,
   ``cp[asymptomatic] (0/1): chest-pain type``, ``chol__missing (0/1, 1 = chol
   missing)``); for a GAM one line per feature listing its bins;
2. optionally the population model (:meth:`~ragim.index.TaskIndex.population_params`:
   the row-weighted mean of the other indexed tasks' parameters) in the answer format;
3. the target task's description;
4. the retrieved neighbours, most similar first, each with its description, its
   similarity and its fitted parameters in the answer format
   (the answer codec, :mod:`ragim.lm.answer`, ``decimals`` places);
5. the answer format's instruction (e.g. one JSON object, keys in schema order); in residual
   mode (``residual=True``, ``LMConfig.residual``) followed by :data:`RESIDUAL_INSTRUCTION`:
   the answer is each parameter's change from the statistical prior shown, 0 keeping it.

Parts 1 and 2 are the same for every target of one index, so the prompts of a batch share
them as a token prefix whose key/value cache is computed once
(:func:`ragim.lm.constrained.shared_prefix_length`). ``order="target-first"`` (target,
layout, neighbours, population model, instruction) is the order generators saved before
this choice were trained on; ``LMGenerator.load`` keeps it for them.

The answer (the SFT target, and what constrained decoding emits) is written by the answer
codec of :mod:`ragim.lm.answer`, exactly
``answer_format(params.names, decimals=decimals).write(params.as_dict())``: the keys are
``["intercept", *schema.design_names]`` (logistic) or
``["intercept", *schema.gam_names]`` (GAM), in that order. In residual mode the same codec
writes ``target - prior`` over the same keys (the prior's own values, not their rounded text).

The prompt must fit the model's context together with the answer (about eight
tokens per key are reserved; exactly, the length of the longest possible answer). When
it does not, the least similar neighbours are dropped first; the schema and the
population model are never truncated. If even a prompt without
neighbours does not fit, :class:`~ragim.errors.ValidationError` is raised.
See ``docs/lm_format.md`` for a rendered example.

Examples
--------
>>> import pandas as pd
>>> from ragim.lm import load_base_model
>>> from ragim.params import ModelParams
>>> from ragim.schema import FeatureSchema
>>> X = pd.DataFrame({"age": [40.0, 60.0, 80.0]})
>>> schema = FeatureSchema.infer(X, units={"age": "years"}).fit(X)
>>> _, tok = load_base_model("tiny", device="cpu")
>>> messages, text, kept = build_prompt("Predict stroke.", [], schema, "logistic", tok)
>>> "age (years, per SD)" in text, kept
(True, 0)
>>> answer_text(ModelParams.from_dict("logistic", schema, {"intercept": -1.234, "age": 0.5}))
'{"intercept": -1.234, "age": 0.5}'
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

from ragim.errors import DataWarning, ValidationError, user_stacklevel
from ragim.lm.answer import AnswerFormat, answer_format
from ragim.params import ModelParams, model_family, param_names
from ragim.schema import FeatureSchema

#: the heading of the statistical prior's block (``LMConfig.statistical_prior``)
PRIOR_HEAD = (
    "Statistical estimate for the target (a random-effects meta-regression of the indexed "
    "tasks' models on their descriptions):"
)

#: how the population model's block starts (its task count follows)
POPULATION_HEAD = "Population model (average over"

#: what the instruction adds in residual mode (``LMConfig.residual``): the answer is the change
#: to each of the statistical prior's parameters, written in the same format and order
RESIDUAL_INSTRUCTION = (
    "In place of each parameter, write its change from the statistical estimate above "
    "(0 keeps the estimate's value), in the same format and order."
)

SYSTEM_PROMPT = (
    "You write interpretable clinical prediction models. Given a target prediction task and "
    "similar tasks with their fitted models, you answer with the parameters (log-odds) of the "
    "target task's model in the form the request asks for, and nothing else."
)
#: tokens reserved per answer key (key text, number, separators), plus a fixed margin
ANSWER_TOKENS_PER_KEY = 8
ANSWER_MARGIN = 16
#: context assumed when neither the tokenizer nor the model states a usable one
DEFAULT_CONTEXT = 8192


def context_length(tokenizer, model=None) -> int:
    """The usable context in tokens: the smaller of the tokenizer's ``model_max_length``
    and the model config's ``max_position_embeddings`` (ignoring the "unbounded"
    sentinel values tokenizers use); :data:`DEFAULT_CONTEXT` when neither is known.

    Examples
    --------
    >>> from ragim.lm import load_base_model
    >>> model, tok = load_base_model("tiny", device="cpu")
    >>> context_length(tok, model)
    8192
    """
    limits = []
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 10_000_000:
        limits.append(tml)
    cfg = getattr(model, "config", None)
    mpe = getattr(cfg, "max_position_embeddings", None)
    if isinstance(mpe, int) and mpe > 0:
        limits.append(mpe)
    return min(limits) if limits else DEFAULT_CONTEXT


def answer_room(
    names: Sequence[str],
    tokenizer=None,
    *,
    decimals: int = 3,
    max_abs: float = 20.0,
    format_name: str = "json",
) -> int:
    """Tokens reserved for the answer over ``names``.

    With a tokenizer: the length of the longest-number answer (every value
    ``-(max_abs - 10**-decimals)``) plus :data:`ANSWER_MARGIN`; without one:
    :data:`ANSWER_TOKENS_PER_KEY` per key plus the margin.

    Examples
    --------
    >>> answer_room(["intercept", "age"])
    32
    """
    names = list(names)
    if tokenizer is None:
        return ANSWER_TOKENS_PER_KEY * len(names) + ANSWER_MARGIN
    worst = -(float(max_abs) - 10.0**-decimals)
    fmt = answer_format(names, name=format_name, decimals=decimals, max_abs=max_abs)
    text = fmt.write(dict.fromkeys(names, worst))
    return len(tokenizer.encode(text, add_special_tokens=False)) + ANSWER_MARGIN


def answer_text(
    params: ModelParams, decimals: int = 3, *, max_abs: float = 20.0, format_name: str = "json"
) -> str:
    """The canonical answer for ``params`` in the answer format ``format_name`` (``"json"``:
    name-keyed JSON in schema order; ``"compact"``: the values alone, in schema order).

    Values are clipped to ``[-max_abs, max_abs]`` and rounded to ``decimals`` places.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
    >>> s = FeatureSchema.infer(X).fit(X)
    >>> answer_text(ModelParams.from_dict("logistic", s, {"intercept": 0.25, "x": -1.0}), 2)
    '{"intercept": 0.25, "x": -1}'
    """
    if not isinstance(params, ModelParams):
        raise ValidationError(f"answer_text needs ModelParams, got {type(params).__name__}")
    fmt = answer_format(params.names, name=format_name, decimals=decimals, max_abs=max_abs)
    return fmt.write(params.as_dict())


def schema_lines(schema: FeatureSchema, kind: str) -> list[str]:
    """One line per design term (logistic) or per feature (GAM), with units and descriptions
    (the model family's :meth:`~ragim.models.ModelFamily.schema_lines`).

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"age": [40.0, None, 80.0]})
    >>> s = FeatureSchema.infer(X, units={"age": "years"}).fit(X)
    >>> schema_lines(s, "logistic")
    ['- age (years, per SD)', '- age__missing (0/1, 1 = age missing)']
    """
    if not isinstance(schema, FeatureSchema) or not schema.is_fitted:
        raise ValidationError("build_prompt needs a fitted FeatureSchema")
    return model_family(kind).schema_lines(schema)


def _layout_text(schema: FeatureSchema, kind: str) -> str:
    head = model_family(kind).prompt_head()
    return head + "\nDesign terms:\n" + "\n".join(schema_lines(schema, kind))


def _neighbor_block(i: int, nb: Any, fmt: AnswerFormat) -> str:
    values, names = nb.params.as_dict(), list(fmt.keys)
    if list(values) != names:
        raise ValidationError(
            f"neighbour {nb.task_id!r} has {len(values)} parameters whose names do not match the "
            f"prompt's layout ({len(names)} names); neighbours must come from the same index"
        )
    return f"{i}. {nb.description} (similarity {float(nb.score):.3f})\n{fmt.write(values)}"


def _check_layout(params: Any, fmt: AnswerFormat, what: str) -> ModelParams:
    if not isinstance(params, ModelParams) or params.names != list(fmt.keys):
        raise ValidationError(f"{what} must be ModelParams over the prompt's layout (same index)")
    return params


def _population_block(population: ModelParams | None, fmt: AnswerFormat) -> str:
    if population is None:
        return ""
    _check_layout(population, fmt, "the population model")
    n = population.metadata.get("n_tasks")
    what = f"{n} indexed tasks" if isinstance(n, int) else "the indexed tasks"
    js = fmt.write(population.as_dict())
    return f"{POPULATION_HEAD} {what}, weighted by their patients):\n{js}"


#: orders of the user message: ``"shared-first"`` puts what every target of one index shares
#: (layout, population model) before the target and its neighbours, so that batched decoding
#: computes it once (:func:`ragim.lm.constrained.shared_prefix_length`); ``"target-first"`` is
#: the order of generators saved before the choice existed
PROMPT_ORDERS = ("shared-first", "target-first")


def _prior_block(prior: ModelParams | None, fmt: AnswerFormat) -> str:
    if prior is None:
        return ""
    _check_layout(prior, fmt, "the statistical prior")
    text = f"{PRIOR_HEAD}\n{fmt.write(prior.as_dict())}"
    if prior.std is not None:
        sds = dict(zip(prior.names, (float(v) for v in prior.std), strict=True))
        text += f"\nIts standard deviations:\n{fmt.write(sds)}"
    return text


def _user_content(
    description: str,
    layout: str,
    blocks: list[str],
    population: str,
    prior: str,
    instruction: str,
    order: str,
) -> str:
    target = f"Target task: {description.strip()}"
    similar = (
        "Similar tasks and their fitted models (most similar first):\n" + "\n".join(blocks)
        if blocks
        else "No similar tasks are available."
    )
    if order == "shared-first":
        parts = [layout, population, target, prior, similar, instruction]
    else:
        parts = [target, layout, similar, population, prior, instruction]
    return "\n\n".join(p for p in parts if p)


def answer_instruction(fmt: AnswerFormat, residual: bool) -> str:
    """The prompt's last sentence: ``fmt``'s instruction, followed in residual mode by
    :data:`RESIDUAL_INSTRUCTION`."""
    return fmt.instruction + (" " + RESIDUAL_INSTRUCTION if residual else "")


def _messages(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _quiet_length_warning(tokenizer) -> None:
    """ragim measures prompts longer than the context on purpose (to fit them, or to say by how
    much they do not fit): stop transformers warning "Token indices sequence length is longer
    than the specified maximum" for them."""
    flags = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(flags, dict):
        flags["sequence-length-is-longer-than-the-specified-maximum"] = True


def _n_tokens(tokenizer, messages) -> int:
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return len(ids["input_ids"])


def build_prompt(
    description: str,
    neighbors: Sequence[Any],
    schema: FeatureSchema,
    kind: str,
    tokenizer,
    *,
    max_tokens: int | None = None,
    decimals: int = 3,
    max_abs: float = 20.0,
    population: ModelParams | None = None,
    format_name: str = "json",
    order: str = "shared-first",
    prior: ModelParams | None = None,
    residual: bool = False,
) -> tuple[list[dict[str, str]], str, int]:
    """Build the chat prompt for one target task.

    Parameters
    ----------
    description : the target task's description.
    neighbors : retrieved :class:`~ragim.index.Neighbor` objects (any objects with
        ``task_id``, ``description``, ``score`` and ``params``); they are shown most
        similar first.
    schema, kind : the fitted schema and model family ("logistic" or "gam") of the answer.
    tokenizer : a tokenizer with a chat template.
    max_tokens : the context available for prompt plus answer; default
        :func:`context_length` of the tokenizer. The answer needs
        :func:`answer_room` tokens of it.
    decimals, max_abs : rounding and clipping of the neighbours' parameters.
    format_name : the answer format (:data:`~ragim.lm.answer.ANSWER_FORMATS`) of the
        neighbours' parameters and of the answer asked for.
    population : the population model shown
        (:meth:`~ragim.index.TaskIndex.population_params`), or None for none.
    prior : the statistical generator's model for the target (estimates, and their standard
        deviations when it has ``std``), shown after the target description
        (``LMConfig.statistical_prior``), or None for none; never dropped for room.
    residual : ask for each parameter's change from ``prior`` instead of the parameter
        (``LMConfig.residual``): the instruction ends with :data:`RESIDUAL_INSTRUCTION`; the
        neighbours and the prior are shown as they are. Needs ``prior``.
    order : the order of the user message, one of :data:`PROMPT_ORDERS`: ``"shared-first"``
        (layout, population model, target, neighbours, instruction) or ``"target-first"``
        (target, layout, neighbours, population model, instruction).

    Returns
    -------
    (messages, text, n_neighbors_kept)
        The chat messages, the rendered prompt text (generation prompt included) and
        how many of the most similar neighbours fitted.

    Raises
    ------
    ValidationError
        When the prompt without any neighbour already leaves no room for the answer, or
        ``residual`` is asked for without a ``prior``.
    """
    if not isinstance(description, str) or not description.strip():
        raise ValidationError("the target description is empty; give a task description")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValidationError(
            "the tokenizer has no chat template; set tokenizer.chat_template first"
        )
    if order not in PROMPT_ORDERS:
        raise ValidationError(f"order must be one of {list(PROMPT_ORDERS)}, got {order!r}")
    if residual and prior is None:
        raise ValidationError(
            "a residual answer is a change to the statistical prior, but no prior was given; "
            "pass prior=... (LMConfig(statistical_prior=True))"
        )
    _quiet_length_warning(tokenizer)
    names = param_names(kind, schema)
    fmt = answer_format(names, name=format_name, decimals=decimals, max_abs=max_abs)
    layout = _layout_text(schema, kind)
    pop = _population_block(population, fmt)
    prior_text = _prior_block(prior, fmt)
    ordered = sorted(neighbors, key=lambda nb: -float(nb.score))
    blocks = [_neighbor_block(i + 1, nb, fmt) for i, nb in enumerate(ordered)]
    limit = int(max_tokens) if max_tokens is not None else context_length(tokenizer)
    room = answer_room(
        names, tokenizer, decimals=decimals, max_abs=max_abs, format_name=format_name
    )
    budget = limit - room
    instruction = answer_instruction(fmt, residual)

    def render(shown: list[str]) -> list[dict[str, str]]:
        return _messages(
            _user_content(description, layout, shown, pop, prior_text, instruction, order)
        )

    base = _n_tokens(tokenizer, render([]))
    words = len(tokenizer.encode(description, add_special_tokens=False))
    if base > budget and 2 * words > budget:  # the description takes most of the room
        raise ValidationError(
            f"the description has {words} tokens, but the {limit}-token context leaves room "
            f"for {max(budget - (base - words), 0)} after the rest of the prompt "
            f"({base - words}) and the answer ({room}); shorten the description"
        )
    if base > budget:
        raise ValidationError(
            f"the prompt without neighbours needs {base} tokens (the description {words}), "
            f"but only {budget} of the "
            f"{limit}-token context are left after reserving {room} for the answer "
            f"({len(names)} parameters); use a model with a longer context or fewer features"
            + (
                ", or train it without the population model (LMConfig(population=False); "
                "ragim train sft --no-population)"
                if pop
                else ""
            )
            + (
                ", or train it without the statistical prior (LMConfig(statistical_prior=False); "
                "ragim train sft --no-statistical-prior)"
                if prior_text
                else ""
            )
        )
    # Estimate each block's cost once, then confirm the estimate on the rendered prompt.
    keep, used = 0, base
    for block in blocks:
        cost = len(tokenizer.encode("\n" + block, add_special_tokens=False)) + 2
        if used + cost > budget:
            break
        used += cost
        keep += 1
    while keep > 0 and _n_tokens(tokenizer, render(blocks[:keep])) > budget:
        keep -= 1
    messages = render(blocks[:keep])
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return messages, text, keep


def index_prompt(
    index,
    description: str,
    neighbors: Sequence[Any],
    tokenizer,
    config,
    *,
    exclude=None,
    max_tokens: int | None = None,
    prior: ModelParams | None = None,
) -> tuple[list[dict[str, str]], str, int, ModelParams | None]:
    """:func:`build_prompt` for a target of ``index`` with the LM generator's settings.

    ``config`` supplies ``decimals``, ``max_abs``, ``answer_format``, ``population`` and
    ``prompt_order`` (``"target-first"`` when it has none) and ``residual`` (False when it has
    none); with ``population`` on, the population model of the index less ``exclude`` (the same
    exclusion the neighbours were retrieved with) is shown; ``prior`` is passed on. Returns what
    :func:`build_prompt` returns, plus the population model shown (or None).
    """
    population = index.population_params(exclude) if getattr(config, "population", False) else None
    messages, text, kept = build_prompt(
        description,
        neighbors,
        index.schema,
        index.model,
        tokenizer,
        max_tokens=max_tokens,
        decimals=config.decimals,
        max_abs=config.max_abs,
        population=population,
        format_name=getattr(config, "answer_format", "json"),
        order=getattr(config, "prompt_order", "target-first"),
        prior=prior,
        residual=getattr(config, "residual", False),
    )
    return messages, text, kept, population


#: a neighbour's heading line in a prompt (:func:`_neighbor_block`)
_NEIGHBOUR_LINE = re.compile(r"^\d+\. .* \(similarity -?\d+\.\d{3}\)$", re.MULTILINE)


def prompt_layout_problems(messages: Any, kind: str, schema: FeatureSchema, config: Any) -> list:
    """How a chat prompt (``messages``, e.g. a preference pair's) differs from the layout a
    generator with ``config`` (an :class:`~ragim.generate.lm.LMConfig`) builds over ``kind`` and
    ``schema``: its system prompt, design terms, answer instruction (format and residual),
    statistical prior, population model, and at most ``config.k`` neighbours. Empty: the same.

    >>> from ragim import TaskIndex, datasets
    >>> from ragim.generate.lm import LMConfig
    >>> index = TaskIndex.build(datasets.synthetic_family(n_tasks=3, n_features=2, seed=0),
    ...                         embedder="hashing", progress=False)
    >>> prompt_layout_problems("Predict.", index.model, index.schema, LMConfig())[:2]
    ['another system prompt', 'other design terms']
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    system = [m.get("content", "") for m in messages if m.get("role") == "system"]
    user = "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
    fmt = answer_format(
        param_names(kind, schema),
        name=config.answer_format,
        decimals=config.decimals,
        max_abs=config.max_abs,
    )
    residual = bool(getattr(config, "residual", False))
    instruction = answer_instruction(fmt, residual)
    problems = []
    if system != [SYSTEM_PROMPT]:
        problems.append("another system prompt")
    if _layout_text(schema, kind) not in user:
        problems.append("other design terms")
    if not user.rstrip().endswith(instruction):
        problems.append(
            f"another answer instruction (this generator asks for {config.answer_format} "
            f"answers{', as changes from its prior' if residual else ''})"
        )
    shows_prior = PRIOR_HEAD in user
    if shows_prior != bool(config.statistical_prior):
        problems.append("a statistical prior" if shows_prior else "no statistical prior")
    shows_population = POPULATION_HEAD in user
    if shows_population != bool(getattr(config, "population", False)):
        problems.append("a population model" if shows_population else "no population model")
    n = len(_NEIGHBOUR_LINE.findall(user))
    if n > config.k:
        problems.append(f"{n} neighbours (this generator shows at most k={config.k})")
    return problems


def warn_if_neighbours_cut(
    asked: int,
    shown: Sequence[int],
    found: Sequence[int],
    limit: int,
    *,
    stacklevel: int | None = None,
) -> bool:
    """One :class:`~ragim.errors.DataWarning` when a prompt left out neighbours for room:
    ``shown[i]`` of the ``found[i]`` neighbours retrieved for prompt ``i`` (``k = asked``) fit
    its ``limit``-token context. Returns whether it warned. The warning points at
    ``stacklevel`` (default: the first line outside ragim, :func:`ragim.errors.user_stacklevel`).

    >>> warn_if_neighbours_cut(5, [5, 5], [5, 5], 2048)
    False
    """
    cut = [(s, f) for s, f in zip(shown, found, strict=True) if s < f]
    if not cut:
        return False
    fewest = min(s for s, _ in cut)
    warnings.warn(
        f"k={asked} neighbours asked, but only {fewest} fit the {limit}-token context "
        f"({len(cut)} of {len(shown)} prompt(s) cut), so fewer were shown; lower k to "
        f"{max(fewest, 1)}, or give prompts more room (max_prompt_tokens, or a base model with "
        "a longer context)",
        DataWarning,
        stacklevel=user_stacklevel() if stacklevel is None else stacklevel,
    )
    return True


__all__ = [
    "POPULATION_HEAD",
    "PRIOR_HEAD",
    "PROMPT_ORDERS",
    "RESIDUAL_INSTRUCTION",
    "SYSTEM_PROMPT",
    "answer_instruction",
    "answer_room",
    "answer_text",
    "build_prompt",
    "context_length",
    "index_prompt",
    "prompt_layout_problems",
    "schema_lines",
    "warn_if_neighbours_cut",
]
