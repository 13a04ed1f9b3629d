"""Engines: files in, files out. :mod:`.local` runs batches in this process (reading one
batch ahead in a thread); distributed engines will sit beside it."""

from adaptanon.engines.local import (
    FAILED_DIR,
    Summary,
    default_batch_size,
    load_batches,
    process_loaded,
    resolve_device,
    run,
)

__all__ = [
    "FAILED_DIR",
    "Summary",
    "default_batch_size",
    "load_batches",
    "process_loaded",
    "resolve_device",
    "run",
]
