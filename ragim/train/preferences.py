"""Preference pairs over generated models: from verifiable rewards, or from people.

A preference pair says "for this prompt, model A is better than model B". Pairs train a
reward model (:func:`ragim.train.train_reward_model`) or the generator directly
(:func:`ragim.train.train_dpo`). They come from two sources:

* **Verifiable rewards** (:func:`build_preference_pairs`). For every training task the
  generator samples ``n_candidates`` models from the task's leave-one-task-out prompt
  (the prompt of :func:`ragim.train.build_sft_dataset`: neighbours retrieved with the task
  and every task sharing its patients excluded). Each candidate is scored by a reward
  (default: :func:`ragim.train.rewards.held_out_log_likelihood`) on held-out rows of *that* task
  (``Task.split(heldout_fraction, seed=seed)``); the best and the worst candidate (or every
  pair, ``pairs="all"``) become a pair when their rewards differ by at least ``min_margin``.
* **People** (:func:`load_preferences`): a clinician's ranking of candidate models, as
  JSONL in the same shape (see ``docs/training.md``).

The dataset uses TRL's *explicit-prompt conversational* preference format, which both
``RewardTrainer`` and ``DPOTrainer`` (TRL 1.16) accept: ``prompt`` is the system and user
messages, ``chosen`` and ``rejected`` are one assistant message each, whose content is the
model as a JSON object (the pairs' own format, whatever the generator's answer codec; the
trainers write the answers in the generator's codec, :func:`ragim.lm.pairs.in_answer_format`,
so pairs from a compact-answer generator are saved, loaded and trained on alike). Extra columns:
``task_id``, ``margin`` (reward of chosen minus rejected), ``chosen_reward``,
``rejected_reward`` and ``neighbor_ids`` (the neighbours shown in the prompt). The file
format and its checks (:func:`load_preferences`, :func:`save_preferences`,
:func:`check_pair_names`) live in :mod:`ragim.lm.pairs` and are importable from here.

Honesty note: the index stores parameters fitted on *all* rows of each task, and an SFT
generator trained on them (``targets="fit"``, the default) imitates them; the held-out rows
used for the reward were part of that fit. The reward therefore measures fit to the task's own
data, slightly optimistically for candidates close to the stored fit. For a generator trained
with ``targets="posterior"``, no task's own SFT target used those rows when ``heldout_fraction``
and ``seed`` match its SFT run's (a :class:`~ragim.errors.DataWarning` says when they do not);
its prompts still showed other tasks' stored fits. It never uses rows of a zero-shot target
task.

Examples
--------
>>> from ragim import LMGenerator, TaskIndex, datasets
>>> tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> gen = LMGenerator(base_model="tiny", k=2, device="cpu")
>>> pairs = build_preference_pairs(gen, index, n_candidates=3, max_tasks=2, progress=False)
>>> pairs.column_names[:5], set(pairs["task_id"]) <= set(tasks.ids)
(['prompt', 'chosen', 'rejected', 'task_id', 'margin'], True)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ragim.checks import check_int, check_number, repeated
from ragim.errors import GenerationError, ValidationError, user_stacklevel
from ragim.lm.answer import model_text
from ragim.lm.pairs import (
    OPTIONAL_COLUMNS,
    PREFERENCE_COLUMNS,
    check_pair_names,
    empty_pairs,
    load_preferences,
    save_preferences,
)
from ragim.train.rewards import encode_heldout, held_out_log_likelihood, resolve_reward
from ragim.train.sft import (
    build_sft_dataset,
    excluding,
    hidden_for_validation,
    warn_if_rewards_overlap_targets,
)

_PAIRINGS = ("best_worst", "all")


# --------------------------------------------------------------------------- pairs from rewards
def build_preference_pairs(
    generator,
    index,
    *,
    n_candidates: int = 4,
    min_margin: float = 0.05,
    reward: str | Callable[..., list] = held_out_log_likelihood,
    heldout_fraction: float = 0.5,
    temperature: float = 0.8,
    seed: int = 0,
    max_tasks: int | None = None,
    progress: bool = True,
    task_ids: Sequence[str] | None = None,
    pairs: str = "best_worst",
):
    """Preference pairs of generated models, ranked by a verifiable reward (see the module
    docstring).

    Parameters
    ----------
    generator : LMGenerator
        Samples the candidates (usually the SFT'd generator); its config gives ``k``,
        ``decimals`` and ``max_abs``. Sampling is seeded by ``generator.config.seed``.
    index : TaskIndex
        The training tasks, built with ``keep_tasks=True`` (their rows give the held-out rows).
    n_candidates : int
        Models sampled per task (>= 2).
    min_margin : float
        Smallest reward difference that makes a pair (in the reward's units: nats per row for
        the log-likelihood).
    reward : callable or str
        A reward in TRL's signature, or a registry name of :data:`ragim.train.rewards.REWARDS`.
    heldout_fraction : float
        Share of each task's rows (stratified, ``Task.split``) the reward is evaluated on.
    temperature : float
        Sampling temperature of the candidates (> 0).
    seed : int
        Seed of the row split and of the task subset.
    max_tasks : int, optional
        Use a random subset of this many tasks.
    progress : bool
        Show a progress bar over tasks.
    task_ids : list of str, optional
        The tasks to build pairs for (default: every indexed task except the generator's
        validation tasks, ``val_task_ids_``, and the tasks sharing their patients
        (:func:`ragim.train.sft.hidden_for_validation`), which are also never shown as
        neighbours, so that its correction weight is still validated on unseen tasks).
    pairs : {"best_worst", "all"}
        One pair per task (best vs worst), or every pair of distinct candidates.

    Returns
    -------
    datasets.Dataset
        Columns ``prompt``, ``chosen``, ``rejected``, ``task_id``, ``margin``,
        ``chosen_reward``, ``rejected_reward``, ``neighbor_ids`` and, for a generator with
        residual answers (``LMConfig(residual=True)``), ``prior`` (the statistical prior its
        prompt shows, as a model JSON); every row has
        ``chosen_reward - rejected_reward = margin >= min_margin``.
    """
    from datasets import Dataset
    from tqdm.auto import tqdm

    from ragim.index import leak_free
    from ragim.params import param_names

    check_int(n_candidates, "n_candidates", ge=2)
    check_number(min_margin, "min_margin", ge=0)
    check_number(heldout_fraction, "heldout_fraction", gt=0, lt=1)
    check_number(temperature, "temperature", gt=0)  # > 0: the candidates must differ
    if pairs not in _PAIRINGS:
        raise ValidationError(f"pairs must be one of {list(_PAIRINGS)}, got {pairs!r}")
    check_int(max_tasks, "max_tasks", ge=1, allow_none=True)
    reward_fn = resolve_reward(reward)
    warn_if_rewards_overlap_targets(generator, heldout_fraction, seed, "build_preference_pairs")
    if index.tasks is None:
        raise ValidationError(
            "the index keeps no task rows; rebuild it with TaskIndex.build(..., keep_tasks=True) "
            "so that rewards can be evaluated on held-out rows"
        )
    val = {t for t in getattr(generator, "val_task_ids_", []) if t in index}
    unseen = set(hidden_for_validation(index, sorted(val)))  # and the tasks sharing patients
    if task_ids is None:  # the generator's validation tasks stay unseen (prior_correction_)
        ids = [t for t in index.ids if t not in unseen]
    else:
        ids = list(task_ids)
        twice = repeated(ids)
        if twice:
            raise ValidationError(
                f"task_ids names {len(twice)} task(s) more than once ({twice[:5]}); a task "
                "given twice would give its pairs twice"
            )
    unknown = [t for t in ids if t not in index or t not in index.tasks]
    if unknown:
        raise ValidationError(
            f"{len(unknown)} task id(s) are not in the index (with rows): {unknown[:5]}"
        )
    if max_tasks is not None and max_tasks < len(ids):
        keep = set(np.random.default_rng(seed).choice(len(ids), max_tasks, replace=False).tolist())
        ids = [t for i, t in enumerate(ids) if i in keep]
    if not ids:
        raise ValidationError("no tasks to build preference pairs from")

    cfg = generator.config
    _, tok = generator.load_model()
    names = param_names(index.model, index.schema)
    hidden = frozenset(unseen - set(ids))
    prompts = build_sft_dataset(
        index,
        tok,
        cfg,
        task_ids=ids,
        hide=hidden,  # never a neighbour, as in SFT
        max_tokens=generator.prompt_limit(names),
        prior_generator=generator.fitted_prior(index),  # the prior its candidates are shown
        warn_clipped=False,  # the prompts alone are used
    )
    rows: list[dict] = []
    for row in tqdm(
        prompts,
        total=len(prompts),
        desc="preference pairs",
        unit="task",
        disable=None if progress else True,
    ):
        tid = row["task_id"]
        rec = index.record(tid)
        _, test = index.tasks[tid].split(heldout_fraction, seed=seed)
        if test.n_rows == 0:
            warnings.warn(
                f"task {tid!r} has no held-out rows at "
                f"heldout_fraction={heldout_fraction}; skipped",
                stacklevel=user_stacklevel(),
            )
            continue
        heldout = encode_heldout(index.model, index.schema, test.X, test.y)
        excluded = excluding(leak_free(rec), hidden)  # as the prompt's neighbours were chosen
        cands = generator.generate_candidates(
            rec["description"],
            index,
            exclude=excluded,
            num_candidates=n_candidates,
            temperature=temperature,
        )
        shown = [p["task_id"] for p in cands[0].metadata["provenance"]]
        if shown != list(row["neighbor_ids"]):
            raise GenerationError(
                f"task {tid!r}: the generator retrieved {shown} but the training prompt shows "
                f"{list(row['neighbor_ids'])}; the generator and index disagree on retrieval"
            )
        fmt = generator.answer_format(names)
        texts = list(dict.fromkeys(fmt.write(p.as_dict()) for p in cands))
        n = len(texts)
        scores = reward_fn(
            prompts=[row["prompt"]] * n,
            completions=texts,
            param_names=[names] * n,
            heldout=[heldout] * n,
            max_abs=[cfg.max_abs] * n,
            answer_format=[cfg.answer_format] * n,
        )
        scored = [
            (float(s), t)
            for s, t in zip(scores, texts, strict=True)
            if s is not None and math.isfinite(s)
        ]
        scored.sort(key=lambda st: -st[0])
        if len(scored) < 2:
            continue
        candidates = (
            [(scored[0], scored[-1])]
            if pairs == "best_worst"
            else [
                (scored[i], scored[j])
                for i in range(len(scored))
                for j in range(i + 1, len(scored))
            ]
        )
        for (s_w, t_w), (s_l, t_l) in candidates:
            if s_w - s_l >= min_margin:
                rows.append(
                    {
                        "prompt": row["prompt"],
                        "chosen": [{"role": "assistant", "content": model_text(fmt.parse(t_w))}],
                        "rejected": [{"role": "assistant", "content": model_text(fmt.parse(t_l))}],
                        "task_id": tid,
                        "margin": s_w - s_l,
                        "chosen_reward": s_w,
                        "rejected_reward": s_l,
                        "neighbor_ids": list(row["neighbor_ids"]),
                        # a residual generator's prompt row keeps the prior its answers
                        # are changes from
                        **(
                            {"prior": model_text(dict(zip(names, row["prior"], strict=True)))}
                            if "prior" in row
                            else {}
                        ),
                    }
                )
    if not rows:
        warnings.warn(
            f"no candidate pair over {len(prompts)} task(s) differed by min_margin={min_margin}; "
            "lower min_margin, raise temperature or n_candidates",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        return empty_pairs()
    return Dataset.from_list(rows)


__all__ = [
    "OPTIONAL_COLUMNS",
    "PREFERENCE_COLUMNS",
    "build_preference_pairs",
    "check_pair_names",
    "load_preferences",
    "model_text",
    "save_preferences",
]
