"""Regions over time: an IoU tracker and a hold, so that a face or plate found in some
frames of a video is also anonymized in the frames around them where the detector
missed it.

The tracker associates each frame's detections with the tracks alive (greedy, highest
IoU first, same label only, each track's box predicted at constant velocity), as SORT
and ByteTrack do without their Kalman filter and score tiers. A track survives up to
``hold`` frames without a detection. :func:`hold_regions` then covers, for every track,
the gaps between its detections (boxes interpolated linearly) and ``hold`` frames before
its first and after its last detection (boxes extrapolated at the track's velocity),
so a region never flickers to visible for up to ``hold`` missed frames, forward and
backward. A low-score detection between surer ones (a face partly covered, found
shifted) adds to the track's interpolated box instead of replacing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from adaptanon.records import Box
from adaptanon.regions.base import Detection


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when disjoint)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def coverage(box: Sequence[int], boxes: Sequence[Sequence[int]]) -> float:
    """Share of ``box``'s pixels that lie inside the union of ``boxes`` (integer,
    half-open ``(x0, y0, x1, y1)``)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return 1.0
    inside = np.zeros((y1 - y0, x1 - x0), bool)
    for b in boxes:
        inside[max(0, b[1] - y0) : max(0, b[3] - y0), max(0, b[0] - x0) : max(0, b[2] - x0)] = True
    return float(inside.mean())


@dataclass
class Track:
    """One object over time: its detections by frame (box and score) and label."""

    id: int
    label: str
    boxes: dict[int, Box] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)

    @property
    def first(self) -> int:
        """First frame with a detection."""
        return min(self.boxes)

    @property
    def last(self) -> int:
        """Last frame with a detection."""
        return max(self.boxes)

    def velocity(self, at_end: bool) -> tuple[float, ...]:
        """Per-frame change of the box coordinates between the two detections at the
        track's end (``at_end``) or start; zeros for a single detection."""
        frames = sorted(self.boxes)
        if len(frames) < 2:
            return (0.0, 0.0, 0.0, 0.0)
        f0, f1 = (frames[-2], frames[-1]) if at_end else (frames[0], frames[1])
        a, b = self.boxes[f0], self.boxes[f1]
        return tuple((bv - av) / (f1 - f0) for av, bv in zip(a, b, strict=True))

    def predict(self, frame: int) -> tuple[float, ...]:
        """The box expected at ``frame`` after the last detection (constant velocity)."""
        last = self.last
        v = self.velocity(at_end=True)
        return tuple(c + d * (frame - last) for c, d in zip(self.boxes[last], v, strict=True))


def track(
    detections: Sequence[Sequence[Detection]], hold: int = 5, iou_threshold: float = 0.3
) -> list[Track]:
    """Link per-frame detections (``detections[t]``: frame ``t``'s) into tracks.

    A detection joins the alive track of the same label whose predicted box overlaps it
    most (IoU at least ``iou_threshold``); a track is alive while it has missed at most
    ``hold`` frames. Unmatched detections start new tracks. Tracks are numbered from 1
    in order of appearance."""
    if hold < 0:
        raise ValueError(f"hold must be >= 0 frames, got {hold}")
    tracks: list[Track] = []
    alive: list[Track] = []
    for t, found in enumerate(detections):
        alive = [tr for tr in alive if t - tr.last <= hold + 1]
        pairs = sorted(
            (
                (box_iou(tr.predict(t), d.box), ti, di)
                for ti, tr in enumerate(alive)
                for di, d in enumerate(found)
                if tr.label == d.label
            ),
            reverse=True,
        )
        used_t: set[int] = set()
        used_d: set[int] = set()
        for iou, ti, di in pairs:
            if iou < iou_threshold:
                break
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            alive[ti].boxes[t] = found[di].box
            alive[ti].scores[t] = found[di].score
        for di, d in enumerate(found):
            if di not in used_d:
                new = Track(len(tracks) + 1, d.label, {t: d.box}, {t: d.score})
                tracks.append(new)
                alive.append(new)
    return tracks


CONFIDENT = 0.5
"""Detections scored at least this are trusted for a track's box (CenterFace: above 0.5
nearly every detection is a face; boxes from files and the Haar cascade's counts score
1 or more)."""

RELATIVE = 0.75
"""A detection scored below this share of its track's median score is not trusted for the
track's box either (a partly covered face was found shifted with 0.52 where the track
scored about 0.9)."""


@dataclass(frozen=True)
class TrackedRegion:
    """A region of one frame: the detection, the track it belongs to, and whether the
    detector found it there (``held`` False) or the hold added it."""

    detection: Detection
    track: int
    held: bool


def _clip(box: Sequence[float], width: int, height: int) -> Box | None:
    x0, y0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x1, y1 = min(width, int(round(box[2]))), min(height, int(round(box[3])))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def hold_regions(
    tracks: Sequence[Track],
    frames: int,
    width: int,
    height: int,
    hold: int = 5,
    confident: float = CONFIDENT,
) -> list[list[TrackedRegion]]:
    """Each frame's regions (``frames`` lists): every track's detections, its gaps filled
    by linear interpolation between the detections around them, and ``hold`` frames
    before its first and after its last detection at its velocity there (clipped to the
    ``width x height`` frame). A held region carries the track's nearest score.

    A detection scored below ``confident``, or below :data:`RELATIVE` times the track's
    median score, in a track that also has surer ones (a face partly covered is often
    found shifted, with a lower score) does not replace the track's box: the box
    interpolated between the surer detections around it is added too."""
    out: list[list[TrackedRegion]] = [[] for _ in range(frames)]
    for tr in tracks:
        seen = sorted(tr.boxes)
        for f in seen:
            out[f].append(
                TrackedRegion(Detection(tr.boxes[f], tr.scores[f], tr.label), tr.id, False)
            )
        typical = float(np.median([tr.scores[f] for f in seen]))
        sure = [f for f in seen if tr.scores[f] >= max(confident, RELATIVE * typical)]
        for frames_, add_all in ((seen, True), (sure, False)):
            for a, b in zip(frames_, frames_[1:], strict=False):
                for f in range(a + 1, b):
                    if not add_all and f not in tr.boxes:
                        continue  # filled from every detection above
                    w = (f - a) / (b - a)
                    box = [
                        (1 - w) * p + w * q for p, q in zip(tr.boxes[a], tr.boxes[b], strict=True)
                    ]
                    _add(out, f, box, tr, min(tr.scores[a], tr.scores[b]), width, height)
        v_start, v_end = tr.velocity(at_end=False), tr.velocity(at_end=True)
        for k in range(1, hold + 1):
            before, after = tr.first - k, tr.last + k
            if before >= 0:
                box = [c - d * k for c, d in zip(tr.boxes[tr.first], v_start, strict=True)]
                _add(out, before, box, tr, tr.scores[tr.first], width, height)
            if after < frames:
                box = [c + d * k for c, d in zip(tr.boxes[tr.last], v_end, strict=True)]
                _add(out, after, box, tr, tr.scores[tr.last], width, height)
    return out


def _add(
    out: list[list[TrackedRegion]],
    frame: int,
    box: Sequence[float],
    tr: Track,
    score: float,
    width: int,
    height: int,
) -> None:
    clipped = _clip(box, width, height)
    if clipped is not None:
        out[frame].append(TrackedRegion(Detection(clipped, score, tr.label), tr.id, True))
