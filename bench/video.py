"""Videos (issue 15): a face tracked and held, the decision kept on the decoded file, the
audio and the timing kept, and the speed against decode+encode and the detector alone.

Makes short test clips from scikit-image's astronaut photo (panned and zoomed over the
coffee photo, the face partly covered for a few frames so that the detector misses it,
a 440 Hz AAC tone), then runs the real command line, ``adaptanon anonymize CLIP --regions
faces``, lossless (FFV1, the default) and lossy (``--video-codec h264 --crf 23``), and
reads back what it wrote:

- frames with a visible face: the visible part of the known face box is not inside
  the union of the frame's anonymized regions (as the manifest lists them);
- frames whose class changed: the written file decoded frame by frame and classified
  by the same model, against the input's frames;
- audio and subtitle packets identical (payload and time), frame count, time stamps and
  duration identical;
- frames per second of the whole command, of decoding and encoding alone (read the clip,
  write it with the same codec), and of the face detector alone on every frame, all
  measured in the same run.

Usage: OMP_NUM_THREADS=1 python bench/video.py [--seconds 2] [--sizes 1080,720]
       [--device cpu|cuda] [--write-docs]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from docs_section import update_section
from PIL import Image
from skimage import data

from adaptanon.classifiers import load_classifier
from adaptanon.engines.video import VideoOptions, find_tracked
from adaptanon.io.codecs import to_image
from adaptanon.io.video import (
    VideoCodec,
    audio_packets,
    encode_segment,
    iter_frames,
    make_clip,
    probe_video,
    read_video,
)
from adaptanon.regions import DetectorOptions, RegionQuery, parse_region_source
from adaptanon.regions.tracking import coverage

ROOT = Path(__file__).resolve().parent.parent
FPS = 30
HEADING = "Videos: tracked faces, decisions on the decoded file, audio and timing kept (issue 15)"
BATCH = 4
"""Frames per batch (``--batch-size``): 8 1080p frames took over 5 GB, on a machine shared
with other jobs."""


def face_box(photo: np.ndarray) -> tuple[float, float, float, float]:
    """The astronaut's face as CenterFace finds it (no enlargement)."""
    source = parse_region_source("faces", DetectorOptions(box_scale=1.0))
    (found,) = source.find([RegionQuery("astronaut", to_image(photo))])
    best = max(found.detections, key=lambda d: d.score)
    return tuple(float(v) for v in best.box)  # type: ignore[return-value]


def make_frames(
    height: int, seconds: float
) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]], list[int]]:
    """Frames of ``height`` (16:9), the visible part of the face box per frame, and the
    frames where the lower part of the face is covered."""
    width = height * 16 // 9
    photo = data.astronaut()
    face = face_box(photo)
    background = np.asarray(Image.fromarray(data.coffee()).resize((width, height)))
    n = round(seconds * FPS)
    covered = list(range(n // 2, n // 2 + 4))
    frames, visible = [], []
    for t in range(n):
        u = t / max(1, n - 1)
        zoom = height / 512 * (0.9 + 0.3 * u)  # zooms in by a third
        size = round(512 * zoom)
        x = round(0.05 * width + u * (width - size - 0.1 * width))  # pans left to right
        y = round((height - size) / 2)
        frame = background.copy()
        pasted = np.asarray(Image.fromarray(photo).resize((size, size), Image.BILINEAR))
        top, left = max(0, y), max(0, x)
        frame[top : top + size, left : left + size] = pasted[
            top - y : top - y + height, : width - left
        ]
        x0, y0, x1, y1 = (round(v * zoom) for v in face)
        box = (x0 + x, y0 + y, x1 + x, y1 + y)
        if t in covered:
            cut = box[1] + round(0.3 * (box[3] - box[1]))
            frame[cut : box[3], box[0] : box[2]] = 128
            box = (box[0], box[1], box[2], cut)
        frames.append(frame)
        visible.append(box)
    return frames, visible, covered


def per_frame_regions(rec: dict, n: int) -> tuple[list[list[list[int]]], list[list[list[int]]]]:
    """Each frame's regions from a video record, all and those the detector found."""
    every: list[list[list[int]]] = [[] for _ in range(n)]
    found: list[list[list[int]]] = [[] for _ in range(n)]
    for fr in rec["frame_records"]:
        for t in range(fr["frames"][0], fr["frames"][1] + 1):
            every[t] = fr.get("regions", [])
            found[t] = [
                r for r, h in zip(fr.get("regions", []), fr.get("held", []), strict=True) if not h
            ]
    return every, found


def classes(classifier, frames: list[np.ndarray], batch: int = 8) -> list[int]:
    """The classifier's class of each frame."""
    out: list[int] = []
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            images = [to_image(f, classifier.device) for f in frames[i : i + batch]]
            out += classifier.forward(classifier.inputs(images)).argmax(1).tolist()
    return out


def run_cli(clip: Path, out: Path, options: list[str]) -> tuple[dict, float, str]:
    """``adaptanon anonymize CLIP -o OUT --regions faces OPTIONS``: the video's record,
    seconds, and the command as typed."""
    args = ["anonymize", str(clip), "-o", str(out), "--regions", "faces", "-q", *options]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "adaptanon", *args], capture_output=True, text=True, cwd=ROOT
    )
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"command failed: {' '.join(args)}\n{proc.stderr}")
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return records[-1], seconds, "adaptanon " + " ".join(args)


def one_size(height: int, seconds: float, device: str, work: Path, classifier) -> list[dict]:
    frames, visible, covered = make_frames(height, seconds)
    clip_path = work / f"clip{height}.mp4"
    make_clip(clip_path, frames, FPS)
    clip = read_video(clip_path)
    n = len(clip.frames)
    original_classes = classes(classifier, clip.frames)

    # Baselines, in this run: the detector alone, and decoding + encoding alone.
    detector = parse_region_source("faces", DetectorOptions(device=device))
    start = time.perf_counter()
    size = (clip.width, clip.height)
    find_tracked(classifier, detector, clip_path.name, iter_frames(clip_path), VideoOptions(), size)
    detector_fps = n / (time.perf_counter() - start)
    del detector, frames
    gc.collect()
    rows = []
    for name, options in (
        ("lossless (FFV1)", ["--video-codec", "ffv1"]),
        ("lossy (H.264 CRF 18, the default)", []),
    ):
        codec = VideoCodec() if not options else VideoCodec("ffv1")
        start = time.perf_counter()
        again = read_video(clip_path)
        encode_segment(again.frames, again.pts, probe_video(clip_path), codec)
        del again
        codec_fps = n / (time.perf_counter() - start)
        out = work / f"out{height}-{codec.name}"
        cli_options = ["--device", device, "--batch-size", str(BATCH), *options]
        rec, wall, command = run_cli(clip_path, out, cli_options)
        written = Path(rec["output"])
        stored = read_video(written)
        every, found = per_frame_regions(rec, n)
        visible_frames = [t for t in range(n) if coverage(visible[t], every[t]) < 1.0]
        missed_by_detector = [t for t in range(n) if coverage(visible[t], found[t]) < 1.0]
        changed = [
            t for t, (a, b) in enumerate(zip(original_classes, classes(classifier, stored.frames), strict=True)) if a != b
        ]  # fmt: skip
        rows.append(
            {
                "size": f"{clip.width}x{clip.height}",
                "codec": name,
                "frames": n,
                "status": rec["status"],
                "frame_status": rec["frame_status"],
                "rounds": rec.get("rounds", 0),
                "visible_face_frames": len(visible_frames),
                "detector_missed_frames": len(missed_by_detector),
                "covered_frames": len(covered),
                "class_changed_frames": len(changed),
                "audio_identical": audio_packets(clip_path) == audio_packets(written)
                and bool(audio_packets(clip_path)),
                "frames_identical": len(stored.pts) == n,
                "pts_identical": stored.pts == clip.pts and stored.time_base == clip.time_base,
                "duration_in": clip.duration,
                "duration_out": stored.duration,
                "tracks": len(rec["tracks"]),
                "not_done": [
                    f"frame {fr['frames'][0]}: {fr['status']}: {fr.get('error')}"
                    for fr in rec["frame_records"]
                    if fr["status"] not in ("unchanged", "corrected", "no_regions")
                ],
                "fps": n / wall,
                "codec_fps": codec_fps,
                "detector_fps": detector_fps,
                "command": command.replace(str(work), "CLIPS"),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other jobs, torch {torch.__version__}, device {args.device} (no GPU "
        "on this machine: `--device cuda` runs the same on one), "
        f"`OMP_NUM_THREADS=1`. Clips: {args.seconds} s at {FPS} fps, H.264 (CRF 18) + AAC "
        "tone, made by the script from scikit-image's astronaut, panned and zoomed; the "
        "lower part of the face is covered in 4 frames. Model efficientnet_lite0, blur.",
        "",
        f"Command: `OMP_NUM_THREADS=1 python bench/video.py --seconds {args.seconds} --sizes "
        f"{args.sizes} --device {args.device} --write-docs`; each clip is anonymized with "
        "the command in the last column (CLIPS: the script's temporary folder).",
        "",
        "| clip | output | frames | status (frames) | frames with a visible face | frames the detector alone misses | frames whose class changed (decoded) | lossy rounds | audio packets identical | frame count, pts, time base identical | duration in / out (s) | fps | fps decode+encode only | fps detector only | speed / detector only | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = ", ".join(f"{k} {v}" for k, v in r["frame_status"].items())
        lines.append(
            f"| {r['size']} | {r['codec']} | {r['frames']} | {r['status']} ({status}) | "
            f"{r['visible_face_frames']} | {r['detector_missed_frames']} | "
            f"{r['class_changed_frames']} | {r['rounds']} | {'yes' if r['audio_identical'] else 'no'} | "
            f"{'yes' if r['frames_identical'] and r['pts_identical'] else 'no'} | "
            f"{r['duration_in']:.3f} / {r['duration_out']:.3f} | {r['fps']:.2f} | "
            f"{r['codec_fps']:.1f} | {r['detector_fps']:.2f} | "
            f"{r['fps'] / r['detector_fps']:.2f}x | `{r['command']}` |"
        )
    not_done = [f"{r['size']} {r['codec']}: {n}" for r in rows for n in r["not_done"]]
    if not_done:
        lines += ["", "Frames not done: " + "; ".join(not_done) + "."]
    lines += [
        "",
        "fps: frames divided by the wall time of the whole command (start-up and model "
        "loading included; decode, detection on every frame, tracking, anonymization, "
        "correction, encode, decoding the written file to check it, and for H.264 the "
        "re-correction rounds). The baselines are measured in the same run on the same "
        "clip: decoding and encoding alone (read the clip, write it with the same codec and "
        "audio copy) and the face detector alone on every frame.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sizes", default="1080,720")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--rows",
        type=Path,
        default=None,
        help="render the table from the JSON rows a run printed (its log) instead of measuring",
    )
    args = parser.parse_args()
    if args.rows is not None:
        lines = args.rows.read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.startswith("{")]
        text = table(rows, args)
        print(text)
        if args.write_docs:
            update_section("video", HEADING, text)
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    classifier = load_classifier("efficientnet_lite0").to(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for height in (int(h) for h in args.sizes.split(",")):
            rows += one_size(height, args.seconds, args.device, Path(tmp), classifier)
    text = table(rows, args)
    print(text)
    if args.write_docs:
        update_section("video", HEADING, text)


if __name__ == "__main__":
    main()
