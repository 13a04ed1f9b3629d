"""Engines: files in, files out. :mod:`.local` runs the stages on this machine: reading
(:mod:`.reader`), the model (:mod:`.batches`) and finishing (:mod:`.finishing`), the last
two beside each other with worker processes (:mod:`.workers`); :mod:`.ray` (imported on
demand, needs ``adaptanon[ray]``) runs them in a pool of Ray actors. Both write through
:func:`.writer.write_outputs` under the rules of :mod:`.output_folder`; :mod:`.devices`
says which device and how large a batch; :mod:`.host_memory` sets the allocator of the
processes the command and its workers run in."""

from adaptanon.engines.batches import process_loaded
from adaptanon.engines.devices import default_batch_size, resolve_device
from adaptanon.engines.host_memory import reuse_freed_memory
from adaptanon.engines.local import run
from adaptanon.engines.output_folder import FAILED_DIR
from adaptanon.engines.reader import load_batches
from adaptanon.engines.writer import Summary

__all__ = [
    "FAILED_DIR",
    "Summary",
    "default_batch_size",
    "load_batches",
    "process_loaded",
    "resolve_device",
    "reuse_freed_memory",
    "run",
]
