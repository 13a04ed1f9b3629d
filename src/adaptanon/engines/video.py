"""Videos: a stream of frames through the same stages as a folder of photos, in closed
segments that are checked and kept as soon as they are written.

1. **Find** (one streaming decode): the region source runs on every frame, detectors on a
   copy downscaled to :attr:`VideoOptions.detect_side` (boxes in frame pixels); the
   detections are linked into tracks and held (:mod:`adaptanon.regions.tracking`). Only
   boxes are kept: a few bytes per frame. A saliency source needs no such pass.
2. **Anonymize and correct**, a segment at a time (a second streaming decode): the
   frames of one segment (:attr:`VideoOptions.segment_seconds`, fewer for large
   frames) go through :func:`~adaptanon.method.pipeline.process_batch` like photos.
3. **Encode and verify** the segment alone (a fresh encoder: it starts with a key frame
   and refers to no frame outside it), decode it, and check every frame's decision on
   its decoded pixels; frames whose decision changed are corrected again against those
   pixels and the segment alone re-encoded (:attr:`VideoOptions.rounds`). A region that
   stays recognizable (``weak``) gets the solid mask in that frame instead (recorded as
   ``fallback``), never written as is. A frame whose decision could not be kept is
   listed with its reason; it does not discard the rest of the recording (status
   ``partial``).
4. **Write**: each finished segment and its records are kept on disk in the output
   folder's work area (:data:`WORK_FOLDER`), so a run that is stopped resumes at the
   first unfinished segment; the final file is the segments joined by stream copy with
   the input's audio and subtitle packets, checked (frame count and time stamps) and put
   in place atomically by :func:`~adaptanon.engines.writer.write_outputs`.

Memory depends on the frame size, the batch and the segment, never on the video's length
(beyond a few bytes of boxes per frame).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptanon.classifiers import Classifier
from adaptanon.engines.batches import error_outcome
from adaptanon.engines.finishing import Staged
from adaptanon.engines.output_folder import output_path
from adaptanon.engines.writer import Summary, describe_run, write_outputs
from adaptanon.io.atomic import atomic_write, current_umask
from adaptanon.io.codecs import Codec, to_image, to_pixels
from adaptanon.io.images import InputImage, current_pixel_limit
from adaptanon.io.video import (
    VideoCodec,
    VideoInfo,
    duration,
    encode_segment,
    iter_frames,
    join_segments,
    packet_times,
    probe_video,
)
from adaptanon.method.criteria import AllOf, SameClass, logit_margin
from adaptanon.method.filters import Mask, anonymize
from adaptanon.method.metrics import image_strength
from adaptanon.method.pipeline import Outcome, Settings, process_batch
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import Detection, ExplicitBoxes, RegionQuery, RegionSource
from adaptanon.regions.tracking import TrackedRegion, hold_regions, track

DEFAULT_HOLD = 5
"""``--hold-frames``: frames before and after a track's detections that are anonymized too."""

DEFAULT_ROUNDS = 3
"""``--video-rounds``: re-corrections of a lossy segment against its decoded frames."""

DEFAULT_SEGMENT_SECONDS = 2.0
"""Seconds of video per segment (a key frame starts each)."""

SEGMENT_PIXELS = 30 * 1920 * 1080
"""Most frame pixels per segment: 30 frames of 1080p, 7 of 4K (the :class:`FrameBuffers`
take 10 bytes per pixel: 620 MB at 1080p)."""

DEFAULT_DETECT_SIDE = 1280
"""``--detect-side``: detectors look at each frame downscaled to this longer side (1080p to
720p, as deface's ``--scale``); the boxes are mapped back to frame pixels."""

BATCH_PIXELS = 2 * 1920 * 1080
"""Most frame pixels in one pass of the photo pipeline (two 1080p frames, four 720p, one
4K frame), besides ``--batch-size``: the pipeline keeps several float
copies of each full frame, and eight 1080p frames took 3 GB where two take 0.9 GB."""

DETECT_FRAMES = 2
"""Frames per detector call: a larger batch gains little on a CPU and its activations
grow with it (CenterFace on 17 frames of 640x360 took 2 GB)."""

ROUND_MARGIN = 0.5
"""Extra logit margin asked of a frame per lossy round, so the next encode's error does
not flip it again; frames whose margin on the decoded segment is below it are corrected
in the same round as the changed ones."""

WORK_FOLDER = ".adaptanon-work"
"""The folder inside the output folder that holds unfinished videos' segments."""

FALLBACK = Mask()
"""The filter a region gets in a frame where the run's filter left it recognizable."""


def frame_name(relative: str, index: int) -> str:
    """How frame ``index`` (from 0) of the video at ``relative`` is named for region
    sources (a detections file lists ``clip.mp4#12``) and in messages."""
    return f"{relative}#{index}"


class FrameCodec(Codec):
    """A frame's "file" inside the pipeline: its raw 8-bit pixels (lossless, as PNG, but
    without the PNG encode); the video codec stores them afterwards."""

    def encode(self, pixels: np.ndarray) -> bytes:
        h, w = pixels.shape[:2]
        return h.to_bytes(4, "little") + w.to_bytes(4, "little") + pixels.tobytes()

    def decode(self, data: bytes) -> np.ndarray:
        h, w = int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little")
        return np.frombuffer(data[8:], np.uint8).reshape(h, w, 3).copy()


@dataclass(frozen=True)
class VideoOptions:
    """How videos are stored and kept consistent over time (see the CLI's options)."""

    codec: VideoCodec = field(default_factory=VideoCodec)
    hold: int = DEFAULT_HOLD
    rounds: int = DEFAULT_ROUNDS
    iou: float = 0.3
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    detect_side: int = DEFAULT_DETECT_SIDE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.segment_seconds) and self.segment_seconds > 0):
            raise ValueError(f"segment seconds must be > 0, got {self.segment_seconds}")
        if self.detect_side < 32:
            raise ValueError(f"detect side must be >= 32 pixels, got {self.detect_side}")

    def describe(self) -> dict[str, Any]:
        """What a video record's ``settings`` add to the photo settings."""
        out = {
            **self.codec.describe(),
            "hold_frames": self.hold,
            "segment_seconds": self.segment_seconds,
            "detect_side": self.detect_side,
        }
        if not self.codec.lossless:
            out["video_rounds"] = self.rounds
        return out

    def segment_length(self, info: VideoInfo) -> int:
        """Frames per segment for a video like ``info``."""
        rate = float(info.rate) if info.rate else 30.0
        by_time = max(1, round(self.segment_seconds * rate))
        return max(1, min(by_time, SEGMENT_PIXELS // max(1, info.width * info.height)))


@dataclass
class VideoRecord(ImageRecord):
    """One video's record in the manifest (an :class:`ImageRecord` with ``kind: video``).

    ``frame_count``, ``duration`` (seconds), ``time_base``, ``fps`` (average) and
    ``rotation`` (degrees counter-clockwise, applied before any model sees a frame) of the
    input, which the output keeps; ``frame_status``: frames per status; ``frame_records``:
    the per-frame results, a run of consecutive frames with the same status and classes
    (and no regions or steps) as one record with ``frames: [first, last]``; ``tracks``:
    one record per track (``id``, ``label``, ``first``/``last`` frame covered, frames
    ``detected`` and ``held``); ``segments``: closed segments encoded (``resumed`` of them
    finished by an earlier run); ``rounds``: lossy re-encode rounds done (all segments);
    ``changed_frames``: frames whose decision changed on the decoded output and could not
    be restored; ``fallback_frames``: frames where a region got the solid mask because the
    run's filter left it recognizable.
    """

    kind: str = "video"
    frame_count: int = 0
    duration: float | None = None
    time_base: str | None = None
    fps: float | None = None
    rotation: int = 0
    frame_status: dict[str, int] = field(default_factory=dict)
    frame_records: list[dict[str, Any]] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    segments: int = 0
    resumed: int = 0
    rounds: int = 0
    changed_frames: list[int] = field(default_factory=list)
    fallback_frames: list[int] = field(default_factory=list)


@dataclass
class FramePlan:
    """What the find pass gives: every frame's ``pts`` and tracked regions, and one record
    per track."""

    pts: list[int]
    regions: list[list[TrackedRegion]]
    tracks: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The plan as it is kept in the work area."""
        return {
            "pts": self.pts,
            "regions": [
                [[*r.detection.box, r.detection.score, r.detection.label, r.track, r.held] for r in regs]
                for regs in self.regions
            ],
            "tracks": self.tracks,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FramePlan:
        """The inverse of :meth:`to_json`."""
        regions = [
            [
                TrackedRegion(Detection((r[0], r[1], r[2], r[3]), r[4], r[5]), r[6], r[7])
                for r in regs
            ]
            for regs in data["regions"]
        ]
        return cls(list(data["pts"]), regions, list(data["tracks"]))


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def find_tracked(
    classifier: Classifier,
    source: RegionSource,
    relative: str,
    frames: Iterator[tuple[int, np.ndarray]],
    options: VideoOptions,
    size: tuple[int, int],
) -> FramePlan:
    """Pass 1: each frame's regions from ``source`` (detectors on frames downscaled to
    ``options.detect_side``, :data:`DETECT_FRAMES` per call), linked into tracks
    and held; ``frames`` is a stream of ``(pts, (H, W, 3) uint8)``, ``size`` ``(W, H)``.

    Raises:
        ValueError: the source could not find regions in a frame (which is named).
    """
    width, height = size
    finder = source.at_most(options.detect_side)
    chunk = DETECT_FRAMES
    pts: list[int] = []
    found: list[list[Detection]] = []
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        images = [to_image(pixels) for _, pixels in batch]
        first = len(found)
        queries = [
            RegionQuery(
                frame_name(relative, first + k),
                img,
                classifier.geometry(img.shape[-2], img.shape[-1]),
            )
            for k, img in enumerate(images)
        ]
        for k, regions in enumerate(finder.find(queries)):
            if regions.error is not None:
                raise ValueError(f"frame {first + k}: regions: {regions.error}")
            found.append(list(regions.detections))
        batch.clear()

    for stamp, pixels in frames:
        pts.append(stamp)
        batch.append((stamp, pixels))
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    tracks = track(found, options.hold, options.iou)
    per_frame = hold_regions(tracks, len(found), width, height, options.hold)
    covered: dict[int, list[int]] = {}
    for f, regs in enumerate(per_frame):
        for r in regs:
            covered.setdefault(r.track, []).append(f)
    records = [
        {
            "id": tr.id,
            "label": tr.label,
            "first": min(covered[tr.id]),
            "last": max(covered[tr.id]),
            "detected": len(tr.boxes),
            "held": len(covered[tr.id]) - len(tr.boxes),
        }
        for tr in tracks
        if tr.id in covered
    ]
    return FramePlan(pts, per_frame, records)


def _classify(
    classifier: Classifier, frames: Sequence[np.ndarray] | np.ndarray, batch_size: int
) -> torch.Tensor:
    """``(B, N)`` logits of ``frames`` as the classifier sees them (on the host)."""
    logits = []
    with torch.no_grad():
        for idx in _chunks(len(frames), batch_size):
            images = [to_image(frames[i], classifier.device) for i in idx]
            logits.append(classifier.forward(classifier.inputs(images)).float().cpu())
    return torch.cat(logits)


def _frame_dict(index: int, rec: ImageRecord, regions: Sequence[TrackedRegion]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "frames": [index, index],
        "status": str(rec.status),
        "original_class": rec.original_class,
        "final_class": rec.final_class,
        "steps": rec.steps,
    }
    if rec.anonymized_class is not None and rec.anonymized_class != rec.original_class:
        out["anonymized_class"] = rec.anonymized_class
    if rec.regions:
        out["regions"] = rec.regions
        out["labels"] = [r.detection.label for r in regions]
        out["scores"] = [r.detection.score for r in regions]
        out["tracks"] = [r.track for r in regions]
        out["held"] = [r.held for r in regions]
        out["strength_final"] = rec.strength_final
        if rec.identity_distance:
            out["identity_distance"] = rec.identity_distance
    if rec.final_margin is not None:
        out["final_margin"] = rec.final_margin
    if rec.error:
        out["error"] = rec.error
    return out


def frame_ranges(frames: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-frame records with runs merged: consecutive frames without regions or steps,
    with the same status and classes, become one record ``frames: [first, last]``."""
    out: list[dict[str, Any]] = []
    plain = ("status", "original_class", "final_class")
    for rec in frames:
        prev = out[-1] if out else None
        if (
            prev is not None
            and "regions" not in rec
            and "regions" not in prev
            and "error" not in rec
            and "error" not in prev
            and rec["steps"] == 0
            and prev["steps"] == 0
            and all(prev[k] == rec[k] for k in plain)
            and prev["frames"][1] + 1 == rec["frames"][0]
        ):
            prev["frames"][1] = rec["frames"][1]
            prev.pop("final_margin", None)
            continue
        out.append(dict(rec))
    return out


def per_frame(record: VideoRecord) -> list[dict[str, Any]]:
    """One record per frame from a video record's ``frame_records`` (runs expanded)."""
    out: list[dict[str, Any]] = []
    for rec in record.frame_records:
        first, last = rec["frames"]
        out.extend({**rec, "frames": [t, t]} for t in range(first, last + 1))
    return out


def video_status(counts: Mapping[str, int]) -> Status:
    """A video's status from its frames' (see :class:`VideoRecord`)."""
    if (
        counts.get(str(Status.ERROR))
        or counts.get(str(Status.FAILED))
        or counts.get(str(Status.WEAK))
    ):
        return Status.PARTIAL
    for status in (Status.CORRECTED, Status.UNCHANGED):
        if counts.get(str(status)):
            return status
    return Status.NO_REGIONS


@dataclass
class _Job:
    """One video's run: what every segment needs."""

    classifier: Classifier
    settings: Settings
    options: VideoOptions
    info: VideoInfo
    relative: str
    plan: FramePlan
    source: RegionSource
    batch_size: int


class FrameBuffers:
    """A video's fixed working memory, reused by every segment: ``(S, H, W, 3)`` uint8
    originals, finals and decoded frames and ``(S, H, W)`` bool masks, for ``S`` frames
    of a segment. Allocated once per video (each a single block the allocator maps on
    its own), so a segment's frames never fragment the heap that the model's passes use,
    and memory stays what it was after the first segment whatever the length."""

    def __init__(self, frames: int, height: int, width: int) -> None:
        self.originals = np.empty((frames, height, width, 3), np.uint8)
        self.finals = np.empty_like(self.originals)
        self.decoded = np.empty_like(self.originals)
        self.masks = np.zeros((frames, height, width), bool)


@dataclass
class _Segment:
    """The frames of one segment being worked on: ``originals`` and ``finals`` are
    ``(n, H, W, 3)`` uint8 views of the :class:`FrameBuffers` (upright), ``masks`` each
    frame's ``(1, H, W)`` bool mask (a view of the buffers) or None without regions."""

    first: int
    pts: list[int]
    buffers: FrameBuffers
    masks: list[torch.Tensor | None] = field(default_factory=list)
    recs: list[ImageRecord] = field(default_factory=list)
    fallback: set[int] = field(default_factory=set)
    rounds: int = 0

    @property
    def originals(self) -> np.ndarray:
        return self.buffers.originals[: len(self.pts)]

    @property
    def finals(self) -> np.ndarray:
        return self.buffers.finals[: len(self.pts)]

    def set_mask(self, i: int, mask: torch.Tensor | None) -> None:
        """Keep frame ``i``'s ``(1, H, W)`` mask (None: no regions)."""
        if mask is None:
            self.masks[i] = None
            return
        self.buffers.masks[i] = mask[0].cpu().numpy()
        self.masks[i] = torch.from_numpy(self.buffers.masks[i])[None]


def _frame_source(job: _Job, first: int, count: int) -> RegionSource:
    """The region source of the pipeline for frames ``first .. first + count - 1``."""
    if job.source.uses_saliency:
        return job.source
    names = {frame_name(job.relative, i): job.plan.regions[i] for i in range(first, first + count)}
    return ExplicitBoxes(
        {n: [r.detection.box for r in regs] for n, regs in names.items()},
        labels={n: [r.detection.label for r in regs] for n, regs in names.items()},
        scores={n: [r.detection.score for r in regs] for n, regs in names.items()},
    )


def _anonymize_segment(job: _Job, seg: _Segment) -> None:
    """Stage 2 on a segment: every frame through the photo pipeline; a frame that could
    not be processed gets its regions plainly anonymized (status ``failed``)."""
    settings = replace(job.settings, codec=FrameCodec())
    source = _frame_source(job, seg.first, len(seg.pts))
    for idx in _chunks(len(seg.pts), job.batch_size):
        names = [frame_name(job.relative, seg.first + i) for i in idx]
        images = [to_image(seg.originals[i], job.classifier.device) for i in idx]
        outs: list[Outcome] = process_batch(
            job.classifier, source, settings, names, images, keep_images=True
        )
        for i, out in zip(idx, outs, strict=True):
            rec = out.record
            if out.images is None or out.data is None:
                final, mask = _plain(job, seg.first + i, seg.originals[i])
                rec.status = Status.FAILED
                rec.error = f"not corrected ({rec.error}); its regions are plainly anonymized"
            else:
                final = FrameCodec().decode(out.data)
                mask = out.images.mask if rec.regions else None
            seg.finals[i] = final
            seg.masks.append(None)
            seg.set_mask(i, mask)
            seg.recs.append(rec)
            if rec.status == Status.WEAK:
                _fall_back(job, seg, i)


def _plain(job: _Job, index: int, original: np.ndarray) -> tuple[np.ndarray, torch.Tensor | None]:
    """A frame's tracked regions plainly anonymized with the run's filter, and the mask."""
    regions = job.plan.regions[index] if not job.source.uses_saliency else []
    if not regions:
        return original, None
    image = to_image(original)
    geometry = job.classifier.geometry(image.shape[-2], image.shape[-1])
    anon, mask = anonymize(
        image,
        [r.detection.box for r in regions],
        job.settings.filter,
        geometry.scale if geometry else 1.0,
        job.settings.shape,
        [r.detection.label for r in regions],
    )
    return to_pixels(anon), mask


def _fall_back(job: _Job, seg: _Segment, i: int) -> None:
    """Frame ``i`` of ``seg`` had a region left recognizable: its regions get the solid
    mask (:data:`FALLBACK`) on the original pixels, uncorrected."""
    rec = seg.recs[i]
    image = to_image(seg.originals[i])
    boxes = [(b[0], b[1], b[2], b[3]) for b in rec.regions]
    masked, mask = anonymize(image, boxes, FALLBACK, 1.0, job.settings.shape)
    seg.finals[i] = to_pixels(masked)
    seg.set_mask(i, mask)
    seg.fallback.add(i)
    reason = rec.error or "a region stayed recognizable"
    rec.status = Status.UNCHANGED
    rec.error = f"fallback: {FALLBACK.describe()} ({reason})"
    rec.steps = 0


def _decode(job: _Job, seg: _Segment, data: bytes) -> tuple[list[int], np.ndarray]:
    """The segment's frames decoded from ``data`` into the decoded buffer."""
    pts: list[int] = []
    out = seg.buffers.decoded
    for stamp, pixels in iter_frames(data, rotation=job.info.rotation):
        if len(pts) < len(out) and pixels.shape == out.shape[1:]:
            out[len(pts)] = pixels
        pts.append(stamp)
    return pts, out[: len(seg.pts)]


def _check_segment(job: _Job, seg: _Segment) -> bytes:
    """Stage 3 on a segment: encode it, decode it, check each frame's decision (and, for a
    lossy codec, re-correct the changed ones up to ``rounds`` times) and each region's
    strength on the decoded pixels; returns the segment's bytes."""
    codec, settings, n = job.options.codec, job.settings, len(seg.pts)
    target = torch.tensor(
        [r.original_class if r.original_class is not None else -1 for r in seg.recs]
    )
    reference = (
        torch.softmax(_classify(job.classifier, seg.originals, job.batch_size), 1)
        if settings.criterion.needs_reference
        else None
    )
    data = encode_segment(seg.finals, seg.pts, job.info, codec)
    changed: list[int] = []
    logits = torch.zeros(0)
    checked_strength = False
    for round_ in range(job.options.rounds + 2):
        pts, decoded = _decode(job, seg, data)
        if pts != seg.pts:
            raise ValueError(
                f"segment from frame {seg.first}: {len(pts)} frames decoded of {n}, or their "
                "time stamps differ"
            )
        if codec.lossless:
            bad = [i for i in range(n) if not np.array_equal(decoded[i], seg.finals[i])]
            if bad:
                raise ValueError(
                    f"frames {[seg.first + i for i in bad[:10]]} do not decode to the verified pixels"
                )
        logits = _classify(job.classifier, decoded, job.batch_size)
        probs = torch.softmax(logits, 1)
        ok = settings.criterion(logits, target, probs if reference is None else reference)
        changed = [i for i in range(n) if seg.recs[i].status.ok and not bool(ok[i])]
        if not checked_strength and not codec.lossless:
            # The privacy floor on the decoded pixels; a weak region gets the mask.
            weak = _weak_on_decoded(settings, seg, decoded)
            checked_strength = True
            if weak:
                for i in weak:
                    _fall_back(job, seg, i)
                data = encode_segment(seg.finals, seg.pts, job.info, codec)
                continue
        fixable = [i for i in changed if seg.masks[i] is not None and i not in seg.fallback]
        if codec.lossless or not fixable or round_ >= job.options.rounds:
            break
        margins = logit_margin(logits, target.clamp(min=0))
        near = [
            i
            for i in range(n)
            if seg.recs[i].status.ok
            and bool(ok[i])
            and margins[i] < ROUND_MARGIN
            and seg.masks[i] is not None
            and i not in seg.fallback
        ]
        _recorrect(job, seg, sorted(fixable + near), decoded, target, reference, round_)
        data = encode_segment(seg.finals, seg.pts, job.info, codec)
    margins = logit_margin(logits, target.clamp(min=0))
    for i, rec in enumerate(seg.recs):
        rec.final_class = int(logits[i].argmax())
        rec.final_margin = round(float(margins[i]), 6)
    for i in changed:
        rec = seg.recs[i]
        rec.status = Status.FAILED
        if i in seg.fallback:
            why = "after the mask fallback"
        elif rec.regions:
            why = f"after {seg.rounds} round(s)"
        else:
            why = "and the frame has no region to correct"
        rec.error = f"class changed on the decoded video {why}" + (
            f"; {rec.error}" if rec.error else ""
        )
    return data


def _weak_on_decoded(
    settings: Settings, seg: _Segment, decoded: Sequence[np.ndarray] | np.ndarray
) -> list[int]:
    """Frames of ``seg`` with a region too similar to the original on the decoded pixels
    (``strength_final`` is measured there)."""
    weak = []
    for i, rec in enumerate(seg.recs):
        if not rec.regions or i in seg.fallback or not rec.status.ok:
            continue
        boxes = [(b[0], b[1], b[2], b[3]) for b in rec.regions]
        final = image_strength(
            to_image(seg.originals[i]), to_image(decoded[i]), boxes, settings.shape
        )
        rec.strength_final = [s.to_dict() for s in final]
        problem = settings.strength.weak(boxes, final)
        if problem:
            rec.error = f"on the decoded video: {problem}"
            weak.append(i)
    return weak


def _recorrect(
    job: _Job,
    seg: _Segment,
    ids: Sequence[int],
    decoded: Sequence[np.ndarray] | np.ndarray,
    target: torch.Tensor,
    reference: torch.Tensor | None,
    round_: int,
) -> None:
    """Correct frames ``ids`` again from their decoded pixels; the change is added to the
    frames that are encoded next."""
    seg.rounds += 1
    device = job.classifier.device
    criterion = AllOf((job.settings.criterion, SameClass(ROUND_MARGIN * (round_ + 1))))
    for idx in _chunks(len(ids), job.batch_size):
        part = [ids[j] for j in idx]
        masks = [seg.masks[i] for i in part]
        solved = job.settings.solver(
            job.classifier,
            [to_image(decoded[i], device) for i in part],
            [m.to(device) for m in masks if m is not None],
            target[part].to(device),
            criterion=criterion,
            reference=None if reference is None else reference[part].to(device),
            codec=Codec(),
        )
        for j, i in enumerate(part):
            delta = to_pixels(solved.stored[j]).astype(np.int16) - decoded[i]
            seg.finals[i] = np.clip(seg.finals[i].astype(np.int16) + delta, 0, 255).astype(np.uint8)
            seg.recs[i].steps += int(solved.steps[j])
            if seg.recs[i].status == Status.UNCHANGED:
                seg.recs[i].status = Status.CORRECTED


class WorkArea:
    """One video's unfinished work in the output folder: the find pass's plan and each
    finished segment (its file and its frames' records), written atomically. Its name is
    a digest of the input (path, size, modification time) and the run's settings, so
    only a run that would produce the same output resumes from it."""

    def __init__(self, out_dir: Path, item: InputImage, described: Mapping[str, Any]) -> None:
        stat = item.path.stat()
        key = json.dumps(
            [str(item.path.resolve()), stat.st_size, stat.st_mtime_ns, described],
            sort_keys=True,
            default=str,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        self.root = out_dir / WORK_FOLDER / digest

    def plan(self) -> FramePlan | None:
        """The plan an earlier run kept, if any."""
        path = self.root / "plan.json"
        try:
            return FramePlan.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None

    def keep_plan(self, plan: FramePlan) -> None:
        """Keep ``plan`` for a later run."""
        atomic_write(self.root / "plan.json", json.dumps(plan.to_json(), separators=(",", ":")))

    def segment_file(self, k: int) -> Path:
        """Where segment ``k``'s video is kept."""
        return self.root / f"segment-{k:06d}.part"

    def segment(self, k: int, first: int, count: int) -> dict[str, Any] | None:
        """Segment ``k``'s record (frames ``first .. first + count - 1``) when an earlier
        run finished it."""
        try:
            rec = json.loads((self.root / f"segment-{k:06d}.json").read_text())
        except (OSError, ValueError):
            return None
        if rec.get("first") != first or len(rec.get("frames", ())) != count:
            return None
        return rec if self.segment_file(k).is_file() else None

    def keep_segment(self, k: int, data: bytes, record: Mapping[str, Any]) -> None:
        """Keep segment ``k``: its file first, then its record (which marks it finished)."""
        atomic_write(self.segment_file(k), data)
        atomic_write(self.root / f"segment-{k:06d}.json", json.dumps(record, separators=(",", ":")))

    def remove(self) -> None:
        """Remove the work area (the video is finished)."""
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.root.parent.rmdir()
        except OSError:
            pass


def anonymize_video(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    item: InputImage,
    options: VideoOptions,
    work: WorkArea,
    target: Path,
    batch_size: int = 8,
    on_frames: Callable[[int], None] | None = None,
) -> tuple[VideoRecord, Path | None]:
    """Anonymize one video file into a hidden temporary next to ``target``: its record
    and the temporary's path (None when nothing may be written; the record says why).

    ``work`` keeps the plan and the finished segments, so a stopped run resumes at the
    first unfinished segment; ``on_frames(n)`` is told as ``n`` more frames are done.

    Raises:
        ValueError: the video cannot be read, processed or written (one line).
    """
    relative = item.relative.as_posix()
    info = probe_video(item.path, current_pixel_limit())
    record = VideoRecord(
        input=relative,
        time_base=str(info.time_base),
        fps=float(info.rate) if info.rate else None,
        rotation=info.rotation,
    )
    plan = work.plan()
    if plan is None:
        frames = iter_frames(item.path, rotation=info.rotation)
        if source.uses_saliency:
            plan = FramePlan([p for p, _ in frames], [])
        else:
            plan = find_tracked(
                classifier, source, relative, frames, options, (info.width, info.height)
            )
        work.keep_plan(plan)
    n = len(plan.pts)
    if not source.uses_saliency and len(plan.regions) != n:
        raise ValueError("the kept plan does not match the video")
    record.frame_count, record.tracks = n, plan.tracks
    record.duration = duration(plan.pts, info.time_base, info.rate)
    frames_per_batch = max(1, min(batch_size, BATCH_PIXELS // max(1, info.width * info.height)))
    job = _Job(classifier, settings, options, info, relative, plan, source, frames_per_batch)
    per = options.segment_length(info)
    frames_out: list[dict[str, Any]] = []
    paths: list[Path] = []
    decoder: Iterator[tuple[int, np.ndarray]] | None = None
    buffers = FrameBuffers(min(per, n), info.height, info.width)
    for k, idx in enumerate(_chunks(n, per)):
        kept = work.segment(k, idx.start, len(idx))
        paths.append(work.segment_file(k))
        if kept is not None:
            _add_segment(record, kept)
            frames_out.extend(kept["frames"])
            record.resumed += 1
            decoder = None  # the next unfinished segment seeks to its start
            if on_frames:
                on_frames(len(idx))
            continue
        if decoder is None:
            decoder = iter_frames(item.path, rotation=info.rotation, start_pts=plan.pts[idx.start])
        seg = _Segment(idx.start, [], buffers)
        for k_frame in range(len(idx)):
            stamp, pixels = next(decoder)
            seg.pts.append(stamp)
            buffers.originals[k_frame] = pixels
        if seg.pts != plan.pts[idx.start : idx.stop]:
            raise ValueError(f"frames from {idx.start} decode with other time stamps than before")
        _anonymize_segment(job, seg)
        data = _check_segment(job, seg)
        regions = plan.regions if plan.regions else [[] for _ in range(n)]
        kept = {
            "first": idx.start,
            "rounds": seg.rounds,
            "frames": [
                _frame_dict(idx.start + i, rec, regions[idx.start + i])
                for i, rec in enumerate(seg.recs)
            ],
            "fallback": sorted(idx.start + i for i in seg.fallback),
        }
        work.keep_segment(k, data, kept)
        _add_segment(record, kept)
        frames_out.extend(kept["frames"])
        del seg
        if on_frames:
            on_frames(len(idx))
    counts = Counter(f["status"] for f in frames_out)
    record.frame_status = dict(sorted(counts.items()))
    record.changed_frames = [
        f["frames"][0]
        for f in frames_out
        if f["status"] == Status.FAILED and "class changed" in (f.get("error") or "")
    ]
    record.frame_records = frame_ranges(frames_out)
    record.status = video_status(counts)
    record.steps = sum(f["steps"] for f in frames_out)
    bad = [
        f["frames"][0] for f in frames_out if f["status"] not in (str(s) for s in Status if s.ok)
    ]
    if bad:
        record.error = f"{len(bad)} frame(s) fell short (first: {bad[:10]}); see frame_records"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        join_segments(item.path, paths, tmp, info, options.codec)
        _check_times(plan.pts, info.time_base, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return record, tmp


def _add_segment(record: VideoRecord, kept: Mapping[str, Any]) -> None:
    record.segments += 1
    record.rounds += int(kept.get("rounds", 0))
    record.fallback_frames.extend(kept.get("fallback", ()))


def _check_times(pts: Sequence[int], time_base: Fraction, written: Path) -> None:
    """The written file holds one frame per input frame at the same times (within half a
    tick of the output's time base).

    Raises:
        ValueError: the count or a time differs.
    """
    times = packet_times(written)
    if len(times) != len(pts):
        raise ValueError(f"the written video has {len(times)} frames, the input {len(pts)}")
    tick = Fraction(1, 1000)
    for i, (p, t) in enumerate(zip(pts, times, strict=True)):
        if abs(p * time_base - t) > tick / 2:
            raise ValueError(
                f"frame {i} of the written video is at {float(t):.6f} s, the input's at {float(p * time_base):.6f} s"
            )


def run_videos(
    items: Sequence[InputImage],
    out_dir: Path,
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    options: VideoOptions,
    batch_size: int = 8,
    on_record: Callable[[ImageRecord], None] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = True,
    extra_settings: Mapping[str, Any] | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> Summary:
    """Anonymize the videos ``items`` into ``out_dir`` (one entry of the manifest each),
    with :func:`~adaptanon.engines.writer.write_outputs`'s rules: atomic writes, inputs
    never overwritten, one run at a time, and resuming per video and, inside an
    unfinished video, per segment (``resume``). Outputs keep their relative paths with the
    container's extension (:meth:`VideoCodec.extension`)."""
    described = {
        **describe_run(classifier, source, settings, None, extra_settings),
        **options.describe(),
    }
    described.pop("format", None)
    described.pop("quality", None)
    groups: dict[str, list[InputImage]] = {}
    for item in items:
        groups.setdefault(options.codec.extension(item.path), []).append(item)
    total = Summary()
    for extension, group in groups.items():

        def produce(
            todo: list[InputImage], extension: str = extension
        ) -> Iterator[tuple[InputImage, Outcome]]:
            for item in todo:
                work = WorkArea(out_dir, item, described)
                if not resume:
                    work.remove()
                target = output_path(out_dir, item, extension)
                try:
                    rec, tmp = anonymize_video(
                        classifier, source, settings, item, options, work, target, batch_size,
                        on_frames,
                    )  # fmt: skip
                except (RuntimeError, ValueError, MemoryError, OSError) as exc:
                    out = error_outcome(item, f"processing: {exc}")
                    out.record = VideoRecord(**out.record.to_dict())
                    yield item, out
                    continue
                yield item, Staged(rec, staged=tmp)
                work.remove()

        summary = write_outputs(
            group, out_dir, produce, described, extension, on_record,
            overwrite=overwrite, resume=resume,
        )  # fmt: skip
        total.counts.update(summary.counts)
        total.skipped += summary.skipped
    return total
