"""The process's allocator keeps freed memory for reuse instead of returning it to the OS.

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a
fresh ``mmap`` and gives it back with ``munmap`` when freed. A CPU model's activations at
batch 8 are such blocks (EfficientNet-Lite0's first layers: 38 MiB each), so every layer
of every pass page-faults its output in again, and element-wise layers then run at the
speed of the kernel's page zeroing rather than of memory. PyTorch's CPU tuning guide gives
the same cause for preloading jemalloc or tcmalloc; :func:`reuse_freed_memory` gets the
effect from glibc itself with ``mallopt``.

The cost is memory: what the process freed stays mapped (up to :data:`KEEP_FREED_BYTES` at
the top of the heap), and blocks below :data:`MMAP_THRESHOLD_BYTES` come from the heap, so
its resident size stays near its peak, and the heap's fragments raise that peak on large
photos. ``bench/host_memory.py`` measures both sides; ``ADAPTANON_REUSE_FREED_MEMORY=0``
in the environment turns the setting off.
"""

from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD_BYTES = 256 << 20
"""Blocks from this size up are still mapped and unmapped one by one (a 24 MP photo as
float32 is 288 MiB): kept, they would hold the most memory for the least gain."""

KEEP_FREED_BYTES = 1 << 30
"""Free memory at the heap's top the process keeps instead of returning it."""

ENVIRONMENT_SWITCH = "ADAPTANON_REUSE_FREED_MEMORY"
"""Set to ``0`` in the environment, :func:`reuse_freed_memory` changes nothing."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied = False


def reuse_freed_memory() -> bool:
    """Set this process's glibc allocator to keep and reuse freed blocks below
    :data:`MMAP_THRESHOLD_BYTES` (see the module's text). Returns whether it is in effect:
    False off Linux, without glibc, or with :data:`ENVIRONMENT_SWITCH` set to ``0``, where
    nothing changes. Idempotent."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or os.environ.get(ENVIRONMENT_SWITCH) == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library Python itself runs on
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    )
    return _applied
