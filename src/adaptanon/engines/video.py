"""Videos: every frame through the same method as a photo, batched across time, written
back with the input's time stamps and its audio and subtitle packets, and the decision
checked on the frames as a reader decodes them from the written file.

One video is one entry of the output folder: its record (:class:`VideoRecord`) holds
the per-frame records (runs of frames with the same result as one record) and one
record per track. Writing, resuming and the output rules are those of
:func:`adaptanon.engines.writer.write_outputs`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptanon.classifiers import Classifier
from adaptanon.engines.batches import error_outcome
from adaptanon.engines.writer import Summary, describe_run, write_outputs
from adaptanon.io.codecs import Codec, to_image, to_pixels
from adaptanon.io.images import InputImage, current_pixel_limit
from adaptanon.io.video import Clip, VideoCodec, read_video, write_video
from adaptanon.method.criteria import AllOf, SameClass, logit_margin
from adaptanon.method.metrics import image_strength
from adaptanon.method.pipeline import Outcome, Settings, process_batch
from adaptanon.records import ImageRecord, Status
from adaptanon.regions import ExplicitBoxes, RegionQuery, RegionSource
from adaptanon.regions.tracking import TrackedRegion, hold_regions, track

DEFAULT_HOLD = 5
"""``--hold-frames``: frames before and after a track's detections that are anonymized too."""

DEFAULT_ROUNDS = 3
"""``--video-rounds``: re-corrections of a lossy video against its decoded frames."""

DETECT_PIXELS = 8_000_000
"""Most frame pixels per detector call: the detectors run a batch at full resolution (a
batch of eight 1080p frames took 4 GB in CenterFace on a CPU), four 1080p frames at most."""

ROUND_MARGIN = 0.5
"""Extra logit margin asked of a frame per lossy round, so the next encode's error does
not flip it again; frames whose margin on the decoded video is below it are corrected in
the same round as the changed ones."""


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

    def describe(self) -> dict[str, Any]:
        """What a video record's ``settings`` add to the photo settings."""
        out = {**self.codec.describe(), "hold_frames": self.hold}
        if not self.codec.lossless:
            out["video_rounds"] = self.rounds
        return out


@dataclass
class VideoRecord(ImageRecord):
    """One video's record in the manifest (an :class:`ImageRecord` with ``kind: video``).

    ``frame_count``, ``duration`` (seconds), ``time_base`` and ``fps`` (average) of the
    input, which the output keeps; ``frame_status``: frames per status; ``frame_records``:
    the per-frame results, a run of consecutive frames with the same status and classes
    (and no correction steps) as one record with ``frames: [first, last]``; ``tracks``:
    one record per track (``id``, ``label``, ``first``/``last`` frame covered, frames
    ``detected`` and ``held``); ``rounds``: lossy re-encode rounds done; ``changed_frames``:
    frames whose decision changed on the decoded output and could not be restored.
    """

    kind: str = "video"
    frame_count: int = 0
    duration: float | None = None
    time_base: str | None = None
    fps: float | None = None
    frame_status: dict[str, int] = field(default_factory=dict)
    frame_records: list[dict[str, Any]] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0
    changed_frames: list[int] = field(default_factory=list)


@dataclass
class VideoResult:
    """What :func:`process_clip` gives: the record, the encoded video (``data``, None
    when nothing may be written), and per frame the ``(H, W, 3)`` uint8 originals, the
    finals that were encoded last, the tracked regions and the per-frame records."""

    record: VideoRecord
    data: bytes | None = None
    originals: list[np.ndarray] = field(default_factory=list)
    finals: list[np.ndarray] = field(default_factory=list)
    regions: list[list[TrackedRegion]] = field(default_factory=list)
    frame_outcomes: list[ImageRecord] = field(default_factory=list)


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def find_tracked(
    classifier: Classifier,
    source: RegionSource,
    names: Sequence[str],
    frames: Sequence[np.ndarray],
    hold: int,
    batch_size: int,
    iou: float = 0.3,
) -> tuple[list[list[TrackedRegion]], list[dict[str, Any]], str | None]:
    """Each frame's regions from ``source`` (batches of at most ``batch_size`` frames and
    :data:`DETECT_PIXELS` pixels), linked into tracks and held
    (:func:`~adaptanon.regions.tracking.hold_regions`); the per-track records; and the
    first per-frame error of the source (then nothing else is returned)."""
    found = []
    height, width = frames[0].shape[:2]
    chunk = max(1, min(batch_size, DETECT_PIXELS // (height * width)))
    for idx in _batches(len(frames), chunk):
        images = [to_image(frames[i]) for i in idx]
        queries = [
            RegionQuery(names[i], img, classifier.geometry(img.shape[-2], img.shape[-1]))
            for i, img in zip(idx, images, strict=True)
        ]
        for i, regions in zip(idx, source.find(queries), strict=True):
            if regions.error is not None:
                return [], [], f"frame {i}: regions: {regions.error}"
            found.append(list(regions.detections))
    tracks = track(found, hold, iou)
    per_frame = hold_regions(tracks, len(frames), width, height, hold)
    records = []
    for tr in tracks:
        covered = [f for f, regs in enumerate(per_frame) if any(r.track == tr.id for r in regs)]
        records.append(
            {
                "id": tr.id,
                "label": tr.label,
                "first": min(covered),
                "last": max(covered),
                "detected": len(tr.boxes),
                "held": len(covered) - len(tr.boxes),
            }
        )
    return per_frame, records, None


def _classify(
    classifier: Classifier, frames: Sequence[np.ndarray], batch_size: int
) -> torch.Tensor:
    logits = []
    with torch.no_grad():
        for idx in _batches(len(frames), batch_size):
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
    if rec.regions:
        out["regions"] = rec.regions
        out["tracks"] = [r.track for r in regions]
        out["held"] = [r.held for r in regions]
        out["strength_final"] = rec.strength_final
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


def _video_status(counts: Counter[Status]) -> Status:
    for status in (Status.ERROR, Status.FAILED, Status.WEAK):
        if counts[status]:
            return Status.FAILED if status == Status.ERROR else status
    if counts[Status.CORRECTED]:
        return Status.CORRECTED
    if counts[Status.UNCHANGED]:
        return Status.UNCHANGED
    return Status.NO_REGIONS


def process_clip(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    relative: str,
    path: Path,
    clip: Clip,
    options: VideoOptions,
    batch_size: int = 8,
) -> VideoResult:
    """Anonymize every frame of ``clip`` (decoded from ``path``, named ``relative``),
    encode the video and check the decision of every frame on the decoded file.

    Regions: a saliency source runs per frame inside the pipeline; any other source
    (detectors, detections files with ``FILE#FRAME`` keys) is run first on every frame,
    and its detections tracked and held (``options.hold``). Frames go through
    :func:`~adaptanon.method.pipeline.process_batch` ``batch_size`` at a time. With a
    lossless codec the decoded frames must equal the verified ones; with a lossy one,
    frames whose decision changed on the decoded file are corrected again against their
    decoded pixels (the correction found there is added to the frame that is encoded),
    and the video re-encoded, up to ``options.rounds`` times.
    """
    frames = clip.frames
    n = len(frames)
    names = [frame_name(relative, i) for i in range(n)]
    record = VideoRecord(
        input=relative,
        frame_count=n,
        duration=clip.duration,
        time_base=str(clip.time_base),
        fps=float(clip.rate) if clip.rate else None,
    )
    result = VideoResult(record, originals=frames)
    settings = replace(settings, codec=FrameCodec())
    frame_source: RegionSource = source
    tracked: list[list[TrackedRegion]] = [[] for _ in range(n)]
    if not source.uses_saliency:
        tracked, record.tracks, problem = find_tracked(
            classifier, source, names, frames, options.hold, batch_size, options.iou
        )
        if problem is not None:
            record.error = problem
            return result
        frame_source = ExplicitBoxes(
            {name: [r.detection.box for r in regs] for name, regs in zip(names, tracked, strict=True)},
            labels={name: [r.detection.label for r in regs] for name, regs in zip(names, tracked, strict=True)},
            scores={name: [r.detection.score for r in regs] for name, regs in zip(names, tracked, strict=True)},
        )  # fmt: skip
    finals: list[np.ndarray] = []
    recs: list[ImageRecord] = []
    masks: list[torch.Tensor] = []
    for idx in _batches(n, batch_size):
        images = [to_image(frames[i], classifier.device) for i in idx]
        outs: list[Outcome] = process_batch(
            classifier, frame_source, settings, [names[i] for i in idx], images, keep_images=True
        )
        for i, out in zip(idx, outs, strict=True):
            recs.append(out.record)
            if out.images is None:
                finals.append(frames[i])
                masks.append(torch.zeros(1, *frames[i].shape[:2], dtype=torch.bool))
                continue
            finals.append(to_pixels(out.images.final))
            masks.append(out.images.mask.cpu())
            record.steps += out.record.steps
    errors = [(i, r.error) for i, r in enumerate(recs) if r.status == Status.ERROR]
    if errors:
        # Such a frame is not anonymized: nothing is written (the photo rule).
        record.error = (
            f"{len(errors)} frame(s) could not be processed; frame {errors[0][0]}: {errors[0][1]}"
        )
        record.frame_records = frame_ranges(
            [_frame_dict(i, r, tracked[i]) for i, r in enumerate(recs)]
        )
        return result
    target = torch.tensor([r.original_class if r.original_class is not None else -1 for r in recs])
    codec = options.codec
    try:
        data = write_video(path, clip, finals, codec)
        decoded = read_video(data)
    except ValueError as exc:
        record.error = str(exc)
        return result
    problem = _same_timing(clip, decoded)
    changed: list[int] = []
    if problem is None and codec.lossless:
        bad = [i for i in range(n) if not np.array_equal(decoded.frames[i], finals[i])]
        if bad:
            problem = f"frames {bad[:10]} do not decode to the verified pixels"
    elif problem is None:
        data, changed, record.rounds, stored = _lossy_rounds(
            classifier, settings, path, clip, finals, masks, recs, target, options, batch_size,
            data, decoded,
        )  # fmt: skip
        _check_stored_regions(settings, frames, stored, recs, changed)
    for i in changed:
        recs[i].status = Status.FAILED
        recs[i].error = (
            f"class changed on the decoded video after {record.rounds} round(s)"
            if recs[i].regions
            else "class changed on the decoded video and the frame has no region to correct"
        )
    counts = Counter(r.status for r in recs)
    record.frame_status = {str(s): counts[s] for s in Status if counts[s]}
    record.changed_frames = changed
    record.frame_records = frame_ranges([_frame_dict(i, r, tracked[i]) for i, r in enumerate(recs)])
    record.original_class = None
    if problem is not None:
        record.status, record.error = Status.FAILED, problem
    else:
        record.status = _video_status(counts)
        bad_frames = [i for i, r in enumerate(recs) if not r.status.ok]
        if bad_frames:
            record.error = f"{len(bad_frames)} frame(s) not done (first: {bad_frames[:10]})"
    result.data, result.finals, result.regions, result.frame_outcomes = data, finals, tracked, recs
    return result


def _same_timing(clip: Clip, decoded: Clip) -> str | None:
    if len(decoded.pts) != len(clip.pts):
        return f"the written video has {len(decoded.pts)} frames, the input {len(clip.pts)}"
    times = [p * clip.time_base for p in clip.pts]
    if times != [p * decoded.time_base for p in decoded.pts]:
        return "the written video's frame times differ from the input's"
    return None


def _lossy_rounds(
    classifier: Classifier,
    settings: Settings,
    path: Path,
    clip: Clip,
    finals: list[np.ndarray],
    masks: list[torch.Tensor],
    recs: list[ImageRecord],
    target: torch.Tensor,
    options: VideoOptions,
    batch_size: int,
    data: bytes,
    decoded: Clip,
) -> tuple[bytes, list[int], int, list[np.ndarray]]:
    """Check the decoded frames and re-correct the changed ones, up to ``options.rounds``
    times; returns the bytes to write, the frames still changed, the rounds done and the
    frames as decoded from those bytes."""
    record_rounds = 0
    changed: list[int] = []
    # Criteria that compare with the original probabilities (prob:EPS) get them.
    reference = (
        torch.softmax(_classify(classifier, clip.frames, batch_size), 1)
        if settings.criterion.needs_reference
        else None
    )
    for round_ in range(options.rounds + 1):
        if round_:
            decoded = read_video(data)
        logits = _classify(classifier, decoded.frames, batch_size)
        ok = settings.criterion(
            logits, target, torch.softmax(logits, 1) if reference is None else reference
        )
        changed = [i for i in range(len(finals)) if recs[i].status.ok and not bool(ok[i])]
        fixable = [i for i in changed if bool(masks[i].any())]
        if not fixable or round_ == options.rounds:
            break
        # Frames near the boundary are corrected too: encoding again after the changed
        # frames are corrected moves every frame a little, and may flip them next.
        margins = logit_margin(logits, target.clamp(min=0))
        near = [
            i
            for i in range(len(finals))
            if recs[i].status.ok
            and bool(ok[i])
            and margins[i] < ROUND_MARGIN
            and bool(masks[i].any())
        ]
        fixable = sorted(fixable + near)
        record_rounds += 1
        criterion = AllOf((settings.criterion, SameClass(ROUND_MARGIN * (round_ + 1))))
        for idx in _batches(len(fixable), batch_size):
            ids = [fixable[j] for j in idx]
            start = [to_image(decoded.frames[i], classifier.device) for i in ids]
            solved = settings.solver(
                classifier,
                start,
                [masks[i].to(classifier.device) for i in ids],
                target[ids].to(classifier.device),
                criterion=criterion,
                reference=None if reference is None else reference[ids].to(classifier.device),
                codec=Codec(),
            )
            for j, i in enumerate(ids):
                delta = to_pixels(solved.stored[j]).astype(np.int16) - decoded.frames[i]
                finals[i] = np.clip(finals[i].astype(np.int16) + delta, 0, 255).astype(np.uint8)
                recs[i].steps += int(solved.steps[j])
                if recs[i].status == Status.UNCHANGED:
                    recs[i].status = Status.CORRECTED
        data = write_video(path, clip, finals, options.codec)
    margins = logit_margin(logits, target.clamp(min=0))
    for i, rec in enumerate(recs):
        rec.final_class = int(logits[i].argmax())
        rec.final_margin = float(margins[i])
    return data, changed, record_rounds, decoded.frames


def _check_stored_regions(
    settings: Settings,
    originals: Sequence[np.ndarray],
    stored: Sequence[np.ndarray],
    recs: list[ImageRecord],
    changed: Sequence[int],
) -> None:
    """The privacy floor on a lossy video's decoded frames: each frame's regions are
    measured again there (``strength_final``), and a frame whose region is too similar to
    the original is ``weak``."""
    for i, rec in enumerate(recs):
        if not rec.regions or i in changed or not rec.status.ok:
            continue
        boxes = [(b[0], b[1], b[2], b[3]) for b in rec.regions]
        final = image_strength(to_image(originals[i]), to_image(stored[i]), boxes, settings.shape)
        rec.strength_final = [s.to_dict() for s in final]
        weak = settings.strength.weak(boxes, final)
        if weak:
            rec.status, rec.error = Status.WEAK, f"on the decoded video: {weak}"


def process_video(
    classifier: Classifier,
    source: RegionSource,
    settings: Settings,
    item: InputImage,
    options: VideoOptions,
    batch_size: int = 8,
) -> Outcome:
    """One video file in, its :class:`Outcome` out (``data``: the encoded video); a file
    that cannot be read or written is an ``error`` record, never an exception."""
    relative = item.relative.as_posix()
    try:
        clip = read_video(item.path, current_pixel_limit())
    except ValueError as exc:
        out = error_outcome(item, str(exc))
        out.record = VideoRecord(**out.record.to_dict())
        return out
    try:
        result = process_clip(
            classifier, source, settings, relative, item.path, clip, options, batch_size
        )
    except (RuntimeError, ValueError, MemoryError) as exc:
        out = error_outcome(item, f"processing: {exc}")
        out.record = VideoRecord(**out.record.to_dict())
        return out
    if result.data is None:
        result.record.status = Status.ERROR
    return Outcome(result.record, result.data)


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
) -> Summary:
    """Anonymize the videos ``items`` into ``out_dir`` (one entry of the manifest each),
    with :func:`~adaptanon.engines.writer.write_outputs`'s rules: atomic writes, inputs
    never overwritten, one run at a time, and resuming per video. Outputs keep their
    relative paths with the container's extension (:meth:`VideoCodec.extension`)."""
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

        def produce(todo: list[InputImage]) -> Iterator[tuple[InputImage, Outcome]]:
            for item in todo:
                yield item, process_video(classifier, source, settings, item, options, batch_size)

        summary = write_outputs(
            group, out_dir, produce, described, extension, on_record,
            overwrite=overwrite, resume=resume,
        )  # fmt: skip
        total.counts.update(summary.counts)
        total.skipped += summary.skipped
    return total
