"""Reading and writing videos with PyAV (FFmpeg's libraries; ``pip install 'adaptanon[video]'``).

A video is read whole into 8-bit RGB frames with each frame's presentation time
(``pts`` in the video stream's ``time_base``), and written back with the same times, so
the frame rate, the frame count and the duration are kept, a variable frame rate
included. Audio and subtitle streams are copied packet by packet (remuxed, never
re-encoded). Container and stream metadata are dropped unless asked for.

Frames are ``(H, W, 3)`` ``uint8`` arrays.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".wmv", ".flv", ".3gp", ".ogv",
}  # fmt: skip
"""Files found in folders and globs as videos (by extension; a file named explicitly is
probed by content, see :func:`is_video`)."""

VIDEO_CODECS = ("ffv1", "h264", "h265")
"""``--video-codec``: ``ffv1`` is lossless (8-bit RGB, the default); ``h264``
and ``h265`` are lossy (libx264 / libx265 with ``--crf``, 4:2:0)."""


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ValueError(f"videos need PyAV ({exc}): pip install 'adaptanon[video]'") from exc
    av.logging.set_level(av.logging.PANIC)
    return av


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def is_video(path: Path) -> bool:
    """True when ``path`` has a video extension, or (named explicitly, any extension) is
    a container with a video stream and is not a still image PyAV also opens (PNG, JPEG)."""
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return True
    try:
        av = _av()
        with av.open(str(path)) as container:
            name = container.format.name
            if any(k in name for k in ("image2", "_pipe", "png", "jpeg", "webp", "gif", "bmp")):
                return False
            return any(s.type == "video" for s in container.streams)
    except Exception:  # noqa: BLE001 - not a container PyAV reads: not a video
        return False


@dataclass(frozen=True)
class VideoCodec:
    """How frames are stored: ``ffv1`` (lossless, Matroska), ``h264`` or ``h265`` (lossy,
    ``crf`` 0-51 and ``preset``), with ``threads`` encoder threads (0: FFmpeg's choice).
    ``keep_metadata`` copies the container's and streams' metadata tags."""

    name: str = "ffv1"
    crf: int = 23
    preset: str = "medium"
    threads: int = 0
    keep_metadata: bool = False

    def __post_init__(self) -> None:
        if self.name not in VIDEO_CODECS:
            raise ValueError(f"unknown video codec {self.name!r}; choose from {VIDEO_CODECS}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")

    @property
    def lossless(self) -> bool:
        """Whether decoding returns exactly the encoded RGB frames."""
        return self.name == "ffv1"

    def container(self, source: Path) -> str:
        """The output container: MP4 for an MP4/MOV input (its time stamps, audio priming
        included, are kept exactly; FFmpeg-based readers play FFV1 there), else Matroska."""
        if source.suffix.lower() in (".mp4", ".m4v", ".mov"):
            return "mp4"
        return "matroska"

    def extension(self, source: Path) -> str:
        """The output file's extension (with the dot)."""
        return ".mp4" if self.container(source) == "mp4" else ".mkv"

    def describe(self) -> dict[str, Any]:
        """The codec as the manifest records it."""
        out: dict[str, Any] = {"video_codec": self.name}
        if not self.lossless:
            out.update(crf=self.crf, preset=self.preset)
        if self.keep_metadata:
            out["keep_metadata"] = True
        return out


@dataclass
class Clip:
    """A decoded video stream: frames, their ``pts`` in ``time_base`` units, and what the
    stream says of itself (``rate``: its average frame rate)."""

    frames: list[np.ndarray]
    pts: list[int]
    time_base: Fraction
    rate: Fraction | None
    width: int
    height: int
    codec: str
    other_streams: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last frame's end (the last frame
        lasting as long as the one before it, or one frame at ``rate``)."""
        if not self.pts:
            return 0.0
        if len(self.pts) > 1:
            last = self.pts[-1] - self.pts[-2]
        else:
            last = int(1 / (self.rate * self.time_base)) if self.rate else 0
        return float((self.pts[-1] - self.pts[0] + last) * self.time_base)


def read_video(source: Path | bytes, max_pixels: int | None = None) -> Clip:
    """Decode the first video stream of a file (or of encoded bytes) to RGB frames.

    Every failure is a ``ValueError`` with a one-line reason: not a video, no video
    stream, frames larger than ``max_pixels``, or a stream damaged or truncated (decoding
    stops with an error, or a frame has no time stamp); nothing is returned partly.
    """
    av = _av()
    where = "video" if isinstance(source, bytes) else f"video {source}"
    target: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        container = av.open(target)
    except Exception as exc:  # noqa: BLE001 - any demuxer failure is this file's error
        raise ValueError(f"cannot read {where}: {_one_line(exc)}") from exc
    with container:
        videos = [s for s in container.streams if s.type == "video"]
        if not videos:
            raise ValueError(f"cannot read {where}: no video stream")
        stream = videos[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(
                f"cannot read {where}: frames are {width}x{height}, over the limit of "
                f"{max_pixels:,} pixels (--max-pixels)"
            )
        stream.thread_type = "AUTO"
        frames: list[np.ndarray] = []
        pts: list[int] = []
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise ValueError(f"frame {len(frames)} has no time stamp")
                frames.append(frame.to_ndarray(format="rgb24"))
                pts.append(int(frame.pts))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(
                f"cannot read {where}: damaged or truncated after {len(frames)} frame(s): "
                f"{_one_line(exc)}"
            ) from exc
        if not frames:
            raise ValueError(f"cannot read {where}: no frame could be decoded")
        if any(b <= a for a, b in zip(pts, pts[1:], strict=False)):
            order = np.argsort(pts, kind="stable")
            frames = [frames[i] for i in order]
            pts = [pts[i] for i in order]
            if len(set(pts)) != len(pts):
                raise ValueError(f"cannot read {where}: two frames share a time stamp")
        return Clip(
            frames=frames,
            pts=pts,
            time_base=Fraction(stream.time_base),
            rate=Fraction(stream.average_rate) if stream.average_rate else None,
            width=frames[0].shape[1],
            height=frames[0].shape[0],
            codec=stream.codec_context.name,
            other_streams=[
                f"{s.type}:{s.codec_context.name if s.codec_context else '?'}"
                for s in container.streams
                if s is not stream
            ],
        )


def _copied_streams(container: Any) -> list[Any]:
    return [s for s in container.streams if s.type in ("audio", "subtitle")]


def write_video(source: Path, clip: Clip, frames: Sequence[np.ndarray], codec: VideoCodec) -> bytes:
    """Encode ``frames`` (one per frame of ``clip``, same size) with ``clip``'s time
    stamps and copy the audio and subtitle packets of ``source`` unchanged; returns the
    file's bytes (container :meth:`VideoCodec.container`).

    Raises:
        ValueError: the frames do not match the clip, or the container cannot hold a
            stream to copy (e.g. MP4 subtitles into Matroska), or encoding fails.
    """
    if len(frames) != len(clip.pts):
        raise ValueError(f"expected {len(clip.pts)} frames, got {len(frames)}")
    av = _av()
    buf = io.BytesIO()
    fmt = codec.container(source)
    try:
        with av.open(str(source)) as src, av.open(buf, "w", format=fmt) as out:
            if codec.keep_metadata:
                out.metadata.update(src.metadata)
            copies: dict[int, Any] = {}
            for stream in _copied_streams(src):
                name = stream.codec_context.name
                if fmt != "mp4" or name not in ("mov_text",):
                    if name not in out.supported_codecs:
                        raise ValueError(
                            f"the {stream.type} stream ({name}) cannot be copied into "
                            f"{fmt}; choose another --video-codec / container"
                        )
                copy = out.add_stream_from_template(stream)
                if not codec.keep_metadata:
                    copy.metadata.clear()
                copies[stream.index] = copy
            video = _video_stream(out, codec, clip)
            wanted = [src.streams[i] for i in copies]
            packets = [p for p in src.demux(*wanted) if p.size] if wanted else []
            # Interleave: copy each packet once the video has reached its time.
            packets.sort(key=lambda p: float((p.dts if p.dts is not None else 0) * p.time_base))
            pending = 0
            for pixels, pts in zip(frames, clip.pts, strict=True):
                now = float(pts * clip.time_base)
                while pending < len(packets) and _time(packets[pending]) <= now:
                    _remux(out, packets[pending], copies)
                    pending += 1
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                frame.pts = pts
                frame.time_base = clip.time_base
                for packet in video.encode(frame):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
            for packet in packets[pending:]:
                _remux(out, packet, copies)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - any encoder or muxer failure
        raise ValueError(f"cannot write the video: {_one_line(exc)}") from exc
    return buf.getvalue()


def _time(packet: Any) -> float:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return float((stamp or 0) * packet.time_base)


def _remux(out: Any, packet: Any, copies: dict[int, Any]) -> None:
    packet.stream = copies[packet.stream.index]
    out.mux(packet)


def _video_stream(out: Any, codec: VideoCodec, clip: Clip) -> Any:
    rate = clip.rate or Fraction(1, 1) / clip.time_base
    if codec.name == "ffv1":
        stream = out.add_stream("ffv1", rate=rate)
        stream.pix_fmt = "bgr0"
    else:
        name = "libx264" if codec.name == "h264" else "libx265"
        options = {"crf": str(codec.crf), "preset": codec.preset}
        if codec.name == "h265":
            options["x265-params"] = "log-level=none"
        stream = out.add_stream(name, rate=rate, options=options)
        stream.pix_fmt = "yuv420p"
    stream.width, stream.height = clip.width, clip.height
    stream.time_base = clip.time_base
    stream.codec_context.time_base = clip.time_base
    stream.codec_context.thread_count = codec.threads
    return stream


def audio_packets(source: Path | bytes) -> list[tuple[int, int | None, bytes]]:
    """Every audio and subtitle packet of a file as ``(stream kind index, pts in
    microseconds, payload)``, in order: two files hold the same such streams exactly when
    these lists are equal."""
    av = _av()
    target: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    out: list[tuple[int, int | None, bytes]] = []
    with av.open(target) as container:
        streams = _copied_streams(container)
        rank = {s.index: i for i, s in enumerate(streams)}
        for packet in container.demux(*streams) if streams else []:
            if not packet.size:
                continue
            pts = None if packet.pts is None else round(packet.pts * packet.time_base * 1_000_000)
            out.append((rank[packet.stream.index], pts, bytes(packet)))
    out.sort(key=lambda p: (p[0], p[1] if p[1] is not None else -1))
    return out


def make_clip(
    path: Path,
    frames: Sequence[np.ndarray],
    rate: Fraction | int = 30,
    *,
    pts: Sequence[int] | None = None,
    codec: str = "libx264",
    tone_hz: float | None = 440.0,
    subtitle: str | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``frames`` as a new clip (for tests, benchmarks and demos): video with
    ``codec`` (``libx264`` crf 18 yuv420p, or ``ffv1``) at ``rate``, or at the given
    ``pts`` in units of ``1/rate`` s (a variable frame rate), an AAC sine tone of
    ``tone_hz`` as long as the video (None: no audio), and optionally a subtitle stream
    (Matroska/SubRip) holding ``subtitle`` for the first second; ``metadata``: container
    tags (title, location, ...)."""
    av = _av()
    rate = Fraction(rate)
    stamps = list(pts) if pts is not None else list(range(len(frames)))
    seconds = float((stamps[-1] + 1) / rate)
    height, width = frames[0].shape[:2]
    srt = None
    if subtitle:
        srt = path.with_name(f".{path.name}.srt")
        srt.write_text(f"1\n00:00:00,000 --> 00:00:01,000\n{subtitle}\n", encoding="utf-8")
    with av.open(str(path), "w") as out:
        out.metadata.update(metadata or {})
        video = out.add_stream(codec, rate=rate)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p" if codec == "libx264" else "bgr0"
        video.time_base = 1 / rate
        video.codec_context.time_base = 1 / rate
        if codec == "libx264":
            video.codec_context.options = {"crf": "18"}
        audio = out.add_stream("aac", rate=48000) if tone_hz else None
        texts: list[Any] = []
        if srt is not None:
            with av.open(str(srt)) as src:
                text = out.add_stream_from_template(src.streams[0])
                texts = [p for p in src.demux(src.streams[0]) if p.size]
            srt.unlink()
        for pixels, stamp in zip(frames, stamps, strict=True):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts, frame.time_base = stamp, 1 / rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None and tone_hz:
            samples = int(seconds * 48000)
            t = np.arange(samples) / 48000
            wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None, :]
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[:, start : start + 1024]), format="flt",
                    layout="mono",
                )  # fmt: skip
                chunk.sample_rate, chunk.pts = 48000, start
                out.mux(audio.encode(chunk))
            out.mux(audio.encode(None))
        for packet in texts:
            packet.stream = text
            out.mux(packet)
