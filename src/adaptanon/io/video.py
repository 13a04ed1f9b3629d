"""Reading and writing videos with PyAV (FFmpeg's libraries; ``pip install 'adaptanon[video]'``).

A video is streamed: :func:`iter_frames` decodes one frame at a time (FFmpeg's own
threads), as 8-bit RGB turned upright as a player shows it (the stream's display
rotation applied), with each frame's presentation time (``pts`` in the video stream's
``time_base``). Frames are written back in closed segments (:func:`encode_segment`: a
fresh encoder per segment, so each begins with a key frame and refers to no frame
outside it) and the segments joined by stream copy (:func:`join_segments`), with the
input's time stamps (frame rate, frame count and duration kept, a variable frame rate
included), its display rotation, and its audio and subtitle packets copied (remuxed,
never re-encoded). Container and stream metadata are dropped unless asked for.

Frames are ``(H, W, 3)`` ``uint8`` arrays, upright.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterable, Iterator, Sequence
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

VIDEO_CODECS = ("h264", "h265", "ffv1")
"""``--video-codec``: ``h264`` (the default) and ``h265`` are lossy (libx264 / libx265
with ``--crf``, 4:2:0, closed GOPs), checked on the decoded frames; ``ffv1`` is lossless
(8-bit RGB): every frame decodes to the verified pixels."""

DEFAULT_CODEC = "h264"
DEFAULT_CRF = 18
"""``--crf``'s default: x264's documentation calls 18 visually lossless (or nearly so)."""
DEFAULT_PRESET = "veryfast"


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
    """How frames are stored: ``h264`` or ``h265`` (lossy, ``crf`` 0-51 and ``preset``),
    or ``ffv1`` (lossless), with ``threads`` encoder threads (0: FFmpeg's choice).
    ``keep_metadata`` copies the container's and streams' metadata tags."""

    name: str = DEFAULT_CODEC
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
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


@dataclass(frozen=True)
class VideoInfo:
    """What a video's first video stream says of itself, read without decoding it:
    ``width`` x ``height`` of the upright frames (after ``rotation``, degrees
    counter-clockwise, a multiple of 90), ``time_base``, ``rate`` (average), ``frames``
    (the container's count, None when it does not say), the codec, its pixel format and
    the other streams (``audio:aac``, ...)."""

    path: Path
    width: int
    height: int
    rotation: int
    time_base: Fraction
    rate: Fraction | None
    frames: int | None
    codec: str
    pix_fmt: str | None
    other_streams: tuple[str, ...] = ()


def _rotation(degrees: float | int | None) -> int:
    """A display rotation rounded to a multiple of 90 in ``[0, 360)``."""
    return int(round((degrees or 0) / 90.0)) % 4 * 90


def to_upright(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """``(H, W, 3)`` stored pixels turned as a player shows them (``rotation`` degrees
    counter-clockwise)."""
    k = rotation // 90 % 4
    return pixels if k == 0 else np.ascontiguousarray(np.rot90(pixels, k))


def to_stored(pixels: np.ndarray, rotation: int) -> np.ndarray:
    """The inverse of :func:`to_upright`."""
    k = rotation // 90 % 4
    return pixels if k == 0 else np.ascontiguousarray(np.rot90(pixels, -k))


def _open(source: Path | bytes) -> tuple[Any, str]:
    av = _av()
    where = "video" if isinstance(source, bytes) else f"video {source}"
    target: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        return av.open(target), where
    except Exception as exc:  # noqa: BLE001 - any demuxer failure is this file's error
        raise ValueError(f"cannot read {where}: {_one_line(exc)}") from exc


def _video_of(container: Any, where: str) -> Any:
    videos = [s for s in container.streams if s.type == "video"]
    if not videos:
        raise ValueError(f"cannot read {where}: no video stream")
    return videos[0]


def _stream_rotation(stream: Any) -> int | None:
    """The display rotation the stream declares, when PyAV can read it without decoding."""
    for name in ("rotation", "display_rotation"):
        value = getattr(stream, name, None)
        if isinstance(value, int | float):
            return _rotation(value)
    return None


def probe_video(path: Path, max_pixels: int | None = None) -> VideoInfo:
    """The :class:`VideoInfo` of ``path`` (its first frame is decoded for the display
    rotation, which FFmpeg attaches to frames).

    Raises:
        ValueError: not a video, no video stream, frames larger than ``max_pixels``, or
            no frame can be decoded.
    """
    container, where = _open(path)
    with container:
        stream = _video_of(container, where)
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(
                f"cannot read {where}: frames are {width}x{height}, over the limit of "
                f"{max_pixels:,} pixels (--max-pixels)"
            )
        rotation = _stream_rotation(stream)
        if rotation is None:
            try:
                first = next(iter(container.decode(stream)))
            except (StopIteration, Exception) as exc:  # noqa: BLE001
                raise ValueError(f"cannot read {where}: no frame could be decoded") from exc
            rotation = _rotation(first.rotation)
            width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            rotation=rotation,
            time_base=Fraction(stream.time_base),
            rate=Fraction(stream.average_rate) if stream.average_rate else None,
            frames=int(stream.frames) or None,
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            other_streams=tuple(
                f"{s.type}:{s.codec_context.name if s.codec_context else '?'}"
                for s in container.streams
                if s is not stream
            ),
        )


def iter_frames(
    source: Path | bytes,
    *,
    rotation: int | None = None,
    start_pts: int | None = None,
    max_pixels: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Each frame of the first video stream of a file (or of encoded bytes) as
    ``(pts, (H, W, 3) uint8 RGB)``, upright, one at a time, in presentation order.

    ``rotation``: the display rotation to apply (None: the one each frame carries);
    ``start_pts``: begin at the first frame at or after this time stamp (the decoder
    seeks to the key frame before it).

    Raises:
        ValueError: with a one-line reason: not a video, no video stream, frames larger
            than ``max_pixels``, a stream damaged or truncated (decoding stops with an
            error), a frame with no time stamp or out of order.
    """
    container, where = _open(source)
    with container:
        stream = _video_of(container, where)
        width, height = stream.codec_context.width, stream.codec_context.height
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(
                f"cannot read {where}: frames are {width}x{height}, over the limit of "
                f"{max_pixels:,} pixels (--max-pixels)"
            )
        stream.thread_type = "AUTO"
        if start_pts is not None and start_pts > 0:
            try:
                container.seek(start_pts, backward=True, any_frame=False, stream=stream)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"cannot seek in {where}: {_one_line(exc)}") from exc
        count, last = 0, None
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    raise ValueError(f"frame {count} has no time stamp")
                pts = int(frame.pts)
                if start_pts is not None and pts < start_pts:
                    continue
                if last is not None and pts <= last:
                    raise ValueError(f"frame {count} is out of order (time stamp {pts})")
                pixels = frame.to_ndarray(format="rgb24")
                turn = _rotation(frame.rotation) if rotation is None else rotation
                yield pts, to_upright(pixels, turn)
                count, last = count + 1, pts
        except ValueError as exc:
            if str(exc).startswith("cannot"):
                raise
            raise ValueError(
                f"cannot read {where}: damaged or truncated after {count} frame(s): {exc}"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's
            raise ValueError(
                f"cannot read {where}: damaged or truncated after {count} frame(s): "
                f"{_one_line(exc)}"
            ) from exc
        if count == 0 and start_pts is None:
            raise ValueError(f"cannot read {where}: no frame could be decoded")


@dataclass
class Clip:
    """A short video decoded whole (for tests and checks, never the engine): frames,
    their ``pts`` in ``time_base`` units, and what the stream says of itself."""

    frames: list[np.ndarray]
    pts: list[int]
    time_base: Fraction
    rate: Fraction | None
    width: int
    height: int
    codec: str
    rotation: int = 0
    other_streams: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        """Seconds from the first frame's start to the last frame's end (the last frame
        lasting as long as the one before it, or one frame at ``rate``)."""
        return duration(self.pts, self.time_base, self.rate)


def duration(pts: Sequence[int], time_base: Fraction, rate: Fraction | None) -> float:
    """Seconds from the first frame's start to the last frame's end (the last frame
    lasting as long as the one before it, or one frame at ``rate``)."""
    if not pts:
        return 0.0
    if len(pts) > 1:
        last = pts[-1] - pts[-2]
    else:
        last = int(1 / (rate * time_base)) if rate else 0
    return float((pts[-1] - pts[0] + last) * time_base)


def read_video(source: Path | bytes, max_pixels: int | None = None) -> Clip:
    """Decode a whole (short) video into memory with :func:`iter_frames`; every failure
    is a ``ValueError`` with a one-line reason, nothing is returned partly."""
    container, where = _open(source)
    with container:
        stream = _video_of(container, where)
        time_base = Fraction(stream.time_base)
        rate = Fraction(stream.average_rate) if stream.average_rate else None
        codec = stream.codec_context.name
        others = [
            f"{s.type}:{s.codec_context.name if s.codec_context else '?'}"
            for s in container.streams
            if s is not stream
        ]
    pts, frames = [], []
    rotation = 0
    for stamp, pixels in iter_frames(source, max_pixels=max_pixels):
        pts.append(stamp)
        frames.append(pixels)
    if not isinstance(source, bytes):
        rotation = probe_video(source).rotation
    return Clip(
        frames, pts, time_base, rate, frames[0].shape[1], frames[0].shape[0], codec,
        rotation, others,
    )  # fmt: skip


def _copied_streams(container: Any) -> list[Any]:
    return [s for s in container.streams if s.type in ("audio", "subtitle")]


def _video_stream(
    out: Any, codec: VideoCodec, width: int, height: int, time_base: Fraction, rate: Fraction
) -> Any:
    if codec.name == "ffv1":
        stream = out.add_stream("ffv1", rate=rate)
        stream.pix_fmt = "bgr0"
    else:
        name = "libx264" if codec.name == "h264" else "libx265"
        options = {"crf": str(codec.crf), "preset": codec.preset}
        if codec.name == "h265":
            options["x265-params"] = "log-level=none:open-gop=0"
        stream = out.add_stream(name, rate=rate, options=options)
        stream.pix_fmt = "yuv420p"
    stream.width, stream.height = width, height
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    stream.codec_context.thread_count = codec.threads
    return stream


def encode_segment(
    frames: Sequence[np.ndarray] | np.ndarray,
    pts: Sequence[int],
    info: VideoInfo,
    codec: VideoCodec,
) -> bytes:
    """``frames`` (upright, the size of ``info``) at ``pts`` as one closed segment: a
    video-only file of ``codec`` in the output's container whose first frame is a key
    frame and whose frames refer to none outside it. Frames are stored in the input's
    orientation (:func:`to_stored`), so the joined file keeps its display rotation.

    Raises:
        ValueError: the frames do not match the time stamps, or encoding fails.
    """
    if len(frames) != len(pts) or len(frames) == 0:
        raise ValueError(f"expected {len(pts)} frames, got {len(frames)}")
    av = _av()
    buf = io.BytesIO()
    fmt = codec.container(info.path)
    rate = info.rate or Fraction(1, 1) / info.time_base
    stored = [to_stored(f, info.rotation) for f in frames[:1]]
    height, width = stored[0].shape[:2]
    try:
        with av.open(buf, "w", format=fmt) as out:
            video = _video_stream(out, codec, width, height, info.time_base, rate)
            for pixels, stamp in zip(frames, pts, strict=True):
                frame = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(to_stored(pixels, info.rotation)), format="rgb24"
                )
                frame.pts = stamp
                frame.time_base = info.time_base
                for packet in video.encode(frame):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
    except Exception as exc:  # noqa: BLE001 - any encoder or muxer failure
        raise ValueError(f"cannot write the video: {_one_line(exc)}") from exc
    return buf.getvalue()


def _packet_time(packet: Any) -> Fraction:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return Fraction(stamp or 0) * Fraction(packet.time_base)


def _segment_packets(segments: Iterable[Path]) -> Iterator[Any]:
    av = _av()
    for path in segments:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size:
                    yield packet


def join_segments(
    source: Path, segments: Sequence[Path], target: Path, info: VideoInfo, codec: VideoCodec
) -> None:
    """Write ``target``: the video packets of ``segments`` (files of
    :func:`encode_segment`, in order) copied into one stream, with the display rotation
    of ``info`` and the audio and subtitle packets of ``source`` unchanged, interleaved by
    time. Memory does not grow with the length: packets are read and written as they go.

    Raises:
        ValueError: the segments' encoder settings differ, the container cannot hold a
            stream to copy (e.g. MP4 subtitles into Matroska), or muxing fails (e.g. time
            stamps that do not increase across a segment boundary).
    """
    av = _av()
    fmt = codec.container(source)
    try:
        with (
            av.open(str(source)) as src,
            av.open(str(segments[0])) as first,
            av.open(str(target), "w", format=fmt) as out,
        ):
            if codec.keep_metadata:
                out.metadata.update(src.metadata)
            template = first.streams.video[0]
            extradata = bytes(template.codec_context.extradata or b"")
            video = out.add_stream_from_template(template)
            video.time_base = template.time_base
            if info.rotation:
                video.set_display_rotation(info.rotation)
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
            for path in segments[1:]:
                with av.open(str(path)) as seg:
                    if bytes(seg.streams.video[0].codec_context.extradata or b"") != extradata:
                        raise ValueError(f"segment {path.name} was encoded with other settings")
            wanted = [src.streams[i] for i in copies]
            others = (p for p in (src.demux(*wanted) if wanted else ()) if p.size)
            tagged = heapq.merge(
                ((_packet_time(p), 0, n, p) for n, p in enumerate(_segment_packets(segments))),
                ((_packet_time(p), 1, n, p) for n, p in enumerate(others)),
                key=lambda t: (t[0], t[1], t[2]),
            )
            for _time, kind, _n, packet in tagged:
                packet.stream = video if kind == 0 else copies[packet.stream.index]
                out.mux(packet)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - any muxer failure
        raise ValueError(f"cannot write the video: {_one_line(exc)}") from exc


def packet_times(source: Path | bytes) -> list[Fraction]:
    """The presentation time (seconds) of every packet of the first video stream, sorted,
    read by demuxing alone (no decoding): one per frame."""
    container, where = _open(source)
    with container:
        stream = _video_of(container, where)
        base = Fraction(stream.time_base)
        return sorted(
            Fraction(p.pts) * base for p in container.demux(stream) if p.size and p.pts is not None
        )


def audio_packets(source: Path | bytes) -> list[tuple[int, int | None, bytes]]:
    """Every audio and subtitle packet of a file as ``(stream kind index, pts in
    microseconds, payload)``, in order: two files hold the same such streams exactly when
    these lists are equal."""
    container, _where = _open(source)
    out: list[tuple[int, int | None, bytes]] = []
    with container:
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
    rotation: int = 0,
) -> None:
    """Write ``frames`` as a new clip (for tests, benchmarks and demos): video with
    ``codec`` (``libx264`` crf 18 yuv420p, or ``ffv1``) at ``rate``, or at the given
    ``pts`` in units of ``1/rate`` s (a variable frame rate), an AAC sine tone of
    ``tone_hz`` as long as the video (None: no audio), and optionally a subtitle stream
    (Matroska/SubRip) holding ``subtitle`` for the first second; ``metadata``: container
    tags (title, location, ...); ``rotation``: a display rotation (degrees counter-clockwise,
    as a phone records it) for the ``frames`` as stored."""
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
        if rotation:
            video.set_display_rotation(rotation)
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
