"""Built-in detectors on real photographs: how many images get a face or a plate, plate
recall against ground truth, and detector time per image against the classifier's.

Runs CenterFace (``--regions faces``) and the Haar plate cascade (``--regions plates``;
``plates:platedet`` too when the user installed it) on ``../shared/data/imagenet-sample``
(500 ImageNet photos, few people) and ``../shared/data/plates-eu`` (108 car photos, one
plate each, ground truth in ``boxes.json``). Reports images with >= 1 face at several
thresholds, images with >= 1 plate, plate recall at IoU >= 0.3 (a ground-truth plate
counts as found when some detection overlaps it that much), and seconds per image of
each detector as a ratio to one EfficientNet-Lite0 forward pass (preprocessing included,
batch 1) timed on the same images in the same run. Writes the table into docs/results.md
between the ``bench:detectors`` markers.

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/detectors.py [--limit N] [--no-docs]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from docs_section import update_section

from adaptanon.classifiers import efficientnet_lite
from adaptanon.io import read_image
from adaptanon.io.codecs import to_image
from adaptanon.regions import DetectorOptions, RegionQuery, RegionSource, parse_region_source
from adaptanon.regions.detectors import DEFAULT_BOX_SCALE, scale_box

FACE_THRESHOLDS = (0.2, 0.3, 0.4, 0.5)
DATA = Path("../shared/data")


def iou(a: list[float], b: tuple[int, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def covered(gt: list[float], box: tuple[int, ...]) -> bool:
    """Whether ``box`` enlarged by the default box scale covers >= 90% of ``gt``."""
    big = scale_box(box, DEFAULT_BOX_SCALE, 1 << 30, 1 << 30)
    if big is None:
        return False
    w = max(0.0, min(gt[2], big[2]) - max(gt[0], big[0]))
    h = max(0.0, min(gt[3], big[3]) - max(gt[1], big[1]))
    return w * h >= 0.9 * (gt[2] - gt[0]) * (gt[3] - gt[1])


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_set(
    files: list[Path],
    detectors: dict[str, RegionSource],
    classify: Callable[[torch.Tensor], object],
    truth: dict[str, list[list[float]]] | None,
) -> dict[str, object]:
    """Per detector: images with >= 1 detection (faces per threshold), recall, seconds."""
    seconds = {name: 0.0 for name in [*detectors, "classifier"]}
    found: dict[str, list[list]] = {name: [] for name in detectors}
    hits = {name: 0 for name in detectors}
    cover = {name: 0 for name in detectors}
    plates = 0
    warm = to_image(read_image(files[0]))  # first calls allocate: time none of them
    classify(warm)
    for source in detectors.values():
        source.find([RegionQuery("warm", warm)])
    for path in files:
        image = to_image(read_image(path))
        _, dt = timed(lambda image=image: classify(image))
        seconds["classifier"] += dt
        for name, source in detectors.items():
            query = RegionQuery(path.name, image)
            (regions,), dt = timed(lambda s=source, q=query: s.find([q]))
            seconds[name] += dt
            found[name].append(list(regions.detections))
            for gt in (truth or {}).get(path.name, []) if name != "faces" else []:
                hits[name] += any(iou(gt, d.box) >= 0.3 for d in regions.detections)
                cover[name] += any(covered(gt, d.box) for d in regions.detections)
        plates += len((truth or {}).get(path.name, []))
    n = len(files)
    out: dict[str, object] = {"images": n, "truth": plates}
    for name, per_image in found.items():
        if name == "faces":
            out["faces"] = {
                t: sum(any(d.score > t for d in dets) for dets in per_image)
                for t in FACE_THRESHOLDS
            }
        else:
            out[name] = sum(bool(dets) for dets in per_image)
            out[f"{name}_per_image"] = sum(len(d) for d in per_image) / n
            if truth is not None:
                out[f"{name}_recall"] = hits[name] / max(plates, 1)
                out[f"{name}_covered"] = cover[name] / max(plates, 1)
    out["seconds"] = {k: v / n for k, v in seconds.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    lowest = DetectorOptions(face_threshold=min(FACE_THRESHOLDS))  # counted per threshold
    raw = DetectorOptions(box_scale=1.0)  # plate boxes as detected, for IoU
    detectors = {
        "faces": parse_region_source("faces", lowest),
        "plates:haar": parse_region_source("plates:haar", raw),
    }
    if importlib.util.find_spec("platedet") is not None:
        detectors["plates:platedet"] = parse_region_source("plates:platedet", raw)
    model = efficientnet_lite("efficientnet_lite0")

    def classify(image: torch.Tensor) -> object:
        with torch.no_grad():
            return model.forward(model.inputs([image]))

    results = {}
    for name, folder in [("imagenet-sample", "imagenet-sample"), ("plates-eu", "plates-eu")]:
        root = args.data / folder
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        files = files[: args.limit] if args.limit else files
        truth = None
        if (root / "boxes.json").is_file():
            truth = json.loads((root / "boxes.json").read_text())
        results[name] = run_set(files, detectors, classify, truth)
        print(name, json.dumps(results[name], indent=1))
    if not args.no_docs:
        update_section("detectors", "Detectors: faces and plates", render(results, list(detectors)))


def render(results: dict[str, dict], names: list[str]) -> str:
    face_cols = " | ".join(f">= 1 face at {t}" for t in FACE_THRESHOLDS)
    plate_names = [n for n in names if n != "faces"]
    plate_cols = " | ".join(
        f">= 1 {n} | {n} per image | {n} recall (IoU >= 0.3) | {n} covered" for n in plate_names
    )
    head = f"| set | images | {face_cols} | {plate_cols} |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        faces = " | ".join(str(r["faces"][t]) for t in FACE_THRESHOLDS)

        def share(key: str, r: dict = r) -> str:
            if key not in r:
                return "-"
            return f"{r[key]:.0%} ({round(r[key] * r['truth'])}/{r['truth']})"

        plates = " | ".join(
            f"{r[n]} | {r[n + '_per_image']:.2f} | {share(n + '_recall')} | {share(n + '_covered')}"
            for n in plate_names
        )
        lines.append(f"| {name} | {r['images']} | {faces} | {plates} |")
    lines += [
        "",
        "| set | classifier forward (s/image) | "
        + " | ".join(f"{n} (s/image, x forward)" for n in names)
        + " |",
    ]
    lines.append("|" + "---|" * (2 + len(names)))
    for name, r in results.items():
        s = r["seconds"]
        cells = " | ".join(f"{s[n]:.3f} ({s[n] / s['classifier']:.1f}x)" for n in names)
        lines.append(f"| {name} | {s['classifier']:.3f} | {cells} |")
    lines += [
        "",
        f"Defaults: faces at score > 0.3, plates with minNeighbors 3, boxes x1.3; detection at "
        f"full resolution (longest side <= 1920). Recall: a ground-truth plate counts as found "
        f"when a detection as the detector gave it (not enlarged) overlaps it with IoU >= 0.3; "
        f"covered: when a detection enlarged x1.3 (the default --box-scale) covers >= 90% of "
        f"it, i.e. the plate would be anonymized. Times: one thread "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), {platform.machine()}, "
        f"torch {torch.__version__}; the classifier is EfficientNet-Lite0 at batch 1 "
        "(preprocessing included). Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/detectors.py`.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
