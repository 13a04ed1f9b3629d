"""The Ray engine (``adaptanon anonymize --engine ray``, ``pip install 'adaptanon[ray]'``):
the method runs in a pool of Ray actors, each holding its own classifier, on a local Ray
instance or a cluster (``--address``); the driver writes the outputs and the manifest
with the local engine's writer (:func:`~adaptanon.engines.writer.write_outputs`), so the
layout, statuses and guarantees are the same, resuming included.

The inputs go to the actors as a Ray dataset of paths: on a cluster they must lie on a
file system that every node sees under the same path. Each actor reads its images, runs
:func:`~adaptanon.engines.local.local_outcomes` (batches bounded by images and pixels,
out-of-memory splitting) and returns the records and the encoded files; the driver
writes each as it arrives, so memory stays bounded by Ray Data's streaming backpressure.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptanon.classifiers import Classifier, load_classifier
from adaptanon.engines.devices import resolve_device
from adaptanon.engines.host_memory import reuse_freed_memory
from adaptanon.engines.local import local_outcomes
from adaptanon.engines.verify import Verify
from adaptanon.engines.writer import Summary, describe_run, write_outputs
from adaptanon.io.images import InputImage, current_pixel_limit, pixel_limit
from adaptanon.method.pipeline import Outcome, Settings
from adaptanon.records import ImageRecord
from adaptanon.regions import RegionSource


@dataclass(frozen=True)
class ModelSpec:
    """How each actor builds its classifier, as ``--model`` does: ``load_classifier(spec,
    preprocess, class_names, trust_model=...)`` moved to ``device`` (``auto``: the GPU Ray gave the actor,
    else the CPU). ``paths`` are put on the actor's ``sys.path`` first (the driver's
    working folder, where a ``module:function`` factory may live)."""

    spec: str
    device: str = "auto"
    class_names: str | None = None
    preprocess: Any = None
    trust_model: bool = False
    paths: tuple[str, ...] = field(default_factory=lambda: (os.getcwd(),))

    def __call__(self) -> Classifier:
        for path in reversed(self.paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        model = load_classifier(
            self.spec, self.preprocess, self.class_names, trust_model=self.trust_model
        )
        return model.to(resolve_device(self.device))


class AnonymizeActor:
    """One Ray actor: holds a classifier and turns batches of paths into records and
    encoded files (a callable class for ``Dataset.map_batches``)."""

    def __init__(
        self,
        model: Callable[[], Classifier],
        source: RegionSource,
        settings: Settings,
        batch_size: int,
        batch_pixels: int | None,
        max_pixels: int,
        threads: int,
    ) -> None:
        torch.set_num_threads(max(1, threads))
        reuse_freed_memory()
        self.classifier = model()
        self.source = source
        self.settings = settings
        self.batch_size = batch_size
        self.batch_pixels = batch_pixels
        self.max_pixels = max_pixels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        items = [
            InputImage(Path(str(path)), Path(str(relative)))
            for path, relative in zip(batch["path"], batch["relative"], strict=True)
        ]
        records: list[str] = []
        data: list[bytes | None] = []
        with pixel_limit(self.max_pixels):
            produced = local_outcomes(
                self.classifier, self.source, self.settings, items, self.batch_size,
                self.batch_pixels,
            )  # fmt: skip
            for _, out in produced:
                records.append(out.record.to_json())
                data.append(out.data)
        return {"index": list(batch["index"]), "record": records, "data": data}


def start_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Connect to the cluster at ``address`` (``auto``: the one this machine belongs to),
    or start a local Ray instance with ``num_cpus`` (default: this machine's CPUs). Returns
    True when this call started or connected Ray (and so should shut it down).

    Raises:
        ImportError: Ray is not installed (``pip install 'adaptanon[ray]'``).
    """
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    if address is None:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **options)
    else:
        ray.init(address=address, **options)
    return True


def default_actors(gpus_per_actor: float) -> int:
    """Actors to start: one per CPU of the cluster, or as many as its GPUs hold."""
    import ray

    resources = ray.cluster_resources()
    if gpus_per_actor > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_actor))
    return max(1, int(resources.get("CPU", 1)))


def ray_outcomes(
    todo: Sequence[InputImage],
    model: Callable[[], Classifier],
    source: RegionSource,
    settings: Settings,
    batch_size: int,
    batch_pixels: int | None,
    actors: int,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
) -> Iterator[tuple[InputImage, Outcome]]:
    """The Ray engine's producer (a :data:`~adaptanon.engines.writer.Produce`): each input
    with its outcome, in the order they finish, computed by ``actors`` actors."""
    import ray

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    rows = [
        {"index": i, "path": os.path.abspath(item.path), "relative": item.relative.as_posix()}
        for i, item in enumerate(todo)
    ]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size)))
    results = dataset.map_batches(
        AnonymizeActor,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={
            "model": model,
            "source": source,
            "settings": settings,
            "batch_size": batch_size,
            "batch_pixels": batch_pixels,
            "max_pixels": current_pixel_limit(),
            "threads": max(1, int(cpus_per_actor)),
        },
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        for index, text, data in zip(batch["index"], batch["record"], batch["data"], strict=True):
            record = ImageRecord.from_dict(json.loads(str(text)))
            yield todo[int(index)], Outcome(record, None if data is None else bytes(data))


def run(
    inputs: Sequence[InputImage],
    out_dir: Path,
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    batch_size: int = 8,
    on_record: Callable[[ImageRecord], None] | None = None,
    *,
    model: Callable[[], Classifier],
    overwrite: bool = False,
    verify: Verify | None = None,
    resume: bool = True,
    batch_pixels: int | None = None,
    extra_settings: Mapping[str, Any] | None = None,
    address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
    num_cpus: int | None = None,
) -> Summary:
    """:func:`adaptanon.engines.run` on Ray: the same outputs, manifest and rules.

    ``classifier`` (the driver's copy) names the model in the records; ``model`` (e.g. a
    :class:`ModelSpec`) builds each actor's copy. Without ``address`` a local Ray instance
    with ``num_cpus`` CPUs (default: ``actors`` CPU actors' worth, else all) is started
    and shut down afterwards; none when every image was finished by an earlier run. ``actors``
    defaults to one per CPU, or with ``gpus_per_actor`` to as many as the GPUs hold; CPU
    actors run torch with one thread each.

    Raises:
        ImportError: Ray is not installed.
        OutputRefused, RunStopped, KeyboardInterrupt: as :func:`adaptanon.engines.run`.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    if gpus_per_actor < 0:
        raise ValueError(f"GPUs per actor must be >= 0, got {gpus_per_actor}")
    started = False

    def produce(todo: list[InputImage]) -> Iterator[tuple[InputImage, Outcome]]:
        nonlocal started
        local_cpus = num_cpus or (actors if actors and not gpus_per_actor else None)
        started = start_ray(address, local_cpus)
        pool = actors or default_actors(gpus_per_actor)
        return ray_outcomes(
            todo, model, source, settings, batch_size, batch_pixels, pool, gpus_per_actor
        )

    try:
        return write_outputs(
            inputs,
            out_dir,
            produce,
            describe_run(classifier, source, settings, verify, extra_settings),
            settings.codec.extension,
            on_record,
            overwrite=overwrite,
            verify=verify,
            resume=resume,
        )
    finally:
        if started:
            import ray

            ray.shutdown()
