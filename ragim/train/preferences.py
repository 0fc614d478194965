"""Preference pairs over generated models: from verifiable rewards, or from people.

A preference pair says "for this prompt, model A is better than model B". Pairs train a
reward model (:func:`ragim.train.train_reward_model`) or the generator directly
(:func:`ragim.train.train_dpo`). They come from two sources:

* **Verifiable rewards** (:func:`build_preference_pairs`). For every training task the
  generator samples ``n_candidates`` models from the task's leave-one-task-out prompt
  (the prompt of :func:`ragim.train.build_sft_dataset`: neighbours retrieved with the task
  and every task sharing its patients excluded). Each candidate is scored by a reward
  (default: :func:`ragim.rewards.held_out_log_likelihood`) on held-out rows of *that* task
  (``Task.split(heldout_fraction, seed=seed)``); the best and the worst candidate (or every
  pair, ``pairs="all"``) become a pair when their rewards differ by at least ``min_margin``.
* **People** (:func:`load_preferences`): a clinician's ranking of candidate models, as
  JSONL in the same shape (see ``docs/training.md``).

The dataset uses TRL's *explicit-prompt conversational* preference format, which both
``RewardTrainer`` and ``DPOTrainer`` (TRL 1.16) accept: ``prompt`` is the system and user
messages, ``chosen`` and ``rejected`` are one assistant message each, whose content is the
model's JSON (the generator's answer format). Extra columns: ``task_id``, ``margin``
(reward of chosen minus rejected), ``chosen_reward``, ``rejected_reward`` and
``neighbor_ids`` (the neighbours shown in the prompt).

Honesty note: the index stores parameters fitted on *all* rows of each task, and the SFT
generator imitates them; the held-out rows used for the reward were part of that fit. The
reward therefore measures fit to the task's own data, slightly optimistically for candidates
close to the stored fit. It never uses rows of a zero-shot target task.

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> from ragim.generate.lm import LMGenerator
>>> tasks = datasets.synthetic_family(n_tasks=6, n_features=2, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> gen = LMGenerator(base_model="tiny", k=2, device="cpu")
>>> pairs = build_preference_pairs(gen, index, n_candidates=3, max_tasks=2, progress=False)
>>> pairs.column_names[:5]
['prompt', 'chosen', 'rejected', 'task_id', 'margin']
"""

from __future__ import annotations

import json
import math
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragim.errors import GenerationError, ValidationError
from ragim.rewards import held_out_log_likelihood

#: columns every preference dataset has, in this order
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "task_id", "margin")
#: optional columns kept by save/load
OPTIONAL_COLUMNS = ("chosen_reward", "rejected_reward", "neighbor_ids")
_PAIRINGS = ("best_worst", "all")
_ROLES = ("system", "user", "assistant")


# --------------------------------------------------------------------------- model text
def _number_text(v: float) -> str:
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def model_text(values: Mapping[str, float]) -> str:
    """Canonical answer text of a name -> number mapping, in the mapping's order.

    Integral values are written without a decimal point, as the generator writes them.

    >>> model_text({"intercept": -1.0, "age": 0.5})
    '{"intercept": -1, "age": 0.5}'
    """
    return "{" + ", ".join(f"{json.dumps(str(k))}: {_number_text(v)}" for k, v in values.items()) + "}"


def _model_values(obj: Any) -> dict[str, float]:
    """Parse a model given as JSON text, a mapping or one assistant message; raises ValueError."""
    if isinstance(obj, list):
        if len(obj) != 1 or not isinstance(obj[0], Mapping):
            raise ValueError("as a message list it must hold exactly one assistant message")
        msg = obj[0]
        if msg.get("role") != "assistant" or not isinstance(msg.get("content"), str):
            raise ValueError('the message must be {"role": "assistant", "content": "<model JSON>"}')
        obj = msg["content"]
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the model JSON does not parse ({exc.msg} at character {exc.pos})") from None
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError("the model must be a non-empty JSON object of parameter name -> number")
    values = {}
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
            raise ValueError(f"parameter {k!r} has value {v!r}; every value must be a finite number")
        values[str(k)] = float(v)
    return values


def _prompt_messages(obj: Any) -> list[dict[str, str]]:
    """Normalise a prompt (text or messages) to a message list; raises ValueError."""
    if isinstance(obj, str):
        if not obj.strip():
            raise ValueError("the prompt is empty")
        return [{"role": "user", "content": obj}]
    if not isinstance(obj, list) or not obj:
        raise ValueError("the prompt must be text or a non-empty list of {role, content} messages")
    out = []
    for i, msg in enumerate(obj):
        if not isinstance(msg, Mapping) or msg.get("role") not in _ROLES or not isinstance(msg.get("content"), str):
            raise ValueError(f"prompt message {i} must be {{\"role\": one of {list(_ROLES)}, \"content\": text}}")
        out.append({"role": msg["role"], "content": msg["content"]})
    if out[-1]["role"] == "assistant":
        raise ValueError("the prompt's last message is from the assistant; the answer goes in chosen/rejected")
    return out


# --------------------------------------------------------------------------- pairs from rewards
def _check_int(name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValidationError(f"{name} must be an integer >= {lo}, got {v!r}")


def _empty_pairs():
    from datasets import Dataset, Features, List, Value

    msg = {"role": Value("string"), "content": Value("string")}
    return Dataset.from_dict({c: [] for c in (*PREFERENCE_COLUMNS, *OPTIONAL_COLUMNS)}, features=Features({
        "prompt": List(msg), "chosen": List(msg), "rejected": List(msg), "task_id": Value("string"),
        "margin": Value("float64"), "chosen_reward": Value("float64"), "rejected_reward": Value("float64"),
        "neighbor_ids": List(Value("string"))}))


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
    """Preference pairs of generated models, ranked by a verifiable reward (see the module docstring).

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
        A reward in TRL's signature, or a registry name of :data:`ragim.rewards.REWARDS`.
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
        The tasks to build pairs for (default: every indexed task).
    pairs : {"best_worst", "all"}
        One pair per task (best vs worst), or every pair of distinct candidates.

    Returns
    -------
    datasets.Dataset
        Columns ``prompt``, ``chosen``, ``rejected``, ``task_id``, ``margin``,
        ``chosen_reward``, ``rejected_reward``, ``neighbor_ids``; every row has
        ``chosen_reward - rejected_reward = margin >= min_margin``.
    """
    from datasets import Dataset
    from tqdm.auto import tqdm

    from ragim.index import leak_free
    from ragim.lm.prompts import answer_text
    from ragim.params import param_names
    from ragim.rewards import encode_heldout, resolve_reward
    from ragim.train.sft import build_sft_dataset

    _check_int("n_candidates", n_candidates, 2)
    if not (isinstance(min_margin, int | float) and math.isfinite(min_margin) and min_margin >= 0):
        raise ValidationError(f"min_margin must be a finite number >= 0, got {min_margin!r}")
    if not (isinstance(heldout_fraction, int | float) and 0 < heldout_fraction < 1):
        raise ValidationError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ValidationError(f"temperature must be > 0 (candidates must differ), got {temperature!r}")
    if pairs not in _PAIRINGS:
        raise ValidationError(f"pairs must be one of {list(_PAIRINGS)}, got {pairs!r}")
    if max_tasks is not None:
        _check_int("max_tasks", max_tasks, 1)
    reward_fn = resolve_reward(reward)
    if index.tasks is None:
        raise ValidationError("the index keeps no task rows; rebuild it with TaskIndex.build(..., keep_tasks=True) "
                              "so that rewards can be evaluated on held-out rows")
    ids = list(index.ids if task_ids is None else task_ids)
    unknown = [t for t in ids if t not in index or t not in index.tasks]
    if unknown:
        raise ValidationError(f"{len(unknown)} task id(s) are not in the index (with rows): {unknown[:5]}")
    if max_tasks is not None and max_tasks < len(ids):
        keep = set(np.random.default_rng(seed).choice(len(ids), max_tasks, replace=False).tolist())
        ids = [t for i, t in enumerate(ids) if i in keep]
    if not ids:
        raise ValidationError("no tasks to build preference pairs from")

    cfg = generator.config
    _, tok = generator.load_model()
    names = param_names(index.model, index.schema)
    prompts = build_sft_dataset(index, tok, cfg, task_ids=ids, max_tokens=generator.prompt_limit(names))
    rows: list[dict] = []
    for row in tqdm(prompts, total=len(prompts), desc="preference pairs", unit="task", disable=not progress):
        tid = row["task_id"]
        rec = index.record(tid)
        _, test = index.tasks[tid].split(heldout_fraction, seed=seed)
        if test.n_rows == 0:
            warnings.warn(f"task {tid!r} has no held-out rows at heldout_fraction={heldout_fraction}; skipped",
                          stacklevel=2)
            continue
        heldout = encode_heldout(index.model, index.schema, test.X, test.y)
        cands = generator.generate_candidates(rec["description"], index, exclude=leak_free(rec),
                                              num_candidates=n_candidates, temperature=temperature)
        shown = [p["task_id"] for p in cands[0].metadata["provenance"]]
        if shown != list(row["neighbor_ids"]):
            raise GenerationError(f"task {tid!r}: the generator retrieved {shown} but the training prompt shows "
                                  f"{list(row['neighbor_ids'])}; the generator and index disagree on retrieval")
        texts = list(dict.fromkeys(answer_text(p, cfg.decimals, max_abs=cfg.max_abs) for p in cands))
        n = len(texts)
        scores = reward_fn(prompts=[row["prompt"]] * n, completions=texts, param_names=[names] * n,
                           heldout=[heldout] * n, max_abs=[cfg.max_abs] * n)
        scored = [(float(s), t) for s, t in zip(scores, texts, strict=True) if s is not None and math.isfinite(s)]
        scored.sort(key=lambda st: -st[0])
        if len(scored) < 2:
            continue
        candidates = [(scored[0], scored[-1])] if pairs == "best_worst" else [
            (scored[i], scored[j]) for i in range(len(scored)) for j in range(i + 1, len(scored))]
        for (s_w, t_w), (s_l, t_l) in candidates:
            if s_w - s_l >= min_margin:
                rows.append({"prompt": row["prompt"], "chosen": [{"role": "assistant", "content": t_w}],
                             "rejected": [{"role": "assistant", "content": t_l}], "task_id": tid,
                             "margin": s_w - s_l, "chosen_reward": s_w, "rejected_reward": s_l,
                             "neighbor_ids": list(row["neighbor_ids"])})
    if not rows:
        warnings.warn(f"no candidate pair over {len(prompts)} task(s) differed by min_margin={min_margin}; "
                      "lower min_margin, raise temperature or n_candidates", UserWarning, stacklevel=2)
        return _empty_pairs()
    return Dataset.from_list(rows)


# --------------------------------------------------------------------------- human preferences (JSONL)
def _check_line(obj: Any) -> tuple[dict | None, list[str]]:
    if not isinstance(obj, Mapping):
        return None, [f"expected a JSON object, got {type(obj).__name__}"]
    problems = [f"missing field {f!r}" for f in ("prompt", "chosen", "rejected") if f not in obj]
    if problems:
        return None, problems
    out: dict[str, Any] = {}
    try:
        out["prompt"] = _prompt_messages(obj["prompt"])
    except ValueError as exc:
        problems.append(f"field 'prompt': {exc}")
    values = {}
    for side in ("chosen", "rejected"):
        try:
            values[side] = _model_values(obj[side])
            out[side] = [{"role": "assistant", "content": model_text(values[side])}]
        except ValueError as exc:
            problems.append(f"field {side!r}: {exc}")
    if len(values) == 2:
        if list(values["chosen"]) != list(values["rejected"]):
            problems.append(f"chosen and rejected have different parameters ({list(values['chosen'])} vs "
                            f"{list(values['rejected'])}); both must use the same names in the same order")
        elif values["chosen"] == values["rejected"]:
            problems.append("chosen and rejected are the same model; a preference needs two different models")
    tid = obj.get("task_id")
    if tid is not None and (not isinstance(tid, str) or not tid):
        problems.append(f"field 'task_id' must be a non-empty string, got {tid!r}")
    out["task_id"] = tid
    margin = obj.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float)
                               or not math.isfinite(margin) or margin < 0):
        problems.append(f"field 'margin' must be a finite number >= 0, got {margin!r}")
    out["margin"] = None if margin is None else float(margin)
    for f in ("chosen_reward", "rejected_reward"):
        v = obj.get(f)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)):
            problems.append(f"field {f!r} must be a finite number, got {v!r}")
        out[f] = None if v is None else float(v)
    nb = obj.get("neighbor_ids")
    if nb is not None and (not isinstance(nb, list) or not all(isinstance(s, str) for s in nb)):
        problems.append(f"field 'neighbor_ids' must be a list of task ids, got {nb!r}")
    out["neighbor_ids"] = nb
    return (None if problems else out), problems


def load_preferences(path: str | os.PathLike):
    """Read preference pairs (e.g. a clinician's rankings) from a JSONL file.

    Every line is one JSON object with ``prompt`` (text, or a list of ``{"role", "content"}``
    messages), ``chosen`` and ``rejected`` (each a model: JSON text, a JSON object of
    parameter -> number, or one assistant message whose content is that JSON), and optionally
    ``task_id``, ``margin`` (>= 0), ``chosen_reward``, ``rejected_reward`` and ``neighbor_ids``.
    Blank lines are skipped. Models are rewritten in the canonical answer text; a text prompt
    becomes one user message.

    Raises
    ------
    ValidationError
        Listing every bad line by number: invalid JSON, a missing field, an unparseable model
        JSON, different parameter names in chosen and rejected, ...

    Examples
    --------
    >>> import json, os, tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "prefs.jsonl")
    >>> line = {"prompt": "Predict stroke.", "chosen": {"intercept": -2, "age": 0.8},
    ...         "rejected": '{"intercept": 1, "age": -3}', "task_id": "stroke"}
    >>> _ = open(f, "w").write(json.dumps(line) + "\\n")
    >>> ds = load_preferences(f)
    >>> ds[0]["chosen"], ds[0]["prompt"][0]["role"]
    ([{'role': 'assistant', 'content': '{"intercept": -2, "age": 0.8}'}], 'user')
    """
    from datasets import Dataset

    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"preference file {str(p)!r} does not exist; give a .jsonl file with one pair per line")
    rows, problems = [], []
    with open(p, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: not valid JSON ({exc.msg} at character {exc.pos})")
                continue
            row, errs = _check_line(obj)
            problems.extend(f"line {lineno}: {e}" for e in errs)
            if row is not None:
                rows.append(row)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ValidationError(f"preference file {str(p)!r} has {len(problems)} problem(s) "
                              "(see docs/training.md for the format):", shown)
    if not rows:
        raise ValidationError(f"preference file {str(p)!r} holds no preference pairs")
    for col in OPTIONAL_COLUMNS:
        if all(r[col] is None for r in rows):
            for r in rows:
                del r[col]
    return Dataset.from_list(rows)


def _records(pairs) -> Iterable[Mapping[str, Any]]:
    if hasattr(pairs, "column_names"):
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in pairs.column_names]
        if missing:
            raise ValidationError(f"the preference dataset lacks column(s) {missing}")
        return iter(pairs)
    if isinstance(pairs, Sequence) and not isinstance(pairs, str):
        return iter(pairs)
    raise ValidationError(f"pairs must be a datasets.Dataset or a list of dicts, got {type(pairs).__name__}")


def check_pair_names(pairs, names: Sequence[str], *, where: str = "the preference pairs") -> None:
    """Raise unless every pair's chosen and rejected models use exactly ``names``, in order.

    Training on pairs written for another schema (parameters the index does not have, or
    in another order than the generator writes them) would teach the model a foreign
    answer; this check runs before any training step.

    Raises
    ------
    ValidationError
        Listing each offending pair (1-based) with its unknown and missing parameters.

    Examples
    --------
    >>> pairs = [{"prompt": "p", "chosen": {"intercept": 0, "bnp": 1}, "rejected": {"intercept": 1, "bnp": 0}}]
    >>> try:
    ...     check_pair_names(pairs, ["intercept", "x01"])
    ... except ValidationError as exc:
    ...     print(exc.problems[0])
    pair 1: unknown parameters ['bnp']; missing ['x01']
    """
    names = list(names)
    known = set(names)
    problems = []
    for i, r in enumerate(_records(pairs), start=1):
        found = []
        for side in ("chosen", "rejected"):
            try:
                keys = list(_model_values(r[side]))
            except (ValueError, KeyError) as exc:
                problems.append(f"pair {i}: {side} is not a model ({exc})")
                continue
            unknown = [k for k in keys if k not in known]
            missing = [n for n in names if n not in set(keys)]
            if unknown or missing:
                found.append(f"unknown parameters {unknown[:8]}; missing {missing[:8]}")
            elif keys != names:
                found.append("parameters in another order than the generator writes them "
                             f"(expected {names[:4]}...)")
        problems.extend(f"pair {i}: {m}" for m in dict.fromkeys(found))
        if len(problems) >= 20:
            break
    if problems:
        raise ValidationError(
            f"{where} do not match the parameter layout of the index/generator ({len(names)} parameters: "
            f"{names[:5]}{' ...' if len(names) > 5 else ''}); they were written for another schema:", problems)


def save_preferences(pairs, path: str | os.PathLike) -> Path:
    """Write preference pairs as JSONL in :func:`load_preferences`'s format (atomically).

    The columns ``prompt``, ``chosen``, ``rejected``, ``task_id``, ``margin`` and, when
    present, ``chosen_reward``, ``rejected_reward`` and ``neighbor_ids`` are written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, r in enumerate(_records(pairs)):
        rec = {k: r.get(k) for k in (*PREFERENCE_COLUMNS, *OPTIONAL_COLUMNS) if k in r}
        row, errs = _check_line(rec)
        if row is None:
            raise ValidationError(f"pair {i} cannot be saved:", errs)
        try:
            lines.append(json.dumps(rec, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"pair {i} is not JSON-safe ({exc})") from exc
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


__all__ = ["OPTIONAL_COLUMNS", "PREFERENCE_COLUMNS", "build_preference_pairs", "check_pair_names", "load_preferences",
           "model_text", "save_preferences"]
