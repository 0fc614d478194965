"""The built-in constrained decoder: a hand-written token loop, one prompt at a time.

One of the two decoders of :mod:`ragim.lm.constrained` (``decoder="builtin"``; the other is
the llguidance grammar engine). It follows an :class:`~ragim.lm.answer.AnswerGrammar`:
literal pieces are fed to the model as forced tokens (all tokens of a piece in one forward
call), and between them the model writes one decimal per key, matching
``-?(0|[1-9]\\d{0,2})(\\.\\d{1,3})?`` with its value in ``[-max_abs, max_abs]``, token by
token, among tokens that keep the value a valid prefix of that grammar, plus a "stop"
decision. Every output therefore parses with the codec's
:meth:`~ragim.lm.answer.AnswerFormat.parse`, whatever the model's weights.

It cannot batch prompts, but forcing each literal piece in one forward call makes it the
faster decoder for one prompt on a CPU (docs/lm_format.md gives the measured ratio and the
command). Each number is limited to ``max_new_tokens_per_value`` tokens; at the bound it is
completed with the fewest characters.

Examples
--------
>>> from ragim.lm.answer import answer_format
>>> from ragim.lm.base_models import load_base_model
>>> model, tok = load_base_model("tiny", device="cpu")
>>> ids = tok("coefs?", return_tensors="pt")["input_ids"]
>>> res = generate_answers(model, tok, ids, answer_format(["a", "b"], name="compact", max_abs=2))
>>> res[0].text.startswith("[") and all(abs(v) <= 2 for v in res[0].values.values())
True
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass, field

import torch

from ragim.checks import check_int, check_number
from ragim.errors import ValidationError
from ragim.lm.answer import MAX_INT_DIGITS, AnswerFormat, check_answer_format

_NUM_CHARS = frozenset("0123456789.-")
_DIGITS = frozenset("0123456789")


@dataclass
class ConstrainedResult:
    """One constrained answer (from either decoder of :mod:`ragim.lm.constrained`).

    Attributes
    ----------
    text : str
        The answer text; always accepted by its format's ``parse``.
    values : dict[str, float]
        The parsed numbers, in key order.
    n_tokens : int
        Tokens generated after the prompt, end-of-sequence excluded (built-in: forced and
        chosen tokens, the closing piece included).
    logprob : float
        Sum, over the model's free decisions, of the chosen option's log-probability under
        the model's *unconstrained* distribution at temperature 1 (not renormalised over
        the allowed set); forced steps are not counted. llguidance: a free decision is a
        step where the grammar allowed more than one token. Built-in: a choice among number
        tokens and "stop" (which scores the mass of tokens starting with a non-number
        character).
    token_ids : list[int]
        The generated token ids (end-of-sequence excluded).
    """

    text: str
    values: dict[str, float]
    n_tokens: int
    logprob: float
    token_ids: list[int] = field(default_factory=list, repr=False)


# --------------------------------------------------------------------------- grammar


def _split_number(s: str):
    """Split number text into (neg, int_digits, has_dot, frac_digits) or None if malformed."""
    neg = s.startswith("-")
    r = s[1:] if neg else s
    i = 0
    while i < len(r) and r[i] in _DIGITS:
        i += 1
    int_digits, rest = r[:i], r[i:]
    if not rest:
        return neg, int_digits, False, ""
    if rest[0] != "." or not int_digits:
        return None
    frac = rest[1:]
    if any(c not in _DIGITS for c in frac):
        return None
    return neg, int_digits, True, frac


def _segment_state(seg: str, prefix: str, max_abs: float, max_int: int, max_frac: int) -> int:
    """0: not a valid prefix; 1: valid incomplete prefix; 2: complete number.

    ``seg`` is the text after a literal piece: the grammar's ``prefix`` (``" "`` in JSON,
    ``""`` in the compact format), then the number.
    """
    if len(seg) <= len(prefix):
        return 1 if prefix.startswith(seg) else 0
    if not seg.startswith(prefix):
        return 0
    parts = _split_number(seg[len(prefix) :])
    if parts is None:
        return 0
    _neg, int_digits, has_dot, frac = parts
    if len(int_digits) > max_int or len(frac) > max_frac:
        return 0
    if has_dot and max_frac == 0:
        return 0
    if len(int_digits) > 1 and int_digits[0] == "0":
        return 0
    # The smallest magnitude any completion can reach: pad with zeros.
    low = float((int_digits or "0") + "." + (frac or "0"))
    if low > max_abs:
        return 0
    if int_digits and (not has_dot or frac):
        return 2
    return 1


def _min_completion(seg: str, prefix: str) -> str:
    """Shortest text that turns a valid incomplete segment into a complete number."""
    if len(seg) < len(prefix):
        return prefix[len(seg) :] + "0"
    body = seg[len(prefix) :]
    if body in ("", "-") or body.endswith("."):
        return "0"
    return ""


# --------------------------------------------------------------------------- vocabulary tables


class _VocabTables:
    """Per-tokenizer token texts, number-candidate tokens and the stop mask."""

    def __init__(self, tokenizer, vocab_size: int):
        n = max(vocab_size, len(tokenizer))
        texts = _token_texts(tokenizer, n)
        self.texts = texts
        self.num_ids: list[int] = []
        stop = torch.zeros(n, dtype=torch.bool)
        for i, t in enumerate(texts):
            if not t:
                continue
            if all(c in _NUM_CHARS or c == " " for c in t):
                self.num_ids.append(i)
            if t[0] not in _NUM_CHARS:
                stop[i] = True
        self.stop_mask = stop
        self.n = n
        self._by_device: dict[str, torch.Tensor] = {}

    def stop_mask_on(self, device, size: int) -> torch.Tensor:
        key = f"{device}:{size}"
        m = self._by_device.get(key)
        if m is None:
            m = self.stop_mask[:size]
            if size > self.n:
                m = torch.cat([m, torch.zeros(size - self.n, dtype=torch.bool)])
            m = m.to(device)
            self._by_device[key] = m
        return m


def _token_texts(tokenizer, n: int) -> list[str]:
    """Text each token contributes when it follows other text (no leading-space stripping)."""
    size = len(tokenizer)
    ids = list(range(min(n, size)))
    ref_ids = tokenizer.encode("a", add_special_tokens=False)[:1] or [ids[0]]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        ref = backend.decode(ref_ids, skip_special_tokens=False)
        joined = backend.decode_batch([ref_ids + [i] for i in ids], skip_special_tokens=False)
    else:  # slow tokenizer
        kw = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
        ref = tokenizer.decode(ref_ids, **kw)
        joined = [tokenizer.decode(ref_ids + [i], **kw) for i in ids]
    out = []
    for i, j in zip(ids, joined, strict=True):
        if j.startswith(ref):
            out.append(j[len(ref) :])
        else:  # a decoder that rewrites the reference text: fall back to the lone token
            out.append(tokenizer.decode([i], skip_special_tokens=False))
    out += [""] * (n - len(out))
    return out


_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tables_for(tokenizer, vocab_size: int) -> _VocabTables:
    key_len = (len(tokenizer), vocab_size)
    try:
        cached = _TABLES.get(tokenizer)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None and cached[0] == key_len:
        return cached[1]
    tables = _VocabTables(tokenizer, vocab_size)
    try:
        _TABLES[tokenizer] = (key_len, tables)
    except TypeError:  # pragma: no cover
        pass
    return tables


# --------------------------------------------------------------------------- decoding


def forward_keywords(model) -> tuple[str, bool]:
    """What the model's ``forward`` calls its key/value cache (``"cache"`` from transformers
    5, ``"past_key_values"`` before) and whether it takes ``logits_to_keep``; peft and other
    wrappers are unwrapped to read the real signature."""
    import inspect

    inner = model
    for _ in range(4):
        getter = getattr(inner, "get_base_model", None)
        if getter is None:
            break
        nxt = getter()
        if nxt is inner:
            break
        inner = nxt
    try:
        params = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        params = {}
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


class _Runner:
    """Feeds tokens through the model with a KV cache and returns next-token logits."""

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        self.cache_kw, self.keep = forward_keywords(model)

    def feed(self, ids: list[int] | torch.Tensor, cache):
        if not isinstance(ids, torch.Tensor):
            ids = torch.tensor([ids], dtype=torch.long)
        ids = ids.to(self.device)
        kwargs = {"input_ids": ids, self.cache_kw: cache, "use_cache": True}
        if self.keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        new_cache = getattr(out, self.cache_kw, None)
        for name in ("past_key_values", "cache"):
            if new_cache is None:
                new_cache = getattr(out, name, None)
        return out.logits[0, -1].float(), new_cache


def _choose(
    options_logp: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    options_logits_t: torch.Tensor | None,
) -> int:
    """Pick an index among options: greedy when temperature == 0, else top-p sampling."""
    if temperature <= 0:
        return int(torch.argmax(options_logp).item())
    probs = torch.softmax(options_logits_t, dim=0)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=0)
        keep = cum - sorted_p < top_p
        keep[0] = True
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[order[keep]] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator).item())


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer,
    prompt_ids: torch.Tensor,
    answer_format: AnswerFormat,
    *,
    max_int_digits: int = MAX_INT_DIGITS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_candidates: int = 1,
    generator: torch.Generator | None = None,
    max_new_tokens_per_value: int = 12,
) -> list[ConstrainedResult]:
    """``num_candidates`` answers in ``answer_format`` for one prompt, decoded by the built-in
    loop (see the module docstring).

    The prompt is encoded once and its KV cache reused by every candidate. At a value slot
    the allowed options are the tokens made of number characters (and spaces) that keep the
    slot a valid prefix, plus, once the number is complete, *stop*, whose probability is the
    model's total mass on tokens starting with a non-number character. Greedy picks the
    likeliest option; sampling applies the temperature, then top-p, to the options.

    Parameters
    ----------
    model, tokenizer
        A causal LM (called with a KV cache) and its tokenizer.
    prompt_ids : torch.Tensor
        Shape ``(1, L)`` or ``(L,)``.
    answer_format : AnswerFormat
        The codec; decimals and range are its own.
    max_int_digits : int
        Integer digits of each number (1-3).
    temperature, top_p : float
        0 = greedy; > 0 samples, with nucleus mass ``top_p``.
    num_candidates : int
        Answers (greedy ones are identical).
    generator : torch.Generator, optional
        CPU generator for reproducible sampling.
    max_new_tokens_per_value : int
        Token budget per number; the number is completed at the bound.

    Returns
    -------
    list of ConstrainedResult
        ``logprob`` sums the free decisions' log-probabilities under the unconstrained
        distribution at temperature 1 (a stop decision scores its mass); ``n_tokens`` counts
        the forced and chosen tokens, the closing piece included.

    Raises
    ------
    ValidationError
        For bad arguments.

    Examples
    --------
    Two sampled answers for a 1-D prompt, each with the log-probability of its free choices:

    >>> from ragim.lm.answer import JSONAnswerFormat
    >>> from ragim.lm.base_models import load_base_model
    >>> model, tok = load_base_model("tiny", device="cpu")
    >>> prompt = tok("the model:", return_tensors="pt")["input_ids"][0]
    >>> res = generate_answers(model, tok, prompt, JSONAnswerFormat(["intercept"], max_abs=2),
    ...                        temperature=1.0, num_candidates=2,
    ...                        generator=torch.Generator().manual_seed(0))
    >>> len(res), all(r.logprob <= 0 and abs(r.values["intercept"]) <= 2 for r in res)
    (2, True)
    """
    answer_format = check_answer_format(answer_format)
    max_int_digits = check_int(max_int_digits, "max_int_digits", ge=1, le=3)
    grammar = answer_format.grammar(max_int_digits=max_int_digits)
    if any(c in _NUM_CHARS for c in grammar.value_prefix):
        raise ValidationError(
            f"the value prefix of {type(answer_format).__name__} ({grammar.value_prefix!r}) "
            "must not contain number characters"
        )
    num_candidates = check_int(num_candidates, "num_candidates", ge=1)
    max_new_tokens_per_value = check_int(max_new_tokens_per_value, "max_new_tokens_per_value", ge=1)
    temperature = check_number(temperature, "temperature", ge=0)
    top_p = check_number(top_p, "top_p", gt=0, le=1)
    if not isinstance(prompt_ids, torch.Tensor):
        prompt_ids = torch.as_tensor(prompt_ids, dtype=torch.long)
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids.unsqueeze(0)
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] != 1 or prompt_ids.shape[1] == 0:
        raise ValidationError(
            f"prompt_ids must have shape (1, L) with L > 0, got {tuple(prompt_ids.shape)}"
        )

    vocab_size = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
    tables = _tables_for(tokenizer, vocab_size)
    enc_cache: dict[str, list[int]] = {}

    def enc(text: str) -> list[int]:
        if text not in enc_cache:
            enc_cache[text] = list(tokenizer.encode(text, add_special_tokens=False))
        return enc_cache[text]

    runner = _Runner(model)
    base_logits, base_cache = runner.feed(prompt_ids.long(), None)
    results = []
    for c in range(num_candidates):
        # The prompt's KV cache is reused; every candidate but the last works on a copy.
        cache = base_cache if c == num_candidates - 1 else copy.deepcopy(base_cache)
        results.append(
            _decode_one(
                runner, cache, base_logits, grammar, answer_format, enc, tables,
                temperature=temperature, top_p=top_p, generator=generator,
                budget=max_new_tokens_per_value,
            )
        )  # fmt: skip
    return results


def _decode_one(
    runner, cache, logits, grammar, answer_format, enc, tables, *,
    temperature, top_p, generator, budget,
) -> ConstrainedResult:  # fmt: skip
    pieces, keys = grammar.pieces, grammar.keys
    max_abs, max_int, max_frac = grammar.max_abs, grammar.max_int_digits, grammar.max_frac_digits
    prefix = grammar.value_prefix
    text_parts: list[str] = []
    token_ids: list[int] = []
    logprob = 0.0
    texts = tables.texts
    for i in range(len(keys)):
        piece = pieces[i]
        ids = enc(piece)
        if ids:
            logits, cache = runner.feed(ids, cache)
            token_ids += ids
        text_parts.append(piece)
        seg = ""
        n = 0
        while True:
            state = _segment_state(seg, prefix, max_abs, max_int, max_frac)
            if n >= budget:
                fill = _min_completion(seg, prefix)
                if fill:
                    fids = enc(fill)
                    logits, cache = runner.feed(fids, cache)
                    token_ids += fids
                    seg += fill
                break
            allowed = [
                t for t in tables.num_ids
                if t < logits.shape[0]
                and _segment_state(seg + texts[t], prefix, max_abs, max_int, max_frac) > 0
            ]  # fmt: skip
            can_stop = state == 2
            if not allowed:
                if can_stop:
                    break
                n = budget  # no usable token (odd vocab): force the completion
                continue
            logp = torch.log_softmax(logits, dim=0)
            opt_logp = logp[allowed]
            stop_lp = None
            if can_stop:
                mask = tables.stop_mask_on(logits.device, logits.shape[0])
                stop_lp = torch.logsumexp(logp[mask], dim=0) if bool(mask.any()) else None
                if stop_lp is None:
                    stop_lp = torch.tensor(-1e4, device=logits.device)
                opt_logp = torch.cat([opt_logp, stop_lp.reshape(1)])
            opt_logp = opt_logp.detach().cpu()
            opt_logits_t = None
            if temperature > 0:
                lt = torch.log_softmax(logits / temperature, dim=0)
                o = lt[allowed]
                if can_stop:
                    o = torch.cat([o, torch.logsumexp(lt[mask], dim=0).reshape(1)])
                opt_logits_t = o.detach().cpu()
            k = _choose(opt_logp, temperature, top_p, generator, opt_logits_t)
            logprob += float(opt_logp[k])
            if can_stop and k == len(allowed):
                break
            tid = allowed[k]
            logits, cache = runner.feed([tid], cache)
            token_ids.append(tid)
            seg += texts[tid]
            n += 1
        text_parts.append(seg)
    final = pieces[-1]
    text_parts.append(final)
    token_ids += enc(final)
    text = "".join(text_parts)
    values = answer_format.parse(text)
    return ConstrainedResult(
        text=text, values=values, n_tokens=len(token_ids), logprob=logprob, token_ids=token_ids
    )


__all__ = ["ConstrainedResult", "forward_keywords", "generate_answers"]
