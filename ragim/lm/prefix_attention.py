"""Cascade attention over a batch's shared prompt prefix, for batched decoding on a CPU.

In a batched decoding step every row attends to its whole key/value cache. When the rows'
prompts share a prefix (instructions, schema, population model), the first ``P`` cached
positions hold the same keys and values in every row, and plain attention reads them once per
row. Cascade attention (FlashInfer's "cascade inference"; Ye et al., 2024,
https://flashinfer.ai/2024/02/02/cascade-inference.html) reads them once for all rows: the
rows' queries attend to the shared part as one batch and to each row's own part separately,
and the two partial results are merged by their log-sum-exp, which gives exactly softmax
attention over the whole cache.

Both parts run on torch's CPU flash-attention kernel, the one ``scaled_dot_product_attention``
dispatches to on a CPU, called directly because only it returns the log-sum-exp
(``aten::_scaled_dot_product_flash_attention_for_cpu``, a private operator). Built from public
torch operations the cascade is slower than plain attention
(``benchmarks/lm_cascade_attention.py``), so where that operator is missing, or for anything
but a one-token decoding step on a CPU, the attention is transformers' own SDPA.

:func:`shared_prefix_attention` is the context manager :func:`ragim.lm.constrained
.generate_answer_batch` decodes in; :func:`cascade_attention` is the attention itself.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

from ragim.checks import check_int
from ragim.errors import ValidationError
from ragim.lm.builtin_decoder import unwrapped_model

#: the name the attention function is registered under in transformers' ``AttentionInterface``
ATTENTION_NAME = "ragim_shared_prefix"

# the shared prefix's length while shared_prefix_attention is active (0: none)
_PREFIX = contextvars.ContextVar("ragim_shared_prefix_length", default=0)
# False inside without_cascade_attention()
_ALLOWED = contextvars.ContextVar("ragim_cascade_attention_allowed", default=True)


def flash_operator():
    """torch's CPU flash-attention operator, which returns the output and the log-sum-exp, or
    None where this torch has none."""
    aten = torch.ops.aten
    try:
        return aten._scaled_dot_product_flash_attention_for_cpu
    except (AttributeError, RuntimeError):  # pragma: no cover - torch before 2.2
        return None


def cascade_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix: int,
    *,
    attention_mask: torch.Tensor | None = None,
    scaling: float | None = None,
) -> torch.Tensor:
    """Attention of one new token per row to the whole cache, reading the shared prefix once.

    Parameters
    ----------
    query : torch.Tensor
        ``(rows, heads, 1, head_dim)``: one query per row and head.
    key, value : torch.Tensor
        ``(rows, kv_heads, positions, head_dim)``, ``heads`` a multiple of ``kv_heads``
        (grouped-query attention: head ``h`` reads key/value head ``h // (heads // kv_heads)``).
        The first ``prefix`` positions must be the same in every row; only row 0's are read.
    prefix : int
        Shared positions, ``1 <= prefix < positions``.
    attention_mask : torch.Tensor, optional
        ``(rows, 1, 1, positions)``: boolean (True = attend) or additive (0 or -inf). Every
        shared position must be attended to (the mask is read past ``prefix`` only).
    scaling : float, optional
        Scale of the dot products (default ``head_dim ** -0.5``).

    Returns
    -------
    torch.Tensor
        ``(rows, heads, 1, head_dim)`` in the query's dtype: softmax attention over all
        ``positions``, as ``torch.nn.functional.scaled_dot_product_attention`` computes it (to
        rounding: the two parts are merged in float32).

    Raises
    ------
    ValidationError
        For shapes other than the above, a ``prefix`` out of range, or a torch without the CPU
        flash operator (:func:`flash_operator`).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> q = torch.randn(3, 4, 1, 8, generator=g)
    >>> k, v = torch.randn(3, 2, 10, 8, generator=g), torch.randn(3, 2, 10, 8, generator=g)
    >>> k[:, :, :6], v[:, :, :6] = k[:1, :, :6], v[:1, :, :6]  # 6 shared positions
    >>> plain = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    >>> bool(torch.allclose(cascade_attention(q, k, v, 6), plain, atol=1e-5))
    True
    """
    flash = flash_operator()
    if flash is None:  # pragma: no cover - torch before 2.2
        raise ValidationError("this torch has no CPU flash-attention operator (cascade attention)")
    if query.dim() != 4 or key.dim() != 4 or key.shape != value.shape or query.shape[2] != 1:
        raise ValidationError(
            "cascade_attention takes a query of shape (rows, heads, 1, head_dim) and keys and "
            f"values of one shape (rows, kv_heads, positions, head_dim), got {tuple(query.shape)}, "
            f"{tuple(key.shape)} and {tuple(value.shape)}"
        )
    rows, heads, _, dim = query.shape
    kv_heads, positions = key.shape[1], key.shape[2]
    if key.shape[0] != rows or key.shape[3] != dim or heads % kv_heads:
        raise ValidationError(
            f"keys of shape {tuple(key.shape)} do not fit a query of shape {tuple(query.shape)}"
        )
    prefix = check_int(prefix, "prefix", ge=1, le=positions - 1)
    scale = dim**-0.5 if scaling is None else float(scaling)
    group = heads // kv_heads
    packed = query.reshape(rows, kv_heads, group, dim)  # each key/value head's queries together
    # the shared part: every row's queries at once, against row 0's prefix
    together = packed.transpose(0, 1).reshape(1, kv_heads, rows * group, dim)
    out_p, lse_p = flash(together, key[:1, :, :prefix], value[:1, :, :prefix], scale=scale)
    out_p = out_p.view(kv_heads, rows, group, dim).transpose(0, 1)
    lse_p = lse_p.view(kv_heads, rows, group, 1).transpose(0, 1)
    # each row's own part, under its mask
    own_mask = None
    if attention_mask is not None:
        if attention_mask.shape[-1] != positions or attention_mask.dim() != 4:
            raise ValidationError(
                f"attention_mask of shape {tuple(attention_mask.shape)} does not cover "
                f"{positions} positions as (rows, 1, 1, positions)"
            )
        own = attention_mask[..., prefix:]
        own_mask = (
            torch.zeros(own.shape, dtype=query.dtype, device=query.device).masked_fill(
                ~own, float("-inf")
            )
            if own.dtype == torch.bool
            else own.to(query.dtype)
        )
    out_o, lse_o = flash(
        packed, key[:, :, prefix:], value[:, :, prefix:], attn_mask=own_mask, scale=scale
    )
    lse_o = lse_o.unsqueeze(-1)
    top = torch.maximum(lse_p, lse_o)
    w_p, w_o = torch.exp(lse_p - top), torch.exp(lse_o - top)
    merged = (out_p.float() * w_p + out_o.float() * w_o) / (w_p + w_o)
    return merged.to(query.dtype).reshape(rows, heads, 1, dim)


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' attention-function signature: cascade attention for a one-token decoding
    step on a CPU while a shared prefix is set, transformers' SDPA for anything else."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = _PREFIX.get()
    mask_ok = attention_mask is None or (
        attention_mask.dim() == 4 and attention_mask.shape[-1] == key.shape[2]
    )
    if (
        prefix <= 0
        or query.shape[2] != 1
        or key.shape[0] < 2
        or key.shape[2] <= prefix
        or query.device.type != "cpu"
        or dropout
        or kwargs.get("position_bias") is not None
        or not mask_ok
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    out = cascade_attention(
        query, key, value, prefix, attention_mask=attention_mask, scaling=scaling
    )
    return out.transpose(1, 2).contiguous(), None


def _registered() -> bool:
    """Register the attention function (and SDPA's mask for it) with transformers, once; False
    where this transformers has no attention interface to register with."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:  # pragma: no cover - transformers before 4.54
        return False
    AttentionInterface.register(ATTENTION_NAME, _attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return True


@contextlib.contextmanager
def shared_prefix_attention(model, prefix: int) -> Iterator[bool]:
    """Within this context, ``model``'s one-token decoding steps on a CPU read the first
    ``prefix`` cached positions (the same in every row) once for all rows
    (:func:`cascade_attention`); prefill and every other call are unchanged.

    It applies only outside :func:`without_cascade_attention`, to a model on a CPU whose
    attention is transformers' SDPA and that can switch attention functions (transformers'
    ``set_attn_implementation``), on a torch with the CPU flash operator; otherwise nothing
    changes. The context yields whether it applies, and
    restores the model's attention on leaving. ``prefix`` 0 changes nothing. The caller keeps
    the first ``prefix`` positions of every row the same (a cache built by
    :func:`ragim.lm.constrained.preallocated_cache` with that prefix does).

    Raises ValidationError for a negative ``prefix``.
    """
    prefix = check_int(prefix, "prefix", ge=0)
    base = unwrapped_model(model)
    config = getattr(base, "config", None)
    try:
        on_cpu = next(base.parameters()).device.type == "cpu"
    except (AttributeError, StopIteration):
        on_cpu = False
    applies = (
        prefix > 0
        and _ALLOWED.get()
        and on_cpu
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and callable(getattr(base, "set_attn_implementation", None))
        and flash_operator() is not None
        and _registered()
    )
    if not applies:
        yield False
        return
    base.set_attn_implementation(ATTENTION_NAME)
    token = _PREFIX.set(prefix)
    try:
        yield True
    finally:
        _PREFIX.reset(token)
        base.set_attn_implementation("sdpa")


@contextlib.contextmanager
def without_cascade_attention() -> Iterator[None]:
    """Within this context, batched decoding reads every row's whole cache with transformers'
    SDPA, as without :func:`shared_prefix_attention` (for comparisons, and as a way out should
    a torch version's CPU flash operator misbehave).

    >>> with without_cascade_attention():
    ...     with shared_prefix_attention(object(), 10) as applies:
    ...         applies
    False
    """
    token = _ALLOWED.set(False)
    try:
        yield
    finally:
        _ALLOWED.reset(token)
