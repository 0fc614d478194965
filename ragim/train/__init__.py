"""Training of the LM generator on TRL + peft: the top layer of the LM wing.

SFT (:mod:`ragim.train.sft`), reward-model training (:mod:`ragim.train.reward`), GRPO and
DPO (:mod:`ragim.train.rl`), preference pairs from verifiable rewards
(:mod:`ragim.train.preferences`), the verifiable rewards themselves
(:mod:`ragim.train.rewards`) and the plumbing the trainers share
(:mod:`ragim.train.trainer`). Each trainer takes a config dataclass
(:class:`~ragim.train.sft.SFTTrainingConfig`, ...) that describes the run and is saved
with the trained model. Inference code (:mod:`ragim.lm`, :mod:`ragim.generate`) never
imports this package.

Functions are imported on first use (TRL is heavy). To add one, map its name to
its module in ``_FUNCTIONS``.

>>> from ragim import train
>>> callable(train.train_sft)
True
"""

from __future__ import annotations

import importlib
import importlib.util

#: public name -> module that defines it
_FUNCTIONS = {
    "train_sft": "ragim.train.sft",
    "build_sft_dataset": "ragim.train.sft",
    "SFTTrainingConfig": "ragim.train.sft",
    "validate_prior_correction": "ragim.train.sft",
    "train_reward_model": "ragim.train.reward",
    "RewardModelTrainingConfig": "ragim.train.reward",
    "train_grpo": "ragim.train.rl",
    "train_dpo": "ragim.train.rl",
    "GRPOTrainingConfig": "ragim.train.rl",
    "DPOTrainingConfig": "ragim.train.rl",
    "build_preference_pairs": "ragim.train.preferences",
    "load_preferences": "ragim.lm.pairs",
    "save_preferences": "ragim.lm.pairs",
    "VerifiableRewardConfig": "ragim.train.rewards",
    "RewardModel": "ragim.lm.reward_model",
    "best_of_n": "ragim.lm.reward_model",
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


__all__ = sorted(name for name, module in _FUNCTIONS.items() if _available(module))


def __getattr__(name: str):
    module = _FUNCTIONS.get(name)
    if module is None or not _available(module):
        raise AttributeError(f"module 'ragim.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
