"""Preference pairs as data: the columns, the JSONL file format and the checks.

A preference pair says "for this prompt, model A is better than model B". The dataset uses
TRL's *explicit-prompt conversational* preference format, which both ``RewardTrainer`` and
``DPOTrainer`` accept: ``prompt`` is the system and user messages, ``chosen`` and
``rejected`` are one assistant message each, whose content is the model's answer text
(:mod:`ragim.lm.answer`). Extra columns: ``task_id``, ``margin`` (reward of chosen minus
rejected), ``chosen_reward``, ``rejected_reward``, ``neighbor_ids`` (the neighbours shown
in the prompt) and ``prior`` (the statistical prior the prompt shows, as a model, for pairs of a
generator with residual answers: a reward model reads each answer as its change from it).

Pairs hold their models as JSON objects, whatever answer format a generator writes: that is
the file format, and what :func:`~ragim.train.build_preference_pairs` returns. A trainer
writes them in its generator's own format (:func:`in_answer_format`) before training, so a
generator with compact answers is trained, and its reward model scores, on compact answers.

This module reads, writes and checks pairs (:func:`load_preferences`,
:func:`save_preferences`, :func:`check_pair_names`, :func:`pair_rows`,
:func:`in_answer_format`); building pairs from
verifiable rewards is training (:func:`ragim.train.build_preference_pairs`), and the
reward model (:mod:`ragim.lm.reward_model`) scores them. See ``docs/training.md`` for the
file format.

Examples
--------
>>> pairs = [{"prompt": "Predict stroke.", "chosen": {"intercept": -2, "age": 0.8},
...           "rejected": {"intercept": 1, "age": -3}}]
>>> check_pair_names(pairs, ["intercept", "age"])
>>> pair_rows(pairs)[0]["prompt"]
'Predict stroke.'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ragim.errors import ValidationError, name_some, user_stacklevel
from ragim.io import write_file
from ragim.lm.answer import answer_values, model_text

#: columns every preference dataset has, in this order
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "task_id", "margin")
#: optional columns kept by save/load
OPTIONAL_COLUMNS = ("chosen_reward", "rejected_reward", "neighbor_ids", "prior")
_ROLES = ("system", "user", "assistant")


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
        if (
            not isinstance(msg, Mapping)
            or msg.get("role") not in _ROLES
            or not isinstance(msg.get("content"), str)
        ):
            raise ValueError(
                f'prompt message {i} must be {{"role": one of {list(_ROLES)}, "content": text}}'
            )
        out.append({"role": msg["role"], "content": msg["content"]})
    if out[-1]["role"] == "assistant":
        raise ValueError(
            "the prompt's last message is from the assistant; the answer goes in chosen/rejected"
        )
    return out


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
            values[side] = answer_values(obj[side])
            out[side] = [{"role": "assistant", "content": model_text(values[side])}]
        except ValueError as exc:
            problems.append(f"field {side!r}: {exc}")
    if len(values) == 2:
        if list(values["chosen"]) != list(values["rejected"]):
            problems.append(
                f"chosen and rejected have different parameters ({list(values['chosen'])} vs "
                f"{list(values['rejected'])}); both must use the same names in the same order"
            )
        elif values["chosen"] == values["rejected"]:
            problems.append(
                "chosen and rejected are the same model; a preference needs two different models"
            )
    tid = obj.get("task_id")
    if tid is not None and (not isinstance(tid, str) or not tid):
        problems.append(f"field 'task_id' must be a non-empty string, got {tid!r}")
    out["task_id"] = tid
    margin = obj.get("margin")
    if margin is not None and (
        isinstance(margin, bool)
        or not isinstance(margin, int | float)
        or not math.isfinite(margin)
        or margin < 0
    ):
        problems.append(f"field 'margin' must be a finite number >= 0, got {margin!r}")
    out["margin"] = None if margin is None else float(margin)
    for f in ("chosen_reward", "rejected_reward"):
        v = obj.get(f)
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
        ):
            problems.append(f"field {f!r} must be a finite number, got {v!r}")
        out[f] = None if v is None else float(v)
    nb = obj.get("neighbor_ids")
    if nb is not None and (not isinstance(nb, list) or not all(isinstance(s, str) for s in nb)):
        problems.append(f"field 'neighbor_ids' must be a list of task ids, got {nb!r}")
    out["neighbor_ids"] = nb
    prior = obj.get("prior")
    out["prior"] = None
    if prior is not None:
        try:
            prior_values = answer_values(prior)
            out["prior"] = model_text(prior_values)
        except ValueError as exc:
            problems.append(f"field 'prior': {exc}")
        else:
            if "chosen" in values and list(prior_values) != list(values["chosen"]):
                problems.append(
                    f"field 'prior' has other parameters than the answers "
                    f"({list(prior_values)[:4]} vs {list(values['chosen'])[:4]}); it must use the "
                    "same names in the same order"
                )
    return (None if problems else out), problems


def load_preferences(path: str | os.PathLike):
    """Read preference pairs (e.g. a clinician's rankings) from a JSONL file.

    Every line is one JSON object with ``prompt`` (text, or a list of ``{"role", "content"}``
    messages), ``chosen`` and ``rejected`` (each a model: JSON text, a JSON object of
    parameter -> number, or one assistant message whose content is that JSON), and optionally
    ``task_id``, ``margin`` (>= 0), ``chosen_reward``, ``rejected_reward``, ``neighbor_ids`` and
    ``prior`` (a model with the answers' names: the statistical prior the prompt shows).
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
        raise ValidationError(
            f"preference file {str(p)!r} does not exist; give a .jsonl file with one pair per line"
        )
    rows, problems, linenos = [], [], []
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
                linenos.append(lineno)
    if problems:
        shown = problems[:20] + (
            [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        raise ValidationError(
            f"preference file {str(p)!r} has {len(problems)} problem(s) "
            "(see docs/training.md for the format):",
            shown,
        )
    if not rows:
        raise ValidationError(f"preference file {str(p)!r} holds no preference pairs")
    clashes = contradicting_pairs(rows)
    if clashes:
        import warnings

        from ragim.errors import DataWarning

        shown = name_some((f"line {linenos[j]} reverses line {linenos[i]}" for i, j in clashes), 5)
        warnings.warn(
            f"preference file {str(p)!r}: {len(clashes)} pair(s) prefer the other answer of an "
            f"earlier pair with the same prompt ({shown}); "
            "their losses pull against each other, so training learns nothing from them: keep "
            "the ranking you mean, or keep both if annotators truly disagree",
            DataWarning,
            stacklevel=user_stacklevel(),
        )
    for col in OPTIONAL_COLUMNS:
        if all(r[col] is None for r in rows):
            for r in rows:
                del r[col]
    return Dataset.from_list(rows)


def contradicting_pairs(rows: Sequence[dict]) -> list[tuple[int, int]]:
    """The pairs that reverse an earlier one, as ``(earlier, later)`` 0-based positions: the
    same prompt, with the later pair's chosen answer the earlier one's rejected and the other
    way round (answers compared as their text).

    >>> contradicting_pairs([{"prompt": "p", "chosen": "a", "rejected": "b"},
    ...                      {"prompt": "p", "chosen": "b", "rejected": "a"},
    ...                      {"prompt": "q", "chosen": "b", "rejected": "a"}])
    [(0, 1)]
    """

    def text(x: Any) -> str:
        return json.dumps(x, sort_keys=True, default=str)

    first: dict[tuple[str, str, str], int] = {}
    out = []
    for j, r in enumerate(rows):
        key = (text(r["prompt"]), text(r["chosen"]), text(r["rejected"]))
        reverse = (key[0], key[2], key[1])
        if reverse in first:
            out.append((first[reverse], j))
        first.setdefault(key, j)
    return out


def _records(
    pairs, accepted: str = "a datasets.Dataset or a list of dicts"
) -> Iterable[Mapping[str, Any]]:
    if hasattr(pairs, "column_names"):
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in pairs.column_names]
        if missing:
            raise ValidationError(
                f"the preference dataset lacks column(s) {missing}; see build_preference_pairs"
            )
        return iter(pairs)
    if isinstance(pairs, Sequence) and not isinstance(pairs, str):
        return iter(pairs)
    raise ValidationError(f"pairs must be {accepted}, got {type(pairs).__name__}")


def check_pair_names(
    pairs, names: Sequence[str], *, where: str = "the preference pairs", answer_format=None
) -> None:
    """Raise unless every pair's chosen and rejected models use exactly ``names``, in order.

    Answers are JSON objects; with ``answer_format`` (a generator's codec), answers written in
    it (compact ones) are read too, and values outside its range are refused.

    Training on pairs written for another schema (parameters the index does not have, or
    in another order than the generator writes them) would teach the model a foreign
    answer; this check runs before any training step.

    Raises
    ------
    ValidationError
        Listing each problem once, with the pairs (1-based) that have it: the unknown and
        missing parameters of pairs written for another schema, and answers that are no model
        the generator writes (a value out of its range, text that does not parse).

    Examples
    --------
    >>> pairs = [{"prompt": "p", "chosen": {"intercept": 0, "bnp": 1},
    ...           "rejected": {"intercept": 1, "bnp": 0}}]
    >>> try:
    ...     check_pair_names(pairs * 3, ["intercept", "x01"])
    ... except ValidationError as exc:
    ...     print(exc.problems[0])
    pairs 1-3: unknown parameters ['bnp']; missing ['x01']
    """
    names = list(names)
    known = set(names)
    layout: dict[str, list[int]] = {}  # problem -> the pairs that have it
    values: dict[str, list[int]] = {}
    for i, r in enumerate(_records(pairs), start=1):
        for side in ("chosen", "rejected"):
            try:
                keys = list(answer_values(r[side], answer_format=answer_format))
            except (ValueError, KeyError) as exc:
                values.setdefault(f"{side} is not a model the generator writes ({exc})", []).append(
                    i
                )
                continue
            unknown = [k for k in keys if k not in known]
            missing = [n for n in names if n not in set(keys)]
            if unknown or missing:
                found = f"unknown parameters {unknown[:8]}; missing {missing[:8]}"
            elif keys != names:
                found = (
                    "parameters in another order than the generator writes them "
                    f"(expected {names[:4]}...)"
                )
            else:
                continue
            at = layout.setdefault(found, [])
            if not at or at[-1] != i:
                at.append(i)
        if len(layout) + len(values) >= 20:
            break
    if not (layout or values):
        return
    problems = [f"{_pair_numbers(at)}: {m}" for m, at in (layout | values).items()]
    if layout:
        head = (
            f"{where} do not match the parameter layout of the index/generator "
            f"({len(names)} parameters: {names[:5]}{' ...' if len(names) > 5 else ''}); "
            "they were written for another schema"
        )
        if values:
            head += ", and some answers are no model the generator writes"
    else:
        head = f"{where} hold answers that are no model the generator writes"
    raise ValidationError(head + ":", problems)


def _pair_numbers(numbers: Sequence[int]) -> str:
    """``pair 3`` or ``pairs 1-4, 7`` (runs of consecutive numbers as ranges)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs[:6])
    more = ", ..." if len(runs) > 6 else ""
    return f"pair {text}" if len(numbers) == 1 else f"pairs {text}{more}"


def check_pair_prompts(pairs, generator, *, where: str = "the preference pairs") -> None:
    """Raise unless every pair's prompt has the layout ``generator`` (an LM generator fitted on
    an index: ``model_kind_``, ``schema_`` and ``config``) builds
    (:func:`ragim.lm.prompts.prompt_layout_problems`): pairs sampled from a generator with
    another answer format, statistical prior, population model, residual answers or a larger
    ``k`` would train the policy on prompts it never sees. Runs before any training step."""
    from ragim.lm.prompts import prompt_layout_problems

    if getattr(generator, "schema_", None) is None:
        return
    bad, rows = [], list(_records(pairs))
    for i, r in enumerate(rows, start=1):
        found = prompt_layout_problems(
            r["prompt"], generator.model_kind_, generator.schema_, generator.config
        )
        if found:
            bad.append((i, found))
    if bad:
        i, found = bad[0]
        raise ValidationError(
            f"{where} were written for another prompt layout than this generator's: "
            f"{len(bad)} of {len(rows)} pair(s) differ (pair {i}: {', '.join(found)}); "
            "sample the pairs from this generator (build_preference_pairs), or train a "
            "generator with their settings"
        )


def save_preferences(pairs, path: str | os.PathLike) -> Path:
    """Write preference pairs as JSONL in :func:`load_preferences`'s format (atomically).

    The columns ``prompt``, ``chosen``, ``rejected``, ``task_id``, ``margin`` and, when
    present, ``chosen_reward``, ``rejected_reward``, ``neighbor_ids`` and ``prior`` are written.
    """
    p = Path(path)
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
    return write_file(p, "".join(line + "\n" for line in lines).encode("utf-8"))


def pair_rows(pairs) -> list[dict]:
    """Preference pairs as a list of dicts, from a ``datasets.Dataset``, a list of dicts or a
    JSONL path (:func:`load_preferences`); raises ValidationError when a pair lacks ``prompt``,
    ``chosen`` or ``rejected``.

    >>> pair_rows([{"prompt": "p", "chosen": "{}", "rejected": "{}", "task_id": "t"}])[0]["task_id"]
    't'
    """
    if isinstance(pairs, str | Path):
        pairs = load_preferences(pairs)
    rows = [dict(r) for r in _records(pairs, "a datasets.Dataset, a list of dicts or a JSONL path")]
    bad = [i for i, r in enumerate(rows) if not {"prompt", "chosen", "rejected"} <= set(r)]
    if bad:
        raise ValidationError(f"pairs {bad[:5]} lack 'prompt', 'chosen' or 'rejected'")
    return rows


def in_answer_format(pairs, answer_format, *, minus_prior: bool = False) -> list[dict]:
    """The pairs as dicts whose ``chosen`` and ``rejected`` answers are written in
    ``answer_format`` (a :class:`~ragim.lm.answer.AnswerFormat`, e.g. a generator's
    ``answer_format(param_names)``), the other columns unchanged.

    Values are read from JSON objects (the pairs' own format) or from text already in
    ``answer_format``, then written by it: rounded to its decimals, as the generator would
    write them. A value outside its range is refused, not clipped. With ``minus_prior`` each
    answer is written as its change from the pair's ``prior`` (answer minus prior, parameter
    by parameter): what a generator with residual answers (``LMConfig(residual=True)``) writes.

    Raises
    ------
    ValidationError
        Naming each pair (1-based) whose answer cannot be read, uses other parameters than
        the format's keys or a value outside its range, lacks the ``prior`` that
        ``minus_prior`` needs, or whose two answers become the same once written.

    >>> from ragim.lm.answer import answer_format
    >>> pairs = [{"prompt": "p", "chosen": {"intercept": -2, "age": 0.8},
    ...           "rejected": {"intercept": 1, "age": -3}}]
    >>> in_answer_format(pairs, answer_format(["intercept", "age"], name="compact"))[0]["chosen"]
    [{'role': 'assistant', 'content': '[-2, 0.8]'}]
    >>> pairs[0]["prior"] = {"intercept": -1.5, "age": 0.5}
    >>> fmt = answer_format(["intercept", "age"], name="compact")
    >>> in_answer_format(pairs, fmt, minus_prior=True)[0]["chosen"]
    [{'role': 'assistant', 'content': '[-0.5, 0.3]'}]
    """
    from ragim.lm.answer import check_answer_format

    fmt = check_answer_format(answer_format)
    out, problems = [], []
    for i, r in enumerate(pair_rows(pairs), start=1):
        row, found = dict(r), []
        prior = None
        if minus_prior and r.get("prior") is None:
            found.append(
                f"pair {i}: no 'prior' to write its answers as changes from (pairs of a "
                "generator with residual answers have one: build_preference_pairs)"
            )
        elif minus_prior:
            try:
                prior = answer_values(r["prior"])
            except ValueError as exc:
                found.append(f"pair {i}: prior: {exc}")
        for side in ("chosen", "rejected"):
            if minus_prior and prior is None:
                break
            try:
                values = answer_values(r[side], answer_format=fmt)
                if prior is not None:
                    if list(prior) != list(values):
                        raise ValueError(
                            f"the prior's parameters {list(prior)[:4]} are not the answer's "
                            f"{list(values)[:4]}"
                        )
                    values = {k: v - prior[k] for k, v in values.items()}
                row[side] = [{"role": "assistant", "content": fmt.write(values)}]
            except ValidationError as exc:  # fmt.write: keys that are not the format's
                found.append(f"pair {i}: {side}: {'; '.join(exc.problems) or exc}")
            except ValueError as exc:
                found.append(f"pair {i}: {side}: {exc}")
        if not found and row["chosen"] == row["rejected"]:
            places = "decimal place" if fmt.decimals == 1 else "decimal places"
            found.append(
                f"pair {i}: chosen and rejected are the same model once written in the "
                f"{fmt.name!r} format ({fmt.decimals} {places})"
            )
        problems += found
        out.append(row)
        if len(problems) >= 20:
            break
    if problems:
        raise ValidationError(
            f"the pairs cannot be written in the {fmt.name!r} answer format:", problems
        )
    return out


def pairs_dataset(rows: list[dict]):
    """A ``datasets.Dataset`` of the ``prompt``, ``chosen`` and ``rejected`` columns of ``rows``
    (what TRL's ``RewardTrainer`` and ``DPOTrainer`` train on)."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    )


def empty_pairs():
    """An empty preference dataset with every column and its type."""
    from datasets import Dataset, Features, List, Value

    msg = {"role": Value("string"), "content": Value("string")}
    return Dataset.from_dict(
        {c: [] for c in (*PREFERENCE_COLUMNS, *OPTIONAL_COLUMNS)},
        features=Features(
            {
                "prompt": List(msg),
                "chosen": List(msg),
                "rejected": List(msg),
                "task_id": Value("string"),
                "margin": Value("float64"),
                "chosen_reward": Value("float64"),
                "rejected_reward": Value("float64"),
                "neighbor_ids": List(Value("string")),
                "prior": Value("string"),
            }
        ),
    )


__all__ = [
    "OPTIONAL_COLUMNS",
    "PREFERENCE_COLUMNS",
    "check_pair_names",
    "check_pair_prompts",
    "contradicting_pairs",
    "empty_pairs",
    "in_answer_format",
    "load_preferences",
    "pair_rows",
    "pairs_dataset",
    "save_preferences",
]
