"""Device policy: which device a name means, how many images a batch holds on it, and
what to do when it runs out of memory."""

from __future__ import annotations

import gc

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; other names pass to ``torch.device``.

    Raises:
        ValueError: the name is not a device, or names CUDA where none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this torch build sees no CUDA GPU")
    return device


def default_batch_size(device: torch.device) -> int:
    """Images per pass: 8 on CPU (the fastest there, ``bench/throughput.py``), 64 on CUDA."""
    return 64 if device.type == "cuda" else 8


DEFAULT_BATCH_PIXELS = 24_000_000
"""Most input pixels in one batch (``--batch-pixels 24``, in megapixels), besides the image
count: one 24-megapixel photo, or two 12-megapixel ones, so that memory stays bounded
(README "Long runs" gives the measured cost per pixel, ``bench/batch_memory.py``); an
image larger than this goes through alone. ImageNet-sized images are limited by the
image count alone."""


def out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` says the device (or the host) ran out of memory."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def free_device_memory(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error, so the retry finds them."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
