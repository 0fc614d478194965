"""Constrained decoding with a maintained grammar engine (llguidance).

An answer format's :class:`~ragim.lm.answer.AnswerGrammar` (literal pieces, one bounded
decimal between consecutive pieces) becomes one regular expression
(:func:`answer_regex`): the pieces literally, and per value a decimal matching
``-?(0|[1-9]\\d{0,2})(\\.\\d{1,3})?`` with ``|value| <= max_abs`` (the range is part of the
regex). `llguidance <https://github.com/guidance-ai/llguidance>`_ compiles it against the
tokenizer and computes, at every step, the set of tokens that keep the text a prefix of an
answer (any tokenisation of the text, merged tokens included); once the answer is complete
only end-of-sequence is allowed. :class:`GrammarLogitsProcessor` applies those masks inside
transformers' ``generate`` (greedy or sampled, batched with left padding and the KV cache),
so every output parses with the format's :meth:`~ragim.lm.answer.AnswerFormat.parse`,
whatever the model's weights.

:func:`generate_answer_batch` decodes many prompts (each with its own format) in one
``generate`` call; :func:`generate_answers` is one prompt; :func:`generate_json_numbers` is
the JSON format with its keys given directly. The codec's JSON functions
:func:`format_json_numbers` and :func:`parse_json_numbers` are importable from here too.

Examples
--------
>>> text = format_json_numbers({"intercept": -0.1234, "age": 2}, ["intercept", "age"])
>>> text
'{"intercept": -0.123, "age": 2}'
>>> parse_json_numbers(text, ["intercept", "age"])
{'intercept': -0.123, 'age': 2.0}
>>> import re
>>> bool(re.fullmatch(number_regex(2.5, max_frac_digits=1), "-2.5"))
True
>>> bool(re.fullmatch(number_regex(2.5, max_frac_digits=1), "2.6"))
False
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ragim.checks import check_int, check_number
from ragim.errors import GenerationError, ValidationError
from ragim.lm.answer import (
    DECODERS,
    MAX_INT_DIGITS,
    AnswerFormat,
    AnswerGrammar,
    JSONAnswerFormat,
    check_answer_format,
    check_keys,
    check_max_abs,
    format_json_numbers,
    parse_json_numbers,
)
from ragim.lm.builtin_decoder import ConstrainedResult, forward_keywords
from ragim.lm.builtin_decoder import generate_answers as builtin_generate_answers


# --------------------------------------------------------------------------- regular expressions
def _lit(text: str) -> str:
    """``text`` as a regex literal valid in Python's and the engine's (Rust) syntax: every
    character but letters and digits escaped by its code point."""
    out = []
    for c in text:
        o = ord(c)
        if c.isalnum():
            out.append(c)
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return "".join(out)


def _upto(bound: str, *, first_nonzero: bool) -> list[str]:
    """Alternatives matching the digit strings of ``len(bound)`` digits that are <= ``bound``
    (leading digit 1-9 when ``first_nonzero``)."""
    alts = []
    for i, ch in enumerate(bound):
        lo = 1 if (i == 0 and first_nonzero) else 0
        hi = int(ch) - 1
        if hi >= lo:
            rest = len(bound) - i - 1
            alts.append(
                bound[:i]
                + (f"[{lo}-{hi}]" if hi > lo else str(lo))
                + (f"[0-9]{{{rest}}}" if rest else "")
            )
    alts.append(bound)
    return alts


def number_regex(
    max_abs: float, *, max_int_digits: int = MAX_INT_DIGITS, max_frac_digits: int = 3
) -> str:
    """Regex (Python and Rust syntax) of the decimals an answer may hold: ``-?`` then an
    integer part without leading zeros (at most ``max_int_digits`` digits), then optionally
    ``.`` and 1 to ``max_frac_digits`` digits, with ``|value| <= max_abs``.

    Raises ValidationError for bounds out of range.

    >>> number_regex(20, max_frac_digits=1)
    '-?(?:(?:[0-9]|1[0-9]{1})(?:\\\\.[0-9]{1,1})?|20(?:\\\\.(?:0))?)'
    """
    max_abs = check_max_abs(max_abs)
    max_int = check_int(max_int_digits, "max_int_digits", ge=1, le=MAX_INT_DIGITS)
    d = check_int(max_frac_digits, "max_frac_digits", ge=0, le=3)
    bound = min(math.floor(max_abs * 10**d + 1e-9), 10 ** (max_int + d) - 1)
    b_int, b_frac = str(bound // 10**d), str(bound % 10**d).zfill(d) if d else ""
    any_frac = f"(?:\\.[0-9]{{1,{d}}})?" if d else ""
    # integer parts strictly below b_int (no leading zeros): every fraction allowed
    below = ["[0-9]" if n == 1 else f"[1-9][0-9]{{{n - 1}}}" for n in range(1, len(b_int))]
    if len(b_int) > 1:
        below += _upto(b_int, first_nonzero=True)[:-1]
    elif int(b_int) >= 1:
        below.append(f"[0-{int(b_int) - 1}]")
    parts = []
    if below:
        parts.append("(?:" + "|".join(below) + ")" + any_frac)
    # the integer part equal to b_int: fractions f (1..d digits) with f <= b_frac[:len(f)]
    fracs = ["|".join(_upto(b_frac[:n], first_nonzero=False)) for n in range(1, d + 1)]
    tail = "(?:\\.(?:" + "|".join(fracs) + "))?" if d else ""
    parts.append(b_int + tail)
    return "-?(?:" + "|".join(parts) + ")"


def answer_regex(grammar: AnswerGrammar) -> str:
    """The whole answer of ``grammar`` as one regex: the pieces literally, the value prefix,
    and :func:`number_regex` per value.

    >>> from ragim.lm.answer import answer_format
    >>> import re
    >>> rx = answer_regex(answer_format(["a", "b"], decimals=1, max_abs=5).grammar())
    >>> bool(re.fullmatch(rx, '{"a": -5, "b": 0.3}')), bool(re.fullmatch(rx, '{"a": 6, "b": 0}'))
    (True, False)
    """
    if not isinstance(grammar, AnswerGrammar):
        raise ValidationError(f"grammar must be an AnswerGrammar, got {type(grammar).__name__}")
    num = number_regex(
        grammar.max_abs,
        max_int_digits=grammar.max_int_digits,
        max_frac_digits=grammar.max_frac_digits,
    )
    out = []
    for piece in grammar.pieces[:-1]:
        out.append(_lit(piece) + _lit(grammar.value_prefix) + "(?:" + num + ")")
    out.append(_lit(grammar.pieces[-1]))
    return "".join(out)


# --------------------------------------------------------------------------- the engine
_LL_TOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ll_tokenizer(tokenizer, n_vocab: int):
    """The llguidance tokenizer of a Hugging Face fast tokenizer (cached: building it takes
    about a second for a 50k vocabulary)."""
    import llguidance.hf

    key = (len(tokenizer), n_vocab, tokenizer.eos_token_id)
    cached = _LL_TOKENIZERS.get(tokenizer)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        ll = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab)
    except ValueError as exc:
        raise ValidationError(
            f"constrained decoding needs a fast (Rust) tokenizer: {exc}"
        ) from None
    _LL_TOKENIZERS[tokenizer] = (key, ll)
    return ll


@functools.lru_cache(maxsize=64)
def _engine_grammar(regex: str) -> str:
    """The llguidance grammar of an answer regex (compiled once per regex)."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_regex(regex)


@functools.lru_cache(maxsize=1)
def _executor():
    """One llguidance executor (and its worker thread) for every processor of the process."""
    import llguidance

    return llguidance.LLExecutor(num_threads=1)


def unpack_bitmask(bitmask: torch.Tensor, width: int) -> tuple[torch.Tensor, list[int]]:
    """The allowed tokens of a token bitmask (``(rows, words)`` int32, bit ``b`` of word ``w``
    is token ``32 * w + b``, as llguidance fills it) as a ``(rows, width)`` bool tensor, and the
    number of allowed tokens per row. Columns past the bitmask are never allowed.

    numpy's ``unpackbits`` does it with less CPU than torch bit shifts: for a batch of 12
    heart-sized answers (SmolLM2's 49,152 tokens, 85 steps) the whole processor took 0.26 CPU s
    against 0.45 s (``benchmarks/lm_generation_parts.py --unpack-torch``, "grammar processor"
    in docs/benchmarks.md). Either way it is small beside the model's forward passes.

    Raises ValidationError unless ``bitmask`` is a 2-D int32 CPU tensor and ``width`` an int
    >= 0.

    >>> mask = torch.tensor([[0b101, 0], [-(1 << 31), 1]], dtype=torch.int32)  # bit 31: sign
    >>> allowed, counts = unpack_bitmask(mask, 34)
    >>> allowed.nonzero().tolist(), counts
    ([[0, 0], [0, 2], [1, 31], [1, 32]], [2, 2])
    """
    if not (
        isinstance(bitmask, torch.Tensor)
        and bitmask.dim() == 2
        and bitmask.dtype == torch.int32
        and bitmask.device.type == "cpu"
    ):
        raise ValidationError(
            "bitmask must be a 2-D int32 CPU tensor (rows, words), got "
            + (
                f"{bitmask.dim()}-D {bitmask.dtype} on {bitmask.device}"
                if isinstance(bitmask, torch.Tensor)
                else type(bitmask).__name__
            )
        )
    width = check_int(width, "width", ge=0)
    words = bitmask.contiguous().numpy().view(np.uint32).astype("<u4", copy=False).view(np.uint8)
    bits = np.unpackbits(words, axis=1, bitorder="little")[:, :width].view(np.bool_)
    if bits.shape[1] < width:
        bits = np.pad(bits, ((0, 0), (0, width - bits.shape[1])))
    return torch.from_numpy(np.ascontiguousarray(bits)), np.count_nonzero(bits, axis=1).tolist()


class GrammarLogitsProcessor:
    """A transformers ``LogitsProcessor`` that keeps every row of a batch inside its grammar.

    Row ``i`` follows ``grammars[i]`` (llguidance grammar strings, e.g.
    ``LLMatcher.grammar_from_regex(answer_regex(...))``). At every call the last token of
    each row is fed to its matcher, the allowed-token bitmask is computed (in parallel over
    rows) and disallowed logits are set to ``-inf``. A row whose answer is complete may only
    end (end-of-sequence); after that its tokens are ignored.

    Attributes
    ----------
    free : list of list of bool
        Per row, per step: whether the grammar allowed more than one token (a free decision).
    lengths : list of int or None
        Per row, the tokens of its complete answer (None while it is unfinished).
    token_logprobs : list of list of float
        Per row, per token it has seen (filled only with ``record_logprobs``): the token's
        log-probability under the model's unconstrained next-token distribution: the logits
        this processor was given at that step, without keeping every step's logits. They are
        the model's raw logits unless the model's own ``generation_config`` adds logits
        processors (a repetition penalty, say), which transformers runs first; those then
        shape both the choice and this log-probability (SmolLM2's adds none).
    """

    def __init__(
        self,
        tokenizer,
        grammars: Sequence[str],
        *,
        vocab_size: int,
        prompt_length: int,
        record_logprobs: bool = False,
    ):
        import llguidance

        self.ll_tokenizer = _ll_tokenizer(tokenizer, vocab_size)
        self.vocab_size = int(vocab_size)
        self.matchers = [llguidance.LLMatcher(self.ll_tokenizer, g) for g in grammars]
        for m in self.matchers:
            if m.is_error():
                raise ValidationError(f"the answer grammar does not compile: {m.get_error()}")
        self.prompt_length = int(prompt_length)
        self.done = [False] * len(grammars)
        self.free: list[list[bool]] = [[] for _ in grammars]
        self.executor = _executor()
        words = (self.vocab_size + 31) // 32
        self.bitmask = torch.zeros((len(grammars), words), dtype=torch.int32)
        self.eos_id = int(self.ll_tokenizer.eos_token)
        eos_only = torch.zeros(words, dtype=torch.int64)
        eos_only[self.eos_id // 32] = 1 << (self.eos_id % 32)
        self._eos_only = eos_only.to(torch.int32).expand(len(grammars), words)
        self.lengths: list[int | None] = [None] * len(grammars)
        self.record_logprobs = bool(record_logprobs)
        self.token_logprobs: list[list[float]] = [[] for _ in grammars]
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # raw logits, their logsumexp

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        from llguidance.torch import fill_next_token_bitmask_par

        n_rows = len(self.matchers)
        if input_ids.shape[0] != n_rows:
            raise ValidationError(
                f"the processor has {n_rows} grammars but the batch has {input_ids.shape[0]} rows"
            )
        step = input_ids.shape[1] - self.prompt_length
        last = input_ids[:, -1]
        if step > 0 and self._last is not None:  # the tokens just chosen, under the raw logits
            raw, lse = self._last
            chosen = (raw.gather(1, last.unsqueeze(1).to(raw.device))[:, 0] - lse).tolist()
        last = last.tolist()
        live = []
        for i, m in enumerate(self.matchers):
            if self.done[i]:
                continue
            if step > 0:
                tok = last[i]
                if self._last is not None:
                    self.token_logprobs[i].append(chosen[i])
                if tok == self.eos_id:
                    self.done[i], self.lengths[i] = True, step - 1
                    continue
                if not m.consume_token(tok):
                    raise GenerationError(f"row {i} left its grammar: {m.get_error()}")
            if m.is_stopped():  # the answer is complete: only end-of-sequence from here
                self.done[i], self.lengths[i] = True, step
                continue
            live.append((m, i))
        self.bitmask.copy_(self._eos_only)
        if live:
            fill_next_token_bitmask_par(self.executor, live, self.bitmask)
        allowed, counts = unpack_bitmask(self.bitmask, scores.shape[1])
        for _m, i in live:
            self.free[i].append(counts[i] > 1)
        if self.record_logprobs:
            self._last = (scores, torch.logsumexp(scores.float(), dim=-1))
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))


# --------------------------------------------------------------------------- decoding
def _max_answer_bytes(grammar: AnswerGrammar) -> int:
    """Bytes of the longest possible answer (every token is at least one byte)."""
    number = (
        1 + grammar.max_int_digits + (1 + grammar.max_frac_digits if grammar.max_frac_digits else 0)
    )
    text = sum(len(p.encode()) for p in grammar.pieces)
    return text + len(grammar.keys) * (len(grammar.value_prefix.encode()) + number)


def _as_prompt(ids, name: str = "each prompt") -> torch.Tensor:
    if not isinstance(ids, torch.Tensor):
        ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1 or ids.shape[0] == 0:
        raise ValidationError(
            f"{name} must have shape (1, L) or (L,) with L > 0, got {tuple(ids.shape)}"
        )
    return ids.long()


#: the fewest prompt tokens all rows of a batch must share before their key/value cache is
#: computed once for all of them
MIN_SHARED_PREFIX = 32


def shared_prefix_length(rows: Sequence[torch.Tensor], *, minimum: int | None = None) -> int:
    """How many leading tokens all ``rows`` (1-D token-id tensors) share, if at least
    ``minimum`` (default :data:`MIN_SHARED_PREFIX`) and the batch has two rows or more; else 0.
    Every row keeps at least its last token outside the shared part (``generate`` needs one
    new token per row).

    >>> shared_prefix_length([torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 3, 5, 6])], minimum=2)
    3
    >>> shared_prefix_length([torch.tensor([1, 2, 3])] * 2, minimum=2)
    2
    >>> shared_prefix_length([torch.tensor([1, 2, 3])], minimum=2)
    0
    """
    minimum = MIN_SHARED_PREFIX if minimum is None else minimum
    if len(rows) < 2:
        return 0
    n = min(len(r) for r in rows) - 1
    first = rows[0][:n]
    for r in rows[1:]:
        differ = (r[:n] != first[:n]).nonzero()
        n = int(differ[0, 0]) if len(differ) else n
    return n if n >= minimum else 0


def left_padded(
    rows: Sequence[torch.Tensor], pad_id: int, shared: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask (both ``(len(rows), width)`` long) of a batch of 1-D
    token-id tensors: the ``shared`` first tokens of every row, then each row's rest,
    left-padded with ``pad_id`` so that every prompt ends at the last column. With a shared
    part the padding sits between it and the rest (masked out; positions follow the mask).

    >>> ids, mask = left_padded([torch.tensor([1, 2, 3]), torch.tensor([1, 2, 4, 5])], 0, 2)
    >>> ids.tolist(), mask.tolist()
    ([[1, 2, 0, 3], [1, 2, 4, 5]], [[1, 1, 0, 1], [1, 1, 1, 1]])

    Raises ValidationError unless ``rows`` is a non-empty list of non-empty 1-D tensors whose
    first ``shared`` tokens (``0 <= shared <`` the shortest row) are the same.
    """
    if isinstance(rows, torch.Tensor) or not isinstance(rows, Sequence) or not rows:
        raise ValidationError("rows must be a non-empty list of 1-D token-id tensors")
    if not all(isinstance(r, torch.Tensor) and r.dim() == 1 and len(r) > 0 for r in rows):
        raise ValidationError("each row must be a non-empty 1-D token-id tensor")
    shared = check_int(shared, "shared", ge=0, le=min(len(r) for r in rows) - 1)
    if shared and any(not torch.equal(r[:shared], rows[0][:shared]) for r in rows[1:]):
        raise ValidationError(f"the rows do not all share their first {shared} tokens")
    width = shared + max(len(r) - shared for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :shared], attention[i, :shared] = r[:shared], 1
        input_ids[i, width - (len(r) - shared) :] = r[shared:]
        attention[i, width - (len(r) - shared) :] = 1
    return input_ids, attention


@functools.cache
def _preallocated_layer():
    """The class of :func:`preallocated_cache`'s layers (defined on first use: transformers is
    imported only when the LM is used)."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        """One layer's keys and values in buffers of ``capacity`` positions, written in place;
        ``keys`` and ``values`` are views of the filled part. Past ``capacity`` the buffers
        grow by doubling (one copy). :meth:`rows` gives a layer that writes a block of the
        batch's rows (the chunked prefill of :func:`prefill_in_chunks`)."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = int(capacity)
            self.length = 0
            self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

        def reserve(
            self,
            key_states: torch.Tensor,
            value_states: torch.Tensor,
            size: int,
            n_rows: int | None = None,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            """The buffers, allocated (``n_rows`` rows, shaped and typed as ``key_states``) or
            grown (every position kept) to hold at least ``size`` positions."""
            if self._buffers is None or size > self._buffers[0].shape[-2]:
                new = max(self.capacity if self._buffers is None else 2 * size, size)
                rows = (
                    self._buffers[0].shape[0]
                    if self._buffers is not None
                    else (key_states.shape[0] if n_rows is None else n_rows)
                )
                bufs = tuple(
                    s.new_empty((rows, *s.shape[1:-2], new, s.shape[-1]))
                    for s in (key_states, value_states)
                )
                if self._buffers is not None:
                    for b, old in zip(bufs, self._buffers, strict=True):
                        b[..., : old.shape[-2], :] = old
                self._buffers = bufs
                self.device, self.is_initialized = key_states.device, True
            return self._buffers

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            n, add = self.length, key_states.shape[-2]
            k, v = self.reserve(key_states, value_states, n + add)
            k[..., n : n + add, :] = key_states
            v[..., n : n + add, :] = value_states
            return self.filled(n + add)

        @property
        def buffers(self) -> tuple[torch.Tensor, torch.Tensor] | None:
            """The keys' and values' buffers, every position (None before the first write)."""
            return self._buffers

        @property
        def n_rows(self) -> int | None:
            """Rows of the buffers (None before the first write)."""
            return None if self._buffers is None else self._buffers[0].shape[0]

        def filled(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Mark the first ``length`` positions of every row as written; their views."""
            k, v = self._buffers
            self.length = int(length)
            self.keys, self.values = k[..., : self.length, :], v[..., : self.length, :]
            self.device, self.is_initialized = k.device, True
            return self.keys, self.values

        def rows(self, start: int, stop: int, n_rows: int) -> RowBlock:
            """A layer over rows ``start:stop`` (of ``n_rows``) of this one, from its filled
            length on: what a forward call of those rows writes lands in these buffers."""
            return RowBlock(self, start, stop, n_rows)

    class RowBlock(DynamicLayer):
        """Rows ``start:stop`` of a :class:`PreallocatedLayer`, as a layer of their own."""

        def __init__(self, parent, start: int, stop: int, n_rows: int):
            super().__init__()
            self.parent, self.start, self.stop, self.n_rows = parent, start, stop, n_rows
            self.length = parent.length
            if parent.buffers is not None and self.length:
                self._view()

        def _view(self):
            k, v = self.parent.buffers
            rows = slice(self.start, self.stop)
            self.keys, self.values = k[rows, ..., : self.length, :], v[rows, ..., : self.length, :]
            self.device, self.is_initialized = k.device, True
            return self.keys, self.values

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            n, add = self.length, key_states.shape[-2]
            k, v = self.parent.reserve(key_states, value_states, n + add, self.n_rows)
            k[self.start : self.stop, ..., n : n + add, :] = key_states
            v[self.start : self.stop, ..., n : n + add, :] = value_states
            self.length = n + add
            return self._view()

    return PreallocatedLayer


def preallocated_cache(
    model, capacity: int, prefix: torch.Tensor | None = None, n_rows: int = 1, device=None
) -> dict[str, Any]:
    """A key/value cache for ``generate`` whose layers hold ``capacity`` positions (prompt plus
    answer) in buffers allocated once, as the keyword ``generate`` takes it.

    transformers' default ``DynamicLayer`` appends by concatenation, which copies the whole
    cache at every decoding step: at batch 6 and 4,000 context tokens that copy is about half
    of SmolLM2's decode step on a CPU (``benchmarks/lm_decode_profile.py``). These layers write
    each new key and value in place and return views of the filled part, so, unlike
    ``StaticCache``, attention needs no mask over the unused positions. Past ``capacity`` a
    layer grows by doubling (one copy).

    With ``prefix`` (1-D token ids), its keys and values are computed once and copied into
    each of ``n_rows`` rows. Returns ``{}`` where the installed transformers has no
    ``DynamicCache`` with replaceable layers (``generate`` then uses its default cache).
    Raises ValidationError for a ``capacity`` or ``n_rows`` below 1.
    """
    capacity = check_int(capacity, "capacity", ge=1)
    n_rows = check_int(n_rows, "n_rows", ge=1)
    name, _ = forward_keywords(model)
    try:
        from transformers import DynamicCache

        cache = DynamicCache(config=getattr(model, "config", None))
        layers = getattr(cache, "layers", None)
    except (ImportError, TypeError):  # pragma: no cover - transformers before 4.56
        layers = None
    if not isinstance(layers, list) or not layers:
        if prefix is None:
            return {}
        with torch.no_grad():
            cache = model(input_ids=prefix.unsqueeze(0).to(device), use_cache=True)[name]
        cache.batch_repeat_interleave(n_rows)
        return {name: cache}
    layer = _preallocated_layer()
    cache.layers = [layer(capacity) for _ in layers]
    if prefix is not None:
        with torch.no_grad():
            once = model(input_ids=prefix.unsqueeze(0).to(device), use_cache=True)[name]
        for mine, theirs in zip(cache.layers, once.layers, strict=True):
            shape = (n_rows, *theirs.keys.shape[1:])
            mine.update(theirs.keys.expand(shape), theirs.values.expand(shape))
    return {name: cache}


#: prompt tokens per forward call of :func:`prefill_in_chunks` on a CPU. Forward calls of a
#: few thousand tokens cost less per token on a CPU than one call of every row (their
#: activations are smaller; the cause was not profiled further): prefilling twelve heart-sized
#: prompts (about 515 tokens each after their shared prefix), bfloat16 SmolLM2-135M on one
#: thread, took 4.3 CPU s in calls of about 2,000 tokens against 5.6 s in one call of all twelve
#: (``benchmarks/lm_generation_parts.py``, docs/benchmarks.md; measured beside a training job).
#: Larger budgets gained little more.
CPU_PREFILL_TOKENS = 2048


def prefill_in_chunks(
    model,
    cache: dict[str, Any],
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    *,
    max_tokens: int | None,
) -> int:
    """Write the keys and values of every prompt token but the last column into ``cache`` (a
    :func:`preallocated_cache`), a block of rows per forward call, so that ``generate`` has
    only the last token of each row left to read.

    ``input_ids`` and ``attention`` (``(n_rows, width)``) are the left-padded batch
    (:func:`left_padded`); the columns the cache already holds (a shared prefix) are skipped.
    Each call takes as many rows as fit in ``max_tokens`` tokens (at least one row; ``None``:
    all rows in one call). Positions follow the attention mask, as in ``generate``. Runs
    without gradients. Returns the number of forward calls (0 when the cache is not a
    :func:`preallocated_cache`, as where transformers has no replaceable cache layers, or
    nothing is left to prefill).

    Raises ValidationError for a ``cache`` that is not the keyword dict
    :func:`preallocated_cache` returns, ids and mask that are not the same ``(n_rows, width)``
    shape, a cache of other rows or already past ``width - 1`` columns, or ``max_tokens``
    below 1.
    """
    from transformers import DynamicCache

    if not isinstance(cache, dict):
        raise ValidationError(
            f"cache must be the keyword dict preallocated_cache returns, got {type(cache).__name__}"
        )
    if not (
        isinstance(input_ids, torch.Tensor)
        and isinstance(attention, torch.Tensor)
        and input_ids.dim() == 2
        and input_ids.shape == attention.shape
    ):
        raise ValidationError(
            "input_ids and attention must be tensors of the same (n_rows, width) shape, got "
            f"{tuple(getattr(input_ids, 'shape', ()))} and {tuple(getattr(attention, 'shape', ()))}"
        )
    if max_tokens is not None:
        max_tokens = check_int(max_tokens, "max_tokens", ge=1)
    name, keep = forward_keywords(model)
    layers = getattr(cache.get(name), "layers", None)
    layer_cls = _preallocated_layer()
    if not layers or not all(isinstance(layer, layer_cls) for layer in layers):
        return 0
    n_rows, width = input_ids.shape
    start = layers[0].length
    held = n_rows if layers[0].n_rows is None else layers[0].n_rows
    if held != n_rows or start > width - 1:
        raise ValidationError(
            f"the cache holds {held} rows and {start} columns; the batch has {n_rows} rows and "
            f"{width} columns (a cache holds at most width - 1)"
        )
    cols = width - 1 - start
    if cols <= 0:
        return 0
    per_call = n_rows if max_tokens is None else max(1, max_tokens // cols)
    positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 1)
    device = next(model.parameters()).device
    calls = 0
    with torch.no_grad():
        for lo in range(0, n_rows, per_call):
            hi = min(n_rows, lo + per_call)
            block = DynamicCache(config=getattr(model, "config", None))
            block.layers = [layer.rows(lo, hi, n_rows) for layer in layers]
            model(
                input_ids=input_ids[lo:hi, start : width - 1].to(device),
                attention_mask=attention[lo:hi, : width - 1].to(device),
                position_ids=positions[lo:hi, start : width - 1].to(device),
                use_cache=True,
                **{name: block},
                **({"logits_to_keep": 1} if keep else {}),
            )
            calls += 1
    for layer in layers:
        layer.filled(width - 1)
    return calls


@torch.inference_mode()
def generate_answer_batch(
    model,
    tokenizer,
    prompts: Sequence[torch.Tensor],
    answer_formats: AnswerFormat | Sequence[AnswerFormat],
    *,
    max_int_digits: int = MAX_INT_DIGITS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_candidates: int = 1,
    seed: int = 0,
    decoder: str = "llguidance",
) -> list[list[ConstrainedResult]]:
    """Decode ``num_candidates`` answers for each prompt in one batched ``generate`` call.

    Prompts are left-padded into one batch (with an attention mask) and decoded with the KV
    cache; row ``i`` follows ``answer_formats[i]`` (or the one format given) through
    :class:`GrammarLogitsProcessor`. Sampling applies the temperature, then top-p, to the
    allowed tokens only, so no allowed set is ever emptied.

    Parameters
    ----------
    model, tokenizer
        A causal LM and its fast tokenizer (with a pad or end-of-sequence token).
    prompts : list of torch.Tensor
        Token ids, each of shape ``(L_i,)`` or ``(1, L_i)``.
    answer_formats : AnswerFormat or list of AnswerFormat
        One per prompt, or one for all.
    max_int_digits : int
        Integer digits of each number (1-3).
    temperature : float
        0 = greedy; > 0 samples.
    top_p : float
        Nucleus mass when sampling.
    num_candidates : int
        Answers per prompt (greedy ones are identical).
    seed : int
        Seed of the sampling (the global torch RNG is left as it was).
    decoder : {"llguidance", "builtin"}
        ``"llguidance"``: the grammar engine inside one batched ``generate`` call, as above.
        ``"builtin"``: the hand-written loop of :mod:`ragim.lm.builtin_decoder`, one prompt
        at a time (prompt ``i`` sampled with seed ``seed + i``), forcing each literal piece
        in one forward call. Both guarantee that every answer parses.

    Returns
    -------
    list (per prompt) of list (per candidate) of ConstrainedResult

    Raises
    ------
    ValidationError
        For bad arguments; GenerationError if an answer fails to parse (not expected).

    Examples
    --------
    >>> from ragim.lm.answer import answer_format
    >>> from ragim.lm.base_models import load_base_model
    >>> model, tok = load_base_model("tiny", device="cpu")
    >>> prompts = [tok(t, return_tensors="pt")["input_ids"] for t in ("coefs?", "the model:")]
    >>> out = generate_answer_batch(model, tok, prompts, answer_format(["a", "b"], max_abs=2))
    >>> [len(c) for c in out], all(abs(v) <= 2 for c in out for v in c[0].values.values())
    ([1, 1], True)
    """
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    if isinstance(prompts, torch.Tensor) or not isinstance(prompts, Sequence) or not prompts:
        raise ValidationError("prompts must be a non-empty list of token-id tensors")
    rows = [_as_prompt(p) for p in prompts]
    fmts = (
        [answer_formats] * len(rows)
        if isinstance(answer_formats, AnswerFormat)
        else list(answer_formats)
    )
    if len(fmts) != len(rows) or not all(isinstance(f, AnswerFormat) for f in fmts):
        raise ValidationError(
            f"answer_formats must be one AnswerFormat (ragim.lm.answer) or one per "
            f"prompt ({len(rows)}), got {answer_formats!r:.80}"
        )
    max_int_digits = check_int(max_int_digits, "max_int_digits", ge=1, le=MAX_INT_DIGITS)
    num_candidates = check_int(num_candidates, "num_candidates", ge=1)
    temperature = check_number(temperature, "temperature", ge=0)
    top_p = check_number(top_p, "top_p", gt=0, le=1)
    seed = check_int(seed, "seed", ge=0)
    if decoder not in DECODERS:
        raise ValidationError(f"decoder must be one of {list(DECODERS)}, got {decoder!r}")
    if decoder == "builtin":
        return [
            builtin_generate_answers(
                model, tokenizer, r, f, max_int_digits=max_int_digits, temperature=temperature,
                top_p=top_p, num_candidates=num_candidates,
                generator=torch.Generator().manual_seed(seed + i),
            )
            for i, (r, f) in enumerate(zip(rows, fmts, strict=True))
        ]  # fmt: skip
    grammars = [f.grammar(max_int_digits=max_int_digits) for f in fmts]
    # greedy candidates are identical: decode one per prompt and repeat it
    n_rows_each = num_candidates if temperature > 0 else 1
    ll_grammars = [_engine_grammar(answer_regex(g)) for g in grammars for _ in range(n_rows_each)]

    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    eos_id = tokenizer.eos_token_id
    if eos_id is None or pad_id is None:
        raise ValidationError(
            "the tokenizer needs an end-of-sequence token for constrained decoding"
        )
    device = next(model.parameters()).device
    # every output row gets its own input row (candidates are repeated here, not by generate,
    # so that a cached shared prefix has the same rows)
    rows = [r for r in rows for _ in range(n_rows_each)]
    shared = shared_prefix_length(rows)
    input_ids, attention = left_padded(rows, pad_id, shared)
    width = input_ids.shape[1]
    vocab = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
    proc = GrammarLogitsProcessor(
        tokenizer, ll_grammars, vocab_size=vocab, prompt_length=width, record_logprobs=True
    )
    procs = [proc]
    if temperature > 0:
        procs += [TemperatureLogitsWarper(temperature)] + (
            [TopPLogitsWarper(top_p)] if top_p < 1 else []
        )
    max_new = max(_max_answer_bytes(g) for g in grammars) + 2
    # answers are far shorter than their byte bound: room for a typical one, doubled if needed
    room = min(max_new, 8 * max(len(g.keys) for g in grammars) + 16)
    cache = preallocated_cache(
        model, width + room, rows[0][:shared] if shared else None, len(rows), device
    )
    prefill_in_chunks(
        model,
        cache,
        input_ids,
        attention,
        max_tokens=CPU_PREFILL_TOKENS if device.type == "cpu" else None,
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            logits_processor=LogitsProcessorList(procs),
            do_sample=temperature > 0,
            temperature=None,
            top_p=None,
            top_k=None,
            num_beams=1,
            max_new_tokens=max_new,
            **cache,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            return_dict_in_generate=True,
        )
    seqs = out.sequences[:, width:].cpu()
    results: list[list[ConstrainedResult]] = []
    for p, fmt in enumerate(fmts):
        group = []
        for c in range(num_candidates):
            if c >= n_rows_each:
                group.append(copy.deepcopy(group[0]))
                continue
            row = p * n_rows_each + c
            n = proc.lengths[row]
            tail = seqs[row].tolist()
            if n is None and eos_id in tail and proc.matchers[row].is_accepting():
                n = tail.index(eos_id)  # ended on the last step: the processor saw no more
            if n is None:
                raise GenerationError(f"answer {row} did not finish within {max_new} tokens")
            ids = seqs[row, :n].tolist()
            token_lp = proc.token_logprobs[row][:n]
            if len(token_lp) < n:  # not expected: every answer token is seen at the next step
                raise GenerationError(
                    f"answer {row}: log-probabilities of {len(token_lp)} of {n} tokens"
                )
            lp = float(sum(x for x, free in zip(token_lp, proc.free[row][:n], strict=True) if free))
            text = tokenizer.decode(
                ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            values = fmt.parse(text)
            group.append(
                ConstrainedResult(text=text, values=values, n_tokens=n, logprob=lp, token_ids=ids)
            )
        results.append(group)
    return results


def _ignore_value_budget(max_new_tokens_per_value: int | None) -> None:
    """Warn (at the public caller's caller) that the deprecated per-value budget is ignored."""
    if max_new_tokens_per_value is not None:
        warnings.warn(
            "max_new_tokens_per_value is ignored: the grammar bounds every number",
            DeprecationWarning,
            stacklevel=3,
        )


def _seed_from(generator: torch.Generator | None) -> int:
    if generator is None:
        return 0
    if not isinstance(generator, torch.Generator):
        raise ValidationError(
            f"generator must be a torch.Generator, got {type(generator).__name__}"
        )
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def generate_answers(
    model,
    tokenizer,
    prompt_ids: torch.Tensor,
    answer_format: AnswerFormat,
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> list[ConstrainedResult]:
    """``num_candidates`` answers in ``answer_format`` for one prompt: one row of
    :func:`generate_answer_batch`.

    Parameters
    ----------
    model, tokenizer
        A causal LM and its fast tokenizer.
    prompt_ids : torch.Tensor
        Shape ``(1, L)`` or ``(L,)``.
    answer_format : AnswerFormat
        The codec; decimals and range are its own.
    generator : torch.Generator, optional
        CPU generator that draws the sampling seed (default: seed 0).
    **options
        ``max_int_digits``, ``temperature``, ``top_p``, ``num_candidates`` and ``decoder``
        (``"llguidance"`` or ``"builtin"``): as in :func:`generate_answer_batch`, with its
        defaults. ``max_new_tokens_per_value`` is deprecated and ignored: the grammar bounds
        every number.

    Returns
    -------
    list of ConstrainedResult
        ``num_candidates`` answers.

    Examples
    --------
    >>> from ragim.lm.answer import answer_format
    >>> from ragim.lm.base_models import load_base_model
    >>> model, tok = load_base_model("tiny", device="cpu")
    >>> msgs = [{"role": "user", "content": "coefs?"}]
    >>> ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
    ...                               return_dict=True)["input_ids"]
    >>> res = generate_answers(model, tok, ids, answer_format(["intercept"]), num_candidates=3)
    >>> len(res), len({r.text for r in res})  # greedy candidates are identical
    (3, 1)
    """
    answer_format = check_answer_format(answer_format)
    _ignore_value_budget(options.pop("max_new_tokens_per_value", None))
    prompt = _as_prompt(prompt_ids, "prompt_ids")
    seed = _seed_from(generator)
    return generate_answer_batch(model, tokenizer, [prompt], answer_format, seed=seed, **options)[0]


def generate_json_numbers(
    model,
    tokenizer,
    prompt_ids: torch.Tensor,
    keys: Sequence[str],
    *,
    max_abs: float = 20.0,
    max_int_digits: int = 3,
    max_frac_digits: int = 3,
    **options: Any,
) -> list[ConstrainedResult]:
    """``num_candidates`` JSON answers ``{"k1": v1, ...}`` over ``keys`` for one prompt:
    :func:`generate_answers` with :class:`~ragim.lm.answer.JSONAnswerFormat`.

    Parameters
    ----------
    model, tokenizer
        A causal LM and its fast tokenizer.
    prompt_ids : torch.Tensor
        Shape ``(1, L)`` (or ``(L,)``) prompt, e.g. from ``apply_chat_template``.
    keys : list of str
        Keys in answer order; any characters allowed.
    max_abs, max_int_digits, max_frac_digits
        Range and length bounds of each number (``max_int_digits`` <= 3).
    **options
        ``temperature``, ``top_p``, ``num_candidates``, ``generator``, ``decoder`` and the
        deprecated ``max_new_tokens_per_value``: as in :func:`generate_answers` (same
        defaults).

    Returns
    -------
    list of ConstrainedResult

    Examples
    --------
    >>> from ragim.lm.base_models import load_base_model
    >>> model, tok = load_base_model("tiny", device="cpu")
    >>> ids = tok.apply_chat_template([{"role": "user", "content": "coefs?"}],
    ...                               add_generation_prompt=True, return_tensors="pt",
    ...                               return_dict=True)["input_ids"]
    >>> res = generate_json_numbers(model, tok, ids, ["intercept", "age"])
    >>> sorted(res[0].values) == ["age", "intercept"]
    True
    """
    keys = check_keys(keys)
    max_abs = check_max_abs(max_abs)
    check_int(max_int_digits, "max_int_digits", ge=1, le=3)
    check_int(max_frac_digits, "max_frac_digits", ge=0, le=3)
    fmt = JSONAnswerFormat(keys, decimals=max_frac_digits, max_abs=max_abs)
    _ignore_value_budget(options.pop("max_new_tokens_per_value", None))
    return generate_answers(
        model, tokenizer, prompt_ids, fmt, max_int_digits=max_int_digits, **options
    )


@contextlib.contextmanager
def sample_under_grammar(
    model, tokenizer, answer_format: AnswerFormat, *, max_int_digits: int = MAX_INT_DIGITS
):
    """Within the block, every ``model.generate(...)`` call decodes under ``answer_format``'s
    grammar, whoever calls it (TRL's ``GRPOTrainer`` samples its groups this way).

    Each call gets a fresh :class:`GrammarLogitsProcessor` (one matcher per output row: each
    row of ``input_ids`` times ``num_return_sequences``, the prompt ending at their last
    column, as with left padding), ahead of any ``logits_processor`` the caller passes;
    transformers applies the caller's temperature, top-k and top-p after it, to the allowed
    tokens only. So every completion, greedy or sampled, is an answer that
    ``answer_format.parse`` accepts, followed by end-of-sequence, provided the caller's
    ``max_new_tokens`` leaves room for the longest answer
    (:func:`ragim.lm.prompts.answer_room`). Beam search is refused. The model's own
    ``generate`` is restored on exit, also after an error.

    Parameters
    ----------
    model
        A transformers causal LM or peft model (the object whose ``generate`` is called).
    tokenizer
        Its fast tokenizer (with an end-of-sequence token).
    answer_format : AnswerFormat
        The codec whose grammar the completions follow (the same for every row).
    max_int_digits : int
        Integer digits of each number (1-3).

    Raises
    ------
    ValidationError
        For a bad format or ``max_int_digits`` or a tokenizer without end-of-sequence (on
        entry); inside the block, for a ``generate`` call without ``input_ids`` (or
        ``inputs``) of shape ``(batch, length)`` or with ``num_beams > 1``.

    Examples
    --------
    >>> from ragim.lm.answer import answer_format
    >>> from ragim.lm.base_models import load_base_model
    >>> model, tok = load_base_model("tiny", device="cpu")
    >>> fmt = answer_format(["intercept", "age"], max_abs=2)
    >>> ids = tok("coefs?", return_tensors="pt")["input_ids"].repeat(3, 1)
    >>> with sample_under_grammar(model, tok, fmt):
    ...     out = model.generate(input_ids=ids, do_sample=True, temperature=5.0, max_new_tokens=40,
    ...                          pad_token_id=tok.eos_token_id)
    >>> texts = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    >>> all(abs(v) <= 2 for t in texts for v in fmt.parse(t).values())
    True
    """
    from transformers import LogitsProcessorList

    answer_format = check_answer_format(answer_format)
    max_int_digits = check_int(max_int_digits, "max_int_digits", ge=1, le=MAX_INT_DIGITS)
    if tokenizer.eos_token_id is None:
        raise ValidationError(
            "the tokenizer needs an end-of-sequence token for constrained decoding"
        )
    grammar = _engine_grammar(answer_regex(answer_format.grammar(max_int_digits=max_int_digits)))
    vocab = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
    original = model.__dict__.get("generate")  # an instance attribute to put back, if any
    call = original or functools.partial(type(model).generate, model)

    def setting(kwargs: dict, name: str) -> int:
        value = kwargs.get(name, getattr(kwargs.get("generation_config"), name, None))
        return int(value or 1)

    def generate(*args, **kwargs):
        ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
            raise ValidationError(
                "constrained generate needs input_ids of shape (batch, length), got "
                f"{type(ids).__name__}"
            )
        if setting(kwargs, "num_beams") > 1:
            raise ValidationError(
                "constrained decoding samples or decodes greedily; beam search is not supported"
            )
        rows = ids.shape[0] * setting(kwargs, "num_return_sequences")
        proc = GrammarLogitsProcessor(
            tokenizer, [grammar] * rows, vocab_size=vocab, prompt_length=ids.shape[1]
        )
        kwargs["logits_processor"] = LogitsProcessorList(
            [proc, *(kwargs.get("logits_processor") or [])]
        )
        return call(*args, **kwargs)

    model.generate = generate
    try:
        yield
    finally:
        if original is None:
            del model.generate
        else:
            model.generate = original


__all__ = [
    "DECODERS",
    "ConstrainedResult",
    "CPU_PREFILL_TOKENS",
    "MIN_SHARED_PREFIX",
    "GrammarLogitsProcessor",
    "answer_regex",
    "format_json_numbers",
    "generate_answer_batch",
    "generate_answers",
    "generate_json_numbers",
    "left_padded",
    "number_regex",
    "parse_json_numbers",
    "preallocated_cache",
    "prefill_in_chunks",
    "sample_under_grammar",
    "shared_prefix_length",
    "unpack_bitmask",
]
