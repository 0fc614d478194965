"""Language-model plumbing: base models and constrained JSON decoding.

>>> from ragim.lm import format_json_numbers
>>> format_json_numbers({"a": 1.25}, ["a"])
'{"a": 1.25}'
"""

from __future__ import annotations

from ragim.lm.base_models import (
    DEFAULT_BASE_MODEL,
    TINY_BASE_MODEL,
    base_model_identity,
    build_tiny_tokenizer,
    default_cache_dir,
    load_base_model,
)
from ragim.lm.constrained import (
    ConstrainedResult,
    format_json_numbers,
    generate_json_numbers,
    parse_json_numbers,
)

__all__ = [
    "DEFAULT_BASE_MODEL",
    "TINY_BASE_MODEL",
    "ConstrainedResult",
    "base_model_identity",
    "build_tiny_tokenizer",
    "default_cache_dir",
    "format_json_numbers",
    "generate_json_numbers",
    "load_base_model",
    "parse_json_numbers",
]
