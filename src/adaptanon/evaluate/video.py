"""``adaptanon evaluate`` on videos: per configuration and video, the per-frame measures
and the privacy of every track, on the frames as they are decoded from the written file.

- vulnerable share: frames whose class changed after plain anonymization;
- not corrected: frames whose decision could not be kept (status ``failed``);
- final vulnerable share: frames whose class on the decoded file differs from the input's;
- flicker: frames where a track's region is visible: the track (detections linked over
  gaps of up to :data:`FLICKER_GAP` frames, whatever ``--hold-frames`` is) spans the
  frame, but its box there (interpolated between detections) is not wholly inside the
  anonymized regions;
- per track: mean region PSNR and SSIM between input and decoded frames over its frames.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptanon.classifiers import Classifier
from adaptanon.engines.video import VideoOptions, WorkArea, anonymize_video, per_frame
from adaptanon.evaluate.metrics import mean_finite, percent
from adaptanon.evaluate.rows import Config
from adaptanon.io.atomic import atomic_write
from adaptanon.io.codecs import to_image
from adaptanon.io.images import InputImage
from adaptanon.io.video import iter_frames, probe_video
from adaptanon.method.metrics import region_strength
from adaptanon.regions import Detection, RegionSource
from adaptanon.regions.tracking import coverage, hold_regions, track

FLICKER_GAP = 30
"""Frames a track may miss and still be one object, for measuring flicker."""


def flicker_frames(
    detected: Sequence[Sequence[Any]],
    anonymized: Sequence[Sequence[Sequence[int]]],
    width: int,
    height: int,
) -> list[int]:
    """Frames where a track of ``detected`` (per-frame detections) spans the frame but its
    (interpolated) box is not wholly covered by that frame's ``anonymized`` boxes."""
    tracks = track(detected, FLICKER_GAP)
    spans = hold_regions(tracks, len(detected), width, height, hold=0)
    out = []
    for t, regions in enumerate(spans):
        for region in regions:
            if coverage(region.detection.box, anonymized[t]) < 1.0:
                out.append(t)
                break
    return out


def evaluate_video(
    classifier: Classifier,
    source: RegionSource,
    config: Config,
    item: InputImage,
    options: VideoOptions,
    batch_size: int = 8,
) -> dict[str, Any]:
    """One row of the video results for ``item`` under ``config`` (see the module)."""
    row: dict[str, Any] = {
        "video": item.relative.as_posix(),
        "model": config.model,
        "filter": config.filter,
        "alpha": config.settings.describe()["alpha"],
        "codec": options.codec.name,
        "error": None,
    }
    try:
        with tempfile.TemporaryDirectory(prefix="adaptanon-evaluate-") as tmp:
            work = WorkArea(Path(tmp), item, {})
            record, written = anonymize_video(
                classifier, source, config.settings, item, options, work,
                Path(tmp) / "out" / item.path.name, batch_size,
            )  # fmt: skip
            if written is None:
                raise ValueError(record.error or "nothing written")
            info = probe_video(item.path)
            recs = per_frame(record)
            regions = _regions(recs)
            tracks = _track_strength(record.tracks, regions, item.path, written, info.rotation)
    except (ValueError, RuntimeError) as exc:
        row["error"] = str(exc)
        return row
    n = record.frame_count
    changed_plain = sum(
        r.get("anonymized_class") is not None and r["anonymized_class"] != r["original_class"]
        for r in recs
    )
    anonymized = [[list(b) for b, _held, _track in regs] for regs in regions]
    detected = [
        [
            Detection((b[0], b[1], b[2], b[3]), 1.0, label)
            for (b, held, _track), label in zip(regs, r.get("labels", []), strict=True)
            if not held
        ]
        for regs, r in zip(regions, recs, strict=True)
    ]
    # Saliency picks a region per frame: there is no object to follow (no flicker).
    flicker = (
        []
        if source.uses_saliency
        else flicker_frames(detected, anonymized, info.width, info.height)
    )
    row.update(
        frames=n,
        status=str(record.status),
        frame_status=record.frame_status,
        changed_after_anonymization=changed_plain,
        vulnerable_initial_pct=percent(changed_plain, n),
        not_corrected=sum(r["status"] == "failed" for r in recs),
        vulnerable_final_pct=percent(sum(r["final_class"] != r["original_class"] for r in recs), n),
        flicker_frames=flicker,
        rounds=record.rounds,
        tracks=tracks,
    )
    return row


Region = tuple[list[int], bool, int | None]
"""A frame's anonymized box, whether the hold added it, and its track (None: no track)."""


def _regions(recs: Sequence[dict[str, Any]]) -> list[list[Region]]:
    """Each frame's anonymized regions, from the per-frame records."""
    out: list[list[Region]] = []
    for r in recs:
        boxes = r.get("regions", [])
        held = r.get("held", [False] * len(boxes))
        tracks = r.get("tracks", [None] * len(boxes))
        out.append(list(zip(boxes, held, tracks, strict=True)))
    return out


def _track_strength(
    tracks: Sequence[dict[str, Any]],
    regions: Sequence[Sequence[Region]],
    source: Path,
    written: Path,
    rotation: int,
) -> list[dict[str, Any]]:
    """Per track, its mean region PSNR and SSIM between input and written frames (both
    decoded frame by frame, side by side)."""
    psnr: dict[int, list[float | None]] = {tr["id"]: [] for tr in tracks}
    ssim: dict[int, list[float]] = {tr["id"]: [] for tr in tracks}
    frames = zip(iter_frames(source), iter_frames(written, rotation=rotation), strict=False)
    for t, ((_, original), (_, stored)) in enumerate(frames):
        for box, _held, track_id in regions[t]:
            if track_id not in psnr:
                continue
            s = region_strength(to_image(original), to_image(stored), tuple(box))  # type: ignore[arg-type]
            psnr[track_id].append(s.psnr if np.isfinite(s.psnr) else None)
            ssim[track_id].append(s.ssim)
    return [
        {**tr, "mean_psnr": mean_finite(psnr[tr["id"]]), "mean_ssim": mean_finite(ssim[tr["id"]])}
        for tr in tracks
    ]


def evaluate_videos(
    items: Sequence[InputImage],
    out: Path,
    configs: Sequence[Config],
    source: RegionSource,
    load: Callable[[str], Classifier],
    options: VideoOptions,
    batch_size: int = 8,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every configuration on every video; writes ``out/videos.json`` and ``out/videos.md``
    and returns the rows."""
    rows = []
    models: dict[str, Classifier] = {}
    for config in configs:
        classifier = models.setdefault(config.model, load(config.model))
        for item in items:
            row = evaluate_video(classifier, source, config, item, options, batch_size)
            rows.append(row)
            if on_row:
                on_row(row)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "videos.json", json.dumps(rows, indent=2) + "\n")
    atomic_write(out / "videos.md", videos_markdown(rows))
    return rows


def videos_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The video results as Markdown tables: one row per video and configuration, then
    one per track."""
    lines = [
        "# Videos",
        "",
        "| video | model | filter | alpha | codec | frames | changed after anonymization | vulnerable % | not corrected | final vulnerable % | flicker frames | rounds | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["video"], r["model"], r["filter"], f"{r['alpha']:g}", r["codec"]]
        if r["error"]:
            cells += ["–"] * 7 + [r["error"]]
        else:
            cells += [
                str(r["frames"]),
                str(r["changed_after_anonymization"]),
                f"{r['vulnerable_initial_pct']:.2f}",
                str(r["not_corrected"]),
                f"{r['vulnerable_final_pct']:.2f}",
                str(len(r["flicker_frames"])),
                str(r["rounds"]),
                "",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| video | model | filter | alpha | track | label | frames | detected | held | mean PSNR (dB) | mean SSIM |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for tr in r.get("tracks") or []:
            psnr = "–" if tr["mean_psnr"] is None else f"{tr['mean_psnr']:.2f}"
            ssim = "–" if tr["mean_ssim"] is None else f"{tr['mean_ssim']:.3f}"
            lines.append(
                f"| {r['video']} | {r['model']} | {r['filter']} | {r['alpha']:g} | {tr['id']} | "
                f"{tr['label']} | {tr['first']}-{tr['last']} | {tr['detected']} | {tr['held']} | "
                f"{psnr} | {ssim} |"
            )
    return "\n".join(lines) + "\n"
