"""The video options of ``anonymize`` and the part of a run that handles videos."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from adaptanon.engines.video import (
    DEFAULT_DETECT_SIDE,
    DEFAULT_HOLD,
    DEFAULT_ROUNDS,
    DEFAULT_SEGMENT_SECONDS,
    VideoOptions,
)
from adaptanon.io import IMAGE_EXTENSIONS, InputImage
from adaptanon.io.video import (
    DEFAULT_CODEC,
    DEFAULT_CRF,
    DEFAULT_PRESET,
    VIDEO_CODECS,
    VideoCodec,
    is_video,
    probe_video,
)
from adaptanon.regions import RegionSource


def video_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--video-codec``, ``--crf``, ``--preset``, ``--hold-frames``, ``--video-rounds``,
    ``--detect-side``, ``--segment-seconds``, ``--keep-metadata``."""
    options = [
        click.option(
            "--video-codec",
            type=click.Choice(VIDEO_CODECS),
            default=DEFAULT_CODEC,
            show_default=True,
            help="Videos: h264 and h265 are lossy (--crf), every frame checked on the decoded "
            "segment; ffv1 is lossless (every frame decodes to the verified pixels).",
        ),
        click.option(
            "--crf",
            type=click.IntRange(0, 51),
            default=DEFAULT_CRF,
            show_default=True,
            help="Videos, h264/h265: constant rate factor (lower: better quality; 18 is "
            "visually lossless by x264's documentation).",
        ),
        click.option(
            "--preset",
            default=DEFAULT_PRESET,
            show_default=True,
            help="Videos, h264/h265: the x264/x265 speed preset (ultrafast ... veryslow).",
        ),
        click.option(
            "--hold-frames",
            type=click.IntRange(min=0),
            default=DEFAULT_HOLD,
            show_default=True,
            help="Videos: a tracked region is also anonymized this many frames before its "
            "first and after its last detection, and across gaps of up to this many frames.",
        ),
        click.option(
            "--video-rounds",
            type=click.IntRange(min=0),
            default=DEFAULT_ROUNDS,
            show_default=True,
            help="Videos, lossy codecs: rounds of re-correcting the frames whose class changed "
            "on the decoded video and encoding again; frames still changed are failed.",
        ),
        click.option(
            "--detect-side",
            type=click.IntRange(min=32),
            default=DEFAULT_DETECT_SIDE,
            show_default=True,
            help="Videos: detectors look at each frame downscaled to this longer side "
            "(boxes mapped back to the frame; 1080p is seen at 720p).",
        ),
        click.option(
            "--segment-seconds",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_SEGMENT_SECONDS,
            show_default=True,
            help="Videos: seconds per closed segment; each is checked and kept as soon as it "
            "is written, and a stopped run resumes at the first unfinished one.",
        ),
        click.option(
            "--keep-metadata",
            is_flag=True,
            help="Videos: copy the container's and streams' metadata tags (dropped by default).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_video_options(kw: dict[str, Any]) -> VideoOptions:
    """The parsed video options."""
    codec = VideoCodec(
        kw.get("video_codec", DEFAULT_CODEC),
        crf=kw.get("crf", DEFAULT_CRF),
        preset=kw.get("preset", DEFAULT_PRESET),
        keep_metadata=bool(kw.get("keep_metadata")),
    )
    return VideoOptions(
        codec,
        hold=kw.get("hold_frames", DEFAULT_HOLD),
        rounds=kw.get("video_rounds", DEFAULT_ROUNDS),
        segment_seconds=kw.get("segment_seconds", DEFAULT_SEGMENT_SECONDS),
        detect_side=kw.get("detect_side", DEFAULT_DETECT_SIDE),
    )


def split_videos(items: list[InputImage]) -> tuple[list[InputImage], list[InputImage]]:
    """``items`` as (photos, videos): videos by extension, or by content for a file whose
    extension is not an image's (a damaged photo stays a photo, reported by the image
    reader)."""
    photos: list[InputImage] = []
    videos: list[InputImage] = []
    for item in items:
        image = item.path.suffix.lower() in IMAGE_EXTENSIONS
        (videos if not image and is_video(item.path) else photos).append(item)
    return photos, videos


def unmatched_keys(source: RegionSource, photos: Iterable[str], videos: Iterable[str]) -> list[str]:
    """Keys of a detections file that match no photo and no frame of a video
    (``clip.mp4#12``, by relative path or file name)."""
    names = {n for v in videos for n in (v, Path(v).name)}
    return [
        key
        for key in source.unmatched(photos)
        if not ("#" in key and key.rpartition("#")[0] in names and key.rpartition("#")[2].isdigit())
    ]


def frame_total(videos: Iterable[InputImage]) -> int | None:
    """The frames of ``videos`` as their containers state them (for progress), None when
    one does not say."""
    total = 0
    for item in videos:
        try:
            frames = probe_video(item.path).frames
        except ValueError:
            frames = 0
        if frames is None:
            return None
        total += frames
    return total
