"""``adaptanon evaluate`` (its Python entry point) over several filters, with every file
``anonymize`` would write (statuses unchanged, corrected, no_regions) written and
classified again by a plain PIL loader (bench/imagenet_sample.py's) against the original."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imagenet_sample import plain_classes

from adaptanon.classifiers import DEFAULT_MODEL, load_classifier
from adaptanon.classifiers.efficientnet_lite import lite_network
from adaptanon.evaluate import Config, evaluate
from adaptanon.io.images import InputImage
from adaptanon.method import Outcome, Settings, parse_filter
from adaptanon.regions import RegionSource

WRITTEN = ("unchanged", "corrected", "no_regions")


def evaluate_written(
    items: Sequence[InputImage],
    out: Path,
    filters: Sequence[str],
    source: RegionSource,
    regions: str,
    **evaluate_kw: Any,
) -> list[dict[str, Any]]:
    """The results row of each filter (default model and settings, ``regions`` naming the
    source) plus ``written`` (files written) and ``changed_on_written_file`` (of them,
    those whose plain-loader class differs from the original's). No cache is reused: every
    file is written by this run, under ``out/files/FILTER/``."""
    files = out / "files"
    written: dict[str, list[tuple[Path, Path]]] = {f: [] for f in filters}

    def keep(config: Config, item: InputImage, outcome: Outcome) -> None:
        if outcome.data is None or outcome.record.status not in WRITTEN:
            return
        path = files / config.filter / item.relative.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(outcome.data)
        written[config.filter].append((item.path, path))

    configs = [Config(DEFAULT_MODEL, f, Settings(filter=parse_filter(f)), regions) for f in filters]
    for cached in (out / "eval" / "cache").glob("*.jsonl"):
        cached.unlink()
    summaries = evaluate(
        items,
        out / "eval",
        configs,
        source,
        lambda spec: load_classifier(spec),
        batch_size=8,
        on_outcome=keep,
        **evaluate_kw,
    )
    model = lite_network("efficientnet_lite0")
    rows = []
    for s in summaries:
        pairs = written[s["filter"]]
        originals = plain_classes(model, [a for a, _ in pairs])
        outputs = plain_classes(model, [b for _, b in pairs])
        changed = sum(a != b for a, b in zip(originals, outputs, strict=True))
        rows.append({**s, "written": len(pairs), "changed_on_written_file": changed})
    return rows
