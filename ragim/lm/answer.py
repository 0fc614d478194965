"""The answer format of the LM generator: one codec that writes, reads and constrains answers.

An answer gives the parameters of one model over fixed keys (``param_names(kind, schema)``)
in a fixed order. Everything that writes or reads answers goes through this module:
prompts (the neighbours' parameters and the SFT target), constrained decoding (what the
model may emit), preference pairs and the verifiable rewards.

* :class:`AnswerFormat` is the codec: :meth:`~AnswerFormat.write` (canonical text: values
  clipped to ``[-max_abs, max_abs]``, rounded to ``decimals`` places, trailing zeros
  dropped), :meth:`~AnswerFormat.parse` (strict: a :class:`~ragim.errors.GenerationError`
  that names the problem), :meth:`~AnswerFormat.grammar` (what constrained decoding may
  emit) and :attr:`~AnswerFormat.instruction` (how the prompt asks for it).
* :class:`AnswerGrammar` is the constraint as data: literal pieces with one bounded decimal
  between consecutive pieces. The decoder of :mod:`ragim.lm.constrained` compiles it to a
  regex for the llguidance grammar engine.
* :class:`JSONAnswerFormat` (``"json"``, the default) writes
  ``{"intercept": -1.2, "age": 0.5}``; :class:`CompactAnswerFormat` (``"compact"``) writes
  the values alone in key order, ``[-1.2, 0.5]``, for wide schemas. Formats are registered in
  :data:`ANSWER_FORMATS` by name; :func:`answer_format` builds one.

Lenient readers for data written by people or other tools: :func:`completion_text` (the
text of a TRL completion) and :func:`answer_values` (a model given as JSON text, a mapping
or one assistant message, any keys); :func:`model_text` writes such a model losslessly.

Examples
--------
>>> fmt = answer_format(["intercept", "age"], decimals=2)
>>> text = fmt.write({"intercept": -0.1234, "age": 2})
>>> text
'{"intercept": -0.12, "age": 2}'
>>> fmt.parse(text)
{'intercept': -0.12, 'age': 2.0}
>>> fmt.grammar().pieces
('{"intercept":', ', "age":', '}')
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ragim.checks import check_int, check_number
from ragim.errors import GenerationError, ValidationError

#: the most integer digits a number in an answer can have (so ``max_abs`` < 1000)
MAX_INT_DIGITS = 3
#: the most decimal places a number in an answer can have
MAX_DECIMALS = 3
#: the constrained decoders of :mod:`ragim.lm.constrained` (``LMConfig.decoder``)
DECODERS = ("llguidance", "builtin")


@dataclass(frozen=True)
class AnswerGrammar:
    """What constrained decoding may emit, as data.

    The text is ``pieces[0] + value_prefix + n_0 + pieces[1] + value_prefix + n_1 + ... +
    pieces[-1]``: the pieces are forced literally, and each ``n_i`` is a decimal matching
    ``-?(0|[1-9][0-9]{0,max_int_digits-1})(\\.[0-9]{1,max_frac_digits})?`` with
    ``|n_i| <= max_abs``. Value ``i`` belongs to ``keys[i]``.

    Attributes
    ----------
    keys : the parameter names, in answer order (``len(pieces) == len(keys) + 1``).
    pieces : the literal text before each value, then the closing text.
    value_prefix : text that starts every value slot (a space after ``":"`` in JSON).
    max_abs, max_int_digits, max_frac_digits : the bounds of every number.

    Examples
    --------
    >>> g = answer_format(["a", "b"]).grammar()
    >>> g.render(["1.5", "-2"])
    '{"a": 1.5, "b": -2}'
    """

    keys: tuple[str, ...]
    pieces: tuple[str, ...]
    value_prefix: str = " "
    max_abs: float = 20.0
    max_int_digits: int = MAX_INT_DIGITS
    max_frac_digits: int = MAX_DECIMALS

    def render(self, numbers: Sequence[str]) -> str:
        """The answer text with these number strings in the value slots."""
        if len(numbers) != len(self.keys):
            raise ValidationError(
                f"the grammar has {len(self.keys)} value slots, got {len(numbers)} numbers"
            )
        body = "".join(
            p + self.value_prefix + n for p, n in zip(self.pieces, numbers, strict=False)
        )
        return body + self.pieces[-1] if self.keys else self.pieces[0]


# --------------------------------------------------------------------------- argument checks
def _repeated(keys: Sequence[str]) -> list[str]:
    """The keys that occur more than once, each once, in the order they first repeat."""
    seen, dups = set(), []
    for k in keys:
        if k in seen and k not in dups:
            dups.append(k)
        seen.add(k)
    return dups


def check_keys(keys: Any) -> list[str]:
    """``keys`` as a list after checking they are unique strings; raises ValidationError.

    >>> check_keys(("intercept", "age"))
    ['intercept', 'age']
    """
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise ValidationError(f"keys must be a list of strings, got {type(keys).__name__}")
    keys = list(keys)
    bad = [k for k in keys if not isinstance(k, str)]
    if bad:
        raise ValidationError("keys must be strings", [f"{k!r} is {type(k).__name__}" for k in bad])
    dups = _repeated(keys)
    if dups:
        raise ValidationError("keys must be unique", [f"duplicate key {k!r}" for k in dups])
    return keys


def check_max_abs(max_abs: Any) -> float:
    """``max_abs`` as a float, checked to be a positive finite number (ValidationError)."""
    return check_number(max_abs, "max_abs", gt=0)


# --------------------------------------------------------------------------- numbers
def number_text(v: float, decimals: int | None = None) -> str:
    """A number as answer text: rounded to ``decimals`` places with trailing zeros dropped
    (``1.50`` -> ``1.5``, ``2.0`` -> ``2``, ``-0`` -> ``0``); with ``decimals=None`` exact
    (integral values without a decimal point, others as Python's shortest ``repr``).

    >>> number_text(-0.0004, 3), number_text(1.25, 1), number_text(2.0), number_text(0.1)
    ('0', '1.2', '2', '0.1')
    """
    if decimals is None:
        if float(v).is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(float(v))
    s = f"{v:.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s


def key_text(key: str) -> str:
    """A key as JSON text (non-ASCII characters kept as they are)."""
    return json.dumps(key, ensure_ascii=False)


def _skeleton(keys: Sequence[str]) -> list[str]:
    """Forced JSON pieces: piece[i] precedes value i; the last piece closes the object."""
    if not keys:
        return ["{}"]
    pieces = [("{" if i == 0 else ", ") + key_text(k) + ":" for i, k in enumerate(keys)]
    return pieces + ["}"]


class _Pairs(list):
    """A decoded JSON object as its ordered (key, value) pairs."""


# --------------------------------------------------------------------------- codecs
class AnswerFormat(ABC):
    """An answer codec over fixed keys (base class; see the module docstring).

    Parameters
    ----------
    keys : the parameter names in answer order (unique strings).
    decimals : decimal places of written (and decoded) numbers, 0-3.
    max_abs : the largest |value| written, decoded or accepted.

    Subclasses set :attr:`name` and implement :meth:`grammar`, :meth:`parse` and
    :attr:`instruction`; :meth:`write` follows from the grammar.
    """

    name: ClassVar[str] = ""

    def __init__(self, keys: Sequence[str], *, decimals: int = 3, max_abs: float = 20.0):
        self.keys = tuple(check_keys(keys))
        self.decimals = check_int(decimals, "decimals", ge=0, le=MAX_DECIMALS)
        self.max_abs = check_max_abs(max_abs)

    # ------------------------------------------------------------------ writing
    @abstractmethod
    def grammar(self, *, max_int_digits: int = MAX_INT_DIGITS) -> AnswerGrammar:
        """The constraint that decoding must follow (every written answer satisfies it)."""

    def _grammar(
        self, pieces: Sequence[str], value_prefix: str, max_int_digits: int
    ) -> AnswerGrammar:
        """An :class:`AnswerGrammar` over this format's keys, range and decimals with the given
        literal ``pieces`` and ``value_prefix`` (what a subclass's :meth:`grammar` returns)."""
        return AnswerGrammar(
            keys=self.keys,
            pieces=tuple(pieces),
            value_prefix=value_prefix,
            max_abs=self.max_abs,
            max_int_digits=max_int_digits,
            max_frac_digits=self.decimals,
        )

    def number(self, v: float) -> str:
        """One value as it is written: clipped to ``[-max_abs, max_abs]`` and rounded to
        ``decimals`` places, never rounded beyond ``max_abs``."""
        v = min(max(v, -self.max_abs), self.max_abs)
        s = number_text(v, self.decimals)
        if abs(float(s)) > self.max_abs:  # rounding pushed it past a non-round bound
            s = number_text(
                math.copysign(math.floor(self.max_abs * 10**self.decimals) / 10**self.decimals, v),
                self.decimals,
            )
        return s

    def write(self, values: Mapping[str, float]) -> str:
        """The canonical answer for ``values`` (every key, no other), e.g. the SFT target.

        The text is one the constrained decoder can emit, so ``parse(write(v))`` returns the
        clipped, rounded values.

        Raises
        ------
        ValidationError
            Listing missing and unexpected keys and values that are not finite numbers.
        """
        if self.max_abs >= 10**MAX_INT_DIGITS:
            raise ValidationError(
                f"max_abs must be below {10**MAX_INT_DIGITS} ({MAX_INT_DIGITS} integer digits), "
                f"got {self.max_abs:g}"
            )
        if not isinstance(values, Mapping):
            raise ValidationError(f"values must be a mapping, got {type(values).__name__}")
        problems = [f"missing value for key {k!r}" for k in self.keys if k not in values]
        problems += [f"unexpected key {k!r}" for k in values if k not in set(self.keys)]
        numbers = []
        for k in self.keys:
            if k not in values:
                continue
            try:
                v = float(values[k])
            except (TypeError, ValueError):
                problems.append(f"value for key {k!r} is not a number: {values[k]!r}")
                continue
            if not math.isfinite(v):
                problems.append(f"value for key {k!r} is not finite: {v}")
                continue
            numbers.append(self.number(v))
        if problems:
            raise ValidationError("cannot format the answer", problems)
        return self.grammar().render(numbers)

    # ------------------------------------------------------------------ reading
    @abstractmethod
    def parse(self, text: str) -> dict[str, float]:
        """The values of an answer, keys in order; raises :class:`~ragim.errors.GenerationError`."""

    def parse_or_none(self, text: Any) -> dict[str, float] | None:
        """:meth:`parse`, or None when ``text`` is not a valid answer (never raises for it)."""
        if not isinstance(text, str):
            return None
        try:
            return self.parse(text)
        except GenerationError:
            return None

    # ------------------------------------------------------------------ prompting
    @property
    @abstractmethod
    def instruction(self) -> str:
        """The prompt's last sentence: how to write the answer."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.keys)} keys, decimals={self.decimals}, "
            f"max_abs={self.max_abs:g})"
        )


class JSONAnswerFormat(AnswerFormat):
    """One JSON object, keys in order: ``{"k1": v1, "k2": v2}`` (``", "`` between items,
    ``": "`` after each key).

    Examples
    --------
    >>> fmt = JSONAnswerFormat(["x", "y"])
    >>> fmt.parse('{"x": 25, "y": 0}')
    Traceback (most recent call last):
    ...
    ragim.errors.GenerationError: invalid answer: value for key 'x' is 25.0, outside [-20, 20]
    """

    name = "json"

    def grammar(self, *, max_int_digits: int = MAX_INT_DIGITS) -> AnswerGrammar:
        return self._grammar(_skeleton(self.keys), " ", max_int_digits)

    @property
    def instruction(self) -> str:
        return (
            "Answer with the target task's parameters as one JSON object, with every key above "
            '("intercept" first, then the terms in the order listed).'
        )

    def parse(self, text: str) -> dict[str, float]:
        """Strictly parse an answer: exact keys in order, finite numbers within range.

        Raises
        ------
        GenerationError
            Naming the problem: invalid JSON (with its position), not an object, missing /
            extra / duplicated / reordered keys, non-numeric, non-finite or out-of-range
            values (with key and value).
        """
        if not isinstance(text, str):
            raise GenerationError(f"invalid answer: expected text, got {type(text).__name__}")
        keys, max_abs = list(self.keys), self.max_abs
        dups: list[str] = []

        def pairs_hook(pairs):
            dups.extend(_repeated([k for k, _ in pairs]))
            return _Pairs(pairs)

        try:
            # a 5000-digit integer becomes inf (rejected below by name) instead of tripping
            # Python's int digit limit
            obj = json.loads(
                text,
                object_pairs_hook=pairs_hook,
                parse_constant=lambda c: float(c),
                parse_int=lambda d: int(d) if len(d) <= 300 else float(d),
            )
        except json.JSONDecodeError as exc:
            snippet = text[max(0, exc.pos - 20) : exc.pos + 20]
            raise GenerationError(
                f"invalid answer: not valid JSON ({exc.msg} at line {exc.lineno} column "
                f"{exc.colno}, char {exc.pos}, near {snippet!r})"
            ) from None
        except RecursionError:
            raise GenerationError("invalid answer: not valid JSON (nested too deeply)") from None
        if not isinstance(obj, _Pairs):
            kind = "array" if isinstance(obj, list) else type(obj).__name__
            raise GenerationError(f"invalid answer: expected a JSON object, got {kind}")
        got_keys = [k for k, _ in obj]
        problems: list[str] = []
        if dups:
            problems.append("duplicated keys: " + ", ".join(repr(k) for k in dict.fromkeys(dups)))
        key_set, got_set = set(keys), set(got_keys)
        missing = [k for k in keys if k not in got_set]
        extra = [k for k in dict.fromkeys(got_keys) if k not in key_set]
        if missing:
            problems.append("missing keys: " + ", ".join(repr(k) for k in missing))
        if extra:
            problems.append("extra keys: " + ", ".join(repr(k) for k in extra))
        if not problems and got_keys != keys:
            problems.append("keys out of order: expected " + ", ".join(repr(k) for k in keys))
        out: dict[str, float] = {}
        for k, v in obj:
            if k not in key_set:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                kind = "object" if isinstance(v, _Pairs) else type(v).__name__
                problems.append(f"value for key {k!r} is not a number but {kind}")
                continue
            fv = float(v)
            if not math.isfinite(fv):
                problems.append(f"value for key {k!r} is not finite: {fv}")
                continue
            if abs(fv) > max_abs:
                problems.append(f"value for key {k!r} is {fv}, outside [-{max_abs:g}, {max_abs:g}]")
                continue
            out[k] = fv
        if problems:
            raise GenerationError("invalid answer: " + "; ".join(problems))
        return {k: out[k] for k in keys}


class CompactAnswerFormat(AnswerFormat):
    """The values alone, in key order, as one JSON array: ``[v1, v2, v3]`` (``", "`` between
    values). The keys are named once, in the prompt's parameter layout, so a wide schema's
    answer is a few tokens per value instead of a key and a value.

    Examples
    --------
    >>> fmt = CompactAnswerFormat(["intercept", "age"], decimals=1)
    >>> fmt.write({"intercept": -1.25, "age": 0.5})
    '[-1.2, 0.5]'
    >>> fmt.parse("[-1.2, 0.5]")
    {'intercept': -1.2, 'age': 0.5}
    >>> fmt.parse("[1]")
    Traceback (most recent call last):
    ...
    ragim.errors.GenerationError: invalid answer: expected 2 values (one per key), got 1
    """

    name = "compact"

    def grammar(self, *, max_int_digits: int = MAX_INT_DIGITS) -> AnswerGrammar:
        n = len(self.keys)
        pieces = ("[]",) if n == 0 else ("[",) + (", ",) * (n - 1) + ("]",)
        return self._grammar(pieces, "", max_int_digits)

    @property
    def instruction(self) -> str:
        return (
            "Answer with the target task's parameters as one JSON array of numbers, one per "
            "parameter, without the names, in this order: " + ", ".join(self.keys) + "."
        )

    def parse(self, text: str) -> dict[str, float]:
        """Strictly parse an answer: a JSON array of exactly one finite in-range number per key.

        Raises
        ------
        GenerationError
            Naming the problem: invalid JSON, not an array, the wrong count, a value that is
            not a finite number within range (with its key).
        """
        if not isinstance(text, str):
            raise GenerationError(f"invalid answer: expected text, got {type(text).__name__}")
        try:
            obj = json.loads(
                text,
                parse_constant=lambda c: float(c),
                parse_int=lambda d: int(d) if len(d) <= 300 else float(d),
            )
        except json.JSONDecodeError as exc:
            raise GenerationError(
                f"invalid answer: not valid JSON ({exc.msg} at char {exc.pos})"
            ) from None
        except RecursionError:
            raise GenerationError("invalid answer: not valid JSON (nested too deeply)") from None
        if not isinstance(obj, list):
            raise GenerationError(
                f"invalid answer: expected a JSON array, got {type(obj).__name__}"
            )
        if len(obj) != len(self.keys):
            raise GenerationError(
                f"invalid answer: expected {len(self.keys)} values (one per key), got {len(obj)}"
            )
        problems, out = [], {}
        for k, v in zip(self.keys, obj, strict=True):
            if isinstance(v, bool) or not isinstance(v, int | float):
                problems.append(f"value for key {k!r} is not a number but {type(v).__name__}")
            elif not math.isfinite(float(v)):
                problems.append(f"value for key {k!r} is not finite: {float(v)}")
            elif abs(float(v)) > self.max_abs:
                problems.append(
                    f"value for key {k!r} is {float(v)}, outside "
                    f"[-{self.max_abs:g}, {self.max_abs:g}]"
                )
            else:
                out[k] = float(v)
        if problems:
            raise GenerationError("invalid answer: " + "; ".join(problems))
        return out


#: answer formats by name (``LMConfig`` and the trainers choose one by name)
ANSWER_FORMATS: dict[str, type[AnswerFormat]] = {
    "json": JSONAnswerFormat,
    "compact": CompactAnswerFormat,
}


def answer_format(
    keys: Sequence[str], *, name: str = "json", decimals: int = 3, max_abs: float = 20.0
) -> AnswerFormat:
    """The codec called ``name`` (a key of :data:`ANSWER_FORMATS`) over ``keys``.

    >>> answer_format(["intercept"], max_abs=5).write({"intercept": -7})
    '{"intercept": -5}'
    """
    cls = ANSWER_FORMATS.get(name)
    if cls is None:
        raise ValidationError(
            f"unknown answer format {name!r}; use one of {sorted(ANSWER_FORMATS)}"
        )
    return cls(keys, decimals=decimals, max_abs=max_abs)


def check_answer_format(fmt: Any) -> AnswerFormat:
    """``fmt`` after checking it is an :class:`AnswerFormat` (the argument of the decoders).

    Raises
    ------
    ValidationError
        Naming the type that was given instead.

    >>> check_answer_format("json")
    Traceback (most recent call last):
    ...
    ragim.errors.ValidationError: answer_format must be an AnswerFormat (ragim.lm.answer), got str
    """
    if not isinstance(fmt, AnswerFormat):
        raise ValidationError(
            f"answer_format must be an AnswerFormat (ragim.lm.answer), got {type(fmt).__name__}"
        )
    return fmt


# --------------------------------------------------------------------------- JSON functions
def format_json_numbers(
    values: Mapping[str, float], keys: Sequence[str], decimals: int = 3, *, max_abs: float = 20.0
) -> str:
    """The canonical JSON answer for ``values``: :meth:`JSONAnswerFormat.write`.

    Values are clipped to ``[-max_abs, max_abs]`` and rounded to ``decimals`` places;
    trailing zeros are dropped (``1.50`` -> ``1.5``, ``2.0`` -> ``2``). The text is exactly
    what :func:`~ragim.lm.constrained.generate_json_numbers` can emit, so
    ``parse_json_numbers(format_json_numbers(v, keys), keys)`` returns the clipped, rounded
    values.

    Examples
    --------
    >>> format_json_numbers({"b": 30, "a[1]": -0.0004}, ["a[1]", "b"])
    '{"a[1]": 0, "b": 20}'
    """
    return JSONAnswerFormat(keys, decimals=decimals, max_abs=max_abs).write(values)


def parse_json_numbers(
    text: str, keys: Sequence[str], *, max_abs: float = 20.0
) -> dict[str, float]:
    """Strictly parse a JSON answer: :meth:`JSONAnswerFormat.parse`.

    Raises
    ------
    GenerationError
        Naming the problem (invalid JSON with its position, wrong keys, bad values).

    Examples
    --------
    >>> parse_json_numbers('{"x": 1.5, "y": -2}', ["x", "y"])
    {'x': 1.5, 'y': -2.0}
    >>> parse_json_numbers('{"x": 25}', ["x"])
    Traceback (most recent call last):
    ...
    ragim.errors.GenerationError: invalid answer: value for key 'x' is 25.0, outside [-20, 20]
    """
    return JSONAnswerFormat(keys, max_abs=max_abs).parse(text)


# --------------------------------------------------------------------------- lenient readers
def completion_text(completion: Any) -> str | None:
    """The text of one completion: a string, or the last message of a conversation.

    >>> completion_text([{"role": "assistant", "content": '{"x": 1}'}])
    '{"x": 1}'
    >>> completion_text(None) is None
    True
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence) and completion:
        last = completion[-1]
        content = last.get("content") if isinstance(last, Mapping) else None
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):  # multimodal parts: [{"type": "text", "text": ...}]
            texts = [
                p.get("text")
                for p in content
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            ]
            return "".join(texts) if texts else None
    return None


def answer_values(obj: Any, *, answer_format: AnswerFormat | None = None) -> dict[str, float]:
    """A model given as JSON text, a name -> number mapping or one assistant message, as a
    dict in its own key order (any keys, each once; values must be finite numbers).

    With ``answer_format``, text in that format is read too (a compact answer's values have
    their names only there), and every value must lie within its range.

    Raises
    ------
    ValueError
        Saying what is wrong (a caller adds where: a file line, a pair number).
    ValidationError
        If ``answer_format`` is not an :class:`AnswerFormat`.

    >>> answer_values([{"role": "assistant", "content": '{"intercept": -1, "age": 0.5}'}])
    {'intercept': -1.0, 'age': 0.5}
    """
    if answer_format is not None:
        check_answer_format(answer_format)
    if isinstance(obj, list):
        if obj and all(isinstance(v, int | float) and not isinstance(v, bool) for v in obj):
            raise ValueError(_NAMELESS)
        if len(obj) != 1 or not isinstance(obj[0], Mapping):
            raise ValueError("as a message list it must hold exactly one assistant message")
        msg = obj[0]
        if msg.get("role") != "assistant" or not isinstance(msg.get("content"), str):
            raise ValueError('the message must be {"role": "assistant", "content": "<model JSON>"}')
        obj = msg["content"]
    if isinstance(obj, str) and answer_format is not None and not obj.lstrip().startswith("{"):
        try:
            return answer_format.parse(obj)
        except GenerationError as exc:
            raise ValueError(f"not a {answer_format.name} answer: {exc}") from None
    if isinstance(obj, str):
        try:
            obj = json.loads(obj, object_pairs_hook=_Pairs)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"the model JSON does not parse ({exc.msg} at character {exc.pos})"
            ) from None
        if isinstance(obj, list) and not isinstance(obj, _Pairs):
            raise ValueError(_NAMELESS)
        if isinstance(obj, _Pairs):
            twice = _repeated([k for k, _ in obj])
            if twice:
                raise ValueError(f"parameter(s) {twice} are given more than once")
            obj = dict(obj)
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError("the model must be a non-empty JSON object of parameter name -> number")
    values = {}
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
            raise ValueError(
                f"parameter {k!r} has value {v!r}; every value must be a finite number"
            )
        if answer_format is not None and abs(float(v)) > answer_format.max_abs:
            raise ValueError(
                f"parameter {k!r} is {float(v):g}, outside [-{answer_format.max_abs:g}, "
                f"{answer_format.max_abs:g}], the range the generator writes"
            )
        values[str(k)] = float(v)
    return values


_NAMELESS = (
    "a list of values has no parameter names (a compact answer); pairs and models are JSON "
    "objects of parameter name -> number (ragim.lm.pairs.in_answer_format writes a generator's "
    "compact form for training)"
)


def model_text(values: Mapping[str, float]) -> str:
    """Lossless answer text of a name -> number mapping, in the mapping's order (no rounding,
    no clipping; integral values without a decimal point, as the generator writes them).

    >>> model_text({"intercept": -1.0, "age": 0.5})
    '{"intercept": -1, "age": 0.5}'
    """
    keys = [str(k) for k in values]
    grammar = AnswerGrammar(keys=tuple(keys), pieces=tuple(_skeleton(keys)))
    return grammar.render([number_text(v) for v in values.values()])


__all__ = [
    "ANSWER_FORMATS",
    "DECODERS",
    "MAX_DECIMALS",
    "MAX_INT_DIGITS",
    "AnswerFormat",
    "AnswerGrammar",
    "CompactAnswerFormat",
    "JSONAnswerFormat",
    "answer_format",
    "answer_values",
    "check_answer_format",
    "check_keys",
    "check_max_abs",
    "completion_text",
    "format_json_numbers",
    "key_text",
    "model_text",
    "number_text",
    "parse_json_numbers",
]
