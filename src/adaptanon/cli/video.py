"""The video options of ``anonymize`` and the part of a run that handles videos."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from adaptanon.engines.video import DEFAULT_HOLD, DEFAULT_ROUNDS, VideoOptions
from adaptanon.io import IMAGE_EXTENSIONS, InputImage
from adaptanon.io.video import VIDEO_CODECS, VideoCodec, is_video
from adaptanon.regions import RegionSource


def video_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--video-codec``, ``--crf``, ``--preset``, ``--hold-frames``, ``--video-rounds``,
    ``--keep-metadata``."""
    options = [
        click.option(
            "--video-codec",
            type=click.Choice(VIDEO_CODECS),
            default="ffv1",
            show_default=True,
            help="Videos: ffv1 is lossless (every frame decodes to the verified pixels); "
            "h264 and h265 are lossy (--crf), checked on the decoded frames.",
        ),
        click.option(
            "--crf",
            type=click.IntRange(0, 51),
            default=23,
            show_default=True,
            help="Videos, h264/h265: constant rate factor (lower: better quality).",
        ),
        click.option(
            "--preset",
            default="medium",
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
        kw.get("video_codec", "ffv1"),
        crf=kw.get("crf", 23),
        preset=kw.get("preset", "medium"),
        keep_metadata=bool(kw.get("keep_metadata")),
    )
    return VideoOptions(
        codec,
        hold=kw.get("hold_frames", DEFAULT_HOLD),
        rounds=kw.get("video_rounds", DEFAULT_ROUNDS),
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
