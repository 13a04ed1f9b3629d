"""Engines: files in, files out. :mod:`.local` runs batches in this process (reading one
batch ahead in a thread); :mod:`.ray` (imported on demand, needs ``adaptanon[ray]``) runs
them in a pool of Ray actors. Both write through :func:`.local.write_outputs`."""

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
