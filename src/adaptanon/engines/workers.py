"""The engine's worker processes: a pool started with ``spawn`` (a forked copy of a
process that has loaded torch, or holds a CUDA context, can deadlock), each worker
running torch, OpenMP and OpenCV on one thread, its allocator reusing freed memory
(:mod:`.host_memory`), and leaving Ctrl-C to the main process.

Stage A (:mod:`.reader`) and stage C (:mod:`.finishing`) share one pool: reading and
finishing alternate, and each worker imports torch when it starts.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from adaptanon.engines.host_memory import reuse_freed_memory

AUTO_WORKERS_MIN_IMAGES = 64
"""``--workers auto`` starts workers only for at least this many images (eight default
CPU batches): for fewer, starting them is not worth it."""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_workers(images: int, device: torch.device | None = None) -> int:
    """Worker processes for ``images`` images under ``--workers auto``: the cores the model
    leaves free (on the CPU, the cores minus torch's threads; on a GPU, all but one), or 0
    (everything in this process) below :data:`AUTO_WORKERS_MIN_IMAGES` images. Workers on
    cores the model's threads use slow it down more than they help
    (``bench/pipeline_cpu.py``)."""
    if images < AUTO_WORKERS_MIN_IMAGES:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = 1 if device is not None and device.type != "cpu" else torch.get_num_threads()
    return max(0, (cores or 1) - model)


def _start_worker(setup: Callable[..., None] | None, args: tuple[Any, ...]) -> None:
    """In each worker: one thread everywhere, Ctrl-C left to the main process, then
    ``setup(*args)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})  # for what it starts
    torch.set_num_threads(1)
    reuse_freed_memory()
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    if setup is not None:
        setup(*args)


def worker_pool(
    workers: int, setup: Callable[..., None] | None = None, args: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, each set up with ``setup(*args)`` (which,
    like ``args``, must be picklable: a module-level function)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1 for a pool, got {workers}")
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(setup, args),
    )
