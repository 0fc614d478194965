"""Deprecated: the verifiable rewards moved to :mod:`ragim.train.rewards`.

Every name of :mod:`ragim.train.rewards` is still reachable here, with a
``DeprecationWarning`` on each use; ``RewardConfig`` is
:class:`ragim.train.rewards.VerifiableRewardConfig`. Write
``from ragim.train.rewards import VerifiableRewardConfig, held_out_log_likelihood`` instead.

>>> import warnings
>>> with warnings.catch_warnings(record=True) as caught:
...     warnings.simplefilter("always")
...     from ragim.rewards import held_out_log_likelihood
>>> caught[0].category.__name__, held_out_log_likelihood.__module__
('DeprecationWarning', 'ragim.train.rewards')
"""

from __future__ import annotations

import warnings

from ragim.train import rewards as _rewards

__all__ = sorted([*_rewards.__all__, "RewardConfig"])


def __getattr__(name: str):
    target = "VerifiableRewardConfig" if name == "RewardConfig" else name
    if name.startswith("__") or not hasattr(_rewards, target):
        raise AttributeError(
            f"module 'ragim.rewards' has no attribute {name!r} (it moved to ragim.train.rewards)"
        )
    warnings.warn(
        f"ragim.rewards is deprecated; use ragim.train.rewards.{target}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_rewards, target)


def __dir__() -> list[str]:
    return list(__all__)
