"""The paper's Table 4 (adaptive face anonymization on ImageNet) on our ImageNet sample,
with privacy measures (issue 8, points 3 and 5).

On ``../shared/data/imagenet-sample`` (500 photos): how many images get at least one face
(CenterFace, ``--regions faces`` defaults) and one plate (Haar cascade), detector seconds
per image as a ratio to one classifier forward pass (EfficientNet-Lite0, batch 1,
preprocessing included) timed on the same images in the same run; then ``adaptanon
evaluate`` (its Python entry point, default model and settings, ``--regions faces``) with
the Yang et al. obfuscation (``--filter yang``), blur and mask: vulnerable share, not
corrected, mean steps, face re-detection on the plain and the corrected images, region
PSNR plain vs corrected, the correction's size. Every file that ``anonymize`` would write
(statuses unchanged, corrected, no_regions) is written and classified again with a plain
PIL loader (bench/imagenet_sample.py's) against the original. Writes docs/results.md's
``bench:faces_table4`` section (not with ``--limit``).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/faces_table4.py [--limit N] [--no-docs]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from docs_section import update_section
from imagenet_sample import plain_classes

from adaptanon.classifiers import DEFAULT_MODEL, efficientnet_lite, load_classifier
from adaptanon.evaluate import Config, evaluate
from adaptanon.io import read_image
from adaptanon.io.codecs import to_image
from adaptanon.io.images import InputImage, collect_inputs
from adaptanon.method import Outcome, Settings, parse_filter
from adaptanon.regions import DetectorOptions, RegionQuery, RegionSource, parse_region_source
from adaptanon.regions.base import Detection
from adaptanon.regions.detectors import CenterFace

ROOT = Path(__file__).resolve().parent.parent
FILTERS = ("yang", "blur", "mask")
WRITTEN = ("unchanged", "corrected", "no_regions")


class RememberedFaces(CenterFace):
    """CenterFace that answers an image it has already seen (same pixels) from memory, so
    the three configurations detect each original once; the plain and corrected images
    differ in pixels and are detected for real."""

    def __init__(self, options: DetectorOptions) -> None:
        super().__init__(options)
        self.memory: dict[str, list[Detection]] = {}

    @staticmethod
    def key(query: RegionQuery) -> str:
        return hashlib.sha1(query.image.detach().cpu().numpy().tobytes()).hexdigest()

    def find_many(self, queries: Sequence[RegionQuery]) -> list[list[Detection]]:
        keys = [self.key(q) for q in queries]
        todo = [q for q, k in zip(queries, keys, strict=True) if k not in self.memory]
        if todo:
            for k, dets in zip([self.key(q) for q in todo], super().find_many(todo), strict=True):
                self.memory[k] = dets
        return [self.memory[k] for k in keys]


Written = dict[str, list[tuple[Path, Path]]]


def file_keeper(
    files: Path, filters: Sequence[str]
) -> tuple[Written, Callable[[Config, InputImage, Outcome], None]]:
    """``(written, keep)``: ``keep`` is an ``on_outcome`` for ``evaluate`` that writes each
    file ``anonymize`` would write (statuses unchanged, corrected, no_regions) under
    ``files/<filter>/`` and lists ``(input, output)`` per filter in ``written``."""
    written: Written = {f: [] for f in filters}

    def keep(config: Config, item: InputImage, out: Outcome) -> None:
        if out.data is None or out.record.status not in WRITTEN:
            return
        path = files / config.filter / item.relative.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(out.data)
        written[config.filter].append((item.path, path))

    return written, keep


def classes_changed(model: torch.nn.Module, pairs: list[tuple[Path, Path]]) -> int:
    """How many written files a plain PIL loader classifies unlike their inputs."""
    originals = plain_classes(model, [a for a, _ in pairs])
    outputs = plain_classes(model, [b for _, b in pairs])
    return sum(a != b for a, b in zip(originals, outputs, strict=True))


def evaluate_written(
    items: list[InputImage], out: Path, filters: Sequence[str], source: RegionSource
) -> list[dict[str, Any]]:
    """``evaluate`` (default model and settings, ``--regions faces`` label) with each of
    ``filters`` under ``out/eval`` (no cache reuse: every file is written by this run),
    the files ``anonymize`` would write kept under ``out/files``; each results row gains
    ``written`` and ``changed_on_written_file`` (plain PIL loader against the input)."""
    written, keep = file_keeper(out / "files", filters)
    configs = [Config(DEFAULT_MODEL, f, Settings(filter=parse_filter(f)), "faces") for f in filters]
    for cached in (out / "eval" / "cache").glob("*.jsonl"):
        cached.unlink()
    summaries = evaluate(
        items, out / "eval", configs, source, load_classifier, batch_size=8, on_outcome=keep
    )
    model = efficientnet_lite("efficientnet_lite0").model
    rows = []
    for s in summaries:
        pairs = written[s["filter"]]
        rows.append(
            {**s, "written": len(pairs), "changed_on_written_file": classes_changed(model, pairs)}
        )
    return rows


def detection_counts(
    items: list[InputImage], faces: RememberedFaces, threads: int
) -> dict[str, Any]:
    """Images with >= 1 face and >= 1 plate, and seconds per image of each detector and
    of one classifier forward pass (batch 1), on the same images."""
    plates = parse_region_source("plates", DetectorOptions())
    model = efficientnet_lite("efficientnet_lite0")
    seconds = {"classifier": 0.0, "faces": 0.0, "plates": 0.0}
    with_face = with_plate = 0
    first = to_image(read_image(items[0].path))
    with torch.no_grad():
        model.forward(model.inputs([first]))  # warm-up, not timed
    plates.find([RegionQuery("warm", first)])
    CenterFace.find_many(faces, [RegionQuery("warm", first)])
    for item in items:
        image = to_image(read_image(item.path))
        start = time.perf_counter()
        with torch.no_grad():
            model.forward(model.inputs([image]))
        seconds["classifier"] += time.perf_counter() - start
        start = time.perf_counter()
        (found,) = faces.find([RegionQuery(item.relative.as_posix(), image)])
        seconds["faces"] += time.perf_counter() - start
        start = time.perf_counter()
        (plate,) = plates.find([RegionQuery(item.relative.as_posix(), image)])
        seconds["plates"] += time.perf_counter() - start
        with_face += bool(found.detections)
        with_plate += bool(plate.detections)
    n = len(items)
    return {
        "images": n,
        "with_face": with_face,
        "with_plate": with_plate,
        "seconds": {k: v / n for k, v in seconds.items()},
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=Path("../shared/data/imagenet-sample"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/faces_table4")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    items = collect_inputs([str(args.images)])
    items = items[: args.limit] if args.limit else items
    faces = RememberedFaces(DetectorOptions())
    start = time.perf_counter()
    detection = detection_counts(items, faces, threads)
    print(json.dumps(detection), flush=True)

    rows = []
    for row in evaluate_written(items, args.out, FILTERS, faces):
        rows.append(row)
        keys = ("filter", "face_images", "face_vulnerable_initial_pct", "not_corrected",
                "face_mean_steps", "face_redetection_plain_pct", "face_redetection_corrected_pct",
                "region_psnr_plain_mean", "region_psnr_corrected_mean", "written",
                "changed_on_written_file")  # fmt: skip
        print(json.dumps({k: rows[-1].get(k) for k in keys}), flush=True)
    minutes = (time.perf_counter() - start) / 60
    text = render(detection, rows, args, minutes)
    print(text)
    if not args.no_docs and args.limit is None:
        update_section("faces_table4", "Faces on ImageNet: the paper's Table 4, with privacy", text)


def pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}%"


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(
    detection: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace, minutes: float
) -> str:
    """The Markdown section for docs/results.md."""
    n = detection["images"]
    sec = detection["seconds"]
    limit = f" (first {args.limit} images, --limit)" if args.limit else ""
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other work, one torch/onnxruntime thread "
        f"(OMP_NUM_THREADS={detection['threads']}), torch {torch.__version__}, no GPU, by "
        f"`OMP_NUM_THREADS=1 .venv/bin/python bench/faces_table4.py` on "
        f"{args.images.name}{limit}, {minutes:.0f} minutes in all.",
        "",
        f"**Detections.** {detection['with_face']} of {n} images "
        f"({100 * detection['with_face'] / n:.1f}%) have at least one face (CenterFace, score > "
        f"0.3; the paper: 17.5% of ImageNet's test images with Yang et al.'s annotations), "
        f"{detection['with_plate']} ({100 * detection['with_plate'] / n:.1f}%) at least one "
        f"plate (Haar cascade, a weak fallback that fires on text and grilles). Seconds per "
        f"image: classifier forward {sec['classifier']:.3f} (EfficientNet-Lite0, batch 1), "
        f"faces {sec['faces']:.3f} ({sec['faces'] / sec['classifier']:.1f}x a forward pass), "
        f"plates {sec['plates']:.3f} ({sec['plates'] / sec['classifier']:.1f}x).",
        "",
        "**Table 4 analog** (`adaptanon evaluate --regions faces --filter yang,blur,mask`, "
        "efficientnet_lite0, alpha 0.1, criterion `class`, PNG): vulnerable = class changed "
        "after plain anonymization, in percent of all images as in the paper's Table 4 (and "
        "of the images with a face).",
        "",
        "| filter | images with a face | % vulnerable (initial, of all / of face images) | "
        "not corrected | % vulnerable (final) | mean steps | class changed on the written "
        "file (plain PIL loader) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['filter']} | {r.get('face_images', 0)} | "
            f"{pct(r.get('face_vulnerable_initial_pct'))} / "
            f"{pct(r.get('face_vulnerable_initial_within_pct'))} | {r['not_corrected']} "
            f"(failed {r['failed']}, weak {r['weak']}) | {pct(r['vulnerable_final_pct'], 3)} | "
            f"{num(r['mean_steps'])} | {r['changed_on_written_file']} of {r['written']} "
            f"({100 * r['changed_on_written_file'] / max(1, r['written']):.3f}%) |"
        )
    lines += [
        "",
        "**Privacy, plain vs corrected** (target: corrected faces found again at most 1 "
        "percentage point more often than plain ones; region PSNR within 0.5 dB).",
        "",
        "| filter | faces | found again: plain | found again: corrected | region PSNR mean "
        "(dB): plain / corrected | region SSIM mean: plain / corrected | correction mean / "
        "max (0-255 levels) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['filter']} | {r.get('faces_checked')} | "
            f"{pct(r.get('face_redetection_plain_pct'), 1)} | "
            f"{pct(r.get('face_redetection_corrected_pct'), 1)} | "
            f"{num(r.get('region_psnr_plain_mean'))} / {num(r.get('region_psnr_corrected_mean'))} | "
            f"{num(r.get('region_ssim_plain_mean'), 3)} / "
            f"{num(r.get('region_ssim_corrected_mean'), 3)} | "
            f"{num(r.get('correction_mean_levels'))} / {num(r.get('correction_max_levels'), 0)} |"
        )
    lines += [
        "",
        "Yang: each face box (CenterFace's, x1.3) enlarged by 0.1 of its longer side d on "
        "every side, Gaussian sigma 0.1 d (at least 2 pixels) cut at 3 sigma, blended through "
        "the enlarged box's mask blurred the same way; one sigma per face (Yang et al.'s code "
        "uses the largest face's for the whole image). Face re-detection: CenterFace at the "
        "same threshold on the plainly anonymized and the final images; a face counts as "
        "found again when a detection overlaps its box with IoU >= 0.5. Region PSNR and SSIM: "
        "each face box against the original (the strength fields of the manifest). Not "
        "corrected counts `failed` images, including those whose original's top-1 margin is "
        "already below the criterion's 0.01 logit, which no file of them can meet (their "
        "class itself is kept).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
