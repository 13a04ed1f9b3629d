"""Licence plates, found and unreadable (issue 17, part 4).

1. **Found.** On ``../shared/data/plates-eu`` (108 photos of European cars, the plates'
   boxes and texts in ``plates.csv``): the share of plates *covered* (at least 90% of the
   plate's area inside one region, regions as ``anonymize`` uses them, i.e. enlarged by the
   default ``--box-scale 1.3``), *other regions* per photo (regions that overlap no plate)
   and detection seconds per photo, for the Haar cascade (``plates:haar``), the text
   detector at the photo's resolution only, the text detector with the upscaled tiles
   (``plates``, the default) and that joined with the cascade. Then how often each fires on
   ``../shared/data/imagenet-sample`` (photos of anything, few cars).
2. **Unreadable.** ``adaptanon evaluate`` (its Python entry point, EfficientNet-Lite0,
   default settings, ``--regions plates``) with blur (the default filter), mask, mosaic
   and Yang et al.'s blur sized by each box on the
   plate photos, with plate readability: OCR (PP-OCRv4's recognizer) on each ground-truth
   plate box of the original, plainly anonymized and corrected images, characters read
   correctly against the true text. Every file ``anonymize`` would write (statuses
   unchanged, corrected, no_regions) is written and classified again with a plain PIL
   loader against the original; mean correction steps.

Writes docs/results.md's ``bench:plates`` section (not with ``--limit``).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/plates.py [--limit N] [--imagenet N] [--no-docs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from docs_section import update_section
from written import evaluate_written

from adaptanon.evaluate.readability import PlateCheck, PlateReader, find_plate_truth
from adaptanon.io import read_image
from adaptanon.io.codecs import to_image
from adaptanon.io.images import InputImage, collect_inputs
from adaptanon.records import Box
from adaptanon.regions import (
    DetectorOptions,
    RegionQuery,
    Regions,
    RegionSource,
    parse_region_source,
)
from adaptanon.regions.detectors.text_plates import TextPlates

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("../shared/data")
FILTERS = ("blur", "mask", "mosaic", "yang")
FUSED = "plates+plates:haar"


class Remembered(RegionSource):
    """``source``, answering an image it has already seen (same pixels) from memory, so
    that the configurations detect each photo once."""

    def __init__(self, source: RegionSource) -> None:
        self.source = source
        self.memory: dict[str, Regions] = {}

    @staticmethod
    def key(query: RegionQuery) -> str:
        return hashlib.sha1(query.image.detach().cpu().numpy().tobytes()).hexdigest()

    def find(self, queries: Sequence[RegionQuery]) -> list[Regions]:
        keys = [self.key(q) for q in queries]
        todo = [(k, q) for k, q in zip(keys, queries, strict=True) if k not in self.memory]
        if todo:
            found = self.source.find([q for _, q in todo])
            self.memory.update((k, r) for (k, _), r in zip(todo, found, strict=True))
        return [self.memory[k] for k in keys]

    def find_one(self, query: RegionQuery) -> list:
        return list(self.find([query])[0].detections)

    def describe(self) -> str:
        return self.source.describe()


def inside(plate: Box, box: Box) -> float:
    """Share of ``plate``'s area inside ``box``."""
    w = max(0, min(plate[2], box[2]) - max(plate[0], box[0]))
    h = max(0, min(plate[3], box[3]) - max(plate[1], box[1]))
    return w * h / max(1, (plate[2] - plate[0]) * (plate[3] - plate[1]))


def detect(
    items: list[InputImage], sources: dict[str, RegionSource]
) -> tuple[dict[str, list[list[Box]]], dict[str, float]]:
    """Per source, the region boxes of each image and the seconds per image."""
    boxes: dict[str, list[list[Box]]] = {name: [] for name in sources}
    seconds = dict.fromkeys(sources, 0.0)
    warm = to_image(read_image(items[0].path))
    for source in sources.values():
        source.find([RegionQuery("warm", warm)])  # first calls allocate: time none of them
    for item in items:
        image = to_image(read_image(item.path))
        for name, source in sources.items():
            start = time.perf_counter()
            (found,) = source.find([RegionQuery(item.relative.as_posix(), image)])
            seconds[name] += time.perf_counter() - start
            boxes[name].append(found.boxes)
    boxes[FUSED] = [a + b for a, b in zip(boxes["plates"], boxes["plates:haar"], strict=True)]
    seconds[FUSED] = seconds["plates"] + seconds["plates:haar"]
    return boxes, {k: v / len(items) for k, v in seconds.items()}


def found_counts(per_image: list[list[Box]], truth: list[list[Box]]) -> dict[str, Any]:
    """Plates covered, other regions per photo and photos with >= 1 region."""
    covered = other = 0
    for boxes, plates in zip(per_image, truth, strict=True):
        covered += sum(any(inside(p, b) >= 0.9 for b in boxes) for p in plates)
        other += sum(all(inside(p, b) == 0 for p in plates) for b in boxes)
    n = len(per_image)
    return {
        "plates": sum(map(len, truth)),
        "covered": covered,
        "other_per_photo": other / n,
        "fired": sum(bool(b) for b in per_image),
        "regions_per_photo": sum(map(len, per_image)) / n,
        "photos": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/plates")
    parser.add_argument("--limit", type=int, default=None, help="first N plate photos")
    parser.add_argument("--imagenet", type=int, default=500, help="ImageNet photos (0: none)")
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    options = DetectorOptions()
    sources: dict[str, RegionSource] = {
        "plates:haar": parse_region_source("plates:haar", options),
        "text": TextPlates(options, small=False),
        "plates": parse_region_source("plates", options),
    }
    cars = collect_inputs([str(args.data / "plates-eu")])[: args.limit]
    truth = find_plate_truth(cars)
    truth_boxes = [[p.box for p in truth.get(str(i.path.resolve()), [])] for i in cars]
    boxes, seconds = detect(cars, sources)
    found = {name: found_counts(b, truth_boxes) for name, b in boxes.items()}
    print(json.dumps({"found": found, "seconds": seconds}), flush=True)
    fires: dict[str, Any] = {}
    if args.imagenet:
        photos = collect_inputs([str(args.data / "imagenet-sample")])[: args.imagenet]
        inet, _ = detect(photos, sources)
        fires = {name: found_counts(b, [[] for _ in b]) for name, b in inet.items()}
        print(json.dumps({"imagenet": fires}), flush=True)

    rows = evaluate_written(
        cars,
        args.out,
        FILTERS,
        Remembered(sources["plates"]),
        "plates",
        plates=PlateCheck(truth, PlateReader()),
    )
    for row in rows:
        keys = ("filter", "plate_chars", "plate_chars_read_original_pct",
                "plate_chars_read_plain_pct", "plate_chars_read_corrected_pct",
                "changed_after_anonymization", "not_corrected", "mean_steps", "written",
                "changed_on_written_file")  # fmt: skip
        print(json.dumps({k: row.get(k) for k in keys}), flush=True)
    minutes = (time.perf_counter() - start) / 60
    text = render(found, seconds, fires, rows, args, threads, minutes)
    print(text)
    if not args.no_docs and args.limit is None:
        update_section("plates", "Plates: found, and unreadable", text)


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}%"


NAMES = {
    "plates:haar": "Haar cascade (`plates:haar`)",
    "text": "text detector, photo's resolution only",
    "plates": "text detector + upscaled tiles (`plates`, default)",
    FUSED: "text + tiles, joined with the Haar cascade",
}


def render(
    found: dict[str, dict[str, Any]],
    seconds: dict[str, float],
    fires: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    threads: int,
    minutes: float,
) -> str:
    """The Markdown section for docs/results.md."""
    limit = f" (first {args.limit} photos, --limit)" if args.limit else ""
    n_inet = next(iter(fires.values()))["photos"] if fires else 0
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other jobs, one torch/onnxruntime thread "
        f"(OMP_NUM_THREADS={threads}), torch {torch.__version__}, no GPU, by "
        "`OMP_NUM_THREADS=1 .venv/bin/python bench/plates.py` on plates-eu"
        f"{limit} and the first {n_inet} photos of imagenet-sample, {minutes:.0f} minutes in all.",
        "",
        "**Found** (target: at least 90% of the plates covered, at most 1 other region per "
        "photo). Covered: at least 90% of the plate's area inside one region (boxes x1.3, "
        "the default); other: a region overlapping no plate; ImageNet: photos of anything, "
        "a region there is almost always something else (most are real text: signs, "
        "labels, screens).",
        "",
        "| detector | plates covered | other regions per photo | seconds per photo | "
        "ImageNet photos with a region | ImageNet regions per photo |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in NAMES.items():
        f = found[name]
        inet = fires.get(name)
        fired = (
            f"{inet['fired']} of {inet['photos']} ({100 * inet['fired'] / inet['photos']:.1f}%)"
            if inet
            else "–"
        )
        per = f"{inet['regions_per_photo']:.2f}" if inet else "–"
        lines.append(
            f"| {label} | {f['covered']} of {f['plates']} "
            f"({100 * f['covered'] / max(1, f['plates']):.1f}%) | {f['other_per_photo']:.2f} | "
            f"{seconds[name]:.3f} | {fired} | {per} |"
        )
    lines += [
        "",
        "**Unreadable** (target: at most 1 character in 7 read after anonymization, i.e. "
        "14.3%). `adaptanon evaluate --regions plates` on plates-eu, efficientnet_lite0, "
        "alpha 0.1, criterion `class`, PNG; OCR on each ground-truth plate box (a plate the "
        "detector missed is read as it is).",
        "",
        "| filter | plates | characters | read: original | read: plain | read: corrected | "
        "class changed after plain anonymization | not corrected | mean steps | class "
        "changed on the written file (plain PIL loader) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        steps = "–" if r["mean_steps"] is None else f"{r['mean_steps']:.2f}"
        lines.append(
            f"| {r['filter']} | {r['plates_checked']} | {r['plate_chars']} | "
            f"{pct(r['plate_chars_read_original_pct'])} | {pct(r['plate_chars_read_plain_pct'])} "
            f"| {pct(r['plate_chars_read_corrected_pct'])} | "
            f"{r['changed_after_anonymization']} of {r['images']} | {r['not_corrected']} "
            f"(failed {r['failed']}, weak {r['weak']}) | {steps} | "
            f"{r['changed_on_written_file']} of {r['written']} |"
        )
    lines += [
        "",
        "Characters read: PP-OCRv4's recognizer restricted to 0-9 A-Z on the plate's true box; "
        "per plate, the true text's length minus the edit distance to what was read (at "
        "least 0), summed, as a share of all true characters. Mean steps over corrected "
        "images (the paper: 1.95 for blur, 3.54 for mask with MobileNetV2 on ImageNet).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
