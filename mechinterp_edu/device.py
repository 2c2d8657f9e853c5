"""The one place that picks the compute device.

CUDA when available, else CPU. The environment variable ``MECHINTERP_EDU_DEVICE``
overrides (``cpu``, ``cuda``, ``cuda:1``...). Reference implementations, training
and grading all call :func:`get_device`.
"""
from __future__ import annotations

import os

import torch

ENV_VAR = "MECHINTERP_EDU_DEVICE"


class DeviceError(RuntimeError):
    """The requested device cannot be used; the message says what to do."""


def get_device() -> torch.device:
    """Return the device the course computes on.

    ``MECHINTERP_EDU_DEVICE`` wins when set; otherwise CUDA if present, else CPU.
    Asking for CUDA on a machine without it raises :class:`DeviceError` with a
    message naming the variable, rather than failing later deep inside torch.
    """
    requested = os.environ.get(ENV_VAR, "").strip()
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise DeviceError(
                f"{ENV_VAR}={requested!r} is not a device torch understands ({exc}). "
                f"Use 'cpu' or 'cuda', or unset {ENV_VAR}."
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError(
                f"{ENV_VAR}={requested!r} asks for CUDA, but torch sees no GPU here. "
                f"Unset {ENV_VAR} or set it to 'cpu'."
            )
        return device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def describe_device(device: torch.device | None = None) -> str:
    """One line for humans: which device, and why."""
    device = device or get_device()
    source = f"set by {ENV_VAR}" if os.environ.get(ENV_VAR) else "auto-detected"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{device} ({name}, {source})"
    return f"{device} ({source})"
