"""Can the anonymized faces be recognized? (issue 17): rank-1 identification and
verification with dlib's face descriptor, per filter, plain and corrected, with and without
an inversion attack that knows the filter.

Faces: every face CenterFace finds (``--regions faces`` defaults) in
``../shared/data/imagenet-sample``, plus the face photos shipped by dependencies
(scikit-image's astronaut, matplotlib's Grace Hopper). For each filter (blur, mosaic,
yang, mask, and ``auto``, the default, which gives faces the face mosaic) ``adaptanon
evaluate``'s Python entry point runs with the default model and settings; its identity
measures (landmarks located on the original, each anonymized face identified among the
originals of all faces) are reported with the chance level, mean steps, and the class
changes of the written files under a plain PIL loader (bench/imagenet_sample.py's). The
face identity check (``--min-identity-distance``) is off here so that every filter's
files are written and compared. Writes docs/results.md's ``bench:identity`` section and the README's table (unless
``--no-docs``).

Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/identity.py [--limit N] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from docs_section import update_section
from PIL import Image
from written import evaluate_written

from adaptanon.io import read_image
from adaptanon.io.codecs import to_image
from adaptanon.io.images import collect_inputs
from adaptanon.regions import DetectorOptions, ExplicitBoxes, RegionQuery
from adaptanon.regions.detectors import CenterFace

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FILTERS = ("blur", "mosaic", "yang", "mask", "auto")
WRITTEN = ("unchanged", "corrected", "no_regions")


def dependency_photos() -> dict[str, np.ndarray]:
    """Face photos that ship with the dependencies, ``(H, W, 3)`` uint8."""
    from matplotlib import cbook
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return {"astronaut.png": data.astronaut(), "grace_hopper.png": hopper}


def face_images(
    images: Path, folder: Path, limit: int | None
) -> tuple[int, dict[str, list[list[int]]]]:
    """Copy the images of ``images`` in which CenterFace (``--regions faces`` defaults)
    finds a face (the first ``limit`` of them) and the dependency photos into ``folder``;
    returns the images looked at and the face boxes by file name (detected once here, so
    that the sweep does not detect again)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    items = collect_inputs([str(images)])
    for name, rgb in dependency_photos().items():
        Image.fromarray(rgb).save(folder / name)
    detector = CenterFace(DetectorOptions())
    boxes: dict[str, list[list[int]]] = {}
    for item in [*collect_inputs([str(folder)]), *items]:
        if limit and len(boxes) >= limit + 2:
            break
        image = to_image(read_image(item.path))
        (found,) = detector.find([RegionQuery(item.relative.as_posix(), image)])
        faces = [list(d.box) for d in found.detections if d.label == "face"]
        ours = item.path.parent == folder
        if faces and (ours or not limit or len(boxes) < limit + 2):
            if not ours:
                shutil.copy(item.path, folder / item.relative.name)
            boxes[item.relative.name] = faces
    return len(items), boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=Path("../shared/data/imagenet-sample"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/identity")
    parser.add_argument("--limit", type=int, default=None, help="images with faces to use")
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs alone")
    args = parser.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    folder = args.out / "images"
    looked, boxes = face_images(args.images, folder, args.limit)
    faces = ExplicitBoxes(boxes, {k: ["face"] * len(v) for k, v in boxes.items()})
    items = collect_inputs([str(folder)])
    print(f"{len(items)} images with faces (of {looked} + 2 photos)", flush=True)

    rows = evaluate_written(items, args.out, FILTERS, faces, "faces")
    for s in rows:
        changed = s["changed_on_written_file"]
        keys = [k for k in s if k.startswith("identity_")] + ["mean_steps", "failed"]
        print(json.dumps({"filter": s["filter"], "changed": changed, **{k: s[k] for k in keys}}))
    for r in rows:
        r["flagged"] = flagged_shares(args.out / "eval" / "cache" / f"{r['key']}.jsonl")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
    minutes = (time.perf_counter() - start) / 60
    text = render(rows, len(items), args, minutes, threads)
    print(text)
    if not args.no_docs:
        update_section("identity", "Faces: can the person be recognized? (issue 17)", text)
        update_section("identity_readme", "", readme_table(rows, len(items)), README)


THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)
"""``--min-identity-distance`` values whose effect is reported."""


def flagged_shares(cache: Path) -> dict[float, float]:
    """Per threshold T, the percentage of corrected faces whose descriptor lies closer
    than T to their original's (what ``--min-identity-distance T`` would call weak)."""
    dists = []
    for line in cache.read_text().splitlines():
        for face in json.loads(line).get("identity_faces") or []:
            a, b = np.array(face["original"]), np.array(face["corrected"])
            dists.append(float(np.linalg.norm(a - b)))
    d = np.array(dists)
    return {t: 100.0 * float(np.mean(d < t)) if len(d) else float("nan") for t in THRESHOLDS}


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}%"


def pair(r: dict[str, Any], key: str, tail: str = "") -> str:
    return (
        f"{pct(r.get(f'identity_{key}_plain{tail}_pct'))} / "
        f"{pct(r.get(f'identity_{key}_corrected{tail}_pct'))}"
    )


def steps(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def name(r: dict[str, Any]) -> str:
    return "auto (default: facemosaic)" if r["filter"] == "auto" else r["filter"]


def readme_table(rows: list[dict[str, Any]], images: int) -> str:
    """The README's short table: rank-1 and verify per filter, without and with the
    attack."""
    first = rows[0]
    lines = [
        f"Measured by `bench/identity.py` ([docs/results.md](docs/results.md)) on "
        f"{first.get('identity_faces')} faces in {images} images (the ImageNet sample's "
        "images with a face, scikit-image's astronaut, matplotlib's Grace Hopper), each "
        "anonymized face compared with the originals of all of them "
        f"(chance {pct(first.get('identity_chance_pct'))}); plain / corrected:",
        "",
        "| filter (`--regions faces`) | nearest original is its own (rank-1) | within 0.6 "
        "of its own original | rank-1 after the inversion attack | within 0.6 after the "
        "attack |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {name(r)} | {pair(r, 'rank1')} | {pair(r, 'verify')} | "
            f"{pair(r, 'rank1', '_attacked')} | {pair(r, 'verify', '_attacked')} |"
        )
    return "\n".join(lines)


def render(
    rows: list[dict[str, Any]], images: int, args: argparse.Namespace, minutes: float, threads: int
) -> str:
    """The Markdown section for docs/results.md."""
    limit = f" (first {args.limit} images with faces, --limit)" if args.limit else ""
    first = rows[0]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other jobs, OMP_NUM_THREADS={threads}, torch {torch.__version__}, "
        f"no GPU, by `OMP_NUM_THREADS=1 .venv/bin/python bench/identity.py` on the images of "
        f"{args.images.name} in which CenterFace finds a face{limit} plus scikit-image's "
        f"astronaut and matplotlib's Grace Hopper: {images} images, "
        f"{first.get('identity_faces')} faces; {minutes:.0f} minutes in all.",
        "",
        "Per filter (`adaptanon evaluate --regions faces`, efficientnet_lite0, alpha 0.1, "
        "criterion `class`, PNG): each anonymized face is identified among the originals "
        f"of all {first.get('identity_gallery')} faces with dlib's face descriptor, the "
        "landmarks located on the original photo (chance: "
        f"{pct(first.get('identity_chance_pct'))}). Rank-1: its nearest original is its "
        "own; verify: within dlib's 0.6 of its own original. After attack: the same after "
        "the inversion that knows the filter's parameters.",
        "",
        "| filter | rank-1: plain / corrected | verify@0.6: plain / corrected | rank-1 after "
        "attack | verify@0.6 after attack | median distance: plain / attacked | mean steps "
        "| class changed on the written file (plain PIL loader) | attack |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {name(r)} | {pair(r, 'rank1')} | {pair(r, 'verify')} | "
            f"{pair(r, 'rank1', '_attacked')} | {pair(r, 'verify', '_attacked')} | "
            f"{r.get('identity_distance_plain_median')} / "
            f"{r.get('identity_distance_plain_attacked_median')} | "
            f"{steps(r['mean_steps'])} | "
            f"{r['changed_on_written_file']} of {r['written']} | {r.get('identity_attack')} |"
        )
    lines += [
        "",
        "Faces a per-face check `--min-identity-distance T` calls weak (corrected face's "
        "descriptor closer than T to its original's), in percent of the faces:",
        "",
        "| filter | " + " | ".join(f"T = {t:g}" for t in THRESHOLDS) + " |",
        "|---|" + "---|" * len(THRESHOLDS),
    ]
    for r in rows:
        cells = " | ".join(pct(r["flagged"][t]) for t in THRESHOLDS)
        lines.append(f"| {name(r)} | {cells} |")
    by = {r["filter"]: r for r in rows}
    if "auto" in by and "mask" in by:
        d, m = by["auto"], by["mask"]
        checks = []
        for kind in ("plain", "corrected", "plain_attacked", "corrected_attacked"):
            a, b = d[f"identity_rank1_{kind}_pct"], m[f"identity_rank1_{kind}_pct"]
            checks.append(f"{kind.replace('_', ' ')} {a:.1f}% vs mask {b:.1f}% + 1")
        gap = abs(d["identity_rank1_corrected_pct"] - d["identity_rank1_plain_pct"])
        lines += [
            "",
            "**Target** (default face filter's rank-1 at most the solid mask's + 1 point, "
            f"with and without the attack; corrected within 1 point of plain): {'; '.join(checks)}; "
            f"corrected - plain {gap:.1f} points.",
        ]
    lines += [
        "",
        "Filters: blur 9x9 sigma 10 at the 224 view, scaled to the input (the paper's); "
        "mosaic 8-pixel cells at the view; yang: Yang et al.'s face blur; mask: grey 0.5; "
        "facemosaic: each face box grown by 0.3 of its longer side on every side, about 4 "
        "cells along its longer side, each cell its mean plus Gaussian noise (std 0.15, "
        "seeded by the face's own pixels). Attacks: least squares through the known filter "
        "(conjugate gradients with a small smoothness prior, outside pixels known) for blur "
        "and yang; bicubic upsampling of the cells (averaged from the written pixels) for the "
        "mosaics; none for the mask. The face identity check is off in this run so that "
        "every filter's files are written.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
