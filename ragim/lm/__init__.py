"""Everything the LM generator needs at inference time, in layers that only point down.

1. **Answer format** — :mod:`ragim.lm.answer` (the one codec: write, parse, grammar),
   :mod:`ragim.lm.prompts` (the prompt around it) and :mod:`ragim.lm.pairs` (the
   preference-pair file format).
2. **Backbone** — :mod:`ragim.lm.base_models` (base models, offline) and
   :mod:`ragim.lm.adapters` (LoRA adapter artifacts).
3. **Inference** — :mod:`ragim.lm.constrained` (grammar-constrained decoding) and
   :mod:`ragim.lm.reward_model` (the learned reward model and best-of-n); the generator
   itself is :class:`ragim.generate.lm.LMGenerator`.

Training (:mod:`ragim.train`) sits above all of them; nothing here imports it. Names are
imported on first use, so ``import ragim.lm.answer`` does not load torch.

>>> from ragim.lm import format_json_numbers
>>> format_json_numbers({"a": 1.25}, ["a"])
'{"a": 1.25}'
"""

from __future__ import annotations

import importlib

#: public name -> module that defines it
_NAMES = {
    "DEFAULT_BASE_MODEL": "ragim.lm.base_models",
    "TINY_BASE_MODEL": "ragim.lm.base_models",
    "base_model_identity": "ragim.lm.base_models",
    "build_tiny_tokenizer": "ragim.lm.base_models",
    "default_cache_dir": "ragim.lm.base_models",
    "load_base_model": "ragim.lm.base_models",
    "ANSWER_FORMATS": "ragim.lm.answer",
    "AnswerFormat": "ragim.lm.answer",
    "AnswerGrammar": "ragim.lm.answer",
    "JSONAnswerFormat": "ragim.lm.answer",
    "answer_format": "ragim.lm.answer",
    "format_json_numbers": "ragim.lm.answer",
    "parse_json_numbers": "ragim.lm.answer",
    "ConstrainedResult": "ragim.lm.constrained",
    "generate_answers": "ragim.lm.constrained",
    "generate_json_numbers": "ragim.lm.constrained",
    "RewardModel": "ragim.lm.reward_model",
    "RewardModelConfig": "ragim.lm.reward_model",
    "best_of_n": "ragim.lm.reward_model",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'ragim.lm' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
