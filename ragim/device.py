"""Late device resolution.

The order is: an explicit argument, then the ``RAGIM_DEVICE`` environment
variable, then CUDA when present, then the CPU. Nothing stores a resolved
device at construction time.

Examples
--------
>>> resolve_device("cpu")
'cpu'
"""

from __future__ import annotations

import os

from ragim.errors import ValidationError


def resolve_device(device: str | None = "auto") -> str:
    """Return a torch device string for ``device`` ("auto", None, "cpu", "cuda", "cuda:1", ...)."""
    if device is None or device == "auto":
        device = os.environ.get("RAGIM_DEVICE") or None
    if device is None or device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or not (device == "cpu" or device.startswith(("cuda", "mps"))):
        raise ValidationError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValidationError(
                f"device {device!r} was requested but CUDA is not available; use 'cpu' or 'auto'"
            )
    return device
